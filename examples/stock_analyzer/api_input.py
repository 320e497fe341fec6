"""What the HTTP API accepts, and the errors that refuse the rest before anything is read or
stored: ids in paths and queries, query parameters, and the body of an analysis request.

Every refusal is an ``ApiError``: an HTTP status and a ``detail`` that names the bad value and
what is expected, with fields a program can read where they help (``missing``,
``available``).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterable, Callable, Sequence
from functools import partial
from typing import Annotated, Any

from fastapi import Request
from pydantic import BeforeValidator, WithJsonSchema

from .batches import MAX_SYMBOLS
from .prices import validate_symbol
from .service import MAX_ID, check_id
from .words import count, shown

__all__ = [
    "EXAMPLE_BODY",
    "MAX_BODY_BYTES",
    "ApiError",
    "BatchId",
    "JobId",
    "only_query",
    "read_body",
    "symbols_of_body",
]

#: What an analysis request looks like, for messages.
EXAMPLE_BODY = '{"symbols": ["TCS.NS", "INFY.NS"]}'
#: The largest body read: far above any list of MAX_SYMBOLS symbols, so a long list is told
#: how many symbols it has, yet a body of gigabytes is never read into memory.
MAX_BODY_BYTES = 1024 * 1024
#: At most this many problems are named in one error; the rest are counted.
LISTED_PROBLEMS = 5


class ApiError(Exception):
    """A refused request: its HTTP status, what was wrong, and fields for programs."""

    def __init__(self, status: int, detail: str, **fields: Any) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.fields = fields

    def content(self) -> dict[str, Any]:
        """The JSON body of the error response."""
        return {"detail": self.detail, **self.fields}


def _id_type(what: str) -> Any:
    """An id parameter: decimal digits naming 1..MAX_ID (what ids of both engines can be),
    refused with a message naming ``what``, the value and the range; documented as such."""
    return Annotated[
        int,
        BeforeValidator(partial(check_id, what=what)),
        WithJsonSchema({"type": "integer", "minimum": 1, "maximum": MAX_ID}),
    ]


JobId = _id_type("job_id")
BatchId = _id_type("batch_id")


def only_query(*names: str) -> Callable[[Request], None]:
    """A dependency that refuses query parameters other than ``names``, and any of them given
    twice: a misspelt ``?batchid=3`` would otherwise be ignored, and answer another question."""

    def check(request: Request) -> None:
        given = request.query_params
        unknown = [name for name in dict.fromkeys(given.keys()) if name not in names]
        if unknown:
            takes = f"takes only {', '.join(names)}" if names else "takes no query parameter"
            raise ApiError(422, f"unknown query parameter {', '.join(map(shown, unknown))}: "
                           f"{request.url.path} {takes}")  # fmt: skip
        for name in names:
            values = given.getlist(name)
            if len(values) > 1:
                raise ApiError(422, f"{name} is given {len(values)} times "
                               f"({', '.join(map(shown, values))}): give it once")  # fmt: skip

    return check


async def read_body(request: Request) -> bytes:
    """The request's body, refused with 413 past ``MAX_BODY_BYTES`` before it is all read."""
    declared = request.headers.get("content-length", "")
    too_large = ApiError(413, f"the body is larger than {MAX_BODY_BYTES} bytes: a batch holds "
                         f"at most {MAX_SYMBOLS} symbols, such as {EXAMPLE_BODY}")  # fmt: skip
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    stream: AsyncIterable[bytes] = request.stream()
    async for chunk in stream:
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


