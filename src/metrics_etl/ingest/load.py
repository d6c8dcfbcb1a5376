"""Load raw files: plan what is new or changed, validate and load each file in its own
transaction (records, rejects with file, line and reason, per-file counts), and track the keys
each file adds or removes for the incremental transform."""

from __future__ import annotations

import os
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, replace

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from metrics_etl import state
from metrics_etl.contract import STREAMS, Stream
from metrics_etl.ingest.blocks import (
    BATCH_ROWS,
    CorruptFile,
    jsonl_blocks,
    lines_table,
    prefetched,
)
from metrics_etl.ingest.discover import (
    FD_DIR,
    Discovery,
    Opened,
    RawFile,
    Unreadable,
    check_unchanged,
    hashed,
)
from metrics_etl.ingest.validate import (
    NESTED_KEYS,
    fast_sql,
    parquet_fast_sql,
    quote_ident,
    sql_str,
    validated_sql,
)
from metrics_etl.settings import crash_point


@dataclass
class LoadStats:
    """Per-stream counts for one run."""

    files: int = 0
    lines: int = 0
    accepted: int = 0
    rejected: int = 0


def _loaded(conn: duckdb.DuckDBPyConnection) -> dict[str, tuple[int, int, str]]:
    """Every loaded file's size, mtime and hash, by name."""
    rows = conn.execute("select file, size, mtime_ns, sha256 from manifest").fetchall()
    return {row[0]: row[1:] for row in rows}


def _to_load(
    loaded: dict[str, tuple[int, int, str]], files: list[RawFile]
) -> list[tuple[RawFile, str | None]]:
    """Files that are new, or whose size or mtime changed, each with the hash it was loaded with."""
    todo: list[tuple[RawFile, str | None]] = []
    for raw_file in files:
        seen = loaded.get(raw_file.rel)
        if not seen:
            todo.append((raw_file, None))
        elif (seen[0], seen[1]) != (raw_file.size, raw_file.mtime_ns):
            todo.append((raw_file, seen[2]))
    return todo


def plan(conn: duckdb.DuckDBPyConnection, found: Discovery) -> list[tuple[RawFile, str | None]]:
    """Files that are new, or whose size or mtime changed, each with the hash it was loaded with.

    A file the manifest does not know is new: its hash is None. A file whose size and mtime are
    those it was loaded with is not read again. Files loaded earlier that are no longer in the
    folder keep their records (the result is that of a rebuild from all files loaded so far):
    they are listed in `found.skipped` so the run summary says so.
    """
    loaded = _loaded(conn)
    todo = _to_load(loaded, found.files)
    gone = sorted(set(loaded) - {f.rel for f in found.files} - {rel for rel, _ in found.skipped})
    if gone:
        name = gone[0] if len(gone) == 1 else f"{gone[0]} and {len(gone) - 1} more loaded earlier"
        found.skipped.append((name, GONE))
    return todo


def still_to_load(
    conn: duckdb.DuckDBPyConnection, todo: list[tuple[RawFile, str | None]]
) -> list[tuple[RawFile, str | None]]:
    """The planned files not loaded yet (a retried load skips those an earlier attempt did)."""
    return _to_load(_loaded(conn), [raw_file for raw_file, _ in todo])


GONE = (
    "no longer in the raw folder: the records loaded from it are kept, as the raw contract "
    "asks; run with --full-refresh to rebuild from the files there now"
)


def _load_lines(
    conn: duckdb.DuckDBPyConnection,
    stream: Stream,
    rel: str,
    fast: str,
    lines: pa.Table | str,
    run_id: str,
    track: bool,
) -> tuple[int, int]:
    """Load the records of one block of a file into raw and rejects. Returns (accepted, rejected).

    `fast` is the fast pass over the block (line, ok, typed fields): it types and loads the lines
    it can vouch for with one parse each. Only the others, usually a handful, go through the
    detailed validation, which finds their reason (or accepts them): they are taken from `lines`
    (line, text, bad_utf8, blank), an Arrow table of the block's lines numbered from its first
    row, or SQL of a relation holding just them.
    """
    accepted, others = _load_fast(conn, stream, rel, fast, track)
    if not others:
        return accepted, 0
    if isinstance(lines, pa.Table):
        numbers = conn.execute("select line from fast where not ok").fetchnumpy()["line"]
        first = lines["line"][0].as_py()
        conn.register("failing_lines", lines.take(pa.array(numbers - first)))
        try:
            more, rejected = _load_failing(conn, stream, rel, "failing_lines", run_id, track)
        finally:
            conn.unregister("failing_lines")
    else:
        more, rejected = _load_failing(conn, stream, rel, lines, run_id, track)
    return accepted + more, rejected


