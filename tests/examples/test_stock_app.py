"""The stock-analysis app on sqlitejobq: schema, tasks, the batch, the script."""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import pytest

from examples.stock_analyzer import tasks
from examples.stock_analyzer.__main__ import main as script_main
from examples.stock_analyzer.prices import SAMPLE_SYMBOLS
from examples.stock_analyzer.sample import write_sample
from examples.stock_analyzer.schema import MIGRATIONS, NAMESPACE, migrate_app
from examples.stock_analyzer.service import (
    SourceConfig,
    app_worker,
    batch_report,
    batch_summary,
    check_symbols,
    latest_analysis,
    open_queue,
    results_of_batch,
    start_analysis,
)
from sqlitejobq import Job, JobStatus, PermanentFailure, Queue
from sqlitejobq.job import as_async
from sqlitejobq.migrations import applied_migrations

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.timeout(300)


def stored(db: Path) -> list[tuple[int, str]]:
    with closing(sqlite3.connect(db)) as conn:
        return conn.execute(
            "SELECT job_id, symbol FROM analysis_results ORDER BY job_id"
        ).fetchall()


def test_the_app_schema_is_versioned_migrations_in_the_queue_file(tmp_path: Path) -> None:
    db = tmp_path / "app.db"
    queue = open_queue(db)
    versions = [m.version for m in applied_migrations(db, NAMESPACE)]
    assert versions == [m.version for m in MIGRATIONS]
    assert migrate_app(db) == []
    with closing(sqlite3.connect(db)) as conn:
        columns = [r[1] for r in conn.execute("PRAGMA table_info(analysis_results)")]
        indexes = [r[1] for r in conn.execute("PRAGMA index_list(analysis_results)")]
        summaries = [r[1] for r in conn.execute("PRAGMA table_info(batch_summaries)")]
        batches = [r[1] for r in conn.execute("PRAGMA table_info(analysis_batches)")]
    assert {"job_id", "symbol", "signal", "result", "source"} <= set(columns)
    assert "analysis_results_symbol" in indexes
    assert summaries == ["batch_id", "job_id", "created_at", "completed", "failed",
                         "best_symbol", "ranking", "failures"]  # fmt: skip
    assert batches == ["batch_id", "source", "summary_job_id", "created_at"]
    queue.close()


def test_a_batch_of_the_sample_runs_through_real_workers(tmp_path: Path) -> None:
    db = tmp_path / "app.db"
    queue = open_queue(db)
    batch = start_analysis(queue, list(SAMPLE_SYMBOLS), SourceConfig())
    summary = app_worker(queue, concurrency=4).run(burst=True)
    assert summary.completed == len(SAMPLE_SYMBOLS) + 1  # and the batch's summary job
    report = batch_report(queue, batch.id)
    assert report["status"] == "completed" and report["percent"] == 100.0
    assert report["summary_job_id"] == batch.then_id
    assert {s["status"] for s in report["symbols"]} == {"completed"}
    results = results_of_batch(queue, batch.id)
    assert sorted(r["symbol"] for r in results) == sorted(SAMPLE_SYMBOLS)
    # one stored row per job, written in the completion's transaction
    assert sorted(job_id for job_id, _ in stored(db)) == sorted(batch.job_ids)
    tcs = latest_analysis(queue, "tcs.ns")
    assert tcs is not None and tcs["symbol"] == "TCS.NS" and tcs["batch_id"] == batch.id
    job = queue.get(batch.job_ids[0])
    assert job.result["symbol"] == job.payload["symbol"] and job.progress == 1.0
    queue.close()


