"""The app on asyncio, on each engine: the API's endpoints are coroutines that never wait for
the database on the event loop, and the analysis handler is an ``async def`` that loads
prices and computes in threads, many analyses at once on one worker's loop."""

from __future__ import annotations

import inspect
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
from fastapi.routing import APIRoute

from examples.stock_analyzer import tasks
from examples.stock_analyzer.api import create_app
from examples.stock_analyzer.prices import SAMPLE_SYMBOLS, sample_source
from examples.stock_analyzer.sample import write_sample
from examples.stock_analyzer.service import (
    AppQueue,
    SourceConfig,
    app_worker,
    batch_report,
    batch_summary,
    latest_analysis,
    open_queue,
    results_of_batch,
    start_analysis,
)
from examples.stock_analyzer.tasks import ANALYZE_STOCK, ANALYZE_STOCK_ONLINE, registry
from sqlitejobq import JobStatus

from ..conftest import Database
from .api_server import running_api

pytestmark = pytest.mark.timeout(300)

SYMBOLS = [f"STOCK{n:02d}.NS" for n in range(8)]
#: How long the test holds the lock that a batch's start needs.
HOLD = 2.0


def wait_until_done(base: str, batch_id: int) -> dict[str, Any]:
    """The batch's progress report once none of its jobs is left to run."""
    deadline = time.monotonic() + 60
    while True:
        progress: dict[str, Any] = httpx.get(
            f"{base}/api/all-stocks/progress", params={"batch_id": batch_id}
        ).json()
        if progress["status"] not in ("queued", "processing"):
            return progress
        assert time.monotonic() < deadline, progress
        time.sleep(0.05)


def wait_for_summary(base: str, batch_id: int) -> dict[str, Any]:
    """The batch's summary, once its job has stored it."""
    deadline = time.monotonic() + 30
    while (response := httpx.get(f"{base}/api/batches/{batch_id}/summary")).status_code == 404:
        assert time.monotonic() < deadline, response.text
        time.sleep(0.05)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def hold_the_lock_a_start_needs(engine: str, target: str) -> Any:
    """A connection in a transaction that a batch's start must wait for: SQLite's write
    lock, or on PostgreSQL a lock on the table that records batches (reads go on)."""
    conn = Database(engine, target).connect(autocommit=False)
    if engine == "sqlite":
        conn.execute("BEGIN IMMEDIATE")
    else:
        conn.execute("LOCK TABLE analysis_batches IN EXCLUSIVE MODE")
    return conn


def test_every_endpoint_is_a_coroutine() -> None:
    routes = [r for r in create_app(workers=0).routes if isinstance(r, APIRoute)]
    assert len(routes) == 6
    for route in routes:
        assert inspect.iscoroutinefunction(route.endpoint), route.path


def test_a_start_waiting_for_a_lock_holds_up_no_other_request(
    engine: str, target: str, tmp_path: Path
) -> None:
    folder = tmp_path / "prices"
    write_sample(folder, SYMBOLS)
    with running_api(target, tmp_path / "server.log", "--source", "csv", "--folder", str(folder),
                     "--delay", "0.05", "--workers", "4") as api:  # fmt: skip
        base = api.base
        first = httpx.post(f"{base}/api/stocks/analyze-all-stocks", json={"symbols": SYMBOLS})
        assert first.status_code == 202, first.text
        batch_id = first.json()["batch_id"]
        assert wait_until_done(base, batch_id)["status"] == "completed"
        summary = wait_for_summary(base, batch_id)
        assert summary["completed"] == len(SYMBOLS)
        best = httpx.get(f"{base}/api/stocks/{summary['best_symbol']}/analysis")
        assert best.status_code == 200 and best.json()["batch_id"] == batch_id

        held = hold_the_lock_a_start_needs(engine, target)
        answers: list[httpx.Response] = []
        started = time.monotonic()
        second = threading.Thread(target=lambda: answers.append(httpx.post(
            f"{base}/api/stocks/analyze-all-stocks", json={"symbols": SYMBOLS[:3]}, timeout=60,
        )))  # fmt: skip
        second.start()
        try:
            time.sleep(0.3)  # the start is waiting for the lock now
            reads = [
                ("/api/all-stocks/progress", {"batch_id": batch_id}),
                (f"/api/batches/{batch_id}/summary", {}),
                (f"/api/stocks/{SYMBOLS[0]}/analysis", {}),
                (f"/api/jobs/{first.json()['job_ids'][0]}", {}),
            ]
            while time.monotonic() - started < HOLD:
                for path, params in reads:
                    asked = time.monotonic()
                    response = httpx.get(f"{base}{path}", params=params, timeout=10)
                    assert response.status_code == 200, (path, response.text)
                    assert time.monotonic() - asked < 1.0, f"{path} waited for the lock"
                assert second.is_alive(), "the start did not wait for the lock"
        finally:
            held.rollback()
            held.close()
        second.join(60)
        [response] = answers
        assert response.status_code == 202, response.text
        assert time.monotonic() - started >= HOLD
        progress = wait_until_done(base, response.json()["batch_id"])
        assert progress["status"] == "completed" and progress["total"] == 3
        assert wait_for_summary(base, response.json()["batch_id"])["completed"] == 3


