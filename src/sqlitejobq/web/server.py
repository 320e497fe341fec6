"""The dashboard on the standard library's threaded WSGI server (``sqlitejobq web``)."""

from __future__ import annotations

import logging
import socket
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from ..errors import InvalidArgument
from .app import Dashboard
from .auth import is_loopback

log = logging.getLogger("sqlitejobq.web")


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True


class _V6Server(_Server):
    address_family = socket.AF_INET6


class _QuietHandler(WSGIRequestHandler):
    """Requests go to the library's log (debug), not to stderr line by line."""

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)


def check_bind(host: str, app: Dashboard) -> None:
    """Refuse to serve beyond this machine without credentials."""
    if not is_loopback(host) and app.auth is None:
        raise InvalidArgument(
            f"refusing to serve the dashboard on {host} without authentication: set "
            f"$SQLITEJOBQ_WEB_PASSWORD or $SQLITEJOBQ_WEB_TOKEN, or pass --auth-file, "
            f"or bind 127.0.0.1"
        )


def make(app: Dashboard, host: str = "127.0.0.1", port: int = 8080) -> WSGIServer:
    """A threaded server for the dashboard, bound (port 0: any free port) but not started."""
    check_bind(host, app)
    server_class = _V6Server if ":" in host else _Server
    return make_server(host.strip("[]"), port, app, server_class=server_class,
                       handler_class=_QuietHandler)  # fmt: skip
