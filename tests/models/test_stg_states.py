"""stg_states: the latest version of each state wins (ties: smallest file, then line)."""

from __future__ import annotations

from models.harness import check, ts


def test_latest_version_wins() -> None:
    check(
        "stg_states",
        {
            "raw_states": [
                {
                    "state_id": 1,
                    "account_id": 1,
                    "name": "Open",
                    "updated_at": "2016-01-01 00:00",
                    "_file": "a",
                    "_line": 1,
                },
                {
                    "state_id": 1,
                    "account_id": 1,
                    "name": "Opened",
                    "updated_at": "2016-01-02 00:00",
                    "_file": "a",
                    "_line": 2,
                },
                {
                    "state_id": 2,
                    "account_id": 1,
                    "name": "Closed (b)",
                    "updated_at": "2016-01-01 00:00",
                    "_file": "b",
                    "_line": 1,
                },
                {
                    "state_id": 2,
                    "account_id": 1,
                    "name": "Closed (a)",
                    "updated_at": "2016-01-01 00:00",
                    "_file": "a",
                    "_line": 3,
                },
            ]
        },
        [
            {
                "state_id": 1,
                "account_id": 1,
                "name": "Opened",
                "updated_at": ts("2016-01-02 00:00"),
            },
            {
                "state_id": 2,
                "account_id": 1,
                "name": "Closed (a)",
                "updated_at": ts("2016-01-01 00:00"),
            },
        ],
    )
