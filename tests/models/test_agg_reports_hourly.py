"""agg_reports_hourly: reports per channel and local hour, with the hour's local attributes."""

from __future__ import annotations

from models.harness import check, ts

HOUR = {
    "day_start": ts("2016-11-07 00:00"),
    "week_start": ts("2016-11-07 00:00"),
    "month_start": ts("2016-11-01 00:00"),
    "dow": 1,
}


def report(report_id: int, channel_id: int, hour: int) -> dict:
    """A report fact in a UTC hour of 2016-11-07."""
    start = ts(f"2016-11-07 {hour:02}:00")
    return (
        {"channel_id": channel_id, "created_at": start, "hour_start": start, "local_hour": hour}
        | HOUR
        | {"report_id": report_id}
    )


def test_reports_per_channel_and_hour() -> None:
    check(
        "agg_reports_hourly",
        {"fct_reports": [report(1, 8, 14), report(2, 8, 14), report(3, 7, 15), report(4, 8, 9)]},
        [
            {
                "channel_id": 7,
                "hour_start": ts("2016-11-07 15:00"),
                "day_start": ts("2016-11-07 00:00"),
                "week_start": ts("2016-11-07 00:00"),
                "month_start": ts("2016-11-01 00:00"),
                "local_hour": 15,
                "dow": 1,
                "report_count": 1,
            },
            {
                "channel_id": 8,
                "hour_start": ts("2016-11-07 09:00"),
                "day_start": ts("2016-11-07 00:00"),
                "week_start": ts("2016-11-07 00:00"),
                "month_start": ts("2016-11-01 00:00"),
                "local_hour": 9,
                "dow": 1,
                "report_count": 1,
            },
            {
                "channel_id": 8,
                "hour_start": ts("2016-11-07 14:00"),
                "day_start": ts("2016-11-07 00:00"),
                "week_start": ts("2016-11-07 00:00"),
                "month_start": ts("2016-11-01 00:00"),
                "local_hour": 14,
                "dow": 1,
                "report_count": 2,
            },
        ],
    )


def test_an_hour_start_of_two_local_hours_is_two_rows() -> None:
    """St. John's fell back at 02:31Z (00:01 NDT -> 23:01 NST): reports at 02:30:30Z (00:00 NDT,
    Sunday the 29th) and 02:44Z (23:14 NST, Saturday the 28th) share hour_start 02:30Z but are
    in two local hours, on two local days."""
    fact = {
        "channel_id": 5,
        "hour_start": ts("2006-10-29 02:30"),
        "week_start": ts("2006-10-23 02:30"),
        "month_start": ts("2006-10-01 02:30"),
    }
    sunday = {"day_start": ts("2006-10-29 02:30"), "local_hour": 0, "dow": 0}
    saturday = {"day_start": ts("2006-10-28 02:30"), "local_hour": 23, "dow": 6}
    check(
        "agg_reports_hourly",
        {
            "fct_reports": [
                fact | sunday | {"created_at": ts("2006-10-29 02:30:30"), "report_id": 1},
                fact | saturday | {"created_at": ts("2006-10-29 02:44"), "report_id": 2},
                fact | saturday | {"created_at": ts("2006-10-29 02:40"), "report_id": 3},
            ]
        },
        [
            {
                "channel_id": 5,
                "hour_start": ts("2006-10-29 02:30"),
                "day_start": ts("2006-10-29 02:30"),
                "week_start": ts("2006-10-23 02:30"),
                "month_start": ts("2006-10-01 02:30"),
                "local_hour": 0,
                "dow": 0,
                "report_count": 1,
            },
            {
                "channel_id": 5,
                "hour_start": ts("2006-10-29 02:30"),
                "day_start": ts("2006-10-28 02:30"),
                "week_start": ts("2006-10-23 02:30"),
                "month_start": ts("2006-10-01 02:30"),
                "local_hour": 23,
                "dow": 6,
                "report_count": 2,
            },
        ],
        ordered=False,  # the two rows tie on the storage order (channel_id, hour_start)
    )