def test_an_unknown_symbol_fails_its_job_only_and_is_not_retried(tmp_path: Path) -> None:
    db = tmp_path / "app.db"
    queue = open_queue(db)
    batch = start_analysis(queue, ["TCS.NS", "NOSUCH.NS", "INFY.NS"], SourceConfig())
    app_worker(queue, concurrency=2).run(burst=True)
    report = batch_report(queue, batch.id)
    assert report["status"] == "completed_with_errors"
    assert (report["completed"], report["failed"]) == (2, 1)
    [failed] = [s for s in report["symbols"] if s["status"] == "failed"]
    assert failed["symbol"] == "NOSUCH.NS" and failed["attempts"] == 1
    assert failed["error"] == (
        f"PermanentFailure: no price data for 'NOSUCH.NS' from the bundled sample (it holds "
        f"only {', '.join(sorted(SAMPLE_SYMBOLS))})"
    )  # no advice on flags: API users read it too
    assert [symbol for _, symbol in stored(db)] == ["TCS.NS", "INFY.NS"]
    summary = batch_summary(queue, batch.id)
    assert summary is not None and (summary["completed"], summary["failed"]) == (2, 1)
    assert [f["symbol"] for f in summary["failures"]] == ["NOSUCH.NS"]
    queue.close()


def test_the_report_says_processing_and_shows_a_message_only_while_a_job_runs(
    tmp_path: Path,
) -> None:
    queue = open_queue(tmp_path / "app.db")
    symbols = ["TCS.NS", "INFY.NS", "SBIN.NS", "LT.NS"]
    batch = start_analysis(queue, symbols, SourceConfig())
    report = batch_report(queue, batch.id)
    assert report["status"] == "queued"
    waiting = [(s["status"], s["progress"], s["message"], s["error"]) for s in report["symbols"]]
    assert waiting == [("queued", 0.0, None, None)] * 4

    def at_work(symbol: str) -> Job:
        [job] = queue.claim("w")
        assert job.payload["symbol"] == symbol
        job.set_progress(0.1, f"loading {symbol} from sample")
        return job

    running = at_work("TCS.NS")
    report = batch_report(queue, batch.id)
    assert report["status"] == "processing"
    tcs = report["symbols"][0]
    assert (tcs["status"], tcs["progress"], tcs["message"], tcs["error"]) == (
        "processing", 0.1, "loading TCS.NS from sample", None)  # fmt: skip
    queue.complete(running, asyncio.run(tasks.analyze_stock(as_async(running))))

    queue.fail(at_work("INFY.NS"), ConnectionError("timed out"), retry_in=3600)  # a retry waits
    queue.fail(at_work("SBIN.NS"), "no price data for 'SBIN.NS'", retry=False)
    cancelled = at_work("LT.NS")
    queue.cancel(cancelled.id)
    queue.complete(cancelled, None)  # a run that ends after its cancel: cancelled
    report = batch_report(queue, batch.id)
    assert report["status"] == "processing"  # a retry is still to run
    entries = {s["symbol"]: s for s in report["symbols"]}
    assert {s: e["status"] for s, e in entries.items()} == {
        "TCS.NS": "completed",
        "INFY.NS": "queued",
        "SBIN.NS": "failed",
        "LT.NS": "cancelled",
    }
    assert all(entry["message"] is None for entry in entries.values())
    assert entries["TCS.NS"]["progress"] == 1.0 and entries["TCS.NS"]["error"] is None
    assert entries["INFY.NS"]["progress"] == 0.0 and entries["INFY.NS"]["attempts"] == 1
    assert entries["INFY.NS"]["error"] == "ConnectionError: timed out"
    assert entries["SBIN.NS"]["progress"] == 0.1
    assert entries["SBIN.NS"]["error"] == "no price data for 'SBIN.NS'"
    assert entries["LT.NS"]["progress"] == 0.1 and entries["LT.NS"]["error"] is None
    queue.cancel(entries["INFY.NS"]["job_id"])
    report = batch_report(queue, batch.id)
    assert report["status"] == "completed_with_errors"
    assert (report["completed"], report["failed"], report["cancelled"]) == (1, 1, 2)
    queue.close()


