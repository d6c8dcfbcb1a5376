"""int_deliveries: each alert delivery of a current report, once, with the report's current
channel and time zone; a delivery of a report that is not current is left out."""

from __future__ import annotations

from models.harness import check, ts

KOLKATA = "Asia/Kolkata"


def test_deliveries_take_their_reports_channel_and_zone() -> None:
    check(
        "int_deliveries",
        {
            "stg_alerts": [
                {
                    "delivery_id": 1,
                    "alert_id": 5,
                    "account_id": 2,
                    "report_id": 10,
                    "user_id": 3,
                    "sent_at": ts("2016-11-07 14:10"),
                },
                {
                    "delivery_id": 2,
                    "alert_id": 6,
                    "account_id": 2,
                    "report_id": 11,
                    "user_id": 4,
                    "sent_at": ts("2016-11-07 14:03"),
                },
                {
                    "delivery_id": 3,
                    "alert_id": 6,
                    "account_id": 2,
                    "report_id": 12,  # not current
                    "user_id": 4,
                    "sent_at": ts("2016-11-07 14:03"),
                },
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
                "sent_at": ts("2016-11-07 14:10"),
                "delivery_id": 1,
                "alert_id": 5,
                "report_id": 10,
                "user_id": 3,
            },
            {
                "channel_id": 7,
                "timezone": KOLKATA,
                "sent_at": ts("2016-11-07 14:03"),
                "delivery_id": 2,
                "alert_id": 6,
                "report_id": 11,
                "user_id": 4,
            },
        ],
    )
