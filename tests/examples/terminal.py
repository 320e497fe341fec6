"""Running the example in a real terminal for tests: a pseudo-terminal of a given size, its
output read back as a person would see it (ANSI escapes taken out, the live progress bar's
redraws reduced to their last state)."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
#: CSI sequences (colours, cursor moves, line erases), OSC sequences (links, titles), and
#: the two-character escapes.
_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_]")


@dataclass(frozen=True)
class Run:
    """What a command printed to its terminal, escapes taken out, and its exit status."""

    text: str
    returncode: int


def _open_terminal(columns: int, rows: int) -> tuple[int, int]:
    """A pseudo-terminal (its controller, its device) whose window is columns x rows."""
    controller, device = pty.openpty()
    fcntl.ioctl(device, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
    return controller, device


def plain(raw: str) -> str:
    """Terminal output as seen: escapes out, CRLF as LF, each line as its last redraw."""
    text = _ANSI.sub("", raw).replace("\r\n", "\n")
    return "\n".join(line.rsplit("\r", 1)[-1] for line in text.split("\n"))


def run_in_terminal(
    arguments: Sequence[str],
    columns: int,
    *,
    rows: int = 50,
    stdin_columns: int | None = None,
    timeout: float = 60.0,
) -> Run:
    """``python -m examples.stock_analyzer *arguments`` with stdout and stderr on a terminal
    ``columns`` wide ($COLUMNS and $LINES unset, so the program must measure it). stdin is
    /dev/null, or, with ``stdin_columns``, a terminal of that other width."""
    env = {key: value for key, value in os.environ.items() if key not in ("COLUMNS", "LINES")}
    env.update(TERM="xterm-256color", PYTHONIOENCODING="utf-8", PYTHONPATH=os.pathsep.join(
        [str(ROOT), str(ROOT / "src"), *filter(None, [os.environ.get("PYTHONPATH")])]))  # fmt: skip
    controller, device = _open_terminal(columns, rows)
    held = [controller, device]  # closed at the end
    stdin: int = subprocess.DEVNULL
    if stdin_columns is not None:
        other = _open_terminal(stdin_columns, rows)
        held += other
        stdin = other[1]
    chunks: list[bytes] = []
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", "examples.stock_analyzer", *arguments],
            cwd=ROOT, env=env, stdin=stdin, stdout=device, stderr=device, close_fds=True,
        )  # fmt: skip
        os.close(device)  # the child holds it: the output ends once the child is gone
        held.remove(device)
        deadline = time.monotonic() + timeout
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    so_far = plain(b"".join(chunks).decode(errors="replace"))
                    raise AssertionError(f"{arguments} ran longer than {timeout}s:\n{so_far}")
                ready, _, _ = select.select([controller], [], [], min(left, 1.0))
                if not ready:
                    continue
                try:
                    chunk = os.read(controller, 65536)
                except OSError:  # EIO: every holder of the device has closed it
                    break
                if not chunk:
                    break
                chunks.append(chunk)
            returncode = process.wait(timeout=max(deadline - time.monotonic(), 1.0))
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(30)
    finally:
        for fd in held:
            os.close(fd)
    return Run(plain(b"".join(chunks).decode("utf-8", errors="replace")), returncode)
