"""sqlitejobq on PostgreSQL beside the PostgreSQL job queues a user would pick instead,
procrastinate and pgqueuer, and beside itself on a SQLite file, on the same workloads.

Each system is driven through its public API only, on a database of its own that is created
for one measurement (``CREATE DATABASE``; a new file for the SQLite row) and dropped after
it, so no two measurements share tables. The workloads are the same for every system and
are timed the same way:

- ``enqueue``: N no-op jobs, one call (one transaction) each;
- ``enqueue_batch``: the same N jobs in the system's one batch call;
- ``drain``: N jobs already queued, run by P real worker processes, each running the
  system's own worker; the clock starts when the already connected processes are told to go
  and stops when the system's tables show every job finished. Every job must have run
  exactly once, as the handlers' own records and the system's tables both say, or the run
  is an error;
- ``latency``: one idle worker process; jobs are enqueued one at a time with a random
  10-40 ms pause, and each job's start (``time.time()`` in the handler) minus the moment the
  enqueue call began gives the figure; the system's own timestamps give a second one.

    python -m benchmarks.peers_pg --dsn postgresql://postgres@127.0.0.1:PORT/db
        [--jobs 10000] [--repeats 3] [--samples 200] [--peers sqlitejobq,pgqueuer]
        [--set procrastinate.concurrency=10] [--set pgqueuer.batch_size=10]
        [--out docs/benchmarks.md] [--chart docs/benchmarks-postgres.png] [--json FILE]

``benchmarks/test_postgres.py`` runs the same workloads through :func:`run_workload` under
pytest-benchmark (at small sizes in CI).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import datetime as dt
import itertools
import json
import os
import platform
import random
import re
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator, Sequence
from datetime import timedelta
from importlib import metadata
from pathlib import Path
from typing import Any, ClassVar, TypeVar

if __package__ in (None, ""):  # run as a file: make ``benchmarks`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.peers import PROJECT_ROOT, DrainError, ExecutionCounter
from benchmarks.report import throughput_chart, write_section

T = TypeVar("T")
Payload = dict[str, int]
Record = Callable[[int], None]

DEFAULT_JOBS = 10_000
DEFAULT_REPEATS = 3
LATENCY_SAMPLES = 200
LATENCY_WARMUP = 5  # jobs run first and left out of the latency figures
LATENCY_PAUSE = (0.010, 0.040)  # seconds between two enqueues, uniform
POLL_INTERVAL = 0.02  # seconds between two looks at the peer's tables during a drain
READY_TIMEOUT = 60.0  # for the worker processes to import, connect and say so
STOP_TIMEOUT = 30.0  # for the worker processes to stop after SIGTERM
SETTLE = 1.0  # seconds an idle worker is given to start listening before latency samples
TASK = "noop"
SECTION = "compare-postgres"  # the generated section of docs/benchmarks.md
CHART_NAME = "benchmarks-postgres.png"


class PeerError(DrainError):
    """A measurement that did not give a figure: a crash, a lost or repeated job, a timeout."""


def drain_timeout(jobs: int) -> float:
    """The bound on one drain, far above any healthy run (20 jobs/s at worst)."""
    return max(60.0, jobs / 20)


def percentile(values: Sequence[float], q: int) -> float:
    """The q-th percentile (1..99) of the values, interpolated between the nearest two."""
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


# --- databases ------------------------------------------------------------------------------


def _connect(dsn: str) -> Any:
    import psycopg

    return psycopg.connect(dsn, autocommit=True, connect_timeout=10)


def database_dsn(dsn: str, dbname: str) -> str:
    """The DSN of another database on the same server, as a URL that psycopg and asyncpg
    both read (``postgresql:///db?host=...&port=...``)."""
    from urllib.parse import quote, urlencode

    from psycopg.conninfo import conninfo_to_dict

    params = {k: str(v) for k, v in conninfo_to_dict(dsn).items() if k != "dbname"}
    return f"postgresql:///{quote(dbname, safe='')}?{urlencode(params)}"


_database_numbers = itertools.count()


@contextlib.contextmanager
def fresh_database(dsn: str, label: str) -> Iterator[str]:
    """Create an empty database on the server of ``dsn``; yield its DSN; drop it after."""
    slug = re.sub(r"[^a-z0-9]+", "_", label.lower()).strip("_")[:30]
    name = f"bench_{slug}_{os.getpid()}_{next(_database_numbers)}"
    with _connect(dsn) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield database_dsn(dsn, name)
    finally:
        with _connect(dsn) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def server_facts(dsn: str) -> dict[str, str]:
    """The server's version and the settings that decide commit cost."""
    with _connect(dsn) as conn:
        return {
            name: str(conn.execute(f"SHOW {name}").fetchone()[0])
            for name in ("server_version", "fsync", "synchronous_commit", "wal_level")
        }


# --- worker processes -----------------------------------------------------------------------


@dataclasses.dataclass
class Progress:
    """What a peer's own tables say about the jobs right now."""

    waiting: int  # queued or running
    finished: int  # finished successfully
    failed: int  # failed, cancelled or aborted


class WorkerGroup:
    """P worker processes of one peer: started, told to go, stopped, their records read.

    Each process imports the peer, connects, writes a ready file and blocks on its standard
    input; ``go()`` writes a line to every one at once. SIGTERM asks for the peer's own
    graceful stop; a process that has not exited ``STOP_TIMEOUT`` seconds later is killed.
    Output goes to one log file per process; an exit code other than 0, a traceback in a
    log or an early exit raises :class:`PeerError` with the log's tail.
    """

    def __init__(self, peer: str, dsn: str, options: dict[str, Any], processes: int) -> None:
        self.peer = peer
        self.dsn = dsn
        self.options = options
        self.count = processes
        self.dir = Path(tempfile.mkdtemp(prefix=f"peers-pg-{peer}-"))
        self.procs: list[subprocess.Popen[bytes]] = []

    def __enter__(self) -> WorkerGroup:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        for n in range(self.count):
            log = (self.dir / f"worker-{n}.log").open("wb")
            try:
                proc = subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "benchmarks.peers_pg",
                        "--worker",
                        self.peer,
                        "--dsn",
                        self.dsn,
                        "--options",
                        json.dumps(self.options),
                        "--ready",
                        str(self.dir / f"ready-{n}"),
                        "--record",
                        str(self.dir / f"record-{n}.json"),
                    ],
                    cwd=PROJECT_ROOT,
                    env=env,
                    stdin=subprocess.PIPE,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # a Ctrl-C in the terminal reaches only us
                )
            finally:
                log.close()
            self.procs.append(proc)
        return self

    def __exit__(self, *exc: object) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
        for proc in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5)
            if proc.stdin:
                with contextlib.suppress(OSError):
                    proc.stdin.close()
        if exc[0] is None:
            shutil.rmtree(self.dir, ignore_errors=True)

    def _tail(self, n: int, lines: int = 15) -> str:
        path = self.dir / f"worker-{n}.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        return "\n".join(text.splitlines()[-lines:]) or "(no output)"

    def check_alive(self) -> None:
        """Raise if any process has exited before it was asked to stop."""
        for n, proc in enumerate(self.procs):
            code = proc.poll()
            if code is not None:
                raise PeerError(
                    f"{self.peer} worker {n} exited early with code {code}; its log "
                    f"({self.dir}):\n{self._tail(n)}"
                )

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        """Block until every process has connected and is waiting for the go."""
        deadline = time.monotonic() + timeout
        while not all((self.dir / f"ready-{n}").exists() for n in range(self.count)):
            self.check_alive()
            if time.monotonic() > deadline:
                raise PeerError(f"{self.peer} workers not ready within {timeout:.0f} s")
            time.sleep(0.01)

    def go(self) -> None:
        """Let every process start its worker."""
        for proc in self.procs:
            assert proc.stdin is not None
            proc.stdin.write(b"go\n")
            proc.stdin.flush()

    def stop(self, timeout: float = STOP_TIMEOUT) -> list[tuple[int, float]]:
        """SIGTERM every process, wait, check each exited cleanly; the handlers' records."""
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        stragglers = []
        for n, proc in enumerate(self.procs):
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
                stragglers.append(n)
        if stragglers:
            raise PeerError(
                f"{self.peer} workers {stragglers} did not stop within {timeout:.0f} s of "
                f"SIGTERM and were killed; log of worker {stragglers[0]}:\n"
                f"{self._tail(stragglers[0])}"
            )
        for n, proc in enumerate(self.procs):
            log = (self.dir / f"worker-{n}.log").read_text(errors="replace")
            if proc.returncode != 0 or "Traceback" in log:
                raise PeerError(
                    f"{self.peer} worker {n} ended with code {proc.returncode} or a traceback "
                    f"in its log ({self.dir}):\n{self._tail(n, 30)}"
                )
        return [
            (int(run[0]), float(run[1]))
            for n in range(self.count)
            for run in json.loads((self.dir / f"record-{n}.json").read_text())["runs"]
        ]


