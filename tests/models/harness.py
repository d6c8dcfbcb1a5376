"""A model's unit test: given rows for the tables it reads, the model built as the build does
(transform.build_models: macros, storage order, batches), and its rows compared with expected
rows written by hand from the model's meaning.

Every table starts empty with the warehouse's own types (the raw tables of the contract and every
model, built once per process on no data); each test runs in a transaction rolled back at its end.
"""

from __future__ import annotations

import datetime as dt
from functools import cache
from typing import Any

import duckdb

from metrics_etl import db, state
from metrics_etl.models import build as transform
from metrics_etl.models import catalog as models

AS_OF = "2017-01-31 00:00:00+00"
Row = dict[str, Any]


def ts(text: str) -> dt.datetime:
    """A UTC instant from 'YYYY-MM-DD HH:MM[:SS[.ffffff]]' (or with an explicit offset)."""
    value = dt.datetime.fromisoformat(text)
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


@cache
def warehouse() -> duckdb.DuckDBPyConnection:
    """An in-memory warehouse whose raw tables and models all exist, empty."""
    conn = duckdb.connect()
    db.configure(conn)
    state.create_state_tables(conn)
    transform.prepare(conn, AS_OF)
    transform.build_models(conn, models.load_models())
    return conn


def _insert(conn: duckdb.DuckDBPyConnection, table: str, rows: list[Row]) -> None:
    """Insert rows given as dicts (missing columns are null; values cast to the column types)."""
    for row in rows:
        columns = ", ".join(row)
        marks = ", ".join("?" for _ in row)
        conn.execute(f"insert into {table} ({columns}) values ({marks})", list(row.values()))


def run_model(name: str, given: dict[str, list[Row]], as_of: str = AS_OF) -> list[Row]:
    """The rows a model builds from the given rows of the tables it reads (others empty)."""
    model = models.catalog()[name]
    unread = set(given) - model.refs
    assert not unread, f"{name} does not read {sorted(unread)}"
    conn = warehouse()
    conn.execute("begin")
    try:
        conn.execute("set variable as_of = ?", [as_of])
        for table, rows in given.items():
            _insert(conn, table, rows)
        transform.build_models(conn, [model])
        cursor = conn.execute(f"select * from {name}")
        columns = [d[0] for d in cursor.description]
        return [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]
    finally:
        conn.execute("rollback")


def check(
    name: str,
    given: dict[str, list[Row]],
    expected: list[Row],
    as_of: str = AS_OF,
    ordered: bool | None = None,
) -> None:
    """Assert a model's rows equal the expected ones: the same columns in the same order, and
    for a published model (unless `ordered` is False: rows that tie on the storage order) the
    rows in its storage order (the order they are written in)."""
    rows = run_model(name, given, as_of)
    if expected and rows:
        assert list(rows[0]) == list(expected[0]), "columns differ"
    if ordered is None:
        ordered = models.catalog()[name].storage_order is not None
    if not ordered:
        rows, expected = sorted(rows, key=repr), sorted(expected, key=repr)
    assert rows == expected


def utc_slot(start: str) -> Row:
    """A whole 15-minute slot of int_local_slots in the UTC zone (local time is UTC time)."""
    slot = ts(start)
    day = slot.replace(hour=0, minute=0, second=0, microsecond=0)
    return {
        "timezone": "UTC",
        "slot": slot,
        "starts_at": slot,
        "ends_at": slot + dt.timedelta(minutes=15),
        "hour_start": slot.replace(minute=0, second=0, microsecond=0),
        "day_start": day,
        "week_start": day - dt.timedelta(days=day.weekday()),
        "month_start": day.replace(day=1),
        "local_hour": slot.hour,
        "dow": (slot.weekday() + 1) % 7,  # Sunday 0 ... Saturday 6
    }
