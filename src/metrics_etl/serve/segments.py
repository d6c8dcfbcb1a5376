"""Serving segments: the serving index written by the build as immutable files the server maps.

Layout under the warehouse folder:

    data/_serving/<part>/<bucket>-<hash>.arrow   one segment: a part's index of one channel bucket
    data/_serving/<part>/all-<hash>.arrow        a part built from whole tables (dims, report_stats)

A segment is an uncompressed Arrow IPC file of one record batch of one row: each column holds
one array of the index (a `large_list` whose single value is the whole array), so arrays of
different lengths share a file, and the server reads them zero-copy from a memory map: NumPy
views for integers, Arrow arrays for strings. Nothing is copied or decompressed on opening.

A segment is named by a hash of the rows it is built from (their count and the sum of their
row hashes, per source table, computed by DuckDB) and of the format version, so a run rewrites
only the segments whose rows changed; the others are the previous snapshot's files, reused.
The counts and sums are kept in the manifest, and a run updates them from the change logs of
the tables it changed (sums add up), reading only the rows that changed. A segment whose rows
changed is spliced from the previous one: only the channel-hours its logs name are read again.
The manifest lists them under "segments"; clean-up keeps every file a manifest lists.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import shutil
import threading
import time
import typing
import weakref
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc

from metrics_etl.db import state_dir
from metrics_etl.files import fsync_dir
from metrics_etl.serve.index import (
    BUILDERS,
    SOURCES,
    TYPES,
    WHOLE,
    Sorted,
    Source,
    bucket_sql,
    build_part,
    build_parts,
    fetch,
    hour_of_sql,
    interrupt,
    load_report_stats,
    splice,
    splice_report_stats,
    unbuild,
)

VERSION = "1"  # bump when a segment's columns or a builder change
BUCKETS = 16  # channel buckets per channel part
FOLDER = "data/_serving"
SPLICE_SHARE = 64  # report stats are spliced when at most 1/64 of their rows changed
WRITES_AHEAD = 2  # segments built and waiting to be written, at most
CHUNK_ROWS = 8_000_000  # source rows read at once while writing segments (bounds the memory)


# -- columns of a segment ------------------------------------------------------------------


def flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    """A part's arrays by dotted name (field, nested field, dict key)."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(obj):
        value, name = getattr(obj, f.name), prefix + f.name
        if dataclasses.is_dataclass(value):
            out.update(flatten(value, name + "."))
        elif isinstance(value, dict):
            out.update({f"{name}.{k}": v for k, v in value.items()})
        else:
            out[name] = value
    return out


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    """A dataclass's field types (evaluated once: its annotations are strings)."""
    return typing.get_type_hints(cls)


def unflatten(cls: type, columns: dict[str, Any], prefix: str = "") -> Any:
    """A part of type `cls` from its arrays by dotted name (the inverse of `flatten`)."""
    hints = _hints(cls)
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        name, hint = prefix + f.name, hints[f.name]
        if dataclasses.is_dataclass(hint):
            values[f.name] = unflatten(hint, columns, name + ".")  # type: ignore[arg-type]
        elif typing.get_origin(hint) is dict:
            start = name + "."
            values[f.name] = {k[len(start) :]: v for k, v in columns.items() if k.startswith(start)}
        else:
            values[f.name] = columns[name]
    return cls(**values)


def to_batch(obj: Any) -> pa.RecordBatch:
    """A part as one record batch of one row: each column one array (chunks combined)."""
    names, columns = [], []
    for name, value in flatten(obj).items():
        if isinstance(value, np.ndarray):
            array = pa.array(value)
        elif isinstance(value, pa.ChunkedArray):
            array = value.combine_chunks()
        else:
            array = pa.concat_arrays([value])
        offsets = pa.array([0, len(array)], pa.int64())
        names.append(name)
        columns.append(pa.LargeListArray.from_arrays(offsets, array))
    return pa.record_batch(columns, names=names)


