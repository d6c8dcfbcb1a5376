"""int_current_reports: reports not deleted, in a channel that exists and is not deleted, with the
channel's account, personal flag and time zone (the report's own account is not used)."""

from __future__ import annotations

from models.harness import check, ts

PICKS = [{"field_id": 1, "value": "a"}]


def report(report_id: int, channel_id: int, **extra) -> dict:
    """A staged report."""
    row = {"report_id": report_id, "account_id": 99, "channel_id": channel_id, "user_id": 3}
    row |= {"state_id": 4, "token": f"t{report_id}", "created_at": ts("2016-11-07 14:00")}
    return row | {"is_deleted": False} | extra


def test_current_reports_in_current_channels() -> None:
    check(
        "int_current_reports",
        {
            "stg_reports": [
                report(1, 1, selections=PICKS),
                report(2, 1, is_deleted=True),
                report(3, 2),  # deleted channel
                report(4, 5),  # unknown channel
                report(5, 3),
            ],
            "dim_channels": [
                {
                    "channel_id": 1,
                    "account_id": 1,
                    "personal": False,
                    "is_deleted": False,
                    "timezone": "Europe/Paris",
                },
                {
                    "channel_id": 2,
                    "account_id": 1,
                    "personal": False,
                    "is_deleted": True,
                    "timezone": "UTC",
                },
                {
                    "channel_id": 3,
                    "account_id": 2,
                    "personal": True,
                    "is_deleted": False,
                    "timezone": "UTC",
                },
            ],
        },
        [
            {
                "report_id": 1,
                "token": "t1",
                "user_id": 3,
                "state_id": 4,
                "created_at": ts("2016-11-07 14:00"),
                "selections": PICKS,
                "channel_id": 1,
                "account_id": 1,
                "personal": False,
                "timezone": "Europe/Paris",
            },
            {
                "report_id": 5,
                "token": "t5",
                "user_id": 3,
                "state_id": 4,
                "created_at": ts("2016-11-07 14:00"),
                "selections": None,
                "channel_id": 3,
                "account_id": 2,
                "personal": True,
                "timezone": "UTC",
            },
        ],
    )
