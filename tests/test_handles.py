"""Task handles (``square.enqueue(...)``) and typed payloads (``payload_type=``)."""

from __future__ import annotations

import asyncio
import enum
import gc
import importlib.util
import inspect
import pickle
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pytest

from sqlitejobq import (
    InvalidArgument,
    InvalidArgumentType,
    Job,
    JobStatus,
    PayloadError,
    Queue,
    Registry,
    TaskHandle,
    TaskNotBound,
    UnknownTask,
    Worker,
)
from sqlitejobq.cli import main

# a handle at module level pickles by reference, as a function does
MODULE_REGISTRY = Registry()


@MODULE_REGISTRY.task
def module_level(job: Job) -> int:
    """Doubles the payload."""
    return int(job.payload) * 2


@dataclass
class Point:
    x: int
    y: float = 0.0


class Colour(enum.Enum):
    RED = "red"
    BLUE = "blue"


@dataclass
class Drawing:
    name: str
    points: list[Point]
    colour: Colour = Colour.RED
    origin: Point | None = None
    style: Literal["solid", "dashed"] = "solid"
    size: tuple[int, int] = (1, 1)
    tags: dict[str, int] = field(default_factory=dict)


@dataclass
class Positive:
    n: int

    def __post_init__(self) -> None:
        if self.n <= 0:
            raise ValueError(f"n must be > 0, got {self.n}")


def claim_one(queue: Queue) -> Job:
    [job] = queue.claim("w1", limit=1)
    return job


# --- the handle is still the function -------------------------------------------------------


def test_a_handle_is_callable_as_the_function_and_keeps_its_metadata() -> None:
    registry = Registry()

    def square(job: Job) -> int:
        """Squares the payload."""
        return int(job.payload) ** 2

    handle = registry.task(square)
    assert isinstance(handle, TaskHandle)
    fake = Job.__new__(Job)
    object.__setattr__(fake, "payload", 7)
    assert handle(fake) == 49
    assert handle.__name__ == "square" and handle.__doc__ == "Squares the payload."
    assert handle.__qualname__ == square.__qualname__ and handle.__module__ == __name__
    assert handle.__wrapped__ is square and handle.func is square
    assert inspect.signature(handle) == inspect.signature(square)
    assert handle.name == "square" and handle.registry is registry
    assert registry.get("square").handler is square  # what workers run: the function itself
    assert repr(handle) == "<TaskHandle 'square'>"


def test_a_handle_pickles_by_reference() -> None:
    assert pickle.loads(pickle.dumps(module_level)) is module_level


def test_the_task_name_given_to_the_decorator_is_the_handles_name(tmp_path: Path) -> None:
    with Queue(tmp_path / "jobs.db") as queue:

        @queue.task("resize_image", queue="images", priority=3, max_attempts=7)
        def resize(job: Job) -> None:
            return None

        job = queue.get(resize.enqueue({"w": 10}))
        assert (job.task, job.queue, job.priority, job.max_attempts) == (
            "resize_image", "images", 3, 7,
        )  # fmt: skip
        assert repr(resize) == f"<TaskHandle 'resize_image' on {queue!r}>"


def test_stacked_decorators_register_the_function_in_each_registry(tmp_path: Path) -> None:
    first, second = Registry(), Registry()

    @first.task("a")
    @second.task("b")
    def both(job: Job) -> str:
        return "ran"

    assert first.get("a").handler is second.get("b").handler is both.func
    second.register("c", both)  # a handle registers its function
    assert second.get("c").handler is both.func


# --- enqueue through a handle ---------------------------------------------------------------


def test_a_queue_task_handle_enqueues_on_its_queue_with_every_option(target: str) -> None:
    with Queue(target, retry_backoff=0.0) as queue:

        @queue.task(queue="maths")
        def square(job: Job) -> int:
            return int(job.payload) ** 2

        first = square.enqueue(3, priority=5)
        many = square.enqueue_many([4, 5], queue="other", delay=60)
        batch = square.enqueue_batch([6, 7], name="sevens")
        assert queue.get(first).queue == "maths" and queue.get(first).priority == 5
        assert [queue.get(i).queue for i in many] == ["other", "other"]
        assert queue.get(many[0]).run_at - queue.get(many[0]).created_at == pytest.approx(60, abs=2)
        assert queue.batch_progress(batch.id).total == 2
        assert square.enqueue(8, unique_key="k") == square.enqueue(9, unique_key="k")
        follow = square.enqueue(2, depends_on=[first])
        assert queue.get(follow).status is JobStatus.WAITING
        Worker(queue, queues=["maths"]).run(burst=True)
        assert queue.get(first).result == 9
        assert [queue.get(i).result for i in batch.job_ids] == [36, 49]


