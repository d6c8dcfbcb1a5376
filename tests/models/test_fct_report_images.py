"""fct_report_images: the images, not deleted, of current reports, in the report's channel and
account, with their thumb and medium styles."""

from __future__ import annotations

from models.harness import check, ts


def image(image_id: int, report_id: int, created_at: str, deleted: bool = False) -> dict:
    """A staged report image."""
    return {
        "report_image_id": image_id,
        "report_id": report_id,
        "account_id": 99,
        "created_at": ts(created_at),
        "styles": {"thumb": f"t{image_id}", "medium": f"m{image_id}"},
        "is_deleted": deleted,
    }


def test_images_of_current_reports() -> None:
    check(
        "fct_report_images",
        {
            "stg_report_images": [
                image(1, 10, "2016-11-08 00:00"),
                image(2, 10, "2016-11-01 00:00", deleted=True),
                image(3, 11, "2016-11-02 00:00"),
                image(4, 12, "2016-11-03 00:00"),  # report not current
                image(5, 10, "2016-10-30 00:00"),
            ],
            "int_current_reports": [
                {"report_id": 10, "channel_id": 8, "account_id": 1},
                {"report_id": 11, "channel_id": 7, "account_id": 2},
            ],
        },
        [
            {
                "channel_id": 8,
                "created_at": ts("2016-10-30 00:00"),
                "report_image_id": 5,
                "account_id": 1,
                "report_id": 10,
                "thumb": "t5",
                "medium": "m5",
            },
            {
                "channel_id": 7,
                "created_at": ts("2016-11-02 00:00"),
                "report_image_id": 3,
                "account_id": 2,
                "report_id": 11,
                "thumb": "t3",
                "medium": "m3",
            },
            {
                "channel_id": 8,
                "created_at": ts("2016-11-08 00:00"),
                "report_image_id": 1,
                "account_id": 1,
                "report_id": 10,
                "thumb": "t1",
                "medium": "m1",
            },
        ],
    )