def test_symbols_are_checked_before_anything_is_enqueued(tmp_path: Path) -> None:
    assert check_symbols(["tcs.ns", "TCS.NS", " infy.ns "]) == ["TCS.NS", "INFY.NS"]
    for bad, message in [([], "must not be empty"), (["A B"], "A B"), ("TCS.NS", "list"),
                         (["X"] * 1001, "at most 1000")]:  # fmt: skip
        with pytest.raises(ValueError, match=message):
            check_symbols(bad)  # type: ignore[arg-type]
    queue = open_queue(tmp_path / "app.db")
    with pytest.raises(ValueError, match=r"\.\./etc"):
        start_analysis(queue, ["TCS.NS", "../etc"], SourceConfig())
    assert queue.stats().total() == 0
    queue.close()


def test_the_script_analyzes_the_sample_and_prints_the_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "script.db"
    code = script_main(["--db", str(db), "--workers", "3"])
    out = capsys.readouterr().out
    assert code == 0
    assert "progress: 12/12, 100%" in out
    assert "All 12 symbols analyzed" in out
    for symbol in SAMPLE_SYMBOLS:
        assert symbol in out
    assert len(stored(db)) == 12
    # after the table: the ranking's top and bottom three, in the summary's order
    lines = out.splitlines()
    start = lines.index(
        "Ranking by signal score, best first (rank 1 is the most bullish; table batch_summaries):"
    )
    assert start > max(n for n, line in enumerate(lines) if line.startswith("└"))
    shown = lines[start + 1 : start + 8]
    assert [line.split()[0] for line in shown] == ["1.", "2.", "3.", "...", "10.", "11.", "12."]
    assert shown[3] == "   ... 6 more ..."
    assert lines[start + 8].startswith("All 12 symbols analyzed")
    queue = open_queue(db)
    summary = batch_summary(queue, 1)
    assert summary is not None
    ranking = summary["ranking"]
    for line, entry in zip(shown[:3] + shown[4:], ranking[:3] + ranking[-3:], strict=True):
        assert line.split()[:3] == [f"{entry['rank']}.", entry["symbol"], f"{entry['score']:+d}"]
    # the script's workers never fire the daily refresh: no scheduler ran
    [refresh] = queue.schedules()
    assert refresh.name == "refresh_watchlist" and refresh.declared_at is None
    assert refresh.last_slot is None
    assert queue.jobs(task="refresh_watchlist") == []
    queue.close()


def test_the_script_lists_failures_and_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "prices"
    write_sample(folder, ["TCS.NS"])
    short = (folder / "TCS.NS.csv").read_text().splitlines()[:6]  # a header and 5 days
    (folder / "SHORT.NS.csv").write_text("\n".join(short) + "\n")
    code = script_main(["--db", str(tmp_path / "s.db"), "--source", "csv", "--folder",
                        str(folder), "--symbols", "TCS.NS,SHORT.NS"])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 1
    assert "1 of 2 symbols failed" in out and "SHORT.NS: failed" in out
    assert "    1. TCS.NS " in out and "  not ranked, failed: SHORT.NS" in out
    [line] = [line for line in out.splitlines() if line.startswith("  SHORT.NS: failed")]
    assert "not enough prices to analyze 'SHORT.NS': need at least 30 rows, got 5" in line


