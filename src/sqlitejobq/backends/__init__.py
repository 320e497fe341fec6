"""The storage engines, and choosing one from a target: a path is a SQLite file, a
``postgresql://`` (or ``postgres://``) URL a PostgreSQL database.

The PostgreSQL engine needs the ``postgres`` extra (psycopg); it is imported only when a
URL asks for it, so the core keeps tenacity as its only dependency.
"""

from __future__ import annotations

import importlib
import os
import re
from collections.abc import Callable
from types import ModuleType
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit, urlunsplit

from ..errors import SqliteJobQError
from ..migrations.values import Migration, MigrationRunner
from .base import Backend, Engine
from .sqlite import ENGINE as SQLITE
from .sqlite.connection import TransactionConnection, split_statements

#: The loggers of the engines' drivers, which a command line quiets below errors.
DRIVER_LOGGERS = ("psycopg",)

#: The URL schemes that name a PostgreSQL database.
POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def is_postgres_target(target: object) -> bool:
    """True when ``target`` names a PostgreSQL database (a URL, or a psycopg connection)."""
    if isinstance(target, str):
        return target.startswith(POSTGRES_SCHEMES)
    return type(target).__module__.split(".")[0] == "psycopg"


#: Query parameters of a URL whose values are credentials (libpq's ``password``,
#: ``sslpassword``, and anything named like a secret).
_SECRET_PARAMETER = re.compile(r"pass|secret|token|auth|credential|(^|_)key$", re.IGNORECASE)


def redact_target(target: object) -> str:
    """``target`` as it may be shown or logged: a URL without its credentials (the password
    of its user part and every query parameter that carries one), a path as it is."""
    text = os.fspath(target) if isinstance(target, str | os.PathLike) else repr(target)
    if not is_postgres_target(text):
        return str(text)
    try:
        parts = urlsplit(text)
        netloc = parts.netloc
        if "@" in netloc:  # user:password@host: only the user is kept
            user, _, host = netloc.rpartition("@")
            name = user.split(":", 1)[0]
            netloc = f"{name}@{host}" if name else host
        pairs = parse_qsl(parts.query, keep_blank_values=True)
        query = "&".join(
            f"{quote(key, safe='')}="
            + ("***" if _SECRET_PARAMETER.search(key) else quote(value, safe="/:,"))
            for key, value in pairs
        )
        return urlunsplit(parts._replace(netloc=netloc, query=query))
    except ValueError:  # not a URL urllib can split (a bad port, say): show no part of it
        return f"{text.split('://', 1)[0]}://(a URL that cannot be read)"


def engine_for(target: object) -> Engine:
    """The engine ``target`` names: a ``postgresql://`` URL or a psycopg connection is
    PostgreSQL (a clear error naming the extra if psycopg is missing), anything else SQLite
    (which refuses what is not a path or a ``sqlite3`` connection when it opens it)."""
    if is_postgres_target(target):
        engine: Engine = load_postgres().ENGINE
        return engine
    return SQLITE


def open_backend(
    target: str | os.PathLike[str],
    *,
    retry_timeout: float,
    clock: Callable[[], float] | None,
    options: dict[str, Any],
) -> Backend:
    """The engine that ``target`` names, configured with the queue's engine ``options``."""
    return engine_for(target).open_backend(
        target, retry_timeout=retry_timeout, clock=clock, options=options
    )


def migration_runner(db: Any, *, retry_timeout: float, options: dict[str, Any]) -> MigrationRunner:
    """The migration runner of the engine ``db`` (a path, a URL or a connection) names."""
    return engine_for(db).migration_runner(db, retry_timeout=retry_timeout, options=options)


def library_schema(db: Any) -> tuple[str, list[Migration]]:
    """The namespace and migrations of the library's own tables on the engine ``db`` names."""
    engine = engine_for(db)
    return engine.namespace, list(engine.migrations)


def load_postgres() -> ModuleType:
    """The PostgreSQL engine's package; a clear error naming the extra if psycopg is missing."""
    try:
        return importlib.import_module(".postgres", __name__)
    except ImportError as exc:
        if exc.name is not None and exc.name.split(".")[0] in ("psycopg", "psycopg_pool"):
            raise SqliteJobQError(
                f"a postgresql:// queue needs the PostgreSQL driver: pip install "
                f"'sqlitejobq[postgres]' ({exc.name} is not installed)"
            ) from None
        raise


__all__ = [
    "DRIVER_LOGGERS",
    "POSTGRES_SCHEMES",
    "SQLITE",
    "Backend",
    "Engine",
    "MigrationRunner",
    "TransactionConnection",
    "engine_for",
    "is_postgres_target",
    "library_schema",
    "migration_runner",
    "open_backend",
    "redact_target",
    "split_statements",
]
