"""The dashboard mounted in an ASGI app (FastAPI under uvicorn) and a WSGI dispatcher, and
served by ``sqlitejobq web``: links and forms stay under the prefix, the bind policy holds."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from wsgiref.simple_server import make_server

import httpx
import pytest
from fastapi import FastAPI

from sqlitejobq import JobStatus, Queue
from sqlitejobq.web import dashboard

from .conftest import uvicorn_serving

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.timeout(120)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def queue(target: str) -> Iterator[Queue]:
    q = Queue(target, strict_tasks=False)
    yield q
    q.close()


def _actions_work_under(base: str, prefix: str, queue: Queue) -> None:
    job = queue.enqueue("later", {"n": 1}, delay=3600)
    with httpx.Client(base_url=base, timeout=10) as client:
        page = client.get(f"{prefix}/jobs/{job}")
        assert page.status_code == 200
        links = re.findall(r'(?:href|action|src)="(/[^"]*)"', page.text)
        assert links and all(link.startswith(prefix + "/") for link in links), links
        action = re.search(r'action="([^"]*/cancel)"', page.text)
        token = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert action and token
        done = client.post(action[1], data={"csrf": token[1], "confirm": "yes"})
        assert done.status_code == 303 and done.headers["location"].startswith(prefix + "/")
    assert queue.get(job).status is JobStatus.CANCELLED


def test_mounted_in_fastapi_under_uvicorn(queue: Queue) -> None:
    app = FastAPI()
    app.mount("/ops", dashboard(queue))

    @app.get("/")
    def home() -> dict[str, str]:
        return {"app": "mine"}

    port = _free_port()
    with uvicorn_serving(app, "127.0.0.1", port):
        base = f"http://127.0.0.1:{port}"
        assert httpx.get(base + "/").json() == {"app": "mine"}
        assert httpx.get(base + "/ops/static/dashboard.css").status_code == 200
        _actions_work_under(base, "/ops", queue)


def test_mounted_under_a_prefix_of_a_wsgi_server(queue: Queue) -> None:
    web = dashboard(queue)

    def dispatch(environ: dict[str, Any], start_response: Any) -> Any:
        path = environ.get("PATH_INFO", "")
        if path.startswith("/admin/jobs"):
            environ["SCRIPT_NAME"] = "/admin/jobs"
            environ["PATH_INFO"] = path[len("/admin/jobs") :] or "/"
            return web(environ, start_response)
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not mine"]

    server = make_server("127.0.0.1", 0, dispatch)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)  # fmt: skip
    thread.start()
    try:
        _actions_work_under(f"http://127.0.0.1:{server.server_port}", "/admin/jobs", queue)
    finally:
        server.shutdown()
        server.server_close()


def _cli(target: str, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "sqlitejobq", "web", "--db", target, *args],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, **(env or {})},
    )  # fmt: skip


def test_the_cli_refuses_a_public_bind_without_credentials(queue: Queue) -> None:
    refused = _cli(queue.target, "--host", "0.0.0.0")
    _, err = refused.communicate(timeout=30)
    assert refused.returncode == 1
    assert err.strip().count("\n") == 0 and "without authentication" in err


def test_the_cli_serves_with_a_token_from_the_environment(target: str, queue: Queue) -> None:
    port = _free_port()
    served = _cli(target, "--host", "0.0.0.0", "--port", str(port), "--read-only",
                  env={"SQLITEJOBQ_WEB_TOKEN": "a-token-of-24-characters"})  # fmt: skip
    try:
        assert served.stdout is not None
        line = served.stdout.readline()
        assert f":{port}/" in line and "read-only" in line
        base = f"http://127.0.0.1:{port}"
        assert httpx.get(base + "/").status_code == 401
        headers = {"Authorization": "Bearer a-token-of-24-characters"}
        assert httpx.get(base + "/", headers=headers).status_code == 200
        assert httpx.get(base + "/healthz").status_code == 200
    finally:
        served.terminate()
        served.wait(15)


def test_the_cli_takes_names_origins_and_redaction_and_shows_no_password(
    engine: str, target: str, queue: Queue
) -> None:
    db = f"{target}&password=pw-in-the-url-9" if engine == "postgres" else target
    job = queue.enqueue("later", {"card": "4111-1111", "password": "pw-field", "n": 1},
                        delay=3600)  # fmt: skip
    port = _free_port()
    served = _cli(db, "--port", str(port), "--allowed-host", "jobs.internal",
                  "--trusted-origin", "https://jobs.example.com", "--redact", "card")  # fmt: skip
    try:
        assert served.stdout is not None
        line = served.stdout.readline()
        assert f":{port}/" in line and "pw-in-the-url-9" not in line
        base = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=base, timeout=10) as client:
            assert client.get("/", headers={"Host": "elsewhere.example"}).status_code == 400
            page = client.get(f"/jobs/{job}", headers={"Host": f"jobs.internal:{port}"})
            assert page.status_code == 200 and "pw-in-the-url-9" not in page.text
            assert "4111" not in page.text and "pw-field" not in page.text
            token = re.search(r'name="csrf" value="([^"]+)"', page.text)
            assert token is not None
            done = client.post(f"/jobs/{job}/cancel", data={"csrf": token[1], "confirm": "yes"},
                               headers={"Origin": "https://jobs.example.com"})  # fmt: skip
            assert done.status_code == 303
        assert queue.get(job).status is JobStatus.CANCELLED
    finally:
        served.terminate()
        _, err = served.communicate(timeout=15)
    assert "pw-in-the-url-9" not in err
