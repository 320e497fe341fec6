"""The ratios to raw sqlite3 (``python -m benchmarks.versus_raw``) run here at a small size:
every job of both systems is counted (a lost or repeated job is an error, not a figure)."""

from pathlib import Path

import pytest

from benchmarks.versus_raw import TARGETS, report, run

pytestmark = pytest.mark.timeout(300)


def test_single_enqueue_and_drain_are_measured_against_raw_in_one_run(tmp_path: Path) -> None:
    rates = run(jobs=200, repeats=1, base=tmp_path)
    assert set(rates) == set(TARGETS)
    for by_system in rates.values():
        assert all(len(figures) == 1 and figures[0] > 0 for figures in by_system.values())
    lines = report(rates)
    assert len(lines) == len(TARGETS)
    print("\n".join(lines))
