"""Payloads, results and texts: what cannot be stored and read back is refused at the door.

Bad input gets ``PayloadError`` (``InvalidArgument`` for option texts) naming what is wrong,
at the call that received it, and nothing stored changes. Text of the library's own making
(an exception message, a traceback) is kept, with any lone surrogate written as an escape.
"""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sqlitejobq import (
    InvalidArgument,
    Job,
    JobStatus,
    PayloadError,
    Queue,
    Registry,
    Worker,
)
from sqlitejobq.payload import MAX_JSON_DEPTH

from . import apps
from .conftest import Engine

pytestmark = pytest.mark.timeout(120)

registry = Registry()


@registry.task("returns_payload", max_attempts=3, backoff=0.0)
def returns_payload(job: Job) -> Any:
    return job.payload


@registry.task("raises_lone_surrogate", max_attempts=2, backoff=0.0)
def raises_lone_surrogate(job: Job) -> None:
    raise ValueError("bad \ud800")


@registry.task("reports_lone_surrogate_progress", max_attempts=1, backoff=0.0)
def reports_lone_surrogate_progress(job: Job) -> dict[str, Any]:
    try:
        job.set_progress(0.5, "\ud800")
    except InvalidArgument as exc:
        return {"refused": type(exc).__name__, "message": str(exc)}
    return {"refused": None}


@pytest.fixture
def queue(engine: Engine) -> Iterator[Queue]:
    q = engine.open(registry=registry)
    yield q
    q.close()


def stored(queue: Queue) -> tuple[int, list[tuple[int, Any]]]:
    """Everything a refused call must leave as it was: the count and each job's payload."""
    jobs = queue.jobs(limit=10_000, oldest_first=True)
    return queue.stats().total(), [(job.id, job.payload) for job in jobs]


def nested(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth):
        value = [value]
    return value


def depth_of(value: Any) -> int:
    """How deep a chain of single-item lists goes (without recursion)."""
    depth = 0
    while isinstance(value, list) and value:
        value, depth = value[0], depth + 1
    return depth


# --- 1. too deep ------------------------------------------------------------------------


def test_a_payload_nested_100000_deep_is_refused_as_too_deep_and_nothing_stored(
    queue: Queue,
) -> None:
    queue.enqueue("returns_payload", {"before": True})
    before = stored(queue)
    deep = nested(100_000)

    with pytest.raises(PayloadError, match="nested too deeply"):
        queue.enqueue("returns_payload", deep)
    with pytest.raises(PayloadError, match=r"payload #1: .*nested too deeply"):
        queue.enqueue_many("returns_payload", [{"fine": 0}, deep, {"fine": 2}])
    with pytest.raises(PayloadError, match=r"payload #0: .*nested too deeply"):
        queue.enqueue_batch("returns_payload", [deep], name="deep")

    assert stored(queue) == before
    assert queue.latest_batch_id() is None


def test_a_payload_accepted_by_enqueue_can_be_read_back_from_a_deeper_stack(
    queue: Queue,
) -> None:
    accepted: dict[str, int] = {}

    def enqueue_from_a_shallow_stack() -> None:
        # the deepest payload enqueue accepts from a thread's fresh stack
        for depth in range(sys.getrecursionlimit(), 0, -10):
            try:
                accepted["id"] = queue.enqueue("returns_payload", nested(depth))
            except PayloadError:
                continue
            accepted["depth"] = depth
            return

    thread = threading.Thread(target=enqueue_from_a_shallow_stack)
    thread.start()
    thread.join(60)
    assert "id" in accepted

    def read_from(frames: int) -> Job:
        return queue.get(accepted["id"]) if frames == 0 else read_from(frames - 1)

    job = read_from(200)  # as from a web handler, a worker's loop, a test runner
    assert depth_of(job.payload) == accepted["depth"]


