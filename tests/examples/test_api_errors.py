"""Bad input to the HTTP API, on both engines, against a real server on the bundled sample:
each is refused at the request that brings it, with a status and a JSON ``detail`` naming
what is wrong, and nothing stored changes; a refused setting stops the server in one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from examples.stock_analyzer.api import main as api_main
from examples.stock_analyzer.prices import SAMPLE_SYMBOLS
from examples.stock_analyzer.service import SourceConfig, open_queue, start_analysis
from sqlitejobq import Queue

from ..conftest import ENGINES, Database, PgServer, with_schema
from .api_server import ROOT, free_port, running_api

pytestmark = pytest.mark.timeout(300)

MAX_ID = 2**63 - 1
#: Dashboard credentials of the module's servers: the dashboard must ask for them.
PASSWORD = "a-long-enough-password"
#: How the sample's symbols are listed when one it lacks is asked for.
HELD = ", ".join(sorted(SAMPLE_SYMBOLS))
#: TCS.NS spelt with a Cyrillic Te and Es: it looks the same, and is no symbol.
LOOKALIKE = "\u0422\u0421S.NS"
INVALID = (
    "expected 1-20 characters, letters, digits and . & _ -, starting with a letter or digit "
    "(e.g. 'TCS.NS', 'M&M.NS')"
)


@dataclass(frozen=True)
class Api:
    """A running API: its URL, its database (a file or a URL naming a schema), its log."""

    base: str
    target: str
    engine: str
    log: Path

    def stored(self) -> tuple[Any, ...]:
        """What a refused request must leave as it was: jobs, batches, the app's records."""
        db = Database(self.engine, self.target)
        with closing(Queue(self.target)) as queue:
            return (
                queue.max_job_id(),
                queue.latest_batch_id(),
                db.value("SELECT count(*) FROM analysis_batches"),
                db.value("SELECT count(*) FROM analysis_results"),
            )

    def assert_no_traceback(self) -> None:
        text = self.log.read_text()
        assert "Traceback" not in text and "Exception in ASGI" not in text, text[-3000:]


