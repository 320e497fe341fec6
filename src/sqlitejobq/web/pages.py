"""The dashboard's pages, rendered on the server from the queue's own reads.

Every read is bounded: counts come from the count rows, lists are pages of at most
``PAGE`` rows read along an index, and a job list filtered by what no index serves
(queue, task, error text, a status among many) examines at most ``SCAN`` ids per request
(the page says where it stopped and links to the older ids), so no page scans the whole
table.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..errors import JobNotFound
from ..job import BatchProgress, Job, JobStatus
from ..queue import Queue
from .html import (
    ago,
    badge,
    batch_progress,
    h,
    iso,
    job_progress,
    number,
    pretty,
    query,
    table,
    throughput_chart,
    when,
)
from .metrics import worker_state
from .redact import Redaction

PAGE = 50
SCAN = 100_000
#: The purge form's first value: finished jobs older than a month.
PURGE_DAYS = 30
STATUSES = [s.value for s in JobStatus]
#: What a page shows for a fact that has no value.
_NONE = '<span class="muted">-</span>'


class NotFound(Exception):
    """A page or object that does not exist (404)."""


class BadRequest(Exception):
    """A parameter that is not what the page expects (400)."""


@dataclass(frozen=True)
class Settings:
    """What the operator chose: read-only, what is masked or hidden, refresh and health."""

    read_only: bool = False
    redaction: Redaction = field(default_factory=Redaction)
    refresh: float = 2.0
    max_queued_age: float = 300.0
    title: str = "sqlitejobq"


@dataclass(frozen=True)
class View:
    """One request's context: the queue, the settings, the mount prefix, the CSRF token."""

    queue: Queue
    settings: Settings
    prefix: str
    csrf: str
    now: float

    @property
    def hides(self) -> bool:
        """True when payloads, results, messages and error text are not shown at all."""
        return self.settings.redaction.hide

    def shown(self, value: Any) -> Any:
        """A payload or result as the operator allows it to be shown."""
        return self.settings.redaction.value(value)

    def text(self, text: str | None) -> str:
        """Text a job or its code wrote (a name, a key), secrets masked."""
        return "" if text is None else self.settings.redaction.text(text)

    def message(self, text: str | None) -> str | None:
        """A progress message: masked, or None when content is hidden."""
        return None if text is None or self.hides else self.settings.redaction.text(text)

    def error(self, text: str) -> str:
        """An error: masked, or its type alone when content is hidden."""
        return self.settings.redaction.error(text)

    def url(self, path: str, **params: Any) -> str:
        """A link under the dashboard's prefix, escaped for an attribute."""
        return h(self.prefix + path + query(params))

    def action(
        self,
        path: str,
        label: str,
        question: str,
        *,
        danger: bool = False,
        fields: dict[str, Any] | None = None,
        inputs: str = "",
    ) -> str:
        """A POST button with its CSRF token (and ``inputs``, rendered fields the operator
        fills in); confirmed in the browser, or by a page."""
        if self.settings.read_only:
            return ""
        hidden = "".join(
            f'<input type="hidden" name="{h(k)}" value="{h(v)}">'
            for k, v in (fields or {}).items()
            if v not in (None, "")
        )
        return (
            f'<form class="inline" method="post" action="{self.url(path)}" '
            f'data-confirm="{h(question)}"><input type="hidden" name="csrf" value="{h(self.csrf)}">'
            f'<input type="hidden" name="confirm" value="">{hidden}{inputs}'
            f'<button class="{"danger" if danger else "act"}" type="submit">{h(label)}</button>'
            f"</form>"
        )


