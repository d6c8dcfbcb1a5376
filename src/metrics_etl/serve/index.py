"""In-memory serving index of one snapshot: published rollups and facts as sorted arrays.

Each table is held as NumPy columns sorted by (channel_id, time), so the rows of one channel
in a time range are one contiguous slice, found by binary search. Distinct counts over a slice
use, per row, the position of the previous row with the same key: a key occurs in rows [i, j)
for the first time exactly at the rows whose previous position is below i. Nothing here is
approximate: every answer is a sum or a count over whole rows.
"""

from __future__ import annotations

import gc
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import duckdb
import numpy as np

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MICROSECOND = timedelta(microseconds=1)
HOUR_US = 3_600_000_000
NO_ID = np.iinfo(np.int64).min  # stands for NULL in id columns


def compact(values: np.ndarray) -> np.ndarray:
    """Integers as int32 when every value fits (halves the memory of ids, codes, positions)."""
    if values.dtype.kind != "i" or values.dtype.itemsize <= 4 or not len(values):
        return values
    if int(values.min()) > -(2**31) and int(values.max()) < 2**31:
        return values.astype(np.int32)
    return values


def as_dtype(value: int, dtype: np.dtype) -> Any:
    """An integer as a scalar of an array's dtype (so a search does not copy the array), or
    None when it is out of that dtype's range and so cannot be in the array."""
    kind = np.iinfo(dtype)
    return dtype.type(value) if kind.min <= value <= kind.max else None


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
    cols: dict[str, np.ndarray]

    def span(self, channel: int, lo: int, hi: int) -> tuple[int, int]:
        """Positions [i, j) of the channel's rows with lo <= t < hi."""
        k = int(np.searchsorted(self.channels, channel))
        if k == len(self.channels) or self.channels[k] != channel:
            return 0, 0
        a, b = int(self.starts[k]), int(self.starts[k + 1])
        times = self.t[a:b]
        return a + int(np.searchsorted(times, lo)), a + int(np.searchsorted(times, hi))


def load_sorted(
    conn: duckdb.DuckDBPyConnection,
    table: str,
    time_column: str,
    columns: dict[str, str],
    where: str = "true",
    then_by: str = "",
) -> Sorted:
    """Read a table's columns (name -> SQL expression) sorted by channel and time."""
    select = "".join(f", {expr} as {name}" for name, expr in columns.items())
    order = f"channel_id, t{', ' + then_by if then_by else ''}"
    cursor = conn.cursor()
    try:
        data = cursor.execute(
            f"select channel_id, epoch_us({time_column}) as t{select} from {table} "
            f"where {where} order by {order}"
        ).fetchnumpy()
    finally:
        cursor.close()
    channel = np.asarray(data.pop("channel_id"), dtype=np.int64)
    channels, first = np.unique(channel, return_index=True)
    starts = np.append(first, len(channel)).astype(np.int64)
    times = np.asarray(data.pop("t"), dtype=np.int64)
    cols = {k: compact(np.asarray(v)) for k, v in data.items()}
    return Sorted(channels, starts, times, cols)


@dataclass
class Codes:
    """A sorted dictionary of ids, mapping each to a dense code."""

    values: np.ndarray

    @classmethod
    def of(cls, ids: np.ndarray) -> tuple[Codes, np.ndarray]:
        """The dictionary of a column's ids, and the column's codes."""
        values, codes = np.unique(ids, return_inverse=True)
        return cls(values), codes.astype(np.int64).reshape(-1)

    def __len__(self) -> int:
        return len(self.values)

    def find(self, value: int) -> int:
        """The code of one id, or -1 when it is not in the dictionary."""
        typed = as_dtype(value, self.values.dtype)
        if typed is None:
            return -1
        k = int(np.searchsorted(self.values, typed))
        return k if k < len(self.values) and self.values[k] == typed else -1


@dataclass
class Distinct:
    """For a key per row: where each row's key occurred before, and every key's positions."""

    prev: np.ndarray
    keys: np.ndarray
    positions: np.ndarray

    @classmethod
    def of(cls, key: np.ndarray) -> Distinct:
        """Index a key column (rows in their stored order)."""
        order = np.argsort(key, kind="stable")
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
        a = int(np.searchsorted(self.keys, typed, "left"))
        b = int(np.searchsorted(self.keys, typed, "right"))
        if a == b:
            return False
        p = a + int(np.searchsorted(self.positions[a:b], as_dtype(i, self.positions.dtype)))
        return p < b and int(self.positions[p]) < j


