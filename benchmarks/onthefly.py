"""The usual alternative to precomputing: every API answer computed on the fly by plain DuckDB
SQL over the loaded staging tables (stg_*) of a read-only copy of the writer database.

Each method returns the same JSON-ready body as `metrics_etl.serve.reader.Reader` for a valid request,
so the two can be compared answer for answer.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import duckdb

from metrics_etl.serve.reader import AWARENESS_FIELDS, READ_FIELDS, default_width, report_stats_body
from metrics_etl.timeparse import format_instant, parse_instant

# The channel (if it is the caller's and not deleted) and its time zone.
CHANNEL = """
    select ch.channel_id, ch.account_id, coalesce(a.timezone, 'UTC') as tz
    from stg_channels as ch
    left join stg_accounts as a on ch.account_id = a.account_id
    where ch.channel_id = $c and not ch.is_deleted and ch.account_id = $a
"""

# Current, not deleted reports of that channel (the report set R).
REPORTS = f"""
    ch as ({CHANNEL}),
    r as (
        select r.report_id, r.user_id, r.state_id, r.created_at, r.selections, ch.account_id, ch.tz
        from stg_reports as r
        inner join ch on r.channel_id = ch.channel_id
        where not r.is_deleted
    )
"""

BUCKET = {
    "hour": "created_at - (timezone(tz, created_at) - date_trunc('hour', timezone(tz, created_at)))",
    "day": "timezone(tz, date_trunc('day', timezone(tz, created_at)))",
    "week": "timezone(tz, date_trunc('week', timezone(tz, created_at)))",
    "month": "timezone(tz, date_trunc('month', timezone(tz, created_at)))",
}

IN_RANGE = "created_at >= $s and created_at < $e"


class OnTheFly:
    """Answers valid API requests straight from the staging tables."""

    def __init__(self, database: Path, as_of: str, threads: int = 2) -> None:
        self.conn = duckdb.connect(str(database), read_only=True)
        self.conn.execute("set TimeZone = 'UTC'")
        self.conn.execute(f"set threads = {threads}")
        self.as_of = as_of

    def close(self) -> None:
        self.conn.close()

    def q(self, sql: str, params: dict[str, Any]) -> list[tuple]:
        cursor = self.conn.cursor()
        try:
            return cursor.execute(sql, params).fetchall()
        finally:
            cursor.close()

    # -- entry point (valid requests only) -------------------------------------------------

    def get(self, path_and_query: str, account_id: int) -> tuple[int, Any]:
        url = urlsplit(path_and_query)
        params = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        parts = url.path.split("/")[1:]
        if parts[0] == "batch":
            return 200, self.report_stats(
                account_id,
                unquote(parts[1]),
                int(params.get("page", 1)),
                int(params.get("per_page", 1000)),
                params.get("include_spaces") == "all",
            )
        endpoint = parts[3]
        c = int(params["channel_id"])
        s = parse_instant(params["start_date"].replace(" ", "+"))
        e = parse_instant(params["end_date"].replace(" ", "+"))
        if not self.q(CHANNEL, {"c": c, "a": account_id}):
            return 404, {"error": "not_found"}
        if endpoint == "reports_over_time":
            return 200, self.reports_over_time(
                account_id, c, s, e, params.get("datetime_range_width")
            )
        if endpoint == "reports_per_field_selection":
            return 200, self.reports_per_field_selection(
                account_id, c, s, e, int(params["field_id"])
            )
        if endpoint in ("reports_read", "user_awareness"):
            allowed = READ_FIELDS if endpoint == "reports_read" else AWARENESS_FIELDS
            names = {i.strip() for i in (params.get("fields") or "").split(",") if i.strip()}
            fields = [n for n in allowed if n in names] or [allowed[0]]
            return 200, getattr(self, endpoint)(account_id, c, s, e, fields)
        return 200, getattr(self, endpoint)(account_id, c, s, e)

    # -- analytics ---------------------------------------------------------------------------

    def _p(self, a: int, c: int, s: datetime, e: datetime, **extra: Any) -> dict[str, Any]:
        return {"a": a, "c": c, "s": s, "e": e, **extra}

    def reports_over_time(
        self, a: int, c: int, s: datetime, e: datetime, width: str | None
    ) -> list[dict]:
        width = width or default_width(s, e)
        rows = self.q(
            f"with {REPORTS} select {BUCKET[width]} as b, count(*) from r where {IN_RANGE} group by b",
            self._p(a, c, s, e),
        )
        return [
            {
                "account_id": a,
                "datetime_range_start": format_instant(b),
                "report_count": n,
                "datetime_range_width": width,
            }
            for b, n in sorted(rows)
        ]

    def reports_per_user(self, a: int, c: int, s: datetime, e: datetime) -> list[dict]:
        rows = self.q(
            f"with {REPORTS} select user_id, count(*) from r where {IN_RANGE} group by user_id",
            self._p(a, c, s, e),
        )
        rows.sort(key=lambda r: (-r[1], r[0]))
        return [{"user_id": u, "account_id": a, "report_count": n} for u, n in rows]

    def reports_per_state(self, a: int, c: int, s: datetime, e: datetime) -> list[dict]:
        rows = self.q(
            f"with {REPORTS}, n as (select state_id, count(*) as n from r "
            f"where {IN_RANGE} and state_id is not null group by state_id) "
            "select n.state_id, st.name, n.n from n left join stg_states as st on n.state_id = st.state_id",
            self._p(a, c, s, e),
        )
        rows.sort(key=lambda r: (-r[2], r[0]))
        return [{"id": i, "name": name, "account_id": a, "report_count": n} for i, name, n in rows]

    def reports_per_day_hour(self, a: int, c: int, s: datetime, e: datetime) -> list[dict]:
        rows = self.q(
            f"with {REPORTS} select hour(timezone(tz, created_at)) as h, count(*) from r "
            f"where {IN_RANGE} group by h",
            self._p(a, c, s, e),
        )
        return [{"account_id": a, "hour": h, "report_count": n} for h, n in sorted(rows)]

    def reports_per_week_day(self, a: int, c: int, s: datetime, e: datetime) -> list[dict]:
        rows = self.q(
            f"with {REPORTS} select dayofweek(timezone(tz, created_at)) as d, count(*) from r "
            f"where {IN_RANGE} group by d",
            self._p(a, c, s, e),
        )
        return [{"account_id": a, "dow": d, "report_count": n} for d, n in sorted(rows)]

    def reports_per_field_selection(
        self, a: int, c: int, s: datetime, e: datetime, f: int
    ) -> list[dict]:
        rows = self.q(
            f"""with {REPORTS},
            sel as (
                select report_id, unnest(selections) as x from r
                where {IN_RANGE} and selections is not null
            ),
            pairs as (select distinct report_id, x.value as value from sel where x.field_id = $f),
            counts as (select value, count(*) as n from pairs group by value),
            options as (
                select unnest(options) as o, generate_subscripts(options, 1) as p
                from stg_fields where field_id = $f and options is not null
            ),
            names as (
                select o.value as value, o.name as name from options
                qualify row_number() over (partition by o.value order by p) = 1
            )
            select counts.value, names.name, counts.n
            from counts left join names on counts.value = names.value""",
            self._p(a, c, s, e, f=f),
        )
        rows.sort(key=lambda r: (-r[2], r[0]))
        return [
            {"field_id": f, "account_id": a, "name": name, "value": v, "report_count": n}
            for v, name, n in rows
        ]

    def reports_images(self, a: int, c: int, s: datetime, e: datetime) -> list[dict]:
        rows = self.q(
            f"""with {REPORTS}
            select i.report_image_id, i.report_id, i.created_at, i.styles.thumb, i.styles.medium
            from stg_report_images as i inner join r on i.report_id = r.report_id
            where not i.is_deleted and i.created_at >= $s and i.created_at < $e
            order by i.created_at desc, i.report_image_id desc""",
            self._p(a, c, s, e),
        )
        return [
            {
                "report_image_id": i,
                "account_id": a,
                "report_id": rid,
                "created_at": format_instant(t),
                "styles": {"thumb": th, "medium": md},
            }
            for i, rid, t, th, md in rows
        ]

    def reports_read(
        self, a: int, c: int, s: datetime, e: datetime, fields: list[str]
    ) -> dict[str, int]:
        row = self.q(
            f"""with {REPORTS}
            select count(*), count(distinct (rd.report_id, rd.user_id)), count(distinct rd.user_id),
                count(distinct rd.report_id)
            from stg_reads as rd inner join r on rd.report_id = r.report_id
            where rd.read_at >= $s and rd.read_at < $e""",
            self._p(a, c, s, e),
        )[0]
        values = dict(zip(READ_FIELDS, (int(v) for v in row), strict=True))
        return {name: values[name] for name in fields}

    def user_awareness(
        self, a: int, c: int, s: datetime, e: datetime, fields: list[str]
    ) -> list[dict]:
        rows = self.q(
            f"""with {REPORTS},
            d as (
                select al.delivery_id, al.alert_id, al.report_id, al.user_id
                from stg_alerts as al inner join r on al.report_id = r.report_id
                where al.sent_at >= $s and al.sent_at < $e
            ),
            opened as (
                select distinct delivery_id from stg_alert_opens
                where delivery_id in (select delivery_id from d)
            )
            select d.user_id, count(*), count(distinct d.alert_id), count(distinct d.report_id),
                count(opened.delivery_id), any_value(u.first_name), any_value(u.last_name)
            from d
            left join opened on d.delivery_id = opened.delivery_id
            left join stg_users as u on d.user_id = u.user_id
            group by d.user_id order by 2 desc, 1""",
            self._p(a, c, s, e),
        )
        answer = []
        for user_id, total, unique, sources, opened, first, last in rows:
            values = dict(
                zip(
                    AWARENESS_FIELDS,
                    (int(total), int(unique), int(sources), int(opened)),
                    strict=True,
                )
            )
            row: dict[str, Any] = {name: values[name] for name in fields}
            row.update({"user_id": user_id, "first_name": first, "last_name": last})
            answer.append(row)
        return answer

    # -- report stats ------------------------------------------------------------------------

    def report_stats(
        self, a: int, organization: str, page: int, per_page: int, include_spaces: bool
    ) -> dict:
        position = "position_all" if include_spaces else "position_shared"
        first = (page - 1) * per_page + 1
        rows = self.q(
            f"""
            with reports as (
                select r.report_id, r.token, r.user_id, ch.personal
                from stg_reports as r
                inner join stg_channels as ch on r.channel_id = ch.channel_id
                where not r.is_deleted and not ch.is_deleted and ch.account_id = $a
            ),
            ranked as (
                select *,
                    row_number() over (order by report_id) as position_all,
                    case when not personal then row_number() over (
                        partition by personal order by report_id) end as position_shared
                from reports
            ),
            counted as (select *, count({position}) over () as total from ranked),
            page as (select * from counted where {position} >= $lo and {position} < $hi),
            users as (select user_id, email from stg_users where email is not null)
            select
                page.report_id, page.token,
                (select count(*) from stg_schedules as x
                    where x.report_id = page.report_id and not x.is_deleted and not x.paused),
                (select count(*) from stg_explorations as x where x.report_id = page.report_id),
                (select count(*) from stg_reads as x where x.report_id = page.report_id),
                coalesce((select list_sort(list_distinct(list(u.email))) from stg_report_runs as x
                    inner join users as u on x.user_id = u.user_id
                    where x.report_id = page.report_id and x.run_type = 'manual'
                    and x.ran_at >= $as_of::timestamptz - interval 30 days
                    and x.ran_at < $as_of::timestamptz), []),
                coalesce((select list_sort(list_distinct(list(u.email))) from stg_report_runs as x
                    inner join users as u on x.user_id = u.user_id
                    where x.report_id = page.report_id and x.run_type = 'scheduled'), []),
                coalesce((select list_sort(list_distinct(list(u.email))) from (
                    select page.user_id as user_id
                    union select x.user_id from stg_report_edits as x where x.report_id = page.report_id
                ) as ed inner join users as u on ed.user_id = u.user_id), []),
                page.total
            from page
            order by page.report_id
            """,
            {"a": a, "lo": first, "hi": first + per_page, "as_of": self.as_of},
        )
        if rows:
            total = int(rows[0][-1])
        else:
            total = int(
                self.q(
                    "select count(*) from stg_reports as r inner join stg_channels as ch "
                    "on r.channel_id = ch.channel_id where not r.is_deleted and not ch.is_deleted "
                    f"and ch.account_id = $a {'' if include_spaces else 'and not ch.personal'}",
                    {"a": a},
                )[0][0]
            )
        page_rows = [row[:-1] for row in rows]
        return report_stats_body(organization, page, per_page, include_spaces, total, page_rows)
