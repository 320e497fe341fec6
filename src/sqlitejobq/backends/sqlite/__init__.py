"""The SQLite engine: a queue in one file on this host (the default engine)."""

from __future__ import annotations

import importlib
import os
import sqlite3
from types import ModuleType
from typing import Any

from ...errors import InvalidArgumentType, SqliteJobQError
from ..base import Engine
from . import schema
from .backend import OPTIONS, Settings, SqliteBackend
from .connection import TransactionConnection
from .migrate import SqliteMigrationRunner


def _migration_runner(
    db: Any, *, retry_timeout: float, options: dict[str, Any]
) -> SqliteMigrationRunner:
    if options:
        raise SqliteJobQError(f"options {sorted(options)} apply to PostgreSQL only")
    if not isinstance(db, str | os.PathLike | sqlite3.Connection):
        raise InvalidArgumentType(
            f"db must be a path, a postgresql:// URL or a connection, got {type(db).__name__}"
        )
    return SqliteMigrationRunner(db, retry_timeout)


def _copy() -> ModuleType:
    return importlib.import_module(".copy", __name__)


def _same_file(given: str, target: str) -> bool:
    return os.path.realpath(given) == os.path.realpath(target)


ENGINE = Engine(
    name="SQLite",
    is_file=True,
    open_backend=SqliteBackend.create,
    migration_runner=_migration_runner,
    namespace=schema.NAMESPACE,
    migrations=schema.MIGRATIONS,
    transaction_connection=TransactionConnection,
    copy=_copy,
    location=os.path.abspath,
    same_database=_same_file,
)

__all__ = [
    "ENGINE",
    "OPTIONS",
    "Settings",
    "SqliteBackend",
    "SqliteMigrationRunner",
    "TransactionConnection",
]
