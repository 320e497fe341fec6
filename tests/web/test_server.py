"""The built-in server (``sqlitejobq web``) under what a hostile or busy network sends:
half-sent requests, requests that trickle in byte by byte, more connections than it
holds, a burst of connections, a flood of clients. Real sockets throughout."""

from __future__ import annotations

import selectors
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from sqlitejobq import Queue
from sqlitejobq.errors import InvalidArgument
from sqlitejobq.web import dashboard
from sqlitejobq.web.server import make

if TYPE_CHECKING:
    from sqlitejobq.web.server import DashboardServer

pytestmark = pytest.mark.timeout(120)

HALF = b"GET / HTTP/1.1\r\nHost: localhost\r\nUser-Agent: half\r\nX-Waiting: "


@pytest.fixture
def queue(tmp_path: Path) -> Iterator[Queue]:
    q = Queue(tmp_path / "jobs.db", strict_tasks=False)
    yield q
    q.close()


@pytest.fixture
def start(queue: Queue) -> Iterator[Callable[..., DashboardServer]]:
    """Serve the dashboard of ``queue`` with these server options, on a free port."""
    running: list[tuple[DashboardServer, threading.Thread]] = []

    def serve(**options: Any) -> DashboardServer:
        server = make(dashboard(queue), "127.0.0.1", 0, **options)
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                  daemon=True)  # fmt: skip
        thread.start()
        running.append((server, thread))
        assert httpx.get(_url(server), timeout=10).status_code == 200  # up, pool started
        return server

    yield serve
    for server, thread in running:
        server.shutdown()
        server.server_close()
        thread.join(10)


def _url(server: DashboardServer) -> str:
    return f"http://127.0.0.1:{server.server_port}/"


def _connect(server: DashboardServer, data: bytes = HALF) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.server_port), timeout=10)
    if data:
        sock.sendall(data)
    return sock


def _until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"waited {timeout} s for {what}"
        time.sleep(0.02)