def test_the_script_refuses_symbols_the_sample_lacks_before_writing_anything(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "untouched.db"
    code = script_main(["--db", str(db), "--symbols", "TCS.NS,MISSING.NS,NOPE.NS"])
    captured = capsys.readouterr()
    assert code == 1 and captured.out == ""
    assert captured.err == (
        f"error: no price data for 'MISSING.NS', 'NOPE.NS' from the bundled sample (it holds "
        f"only {', '.join(sorted(SAMPLE_SYMBOLS))}; --source yfinance or csv for other "
        f"symbols)\n"
    )
    assert not db.exists()


def test_the_script_says_a_database_it_cannot_open_in_one_line_and_exits_1(
    tmp_path: Path,
) -> None:
    for command in (["examples.stock_analyzer"], ["examples.stock_analyzer.api", "--port", "1"]):
        done = subprocess.run(
            [sys.executable, "-m", *command, "--db", str(tmp_path / "no" / "such" / "x.db")],
            cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert done.returncode == 1, done.stderr
        assert done.stderr == (
            f"error: directory {tmp_path / 'no' / 'such'} of database "
            f"{tmp_path / 'no' / 'such' / 'x.db'} does not exist; create it first\n"
        )
        assert done.stdout == "" and not (tmp_path / "no").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--source", "csv"], "the csv source needs a folder"),
        (["--symbols", "TCS.NS,../etc"], "invalid symbol '../etc'"),
        (["--delay", "99"], "delay must be between 0 and 60 seconds"),
        (["--workers", "0"], "--workers must be >= 1"),
    ],
)
def test_the_script_refuses_bad_options_with_status_2_before_opening_the_database(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    db = tmp_path / "untouched.db"
    with pytest.raises(SystemExit) as exited:
        script_main(["--db", str(db), *args])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: python -m examples.stock_analyzer") and message in err
    assert not db.exists()


def test_the_script_with_worker_processes_on_a_csv_folder(tmp_path: Path) -> None:
    folder = tmp_path / "prices"
    symbols = [f"TEST{n}.NS" for n in range(8)]
    write_sample(folder, symbols)
    db = tmp_path / "procs.db"
    done = subprocess.run(
        [sys.executable, "-m", "examples.stock_analyzer", "--db", str(db), "--source", "csv",
         "--folder", str(folder), "--symbols", ",".join(symbols), "--processes", "2",
         "--workers", "2"],
        cwd=ROOT, capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "All 8 symbols analyzed" in done.stdout
    assert "database is locked" not in done.stdout + done.stderr
    with closing(sqlite3.connect(db)) as conn:
        results = [json.loads(r[0]) for r in conn.execute("SELECT result FROM analysis_results")]
        statuses = conn.execute("SELECT DISTINCT status FROM sqlitejobq_jobs").fetchall()
        summaries = conn.execute("SELECT batch_id, completed, failed FROM batch_summaries")
        assert summaries.fetchall() == [(1, 8, 0)]
    assert sorted(r["symbol"] for r in results) == symbols
    assert {r["source"] for r in results} == {"csv"}
    assert statuses == [(JobStatus.COMPLETED.value,)]  # the summary job's too
    assert "Ranking by signal score" in done.stdout
    with Queue(db) as queue:  # no registry: the schedules a worker recorded, if any
        assert queue.schedules() == []  # burst workers never fire the daily refresh


def test_the_sqlite_migrations_never_change() -> None:
    # Their checksums are recorded in every existing file: a changed one would be refused.
    assert [m.checksum[:16] for m in MIGRATIONS] == [
        "ba8e45659bda45f5", "1a0f35bd50bbeead", "82a338c49b527271", "4540877f60806083",
    ]  # fmt: skip


def test_the_script_names_the_sqlite_file_as_before_and_one_stock_in_the_singular(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "named.db"
    charts = tmp_path / "charts"
    assert script_main(["--db", str(db), "--symbols", "TCS.NS", "--workers", "1", "--charts",
                        str(charts)]) == 0  # fmt: skip
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0] == (
        "Analyzing 1 stock from the sample source as batch 1 in named.db, workers: 1 thread"
    )
    assert re.search(r"Batch 1: 1 stock analyzed in \d+\.\d\ds", out), out
    assert f"Charts of 1 stock written to {charts}/" in out
    assert lines[-1] == f"1 symbol analyzed; results stored in {db} (table analysis_results)."
    assert not re.search(r"\b1 (stocks|symbols|threads|charts|jobs)\b", out), out
    with Queue(db) as queue:
        assert queue.batch_progress(1).name == "analyze 1 stock"


def test_the_script_says_when_the_summary_failed_and_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object) -> dict[str, object]:
        raise PermanentFailure("ranking [broken]")

    monkeypatch.setattr(tasks, "summarize", broken)
    code = script_main(["--db", str(tmp_path / "s.db"), "--symbols", "TCS.NS"])
    out = capsys.readouterr().out
    assert code == 1
    assert "no summary of batch 1: summary job failed: PermanentFailure: ranking [broken]" in out
    assert "1 symbol analyzed; results stored" in out  # the analyses themselves are fine
