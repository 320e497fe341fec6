"""The script's results as people and scripts get them: a table that fits any terminal
without cutting a number, every column when piped, CSV and JSON equal to what is stored,
and bad input refused in one line before anything is written."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import sqlite3
import subprocess
import sys
from collections.abc import Mapping
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from examples.stock_analyzer.__main__ import main as script_main
from examples.stock_analyzer.output import COLUMNS, PRIORITY, fit_table, print_table
from examples.stock_analyzer.prices import SAMPLE_SYMBOLS
from examples.stock_analyzer.service import SourceConfig, open_queue, start_analysis

from .terminal import run_in_terminal

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.timeout(120)

BY_HEADER = {column.header: column for column in COLUMNS}
#: The columns a terminal of 80 columns must keep: the most important.
FIRST = ["symbol", "signal", "score", "close", "1m", "rsi14"]


@dataclass(frozen=True)
class Printed:
    """A results table read back from the output: its headings and its rows' cells, and
    the note that follows it, as one line."""

    headers: list[str]
    rows: list[list[str]]
    table_lines: list[str]
    note: str


def read_table(text: str) -> Printed:
    lines = [line.rstrip() for line in text.splitlines()]
    [heading] = [line for line in lines if line.startswith("┃")]
    headers = [cell.strip() for cell in heading.strip("┃").split("┃")]
    rows = [[cell.strip() for cell in line.strip("│").split("│")]
            for line in lines if line.startswith("│")]  # fmt: skip
    top = next(n for n, line in enumerate(lines) if line.startswith("┏"))
    bottom = next(n for n, line in enumerate(lines) if line.startswith("└"))
    after = next(n for n, line in enumerate(lines) if line.startswith("Ranking by"))
    note = " ".join(line.strip() for line in lines[bottom + 1 : after])
    return Printed(headers, rows, lines[top : bottom + 1], note)


def stored_rows(db: Path) -> list[dict[str, Any]]:
    """Every row of the app's analysis_results table, as the database has it."""
    with closing(sqlite3.connect(db)) as conn:
        conn.row_factory = sqlite3.Row
        return [dict(row) for row in conn.execute("SELECT * FROM analysis_results")]


def stored_analyses(db: Path) -> dict[str, dict[str, Any]]:
    return {row["symbol"]: json.loads(row["result"]) for row in stored_rows(db)}


def left_out_in_note(note: str) -> list[str]:
    """The column names the note says were left out."""
    found = re.search(r"Not shown, to fit \d+ columns: (.*?)\. ", note)
    assert found, f"no note naming the columns left out: {note!r}"
    return found[1].split(", ")


def assert_uncut(printed: Printed, stored: Mapping[str, Mapping[str, Any]]) -> None:
    """Every cell whole: each number parses and is the stored value as the table writes it."""
    assert printed.headers[0] == "symbol" and set(printed.headers) <= set(BY_HEADER)
    assert len(printed.rows) == len(stored) == len(SAMPLE_SYMBOLS)
    assert not any("…" in line for line in printed.table_lines), "\n".join(printed.table_lines)
    assert sorted(row[0] for row in printed.rows) == sorted(SAMPLE_SYMBOLS)
    for row in printed.rows:
        assert len(row) == len(printed.headers), row
        analysis = stored[row[0]]
        for header, cell in zip(printed.headers, row, strict=True):
            column = BY_HEADER[header]
            if column.numeric:
                assert not cell.endswith("…")
                number = float(cell.replace(",", ""))  # "+4", "-2.94", "4,877.74"
                assert number == pytest.approx(analysis[column.stored], abs=0.005)
            assert cell == column.cell(analysis), (row[0], header)


