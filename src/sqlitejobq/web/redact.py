"""What the dashboard masks before it shows a payload, a result or a text a job wrote.

A field is masked when its name contains a secret word. Names are compared as their parts
(split at ``_``, ``-``, ``.``, spaces and camelCase, any case): a word of five letters or
more matches anywhere in the name with its separators removed (``github_token``,
``X-Api-Key``, ``aws_secret_access_key``), a shorter one only as whole parts (``pwd``,
``db_pass``, ``basic_auth``, but not ``author``). Inside any shown text, a URL's password
(``postgresql://u:pw@h/db``), a secret-named ``key=value`` or ``"key": "value"`` pair
(``?password=``, ``token=...``) and an HTTP ``Bearer``/``Basic`` credential are masked.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from ..errors import InvalidArgument

#: What a masked value is shown as.
REDACTED = "[redacted]"

#: Words of secret names masked unless ``redact_defaults=False`` (see the module's rule).
DEFAULT_REDACT = frozenset(
    {
        "password",
        "passwd",
        "passphrase",
        "pwd",
        "pass",
        "secret",
        "token",
        "jwt",
        "otp",
        "auth",
        "authorization",
        "bearer",
        "cookie",
        "sessionid",
        "credential",
        "api_key",
        "private_key",
        "access_key",
    }
)

#: Below this many letters a word matches whole parts only: "pass" must not mask "compass".
_ANYWHERE = 5
_SEPARATORS = re.compile(r"[^a-z0-9]+")
_PART = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|\d+")
# A repeat that could backtrack is bounded: a long crafted string costs linear time.
#: ``scheme://user:password@``: the password, up to the ``@``.
_URL_PASSWORD = re.compile(r"(?i)\b([a-z][a-z0-9+.-]{0,30}://[^\s:/@?#]{0,256}):([^\s@]{1,256})@")
#: ``name=value``, ``name: value``, ``"name": "value"``: the name, then (if it is secret) its
#: value, quoted or up to a separator.
_KEY = re.compile(
    r"""(?<![A-Za-z0-9_.-])(?P<key>[A-Za-z_][A-Za-z0-9_.-]{0,99})(?P<kq>["']?)[ \t]*[:=][ \t]*"""
)
_VALUE = re.compile(
    r"""(?P<scheme>(?i:bearer|basic)[ \t]+)?"""
    r"""(?:(?P<q>["'])[^"'\n]{0,512}(?P=q)|["']?[^\s"'&;,)}\]]+)"""
)
_HTTP_CREDENTIAL = re.compile(r"(?i)\b(bearer|basic)(\s+)[A-Za-z0-9._~+/=-]{8,4096}")
#: The type at the head of an error ("ValueError: ..."), shown when the text is hidden.
_ERROR_TYPE = re.compile(r"^([A-Za-z_][\w.]{0,199}):")


def name_parts(name: str) -> list[str]:
    """A name's words in lower case: ``X-Api-Key`` and ``xApiKey`` are ``[x, api, key]``."""
    return [part.lower() for part in _PART.findall(name)]


@dataclass(frozen=True)
class Redaction:
    """The masking rules of one dashboard: secret words, text masking, hidden content.

    ``words``: the secret words (the defaults and the operator's); ``text_rules``: mask URL
    passwords and HTTP credentials in text too (the built-in rules beside the words);
    ``custom``: a function applied after them to each payload and result; ``hide``:
    payloads, results, progress messages and error text are not shown at all (an error
    keeps its type).
    """

    words: frozenset[str] = DEFAULT_REDACT
    text_rules: bool = True
    custom: Callable[[Any], Any] | None = None
    hide: bool = False
    _long: tuple[str, ...] = field(init=False, repr=False)
    _short: tuple[tuple[str, ...], ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        long: list[str] = []
        short: list[tuple[str, ...]] = []
        for word in self.words:
            parts = tuple(name_parts(word))
            if not parts:
                raise InvalidArgument(f"redact: {word!r} has no letter or digit to match")
            joined = "".join(parts)
            if len(joined) >= _ANYWHERE:
                long.append(joined)
            else:
                short.append(parts)
        object.__setattr__(self, "_long", tuple(sorted(long)))
        object.__setattr__(self, "_short", tuple(sorted(short)))

    @classmethod
    def of(
        cls,
        redact: Iterable[str] | Callable[[Any], Any] | None,
        *,
        defaults: bool = True,
        hide: bool = False,
    ) -> Redaction:
        """The rules from the dashboard's options: ``redact`` adds words (or a function)
        to the defaults, or stands alone when ``defaults`` is false."""
        custom: Callable[[Any], Any] | None = None
        words: set[str] = set(DEFAULT_REDACT) if defaults else set()
        if callable(redact):
            custom = redact
        elif isinstance(redact, str | bytes):
            raise InvalidArgument(
                f"redact must be a list of field names (or a function), not one string: "
                f"write redact=[{redact!r}]"
            )
        elif redact is not None:
            for word in redact:
                if not isinstance(word, str) or not word.strip():
                    raise InvalidArgument(f"redact: each field name must be text, got {word!r}")
                words.add(word.strip())
        return cls(frozenset(words), text_rules=defaults, custom=custom, hide=hide)

    def secret_name(self, name: object) -> bool:
        """True when a field of this name is masked."""
        joined = _SEPARATORS.sub("", str(name).lower())
        if any(word in joined for word in self._long):
            return True
        if not any(word[0] in joined for word in self._short):  # the common case, cheaply
            return False
        parts = name_parts(str(name))
        return any(_has_run(parts, word) for word in self._short)

    def value(self, value: Any) -> Any:
        """A payload or result as shown: secret-named fields masked at any depth, secrets
        in its strings masked, then the operator's function."""
        masked = self._walk(value)
        return masked if self.custom is None else self.custom(masked)

    def _walk(self, value: Any) -> Any:
        if isinstance(value, dict):
            return {k: REDACTED if self.secret_name(k) else self._walk(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self._walk(v) for v in value]
        if isinstance(value, str):
            return self.text(value)
        return value

    def text(self, text: str) -> str:
        """Free text (an error, a traceback, a message) with the secrets in it masked."""
        if self.text_rules:
            text = _URL_PASSWORD.sub(rf"\1:{REDACTED}@", text)
        shown, at = [], 0
        for pair in _KEY.finditer(text):  # a value may hold pairs: "url=https://h/?pwd=x"
            if pair.start() < at or not self.secret_name(pair["key"]):
                continue
            value = _VALUE.match(text, pair.end())
            if value is not None:
                quote = value["q"] or ""
                scheme = value["scheme"] or ""
                shown.append(f"{text[at : pair.end()]}{scheme}{quote}{REDACTED}{quote}")
                at = value.end()
        shown.append(text[at:])
        text = "".join(shown)
        return _HTTP_CREDENTIAL.sub(rf"\1\2{REDACTED}", text) if self.text_rules else text

    def error(self, text: str) -> str:
        """An error as shown: masked, or when text is hidden, its type alone."""
        if not self.hide:
            return self.text(text)
        head = _ERROR_TYPE.match(text)
        return f"{head[1]} (message hidden)" if head else "(error text hidden)"


def _has_run(parts: list[str], word: tuple[str, ...]) -> bool:
    """True when ``word``'s parts appear one after another among ``parts``."""
    size = len(word)
    return any(tuple(parts[i : i + size]) == word for i in range(len(parts) - size + 1))
