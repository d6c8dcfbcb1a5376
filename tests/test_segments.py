"""Serving segments: written by the build, listed in the manifest, mapped by the reader, rewritten
only where rows changed, kept and removed by clean-up like data files."""

from __future__ import annotations

import datetime as dt
import json
import random
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pytest

from conftest import build
from metrics_etl.generator.generate import generate
from metrics_etl.models.build import published_models
from metrics_etl.publish import snapshot as publish
from metrics_etl.run import pipeline
from metrics_etl.serve import index as index_module
from metrics_etl.serve import segments
from metrics_etl.serve.index import (
    BUILDERS,
    FEW_IDS,
    SOURCES,
    Codes,
    ReportStats,
    Sorted,
    as_column,
    fetch,
    format_instants,
    from_us,
    sorted_order,
    splice,
    splice_report_stats,
    stable_order,
    to_us,
    unbuild,
)
from metrics_etl.serve.reader import ANALYTICS, Reader
from metrics_etl.timeparse import format_instant
from rawkit import base_world, jsonl, reads, report
from snapshots import ask, manifest_of
from test_incremental import copy_files, random_split, raw_files

AS_OF = dt.datetime(2017, 1, 1, tzinfo=dt.UTC)


def listed_segments(warehouse: Path) -> dict[str, str]:
    """Segment name -> its file, in the current snapshot's manifest."""
    return {name: info["files"][0] for name, info in manifest_of(warehouse)["segments"].items()}


