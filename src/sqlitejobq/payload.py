"""Payloads and results: JSON text that decodes back to an equal value, or a PayloadError
that names what would be lost."""

from __future__ import annotations

import json
from typing import Any

from .errors import PayloadError


def encode_json(value: Any, what: str, max_bytes: int) -> str:
    """``value`` as compact JSON text that decodes back to an equal value; PayloadError
    naming the problem if it cannot: not JSON, NaN, nested too deeply, a lone surrogate,
    two keys that JSON would merge (``{1: "a", "1": "b"}``), or over ``max_bytes``."""
    if value is None:
        return "null"
    try:
        text = _ENCODER.encode(value)
    except RecursionError:
        raise PayloadError(f"{what} is nested too deeply to encode as JSON") from None
    except (TypeError, ValueError) as exc:
        raise PayloadError(f"{what} must be JSON-serializable: {exc}") from None
    if text.isascii():
        size = len(text)
    else:
        try:
            size = len(text.encode("utf-8"))
        except UnicodeEncodeError as exc:
            raise PayloadError(
                f"{what} is not valid Unicode text: {text[exc.start : exc.end]!r} is a lone "
                f"surrogate, which JSON text cannot carry"
            ) from None
    if size > max_bytes:
        raise PayloadError(f"{what} is {size} bytes as JSON, over the limit of {max_bytes}")
    problem = _json_problem(value)
    if problem is not None:
        raise PayloadError(f"{what} {problem}")
    return text


#: Built once: ``json.dumps`` with options builds an encoder per call.
_ENCODER = json.JSONEncoder(allow_nan=False, separators=(",", ":"), ensure_ascii=False)
_JSON_KEYS = {True: "true", False: "false", None: "null"}
#: The deepest nesting of lists and objects a payload or result may have. Decoding JSON
#: recurses in Python's C stack; a fixed bound, well inside the interpreter's recursion
#: limit, keeps what was stored readable from any caller.
MAX_JSON_DEPTH = 100


def _json_problem(value: Any) -> str | None:
    """What JSON would lose of ``value``, if anything: nesting deeper than MAX_JSON_DEPTH,
    or two keys of one mapping that become the same text.

    JSON object keys are text, so ``json.dumps`` turns 1, 1.0, True and None into "1",
    "1.0", "true" and "null"; a mapping that also has that text as a key would lose one.
    """
    if type(value) not in _CONTAINERS and not isinstance(value, dict | list | tuple):
        return None
    if type(value) is dict:  # the usual payload: flat, with text keys
        for key, child in value.items():
            if (
                type(key) is not str
                or type(child) in _CONTAINERS
                or isinstance(child, dict | list | tuple)
            ):
                break
        else:
            return None
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            return f"is nested deeper than {MAX_JSON_DEPTH} levels"
        if isinstance(item, dict):
            for key in item:
                if type(key) is not str:
                    collision = _colliding_keys(item)
                    if collision is not None:
                        return collision
                    break
            children = item.values()
        else:
            children = item
        for child in children:
            if type(child) in _CONTAINERS or isinstance(child, dict | list | tuple):
                stack.append((child, depth + 1))
    return None


_CONTAINERS = frozenset({dict, list, tuple})


def _colliding_keys(mapping: dict[Any, Any]) -> str | None:
    seen: dict[str, Any] = {}
    for key in mapping:
        if isinstance(key, str):
            text = key
        elif key is None or isinstance(key, bool):
            text = _JSON_KEYS[key]
        else:
            text = json.dumps(key)
        if text in seen:
            return (
                f"has keys {seen[text]!r} and {key!r}, which are both {json.dumps(text)} "
                f"in JSON: one would silently replace the other"
            )
        seen[text] = key
    return None
