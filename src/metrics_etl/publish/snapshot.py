"""Publish marts as Parquet snapshots and switch the current snapshot atomically.

Layout under the warehouse folder:

    data/<table>/part=<YYYY-MM|all>/<fingerprint>.parquet   immutable data files, shared
    snapshots/<snapshot_id>/manifest.json                   which files make each table
    snapshots/<snapshot_id>/tables/<table>/<part>-<fingerprint>.parquet
                                                            hard links to that snapshot's files
    snapshots/<snapshot_id>/catalog.duckdb                  views for ad-hoc DuckDB SQL
    current -> snapshots/<snapshot_id>                      switched with one rename

No reader sees a partition column: every scan says `hive_partitioning = false`, and the
snapshot's `tables/` folders hold no `key=value` names for a reader to infer one from.
"""

from __future__ import annotations

import errno
import fcntl
import glob
import json
import os
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import duckdb

from metrics_etl.files import fsync_dir, sha256_of
from metrics_etl.models import catalog as models
from metrics_etl.settings import crash_point


@dataclass(frozen=True)
class TableLayout:
    """How a published table is partitioned (by month of a time column) and sorted.

    Models are kept in their storage order in the writer's database (`Model.storage_order`), so
    a partition is written in the order it is stored in, without sorting it again; the other
    tables are sorted as they are written.
    """

    time_column: str | None
    order_by: str
    stored_in_order: bool = True


# The published models' layouts come from their SQL headers (partitioned_by, order_by); the
# state tables published beside them are sorted as they are written.
LAYOUTS: dict[str, TableLayout] = {
    **{
        model.name: TableLayout(model.partitioned_by, ", ".join(model.order_by))
        for model in models.published()
    },
    "rejects": TableLayout(None, "stream, file, line", stored_in_order=False),
    "file_stats": TableLayout(None, "file", stored_in_order=False),
    "runs": TableLayout(None, "started_at", stored_in_order=False),
}

ROW_GROUP_SIZE = 65536
ZSTD_LEVEL = 1  # 25% faster to write than the default 3, files 2% larger
# Column types a dictionary does not pay for: without one, writing is a third faster at the same size.
PLAIN_TYPES = re.compile(
    r"(BIGINT|INTEGER|SMALLINT|TINYINT|HUGEINT|DOUBLE|FLOAT|BOOLEAN|DATE|TIMESTAMP.*)"
)


@dataclass
class PublishResult:
    """What a publish wrote and reused."""

    snapshot_id: str
    written: int
    reused: int
    manifest: dict


def part_expr(layout: TableLayout) -> str:
    """SQL for a row's partition name."""
    return "'all'" if layout.time_column is None else models.utc_month_name(layout.time_column)


def _partition_filter(layout: TableLayout, part: str) -> str:
    """A sargable filter selecting one partition (a UTC month) of a table stored in order."""
    if part == "empty":
        return "false"
    if layout.time_column is None:
        return "true"
    start = f"'{part}-01 00:00:00+00'::timestamptz"
    return f"{layout.time_column} >= {start} and {layout.time_column} < {start} + interval 1 month"


def _copy_options(conn: duckdb.DuckDBPyConnection, table: str) -> str:
    """Parquet options of a table's files."""
    options = (
        f"format parquet, compression zstd, compression_level {ZSTD_LEVEL}, "
        f"row_group_size {ROW_GROUP_SIZE}"
    )
    if all(PLAIN_TYPES.fullmatch(column_type) for _, column_type in _columns(conn, table)):
        options += ", dictionary_size_limit 1"
    return options


