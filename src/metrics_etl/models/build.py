"""Run the SQL models in dependency order: macros, staging, then marts."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from pathlib import Path

import duckdb

from metrics_etl import state
from metrics_etl.models import catalog as models
from metrics_etl.models.catalog import SQL_DIR, Model, load_models
from metrics_etl.settings import crash_point

__all__ = ["SQL_DIR", "Model", "load_models"]

# Staging tables whose events or versions count in report_stats through their report_id.
STATS_EVENTS = (
    "stg_reads",
    "stg_report_runs",
    "stg_report_edits",
    "stg_explorations",
    "stg_schedules",
)
# Models built a batch of accounts at a time, with the report-keyed inputs that are filtered
# to each batch (everything else they read is small: users, accounts).
BY_ACCOUNTS = {"report_stats": ("int_current_reports", "int_report_positions", *STATS_EVENTS)}
REPORT_BYTES = 2048  # memory per report a batch of report_stats may take (measured ~1 KiB)
MIN_BATCH_REPORTS = 10_000


def sql_dir() -> Path:
    """Where the SQL models live (package data: metrics_etl/models/sql)."""
    return SQL_DIR


def substitute(sql: str, replacements: dict[str, str]) -> str:
    """Point a model's `from`/`join` references at other relations."""
    for old, new in replacements.items():
        sql = re.sub(rf"\b(from|join)(\s+){old}\b", rf"\1\2{new}", sql)
    return sql


def in_storage_order(model: Model, sql: str | None = None) -> str:
    """A model's query (or `sql` in its place), ordered as the model's table is stored."""
    sql = sql or model.sql
    order = model.storage_order
    return f"select * from ({sql}) order by {order}" if order else sql


def install_macros(conn: duckdb.DuckDBPyConnection, root: Path | None = None) -> None:
    """Create the shared SQL macros, and `unique_keys_query()`: the text of the unique-keys audit,
    generated from the models' declared grains (audits/unique_keys.sql runs it)."""
    root = root or sql_dir()
    for path in sorted((root / "macros").glob("*.sql")):
        conn.execute(path.read_text())
    text = models.unique_keys_query().replace("'", "''")
    conn.execute(f"create or replace macro unique_keys_query() as '{text}'")


def models_hash(root: Path | None = None) -> str:
    """A hash of every SQL file: a change to the models forces a full rebuild."""
    root = root or sql_dir()
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.sql")):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def model_tables_exist(conn: duckdb.DuckDBPyConnection) -> bool:
    """True when every model has a table in the writer database."""
    existing = {row[0] for row in conn.execute("select table_name from duckdb_tables()").fetchall()}
    return all(m.name in existing for m in load_models())


def prepare(conn: duckdb.DuckDBPyConnection, as_of: str) -> None:
    """Macros and the as-of variable that models use."""
    install_macros(conn)
    conn.execute("set variable as_of = ?", [as_of])


def layers() -> dict[str, list[Model]]:
    """The models of each layer, staging first, each in dependency order."""
    found: dict[str, list[Model]] = {"staging": [], "marts": []}
    for model in load_models():
        found[model.layer].append(model)
    return found


def run_models(conn: duckdb.DuckDBPyConnection, as_of: str) -> list[str]:
    """Rebuild every model as a table; returns the model names in build order."""
    prepare(conn, as_of)
    built = [name for models in layers().values() for name in build_models(conn, models)]
    record_sorted(conn, built)
    return built


def build_models(
    conn: duckdb.DuckDBPyConnection,
    models: list[Model],
    on_model: Callable[[str], None] | None = None,
) -> list[str]:
    """Rebuild models in full, in order (insertion order kept); returns their names."""
    conn.execute("set preserve_insertion_order = true")
    try:
        for model in models:
            build_model(conn, model)
            if model.layer == "marts":
                crash_point("transform")
            if on_model:
                on_model(model.name)
    finally:
        conn.execute("set preserve_insertion_order = false")
    return [m.name for m in models]


def build_model(conn: duckdb.DuckDBPyConnection, model: Model) -> None:
    """(Re)build one model's table in full, in its storage order (with insertion order kept)."""
    if model.name in BY_ACCOUNTS:
        build_by_accounts(conn, model)
    else:
        conn.execute(f"create or replace table {model.name} as {in_storage_order(model)}")


def memory_limit_bytes(conn: duckdb.DuckDBPyConnection) -> int:
    """The connection's DuckDB memory limit in bytes."""
    text = conn.execute("select current_setting('memory_limit')").fetchall()[0][0]
    match = re.fullmatch(r"([0-9.]+)\s*([KMGT]?i?B|bytes)", text.strip())
    if match is None:
        return 4 * 2**30
    number, unit = match.groups()
    power = "KMGT".find(unit[0]) + 1 if unit != "bytes" else 0
    return int(float(number) * (1024 if "i" in unit else 1000) ** power)


def build_by_accounts(conn: duckdb.DuckDBPyConnection, model: Model) -> int:
    """Build a report-keyed model one batch of accounts at a time, each batch sized to the memory
    limit: its email lists and joins are held in memory per report, so one pass over 10M reports
    would need several GiB. Batches are in account order, so the table stays in storage order.
    Returns the number of batches."""
    per_batch = max(MIN_BATCH_REPORTS, memory_limit_bytes(conn) // REPORT_BYTES)
    conn.execute(
        "create or replace temp table report_batches as "
        "select account_id, (sum(reports) over (order by account_id) - 1) // $per_batch as batch "
        "from (select account_id, count(*) as reports from int_current_reports group by all)",
        {"per_batch": per_batch},
    )
    batches = conn.execute("select distinct batch from report_batches order by batch").fetchall()
    inputs = BY_ACCOUNTS[model.name]
    for table in inputs:
        conn.execute(
            f"create or replace temp view batch_{table} as from {table} where report_id in "
            "(select report_id from int_current_reports where account_id in "
            "(select account_id from report_batches where batch = getvariable('batch')))"
        )
    query = in_storage_order(model, substitute(model.sql, {t: f"batch_{t}" for t in inputs}))
    conn.execute("set variable batch = -1")
    conn.execute(f"create or replace table {model.name} as {query}")
    for (batch,) in batches:
        conn.execute("set variable batch = ?", [batch])
        conn.execute(f"insert into {model.name} {query}")
    for table in inputs:
        conn.execute(f"drop view batch_{table}")
    return len(batches)


def published_models() -> list[str]:
    """Marts that are published (intermediate `int_` models are not)."""
    return [m.name for m in models.published()]


def sorted_rows(conn: duckdb.DuckDBPyConnection, table: str) -> int:
    """Rows a table held when it was last written in full, in order (0 if unknown)."""
    return int(state.get_state(conn, f"sorted_rows:{table}") or 0)


def record_sorted(conn: duckdb.DuckDBPyConnection, tables: list[str]) -> None:
    """Remember the rows of tables just written in full, in order."""
    for table in tables:
        rows = conn.execute(f"select count(*) from {table}").fetchall()[0][0]
        state.set_state(conn, f"sorted_rows:{table}", str(rows))