@pytest.fixture(scope="module", params=ENGINES)
def api(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    """A server of the API on the bundled sample (the default source), its dashboard behind a
    password: on a SQLite file, or on a PostgreSQL schema of its own."""
    engine = str(request.param)
    root = tmp_path_factory.mktemp(f"api_errors_{engine}")
    server: PgServer | None = None
    schema = ""
    if engine == "sqlite":
        target = str(root / "api.db")
    else:
        server = request.getfixturevalue("pg_server")
        schema = server.new_schema()
        target = with_schema(server.dsn, schema)
    try:
        with pytest.MonkeyPatch.context() as env:
            env.setenv("SQLITEJOBQ_WEB_PASSWORD", PASSWORD)
            env.delenv("SQLITEJOBQ_WEB_TOKEN", raising=False)
            with running_api(target, root / "server.log", "--workers", "2") as running:
                yield Api(running.base, target, engine, running.log)
    finally:
        if server is not None:
            server.drop(schema)


def wait_for_job(api: Api, job_id: int, status: str) -> dict[str, Any]:
    """The job, read through the API, once it has the status."""
    deadline = time.monotonic() + 60
    while True:
        job: dict[str, Any] = httpx.get(f"{api.base}/api/jobs/{job_id}").json()
        if job["status"] == status:
            return job
        assert time.monotonic() < deadline, job
        time.sleep(0.05)


# --- ids ------------------------------------------------------------------------------------------

BAD_IDS = [
    "99999999999999999999", "9223372036854775808", "-1", "0", "-9223372036854775809", "x",
    "1.5", "1e3", " 1", "", "1" * 5000,
]  # fmt: skip


@pytest.mark.parametrize(
    ("url", "name"),
    [
        ("/api/jobs/{}", "job_id"),
        ("/api/batches/{}/summary", "batch_id"),
        ("/api/all-stocks/progress?batch_id={}", "batch_id"),
    ],
)
def test_an_id_no_job_or_batch_can_have_is_a_422_naming_it_and_the_range(
    api: Api, url: str, name: str
) -> None:
    before = api.stored()
    for bad in BAD_IDS:
        if not bad and "?" not in url:  # an empty path segment is another URL
            continue
        response = httpx.get(api.base + url.format(quote(bad)))
        assert response.status_code == 422, (bad, response.text)
        shown = repr(bad) if len(repr(bad)) <= 40 else f"{repr(bad)[:40]}... (cut, 5000 characters)"
        assert response.json() == {
            "detail": f"{name} must be a whole number from 1 to {MAX_ID}, got {shown}"
        }
    # the largest id is a valid one that no job or batch has yet
    what = "job" if name == "job_id" else "batch"
    largest = httpx.get(api.base + url.format(MAX_ID))
    assert largest.status_code == 404
    assert largest.json() == {"detail": f"no {what} with id {MAX_ID}"}
    assert api.stored() == before
    api.assert_no_traceback()


def test_unknown_or_repeated_query_parameters_are_refused(api: Api) -> None:
    before = api.stored()
    misspelt = httpx.get(f"{api.base}/api/all-stocks/progress", params={"batchid": "1"})
    assert misspelt.status_code == 422
    assert misspelt.json()["detail"] == (
        "unknown query parameter 'batchid': /api/all-stocks/progress takes only batch_id"
    )
    twice = httpx.get(f"{api.base}/api/all-stocks/progress?batch_id=1&batch_id=2")
    assert twice.status_code == 422
    assert twice.json()["detail"] == "batch_id is given 2 times ('1', '2'): give it once"
    extra = httpx.get(f"{api.base}/api/jobs/1", params={"verbose": "1"})
    assert extra.status_code == 422
    assert extra.json()["detail"] == (
        "unknown query parameter 'verbose': /api/jobs/1 takes no query parameter"
    )
    assert api.stored() == before
    api.assert_no_traceback()


# --- the body of an analysis request --------------------------------------------------------------

JSON = "application/json"


@pytest.mark.parametrize(
    ("body", "content_type", "status", "detail"),
    [
        pytest.param(b'{"symbols": ["TCS.NS"', JSON, 422, "the body is not valid JSON: Expecting "
                     "',' delimiter at line 1 column 22", id="truncated"),
        pytest.param(b'{"symbols": ["TCS.NS",]}', JSON, 422, "the body is not valid JSON: "
                     "Expecting value at line 1 column 23", id="trailing comma"),
        pytest.param(b"", JSON, 422, 'the body is empty: send a JSON object such as {"symbols": '
                     '["TCS.NS", "INFY.NS"]}', id="empty"),
        pytest.param(b"\xff\xfe{}", JSON, 422, "the body is not valid JSON: it is not UTF-8 "
                     "text (invalid start byte at byte 0)", id="not utf-8"),
        pytest.param(b"[" * 200_000, JSON, 422, "the body nests arrays or objects too deeply: "
                     'send a JSON object such as {"symbols": ["TCS.NS", "INFY.NS"]}',
                     id="deep"),
        pytest.param(b'["TCS.NS"]', JSON, 422, 'the body must be a JSON object such as '
                     '{"symbols": ["TCS.NS", "INFY.NS"]}, got an array', id="an array"),
        pytest.param(b"null", JSON, 422, 'the body must be a JSON object such as {"symbols": '
                     '["TCS.NS", "INFY.NS"]}, got null', id="null"),
        pytest.param(b'{"symbols": ["TCS.NS"]}', "text/plain", 415, "the body must be JSON, sent "
                     "with Content-Type: application/json; got Content-Type: 'text/plain'",
                     id="not json"),
        pytest.param(b'{"symbols": ["TCS.NS"], "symbols": ["INFY.NS"]}', JSON, 422,
                     'the body names "symbols" twice in one object: give each field once',
                     id="a field twice"),
        pytest.param(b'{"tickers": ["TCS.NS"]}', JSON, 422, 'unknown field "tickers": the body '
                     'takes only "symbols", such as {"symbols": ["TCS.NS", "INFY.NS"]}',
                     id="unknown field"),
        pytest.param(b"{}", JSON, 422, 'the body has no "symbols": send a JSON object such as '
                     '{"symbols": ["TCS.NS", "INFY.NS"]}', id="no symbols"),
        pytest.param(b'{"symbols": "TCS.NS"}', JSON, 422, '"symbols" must be an array of '
                     "strings, such as [\"TCS.NS\"], got the string 'TCS.NS'", id="a string"),
        pytest.param(b'{"symbols": {"TCS.NS": 1}}', JSON, 422, '"symbols" must be an array of '
                     'strings, such as ["TCS.NS"], got an object', id="an object"),
        pytest.param(b'{"symbols": []}', JSON, 422, '"symbols" must not be empty: name 1 to '
                     "1000 symbols", id="empty list"),
        pytest.param(json.dumps({"symbols": ["TCS.NS"] * 10_000}).encode(), JSON, 422,
                     '"symbols" has 10000 symbols: a batch holds at most 1000',
                     id="too many"),
        pytest.param(json.dumps({"symbols": ["TCS.NS"] * 200_000}).encode(), JSON, 413,
                     "the body is larger than 1048576 bytes: a batch holds at most 1000 "
                     'symbols, such as {"symbols": ["TCS.NS", "INFY.NS"]}', id="too large"),
        pytest.param(b'{"symbols": [1, "TCS.NS", null, true, ["INFY.NS"]]}', JSON, 422,
                     "symbols[0] must be a string, got the number 1; symbols[2] must be a "
                     "string, got null; symbols[3] must be a string, got the boolean true; "
                     "symbols[4] must be a string, got an array", id="not strings"),
        pytest.param(b'{"symbols": ["TCS.NS", "../../etc/passwd"]}', JSON, 422,
                     f"symbols[1]: invalid symbol '../../etc/passwd': {INVALID}",
                     id="a path"),
        pytest.param(json.dumps({"symbols": ["TCS NS", LOOKALIKE, "TCS\tNS", "TCS.NS\0"]})
                     .encode(), JSON, 422, f"symbols[0]: invalid symbol 'TCS NS': {INVALID}; "
                     f"symbols[1]: invalid symbol '{LOOKALIKE}': {INVALID}; symbols[2]: "
                     f"invalid symbol 'TCS\\tNS': {INVALID}; symbols[3]: invalid symbol "
                     f"'TCS.NS\\x00': {INVALID}", id="odd characters"),
        pytest.param(json.dumps({"symbols": ["A" * 5000]}).encode(), JSON, 422,
                     f"symbols[0]: invalid symbol '{'A' * 39}... (cut, 5000 characters): "
                     f"{INVALID}", id="a long string"),
        pytest.param(b'{"symbols": ["TCS.NS", "INFY.NS", "tcs.ns", " INFY.NS"]}', JSON, 422,
                     "symbols[2] 'tcs.ns' repeats symbols[0] 'TCS.NS': name each symbol once; "
                     "symbols[3] ' INFY.NS' repeats symbols[1] 'INFY.NS': name each symbol once",
                     id="repeated symbols"),
        pytest.param(json.dumps({"symbols": list(range(7))}).encode(), JSON, 422,
                     "; ".join(f"symbols[{n}] must be a string, got the number {n}"
                               for n in range(5)) + "; and 2 more problems",
                     id="many problems"),
    ],
)  # fmt: skip
def test_a_bad_body_is_refused_saying_what_is_wrong_and_starts_nothing(
    api: Api, body: bytes, content_type: str, status: int, detail: str
) -> None:
    before = api.stored()
    response = httpx.post(f"{api.base}/api/stocks/analyze-all-stocks", content=body,
                          headers={"content-type": content_type}, timeout=30)  # fmt: skip
    assert response.status_code == status, response.text
    assert response.json() == {"detail": detail}
    assert api.stored() == before
    api.assert_no_traceback()


def test_a_body_without_a_content_type_is_read_as_json(api: Api) -> None:
    response = httpx.post(f"{api.base}/api/stocks/analyze-all-stocks", content=b'{"symbols": 3}')
    assert response.status_code == 422
    assert response.json()["detail"].endswith("got the number 3")


# --- symbols without prices -----------------------------------------------------------------------


def test_symbols_the_sample_lacks_are_refused_naming_them_and_the_ones_it_has(api: Api) -> None:
    before = api.stored()
    response = httpx.post(f"{api.base}/api/stocks/analyze-all-stocks",
                          json={"symbols": ["TCS.NS", "nosuch.ns", "ALSO.NS"]})  # fmt: skip
    assert response.status_code == 422
    assert response.json() == {
        "detail": f"no price data for 'NOSUCH.NS', 'ALSO.NS' from the bundled sample (it holds "
        f"only {HELD}): no batch was started",
        "missing": ["NOSUCH.NS", "ALSO.NS"],
        "available": sorted(SAMPLE_SYMBOLS),
    }
    assert api.stored() == before
    api.assert_no_traceback()


def test_a_job_for_a_symbol_without_prices_fails_without_advice_on_flags(api: Api) -> None:
    # enqueued past the API's check, as the daily refresh of a watchlist or an operator can
    with closing(open_queue(api.target)) as queue:
        batch = start_analysis(queue, ["NOSUCH.NS"], SourceConfig())
    job = wait_for_job(api, batch.job_ids[0], "failed")
    assert job["error"] == (
        f"PermanentFailure: no price data for 'NOSUCH.NS' from the bundled sample (it holds "
        f"only {HELD})"
    )
    report = httpx.get(f"{api.base}/api/all-stocks/progress", params={"batch_id": batch.id})
    [entry] = report.json()["symbols"]
    assert entry["error"] == job["error"] and "--" not in entry["error"]


# --- words ----------------------------------------------------------------------------------------


def test_a_batch_of_one_stock_is_named_in_the_singular(api: Api) -> None:
    started = httpx.post(f"{api.base}/api/stocks/analyze-all-stocks",
                         json={"symbols": ["TCS.NS"]})  # fmt: skip
    assert started.status_code == 202, started.text
    assert started.json()["total"] == 1
    progress = httpx.get(api.base + started.json()["progress_url"]).json()
    assert progress["name"] == "analyze 1 stock"
    wait_for_job(api, started.json()["job_ids"][0], "completed")
    # the dashboard asks for the credentials the environment gave it
    assert httpx.get(f"{api.base}/dashboard/").status_code == 401
    assert httpx.get(f"{api.base}/dashboard/", auth=("admin", PASSWORD)).status_code == 200


# --- settings the server cannot start with --------------------------------------------------------


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("SQLITEJOBQ_WEB_PASSWORD", "short", "the dashboard password must be at least 8 "
         "characters long"),
        ("SQLITEJOBQ_WEB_TOKEN", "short-token", "the dashboard token must be at least 16 "
         "characters long"),
    ],
)  # fmt: skip
def test_refused_dashboard_credentials_stop_the_api_in_one_line(
    engine: str, target: str, variable: str, value: str, message: str
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SQLITEJOBQ_WEB_")}
    env[variable] = value
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "src")])
    done = subprocess.run(
        [sys.executable, "-m", "examples.stock_analyzer.api", "--db", target,
         "--port", str(free_port())],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stderr == (
        f"error: ${variable}: {message} (it protects the dashboard at /dashboard/)\n"
    )
    assert done.stdout == ""
    assert Database(engine, target).tables() == set()  # not even the database was made


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--port", "70000"], "argument --port: expected a whole number from 1 to 65535, got "
         "'70000'"),
        (["--port", "0"], "argument --port: expected a whole number from 1 to 65535, got '0'"),
        (["--port", "http"], "argument --port: expected a whole number from 1 to 65535, got "
         "'http'"),
        (["--workers", "-1"], "argument --workers: expected a whole number from 0 to 1000, got "
         "'-1'"),
        (["--workers", "1" * 5000], "argument --workers: expected a whole number from 0 to "
         f"1000, got '{'1' * 39}... (cut, 5000 characters)"),
    ],
)  # fmt: skip
def test_numbers_the_api_cannot_serve_with_are_usage_errors(
    engine: str, target: str, capsys: pytest.CaptureFixture[str], arguments: list[str],
    message: str,
) -> None:  # fmt: skip
    with pytest.raises(SystemExit) as exited:
        api_main(["--db", target, *arguments])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: python -m examples.stock_analyzer.api")
    assert err.endswith(f"python -m examples.stock_analyzer.api: error: {message}\n")
    assert Database(engine, target).tables() == set()
