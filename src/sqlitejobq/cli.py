"""The ``sqlitejobq`` command: run workers, and see and fix what is in a queue.

Every command mirrors a library call. Exit status: 0 on success, 1 on an error (one line
on stderr), 2 on bad usage. Read commands print aligned tables, or JSON with ``--json``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import re
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from . import __version__, validation
from .backends import DRIVER_LOGGERS, engine_for, library_schema, redact_target
from .errors import SqliteJobQError
from .job import Job, JobStatus, LimitInfo, ScheduleInfo, WorkerInfo
from .migrations import Migration, migrate
from .queue import Queue
from .registry import Registry
from .supervisor import Supervisor, signal_alive_to_supervisor, worker_command
from .transfer import copy_queue
from .web import Auth, dashboard
from .web.app import allowed_host, trusted_origin
from .web.html import visible
from .web.server import make as make_server
from .worker import EXIT_REPLACE, PARENT_PID_ENV, Worker

DB_ENV = "SQLITEJOBQ_DB"
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


class CliError(Exception):
    """An error to report as one line with exit status 1."""


# --- parsing ----------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every command (also used to document the CLI)."""
    parser = argparse.ArgumentParser(
        prog="sqlitejobq",
        description="A job queue on SQLite that never jams: run workers, inspect and fix jobs.",
    )
    parser.add_argument("--version", action="version", version=f"sqlitejobq {__version__}")
    _add_global_options(parser, on_command=False)
    _add_json_option(parser, on_command=False)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    # each command takes the global options too: `sqlitejobq status --db x` and `sqlitejobq
    # --db x status` alike; a command's copy has no default, so it keeps the main parser's
    common = argparse.ArgumentParser(add_help=False)
    _add_global_options(common, on_command=True)
    as_json = argparse.ArgumentParser(add_help=False)
    _add_json_option(as_json, on_command=True)

    worker = commands.add_parser(
        "worker",
        parents=[common],
        help="run workers (threads, optionally several processes)",
        description="Run handlers of the tasks registered in --app until stopped (SIGTERM or "
        "SIGINT stop gracefully; a second signal stops at once).",
    )
    worker.add_argument(
        "--app",
        required=True,
        metavar="MODULE:ATTR",
        help="where the Registry or Queue is, e.g. myapp.tasks:registry",
    )
    worker.add_argument(
        "--concurrency",
        type=_positive_int,
        default=4,
        metavar="N",
        help="handler threads per process (default: 4)",
    )
    worker.add_argument(
        "--processes",
        type=_positive_int,
        default=None,
        metavar="N",
        help="run N worker processes under a supervisor that replaces one that dies, hangs "
        "or has a stuck handler (default: the worker runs in this process)",
    )
    worker.add_argument(
        "--queue",
        action="append",
        dest="queues",
        metavar="NAME",
        help="claim from this queue (repeatable; default: every queue)",
    )
    worker.add_argument(
        "--lease",
        type=_positive_float,
        default=30.0,
        metavar="SECONDS",
        help="how long a claim holds a job between heartbeats (default: 30)",
    )
    worker.add_argument(
        "--grace",
        type=_non_negative_float,
        default=30.0,
        metavar="SECONDS",
        help="on stop, how long running handlers may take (default: 30)",
    )
    worker.add_argument(
        "--timeout-grace",
        type=_non_negative_float,
        default=5.0,
        metavar="SECONDS",
        help="how long a handler may run past its task's timeout before its attempt fails "
        "(default: 5)",
    )
    worker.add_argument(
        "--unknown-task-window",
        type=_positive_float,
        default=600.0,
        metavar="SECONDS",
        help="how long a job of a task this worker does not know waits for one that does "
        "before it fails (default: 600)",
    )
    worker.add_argument(
        "--hang-timeout",
        type=_positive_float,
        default=60.0,
        metavar="SECONDS",
        help="with --processes: kill and replace a process that gives no sign of life for "
        "this long (default: 60)",
    )
    worker.add_argument(
        "--prefetch",
        type=_non_negative_int,
        default=None,
        metavar="N",
        help="jobs claimed ahead of free threads (default: adaptive)",
    )
    worker.add_argument(
        "--burst",
        action="store_true",
        help="stop once nothing is runnable (periodic jobs are not created)",
    )
    worker.add_argument(
        "--no-schedules",
        action="store_true",
        help="do not create the jobs of the app's periodic schedules",
    )
    worker.add_argument(
        "--schedule-check",
        type=_positive_float,
        default=5.0,
        metavar="SECONDS",
        help="the longest between two looks at the schedules (default: 5; a look also comes "
        "at each slot)",
    )
    worker.add_argument(
        "--synchronous",
        choices=["NORMAL", "FULL"],
        default=None,
        help="SQLite durability of the worker's writes (default: NORMAL; FULL survives power loss)",
    )

    enqueue = commands.add_parser("enqueue", parents=[common, as_json], help="add a job")
    enqueue.add_argument("task", help="task name")
    enqueue.add_argument("payload", nargs="?", default="null", help="JSON payload (default null)")
    enqueue.add_argument("--queue", default=None, help="named queue (default: 'default')")
    enqueue.add_argument("--priority", type=int, default=None, help="higher runs first")
    enqueue.add_argument(
        "--delay",
        type=_duration,
        default=0.0,
        metavar="DURATION",
        help="run no earlier than this from now (e.g. 30, 5m, 2h)",
    )
    enqueue.add_argument(
        "--expires",
        type=_duration,
        default=None,
        metavar="DURATION",
        help="not started within this from now, the job never runs: it ends cancelled",
    )
    enqueue.add_argument(
        "--max-attempts",
        type=_positive_int,
        default=None,
        metavar="N",
        help="runs before the job ends failed (default: 3, or the task's)",
    )
    enqueue.add_argument(
        "--unique-key",
        default=None,
        metavar="KEY",
        help="do not add a second active job with this key",
    )
    enqueue.add_argument(
        "--depends-on",
        type=_positive_int,
        action="append",
        default=None,
        metavar="ID",
        help="wait until this job has finished (repeatable)",
    )
    enqueue.add_argument(
        "--on-dependency-failure",
        choices=["cancel", "run"],
        default="cancel",
        help="if a dependency fails or is cancelled: cancel this job (default) or run it anyway",
    )
    enqueue.add_argument(
        "--app",
        default=None,
        metavar="MODULE:ATTR",
        help="the app's Registry or Queue: its task options (queue, limits) apply",
    )

    status = commands.add_parser(
        "status",
        parents=[common, as_json],
        help="counts per queue and status, paused queues, backlog age, lock waits, limits",
    )
    status.add_argument(
        "--app",
        default=None,
        metavar="MODULE:ATTR",
        help="the app's Registry or Queue: shows each limit's maximum",
    )

    schedules = commands.add_parser(
        "schedules",
        parents=[common, as_json],
        help="periodic jobs: next run, last run, last job status",
    )
    schedules.add_argument(
        "--app",
        default=None,
        metavar="MODULE:ATTR",
        help="the app's Registry or Queue: adds the schedules declared in code and their next run",
    )

    jobs = commands.add_parser("jobs", parents=[common, as_json], help="list jobs")
    jobs.add_argument(
        "--status", choices=[s.value for s in JobStatus], help="only jobs in this status"
    )
    jobs.add_argument("--queue", help="only jobs of this named queue")
    jobs.add_argument("--task", help="only jobs of this task")
    jobs.add_argument("--batch", type=int, metavar="ID", help="only jobs of this batch")
    jobs.add_argument(
        "--limit", type=_positive_int, default=20, help="at most this many jobs (default: 20)"
    )
    jobs.add_argument(
        "--oldest-first", action="store_true", help="oldest first (default: newest first)"
    )

    show = commands.add_parser("show", parents=[common, as_json], help="one job in full")
    show.add_argument("id", type=int, help="the job's id")

    retry = commands.add_parser(
        "retry", parents=[common, as_json], help="queue failed or cancelled jobs again"
    )
    which = retry.add_mutually_exclusive_group(required=True)
    which.add_argument("id", type=int, nargs="?", help="the job's id")
    which.add_argument("--all-failed", action="store_true", help="every failed job")

    cancel = commands.add_parser("cancel", parents=[common, as_json], help="cancel a job")
    cancel.add_argument("id", type=int, help="the job's id")

    update = commands.add_parser(
        "update",
        parents=[common, as_json],
        help="change a queued or waiting job's priority, queue or due time",
        description="Change a job that has not started (Queue.update): one that started or "
        "finished is refused, nothing changed. Give at least one of the options.",
    )
    update.add_argument("id", type=int, help="the job's id")
    update.add_argument("--priority", type=int, metavar="N", help="its new priority")
    update.add_argument(
        "--queue", type=_checked(_queue_name), metavar="NAME", help="the queue to move it to"
    )
    update.add_argument(
        "--delay",
        type=_duration,
        metavar="DURATION",
        help="due this long from now, e.g. 0 (now), 90s, 5m, 2h",
    )

    pause = commands.add_parser(
        "pause",
        parents=[common, as_json],
        help="stop every worker claiming from a named queue, until resume",
        description="Pause a named queue for every worker on every host: within about a "
        "second no worker claims its jobs, until `sqlitejobq resume NAME`. It still takes "
        "enqueues, and jobs already running finish. A name no job uses yet may be paused.",
    )
    pause.add_argument("name", type=_checked(_queue_name), help="the queue's name")

    resume = commands.add_parser(
        "resume",
        parents=[common, as_json],
        help="let workers claim from a paused queue again",
        description="Resume a paused queue: workers claim its jobs again at once.",
    )
    resume.add_argument("name", type=_checked(_queue_name), help="the queue's name")

    purge = commands.add_parser(
        "purge", parents=[common, as_json], help="delete finished jobs older than a duration"
    )
    purge.add_argument(
        "--older-than", type=_duration, required=True, metavar="DURATION", help="e.g. 7d, 12h, 3600"
    )

    migrate_cmd = commands.add_parser(
        "migrate",
        parents=[common, as_json],
        help="create or update the queue's tables (and an app's, with --migrations)",
    )
    migrate_cmd.add_argument(
        "--migrations",
        metavar="MODULE:ATTR",
        help="a list of Migration values of the app to apply too",
    )
    migrate_cmd.add_argument(
        "--namespace", default="app", help="the app's migration namespace (default: app)"
    )
    migrate_cmd.add_argument("--dry-run", action="store_true", help="report, change nothing")
    migrate_cmd.add_argument(
        "--backup", metavar="PATH", help="copy the database here first (online backup API)"
    )

    copy_cmd = commands.add_parser(
        "copy",
        parents=[common, as_json],
        help="copy the queued and failed jobs of --db, with their batches, into --to",
        description="Copy the jobs of --db that are still to run (queued, delayed, waiting to "
        "retry) and the failed ones, with their batches, into --to: a SQLite file into "
        "PostgreSQL, typically. The source is only read. Safe to run again: nothing is "
        "copied twice, and jobs added to the source since are copied. Refused while jobs of "
        "the source are processing: stop its workers first.",
    )
    copy_cmd.add_argument(
        "--to",
        required=True,
        metavar="PATH_OR_URL",
        help="the target: a postgresql:// URL (?schema=NAME names its schema) or a SQLite "
        "file; created or migrated as opening a queue does",
    )
    copy_cmd.add_argument(
        "--dry-run",
        action="store_true",
        help="report what would be copied; write nothing, create nothing",
    )
    copy_cmd.add_argument(
        "--chunk-size",
        type=_positive_int,
        default=1000,
        metavar="N",
        help="jobs copied per transaction (default: 1000)",
    )
    web = commands.add_parser(
        "web",
        parents=[common],
        help="serve the web dashboard (127.0.0.1 unless authentication is configured)",
        description="Serve the dashboard: counts, throughput, jobs, batches with live "
        "progress, workers, schedules and limits, with retry, cancel and purge. It binds "
        "127.0.0.1; another address needs credentials, from $SQLITEJOBQ_WEB_PASSWORD "
        "(user $SQLITEJOBQ_WEB_USER, default admin), $SQLITEJOBQ_WEB_TOKEN, or --auth-file.",
    )
    web.add_argument("--host", default="127.0.0.1", help="the address to bind (default: 127.0.0.1)")
    web.add_argument("--port", type=int, default=8080, help="the port (default: 8080; 0: any)")
    web.add_argument("--read-only", action="store_true", help="show no action")
    web.add_argument(
        "--auth-file",
        metavar="PATH",
        help="a file of one line, user:password or a token (mode 600)",
    )
    web.add_argument(
        "--app",
        default=None,
        metavar="MODULE:ATTR",
        help="the app's Registry or Queue: shows its schedules' next runs and its limits",
    )
    web.add_argument(
        "--redact",
        action="append",
        metavar="WORD",
        help="also mask fields whose names contain this word (repeat; added to "
        "password, token, secret, ...)",
    )
    web.add_argument(
        "--no-default-redact",
        action="store_true",
        help="mask only the --redact words: not the default secret names, not "
        "URL passwords in text",
    )
    web.add_argument(
        "--hide-payloads",
        action="store_true",
        help="show no payload, result, progress message or error text (an error keeps its type)",
    )
    web.add_argument(
        "--allowed-host",
        action="append",
        metavar="NAME",
        type=_checked(allowed_host),
        help="a name the dashboard answers to beside localhost, 127.0.0.1 and "
        "[::1], as the browser sees it (repeat; behind a proxy that keeps "
        "Host)",
    )
    web.add_argument(
        "--trusted-origin",
        action="append",
        metavar="URL",
        type=_checked(trusted_origin),
        help="an origin (https://jobs.example.com) actions may be posted from "
        "(repeat; behind a proxy that rewrites Host)",
    )
    web.add_argument(
        "--threads",
        type=_positive_int,
        default=8,
        metavar="N",
        help="threads answering requests (default: 8)",
    )
    web.add_argument(
        "--max-connections",
        type=_positive_int,
        default=512,
        metavar="N",
        help="connections open at once; more are refused with 503 (default: 512)",
    )
    web.add_argument(
        "--request-timeout",
        type=_positive_float,
        default=10.0,
        metavar="SECONDS",
        help="a request must be read (and its answer sent) within this time (default: 10)",
    )
    web.add_argument(
        "--max-queued-age",
        type=_duration,
        default=300.0,
        metavar="DURATION",
        help="/healthz fails when a due job waited longer (default: 300)",
    )
    return parser


