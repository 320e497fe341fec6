"""Task handles and typed payloads.

``@queue.task`` and ``@registry.task`` return a ``TaskHandle``: still the decorated function
when called, plus ``enqueue`` methods, so a task is named by a Python name that a typo breaks
at import rather than by a string that a typo breaks in a worker. A task declared with a
``payload_type`` (a dataclass, or a pydantic model) has its payload checked at enqueue and
delivered to its handler as that type.
"""

from __future__ import annotations

import asyncio
import collections.abc
import dataclasses
import difflib
import enum
import functools
import inspect
import types
import typing
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar, Unpack

from .errors import PayloadError, PermanentFailure, SqliteJobQError
from .options import BatchKwargs, EnqueueKwargs, TaskOptions, is_model
from .options import check_payload_type as check_payload_type

if TYPE_CHECKING:
    from .job import Batch, Job
    from .queue import Queue
    from .registry import Handler, Registry, Task

P = ParamSpec("P")
R = TypeVar("R")


class TaskNotBound(SqliteJobQError, LookupError):
    """A task handle has no single open queue to enqueue on (none, or several share its
    registry): enqueue through a queue instead, ``queue.enqueue(handle, payload)``."""


class TaskHandle(Generic[P, R]):
    """A registered task: calling it calls the function as written; ``enqueue``,
    ``enqueue_many`` and ``enqueue_batch`` add jobs of the task, with the options of the
    ``Queue`` methods of those names.

    A handle made by ``@queue.task`` enqueues on that queue. One made by ``@registry.task``
    enqueues on the queue opened with that registry (``Queue(target, registry=registry)``);
    with none open, or several, it raises TaskNotBound: ``queue.enqueue(handle, ...)`` picks
    one explicitly.
    """

    #: The task's name, as the registry and the stored jobs know it.
    name: str
    #: The function as written: what calling the handle runs.
    func: Callable[P, R]
    #: The registration: name, the callable workers run, options.
    task: Task
    #: The registry the task is registered in.
    registry: Registry
    __name__: str
    __qualname__: str

    def __init__(self, task: Task, registry: Registry, queue: Queue | None = None) -> None:
        functools.update_wrapper(self, task.origin)
        self.func = typing.cast("Callable[P, R]", task.origin)
        self.name = task.name
        self.task = task
        self.registry = registry
        self._queue = queue

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Call the function as written (tests call handlers directly)."""
        return self.func(*args, **kwargs)

    def __repr__(self) -> str:
        bound = "" if self._queue is None else f" on {self._queue!r}"
        return f"<TaskHandle {self.name!r}{bound}>"

    def __reduce__(self) -> str:
        # pickled by reference, as functions are: the module-level name it is found under
        return self.__qualname__

    @property
    def options(self) -> TaskOptions:
        """The task's options (attempts, queue, limits, payload type...)."""
        return self.task.options

    @property
    def payload_type(self) -> type[Any] | None:
        """The type its payloads are checked against and delivered as (None: any JSON)."""
        return self.task.options.payload_type

    def _bind(self, queue: Queue) -> TaskHandle[P, R]:
        """Make this handle enqueue on ``queue`` (what ``@queue.task`` does)."""
        self._queue = queue
        return self

    def target(self) -> Queue:
        """The queue ``enqueue`` uses: the one it was declared on, else the one open queue
        sharing its registry; TaskNotBound when there is none, or several."""
        if self._queue is not None:
            return self._queue
        found = self.registry._open_queues()
        if len(found) == 1:
            return found[0]
        call = f"queue.enqueue({getattr(self.func, '__name__', self.name)}, payload)"
        if not found:
            raise TaskNotBound(
                f"task {self.name!r} has no queue to enqueue on: open one with its registry "
                f"(Queue(target, registry=registry)), declare it with @queue.task, or "
                f"enqueue through a queue: {call}"
            )
        raise TaskNotBound(
            f"task {self.name!r} could go to any of {len(found)} open queues sharing its "
            f"registry ({', '.join(repr(q) for q in found)}): enqueue through one of them, "
            f"{call}, or close the others"
        )

    def enqueue(self, payload: Any = None, **options: Unpack[EnqueueKwargs]) -> int:
        """Add one job of this task; returns its id. The options of ``Queue.enqueue``."""
        return self.target().enqueue(self, payload, **options)

    def enqueue_many(self, payloads: Iterable[Any], **options: Unpack[EnqueueKwargs]) -> list[int]:
        """Add one job of this task per payload in one transaction (``Queue.enqueue_many``)."""
        return self.target().enqueue_many(self, payloads, **options)

    def enqueue_batch(self, payloads: Iterable[Any], **options: Unpack[BatchKwargs]) -> Batch:
        """Add jobs of this task as one batch (``Queue.enqueue_batch``)."""
        return self.target().enqueue_batch(self, payloads, **options)

    # --- for asyncio code: the same, never blocking the event loop ----------------------------

    async def aenqueue(self, payload: Any = None, **options: Unpack[EnqueueKwargs]) -> int:
        """``enqueue`` for asyncio code: the write runs on a thread, the loop goes on."""
        return await asyncio.to_thread(self.enqueue, payload, **options)

    async def aenqueue_many(
        self, payloads: Iterable[Any], **options: Unpack[EnqueueKwargs]
    ) -> list[int]:
        """``enqueue_many`` for asyncio code (on a thread)."""
        return await asyncio.to_thread(self.enqueue_many, list(payloads), **options)

    async def aenqueue_batch(
        self, payloads: Iterable[Any], **options: Unpack[BatchKwargs]
    ) -> Batch:
        """``enqueue_batch`` for asyncio code (on a thread)."""
        return await asyncio.to_thread(self.enqueue_batch, list(payloads), **options)


