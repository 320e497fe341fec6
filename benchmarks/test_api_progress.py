"""The example API's progress endpoint with 100,000 finished jobs in the file."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from benchmarks.conftest import ROOT, median, percentile, record, size, timed
from examples.stock_analyzer.prices import SAMPLE_DIR
from sqlitejobq import Queue

FINISHED = size(100_000, 5_000)


def finished_jobs(db: Path, count: int) -> None:
    """Fill the file with ``count`` completed jobs, through the library's own calls."""
    with Queue(db) as queue:
        for start in range(0, count, 10_000):
            queue.enqueue_many("old_job", [{"n": n} for n in range(min(10_000, count - start))])
            while jobs := queue.claim("filler", queues=["default"], limit=5_000):
                queue.complete_many([(job, None) for job in jobs])
        assert queue.stats().by_status["completed"] == count


def test_progress_endpoint_response_time(
    benchmark: Any, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    db = tmp_path / "api.db"
    finished_jobs(db, FINISHED)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "examples.stock_analyzer.api", "--db", str(db), "--port",
         str(port), "--workers", "4"],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=base, timeout=10) as client:
            deadline = time.monotonic() + 60
            while True:
                try:
                    client.get("/api/jobs/1")
                    break
                except httpx.TransportError:
                    assert time.monotonic() < deadline, "the server did not start"
                    time.sleep(0.1)
            # every symbol of the bundled sample, once each (the API refuses a repeat)
            symbols = sorted(path.name.removesuffix(".csv") for path in SAMPLE_DIR.glob("*.csv"))
            started = client.post("/api/stocks/analyze-all-stocks", json={"symbols": symbols})
            assert started.status_code == 202, started.text
            batch = started.json()["batch_id"]
            while client.get("/api/all-stocks/progress").json()["status"] in (
                "queued",
                "processing",
            ):
                time.sleep(0.05)

            def ask() -> None:
                response = client.get("/api/all-stocks/progress", params={"batch_id": batch})
                assert response.status_code == 200
                assert response.json()["percent"] == 100.0

            seconds = timed(benchmark, ask, rounds=size(200, 20), warmup_rounds=5)
    finally:
        server.terminate()
        server.wait(30)
    record(benchmark, request, finished_jobs_in_file=FINISHED,
           p50_ms=median(seconds) * 1000, p99_ms=percentile(seconds, 99) * 1000)  # fmt: skip
