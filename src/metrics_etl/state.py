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
    """Everything loaded is now published: forget what was pending (and the change logs)."""
    conn.execute("begin transaction")
    conn.execute("delete from dirty_keys; delete from dirty_parts;")
    drop_change_logs(conn)
    set_state(conn, "change_logs", "on")  # changes from here on are logged from the start
    set_state(conn, "all_dirty", "false")
    set_state(conn, "dirty", "false")
    set_state(conn, "publishing", "")
    conn.execute("commit")


def mark_publishing(conn: duckdb.DuckDBPyConnection, snapshot_id: str) -> None:
    """Note the snapshot about to become `current` (see recover_publish)."""
    set_state(conn, "publishing", snapshot_id)


def recover_publish(
    conn: duckdb.DuckDBPyConnection, current_id: str | None
) -> tuple[bool, str | None]:
    """After a run that stopped while publishing: if it switched `current` to its snapshot but
    did not mark it published, its changes are served, so they are marked published now (the
    change logs and the publish's previous snapshot then agree again); if it stopped before the
    switch, its snapshot was never served. Returns (marked now, the id of a snapshot written
    aside and never switched to, or None)."""
    pending = get_state(conn, "publishing")
    if not pending:
        return False, None
    if pending == current_id:
        mark_published(conn)
        return True, None
    set_state(conn, "publishing", "")
    return False, pending


# -- change logs: the rows each published table lost and gained since the last publish ------
#
# `changes_<table>` holds the table's columns and `_added` (false: a row removed, true: a row
# added), appended by the incremental transform as it replaces rows. Publish writes a changed
# partition's added rows as a small file of their own when no removed row is in its files. A
# table changed without a log (rebuilt in full: `unlogged:<table>` in pipeline_state) has its
# changed partitions rewritten whole.

CHANGES_PREFIX = "changes_"


def log_changes(conn: duckdb.DuckDBPyConnection, table: str, removed: str, added: str) -> None:
    """Append the rows of relation `removed` (gone from `table`) and `added` to its change log."""
    log = CHANGES_PREFIX + table
    conn.execute(
        f"create table if not exists {log} as select *, true as _added from {table} limit 0"
    )
    conn.execute(f"insert into {log} by name select *, false as _added from {removed}")
    conn.execute(f"insert into {log} by name select *, true as _added from {added}")


def mark_unlogged(conn: duckdb.DuckDBPyConnection, table: str) -> None:
    """Note that `table` changed without a change log (its changed partitions are rewritten)."""
    set_state(conn, f"unlogged:{table}", "true")


def change_log(conn: duckdb.DuckDBPyConnection, table: str) -> str | None:
    """The change log of `table` when it holds every change since the last publish, else None
    (no log; changed without one; or logging was not on at the last publish, as after an
    upgrade with changes pending)."""
    if get_state(conn, "change_logs") != "on" or get_state(conn, f"unlogged:{table}") == "true":
        return None
    log = CHANGES_PREFIX + table
    found = conn.execute(
        "select count(*) from duckdb_tables() where table_name = ? and not temporary", [log]
    ).fetchall()[0][0]
    return log if found else None


def drop_change_logs(conn: duckdb.DuckDBPyConnection) -> None:
    """Forget every change log (after a publish, or before a full rebuild)."""
    logs = conn.execute(
        "select table_name from duckdb_tables() where starts_with(table_name, ?) and not temporary",
        [CHANGES_PREFIX],
    ).fetchall()
    for (log,) in logs:
        conn.execute(f"drop table {log}")
    conn.execute("delete from pipeline_state where key like 'unlogged:%'")


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
