"""Incremental transform: recompute only what the raw records added or removed since the last
publish touch, with the same model SQL run over restricted inputs.

- staging: each stream's rows for its dirty keys are recomputed (latest wins, dedup); the rows
  before (`old_stg_*`) and after (`new_stg_*`) are kept for the steps below;
- dimensions are rebuilt when one of their sources changed (they are small) and published again
  only when their rows differ; the channels whose row differs are remembered;
- current reports are recomputed for the dirty reports and the reports of changed channels; the
  reports whose row differs (entered, left, moved channel or time zone, changed state, selections,
  author, token...) drive everything report-shaped below;
- report positions (report-stats pages) are recomputed for the organizations that gained, lost
  or re-flagged a report;
- facts are recomputed for a scope of keys and replaced where their rows differ: report facts
  for the changed reports, images for dirty images and changed reports, reads and deliveries
  for dirty events (and the deliveries of dirty opens) and every event of a report that
  entered, left, or changed channel or time zone; each hourly rollup recomputes the groups
  that the replaced fact rows (before and after) fall in;
- report stats are recomputed for the reports whose inputs changed: their own row or position,
  their events, schedules or runs, the email of a user who authored, edited or ran them, their
  organization's name, and manual runs that entered or left the 30-day window when the as-of
  time moved;
- the partitions (months, or `all`) each published table changed in are recorded in
  `dirty_parts`, and the rows it lost and gained in its change log (`state.log_changes`), so
  publishing touches only those partitions, and adds the gained rows as a file of their own
  where no lost row is in the partition's files.

Each model's header names its rule (`-- incremental: ...`, see models.INCREMENTAL); a model whose
rule is `full` is rebuilt in full with all of its partitions marked dirty. The result equals a
full rebuild (proven by tests/test_incremental.py).

Replaced rows are appended in storage order and the deleted ones left in place (no row-group
merging on checkpoints, which would rewrite most of every big table each run); a table is
rewritten in order once its deleted and appended rows pass COMPACT_RATIO of its rows.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import duckdb

from metrics_etl import state
from metrics_etl.contract import STREAMS
from metrics_etl.models import catalog as models
from metrics_etl.models.build import (
    BY_ACCOUNTS,
    STATS_EVENTS,
    Model,
    build_model,
    record_sorted,
    sorted_rows,
    substitute,
)
from metrics_etl.settings import crash_point


@dataclass(frozen=True)
class Fact:
    """Where the keys of a row-level fact (`by_key(column)` in its header) come from: a scope
    table of the keys whose rows are recomputed, and its inputs restricted to them."""

    scope: str
    inputs: tuple[tuple[str, str], ...]


FACTS = {
    "fct_reports": Fact("changed_reports", (("int_current_reports", "changed_current"),)),
    "fct_report_selections": Fact("changed_reports", (("int_current_reports", "changed_current"),)),
    "fct_report_images": Fact("scope_images", (("stg_report_images", "delta_stg_report_images"),)),
    "int_reads": Fact("scope_reads", (("stg_reads", "delta_stg_reads"),)),
    "fct_reads": Fact("scope_reads", (("int_reads", "delta_int_reads"),)),
    "int_deliveries": Fact("scope_deliveries", (("stg_alerts", "delta_stg_alerts"),)),
    "fct_deliveries": Fact("scope_deliveries", (("int_deliveries", "delta_int_deliveries"),)),
}
# intermediate facts whose scope's rows (`delta_<name>`, after the replace) the models below read
FEEDS = {
    source for fact in FACTS.values() for source, _ in fact.inputs if source.startswith("int_")
}
COMPACT_RATIO = 0.2  # deleted + appended rows past this share of live rows: table rewritten
COMPACT_MIN_ROWS = 100_000


def rollup_fact(model: models.Model) -> str:
    """The one fact table a `by_group` rollup summarizes (its only input)."""
    (fact,) = models.depends_on(model, models.catalog())
    return fact


def count_rows(conn: duckdb.DuckDBPyConnection, relation: str) -> int:
    """Rows of a relation."""
    return int(conn.execute(f"select count(*) from {relation}").fetchall()[0][0])


def _temp(conn: duckdb.DuckDBPyConnection, name: str, sql: str) -> None:
    """(Re)create a temp table."""
    conn.execute(f"create or replace temp table {name} as {sql}")


def _diff(conn: duckdb.DuckDBPyConnection, name: str, old: str, new: str, cols: str = "*") -> int:
    """A temp table of the rows (of the given columns) in only one of old and new; its size."""
    _temp(
        conn,
        name,
        f"select * from (select {cols} from {old} except all select {cols} from {new}) "
        f"union all select * from (select {cols} from {new} except all select {cols} from {old})",
    )
    return count_rows(conn, name)


def mark_dirty(conn: duckdb.DuckDBPyConnection, table: str, relation: str) -> None:
    """Record the partitions of a published table that rows of a relation fall in."""
    model = models.catalog().get(table)
    if model is None or not model.published:
        return
    conn.execute(
        f"insert into dirty_parts select distinct '{table}', {model.part_expr} from {relation}"
    )


def log_changes_of(conn: duckdb.DuckDBPyConnection, table: str, removed: str, added: str) -> None:
    """Log the rows a published table lost and gained (publish writes the gained ones as a file
    of their own where it can)."""
    model = models.catalog().get(table)
    if model is not None and model.published:
        state.log_changes(conn, table, removed, added)


def _rebuild(conn: duckdb.DuckDBPyConnection, model: Model) -> None:
    """Rebuild one model in full, stored in its publishing order."""
    conn.execute("set preserve_insertion_order = true")
    build_model(conn, model)
    conn.execute("set preserve_insertion_order = false")


def insert_rows(conn: duckdb.DuckDBPyConnection, table: str, relation: str) -> None:
    """Append rows to a model, in its storage order (a published table is written in the order
    it is stored in: its rows stay sorted runs, the table's and those appended since)."""
    order = models.storage_order(table)
    if order is None:
        conn.execute(f"insert into {table} by name select * from {relation}")
        return
    conn.execute("set preserve_insertion_order = true")
    conn.execute(f"insert into {table} by name select * from {relation} order by {order}")
    conn.execute("set preserve_insertion_order = false")


class Run:
    """One incremental transform: what changed so far, and the rule of each model."""

    def __init__(self, conn: duckdb.DuckDBPyConnection, previous_as_of: str | None) -> None:
        self.conn = conn
        self.previous_as_of = previous_as_of
        self.dirty_streams = {
            row[0] for row in conn.execute("select distinct stream from dirty_keys").fetchall()
        }
        self.changed: set[str] = set()  # staging tables and dimensions whose rows changed
        self.touched: set[str] = set()  # facts with replaced rows (old_<fact>, new_<fact>)

    # ------------------------------------------------------------------ staging and dimensions

    def staging(self, model: Model) -> None:
        """Recompute the staging rows of a stream's dirty keys, keeping them before and after."""
        stream = STREAMS[model.name.removeprefix("stg_")]
        assert model.incremental_key == stream.key, model.name
        if stream.name not in self.dirty_streams:
            return
        conn, key = self.conn, stream.key
        dirty = f"select key from dirty_keys where stream = '{stream.name}'"
        _temp(conn, f"old_{model.name}", f"select * from {model.name} where {key} in ({dirty})")
        _temp(conn, "delta_raw", f"select * from raw_{stream.name} where {key} in ({dirty})")
        conn.execute(f"delete from {model.name} where {key} in ({dirty})")
        sql = substitute(model.sql, {f"raw_{stream.name}": "delta_raw"})
        _temp(conn, f"new_{model.name}", sql)
        conn.execute(f"insert into {model.name} by name select * from new_{model.name}")
        self.changed.add(model.name)

    def dimension(self, model: Model) -> None:
        """Rebuild a small dimension when a source changed; publish it only if its rows differ."""
        if model.refs & self.changed:
            self.conn.execute(f"create or replace temp table old_{model.name} as from {model.name}")
            _rebuild(self.conn, model)
            record_sorted(self.conn, [model.name])
            if _diff(self.conn, f"diff_{model.name}", f"old_{model.name}", model.name):
                self.conn.execute("insert into dirty_parts values (?, 'all')", [model.name])
                state.mark_unlogged(self.conn, model.name)
                self.changed.add(model.name)
        if model.name == "dim_channels" and "dim_channels" not in self.changed:
            _temp(self.conn, "diff_dim_channels", "from dim_channels limit 0")

    # ------------------------------------------------------------------ current reports

    def current_reports(self, model: Model) -> None:
        """Recompute the dirty reports and the reports of changed channels; keep what differs."""
        conn = self.conn
        _temp(
            conn,
            "candidate_reports",
            "select key as report_id from dirty_keys where stream = 'reports' "
            "union select report_id from stg_reports "
            "where channel_id in (select channel_id from diff_dim_channels)",
        )
        candidates = "select report_id from candidate_reports"
        _temp(conn, "scope_stg_reports", f"from stg_reports where report_id in ({candidates})")
        _temp(
            conn,
            "old_int_current_reports",
            f"from int_current_reports where report_id in ({candidates})",
        )
        conn.execute(f"delete from int_current_reports where report_id in ({candidates})")
        sql = substitute(model.sql, {"stg_reports": "scope_stg_reports"})
        conn.execute(f"insert into int_current_reports by name {sql}")
        _temp(
            conn,
            "new_int_current_reports",
            f"from int_current_reports where report_id in ({candidates})",
        )
        old, new = "old_int_current_reports", "new_int_current_reports"
        _diff(conn, "diff_current", old, new)
        _temp(conn, "changed_reports", "select distinct report_id from diff_current")
        # reports whose events change channel or local time (or count, or stop counting)
        _diff(conn, "diff_moved", old, new, "report_id, channel_id, timezone")
        _temp(conn, "moved_reports", "select distinct report_id from diff_moved")
        # organizations whose report-stats pages gain, lose or re-flag a report
        _diff(conn, "diff_listed", old, new, "report_id, account_id, personal")
        _temp(conn, "position_accounts", "select distinct account_id from diff_listed")
        _temp(
            conn,
            "changed_current",
            "from int_current_reports where report_id in (select report_id from changed_reports)",
        )
        self._scopes()

    def _scopes(self) -> None:
        """Keys of the image, read and delivery facts to replace, and their restricted inputs."""
        conn = self.conn
        moved = "select report_id from moved_reports"
        changed = "select report_id from changed_reports"
        scopes = {
            "scope_images": (
                "stg_report_images",
                "report_image_id",
                f"select report_image_id from stg_report_images where report_id in ({changed})",
                "report_images",
            ),
            "scope_reads": (
                "stg_reads",
                "read_id",
                f"select read_id from stg_reads where report_id in ({moved}) "
                f"union select read_id from int_reads where report_id in ({moved})",
                "reads",
            ),
            "scope_deliveries": (
                "stg_alerts",
                "delivery_id",
                f"select delivery_id from stg_alerts where report_id in ({moved}) "
                f"union select delivery_id from int_deliveries where report_id in ({moved}) "
                f"union select ref from dirty_keys where stream = 'alert_opens'",
                "alerts",
            ),
        }
        for scope, (source, key, related, stream) in scopes.items():
            _temp(
                conn,
                scope,
                f"select key as {key} from dirty_keys where stream = '{stream}' union {related}",
            )
            _temp(
                conn,
                f"delta_{source}",
                f"from {source} where {key} in (select {key} from {scope})",
            )

    def positions(self, model: Model) -> None:
        """Recompute the page positions of organizations whose listed reports changed."""
        conn = self.conn
        accounts = "select account_id from position_accounts"
        if not count_rows(conn, "position_accounts"):
            _temp(conn, "repositioned", "select report_id from int_report_positions limit 0")
            return
        _temp(conn, "old_positions", f"from {model.name} where account_id in ({accounts})")
        conn.execute(f"delete from {model.name} where account_id in ({accounts})")
        _temp(
            conn, "position_reports", f"from int_current_reports where account_id in ({accounts})"
        )
        sql = substitute(model.sql, {"int_current_reports": "position_reports"})
        conn.execute(f"insert into {model.name} by name {sql}")
        _temp(conn, "new_positions", f"from {model.name} where account_id in ({accounts})")
        _diff(conn, "diff_positions", "old_positions", "new_positions")
        _temp(conn, "repositioned", "select distinct report_id from diff_positions")

    def local_slots(self, model: Model) -> None:
        """Add the slots that changed reports and replaced events fall in and that are missing
        (a slot's attributes never change, so rows are only added)."""
        conn = self.conn
        for source, column in (("int_reads", "read_at"), ("int_deliveries", "sent_at")):
            _temp(
                conn,
                f"slot_{source}",
                f"select e.* from delta_{source} as e anti join int_local_slots as s "
                f"on s.timezone = e.timezone and s.slot = quarter_slot(e.{column})",
            )
        _temp(
            conn,
            "slot_reports",
            "from int_current_reports where report_id in (select report_id from changed_reports)",
        )
        sql = substitute(
            model.sql,
            {
                "int_current_reports": "slot_reports",
                "int_reads": "slot_int_reads",
                "int_deliveries": "slot_int_deliveries",
            },
        )
        conn.execute(
            f"insert into int_local_slots select * from ({sql}) as new "
            f"where not exists (select 1 from int_local_slots as old "
            f"where old.timezone = new.timezone and old.slot = new.slot)"
        )

    # ------------------------------------------------------------------ facts and rollups

    def by_key(self, model: Model) -> None:
        """A staging model's dirty keys, or a fact's scope of keys, recomputed."""
        if model.layer == "staging":
            self.staging(model)
        else:
            self.fact(model)

    def fact(self, model: Model) -> None:
        """Recompute the rows of the scope's keys and replace those of the keys whose rows
        differ; keep those rows before and after for the rollups, and an intermediate fact's
        rows of the scope (`delta_<name>`) for the models that derive from it."""
        conn, name = self.conn, model.name
        # recomputed into `delta_<name>` for an intermediate fact: after the replace, they are
        # its rows of the scope
        new = f"delta_{name}" if name in FEEDS else "scope_new"
        if not count_rows(conn, FACTS[name].scope):
            if name in FEEDS:
                _temp(conn, new, f"from {name} limit 0")
            return
        _temp(conn, new, substitute(model.sql, dict(FACTS[name].inputs)))
        self.replace(model, new)

    def replace(self, model: Model, new: str) -> None:
        """Replace a fact's rows of the scope's keys whose rows differ from those in `new`."""
        conn, name, key = self.conn, model.name, model.incremental_key
        scope = FACTS[name].scope
        _temp(conn, "scope_rows", f"from {name} where {key} in (select {key} from {scope})")
        if not _diff(conn, "diff_rows", "scope_rows", new):
            return
        changed = "select distinct " + key + " from diff_rows"
        _temp(conn, f"old_{name}", f"from scope_rows where {key} in ({changed})")
        _temp(conn, f"new_{name}", f"from {new} where {key} in ({changed})")
        conn.execute(f"delete from {name} where {key} in (select {key} from old_{name})")
        insert_rows(conn, name, f"new_{name}")
        mark_dirty(conn, name, f"(from old_{name} union all from new_{name})")
        log_changes_of(conn, name, f"old_{name}", f"new_{name}")
        self.touched.add(name)

    def rollup(self, model: Model) -> None:
        """Recompute the rollup groups the replaced fact rows fall in."""
        fact = rollup_fact(model)
        if fact not in self.touched:
            return
        conn = self.conn
        groups = ", ".join(model.groups)
        match = " and ".join(f"t.{c} = g.{c}" for c in model.groups)
        _temp(
            conn,
            "touched_groups",
            f"select distinct {groups} from old_{fact} union select distinct {groups} from new_{fact}",
        )
        _temp(
            conn,
            "old_rows",
            f"select t.* from {model.name} t semi join touched_groups g on {match}",
        )
        conn.execute(f"delete from {model.name} t using touched_groups g where {match}")
        _temp(
            conn, f"delta_{fact}", f"select * from {fact} t semi join touched_groups g on {match}"
        )
        _temp(conn, "new_rows", substitute(model.sql, {fact: f"delta_{fact}"}))
        insert_rows(conn, model.name, "new_rows")
        log_changes_of(conn, model.name, "old_rows", "new_rows")
        # rows before and after fall in the touched groups, whose hours name their partitions
        assert model.partitioned_by in model.groups, model.name
        mark_dirty(conn, model.name, "touched_groups")

    # ------------------------------------------------------------------ report stats

    def stats_scope(self) -> list[str]:
        """Queries for the reports whose report-stats row may differ."""
        parts = ["select report_id from changed_reports", "select report_id from repositioned"]
        for table in STATS_EVENTS:
            if table in self.changed:
                parts += [
                    f"select report_id from old_{table}",
                    f"select report_id from new_{table}",
                ]
        if "stg_users" in self.changed:
            _diff(self.conn, "diff_emails", "old_stg_users", "new_stg_users", "user_id, email")
            users = "select user_id from diff_emails"
            parts += [
                f"select report_id from {table} where user_id in ({users})"
                for table in ("stg_report_runs", "stg_report_edits", "int_current_reports")
            ]
        if "stg_accounts" in self.changed:
            _diff(
                self.conn,
                "diff_names",
                "old_stg_accounts",
                "new_stg_accounts",
                "account_id, username",
            )
            parts.append(
                "select report_id from int_current_reports "
                "where account_id in (select account_id from diff_names)"
            )
        if self.previous_as_of is not None:
            # manual runs that entered or left [as_of - 30 days, as_of) when as_of moved
            was = "$previous::timestamptz"
            now = "getvariable('as_of')::timestamptz"
            lo, hi = f"least({was}, {now})", f"greatest({was}, {now})"
            parts.append(
                f"select report_id from stg_report_runs where run_type = 'manual' and ("
                f"(ran_at >= recent_runs_start({lo}) and ran_at < recent_runs_start({hi})) "
                f"or (ran_at >= {lo} and ran_at < {hi}))"
            )
        return parts

    def report_stats(self, model: Model) -> None:
        """Recompute the report-stats rows of the reports whose inputs changed."""
        conn = self.conn
        if self.previous_as_of is None:  # the window of the last build is unknown
            self.fallback(model)
            return
        conn.execute(
            f"create or replace temp table stats_reports as {' union '.join(self.stats_scope())}",
            {"previous": self.previous_as_of},
        )
        if not count_rows(conn, "stats_reports"):
            return
        scope = "select report_id from stats_reports"
        inputs = BY_ACCOUNTS["report_stats"]
        for table in inputs:  # views: each is read once, only its columns the model uses
            conn.execute(
                f"create or replace temp view stats_{table} as "
                f"from {table} where report_id in ({scope})"
            )
        _temp(conn, "old_report_stats", f"from report_stats where report_id in ({scope})")
        conn.execute(f"delete from report_stats where report_id in ({scope})")
        _temp(conn, "new_report_stats", substitute(model.sql, {t: f"stats_{t}" for t in inputs}))
        insert_rows(conn, "report_stats", "new_report_stats")
        log_changes_of(conn, "report_stats", "old_report_stats", "new_report_stats")
        conn.execute("insert into dirty_parts values ('report_stats', 'all')")

    # ------------------------------------------------------------------ anything else

    def fallback(self, model: Model) -> None:
        """A model without an incremental rule: rebuilt in full, every partition marked."""
        mark_dirty(self.conn, model.name, model.name)
        state.mark_unlogged(self.conn, model.name)
        _rebuild(self.conn, model)
        record_sorted(self.conn, [model.name])
        mark_dirty(self.conn, model.name, model.name)

    def build(self, model: Model) -> None:
        """Bring one model up to date by the rule its header names (`-- incremental: ...`)."""
        rules: dict[str, Callable[[Model], None]] = {
            "by_key": self.by_key,
            "on_change": self.dimension,
            "by_report": self.current_reports,
            "by_account": self.positions,
            "append_missing": self.local_slots,
            "by_group": self.rollup,
            "by_report_inputs": self.report_stats,
            "full": self.fallback,
        }
        rules[model.incremental](model)


def begin(conn: duckdb.DuckDBPyConnection, previous_as_of: str | None) -> Run:
    """Start an incremental transform: its state, and checkpoints deferred until `settle`."""
    # Rows replaced here leave deleted rows scattered over the row groups of big tables; merging
    # those row groups on every checkpoint ("vacuum") would rewrite most of each table, every run.
    # They are left in place instead, and a table is rewritten once they pass COMPACT_RATIO.
    conn.execute("set max_vacuum_tasks = 0")
    conn.execute("set checkpoint_threshold = '1GB'")  # one checkpoint, after the publish
    return Run(conn, previous_as_of)


def build_models(
    run: Run, models: list[Model], on_model: Callable[[str], None] | None = None
) -> list[str]:
    """Bring models up to date, in order (staging before marts); returns their names."""
    for model in models:
        run.build(model)
        if model.layer == "marts":
            crash_point("transform")
        if on_model:
            on_model(model.name)
    return [m.name for m in models]


def finish(conn: duckdb.DuckDBPyConnection, built: list[str]) -> None:
    """Compact the tables that need it (the checkpoint waits for `settle`)."""
    compact(conn, built)


def end(conn: duckdb.DuckDBPyConnection) -> None:
    """Restore the checkpoint settings `begin` changed."""
    conn.execute("reset checkpoint_threshold")
    conn.execute("reset max_vacuum_tasks")


def settle(conn: duckdb.DuckDBPyConnection) -> None:
    """Checkpoint once, then restore the checkpoint settings (after a run's publish: what the
    transform committed is in the write-ahead log already, and writing it into the database
    file is not on the way to fresh answers)."""
    conn.execute("checkpoint")
    end(conn)


def compact(conn: duckdb.DuckDBPyConnection, tables: list[str]) -> list[str]:
    """Rewrite, in storage order, each table whose rows deleted or appended since it was last
    written in order pass COMPACT_RATIO of its live rows; returns the tables rewritten."""
    physical = dict(
        conn.execute(
            "select table_name, estimated_size from duckdb_tables() "
            "where schema_name = 'main' and not temporary"
        ).fetchall()
    )
    rewritten = []
    for table in tables:
        live = count_rows(conn, table)
        deleted = physical[table] - live
        # appended rows matter only where the order is published
        order = models.storage_order(table)
        appended = physical[table] - sorted_rows(conn, table) if order else 0
        if deleted + appended > max(COMPACT_RATIO * live, COMPACT_MIN_ROWS):
            conn.execute("set preserve_insertion_order = true")
            conn.execute(
                f"create or replace table {table} as "
                f"from {table} {f'order by {order}' if order else ''}"
            )
            conn.execute("set preserve_insertion_order = false")
            rewritten.append(table)
    record_sorted(conn, rewritten)
    return rewritten