def layout(view: View, here: str, title: str, body: str, *, notice: str = "") -> str:
    """The page around a body: navigation, the database shown, the live-update script."""
    links = [
        ("", "Overview"),
        ("/jobs", "Jobs"),
        ("/batches", "Batches"),
        ("/workers", "Workers"),
        ("/schedules", "Schedules & limits"),
    ]
    nav = "".join(
        f'<a href="{view.url(path or "/")}"{" class=here" if path == here else ""}>{h(name)}</a>'
        for path, name in links
    )
    mode = ' · <span class="status stopped">read-only</span>' if view.settings.read_only else ""
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{h(title)} · {h(view.settings.title)}</title><link rel=icon href='data:,'>"
        f'<link rel="stylesheet" href="{view.url("/static/dashboard.css")}">'
        f'<script defer src="{view.url("/static/dashboard.js")}"></script></head>'
        f'<body data-refresh="{view.settings.refresh:g}"><header>'
        f'<a class="brand" href="{view.url("/")}">{h(view.settings.title)}</a><nav>{nav}</nav>'
        f'<span class="target">{h(view.queue.target)}{mode}</span></header>'
        f"<main>{notice}<h1>{h(title)}</h1>{body}</main></body></html>"
    )


# --- overview ---------------------------------------------------------------------------


def overview(view: View) -> str:
    """Counts, backlog age, workers, lock waits, the last hour's throughput, batches."""
    q = view.queue
    stats = q.stats()
    totals = {s.value: stats.total(s) for s in JobStatus}
    workers = q.workers(limit=200)
    alive = [w for w in workers if worker_state(w, view.now) == "alive"]
    dead = [w for w in workers if worker_state(w, view.now) == "dead"]
    age = stats.oldest_queued_age
    lock = stats.workers_lock
    shown = ("queued", "processing", "waiting", "failed", "completed")
    labels = {"waiting": "waiting for dependencies"}
    lock_waits = (
        f"lock waits ({number(lock.lock_retries)} busy retries, {number(lock.busy_errors)} gave up)"
    )
    cards = [
        *((number(totals[s]), labels.get(s, s), view.url("/jobs", status=s)) for s in shown),
        ("-" if age is None else ago(age), "oldest due job waiting", None),
        (f"{len(alive)} / {len(dead)}", "workers alive / dead", view.url("/workers")),
        (f"{lock.lock_wait_seconds:.2f} s", lock_waits, None),
    ]
    card_html = "".join(
        f'<div class="card"><div class="n">{a if u is None else f"<a href={u}>{a}</a>"}</div>'
        f'<div class="l">{h(label)}</div></div>'
        for a, label, u in cards
    )
    points = q.throughput(60)
    done = sum(p.completed for p in points)
    failed = sum(p.failed for p in points)
    chart = (
        f"<h2>Finished in the last hour: {number(done)} completed, {number(failed)} failed</h2>"
        '<div class="legend"><span><i style="background:var(--ok)"></i>completed</span>'
        '<span><i style="background:var(--bad)"></i>failed</span></div>'
        f"{throughput_chart(points)}"
    )
    statuses = ["queued", "processing", "waiting", "completed", "failed", "cancelled"]
    names = sorted({*stats.counts, *stats.paused})
    rows = [
        _queue_row(view, name, stats.counts.get(name, {}), statuses, stats.paused.get(name))
        for name in names
    ]
    counts = (
        table(["queue", *statuses, "state"], rows, numeric=statuses)
        if rows
        else '<p class="muted">No jobs yet.</p>'
    )
    batches = q.batches(limit=5)
    recent = _batch_table(view, batches) if batches else '<p class="muted">No batches yet.</p>'
    purge = view.action(
        "/actions/purge",
        "Purge",
        "Delete the finished jobs older than that, for good?",
        danger=True,
        inputs=(
            "<label>Delete completed, failed and cancelled jobs that finished more than "
            f'<input type="number" name="older_than_days" value="{PURGE_DAYS}" min="0" '
            'max="36500" step="any" required size="5"> days ago</label> '
        ),
    )
    body = (
        f'<div id="overview-cards" class="cards" data-live>{card_html}</div>'
        f'<div id="overview-chart" data-live>{chart}</div>'
        f'<div id="overview-counts" data-live><h2>Jobs by queue and status</h2>{counts}</div>'
        f'<div id="overview-batches" data-live><h2>Recent batches</h2>{recent}</div>'
        + (f'<h2>Clean up</h2><div class="actions">{purge}</div>' if purge else "")
    )
    return layout(view, "", "Overview", body)


