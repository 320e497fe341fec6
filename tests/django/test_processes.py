"""``manage.py sqlitejobq_worker`` as real processes with real signals, on both engines:
``--processes N`` draining Django tasks, a SIGTERM of the supervisor, a SIGKILL mid-task."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.django.conftest import WORKER_TIMEOUT, DjangoSetup

try:
    from django.tasks import TaskResultStatus, task
except ImportError:
    from django_tasks import TaskResultStatus, task

pytestmark = pytest.mark.timeout(120)

#: How long ``wait_for_release`` waits for its file before it gives up.
RELEASE_WAIT = 60.0


@task
def append_line(path: str, label: str) -> str:
    """Note this run: one line ``label pid`` in the file at ``path``."""
    with open(path, "a") as log:
        log.write(f"{label} {os.getpid()}\n")
    return label


@task
def wait_for_release(path: str, release: str) -> int:
    """Note its start in ``path``, wait for the file ``release``, note its end; its pid."""
    with open(path, "a") as log:
        log.write(f"start {os.getpid()}\n")
    deadline = time.monotonic() + RELEASE_WAIT
    while not os.path.exists(release):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{release} did not appear")
        time.sleep(0.05)
    with open(path, "a") as log:
        log.write(f"done {os.getpid()}\n")
    return os.getpid()


MANAGE_PY = """\
import os
import sys

