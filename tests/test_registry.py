"""Registry: handlers by name with per-task options."""

from __future__ import annotations

import pytest

from sqlitejobq import InvalidArgument, Job, Registry, UnknownTask


def test_task_registers_under_the_given_name_and_keeps_the_function() -> None:
    registry = Registry()

    @registry.task("analyze_stock", max_attempts=3, lease=60, queue="stocks")
    def analyze(job: Job) -> int:
        return 1

    task = registry.get("analyze_stock")
    assert task.handler is analyze.func and task.name == "analyze_stock"
    assert task.options.max_attempts == 3 and task.options.lease == 60.0
    assert task.options.queue == "stocks"
    assert "analyze_stock" in registry and len(registry) == 1
    assert list(registry) == ["analyze_stock"]


def test_bare_decorator_uses_the_function_name() -> None:
    registry = Registry()

    @registry.task
    def send_email(job: Job) -> None:
        return None

    @registry.task()
    def resize(job: Job) -> None:
        return None

    assert list(registry) == ["resize", "send_email"]
    assert registry.options("send_email").max_attempts is None


def test_unknown_task_names_what_is_registered() -> None:
    registry = Registry()
    registry.register("a", lambda job: None)
    with pytest.raises(
        UnknownTask, match=r"no handler is registered for task 'b' \(registered: a\)"
    ):
        registry.get("b")
    assert registry.options("b").max_attempts is None


def test_unknown_task_suggests_the_closest_name_and_counts_a_long_list() -> None:
    registry = Registry()
    registry.register("resize_image", lambda job: None)
    with pytest.raises(
        UnknownTask, match=r"\(registered: resize_image\); did you mean 'resize_image'\?"
    ):
        registry.get("resize_imge")
    for n in range(25):
        registry.register(f"task_{n:02d}", lambda job: None)
    with pytest.raises(UnknownTask, match=r"task_17, task_18 and 6 more\)$"):
        registry.get("x")


def test_a_second_handler_for_one_name_is_refused() -> None:
    registry = Registry()

    def first(job: Job) -> None:
        return None

    registry.register("x", first)
    registry.register("x", first)  # the same handler again is harmless (module reloads)
    with pytest.raises(InvalidArgument, match="already registered"):
        registry.register("x", lambda job: None)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"max_attempts": 0}, "max_attempts must be >= 1"),
        ({"lease": 0}, "lease must be > 0"),
        ({"backoff": -1}, "backoff must be >= 0"),
        ({"queue": "bad queue"}, "queue must be"),
        ({"priority": "high"}, "priority must be an int"),
    ],
)
def test_bad_task_options_are_refused(options: dict[str, object], message: str) -> None:
    with pytest.raises((ValueError, TypeError), match=message):
        Registry().task("t", **options)  # type: ignore[call-overload]


def test_a_handler_must_be_callable() -> None:
    with pytest.raises(InvalidArgument, match="must be callable"):
        Registry().register("t", 42)  # type: ignore[arg-type]
