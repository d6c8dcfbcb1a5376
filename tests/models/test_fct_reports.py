"""fct_reports: each current report with the local attributes of the slot part its creation falls
in; stored by month of creation, channel, time, report."""

from __future__ import annotations

from models.harness import check, ts, utc_slot

ST_JOHNS = "America/St_Johns"


def current(report_id: int, channel_id: int, timezone: str, created_at: str) -> dict:
    """A current report."""
    return {
        "report_id": report_id,
        "user_id": 3,
        "state_id": 4,
        "created_at": ts(created_at),
        "channel_id": channel_id,
        "account_id": 1,
        "timezone": timezone,
    }


# the slot 02:30Z of 2006-10-29 in St. John's, cut at 02:31Z by the fall back (00:01 NDT -> 23:01 NST)
CUT = {"timezone": ST_JOHNS, "slot": ts("2006-10-29 02:30"), "hour_start": ts("2006-10-29 02:30")}
PARTS = [
    CUT
    | {
        "starts_at": ts("2006-10-29 02:30"),
        "ends_at": ts("2006-10-29 02:31"),
        "day_start": ts("2006-10-29 02:30"),
        "week_start": ts("2006-10-23 02:30"),
        "month_start": ts("2006-10-01 02:30"),
        "local_hour": 0,
        "dow": 0,
    },
    CUT
    | {
        "starts_at": ts("2006-10-29 02:31"),
        "ends_at": ts("2006-10-29 02:45"),
        "day_start": ts("2006-10-28 02:30"),
        "week_start": ts("2006-10-23 02:30"),
        "month_start": ts("2006-10-01 02:30"),
        "local_hour": 23,
        "dow": 6,
    },
]


def test_reports_take_their_slot_part() -> None:
    check(
        "fct_reports",
        {
            "int_current_reports": [
                current(1, 7, "UTC", "2016-11-07 14:05"),
                current(2, 7, "UTC", "2016-11-07 14:01"),
                current(3, 5, ST_JOHNS, "2006-10-29 02:30:30"),  # first part
                current(4, 5, ST_JOHNS, "2006-10-29 02:44"),  # second part
            ],
            "int_local_slots": [utc_slot("2016-11-07 14:00"), *PARTS],
        },
        [
            {
                "channel_id": 5,
                "created_at": ts("2006-10-29 02:30:30"),
                "hour_start": ts("2006-10-29 02:30"),
                "day_start": ts("2006-10-29 02:30"),
                "week_start": ts("2006-10-23 02:30"),
                "month_start": ts("2006-10-01 02:30"),
                "local_hour": 0,
                "dow": 0,
                "report_id": 3,
                "user_id": 3,
                "state_id": 4,
                "account_id": 1,
            },
            {
                "channel_id": 5,
                "created_at": ts("2006-10-29 02:44"),
                "hour_start": ts("2006-10-29 02:30"),
                "day_start": ts("2006-10-28 02:30"),
                "week_start": ts("2006-10-23 02:30"),
                "month_start": ts("2006-10-01 02:30"),
                "local_hour": 23,
                "dow": 6,
                "report_id": 4,
                "user_id": 3,
                "state_id": 4,
                "account_id": 1,
            },
            {
                "channel_id": 7,
                "created_at": ts("2016-11-07 14:01"),
                "hour_start": ts("2016-11-07 14:00"),
                "day_start": ts("2016-11-07 00:00"),
                "week_start": ts("2016-11-07 00:00"),
                "month_start": ts("2016-11-01 00:00"),
                "local_hour": 14,
                "dow": 1,
                "report_id": 2,
                "user_id": 3,
                "state_id": 4,
                "account_id": 1,
            },
            {
                "channel_id": 7,
                "created_at": ts("2016-11-07 14:05"),
                "hour_start": ts("2016-11-07 14:00"),
                "day_start": ts("2016-11-07 00:00"),
                "week_start": ts("2016-11-07 00:00"),
                "month_start": ts("2016-11-01 00:00"),
                "local_hour": 14,
                "dow": 1,
                "report_id": 1,
                "user_id": 3,
                "state_id": 4,
                "account_id": 1,
            },
        ],
    )