def format_instants(values: np.ndarray) -> list[str]:
    """Microsecond instants as API strings: UTC, milliseconds truncated, with Z."""
    text = np.datetime_as_string(values.astype("datetime64[us]").astype("datetime64[ms]"))
    return [f"{t}Z" for t in text.tolist()]


def totals_by(keys: list[np.ndarray], weights: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Sum weights per key over several key/weight arrays: (keys, totals), in key order."""
    allkeys = np.concatenate(keys)
    if not len(allkeys):
        return allkeys, np.zeros(0, dtype=np.int64)
    values, inverse = np.unique(allkeys, return_inverse=True)
    totals = np.bincount(inverse, weights=np.concatenate(weights).astype(np.float64))
    return values, totals.astype(np.int64)


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
        parts = []
        for lo, hi in windows:
            a, b = self.facts.span(channel, lo, hi)
            if a < b:
                rows = np.arange(a, b)
                h = hours[a:b]
                parts.append(rows[(h < s) | (h > last)])
        edges = np.concatenate(parts) if parts else np.empty(0, dtype=np.int64)
        return i, j, edges


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

    rows: Any  # pyarrow.Table of the answer columns
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
        table = self.rows.slice(lo, hi - lo)  # zero-copy; a take over the whole table is O(n)
        if hi - lo != len(picked):
            table = table.take(picked - lo)
        columns = [table.column(k).to_pylist() for k in table.column_names]
        return len(chosen), list(zip(*columns, strict=True))


def pair_key(a: np.ndarray, b: np.ndarray, size_b: int) -> np.ndarray:
    """One int64 key for a pair of dense codes."""
    return a * np.int64(size_b) + b


def pair_key_of(first: Codes, second: Codes, a: int, b: int) -> int:
    """The pair key (as `pair_key` builds it) of two ids, or -1, which no index holds, when
    either id is not in its dictionary."""
    x, y = first.find(a), second.find(b)
    return -1 if x < 0 or y < 0 else x * len(second) + y


def load_reports(conn: duckdb.DuckDBPyConnection) -> dict[str, Pair]:
    """Report counts: per local bucket, per author, per state."""
    facts = load_sorted(
        conn,
        "fct_reports",
        "created_at",
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
    )
    hourly = load_sorted(
        conn,
        "agg_reports_hourly",
        "hour_start",
        {
            "day": "epoch_us(day_start)",
            "week": "epoch_us(week_start)",
            "month": "epoch_us(month_start)",
            "local_hour": "local_hour",
            "dow": "dow",
            "n": "report_count",
        },
    )
    hourly.cols["hour"] = hourly.t
    by_user = load_sorted(
        conn,
        "agg_reports_by_user_hourly",
        "hour_start",
        {"user_id": "user_id", "n": "report_count"},
    )
    by_state = load_sorted(
        conn,
        "agg_reports_by_state_hourly",
        "hour_start",
        {"state_id": "state_id", "n": "report_count"},
        where="state_id is not null",
    )
    return {
        "time": Pair(hourly, facts),
        "user": Pair(by_user, facts),
        "state": Pair(by_state, facts),
    }


def load_selections(conn: duckdb.DuckDBPyConnection) -> Pair:
    """Report counts per selected (field, value), values coded densely."""
    cursor = conn.cursor()
    try:
        cursor.execute(
            """
            create or replace table _selection_codes as
            select
                field_id,
                value,
                (row_number() over (order by field_id, value) - 1)::bigint as code
            from (
                select field_id, value from agg_report_selections_hourly
                union
                select field_id, value from fct_report_selections
            )
            """
        )
        join = "join _selection_codes as c on c.field_id = s.field_id and c.value is not distinct from s.value"
        rollup = load_sorted(
            cursor,
            f"agg_report_selections_hourly as s {join}",
            "hour_start",
            {"field_id": "s.field_id", "code": "c.code", "n": "report_count"},
        )
        facts = load_sorted(
            cursor,
            f"fct_report_selections as s {join}",
            "created_at",
            {"hour": "epoch_us(hour_start)", "field_id": "s.field_id", "code": "c.code"},
        )
        values = cursor.execute("select value from _selection_codes order by code").fetchall()
        cursor.execute("drop table _selection_codes")
    finally:
        cursor.close()
    return Pair(rollup, facts, {"values": [v for (v,) in values]})


def load_images(conn: duckdb.DuckDBPyConnection) -> Sorted:
    """Report images sorted by channel, time and id."""
    return load_sorted(
        conn,
        "fct_report_images",
        "created_at",
        {
            "report_image_id": "report_image_id",
            "report_id": "report_id",
            "thumb": "thumb",
            "medium": "medium",
        },
        then_by="report_image_id",
    )


def load_reads(conn: duckdb.DuckDBPyConnection) -> Reads:
    """Reads with distinct-key indexes."""
    rollup = load_sorted(
        conn,
        "agg_reads_hourly",
        "hour_start",
        {"report_id": "report_id", "user_id": "user_id", "n": "read_count"},
    )
    facts = load_sorted(
        conn,
        "fct_reads",
        "read_at",
        {"hour": "epoch_us(hour_start)", "report_id": "report_id", "user_id": "user_id"},
    )
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


def load_deliveries(conn: duckdb.DuckDBPyConnection) -> Deliveries:
    """Deliveries with per-recipient distinct-key indexes."""
    rollup = load_sorted(
        conn,
        "agg_deliveries_hourly",
        "hour_start",
        {
            "user_id": "user_id",
            "alert_id": "alert_id",
            "report_id": "report_id",
            "n": "delivery_count",
            "opened": "opened_count",
        },
    )
    facts = load_sorted(
        conn,
        "fct_deliveries",
        "sent_at",
        {
            "hour": "epoch_us(hour_start)",
            "user_id": "user_id",
            "alert_id": "alert_id",
            "report_id": "report_id",
            "opened": "opened::bigint",
        },
    )
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


def load_report_stats(conn: duckdb.DuckDBPyConnection) -> ReportStats:
    """Report stats in (account, report) order."""
    cursor = conn.cursor()
    try:
        table = cursor.execute(
            "select account_id, position_shared is not null as shared, "
            "report_id, report_token, active_schedules_count, explorations_count, "
            "total_views_count, recent_manual_run_creators_emails, scheduled_run_creators_emails, "
            "editors_emails from report_stats order by account_id, report_id"
        ).fetch_arrow_table()
    finally:
        cursor.close()
    account = table.column("account_id").to_numpy()
    shared = np.flatnonzero(table.column("shared").to_numpy(zero_copy_only=False))
    return ReportStats(
        table.drop_columns(["account_id", "shared"]),
        account,
        shared,
        account[shared],
    )


@dataclass
class Dims:
    """The dimensions the answers look up, as dictionaries."""

    channels: dict[int, tuple[int, bool]]
    fields: dict[int, tuple[int, str]]
    options: dict[tuple[int, Any], Any]
    states: dict[int, Any]
    users: dict[int, tuple[Any, Any]]
    organizations: dict[str, int]


def load_dims(conn: duckdb.DuckDBPyConnection) -> Dims:
    """Channels, fields, options, states, users and organizations."""
    cursor = conn.cursor()
    try:

        def rows(sql: str) -> list[tuple]:
            return cursor.execute(sql).fetchall()

        return Dims(
            {
                c: (a, d)
                for c, a, d in rows("select channel_id, account_id, is_deleted from dim_channels")
            },
            {
                f: (a, t)
                for f, a, t in rows("select field_id, account_id, field_type from dim_fields")
            },
            {(f, v): n for f, v, n in rows("select field_id, value, name from dim_field_options")},
            dict(rows("select state_id, name from dim_states")),
            {
                u: (first, last)
                for u, first, last in rows("select user_id, first_name, last_name from dim_users")
            },
            {
                u: a
                for a, u in rows(
                    "select account_id, username from dim_accounts order by account_id desc"
                )
            },
        )
    finally:
        cursor.close()


LOADERS = {
    "dims": load_dims,
    "reports": load_reports,
    "selections": load_selections,
    "images": load_images,
    "reads": load_reads,
    "deliveries": load_deliveries,
    "report_stats": load_report_stats,
}


class Index:
    """The serving index of one snapshot; each part is loaded on first use, once."""

    def __init__(self, conn: duckdb.DuckDBPyConnection) -> None:
        self._conn = conn
        self._parts: dict[str, Any] = {}
        self._locks = {name: threading.Lock() for name in LOADERS}

    def part(self, name: str) -> Any:
        """A loaded part: reports, selections, images, reads, deliveries or report_stats."""
        found = self._parts.get(name)
        if found is not None:
            return found
        with self._locks[name]:
            if name not in self._parts:
                self._parts[name] = LOADERS[name](self._conn)
            return self._parts[name]

    def warm(self) -> None:
        """Load every part now, two at a time (loading releases the GIL).

        The loaded objects are then frozen out of the garbage collector's view: they hold no
        cycles, and scanning them would pause requests for up to ~150 ms at 10M events.
        """
        with ThreadPoolExecutor(max_workers=2) as pool:
            list(pool.map(self.part, LOADERS))
        gc.freeze()
