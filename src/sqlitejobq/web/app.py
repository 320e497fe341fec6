"""The dashboard as one application object that speaks WSGI and ASGI.

``dashboard(queue)`` returns it. A WSGI server calls it with ``(environ, start_response)``;
an ASGI server (or ``app.mount("/jobs", dashboard(queue))`` in Starlette or FastAPI) calls it
with ``(scope, receive, send)`` and the request runs in a thread, as the queue's reads do.
Nothing beyond the standard library.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http import HTTPStatus
from http.cookies import CookieError, SimpleCookie
from importlib import resources
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from .. import validation
from ..aqueue import AsyncQueue
from ..errors import InvalidArgument, JobNotFound, SqliteJobQError
from ..queue import Queue
from . import pages
from .auth import Auth, is_loopback, printable
from .html import h, query
from .metrics import health, prometheus
from .redact import Redaction

log = logging.getLogger("sqlitejobq.web")

CSRF_COOKIE = "sqlitejobq_csrf"
#: What the last action did, shown once by the next page: set only by the dashboard's own
#: answer to a POST, so a link cannot make a page claim an action that never happened.
NOTICE_COOKIE = "sqlitejobq_notice"
_CHALLENGE = 'Basic realm="sqlitejobq", charset="UTF-8"'
MAX_BODY = 64 * 1024
_CSRF_SHAPE = re.compile(r"^[A-Za-z0-9_-]{32,64}$")
_SECURITY_HEADERS = [
    (
        "Content-Security-Policy",
        "default-src 'none'; script-src 'self'; style-src 'self'; style-src-attr 'unsafe-inline'; "
        "img-src 'self' data:; connect-src 'self'; form-action 'self'; base-uri 'none'; "
        "frame-ancestors 'none'",
    ),
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "same-origin"),
    ("Cross-Origin-Opener-Policy", "same-origin"),
    ("Cross-Origin-Resource-Policy", "same-origin"),
    ("Permissions-Policy", "camera=(), microphone=(), geolocation=()"),
    ("Cache-Control", "no-store"),
]
_STATIC = {
    "dashboard.css": "text/css; charset=utf-8",
    "dashboard.js": "text/javascript; charset=utf-8",
}
_DONE = {
    "retried": "Retried.",
    "not-retried": "Nothing to retry: the job is not failed or cancelled.",
    "cancelled": "Cancelled.",
    "cancel-requested": "Cancel requested: the job is running. An async handler is "
    "interrupted at its worker's next heartbeat; a plain handler runs on until it checks "
    "job.cancelled or returns. Either way the job ends cancelled.",
    "not-cancelled": "Nothing to cancel: the job has already finished.",
    "retried-failed": "Retried {n} failed jobs.",
    "purged": "Purged {n} finished jobs.",
    "paused": "Paused: no worker claims the queue's jobs until it is resumed; running jobs "
    "finish, and it still takes enqueues.",
    "not-paused": "Nothing to pause: the queue was paused already.",
    "resumed": "Resumed: workers claim the queue's jobs again.",
    "not-resumed": "Nothing to resume: the queue was not paused.",
}
_NOTICE_SHAPE = re.compile(r"^([a-z-]{1,30})(?:\.(\d{1,12}))?$")
_HOST_SHAPE = re.compile(r"^(\[[0-9a-f:.]+\]|[a-z0-9-]+(?:\.[a-z0-9-]+)*)\.?(?::\d{1,5})?$")
_ALLOWED_HOST = re.compile(r"^(\[[0-9a-f:.]+\]|[a-z0-9-]+(?:\.[a-z0-9-]+)*)\.?$")
_ORIGIN_PORTS = {"http": 80, "https": 443}


@dataclass
class Response:
    """What the dashboard answers, before the protocol writes it."""

    status: int
    body: bytes
    content_type: str = "text/html; charset=utf-8"
    headers: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class Request:
    """One request, the same from WSGI and ASGI."""

    method: str
    path: str
    prefix: str
    params: dict[str, str]
    form: dict[str, str]
    cookies: dict[str, str]
    headers: dict[str, str]
    remote: str
    secure: bool


class Dashboard:
    """The web dashboard of a queue, as a WSGI and ASGI application.

    ``queue``: a ``Queue``, an ``AsyncQueue``, or a target to open. ``read_only`` hides
    every action; ``auth`` asks for credentials (``Auth``; needed to serve beyond this
    machine). ``redact``: more secret words masked in field names (added to
    ``DEFAULT_REDACT`` unless ``redact_defaults=False``), or a function applied after them
    to each payload and result; ``show_payloads=False`` hides payloads, results, progress
    messages and error text. ``allowed_hosts``: names the ``Host`` header may carry beside
    the loopback ones (checked whenever it is given, and always without ``auth``);
    ``trusted_origins``: ``scheme://host[:port]`` origins a POST may come from beside the
    dashboard's own host (behind a proxy that rewrites ``Host``). ``refresh``: seconds
    between live updates (0: none). ``max_queued_age``: the backlog age past which
    ``/healthz`` fails.
    """

    def __init__(
        self,
        queue: Queue | AsyncQueue | str | os.PathLike[str],
        *,
        read_only: bool = False,
        auth: Auth | None = None,
        redact: Iterable[str] | Callable[[Any], Any] | None = None,
        redact_defaults: bool = True,
        show_payloads: bool = True,
        allowed_hosts: Iterable[str] | None = None,
        trusted_origins: Iterable[str] | None = None,
        refresh: float = 2.0,
        max_queued_age: float = 300.0,
        title: str = "sqlitejobq",
    ) -> None:
        if auth is not None and not isinstance(auth, Auth):
            raise InvalidArgument(f"auth must be an Auth, got {type(auth).__name__}")
        self.auth = auth
        redaction = Redaction.of(redact, defaults=bool(redact_defaults), hide=not show_payloads)
        #: Names the Host header may carry beside loopback ones; None: any, when ``auth``
        #: is set (a rebound name cannot supply the credentials).
        self.allowed_hosts: frozenset[str] | None = (
            _each(allowed_hosts, "allowed_hosts", allowed_host)
            if allowed_hosts is not None or auth is None
            else None
        )
        self.trusted_origins = _each(trusted_origins, "trusted_origins", trusted_origin)
        if refresh < 0:
            raise InvalidArgument(f"refresh must be >= 0 seconds, got {refresh}")
        if max_queued_age <= 0:
            raise InvalidArgument(f"max_queued_age must be > 0 seconds, got {max_queued_age}")
        if isinstance(queue, AsyncQueue):
            queue = queue.queue
        self._owned = not isinstance(queue, Queue)  # opened last: bad options leave nothing open
        self.queue: Queue = queue if isinstance(queue, Queue) else Queue(queue)
        self.settings = pages.Settings(
            read_only=bool(read_only),
            redaction=redaction,
            refresh=float(refresh),
            max_queued_age=float(max_queued_age),
            title=title,
        )
        self._static = {
            name: resources.files(__package__).joinpath("static", name).read_bytes()
            for name in _STATIC
        }

    def close(self) -> None:
        """Close the queue if the dashboard opened it."""
        if self._owned:
            self.queue.close()

    # --- the two protocols ----------------------------------------------------------------

    def __call__(self, *args: Any) -> Any:
        """WSGI ``(environ, start_response)`` or ASGI ``(scope, receive, send)``."""
        if len(args) == 3:
            return self._asgi(*args)
        environ, start_response = args
        response = self.handle(_wsgi_request(environ))
        start_response(
            f"{response.status} {HTTPStatus(response.status).phrase}", _headers(response)
        )
        return [response.body]

    async def _asgi(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        body, too_big = b"", False
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            too_big = too_big or len(body) > MAX_BODY
            if too_big:
                body = b""
            if not message.get("more_body"):
                break
        request = _asgi_request(scope, body, too_big)
        response = await asyncio.to_thread(self.handle, request)
        headers = [
            (k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in _headers(response)
        ]
        await send({"type": "http.response.start", "status": response.status, "headers": headers})
        await send({"type": "http.response.body", "body": response.body})

    # --- one request ----------------------------------------------------------------------

    def handle(self, request: Request | None) -> Response:
        """Answer one request (None: a body too large)."""
        if request is None:
            return _text(413, "request body too large")
        if request.path == "/healthz" and request.method in ("GET", "HEAD"):
            return self._healthz()  # for probes: no credentials, no job, no error text
        refused = self._refusal(request)
        if refused is not None:
            return refused
        user = None
        if self.auth is not None:
            user = self.auth.check(request.headers.get("authorization"))
            if user is None:
                return _text(401, "authentication required", [("WWW-Authenticate", _CHALLENGE)])
        csrf = request.cookies.get(CSRF_COOKIE, "")
        new_cookie = not _CSRF_SHAPE.match(csrf)
        if new_cookie:
            csrf = secrets.token_urlsafe(32)
        view = pages.View(self.queue, self.settings, request.prefix, csrf, time.time())
        try:
            # on PostgreSQL the clock is the server's: a read that fails like the others
            view = pages.View(self.queue, self.settings, request.prefix, csrf, self.queue.clock())
            if request.method == "POST":
                response = self._post(request, view, user)
            elif request.method in ("GET", "HEAD"):
                response = self._get(request, view)
            else:
                response = _text(405, "method not allowed", [("Allow", "GET, HEAD, POST")])
        except pages.NotFound as exc:
            response = self._page(view, "Not found", str(exc), 404)
        except (pages.BadRequest, InvalidArgument) as exc:
            response = self._page(view, "Bad request", str(exc), 400)
        except SqliteJobQError as exc:
            log.warning("dashboard: %s %s failed: %s", request.method, printable(request.path), exc)
            response = self._page(
                view, "The database did not answer", self.settings.redaction.text(str(exc)), 503
            )
        if new_cookie:
            response.headers.append(("Set-Cookie", _cookie(CSRF_COOKIE, csrf, request)))
        if request.method == "HEAD":
            response.body = b""
        return response

    def _refusal(self, request: Request) -> Response | None:
        """The answer to a request this dashboard must not serve, or None.

        Without credentials, only this machine may use it, under a name that is its own: a
        page on another site whose name was rebound to 127.0.0.1 (DNS rebinding) sends its
        own name as ``Host``, and a dashboard mounted in an app bound to every address sees
        other hosts as its clients."""
        if self.allowed_hosts is not None:
            given = request.headers.get("host", "")
            name = _host_name(given)
            if name is None or not (is_loopback(name) or name in self.allowed_hosts):
                log.warning(
                    "dashboard: refused %s from %s: Host %r is not one of its names",
                    printable(request.path),
                    printable(request.remote),
                    given,
                )
                return _text(
                    400,
                    f"refused: the Host header {given!r} is not a name of this "
                    f"dashboard: it answers to localhost, 127.0.0.1 and [::1] (any "
                    f"port) and the names of allowed_hosts= (--allowed-host)",
                )
        if self.auth is None and not _local(request.remote):
            log.warning(
                "dashboard: refused %s from %s: no credentials are configured",
                printable(request.path),
                printable(request.remote),
            )
            return _text(
                403,
                f"refused: this dashboard has no credentials configured, so it "
                f"answers this machine only, not {request.remote}: give it auth= "
                f"(or $SQLITEJOBQ_WEB_PASSWORD / $SQLITEJOBQ_WEB_TOKEN)",
            )
        return None

    def _get(self, request: Request, view: pages.View) -> Response:
        path, params = request.path, request.params
        if path.startswith("/static/") and path[len("/static/") :] in _STATIC:
            name = path[len("/static/") :]
            return Response(200, self._static[name], _STATIC[name])
        if path == "/metrics":
            return Response(
                200, prometheus(self.queue).encode(), "text/plain; version=0.0.4; charset=utf-8"
            )
        html = self._render(path, params, view)
        if html is None:
            return self._page(view, "Not found", f"no page {path}", 404)
        response = Response(200, b"")
        notice = _notice(request.cookies.get(NOTICE_COOKIE, ""))
        if NOTICE_COOKIE in request.cookies:  # shown once
            response.headers.append(("Set-Cookie", _cookie(NOTICE_COOKIE, "", request, 0)))
        if notice:
            html = html.replace("<main>", f'<main><div class="notice">{h(notice)}</div>', 1)
        response.body = html.encode()
        return response

    def _render(self, path: str, params: dict[str, str], view: pages.View) -> str | None:
        if path in ("", "/"):
            return pages.overview(view)
        if path == "/jobs":
            return pages.jobs(view, params)
        if path == "/batches":
            return pages.batches(view, params)
        if path == "/workers":
            return pages.workers(view)
        if path == "/schedules":
            return pages.schedules(view)
        if m := re.fullmatch(r"/jobs/(\d{1,18})", path):
            return pages.job(view, int(m[1]))
        if m := re.fullmatch(r"/batches/(\d{1,18})", path):
            return pages.batch(view, int(m[1]), params)
        return None

    def _post(self, request: Request, view: pages.View, user: str | None) -> Response:
        if self.settings.read_only:
            return self._page(view, "Read-only", "this dashboard is read-only", 403)
        form = request.form
        token = form.get("csrf", "")
        if not (
            token
            and _CSRF_SHAPE.match(token)
            and secrets.compare_digest(token, request.cookies.get(CSRF_COOKIE, ""))
        ):
            log.warning(
                "dashboard: refused %s from %s: no valid CSRF token",
                printable(request.path),
                printable(request.remote),
            )
            return self._page(
                view,
                "Refused",
                "the form's CSRF token is missing or wrong: reload the page and try again",
                403,
            )
        if not _same_origin(request, self.trusted_origins):
            log.warning(
                "dashboard: refused %s from %s: cross-origin request (Origin %r)",
                printable(request.path),
                printable(request.remote),
                request.headers.get("origin"),
            )
            return self._page(view, "Refused", "cross-origin request", 403)
        action = _action(request.path)
        if action is None:
            return self._page(view, "Not found", f"no action {request.path}", 404)
        name, job_id = action
        queue_name = ""
        if name in ("pause", "resume"):
            queue_name = validation.name(form.get("queue", ""), "queue")
        question = {
            "retry": f"Retry job {job_id}?",
            "cancel": f"Cancel job {job_id}?",
            "retry-failed": "Retry every failed job that matches the filter?",
            "purge": "Delete the jobs that finished before the cutoff?",
            "pause": pages.queue_question("pause", queue_name),
            "resume": pages.queue_question("resume", queue_name),
        }[name]
        if form.get("confirm") != "yes":
            return Response(200, pages.confirm(view, request.path, question, form).encode())
        who = f"{printable(user or 'anonymous')} from {printable(request.remote)}"
        if name in ("retry", "cancel"):
            assert job_id is not None
            try:
                done = (self.queue.retry if name == "retry" else self.queue.cancel)(job_id)
            except JobNotFound:
                raise pages.NotFound(f"no job with id {job_id}") from None
            outcome = {"retry": "retried", "cancel": "cancelled"}[name]
            if done and name == "cancel" and self.queue.get(job_id).status.value == "processing":
                outcome = "cancel-requested"
            log.info(
                "dashboard: %s job %d by %s: %s",
                name,
                job_id,
                who,
                outcome if done else "nothing to do",
            )
            code = outcome if done else f"not-{outcome}"
            return _redirect(view.prefix + f"/jobs/{job_id}", code, request)
        if name in ("pause", "resume"):
            done = (self.queue.pause if name == "pause" else self.queue.resume)(queue_name)
            outcome = {"pause": "paused", "resume": "resumed"}[name]
            log.info(
                "dashboard: %s queue %r by %s: %s",
                name,
                queue_name,
                who,
                outcome if done else "nothing to do",
            )
            return _redirect(view.prefix + "/", outcome if done else f"not-{outcome}", request)
        if name == "retry-failed":
            filters = pages.job_filters({**form, "status": "failed"}, hides=view.hides)
            filters.pop("status")
            ids = self.queue.retry_failed(**filters)
            log.info(
                "dashboard: retry all failed matching %s by %s: %d jobs retried",
                {k: v for k, v in filters.items() if v is not None},
                who,
                len(ids),
            )
            back = {k: form.get(k) for k in ("queue", "task", "batch", "error")}
            return _redirect(
                view.prefix + "/jobs" + query({**back, "status": "failed"}),
                f"retried-failed.{len(ids)}",
                request,
            )
        days = form.get("older_than_days", "")
        try:
            older = float(days)
        except ValueError:
            raise pages.BadRequest(f"older_than_days must be a number, got {days!r}") from None
        if not 0 <= older <= 36500:
            raise pages.BadRequest(f"older_than_days must be between 0 and 36500, got {days}")
        purged = self.queue.purge(older * 86400)
        log.info(
            "dashboard: purge jobs finished more than %g days ago by %s: %d deleted",
            older,
            who,
            purged,
        )
        return _redirect(view.prefix + "/", f"purged.{purged}", request)

    def _healthz(self) -> Response:
        verdict = health(self.queue, self.settings.max_queued_age)
        body = json.dumps(verdict.as_dict(), indent=1).encode() + b"\n"
        return Response(200 if verdict.ok else 503, body, "application/json")

    def _page(self, view: pages.View, title: str, text: str, status: int) -> Response:
        return Response(status, pages.message(view, title, text, status=status).encode())


#: ``dashboard(queue, ...)``: the web dashboard of a queue (a ``Dashboard``).
dashboard = Dashboard


# --- requests and responses ---------------------------------------------------------------


def _headers(response: Response) -> list[tuple[str, str]]:
    return [
        ("Content-Type", response.content_type),
        ("Content-Length", str(len(response.body))),
        *_SECURITY_HEADERS,
        *response.headers,
    ]


def _text(status: int, text: str, headers: list[tuple[str, str]] | None = None) -> Response:
    return Response(status, text.encode() + b"\n", "text/plain; charset=utf-8", headers or [])


def _redirect(location: str, notice: str, request: Request) -> Response:
    """See ``location``, where the next page says what was done (``notice``)."""
    cookie = _cookie(NOTICE_COOKIE, notice, request, 60)
    headers = [("Location", location or "/"), ("Set-Cookie", cookie)]
    return Response(303, b"", "text/plain; charset=utf-8", headers)


def _cookie(name: str, value: str, request: Request, max_age: int | None = None) -> str:
    secure = "; Secure" if request.secure else ""
    age = "" if max_age is None else f"; Max-Age={max_age}"
    return f"{name}={value}; Path={request.prefix or '/'}; HttpOnly; SameSite=Strict{age}{secure}"


def _notice(value: str) -> str:
    """The text of a notice cookie the dashboard set ('' for anything else)."""
    match = _NOTICE_SHAPE.match(value)
    if match is None or match[1] not in _DONE:
        return ""
    return _DONE[match[1]].format(n=f"{int(match[2] or 0):,}")


def _action(path: str) -> tuple[str, int | None] | None:
    if m := re.fullmatch(r"/jobs/(\d{1,18})/(retry|cancel)", path):
        return m[2], int(m[1])
    if path == "/actions/retry-failed":
        return "retry-failed", None
    if path == "/actions/purge":
        return "purge", None
    if path in ("/actions/pause", "/actions/resume"):
        return path[len("/actions/") :], None
    return None


def _same_origin(request: Request, trusted: frozenset[str]) -> bool:
    """A browser names the page a POST came from: this dashboard's host, or an origin the
    operator trusts (the public name when a proxy rewrites ``Host``)."""
    origin = request.headers.get("origin") or request.headers.get("referer")
    if not origin or origin == "null":
        return origin is None
    if _origin(origin) in trusted:
        return True
    return urlsplit(origin).netloc.lower() == request.headers.get("host", "").lower()


def _origin(url: str) -> str | None:
    """``scheme://host[:port]`` of a URL, lower case, the scheme's default port left out."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in _ORIGIN_PORTS or not parts.hostname:
        return None
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    shown = "" if port in (None, _ORIGIN_PORTS[parts.scheme]) else f":{port}"
    return f"{parts.scheme}://{host}{shown}"


