"""Who may use the dashboard: HTTP basic auth or a bearer token, from the environment or a file.

Credentials never come from the command line (where ``ps`` and shell history show them).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import ipaddress
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..errors import InvalidArgument

USER_ENV = "SQLITEJOBQ_WEB_USER"
PASSWORD_ENV = "SQLITEJOBQ_WEB_PASSWORD"  # noqa: S105 (a variable's name)
TOKEN_ENV = "SQLITEJOBQ_WEB_TOKEN"  # noqa: S105 (a variable's name)


@dataclass(frozen=True)
class Auth:
    """Credentials the dashboard accepts: a user and password (basic auth), a token
    (``Authorization: Bearer TOKEN``, or as the password of basic auth), or both."""

    user: str | None = None
    password: str | None = None
    token: str | None = None

    def __post_init__(self) -> None:
        if (self.user is None) != (self.password is None):
            raise InvalidArgument("basic auth needs both a user and a password")
        if self.password is not None and len(self.password) < 8:
            raise InvalidArgument("the dashboard password must be at least 8 characters long")
        if self.token is not None and len(self.token) < 16:
            raise InvalidArgument("the dashboard token must be at least 16 characters long")
        if self.password is None and self.token is None:
            raise InvalidArgument("Auth needs a user and password, or a token")

    def __repr__(self) -> str:  # never print a secret
        return (
            f"Auth(user={self.user!r}, password={'***' if self.password else None}, "
            f"token={'***' if self.token else None})"
        )

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Auth | None:
        """``$SQLITEJOBQ_WEB_PASSWORD`` (user ``$SQLITEJOBQ_WEB_USER``, default ``admin``)
        and/or ``$SQLITEJOBQ_WEB_TOKEN``; None when neither is set."""
        env = os.environ if environ is None else environ
        password = env.get(PASSWORD_ENV) or None
        token = env.get(TOKEN_ENV) or None
        if password is None and token is None:
            return None
        user = (env.get(USER_ENV) or "admin") if password is not None else None
        if password is not None:
            _named(f"${PASSWORD_ENV}", lambda: cls(user=user, password=password))
        if token is not None:
            _named(f"${TOKEN_ENV}", lambda: cls(token=token))
        return cls(user=user, password=password, token=token)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> Auth:
        """A file of one line: ``user:password`` for basic auth, or a bare token. Refused
        when others than its owner may read it."""
        file = Path(path)
        try:
            mode = file.stat().st_mode
            text = file.read_text(encoding="utf-8")
        except OSError as exc:
            raise InvalidArgument(f"cannot read the auth file {file}: {exc.strerror}") from None
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise InvalidArgument(
                f"the auth file {file} may be read by others (mode {stat.filemode(mode)}): "
                f"chmod 600 it"
            )
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        if len(lines) != 1:
            raise InvalidArgument(
                f"the auth file {file} must hold one line (user:password, or a token), "
                f"got {len(lines)}"
            )
        user, sep, password = lines[0].partition(":")
        if sep:
            return _named(f"the auth file {file}", lambda: cls(user=user, password=password))
        return _named(f"the auth file {file}", lambda: cls(token=lines[0]))

    def check(self, header: str | None) -> str | None:
        """The name of the user the ``Authorization`` header proves, or None. The token as
        a basic-auth password goes with the user name ``token`` (or none), so a name in an
        audit line is always one that was checked."""
        if not header:
            return None
        scheme, _, value = header.partition(" ")
        value = value.strip()
        if scheme.lower() == "bearer":
            return "token" if self.token and _same(value, self.token) else None
        if scheme.lower() != "basic":
            return None
        try:
            decoded = base64.b64decode(value, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        user, sep, password = decoded.partition(":")
        if not sep or not user.isprintable():
            return None
        if (
            self.password is not None
            and self.user is not None
            and _same(user, self.user) & _same(password, self.password)
        ):
            return user
        if self.token is not None and user in ("", "token") and _same(password, self.token):
            return "token"
        return None


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


def is_loopback(host: str) -> bool:
    """True for an address only this machine can reach (127.0.0.0/8, ::1, localhost, and
    127.x.y.z written as an IPv4-mapped IPv6 address)."""
    if host.lower() == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


def printable(text: str) -> str:
    """``text`` for a log line: control characters escaped (``\\n``, ``\\x1b``), so a
    name or path from a request cannot start a line of its own."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _named(source: str, make: Callable[[], Auth]) -> Auth:
    """``make()``, its refusal naming where the credentials came from."""
    try:
        return make()
    except InvalidArgument as exc:
        raise InvalidArgument(f"{source}: {exc}") from None
