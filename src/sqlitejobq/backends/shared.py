"""What every engine shares below the seam: the write path's retry policy and lock metrics,
the tally of count changes a transaction writes before it commits, engine options."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from tenacity import (
    RetryCallState,
    RetryError,
    Retrying,
    retry_if_exception,
    stop_after_delay,
    wait_random_exponential,
)

from ..errors import DatabaseBusy, InvalidArgument, SqliteJobQError
from ..job import LockStats
from .base import FINISHED_STATUSES

log = logging.getLogger("sqlitejobq")

T = TypeVar("T")


class LockMetrics:
    """Counters of waiting for the database, shared by every thread of one backend: write
    transactions, time spent waiting to begin them, retries, and bounds spent."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.writes = 0
        self.wait = 0.0
        self.wait_max = 0.0
        self.retries = 0
        self.busy_errors = 0

    def record_write(self, waited: float) -> None:
        """Count one write transaction and how long it waited to begin."""
        with self._lock:
            self.writes += 1
            self.wait += waited
            if waited > self.wait_max:
                self.wait_max = waited

    def record_retry(self, state: RetryCallState) -> None:
        """Count one retry and the wait before it (tenacity's before_sleep)."""
        sleep = state.next_action.sleep if state.next_action is not None else 0.0
        with self._lock:
            self.retries += 1
            self.wait += sleep
        log.debug("database busy, retry %d in %.3fs", state.attempt_number, sleep)

    def record_first_busy(self) -> None:
        """Count the error that hands an operation over to the retry policy."""
        with self._lock:
            self.retries += 1

    def record_busy_error(self) -> None:
        """Count an operation that gave up: the fault lasted past the time bound."""
        with self._lock:
            self.busy_errors += 1

    def snapshot(self) -> LockStats:
        """The counters so far, as one consistent value."""
        with self._lock:
            return LockStats(
                writes=self.writes,
                lock_wait_seconds=self.wait,
                lock_wait_max_seconds=self.wait_max,
                lock_retries=self.retries,
                busy_errors=self.busy_errors,
            )


class RetryPolicy:
    """The one retry policy of an engine: only on the faults that pass (``transient``),
    full-jitter exponential waits, bounded in time. When the bound is spent the caller gets
    DatabaseBusy within ``timeout`` of the call (plus one statement's time), or, when the
    last fault says the database cannot be reached at all (``unreachable``), the error
    ``translate`` names for it; every other error becomes the library error it names.

    ``waits_for`` lets the engine cut its own waits to what is left.
    """

    def __init__(
        self,
        timeout: float,
        metrics: LockMetrics,
        *,
        transient: Callable[[BaseException], bool],
        translate: Callable[[BaseException, str], SqliteJobQError],
        engine_errors: tuple[type[BaseException], ...],
        exhausted: str = "the database stayed busy",
        unreachable: Callable[[BaseException], bool] | None = None,
    ) -> None:
        self.timeout = timeout
        self.exhausted = exhausted
        self.unreachable = unreachable
        self.metrics = metrics
        self.transient = transient
        self.translate = translate
        self.engine_errors = engine_errors
        self._retrying = Retrying(
            retry=retry_if_exception(transient),
            wait=wait_random_exponential(multiplier=0.002, max=0.5),
            before_sleep=metrics.record_retry,
        )

    def __call__(self, fn: Callable[[], T], what: str, conn: Any = None) -> T:
        """Run ``fn`` under the policy; ``what`` names the operation in error messages,
        ``conn`` the connection ``fn`` uses (for ``waits_for``)."""
        # the uncontended case pays for one plain call; the policy takes over at the
        # first transient error, with what is left of the time bound
        deadline = time.monotonic() + self.timeout
        try:
            return fn()
        except self.engine_errors as exc:
            if not self.transient(exc):
                raise self.translate(exc, what) from exc
            self.metrics.record_first_busy()
            if time.monotonic() >= deadline:  # the first attempt spent the bound: no second
                self.metrics.record_busy_error()
                raise self._gave_up(exc, what, 1) from exc
        wait = self._retrying.wait
        before_retry, after_retries = self.waits_for(conn)

        def until_deadline(state: RetryCallState) -> float:
            return max(0.0, min(wait(state), deadline - time.monotonic()))

        def cut(state: RetryCallState) -> None:
            if before_retry is not None:
                before_retry(deadline - time.monotonic())

        try:
            return self._retrying.copy(
                stop=stop_after_delay(max(0.0, deadline - time.monotonic())),
                wait=until_deadline,
                before=cut,
            )(fn)
        except RetryError as exc:
            self.metrics.record_busy_error()
            last = exc.last_attempt.exception()
            assert last is not None  # a RetryError ends a run of failed attempts
            raise self._gave_up(last, what, exc.last_attempt.attempt_number + 1) from last
        except self.engine_errors as exc:
            raise self.translate(exc, what) from exc
        finally:
            if after_retries is not None:
                after_retries()

    def _gave_up(self, last: BaseException, what: str, attempts: int) -> SqliteJobQError:
        """The error once the bound is spent: the database is gone, or it stayed busy."""
        if self.unreachable is not None and self.unreachable(last):
            return self.translate(last, what)  # not busy: gone
        return DatabaseBusy(
            f"{what}: {self.exhausted} for more than {self.timeout:g}s "
            f"({attempts} attempt{'s' if attempts != 1 else ''}; last error: {last})"
        )

    def waits_for(
        self, conn: Any
    ) -> tuple[Callable[[float], None] | None, Callable[[], None] | None]:
        """Once retries begin: what to run before each retry (given the seconds left) and
        after the last, e.g. to cut the engine's own lock wait on ``conn``."""
        return None, None


