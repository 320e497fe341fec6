"""The comparison's workloads at a tiny size: every system runs every job exactly once."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import compare, peers  # noqa: E402

JOBS = 40

# sqlitejobq joins the cells as soon as it imports; the peers and raw sqlite3 always run.
CELLS = [
    compare.Cell(adapter, setting)
    for adapter in peers.ADAPTERS
    if adapter.unavailable() is None
    for setting in adapter.settings
]
CASES = [
    pytest.param(cell, workload, id=f"{cell.adapter.__name__}-{cell.setting}-{workload.key}")
    for cell in CELLS
    for workload in compare.WORKLOADS
    if compare.applies(cell, workload)
]


@pytest.mark.timeout(120)
@pytest.mark.parametrize(("cell", "workload"), CASES)
def test_each_workload_runs_every_job_exactly_once(
    cell: compare.Cell, workload: compare.Workload, tmp_path: Path
) -> None:
    outcome = compare.measure(cell, workload, JOBS, tmp_path)

    assert outcome.error is None, f"{cell.name} {workload.key}: {outcome.error}"
    assert outcome.rate is not None
    assert outcome.rate > 0
    assert outcome.durability is not None


class RepeatingRaw(peers.RawAdapter):
    """A drain that runs one job twice, as a broken queue would."""

    def drain(self, threads: int, timeout: float) -> float:
        seconds = super().drain(threads, timeout)
        self.counter.hit(0)
        return seconds


@pytest.mark.timeout(120)
def test_a_drain_that_repeats_a_job_is_an_error_not_a_figure(tmp_path: Path) -> None:
    cell = compare.Cell(RepeatingRaw, "NORMAL")

    outcome = compare.measure(cell, compare.WORKLOADS[2], JOBS, tmp_path)

    assert outcome.rate is None
    assert outcome.error == "1 jobs ran more than once (first: [0])"


@pytest.mark.timeout(120)
def test_the_counter_names_lost_and_repeated_jobs() -> None:
    counter = peers.ExecutionCounter(4)
    for index in (0, 1, 1, 7):
        counter.hit(index)

    assert counter.problem() == (
        "2 of 4 jobs never ran (first: [2, 3]); 1 jobs ran more than once (first: [1]); "
        "1 runs of jobs that were never enqueued ([7])"
    )


@pytest.mark.timeout(120)
def test_the_cli_replaces_only_its_section_and_draws_the_chart(tmp_path: Path) -> None:
    out = tmp_path / "docs" / "benchmarks.md"
    out.parent.mkdir()
    out.write_text(
        f"# Benchmarks\n\nBefore.\n\n{compare.BEGIN_MARKER}\nold\n{compare.END_MARKER}\n\nAfter.\n"
    )

    status = compare.main(["--jobs", "20", "--repeats", "1", "--systems", "raw", "--out", str(out)])

    text = out.read_text()
    assert status == 0
    assert text.startswith("# Benchmarks\n\nBefore.\n\n" + compare.BEGIN_MARKER)
    assert text.endswith(compare.END_MARKER + "\n\nAfter.\n")
    assert "old" not in text
    assert "| raw sqlite3, 1 job per transaction | WAL, FULL |" in text
    assert "](benchmarks-compare.png)" in text
    assert (out.parent / "benchmarks-compare.png").stat().st_size > 0
