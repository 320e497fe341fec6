"""Many threads and processes on one database, on every engine: every job claimed exactly
once, no lock error."""

from __future__ import annotations

import multiprocessing
import random
import threading
import traceback
from collections import Counter
from typing import Any

import pytest

from sqlitejobq import JobStatus, Queue

pytestmark = pytest.mark.timeout(300)


def test_sixteen_threads_enqueue_and_claim_at_once(target: str) -> None:
    queue = Queue(target)
    producers, consumers, per_producer = 8, 8, 250
    total = producers * per_producer
    claimed: list[int] = []
    errors: list[str] = []
    produced_all = threading.Event()
    lock = threading.Lock()
    done_producers = [0]

    def produce(n: int) -> None:
        try:
            rng = random.Random(n)
            made = 0
            while made < per_producer:
                size = min(rng.randint(1, 40), per_producer - made)
                if size == 1:
                    queue.enqueue("t", {"p": n, "i": made})
                else:
                    queue.enqueue_many("t", [{"p": n, "i": made + k} for k in range(size)])
                made += size
        except BaseException:
            errors.append(traceback.format_exc())
        finally:
            with lock:
                done_producers[0] += 1
                if done_producers[0] == producers:
                    produced_all.set()

    def consume(n: int) -> None:
        rng = random.Random(100 + n)
        try:
            for _ in range(100_000):
                jobs = queue.claim(f"w{n}", limit=rng.randint(1, 10))
                if not jobs:
                    if produced_all.is_set() and queue.stats().total("queued") == 0:
                        return
                    continue
                assert all(queue.complete_many([(j, j.id) for j in jobs]))
                with lock:
                    claimed.extend(j.id for j in jobs)
        except BaseException:
            errors.append(traceback.format_exc())

    threads = [threading.Thread(target=produce, args=(n,)) for n in range(producers)]
    threads += [threading.Thread(target=consume, args=(n,)) for n in range(consumers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(240)
    assert not any(t.is_alive() for t in threads)
    assert errors == []
    assert len(claimed) == total
    assert len(set(claimed)) == total  # none claimed twice
    stats = queue.stats()
    assert stats.by_status["completed"] == total and stats.total() == total
    assert stats.lock.busy_errors == 0
    queue.close()


def _claim_worker(path: str, name: str, out: Any, shared_queue: Queue | None) -> None:
    try:
        queue = shared_queue if shared_queue is not None else Queue(path)
        rng = random.Random(name)
        mine: list[int] = []
        while True:
            jobs = queue.claim(name, limit=rng.randint(1, 16), lease=60)
            if not jobs:
                break
            if rng.random() < 0.5:
                owned = queue.complete_many([(j, {"by": name}) for j in jobs])
            else:
                owned = [queue.complete(j, {"by": name}) for j in jobs]
            assert all(owned), "a claim lost its job while no lease expired"
            mine.extend(j.id for j in jobs)
        out.put((name, mine, queue.stats().lock.busy_errors, None))
    except BaseException:
        out.put((name, [], 0, traceback.format_exc()))


@pytest.mark.parametrize("start_method", ["spawn", "fork"])
def test_eight_processes_claim_every_job_exactly_once(target: str, start_method: str) -> None:
    total = 4000
    parent = Queue(target)
    ids = parent.enqueue_many("t", [{"n": i} for i in range(total)])
    parent.enqueue("warm", queue="warm")  # the parent uses its connection before forking
    [warm] = parent.claim("parent", queues=["warm"], limit=1)
    ctx = multiprocessing.get_context(start_method)
    out = ctx.Queue()
    # with fork, children inherit the parent's Queue object: each must open its own connection
    shared = parent if start_method == "fork" else None
    procs = [
        ctx.Process(target=_claim_worker, args=(target, f"p{n}", out, shared)) for n in range(8)
    ]
    for p in procs:
        p.start()
    results = [out.get(timeout=240) for _ in procs]
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0] * 8
    assert [r[3] for r in results if r[3]] == []
    claimed = Counter(i for _, mine, _, _ in results for i in mine)
    assert [i for i, n in claimed.items() if n > 1] == []  # none claimed twice
    assert set(claimed) == set(ids)  # none lost
    assert sum(r[2] for r in results) == 0  # no caller saw DatabaseBusy
    assert parent.complete(warm) is True
    stats = parent.stats()
    assert stats.by_status == {"queued": 0, "processing": 0, "completed": total + 1,
                               "failed": 0, "cancelled": 0, "waiting": 0}  # fmt: skip
    by = Counter(job.result["by"] for job in parent.jobs(limit=total + 1) if job.task == "t")
    assert sum(by.values()) == total and len(by) > 1
    assert all(parent.get(i).status is JobStatus.COMPLETED for i in ids[:50])
    parent.close()


def _enqueue_unique(path: str, out: Any) -> None:
    try:
        with Queue(path) as queue:
            out.put(([queue.enqueue("nightly", {"r": i}, unique_key="nightly-report")
                      for i in range(40)], None))  # fmt: skip
    except BaseException:
        out.put(([], traceback.format_exc()))


def test_concurrent_enqueues_of_one_unique_key_store_one_job(target: str) -> None:
    Queue(target).close()
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_enqueue_unique, args=(target, out)) for _ in range(6)]
    for p in procs:
        p.start()
    results = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(60)
    assert [r[1] for r in results if r[1]] == []
    returned = {i for ids, _ in results for i in ids}
    assert len(returned) == 1
    with Queue(target) as queue:
        assert queue.stats().total() == 1
