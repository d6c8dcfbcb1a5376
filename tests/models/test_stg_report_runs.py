"""stg_report_runs: each run once; a retry keeps the copy of the smallest file, then line."""

from __future__ import annotations

from models.harness import check, ts


def test_retries_keep_the_first_copy() -> None:
    check(
        "stg_report_runs",
        {
            "raw_report_runs": [
                {
                    "run_id": 1,
                    "account_id": 1,
                    "report_id": 10,
                    "user_id": 3,
                    "run_type": "manual",
                    "ran_at": "2017-01-10 00:00",
                    "_file": "b",
                    "_line": 1,
                },
                {
                    "run_id": 1,
                    "account_id": 1,
                    "report_id": 10,
                    "user_id": 3,
                    "run_type": "scheduled",
                    "ran_at": "2017-01-10 00:00",
                    "_file": "a",
                    "_line": 1,
                },
                {
                    "run_id": 2,
                    "account_id": 1,
                    "report_id": 11,
                    "user_id": 4,
                    "run_type": "manual",
                    "ran_at": "2017-01-11 00:00",
                    "_file": "b",
                    "_line": 2,
                },
            ]
        },
        [
            {
                "run_id": 1,
                "account_id": 1,
                "report_id": 10,
                "user_id": 3,
                "run_type": "scheduled",
                "ran_at": ts("2017-01-10 00:00"),
            },
            {
                "run_id": 2,
                "account_id": 1,
                "report_id": 11,
                "user_id": 4,
                "run_type": "manual",
                "ran_at": ts("2017-01-11 00:00"),
            },
        ],
    )
