"""The dashboard on a small WSGI server of the standard library (``sqlitejobq web``).

A connection costs no thread until its request is in: one thread reads every open
connection without blocking, each within ``timeout`` seconds (request line, headers and
body together, however slowly they trickle in), and hands whole requests to a fixed pool
of ``threads``. At most ``max_connections`` are open at once; beyond that a new one is
answered 503 at once and closed. The listen backlog (``backlog``) absorbs bursts.
"""

from __future__ import annotations

import contextlib
import io
import logging
import queue
import re
import selectors
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

from ..errors import InvalidArgument
from .app import MAX_BODY, Dashboard
from .auth import is_loopback

log = logging.getLogger("sqlitejobq.web")

#: Request line and headers together may not be longer (a browser sends 1-2 KiB).
MAX_HEAD = 32 * 1024
_CONTENT_LENGTH = re.compile(rb"^[ \t]*content-length[ \t]*:(.*)$", re.IGNORECASE | re.M)
_CHUNKED = re.compile(rb"^\s*transfer-encoding\s*:", re.IGNORECASE | re.M)
#: How often a refusal of the same kind is logged at most (a flood is one line, not 10,000).
_WARN_EVERY = 10.0
#: How long a refused connection stays open for its client to read the answer.
_LINGER = 1.0


@dataclass
class _Conn:
    """A connection in the reader's hands: its request not all in yet, or refused and
    waiting for the client to read the answer (``refused``)."""

    sock: socket.socket
    address: Any
    deadline: float
    data: bytearray = field(default_factory=bytearray)
    refused: tuple[int, str] | None = None


#: A whole request: its socket, the client's address, and its bytes.
_Request = tuple[socket.socket, Any, bytes]


class _Handler(WSGIRequestHandler):
    """One request, already read whole by the server: parsed from memory, answered on the
    socket. Requests go to the library's log (debug), not to stderr line by line."""

    def __init__(
        self, sock: socket.socket, address: Any, server: DashboardServer, data: bytes = b""
    ) -> None:
        self._data = data
        super().__init__(sock, address, server)

    def setup(self) -> None:
        super().setup()
        self.rfile.close()
        self.rfile = io.BytesIO(self._data)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)


