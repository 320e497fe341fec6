"""What the dashboard masks: secret field names by their parts, credentials inside any
text (URLs, DSNs, key=value pairs, HTTP credentials), the operator's words, hidden text;
and control, format and bidi characters shown visibly."""

from __future__ import annotations

import sys
import unicodedata

import pytest

from sqlitejobq.errors import InvalidArgument
from sqlitejobq.web.html import h
from sqlitejobq.web.redact import DEFAULT_REDACT, REDACTED, Redaction, name_parts

SECRET_NAMES = [
    "password", "db_password", "dbPassword", "DB_PASSWORD", "aws_secret_access_key",
    "AWSSecretAccessKey", "github_token", "githubToken", "githubtoken", "X-Api-Key", "api.key",
    "apikey", "client-secret", "clientSecret", "secret_key", "pwd", "db_pwd", "jwt", "id_jwt",
    "session_token", "sessionid", "Authorization", "basic_auth", "cookie", "set-cookie",
    "private_key", "passphrase", "db_pass", "otp", "refresh_token", "credentials",
]  # fmt: skip
PLAIN_NAMES = ["user", "symbol", "author", "authored_at", "compass", "passenger", "keyboard",
               "unique_key", "primary_key", "monkey", "n", "email", "url", "host"]  # fmt: skip


@pytest.mark.parametrize("name", SECRET_NAMES)
def test_a_name_with_a_secret_word_in_any_spelling_is_masked(name: str) -> None:
    assert Redaction.of(None).secret_name(name)


@pytest.mark.parametrize("name", PLAIN_NAMES)
def test_a_name_that_only_looks_like_one_is_shown(name: str) -> None:
    assert not Redaction.of(None).secret_name(name)


def test_names_are_split_at_separators_and_camel_case() -> None:
    assert name_parts("X-Api-Key") == name_parts("xApiKey") == ["x", "api", "key"]
    assert name_parts("AWSSecretAccessKey") == ["aws", "secret", "access", "key"]
    assert name_parts("db.password_2") == ["db", "password", "2"]


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("could not connect to postgresql://app:hunter2@db:5432/jobs", "hunter2"),
        ("mysql://root:s3cr3t-pw@10.0.0.5:3306/app", "s3cr3t-pw"),
        ("redis://:only-a-password@cache:6379/0", "only-a-password"),
        ("GET https://api.example.com/v1?user=ann&password=pw-in-query&page=2", "pw-in-query"),
        ("url=https://h/?sslpassword=nested-secret&x=1", "nested-secret"),
        ("host=db port=5432 password=libpq-style dbname=jobs", "libpq-style"),
        ("KeyError: {'user': 'ann', 'api_key': 'ak-123456'}", "ak-123456"),
        ('{"client_secret": "with spaces in it", "n": 1}', "with spaces in it"),
        ("headers: Authorization: Bearer eyJhbGciOi.payload.sig", "eyJhbGciOi.payload.sig"),
        ("sent token=abcdef123456; retrying", "abcdef123456"),
        ("AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG", "wJalrXUtnFEMI/K7MDENG"),
    ],
)
def test_secrets_inside_text_are_masked_and_the_rest_is_kept(text: str, secret: str) -> None:
    assert Redaction.of(None).text(text) == text.replace(secret, REDACTED)


def test_text_without_credentials_is_unchanged() -> None:
    redaction = Redaction.of(None)
    for text in ["postgresql://app@db/jobs", "ValueError: bad input at https://example.com:443/x",
                 "ratio: 0.5, symbol=TCS.NS", "line 1\n  line 2"]:  # fmt: skip
        assert redaction.text(text) == text


def test_payloads_are_masked_at_any_depth_and_in_their_strings() -> None:
    payload = {"db": {"DSN": "postgresql://u:pw-in-dsn@h/db", "dbPassword": "x"},
               "items": [{"jwt": "a.b.c"}, "mysql://r:pw-in-list@h/"],
               "symbol": "TCS.NS"}  # fmt: skip
    shown = Redaction.of(None).value(payload)
    assert shown == {"db": {"DSN": f"postgresql://u:{REDACTED}@h/db", "dbPassword": REDACTED},
                     "items": [{"jwt": REDACTED}, f"mysql://r:{REDACTED}@h/"],
                     "symbol": "TCS.NS"}  # fmt: skip


def test_the_operators_words_add_to_the_defaults_unless_told_to_replace_them() -> None:
    added = Redaction.of(["card"])
    assert added.secret_name("password") and added.secret_name("creditCard")
    assert added.secret_name("card_number") and not added.secret_name("discard")
    assert added.text("card=4111-1111 password=pw") == f"card={REDACTED} password={REDACTED}"
    alone = Redaction.of(["card"], defaults=False)
    assert not alone.secret_name("password") and alone.secret_name("card")
    assert alone.text("postgresql://u:pw@h/db") == "postgresql://u:pw@h/db"
    assert set(DEFAULT_REDACT) <= set(added.words)


def test_a_function_runs_after_the_defaults() -> None:
    seen = []

    def custom(value: object) -> object:
        seen.append(value)
        return {"custom": True}

    assert Redaction.of(custom).value({"password": "pw", "n": 1}) == {"custom": True}
    assert seen == [{"password": REDACTED, "n": 1}]


def test_bad_redact_options_are_refused_naming_the_value() -> None:
    with pytest.raises(InvalidArgument, match=r"not one string: write redact=\['card'\]"):
        Redaction.of("card")
    with pytest.raises(InvalidArgument, match="must be text, got 5"):
        Redaction.of([5])  # type: ignore[list-item]
    with pytest.raises(InvalidArgument, match="no letter or digit"):
        Redaction.of(["--"])


def test_hidden_errors_keep_their_type_only() -> None:
    hidden = Redaction.of(None, hide=True)
    assert hidden.error("RuntimeError: cannot open postgresql://u:pw@h/db") == (
        "RuntimeError (message hidden)"
    )
    assert hidden.error("no type here") == "(error text hidden)"
    assert Redaction.of(None).error("RuntimeError: x password=pw") == (
        f"RuntimeError: x password={REDACTED}"
    )


def test_control_format_and_bidi_characters_are_shown_visibly() -> None:
    assert h("invoice\u202egnp.exe") == "invoice[U+202E]gnp.exe"
    assert h("a\u200bb\x1b[31mc\u2066d") == "a[U+200B]b[U+001B][31mc[U+2066]d"
    assert h("line 1\n\tline 2\r\n") == "line 1\n\tline 2\r\n"
    assert h("café 東京 <b>") == "café 東京 &lt;b&gt;"


def test_every_invisible_character_of_this_python_is_escaped() -> None:
    invisible = [chr(cp) for cp in range(sys.maxunicode + 1)
                 if unicodedata.category(chr(cp)) in ("Cc", "Cf", "Cs", "Zl", "Zp")
                 and chr(cp) not in "\t\n\r"]  # fmt: skip
    shown = h("".join(invisible))
    assert shown == "".join(f"[U+{ord(c):04X}]" for c in invisible)
