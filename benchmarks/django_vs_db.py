"""sqlitejobq's Django backend beside django-tasks-db on SQLite: the same machine, the same
run, the same Django database settings (the ones docs/django.md recommends).

    python -m benchmarks.django_vs_db [--tasks N] [--quick] [--tuned-peer] [--out FILE]

For each backend, each variant on a fresh database file in a temporary folder, prepared by
``python -m django migrate`` (``benchmarks/django_site`` is the site):

- the enqueue rate of a view-like loop: ``record.enqueue(label)`` per call in autocommit,
  and each inside ``transaction.atomic()`` after a write to an app table (as a view does);
- the drain of the N queued tasks by 1 and by 4 worker processes (``sqlitejobq_worker
  --burst`` and ``db_worker --batch``, started side by side), from the first start to the
  last exit; for sqlitejobq also ``sqlitejobq_worker --processes 4 --burst``;
- the atomic loop again while 4 workers run (``sqlitejobq_worker``, ``db_worker``), to the
  moment every task has run;
- "database is locked": raised to the enqueue loops; written in the workers' output (the
  site's ``LOGGING`` sends each library's loggers to stderr); and met inside a worker:
  lines of the site's lock probe (a Django execute wrapper that logs every such error of a
  Django query, which ``db_worker`` drops without a log line in its claim) and sqlitejobq's
  busy retries (its own connections, counted in its workers table);
- a worker SIGKILLed in the middle of a sleeping task, then a fresh worker: the task's
  ``TaskResult`` (``get_result``) once it has finished, or when a bounded wait ends.

``--tuned-peer`` adds django-tasks-db again with ``CONN_MAX_AGE`` None and
``synchronous=NORMAL`` on Django's connection (sqlitejobq's own connections commit so).

Every task notes its run in a file (O_APPEND), so "ran exactly once" is checked on what
ran as well as on each result's status and worker ids. Django work happens in
subprocesses: ``python -m django ...`` for migrations and workers, and this module's
``child`` actions (``python -m benchmarks.django_vs_db child ...``) for the enqueue loops
and the results, so that each process reads its backend from the environment.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import platform
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

from benchmarks.django_site.apps import PROBE_MARK
from benchmarks.django_site.settings import (
    BACKEND_ENV,
    DATABASE_OPTIONS,
    DB_ENV,
    RUNS_ENV,
    TUNED_ENV,
)

ROOT = Path(__file__).resolve().parents[1]
SETTINGS_MODULE = "benchmarks.django_site.settings"
BACKENDS = ("sqlitejobq", "django-tasks-db")
LOCKED = "database is locked"
FINISHED = ("SUCCESSFUL", "FAILED")
#: How long a Django process may take to start, do a small thing and exit.
STEP_TIMEOUT = 120.0


@dataclass(frozen=True)
class Sizes:
    """How much each measurement does."""

    tasks: int
    #: The SIGKILL case: sqlitejobq's ``--lease``, the task's sleep, and how long to wait
    #: after the lease for the task to finish (the same wait for both backends).
    lease: float
    nap: float
    after_lease: float

    @property
    def timeout(self) -> float:
        """The bound of a wait that grows with the tasks (a drain, an enqueue loop)."""
        return 120.0 + self.tasks / 10


FULL = Sizes(tasks=10_000, lease=5.0, nap=3.0, after_lease=15.0)
QUICK = Sizes(tasks=300, lease=2.0, nap=2.0, after_lease=10.0)


# --- the processes ---------------------------------------------------------------------------


@dataclass
class Site:
    """One backend on one fresh SQLite file in ``folder``: how its Django processes start,
    where its tasks note their runs and where each process writes its output."""

    backend: str
    folder: Path
    tuned: bool = False
    logs: list[Path] = field(default_factory=list)

    @property
    def db(self) -> Path:
        return self.folder / "app.db"

    @property
    def runs(self) -> Path:
        return self.folder / "runs.log"

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "DJANGO_SETTINGS_MODULE": SETTINGS_MODULE,
            BACKEND_ENV: self.backend,
            DB_ENV: str(self.db),
            RUNS_ENV: str(self.runs),
            TUNED_ENV: "1" if self.tuned else "0",
        }

    def start(self, arguments: Sequence[str], name: str) -> subprocess.Popen[bytes]:
        """``python -m django ARGUMENTS`` in the background, its output in ``name``.log."""
        log = self.folder / f"{name}.log"
        self.logs.append(log)
        with log.open("wb") as out:
            return subprocess.Popen(
                [sys.executable, "-m", "django", *arguments],
                cwd=ROOT, env=self.env(), stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip

    def migrate(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(
            [sys.executable, "-m", "django", "migrate", "--verbosity", "0"],
            cwd=ROOT, env=self.env(), capture_output=True, text=True, timeout=STEP_TIMEOUT,
        )  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"{self.backend}: migrate failed:\n{done.stderr[-3000:]}")

    def child(self, *arguments: str, timeout: float = STEP_TIMEOUT) -> dict[str, Any]:
        """This module's ``child`` action in a Django process of this site: its JSON answer.
        Its stderr is kept with the site's logs (the lock probe writes there)."""
        log = self.folder / f"child-{len(self.logs)}-{arguments[0]}.log"
        self.logs.append(log)
        try:
            done = subprocess.run(
                [sys.executable, "-m", "benchmarks.django_vs_db", "child", *arguments],
                cwd=ROOT, env=self.env(), capture_output=True, text=True, timeout=timeout,
            )  # fmt: skip
        except subprocess.TimeoutExpired as exc:
            raise TimeoutError(
                f"{self.backend}: child {arguments[0]} did not finish within {timeout:.0f}s"
            ) from exc
        log.write_text(done.stderr)
        if done.returncode != 0:
            raise RuntimeError(
                f"{self.backend}: child {' '.join(arguments)} failed:\n{done.stderr[-3000:]}"
            )
        answer: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
        return answer

    def ran(self) -> list[list[str]]:
        """The runs noted so far, one line each: ``label pid`` or ``start|done label pid``."""
        if not self.runs.exists():
            return []
        return [line.split() for line in self.runs.read_text().splitlines()]

    def ran_count(self) -> int:
        """How many runs are noted (cheap enough to poll while workers run)."""
        return self.runs.read_bytes().count(b"\n") if self.runs.exists() else 0