class DashboardServer(WSGIServer):
    """A WSGI server with bounded threads, connections and request read time."""

    allow_reuse_address = True

    def __init__(
        self,
        address: tuple[str, int],
        app: Dashboard,
        *,
        threads: int,
        max_connections: int,
        timeout: float,
        backlog: int,
    ) -> None:
        self.request_queue_size = backlog  # read by the listen() of the constructor
        super().__init__(address, _Handler)
        self.set_app(app)
        self.threads = threads
        self.max_connections = max_connections
        self.request_timeout = timeout
        self._lock = threading.Lock()
        self._open = 0  # connections taken in: reading, waiting for a thread, answered
        self._refusing = 0  # connections answered 503 whose client has not read it yet
        self._started = False
        self._stopping = threading.Event()
        self._incoming: queue.SimpleQueue[_Conn] = queue.SimpleQueue()
        self._work: queue.SimpleQueue[_Request | None] = queue.SimpleQueue()
        self._waker, self._wake = socket.socketpair()
        self._warned: dict[str, float] = {}
        self._pool: list[threading.Thread] = []

    @property
    def open_connections(self) -> int:
        """Connections taken in and not yet closed (reading, waiting, or being answered)."""
        with self._lock:
            return self._open

    def serve_forever(self, poll_interval: float = 0.5) -> None:
        """Accept connections until ``shutdown()``, the reader and the pool running."""
        self._start()
        super().serve_forever(poll_interval)

    def _start(self) -> None:
        with self._lock:
            if self._started:
                return
            self._started = True
        reader = threading.Thread(target=self._read_all, name="sqlitejobq-web-reader", daemon=True)
        self._pool = [reader] + [
            threading.Thread(target=self._answer_all, name=f"sqlitejobq-web-{i}", daemon=True)
            for i in range(self.threads)
        ]
        for thread in self._pool:
            thread.start()

    def process_request(self, request: Any, client_address: Any) -> None:
        """Hand a new connection to the reader: to be read, or, when too many are open, to
        be answered 503 (closed at once when even those are too many)."""
        self._start()
        refused = None
        with self._lock:
            if self._open < self.max_connections:
                self._open += 1
            elif self._refusing < self.max_connections:
                self._refusing += 1
                refused = (503, "too many connections, try again in a moment")
            else:
                request.close()
                return
        if refused is not None:
            self._warn(
                "full", "refusing connections: %d open (max_connections)", self.max_connections
            )
        request.setblocking(False)
        deadline = time.monotonic() + (_LINGER if refused else self.request_timeout)
        self._incoming.put(_Conn(request, client_address, deadline, refused=refused))
        with contextlib.suppress(OSError):
            self._wake.send(b"\0")

    def server_close(self) -> None:
        """Close the listening socket, the connections still open, and stop the threads."""
        super().server_close()
        self._stopping.set()
        with contextlib.suppress(OSError):
            self._wake.send(b"\0")
        for _ in range(self.threads):
            self._work.put(None)
        for thread in self._pool:
            thread.join(5)
        while not self._work.empty():  # whole requests no thread took up
            item = self._work.get()
            if item is not None:
                _close(item[0])
        self._wake.close()
        self._waker.close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """An unexpected failure answering a request goes to the log, not to stderr."""
        log.exception("dashboard server: error answering %s", client_address)

    # --- the reader: every connection until its request is in ----------------------------

    def _read_all(self) -> None:
        selector = selectors.DefaultSelector()
        selector.register(self._waker, selectors.EVENT_READ)
        # each in order of deadline (its order of arrival): the first is the next to expire
        reading: dict[socket.socket, _Conn] = {}
        refused: dict[socket.socket, _Conn] = {}
        try:
            while not self._stopping.is_set():
                firsts = [next(iter(d.values())).deadline for d in (reading, refused) if d]
                wait = min([1.0, *(max(0.0, f - time.monotonic()) for f in firsts)])
                for key, _ in selector.select(wait):
                    if key.fileobj is self._waker:
                        self._waker.recv(4096)
                        while not self._incoming.empty():
                            new = self._incoming.get()
                            selector.register(new.sock, selectors.EVENT_READ)
                            if new.refused is None:
                                reading[new.sock] = new
                            else:
                                refused[new.sock] = new
                                _answer(new.sock, *new.refused)
                        continue
                    sock: socket.socket = key.fileobj  # type: ignore[assignment]
                    if sock in refused:
                        if not _drain(sock):
                            self._drop(selector, refused.pop(sock))
                        continue
                    conn = reading[sock]
                    whole = self._receive(conn)
                    if whole is None:
                        continue
                    del reading[sock]
                    if whole:
                        selector.unregister(sock)
                        sock.setblocking(True)
                        sock.settimeout(self.request_timeout)  # bounds sending the answer
                        self._work.put((sock, conn.address, bytes(conn.data)))
                    elif conn.refused is not None:  # answered: the client reads it, then goes
                        self._release()
                        with self._lock:
                            self._refusing += 1
                        conn.deadline = time.monotonic() + _LINGER
                        refused[sock] = conn
                    else:
                        self._drop(selector, conn, released=True)
                now = time.monotonic()
                for pending in (reading, refused):
                    while pending:
                        first = next(iter(pending.values()))
                        if first.deadline > now:
                            break
                        del pending[first.sock]
                        if pending is refused:
                            self._drop(selector, first)
                            continue
                        self._warn(
                            "slow",
                            "closed a connection from %s: its request took "
                            "longer than %g s (timeout)",
                            first.address[0],
                            self.request_timeout,
                        )
                        _answer(first.sock, 408, "the request took too long")
                        self._release()
                        with self._lock:
                            self._refusing += 1
                        first.deadline = now + _LINGER
                        refused[first.sock] = first
        finally:
            for conn in [*reading.values(), *refused.values()]:
                _close(conn.sock)
            selector.close()

    def _drop(
        self, selector: selectors.BaseSelector, conn: _Conn, *, released: bool = False
    ) -> None:
        """Close a connection of the reader's; count it out of the open or refused ones."""
        selector.unregister(conn.sock)
        _close(conn.sock)
        if released:
            self._release()
        else:
            with self._lock:
                self._refusing -= 1

    def _receive(self, conn: _Conn) -> bool | None:
        """Read what arrived: True when the request is whole, False when the connection
        is done with (the client went, or the request is refused: ``conn.refused`` then,
        already answered), None while more is to come."""
        try:
            chunk = conn.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return None
        except OSError:
            return False
        if not chunk:  # the client went away
            return False
        conn.data += chunk
        verdict = _incomplete(conn.data)
        if verdict is None:
            return True
        if verdict[0]:
            conn.refused = verdict
            _answer(conn.sock, *verdict)
            return False
        return None

    # --- the pool: answers ---------------------------------------------------------------

    def _answer_all(self) -> None:
        while (item := self._work.get()) is not None:
            sock, address, data = item
            try:
                _Handler(sock, address, self, data)
            except Exception:
                self.handle_error(sock, address)
            finally:
                self.shutdown_request(sock)
                self._release()

    def _release(self) -> None:
        with self._lock:
            self._open -= 1

    def _warn(self, kind: str, message: str, *args: Any) -> None:
        now = time.monotonic()
        if now - self._warned.get(kind, -_WARN_EVERY) >= _WARN_EVERY:
            self._warned[kind] = now
            log.warning("dashboard server: " + message, *args)


