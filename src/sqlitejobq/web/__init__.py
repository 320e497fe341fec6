"""A web dashboard for a queue: see and fix what is in it from a browser.

``dashboard(queue)`` is a WSGI and ASGI application; ``sqlitejobq web --db PATH`` serves it.
"""

from .app import Dashboard, dashboard
from .auth import Auth
from .redact import DEFAULT_REDACT

__all__ = ["DEFAULT_REDACT", "Auth", "Dashboard", "dashboard"]
