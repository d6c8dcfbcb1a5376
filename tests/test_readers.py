"""Readers that cannot be misled: the catalog after a copy or move, a snapshot's table folders
under every reader's glob, no partition columns anywhere, clean-up of hard-linked snapshots, a
publish stopped part-way, and the polars reader `metrics_etl.open_warehouse` against the
reference.
"""

from __future__ import annotations

import datetime as dt
import errno
import filecmp
import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import duckdb
import polars as pl
import pyarrow.dataset as ds
import pytest

import metrics_etl
from conftest import build
from metrics_etl.errors import UserError
from metrics_etl.generator.generate import generate
from metrics_etl.publish import snapshot as publish
from metrics_etl.serve.reader import ANALYTICS, Reader, open_snapshot
from reference import Reference, bucket_start
from snapshots import same

BIN = Path(sys.executable).parent
DUCKDB_CLI = BIN / "duckdb"
LATE = "reads/2017"  # the raw folder the second run adds


# --------------------------------------------------------------------------- the warehouse


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory):
    """Generated raw data published in two runs (the second adds a folder of reads), so that
    `data/` holds files of two snapshots; the reference over all of it."""
    root = tmp_path_factory.mktemp("readers")
    full, raw, wh = root / "full", root / "raw", root / "wh"
    summary = generate(full, events=4000, seed=5)
    as_of = dt.datetime.fromisoformat(summary["as_of"].replace("Z", "+00:00"))
    shutil.copytree(
        full, raw, ignore=lambda folder, _: ["2017"] if folder.endswith("reads") else []
    )
    first = build(raw, wh, as_of)
    shutil.copytree(full / LATE, raw / LATE)
    second = build(raw, wh, as_of)
    assert (first.status, second.status) == ("published", "published")
    return root, wh, Reference(full, as_of), first.snapshot_id


def manifest_of(folder: Path) -> dict:
    return json.loads((folder / "manifest.json").read_text())


def column_names(manifest: dict, table: str) -> list[str]:
    return [name for name, _ in manifest["tables"][table]["columns"]]


def counts_sql(manifest: dict) -> str:
    """One query counting every table's rows by name (the catalog's views)."""
    return " union all ".join(
        f"select '{table}' as t, count(*) as n from {table}" for table in sorted(manifest["tables"])
    )


def manifest_counts(manifest: dict) -> dict[str, int]:
    return {table: info["rows"] for table, info in manifest["tables"].items()}


