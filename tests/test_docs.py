"""The documentation is tested: its examples run, its CLI reference renders, the site builds.

Every fenced code block whose info string is exactly ``python`` in README.md and docs/*.md
is run as a script of its own, in a fresh temporary directory, and must exit with status 0.
So a ``python`` block is complete: it imports what it uses and creates the files it needs.
Blocks fenced otherwise are shown, never run: ``py`` for Python that is not a whole
program (a fragment, a variation on the block before it, code that needs a service),
``text`` for output, ``sh`` for shell commands.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from sqlitejobq.cli import _COMMANDS

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PLACEHOLDER = "<!-- cli-reference -->"
EXAMPLE_TIMEOUT = 60
BUILD_TIMEOUT = 180

_OPENING = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>.*)$")


def fenced_blocks(text: str) -> list[tuple[str, str, int]]:
    """Every fenced code block of Markdown ``text``: (info string, code, line of the fence).

    A fence may be indented (inside a list or an admonition); that indent is taken off
    the block's lines. A block left open runs to the end of the text, as in Markdown.
    """
    lines = text.splitlines()
    blocks = []
    index = 0
    while index < len(lines):
        opening = _OPENING.match(lines[index])
        if opening is None or (opening["fence"][0] == "`" and "`" in opening["info"]):
            index += 1
            continue
        indent, fence = opening["indent"], opening["fence"]
        body = []
        end = index + 1
        while end < len(lines):
            line = lines[end]
            stripped = line.strip()
            if stripped.startswith(fence) and not stripped.strip(fence[0]):
                break
            body.append(line[len(indent) :] if line.startswith(indent) else line.lstrip())
            end += 1
        blocks.append((opening["info"].strip(), "\n".join(body) + "\n", index + 1))
        index = end + 1
    return blocks


def python_blocks(path: Path) -> list[tuple[str, int]]:
    """The blocks of a Markdown file that are run: (code, line of the fence)."""
    return [
        (code, line)
        for info, code, line in fenced_blocks(path.read_text(encoding="utf-8"))
        if info == "python"
    ]


def _documents() -> list[Path]:
    return [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]


def _examples() -> list[object]:
    params: list[object] = []
    for path in _documents():
        name = path.relative_to(ROOT).as_posix()
        for number, (code, line) in enumerate(python_blocks(path)):
            params.append(pytest.param(name, line, code, id=f"{name}#{number}"))
    return params


def _text(output: str | bytes | None) -> str:
    # a timeout hands over bytes even from a run in text mode
    if isinstance(output, bytes):
        return output.decode("utf-8", errors="replace")
    return output or ""


def _numbered(code: str) -> str:
    return "\n".join(f"{n:4d}  {line}" for n, line in enumerate(code.splitlines(), 1))


@pytest.mark.parametrize(("document", "line", "code"), _examples())
def test_python_block_of_the_docs_runs(document: str, line: int, code: str, tmp_path: Path) -> None:
    script = tmp_path / "doc_example.py"
    script.write_text(code, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k != "SQLITEJOBQ_DB"}
    env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT), str(ROOT / "src"), *filter(None, [os.environ.get("PYTHONPATH")])]
    )
    where = f"{document}, the python block at line {line}"
    try:
        done = subprocess.run(
            [sys.executable, script.name],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=EXAMPLE_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(
            f"{where} ran longer than {EXAMPLE_TIMEOUT}s:\n{_numbered(code)}\n"
            f"--- output so far ---\n{_text(exc.stdout)}{_text(exc.stderr)}",
            pytrace=False,
        )
    if done.returncode != 0:
        pytest.fail(
            f"{where} exited with status {done.returncode}:\n{_numbered(code)}\n"
            f"--- stdout ---\n{done.stdout}--- stderr ---\n{done.stderr}",
            pytrace=False,
        )


def test_docs_have_python_examples_to_run() -> None:
    assert python_blocks(ROOT / "README.md"), "README.md has no python block"


def test_fenced_blocks_are_found_by_info_string_and_indent() -> None:
    text = (
        "intro\n```python\nprint(1)\n```\n"
        "```py\nfragment\n```\n"
        "!!! note\n    ```python\n    x = 1\n      y = 2\n    ```\n"
        "~~~~text\n```\nstill text\n~~~~\n"
    )
    assert fenced_blocks(text) == [
        ("python", "print(1)\n", 2),
        ("py", "fragment\n", 5),
        ("python", "x = 1\n  y = 2\n", 9),
        ("text", "```\nstill text\n", 13),
    ]


def _load_hooks() -> ModuleType:
    spec = importlib.util.spec_from_file_location("sqlitejobq_docs_hooks", DOCS / "hooks.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cli_reference_renders_every_subcommand_help() -> None:
    text = _load_hooks().render_cli_reference()
    headings = re.findall(r"^## (sqlitejobq.*)$", text, flags=re.MULTILINE)
    assert headings == ["sqlitejobq", *(f"sqlitejobq {name}" for name in _COMMANDS)]
    for name in _COMMANDS:
        assert f"usage: sqlitejobq {name} " in text
    assert text.count("```text\n") == len(_COMMANDS) + 1


def test_cli_reference_nests_under_the_heading_of_its_section() -> None:
    hooks = _load_hooks()
    page = "# Command line\n\n```sh\n# not a heading\n```\n\n## Reference\n\n" + PLACEHOLDER
    rendered = hooks.on_page_markdown(page)
    assert PLACEHOLDER not in rendered
    assert "\n### sqlitejobq worker\n" in rendered
    assert hooks.on_page_markdown("# Other page\n") == "# Other page\n"


def test_cli_page_holds_the_reference_placeholder() -> None:
    lines = (DOCS / "cli.md").read_text(encoding="utf-8").splitlines()
    assert PLACEHOLDER in [line.strip() for line in lines]


@pytest.mark.timeout(BUILD_TIMEOUT + 30)
def test_docs_site_builds_with_no_warnings(tmp_path: Path) -> None:
    for module in ("mkdocs", "material", "mkdocstrings", "mkdocstrings_handlers"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is not installed; pip install -e '.[docs]' to build the docs")
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT,
        check=False,
    )
    assert done.returncode == 0, f"mkdocs build --strict failed:\n{done.stdout}{done.stderr}"
    assert (tmp_path / "cli" / "index.html").is_file()


_TEST_REFERENCE = re.compile(r"`((?:tests|benchmarks)/[\w/]+\.py)::(\w+)`")
_SAME_FILE_REFERENCE = re.compile(r"`((?:tests|benchmarks)/[\w/]+\.py)::\w+`((?:, `\w+`)+)")


def test_every_test_the_guarantees_page_names_exists() -> None:
    text = (DOCS / "guarantees.md").read_text()
    named = _TEST_REFERENCE.findall(text)
    for path, names in _SAME_FILE_REFERENCE.findall(text):
        named += [(path, name.strip(" ,`")) for name in names.split(",") if name.strip(" ,`")]
    assert len(named) > 30
    missing = []
    for path, name in named:
        source = ROOT / path
        if not source.is_file() or not re.search(rf"^(async )?def {name}\(", source.read_text(),
                                                 re.M):  # fmt: skip
            missing.append(f"{path}::{name}")
    assert missing == []