def _queue_row(
    view: View, name: str, by: dict[str, int], statuses: list[str], paused_at: float | None
) -> str:
    """A queue's row of the overview: its count of jobs in each status, linked to them, and
    whether workers claim from it, with the button that pauses or resumes it."""
    cells = "".join(
        f'<td class="num"><a href="{view.url("/jobs", queue=name, status=s)}">'
        f"{number(by.get(s, 0))}</a></td>"
        for s in statuses
    )
    if paused_at is None:
        state = badge("active")
        button = view.action(
            "/actions/pause", "Pause", queue_question("pause", name), fields={"queue": name}
        )
    else:
        state = f"{badge('paused')} {when(paused_at, view.now)}"
        button = view.action(
            "/actions/resume", "Resume", queue_question("resume", name), fields={"queue": name}
        )
    link = f"<a href='{view.url('/jobs', queue=name)}'>{h(name)}</a>"
    return f"<tr data-queue='{h(name)}'><td>{link}</td>{cells}<td>{state} {button}</td></tr>"


def queue_question(action: str, name: str) -> str:
    """What the pause or resume button of queue ``name`` asks before it posts."""
    if action == "pause":
        return (
            f"Pause queue {name}? No worker claims its jobs until it is resumed; running "
            "jobs finish."
        )
    return f"Resume queue {name}? Workers claim its jobs again at once."


# --- jobs -------------------------------------------------------------------------------


def jobs(view: View, params: dict[str, str]) -> str:
    """Jobs matching the filters, newest first, a page at a time by id cursor."""
    filters = job_filters(params, hides=view.hides)
    before = _int(params, "before")
    q = view.queue
    newest = q.max_job_id()
    start = before if before is not None else (newest or 0) + 1
    scan = None if _index_served(filters) else SCAN
    found = q.jobs(**filters, before=start, scan=scan, limit=PAGE)
    floor = 1 if scan is None else max(1, start - scan)
    status_opts = "".join(
        f"<option{' selected' if params.get('status') == s else ''}>{h(s)}</option>"
        for s in STATUSES
    )
    error_filter = ""  # searching hidden text would reveal it
    if not view.hides:
        error_filter = (
            '<label>error contains<input name="error" '
            f'value="{h(params.get("error"))}" size="18"></label>'
        )
    form = (
        f'<form class="filters" method="get" action="{view.url("/jobs")}">'
        f'<label>status<select name="status"><option value="">any</option>{status_opts}'
        "</select></label>"
        f'<label>queue<input name="queue" value="{h(params.get("queue"))}" size="10"></label>'
        f'<label>task<input name="task" value="{h(params.get("task"))}" size="14"></label>'
        f'<label>batch<input name="batch" value="{h(params.get("batch"))}" size="6"></label>'
        f'{error_filter}<button type="submit">Filter</button>'
        f'<a href="{view.url("/jobs")}">clear</a></form>'
    )
    keep = {k: params.get(k) for k in ("status", "queue", "task", "batch", "error")}
    pager = []
    if before is not None:
        pager.append(f'<a href="{view.url("/jobs", **keep)}">« newest</a>')
    if len(found) == PAGE:
        pager.append(f'<a href="{view.url("/jobs", **keep, before=found[-1].id)}">older »</a>')
    elif floor > 1:
        pager.append(
            f'<span class="muted">Looked at ids {number(floor)}-{number(start - 1)}.</span> '
            f'<a href="{view.url("/jobs", **keep, before=floor)}">search older ids »</a>'
        )
    bulk = ""
    if params.get("status") == "failed":
        bulk = view.action(
            "/actions/retry-failed",
            "Retry all failed jobs matching this filter",
            "Retry every failed job that matches this filter?",
            fields={k: v for k, v in keep.items() if k != "status"},
        )
    rows = _job_table(view, found)
    body = (
        f"{form}<div class=actions>{bulk}</div>"
        f'<div id="jobs-list" data-live>{rows}</div>'
        f'<div class="pager">{" ".join(pager)}</div>'
    )
    return layout(view, "/jobs", "Jobs", body)


