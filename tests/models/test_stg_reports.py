"""stg_reports: the latest version of each report wins (ties: smallest file, then line); one
with a deleted_at is deleted; selections are kept as given."""

from __future__ import annotations

from models.harness import check, ts

PICKS = [{"field_id": 1, "value": "a"}]


def version(report_id: int, updated_at: str, file: str, line: int, **extra) -> dict:
    """A raw report version as loaded."""
    row = {"report_id": report_id, "account_id": 1, "channel_id": 2, "user_id": 3, "state_id": 4}
    row |= {"token": f"t{report_id}", "created_at": "2016-11-07 14:00", "updated_at": updated_at}
    return row | {"_file": file, "_line": line} | extra


def test_latest_version_wins() -> None:
    check(
        "stg_reports",
        {
            "raw_reports": [
                version(1, "2016-11-07 14:00", "a", 1, state_id=5),
                version(1, "2016-11-09 14:00", "a", 2, selections=PICKS),
                version(2, "2016-11-08 14:00", "b", 1, channel_id=7),
                version(2, "2016-11-08 14:00", "a", 9, deleted_at="2016-11-08 14:00"),
            ]
        },
        [
            {
                "report_id": 1,
                "account_id": 1,
                "channel_id": 2,
                "user_id": 3,
                "state_id": 4,
                "token": "t1",
                "created_at": ts("2016-11-07 14:00"),
                "updated_at": ts("2016-11-09 14:00"),
                "deleted_at": None,
                "selections": PICKS,
                "is_deleted": False,
            },
            {
                "report_id": 2,
                "account_id": 1,
                "channel_id": 2,
                "user_id": 3,
                "state_id": 4,
                "token": "t2",
                "created_at": ts("2016-11-07 14:00"),
                "updated_at": ts("2016-11-08 14:00"),
                "deleted_at": ts("2016-11-08 14:00"),
                "selections": None,
                "is_deleted": True,
            },
        ],
    )
