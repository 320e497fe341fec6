"""The PostgreSQL engine: one queue shared by many hosts (the ``postgres`` extra: psycopg)."""

from __future__ import annotations

import importlib
from types import ModuleType

from ..base import Engine
from . import schema
from .backend import PostgresBackend
from .connection import OPTIONS, PgSettings, TransactionConnection
from .migrate import PostgresMigrationRunner


def _copy() -> ModuleType:
    return importlib.import_module(".copy", __name__)


def _same_url(given: str, target: str) -> bool:
    from .. import redact_target

    return redact_target(given) == target


def _as_given(target: str) -> str:
    return target


ENGINE = Engine(
    name="PostgreSQL",
    is_file=False,
    open_backend=PostgresBackend.create,
    migration_runner=PostgresMigrationRunner,
    namespace=schema.NAMESPACE,
    migrations=schema.MIGRATIONS,
    transaction_connection=TransactionConnection,
    copy=_copy,
    location=_as_given,
    same_database=_same_url,
)

__all__ = [
    "ENGINE",
    "OPTIONS",
    "PgSettings",
    "PostgresBackend",
    "PostgresMigrationRunner",
    "TransactionConnection",
    "schema",
]
