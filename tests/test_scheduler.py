"""Periodic jobs on every engine: one job per (schedule, slot) however many schedulers run,
missed slots handled by the schedule's policy, schedules listed with their last and next
runs, bad declarations refused."""

from __future__ import annotations

import datetime as dt
import json
import threading
import time

import pytest

from sqlitejobq import InvalidArgument, InvalidArgumentType, Job, JobStatus, Queue, Registry, Worker
from sqlitejobq.cli import main
from sqlitejobq.scheduler import Scheduler

from .conftest import Clock

MINUTE = 60.0


def scheduled(queue: Queue, task: str = "report") -> list[Job]:
    return queue.jobs(task=task, limit=1000, oldest_first=True)


def test_one_job_per_slot_however_many_schedulers_look(
    registry: Registry, clocked_queue: Queue, clock: Clock, target: str
) -> None:
    registry.schedule("report", 5 * MINUTE, payload={"kind": "daily"})
    clock.now = 1_800_000_000.0 - (1_800_000_000.0 % 300)  # on a slot
    others = [Queue(target, registry=registry, clock=clock) for _ in range(3)]
    try:
        schedulers = [Scheduler(q, registry.schedules) for q in [clocked_queue, *others]]
        for _ in range(2):
            for scheduler in schedulers:
                scheduler.tick()
        assert len(scheduled(clocked_queue)) == 1
        clock.advance(5 * MINUTE)
        threads = [threading.Thread(target=s.tick) for s in schedulers]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        jobs = scheduled(clocked_queue)
        assert len(jobs) == 2
        assert [j.payload for j in jobs] == [{"kind": "daily"}] * 2
        assert sum(s.created for s in schedulers) == 2
    finally:
        for q in others:
            q.close()


def test_the_default_payload_names_the_slot(
    registry: Registry, clocked_queue: Queue, clock: Clock
) -> None:
    registry.schedule("report", MINUTE)
    clock.now = 1_800_000_000.0 - (1_800_000_000.0 % 60) + 1.0
    Scheduler(clocked_queue, registry.schedules).tick()
    [job] = scheduled(clocked_queue)
    slot = dt.datetime.fromtimestamp(clock.now - 1.0, dt.UTC)
    assert job.payload == {"slot": slot.isoformat().replace("+00:00", "Z")}


def test_tick_says_how_long_until_the_next_slot(
    registry: Registry, clocked_queue: Queue, clock: Clock
) -> None:
    registry.schedule("report", 5 * MINUTE)
    clock.now = 1_800_000_000.0 - (1_800_000_000.0 % 300) + 100.0
    assert Scheduler(clocked_queue, registry.schedules).tick() == pytest.approx(200.0)


@pytest.mark.parametrize(("missed", "expected"), [("latest", 1), ("skip", 0)])
def test_slots_missed_during_downtime_follow_the_policy(
    registry: Registry, clocked_queue: Queue, clock: Clock, missed: str, expected: int
) -> None:
    registry.schedule("report", MINUTE, missed=missed)
    clock.now = 1_800_000_000.0 - (1_800_000_000.0 % 60)
    scheduler = Scheduler(clocked_queue, registry.schedules)
    scheduler.tick()
    assert len(scheduled(clocked_queue)) == 1
    clock.advance(30 * MINUTE + 10)  # down for half an hour: 30 slots passed, the last on time
    Scheduler(clocked_queue, registry.schedules).tick()
    jobs = scheduled(clocked_queue)
    # the slot of now is on time either way; of the 29 late ones, "latest" runs one
    assert len(jobs) == 1 + 1 + expected


@pytest.mark.parametrize(("missed", "after_downtime"), [("latest", 2), ("skip", 1)])
def test_an_every_second_schedule_creates_one_job_a_slot_at_start_and_after_downtime(
    registry: Registry, clocked_queue: Queue, clock: Clock, missed: str, after_downtime: int
) -> None:
    registry.schedule("report", 1, missed=missed)
    clock.now = 1_800_000_000.5  # first sight, half a second into a slot
    Scheduler(clocked_queue, registry.schedules).tick()
    assert len(scheduled(clocked_queue)) == 1  # the current slot, not the last minute's
    clock.advance(20)  # the workers were down for 20 s
    Scheduler(clocked_queue, registry.schedules).tick()
    jobs = scheduled(clocked_queue)
    # the slot of now, and with "latest" the one slot before it, not the 20 missed
    assert len(jobs) == 1 + after_downtime
    slots = [job.payload["slot"] for job in jobs]
    assert slots[-1] == "2027-01-15T08:00:20Z" and len(set(slots)) == len(slots)


def test_a_worker_creates_no_more_than_one_job_a_second_for_an_every_second_schedule(
    registry: Registry, target: str
) -> None:
    registry.task("beat", schedule=1.0)(lambda job: None)
    for restart in (False, True):  # a first start, then a restart after a pause
        with Queue(target, registry=registry) as queue:
            before = len(scheduled(queue, "beat"))
            worker = Worker(queue, concurrency=2, schedule_check=0.1)
            thread = threading.Thread(target=worker.run, kwargs={"handle_signals": False})
            started = time.monotonic()
            thread.start()
            time.sleep(1.5)
            worker.stop()
            thread.join(30)
            ran = time.monotonic() - started
            created = len(scheduled(queue, "beat")) - before
        assert not thread.is_alive()
        # the slot it started in, one per slot boundary it ran across, and after the pause
        # one catch-up: never the slots of a whole minute
        allowed = 1 + (int(ran) + 1) + (1 if restart else 0)
        assert 1 <= created <= allowed, f"{created} jobs in {ran:.1f}s"
        time.sleep(2.5)


