from __future__ import annotations

from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models

#: The largest limit a report takes: its task runs in seconds, not minutes.
MAX_LIMIT = 5_000_000


class Report(models.Model):
    """The primes below ``limit``: asked for by a POST, counted by the ``build_report``
    task in a worker, which writes its findings back here."""

    class Status(models.TextChoices):
        PENDING = "pending"
        RUNNING = "running"
        DONE = "done"

    name = models.CharField(max_length=100)
    limit = models.PositiveIntegerField(
        validators=[MinValueValidator(2), MaxValueValidator(MAX_LIMIT)]
    )
    status = models.CharField(max_length=10, choices=Status, default=Status.PENDING)
    #: The id of the task's result (``build_report.get_result(task_id)``): its job's id.
    task_id = models.CharField(max_length=64, blank=True)
    prime_count = models.PositiveIntegerField(null=True, blank=True)
    largest_prime = models.PositiveIntegerField(null=True, blank=True)
    summary = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.name} (primes below {self.limit})"