def symbols_of_body(body: bytes, content_type: str | None) -> list[str]:
    """The symbols of an analysis request's body, upper-cased, in their order; ApiError (415
    for a body that is not JSON, else 422) naming everything wrong with it."""
    media = (content_type or "").split(";")[0].strip().lower()
    # no Content-Type is read as JSON, as FastAPI does; any other type is a mistake
    if media and media != "application/json" and not media.endswith("+json"):
        raise ApiError(415, f"the body must be JSON, sent with Content-Type: application/json; "
                       f"got Content-Type: {shown(content_type)}")  # fmt: skip
    if not body.strip():
        raise ApiError(422, f"the body is empty: send a JSON object such as {EXAMPLE_BODY}")
    data = _json(body)
    if not isinstance(data, dict):
        raise ApiError(422, f"the body must be a JSON object such as {EXAMPLE_BODY}, got "
                       f"{_json_type(data)}")  # fmt: skip
    unknown = [key for key in data if key != "symbols"]
    if unknown:
        fields = ", ".join(json.dumps(key) for key in unknown)
        raise ApiError(422, f"unknown {'field' if len(unknown) == 1 else 'fields'} {fields}: "
                       f'the body takes only "symbols", such as {EXAMPLE_BODY}')  # fmt: skip
    if "symbols" not in data:
        raise ApiError(422, f'the body has no "symbols": send a JSON object such as '
                       f"{EXAMPLE_BODY}")  # fmt: skip
    return _symbols(data["symbols"])


def _json(body: bytes) -> Any:
    """The body decoded as JSON, an object naming a key twice refused (which one counts
    would be a guess)."""
    try:
        text = body.decode("utf-8")  # JSON travels as UTF-8 (RFC 8259)
    except UnicodeDecodeError as exc:
        raise ApiError(422, f"the body is not valid JSON: it is not UTF-8 text ({exc.reason} "
                       f"at byte {exc.start})") from None  # fmt: skip
    try:
        return json.loads(text, object_pairs_hook=_object)
    except json.JSONDecodeError as exc:
        raise ApiError(422, f"the body is not valid JSON: {exc.msg} at line {exc.lineno} "
                       f"column {exc.colno}") from None  # fmt: skip
    except RecursionError:  # the parser's stack ends long before the size limit does
        raise ApiError(422, f"the body nests arrays or objects too deeply: send a JSON object "
                       f"such as {EXAMPLE_BODY}") from None  # fmt: skip


def _object(pairs: Sequence[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise ApiError(422, f"the body names {json.dumps(key)} twice in one object: "
                           f"give each field once")  # fmt: skip
        seen[key] = value
    return seen


def _symbols(value: Any) -> list[str]:
    """The checked list of ``"symbols"``: an array of 1..MAX_SYMBOLS distinct valid symbols."""
    if not isinstance(value, list):
        raise ApiError(422, f'"symbols" must be an array of strings, such as ["TCS.NS"], got '
                       f"{_json_type(value)}")  # fmt: skip
    if not value:
        raise ApiError(422, f'"symbols" must not be empty: name 1 to {MAX_SYMBOLS} symbols')
    if len(value) > MAX_SYMBOLS:
        raise ApiError(422, f'"symbols" has {count(len(value), "symbol")}: a batch holds at '
                       f"most {MAX_SYMBOLS}")  # fmt: skip
    problems: list[str] = []
    symbols: list[str] = []
    first: dict[str, int] = {}
    for n, item in enumerate(value):
        if not isinstance(item, str):
            problems.append(f"symbols[{n}] must be a string, got {_json_type(item)}")
            continue
        try:
            symbol = validate_symbol(item)
        except ValueError as exc:
            problems.append(f"symbols[{n}]: {exc}")
            continue
        if symbol in first:
            # job_ids follow the order of symbols: a repeat would leave the two lists unaligned
            problems.append(f"symbols[{n}] {shown(item)} repeats symbols[{first[symbol]}] "
                            f"{shown(value[first[symbol]])}: name each symbol once")  # fmt: skip
            continue
        first[symbol] = n
        symbols.append(symbol)
    if problems:
        listed = "; ".join(problems[:LISTED_PROBLEMS])
        if len(problems) > LISTED_PROBLEMS:
            listed += f"; and {count(len(problems) - LISTED_PROBLEMS, 'more problem')}"
        raise ApiError(422, listed)
    return symbols


def _json_type(value: Any) -> str:
    """What a decoded JSON value is, in JSON's words, with the value when it is short."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"the boolean {json.dumps(value)}"
    if isinstance(value, int | float):
        return f"the number {shown(value)}"
    if isinstance(value, str):
        return f"the string {shown(value)}"
    return "an array" if isinstance(value, list) else "an object"