from django.core.management import execute_from_command_line

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.django.settings")
execute_from_command_line(sys.argv)
"""


def start_worker(
    setup: DjangoSetup, *arguments: str, manage_py: Path | None = None
) -> subprocess.Popen[str]:
    """``python -m django sqlitejobq_worker`` (or ``python manage_py sqlitejobq_worker``,
    which sets the settings module itself) started in the background with the test's
    settings, as ``DjangoSetup.run_worker`` runs it, importing this checkout's sqlitejobq."""
    env = {
        **os.environ,
        "SQLITEJOBQ_DJANGO_TEST": json.dumps({"DATABASES": setup.databases, "TASKS": setup.tasks}),
        "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)]),
    }
    env.pop("DJANGO_SETTINGS_MODULE", None)
    if manage_py is None:
        env["DJANGO_SETTINGS_MODULE"] = "tests.django.settings"
        command = [sys.executable, "-m", "django"]
    else:
        command = [sys.executable, str(manage_py)]
    return subprocess.Popen(
        [*command, "sqlitejobq_worker", *arguments],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


def finish(process: subprocess.Popen[str], timeout: float = WORKER_TIMEOUT) -> str:
    """Its output once it exits (killed if it does not within ``timeout``)."""
    try:
        out, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        out, _ = process.communicate()
        raise AssertionError(f"the worker did not exit within {timeout}s:\n{out}") from None
    return out


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def lines(path: Path) -> list[list[str]]:
    return [line.split() for line in path.read_text().splitlines()] if path.exists() else []


def is_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_processes_drain_the_tasks_each_run_once(django_setup: DjangoSetup, tmp_path: Path) -> None:
    log = tmp_path / "runs.log"
    results = [append_line.enqueue(str(log), f"task-{n}") for n in range(40)]

    worker = start_worker(django_setup, "--processes", "2", "--burst", "--concurrency", "2")
    output = finish(worker)

    assert worker.returncode == 0, output
    assert output.count("worker finished:") == 2, output  # one line per worker process
    ran = lines(log)
    assert sorted(label for label, _ in ran) == sorted(f"task-{n}" for n in range(40))
    assert str(worker.pid) not in {pid for _, pid in ran}  # run in the children only
    for n, result in enumerate(results):
        result.refresh()
        assert result.status == TaskResultStatus.SUCCESSFUL
        assert result.return_value == f"task-{n}"
        assert len(result.worker_ids) == 1


def test_processes_started_by_manage_py_run_it_too(
    django_setup: DjangoSetup, tmp_path: Path
) -> None:
    manage_py = tmp_path / "manage.py"
    manage_py.write_text(MANAGE_PY)
    log = tmp_path / "runs.log"
    results = [append_line.enqueue(str(log), f"task-{n}") for n in range(10)]

    worker = start_worker(django_setup, "--processes", "2", "--burst", manage_py=manage_py)
    output = finish(worker)

    assert worker.returncode == 0, output
    assert output.count("worker finished:") == 2, output
    assert sorted(label for label, _ in lines(log)) == sorted(f"task-{n}" for n in range(10))
    for result in results:
        result.refresh()
        assert result.status == TaskResultStatus.SUCCESSFUL


def test_sigterm_of_the_supervisor_lets_the_running_task_finish(
    django_setup: DjangoSetup, tmp_path: Path
) -> None:
    log, release = tmp_path / "runs.log", tmp_path / "release"
    result = wait_for_release.enqueue(str(log), str(release))
    # one child: the one running the task has surely installed its signal handlers (a
    # second child still importing Django when the signal comes would die of it)
    worker = start_worker(django_setup, "--processes", "1", "--concurrency", "1")
    wait_until(lambda: len(lines(log)) == 1, WORKER_TIMEOUT, "the task to start")
    child = int(lines(log)[0][1])
    assert child != worker.pid

    worker.send_signal(signal.SIGTERM)
    time.sleep(0.5)  # the children are stopping; the running task still runs
    assert worker.poll() is None and is_running(child)
    release.touch()
    output = finish(worker)

    assert worker.returncode == 0, output
    assert output.count("worker finished:") == 1, output
    assert "1 completed" in output
    assert lines(log) == [["start", str(child)], ["done", str(child)]]
    assert not is_running(child)
    result.refresh()
    assert result.status == TaskResultStatus.SUCCESSFUL
    assert result.return_value == child


def test_a_task_of_a_sigkilled_worker_runs_again_elsewhere_once(
    django_setup: DjangoSetup, tmp_path: Path
) -> None:
    log, release = tmp_path / "runs.log", tmp_path / "release"
    result = wait_for_release.enqueue(str(log), str(release))
    first = start_worker(django_setup, "--lease", "2", "--concurrency", "1")
    wait_until(lambda: len(lines(log)) == 1, WORKER_TIMEOUT, "the task to start")
    assert lines(log) == [["start", str(first.pid)]]
    result.refresh()
    assert result.status == TaskResultStatus.RUNNING

    os.kill(first.pid, signal.SIGKILL)
    finish(first)
    release.touch()
    second = start_worker(django_setup, "--lease", "2", "--concurrency", "1")

    def succeeded() -> bool:
        result.refresh()
        return result.status == TaskResultStatus.SUCCESSFUL

    try:
        wait_until(succeeded, WORKER_TIMEOUT, "the task to succeed on the second worker")
    finally:
        second.send_signal(signal.SIGTERM)
        output = finish(second)
    assert second.returncode == 0, output
    # started twice (once per worker), completed once, by the second worker
    assert lines(log) == [
        ["start", str(first.pid)],
        ["start", str(second.pid)],
        ["done", str(second.pid)],
    ]
    assert result.return_value == second.pid
    assert len(result.worker_ids) == 2  # one per attempt: the killed one counts
    assert result.worker_ids[0] != result.worker_ids[1]
    # the killed attempt's error: its lease expired
    assert len(result.errors) == 1
    assert "lease expired" in result.errors[0].traceback
    assert result.errors[0].exception_class_path == "sqlitejobq.errors.LeaseExpired"
    assert result.last_attempted_at > result.started_at


def test_a_sigkilled_worker_process_is_replaced_and_its_task_runs_again(
    django_setup: DjangoSetup, tmp_path: Path
) -> None:
    log, release = tmp_path / "runs.log", tmp_path / "release"
    result = wait_for_release.enqueue(str(log), str(release))
    worker = start_worker(django_setup, "--processes", "1", "--lease", "2", "--concurrency", "1")
    try:
        wait_until(lambda: len(lines(log)) == 1, WORKER_TIMEOUT, "the task to start")
        killed = int(lines(log)[0][1])
        assert killed != worker.pid
        os.kill(killed, signal.SIGKILL)
        release.touch()
        wait_until(lambda: len(lines(log)) == 3, WORKER_TIMEOUT, "the task to run again")
    finally:
        worker.send_signal(signal.SIGTERM)
        output = finish(worker)
    assert worker.returncode == 0, output
    (_, first), (_, second), (done, last) = lines(log)
    assert first == str(killed) and second == last != first and done == "done"
    result.refresh()
    assert result.status == TaskResultStatus.SUCCESSFUL
    assert result.return_value == int(second)
    assert len(result.worker_ids) == 2