def _worker_main(args: argparse.Namespace) -> int:
    """A worker process: connect, say ready, wait for the go, run the peer's worker."""
    runs: list[tuple[int, float]] = []

    def record(index: int) -> None:
        runs.append((index, time.time()))

    async def wait_go() -> bool:
        line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        return line.strip() == "go"

    def ready() -> None:
        tmp = Path(args.ready + ".tmp")
        tmp.write_text(str(os.getpid()))
        tmp.rename(args.ready)

    peer = PEERS[args.worker]
    asyncio.run(peer.serve(args.dsn, json.loads(args.options), record, ready, wait_go))
    tmp = Path(args.record + ".tmp")
    tmp.write_text(json.dumps({"runs": runs}))
    tmp.rename(args.record)
    return 0


# --- the peers ------------------------------------------------------------------------------


class Peer(ABC):
    """One system on one fresh database: set up, enqueue, drain, measure latency, check."""

    key: ClassVar[str]
    distribution: ClassVar[str]
    label: ClassVar[str]  # its row in the table and the chart
    # The worker settings used unless the caller overrides them; each class says why.
    default_options: ClassVar[dict[str, Any]]
    enqueue_note: ClassVar[str]
    batch_note: ClassVar[str]
    drain_note: ClassVar[str]
    latency_note: ClassVar[str]

    @classmethod
    @contextlib.contextmanager
    def fresh(cls, dsn: str, label: str) -> Iterator[str]:
        """An empty database for one measurement (a new database on the server of ``dsn``);
        what ``__init__`` and the worker processes are given to reach it."""
        with fresh_database(dsn, label) as db:
            yield db

    def __init__(self, dsn: str, options: dict[str, Any] | None = None) -> None:
        self.dsn = dsn
        self.options = {**self.default_options, **(options or {})}
        self._runner = asyncio.Runner()
        self._monitor: Any = None

    @classmethod
    def version(cls) -> str:
        """The installed version of the system."""
        try:
            return metadata.version(cls.distribution)
        except metadata.PackageNotFoundError:
            return "not installed"

    @classmethod
    def unavailable(cls) -> str | None:
        """Why the system cannot run here, or None when it can."""
        return None if cls.version() != "not installed" else "not installed"

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self._runner.run(coro)

    def _monitoring(self) -> Any:
        """The harness's own autocommit psycopg connection, for reading the peer's tables."""
        if self._monitor is None:
            self._monitor = _connect(self.dsn)
        return self._monitor

    def _sql(self, query: str) -> list[tuple[Any, ...]]:
        return list(self._monitoring().execute(query).fetchall())

    def analyze(self) -> None:
        """``ANALYZE`` the whole database, as autovacuum would within a minute."""
        self._monitoring().execute("ANALYZE")

    def open(self) -> None:
        """Create the system's tables in the (empty) database and connect the producer."""
        self._run(self._open())

    def enqueue_each(self, payloads: Sequence[Payload]) -> None:
        """Enqueue the jobs one call, and one transaction, each."""
        self._run(self._enqueue_each(payloads))

    def enqueue_batch(self, payloads: Sequence[Payload]) -> None:
        """Enqueue the jobs in the system's one batch call."""
        self._run(self._enqueue_batch(payloads))

    def close(self) -> None:
        """Release connections and the event loop."""
        try:
            self._run(self._close())
        finally:
            self._runner.close()
            if self._monitor is not None:
                self._monitor.close()

    @abstractmethod
    async def _open(self) -> None: ...

    @abstractmethod
    async def _enqueue_each(self, payloads: Sequence[Payload]) -> None: ...

    @abstractmethod
    async def _enqueue_batch(self, payloads: Sequence[Payload]) -> None: ...

    @abstractmethod
    async def _close(self) -> None: ...

    @abstractmethod
    def progress(self) -> Progress:
        """Count the jobs as the system's own tables record them."""

    @abstractmethod
    def table_problem(self, jobs: int) -> str | None:
        """After a drain: what the system's tables say went wrong (a job not run exactly
        once), or None."""

    @abstractmethod
    def table_latencies(self) -> dict[int, float]:
        """Seconds from enqueue to start per job index, from the system's own timestamps."""

    @classmethod
    @abstractmethod
    async def serve(
        cls,
        dsn: str,
        options: dict[str, Any],
        record: Record,
        ready: Callable[[], None],
        wait_go: Callable[[], Awaitable[bool]],
    ) -> None:
        """In a worker process: connect, call ``ready``, await ``wait_go``, then run the
        system's own worker until SIGTERM, its handler calling ``record(i)`` per job."""

    # --- the measured parts, the same for every peer --------------------------------------

    def _wait_finished(self, total: int, group: WorkerGroup, timeout: float) -> float:
        """Poll the tables until ``total`` jobs finished; the ``perf_counter`` of that look."""
        deadline = time.monotonic() + timeout
        while True:
            now = time.perf_counter()
            seen = self.progress()
            if seen.failed:
                raise PeerError(f"{seen.failed} jobs failed")
            if seen.waiting == 0 and seen.finished >= total:
                return now
            group.check_alive()
            if time.monotonic() > deadline:
                raise PeerError(
                    f"{seen.finished} of {total} finished within {timeout:.0f} s "
                    f"({seen.waiting} still waiting)"
                )
            time.sleep(POLL_INTERVAL)

    def drain(self, processes: int, jobs: int, timeout: float) -> float:
        """Run the queued jobs on ``processes`` worker processes; seconds from go to done.

        The clock starts when the connected processes are told to go (so it includes each
        worker's own start: registration, LISTEN) and stops at the first look at the tables
        that shows every job finished. Both the handlers' records and the tables must show
        every job run exactly once.
        """
        with WorkerGroup(self.key, self.dsn, self.options, processes) as group:
            group.wait_ready()
            start = time.perf_counter()
            group.go()
            # The first look that sees all finished ends the clock; the look before it saw
            # some unfinished, so the true end lies within one poll interval before.
            end = self._wait_finished(jobs, group, timeout)
            runs = group.stop()
        counter = ExecutionCounter(jobs)
        for index, _ in runs:
            counter.hit(index)
        problem = counter.problem() or self.table_problem(jobs)
        if problem:
            raise PeerError(problem)
        return end - start

    def latency(self, samples: int, rng: random.Random) -> dict[str, float]:
        """Enqueue-to-start latency with one idle worker process, in milliseconds."""
        total = LATENCY_WARMUP + samples
        enqueued: dict[int, float] = {}
        with WorkerGroup(self.key, self.dsn, self.options, 1) as group:
            group.wait_ready()
            group.go()
            time.sleep(SETTLE)
            group.check_alive()
            for index in range(total):
                time.sleep(rng.uniform(*LATENCY_PAUSE))
                enqueued[index] = time.time()
                self._run(self._enqueue_each([{"i": index}]))
            self._wait_finished(total, group, timeout=60.0)
            runs = group.stop()
        counter = ExecutionCounter(total)
        started: dict[int, float] = {}
        for index, at in runs:
            counter.hit(index)
            started[int(index)] = at
        problem = counter.problem() or self.table_problem(total)
        if problem:
            raise PeerError(problem)
        kept = range(LATENCY_WARMUP, total)
        seen = sorted(1000 * (started[i] - enqueued[i]) for i in kept)
        table = self.table_latencies()
        recorded = sorted(1000 * table[i] for i in kept)
        return {
            "samples": samples,
            "p50_ms": percentile(seen, 50),
            "p99_ms": percentile(seen, 99),
            "max_ms": seen[-1],
            "table_p50_ms": percentile(recorded, 50),
            "table_p99_ms": percentile(recorded, 99),
        }