def worker_arguments(backend: str, *, burst: bool, lease: float | None = None) -> list[str]:
    """The worker command of ``backend`` at its defaults: ``--burst`` / ``--batch`` to stop
    once nothing is left. ``db_worker`` runs without its random start-up delay (up to 1 s)."""
    if backend == "sqlitejobq":
        arguments = ["sqlitejobq_worker"]
        if burst:
            arguments.append("--burst")
        if lease is not None:
            arguments += ["--lease", str(lease)]
        return arguments
    arguments = ["db_worker", "--no-startup-delay"]
    if burst:
        arguments.append("--batch")
    return arguments


def wait_until(
    condition: Callable[[], bool], timeout: float, what: str, interval: float = 0.01
) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def wait_exit(processes: Sequence[subprocess.Popen[bytes]], timeout: float, what: str) -> None:
    """Wait for every process to exit; past ``timeout``, kill them all and raise."""
    try:
        wait_until(lambda: all(p.poll() is not None for p in processes), timeout, what)
    except TimeoutError:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
        raise


def stop(processes: Sequence[subprocess.Popen[bytes]], what: str) -> None:
    """SIGTERM (a graceful stop for both workers), then wait a bounded time."""
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    wait_exit(processes, 60.0, f"{what} to stop after SIGTERM")


def exit_problems(processes: Sequence[subprocess.Popen[bytes]], what: str) -> list[str]:
    codes = [p.returncode for p in processes if p.returncode != 0]
    return [f"{what}: {len(codes)} worker(s) exited with {sorted(set(codes))}"] if codes else []


# --- the measurements ------------------------------------------------------------------------