class _V6Server(DashboardServer):
    address_family = socket.AF_INET6


def _incomplete(data: bytearray) -> tuple[int, str] | None:
    """None when ``data`` holds a whole request; else (0, "") while more is to come, or
    the status and reason that refuse it."""
    end, gap = data.find(b"\r\n\r\n"), 4
    bare = data.find(b"\n\n")
    if bare >= 0 and (end < 0 or bare < end):
        end, gap = bare, 2
    if end < 0:
        return (431, "request headers too large") if len(data) > MAX_HEAD else (0, "")
    if end > MAX_HEAD:
        return 431, "request headers too large"
    head = bytes(data[:end])
    if _CHUNKED.search(head):
        return 411, "a chunked request body is not supported: send Content-Length"
    lengths = {m[1].strip() for m in _CONTENT_LENGTH.finditer(head)}
    if len(lengths) > 1 or any(not value.isdigit() for value in lengths):
        return 400, "bad Content-Length"
    length = int(lengths.pop()) if lengths else 0
    if length > MAX_BODY:
        return 413, "request body too large"
    return None if len(data) >= end + gap + length else (0, "")


def _answer(sock: socket.socket, status: int, reason: str) -> None:
    """Send a refusal without waiting on the client, and say nothing more."""
    phrases = {
        400: "Bad Request",
        408: "Request Timeout",
        411: "Length Required",
        413: "Content Too Large",
        431: "Request Header Fields Too Large",
        503: "Service Unavailable",
    }
    body = reason.encode() + b"\n"
    extra = "Retry-After: 1\r\n" if status == 503 else ""
    answer = (
        f"HTTP/1.0 {status} {phrases[status]}\r\n"
        f"Content-Type: text/plain; charset=utf-8\r\nContent-Length: {len(body)}\r\n"
        f"Connection: close\r\n{extra}\r\n"
    ).encode()
    with contextlib.suppress(OSError):
        sock.send(answer + body)
        sock.shutdown(socket.SHUT_WR)


def _drain(sock: socket.socket) -> bool:
    """Read and drop what a refused client still sends: closed with unread data, the
    socket would reset the connection and the client could lose the answer. False once
    the client has gone."""
    try:
        return bool(sock.recv(65536))
    except (BlockingIOError, InterruptedError):
        return True
    except OSError:
        return False


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()


def check_bind(host: str, app: Dashboard) -> None:
    """Refuse to serve beyond this machine without credentials."""
    if not is_loopback(host) and app.auth is None:
        raise InvalidArgument(
            f"refusing to serve the dashboard on {host} without authentication: set "
            f"$SQLITEJOBQ_WEB_PASSWORD or $SQLITEJOBQ_WEB_TOKEN, or pass --auth-file, "
            f"or bind 127.0.0.1"
        )


def make(
    app: Dashboard,
    host: str = "127.0.0.1",
    port: int = 8080,
    *,
    threads: int = 8,
    max_connections: int = 512,
    timeout: float = 10.0,
    backlog: int = 128,
) -> DashboardServer:
    """A server for the dashboard, bound (port 0: any free port) but not started.

    ``threads`` answer requests; ``max_connections`` may be open at once (more are refused
    with 503); ``timeout`` seconds bound the reading of a request (headers and body) and
    the sending of its answer; ``backlog`` connections wait in the kernel to be accepted.
    """
    check_bind(host, app)
    for name, value, least in (
        ("threads", threads, 1),
        ("max_connections", max_connections, 1),
        ("backlog", backlog, 1),
    ):
        if not isinstance(value, int) or value < least:
            raise InvalidArgument(f"{name} must be a whole number >= {least}, got {value!r}")
    if not timeout > 0:
        raise InvalidArgument(f"timeout must be > 0 seconds, got {timeout!r}")
    server_class = _V6Server if ":" in host else DashboardServer
    return server_class(
        (host.strip("[]"), port),
        app,
        threads=threads,
        max_connections=max_connections,
        timeout=float(timeout),
        backlog=backlog,
    )
