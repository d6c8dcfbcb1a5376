"""The transform partitioned across Dask workers (issue 17): DuckDB per partition, hash
shuffles through Parquet files on a folder every worker reads (the smallpond pattern).

Steps of a partitioned transform with P partitions (SCALING.md explains the choices):

1. In the writer: the dimensions (staging of accounts, channels, fields, reports, states,
   users; the `dim_` marts, `int_current_reports`, `int_report_positions`) are built once, as
   today, and the ones the partitions read are written to `shared/`. Each event stream's raw
   table is written hash-partitioned by its staging key (`raw/`): shuffle 1.
2. `stage-a-<p>` (one task per key partition): the staging models dedup their events; each
   staged row goes to the partition of its report's current channel (`stage/`): shuffle 2. An
   alert open has no report: it goes to its delivery's key partition first (`opens/`), with the
   route of every delivery of that partition (`routes/`).
3. `stage-opens-<q>`: each open meets its delivery's route and goes to that channel partition.
4. `build-<c>` (one task per channel partition): every other mart (local slots, facts,
   rollups, report stats) is built from its partition's staged rows and the shared dimensions,
   and written to `out/`.
5. In the writer: the partitions' tables become the writer's tables, in storage order, so
   that audits, publish and the serving segments run exactly as after a single-process build.

An incremental run (the warehouse can go on incrementally, same partition count) brings
staging and the dimensions up to date in the writer (models/incremental.py), finds the dirty
channel partitions, exports their staged rows, runs `build-<c>` for those only, and replaces
their rows in the writer's tables with change logs (SCALING.md, "Incremental runs").

Every task opens its own DuckDB with its share of its Dask worker's memory limit and runs the
models' own SQL (the relations they read are tables of the same names). Prefect runs the tasks
through its DaskTaskRunner (retries, scheduling); Dask sets the workers' memory limits.
"""

from __future__ import annotations

import json
import logging
import os
import resource
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import duckdb
from prefect import task
from prefect.cache_policies import NONE

from metrics_etl import db
from metrics_etl import settings as settings_mod
from metrics_etl.errors import UserError
from metrics_etl.models import build as transform
from metrics_etl.models import incremental
from metrics_etl.models.catalog import Model, load_models
from metrics_etl.run import pipeline, progress
from metrics_etl.run.plan import RunSummary, can_run_incrementally
from metrics_etl.state import drop_change_logs, get_state, set_state

# Marts built once, in the writer, before the partitions: the dimensions and the report maps
# every partition reads (a report's current channel decides its partition).
ONCE_MARTS = ("int_current_reports", "int_report_positions")
# Share of a Dask worker's memory limit given to one task's DuckDB (the rest: Python, Arrow).
DUCKDB_SHARE = 0.6
STATS_FILE = "dask_build.json"  # in the writer's state folder: the last partitioned build
PARTS_STATE = "dask_partitions"  # pipeline_state: the partition count of the last partitioned run


@dataclass(frozen=True)
class Layout:
    """Where one partitioned transform keeps its files, and how its tasks run."""

    root: Path  # a folder every worker reads and writes (the warehouse's state folder)
    parts: int
    as_of: str
    threads: int  # DuckDB threads per task (0: the Dask worker's threads)
    memory_limit: int  # DuckDB bytes per task when the worker has no Dask memory limit

    def files(self, *parts: str) -> list[str]:
        """Parquet files under `root/<parts...>`, sorted, as strings."""
        return sorted(str(p) for p in self.root.joinpath(*parts).glob("*.parquet"))


@dataclass
class TaskStats:
    """What one partition task did: its rows written, seconds and its worker's peak memory."""

    name: str
    seconds: float = 0.0
    rows: int = 0
    bytes_written: int = 0
    peak_rss_bytes: int = 0
    worker: str = ""


@dataclass
class BuildStats:
    """A partitioned transform's figures (written to the state folder as JSON)."""

    parts: int
    seconds: dict[str, float] = field(default_factory=dict)
    shuffle_bytes: dict[str, int] = field(default_factory=dict)
    tasks: list[TaskStats] = field(default_factory=list)
    mode: str = "full"  # or "incremental": only the dirty channel partitions built
    dirty: list[int] = field(default_factory=list)  # the channel partitions built


def is_once(model: Model) -> bool:
    """True for a model built once in the writer (a dimension), not per partition."""
    if model.layer == "marts":
        return model.name.startswith("dim_") or model.name in ONCE_MARTS
    return model.name in _once_staging()


