"""The task a worker (``manage.py sqlitejobq_worker``) runs for each report."""

from __future__ import annotations

from math import isqrt
from typing import Any

from django.utils import timezone

try:
    from django.tasks import task  # Django 6
except ImportError:
    from django_tasks import task  # the backport, on Django 4.2 to 5.2

from sqlitejobq.django import current_job

from .models import Report

#: How many slices of the numbers a report counts, one progress step each.
STEPS = 4


@task
def build_report(report_id: int) -> dict[str, Any]:
    """Count the primes below the report's limit, a slice at a time with its progress, then
    write the count back on the report. Run again (a retry, a worker lost mid-run), it counts
    again and writes the same values."""
    report = Report.objects.get(pk=report_id)
    report.status = Report.Status.RUNNING
    report.save(update_fields=["status"])
    job = current_job()  # None under another backend: the task runs there too
    count, largest = 0, None
    for step in range(1, STEPS + 1):
        start, end = report.limit * (step - 1) // STEPS, report.limit * step // STEPS
        primes = primes_between(start, end)
        count += len(primes)
        largest = primes[-1] if primes else largest
        if job is not None:
            job.set_progress(step / STEPS, f"{count:,} primes below {end:,}")
    report.prime_count = count
    report.largest_prime = largest
    report.summary = (
        f"{count:,} primes below {report.limit:,}, the largest {largest:,}"
        if largest is not None
        else f"no primes below {report.limit:,}"
    )
    report.status = Report.Status.DONE
    report.finished_at = timezone.now()
    report.save()
    return {"report": report.pk, "primes": count, "largest": largest}


def primes_between(start: int, end: int) -> list[int]:
    """The primes p with start <= p < end: the segment sieved by every factor up to √end."""
    start = max(start, 2)
    if end <= start:
        return []
    sieve = bytearray([1]) * (end - start)
    for factor in range(2, isqrt(end - 1) + 1):
        first = max(factor * factor, -(-start // factor) * factor)
        sieve[first - start :: factor] = bytes(len(range(first, end, factor)))
    return [start + offset for offset, is_prime in enumerate(sieve) if is_prime]