def test_the_analysis_handler_is_async_and_loads_and_computes_in_threads(
    target: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for task in (ANALYZE_STOCK, ANALYZE_STOCK_ONLINE):
        assert inspect.iscoroutinefunction(registry.get(task).handler)
    lock = threading.Lock()
    threads: list[tuple[str, str]] = []  # (what, thread name)

    class BlockingSource:
        """Prices after a blocking wait, as yfinance's network calls block."""

        def load(self, symbol: str) -> pd.DataFrame:
            with lock:
                threads.append(("load", threading.current_thread().name))
            time.sleep(1.0)
            return sample_source().load(symbol)

    def analyze(prices: pd.DataFrame, symbol: str) -> dict[str, Any]:
        with lock:
            threads.append(("analyze", threading.current_thread().name))
        return real_analyze(prices, symbol)

    real_analyze = tasks.analyze
    monkeypatch.setattr(tasks, "get_source", lambda name, folder=None: BlockingSource())
    monkeypatch.setattr(tasks, "analyze", analyze)
    queue = open_queue(target)
    try:
        symbols = list(SAMPLE_SYMBOLS[:6])
        batch = start_analysis(queue, symbols, SourceConfig())
        started = time.monotonic()
        summary = app_worker(queue, concurrency=6).run(burst=True)
        elapsed = time.monotonic() - started
        assert summary.completed == 7  # and the summary job
        # six blocking loads of 1 s each, at once: none of them held up the event loop
        assert elapsed < 4.0, elapsed
        assert sorted(what for what, _ in threads) == ["analyze"] * 6 + ["load"] * 6
        assert all(name != "sqlitejobq-loop" for _, name in threads), threads
        assert batch_report(queue, batch.id)["status"] == "completed"
        # the completion hook stored each analysis, and the summary ranked them
        assert sorted(r["symbol"] for r in results_of_batch(queue, batch.id)) == sorted(symbols)
        ranked = batch_summary(queue, batch.id)
        assert ranked is not None and ranked["completed"] == 6
        found = latest_analysis(queue, symbols[0])
        assert found is not None and found["job_id"] == batch.job_ids[0]
        assert queue.get(batch.job_ids[0]).progress == 1.0
    finally:
        queue.close()


def test_a_cancel_ends_an_analysis_during_its_pretend_network_time(target: str) -> None:
    queue: AppQueue = open_queue(target)
    # a short worker lease: it renews leases, and sees cancels, every half second
    worker = app_worker(queue, concurrency=2, lease=1.5, run_schedules=False)
    thread = threading.Thread(target=worker.run, kwargs={"handle_signals": False})
    thread.start()
    try:
        batch = start_analysis(queue, ["TCS.NS"], SourceConfig(delay=30.0))
        [job_id] = batch.job_ids
        deadline = time.monotonic() + 30
        while (job := queue.get(job_id)).progress_message != "loading TCS.NS from sample":
            assert time.monotonic() < deadline, job
            time.sleep(0.02)
        time.sleep(0.2)  # loaded: in its 30 s of pretend network time now
        asked = time.monotonic()
        assert queue.cancel(job_id)
        ended = queue.wait(job_id, timeout=10)
        assert ended.status is JobStatus.CANCELLED
        assert time.monotonic() - asked < 5.0
        assert results_of_batch(queue, batch.id) == []  # no completion, nothing stored
        queue.wait(batch.then_id or 0, timeout=30)
        summary = batch_summary(queue, batch.id)
        assert summary is not None and summary["completed"] == 0
        assert [(f["symbol"], f["status"]) for f in summary["failures"]] == [
            ("TCS.NS", "cancelled")
        ]
    finally:
        worker.stop()
        thread.join(60)
        queue.close()