def _load_fast(
    conn: duckdb.DuckDBPyConnection, stream: Stream, rel: str, fast: str | None, track: bool
) -> tuple[int, int]:
    """Run the fast pass into temp table `fast` (unless None: it is there) and load the lines it
    vouches for; (ok, others)."""
    names = ", ".join(f.name for f in stream.fields)
    if fast is not None:
        conn.execute(f"create or replace temp table fast as {fast}")
    conn.execute(f"insert into raw_{stream.name} select {names}, ?, line from fast where ok", [rel])
    if track:
        _mark_dirty(conn, stream, "fast", "ok", [])
    accepted, others = conn.execute(
        "select count(*) filter (where ok), count(*) filter (where not ok) from fast"
    ).fetchall()[0]
    return int(accepted), int(others)


def _load_failing(
    conn: duckdb.DuckDBPyConnection,
    stream: Stream,
    rel: str,
    failing: str,
    run_id: str,
    track: bool,
) -> tuple[int, int]:
    """Validate in detail the lines the fast pass left, `failing(line, text, bad_utf8, blank)`:
    load the good ones and reject the others with their reason; (accepted, rejected)."""
    names = ", ".join(f.name for f in stream.fields)
    source = f"(select {sql_str(rel)} as file, line, text, bad_utf8, blank from {failing})"
    conn.execute(f"create or replace temp table validated as {validated_sql(stream, source)}")
    conn.execute(
        f"insert into raw_{stream.name} select {names}, file, line from validated "
        f"where reason is null"
    )
    if track:
        _mark_dirty(conn, stream, "validated", "reason is null", [])
    conn.execute(
        "insert into rejects select ?, file, line, text, reason, ? from validated "
        "where reason is not null",
        [stream.name, run_id],
    )
    more, rejected = conn.execute(
        "select count(*) filter (where reason is null), "
        "count(*) filter (where reason is not null) from validated"
    ).fetchall()[0]
    return int(more), int(rejected)


class NotVouched(Exception):
    """The parallel scan cannot read a JSONL file exactly as its lines: read it block by block."""


def _line_scan(raw_file: RawFile, fd: int) -> str:
    """SQL: DuckDB's parallel scan of an open JSONL file as (text), one row per line in order.

    The file is read through its descriptor's name, so its own name is never a glob, and its
    format is the one discovery found, whatever its name. Each line is one VARCHAR (no
    delimiter, quote or escape; an empty line is null). The scan fails, rather than reading
    otherwise than the block reader would, on a carriage return (DuckDB ends a line there too),
    on bytes that are not UTF-8, on a line longer than SCAN_LINE_BYTES and on a line holding its
    delimiter (a control character). It drops a leading byte order mark, and reads a truncated
    gzip stream as far as it goes: the caller checks that its lines hold every byte of the file.
    """
    compression = "gzip" if raw_file.format == "jsonl.gz" else "none"
    return (
        f"read_csv({sql_str(f'{FD_DIR}/{fd}')}, columns = {{'text': 'VARCHAR'}}, "
        f"delim = {sql_str(chr(1))}, quote = '', escape = '', header = false, "
        f"auto_detect = false, new_line = '\\n', compression = {sql_str(compression)}, "
        f"max_line_size = {SCAN_LINE_BYTES}, buffer_size = {SCAN_BUFFER_BYTES})"
    )


# The scan's longest line (a longer one makes it fail: the block reader takes the file) and its
# buffer (DuckDB's defaults; the tests make buffers small to number lines across many).
SCAN_LINE_BYTES = 2_097_152
SCAN_BUFFER_BYTES = 16 * SCAN_LINE_BYTES


def _numbered_lines(conn: duckdb.DuckDBPyConnection, raw_file: RawFile, fd: int) -> str:
    """Read a JSONL file's lines into temp table `scanned`; SQL of them as (line, text).

    The scan fills the table in file order (an order-preserving parallel insert) and the lines
    are numbered by their row ids, not by row_number() over the scan: that window runs on one
    thread, and so would the fast pass after it. Row ids that skip raise NotVouched.
    """
    conn.execute(
        "create or replace temp table scanned as select text from " + _line_scan(raw_file, fd)
    )
    first, last, count = conn.execute(
        "select min(rowid), max(rowid), count(*) from scanned"
    ).fetchall()[0]
    if count and last - first + 1 != count:
        raise NotVouched(f"the scan's {count} lines are not numbered in a row")
    return f"(select rowid - {int(first or 0)} + 1 as line, text from scanned)"


