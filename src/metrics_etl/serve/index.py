"""The serving index of one snapshot: published rollups and facts as sorted arrays, built per
channel bucket (the build writes them as segments, see `segments.py`; the server maps them).

Each table is held as NumPy columns sorted by (channel_id, time), so the rows of one channel
in a time range are one contiguous slice, found by binary search. Distinct counts over a slice
use, per row, the position of the previous row with the same key: a key occurs in rows [i, j)
for the first time exactly at the rows whose previous position is below i. Nothing here is
approximate: every answer is a sum or a count over whole rows.

Every query is about one channel, and all rows of a channel are in one bucket, so a bucket's
index answers it alone: codes, previous positions and sort orders are local to a bucket.
"""

from __future__ import annotations

import bisect
import contextlib
import functools
import threading
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.ipc as ipc

from metrics_etl.models import catalog as models

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MICROSECOND = timedelta(microseconds=1)
HOUR_US = 3_600_000_000
NO_ID = np.iinfo(np.int64).min  # stands for NULL in id columns
FEW_IDS = 2048  # `Codes.of` sorts this many unsorted ids by np.unique (radix sorts cost more)
FEW_KEYS = 16  # `Lookup.columns` looks up this many keys one by one (12 µs for an Arrow take)


def compact(values: np.ndarray) -> np.ndarray:
    """Integers as int32 when every value fits (halves the memory of ids, codes, positions)."""
    if values.dtype.kind != "i" or values.dtype.itemsize <= 4 or not len(values):
        return values
    if int(values.min()) > -(2**31) and int(values.max()) < 2**31:
        return values.astype(np.int32)
    return values


@functools.cache
def _bounds(dtype: np.dtype) -> tuple[int, int]:
    """The smallest and largest value of an integer dtype (np.iinfo costs 1 µs a call)."""
    kind = np.iinfo(dtype)
    return int(kind.min), int(kind.max)


def as_dtype(value: int, dtype: np.dtype) -> Any:
    """An integer as a scalar of an array's dtype (so a search does not copy the array), or
    None when it is out of that dtype's range and so cannot be in the array."""
    lo, hi = _bounds(dtype)
    return dtype.type(value) if lo <= value <= hi else None


def to_us(value: datetime) -> int:
    """Microseconds since the epoch."""
    return (value - EPOCH) // MICROSECOND


def from_us(value: int) -> datetime:
    """The UTC instant of a microsecond count."""
    return EPOCH + timedelta(microseconds=int(value))


@dataclass
class Sorted:
    """Rows sorted by (channel_id, t): per-channel bounds and named columns."""

    channels: np.ndarray
    starts: np.ndarray
    t: np.ndarray
    cols: dict[str, Any]  # NumPy for numbers, Arrow for strings

    def bounds(self, channel: int) -> tuple[int, int]:
        """Positions [a, b) of the channel's rows ((0, 0) when it has none)."""
        channels = self.channels
        k = int(channels.searchsorted(channel))  # the method: np.searchsorted wraps it
        if k == len(channels) or channels[k] != channel:
            return 0, 0
        a, b = self.starts[k : k + 2].tolist()
        return a, b

    def span(self, channel: int, lo: int, hi: int) -> tuple[int, int]:
        """Positions [i, j) of the channel's rows with lo <= t < hi."""
        a, b = self.bounds(channel)
        times = self.t[a:b]
        return a + int(times.searchsorted(lo)), a + int(times.searchsorted(hi))


@dataclass
class Codes:
    """A sorted dictionary of ids, mapping each to a dense code."""

    values: np.ndarray

    @classmethod
    def of(cls, ids: np.ndarray) -> tuple[Codes, np.ndarray]:
        """The dictionary of a column's ids, and the column's codes: what np.unique with
        return_inverse gives, the fastest way for the ids at hand: from their runs when they
        are sorted already (a channel's time buckets); from a table over their range when they
        are signed integers spanning at most four times their count; by np.unique's sort when
        they are few (FEW_IDS); else from a radix sort of integers (`stable_order`, 4-6x faster
        than np.unique's sort on a bucket's ids)."""
        ids = np.asarray(ids).reshape(-1)
        if not len(ids) or ids.dtype.kind not in "iu":
            values, inverse = np.unique(ids, return_inverse=True)
            return cls(values), inverse.astype(np.int64).reshape(-1)
        if not (ids[1:] < ids[:-1]).any():
            first = _run_starts(ids)
            return cls(ids[first]), np.cumsum(first, dtype=np.int64) - 1
        dense = _dense_range(ids)
        if dense is not None:
            lo, hi = dense
            offsets = ids.astype(np.int64) - lo
            seen = np.zeros(hi - lo + 1, dtype=bool)
            seen[offsets] = True
            codes = np.cumsum(seen, dtype=np.int64) - 1
            return cls((np.flatnonzero(seen) + lo).astype(ids.dtype)), codes[offsets]
        if len(ids) <= FEW_IDS:
            values, inverse = np.unique(ids, return_inverse=True)
            return cls(values), inverse.astype(np.int64).reshape(-1)
        order = stable_order(ids)
        ordered = ids[order]
        first = _run_starts(ordered)
        inverse = np.empty(len(ids), dtype=np.int64)
        inverse[order] = np.cumsum(first, dtype=np.int64) - 1
        return cls(ordered[first]), inverse

    def __len__(self) -> int:
        return len(self.values)

    def find(self, value: int) -> int:
        """The code of one id, or -1 when it is not in the dictionary."""
        typed = as_dtype(value, self.values.dtype)
        if typed is None:
            return -1
        k = int(self.values.searchsorted(typed))
        return k if k < len(self.values) and self.values[k] == typed else -1


def _dense_range(ids: np.ndarray) -> tuple[int, int] | None:
    """The smallest and largest of non-empty signed integer ids that span fewer than four
    times their count (dense enough to be counted or coded by a table over their range), else
    None."""
    if ids.dtype.kind != "i":
        return None
    lo, hi = int(ids.min()), int(ids.max())
    return (lo, hi) if hi - lo < 4 * len(ids) else None


