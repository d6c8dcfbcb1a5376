"""stg_report_edits: each edit once; a retry keeps the copy of the smallest file, then line."""

from __future__ import annotations

from models.harness import check, ts


def test_retries_keep_the_first_copy() -> None:
    check(
        "stg_report_edits",
        {
            "raw_report_edits": [
                {
                    "edit_id": 1,
                    "account_id": 1,
                    "report_id": 10,
                    "user_id": 3,
                    "edited_at": "2016-11-07 14:00",
                    "_file": "a",
                    "_line": 2,
                },
                {
                    "edit_id": 1,
                    "account_id": 1,
                    "report_id": 10,
                    "user_id": 4,
                    "edited_at": "2016-11-07 14:00",
                    "_file": "a",
                    "_line": 1,
                },
                {
                    "edit_id": 2,
                    "account_id": 1,
                    "report_id": 10,
                    "user_id": 3,
                    "edited_at": "2016-11-09 10:00",
                    "_file": "a",
                    "_line": 3,
                },
            ]
        },
        [
            {
                "edit_id": 1,
                "account_id": 1,
                "report_id": 10,
                "user_id": 4,
                "edited_at": ts("2016-11-07 14:00"),
            },
            {
                "edit_id": 2,
                "account_id": 1,
                "report_id": 10,
                "user_id": 3,
                "edited_at": ts("2016-11-09 10:00"),
            },
        ],
    )
