"""The dashboard's defences, over the real server on each engine: the Host it answers to
(DNS rebinding), trusted origins behind a proxy, clients beyond this machine when mounted
without credentials, masked and hidden content, targets and errors that carry no secret,
the 503 page of a database outage, checked user names, notices only from real actions,
and invisible characters shown."""

from __future__ import annotations

import asyncio
import base64
import logging
import re
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from sqlitejobq import JobStatus, Queue
from sqlitejobq.errors import InvalidArgument
from sqlitejobq.web import Auth, dashboard
from sqlitejobq.web.auth import is_loopback

from ..conftest import only_on
from .conftest import Relay, flaky_registry, populate, through, uvicorn_serving

pytestmark = pytest.mark.timeout(120)

SECRET = "hunter2-in-a-dsn"
DSN = f"postgresql://app:{SECRET}@db.internal:5432/jobs"


@pytest.fixture
def full(target: str) -> Iterator[Queue]:
    queue = Queue(target, registry=flaky_registry())
    yield queue
    queue.close()


@pytest.fixture
def local(tmp_path: Path) -> Iterator[Queue]:
    """A queue for what does not depend on the engine (options, direct calls)."""
    queue = Queue(tmp_path / "jobs.db", strict_tasks=False)
    yield queue
    queue.close()


def _basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


# --- 6. the names it answers to, and the origins it trusts -----------------------------------


def test_a_page_under_a_rebound_name_can_neither_read_nor_act(full: Queue, serve) -> None:
    ids = populate(full)
    web = serve(full)
    port = web.server.server_port
    rebound = f"rebind.attacker.example:{port}"  # resolves to 127.0.0.1 by the attacker's DNS
    for path in ("/", "/jobs", f"/jobs/{ids['boom']}", "/metrics"):
        answer = web.get(path, headers={"Host": rebound})
        assert answer.status_code == 400, path
        assert "is not a name of this dashboard" in answer.text
        assert "risky" not in answer.text and "boom on attempt" not in answer.text
    token = web.csrf()  # even with a token and its cookie, the purge is refused
    purge = web.post("/actions/purge", {"csrf": token, "confirm": "yes", "older_than_days": "0"},
                     headers={"Host": rebound, "Origin": f"http://{rebound}"})  # fmt: skip
    assert purge.status_code == 400
    assert len(full.jobs(status="completed")) == 9
    for name in ("localhost", "127.0.0.1", "[::1]", "LOCALHOST", "localhost."):
        assert web.get("/", headers={"Host": f"{name}:{port}"}).status_code == 200, name
    assert web.get("/", headers={"Host": "localhost"}).status_code == 200
    assert web.get("/", headers={"Host": "127.0.0.1.nip.io"}).status_code == 400


def test_allowed_hosts_add_names_and_hold_even_with_credentials(full: Queue, serve) -> None:
    web = serve(full, allowed_hosts=["jobs.internal"])
    port = web.server.server_port
    assert web.get("/", headers={"Host": f"jobs.internal:{port}"}).status_code == 200
    assert web.get("/", headers={"Host": f"JOBS.internal:{port}"}).status_code == 200
    assert web.get("/", headers={"Host": "other.internal"}).status_code == 400
    bearer = {"Authorization": "Bearer " + "t" * 24}
    authed = serve(full, auth=Auth(token="t" * 24))  # a rebound page cannot send credentials
    assert authed.get("/", headers={"Host": "any.example", **bearer}).status_code == 200
    strict = serve(full, auth=Auth(token="t" * 24), allowed_hosts=["jobs.example.com"])
    assert strict.get("/", headers={"Host": "any.example", **bearer}).status_code == 400
    assert strict.get("/", headers={"Host": "jobs.example.com", **bearer}).status_code == 200
    assert strict.get("/healthz", headers={"Host": "10.1.2.3:8080"}).status_code == 200


