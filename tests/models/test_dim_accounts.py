"""dim_accounts: every account with its organization name and time zone, by account_id."""

from __future__ import annotations

from models.harness import check, ts


def test_every_account() -> None:
    check(
        "dim_accounts",
        {
            "stg_accounts": [
                {
                    "account_id": 2,
                    "username": "b",
                    "name": "B",
                    "updated_at": ts("2016-01-01 00:00"),
                    "timezone": "UTC",
                },
                {
                    "account_id": 1,
                    "username": "a",
                    "name": "A",
                    "updated_at": ts("2016-01-01 00:00"),
                    "timezone": "Asia/Tokyo",
                },
            ]
        },
        [
            {"account_id": 1, "username": "a", "name": "A", "timezone": "Asia/Tokyo"},
            {"account_id": 2, "username": "b", "name": "B", "timezone": "UTC"},
        ],
    )
