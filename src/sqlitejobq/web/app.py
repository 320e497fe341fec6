"""The dashboard as one application object that speaks WSGI and ASGI.

``dashboard(queue)`` returns it. A WSGI server calls it with ``(environ, start_response)``;
an ASGI server (or ``app.mount("/jobs", dashboard(queue))`` in Starlette or FastAPI) calls it
with ``(scope, receive, send)`` and the request runs in a thread, as the queue's reads do.
Nothing beyond the standard library.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import re
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http import HTTPStatus
from http.cookies import CookieError, SimpleCookie
from importlib import resources
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from ..aqueue import AsyncQueue
from ..errors import InvalidArgument, JobNotFound, SqliteJobQError
from ..queue import Queue
from . import pages
from .auth import Auth
from .html import h, query
from .html import redact as mask_fields
from .metrics import health, prometheus

log = logging.getLogger("sqlitejobq.web")

#: Field names masked in payloads and results unless ``redact=`` says otherwise.
DEFAULT_REDACT = frozenset({
    "password", "passwd", "secret", "token", "api_key", "apikey", "access_token",
    "refresh_token", "authorization", "cookie", "private_key", "client_secret",
})  # fmt: skip
CSRF_COOKIE = "sqlitejobq_csrf"
_CHALLENGE = 'Basic realm="sqlitejobq", charset="UTF-8"'
MAX_BODY = 64 * 1024
_CSRF_SHAPE = re.compile(r"^[A-Za-z0-9_-]{32,64}$")
_SECURITY_HEADERS = [
    ("Content-Security-Policy",
     "default-src 'none'; script-src 'self'; style-src 'self'; style-src-attr 'unsafe-inline'; "
     "img-src 'self' data:; connect-src 'self'; form-action 'self'; base-uri 'none'; "
     "frame-ancestors 'none'"),
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "same-origin"),
    ("Cross-Origin-Opener-Policy", "same-origin"),
    ("Cross-Origin-Resource-Policy", "same-origin"),
    ("Permissions-Policy", "camera=(), microphone=(), geolocation=()"),
    ("Cache-Control", "no-store"),
]  # fmt: skip
_STATIC = {"dashboard.css": "text/css; charset=utf-8",
           "dashboard.js": "text/javascript; charset=utf-8"}  # fmt: skip
_DONE = {"retried": "Retried.", "cancelled": "Cancelled (a running job stops at its next "
         "heartbeat or progress report).", "purged": "Purged.", "not-retried": "Nothing to retry: "
         "the job is not failed or cancelled.", "not-cancelled": "Nothing to cancel: the job "
         "has already finished."}  # fmt: skip


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
    machine); ``redact``: field names masked in payloads and results (default: common
    secret names such as password and token), or a function applied to each payload and
    result; ``show_payloads=False`` shows neither. ``refresh``: seconds between live
    updates (0: none). ``max_queued_age``: the backlog age past which ``/healthz`` fails.
    """

    def __init__(
        self,
        queue: Queue | AsyncQueue | str | os.PathLike[str],
        *,
        read_only: bool = False,
        auth: Auth | None = None,
        redact: Iterable[str] | Callable[[Any], Any] | None = None,
        show_payloads: bool = True,
        refresh: float = 2.0,
        max_queued_age: float = 300.0,
        title: str = "sqlitejobq",
    ) -> None:
        if isinstance(queue, AsyncQueue):
            queue = queue.queue
        self._owned = not isinstance(queue, Queue)
        self.queue: Queue = queue if isinstance(queue, Queue) else Queue(queue)
        if auth is not None and not isinstance(auth, Auth):
            raise InvalidArgument(f"auth must be an Auth, got {type(auth).__name__}")
        self.auth = auth
        redactor: Callable[[Any], Any]
        if callable(redact):
            redactor = redact
        elif isinstance(redact, str):
            raise InvalidArgument("redact must be a list of field names, not one string")
        else:
            keys = DEFAULT_REDACT if redact is None else frozenset(str(k).lower() for k in redact)
            redactor = functools.partial(mask_fields, keys=keys)
        if refresh < 0:
            raise InvalidArgument(f"refresh must be >= 0 seconds, got {refresh}")
        if max_queued_age <= 0:
            raise InvalidArgument(f"max_queued_age must be > 0 seconds, got {max_queued_age}")
        self.settings = pages.Settings(
            read_only=bool(read_only), show_payloads=bool(show_payloads), redactor=redactor,
            refresh=float(refresh), max_queued_age=float(max_queued_age), title=title,
        )  # fmt: skip
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
        await send({"type": "http.response.start", "status": response.status,
                    "headers": [(k.lower().encode("latin-1"), v.encode("latin-1"))
                                for k, v in _headers(response)]})  # fmt: skip
        await send({"type": "http.response.body", "body": response.body})

    # --- one request ----------------------------------------------------------------------

    def handle(self, request: Request | None) -> Response:
        """Answer one request (None: a body too large)."""
        if request is None:
            return Response(413, b"request body too large\n", "text/plain; charset=utf-8")
        if request.path == "/healthz" and request.method in ("GET", "HEAD"):
            return self._healthz()
        user = None
        if self.auth is not None:
            user = self.auth.check(request.headers.get("authorization"))
            if user is None:
                return Response(401, b"authentication required\n", "text/plain; charset=utf-8",
                                [("WWW-Authenticate", _CHALLENGE)])  # fmt: skip
        csrf = request.cookies.get(CSRF_COOKIE, "")
        new_cookie = not _CSRF_SHAPE.match(csrf)
        if new_cookie:
            csrf = secrets.token_urlsafe(32)
        view = pages.View(self.queue, self.settings, request.prefix, csrf, self.queue.clock())
        try:
            if request.method == "POST":
                response = self._post(request, view, user)
            elif request.method in ("GET", "HEAD"):
                response = self._get(request, view)
            else:
                response = Response(405, b"method not allowed\n", "text/plain; charset=utf-8",
                                    [("Allow", "GET, HEAD, POST")])  # fmt: skip
        except pages.NotFound as exc:
            response = self._page(view, "Not found", str(exc), 404)
        except (pages.BadRequest, InvalidArgument) as exc:
            response = self._page(view, "Bad request", str(exc), 400)
        except SqliteJobQError as exc:
            log.warning("dashboard: %s %s failed: %s", request.method, request.path, exc)
            response = self._page(view, "The database did not answer", str(exc), 503)
        if new_cookie:
            response.headers.append(("Set-Cookie", _cookie(csrf, request)))
        if request.method == "HEAD":
            response.body = b""
        return response

    def _get(self, request: Request, view: pages.View) -> Response:
        path, params = request.path, request.params
        if path.startswith("/static/") and path[len("/static/") :] in _STATIC:
            name = path[len("/static/") :]
            return Response(200, self._static[name], _STATIC[name])
        if path == "/metrics":
            return Response(200, prometheus(self.queue).encode(),
                            "text/plain; version=0.0.4; charset=utf-8")  # fmt: skip
        notice = _DONE.get(params.get("done", ""), "")
        if notice and params.get("n"):
            notice = f"{notice} ({params['n']} jobs)" if params["n"].isdigit() else notice
        html = self._render(path, params, view)
        if html is None:
            return self._page(view, "Not found", f"no page {path}", 404)
        if notice:
            html = html.replace("<main>", f'<main><div class="notice">{h(notice)}</div>', 1)
        return Response(200, html.encode())

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
        if not (token and _CSRF_SHAPE.match(token) and secrets.compare_digest(
                token, request.cookies.get(CSRF_COOKIE, ""))):  # fmt: skip
            log.warning("dashboard: refused %s from %s: no valid CSRF token",
                        request.path, request.remote)  # fmt: skip
            return self._page(view, "Refused", "the form's CSRF token is missing or wrong: "
                              "reload the page and try again", 403)  # fmt: skip
        if not _same_origin(request):
            log.warning("dashboard: refused %s from %s: cross-origin request (Origin %s)",
                        request.path, request.remote, request.headers.get("origin"))  # fmt: skip
            return self._page(view, "Refused", "cross-origin request", 403)
        action = _action(request.path)
        if action is None:
            return self._page(view, "Not found", f"no action {request.path}", 404)
        name, job_id = action
        question = {
            "retry": f"Retry job {job_id}?", "cancel": f"Cancel job {job_id}?",
            "retry-failed": "Retry every failed job that matches the filter?",
            "purge": "Delete the jobs that finished before the cutoff?",
        }[name]  # fmt: skip
        if form.get("confirm") != "yes":
            return Response(200, pages.confirm(view, request.path, question, form).encode())
        who = f"{user or 'anonymous'} from {request.remote}"
        if name in ("retry", "cancel"):
            assert job_id is not None
            try:
                done = (self.queue.retry if name == "retry" else self.queue.cancel)(job_id)
            except JobNotFound:
                raise pages.NotFound(f"no job with id {job_id}") from None
            outcome = {"retry": "retried", "cancel": "cancelled"}[name]
            log.info("dashboard: %s job %d by %s: %s", name, job_id, who,
                     outcome if done else "nothing to do")  # fmt: skip
            code = outcome if done else f"not-{outcome}"
            return _redirect(view.prefix + f"/jobs/{job_id}?done={code}")
        if name == "retry-failed":
            filters = pages.job_filters({**form, "status": "failed"})
            filters.pop("status")
            ids = self.queue.retry_failed(**filters)
            log.info("dashboard: retry all failed matching %s by %s: %d jobs retried",
                     {k: v for k, v in filters.items() if v is not None}, who,
                     len(ids))  # fmt: skip
            back = {k: form.get(k) for k in ("queue", "task", "batch", "error")}
            return _redirect(view.prefix + "/jobs" + query(
                {**back, "status": "failed", "done": "retried", "n": len(ids)}))  # fmt: skip
        days = form.get("older_than_days", "")
        try:
            older = float(days)
        except ValueError:
            raise pages.BadRequest(f"older_than_days must be a number, got {days!r}") from None
        if not 0 <= older <= 36500:
            raise pages.BadRequest(f"older_than_days must be between 0 and 36500, got {days}")
        purged = self.queue.purge(older * 86400)
        log.info("dashboard: purge jobs finished more than %g days ago by %s: %d deleted",
                 older, who, purged)  # fmt: skip
        return _redirect(view.prefix + f"/?done=purged&n={purged}")

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
    return [("Content-Type", response.content_type),
            ("Content-Length", str(len(response.body))),
            *_SECURITY_HEADERS, *response.headers]  # fmt: skip