@pytest.mark.parametrize(("columns", "stdin_columns"), [(80, 200), (120, 80), (200, 80)])
def test_the_table_in_a_terminal_fits_and_cuts_no_number(
    tmp_path: Path, columns: int, stdin_columns: int
) -> None:
    db = tmp_path / "app.db"
    # stdin is a terminal of another width: the program must measure the one it writes to
    run = run_in_terminal(["--db", str(db)], columns, stdin_columns=stdin_columns)
    assert run.returncode == 0, run.text
    assert "12/12" in run.text and "All 12 symbols analyzed" in run.text  # the live bar
    printed = read_table(run.text)
    assert_uncut(printed, stored_analyses(db))
    assert max(len(line) for line in printed.table_lines) <= columns
    shown = [BY_HEADER[header].name for header in printed.headers]
    assert set(FIRST) <= set(shown), f"the most important columns first: {shown}"
    assert set(shown) == set(PRIORITY[: len(shown)])  # the least important are left out
    assert shown == [c.name for c in COLUMNS if c.name in shown]  # in the table's order
    left_out = [column.name for column in COLUMNS if column.name not in shown]
    if columns >= 200:
        assert left_out == [] and printed.note == ""
    else:
        assert left_out, "a table this narrow cannot hold every column"
        assert sorted(left_out_in_note(printed.note)) == sorted(left_out)
        assert f"to fit {columns} columns" in printed.note and "--columns" in printed.note


