"""A first look at sqlitejobq: enqueue a batch, run it with the low-level cycle, watch progress.

Run it from the repository root: ``python examples/quickstart.py``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from sqlitejobq import Job, Queue


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        queue = Queue(Path(folder) / "jobs.db")

        @queue.task("square", max_attempts=3)
        def square(job: Job) -> int:
            return int(job.payload["n"]) ** 2

        batch = queue.enqueue_batch("square", [{"n": n} for n in range(1, 41)], name="squares")
        while jobs := queue.claim("demo-worker", limit=8):
            outcomes = [(job, queue.registry.get(job.task).handler(job)) for job in jobs]
            queue.complete_many(outcomes)
            print(f"batch {batch.id}: {queue.batch_progress(batch.id)}")
        results = [queue.get(job_id).result for job_id in batch.job_ids]
        print(f"sum of squares 1..40 = {sum(results)}")
        queue.close()


if __name__ == "__main__":
    main()
