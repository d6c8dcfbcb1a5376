"""dim_channels: every channel (deleted ones too) with its account's time zone, UTC when the
account is unknown."""

from __future__ import annotations

from models.harness import check


def channel(channel_id: int, account_id: int, **extra) -> dict:
    """A staged channel."""
    row = {"channel_id": channel_id, "account_id": account_id, "name": f"c{channel_id}"}
    return row | {"personal": False, "is_deleted": False} | extra


def test_channels_take_their_account_time_zone() -> None:
    check(
        "dim_channels",
        {
            "stg_channels": [
                channel(3, 9),  # no such account
                channel(1, 1, personal=True),
                channel(2, 1, is_deleted=True),
            ],
            "stg_accounts": [{"account_id": 1, "username": "a", "timezone": "Europe/Paris"}],
        },
        [
            {
                "channel_id": 1,
                "account_id": 1,
                "name": "c1",
                "personal": True,
                "is_deleted": False,
                "timezone": "Europe/Paris",
            },
            {
                "channel_id": 2,
                "account_id": 1,
                "name": "c2",
                "personal": False,
                "is_deleted": True,
                "timezone": "Europe/Paris",
            },
            {
                "channel_id": 3,
                "account_id": 9,
                "name": "c3",
                "personal": False,
                "is_deleted": False,
                "timezone": "UTC",
            },
        ],
    )