@dataclass
class Enqueued:
    """An enqueue loop: its time, the labels and ids it enqueued (also in ``ids_file``), the
    lock errors it met."""

    tasks: int
    seconds: float
    ids: dict[str, str]
    ids_file: Path
    locked: int
    errors: dict[str, int]
    busy_retries: int

    @property
    def rate(self) -> float:
        return self.tasks / self.seconds


@dataclass
class Drained:
    """Workers running the queued tasks: how long, and what was wrong (nothing, we hope)."""

    what: str
    tasks: int
    seconds: float
    problems: list[str]

    @property
    def rate(self) -> float:
        return self.tasks / self.seconds


@dataclass
class Killed:
    """What became of a task whose worker was SIGKILLed while it ran."""

    status: str
    worker_ids: int
    errors: int
    starts: int
    finishes: int
    waited: float
    finished_after_kill: float | None


@dataclass
class Locks:
    """Each "database is locked" seen: raised to an enqueue loop (``enqueue``), written in a
    worker's output (``logged``: log lines and tracebacks, each occurrence), and met inside
    a worker (``inside``: the errors of Django queries the site's probe logs, whether the
    library handles them or not, and sqlitejobq's busy retries)."""

    enqueue: int = 0
    logged: int = 0
    inside: int = 0

    def add_logs(self, logs: Sequence[Path]) -> None:
        """Count the workers' output (an enqueue loop's errors are counted where raised)."""
        for log in logs:
            if log.name.startswith("child-") or not log.exists():
                continue
            for line in log.read_text(errors="replace").splitlines():
                if PROBE_MARK in line:
                    self.inside += 1
                else:
                    self.logged += line.count(LOCKED)


@dataclass
class Results:
    """Everything measured for one backend (``tuned``: its Django settings tuned further)."""

    backend: str
    tuned: bool = False
    enqueue_autocommit: Enqueued | None = None
    enqueue_atomic: Enqueued | None = None
    drains: dict[str, Drained] = field(default_factory=dict)
    under_load: Enqueued | None = None
    under_load_done: Drained | None = None
    killed: Killed | None = None
    locks: Locks = field(default_factory=Locks)

    def problems(self) -> list[str]:
        found = [p for d in self.drains.values() for p in d.problems]
        if self.under_load_done is not None:
            found += self.under_load_done.problems
        return found

    @property
    def label(self) -> str:
        return f"{self.backend}, tuned" if self.tuned else self.backend


def enqueue(site: Site, mode: str, tasks: int, sizes: Sizes) -> Enqueued:
    """The view-like loop in a child process of the site (its stderr kept with the logs)."""
    ids_file = site.folder / f"ids-{mode}.json"
    answer = site.child(
        "enqueue", "--mode", mode, "--tasks", str(tasks), "--ids", str(ids_file),
        timeout=sizes.timeout,
    )  # fmt: skip
    return Enqueued(
        tasks=answer["enqueued"],
        seconds=answer["seconds"],
        ids=json.loads(ids_file.read_text()),
        ids_file=ids_file,
        locked=answer["locked"],
        errors=answer["errors"],
        busy_retries=answer["busy_retries"],
    )


def verify(site: Site, enqueued: Enqueued, what: str) -> tuple[list[str], int]:
    """What is wrong with the drain of ``enqueued``: every task noted once in the runs file,
    every result SUCCESSFUL with one worker id. Also sqlitejobq's workers' busy retries."""
    problems = []
    counted = collections.Counter(line[0] for line in site.ran() if len(line) == 2)
    missing = [label for label in enqueued.ids if counted[label] == 0]
    twice = [label for label, n in counted.items() if n > 1]
    unknown = [label for label in counted if label not in enqueued.ids]
    if missing:
        problems.append(f"{what}: {len(missing)} never ran (e.g. {missing[0]})")
    if twice:
        problems.append(f"{what}: {len(twice)} ran more than once (e.g. {twice[0]})")
    if unknown:
        problems.append(f"{what}: {len(unknown)} unknown labels ran")
    states = site.child("states", "--ids", str(enqueued.ids_file))
    if states["statuses"] != {"SUCCESSFUL": len(enqueued.ids)}:
        problems.append(f"{what}: results {states['statuses']}")
    if states["worker_ids"] != {"1": len(enqueued.ids)}:
        problems.append(f"{what}: worker ids per result {states['worker_ids']}")
    return problems, states["busy_retries"]


