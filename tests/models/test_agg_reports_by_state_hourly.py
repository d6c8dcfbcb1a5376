"""agg_reports_by_state_hourly: reports per channel, local hour and state; reports without a
state are left out."""

from __future__ import annotations

from models.harness import check, ts


def report(report_id: int, hour: str, state_id: int | None) -> dict:
    """A report fact in channel 8."""
    return {"channel_id": 8, "hour_start": ts(hour), "report_id": report_id, "state_id": state_id}


def test_reports_per_state() -> None:
    check(
        "agg_reports_by_state_hourly",
        {
            "fct_reports": [
                report(1, "2016-11-07 14:00", 2),
                report(2, "2016-11-07 14:00", 1),
                report(3, "2016-11-07 14:00", 2),
                report(4, "2016-11-07 14:00", None),
            ]
        },
        [
            {
                "channel_id": 8,
                "hour_start": ts("2016-11-07 14:00"),
                "state_id": 1,
                "report_count": 1,
            },
            {
                "channel_id": 8,
                "hour_start": ts("2016-11-07 14:00"),
                "state_id": 2,
                "report_count": 2,
            },
        ],
    )
