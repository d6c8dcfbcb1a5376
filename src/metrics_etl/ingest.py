"""Ingestion: find raw files, load new or changed ones, validate, account for every line."""

from __future__ import annotations

import gzip
import hashlib
import os
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from metrics_etl.contract import DUCKDB_TYPES, STREAMS, SUFFIXES, Stream
from metrics_etl.errors import UserError
from metrics_etl.settings import crash_point
from metrics_etl.validate import validated_sql


@dataclass(frozen=True)
class RawFile:
    """A raw file found under the raw folder."""

    path: Path
    rel: str
    stream: str
    format: str
    size: int
    mtime_ns: int


@dataclass
class Discovery:
    """What the raw folder holds: loadable files and files that were skipped."""

    files: list[RawFile] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class LoadStats:
    """Per-stream counts for one run."""

    files: int = 0
    lines: int = 0
    accepted: int = 0
    rejected: int = 0


def _format_of(name: str) -> str | None:
    """The raw format of a file name, or None when unsupported."""
    for suffix in SUFFIXES:
        if name.endswith(suffix):
            return suffix.lstrip(".")
    return None


def _ignored(rel_parts: tuple[str, ...]) -> bool:
    """Paths with a component starting with `_` or `.` are ignored by convention."""
    return any(p.startswith(("_", ".")) for p in rel_parts)


def discover(raw: Path) -> Discovery:
    """Walk the raw folder and classify every file."""
    if not raw.exists():
        raise UserError(
            f"raw folder {raw} does not exist; pass --raw DIR or run `metrics-etl generate` first"
        )
    if not raw.is_dir():
        raise UserError(
            f"raw path {raw} is not a folder; pass --raw DIR pointing at the raw folder"
        )
    found = Discovery()
    for dirpath, dirnames, filenames in os.walk(raw):
        dirnames.sort()
        for name in sorted(filenames):
            path = Path(dirpath) / name
            rel_path = path.relative_to(raw)
            rel = rel_path.as_posix()
            if _ignored(rel_path.parts):
                continue
            if len(rel_path.parts) == 1:
                found.skipped.append((rel, "not inside a stream folder"))
                continue
            stream = rel_path.parts[0]
            if stream not in STREAMS:
                found.skipped.append((rel, f"unknown stream folder '{stream}'"))
                continue
            fmt = _format_of(name)
            if fmt is None:
                found.skipped.append(
                    (rel, "unsupported extension (use .jsonl, .jsonl.gz or .parquet)")
                )
                continue
            if not os.access(path, os.R_OK):
                raise UserError(
                    f"cannot read raw file {path}: permission denied; fix its permissions or move it out of {raw}"
                )
            st = path.stat()
            found.files.append(RawFile(path, rel, stream, fmt, st.st_size, st.st_mtime_ns))
    return found


