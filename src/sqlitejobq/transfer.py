"""Copying a queue's waiting work into another database: the jobs still to run (queued,
delayed, waiting to retry) and the failed ones, with their batches, from a SQLite file into
PostgreSQL (or from any engine into any other), without losing or duplicating any.

    from sqlitejobq.transfer import copy_queue

    report = copy_queue("jobs.db", "postgresql://app@db/app?schema=jobs")

The source is read in one snapshot and never written. The target gets the jobs in chunks,
one transaction each; every chunk records, in the copy's own tables (migration namespace
``sqlitejobq_copy``), which source jobs it copied, keyed by the source database's identity
(not its path) and the source job's id, in the same transaction as the jobs. A crash loses
at most the chunk in flight, whole; a rerun skips what is recorded and copies the rest,
including jobs added to the source since.

This module names no engine: each engine's ``copy`` module owns its SQL, under the same
names (``open_source``, ``peek_target``, ``open_target``, ``MIGRATIONS``, ...).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from functools import partial
from types import ModuleType
from typing import Any, Protocol, TypeVar

from . import validation
from .backends import engine_for
from .backends.base import JobRecord
from .backends.shared import BATCH_COLUMNS, Tally
from .errors import InvalidArgumentType, SqliteJobQError
from .job import BatchProgress
from .migrations import migrate
from .queue import Queue

log = logging.getLogger("sqlitejobq")

T = TypeVar("T")

#: The migration namespace of the copy's own tables in a target.
COPY_NAMESPACE = "sqlitejobq_copy"
#: How many conflicts an error names before it says "and N more".
_NAMED = 5


class CopyRefused(SqliteJobQError):
    """The copy was refused before anything was written: the message says why and what to do."""


@dataclass(frozen=True, slots=True)
class SourceBatch:
    """A batch of the source: its counts, and how many of its jobs the copy takes over."""

    progress: BatchProgress
    queued_to_copy: int
    failed_to_copy: int


@dataclass(frozen=True, slots=True)
class CopyReport:
    """What a copy did (or, with ``dry_run``, would do)."""

    source: str
    target: str
    #: The source database's identity, which keys the record of what was copied.
    source_identity: str
    dry_run: bool
    #: Jobs written to the target: queued (of them delayed, and waiting to retry) and failed.
    copied: int
    queued: int
    delayed: int
    retrying: int
    failed: int
    #: Batches created in the target.
    batches: int
    #: Jobs an earlier run copied already, skipped.
    already_copied: int
    #: Jobs not written because a job copied earlier from this source holds their unique
    #: key in the target (as an enqueue would, they are taken to be that job).
    deduplicated: int
    chunks: int
    seconds: float

    @property
    def jobs_per_second(self) -> float:
        """Copied jobs per second of the whole run."""
        return self.copied / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        """Every field, and the rate, as JSON-ready values."""
        return {**asdict(self), "jobs_per_second": round(self.jobs_per_second, 1)}


# --- what each engine provides -----------------------------------------------------------


class CopySource(Protocol):
    """A queue database read in one snapshot (every read sees the same state), never written."""

    #: The database, for messages: a path, or a URL without its password.
    label: str
    #: Stable across moves and renames of the database: the record of what was copied is
    #: keyed by it.
    identity: str

    def processing(self) -> list[int]:
        """The ids of the jobs in ``processing``."""

    def waiting(self) -> list[int]:
        """The ids of the jobs waiting for dependencies."""

    def jobs(self, after: int, limit: int) -> list[JobRecord]:
        """Up to ``limit`` jobs to copy with ids above ``after``, by id: those still to run
        (queued: due, delayed, waiting to retry) and the failed ones. Completed and cancelled
        jobs stay behind; their batches count them still."""

    def keyed(self, size: int) -> Iterator[list[tuple[int, str]]]:
        """(id, unique key) of every queued job that has a key, ``size`` at a time."""

    def batches(self, ids: Sequence[int]) -> dict[int, tuple[BatchProgress, int, int]]:
        """The batches of those ids that exist: their counts, and how many of their queued
        and failed jobs are to be copied."""

    def close(self) -> None:
        """End the snapshot and close the connection."""


class CopyTransaction(Protocol):
    """One transaction of a target: reads, and (when writing) the chunk's writes. Job and
    batch ids of the source are keys into the record; ids of the target are its own."""

    def source(self, identity: str, location: str) -> int | None:
        """The number of the source in the record (registered when writing; None when
        peeking at a target that never got a copy of it)."""

    def copied_jobs(self, source: int, ids: Sequence[int]) -> dict[int, tuple[int, float]]:
        """For those of ``ids`` already copied, by source job id: the target job's id, and
        the source job's creation time as recorded (which tells a clone's job apart)."""

    def copied_batches(self, source: int, ids: Sequence[int]) -> dict[int, tuple[int, float]]:
        """For those of ``ids`` already copied, by source batch id: the target batch's id,
        and the source batch's creation time as recorded."""

    def active_holders(self, keys: Sequence[str]) -> dict[str, int]:
        """The queued or processing job of the target holding each key, by key."""

    def copied_from(self, source: int, job_ids: Sequence[int]) -> set[int]:
        """Those of the target's ``job_ids`` that a copy from ``source`` wrote."""

    def insert_batch(self, source: int, batch: BatchProgress) -> int:
        """Create an empty batch like ``batch`` (name, created_at) and record it; its id."""

    def insert_jobs(self, source: int, jobs: Sequence[tuple[JobRecord, int | None]]) -> list[int]:
        """Insert copies of the jobs, each in its target batch (or none), and record them;
        their ids in order. DuplicateJob if an active job holds a unique key."""

    def record_jobs(self, source: int, pairs: Sequence[tuple[JobRecord, int]]) -> None:
        """Record source jobs taken to be a job already there (its target id)."""

    def write_tally(self, tally: Tally) -> None:
        """Add the transaction's count changes, as the engine's own writes do."""

    def wake(self, queues: set[str]) -> None:
        """Wake the target's workers of ``queues`` once the transaction commits."""


