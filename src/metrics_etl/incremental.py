"""Incremental transform: rebuild only what the raw records added or removed since the last
publish touch, with the same model SQL run over restricted inputs.

- staging: each stream's rows for its dirty keys are recomputed (latest wins, dedup);
- report-sized models (dimensions, current reports, report facts and rollups, report stats)
  are rebuilt in full: they are small next to the event facts;
- event facts and their hourly rollups (reads, deliveries) are merged by key: the rows of dirty
  events and of every event of a report whose channel or time zone changed are replaced, and
  the rollup groups those rows fall in are recomputed;
- the months each merged table changed in are recorded in `dirty_parts`, so publishing rewrites
  only those partitions.

The result equals a full rebuild (proven by tests/test_incremental.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import duckdb

from metrics_etl.contract import STREAMS
from metrics_etl.publish import LAYOUTS, storage_order
from metrics_etl.settings import crash_point
from metrics_etl.transform import Model, load_models


@dataclass(frozen=True)
class EventFacts:
    """A row-per-event fact table and its rollup, maintained by key."""

    fact: str
    key: str
    source: str
    rollup: str
    groups: tuple[str, ...]
    affected: str


EVENT_FACTS = (
    EventFacts(
        fact="fct_reads",
        key="read_id",
        source="stg_reads",
        rollup="agg_reads_hourly",
        groups=("channel_id", "hour_start", "report_id", "user_id"),
        affected="select key from dirty_keys where stream = 'reads'",
    ),
    EventFacts(
        fact="fct_deliveries",
        key="delivery_id",
        source="stg_alerts",
        rollup="agg_deliveries_hourly",
        groups=("channel_id", "hour_start", "user_id", "alert_id", "report_id"),
        affected=(
            "select key from dirty_keys where stream = 'alerts' "
            "union select ref from dirty_keys where stream = 'alert_opens'"
        ),
    ),
)
MERGED = {"int_local_slots"} | {e.fact for e in EVENT_FACTS} | {e.rollup for e in EVENT_FACTS}


def substitute(sql: str, replacements: dict[str, str]) -> str:
    """Point a model's `from`/`join` references at other relations."""
    for old, new in replacements.items():
        sql = re.sub(rf"\b(from|join)(\s+){old}\b", rf"\1\2{new}", sql)
    return sql


def _months(conn: duckdb.DuckDBPyConnection, table: str, relation: str) -> None:
    """Record the partitions (months) of a table that rows in a relation fall in."""
    column = LAYOUTS[table].time_column
    conn.execute(
        f"insert into dirty_parts select distinct '{table}', strftime({column}, '%Y-%m') "
        f"from {relation}"
    )


def _rebuild(conn: duckdb.DuckDBPyConnection, model: Model) -> None:
    """Rebuild one model in full, stored in its publishing order."""
    order = storage_order(model.name)
    query = f"select * from ({model.sql}) order by {order}" if order else model.sql
    conn.execute(f"create or replace table {model.name} as {query}")


def _staging(conn: duckdb.DuckDBPyConnection, model: Model) -> None:
    """Recompute the staging rows of a stream's dirty keys."""
    stream = STREAMS[model.name.removeprefix("stg_")]
    dirty = f"select key from dirty_keys where stream = '{stream.name}'"
    conn.execute(
        f"create or replace temp table delta_raw as "
        f"select * from raw_{stream.name} where {stream.key} in ({dirty})"
    )
    conn.execute(f"delete from {model.name} where {stream.key} in ({dirty})")
    sql = substitute(model.sql, {f"raw_{stream.name}": "delta_raw"})
    conn.execute(f"insert into {model.name} by name {sql}")


def _moved_reports(conn: duckdb.DuckDBPyConnection) -> None:
    """Reports that entered, left, or changed channel or time zone since the last build."""
    cols = "report_id, channel_id, timezone"
    conn.execute(
        f"""
        create or replace temp table moved_reports as
        select report_id from (
            select {cols} from prev_current_reports
            except select {cols} from int_current_reports
        )
        union
        select report_id from (
            select {cols} from int_current_reports
            except select {cols} from prev_current_reports
        )
        """
    )


