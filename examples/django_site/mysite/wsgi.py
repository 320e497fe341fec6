"""The WSGI application, for a server such as gunicorn: ``gunicorn mysite.wsgi`` run from
``examples/django_site``."""

from __future__ import annotations

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mysite.settings")

application = get_wsgi_application()
