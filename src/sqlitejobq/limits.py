"""Limits: how many jobs of a task (or a queue, or a payload value) may run at once and how
many may start in a period, across every worker. The rules and the choice of which
limited jobs a claim takes live here, above the storage seam; an engine supplies the
counts (``plan_limited_claim``'s callables) inside the claim's transaction."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .backends.base import JobRecord


@dataclass(frozen=True, slots=True)
class LimitRule:
    """A task's limits, across every worker: at most ``limit`` of its jobs processing at
    once and at most ``rate[0]`` starts in any ``rate[1]`` seconds (None: no such limit);
    per value of the payload field ``key`` when it is given, else for the task as a whole."""

    task: str
    limit: int | None
    rate: tuple[int, float] | None
    key: str | None = None


#: A limit key joins the task's name and the payload value it is limited by with this
#: character, which no task name holds.
LIMIT_KEY_SEPARATOR = "|"
#: The rule (and limit key) of a queue's limit is the queue's name after this character,
#: which no task or queue name starts with.
QUEUE_RULE_PREFIX = "#"


def rule_for(rules: dict[str, LimitRule], task: str, queue: str) -> LimitRule | None:
    """The limit a job is held to: its task's, else its queue's (None: neither is limited)."""
    return rules.get(task) or rules.get(QUEUE_RULE_PREFIX + queue)


def limit_key_of(rule: LimitRule, payload: Any) -> str | None:
    """The limit key of a job of ``rule.task`` with this (decoded) payload: the task's name,
    or with ``rule.key`` the name and the payload's value of that field (None when the
    payload has no such field, or its value is not text or an int of 1-200 characters)."""
    if rule.key is None:
        return rule.task
    if not isinstance(payload, dict):
        return None
    value = payload.get(rule.key)
    if isinstance(value, bool) or not isinstance(value, str | int):
        return None
    text = str(value)
    if not text or len(text) > 200:
        return None
    return f"{rule.task}{LIMIT_KEY_SEPARATOR}{text}"


def keys_for_unkeyed(
    records: Sequence[JobRecord], rules: dict[str, LimitRule]
) -> tuple[list[JobRecord], list[tuple[int, str]]]:
    """Split jobs just claimed by the plain claim (none has a limit key) into those to run
    and (id, key) of those whose task or queue is limited here: they go back, keyed, to be claimed
    under the limit. A payload that gives no key puts the job under ``task|`` (one shared
    bucket) rather than letting it run unlimited."""
    if not rules:
        return list(records), []
    run, hold = [], []
    for record in records:
        rule = rule_for(rules, record.task, record.queue)
        if rule is None:
            run.append(record)
            continue
        try:
            payload = json.loads(record.payload)
        except ValueError:
            payload = None
        key = limit_key_of(rule, payload) or f"{rule.task}{LIMIT_KEY_SEPARATOR}"
        hold.append((record.id, key))
    return run, hold


def task_of_limit_key(key: str) -> str:
    """The task whose rule governs a job with this limit key."""
    return key.split(LIMIT_KEY_SEPARATOR, 1)[0]


@dataclass(frozen=True, slots=True)
class LimitedClaim:
    """What a claim of limited jobs chose: the job ids (best first), the keys whose starts
    count against a rate, and when a key held back by its rate frees a start (or None);
    ``keys``: the key of each job chosen."""

    ids: list[int]
    rated_keys: list[str]
    next_start: float | None
    keys: list[str] = field(default_factory=list)


def plan_limited_claim(
    keys: Iterable[str],
    running: dict[str, int],
    rules: dict[str, LimitRule],
    want: int,
    now: float,
    candidates: Callable[[dict[str, int]], list[tuple[int, int, float, str]]],
    recent_starts: Callable[[dict[str, float]], dict[str, list[float]]],
) -> LimitedClaim:
    """Choose up to ``want`` limited jobs, best first, without going over any key's limit.

    ``running`` counts the processing jobs per key; ``recent_starts({key: since})`` gives
    each key's starts after its ``since``, oldest first; ``candidates({key: room})`` up to
    ``room`` due jobs of each key as (id, priority, run_at, key), best first. An engine may
    answer each for all keys at once (one round trip). The engine calls this inside the
    claim's transaction, serialized with the other claims of the same keys, so the counts
    stay exact.
    """
    rooms: dict[str, int] = {}
    rates: dict[str, tuple[int, float]] = {}
    for key in keys:
        rule = rules.get(task_of_limit_key(key))
        if rule is None:
            continue  # a task this worker does not know: left to workers that do
        room = want if rule.limit is None else min(want, rule.limit - running.get(key, 0))
        if room > 0:
            rooms[key] = room
            if rule.rate is not None:
                rates[key] = rule.rate
    next_start: float | None = None
    if rates:
        starts = recent_starts({key: now - period for key, (_, period) in rates.items()})
        for key, (count, period) in rates.items():
            seen = starts.get(key, [])
            if len(seen) >= count:
                frees_at = seen[len(seen) - count] + period
                next_start = frees_at if next_start is None else min(next_start, frees_at)
            rooms[key] = min(rooms[key], count - len(seen))
    rooms = {key: room for key, room in rooms.items() if room > 0}
    chosen = sorted(
        (-priority, run_at, job_id, key)
        for job_id, priority, run_at, key in (candidates(rooms) if rooms else [])
    )[:want]
    return LimitedClaim(
        [job_id for _, _, job_id, _ in chosen],
        [key for _, _, _, key in chosen if key in rates],
        next_start,
        [key for _, _, _, key in chosen],
    )
