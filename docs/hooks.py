"""MkDocs hook: the CLI reference, rendered from the CLI's own parser so it cannot drift.

A page line that is exactly ``<!-- cli-reference -->`` becomes the ``--help`` text of
``sqlitejobq`` and of each subcommand, each under its own heading. The tests call
:func:`render_cli_reference` too, so the page and the tests share one rendering.
"""

from __future__ import annotations

import argparse
import re
from typing import Any

from sqlitejobq.cli import build_parser

PLACEHOLDER = "<!-- cli-reference -->"
#: Help text is wrapped at a fixed width, whatever the terminal that builds the docs.
HELP_WIDTH = 88

_HEADING = re.compile(r"^(#{1,6})\s")
_FENCE = re.compile(r"^\s*(```|~~~)")


def _fixed_width(prog: str) -> argparse.HelpFormatter:
    return argparse.HelpFormatter(prog, width=HELP_WIDTH)


def cli_commands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """The subcommands of ``parser`` by name, in the order they were added."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction) and action.dest == "command":
            return dict(action.choices)
    raise LookupError("the sqlitejobq parser has no subcommands with dest 'command'")


def render_cli_reference(level: int = 2) -> str:
    """Markdown: the ``--help`` of ``sqlitejobq`` and of every subcommand, one heading each."""
    parser = build_parser()
    sections = [("sqlitejobq", parser)]
    sections += [(f"sqlitejobq {name}", sub) for name, sub in cli_commands(parser).items()]
    hashes = "#" * level
    blocks = []
    for title, command in sections:
        command.formatter_class = _fixed_width
        blocks.append(f"{hashes} {title}\n\n```text\n{command.format_help().rstrip()}\n```\n")
    return "\n".join(blocks)


def _heading_level_after(lines: list[str]) -> int:
    """One level below the last heading in ``lines`` (outside code blocks), at least 2."""
    level, fenced = 1, False
    for line in lines:
        if _FENCE.match(line):
            fenced = not fenced
        elif not fenced and (match := _HEADING.match(line)):
            level = len(match.group(1))
    return min(max(level + 1, 2), 6)


def on_page_markdown(markdown: str, **kwargs: Any) -> str:
    """Replace each placeholder line with the CLI reference, nested under its section."""
    if PLACEHOLDER not in markdown:
        return markdown
    lines = markdown.splitlines()
    out: list[str] = []
    for index, line in enumerate(lines):
        if line.strip() == PLACEHOLDER:
            out.append(render_cli_reference(_heading_level_after(lines[:index])))
        else:
            out.append(line)
    return "\n".join(out) + "\n"
