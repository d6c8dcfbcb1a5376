"""fct_reads: each attributed read (int_reads: a read of a current report, in its current channel
and zone) with the local hour of the slot it falls in; stored by month, channel, time, read."""

from __future__ import annotations

from models.harness import check, ts, utc_slot

KOLKATA = "Asia/Kolkata"  # +5:30: the hour of 14:05Z starts at 13:30Z


def read(read_id: int, report_id: int, channel_id: int, timezone: str, read_at: str) -> dict:
    """An attributed read (int_reads) by user 3 of report 10, user 4 of the others."""
    user_id = 3 if report_id == 10 else 4
    return {
        "channel_id": channel_id,
        "timezone": timezone,
        "read_at": ts(read_at),
        "read_id": read_id,
        "report_id": report_id,
        "user_id": user_id,
    }


def test_reads_take_the_local_hour_of_their_slot() -> None:
    check(
        "fct_reads",
        {
            "int_reads": [
                read(1, 10, 8, "UTC", "2016-11-07 14:05"),
                read(2, 11, 7, KOLKATA, "2016-11-07 14:05"),
                read(4, 10, 8, "UTC", "2016-10-31 23:50"),
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
