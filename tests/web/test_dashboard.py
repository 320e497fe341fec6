"""The dashboard over HTTP, served by the real server, on each engine: pages, actions,
CSRF, read-only mode, authentication, redaction, /metrics and /healthz."""

from __future__ import annotations

import base64
import logging
import re
from pathlib import Path

import pytest

from sqlitejobq import JobStatus, Queue
from sqlitejobq.errors import InvalidArgument
from sqlitejobq.web import Auth, dashboard
from sqlitejobq.web.server import make

from ..conftest import Database
from .conftest import flaky_registry, populate

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def full(target: str) -> Queue:
    queue = Queue(target, registry=flaky_registry())
    yield queue
    queue.close()


def test_every_page_shows_what_is_in_the_queue(full: Queue, serve) -> None:
    ids = populate(full)
    web = serve(full)
    overview = web.get("/")
    assert overview.status_code == 200
    assert "Jobs by queue and status" in overview.text and "risky" in overview.text
    assert "Finished in the last hour" in overview.text and "<svg" in overview.text
    jobs = web.get("/jobs").text
    for job_id in [*ids["ok"], ids["boom"], ids["queued"], ids["cancelled"]]:
        assert f'data-job="{job_id}"' in jobs
    failed = web.get("/jobs", params={"status": "failed"}).text
    assert f'data-job="{ids["boom"]}"' in failed and f'data-job="{ids["ok"][0]}"' not in failed
    assert "boom on attempt 2" in failed
    batch = ids["batch"]
    batches = web.get("/batches").text
    assert f'data-batch="{batch.id}"' in batches and "4/4, 100%" in batches
    one_batch = web.get(f"/batches/{batch.id}").text
    assert all(f'data-job="{j}"' in one_batch for j in batch.job_ids)
    assert "worker" in web.get("/workers").text
    assert web.get("/schedules").status_code == 200


def test_a_failed_job_shows_every_attempt_with_its_error_and_traceback(full: Queue, serve) -> None:
    ids = populate(full)
    page = serve(full).get(f"/jobs/{ids['boom']}").text
    assert "boom on attempt 1" in page and "boom on attempt 2" in page
    assert page.count("Traceback (most recent call last)") >= 2
    timeline = page[page.index("Timeline") :]
    assert (
        timeline.index("enqueued")
        < timeline.index("boom on attempt 1")
        < timeline.index("boom on attempt 2")
    )


def test_secret_payload_fields_are_masked_and_payloads_can_be_hidden(full: Queue, serve) -> None:
    ids = populate(full)
    shown = serve(full).get(f"/jobs/{ids['boom']}").text
    assert "hunter2" not in shown and "[redacted]" in shown and "ann" in shown
    hidden = serve(full, show_payloads=False).get(f"/jobs/{ids['boom']}").text
    assert "hunter2" not in hidden and "ann" not in hidden
    more = serve(full, redact=["user"]).get(f"/jobs/{ids['boom']}").text
    assert "ann" not in more and "hunter2" not in more  # added to the defaults
    own = serve(full, redact=["user"], redact_defaults=False).get(f"/jobs/{ids['boom']}").text
    assert "ann" not in own and "hunter2" in own


def test_retry_and_cancel_change_the_job_and_are_logged(full: Queue, serve, caplog) -> None:
    ids = populate(full)
    web = serve(full)
    token = web.csrf(f"/jobs/{ids['boom']}")
    with caplog.at_level(logging.INFO, logger="sqlitejobq.web"):
        answer = web.post(f"/jobs/{ids['boom']}/retry", {"csrf": token, "confirm": "yes"})
        assert answer.status_code == 303
        assert full.get(ids["boom"]).status is JobStatus.QUEUED
        answer = web.post(f"/jobs/{ids['queued']}/cancel", {"csrf": token, "confirm": "yes"})
        assert answer.status_code == 303
        assert full.get(ids["queued"]).status is JobStatus.CANCELLED
    logged = " ".join(r.getMessage() for r in caplog.records)
    assert f"retry job {ids['boom']}" in logged and f"cancel job {ids['queued']}" in logged
    after = web.get(answer.headers["location"]).text
    assert "Cancelled" in after


def test_an_unconfirmed_action_asks_first_and_changes_nothing(full: Queue, serve) -> None:
    ids = populate(full)
    web = serve(full)
    token = web.csrf()
    page = web.post(f"/jobs/{ids['queued']}/cancel", {"csrf": token})
    assert page.status_code == 200 and "Yes, do it" in page.text
    assert full.get(ids["queued"]).status is JobStatus.QUEUED


