"""stg_fields: the latest version of each field wins, with its options as given."""

from __future__ import annotations

from models.harness import check, ts

OPTIONS = [{"value": "a", "name": "Alpha"}, {"value": "b", "name": "Beta"}]


def test_latest_version_wins() -> None:
    check(
        "stg_fields",
        {
            "raw_fields": [
                {
                    "field_id": 1,
                    "account_id": 1,
                    "field_type": "select",
                    "label": "Old",
                    "options": None,
                    "updated_at": "2016-01-01 00:00",
                    "_file": "a",
                    "_line": 1,
                },
                {
                    "field_id": 1,
                    "account_id": 1,
                    "field_type": "select",
                    "label": "New",
                    "options": OPTIONS,
                    "updated_at": "2016-03-01 00:00",
                    "_file": "a",
                    "_line": 2,
                },
                {
                    "field_id": 2,
                    "account_id": 1,
                    "field_type": "text",
                    "label": "Note",
                    "options": None,
                    "updated_at": "2016-01-01 00:00",
                    "_file": "a",
                    "_line": 3,
                },
            ]
        },
        [
            {
                "field_id": 1,
                "account_id": 1,
                "field_type": "select",
                "label": "New",
                "options": OPTIONS,
                "updated_at": ts("2016-03-01 00:00"),
            },
            {
                "field_id": 2,
                "account_id": 1,
                "field_type": "text",
                "label": "Note",
                "options": None,
                "updated_at": ts("2016-01-01 00:00"),
            },
        ],
    )
