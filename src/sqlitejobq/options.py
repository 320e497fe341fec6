"""The options of a task, a schedule and an enqueue, each list declared once.

A ``TypedDict`` names the keyword arguments as callers give them (``**options: Unpack[...]``
shows them to type checkers), and a frozen value holds them checked. Each field of a value
carries its check in its ``Annotated`` type, so an option is one line in each.
"""

from __future__ import annotations

import dataclasses
import difflib
import time
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, NamedTuple, TypedDict, Unpack

from . import validation
from .errors import InvalidArgument, InvalidArgumentType
from .job import Job

if TYPE_CHECKING:
    from .handles import TaskHandle

#: Runs inside the transaction that records a completion: (connection, job, result).
CompletionHook = Callable[[Any, Job, Any], None]
#: The check of an option, its ``Annotated`` metadata: ``check(value, name)`` returns the
#: value to keep or raises.
Check = Callable[[Any, str], Any]


def _callable(value: object, what: str) -> Any:
    if not callable(value):
        raise InvalidArgument(f"{what} must be callable, got {value!r}")
    return value


def _anything(value: object, what: str) -> Any:
    return value


def _payload_type(value: object, what: str) -> type[Any]:
    return check_payload_type(value)


def _dependencies(value: object, what: str) -> tuple[int, ...]:
    if value is None:
        return ()
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise InvalidArgumentType(f"{what} must be a list of job ids, got {type(value).__name__}")
    ids = tuple(dict.fromkeys(validation.integer(i, f"{what} id", minimum=1) for i in value))
    if len(ids) > 10_000:
        raise InvalidArgument(f"{what} may name at most 10000 jobs, got {len(ids)}")
    return ids


def _dependency_policy(value: object, what: str) -> str:
    if value not in ("cancel", "run"):
        raise InvalidArgument(f"{what} must be 'cancel' or 'run', got {value!r}")
    return str(value)


def _minimum_one(value: object, what: str) -> int:
    return validation.integer(value, what, minimum=1)


def _positive_seconds(value: object, what: str) -> float:
    return validation.seconds(value, what, positive=True)


def _expires(value: object, what: str) -> float | datetime:
    """Seconds from now (> 0), or an aware datetime in the future."""
    if isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise InvalidArgument(f"{what} must be an aware datetime, got naive {value}")
        if value.timestamp() <= time.time():
            raise InvalidArgument(f"{what} {value.isoformat()} is in the past")
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidArgumentType(
            f"{what} must be seconds or an aware datetime, got {type(value).__name__}"
        )
    return validation.seconds(value, what, positive=True)


def _unique_key(value: object, what: str) -> str | None:
    return validation.optional_text(value, what, max_length=1000)


# --- a task's options ----------------------------------------------------------------------


class TaskOptionsDict(TypedDict, total=False):
    """A task's options as ``TaskOptions.checked`` takes them (see ``TaskOptions``)."""

    max_attempts: int | None
    lease: float | None
    timeout: float | None
    backoff: float | list[float] | tuple[float, ...] | None
    backoff_max: float | None
    queue: str | None
    priority: int | None
    on_complete: CompletionHook | None
    limit: int | None
    rate: str | tuple[int, float] | None
    limit_key: str | None
    payload_type: type[Any] | None


class TaskKwargs(TaskOptionsDict, total=False):
    """What ``@registry.task`` and ``@queue.task`` take: the task's options and its schedule."""

    schedule: str | float | None
    timezone: str
    missed: str


@dataclass(frozen=True, slots=True)
class TaskOptions:
    """Per-task settings; None means "use the queue's or worker's default"."""

    max_attempts: Annotated[int | None, _minimum_one] = None
    lease: Annotated[float | None, _positive_seconds] = None
    timeout: Annotated[float | None, _positive_seconds] = None
    #: Seconds before the first retry, doubled for each later one (up to ``backoff_max``);
    #: or the wait before each retry, one per retry, the last one repeated.
    backoff: Annotated[float | tuple[float, ...] | None, validation.backoff] = None
    backoff_max: Annotated[float | None, validation.seconds] = None
    queue: Annotated[str | None, validation.name] = None
    priority: Annotated[int | None, validation.integer] = None
    on_complete: Annotated[CompletionHook | None, _callable] = None
    #: At most this many of the task's jobs processing at once, across every worker.
    limit: Annotated[int | None, _minimum_one] = None
    #: At most ``rate[0]`` starts of the task's jobs in any ``rate[1]`` seconds.
    rate: Annotated[tuple[int, float] | None, validation.rate] = None
    #: With ``limit`` or ``rate``: a payload field; the limits then hold per value of it.
    limit_key: Annotated[str | None, validation.name] = None
    #: A dataclass or pydantic model: payloads are checked against it at enqueue and the
    #: handler's ``job.payload`` is an instance of it.
    payload_type: Annotated[type[Any] | None, _payload_type] = None

    @classmethod
    def checked(cls, **options: Unpack[TaskOptionsDict]) -> TaskOptions:
        """Validate every option and build the value."""
        return cls.of(options)

    @classmethod
    def of(cls, options: TaskOptionsDict) -> TaskOptions:
        """The value of ``options`` validated; an option it does not know is a TypeError."""
        values = _checked_values(cls, options, "task()")
        key = values.get("limit_key")
        if key is not None and values.get("limit") is None and values.get("rate") is None:
            raise InvalidArgument(
                f"limit_key {key!r} needs a limit or a rate to apply per its value"
            )
        return cls(**values)