def drain(
    site: Site, enqueued: Enqueued, processes: int, sizes: Sizes, what: str
) -> tuple[Drained, int]:
    """Start ``processes`` burst workers side by side (or, for ``--processes``, one
    supervisor of them), time them from the first start to the last exit, then verify."""
    if what.endswith("supervised"):
        arguments = [[*worker_arguments(site.backend, burst=True), "--processes", str(processes)]]
    else:
        arguments = [worker_arguments(site.backend, burst=True)] * processes
    started = time.perf_counter()
    workers = [site.start(a, f"{what}-{n}") for n, a in enumerate(arguments)]
    wait_exit(workers, sizes.timeout, f"{site.backend}: {what} to finish")
    seconds = time.perf_counter() - started
    problems, retries = verify(site, enqueued, what)
    problems += exit_problems(workers, what)
    return Drained(what, len(enqueued.ids), seconds, problems), retries


def under_load(site: Site, sizes: Sizes) -> tuple[Enqueued, Drained, int]:
    """The atomic loop while 4 workers run: its rate, and the time from the workers' start
    until every task has run (or every worker has exited)."""
    started = time.perf_counter()
    workers = [
        site.start(worker_arguments(site.backend, burst=False), f"load-{n}") for n in range(4)
    ]
    try:
        enqueued = enqueue(site, "atomic", sizes.tasks, sizes)
        wait_until(
            lambda: (
                site.ran_count() >= enqueued.tasks or all(w.poll() is not None for w in workers)
            ),
            sizes.timeout,
            f"{site.backend}: 4 running workers to run the tasks enqueued meanwhile",
            interval=0.05,
        )
        seconds = time.perf_counter() - started
    finally:
        stop(workers, f"{site.backend}: the 4 workers")
    problems, retries = verify(site, enqueued, "under-load")
    problems += exit_problems(workers, "under-load")
    return enqueued, Drained("under-load", enqueued.tasks, seconds, problems), retries


def sigkill(site: Site, sizes: Sizes) -> Killed:
    """A worker SIGKILLed while its task sleeps, then a fresh worker; the task's result once
    it has finished, or after the lease plus ``after_lease`` seconds."""
    job = site.child("nap", "--seconds", str(sizes.nap))["id"]
    arguments = worker_arguments(site.backend, burst=False, lease=sizes.lease)
    first = site.start(arguments, "kill-first")
    try:
        wait_until(
            lambda: any(line[0] == "start" for line in site.ran()),
            STEP_TIMEOUT,
            f"{site.backend}: the task to start in the first worker",
            interval=0.05,
        )
    finally:
        os.kill(first.pid, signal.SIGKILL)
        wait_exit([first], 30.0, f"{site.backend}: the SIGKILLed worker to die")
    killed = time.monotonic()
    second = site.start(arguments, "kill-second")
    try:
        watch = sizes.lease + sizes.after_lease
        answer = site.child(
            "watch", "--id", job, "--timeout", str(watch), timeout=watch + STEP_TIMEOUT
        )
        finished_at = time.monotonic()
    finally:
        stop([second], f"{site.backend}: the second worker")
    starts = sum(1 for line in site.ran() if line[0] == "start")
    finishes = sum(1 for line in site.ran() if line[0] == "done")
    return Killed(
        status=answer["status"],
        worker_ids=answer["worker_ids"],
        errors=answer["errors"],
        starts=starts,
        finishes=finishes,
        waited=answer["waited"],
        finished_after_kill=finished_at - killed if answer["status"] in FINISHED else None,
    )