def _job_table(view: View, found: list[Job]) -> str:
    if not found:
        return '<p class="muted">No job matches.</p>'
    rows = []
    for job in found:
        status = job.status.value
        if status == "processing":
            detail = job_progress(job.progress, view.message(job.progress_message))
        elif job.error:
            detail = f'<span class="err">{h(_first_line(view.error(job.error), 140))}</span>'
        else:
            detail = h(view.message(job.progress_message))
        retry_at = (
            f' <span class="muted">retry {when(job.run_at, view.now)}</span>'
            if status == "queued" and job.attempts and job.run_at > view.now
            else ""
        )
        rows.append(
            f'<tr data-job="{job.id}"><td class="num"><a href="{view.url(f"/jobs/{job.id}")}">'
            f"{job.id}</a></td><td>{h(job.task)}</td><td>{h(job.queue)}</td>"
            f"<td>{badge(status)}{retry_at}</td>"
            f'<td class="num">{job.attempts}/{job.max_attempts}</td>'
            f"<td>{when(job.created_at, view.now)}</td><td>{detail}</td></tr>"
        )
    return table(
        ["id", "task", "queue", "status", "attempts", "created", "progress / error"],
        rows,
        numeric=["id", "attempts"],
    )


def job(view: View, job_id: int) -> str:
    """One job in full: facts, payload, result, error and its timeline."""
    q = view.queue
    try:
        j = q.get(job_id)
    except JobNotFound:
        raise NotFound(f"no job with id {job_id}") from None
    status = j.status.value
    actions = []
    if status in ("failed", "cancelled"):
        actions.append(view.action(f"/jobs/{j.id}/retry", "Retry", f"Retry job {j.id}?"))
    if status in ("queued", "processing", "waiting"):
        actions.append(
            view.action(f"/jobs/{j.id}/cancel", "Cancel", f"Cancel job {j.id}?", danger=True)
        )
    waits_on, waited_by = q.dependencies(j.id)
    cancelling = " · cancel requested" if j.cancel_requested and status == "processing" else ""
    batch_link = _NONE
    if j.batch_id is not None:
        batch_link = f'<a href="{view.url(f"/batches/{j.batch_id}")}">{j.batch_id}</a>'
    unique_key = _NONE
    if j.unique_key:
        unique_key = _hidden() if view.hides else h(view.text(j.unique_key))
    facts = [
        ("status", badge(status) + cancelling),
        ("task", h(j.task)),
        ("queue", h(j.queue)),
        ("priority", str(j.priority)),
        ("attempts", f"{j.attempts} of {j.max_attempts}"),
        ("batch", batch_link),
        ("created", when(j.created_at, view.now)),
        ("runs at" if status == "queued" else "ran at", when(j.run_at, view.now)),
        ("started", when(j.started_at, view.now)),
        ("finished", when(j.finished_at, view.now)),
        ("worker", h(j.worker) if j.worker else _NONE),
        ("lease until", when(j.lease_until, view.now) if status == "processing" else _NONE),
        ("unique key", unique_key),
    ]
    if waits_on:
        facts.append(("waits on", ", ".join(_job_link(view, i) for i in waits_on)))
    if waited_by:
        facts.append(("waited on by", ", ".join(_job_link(view, i) for i in waited_by)))
    if status == "processing" or j.progress:
        facts.append(("progress", job_progress(j.progress, view.message(j.progress_message))))
    dl = "".join(f"<dt>{h(k)}</dt><dd>{v}</dd>" for k, v in facts)
    if view.hides:
        payload = '<p class="muted">Payloads are hidden on this dashboard.</p>'
    else:
        payload = (
            f"<details><summary>show</summary><pre>{pretty(view.shown(j.payload))}</pre></details>"
        )
    result = ""
    if status == "completed":
        result = "<h2>Result</h2>" + (
            '<p class="muted">Results are hidden on this dashboard.</p>'
            if view.hides
            else f"<pre>{pretty(view.shown(j.result))}</pre>"
        )
    error = ""
    if j.error:
        error = f'<h2>Error</h2><pre class="err">{h(view.error(j.error))}</pre>'
        if j.traceback and not view.hides:
            error += (
                f"<details><summary>Traceback</summary>"
                f"<pre>{h(view.text(j.traceback))}</pre></details>"
            )
    events = q.timeline(j.id)
    rows = []
    for e in events:
        detail = ""
        if e.error:
            detail = f'<span class="err">{h(_first_line(view.error(e.error), 200))}</span>'
            if e.traceback and not view.hides:
                detail += (
                    f"<details><summary>traceback</summary>"
                    f"<pre>{h(view.text(e.traceback))}</pre></details>"
                )
        rows.append(
            f"<tr><td>{h(iso(e.at, precise=True))}</td><td>{h(e.event)}</td>"
            f'<td class="num">{"" if e.attempt is None else e.attempt}</td>'
            f"<td>{h(e.worker or '')}</td><td>{h(e.outcome or '')}</td><td>{detail}</td></tr>"
        )
    timeline = table(
        ["at (UTC)", "event", "attempt", "worker", "moved to", "error"], rows, numeric=["attempt"]
    )
    body = (
        f'<div class="actions">{"".join(actions)}</div>'
        f'<div id="job-facts" data-live><dl class="facts">{dl}</dl>{error}{result}</div>'
        f"<h2>Payload</h2>{payload}"
        f'<div id="job-timeline" data-live><h2>Timeline</h2>{timeline}</div>'
    )
    return layout(view, "/jobs", f"Job {j.id}: {j.task}", body)