# --- procrastinate --------------------------------------------------------------------------


def _procrastinate_app(dsn: str, record: Record | None = None) -> Any:
    import procrastinate

    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=dsn))

    @app.task(name=TASK)
    async def noop(i: int) -> None:
        if record is not None:
            record(i)

    return app


class ProcrastinatePeer(Peer):
    """procrastinate: ``App`` on its default ``PsycopgConnector`` (psycopg 3 async pool)."""

    key = "procrastinate"
    label = "procrastinate"
    distribution = "procrastinate"
    # concurrency: the default is 1 and the docs say to raise it for async tasks; 10 came out
    # best of 1, 5, 10 and 30 on 10,000 no-op jobs here, though by less than the run-to-run
    # noise (the worker fetches one job per query, one fetch at a time, whatever the
    # concurrency). The rest are its defaults: listen_notify=True (LISTEN/NOTIFY wakes the
    # worker), fetch_job_polling_interval=5 s, delete_jobs="never", a pool of 4 connections.
    default_options: ClassVar[dict[str, Any]] = {"concurrency": 10}
    enqueue_note = "`await task.defer_async(i=...)` per job, autocommit"
    batch_note = "`await task.batch_defer_async(*kwargs)`, one statement"
    drain_note = (
        "`await app.run_worker_async(concurrency=C)` per process (one fetch per job through "
        "`procrastinate_fetch_job_v2`, one finish per job); a row trigger NOTIFYs on insert"
    )
    latency_note = "handler start minus `defer_async` call; table: `started` minus `deferred` event"

    async def _open(self) -> None:
        self._app = _procrastinate_app(self.dsn)
        await self._app.open_async()
        await self._app.schema_manager.apply_schema_async()
        self._task = self._app.tasks[TASK]

    async def _enqueue_each(self, payloads: Sequence[Payload]) -> None:
        defer = self._task.defer_async
        for payload in payloads:
            await defer(**payload)

    async def _enqueue_batch(self, payloads: Sequence[Payload]) -> None:
        await self._task.batch_defer_async(*payloads)

    async def _close(self) -> None:
        if hasattr(self, "_app"):
            await self._app.close_async()

    def progress(self) -> Progress:
        counts = dict(self._sql("SELECT status::text, count(*) FROM procrastinate_jobs GROUP BY 1"))
        return Progress(
            waiting=counts.pop("todo", 0) + counts.pop("doing", 0),
            finished=counts.pop("succeeded", 0),
            failed=sum(counts.values()),
        )

    def table_problem(self, jobs: int) -> str | None:
        ((total, succeeded, once, not_once),) = self._sql(
            "SELECT count(*), count(*) FILTER (WHERE j.status = 'succeeded' AND j.attempts = 1),"
            " count(*) FILTER (WHERE s.n = 1), count(*) FILTER (WHERE s.n IS DISTINCT FROM 1)"
            " FROM procrastinate_jobs j LEFT JOIN (SELECT job_id, count(*) AS n"
            " FROM procrastinate_events WHERE type = 'started' GROUP BY job_id) s"
            " ON s.job_id = j.id"
        )
        if total == succeeded == once == jobs and not not_once:
            return None
        return (
            f"procrastinate_jobs holds {total} jobs, {succeeded} succeeded on the first "
            f"attempt, {once} started exactly once; {jobs} expected"
        )

    def table_latencies(self) -> dict[int, float]:
        rows = self._sql(
            "SELECT (j.args->>'i')::int, extract(epoch FROM s.at - d.at)"
            " FROM procrastinate_jobs j"
            " JOIN procrastinate_events d ON d.job_id = j.id AND d.type = 'deferred'"
            " JOIN procrastinate_events s ON s.job_id = j.id AND s.type = 'started'"
        )
        return {int(i): float(seconds) for i, seconds in rows}

    @classmethod
    async def serve(
        cls,
        dsn: str,
        options: dict[str, Any],
        record: Record,
        ready: Callable[[], None],
        wait_go: Callable[[], Awaitable[bool]],
    ) -> None:
        app = _procrastinate_app(dsn, record)
        async with app.open_async():
            ready()
            if not await wait_go():
                return
            # Its own signal handlers turn SIGTERM into a graceful stop.
            await app.run_worker_async(**options)


