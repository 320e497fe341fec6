"""Periodic jobs: every worker runs the schedules declared in code, and exactly one job is
created per (schedule, slot) however many workers and hosts run them.

There is no leader. A slot is taken by moving the schedule's ``last_slot`` forward in the
same transaction that inserts the slot's job: the first worker to do so creates the job,
the others find the slot taken and create nothing, and a slot once passed is never taken
again. Only the current slot is run as on time; the slots missed while no worker looked
are handled by the schedule's ``missed`` policy ("latest": the most recent once), so a
look creates at most two jobs per schedule (see ``sqlitejobq.triggers.due_slots``).
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from typing import TYPE_CHECKING

from .registry import Schedule
from .triggers import Trigger, due_slots

if TYPE_CHECKING:
    from .backends.base import NewJob
    from .queue import Queue

log = logging.getLogger("sqlitejobq")

#: The current slot of a schedule found later than this after its time was missed (the
#: workers were down): it is handled by the schedule's ``missed`` policy instead of run as
#: on time. Earlier slots are missed whatever the grace (see ``due_slots``).
SCHEDULE_GRACE = 60.0
#: How often a worker records again the schedules it runs (``sqlitejobq schedules`` shows
#: when each was last declared).
_DECLARE_EVERY = 600.0


class Scheduler:
    """Creates the jobs of one process's schedules, slot by slot."""

    def __init__(self, queue: Queue, schedules: list[Schedule]) -> None:
        self.queue = queue
        self.schedules = schedules
        self._declared_at: float | None = None
        self.created = 0

    def tick(self) -> float:
        """Create the jobs of the slots due now; the seconds (on the queue's clock) until
        the next slot of any schedule."""
        if not self.schedules:
            return float("inf")
        backend = self.queue.backend
        checked = time.monotonic()
        if self._declared_at is None or checked - self._declared_at >= _DECLARE_EVERY:
            backend.declare_schedules(
                [(s.name, s.task, every(s.trigger), s.trigger.timezone) for s in self.schedules]
            )
            self._declared_at = checked
        now = self.queue.clock()
        last = backend.last_slots()
        for schedule in self.schedules:
            slots = due_slots(
                schedule.trigger, last.get(schedule.name), now, schedule.missed, SCHEDULE_GRACE
            )
            for slot in slots:
                job_id = backend.fire_slot(schedule.name, slot, self._job(schedule, slot))
                if job_id is not None:
                    self.created += 1
                    log.info(
                        "schedule %s: job %d %s for the slot of %s",
                        schedule.name,
                        job_id,
                        schedule.task,
                        _iso(slot),
                    )
        upcoming = min(s.trigger.next_after(now) for s in self.schedules)
        return max(0.0, upcoming - now)

    def _job(self, schedule: Schedule, slot: float) -> NewJob:
        payload = schedule.payload if schedule.payload is not None else {"slot": _iso(slot)}
        return self.queue.new_job(schedule.task, payload, schedule.enqueue_options)


def every(trigger: Trigger) -> str:
    """How often a trigger fires, as ``sqlitejobq schedules`` shows it: the cron expression
    (its time zone goes beside it), or ``every 300s``."""
    return trigger.spec if isinstance(trigger.spec, str) else trigger.describe()


def _iso(slot: float) -> str:
    return dt.datetime.fromtimestamp(slot, dt.UTC).isoformat().replace("+00:00", "Z")
