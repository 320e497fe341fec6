"""What an engine provides to ``Store``: its statements, one method (or named SQL text) per
statement, with typed parameters. Engines own SQL and type conversions; the order of the
statements in each transaction, and what their rows mean, belong to ``Store``.

SQL text named here takes the same named parameters on every engine (``:id`` on SQLite,
``%(id)s`` on PostgreSQL) and returns the same columns; ``now`` may be None where the
engine reads its database's clock.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from types import ModuleType
from typing import Any, Generic, TypeVar

from ..job import WorkerInfo
from .base import (
    ClaimRequest,
    Complete,
    JobRecord,
    NewJob,
    RescuedJob,
    Snapshot,
    Step,
    StepValue,
    step_parameters,
)

Tx = TypeVar("Tx")
Row = Sequence[Any]


class HeldKey(Exception):
    """A job to retry has a unique key another active job holds (the write is undone)."""

    def __init__(self, job_id: int, shown: str | None = None) -> None:
        super().__init__(job_id)
        self.job_id = job_id
        #: How the job is named in the error (several jobs: "?").
        self.shown = shown if shown is not None else str(job_id)


#: The statements every engine's ``queries`` module defines under these names, with the
#: same parameters and columns: a subclass names its module (``queries=``) and gets them.
SHARED_SQL = (
    "GET_JOB",
    "JOB_WITH_HISTORY",
    "JOB_STATUS",
    "CANCEL_REQUESTED",
    "MAX_JOB_ID",
    "FAILED_IDS",
    "BATCH",
    "BATCHES",
    "LATEST_BATCH_ID",
    "BATCH_JOBS",
    "WAITS_ON",
    "WAITED_ON_BY",
    "WATCH",
    "WATCH_BATCH",
    "LAST_SLOTS",
    "TAKE_SLOT",
    "SLOT_JOB",
    "SCHEDULES",
    "REGISTER_WORKER",
    "REPORT_WORKER",
    "LIST_WORKERS",
    "PURGE_WORKERS",
    "UNIQUE_KEY",
    "LOCK_JOB_STATE",
    "UPDATE_WAITING",
    "SET_EXPIRY",
    "EXPIRE_DUE",
    "PAUSE_QUEUE",
    "RESUME_QUEUE",
    "PAUSED_QUEUES",
)

#: The statement of each kind of step, by its name in every engine's ``queries`` module.
STEP_SQL = {
    Step.COMPLETE: "COMPLETE",
    Step.FAIL: "FAIL",
    Step.RELEASE: "RELEASE",
    Step.ABANDON: "ABANDON",
    Step.HEARTBEAT: "HEARTBEAT",
    Step.PROGRESS: "SET_PROGRESS",
    Step.DEFER: "DEFER_UNKNOWN",
    Step.SNOOZE: "SNOOZE",
}


class Statements(Generic[Tx]):
    """One engine's statements; ``Tx`` is its connection inside a transaction."""

    def __init_subclass__(cls, queries: ModuleType | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if queries is not None:
            cls.queries = queries
            for name in SHARED_SQL:
                setattr(cls, name, getattr(queries, name))
            cls.step_sql = {kind: getattr(queries, name) for kind, name in STEP_SQL.items()}

    # SQL text with the same parameters and columns on every engine
    GET_JOB: str
    JOB_WITH_HISTORY: str
    JOB_STATUS: str
    CANCEL_REQUESTED: str
    MAX_JOB_ID: str
    FAILED_IDS: str
    BATCH: str
    BATCHES: str
    LATEST_BATCH_ID: str
    BATCH_JOBS: str
    WAITS_ON: str
    WAITED_ON_BY: str
    WATCH: str
    WATCH_BATCH: str
    LAST_SLOTS: str
    TAKE_SLOT: str
    SLOT_JOB: str
    SCHEDULES: str
    REGISTER_WORKER: str
    REPORT_WORKER: str
    LIST_WORKERS: str
    PURGE_WORKERS: str
    UNIQUE_KEY: str
    LOCK_JOB_STATE: str
    UPDATE_WAITING: str
    SET_EXPIRY: str
    EXPIRE_DUE: str
    PAUSE_QUEUE: str
    RESUME_QUEUE: str
    PAUSED_QUEUES: str
    #: Finished jobs deleted per purge transaction.
    purge_chunk: int
    #: The engine's module of SQL text.
    queries: ModuleType
    #: The statement of each kind of step.
    step_sql: dict[Step, str]

    # --- running SQL text ------------------------------------------------------------------

    def one(self, tx: Tx, statement: str, params: dict[str, Any]) -> Row | None:
        """The first row of a statement, or None."""
        row: Row | None = tx.execute(statement, params).fetchone()  # type: ignore[attr-defined]
        return row

    def all(self, tx: Tx, statement: str, params: dict[str, Any]) -> list[Row]:
        """Every row of a statement."""
        rows: list[Row] = tx.execute(statement, params).fetchall()  # type: ignore[attr-defined]
        return rows

    def run(self, tx: Tx, statement: str, params: dict[str, Any]) -> None:
        """Run a statement for its effect."""
        tx.execute(statement, params)  # type: ignore[attr-defined]

    def list_jobs(self, oldest_first: bool, by: str) -> str:
        """The listing statement for the filters ``by`` names (see ``listing_by``)."""
        statement: str = self.queries.list_jobs(oldest_first, by)
        return statement

    # --- rows as records --------------------------------------------------------------------

    def record(self, row: Row) -> JobRecord:
        """A job's row (``GET_JOB``'s columns) as a record."""
        raise NotImplementedError

    def worker_info(self, row: Row) -> WorkerInfo:
        """A worker's row (``LIST_WORKERS``'s columns) as a record."""
        raise NotImplementedError

    def database_now(self, tx: Tx) -> float:
        """The database's clock (engines that bind the process's clock never need it)."""
        raise NotImplementedError

    # --- inserting --------------------------------------------------------------------------

    def insert_batch(self, tx: Tx, name: str | None, now: float | None) -> int:
        """A new batch's id."""
        raise NotImplementedError

    def insert_jobs(
        self, tx: Tx, jobs: Sequence[NewJob], batch_id: int | None, now: float | None
    ) -> list[int | None]:
        """Insert jobs, in order; None for a job whose unique key an active job holds."""
        raise NotImplementedError

    def active_jobs_with_keys(self, tx: Tx, keys: list[str]) -> dict[str, int]:
        """The active jobs holding these unique keys, by key."""
        raise NotImplementedError

    def dependency_statuses(self, tx: Tx, ids: Sequence[int]) -> dict[int, str]:
        """Flag jobs as having dependents; their statuses (a missing id is left out)."""
        raise NotImplementedError

    def cancel_at_enqueue(self, tx: Tx, job_id: int, error: str, now: float | None) -> None:
        """Cancel a new job whose dependency already failed."""
        raise NotImplementedError

    def wait_for(self, tx: Tx, job_id: int, dependencies: list[int], policy: str) -> None:
        """Make a new job wait for unfinished dependencies."""
        raise NotImplementedError

    def release_dependents(
        self, tx: Tx, finished: list[tuple[int, bool]], now: float | None
    ) -> list[Row]:
        """Count (id, completed?) of finished jobs off their dependents and forget those
        dependencies; the dependents that changed status, as status-changing rows."""
        raise NotImplementedError

    # --- claims and steps ---------------------------------------------------------------

    def claim(self, tx: Tx, claim: ClaimRequest, limit: int, now: float | None) -> list[JobRecord]:
        """Claim up to ``limit`` due jobs without a limit key, best first."""
        raise NotImplementedError

    def step(self, tx: Tx, step: StepValue, now: float | None) -> Row | None:
        """Apply one fenced step: its row (status first), or None if the claim is lost."""
        params = step_parameters(step)
        params["now"] = now
        return self.one(tx, self.step_sql[step.kind], params)

    def complete_many(self, tx: Tx, steps: list[Complete], now: float | None) -> dict[int, Row]:
        """Complete many jobs set-based; by job id, the status-changing rows of those the
        claims still owned."""
        raise NotImplementedError

    def savepoint(self, tx: Tx) -> AbstractContextManager[None]:
        """A savepoint: rolled back (and the error raised on) if its block raises."""
        raise NotImplementedError

    def hook_connection(self, tx: Tx) -> Any:
        """The connection an on_complete hook gets: it can read and write, not commit."""
        raise NotImplementedError

    def is_fault(self, error: BaseException) -> bool:
        """True for a database fault (busy, lost connection) that must undo and retry the
        whole transaction, rather than count as the hook's failure."""
        raise NotImplementedError

    def rescue_expired(self, tx: Tx, error: str, now: float | None) -> list[RescuedJob]:
        """Take back jobs whose lease ended."""
        raise NotImplementedError

    def delay_jobs(self, tx: Tx, delays: Sequence[tuple[int, float]], now: float | None) -> None:
        """Make queued jobs due ``delay`` seconds from now: (id, delay) pairs."""
        raise NotImplementedError

    def next_lease_expiry(self, tx: Tx, now: float | None) -> tuple[float | None, float]:
        """When the earliest lease ends (None: none), and now."""
        raise NotImplementedError

    def next_run_at(
        self, tx: Tx, queues: tuple[str, ...] | None, now: float | None
    ) -> tuple[float | None, float]:
        """The earliest run_at of a queued job in ``queues`` (None: all), and now."""
        raise NotImplementedError

    # --- limits --------------------------------------------------------------------------

    def limited_keys(self, tx: Tx) -> list[str]:
        """The limit keys that have queued jobs."""
        raise NotImplementedError

    def lock_limit_keys(self, tx: Tx, keys: list[str]) -> bool:
        """Serialize with other claims of these keys until the transaction ends; True if
        the counts read before may have changed (then they are read again)."""
        raise NotImplementedError

    def limit_running(self, tx: Tx) -> dict[str, int]:
        """Processing jobs per limit key."""
        raise NotImplementedError

    def limit_candidates(
        self, tx: Tx, claim: ClaimRequest, rooms: dict[str, int], now: float
    ) -> list[tuple[int, int, float, str]]:
        """Up to ``room`` due jobs of each key: (id, priority, run_at, key), best first."""
        raise NotImplementedError

    def recent_starts(self, tx: Tx, sinces: dict[str, float]) -> dict[str, list[float]]:
        """Each key's recorded starts after its time, oldest first."""
        raise NotImplementedError

    def claim_ids(self, tx: Tx, ids: list[int], claim: ClaimRequest, now: float) -> list[JobRecord]:
        """Claim the chosen limited jobs."""
        raise NotImplementedError

    def record_starts(self, tx: Tx, keys: list[str], at: float) -> None:
        """Record one start per key given (a key may repeat)."""
        raise NotImplementedError

    def forget_starts(self, tx: Tx, key: str, since: float) -> None:
        """Forget a key's starts older than its rate's period."""
        raise NotImplementedError

    def hold_for_limit(self, tx: Tx, holds: list[tuple[int, str]]) -> None:
        """Give claimed jobs of limited tasks their key and put them back."""
        raise NotImplementedError

    def next_limited_run(self, tx: Tx, now: float | None) -> float | None:
        """When the next limited job not due yet becomes due (None: none)."""
        raise NotImplementedError

    def limit_usage(self, tx: Tx, limit: int) -> list[tuple[str, int, int]]:
        """Per limit key (up to ``limit``): queued and processing jobs."""
        raise NotImplementedError

    # --- counts and wake-ups ----------------------------------------------------------------

    def add_to_counts(self, tx: Tx, changed: list[tuple[str, str, int]]) -> None:
        """Add (queue, status, delta) to the counts by queue, in key order."""
        raise NotImplementedError

    def add_to_batches(self, tx: Tx, batches: dict[int, dict[str, int]]) -> None:
        """Add deltas to batches' counts."""
        raise NotImplementedError

    def notify(self, tx: Tx, queues: set[str]) -> None:
        """Wake other processes' workers of ``queues`` when the transaction commits (an
        engine whose wake-up needs no statement does nothing)."""

    # --- the operator's actions -----------------------------------------------------------

    def cancel(self, tx: Tx, job_id: int, now: float | None) -> tuple[Row, str] | None:
        """Cancel a job or flag it running: its status-changing row and its status before;
        None if it was neither queued, waiting nor processing."""
        raise NotImplementedError

    def retry(
        self, tx: Tx, job_ids: Sequence[int], now: float | None
    ) -> list[tuple[int, str, str, int | None]]:
        """Queue failed or cancelled jobs again: (id, old status, queue, batch id) of each;
        HeldKey if another active job holds one's unique key."""
        raise NotImplementedError

    def unique_key(self, tx: Tx, job_id: int) -> str | None:
        """A job's unique key."""
        row = self.one(tx, self.UNIQUE_KEY, {"id": job_id})
        return None if row is None else row[0]

    def paused_queues(self, tx: Tx) -> dict[str, float]:
        """The paused queues, by name: when each was paused."""
        return {str(row[0]): float(row[1]) for row in self.all(tx, self.PAUSED_QUEUES, {})}

    def purge_finished(self, tx: Tx, cutoff: float, chunk: int) -> list[tuple[str, str, int]]:
        """Delete up to ``chunk`` jobs finished before ``cutoff``: (queue, status, count)."""
        raise NotImplementedError

    def purge_batches(self, tx: Tx, cutoff: float, chunk: int) -> None:
        """Delete batches created before ``cutoff`` with no job left and none active."""
        raise NotImplementedError

    # --- schedules, workers, stats ----------------------------------------------------------

    def declare_schedules(
        self, tx: Tx, schedules: Sequence[tuple[str, str, str, str]], now: float | None
    ) -> None:
        """Record (name, task, spec, timezone) of schedules."""
        raise NotImplementedError

    def add_throughput(
        self, tx: Tx, completed: int, failed: int, now: float | None, keep: float
    ) -> None:
        """Add to the current minute's throughput; forget minutes older than ``keep``."""
        raise NotImplementedError

    def throughput(
        self, tx: Tx, minutes: int, now: float | None
    ) -> tuple[int, list[tuple[int, int, int]]]:
        """The current minute, and (minute, completed, failed) of the last ``minutes``."""
        raise NotImplementedError

    def snapshot(self, tx: Tx, alive_window: float, now: float | None) -> Snapshot:
        """Counts by (queue, status), the earliest run_at (paused queues left out), now, the
        workers' totals and the paused queues (``paused_queues``)."""
        raise NotImplementedError
