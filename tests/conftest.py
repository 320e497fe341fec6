"""Shared fixtures: a queue on a real SQLite file in a temporary directory, a clock to steer."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from sqlitejobq import Queue, Registry


class Clock:
    """A clock the test moves by hand, so leases and delays expire when the test says."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self.now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.now += seconds


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "jobs.db"


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def registry() -> Registry:
    return Registry()


@pytest.fixture
def queue(db_path: Path, registry: Registry) -> Iterator[Queue]:
    q = Queue(db_path, registry=registry, retry_backoff=0.0)
    yield q
    q.close()


@pytest.fixture
def clocked_queue(db_path: Path, registry: Registry, clock: Clock) -> Iterator[Queue]:
    q = Queue(db_path, registry=registry, clock=clock, retry_backoff=1.0, retry_backoff_max=60.0)
    yield q
    q.close()
