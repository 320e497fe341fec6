"""Migration values: what a migration is, what was applied, what runs one (per engine)."""

from __future__ import annotations

import hashlib
import inspect
import logging
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from .. import validation
from ..errors import InvalidArgument, InvalidArgumentType, MigrationError

log = logging.getLogger("sqlitejobq")

#: A migration's body: SQL text, or a callable given the engine's transaction connection.
MigrationBody = str | Callable[[Any], None]

_COMMENTS = re.compile(r"--[^\n]*|/\*.*?\*/", re.DOTALL)


@dataclass(frozen=True, slots=True)
class Migration:
    """One schema change: a version, a name, and SQL text or a callable taking a connection.

    SQL text may hold several statements; they run inside the migration's transaction.
    A callable gets the engine's transaction connection (it can read and write, not commit).
    """

    version: int
    name: str
    sql: MigrationBody

    def __post_init__(self) -> None:
        validation.integer(self.version, "migration version", minimum=1)
        if not isinstance(self.name, str) or not self.name.strip():
            raise InvalidArgument(
                f"migration {self.version} needs a non-empty name, got {self.name!r}"
            )
        if isinstance(self.sql, str):
            if not _COMMENTS.sub("", self.sql).strip(" \t\r\n;"):
                raise InvalidArgument(f"migration {self.version} ({self.name}) has no SQL")
        elif not callable(self.sql):
            raise InvalidArgumentType(
                f"migration {self.version} sql must be SQL text or a callable, "
                f"got {type(self.sql).__name__}"
            )

    @property
    def checksum(self) -> str:
        """A digest of the migration's text: an applied migration must never change."""
        if isinstance(self.sql, str):
            text = "\n".join(line.rstrip() for line in self.sql.strip().splitlines())
        else:
            try:
                text = inspect.getsource(self.sql)
            except (OSError, TypeError):
                text = f"{self.sql.__module__}.{self.sql.__qualname__}"
        return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class AppliedMigration:
    """A migration recorded as applied in the database."""

    version: int
    name: str
    checksum: str
    applied_at: float


class MigrationRunner(Protocol):
    """An engine's way of applying migrations: each in its own transaction with its
    bookkeeping row, serialized between processes, retried like every write."""

    def applied(self, namespace: str) -> list[AppliedMigration]:
        """The migrations recorded as applied in ``namespace``, oldest first."""

    def apply(
        self, migrations: list[Migration], namespace: str, *, dry_run: bool, backup: str | None
    ) -> list[int]:
        """Apply the missing ones in order; the versions applied (or that would be)."""

    def close(self) -> None:
        """Release what the runner opened."""


def checked_migrations(migrations: Iterable[Migration], namespace: str) -> list[Migration]:
    """The migrations, checked and in version order; a version listed twice is refused."""
    if isinstance(migrations, Migration) or not isinstance(migrations, Iterable):
        raise InvalidArgumentType("migrations must be a list of Migration")
    ordered = list(migrations)
    for migration in ordered:
        if not isinstance(migration, Migration):
            raise InvalidArgumentType(
                f"migrations must be Migration values, got {type(migration).__name__}"
            )
    versions = [m.version for m in ordered]
    duplicates = sorted({v for v in versions if versions.count(v) > 1})
    if duplicates:
        raise MigrationError(f"namespace {namespace!r} lists version(s) {duplicates} twice")
    return sorted(ordered, key=lambda m: m.version)


def pending(
    ordered: list[Migration], applied: list[AppliedMigration], namespace: str
) -> list[Migration]:
    """The migrations not applied yet; MigrationError if the database records a version
    this code does not know, or one whose text changed (it is newer than the code)."""
    known = {m.version: m for m in ordered}
    for record in applied:
        migration = known.get(record.version)
        if migration is None:
            raise MigrationError(
                f"database has migration {namespace}:{record.version} ({record.name}) applied, "
                f"which this code does not know (known: {sorted(known) or 'none'}); is the "
                f"database newer than the code?"
            )
        if migration.checksum != record.checksum:
            raise MigrationError(
                f"migration {namespace}:{record.version} ({record.name}) was applied with "
                f"different text; applied migrations must not change — add a new version instead"
            )
    done = {record.version for record in applied}
    return [m for m in ordered if m.version not in done]


def run_pending(
    todo: Sequence[Migration],
    namespace: str,
    *,
    dry_run: bool,
    apply: Callable[[Migration], bool],
    before: Callable[[], None] | None = None,
) -> list[int]:
    """Apply ``todo`` in order, each by ``apply`` (its own transaction, retried; False when
    another process applied it meanwhile), after ``before`` when something will run. The
    versions applied; with ``dry_run``, those that would be, and nothing runs."""
    if dry_run or not todo:
        for migration in todo:
            log.info("migration %s:%d %s would run", namespace, migration.version, migration.name)
        return [m.version for m in todo]
    if before is not None:
        before()
    done = []
    for migration in todo:
        if apply(migration):
            done.append(migration.version)
            log.info("migration %s:%d %s applied", namespace, migration.version, migration.name)
    return done


def applied_meanwhile(checksum: str | None, migration: Migration, namespace: str) -> bool:
    """Whether another process applied ``migration`` while this one waited for its lock
    (``checksum``: the one recorded for its version, None if none is): True if so, and
    MigrationError if the text it applied differs."""
    if checksum is None:
        return False
    if checksum != migration.checksum:
        raise MigrationError(
            f"migration {namespace}:{migration.version} was applied concurrently with "
            f"different text"
        )
    return True
