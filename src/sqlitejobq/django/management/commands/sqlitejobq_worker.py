"""``python manage.py sqlitejobq_worker``: a sqlitejobq worker for the Django tasks of one
``TasksBackend`` (SIGTERM or SIGINT stop it gracefully), in this process or, with
``--processes N``, in N supervised processes that each run this command."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError

from sqlitejobq.django.backend import tasks_backend
from sqlitejobq.django.worker import DjangoRegistry
from sqlitejobq.supervisor import Supervisor, signal_alive_to_supervisor
from sqlitejobq.worker import EXIT_REPLACE, PARENT_PID_ENV, Worker

COMMAND = "sqlitejobq_worker"


def _positive(kind: type[int] | type[float]) -> Any:
    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {text!r}")
        return value

    return parse


class Command(BaseCommand):
    """Run the Django tasks enqueued through a ``TasksBackend`` until stopped."""

    help = (
        "Run the Django tasks of a sqlitejobq TasksBackend until stopped (SIGTERM or SIGINT "
        "stop gracefully; a second signal stops at once)."
    )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """The worker's options, as ``sqlitejobq worker`` names them."""
        parser.add_argument(
            "--backend",
            default="default",
            metavar="ALIAS",
            help="the TASKS alias whose jobs to run (default: default)",
        )
        parser.add_argument(
            "--queue",
            action="append",
            dest="queues",
            metavar="NAME",
            help="claim from this queue (repeatable; default: the backend's QUEUES)",
        )
        parser.add_argument(
            "--concurrency",
            type=_positive(int),
            default=4,
            metavar="N",
            help="handler threads (default: 4)",
        )
        parser.add_argument(
            "--lease",
            type=_positive(float),
            default=30.0,
            metavar="SECONDS",
            help="how long a claim holds a job between heartbeats (default: 30)",
        )
        parser.add_argument("--burst", action="store_true", help="stop once nothing is runnable")
        parser.add_argument(
            "--processes",
            type=_positive(int),
            default=None,
            metavar="N",
            help="run N worker processes under a supervisor that replaces one that dies, hangs "
            "or has a stuck handler (default: the worker runs in this process)",
        )
        parser.add_argument(
            "--hang-timeout",
            type=_positive(float),
            default=60.0,
            metavar="SECONDS",
            help="with --processes: kill and replace a process that gives no sign of life for "
            "this long (default: 60)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        """Run a worker in this process on the backend's queue."""
        try:
            backend = tasks_backend(options["backend"])
        except ImproperlyConfigured as exc:
            raise CommandError(str(exc)) from exc
        if options["processes"] is not None:
            self._supervise(options)
            return
        queues = options["queues"] or sorted(backend.queues) or None
        registry = backend.queue.registry
        assert isinstance(registry, DjangoRegistry)  # the backend's queue has no other
        registry.discover(backend.alias)
        signal_alive_to_supervisor()
        summary = Worker(
            backend.queue,
            concurrency=options["concurrency"],
            queues=queues,
            lease=options["lease"],
        ).run(burst=options["burst"])
        self.stdout.write(
            f"worker finished: {summary.completed} completed, {summary.failed} failed, "
            f"{summary.retried} retried, {summary.lost} lost in {summary.seconds:.1f}s"
        )
        if summary.stuck and os.environ.get(PARENT_PID_ENV):
            # a handler thread is stuck and cannot be killed: ask the supervisor for a new process
            raise SystemExit(EXIT_REPLACE)

    def _supervise(self, options: dict[str, Any]) -> None:
        """Run ``options["processes"]`` copies of this command, each a worker of its own."""
        child_args = [
            COMMAND,
            "--backend",
            options["backend"],
            "--concurrency",
            str(options["concurrency"]),
            "--lease",
            str(options["lease"]),
            "--skip-checks",  # checked once, here
        ]
        for name in options["queues"] or []:
            child_args += ["--queue", name]
        if options["burst"]:
            child_args.append("--burst")
        if options.get("pythonpath"):
            child_args += ["--pythonpath", options["pythonpath"]]
        status = Supervisor(
            [*_django_command(), *child_args],
            options["processes"],
            burst=options["burst"],
            hang_timeout=options["hang_timeout"],
            env={"DJANGO_SETTINGS_MODULE": settings.SETTINGS_MODULE},
        ).run()
        if status:
            raise CommandError("a worker process exited with an error", returncode=status)


def _django_command() -> list[str]:
    """How to run a management command as this process was started: the same ``manage.py``
    (or ``django-admin``) script, else ``python -m django``."""
    script = sys.argv[0] if sys.argv else ""
    if (
        sys.argv[1:2] == [COMMAND]
        and os.path.isfile(script)
        and os.path.basename(script) != "__main__.py"
    ):
        return [sys.executable, os.path.abspath(script)]
    return [sys.executable, "-m", "django"]