def _once_staging() -> set[str]:
    """The staging models the dimensions read (the entity streams)."""
    marts = [m for m in load_models() if m.layer == "marts"]
    once = [m for m in marts if m.name.startswith("dim_") or m.name in ONCE_MARTS]
    return {ref for m in once for ref in m.refs if ref.startswith("stg_")}


def event_staging() -> list[Model]:
    """The staging models built per key partition (the event streams)."""
    return [m for m in load_models() if m.layer == "staging" and not is_once(m)]


def partition_marts() -> list[Model]:
    """The marts built per channel partition, in dependency order."""
    return [m for m in load_models() if m.layer == "marts" and not is_once(m)]


def shared_inputs() -> list[str]:
    """The models built once that the partition marts read."""
    once = {m.name for m in load_models() if is_once(m)}
    return sorted({ref for m in partition_marts() for ref in m.refs} & once)


def raw_table(model: Model) -> str:
    """The raw table a staging model reads."""
    (name,) = [ref for ref in model.refs if ref.startswith("raw_")]
    return name


def columns(conn: duckdb.DuckDBPyConnection, table: str) -> list[str]:
    """A table's column names, in order."""
    return [row[0] for row in conn.execute(f"describe {table}").fetchall()]


def _quoted(paths: list[str]) -> str:
    """A DuckDB list literal of file paths (paths made by this module, never user input)."""
    return "[" + ", ".join("'" + p.replace("'", "''") + "'" for p in paths) + "]"


def read_files(conn: duckdb.DuckDBPyConnection, table: str, schema: str, files: list[str]) -> None:
    """Create `table` from Parquet files; the empty `schema` file gives its columns when no
    partition file exists (a partition may get no rows)."""
    conn.execute(
        f"create or replace table {table} as "
        f"select * from read_parquet({_quoted([schema, *files])}, hive_partitioning = false)"
    )


def task_connection(layout: Layout) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB for one task: UTC, its share of the worker's memory, a spill folder."""
    conn = duckdb.connect()
    db.configure(conn)
    # a spill folder of its own: tasks of one machine may share METRICS_ETL_TEMP_DIR
    spill = (settings_mod.load().temp_dir or layout.root) / "spill" / str(os.getpid())
    spill.mkdir(parents=True, exist_ok=True)
    conn.execute("set temp_directory = ?", [str(spill)])
    conn.execute(f"set memory_limit = '{_task_memory(layout)}B'")
    conn.execute(f"set threads = {int(layout.threads or _worker_threads())}")
    conn.execute("set preserve_insertion_order = false")
    return conn


def _task_memory(layout: Layout) -> int:
    """DuckDB's bytes for this task: a share of the Dask worker's memory limit per thread."""
    try:
        from distributed import get_worker

        worker = get_worker()
        limit = worker.memory_manager.memory_limit
        threads = max(1, worker.state.nthreads)
    except (ImportError, ValueError):
        limit, threads = None, 1
    if not limit:
        return layout.memory_limit
    return max(64 * 2**20, int(limit * DUCKDB_SHARE / threads))


def _worker_threads() -> int:
    """The Dask worker's threads (1 outside Dask)."""
    try:
        from distributed import get_worker

        return max(1, int(get_worker().state.nthreads))
    except (ImportError, ValueError):
        return 1


def _worker_name() -> str:
    """The Dask worker's address, or this process's id outside Dask."""
    try:
        from distributed import get_worker

        return str(get_worker().address)
    except (ImportError, ValueError):
        return f"pid {os.getpid()}"


def _copy_by(conn: duckdb.DuckDBPyConnection, query: str, folder: Path) -> None:
    """Write a query's rows as Parquet files partitioned by its `_dest` column (dropped)."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(folder, ignore_errors=True)  # a retried task starts clean
    conn.execute(f"copy ({query}) to '{folder}' (format parquet, partition_by (_dest))")


def _finish(stats: TaskStats, started: float, folders: list[Path]) -> TaskStats:
    """Fill in a task's seconds, bytes written, peak memory and worker."""
    stats.seconds = round(time.monotonic() - started, 3)
    stats.bytes_written = sum(_bytes(folder) for folder in folders)
    stats.peak_rss_bytes = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    stats.worker = _worker_name()
    return stats