def test_a_cron_schedule_in_a_time_zone(
    registry: Registry, clocked_queue: Queue, clock: Clock
) -> None:
    @registry.task("refresh", schedule="0 16 * * *", timezone="Asia/Kolkata")
    def refresh(job: Job) -> None: ...

    sixteen_ist = dt.datetime(2027, 1, 4, 10, 30, tzinfo=dt.UTC).timestamp()
    clock.now = sixteen_ist - 1.0
    scheduler = Scheduler(clocked_queue, registry.schedules)
    assert scheduler.tick() == pytest.approx(1.0)
    assert scheduled(clocked_queue, "refresh") == []
    clock.advance(2.0)
    scheduler.tick()
    [job] = scheduled(clocked_queue, "refresh")
    assert job.payload == {"slot": "2027-01-04T10:30:00Z"}
    [info] = clocked_queue.schedules()
    assert (info.name, info.every, info.timezone) == ("refresh", "0 16 * * *", "Asia/Kolkata")
    assert info.last_slot == sixteen_ist and info.last_job_id == job.id
    assert info.last_status == "queued"
    assert info.next_slot == sixteen_ist + 86400


def test_a_worker_runs_its_schedules_and_the_jobs(registry: Registry, target: str) -> None:
    runs: list[int] = []
    done = threading.Event()

    @registry.task("beat", schedule=1.0)
    def beat(job: Job) -> None:
        runs.append(job.id)
        if len(runs) >= 2:
            done.set()

    with Queue(target, registry=registry) as queue:
        worker = Worker(queue, concurrency=2, schedule_check=0.2)
        thread = threading.Thread(target=worker.run, kwargs={"handle_signals": False})
        thread.start()
        try:
            assert done.wait(30), "the schedule did not run twice in 30 s"
        finally:
            worker.stop()
            thread.join(30)
        assert not thread.is_alive()
        jobs = queue.jobs(task="beat", limit=100)
        assert len(jobs) == len({json.dumps(j.payload) for j in jobs})  # one job per slot
        assert {j.status for j in jobs} <= {JobStatus.COMPLETED, JobStatus.QUEUED,
                                             JobStatus.PROCESSING}  # fmt: skip


def test_a_burst_worker_does_not_run_schedules(registry: Registry, queue: Queue) -> None:
    registry.task("beat", schedule=1.0)(lambda job: None)
    Worker(queue).run(burst=True)
    assert scheduled(queue, "beat") == []


def test_a_schedule_removed_from_code_stays_listed_but_no_longer_fires(
    registry: Registry, clocked_queue: Queue, clock: Clock, target: str
) -> None:
    registry.schedule("report", MINUTE)
    clock.now = 1_800_000_000.0 - (1_800_000_000.0 % 60)
    Scheduler(clocked_queue, registry.schedules).tick()
    with Queue(target, clock=clock) as newer:  # the next release: no schedule in its code
        clock.advance(5 * MINUTE)
        Scheduler(newer, Registry().schedules).tick()
        [info] = newer.schedules()
        assert info.name == "report" and info.next_slot is None
    assert len(scheduled(clocked_queue)) == 1


def test_the_schedules_command_lists_them(
    registry: Registry, clocked_queue: Queue, clock: Clock, target: str,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    registry.schedule("report", 5 * MINUTE)
    clock.now = 1_800_000_000.0 - (1_800_000_000.0 % 300)
    Scheduler(clocked_queue, registry.schedules).tick()
    assert main(["schedules", "--db", target, "--json"]) == 0
    [row] = json.loads(capsys.readouterr().out)
    assert (row["name"], row["every"], row["last_status"]) == ("report", "every 300s", "queued")
    assert main(["schedules", "--db", target]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split()[:3] == ["schedule", "task", "every"]
    assert "report" in out


@pytest.mark.parametrize(
    ("every", "options", "error", "match"),
    [("61 * * * *", {}, InvalidArgument, "61"), ("* * *", {}, InvalidArgument, r"\* \* \*"),
     ("0 16 * * *", {"timezone": "Asia/Kolkatta"}, InvalidArgument, "Kolkatta"),
     (0, {}, InvalidArgument, "0"), (-5, {}, InvalidArgument, "-5"),
     (True, {}, InvalidArgumentType, "True"),
     (60, {"missed": "sometimes"}, InvalidArgument, "missed")],
)  # fmt: skip
def test_bad_schedules_are_refused_and_nothing_is_declared(
    every: object, options: dict[str, object], error: type, match: str
) -> None:
    registry = Registry()
    with pytest.raises(error, match=match):
        registry.schedule("report", every, **options)  # type: ignore[arg-type]
    with pytest.raises(error):
        registry.task("report", schedule=every, **options)(lambda job: None)  # type: ignore[arg-type]
    assert registry.schedules == [] and "report" not in registry
