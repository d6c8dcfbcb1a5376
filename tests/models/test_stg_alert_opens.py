"""stg_alert_opens: each open once; a retry keeps the copy of the smallest file, then line."""

from __future__ import annotations

from models.harness import check, ts


def test_retries_keep_the_first_copy() -> None:
    check(
        "stg_alert_opens",
        {
            "raw_alert_opens": [
                {
                    "open_id": 1,
                    "delivery_id": 10,
                    "account_id": 1,
                    "opened_at": "2016-11-07 14:00",
                    "_file": "a",
                    "_line": 2,
                },
                {
                    "open_id": 1,
                    "delivery_id": 11,
                    "account_id": 1,
                    "opened_at": "2016-11-07 15:00",
                    "_file": "a",
                    "_line": 1,
                },
                {
                    "open_id": 2,
                    "delivery_id": 10,
                    "account_id": 1,
                    "opened_at": "2016-11-07 16:00",
                    "_file": "b",
                    "_line": 1,
                },
            ]
        },
        [
            {"open_id": 1, "delivery_id": 11, "account_id": 1, "opened_at": ts("2016-11-07 15:00")},
            {"open_id": 2, "delivery_id": 10, "account_id": 1, "opened_at": ts("2016-11-07 16:00")},
        ],
    )