def from_batch(batch: pa.RecordBatch) -> dict[str, Any]:
    """A segment's arrays by name, zero-copy: NumPy for integers, Arrow otherwise."""
    out: dict[str, Any] = {}
    for name, column in zip(batch.schema.names, batch.columns, strict=True):
        array = column.flatten()
        integer = pa.types.is_integer(array.type)
        out[name] = array.to_numpy(zero_copy_only=True) if integer else array
    return out


# -- writing -------------------------------------------------------------------------------


def segment_name(part: str, bucket: int | None) -> str:
    """A segment's name in the manifest: `<part>/<bucket>`, or the part for whole parts."""
    return part if bucket is None else f"{part}/{bucket:02d}"


# Per source table, per channel bucket (-1: a whole part's table), its rows and the sum of their
# row hashes: [rows, sum] (the sum as a decimal string). Kept in the manifest ("segment_sources"),
# so a run updates them from its change logs instead of reading every table again.
Sums = dict[str, dict[str, list]]


def _whole_tables() -> set[str]:
    """Tables read whole into a part (dims, report stats)."""
    return {t for _, tables in WHOLE.values() for t in tables}


def source_tables() -> list[str]:
    """Every table a segment is built from."""
    channel = {s.table for sources in SOURCES.values() for s in sources.values()}
    return sorted(channel | _whole_tables())


def _sums(conn: duckdb.DuckDBPyConnection, table: str, relation: str) -> dict[str, list]:
    """Rows and row-hash sum per bucket of a relation holding `table`'s columns."""
    bucket = "-1" if table in _whole_tables() else bucket_sql(BUCKETS)
    rows = conn.execute(
        f"select {bucket} as bucket, count(*), coalesce(sum(hash(t))::hugeint, 0)::varchar "
        f"from {relation} as t group by all"
    ).fetchall()
    return {str(b): [n, digest] for b, n, digest in rows if n}


def table_sums(
    conn: duckdb.DuckDBPyConnection, changed: dict[str, str | None] | None, previous: Sums | None
) -> Sums:
    """Every source table's sums: carried over from `previous` for a table not in `changed`,
    updated from its change log (`changed[table]`), or counted anew (no log, no previous sums,
    or `changed` None: everything changed)."""
    out: Sums = {}
    for table in source_tables():
        known = (previous or {}).get(table)
        if changed is not None and known is not None and table not in changed:
            out[table] = known
            continue
        log = changed.get(table) if changed is not None else None
        if known is None or log is None:
            out[table] = _sums(conn, table, table)
            continue
        sums = {b: [int(n), int(d)] for b, (n, d) in known.items()}
        cols = "* exclude (_added)"
        for sign, side in ((1, "_added"), (-1, "not _added")):
            for b, (n, d) in _sums(conn, table, f"(select {cols} from {log} where {side})").items():
                was = sums.setdefault(b, [0, 0])
                sums[b] = [was[0] + sign * n, was[1] + sign * int(d)]
        out[table] = {b: [n, str(d)] for b, (n, d) in sums.items() if n}
    return out


def source_hashes(sums: Sums) -> tuple[dict[str, str], dict[str, int]]:
    """Per segment name, a hash of the rows it is built from, and how many rows that is."""
    found: dict[str, list[tuple[str, int, str]]] = {}
    for part, sources in SOURCES.items():
        for number in range(BUCKETS):
            found[segment_name(part, number)] = []
        for table in sorted({s.table for s in sources.values()}):
            for bucket, (n, digest) in sorted(sums[table].items(), key=lambda i: int(i[0])):
                found[segment_name(part, int(bucket))].append((table, n, digest))
    for part, (_, tables) in WHOLE.items():
        found[part] = []
        for table in tables:
            n, digest = sums[table].get("-1", [0, "0"])
            found[part].append((table, n, digest))
    hashes = {
        name: hashlib.sha256(json.dumps([VERSION, BUCKETS, name, items]).encode()).hexdigest()[:20]
        for name, items in found.items()
    }
    return hashes, {name: sum(n for _, n, _ in items) for name, items in found.items()}


def previous_sums(manifest: dict | None) -> Sums | None:
    """The sums a snapshot's manifest holds, if it was written with this layout."""
    if manifest is None or manifest.get("segment_format") != [VERSION, BUCKETS]:
        return None
    sums = manifest.get("segment_sources")
    return sums if isinstance(sums, dict) else None


