"""The PostgreSQL engine: one queue shared by many hosts (the ``postgres`` extra: psycopg)."""

from . import schema
from .backend import PostgresBackend
from .connection import OPTIONS, PgSettings, TransactionConnection
from .migrate import PostgresMigrationRunner

__all__ = [
    "OPTIONS",
    "PgSettings",
    "PostgresBackend",
    "PostgresMigrationRunner",
    "TransactionConnection",
    "schema",
]
