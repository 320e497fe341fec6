"""A finished batch in one view: its analyses ranked by score, and the symbols that failed.

Rank 1 is the most bullish stock of the batch: the highest signal score (the sum of the
trend, momentum and mean-reversion rules of ``indicators.score_signal``), ties going to the
higher 1-month return, then to the symbol in alphabetical order. Ranks are 1, 2, 3, ...
with no gaps. A symbol whose job failed or was cancelled has no analysis: it is listed
with its status and error, not ranked.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from sqlitejobq import Job, JobStatus

#: What a ranked entry keeps of its analysis.
RANKED_FIELDS = ("symbol", "score", "signal", "last_close", "return_1m_pct")
#: The longest error kept for a failed symbol (a traceback's last line is enough here).
MAX_ERROR = 500


def summarize(
    batch_id: int, jobs: Sequence[Job], analyses: Mapping[int, Mapping[str, Any]]
) -> dict[str, Any]:
    """The summary of a batch from its jobs and the analyses they stored (by job id)."""
    ranked: list[dict[str, Any]] = []
    failures: list[dict[str, Any]] = []
    for job in jobs:
        analysis = analyses.get(job.id)
        if job.status is JobStatus.COMPLETED and analysis is not None:
            ranked.append({"job_id": job.id, **{k: analysis.get(k) for k in RANKED_FIELDS}})
            continue
        error = job.error if job.status is not JobStatus.COMPLETED else "no stored analysis"
        failures.append({
            "symbol": _symbol_of(job), "job_id": job.id, "status": job.status.value,
            "error": None if error is None else error[:MAX_ERROR],
        })  # fmt: skip
    ranked.sort(key=_rank_key)
    ranking = [{"rank": n, **entry} for n, entry in enumerate(ranked, start=1)]
    return {
        "batch_id": batch_id, "total": len(jobs), "completed": len(ranking),
        "failed": len(failures), "best_symbol": ranking[0]["symbol"] if ranking else None,
        "ranking": ranking, "failures": failures,
    }  # fmt: skip


def _rank_key(entry: Mapping[str, Any]) -> tuple[float, bool, float, str]:
    """Score descending, then 1-month return descending (unknown last), then symbol."""
    month = entry.get("return_1m_pct")
    change = float(month) if isinstance(month, int | float) else math.nan
    known = math.isfinite(change)
    return (-float(entry["score"]), not known, -change if known else 0.0,
            str(entry["symbol"]))  # fmt: skip


def _symbol_of(job: Job) -> str:
    payload = job.payload
    if isinstance(payload, dict) and isinstance(payload.get("symbol"), str):
        return str(payload["symbol"])
    return f"job {job.id}"
