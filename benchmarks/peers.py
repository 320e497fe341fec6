"""The systems that ``benchmarks.compare`` puts side by side, one adapter class each.

Each adapter drives its system the way that system's documentation shows, on a fresh
database file, and changes nothing but the durability setting its documented options reach.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import json
import signal
import sqlite3
import sys
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar, cast

Payload = dict[str, int]
Body = Callable[[threading.Event], None]

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SYNCHRONOUS_NAMES = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}


class DrainError(Exception):
    """A drain that did not finish: a worker raised, or the time bound ran out."""


class ExecutionCounter:
    """Counts the runs of each job by its index ``i``; every system's handler calls ``hit``."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self._counts = [0] * expected
        self._strays: list[object] = []
        self._total = 0
        self._changed = threading.Condition()

    def hit(self, index: object) -> None:
        """Record one run of the job with this index."""
        with self._changed:
            if isinstance(index, int) and 0 <= index < self.expected:
                self._counts[index] += 1
            else:
                self._strays.append(index)
            self._total += 1
            if self._total >= self.expected:
                self._changed.notify_all()

    @property
    def total(self) -> int:
        """Runs recorded so far, repeats included."""
        with self._changed:
            return self._total

    def wait_for_all(self, timeout: float) -> bool:
        """Block until as many runs as jobs were recorded; False if the timeout came first."""
        with self._changed:
            return self._changed.wait_for(lambda: self._total >= self.expected, timeout)

    def problem(self) -> str | None:
        """What went wrong if any job ran other than exactly once, else None."""
        with self._changed:
            missing = [i for i, count in enumerate(self._counts) if count == 0]
            repeated = [i for i, count in enumerate(self._counts) if count > 1]
            strays = list(self._strays)
        faults = []
        if missing:
            faults.append(
                f"{len(missing)} of {self.expected} jobs never ran (first: {missing[:3]})"
            )
        if repeated:
            faults.append(f"{len(repeated)} jobs ran more than once (first: {repeated[:3]})")
        if strays:
            faults.append(f"{len(strays)} runs of jobs that were never enqueued ({strays[:3]!r})")
        return "; ".join(faults) or None


@dataclass(frozen=True)
class Durability:
    """The journal mode and ``synchronous`` level a system's connection runs with."""

    journal_mode: str
    synchronous: str

    def __str__(self) -> str:
        return f"{self.journal_mode}, {self.synchronous}"


@dataclass(frozen=True)
class Stored:
    """What a system's own table says about the jobs: waiting, and finished if it keeps them."""

    waiting: int
    finished: int | None


class Adapter(ABC):
    """One system, opened on a fresh file in ``workdir`` at one durability setting."""

    key: ClassVar[str]
    label: ClassVar[str]
    distribution: ClassVar[str | None] = None
    # Settings reachable through documented options; None means "whatever the library does".
    settings: ClassVar[tuple[str | None, ...]] = ("FULL", "NORMAL")
    enqueue_note: ClassVar[str]
    batch_note: ClassVar[str | None] = None
    drain_note: ClassVar[str]
    measures_single: ClassVar[bool] = True

    def __init__(self, workdir: Path, synchronous: str | None, counter: ExecutionCounter) -> None:
        self.workdir = workdir
        self.synchronous = synchronous
        self.counter = counter

    @classmethod
    def unavailable(cls) -> str | None:
        """Why the system cannot run here, or None when it can."""
        return None

    @classmethod
    def version(cls) -> str:
        """The installed version of the system."""
        if cls.distribution is None:
            return "unknown"
        try:
            return metadata.version(cls.distribution)
        except metadata.PackageNotFoundError:
            return "not installed"

    @classmethod
    @abstractmethod
    def setting_note(cls, synchronous: str | None) -> str:
        """How the durability setting is chosen, for the table."""

    @abstractmethod
    def open(self) -> None:
        """Create the queue on a fresh file in ``workdir``."""

    @abstractmethod
    def enqueue_each(self, payloads: Sequence[Payload]) -> None:
        """Enqueue the jobs one call each."""

    def enqueue_batch(self, payloads: Sequence[Payload]) -> None:
        """Enqueue the jobs through the system's batch call."""
        raise NotImplementedError(f"{self.label} has no batch call")

    def preload(self, payloads: Sequence[Payload]) -> None:
        """Fill the queue before a drain, by the fastest documented path."""
        if self.batch_note is None:
            self.enqueue_each(payloads)
        else:
            self.enqueue_batch(payloads)

    @abstractmethod
    def drain(self, threads: int, timeout: float) -> float:
        """Run every queued job on ``threads`` workers; the seconds it took, setup excluded."""

    @abstractmethod
    def stored(self) -> Stored:
        """Count the jobs as the system's own table records them."""

    @abstractmethod
    def durability(self) -> Durability:
        """The journal mode and ``synchronous`` level in force."""

    @abstractmethod
    def close(self) -> None:
        """Release connections and threads."""


