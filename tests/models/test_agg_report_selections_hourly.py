"""agg_report_selections_hourly: reports per channel, local hour, field and value."""

from __future__ import annotations

from models.harness import check, ts


def selection(report_id: int, hour: str, field_id: int, value: str) -> dict:
    """A selection fact in channel 8."""
    return {
        "channel_id": 8,
        "hour_start": ts(hour),
        "report_id": report_id,
        "field_id": field_id,
        "value": value,
    }


def test_reports_per_field_value() -> None:
    check(
        "agg_report_selections_hourly",
        {
            "fct_report_selections": [
                selection(1, "2016-11-07 14:00", 1, "b"),
                selection(2, "2016-11-07 14:00", 1, "b"),
                selection(2, "2016-11-07 14:00", 1, "a"),
                selection(3, "2016-11-07 15:00", 1, "b"),
            ]
        },
        [
            {
                "channel_id": 8,
                "hour_start": ts("2016-11-07 14:00"),
                "field_id": 1,
                "value": "a",
                "report_count": 1,
            },
            {
                "channel_id": 8,
                "hour_start": ts("2016-11-07 14:00"),
                "field_id": 1,
                "value": "b",
                "report_count": 2,
            },
            {
                "channel_id": 8,
                "hour_start": ts("2016-11-07 15:00"),
                "field_id": 1,
                "value": "b",
                "report_count": 1,
            },
        ],
    )
