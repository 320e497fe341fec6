"""Django settings of the Django benchmark's processes: the tasks backend from
$SQLITEJOBQ_BENCH_BACKEND (``sqlitejobq`` or ``django-tasks-db``), the SQLite file from
$SQLITEJOBQ_BENCH_DB, the database options docs/django.md recommends for both (tuned
further with $SQLITEJOBQ_BENCH_TUNED=1)."""

from __future__ import annotations

import os
from importlib.util import find_spec

BACKEND_ENV = "SQLITEJOBQ_BENCH_BACKEND"
DB_ENV = "SQLITEJOBQ_BENCH_DB"
#: ``1``: Django's connections persist (``CONN_MAX_AGE`` None, where Django's default 0
#: closes them at each ``close_old_connections()``) and commit at synchronous=NORMAL, as
#: sqlitejobq's own connections do (SQLite's default is FULL).
TUNED_ENV = "SQLITEJOBQ_BENCH_TUNED"
#: The file the tasks note their runs in (``BENCH_RUNS_FILE``).
RUNS_ENV = "SQLITEJOBQ_BENCH_RUNS"

#: What docs/django.md recommends for a SQLite file shared by the site and its workers.
DATABASE_OPTIONS = {
    "init_command": "PRAGMA journal_mode=WAL",
    "transaction_mode": "IMMEDIATE",
    "timeout": 20,
}

#: The TASKS "default" entry of each backend the benchmark compares.
TASK_BACKENDS = {
    "sqlitejobq": {
        "BACKEND": "sqlitejobq.django.TasksBackend",
        "QUEUES": ["default"],
        "OPTIONS": {"database": "default"},
    },
    "django-tasks-db": {
        "BACKEND": "django_tasks_db.DatabaseBackend",
        "QUEUES": ["default"],
    },
}
#: The app each backend's docs ask for, besides the backport and this site.
BACKEND_APPS = {"sqlitejobq": "sqlitejobq.django", "django-tasks-db": "django_tasks_db"}

BENCH_BACKEND = os.environ.get(BACKEND_ENV, "sqlitejobq")
if BENCH_BACKEND not in TASK_BACKENDS:
    raise ValueError(
        f"${BACKEND_ENV} must be one of {sorted(TASK_BACKENDS)}, got {BENCH_BACKEND!r}"
    )
BENCH_RUNS_FILE = os.environ.get(RUNS_ENV, "")

SECRET_KEY = "sqlitejobq-bench"
DEBUG = False
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
INSTALLED_APPS = [
    *(["django_tasks"] if find_spec("django_tasks") else []),  # the backport (Django < 6)
    BACKEND_APPS[BENCH_BACKEND],
    "benchmarks.django_site",
]

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get(DB_ENV, ""),
        "OPTIONS": dict(DATABASE_OPTIONS),
    }
}
if os.environ.get(TUNED_ENV) == "1":
    DATABASES["default"]["CONN_MAX_AGE"] = None
    DATABASES["default"]["OPTIONS"]["init_command"] += "; PRAGMA synchronous=NORMAL"
TASKS = {"default": TASK_BACKENDS[BENCH_BACKEND]}

# Where each library reports lock trouble, to stderr. django-tasks-db: its own logger at
# DEBUG (db_worker sets it to INFO) and the Tasks framework's at INFO (as db_worker sets it,
# here for both backends), its per-task lines dropped by ``apps.NotableRecords`` so that the
# drains do not measure a terminal. sqlitejobq: WARNING, where its lock errors would show;
# below that it builds three records per job (which cost its drain about 40 %), and its busy
# retries are counted exactly in its workers table instead of its DEBUG lines.
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"notable": {"()": "benchmarks.django_site.apps.NotableRecords"}},
    "formatters": {"plain": {"format": "%(levelname)s %(name)s %(process)d %(message)s"}},
    "handlers": {
        "stderr": {
            "class": "logging.StreamHandler",
            "stream": "ext://sys.stderr",
            "filters": ["notable"],
            "formatter": "plain",
        }
    },
    "loggers": {
        name: {"handlers": ["stderr"], "level": level, "propagate": False}
        for name, level in [
            ("sqlitejobq", "WARNING"),
            ("django_tasks_db", "DEBUG"),
            ("django_tasks", "INFO"),
            ("django.tasks", "INFO"),
            ("benchmarks.django_site", "WARNING"),
        ]
    },
}
