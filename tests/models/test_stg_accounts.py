"""stg_accounts: the latest version of each account wins (ties: smallest file, then line); an
account without a time zone is in UTC."""

from __future__ import annotations

from models.harness import check, ts


def version(account_id: int, username: str, updated_at: str, file: str, line: int, **extra) -> dict:
    """A raw account version as loaded."""
    row = {"account_id": account_id, "username": username, "name": username.title()}
    return row | {"updated_at": updated_at, "_file": file, "_line": line} | extra


def test_latest_version_wins() -> None:
    check(
        "stg_accounts",
        {
            "raw_accounts": [
                version(1, "old", "2016-01-01 00:00", "a.jsonl", 1, timezone="Europe/Paris"),
                version(1, "new", "2016-02-01 00:00", "b.jsonl", 1, timezone="Europe/Berlin"),
                version(2, "tie-b", "2016-01-01 00:00", "b.jsonl", 1),
                version(2, "tie-a", "2016-01-01 00:00", "a.jsonl", 5),  # smaller file wins
            ]
        },
        [
            {
                "account_id": 1,
                "username": "new",
                "name": "New",
                "updated_at": ts("2016-02-01 00:00"),
                "timezone": "Europe/Berlin",
            },
            {
                "account_id": 2,
                "username": "tie-a",
                "name": "Tie-A",
                "updated_at": ts("2016-01-01 00:00"),
                "timezone": "UTC",
            },
        ],
    )
