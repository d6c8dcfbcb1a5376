"""dim_states: every report state with its current name, by state_id."""

from __future__ import annotations

from models.harness import check


def test_every_state() -> None:
    check(
        "dim_states",
        {
            "stg_states": [
                {"state_id": 5, "account_id": 2, "name": "Done"},
                {"state_id": 4, "account_id": 1, "name": "Open"},
            ]
        },
        [
            {"state_id": 4, "account_id": 1, "name": "Open"},
            {"state_id": 5, "account_id": 2, "name": "Done"},
        ],
    )