def test_a_post_without_the_csrf_token_or_from_another_origin_is_refused(
    full: Queue, serve
) -> None:
    ids = populate(full)
    web = serve(full)
    target = f"/jobs/{ids['queued']}/cancel"
    assert web.post(target, {"confirm": "yes"}).status_code == 403
    assert web.post(target, {"confirm": "yes", "csrf": "x" * 43}).status_code == 403
    token = web.csrf()
    evil = web.post(target, {"csrf": token, "confirm": "yes"},
                    headers={"Origin": "http://evil.example"})  # fmt: skip
    assert evil.status_code == 403
    assert full.get(ids["queued"]).status is JobStatus.QUEUED


def test_read_only_mode_shows_no_action_and_refuses_every_post(full: Queue, serve) -> None:
    ids = populate(full)
    web = serve(full, read_only=True)
    for path in ("/", "/jobs?status=failed", f"/jobs/{ids['boom']}", f"/jobs/{ids['queued']}",
                 f"/batches/{ids['batch'].id}"):  # fmt: skip
        page = web.get(path).text
        assert "<form" not in page.replace('<form class="filters" method="get"', "")
        assert 'method="post"' not in page and "method=post" not in page
    token = web.client.cookies["sqlitejobq_csrf"]
    refused = web.post(f"/jobs/{ids['boom']}/retry", {"csrf": token, "confirm": "yes"})
    assert refused.status_code == 403
    assert full.get(ids["boom"]).status is JobStatus.FAILED


def test_retry_all_failed_matching_a_filter_retries_only_those(full: Queue, serve) -> None:
    ids = populate(full)
    other = full.enqueue("boom", {"n": 1}, queue="other")
    from sqlitejobq import Worker

    Worker(full, concurrency=1, queues=["other"]).run(burst=True)
    assert full.get(other).status is JobStatus.FAILED
    web = serve(full)
    token = web.csrf("/jobs?status=failed&queue=risky")
    answer = web.post("/actions/retry-failed",
                      {"csrf": token, "confirm": "yes", "queue": "risky"})  # fmt: skip
    assert answer.status_code == 303
    assert "queue=risky" in answer.headers["location"]
    assert "Retried 1 failed jobs." in web.get(answer.headers["location"]).text
    assert full.get(ids["boom"]).status is JobStatus.QUEUED
    assert full.get(other).status is JobStatus.FAILED


def test_purge_deletes_finished_jobs_older_than_the_cutoff(full: Queue, serve) -> None:
    ids = populate(full)
    web = serve(full)
    token = web.csrf()
    answer = web.post("/actions/purge", {"csrf": token, "confirm": "yes", "older_than_days": "0"})
    assert answer.status_code == 303
    assert full.jobs(status="completed") == []
    assert full.get(ids["queued"]).status is JobStatus.QUEUED
    bad = web.post("/actions/purge", {"csrf": token, "confirm": "yes", "older_than_days": "x"})
    assert bad.status_code == 400 and "older_than_days" in bad.text


def test_a_queue_is_paused_and_resumed_from_the_overview_and_logged(
    full: Queue, serve, caplog
) -> None:
    ids = populate(full)
    web = serve(full)
    overview = web.get("/").text
    row = re.search(r"<tr data-queue='risky'>.*?</tr>", overview)
    assert row is not None and "status active" in row[0]
    assert 'action="/actions/pause"' in row[0] and 'name="queue" value="risky"' in row[0]
    token = web.csrf()
    asked = web.post("/actions/pause", {"csrf": token, "queue": "risky"})
    assert asked.status_code == 200 and "Pause queue risky?" in asked.text
    assert full.paused() == []
    with caplog.at_level(logging.INFO, logger="sqlitejobq.web"):
        answer = web.post("/actions/pause", {"csrf": token, "confirm": "yes", "queue": "risky"})
        assert answer.status_code == 303 and answer.headers["location"] == "/"
        assert full.paused() == ["risky"]
        page = web.get("/").text
        assert "Paused: no worker claims" in page
        row = re.search(r"<tr data-queue='risky'>.*?</tr>", page)
        assert row is not None and "status paused" in row[0]
        assert 'action="/actions/resume"' in row[0]
        again = web.post("/actions/pause", {"csrf": token, "confirm": "yes", "queue": "risky"})
        assert "Nothing to pause" in web.get(again.headers["location"]).text
        answer = web.post("/actions/resume", {"csrf": token, "confirm": "yes", "queue": "risky"})
        assert answer.status_code == 303 and full.paused() == []
        assert "Resumed" in web.get(answer.headers["location"]).text
    logged = [r.getMessage() for r in caplog.records]
    assert any("pause queue 'risky' by anonymous from 127.0.0.1: paused" in m for m in logged)
    assert any("pause queue 'risky'" in m and "nothing to do" in m for m in logged)
    assert any("resume queue 'risky'" in m and "resumed" in m for m in logged)
    assert full.get(ids["queued"]).status is JobStatus.QUEUED


