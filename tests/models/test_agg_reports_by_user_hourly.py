"""agg_reports_by_user_hourly: reports per channel, local hour and author."""

from __future__ import annotations

from models.harness import check, ts


def report(report_id: int, channel_id: int, hour: str, user_id: int) -> dict:
    """A report fact."""
    return {
        "channel_id": channel_id,
        "hour_start": ts(hour),
        "report_id": report_id,
        "user_id": user_id,
    }


def test_reports_per_author() -> None:
    check(
        "agg_reports_by_user_hourly",
        {
            "fct_reports": [
                report(1, 8, "2016-11-07 14:00", 3),
                report(2, 8, "2016-11-07 14:00", 3),
                report(3, 8, "2016-11-07 14:00", 4),
                report(4, 8, "2016-10-07 14:00", 4),
            ]
        },
        [
            {
                "channel_id": 8,
                "hour_start": ts("2016-10-07 14:00"),
                "user_id": 4,
                "report_count": 1,
            },
            {
                "channel_id": 8,
                "hour_start": ts("2016-11-07 14:00"),
                "user_id": 3,
                "report_count": 2,
            },
            {
                "channel_id": 8,
                "hour_start": ts("2016-11-07 14:00"),
                "user_id": 4,
                "report_count": 1,
            },
        ],
    )