def file_sha256(path: Path) -> str:
    """Content hash of a file, read in blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def create_state_tables(conn: duckdb.DuckDBPyConnection) -> None:
    """Create the manifest, accounting, rejects and raw tables if missing."""
    conn.execute(
        """
        create table if not exists manifest (
            file varchar primary key, stream varchar, format varchar,
            size bigint, mtime_ns bigint, sha256 varchar, run_id varchar);
        create table if not exists file_stats (
            file varchar primary key, stream varchar, lines_read bigint,
            blank_lines bigint, accepted bigint, rejected bigint, run_id varchar);
        create table if not exists rejects (
            stream varchar, file varchar, line bigint, raw varchar, reason varchar,
            run_id varchar);
        create table if not exists dirty_keys (stream varchar, key bigint, ref bigint);
        create table if not exists dirty_parts (table_name varchar, part varchar);
        create table if not exists pipeline_state (key varchar primary key, value varchar);
        """
    )
    for stream in STREAMS.values():
        cols = ", ".join(f"{f.name} {DUCKDB_TYPES[f.type]}" for f in stream.fields)
        conn.execute(
            f"create table if not exists raw_{stream.name} ({cols}, _file varchar, _line bigint)"
        )


def reset_state(conn: duckdb.DuckDBPyConnection) -> None:
    """Forget every loaded file (for --full-refresh)."""
    conn.execute(
        "delete from manifest; delete from file_stats; delete from rejects; delete from dirty_keys;"
    )
    for stream in STREAMS.values():
        conn.execute(f"delete from raw_{stream.name}")


def plan(conn: duckdb.DuckDBPyConnection, found: Discovery) -> list[tuple[RawFile, str]]:
    """Files that are new or whose content changed, each with its content hash."""
    known = {
        row[0]: row[1:]
        for row in conn.execute("select file, size, mtime_ns, sha256 from manifest").fetchall()
    }
    todo = []
    for raw_file in found.files:
        seen = known.get(raw_file.rel)
        if seen and seen[0] == raw_file.size and seen[1] == raw_file.mtime_ns:
            continue
        digest = file_sha256(raw_file.path)
        if seen and seen[2] == digest:
            conn.execute(
                "update manifest set size = ?, mtime_ns = ? where file = ?",
                [raw_file.size, raw_file.mtime_ns, raw_file.rel],
            )
            continue
        todo.append((raw_file, digest))
    return todo


def _lines_table(rel: str, first_line: int, lines: list[bytes]) -> pa.Table:
    """Arrow table (file, line, text, bad_utf8) for a block of raw lines."""
    binary = pa.array(lines, type=pa.binary())
    try:
        text = binary.cast(pa.string())
        bad = pa.array([False] * len(lines))
    except pa.ArrowInvalid:
        decoded = []
        flags = []
        for raw_line in lines:
            try:
                decoded.append(raw_line.decode("utf-8"))
                flags.append(False)
            except UnicodeDecodeError:
                decoded.append(raw_line.decode("utf-8", errors="replace"))
                flags.append(True)
        text = pa.array(decoded, type=pa.string())
        bad = pa.array(flags)
    text = pc.utf8_rtrim(text, characters="\r\n")
    return pa.table(
        {
            "file": pa.array([rel] * len(lines), type=pa.string()).dictionary_encode(),
            "line": pa.array(range(first_line, first_line + len(lines)), type=pa.int64()),
            "text": text,
            "bad_utf8": bad,
            "blank": pc.equal(pc.utf8_trim_whitespace(text), ""),
        }
    )


class CorruptFile(Exception):
    """A raw file whose bytes cannot be decoded (broken gzip or Parquet)."""


def jsonl_blocks(raw_file: RawFile, chunk_bytes: int) -> Iterator[pa.Table]:
    """Read a JSONL (or gzip JSONL) file as blocks of numbered lines."""
    opener = gzip.open if raw_file.format == "jsonl.gz" else open
    next_line = 1
    try:
        with opener(raw_file.path, "rb") as handle:
            while lines := handle.readlines(chunk_bytes):
                yield _lines_table(raw_file.rel, next_line, lines)
                next_line += len(lines)
    except (OSError, EOFError, zlib.error) as error:
        raise CorruptFile(f"{type(error).__name__}: {error}") from error


def _quote_ident(name: str) -> str:
    """Quote an identifier read from a file's schema."""
    return '"' + name.replace('"', '""') + '"'


def parquet_source(conn: duckdb.DuckDBPyConnection, raw_file: RawFile) -> str:
    """A temp table of (file, line, text, bad_utf8, blank): each Parquet row as a JSON line."""
    path = str(raw_file.path)
    try:
        columns = [
            row[0]
            for row in conn.execute("describe select * from read_parquet(?)", [path]).fetchall()
        ]
        struct = ", ".join(f"{_sql_str(c)}: {_quote_ident(c)}" for c in columns)
        conn.execute(
            f"create or replace temp table parquet_lines as "
            f"select ?::varchar as file, file_row_number + 1 as line, "
            f"to_json({{{struct}}})::varchar as text, false as bad_utf8, false as blank "
            f"from read_parquet(?, file_row_number = true)",
            [raw_file.rel, path],
        )
    except (duckdb.IOException, duckdb.InvalidInputException) as error:
        raise CorruptFile(str(error).splitlines()[0]) from error
    return "parquet_lines"


