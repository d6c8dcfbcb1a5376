"""dim_fields: every field with its account, type and label, by field_id."""

from __future__ import annotations

from models.harness import check


def test_every_field() -> None:
    check(
        "dim_fields",
        {
            "stg_fields": [
                {"field_id": 2, "account_id": 1, "field_type": "text", "label": "Note"},
                {
                    "field_id": 1,
                    "account_id": 1,
                    "field_type": "select",
                    "label": "Kind",
                    "options": [{"value": "a", "name": "A"}],
                },
            ]
        },
        [
            {"field_id": 1, "account_id": 1, "field_type": "select", "label": "Kind"},
            {"field_id": 2, "account_id": 1, "field_type": "text", "label": "Note"},
        ],
    )
