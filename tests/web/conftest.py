"""A dashboard served by the real threaded server on a free port, for each engine."""

from __future__ import annotations

import contextlib
import re
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest

from sqlitejobq import Queue, Registry, Worker
from sqlitejobq.web import dashboard
from sqlitejobq.web.server import make


class Served:
    """A running dashboard: its URL, a client, and the queue behind it."""

    def __init__(self, queue: Queue, **options: Any) -> None:
        self.queue = queue
        self.app = dashboard(queue, **options)
        self.server = make(self.app, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever,
                                       kwargs={"poll_interval": 0.05}, daemon=True)  # fmt: skip
        self.thread.start()
        self.client = httpx.Client(base_url=self.url, timeout=10, follow_redirects=False)

    def get(self, path: str, **kw: Any) -> httpx.Response:
        return self.client.get(path, **kw)

    def csrf(self, path: str = "/") -> str:
        """The CSRF token of a page's forms (the cookie is kept by the client)."""
        page = self.get(path)
        found = re.search(r'name="csrf" value="([^"]+)"', page.text)
        if found:
            return found[1]
        return self.client.cookies["sqlitejobq_csrf"]

    def post(self, path: str, data: dict[str, Any], **kw: Any) -> httpx.Response:
        return self.client.post(path, data=data, **kw)

    def close(self) -> None:
        self.client.close()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@pytest.fixture
def serve() -> Iterator[Callable[..., Served]]:
    started: list[Served] = []

    def start(queue: Queue, **options: Any) -> Served:
        served = Served(queue, **options)
        started.append(served)
        return served

    yield start
    for served in started:
        served.close()


def flaky_registry() -> Registry:
    """Tasks of every outcome: ``ok`` completes, ``boom`` always raises, ``slow`` reports
    progress."""
    registry = Registry()

    @registry.task("ok")
    def ok(job: Any) -> Any:
        return {"doubled": job.payload.get("n", 0) * 2}

    @registry.task("boom", max_attempts=2, backoff=0.0)
    def boom(job: Any) -> Any:
        raise RuntimeError(f"boom on attempt {job.attempts}")

    return registry


def populate(queue: Queue) -> dict[str, Any]:
    """Jobs in every status, a batch, a failure with its traceback; returns their ids."""
    ok_ids = queue.enqueue_many("ok", [{"n": i} for i in range(5)])
    boom = queue.enqueue("boom", {"password": "hunter2", "user": "ann"}, queue="risky")
    batch = queue.enqueue_batch("ok", [{"n": i} for i in range(4)])
    Worker(queue, concurrency=2, queues=["default", "risky"]).run(burst=True)
    assert queue.get(boom).status.value == "failed"
    queued = queue.enqueue("ok", {"n": 99}, delay=3600)
    cancelled = queue.enqueue("ok", {"n": 100}, delay=3600)
    queue.cancel(cancelled)
    return {"ok": ok_ids, "boom": boom, "batch": batch, "queued": queued,
            "cancelled": cancelled}  # fmt: skip


class Relay:
    """A TCP relay to a server that the test can cut: a database outage (refused
    connections, broken ones) without stopping a server that other tests share."""

    def __init__(self, host: str, port: int) -> None:
        self.upstream = (host, port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self.sockets: list[socket.socket] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
                server = socket.create_connection(self.upstream, timeout=10)
            except OSError:
                return
            server.settimeout(None)
            with self.lock:
                self.sockets += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    def cut(self) -> None:
        """Refuse new connections and break the open ones."""
        with contextlib.suppress(OSError):  # wakes the accept() blocked on it; close alone won't
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        with self.lock:
            for sock in self.sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()


def through(relay: Relay, dsn: str) -> str:
    """``dsn`` with its host and port replaced by the relay's."""
    parts = urlsplit(dsn)
    user = parts.netloc.rpartition("@")[0]
    return urlunsplit(parts._replace(netloc=f"{user}@127.0.0.1:{relay.port}" if user
                                     else f"127.0.0.1:{relay.port}"))  # fmt: skip


@contextlib.contextmanager
def uvicorn_serving(app: Any, host: str, port: int) -> Iterator[None]:
    """``app`` served by uvicorn on ``host:port`` in a thread, for the block (started and
    waited for, stopped after)."""
    import time

    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        assert server.started, "uvicorn did not start"
        yield
    finally:
        server.should_exit = True
        thread.join(10)
