"""Every error sqlitejobq raises derives from ``SqliteJobQError``."""

from __future__ import annotations


class SqliteJobQError(Exception):
    """Base class of all errors raised by sqlitejobq."""


class DatabaseBusy(SqliteJobQError):
    """The database stayed locked by other connections for longer than the retry bound."""


class UnknownTask(SqliteJobQError, LookupError):
    """No handler is registered under a task name."""


class JobNotFound(SqliteJobQError, LookupError):
    """No job has the given id."""


class PermanentFailure(SqliteJobQError):
    """Raised by a handler: fail the job now, without using the attempts it has left."""


class PayloadError(SqliteJobQError, ValueError):
    """A payload or result is not JSON, or is larger than the configured bound."""


class MigrationError(SqliteJobQError):
    """A migration could not be applied, or the recorded schema disagrees with the code."""


class InvalidArgument(SqliteJobQError, ValueError):
    """An argument has the right type but a value outside what is allowed."""


class InvalidArgumentType(SqliteJobQError, TypeError):
    """An argument has the wrong type."""


class UnsafeFilesystem(SqliteJobQError):
    """The database lives on a filesystem where SQLite's locking is not reliable."""


class DuplicateJob(SqliteJobQError):
    """A job cannot be re-queued because another active job holds its unique key."""


class QueueClosed(SqliteJobQError):
    """The queue was closed; open a new ``Queue`` to go on."""
