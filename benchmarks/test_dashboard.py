"""The dashboard's answer times at 1,000,000 jobs (20,000 at quick sizes), over real HTTP
from the threaded server, on a SQLite file and on PostgreSQL (``$SQLITEJOBQ_PG_DSN``;
skipped without it, except under CI). Goal: the jobs pages and ``/metrics`` under 100 ms.

The table holds what a queue that has run a while holds: 90% of the jobs completed (the
oldest), one in a thousand of those failed with an error, the newest 10% queued, in two
queues and two tasks.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from benchmarks.conftest import engine_target, median, percentile, record, size, timed
from sqlitejobq import Queue
from sqlitejobq.web import dashboard
from sqlitejobq.web.pages import SCAN
from sqlitejobq.web.server import make

JOBS = size(1_000_000, 20_000)
PAGES = {
    "overview": "/",
    "jobs": "/jobs",
    "jobs_failed": "/jobs?status=failed",
    "jobs_completed": "/jobs?status=completed",
    "jobs_error_text": "/jobs?status=failed&error=upstream",
    "jobs_queue_task": "/jobs?queue=bulk&task=resize",
    "jobs_deep_cursor": "/jobs?before={middle}",
    "batches": "/batches",
    "job": "/jobs/{middle}",
    "metrics": "/metrics",
}

pytestmark = pytest.mark.timeout(1800)


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def filled(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[tuple[Queue, str]]:  # fmt: skip
    folder = tmp_path_factory.mktemp("dash")
    with engine_target(request.param, folder, "dashboard") as target:
        queue = Queue(target, strict_tasks=False)
        try:
            _fill(queue)
            yield queue, request.param
        finally:
            queue.close()


def _fill(queue: Queue) -> None:
    chunk = 50_000
    for start in range(0, JOBS, chunk):
        n = min(JOBS, start + chunk) - start
        half = n // 2
        queue.enqueue_many("resize", [{"n": start + i} for i in range(half)], queue="bulk",
                           max_attempts=1)  # fmt: skip
        queue.enqueue_many("report", [{"n": start + i} for i in range(half, n)],
                           max_attempts=1)  # fmt: skip
    queue.enqueue_batch("report", [{"n": i} for i in range(40)], name="nightly")
    done = 0
    while done < JOBS * 9 // 10:
        claimed = queue.claim("filler", queues=["bulk", "default"], limit=1000, lease=600)
        if not claimed:
            break
        ok = [(job, None) for job in claimed if job.id % 1000]
        queue.complete_many(ok)
        for job in claimed:
            if job.id % 1000 == 0:
                queue.fail(job, "TimeoutError: upstream did not answer in 30 s")
        done += len(claimed)


@pytest.fixture(scope="module")
def served(filled: tuple[Queue, str]) -> Iterator[tuple[httpx.Client, Queue]]:
    queue, _ = filled
    server = make(dashboard(queue), "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)  # fmt: skip
    thread.start()
    with httpx.Client(base_url=f"http://127.0.0.1:{server.server_port}", timeout=30) as client:
        yield client, queue
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("page", list(PAGES))
def test_page_answer_time_at_a_million_jobs(
    benchmark: Any, request: pytest.FixtureRequest, served: tuple[httpx.Client, Queue], page: str
) -> None:
    client, queue = served
    newest = queue.max_job_id() or 1
    path = PAGES[page].format(middle=newest // 2)

    def get() -> httpx.Response:
        answer = client.get(path)
        assert answer.status_code == 200, (path, answer.status_code, answer.text[:300])
        return answer

    answer = get()
    rows = len(re.findall(r'data-job="\d+"', answer.text))
    failed = queue.stats().total("failed")
    if page in ("jobs", "jobs_deep_cursor"):
        assert rows == 50, (page, rows)  # straight along the primary key
    elif page == "jobs_failed":
        assert rows == min(50, failed), (page, rows, failed)  # along their own index
    elif newest <= SCAN:  # the window is the whole table: every match, up to a page
        if page == "jobs_error_text":
            assert rows == min(50, failed), (page, rows, failed)
    else:  # a window of ids examined: a page, or where it stopped
        assert rows == 50 or "search older ids" in answer.text, (page, rows)
    if page == "metrics":
        assert 'sqlitejobq_jobs{queue="bulk",status="completed"}' in answer.text
    seconds = timed(benchmark, get, rounds=size(40, 5), warmup_rounds=2)
    record(benchmark, request, jobs_in_table=JOBS, page=path,
           p50_ms=median(seconds) * 1000, p95_ms=percentile(seconds, 95) * 1000)  # fmt: skip
