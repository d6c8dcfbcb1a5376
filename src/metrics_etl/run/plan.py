"""Planning a run outside Prefect: the run summary, opening the writer, whether the transform
can go incremental, and whether a run has anything to do at all.

Nothing here imports Prefect, so that `metrics-etl run` can find out in well under a second
that there is nothing to do (`check`), before it starts a flow.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import duckdb

from metrics_etl import db
from metrics_etl import settings as settings_mod
from metrics_etl.errors import UserError
from metrics_etl.ingest import discover as discovery
from metrics_etl.ingest import load, validate
from metrics_etl.models import build as transform
from metrics_etl.publish import snapshot as publish
from metrics_etl.state import (
    create_run_table,
    create_state_tables,
    get_state,
    writer_lock,
)


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
    as_of_given: bool = False

    def totals(self) -> dict[str, int]:
        """Files, records and rejects loaded by this run, over all streams."""
        keys = ("files", "lines", "accepted", "rejected")
        return {k: sum(int(s[k]) for s in self.streams.values()) for k in keys}


class AuditFailed(Exception):
    """An audit returned failing rows; nothing was published."""


def open_writer(warehouse: Path) -> duckdb.DuckDBPyConnection:
    """Open the writer database with every state table and macro in place."""
    conn = db.connect_writer(warehouse)
    create_state_tables(conn)
    create_run_table(conn)
    validate.install(conn)
    return conn


def can_run_incrementally(conn: duckdb.DuckDBPyConnection, full_refresh: bool) -> bool:
    """Incremental needs built tables from the same models and no pending full rebuild."""
    return (
        not full_refresh
        and get_state(conn, "transform_complete") == "true"
        and get_state(conn, "models_hash") == transform.models_hash()
        and get_state(conn, "all_dirty") == "false"
        and transform.model_tables_exist(conn)
    )


def dirty_partitions(conn: duckdb.DuckDBPyConnection) -> dict[str, set[str]] | None:
    """Partitions changed since the last publish per model, or None to write them all."""
    if get_state(conn, "all_dirty") != "false":
        return None
    dirty: dict[str, set[str]] = {name: set() for name in transform.published_models()}
    for table, part in conn.execute("select distinct table_name, part from dirty_parts").fetchall():
        dirty.setdefault(table, set()).add(part)
    return dirty


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
        as_of_given=as_of is not None,
    )


def last_published_as_of(warehouse: Path) -> str | None:
    """The as-of time of the current snapshot, if any."""
    current = publish.current_snapshot(warehouse)
    if current is None:
        return None
    return json.loads((current / "manifest.json").read_text()).get("as_of")


def discover(raw: Path) -> discovery.Discovery:
    """The raw folder's files; an error when it holds none."""
    found = discovery.discover(raw)
    if not found.files and not found.skipped:
        raise UserError(
            f"raw folder {raw} is empty; put files under {raw}/<stream>/ or run `metrics-etl generate`"
        )
    return found


def nothing_to_publish(
    conn: duckdb.DuckDBPyConnection, warehouse: Path, summary: RunSummary, loaded: int
) -> bool:
    """True when a run loaded nothing, nothing is pending, and the as-of time stays the same."""
    published_as_of = last_published_as_of(warehouse)
    as_of_kept = not summary.as_of_given or published_as_of == summary.as_of
    return (
        not (loaded or summary.full_refresh or get_state(conn, "dirty") == "true")
        and published_as_of is not None
        and as_of_kept
    )


def no_op(summary: RunSummary) -> RunSummary:
    """Mark a run that had nothing to do."""
    summary.status = "no-op"
    summary.message = "no new or changed raw files; the current snapshot stays as it is"
    return summary


def check(
    raw: Path, warehouse: Path, as_of: datetime | None, full_refresh: bool
) -> RunSummary | None:
    """A no-op summary when a run would have nothing to do, else None (without Prefect).

    It plans as a run does (new or changed files, pending work, the as-of time), under the
    writer lock, so that a scheduled or repeated `run` with nothing new costs well under a
    second instead of starting a flow.
    """
    cfg = settings_mod.load()
    summary = new_summary(as_of, full_refresh)
    started = time.monotonic()
    found = discover(raw)
    db.check_warehouse_path(warehouse)
    if full_refresh or publish.current_snapshot(warehouse) is None:
        return None
    with writer_lock(warehouse, cfg.lock_timeout_s):
        conn = open_writer(warehouse)
        try:
            if load.plan(conn, found) or not nothing_to_publish(conn, warehouse, summary, 0):
                return None
        finally:
            conn.close()
    summary.skipped_files = [list(item) for item in found.skipped]  # with files loaded earlier
    summary.seconds["total"] = round(time.monotonic() - started, 3)
    return no_op(summary)


def format_summary(summary: RunSummary) -> str:
    """A short, human-readable run summary."""
    mode = f", {summary.transform_mode} transform" if summary.transform_mode else ""
    lines = [f"run {summary.run_id}: {summary.status} (as of {summary.as_of}{mode})"]
    if summary.message:
        lines.append(f"  {summary.message}")
    elif not summary.streams:
        lines.append("  no new or changed raw files")
    for name, s in summary.streams.items():
        lines.append(
            f"  {name:<14} {s['files']:>5} files {s['accepted']:>11,} records {s['rejected']:>7,} rejected"
        )
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
