"""The example API as a real process for tests: uvicorn on a free port of 127.0.0.1."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class ApiServer:
    """A running API process: its base URL and the file its output goes to."""

    base: str
    log: Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def running_api(db: str, log: Path, *options: str) -> Iterator[ApiServer]:
    """``python -m examples.stock_analyzer.api --db db --port <free> *options`` until the
    block ends, once it answers HTTP; its output goes to ``log``."""
    port = free_port()
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "examples.stock_analyzer.api", "--db", db,
             "--port", str(port), *options],
            cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(  # this checkout's library
                [str(ROOT), str(ROOT / "src"), *filter(None, [os.environ.get("PYTHONPATH")])])},
        )  # fmt: skip
        try:
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 60
            while True:
                try:
                    httpx.get(f"{base}/api/all-stocks/progress", timeout=5)
                    break
                except httpx.TransportError:
                    if time.monotonic() > deadline or process.poll() is not None:
                        raise AssertionError("server did not start:\n" + log.read_text()) from None
                    time.sleep(0.1)
            yield ApiServer(base, log)
        finally:
            process.terminate()
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(30)
