"""agg_reads_hourly: reads per channel, local hour, report and reader."""

from __future__ import annotations

from models.harness import check, ts


def read(read_id: int, channel_id: int, hour: str, report_id: int, user_id: int) -> dict:
    """A read fact."""
    return {
        "channel_id": channel_id,
        "hour_start": ts(hour),
        "read_id": read_id,
        "report_id": report_id,
        "user_id": user_id,
    }


def test_reads_per_report_and_reader() -> None:
    check(
        "agg_reads_hourly",
        {
            "fct_reads": [
                read(1, 8, "2016-11-07 14:00", 10, 3),
                read(2, 8, "2016-11-07 14:00", 10, 3),
                read(3, 8, "2016-11-07 14:00", 10, 4),
                read(4, 8, "2016-11-07 14:00", 11, 3),
                read(5, 7, "2016-11-07 15:00", 10, 3),
            ]
        },
        [
            {
                "channel_id": 7,
                "hour_start": ts("2016-11-07 15:00"),
                "report_id": 10,
                "user_id": 3,
                "read_count": 1,
            },
            {
                "channel_id": 8,
                "hour_start": ts("2016-11-07 14:00"),
                "report_id": 10,
                "user_id": 3,
                "read_count": 2,
            },
            {
                "channel_id": 8,
                "hour_start": ts("2016-11-07 14:00"),
                "report_id": 10,
                "user_id": 4,
                "read_count": 1,
            },
            {
                "channel_id": 8,
                "hour_start": ts("2016-11-07 14:00"),
                "report_id": 11,
                "user_id": 3,
                "read_count": 1,
            },
        ],
    )
