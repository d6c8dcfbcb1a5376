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
