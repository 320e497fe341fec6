"""Handlers by task name, each with its own options (attempts, lease, backoff, queue)."""

from __future__ import annotations

import difflib
import threading
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, Unpack, overload

from . import validation
from .errors import InvalidArgument, InvalidArgumentType, UnknownTask
from .handles import TaskHandle, queue_is_open, typed_handler
from .limits import QUEUE_RULE_PREFIX, LimitRule
from .options import CompletionHook as CompletionHook
from .options import EnqueueOptions, ScheduleKwargs, TaskKwargs, unexpected
from .options import TaskOptions as TaskOptions
from .triggers import MISSED_POLICIES, Trigger, parse_trigger

if TYPE_CHECKING:
    from .job import Job
    from .queue import Queue

Handler = Callable[["Job"], Any]
P = ParamSpec("P")
R = TypeVar("R")
#: How many registered names an UnknownTask message lists before counting the rest.
_NAMES_SHOWN = 20


@dataclass(frozen=True, slots=True)
class Schedule:
    """A periodic job: ``task`` with ``payload`` at every slot of ``trigger`` (a cron
    expression in a time zone, or an interval), one job per slot across every worker.
    After downtime, ``missed`` says what becomes of the slots missed: "latest" runs the
    most recent one once, "skip" runs none. ``queue``, ``priority`` and ``max_attempts`` go
    to its jobs as enqueue options."""

    name: str
    task: str
    trigger: Trigger
    payload: Any = None
    missed: str = "latest"
    queue: str | None = None
    priority: int | None = None
    max_attempts: int | None = None

    @property
    def enqueue_options(self) -> EnqueueOptions:
        """The options its jobs are enqueued with, checked."""
        return EnqueueOptions.of(
            {"queue": self.queue, "priority": self.priority, "max_attempts": self.max_attempts}
        )


@dataclass(frozen=True, slots=True)
class Task:
    """A registered handler and its options. ``handler`` is what workers call; with a
    ``payload_type`` it wraps ``function``, the function as registered, to convert the
    payload first."""

    name: str
    handler: Handler
    options: TaskOptions
    function: Handler | None = None

    @property
    def origin(self) -> Handler:
        """The function as registered (``handler`` itself when it wraps nothing)."""
        return self.function if self.function is not None else self.handler


