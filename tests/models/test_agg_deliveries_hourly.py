"""agg_deliveries_hourly: deliveries per channel, local hour, recipient, alert and report, with
how many of them were opened."""

from __future__ import annotations

from models.harness import check, ts


def delivery(delivery_id: int, user_id: int, alert_id: int, opened: bool) -> dict:
    """A delivery fact of report 10 in channel 8, hour 14:00Z."""
    return {
        "channel_id": 8,
        "hour_start": ts("2016-11-07 14:00"),
        "delivery_id": delivery_id,
        "alert_id": alert_id,
        "report_id": 10,
        "user_id": user_id,
        "opened": opened,
    }


def test_deliveries_and_opens() -> None:
    check(
        "agg_deliveries_hourly",
        {
            "fct_deliveries": [
                delivery(1, 3, 5, True),
                delivery(2, 3, 5, False),
                delivery(3, 3, 5, True),
                delivery(4, 3, 6, False),
                delivery(5, 2, 5, False),
            ]
        },
        [
            {
                "channel_id": 8,
                "hour_start": ts("2016-11-07 14:00"),
                "user_id": 2,
                "alert_id": 5,
                "report_id": 10,
                "delivery_count": 1,
                "opened_count": 0,
            },
            {
                "channel_id": 8,
                "hour_start": ts("2016-11-07 14:00"),
                "user_id": 3,
                "alert_id": 5,
                "report_id": 10,
                "delivery_count": 3,
                "opened_count": 2,
            },
            {
                "channel_id": 8,
                "hour_start": ts("2016-11-07 14:00"),
                "user_id": 3,
                "alert_id": 6,
                "report_id": 10,
                "delivery_count": 1,
                "opened_count": 0,
            },
        ],
    )
