"""Duties: what a worker's dispatcher does now and then besides claiming and recording.

Each duty knows when it is next due (``next_at``, on the monotonic clock) and does its
work in ``run(now)``, which sets when it is due again. The dispatcher runs the due ones
between two claims and sleeps no later than the earliest.
"""

from __future__ import annotations

import abc
import enum
import logging
import os
import time
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .backends.base import WorkerRecord
    from .lifecycle import JobLifecycle
    from .runners import Slots
    from .scheduler import Scheduler

log = logging.getLogger("sqlitejobq")

#: An idle worker still writes its row this often, so others can tell it is alive.
ALIVE_EVERY = 30.0


class Found(enum.Flag):
    """What a duty's run tells the dispatcher."""

    NOTHING = 0
    #: jobs may have become runnable: claim
    WORK = enum.auto()
    #: read again when the next delayed job is due (the clock it is due by may jump)
    CLOCK = enum.auto()


class Duty(abc.ABC):
    """Something the dispatcher does when it is due."""

    #: when it is next due (monotonic)
    next_at: float
    #: run only while the worker holds no job (claimed, running, or to record)
    idle_only = False

    @abc.abstractmethod
    def run(self, now: float) -> Found:
        """Do it, and set when it is next due."""


class Rescue(Duty):
    """Takes back the jobs whose leases expired (their worker died) so they run again; due
    at once, so a dead worker's jobs are runnable from the first claim."""

    def __init__(self, lifecycle: JobLifecycle, slots: Slots, interval: float, now: float) -> None:
        self._lifecycle = lifecycle
        self._slots = slots
        self._interval = interval
        self.next_at = now

    def run(self, now: float) -> Found:
        """Take back the expired leases (renewing the worker's own first)."""
        self.next_at = now + self._interval
        rescued = self._lifecycle.rescue_expired(renew=self._slots.held(now))
        return (Found.WORK if rescued else Found.NOTHING) | Found.CLOCK


class ParentWatch(Duty):
    """Stops a supervised worker whose supervisor is gone, rather than leave it orphaned."""

    def __init__(
        self, parent: int, interval: float, stop: Callable[[], None], worker: str, now: float
    ) -> None:
        self._parent = parent
        self._interval = interval
        self._stop = stop
        self._worker = worker
        self.next_at = now

    def run(self, now: float) -> Found:
        """Stop the worker if this process's parent is no longer its supervisor."""
        self.next_at = now + self._interval
        if os.getppid() != self._parent:
            log.warning("worker %s: supervisor %d is gone, stopping", self._worker, self._parent)
            self._stop()
        return Found.NOTHING


class Heartbeat(Duty):
    """Renews the leases of the jobs the worker holds, every third of the shortest lease,
    and passes on the cancels asked for to ``async def`` handlers."""

    def __init__(
        self, lifecycle: JobLifecycle, slots: Slots, lease: float, worker: str, now: float
    ) -> None:
        self._lifecycle = lifecycle
        self._slots = slots
        self._lease = lease
        self._worker = worker
        self.next_at = now + self._every()

    def _every(self) -> float:
        return self._slots.shortest_lease(self._lease) / 3.0

    def run(self, now: float) -> Found:
        """Renew the leases, warning of those another worker took."""
        held = self._slots.held(now)
        if held:
            for job, owned in zip(held, self._lifecycle.heartbeat_many(held), strict=True):
                if not owned:
                    log.warning(
                        "job %d %s: worker %s lost its lease (another worker may run it)",
                        job.id,
                        job.task,
                        self._worker,
                    )
            self._slots.loop.cancel_asked(held)
        self.next_at = now + self._every()
        return Found.NOTHING


class WorkerRow:
    """A worker's row: written at its start, then when its figures change or now and then
    to show it lives."""

    def __init__(self, lifecycle: JobLifecycle, figures: Callable[[], WorkerRecord]) -> None:
        self._lifecycle = lifecycle
        self._figures = figures  # the worker's row as it stands, but its start and stop
        self._started_at = 0.0
        self._last: WorkerRecord | None = None
        self._last_at = 0.0

    def register(self, started_at: float) -> None:
        """Write the row of a worker that starts."""
        self._started_at = started_at
        self._lifecycle.register_worker(self._current())
        self._last, self._last_at = self._current(), time.monotonic()

    def write(self, stopped: bool = False) -> None:
        """Write the row if its figures changed, or to show the worker lives. The jobs it
        ended since the last row written go to the throughput with it: a write that fails
        leaves them for the next one, none lost nor counted twice."""
        record = self._current(stopped)
        last = self._last
        unchanged = last is not None and (
            (record.jobs_completed, record.jobs_failed, record.lock.writes)
            == (last.jobs_completed, last.jobs_failed, last.lock.writes)
        )
        if unchanged and not stopped and time.monotonic() - self._last_at < ALIVE_EVERY:
            return
        if last is not None:
            record = replace(
                record,
                completed_delta=record.jobs_completed - last.jobs_completed,
                failed_delta=record.jobs_failed - last.jobs_failed,
            )
        self._lifecycle.report_worker(record)
        # the row's own write is no news: an idle worker writes it again only to show it lives
        self._last = replace(record, lock=self._current().lock)
        self._last_at = time.monotonic()

    def _current(self, stopped: bool = False) -> WorkerRecord:
        return replace(self._figures(), started_at=self._started_at, stopped=stopped)


class Report(Duty):
    """Writes the worker's row every ``interval`` seconds, if there is news."""

    def __init__(self, row: WorkerRow, interval: float, now: float) -> None:
        self._row = row
        self._interval = interval
        self.next_at = now + interval

    def run(self, now: float) -> Found:
        """Write the row if there is news."""
        self._row.write()
        self.next_at = now + self._interval
        return Found.NOTHING


class Checkpoint(Duty):
    """Database upkeep (SQLite: folding the WAL into the file), done while idle so that it
    never holds up a claim."""

    idle_only = True

    def __init__(self, lifecycle: JobLifecycle, interval: float, now: float) -> None:
        self._lifecycle = lifecycle
        self._interval = interval
        self.next_at = now + interval

    def run(self, now: float) -> Found:
        """Do the upkeep."""
        self.next_at = now + self._interval
        self._lifecycle.checkpoint()
        return Found.NOTHING


class Schedules(Duty):
    """Creates the jobs of the process's schedules as their slots come, looking at least
    every ``check`` seconds whatever the next slot's time."""

    def __init__(self, scheduler: Scheduler, check: float, now: float) -> None:
        self._scheduler = scheduler
        self._check = check
        self.next_at = now

    def run(self, now: float) -> Found:
        """Create the jobs of the slots due now."""
        created = self._scheduler.created
        until_slot = self._scheduler.tick()
        self.next_at = time.monotonic() + min(until_slot, self._check)
        return Found.WORK if self._scheduler.created != created else Found.NOTHING
