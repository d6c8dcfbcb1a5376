"""DuckDB connections for the writer (the warehouse state file) and for readers."""

from __future__ import annotations

from pathlib import Path

import duckdb

from metrics_etl import settings as settings_mod
from metrics_etl.errors import UserError


def state_dir(warehouse: Path) -> Path:
    """Folder of the writer's private state (never opened by readers)."""
    return warehouse / "_state"


def configure(conn: duckdb.DuckDBPyConnection, temp_dir: Path | None = None) -> None:
    """Apply memory limit, threads, spill folder and UTC to a connection."""
    cfg = settings_mod.load()
    conn.execute("set TimeZone = 'UTC'")
    conn.execute(f"set memory_limit = '{cfg.memory_limit}'")
    conn.execute(f"set threads = {int(cfg.threads)}")
    spill = cfg.temp_dir or temp_dir
    if spill is not None:
        spill.mkdir(parents=True, exist_ok=True)
        conn.execute("set temp_directory = ?", [str(spill)])
    conn.execute("set preserve_insertion_order = false")


def check_warehouse_path(warehouse: Path) -> Path:
    """The warehouse path, if DuckDB can keep a database under it (else a UserError)."""
    if "?" in str(warehouse.absolute()):  # DuckDB reads what follows '?' in a database path
        raise UserError(
            f"the warehouse path {warehouse} contains '?', which DuckDB cannot open a database "
            "under; choose a warehouse folder without '?'"
        )
    return warehouse


def connect_writer(warehouse: Path) -> duckdb.DuckDBPyConnection:
    """Open the writer's DuckDB file with spilling configured."""
    folder = state_dir(check_warehouse_path(warehouse))
    folder.mkdir(parents=True, exist_ok=True)
    conn = duckdb.connect(str(folder / "warehouse.duckdb"))
    configure(conn, folder / "spill")
    return conn