def queue_is_open(queue: Queue) -> bool:
    """False once ``queue.close()`` was called."""
    return not queue.backend.closed


# --- typed payloads ------------------------------------------------------------------------


def payload_schema(payload_type: type[Any]) -> PayloadSchema:
    """The checks and conversions of one payload type, built once per type."""
    schema = _SCHEMAS.get(payload_type)
    if schema is None:
        schema = _SCHEMAS.setdefault(payload_type, PayloadSchema(payload_type))
    return schema


#: Built on first use, one per type (types live as long as their module).
_SCHEMAS: dict[type[Any], PayloadSchema] = {}
_FIELDS: dict[type[Any], tuple[tuple[str, Any, bool], ...]] = {}


class PayloadSchema:
    """Converts the payloads of one type: to JSON at enqueue (checked), back at delivery."""

    def __init__(self, payload_type: type[Any]) -> None:
        self.type = payload_type
        self.is_model = not dataclasses.is_dataclass(payload_type)

    def encode(self, value: Any, task: str) -> Any:
        """The JSON value stored for ``value`` (an instance or a dict of its fields), or
        PayloadError naming the field that does not fit."""
        kind = self.type.__name__
        try:
            if self.is_model:
                if isinstance(value, self.type):
                    return value.model_dump(mode="json")
                return self.decode(value).model_dump(mode="json")
            if isinstance(value, self.type):
                value = _dump(value)
            elif not isinstance(value, dict):
                raise PayloadError(
                    f"the payload must be a {kind} or a dict of its fields, got "
                    f"{type(value).__name__}: {_short(value)}"
                )
            return _dump(_load_dataclass(self.type, value, ""))
        except PayloadError as exc:
            raise PayloadError(f"task {task!r} takes a {kind} payload: {exc}") from None

    def decode(self, data: Any) -> Any:
        """A ``payload_type`` value from a stored payload; PayloadError if it does not fit."""
        if not self.is_model:
            return _load_dataclass(self.type, data, "")
        try:
            return self.type.model_validate(data)
        except (ValueError, TypeError) as exc:  # pydantic's ValidationError is a ValueError
            raise PayloadError(_model_errors(exc)) from None

    def deliver(self, job: Job) -> Job:
        """The job as its handler sees it: its payload as ``payload_type``. A stored payload
        that does not fit fails the job at once: no retry can change it."""
        if isinstance(job.payload, self.type):
            return job
        try:
            value = self.decode(job.payload)
        except PayloadError as exc:
            raise PermanentFailure(
                f"the payload of job {job.id} ({job.task}) does not fit {self.type.__name__}: {exc}"
            ) from None
        return dataclasses.replace(job, payload=value)


