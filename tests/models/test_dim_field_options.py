"""dim_field_options: one name per (field, option value): the first option in the field's list
with that value; fields without options have none."""

from __future__ import annotations

from models.harness import check


def test_first_option_of_a_value_names_it() -> None:
    check(
        "dim_field_options",
        {
            "stg_fields": [
                {
                    "field_id": 1,
                    "options": [
                        {"value": "b", "name": "Bee"},
                        {"value": "a", "name": "Ay"},
                        {"value": "b", "name": "Second bee"},
                    ],
                },
                {"field_id": 2, "options": None},
                {"field_id": 3, "options": [{"value": "x", "name": "Ex"}]},
            ]
        },
        [
            {"field_id": 1, "value": "a", "name": "Ay"},
            {"field_id": 1, "value": "b", "name": "Bee"},
            {"field_id": 3, "value": "x", "name": "Ex"},
        ],
    )
