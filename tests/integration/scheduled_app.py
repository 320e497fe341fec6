"""A queue whose clock runs fast, for worker processes that run a schedule (``--app`` target).

Every process computes the same clock from the environment: $SQLITEJOBQ_TEST_T0 (real epoch
seconds when the test began), $SQLITEJOBQ_TEST_START (the simulated time then) and
$SQLITEJOBQ_TEST_FACTOR (simulated seconds per real second).
"""

from __future__ import annotations

import os
import time

from sqlitejobq import Job, Queue, Registry

registry = Registry()
_T0 = float(os.environ.get("SQLITEJOBQ_TEST_T0", time.time()))
_START = float(os.environ.get("SQLITEJOBQ_TEST_START", time.time()))
_FACTOR = float(os.environ.get("SQLITEJOBQ_TEST_FACTOR", "1"))


def clock() -> float:
    """The simulated time: still at the start until the test's real start, then fast."""
    return _START + max(0.0, time.time() - _T0) * _FACTOR


@registry.task("minute", schedule=60.0)
def minute(job: Job) -> str:
    """Created once per simulated minute, whatever the number of workers."""
    return str(job.payload["slot"])


queue = (
    Queue(os.environ.get("SQLITEJOBQ_DB", ""), registry=registry, clock=clock)
    if (os.environ.get("SQLITEJOBQ_DB"))
    else None
)
