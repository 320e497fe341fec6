"""Every transaction of the queue, written once for every engine.

``Store`` implements ``Backend``: inserting jobs, the claim and completion exchange,
rescuing expired leases, completion hooks, releasing dependents, the operator's actions,
schedules, worker rows and every read. It speaks to the database only through an engine's
``Statements`` (one method or named SQL text per statement, see ``statements.py``) and
the engine's three ways to run them: ``write`` (one transaction, retried while the fault
passes), ``read`` (several reads in one snapshot) and ``look`` (single reads, each its
own snapshot). An engine subclasses it with its connections, schema and wake-up.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

from ..errors import DuplicateJob, InvalidArgumentType, JobNotFound, SqliteJobQError
from ..job import BatchProgress, WorkerInfo
from ..limits import (
    QUEUE_RULE_PREFIX,
    LimitedClaim,
    keys_for_unkeyed,
    plan_limited_claim,
    task_of_limit_key,
)
from .base import (
    FINISHED_STATUSES,
    STATUS_STEPS,
    THROUGHPUT_KEPT,
    Capabilities,
    ClaimRequest,
    Complete,
    Heartbeat,
    JobChange,
    JobRecord,
    LimitedDue,
    NewJob,
    RescuedJob,
    Snapshot,
    StepValue,
    Waker,
    WorkerRecord,
)
from .shared import LockMetrics, Tally
from .statements import HeldKey, Statements

log = logging.getLogger("sqlitejobq")

T = TypeVar("T")
Tx = TypeVar("Tx")
Body = Callable[[Tx], T]


class Store(Generic[Tx]):
    """The queue's transactions over one engine's statements (see the module)."""

    target: str
    capabilities: Capabilities
    metrics: LockMetrics
    waker: Waker
    sql: Statements[Tx]

    # --- what an engine provides --------------------------------------------------------

    def write(self, body: Callable[[Tx], T], what: str = "write") -> T:
        """Run ``body`` in one write transaction, retried as a whole while the fault passes."""
        raise NotImplementedError

    def read(self, body: Callable[[Tx], T], what: str = "read") -> T:
        """Run several reads in one consistent snapshot."""
        raise NotImplementedError

    def look(self, body: Callable[[Tx], T], what: str = "read") -> T:
        """Run reads where each statement may see its own snapshot (no transaction)."""
        raise NotImplementedError

    def in_caller_transaction(self, conn: Any, body: Callable[[Tx], T]) -> T:
        """Run ``body`` in the caller's open transaction on ``conn`` (not retried: the
        transaction is the caller's), refusing a connection that cannot hold the job."""
        raise NotImplementedError

    def bound_now(self) -> float | None:
        """The time to bind as ``now`` in statements: the clock's, or None where the
        statements read the database's own clock."""
        raise NotImplementedError

    def now(self) -> float:
        """The time of the clock that stamps leases and due times."""
        raise NotImplementedError

    def now_in(self, tx: Tx, now: float | None) -> float:
        """``now`` as a number, read from the database inside ``tx`` when it is None."""
        return now if now is not None else self.sql.database_now(tx)

    # --- inserting jobs -------------------------------------------------------------------

    def insert_jobs(
        self,
        jobs: Sequence[NewJob],
        *,
        batch_name: str | None,
        make_batch: bool,
        connection: Any = None,
        then: Callable[[int, list[int]], NewJob] | None = None,
    ) -> tuple[int | None, list[int]]:
        """Insert jobs; a job whose unique key an active job holds is not inserted, the
        holder's id is returned in its place. Returns (batch id, job ids). With
        ``connection``, in the caller's open transaction."""
        if then is not None and not make_batch:
            raise InvalidArgumentType("then needs a batch")
        now = self.bound_now()
        plain = not make_batch and all(
            j.unique_key is None and not j.depends_on and j.expires is None for j in jobs
        )
        if connection is None and plain and jobs:
            ids = self.enqueue_plain(jobs, now)
            self.waker.notify()
            return None, ids

        def body(tx: Tx) -> tuple[int | None, list[int]]:
            return self._insert(tx, jobs, batch_name, make_batch, then, now)

        if connection is not None:
            return self.in_caller_transaction(connection, body)
        result = self.write(body, "enqueue")
        self.waker.notify()
        return result

    def enqueue_plain(self, jobs: Sequence[NewJob], now: float | None) -> list[int]:
        """Insert jobs that all go in (no batch, unique key or dependency) in their own
        transaction, waking the workers of their queues when it commits."""

        if len(jobs) == 1:
            changed = [(jobs[0].queue, "queued", 1)]
        else:
            counts = Counter(job.queue for job in jobs)
            changed = sorted((queue, "queued", n) for queue, n in counts.items())
        queues = {queue for queue, _, _ in changed}

        def body(tx: Tx) -> list[int]:
            ids = [int(i) for i in self.sql.insert_jobs(tx, jobs, None, now) if i is not None]
            self.sql.add_to_counts(tx, changed)
            self.sql.notify(tx, queues)
            return ids

        return self.write(body, "enqueue")

    def _insert(
        self,
        tx: Tx,
        jobs: Sequence[NewJob],
        batch_name: str | None,
        make_batch: bool,
        then: Callable[[int, list[int]], NewJob] | None,
        now: float | None,
    ) -> tuple[int | None, list[int]]:
        tally = Tally()
        batch_id = self.sql.insert_batch(tx, batch_name, now) if make_batch else None
        inserted = self.sql.insert_jobs(tx, jobs, batch_id, now) if jobs else []
        for job, job_id in zip(jobs, inserted, strict=True):
            if job_id is not None:
                tally.move(job.queue, batch_id, None, "queued")
                if job.expires is not None:
                    params = {"id": job_id, "expires": job.expires, "now": now}
                    self.sql.run(tx, self.sql.SET_EXPIRY, params)
                if job.depends_on:
                    self._wait_for(tx, job_id, job, batch_id, tally, now)
        held = [job.unique_key for job, i in zip(jobs, inserted, strict=True) if i is None]
        ids = list(inserted)
        if held:
            holders = self.sql.active_jobs_with_keys(tx, [k for k in held if k is not None])
            ids = [
                i if i is not None else holders.get(str(job.unique_key))
                for job, i in zip(jobs, inserted, strict=True)
            ]
            if any(i is None for i in ids):
                # the holder finished between the two statements: the caller may retry
                raise SqliteJobQError("a unique key changed hands during the enqueue; retry")
        found = [int(i) for i in ids if i is not None]
        if then is not None and batch_id is not None:
            follow = then(batch_id, list(found))
            (follow_id,) = self.sql.insert_jobs(tx, [follow], None, now)
            assert follow_id is not None  # it has no unique key
            tally.move(follow.queue, None, None, "queued")
            self._wait_for(tx, follow_id, follow, None, tally, now)
            found.append(follow_id)
        self.write_tally(tx, tally)
        self.sql.notify(tx, {job.queue for job in jobs})
        return batch_id, found

    def _wait_for(
        self, tx: Tx, job_id: int, job: NewJob, batch_id: int | None, tally: Tally, now: Any
    ) -> None:
        """Make a new job (of batch ``batch_id``) wait for its dependencies: those not
        finished yet hold it; one that failed or was cancelled already cancels it (policy
        'cancel')."""
        outcome = dependency_outcome(job, self.sql.dependency_statuses(tx, job.depends_on))
        if isinstance(outcome, str):
            self.sql.cancel_at_enqueue(tx, job_id, outcome, now)
            tally.move(job.queue, batch_id, "queued", "cancelled")
        elif outcome:
            self.sql.wait_for(tx, job_id, outcome, job.dependency_policy)
            tally.move(job.queue, batch_id, "queued", "waiting")

    async def insert_in_async_transaction(self, conn: Any, job: NewJob) -> int:
        """Insert one job in the caller's open transaction on an asyncio connection; an
        engine without ``capabilities.async_transaction`` refuses it."""
        raise TypeError(
            "this engine takes no async connection: pass a sqlite3 connection (the "
            "enqueue runs on a thread) or no connection"
        )

    # --- the claim and completion exchange --------------------------------------------------

    def exchange(
        self, steps: Sequence[StepValue], claim: ClaimRequest | None
    ) -> tuple[list[Any], list[JobRecord]]:
        """In one transaction: apply fenced steps to claimed jobs, then claim more.

        For each step: the value its statement returns (the new status, or the cancel flag),
        or None when the claim no longer owned the job and nothing changed. Then the rows
        of the jobs claimed (none when ``claim`` is None).
        """

        def body(tx: Tx) -> tuple[list[Any], list[JobRecord], bool]:
            now = self.bound_now()
            tally = Tally()
            results = self._apply_steps(tx, steps, tally, now)
            if claim is not None:
                self._expire(tx, tally, now)
            self._release_dependents(tx, tally, now)
            records = [] if claim is None else self._claim(tx, claim, now)
            for record in records:
                tally.move(record.queue, record.batch_id, "queued", "processing")
            self.write_tally(tx, tally)
            return results, records, self._notify_changes(tx, tally)

        what = "claim" if not steps else steps[0].kind.value
        results, records, wake = self.write(body, what)
        if wake:
            self.waker.notify()
        return results, records

    def _expire(self, tx: Tx, tally: Tally, now: float | None) -> None:
        """Cancel the queued and waiting jobs whose expiry has passed, before a claim could
        start one: a probe of the index of jobs that have an expiry when none is due; each
        expired job is cancelled once, whatever the number of claims."""
        for status in ("queued", "waiting"):
            for row in self.sql.all(tx, self.sql.EXPIRE_DUE, {"status": status, "now": now}):
                tally.changed(row, status)

    def _apply_steps(
        self, tx: Tx, steps: Sequence[StepValue], tally: Tally, now: float | None
    ) -> list[Any]:
        """Run each step's statement; completions without hooks go set-based."""
        results: list[Any] = [None] * len(steps)
        plain = [
            n
            for n, step in enumerate(steps)
            if isinstance(step, Complete) and step.on_complete is None
        ]
        done: set[int] = set()
        if len(plain) > 1:
            chosen: list[Complete] = [steps[n] for n in plain]  # type: ignore[misc]
            ids = [step.fence.id for step in chosen]
            if len(set(ids)) == len(ids):
                rows = self.sql.complete_many(tx, chosen, now)
                for n, job_id in zip(plain, ids, strict=True):
                    row = rows.get(job_id)
                    if row is not None:
                        results[n] = row[0]
                        tally.changed(row, "processing")
                done = set(plain)
        for n, step in enumerate(steps):
            if n in done:
                continue
            if isinstance(step, Complete) and step.on_complete is not None:
                row = self._complete_with_hook(tx, step, now)
            else:
                row = self.sql.step(tx, step, now)
            if row is not None:
                results[n] = row[0]
                if step.kind in STATUS_STEPS:
                    tally.changed(row, "processing")
        return results

    def _complete_with_hook(self, tx: Tx, step: Complete, now: float | None) -> Any:
        """Complete one job and run its on_complete hook in a savepoint: both are kept, or
        the attempt is recorded as failed with the hook's error and nothing the hook wrote
        stays."""
        assert step.on_complete is not None
        assert step.on_failure is not None
        try:
            with self.sql.savepoint(tx):
                row = self.sql.step(tx, step, now)
                if row is not None and row[0] == "completed":
                    step.on_complete(self.sql.hook_connection(tx))
        except Exception as exc:
            if self.sql.is_fault(exc):
                raise
            log.warning(
                "job %s: on_complete failed, the attempt counts as failed: %s", step.fence.id, exc
            )
            return self.sql.step(tx, step.on_failure(exc), now)
        return row

    def _release_dependents(self, tx: Tx, tally: Tally, now: float | None) -> None:
        """Count finished jobs off their dependents, level by level: a dependent cancelled
        because a dependency failed releases its own dependents in turn."""
        while tally.finished:
            finished, tally.finished = tally.finished, []
            for row in self.sql.release_dependents(tx, finished, now):
                tally.changed(row, "waiting")

    def _notify_changes(self, tx: Tx, tally: Tally) -> bool:
        """Wake workers (in this transaction, where the engine can) for jobs released from
        waiting, for a limited job that ended (a slot of its limit freed) and for waiters
        of a job that ended; whether anything is to be woken."""
        queues = set(tally.released)
        if tally.freed_limit:
            queues.add("(limits)")
        if tally.watched_ended:
            queues.add("(ended)")
        if queues:
            self.sql.notify(tx, queues)
        return bool(queues)

    def write_tally(self, tx: Tx, tally: Tally) -> None:
        """Write a transaction's count changes before it commits."""
        write_tally(self.sql, tx, tally)

    # --- claims ---------------------------------------------------------------------------

    def _claim(self, tx: Tx, claim: ClaimRequest, now: float | None) -> list[JobRecord]:
        """Limited jobs first, under their limits (counted inside this transaction, the keys
        locked where the engine needs it), then the plain claim for the rest."""
        if not claim.limits:
            return self.sql.claim(tx, claim, claim.limit, now)
        records: list[JobRecord] = []
        keys = self._limited_keys(tx, claim)
        if keys:
            at = self.now_in(tx, now)
            plan = self._plan_limited(tx, claim, claim.limit, at, keys)
            if plan.ids and self.sql.lock_limit_keys(tx, sorted(set(plan.keys))):
                # chosen on counts other claimers may change: choose again among the keys
                # now locked, on counts that hold
                plan = self._plan_limited(tx, claim, claim.limit, at, sorted(set(plan.keys)))
            if plan.ids:
                # stamped with the time the rate was counted at: started_at and the recorded
                # starts are the same instants
                records = self.sql.claim_ids(tx, plan.ids, claim, at)
                if plan.rated_keys:
                    self.sql.record_starts(tx, plan.rated_keys, at)
                    for key in sorted(set(plan.rated_keys)):
                        period = claim.limits[task_of_limit_key(key)].rate[1]  # type: ignore[index]
                        self.sql.forget_starts(tx, key, at - period)
        if len(records) < claim.limit:
            plain, hold = keys_for_unkeyed(
                self.sql.claim(tx, claim, claim.limit - len(records), now), claim.limits
            )
            if hold:
                self.sql.hold_for_limit(tx, hold)
            records += plain
        return records

    def _limited_keys(self, tx: Tx, claim: ClaimRequest) -> list[str]:
        """The limit keys holding queued jobs that the claim's limits govern, less the keys
        of a paused queue's own limit (all of whose jobs the claim would skip one by one;
        a task's key skips the jobs of paused queues in its statement)."""
        keys = [k for k in self.sql.limited_keys(tx) if task_of_limit_key(k) in claim.limits]
        if any(k.startswith(QUEUE_RULE_PREFIX) for k in keys):
            paused = {QUEUE_RULE_PREFIX + name for name in self.sql.paused_queues(tx)}
            keys = [k for k in keys if task_of_limit_key(k) not in paused]
        return keys

    def _plan_limited(
        self, tx: Tx, claim: ClaimRequest, want: int, now: float, keys: list[str]
    ) -> LimitedClaim:
        """``plan_limited_claim`` with this transaction's counts, among ``keys``."""
        if not keys:
            return LimitedClaim([], [], None)
        return plan_limited_claim(
            keys,
            self.sql.limit_running(tx),
            claim.limits,
            want,
            now,
            lambda rooms: self.sql.limit_candidates(tx, claim, rooms, now),
            lambda sinces: self.sql.recent_starts(tx, sinces),
        )

    def limited_due(self, claim: ClaimRequest) -> LimitedDue:
        """Whether a limited job could be claimed now, and when one next could."""

        def read(tx: Tx) -> LimitedDue:
            now = self.bound_now()
            at = self.now_in(tx, now)
            plan = self._plan_limited(tx, claim, 1, at, self._limited_keys(tx, claim))
            upcoming = self.sql.next_limited_run(tx, now)
            return LimitedDue(bool(plan.ids), plan.next_start, upcoming, at)

        return self.read(read, "limits")

    def limit_usage(self, limit: int) -> list[tuple[str, int, int, int]]:
        """Per limit key: queued, processing, and starts within the last hour."""

        def read(tx: Tx) -> list[tuple[str, int, int, int]]:
            since = self.now_in(tx, self.bound_now()) - 3600
            rows = self.sql.limit_usage(tx, limit)
            starts = self.sql.recent_starts(tx, {key: since for key, _, _ in rows})
            return [(key, q, p, len(starts.get(key, []))) for key, q, p in rows]

        return self.read(read, "limits")

    # --- leases ---------------------------------------------------------------------------

    def rescue_expired(
        self,
        error: str,
        renew: Sequence[Heartbeat] = (),
        backoff: Callable[[str, int], float] | None = None,
    ) -> list[RescuedJob]:
        """Take back jobs whose lease ended; ``renew`` (heartbeats of the caller's own
        running jobs) is applied first, in the same transaction, so that a worker never
        takes back a job it is still running. A job going back to the queue is due
        ``backoff(task, attempts)`` seconds later, as after a failed attempt."""

        def body(tx: Tx) -> list[RescuedJob]:
            now = self.bound_now()
            tally = Tally()
            self._apply_steps(tx, renew, tally, now)
            rows = self.sql.rescue_expired(tx, error, now)
            if backoff is not None:
                delays = [
                    (row.id, wait)
                    for row in rows
                    if row.status == "queued" and (wait := backoff(row.task, row.attempts)) > 0
                ]
                if delays:
                    self.sql.delay_jobs(tx, delays, now)
            for row in rows:
                tally.changed(
                    (
                        row.status,
                        row.queue,
                        row.batch_id,
                        row.id,
                        row.has_dependents,
                        row.limit_key,
                        row.watched,
                    ),
                    "processing",
                )
            self._release_dependents(tx, tally, now)
            self.write_tally(tx, tally)
            self.sql.notify(tx, {row.queue for row in rows if row.status == "queued"})
            self._notify_changes(tx, tally)
            return rows

        rescued = self.write(body, "rescue")
        if rescued:
            self.waker.notify()
        return rescued

    def next_lease_expiry(self) -> tuple[float | None, float]:
        """When the earliest lease of a processing job ends (None: none), and now."""
        return self.look(lambda tx: self.sql.next_lease_expiry(tx, self.bound_now()), "read")

    def next_run_at(self, queues: tuple[str, ...] | None) -> tuple[float | None, float]:
        """The earliest ``run_at`` of a queued job in ``queues`` (None: every queue), and
        now."""
        return self.look(lambda tx: self.sql.next_run_at(tx, queues, self.bound_now()), "read")

    # --- the operator's actions ---------------------------------------------------------

    def cancel(self, job_id: int) -> str | None:
        """Cancel a queued job or flag a running one; its status then, None if neither."""

        def body(tx: Tx) -> str | None:
            now = self.bound_now()
            found = self.sql.cancel(tx, job_id, now)
            if found is None:
                return None
            row, before = found
            if row[0] == "cancelled":
                tally = Tally()
                tally.changed(row, before)
                self._release_dependents(tx, tally, now)
                self.write_tally(tx, tally)
                self._notify_changes(tx, tally)
            return str(row[0])

        status = self.write(body, "cancel")
        if status == "cancelled":
            self.waker.notify()  # waiters of this job, and of the jobs it released
        return status

    def update_job(self, job_id: int, change: JobChange) -> str | None:
        """Change a queued or waiting job's priority, queue or due time; its status (changed
        only if queued or waiting), None if there is no such job. Counts follow a move to
        another queue; workers of a queued job's queue are woken."""

        def body(tx: Tx) -> str | None:
            before = self.sql.one(tx, self.sql.LOCK_JOB_STATE, {"id": job_id})
            if before is None:
                return None
            status, queue = str(before[0]), str(before[1])
            if status not in ("queued", "waiting"):
                return status
            params = {
                "id": job_id,
                "priority": change.priority,
                "queue": change.queue,
                "delay": change.delay,
                "run_at": change.run_at,
                "note": change.note,
                "now": self.bound_now(),
            }
            self.sql.one(tx, self.sql.UPDATE_WAITING, params)
            if change.queue is not None and change.queue != queue:
                tally = Tally()
                tally.move(queue, None, status, None)
                tally.move(change.queue, None, None, status)
                self.write_tally(tx, tally)
            if status == "queued":
                self.sql.notify(tx, {change.queue or queue})
            return status

        status = self.write(body, "update")
        if status == "queued":
            self.waker.notify()
        return status

    def retry(self, job_ids: Sequence[int]) -> list[int]:
        """Queue failed or cancelled jobs again with fresh attempts; the ids re-queued."""

        def body(tx: Tx) -> list[int]:
            rows = self.sql.retry(tx, job_ids, self.bound_now())
            tally = Tally()
            for _, old, queue, batch_id in rows:
                tally.move(queue, batch_id, old, "queued")
            self.write_tally(tx, tally)
            self.sql.notify(tx, {row[2] for row in rows})
            return [int(row[0]) for row in rows]

        try:
            done = self.write(body, "retry")
        except HeldKey as held:
            job_id, shown = held.job_id, held.shown
            key = self.look(lambda tx: self.sql.unique_key(tx, job_id), "retry")
            raise DuplicateJob(
                f"job {shown} cannot be retried: another queued or processing job "
                f"holds its unique key {key!r}"
            ) from None
        if done:
            self.waker.notify()
        return done

    def purge(self, older_than: float, dead_after: float) -> int:
        """Delete finished jobs older than ``older_than`` seconds, a chunk per transaction;
        then batches with no job left and none queued or processing, and the rows of
        workers that stopped or went silent (for ``dead_after`` seconds) before the cutoff.
        Counts by queue drop the purged jobs; batch counts keep them. The job count."""
        now = self.now()
        cutoff, dead_before = now - older_than, now - dead_after
        chunk = self.sql.purge_chunk

        def delete_chunk(tx: Tx) -> int:
            tally = Tally()
            deleted = 0
            for queue, status, count in self.sql.purge_finished(tx, cutoff, chunk):
                tally.queues[queue, status] = tally.queues.get((queue, status), 0) - count
                deleted += count
            self.write_tally(tx, tally)
            return deleted

        total = 0
        while True:
            deleted = self.write(delete_chunk, "purge")
            total += deleted
            if deleted < chunk:
                break

        def tidy(tx: Tx) -> None:
            self.sql.purge_batches(tx, cutoff, chunk)
            tx.execute(self.sql.PURGE_WORKERS, {"cutoff": cutoff, "dead_before": dead_before})  # type: ignore[attr-defined]

        self.write(tidy, "purge")
        return total

    # --- paused queues -------------------------------------------------------------------

    def pause_queue(self, name: str) -> bool:
        """Pause a queue (the claims leave it out) and wake the workers; False if it was
        paused already."""
        return self._set_paused(name, self.sql.PAUSE_QUEUE, "pause")

    def resume_queue(self, name: str) -> bool:
        """Resume a paused queue and wake the workers; False if it was not paused."""
        return self._set_paused(name, self.sql.RESUME_QUEUE, "resume")

    def _set_paused(self, name: str, statement: str, what: str) -> bool:
        """Pause or resume in one write that wakes the workers as an enqueue does (a NOTIFY
        of the queue, or the commit to the file, and this process's waker): the idle ones
        claim a resumed backlog at once."""

        def body(tx: Tx) -> bool:
            row = self.sql.one(tx, statement, {"name": name, "now": self.bound_now()})
            if row is not None:
                self.sql.notify(tx, {name})
            return row is not None

        changed = self.write(body, what)
        if changed:
            self.waker.notify()
        return changed

    def paused_queues(self) -> dict[str, float]:
        """The paused queues by name, in name order: when each was paused."""
        return self.look(self.sql.paused_queues, "read")

    # --- waiting --------------------------------------------------------------------------

    def watch(self, job_id: int) -> str | None:
        """Mark a job as waited for; its status, or None if there is no such job."""
        row = self.write(lambda tx: self.sql.one(tx, self.sql.WATCH, {"id": job_id}), "wait")
        return None if row is None else str(row[0])

    def watch_batch(self, batch_id: int) -> None:
        """Mark every unfinished job of a batch as waited for."""
        self.write(
            lambda tx: self.sql.run(tx, self.sql.WATCH_BATCH, {"batch_id": batch_id}), "wait"
        )

    # --- schedules ------------------------------------------------------------------------

    def declare_schedules(self, schedules: Sequence[tuple[str, str, str, str]]) -> None:
        """Record the schedules a worker runs."""
        now = self.bound_now()
        self.write(lambda tx: self.sql.declare_schedules(tx, schedules, now), "declare schedules")

    def last_slots(self) -> dict[str, float | None]:
        """The latest slot each recorded schedule created a job for."""
        rows = self.look(lambda tx: self.sql.all(tx, self.sql.LAST_SLOTS, {}), "read")
        return {str(row[0]): _float_or_none(row[1]) for row in rows}

    def fire_slot(self, name: str, slot: float, job: NewJob) -> int | None:
        """Create the slot's job unless another worker did: one job per slot."""

        def body(tx: Tx) -> int | None:
            if self.sql.one(tx, self.sql.TAKE_SLOT, {"name": name, "slot": slot}) is None:
                return None
            (job_id,) = self.sql.insert_jobs(tx, [job], None, self.bound_now())
            if job_id is None:  # its unique key is held by an active job: that one stands
                return None
            tally = Tally()
            tally.move(job.queue, None, None, "queued")
            self.write_tally(tx, tally)
            self.sql.run(tx, self.sql.SLOT_JOB, {"name": name, "job_id": job_id})
            self.sql.notify(tx, {job.queue})
            return job_id

        job_id = self.write(body, "schedule")
        if job_id is not None:
            self.waker.notify()
        return job_id

    def schedules(self) -> list[tuple[Any, ...]]:
        """Recorded schedules, by name."""
        return [
            tuple(row) for row in self.look(lambda tx: self.sql.all(tx, self.sql.SCHEDULES, {}))
        ]

    # --- workers --------------------------------------------------------------------------

    def register_worker(self, worker: WorkerRecord) -> None:
        """Record a worker that starts (or starts again under the same id)."""
        params = {
            "id": worker.id,
            "hostname": worker.hostname,
            "pid": worker.pid,
            "queues": worker.queues,
            "concurrency": worker.concurrency,
        }
        self.write(
            lambda tx: self.sql.run(
                tx, self.sql.REGISTER_WORKER, {**params, "now": self.bound_now()}
            ),
            "register worker",
        )

    def report_worker(self, worker: WorkerRecord) -> None:
        """Update a worker's row (last seen, counts, lock waits, stop time); write it anew
        if it is missing (purged while the worker ran). Its deltas go to the current
        minute's throughput in the same transaction, and rows past a week go."""

        def body(tx: Tx) -> None:
            now = self.bound_now()
            started_at = worker.started_at
            if started_at is None and now is not None:
                started_at = now
            stopped_at = self.now_in(tx, now) if worker.stopped else None
            self.sql.run(tx, self.sql.REPORT_WORKER, worker.row(started_at, now, stopped_at))
            if worker.completed_delta or worker.failed_delta:
                self.sql.add_throughput(
                    tx, worker.completed_delta, worker.failed_delta, now, THROUGHPUT_KEPT
                )

        self.write(body, "report worker")

    def workers(self, limit: int) -> list[WorkerInfo]:
        """The workers, most recently started first."""
        rows = self.look(lambda tx: self.sql.all(tx, self.sql.LIST_WORKERS, {"limit": limit}))
        return [self.sql.worker_info(row) for row in rows]

    # --- reads ----------------------------------------------------------------------------

    def get_job(self, job_id: int) -> JobRecord | None:
        """The job's row, or None."""
        row = self.look(lambda tx: self.sql.one(tx, self.sql.GET_JOB, {"id": job_id}))
        return None if row is None else self.sql.record(row)

    def job_status(self, job_id: int) -> str | None:
        """The job's status, or None if there is no such job."""
        row = self.look(lambda tx: self.sql.one(tx, self.sql.JOB_STATUS, {"id": job_id}))
        return None if row is None else str(row[0])

    def cancel_requested(self, job_id: int) -> bool:
        """True if someone asked to cancel the job."""
        row = self.look(lambda tx: self.sql.one(tx, self.sql.CANCEL_REQUESTED, {"id": job_id}))
        return bool(row and row[0])

    def job_history(self, job_id: int) -> tuple[JobRecord, str | None] | None:
        """The job's row and its history (JSON text, None: nothing recorded), or None."""
        row = self.look(lambda tx: self.sql.one(tx, self.sql.JOB_WITH_HISTORY, {"id": job_id}))
        return None if row is None else (self.sql.record(row[:22]), row[22])

    def list_jobs(self, filters: dict[str, Any], oldest_first: bool) -> list[JobRecord]:
        """Rows of the jobs matching every filter given, by id in either direction."""
        statement = self.sql.list_jobs(oldest_first, listing_by(filters))
        rows = self.look(lambda tx: self.sql.all(tx, statement, filters))
        return [self.sql.record(row) for row in rows]

    def failed_ids(self, filters: dict[str, Any], after: int, limit: int) -> list[int]:
        """A page of failed jobs' ids after ``after``, in id order, matching ``filters``."""
        params = {**filters, "after": after, "limit": limit}
        rows = self.look(lambda tx: self.sql.all(tx, self.sql.FAILED_IDS, params))
        return [int(row[0]) for row in rows]

    def max_job_id(self) -> int | None:
        """The newest job's id, or None."""
        row = self.look(lambda tx: self.sql.one(tx, self.sql.MAX_JOB_ID, {}))
        return None if row is None or row[0] is None else int(row[0])

    def batches(self, limit: int, before: int | None) -> list[BatchProgress]:
        """Batches below ``before`` (None: any), newest first."""
        params = {"limit": limit, "before": before}
        rows = self.look(lambda tx: self.sql.all(tx, self.sql.BATCHES, params))
        return [BatchProgress(*row) for row in rows]

    def batch(self, batch_id: int) -> BatchProgress | None:
        """The batch's counts, or None."""
        row = self.look(lambda tx: self.sql.one(tx, self.sql.BATCH, {"id": batch_id}))
        return None if row is None else BatchProgress(*row)

    def latest_batch_id(self) -> int | None:
        """The most recent batch's id, or None."""
        row = self.look(lambda tx: self.sql.one(tx, self.sql.LATEST_BATCH_ID, {}))
        return None if row is None or row[0] is None else int(row[0])

    def batch_jobs(self, batch_id: int) -> list[JobRecord]:
        """Rows of the batch's jobs in enqueue order."""
        rows = self.look(lambda tx: self.sql.all(tx, self.sql.BATCH_JOBS, {"batch_id": batch_id}))
        return [self.sql.record(row) for row in rows]

    def dependencies(self, job_id: int) -> tuple[list[int], list[int]] | None:
        """What a job waits for and what waits for it; None if there is no such job."""

        def read(tx: Tx) -> tuple[list[int], list[int]] | None:
            params = {"id": job_id}
            if self.sql.one(tx, self.sql.JOB_STATUS, params) is None:
                return None
            waits_on = [int(row[0]) for row in self.sql.all(tx, self.sql.WAITS_ON, params)]
            waited_by = [int(row[0]) for row in self.sql.all(tx, self.sql.WAITED_ON_BY, params)]
            return waits_on, waited_by

        return self.read(read, "dependencies")

    def throughput(self, minutes: int) -> tuple[int, list[tuple[int, int, int]]]:
        """The current minute by the engine's clock, and the rows of the last ``minutes``
        minutes up to it."""
        return self.look(lambda tx: self.sql.throughput(tx, minutes, self.bound_now()))

    def snapshot(self, alive_window: float) -> Snapshot:
        """Counts by (queue, status), the earliest run_at, and the workers' totals."""
        return self.read(lambda tx: self.sql.snapshot(tx, alive_window, self.bound_now()), "stats")