def test_a_post_from_a_trusted_origin_passes_a_proxy_that_rewrites_host(full: Queue, serve) -> None:
    job = full.enqueue("ok", {"n": 1}, delay=3600)
    other = full.enqueue("ok", {"n": 2}, delay=3600)
    web = serve(full, trusted_origins=["https://jobs.example.com:443"])
    token = web.csrf()
    form = {"csrf": token, "confirm": "yes"}
    # the proxy forwards to 127.0.0.1:PORT (its Host); the browser names the public origin
    refused = web.post(f"/jobs/{job}/cancel", form, headers={"Origin": "https://evil.example"})
    assert refused.status_code == 403 and full.get(job).status is JobStatus.QUEUED
    done = web.post(f"/jobs/{job}/cancel", form, headers={"Origin": "https://jobs.example.com"})
    assert done.status_code == 303 and full.get(job).status is JobStatus.CANCELLED
    by_referer = web.post(f"/jobs/{other}/cancel", form,
                          headers={"Referer": "https://jobs.example.com/jobs/1"})  # fmt: skip
    assert by_referer.status_code == 303 and full.get(other).status is JobStatus.CANCELLED
    plain = serve(full)
    again = full.enqueue("ok", {"n": 3}, delay=3600)
    answer = plain.post(f"/jobs/{again}/cancel", {"csrf": plain.csrf(), "confirm": "yes"},
                        headers={"Origin": "https://jobs.example.com"})  # fmt: skip
    assert answer.status_code == 403 and full.get(again).status is JobStatus.QUEUED


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("trusted_origins", ["jobs.example.com"], "a trusted origin must look like"),
        ("trusted_origins", ["https://jobs.example.com/path"], "scheme, host and port only"),
        ("trusted_origins", ["ftp://jobs.example.com"], "got 'ftp://jobs.example.com'"),
        ("trusted_origins", "https://jobs.example.com", "not one string"),
        ("allowed_hosts", ["http://jobs.example.com"], "no scheme, port or path"),
        ("allowed_hosts", ["jobs.example.com:8080"], "got 'jobs.example.com:8080'"),
        ("allowed_hosts", ["::1"], "an IPv6 address in brackets"),
        ("allowed_hosts", "jobs.example.com", "not one string"),
    ],
)
def test_bad_host_and_origin_options_are_refused_naming_the_value(
    local: Queue, option: str, value: Any, message: str
) -> None:
    with pytest.raises(InvalidArgument, match=re.escape(message)):
        dashboard(local, **{option: value})


# --- 10. clients beyond this machine when mounted without credentials -----------------------


def _wsgi(app: Any, remote: str | None, path: str = "/") -> tuple[str, bytes]:
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": path, "HTTP_HOST": "localhost:8000",
               "wsgi.url_scheme": "http"}  # fmt: skip
    if remote is not None:
        environ["REMOTE_ADDR"] = remote
    status: list[str] = []
    body = b"".join(app(environ, lambda s, headers: status.append(s)))
    return status[0], body


def _asgi(app: Any, client: tuple[str, int] | None) -> int:
    scope = {"type": "http", "method": "GET", "path": "/", "root_path": "", "query_string": b"",
             "headers": [(b"host", b"localhost:8000")], "client": client}  # fmt: skip
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    return int(sent[0]["status"])


def test_mounted_without_credentials_it_serves_this_machine_only(local: Queue) -> None:
    app = dashboard(local)
    status, body = _wsgi(app, "203.0.113.7")
    assert status.startswith("403") and b"answers this machine only" in body
    assert _wsgi(app, "127.0.0.1")[0].startswith("200")
    assert _wsgi(app, "::1")[0].startswith("200")
    assert _wsgi(app, "::ffff:127.0.0.1")[0].startswith("200")
    assert _wsgi(app, None)[0].startswith("200")  # a Unix socket: no address
    assert _wsgi(app, "203.0.113.7", "/healthz")[0].startswith("200")  # probes see no job
    assert _asgi(app, ("198.51.100.4", 50000)) == 403
    assert _asgi(app, ("testclient", 50000)) == 403
    assert _asgi(app, ("127.0.0.1", 50000)) == 200
    authed = dashboard(local, auth=Auth(token="t" * 24))
    assert _wsgi(authed, "203.0.113.7")[0].startswith("401")  # credentials decide then