def run_backend(backend: str, sizes: Sizes, base: Path, tuned: bool = False) -> Results:
    """Every measurement of one backend, each variant on a fresh file under ``base``."""
    results = Results(backend, tuned)
    sites: list[Site] = []

    def site(name: str) -> Site:
        made = Site(backend, base / results.label.replace(", ", "-") / name, tuned)
        made.migrate()
        sites.append(made)
        return made

    def loop(at: Site, mode: str) -> Enqueued:
        enqueued = enqueue(at, mode, sizes.tasks, sizes)
        results.locks.enqueue += enqueued.locked
        results.locks.inside += enqueued.busy_retries
        return enqueued

    def drained(at: Site, enqueued: Enqueued, processes: int, what: str) -> Drained:
        measured, retries = drain(at, enqueued, processes, sizes, what)
        results.locks.inside += retries
        return measured

    first = site("autocommit")
    results.enqueue_autocommit = loop(first, "autocommit")
    results.drains["1"] = drained(first, results.enqueue_autocommit, 1, "drain-1")
    second = site("atomic")
    results.enqueue_atomic = loop(second, "atomic")
    results.drains["4"] = drained(second, results.enqueue_atomic, 4, "drain-4")
    if backend == "sqlitejobq":
        third = site("supervised")
        results.drains["4 supervised"] = drained(
            third, loop(third, "autocommit"), 4, "drain-4-supervised"
        )
    results.under_load, results.under_load_done, retries = under_load(site("under_load"), sizes)
    results.locks.enqueue += results.under_load.locked
    results.locks.inside += results.under_load.busy_retries + retries
    results.killed = sigkill(site("sigkill"), sizes)
    for made in sites:
        results.locks.add_logs(made.logs)
    return results


def run(sizes: Sizes, base: Path, tuned_peer: bool = False) -> dict[str, Results]:
    """Both backends, one after the other, in the same run (and django-tasks-db again with
    its Django settings tuned, if ``tuned_peer``)."""
    columns = [(backend, False) for backend in BACKENDS]
    if tuned_peer:
        columns.append(("django-tasks-db", True))
    measured = [run_backend(backend, sizes, base, tuned) for backend, tuned in columns]
    return {results.label: results for results in measured}


# --- the report ------------------------------------------------------------------------------


def _rate(measured: Enqueued | Drained | None, seconds: bool = True) -> str:
    if measured is None:
        return "n/a"
    shown = f"{measured.rate:,.0f}/s"
    return f"{shown} ({measured.seconds:.2f} s)" if seconds else shown


def _killed(killed: Killed | None) -> str:
    if killed is None:
        return "n/a"
    if killed.finished_after_kill is not None:
        when = f"{killed.finished_after_kill:.1f} s after the kill"
    else:
        when = f"still, {killed.waited:.0f} s after the fresh worker's start"
    return (
        f"{killed.status} {when}; {killed.worker_ids} worker id(s), {killed.errors} error(s); "
        f"started {killed.starts}x, finished {killed.finishes}x"
    )


def _once(results: Results) -> str:
    problems = results.problems()
    if problems:
        return "no: " + "; ".join(problems)
    return f"yes ({len(results.drains) + 1} drains, each result SUCCESSFUL with 1 worker id)"


def table(results: dict[str, Results]) -> list[str]:
    """The Markdown table: one column per backend."""
    columns = list(results.values())

    def row(name: str, cell: Callable[[Results], str]) -> str:
        return f"| {name} | " + " | ".join(cell(r) for r in columns) + " |"

    return [
        "| | " + " | ".join(r.label for r in columns) + " |",
        "|---|" + "---:|" * len(columns),
        row("enqueue, autocommit (as a view)", lambda r: _rate(r.enqueue_autocommit)),
        row(
            "enqueue in `transaction.atomic()` with a write to an app table",
            lambda r: _rate(r.enqueue_atomic),
        ),
        row("drain, 1 worker process", lambda r: _rate(r.drains.get("1"))),
        row("drain, 4 worker processes", lambda r: _rate(r.drains.get("4"))),
        row(
            "drain, `sqlitejobq_worker --processes 4`",
            lambda r: _rate(r.drains.get("4 supervised")),
        ),
        row("enqueue in `atomic()` with a write, 4 workers running", lambda r: _rate(r.under_load)),
        row(
            "the same, from the workers' start to every task run",
            lambda r: _rate(r.under_load_done),
        ),
        row(
            '"database is locked": raised to enqueue loops / in workers\' output / met '
            "inside workers (probe; sqlitejobq: busy retries)",
            lambda r: f"{r.locks.enqueue} / {r.locks.logged} / {r.locks.inside}",
        ),
        row("ran exactly once", _once),
        row("SIGKILL of the worker mid-task", lambda r: _killed(r.killed)),
    ]


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine()


