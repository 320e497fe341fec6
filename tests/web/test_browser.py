"""The dashboard in a real browser (headless Chromium): every page loads, a live batch's
progress bar moves without a reload, retry, cancel, pause and resume work through the buttons.

Chromium and its driver come from Debian (``apt-get install chromium chromium-driver``;
``.ci/run`` installs them). Without them these tests skip saying so, except under
``CI=true``, where they fail. ``$SQLITEJOBQ_SCREENSHOTS=DIR`` keeps the screenshots there
(docs/dashboard.md shows them).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sqlitejobq import JobStatus, Queue

from .conftest import Served

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")

pytestmark = pytest.mark.timeout(180)


def _unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI must run the browser tests: .ci/run installs Chromium)")
    pytest.skip(reason)


@pytest.fixture
def browser() -> Iterator[Any]:
    if CHROMIUM is None or DRIVER is None:
        _unavailable("no headless Chromium here: apt-get install chromium chromium-driver")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        _unavailable("selenium is not installed (it is in the dev extra)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1280,860",
        "--hide-scrollbars",
        "--force-device-scale-factor=1",
    ):
        options.add_argument(arg)  # fmt: skip
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    keep = os.environ.get("SQLITEJOBQ_SCREENSHOTS")
    folder = Path(keep) if keep else tmp_path / "shots"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture
def queue(target: str) -> Iterator[Queue]:
    """A queue of producers: the worker process knows the tasks."""
    opened = Queue(target, strict_tasks=False)
    yield opened
    opened.close()


@pytest.fixture
def worker_process(target: str) -> Iterator[subprocess.Popen[bytes]]:
    process = subprocess.Popen(
        [sys.executable, "-m", "sqlitejobq", "worker", "--db", target,
         "--app", "tests.web.apps:registry", "--concurrency", "2"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    yield process
    process.terminate()
    try:
        process.wait(15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)


def _wait_for(condition: Any, timeout: float = 30.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def _text(browser: Any, css: str) -> str:
    """An element's text read in one step (the live refresh replaces elements under us)."""
    script = "const e = document.querySelector(arguments[0]); return e ? e.textContent : ''"
    return str(browser.execute_script(script, css))


def test_a_live_batch_progress_bar_moves_in_the_browser(
    queue: Queue, browser: Any, worker_process: Any, shots: Path, serve: Any
) -> None:
    from selenium.webdriver.common.by import By

    web: Served = serve(queue, refresh=0.4)
    batch = queue.enqueue_batch("step", [{"n": i, "seconds": 0.4} for i in range(24)],
                                name="nightly prices")  # fmt: skip
    browser.get(f"{web.url}/batches")
    bar = f'[data-batch="{batch.id}"] .label'
    first = _text(browser, bar)
    labels = {first}
    loaded = browser.execute_script("return performance.timeOrigin")

    def moved() -> bool:
        labels.add(_text(browser, bar))
        return len(labels) >= 3

    _wait_for(moved, 60, "the batch's bar to move twice")
    assert browser.execute_script("return performance.timeOrigin") == loaded, "reloaded"
    browser.get(f"{web.url}/batches/{batch.id}")
    _wait_for(lambda: _text(browser, "#batch-jobs .bar[aria-valuenow] + .label"), 30,
              "a running job's progress on the batch's page")  # fmt: skip
    browser.save_screenshot(str(shots / "dashboard-batch.png"))
    browser.get(f"{web.url}/batches")
    done = "24/24, 100%"
    _wait_for(lambda: _text(browser, bar) == done, 90,
              "the batch to finish on the page")  # fmt: skip
    assert queue.batch_progress(batch.id).completed == 24
    browser.get(f"{web.url}/")
    assert "24" in _text(browser, "#overview-cards")
    # the worker adds its finished jobs to the minute's row when it reports (every 10 s)
    _wait_for(lambda: "24 completed" in _text(browser, "#overview-chart"), 40,
              "the throughput chart to count the batch")  # fmt: skip
    assert browser.find_elements(By.CSS_SELECTOR, "svg.chart rect")
    browser.save_screenshot(str(shots / "dashboard-overview.png"))
    for path in ("/jobs", f"/jobs/{batch.job_ids[0]}", f"/batches/{batch.id}", "/workers",
                 "/schedules"):  # fmt: skip
        browser.get(web.url + path)
        assert browser.find_element(By.TAG_NAME, "h1").text
        errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
        assert not errors, errors