def _bytes(path: Path) -> int:
    """Bytes of the files under a folder (or of one file)."""
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _dest(layout: Layout, column: str) -> str:
    """The partition of a value, as SQL: the same hash on every worker."""
    return f"hash({column}) % {int(layout.parts)}"


TASK_OPTIONS: dict[str, Any] = {
    "cache_policy": NONE,
    "retries": pipeline.RETRIES,
    "retry_delay_seconds": pipeline.RETRY_DELAYS_S,
    "retry_condition_fn": pipeline.transient,
}


@task(name="stage-a", task_run_name="stage-a-{part}", **TASK_OPTIONS)
def stage_events(layout: Layout, part: int) -> TaskStats:
    """Dedup one key partition's events (the staging models) and route each staged row to the
    partition of its report's current channel (an open: to its delivery's key partition)."""
    started = time.monotonic()
    stats = TaskStats(f"stage-a-{part}")
    conn = task_connection(layout)
    try:
        transform.prepare(conn, layout.as_of)
        models = event_staging()
        for model in models:
            raw = raw_table(model)
            read_files(
                conn,
                raw,
                str(layout.root / "schema" / f"{raw}.parquet"),
                layout.files("raw", raw, f"_dest={part}"),
            )
        transform.build_models(conn, models)
        read_files(
            conn, "current_reports", str(layout.root / "shared" / "int_current_reports.parquet"), []
        )
        conn.execute(
            "create or replace table routes as select report_id, "
            f"{_dest(layout, 'channel_id')} as _dest from current_reports"
        )
        folders: list[Path] = []
        for model in models:
            cols = columns(conn, model.name)
            conn.execute(
                f"copy (select * from {model.name} limit 0) to "
                f"'{layout.root / 'schema' / model.name}-a{part}.parquet' (format parquet)"
            )
            if "report_id" in cols:
                query = (
                    f"select staged.*, coalesce(routes._dest, {_dest(layout, 'staged.report_id')})"
                    f" as _dest from {model.name} as staged left join routes "
                    "on staged.report_id = routes.report_id"
                )
                folder = layout.root / "stage" / model.name / f"a{part}"
            else:  # an alert open: its delivery decides
                query = f"select *, {_dest(layout, 'delivery_id')} as _dest from {model.name}"
                folder = layout.root / "opens" / model.name / f"a{part}"
            _copy_by(conn, query, folder)
            folders.append(folder)
            stats.rows += conn.execute(f"select count(*) from {model.name}").fetchall()[0][0]
            if model.incremental_columns == ("delivery_id",):  # the deliveries' routes
                route = layout.root / "routes" / model.name / f"a{part}.parquet"
                route.parent.mkdir(parents=True, exist_ok=True)
                conn.execute(
                    f"copy (select staged.delivery_id, coalesce(routes._dest, "
                    f"{_dest(layout, 'staged.report_id')}) as _dest from {model.name} as staged "
                    f"left join routes on staged.report_id = routes.report_id) to '{route}' "
                    "(format parquet)"
                )
                folders.append(route)
    finally:
        conn.close()
    return _finish(stats, started, folders)


@task(name="stage-opens", task_run_name="stage-opens-{part}", **TASK_OPTIONS)
def stage_opens(layout: Layout, part: int) -> TaskStats:
    """Route the staged opens of one delivery key partition to their delivery's partition."""
    started = time.monotonic()
    stats = TaskStats(f"stage-opens-{part}")
    folders: list[Path] = []
    conn = task_connection(layout)
    try:
        for folder in sorted((layout.root / "opens").glob("*")):
            name = folder.name
            schema = str(layout.root / "schema" / f"{name}-a0.parquet")
            files = [
                f
                for a in sorted(folder.glob("a*"))
                for f in layout.files("opens", name, a.name, f"_dest={part}")
            ]
            read_files(conn, "opens", schema, files)
            (routes_dir,) = (layout.root / "routes").glob("*")
            conn.execute(
                "create or replace table routes as select * from read_parquet(?)",
                [str(routes_dir / f"a{part}.parquet")],
            )
            query = (
                "select opens.*, coalesce(routes._dest, "
                f"{_dest(layout, 'opens.delivery_id')}) as _dest from opens left join routes "
                "on opens.delivery_id = routes.delivery_id"
            )
            out = layout.root / "stage" / name / f"o{part}"
            _copy_by(conn, query, out)
            folders.append(out)
            stats.rows += conn.execute("select count(*) from opens").fetchall()[0][0]
    finally:
        conn.close()
    return _finish(stats, started, folders)