def _fast_into_table(conn: duckdb.DuckDBPyConnection, raw_file: RawFile, lines: str) -> None:
    """The fast pass over `lines` (line, text) into temp table `fast`, with each line's bytes and
    the text of the lines it does not vouch for."""
    source = f"(select line, text, false as bad_utf8, false as blank from {lines})"
    keep = (
        "coalesce(strlen(text), 0) + 1 as _bytes",
        "case when not ok then coalesce(text, '') end as _text",
    )
    conn.execute(
        f"create or replace temp table fast as {fast_sql(STREAMS[raw_file.stream], source, keep)}"
    )


def scan_ahead(conn: duckdb.DuckDBPyConnection, raw_file: RawFile, opened: Opened) -> str | None:
    """Parse and check a JSONL file's lines into temp table `fast` before its transaction (the
    fast pass, in DuckDB's parallel scan); the reason the scan cannot read it exactly, or None.

    `opened.content` is the file's size in bytes (decompressed) and whether it ends with a
    newline, as the hashing thread checked it (None: a gzip stream that does not inflate whole);
    the bytes of the scan's lines must add up to it. Outside the file's transaction because
    DuckDB reads rows a transaction added on one thread: the fast pass and the insert of its
    rows would not run in parallel (temp tables hold nothing the transaction must undo).
    """
    conn.execute("drop table if exists fast")
    if opened.content is None:
        return "a gzip stream that does not inflate whole"
    if not conn.execute("select current_setting('preserve_insertion_order')").fetchall()[0][0]:
        return "the scan keeps the file's order of lines only with preserve_insertion_order"
    size, newline_ended = opened.content
    try:
        try:
            source = _numbered_lines(conn, raw_file, opened.fd)
            _fast_into_table(conn, raw_file, source)
        except duckdb.OutOfMemoryException:
            # the lines and the fast pass did not fit in memory and the temp directory at once:
            # number the lines as the scan streams them (one thread, but no copy of their text)
            conn.execute("drop table if exists scanned; drop table if exists fast")
            scan = _line_scan(raw_file, opened.fd)
            _fast_into_table(
                conn, raw_file, f"(select row_number() over () as line, text from {scan})"
            )
    except (
        duckdb.InvalidInputException,
        duckdb.IOException,
        # a line longer than the scan's buffer ("does not support a full read on this file")
        duckdb.NotImplementedException,
    ) as error:
        # a line or byte the scan does not read as the block reader does, a broken stream
        return str(error).splitlines()[0]
    except NotVouched as error:
        return str(error)
    finally:
        conn.execute("drop table if exists scanned")
    # every byte of the file is in a line (each line ends with a newline, but perhaps the
    # last): nothing was left out or cut short
    total = conn.execute("select coalesce(sum(_bytes), 0) from fast").fetchall()[0][0]
    if total - (0 if newline_ended else 1) != size:
        return f"the scan read {total} bytes of {size}"
    return None


def _load_scanned(
    conn: duckdb.DuckDBPyConnection,
    stream: Stream,
    raw_file: RawFile,
    refused: str | None,
    run_id: str,
    track: bool,
) -> tuple[int, int, int]:
    """Load a JSONL file's lines that `scan_ahead` parsed and checked into `fast`; (accepted,
    rejected, blank). Raises NotVouched when the scan could not read the file exactly
    (`refused` says why).

    The fast pass vouches for most lines. The others (blank lines, bad records, the odd escaped
    string) keep their text, made into the same Arrow lines as the block reader's (so blank and
    UTF-8 are decided alike), and validated in detail.
    """
    if refused is not None:
        raise NotVouched(refused)
    accepted, others = _load_fast(conn, stream, raw_file.rel, None, track)
    if not others:
        return accepted, 0, 0
    rows = conn.execute(
        "select line, encode(_text) from fast where not ok order by line"
    ).fetchall()
    table = lines_table(1, b"".join(bytes(text) + b"\n" for _, text in rows))
    table = table.set_column(0, "line", pa.array([line for line, _ in rows], pa.int64()))
    blank = pc.sum(table["blank"]).as_py() or 0
    if blank == table.num_rows:  # only blank lines: nothing to validate
        return accepted, 0, blank
    conn.register("failing_lines", table)
    try:
        more, rejected = _load_failing(conn, stream, raw_file.rel, "failing_lines", run_id, track)
    finally:
        conn.unregister("failing_lines")
    return accepted + more, rejected, blank