def test_a_registry_task_handle_enqueues_on_the_one_open_queue_of_its_registry(
    tmp_path: Path,
) -> None:
    registry = Registry()

    @registry.task
    def square(job: Job) -> int:
        return int(job.payload) ** 2

    with pytest.raises(TaskNotBound, match=r"task 'square' has no queue to enqueue on"):
        square.enqueue(2)
    first = Queue(tmp_path / "a.db", registry=registry)
    assert first.get(square.enqueue(3)).task == "square"
    second = Queue(tmp_path / "b.db", registry=registry)
    with pytest.raises(
        TaskNotBound,
        match=r"any of 2 open queues .*a\.db.*b\.db.*queue\.enqueue\(square, payload\)",
    ):
        square.enqueue(4)
    assert second.get(second.enqueue(square, 4)).payload == 4  # explicit: always works
    first.close()
    assert second.get(square.enqueue(5)).payload == 5  # a closed queue no longer counts
    second.close()
    third = Queue(tmp_path / "c.db", registry=registry)
    del third
    gc.collect()
    with pytest.raises(TaskNotBound, match="no queue"):  # nor one no longer referenced
        square.enqueue(6)


def test_a_handler_enqueues_the_next_task_through_its_handle(tmp_path: Path) -> None:
    registry = Registry()

    @registry.task
    def first(job: Job) -> int:
        return second.enqueue(int(job.payload) + 1)

    @registry.task
    def second(job: Job) -> int:
        return int(job.payload) * 10

    with Queue(tmp_path / "jobs.db", registry=registry) as queue:
        start = first.enqueue(1)
        Worker(queue).run(burst=True)
        assert queue.get(queue.get(start).result).result == 20


def test_a_handle_is_accepted_where_a_task_name_is(tmp_path: Path) -> None:
    registry = Registry()

    @registry.task
    def part(job: Job) -> None:
        return None

    @registry.task
    def summary(job: Job) -> int:
        return int(job.payload["batch_id"])

    with Queue(tmp_path / "jobs.db", registry=registry) as queue:
        batch = queue.enqueue_batch(part, [1, 2], then=summary)
        assert batch.then_id is not None and queue.get(batch.then_id).task == "summary"
        assert part.enqueue_batch([3], then=summary).then_id is not None
        assert queue.get(queue.enqueue_many(part, [4])[0]).task == "part"


def test_a_handle_from_another_registry_enqueues_under_its_own_options(tmp_path: Path) -> None:
    elsewhere = Registry()

    @elsewhere.task(queue="far", payload_type=Point)
    def remote(job: Job) -> None:
        return None

    producer = Registry()
    producer.register("local", lambda job: None)
    with Queue(tmp_path / "jobs.db", registry=producer) as queue:
        job = queue.get(queue.enqueue(remote, {"x": 1}))  # a handle is never a typo
        assert (job.task, job.queue, job.payload) == ("remote", "far", {"x": 1, "y": 0.0})
        with pytest.raises(PayloadError, match="field 'x' must be an int"):
            queue.enqueue(remote, {"x": "one"})


def test_a_plain_function_is_not_a_task(tmp_path: Path) -> None:
    def loose(job: Job) -> None:
        return None

    with (
        Queue(tmp_path / "jobs.db") as queue,
        pytest.raises(InvalidArgumentType, match="task must be a task name or the handle"),
    ):
        queue.enqueue(loose)  # type: ignore[arg-type]


# --- typed payloads -------------------------------------------------------------------------


