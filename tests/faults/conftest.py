"""The fault suite: what every engine must survive, written once, run on each engine.

A test takes the ``engine`` fixture: it opens queues on a fresh database of that engine,
starts real worker processes on it, and stages the engine's faults (another process holding
the write lock, a full disk, a read-only mount, ...). A fault that only one engine can have
is marked ``@pytest.mark.engines("sqlite")``; the others say so when they skip it.
"""

from __future__ import annotations

import collections
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from sqlitejobq import Queue

from . import apps

ROOT = Path(__file__).resolve().parents[2]
APP = "tests.faults.apps:registry"
ENGINES = ("sqlite",)


class Engine:
    """One engine under test: where its database is, and how to stage its faults."""

    name = "engine"

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.run_log = tmp_path / "runs.log"
        self.target = ""

    def open(self, **options: Any) -> Queue:
        """A queue on this test's database (with the fault suite's handlers, unless given)."""
        options.setdefault("registry", apps.registry)
        return Queue(self.target, **options)

    def env(self, **extra: str) -> dict[str, str]:
        """The environment of the worker processes and CLI calls of a test."""
        return {
            **os.environ, "PYTHONPATH": str(ROOT), "SQLITEJOBQ_TEST_LOG": str(self.run_log),
            "SQLITEJOBQ_DB": self.target, **extra,
        }  # fmt: skip

    def worker(self, *args: str, app: str = APP, **env: str) -> subprocess.Popen[str]:
        """``sqlitejobq worker`` on this database, its output captured."""
        return subprocess.Popen(
            [sys.executable, "-m", "sqlitejobq", "worker", "--db", self.target, "--app", app,
             "--log-level", "INFO", *args],
            cwd=ROOT, env=self.env(**env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True,
        )  # fmt: skip

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        """One ``sqlitejobq`` command on this database."""
        return subprocess.run(
            [sys.executable, "-m", "sqlitejobq", *args, "--db", self.target],
            cwd=ROOT, env=self.env(), capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip

    @contextmanager
    def writes_blocked(self, seconds: float) -> Iterator[None]:
        """Another process holds the write lock from entry for ``seconds``."""
        raise NotImplementedError

    def runs(self) -> collections.Counter[int]:
        """How many times each job's handler started, from the handlers' log."""
        if not self.run_log.exists():
            return collections.Counter()
        lines = self.run_log.read_text().splitlines()
        return collections.Counter(int(line.split()[0]) for line in lines)


class SqliteEngine(Engine):
    """A SQLite file in the test's temporary directory."""

    name = "sqlite"

    def __init__(self, tmp_path: Path) -> None:
        super().__init__(tmp_path)
        self.target = str(tmp_path / "jobs.db")

    @contextmanager
    def writes_blocked(self, seconds: float) -> Iterator[None]:
        holder = subprocess.Popen(
            [sys.executable, "-c", _HOLD_SQLITE_LOCK, self.target, str(seconds)],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "locked", "the lock holder did not start"
        try:
            yield
        finally:
            holder.wait(seconds + 30)
        assert holder.returncode == 0


_HOLD_SQLITE_LOCK = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
conn.execute("ROLLBACK")
"""


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "engines(*names): the engines a fault test applies to")


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Engine:
    marker = request.node.get_closest_marker("engines")
    if marker is not None and request.param not in marker.args:
        pytest.skip(f"a fault of {', '.join(marker.args)} only")
    return {"sqlite": SqliteEngine}[request.param](tmp_path)


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


def finish(process: subprocess.Popen[str], timeout: float = 60) -> str:
    out, _ = process.communicate(timeout=timeout)
    return out