class CopyTarget(Protocol):
    """A target database: transactions to read it (peek) or to copy a chunk into it."""

    #: The database, for messages.
    label: str
    #: The target's own identity (None: it holds no queue yet), to refuse copying a
    #: database into itself.
    identity: str | None

    def run(self, body: Callable[[CopyTransaction], T], what: str) -> T:
        """Run ``body`` in one transaction (retried as a whole while the fault passes)."""

    def close(self) -> None:
        """Release the connections."""


# --- the copy ----------------------------------------------------------------------------


def copy_queue(
    source: str | os.PathLike[str],
    target: str | os.PathLike[str],
    *,
    chunk_size: int = 1000,
    dry_run: bool = False,
    retry_timeout: float = 30.0,
) -> CopyReport:
    """Copy the queued (due, delayed, waiting to retry) and failed jobs of ``source``, with
    their batches, into ``target``; safe to run again (nothing is copied twice, jobs added
    to the source since are copied). Each is a SQLite path or a ``postgresql://`` URL.

    Refused (CopyRefused, nothing written) while jobs of the source are processing, and when
    an active job of the target that did not come from the source holds the unique key of
    a job to copy. ``chunk_size`` jobs go in each transaction. With ``dry_run`` nothing is
    written anywhere: the report says what a copy would do.
    """
    source, target = _location(source, "source"), _location(target, "target")
    chunk_size = validation.integer(chunk_size, "chunk_size", minimum=1)
    retry_timeout = validation.seconds(retry_timeout, "retry_timeout", positive=True)
    started = time.monotonic()
    reader: CopySource = _engine(source).open_source(source, retry_timeout=retry_timeout)
    try:
        _refuse_processing(reader)
        peek: CopyTarget = _engine(target).peek_target(target, retry_timeout=retry_timeout)
        try:
            if peek.identity is not None and peek.identity == reader.identity:
                raise CopyRefused(
                    f"{peek.label} is {reader.label} itself, or a copy of it (the same "
                    f"database identity {reader.identity}): its jobs are there already; "
                    f"name another database as the target"
                )
            _refuse_held_keys(reader, peek)
            if dry_run:
                return _copy(reader, peek, chunk_size, write=False, started=started)
        finally:
            peek.close()
        writer = _open_writer(target, retry_timeout)
        try:
            return _copy(reader, writer, chunk_size, write=True, started=started)
        finally:
            writer.close()
    finally:
        reader.close()


def _location(value: object, what: str) -> str:
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, str) or not value:
        raise InvalidArgumentType(
            f"{what} must be a SQLite path or a postgresql:// URL, got {value!r}"
        )
    return value


def _engine(target: str) -> ModuleType:
    """The ``copy`` module of the engine ``target`` names."""
    return engine_for(target).copy()


def _open_writer(target: str, retry_timeout: float) -> CopyTarget:
    """The target, its library tables created or updated (as opening a queue does) and the
    copy's own tables migrated, ready for chunks."""
    engine = _engine(target)
    queue = Queue(target, retry_timeout=retry_timeout)
    try:
        db, options = engine.migration_target(target)
        migrate(db, engine.MIGRATIONS, COPY_NAMESPACE, retry_timeout=retry_timeout, **options)
        writer: CopyTarget = engine.open_target(queue)
    except BaseException:
        queue.close()
        raise
    return writer