def write_segment(path: Path, obj: Any) -> None:
    """Write a part's segment beside its place, then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{path.name}")
    batch = to_batch(obj)
    with pa.OSFile(str(tmp), "wb") as sink, ipc.new_file(sink, batch.schema) as writer:
        writer.write_batch(batch)
    with tmp.open("rb") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, path)


class Writer:
    """Writes segments on a thread of its own, so that building the next segment overlaps
    writing and syncing the last; at most WRITES_AHEAD wait (bounding the memory they hold).
    Leaving the block waits for every write; a failed write raises there or at the next one."""

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="segment-writer")
        self._pending: deque[Future] = deque()
        self.written = 0

    def write(self, path: Path, obj: Any) -> None:
        """Write a part's segment at `path` (after the ones before it)."""
        while len(self._pending) >= WRITES_AHEAD:
            self._pending.popleft().result()
        self._pending.append(self._pool.submit(write_segment, path, obj))
        self.written += 1

    def drain(self) -> None:
        """Wait for every write (the segments waiting hold views of the rows they came from)."""
        while self._pending:
            self._pending.popleft().result()

    def __enter__(self) -> Writer:
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.drain()
        finally:
            self._pool.shutdown(wait=True)


def _chunks(buckets: list[int], rows: list[int]) -> list[list[int]]:
    """Buckets in groups of at most CHUNK_ROWS source rows (a bigger bucket alone)."""
    groups: list[list[int]] = [[]]
    total = 0
    for bucket, n in zip(buckets, rows, strict=True):
        if groups[-1] and total + n > CHUNK_ROWS:
            groups.append([])
            total = 0
        groups[-1].append(bucket)
        total += n
    return groups


def previous_files(warehouse: Path, manifest: dict | None) -> dict[str, str]:
    """Segment name -> file, of a snapshot's manifest written with this layout (the files
    that are still there: a segment missing is built from the tables instead)."""
    if previous_sums(manifest) is None:
        return {}
    assert manifest is not None
    listed = {name: entry["files"][0] for name, entry in manifest.get("segments", {}).items()}
    return {name: rel for name, rel in listed.items() if (warehouse / rel).is_file()}


def read_segment(path: Path, part: str) -> Any:
    """A part from its segment file, memory-mapped (not kept for later, unlike `map_segment`)."""
    return unflatten(TYPES[part], from_batch(ipc.open_file(pa.memory_map(str(path))).get_batch(0)))


def window_relation(source: Source, log: str) -> str:
    """SQL for the windows of a change log: each channel and UTC hour (`_hour`, its start in
    epoch microseconds) in which the table lost or gained a row."""
    hour = hour_of_sql(f"epoch_us({source.time_column})")
    return f"select distinct channel_id, {hour} as _hour from {log} where channel_id is not null"


def build_changed(
    conn: duckdb.DuckDBPyConnection,
    warehouse: Path,
    part: str,
    chunks: list[list[int]],
    changed: dict[str, str | None] | None,
    before: dict[str, str],
    between: Callable[[], None] = lambda: None,
) -> Iterator[tuple[int, Any]]:
    """The index of a channel part for each bucket whose rows changed, a chunk of buckets at a
    time (`between` called once each chunk after the first is read, before it is built). When
    every changed source table has a change log and the previous snapshot has these segments,
    each is the previous segment with the rows of every channel-hour that lost or gained a row
    read again (the rows a run changed, and their neighbours in the same hour); else built from
    the tables (scanned once for all chunks, `build_parts`)."""
    sources = SOURCES[part]
    olds = {b: before.get(segment_name(part, b)) for chunk in chunks for b in chunk}
    changed = {} if changed is None else changed  # None: everything changed, no logs
    logs = {n: changed.get(s.table) for n, s in sources.items() if s.table in changed}
    if not changed or None in logs.values() or None in olds.values():
        folder = state_dir(warehouse) / "segments-spill"
        shutil.rmtree(folder, ignore_errors=True)  # left by a run that stopped
        try:
            yield from build_parts(conn, part, chunks, BUCKETS, folder, between)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        return
    for k, chunk in enumerate(chunks):
        yield from _spliced(
            conn, warehouse, part, chunk, logs, olds, between if k else lambda: None
        )