@dataclass(frozen=True)
class _Column:
    """A top-level column of a Parquet file: its name there, DuckDB's name for it, its type.

    `holds` names what it holds when that is never a contract value (bytes, a duration, or a
    list or struct with such a contract key), which DuckDB alone would read as a string or an
    integer. Such a value (but a null, or an empty list) is an object saying so: a bad record.
    """

    name: str
    ident: str
    type: str
    holds: str | None = None

    def value(self) -> str:
        """SQL of its value: as read, or an object saying what it holds (`{"bytes": "x"}`)."""
        ref = quote_ident(self.ident)
        if self.holds is None:
            return ref
        said = f"json_object({sql_str(self.holds)}, {ref}::varchar)"
        if self.type.endswith("[]"):
            return f"case when len({ref}) > 0 then {said} else to_json({ref}) end"
        return f"case when {ref} is not null then {said} end"


def _opaque(kind: pa.DataType) -> str | None:
    """What an Arrow value holds when it is never a contract value (bytes, a duration)."""
    if pa.types.is_dictionary(kind):
        kind = kind.value_type
    if pa.types.is_binary(kind) or pa.types.is_large_binary(kind):
        return "bytes"
    if pa.types.is_fixed_size_binary(kind):
        return "bytes"
    if pa.types.is_duration(kind):
        return "duration"
    return None


def _holds(stream: Stream, column: pa.Field) -> str | None:
    """What a contract column holds when it is never a contract value, else None."""
    field = next((f for f in stream.fields if f.name == column.name), None)
    if field is None or field.type not in NESTED_KEYS:
        return _opaque(column.type)
    kind = column.type
    if pa.types.is_list(kind) or pa.types.is_large_list(kind):
        kind = kind.value_type
    if not pa.types.is_struct(kind):
        return None
    keys = (kind.field(i) for i in range(kind.num_fields))
    return next(
        (h for k in keys if k.name in NESTED_KEYS[field.type] and (h := _opaque(k.type))), None
    )


def _file_schema(fd_path: str) -> pa.Schema:
    """The Arrow schema of a Parquet file, its columns named as written (DuckDB renames repeats)."""
    return pq.read_schema(fd_path)


def _refuse_repeated(stream: Stream, names: list[str]) -> None:
    """A contract column written twice makes every row ambiguous: the file is unreadable."""
    counts = Counter(names)
    for f in stream.fields:
        if counts[f.name] > 1:
            raise CorruptFile(
                f"column {f.name} appears {counts[f.name]} times, so no row has one value for "
                f"it; write each column once"
            )


def _retyped(
    conn: duckdb.DuckDBPyConnection, relation: str, columns: list[_Column]
) -> list[_Column]:
    """The columns with their types in a relation holding them (then any of ours)."""
    described = conn.execute(f"describe select * from {relation}").fetchall()
    return [replace(c, type=row[1]) for c, row in zip(columns, described, strict=False)]


def _json_text(columns: list[_Column]) -> str:
    """SQL of a row as the JSON object of its columns, under their names in the file."""
    pairs = ", ".join(f"{sql_str(c.name)}, {c.value()}" for c in columns)
    return f"json_object({pairs})::varchar"


def _unused(base: str, idents: list[str]) -> str:
    """A column name like `base` that none of `idents` takes (DuckDB ignores case)."""
    taken = {i.lower() for i in idents}
    return next(n for k in range(len(idents) + 1) if (n := base + "_" * k) not in taken)


def _load_scan(
    conn: duckdb.DuckDBPyConnection,
    stream: Stream,
    rel: str,
    relation: str,
    columns: list[_Column],
    row: str,
    run_id: str,
    track: bool,
) -> tuple[int, int]:
    """Load the rows of a relation holding a Parquet file's columns and `row`, numbered from 0.

    Each contract field is read from the column the file names exactly so (DuckDB's own names
    ignore case, and rename a repeated column), and a row the fast pass leaves is read as the
    JSON object of its columns under their names in the file.
    """
    by_name = {c.name: c for c in columns}
    used = [
        f"{by_name[f.name].value()} as {quote_ident(f.name)}"
        for f in stream.fields
        if f.name in by_name
    ]
    line = f"{quote_ident(row)} + 1"
    source = f"(select {', '.join([f'{line} as line', *used])} from {relation})"
    failing = (
        f"(select {line} as line, {_json_text(columns)} as text, "
        f"false as bad_utf8, false as blank from {relation} "
        f"where {line} in (select line from fast where not ok))"
    )
    types = {
        f.name: "JSON" if by_name[f.name].holds else by_name[f.name].type
        for f in stream.fields
        if f.name in by_name
    }
    fast = parquet_fast_sql(stream, source, types)
    return _load_lines(conn, stream, rel, fast, failing, run_id, track)


