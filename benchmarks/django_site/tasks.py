"""The Django benchmark's tasks (module level, as Django requires). Each notes its runs in
the file ``settings.BENCH_RUNS_FILE``, one line per run written with O_APPEND, so that "ran
exactly once" is checked on what ran, not only on what the tables say."""

from __future__ import annotations

import os
import threading
import time

from django.conf import settings

try:
    from django.tasks import task
except ImportError:
    from django_tasks import task

_file: int | None = None
_opening = threading.Lock()


def note(line: str) -> None:
    """Append ``line`` and this process's id to the runs file (one ``write``, atomic)."""
    global _file
    if _file is None:
        with _opening:
            if _file is None:
                path = settings.BENCH_RUNS_FILE
                if not path:
                    raise RuntimeError("BENCH_RUNS_FILE must name the file that notes task runs")
                _file = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.write(_file, f"{line} {os.getpid()}\n".encode())


@task
def record(label: str) -> None:
    """The no-op task of the drains: it only notes that it ran."""
    note(label)


@task
def nap(label: str, seconds: float) -> str:
    """Note its start, sleep, note its end: a task to kill a worker in the middle of."""
    note(f"start {label}")
    time.sleep(seconds)
    note(f"done {label}")
    return label