@task(name="build", task_run_name="build-{part}", **TASK_OPTIONS)
def build_partition(layout: Layout, part: int) -> TaskStats:
    """Build one channel partition's marts (slots, facts, rollups, report stats) from its staged
    rows and the shared dimensions, and write every table it holds to `out/`."""
    started = time.monotonic()
    stats = TaskStats(f"build-{part}")
    out = layout.root / "out"
    conn = task_connection(layout)
    try:
        transform.prepare(conn, layout.as_of)
        for name in shared_inputs():
            read_files(conn, name, str(layout.root / "shared" / f"{name}.parquet"), [])
        conn.execute(
            f"delete from int_current_reports where {_dest(layout, 'channel_id')} <> {int(part)}"
        )
        staged = [m.name for m in event_staging()]
        for name in staged:
            files = [
                f
                for a in sorted((layout.root / "stage" / name).glob("*"))
                for f in layout.files("stage", name, a.name, f"_dest={part}")
            ]
            read_files(conn, name, str(layout.root / "schema" / f"{name}-a0.parquet"), files)
        marts = partition_marts()
        transform.build_models(conn, marts)
        written = [*staged, *(m.name for m in marts)]
        for name in written:
            target = out / name / f"p{part}.parquet"
            target.parent.mkdir(parents=True, exist_ok=True)
            conn.execute(f"copy {name} to '{target}' (format parquet)")
        stats.rows = sum(
            conn.execute(f"select count(*) from {m.name}").fetchall()[0][0] for m in marts
        )
    finally:
        conn.close()
    return _finish(stats, started, [out / name / f"p{part}.parquet" for name in written])


def _export(conn: duckdb.DuckDBPyConnection, layout: Layout) -> None:
    """Write the shared dimensions and shuffle 1: each event stream's raw rows by key hash."""
    for folder in ("shared", "schema", "raw"):
        (layout.root / folder).mkdir(parents=True, exist_ok=True)
    for name in shared_inputs():
        conn.execute(f"copy {name} to '{layout.root / 'shared' / name}.parquet' (format parquet)")
    for model in event_staging():
        raw = raw_table(model)
        key = model.incremental_key
        conn.execute(
            f"copy (select * from {raw} limit 0) to '{layout.root / 'schema' / raw}.parquet' "
            "(format parquet)"
        )
        _copy_by(
            conn, f"select *, {_dest(layout, key)} as _dest from {raw}", layout.root / "raw" / raw
        )


def _combine(conn: duckdb.DuckDBPyConnection, layout: Layout) -> list[str]:
    """The partitions' tables as the writer's tables, in storage order; returns their names."""
    names = [*(m.name for m in event_staging()), *(m.name for m in partition_marts())]
    by_name = {m.name: m for m in load_models()}
    conn.execute("set preserve_insertion_order = true")
    try:
        for name in names:
            files = _quoted(layout.files("out", name))
            query = f"select * from read_parquet({files})"
            if name == "int_local_slots":
                # partitions share (zone, slot) rows: each is the same function of its key
                query = f"select distinct * from read_parquet({files})"
            conn.execute(
                f"create or replace table {name} as "
                f"{transform.in_storage_order(by_name[name], query)}"
            )
    finally:
        conn.execute("set preserve_insertion_order = false")
    return names


def _default_memory() -> int:
    """DuckDB bytes per task outside a Dask worker with a memory limit: the writer's limit."""
    conn = duckdb.connect()
    try:
        conn.execute(f"set memory_limit = '{settings_mod.load().memory_limit}'")
        return transform.memory_limit_bytes(conn)
    finally:
        conn.close()


def _route(layout: Layout, rows: str, alias: str = "s") -> str:
    """The channel partition of each row of `rows` (with a report_id), as `stage-a` routes it:
    its report's current channel, or the report id for a report not current."""
    return (
        f"case when c.report_id is null then {_dest(layout, f'{alias}.report_id')} "
        f"else {_dest(layout, 'c.channel_id')} end"
    )