def _spliced(
    conn: duckdb.DuckDBPyConnection,
    warehouse: Path,
    part: str,
    buckets: list[int],
    logs: dict[str, str | None],
    olds: dict[int, str | None],
    read: Callable[[], None] = lambda: None,
) -> Iterator[tuple[int, Any]]:
    """Some buckets of a channel part spliced from their previous segments (`build_changed`;
    `read` called once the rows of their changed windows are read)."""
    sources = SOURCES[part]
    windows, news = {}, {}
    for name, log in logs.items():
        conn.execute(
            "create or replace temp table _segment_windows as "
            f"{window_relation(sources[name], str(log))} order by all"
        )
        try:
            found = conn.execute("select channel_id, _hour from _segment_windows").fetchnumpy()
            windows[name] = (found["channel_id"].astype(np.int64), found["_hour"].astype(np.int64))
            news[name] = fetch(conn, sources[name], buckets, BUCKETS, within="_segment_windows")
        finally:
            conn.execute("drop table if exists _segment_windows")
    read()
    for bucket in sorted(buckets):
        old = unbuild(part, read_segment(warehouse / str(olds[bucket]), part))
        tables: dict[str, Sorted] = {}
        for name, table in old.items():
            if name in windows:
                channels, hours = windows[name]
                mine = channels % BUCKETS == bucket
                table = splice(table, (channels[mine], hours[mine]), news[name].of(bucket))
            tables[name] = Sorted(table.channels, table.starts, table.t, dict(table.cols))
        yield bucket, BUILDERS[part](tables)


def build_whole(
    conn: duckdb.DuckDBPyConnection,
    warehouse: Path,
    part: str,
    changed: dict[str, str | None] | None,
    before: dict[str, str],
) -> Any:
    """A part built from whole tables. Report stats with a change log and a previous segment:
    the previous segment with the rows of the reports the log names read again, unless they
    are more than 1/SPLICE_SHARE of its rows (copying the kept rows run by run then costs
    more than reading them all)."""
    log = (changed or {}).get("report_stats")
    if part != "report_stats" or log is None or part not in before:
        return WHOLE[part][0](conn)
    reports = f"(select distinct report_id from {log})"
    found = conn.execute(f"select report_id from {reports} order by 1").fetchnumpy()
    old = read_segment(warehouse / before[part], part)
    if len(found["report_id"]) * SPLICE_SHARE > len(old.account):
        return WHOLE[part][0](conn)
    return splice_report_stats(
        old, found["report_id"].astype(np.int64), load_report_stats(conn, within=reports)
    )


def write_segments(
    conn: duckdb.DuckDBPyConnection,
    warehouse: Path,
    changed: dict[str, str | None] | None = None,
    previous: dict | None = None,
    check: Callable[[], None] = lambda: None,
) -> tuple[dict, int, int]:
    """Write the segments whose rows changed (the others exist already); returns the manifest's
    entries ("segments", "segment_sources", "segment_format"), and how many segments were
    written and reused. `changed` and `previous` (the current snapshot's manifest): see
    `table_sums`. `check` is called before each segment is written (it may raise to stop)."""
    sums = table_sums(conn, changed, previous_sums(previous))
    hashes, rows = source_hashes(sums)
    before = previous_files(warehouse, previous)
    listing: dict[str, dict[str, Any]] = {}
    todo: dict[str, list[int]] = {}
    for name, digest in hashes.items():
        part, _, bucket = name.partition("/")
        rel = f"{FOLDER}/{part}/{bucket or 'all'}-{digest}.arrow"
        listing[name] = {"files": [rel], "rows": rows[name]}
        if not (warehouse / rel).exists():
            todo.setdefault(part, []).append(int(bucket) if bucket else -1)
    with Writer() as writer:
        for part, buckets in todo.items():
            check()
            if part in WHOLE:
                obj = build_whole(conn, warehouse, part, changed, before)
                writer.write(warehouse / listing[part]["files"][0], obj)
                continue
            chunks = _chunks(buckets, [rows[segment_name(part, b)] for b in buckets])
            built = build_changed(conn, warehouse, part, chunks, changed, before, writer.drain)
            for number, obj in built:
                check()
                writer.write(warehouse / listing[segment_name(part, number)]["files"][0], obj)
    for part in todo:
        fsync_dir(warehouse / FOLDER / part)
    written = writer.written
    entries = {"segments": listing, "segment_sources": sums, "segment_format": [VERSION, BUCKETS]}
    return entries, written, len(listing) - written


