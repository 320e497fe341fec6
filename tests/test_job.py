"""Values: JobStatus, BatchProgress, QueueStats."""

from __future__ import annotations

from sqlitejobq import BatchProgress, JobStatus
from sqlitejobq.job import ALLOWED_TRANSITIONS


def test_job_status_is_a_str_enum_with_the_documented_values() -> None:
    assert [s.value for s in JobStatus] == [
        "queued", "processing", "completed", "failed", "cancelled", "waiting"
    ]  # fmt: skip
    assert JobStatus.QUEUED == "queued" and str(JobStatus.FAILED) == "failed"
    assert JobStatus("completed") is JobStatus.COMPLETED
    assert {s for s in JobStatus if s.finished} == {
        JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED
    }  # fmt: skip


def test_completed_is_a_dead_end_and_every_state_is_reachable() -> None:
    assert ALLOWED_TRANSITIONS[JobStatus.COMPLETED] == frozenset()
    reachable = {JobStatus.QUEUED, JobStatus.WAITING}  # where a job starts
    for _ in range(5):
        reachable |= {t for s in reachable for t in ALLOWED_TRANSITIONS[s]}
    assert reachable == set(JobStatus)


def test_batch_progress_percent_and_text() -> None:
    progress = BatchProgress(7, "b", 40, 25, 3, 10, 1, 1, 0.0)
    assert progress.finished == 12
    assert progress.percent == 30.0
    assert str(progress) == "12/40, 30%"
    assert not progress.done
    finished = BatchProgress(7, None, 3, 0, 0, 3, 0, 0, 0.0)
    assert finished.done and finished.percent == 100.0
