"""``/metrics`` in Prometheus' text format and ``/healthz``, from reads that cost a few rows."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from ..job import JobStatus, WorkerInfo
from ..queue import WORKER_ALIVE_WINDOW, Queue

log = logging.getLogger("sqlitejobq.web")

_WORKERS_SHOWN = 200


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class _Text:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def metric(
        self, name: str, kind: str, help_text: str, samples: list[tuple[dict[str, str], float]]
    ) -> None:
        self.lines.append(f"# HELP {name} {help_text}")
        self.lines.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            inner = ",".join(f'{k}="{_label(v)}"' for k, v in labels.items())
            shown = repr(float(value)) if isinstance(value, float) else str(value)
            self.lines.append(f"{name}{{{inner}}} {shown}" if inner else f"{name} {shown}")

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def worker_state(w: WorkerInfo, now: float) -> str:
    """alive (reported within a minute), stopped (said so), or dead (went silent)."""
    if w.stopped_at is not None:
        return "stopped"
    return "alive" if now - w.last_seen <= WORKER_ALIVE_WINDOW else "dead"


def prometheus(queue: Queue) -> str:
    """Counts by queue and status, backlog age, throughput, lock waits and worker liveness."""
    stats = queue.stats()
    now = queue.clock()
    out = _Text()
    out.metric("sqlitejobq_up", "gauge", "1 when the database answered.", [({}, 1)])
    out.metric(
        "sqlitejobq_jobs",
        "gauge",
        "Jobs by queue and status.",
        [
            ({"queue": q, "status": s.value}, by.get(s.value, 0))
            for q, by in sorted(stats.counts.items())
            for s in JobStatus
        ],
    )
    out.metric(
        "sqlitejobq_queue_paused",
        "gauge",
        "1 for each paused queue: no worker claims its jobs until it is resumed.",
        [({"queue": name}, 1) for name in stats.paused],
    )
    age = stats.oldest_queued_age
    out.metric(
        "sqlitejobq_oldest_queued_age_seconds",
        "gauge",
        "How long the oldest due queued job has waited, paused queues left out (0 when none "
        "waits).",
        [({}, float(age or 0.0))],
    )
    points = queue.throughput(5)
    last = points[-2] if len(points) >= 2 else None  # the last whole minute
    out.metric(
        "sqlitejobq_jobs_finished_last_minute",
        "gauge",
        "Jobs finished in the last whole minute, as reported by the workers.",
        [
            ({"outcome": "completed"}, last.completed if last else 0),
            ({"outcome": "failed"}, last.failed if last else 0),
        ],
    )
    out.metric(
        "sqlitejobq_jobs_finished_last_5_minutes",
        "gauge",
        "Jobs finished in the last five minutes, as reported by the workers.",
        [
            ({"outcome": "completed"}, sum(p.completed for p in points)),
            ({"outcome": "failed"}, sum(p.failed for p in points)),
        ],
    )
    workers = queue.workers(limit=_WORKERS_SHOWN)
    states = {"alive": 0, "dead": 0, "stopped": 0}
    for w in workers:
        states[worker_state(w, now)] += 1
    out.metric(
        "sqlitejobq_workers",
        "gauge",
        "Workers by state (alive, dead, stopped).",
        [({"state": k}, v) for k, v in states.items()],
    )
    running = [w for w in workers if worker_state(w, now) != "stopped"]
    per_worker: list[tuple[str, str, str, Any]] = [
        (
            "sqlitejobq_worker_jobs_completed_total",
            "counter",
            "Jobs a worker completed.",
            lambda w: w.jobs_completed,
        ),
        (
            "sqlitejobq_worker_jobs_failed_total",
            "counter",
            "Failed attempts of a worker.",
            lambda w: w.jobs_failed,
        ),
        (
            "sqlitejobq_worker_lock_wait_seconds_total",
            "counter",
            "Seconds a worker waited for the write lock.",
            lambda w: float(w.lock_wait_seconds),
        ),
        (
            "sqlitejobq_worker_busy_retries_total",
            "counter",
            "Writes a worker retried because the database was busy.",
            lambda w: w.lock_retries,
        ),
        (
            "sqlitejobq_worker_busy_errors_total",
            "counter",
            "Writes a worker gave up on after the retry bound.",
            lambda w: w.busy_errors,
        ),
        (
            "sqlitejobq_worker_last_seen_age_seconds",
            "gauge",
            "Seconds since a worker last reported.",
            lambda w: float(max(0.0, now - w.last_seen)),
        ),
    ]
    for name, kind, help_text, get in per_worker:
        out.metric(
            name, kind, help_text, [({"worker": w.id, "host": w.hostname}, get(w)) for w in running]
        )
    lock = stats.workers_lock
    out.metric(
        "sqlitejobq_lock_wait_seconds_total",
        "counter",
        "Seconds every worker on record waited for the write lock.",
        [({}, float(lock.lock_wait_seconds))],
    )
    out.metric(
        "sqlitejobq_busy_retries_total",
        "counter",
        "Writes retried because the database was busy, over every worker on record.",
        [({}, lock.lock_retries)],
    )
    out.metric(
        "sqlitejobq_busy_errors_total",
        "counter",
        "Writes given up after the retry bound, over every worker on record.",
        [({}, lock.busy_errors)],
    )
    return out.text()


@dataclass(frozen=True)
class Health:
    """The verdict of ``/healthz`` and the checks behind it."""

    ok: bool
    checks: dict[str, dict[str, Any]]

    def as_dict(self) -> dict[str, Any]:
        """The verdict as ``/healthz`` writes it."""
        return {"status": "ok" if self.ok else "fail", "checks": self.checks}


def health(queue: Queue, max_queued_age: float) -> Health:
    """The database answers; a worker is alive when jobs wait; no due job waited too long.
    The queued jobs of a paused queue are not waiting for a worker: they count in neither
    check (``jobs_paused`` says how many there are).

    A failure to read says only "database unavailable": ``/healthz`` needs no credentials,
    and an error's text names hosts, paths and users; the text goes to the log."""
    try:
        stats = queue.stats()
        workers = queue.workers(limit=_WORKERS_SHOWN)
        now = queue.clock()
    except Exception as exc:  # any failure to read is the verdict itself
        log.warning("healthz: the database did not answer: %s", exc)
        return Health(False, {"database": {"ok": False, "reason": "database unavailable"}})
    alive = sum(1 for w in workers if worker_state(w, now) == "alive")
    paused = sum(stats.counts.get(name, {}).get(JobStatus.QUEUED.value, 0) for name in stats.paused)
    waiting = stats.total(JobStatus.QUEUED) - paused + stats.total(JobStatus.PROCESSING)
    age = stats.oldest_queued_age or 0.0
    checks: dict[str, dict[str, Any]] = {
        "database": {"ok": True},
        "workers": {"ok": alive > 0 or waiting == 0, "alive": alive, "jobs_waiting": waiting},
        "backlog": {
            "ok": age <= max_queued_age,
            "oldest_queued_age": round(age, 3),
            "max_queued_age": max_queued_age,
            "paused_queues": len(stats.paused),
            "jobs_paused": paused,
        },
    }
    return Health(all(c["ok"] for c in checks.values()), checks)
