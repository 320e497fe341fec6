"""The sqlitejobq command on every engine: every subcommand, --json, exit statuses, --help."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sqlitejobq import JobStatus, Queue
from sqlitejobq.backends import library_schema
from sqlitejobq.cli import build_parser, main

from .conftest import Database, only_on
from .integration import limited_apps

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = ["worker", "enqueue", "status", "schedules", "jobs", "show", "retry", "cancel",
            "update", "pause", "resume", "purge", "migrate", "copy", "web"]  # fmt: skip


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def db(target: str) -> str:
    """The --db of the test: a SQLite file, or a PostgreSQL URL naming the test's schema."""
    return target


def test_enqueue_then_show_and_jobs(capsys: pytest.CaptureFixture[str], db: str) -> None:
    code, out, _ = cli(capsys, "enqueue", "--db", db, "analyze_stock", '{"symbol": "TCS.NS"}',
                       "--priority", "5", "--queue", "stocks", "--max-attempts", "2")  # fmt: skip
    assert code == 0
    job_id = int(out)
    _, out, _ = cli(capsys, "show", str(job_id), "--db", db, "--json")
    shown = json.loads(out)
    assert shown["payload"] == {"symbol": "TCS.NS"} and shown["status"] == "queued"
    assert (shown["priority"], shown["queue"], shown["max_attempts"]) == (5, "stocks", 2)
    code, out, _ = cli(capsys, "show", str(job_id), "--db", db)
    assert "task" in out and "analyze_stock" in out and '"TCS.NS"' in out
    code, out, _ = cli(capsys, "jobs", "--db", db)
    header, row = out.splitlines()
    assert header.split()[:4] == ["id", "task", "queue", "status"]
    assert row.split()[:4] == [str(job_id), "analyze_stock", "stocks", "queued"]


def test_enqueue_with_delay_and_unique_key(capsys: pytest.CaptureFixture[str], db: str) -> None:
    _, first, _ = cli(capsys, "enqueue", "--db", db, "t", "--unique-key", "k", "--delay", "5m")
    _, second, _ = cli(capsys, "enqueue", "--db", db, "t", "--unique-key", "k")
    assert first == second
    with Queue(db) as queue:
        job = queue.get(int(first))
        assert job.run_at - job.created_at == pytest.approx(300, abs=1)


def test_enqueue_with_an_expiry(capsys: pytest.CaptureFixture[str], db: str) -> None:
    code, out, _ = cli(capsys, "enqueue", "--db", db, "t", "--expires", "1s")
    assert code == 0
    time.sleep(1.2)
    with Queue(db) as queue:
        assert queue.claim("w") == []
        assert queue.get(int(out)).status is JobStatus.CANCELLED
    code, _, err = cli(capsys, "enqueue", "--db", db, "t", "--expires", "0")
    assert code == 1 and "expires must be > 0" in err


def test_enqueue_with_dependencies(capsys: pytest.CaptureFixture[str], db: str) -> None:
    _, first, _ = cli(capsys, "enqueue", "--db", db, "t")
    code, second, _ = cli(capsys, "enqueue", "--db", db, "t", "--depends-on", first.strip(),
                          "--on-dependency-failure", "run", "--json")  # fmt: skip
    assert code == 0 and json.loads(second)["status"] == "waiting"
    code, _, err = cli(capsys, "enqueue", "--db", db, "t", "--depends-on", "9999")
    assert code == 1 and err.startswith("sqlitejobq: error: depends_on: no job has id 9999")
    assert len(err.strip().splitlines()) == 1


def test_status_shows_limits_and_enqueue_with_app_applies_them(
    capsys: pytest.CaptureFixture[str], db: str
) -> None:
    app = "tests.integration.limited_apps:registry"
    for _ in range(4):
        assert cli(capsys, "enqueue", "--db", db, "--app", app, "limited", "{}")[0] == 0
    with Queue(db, registry=limited_apps.registry) as queue:
        assert len(queue.claim("w", limit=10)) == 3  # the task's limit
    code, out, _ = cli(capsys, "status", "--db", db, "--app", app)
    assert code == 0
    lines = out.splitlines()
    header = next(line for line in lines if line.startswith("limited "))
    assert header.split()[:2] == ["limited", "processing"]
    row = lines[lines.index(header) + 1].split()
    assert row[:4] == ["limited", "3", "3", "1"]  # key, processing, limit, queued (held)
    code, out, _ = cli(capsys, "status", "--db", db, "--json")
    [limit] = json.loads(out)["limits"]
    assert (limit["key"], limit["processing"], limit["queued"]) == ("limited", 3, 1)
    assert limit["limit"] is None  # without --app the maximum is not known here


