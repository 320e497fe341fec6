"""sqlitejobq: a job queue on SQLite that never jams."""

from .__about__ import __version__
from .backends.sqlite import TransactionConnection
from .errors import (
    CorruptDatabase,
    DatabaseBusy,
    DatabaseUnavailable,
    DiskFull,
    DuplicateJob,
    InvalidArgument,
    InvalidArgumentType,
    JobNotFound,
    JobTimeout,
    MigrationError,
    NotAQueueDatabase,
    PayloadError,
    PermanentFailure,
    QueueClosed,
    ReadOnlyDatabase,
    SqliteJobQError,
    StorageError,
    UnknownTask,
    UnsafeFilesystem,
)
from .job import Batch, BatchProgress, Job, JobStatus, LockStats, QueueStats, WorkerInfo
from .queue import Queue
from .registry import Registry, Task, TaskOptions
from .worker import Worker, WorkerSummary

__all__ = [
    "Batch",
    "BatchProgress",
    "CorruptDatabase",
    "DatabaseBusy",
    "DatabaseUnavailable",
    "DiskFull",
    "DuplicateJob",
    "InvalidArgument",
    "InvalidArgumentType",
    "Job",
    "JobNotFound",
    "JobStatus",
    "JobTimeout",
    "LockStats",
    "MigrationError",
    "NotAQueueDatabase",
    "PayloadError",
    "PermanentFailure",
    "Queue",
    "QueueClosed",
    "QueueStats",
    "ReadOnlyDatabase",
    "Registry",
    "SqliteJobQError",
    "StorageError",
    "Task",
    "TaskOptions",
    "TransactionConnection",
    "UnknownTask",
    "UnsafeFilesystem",
    "Worker",
    "WorkerInfo",
    "WorkerSummary",
    "__version__",
]