# --- batches ----------------------------------------------------------------------------


def batches(view: View, params: dict[str, str]) -> str:
    """Batches, newest first, each with its live progress bar."""
    before = _int(params, "before")
    found = view.queue.batches(limit=PAGE, before=before)
    listing = _batch_table(view, found) if found else '<p class="muted">No batches.</p>'
    pager = ""
    if len(found) == PAGE:
        pager = f'<a href="{view.url("/batches", before=found[-1].batch_id)}">older »</a>'
    body = f'<div id="batches-list" data-live>{listing}</div><div class="pager">{pager}</div>'
    return layout(view, "/batches", "Batches", body)


def _batch_table(view: View, found: list[BatchProgress]) -> str:
    rows = [
        f'<tr data-batch="{b.batch_id}"><td class="num">'
        f'<a href="{view.url(f"/batches/{b.batch_id}")}">'
        f"{b.batch_id}</a></td><td>{h(view.text(b.name))}</td><td>{batch_progress(b)}</td>"
        f'<td class="num">{number(b.queued)}</td><td class="num">{number(b.processing)}</td>'
        f'<td class="num">{number(b.waiting)}</td><td class="num">{number(b.completed)}</td>'
        f'<td class="num">{_failed_link(view, b)}</td><td class="num">{number(b.cancelled)}</td>'
        f"<td>{when(b.created_at, view.now)}</td></tr>"
        for b in found
    ]
    counts = ["queued", "processing", "waiting", "completed", "failed", "cancelled"]
    return table(["id", "name", "progress", *counts, "created"], rows, numeric=["id", *counts])


def _failed_link(view: View, b: BatchProgress) -> str:
    if not b.failed:
        return "0"
    link = view.url("/jobs", batch=b.batch_id, status="failed")
    return f'<a class="err" href="{link}">{number(b.failed)}</a>'