def _routed(layout: Layout, rows: str, opens: bool) -> str:
    """`rows` with `_dest`, their channel partition (an open: its delivery's, as `stage-opens`
    routes it; the delivery id's key partition for an open without a delivery)."""
    if not opens:
        return (
            f"select s.*, {_route(layout, rows)} as _dest from {rows} as s "
            "left join int_current_reports as c on s.report_id = c.report_id"
        )
    return (
        "select s.*, case when a.delivery_id is null then "
        f"{_dest(layout, 's.delivery_id')} else {_route(layout, rows, 'a')} end as _dest "
        f"from {rows} as s left join stg_alerts as a on s.delivery_id = a.delivery_id "
        "left join int_current_reports as c on a.report_id = c.report_id"
    )


def _is_opens(conn: duckdb.DuckDBPyConnection, name: str) -> bool:
    """True for a staged event stream without a report (alert opens: routed by delivery)."""
    return "report_id" not in columns(conn, name)


def dirty_partitions(
    conn: duckdb.DuckDBPyConnection, run: incremental.Run, layout: Layout
) -> list[int]:
    """The channel partitions whose marts may differ after the writer's incremental staging and
    dimensions: those of the changed staged events (before and after), of reports whose current
    row changed (old and new channel), and of every report whose report-stats inputs changed."""
    if run.previous_as_of is None:  # the report-stats window of the last build is unknown
        return list(range(layout.parts))
    queries = []
    for model in event_staging():
        if model.name in run.changed:
            opens = _is_opens(conn, model.name)
            for rows in (f"old_{model.name}", f"new_{model.name}"):
                queries.append(f"select _dest from ({_routed(layout, rows, opens)})")
    # reports that entered, left, or moved: their new partition, and their old one
    queries.append(f"select _dest from ({_routed(layout, 'changed_reports', False)})")
    queries.append(
        f"select case when o.report_id is null then {_dest(layout, 'r.report_id')} "
        f"else {_dest(layout, 'o.channel_id')} end from changed_reports as r "
        "left join old_int_current_reports as o on r.report_id = o.report_id"
    )
    stats = " union ".join(run.stats_scope())
    queries.append(f"select _dest from ({_routed(layout, f'({stats})', False)})")
    found = conn.execute(
        f"select distinct _dest from ({' union '.join(queries)}) as d(_dest) order by 1",
        {"previous": run.previous_as_of},
    ).fetchall()
    return [int(row[0]) for row in found]


def _export_staged(conn: duckdb.DuckDBPyConnection, layout: Layout, dirty: list[int]) -> None:
    """Write the shared dimensions and the writer's staged events of the dirty channel
    partitions, routed as `stage-a` and `stage-opens` route them (`stage/<model>/w`)."""
    for folder in ("shared", "schema"):
        (layout.root / folder).mkdir(parents=True, exist_ok=True)
    for name in shared_inputs():
        conn.execute(f"copy {name} to '{layout.root / 'shared' / name}.parquet' (format parquet)")
    wanted = ", ".join(str(int(p)) for p in dirty)
    for model in event_staging():
        conn.execute(
            f"copy (select * from {model.name} limit 0) to "
            f"'{layout.root / 'schema' / model.name}-a0.parquet' (format parquet)"
        )
        routed = _routed(layout, model.name, _is_opens(conn, model.name))
        _copy_by(
            conn,
            f"select * from ({routed}) where _dest in ({wanted})",
            layout.root / "stage" / model.name / "w",
        )


def _part_of(layout: Layout, conn: duckdb.DuckDBPyConnection, table: str) -> str:
    """A query of `table`'s rows with `_part`, the channel partition that builds each."""
    if "channel_id" in columns(conn, table):
        return f"select t.*, {_dest(layout, 't.channel_id')} as _part from {table} as t"
    return (
        f"select t.*, {_route(layout, table, 't')} as _part from {table} as t "
        "left join int_current_reports as c on t.report_id = c.report_id"
    )


