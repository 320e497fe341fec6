"""Limits across every worker, on every engine: at most ``limit`` jobs of a task (or of one
payload value of it) processing at once, at most ``rate`` starts per period; jobs over a
limit stay queued and are claimed, best first, as soon as it allows."""

from __future__ import annotations

import threading
import time

import pytest

from sqlitejobq import (
    InvalidArgument,
    InvalidArgumentType,
    Job,
    JobStatus,
    PayloadError,
    Queue,
    Registry,
    Worker,
)

from .conftest import Clock, Database


def claim(queue: Queue, limit: int = 100, worker: str = "w1") -> list[Job]:
    return queue.claim(worker_id=worker, limit=limit, lease=30.0)


def test_a_task_limit_caps_what_is_processing_across_claims(
    registry: Registry, queue: Queue
) -> None:
    registry.register("other", lambda job: None)
    _reregister(registry, "quote", limit=2)
    queue.enqueue_many("quote", list(range(5)))
    queue.enqueue_many("other", list(range(3)))
    first = claim(queue, worker="w1")
    assert sorted(j.task for j in first) == ["other"] * 3 + ["quote"] * 2
    assert claim(queue, worker="w2") == []  # the limit holds for another worker too
    quote = next(j for j in first if j.task == "quote")
    queue.complete(quote, None)
    [next_one] = claim(queue, worker="w2")
    assert next_one.task == "quote"
    assert claim(queue, worker="w3") == []


def test_a_limit_frees_its_slot_on_failure_cancel_and_lease_expiry(
    registry: Registry, clocked_queue: Queue, clock: Clock
) -> None:
    queue = clocked_queue
    _reregister(registry, "quote", limit=1)
    ids = queue.enqueue_many("quote", list(range(4)), max_attempts=1)
    [a] = claim(queue)
    queue.fail(a, "boom")
    [b] = claim(queue)
    queue.cancel(b.id)  # flagged; the run ends cancelled when it reports
    queue.complete(b, None)
    [c] = claim(queue)
    clock.advance(60.0)  # the worker died: its lease ends
    queue.lifecycle.rescue_expired()
    [d] = claim(queue)
    assert [a.id, b.id, c.id, d.id] == ids


def test_limits_hold_per_payload_value_with_limit_key(registry: Registry, queue: Queue) -> None:
    _reregister(registry, "fetch", limit=1, limit_key="symbol")
    queue.enqueue_many("fetch", [{"symbol": s} for s in ["TCS", "TCS", "INFY", "INFY", "RIL"]])
    jobs = claim(queue)
    assert sorted(j.payload["symbol"] for j in jobs) == ["INFY", "RIL", "TCS"]
    assert claim(queue) == []
    queue.complete(next(j for j in jobs if j.payload["symbol"] == "TCS"), None)
    [again] = claim(queue)
    assert again.payload["symbol"] == "TCS"


def test_limited_jobs_are_claimed_best_first(registry: Registry, queue: Queue) -> None:
    _reregister(registry, "quote", limit=1)
    low = queue.enqueue("quote", "low", priority=0)
    high = queue.enqueue("quote", "high", priority=5)
    [first] = claim(queue)
    assert first.id == high
    queue.complete(first, None)
    [second] = claim(queue)
    assert second.id == low


def test_a_rate_limit_counts_starts_in_any_window(
    registry: Registry, clocked_queue: Queue, clock: Clock
) -> None:
    queue = clocked_queue
    _reregister(registry, "api", rate="3/10s")
    queue.enqueue_many("api", list(range(8)))
    first = claim(queue)
    assert len(first) == 3
    for job in first:
        queue.complete(job, None)
    clock.advance(5.0)
    assert claim(queue) == []  # three starts in the last 10 s, running or not
    due = queue.lifecycle.limited_due(None)
    assert due is not None and not due.claimable
    assert due.next_start is not None and due.next_start - due.now == pytest.approx(5.0)
    clock.advance(5.1)
    assert len(claim(queue)) == 3


def test_limit_and_rate_together(registry: Registry, clocked_queue: Queue, clock: Clock) -> None:
    queue = clocked_queue
    _reregister(registry, "api", limit=2, rate="3/10s")
    queue.enqueue_many("api", list(range(6)))
    first = claim(queue)
    assert len(first) == 2
    queue.complete(first[0], None)
    assert len(claim(queue)) == 1  # one slot, and the third start of the window
    queue.complete(first[1], None)
    assert claim(queue) == []  # a free slot, but the rate is spent
    clock.advance(10.5)
    assert len(claim(queue)) == 1  # one slot free (the third job still runs)


def test_a_worker_drains_limited_jobs_without_exceeding_the_limit(
    registry: Registry, queue: Queue
) -> None:
    running = 0
    peak = 0
    lock = threading.Lock()

    def handler(job: Job) -> None:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(0.01)
        with lock:
            running -= 1

    registry.task("slow", limit=3)(handler)
    queue.enqueue_many("slow", list(range(30)))
    summary = Worker(queue, concurrency=8).run(burst=True)
    assert summary.completed == 30
    assert peak == 3


