"""dim_users: every user with names and email, by user_id."""

from __future__ import annotations

from models.harness import check


def test_every_user() -> None:
    check(
        "dim_users",
        {
            "stg_users": [
                {
                    "user_id": 8,
                    "account_id": 1,
                    "first_name": "Bo",
                    "last_name": "Yu",
                    "email": None,
                },
                {
                    "user_id": 3,
                    "account_id": 1,
                    "first_name": "Al",
                    "last_name": "Xi",
                    "email": "al@x",
                },
            ]
        },
        [
            {"user_id": 3, "account_id": 1, "first_name": "Al", "last_name": "Xi", "email": "al@x"},
            {"user_id": 8, "account_id": 1, "first_name": "Bo", "last_name": "Yu", "email": None},
        ],
    )