def test_a_typed_payload_is_checked_stored_as_json_and_delivered_as_its_type(target: str) -> None:
    seen: list[Any] = []
    with Queue(target) as queue:

        @queue.task(payload_type=Point)
        def move(job: Job) -> float:
            seen.append(job.payload)
            return job.payload.x + job.payload.y

        from_instance = move.enqueue(Point(1, 2.5))
        from_dict = move.enqueue({"x": 3})
        by_name = queue.enqueue("move", {"x": 4, "y": 1})  # by name: checked all the same
        assert queue.get(from_instance).payload == {"x": 1, "y": 2.5}
        assert queue.get(from_dict).payload == {"x": 3, "y": 0.0}  # defaults filled in
        assert queue.get(by_name).payload == {"x": 4, "y": 1.0}
        Worker(queue).run(burst=True)
        assert sorted(seen, key=lambda p: p.x) == [Point(1, 2.5), Point(3, 0.0), Point(4, 1.0)]
        assert [queue.get(i).result for i in (from_instance, from_dict, by_name)] == [3.5, 3, 5]


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"y": 1.0}, "field 'x' is missing"),
        ({"x": 1, "z": 2}, r"field 'z' is not a field of Point \(its fields: x, y\)"),
        ({"x": 1, "yy": 2}, "field 'yy' is not a field of Point.*did you mean 'y'"),
        ({"x": "1"}, "field 'x' must be an int, got str: '1'"),
        ({"x": True}, "field 'x' must be an int, got bool"),
        ({"x": 1, "y": "far"}, "field 'y' must be a number, got str"),
        (5, "the payload must be a Point or a dict of its fields, got int: 5"),
        (None, "the payload must be a Point or a dict of its fields, got NoneType"),
        (Colour.RED, "the payload must be a Point or a dict of its fields, got Colour"),
    ],
)
def test_a_payload_that_does_not_fit_is_refused_naming_the_field(
    tmp_path: Path, payload: Any, message: str
) -> None:
    with Queue(tmp_path / "jobs.db") as queue:

        @queue.task(payload_type=Point)
        def move(job: Job) -> None:
            return None

        with pytest.raises(PayloadError, match=f"task 'move' takes a Point payload: {message}"):
            move.enqueue(payload)
        assert queue.jobs() == []


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"name": "a", "points": [{"x": 1}, {"x": "2"}]},
         r"field 'points\[1\]\.x' must be an int, got str: '2'"),
        ({"name": "a", "points": {}}, "field 'points' must be a list, got dict"),
        ({"name": "a", "points": [], "colour": "green"},
         "field 'colour' must be one of 'red', 'blue', got 'green'"),
        ({"name": "a", "points": [], "origin": {"y": 1}}, "field 'origin.x' is missing"),
        ({"name": "a", "points": [], "origin": 3},
         "field 'origin' must be an object with the fields of Point, got int: 3"),
        ({"name": "a", "points": [], "style": "dotted"},
         "field 'style' must be one of 'solid', 'dashed', got 'dotted'"),
        ({"name": "a", "points": [], "size": [1, 2, 3]}, "field 'size' must have 2 items, got 3"),
        ({"name": "a", "points": [], "tags": {"k": "v"}}, r"field \"tags\['k'\]\" must be an int"),
        ({"name": 1, "points": []}, "field 'name' must be a str, got int"),
    ],
)  # fmt: skip
def test_nested_fields_are_checked_and_named_by_their_path(
    tmp_path: Path, payload: Any, message: str
) -> None:
    with Queue(tmp_path / "jobs.db") as queue:
        queue.task("draw", payload_type=Drawing)(lambda job: None)
        with pytest.raises(PayloadError, match=message):
            queue.enqueue("draw", payload)


def test_nested_values_are_delivered_as_their_types(tmp_path: Path) -> None:
    seen: list[Drawing] = []
    with Queue(tmp_path / "jobs.db") as queue:

        @queue.task(payload_type=Drawing)
        def draw(job: Job) -> None:
            seen.append(job.payload)

        drawing = Drawing("d", [Point(1, 2.0), Point(3)], Colour.BLUE, Point(0), "dashed",
                          (2, 3), {"k": 1})  # fmt: skip
        jid = draw.enqueue(drawing)
        assert queue.get(jid).payload == {
            "name": "d", "points": [{"x": 1, "y": 2.0}, {"x": 3, "y": 0.0}], "colour": "blue",
            "origin": {"x": 0, "y": 0.0}, "style": "dashed", "size": [2, 3], "tags": {"k": 1},
        }  # fmt: skip
        Worker(queue).run(burst=True)
        assert seen == [drawing] and queue.get(jid).status is JobStatus.COMPLETED


