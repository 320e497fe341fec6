"""The bench site's table: the row a view writes beside the task it enqueues."""

from __future__ import annotations

from django.db import models


class Visit(models.Model):
    label = models.CharField(max_length=40)