def _write_partition(
    conn: duckdb.DuckDBPyConnection,
    warehouse: Path,
    table: str,
    part: str,
    tag: str,
    options: str,
    query: str | None = None,
) -> tuple[str | None, bool]:
    """Write one partition (or `query`'s rows: a partition's added rows), named by a hash of its
    bytes; returns (file, written).

    The file is written beside its final place and renamed into it; no rows give (None, False),
    and a file that already exists (the same bytes) is not replaced.
    """
    layout = LAYOUTS[table]
    folder = warehouse / "data" / table / f"part={part}"
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".tmp-{tag}.parquet"
    if query is None:
        query = f"select * from {table} where {_partition_filter(layout, part)}"
        if not layout.stored_in_order:
            query += f" order by {layout.order_by}"
    rows = conn.execute(f"copy ({query}) to '{tmp}' ({options})").fetchall()[0][0]
    if not rows and part != "empty":
        tmp.unlink()
        return None, False
    with tmp.open("rb") as handle:
        digest = sha256_of(iter(lambda: handle.read(1 << 20), b""))
        os.fsync(handle.fileno())
    target = folder / f"{digest[:20]}.parquet"
    rel = target.relative_to(warehouse).as_posix()
    if target.exists():
        tmp.unlink()
        return rel, False
    os.replace(tmp, target)
    fsync_dir(folder)
    crash_point("parquet")
    return rel, True


def current_manifest(warehouse: Path) -> dict | None:
    """The current snapshot's manifest, or None when nothing is published."""
    current = current_snapshot(warehouse)
    return None if current is None else json.loads((current / "manifest.json").read_text())


def previous_parts(warehouse: Path) -> dict[str, dict[str, list[str]]]:
    """table -> partition -> files, from the current snapshot's manifest."""
    manifest = current_manifest(warehouse)
    if manifest is None:
        return {}
    found: dict[str, dict[str, list[str]]] = {}
    for table, info in manifest["tables"].items():
        for rel in info["files"]:
            part = rel.split("/")[2].removeprefix("part=")
            found.setdefault(table, {}).setdefault(part, []).append(rel)
    return found


# A partition's files: the one it was last written whole in, and a file per publish that added
# rows to it since; past this many it is written whole again.
MAX_PART_FILES = 8


def net_changes(conn: duckdb.DuckDBPyConnection, table: str, log: str) -> None:
    """Temp tables `net_removed` and `net_added`: the rows `table` lost and gained since the last
    publish (its change log, each side net of the other), with their partition in `_part`."""
    cols = ", ".join(name for name, _ in _columns(conn, table))
    part = part_expr(LAYOUTS[table])
    for name, side in (("net_removed", "not _added"), ("net_added", "_added")):
        other = "_added" if side == "not _added" else "not _added"
        conn.execute(
            f"create or replace temp table {name} as select *, {part} as _part from ("
            f"select {cols} from {log} where {side} "
            f"except all select {cols} from {log} where {other})"
        )


def append_added(
    conn: duckdb.DuckDBPyConnection,
    warehouse: Path,
    table: str,
    part: str,
    files: list[str],
    tag: str,
    options: str,
) -> tuple[list[str], bool] | None:
    """A changed partition as its files plus one of its added rows (`net_changes`), when it only
    gained rows; None when it must be written whole instead: it lost a row (which is in one of
    its files: the change log starts at the current snapshot), it has too many files, or its
    files' rows would not add up to the table's. Returns the files and whether one was written."""
    if not files or len(files) >= MAX_PART_FILES:
        return None
    layout = LAYOUTS[table]
    quoted = part.replace("'", "''")
    removed = f"select count(*) from net_removed where _part = '{quoted}'"
    if conn.execute(removed).fetchall()[0][0]:
        return None
    added = (
        f"select * exclude (_part) from net_added where _part = '{quoted}' "
        f"order by {layout.order_by}"
    )
    out, written = list(files), False
    rel, new = _write_partition(conn, warehouse, table, part, tag, options, added)
    if rel is not None:
        out.append(rel)
        written = new
    # the partition's files must hold exactly the table's rows of it
    have = conn.execute(
        "select coalesce(sum(num_rows), 0) from parquet_file_metadata($paths)",
        {"paths": [glob.escape(str(warehouse / rel)) for rel in out]},
    ).fetchall()[0][0]
    want = conn.execute(
        f"select count(*) from {table} where {_partition_filter(layout, part)}"
    ).fetchall()[0][0]
    return (out, written) if have == want else None


