"""The documentation is tested: its examples run, its CLI reference renders, the site builds.

Every fenced code block whose info string is exactly ``python`` in README.md and docs/*.md
is run as a script of its own, in a fresh temporary directory, and must exit with status 0.
So a ``python`` block is complete: it imports what it uses and creates the files it needs.
Blocks fenced otherwise are shown, never run: ``py`` for Python that is not a whole
program (a fragment, a variation on the block before it, code that needs a service),
``text`` for output, ``sh`` for shell commands.

The ``sh`` blocks are checked too. Every ``sqlitejobq`` command line of README.md and
docs/*.md parses. README.md and docs/quickstart.md work as printed from a fresh clone: their
commands name the programs of ``.venv`` by path, and their ``sh`` blocks run, as far as
offline allows (see :func:`test_the_shell_blocks_of_the_newcomer_pages_run`).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import inspect
import os
import re
import shlex
import subprocess
import sys
import tomllib
import typing
from pathlib import Path
from types import ModuleType

import pytest

from sqlitejobq import __version__
from sqlitejobq.cli import _COMMANDS, build_parser

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
        if not source.is_file() or not re.search(
            rf"^(async )?def {name}\(", source.read_text(), re.M
        ):
            missing.append(f"{path}::{name}")
    assert missing == []


# --- the shell blocks ---------------------------------------------------------------------

#: The pages a newcomer follows from a fresh clone: their sh blocks run, and every program
#: of the environment is named by its path in ``.venv``.
NEWCOMER_PAGES = ("README.md", "docs/quickstart.md")
VENV_BIN = ".venv/bin/"
#: The programs a fresh clone has only in ``.venv`` (``python3 -m venv`` makes it).
VENV_PROGRAMS = frozenset({"python", "pip", "pip3", "sqlitejobq", "mkdocs", "pytest"})
#: ``python -m`` modules run as printed; any other is run with ``--help`` (a server, the
#: test suite itself, a build), except ``venv``, which made the environment the tests run in.
RUN_AS_PRINTED = frozenset({"examples.stock_analyzer"})
COMMAND_TIMEOUT = 120
_SEPARATORS = frozenset({"&&", "||", ";"})
_WHEEL = re.compile(
    r"^(?:.*/)?sqlitejobq-(?P<version>[^-]+)-py3-none-any\.whl(?:\[(?P<extras>.*)\])?$"
)
_LOCAL = re.compile(r"^\.(?:\[(?P<extras>.*)\])?$")


def shell_commands(code: str) -> list[list[str]]:
    """The commands of a sh block, as words: lines joined at a trailing backslash, split at
    ``&&``, ``||`` and ``;``, comments dropped, ``VAR=value`` prefixes and ``do`` kept off."""
    commands: list[list[str]] = []
    for line in code.replace("\\\n", " ").splitlines():
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        command: list[str] = []
        for word in [*lexer, ";"]:
            if word in _SEPARATORS:
                if command:
                    commands.append(command)
                command = []
            elif not command and (word in ("do", "then") or re.match(r"^[A-Z_]+=", word)):
                continue
            else:
                command.append(word)
    return commands


def _shell_blocks(document: str) -> list[tuple[int, list[list[str]]]]:
    text = (ROOT / document).read_text(encoding="utf-8")
    return [
        (line, shell_commands(code)) for info, code, line in fenced_blocks(text) if info == "sh"
    ]


def _cli_arguments(command: list[str]) -> list[str] | None:
    """The arguments of a ``sqlitejobq`` command line (``python -m sqlitejobq`` too), else None."""
    program = command[0].rsplit("/", 1)[-1]
    if program == "sqlitejobq":
        return command[1:]
    if program.startswith("python") and command[1:3] == ["-m", "sqlitejobq"]:
        return command[3:]
    return None


def _cli_lines() -> list[object]:
    params: list[object] = []
    for path in _documents():
        name = path.relative_to(ROOT).as_posix()
        for line, commands in _shell_blocks(name):
            for command in commands:
                arguments = _cli_arguments(command)
                if arguments is not None:
                    params.append(
                        pytest.param(arguments, id=f"{name}:{line}: {shlex.join(command)}")
                    )
    return params


def test_shell_commands_are_split_as_a_shell_would() -> None:
    code = (
        "python3 -m venv .venv && .venv/bin/pip install -e '.[dev]'  # set up\n"
        "X=1 .venv/bin/sqlitejobq enqueue --db j.db t '{\"a\": 1}' \\\n    --delay 5m\n"
        "for i in 1 2; do\n  python -m pytest -k 'a or b'\ndone\n"
    )
    assert shell_commands(code) == [
        ["python3", "-m", "venv", ".venv"],
        [".venv/bin/pip", "install", "-e", ".[dev]"],
        [".venv/bin/sqlitejobq", "enqueue", "--db", "j.db", "t", '{"a": 1}', "--delay", "5m"],
        ["for", "i", "in", "1", "2"],
        ["python", "-m", "pytest", "-k", "a or b"],
        ["done"],
    ]


def test_the_docs_have_cli_lines_to_check() -> None:
    assert len(_cli_lines()) > 20


@pytest.mark.parametrize("arguments", _cli_lines())
def test_every_sqlitejobq_command_line_of_the_docs_parses(
    arguments: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    try:
        build_parser().parse_args(arguments)
    except SystemExit as exc:
        if exc.code != 0 or not {"--help", "-h", "--version"} & set(arguments):
            pytest.fail(
                f"sqlitejobq {shlex.join(arguments)}: exit status {exc.code}\n"
                f"{capsys.readouterr().err}",
                pytrace=False,
            )


def _extras() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    return set(project["optional-dependencies"])


def _check_pip_install(command: list[str]) -> None:
    """A pip install of sqlitejobq as it can be today: from the clone (``-e .``,
    ``'.[extras]'``) or from a wheel built here; never by the name, as if published."""
    assert command[1] == "install", f"pip {command[1]}: only pip install is expected"
    targets = [word for word in command[2:] if word != "-e"]
    assert targets, "pip install of nothing"
    for target in targets:
        if target == "build":  # the build front end, from the package index
            continue
        local, wheel = _LOCAL.match(target), _WHEEL.match(target)
        assert local or wheel, (
            f"pip install {target}: sqlitejobq is not published; install it from the clone "
            f"(-e . or '.[extra]') or from a wheel built with python -m build"
        )
        if wheel:
            assert wheel["version"] == __version__, f"{target}: the version is {__version__}"
        extras = (local or wheel)["extras"]  # type: ignore[index]
        named = set(extras.split(",")) if extras else set()
        assert named <= _extras(), f"{target}: no extra {sorted(named - _extras())}"


def _program(word: str) -> str:
    """``python`` of ``.venv/bin/python`` or ``/path/to/app/.venv/bin/python``; checks it is
    named by its path in a venv when a fresh clone has it only there."""
    program = word.rsplit("/", 1)[-1]
    if program in VENV_PROGRAMS:
        assert word == VENV_BIN + program or word.endswith("/" + VENV_BIN + program), (
            f"{word!r}: a fresh clone has no {program} on PATH; write {VENV_BIN}{program}"
        )
    return program


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("pip install sqlitejobq", "pip"),
        (".venv/bin/pip install sqlitejobq", "sqlitejobq is not published"),
        (".venv/bin/pip install 'sqlitejobq[postgres]'", "sqlitejobq is not published"),
        (".venv/bin/pip install -e '.[postgress]'", "no extra ['postgress']"),
        (".venv/bin/pip install 'dist/sqlitejobq-0.0.1-py3-none-any.whl'", "the version is"),
        ("sqlitejobq status --db jobs.db", "write .venv/bin/sqlitejobq"),
        ("python -m examples.stock_analyzer", "write .venv/bin/python"),
    ],
)
def test_what_a_fresh_clone_cannot_run_is_refused(line: str, message: str) -> None:
    [command] = shell_commands(line)

    def check() -> None:
        if _program(command[0]) == "pip":
            _check_pip_install(command)

    with pytest.raises(AssertionError, match=re.escape(message)):
        check()


def test_installs_a_fresh_clone_can_run_pass() -> None:
    for line in (
        ".venv/bin/pip install -e .",
        ".venv/bin/pip install -e '.[postgres,cron]'",
        f"/app/.venv/bin/pip install '/x/dist/sqlitejobq-{__version__}-py3-none-any.whl[postgres]'",
        ".venv/bin/pip install build",
    ):
        [command] = shell_commands(line)
        assert _program(command[0]) == "pip"
        _check_pip_install(command)


def _newcomer_blocks() -> list[object]:
    return [
        pytest.param(document, line, commands, id=f"{document}:{line}")
        for document in NEWCOMER_PAGES
        for line, commands in _shell_blocks(document)
    ]


def test_the_readme_starts_with_its_two_commands() -> None:
    first = _shell_blocks("README.md")[:2]
    assert [commands[-1][-2:] for _, commands in first] == [
        ["-m", "examples.stock_analyzer"],
        ["-m", "pytest"],
    ], "the README's first two commands are CI's contract: run the example, run the tests"


@pytest.mark.timeout(COMMAND_TIMEOUT * 6)
@pytest.mark.parametrize(("document", "line", "commands"), _newcomer_blocks())
def test_the_shell_blocks_of_the_newcomer_pages_run(
    document: str, line: int, commands: list[list[str]], tmp_path: Path
) -> None:
    """Each command of the block, in order, in a fresh directory, as far as offline allows.

    ``python3 -m venv`` made the environment these tests run in; ``pip install`` is checked,
    not run; ``.venv/bin/python`` is this interpreter. A ``python -m`` module runs as
    printed if it ends by itself (:data:`RUN_AS_PRINTED`), else with ``--help``;
    ``sqlitejobq`` runs as printed against the block's files, its ``worker`` with
    ``--burst`` added so that it stops. Files the page shows as a block starting with
    ``# path.py`` are written first, as a reader would.
    """
    for info, code, _ in fenced_blocks((ROOT / document).read_text(encoding="utf-8")):
        named = re.match(r"^# ([\w/]+\.py)\n", code)
        if info in ("py", "python") and named:
            (tmp_path / named[1]).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / named[1]).write_text(code, encoding="utf-8")
    for command in commands:
        program = _program(command[0])
        run: list[str] | None = None
        if program == "python3":
            assert command[1:3] == ["-m", "venv"], f"{command}: write {VENV_BIN}python"
            continue  # it made the environment these tests run in
        if program in ("pip", "pip3"):
            _check_pip_install(command)
        elif (arguments := _cli_arguments(command)) is not None:
            if arguments[:1] == ["worker"] and "--burst" not in arguments:
                arguments = [*arguments, "--burst"]
            run = ["-m", "sqlitejobq", *arguments]
        elif program == "python" and command[1:2] == ["-m"]:
            extra = [] if command[2] in RUN_AS_PRINTED else ["--help"]
            run = [*command[1:], *extra]
        else:
            pytest.fail(
                f"{document}:{line}: this test does not know how to check "
                f"{shlex.join(command)!r}; teach it",
                pytrace=False,
            )
        if run is None:
            continue
        env = {k: v for k, v in os.environ.items() if k != "SQLITEJOBQ_DB"}
        env["PYTHONPATH"] = os.pathsep.join(
            [str(ROOT), str(ROOT / "src"), *filter(None, [os.environ.get("PYTHONPATH")])]
        )
        done = subprocess.run(
            [sys.executable, *run],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT,
            check=False,
        )
        assert done.returncode == 0, (
            f"{document}:{line}: {shlex.join(command)} (run as python {shlex.join(run)}) "
            f"exited with status {done.returncode}:\n{done.stdout}{done.stderr}"
        )


# --- the options tables -------------------------------------------------------------------

#: A table of options is announced by this comment on the line before it; ``of`` names what
#: its first column must list, exactly (see :func:`option_sources`).
_OPTIONS_MARK = re.compile(r"^<!-- options-of: (?P<of>[\w.]+) -->$")
_NAME_IN_CELL = re.compile(r"`([A-Za-z_]\w*)`")


def _keyword_only(function: object) -> set[str]:
    """The parameters of ``function`` that are passed by keyword only: its keyword-only
    parameters, and the keys of the TypedDict of a ``**options: Unpack[...]``."""
    names = set()
    for parameter in inspect.signature(function).parameters.values():  # type: ignore[arg-type]
        if parameter.kind is inspect.Parameter.KEYWORD_ONLY:
            names.add(parameter.name)
        elif parameter.kind is inspect.Parameter.VAR_KEYWORD:
            names |= _unpacked_keys(function, parameter.annotation)
    return names


def _unpacked_keys(function: object, annotation: object) -> set[str]:
    """The keys of the TypedDict an ``Unpack[...]`` annotation of ``function`` names (a
    string annotation is read in the function's module); none for any other annotation."""
    if isinstance(annotation, str):
        namespace = inspect.unwrap(function).__globals__  # type: ignore[arg-type]
        annotation = eval(annotation, namespace)
    if typing.get_origin(annotation) is not typing.Unpack:
        return set()
    [typed_dict] = typing.get_args(annotation)
    return set(typed_dict.__required_keys__ | typed_dict.__optional_keys__)


def _fields(cls: type) -> set[str]:
    return {field.name for field in dataclasses.fields(cls)}


def option_sources() -> dict[str, set[str]]:
    """What each options table must list, read from the code: the keyword parameters of the
    call it documents, or an engine's options (its ``OPTIONS`` and its settings' fields;
    ``retry_timeout`` is the queue's own)."""
    from sqlitejobq import Queue, Registry, Worker
    from sqlitejobq.backends.postgres.connection import OPTIONS as POSTGRES_OPTIONS
    from sqlitejobq.backends.postgres.connection import PgSettings
    from sqlitejobq.backends.sqlite.backend import OPTIONS as SQLITE_OPTIONS
    from sqlitejobq.backends.sqlite.backend import Settings

    enqueue = _keyword_only(Queue.enqueue)
    return {
        "Registry.task": _keyword_only(Registry.task),
        "Queue": _keyword_only(Queue.__init__),
        "sqlite": (set(SQLITE_OPTIONS) | _fields(Settings)) - {"retry_timeout"},
        "postgres": (set(POSTGRES_OPTIONS) | _fields(PgSettings)) - {"retry_timeout"},
        "Queue.enqueue": enqueue,
        "Queue.enqueue_batch": _keyword_only(Queue.enqueue_batch) - enqueue,
        "Worker": _keyword_only(Worker.__init__),
    }


def options_tables(text: str) -> list[tuple[str, int, list[tuple[int, list[str]]]]]:
    """Every options table of Markdown ``text``: (what it documents, line of its mark, and
    per row its line and the names its first cell holds in backticks)."""
    lines = text.splitlines()
    tables = []
    for index, line in enumerate(lines):
        mark = _OPTIONS_MARK.match(line.strip())
        if mark is None:
            continue
        rows: list[tuple[int, list[str]]] = []
        for number in range(index + 1, len(lines)):
            row = lines[number].strip()
            if not row.startswith("|"):
                break
            rows.append((number + 1, _NAME_IN_CELL.findall(row.split("|")[1])))
        tables.append((mark["of"], index + 1, rows[2:]))  # past the header and the rule
    return tables


def options_table_problems(
    where: str, of: str, rows: list[tuple[int, list[str]]], expected: set[str]
) -> list[str]:
    """What is wrong with one options table: rows that name no option or one that does not
    exist, options that no row names."""
    problems = []
    named: set[str] = set()
    for line, names in rows:
        if not names:
            problems.append(f"{where}:{line}: a row of the {of} options names no `option`")
        for name in names:
            if name not in expected:
                problems.append(f"{where}:{line}: `{name}` is not an option of {of}")
        named.update(names)
    if not rows:
        problems.append(f"{where}: the {of} options mark is not followed by a table")
    for name in sorted(expected - named):
        problems.append(f"{where}: the table of {of} options lacks `{name}`")
    return problems


def test_options_table_problems_name_the_missing_and_the_stale() -> None:
    text = (
        "<!-- options-of: Worker -->\n| option | meaning |\n|---|---|\n"
        "| `lease`, `grace` | ... |\n| `gone` | no longer there |\n| a row | without a name |\n"
    )
    [(of, line, rows)] = options_tables(text)
    assert (of, line) == ("Worker", 1)
    assert options_table_problems("x.md", of, rows, {"lease", "grace", "concurrency"}) == [
        "x.md:5: `gone` is not an option of Worker",
        "x.md:6: a row of the Worker options names no `option`",
        "x.md: the table of Worker options lacks `concurrency`",
    ]


def test_every_options_table_lists_exactly_the_options_of_the_code() -> None:
    sources = option_sources()
    problems: list[str] = []
    marked: list[str] = []
    for path in _documents():
        where = path.relative_to(ROOT).as_posix()
        text = path.read_text(encoding="utf-8")
        for of, line, rows in options_tables(text):
            marked.append(of)
            if of not in sources:
                problems.append(f"{where}:{line}: no options of {of!r} are known to this test")
                continue
            problems += options_table_problems(where, of, rows, sources[of])
        # a table headed "option" without the mark would escape the check
        for number, line_text in enumerate(text.splitlines(), 1):
            if re.match(r"^\|\s*option\s*\|", line_text) and not _OPTIONS_MARK.match(
                text.splitlines()[number - 2].strip() if number > 1 else ""
            ):
                problems.append(f"{where}:{number}: an options table without an options-of mark")
    for of in sorted(set(sources) - set(marked)):
        problems.append(f"no page has the table of {of} options")
    assert problems == [], "\n".join(problems)


def test_the_calls_that_share_a_table_take_the_same_options() -> None:
    """The pages document one table for calls that take the same options: the task options
    of ``Registry.task`` (and so ``TaskOptions``) and ``Queue.task``, the enqueue options of
    ``enqueue``, ``enqueue_many``, the handles', ``AsyncQueue``'s and the batch's (and so
    ``EnqueueOptions``)."""
    from sqlitejobq import AsyncQueue, Queue, Registry, TaskHandle, TaskOptions
    from sqlitejobq.options import EnqueueOptions

    task = _keyword_only(Registry.task)
    assert _keyword_only(Queue.task) == task
    assert _fields(TaskOptions) <= task, sorted(_fields(TaskOptions) - task)
    enqueue = _keyword_only(Queue.enqueue)
    assert set(EnqueueOptions._fields) == enqueue
    assert _keyword_only(Queue.enqueue_many) == enqueue
    assert _keyword_only(Queue.enqueue_batch) >= enqueue
    assert _keyword_only(TaskHandle.enqueue) == enqueue
    assert _keyword_only(TaskHandle.enqueue_many) == enqueue
    assert _keyword_only(TaskHandle.enqueue_batch) == _keyword_only(Queue.enqueue_batch)
    assert _keyword_only(AsyncQueue.enqueue) == enqueue
    assert _keyword_only(AsyncQueue.enqueue_batch) == _keyword_only(Queue.enqueue_batch)


# --- measured figures live on the benchmarks page -----------------------------------------

FIGURES_PAGE = DOCS / "benchmarks.md"
_FIGURE = r"\d[\d,]*(?:\.\d+)?(?:\s*-\s*\d[\d,]*(?:\.\d+)?)?"
#: The kinds of measured figure the benchmarks page holds, as prose states them: a
#: throughput, a share of a CPU, a latency (a percentile, or "in/under/within N ms").
#: A setting reads otherwise ("2 ms apart", ``rate="5/s"``) and is not taken for one.
MEASURED = {
    "throughput": re.compile(
        rf"(?P<figure>{_FIGURE})\s*(?:jobs|cycles|enqueues)(?:/s\b|\s+(?:a|per)\s+second\b)"
    ),
    "CPU": re.compile(rf"(?P<figure>{_FIGURE})\s*%\s*(?:of\s+(?:a|one)\s+core\b|CPU\b)"),
    "latency": re.compile(
        rf"\b(?:p\d\d|median)\s+(?:of\s+)?(?P<figure>{_FIGURE})\s*ms\b"
        rf"|\b(?:in|under|within)\s+(?:about\s+|under\s+)?(?P<bound>{_FIGURE})\s*ms\b"
    ),
}
_CODE_SPAN = re.compile(r"`[^`]*`")


_ABOUT = re.compile(r"(?:about|around|roughly|~)\s*$")


def measured_figures(text: str) -> list[tuple[int, str, str, bool]]:
    """The measured figures stated in the prose of Markdown ``text`` (code blocks and code
    spans left out): (line, kind, the figure as written, e.g. ``0.36-0.43``, and whether it
    is stated as rounded: "about 30,000")."""
    code_lines: set[int] = set()
    for _, code, line in fenced_blocks(text):
        code_lines.update(range(line, line + code.count("\n") + 2))
    found = []
    for number, line_text in enumerate(text.splitlines(), 1):
        if number in code_lines:
            continue
        prose = _CODE_SPAN.sub(" ", line_text)
        for kind, pattern in MEASURED.items():
            for match in pattern.finditer(prose):
                group = "figure" if match.group("figure") is not None else "bound"
                figure = re.sub(r"\s*-\s*", "-", match.group(group))
                rounded = bool(_ABOUT.search(prose[: match.start(group)]))
                found.append((number, kind, figure, rounded))
    return found


def _rounds_to(stated: str, measured: str) -> bool:
    """Whether ``measured`` rounds to ``stated`` at the precision ``stated`` is written
    with: 28,514 and 29,163 round to "30,000"; 0.075 does not round to "0.05"."""
    digits = stated.replace(",", "")
    if "." in digits:
        step = 10.0 ** -len(digits.split(".")[1])
    else:
        step = 10.0 ** (len(digits) - len(digits.rstrip("0"))) if digits.strip("0") else 1.0
    return abs(round(float(measured.replace(",", "")) / step) * step - float(digits)) < step / 1e6


#: What marks a line of the benchmarks page (or its table's header) as holding figures of a
#: kind: the unit the figures are in.
_UNIT = {
    "throughput": re.compile(r"(?:jobs|cycles|enqueues)/s\b|\(jobs/s\)|/s\b"),
    "CPU": re.compile(r"%\s*(?:of\s+(?:a|one)\s+core|\(|$)|\bCPU\b"),
    "latency": re.compile(r"\d\s*ms\b|\bms\b|\(ms\)"),
}


def held_figures(page: str) -> dict[str, set[str]]:
    """The figures of each kind that the page ``page`` states: every number of a line (a
    range's ends too) where that kind's unit appears, in the line or in its table's header.
    Code blocks count: the page shows commands' output there."""
    held: dict[str, set[str]] = {kind: set() for kind in _UNIT}
    header = ""
    for line in page.splitlines():
        if not line.startswith("|"):
            header = ""
        elif not header:
            header = line
        context = line + " " + header
        numbers = [re.sub(r"\s*-\s*", "-", n) for n in re.findall(_FIGURE, line)]
        for kind, unit in _UNIT.items():
            if unit.search(context):
                for number in numbers:
                    held[kind].add(number)
                    held[kind].update(number.split("-"))
    return held


def figures_not_held(text: str, held_in: str) -> list[tuple[int, str, str]]:
    """The measured figures of ``text`` that the page ``held_in`` does not state as a figure
    of the same kind: as written, or, for one stated as rounded ("about 30,000"), as a
    figure that rounds to it."""
    held = held_figures(held_in)
    missing = []
    for line, kind, figure, rounded in measured_figures(text):
        if figure in held[kind]:
            continue
        values = (value for value in held[kind] if "-" not in value)
        if rounded and "-" not in figure and any(_rounds_to(figure, v) for v in values):
            continue
        missing.append((line, kind, figure))
    return missing


def test_measured_figures_are_found_in_prose_and_compared_with_the_page() -> None:
    page = (
        "An idle worker uses 0.05 % of a core; enqueue-to-start p50 0.7 ms, p99 1.5 ms.\n"
        "Drains 40,000 jobs a second, 33,700 - 35,500 jobs/s with four processes; every\n"
        'page answers in under 11 ms. Looks come 2 ms apart, `rate="5/s"`.\n'
        "A copy runs at about 30,000 jobs/s, a drain at about 50,000 jobs/s.\n"
        "```text\n51,600 jobs/s\n```\n"
    )
    assert measured_figures(page) == [
        (1, "CPU", "0.05", False), (1, "latency", "0.7", False), (1, "latency", "1.5", False),
        (2, "throughput", "40,000", False), (2, "throughput", "33,700-35,500", False),
        (3, "latency", "11", False),
        (4, "throughput", "30,000", True), (4, "throughput", "50,000", True),
    ]  # fmt: skip
    held = (
        "| idle | 0.00-0.05 % of a core |\n| p50 | 0.7 ms |\n"
        "| drain | 33,700-35,500 jobs/s |\n| copy | 29,163 jobs/s |\n"
        "Measured 2026-11-29, 40,000 rows; 1.5 s to restart.\n"
    )
    assert figures_not_held(page, held) == [
        (1, "latency", "1.5"),
        (2, "throughput", "40,000"),
        (3, "latency", "11"),
        (4, "throughput", "50,000"),
    ]
    assert _rounds_to("30,000", "28,514") and _rounds_to("0.05", "0.049")
    assert not _rounds_to("0.05", "0.075") and not _rounds_to("1,500", "1,449")


def test_measured_figures_are_quoted_only_from_the_benchmarks_page() -> None:
    """A throughput, a CPU share or a latency on any page but the benchmarks page must be
    one that page states (with the command that measured it): one figure, one place."""
    held_in = FIGURES_PAGE.read_text(encoding="utf-8")
    assert measured_figures(held_in), "the benchmarks page states no figure"
    stray = []
    for path in [*_documents(), ROOT / "CHANGELOG.md"]:
        if path == FIGURES_PAGE:
            continue
        for line, kind, figure in figures_not_held(path.read_text(encoding="utf-8"), held_in):
            stray.append(f"{path.relative_to(ROOT).as_posix()}:{line}: {kind} {figure}")
    assert stray == [], (
        "figures that docs/benchmarks.md does not hold (link to it instead):\n" + "\n".join(stray)
    )