def test_a_worker_runs_a_payload_accepted_by_enqueue_and_leaves_nothing_processing(
    queue: Queue,
) -> None:
    accepted: dict[str, int] = {}

    def enqueue_from_a_shallow_stack() -> None:
        for depth in range(sys.getrecursionlimit(), 0, -10):
            try:
                accepted["id"] = queue.enqueue("returns_payload", nested(depth))
            except PayloadError:
                continue
            return

    thread = threading.Thread(target=enqueue_from_a_shallow_stack)
    thread.start()
    thread.join(60)
    assert "id" in accepted
    plain = queue.enqueue("returns_payload", {"plain": True})
    worker = Worker(queue, concurrency=2, lease=60.0)

    def run_from(frames: int) -> None:
        if frames == 0:
            worker.run(burst=True, handle_signals=False)
        else:
            run_from(frames - 1)

    runner = threading.Thread(target=run_from, args=(200,), daemon=True)
    runner.start()
    runner.join(30)
    if runner.is_alive():
        worker.stop(0)
        runner.join(30)
    assert not runner.is_alive()
    assert queue.get(plain).status is JobStatus.COMPLETED
    assert queue.stats().total("processing") == 0


def test_a_payload_is_limited_to_a_fixed_depth_whatever_the_callers_stack(queue: Queue) -> None:
    job_id = queue.enqueue("returns_payload", nested(MAX_JSON_DEPTH - 1))  # 100 levels
    assert depth_of(queue.get(job_id).payload) == MAX_JSON_DEPTH - 1
    with pytest.raises(PayloadError, match=f"nested deeper than {MAX_JSON_DEPTH} levels"):
        queue.enqueue("returns_payload", nested(MAX_JSON_DEPTH))
    with pytest.raises(PayloadError, match="nested deeper"):
        queue.enqueue("returns_payload", {"a": [{"b": nested(MAX_JSON_DEPTH)}]})


def test_a_stored_payload_that_cannot_be_decoded_fails_its_job_and_no_other(
    queue: Queue, engine: Engine
) -> None:
    # written by another program straight into the table: too deep to decode anywhere
    bad = queue.enqueue("returns_payload", {"placeholder": True})
    good = queue.enqueue_many("returns_payload", [{"n": n} for n in range(3)])
    engine.execute("UPDATE sqlitejobq_jobs SET payload = ? WHERE id = ?",
                   "[" * 100_000 + "]" * 100_000, bad)  # fmt: skip
    with pytest.raises(PayloadError, match=f"job {bad}: its stored JSON cannot be decoded"):
        queue.get(bad)
    summary = Worker(queue, concurrency=4).run(burst=True)
    assert [queue.get(i).status for i in good] == [JobStatus.COMPLETED] * 3
    assert (summary.completed, summary.failed) == (3, 1)
    [(status, attempts, error)] = engine.execute(
        "SELECT status, attempts, error FROM sqlitejobq_jobs WHERE id = ?", bad
    )
    assert (status, attempts) == ("failed", 1)
    assert f"PayloadError: job {bad}: its stored JSON cannot be decoded" in error


# --- 2. lone surrogates and real Unicode -------------------------------------------------


@pytest.mark.parametrize(
    "payload",
    [
        "\ud800",
        {"value": "ok \udfff"},
        {"key \ud800": 1},
        {"outer": [1, {"inner": ["fine", "bad \udc00"]}]},
        [{"nested": {"deeper \udbff": None}}],
    ],
    ids=["top-level text", "a value", "a key", "nested value", "nested key"],
)
def test_a_lone_surrogate_anywhere_in_a_payload_is_refused_and_nothing_stored(
    queue: Queue, payload: Any
) -> None:
    queue.enqueue("returns_payload", {"before": True})
    before = stored(queue)

    with pytest.raises(PayloadError, match="lone surrogate"):
        queue.enqueue("returns_payload", payload)
    with pytest.raises(PayloadError, match=r"payload #1: .*lone surrogate"):
        queue.enqueue_many("returns_payload", [{"fine": 0}, payload])

    assert stored(queue) == before


def test_a_non_ascii_payload_round_trips_exactly(queue: Queue) -> None:
    payloads = [
        {
            "emoji": "😀🎉👩\u200d👩\u200d👧",
            "cjk": "漢字かな한국어",
            "accents": "éàüñçø Ångström",
            "combining": "e\u0301 n\u0303",
            "rtl": "שלום مرحبا",
            "ключ": ["значение", "ελληνικά"],
            "astral": "\U0001d518\U0001f600",
            "controls": "tab\tnewline\nnull\x00",
        },
        "плоский текст ✓",
        ["\u2028\u2029", {"€": "£"}],
    ]
    ids = [queue.enqueue("returns_payload", p) for p in payloads]
    ids += queue.enqueue_many("returns_payload", payloads)

    assert [queue.get(i).payload for i in ids] == payloads + payloads