def test_a_paused_queue_without_jobs_is_listed_and_bad_names_are_refused(
    full: Queue, serve
) -> None:
    full.pause("quiet")
    web = serve(full)
    row = re.search(r"<tr data-queue='quiet'>.*?</tr>", web.get("/").text)
    assert row is not None and "status paused" in row[0] and "Resume" in row[0]
    token = web.csrf()
    for bad in ("", "not a name", "x" * 201):
        answer = web.post("/actions/pause", {"csrf": token, "confirm": "yes", "queue": bad})
        assert answer.status_code == 400 and "queue must be" in answer.text
    assert web.post("/actions/pause", {"confirm": "yes", "queue": "risky"}).status_code == 403
    evil = web.post("/actions/resume", {"csrf": token, "confirm": "yes", "queue": "quiet"},
                    headers={"Origin": "http://evil.example"})  # fmt: skip
    assert evil.status_code == 403
    assert full.paused() == ["quiet"]


def test_read_only_mode_has_no_pause_button_and_refuses_the_post(full: Queue, serve) -> None:
    populate(full)
    full.pause("risky")
    web = serve(full, read_only=True)
    page = web.get("/").text
    assert "status paused" in page and "/actions/pause" not in page
    assert "/actions/resume" not in page
    token = web.client.cookies["sqlitejobq_csrf"]
    for action, name in (("pause", "default"), ("resume", "risky")):
        refused = web.post(f"/actions/{action}", {"csrf": token, "confirm": "yes", "queue": name})
        assert refused.status_code == 403
    assert full.paused() == ["risky"]


def test_jobs_are_paged_by_cursor_with_every_job_once(full: Queue, serve) -> None:
    ids = set(full.enqueue_many("ok", [{"n": i} for i in range(123)]))
    web = serve(full)
    seen: list[int] = []
    path = "/jobs"
    for _ in range(10):
        page = web.get(path).text
        seen += [int(x) for x in re.findall(r'data-job="(\d+)"', page)]
        older = re.search(r'href="([^"]*before=\d+[^"]*)">older', page)
        if older is None:
            break
        path = older[1].replace("&amp;", "&")
    assert sorted(seen, reverse=True) == seen and set(seen) == ids and len(seen) == len(ids)


def test_bad_parameters_get_a_clear_error(full: Queue, serve) -> None:
    web = serve(full)
    assert "status must be one of" in web.get("/jobs", params={"status": "nope"}).text
    assert web.get("/jobs", params={"batch": "abc"}).status_code == 400
    assert web.get("/jobs/999999").status_code == 404
    assert web.get("/nowhere").status_code == 404


def test_every_answer_carries_the_security_headers(full: Queue, serve) -> None:
    web = serve(full)
    answer = web.get("/")
    assert "default-src 'none'" in answer.headers["content-security-policy"]
    assert answer.headers["x-frame-options"] == "DENY"
    assert answer.headers["x-content-type-options"] == "nosniff"
    cookie = answer.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie


def test_authentication_is_asked_for_when_configured(full: Queue, serve) -> None:
    auth = Auth(user="ops", password="correct horse", token="t" * 24)
    web = serve(full, auth=auth)
    assert web.get("/").status_code == 401
    assert "Basic" in web.get("/").headers["www-authenticate"]
    assert web.get("/metrics").status_code == 401
    good = base64.b64encode(b"ops:correct horse").decode()
    assert web.get("/", headers={"Authorization": f"Basic {good}"}).status_code == 200
    bad = base64.b64encode(b"ops:wrong").decode()
    assert web.get("/", headers={"Authorization": f"Basic {bad}"}).status_code == 401
    assert web.get("/metrics", headers={"Authorization": "Bearer " + "t" * 24}).status_code == 200
    assert web.get("/healthz").status_code in (200, 503)  # health checks need no credentials


def test_another_address_than_loopback_is_refused_without_authentication(full: Queue) -> None:
    with pytest.raises(InvalidArgument, match="without authentication"):
        make(dashboard(full), "0.0.0.0", 0)
    server = make(dashboard(full, auth=Auth(token="s" * 20)), "0.0.0.0", 0)
    server.server_close()