# --- counts kept beside the jobs ---------------------------------------------------------


BATCH_COLUMNS = ("total", "queued", "processing", "completed", "failed", "cancelled", "waiting")
#: The statuses a job ends in: its dependents are released when it reaches one.


class Tally:
    """How one transaction moved jobs between statuses; each engine writes it before the
    transaction commits, so the counts by queue and by batch change with the jobs."""

    __slots__ = ("batches", "finished", "freed_limit", "queues", "released", "watched_ended")

    def __init__(self) -> None:
        self.queues: dict[tuple[str, str], int] = {}
        self.batches: dict[int, dict[str, int]] = {}
        #: (id, completed?) of jobs with dependents that reached an end state
        self.finished: list[tuple[int, bool]] = []
        #: a limited job left processing: a slot freed for workers waiting on its limit
        self.freed_limit = False
        #: queues where waiting jobs became queued
        self.released: set[str] = set()
        #: a job someone waits for (``Queue.wait``) reached an end state
        self.watched_ended = False

    def changed(self, row: Sequence[Any], old: str | None) -> None:
        """One job moved from ``old``, as a status-changing statement returned it:
        (status, queue, batch_id, id, has_dependents, limit_key, watched)."""
        new, queue, batch_id, job_id, dependents, limit_key, watched = row[:7]
        if watched and new in FINISHED_STATUSES:
            self.watched_ended = True
        self.move(queue, batch_id, old, new)
        if dependents and new in FINISHED_STATUSES and old not in FINISHED_STATUSES:
            self.finished.append((job_id, new == "completed"))
        if limit_key is not None and old == "processing" and new != "processing":
            self.freed_limit = True
        if old == "waiting" and new == "queued":
            self.released.add(queue)

    def move(self, queue: str, batch_id: int | None, old: str | None, new: str | None) -> None:
        """One job went from status ``old`` to ``new`` (None: it was inserted or deleted)."""
        if old == new:
            return
        if old is not None:
            self.queues[queue, old] = self.queues.get((queue, old), 0) - 1
        if new is not None:
            self.queues[queue, new] = self.queues.get((queue, new), 0) + 1
        if batch_id is not None and new is not None:
            counts = self.batches.setdefault(batch_id, dict.fromkeys(BATCH_COLUMNS, 0))
            counts[new] += 1
            if old is None:
                counts["total"] += 1
            else:
                counts[old] -= 1

    def changed_queues(self) -> list[tuple[str, str, int]]:
        """(queue, status, delta) of every count that changed, sorted by key."""
        changed = [(q, s, n) for (q, s), n in self.queues.items() if n]
        if len(changed) > 1:
            changed.sort()
        return changed


def options_of(engine: str, options: dict[str, Any], known: Sequence[str]) -> None:
    """Refuse an option the engine does not take, naming the ones it does."""
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise InvalidArgument(
            f"unknown option(s) for the {engine} engine: {', '.join(unknown)} (it takes: "
            f"{', '.join(sorted(known))})"
        )


class LentConnection:
    """A connection lent to code running inside sqlitejobq's transaction (a migration, an
    on_complete hook): it reads and writes, but neither commits nor rolls back (raising an
    exception undoes what it wrote). Everything not refused is the engine connection's;
    each engine adds how it runs statements and inspects its schema."""

    def __init__(self, conn: Any, error: type[Exception], owner: str) -> None:
        self._conn = conn
        self._error = error
        self._owner = owner

    def commit(self) -> None:
        """Refused: the transaction is sqlitejobq's, which commits it."""
        raise self._error(f"{self._owner} must not commit: it runs inside one transaction")

    def rollback(self) -> None:
        """Refused: raise an exception to undo what was written instead."""
        raise self._error(f"{self._owner} must not roll back; raise an exception instead")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)