# Timestamp units DuckDB does not keep: (microseconds per unit, units per microsecond).
_TS_UNITS: dict[str, tuple[int, int]] = {"s": (1_000_000, 1), "ms": (1_000, 1), "ns": (1, 1_000)}
_UNIT_WORDS = {"s": "seconds", "ms": "milliseconds"}
_INT64_MAX = 2**63 - 1


def _odd_timestamps(stream: Stream, schema: pa.Schema) -> bool:
    """True when a contract column of a Parquet file is a timestamp in s, ms or ns."""
    names = {f.name for f in stream.fields}
    return any(
        f.name in names and pa.types.is_timestamp(f.type) and f.type.unit in _TS_UNITS
        for f in schema
    )


def _in_microseconds(column: pa.Array, name: str, reasons: list[str | None]) -> pa.Array:
    """A timestamp column in microseconds; a value beyond them gets a reason in `reasons`.

    Nanoseconds are truncated towards the past (as the digits of a JSON timestamp are).
    """
    per_us, units_per_us = _TS_UNITS[column.type.unit]
    valid = column.is_valid().to_numpy(zero_copy_only=False)
    counts = column.cast(pa.int64()).fill_null(0).to_numpy(zero_copy_only=False)
    if units_per_us > 1:
        micros = np.floor_divide(counts, units_per_us)
        beyond = np.zeros(len(counts), dtype=np.bool_)
    else:
        limit = _INT64_MAX // per_us
        beyond = valid & ((counts > limit) | (counts < -limit))
        micros = np.where(beyond, 0, counts) * per_us
    for i in np.flatnonzero(beyond):
        if reasons[i] is None:
            reasons[i] = (
                f"field {name}: the instant is outside years 0001-9999 in UTC: {counts[i]} "
                f"{_UNIT_WORDS[column.type.unit]} since 1970-01-01"
            )
    micros = pa.array(micros, pa.int64(), mask=~valid | beyond)
    return micros.cast(pa.timestamp("us", tz=column.type.tz))


def _parquet_batches(
    stream: Stream, fd_path: str, idents: list[str], row: str, reason: str
) -> Iterator[pa.Table]:
    """A Parquet file read by Arrow in batches, timestamps in microseconds, rows numbered.

    Columns take DuckDB's names (`idents`); `row` numbers the rows from 0; `reason` is a
    column with why a row is rejected already (a timestamp beyond what microseconds hold),
    null for the others.
    """
    names = {f.name for f in stream.fields}
    parquet_file = pq.ParquetFile(fd_path)
    try:
        first = 0
        for batch in parquet_file.iter_batches(batch_size=BATCH_ROWS):
            reasons: list[str | None] = [None] * batch.num_rows
            arrays = []
            for column_name, array in zip(batch.schema.names, batch.columns, strict=True):
                if (
                    column_name in names
                    and pa.types.is_timestamp(array.type)
                    and array.type.unit in _TS_UNITS
                ):
                    array = _in_microseconds(array, column_name, reasons)
                arrays.append(array)
            numbers = pa.array(np.arange(first, first + batch.num_rows, dtype=np.int64))
            first += batch.num_rows
            yield pa.table(
                [*arrays, numbers, pa.array(reasons, pa.string())],
                names=[*idents, row, reason],
            )
    finally:
        parquet_file.close()


def _load_batches(
    conn: duckdb.DuckDBPyConnection,
    stream: Stream,
    raw_file: RawFile,
    fd_path: str,
    columns: list[_Column],
    run_id: str,
    track: bool,
) -> tuple[int, int]:
    """Load a Parquet file through Arrow, a row whose timestamp DuckDB cannot hold rejected."""
    idents = [c.ident for c in columns]
    row = _unused("file_row_number", idents)
    reason = _unused("_reason", [*idents, row])
    accepted = rejected = 0
    for batch in _parquet_batches(stream, fd_path, idents, row, reason):
        conn.register("parquet_batch", batch)
        kept = f"(select * from parquet_batch where {quote_ident(reason)} is null)"
        typed = _retyped(conn, "parquet_batch", columns)
        counts = _load_scan(conn, stream, raw_file.rel, kept, typed, row, run_id, track)
        conn.execute(
            f"insert into rejects select ?, ?, {quote_ident(row)} + 1, {_json_text(typed)}, "
            f"{quote_ident(reason)}, ? from parquet_batch where {quote_ident(reason)} is not null",
            [stream.name, raw_file.rel, run_id],
        )
        beyond = batch.num_rows - batch[reason].null_count
        conn.unregister("parquet_batch")
        accepted += counts[0]
        rejected += counts[1] + beyond
    return accepted, rejected