def publish_table(
    conn: duckdb.DuckDBPyConnection,
    warehouse: Path,
    table: str,
    tag: str,
    dirty: set[str] | None = None,
    previous: dict[str, list[str]] | None = None,
    log: str | None = None,
) -> tuple[list[str], int, int]:
    """Write the changed partitions of one table; returns (files, written, reused).

    With `dirty` (the partitions an incremental transform touched) and the previous snapshot's
    files, untouched partitions are taken over as they are, without reading them, and only the
    touched ones are written: with the table's change `log`, as their files plus one of their
    added rows where that suffices (`append_added`), else whole. Without them every partition
    is written; a file whose bytes an earlier snapshot already holds is shared, not replaced.
    """
    layout = LAYOUTS[table]
    kept: dict[str, list[str]] = {}
    if dirty is not None and previous is not None:
        kept = {p: f for p, f in previous.items() if p not in dirty and p != "empty"}
        todo = sorted(dirty)
    else:
        rows = conn.execute(f"select distinct {part_expr(layout)} from {table}").fetchall()
        todo = sorted(row[0] for row in rows)
    files = [f for part_files in kept.values() for f in part_files]
    written, reused = 0, len(files)
    options = _copy_options(conn, table)
    if log is not None and todo:
        net_changes(conn, table, log)
    for part in todo:
        appended = None
        if log is not None and previous is not None:
            appended = append_added(
                conn, warehouse, table, part, previous.get(part, []), tag, options
            )
        if appended is not None:
            files += appended[0]
            written += appended[1]
            reused += len(appended[0]) - appended[1]
            continue
        rel, new = _write_partition(conn, warehouse, table, part, tag, options)
        if rel is not None:
            files.append(rel)
            written += new
            reused += not new
    if not files:  # no rows: one empty file keeps the table's columns
        rel, new = _write_partition(conn, warehouse, table, "empty", tag, options)
        assert rel is not None
        files.append(rel)
        written += new
        reused += not new
    return sorted(files), written, reused


def _columns(conn: duckdb.DuckDBPyConnection, table: str) -> list[list[str]]:
    """Column names and DuckDB types of a table."""
    return [[row[0], row[1]] for row in conn.execute(f"describe {table}").fetchall()]


def parquet_scan(paths: list[Path]) -> str:
    """SQL reading exactly these Parquet files: DuckDB takes each path as a glob pattern, so
    `*`, `?` and `[` in a folder name (a warehouse at `/data/wh[1]`) are escaped, and the paths
    are quoted as SQL strings. No partition column is read from the paths."""
    escaped = (glob.escape(str(path)).replace("'", "''") for path in paths)
    files = ", ".join(f"'{path}'" for path in escaped)
    return f"read_parquet([{files}], hive_partitioning = false)"


TREE = "tables"  # snapshots/<id>/tables/<table>/<part>-<fingerprint>.parquet
NO_LINKS = (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EOPNOTSUPP)


def tree_path(rel: str) -> str:
    """Where a data file (`data/<table>/part=<p>/<hash>.parquet`) appears in the folder of a
    snapshot that lists it: `tables/<table>/<p>-<hash>.parquet`."""
    _, table, part, name = rel.split("/")
    return f"{TREE}/{table}/{part.removeprefix('part=')}-{name}"


def _link(source: Path, target: Path) -> None:
    """Make `target` a hard link to `source` (a copy where the file system has none)."""
    if target.exists() and os.path.samefile(source, target):
        return  # a retried publish linked it already
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(source, tmp)
    except OSError as error:
        if error.errno not in NO_LINKS:
            raise
        shutil.copyfile(source, tmp)
        with tmp.open("rb") as handle:
            os.fsync(handle.fileno())
    os.replace(tmp, target)


def write_tree(snapshot_dir: Path, warehouse: Path, manifest: dict) -> None:
    """A folder per table in the snapshot's folder holding exactly the manifest's files (hard
    links to the shared data files), so that a glob over it reads that snapshot's rows."""
    root = snapshot_dir / TREE
    root.mkdir(exist_ok=True)
    for table, info in manifest["tables"].items():
        folder = root / table
        folder.mkdir(exist_ok=True)
        names = set()
        for rel in info["files"]:
            target = snapshot_dir / tree_path(rel)
            _link(warehouse / rel, target)
            names.add(target.name)
        for stray in folder.iterdir():  # left by an attempt that failed part-way
            if stray.name not in names:
                stray.unlink()
        fsync_dir(folder)
    for stray in root.iterdir():
        if stray.name not in manifest["tables"]:
            shutil.rmtree(stray)
    fsync_dir(root)