def _sql_str(text: str) -> str:
    """Quote text as a SQL string literal (identifiers from file schemas)."""
    return "'" + text.replace("'", "''") + "'"


def _ingest_source(
    conn: duckdb.DuckDBPyConnection, stream: Stream, source: str, run_id: str
) -> tuple[int, int, int]:
    """Validate one source relation into raw and rejects. Returns (accepted, rejected, blank)."""
    conn.execute(f"create or replace temp table validated as {validated_sql(stream, source)}")
    names = ", ".join(f.name for f in stream.fields)
    conn.execute(
        f"insert into raw_{stream.name} select {names}, file, line from validated "
        f"where reason is null"
    )
    _mark_dirty(conn, stream, "validated", "reason is null", [])
    conn.execute(
        "insert into rejects select ?, file, line, text, reason, ? from validated "
        "where reason is not null",
        [stream.name, run_id],
    )
    accepted, rejected = conn.execute(
        "select count(*) filter (where reason is null), count(*) filter (where reason is not null) "
        "from validated"
    ).fetchall()[0]
    blank = conn.execute(f"select count(*) from {source} where blank").fetchall()[0][0]
    return int(accepted), int(rejected), int(blank)


def load_file(
    conn: duckdb.DuckDBPyConnection, raw_file: RawFile, digest: str, run_id: str, chunk_bytes: int
) -> tuple[int, int]:
    """Load one new or changed file, replacing its earlier records. Returns (accepted, rejected)."""
    stream = STREAMS[raw_file.stream]
    _forget(conn, raw_file)
    blocks: Iterator[pa.Table] | list[str]
    if raw_file.format == "parquet":
        blocks = [parquet_source(conn, raw_file)]
    else:
        blocks = jsonl_blocks(raw_file, chunk_bytes)
    accepted = rejected = blank = 0
    for block in blocks:
        if isinstance(block, str):
            counts = _ingest_source(conn, stream, block, run_id)
        else:
            conn.register("block", block)
            counts = _ingest_source(conn, stream, "block", run_id)
            conn.unregister("block")
        accepted, rejected, blank = (
            a + b for a, b in zip((accepted, rejected, blank), counts, strict=True)
        )
    _remember(conn, raw_file, digest, run_id, (accepted, rejected, blank))
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


def _forget(conn: duckdb.DuckDBPyConnection, raw_file: RawFile) -> None:
    """Remove every record, reject and count of a file's earlier content."""
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
    conn: duckdb.DuckDBPyConnection, raw_file: RawFile, digest: str, run_id: str, error: str
) -> tuple[int, int]:
    """A file that cannot be decoded loads nothing and counts as one reject at line 0."""
    _forget(conn, raw_file)
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
) -> dict[str, LoadStats]:
    """Load every new or changed file; return per-stream counts for this run."""
    stats: dict[str, LoadStats] = {}
    for raw_file, digest in plan(conn, found):
        conn.execute("begin transaction")
        try:
            accepted, rejected = load_file(conn, raw_file, digest, run_id, chunk_bytes)
        except CorruptFile as error:
            conn.execute("rollback")
            conn.execute("begin transaction")
            accepted, rejected = record_corrupt(conn, raw_file, digest, run_id, str(error))
        except BaseException:
            conn.execute("rollback")
            raise
        # in the file's transaction: whatever was loaded is published by a later run
        conn.execute("insert or replace into pipeline_state values ('dirty', 'true')")
        conn.execute("commit")
        crash_point("load")
        s = stats.setdefault(raw_file.stream, LoadStats())
        s.files += 1
        s.lines += accepted + rejected
        s.accepted += accepted
        s.rejected += rejected
    return stats
