"""stg_alerts: each delivery once; a retry keeps the copy of the smallest file, then line."""

from __future__ import annotations

from models.harness import check, ts


def alert(delivery_id: int, user_id: int, file: str, line: int) -> dict:
    """A raw alert delivery as loaded."""
    return {
        "delivery_id": delivery_id,
        "alert_id": 5,
        "account_id": 1,
        "report_id": 10,
        "user_id": user_id,
        "sent_at": "2016-11-07 14:00",
        "_file": file,
        "_line": line,
    }


def test_retries_keep_the_first_copy() -> None:
    check(
        "stg_alerts",
        {"raw_alerts": [alert(1, 7, "b", 1), alert(1, 8, "a", 3), alert(2, 9, "b", 2)]},
        [
            {
                "delivery_id": 1,
                "alert_id": 5,
                "account_id": 1,
                "report_id": 10,
                "user_id": 8,
                "sent_at": ts("2016-11-07 14:00"),
            },
            {
                "delivery_id": 2,
                "alert_id": 5,
                "account_id": 1,
                "report_id": 10,
                "user_id": 9,
                "sent_at": ts("2016-11-07 14:00"),
            },
        ],
    )