def test_status_counts_by_queue_and_status(capsys: pytest.CaptureFixture[str], db: str) -> None:
    with Queue(db) as queue:
        queue.enqueue_many("t", [1, 2, 3], queue="a")
        queue.enqueue("t", queue="b")
        [job] = queue.claim("w", queues=["a"])
        queue.fail(job, "x", retry=False)
    code, out, _ = cli(capsys, "status", "--db", db)
    assert code == 0
    lines = out.splitlines()
    table = lines[lines.index("") + 1 :]
    assert table[0].split() == ["queue", "queued", "processing", "completed", "failed",
                                "cancelled", "waiting"]  # fmt: skip
    assert table[1].split() == ["a", "2", "0", "0", "1", "0", "0"]
    assert table[2].split() == ["b", "1", "0", "0", "0", "0", "0"]
    assert "oldest due job waiting" in out and "lock waits" in out
    code, out, _ = cli(capsys, "status", "--db", db, "--json")
    data = json.loads(out)
    assert data["by_status"]["queued"] == 3 and data["counts"]["a"]["failed"] == 1
    assert data["workers_lock"]["busy_errors"] == 0


def test_jobs_filters_and_json(capsys: pytest.CaptureFixture[str], db: str) -> None:
    with Queue(db) as queue:
        batch = queue.enqueue_batch("t", [1, 2])
        queue.enqueue("other")
    _, out, _ = cli(capsys, "jobs", "--db", db, "--batch", str(batch.id), "--json")
    assert sorted(j["id"] for j in json.loads(out)) == batch.job_ids
    _, out, _ = cli(capsys, "jobs", "--db", db, "--task", "other", "--json")
    assert [j["task"] for j in json.loads(out)] == ["other"]
    _, out, _ = cli(capsys, "jobs", "--db", db, "--status", "failed")
    assert out.strip() == "no jobs"


def test_stored_text_reaches_the_terminal_shown_not_obeyed(
    capsys: pytest.CaptureFixture[str], db: str
) -> None:
    # an error and a payload holding escape sequences, a bell, a bidi override, a line break
    with Queue(db) as queue:
        job_id = queue.enqueue("t", {"note": "\u202eevil"}, max_attempts=1)
        [claimed] = queue.claim("w")
        queue.fail(claimed, "boom\x1b[2J\x1b]0;owned\x07\u202e\nsecond line")
    _, out, _ = cli(capsys, "jobs", "--db", db)
    assert "\x1b" not in out and "\u202e" not in out and "\x07" not in out
    assert "boom[U+001B][2J[U+001B]]0;owned[U+0007][U+202E]" in out
    assert len(out.strip().splitlines()) == 2  # the header and one row
    _, out, _ = cli(capsys, "show", str(job_id), "--db", db)
    assert "\x1b" not in out and "\x07" not in out and "\u202e" not in out
    assert "[U+202E]\nsecond line" in out  # line breaks kept here
    assert '"note": "[U+202E]evil"' in out
    _, out, _ = cli(capsys, "show", str(job_id), "--db", db, "--json")
    assert json.loads(out)["payload"] == {"note": "\u202eevil"}  # JSON carries it as it is


def test_update_changes_a_waiting_job_and_refuses_a_started_one(
    capsys: pytest.CaptureFixture[str], db: str
) -> None:
    with Queue(db) as queue:
        job_id = queue.enqueue("t")
        started_id = queue.enqueue("t")
        queue.claim("w", limit=1)  # the first job: processing
    code, out, _ = cli(capsys, "update", str(started_id), "--priority", "9", "--queue", "vip",
                       "--delay", "5m", "--json", "--db", db)  # fmt: skip
    assert code == 0
    shown = json.loads(out)
    assert (shown["priority"], shown["queue"], shown["status"]) == (9, "vip", "queued")
    assert 290 < shown["run_at"] - time.time() <= 301
    code, out, _ = cli(capsys, "update", str(started_id), "--delay", "0", "--db", db)
    assert code == 0 and f"job {started_id} queued in queue vip, priority 9" in out
    code, _, err = cli(capsys, "update", str(job_id), "--priority", "1", "--db", db)
    assert code == 1 and f"job {job_id} is processing" in err
    code, _, err = cli(capsys, "update", str(job_id), "--db", db)
    assert code == 2 and "give --priority, --queue or --delay" in err
    code, _, err = cli(capsys, "update", "999", "--priority", "1", "--db", db)
    assert code == 1 and "no job with id 999" in err