def _replace(conn: duckdb.DuckDBPyConnection, layout: Layout, dirty: list[int]) -> list[str]:
    """Replace the dirty partitions' rows of each partition mart with the rows built; log the
    rows lost and gained and mark their partitions; returns the marts."""
    wanted = ", ".join(str(int(p)) for p in dirty)
    names = []
    for model in partition_marts():
        name = model.name
        names.append(name)
        files = _quoted(layout.files("out", name))
        if model.incremental == "append_missing":  # int_local_slots: a slot never changes
            conn.execute(
                f"insert into {name} select distinct * from read_parquet({files}) as new "
                f"where not exists (select 1 from {name} as old "
                "where old.timezone = new.timezone and old.slot = new.slot)"
            )
            continue
        conn.execute(f"create or replace temp table new_part as from read_parquet({files})")
        conn.execute(
            "create or replace temp table old_part as "
            f"select * exclude (_part) from ({_part_of(layout, conn, name)}) where _part in ({wanted})"
        )
        conn.execute(
            "create or replace temp table removed_rows as from old_part except all from new_part"
        )
        conn.execute(
            "create or replace temp table added_rows as from new_part except all from old_part"
        )
        if not incremental.count_rows(conn, "removed_rows") + incremental.count_rows(
            conn, "added_rows"
        ):
            continue
        if "channel_id" in columns(conn, name):
            conn.execute(f"delete from {name} where {_dest(layout, 'channel_id')} in ({wanted})")
        else:  # report_stats: one row per report
            conn.execute(f"delete from {name} where report_id in (select report_id from old_part)")
        incremental.insert_rows(conn, name, "new_part")
        incremental.log_changes_of(conn, name, "removed_rows", "added_rows")
        incremental.mark_dirty(conn, name, "(from removed_rows union all from added_rows)")
    return names


def transform_partitioned(
    writer: pipeline.Writer,
    summary: RunSummary,
    display: progress.Display,
    parts: int,
    threads: int,
) -> None:
    """The transform across `parts` partitions, as Dask tasks: in full, or, when the warehouse
    can go on incrementally with the same partition count, the writer's incremental staging and
    dimensions, then a `build` of only the dirty channel partitions (SCALING.md); its figures go
    to the state folder's dask_build.json."""
    conn = writer.conn
    stats = BuildStats(parts)
    clock = time.monotonic()
    root = db.state_dir(writer.warehouse) / "dask" / summary.run_id
    shutil.rmtree(root.parent, ignore_errors=True)  # a killed run's files (the writer lock is ours)
    layout = Layout(root, parts, summary.as_of, threads, _default_memory())

    def lap(step: str) -> None:
        nonlocal clock
        now = time.monotonic()
        stats.seconds[step] = round(now - clock, 3)
        clock = now

    stored = get_state(conn, PARTS_STATE)
    try:
        if can_run_incrementally(conn, summary.full_refresh) and stored in (None, str(parts)):
            _incremental(writer, summary, display, layout, stats, lap)
        else:
            _full(writer, summary, display, layout, stats, lap)
        set_state(conn, PARTS_STATE, str(parts))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    (db.state_dir(writer.warehouse) / STATS_FILE).write_text(json.dumps(asdict(stats), indent=1))
    pipeline._log().info(
        "partitioned transform (%s), %d partitions (%d built): %s",
        stats.mode,
        parts,
        len(stats.dirty),
        ", ".join(f"{step} {s:.1f} s" for step, s in stats.seconds.items()),
    )


def _full(
    writer: pipeline.Writer,
    summary: RunSummary,
    display: progress.Display,
    layout: Layout,
    stats: BuildStats,
    lap: Any,
) -> None:
    """A full partitioned transform: every key partition staged, every channel partition built."""
    conn, parts = writer.conn, layout.parts
    set_state(conn, "transform_complete", "false")
    set_state(conn, "all_dirty", "true")
    drop_change_logs(conn)  # everything is published whole
    summary.transform_mode = "full"
    transform.prepare(conn, summary.as_of)
    stats.dirty = list(range(parts))
    once = [m for m in load_models() if is_once(m)]
    with display.bar("dimensions", len(once), "models") as bar:
        transform.build_models(conn, once, bar.advance)
    lap("dimensions")
    _export(conn, layout)
    lap("export")
    for step, fn in (
        ("stage-a", stage_events),
        ("stage-opens", stage_opens),
        ("build", build_partition),
    ):
        futures = fn.map(layout, range(parts))
        stats.tasks += [future.result() for future in futures]
        lap(step)
    for folder in ("raw", "stage", "out"):
        stats.shuffle_bytes[folder] = _bytes(layout.root / folder)
    built = _combine(conn, layout)
    lap("combine")
    pipeline.finish_transform(conn, summary, None, [*(m.name for m in once), *built])
    lap("finish")


