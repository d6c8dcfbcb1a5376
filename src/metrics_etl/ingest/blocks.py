"""Read a raw JSONL file (plain or gzip) as Arrow blocks of whole numbered lines."""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from metrics_etl.ingest.discover import FdReader, RawFile, Unreadable, pread_blocks, why

# Rows per Arrow batch handed to DuckDB: batches are scanned in parallel.
BATCH_ROWS = 1 << 16

NEWLINE = ord("\n")


def lines_table(first_line: int, data: bytes | memoryview) -> pa.Table:
    """Arrow table (line, text, bad_utf8, blank) of the lines of a block of bytes.

    The block is split on newline bytes with numpy, with no Python object per line; a line
    keeps no trailing newline or carriage return. A line that is not valid UTF-8 is decoded
    with replacement characters and flagged.
    """
    raw = np.frombuffer(data, dtype=np.uint8)
    ends = np.flatnonzero(raw == NEWLINE) + 1
    if len(raw) and raw[-1] != NEWLINE:  # the last line of a file without a final newline
        ends = np.append(ends, len(raw))
    count = len(ends)
    offsets = np.zeros(count + 1, dtype=np.int64)
    offsets[1:] = ends
    binary = pa.LargeBinaryArray.from_buffers(
        pa.large_binary(), count, [None, pa.py_buffer(offsets), pa.py_buffer(data)]
    )
    try:
        text = binary.cast(pa.large_string())
        bad = pa.array(np.zeros(count, dtype=np.bool_))
    except pa.ArrowInvalid:
        decoded = []
        flags = []
        for raw_line in binary.to_pylist():
            try:
                decoded.append(raw_line.decode("utf-8"))
                flags.append(False)
            except UnicodeDecodeError:
                decoded.append(raw_line.decode("utf-8", errors="replace"))
                flags.append(True)
        text = pa.array(decoded, type=pa.large_string())
        bad = pa.array(flags, type=pa.bool_())
    text = pc.utf8_rtrim(text, characters="\r\n")
    # blank: empty or only whitespace (the same characters utf8_trim_whitespace removes)
    blank = pc.or_(pc.equal(pc.binary_length(text), 0), pc.utf8_is_space(text))
    table = pa.table(
        {
            "line": pa.array(np.arange(first_line, first_line + count, dtype=np.int64)),
            "text": text,
            "bad_utf8": bad,
            "blank": blank,
        }
    )
    return pa.Table.from_batches(table.to_batches(max_chunksize=BATCH_ROWS), table.schema)


class CorruptFile(Exception):
    """A raw file whose bytes cannot be decoded (broken gzip or Parquet)."""


def _chunks(raw_file: RawFile, fd: int, chunk_bytes: int) -> Iterator[bytes]:
    """The (decompressed) bytes of an open JSONL file, chunk_bytes at a time."""
    try:
        if raw_file.format == "jsonl.gz":
            with gzip.GzipFile(fileobj=FdReader(fd), mode="rb") as handle:  # type: ignore[call-overload]
                while chunk := handle.read(chunk_bytes):
                    yield chunk
        else:
            yield from pread_blocks(fd, chunk_bytes)
    except (gzip.BadGzipFile, EOFError, zlib.error) as error:
        raise CorruptFile(f"{type(error).__name__}: {error}") from error
    except OSError as error:  # the bytes could not be read, not decoded: try again later
        raise Unreadable(why(error)) from error


def prefetched(items: Iterator[pa.Table]) -> Iterator[pa.Table]:
    """The items of an iterator, the next one read by a helper thread meanwhile.

    Reading and splitting a block (file reads, gzip, numpy, Arrow) release the GIL, as DuckDB
    does while it validates the previous block, so the two overlap.
    """
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="ingest-read") as pool:
        pending = pool.submit(next, items, None)
        while (item := pending.result()) is not None:
            pending = pool.submit(next, items, None)
            yield item


def jsonl_blocks(raw_file: RawFile, fd: int, chunk_bytes: int) -> Iterator[pa.Table]:
    """Read an open JSONL (or gzip JSONL) file as blocks of whole numbered lines."""
    next_line = 1
    rest = b""
    for chunk in _chunks(raw_file, fd, chunk_bytes):
        cut = chunk.rfind(b"\n") + 1
        if not cut:  # no line ends in this chunk: keep reading
            rest += chunk
            continue
        block = rest + chunk[:cut] if rest else memoryview(chunk)[:cut]
        rest = chunk[cut:]
        table = lines_table(next_line, block)
        next_line += table.num_rows
        yield table
    if rest:
        yield lines_table(next_line, rest)
