"""The pipeline's tasks: lock, ingest, transform, audit, publish, clean up."""

from __future__ import annotations

import fcntl
import json
import os
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import duckdb
from prefect import task
from prefect.cache_policies import NONE

from metrics_etl import db, incremental, ingest, publish, transform, validate
from metrics_etl import settings as settings_mod
from metrics_etl.errors import UserError

AUDIT_DIR = transform.SQL_DIR / "audits"


@dataclass
class RunSummary:
    """What one run did, for the console, the `runs` table and the Prefect artifact."""

    run_id: str
    started_at: str
    as_of: str
    full_refresh: bool
    status: str = "running"
    streams: dict[str, dict] = field(default_factory=dict)
    skipped_files: list[list[str]] = field(default_factory=list)
    snapshot_id: str | None = None
    partitions_written: int = 0
    partitions_reused: int = 0
    audits: dict[str, int] = field(default_factory=dict)
    cleaned: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    message: str = ""
    transform_mode: str = ""

    def totals(self) -> dict[str, int]:
        """Files, records and rejects loaded by this run, over all streams."""
        keys = ("files", "lines", "accepted", "rejected")
        return {k: sum(int(s[k]) for s in self.streams.values()) for k in keys}


class AuditFailed(Exception):
    """An audit returned failing rows; nothing was published."""


@contextmanager
def writer_lock(warehouse: Path, timeout_s: float) -> Iterator[None]:
    """Hold the single-writer lock of a warehouse, waiting up to timeout_s."""
    folder = db.state_dir(warehouse)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "writer.lock"
    handle = path.open("a+")
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except OSError:
            if time.monotonic() >= deadline:
                handle.seek(0)
                holder = handle.read().strip() or "another process"
                handle.close()
                raise UserError(
                    f"another run is writing to {warehouse} ({holder}); wait for it to finish "
                    f"or set METRICS_ETL_LOCK_TIMEOUT_S to wait longer"
                ) from None
            time.sleep(0.5)
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()}, started {datetime.now(UTC).isoformat(timespec='seconds')}")
    handle.flush()
    try:
        yield
    finally:
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
        handle.close()


def create_run_table(conn: duckdb.DuckDBPyConnection) -> None:
    """The `runs` table: one row per run that published."""
    conn.execute(
        """
        create table if not exists runs (
            run_id varchar, started_at timestamptz, as_of timestamptz, full_refresh boolean,
            status varchar, snapshot_id varchar, files_loaded bigint, records_accepted bigint,
            records_rejected bigint, partitions_written bigint, partitions_reused bigint,
            summary json)
        """
    )


def open_writer(warehouse: Path) -> duckdb.DuckDBPyConnection:
    """Open the writer database with every state table and macro in place."""
    conn = db.connect_writer(warehouse)
    ingest.create_state_tables(conn)
    create_run_table(conn)
    validate.install(conn)
    return conn


@task(name="ingest", retries=2, retry_delay_seconds=[1, 5], cache_policy=NONE)
def ingest_task(
    conn: duckdb.DuckDBPyConnection, raw: Path, summary: RunSummary, chunk_bytes: int
) -> int:
    """Load new or changed raw files; returns how many were loaded."""
    started = time.monotonic()
    # changed keys only matter to an incremental transform; a full one reads everything. When
    # they go unrecorded, the warehouse is marked first, so that whichever run transforms next
    # rebuilds in full, even if this one stops before its transform.
    track = can_run_incrementally(conn, summary.full_refresh)
    if not track:
        _set_state(conn, "all_dirty", "true")
    if summary.full_refresh:
        ingest.reset_state(conn)
    found = ingest.discover(raw)
    if not found.files and not found.skipped:
        raise UserError(
            f"raw folder {raw} is empty; put files under {raw}/<stream>/ or run `metrics-etl generate`"
        )
    stats = ingest.ingest(conn, found, summary.run_id, chunk_bytes, track)
    summary.skipped_files = [list(s) for s in found.skipped]  # ingest adds files it could not read
    summary.streams = {name: vars(s) for name, s in sorted(stats.items())}
    summary.seconds["ingest"] = round(time.monotonic() - started, 3)
    return sum(s.files for s in stats.values())


def _state(conn: duckdb.DuckDBPyConnection, key: str) -> str | None:
    """A value of the writer's pipeline state."""
    rows = conn.execute("select value from pipeline_state where key = ?", [key]).fetchall()
    return rows[0][0] if rows else None


