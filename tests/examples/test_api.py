"""The HTTP API against a real uvicorn server on 127.0.0.1, with real HTTP requests."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from examples.stock_analyzer.sample import write_sample
from examples.stock_analyzer.tasks import REFRESH_WATCHLIST, registry
from sqlitejobq import Queue

from .api_server import running_api

SYMBOLS = [f"STOCK{n:02d}.NS" for n in range(40)]
pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    root = tmp_path_factory.mktemp("api")
    folder = root / "prices"
    write_sample(folder, SYMBOLS)
    with running_api(str(root / "api.db"), root / "server.log", "--source", "csv", "--folder",
                     str(folder), "--delay", "0.1", "--workers", "4") as api:  # fmt: skip
        yield api.base, api.log


def test_a_batch_of_40_moves_from_queued_through_processing_to_completed(
    server: tuple[str, Path],
) -> None:
    base, log = server
    started = httpx.post(f"{base}/api/stocks/analyze-all-stocks", json={"symbols": SYMBOLS})
    assert started.status_code == 202
    batch_id, summary_job_id = started.json()["batch_id"], started.json()["summary_job_id"]
    assert started.json()["total"] == 40
    assert started.json()["summary_url"] == f"/api/batches/{batch_id}/summary"
    early = httpx.get(f"{base}/api/batches/{batch_id}/summary")  # 40 jobs of 0.1 s to go
    assert early.status_code == 404
    assert early.json()["detail"] == (
        f"no summary of batch {batch_id} yet: its summary job {summary_job_id} is waiting"
    )
    seen: dict[str, list[str]] = {s: [] for s in SYMBOLS}
    partial = []
    deadline = time.monotonic() + 120
    while True:
        progress = httpx.get(f"{base}/api/all-stocks/progress",
                             params={"batch_id": batch_id}).json()  # fmt: skip
        for entry in progress["symbols"]:
            states = seen[entry["symbol"]]
            if not states or states[-1] != entry["status"]:
                states.append(entry["status"])
        if 0 < progress["finished"] < 40:
            partial.append((progress["finished"], progress["percent"], progress["status"]))
        assert progress["summary_job_id"] == summary_job_id
        if progress["status"] not in ("queued", "processing"):
            break
        assert time.monotonic() < deadline, "the batch did not finish"
        time.sleep(0.02)
    assert progress["status"] == "completed" and progress["completed"] == 40
    assert progress["percent"] == 100.0
    assert partial, "progress was never seen part-way"
    assert all(status == "processing" for _, _, status in partial)
    assert all(states[-1] == "completed" for states in seen.values())
    # states only move forward: queued -> processing -> completed
    order = {"queued": 0, "processing": 1, "completed": 2}
    for states in seen.values():
        assert [order[s] for s in states] == sorted(order[s] for s in states)
    assert any(states == ["queued", "processing", "completed"] for states in seen.values())
    latest = httpx.get(f"{base}/api/all-stocks/progress").json()
    assert latest["batch_id"] == batch_id
    for symbol in SYMBOLS:
        analysis = httpx.get(f"{base}/api/stocks/{symbol}/analysis")
        assert analysis.status_code == 200
        body = analysis.json()
        assert body["symbol"] == symbol and body["batch_id"] == batch_id
        assert body["signal"] in {"strong_buy", "buy", "hold", "sell", "strong_sell"}
    job = httpx.get(f"{base}/api/jobs/{started.json()['job_ids'][0]}").json()
    assert job["status"] == "completed" and job["result"]["symbol"] == SYMBOLS[0]
    summary = wait_for_summary(base, batch_id)
    assert (summary["completed"], summary["failed"], summary["failures"]) == (40, 0, [])
    assert summary["job_id"] == summary_job_id
    ranking = summary["ranking"]
    assert [entry["rank"] for entry in ranking] == list(range(1, 41))
    assert sorted(entry["symbol"] for entry in ranking) == SYMBOLS
    scores = [entry["score"] for entry in ranking]
    assert scores == sorted(scores, reverse=True)
    assert summary["best_symbol"] == ranking[0]["symbol"]
    summary_job = httpx.get(f"{base}/api/jobs/{summary_job_id}").json()
    assert summary_job["status"] == "completed" and summary_job["result"]["ranking"] == ranking
    assert "database is locked" not in log.read_text()


def test_the_dashboard_is_mounted_and_shows_a_batch_as_it_runs(server: tuple[str, Path]) -> None:
    base, _ = server
    started = httpx.post(f"{base}/api/stocks/analyze-all-stocks", json={"symbols": SYMBOLS})
    batch_id = started.json()["batch_id"]
    labels = set()
    deadline = time.monotonic() + 120
    while True:
        page = httpx.get(f"{base}/dashboard/batches/{batch_id}")
        assert page.status_code == 200
        label = re.search(r'class="label">(\d+/40, \d+%)<', page.text)
        assert label, page.text[:500]
        labels.add(label[1])
        if label[1] == "40/40, 100%":
            break
        assert time.monotonic() < deadline, "the batch did not finish"
        time.sleep(0.05)
    assert len(labels) >= 2, labels
    overview = httpx.get(f"{base}/dashboard/")
    assert overview.status_code == 200 and "Stock analyzer jobs" in overview.text
    assert f'href="/dashboard/batches/{batch_id}"' in overview.text
    assert "analyze_stock" in httpx.get(f"{base}/dashboard/jobs").text


def wait_for_summary(base: str, batch_id: int) -> dict[str, Any]:
    """The batch's summary, once its job has stored it."""
    deadline = time.monotonic() + 30
    while True:
        response = httpx.get(f"{base}/api/batches/{batch_id}/summary")
        if response.status_code == 200:
            body: dict[str, Any] = response.json()
            return body
        assert response.status_code == 404, response.text
        assert time.monotonic() < deadline, response.text
        time.sleep(0.05)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"symbols": []}, '"symbols" must not be empty: name 1 to 1000 symbols'),
        ({"symbols": ["X.NS"] * 10_000}, '"symbols" has 10000 symbols: a batch holds at most'),
        ({"symbols": ["TCS.NS", "../../etc/passwd"]}, "symbols[1]: invalid symbol '../../etc/"),
        ({"symbols": "TCS.NS"}, '"symbols" must be an array of strings'),
        ({"symbols": [1, 2]}, "symbols[0] must be a string, got the number 1; symbols[1] must"),
        ({"tickers": ["TCS.NS"]}, 'unknown field "tickers": the body takes only "symbols"'),
        ({}, 'the body has no "symbols"'),
    ],
)
def test_bad_requests_get_a_4xx_with_a_clear_message(
    server: tuple[str, Path], body: object, message: str
) -> None:
    base, _ = server
    before = httpx.get(f"{base}/api/all-stocks/progress").json().get("batch_id")
    response = httpx.post(f"{base}/api/stocks/analyze-all-stocks", json=body)
    assert response.status_code == 422
    assert message in response.json()["detail"]
    assert httpx.get(f"{base}/api/all-stocks/progress").json().get("batch_id") == before