STOP_EVERY = 0.1  # seconds between stops of the segments' thread until it ends (`Alongside`)


class Cancelled(Exception):
    """The segments' thread was asked to stop (`Alongside`)."""


# errors of the segments beside the tables that publish retries after them, in turn
AFTER_TABLES = (duckdb.OutOfMemoryException, MemoryError)


class Alongside:
    """`write_segments` on a thread of its own while the block writes the tables' Parquet.

    Both spend their time in DuckDB, NumPy, Arrow and the disk, which run without the GIL, and
    neither keeps two cores busy, so together they take less time than in turn (BENCHMARKS.md).
    The thread reads through a cursor of its own (in UTC, as the writer's connection). Both read
    tables in storage order, and `preserve_insertion_order` is a setting of the whole database:
    it stays on while the block runs. If the block fails, the thread stops before its next
    segment (`stop`) and its outcome is dropped. If the thread fails (other than running out of
    memory, which publish answers by writing the segments after the tables), the block can stop
    before its next table (`raise_if_failed`).
    """

    def __init__(
        self,
        conn: duckdb.DuckDBPyConnection,
        warehouse: Path,
        changed: dict[str, str | None] | None,
        previous: dict | None,
    ) -> None:
        self._conn = conn
        self._kept = conn.execute("select current_setting('preserve_insertion_order')").fetchall()
        conn.execute("set preserve_insertion_order = true")
        cursor = conn.cursor()
        cursor.execute("set TimeZone = 'UTC'")
        self._cursor: duckdb.DuckDBPyConnection | None = cursor
        self._cursor_lock = threading.Lock()  # `stop` never interrupts a cursor being closed
        self._stop = threading.Event()
        self.seconds = 0.0
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="segments")
        self._future = self._pool.submit(self._write, cursor, warehouse, changed, previous)
        self._pool.shutdown(wait=False)  # the thread ends when its one task does

    def _write(
        self,
        cursor: duckdb.DuckDBPyConnection,
        warehouse: Path,
        changed: dict[str, str | None] | None,
        previous: dict | None,
    ) -> tuple[dict, int, int]:
        """The thread's work: `write_segments` through `cursor`, timed."""
        started = time.monotonic()
        try:
            return write_segments(cursor, warehouse, changed, previous, self._check)
        finally:
            self.seconds = time.monotonic() - started
            with self._cursor_lock:
                cursor.close()
                self._cursor = None

    def _check(self) -> None:
        """Raise Cancelled when the block failed."""
        if self._stop.is_set():
            raise Cancelled("the tables' publish failed")

    def __enter__(self) -> Alongside:
        return self

    def stop(self) -> None:
        """Have the thread stop before its next segment, and interrupt the query it runs on
        its cursor or on a cursor of it (a table read)."""
        self._stop.set()
        with self._cursor_lock:
            if self._cursor is not None:  # None: the thread is done
                interrupt(self._cursor)

    def __exit__(self, kind: type[BaseException] | None, *exc: object) -> None:
        try:
            if kind is not None:  # stop the thread, and again while it runs: a stop that
                self.stop()  # comes between two of its queries interrupts neither
                while wait([self._future], STOP_EVERY).not_done:
                    self.stop()
            wait([self._future])
        except BaseException:  # a stop signal while waiting: the thread stops too
            self.stop()
            raise
        finally:
            if self._future.done():
                self._conn.execute(f"set preserve_insertion_order = {bool(self._kept[0][0])}")

    def raise_if_failed(self) -> None:
        """Raise the thread's error as soon as it has failed, so that the block stops early;
        running out of memory is left for the caller to handle after the block."""
        if not self._future.done():
            return
        error = self._future.exception()
        if error is not None and not isinstance(error, AFTER_TABLES):
            raise error

    def result(self) -> tuple[dict, int, int]:
        """What `write_segments` returned (after the block), or its error."""
        return self._future.result()


