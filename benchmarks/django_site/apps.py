"""The bench site's app: its table, and a probe that logs every "database is locked" a
Django query raises, including those a library catches and never logs."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from django.apps import AppConfig
from django.db import OperationalError
from django.db.backends.signals import connection_created

log = logging.getLogger("benchmarks.django_site")

#: The start of every line the probe logs (so that it is counted apart from the libraries').
PROBE_MARK = "[lock probe]"


class NotableRecords(logging.Filter):
    """Keep warnings and errors, and any line about a busy or locked database; drop the
    routine ones (a task started, a job completed), which every task would print."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.WARNING:
            return True
        text = str(record.msg).lower()
        return "lock" in text or "busy" in text


def lock_probe(
    execute: Callable[..., Any], sql: str, params: Any, many: bool, context: dict[str, Any]
) -> Any:
    """A Django execute wrapper: log a "database is locked" error, then raise it as it was."""
    try:
        return execute(sql, params, many, context)
    except OperationalError as exc:
        if "locked" in str(exc):
            log.warning("%s %s on %.60s", PROBE_MARK, exc, sql)
        raise


def _install_probe(sender: Any, connection: Any, **kwargs: Any) -> None:
    if lock_probe not in connection.execute_wrappers:
        connection.execute_wrappers.append(lock_probe)


class BenchSiteConfig(AppConfig):
    name = "benchmarks.django_site"
    label = "bench_site"
    verbose_name = "Django benchmark site"

    def ready(self) -> None:
        connection_created.connect(_install_probe, dispatch_uid="bench_site_lock_probe")
