"""The reader: answers the Analytics API v4 and report-stats API from published Parquet.

It never opens the writer's DuckDB file. Each request runs against one whole snapshot (the one
`current` pointed at when the request began), held under a shared lock so clean-up leaves it.

Exactness over any [start, end): whole local-hour buckets come from hourly rollups; the at most
two partial buckets at the edges come from the row-level facts, filtered to the microsecond.
"""

from __future__ import annotations

import fcntl
import functools
import json
import logging
import math
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import duckdb
import numpy as np
import pyarrow as pa

from metrics_etl.errors import UserError
from metrics_etl.publish.snapshot import current_id, current_snapshot
from metrics_etl.serve.index import (
    NO_ID,
    REPORT_STAT_KEYS,
    Codes,
    Pair,
    format_instants,
    largest_first,
    pair_key_of,
    to_us,
    totals_by,
)
from metrics_etl.serve.segments import Index

LOG = logging.getLogger(__name__)
FIRST_US = to_us(datetime(1, 1, 1, tzinfo=UTC))  # 0001-01-01T00:00:00Z, the first instant written
WIDTHS = ("hour", "day", "week", "month")
PAGE_RULE = "an integer >= 1"
PER_PAGE_RULE = "an integer from 1 to 1000"
READ_FIELDS = ("total_reads", "unique_reads", "report_readers", "reports_seen")
AWARENESS_FIELDS = ("total_alerts", "unique_alerts", "alert_source_reports", "alerts_opened")
SELECTABLE_FIELD_TYPES = ("Category", "DropDown", "Radio")
ANALYTICS = (
    "reports_over_time",
    "reports_per_field_selection",
    "reports_per_state",
    "reports_per_user",
    "reports_per_day_hour",
    "reports_per_week_day",
    "reports_images",
    "reports_read",
    "user_awareness",
)


class ApiError(Exception):
    """An error answer: HTTP status, error code and a message naming the parameter."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    def body(self) -> dict[str, str]:
        """The JSON error body."""
        return {"error": self.code, "message": self.message}


def bad_request(message: str) -> ApiError:
    """A 400 answer."""
    return ApiError(400, "bad_request", message)


def not_found(message: str) -> ApiError:
    """A 404 answer."""
    return ApiError(404, "not_found", message)


@functools.cache
def _row_builder(keys: tuple[str, ...]) -> Callable[[Iterable[tuple[Any, ...]]], list[dict]]:
    """A function turning rows into dicts with `keys`, each built by one dict display
    (`{k0: v0, k1: v1, ...}`), twice as fast as `dict(zip(keys, row))` per row. The generated
    code names the keys through variables bound to them, never their text."""
    names = [f"v{i}" for i in range(len(keys))]
    pairs = ", ".join(f"k{i}: {name}" for i, name in enumerate(names))
    unpack = "".join(f"{name}, " for name in names)
    scope: dict[str, Any] = {f"k{i}": key for i, key in enumerate(keys)}
    exec(f"def build(rows):\n    return [{{{pairs}}} for {unpack}in rows]", scope)
    return scope["build"]


def records(keys: tuple[str, ...], rows: Iterable[tuple[Any, ...]]) -> list[dict[str, Any]]:
    """Rows (each as long as `keys`) as dicts (user_awareness on a large channel's year answers
    tens of thousands)."""
    return _row_builder(tuple(keys))(rows)


class Snapshot:
    """One published snapshot opened for reading: the serving index the API answers from (its
    segments, mapped), and SQL views over its Parquet files, made on first use."""

    def __init__(self, warehouse: Path, folder: Path, manifest: dict, lease: Any) -> None:
        self.snapshot_id = folder.name
        self.folder = folder
        self.manifest = manifest
        self.lease = lease
        self.index = Index(warehouse, manifest, lambda: self.conn)
        self._conn: duckdb.DuckDBPyConnection | None = None
        self._conn_lock = threading.Lock()

    @property
    def conn(self) -> duckdb.DuckDBPyConnection:
        """A read-only DuckDB connection to the snapshot's catalog: its views over the
        snapshot's Parquet files, the same ones the DuckDB shell reads (made on first use)."""
        with self._conn_lock:
            if self._conn is None:
                conn = duckdb.connect(str(self.folder / "catalog.duckdb"), read_only=True)
                conn.execute("set TimeZone = 'UTC'")
                conn.execute("set threads = 2")
                self._conn = conn
            return self._conn

    def close(self) -> None:
        """Release the lease and the connection."""
        with self._conn_lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
        self.lease.close()