def typed_handler(function: Handler, payload_type: type[Any]) -> Handler:
    """What workers run for a task with a payload type: ``function`` with the job's payload
    converted first. A coroutine function stays one."""
    schema = payload_schema(payload_type)
    if inspect.iscoroutinefunction(function):

        async def run_async(job: Job) -> Any:
            return await function(schema.deliver(job))

        return functools.update_wrapper(run_async, function)

    def run(job: Job) -> Any:
        return function(schema.deliver(job))

    return functools.update_wrapper(run, function)


def _where(path: str) -> str:
    return f"field {path!r}" if path else "the payload"


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _mismatch(path: str, expected: str, value: Any) -> PayloadError:
    return PayloadError(
        f"{_where(path)} must be {expected}, got {type(value).__name__}: {_short(value)}"
    )


def _fields_of(cls: type[Any]) -> tuple[tuple[str, Any, bool], ...]:
    """(name, type, required) of each field a dataclass takes; an annotation that cannot be
    resolved (a name not importable at run time) is taken as Any."""
    found = _FIELDS.get(cls)
    if found is None:
        found = _FIELDS.setdefault(cls, _read_fields(cls))
    return found


def _read_fields(cls: type[Any]) -> tuple[tuple[str, Any, bool], ...]:
    try:
        hints = typing.get_type_hints(cls)
    except Exception:  # any failure to resolve means "unchecked"
        hints = {}
    return tuple(
        (
            f.name,
            hints.get(f.name, Any),
            f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING,
        )
        for f in dataclasses.fields(cls)
        if f.init
    )


def _load_dataclass(cls: type[Any], value: Any, path: str) -> Any:
    """An instance of dataclass ``cls`` from JSON ``value``, every field checked."""
    fields = _fields_of(cls)
    names = [name for name, _, _ in fields]
    if not isinstance(value, dict):
        raise _mismatch(path, f"an object with the fields of {cls.__name__}", value)
    for key in value:
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise PayloadError(
                f"{_where(_join(path, key))} is not a field of {cls.__name__} "
                f"(its fields: {', '.join(names) or 'none'}){hint}"
            )
    kwargs = {}
    for name, hint, required in fields:
        if name in value:
            kwargs[name] = _load(hint, value[name], _join(path, name))
        elif required:
            raise PayloadError(f"{_where(_join(path, name))} is missing ({cls.__name__} needs it)")
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:  # refused by the class's own __post_init__
        raise PayloadError(f"{_where(path)} does not fit {cls.__name__}: {exc}") from None


def _join(path: str, key: object) -> str:
    return f"{path}.{key}" if path else str(key)


_SEQUENCES = (list, collections.abc.Sequence, collections.abc.MutableSequence)
_MAPPINGS = (dict, collections.abc.Mapping, collections.abc.MutableMapping)