def _add_global_options(parser: argparse.ArgumentParser, *, on_command: bool) -> None:
    """``--db`` and ``--log-level``: with their defaults on the main parser, with none
    (``SUPPRESS``) on a command's, so a value given before or after the command is kept."""
    parser.add_argument(
        "--db",
        metavar="PATH_OR_URL",
        default=argparse.SUPPRESS if on_command else os.environ.get(DB_ENV),
        help=f"the queue's SQLite file, or a postgresql:// URL (default: ${DB_ENV})",
    )
    parser.add_argument(
        "--log-level",
        default=argparse.SUPPRESS if on_command else None,
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="logging level (default: INFO for worker, WARNING otherwise)",
    )


def _add_json_option(parser: argparse.ArgumentParser, *, on_command: bool) -> None:
    """``--json``, placed as the global options are (every command but worker prints)."""
    parser.add_argument(
        "--json",
        action="store_true",
        default=argparse.SUPPRESS if on_command else False,
        help="print JSON instead of a table" + ("" if on_command else " (not for worker)"),
    )


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def _checked(check: Callable[[object], str]) -> Callable[[str], str]:
    """An argparse type from a library check: its error becomes a usage error (status 2)."""

    def parse(text: str) -> str:
        try:
            return check(text)
        except SqliteJobQError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return parse


