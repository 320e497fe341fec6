"""The sqlitejobq dashboard inside a Django site, behind Django's own authentication:
``path("jobs/", include("sqlitejobq.django.urls"))``."""

from __future__ import annotations

import io
import logging
import secrets
import threading
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import ImproperlyConfigured, PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.http.request import RawPostDataException
from django.views.decorators.csrf import csrf_exempt

from ..queue import Queue
from ..web.app import Dashboard
from ..web.auth import Auth, printable
from .backend import tasks_backend

log = logging.getLogger("sqlitejobq.django")

#: Proves to the dashboard that Django let the request through: it is put in the request
#: after Django's checks, in place of any ``Authorization`` header the client sent, and
#: never leaves this process.
_TOKEN = secrets.token_urlsafe(32)
_AUTH = Auth(token=_TOKEN)
#: Headers the response takes from Django instead (it counts the body itself).
_SKIPPED = frozenset({"content-length", "set-cookie"})
_dashboards: dict[tuple[str, bool], Dashboard] = {}
_dashboards_lock = threading.Lock()


def can_view(user: Any) -> bool:
    """Who sees the dashboard: active staff."""
    return bool(user.is_active and user.is_staff)


def can_act(user: Any, permission: str | None) -> bool:
    """Who may retry, cancel and purge: an active superuser, or a user with ``permission``
    (a Django permission such as ``"myapp.manage_jobs"``) when one is named."""
    if not user.is_active:
        return False
    return bool(user.is_superuser or (permission and user.has_perm(permission)))


def backend_queue(alias: str) -> Queue:
    """The queue of the ``TasksBackend`` at TASKS alias ``alias``."""
    try:
        return tasks_backend(alias).queue
    except ImproperlyConfigured as exc:
        raise ImproperlyConfigured(f"the sqlitejobq dashboard: {exc}") from exc


def _dashboard(alias: str, read_only: bool) -> Dashboard:
    """The dashboard of the backend's queue, read-only or not (one of each per queue)."""
    queue = backend_queue(alias)
    with _dashboards_lock:
        found = _dashboards.get((alias, read_only))
        if found is None or found.queue is not queue:
            found = Dashboard(queue, read_only=read_only, auth=_AUTH)
            _dashboards[(alias, read_only)] = found
        return found


def dashboard_view(
    request: HttpRequest,
    subpath: str = "",
    backend: str = "default",
    act_permission: str | None = None,
) -> HttpResponse:
    """The dashboard of TASKS alias ``backend``'s queue at ``subpath`` of its mount point:
    login redirect for an anonymous visitor, 403 for a user who is not active staff,
    read-only for staff who may not act (``can_act``)."""
    user = request.user
    if not user.is_authenticated:
        return redirect_to_login(request.get_full_path())
    if not can_view(user):
        raise PermissionDenied("the job dashboard is for staff")
    acts = can_act(user, act_permission)
    app = _dashboard(backend, read_only=not acts)
    full = request.path
    prefix = full[: len(full) - len(subpath)] if subpath else full
    try:
        body = request.body
    except RawPostDataException:  # a middleware read the form first: the same form again
        body = urlencode(list(request.POST.lists()), doseq=True).encode()
    environ: dict[str, Any] = {
        **request.META,
        "SCRIPT_NAME": prefix.rstrip("/"),
        "PATH_INFO": "/" + subpath.lstrip("/"),
        "HTTP_HOST": request.get_host(),  # checked by Django against ALLOWED_HOSTS
        "HTTP_AUTHORIZATION": f"Bearer {_TOKEN}",
        "CONTENT_LENGTH": str(len(body)),
        "wsgi.input": io.BytesIO(body),
        "wsgi.url_scheme": request.scheme,
    }
    if request.method == "POST":
        log.info(
            "dashboard: %s %s by Django user %s",
            request.method,
            printable(request.path),
            printable(user.get_username()),
        )
    started: list[Any] = []

    def start_response(status: str, headers: list[tuple[str, str]], *_: Any) -> None:
        started[:] = [status, headers]

    chunks = app(environ, start_response)
    status, headers = started
    code, _, reason = status.partition(" ")
    response = HttpResponse(b"".join(chunks), status=int(code), reason=reason or None)
    for name, value in headers:
        if name.lower() == "set-cookie":
            response.cookies.load(value)
        elif name.lower() not in _SKIPPED:
            response[name] = value
    return response


#: The view ``sqlitejobq.django.urls`` routes to. Exempt from Django's CSRF check: the
#: dashboard checks every POST itself (its own token, in a cookie and in the form, and the
#: request's Origin), and its forms carry no Django token.
dashboard: Callable[..., HttpResponse] = csrf_exempt(dashboard_view)