def _run_starts(ordered: np.ndarray) -> np.ndarray:
    """Mask of the rows of a sorted, non-empty array that start a run of equal values."""
    first = np.empty(len(ordered), dtype=bool)
    first[0] = True
    np.not_equal(ordered[1:], ordered[:-1], out=first[1:])
    return first


def stable_order(key: np.ndarray) -> np.ndarray:
    """np.argsort(key, kind="stable"), as a radix sort when the integer keys span fewer than
    2**48 values: one stable sort of 16 bits of their offsets from the smallest per pass,
    least significant first (NumPy sorts 16-bit keys by radix; wider ones by merge sort, 2-4x
    slower on the keys of a distinct-count index)."""
    if not len(key) or key.dtype.kind not in "iu":
        return np.argsort(key, kind="stable")
    lo = int(key.min())
    span = int(key.max()) - lo
    if span >= 2**48:
        return np.argsort(key, kind="stable")
    # offsets from the smallest key, below 2**48 (computed in the key's signedness: a uint64
    # key may pass 2**63)
    if key.dtype.kind == "i":
        offsets = (key.astype(np.int64) - np.int64(lo)).view(np.uint64)
    else:
        offsets = key.astype(np.uint64) - np.uint64(lo)
    order = np.argsort((offsets & np.uint64(0xFFFF)).astype(np.uint16), kind="stable")
    for shift in range(16, span.bit_length(), 16):
        digit = ((offsets >> np.uint64(shift)) & np.uint64(0xFFFF)).astype(np.uint16)
        order = order[np.argsort(digit[order], kind="stable")]
    return order


@dataclass
class Distinct:
    """For a key per row: where each row's key occurred before, and every key's positions."""

    prev: np.ndarray
    keys: np.ndarray
    positions: np.ndarray

    @classmethod
    def of(cls, key: np.ndarray) -> Distinct:
        """Index a key column (rows in their stored order)."""
        order = stable_order(key)
        keys = key[order]
        prev = np.full(len(key), -1, dtype=np.int64)
        same = keys[1:] == keys[:-1]
        prev[order[1:][same]] = order[:-1][same]
        return cls(compact(prev), compact(keys), compact(order))

    def first_in(self, i: int, j: int) -> np.ndarray:
        """Mask over rows [i, j): the rows where their key occurs first within [i, j)."""
        return self.prev[i:j] < i

    def occurs(self, key: int, i: int, j: int) -> bool:
        """Whether a key occurs in rows [i, j)."""
        typed = as_dtype(key, self.keys.dtype)
        if typed is None:
            return False
        a = int(self.keys.searchsorted(typed, "left"))
        b = int(self.keys.searchsorted(typed, "right"))
        if a == b:
            return False
        p = a + int(self.positions[a:b].searchsorted(as_dtype(i, self.positions.dtype)))
        return p < b and int(self.positions[p]) < j


def format_instants(values: np.ndarray) -> list[str]:
    """Microsecond instants as API strings: UTC, milliseconds truncated, with Z."""
    milliseconds = values.astype("datetime64[us]").astype("datetime64[ms]")  # floored
    return np.datetime_as_string(milliseconds, timezone="UTC").tolist()