def _durability(conn: sqlite3.Connection) -> Durability:
    journal = conn.execute("PRAGMA journal_mode").fetchone()[0]
    level = int(conn.execute("PRAGMA synchronous").fetchone()[0])
    return Durability(str(journal).upper(), SYNCHRONOUS_NAMES.get(level, str(level)))


def _status_counts(path: Path, sql: str) -> dict[Any, int]:
    conn = sqlite3.connect(path, timeout=30)
    try:
        return dict(conn.execute(sql))
    finally:
        conn.close()


def _journal_mode(path: Path) -> str:
    conn = sqlite3.connect(path, timeout=30)
    try:
        return str(conn.execute("PRAGMA journal_mode").fetchone()[0]).upper()
    finally:
        conn.close()


def _run_threads(bodies: Sequence[Body], timeout: float) -> float:
    """Run one thread per body until all return; the seconds from the first start to the end."""
    stop = threading.Event()
    errors: list[BaseException] = []

    def guarded(body: Body) -> None:
        try:
            body(stop)
        except BaseException as exc:
            errors.append(exc)
            stop.set()

    threads = [
        threading.Thread(target=guarded, args=(body,), name=f"drain-{n}", daemon=True)
        for n, body in enumerate(bodies)
    ]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(max(0.0, start + timeout - time.perf_counter()))
    elapsed = time.perf_counter() - start
    if any(thread.is_alive() for thread in threads):
        stop.set()
        for thread in threads:
            thread.join(5.0)
        raise DrainError(f"not finished within {timeout:.0f} s")
    if errors:
        raise DrainError(f"a worker thread raised {errors[0]!r}") from errors[0]
    return elapsed


@contextlib.contextmanager
def _immediate(conn: sqlite3.Connection) -> Iterator[None]:
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


# --- sqlitejobq ---------------------------------------------------------------------------


@functools.cache
def load_sqlitejobq() -> ModuleType | str:
    """The sqlitejobq package, or a note saying why it cannot be imported.

    An installed package comes first; the working tree's ``src`` is the fallback, so the
    comparison runs against the code beside it even when nothing was installed.
    """
    try:
        return _import_sqlitejobq()
    except ImportError as exc:
        failure = exc
    src = PROJECT_ROOT / "src"
    if (src / "sqlitejobq" / "__init__.py").is_file() and str(src) not in sys.path:
        sys.path.insert(0, str(src))
        for name in [m for m in sys.modules if m == "sqlitejobq" or m.startswith("sqlitejobq.")]:
            del sys.modules[name]
        try:
            return _import_sqlitejobq()
        except ImportError as exc:
            failure = exc
    if isinstance(failure, ModuleNotFoundError) and failure.name == "sqlitejobq":
        return "not installed"
    return f"cannot be imported ({type(failure).__name__}: {failure})"


def _import_sqlitejobq() -> ModuleType:
    module = importlib.import_module("sqlitejobq")
    for name in ("Queue", "Registry", "Worker"):
        if not hasattr(module, name):
            raise ImportError(f"sqlitejobq has no {name}")
    return module


def _sqlitejobq() -> ModuleType:
    module = load_sqlitejobq()
    if isinstance(module, str):
        raise RuntimeError(f"sqlitejobq: {module}")
    return module