def test_retry_cancel_and_their_errors(capsys: pytest.CaptureFixture[str], db: str) -> None:
    with Queue(db) as queue:
        failed_id = queue.enqueue("t", max_attempts=1)
        done_id = queue.enqueue("t")
        waiting_id = queue.enqueue("t")
        failed, done = queue.claim("w", limit=2)
        queue.fail(failed, "broken")
        queue.complete(done)
    assert cli(capsys, "retry", str(failed_id), "--db", db)[0] == 0
    code, _, err = cli(capsys, "retry", str(done_id), "--db", db)
    assert code == 1
    assert err.strip() == (f"sqlitejobq: error: job {done_id} is completed; only failed or "
                           f"cancelled jobs can be retried")  # fmt: skip
    code, out, _ = cli(capsys, "cancel", str(waiting_id), "--db", db)
    assert code == 0 and "cancelled" in out
    code, _, err = cli(capsys, "cancel", str(waiting_id), "--db", db)
    assert code == 1 and "already cancelled" in err
    code, _, err = cli(capsys, "cancel", "999", "--db", db)
    assert code == 1 and err.count("\n") == 1 and "no job with id 999" in err
    with Queue(db) as queue:
        assert queue.get(failed_id).status is JobStatus.QUEUED
        assert queue.get(waiting_id).status is JobStatus.CANCELLED


def test_retry_all_failed(capsys: pytest.CaptureFixture[str], db: str) -> None:
    with Queue(db) as queue:
        queue.enqueue_many("t", [1, 2], max_attempts=1)
        for job in queue.claim("w", limit=2):
            queue.fail(job, "x")
    code, out, _ = cli(capsys, "retry", "--all-failed", "--db", db, "--json")
    assert code == 0 and len(json.loads(out)["retried"]) == 2


def test_purge_older_than(capsys: pytest.CaptureFixture[str], db: str) -> None:
    with Queue(db) as queue:
        queue.enqueue("t")
        [job] = queue.claim("w")
        queue.complete(job)
    code, out, _ = cli(capsys, "purge", "--db", db, "--older-than", "7d")
    assert code == 0 and "purged 0" in out
    code, out, _ = cli(capsys, "purge", "--db", db, "--older-than", "0", "--json")
    assert json.loads(out) == {"purged": 1}


