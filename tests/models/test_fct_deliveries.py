"""fct_deliveries: each attributed delivery (int_deliveries: a delivery of a current report, in
its channel and zone) with its local hour and whether it was ever opened (any number of opens is
one `opened`; an open of another delivery counts for nothing here)."""

from __future__ import annotations

from models.harness import check, ts, utc_slot


def alert(delivery_id: int, report_id: int, sent_at: str) -> dict:
    """An attributed delivery (int_deliveries) of alert 5 to user 3, in channel 8 (UTC)."""
    row = {"delivery_id": delivery_id, "alert_id": 5, "report_id": report_id, "user_id": 3}
    return row | {"channel_id": 8, "timezone": "UTC", "sent_at": ts(sent_at)}


def test_deliveries_with_opened() -> None:
    check(
        "fct_deliveries",
        {
            "int_deliveries": [
                alert(1, 10, "2016-11-07 14:10"),
                alert(2, 10, "2016-11-07 14:03"),
            ],
            "stg_alert_opens": [
                {"open_id": 1, "delivery_id": 1},
                {"open_id": 2, "delivery_id": 1},
                {"open_id": 3, "delivery_id": 3},
            ],
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