def _refuse_processing(reader: CopySource) -> None:
    running = reader.processing()
    if running:
        shown = ", ".join(str(i) for i in running[:10]) + (" ..." if len(running) > 10 else "")
        raise CopyRefused(
            f"{len(running)} job(s) of {reader.label} are processing (ids {shown}): workers "
            f"still run on it. Stop every worker of {reader.label}, then copy again (a job "
            f"left processing by a worker that died goes back to the queue when a worker "
            f"runs there after its lease ends); nothing was copied"
        )
    waiting = reader.waiting()
    if waiting:
        shown = ", ".join(str(i) for i in waiting[:10]) + (" ..." if len(waiting) > 10 else "")
        raise CopyRefused(
            f"{len(waiting)} job(s) of {reader.label} wait for dependencies (ids {shown}): a "
            f"copy does not carry dependencies. Let them run (or cancel them), then copy "
            f"again; nothing was copied"
        )


def _refuse_held_keys(reader: CopySource, peek: CopyTarget) -> None:
    """Before anything is written: refuse when a job to copy has a unique key that an active
    job of the target holds, unless that job came from this source."""
    conflicts: list[tuple[int, str, int]] = []
    for keyed in reader.keyed(1000):
        conflicts += peek.run(partial(_held_keys, reader=reader, keyed=keyed), "check keys")
    if conflicts:
        named = "; ".join(
            f"key {key!r}: source job {job_id}, target job {holder}"
            for job_id, key, holder in conflicts[:_NAMED]
        )
        more = f" and {len(conflicts) - _NAMED} more" if len(conflicts) > _NAMED else ""
        raise CopyRefused(
            f"{len(conflicts)} job(s) of {reader.label} cannot be copied: an active job of "
            f"{peek.label} that did not come from {reader.label} holds its unique key "
            f"({named}{more}); finish or cancel one job of each pair, then copy again; "
            f"nothing was copied"
        )


def _held_keys(
    tx: CopyTransaction, reader: CopySource, keyed: list[tuple[int, str]]
) -> list[tuple[int, str, int]]:
    number = tx.source(reader.identity, reader.label)
    done = tx.copied_jobs(number, [i for i, _ in keyed]) if number is not None else {}
    waiting = [(i, key) for i, key in keyed if i not in done]
    holders = _holders(tx, number, [key for _, key in waiting])
    return [
        (i, key, holders[key][0]) for i, key in waiting if key in holders and not holders[key][1]
    ]


def _holders(
    tx: CopyTransaction, number: int | None, keys: list[str]
) -> dict[str, tuple[int, bool]]:
    """The active job of the target that holds each key (of those held), and whether a copy
    from the source (``number``) wrote it."""
    holders = tx.active_holders(keys) if keys else {}
    ours = (
        tx.copied_from(number, list(holders.values())) if holders and number is not None else set()
    )
    return {key: (job, job in ours) for key, job in holders.items()}


@dataclass
class _Totals:
    copied: int = 0
    queued: int = 0
    delayed: int = 0
    retrying: int = 0
    failed: int = 0
    batches: int = 0
    already_copied: int = 0
    deduplicated: int = 0
    chunks: int = 0


@dataclass(frozen=True, slots=True)
class _Chunk:
    """What one chunk's transaction wrote (or would write)."""

    inserted: list[JobRecord]
    new_batches: list[int]
    already_copied: int
    deduplicated: int


def _copy(
    reader: CopySource, target: CopyTarget, chunk_size: int, *, write: bool, started: float
) -> CopyReport:
    totals = _Totals()
    batches: dict[int, SourceBatch] = {}
    created: set[int] = set()
    now = time.time()
    after = 0
    while True:
        jobs = reader.jobs(after, chunk_size)
        if not jobs:
            break
        after = jobs[-1].id
        wanted = sorted({j.batch_id for j in jobs if j.batch_id is not None} - set(batches))
        if wanted:
            batches.update((i, SourceBatch(*found)) for i, found in reader.batches(wanted).items())
        body = partial(_copy_chunk, reader=reader, jobs=jobs, batches=batches, write=write)
        chunk = target.run(body, "copy")
        totals.chunks += 1
        totals.already_copied += chunk.already_copied
        totals.deduplicated += chunk.deduplicated
        totals.batches += len(set(chunk.new_batches) - created)
        created.update(chunk.new_batches)
        for job in chunk.inserted:
            totals.copied += 1
            if job.status == "failed":
                totals.failed += 1
                continue
            totals.queued += 1
            totals.delayed += job.run_at > now
            totals.retrying += job.attempts > 0
        if write and totals.chunks % 100 == 0:
            log.info(
                "copied %d jobs from %s to %s so far", totals.copied, reader.label, target.label
            )
    return CopyReport(
        source=reader.label,
        target=target.label,
        source_identity=reader.identity,
        dry_run=not write,
        seconds=round(time.monotonic() - started, 3),
        **asdict(totals),
    )


