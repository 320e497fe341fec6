"""Tasks for the browser tests' worker process: slow steps with progress, and a failure."""

from __future__ import annotations

import time
from typing import Any

from sqlitejobq import Registry

registry = Registry()


@registry.task("step")
def step(job: Any) -> Any:
    for i in range(4):
        time.sleep(job.payload.get("seconds", 0.3) / 4)
        job.set_progress((i + 1) / 4, f"part {i + 1} of 4")
    return {"step": job.payload.get("n")}


@registry.task("boom", max_attempts=2, backoff=0.0)
def boom(job: Any) -> Any:
    raise ValueError(f"bad input on attempt {job.attempts}")
