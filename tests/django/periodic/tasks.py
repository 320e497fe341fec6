"""A task the worker enqueues itself every second."""

from __future__ import annotations

from sqlitejobq.django import task


@task(schedule=1)
def tick() -> str:
    return "tick"