# The folder of the catalog file, as DuckDB was given it: DuckDB resolves paths in views against
# the process's working directory, never the database's, and a table function takes no subquery
# (so no `duckdb_databases()`); the default temp_directory is the database path + '.tmp'. Glob
# characters in it are escaped, as `parquet_scan` does.
CATALOG_FOLDER = r"""
create macro snapshot_folder() as
    regexp_replace(
        regexp_replace(current_setting('temp_directory'), '[^/]*$', ''),
        '([*?\[])',
        '[\1]',
        'g'
    )
"""


def write_catalog(snapshot_dir: Path, manifest: dict) -> None:
    """A DuckDB file of views over the files in the snapshot's own `tables/` folder, found
    relative to the catalog file, so a copied or moved warehouse (or snapshot folder) reads its
    own files."""
    tmp = snapshot_dir / ".catalog.duckdb.tmp"
    tmp.unlink(missing_ok=True)
    with duckdb.connect(str(tmp)) as cat:
        cat.execute(CATALOG_FOLDER)
        for table, info in manifest["tables"].items():
            files = ", ".join(
                "snapshot_folder() || '" + tree_path(rel).replace("'", "''") + "'"
                for rel in info["files"]
            )
            cat.execute(
                f"create view {table} as select * "
                f"from read_parquet([{files}], hive_partitioning = false)"
            )
    os.replace(tmp, snapshot_dir / "catalog.duckdb")


def write_tables(
    conn: duckdb.DuckDBPyConnection,
    warehouse: Path,
    tables: list[str],
    snapshot_id: str,
    dirty: dict[str, set[str]] | None = None,
    into: PublishResult | None = None,
    logs: dict[str, str] | None = None,
    check: Callable[[], None] = lambda: None,
) -> PublishResult:
    """Write the changed partitions of tables (sharing unchanged ones) into a snapshot's listing.

    `dirty` maps tables maintained incrementally to the partitions they changed in; `logs` maps
    tables to their change logs; `into` is a listing to add the tables to (a snapshot written in
    several steps); `check` is called before each table and may raise to stop.
    """
    result = into or PublishResult(snapshot_id, 0, 0, {"tables": {}})
    previous = previous_parts(warehouse) if dirty else {}
    kept = conn.execute("select current_setting('preserve_insertion_order')").fetchall()[0][0]
    conn.execute("set preserve_insertion_order = true")  # tables are written in storage order
    for table in tables:
        check()
        hint = (dirty or {}).get(table)
        known = previous.get(table)
        if hint is None or known is None:
            hint = known = None
        log = (logs or {}).get(table) if hint is not None else None
        files, w, r = publish_table(conn, warehouse, table, snapshot_id, hint, known, log)
        rows = conn.execute(f"select count(*) from {table}").fetchall()[0][0]
        result.manifest["tables"][table] = {
            "files": files,
            "rows": rows,
            "columns": _columns(conn, table),
        }
        result.written += w
        result.reused += r
    conn.execute(f"set preserve_insertion_order = {bool(kept)}")
    return result


def finish(warehouse: Path, result: PublishResult, info: dict) -> None:
    """Write a snapshot's table folders, catalog and manifest aside, then switch `current` to
    it."""
    manifest = {"snapshot_id": result.snapshot_id, **info, "tables": result.manifest["tables"]}
    result.manifest = manifest
    snapshot_dir = warehouse / "snapshots" / result.snapshot_id
    snapshot_dir.mkdir(parents=True, exist_ok=True)
    write_tree(snapshot_dir, warehouse, manifest)
    write_catalog(snapshot_dir, manifest)
    tmp_manifest = snapshot_dir / ".manifest.json.tmp"
    tmp_manifest.write_text(json.dumps(manifest, indent=1, default=str))
    with tmp_manifest.open("rb") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp_manifest, snapshot_dir / "manifest.json")
    fsync_dir(snapshot_dir)
    crash_point("before-switch")
    switch_current(warehouse, result.snapshot_id)
    crash_point("after-switch")


def publish(
    conn: duckdb.DuckDBPyConnection,
    warehouse: Path,
    tables: list[str],
    snapshot_id: str,
    info: dict,
    dirty: dict[str, set[str]] | None = None,
) -> PublishResult:
    """Write a new snapshot (sharing unchanged partitions) and switch `current` to it."""
    result = write_tables(conn, warehouse, tables, snapshot_id, dirty)
    finish(warehouse, result, info)
    return result


