"""The stock-analysis app on PostgreSQL: its migrations, the batch script (threads and
worker processes), the completion hook and the HTTP API, each on a schema of its own
(``?schema=t_<hex>``, dropped afterwards) in the session's PostgreSQL database."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from examples.stock_analyzer.__main__ import main as script_main
from examples.stock_analyzer.prices import SAMPLE_SYMBOLS
from examples.stock_analyzer.sample import write_sample
from examples.stock_analyzer.schema import MIGRATIONS, NAMESPACE, PG_MIGRATIONS, migrate_app
from examples.stock_analyzer.service import (
    SourceConfig,
    app_worker,
    batch_report,
    batch_summary,
    describe,
    latest_analysis,
    open_queue,
    results_of_batch,
    start_analysis,
)
from sqlitejobq import JobStatus
from sqlitejobq.backends.postgres.connection import redact
from sqlitejobq.migrations import applied_migrations

from ..conftest import Database, PgServer, with_schema
from .api_server import running_api

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def pg_url(pg_dsn: str, pg_server: PgServer) -> Iterator[str]:
    """A ``postgresql://...?schema=t_<hex>`` URL of this test's own, dropped after it."""
    schema = pg_server.new_schema()
    yield with_schema(pg_dsn, schema)
    pg_server.drop(schema)


def stored(url: str) -> list[tuple[int, str]]:
    """(job_id, symbol) of every stored analysis, by job."""
    rows = Database("postgres", url).rows(
        "SELECT job_id, symbol FROM analysis_results ORDER BY job_id"
    )
    return [(int(job_id), str(symbol)) for job_id, symbol in rows]


def table_rows(out: str) -> list[str]:
    """The body rows of the table the script printed."""
    return [line for line in out.splitlines() if line.startswith("│")]


def ranking_lines(out: str) -> list[str]:
    """The ranking the script printed after the table, its heading included."""
    lines = out.splitlines()
    start = next(n for n, line in enumerate(lines) if line.startswith("Ranking by"))
    return lines[start : start + 8]


def assert_no_password(url: str, text: str) -> None:
    password = urlsplit(url).password
    assert not password or password not in text


def test_the_app_migrations_apply_once_and_are_recorded(pg_url: str) -> None:
    queue = open_queue(pg_url)
    recorded = applied_migrations(pg_url, NAMESPACE)
    assert [(m.version, m.name, m.checksum) for m in recorded] == [
        (m.version, m.name, m.checksum) for m in PG_MIGRATIONS
    ]
    assert [m.version for m in PG_MIGRATIONS] == [m.version for m in MIGRATIONS]
    assert migrate_app(pg_url) == []
    open_queue(pg_url).close()  # a second start applies nothing and refuses nothing
    assert len(applied_migrations(pg_url, NAMESPACE)) == len(PG_MIGRATIONS)
    db = Database("postgres", pg_url)
    assert {"id", "job_id", "symbol", "signal", "result", "source"} <= set(
        db.columns("analysis_results")
    )
    assert "analysis_results_symbol" in db.indexes("analysis_results")
    assert db.columns("batch_summaries") == [
        "batch_id", "job_id", "created_at", "completed", "failed", "best_symbol", "ranking",
        "failures",
    ]  # fmt: skip
    assert db.columns("analysis_batches") == [
        "batch_id", "source", "summary_job_id", "created_at",
    ]  # fmt: skip
    types = dict(db.rows(
        "SELECT column_name, data_type FROM information_schema.columns "
        "WHERE table_schema = ? AND table_name = 'analysis_results'", (db.schema,),
    ))  # fmt: skip
    assert types["analyzed_at"] == types["last_close"] == "double precision"
    assert db.value(
        "SELECT is_identity FROM information_schema.columns WHERE table_schema = ? "
        "AND table_name = 'analysis_results' AND column_name = 'id'", (db.schema,),
    ) == "YES"  # fmt: skip
    assert describe(queue) == queue.target and queue.target.startswith("postgresql://")
    queue.close()


def test_a_batch_of_the_sample_runs_through_real_workers(pg_url: str) -> None:
    queue = open_queue(pg_url)
    batch = start_analysis(queue, list(SAMPLE_SYMBOLS), SourceConfig())
    summary = app_worker(queue, concurrency=4).run(burst=True)
    assert summary.completed == len(SAMPLE_SYMBOLS) + 1  # and the batch's summary job
    report = batch_report(queue, batch.id)
    assert report["status"] == "completed" and report["percent"] == 100.0
    results = results_of_batch(queue, batch.id)
    assert [r["symbol"] for r in results] == sorted(SAMPLE_SYMBOLS)  # by code point
    # one stored row per job, written by the hook in the completion's transaction
    assert sorted(job_id for job_id, _ in stored(pg_url)) == sorted(batch.job_ids)
    tcs = latest_analysis(queue, "tcs.ns")
    assert tcs is not None and tcs["symbol"] == "TCS.NS" and tcs["batch_id"] == batch.id
    assert tcs["job_id"] in batch.job_ids and isinstance(tcs["analyzed_at"], float)
    assert latest_analysis(queue, "NEVER.NS") is None
    queue.close()


