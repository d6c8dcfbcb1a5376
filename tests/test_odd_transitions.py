"""Local attributes right after UTC-offset changes that are not on a quarter hour.

St. John's changed at 00:01 local, 03:31Z or 02:31Z, from 1987 to 2011; Antarctica/Casey at
16:01Z in 2020-2022. Events in the minutes after such a change have the local hour, day and
weekday of the new offset; every answer over ranges around them equals the reference (computed
per event with zoneinfo), in a full build and in incremental runs. St. John's 2006 and Havana
2016 fall back over midnight, which repeats: the day starts at its first instant (fold=0).
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from pathlib import Path
from urllib.parse import quote

import pytest

from conftest import build
from metrics_etl.serve.reader import ANALYTICS, Reader
from rawkit import T0, base_world, jsonl, report
from reference import Reference
from snapshots import assert_same_tables

UTC = dt.UTC
AS_OF = dt.datetime(2023, 1, 1, tzinfo=UTC)
# account -> zone; its channel is 10 + account
ZONES = {3: "America/St_Johns", 4: "Antarctica/Casey", 5: "America/Havana"}
CHANGES = [
    # St. John's falls back from Sunday 00:01 NDT to Saturday 23:01 NST (2006-10-28)
    (3, dt.datetime(2006, 10, 29, 2, 31, tzinfo=UTC)),
    # St. John's springs forward from 00:01 NST to 01:01 NDT
    (3, dt.datetime(2007, 3, 11, 3, 31, tzinfo=UTC)),
    # Casey goes from +08 to +11: Sunday 00:01 becomes 03:01
    (4, dt.datetime(2020, 10, 3, 16, 1, tzinfo=UTC)),
    # Havana falls back from 01:00 CDT to 00:00 CST on a quarter hour: its midnight repeats too
    (5, dt.datetime(2016, 11, 6, 5, 0, tzinfo=UTC)),
]
# seconds from the change at which events happen: before it in its quarter hour, at it, after
# it in the same quarter hour and the next ones
STEPS = [-1860, -61, -60, -0.000001, 0, 1, 59.5, 299, 839.999999, 840, 3600]


def events(account: int, change: dt.datetime, first_id: int) -> tuple[list, list, list]:
    """Reports, reads and alert deliveries of one account at every step around a change."""
    reports, reads, alerts = [], [], []
    for n, step in enumerate(STEPS):
        at = (change + dt.timedelta(seconds=step)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        rid = first_id + n
        reports.append(
            report(
                rid,
                at,
                updated_at=at,
                account_id=account,
                channel_id=10 + account,
                user_id=3 + n % 3,
                state_id=1 if n % 2 else None,
                selections=[{"field_id": 10 + account, "value": "a" if n % 3 else "b"}],
            )
        )
        reads.append(
            {
                "read_id": rid,
                "account_id": account,
                "report_id": rid,
                "user_id": 3 + n % 2,
                "read_at": at,
            }
        )
        alerts.append(
            {
                "delivery_id": rid,
                "alert_id": n % 2,
                "account_id": account,
                "report_id": rid - n % 2,
                "user_id": 3 + n % 3,
                "sent_at": at,
            }
        )
    return reports, reads, alerts


def odd_world(raw: Path, part: int | None = None) -> None:
    """Base world plus a St. John's and a Casey account with events around CHANGES. Part 0 is
    the world with the events of every other step, part 1 the events of the other steps only."""
    if part != 1:
        dimensions(raw)
    for index, (account, change) in enumerate(CHANGES):
        reports, reads, alerts = events(account, change, 1000 * (index + 1))
        for half in (0, 1) if part is None else (part,):
            name = f"{index}-{half}.jsonl"
            jsonl(raw / "reports" / name, reports[half::2])
            jsonl(raw / "reads" / name, reads[half::2])
            jsonl(raw / "alerts" / name, alerts[half::2])
        if part != 1:
            opens = [
                {
                    "open_id": a["delivery_id"],
                    "delivery_id": a["delivery_id"],
                    "account_id": account,
                    "opened_at": a["sent_at"],
                }
                for a in alerts[::3]
            ]
            jsonl(raw / f"alert_opens/{index}.jsonl", opens)


def dimensions(raw: Path) -> None:
    """Base world plus the St. John's and Casey accounts, a channel and a field of each."""
    base_world(raw)
    jsonl(
        raw / "accounts/odd.jsonl",
        [
            {"account_id": a, "username": f"z{a}", "name": zone, "timezone": zone, "updated_at": T0}
            for a, zone in ZONES.items()
        ],
    )
    jsonl(
        raw / "channels/odd.jsonl",
        [{"channel_id": 10 + a, "account_id": a, "name": f"c{a}", "updated_at": T0} for a in ZONES],
    )
    options = [{"value": "a", "name": "A"}, {"value": "b", "name": "B"}]
    jsonl(
        raw / "fields/odd.jsonl",
        [
            {
                "field_id": 10 + a,
                "account_id": a,
                "field_type": "Radio",
                "label": "R",
                "options": options,
                "updated_at": T0,
            }
            for a in ZONES
        ],
    )