# --- pgqueuer -------------------------------------------------------------------------------


class PgQueuerPeer(Peer):
    """pgqueuer on asyncpg, the driver its docs recommend for throughput (~1.7x psycopg)."""

    key = "pgqueuer"
    label = "pgqueuer"
    distribution = "pgqueuer"
    # batch_size: the default is 10 (also what its own benchmark tool uses); its performance
    # guide says to raise it for jobs shorter than a second. On 10,000 no-op jobs here 10 gave
    # about 5,000 jobs/s, 25 about 6,000-8,000, 50 about 8,000-11,000, and 100, 200 and 500
    # all about 14,000-16,000: 100 is the smallest on that plateau. The rest are defaults:
    # dequeue_timeout=30 s (a fallback poll; a NOTIFY from its insert trigger wakes the
    # worker), no max_concurrent_tasks. `pgq autovac` is applied after install, as its
    # production checklist says; durability stays "durable" (logged tables), the default.
    default_options: ClassVar[dict[str, Any]] = {"batch_size": 100}
    enqueue_note = "`await queries.enqueue(entrypoint, payload)` per job on one asyncpg connection"
    batch_note = "`await queries.enqueue([...], [...], [...])`, one statement"
    drain_note = (
        "`pgqueuer.run(factory, batch_size=B)` per process, as `pgq run` does, over one asyncpg "
        "connection; each dequeue claims B jobs, completions are buffered and logged in batches"
    )
    latency_note = "handler start minus `enqueue` call; table: `picked` minus `queued` log row"

    async def _open(self) -> None:
        import asyncpg
        from pgqueuer import Queries

        self._job_index: dict[int, int] = {}  # job id -> payload index, for latencies
        self._conn = await asyncpg.connect(self.dsn)
        self._queries = Queries.from_asyncpg_connection(self._conn)
        await self._queries.install()
        await self._queries.optimize_autovacuum()

    async def _enqueue_each(self, payloads: Sequence[Payload]) -> None:
        enqueue = self._queries.enqueue
        index = self._job_index
        for payload in payloads:
            (job_id,) = await enqueue(TASK, json.dumps(payload).encode(), 0)
            index[job_id] = payload["i"]

    async def _enqueue_batch(self, payloads: Sequence[Payload]) -> None:
        await self._queries.enqueue(
            [TASK] * len(payloads),
            [json.dumps(payload).encode() for payload in payloads],
            [0] * len(payloads),
        )

    async def _close(self) -> None:
        if hasattr(self, "_conn"):
            await self._conn.close()

    def progress(self) -> Progress:
        queue = dict(self._sql("SELECT status::text, count(*) FROM pgqueuer GROUP BY 1"))
        log = dict(
            self._sql(
                "SELECT status::text, count(*) FROM pgqueuer_log"
                " WHERE status NOT IN ('queued', 'picked') GROUP BY 1"
            )
        )
        return Progress(
            waiting=queue.pop("queued", 0) + queue.pop("picked", 0),
            finished=log.pop("successful", 0),
            failed=sum(queue.values()) + sum(log.values()),
        )

    def table_problem(self, jobs: int) -> str | None:
        ((left,),) = self._sql("SELECT count(*) FROM pgqueuer")
        ((total, good, not_good),) = self._sql(
            "SELECT count(*), count(*) FILTER (WHERE q = 1 AND p = 1 AND s = 1),"
            " count(*) FILTER (WHERE NOT (q = 1 AND p = 1 AND s = 1)) FROM ("
            " SELECT job_id, count(*) FILTER (WHERE status = 'queued') AS q,"
            " count(*) FILTER (WHERE status = 'picked') AS p,"
            " count(*) FILTER (WHERE status = 'successful') AS s"
            " FROM pgqueuer_log GROUP BY job_id) per_job"
        )
        if left == 0 and total == good == jobs and not not_good:
            return None
        return (
            f"pgqueuer holds {left} jobs; pgqueuer_log has {total} jobs, {good} queued, picked "
            f"and successful exactly once each; {jobs} expected"
        )

    def table_latencies(self) -> dict[int, float]:
        rows = self._sql(
            "SELECT job_id, extract(epoch FROM max(created) FILTER (WHERE status = 'picked')"
            " - max(created) FILTER (WHERE status = 'queued')) FROM pgqueuer_log GROUP BY job_id"
        )
        # The log keeps job ids, not payloads: the ids enqueue returned map them back.
        return {self._job_index[job_id]: float(seconds) for job_id, seconds in rows}

    @classmethod
    async def serve(
        cls,
        dsn: str,
        options: dict[str, Any],
        record: Record,
        ready: Callable[[], None],
        wait_go: Callable[[], Awaitable[bool]],
    ) -> None:
        import asyncpg
        import pgqueuer
        from pgqueuer import Job, PgQueuer

        conn = await asyncpg.connect(dsn)
        pgq = PgQueuer.from_asyncpg_connection(conn)

        @pgq.entrypoint(TASK)
        async def noop(job: Job) -> None:
            record(json.loads(job.payload or b"{}")["i"])

        @contextlib.asynccontextmanager
        async def factory() -> AsyncIterator[PgQueuer]:
            yield pgq

        ready()
        if not await wait_go():
            await conn.close()
            return
        settings = dict(options)
        for name in ("dequeue_timeout", "heartbeat_timeout"):
            if name in settings:
                settings[name] = timedelta(seconds=float(settings[name]))
        # Without a shutdown event of ours, it turns SIGTERM into a graceful stop.
        await pgqueuer.run(factory, **settings)
        if not conn.is_closed():
            await conn.close()


