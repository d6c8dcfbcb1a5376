"""The pipeline as Prefect tasks: plan, ingest per stream, transform per layer, audit, publish,
checkpoint, clean up; `run` is the body of the flow."""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path

import duckdb
from prefect import get_run_logger, task
from prefect.cache_policies import NONE
from prefect.exceptions import MissingContextError, TerminationSignal
from prefect.states import State

from metrics_etl import settings as settings_mod
from metrics_etl.errors import UserError
from metrics_etl.ingest import load
from metrics_etl.ingest.discover import Discovery, RawFile
from metrics_etl.models import audits, incremental
from metrics_etl.models import build as transform
from metrics_etl.publish import snapshot as publish
from metrics_etl.run import progress
from metrics_etl.run.plan import (
    AuditFailed,
    RunSummary,
    can_run_incrementally,
    dirty_partitions,
    discover,
    format_summary,
    new_snapshot_id,
    new_summary,
    no_op,
    nothing_to_publish,
    open_writer,
    record_run,
)
from metrics_etl.run.prefect_server import Stopped
from metrics_etl.run.signals import Note
from metrics_etl.serve import segments
from metrics_etl.state import (
    change_log,
    disk_full,
    drop_change_logs,
    get_state,
    mark_published,
    mark_publishing,
    recover_publish,
    reset_state,
    set_state,
    writer_lock,
)

__all__ = ["AuditFailed", "RunSummary", "format_summary", "new_summary", "open_writer", "run"]


def _log() -> logging.Logger | logging.LoggerAdapter:
    """The task's Prefect run logger (shown in the UI), or a plain logger outside a run."""
    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger(__name__)