def test_migrate_reports_and_applies_app_migrations(
    capsys: pytest.CaptureFixture[str],
    db: str,
    database: Database,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    (tmp_path / "appschema.py").write_text(
        "from sqlitejobq.migrations import Migration\n"
        "MIGRATIONS = [Migration(1, 'notes', 'CREATE TABLE notes (body TEXT);')]\n"
    )
    monkeypatch.chdir(tmp_path)
    library = [m.version for m in library_schema(db)[1]]
    code, out, _ = cli(capsys, "migrate", "--db", db, "--migrations", "appschema:MIGRATIONS",
                       "--namespace", "notes_app", "--dry-run", "--json")  # fmt: skip
    assert json.loads(out) == {"dry_run": True, "applied": {"sqlitejobq": library,
                                                            "notes_app": [1]}}  # fmt: skip
    assert "notes" not in database.tables()
    code, out, _ = cli(capsys, "migrate", "--db", db, "--migrations", "appschema:MIGRATIONS",
                       "--namespace", "notes_app")  # fmt: skip
    assert code == 0 and "notes_app: applied 1" in out
    assert "notes" in database.tables()
    code, out, _ = cli(capsys, "migrate", "--db", db)
    assert "sqlitejobq: applied nothing (up to date)" in out
    with Queue(db) as queue:  # the queue opens what the command migrated
        assert queue.stats().total() == 0


@only_on("postgres", "only a postgresql:// URL carries a password")
def test_a_password_in_the_url_shows_in_no_output_and_no_error(
    capsys: pytest.CaptureFixture[str], db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"{db}&password=pw-in-the-url-7"
    code, out, err = cli(capsys, "status", "--db", url)
    assert code == 0 and "password=***" in out
    code, data, _ = cli(capsys, "status", "--db", url, "--json")
    assert code == 0 and "password=***" in json.loads(data)["database"]
    (tmp_path / "otherapp.py").write_text(
        f"from sqlitejobq import Queue\nqueue = Queue({str(tmp_path / 'other.db')!r})\n"
    )
    monkeypatch.chdir(tmp_path)
    try:
        code, _, refused = cli(capsys, "web", "--db", url, "--app", "otherapp:queue")
    finally:
        sys.modules.pop("otherapp").queue.close()
    assert code == 1 and "differs from the queue's own database" in refused
    assert "pw-in-the-url-7" not in out + err + data + refused


@only_on("sqlite", "--backup copies the SQLite file (PostgreSQL: pg_dump)")
def test_migrate_backup_copies_the_file_before_the_first_change(
    capsys: pytest.CaptureFixture[str], db: str, database: Database, tmp_path: Path
) -> None:
    backup = tmp_path / "b.db"
    code, out, _ = cli(capsys, "migrate", "--db", db, "--backup", str(backup))
    assert code == 0 and "sqlitejobq: applied" in out
    assert backup.exists()
    assert Database("sqlite", str(backup)).tables() == set()  # a copy of the file before


def test_worker_runs_an_app_in_burst(
    capsys: pytest.CaptureFixture[str], db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "tinyapp.py").write_text(
        "from sqlitejobq import Registry\n"
        "registry = Registry()\n"
        "@registry.task('double')\n"
        "def double(job):\n"
        "    return job.payload * 2\n"
    )
    monkeypatch.chdir(tmp_path)
    with Queue(db) as queue:
        ids = queue.enqueue_many("double", [1, 2, 3])
    code, _, _ = cli(capsys, "worker", "--db", db, "--app", "tinyapp:registry", "--burst",
                     "--concurrency", "2")  # fmt: skip
    assert code == 0
    with Queue(db) as queue:
        assert [queue.get(i).result for i in ids] == [2, 4, 6]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["worker", "--app", "nope_module:registry"], "cannot import 'nope_module'"),
        (["worker", "--app", "json:dumps"], "is a function, expected a Registry or a Queue"),
        (["worker", "--app", "no_colon"], "--app must look like MODULE:ATTR"),
        (["enqueue", "t", "{not json"], "payload is not valid JSON"),
        (["show", "1"], "no job with id 1 in"),
    ],
)
def test_errors_are_one_line_with_status_1(
    capsys: pytest.CaptureFixture[str], queue: Queue, db: str, args: list[str], message: str
) -> None:
    if "--db" not in args:
        args = [*args, "--db", db]
    code, _, err = cli(capsys, *args)
    assert code == 1
    assert err.startswith("sqlitejobq: error: ") and message in err
    assert err.count("\n") == 1


@only_on("sqlite", "a path that names no file is SQLite's")
def test_a_missing_database_file_is_one_line_with_status_1(
    capsys: pytest.CaptureFixture[str], engine: str
) -> None:
    code, _, err = cli(capsys, "show", "1", "--db", "/nonexistent/x.db")
    assert code == 1
    assert err == "sqlitejobq: error: database /nonexistent/x.db does not exist\n"