def preamble(sizes: Sizes, tuned_peer: bool, seconds: float) -> list[str]:
    """When, where, which versions, which settings."""
    versions = ", ".join(
        f"{name} {version(name)}"
        for name in ("Django", "django-tasks", "django-tasks-db", "sqlitejobq")
    )
    command = f"python -m benchmarks.django_vs_db --tasks {sizes.tasks}"
    lines = [
        f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC with "
        f"`{command}{' --tuned-peer' if tuned_peer else ''}` ({seconds:.0f} s).",
        "",
        f"- Machine: {_cpu()}, {os.cpu_count()} cores; Python {platform.python_version()}; "
        f"SQLite {sqlite3.sqlite_version}.",
        f"- Versions: {versions}.",
        f"- Django's database, for both backends: SQLite, `OPTIONS` {json.dumps(DATABASE_OPTIONS)}"
        ", `CONN_MAX_AGE` at Django's default 0, `synchronous` at SQLite's default FULL. "
        'sqlitejobq: `TASKS` `OPTIONS` `{"database": "default"}`, its jobs in Django\'s file; '
        "its own connections (enqueue outside `atomic()`, workers) commit at its default "
        "`synchronous=NORMAL`, which the backend's `OPTIONS` do not change.",
        f"- {sizes.tasks:,} tasks per enqueue loop and per drain; workers at their defaults "
        "(`sqlitejobq_worker`: 4 threads; `db_worker`: one task at a time, with "
        "`--no-startup-delay`). SIGKILL: a task sleeping "
        f"{sizes.nap:g} s, sqlitejobq's `--lease {sizes.lease:g}`, then a wait of the lease + "
        f"{sizes.after_lease:g} s for both.",
    ]
    if tuned_peer:
        lines.append(
            "- *tuned*: the same with `CONN_MAX_AGE` None (db_worker keeps its connection "
            "instead of opening one per task) and `PRAGMA synchronous=NORMAL` in "
            "`init_command` (commits without fsync, as sqlitejobq's own)."
        )
    return lines


# --- the child processes ---------------------------------------------------------------------


def _lock_error(exc: BaseException) -> bool:
    return "locked" in str(exc).lower() or type(exc).__name__ == "DatabaseBusy"


def _busy_retries(own: bool) -> int:
    """sqlitejobq's busy retries: this process's (``own``) or its workers' (from the file)."""
    from django.conf import settings

    if settings.BENCH_BACKEND != "sqlitejobq":
        return 0
    from benchmarks.django_site.tasks import record

    stats = record.get_backend().queue.stats()
    lock = stats.lock if own else stats.workers_lock
    return int(lock.lock_retries)