# --- 3. keys that JSON would merge ----------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "first", "second"),
    [
        ({1: "a", "1": "b"}, "1", "'1'"),
        ({True: 1, "true": 2}, "True", "'true'"),
        ({None: 1, "null": 2}, "None", "'null'"),
        ({1.0: 1, "1.0": 2}, "1.0", "'1.0'"),
        ({"outer": [{2: "x", "2": "y"}]}, "2", "'2'"),
    ],
    ids=["int and text", "True and true", "None and null", "float and text", "nested"],
)
def test_keys_that_json_would_merge_are_refused_naming_both_and_nothing_stored(
    queue: Queue, payload: dict[Any, Any], first: str, second: str
) -> None:
    queue.enqueue("returns_payload", {"before": True})
    before = stored(queue)

    with pytest.raises(PayloadError) as info:
        queue.enqueue("returns_payload", payload)
    message = str(info.value)
    assert f"keys {first} and {second}" in message
    assert "replace" in message
    with pytest.raises(PayloadError, match=r"payload #2: "):
        queue.enqueue_many("returns_payload", [{}, {"a": 1}, payload])

    assert stored(queue) == before


def test_non_string_keys_that_do_not_collide_are_stored_as_json_text(queue: Queue) -> None:
    job_id = queue.enqueue("returns_payload", {1: "a", 2: "b"})
    assert queue.get(job_id).payload == {"1": "a", "2": "b"}
    job_id = queue.enqueue("returns_payload", {"n": [{None: 0, True: 1, 2.5: 2}]})
    assert queue.get(job_id).payload == {"n": [{"null": 0, "true": 1, "2.5": 2}]}


# --- 4. and 5. results and error texts ----------------------------------------------------


def test_a_result_with_a_lone_surrogate_fails_that_job_at_once_and_the_others_complete(
    engine: Engine,
) -> None:
    with engine.open(registry=apps.registry) as queue:
        values: list[Any] = [0, "one", {"two": 2}, "lone surrogate", [4], "fünf", None]
        ids = queue.enqueue_many("echo", [{"value": v, "seconds": 0.2} for v in values])

        summary = Worker(queue, concurrency=7).run(burst=True)

        assert summary.completed == 6
        assert summary.failed == 1
        stats = queue.stats()
        assert stats.total("processing") == 0
        assert stats.total("queued") == 0
        for job_id, value in zip(ids, values, strict=True):
            job = queue.get(job_id)
            if value == "lone surrogate":
                assert job.status is JobStatus.FAILED
                assert job.attempts == 1  # of 3: a result that cannot be stored is not retried
                assert job.error is not None and "lone surrogate" in job.error
                assert "result" in job.error
                assert job.result is None
            else:
                assert job.status is JobStatus.COMPLETED, job.error
                assert job.result == value


def test_an_exception_message_with_a_lone_surrogate_is_kept_as_an_escape(queue: Queue) -> None:
    bad = queue.enqueue("raises_lone_surrogate", {"n": 0})
    good = queue.enqueue_many("returns_payload", [{"n": 1}, {"n": 2}, {"n": 3}])

    summary = Worker(queue, concurrency=4).run(burst=True)

    job = queue.get(bad)
    assert job.status is JobStatus.FAILED
    assert job.attempts == 2  # retried once, then failed: each attempt's error was written
    assert job.error == "ValueError: bad \\ud800"
    assert job.traceback is not None and "ValueError: bad \\ud800" in job.traceback
    assert "raise ValueError" in job.traceback
    assert [queue.get(i).status for i in good] == [JobStatus.COMPLETED] * 3
    assert summary.completed == 3
    assert summary.failed == 1
    assert queue.stats().total("processing") == 0