def totals_by(keys: list[np.ndarray], weights: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Sum weights per key over several key/weight arrays: (keys, totals), in key order."""
    allkeys = np.concatenate(keys)
    if not len(allkeys):
        return allkeys, np.zeros(0, dtype=np.int64)
    every = np.concatenate(weights).astype(np.float64)
    dense = _dense_range(allkeys)
    if dense is not None:  # dense keys (hours, weekdays, states): counted over their range
        lo = dense[0]
        offsets = allkeys.astype(np.int64) - lo
        present = np.flatnonzero(np.bincount(offsets))
        totals = np.bincount(offsets, weights=every)[present]
        return (present + lo).astype(allkeys.dtype), totals.astype(np.int64)
    codes, inverse = Codes.of(allkeys)
    return codes.values, np.bincount(inverse, weights=every).astype(np.int64)


def largest_first(values: np.ndarray, totals: np.ndarray) -> tuple[list[Any], list[int]]:
    """Keys and totals as lists, the largest total first, ties by key."""
    order = np.lexsort((values, -totals))
    return values[order].tolist(), totals[order].tolist()


@dataclass
class Pair:
    """A rollup with its row-level facts: whole hours from one, partial hours from the other."""

    rollup: Sorted
    facts: Sorted
    extra: dict[str, Any] = field(default_factory=dict)

    def window(self, channel: int, start: datetime, end: datetime) -> tuple[int, int, np.ndarray]:
        """Rollup rows [i, j) of the whole local hours in [start, end), and the fact rows of the
        partial hours at its edges (facts inside [start, end) whose hour is not whole)."""
        s, e = to_us(start), to_us(end)
        last = e - HOUR_US
        i, j = self.rollup.span(channel, s, last + 1)
        # in microseconds: datetime arithmetic would overflow within an hour of 0001 / 9999
        windows = [(s, e)] if s + HOUR_US >= last else [(s, s + HOUR_US), (last, e)]
        hours = self.facts.cols["hour"]
        a, b = self.facts.bounds(channel)
        times = self.facts.t[a:b]
        parts = []
        for lo, hi in windows:
            x, y = a + int(times.searchsorted(lo)), a + int(times.searchsorted(hi))
            if x < y:
                h = hours[x:y]
                parts.append(np.flatnonzero((h < s) | (h > last)) + x)
        edges = np.concatenate(parts) if parts else np.empty(0, dtype=np.int64)
        return i, j, edges


def pair_key(a: np.ndarray, b: np.ndarray, size_b: int) -> np.ndarray:
    """One int64 key for a pair of dense codes."""
    return a * np.int64(size_b) + b


def pair_key_of(first: Codes, second: Codes, a: int, b: int) -> int:
    """The pair key (as `pair_key` builds it) of two ids, or -1, which no index holds, when
    either id is not in its dictionary."""
    x, y = first.find(a), second.find(b)
    return -1 if x < 0 or y < 0 else x * len(second) + y


@dataclass
class Reports:
    """Reports: row-level facts, and hourly rollups per local bucket, per author and per state."""

    facts: Sorted
    time: Sorted
    user: Sorted
    state: Sorted

    def pair(self, rollup: str) -> Pair:
        """One of the rollups (time, user or state) with the facts of its edges."""
        return Pair(getattr(self, rollup), self.facts)


@dataclass
class Reads:
    """Reads: rollup and facts, with distinct-key indexes for pairs, readers and reports."""

    pair: Pair
    reports: Codes
    users: Codes
    by_pair: Distinct
    by_user: Distinct
    by_report: Distinct


@dataclass
class Deliveries:
    """Deliveries: rollup and facts, with per-recipient distinct alerts and source reports."""

    pair: Pair
    users: Codes
    alerts: Codes
    reports: Codes
    user_code: np.ndarray
    by_alert: Distinct
    by_report: Distinct


@dataclass
class ReportStats:
    """Report-stats rows sorted by (account_id, report_id): a page is a slice of an account's
    rows (or of its shared reports' rows), since positions follow report_id within an account."""

    rows: Any  # pyarrow.StructArray of the answer columns (a ChunkedArray of one when spliced,
    # until written: a spliced part goes only to the segment writer)
    account: np.ndarray
    shared: np.ndarray  # row numbers of shared reports
    shared_account: np.ndarray

    def page(self, account: int, first: int, size: int, spaces: bool) -> tuple[int, list[tuple]]:
        """The total and the rows at positions [first, first + size) of an account."""
        if spaces:
            a = int(np.searchsorted(self.account, account, "left"))
            b = int(np.searchsorted(self.account, account, "right"))
            chosen = np.arange(a, b)
        else:
            a = int(np.searchsorted(self.shared_account, account, "left"))
            b = int(np.searchsorted(self.shared_account, account, "right"))
            chosen = self.shared[a:b]
        picked = chosen[first - 1 : first - 1 + size]
        if not len(picked):
            return len(chosen), []
        lo, hi = int(picked[0]), int(picked[-1]) + 1
        rows = self.rows.slice(lo, hi - lo)  # zero-copy; a take over the whole array is O(n)
        if hi - lo != len(picked):
            rows = rows.take(pa.array(picked - lo))
        columns = [column.to_pylist() for column in rows.flatten()]
        return len(chosen), list(zip(*columns, strict=True))


class _Items:
    """An Arrow string array as a sequence of Python strings, for `bisect`."""

    def __init__(self, array: Any) -> None:
        self.array = array

    def __len__(self) -> int:
        return len(self.array)

    def __getitem__(self, i: int) -> Any:
        return self.array[i].as_py()


@dataclass
class Lookup:
    """Rows sorted by a key (int64 ids, or an Arrow string array): a key's row by binary search."""

    keys: Any
    cols: dict[str, Any]  # NumPy for numbers, Arrow for strings

    def row(self, key: Any) -> int:
        """The first row holding a key, or -1."""
        if isinstance(self.keys, np.ndarray):
            typed = as_dtype(key, self.keys.dtype)
            if typed is None:
                return -1
            k = int(self.keys.searchsorted(typed))
            return k if k < len(self.keys) and self.keys[k] == typed else -1
        k = bisect.bisect_left(_Items(self.keys), key)
        return k if k < len(self.keys) and self.keys[k].as_py() == key else -1

    def value(self, key: Any, column: str) -> Any:
        """A column's value at a key, or None."""
        k = self.row(key)
        if k < 0:
            return None
        found = self.cols[column][k]
        return found.as_py() if isinstance(found, pa.Scalar) else found.item()

    def values(self, keys: np.ndarray, column: str) -> list[Any]:
        """An Arrow column's values at many int64 keys (None where a key is missing)."""
        return self.columns(keys, (column,))[0]

    def columns(self, keys: np.ndarray, names: tuple[str, ...]) -> list[list[Any]]:
        """Several Arrow columns' values at many int64 keys (None where a key is missing),
        from one search of the keys."""
        if not len(self.keys) or not len(keys):
            return [[None] * len(keys) for _ in names]
        k = np.minimum(self.keys.searchsorted(keys), len(self.keys) - 1)
        missing = self.keys[k] != keys
        if len(keys) <= FEW_KEYS:  # an Arrow take costs more than a few scalars
            rows = [
                None if miss else i for i, miss in zip(k.tolist(), missing.tolist(), strict=True)
            ]
            return [
                [None if i is None else column[i].as_py() for i in rows]
                for column in (self.cols[name] for name in names)
            ]
        rows = pa.array(k, mask=missing)
        return [self.cols[name].take(rows).to_pylist() for name in names]


@dataclass
class Dims:
    """The dimensions the answers look up."""

    channels: Lookup  # channel_id: account_id, is_deleted
    fields: Lookup  # field_id: account_id, field_type
    options: Lookup  # field_id: value, name (one row per option value)
    states: Lookup  # state_id: name
    users: Lookup  # user_id: first_name, last_name
    organizations: Lookup  # username (sorted as Python sorts): account_id

    def option_names(self, field_id: int) -> dict[Any, Any]:
        """A field's option names by value."""
        keys = self.options.keys
        typed = as_dtype(field_id, keys.dtype)
        if typed is None:
            return {}
        a, b = int(np.searchsorted(keys, typed, "left")), int(np.searchsorted(keys, typed, "right"))
        values = self.options.cols["value"][a:b].to_pylist()
        names = self.options.cols["name"][a:b].to_pylist()
        return dict(zip(values, names, strict=True))


# -- building the index from published tables ------------------------------------------------


@dataclass(frozen=True)
class Source:
    """A sorted table of the index: a published table's rows as (channel_id, t, columns), where
    each column is a SQL expression, sorted by channel, time and `then_by`."""

    table: str
    columns: dict[str, str]
    where: str = "true"
    then_by: str = ""

    @property
    def time_column(self) -> str:
        """The table's time column: the one its model header partitions it by."""
        column = models.catalog()[self.table].partitioned_by
        assert column is not None, f"{self.table} declares no partitioned_by"
        return column


SOURCES: dict[str, dict[str, Source]] = {
    "reports": {
        "facts": Source(
            "fct_reports",
            {
                "hour": "epoch_us(hour_start)",
                "day": "epoch_us(day_start)",
                "week": "epoch_us(week_start)",
                "month": "epoch_us(month_start)",
                "local_hour": "local_hour",
                "dow": "dow",
                "user_id": "user_id",
                "state_id": f"coalesce(state_id, {NO_ID})",
            },
        ),
        "time": Source(
            "agg_reports_hourly",
            {
                "hour": "epoch_us(hour_start)",
                "day": "epoch_us(day_start)",
                "week": "epoch_us(week_start)",
                "month": "epoch_us(month_start)",
                "local_hour": "local_hour",
                "dow": "dow",
                "n": "report_count",
            },
        ),
        "user": Source(
            "agg_reports_by_user_hourly",
            {"user_id": "user_id", "n": "report_count"},
        ),
        "state": Source(
            "agg_reports_by_state_hourly",
            {"state_id": "state_id", "n": "report_count"},
            where="state_id is not null",
        ),
    },
    "selections": {
        "rollup": Source(
            "agg_report_selections_hourly",
            {"field_id": "field_id", "value": "value", "n": "report_count"},
        ),
        "facts": Source(
            "fct_report_selections",
            {"hour": "epoch_us(hour_start)", "field_id": "field_id", "value": "value"},
        ),
    },
    "images": {
        "rows": Source(
            "fct_report_images",
            {
                "report_image_id": "report_image_id",
                "report_id": "report_id",
                "thumb": "thumb",
                "medium": "medium",
            },
            then_by="report_image_id",
        ),
    },
    "reads": {
        "rollup": Source(
            "agg_reads_hourly",
            {"report_id": "report_id", "user_id": "user_id", "n": "read_count"},
        ),
        "facts": Source(
            "fct_reads",
            {"hour": "epoch_us(hour_start)", "report_id": "report_id", "user_id": "user_id"},
        ),
    },
    "deliveries": {
        "rollup": Source(
            "agg_deliveries_hourly",
            {
                "user_id": "user_id",
                "alert_id": "alert_id",
                "report_id": "report_id",
                "n": "delivery_count",
                "opened": "opened_count",
            },
        ),
        "facts": Source(
            "fct_deliveries",
            {
                "hour": "epoch_us(hour_start)",
                "user_id": "user_id",
                "alert_id": "alert_id",
                "report_id": "report_id",
                "opened": "opened::bigint",
            },
        ),
    },
}


def bucket_sql(buckets: int) -> str:
    """SQL for a row's channel bucket (as `channel_id % buckets` in Python: never negative)."""
    return f"((channel_id % {buckets}) + {buckets}) % {buckets}"


def as_column(column: Any) -> Any:
    """An Arrow column as the index holds it: NumPy for integers, one Arrow array otherwise."""
    if pa.types.is_integer(column.type):
        if column.null_count:
            column = column.cast(pa.int64()).fill_null(NO_ID)
        return compact(column.to_numpy())
    return column.combine_chunks()


@dataclass
class Fetched:
    """A source's rows of several buckets, sorted by (bucket, channel_id, t, ...)."""

    bucket: np.ndarray
    channel: np.ndarray
    t: np.ndarray
    cols: dict[str, Any]

    def of(self, bucket: int) -> Sorted:
        """The rows of one bucket."""
        a = int(np.searchsorted(self.bucket, bucket, "left"))
        b = int(np.searchsorted(self.bucket, bucket, "right"))
        channel = self.channel[a:b]
        first = np.flatnonzero(np.diff(channel, prepend=channel[:1] - 1))  # rows are sorted
        starts = np.append(first, len(channel)).astype(np.int64)
        channels = channel[first]
        cols = {
            k: v[a:b] if isinstance(v, np.ndarray) else v.slice(a, b - a)
            for k, v in self.cols.items()
        }
        return Sorted(channels, starts, self.t[a:b], cols)


def hour_of_sql(us: str) -> str:
    """SQL for the start of the UTC hour holding an epoch-microsecond value (floored, also
    before 1970, as `np.floor_divide(us, HOUR_US) * HOUR_US`)."""
    return f"({us} - (({us} % {HOUR_US}) + {HOUR_US}) % {HOUR_US})"


def storage_sorted(keys: list[np.ndarray]) -> bool:
    """Whether rows are sorted by several key columns, the first the most significant."""
    tied = np.ones(max(len(keys[0]) - 1, 0), dtype=bool)
    for key in keys:
        after, before = key[1:], key[:-1]
        if np.any(tied & (after < before)):
            return False
        tied &= after == before
    return True


def sorted_order(bucket: np.ndarray, keys: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
    """Positions that sort rows by bucket (small non-negative integers), then keys (channel,
    time and any tie-breaker), and the bucket and keys in that order. For rows read in a
    table's storage order (runs sorted by channel and time, a month each): a stable sort by
    channel, which merges the runs, then a stable radix sort by bucket (exact, so the check
    that follows finds bucket and channel in order and looks at time and tie-breaker); a full
    lexicographic sort when the check finds the rows were not in storage order."""
    counts = np.bincount(bucket) if len(bucket) else np.zeros(0, dtype=np.int64)
    buckets = np.repeat(np.arange(len(counts), dtype=np.int64), counts)  # in bucket order
    by_channel = np.argsort(keys[0], kind="stable")
    order = by_channel[stable_order(bucket[by_channel])]
    ordered = [buckets, *(key[order] for key in keys)]
    if not storage_sorted(ordered):
        order = np.lexsort((*keys[::-1], bucket))
        ordered = [buckets, *(key[order] for key in keys)]
    return order, ordered


# Cursors opened from a connection (`child_cursor`), by the connection, and the connections
# stopped (`interrupt`): DuckDB interrupts one cursor's query, not its cursors' queries. Held
# weakly: a connection gone is forgotten.
_CHILDREN: weakref.WeakKeyDictionary[duckdb.DuckDBPyConnection, set[duckdb.DuckDBPyConnection]]
_CHILDREN = weakref.WeakKeyDictionary()
_STOPPED: weakref.WeakSet[duckdb.DuckDBPyConnection] = weakref.WeakSet()
_CHILDREN_LOCK = threading.Lock()


@contextlib.contextmanager
def child_cursor(conn: duckdb.DuckDBPyConnection) -> Iterator[duckdb.DuckDBPyConnection]:
    """A cursor of `conn` for the block (closed after it), whose query `interrupt(conn)`
    interrupts; refused (InterruptException) once `conn` was interrupted."""
    cursor = conn.cursor()
    with _CHILDREN_LOCK:
        if conn in _STOPPED:
            cursor.close()
            raise duckdb.InterruptException("INTERRUPT Error: Interrupted!")
        _CHILDREN.setdefault(conn, set()).add(cursor)
    try:
        yield cursor
    finally:
        with _CHILDREN_LOCK:  # never interrupted while it is being closed
            _CHILDREN.get(conn, set()).discard(cursor)
        cursor.close()


def interrupt(conn: duckdb.DuckDBPyConnection) -> None:
    """Interrupt the query `conn` runs and those of its cursors (`child_cursor`), and refuse it
    new cursors. A cursor between two queries is not interrupted (DuckDB drops an interrupt
    when no query runs): a caller that must stop a connection calls this until its work ends."""
    with _CHILDREN_LOCK:
        _STOPPED.add(conn)
        conn.interrupt()
        for cursor in _CHILDREN.get(conn, ()):
            cursor.interrupt()


def _read(
    conn: duckdb.DuckDBPyConnection,
    source: Source,
    buckets: list[int],
    size: int,
    within: str | None = None,
    batch_rows: int = 0,
) -> Iterator[Any]:
    """A source's rows of some buckets as `fetch` selects them: whole tables in their storage
    order, the rows of `within` sorted by DuckDB. With `batch_rows`, the rows come as a list
    of record batches of about that many rows, read one at a time (a generator)."""
    select = "".join(f", {expr} as {name}" for name, expr in source.columns.items())
    then = f", {source.then_by}" if source.then_by else ""
    where, params = source.where, dict[str, Any]()
    if len(set(buckets)) < size:
        where += f" and list_contains($buckets, {bucket_sql(size)})"
        params["buckets"] = buckets
    rows, order_by = source.table, ""
    if within is not None:
        column = source.time_column
        # whole seconds below the earliest hour first, which DuckDB answers from its zone maps
        rows = (
            f"(select *, {hour_of_sql(f'epoch_us({column})')} as _hour from {rows} "
            f"where {column} >= to_timestamp($lo)) join {within} using (channel_id, _hour)"
        )
        found = conn.execute(f"select coalesce(min(_hour), 0) // 1000000 - 1 from {within}")
        params["lo"] = float(found.fetchall()[0][0])
        order_by = f"order by bucket, channel_id, t{then}"
    # a cursor of its own (the server builds parts from several threads), except for `within`,
    # which may be a temporary table, seen only by the connection that made it
    own = contextlib.nullcontext(conn) if within is not None else child_cursor(conn)
    with own as cursor:
        kept = cursor.execute("select current_setting('preserve_insertion_order')").fetchall()
        cursor.execute("set preserve_insertion_order = true")  # storage order, for sorted_order
        try:
            result = cursor.execute(
                f"select {bucket_sql(size)} as bucket, channel_id, "
                f"epoch_us({source.time_column}) as t{select} from {rows} "
                f"where {where} {order_by}",
                params,
            )
            if batch_rows:
                yield from result.fetch_record_batch(batch_rows)
            else:
                yield result.to_arrow_table()
        finally:
            cursor.execute(f"set preserve_insertion_order = {bool(kept[0][0])}")


def _fetched(table: pa.Table, source: Source, ordered: bool) -> Fetched:
    """Rows read by `_read` as a `Fetched`: columns as the index holds them, sorted by bucket,
    channel and time in NumPy unless DuckDB sorted them (`ordered`)."""
    cols = {name: as_column(table.column(name)) for name in table.column_names}
    del table  # each column is held once from here, and once more while it is reordered
    bucket = np.asarray(cols.pop("bucket"), dtype=np.int64)
    channel = np.asarray(cols.pop("channel_id"), dtype=np.int64)
    t = np.asarray(cols.pop("t"), dtype=np.int64)
    if not ordered:
        then_by = [np.asarray(cols[source.then_by])] if source.then_by else []
        order, (bucket, channel, t, *_) = sorted_order(bucket, [channel, t, *then_by])
        for name, column in cols.items():
            cols[name] = column[order] if isinstance(column, np.ndarray) else column.take(order)
    return Fetched(bucket, channel, t, cols)


def fetch(
    conn: duckdb.DuckDBPyConnection,
    source: Source,
    buckets: list[int],
    size: int,
    within: str | None = None,
) -> Fetched:
    """Read a source's rows of some buckets, sorted by bucket, channel and time; with `within`
    (a relation of (channel_id, _hour): channels and the UTC hours starting at `_hour`, in epoch
    microseconds), only the rows in those hours of those channels.

    Whole tables are read in their storage order and sorted in NumPy (`sorted_order`), which
    costs less than DuckDB's sort of the same rows; the rows of `within` are few and are
    sorted by DuckDB."""
    tables = list(_read(conn, source, buckets, size, within))  # one table
    return _fetched(tables.pop(), source, ordered=within is not None)  # its only holder


SPILL_BATCH_ROWS = 1_000_000  # rows routed to the chunks' files at once
# writing and reading a spill back costs about one more scan: it pays from three chunks on
SPILL_FROM_CHUNKS = 3
# a spill is written and read once: LZ4 costs less than the bytes it saves
SPILL_COMPRESSION = "lz4"


def spill(
    conn: duckdb.DuckDBPyConnection,
    source: Source,
    chunks: list[list[int]],
    size: int,
    folder: Path,
) -> list[Path]:
    """One scan of a source for several chunks of buckets: its rows, in the order read, streamed
    to a file per chunk (Arrow IPC), so that each chunk is read back (`fetch_spilled`) without
    scanning the table again. Memory: one batch of SPILL_BATCH_ROWS rows."""
    chunk_of = np.full(size, -1, dtype=np.int64)
    for k, chunk in enumerate(chunks):
        chunk_of[chunk] = k
    paths = [folder / f"{source.table}-{k}.arrows" for k in range(len(chunks))]
    every = sorted(b for chunk in chunks for b in chunk)
    options = ipc.IpcWriteOptions(compression=SPILL_COMPRESSION)
    with contextlib.ExitStack() as stack:  # every writer closed, whatever fails
        writers: list[Any] = []
        for batch in _read(conn, source, every, size, batch_rows=SPILL_BATCH_ROWS):
            if not writers:
                for path in paths:
                    writer = ipc.new_stream(str(path), batch.schema, options=options)
                    writers.append(stack.enter_context(writer))
            k = chunk_of[batch.column("bucket").to_numpy()]
            routed = batch.take(pa.array(stable_order(k)))  # by chunk, in the order read
            start = 0
            counts = np.bincount(k, minlength=len(chunks)).tolist()
            for writer, n in zip(writers, counts, strict=True):
                if n:
                    writer.write_batch(routed.slice(start, n))
                start += n
    return paths


def fetch_spilled(
    conn: duckdb.DuckDBPyConnection, path: Path, source: Source, buckets: list[int], size: int
) -> Fetched:
    """A chunk's rows from its `spill` file, sorted as `fetch` sorts them (read by `fetch` when
    the scan had no rows to spill, so wrote no file)."""
    if not path.exists():
        return fetch(conn, source, buckets, size)
    with pa.OSFile(str(path)) as handle:  # read into memory: nothing refers to the file after
        table = ipc.open_stream(handle).read_all()
    return _fetched(table, source, ordered=False)


def build_reports(tables: dict[str, Sorted]) -> Reports:
    """Report counts: per local bucket, per author, per state."""
    return Reports(tables["facts"], tables["time"], tables["user"], tables["state"])


def build_selections(tables: dict[str, Sorted]) -> Pair:
    """Report counts per selected (field, value), values coded densely within the bucket."""
    rollup, facts = tables["rollup"], tables["facts"]
    values = pa.concat_arrays([rollup.cols.pop("value"), facts.cols.pop("value")])
    encoded = pc.dictionary_encode(values, null_encoding="encode")
    codes = compact(encoded.indices.to_numpy().astype(np.int64))
    rollup.cols["code"] = codes[: len(rollup.t)]
    facts.cols["code"] = codes[len(rollup.t) :]
    return Pair(rollup, facts, {"values": encoded.dictionary})


def build_images(tables: dict[str, Sorted]) -> Sorted:
    """Report images sorted by channel, time and id."""
    return tables["rows"]


def build_reads(tables: dict[str, Sorted]) -> Reads:
    """Reads with distinct-key indexes."""
    rollup, facts = tables["rollup"], tables["facts"]
    reports, rc = Codes.of(rollup.cols.pop("report_id"))
    users, uc = Codes.of(rollup.cols.pop("user_id"))
    return Reads(
        Pair(rollup, facts),
        reports,
        users,
        Distinct.of(pair_key(rc, uc, len(users))),
        Distinct.of(uc),
        Distinct.of(rc),
    )


def build_deliveries(tables: dict[str, Sorted]) -> Deliveries:
    """Deliveries with per-recipient distinct-key indexes."""
    rollup, facts = tables["rollup"], tables["facts"]
    users, uc = Codes.of(rollup.cols.pop("user_id"))
    alerts, ac = Codes.of(rollup.cols.pop("alert_id"))
    reports, rc = Codes.of(rollup.cols.pop("report_id"))
    return Deliveries(
        Pair(rollup, facts),
        users,
        alerts,
        reports,
        compact(uc),
        Distinct.of(pair_key(uc, ac, len(alerts))),
        Distinct.of(pair_key(uc, rc, len(reports))),
    )


BUILDERS: dict[str, Callable[[dict[str, Sorted]], Any]] = {
    "reports": build_reports,
    "selections": build_selections,
    "images": build_images,
    "reads": build_reads,
    "deliveries": build_deliveries,
}


def build_part(
    conn: duckdb.DuckDBPyConnection,
    part: str,
    buckets: list[int],
    size: int,
    read: Callable[[], None] = lambda: None,
) -> Iterator[tuple[int, Any]]:
    """The index of a channel part (reports, selections, images, reads or deliveries) for each
    of some buckets, of `size` buckets in all (`read` called once their rows are read)."""
    fetched = {name: fetch(conn, source, buckets, size) for name, source in SOURCES[part].items()}
    read()
    for bucket in sorted(buckets):
        yield bucket, BUILDERS[part]({name: f.of(bucket) for name, f in fetched.items()})


def build_parts(
    conn: duckdb.DuckDBPyConnection,
    part: str,
    chunks: list[list[int]],
    size: int,
    folder: Path,
    between: Callable[[], None] = lambda: None,
) -> Iterator[tuple[int, Any]]:
    """`build_part` for several chunks of buckets, calling `between` once each chunk after the
    first is read, before it is built (the writer drains there: reading a chunk overlaps
    writing the previous one's last segments, and at most two chunks are held, the one read and
    the previous one by the segments still being written): with SPILL_FROM_CHUNKS chunks or
    more, each source is scanned once and spilled to a file per chunk under `folder` (removed
    as it is read), instead of being scanned once per chunk."""
    if len(chunks) < SPILL_FROM_CHUNKS:
        for k, chunk in enumerate(chunks):
            yield from build_part(conn, part, chunk, size, between if k else lambda: None)
        return
    sources = SOURCES[part]
    folder.mkdir(parents=True, exist_ok=True)
    spilled = {name: spill(conn, source, chunks, size, folder) for name, source in sources.items()}
    try:
        for k, chunk in enumerate(chunks):
            fetched = {
                name: fetch_spilled(conn, paths[k], sources[name], chunk, size)
                for name, paths in spilled.items()
            }
            for paths in spilled.values():
                paths[k].unlink(missing_ok=True)
            if k:
                between()
            for bucket in sorted(chunk):
                yield bucket, BUILDERS[part]({name: f.of(bucket) for name, f in fetched.items()})
            del fetched  # before the next chunk is read
    finally:
        for paths in spilled.values():
            for path in paths:
                path.unlink(missing_ok=True)


def _row_keys(distinct: Distinct) -> np.ndarray:
    """The key of every row of a distinct-key index, in row order."""
    out = np.empty(len(distinct.prev), dtype=np.int64)
    out[distinct.positions] = distinct.keys
    return out


def _restored(part: str, name: str, table: Sorted, ids: dict[str, Any]) -> Sorted:
    """A source table as `fetch` reads it: its kept columns, with the ones a builder turned into
    codes given back as ids, in the source's column order."""
    cols = {k: ids[k] if k in ids else table.cols[k] for k in SOURCES[part][name].columns}
    return Sorted(table.channels, table.starts, table.t, cols)


def unbuild(part: str, obj: Any) -> dict[str, Sorted]:
    """A channel part's source tables, from its index: the inverse of its builder (the same
    rows in the same order, each column as `fetch` reads it, up to its integer width)."""
    if part == "reports":
        return {name: getattr(obj, name) for name in ("facts", "time", "user", "state")}
    if part == "images":
        return {"rows": obj}
    if part == "selections":
        values = obj.extra["values"]
        return {
            name: _restored(part, name, table, {"value": values.take(pa.array(table.cols["code"]))})
            for name, table in (("rollup", obj.rollup), ("facts", obj.facts))
        }
    if part == "reads":
        ids = {
            "report_id": obj.reports.values[_row_keys(obj.by_report)],
            "user_id": obj.users.values[_row_keys(obj.by_user)],
        }
        return {"rollup": _restored(part, "rollup", obj.pair.rollup, ids), "facts": obj.pair.facts}
    if part == "deliveries":
        alerts, reports = max(len(obj.alerts), 1), max(len(obj.reports), 1)
        ids = {
            "user_id": obj.users.values[obj.user_code],
            "alert_id": obj.alerts.values[_row_keys(obj.by_alert) % alerts],
            "report_id": obj.reports.values[_row_keys(obj.by_report) % reports],
        }
        return {"rollup": _restored(part, "rollup", obj.pair.rollup, ids), "facts": obj.pair.facts}
    raise ValueError(f"not a channel part: {part}")


def merged(
    kept: np.ndarray, kept_key: np.ndarray, new_key: np.ndarray, old_rows: int
) -> np.ndarray:
    """Where each row of a merge comes from, as positions in the old rows and then the new rows
    laid end to end: the kept old rows (positions `kept`, sorted by `kept_key`) and the new rows
    (sorted by `new_key`, none equal to a kept key), in key order."""
    at = np.searchsorted(kept_key, new_key) + np.arange(len(new_key))
    take = np.empty(len(kept) + len(new_key), dtype=np.int64)
    from_new = np.zeros(len(take), dtype=bool)
    from_new[at] = True
    take[~from_new] = kept
    take[at] = old_rows + np.arange(len(new_key))
    return take


def splice(old: Sorted, windows: tuple[np.ndarray, np.ndarray], new: Sorted) -> Sorted:
    """A source table updated from its previous rows: in each window (a channel and a UTC hour,
    given as channels and hour starts sorted by both), its rows replaced by `new` (the rows in
    those windows now, sorted by channel and time); every other row kept, in its place."""
    old_channel = np.repeat(old.channels, np.diff(old.starts))
    new_channel = np.repeat(new.channels, np.diff(new.starts))
    channels, hours = windows
    # (channel, hour) as one sortable integer: dense codes of both, so nothing can overflow
    _, channel_of = Codes.of(np.concatenate([old_channel, new_channel, channels]))
    hour_codes, hour_of_row = Codes.of(
        np.floor_divide(np.concatenate([old.t, new.t, hours]), HOUR_US)
    )
    key = channel_of * np.int64(len(hour_codes)) + hour_of_row
    old_key, new_key = (
        key[: len(old_channel)],
        key[len(old_channel) : len(old_channel) + len(new_channel)],
    )
    window_key = key[len(old_channel) + len(new_channel) :]
    found = np.searchsorted(window_key, old_key)
    inside = found < len(window_key)
    inside[inside] = window_key[found[inside]] == old_key[inside]
    kept = np.flatnonzero(~inside)
    # no kept row shares a new row's window, so a new row goes before the later windows' rows
    take = merged(kept, old_key[kept], new_key, len(old_channel))
    channel = np.concatenate([old_channel, new_channel])[take]
    first = np.flatnonzero(np.diff(channel, prepend=channel[:1] - 1))
    cols: dict[str, Any] = {}
    for name, column in old.cols.items():
        other = new.cols[name]
        if isinstance(column, np.ndarray):
            cols[name] = compact(np.concatenate([column, other])[take])
        else:
            cols[name] = pa.concat_arrays([column, other.cast(column.type)]).take(pa.array(take))
    return Sorted(
        channel[first],
        np.append(first, len(channel)).astype(np.int64),
        np.concatenate([old.t, new.t])[take],
        cols,
    )


def _arrow(conn: duckdb.DuckDBPyConnection, sql: str) -> Any:
    """A query's answer as an Arrow table."""
    with child_cursor(conn) as cursor:
        return cursor.execute(sql).fetch_arrow_table()


# The columns of a report-stats row in the API's answer, in its order (the response model in
# api_models.py declares the same keys; a test holds them together).
REPORT_STAT_KEYS = (
    "report_id",
    "report_token",
    "active_schedules_count",
    "explorations_count",
    "total_views_count",
    "recent_manual_run_creators_emails",
    "scheduled_run_creators_emails",
    "editors_emails",
)


def load_report_stats(conn: duckdb.DuckDBPyConnection, within: str | None = None) -> ReportStats:
    """Report stats in (account, report) order; with `within` (a relation of report_id), only
    those reports' rows."""
    where = f"where report_id in (select report_id from {within})" if within else ""
    table = _arrow(
        conn,
        "select account_id, position_shared is not null as shared, "
        f"{', '.join(REPORT_STAT_KEYS)} from report_stats {where} order by account_id, report_id",
    )
    account = table.column("account_id").to_numpy()
    shared = np.flatnonzero(table.column("shared").to_numpy(zero_copy_only=False))
    rows = table.drop_columns(["account_id", "shared"])
    return ReportStats(
        pa.StructArray.from_arrays(
            [column.combine_chunks() for column in rows.columns], names=rows.column_names
        ),
        account,
        shared,
        account[shared],
    )


def splice_report_stats(old: ReportStats, reports: np.ndarray, new: ReportStats) -> ReportStats:
    """Report stats updated from the previous ones: the rows of `reports` (their ids) replaced
    by `new` (those reports' rows now, in (account, report) order); every other row kept."""
    old_report = old.rows.field("report_id").to_numpy(zero_copy_only=False)
    new_report = new.rows.field("report_id").to_numpy(zero_copy_only=False)
    kept = np.flatnonzero(~np.isin(old_report, reports))
    # (account, report) as one sortable integer: dense codes of both, so nothing can overflow
    _, account_of = Codes.of(np.concatenate([old.account[kept], new.account]))
    report_codes, report_of = Codes.of(np.concatenate([old_report[kept], new_report]))
    key = account_of * np.int64(len(report_codes)) + report_of
    take = merged(kept, key[: len(kept)], key[len(kept) :], len(old_report))
    shared_flag = np.zeros(len(old_report) + len(new_report), dtype=bool)
    shared_flag[old.shared] = True
    shared_flag[len(old_report) + new.shared] = True
    account = np.concatenate([old.account, new.account])[take]
    shared = np.flatnonzero(shared_flag[take])
    return ReportStats(
        runs_of(take, [old.rows, new.rows.cast(old.rows.type)]), account, shared, account[shared]
    )


def runs_of(take: np.ndarray, arrays: list[Any]) -> Any:
    """The rows at positions `take` of Arrow arrays laid end to end, as a chunked array of
    their runs: mostly long runs of consecutive rows (a take row by row of nested lists is
    several times slower). Nothing is copied here: the segment writer copies the chunks into
    one array once, on its own thread."""
    if not len(take):
        return pa.chunked_array([], arrays[0].type)
    bounds = np.cumsum([0, *(len(a) for a in arrays)])
    # a run ends where the next row is not the next position, or is the first of an array
    starts = np.flatnonzero((np.diff(take, prepend=take[0] - 2) != 1) | np.isin(take, bounds[1:-1]))
    lengths = np.diff(np.append(starts, len(take)))
    pieces = []
    for first, n in zip(take[starts].tolist(), lengths.tolist(), strict=True):
        k = int(np.searchsorted(bounds, first, "right")) - 1
        pieces.append(arrays[k].slice(first - int(bounds[k]), n))
    return pa.chunked_array(pieces, arrays[0].type)


def _lookup(conn: duckdb.DuckDBPyConnection, sql: str) -> Lookup:
    """A lookup from a query whose first column is the key, sorted by it."""
    table = _arrow(conn, sql)
    cols = {name: as_column(table.column(name)) for name in table.column_names}
    keys = cols.pop(table.column_names[0])
    return Lookup(np.asarray(keys, dtype=np.int64), cols)


def load_dims(conn: duckdb.DuckDBPyConnection) -> Dims:
    """Channels, fields, options, states, users and organizations."""
    accounts = _arrow(
        conn, "select username, account_id from dim_accounts where username is not null"
    ).to_pylist()
    accounts.sort(key=lambda r: (r["username"], r["account_id"]))  # Python's string order
    return Dims(
        _lookup(
            conn,
            "select channel_id, account_id, is_deleted::tinyint as is_deleted "
            "from dim_channels order by channel_id",
        ),
        _lookup(conn, "select field_id, account_id, field_type from dim_fields order by field_id"),
        _lookup(conn, "select field_id, value, name from dim_field_options order by field_id"),
        _lookup(conn, "select state_id, name from dim_states order by state_id"),
        _lookup(conn, "select user_id, first_name, last_name from dim_users order by user_id"),
        Lookup(
            pa.array([r["username"] for r in accounts], pa.string()),
            {"account_id": np.array([r["account_id"] for r in accounts], dtype=np.int64)},
        ),
    )


# Parts built from whole tables (one segment each), and the tables each is built from.
WHOLE: dict[str, tuple[Callable[[duckdb.DuckDBPyConnection], Any], tuple[str, ...]]] = {
    "dims": (
        load_dims,
        (
            "dim_accounts",
            "dim_channels",
            "dim_field_options",
            "dim_fields",
            "dim_states",
            "dim_users",
        ),
    ),
    "report_stats": (load_report_stats, ("report_stats",)),
}

# The type of each part, to map it back from a segment's columns.
TYPES: dict[str, type] = {
    "reports": Reports,
    "selections": Pair,
    "images": Sorted,
    "reads": Reads,
    "deliveries": Deliveries,
    "dims": Dims,
    "report_stats": ReportStats,
}