class Registry:
    """Maps task names to handlers. Workers look handlers up here; a producer's queue uses it
    to apply the tasks' options and to refuse task names it does not know."""

    def __init__(self) -> None:
        self._tasks: dict[str, Task] = {}
        self._schedules: dict[str, Schedule] = {}
        self._rules: dict[str, LimitRule] | None = None
        self._queue_limits: dict[str, LimitRule] = {}
        self._queues: list[weakref.ref[Queue]] = []
        self._lock = threading.Lock()

    @overload
    def task(self, name: Callable[P, R], /) -> TaskHandle[P, R]: ...

    @overload
    def task(
        self, name: str | None = None, /, **options: Unpack[TaskKwargs]
    ) -> Callable[[Callable[P, R]], TaskHandle[P, R]]: ...

    def task(
        self, name: str | Callable[P, R] | None = None, /, **options: Unpack[TaskKwargs]
    ) -> TaskHandle[P, R] | Callable[[Callable[P, R]], TaskHandle[P, R]]:
        """Register the decorated function as the handler of task ``name``; returns its
        ``TaskHandle``: the function still, plus ``enqueue`` methods.

        ``name`` defaults to the function's ``__name__``; ``@registry.task`` works bare too.
        ``timeout`` bounds how long one run may take (see the Worker); ``lease`` how long a
        claim holds the job between heartbeats.
        ``on_complete(conn, job, result)`` runs inside the transaction that records the
        job's completion, and only if it is recorded: what it writes on ``conn`` commits
        with the completion or not at all. If it raises, the attempt fails instead.
        ``limit`` and ``rate`` (e.g. ``"5/s"``) hold across every worker, per value of the
        payload field ``limit_key`` when given. ``schedule`` (a cron expression in
        ``timezone``, or an interval in seconds) makes the task periodic: see ``schedule``.
        ``payload_type`` (a dataclass or a pydantic model) checks payloads at enqueue and
        hands the handler ``job.payload`` as an instance of it.
        """
        schedule = options.pop("schedule", None)
        timezone = options.pop("timezone", "UTC")
        missed = options.pop("missed", "latest")
        task_options = TaskOptions.of(options)
        trigger = None if schedule is None else parse_trigger(schedule, timezone)
        check_missed(missed)

        def add(task_name: str | None, function: Callable[P, R]) -> TaskHandle[P, R]:
            if isinstance(function, TaskHandle):  # stacked decorators: register the function
                function = function.func
            if task_name is None:
                task_name = getattr(function, "__name__", None)
            task = self.register(task_name, function, task_options)  # type: ignore[arg-type]
            if trigger is not None:
                self.add_schedule(
                    Schedule(name=task.name, task=task.name, trigger=trigger, missed=missed)
                )
            return TaskHandle(task, self)

        if callable(name):
            return add(None, name)

        def decorate(function: Callable[P, R]) -> TaskHandle[P, R]:
            return add(name, function)

        return decorate

    def schedule(
        self, task: str, every: str | float, **options: Unpack[ScheduleKwargs]
    ) -> Schedule:
        """Run ``task`` periodically: at every slot of ``every`` (a cron expression such as
        ``"0 16 * * *"`` read in ``timezone``, or an interval in seconds), one job per slot
        however many workers run, with ``payload`` (default: ``{"slot": ISO time}``).

        ``name`` (default: the task's name) identifies the schedule; declare it in code
        that every worker imports. A schedule no longer declared stops firing.
        """
        unknown = sorted(options.keys() - ScheduleKwargs.__optional_keys__)
        if unknown:
            raise unexpected("schedule()", unknown[0], ScheduleKwargs.__optional_keys__)
        name = options.get("name")
        jobs = EnqueueOptions.of(  # its jobs' options, checked as an enqueue checks them
            {
                "queue": options.get("queue"),
                "priority": options.get("priority"),
                "max_attempts": options.get("max_attempts"),
            }
        )
        schedule = Schedule(
            name=validation.name(name if name is not None else task, "schedule name"),
            task=validation.name(task, "task"),
            trigger=parse_trigger(every, options.get("timezone", "UTC")),
            payload=options.get("payload"),
            missed=check_missed(options.get("missed", "latest")),
            queue=jobs.queue,
            priority=jobs.priority,
            max_attempts=jobs.max_attempts,
        )
        return self.add_schedule(schedule)

    def add_schedule(self, schedule: Schedule) -> Schedule:
        """Add a schedule; a second one under the same name is refused."""
        with self._lock:
            existing = self._schedules.get(schedule.name)
            if existing is not None and existing != schedule:
                raise InvalidArgument(f"a schedule named {schedule.name!r} exists already")
            self._schedules[schedule.name] = schedule
        return schedule

    @property
    def schedules(self) -> list[Schedule]:
        """The periodic jobs declared, by name."""
        return [self._schedules[name] for name in sorted(self._schedules)]

    def limit_queue(
        self, queue: str, *, limit: int | None = None, rate: str | tuple[int, float] | None = None
    ) -> None:
        """Hold every job of the named queue to ``limit`` (at most that many processing at
        once) and ``rate`` (e.g. ``"5/s"``), across every worker, unless its task has limits
        of its own (those win)."""
        validation.name(queue, "queue")
        if limit is None and rate is None:
            raise InvalidArgument(f"limit_queue({queue!r}) needs a limit or a rate")
        rule = LimitRule(
            QUEUE_RULE_PREFIX + queue,
            None if limit is None else validation.integer(limit, "limit", minimum=1),
            None if rate is None else validation.rate(rate, "rate"),
        )
        with self._lock:
            self._queue_limits[queue] = rule
            self._rules = None

    def limit_rules(self) -> dict[str, LimitRule]:
        """The limits declared here: by task name, and by ``#`` and the queue's name."""
        if self._rules is not None:
            return self._rules
        rules = {rule.task: rule for rule in self._queue_limits.values()}
        for task in list(self._tasks.values()):
            options = task.options
            if options.limit is not None or options.rate is not None:
                rules[task.name] = LimitRule(
                    task.name, options.limit, options.rate, options.limit_key
                )
        self._rules = rules
        return rules

    def register(self, name: str, handler: Handler, options: TaskOptions | None = None) -> Task:
        """Register ``handler`` under ``name``; a second handler for one name is refused.

        A ``TaskHandle`` registers its function (with its options unless others are given).
        With a ``payload_type`` in ``options``, the task's ``handler`` converts the payload
        before calling the function.
        """
        validation.name(name, "task name")
        if isinstance(handler, TaskHandle):
            options = options or handler.options
            handler = handler.func
        if not callable(handler):
            raise InvalidArgument(f"handler for task {name!r} must be callable, got {handler!r}")
        options = options or TaskOptions()
        runner = handler
        if options.payload_type is not None:
            runner = typed_handler(handler, options.payload_type)
        task = Task(name, runner, options, None if runner is handler else handler)
        with self._lock:
            existing = self._tasks.get(name)
            if existing is not None and existing.origin is not handler:
                raise InvalidArgument(f"task {name!r} is already registered to {existing.origin!r}")
            self._tasks[name] = task
            self._rules = None
        return task

    def get(self, name: str) -> Task:
        """The task registered under ``name``; raises UnknownTask naming what is known and
        the closest name when one is close (a misspelling)."""
        try:
            return self._tasks[name]
        except KeyError:
            raise UnknownTask(self._unknown(name)) from None

    def _unknown(self, name: str) -> str:
        """Why ``name`` is not a task here: what is registered, and a close match if any."""
        close = self._closest(name)
        guess = f"; did you mean {close!r}?" if close else ""
        return f"no handler is registered for task {name!r} (registered: {self._known()}){guess}"

    def _known(self) -> str:
        """The registered names, the first few of them, for messages."""
        names = sorted(self._tasks)
        known = ", ".join(names[:_NAMES_SHOWN]) or "none"
        if len(names) > _NAMES_SHOWN:
            known += f" and {len(names) - _NAMES_SHOWN} more"
        return known

    def _closest(self, name: str) -> str | None:
        """The registered name closest to ``name`` when one is close (a misspelling)."""
        close = difflib.get_close_matches(name, list(self._tasks), n=1)
        return close[0] if close else None

    def _attach(self, queue: Queue) -> None:
        """Remember a queue opened with this registry: handles from ``@registry.task``
        enqueue on it while it is the only open one."""
        with self._lock:
            self._queues = [ref for ref in self._queues if ref() is not None]
            self._queues.append(weakref.ref(queue))

    def _open_queues(self) -> list[Queue]:
        """The queues opened with this registry and not closed yet, oldest first."""
        with self._lock:
            found = [ref() for ref in self._queues]
        return [queue for queue in found if queue is not None and queue_is_open(queue)]

    def options(self, name: str) -> TaskOptions:
        """The options of task ``name``, or the empty defaults if it is not registered here."""
        task = self._tasks.get(name)
        return task.options if task is not None else _NO_OPTIONS

    def __contains__(self, name: object) -> bool:
        return name in self._tasks

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._tasks))

    def __len__(self) -> int:
        return len(self._tasks)

    def __repr__(self) -> str:
        return f"Registry({sorted(self._tasks)})"


_NO_OPTIONS = TaskOptions()


def check_missed(value: object) -> str:
    """``value`` if it is a policy for missed slots ("latest" or "skip")."""
    if not isinstance(value, str):
        raise InvalidArgumentType(f"missed must be a str, got {type(value).__name__}")
    if value not in MISSED_POLICIES:
        raise InvalidArgument(f"missed must be one of {', '.join(MISSED_POLICIES)}, got {value!r}")
    return value
