"""stg_report_images: the latest version of each image wins; one with a deleted_at is deleted."""

from __future__ import annotations

from models.harness import check, ts

STYLES = {"thumb": "t.png", "medium": "m.png"}


def version(image_id: int, updated_at: str, line: int, **extra) -> dict:
    """A raw report image version as loaded."""
    row = {"report_image_id": image_id, "report_id": 10, "account_id": 1}
    row |= {"created_at": "2016-11-07 14:00", "updated_at": updated_at, "styles": STYLES}
    return row | {"_file": "i.jsonl", "_line": line} | extra


def test_latest_version_wins() -> None:
    check(
        "stg_report_images",
        {
            "raw_report_images": [
                version(1, "2016-11-07 14:00", 1),
                version(1, "2016-11-08 14:00", 2, deleted_at="2016-11-08 14:00"),
                version(2, "2016-11-08 14:00", 3),
                version(2, "2016-11-07 14:00", 4, styles={"thumb": "old", "medium": "old"}),
            ]
        },
        [
            {
                "report_image_id": 1,
                "report_id": 10,
                "account_id": 1,
                "created_at": ts("2016-11-07 14:00"),
                "updated_at": ts("2016-11-08 14:00"),
                "deleted_at": ts("2016-11-08 14:00"),
                "styles": STYLES,
                "is_deleted": True,
            },
            {
                "report_image_id": 2,
                "report_id": 10,
                "account_id": 1,
                "created_at": ts("2016-11-07 14:00"),
                "updated_at": ts("2016-11-08 14:00"),
                "deleted_at": None,
                "styles": STYLES,
                "is_deleted": False,
            },
        ],
    )