class SqliteJobQAdapter(Adapter):
    """sqlitejobq through its public API: ``Queue``, ``Registry`` and a burst ``Worker``."""

    key = "sqlitejobq"
    label = "sqlitejobq"
    distribution = "sqlitejobq"
    settings = ("FULL", "NORMAL")
    enqueue_note = "`Queue.enqueue()` per job"
    batch_note = "`Queue.enqueue_many()`, one transaction"
    drain_note = (
        "`Worker(queue, concurrency=T).run(burst=True)`; each job claimed with a lease and "
        "recorded as completed"
    )

    @classmethod
    def unavailable(cls) -> str | None:
        module = load_sqlitejobq()
        return module if isinstance(module, str) else None

    @classmethod
    def version(cls) -> str:
        found = super().version()
        if found != "not installed":
            return found
        module = load_sqlitejobq()
        if isinstance(module, str):
            return found
        return f"{getattr(module, '__version__', 'unknown')} (working tree)"

    @classmethod
    def setting_note(cls, synchronous: str | None) -> str:
        return f'`Queue(synchronous="{synchronous}")`'

    def open(self) -> None:
        sqlitejobq = _sqlitejobq()
        counter = self.counter
        registry = sqlitejobq.Registry()

        @registry.task("noop")
        def noop(job: Any) -> None:
            counter.hit(job.payload["i"])

        self.path = self.workdir / "jobs.db"
        self._queue = sqlitejobq.Queue(
            str(self.path), registry=registry, synchronous=self.synchronous
        )

    def enqueue_each(self, payloads: Sequence[Payload]) -> None:
        enqueue = self._queue.enqueue
        for payload in payloads:
            enqueue("noop", payload)

    def enqueue_batch(self, payloads: Sequence[Payload]) -> None:
        self._queue.enqueue_many("noop", list(payloads))

    def drain(self, threads: int, timeout: float) -> float:
        # Burst mode returns by itself once nothing is runnable, so no time bound is imposed.
        worker = _sqlitejobq().Worker(self._queue, concurrency=threads)
        start = time.perf_counter()
        worker.run(burst=True)
        return time.perf_counter() - start

    def stored(self) -> Stored:
        counts = _status_counts(
            self.path, "SELECT status, COUNT(*) FROM sqlitejobq_jobs GROUP BY status"
        )
        finished = counts.pop("completed", 0)
        return Stored(waiting=sum(counts.values()), finished=finished)

    def durability(self) -> Durability:
        # The queue's connections are its own: the level shown is the one asked for.
        return Durability(_journal_mode(self.path), f"{self.synchronous} (requested)")

    def close(self) -> None:
        self._queue.close()


# --- huey ---------------------------------------------------------------------------------

_CONSUMER_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name)
)


@contextlib.contextmanager
def _signal_handlers_kept() -> Iterator[None]:
    """Put back the signal handlers that huey's consumer installs when it starts."""
    saved = {signum: signal.getsignal(signum) for signum in _CONSUMER_SIGNALS}
    try:
        yield
    finally:
        if threading.current_thread() is threading.main_thread():
            for signum, handler in saved.items():
                if handler is not None:
                    signal.signal(signum, handler)


class HueyAdapter(Adapter):
    """huey's ``SqliteHuey``: tasks enqueued by calling them, run by its consumer's threads."""

    key = "huey"
    label = "huey"
    distribution = "huey"
    # SqliteStorage maps fsync=True to synchronous=FULL, fsync=False to OFF: no NORMAL.
    settings = ("FULL",)
    enqueue_note = "calling the task, one job per call (`map()` also enqueues one at a time)"
    drain_note = (
        "its consumer with thread workers, `create_consumer(workers=T, worker_type='thread')`, "
        "stopped once all N ran; all threads share one connection behind a lock, and a worker "
        "deletes a task's row when it takes the task"
    )

    @classmethod
    def setting_note(cls, synchronous: str | None) -> str:
        return "`fsync=True`; NORMAL not offered (`fsync=False` is OFF)"

    def open(self) -> None:
        from huey import SqliteHuey

        counter = self.counter
        self._huey = SqliteHuey("compare", filename=str(self.workdir / "huey.db"), fsync=True)

        @self._huey.task()
        def noop(payload: Payload) -> None:
            counter.hit(payload["i"])

        self._task = noop

    def enqueue_each(self, payloads: Sequence[Payload]) -> None:
        task = self._task
        for payload in payloads:
            task(payload)

    def drain(self, threads: int, timeout: float) -> float:
        consumer = self._huey.create_consumer(workers=threads, worker_type="thread")
        with _signal_handlers_kept():
            start = time.perf_counter()
            try:
                consumer.start()
                finished = self.counter.wait_for_all(timeout)
                elapsed = time.perf_counter() - start
            finally:
                consumer.stop(graceful=True)
        if not finished:
            raise DrainError(
                f"{self.counter.total} of {self.counter.expected} ran within {timeout:.0f} s"
            )
        return elapsed

    def stored(self) -> Stored:
        return Stored(waiting=self._huey.pending_count(), finished=None)

    def durability(self) -> Durability:
        return _durability(self._huey.storage.conn)

    def close(self) -> None:
        self._huey.storage.close()