def test_auth_comes_from_the_environment_or_a_private_file(tmp_path: Path) -> None:
    assert Auth.from_env({}) is None
    env = Auth.from_env({"SQLITEJOBQ_WEB_PASSWORD": "long enough"})
    assert env is not None and env.user == "admin"
    file = tmp_path / "auth"
    file.write_text("ops:a long password\n")
    file.chmod(0o644)
    with pytest.raises(InvalidArgument, match="chmod 600"):
        Auth.from_file(file)
    file.chmod(0o600)
    assert Auth.from_file(file).user == "ops"
    assert "a long password" not in repr(Auth.from_file(file))
    with pytest.raises(InvalidArgument, match="at least 8"):
        Auth(user="a", password="short")


def test_refused_credentials_name_where_they_came_from(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match=r"^\$SQLITEJOBQ_WEB_PASSWORD: .*at least 8"):
        Auth.from_env({"SQLITEJOBQ_WEB_PASSWORD": "short", "SQLITEJOBQ_WEB_TOKEN": "t" * 20})
    with pytest.raises(InvalidArgument, match=r"^\$SQLITEJOBQ_WEB_TOKEN: .*at least 16"):
        Auth.from_env({"SQLITEJOBQ_WEB_PASSWORD": "long enough", "SQLITEJOBQ_WEB_TOKEN": "t"})
    file = tmp_path / "auth"
    file.write_text("ops:short\n")
    file.chmod(0o600)
    with pytest.raises(InvalidArgument, match=rf"^the auth file {file}: .*at least 8"):
        Auth.from_file(file)


def test_metrics_are_prometheus_text_with_the_queue_counts(full: Queue, serve) -> None:
    populate(full)
    web = serve(full)
    answer = web.get("/metrics")
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/plain")
    samples = {}
    for line in answer.text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    stats = full.stats()
    for queue_name, by_status in stats.counts.items():
        for status, count in by_status.items():
            assert samples[f'sqlitejobq_jobs{{queue="{queue_name}",status="{status}"}}'] == count
    assert samples["sqlitejobq_up"] == 1
    assert samples['sqlitejobq_workers{state="stopped"}'] >= 1
    finished = samples['sqlitejobq_jobs_finished_last_5_minutes{outcome="completed"}']
    assert finished == stats.total("completed")


def test_healthz_fails_when_due_jobs_wait_without_a_live_worker(full: Queue, serve) -> None:
    web = serve(full, max_queued_age=60)
    healthy = web.get("/healthz")
    assert healthy.status_code == 200 and healthy.json()["status"] == "ok"
    full.enqueue("ok", {"n": 1})
    sick = web.get("/healthz")
    assert sick.status_code == 503
    assert sick.json()["checks"]["workers"]["ok"] is False


def test_a_paused_queue_s_waiting_jobs_are_not_stuck_for_healthz(
    full: Queue, serve, database: Database
) -> None:
    web = serve(full, max_queued_age=60)
    full.pause("held")
    job_id = full.enqueue("ok", {"n": 1}, queue="held")
    database.execute("UPDATE sqlitejobq_jobs SET run_at = run_at - 3600 WHERE id = ?", (job_id,))
    healthy = web.get("/healthz")
    assert healthy.status_code == 200, healthy.text
    checks = healthy.json()["checks"]
    assert checks["workers"]["jobs_waiting"] == 0 and checks["backlog"]["oldest_queued_age"] == 0
    assert checks["backlog"]["paused_queues"] == 1 and checks["backlog"]["jobs_paused"] == 1
    full.resume("held")
    sick = web.get("/healthz").json()["checks"]
    assert sick["workers"]["ok"] is False and sick["backlog"]["ok"] is False
    assert sick["backlog"]["oldest_queued_age"] >= 3600


def test_metrics_show_each_paused_queue(full: Queue, serve) -> None:
    full.pause("held")
    full.pause("other")
    text = serve(full).get("/metrics").text
    assert 'sqlitejobq_queue_paused{queue="held"} 1' in text
    assert 'sqlitejobq_queue_paused{queue="other"} 1' in text
    full.resume("held")
    text = serve(full).get("/metrics").text
    assert 'queue="held"} 1' not in text and "# TYPE sqlitejobq_queue_paused gauge" in text


def test_a_batch_page_lists_its_jobs_in_enqueue_order_a_page_at_a_time(full: Queue, serve) -> None:
    batch = full.enqueue_batch("ok", [{"n": i} for i in range(120)])
    web = serve(full)
    seen: list[int] = []
    path = f"/batches/{batch.id}"
    for _ in range(5):
        page = web.get(path).text
        listed = page[page.index('id="batch-jobs"') :]
        seen += [int(x) for x in re.findall(r'data-job="(\d+)"', listed)]
        following = re.search(r'href="([^"]*after=\d+[^"]*)">next', page)
        if following is None:
            break
        path = following[1].replace("&amp;", "&")
    assert seen == batch.job_ids