def test_fail_with_a_lone_surrogate_in_the_error_is_recorded_not_refused(queue: Queue) -> None:
    job_id = queue.enqueue("returns_payload", {"n": 1})
    [job] = queue.claim("w1")

    assert queue.fail(job, ValueError("bad \ud800"), traceback="line \udfff") is True

    stored_job = queue.get(job_id)
    assert stored_job.status is JobStatus.QUEUED
    assert stored_job.error == "ValueError: bad \\ud800"
    assert stored_job.traceback == "line \\udfff"


# --- 6. option texts ---------------------------------------------------------------------


def test_a_progress_message_with_a_lone_surrogate_is_refused_naming_it(queue: Queue) -> None:
    job_id = queue.enqueue("reports_lone_surrogate_progress")

    Worker(queue, concurrency=1).run(burst=True)

    job = queue.get(job_id)
    assert job.status is JobStatus.COMPLETED
    assert job.result["refused"] == "InvalidArgument"
    assert "progress message" in job.result["message"]
    assert "lone surrogate" in job.result["message"]
    assert job.progress_message is None


def test_a_progress_message_with_a_lone_surrogate_changes_nothing(queue: Queue) -> None:
    job_id = queue.enqueue("returns_payload")
    [job] = queue.claim("w1")
    assert queue.set_progress(job, 0.25, "a quarter") is True
    before = queue.get(job_id)

    with pytest.raises(InvalidArgument, match=r"progress message.*lone surrogate"):
        queue.set_progress(job, 0.5, "\ud800")
    with pytest.raises(InvalidArgument, match="progress message"):
        job.set_progress(0.5, "half \udfff")

    after = queue.get(job_id)
    assert (after.progress, after.progress_message) == (0.25, "a quarter")
    assert after.lease_until == before.lease_until


def test_a_unique_key_or_batch_name_with_a_lone_surrogate_is_refused_and_nothing_stored(
    queue: Queue,
) -> None:
    queue.enqueue("returns_payload", {"before": True}, unique_key="fine")
    before = stored(queue)

    with pytest.raises(InvalidArgument, match=r"unique_key.*lone surrogate"):
        queue.enqueue("returns_payload", {"n": 1}, unique_key="\ud800")
    with pytest.raises(InvalidArgument, match="unique_key"):
        queue.enqueue_many("returns_payload", [{"n": 1}], unique_key="key \udfff")
    with pytest.raises(InvalidArgument, match=r"batch name.*lone surrogate"):
        queue.enqueue_batch("returns_payload", [{"n": 1}, {"n": 2}], name="\ud800")

    assert stored(queue) == before
    assert queue.latest_batch_id() is None


# --- 7. any JSON-like value ----------------------------------------------------------------

any_character = st.characters(exclude_categories=()) | st.characters(categories=["Cs"])
any_text = st.text(any_character, max_size=12)
json_like = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63)
    | st.floats(allow_nan=False, allow_infinity=False)
    | any_text,
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(any_text, children, max_size=5)
    ),
    max_leaves=25,
)


def has_lone_surrogate(value: Any) -> bool:
    if isinstance(value, str):
        return any(0xD800 <= ord(c) <= 0xDFFF for c in value)
    if isinstance(value, list):
        return any(has_lone_surrogate(v) for v in value)
    if isinstance(value, dict):
        return any(has_lone_surrogate(k) or has_lone_surrogate(v) for k, v in value.items())
    return False


def test_any_json_like_value_is_stored_and_read_back_equal_or_refused_for_a_lone_surrogate(
    engine: Engine,
) -> None:
    queue = engine.open()
    counts = {"stored": 0, "refused": 0}

    @settings(
        max_examples=150,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(value=json_like)
    def enqueue_then_get(value: Any) -> None:
        before = queue.stats().total()
        if has_lone_surrogate(value):
            with pytest.raises(PayloadError, match="lone surrogate"):
                queue.enqueue("t", value)
            assert queue.stats().total() == before
            counts["refused"] += 1
            return
        job_id = queue.enqueue("t", value)  # any exception here fails the property
        payload = queue.get(job_id).payload
        assert payload == value
        assert json.dumps(payload, sort_keys=True) == json.dumps(value, sort_keys=True)
        assert queue.stats().total() == before + 1
        counts["stored"] += 1

    try:
        enqueue_then_get()
    finally:
        queue.close()
    assert counts["stored"] > 0
