"""Supervisor: runs N worker processes, restarts one that dies, forwards stop signals."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import FrameType

from .errors import InvalidArgument
from .worker import PARENT_PID_ENV

log = logging.getLogger("sqlitejobq")

#: A child that dies sooner than this after its start counts as crashing; restarts back off.
_HEALTHY_AFTER = 10.0
_MAX_RESTART_DELAY = 30.0


@dataclass
class _Child:
    slot: int
    process: subprocess.Popen[bytes]
    started: float
    failures: int = 0
    restart_at: float | None = None
    exit_codes: list[int] = field(default_factory=list)


class Supervisor:
    """Keeps ``processes`` copies of ``command`` running until stopped.

    Each child runs in its own process group, so a terminal's Ctrl-C reaches the supervisor
    alone and each child gets exactly the signals the supervisor forwards: the first
    SIGTERM/SIGINT asks for a graceful stop, a second one for an immediate stop. A child
    that dies is started again (with growing delays if it keeps dying); in ``burst`` mode a
    child that exits 0 has finished and is not restarted.
    """

    def __init__(self, command: Sequence[str], processes: int, *, burst: bool = False) -> None:
        if processes < 1:
            raise InvalidArgument(f"processes must be >= 1, got {processes}")
        self.command = list(command)
        self.processes = processes
        self.burst = burst
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
            log.info("supervisor %d: started %d worker processes: %s", os.getpid(),
                     self.processes, " ".join(str(c.process.pid) for c in
                                              self._children.values()))  # fmt: skip
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
        log.info("supervisor %d: %s, forwarding to workers", os.getpid(),
                 signal.Signals(signum).name)  # fmt: skip
        self.stop()

    def _spawn(self, slot: int, failures: int = 0) -> _Child:
        env = {**os.environ, PARENT_PID_ENV: str(os.getpid())}
        process = subprocess.Popen(self.command, env=env, start_new_session=True)  # noqa: S603
        return _Child(slot, process, time.monotonic(), failures)

    def _supervise(self) -> int:
        status = 0
        while self._children:
            now = time.monotonic()
            for slot, child in list(self._children.items()):
                code = child.process.poll()
                if code is None:
                    continue
                if child.restart_at is None:
                    child.exit_codes.append(code)
                    if self._signals_received or (self.burst and code == 0):
                        if code not in (0, -signal.SIGTERM):
                            status = 1
                        del self._children[slot]
                        continue
                    healthy = now - child.started >= _HEALTHY_AFTER
                    child.failures = 0 if healthy else child.failures + 1
                    delay = min(_MAX_RESTART_DELAY, 0.0 if healthy else 0.5 * 2**child.failures)
                    child.restart_at = now + delay
                    log.warning("supervisor %d: worker process %d exited with %s; restarting "
                                "in %.1fs", os.getpid(), child.process.pid, code,
                                delay)  # fmt: skip
                if now >= child.restart_at and not self._signals_received:
                    self._children[slot] = self._spawn(slot, child.failures)
                    self.restarts += 1
                elif self._signals_received:
                    del self._children[slot]
            time.sleep(0.05)
        return status


def _send(process: subprocess.Popen[bytes], sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        process.send_signal(sig)


def worker_command(arguments: Sequence[str]) -> list[str]:
    """The command line that starts one worker process with these CLI arguments."""
    return [sys.executable, "-m", "sqlitejobq", *arguments]