# -- mapping -------------------------------------------------------------------------------

# Parts mapped by this process, by file: a new snapshot takes the ones it shares with the
# previous one from here, mapping only its new segments. Entries go when no snapshot holds them.
_MAPPED: weakref.WeakValueDictionary[str, Any] = weakref.WeakValueDictionary()
_MAPPED_LOCK = threading.Lock()


def map_segment(path: Path, part: str) -> Any:
    """A part from its segment file, memory-mapped (or the one this process mapped already)."""
    key = str(path)
    with _MAPPED_LOCK:
        found = _MAPPED.get(key)
        if found is not None:
            return found
        obj = read_segment(path, part)
        _MAPPED[key] = obj
        return obj


# Segment files this process has asked the kernel to read ahead (content-addressed: a path
# names its bytes, so a file is read ahead once, however many snapshots list it).
_PREFETCHED: set[str] = set()


def prefetch(path: Path) -> None:
    """Ask the kernel to read a segment file into the page cache, without waiting for it, so
    that the first requests touching its pages do not wait on the disk."""
    key = str(path)
    if key in _PREFETCHED or not hasattr(os, "posix_fadvise"):
        return
    try:
        fd = os.open(key, os.O_RDONLY)
    except OSError:  # removed with an old snapshot: nothing to read ahead
        return
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
    finally:
        os.close(fd)
    _PREFETCHED.add(key)


def mapped_count() -> int:
    """How many segments this process has mapped now (for tests and benchmarks)."""
    return len(_MAPPED)


class Index:
    """The serving index of one snapshot: its segments, each mapped on first use.

    A snapshot published without segments (before they existed) is indexed in memory from its
    tables instead, one channel bucket at a time, as the build would write it.
    """

    def __init__(
        self,
        warehouse: Path,
        manifest: dict,
        conn: Callable[[], duckdb.DuckDBPyConnection],
    ) -> None:
        self._warehouse = warehouse
        self._segments: dict[str, dict] | None = manifest.get("segments")
        self._buckets = int(manifest.get("segment_buckets", BUCKETS))
        self._conn = conn
        self._parts: dict[str, Any] = {}
        self._lock = threading.Lock()

    def part(self, name: str, channel: int | None = None) -> Any:
        """A part of the index: dims or report_stats, or a channel part (reports, selections,
        images, reads, deliveries) for the bucket of `channel`."""
        key = segment_name(name, None if channel is None else channel % self._buckets)
        found = self._parts.get(key)
        if found is not None:
            return found
        with self._lock:
            if key not in self._parts:
                self._parts[key] = self._load(name, key)
            return self._parts[key]

    def _load(self, part: str, key: str) -> Any:
        """Map a segment, or (no segments listed) build it from the snapshot's tables."""
        if self._segments is not None:
            return map_segment(self._warehouse / self._segments[key]["files"][0], part)
        if part in WHOLE:
            return WHOLE[part][0](self._conn())
        bucket = int(key.partition("/")[2])
        return next(build_part(self._conn(), part, [bucket], self._buckets))[1]

    def prefetch(self) -> None:
        """Have the kernel read ahead every segment file this process has not read ahead yet
        (for a switch: the new snapshot's changed segments)."""
        for entry in (self._segments or {}).values():
            prefetch(self._warehouse / entry["files"][0])

    def warm(self) -> None:
        """Map every segment now (build every part, for a snapshot without segments)."""
        if self._segments is not None:
            for key in self._segments:
                part, _, bucket = key.partition("/")
                self.part(part, int(bucket) if bucket else None)
            return
        for part in WHOLE:
            self.part(part)
        for part in BUILDERS:
            every = list(range(self._buckets))
            for number, obj in build_part(self._conn(), part, every, self._buckets):
                with self._lock:
                    self._parts.setdefault(segment_name(part, number), obj)