def test_a_dataclass_that_refuses_its_values_refuses_the_payload(tmp_path: Path) -> None:
    with Queue(tmp_path / "jobs.db") as queue:
        queue.task("count", payload_type=Positive)(lambda job: None)
        with pytest.raises(PayloadError, match="does not fit Positive: n must be > 0, got 0"):
            queue.enqueue("count", {"n": 0})


def test_a_bad_payload_in_a_batch_is_named_by_its_position(tmp_path: Path) -> None:
    with Queue(tmp_path / "jobs.db") as queue:

        @queue.task(payload_type=Point)
        def move(job: Job) -> None:
            return None

        with pytest.raises(PayloadError, match=r"payload #2: .*field 'x' is missing"):
            move.enqueue_batch([{"x": 1}, Point(2), {}])
        assert queue.jobs() == []


def test_a_typed_follow_up_gets_the_batch_id_in_its_payload(tmp_path: Path) -> None:
    @dataclass
    class Done:
        batch_id: int
        label: str

    seen: list[Done] = []
    with Queue(tmp_path / "jobs.db") as queue:

        @queue.task
        def part(job: Job) -> None:
            return None

        @queue.task(payload_type=Done)
        def summary(job: Job) -> None:
            seen.append(job.payload)

        batch = part.enqueue_batch([1], then=summary, then_payload={"label": "all"})
        with pytest.raises(PayloadError, match="field 'label' is missing"):
            part.enqueue_batch([1], then=summary)
        Worker(queue).run(burst=True)
        assert seen == [Done(batch.id, "all")]