def _open(warehouse: Path, folder: Path) -> Snapshot:
    """Open a snapshot folder: take a shared lease and read its manifest."""
    lease = (folder / "manifest.json").open("rb")
    fcntl.flock(lease.fileno(), fcntl.LOCK_SH)
    return Snapshot(warehouse, folder, json.loads(lease.read()), lease)


@contextmanager
def open_snapshot(warehouse: Path) -> Iterator[Snapshot]:
    """Open the current snapshot for the duration of a block."""
    folder = current_snapshot(warehouse)
    if folder is None:
        raise UserError(f"nothing is published in {warehouse} yet; run `metrics-etl run` first")
    snap = _open(warehouse, folder)
    try:
        yield snap
    finally:
        snap.close()


def default_width(start: datetime, end: datetime) -> str:
    """Bucket width from the range length: hour, day, week or month."""
    span = end - start
    if span <= timedelta(days=2):
        return "hour"
    if span <= timedelta(days=62):
        return "day"
    if span <= timedelta(days=732):
        return "week"
    return "month"


class Reader:
    """Answers API requests from the current published snapshot."""

    def __init__(self, warehouse: Path, background: bool = False) -> None:
        self.warehouse = Path(warehouse)
        self.background = background
        self._lock = threading.Lock()
        self._snapshot: Snapshot | None = None
        self._pending: str | None = None
        self._request = threading.local()

    # -- snapshots -------------------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        """The current snapshot, reopened when `current` has moved.

        In background mode (the HTTP server), a moved `current` is loaded and warmed in a
        thread while requests go on being answered from the previous whole snapshot.
        """
        target = current_id(self.warehouse)
        with self._lock:
            snap = self._snapshot
            if snap is not None and target is not None and target == snap.snapshot_id:
                return snap
            if snap is not None and target is not None and self.background:
                if self._pending != target:
                    self._pending = target
                    threading.Thread(target=self._switch, args=(target,), daemon=True).start()
                return snap
            folder = current_snapshot(self.warehouse)
            if folder is None:
                raise ApiError(
                    503, "unavailable", "nothing is published yet; run `metrics-etl run`"
                )
            fresh = _open(self.warehouse, folder)
            if snap is not None:
                snap.close()
            self._snapshot = fresh
            return fresh

    def _switch(self, target: str) -> None:
        """Open the current snapshot and map its segments, then answer from it (background
        mode)."""
        try:
            folder = current_snapshot(self.warehouse)
            if folder is None:
                return
            fresh = _open(self.warehouse, folder)
            fresh.index.warm()
        except Exception:  # a snapshot removed under us: the next request retries
            LOG.exception("loading snapshot %s failed; will retry", target)
            with self._lock:
                self._pending = None
            return
        with self._lock:
            old, self._snapshot, self._pending = self._snapshot, fresh, None
        if old is not None:
            old.close()

    def warm(self) -> None:
        """Map the current snapshot's whole serving index now."""
        self.snapshot().index.warm()

    def prefetch(self) -> None:
        """Have the kernel read the current snapshot's segment files ahead (once per file)."""
        self.snapshot().index.prefetch()

    def close(self) -> None:
        """Release the current snapshot."""
        with self._lock:
            if self._snapshot is not None:
                self._snapshot.close()
                self._snapshot = None

    # -- requests --------------------------------------------------------------------------

    @contextmanager
    def pinned(self) -> Iterator[Snapshot]:
        """Answer everything inside the block from one whole snapshot (the current one)."""
        snap = self.snapshot()
        self._request.index = snap.index
        try:
            yield snap
        finally:
            self._request.index = None

    def get(self, path_and_query: str, account_id: int) -> tuple[int, Any]:
        """Answer a GET request as the HTTP API would: (status, JSON-ready body)."""
        from metrics_etl.serve.params import answer

        return answer(self, path_and_query, account_id)

    def organization_account(self, organization: str) -> int | None:
        """The account of an organization (by username), or None."""
        return self._part("dims").organizations.value(organization, "account_id")

    # -- lookups ---------------------------------------------------------------------------

    def _part(self, name: str, channel: int | None = None) -> Any:
        """A part of the serving index of the request's snapshot (the current one outside
        a request): dims, report_stats, or a channel part for one channel."""
        index = getattr(self._request, "index", None) or self.snapshot().index
        return index.part(name, channel)

    def _channel_account(self, account_id: int, channel_id: int) -> int:
        """The channel's account, or a 404 when it is unknown, deleted or another account's."""
        channels = self._part("dims").channels
        row = channels.row(channel_id)
        if (
            row < 0
            or channels.cols["is_deleted"][row]
            or channels.cols["account_id"][row] != account_id
        ):
            raise not_found(f"channel_id {channel_id} not found")
        return account_id

    # -- additive counts -------------------------------------------------------------------

    def _counts(
        self,
        pair: Pair,
        key: str,
        channel_id: int,
        start: datetime,
        end: datetime,
        fact_key: str | None = None,
        keep: Any = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Counts per key over [start, end), as (keys, counts) in key order: whole hours from
        the rollup, edges from facts.

        `keep`, when given, maps (key array, is_rollup) to a mask of the rows to count.
        """
        i, j, edges = pair.window(channel_id, start, end)
        keys = [pair.rollup.cols[key][i:j], pair.facts.cols[fact_key or key][edges]]
        weights = [pair.rollup.cols["n"][i:j], np.ones(len(edges), dtype=np.int64)]
        if keep is not None:
            masks = [keep(pair.rollup.cols, slice(i, j)), keep(pair.facts.cols, edges)]
            keys = [k[m] for k, m in zip(keys, masks, strict=True)]
            weights = [w[m] for w, m in zip(weights, masks, strict=True)]
        return totals_by(keys, weights)

    def reports_over_time(
        self,
        account_id: int,
        channel_id: int,
        start: datetime,
        end: datetime,
        width: str | None = None,
    ) -> list[dict]:
        """Reports per local time bucket (hour, day, week or month)."""
        account = self._channel_account(account_id, channel_id)
        width = width or default_width(start, end)
        buckets, counts = self._counts(
            self._part("reports", channel_id).pair("time"), width, channel_id, start, end
        )
        # a bucket whose local start falls before year 1 starts at 0001-01-01T00:00Z
        starts = format_instants(np.maximum(buckets.astype(np.int64), FIRST_US))  # may be int32
        return [
            {
                "account_id": account,
                "datetime_range_start": start,
                "report_count": count,
                "datetime_range_width": width,
            }
            for start, count in zip(starts, counts.tolist(), strict=True)
        ]

    def reports_per_user(
        self, account_id: int, channel_id: int, start: datetime, end: datetime
    ) -> list[dict]:
        """Reports per author."""
        account = self._channel_account(account_id, channel_id)
        users, counts = largest_first(
            *self._counts(
                self._part("reports", channel_id).pair("user"), "user_id", channel_id, start, end
            )
        )
        return [
            {"user_id": u, "account_id": account, "report_count": n}
            for u, n in zip(users, counts, strict=True)
        ]

    def reports_per_state(
        self, account_id: int, channel_id: int, start: datetime, end: datetime
    ) -> list[dict]:
        """Reports per state (reports without a state are left out)."""
        account = self._channel_account(account_id, channel_id)
        states, counts = largest_first(
            *self._counts(
                self._part("reports", channel_id).pair("state"),
                "state_id",
                channel_id,
                start,
                end,
                keep=lambda cols, rows: cols["state_id"][rows] != NO_ID,
            )
        )
        names = self._part("dims").states.values(np.array(states, dtype=np.int64), "name")
        return [
            {"id": s, "name": name, "account_id": account, "report_count": n}
            for s, name, n in zip(states, names, counts, strict=True)
        ]

    def reports_per_day_hour(
        self, account_id: int, channel_id: int, start: datetime, end: datetime
    ) -> list[dict]:
        """Reports per local hour of day."""
        account = self._channel_account(account_id, channel_id)
        hours, counts = self._counts(
            self._part("reports", channel_id).pair("time"), "local_hour", channel_id, start, end
        )
        return [
            {"account_id": account, "hour": h, "report_count": n}
            for h, n in zip(hours.tolist(), counts.tolist(), strict=True)
        ]

    def reports_per_week_day(
        self, account_id: int, channel_id: int, start: datetime, end: datetime
    ) -> list[dict]:
        """Reports per local weekday, 0 = Sunday."""
        account = self._channel_account(account_id, channel_id)
        days, counts = self._counts(
            self._part("reports", channel_id).pair("time"), "dow", channel_id, start, end
        )
        return [
            {"account_id": account, "dow": d, "report_count": n}
            for d, n in zip(days.tolist(), counts.tolist(), strict=True)
        ]

    def reports_per_field_selection(
        self, account_id: int, channel_id: int, start: datetime, end: datetime, field_id: int
    ) -> list[dict]:
        """Reports per selected option value of a Category, DropDown or Radio field."""
        account = self._channel_account(account_id, channel_id)
        dims = self._part("dims")
        row = dims.fields.row(field_id)
        if row < 0 or dims.fields.cols["account_id"][row] != account_id:
            raise not_found(f"field_id {field_id} not found")
        field_type = dims.fields.cols["field_type"][row].as_py()
        if field_type not in SELECTABLE_FIELD_TYPES:
            raise bad_request(
                f"field_id {field_id} is a {field_type} field; only "
                f"{', '.join(SELECTABLE_FIELD_TYPES)} fields are supported"
            )
        pair = self._part("selections", channel_id)
        codes, counts = self._counts(
            pair,
            "code",
            channel_id,
            start,
            end,
            keep=lambda cols, rows: cols["field_id"][rows] == field_id,
        )
        if not len(codes):
            return []
        values = pair.extra["values"].take(pa.array(codes)).to_pylist()
        names = dims.option_names(field_id)
        answer = [
            {
                "field_id": field_id,
                "account_id": account,
                "name": names.get(value),
                "value": value,
                "report_count": n,
            }
            for value, n in zip(values, counts.tolist(), strict=True)
        ]
        answer.sort(key=lambda r: (-r["report_count"], r["value"]))
        return answer

    # -- lists and distinct counts ---------------------------------------------------------

    def reports_images(
        self, account_id: int, channel_id: int, start: datetime, end: datetime
    ) -> list[dict]:
        """Images created in the range whose report is current and in the channel."""
        account = self._channel_account(account_id, channel_id)
        images = self._part("images", channel_id)
        i, j = images.span(channel_id, to_us(start), to_us(end))
        cols = images.cols
        rows = zip(
            cols["report_image_id"][i:j][::-1].tolist(),
            cols["report_id"][i:j][::-1].tolist(),
            format_instants(images.t[i:j][::-1]),
            cols["thumb"][i:j].to_pylist()[::-1],
            cols["medium"][i:j].to_pylist()[::-1],
            strict=True,
        )
        return [
            {
                "report_image_id": image_id,
                "account_id": account,
                "report_id": report_id,
                "created_at": created_at,
                "styles": {"thumb": thumb, "medium": medium},
            }
            for image_id, report_id, created_at, thumb, medium in rows
        ]

    def reports_read(
        self,
        account_id: int,
        channel_id: int,
        start: datetime,
        end: datetime,
        fields: list[str] | None = None,
    ) -> dict[str, int]:
        """Read counts over reads in the range of reports currently in the channel."""
        self._channel_account(account_id, channel_id)
        reads = self._part("reads", channel_id)
        i, j, edges = reads.pair.window(channel_id, start, end)
        facts = reads.pair.facts.cols
        edge_pairs = set(
            zip(facts["report_id"][edges].tolist(), facts["user_id"][edges].tolist(), strict=True)
        )

        def new_at_edges(codes: set[tuple[int, int]] | set[int], key: Any, index: Any) -> int:
            """Edge keys that the whole hours do not hold."""
            return sum(1 for k in codes if not index.occurs(key(k), i, j))

        def pair_code(k: tuple[int, int]) -> int:
            return pair_key_of(reads.reports, reads.users, *k)

        values = {
            "total_reads": int(reads.pair.rollup.cols["n"][i:j].sum()) + len(edges),
            "unique_reads": int(reads.by_pair.first_in(i, j).sum())
            + new_at_edges(edge_pairs, pair_code, reads.by_pair),
            "report_readers": int(reads.by_user.first_in(i, j).sum())
            + new_at_edges({u for _, u in edge_pairs}, reads.users.find, reads.by_user),
            "reports_seen": int(reads.by_report.first_in(i, j).sum())
            + new_at_edges({r for r, _ in edge_pairs}, reads.reports.find, reads.by_report),
        }
        return {name: values[name] for name in (fields or ["total_reads"])}

    def user_awareness(
        self,
        account_id: int,
        channel_id: int,
        start: datetime,
        end: datetime,
        fields: list[str] | None = None,
    ) -> list[dict]:
        """Per recipient: alert deliveries in the range of reports currently in the channel."""
        self._channel_account(account_id, channel_id)
        deliveries = self._part("deliveries", channel_id)
        i, j, edges = deliveries.pair.window(channel_id, start, end)
        if i == j and not len(edges):
            return []
        rollup = deliveries.pair.rollup.cols
        users = deliveries.users
        present, inverse = Codes.of(deliveries.user_code[i:j])
        size = len(present)
        counts = np.column_stack(
            (
                np.bincount(inverse, weights=rollup["n"][i:j], minlength=size),
                np.bincount(inverse[deliveries.by_alert.first_in(i, j)], minlength=size),
                np.bincount(inverse[deliveries.by_report.first_in(i, j)], minlength=size),
                np.bincount(inverse, weights=rollup["opened"][i:j], minlength=size),
            )
        ).astype(np.int64)
        ids = users.values[present.values].astype(np.int64)
        extra = self._awareness_edges(deliveries, edges, i, j)
        if extra:
            merged_ids, inverse = Codes.of(
                np.concatenate([ids, np.fromiter(extra, np.int64, len(extra))])
            )
            ids = merged_ids.values
            merged = np.zeros((len(ids), 4), dtype=np.int64)
            np.add.at(merged, inverse, np.vstack([counts, np.array(list(extra.values()))]))
            counts = merged
        order = np.lexsort((ids, -counts[:, 0]))
        chosen = fields or ["total_alerts"]
        columns = [counts[order, AWARENESS_FIELDS.index(name)].tolist() for name in chosen]
        ordered = ids[order]
        names = self._part("dims").users.columns(ordered, ("first_name", "last_name"))
        rows = zip(*columns, ordered.tolist(), *names, strict=True)
        keys = (*chosen, "user_id", "first_name", "last_name")
        return records(keys, rows)

    @staticmethod
    def _awareness_edges(
        deliveries: Any, edges: np.ndarray, i: int, j: int
    ) -> dict[int, list[int]]:
        """Per recipient, what the edge deliveries add: [deliveries, new alerts, new source
        reports, opened], an alert or report being new when rollup rows [i, j) lack it."""
        facts = deliveries.pair.facts.cols
        users = deliveries.users
        extra: dict[int, list[int]] = {}
        seen: set[tuple[int, str, int]] = set()
        for user, alert, report, opened in zip(
            facts["user_id"][edges].tolist(),
            facts["alert_id"][edges].tolist(),
            facts["report_id"][edges].tolist(),
            facts["opened"][edges].tolist(),
            strict=True,
        ):
            row = extra.setdefault(user, [0, 0, 0, 0])
            row[0] += 1
            row[3] += opened
            for slot, (kind, other, codes_of, index) in enumerate(
                (
                    ("alert", alert, deliveries.alerts, deliveries.by_alert),
                    ("report", report, deliveries.reports, deliveries.by_report),
                ),
                start=1,
            ):
                if (user, kind, other) in seen:
                    continue
                seen.add((user, kind, other))
                if not index.occurs(pair_key_of(users, codes_of, user, other), i, j):
                    row[slot] += 1
        return extra

    # -- report stats ----------------------------------------------------------------------

    def report_stats(
        self,
        account_id: int,
        organization: str,
        page: int = 1,
        per_page: int = 1000,
        include_spaces: bool = False,
    ) -> dict:
        """One page of report stats, ordered by report_id, with pagination and links."""
        first = (page - 1) * per_page + 1
        total, rows = self._part("report_stats").page(account_id, first, per_page, include_spaces)
        return report_stats_body(organization, page, per_page, include_spaces, total, rows)


def report_stats_body(
    organization: str, page: int, per_page: int, include_spaces: bool, total: int, rows: list[tuple]
) -> dict:
    """The report-stats answer: pagination, the page's rows, and links clamped to the pages."""
    total_pages = math.ceil(total / per_page)
    last = max(total_pages, 1)
    suffix = "&include_spaces=all" if include_spaces else ""
    base = f"/batch/{quote(organization, safe='')}/report_stats"

    def link(n: int) -> dict[str, str]:
        return {"href": f"{base}?page={min(max(n, 1), last)}&per_page={per_page}{suffix}"}

    return {
        "pagination": {
            "page": page,
            "per_page": per_page,
            "count": len(rows),
            "total_pages": total_pages,
            "total_count": total,
        },
        "report_stats": records(REPORT_STAT_KEYS, rows),
        "_links": {"next_page": link(page + 1), "prev_page": link(page - 1)},
    }