def iso(t: dt.datetime) -> str:
    """An instant as ISO 8601 UTC with microseconds."""
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def ranges(change: dt.datetime) -> list[tuple[str, str]]:
    """Ranges around a change: its quarter hour and parts of it, whole hours, days, months."""
    quarter = change.replace(minute=change.minute // 15 * 15, second=0)
    hour = change.replace(minute=0, second=0)
    s, m, h, d = (dt.timedelta(**{k: 1}) for k in ("seconds", "minutes", "hours", "days"))
    spans = [
        (quarter, quarter + 15 * m),
        (change - dt.timedelta(microseconds=1), change + 14 * m),
        (change, change + s),
        (change + s, change + 20 * m),
        (quarter - 30 * m, quarter + 45 * m),
        (hour - h, hour + 3 * h),
        (change - d, change + d),
        (change.replace(hour=0, minute=0) - 3 * d, change.replace(hour=0, minute=0) + 4 * d),
        (change - 40 * d, change + 40 * d),
    ]
    return [(iso(a), iso(b)) for a, b in spans]


def requests() -> list[tuple[str, int]]:
    """Every analytics endpoint, with its widths and fields, over every range of every change."""
    out = []
    for account, change in CHANGES:
        for start, end in ranges(change):
            for endpoint in ANALYTICS:
                for extra in extras(endpoint, account):
                    path = (
                        f"/api/v4/analytics/{endpoint}?channel_id={10 + account}"
                        f"&start_date={quote(start)}&end_date={quote(end)}{extra}"
                    )
                    out.append((path, account))
    return out


def extras(endpoint: str, account: int) -> list[str]:
    """The endpoint's own parameters worth varying."""
    if endpoint == "reports_over_time":
        return ["", *(f"&datetime_range_width={w}" for w in ("hour", "day", "week", "month"))]
    if endpoint == "reports_per_field_selection":
        return [f"&field_id={10 + account}"]
    if endpoint == "reports_read":
        return ["&fields=total_reads,unique_reads,report_readers,reports_seen"]
    if endpoint == "user_awareness":
        return ["&fields=total_alerts,unique_alerts,alert_source_reports,alerts_opened"]
    return [""]


def differences(warehouse: Path, ref: Reference) -> list[tuple[str, object, object]]:
    """The requests whose answer differs from the reference's, with both answers."""
    reader = Reader(warehouse)
    try:
        out = []
        for path, account in requests():
            want, got = ref.get(path, account), reader.get(path, account)
            if want != got:
                out.append((path, want, got))
        return out
    finally:
        reader.close()


@pytest.fixture(scope="module")
def full(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Reference]:
    """The raw folder with every event, its warehouse (one full build) and the reference."""
    root = tmp_path_factory.mktemp("odd")
    raw, wh = root / "raw", root / "wh"
    odd_world(raw)
    summary = build(raw, wh, AS_OF)
    assert summary.status == "published", summary.message
    assert all(s["rejected"] == 0 for s in summary.streams.values()), summary.streams
    return raw, wh, Reference(raw, AS_OF)


def test_the_reference_sees_the_changes_at_one_minute_past_the_quarter() -> None:
    """The data is what it claims: local time jumps at the change, not at its quarter hour."""
    for account, change in CHANGES:
        zone = zoneinfo.ZoneInfo(ZONES[account])
        before = (change - dt.timedelta(microseconds=1)).astimezone(zone)
        after = change.astimezone(zone)
        assert change.minute % 15 == (0 if account == 5 else 1)
        assert before.utcoffset() != after.utcoffset()
        assert before.replace(tzinfo=None) + dt.timedelta(microseconds=1) != after.replace(
            tzinfo=None
        )


def test_every_answer_around_the_changes_equals_reference(full) -> None:
    _, wh, ref = full
    diff = differences(wh, ref)
    assert not diff, f"{len(diff)} of {len(requests())} differ, e.g. {diff[:2]}"
    nonempty = sum(1 for p, a in requests() if (r := ref.get(p, a))[0] == 200 and r[1])
    assert nonempty > len(requests()) // 2  # not a comparison of empty answers


def test_minutes_after_the_fall_back_are_saturday_23h(full) -> None:
    """2006-10-29 02:30-02:45Z in St. John's: 02:30:00-02:30:59 is Sunday 00:00 NDT, from
    02:31Z it is Saturday 23:01 NST."""
    _, wh, _ = full
    reader = Reader(wh)
    try:
        span = "&start_date=2006-10-29T02:30:00Z&end_date=2006-10-29T02:45:00Z"
        hours = reader.get(f"/api/v4/analytics/reports_per_day_hour?channel_id=13{span}", 3)
        days = reader.get(f"/api/v4/analytics/reports_per_week_day?channel_id=13{span}", 3)
    finally:
        reader.close()
    # at 02:30:00, 02:30:59.999999 (Sunday 0h); 02:31:00, :01, :59.5, 02:35:59, 02:44:59.999999
    assert hours == (
        200,
        [
            {"account_id": 3, "hour": 0, "report_count": 2},
            {"account_id": 3, "hour": 23, "report_count": 5},
        ],
    )
    assert sorted((r["dow"], r["report_count"]) for r in days[1]) == [(0, 2), (6, 5)]


def test_incremental_runs_equal_the_full_build(full, tmp_path: Path) -> None:
    """Half of the events first, the other half (same slots, other side of the cut) later."""
    _, wh_full, ref = full
    raw, wh = tmp_path / "raw", tmp_path / "wh"
    odd_world(raw / "1", part=0)
    assert build(raw / "1", wh, AS_OF).status == "published"
    odd_world(raw / "2", part=1)
    second = build(raw / "2", wh, AS_OF)
    assert second.status == "published"
    assert second.transform_mode == "incremental"
    assert_same_tables(wh, wh_full)
    assert not differences(wh, ref)