def batch(view: View, batch_id: int, params: dict[str, str]) -> str:
    """One batch: its progress, its failures, its jobs."""
    q = view.queue
    try:
        b = q.batch_progress(batch_id)
    except JobNotFound:
        raise NotFound(f"no batch with id {batch_id}") from None
    failures = q.jobs(batch_id=batch_id, status="failed", limit=PAGE)
    after = _int(params, "after")  # in enqueue order: the batch's work front is near the top
    members = q.jobs(batch_id=batch_id, limit=PAGE, after=after, oldest_first=True)
    retry = ""
    if b.failed:
        retry = view.action(
            "/actions/retry-failed",
            f"Retry the {b.failed} failed jobs",
            f"Retry every failed job of batch {b.batch_id}?",
            fields={"batch": b.batch_id},
        )
    pager = ""
    if len(members) == PAGE:
        pager = f'<a href="{view.url(f"/batches/{batch_id}", after=members[-1].id)}">next »</a>'
    summary = (
        f"{batch_progress(b)}<p>{number(b.total)} jobs: {number(b.queued)} queued, "
        f"{number(b.processing)} processing, {number(b.waiting)} waiting, "
        f"{number(b.completed)} completed, {number(b.failed)} failed, "
        f"{number(b.cancelled)} cancelled · created {when(b.created_at, view.now)}</p>"
    )
    body = (
        f'<div id="batch-summary" data-live>{summary}</div><div class="actions">{retry}</div>'
        f'<div id="batch-failures" data-live><h2>Failures</h2>'
        f"{_job_table(view, failures) if failures else '<p class=muted>None.</p>'}</div>"
        f'<div id="batch-jobs" data-live><h2>Jobs, in enqueue order</h2>'
        f"{_job_table(view, members)}</div>"
        f'<div class="pager">{pager}</div>'
    )
    name = f" ({view.text(b.name)})" if b.name else ""
    return layout(view, "/batches", f"Batch {b.batch_id}{name}", body)


# --- workers, schedules and limits ------------------------------------------------------


def workers(view: View) -> str:
    """Workers as they last reported, with their lock waits."""
    found = view.queue.workers(limit=200)
    rows = [
        f"<tr><td>{h(w.id)}</td><td>{badge(worker_state(w, view.now))}</td><td>{h(w.hostname)}</td>"
        f'<td class="num">{w.pid}</td><td>{h(w.queues)}</td><td class="num">{w.concurrency}</td>'
        f"<td>{when(w.started_at, view.now)}</td><td>{when(w.last_seen, view.now)}</td>"
        f'<td class="num">{number(w.jobs_completed)}</td>'
        f'<td class="num">{number(w.jobs_failed)}</td>'
        f'<td class="num">{number(w.writes)}</td><td class="num">{number(w.lock_retries)}</td>'
        f'<td class="num">{w.lock_wait_seconds:.3f}</td>'
        f'<td class="num">{number(w.busy_errors)}</td></tr>'
        for w in found
    ]
    facts = ["worker", "state", "host", "pid", "queues", "threads", "started", "last seen"]
    counters = ["completed", "failed", "writes", "busy retries", "lock wait s", "gave up"]
    listing = (
        table([*facts, *counters], rows, numeric=["pid", "threads", *counters])
        if rows
        else '<p class="muted">No worker has run on this database yet.</p>'
    )
    note = (
        '<p class="muted">A worker is dead when it has not reported for a minute without '
        "saying it stopped; its jobs come back when their leases expire.</p>"
    )
    return layout(
        view, "/workers", "Workers", f'<div id="workers-list" data-live>{listing}</div>{note}'
    )


def schedules(view: View) -> str:
    """Periodic tasks, limits in use, and jobs waiting for their dependencies."""
    q = view.queue
    found = q.schedules()
    rows = [
        f"<tr><td>{h(s.name)}</td><td>{h(s.task)}</td><td><code>{h(s.every)}</code></td>"
        f"<td>{h(s.timezone)}</td><td>{when(s.last_slot, view.now)}</td>"
        f"<td>{_job_link(view, s.last_job_id) if s.last_job_id else ''} "
        f"{badge(s.last_status) if s.last_status else ''}</td>"
        f"<td>{when(s.next_slot, view.now) if s.next_slot else _unknown_here()}</td>"
        f"<td>{when(s.declared_at, view.now)}</td></tr>"
        for s in found
    ]
    sched = (
        table(
            [
                "name",
                "task",
                "every",
                "timezone",
                "last slot",
                "last job",
                "next slot",
                "declared by a worker",
            ],
            rows,
        )
        if rows
        else '<p class="muted">No periodic task has been declared.</p>'
    )
    limits = q.limits()
    lrows = [
        f"<tr><td>{h(x.key)}</td><td>{h(x.task)}</td>"
        f'<td class="num">{"" if x.limit is None else x.limit}</td><td>{h(x.rate or "")}</td>'
        f'<td class="num">{number(x.queued)}</td><td class="num">{number(x.processing)}</td>'
        f'<td class="num">{number(x.starts_last_hour)}</td></tr>'
        for x in limits
    ]
    limit_table = (
        table(
            ["key", "task", "at once", "rate", "queued", "processing", "starts last hour"],
            lrows,
            numeric=["at once", "queued", "processing", "starts last hour"],
        )
        if lrows
        else '<p class="muted">No limited task has jobs queued or processing.</p>'
    )
    waiting = q.jobs(status="waiting", limit=PAGE)
    body = (
        f'<div id="schedules" data-live><h2>Periodic tasks</h2>{sched}</div>'
        f'<div id="limits" data-live><h2>Limits in use</h2>{limit_table}</div>'
        f'<div id="dependencies" data-live><h2>Jobs waiting for their dependencies</h2>'
        f"{_job_table(view, waiting) if waiting else '<p class=muted>None.</p>'}</div>"
    )
    return layout(view, "/schedules", "Schedules, limits and dependencies", body)


