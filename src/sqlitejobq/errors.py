"""Every error sqlitejobq raises derives from ``SqliteJobQError``."""

from __future__ import annotations

from typing import Any


class SqliteJobQError(Exception):
    """Base class of all errors raised by sqlitejobq."""


class StorageError(SqliteJobQError):
    """The database could not do what was asked (a storage fault); the message says what to do.

    Its subclasses name the common faults. Nothing of the failed operation was stored.
    """


class DatabaseBusy(StorageError):
    """The database stayed locked by other connections for longer than the retry bound."""


class DiskFull(StorageError):
    """The file system holding the database has no space left (nothing of the write stored)."""


class ReadOnlyDatabase(StorageError):
    """The database cannot be written: a read-only file, directory or mount."""


class DatabaseUnavailable(StorageError):
    """The database cannot be opened or read: a missing directory, an I/O error."""


class NotAQueueDatabase(StorageError):
    """The file is not a SQLite database, or holds tables sqlitejobq did not create."""


class CorruptDatabase(StorageError):
    """The database file is damaged (truncated, overwritten); restore it from a backup."""


class UnknownTask(SqliteJobQError, LookupError):
    """No handler is registered under a task name."""


class JobNotFound(SqliteJobQError, LookupError):
    """No job has the given id."""


class PermanentFailure(SqliteJobQError):
    """Raised by a handler: fail the job now, without using the attempts it has left."""


class Snooze(SqliteJobQError):
    """Raised by a handler: not yet. The job goes back to ``queued``, due in ``seconds``,
    without counting the attempt; its history records the snooze. A job snoozed more than
    the queue's ``max_snoozes`` times fails instead, saying so."""

    def __init__(self, seconds: float) -> None:
        from .validation import seconds as checked_seconds

        self.seconds = checked_seconds(seconds, "Snooze seconds")
        super().__init__(f"snoozed for {self.seconds:g}s")


class PayloadError(SqliteJobQError, ValueError):
    """A payload or result is not JSON, not valid Unicode, too deep, or over the size bound."""


class MigrationError(SqliteJobQError):
    """A migration could not be applied, or the recorded schema disagrees with the code."""


class InvalidArgument(SqliteJobQError, ValueError):
    """An argument has the right type but a value outside what is allowed."""


class InvalidArgumentType(SqliteJobQError, TypeError):
    """An argument has the wrong type."""


class UnsafeFilesystem(StorageError):
    """The database lives on a filesystem where SQLite's locking is not reliable."""


class DuplicateJob(SqliteJobQError):
    """A job cannot be re-queued because another active job holds its unique key."""


class QueueClosed(SqliteJobQError):
    """The queue was closed; open a new ``Queue`` to go on."""


class WaitTimeout(SqliteJobQError, TimeoutError):
    """``Queue.wait`` (or ``wait_batch``) ran out of time before the job (or batch) finished."""


class JobFailed(SqliteJobQError):
    """``Queue.wait(..., raise_on_failure=True)``: the job ended failed or cancelled; the
    finished job is ``.job``."""

    def __init__(self, message: str, job: object) -> None:
        super().__init__(message)
        self.job = job

    @classmethod
    def of(cls, job: Any) -> JobFailed:
        """The error for a finished job that did not complete: its status and first line of
        error."""
        error = f": {job.error.splitlines()[0]}" if job.error else ""
        return cls(f"job {job.id} {job.task} ended {job.status.value}{error}", job)


class LeaseExpired(SqliteJobQError):
    """A run that ended without an outcome: its worker stopped renewing the lease (it
    crashed, was killed or hung) and another worker took the job back; the error of that
    attempt, as its history records it."""


class JobTimeout(SqliteJobQError):
    """A running job outlived its task's timeout: raised by its next progress report or
    heartbeat, and recorded as the error of the attempt the worker ends."""