# --- sqlitejobq's own PostgreSQL backend ----------------------------------------------------


class SqlitejobqPeer(Peer):
    """sqlitejobq on PostgreSQL, through its public API (sync: psycopg 3 and its pool)."""

    key = "sqlitejobq"
    label = "sqlitejobq on PostgreSQL"
    distribution = "sqlitejobq"
    # concurrency=4 handler threads per process (the Worker's default); claims are sized to
    # free threads plus what finishes during one round trip (adaptive prefetch), so no-op
    # jobs go by the hundred per transaction. Everything else is the default: LISTEN/NOTIFY
    # wake-ups, a 1 s fallback look, leases of 30 s.
    default_options: ClassVar[dict[str, Any]] = {"concurrency": 4}
    enqueue_note = (
        "`queue.enqueue(task, payload)` per job (one statement: the job, its count, NOTIFY)"
    )
    batch_note = "`queue.enqueue_many(task, payloads)`, one INSERT ... SELECT FROM unnest"
    drain_note = (
        "`Worker(queue, concurrency=4).run()` per process: one dispatcher records outcomes "
        "and claims for free threads in one transaction (FOR UPDATE SKIP LOCKED)"
    )
    latency_note = "handler start minus `enqueue` call; table: started_at minus created_at"
    #: What the queue is opened with, here and in the worker processes.
    queue_options: ClassVar[dict[str, Any]] = {}

    async def _open(self) -> None:
        from sqlitejobq import Queue

        self._queue = Queue(self.dsn, **self.queue_options)

    async def _enqueue_each(self, payloads: Sequence[Payload]) -> None:
        enqueue = self._queue.enqueue
        for payload in payloads:
            enqueue(TASK, payload)

    async def _enqueue_batch(self, payloads: Sequence[Payload]) -> None:
        self._queue.enqueue_many(TASK, payloads)

    async def _close(self) -> None:
        if hasattr(self, "_queue"):
            self._queue.close()

    def progress(self) -> Progress:
        counts = dict(self._sql("SELECT status, count(*) FROM sqlitejobq_jobs GROUP BY 1"))
        return Progress(
            waiting=counts.pop("queued", 0) + counts.pop("processing", 0),
            finished=counts.pop("completed", 0),
            failed=sum(counts.values()),
        )

    def table_problem(self, jobs: int) -> str | None:
        ((total, once),) = self._sql(
            "SELECT count(*), count(*) FILTER (WHERE status = 'completed' AND attempts = 1)"
            " FROM sqlitejobq_jobs"
        )
        if total == once == jobs:
            return None
        return f"sqlitejobq_jobs has {total} jobs, {once} completed at their first attempt"

    def table_latencies(self) -> dict[int, float]:
        rows = self._sql(
            "SELECT (payload::json->>'i')::int, started_at - created_at FROM sqlitejobq_jobs"
        )
        return {int(i): float(seconds) for i, seconds in rows}

    @classmethod
    async def serve(
        cls,
        dsn: str,
        options: dict[str, Any],
        record: Record,
        ready: Callable[[], None],
        wait_go: Callable[[], Awaitable[bool]],
    ) -> None:
        from sqlitejobq import Job, Queue, Worker

        queue = Queue(dsn, **cls.queue_options)

        @queue.task(TASK)
        def noop(job: Job) -> None:
            record(job.payload["i"])

        worker = Worker(queue, **options)
        ready()
        if not await wait_go():
            queue.close()
            return
        # the main thread: SIGTERM stops the worker gracefully
        worker.run(handle_signals=True)
        queue.close()


