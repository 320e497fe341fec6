"""The SQLite engine: a queue in one file on this host (the default engine)."""

from .backend import OPTIONS, Settings, SqliteBackend
from .connection import TransactionConnection
from .migrate import SqliteMigrationRunner

__all__ = ["OPTIONS", "Settings", "SqliteBackend", "SqliteMigrationRunner", "TransactionConnection"]
