"""stg_explorations: each exploration once; a retry keeps the copy of the smallest file, line."""

from __future__ import annotations

from models.harness import check, ts


def test_retries_keep_the_first_copy() -> None:
    check(
        "stg_explorations",
        {
            "raw_explorations": [
                {
                    "exploration_id": 1,
                    "account_id": 1,
                    "report_id": 10,
                    "user_id": 3,
                    "created_at": "2016-11-07 14:00",
                    "_file": "b",
                    "_line": 1,
                },
                {
                    "exploration_id": 1,
                    "account_id": 1,
                    "report_id": 10,
                    "user_id": 4,
                    "created_at": "2016-11-07 14:00",
                    "_file": "a",
                    "_line": 7,
                },
                {
                    "exploration_id": 2,
                    "account_id": 1,
                    "report_id": 11,
                    "user_id": 3,
                    "created_at": "2016-11-08 09:00",
                    "_file": "a",
                    "_line": 8,
                },
            ]
        },
        [
            {
                "exploration_id": 1,
                "account_id": 1,
                "report_id": 10,
                "user_id": 4,
                "created_at": ts("2016-11-07 14:00"),
            },
            {
                "exploration_id": 2,
                "account_id": 1,
                "report_id": 11,
                "user_id": 3,
                "created_at": ts("2016-11-08 09:00"),
            },
        ],
    )
