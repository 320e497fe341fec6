"""sqlitejobq: a job queue on SQLite that never jams."""

from .__about__ import __version__
from .errors import (
    DatabaseBusy,
    DuplicateJob,
    InvalidArgument,
    InvalidArgumentType,
    JobNotFound,
    MigrationError,
    PayloadError,
    PermanentFailure,
    QueueClosed,
    SqliteJobQError,
    UnknownTask,
    UnsafeFilesystem,
)
from .job import Batch, BatchProgress, Job, JobStatus, LockStats, QueueStats, WorkerInfo
from .queue import Queue
from .registry import Registry, Task, TaskOptions
from .storage import TransactionConnection
from .worker import Worker, WorkerSummary

__all__ = [
    "Batch",
    "BatchProgress",
    "DatabaseBusy",
    "DuplicateJob",
    "InvalidArgument",
    "InvalidArgumentType",
    "Job",
    "JobNotFound",
    "JobStatus",
    "LockStats",
    "MigrationError",
    "PayloadError",
    "PermanentFailure",
    "Queue",
    "QueueClosed",
    "QueueStats",
    "Registry",
    "SqliteJobQError",
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
