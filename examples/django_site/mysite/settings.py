"""Settings of the example site: Django's tasks run by sqlitejobq, the jobs kept in the
site's own database (a SQLite file, or PostgreSQL when ``$DJANGO_SITE_DATABASE_URL`` names
one), so that a task is enqueued in the transaction that writes the rows it works on.

- ``DJANGO_SITE_DATABASE_URL``: ``postgresql://user:password@host:port/name``; unset, SQLite.
- ``DJANGO_SITE_SQLITE_PATH``: the SQLite file (default ``db.sqlite3`` beside manage.py).
- ``DJANGO_SITE_SECRET_KEY``: the secret key (default a development key: set it anywhere
  else).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = os.environ.get("DJANGO_SITE_SECRET_KEY", "django-insecure-example-site-only")
DEBUG = True  # an example on a laptop: never so in production
ALLOWED_HOSTS = ["localhost", "127.0.0.1"]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "sqlitejobq.django",  # the sqlitejobq_worker command
    "reports",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "mysite.urls"
WSGI_APPLICATION = "mysite.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]


def postgres_database(url: str) -> dict[str, Any]:
    """DATABASES' entry for a ``postgresql://user:password@host:port/name`` URL."""
    parts = urlsplit(url)
    if parts.scheme not in ("postgres", "postgresql"):
        raise ImproperlyConfigured(
            f"DJANGO_SITE_DATABASE_URL must be a postgresql:// URL, got scheme {parts.scheme!r}"
        )
    name = unquote(parts.path.lstrip("/"))
    if not name or parts.query:
        raise ImproperlyConfigured(
            "DJANGO_SITE_DATABASE_URL must name a database and nothing else "
            "(postgresql://user:password@host:port/name)"
        )
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": name,
        "USER": unquote(parts.username or ""),
        "PASSWORD": unquote(parts.password or ""),
        "HOST": parts.hostname or "",
        "PORT": str(parts.port or ""),
    }


def sqlite_database(path: str | Path) -> dict[str, Any]:
    """DATABASES' entry for a SQLite file that the web process and the workers share: WAL,
    so readers never wait; IMMEDIATE, so a transaction takes the write lock when it begins
    (not halfway, where it could only fail); and 20 s to wait for that lock."""
    return {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": path,
        "OPTIONS": {
            "init_command": "PRAGMA journal_mode=WAL",
            "transaction_mode": "IMMEDIATE",
            "timeout": 20,
        },
    }


_DATABASE_URL = os.environ.get("DJANGO_SITE_DATABASE_URL")
DATABASES = {
    "default": postgres_database(_DATABASE_URL)
    if _DATABASE_URL
    else sqlite_database(os.environ.get("DJANGO_SITE_SQLITE_PATH") or BASE_DIR / "db.sqlite3")
}

# Django's tasks are sqlitejobq jobs in the "default" database: an enqueue inside
# transaction.atomic() commits or rolls back with it
TASKS = {
    "default": {
        "BACKEND": "sqlitejobq.django.TasksBackend",
        "QUEUES": ["default"],
        "OPTIONS": {"database": "default"},
    }
}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_REDIRECT_URL = "/jobs/"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"sqlitejobq": {"handlers": ["console"], "level": "INFO"}},
}
