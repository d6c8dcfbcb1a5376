"""fct_reads: each read of a current report, in the report's current channel, with the local hour
of the slot it falls in (in the report's zone); stored by month, channel, time, read."""

from __future__ import annotations

from models.harness import check, ts, utc_slot

KOLKATA = "Asia/Kolkata"  # +5:30: the hour of 14:05Z starts at 13:30Z


def test_reads_of_current_reports() -> None:
    check(
        "fct_reads",
        {
            "stg_reads": [
                {"read_id": 1, "report_id": 10, "user_id": 3, "read_at": ts("2016-11-07 14:05")},
                {"read_id": 2, "report_id": 11, "user_id": 4, "read_at": ts("2016-11-07 14:05")},
                {
                    "read_id": 3,
                    "report_id": 12,
                    "user_id": 4,
                    "read_at": ts("2016-11-07 14:05"),
                },  # not current
                {"read_id": 4, "report_id": 10, "user_id": 3, "read_at": ts("2016-10-31 23:50")},
            ],
            "int_current_reports": [
                {"report_id": 10, "channel_id": 8, "timezone": "UTC"},
                {"report_id": 11, "channel_id": 7, "timezone": KOLKATA},
            ],
            "int_local_slots": [
                utc_slot("2016-11-07 14:00"),
                utc_slot("2016-10-31 23:45"),
                {
                    "timezone": KOLKATA,
                    "slot": ts("2016-11-07 14:00"),
                    "starts_at": ts("2016-11-07 14:00"),
                    "ends_at": ts("2016-11-07 14:15"),
                    "hour_start": ts("2016-11-07 13:30"),
                },
            ],
        },
        [
            {
                "channel_id": 8,
                "read_at": ts("2016-10-31 23:50"),
                "hour_start": ts("2016-10-31 23:00"),
                "read_id": 4,
                "report_id": 10,
                "user_id": 3,
            },
            {
                "channel_id": 7,
                "read_at": ts("2016-11-07 14:05"),
                "hour_start": ts("2016-11-07 13:30"),
                "read_id": 2,
                "report_id": 11,
                "user_id": 4,
            },
            {
                "channel_id": 8,
                "read_at": ts("2016-11-07 14:05"),
                "hour_start": ts("2016-11-07 14:00"),
                "read_id": 1,
                "report_id": 10,
                "user_id": 3,
            },
        ],
    )
