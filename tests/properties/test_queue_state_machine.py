"""The queue as a state machine, checked against a model after every step.

Hypothesis drives enqueue / claim / complete / fail / snooze / cancel / retry / update /
pause / resume / heartbeat / release / lease expiry with a clock it controls, and checks: no
job is lost, none completes twice, states only move along the allowed edges, claims follow
priority then age (and none comes from a paused queue), and the counts of stats() and
batch_progress() match the jobs. It runs on every engine, each example on a
fresh database (a SQLite file, or a PostgreSQL schema of its own).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    multiple,
    precondition,
    rule,
    run_state_machine_as_test,
)

from sqlitejobq import InvalidArgument, Job, JobStatus, Queue
from sqlitejobq.job import ALLOWED_TRANSITIONS

from ..conftest import Clock, PgServer, with_schema

#: How often a job may be snoozed before a snooze fails it (small, so the bound is met).
MAX_SNOOZES = 2
#: Makes a fresh database: its target, and what removes it.
Fresh = Callable[[], tuple[str, Callable[[], None]]]


@dataclass
class Model:
    status: JobStatus
    priority: int
    run_at: float
    attempts: int
    max_attempts: int
    batch_id: int | None
    cancel_requested: bool = False
    lease_until: float | None = None
    worker: str | None = None
    completions: int = 0
    #: while waiting: the dependencies not finished yet, and what a failed one does
    pending: set[int] | None = None
    policy: str = "cancel"
    #: times its handler put it off (raise Snooze)
    snoozes: int = 0


class QueueMachine(RuleBasedStateMachine):
    claims = Bundle("claims")

    def __init__(self, fresh: Fresh) -> None:
        super().__init__()
        target, self.remove = fresh()
        self.clock = Clock()
        self.queue = Queue(
            target, clock=self.clock, retry_backoff=2.0, retry_backoff_max=10.0,
            max_snoozes=MAX_SNOOZES,
        )  # fmt: skip
        self.paused = False
        self.jobs: dict[int, Model] = {}
        self.batches: set[int] = set()
        self.seen_status: dict[int, JobStatus] = {}

    def teardown(self) -> None:
        self.queue.close()
        self.remove()

    # --- helpers ---------------------------------------------------------------------

    def owns(self, job: Job) -> bool:
        model = self.jobs[job.id]
        return (model.status is JobStatus.PROCESSING and model.attempts == job.attempts
                and model.worker == job.worker)  # fmt: skip

    def end_run(self, job_id: int, status: JobStatus) -> None:
        model = self.jobs[job_id]
        model.status = status
        model.lease_until = None
        if status is JobStatus.QUEUED:
            model.run_at = self.queue.get(job_id).run_at
        self.finished(job_id)

    def finished(self, job_id: int) -> None:
        """A job reached an end state (or not): count it off the jobs waiting for it, and
        theirs in turn when one is cancelled for it."""
        status = self.jobs[job_id].status
        if not status.finished:
            return
        for other_id, other in self.jobs.items():
            if other.status is not JobStatus.WAITING or job_id not in (other.pending or set()):
                continue
            assert other.pending is not None
            other.pending.discard(job_id)
            if status is not JobStatus.COMPLETED and other.policy == "cancel":
                other.status = JobStatus.CANCELLED
                self.finished(other_id)
            elif not other.pending:
                other.status = JobStatus.QUEUED
                other.run_at = max(other.run_at, self.clock())

    # --- rules -------------------------------------------------------------------------

    @initialize()
    def start(self) -> None:
        assert self.queue.stats().total() == 0

    @rule(
        count=st.integers(1, 3),
        priority=st.sampled_from([0, 0, 1]),
        delay=st.sampled_from([0.0, 0.0, 5.0]),
        max_attempts=st.integers(1, 3),
        as_batch=st.booleans(),
    )
    def enqueue(self, count: int, priority: int, delay: float, max_attempts: int,
                as_batch: bool) -> None:  # fmt: skip
        options = {"priority": priority, "delay": delay, "max_attempts": max_attempts}
        batch_id = None
        if as_batch:
            batch = self.queue.enqueue_batch("t", list(range(count)), **options)
            ids, batch_id = batch.job_ids, batch.id
            self.batches.add(batch.id)
        elif count == 1:
            ids = [self.queue.enqueue("t", 0, **options)]
        else:
            ids = self.queue.enqueue_many("t", list(range(count)), **options)
        for job_id in ids:
            assert job_id not in self.jobs
            self.jobs[job_id] = Model(JobStatus.QUEUED, priority, self.clock() + delay, 0,
                                      max_attempts, batch_id)  # fmt: skip

    @precondition(lambda self: self.jobs)
    @rule(data=st.data(), policy=st.sampled_from(["cancel", "run"]))
    def enqueue_dependent(self, data: st.DataObject, policy: str) -> None:
        deps = data.draw(st.lists(st.sampled_from(sorted(self.jobs)), min_size=1, max_size=2))
        job_id = self.queue.enqueue("t", 0, depends_on=deps, on_dependency_failure=policy)
        statuses = {dep: self.jobs[dep].status for dep in deps}
        model = Model(JobStatus.QUEUED, 0, self.clock(), 0, 3, None, policy=policy)
        if policy == "cancel" and any(
            s in (JobStatus.FAILED, JobStatus.CANCELLED) for s in statuses.values()
        ):
            model.status = JobStatus.CANCELLED
        elif any(not s.finished for s in statuses.values()):
            model.status = JobStatus.WAITING
            model.pending = {dep for dep, s in statuses.items() if not s.finished}
        self.jobs[job_id] = model
        self.seen_status[job_id] = model.status

    @rule(target=claims, worker=st.sampled_from(["w1", "w2"]), limit=st.integers(1, 3),
          lease=st.sampled_from([5.0, 20.0]))  # fmt: skip
    def claim(self, worker: str, limit: int, lease: float) -> object:
        now = self.clock()
        due = sorted(
            (m.priority * -1, m.run_at, job_id)
            for job_id, m in self.jobs.items()
            if m.status is JobStatus.QUEUED and m.run_at <= now and not self.paused
        )
        expected = [job_id for _, _, job_id in due[:limit]]
        claimed = self.queue.claim(worker, limit=limit, lease=lease)
        assert [j.id for j in claimed] == expected
        for job in claimed:
            model = self.jobs[job.id]
            model.status = JobStatus.PROCESSING
            model.attempts += 1
            model.worker = worker
            model.lease_until = now + lease
            assert job.attempts == model.attempts
        return multiple(*claimed)

    @rule(job=consumes(claims))
    def complete(self, job: Job) -> None:
        owned = self.owns(job)
        assert self.queue.complete(job, {"id": job.id}) is owned
        if owned:
            model = self.jobs[job.id]
            self.end_run(job.id, JobStatus.CANCELLED if model.cancel_requested
                         else JobStatus.COMPLETED)  # fmt: skip
            model.completions += model.status is JobStatus.COMPLETED

    @rule(job=consumes(claims), retry=st.booleans())
    def fail(self, job: Job, retry: bool) -> None:
        owned = self.owns(job)
        assert self.queue.fail(job, "boom", retry=retry) is owned
        if owned:
            model = self.jobs[job.id]
            if model.cancel_requested:
                self.end_run(job.id, JobStatus.CANCELLED)
            elif retry and model.attempts < model.max_attempts:
                self.end_run(job.id, JobStatus.QUEUED)
            else:
                self.end_run(job.id, JobStatus.FAILED)

    @rule(job=consumes(claims), seconds=st.sampled_from([0.0, 5.0]))
    def snooze(self, job: Job, seconds: float) -> None:
        """The handler raised Snooze(seconds)."""
        owned = self.owns(job)
        lifecycle = self.queue.lifecycle
        assert lifecycle.finish([(job, lifecycle.snooze_step(job, seconds))]) == [owned]
        if owned:
            model = self.jobs[job.id]
            if model.cancel_requested:
                self.end_run(job.id, JobStatus.CANCELLED)
            elif model.snoozes >= MAX_SNOOZES:
                self.end_run(job.id, JobStatus.FAILED)
            else:
                model.attempts -= 1
                self.end_run(job.id, JobStatus.QUEUED)
                assert model.run_at == self.clock() + seconds
            model.snoozes += 1

    @precondition(lambda self: self.jobs)
    @rule(
        data=st.data(), priority=st.sampled_from([0, 1, 2]), delay=st.sampled_from([None, 0.0, 8.0])
    )
    def update(self, data: st.DataObject, priority: int, delay: float | None) -> None:
        job_id = data.draw(st.sampled_from(sorted(self.jobs)))
        model = self.jobs[job_id]
        if model.status is JobStatus.WAITING:
            delay = None  # due when its dependencies finish
        if model.status in (JobStatus.QUEUED, JobStatus.WAITING):
            job = self.queue.update(job_id, priority=priority, delay=delay)
            model.priority = priority
            if delay is not None:
                model.run_at = self.clock() + delay
            assert (job.priority, job.run_at) == (model.priority, model.run_at)
        else:
            with pytest.raises(InvalidArgument, match=model.status.value):
                self.queue.update(job_id, priority=priority, delay=delay)

    @rule()
    def pause(self) -> None:
        assert self.queue.pause("default") is not self.paused
        self.paused = True

    @rule()
    def resume(self) -> None:
        assert self.queue.resume("default") is self.paused
        self.paused = False

    @rule(job=claims)
    def heartbeat(self, job: Job) -> None:
        owned = self.owns(job)
        assert self.queue.heartbeat(job) is owned
        if owned:
            self.jobs[job.id].lease_until = self.clock() + job._claim.lease  # type: ignore[union-attr]

    @rule(job=consumes(claims))
    def release(self, job: Job) -> None:
        owned = self.owns(job)
        assert self.queue.release([job]) == int(owned)
        if owned:
            model = self.jobs[job.id]
            model.attempts -= 1
            self.end_run(job.id, JobStatus.CANCELLED if model.cancel_requested
                         else JobStatus.QUEUED)  # fmt: skip

    @precondition(lambda self: self.jobs)
    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        job_id = data.draw(st.sampled_from(sorted(self.jobs)))
        model = self.jobs[job_id]
        expected = model.status in (JobStatus.QUEUED, JobStatus.PROCESSING, JobStatus.WAITING)
        assert self.queue.cancel(job_id) is expected
        if model.status in (JobStatus.QUEUED, JobStatus.WAITING):
            model.status = JobStatus.CANCELLED
            model.cancel_requested = True
            self.finished(job_id)
        elif model.status is JobStatus.PROCESSING:
            model.cancel_requested = True

    @precondition(lambda self: self.jobs)
    @rule(data=st.data())
    def retry(self, data: st.DataObject) -> None:
        job_id = data.draw(st.sampled_from(sorted(self.jobs)))
        model = self.jobs[job_id]
        expected = model.status in (JobStatus.FAILED, JobStatus.CANCELLED)
        assert self.queue.retry(job_id) is expected
        if expected:
            model.status = JobStatus.QUEUED
            model.attempts = 0
            model.cancel_requested = False
            model.run_at = self.clock()
            model.pending = None

    @rule(seconds=st.sampled_from([1.0, 6.0, 25.0]))
    def advance_clock(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @rule()
    def rescue_expired(self) -> None:
        now = self.clock()
        expected = sorted(
            job_id for job_id, m in self.jobs.items()
            if m.status is JobStatus.PROCESSING and m.lease_until is not None
            and m.lease_until < now
        )  # fmt: skip
        assert sorted(self.queue.rescue_expired()) == expected
        for job_id in expected:
            model = self.jobs[job_id]
            if model.cancel_requested:
                self.end_run(job_id, JobStatus.CANCELLED)
            elif model.attempts >= model.max_attempts:
                self.end_run(job_id, JobStatus.FAILED)
            else:
                self.end_run(job_id, JobStatus.QUEUED)

    # --- invariants --------------------------------------------------------------------

    @invariant()
    def every_job_matches_the_model_and_moved_along_an_allowed_edge(self) -> None:
        stored = {job.id: job for job in self.queue.jobs(limit=10_000)}
        assert set(stored) == set(self.jobs)  # no job lost, none invented
        for job_id, model in self.jobs.items():
            job = stored[job_id]
            assert (job.status, job.attempts) == (model.status, model.attempts), job_id
            before = self.seen_status.get(job_id, JobStatus.QUEUED)
            assert job.status is before or job.status in ALLOWED_TRANSITIONS[before]
            self.seen_status[job_id] = job.status
            assert model.completions <= 1  # none completed twice
            if job.status is JobStatus.COMPLETED:
                assert job.result == {"id": job_id}

    @invariant()
    def counts_match_stats_and_batches(self) -> None:
        by_status = self.queue.stats().by_status
        for status in JobStatus:
            assert by_status[status.value] == sum(m.status is status for m in self.jobs.values())
        for batch_id in self.batches:
            progress = self.queue.batch_progress(batch_id)
            members = [m for m in self.jobs.values() if m.batch_id == batch_id]
            assert progress.total == len(members)
            for status in JobStatus:
                assert getattr(progress, status.value) == sum(m.status is status for m in members)


SETTINGS = settings(
    max_examples=150,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def sqlite_files() -> tuple[str, Callable[[], None]]:
    directory = tempfile.mkdtemp(prefix="sqlitejobq-sm-")
    return str(Path(directory) / "jobs.db"), lambda: shutil.rmtree(directory, ignore_errors=True)


@pytest.mark.timeout(600)
def test_queue_state_machine(engine: str, request: pytest.FixtureRequest) -> None:
    fresh: Fresh = sqlite_files
    if engine == "postgres":
        server: PgServer = request.getfixturevalue("pg_server")

        def fresh_schema() -> tuple[str, Callable[[], None]]:
            schema = server.new_schema()
            return with_schema(server.dsn, schema), lambda: server.drop(schema)

        fresh = fresh_schema
    run_state_machine_as_test(lambda: QueueMachine(fresh), settings=SETTINGS)