def test_retry_and_cancel_through_the_buttons(
    queue: Queue, browser: Any, worker_process: Any, shots: Path, serve: Any
) -> None:
    from selenium.webdriver.common.by import By

    web: Served = serve(queue, refresh=0.5)
    failing = queue.enqueue("boom", {"symbol": "TCS.NS", "api_key": "k-123"})
    _wait_for(lambda: queue.get(failing).status is JobStatus.FAILED, 60, "the job to fail")
    browser.get(f"{web.url}/jobs/{failing}")
    assert "bad input on attempt 2" in browser.page_source
    assert "k-123" not in browser.page_source
    browser.set_window_size(1280, 1180)
    browser.save_screenshot(str(shots / "dashboard-job.png"))
    browser.set_window_size(1280, 860)
    browser.find_element(By.XPATH, "//button[text()='Retry']").click()
    browser.switch_to.alert.accept()
    _wait_for(lambda: "Retried." in browser.page_source, 20, "the retry notice")
    _wait_for(lambda: queue.get(failing).attempts >= 1 and queue.get(failing).status
              is JobStatus.FAILED and len(queue.timeline(failing)) > 6, 60,
              "the retried job to run again")  # fmt: skip

    later = queue.enqueue("step", {"n": 1}, delay=3600)
    browser.get(f"{web.url}/jobs/{later}")
    browser.find_element(By.XPATH, "//button[text()='Cancel']").click()
    browser.switch_to.alert.dismiss()  # asked first: nothing happens
    assert queue.get(later).status is JobStatus.QUEUED
    browser.find_element(By.XPATH, "//button[text()='Cancel']").click()
    browser.switch_to.alert.accept()
    _wait_for(lambda: "Cancelled" in browser.page_source, 20, "the cancel notice")
    assert queue.get(later).status is JobStatus.CANCELLED
    assert browser.find_elements(By.XPATH, "//button[text()='Retry']")


def test_pause_and_resume_a_queue_through_the_buttons(
    queue: Queue, browser: Any, worker_process: Any, serve: Any
) -> None:
    from selenium.webdriver.common.by import By

    web: Served = serve(queue, refresh=0)
    first = queue.enqueue("step", {"n": 0, "seconds": 0.0})
    _wait_for(lambda: queue.get(first).status is JobStatus.COMPLETED, 60, "the first job")
    browser.get(web.url + "/")
    pause = "//tr[@data-queue='default']//button[text()='Pause']"
    browser.find_element(By.XPATH, pause).click()
    browser.switch_to.alert.dismiss()  # asked first: nothing happens
    assert queue.paused() == []
    browser.find_element(By.XPATH, pause).click()
    browser.switch_to.alert.accept()
    _wait_for(lambda: "Paused: no worker claims" in browser.page_source, 20, "the notice")
    assert queue.paused() == ["default"]
    held = queue.enqueue_many("step", [{"n": n, "seconds": 0.0} for n in range(3)])
    time.sleep(1.5)
    assert {queue.get(job_id).status for job_id in held} == {JobStatus.QUEUED}
    browser.get(web.url + "/")
    browser.find_element(By.XPATH, "//tr[@data-queue='default']//button[text()='Resume']").click()
    browser.switch_to.alert.accept()
    _wait_for(lambda: "Resumed" in browser.page_source, 20, "the resume notice")
    _wait_for(
        lambda: all(queue.get(job_id).status is JobStatus.COMPLETED for job_id in held),
        30,
        "the held jobs to run once resumed",
    )
