"""stg_channels: the latest version of each channel wins; personal defaults to false; a channel
with a deleted_at is deleted."""

from __future__ import annotations

from models.harness import check, ts


def version(channel_id: int, name: str, updated_at: str, line: int, **extra) -> dict:
    """A raw channel version as loaded."""
    row = {"channel_id": channel_id, "account_id": 1, "name": name, "owner_user_id": 3}
    return row | {"updated_at": updated_at, "_file": "c.jsonl", "_line": line} | extra


def test_latest_version_wins() -> None:
    check(
        "stg_channels",
        {
            "raw_channels": [
                version(1, "old", "2016-01-01 00:00", 1, personal=True),
                version(1, "new", "2016-02-01 00:00", 2, deleted_at="2016-02-01 00:00"),
                version(2, "first", "2016-01-01 00:00", 3, personal=True),
                version(2, "second", "2016-01-01 00:00", 4),  # same time: smaller line wins
            ]
        },
        [
            {
                "channel_id": 1,
                "account_id": 1,
                "name": "new",
                "owner_user_id": 3,
                "updated_at": ts("2016-02-01 00:00"),
                "deleted_at": ts("2016-02-01 00:00"),
                "personal": False,
                "is_deleted": True,
            },
            {
                "channel_id": 2,
                "account_id": 1,
                "name": "first",
                "owner_user_id": 3,
                "updated_at": ts("2016-01-01 00:00"),
                "deleted_at": None,
                "personal": True,
                "is_deleted": False,
            },
        ],
    )
