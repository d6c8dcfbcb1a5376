"""stg_schedules: the latest version of each schedule wins; paused defaults to false; one with a
deleted_at is deleted."""

from __future__ import annotations

from models.harness import check, ts


def version(schedule_id: int, updated_at: str, line: int, **extra) -> dict:
    """A raw schedule version as loaded."""
    row = {"schedule_id": schedule_id, "account_id": 1, "report_id": 10, "user_id": 3}
    row |= {"created_at": "2016-11-01 00:00", "updated_at": updated_at}
    return row | {"_file": "s.jsonl", "_line": line} | extra


def test_latest_version_wins() -> None:
    check(
        "stg_schedules",
        {
            "raw_schedules": [
                version(1, "2016-11-01 00:00", 1, paused=True),
                version(1, "2016-11-02 00:00", 2),
                version(2, "2016-11-03 00:00", 3, paused=True, deleted_at="2016-11-03 00:00"),
            ]
        },
        [
            {
                "schedule_id": 1,
                "account_id": 1,
                "report_id": 10,
                "user_id": 3,
                "created_at": ts("2016-11-01 00:00"),
                "updated_at": ts("2016-11-02 00:00"),
                "deleted_at": None,
                "paused": False,
                "is_deleted": False,
            },
            {
                "schedule_id": 2,
                "account_id": 1,
                "report_id": 10,
                "user_id": 3,
                "created_at": ts("2016-11-01 00:00"),
                "updated_at": ts("2016-11-03 00:00"),
                "deleted_at": ts("2016-11-03 00:00"),
                "paused": True,
                "is_deleted": True,
            },
        ],
    )
