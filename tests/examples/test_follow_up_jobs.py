"""The jobs around the app's batches, on each engine: the summary that ranks a finished
batch, the rate limit on yfinance loads, and the daily refresh of the watchlist."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pandas as pd
import pytest

from examples.stock_analyzer import tasks
from examples.stock_analyzer.prices import SAMPLE_SYMBOLS, sample_source
from examples.stock_analyzer.schema import migrate_app
from examples.stock_analyzer.service import (
    AppQueue,
    SourceConfig,
    app_worker,
    batch_summary,
    open_queue,
    results_of_batch,
    start_analysis,
    summary_job_id,
)
from examples.stock_analyzer.tasks import (
    ANALYZE_STOCK,
    ANALYZE_STOCK_ONLINE,
    REFRESH_WATCHLIST,
    SUMMARIZE_BATCH,
    WATCHLIST_ENV,
    analyze_stock,
    registry,
    summarize_batch,
)
from sqlitejobq import Job, JobStatus
from sqlitejobq.cli import DB_ENV
from sqlitejobq.job import as_async

from ..conftest import Clock

pytestmark = pytest.mark.timeout(300)

#: 2025-01-02 16:00 in Asia/Kolkata: a slot of the daily refresh.
REFRESH_SLOT = datetime(2025, 1, 2, 10, 30, tzinfo=UTC).timestamp()


@pytest.fixture
def app_queue(target: str) -> Iterator[AppQueue]:
    """The app's queue and tables on this test's database."""
    queue = open_queue(target)
    yield queue
    queue.close()


def clocked_app_queue(target: str, clock: Clock) -> AppQueue:
    """The app's queue on a clock the test moves by hand."""
    queue = AppQueue(target, registry=registry, clock=clock)
    migrate_app(target)
    return queue


def finished(queue: AppQueue, job_id: int) -> Job:
    job = queue.get(job_id)
    assert job.status is JobStatus.COMPLETED, (job.status, job.error)
    return job


def analyzed(job: Job) -> dict[str, Any]:
    """What the analysis handler returns for a job claimed by hand."""
    result: dict[str, Any] = asyncio.run(analyze_stock(as_async(job)))
    return result


# --- the summary job ------------------------------------------------------------------------


def test_the_summary_job_waits_for_the_batch_then_ranks_it(app_queue: AppQueue) -> None:
    queue = app_queue
    batch = start_analysis(queue, [*SAMPLE_SYMBOLS, "MISSING.NS"], SourceConfig())
    assert batch.then_id is not None and batch.then_id not in batch.job_ids
    waiting = queue.get(batch.then_id)
    assert (waiting.task, waiting.status) == (SUMMARIZE_BATCH, JobStatus.WAITING)
    assert waiting.payload == {"batch_id": batch.id}
    assert summary_job_id(queue, batch.id) == batch.then_id
    assert batch_summary(queue, batch.id) is None
    app_worker(queue, concurrency=4).run(burst=True)
    job = finished(queue, batch.then_id)
    analyses = queue.batch_jobs(batch.id)
    assert job.started_at is not None
    assert job.started_at >= max(j.finished_at or 0.0 for j in analyses)  # after the batch
    summary = job.result
    ranking = summary["ranking"]
    assert [entry["rank"] for entry in ranking] == list(range(1, 13))
    assert sorted(entry["symbol"] for entry in ranking) == sorted(SAMPLE_SYMBOLS)
    keys = [(-e["score"], -e["return_1m_pct"], e["symbol"]) for e in ranking]
    assert keys == sorted(keys)  # score first, best first; ties: the higher 1-month return
    assert ranking[0]["score"] > ranking[-1]["score"]
    stored = {r["symbol"]: r for r in results_of_batch(queue, batch.id)}
    for entry in ranking:
        analysis = stored[entry["symbol"]]
        assert (entry["score"], entry["signal"]) == (analysis["score"], analysis["signal"])
    [missing] = [j for j in analyses if j.payload["symbol"] == "MISSING.NS"]
    [failure] = summary["failures"]  # listed as failed, not ranked
    assert failure["symbol"] == "MISSING.NS" and failure["status"] == "failed"
    assert failure["job_id"] == missing.id and "no price data" in failure["error"]
    assert (summary["total"], summary["completed"], summary["failed"]) == (13, 12, 1)
    assert summary["best_symbol"] == ranking[0]["symbol"]
    row = batch_summary(queue, batch.id)
    assert row is not None
    assert (row["job_id"], row["completed"], row["failed"]) == (batch.then_id, 12, 1)
    assert (row["best_symbol"], row["ranking"], row["failures"]) == (
        summary["best_symbol"], ranking, summary["failures"],
    )  # fmt: skip