def trusted_origin(value: object) -> str:
    """A trusted origin checked and written as browsers send it (``https://host[:port]``,
    the default port left out); InvalidArgument names a value that is not one."""
    origin = _origin(value) if isinstance(value, str) else None
    parts = urlsplit(value.strip()) if origin is not None and isinstance(value, str) else None
    if (
        origin is None
        or parts is None
        or parts.path not in ("", "/")
        or parts.query
        or parts.fragment
        or parts.username
        or parts.password
    ):
        raise InvalidArgument(
            f"a trusted origin must look like https://jobs.example.com "
            f"(scheme, host and port only), got {value!r}"
        )
    return origin


def _each(
    values: Iterable[str] | None, name: str, check: Callable[[object], str]
) -> frozenset[str]:
    """The values of a list option (``trusted_origins``, ``allowed_hosts``), each checked;
    one string where a list belongs is refused (it would be read letter by letter)."""
    if values is None:
        return frozenset()
    if isinstance(values, str):
        raise InvalidArgument(f"{name} must be a list, not one string: write {name}=[{values!r}]")
    return frozenset(check(value) for value in values)


def _host_name(value: str) -> str | None:
    """The name of a ``Host`` header, lower case, without port or final dot; None when it
    is not a host name, an IPv4 address or a bracketed IPv6 one."""
    match = _HOST_SHAPE.match(value.strip().lower())
    return None if match is None else match[1]