def _set_state(conn: duckdb.DuckDBPyConnection, key: str, value: str) -> None:
    """Set a value of the writer's pipeline state."""
    conn.execute("insert or replace into pipeline_state values (?, ?)", [key, value])


def can_run_incrementally(conn: duckdb.DuckDBPyConnection, full_refresh: bool) -> bool:
    """Incremental needs built tables from the same models and no pending full rebuild."""
    return (
        not full_refresh
        and _state(conn, "transform_complete") == "true"
        and _state(conn, "models_hash") == transform.models_hash()
        and _state(conn, "all_dirty") == "false"
        and transform.model_tables_exist(conn)
    )


@task(name="transform", cache_policy=NONE)
def transform_task(conn: duckdb.DuckDBPyConnection, summary: RunSummary) -> list[str]:
    """Bring the SQL models up to date: incrementally when possible, else in full.

    Statements commit one by one (tables built inside one open transaction have no statistics,
    and DuckDB then plans their joins badly); a transform that starts and does not finish leaves
    `transform_complete` false, which makes the next run rebuild in full.
    """
    started = time.monotonic()
    incremental_mode = can_run_incrementally(conn, summary.full_refresh)
    _set_state(conn, "transform_complete", "false")
    if incremental_mode:
        transform.prepare(conn, summary.as_of)
        built = incremental.run_incremental(conn, _state(conn, "as_of"))
    else:
        _set_state(conn, "all_dirty", "true")
        built = transform.run_models(conn, summary.as_of)
        _set_state(conn, "models_hash", transform.models_hash())
    _set_state(conn, "as_of", summary.as_of)
    _set_state(conn, "transform_complete", "true")
    summary.transform_mode = "incremental" if incremental_mode else "full"
    summary.seconds["transform"] = round(time.monotonic() - started, 3)
    return built


def dirty_partitions(conn: duckdb.DuckDBPyConnection) -> dict[str, set[str]] | None:
    """Partitions changed since the last publish per model, or None to write them all."""
    if _state(conn, "all_dirty") != "false":
        return None
    dirty: dict[str, set[str]] = {name: set() for name in transform.published_models()}
    for table, part in conn.execute("select distinct table_name, part from dirty_parts").fetchall():
        dirty.setdefault(table, set()).add(part)
    return dirty


def run_audits(conn: duckdb.DuckDBPyConnection) -> dict[str, list[tuple]]:
    """Run every audit; returns failing rows per audit (empty lists when all pass)."""
    return {
        path.stem: conn.execute(path.read_text()).fetchall()
        for path in sorted(AUDIT_DIR.glob("*.sql"))
    }


@task(name="audit", cache_policy=NONE)
def audit_task(conn: duckdb.DuckDBPyConnection, summary: RunSummary) -> None:
    """Fail the run, publishing nothing, when an audit returns rows."""
    started = time.monotonic()
    results = run_audits(conn)
    summary.audits = {name: len(rows) for name, rows in results.items()}
    summary.seconds["audit"] = round(time.monotonic() - started, 3)
    failed = {name: rows for name, rows in results.items() if rows}
    if failed:
        detail = "; ".join(
            f"{name}: {len(rows)} failing rows, e.g. {rows[:3]}" for name, rows in failed.items()
        )
        raise AuditFailed(f"audit failed, nothing published (previous snapshot kept): {detail}")


def record_run(conn: duckdb.DuckDBPyConnection, summary: RunSummary) -> None:
    """Insert the run's row into `runs`."""
    totals = summary.totals()
    conn.execute(
        "insert into runs values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            summary.run_id,
            summary.started_at,
            summary.as_of,
            summary.full_refresh,
            summary.status,
            summary.snapshot_id,
            totals["files"],
            totals["accepted"],
            totals["rejected"],
            summary.partitions_written,
            summary.partitions_reused,
            json.dumps(vars(summary), default=str),
        ],
    )