def _load(hint: Any, value: Any, path: str) -> Any:
    """``value`` (decoded JSON) checked against the annotation ``hint`` and converted to
    it: nested dataclasses, enums, tuples. Annotations other than the JSON types, unions,
    ``Literal``, enums, dataclasses and pydantic models pass the value through unchecked."""
    if hint is Any or hint is object or isinstance(hint, TypeVar):
        return value
    if hint is None or hint is type(None):
        if value is None:
            return None
        raise _mismatch(path, "null", value)
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is typing.Union or origin is types.UnionType:
        if value is None and type(None) in args:
            return None
        choices = [arg for arg in args if arg is not type(None)]
        for arg in choices:
            try:
                return _load(arg, value, path)
            except PayloadError:
                if len(choices) == 1:
                    raise
        raise _mismatch(path, " or ".join(_describe(arg) for arg in args), value)
    if origin is typing.Literal:
        if any(value == arg and type(value) is type(arg) for arg in args):
            return value
        raise PayloadError(
            f"{_where(path)} must be one of {', '.join(map(repr, args))}, got {_short(value)}"
        )
    if origin in _SEQUENCES or hint is list:
        if not isinstance(value, list | tuple):
            raise _mismatch(path, "a list", value)
        item = args[0] if args else Any
        return [_load(item, v, f"{path}[{i}]") for i, v in enumerate(value)]
    if origin is tuple or hint is tuple:
        if not isinstance(value, list | tuple):
            raise _mismatch(path, "a list", value)
        if not args or (len(args) == 2 and args[1] is Ellipsis):
            item = args[0] if args else Any
            return tuple(_load(item, v, f"{path}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise PayloadError(f"{_where(path)} must have {len(args)} items, got {len(value)}")
        return tuple(
            _load(a, v, f"{path}[{i}]") for i, (a, v) in enumerate(zip(args, value, strict=True))
        )
    if origin in _MAPPINGS or hint is dict:
        if not isinstance(value, dict):
            raise _mismatch(path, "an object", value)
        item = args[1] if len(args) == 2 else Any
        return {k: _load(item, v, f"{path}[{k!r}]") for k, v in value.items()}
    if origin is not None or not isinstance(hint, type):
        return value  # another generic or a special form: not checked
    return _load_class(hint, value, path)


def _load_class(hint: type[Any], value: Any, path: str) -> Any:
    if dataclasses.is_dataclass(hint):
        return _load_dataclass(hint, value, path)
    if is_model(hint):
        try:
            return hint.model_validate(value)
        except (ValueError, TypeError) as exc:
            raise PayloadError(f"{_where(path)}: {_model_errors(exc)}") from None
    if issubclass(hint, enum.Enum):
        try:
            return hint(value)
        except ValueError:
            allowed = ", ".join(repr(member.value) for member in hint)
            raise PayloadError(
                f"{_where(path)} must be one of {allowed}, got {_short(value)}"
            ) from None
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise _mismatch(path, "a bool", value)
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise _mismatch(path, "an int", value)
    if hint is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        raise _mismatch(path, "a number", value)
    if hint is str:
        if isinstance(value, str):
            return value
        raise _mismatch(path, "a str", value)
    return value  # another class: not checked


def _describe(hint: Any) -> str:
    if hint is type(None):
        return "null"
    return hint.__name__ if isinstance(hint, type) else str(hint)


def _dump(value: Any) -> Any:
    """``value`` as JSON-ready data: dataclasses and models as objects, enums as values."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _dump(getattr(value, f.name)) for f in dataclasses.fields(value) if f.init}
    if is_model(type(value)):
        return value.model_dump(mode="json")
    if isinstance(value, enum.Enum):
        return _dump(value.value)
    if isinstance(value, list | tuple):
        return [_dump(v) for v in value]
    if isinstance(value, dict):
        return {k: _dump(v) for k, v in value.items()}
    return value


def _model_errors(exc: Exception) -> str:
    """The first few of a pydantic ValidationError's errors, each naming its field."""
    errors = getattr(exc, "errors", None)
    if not callable(errors):
        return str(exc)
    found = errors()
    parts = []
    for error in found[:3]:
        location = ".".join(str(part) for part in error.get("loc", ()))
        parts.append(f"{_where(location)}: {error.get('msg', 'invalid')}")
    if len(found) > 3:
        parts.append(f"and {len(found) - 3} more")
    return "; ".join(parts) or str(exc)