# --- persist-queue ------------------------------------------------------------------------


class PersistQueueAdapter(Adapter):
    """persist-queue's ``SQLiteAckQueue``: ``put``, then ``get`` and ``ack`` from N threads."""

    key = "persist-queue"
    label = "persist-queue"
    distribution = "persist-queue"
    # SQLiteBase sets journal_mode=WAL and never sets synchronous; no option reaches it.
    settings = (None,)
    enqueue_note = "`put()` per job (SQLiteAckQueue refuses `auto_commit=False`, the batch mode)"
    drain_note = (
        "one `SQLiteAckQueue(path, multithreading=True)` shared by T threads, "
        "`get(block=False)` then `ack()`"
    )

    @classmethod
    def setting_note(cls, synchronous: str | None) -> str:
        return "fixed by the library: WAL, `synchronous` left at SQLite's default"

    def open(self) -> None:
        import persistqueue

        self.path = self.workdir / "queue" / "data.db"
        self._queue = persistqueue.SQLiteAckQueue(str(self.path.parent), multithreading=True)

    def enqueue_each(self, payloads: Sequence[Payload]) -> None:
        put = self._queue.put
        for payload in payloads:
            put(payload)

    def drain(self, threads: int, timeout: float) -> float:
        from persistqueue import Empty

        queue = self._queue
        counter = self.counter

        def work(stop: threading.Event) -> None:
            while not stop.is_set():
                try:
                    item = queue.get(block=False)
                except Empty:
                    return
                counter.hit(item["i"])
                queue.ack(item)

        return _run_threads([work] * threads, timeout)

    def stored(self) -> Stored:
        counts = _status_counts(
            self.path, "SELECT status, COUNT(*) FROM ack_queue_default GROUP BY status"
        )
        finished = counts.pop(5, 0)  # AckStatus.acked
        return Stored(waiting=sum(counts.values()), finished=finished)

    def durability(self) -> Durability:
        # Read from the queue's own write connection: synchronous is per connection.
        return _durability(cast(sqlite3.Connection, self._queue._putter))

    def close(self) -> None:
        self._queue.close()


# --- litequeue ----------------------------------------------------------------------------


class LiteQueueAdapter(Adapter):
    """litequeue's ``LiteQueue``: ``put``, then ``pop`` and ``done``, one instance per thread."""

    key = "litequeue"
    label = "litequeue"
    distribution = "litequeue"
    # The constructor runs PRAGMA journal_mode=WAL and synchronous=NORMAL unconditionally.
    settings = (None,)
    enqueue_note = "`put()` per job, the payload as JSON text"
    batch_note = "`put()` per job inside one `LiteQueue.transaction()`"
    drain_note = (
        "one `LiteQueue` per thread on the same file, `pop()` then `done()` (one instance shared "
        "by threads fails: its single connection is not guarded)"
    )

    @classmethod
    def setting_note(cls, synchronous: str | None) -> str:
        return "fixed by the library: WAL, `synchronous=NORMAL`"

    def open(self) -> None:
        from litequeue import LiteQueue

        self.path = self.workdir / "queue.sqlite3"
        self._queue = LiteQueue(str(self.path))

    def enqueue_each(self, payloads: Sequence[Payload]) -> None:
        put = self._queue.put
        for payload in payloads:
            put(json.dumps(payload))

    def enqueue_batch(self, payloads: Sequence[Payload]) -> None:
        put = self._queue.put
        with self._queue.transaction(mode="IMMEDIATE"):
            for payload in payloads:
                put(json.dumps(payload))

    def drain(self, threads: int, timeout: float) -> float:
        from litequeue import LiteQueue

        counter = self.counter
        queues = [LiteQueue(str(self.path)) for _ in range(threads)]

        def worker(queue: LiteQueue) -> Body:
            def work(stop: threading.Event) -> None:
                while not stop.is_set():
                    message = queue.pop()
                    if message is None:
                        return
                    counter.hit(json.loads(message.data)["i"])
                    queue.done(message.message_id)

            return work

        try:
            return _run_threads([worker(queue) for queue in queues], timeout)
        finally:
            for queue in queues:
                queue.close()

    def stored(self) -> Stored:
        counts = _status_counts(self.path, "SELECT status, COUNT(*) FROM [Queue] GROUP BY status")
        finished = counts.pop(2, 0)  # MessageStatus.DONE
        return Stored(waiting=sum(counts.values()), finished=finished)

    def durability(self) -> Durability:
        return _durability(self._queue.conn)

    def close(self) -> None:
        self._queue.close()