def _unknown_here() -> str:
    return (
        '<span class="muted" title="start the dashboard with --app to know the '
        'schedules declared in code">not known here</span>'
    )


# --- confirmation and results of actions ------------------------------------------------


def confirm(view: View, path: str, question: str, fields: dict[str, str]) -> str:
    """The page that asks before an action, for a browser that did not run the script."""
    hidden = "".join(
        f'<input type="hidden" name="{h(k)}" value="{h(v)}">'
        for k, v in fields.items()
        if k not in ("confirm", "csrf")
    )
    body = (
        f"<p>{h(question)}</p><form method=post action='{view.url(path)}'>"
        f"<input type=hidden name=csrf value='{h(view.csrf)}'>"
        f"<input type=hidden name=confirm value=yes>{hidden}"
        f'<button class="danger" type="submit">Yes, do it</button> '
        f'<a href="{view.url("/")}">No, go back</a></form>'
    )
    return layout(view, "", "Confirm", body)


def message(view: View, title: str, text: str, *, status: int = 200) -> str:
    """A page that says one thing (an error, a refusal)."""
    notice = f'<div class="notice{" bad" if status >= 400 else ""}">{h(text)}</div>'
    return layout(view, "", title, "", notice=notice)


# --- helpers ----------------------------------------------------------------------------


def job_filters(params: dict[str, str], *, hides: bool = False) -> dict[str, Any]:
    """The filters of a jobs page or bulk action, checked (BadRequest names a bad one).
    ``hides``: error text is hidden, so searching it (which would reveal it) is refused."""
    filters: dict[str, Any] = {}
    status = params.get("status") or None
    if status is not None and status not in STATUSES:
        raise BadRequest(f"status must be one of {', '.join(STATUSES)}, got {status!r}")
    filters["status"] = status
    for key in ("queue", "task", "error"):
        filters[key] = params.get(key) or None
    filters["batch_id"] = _int(params, "batch")
    if hides and filters["error"]:
        raise BadRequest("the error filter is off: this dashboard hides error text")
    return filters


def _index_served(filters: dict[str, Any]) -> bool:
    """Whether an index walks straight to the matches, a page's worth of rows and no more:
    no filter (the newest ids), failed or cancelled jobs (their own index), one batch (the
    batch index); a filter on queue, task or error text examines rows, so it gets a window."""
    if filters["queue"] or filters["task"] or filters["error"]:
        return False
    return filters["status"] in (None, "failed", "cancelled") or filters["batch_id"] is not None


def _int(params: dict[str, str], key: str) -> int | None:
    raw = params.get(key)
    if raw in (None, ""):
        return None
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"{key} must be a whole number, got {raw!r}") from None
    if value < 1:
        raise BadRequest(f"{key} must be >= 1, got {value}")
    return value


def _hidden() -> str:
    return '<span class="muted">hidden</span>'


def _job_link(view: View, job_id: int) -> str:
    return f'<a href="{view.url(f"/jobs/{job_id}")}">{job_id}</a>'


def _first_line(text: str, width: int) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= width else line[: width - 1] + "…"