def test_the_table_piped_has_every_column_at_full_width(tmp_path: Path) -> None:
    db = tmp_path / "app.db"
    done = subprocess.run(
        [sys.executable, "-m", "examples.stock_analyzer", "--db", str(db)],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
        env={**os.environ, "COLUMNS": "80"},  # a pipe has no width, whatever $COLUMNS says
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    printed = read_table(done.stdout)
    assert printed.headers == [column.header for column in COLUMNS]
    assert printed.note == ""
    assert_uncut(printed, stored_analyses(db))
    assert "\x1b[" not in done.stdout  # no colours nor cursor moves in a file


def test_columns_chooses_the_columns_and_their_order_symbol_first(tmp_path: Path) -> None:
    db = tmp_path / "app.db"
    run = run_in_terminal(["--db", str(db), "--columns", "1y,sma200,max_dd"], 80)
    assert run.returncode == 0, run.text
    printed = read_table(run.text)
    assert printed.headers == ["symbol", "1y %", "SMA200", "max DD %"]
    assert printed.note == ""
    stored = stored_analyses(db)
    for row in printed.rows:
        assert row[1:] == [BY_HEADER[h].cell(stored[row[0]]) for h in printed.headers[1:]]


# --- the layout, measured on the values ----------------------------------------------------


def analysis(symbol: str, size: float) -> dict[str, Any]:
    """A made-up analysis whose numbers are about ``size``."""
    numbers = {c.stored: -size * 1.2345 for c in COLUMNS if c.numeric and c.name != "score"}
    return {**numbers, "symbol": symbol, "signal": "strong_sell", "score": -4}


def render(results: list[dict[str, Any]], width: int, columns: Any = None) -> tuple[str, Any]:
    console = Console(width=width, file=io.StringIO(), color_system=None)
    fitted = fit_table(console, results, columns, width=width, title="Batch 1")
    print_table(console, fitted)
    output = console.file.getvalue()  # type: ignore[attr-defined]
    return output, fitted


@pytest.mark.parametrize("size", [1.0, 1_000.0, 1_000_000_000.0])
def test_every_width_gets_the_most_important_columns_whole(size: float) -> None:
    results = [analysis(f"S{n}.NS", size) for n in range(3)]
    previous: list[str] = []
    for width in range(20, 241, 4):
        output, fitted = render(results, width)
        names = [column.name for column in fitted.shown]
        kept = [name for name in PRIORITY if name in names]
        assert kept == list(PRIORITY[: len(kept)]), (width, names)  # a prefix of PRIORITY
        assert set(previous) <= set(names)  # a wider terminal never shows less
        previous = names
        assert "…" not in output
        assert max(map(len, output.splitlines())) <= max(width, fitted.width)
        if len(names) > 1:  # only the symbols alone may be wider than the terminal
            assert fitted.width <= width
        for line in output.splitlines():
            if line.startswith("│"):
                cells = [cell.strip() for cell in line.strip("│").split("│")]
                for column, cell in zip(fitted.shown, cells, strict=True):
                    assert cell == column.cell(results[0]) or column.name == "symbol"


def test_the_columns_that_fit_depend_on_the_values_widths() -> None:
    small = [analysis("TCS.NS", 1.0)]
    large = [analysis("TCS.NS", 1_000_000_000.0)]
    _, narrow_values = render(small, 80)
    _, wide_values = render(large, 80)
    assert len(wide_values.shown) < len(narrow_values.shown)
    assert wide_values.width <= 80 and narrow_values.width <= 80


def test_a_symbol_wider_than_the_terminal_is_still_whole() -> None:
    output, fitted = render([analysis("ABCDEFGHIJKLMNOPQRST", 1.0)], 12)
    assert [column.name for column in fitted.shown] == ["symbol"]
    assert "ABCDEFGHIJKLMNOPQRST" in output and "…" not in output


# --- csv and json ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def analyzed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A database with one batch of the sample, and the JSON its run printed."""
    db = tmp_path_factory.mktemp("formats") / "app.db"
    done = subprocess.run(
        [sys.executable, "-m", "examples.stock_analyzer", "--db", str(db), "--format", "json"],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "All 12 symbols analyzed" in done.stderr  # what people read goes to stderr
    return db, done.stdout


def test_json_holds_every_field_of_every_stored_row(analyzed: tuple[Path, str]) -> None:
    db, printed = analyzed
    document = json.loads(printed)
    assert document["batch_id"] == 1 and document["failures"] == []
    by_job = {entry["job_id"]: entry for entry in document["analyses"]}
    rows = stored_rows(db)
    assert len(rows) == len(by_job) == len(SAMPLE_SYMBOLS)
    for row in rows:
        entry = by_job[row["job_id"]]
        for column, value in row.items():
            if column == "result":
                assert json.loads(value).items() <= entry.items()
            elif column != "id":  # the row's own key; the job's id names the analysis
                assert entry[column] == value, column
    # the table's order: the most bullish signal first
    symbols = [entry["symbol"] for entry in document["analyses"]]
    assert symbols[0] == "SBIN.NS" and symbols[-1] == "LT.NS"


def test_csv_holds_the_tables_values_unformatted(
    analyzed: tuple[Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    db, _ = analyzed
    assert script_main(["--db", str(db), "--batch", "latest", "--format", "csv"]) == 0
    out = capsys.readouterr().out
    rows = list(csv.DictReader(io.StringIO(out)))
    assert list(rows[0]) == [column.stored for column in COLUMNS]
    stored = stored_analyses(db)
    assert sorted(row["symbol"] for row in rows) == sorted(stored)
    for row in rows:
        analysis = stored[row["symbol"]]
        for column in COLUMNS:
            value = analysis[column.stored]
            if column.numeric:
                assert float(row[column.stored]) == value, column.name  # exact: full precision
                assert "," not in row[column.stored]
            else:
                assert row[column.stored] == value
    # the MACD histogram is stored to 4 places, more than the table shows
    assert any(len(row["macd_hist"].split(".")[1]) > 2 for row in rows)


def test_csv_with_columns_holds_those_only(
    analyzed: tuple[Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    db, _ = analyzed
    arguments = ["--db", str(db), "--batch", "1", "--format", "csv", "--columns", "rsi14,close"]
    assert script_main(arguments) == 0
    rows = list(csv.reader(io.StringIO(capsys.readouterr().out)))
    assert rows[0] == ["symbol", "rsi_14", "last_close"] and len(rows) == 13


def test_a_stored_batch_is_printed_again_without_running(
    analyzed: tuple[Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    db, _ = analyzed
    before = len(stored_rows(db))
    assert script_main(["--db", str(db), "--batch", "latest"]) == 0
    out = capsys.readouterr().out
    assert "Batch 1: 12 stocks analyzed" in out and "Analyzing" not in out
    assert_uncut(read_table(out), stored_analyses(db))
    assert len(stored_rows(db)) == before


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--batch", "7"], "error: no batch with id 7 in "),
        (["--batch", "latest", "--db", "{tmp}/none.db"], "error: no database {tmp}/none.db"),
    ],
)
def test_a_batch_that_is_not_stored_is_one_line(
    analyzed: tuple[Path, str], tmp_path: Path, capsys: pytest.CaptureFixture[str],
    arguments: list[str], message: str,
) -> None:  # fmt: skip
    db, _ = analyzed
    arguments = [a.replace("{tmp}", str(tmp_path)) for a in arguments]
    assert script_main(["--db", str(db), *arguments]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith(message.replace("{tmp}", str(tmp_path)))
    assert captured.err.count("\n") == 1
    assert not (tmp_path / "none.db").exists()


#: What --batch takes, as its usage error says.
BATCH_ID = "--batch takes a batch id (a whole number from 1 to 9223372036854775807)"


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--format", "xml"], "invalid choice: 'xml'"),
        (["--columns", "close,bogus"], "unknown column 'bogus': choose from symbol, signal"),
        (["--columns", ","], "--columns names no column"),
        (["--batch", "last"], f"{BATCH_ID} or 'latest', got 'last'"),
        (["--batch", "9" * 20], f"{BATCH_ID} or 'latest', got '99999999999999999999'"),
        (["--batch", "9223372036854775808"], f"{BATCH_ID} or 'latest', got '9223372036854775808'"),
        (["--batch", "0"], f"{BATCH_ID} or 'latest', got '0'"),
        (["--batch", "-1"], f"{BATCH_ID} or 'latest', got '-1'"),
        (["--batch", "1", "--symbols", "TCS.NS"], "--batch prints a stored batch"),
    ],
)
def test_bad_options_are_usage_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], arguments: list[str], message: str
) -> None:
    with pytest.raises(SystemExit) as exited:
        script_main(["--db", str(tmp_path / "x.db"), *arguments])
    assert exited.value.code == 2
    assert message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


# --- bad input: one line, nothing written ------------------------------------------------------


def bad_input_cases() -> list[Any]:
    cases = [
        pytest.param(["--symbols", "TCS.NS,NOSUCH.NS"],
                     "error: no price data for 'NOSUCH.NS' from the bundled sample (it holds "
                     "only ASIANPAINT.NS, ", id="unknown symbol"),
        pytest.param(["--source", "csv", "--folder", "{tmp}/no-prices"],
                     "error: price folder '{tmp}/no-prices' is not a directory",
                     id="missing data folder"),
        pytest.param(["--charts", "{tmp}/file.txt"],
                     "error: cannot write charts to {tmp}/file.txt: it is a file, not a folder",
                     id="charts folder is a file"),
        pytest.param(["--charts", "{tmp}/file.txt/charts"],
                     "error: cannot write charts to {tmp}/file.txt/charts: Not a directory",
                     id="charts folder under a file"),
    ]  # fmt: skip
    if os.geteuid() != 0:  # root writes into a read-only folder all the same
        cases.append(pytest.param(["--charts", "{tmp}/read-only"],
                                  "error: cannot write charts to {tmp}/read-only: Permission "
                                  "denied", id="read-only charts folder"))  # fmt: skip
    return cases


@pytest.mark.parametrize(("arguments", "message"), bad_input_cases())
def test_bad_input_is_one_line_on_stderr_and_nothing_is_written(
    tmp_path: Path, arguments: list[str], message: str
) -> None:
    (tmp_path / "file.txt").write_text("mine\n")
    (tmp_path / "read-only").mkdir(mode=0o555)
    before = sorted(tmp_path.rglob("*"))
    db = tmp_path / "app.db"
    done = subprocess.run(
        [sys.executable, "-m", "examples.stock_analyzer", "--db", str(db),
         *(a.replace("{tmp}", str(tmp_path)) for a in arguments)],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stderr.startswith(message.replace("{tmp}", str(tmp_path)))
    assert done.stderr.count("\n") == 1 and done.stdout == ""
    assert sorted(tmp_path.rglob("*")) == before  # no database, no chart, no folder
    assert (tmp_path / "file.txt").read_text() == "mine\n"


def test_a_stored_batch_still_at_work_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "app.db"
    with closing(open_queue(db)) as queue:
        start_analysis(queue, ["TCS.NS", "INFY.NS"], SourceConfig())  # no worker runs it
    assert script_main(["--db", str(db), "--batch", "latest"]) == 1
    out = capsys.readouterr().out
    assert "Batch 1: 0 stocks analyzed" in out
    assert out.splitlines()[-1] == "Batch 1 is still queued: 0 of 2 symbols finished."