def _copy_chunk(
    tx: CopyTransaction,
    reader: CopySource,
    jobs: list[JobRecord],
    batches: dict[int, SourceBatch],
    write: bool,
) -> _Chunk:
    """One chunk in one transaction of the target: skip what was copied, refuse a held key,
    create the batches met for the first time, insert the jobs with their record, add to
    the counts, wake the workers. With ``write`` false, only what it would do."""
    number = tx.source(reader.identity, reader.label)
    done = tx.copied_jobs(number, [j.id for j in jobs]) if number is not None else {}
    for job in jobs:
        if job.id in done and done[job.id][1] != job.created_at:
            raise _clone(reader, f"job {job.id}", job.created_at, done[job.id][1])
    todo = [j for j in jobs if j.id not in done]
    keyed = {j.unique_key: j for j in todo if j.unique_key is not None and j.status == "queued"}
    same: dict[int, int] = {}
    for key, (holder, ours) in _holders(tx, number, list(keyed)).items():
        if not ours:  # taken since the check before the first chunk
            raise CopyRefused(
                f"job {keyed[key].id} of {reader.label} cannot be copied: job {holder} of the "
                f"target, which did not come from {reader.label}, took its unique key "
                f"{key!r} during the copy; finish or cancel one of them, then copy again "
                f"(the chunks before this one are copied; a rerun goes on from here)"
            )
        same[keyed[key].id] = holder
    insert = [j for j in todo if j.id not in same]
    wanted = sorted({j.batch_id for j in insert if j.batch_id is not None})
    recorded = tx.copied_batches(number, wanted) if number is not None and wanted else {}
    for batch_id, (_, created_at) in recorded.items():
        source_created = batches[batch_id].progress.created_at
        if created_at != source_created:
            raise _clone(reader, f"batch {batch_id}", source_created, created_at)
    mapped = {batch_id: target_batch for batch_id, (target_batch, _) in recorded.items()}
    new = [b for b in wanted if b not in mapped]
    chunk = _Chunk(insert, new, len(done), len(same))
    if not write:
        return chunk
    assert number is not None
    tally = Tally()
    for source_batch in new:
        batch = batches[source_batch]
        target_batch = mapped[source_batch] = tx.insert_batch(number, batch.progress)
        _add_baseline(tally, target_batch, batch)
    placed = [(j, None if j.batch_id is None else mapped[j.batch_id]) for j in insert]
    tx.insert_jobs(number, placed)
    if same:
        tx.record_jobs(number, [(job, same[job.id]) for job in todo if job.id in same])
    for job, in_batch in placed:
        tally.move(job.queue, in_batch, None, job.status)
    tx.write_tally(tally)
    tx.wake({j.queue for j in insert if j.status == "queued"})
    return chunk


def _clone(reader: CopySource, what: str, created_at: float, recorded: float) -> CopyRefused:
    """A job or batch recorded under this source's identity and id, created at another time:
    the source is a byte copy of a queue file that was copied before (same identity)."""
    return CopyRefused(
        f"{what} of {reader.label} is not the one recorded as copied under that id from the "
        f"database of identity {reader.identity} (created at {created_at!r}, recorded "
        f"{recorded!r}): {reader.label} is a byte copy of a queue file copied into this "
        f"target before, and shares its identity; copy it into another target (or schema). "
        f"The chunks before this one are copied"
    )


def _add_baseline(tally: Tally, target_batch: int, batch: SourceBatch) -> None:
    """A new batch starts with the counts of the source's jobs that stay behind (completed,
    cancelled, purged): its copied jobs add to them as they are inserted, so that once all
    are in, the batch reads as in the source, and at every commit its counts agree with
    the jobs the target holds."""
    progress = batch.progress
    baseline = {
        "total": progress.total - batch.queued_to_copy - batch.failed_to_copy,
        "queued": progress.queued - batch.queued_to_copy,
        "processing": progress.processing,
        "completed": progress.completed,
        "failed": progress.failed - batch.failed_to_copy,
        "cancelled": progress.cancelled,
    }
    counts = tally.batches.setdefault(target_batch, dict.fromkeys(BATCH_COLUMNS, 0))
    for name, value in baseline.items():
        counts[name] += value


__all__ = [
    "COPY_NAMESPACE",
    "CopyRefused",
    "CopyReport",
    "CopySource",
    "CopyTarget",
    "CopyTransaction",
    "SourceBatch",
    "copy_queue",
]