def _queue_name(value: object) -> str:
    return validation.name(value, "queue")


def _duration(text: str) -> float:
    """Seconds from '90', '90s', '5m', '2h', '7d' or '1w'."""
    match = _DURATION.match(text)
    if not match:
        raise argparse.ArgumentTypeError(
            f"expected a duration like 30, 30s, 5m, 2h, 7d or 1w, got {text!r}"
        )
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]


# --- running ----------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command in ("worker", "web") and args.json:
        parser.error(f"--json is not an option of {args.command}: it prints no table")
    level = args.log_level or ("INFO" if args.command in ("worker", "web") else "WARNING")
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    # a driver's pool reports each failed connection attempt; the library's own message
    # (one line, or the worker's retry warnings) says the same once
    for name in DRIVER_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    command: Callable[[argparse.Namespace], int] = _COMMANDS[args.command]
    try:
        return command(args)
    except (CliError, SqliteJobQError) as exc:
        print(f"sqlitejobq: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("sqlitejobq: interrupted", file=sys.stderr)
        return 130


def _open(args: argparse.Namespace, registry: Registry | None = None) -> Queue:
    if not args.db:
        raise CliError(f"no database: pass --db PATH_OR_URL or set ${DB_ENV}")
    if not engine_for(args.db).is_file:
        return Queue(args.db, registry=registry)
    if not os.path.exists(args.db) and args.command not in ("worker", "enqueue"):
        raise CliError(f"database {args.db} does not exist")
    synchronous = getattr(args, "synchronous", None) or "NORMAL"
    return Queue(args.db, registry=registry, synchronous=synchronous)


def _same_database(given: str, target: str) -> bool:
    return engine_for(given).same_database(given, target)


def load_app(spec: str) -> Any:
    """Import ``MODULE:ATTR`` (the current directory is importable, as with ``python -m``)."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise CliError(f"--app must look like MODULE:ATTR, got {spec!r}")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise CliError(f"cannot import {module_name!r}: {exc}") from None
    for part in attr.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise CliError(f"module {module_name!r} has no attribute {attr!r}") from None
    return target


def _queue_for_app(args: argparse.Namespace) -> Queue:
    app = load_app(args.app)
    if isinstance(app, Queue):
        if args.db and not _same_database(args.db, app.target):
            raise CliError(
                f"--db {redact_target(args.db)} differs from the queue's own database {app.target}"
            )
        return app
    if isinstance(app, Registry):
        return _open(args, app)
    raise CliError(f"--app {args.app} is a {type(app).__name__}, expected a Registry or a Queue")


def cmd_worker(args: argparse.Namespace) -> int:
    """``sqlitejobq worker``: run workers in this process, or supervise ``--processes`` of them."""
    if args.processes is not None:
        app = load_app(args.app)  # fail here, once, rather than in every child
        if not isinstance(app, Registry | Queue):
            raise CliError(
                f"--app {args.app} is a {type(app).__name__}, expected a Registry or a Queue"
            )
        if isinstance(app, Registry) and not args.db:
            raise CliError(f"no database: pass --db PATH_OR_URL or set ${DB_ENV}")
        passed_on = {
            "--concurrency": args.concurrency,
            "--lease": args.lease,
            "--grace": args.grace,
            "--timeout-grace": args.timeout_grace,
            "--unknown-task-window": args.unknown_task_window,
        }
        child_args = ["worker", "--app", args.app]
        for flag, value in passed_on.items():
            child_args += [flag, str(value)]
        env = {}
        if args.db:  # by the environment: a URL's password must not show in `ps`
            env[DB_ENV] = engine_for(args.db).location(args.db)
        for name in args.queues or []:
            child_args += ["--queue", name]
        if args.prefetch is not None:
            child_args += ["--prefetch", str(args.prefetch)]
        if args.burst:
            child_args.append("--burst")
        if args.no_schedules:
            child_args.append("--no-schedules")
        child_args += ["--schedule-check", str(args.schedule_check)]
        if args.log_level:
            child_args += ["--log-level", args.log_level]
        if args.synchronous:
            child_args += ["--synchronous", args.synchronous]
        return Supervisor(
            worker_command(child_args),
            args.processes,
            burst=args.burst,
            hang_timeout=args.hang_timeout,
            env=env,
        ).run()
    queue = _queue_for_app(args)
    if args.db:  # handlers that open connections of their own find the database here
        os.environ[DB_ENV] = engine_for(args.db).location(args.db)
    signal_alive_to_supervisor()
    try:
        summary = Worker(
            queue,
            concurrency=args.concurrency,
            queues=args.queues,
            lease=args.lease,
            grace=args.grace,
            timeout_grace=args.timeout_grace,
            unknown_task_window=args.unknown_task_window,
            prefetch=args.prefetch,
            run_schedules=not args.no_schedules,
            schedule_check=args.schedule_check,
        ).run(burst=args.burst)
    finally:
        queue.close()
    logging.getLogger("sqlitejobq").info(
        "worker finished: %d completed, %d failed, %d retried, %d lost, %d stuck in %.1fs",
        summary.completed,
        summary.failed,
        summary.retried,
        summary.lost,
        summary.stuck,
        summary.seconds,
    )
    # a handler thread is stuck and cannot be killed: ask the supervisor for a new process
    return EXIT_REPLACE if summary.stuck and os.environ.get(PARENT_PID_ENV) else 0


def cmd_enqueue(args: argparse.Namespace) -> int:
    """``sqlitejobq enqueue``: add one job (``Queue.enqueue``) and print its id."""
    try:
        payload = json.loads(args.payload)
    except json.JSONDecodeError as exc:
        raise CliError(f"payload is not valid JSON: {exc}") from None
    with _open_for(args) as queue:
        job_id = queue.enqueue(
            args.task,
            payload,
            queue=args.queue,
            priority=args.priority,
            delay=args.delay,
            max_attempts=args.max_attempts,
            unique_key=args.unique_key,
            depends_on=args.depends_on,
            on_dependency_failure=args.on_dependency_failure,
            expires=args.expires,
        )
        if args.json:
            _print_json(queue.get(job_id).as_dict())
        else:
            print(job_id)
    return 0


def cmd_schedules(args: argparse.Namespace) -> int:
    """``sqlitejobq schedules``: the periodic jobs, recorded by workers or declared in code."""
    with _open_for(args) as queue:
        infos = queue.schedules()
    if args.json:
        _print_json([info.as_dict() for info in infos])
        return 0
    if not infos:
        print("no schedules (a worker records those it runs; --app shows those in code)")
        return 0
    print(_schedules_table(infos))
    return 0


def _schedules_table(infos: list[ScheduleInfo]) -> str:
    rows = [
        [
            i.name,
            i.task,
            i.every,
            i.timezone,
            _when(i.next_slot),
            _when(i.last_slot),
            "-" if i.last_job_id is None else str(i.last_job_id),
            i.last_status or "-",
        ]
        for i in infos
    ]
    return _table(
        ["schedule", "task", "every", "timezone", "next run", "last run", "last job", "status"],
        rows,
    )


def _open_for(args: argparse.Namespace) -> Queue:
    """The queue, with the app's registry when ``--app`` names one."""
    return _queue_for_app(args) if getattr(args, "app", None) else _open(args)


def cmd_status(args: argparse.Namespace) -> int:
    """``sqlitejobq status``: counts by queue and status, paused queues, backlog age, lock
    waits, workers."""
    with _open_for(args) as queue:
        stats = queue.stats()
        workers = queue.workers(alive_only=True)
        limits = queue.limits()
        is_file, database = queue.capabilities.is_file, queue.target
    if is_file:
        database = os.path.abspath(database)
    if args.json:
        data = stats.as_dict()
        data["database"] = database
        data["wal_bytes"] = _wal_size(database) if is_file else None
        data["workers"] = [asdict(w) for w in workers]
        data["limits"] = [info.as_dict() for info in limits]
        _print_json(data)
        return 0
    statuses = [s.value for s in JobStatus]
    counts = {name: stats.counts.get(name, {}) for name in sorted({*stats.counts, *stats.paused})}
    rows = [
        [
            name + (" (paused)" if name in stats.paused else ""),
            *(str(c.get(s, 0)) for s in statuses),
        ]
        for name, c in counts.items()
    ]
    rows.append(["(all)", *(str(stats.by_status[s]) for s in statuses)])
    wal = f"  (WAL {_human_bytes(_wal_size(database))})" if is_file else ""
    print(f"database   {database}{wal}")
    print()
    print(_table(["queue", *statuses], rows))
    print()
    age = stats.oldest_queued_age
    if stats.paused:
        since = ", ".join(f"{name} (since {_when(at)})" for name, at in stats.paused.items())
        print(f"paused queues           {since}")
    print(f"oldest due job waiting  {'-' if age is None else _human_seconds(age)}")
    if stats.next_run_at is not None and (age is None):
        print(f"next delayed job at     {_when(stats.next_run_at)}")
    print(f"active workers          {stats.active_workers}")
    lock = stats.workers_lock
    print(
        f"lock waits, all workers {lock.writes} writes, waited {lock.lock_wait_seconds:.3f}s "
        f"(longest {lock.lock_wait_max_seconds * 1000:.1f} ms), {lock.lock_retries} retries, "
        f"{lock.busy_errors} busy errors"
    )
    if workers:
        print()
        print(_workers_table(workers))
    if limits:
        print()
        print(_limits_table(limits))
    return 0


def _workers_table(workers: list[WorkerInfo]) -> str:
    rows = [
        [
            w.id,
            str(w.pid),
            w.queues,
            str(w.concurrency),
            str(w.jobs_completed),
            str(w.jobs_failed),
            str(w.lock_retries),
            _human_seconds(time.time() - w.last_seen) + " ago",
        ]
        for w in workers
    ]
    return _table(
        ["worker", "pid", "queues", "threads", "completed", "failed", "lock retries", "last seen"],
        rows,
    )


def _limits_table(limits: list[LimitInfo]) -> str:
    headers = ["limited", "processing", "limit", "queued (held)", "rate", "starts last hour"]
    rows = [
        [
            i.key,
            str(i.processing),
            "-" if i.limit is None else str(i.limit),
            str(i.queued),
            i.rate or "-",
            str(i.starts_last_hour),
        ]
        for i in limits
    ]
    return _table(headers, rows)


def cmd_jobs(args: argparse.Namespace) -> int:
    """``sqlitejobq jobs``: the jobs matching the filters (``Queue.jobs``)."""
    with _open(args) as queue:
        jobs = queue.jobs(
            status=args.status,
            queue=args.queue,
            task=args.task,
            batch_id=args.batch,
            limit=args.limit,
            oldest_first=args.oldest_first,
        )
    if args.json:
        _print_json([job.as_dict() for job in jobs])
        return 0
    if not jobs:
        print("no jobs")
        return 0
    headers = ["id", "task", "queue", "status", "attempts", "progress", "created", "error"]
    rows = [
        [
            str(j.id),
            j.task,
            j.queue,
            j.status.value,
            f"{j.attempts}/{j.max_attempts}",
            f"{j.progress * 100:.0f}%",
            _when(j.created_at),
            (j.error or "").splitlines()[0][:60] if j.error else "",
        ]
        for j in jobs
    ]
    print(_table(headers, rows))
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    """``sqlitejobq show``: one job in full, its traceback included (``Queue.get``)."""
    with _open(args) as queue:
        job = queue.get(args.id)
    if args.json:
        _print_json(job.as_dict())
        return 0
    print(_describe(job))
    return 0


def cmd_retry(args: argparse.Namespace) -> int:
    """``sqlitejobq retry``: queue one failed or cancelled job again, or every failed one."""
    with _open(args) as queue:
        if args.all_failed:
            ids = queue.retry_failed()
            if args.json:
                _print_json({"retried": ids})
            else:
                print(
                    f"queued again: {_count(len(ids), 'job')}" + (f" ({_ids(ids)})" if ids else "")
                )
            return 0
        if not queue.retry(args.id):
            status = queue.get(args.id).status.value
            raise CliError(
                f"job {args.id} is {status}; only failed or cancelled jobs can be retried"
            )
        if args.json:
            _print_json({"retried": [args.id]})
        else:
            print(f"job {args.id} queued again")
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    """``sqlitejobq cancel``: cancel a queued job, or ask a running one to stop."""
    with _open(args) as queue:
        if not queue.cancel(args.id):
            raise CliError(f"job {args.id} is already {queue.get(args.id).status.value}")
        status = queue.get(args.id).status
    message = (
        "cancelled"
        if status is JobStatus.CANCELLED
        else "is processing: asked to stop, its handler will see job.cancelled"
    )
    if args.json:
        _print_json({"id": args.id, "status": status.value})
    else:
        print(f"job {args.id} {message}")
    return 0


def cmd_update(args: argparse.Namespace) -> int:
    """``sqlitejobq update``: change a job that has not started (``Queue.update``)."""
    changes = {
        name: getattr(args, name)
        for name in ("priority", "queue", "delay")
        if getattr(args, name) is not None
    }
    if not changes:
        print(
            "sqlitejobq update: error: give --priority, --queue or --delay to change",
            file=sys.stderr,
        )
        return 2
    with _open(args) as queue:
        job = queue.update(args.id, **changes)
    if args.json:
        _print_json(job.as_dict())
    else:
        print(
            f"job {job.id} {job.status.value} in queue {job.queue}, priority {job.priority}, "
            f"due {_when(job.run_at)}"
        )
    return 0


def cmd_pause(args: argparse.Namespace) -> int:
    """``sqlitejobq pause``: no worker claims from the queue until resumed (``Queue.pause``)."""
    with _open(args) as queue:
        changed = queue.pause(args.name)
    if args.json:
        _print_json({"queue": args.name, "paused": True, "changed": changed})
    elif changed:
        print(
            f"queue {args.name} paused: no worker claims its jobs until "
            f"`sqlitejobq resume {args.name}`; running jobs finish"
        )
    else:
        print(f"queue {args.name} was paused already")
    return 0


def cmd_resume(args: argparse.Namespace) -> int:
    """``sqlitejobq resume``: workers claim from a paused queue again (``Queue.resume``)."""
    with _open(args) as queue:
        changed = queue.resume(args.name)
    if args.json:
        _print_json({"queue": args.name, "paused": False, "changed": changed})
    elif changed:
        print(f"queue {args.name} resumed")
    else:
        print(f"queue {args.name} was not paused")
    return 0


def cmd_purge(args: argparse.Namespace) -> int:
    """``sqlitejobq purge``: delete finished jobs older than a duration (``Queue.purge``)."""
    with _open(args) as queue:
        count = queue.purge(args.older_than)
    if args.json:
        _print_json({"purged": count})
    else:
        print(f"purged {count} finished jobs older than {_human_seconds(args.older_than)}")
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    """``sqlitejobq migrate``: apply the library's migrations, then the app's (``--migrations``)."""
    if not args.db:
        raise CliError(f"no database: pass --db PATH_OR_URL or set ${DB_ENV}")
    plans = [library_schema(args.db)]
    if args.migrations:
        app_migrations = load_app(args.migrations)
        if not isinstance(app_migrations, list | tuple) or not all(
            isinstance(m, Migration) for m in app_migrations
        ):
            raise CliError(f"--migrations {args.migrations} is not a list of Migration values")
        plans.append((args.namespace, list(app_migrations)))
    report: dict[str, list[int]] = {}
    backup = args.backup
    for namespace, migrations in plans:
        report[namespace] = migrate(
            args.db, migrations, namespace, dry_run=args.dry_run, backup=backup
        )
        if report[namespace]:
            backup = None  # one copy, taken before the first change
    if args.json:
        _print_json({"dry_run": args.dry_run, "applied": report})
        return 0
    verb = "would apply" if args.dry_run else "applied"
    for namespace, versions in report.items():
        print(f"{namespace}: {verb} {_ids(versions) if versions else 'nothing (up to date)'}")
    return 0


def _count(n: int, noun: str) -> str:
    """``1 job``, ``2 jobs``."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def cmd_copy(args: argparse.Namespace) -> int:
    """``sqlitejobq copy``: copy the queued and failed jobs of --db into --to (``copy_queue``)."""
    if not args.db:
        raise CliError(f"no source database: pass --db PATH_OR_URL or set ${DB_ENV}")
    report = copy_queue(args.db, args.to, chunk_size=args.chunk_size, dry_run=args.dry_run)
    if args.json:
        _print_json(report.as_dict())
        return 0
    verb = "would copy" if report.dry_run else "copied"
    print(
        f"{verb} {_count(report.copied, 'job')} from {report.source} to {report.target}: "
        f"{report.queued} queued ({report.delayed} delayed, {report.retrying} waiting to "
        f"retry), {report.failed} failed; batches created: {report.batches}"
    )
    skipped = report.already_copied + report.deduplicated
    if skipped:
        print(f"skipped {_count(skipped, 'job')} copied before")
    if report.dry_run:
        print("dry run: nothing was written")
    else:
        print(f"{_count(report.chunks, 'chunk')} in {report.seconds:.1f}s")
    return 0


def cmd_web(args: argparse.Namespace) -> int:
    """``sqlitejobq web``: serve the dashboard until interrupted."""
    try:
        auth = Auth.from_file(args.auth_file) if args.auth_file else Auth.from_env()
        queue = _queue_for_app(args) if args.app else _open(args)
        app = dashboard(
            queue,
            read_only=args.read_only,
            auth=auth,
            redact=args.redact,
            redact_defaults=not args.no_default_redact,
            show_payloads=not args.hide_payloads,
            allowed_hosts=args.allowed_host,
            trusted_origins=args.trusted_origin,
            max_queued_age=args.max_queued_age,
        )
        server = make_server(
            app,
            args.host,
            args.port,
            threads=args.threads,
            max_connections=args.max_connections,
            timeout=args.request_timeout,
        )
    except OSError as exc:
        raise CliError(f"cannot serve on {args.host}:{args.port}: {exc.strerror}") from None
    host = f"[{args.host}]" if ":" in args.host else args.host
    mode = ", read-only" if args.read_only else ""
    print(
        f"sqlitejobq dashboard of {queue.target} on http://{host}:{server.server_port}/"
        f"{mode} (Ctrl+C stops it)",
        flush=True,
    )
    try:
        server.serve_forever(poll_interval=0.5)
    finally:
        server.server_close()
        queue.close()
    return 0


_COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "worker": cmd_worker,
    "enqueue": cmd_enqueue,
    "status": cmd_status,
    "schedules": cmd_schedules,
    "jobs": cmd_jobs,
    "show": cmd_show,
    "retry": cmd_retry,
    "cancel": cmd_cancel,
    "update": cmd_update,
    "pause": cmd_pause,
    "resume": cmd_resume,
    "purge": cmd_purge,
    "migrate": cmd_migrate,
    "copy": cmd_copy,
    "web": cmd_web,
}


# --- output -----------------------------------------------------------------------------


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=True, default=str))


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    # stored text (names, errors) is shown, never obeyed: no escape sequence reaches the
    # terminal and no line break splits a row
    rows = [[visible(str(cell), lines=False) for cell in row] for row in rows]
    widths = [max(len(str(c)) for c in column) for column in zip(headers, *rows, strict=False)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    for row in rows:
        lines.append("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return "\n".join(lines)


def _describe(job: Job) -> str:
    status = job.status.value
    if job.cancel_requested and job.status is JobStatus.PROCESSING:
        status += " (cancel requested)"
    progress = f"{job.progress * 100:.0f}%"
    if job.progress_message:
        progress += f" {job.progress_message}"
    fields = [
        ("id", str(job.id)),
        ("task", job.task),
        ("queue", job.queue),
        ("status", status),
        ("priority", str(job.priority)),
        ("attempts", f"{job.attempts}/{job.max_attempts}"),
        ("progress", progress),
        ("created", _when(job.created_at)),
        ("run at", _when(job.run_at)),
        ("started", _when(job.started_at)),
        ("finished", _when(job.finished_at)),
        ("worker", job.worker or "-"),
        ("lease until", _when(job.lease_until)),
        ("batch", "-" if job.batch_id is None else str(job.batch_id)),
        ("unique key", job.unique_key or "-"),
        ("payload", json.dumps(job.payload, ensure_ascii=False)),
        ("result", "-" if job.result is None else json.dumps(job.result, ensure_ascii=False)),
        ("error", job.error or "-"),
    ]
    width = max(len(name) for name, _ in fields)
    text = "\n".join(f"{name.ljust(width)}  {visible(value)}" for name, value in fields)
    if job.traceback:
        text += "\n\n" + visible(job.traceback.rstrip())
    return text


def _when(epoch: float | None) -> str:
    if epoch is None:
        return "-"
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _human_seconds(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.1f}s"


def _human_bytes(count: int) -> str:
    size = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"


def _wal_size(db: str) -> int:
    try:
        return os.path.getsize(db + "-wal")
    except OSError:
        return 0


def _ids(ids: Sequence[int]) -> str:
    shown = ", ".join(str(i) for i in ids[:20])
    return shown + (f" and {len(ids) - 20} more" if len(ids) > 20 else "")
