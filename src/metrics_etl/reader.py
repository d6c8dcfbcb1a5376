"""The reader: answers the Analytics API v4 and report-stats API from published Parquet.

It never opens the writer's DuckDB file. Each request runs against one whole snapshot (the one
`current` pointed at when the request began), held under a shared lock so clean-up leaves it.

Exactness over any [start, end): whole local-hour buckets come from hourly rollups; the at most
two partial buckets at the edges come from the row-level facts, filtered to the microsecond.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

import duckdb

from metrics_etl.errors import UserError
from metrics_etl.publish import current_snapshot
from metrics_etl.timeparse import format_instant, parse_instant

HOUR = timedelta(hours=1)
INT_RE = re.compile(r"[+-]?\d+")
PARAM_RE = re.compile(r"\$([a-z][a-z0-9_]*)")
INT64_MAX = 2**63 - 1
WIDTHS = ("hour", "day", "week", "month")
BUCKET_COLUMN = {
    "hour": "hour_start",
    "day": "day_start",
    "week": "week_start",
    "month": "month_start",
}
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


@dataclass
class Snapshot:
    """One published snapshot opened for reading: views over its Parquet files."""

    snapshot_id: str
    folder: Path
    manifest: dict
    conn: duckdb.DuckDBPyConnection
    lease: Any
    months: dict[str, dict[str, str]]

    def files(self, table: str, start: datetime, end: datetime) -> list[str]:
        """The files of a month-partitioned table that can hold rows in [start, end)."""
        by_month = self.months[table]
        first, last = f"{start:%Y-%m}", f"{end:%Y-%m}"
        chosen = [f for month, f in by_month.items() if first <= month <= last]
        return chosen or [next(iter(by_month.values()))]  # any file: the schema, no rows

    def close(self) -> None:
        """Release the lease and the connection."""
        self.conn.close()
        self.lease.close()


def _open(warehouse: Path, folder: Path) -> Snapshot:
    """Open a snapshot folder: take a shared lease, create one view per table."""
    lease = (folder / "manifest.json").open("rb")
    fcntl.flock(lease.fileno(), fcntl.LOCK_SH)
    manifest = json.loads(lease.read())
    conn = duckdb.connect()
    conn.execute("set TimeZone = 'UTC'")
    conn.execute("set threads = 2")
    conn.execute("set parquet_metadata_cache = true")
    months: dict[str, dict[str, str]] = {}
    for table, info in manifest["tables"].items():
        paths = [str(warehouse / f) for f in info["files"]]
        listing = ", ".join("'" + p.replace("'", "''") + "'" for p in paths)
        kind = "table" if table.startswith("dim_") else "view"  # small dimensions live in memory
        conn.execute(f"create {kind} {table} as select * from read_parquet([{listing}])")
        parts = {f.split("/")[2].removeprefix("part="): str(warehouse / f) for f in info["files"]}
        if "all" not in parts and "empty" not in parts:
            months[table] = dict(sorted(parts.items()))
    return Snapshot(folder.name, folder, manifest, conn, lease, months)


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


def _param(params: dict[str, list[str]], name: str) -> str | None:
    """The last value of a query parameter, or None when absent."""
    values = params.get(name)
    return values[-1] if values else None


def parse_int(params: dict[str, list[str]], name: str, default: int | None = None) -> int:
    """A required (or defaulted) integer parameter."""
    raw = _param(params, name)
    if raw is None:
        if default is not None:
            return default
        raise bad_request(f"{name} is required (an integer)")
    if not INT_RE.fullmatch(raw.strip()) or abs(int(raw)) > INT64_MAX:
        raise bad_request(f"{name} must be an integer, got '{raw}'")
    return int(raw)


def parse_date(params: dict[str, list[str]], name: str) -> datetime:
    """A required ISO 8601 date or date-time parameter (no offset means UTC)."""
    raw = _param(params, name)
    if raw is None:
        raise bad_request(f"{name} is required (ISO 8601, e.g. 2016-11-07T00:00:00Z)")
    try:
        return parse_instant(raw.replace(" ", "+"))
    except (ValueError, OverflowError):
        raise bad_request(
            f"{name} must be an ISO 8601 date or date-time (e.g. 2016-11-07 or "
            f"2016-11-07T10:15:00Z), got '{raw}'"
        ) from None


def parse_fields(params: dict[str, list[str]], allowed: tuple[str, ...]) -> list[str]:
    """The `fields` parameter: known names in the allowed order; default the first one."""
    raw = _param(params, "fields") or ""
    names = {item.strip() for item in raw.split(",") if item.strip()}
    unknown = sorted(names - set(allowed))
    if unknown:
        raise bad_request(f"fields has unknown names {unknown}; allowed: {', '.join(allowed)}")
    return [name for name in allowed if name in names] or [allowed[0]]


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


def edge_windows(start: datetime, end: datetime) -> list[tuple[datetime, datetime]]:
    """Time windows that hold every fact whose hour bucket is only partly inside [start, end)."""
    if start + HOUR >= end - HOUR:
        return [(start, end)]
    return [(start, start + HOUR), (end - HOUR, end)]


class Reader:
    """Answers API requests from the current published snapshot."""

    def __init__(self, warehouse: Path) -> None:
        self.warehouse = Path(warehouse)
        self._lock = threading.Lock()
        self._snapshot: Snapshot | None = None

    # -- snapshots -------------------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        """The current snapshot, reopened when `current` has moved."""
        try:
            target = os.readlink(self.warehouse / "current")
        except OSError:
            target = None
        with self._lock:
            snap = self._snapshot
            if snap is not None and target is not None and Path(target).name == snap.snapshot_id:
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

    def _query(
        self, sql: str, params: dict[str, Any], window: tuple[datetime, datetime] | None = None
    ) -> list[tuple]:
        """Run a read query on a private cursor of the current snapshot.

        With a time window, month-partitioned tables are read only from the files of the
        months the window touches (the whole table otherwise).
        """
        snap = self.snapshot()
        params = dict(params)
        if window is not None:
            for table in set(re.findall(r"\bfrom ([a-z_]+)\b", sql)) & set(snap.months):
                sql = re.sub(
                    rf"\bfrom {table}\b", f"from read_parquet($files_{table}) as {table}", sql
                )
                params[f"files_{table}"] = snap.files(table, *window)
        used = set(PARAM_RE.findall(sql))
        cursor = snap.conn.cursor()
        try:
            return cursor.execute(sql, {k: v for k, v in params.items() if k in used}).fetchall()
        finally:
            cursor.close()

    def close(self) -> None:
        """Release the current snapshot."""
        with self._lock:
            if self._snapshot is not None:
                self._snapshot.close()
                self._snapshot = None

    # -- entry point -----------------------------------------------------------------------

    def get(self, path_and_query: str, account_id: int) -> tuple[int, Any]:
        """Answer a GET request as the HTTP API would: (status, JSON-ready body)."""
        try:
            return 200, self._dispatch(path_and_query, account_id)
        except ApiError as error:
            return error.status, error.body()

    def _dispatch(self, path_and_query: str, account_id: int) -> Any:
        """Route a request to its endpoint after validating its parameters."""
        url = urlsplit(path_and_query)
        params = parse_qs(url.query, keep_blank_values=True)
        parts = url.path.split("/")[1:]
        if len(parts) == 3 and parts[0] == "batch" and parts[1] and parts[2] == "report_stats":
            return self._report_stats_request(unquote(parts[1]), params, account_id)
        if len(parts) != 4 or parts[:3] != ["api", "v4", "analytics"] or parts[3] not in ANALYTICS:
            raise not_found(f"no endpoint at {url.path}; see /docs for the endpoints")
        return self._analytics_request(parts[3], params, account_id)

    def _analytics_request(
        self, endpoint: str, params: dict[str, list[str]], account_id: int
    ) -> Any:
        """Validate the common and endpoint parameters, then answer."""
        channel_id = parse_int(params, "channel_id")
        start = parse_date(params, "start_date")
        end = parse_date(params, "end_date")
        if start >= end:
            raise bad_request("start_date must be before end_date")
        if endpoint == "reports_per_field_selection":
            field_id = parse_int(params, "field_id")
            return self.reports_per_field_selection(account_id, channel_id, start, end, field_id)
        if endpoint == "reports_over_time":
            width = _param(params, "datetime_range_width")
            if width is not None and width not in WIDTHS:
                raise bad_request(
                    f"datetime_range_width must be one of {', '.join(WIDTHS)}, got '{width}'"
                )
            return self.reports_over_time(account_id, channel_id, start, end, width)
        if endpoint == "reports_read":
            fields = parse_fields(params, READ_FIELDS)
            return self.reports_read(account_id, channel_id, start, end, fields)
        if endpoint == "user_awareness":
            fields = parse_fields(params, AWARENESS_FIELDS)
            return self.user_awareness(account_id, channel_id, start, end, fields)
        method = getattr(self, endpoint)
        return method(account_id, channel_id, start, end)

    # -- lookups ---------------------------------------------------------------------------

    def _channel_account(self, account_id: int, channel_id: int) -> int:
        """The channel's account, or a 404 when it is unknown, deleted or another account's."""
        rows = self._query(
            "select account_id from dim_channels where channel_id = $c and not is_deleted",
            {"c": channel_id},
        )
        if not rows or rows[0][0] != account_id:
            raise not_found(f"channel_id {channel_id} not found")
        return int(rows[0][0])

    # -- additive counts -------------------------------------------------------------------

    def _counts(
        self,
        rollup: str,
        facts: str,
        dims: list[str],
        channel_id: int,
        start: datetime,
        end: datetime,
        where: str = "true",
        extra: dict[str, Any] | None = None,
    ) -> list[tuple]:
        """Counts per dims over [start, end): whole hours from the rollup, edges from facts."""
        cols = ", ".join(dims)
        union, params = self._edge_union(
            f"{cols}, report_count as n",
            f"{cols}, 1 as n",
            rollup,
            facts,
            "created_at",
            start,
            end,
            where,
        )
        params.update({"c": channel_id, **(extra or {})})
        return self._query(
            f"select {cols}, sum(n)::bigint as report_count from ({union}) group by all",
            params,
            (start, end),
        )

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
        rows = self._counts(
            "agg_reports_hourly", "fct_reports", [BUCKET_COLUMN[width]], channel_id, start, end
        )
        return [
            {
                "account_id": account,
                "datetime_range_start": format_instant(bucket),
                "report_count": count,
                "datetime_range_width": width,
            }
            for bucket, count in sorted(rows)
        ]

    def reports_per_user(
        self, account_id: int, channel_id: int, start: datetime, end: datetime
    ) -> list[dict]:
        """Reports per author."""
        account = self._channel_account(account_id, channel_id)
        rows = self._counts(
            "agg_reports_by_user_hourly", "fct_reports", ["user_id"], channel_id, start, end
        )
        rows.sort(key=lambda r: (-r[1], r[0]))
        return [{"user_id": u, "account_id": account, "report_count": n} for u, n in rows]

    def reports_per_state(
        self, account_id: int, channel_id: int, start: datetime, end: datetime
    ) -> list[dict]:
        """Reports per state (reports without a state are left out)."""
        account = self._channel_account(account_id, channel_id)
        rows = self._counts(
            "agg_reports_by_state_hourly",
            "fct_reports",
            ["state_id"],
            channel_id,
            start,
            end,
            where="state_id is not null",
        )
        names = self._names("dim_states", "state_id", "name", [r[0] for r in rows])
        rows.sort(key=lambda r: (-r[1], r[0]))
        return [
            {"id": s, "name": names.get(s), "account_id": account, "report_count": n}
            for s, n in rows
        ]

    def _names(self, table: str, key: str, column: str, ids: list[Any]) -> dict[Any, Any]:
        """Look up one column for a list of ids."""
        if not ids:
            return {}
        rows = self._query(
            f"select {key}, {column} from {table} where list_contains($ids, {key})", {"ids": ids}
        )
        return dict(rows)

    def reports_per_day_hour(
        self, account_id: int, channel_id: int, start: datetime, end: datetime
    ) -> list[dict]:
        """Reports per local hour of day."""
        account = self._channel_account(account_id, channel_id)
        rows = self._counts(
            "agg_reports_hourly", "fct_reports", ["local_hour"], channel_id, start, end
        )
        return [{"account_id": account, "hour": h, "report_count": n} for h, n in sorted(rows)]

    def reports_per_week_day(
        self, account_id: int, channel_id: int, start: datetime, end: datetime
    ) -> list[dict]:
        """Reports per local weekday, 0 = Sunday."""
        account = self._channel_account(account_id, channel_id)
        rows = self._counts("agg_reports_hourly", "fct_reports", ["dow"], channel_id, start, end)
        return [{"account_id": account, "dow": d, "report_count": n} for d, n in sorted(rows)]

    def reports_per_field_selection(
        self, account_id: int, channel_id: int, start: datetime, end: datetime, field_id: int
    ) -> list[dict]:
        """Reports per selected option value of a Category, DropDown or Radio field."""
        account = self._channel_account(account_id, channel_id)
        field = self._query(
            "select account_id, field_type from dim_fields where field_id = $f", {"f": field_id}
        )
        if not field or field[0][0] != account_id:
            raise not_found(f"field_id {field_id} not found")
        if field[0][1] not in SELECTABLE_FIELD_TYPES:
            raise bad_request(
                f"field_id {field_id} is a {field[0][1]} field; only "
                f"{', '.join(SELECTABLE_FIELD_TYPES)} fields are supported"
            )
        rows = self._counts(
            "agg_report_selections_hourly",
            "fct_report_selections",
            ["value"],
            channel_id,
            start,
            end,
            where="field_id = $f",
            extra={"f": field_id},
        )
        names = dict(
            self._query(
                "select value, name from dim_field_options where field_id = $f", {"f": field_id}
            )
        )
        rows.sort(key=lambda r: (-r[1], r[0]))
        return [
            {
                "field_id": field_id,
                "account_id": account,
                "name": names.get(v),
                "value": v,
                "report_count": n,
            }
            for v, n in rows
        ]

    # -- lists and distinct counts ---------------------------------------------------------

    def reports_images(
        self, account_id: int, channel_id: int, start: datetime, end: datetime
    ) -> list[dict]:
        """Images created in the range whose report is current and in the channel."""
        account = self._channel_account(account_id, channel_id)
        rows = self._query(
            "select report_image_id, report_id, created_at, thumb, medium from fct_report_images "
            "where channel_id = $c and created_at >= $s and created_at < $e "
            "order by created_at desc, report_image_id desc",
            {"c": channel_id, "s": start, "e": end},
            (start, end),
        )
        return [
            {
                "report_image_id": image_id,
                "account_id": account,
                "report_id": report_id,
                "created_at": format_instant(created_at),
                "styles": {"thumb": thumb, "medium": medium},
            }
            for image_id, report_id, created_at, thumb, medium in rows
        ]

    def _edge_union(
        self,
        rollup_cols: str,
        fact_cols: str,
        rollup: str,
        facts: str,
        time_col: str,
        start: datetime,
        end: datetime,
        where: str = "true",
    ) -> tuple[str, dict[str, Any]]:
        """SQL for whole-hour rollup rows plus partial-hour fact rows (same columns)."""
        params: dict[str, Any] = {"s": start, "e": end, "last": end - HOUR}
        parts = [
            f"select {rollup_cols} from {rollup} "
            f"where channel_id = $c and hour_start >= $s and hour_start <= $last and {where}"
        ]
        for index, (lo, hi) in enumerate(edge_windows(start, end)):
            params[f"lo{index}"], params[f"hi{index}"] = lo, hi
            parts.append(
                f"select {fact_cols} from {facts} "
                f"where channel_id = $c and {time_col} >= $lo{index} and {time_col} < $hi{index} "
                f"and not (hour_start >= $s and hour_start <= $last) and {where}"
            )
        return " union all ".join(parts), params

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
        union, params = self._edge_union(
            "report_id, user_id, read_count as n",
            "report_id, user_id, 1 as n",
            "agg_reads_hourly",
            "fct_reads",
            "read_at",
            start,
            end,
        )
        params["c"] = channel_id
        row = self._query(
            "select coalesce(sum(n), 0)::bigint, count(distinct (report_id, user_id)), "
            f"count(distinct user_id), count(distinct report_id) from ({union})",
            params,
            (start, end),
        )[0]
        values = dict(zip(READ_FIELDS, (int(v) for v in row), strict=True))
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
        union, params = self._edge_union(
            "user_id, alert_id, report_id, delivery_count as n, opened_count as o",
            "user_id, alert_id, report_id, 1 as n, opened::int as o",
            "agg_deliveries_hourly",
            "fct_deliveries",
            "sent_at",
            start,
            end,
        )
        params["c"] = channel_id
        rows = self._query(
            "select d.user_id, sum(n)::bigint, count(distinct alert_id), count(distinct report_id), "
            "sum(o)::bigint, any_value(u.first_name), any_value(u.last_name) "
            f"from ({union}) as d left join dim_users as u on d.user_id = u.user_id "
            "group by d.user_id order by 2 desc, 1",
            params,
            (start, end),
        )
        chosen = fields or ["total_alerts"]
        answer = []
        for user_id, total, unique, sources, opened, first, last in rows:
            values = dict(
                zip(
                    AWARENESS_FIELDS,
                    (int(total), int(unique), int(sources), int(opened)),
                    strict=True,
                )
            )
            row = {name: values[name] for name in chosen}
            row.update({"user_id": user_id, "first_name": first, "last_name": last})
            answer.append(row)
        return answer

    # -- report stats ----------------------------------------------------------------------

    def _report_stats_request(
        self, organization: str, params: dict[str, list[str]], account_id: int
    ) -> dict:
        """Validate report-stats parameters in order, then answer."""
        rows = self._query(
            "select account_id from dim_accounts where username = $u", {"u": organization}
        )
        if not rows or rows[0][0] != account_id:
            raise not_found(f"organization '{organization}' not found")
        include = _param(params, "include_spaces")
        if include is not None and include != "all":
            raise bad_request(f"include_spaces must be 'all' when given, got '{include}'")
        page = parse_int(params, "page", default=1)
        if page < 1:
            raise bad_request(f"page must be an integer >= 1, got '{_param(params, 'page')}'")
        per_page = parse_int(params, "per_page", default=1000)
        if not 1 <= per_page <= 1000:
            raise bad_request(
                f"per_page must be an integer from 1 to 1000, got '{_param(params, 'per_page')}'"
            )
        return self.report_stats(account_id, organization, page, per_page, include == "all")

    def report_stats(
        self,
        account_id: int,
        organization: str,
        page: int = 1,
        per_page: int = 1000,
        include_spaces: bool = False,
    ) -> dict:
        """One page of report stats, ordered by report_id, with pagination and links."""
        position = "position_all" if include_spaces else "position_shared"
        total = int(
            self._query(
                f"select count({position}) from report_stats where account_id = $a",
                {"a": account_id},
            )[0][0]
        )
        first = (page - 1) * per_page + 1
        rows = self._query(
            "select report_id, report_token, active_schedules_count, explorations_count, "
            "total_views_count, recent_manual_run_creators_emails, scheduled_run_creators_emails, "
            f"editors_emails from report_stats where account_id = $a and {position} >= $lo "
            f"and {position} < $hi order by report_id",
            {"a": account_id, "lo": first, "hi": first + per_page},
        )
        return report_stats_body(organization, page, per_page, include_spaces, total, rows)


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
        "report_stats": [dict(zip(REPORT_STAT_KEYS, row, strict=True)) for row in rows],
        "_links": {"next_page": link(page + 1), "prev_page": link(page - 1)},
    }
