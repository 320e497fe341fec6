"""Supervisor: runs N worker processes, restarts one that dies or hangs, forwards stop signals."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import FrameType

from .errors import InvalidArgument
from .worker import EXIT_REPLACE, PARENT_PID_ENV

log = logging.getLogger("sqlitejobq")

#: A child that dies sooner than this after its start counts as crashing; restarts back off.
_HEALTHY_AFTER = 10.0
_MAX_RESTART_DELAY = 30.0
#: Names the descriptor on which a supervised worker process writes a byte every
#: ``ALIVE_EVERY`` seconds; a process silent for the supervisor's ``hang_timeout`` is killed.
ALIVE_FD_ENV = "SQLITEJOBQ_ALIVE_FD"
ALIVE_EVERY = 1.0


@dataclass
class _Child:
    slot: int
    process: subprocess.Popen[bytes]
    started: float
    alive_fd: int
    failures: int = 0
    restart_at: float | None = None
    last_alive: float = field(default_factory=time.monotonic)
    exit_codes: list[int] = field(default_factory=list)


class Supervisor:
    """Keeps ``processes`` copies of ``command`` running until stopped.

    Each child runs in its own process group, so a terminal's Ctrl-C reaches the supervisor
    alone and each child gets exactly the signals the supervisor forwards: the first
    SIGTERM/SIGINT asks for a graceful stop, a second one for an immediate stop. A child
    that dies is started again (with growing delays if it keeps dying); in ``burst`` mode a
    child that exits 0 has finished and is not restarted. A child that asks to be replaced
    (exit status 75: a handler thread is stuck past its timeout) is started again at once.
    A child that writes no sign of life for ``hang_timeout`` seconds (a call holding the
    interpreter's lock forever: no thread of it runs) is killed and started again; its jobs
    come back when their leases expire. ``env`` is added to the children's environment
    (what should not show on a command line, such as a database URL with its password).
    """

    def __init__(
        self,
        command: Sequence[str],
        processes: int,
        *,
        burst: bool = False,
        hang_timeout: float = 60.0,
        env: dict[str, str] | None = None,
    ) -> None:
        if processes < 1:
            raise InvalidArgument(f"processes must be >= 1, got {processes}")
        if not hang_timeout > 0:
            raise InvalidArgument(f"hang_timeout must be > 0, got {hang_timeout}")
        self.command = list(command)
        self.processes = processes
        self.burst = burst
        self.hang_timeout = hang_timeout
        self.env = env or {}
        self.restarts = 0
        self._children: dict[int, _Child] = {}
        self._signals_received = 0

    def run(self, *, handle_signals: bool = True) -> int:
        """Start the children and supervise them; the exit status to report (0: all well)."""
        previous = {}
        if handle_signals:
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                previous[sig] = signal.signal(sig, self._on_signal)
        try:
            for slot in range(self.processes):
                self._children[slot] = self._spawn(slot)
            log.info(
                "supervisor %d: started %d worker processes: %s",
                os.getpid(),
                self.processes,
                " ".join(str(c.process.pid) for c in self._children.values()),
            )
            return self._supervise()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def stop(self) -> None:
        """Forward a stop to every child (a second call makes them stop at once)."""
        self._signals_received += 1
        for child in self._children.values():
            if child.process.poll() is None:
                _send(child.process, signal.SIGTERM)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        log.info(
            "supervisor %d: %s, forwarding to workers", os.getpid(), signal.Signals(signum).name
        )
        self.stop()

    def _spawn(self, slot: int, failures: int = 0) -> _Child:
        alive_read, alive_write = os.pipe()
        os.set_blocking(alive_read, False)
        env = {
            **os.environ,
            **self.env,
            PARENT_PID_ENV: str(os.getpid()),
            ALIVE_FD_ENV: str(alive_write),
        }
        try:
            process = subprocess.Popen(  # noqa: S603
                self.command, env=env, start_new_session=True, pass_fds=(alive_write,)
            )
        except BaseException:
            os.close(alive_read)
            raise
        finally:
            os.close(alive_write)
        return _Child(slot, process, time.monotonic(), alive_read, failures)

    def _supervise(self) -> int:
        status = 0
        while self._children:
            now = time.monotonic()
            for slot, child in list(self._children.items()):
                code = child.process.poll()
                if code is None:
                    self._watch_alive(child, now)
                    continue
                if child.restart_at is None:
                    child.exit_codes.append(code)
                    if self._signals_received or (self.burst and code == 0):
                        if code not in (0, -signal.SIGTERM):
                            status = 1
                        self._remove(slot)
                        continue
                    healthy = now - child.started >= _HEALTHY_AFTER or code == EXIT_REPLACE
                    child.failures = 0 if healthy else child.failures + 1
                    delay = min(_MAX_RESTART_DELAY, 0.0 if healthy else 0.5 * 2**child.failures)
                    child.restart_at = now + delay
                    log.warning(
                        "supervisor %d: worker process %d exited with %s; restarting in %.1fs",
                        os.getpid(),
                        child.process.pid,
                        code,
                        delay,
                    )
                if now >= child.restart_at and not self._signals_received:
                    self._remove(slot)
                    self._children[slot] = self._spawn(slot, child.failures)
                    self.restarts += 1
                elif self._signals_received:
                    self._remove(slot)
            time.sleep(0.05)
        return status

    def _watch_alive(self, child: _Child, now: float) -> None:
        """Note a child's signs of life; kill one silent for longer than ``hang_timeout``."""
        try:
            if os.read(child.alive_fd, 4096):
                child.last_alive = now
        except BlockingIOError:
            pass
        except OSError:
            child.last_alive = now  # the pipe is gone with the child: its exit tells
        if now - child.last_alive > self.hang_timeout:
            log.error(
                "supervisor %d: worker process %d gave no sign of life for %.0fs (hung "
                "in a call that holds the interpreter); killing it",
                os.getpid(),
                child.process.pid,
                now - child.last_alive,
            )
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.process.pid, signal.SIGKILL)
            child.last_alive = now

    def _remove(self, slot: int) -> None:
        child = self._children.pop(slot)
        with contextlib.suppress(OSError):
            os.close(child.alive_fd)


def _send(process: subprocess.Popen[bytes], sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        process.send_signal(sig)


def worker_command(arguments: Sequence[str]) -> list[str]:
    """The command line that starts one worker process with these CLI arguments."""
    return [sys.executable, "-m", "sqlitejobq", *arguments]


def signal_alive_to_supervisor() -> None:
    """In a supervised worker process: write a sign of life every second from a thread of
    its own, so that the supervisor can tell a hung process from a busy one."""
    value = os.environ.get(ALIVE_FD_ENV)
    if value is None or not value.isdigit():
        return
    fd = int(value)
    os.set_blocking(fd, False)

    def beat() -> None:
        while True:
            try:
                os.write(fd, b".")
            except BlockingIOError:
                pass  # the supervisor reads later; it has signs enough
            except OSError:
                return  # the supervisor is gone; the worker notices and stops
            time.sleep(ALIVE_EVERY)

    threading.Thread(target=beat, name="sqlitejobq-alive", daemon=True).start()