def child_enqueue(mode: str, tasks: int, ids_file: Path) -> dict[str, Any]:
    """The view-like loop: one enqueue per call, in autocommit or in ``atomic()`` after a
    write to the site's table; a "database is locked" error is counted, as a view's 500."""
    from django.db import connection, transaction

    from benchmarks.django_site.models import Visit
    from benchmarks.django_site.tasks import record

    backend = record.get_backend()
    connection.ensure_connection()
    try:  # the backend's first use (sqlitejobq: opening its queue) outside the loop
        backend.get_result("1")
    except Exception as exc:
        if type(exc).__name__ != "TaskResultDoesNotExist":
            raise
    ids: dict[str, str] = {}
    errors: collections.Counter[str] = collections.Counter()
    prefix = f"{mode}-{os.getpid()}"
    started = time.perf_counter()
    for n in range(tasks):
        label = f"{prefix}-{n}"
        try:
            if mode == "atomic":
                with transaction.atomic():
                    Visit.objects.create(label=label)
                    result = record.enqueue(label)
            else:
                result = record.enqueue(label)
        except Exception as exc:
            if not _lock_error(exc):
                raise
            errors[type(exc).__name__] += 1
            continue
        ids[label] = str(result.id)
    seconds = time.perf_counter() - started
    ids_file.write_text(json.dumps(ids))
    return {
        "enqueued": len(ids),
        "seconds": seconds,
        "locked": sum(errors.values()),
        "errors": dict(errors),
        "busy_retries": _busy_retries(own=True),
    }


def child_states(ids_file: Path) -> dict[str, Any]:
    """Each task's result through Django's API: counts by status and by worker ids."""
    from benchmarks.django_site.tasks import record

    statuses: collections.Counter[str] = collections.Counter()
    workers: collections.Counter[str] = collections.Counter()
    for result_id in json.loads(ids_file.read_text()).values():
        result = record.get_result(result_id)
        statuses[str(result.status)] += 1
        workers[str(len(result.worker_ids))] += 1
    return {
        "statuses": dict(statuses),
        "worker_ids": dict(workers),
        "busy_retries": _busy_retries(own=False),
    }


def child_nap(seconds: float) -> dict[str, Any]:
    from benchmarks.django_site.tasks import nap

    return {"id": str(nap.enqueue("nap", seconds).id)}


def child_watch(result_id: str, timeout: float) -> dict[str, Any]:
    """Poll the task's result until it has finished or ``timeout`` has passed."""
    from benchmarks.django_site.tasks import nap

    started = time.monotonic()
    while True:
        result = nap.get_result(result_id)
        status = str(result.status)
        if status in FINISHED or time.monotonic() - started > timeout:
            break
        time.sleep(0.1)
    return {
        "status": status,
        "worker_ids": len(result.worker_ids),
        "errors": len(result.errors),
        "waited": time.monotonic() - started,
    }


def child(argv: Sequence[str]) -> int:
    """``child ACTION ...``: one Django step, its answer as JSON on the last line of stdout."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.django_vs_db child")
    parser.add_argument("action", choices=["enqueue", "states", "nap", "watch"])
    parser.add_argument("--mode", choices=["autocommit", "atomic"], default="autocommit")
    parser.add_argument("--tasks", type=int, default=0)
    parser.add_argument("--ids", type=Path)
    parser.add_argument("--seconds", type=float, default=0.0)
    parser.add_argument("--id")
    parser.add_argument("--timeout", type=float, default=0.0)
    args = parser.parse_args(argv)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", SETTINGS_MODULE)
    import django

    django.setup()
    if args.action == "enqueue":
        answer = child_enqueue(args.mode, args.tasks, args.ids)
    elif args.action == "states":
        answer = child_states(args.ids)
    elif args.action == "nap":
        answer = child_nap(args.seconds)
    else:
        answer = child_watch(args.id, args.timeout)
    print(json.dumps(answer))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["child"]:
        return child(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m benchmarks.django_vs_db")
    parser.add_argument("--tasks", type=int, default=FULL.tasks)
    parser.add_argument("--quick", action="store_true", help=f"{QUICK.tasks} tasks, short waits")
    parser.add_argument(
        "--tuned-peer",
        action="store_true",
        help="also django-tasks-db with CONN_MAX_AGE None and synchronous=NORMAL",
    )
    parser.add_argument("--out", type=Path, help="also write the report to this file")
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else Sizes(args.tasks, FULL.lease, FULL.nap, FULL.after_lease)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="django-vs-db-") as base:
        results = run(sizes, Path(base), args.tuned_peer)
    lines = [*preamble(sizes, args.tuned_peer, time.perf_counter() - started), ""]
    lines += table(results)
    print("\n".join(lines))
    if args.out:
        args.out.write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