def test_burst_waits_for_jobs_held_back_only_by_a_rate(registry: Registry, queue: Queue) -> None:
    _reregister(registry, "tick", rate="5/s")
    queue.enqueue_many("tick", list(range(12)))
    summary = Worker(queue, concurrency=4).run(burst=True)
    assert summary.completed == 12
    starts = sorted(j.started_at for j in queue.jobs(status="completed", limit=20))
    assert starts is not None
    for n in range(len(starts) - 5):
        assert starts[n + 5] - starts[n] >= 1.0 - 1e-6  # never 6 starts within a second


def test_status_shows_each_limit_key(registry: Registry, queue: Queue) -> None:
    _reregister(registry, "fetch", limit=2, rate="10/m", limit_key="symbol")
    queue.enqueue_many("fetch", [{"symbol": "TCS"}] * 3 + [{"symbol": "INFY"}])
    claim(queue)
    infos = {i.key: i for i in queue.limits()}
    tcs = infos["fetch|TCS"]
    assert (tcs.processing, tcs.queued, tcs.limit, tcs.rate) == (2, 1, 2, "10/60s")
    assert tcs.starts_last_hour == 2
    assert infos["fetch|INFY"].processing == 1


def test_a_missing_limit_key_in_the_payload_is_refused_at_enqueue(
    registry: Registry, queue: Queue, database: Database
) -> None:
    _reregister(registry, "fetch", limit=1, limit_key="symbol")
    with pytest.raises(PayloadError, match="symbol"):
        queue.enqueue("fetch", {"ticker": "TCS"})
    with pytest.raises(PayloadError, match="symbol"):
        queue.enqueue_many("fetch", [{"symbol": "A"}, {"symbol": ["x"]}])
    assert database.value("SELECT count(*) FROM sqlitejobq_jobs") == 0


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [({"limit": 0}, InvalidArgument, "limit"), ({"limit": -2}, InvalidArgument, "limit"),
     ({"limit": 1.5}, InvalidArgumentType, "limit"), ({"rate": "fast"}, InvalidArgument, "rate"),
     ({"rate": "0/s"}, InvalidArgument, "rate"), ({"rate": 5}, InvalidArgumentType, "rate"),
     ({"limit_key": "symbol"}, InvalidArgument, "limit_key"),
     ({"limit": 1, "limit_key": "bad key"}, InvalidArgument, "limit_key")],
)  # fmt: skip
def test_bad_limits_are_refused_when_the_task_is_declared(
    options: dict[str, object], error: type, match: str
) -> None:
    registry = Registry()
    with pytest.raises(error, match=match):
        registry.task("t", **options)(lambda job: None)  # type: ignore[arg-type]
    assert "t" not in registry


def test_rates_read_as_documented() -> None:
    registry = Registry()
    for text, rate in [("5/s", (5, 1.0)), ("100/m", (100, 60.0)), ("10/30s", (10, 30.0)),
                       ("1000/h", (1000, 3600.0)), ("2/day", (2, 86400.0))]:  # fmt: skip
        registry.task(f"t{rate[0]}", rate=text)(lambda job: None)
        assert registry.options(f"t{rate[0]}").rate == rate


def test_jobs_of_a_task_not_limited_here_are_left_to_workers_that_know_it(
    registry: Registry, queue: Queue, target: str
) -> None:
    _reregister(registry, "quote", limit=1)
    queue.enqueue_many("quote", [1, 2])
    with Queue(target) as unaware:  # a worker whose registry does not declare the limit
        assert unaware.claim(worker_id="w9", limit=10) == []
    assert len(claim(queue)) == 1
    assert queue.get(1).status in (JobStatus.PROCESSING, JobStatus.QUEUED)


def _reregister(registry: Registry, task: str, **options: object) -> None:
    """Register (or re-register) ``task`` with the given limits and a handler that returns."""
    registry._tasks.pop(task, None)
    registry._rules = None
    registry.task(task, **options)(lambda job: None)  # type: ignore[arg-type]


def test_a_queue_limit_holds_every_task_of_the_queue(registry: Registry, queue: Queue) -> None:
    registry.task("a")(lambda job: None)
    registry.task("b")(lambda job: None)
    _reregister(registry, "own", limit=1)
    queue.limit_queue("market", limit=2)
    queue.enqueue_many("a", [1, 2], queue="market")
    queue.enqueue_many("b", [1, 2], queue="market")
    queue.enqueue_many("own", [1, 2], queue="market")  # its task's own limit wins
    queue.enqueue_many("a", [1, 2, 3])  # another queue: not limited
    jobs = claim(queue)
    in_market = [j for j in jobs if j.queue == "market"]
    assert len(in_market) == 3  # two of a/b under the queue's limit, one "own"
    assert sum(j.task == "own" for j in in_market) == 1
    assert sum(j.queue == "default" for j in jobs) == 3
    assert claim(queue) == []
    queue.complete(next(j for j in in_market if j.task != "own"), None)
    [more] = claim(queue)
    assert more.queue == "market" and more.task in ("a", "b")
    assert {i.key for i in queue.limits()} == {"#market", "own"}


def test_a_queue_limit_needs_a_limit_or_a_rate(registry: Registry) -> None:
    with pytest.raises(InvalidArgument, match="needs a limit or a rate"):
        registry.limit_queue("market")
    with pytest.raises(InvalidArgument, match="limit"):
        registry.limit_queue("market", limit=0)
    assert registry.limit_rules() == {}
