"""The pipeline state, owned here alone: the writer lock, the state tables of the writer's
database (manifest of loaded files, file_stats, rejects, dirty keys and partitions, runs, the
pipeline_state flags) and the flags' accessors. Every other module reads and writes them
through this one."""

from __future__ import annotations

import errno
import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import duckdb

from metrics_etl import db
from metrics_etl.contract import DUCKDB_TYPES, STREAMS
from metrics_etl.errors import UserError


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


def disk_full(error: BaseException) -> bool:
    """True when an error means the disk (or a quota) is full."""
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    return any(text in str(error) for text in ("No space left on device", "Disk quota exceeded"))


def get_state(conn: duckdb.DuckDBPyConnection, key: str) -> str | None:
    """A value of the writer's pipeline state."""
    rows = conn.execute("select value from pipeline_state where key = ?", [key]).fetchall()
    return rows[0][0] if rows else None


def set_state(conn: duckdb.DuckDBPyConnection, key: str, value: str) -> None:
    """Set a value of the writer's pipeline state."""
    conn.execute("insert or replace into pipeline_state values (?, ?)", [key, value])


def mark_published(conn: duckdb.DuckDBPyConnection) -> None:
    """Everything loaded is now published: forget what was pending."""
    conn.execute("begin transaction")
    conn.execute("delete from dirty_keys; delete from dirty_parts;")
    set_state(conn, "all_dirty", "false")
    set_state(conn, "dirty", "false")
    conn.execute("commit")


def create_state_tables(conn: duckdb.DuckDBPyConnection) -> None:
    """Create the manifest, accounting, rejects and raw tables if missing."""
    conn.execute(
        """
        create table if not exists manifest (
            file varchar primary key, stream varchar, format varchar,
            size bigint, mtime_ns bigint, sha256 varchar, run_id varchar);
        create table if not exists file_stats (
            file varchar primary key, stream varchar, lines_read bigint,
            blank_lines bigint, accepted bigint, rejected bigint, run_id varchar);
        create table if not exists rejects (
            stream varchar, file varchar, line bigint, raw varchar, reason varchar,
            run_id varchar);
        create table if not exists dirty_keys (stream varchar, key bigint, ref bigint);
        create table if not exists dirty_parts (table_name varchar, part varchar);
        create table if not exists pipeline_state (key varchar primary key, value varchar);
        """
    )
    for stream in STREAMS.values():
        cols = ", ".join(f"{f.name} {DUCKDB_TYPES[f.type]}" for f in stream.fields)
        conn.execute(
            f"create table if not exists raw_{stream.name} ({cols}, _file varchar, _line bigint)"
        )


def reset_state(conn: duckdb.DuckDBPyConnection) -> None:
    """Forget every loaded file (for --full-refresh)."""
    conn.execute(
        "delete from manifest; delete from file_stats; delete from rejects; delete from dirty_keys;"
    )
    for stream in STREAMS.values():
        conn.execute(f"delete from raw_{stream.name}")