class SqlitejobqFilePeer(SqlitejobqPeer):
    """The same sqlitejobq code and workload on a SQLite file instead of the server, at the
    durability the server runs with (``synchronous=FULL``: every commit is fsynced, as with
    ``fsync=on`` and ``synchronous_commit=on``), for the move from one to the other."""

    key = "sqlitejobq-sqlite"
    label = "sqlitejobq on a SQLite file (FULL)"
    queue_options: ClassVar[dict[str, Any]] = {"synchronous": "FULL"}
    enqueue_note = "`queue.enqueue(task, payload)` per job (one BEGIN IMMEDIATE transaction)"
    batch_note = "`queue.enqueue_many(task, payloads)`, one transaction"
    drain_note = (
        "`Worker(queue, concurrency=4).run()` per process: outcomes and claims for free "
        "threads in one transaction, processes taking turns at the file's write lock"
    )

    @classmethod
    @contextlib.contextmanager
    def fresh(cls, dsn: str, label: str) -> Iterator[str]:
        """A new file in a directory of its own (the server is not used)."""
        with tempfile.TemporaryDirectory(prefix=f"peers-pg-{label}-") as directory:
            yield str(Path(directory) / "jobs.db")

    def _monitoring(self) -> Any:
        if self._monitor is None:
            self._monitor = sqlite3.connect(self.dsn, isolation_level=None, timeout=30)
        return self._monitor

    def table_latencies(self) -> dict[int, float]:
        rows = self._sql(
            "SELECT json_extract(payload, '$.i'), started_at - created_at FROM sqlitejobq_jobs"
        )
        return {int(i): float(seconds) for i, seconds in rows}


PEERS: dict[str, type[Peer]] = {
    peer.key: peer for peer in (SqlitejobqPeer, ProcrastinatePeer, PgQueuerPeer, SqlitejobqFilePeer)
}


# --- the function-level API -----------------------------------------------------------------

WORKLOADS = ("enqueue", "enqueue_batch", "drain", "latency")


def run_workload(
    peer_name: str,
    workload: str,
    dsn: str,
    jobs: int = DEFAULT_JOBS,
    processes: int = 1,
    *,
    samples: int = LATENCY_SAMPLES,
    options: dict[str, Any] | None = None,
    seed: int | None = None,
    analyze: bool = True,
) -> dict[str, Any]:
    """Measure one workload once for one peer on a database of its own; the figures.

    ``dsn`` names any database on the server (it is used to create and drop the fresh one).
    ``workload`` is one of :data:`WORKLOADS`; ``processes`` counts worker processes for
    ``drain``; ``samples`` counts latency samples. Enqueue and drain give
    ``{"jobs", "seconds", "jobs_per_s"}`` (drain also ``"processes"``), latency gives
    ``{"samples", "p50_ms", "p99_ms", "max_ms", "table_p50_ms", "table_p99_ms"}``.
    A lost, repeated or failed job, a crashed worker or a timeout raises :class:`PeerError`.

    With ``analyze`` (the default) a drain's database is analyzed after the jobs are queued
    and before the clock starts, for every peer alike: the drain then measures claiming
    with the planner's statistics in place, as in a database that has been running, rather
    than depending on when autovacuum first analyzes a table filled in one go (until then
    procrastinate's fetch-and-finish SQL ran 1.5 to 6 times slower here).
    """
    if workload not in WORKLOADS:
        raise ValueError(f"workload must be one of {WORKLOADS}, got {workload!r}")
    peer_cls = PEERS[peer_name]
    label = f"{peer_name}_{workload}"
    with peer_cls.fresh(dsn, label) as db:
        peer = peer_cls(db, options)
        try:
            peer.open()
            if workload == "latency":
                return peer.latency(samples, random.Random(seed))
            payloads = [{"i": i} for i in range(jobs)]
            if workload == "drain":
                peer.enqueue_batch(payloads)
                seen = peer.progress()
                if (seen.waiting, seen.finished, seen.failed) != (jobs, 0, 0):
                    raise PeerError(f"before the drain, the tables show {seen}")
                if analyze:
                    peer.analyze()
                seconds = peer.drain(processes, jobs, drain_timeout(jobs))
                return {
                    "jobs": jobs,
                    "processes": processes,
                    "seconds": seconds,
                    "jobs_per_s": jobs / seconds,
                }
            enqueue = peer.enqueue_batch if workload == "enqueue_batch" else peer.enqueue_each
            start = time.perf_counter()
            enqueue(payloads)
            seconds = time.perf_counter() - start
            seen = peer.progress()
            if (seen.waiting, seen.finished, seen.failed) != (jobs, 0, 0):
                raise PeerError(f"after enqueueing {jobs}, the tables show {seen}")
            return {"jobs": jobs, "seconds": seconds, "jobs_per_s": jobs / seconds}
        finally:
            peer.close()


