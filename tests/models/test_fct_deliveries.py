"""fct_deliveries: each alert delivery of a current report, in the report's channel, with its
local hour and whether it was ever opened (any number of opens is one `opened`)."""

from __future__ import annotations

from models.harness import check, ts, utc_slot


def alert(delivery_id: int, report_id: int, sent_at: str) -> dict:
    """A staged delivery of alert 5 to user 3."""
    row = {"delivery_id": delivery_id, "alert_id": 5, "report_id": report_id, "user_id": 3}
    return row | {"sent_at": ts(sent_at)}


def test_deliveries_with_opened() -> None:
    check(
        "fct_deliveries",
        {
            "stg_alerts": [
                alert(1, 10, "2016-11-07 14:10"),
                alert(2, 10, "2016-11-07 14:03"),
                alert(3, 12, "2016-11-07 14:03"),  # report not current
            ],
            "stg_alert_opens": [
                {"open_id": 1, "delivery_id": 1},
                {"open_id": 2, "delivery_id": 1},
                {"open_id": 3, "delivery_id": 3},
            ],
            "int_current_reports": [{"report_id": 10, "channel_id": 8, "timezone": "UTC"}],
            "int_local_slots": [utc_slot("2016-11-07 14:00")],
        },
        [
            {
                "channel_id": 8,
                "sent_at": ts("2016-11-07 14:03"),
                "hour_start": ts("2016-11-07 14:00"),
                "delivery_id": 2,
                "alert_id": 5,
                "report_id": 10,
                "user_id": 3,
                "opened": False,
            },
            {
                "channel_id": 8,
                "sent_at": ts("2016-11-07 14:10"),
                "hour_start": ts("2016-11-07 14:00"),
                "delivery_id": 1,
                "alert_id": 5,
                "report_id": 10,
                "user_id": 3,
                "opened": True,
            },
        ],
    )