# --- a schedule's options ------------------------------------------------------------------


class ScheduleKwargs(TypedDict, total=False):
    """What ``registry.schedule`` and ``queue.schedule`` take besides the task and its times."""

    name: str | None
    payload: Any
    timezone: str
    missed: str
    queue: str | None
    priority: int | None
    max_attempts: int | None


# --- an enqueue's options ------------------------------------------------------------------


class EnqueueKwargs(TypedDict, total=False):
    """An enqueue's options as ``enqueue`` and ``enqueue_many`` take them (see
    ``EnqueueOptions``)."""

    queue: str | None
    priority: int | None
    delay: float
    max_attempts: int | None
    unique_key: str | None
    depends_on: Iterable[int] | None
    on_dependency_failure: str
    connection: Any
    expires: float | datetime | None


class BatchKwargs(EnqueueKwargs, total=False):
    """What ``enqueue_batch`` takes: the enqueue options, the batch's name and its follow-up."""

    name: str | None
    then: str | TaskHandle[..., Any] | None
    then_payload: Any


class EnqueueOptions(NamedTuple):
    """An enqueue's options, checked; None means "the task's setting, else the queue's"."""

    queue: Annotated[str | None, validation.name] = None
    priority: Annotated[int | None, validation.integer] = None
    #: Seconds before the job is due.
    delay: Annotated[float, validation.seconds] = 0.0
    max_attempts: Annotated[int | None, _minimum_one] = None
    #: While an active job holds this key, the enqueue adds nothing and returns its id.
    unique_key: Annotated[str | None, _unique_key] = None
    #: The ids of the jobs this one waits for.
    depends_on: Annotated[tuple[int, ...], _dependencies] = ()
    #: "cancel" the job when a dependency fails or is cancelled, or "run" it anyway.
    on_dependency_failure: Annotated[str, _dependency_policy] = "cancel"
    #: The caller's open transaction to write the job in (None: one of its own).
    connection: Annotated[Any, _anything] = None
    #: Not started within so many seconds (or by this aware datetime), the job never runs:
    #: it ends cancelled, its error saying it expired.
    expires: Annotated[float | datetime | None, _expires] = None

    def expires_in(self) -> float | None:
        """Seconds from now until the jobs expire (None: never); InvalidArgument if a
        datetime given has passed meanwhile."""
        if not isinstance(self.expires, datetime):
            return self.expires
        left = self.expires.timestamp() - time.time()
        if left <= 0:
            raise InvalidArgument(f"expires {self.expires.isoformat()} is in the past")
        return left

    @classmethod
    def of(cls, options: EnqueueKwargs) -> EnqueueOptions:
        """The value of ``options`` validated; an option it does not know is a TypeError."""
        if not options:
            return _NO_ENQUEUE_OPTIONS
        return cls(**_checked_values(cls, options, "an enqueue"))


_NO_ENQUEUE_OPTIONS = EnqueueOptions()


# --- checking ------------------------------------------------------------------------------


#: Each options value's checks by option name, and whether None stands for "not given"
#: (its type admits None: it is then left unchecked).
_CHECKS: dict[type[Any], dict[str, tuple[Check, bool]]] = {}


def _checked_values(cls: type[Any], options: Mapping[str, Any], what: str) -> dict[str, Any]:
    """``options`` checked by the annotations of the options value ``cls``; an option it does
    not have is a TypeError naming it, as Python names an unexpected keyword argument."""
    checks = _CHECKS.get(cls)
    if checks is None:
        hints = typing.get_type_hints(cls, include_extras=True).items()
        checks = {
            name: (hint.__metadata__[0], type(None) in typing.get_args(hint.__origin__))
            for name, hint in hints
        }
        _CHECKS[cls] = checks
    values = {}
    for name, value in options.items():
        found = checks.get(name)
        if found is None:
            raise unexpected(what, name, checks)
        check, none_allowed = found
        values[name] = None if value is None and none_allowed else check(value, name)
    return values


def unexpected(what: str, name: str, known: Iterable[str]) -> TypeError:
    """The error of an option ``what`` does not take, with the closest known name if any."""
    close = difflib.get_close_matches(name, list(known), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return TypeError(f"{what} got an unexpected keyword argument {name!r}{hint}")


def check_payload_type(value: object) -> type[Any]:
    """``value`` if it is a dataclass or a pydantic model class, the payload types known."""
    if isinstance(value, type) and (dataclasses.is_dataclass(value) or is_model(value)):
        return value
    raise InvalidArgumentType(
        f"payload_type must be a dataclass or a pydantic BaseModel class, got {value!r}"
    )


def is_model(cls: type[Any]) -> bool:
    """A pydantic (v2) model class, recognized without importing pydantic."""
    return callable(getattr(cls, "model_validate", None)) and callable(
        getattr(cls, "model_dump", None)
    )
