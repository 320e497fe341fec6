"""``python manage.py sqlitejobq_worker``: a sqlitejobq worker for the Django tasks of one
``TasksBackend`` (SIGTERM or SIGINT stop it gracefully)."""

from __future__ import annotations

import argparse
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from sqlitejobq.django.backend import TasksBackend
from sqlitejobq.django.compat import task_backends
from sqlitejobq.worker import Worker


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

    def handle(self, *args: Any, **options: Any) -> None:
        """Run a worker in this process on the backend's queue."""
        alias = options["backend"]
        try:
            backend = task_backends[alias]
        except Exception as exc:
            raise CommandError(f"no task backend {alias!r}: {exc}") from exc
        if not isinstance(backend, TasksBackend):
            raise CommandError(
                f"task backend {alias!r} is a {type(backend).__name__}, not "
                "sqlitejobq.django.TasksBackend"
            )
        queues = options["queues"] or sorted(backend.queues) or None
        summary = Worker(
            backend.queue,
            concurrency=options["concurrency"],
            queues=queues,
            lease=options["lease"],
            run_schedules=False,
        ).run(burst=options["burst"])
        self.stdout.write(
            f"worker finished: {summary.completed} completed, {summary.failed} failed, "
            f"{summary.retried} retried, {summary.lost} lost in {summary.seconds:.1f}s"
        )
