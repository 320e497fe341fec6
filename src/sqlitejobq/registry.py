"""Handlers by task name, each with its own options (attempts, lease, backoff, queue)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar, overload

from . import validation
from .errors import InvalidArgument, UnknownTask

if TYPE_CHECKING:
    from .job import Job

Handler = Callable[["Job"], Any]
#: Runs inside the transaction that records a completion: (connection, job, result).
CompletionHook = Callable[[Any, "Job", Any], None]
H = TypeVar("H", bound=Handler)


@dataclass(frozen=True, slots=True)
class TaskOptions:
    """Per-task settings; None means "use the queue's or worker's default"."""

    max_attempts: int | None = None
    lease: float | None = None
    timeout: float | None = None
    backoff: float | None = None
    backoff_max: float | None = None
    queue: str | None = None
    priority: int | None = None
    on_complete: CompletionHook | None = None

    @classmethod
    def checked(
        cls,
        *,
        max_attempts: int | None = None,
        lease: float | None = None,
        timeout: float | None = None,
        backoff: float | None = None,
        backoff_max: float | None = None,
        queue: str | None = None,
        priority: int | None = None,
        on_complete: CompletionHook | None = None,
    ) -> TaskOptions:
        """Validate every option and build the value."""
        if on_complete is not None and not callable(on_complete):
            raise InvalidArgument(f"on_complete must be callable, got {on_complete!r}")
        return cls(
            max_attempts=None
            if max_attempts is None
            else validation.integer(max_attempts, "max_attempts", minimum=1),
            lease=None if lease is None else validation.seconds(lease, "lease", positive=True),
            timeout=None
            if timeout is None
            else validation.seconds(timeout, "timeout", positive=True),
            backoff=None if backoff is None else validation.seconds(backoff, "backoff"),
            backoff_max=None
            if backoff_max is None
            else validation.seconds(backoff_max, "backoff_max"),
            queue=None if queue is None else validation.name(queue, "queue"),
            priority=None if priority is None else validation.integer(priority, "priority"),
            on_complete=on_complete,
        )


@dataclass(frozen=True, slots=True)
class Task:
    """A registered handler and its options."""

    name: str
    handler: Handler
    options: TaskOptions


class Registry:
    """Maps task names to handlers. Workers look handlers up here; producers need not."""

    def __init__(self) -> None:
        self._tasks: dict[str, Task] = {}
        self._lock = threading.Lock()

    @overload
    def task(self, name: H, /) -> H: ...

    @overload
    def task(
        self,
        name: str | None = None,
        /,
        *,
        max_attempts: int | None = None,
        lease: float | None = None,
        timeout: float | None = None,
        backoff: float | None = None,
        backoff_max: float | None = None,
        queue: str | None = None,
        priority: int | None = None,
        on_complete: CompletionHook | None = None,
    ) -> Callable[[H], H]: ...

    def task(
        self,
        name: str | H | None = None,
        /,
        *,
        max_attempts: int | None = None,
        lease: float | None = None,
        timeout: float | None = None,
        backoff: float | None = None,
        backoff_max: float | None = None,
        queue: str | None = None,
        priority: int | None = None,
        on_complete: CompletionHook | None = None,
    ) -> H | Callable[[H], H]:
        """Register the decorated function as the handler of task ``name``.

        ``name`` defaults to the function's ``__name__``; ``@registry.task`` works bare too.
        ``timeout`` bounds how long one run may take (see the Worker); ``lease`` how long a
        claim holds the job between heartbeats.
        ``on_complete(conn, job, result)`` runs inside the transaction that records the
        job's completion, and only if it is recorded: what it writes on ``conn`` commits
        with the completion or not at all. If it raises, the attempt fails instead.
        """
        options = TaskOptions.checked(
            max_attempts=max_attempts,
            lease=lease,
            timeout=timeout,
            backoff=backoff,
            backoff_max=backoff_max,
            queue=queue,
            priority=priority,
            on_complete=on_complete,
        )
        if callable(name):
            self.register(name.__name__, name, options)
            return name

        def decorate(handler: H) -> H:
            self.register(name if name is not None else handler.__name__, handler, options)
            return handler

        return decorate

    def register(self, name: str, handler: Handler, options: TaskOptions | None = None) -> Task:
        """Register ``handler`` under ``name``; a second handler for one name is refused."""
        validation.name(name, "task name")
        if not callable(handler):
            raise InvalidArgument(f"handler for task {name!r} must be callable, got {handler!r}")
        task = Task(name, handler, options or TaskOptions())
        with self._lock:
            existing = self._tasks.get(name)
            if existing is not None and existing.handler is not handler:
                raise InvalidArgument(
                    f"task {name!r} is already registered to {existing.handler!r}"
                )
            self._tasks[name] = task
        return task

    def get(self, name: str) -> Task:
        """The task registered under ``name``; raises UnknownTask naming what is known."""
        try:
            return self._tasks[name]
        except KeyError:
            known = ", ".join(sorted(self._tasks)) or "none"
            raise UnknownTask(
                f"no handler is registered for task {name!r} (registered: {known})"
            ) from None

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