def test_no_database_is_a_clear_error(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SQLITEJOBQ_DB", raising=False)
    code, _, err = cli(capsys, "status")
    assert code == 1 and "pass --db PATH_OR_URL or set $SQLITEJOBQ_DB" in err


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["frobnicate"],
        ["jobs", "--limit", "0"],
        ["jobs", "--status", "stuck"],
        ["purge", "--older-than", "soon"],
        ["retry"],
        ["worker"],
        ["worker", "--app", "a:b", "--concurrency", "0"],
        ["web", "--trusted-origin", "jobs.example.com"],
        ["web", "--allowed-host", "https://jobs.example.com"],
        ["web", "--threads", "0"],
    ],
)
def test_bad_usage_exits_2(capsys: pytest.CaptureFixture[str], args: list[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(args)
    assert exited.value.code == 2
    assert "usage:" in capsys.readouterr().err


@pytest.mark.parametrize(
    "args",
    [
        ["--db"],
        ["--db", "x.db"],
        ["--log-level", "LOUD", "status"],
        ["status", "--log-level", "LOUD"],
        ["--json", "worker", "--app", "a:b"],
        ["worker", "--app", "a:b", "--json"],
    ],
)
def test_bad_usage_of_the_global_options_exits_2(
    capsys: pytest.CaptureFixture[str], args: list[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(args)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: sqlitejobq") and "sqlitejobq" in err.splitlines()[-1]


@pytest.mark.parametrize(
    "args",
    [
        ["--db", "DB", "{command}"],
        ["{command}", "--db", "DB"],
        ["--json", "--db", "DB", "{command}"],
        ["--db", "DB", "{command}", "--json"],
        ["{command}", "--json", "--db", "DB"],
        ["--log-level", "DEBUG", "{command}", "--db", "DB"],
        ["--db", "DB", "{command}", "--log-level", "DEBUG"],
    ],
    ids=lambda args: " ".join(args),
)
@pytest.mark.parametrize("command", ["status", "jobs", "show"])
def test_global_options_go_before_or_after_the_command(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    db: str,
    args: list[str],
    command: str,
) -> None:
    monkeypatch.setenv("SQLITEJOBQ_DB", "/nonexistent/from-the-environment.db")
    with Queue(db) as queue:
        job_id = queue.enqueue("t", {"n": 1})
    line = [db if a == "DB" else a for a in " ".join(args).format(command=command).split()]
    if command == "show":
        line.insert(line.index("show") + 1, str(job_id))
    code, out, err = cli(capsys, *line)
    assert (code, err) == (0, "")
    if "--json" not in line:
        assert out and not out.lstrip().startswith(("{", "["))
        return
    data = json.loads(out)
    if command == "status":
        assert data["by_status"]["queued"] == 1
    elif command == "jobs":
        assert [job["id"] for job in data] == [job_id]
    else:
        assert data["id"] == job_id and data["payload"] == {"n": 1}


def test_a_global_option_after_the_command_wins_over_one_before(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, db: str
) -> None:
    monkeypatch.delenv("SQLITEJOBQ_DB", raising=False)
    with Queue(db) as queue:
        queue.enqueue("t")
    code, out, _ = cli(capsys, "--db", "/nonexistent/x.db", "status", "--db", db, "--json")
    assert code == 0 and json.loads(out)["by_status"]["queued"] == 1
    parser = build_parser()
    args = parser.parse_args(["--db", "a", "--log-level", "INFO", "status", "--db", "b"])
    assert (args.db, args.log_level, args.json) == ("b", "INFO", False)
    args = parser.parse_args(["--log-level", "ERROR", "worker", "--app", "m:r"])
    assert (args.db, args.log_level) == (None, "ERROR")
    args = parser.parse_args(["worker", "--app", "m:r", "--log-level", "ERROR", "--db", "a"])
    assert (args.db, args.log_level) == ("a", "ERROR")


def test_the_worker_takes_its_global_options_before_the_command(
    capsys: pytest.CaptureFixture[str], db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "tinyapp_before.py").write_text(
        "from sqlitejobq import Registry\n"
        "registry = Registry()\n"
        "@registry.task('triple')\n"
        "def triple(job):\n"
        "    return job.payload * 3\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SQLITEJOBQ_DB", raising=False)
    with Queue(db) as queue:
        ids = queue.enqueue_many("triple", [1, 2])
    code, _, _ = cli(capsys, "--log-level", "WARNING", "--db", db, "worker",
                     "--app", "tinyapp_before:registry", "--burst")  # fmt: skip
    assert code == 0
    with Queue(db) as queue:
        assert [queue.get(i).result for i in ids] == [3, 6]


def test_every_command_has_help() -> None:
    parser = build_parser()
    subcommands = next(a for a in parser._actions if a.dest == "command")
    assert sorted(subcommands.choices) == sorted(COMMANDS)  # type: ignore[arg-type]
    for command in COMMANDS:
        text = subcommands.choices[command].format_help()  # type: ignore[index]
        assert text.startswith(f"usage: sqlitejobq {command}") and "--db" in text
        assert "--log-level" in text
        assert ("--json" in text) is (command not in ("worker", "web"))  # they print no table


def test_the_main_help_shows_the_global_options() -> None:
    text = build_parser().format_help()
    for option in ("--db PATH_OR_URL", "--log-level", "--json", "--version"):
        assert option in text
    assert text.index("--db") < text.index("COMMAND ...")


def test_the_console_script_and_module_entry_points(db: str) -> None:
    for command in ([sys.executable, "-m", "sqlitejobq"],):
        done = subprocess.run([*command, "--help"], capture_output=True, text=True, timeout=60,
                              cwd=ROOT, check=False)  # fmt: skip
        assert done.returncode == 0 and "worker" in done.stdout
        done = subprocess.run(
            [*command, "enqueue", "--db", db, "t", '{"a": 1}'],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0 and done.stdout.strip() == "1"
        done = subprocess.run([*command, "show", "7", "--db", db], capture_output=True,
                              text=True, timeout=60, check=False)  # fmt: skip
        assert done.returncode == 1
        assert done.stderr == f"sqlitejobq: error: no job with id 7 in {db}\n"
    script = Path(sys.executable).with_name("sqlitejobq")
    if script.exists():
        done = subprocess.run(
            [str(script), "status", "--db", db, "--json"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0 and json.loads(done.stdout)["by_status"]["queued"] == 1