def duckdb_cli(catalog: str, sql: str, cwd: Path) -> dict[str, int]:
    """Table counts from the real DuckDB shell, opened read-only on a catalog from `cwd`."""
    done = subprocess.run(
        [str(DUCKDB_CLI), "-readonly", "-json", catalog, "-c", sql],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return {row["t"]: row["n"] for row in json.loads(done.stdout)}


def copy_warehouse(source: Path, target: Path) -> Path:
    """A copy as a user makes one: `cp -a` (symlinks and hard links kept)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["cp", "-a", str(source), str(target)], check=True)
    return target


def assert_tree_matches_manifest(warehouse: Path, folder: Path) -> None:
    """A snapshot's `tables/` folders hold exactly its manifest's files, each the same file."""
    manifest = manifest_of(folder)
    tree = folder / publish.TREE
    assert sorted(p.name for p in tree.iterdir()) == sorted(manifest["tables"])
    for table, info in manifest["tables"].items():
        want = {publish.tree_path(rel): warehouse / rel for rel in info["files"]}
        got = {p.relative_to(folder).as_posix() for p in (tree / table).iterdir()}
        assert got == set(want), table
        for rel, data_file in want.items():  # a hard link, or (copied warehouse) the same bytes
            same = os.path.samefile(folder / rel, data_file)
            assert same or filecmp.cmp(folder / rel, data_file, shallow=False), rel


# --------------------------------------------------------------------------- globs


def test_a_glob_over_a_snapshots_table_folder_reads_exactly_its_rows(world) -> None:
    """DuckDB, pyarrow and polars over `current/tables/<table>` give the manifest's rows and
    columns (no `part`), where a glob over `data/` double-counts."""
    _, wh, _, _ = world
    current = wh / "current"
    manifest = manifest_of(current)
    assert_tree_matches_manifest(wh, current)
    con = duckdb.connect()
    for table, info in manifest["tables"].items():
        folder = current / "tables" / table
        listed = publish.parquet_scan([wh / f for f in info["files"]])
        want = Counter(map(repr, con.sql(f"select * from {listed}").fetchall()))
        assert want.total() == info["rows"]
        for hive in ("true", "false", "auto"):
            glob = str(folder / "**" / "*.parquet")
            option = "" if hive == "auto" else f", hive_partitioning = {hive}"
            relation = con.sql(f"select * from read_parquet('{glob}'{option})")
            assert relation.columns == column_names(manifest, table), (table, hive)
            assert Counter(map(repr, relation.fetchall())) == want, (table, hive)
        dataset = ds.dataset(folder, format="parquet", partitioning="hive")
        assert dataset.schema.names == column_names(manifest, table)
        assert dataset.count_rows() == info["rows"], table
        for source in (str(folder), str(folder / "**" / "*.parquet")):
            frame = pl.scan_parquet(source).collect()
            assert frame.columns == column_names(manifest, table), source
            assert frame.height == info["rows"], source
    # what the folders are for: `data/` holds the files of every kept snapshot
    everything = con.sql(f"select count(*) from read_parquet('{wh}/data/runs/**/*.parquet')")
    assert everything.fetchall()[0][0] > manifest["tables"]["runs"]["rows"] == 2


def test_no_reader_sees_a_partition_column(world, capsys: pytest.CaptureFixture[str]) -> None:
    """The API's views, `metrics-etl sql`, the catalog and the polars reader list the
    manifest's columns, no more."""
    from metrics_etl.cli import main

    _, wh, _, _ = world
    manifest = manifest_of(wh / "current")
    with open_snapshot(wh) as snap, metrics_etl.open_warehouse(wh) as reader:
        catalog = duckdb.connect(str(wh / "current" / "catalog.duckdb"), read_only=True)
        for table in manifest["tables"]:
            want = column_names(manifest, table)
            assert snap.conn.sql(f"select * from {table}").columns == want, table
            assert catalog.sql(f"select * from {table}").columns == want, table
            assert reader.scan(table).collect_schema().names() == want, table
            assert reader.to_arrow(table).column_names == want, table
        catalog.close()
    assert main(["sql", "--warehouse", str(wh), "--format", "json", "select * from fct_reads"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert list(rows[0]) == column_names(manifest, "fct_reads")


def test_sql_writes_every_duckdb_value_as_json(world, capsys: pytest.CaptureFixture[str]) -> None:
    """`metrics-etl sql --format json` writes what orjson cannot (integers past 64 bits, maps
    with keys that are not strings) exactly, as valid JSON, never a traceback; a query that
    fails writes nothing on stdout and one line on stderr."""
    from metrics_etl.cli import main

    _, wh, _, _ = world
    query = (
        "select (1::hugeint << 126) - 1 + (1::hugeint << 126) as h, "
        "-(1::hugeint << 126) - (1::hugeint << 126) as lo, "
        "(1::uhugeint << 127) - 1 + (1::uhugeint << 127) as u, [1::hugeint << 100] as l, "
        "{'x': 1::hugeint << 90, 'at': timestamptz '2016-01-01 10:00:00.5+00'} as s, "
        "map([1, 2], ['a', 'b']) as m, map([date '2016-01-02'], [1]) as md, "
        "'nan'::double as f, 1.5::decimal(20, 3) as dec, time '10:00' as tm"
    )
    # each row is written alone: one past 64 bits goes the standard library's way, the next not
    mixed = "select * from (values (1::hugeint << 100, 'Zoë'), (1, 'x')) as t(v, name) order by v"
    assert main(["sql", "--warehouse", str(wh), "--format", "json", mixed]) == 0
    assert json.loads(capsys.readouterr().out) == [
        {"v": 1, "name": "x"},
        {"v": 2**100, "name": "Zoë"},
    ]
    assert main(["sql", "--warehouse", str(wh), "--format", "json", query]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row == {
        "h": 2**127 - 1,
        "lo": -(2**127),
        "u": 2**128 - 1,
        "l": [2**100],
        "s": {"x": 2**90, "at": "2016-01-01T10:00:00.500000+00:00"},
        "m": {"1": "a", "2": "b"},
        "md": {"2016-01-02": 1},
        "f": None,
        "dec": "1.500",
        "tm": "10:00:00",
    }
    for form in ("json", "csv", "table"):
        failing = "select error('boom ' || x) as x from range(3) as t(x)"  # fails as it runs
        assert main(["sql", "--warehouse", str(wh), "--format", form, failing]) == 1
        out, err = capsys.readouterr()
        assert out == "" and err.startswith("metrics-etl sql: error: ") and err.count("\n") == 1


def test_sql_table_format_says_when_it_shows_only_some_rows(
    world, capsys: pytest.CaptureFixture[str]
) -> None:
    """The table format runs the query once and shows up to 9,999 rows with their count; past
    them it says so on stderr and points at csv and json, which print every row."""
    from metrics_etl.cli import main

    _, wh, _, _ = world
    assert main(["sql", "--warehouse", str(wh), "select * from range(3)"]) == 0
    out, err = capsys.readouterr()
    assert "│     2 │" in out and err == ""
    assert main(["sql", "--warehouse", str(wh), "select * from range(20000)"]) == 0
    out, err = capsys.readouterr()
    assert "│  9998 │" in out and "│  9999 │" not in out
    assert "more than 9,999 rows" in err and "--format csv or json" in err
    assert main(["sql", "--warehouse", str(wh), "--format", "csv", "from range(20000)"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 20_001


# --------------------------------------------------------------------------- the catalog


def test_the_catalog_works_after_the_warehouse_is_copied_and_the_original_deleted(
    world, tmp_path: Path
) -> None:
    """The DuckDB shell from another folder (absolute and relative paths, through `current` or
    the snapshot's own folder), Python's duckdb and `metrics-etl sql` all read the copy."""
    _, wh, _, _ = world
    original = copy_warehouse(wh, tmp_path / "original")
    copy = copy_warehouse(original, tmp_path / "moved" / "copy")
    shutil.rmtree(original)
    manifest = manifest_of(copy / "current")
    want = manifest_counts(manifest)
    sql = counts_sql(manifest)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    real = copy / "snapshots" / manifest["snapshot_id"]
    for catalog, cwd in (
        (str(copy / "current" / "catalog.duckdb"), elsewhere),
        ("copy/current/catalog.duckdb", tmp_path / "moved"),
        (str(real / "catalog.duckdb"), Path("/")),
        ("catalog.duckdb", copy / "current"),
    ):
        assert duckdb_cli(catalog, sql, cwd) == want, (catalog, cwd)
    with duckdb.connect(str(copy / "current" / "catalog.duckdb"), read_only=True) as con:
        assert dict(con.sql(sql).fetchall()) == want
    done = subprocess.run(
        [str(BIN / "metrics-etl"), "sql", "--warehouse", str(copy), "--format", "csv", sql],
        cwd=elsewhere,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()[1:]
    assert {t: int(n) for t, n in (line.split(",") for line in lines)} == want


def test_a_copy_never_reads_the_originals_files(world, tmp_path: Path) -> None:
    """With the original still in place but its Parquet files broken, the copy's catalog
    answers exactly; so does a single snapshot folder copied on its own."""
    _, wh, _, _ = world
    original = copy_warehouse(wh, tmp_path / "original")
    copy = copy_warehouse(original, tmp_path / "copy")
    alone = copy_warehouse((original / "current").resolve(), tmp_path / "one-snapshot")
    for path in (original / "data").rglob("*.parquet"):
        path.write_bytes(b"not parquet")  # same inode: the snapshots' links break too
    manifest = manifest_of(copy / "current")
    sql = counts_sql(manifest)
    for catalog in (copy / "current" / "catalog.duckdb", alone / "catalog.duckdb"):
        assert duckdb_cli(str(catalog), sql, original) == manifest_counts(manifest)
        assert duckdb_cli(os.path.relpath(catalog, original), sql, original) == (
            manifest_counts(manifest)
        )
    broken = subprocess.run(
        [str(DUCKDB_CLI), "-readonly", str(original / "current" / "catalog.duckdb"), "-c", sql],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert broken.returncode != 0  # the test would notice a read of the original's files


def test_a_warehouse_named_like_a_pattern_reads_its_own_files_in_the_shell(
    world, tmp_path: Path
) -> None:
    """`wh*` beside `wh-copy`: the shell's catalog escapes the folder, so nothing is read twice."""
    _, wh, _, _ = world
    odd = copy_warehouse(wh, tmp_path / "wh*[1]")
    copy_warehouse(odd, tmp_path / "wh-copy1")
    manifest = manifest_of(odd / "current")
    got = duckdb_cli(str(odd / "current" / "catalog.duckdb"), counts_sql(manifest), tmp_path)
    assert got == manifest_counts(manifest)


# --------------------------------------------------------------------------- clean-up, faults


def test_clean_up_removes_links_and_then_files_no_manifest_lists(world, tmp_path: Path) -> None:
    """Removing a snapshot removes its links; data files go when no kept manifest lists them;
    the kept snapshots' folders still match their manifests."""
    _, wh, _, first = world
    copy = copy_warehouse(wh, tmp_path / "wh")
    before = {p for p in (copy / "data").rglob("*") if p.is_file()}  # Parquet and segments
    only_first = publish.listed_files(manifest_of(copy / "snapshots" / first)) - (
        publish.listed_files(manifest_of(copy / "current"))
    )
    assert only_first
    removed = publish.clean_up(copy, keep=1, retention_minutes=0)
    assert removed == {"snapshots": 1, "files": len(only_first)}
    assert not (copy / "snapshots" / first).exists()
    kept = publish.listed_files(manifest_of(copy / "current"))
    after = {p.relative_to(copy).as_posix() for p in (copy / "data").rglob("*") if p.is_file()}
    assert after == kept and len(before) == len(kept) + len(only_first)
    assert_tree_matches_manifest(copy, copy / "current")
    for rel in (f for f in kept if f.endswith(".parquet")):  # tables' files (segments: no links)
        assert (copy / rel).stat().st_nlink == 2, rel  # data/ and the one kept snapshot


class Killed(BaseException):
    """Stands for a SIGKILL: nothing after it runs."""


def republish(warehouse: Path, snapshot_id: str) -> publish.PublishResult:
    """The current snapshot's tables as a new snapshot (finish's work alone)."""
    tables = manifest_of(warehouse / "current")["tables"]
    return publish.PublishResult(snapshot_id, 0, 0, {"tables": tables})


def test_a_publish_stopped_while_linking_leaves_nothing_visible(
    world, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Killed half-way through the links, or just before the switch: `current` and its folder
    are as they were; a retry under the same id links exactly the manifest's files; clean-up
    removes a folder that never got a manifest."""
    _, wh, _, _ = world
    copy = copy_warehouse(wh, tmp_path / "wh")
    current = os.readlink(copy / "current")
    real_link = os.link
    made: list[str] = []

    def link_then_die(source: str | Path, target: str | Path) -> None:
        if len(made) == 25:
            raise Killed
        made.append(str(target))
        real_link(source, target)

    monkeypatch.setattr(publish.os, "link", link_then_die)
    with pytest.raises(Killed):
        publish.finish(copy, republish(copy, "20990101T000000000000Z-aaaaaa"), {})
    monkeypatch.setattr(publish.os, "link", real_link)
    half = copy / "snapshots" / "20990101T000000000000Z-aaaaaa"
    assert os.readlink(copy / "current") == current
    assert not (half / "manifest.json").exists() and not (half / "catalog.duckdb").exists()
    assert_tree_matches_manifest(copy, copy / "current")

    publish.finish(copy, republish(copy, "20990101T000000000000Z-aaaaaa"), {})  # the retry
    assert os.readlink(copy / "current") == "snapshots/20990101T000000000000Z-aaaaaa"
    assert_tree_matches_manifest(copy, half)
    assert not [p for p in half.rglob("*") if p.name.startswith(".")]

    def die_at(step: str) -> None:
        if step == "before-switch":
            raise Killed

    monkeypatch.setattr(publish, "crash_point", die_at)
    with pytest.raises(Killed):
        publish.finish(copy, republish(copy, "20990102T000000000000Z-bbbbbb"), {})
    assert os.readlink(copy / "current") == "snapshots/20990101T000000000000Z-aaaaaa"
    monkeypatch.undo()

    stray = copy / "snapshots" / "20990103T000000000000Z-cccccc"
    (stray / "tables").mkdir(parents=True)  # a run killed before its manifest
    publish.clean_up(copy, keep=10, retention_minutes=0)
    assert not stray.exists()
    assert_tree_matches_manifest(copy, copy / "current")


def test_without_hard_links_a_snapshots_folders_hold_copies(
    world, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file system that refuses hard links gets copies: the same bytes, the same rows."""
    _, wh, _, _ = world
    copy = copy_warehouse(wh, tmp_path / "wh")

    def refuse(source: str | Path, target: str | Path) -> None:
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(publish.os, "link", refuse)
    publish.finish(copy, republish(copy, "20990101T000000000000Z-aaaaaa"), {})
    current = copy / "current"
    manifest = manifest_of(current)
    for info in manifest["tables"].values():
        for rel in info["files"]:
            linked = current / publish.tree_path(rel)
            assert not os.path.samefile(linked, copy / rel)
            assert linked.read_bytes() == (copy / rel).read_bytes()
    sql = counts_sql(manifest)
    assert duckdb_cli(str(current / "catalog.duckdb"), sql, tmp_path) == manifest_counts(manifest)


# --------------------------------------------------------------------------- open_warehouse


def weekly_reads(
    wh: metrics_etl.serve.warehouse.Warehouse, channel_id: int
) -> dict[dt.datetime, int]:
    """The README's example: reads per local week (from Monday) of a channel, in polars."""
    _, zone = (
        wh.scan("dim_channels")
        .filter(pl.col("channel_id") == channel_id)
        .select("account_id", "timezone")
        .collect()
        .row(0)
    )
    weekly = (
        wh.scan("fct_reads")
        .filter(pl.col("channel_id") == channel_id)
        .group_by(week=pl.col("read_at").dt.convert_time_zone(zone).dt.truncate("1w"))
        .agg(reads=pl.len())
        .collect()
    )
    return dict(zip(weekly["week"].to_list(), weekly["reads"].to_list(), strict=True))


def test_weekly_reads_in_polars_equal_the_reference(world) -> None:
    """Every live channel's reads per local week, from `scan`, equal a direct count over the
    raw files (the reference's current reads and its week buckets)."""
    _, wh, ref, _ = world
    channels = [c for c in ref._current["channels"].values() if not c.get("deleted_at")]
    assert channels
    zones = set()
    with metrics_etl.open_warehouse(wh) as reader:
        for channel in channels:
            zone = ref._zone(channel["account_id"])
            zones.add(zone.key)
            reports = ref._alive_reports_in_channel(channel["channel_id"])
            want = Counter(
                bucket_start(r["read_at"], "week", zone)
                for r in ref._current["reads"].values()
                if r["report_id"] in reports
            )
            got = weekly_reads(reader, channel["channel_id"])
            assert got == dict(want), channel["channel_id"]
    assert len(zones) > 2


def test_open_warehouse_answers_as_the_api_and_the_reference(world) -> None:
    """`get` answers every endpoint as the reference does, from the pinned snapshot."""
    _, wh, ref, _ = world
    channels = sorted(
        (c["channel_id"], c["account_id"])
        for c in ref._current["channels"].values()
        if not c.get("deleted_at")
    )[:4]
    requests = [
        (
            f"/api/v4/analytics/{endpoint}?channel_id={c}&start_date=2016-01-01&end_date=2018-01-01",
            a,
        )
        for c, a in channels
        for endpoint in ANALYTICS
        if endpoint != "reports_per_field_selection"
    ]
    with metrics_etl.open_warehouse(wh) as reader:
        answers = [(path, account, reader.get(path, account)) for path, account in requests]
    assert all(same(ref.get(p, a), got) for p, a, got in answers)
    assert sum(1 for *_, (status, body) in answers if status == 200 and body) > len(requests) // 2


def test_an_open_warehouse_stays_on_its_snapshot_and_keeps_it_from_clean_up(
    world, tmp_path: Path
) -> None:
    """After `current` moves on, scans and answers still come from the opened snapshot, and
    clean-up leaves it (and its files) until it is closed."""
    _, wh, _, first = world
    copy = copy_warehouse(wh, tmp_path / "wh")
    second = manifest_of(copy / "current")["snapshot_id"]
    path = "/api/v4/analytics/reports_read?channel_id={c}&start_date=2016-01-01&end_date=2018-01-01"
    with metrics_etl.open_warehouse(copy) as reader:
        rows = reader.scan("fct_reads").collect()
        channel, account = (
            reader.scan("fct_reads")
            .join(reader.scan("dim_channels"), on="channel_id")
            .group_by("channel_id", "account_id")
            .agg(pl.len())
            .sort("len", descending=True)
            .select("channel_id", "account_id")
            .collect()
            .row(0)
        )
        answer = reader.get(path.format(c=channel), account)
        publish.switch_current(copy, first)  # as if a run had published (fewer reads)
        assert Reader(copy).get(path.format(c=channel), account) != answer
        publish.clean_up(copy, keep=0, retention_minutes=0)
        assert (copy / "snapshots" / second).exists()
        assert reader.scan("fct_reads").collect().equals(rows)
        assert reader.to_arrow("fct_reads").num_rows == rows.height
        assert reader.get(path.format(c=channel), account) == answer
        assert reader.snapshot_id == second
    publish.clean_up(copy, keep=0, retention_minutes=0)
    assert not (copy / "snapshots" / second).exists()
    with pytest.raises(UserError, match="closed"):
        reader.scan("fct_reads")


def test_open_warehouse_explains_bad_input(tmp_path: Path, world) -> None:
    """No snapshot yet, or an unknown table: one sentence saying so."""
    _, wh, _, _ = world
    with pytest.raises(UserError, match="nothing is published"):
        metrics_etl.open_warehouse(tmp_path / "empty")
    with metrics_etl.open_warehouse(wh) as reader:
        assert "fct_reads" in reader.tables() and "runs" in reader.tables()
        with pytest.raises(UserError, match="no table 'reads'"):
            reader.scan("reads")