def _incremental(
    writer: pipeline.Writer,
    summary: RunSummary,
    display: progress.Display,
    layout: Layout,
    stats: BuildStats,
    lap: Any,
) -> None:
    """An incremental partitioned transform: staging and dimensions brought up to date in the
    writer (models/incremental.py), then the dirty channel partitions built as Dask tasks and
    their rows replaced in the writer's tables (logged, so publish can add files)."""
    conn = writer.conn
    run = pipeline.begin_transform(conn, summary)
    assert run is not None  # can_run_incrementally held
    stats.mode = "incremental"
    layers = transform.layers()
    in_writer = [*layers["staging"], *(m for m in layers["marts"] if is_once(m))]
    built: list[str] = []
    try:
        with display.bar("staging and dimensions", len(in_writer), "models") as bar:
            built += incremental.build_models(run, in_writer, bar.advance)
        lap("writer incremental")
        stats.dirty = dirty_partitions(conn, run, layout)
        lap("dirty partitions")
        if stats.dirty:
            _export_staged(conn, layout, stats.dirty)
            lap("export")
            futures = build_partition.map(layout, stats.dirty)
            stats.tasks += [future.result() for future in futures]
            lap("build")
            stats.shuffle_bytes["stage"] = _bytes(layout.root / "stage")
            stats.shuffle_bytes["out"] = _bytes(layout.root / "out")
            built += _replace(conn, layout, stats.dirty)
            lap("replace")
    except BaseException:
        incremental.end(conn)
        raise
    pipeline.finish_transform(conn, summary, run, built)
    lap("finish")


def task_runner(workers: int | None, address: str | None) -> Any:
    """Prefect's DaskTaskRunner: on the cluster at `address`, or on a local cluster of `workers`
    processes (one thread each, bound to 127.0.0.1, no dashboard), each with a Dask memory limit
    that leaves its task's DuckDB the writer's memory limit."""
    from prefect_dask import DaskTaskRunner

    if address:
        return DaskTaskRunner(address=address)
    return DaskTaskRunner(
        cluster_class="distributed.LocalCluster",
        cluster_kwargs={
            "n_workers": workers,
            "threads_per_worker": 1,
            "processes": True,
            "host": "127.0.0.1",
            "dashboard_address": None,
            "scheduler_kwargs": {"dashboard": False},
            "memory_limit": int(_default_memory() / DUCKDB_SHARE),
        },
    )


@contextmanager
def shared_prefect_api() -> Iterator[None]:
    """One Prefect API for the flow and its Dask workers: PREFECT_API_URL when set, else a
    temporary server started here, whose address the local workers inherit (without it each
    worker process would start a temporary server of its own)."""
    if os.environ.get("PREFECT_API_URL"):
        yield
        return
    from prefect.server.api.server import SubprocessASGIServer
    from prefect.settings import PREFECT_API_URL, temporary_settings

    # the server the flow's own client would start; it stops at exit, after the logs are sent
    server = SubprocessASGIServer()
    server.start()
    os.environ["PREFECT_API_URL"] = server.api_url
    try:
        with temporary_settings({PREFECT_API_URL: server.api_url}):
            yield
    finally:
        os.environ.pop("PREFECT_API_URL", None)


def quiet_dask() -> None:
    """Dask's own log at warnings only (its info lines and closing-connection noise hidden)."""
    logging.getLogger("distributed").setLevel(logging.ERROR)


def cluster_workers(address: str) -> int:
    """How many worker threads the Dask cluster at `address` has (a UserError if unreachable)."""
    from distributed import Client

    try:
        with Client(address, timeout=10) as client:
            workers = client.scheduler_info(n_workers=-1)["workers"].values()
    except OSError as error:
        raise UserError(
            f"cannot reach the Dask scheduler at {address} ({error}): start it, or check the "
            "address (tcp://host:port)"
        ) from None
    return sum(int(w.get("nthreads", 1)) for w in workers) or 1


def _import_modules() -> None:
    """Import what a partition task needs (run in every Dask worker while the writer ingests)."""
    import prefect.task_engine  # noqa: F401

    import metrics_etl.run.dask_build  # noqa: F401


def warm_workers() -> None:
    """Start the flow's Dask cluster (or connect to it) now, and let every worker import the task
    modules without waiting: both then happen while the writer ingests, not after."""
    from prefect.context import FlowRunContext

    context = FlowRunContext.get()
    client = (
        getattr(context.task_runner, "client", None) if context else None
    )  # a DaskTaskRunner's client starts its cluster
    if client is not None:
        from distributed import fire_and_forget

        for worker in client.scheduler_info(n_workers=-1)["workers"]:
            fire_and_forget(client.submit(_import_modules, pure=False, workers=[worker]))