def test_an_unknown_symbol_fails_its_job_only_and_stores_nothing(pg_url: str) -> None:
    queue = open_queue(pg_url)
    batch = start_analysis(queue, ["TCS.NS", "NOSUCH.NS", "INFY.NS"], SourceConfig())
    app_worker(queue, concurrency=2).run(burst=True)
    report = batch_report(queue, batch.id)
    assert report["status"] == "completed_with_errors"
    assert (report["completed"], report["failed"]) == (2, 1)
    [failed] = [s for s in report["symbols"] if s["status"] == "failed"]
    assert failed["error"] == (
        f"PermanentFailure: no price data for 'NOSUCH.NS' from the bundled sample (it holds "
        f"only {', '.join(sorted(SAMPLE_SYMBOLS))})"
    )  # no advice on flags: API users read it too
    assert sorted(symbol for _, symbol in stored(pg_url)) == ["INFY.NS", "TCS.NS"]
    summary = batch_summary(queue, batch.id)
    assert summary is not None and (summary["completed"], summary["failed"]) == (2, 1)
    assert [f["symbol"] for f in summary["failures"]] == ["NOSUCH.NS"]
    queue.close()


def test_the_script_prints_the_same_table_as_on_sqlite(
    pg_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert script_main(["--db", str(tmp_path / "script.db"), "--workers", "3"]) == 0
    on_sqlite = capsys.readouterr().out
    code = script_main(["--db", pg_url, "--workers", "3"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "progress: 12/12, 100%" in out
    assert re.search(r"Batch \d+: 12 stocks analyzed", out)
    assert table_rows(out) == table_rows(on_sqlite) and len(table_rows(out)) == 12
    assert ranking_lines(out) == ranking_lines(on_sqlite) and len(ranking_lines(out)) == 8
    assert f"All 12 symbols analyzed; results stored in {redact(pg_url)} (table" in out
    assert_no_password(pg_url, out)
    assert len(stored(pg_url)) == 12


def test_the_script_speaks_of_one_stock_in_the_singular(
    pg_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert script_main(["--db", pg_url, "--symbols", "TCS.NS", "--workers", "1"]) == 0
    out = " ".join(capsys.readouterr().out.split())  # a long URL wraps lines
    assert out.startswith(f"Analyzing 1 stock from the sample source as batch 1 in "
                          f"{redact(pg_url)}, workers: 1 thread progress:")  # fmt: skip
    assert re.search(r"Batch 1: 1 stock analyzed in \d+\.\d\ds", out), out
    assert f"1 symbol analyzed; results stored in {redact(pg_url)} (table" in out
    assert not re.search(r"\b1 (stocks|symbols|threads|jobs)\b", out), out
    queue = open_queue(pg_url)
    assert queue.batch_progress(1).name == "analyze 1 stock"
    queue.close()


def test_the_script_with_worker_processes_stores_each_analysis_once(pg_url: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "examples.stock_analyzer", "--db", pg_url, "--processes", "2",
         "--workers", "2"],
        cwd=ROOT, capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "workers: 2 processes" in done.stdout
    assert "All 12 symbols analyzed" in done.stdout
    assert len(table_rows(done.stdout)) == 12
    for symbol in SAMPLE_SYMBOLS:
        assert symbol in done.stdout
    assert_no_password(pg_url, done.stdout + done.stderr)
    assert "Ranking by signal score" in done.stdout
    db = Database("postgres", pg_url)
    jobs = db.rows("SELECT id, status, task FROM sqlitejobq_jobs ORDER BY id")
    assert {status for _, status, _ in jobs} == {JobStatus.COMPLETED.value}
    analyses = [job_id for job_id, _, task in jobs if task == "analyze_stock"]
    assert [job_id for job_id, _ in stored(pg_url)] == analyses
    assert sorted(symbol for _, symbol in stored(pg_url)) == sorted(SAMPLE_SYMBOLS)
    [(summary_job, completed)] = db.rows("SELECT job_id, completed FROM batch_summaries")
    assert [job_id for job_id, _, task in jobs if task == "summarize_batch"] == [summary_job]
    assert completed == 12


# --- the HTTP API -----------------------------------------------------------------------------

SYMBOLS = [f"STOCK{n:02d}.NS" for n in range(16)]


@pytest.fixture(scope="module")
def pg_api(
    pg_dsn: str, pg_server: PgServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, str]]:
    """A uvicorn server of the API on a schema of its own: its base URL and the DB URL."""
    root = tmp_path_factory.mktemp("api_pg")
    folder = root / "prices"
    write_sample(folder, SYMBOLS)
    schema = pg_server.new_schema()
    url = with_schema(pg_dsn, schema)
    try:
        with running_api(url, root / "server.log", "--source", "csv", "--folder", str(folder),
                         "--delay", "0.1", "--workers", "4") as api:  # fmt: skip
            yield api.base, url
    finally:
        pg_server.drop(schema)


def test_the_api_runs_a_batch_and_serves_the_stored_analyses(pg_api: tuple[str, str]) -> None:
    base, url = pg_api
    assert httpx.get(f"{base}/api/all-stocks/progress").status_code == 404  # nothing yet
    started = httpx.post(f"{base}/api/stocks/analyze-all-stocks", json={"symbols": SYMBOLS})
    assert started.status_code == 202
    batch_id, job_ids = started.json()["batch_id"], started.json()["job_ids"]
    assert started.json()["total"] == len(SYMBOLS)
    seen: dict[str, list[str]] = {s: [] for s in SYMBOLS}
    partial = []
    deadline = time.monotonic() + 120
    while True:
        progress = httpx.get(f"{base}/api/all-stocks/progress",
                             params={"batch_id": batch_id}).json()  # fmt: skip
        for entry in progress["symbols"]:
            states = seen[entry["symbol"]]
            if not states or states[-1] != entry["status"]:
                states.append(entry["status"])
        if 0 < progress["finished"] < len(SYMBOLS):
            partial.append(progress["status"])
        if progress["status"] not in ("queued", "processing"):
            break
        assert time.monotonic() < deadline, "the batch did not finish"
        time.sleep(0.02)
    assert progress["status"] == "completed" and progress["percent"] == 100.0
    assert partial and set(partial) == {"processing"}, "progress was never seen part-way"
    order = {"queued": 0, "processing": 1, "completed": 2}
    for states in seen.values():
        assert states[-1] == "completed"
        assert [order[s] for s in states] == sorted(order[s] for s in states)
    assert httpx.get(f"{base}/api/all-stocks/progress").json()["batch_id"] == batch_id
    for symbol in SYMBOLS:
        analysis = httpx.get(f"{base}/api/stocks/{symbol}/analysis")
        assert analysis.status_code == 200, analysis.text
        body = analysis.json()
        assert body["symbol"] == symbol and body["batch_id"] == batch_id
        assert body["job_id"] in job_ids and body["source"] == "csv"
        assert body["signal"] in {"strong_buy", "buy", "hold", "sell", "strong_sell"}
    assert sorted(job_id for job_id, _ in stored(url)) == sorted(job_ids)  # once per job
    job = httpx.get(f"{base}/api/jobs/{job_ids[0]}").json()
    assert job["status"] == "completed" and job["result"]["symbol"] == SYMBOLS[0]
    assert httpx.get(f"{base}/api/stocks/NEVER.NS/analysis").status_code == 404
    bad = httpx.get(f"{base}/api/stocks/A%20B/analysis")
    assert bad.status_code == 422 and "A B" in bad.json()["detail"]
    missing = httpx.get(f"{base}/api/all-stocks/progress", params={"batch_id": 99999})
    assert missing.status_code == 404
    # the batch's summary job ranks it once it has finished
    summary_job_id = started.json()["summary_job_id"]
    assert progress["summary_job_id"] == summary_job_id
    deadline = time.monotonic() + 30
    while (summary := httpx.get(f"{base}/api/batches/{batch_id}/summary")).status_code == 404:
        assert time.monotonic() < deadline, summary.text
        time.sleep(0.05)
    assert summary.status_code == 200, summary.text
    body = summary.json()
    assert (body["job_id"], body["completed"], body["failed"]) == (summary_job_id, 16, 0)
    scores = [entry["score"] for entry in body["ranking"]]
    assert scores == sorted(scores, reverse=True) and len(scores) == 16
    no_batch = httpx.get(f"{base}/api/batches/99999/summary")
    assert no_batch.status_code == 404 and no_batch.json()["detail"] == "no batch with id 99999"