def test_symbols_the_price_folder_lacks_are_refused_naming_the_ones_it_has(
    server: tuple[str, Path],
) -> None:
    base, log = server
    before = httpx.get(f"{base}/api/all-stocks/progress").json().get("batch_id")
    response = httpx.post(f"{base}/api/stocks/analyze-all-stocks",
                          json={"symbols": [SYMBOLS[0], "GONE.NS"]})  # fmt: skip
    assert response.status_code == 422
    body = response.json()
    assert (body["missing"], body["available"]) == (["GONE.NS"], SYMBOLS)
    assert body["detail"].startswith("no price data for 'GONE.NS' from csv folder ")
    assert body["detail"].endswith(f"(no GONE.NS.csv; it has {', '.join(SYMBOLS[:20])} and 20 "
                                   f"more): no batch was started")  # fmt: skip
    assert httpx.get(f"{base}/api/all-stocks/progress").json().get("batch_id") == before
    assert "Traceback" not in log.read_text()


def test_missing_things_are_404_and_bad_symbols_422(server: tuple[str, Path]) -> None:
    base, _ = server
    missing_batch = httpx.get(f"{base}/api/all-stocks/progress", params={"batch_id": 99999})
    assert missing_batch.status_code == 404
    assert httpx.get(f"{base}/api/jobs/99999").status_code == 404
    assert httpx.get(f"{base}/api/stocks/NEVER.NS/analysis").status_code == 404
    bad = httpx.get(f"{base}/api/stocks/A%20B/analysis")
    assert bad.status_code == 422 and "A B" in bad.json()["detail"]
    wrong_type = httpx.get(f"{base}/api/all-stocks/progress", params={"batch_id": "x"})
    assert wrong_type.status_code == 422 and "batch_id" in wrong_type.json()["detail"]
    no_batch = httpx.get(f"{base}/api/batches/99999/summary")
    assert no_batch.status_code == 404 and no_batch.json()["detail"] == "no batch with id 99999"
    bad_id = httpx.get(f"{base}/api/batches/x/summary")
    assert bad_id.status_code == 422 and "batch_id" in bad_id.json()["detail"]


def test_the_api_workers_run_the_daily_refresh_schedule(server: tuple[str, Path]) -> None:
    _, log = server
    # a worker that runs schedules records them at its start; burst workers never do
    with Queue(log.parent / "api.db", registry=registry) as queue:
        deadline = time.monotonic() + 30
        while True:
            [refresh] = queue.schedules()
            if refresh.declared_at is not None:
                break
            assert time.monotonic() < deadline, "the API's workers run no schedule"
            time.sleep(0.1)
    assert (refresh.name, refresh.task) == (REFRESH_WATCHLIST, REFRESH_WATCHLIST)
    assert (refresh.every, refresh.timezone) == ("0 16 * * *", "Asia/Kolkata")
    assert refresh.next_slot is not None