def _load_parquet(
    conn: duckdb.DuckDBPyConnection,
    stream: Stream,
    raw_file: RawFile,
    fd: int,
    run_id: str,
    track: bool,
) -> tuple[int, int]:
    """Load an open Parquet file: typed columns checked as they are, each row numbered from 1.

    DuckDB reads it through the name of its open descriptor: the file's own name could be taken
    as a glob pattern (`part-*.parquet`, `[ab].parquet`), and the descriptor is the file checked.
    A file whose contract timestamps are in seconds, milliseconds or nanoseconds is read through
    Arrow instead: DuckDB keeps microseconds, and fails on a whole file with one value beyond
    them. So is a file with a column named file_row_number, which DuckDB would not number.
    """
    fd_path = f"{FD_DIR}/{fd}"
    try:
        plain = f"read_parquet({sql_str(fd_path)})"
        described = conn.execute(f"describe select * from {plain}").fetchall()
        schema = _file_schema(fd_path)
        _refuse_repeated(stream, schema.names)
        columns = [
            _Column(f.name, row[0], row[1], _holds(stream, f))
            for f, row in zip(schema, described, strict=False)
        ]
        row = "file_row_number"
        if _odd_timestamps(stream, schema) or _unused(row, [c.ident for c in columns]) != row:
            return _load_batches(conn, stream, raw_file, fd_path, columns, run_id, track)
        scan = f"read_parquet({sql_str(fd_path)}, file_row_number = true)"
        return _load_scan(conn, stream, raw_file.rel, scan, columns, row, run_id, track)
    except (
        duckdb.IOException,
        duckdb.InvalidInputException,
        # a value or type DuckDB cannot read (no known case left): the file, not the run, fails
        duckdb.ConversionException,
        duckdb.NotImplementedException,
    ) as error:
        # DuckDB names the descriptor it read: the reason names the file
        raise CorruptFile(str(error).splitlines()[0].replace(fd_path, raw_file.rel)) from error
    except pa.ArrowException as error:
        raise CorruptFile(str(error).splitlines()[0].replace(fd_path, raw_file.rel)) from error


def load_file(
    conn: duckdb.DuckDBPyConnection,
    raw_file: RawFile,
    opened: Opened,
    run_id: str,
    chunk_bytes: int,
    new: bool = False,
    track: bool = True,
    scan: bool = True,
    refused: str | None = None,
) -> tuple[int, int]:
    """Load one new or changed open file, replacing its earlier records; (accepted, rejected).

    A `new` file (one the manifest does not know) has no earlier records to replace: records,
    rejects and counts are only written in the transaction that adds their file to the manifest.
    `track` records the keys added and removed for the incremental transform. A JSONL file is
    read from the lines `scan_ahead` read (`scan`; `refused` says why it could not), which
    raises NotVouched (the transaction is then spoilt: roll back) for a file the scan cannot
    read exactly; else block by block, as Arrow lines.
    """
    stream = STREAMS[raw_file.stream]
    if not new:
        _forget(conn, raw_file, track)
    accepted = rejected = blank = 0
    if raw_file.format == "parquet":
        accepted, rejected = _load_parquet(conn, stream, raw_file, opened.fd, run_id, track)
    elif scan:
        accepted, rejected, blank = _load_scanned(conn, stream, raw_file, refused, run_id, track)
    else:
        for block in prefetched(jsonl_blocks(raw_file, opened.fd, chunk_bytes)):
            conn.register("block", block)
            counts = _load_lines(
                conn, stream, raw_file.rel, fast_sql(stream, "block"), block, run_id, track
            )
            conn.unregister("block")
            accepted += counts[0]
            rejected += counts[1]
            blank += pc.sum(block["blank"]).as_py() or 0
    conn.execute("drop table if exists fast; drop table if exists validated")
    _remember(conn, raw_file, opened.digest, run_id, (accepted, rejected, blank))
    return accepted, rejected


# The key a stream's records may also change through (an open changes its delivery).
REFS: dict[str, str] = {"alert_opens": "delivery_id"}


def _mark_dirty(
    conn: duckdb.DuckDBPyConnection, stream: Stream, relation: str, where: str, params: list
) -> None:
    """Remember the keys (and refs) of records added or removed, for the incremental transform."""
    ref = REFS.get(stream.name, "null")
    conn.execute(
        f"insert into dirty_keys select ?, {stream.key}, {ref} from {relation} where {where}",
        [stream.name, *params],
    )


