"""The HTTP API against a real uvicorn server on 127.0.0.1, with real HTTP requests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from examples.stock_analyzer.sample import write_sample

ROOT = Path(__file__).resolve().parents[2]
SYMBOLS = [f"STOCK{n:02d}.NS" for n in range(40)]
pytestmark = pytest.mark.timeout(300)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    root = tmp_path_factory.mktemp("api")
    folder = root / "prices"
    write_sample(folder, SYMBOLS)
    port = free_port()
    log = root / "server.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "examples.stock_analyzer.api", "--db", str(root / "api.db"),
             "--port", str(port), "--source", "csv", "--folder", str(folder), "--delay", "0.1",
             "--workers", "4"],
            cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )  # fmt: skip
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(f"{base}/api/all-stocks/progress", timeout=5)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline or process.poll() is not None:
                    process.kill()
                    raise AssertionError("server did not start:\n" + log.read_text()) from None
                time.sleep(0.1)
        yield base, log
        process.terminate()
        process.wait(30)


def test_a_batch_of_40_moves_from_queued_through_processing_to_completed(
    server: tuple[str, Path],
) -> None:
    base, log = server
    started = httpx.post(f"{base}/api/stocks/analyze-all-stocks", json={"symbols": SYMBOLS})
    assert started.status_code == 202
    batch_id = started.json()["batch_id"]
    assert started.json()["total"] == 40
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
        if progress["status"] != "running" and progress["status"] != "queued":
            break
        assert time.monotonic() < deadline, "the batch did not finish"
        time.sleep(0.02)
    assert progress["status"] == "completed" and progress["completed"] == 40
    assert progress["percent"] == 100.0
    assert partial, "progress was never seen part-way"
    assert all(status == "running" for _, _, status in partial)
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
    assert "database is locked" not in log.read_text()


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"symbols": []}, "symbols: List should have at least 1 item"),
        ({"symbols": ["X.NS"] * 10_000}, "symbols: List should have at most 1000 items"),
        ({"symbols": ["TCS.NS", "../../etc/passwd"]}, "../../etc/passwd"),
        ({"symbols": "TCS.NS"}, "symbols: Input should be a valid list"),
        ({"symbols": [1, 2]}, "symbols.0: Input should be a valid string"),
        ({"tickers": ["TCS.NS"]}, "symbols: Field required"),
        ({}, "symbols: Field required"),
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