class Writer:
    """The writer's DuckDB connection, opened on first use.

    An attempt that fails drops the connection, so that a retry starts on a fresh one: after a
    write error (a full disk) DuckDB invalidates the database the connection holds.
    """

    def __init__(self, warehouse: Path) -> None:
        self.warehouse = warehouse
        self._conn: duckdb.DuckDBPyConnection | None = None

    @property
    def conn(self) -> duckdb.DuckDBPyConnection:
        """The open connection (opened now if none is)."""
        if self._conn is None:
            self._conn = open_writer(self.warehouse)
        return self._conn

    @contextmanager
    def attempt(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """The connection for one attempt of a task; closed if the attempt fails."""
        try:
            yield self.conn
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Close the connection, if open."""
        if self._conn is not None:
            with suppress(duckdb.Error):
                self._conn.close()
            self._conn = None


EXPECTED = (UserError, AuditFailed)


def stop_signal(error: BaseException) -> TerminationSignal | Stopped | None:
    """The stop signal behind an error, if any: a SIGTERM that arrives during a DuckDB query
    surfaces as the query's RuntimeError("Query interrupted"), caused by Prefect's
    TerminationSignal."""
    chain: list[BaseException] = []
    seen: BaseException | None = error
    while seen is not None and seen not in chain:
        if isinstance(seen, (TerminationSignal, Stopped)):
            return seen
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    return None


def transient(task: object, task_run: object, state: State) -> bool:
    """Prefect retry condition: retry I/O failures, never bad input, a failed audit, a query
    interrupted because the run is being cancelled, or a stop signal (a retry would publish a
    cancelled or stopped run)."""
    error = state.data
    if isinstance(error, BaseException) and stop_signal(error) is not None:
        return False
    return not isinstance(error, (*EXPECTED, duckdb.InterruptException))


class QuietExpected(logging.Filter):
    """Drop the traceback from Prefect's log of errors that are explained in one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Keep the record; strip its traceback when the error is an expected one."""
        error = record.exc_info[1] if record.exc_info else None
        if error is not None and (
            isinstance(error, EXPECTED) or disk_full(error) or stop_signal(error) is not None
        ):
            record.exc_info = None
            record.exc_text = None
        return True


class NoDocLinks(logging.Filter):
    """Cut the "See https://docs.prefect.io…" line from Prefect's temporary-server notice: it
    asks the user to read about running a server, which `PREFECT_API_URL` already covers."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Keep the record, without its line of documentation links."""
        if isinstance(record.msg, str) and "\nSee https://docs.prefect.io" in record.msg:
            record.msg = record.msg.split("\nSee https://docs.prefect.io")[0]
        return True


class NoCompletedTasks(logging.Filter):
    """Drop Prefect's "Finished in state Completed()" line of each task: the task's own line
    says what it did. Failures and retries are kept."""

    def filter(self, record: logging.LogRecord) -> bool:
        """False for a task run's completed-state line."""
        return not record.getMessage().startswith("Finished in state Completed(")


for _name in ("prefect.task_runs", "prefect.flow_runs"):
    logging.getLogger(_name).addFilter(QuietExpected())
logging.getLogger("prefect.task_runs").addFilter(NoCompletedTasks())
logging.getLogger("prefect").addFilter(NoDocLinks())

# Tasks that do I/O are retried twice, after 1 and 5 s, when `transient` says so.
RETRIES, RETRY_DELAYS_S = 2, [1.0, 5.0]


@task(
    name="plan",
    cache_policy=NONE,
    retries=RETRIES,
    retry_delay_seconds=RETRY_DELAYS_S,
    retry_condition_fn=transient,
)
def plan_task(
    writer: Writer, found: Discovery, summary: RunSummary
) -> tuple[list[tuple[RawFile, str | None]], bool]:
    """Which raw files are new or changed, and whether their changed keys are recorded."""
    with writer.attempt() as conn:
        # changed keys only matter to an incremental transform; a full one reads everything.
        # When they go unrecorded, the warehouse is marked first, so that whichever run
        # transforms next rebuilds in full, even if this one stops before its transform.
        track = can_run_incrementally(conn, summary.full_refresh)
        if not track:
            set_state(conn, "all_dirty", "true")
        if summary.full_refresh:
            reset_state(conn)
        todo = load.plan(conn, found)
    summary.skipped_files = [list(item) for item in found.skipped]  # with files loaded earlier
    _log().info(
        "%d of %d raw files are new or changed (%d skipped)",
        len(todo),
        len(found.files),
        len(found.skipped),
    )
    return todo, track


@task(
    name="ingest",
    task_run_name="ingest-{stream}",
    cache_policy=NONE,
    retries=RETRIES,
    retry_delay_seconds=RETRY_DELAYS_S,
    retry_condition_fn=transient,
)
def ingest_stream(
    writer: Writer,
    stream: str,
    todo: list[tuple[RawFile, str | None]],
    summary: RunSummary,
    track: bool,
    bar: progress.Bar,
) -> load.LoadStats:
    """Load one stream's new or changed raw files, each in its own transaction."""
    started = time.monotonic()
    cfg = settings_mod.load()
    skipped: list[tuple[str, str]] = []
    with writer.attempt() as conn:
        pending = load.still_to_load(conn, todo)  # a retry goes on where the failure was
        for raw_file, _ in todo[: len(todo) - len(pending)]:
            bar.advance(raw_file)
        load.load(conn, pending, skipped, summary.run_id, cfg.read_chunk_bytes, track, bar.advance)
        stats = load.loaded_by(conn, summary.run_id, stream)  # earlier attempts' files too
    summary.skipped_files += [list(item) for item in skipped]
    summary.streams[stream] = vars(stats)
    _log().info(
        "%s: %d files, %s lines: %s accepted, %s rejected in %.1f s",
        stream,
        stats.files,
        f"{stats.lines:,}",
        f"{stats.accepted:,}",
        f"{stats.rejected:,}",
        time.monotonic() - started,
    )
    return stats


def begin_transform(conn: duckdb.DuckDBPyConnection, summary: RunSummary) -> incremental.Run | None:
    """Start the transform: the incremental state, or None for a full rebuild.

    Statements commit one by one (tables built inside one open transaction have no statistics,
    and DuckDB then plans their joins badly); a transform that starts and does not finish leaves
    `transform_complete` false, which makes the next run rebuild in full.
    """
    incremental_mode = can_run_incrementally(conn, summary.full_refresh)
    set_state(conn, "transform_complete", "false")
    summary.transform_mode = "incremental" if incremental_mode else "full"
    transform.prepare(conn, summary.as_of)
    if incremental_mode:
        return incremental.begin(conn, get_state(conn, "as_of"))
    set_state(conn, "all_dirty", "true")
    drop_change_logs(conn)  # everything is published whole
    return None


@task(name="transform", task_run_name="transform-{layer}", cache_policy=NONE)
def transform_layer(
    writer: Writer,
    layer: str,
    models: list[transform.Model],
    run: incremental.Run | None,
    bar: progress.Bar,
) -> list[str]:
    """Bring one layer's models up to date (incrementally when `run` is given), in order."""
    started = time.monotonic()
    logger = _log()
    seconds: dict[str, float] = {}
    clock = [started]

    def built(name: str) -> None:
        now = time.monotonic()
        seconds[name] = now - clock[0]
        logger.debug("%s in %.2f s", name, seconds[name])
        clock[0] = now
        bar.advance(name)

    with writer.attempt() as conn:
        if run is None:
            names = transform.build_models(conn, models, built)
        else:
            names = incremental.build_models(run, models, built)
    slowest = sorted(seconds.items(), key=lambda item: -item[1])[:3]
    logger.info(
        "%s: %d models %s in %.1f s (slowest: %s)",
        layer,
        len(names),
        "brought up to date" if run else "rebuilt",
        time.monotonic() - started,
        ", ".join(f"{name} {s:.1f} s" for name, s in slowest),
    )
    return names


def finish_transform(
    conn: duckdb.DuckDBPyConnection,
    summary: RunSummary,
    run: incremental.Run | None,
    built: list[str],
) -> None:
    """Finish the transform: compact (checkpointed after the publish, `settle_task`), or record
    the full build's order and hash."""
    if run is None:
        transform.record_sorted(conn, built)
        set_state(conn, "models_hash", transform.models_hash())
    else:
        try:
            incremental.finish(conn, built)
        except BaseException:
            incremental.end(conn)
            raise
    set_state(conn, "as_of", summary.as_of)
    set_state(conn, "transform_complete", "true")


def changed_tables(
    conn: duckdb.DuckDBPyConnection, dirty: dict[str, set[str]] | None
) -> dict[str, str | None] | None:
    """The published tables changed since the last publish (`dirty`: dirty_partitions), each
    with its change log (None: changed without one); None when everything is published whole."""
    if dirty is None:
        return None
    return {table: change_log(conn, table) for table, parts in dirty.items() if parts}


@task(name="audit", cache_policy=NONE)
def audit_task(writer: Writer, summary: RunSummary) -> None:
    """Fail the run, publishing nothing, when an audit returns rows."""
    started = time.monotonic()
    with writer.attempt() as conn:
        changed = changed_tables(conn, dirty_partitions(conn))
        results = audits.run_audits(conn, changed)
    summary.audits = {name: len(rows) for name, rows in results.items()}
    summary.seconds["audit"] = round(time.monotonic() - started, 3)
    _log().info(
        "%d audits in %.1f s: %s",
        len(results),
        summary.seconds["audit"],
        ", ".join(f"{name} {'failed' if rows else 'passed'}" for name, rows in results.items()),
    )
    failed = {name: rows for name, rows in results.items() if rows}
    if failed:
        detail = "; ".join(
            f"{name}: {len(rows)} failing rows, e.g. {rows[:3]}" for name, rows in failed.items()
        )
        raise AuditFailed(f"audit failed, nothing published (previous snapshot kept): {detail}")


@task(
    name="publish",
    cache_policy=NONE,
    retries=RETRIES,
    retry_delay_seconds=RETRY_DELAYS_S,
    retry_condition_fn=transient,
)
def publish_task(writer: Writer, warehouse: Path, summary: RunSummary) -> None:
    """Write the new snapshot aside and switch `current` to it.

    The serving segments are written alongside the tables, on a thread of their own: only
    those whose rows changed (a hash of their source rows names each). The `runs` table is written last, after this run's row
    holds its partitions and publish time, so the snapshot describes the run that published it.
    """
    started = time.monotonic()
    summary.snapshot_id = summary.snapshot_id or new_snapshot_id()
    summary.status = "published"
    if publish.current_id(warehouse) == summary.snapshot_id:
        return  # an earlier attempt switched `current` already; never rewrite a live snapshot
    with writer.attempt() as conn:
        tables = [*transform.published_models(), "rejects", "file_stats"]
        dirty = dirty_partitions(conn)
        changed = changed_tables(conn, dirty)
        logs = {t: log for t, log in (changed or {}).items() if log is not None}
        previous = publish.current_manifest(warehouse)
        with segments.Alongside(conn, warehouse, changed, previous) as alongside:
            result = publish.write_tables(
                conn,
                warehouse,
                tables,
                summary.snapshot_id,
                dirty,
                logs=logs,
                check=alongside.raise_if_failed,
            )
        try:
            entries, seg_written, seg_reused = alongside.result()
        except segments.AFTER_TABLES:
            _log().warning("the segments did not fit in memory beside the tables: written after")
            entries, seg_written, seg_reused = segments.write_segments(
                conn, warehouse, changed, previous
            )
        summary.partitions_written = result.written + 1  # and the `runs` file written below
        summary.partitions_reused = result.reused
        summary.seconds["segments"] = round(alongside.seconds, 3)
        summary.seconds["publish"] = round(time.monotonic() - started, 3)
        conn.execute("delete from runs where run_id = ?", [summary.run_id])
        record_run(conn, summary)
        publish.write_tables(conn, warehouse, ["runs"], summary.snapshot_id, into=result)
    info = {
        "run_id": summary.run_id,
        "as_of": summary.as_of,
        "published_at": datetime.now(UTC).isoformat(),
        "segment_buckets": segments.BUCKETS,
        **entries,
    }
    with writer.attempt() as conn:
        mark_publishing(conn, summary.snapshot_id)
    publish.finish(warehouse, result, info)
    _log().info(
        "snapshot %s: %d partitions written, %d reused; %d serving segments written, %d reused "
        "(%.1f s); in %.1f s",
        summary.snapshot_id,
        summary.partitions_written,
        summary.partitions_reused,
        seg_written,
        seg_reused,
        summary.seconds["segments"],
        time.monotonic() - started,
    )


@task(name="checkpoint", cache_policy=NONE)
def settle_task(writer: Writer, summary: RunSummary) -> None:
    """Write what the run committed into the database file (a checkpoint), after the switch:
    until then it is in the write-ahead log, as durable, and answers are fresh sooner. The
    snapshot is published by now, so a failure here fails nothing: the connection is closed,
    and the next open of the database replays the log (and checkpoints it)."""
    started = time.monotonic()
    try:
        incremental.settle(writer.conn)
    except duckdb.Error as error:
        writer.close()
        if stop_signal(error) is not None:  # a stop, not a failure
            raise
        _log().warning(
            "the checkpoint after the publish failed (%s); the snapshot is published, and "
            "the next run replays the write-ahead log",
            str(error).splitlines()[0],
        )
    summary.seconds["checkpoint"] = round(time.monotonic() - started, 3)


@task(
    name="clean-up",
    cache_policy=NONE,
    retries=RETRIES,
    retry_delay_seconds=RETRY_DELAYS_S,
    retry_condition_fn=transient,
)
def cleanup_task(warehouse: Path, summary: RunSummary) -> None:
    """Remove snapshots past retention and unreferenced data files."""
    started = time.monotonic()
    cfg = settings_mod.load()
    summary.cleaned = publish.clean_up(warehouse, cfg.keep_snapshots, cfg.retention_minutes)
    summary.seconds["clean-up"] = round(time.monotonic() - started, 3)
    _log().info(
        "clean-up: %s",
        ", ".join(f"{k} {v}" for k, v in summary.cleaned.items()) or "nothing to remove",
    )


# The transform step of a run: brings every model's table in the writer up to date.
TransformStep = Callable[[Writer, RunSummary, progress.Display], None]


def transform_in_process(writer: Writer, summary: RunSummary, display: progress.Display) -> None:
    """Bring the models up to date in the writer's DuckDB (incrementally when it can)."""
    run_state = begin_transform(writer.conn, summary)
    built: list[str] = []
    layers = transform.layers()
    with display.bar("transform", sum(map(len, layers.values())), "models") as bar:
        for layer, models in layers.items():
            built += transform_layer(writer, layer, models, run_state, bar)
    finish_transform(writer.conn, summary, run_state, built)


def stop_if_terminated(note: Note) -> None:
    """Stop the run on a stop signal that the interpreter noted and library code swallowed
    (see run/signals.py), as its handler would have: checked between steps. A SIGTERM raises
    Prefect's TerminationSignal; a SIGINT raises KeyboardInterrupt while Python's own handler
    is installed (`watch` installs its own: there, SIGINT stops after the run)."""
    noted = note.take()
    if signal.SIGTERM in noted:
        raise TerminationSignal(signal.SIGTERM)
    if signal.SIGINT in noted and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        raise KeyboardInterrupt


def run(
    raw: Path,
    warehouse: Path,
    as_of: datetime | None,
    full_refresh: bool,
    transform_step: TransformStep | None = None,
) -> RunSummary:
    """One pipeline run under the writer lock: load, transform (`transform_step`, by default in
    this process), audit, publish, clean up."""
    cfg = settings_mod.load()
    summary = new_summary(as_of, full_refresh)
    started = time.monotonic()
    found = discover(raw)
    try:
        with (
            Note() as note,
            writer_lock(warehouse, cfg.lock_timeout_s),
            progress.Display() as display,
        ):
            writer = Writer(warehouse)
            try:
                recovered, abandoned = recover_publish(writer.conn, publish.current_id(warehouse))
                if recovered:
                    _log().info("the previous run's snapshot was published: marked so now")
                if abandoned:  # written aside, never switched to: never served, so no lease
                    publish.remove_unpublished(warehouse, abandoned)
                todo, track = plan_task(writer, found, summary)
                with display.bar("ingest", len(todo), "files") as bar:
                    for stream, files in load.by_stream(todo).items():
                        stop_if_terminated(note)
                        ingest_stream(writer, stream, files, summary, track, bar)
                summary.streams = dict(sorted(summary.streams.items()))
                summary.seconds["ingest"] = round(time.monotonic() - started, 3)
                if nothing_to_publish(writer.conn, warehouse, summary, summary.totals()["files"]):
                    _log().info("no new or changed raw files: nothing to publish")
                    return no_op(summary)
                stop_if_terminated(note)
                transform_started = time.monotonic()
                (transform_step or transform_in_process)(writer, summary, display)
                summary.seconds["transform"] = round(time.monotonic() - transform_started, 3)
                stop_if_terminated(note)
                audit_task(writer, summary)
                stop_if_terminated(note)
                publish_task(writer, warehouse, summary)
                mark_published(writer.conn)
                settle_task(writer, summary)
                cleanup_task(warehouse, summary)
            finally:
                summary.seconds["total"] = round(time.monotonic() - started, 3)
                writer.close()
    except Exception as error:
        if disk_full(error):
            raise UserError(
                f"no space left on the device of {warehouse} (or of METRICS_ETL_TEMP_DIR): free "
                "some space and run again; the current snapshot is still served as it was"
            ) from None
        stop = stop_signal(error)
        if isinstance(stop, TerminationSignal):  # the flow engine then stops as for a signal
            raise TerminationSignal(stop.signal) from error
        if isinstance(stop, Stopped) and stop is not error:
            raise Stopped(stop.signum) from error
        raise
    return summary