def write_tally(sql: Statements[Tx], tx: Tx, tally: Tally) -> None:
    """Write a transaction's count changes (by queue, then by batch) before it commits."""
    changed = tally.changed_queues()
    if changed:
        sql.add_to_counts(tx, changed)
    if tally.batches:
        sql.add_to_batches(tx, tally.batches)


def dependency_outcome(job: NewJob, statuses: dict[int, str]) -> str | list[int]:
    """What a new job's dependencies (their statuses by id) make of it: the reason it is
    cancelled at once (one failed or was cancelled, and its policy is 'cancel'), else the
    ids it waits for (empty: none left, it is queued). JobNotFound if one does not exist."""
    missing = [dep for dep in job.depends_on if dep not in statuses]
    if missing:
        raise JobNotFound(
            f"depends_on: no job has id {', '.join(map(str, missing))} (nothing was enqueued)"
        )
    if job.dependency_policy == "cancel":
        for dep in job.depends_on:
            if statuses[dep] in ("failed", "cancelled"):
                return f"cancelled: dependency {dep} did not complete ({statuses[dep]})"
    return [dep for dep in dict.fromkeys(job.depends_on) if statuses[dep] not in FINISHED_STATUSES]


def listing_by(filters: dict[str, Any]) -> str:
    """What a listing of jobs reads, every engine alike: a batch's jobs through the batch
    index ("batch"), failed or cancelled ones through the index of those ("finished_badly"),
    else the primary key ("id"); so that a page stays cheap however many jobs completed."""
    if filters.get("batch_id") is not None:
        return "batch"
    if filters.get("status") in ("failed", "cancelled"):
        return "finished_badly"
    return "id"


def _float_or_none(value: Any) -> float | None:
    return None if value is None else float(value)