# --- raw sqlite3 --------------------------------------------------------------------------

RAW_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY,
    payload TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'queued'
);
CREATE INDEX IF NOT EXISTS jobs_queued ON jobs (id) WHERE status = 'queued';
"""
RAW_INSERT = "INSERT INTO jobs (payload) VALUES (?)"
RAW_CLAIM = (
    "UPDATE jobs SET status = 'processing' WHERE id IN "
    "(SELECT id FROM jobs WHERE status = 'queued' ORDER BY id LIMIT ?) RETURNING id, payload"
)
RAW_COMPLETE = "UPDATE jobs SET status = 'completed' WHERE id = ? AND status = 'processing'"
RAW_COUNT = "SELECT status, COUNT(*) FROM jobs GROUP BY status"


class RawAdapter(Adapter):
    """The reference limit: a bare jobs table in WAL mode, one job per transaction."""

    key = "raw"
    label = "raw sqlite3, 1 job per transaction"
    settings = ("FULL", "NORMAL")
    group: ClassVar[int] = 1
    batch_size: ClassVar[int | None] = None
    enqueue_note = "one INSERT per transaction"
    batch_note = "all N INSERTs in one transaction"
    drain_note = (
        "a connection per thread; each claim is one `UPDATE … RETURNING` on one job in its own "
        "`BEGIN IMMEDIATE` transaction, each completion another"
    )

    @classmethod
    def version(cls) -> str:
        return sqlite3.sqlite_version

    @classmethod
    def setting_note(cls, synchronous: str | None) -> str:
        return f"`PRAGMA synchronous={synchronous}`"

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={self.synchronous}")
        return conn

    def open(self) -> None:
        self.path = self.workdir / "jobs.db"
        self._conn = self._connect()
        self._conn.executescript(RAW_SCHEMA)

    def enqueue_each(self, payloads: Sequence[Payload]) -> None:
        execute = self._conn.execute
        for payload in payloads:
            execute(RAW_INSERT, (json.dumps(payload),))

    def enqueue_batch(self, payloads: Sequence[Payload]) -> None:
        size = self.batch_size or max(1, len(payloads))
        for first in range(0, len(payloads), size):
            rows = [(json.dumps(payload),) for payload in payloads[first : first + size]]
            with _immediate(self._conn):
                self._conn.executemany(RAW_INSERT, rows)

    def drain(self, threads: int, timeout: float) -> float:
        counter = self.counter
        group = self.group
        conns = [self._connect() for _ in range(threads)]

        def worker(conn: sqlite3.Connection) -> Body:
            def work(stop: threading.Event) -> None:
                while not stop.is_set():
                    with _immediate(conn):
                        claimed = conn.execute(RAW_CLAIM, (group,)).fetchall()
                    if not claimed:
                        return
                    for _, payload in claimed:
                        counter.hit(json.loads(payload)["i"])
                    with _immediate(conn):
                        done = conn.executemany(RAW_COMPLETE, [(job,) for job, _ in claimed])
                        if done.rowcount != len(claimed):
                            raise DrainError(f"{len(claimed)} completions matched {done.rowcount}")

            return work

        try:
            return _run_threads([worker(conn) for conn in conns], timeout)
        finally:
            for conn in conns:
                conn.close()

    def stored(self) -> Stored:
        counts = _status_counts(self.path, RAW_COUNT)
        finished = counts.pop("completed", 0)
        return Stored(waiting=sum(counts.values()), finished=finished)

    def durability(self) -> Durability:
        return _durability(self._conn)

    def close(self) -> None:
        self._conn.close()


class RawGroupedAdapter(RawAdapter):
    """The reference limit with claims, completions and inserts grouped 100 per transaction."""

    label = "raw sqlite3, 100 jobs per transaction"
    group = 100
    batch_size = 100
    measures_single = False
    batch_note = "INSERTs grouped 100 per transaction"
    drain_note = (
        "as above, but each claim takes 100 jobs (`… LIMIT 100 RETURNING`) and their 100 "
        "completions share one transaction"
    )


ADAPTERS: tuple[type[Adapter], ...] = (
    SqliteJobQAdapter,
    HueyAdapter,
    PersistQueueAdapter,
    LiteQueueAdapter,
    RawAdapter,
    RawGroupedAdapter,
)
SYSTEMS: tuple[str, ...] = tuple(dict.fromkeys(adapter.key for adapter in ADAPTERS))
