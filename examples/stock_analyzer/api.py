"""The original app's HTTP API, rebuilt on sqlitejobq (FastAPI).

    python -m examples.stock_analyzer.api --db stock_analysis.db --port 8000
    python -m examples.stock_analyzer.api --db 'postgresql://app@db/app?schema=stocks'

Endpoints: POST /api/stocks/analyze-all-stocks starts a batch; GET
/api/all-stocks/progress follows it (with ``summary_job_id``, the job that ranks it once it
has finished); GET /api/batches/{batch_id}/summary serves that ranking; GET
/api/stocks/{symbol}/analysis the newest analysis of a symbol; GET
/api/stocks/{symbol}/chart.png its chart (drawn once per stored analysis, then cached); GET
/api/jobs/{job_id} a job. The queue's web dashboard is mounted at /dashboard/: batches
with live progress bars, jobs with their errors and timelines, workers; retry and cancel.

Bad input is refused by the request that brings it, before anything is stored: 422 (415
for a body that is not JSON, 413 for one too large) with a JSON ``detail`` naming the value
and what is expected (``api_input``); the README lists the errors.

The endpoints are coroutines on an ``AsyncQueue``: the queue's reads run on its threads,
the app's own tables are read in threads (``asyncio.to_thread``), and a batch is started in
a thread (its jobs and the app's record of it share one transaction); the event loop never
waits for the database.

Workers run in this process's threads by default (``--workers N``); with ``--workers 0``
start them apart, on any host that reaches the database: ``sqlitejobq worker --db
stock_analysis.db --app examples.stock_analyzer.tasks:registry`` (the same database). These
workers run until stopped, so they also fire the daily refresh of the watchlist (16:00
Asia/Kolkata, see ``tasks``): one job per day however many of them run.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import threading
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

import uvicorn
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, StrictStr

from sqlitejobq import AsyncQueue, JobNotFound, Queue, SqliteJobQError
from sqlitejobq.errors import InvalidArgument
from sqlitejobq.web import Auth, Dashboard, dashboard

from .api_input import ApiError, BatchId, JobId, only_query, read_body, symbols_of_body
from .charts import ChartCache, render_chart
from .prices import SOURCE_NAMES, PriceDataError, UnknownSymbol, is_transient, validate_symbol
from .service import (
    DEFAULT_DB,
    MAX_SYMBOLS,
    SourceConfig,
    app_worker,
    batch_report_async,
    batch_summary,
    check_available,
    latest_analysis,
    open_queue,
    prices_of_analysis,
    start_analysis_async,
    summary_job_id,
)
from .words import shown

log = logging.getLogger("stock_analyzer.api")


class AnalyzeRequest(BaseModel):
    """Body of POST /api/stocks/analyze-all-stocks, as the API's documentation shows it (the
    body is read and checked by ``symbols_of_body``, whose errors say more)."""

    model_config = ConfigDict(extra="forbid")
    symbols: list[StrictStr] = Field(min_length=1, max_length=MAX_SYMBOLS)


class StartupError(Exception):
    """A setting the API cannot start with: one line on stderr, exit status 1."""


def dashboard_auth(environ: Mapping[str, str] | None = None) -> Auth | None:
    """The dashboard's credentials from ``$SQLITEJOBQ_WEB_PASSWORD`` (and ``_USER``) or
    ``$SQLITEJOBQ_WEB_TOKEN``, if set; StartupError naming the variable that is refused."""
    env = dict(os.environ if environ is None else environ)
    try:
        return Auth.from_env(env)
    except InvalidArgument as exc:  # it names the variable refused
        raise StartupError(f"{exc} (it protects the dashboard at /dashboard/)") from None


def create_app(
    db: str = DEFAULT_DB, *, source: SourceConfig | None = None, workers: int = 4
) -> FastAPI:
    """The app on ``db`` (a SQLite file or a postgresql:// URL); with ``workers`` > 0 it
    runs that many worker threads while it serves. StartupError for refused dashboard
    credentials in the environment: read here, before any server starts."""
    source = source or SourceConfig()
    auth = dashboard_auth()
    state: dict[str, AsyncQueue] = {}
    dashboards: dict[str, Dashboard] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        queue = await asyncio.to_thread(open_queue, db)  # migrations: not on the loop
        state["queue"] = AsyncQueue(queue=queue)
        dashboards["jobs"] = dashboard(queue, auth=auth, title="Stock analyzer jobs")
        worker = thread = None
        if workers:  # long-running, not burst: they also fire the daily refresh
            worker = app_worker(queue, concurrency=workers)
            thread = threading.Thread(target=worker.run, kwargs={"handle_signals": False},
                                      name="sqlitejobq-worker", daemon=True)  # fmt: skip
            thread.start()
        try:
            yield
        finally:
            if worker is not None and thread is not None:
                worker.stop()
                await asyncio.to_thread(thread.join, 60)
            await state["queue"].close()
            await asyncio.to_thread(queue.close)

    app = FastAPI(title="Stock analyzer", lifespan=lifespan)

    async def jobs_dashboard(scope: Any, receive: Any, send: Any) -> None:
        """The queue's dashboard at /dashboard/: batches with live progress, jobs, workers."""
        await dashboards["jobs"](scope, receive, send)

    app.mount("/dashboard", jobs_dashboard)

    def queue() -> AsyncQueue:
        return state["queue"]

    @app.exception_handler(ApiError)
    async def refused(request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(status_code=exc.status, content=exc.content())

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(status_code=422, content={
            "detail": "; ".join(_problem(error) for error in exc.errors())})  # fmt: skip

    no_query = [Depends(only_query())]

    @app.post(
        "/api/stocks/analyze-all-stocks",
        status_code=202,
        dependencies=no_query,
        openapi_extra={"requestBody": {"required": True, "content": {
            "application/json": {"schema": AnalyzeRequest.model_json_schema()}}}},
    )  # fmt: skip
    async def analyze_all_stocks(request: Request) -> dict[str, Any]:
        symbols = symbols_of_body(await read_body(request), request.headers.get("content-type"))
        try:  # a stat per symbol on an offline source: in a thread, off the loop
            await asyncio.to_thread(check_available, symbols, source)
        except UnknownSymbol as exc:
            raise ApiError(422, f"{exc}: no batch was started", missing=list(exc.symbols),
                           available=list(exc.available)) from None  # fmt: skip
        batch = await start_analysis_async(queue(), symbols, source)
        return {"batch_id": batch.id, "total": len(batch.job_ids), "job_ids": batch.job_ids,
                "summary_job_id": batch.then_id,
                "progress_url": f"/api/all-stocks/progress?batch_id={batch.id}",
                "summary_url": f"/api/batches/{batch.id}/summary"}  # fmt: skip

    @app.get("/api/all-stocks/progress", dependencies=[Depends(only_query("batch_id"))])
    async def all_stocks_progress(batch_id: BatchId | None = None) -> dict[str, Any]:
        target = batch_id
        if target is None:
            target = await asyncio.to_thread(queue().queue.latest_batch_id)
        if target is None:
            raise HTTPException(
                status_code=404,
                detail="no analysis in the database: none was started yet, or the finished "
                "ones were purged",
            )
        try:
            return await batch_report_async(queue(), target)
        except JobNotFound:
            raise HTTPException(status_code=404, detail=f"no batch with id {target}") from None

    @app.get("/api/batches/{batch_id}/summary", dependencies=no_query)
    async def summary_of_batch(batch_id: BatchId) -> dict[str, Any]:
        found = await asyncio.to_thread(batch_summary, queue().queue, batch_id)
        if found is not None:
            return found
        try:
            await queue().batch_progress(batch_id)
        except JobNotFound:
            raise HTTPException(status_code=404, detail=f"no batch with id {batch_id}") from None
        raise HTTPException(status_code=404, detail=await _no_summary_yet(queue(), batch_id))

    async def newest(symbol: str, missing: str = "") -> dict[str, Any]:
        """The newest stored analysis of a symbol; 422 for a bad symbol, 404 for none."""
        try:
            checked = validate_symbol(symbol)
        except ValueError as exc:
            raise HTTPException(status_code=422, detail=str(exc)) from None
        found = await asyncio.to_thread(latest_analysis, queue().queue, checked)
        if found is None:
            raise HTTPException(status_code=404, detail=f"no analysis of {checked} yet{missing}")
        return found

    @app.get("/api/stocks/{symbol}/analysis", dependencies=no_query)
    async def stock_analysis(symbol: str) -> dict[str, Any]:
        return await newest(symbol)

    charts = ChartCache()

    @app.get(
        "/api/stocks/{symbol}/chart.png",
        dependencies=no_query,
        response_class=Response,
        responses={200: {"content": {"image/png": {}}, "description": "the chart, a PNG"}},
    )
    async def stock_chart(symbol: str) -> Response:
        found = await newest(symbol, ", so no chart: analyze it with "
                             "POST /api/stocks/analyze-all-stocks")  # fmt: skip
        # the stored analysis it shows
        key = (found["symbol"], found["job_id"], found["analyzed_at"])
        png = charts.get(key)
        if png is None:
            png = await _chart_of(queue(), found)
            charts.put(key, png)
        return Response(png, media_type="image/png")

    @app.get("/api/jobs/{job_id}", dependencies=no_query)
    async def job(job_id: JobId) -> dict[str, Any]:
        try:
            return (await queue().get(job_id)).as_dict()
        except JobNotFound:
            raise HTTPException(status_code=404, detail=f"no job with id {job_id}") from None

    return app


def _problem(error: Mapping[str, Any]) -> str:
    """One refused parameter in words: the app's own checks name the value and what is
    expected; any other, where it was and what pydantic says of it."""
    cause = (error.get("ctx") or {}).get("error")
    if error["type"] == "value_error" and cause is not None:
        return str(cause)
    where = " ".join(str(part) for part in error["loc"])
    return f"{where}: {error['msg']}, got {shown(error.get('input'))}"


async def _chart_of(queue: AsyncQueue, analysis: dict[str, Any]) -> bytes:
    """The PNG of a stored analysis, over the prices it was computed from (in a thread:
    loading them and drawing block); HTTPException when they cannot be had."""
    symbol = analysis["symbol"]
    try:
        return await asyncio.to_thread(_draw_chart, queue.queue, analysis)
    except (UnknownSymbol, PriceDataError) as exc:
        raise HTTPException(status_code=404, detail=f"no chart of {symbol}: {exc}") from None
    except Exception as exc:
        if not is_transient(exc):
            raise
        raise HTTPException(status_code=503, detail=f"no chart of {symbol} now: its prices "
                            f"could not be loaded ({exc}); try again") from None  # fmt: skip


def _draw_chart(queue: Queue, analysis: dict[str, Any]) -> bytes:
    png = render_chart(prices_of_analysis(queue, analysis), analysis)
    log.info("drew the chart of %s (the analysis of job %s)", analysis["symbol"],
             analysis["job_id"])  # fmt: skip
    return png


async def _no_summary_yet(queue: AsyncQueue, batch_id: int) -> str:
    """Why a batch that exists has no summary: its summary job's state, or that it has none."""
    job_id = await asyncio.to_thread(summary_job_id, queue.queue, batch_id)
    if job_id is None:
        return f"batch {batch_id} has no summary job (it was not started by this app)"
    try:
        job = await queue.get(job_id)
    except JobNotFound:
        return f"no summary of batch {batch_id}: its summary job {job_id} was purged"
    if job.status.finished:
        return f"no summary of batch {batch_id}: its summary job {job_id} {job.status.value}"
    return f"no summary of batch {batch_id} yet: its summary job {job_id} is {job.status.value}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m examples.stock_analyzer.api",
                                     description=__doc__.splitlines()[0])  # fmt: skip
    parser.add_argument(
        "--db",
        default=DEFAULT_DB,
        help=f"SQLite file or postgresql:// URL, ?schema=NAME naming the schema "
        f"(default: {DEFAULT_DB})",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=_number(1, 65535), default=8000, help="1 to 65535")
    parser.add_argument(
        "--workers",
        type=_number(0, 1000),
        default=4,
        help="worker threads in this process (0: run workers apart)",
    )
    parser.add_argument("--source", choices=SOURCE_NAMES, default="sample")
    parser.add_argument("--folder", help="folder of <SYMBOL>.csv files for --source csv")
    parser.add_argument(
        "--delay",
        type=float,
        default=0.0,
        help="pretend network time per symbol, in seconds (for demos)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        source = SourceConfig(args.source, args.folder, args.delay)
    except ValueError as exc:
        parser.error(str(exc))
    logging.getLogger("psycopg").setLevel(logging.ERROR)  # the error below says it once
    # what cannot work is one line before the server starts, not a traceback from it; the
    # environment first, so a refused setting leaves the database untouched
    try:
        app = create_app(args.db, source=source, workers=args.workers)
        open_queue(args.db).close()
    except (StartupError, SqliteJobQError, OSError) as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")
    return 0


def _number(low: int, high: int) -> Any:
    """An argparse type: a whole number from ``low`` to ``high``, refused saying so (exit
    status 2) rather than failing later (a port past 65535 would wrap around)."""

    def number(text: str) -> int:
        digits = text.isascii() and text.isdigit() and len(text) <= len(str(high))
        if not digits or not low <= int(text) <= high:
            raise argparse.ArgumentTypeError(
                f"expected a whole number from {low} to {high}, got {shown(text)}"
            )
        return int(text)

    return number


if __name__ == "__main__":
    raise SystemExit(main())