def _forget(conn: duckdb.DuckDBPyConnection, raw_file: RawFile, track: bool) -> None:
    """Remove every record, reject and count of a file's earlier content."""
    if track:
        _mark_dirty(
            conn, STREAMS[raw_file.stream], f"raw_{raw_file.stream}", "_file = ?", [raw_file.rel]
        )
    conn.execute(f"delete from raw_{raw_file.stream} where _file = ?", [raw_file.rel])
    conn.execute("delete from rejects where file = ?", [raw_file.rel])
    conn.execute("delete from file_stats where file = ?", [raw_file.rel])


def _remember(
    conn: duckdb.DuckDBPyConnection,
    raw_file: RawFile,
    digest: str,
    run_id: str,
    counts: tuple[int, int, int],
) -> None:
    """Record a loaded file's counts and its place in the manifest."""
    accepted, rejected, blank = counts
    conn.execute(
        "insert into file_stats values (?, ?, ?, ?, ?, ?, ?)",
        [raw_file.rel, raw_file.stream, accepted + rejected, blank, accepted, rejected, run_id],
    )
    conn.execute(
        "insert or replace into manifest values (?, ?, ?, ?, ?, ?, ?)",
        [
            raw_file.rel,
            raw_file.stream,
            raw_file.format,
            raw_file.size,
            raw_file.mtime_ns,
            digest,
            run_id,
        ],
    )


def record_corrupt(
    conn: duckdb.DuckDBPyConnection,
    raw_file: RawFile,
    digest: str,
    run_id: str,
    error: str,
    new: bool = False,
    track: bool = True,
) -> tuple[int, int]:
    """A file that cannot be decoded loads nothing and counts as one reject at line 0."""
    if not new:
        _forget(conn, raw_file, track)
    reason = f"unreadable file ({error}); replace it with a complete {raw_file.format} file"
    conn.execute(
        "insert into rejects values (?, ?, 0, '', ?, ?)",
        [raw_file.stream, raw_file.rel, reason, run_id],
    )
    _remember(conn, raw_file, digest, run_id, (0, 1, 0))
    return 0, 1


def ingest(
    conn: duckdb.DuckDBPyConnection,
    found: Discovery,
    run_id: str,
    chunk_bytes: int,
    track: bool = True,
) -> dict[str, LoadStats]:
    """Load every new or changed file; return per-stream counts for this run. `track` records
    changed keys for the incremental transform (useless when the transform rebuilds in full).

    A file that cannot be read now (it vanished, is no longer a regular file, a read failed, it
    changed while read) is added to `found.skipped` and left out of the manifest: a later run
    tries it again.
    """
    return load(conn, plan(conn, found), found.skipped, run_id, chunk_bytes, track)


def loaded_by(conn: duckdb.DuckDBPyConnection, run_id: str, stream: str) -> LoadStats:
    """The files and lines of a stream that a run loaded."""
    row = conn.execute(
        "select count(*), sum(lines_read), sum(accepted), sum(rejected) from file_stats "
        "where run_id = ? and stream = ?",
        [run_id, stream],
    ).fetchall()[0]
    return LoadStats(*(int(value or 0) for value in row))


def by_stream(
    todo: list[tuple[RawFile, str | None]],
) -> dict[str, list[tuple[RawFile, str | None]]]:
    """Planned files grouped by stream, in stream order, each group in the plan's order."""
    groups: dict[str, list[tuple[RawFile, str | None]]] = {}
    for item in sorted(todo, key=lambda item: item[0].stream):
        groups.setdefault(item[0].stream, []).append(item)
    return groups


def hash_ahead(raw_file: RawFile) -> Future[Opened]:
    """`hashed(raw_file)` on a daemon thread of its own (hashlib releases the GIL): a load that
    a signal stops does not keep the process from exiting while the thread finishes."""
    future: Future[Opened] = Future()

    def work() -> None:
        """Open and hash the file, unless the future was cancelled first."""
        if not future.set_running_or_notify_cancel():
            return
        try:
            future.set_result(hashed(raw_file))
        except BaseException as error:  # handed to the caller, as an executor does
            future.set_exception(error)

    threading.Thread(target=work, name="ingest-hash", daemon=True).start()
    return future


def close_when_hashed(future: Future[Opened]) -> None:
    """Cancel a look-ahead hash, or close the descriptor it opens once done, without waiting."""

    def close(done: Future[Opened]) -> None:
        """Close the opened file's descriptor, if the hash opened one."""
        if not done.cancelled() and done.exception() is None:
            os.close(done.result().fd)

    if not future.cancel():
        future.add_done_callback(close)