def allowed_host(value: object) -> str:
    """An allowed host checked and written as it is compared (lower case, no final dot);
    InvalidArgument names a value that is not a host name or address without a port."""
    match = _ALLOWED_HOST.match(value.strip().lower()) if isinstance(value, str) else None
    if match is None:
        raise InvalidArgument(
            f"an allowed host must be a host name such as jobs.example.com (no scheme, port "
            f"or path; an IPv6 address in brackets), got {value!r}"
        )
    return match[1]


def _local(remote: str) -> bool:
    """True for a client on this machine: a loopback address, or none (a Unix socket)."""
    return not remote or is_loopback(remote)


def _cookies(header: str) -> dict[str, str]:
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(header)
    except CookieError:
        return {}
    return {k: m.value for k, m in jar.items()}


def _form(body: bytes, content_type: str) -> dict[str, str]:
    if not body or not content_type.startswith("application/x-www-form-urlencoded"):
        return {}
    return dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))


def _wsgi_request(environ: dict[str, Any]) -> Request | None:
    headers = {
        k[5:].replace("_", "-").lower(): v for k, v in environ.items() if k.startswith("HTTP_")
    }
    method = environ.get("REQUEST_METHOD", "GET").upper()
    body = b""
    if method == "POST":
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        if length > MAX_BODY:
            return None
        body = environ["wsgi.input"].read(length) if length > 0 else b""
    return Request(
        method=method,
        path=_path(environ.get("PATH_INFO", "")),
        prefix=environ.get("SCRIPT_NAME", "").rstrip("/"),
        params=dict(parse_qsl(environ.get("QUERY_STRING", ""), keep_blank_values=False)),
        form=_form(body, environ.get("CONTENT_TYPE", "")),
        cookies=_cookies(headers.get("cookie", "")),
        headers=headers,
        remote=environ.get("REMOTE_ADDR") or "",
        secure=environ.get("wsgi.url_scheme") == "https",
    )


def _asgi_request(scope: dict[str, Any], body: bytes, too_big: bool) -> Request | None:
    if too_big:
        return None
    headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
    root = scope.get("root_path", "").rstrip("/")
    path = scope.get("path", "")
    if root and path.startswith(root):  # Starlette keeps the full path in a mounted scope
        path = path[len(root) :]
    client = scope.get("client") or ("", 0)
    return Request(
        method=scope["method"].upper(),
        path=_path(path),
        prefix=root,
        params=dict(parse_qsl(scope.get("query_string", b"").decode("latin-1"))),
        form=_form(body, headers.get("content-type", "")),
        cookies=_cookies(headers.get("cookie", "")),
        headers=headers,
        remote=str(client[0]),
        secure=scope.get("scheme") == "https",
    )


def _path(path: str) -> str:
    return path.rstrip("/") or "/"