def test_a_stored_payload_that_does_not_fit_fails_the_job_at_once(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    with Queue(path, max_attempts=5) as producer:  # knows no task: checks nothing
        jid = producer.enqueue("move", {"x": "not a number"})
    with Queue(path) as queue:

        @queue.task(payload_type=Point)
        def move(job: Job) -> None:
            raise AssertionError("never called")

        Worker(queue).run(burst=True)
        job = queue.get(jid)
    assert job.status is JobStatus.FAILED and job.attempts == 1  # no retry can change it
    assert job.error is not None and job.error.startswith(
        f"PermanentFailure: the payload of job {jid} (move) does not fit Point: "
        f"field 'x' must be an int"
    )


def test_the_worker_runs_the_converting_handler_sync_or_async(tmp_path: Path) -> None:
    registry = Registry()

    @registry.task(payload_type=Point)
    def plain(job: Job) -> Any:
        return [type(job.payload).__name__, job.payload.x]

    @registry.task(payload_type=Point)
    async def coroutine(job: Job) -> Any:
        await asyncio.sleep(0)
        return [type(job.payload).__name__, job.payload.x]

    assert inspect.iscoroutinefunction(registry.get("coroutine").handler)
    assert not inspect.iscoroutinefunction(registry.get("plain").handler)
    assert registry.get("plain").function is plain.func
    with Queue(tmp_path / "jobs.db", registry=registry) as queue:
        plain.enqueue({"x": 1})
        coroutine.enqueue({"x": 2})
        job = claim_one(queue)
        assert registry.get("plain").handler(job) == ["Point", 1]
        assert job.payload == {"x": 1, "y": 0.0}  # the claimed job itself is unchanged
        assert asyncio.run(registry.get("coroutine").handler(claim_one(queue))) == ["Point", 2]
        ids = [plain.enqueue({"x": 3}), coroutine.enqueue({"x": 4})]
        Worker(queue).run(burst=True)
        assert [queue.get(i).result for i in ids] == [["Point", 3], ["Point", 4]]


def test_registering_a_typed_function_again_is_harmless(tmp_path: Path) -> None:
    registry = Registry()

    def move(job: Job) -> None:
        return None

    registry.task(payload_type=Point)(move)
    registry.task(payload_type=Point)(move)  # a module imported twice
    with pytest.raises(InvalidArgument, match="already registered"):
        registry.task("move", payload_type=Point)(lambda job: None)


@pytest.mark.parametrize("bad", [dict, Point(1), "Point", int])
def test_payload_type_must_be_a_dataclass_or_a_model(bad: Any) -> None:
    with pytest.raises(InvalidArgumentType, match="payload_type must be a dataclass or a pydantic"):
        Registry().task("t", payload_type=bad)


def test_an_annotation_that_cannot_be_resolved_is_not_checked(tmp_path: Path) -> None:
    module = tmp_path / "forward_ref_payloads.py"
    module.write_text(
        textwrap.dedent("""
        from __future__ import annotations
        from dataclasses import dataclass

        @dataclass
        class Order:
            id: int
            customer: Customer  # never defined: the field is taken as it comes
    """)
    )
    spec = importlib.util.spec_from_file_location("forward_ref_payloads", module)
    assert spec is not None and spec.loader is not None
    loaded = importlib.util.module_from_spec(spec)
    sys.modules["forward_ref_payloads"] = loaded
    try:
        spec.loader.exec_module(loaded)
        with Queue(tmp_path / "jobs.db") as queue:
            queue.task("order", payload_type=loaded.Order)(lambda job: None)
            jid = queue.enqueue("order", {"id": 1, "customer": {"any": "thing"}})
            assert queue.get(jid).payload == {"id": 1, "customer": {"any": "thing"}}
            with pytest.raises(PayloadError, match="field 'customer' is missing"):
                queue.enqueue("order", {"id": 1})
    finally:
        del sys.modules["forward_ref_payloads"]


def test_a_pydantic_model_is_a_payload_type(tmp_path: Path) -> None:
    pydantic = pytest.importorskip("pydantic")

    class Quote(pydantic.BaseModel):  # type: ignore[name-defined,misc]
        symbol: str
        price: float
        volume: int = 0

    seen: list[Any] = []
    with Queue(tmp_path / "jobs.db") as queue:

        @queue.task(payload_type=Quote)
        def record(job: Job) -> None:
            seen.append(job.payload)

        first = record.enqueue(Quote(symbol="TCS.NS", price=3500.5))
        second = record.enqueue({"symbol": "INFY.NS", "price": "1500"})  # pydantic coerces
        assert queue.get(first).payload == {"symbol": "TCS.NS", "price": 3500.5, "volume": 0}
        assert queue.get(second).payload == {"symbol": "INFY.NS", "price": 1500.0, "volume": 0}
        with pytest.raises(
            PayloadError, match=r"task 'record' takes a Quote payload: field 'price': .*number"
        ):
            record.enqueue({"symbol": "X", "price": "a lot"})
        with pytest.raises(PayloadError, match="field 'symbol': Field required"):
            record.enqueue({"price": 1})
        Worker(queue).run(burst=True)
    assert [type(q).__name__ for q in seen] == ["Quote", "Quote"]
    assert sorted(q.symbol for q in seen) == ["INFY.NS", "TCS.NS"]


# --- the command line -----------------------------------------------------------------------


def test_the_cli_enqueue_with_app_refuses_an_unknown_task_and_checks_payloads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "handles_cli_app.py").write_text(
        textwrap.dedent("""
        from dataclasses import dataclass
        from sqlitejobq import Registry

        registry = Registry()

        @dataclass
        class Image:
            path: str
            width: int

        @registry.task(payload_type=Image)
        def resize_image(job):
            return job.payload.width
    """)
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    db = str(tmp_path / "jobs.db")
    app = ["--db", db, "--app", "handles_cli_app:registry"]
    assert main(["enqueue", *app, "resize_imge", '{"path": "a.png", "width": 2}']) == 1
    err = capsys.readouterr().err
    assert "unknown task 'resize_imge': did you mean 'resize_image'?" in err
    assert main(["enqueue", *app, "resize_image", '{"path": "a.png"}']) == 1
    assert "field 'width' is missing" in capsys.readouterr().err
    assert main(["enqueue", *app, "resize_image", '{"path": "a.png", "width": 2}']) == 0
    assert main(["enqueue", "--db", db, "resize_imge", "{}"]) == 0  # without --app: unchecked
    capsys.readouterr()
    with Queue(db) as queue:
        assert sorted(job.task for job in queue.jobs()) == ["resize_image", "resize_imge"]
    sys.modules.pop("handles_cli_app", None)


def test_unknown_task_is_a_lookup_error() -> None:
    assert issubclass(UnknownTask, LookupError) and issubclass(TaskNotBound, LookupError)