def _redirect(location: str) -> Response:
    return Response(303, b"", "text/plain; charset=utf-8", [("Location", location or "/")])


def _cookie(value: str, request: Request) -> str:
    secure = "; Secure" if request.secure else ""
    return (f"{CSRF_COOKIE}={value}; Path={request.prefix or '/'}; HttpOnly; "
            f"SameSite=Strict{secure}")  # fmt: skip


def _action(path: str) -> tuple[str, int | None] | None:
    if m := re.fullmatch(r"/jobs/(\d{1,18})/(retry|cancel)", path):
        return m[2], int(m[1])
    if path == "/actions/retry-failed":
        return "retry-failed", None
    if path == "/actions/purge":
        return "purge", None
    return None


def _same_origin(request: Request) -> bool:
    """A browser names the page a POST came from; it must be this dashboard's host."""
    origin = request.headers.get("origin") or request.headers.get("referer")
    if not origin or origin == "null":
        return origin is None
    return urlsplit(origin).netloc.lower() == request.headers.get("host", "").lower()


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
    headers = {k[5:].replace("_", "-").lower(): v for k, v in environ.items()
               if k.startswith("HTTP_")}  # fmt: skip
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
        method=method, path=_path(environ.get("PATH_INFO", "")),
        prefix=environ.get("SCRIPT_NAME", "").rstrip("/"),
        params=dict(parse_qsl(environ.get("QUERY_STRING", ""), keep_blank_values=False)),
        form=_form(body, environ.get("CONTENT_TYPE", "")),
        cookies=_cookies(headers.get("cookie", "")), headers=headers,
        remote=environ.get("REMOTE_ADDR", "?"), secure=environ.get("wsgi.url_scheme") == "https",
    )  # fmt: skip


def _asgi_request(scope: dict[str, Any], body: bytes, too_big: bool) -> Request | None:
    if too_big:
        return None
    headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
    root = scope.get("root_path", "").rstrip("/")
    path = scope.get("path", "")
    if root and path.startswith(root):  # Starlette keeps the full path in a mounted scope
        path = path[len(root) :]
    client = scope.get("client") or ("?", 0)
    return Request(
        method=scope["method"].upper(), path=_path(path), prefix=root,
        params=dict(parse_qsl(scope.get("query_string", b"").decode("latin-1"))),
        form=_form(body, headers.get("content-type", "")),
        cookies=_cookies(headers.get("cookie", "")), headers=headers,
        remote=str(client[0]), secure=scope.get("scheme") == "https",
    )  # fmt: skip


def _path(path: str) -> str:
    return path.rstrip("/") or "/"