# --- the command line -----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Column:
    """One figure of the table: a workload, its worker processes and the value shown."""

    key: str
    title: str
    workload: str
    processes: int = 1
    field: str = "jobs_per_s"


COLUMNS = (
    Column("enqueue", "Enqueue, one call each (jobs/s)", "enqueue"),
    Column("enqueue_batch", "Enqueue, batched (jobs/s)", "enqueue_batch"),
    Column("drain_1", "Drain, 1 process (jobs/s)", "drain", 1),
    Column("drain_4", "Drain, 4 processes (jobs/s)", "drain", 4),
    Column("latency_p50", "Latency p50 (ms)", "latency", field="p50_ms"),
    Column("latency_p99", "Latency p99 (ms)", "latency", field="p99_ms"),
)
MEASUREMENTS = (
    ("enqueue", "enqueue", 1),
    ("enqueue_batch", "enqueue_batch", 1),
    ("drain_1", "drain", 1),
    ("drain_4", "drain", 4),
    ("latency", "latency", 1),
)


def _cell(values: list[float | None], field: str) -> str:
    if not values or any(v is None for v in values):
        return "error"
    found = [v for v in values if v is not None]
    digits = 1 if field.endswith("_ms") else 0
    middle = statistics.median(found)
    text = f"{middle:,.{digits}f}"
    if len(found) > 1:
        text += f" ({min(found):,.{digits}f}-{max(found):,.{digits}f})"
    return text


def _median(values: list[float | None]) -> float | None:
    """The median of the runs, or None when any run gave no figure."""
    if not values or any(v is None for v in values):
        return None
    return statistics.median(v for v in values if v is not None)