def test_the_summary_row_commits_with_the_summary_jobs_completion(
    target: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = Clock()
    queue = clocked_app_queue(target, clock)
    batch = start_analysis(queue, ["TCS.NS", "INFY.NS"], SourceConfig())
    for job in queue.claim("w1", limit=10, lease=30.0):
        assert queue.complete(job, analyzed(job))
    [job] = queue.claim("w1", lease=30.0)
    assert job.id == batch.then_id
    monkeypatch.setenv(DB_ENV, target)  # how a worker started apart names its database
    result = summarize_batch(job)
    assert [entry["symbol"] for entry in result["ranking"]] == ["TCS.NS", "INFY.NS"]
    clock.advance(60.0)  # the claim's lease ends before it reports: another worker runs it
    queue.rescue_expired()
    assert not queue.complete(job, result)
    assert batch_summary(queue, batch.id) is None  # no completion, no summary
    clock.advance(600.0)  # past the retry's backoff
    app_worker(queue).run(burst=True)
    again = finished(queue, batch.then_id)
    assert again.attempts == 2
    row = batch_summary(queue, batch.id)
    assert row is not None and row["job_id"] == job.id and row["ranking"] == again.result["ranking"]
    queue.close()


def test_a_summary_handler_without_its_queue_says_what_to_set(
    app_queue: AppQueue, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(DB_ENV, raising=False)
    batch = start_analysis(app_queue, ["TCS.NS"], SourceConfig())
    for job in app_queue.claim("w1", limit=10, lease=30.0):
        app_queue.complete(job, analyzed(job))
    [job] = app_queue.claim("elsewhere", lease=30.0)
    assert job.id == batch.then_id
    with pytest.raises(
        RuntimeError,
        match=r"sqlitejobq worker --db .* set \$SQLITEJOBQ_DB, or make worker 'elsewhere'",
    ):
        summarize_batch(job)


# --- the rate limit on yfinance ----------------------------------------------------------------


def test_yfinance_loads_are_rate_limited_and_the_sample_is_not(
    app_queue: AppQueue, monkeypatch: pytest.MonkeyPatch
) -> None:
    queue = app_queue
    online = registry.options(ANALYZE_STOCK_ONLINE)
    assert (online.limit, online.rate, online.limit_key) == (4, (2, 1.0), None)
    offline = registry.options(ANALYZE_STOCK)
    assert (offline.limit, offline.rate) == (None, None)
    lock = threading.Lock()
    loads: list[str] = []
    running = peak = 0

    class SlowOfflineYahoo:
        """Stands in for yfinance: the sample's prices after a long wait, no network."""

        def load(self, symbol: str) -> pd.DataFrame:
            nonlocal running, peak
            with lock:
                running += 1
                peak = max(peak, running)
            try:
                time.sleep(2.5)  # longer than two starts' spacing: the limit of 4 binds
                return sample_source().load(symbol)
            finally:
                with lock:
                    running -= 1

    def fake_source(name: str, folder: Any = None) -> Any:
        loads.append(name)
        return SlowOfflineYahoo() if name == "yfinance" else sample_source()

    monkeypatch.setattr(tasks, "get_source", fake_source)
    symbols = list(SAMPLE_SYMBOLS[:6])
    batch = start_analysis(queue, symbols, SourceConfig("yfinance"))
    assert {queue.get(i).task for i in batch.job_ids} == {ANALYZE_STOCK_ONLINE}
    app_worker(queue, concurrency=8).run(burst=True)  # burst waits for what the rate holds
    jobs = [finished(queue, i) for i in batch.job_ids]
    starts = sorted(j.started_at or 0.0 for j in jobs)
    for n in range(len(starts) - 2):
        assert starts[n + 2] - starts[n] >= 1.0 - 1e-6  # never 3 starts within a second
    assert peak == 4  # 8 workers, but at most 4 loads at once
    assert loads == ["yfinance"] * 6
    assert {r["source"] for r in results_of_batch(queue, batch.id)} == {"yfinance"}
    finished(queue, batch.then_id or 0)

    sample = start_analysis(queue, list(SAMPLE_SYMBOLS), SourceConfig("sample"))
    assert {queue.get(i).task for i in sample.job_ids} == {ANALYZE_STOCK}
    app_worker(queue, concurrency=8).run(burst=True)
    starts = sorted(finished(queue, i).started_at or 0.0 for i in sample.job_ids)
    assert starts[4] - starts[0] < 1.0  # 5 starts within a second: no rate holds them


# --- the daily refresh ---------------------------------------------------------------------------


def test_the_refresh_is_scheduled_daily_at_16_in_kolkata() -> None:
    [schedule] = registry.schedules
    assert (schedule.name, schedule.task) == (REFRESH_WATCHLIST, REFRESH_WATCHLIST)
    assert (schedule.trigger.spec, schedule.trigger.timezone) == ("0 16 * * *", "Asia/Kolkata")
    assert schedule.missed == "latest"  # after downtime, the latest missed day runs once
    day_start = datetime(2025, 1, 2, tzinfo=UTC).timestamp()
    assert schedule.trigger.next_after(day_start) == REFRESH_SLOT  # 10:30 UTC
    assert schedule.trigger.next_after(REFRESH_SLOT) == REFRESH_SLOT + 86_400


def test_the_refresh_job_analyzes_the_watchlist_with_a_summary(
    app_queue: AppQueue, monkeypatch: pytest.MonkeyPatch
) -> None:
    queue = app_queue
    monkeypatch.delenv(WATCHLIST_ENV, raising=False)
    job_id = queue.enqueue(REFRESH_WATCHLIST, {"slot": "2025-01-02T10:30:00Z"})
    app_worker(queue, concurrency=4).run(burst=True)  # the refresh, then its batch
    result = finished(queue, job_id).result
    assert result["slot"] == "2025-01-02T10:30:00Z" and result["symbols"] == 12
    batch_id = result["batch_id"]
    jobs = queue.batch_jobs(batch_id)
    assert [j.payload["symbol"] for j in jobs] == list(SAMPLE_SYMBOLS)
    assert {(j.task, j.payload["source"], j.status) for j in jobs} == {
        (ANALYZE_STOCK, "sample", JobStatus.COMPLETED)
    }
    assert summary_job_id(queue, batch_id) == result["summary_job_id"]
    summary = batch_summary(queue, batch_id)
    assert summary is not None and summary["job_id"] == result["summary_job_id"]
    assert summary["completed"] == 12

    monkeypatch.setenv(WATCHLIST_ENV, " tcs.ns, INFY.NS ,")
    job_id = queue.enqueue(REFRESH_WATCHLIST, {"slot": "2025-01-03T10:30:00Z"})
    app_worker(queue).run(burst=True)
    batch_id = finished(queue, job_id).result["batch_id"]
    assert [j.payload["symbol"] for j in queue.batch_jobs(batch_id)] == ["TCS.NS", "INFY.NS"]

    monkeypatch.setenv(WATCHLIST_ENV, "TCS.NS,../etc")
    job_id = queue.enqueue(REFRESH_WATCHLIST, {"slot": "2025-01-04T10:30:00Z"})
    app_worker(queue).run(burst=True)
    bad = queue.get(job_id)
    assert bad.status is JobStatus.FAILED and bad.attempts == 1  # a bad list stays bad
    assert bad.error is not None
    assert "$STOCK_WATCHLIST='TCS.NS,../etc'" in bad.error and "../etc" in bad.error


def test_a_long_running_worker_fires_the_refresh_and_a_burst_worker_does_not(
    target: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(WATCHLIST_ENV, "TCS.NS,INFY.NS,SBIN.NS")
    clock = Clock(REFRESH_SLOT + 1.0)  # a second after 16:00 in Kolkata
    queue = clocked_app_queue(target, clock)
    app_worker(queue).run(burst=True)  # as the script's workers: no scheduler
    assert queue.jobs(task=REFRESH_WATCHLIST) == []
    assert queue.schedules()[0].declared_at is None
    worker = app_worker(queue, concurrency=4, schedule_check=0.1)
    thread = threading.Thread(target=worker.run, kwargs={"handle_signals": False})
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while True:
            refreshes = queue.jobs(task=REFRESH_WATCHLIST)
            summaries = queue.jobs(task=SUMMARIZE_BATCH, status=JobStatus.COMPLETED)
            if refreshes and summaries:
                break
            assert time.monotonic() < deadline, "the refresh did not run"
            time.sleep(0.05)
    finally:
        worker.stop()
        thread.join(60)
    [refresh] = refreshes
    assert refresh.payload == {"slot": "2025-01-02T10:30:00Z"}
    result = finished(queue, refresh.id).result
    [summary_job] = summaries
    assert summary_job.id == result["summary_job_id"]
    row = batch_summary(queue, result["batch_id"])
    assert row is not None and sorted(e["symbol"] for e in row["ranking"]) == [
        "INFY.NS", "SBIN.NS", "TCS.NS",
    ]  # fmt: skip
    [info] = queue.schedules()
    assert info.last_slot == REFRESH_SLOT and info.last_job_id == refresh.id
    queue.close()