def _affected_events(conn: duckdb.DuckDBPyConnection, facts: EventFacts) -> None:
    """Keys of events whose fact rows must be replaced."""
    conn.execute(
        f"""
        create or replace temp table affected_{facts.fact} as
        {facts.affected}
        union select {facts.key} from {facts.source}
            where report_id in (select report_id from moved_reports)
        union select {facts.key} from {facts.fact}
            where report_id in (select report_id from moved_reports)
        """
    )
    conn.execute(
        f"create or replace temp table delta_{facts.source} as select * from {facts.source} "
        f"where {facts.key} in (select * from affected_{facts.fact})"
    )


def _local_slots(conn: duckdb.DuckDBPyConnection, model: Model) -> None:
    """Add the slots of new facts (slot attributes never change, so rows are only added)."""
    sql = substitute(model.sql, {e.source: f"delta_{e.source}" for e in EVENT_FACTS})
    conn.execute(
        f"insert into int_local_slots select * from ({sql}) as new "
        f"where not exists (select 1 from int_local_slots as old "
        f"where old.timezone = new.timezone and old.slot = new.slot)"
    )


def _event_fact(conn: duckdb.DuckDBPyConnection, model: Model, facts: EventFacts) -> None:
    """Replace the fact rows of affected events; remember the rollup groups they touch."""
    affected = f"select * from affected_{facts.fact}"
    groups = ", ".join(facts.groups)
    conn.execute(
        f"create or replace temp table old_rows as "
        f"select * from {facts.fact} where {facts.key} in ({affected})"
    )
    conn.execute(f"delete from {facts.fact} where {facts.key} in ({affected})")
    sql = substitute(model.sql, {facts.source: f"delta_{facts.source}"})
    conn.execute(f"create or replace temp table new_rows as {sql}")
    conn.execute(f"insert into {facts.fact} by name select * from new_rows")
    _months(conn, facts.fact, "(select * from old_rows union all select * from new_rows)")
    conn.execute(
        f"create or replace temp table touched_{facts.fact} as "
        f"select distinct {groups} from old_rows union select distinct {groups} from new_rows"
    )


def _rollup(conn: duckdb.DuckDBPyConnection, model: Model, facts: EventFacts) -> None:
    """Recompute the rollup groups the changed fact rows fall in."""
    match = " and ".join(f"t.{c} = g.{c}" for c in facts.groups)
    touched = f"touched_{facts.fact}"
    conn.execute(
        f"create or replace temp table touched_rows as "
        f"select * from {facts.rollup} t semi join {touched} g on {match}"
    )
    conn.execute(f"delete from {facts.rollup} t using {touched} g where {match}")
    conn.execute(
        f"create or replace temp table delta_{facts.fact} as select * from {facts.fact} t "
        f"semi join {touched} g on {match}"
    )
    sql = substitute(model.sql, {facts.fact: f"delta_{facts.fact}"})
    conn.execute(f"create or replace temp table new_rows as {sql}")
    conn.execute(f"insert into {facts.rollup} by name select * from new_rows")
    _months(conn, facts.rollup, "(select * from touched_rows union all select * from new_rows)")


def run_incremental(conn: duckdb.DuckDBPyConnection) -> list[str]:
    """Bring every model up to date with the dirty keys; returns the models touched."""
    by_fact = {e.fact: e for e in EVENT_FACTS}
    by_rollup = {e.rollup: e for e in EVENT_FACTS}
    conn.execute(
        "create or replace temp table prev_current_reports as select * from int_current_reports"
    )
    built = []
    models = sorted(load_models(), key=lambda m: m.layer != "staging")  # stable: topo order kept
    for model in models:
        if model.layer == "staging":
            _staging(conn, model)
        elif model.name == "int_local_slots":
            _local_slots(conn, model)
        elif model.name in by_fact:
            _event_fact(conn, model, by_fact[model.name])
        elif model.name in by_rollup:
            _rollup(conn, model, by_rollup[model.name])
        else:
            _rebuild(conn, model)
        if model.name == "int_current_reports":
            _moved_reports(conn)
            for facts in EVENT_FACTS:
                _affected_events(conn, facts)
        built.append(model.name)
        if model.layer == "marts":
            crash_point("transform")
    return built