def load(
    conn: duckdb.DuckDBPyConnection,
    todo: list[tuple[RawFile, str | None]],
    skipped: list[tuple[str, str]],
    run_id: str,
    chunk_bytes: int,
    track: bool = True,
    on_file: Callable[[RawFile], None] | None = None,
) -> dict[str, LoadStats]:
    """Load planned files (see `plan`), each in its own transaction; per-stream counts.

    Files that cannot be read now are added to `skipped` with the reason; `on_file` is told of
    each file once it is done with.
    """
    stats: dict[str, LoadStats] = {}
    # the parallel line scan numbers lines in file order only with insertion order kept
    conn.execute("set preserve_insertion_order = true")
    # the next file is opened and hashed by a helper thread while one loads: at most two files
    # are open at a time
    ahead = hash_ahead(todo[0][0]) if todo else None
    current: Future[Opened] | None = None
    try:
        for index, (raw_file, loaded_digest) in enumerate(todo):
            current, ahead = ahead, None
            if index + 1 < len(todo):
                ahead = hash_ahead(todo[index + 1][0])
            try:
                opened = current.result() if current else hashed(raw_file)
            except Unreadable as error:
                current = None
                skipped.append((raw_file.rel, str(error)))
                if on_file:
                    on_file(raw_file)
                continue
            current = None  # its descriptor is closed below
            try:
                _load_or_touch(
                    conn, raw_file, opened, loaded_digest, run_id, chunk_bytes, stats, track
                )
            except Unreadable as error:
                skipped.append((raw_file.rel, str(error)))
            finally:
                os.close(opened.fd)
                if on_file:
                    on_file(raw_file)
    finally:
        for future in (current, ahead):  # left by a load cut short
            if future is not None:
                close_when_hashed(future)
        conn.execute("set preserve_insertion_order = false")
    return stats


def _load_or_touch(
    conn: duckdb.DuckDBPyConnection,
    raw_file: RawFile,
    opened: Opened,
    loaded_digest: str | None,
    run_id: str,
    chunk_bytes: int,
    stats: dict[str, LoadStats],
    track: bool,
) -> None:
    """Load an opened file, or only note its new size and mtime when its content is unchanged."""
    if opened.digest == loaded_digest:
        conn.execute(
            "update manifest set size = ?, mtime_ns = ? where file = ?",
            [opened.size, opened.mtime_ns, raw_file.rel],
        )
        return
    # the manifest remembers the size and mtime of the bytes read, not those seen by discovery
    as_opened = replace(raw_file, size=opened.size, mtime_ns=opened.mtime_ns)
    new = loaded_digest is None  # the manifest does not know it
    _load_one(conn, as_opened, opened, run_id, chunk_bytes, stats, new, track)


def _load_one(
    conn: duckdb.DuckDBPyConnection,
    raw_file: RawFile,
    opened: Opened,
    run_id: str,
    chunk_bytes: int,
    stats: dict[str, LoadStats],
    new: bool,
    track: bool,
) -> None:
    """Load one file in its own transaction and add its counts to `stats`.

    Bytes that cannot be decoded are recorded as a corrupt file; a file that could not be read,
    or changed while it was read, raises Unreadable with nothing recorded.
    """
    refused = scan_ahead(conn, raw_file, opened) if raw_file.format != "parquet" else None
    conn.execute("begin transaction")
    try:
        try:
            try:
                accepted, rejected = load_file(
                    conn, raw_file, opened, run_id, chunk_bytes, new, track, refused=refused
                )
            except NotVouched:
                conn.execute("rollback")
                conn.execute("begin transaction")
                accepted, rejected = load_file(
                    conn, raw_file, opened, run_id, chunk_bytes, new, track, scan=False
                )
        except CorruptFile as error:
            check_unchanged(raw_file, opened)  # a file rewritten while read is not corrupt
            conn.execute("rollback")
            conn.execute("begin transaction")
            accepted, rejected = record_corrupt(
                conn, raw_file, opened.digest, run_id, str(error), new, track
            )
        check_unchanged(raw_file, opened)
    except BaseException:
        conn.execute("rollback")
        conn.execute("drop table if exists fast")
        raise
    # in the file's transaction: whatever was loaded is published by a later run
    state.set_state(conn, "dirty", "true")
    conn.execute("commit")
    crash_point("load")
    s = stats.setdefault(raw_file.stream, LoadStats())
    s.files += 1
    s.lines += accepted + rejected
    s.accepted += accepted
    s.rejected += rejected