def _answers(socks: list[socket.socket], timeout: float) -> dict[socket.socket, bytes]:
    """What each socket receives until the server closes it (all read at once)."""
    got = dict.fromkeys(socks, b"")
    selector = selectors.DefaultSelector()
    for s in socks:
        s.setblocking(False)
        selector.register(s, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    open_ = set(socks)
    while open_ and time.monotonic() < deadline:
        for key, _ in selector.select(0.1):
            sock: socket.socket = key.fileobj  # type: ignore[assignment]
            try:
                chunk = sock.recv(65536)
            except BlockingIOError:
                continue
            except OSError:
                chunk = b""
            if chunk:
                got[sock] += chunk
            else:
                selector.unregister(sock)
                open_.discard(sock)
    selector.close()
    assert not open_, f"{len(open_)} of {len(socks)} connections still open after {timeout} s"
    return got


def test_half_sent_requests_hold_no_thread_and_are_closed_after_the_timeout(start) -> None:
    # a timeout long enough that none expires before the last is taken in, even on a busy
    # machine: the point is that they are all held at once while a request is served
    server = start(threads=4, max_connections=300, timeout=5.0)
    threads = threading.active_count()
    half = [_connect(server) for _ in range(200)]
    try:
        _until(lambda: server.open_connections == 200, 5, "200 half-sent requests taken in")
        answer = httpx.get(_url(server) + "jobs", timeout=10)  # served meanwhile
        assert answer.status_code == 200 and "Jobs" in answer.text
        assert threading.active_count() == threads  # the pool does not grow
        answers = _answers(half, timeout=15)
        assert all(a.startswith(b"HTTP/1.0 408 ") for a in answers.values())
        _until(lambda: server.open_connections == 0, 5, "every connection counted out")
    finally:
        for sock in half:
            sock.close()


def test_a_request_that_trickles_in_is_cut_at_the_timeout(start) -> None:
    server = start(threads=2, timeout=1.0)
    sock = _connect(server, b"GET / HTTP/1.1\r\n")
    started = time.monotonic()
    closed_after = None
    try:
        sock.settimeout(0.2)
        while time.monotonic() - started < 8:  # a byte every 0.2 s: never idle for long
            try:
                sock.sendall(b"X")
                data = sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                data = b""
            closed_after = time.monotonic() - started
            assert data == b"" or data.startswith(b"HTTP/1.0 408 ")
            break
    finally:
        sock.close()
    assert closed_after is not None and closed_after < 5, closed_after


def test_beyond_max_connections_a_client_is_refused_at_once_then_served_again(start) -> None:
    server = start(threads=2, max_connections=10, timeout=3.0)
    half = [_connect(server) for _ in range(10)]
    try:
        _until(lambda: server.open_connections == 10, 10, "ten connections taken in")
        threads = threading.active_count()
        refused = httpx.get(_url(server), timeout=10)
        assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
        assert threading.active_count() == threads
        _answers(half, timeout=10)
        _until(lambda: server.open_connections == 0, 5, "the held connections closed")
        assert httpx.get(_url(server), timeout=10).status_code == 200
    finally:
        for sock in half:
            sock.close()


def test_a_burst_of_connections_waits_in_the_listen_backlog(queue: Queue) -> None:
    server = make(dashboard(queue), "127.0.0.1", 0)  # bound, listening, not accepting yet
    socks = []
    try:
        selector = selectors.DefaultSelector()
        for _ in range(100):
            sock = socket.socket()
            sock.setblocking(False)
            sock.connect_ex(("127.0.0.1", server.server_port))
            selector.register(sock, selectors.EVENT_WRITE)
            socks.append(sock)
        connected: set[socket.socket] = set()
        deadline = time.monotonic() + 3  # a SYN dropped by a full backlog is resent after 1 s
        while len(connected) < len(socks) and time.monotonic() < deadline:
            for key, _ in selector.select(0.1):
                connected.add(key.fileobj)  # type: ignore[arg-type]
                selector.unregister(key.fileobj)
        selector.close()
        assert len(connected) == 100
        assert all(s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0 for s in socks)
    finally:
        for sock in socks:
            sock.close()
        server.server_close()


def _server_threads() -> int:
    """Threads of this process but the clients' ones."""
    return sum(1 for t in threading.enumerate() if not t.name.startswith("client"))


def test_a_flood_of_clients_is_served_by_a_fixed_pool(start) -> None:
    server = start(threads=4, timeout=5.0)
    threads = _server_threads()
    seen: list[int] = []

    def get(_: int) -> int:
        seen.append(_server_threads())
        return client.get(_url(server) + "jobs").status_code

    with httpx.Client(timeout=30, limits=httpx.Limits(max_connections=50)) as client, \
            ThreadPoolExecutor(50, thread_name_prefix="client") as pool:  # fmt: skip
        codes = list(pool.map(get, range(200)))
    assert codes == [200] * 200
    assert max(seen) == threads  # no thread per connection
    _until(lambda: server.open_connections == 0, 5, "every connection closed")


def test_bad_requests_are_refused_by_the_reader_with_their_reason(start) -> None:
    server = start(threads=2, timeout=2.0)
    cases = {
        b"POST /actions/purge HTTP/1.1\r\nHost: localhost\r\nContent-Length: 999999\r\n\r\n": 413,
        b"POST / HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n": 411,
        b"POST / HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1, 2\r\n\r\n": 400,
        b"GET / HTTP/1.1\r\nHost: localhost\r\nX-Big: " + b"x" * 40_000: 431,
    }
    socks = {_connect(server, request): status for request, status in cases.items()}
    answers = _answers(list(socks), timeout=10)
    for sock, status in socks.items():
        assert answers[sock].startswith(f"HTTP/1.0 {status} ".encode()), answers[sock][:80]
        sock.close()


def test_bad_server_options_are_refused_naming_the_value(queue: Queue) -> None:
    app = dashboard(queue)
    for options, message in (({"threads": 0}, "threads must be a whole number >= 1, got 0"),
                             ({"max_connections": -1}, "max_connections must be"),
                             ({"timeout": 0}, "timeout must be > 0 seconds, got 0"),
                             ({"backlog": 2.5}, "backlog must be a whole number")):  # fmt: skip
        with pytest.raises(InvalidArgument, match=message):
            make(app, "127.0.0.1", 0, **options)