def _outward_address() -> str | None:
    """This machine's address on its first non-loopback interface, if it has one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.254", 9))  # no packet is sent: this only picks a route
        except OSError:
            return None
        address = str(probe.getsockname()[0])
    return None if is_loopback(address) or address == "0.0.0.0" else address


def test_an_app_on_every_address_refuses_a_remote_client_without_credentials(
    local: Queue,
) -> None:
    from fastapi import FastAPI

    address = _outward_address()
    if address is None:
        pytest.skip("this machine has no address beyond loopback to connect from")
    app = FastAPI()
    app.mount("/dashboard", dashboard(local))
    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        port = int(s.getsockname()[1])
    with uvicorn_serving(app, "0.0.0.0", port):
        remote = httpx.get(f"http://{address}:{port}/dashboard/",
                           headers={"Host": "localhost"}, timeout=10)  # fmt: skip
        assert remote.status_code == 403 and "answers this machine only" in remote.text
        here = httpx.get(f"http://127.0.0.1:{port}/dashboard/", timeout=10)
        assert here.status_code == 200


# --- 7. masked and hidden content ------------------------------------------------------------


def _jobs_with_secrets(queue: Queue) -> dict[str, int]:
    """A failed job whose error and traceback quote a DSN, a running one whose progress
    message does, and a completed one whose result holds one."""
    failing = queue.enqueue("ok", {"db_password": "pw-field", "X-Api-Key": "key-field",
                                   "dsn": DSN, "symbol": "TCS.NS"})  # fmt: skip
    [claimed] = queue.claim("w1", limit=1)
    queue.fail(claimed, f"OperationalError: cannot connect to {DSN}",
               traceback=f"Traceback (most recent call last):\n  connect({DSN!r})\n",
               retry=False)  # fmt: skip
    running = queue.enqueue("ok", {"n": 1})
    [claimed] = queue.claim("w1", limit=1)
    claimed.set_progress(0.5, f"copying from {DSN} with token=tk-in-message")
    done = queue.enqueue("ok", {"n": 2})
    [claimed] = queue.claim("w1", limit=1)
    queue.complete(claimed, {"dsn": DSN, "github_token": "gh-in-result", "rows": 12})
    return {"failing": failing, "running": running, "done": done}


def test_secrets_in_payloads_results_errors_and_messages_are_masked(full: Queue, serve) -> None:
    ids = _jobs_with_secrets(full)
    web = serve(full)
    leaks = (SECRET, "pw-field", "key-field", "tk-in-message", "gh-in-result")
    pages = {path: web.get(path).text for path in (
        "/jobs", "/jobs?status=failed", *(f"/jobs/{i}" for i in ids.values()))}  # fmt: skip
    for path, text in pages.items():
        assert not [leak for leak in leaks if leak in text], path
    failing = pages[f"/jobs/{ids['failing']}"]
    assert "cannot connect to postgresql://app:[redacted]@db.internal:5432/jobs" in failing
    assert "connect(&#x27;postgresql://app:[redacted]@db.internal" in failing  # the traceback
    assert "TCS.NS" in failing
    running = pages[f"/jobs/{ids['running']}"]
    assert "copying from postgresql://app:[redacted]@db.internal:5432/jobs" in running
    assert "rows" in pages[f"/jobs/{ids['done']}"]


def test_hide_payloads_hides_results_messages_and_error_text(full: Queue, serve) -> None:
    ids = _jobs_with_secrets(full)
    web = serve(full, show_payloads=False)
    for path in ("/jobs", "/jobs?status=failed", *(f"/jobs/{i}" for i in ids.values())):
        text = web.get(path).text
        for hidden in ("db.internal", "TCS.NS", "copying from", "rows", "Traceback (most"):
            assert hidden not in text, (path, hidden)
    failing = web.get(f"/jobs/{ids['failing']}").text
    assert "OperationalError (message hidden)" in failing
    running = web.get(f"/jobs/{ids['running']}").text
    assert "50%" in running
    assert "Results are hidden" in web.get(f"/jobs/{ids['done']}").text
    search = web.get("/jobs", params={"error": "hunter"})
    assert search.status_code == 400 and "error filter is off" in search.text
    token = web.csrf()
    bulk = web.post("/actions/retry-failed", {"csrf": token, "confirm": "yes", "error": "h"})
    assert bulk.status_code == 400 and full.get(ids["failing"]).status is JobStatus.FAILED


# --- 8. targets and errors without secrets ---------------------------------------------------


def test_healthz_says_the_database_is_unavailable_and_nothing_more(
    target: str, serve, caplog: pytest.LogCaptureFixture
) -> None:
    queue = Queue(target, strict_tasks=False)
    web = serve(queue)
    assert web.get("/healthz").status_code == 200
    queue.close()  # every read fails from now on, with the target in its message
    with caplog.at_level(logging.WARNING, logger="sqlitejobq.web"):
        sick = web.get("/healthz")
    assert sick.status_code == 503
    assert sick.json() == {"status": "fail",
                           "checks": {"database": {"ok": False,
                                                   "reason": "database unavailable"}}}  # fmt: skip
    assert "closed" in caplog.text  # the details go to the log


@only_on("postgres", "only a postgresql:// target carries a password")
def test_a_password_in_the_url_shows_on_no_page_and_in_no_error(
    target: str, serve, caplog: pytest.LogCaptureFixture
) -> None:
    secret_url = f"{target}&password=pw-in-the-url-42&sslpassword=ssl-pw-42"
    queue = Queue(secret_url, strict_tasks=False)
    web = serve(queue)
    with caplog.at_level(logging.DEBUG):
        for path in ("/", "/jobs", "/jobs/999", "/metrics", "/healthz"):
            answer = web.get(path)
            assert "pw-in-the-url-42" not in answer.text and "ssl-pw-42" not in answer.text
        assert "password=***" in web.get("/").text  # the header names the database, masked
        queue.close()
        for path in ("/", "/healthz"):
            answer = web.get(path)
            assert answer.status_code == 503
            assert "pw-in-the-url-42" not in answer.text and "ssl-pw-42" not in answer.text
    assert "pw-in-the-url-42" not in caplog.text and "ssl-pw-42" not in caplog.text


# --- 10. a database outage, user names, notices, invisible characters ------------------------


@only_on("postgres", "the clock is the database server's on PostgreSQL only")
def test_a_database_outage_gives_the_503_page(target: str, serve) -> None:
    parts = urlsplit(target)
    relay = Relay(parts.hostname or "127.0.0.1", parts.port or 5432)
    queue = Queue(through(relay, target), strict_tasks=False, retry_timeout=1.0)
    try:
        web = serve(queue)
        assert web.get("/").status_code == 200
        relay.cut()
        for path in ("/", "/jobs", "/workers"):
            down = web.get(path)
            assert down.status_code == 503, (path, down.text[:300])
            assert "The database did not answer" in down.text
        health = web.get("/healthz")
        assert health.status_code == 503
        assert health.json()["checks"]["database"] == {
            "ok": False,
            "reason": "database unavailable",
        }
    finally:
        relay.cut()
        queue.close()


def test_the_token_as_a_basic_password_goes_with_the_user_name_token_only(
    full: Queue, serve, caplog: pytest.LogCaptureFixture
) -> None:
    token = "a-token-of-24-characters"
    web = serve(full, auth=Auth(user="ops", password="correct horse", token=token))
    assert web.get("/", headers=_basic("token", token)).status_code == 200
    assert web.get("/", headers=_basic("", token)).status_code == 200
    assert web.get("/", headers=_basic("ops", token)).status_code == 401
    forged = "ops from 10.0.0.1: retried\nINFO sqlitejobq.web: dashboard: purge by admin"
    assert web.get("/", headers=_basic(forged, token)).status_code == 401
    assert web.get("/", headers=_basic("ops\n", "correct horse")).status_code == 401
    job = full.enqueue("ok", {"n": 1}, delay=3600)
    headers = _basic("token", token)
    page = web.get(f"/jobs/{job}", headers=headers)
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert csrf is not None
    with caplog.at_level(logging.INFO, logger="sqlitejobq.web"):
        done = web.post(f"/jobs/{job}/cancel", {"csrf": csrf[1], "confirm": "yes"},
                        headers=headers)  # fmt: skip
        assert done.status_code == 303
        web.post("/jobs/1/cancel%0AINFO%20forged%20line", {"confirm": "yes"}, headers=headers)
    assert f"cancel job {job} by token from 127.0.0.1: cancelled" in caplog.text
    assert all("\n" not in r.getMessage() for r in caplog.records)
    assert "cancel\\nINFO forged line" in caplog.text


def test_log_names_are_escaped() -> None:
    from sqlitejobq.web.auth import printable

    assert printable("ops") == "ops"
    assert printable("a\nb\r\x1b[2J\u202e") == "a\\nb\\r\\x1b[2J\\u202e"


def test_a_notice_comes_only_from_an_action_that_happened(full: Queue, serve) -> None:
    populate(full)
    web = serve(full)
    fake = web.get("/", params={"done": "purged", "n": "999999"})
    assert fake.status_code == 200
    assert "999999" not in fake.text and "Purged" not in fake.text
    finished = len(full.jobs(status="completed")) + len(full.jobs(status="failed")) + len(
        full.jobs(status="cancelled"))  # fmt: skip
    answer = web.post("/actions/purge",
                      {"csrf": web.csrf(), "confirm": "yes", "older_than_days": "0"})  # fmt: skip
    assert answer.status_code == 303 and "999" not in answer.headers["location"]
    assert f"Purged {finished} finished jobs." in web.get(answer.headers["location"]).text
    assert "Purged" not in web.get("/").text  # shown once


def test_cancelling_a_running_job_says_what_happens_to_it(full: Queue, serve) -> None:
    job = full.enqueue("ok", {"n": 1})
    [claimed] = full.claim("w1", limit=1)
    web = serve(full)
    answer = web.post(f"/jobs/{job}/cancel", {"csrf": web.csrf(), "confirm": "yes"})
    page = web.get(answer.headers["location"]).text
    assert "Cancel requested: the job is running" in page
    assert "job.cancelled" in page and "async handler" in page
    assert full.get(job).status is JobStatus.PROCESSING and full.get(job).cancel_requested
    full.complete(claimed, None)
    assert full.get(job).status is JobStatus.CANCELLED
    queued = full.enqueue("ok", {"n": 2}, delay=3600)
    answer = web.post(f"/jobs/{queued}/cancel", {"csrf": web.csrf(), "confirm": "yes"})
    assert "Cancelled." in web.get(answer.headers["location"]).text


def test_the_overview_offers_purge_as_a_confirmed_csrf_post(full: Queue, serve) -> None:
    populate(full)
    page = serve(full).get("/").text
    form = re.search(r'<form[^>]*action="/actions/purge".*?</form>', page, re.S)
    assert form is not None
    assert 'name="older_than_days"' in form[0] and 'name="csrf"' in form[0]
    assert "data-confirm=" in form[0] and 'method="post"' in form[0]
    assert "/actions/purge" not in serve(full, read_only=True).get("/").text


def test_control_and_bidi_characters_are_shown_escaped(full: Queue, serve) -> None:
    batch = full.enqueue_batch("ok", [{"n": 1}], name="nightly\u202etxt.exe")
    [claimed] = full.claim("w1", limit=1)
    full.fail(claimed, "ValueError: file evil\u202egnp.exe\x1b[2J", retry=False)
    web = serve(full)
    job = batch.job_ids[0]
    for path in (f"/jobs/{job}", "/jobs?status=failed", f"/batches/{batch.id}", "/batches"):
        text = web.get(path).text
        assert "\u202e" not in text and "\x1b" not in text, path
        assert "[U+202E]" in text, path
    assert "[U+001B][2J" in web.get(f"/jobs/{job}").text
