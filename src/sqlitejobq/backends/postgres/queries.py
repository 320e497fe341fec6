"""Every SQL statement of the PostgreSQL backend, by name. Values are always bound parameters.

Conventions:

* psycopg 3 named parameters (``%(name)s``), each cast to its type in the statement, so
  that a ``None`` (sent untyped) or a small Python int (sent as int2) always means the
  same thing and a prepared statement keeps one plan.
* Statements run with ``search_path`` set to the queue's schema (``SET_SEARCH_PATH``), so
  the table names are unqualified and carry the ``sqlitejobq_`` prefix as in SQLite.
* Times are epoch seconds in ``double precision``. Every statement that takes ``%(now)s``
  accepts ``None`` for "the database clock" (see ``NOW``): tests inject a clock,
  production leaves it to the server so that leases and ``run_at`` agree across hosts.
  Durations (``%(lease)s``) are seconds added to that clock. Cut-offs (``cutoff``,
  ``alive_since``, ``dead_before``, ``give_up_before``) are absolute times from the
  caller: ``DB_NOW`` gives the server's clock if the caller wants to compute them from it.
* Rows of jobs come back in the order of ``JOB_COLUMNS`` (the same as sql.JOB_COLUMNS);
  ``cancel_requested`` is a boolean, ``payload`` and ``result`` stay JSON text.
* A write that changes job statuses ends with one ADD_TO_COUNTS and then one
  ADD_TO_BATCH_COUNTS (see "counts" below): that order, once each, after the job rows.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache

from psycopg import sql as pgsql

from ..base import EXPIRED_ERROR as EXPIRED

JOB_COLUMNS = (
    "id, task, queue, payload, status, priority, attempts, max_attempts, progress, "
    "progress_message, result, error, traceback, run_at, created_at, started_at, finished_at, "
    "batch_id, unique_key, worker, lease_until, cancel_requested"
)
_J_COLUMNS = ", ".join("j." + name.strip() for name in JOB_COLUMNS.split(","))

#: Counters are spread over this many rows per key; reads sum them.
COUNT_SHARDS = 16

#: The statement's "now": the injected clock, or the server's. statement_timestamp() is
#: one value for the whole statement and, being STABLE, can bound an index scan;
#: clock_timestamp() is VOLATILE: it differs between the rows and the SET expressions of
#: one statement, and a condition on it can only be a filter (see test_clock_is_an_index_bound).
NOW = (
    "coalesce(%(now)s::double precision, "
    "extract(epoch FROM statement_timestamp())::double precision)"
)

#: The server's clock, read by callers that compute cut-offs or sleep until a time.
DB_NOW = "SELECT extract(epoch FROM clock_timestamp())::double precision"

# --- schema, migrations --------------------------------------------------------------------

#: Run in every transaction of a migrator (or SET once per connection with is_local false).
SET_SEARCH_PATH = (
    "SELECT set_config('search_path', quote_ident(%(schema)s::text), %(is_local)s::boolean)"
)


def create_schema(schema: str) -> pgsql.Composed:
    """CREATE SCHEMA IF NOT EXISTS, for the migrator (after MIGRATION_LOCK: IF NOT EXISTS
    alone races with a concurrent migrator and fails on the catalog's unique index)."""
    return pgsql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(pgsql.Identifier(schema))


#: Serializes migrators of one schema: the first statement of each migration's transaction,
#: key ``migrate_lock_key(schema)``. Released at commit or rollback.
MIGRATION_LOCK = "SELECT pg_advisory_xact_lock(hashtext(%(key)s::text))"

#: The maintenance (purge) lock: whoever gets true purges; the others skip this round.
TRY_MAINTENANCE_LOCK = "SELECT pg_try_advisory_xact_lock(hashtext(%(key)s::text))"


def migrate_lock_key(schema: str) -> str:
    """The advisory-lock key of the schema's migrator."""
    return f"sqlitejobq.migrate.{schema}"


def maintenance_lock_key(schema: str) -> str:
    """The advisory-lock key of the schema's pruner."""
    return f"sqlitejobq.maintenance.{schema}"


MIGRATIONS_TABLE = """
CREATE TABLE IF NOT EXISTS sqlitejobq_migrations (
    namespace  text             NOT NULL,
    version    integer          NOT NULL,
    name       text             NOT NULL,
    checksum   text             NOT NULL,
    applied_at double precision NOT NULL,
    PRIMARY KEY (namespace, version)
)
"""

APPLIED_MIGRATIONS = """
SELECT version, name, checksum, applied_at FROM sqlitejobq_migrations
WHERE namespace = %(namespace)s::text ORDER BY version
"""

RECORD_MIGRATION = f"""
INSERT INTO sqlitejobq_migrations (namespace, version, name, checksum, applied_at)
VALUES (%(namespace)s::text, %(version)s::integer, %(name)s::text, %(checksum)s::text, {NOW})
"""

# --- enqueue ---------------------------------------------------------------------------------

INSERT_BATCH = f"""
INSERT INTO sqlitejobq_batches (name, created_at) VALUES (%(name)s::text, {NOW}) RETURNING id
"""

# Any number of jobs in one statement: parallel arrays, one element per job (run_ats may
# hold NULL: now). Returns one row per input job, in input order: its new id, or NULL
# where an active job (queued or processing) already holds its unique key, or an earlier
# job of the same call does. The ids are drawn from the sequence before the insert, so
# which id belongs to which input never depends on the order rows are processed in (ids
# still ascend with the input). Then, for the NULL rows, ACTIVE_JOBS_WITH_KEYS in a new
# statement (READ COMMITTED: only a new statement sees a holder that committed while the
# insert waited for it); a key whose holder finished in between is inserted again.
INSERT_JOBS = f"""
WITH new_jobs AS MATERIALIZED (
    SELECT nextval('sqlitejobq_jobs_id_seq') AS id, t.*
    FROM unnest(%(tasks)s::text[], %(queues)s::text[], %(payloads)s::text[],
                %(priorities)s::integer[], %(delays)s::double precision[],
                %(max_attempts)s::integer[], %(unique_keys)s::text[], %(limit_keys)s::text[])
         WITH ORDINALITY
         AS t (task, queue, payload, priority, delay, max_attempts, unique_key, limit_key, n)
), clock AS MATERIALIZED (
    SELECT {NOW} AS now
), inserted AS (
    INSERT INTO sqlitejobq_jobs
        (id, task, queue, payload, status, priority, run_at, max_attempts, unique_key,
         limit_key, batch_id, created_at)
    SELECT new_jobs.id, new_jobs.task, new_jobs.queue, new_jobs.payload, 'queued',
           new_jobs.priority, clock.now + new_jobs.delay, new_jobs.max_attempts,
           new_jobs.unique_key, new_jobs.limit_key,
           %(batch_id)s::bigint, clock.now
    FROM new_jobs CROSS JOIN clock
    ORDER BY new_jobs.n
    ON CONFLICT (unique_key)
        WHERE unique_key IS NOT NULL AND status IN ('queued', 'processing', 'waiting')
    DO NOTHING
    RETURNING id
)
SELECT inserted.id FROM new_jobs LEFT JOIN inserted ON inserted.id = new_jobs.id ORDER BY new_jobs.n
"""

# One job of the common enqueue (no batch, no unique key), as ENQUEUE_QUEUED does many but
# with plain parameters (no arrays to build): the job, its count on this connection's shard
# and a NOTIFY of its queue when %(wake)s is not NULL commit together. Returns its id.
ENQUEUE_ONE = f"""
WITH clock AS MATERIALIZED (
    SELECT {NOW} AS now
), inserted AS (
    INSERT INTO sqlitejobq_jobs
        (task, queue, payload, status, priority, run_at, max_attempts, limit_key, created_at)
    SELECT %(task)s::text, %(queue)s::text, %(payload)s::text, 'queued', %(priority)s::integer,
           clock.now + %(delay)s::double precision, %(max_attempts)s::integer,
           %(limit_key)s::text, clock.now
    FROM clock
    RETURNING id
), counted AS (
    INSERT INTO sqlitejobq_counts AS c (queue, status, shard, count)
    VALUES (%(queue)s::text, 'queued', mod(pg_backend_pid(), {COUNT_SHARDS})::smallint, 1)
    ON CONFLICT (queue, status, shard) DO UPDATE SET count = c.count + excluded.count
), woken AS MATERIALIZED (
    SELECT count(pg_notify(%(channel)s::text, %(wake)s::text)) AS n
    WHERE %(wake)s::text IS NOT NULL
)
SELECT inserted.id FROM inserted CROSS JOIN woken
"""

# The common enqueue (no batch, no unique key: every job is inserted) as one statement, so
# one round trip and no BEGIN/COMMIT of its own: the jobs, their counts on this
# connection's shard and the NOTIFY of the queues in %(wake)s (may be empty) commit
# together. Returns the new ids in input order.
ENQUEUE_QUEUED = f"""
WITH new_jobs AS MATERIALIZED (
    SELECT nextval('sqlitejobq_jobs_id_seq') AS id, t.*
    FROM unnest(%(tasks)s::text[], %(queues)s::text[], %(payloads)s::text[],
                %(priorities)s::integer[], %(delays)s::double precision[],
                %(max_attempts)s::integer[], %(limit_keys)s::text[])
         WITH ORDINALITY
         AS t (task, queue, payload, priority, delay, max_attempts, limit_key, n)
), clock AS MATERIALIZED (
    SELECT {NOW} AS now
), inserted AS (
    INSERT INTO sqlitejobq_jobs
        (id, task, queue, payload, status, priority, run_at, max_attempts, limit_key,
         created_at)
    SELECT new_jobs.id, new_jobs.task, new_jobs.queue, new_jobs.payload, 'queued',
           new_jobs.priority, clock.now + new_jobs.delay, new_jobs.max_attempts,
           new_jobs.limit_key, clock.now
    FROM new_jobs CROSS JOIN clock
    ORDER BY new_jobs.n
), counted AS (
    INSERT INTO sqlitejobq_counts AS c (queue, status, shard, count)
    SELECT new_jobs.queue, 'queued', mod(pg_backend_pid(), {COUNT_SHARDS})::smallint, count(*)
    FROM new_jobs
    GROUP BY new_jobs.queue
    ORDER BY new_jobs.queue
    ON CONFLICT (queue, status, shard) DO UPDATE SET count = c.count + excluded.count
), woken AS MATERIALIZED (
    SELECT count(pg_notify(%(channel)s::text, w.queue)) AS n
    FROM unnest(%(wake)s::text[]) AS w (queue)
)
SELECT new_jobs.id FROM new_jobs CROSS JOIN woken ORDER BY new_jobs.n
"""

ACTIVE_JOBS_WITH_KEYS = """
SELECT unique_key, id FROM sqlitejobq_jobs
WHERE unique_key = ANY(%(keys)s::text[]) AND status IN ('queued', 'processing', 'waiting')
"""

# --- claim -------------------------------------------------------------------------------------

# Whether the queue named by the SQL expression {name} is paused (a probe of the primary
# key of the small table of paused queues). The claims and the next-due reads leave a
# paused queue out before reading its jobs, so its backlog costs them nothing.
_PAUSED = (
    "EXISTS (SELECT 1 FROM sqlitejobq_queues AS p"
    " WHERE p.name = {name} AND p.paused_at IS NOT NULL)"
)

_CLAIM = f"""
{{with_clause}}
picked AS MATERIALIZED (
    SELECT c.id
    FROM {{queues}}
    CROSS JOIN LATERAL (
        SELECT id, priority, run_at FROM sqlitejobq_jobs
        WHERE status = 'queued' AND limit_key IS NULL AND queue = q.name AND run_at <= {NOW}
          AND NOT (task = ANY(%(exclude)s::text[]))
        ORDER BY priority DESC, run_at, id
        LIMIT %(limit)s::integer
        FOR UPDATE SKIP LOCKED
    ) AS c
    ORDER BY c.priority DESC, c.run_at, c.id
    LIMIT %(limit)s::integer
), claimed AS (
    UPDATE sqlitejobq_jobs AS j
    SET status = 'processing', attempts = j.attempts + 1, worker = %(worker)s::text,
        lease_until = {NOW} + %(lease)s::double precision, started_at = {NOW}
    WHERE j.id = ANY(ARRAY(SELECT id FROM picked))
    RETURNING {_J_COLUMNS}
)
SELECT {JOB_COLUMNS} FROM claimed ORDER BY priority DESC, run_at, id
"""

# Claim up to %(limit)s due jobs of the queues in %(queues)s (text[]; duplicates and paused
# queues ignored), best first (priority DESC, run_at, id), for %(worker)s, leased for
# %(lease)s seconds. Each queue is read through its own range of the claim index; rows
# another claimer holds are skipped, not waited for. The MATERIALIZED CTE is the fence
# that keeps the planner from joining the UPDATE into the scan (which could update more
# rows than LIMIT). The price of the per-queue ranges: a claim from k queues locks up to
# k * limit rows for the length of its transaction and updates only `limit` of them;
# other claimers skip the rest meanwhile. With one queue it locks exactly what it claims.
CLAIM_FROM_QUEUES = _CLAIM.format(
    with_clause="WITH",
    queues=f"""(SELECT DISTINCT name FROM unnest(%(queues)s::text[]) AS u (name)
          WHERE NOT {_PAUSED.format(name="u.name")}) AS q""",
)

# Every queue: the names of the queues that hold queued jobs come from a skip scan of the
# claim index (one probe per queue), paused ones left out, then as above. Same parameters
# but %(queues)s.
CLAIM_ANY_QUEUE = _CLAIM.format(
    with_clause="""WITH RECURSIVE queue_names (name) AS (
    (SELECT queue FROM sqlitejobq_jobs WHERE status = 'queued' AND limit_key IS NULL
     ORDER BY queue LIMIT 1)
    UNION ALL
    SELECT (SELECT queue FROM sqlitejobq_jobs
            WHERE status = 'queued' AND limit_key IS NULL AND queue > queue_names.name
            ORDER BY queue LIMIT 1)
    FROM queue_names WHERE queue_names.name IS NOT NULL
),""",
    queues=f"""(SELECT name FROM queue_names
          WHERE name IS NOT NULL AND NOT {_PAUSED.format(name="queue_names.name")}) AS q""",
)

QUEUES_WITH_QUEUED_JOBS = f"""
WITH RECURSIVE q (name) AS (
    (SELECT queue FROM sqlitejobq_jobs WHERE status = 'queued' AND limit_key IS NULL
     ORDER BY queue LIMIT 1)
    UNION ALL
    SELECT (SELECT queue FROM sqlitejobq_jobs
            WHERE status = 'queued' AND limit_key IS NULL AND queue > q.name ORDER BY queue LIMIT 1)
    FROM q WHERE q.name IS NOT NULL
)
SELECT name FROM q WHERE name IS NOT NULL AND NOT {_PAUSED.format(name="q.name")}
"""

# --- fenced steps on claimed jobs ----------------------------------------------------------

# A claim is fenced by (id, attempts, worker): a worker whose lease expired and whose job
# was taken over (or rescued) matches no row, so it changes nothing. Under READ COMMITTED
# a step that waited for another transaction's lock re-checks the fence on the row's new
# version, so the fence holds under concurrency too.
_FENCE = (
    "id = %(id)s::bigint AND attempts = %(attempts)s::integer AND worker = %(worker)s::text "
    "AND status = 'processing'"
)

COMPLETE = f"""
UPDATE sqlitejobq_jobs
SET status = CASE WHEN cancel_requested THEN 'cancelled' ELSE 'completed' END,
    result = %(result)s::text, error = NULL, traceback = NULL,
    progress = CASE WHEN cancel_requested THEN progress ELSE 1.0 END,
    progress_message = coalesce(%(message)s::text, progress_message),
    finished_at = {NOW}, lease_until = NULL
WHERE {_FENCE}
RETURNING status, queue, batch_id, id, has_dependents, limit_key, watched
"""

# Any number of completions in one statement, fenced row by row like COMPLETE. Parallel
# arrays ids, attempts, workers, results, messages, finished_ats (NULL elements: now);
# the ids must be distinct. Returns id, status, queue, batch_id of the jobs changed.
COMPLETE_MANY = f"""
WITH done AS (
    SELECT * FROM unnest(%(ids)s::bigint[], %(attempts)s::integer[], %(workers)s::text[],
                         %(results)s::text[], %(messages)s::text[],
                         %(finished_ats)s::double precision[])
        AS d (id, attempts, worker, result, message, finished_at)
)
UPDATE sqlitejobq_jobs AS j
SET status = CASE WHEN j.cancel_requested THEN 'cancelled' ELSE 'completed' END,
    result = done.result, error = NULL, traceback = NULL,
    progress = CASE WHEN j.cancel_requested THEN j.progress ELSE 1.0 END,
    progress_message = coalesce(done.message, j.progress_message),
    finished_at = coalesce(done.finished_at, {NOW}), lease_until = NULL
FROM done
WHERE j.id = ANY(%(ids)s::bigint[])
  AND j.id = done.id AND j.attempts = done.attempts AND j.worker = done.worker
  AND j.status = 'processing'
RETURNING j.id, j.status, j.queue, j.batch_id, j.has_dependents, j.limit_key, j.watched
"""


def _appended(
    event: str,
    outcome: str,
    *,
    attempt: str = "attempts",
    worker: str = "worker",
    started_at: str = "started_at",
    error: str = "NULL::text",
    traceback: str = "NULL::text",
) -> str:
    """The job's history with one entry appended (each argument an SQL expression of this
    module). In an UPDATE's SET, columns are the row's values before the change: those of
    the attempt that ends, while ``outcome`` must say the status it moves to. A statement
    that changes many rows appends to each its own entry."""
    return (
        f"coalesce(history, '[]'::jsonb) || jsonb_build_array(jsonb_build_object("
        f"'event', '{event}'::text, 'at', {NOW}, 'attempt', {attempt}, 'worker', {worker}, "
        f"'started_at', {started_at}, 'error', {error}, 'traceback', {traceback}, "
        f"'outcome', {outcome}))"
    )


# %(status)s is 'queued' (retry %(delay)s seconds from now) or 'failed'.
_FAIL_STATUS = "CASE WHEN cancel_requested THEN 'cancelled' ELSE %(status)s::text END"
_FAIL_ENTRY = _appended(
    "attempt failed", _FAIL_STATUS, error="%(error)s::text", traceback="%(traceback)s::text"
)
FAIL = f"""
UPDATE sqlitejobq_jobs
SET status = {_FAIL_STATUS},
    run_at = CASE WHEN cancel_requested THEN run_at
                  ELSE {NOW} + %(delay)s::double precision END,
    error = %(error)s::text, traceback = %(traceback)s::text, lease_until = NULL,
    unknown_since = NULL,
    progress_message = coalesce(%(message)s::text, progress_message),
    finished_at = CASE WHEN cancel_requested OR %(status)s::text <> 'queued' THEN {NOW} END,
    history = {_FAIL_ENTRY}
WHERE {_FENCE}
RETURNING status, queue, batch_id, id, has_dependents, limit_key, watched
"""

HEARTBEAT = f"""
UPDATE sqlitejobq_jobs SET lease_until = {NOW} + %(lease)s::double precision
WHERE {_FENCE}
RETURNING cancel_requested
"""

SET_PROGRESS = f"""
UPDATE sqlitejobq_jobs
SET progress = %(progress)s::double precision,
    progress_message = coalesce(%(message)s::text, progress_message),
    lease_until = {NOW} + %(lease)s::double precision
WHERE {_FENCE}
RETURNING cancel_requested
"""

# Claimed but never started (a worker stopping): back to the queue, the attempt not counted.
RELEASE = f"""
UPDATE sqlitejobq_jobs
SET status = CASE WHEN cancel_requested THEN 'cancelled' ELSE 'queued' END,
    attempts = attempts - 1, lease_until = NULL, started_at = NULL,
    finished_at = CASE WHEN cancel_requested THEN {NOW} END
WHERE {_FENCE}
RETURNING status, queue, batch_id, id, has_dependents, limit_key, watched
"""

# A claimed job whose task this worker does not know (a rolling deploy): back to the queue
# %(recheck)s seconds from now, the attempt not counted, remembering since when it has been
# unknown; once that is %(window)s seconds ago or more it fails instead. A cancel request
# wins over both. The history records the first hand-back and the end, not the rechecks.
_GIVE_UP = f"coalesce(unknown_since, {NOW}) <= {NOW} - %(window)s::double precision"
_DEFER_STATUS = f"""CASE WHEN cancel_requested THEN 'cancelled'
                  WHEN {_GIVE_UP} THEN 'failed'
                  ELSE 'queued' END"""
_DEFER_ERROR = f"""CASE WHEN cancel_requested THEN error
                 WHEN {_GIVE_UP} THEN %(failed_error)s::text
                 ELSE %(waiting_error)s::text END"""
DEFER_UNKNOWN = f"""
UPDATE sqlitejobq_jobs
SET status = {_DEFER_STATUS},
    attempts = attempts - 1,
    unknown_since = coalesce(unknown_since, {NOW}),
    run_at = {NOW} + %(recheck)s::double precision,
    error = {_DEFER_ERROR},
    lease_until = NULL, started_at = NULL,
    finished_at = CASE WHEN cancel_requested OR {_GIVE_UP} THEN {NOW} END,
    history = CASE WHEN unknown_since IS NULL OR cancel_requested OR {_GIVE_UP}
                   THEN {_appended("deferred", _DEFER_STATUS, error=_DEFER_ERROR)}
                   ELSE history END
WHERE {_FENCE}
RETURNING status, queue, batch_id, id, has_dependents, limit_key, watched
"""

# A handler said "not yet" (raise Snooze): back to the queue, due after %(delay)s, the
# attempt not counted; failed instead once the job was put off %(max_snoozes)s times.
_SNOOZE_ENDS = "(cancel_requested OR snoozes >= %(max_snoozes)s::integer)"
_SNOOZE_STATUS = """CASE WHEN cancel_requested THEN 'cancelled'
                  WHEN snoozes >= %(max_snoozes)s::integer THEN 'failed' ELSE 'queued' END"""
SNOOZE = f"""
UPDATE sqlitejobq_jobs
SET status = {_SNOOZE_STATUS},
    attempts = attempts - CASE WHEN {_SNOOZE_ENDS} THEN 0 ELSE 1 END,
    snoozes = snoozes + 1, run_at = {NOW} + %(delay)s::float8, lease_until = NULL,
    error = CASE WHEN NOT cancel_requested AND snoozes >= %(max_snoozes)s::integer
                 THEN %(error)s::text ELSE error END,
    finished_at = CASE WHEN {_SNOOZE_ENDS} THEN {NOW} END,
    history = {_appended("snoozed", _SNOOZE_STATUS, error="%(note)s::text")}
WHERE {_FENCE}
RETURNING status, queue, batch_id, id, has_dependents, limit_key, watched
"""

# A run that ended without an outcome (lease expired, worker interrupted) counts as an
# attempt: back to the queue while attempts remain, else failed.
_ABANDON_STATUS = """CASE WHEN cancel_requested THEN 'cancelled'
                  WHEN attempts >= max_attempts THEN 'failed'
                  ELSE 'queued' END"""


def _abandon_set(event: str, run_at: str) -> str:
    """The SET of a run that ended without an outcome, recorded in the history as ``event``,
    due again at ``run_at``."""
    return f"""
SET status = {_ABANDON_STATUS},
    run_at = {run_at}, lease_until = NULL, error = %(error)s::text, traceback = NULL,
    unknown_since = NULL,
    finished_at = CASE WHEN cancel_requested OR attempts >= max_attempts THEN {NOW} END,
    history = {_appended(event, _ABANDON_STATUS, error="%(error)s::text")}
"""


ABANDON = f"""
UPDATE sqlitejobq_jobs {_abandon_set("abandoned", f"{NOW} + %(delay)s::float8")}
WHERE {_FENCE}
RETURNING status, queue, batch_id, id, has_dependents, limit_key, watched
"""

# Up to %(limit)s jobs whose lease ended, earliest first; rows another transaction holds
# (a worker completing its job right now, another rescuer) are skipped, not waited for.
RESCUE_EXPIRED = f"""
WITH expired AS MATERIALIZED (
    SELECT id FROM sqlitejobq_jobs
    WHERE status = 'processing' AND lease_until < {NOW}
    ORDER BY lease_until
    LIMIT %(limit)s::integer
    FOR UPDATE SKIP LOCKED
)
UPDATE sqlitejobq_jobs AS j {_abandon_set("lease expired", NOW)}
WHERE j.id = ANY(ARRAY(SELECT id FROM expired))
RETURNING j.id, j.task, j.status, j.attempts, j.max_attempts, j.worker, j.queue, j.batch_id,
          j.has_dependents, j.limit_key, j.watched
"""

# Rescued jobs due later, after their task's backoff.
DELAY_JOBS = f"""
UPDATE sqlitejobq_jobs AS j
SET run_at = {NOW} + d.delay
FROM unnest(%(ids)s::bigint[], %(delays)s::float8[]) AS d (id, delay)
WHERE j.id = d.id AND j.status = 'queued'
"""

# The earliest lease end of a processing job (NULL: none), and the statement's now, so a
# caller on another clock can sleep for (expiry - now).
NEXT_LEASE_EXPIRY = f"""
SELECT (SELECT min(lease_until) FROM sqlitejobq_jobs WHERE status = 'processing'), {NOW}
"""

# --- dependencies ---------------------------------------------------------------------------

# The jobs a new job names in depends_on, flagged as having dependents and locked in id
# order until the enqueue commits (a dependency that finishes meanwhile waits, then sees the
# dependent's rows); the statuses tell which are finished already.
FLAG_DEPENDENCIES = """
WITH locked AS MATERIALIZED (
    SELECT id FROM sqlitejobq_jobs WHERE id = ANY(%(ids)s::bigint[]) ORDER BY id FOR UPDATE
)
UPDATE sqlitejobq_jobs AS j SET has_dependents = true
FROM locked WHERE j.id = locked.id
RETURNING j.id, j.status
"""

WAIT_FOR = """
UPDATE sqlitejobq_jobs
SET status = 'waiting', waiting_on = %(waiting_on)s::integer,
    dependency_policy = %(policy)s::text
WHERE id = %(id)s::bigint
"""

ADD_DEPENDENCIES = """
INSERT INTO sqlitejobq_dependencies (depends_on, job_id)
SELECT d, %(id)s::bigint FROM unnest(%(deps)s::bigint[]) AS d
"""

CANCEL_AT_ENQUEUE = f"""
UPDATE sqlitejobq_jobs SET status = 'cancelled', error = %(error)s::text, finished_at = {NOW}
WHERE id = %(id)s::bigint
"""

# The waiting jobs of finished dependencies (parallel arrays ids, oks: completed or not),
# locked in id order: each counts its finished dependencies off; one that failed or was
# cancelled cancels it (policy 'cancel') or counts as done ('run'). Released jobs are due.
RELEASE_DEPENDENTS = f"""
WITH finished AS (
    SELECT * FROM unnest(%(ids)s::bigint[], %(oks)s::boolean[]) AS f (id, ok)
), counted AS MATERIALIZED (
    SELECT d.job_id, count(*) AS n, bool_or(NOT f.ok) AS bad,
           min(CASE WHEN NOT f.ok THEN f.id END) AS first_bad
    FROM sqlitejobq_dependencies AS d JOIN finished AS f ON f.id = d.depends_on
    GROUP BY d.job_id
), locked AS MATERIALIZED (
    SELECT j.id FROM sqlitejobq_jobs AS j JOIN counted ON counted.job_id = j.id
    WHERE j.status = 'waiting' ORDER BY j.id FOR UPDATE OF j
)
UPDATE sqlitejobq_jobs AS j
SET waiting_on = greatest(0, j.waiting_on - counted.n),
    status = CASE WHEN counted.bad AND j.dependency_policy = 'cancel' THEN 'cancelled'
                  WHEN j.waiting_on - counted.n <= 0 THEN 'queued'
                  ELSE 'waiting' END,
    error = CASE WHEN counted.bad AND j.dependency_policy = 'cancel'
                 THEN 'cancelled: dependency ' || counted.first_bad || ' did not complete'
                 ELSE j.error END,
    finished_at = CASE WHEN counted.bad AND j.dependency_policy = 'cancel' THEN {NOW} END,
    run_at = CASE WHEN j.waiting_on - counted.n <= 0 THEN greatest(j.run_at, {NOW})
                  ELSE j.run_at END
FROM counted, locked
WHERE j.id = locked.id AND counted.job_id = j.id AND j.status = 'waiting'
RETURNING j.status, j.queue, j.batch_id, j.id, j.has_dependents, j.limit_key, j.watched
"""

FORGET_DEPENDENCIES = """
DELETE FROM sqlitejobq_dependencies WHERE depends_on = ANY(%(ids)s::bigint[])
"""

# --- limits ------------------------------------------------------------------------------------

#: Serializes the claims of jobs of the same limit keys (and only those): one
#: transaction-scoped advisory lock per key (``limit_lock_key``), taken in the order of
#: their hashes so that two claimers never wait for each other in a circle; counts read
#: after it stay exact until commit. Parameter %(keys)s: text[] of lock keys.
LOCK_LIMIT_KEYS = """
SELECT count(pg_advisory_xact_lock(h)) FROM (
    SELECT DISTINCT hashtext(k) AS h FROM unnest(%(keys)s::text[]) AS k ORDER BY h
) AS ordered
"""


def limit_lock_key(schema: str, key: str) -> str:
    """The advisory-lock key of one limit key of the schema."""
    return f"sqlitejobq.limit.{schema}.{key}"


LIMITED_RUNNING = """
SELECT limit_key, count(*) FROM sqlitejobq_jobs
WHERE status = 'processing' AND limit_key IS NOT NULL
GROUP BY limit_key
"""

LIMITED_KEYS = """
WITH RECURSIVE keys (name) AS (
    (SELECT limit_key FROM sqlitejobq_jobs
     WHERE status = 'queued' AND limit_key IS NOT NULL ORDER BY limit_key LIMIT 1)
    UNION ALL
    SELECT (SELECT limit_key FROM sqlitejobq_jobs
            WHERE status = 'queued' AND limit_key IS NOT NULL AND limit_key > keys.name
            ORDER BY limit_key LIMIT 1)
    FROM keys WHERE keys.name IS NOT NULL
)
SELECT name FROM keys WHERE name IS NOT NULL
"""

# The best due jobs of each key of %(keys)s, up to its room in %(rooms)s (parallel arrays),
# in one round trip: a probe of the limited index per key; jobs of paused queues skipped.
LIMITED_CANDIDATES = f"""
SELECT c.id, c.priority, c.run_at, r.key
FROM unnest(%(keys)s::text[], %(rooms)s::integer[]) AS r (key, room)
CROSS JOIN LATERAL (
    SELECT id, priority, run_at FROM sqlitejobq_jobs
    WHERE status = 'queued' AND limit_key = r.key AND run_at <= {NOW}
      AND (%(queues)s::text[] IS NULL OR queue = ANY(%(queues)s::text[]))
      AND NOT {_PAUSED.format(name="sqlitejobq_jobs.queue")}
      AND NOT (task = ANY(%(exclude)s::text[]))
    ORDER BY priority DESC, run_at, id LIMIT r.room
) AS c
"""

CLAIM_IDS = f"""
WITH claimed AS (
    UPDATE sqlitejobq_jobs AS j
    SET status = 'processing', attempts = j.attempts + 1, worker = %(worker)s::text,
        lease_until = {NOW} + %(lease)s::double precision, started_at = {NOW}
    WHERE j.id = ANY(%(ids)s::bigint[]) AND j.status = 'queued'
    RETURNING {_J_COLUMNS}
)
SELECT {JOB_COLUMNS} FROM claimed ORDER BY priority DESC, run_at, id
"""

# As on SQLite: a limited task's job that came without its key goes back with it.
HOLD_FOR_LIMIT = """
UPDATE sqlitejobq_jobs
SET status = 'queued', attempts = attempts - 1, lease_until = NULL, started_at = NULL,
    limit_key = %(key)s::text
WHERE id = %(id)s::bigint
"""

RECENT_STARTS = """
SELECT started_at FROM sqlitejobq_starts
WHERE limit_key = %(key)s::text AND started_at > %(since)s::double precision
ORDER BY started_at
"""

# The starts of each key of %(keys)s after its time in %(sinces)s, oldest first.
RECENT_STARTS_MANY = """
SELECT s.limit_key, s.started_at
FROM unnest(%(keys)s::text[], %(sinces)s::double precision[]) AS r (key, since)
JOIN sqlitejobq_starts AS s ON s.limit_key = r.key AND s.started_at > r.since
ORDER BY s.limit_key, s.started_at
"""

RECORD_STARTS = """
INSERT INTO sqlitejobq_starts (limit_key, started_at)
SELECT k, %(at)s::double precision FROM unnest(%(keys)s::text[]) AS k
"""

FORGET_STARTS = """
DELETE FROM sqlitejobq_starts
WHERE limit_key = %(key)s::text AND started_at <= %(since)s::double precision
"""

NEXT_LIMITED_RUN = f"""
SELECT min(run_at) FROM sqlitejobq_jobs
WHERE status = 'queued' AND limit_key IS NOT NULL AND run_at > {NOW}
"""

LIMIT_USAGE = """
SELECT limit_key, count(*) FILTER (WHERE status = 'queued'),
       count(*) FILTER (WHERE status = 'processing')
FROM sqlitejobq_jobs
WHERE limit_key IS NOT NULL AND status IN ('queued', 'processing')
GROUP BY limit_key ORDER BY limit_key LIMIT %(limit)s::integer
"""

# --- schedules ---------------------------------------------------------------------------------

DECLARE_SCHEDULES = f"""
INSERT INTO sqlitejobq_schedules (name, task, spec, timezone, declared_at)
SELECT n, t, s, z, {NOW}
FROM unnest(%(names)s::text[], %(tasks)s::text[], %(specs)s::text[], %(zones)s::text[])
     AS d (n, t, s, z)
ORDER BY n
ON CONFLICT (name) DO UPDATE
SET task = excluded.task, spec = excluded.spec, timezone = excluded.timezone,
    declared_at = excluded.declared_at
"""

LAST_SLOTS = "SELECT name, last_slot FROM sqlitejobq_schedules"

# Only the first transaction to move last_slot past the slot gets a row back (others wait
# for its row lock, then re-check the condition on its new version and match nothing).
TAKE_SLOT = """
UPDATE sqlitejobq_schedules SET last_slot = %(slot)s::double precision
WHERE name = %(name)s::text AND (last_slot IS NULL OR last_slot < %(slot)s::double precision)
RETURNING name
"""

SLOT_JOB = """
UPDATE sqlitejobq_schedules SET last_job_id = %(job_id)s::bigint WHERE name = %(name)s::text
"""

SCHEDULES = """
SELECT s.name, s.task, s.spec, s.timezone, s.last_slot, s.last_job_id, j.status, s.declared_at
FROM sqlitejobq_schedules AS s LEFT JOIN sqlitejobq_jobs AS j ON j.id = s.last_job_id
ORDER BY s.name
"""

# --- waiting ---------------------------------------------------------------------------------

WATCH = "UPDATE sqlitejobq_jobs SET watched = true WHERE id = %(id)s::bigint RETURNING status"

WATCH_BATCH = """
UPDATE sqlitejobq_jobs SET watched = true
WHERE batch_id = %(batch_id)s::bigint AND status IN ('queued', 'processing', 'waiting')
"""

# --- operator actions ------------------------------------------------------------------------

# Returns the new status, queue, batch_id, id, has_dependents, limit_key and the old status.
# The history records the first request only: asking again changes nothing.
_CANCEL_STATUS = "CASE WHEN old.status IN ('queued', 'waiting') THEN 'cancelled' ELSE j.status END"
_CANCEL_ENTRY = _appended(
    "cancel requested", _CANCEL_STATUS, attempt="nullif(j.attempts, 0)",
    worker="CASE WHEN old.status = 'processing' THEN j.worker END",
    started_at="CASE WHEN old.status = 'processing' THEN j.started_at END",
)  # fmt: skip
CANCEL = f"""
WITH old AS MATERIALIZED (
    SELECT id, status FROM sqlitejobq_jobs
    WHERE id = %(id)s::bigint AND status IN ('queued', 'processing', 'waiting')
    FOR UPDATE
)
UPDATE sqlitejobq_jobs AS j
SET status = {_CANCEL_STATUS},
    cancel_requested = true,
    finished_at = CASE WHEN old.status IN ('queued', 'waiting') THEN {NOW} ELSE j.finished_at END,
    history = CASE WHEN j.cancel_requested THEN j.history ELSE {_CANCEL_ENTRY} END
FROM old
WHERE j.id = old.id
RETURNING j.status, j.queue, j.batch_id, j.id, j.has_dependents, j.limit_key, j.watched,
          old.status
"""

STATUS_QUEUE_BATCH = "SELECT status, queue, batch_id FROM sqlitejobq_jobs WHERE id = %(id)s::bigint"

UNIQUE_KEY = "SELECT unique_key FROM sqlitejobq_jobs WHERE id = %(id)s::bigint"

# A new job not started within %(expires)s seconds never runs.
SET_EXPIRY = f"""
UPDATE sqlitejobq_jobs SET expires_at = {NOW} + %(expires)s::float8 WHERE id = %(id)s::bigint
"""

# The jobs of status %(status)s (queued or waiting) whose expiry has passed, cancelled, found
# through the index of the jobs that have an expiry (empty when none does); rows another
# transaction holds are left for the next claim.
EXPIRE_DUE = f"""
WITH due AS MATERIALIZED (
    SELECT id FROM sqlitejobq_jobs
    WHERE status IN ('queued', 'waiting') AND expires_at IS NOT NULL
      AND status = %(status)s::text AND expires_at <= {NOW}
    FOR UPDATE SKIP LOCKED
)
UPDATE sqlitejobq_jobs
SET status = 'cancelled', finished_at = {NOW}, error = '{EXPIRED}',
    history = {
    _appended(
        "expired",
        "'cancelled'",
        attempt="nullif(attempts, 0)",
        worker="NULL::text",
        started_at="NULL::float8",
        error=f"'{EXPIRED}'::text",
    )
}
WHERE id = ANY(ARRAY(SELECT id FROM due))
RETURNING status, queue, batch_id, id, has_dependents, limit_key, watched
"""

# The job's status, queue and batch before an operator changes it, its row locked.
LOCK_JOB_STATE = f"{STATUS_QUEUE_BATCH} FOR UPDATE"

# A job that has not started gets another priority, queue or due time (%(delay)s from now,
# or %(run_at)s); the history records what changed (%(note)s).
UPDATE_WAITING = f"""
UPDATE sqlitejobq_jobs
SET priority = coalesce(%(priority)s::integer, priority),
    queue = coalesce(%(queue)s::text, queue),
    run_at = CASE WHEN %(delay)s::float8 IS NOT NULL THEN {NOW} + %(delay)s::float8
                  ELSE coalesce(%(run_at)s::float8, run_at) END,
    history = {
    _appended(
        "updated",
        "status",
        attempt="nullif(attempts, 0)",
        worker="NULL::text",
        started_at="NULL::float8",
        error="%(note)s::text",
    )
}
WHERE id = %(id)s::bigint AND status IN ('queued', 'waiting')
RETURNING status
"""

# Failed or cancelled jobs of %(ids)s (bigint[]) queued again with fresh attempts, locked in
# id order. Returns id, the status before, queue, batch_id, by id: what the tally needs.
# A job whose unique key another active job holds makes the statement fail with
# UniqueViolation (constraint sqlitejobq_jobs_unique; diag.message_detail names the key),
# which aborts the transaction: the storage rolls back and raises DuplicateJob, as the
# SQLite backend does for its per-job RETRY. The history records the attempts each job
# had before they start again from 0.
_RETRY_ENTRY = _appended(
    "retried", "'queued'::text", attempt="j.attempts", worker="NULL::text",
    started_at="NULL::double precision",
)  # fmt: skip
RETRY = f"""
WITH old AS MATERIALIZED (
    SELECT id, status FROM sqlitejobq_jobs
    WHERE id = ANY(%(ids)s::bigint[]) AND status IN ('failed', 'cancelled')
    ORDER BY id
    FOR UPDATE
), retried AS (
    UPDATE sqlitejobq_jobs AS j
    SET status = 'queued', attempts = 0, run_at = {NOW}, cancel_requested = false,
        finished_at = NULL, lease_until = NULL, progress = 0.0, progress_message = NULL,
        unknown_since = NULL, waiting_on = 0,
        history = {_RETRY_ENTRY}
    FROM old
    WHERE j.id = ANY(%(ids)s::bigint[]) AND j.id = old.id
    RETURNING j.id, old.status, j.queue, j.batch_id
)
SELECT id, status, queue, batch_id FROM retried ORDER BY id
"""

# A page of failed jobs' ids after %(after)s, through the index of failed and cancelled jobs
# (the IN term makes that partial index usable in a generic plan too), filtered as LIST_JOBS.
FAILED_IDS = """
SELECT id FROM sqlitejobq_jobs
WHERE status IN ('failed', 'cancelled') AND status = 'failed' AND id > %(after)s::bigint
  AND (%(queue)s::text IS NULL OR queue = %(queue)s::text)
  AND (%(task)s::text IS NULL OR task = %(task)s::text)
  AND (%(batch_id)s::bigint IS NULL OR batch_id = %(batch_id)s::bigint)
  AND (%(error)s::text IS NULL OR error ILIKE %(error)s::text ESCAPE '\\')
ORDER BY id LIMIT %(limit)s::integer
"""

# One chunk of finished jobs older than %(cutoff)s, oldest first; rows held elsewhere are
# skipped. The ORDER BY keeps the finished index in a generic plan too (psycopg prepares a
# statement run 5 times, and purge runs in a loop): without it, a plan made without the
# cutoff's value prefers a seq scan that stops at `chunk` matches, and walks again, chunk
# after chunk, over the dead rows the previous chunks left at the front of the table.
# Returns how many were deleted per (queue, status), for the counts (batch counts keep them).
PURGE_FINISHED = """
WITH doomed AS MATERIALIZED (
    SELECT id FROM sqlitejobq_jobs
    WHERE status IN ('completed', 'failed', 'cancelled')
      AND finished_at < %(cutoff)s::double precision
    ORDER BY finished_at
    LIMIT %(chunk)s::integer
    FOR UPDATE SKIP LOCKED
), deleted AS (
    DELETE FROM sqlitejobq_jobs WHERE id = ANY(ARRAY(SELECT id FROM doomed))
    RETURNING queue, status
)
SELECT queue, status, count(*) FROM deleted GROUP BY queue, status ORDER BY queue, status
"""

# Batches created before %(cutoff)s that no job refers to any more, a chunk at a time: a
# batch with queued or processing jobs is kept, and so is one whose finished jobs are not
# purged yet (the foreign key). Their sharded counts go with them (ON DELETE CASCADE).
PURGE_BATCHES = """
DELETE FROM sqlitejobq_batches WHERE id IN (
    SELECT b.id FROM sqlitejobq_batches AS b
    WHERE b.created_at < %(cutoff)s::double precision
      AND NOT EXISTS (SELECT 1 FROM sqlitejobq_jobs AS j WHERE j.batch_id = b.id)
    LIMIT %(chunk)s::integer
    FOR UPDATE SKIP LOCKED)
"""

# Workers unseen since %(cutoff)s that stopped, or that have been silent since
# %(dead_before)s (crashed without saying so); a live worker's row stays.
PURGE_WORKERS = """
DELETE FROM sqlitejobq_workers
WHERE last_seen < %(cutoff)s::double precision
  AND (stopped_at IS NOT NULL OR last_seen < %(dead_before)s::double precision)
"""

# --- counts --------------------------------------------------------------------------------------

# Add deltas to the (queue, status) counts of shard %(shard)s (NULL: this backend's pid mod
# COUNT_SHARDS). Parallel arrays queues, statuses, deltas; a key may repeat (summed), zero
# sums are skipped. The rows are locked in (queue, status) order whatever the input order:
# the INSERT consumes its SELECT in the ORDER BY's order. Run once per transaction, after
# the job rows changed, before ADD_TO_BATCH_COUNTS.
ADD_TO_COUNTS = f"""
INSERT INTO sqlitejobq_counts AS c (queue, status, shard, count)
SELECT d.queue, d.status,
       coalesce(%(shard)s::smallint, mod(pg_backend_pid(), {COUNT_SHARDS})::smallint),
       sum(d.delta)
FROM unnest(%(queues)s::text[], %(statuses)s::text[], %(deltas)s::bigint[])
     AS d (queue, status, delta)
GROUP BY d.queue, d.status
HAVING sum(d.delta) <> 0
ORDER BY d.queue, d.status
ON CONFLICT (queue, status, shard) DO UPDATE SET count = c.count + excluded.count
"""

# Add deltas to batches' counts on one shard, locked in batch_id order. Parallel arrays
# batch_ids, totals, queued, processing, completed, failed, cancelled; a batch may repeat.
ADD_TO_BATCH_COUNTS = f"""
INSERT INTO sqlitejobq_batch_counts AS c
    (batch_id, shard, total, queued, processing, completed, failed, cancelled, waiting)
SELECT d.batch_id,
       coalesce(%(shard)s::smallint, mod(pg_backend_pid(), {COUNT_SHARDS})::smallint),
       sum(d.total), sum(d.queued), sum(d.processing), sum(d.completed), sum(d.failed),
       sum(d.cancelled), sum(d.waiting)
FROM unnest(%(batch_ids)s::bigint[], %(totals)s::bigint[], %(queued)s::bigint[],
            %(processing)s::bigint[], %(completed)s::bigint[], %(failed)s::bigint[],
            %(cancelled)s::bigint[], %(waiting)s::bigint[])
     AS d (batch_id, total, queued, processing, completed, failed, cancelled, waiting)
GROUP BY d.batch_id
ORDER BY d.batch_id
ON CONFLICT (batch_id, shard) DO UPDATE
SET total = c.total + excluded.total, queued = c.queued + excluded.queued,
    processing = c.processing + excluded.processing,
    completed = c.completed + excluded.completed, failed = c.failed + excluded.failed,
    cancelled = c.cancelled + excluded.cancelled, waiting = c.waiting + excluded.waiting
"""

# The counts by (queue, status), shards summed (sum of bigint is numeric: cast back).
COUNTS = """
SELECT queue, status, sum(count)::bigint FROM sqlitejobq_counts
GROUP BY queue, status HAVING sum(count) <> 0
ORDER BY queue, status
"""

# --- reads ------------------------------------------------------------------------------------

GET_JOB = f"SELECT {JOB_COLUMNS} FROM sqlitejobq_jobs WHERE id = %(id)s::bigint"

JOB_WITH_HISTORY = (
    f"SELECT {JOB_COLUMNS}, history::text FROM sqlitejobq_jobs WHERE id = %(id)s::bigint"
)

MAX_JOB_ID = "SELECT max(id) FROM sqlitejobq_jobs"

JOB_STATUS = "SELECT status FROM sqlitejobq_jobs WHERE id = %(id)s::bigint"

CANCEL_REQUESTED = "SELECT cancel_requested FROM sqlitejobq_jobs WHERE id = %(id)s::bigint"

# The batch's counts in BatchProgress field order, its shards summed.
BATCH = """
SELECT b.id, b.name, coalesce(sum(c.total), 0)::bigint, coalesce(sum(c.queued), 0)::bigint,
       coalesce(sum(c.processing), 0)::bigint, coalesce(sum(c.completed), 0)::bigint,
       coalesce(sum(c.failed), 0)::bigint, coalesce(sum(c.cancelled), 0)::bigint, b.created_at,
       coalesce(sum(c.waiting), 0)::bigint
FROM sqlitejobq_batches AS b
LEFT JOIN sqlitejobq_batch_counts AS c ON c.batch_id = b.id
WHERE b.id = %(id)s::bigint
GROUP BY b.id
"""

LATEST_BATCH_ID = "SELECT max(id) FROM sqlitejobq_batches"

# Newest first, below %(before)s (NULL: any), in BatchProgress field order, shards summed:
# the batches come from a range of the primary key, then their counts.
BATCHES = """
SELECT b.id, b.name, coalesce(sum(c.total), 0)::bigint, coalesce(sum(c.queued), 0)::bigint,
       coalesce(sum(c.processing), 0)::bigint, coalesce(sum(c.completed), 0)::bigint,
       coalesce(sum(c.failed), 0)::bigint, coalesce(sum(c.cancelled), 0)::bigint, b.created_at,
       coalesce(sum(c.waiting), 0)::bigint
FROM (SELECT id, name, created_at FROM sqlitejobq_batches
      WHERE id < coalesce(%(before)s::bigint, 9223372036854775807)
      ORDER BY id DESC LIMIT %(limit)s::integer) AS b
LEFT JOIN sqlitejobq_batch_counts AS c ON c.batch_id = b.id
GROUP BY b.id, b.name, b.created_at
ORDER BY b.id DESC
"""

BATCH_JOBS = f"""
SELECT {JOB_COLUMNS} FROM sqlitejobq_jobs WHERE batch_id = %(batch_id)s::bigint ORDER BY id
"""

_LIST_JOBS = f"""
SELECT {JOB_COLUMNS} FROM sqlitejobq_jobs
WHERE {{status}}
  AND (%(queue)s::text IS NULL OR queue = %(queue)s::text)
  AND (%(task)s::text IS NULL OR task = %(task)s::text)
  AND {{batch}}
  AND (%(error)s::text IS NULL OR error ILIKE %(error)s::text ESCAPE '\\')
  AND id >= {{lowest}} AND id <= {{highest}}
ORDER BY id {{order}} LIMIT %(limit)s::integer
"""

# The ids a page may read, as on SQLite: past its cursor, and within %(scan)s ids of it
# (NULL: no window); one lower and one upper bound, each a constant of the statement.
_AFTER = "coalesce(%(after)s::bigint + 1, 0)"
_BEFORE = "coalesce(%(before)s::bigint - 1, 9223372036854775807)"
_NEWEST_LOWEST = (
    f"greatest({_AFTER}, coalesce(coalesce(%(before)s::bigint, "
    f"(SELECT max(id) FROM sqlitejobq_jobs) + 1) - %(scan)s::bigint, 0))"
)
_OLDEST_HIGHEST = (
    f"least({_BEFORE}, coalesce(coalesce(%(after)s::bigint, "
    f"(SELECT min(id) FROM sqlitejobq_jobs) - 1) + %(scan)s::bigint, 9223372036854775807))"
)

#: What a listing reads, as on SQLite (``base.listing_by``): here the SQL only says so (the
#: equality on batch_id, the IN term of the failed-and-cancelled index) and the planner
#: picks the index, in generic plans too.
LIST_JOBS_BY = ("id", "batch", "finished_badly")


@lru_cache(maxsize=2 * len(LIST_JOBS_BY))
def list_jobs(oldest_first: bool, by: str = "id") -> str:
    """The listing of jobs by id (see LIST_JOBS_BY for ``by``), newest or oldest first."""
    if by not in LIST_JOBS_BY:
        raise ValueError(f"by must be one of {LIST_JOBS_BY}, got {by!r}")
    return _LIST_JOBS.format(
        status="status IN ('failed', 'cancelled') AND status = %(status)s::text"
        if by == "finished_badly"
        else "(%(status)s::text IS NULL OR status = %(status)s::text)",
        batch="batch_id = %(batch_id)s::bigint"
        if by == "batch"
        else "(%(batch_id)s::bigint IS NULL OR batch_id = %(batch_id)s::bigint)",
        lowest=_AFTER if oldest_first else _NEWEST_LOWEST,
        highest=_OLDEST_HIGHEST if oldest_first else _BEFORE,
        order="ASC" if oldest_first else "DESC",
    )


# The earliest run_at of queued jobs (due or not) and the statement's now. No index of its
# own: the claim index is ordered (queue, priority DESC, run_at), so the earliest run_at of
# each (queue, priority) pair is one probe, and the pairs are found by skipping from one
# to the next: a probe per pair, however many jobs wait. The jobs of a paused queue do not
# count: nothing is due there until it is resumed.
_EARLIEST_OF_PAIRS = f"""
SELECT (SELECT min(m.run_at) FROM pairs CROSS JOIN LATERAL (
            SELECT run_at FROM sqlitejobq_jobs
            WHERE status = 'queued' AND limit_key IS NULL AND queue = pairs.queue
              AND priority = pairs.priority
            ORDER BY run_at LIMIT 1) AS m
        WHERE NOT {_PAUSED.format(name="pairs.queue")}),
       {NOW}
"""

_NEXT_PAIR = """
    SELECT n.queue, n.priority FROM pairs CROSS JOIN LATERAL (
        (SELECT queue, priority FROM sqlitejobq_jobs
         WHERE status = 'queued' AND limit_key IS NULL AND queue = pairs.queue
           AND priority < pairs.priority
         ORDER BY priority DESC LIMIT 1){next_queue}) AS n
"""

NEXT_RUN_ANY_QUEUE = f"""
WITH RECURSIVE pairs (queue, priority) AS (
    (SELECT queue, priority FROM sqlitejobq_jobs WHERE status = 'queued' AND limit_key IS NULL
     ORDER BY queue, priority DESC LIMIT 1)
    UNION ALL
    {
    _NEXT_PAIR.format(
        next_queue='''
        UNION ALL
        (SELECT queue, priority FROM sqlitejobq_jobs
         WHERE status = 'queued' AND limit_key IS NULL AND queue > pairs.queue
         ORDER BY queue, priority DESC LIMIT 1)
        LIMIT 1'''
    )
}
)
{_EARLIEST_OF_PAIRS}
"""

# One queue, %(queue)s.
NEXT_RUN_IN_QUEUE = f"""
WITH RECURSIVE pairs (queue, priority) AS (
    (SELECT queue, priority FROM sqlitejobq_jobs
     WHERE status = 'queued' AND limit_key IS NULL AND queue = %(queue)s::text
       AND NOT {_PAUSED.format(name="%(queue)s::text")}
     ORDER BY priority DESC LIMIT 1)
    UNION ALL
    {_NEXT_PAIR.format(next_queue="")}
)
{_EARLIEST_OF_PAIRS}
"""

# Several queues, %(queues)s (text[]), in one statement: the pairs of every queue named.
NEXT_RUN_IN_QUEUES = f"""
WITH RECURSIVE pairs (queue, priority) AS (
    SELECT f.queue, f.priority
    FROM (SELECT DISTINCT name FROM unnest(%(queues)s::text[]) AS u (name)
          WHERE NOT {_PAUSED.format(name="u.name")}) AS q
    CROSS JOIN LATERAL (
        SELECT queue, priority FROM sqlitejobq_jobs
        WHERE status = 'queued' AND limit_key IS NULL AND queue = q.name
        ORDER BY priority DESC LIMIT 1) AS f
    UNION ALL
    {_NEXT_PAIR.format(next_queue="")}
)
{_EARLIEST_OF_PAIRS}
"""

# --- paused queues ----------------------------------------------------------------------

# A queue paused (a row comes back only if it was not paused already), resumed (its row
# stays, paused_at cleared: the table may hold other settings of a queue), and the paused
# queues by name.
PAUSE_QUEUE = f"""
INSERT INTO sqlitejobq_queues AS q (name, paused_at) VALUES (%(name)s::text, {NOW})
ON CONFLICT (name) DO UPDATE SET paused_at = excluded.paused_at
WHERE q.paused_at IS NULL
RETURNING name
"""

RESUME_QUEUE = """
UPDATE sqlitejobq_queues SET paused_at = NULL
WHERE name = %(name)s::text AND paused_at IS NOT NULL
RETURNING name
"""

PAUSED_QUEUES = """
SELECT name, paused_at FROM sqlitejobq_queues WHERE paused_at IS NOT NULL ORDER BY name
"""

# --- workers ------------------------------------------------------------------------------

REGISTER_WORKER = f"""
INSERT INTO sqlitejobq_workers (id, hostname, pid, queues, concurrency, started_at, last_seen)
VALUES (%(id)s::text, %(hostname)s::text, %(pid)s::integer, %(queues)s::text,
        %(concurrency)s::integer, {NOW}, {NOW})
ON CONFLICT (id) DO UPDATE SET last_seen = excluded.last_seen, stopped_at = NULL
"""

# An upsert: a worker whose row was purged (or never written) gets it back, started_at
# being %(started_at)s (NULL: now).
REPORT_WORKER = f"""
INSERT INTO sqlitejobq_workers AS w
    (id, hostname, pid, queues, concurrency, started_at, last_seen, stopped_at,
     jobs_completed, jobs_failed, writes, lock_retries, lock_wait_seconds,
     lock_wait_max_seconds, busy_errors)
VALUES (%(id)s::text, %(hostname)s::text, %(pid)s::integer, %(queues)s::text,
        %(concurrency)s::integer, coalesce(%(started_at)s::double precision, {NOW}), {NOW},
        %(stopped_at)s::double precision, %(jobs_completed)s::bigint, %(jobs_failed)s::bigint,
        %(writes)s::bigint, %(lock_retries)s::bigint, %(lock_wait_seconds)s::double precision,
        %(lock_wait_max_seconds)s::double precision, %(busy_errors)s::bigint)
ON CONFLICT (id) DO UPDATE
SET last_seen = excluded.last_seen, stopped_at = excluded.stopped_at,
    jobs_completed = excluded.jobs_completed, jobs_failed = excluded.jobs_failed,
    writes = excluded.writes, lock_retries = excluded.lock_retries,
    lock_wait_seconds = excluded.lock_wait_seconds,
    lock_wait_max_seconds = excluded.lock_wait_max_seconds, busy_errors = excluded.busy_errors
"""

WORKER_TOTALS = """
SELECT coalesce(sum(writes), 0)::bigint, coalesce(sum(lock_wait_seconds), 0.0),
       coalesce(max(lock_wait_max_seconds), 0.0), coalesce(sum(lock_retries), 0)::bigint,
       coalesce(sum(busy_errors), 0)::bigint,
       count(*) FILTER (WHERE stopped_at IS NULL AND last_seen >= %(alive_since)s::double precision)
FROM sqlitejobq_workers
"""

LIST_WORKERS = """
SELECT id, hostname, pid, queues, concurrency, started_at, last_seen, stopped_at,
       jobs_completed, jobs_failed, writes, lock_retries, lock_wait_seconds, busy_errors
FROM sqlitejobq_workers ORDER BY started_at DESC LIMIT %(limit)s::integer
"""

# --- a job's dependencies ------------------------------------------------------------------

# As on SQLite: what a waiting job still waits for (the index by dependent), and the waiting
# jobs that wait for a job (the primary key).
WAITS_ON = """
SELECT d.depends_on FROM sqlitejobq_dependencies AS d
JOIN sqlitejobq_jobs AS j ON j.id = d.job_id
WHERE d.job_id = %(id)s::bigint AND j.status = 'waiting'
ORDER BY d.depends_on
"""

WAITED_ON_BY = """
SELECT d.job_id FROM sqlitejobq_dependencies AS d
JOIN sqlitejobq_jobs AS j ON j.id = d.job_id
WHERE d.depends_on = %(id)s::bigint AND j.status = 'waiting'
ORDER BY d.job_id
"""

# --- throughput -----------------------------------------------------------------------------

#: The epoch second that starts the statement's minute.
_MINUTE = f"(floor({NOW} / 60) * 60)::bigint"

# A worker's jobs ended since its last report, added to the current minute's row in the
# report's transaction: one row, so concurrent reports wait for each other and never
# deadlock. Then rows older than %(keep)s seconds go (a range of the primary key).
ADD_THROUGHPUT = f"""
INSERT INTO sqlitejobq_throughput AS t (minute, completed, failed)
VALUES ({_MINUTE}, %(completed)s::bigint, %(failed)s::bigint)
ON CONFLICT (minute) DO UPDATE
SET completed = t.completed + excluded.completed, failed = t.failed + excluded.failed
"""

FORGET_THROUGHPUT = f"""
DELETE FROM sqlitejobq_throughput WHERE minute < {_MINUTE} - %(keep)s::bigint
"""

# The current minute, then the rows of the %(minutes)s minutes up to it (if any).
THROUGHPUT = f"""
WITH clock AS MATERIALIZED (SELECT {_MINUTE} AS minute)
SELECT clock.minute, t.minute, t.completed, t.failed
FROM clock LEFT JOIN sqlitejobq_throughput AS t
    ON t.minute > clock.minute - 60 * %(minutes)s::bigint AND t.minute <= clock.minute
ORDER BY t.minute
"""

# --- wake-ups ---------------------------------------------------------------------------

# Sent inside the enqueue's transaction: delivered when (and only if) it commits; identical
# (channel, payload) pairs of one transaction are delivered once. Payload: the queue name.
NOTIFY = "SELECT pg_notify(%(channel)s::text, %(payload)s::text)"

#: Channel names are identifiers: at most 63 bytes (pg_notify refuses longer ones, LISTEN
#: silently truncates them, so the two would not meet).
_MAX_CHANNEL_BYTES = 63


def channel_name(schema: str) -> str:
    """The NOTIFY channel of the queue in ``schema``: ``sqlitejobq.<schema>``, or, when that
    is too long for an identifier, ``sqlitejobq.`` and a digest of the schema's name."""
    name = f"sqlitejobq.{schema}"
    if len(name.encode("utf-8")) <= _MAX_CHANNEL_BYTES:
        return name
    return "sqlitejobq." + hashlib.sha256(schema.encode("utf-8")).hexdigest()[:40]


def listen(channel: str) -> pgsql.Composed:
    """LISTEN takes no parameters: the channel is composed in as a quoted identifier."""
    return pgsql.SQL("LISTEN {}").format(pgsql.Identifier(channel))


def unlisten(channel: str) -> pgsql.Composed:
    """Stop listening on ``channel``."""
    return pgsql.SQL("UNLISTEN {}").format(pgsql.Identifier(channel))
