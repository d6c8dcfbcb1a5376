"""int_reads: each read of a current report, once, with the report's current channel and time
zone; a read of a report that is not current is left out."""

from __future__ import annotations

from models.harness import check, ts

KOLKATA = "Asia/Kolkata"


def test_reads_take_their_reports_channel_and_zone() -> None:
    check(
        "int_reads",
        {
            "stg_reads": [
                {"read_id": 1, "report_id": 10, "user_id": 3, "read_at": ts("2016-11-07 14:05")},
                {"read_id": 2, "report_id": 11, "user_id": 4, "read_at": ts("2016-11-07 14:05")},
                {"read_id": 3, "report_id": 12, "user_id": 4, "read_at": ts("2016-11-07 14:05")},
                {"read_id": 4, "report_id": 10, "user_id": 5, "read_at": ts("2016-10-31 23:50")},
            ],
            "int_current_reports": [
                {"report_id": 10, "channel_id": 8, "timezone": "UTC"},
                {"report_id": 11, "channel_id": 7, "timezone": KOLKATA},
            ],
        },
        [
            {
                "channel_id": 8,
                "timezone": "UTC",
                "read_at": ts("2016-11-07 14:05"),
                "read_id": 1,
                "report_id": 10,
                "user_id": 3,
            },
            {
                "channel_id": 7,
                "timezone": KOLKATA,
                "read_at": ts("2016-11-07 14:05"),
                "read_id": 2,
                "report_id": 11,
                "user_id": 4,
            },
            {
                "channel_id": 8,
                "timezone": "UTC",
                "read_at": ts("2016-10-31 23:50"),
                "read_id": 4,
                "report_id": 10,
                "user_id": 5,
            },
        ],
    )