def random_requests(warehouse: Path, n: int, seed: int) -> list[tuple[str, int]]:
    """Random analytics requests over the channels of the warehouse, and report-stats pages."""
    reader = Reader(warehouse)
    conn = reader.snapshot().conn
    channels = conn.execute("select channel_id, account_id from dim_channels").fetchall()
    fields = conn.execute("select field_id from dim_fields").fetchall()
    orgs = conn.execute("select username, account_id from dim_accounts").fetchall()
    lo, hi = conn.execute("select min(created_at), max(created_at) from fct_reports").fetchone()
    reader.close()
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        channel, account = rng.choice(channels)
        start = lo + dt.timedelta(microseconds=rng.randrange(int((hi - lo).total_seconds() * 1e6)))
        end = start + dt.timedelta(hours=rng.choice([1, 30, 24 * 40, 24 * 400]), microseconds=7)
        endpoint = rng.choice(ANALYTICS)
        q = f"channel_id={channel}&start_date={start.isoformat()}&end_date={end.isoformat()}"
        q = q.replace("+", "%2B")
        if endpoint == "reports_per_field_selection":
            q += f"&field_id={rng.choice(fields)[0]}"
        if endpoint == "reports_read":
            q += "&fields=total_reads,unique_reads,report_readers,reports_seen"
        if endpoint == "user_awareness":
            q += "&fields=total_alerts,unique_alerts,alert_source_reports,alerts_opened"
        out.append((f"/api/v4/analytics/{endpoint}?{q}", account))
    for username, account in orgs:
        for page in ("page=1&per_page=3", "page=2&per_page=3&include_spaces=all"):
            out.append((f"/batch/{username}/report_stats?{page}", account))
    return out


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A warehouse built from generated data."""
    root = tmp_path_factory.mktemp("segments")
    summary = generate(root / "raw", events=8_000, seed=5)
    as_of = dt.datetime.fromisoformat(summary["as_of"].replace("Z", "+00:00"))
    build(root / "raw", root / "wh", as_of)
    return root / "wh"


def test_every_bucket_of_every_part_is_a_listed_file(generated: Path) -> None:
    listing = listed_segments(generated)
    channel_parts = ["reports", "selections", "images", "reads", "deliveries"]
    expected = {f"{p}/{b:02d}" for p in channel_parts for b in range(segments.BUCKETS)}
    assert set(listing) == expected | {"dims", "report_stats"}
    assert manifest_of(generated)["segment_buckets"] == segments.BUCKETS
    on_disk = {
        p.relative_to(generated).as_posix() for p in (generated / "data/_serving").rglob("*")
    }
    assert set(listing.values()) == {p for p in on_disk if p.endswith(".arrow")}


def test_mapped_answers_equal_an_index_built_in_memory(generated: Path, tmp_path: Path) -> None:
    """The same requests answered from the mapped segments and, for a copy of the snapshot
    whose manifest lists no segments (one published before they existed), from an index built
    from its Parquet tables."""
    requests = random_requests(generated, 300, seed=3)
    mapped = ask(generated, requests)
    copy = tmp_path / "wh"
    shutil.copytree(generated, copy, symlinks=True)
    manifest_path = copy / "current" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    del manifest["segments"]
    manifest_path.write_text(json.dumps(manifest))
    built = ask(copy, requests)
    assert sum(status == 200 for status, _ in mapped.values()) > 200
    diffs = [r for r in requests if mapped[r] != built[r]]
    assert not diffs, f"{len(diffs)} answers differ, e.g. {diffs[:2]}"


def test_the_reader_maps_segments_without_copying(generated: Path) -> None:
    reader = Reader(generated)
    try:
        channel = reader.snapshot().conn.execute("select min(channel_id) from fct_reads").fetchone()
        reads = reader.snapshot().index.part("reads", channel[0])
        for array in (reads.pair.facts.t, reads.by_pair.prev, reads.users.values):
            assert isinstance(array, np.ndarray)
            assert not array.flags.owndata and not array.flags.writeable
    finally:
        reader.close()


def test_the_reader_reads_ahead_each_segment_file_once(
    generated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    advised: list[str] = []
    real = segments.os.posix_fadvise

    def record(fd: int, offset: int, length: int, advice: int) -> None:
        advised.append(segments.os.readlink(f"/proc/self/fd/{fd}"))
        real(fd, offset, length, advice)

    monkeypatch.setattr(segments.os, "posix_fadvise", record)
    monkeypatch.setattr(segments, "_PREFETCHED", set())
    reader = Reader(generated)
    try:
        reader.prefetch()
        reader.prefetch()  # the same files: not again
    finally:
        reader.close()
    listed = {str((generated / f).resolve()) for f in listed_segments(generated).values()}
    assert sorted(advised) == sorted(listed)


def hand_world(raw: Path) -> None:
    """Reports in channels 1 and 3 (of account 1), one read of each."""
    base_world(raw)
    jsonl(
        raw / "reports/r.jsonl",
        [report(i, f"2016-11-0{i}T12:00:00Z", channel_id=1 if i % 2 else 3) for i in range(1, 7)],
    )
    jsonl(
        raw / "reads/r.jsonl",
        [r for i in range(1, 7) for r in reads([i], i, at=f"2016-11-0{i}T13:00:00Z")],
    )


def test_a_run_rewrites_only_the_segments_whose_rows_changed(tmp_path: Path) -> None:
    raw, wh = tmp_path / "raw", tmp_path / "wh"
    hand_world(raw)
    build(raw, wh, AS_OF)
    before = listed_segments(wh)
    reader = Reader(wh)
    with reader.pinned() as first:
        other_channel = first.index.part("reads", 3)
        this_channel = first.index.part("reads", 1)
    # one more report in channel 1, and its read: channel 1's bucket changes, channel 3's not
    at = "2016-11-20T00:00:00Z"
    jsonl(raw / "reports/more.jsonl", [report(50, at, at, channel_id=1)])
    jsonl(raw / "reads/more.jsonl", reads([50], 50, at="2016-11-20T01:00:00Z"))
    build(raw, wh, AS_OF)
    after = listed_segments(wh)
    changed = {name for name in after if after[name] != before[name]}
    bucket = f"{1 % segments.BUCKETS:02d}"
    assert {"reports/" + bucket, "reads/" + bucket} <= changed
    assert changed <= {f"{p}/{bucket}" for p in segments.SOURCES} | {"dims", "report_stats"}
    for name in set(after) - changed:
        assert (wh / after[name]).exists()
    # the switch maps only the new segments: channel 3's is the one mapped already
    with reader.pinned() as second:
        assert second.snapshot_id != first.snapshot_id
        assert second.index.part("reads", 3) is other_channel
        assert second.index.part("reads", 1) is not this_channel
        answer = reader.get(
            "/api/v4/analytics/reports_read?channel_id=1&start_date=2016-11-01"
            "&end_date=2016-12-01&fields=total_reads,reports_seen",
            1,
        )
    assert answer == (200, {"total_reads": 4, "reports_seen": 4})
    reader.close()


def test_clean_up_keeps_exactly_the_segments_a_snapshot_lists(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("METRICS_ETL_KEEP_SNAPSHOTS", "1")
    raw, wh = tmp_path / "raw", tmp_path / "wh"
    hand_world(raw)
    build(raw, wh, AS_OF)
    first = set(listed_segments(wh).values())
    for i in (60, 61):
        at = f"2016-11-2{i - 59}T00:00:00Z"
        jsonl(raw / f"reports/more{i}.jsonl", [report(i, at, at, channel_id=1)])
        build(raw, wh, AS_OF)
    listed = set()
    for manifest in (wh / "snapshots").glob("*/manifest.json"):
        listed |= {i["files"][0] for i in json.loads(manifest.read_text())["segments"].values()}
    on_disk = {
        p.relative_to(wh).as_posix() for p in (wh / "data/_serving").rglob("*") if p.is_file()
    }
    assert on_disk == listed
    assert first - listed, "segments of removed snapshots were not removed"


def test_sums_updated_from_change_logs_equal_those_counted_by_a_full_build(tmp_path: Path) -> None:
    """The segments' row counts and hash sums, updated run by run from the change logs (rows
    added, moved and removed), name the same segments as a full build of the same raw data."""
    raw, wh = tmp_path / "raw", tmp_path / "wh"
    hand_world(raw)
    build(raw, wh, AS_OF)
    at = "2016-11-20T00:00:00Z"
    jsonl(raw / "reports/more.jsonl", [report(50, at, at, channel_id=1)])
    jsonl(raw / "reads/more.jsonl", reads([50, 51], 50, at="2016-11-20T01:00:00Z"))
    assert build(raw, wh, AS_OF).transform_mode == "incremental"
    # report 2 moves to channel 1 (its read with it); report 50 is deleted
    later = "2016-11-25T00:00:00Z"
    jsonl(
        raw / "reports/moved.jsonl",
        [
            report(2, "2016-11-02T12:00:00Z", later, channel_id=1),
            report(50, at, later, channel_id=1, deleted_at=later),
        ],
    )
    assert build(raw, wh, AS_OF).transform_mode == "incremental"
    full = tmp_path / "full"
    build(raw, full, AS_OF)
    url = (
        "/api/v4/analytics/reports_read?channel_id=1&start_date=2016-11-01"
        "&end_date=2016-12-01&fields=total_reads"
    )
    # reports 1, 3, 5 and the moved 2 were read once each; 50 (read twice) is deleted
    assert ask(wh, [(url, 1)])[(url, 1)] == (200, {"total_reads": 4})
    assert manifest_of(wh)["segment_sources"] == manifest_of(full)["segment_sources"]
    assert listed_segments(wh) == listed_segments(full)


@pytest.mark.parametrize(
    "dtype", [np.int64, np.int32, np.int16, np.uint64, np.uint32, np.uint16, np.float64]
)
def test_codes_of_a_column_are_what_numpy_unique_gives(dtype: type) -> None:
    """A column's dictionary and codes equal np.unique's values and inverse, whether the ids
    are sorted already (their runs), dense enough for the table over their range, few (NumPy's
    sort) or many and so sparse that they are sorted by radix (or, for ids spanning 2**48 and
    more, by NumPy's sort)."""
    rng = np.random.default_rng(5)
    for trial in range(300):
        # every 5th: more ids than FEW_IDS
        n = int(rng.integers(FEW_IDS - 5, FEW_IDS + 400) if trial % 5 == 0 else rng.integers(0, 60))
        # every 4th: sparse; every 6th: beyond a radix sort's 48 bits
        span = 2**31 if trial % 4 == 0 else 2**62 if trial % 6 == 0 else int(rng.integers(1, 300))
        base = int(rng.integers(-1000, 1000))
        ids = (rng.integers(0, span, n, dtype=np.int64) + base).astype(dtype)
        for column in (ids, np.sort(ids)):
            codes, inverse = Codes.of(column)
            values, expected = np.unique(column, return_inverse=True)
            assert codes.values.dtype == values.dtype
            assert np.array_equal(codes.values, values)
            assert inverse.dtype == np.int64
            assert np.array_equal(inverse, expected.reshape(-1))


@pytest.mark.parametrize(
    "dtype", [np.int64, np.int32, np.int16, np.int8, np.uint64, np.uint32, np.uint16, np.float64]
)
def test_stable_order_is_numpys_stable_argsort(dtype: type) -> None:
    """The order the distinct-count index is built from equals np.argsort(kind="stable"), for
    keys of every width, from the dtype's extremes, spanning (max - min) one value, just below,
    at and above each 16-bit pass of the radix sort and its 2**48 limit, with many ties."""
    rng = random.Random(6)  # Python integers: spans and offsets past 2**63
    info = np.iinfo(dtype) if np.issubdtype(dtype, np.integer) else np.iinfo(np.int64)
    edges = [0, 1, 5, 300, *(2**b + d for b in (16, 17, 32, 33, 47, 48) for d in (-1, 0, 1))]
    spans = [*edges, 2**60, 2**64 - 1]
    for trial in range(600):
        span = min(spans[trial % len(spans)], int(info.max) - int(info.min))
        low = [int(info.min), int(info.max) - span][trial % 2] if trial % 3 == 0 else None
        if low is None:
            low = rng.randint(int(info.min), int(info.max) - span)
        n = rng.randint(2, 200)
        pool = [rng.randint(0, span) for _ in range(max(1, n // 4))]
        offsets = [0, span, *(rng.choice(pool) for _ in range(n - 2))]  # the span exactly
        keys = np.array([low + o for o in offsets], dtype=dtype)
        assert np.array_equal(stable_order(keys), np.argsort(keys, kind="stable")), (trial, span)
    assert len(stable_order(np.zeros(0, dtype=dtype))) == 0


def test_sorted_order_sorts_rows_in_or_out_of_storage_order() -> None:
    """The order `fetch` sorts a table's rows by equals a lexicographic sort by (bucket,
    channel, time, tie-breaker) wherever those keys differ, whether the rows come as a table
    stores them (sorted runs, a month each) or in any other order, and `sorted_order` gives
    back the keys in that order."""
    rng = np.random.default_rng(8)
    for trial in range(300):
        n = int(rng.integers(0, 200))
        channel = rng.integers(1, int(rng.integers(2, 40)), n)
        t = rng.integers(-(10**12), 10**12, n) // [1, 10**11][trial % 2]  # many ties, or few
        then = rng.permutation(n)
        if trial % 3:  # storage order: by month, then channel, time and tie-breaker
            month = np.floor_divide(t, 30 * 24 * 3_600_000_000)
            stored = np.lexsort((then, t, channel, month))
            channel, t, then = channel[stored], t[stored], then[stored]
        bucket = channel % 16
        keys = [channel, t, then] if trial % 2 else [channel, t]
        order, ordered = sorted_order(bucket, keys)
        assert np.array_equal(np.sort(order), np.arange(n))
        expected = np.lexsort((*keys[::-1], bucket))
        for got, key in zip(ordered, [bucket, *keys], strict=True):
            assert np.array_equal(got, key[order])
            assert np.array_equal(got, key[expected])


def test_fetch_equals_a_read_sorted_by_duckdb(generated: Path) -> None:
    """`fetch` (storage order sorted in NumPy) gives every source the rows of a read that DuckDB
    sorts by (bucket, channel, time, tie-breaker): the same keys in the same order, and the same
    rows within each (channel, time)."""
    conn = Reader(generated).snapshot().conn
    every = list(range(segments.BUCKETS))
    for part, sources in SOURCES.items():
        for name, source in sources.items():
            got = fetch(conn, source, every, segments.BUCKETS)
            select = ", ".join(f"{expr} as {col}" for col, expr in source.columns.items())
            then = f", {source.then_by}" if source.then_by else ""
            bucket = (
                f"((channel_id % {segments.BUCKETS}) + {segments.BUCKETS}) % {segments.BUCKETS}"
            )
            want = conn.execute(
                f"select {bucket} as bucket, channel_id, epoch_us({source.time_column}) as t, "
                f"{select} from {source.table} where {source.where} "
                f"order by bucket, channel_id, t{then}"
            ).to_arrow_table()
            assert got.bucket.tolist() == want["bucket"].to_pylist(), f"{part}.{name}"
            assert got.channel.tolist() == want["channel_id"].to_pylist(), f"{part}.{name}"
            assert got.t.tolist() == want["t"].to_pylist(), f"{part}.{name}"
            columns = [got.channel, got.t, *got.cols.values()]
            rows = list(zip(*[as_list(c) for c in columns], strict=True))
            wanted = list(
                zip(
                    *[as_list(as_column(want[c])) for c in ["channel_id", "t", *source.columns]],
                    strict=True,
                )
            )
            if source.then_by:
                assert rows == wanted, f"{part}.{name}"
            else:
                assert sorted(rows, key=repr) == sorted(wanted, key=repr), f"{part}.{name}"


def as_list(column: np.ndarray | pa.Array) -> list:
    """A NumPy or Arrow column as a list."""
    return column.tolist() if isinstance(column, np.ndarray) else column.to_pylist()


def as_lists(table: Sorted) -> list[list]:
    """A source table's columns as lists: channel per row, time, then its columns."""
    channel = np.repeat(table.channels, np.diff(table.starts))
    columns = [channel, table.t, *table.cols.values()]
    return [c.tolist() if isinstance(c, np.ndarray) else c.to_pylist() for c in columns]


def test_a_segment_unbuilt_gives_back_the_rows_it_was_built_from(generated: Path) -> None:
    """Every channel part's builder, then `unbuild`, gives back the rows `fetch` read from the
    tables, in the same order and with the same values."""
    conn = Reader(generated).snapshot().conn
    every = list(range(segments.BUCKETS))
    for part, sources in SOURCES.items():
        fetched = {
            name: fetch(conn, source, every, segments.BUCKETS) for name, source in sources.items()
        }
        for bucket in every:
            read = {name: as_lists(f.of(bucket)) for name, f in fetched.items()}
            built = BUILDERS[part]({name: f.of(bucket) for name, f in fetched.items()})
            back = {name: as_lists(table) for name, table in unbuild(part, built).items()}
            assert back == read, f"{part}/{bucket}"


def test_splice_replaces_the_rows_of_each_window() -> None:
    """Random tables and windows (a channel and a UTC hour, before 1970 too): the spliced table
    equals one sorted from scratch out of the rows outside the windows and the new rows."""
    rng = np.random.default_rng(11)
    hour = 3_600_000_000

    def rows(n: int, windows: set[tuple[int, int]] | None = None) -> list[tuple]:
        out = []
        for _ in range(n):
            channel, t = int(rng.integers(-3, 6)), int(rng.integers(-3 * hour, 4 * hour))
            if windows is None or (channel, t // hour * hour) in windows:
                out.append((channel, t, int(rng.integers(0, 2**40))))
        return sorted(out)

    def as_sorted(table: list[tuple]) -> Sorted:
        channel = np.array([r[0] for r in table], dtype=np.int64)
        first = np.flatnonzero(np.diff(channel, prepend=channel[:1] - 1))
        return Sorted(
            channel[first],
            np.append(first, len(table)).astype(np.int64),
            np.array([r[1] for r in table], dtype=np.int64),
            {
                "v": np.array([r[2] for r in table], dtype=np.int64),
                "s": pa.array([str(r[2] % 7) for r in table], pa.string()),
            },
        )

    for _ in range(300):
        old = rows(int(rng.integers(0, 40)))
        windows = {
            (int(rng.integers(-3, 6)), int(rng.integers(-3, 4)) * hour)
            for _ in range(int(rng.integers(0, 8)))
        }
        new = rows(int(rng.integers(0, 60)), windows)
        kept = [r for r in old if (r[0], r[1] // hour * hour) not in windows]
        ordered = sorted(windows)
        got = splice(
            as_sorted(old),
            (
                np.array([w[0] for w in ordered], np.int64),
                np.array([w[1] for w in ordered], np.int64),
            ),
            as_sorted(new),
        )
        want = as_sorted(sorted(kept + new, key=lambda r: (r[0], r[1])))
        assert as_lists(got) == as_lists(want)
        assert np.array_equal(got.channels, want.channels)
        assert np.array_equal(got.starts, want.starts)


def canonical(warehouse: Path) -> dict[str, list[tuple]]:
    """Every channel segment's source rows, sorted (rows of equal channel and time may be in
    any order), by segment and source."""
    out = {}
    for name, rel in listed_segments(warehouse).items():
        part, _, bucket = name.partition("/")
        if bucket:
            for source, table in unbuild(
                part, segments.read_segment(warehouse / rel, part)
            ).items():
                out[f"{name}/{source}"] = sorted(zip(*as_lists(table), strict=True), key=repr)
    return out


@pytest.mark.parametrize("chunk_rows", [segments.CHUNK_ROWS, 200])
def test_segments_spliced_from_change_logs_hold_the_rows_of_a_full_build(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk_rows: int
) -> None:
    """Generated files split over runs (late and out of order): the segments an incremental run
    splices from the previous ones and its change logs hold exactly the rows of a full build's,
    are named alike, and answer alike; also when a run splices a chunk of buckets at a time."""
    monkeypatch.setattr(segments, "SPLICE_SHARE", 0)  # report stats spliced however many changed
    chunked = chunk_rows < segments.CHUNK_ROWS
    monkeypatch.setattr(segments, "CHUNK_ROWS", chunk_rows)
    later_chunks: list[str] = []  # parts spliced in a chunk after their first
    real_chunk = segments._spliced

    def chunk(*args: Any) -> Any:
        read = args[-1]
        if getattr(read, "__func__", None) is segments.Writer.drain:  # `between`: a later chunk
            later_chunks.append(args[2])
        return real_chunk(*args)

    monkeypatch.setattr(segments, "_spliced", chunk)
    spliced: list[str] = []
    for name in ("splice", "splice_report_stats"):
        real = getattr(segments, name)
        monkeypatch.setattr(
            segments,
            name,
            lambda *args, name=name, real=real: spliced.append(name) or real(*args),
        )
    gen = tmp_path / "gen"
    summary = generate(gen, events=3_000, seed=23)
    as_of = dt.datetime.fromisoformat(summary["as_of"].replace("Z", "+00:00"))
    files = raw_files(gen)
    warehouse = tmp_path / "wh"
    for index, run in enumerate(random_split(files, seed=4)):
        build(copy_files(gen, tmp_path / f"raw{index}", run), warehouse, as_of)
    assert set(spliced) == {"splice", "splice_report_stats"}, "no run spliced a segment"
    assert bool(later_chunks) == chunked, later_chunks
    full = tmp_path / "full"
    build(copy_files(gen, tmp_path / "full_raw", files), full, as_of)
    assert listed_segments(warehouse) == listed_segments(full)
    got, want = canonical(warehouse), canonical(full)
    assert got.keys() == want.keys()
    assert [k for k in got if got[k] != want[k]] == []
    stats = [
        segments.read_segment(w / listed_segments(w)["report_stats"], "report_stats")
        for w in (warehouse, full)
    ]
    assert stats[0].rows.to_pylist() == stats[1].rows.to_pylist()
    for name in ("account", "shared", "shared_account"):
        assert np.array_equal(getattr(stats[0], name), getattr(stats[1], name))
    requests = random_requests(full, 300, seed=8)
    mine, theirs = ask(warehouse, requests), ask(full, requests)
    assert [r for r in requests if mine[r] != theirs[r]] == []


def test_splice_report_stats_replaces_the_rows_of_the_named_reports(tmp_path: Path) -> None:
    """Random report stats (reports moving between accounts, appearing, disappearing, becoming
    shared): the spliced rows (runs of the old and new rows, as chunks) equal the new state
    sorted from scratch, and so does the segment written from them."""
    rng = np.random.default_rng(3)

    def stats(rows: dict[int, tuple[int, bool, str]]) -> ReportStats:
        ordered = sorted(rows.items(), key=lambda r: (r[1][0], r[0]))
        account = np.array([a for _, (a, _, _) in ordered], dtype=np.int64)
        shared = np.flatnonzero(np.array([s for _, (_, s, _) in ordered], dtype=bool))
        return ReportStats(
            pa.StructArray.from_arrays(
                [
                    pa.array([r for r, _ in ordered], pa.int64()),
                    pa.array([[t] for _, (_, _, t) in ordered], pa.list_(pa.string())),
                ],
                names=["report_id", "emails"],
            ),
            account,
            shared,
            account[shared],
        )

    def state() -> tuple[int, bool, str]:
        return int(rng.integers(0, 4)), bool(rng.integers(0, 2)), str(rng.integers(0, 99))

    chunks = 0
    for _ in range(300):
        before = {int(r): state() for r in rng.choice(40, int(rng.integers(0, 30)), replace=False)}
        after = dict(before)
        touched = {int(r) for r in rng.choice(50, int(rng.integers(0, 10)))}
        for key in touched:
            after.pop(key, None)
            if rng.integers(0, 3):
                after[key] = state()
        changed = np.array(sorted(touched), dtype=np.int64)
        got = splice_report_stats(
            stats(before), changed, stats({r: v for r, v in after.items() if r in touched})
        )
        want = stats(after)
        assert got.rows.to_pylist() == want.rows.to_pylist()
        for name in ("account", "shared", "shared_account"):
            assert np.array_equal(getattr(got, name), getattr(want, name))
        chunks = max(chunks, getattr(got.rows, "num_chunks", 1))
        segments.write_segment(tmp_path / "stats.arrow", got)
        written = segments.read_segment(tmp_path / "stats.arrow", "report_stats")
        assert written.rows.to_pylist() == want.rows.to_pylist()
    assert chunks > 2  # rows kept and replaced in several runs


def test_a_run_builds_a_segment_whose_previous_file_is_gone_from_the_tables(
    tmp_path: Path,
) -> None:
    """A previous segment deleted by hand: the next run cannot splice it, so it builds that
    bucket from the tables, and answers as a full build does."""
    raw, wh = tmp_path / "raw", tmp_path / "wh"
    hand_world(raw)
    build(raw, wh, AS_OF)
    bucket = f"{1 % segments.BUCKETS:02d}"
    (wh / listed_segments(wh)[f"reads/{bucket}"]).unlink()
    at = "2016-11-20T00:00:00Z"
    jsonl(raw / "reports/more.jsonl", [report(50, at, at, channel_id=1)])
    jsonl(raw / "reads/more.jsonl", reads([50], 50, at="2016-11-20T01:00:00Z"))
    assert build(raw, wh, AS_OF).status == "published"
    full = tmp_path / "full"
    build(raw, full, AS_OF)
    assert listed_segments(wh) == listed_segments(full)
    url = (
        "/api/v4/analytics/reports_read?channel_id=1&start_date=2016-11-01"
        "&end_date=2016-12-01&fields=total_reads,reports_seen"
    )
    assert (
        ask(wh, [(url, 1)])[(url, 1)]
        == ask(full, [(url, 1)])[(url, 1)]
        == (
            200,
            {"total_reads": 4, "reports_seen": 4},
        )
    )


def test_a_failed_segment_write_fails_the_step(tmp_path: Path) -> None:
    """Segments are written on a thread of their own; a write that fails still fails the step
    (raised when the writer is left), and the writes before it are complete files."""
    empty = np.zeros(0, dtype=np.int64)
    text = pa.array([], pa.string())
    cols = {"report_image_id": empty, "report_id": empty, "thumb": text, "medium": text}
    part = Sorted(empty, np.zeros(1, dtype=np.int64), empty, cols)
    (tmp_path / "blocked").write_text("a file where a folder should be")
    good = tmp_path / "ok" / "segment.arrow"
    with pytest.raises(OSError), segments.Writer() as writer:
        writer.write(good, part)
        writer.write(tmp_path / "blocked" / "segment.arrow", part)
    assert segments.read_segment(good, "images").cols.keys() == cols.keys()


def test_instants_formatted_at_once_equal_one_at_a_time() -> None:
    """`format_instants` (NumPy, for a column) writes each instant as `format_instant` does:
    UTC, milliseconds floored, with Z, from year 1 to 9999 and before 1970."""
    first = to_us(dt.datetime(1, 1, 1, tzinfo=dt.UTC))
    last = to_us(dt.datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=dt.UTC))
    rng = np.random.default_rng(9)
    values = np.concatenate(
        [[first, last, -1, -999, -1000, -1001, 0, 999, 1000], rng.integers(first, last, 500)]
    ).astype(np.int64)
    assert format_instants(values) == [format_instant(from_us(v)) for v in values.tolist()]


def test_segments_built_a_chunk_at_a_time_from_spilled_sources_equal_a_build_in_one_go(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a few rows per chunk, a full build writes the segments of a part in several chunks
    of buckets from one scan per source, spilled to a file per chunk: the segments hold the
    rows of a build that reads every bucket at once, are named alike, answer alike, and no
    spill file is left."""
    gen = tmp_path / "gen"
    summary = generate(gen, events=3_000, seed=31)
    as_of = dt.datetime.fromisoformat(summary["as_of"].replace("Z", "+00:00"))
    whole = tmp_path / "whole"
    build(gen, whole, as_of)
    spills: list[str] = []
    real = index_module.spill
    monkeypatch.setattr(
        index_module,
        "spill",
        lambda conn, source, chunks, *rest: (
            spills.append(source.table) or real(conn, source, chunks, *rest)
        ),
    )
    monkeypatch.setattr(segments, "CHUNK_ROWS", 200)
    chunked = tmp_path / "chunked"
    build(gen, chunked, as_of)
    assert {"fct_reads", "agg_reads_hourly"} <= set(spills), "the reads were not chunked"
    assert len(spills) == len(set(spills)), "a source is spilled (scanned) once"
    assert listed_segments(chunked) == listed_segments(whole)
    got, want = canonical(chunked), canonical(whole)
    assert got.keys() == want.keys()
    assert [k for k in got if got[k] != want[k]] == []
    assert not list((chunked / "_state").glob("segments-spill*/*"))
    requests = random_requests(whole, 200, seed=12)
    mine, theirs = ask(chunked, requests), ask(whole, requests)
    assert [r for r in requests if mine[r] != theirs[r]] == []


@pytest.mark.parametrize("chunks", [2, 4])
def test_each_chunk_is_read_before_the_previous_ones_writes_are_waited_for(
    generated: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunks: int
) -> None:
    """Building a part a chunk of buckets at a time (scanned per chunk, or spilled from three
    chunks on), each chunk after the first is read before `between` (where the writer drains),
    so that reading it overlaps writing the previous chunk's last segments; then it is built."""
    events: list[str] = []
    for name in ("fetch", "fetch_spilled"):
        real = getattr(index_module, name)

        def reading(*args: Any, real: Any = real) -> Any:
            events.append("R")
            return real(*args)

        monkeypatch.setattr(index_module, name, reading)
    conn = writer_copy(generated, tmp_path)
    buckets = list(range(segments.BUCKETS))
    groups = [buckets[k::chunks] for k in range(chunks)]
    built = index_module.build_parts(
        conn, "reads", groups, segments.BUCKETS, tmp_path / "spill", lambda: events.append("D")
    )
    for _ in built:
        events.append("B")
    per_chunk = "R" * len(SOURCES["reads"]) + "D" + "B" * (segments.BUCKETS // chunks)
    assert "".join(events) == per_chunk.replace("D", "", 1) + per_chunk * (chunks - 1)


def test_buckets_near_the_epoch_held_in_narrow_integers_are_answered(tmp_path: Path) -> None:
    """A segment stores a column in 32 bits when its values fit (an hour starting at the epoch
    is 0); the answer's bucket starts are still written, not overflowed."""
    raw, wh = tmp_path / "raw", tmp_path / "wh"
    base_world(raw)
    at = "1970-01-01T00:10:00Z"
    jsonl(raw / "reports/epoch.jsonl", [report(1, at, at, channel_id=1)])
    build(raw, wh, AS_OF)
    reader = Reader(wh)
    try:
        status, body = reader.get(
            "/api/v4/analytics/reports_over_time?channel_id=1&start_date=1970-01-01"
            "&end_date=1970-01-02&datetime_range_width=hour",
            1,
        )
    finally:
        reader.close()
    assert status == 200
    assert body == [
        {
            "account_id": 1,
            "datetime_range_start": "1970-01-01T00:00:00.000Z",
            "report_count": 1,
            "datetime_range_width": "hour",
        }
    ]


def written_files(folder: Path) -> set[str]:
    """The Parquet and segment files under a folder (each named by a hash of its bytes)."""
    found = [*folder.rglob("*.parquet"), *folder.rglob("*.arrow")]
    return {p.relative_to(folder).as_posix() for p in found}


def writer_copy(warehouse: Path, tmp_path: Path) -> duckdb.DuckDBPyConnection:
    """A connection to a copy of a warehouse's writer database, set as the pipeline's."""
    shutil.copy(warehouse / "_state" / "warehouse.duckdb", tmp_path / "writer.duckdb")
    conn = duckdb.connect(str(tmp_path / "writer.duckdb"))
    conn.execute("set TimeZone = 'UTC'; set preserve_insertion_order = false")
    return conn


def preserving(conn: duckdb.DuckDBPyConnection) -> bool:
    """The database's preserve_insertion_order setting."""
    return bool(conn.execute("select current_setting('preserve_insertion_order')").fetchall()[0][0])


def test_segments_written_alongside_the_tables_equal_both_written_in_turn(
    generated: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Publish writes the segments on a thread of their own while it writes the tables'
    Parquet. Both read tables in storage order, `preserve_insertion_order`, a setting of the
    whole database: it stays on from the start of the block until the segments are written
    (here they outlast the tables), then is back as it was; every file written alongside
    (named by a hash of its bytes) is the one written in turn."""
    conn = writer_copy(generated, tmp_path)
    tables = [*published_models(), "rejects", "file_stats"]
    in_turn = tmp_path / "in_turn"
    publish.write_tables(conn, in_turn, tables, "snap")
    want_entries = segments.write_segments(conn, in_turn)
    want = written_files(in_turn)
    assert any(f.endswith(".arrow") for f in want) and any(f.endswith(".parquet") for f in want)
    seen: list[bool] = []
    sampling, tables_done = threading.Event(), threading.Event()

    def sample(cursor: duckdb.DuckDBPyConnection) -> None:
        while not sampling.is_set():
            seen.append(preserving(cursor))
            time.sleep(0.002)

    sampler = threading.Thread(target=sample, args=(conn.cursor(),))
    real = segments.write_segments

    def outlasting(*args: Any) -> tuple[dict, int, int]:
        written = real(*args)
        assert tables_done.wait(60)
        time.sleep(0.1)  # still at work after the tables are done
        sampling.set()  # the thread's last moment: the setting must be on up to here
        sampler.join()
        return written

    monkeypatch.setattr(segments, "write_segments", outlasting)
    folder = tmp_path / "alongside"
    with segments.Alongside(conn, folder, None, None) as alongside:
        sampler.start()
        time.sleep(0.05)  # before the tables' publish turns the setting on itself
        publish.write_tables(conn, folder, tables, "snap")
        tables_done.set()
    assert len(seen) > 50 and all(seen)
    assert alongside.result() == want_entries
    assert written_files(folder) == want
    assert not preserving(conn)


def test_segments_alongside_a_failed_publish_stop_and_the_failure_is_raised(
    generated: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When writing the tables fails, the segments' thread stops before writing a segment, the
    tables' error is the one raised, and the setting is back as it was."""
    real = segments.table_sums

    def slow(*args: object) -> segments.Sums:
        time.sleep(0.3)  # the failure below comes first
        return real(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(segments, "table_sums", slow)
    conn = writer_copy(generated, tmp_path)
    folder = tmp_path / "wh"
    with (
        pytest.raises(RuntimeError, match="disk full"),
        segments.Alongside(conn, folder, None, None) as alongside,
    ):
        raise RuntimeError("disk full")
    with pytest.raises((segments.Cancelled, duckdb.InterruptException)):  # between or in queries
        alongside.result()
    assert written_files(folder) == set()
    assert not preserving(conn)


# a query that runs for over a minute on this machine (about 1.2 s per 10**8 rows)
LONG_QUERY = "select sum(hash(range)) from range(10000000000)"


def test_interrupting_a_connection_interrupts_the_queries_of_its_cursors() -> None:
    """`interrupt` stops the query a cursor of the connection runs (DuckDB's own interrupt
    stops only the connection's), and refuses the connection new cursors while it lives."""
    parent = duckdb.connect().cursor()
    timer = threading.Timer(0.5, index_module.interrupt, [parent])
    timer.start()
    started = time.monotonic()
    with pytest.raises(duckdb.InterruptException), index_module.child_cursor(parent) as cursor:
        cursor.execute(LONG_QUERY).fetchall()
    assert time.monotonic() - started < 20
    with pytest.raises(duckdb.InterruptException), index_module.child_cursor(parent):
        pass
    other = duckdb.connect().cursor()
    with index_module.child_cursor(other) as cursor:
        assert cursor.execute("select 1").fetchall() == [(1,)]


@pytest.mark.parametrize("between_queries", [False, True])
def test_segments_stopped_inside_a_table_read_stop_at_once(
    generated: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, between_queries: bool
) -> None:
    """When the tables fail while the segments' thread reads a table through a cursor of its
    own, that read is interrupted: the block ends at once, not when the read would; also when
    the failure comes before the read's query starts (DuckDB drops an interrupt that finds no
    query running, so the thread is stopped again until it ends)."""
    reading = threading.Event()

    def long_read(conn: duckdb.DuckDBPyConnection, *args: object) -> segments.Sums:
        if between_queries:
            with index_module.child_cursor(conn) as cursor:
                reading.set()
                time.sleep(0.5)  # the tables fail now
                cursor.execute(LONG_QUERY).fetchall()
        else:
            reading.set()
            index_module._arrow(conn, LONG_QUERY)
        raise AssertionError("the read ran to its end")

    monkeypatch.setattr(segments, "table_sums", long_read)
    conn = writer_copy(generated, tmp_path)
    folder = tmp_path / "wh"
    started = time.monotonic()
    with (
        pytest.raises(RuntimeError, match="disk full"),
        segments.Alongside(conn, folder, None, None) as alongside,
    ):
        assert reading.wait(10)
        time.sleep(0.2)  # inside the query, or before it
        raise RuntimeError("disk full")
    assert time.monotonic() - started < 20
    with pytest.raises(duckdb.InterruptException):
        alongside.result()
    assert written_files(folder) == set()
    assert not preserving(conn)


def test_segments_that_fail_beside_the_tables_stop_them_before_their_next_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run whose segments fail (other than for memory) stops writing the tables' Parquet at
    the next table instead of writing every table first, fails with the segments' error, and
    publishes nothing."""
    gen = tmp_path / "gen"
    summary = generate(gen, events=2_000, seed=37)
    as_of = dt.datetime.fromisoformat(summary["as_of"].replace("Z", "+00:00"))
    tables = [*published_models(), "rejects", "file_stats"]
    failed = threading.Event()

    def broken(*args: Any) -> tuple[dict, int, int]:
        failed.set()
        raise RuntimeError("segments broke (injected)")

    real_table = publish.publish_table
    written: list[str] = []

    def after_the_failure(*args: Any) -> Any:
        assert failed.wait(60)
        time.sleep(0.05)  # the thread has raised by now
        written.append(args[2])
        return real_table(*args)

    monkeypatch.setattr(segments, "write_segments", broken)
    monkeypatch.setattr(publish, "publish_table", after_the_failure)
    with pytest.raises(RuntimeError, match="segments broke"):
        build(gen, tmp_path / "wh", as_of)
    # each attempt sees the failure before its first table or its second (without the check,
    # every attempt writes every table)
    assert len(written) <= pipeline.RETRIES + 1 < len(tables)
    assert not (tmp_path / "wh" / "current").exists()


def test_segments_out_of_memory_beside_the_tables_are_written_after_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Beside the tables' Parquet the segments hold memory at the same time as DuckDB's copy;
    when they run out of it there, publish writes them again after the tables (the files
    already written are kept) and the run publishes the segments of a build in turn."""
    gen = tmp_path / "gen"
    summary = generate(gen, events=3_000, seed=31)
    as_of = dt.datetime.fromisoformat(summary["as_of"].replace("Z", "+00:00"))
    whole = tmp_path / "whole"
    build(gen, whole, as_of)
    real = segments.write_segments
    calls: list[str] = []

    def short_of_memory(*args: Any) -> tuple[dict, int, int]:
        calls.append(threading.current_thread().name)
        if len(calls) == 1:
            raise duckdb.OutOfMemoryException("Out of Memory Error: could not allocate (injected)")
        return real(*args)

    monkeypatch.setattr(segments, "write_segments", short_of_memory)
    retried = tmp_path / "retried"
    assert build(gen, retried, as_of).status == "published"
    assert calls[0].startswith("segments") and not calls[1].startswith("segments")
    assert listed_segments(retried) == listed_segments(whole)