def _command(args: argparse.Namespace) -> str:
    command = (
        f"python -m benchmarks.peers_pg --jobs {args.jobs} --repeats {args.repeats} "
        f"--samples {args.samples}"
    )
    if list(args.peers) != list(PEERS):
        command += f" --peers {','.join(args.peers)}"
    return command


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.peers_pg",
        description="Measure sqlitejobq, procrastinate and pgqueuer on one PostgreSQL server.",
    )
    parser.add_argument(
        "--dsn",
        default=os.environ.get("SQLITEJOBQ_PG_DSN"),
        help="a database on the server; each measurement creates and drops its own "
        "(default $SQLITEJOBQ_PG_DSN)",
    )
    parser.add_argument("--jobs", type=int, default=DEFAULT_JOBS, help="jobs per measurement")
    parser.add_argument("--repeats", type=int, default=DEFAULT_REPEATS, help="medians of these")
    parser.add_argument("--samples", type=int, default=LATENCY_SAMPLES, help="latency samples")
    parser.add_argument("--peers", default=",".join(PEERS), help="comma-separated subset")
    parser.add_argument(
        "--only",
        default=",".join(key for key, _, _ in MEASUREMENTS),
        help="comma-separated subset of " + ", ".join(key for key, _, _ in MEASUREMENTS),
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="PEER.OPTION=VALUE",
        help="override a worker setting, e.g. procrastinate.concurrency=30 (JSON value)",
    )
    parser.add_argument(
        "--no-analyze",
        dest="analyze",
        action="store_false",
        help="drain on tables never analyzed (by default ANALYZE runs before each drain)",
    )
    parser.add_argument("--json", type=Path, help="also write every figure to this file")
    parser.add_argument(
        "--out",
        type=Path,
        help=f"Markdown file whose {SECTION} section is replaced (e.g. docs/benchmarks.md)",
    )
    parser.add_argument(
        "--chart", type=Path, help=f"PNG chart of drain throughput (default {CHART_NAME} by --out)"
    )
    # Internal: run as one worker process of a WorkerGroup.
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--options", default="{}", help=argparse.SUPPRESS)
    parser.add_argument("--ready", help=argparse.SUPPRESS)
    parser.add_argument("--record", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if not args.dsn:
        parser.error("--dsn is required (or set SQLITEJOBQ_PG_DSN)")
    if args.worker:
        return args
    if args.jobs < 1 or args.repeats < 1 or args.samples < 1:
        parser.error("--jobs, --repeats and --samples must be >= 1")
    args.peers = [p.strip() for p in args.peers.split(",") if p.strip()]
    unknown = [p for p in args.peers if p not in PEERS]
    if unknown or not args.peers:
        parser.error(f"--peers takes some of {', '.join(PEERS)}; got {unknown or 'none'}")
    if args.chart is None and args.out is not None:
        args.chart = args.out.parent / CHART_NAME
    args.only = [m.strip() for m in args.only.split(",") if m.strip()]
    known = {key for key, _, _ in MEASUREMENTS}
    if not args.only or any(m not in known for m in args.only):
        parser.error(f"--only takes some of {', '.join(sorted(known))}")
    args.overrides = {}
    for item in args.set:
        target, _, value = item.partition("=")
        peer, _, option = target.partition(".")
        if peer not in PEERS or not option or not value:
            parser.error(f"--set takes PEER.OPTION=VALUE, got {item!r}")
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            parsed = value
        args.overrides.setdefault(peer, {})[option] = parsed
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run every measurement for every peer; 0 when all succeeded, 1 when any failed."""
    args = parse_args(argv)
    if args.worker:
        return _worker_main(args)
    began = time.monotonic()
    started = dt.datetime.now(dt.UTC)
    facts = server_facts(args.dsn)
    peers = [p for p in args.peers if PEERS[p].unavailable() is None]
    for p in set(args.peers) - set(peers):
        print(f"skipping {p}: {PEERS[p].unavailable()}", file=sys.stderr)
    options = {p: {**PEERS[p].default_options, **args.overrides.get(p, {})} for p in peers}
    results: dict[tuple[str, str], list[dict[str, Any] | None]] = {}
    errors: list[str] = []
    measurements = [m for m in MEASUREMENTS if m[0] in args.only]
    for repeat in range(args.repeats):
        shift = repeat % len(peers) if peers else 0
        order = [*peers[shift:], *peers[:shift]]
        for key, workload, processes in measurements:
            for peer in order:
                try:
                    figures: dict[str, Any] | None = run_workload(
                        peer,
                        workload,
                        args.dsn,
                        args.jobs,
                        processes,
                        samples=args.samples,
                        options=options[peer],
                        seed=repeat,
                        analyze=args.analyze,
                    )
                    shown = (
                        f"p50 {figures['p50_ms']:.1f} ms, p99 {figures['p99_ms']:.1f} ms "
                        f"(tables: {figures['table_p50_ms']:.1f}, {figures['table_p99_ms']:.1f})"
                        if workload == "latency"
                        else f"{figures['jobs_per_s']:,.0f} jobs/s ({figures['seconds']:.2f} s)"
                    )
                except Exception as exc:
                    figures = None
                    shown = f"{type(exc).__name__}: {exc}"
                    errors.append(f"{peer} {key}, repeat {repeat + 1}: {shown}")
                results.setdefault((peer, key), []).append(figures)
                print(f"[{repeat + 1}/{args.repeats}] {peer} {key}: {shown}", file=sys.stderr)

    elapsed = time.monotonic() - began
    columns = [c for c in COLUMNS if c.key.startswith(tuple(args.only))]
    chart_link = None
    if args.chart is not None and args.out is not None:
        chart_link = Path(os.path.relpath(args.chart, args.out.parent)).as_posix()
    lines = [
        "## On PostgreSQL, beside procrastinate and pgqueuer",
        "",
        f"Measured {started:%Y-%m-%d %H:%M} UTC with `{_command(args)}` ({elapsed:.0f} s).",
        "",
        f"- Server: PostgreSQL {facts['server_version']} (fsync={facts['fsync']}, "
        f"synchronous_commit={facts['synchronous_commit']}) on the same machine; "
        f"{os.cpu_count()} cores; Python {platform.python_version()}.",
        f"- Method: {args.jobs:,} no-op jobs per throughput measurement, {args.samples} "
        f"latency samples; each figure the median of {args.repeats} (min-max), the systems "
        "taking turns within each repeat; a fresh database per measurement"
        + ("; ANALYZE before each drain." if args.analyze else "; drains on never-analyzed tables.")
        + " A drain counts every run of every job, in the handlers and in the system's own "
        "tables: a lost or repeated job is an error, never a figure.",
        "- The SQLite row runs the same code and workloads on a file of the same machine, at "
        "the server's durability (every commit fsynced).",
        "",
        "| System | " + " | ".join(c.title for c in columns) + " |",
        "|---|" + "---:|" * len(columns),
    ]
    for peer in peers:
        cells = []
        for column in columns:
            key = "latency" if column.workload == "latency" else column.key
            runs = results.get((peer, key), [])
            cells.append(_cell([r[column.field] if r else None for r in runs], column.field))
        lines.append(f"| {PEERS[peer].label} {PEERS[peer].version()} | " + " | ".join(cells) + " |")
    if "latency" in args.only:
        lines += ["", "Latency as each system's own tables record it (start minus enqueue):", ""]
        for peer in peers:
            runs = results.get((peer, "latency"), [])
            lines.append(
                f"- {PEERS[peer].label}: p50 "
                + _cell([r["table_p50_ms"] if r else None for r in runs], "p50_ms")
                + " ms, p99 "
                + _cell([r["table_p99_ms"] if r else None for r in runs], "p99_ms")
                + " ms"
            )
    lines += ["", "How each system is driven:", ""]
    for peer in peers:
        cls = PEERS[peer]
        lines.append(
            f"- **{cls.label}**: settings `{json.dumps(options[peer])}`; enqueue: "
            f"{cls.enqueue_note}; batched: {cls.batch_note}; drain: {cls.drain_note}; "
            f"latency: {cls.latency_note}."
        )
    if errors:
        lines += ["", "Errors:", "", *[f"- {e}" for e in errors]]
    drains = [c for c in columns if c.workload == "drain"]
    if chart_link is not None and drains:
        lines += ["", f"![Drain throughput on PostgreSQL]({chart_link})"]
    section = "\n".join(lines)
    print(section)
    if args.chart is not None and drains:
        medians = {
            column.title: [
                _median([r[column.field] if r else None for r in results.get((p, column.key), [])])
                for p in peers
            ]
            for column in drains
        }
        throughput_chart(
            [PEERS[p].label for p in peers],
            medians,
            args.chart,
            f"Draining {args.jobs:,} queued no-op jobs on PostgreSQL, median of {args.repeats}",
        )
        print(f"chart: {args.chart}", file=sys.stderr)
    if args.out is not None:
        write_section(args.out, section, SECTION)
        print(f"section written to {args.out}", file=sys.stderr)
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "server": facts,
                    "jobs": args.jobs,
                    "repeats": args.repeats,
                    "samples": args.samples,
                    "analyze": args.analyze,
                    "versions": {p: PEERS[p].version() for p in peers},
                    "options": options,
                    "results": {f"{p}/{k}": v for (p, k), v in results.items()},
                    "errors": errors,
                    "seconds": elapsed,
                },
                indent=1,
            )
        )
    return 1 if errors else 0


if __name__ == "__main__":
    # Run the module's own copy, not ``__main__``'s: procrastinate warns about an app
    # defined in ``__main__``, and the worker processes import the same names.
    from benchmarks import peers_pg

    sys.exit(peers_pg.main())
