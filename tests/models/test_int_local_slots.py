"""int_local_slots: the local attributes of every 15-minute UTC slot that holds a current report,
or a read or delivery of one (int_reads, int_deliveries), in the report's time zone; a slot an offset change cuts is split
into parts, each with its own attributes. Expected values worked out by hand from the tz rules
(and checked against Python's zoneinfo, not DuckDB)."""

from __future__ import annotations

import random

from models.harness import check, ts, warehouse

NEW_YORK = "America/New_York"  # 2016-11-06 06:00Z: 02:00 EDT (-4) falls back to 01:00 EST (-5)
ST_JOHNS = "America/St_Johns"  # 2006-10-29 02:31Z: 00:01 NDT (-2:30) falls back to 23:01 NST


def current(report_id: int, timezone: str, created_at: str) -> dict:
    """A current report in a channel of the given zone."""
    return {"report_id": report_id, "timezone": timezone, "created_at": ts(created_at)}


def test_the_repeated_hour_of_a_fall_back_is_two_hours() -> None:
    """01:30 local happens twice on 2016-11-06 in New York: 05:30Z (EDT) and 06:30Z (EST); each
    slot is in its own hour (05:00Z and 06:00Z), on the same local day, week and month."""
    same_day = {
        "day_start": ts("2016-11-06 04:00"),  # midnight EDT
        "week_start": ts("2016-10-31 04:00"),  # Monday
        "month_start": ts("2016-11-01 04:00"),
        "local_hour": 1,
        "dow": 0,  # Sunday
    }
    check(
        "int_local_slots",
        {
            "int_current_reports": [current(1, NEW_YORK, "2016-11-06 05:30")],
            "int_reads": [
                {
                    "read_id": 1,
                    "report_id": 1,
                    "timezone": NEW_YORK,
                    "read_at": ts("2016-11-06 06:37"),
                }
            ],
            "int_deliveries": [
                {
                    "delivery_id": 1,
                    "report_id": 1,
                    "timezone": NEW_YORK,
                    "sent_at": ts("2016-11-06 05:44:59"),
                }
            ],
        },
        [
            {
                "timezone": NEW_YORK,
                "slot": ts("2016-11-06 05:30"),
                "starts_at": ts("2016-11-06 05:30"),
                "ends_at": ts("2016-11-06 05:45"),
                "hour_start": ts("2016-11-06 05:00"),
            }
            | same_day,
            {
                "timezone": NEW_YORK,
                "slot": ts("2016-11-06 06:30"),
                "starts_at": ts("2016-11-06 06:30"),
                "ends_at": ts("2016-11-06 06:45"),
                "hour_start": ts("2016-11-06 06:00"),
            }
            | same_day,
        ],
    )


def test_a_change_off_the_quarter_hour_cuts_its_slot() -> None:
    """St. John's fell back at 02:31Z: the slot 02:30Z-02:45Z is 00:00-00:00:59 NDT on Sunday the
    29th, then 23:01-23:14:59 NST on Saturday the 28th. Both parts' hours start at 02:30Z; the
    29th's first midnight is the NDT one (02:30Z)."""
    check(
        "int_local_slots",
        {"int_current_reports": [current(1, ST_JOHNS, "2006-10-29 02:40")]},
        [
            {
                "timezone": ST_JOHNS,
                "slot": ts("2006-10-29 02:30"),
                "starts_at": ts("2006-10-29 02:30"),
                "ends_at": ts("2006-10-29 02:31"),
                "hour_start": ts("2006-10-29 02:30"),
                "day_start": ts("2006-10-29 02:30"),
                "week_start": ts("2006-10-23 02:30"),
                "month_start": ts("2006-10-01 02:30"),
                "local_hour": 0,
                "dow": 0,
            },
            {
                "timezone": ST_JOHNS,
                "slot": ts("2006-10-29 02:30"),
                "starts_at": ts("2006-10-29 02:31"),
                "ends_at": ts("2006-10-29 02:45"),
                "hour_start": ts("2006-10-29 02:30"),
                "day_start": ts("2006-10-28 02:30"),
                "week_start": ts("2006-10-23 02:30"),
                "month_start": ts("2006-10-01 02:30"),
                "local_hour": 23,
                "dow": 6,
            },
        ],
    )


def test_one_slot_per_zone() -> None:
    """The same instant in two zones is two slots; reports of one zone share theirs."""
    check(
        "int_local_slots",
        {
            "int_current_reports": [
                current(1, "UTC", "2016-11-07 14:01"),
                current(2, "UTC", "2016-11-07 14:14"),
                current(3, "Asia/Kolkata", "2016-11-07 14:01"),  # +5:30
            ]
        },
        [
            {
                "timezone": "UTC",
                "slot": ts("2016-11-07 14:00"),
                "starts_at": ts("2016-11-07 14:00"),
                "ends_at": ts("2016-11-07 14:15"),
                "hour_start": ts("2016-11-07 14:00"),
                "day_start": ts("2016-11-07 00:00"),
                "week_start": ts("2016-11-07 00:00"),
                "month_start": ts("2016-11-01 00:00"),
                "local_hour": 14,
                "dow": 1,
            },
            {
                "timezone": "Asia/Kolkata",
                "slot": ts("2016-11-07 14:00"),
                "starts_at": ts("2016-11-07 14:00"),
                "ends_at": ts("2016-11-07 14:15"),
                "hour_start": ts("2016-11-07 13:30"),
                "day_start": ts("2016-11-06 18:30"),
                "week_start": ts("2016-11-06 18:30"),
                "month_start": ts("2016-10-31 18:30"),
                "local_hour": 19,
                "dow": 1,
            },
        ],
    )


def test_quarter_slot_is_the_utc_quarter_hour_from_1980_and_the_second_before() -> None:
    """quarter_slot (the macro every fact joins its slot by): from 1980 on the UTC quarter hour
    an instant is in, before it the second; checked by integer arithmetic in Python on random
    instants from year 1 to 9999 and on each side of quarter hours, seconds and 1980."""
    rng = random.Random(12)
    lo, hi = -62_135_596_800_000_000, 253_402_300_799_999_999  # years 1 and 9999
    cut = 315_532_800_000_000  # 1980-01-01
    quarter, second = 900_000_000, 1_000_000
    values = [lo, hi, cut - 1, cut, cut + 1]
    for _ in range(3000):
        us = rng.randint(lo, hi)
        edge = us - us % quarter
        values += [us, edge - 1, edge, edge + 1, us - us % second - 1]
    values = [v for v in values if lo <= v <= hi]
    conn = warehouse()
    conn.execute("set TimeZone = 'America/St_Johns'")  # the macro does not depend on it
    try:
        got = conn.execute(
            "select us, epoch_us(quarter_slot(make_timestamp(us)::timestamp at time zone 'UTC')) "
            "from unnest($values) as v(us)",
            {"values": values},
        ).fetchall()
    finally:
        conn.execute("set TimeZone = 'UTC'")
    want = {v: v - v % (quarter if v >= cut else second) for v in values}
    assert dict(got) == want