@task(name="publish", retries=2, retry_delay_seconds=[1, 5], cache_policy=NONE)
def publish_task(conn: duckdb.DuckDBPyConnection, warehouse: Path, summary: RunSummary) -> None:
    """Write the new snapshot aside and switch `current` to it."""
    started = time.monotonic()
    summary.snapshot_id = summary.snapshot_id or new_snapshot_id()
    summary.status = "published"
    conn.execute("delete from runs where run_id = ?", [summary.run_id])
    record_run(conn, summary)
    tables = [*transform.published_models(), "rejects", "file_stats", "runs"]
    result = publish.publish(
        conn,
        warehouse,
        tables,
        summary.snapshot_id,
        {
            "run_id": summary.run_id,
            "as_of": summary.as_of,
            "published_at": datetime.now(UTC).isoformat(),
        },
        dirty_partitions(conn),
    )
    summary.partitions_written = result.written
    summary.partitions_reused = result.reused
    summary.seconds["publish"] = round(time.monotonic() - started, 3)
    conn.execute("delete from runs where run_id = ?", [summary.run_id])
    record_run(conn, summary)


@task(name="clean-up", cache_policy=NONE)
def cleanup_task(warehouse: Path, summary: RunSummary) -> None:
    """Remove snapshots past retention and unreferenced data files."""
    cfg = settings_mod.load()
    summary.cleaned = publish.clean_up(warehouse, cfg.keep_snapshots, cfg.retention_minutes)


def new_snapshot_id() -> str:
    """Sortable, unique snapshot id."""
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ") + "-" + uuid.uuid4().hex[:6]


def new_summary(as_of: datetime | None, full_refresh: bool) -> RunSummary:
    """A fresh run summary with its id, start time and as-of time."""
    now = datetime.now(UTC)
    return RunSummary(
        run_id=uuid.uuid4().hex[:12],
        started_at=now.isoformat(),
        as_of=(as_of or now).astimezone(UTC).isoformat(),
        full_refresh=full_refresh,
    )


def last_published_as_of(warehouse: Path) -> str | None:
    """The as-of time of the current snapshot, if any."""
    current = publish.current_snapshot(warehouse)
    if current is None:
        return None
    return json.loads((current / "manifest.json").read_text()).get("as_of")


def _published(conn: duckdb.DuckDBPyConnection) -> None:
    """Everything loaded is now published: forget what was pending."""
    conn.execute("begin transaction")
    conn.execute("delete from dirty_keys; delete from dirty_parts;")
    _set_state(conn, "all_dirty", "false")
    _set_state(conn, "dirty", "false")
    conn.execute("commit")


def run(raw: Path, warehouse: Path, as_of: datetime | None, full_refresh: bool) -> RunSummary:
    """One pipeline run under the writer lock: load, transform, audit, publish, clean up."""
    cfg = settings_mod.load()
    summary = new_summary(as_of, full_refresh)
    started = time.monotonic()
    with writer_lock(warehouse, cfg.lock_timeout_s):
        conn = open_writer(warehouse)
        try:
            loaded = ingest_task(conn, raw, summary, cfg.read_chunk_bytes)
            published_as_of = last_published_as_of(warehouse)
            same_as_of = as_of is None or published_as_of == summary.as_of
            if (
                not (loaded or full_refresh or _state(conn, "dirty") == "true")
                and published_as_of
                and same_as_of
            ):
                summary.status = "no-op"
                summary.message = "no new or changed raw files; the current snapshot stays as it is"
                return summary
            transform_task(conn, summary)
            audit_task(conn, summary)
            publish_task(conn, warehouse, summary)
            _published(conn)
            cleanup_task(warehouse, summary)
        finally:
            summary.seconds["total"] = round(time.monotonic() - started, 3)
            conn.close()
    return summary


def format_summary(summary: RunSummary) -> str:
    """A short, human-readable run summary."""
    mode = f", {summary.transform_mode} transform" if summary.transform_mode else ""
    lines = [f"run {summary.run_id}: {summary.status} (as of {summary.as_of}{mode})"]
    if summary.message:
        lines.append(f"  {summary.message}")
    for name, s in summary.streams.items():
        lines.append(
            f"  {name:<14} {s['files']:>5} files {s['accepted']:>11,} records {s['rejected']:>7,} rejected"
        )
    if not summary.streams:
        lines.append("  no new or changed raw files")
    for rel, reason in summary.skipped_files:
        lines.append(f"  skipped {rel}: {reason}")
    if summary.snapshot_id:
        lines.append(
            f"  published snapshot {summary.snapshot_id}: {summary.partitions_written} partitions "
            f"written, {summary.partitions_reused} reused"
        )
    timing = ", ".join(f"{k} {v:.1f}s" for k, v in summary.seconds.items())
    lines.append(f"  time: {timing}")
    return "\n".join(lines)
