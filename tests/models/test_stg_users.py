"""stg_users: the latest version of each user wins, its email included (null when removed)."""

from __future__ import annotations

from models.harness import check, ts


def version(user_id: int, email: str | None, updated_at: str, line: int) -> dict:
    """A raw user version as loaded."""
    row = {"user_id": user_id, "account_id": 1, "first_name": "Ann", "last_name": "Lee"}
    return row | {"email": email, "updated_at": updated_at, "_file": "u", "_line": line}


def test_latest_version_wins() -> None:
    check(
        "stg_users",
        {
            "raw_users": [
                version(1, "old@x", "2016-01-01 00:00", 1),
                version(1, "new@x", "2016-01-02 00:00", 2),
                version(2, "kept@x", "2016-01-02 00:00", 3),
                version(2, None, "2016-01-03 00:00", 4),
            ]
        },
        [
            {
                "user_id": 1,
                "account_id": 1,
                "first_name": "Ann",
                "last_name": "Lee",
                "email": "new@x",
                "updated_at": ts("2016-01-02 00:00"),
            },
            {
                "user_id": 2,
                "account_id": 1,
                "first_name": "Ann",
                "last_name": "Lee",
                "email": None,
                "updated_at": ts("2016-01-03 00:00"),
            },
        ],
    )
