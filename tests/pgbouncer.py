"""A throwaway PgBouncer in front of the tests' PostgreSQL server (Debian's ``pgbouncer``).

``PgBouncer.start(dsn, mode, directory)`` writes a configuration (trust authentication, the
given ``pool_mode``, a free port on 127.0.0.1, no unix socket), starts the program in the
foreground and waits until it accepts connections; ``url(dsn)`` is the DSN through it and
``stop()`` ends it. As root it runs as the ``postgres`` user (PgBouncer refuses root).

Without the program the tests skip, saying why, except under ``CI=true`` where they fail.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

PROGRAM_PLACES = ("/usr/sbin/pgbouncer", "/usr/bin/pgbouncer")


def program() -> str:
    """The pgbouncer executable; skips (fails under CI=true) without one."""
    found = shutil.which("pgbouncer") or next(
        (place for place in PROGRAM_PLACES if os.access(place, os.X_OK)), None
    )
    if found is None:
        reason = "pgbouncer is not installed (Debian: apt-get install pgbouncer)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"PgBouncer is required when CI=true: {reason}", pytrace=False)
        pytest.skip(reason)
    return found


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class PgBouncer:
    """One PgBouncer process in ``mode`` ("session" or "transaction") before a server."""

    def __init__(self, dsn: str, mode: str, directory: Path, pool_size: int) -> None:
        self.dsn = dsn
        self.mode = mode
        self.directory = directory
        self.pool_size = pool_size
        self.port = _free_port()
        self.log = directory / "pgbouncer.log"
        self.process: subprocess.Popen[bytes] | None = None

    @classmethod
    def start(cls, dsn: str, mode: str, directory: Path, pool_size: int = 4) -> PgBouncer:
        """A running PgBouncer; ``pool_size`` server connections per database and user."""
        bouncer = cls(dsn, mode, directory, pool_size)
        bouncer._start()
        return bouncer

    def _start(self) -> None:
        server = urlsplit(self.dsn)
        user = server.username or "postgres"
        self.directory.mkdir(parents=True, exist_ok=True)
        (self.directory / "users.txt").write_text(f'"{user}" ""\n')
        config = self.directory / "pgbouncer.ini"
        config.write_text(
            "[databases]\n"
            f"* = host={server.hostname} port={server.port or 5432}\n"
            "[pgbouncer]\n"
            "listen_addr = 127.0.0.1\n"
            f"listen_port = {self.port}\n"
            "unix_socket_dir =\n"
            "auth_type = trust\n"
            f"auth_file = {self.directory / 'users.txt'}\n"
            f"pool_mode = {self.mode}\n"
            "max_client_conn = 400\n"
            f"default_pool_size = {self.pool_size}\n"
            "reserve_pool_size = 0\n"
            f"logfile = {self.log}\n"
            "log_connections = 0\n"
            "log_disconnections = 0\n"
        )
        command = [program(), str(config)]
        if os.geteuid() == 0:  # PgBouncer refuses to run as root
            shutil.chown(self.directory, "postgres")
            for path in self.directory.iterdir():
                shutil.chown(path, "postgres")
            self.directory.chmod(0o755)
            command[1:1] = ["-u", "postgres"]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 30
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"pgbouncer exited: {self.read_log()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"pgbouncer did not listen: {self.read_log()}") from None
                time.sleep(0.05)

    def url(self, dsn: str | None = None) -> str:
        """``dsn`` (the server's, by default) reached through this PgBouncer."""
        parts = urlsplit(dsn or self.dsn)
        user = f"{parts.username}@" if parts.username else ""
        return urlunsplit(parts._replace(netloc=f"{user}127.0.0.1:{self.port}"))

    def read_log(self) -> str:
        """What PgBouncer logged (its refusals say why a client was turned away)."""
        stderr = ""
        if self.process is not None and self.process.poll() is not None and self.process.stderr:
            stderr = self.process.stderr.read().decode(errors="replace")
        return (self.log.read_text(errors="replace") if self.log.exists() else "") + stderr

    def stop(self) -> None:
        """End PgBouncer at once (its clients' connections break)."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(30)