def switch_current(warehouse: Path, snapshot_id: str) -> None:
    """Point `current` at a snapshot with one atomic rename."""
    link = warehouse / "current"
    tmp = warehouse / f".current-{snapshot_id}"
    tmp.unlink(missing_ok=True)
    os.symlink(Path("snapshots") / snapshot_id, tmp)
    os.replace(tmp, link)
    fsync_dir(warehouse)


def current_id(warehouse: Path) -> str | None:
    """The id of the snapshot `current` points at, or None when there is no `current`."""
    try:  # os.path, not Path: the server asks once per request
        return os.path.basename(os.path.normpath(os.readlink(os.path.join(warehouse, "current"))))
    except OSError:
        return None


def current_snapshot(warehouse: Path) -> Path | None:
    """The folder of the current snapshot, or None when nothing is published."""
    snapshot_id = current_id(warehouse)
    if snapshot_id is None:
        return None
    folder = warehouse / "snapshots" / snapshot_id
    return folder if (folder / "manifest.json").exists() else None


def _in_use(snapshot_dir: Path) -> bool:
    """True when a reader holds a shared lock on the snapshot's manifest."""
    try:
        handle = (snapshot_dir / "manifest.json").open("rb")
    except OSError:
        return False
    with handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return True
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
    return False


def listed_files(manifest: dict) -> set[str]:
    """Every file a manifest references (relative to the warehouse): its tables' data files and
    its serving segments, each listed as {name: {"files": [...], ...}}."""
    groups = [*manifest["tables"].values(), *manifest.get("segments", {}).values()]
    return {f for info in groups for f in info["files"]}


def remove_unpublished(warehouse: Path, snapshot_id: str) -> None:
    """Remove a snapshot written aside by a run that stopped before switching to it (never
    `current`, so never read), unless it is current after all."""
    if snapshot_id == current_id(warehouse) or "/" in snapshot_id or snapshot_id.startswith("."):
        return
    folder = warehouse / "snapshots" / snapshot_id
    if folder.is_dir():
        doomed = folder.with_name(f".del-{snapshot_id}")
        os.rename(folder, doomed)
        shutil.rmtree(doomed, ignore_errors=True)


def clean_up(warehouse: Path, keep: int, retention_minutes: float) -> dict[str, int]:
    """Remove old unused snapshots, then data files no remaining snapshot references."""
    snapshots_dir = warehouse / "snapshots"
    current = current_snapshot(warehouse)
    if not snapshots_dir.exists():
        return {"snapshots": 0, "files": 0}
    for leftover in snapshots_dir.glob(".del-*"):
        shutil.rmtree(leftover, ignore_errors=True)
    snapshots = sorted(p for p in snapshots_dir.glob("[!.]*") if p.is_dir())
    now = time.time()
    removed_snapshots = 0
    for index, folder in enumerate(reversed(snapshots)):
        if current is not None and folder.name == current.name:
            continue
        young = now - folder.stat().st_mtime < retention_minutes * 60
        if index < keep or young or _in_use(folder):
            continue
        doomed = snapshots_dir / f".del-{folder.name}"
        os.rename(folder, doomed)  # readers never see a half-removed snapshot
        crash_point("cleanup")
        shutil.rmtree(doomed, ignore_errors=True)
        removed_snapshots += 1
    referenced: set[str] = set()
    for folder in snapshots_dir.glob("[!.]*"):
        manifest = folder / "manifest.json"
        if not manifest.exists():  # left by a run killed before it published
            shutil.rmtree(folder, ignore_errors=True)
            continue
        referenced.update(listed_files(json.loads(manifest.read_text())))
    crash_point("cleanup")
    removed_files = 0
    data = warehouse / "data"
    for path in data.rglob("*") if data.exists() else []:
        if path.is_file() and path.relative_to(warehouse).as_posix() not in referenced:
            path.unlink(missing_ok=True)
            removed_files += 1
    for tmp in warehouse.glob(".current-*"):
        tmp.unlink(missing_ok=True)
    return {"snapshots": removed_snapshots, "files": removed_files}
