"""int_report_positions: each current report's position in its organization's pages, by
report_id: among all its reports, and among those in shared (not personal) channels."""

from __future__ import annotations

from models.harness import check


def current(report_id: int, account_id: int, personal: bool) -> dict:
    """A current report."""
    return {"report_id": report_id, "account_id": account_id, "personal": personal}


def test_positions_with_and_without_personal_channels() -> None:
    check(
        "int_report_positions",
        {
            "int_current_reports": [
                current(30, 1, False),
                current(10, 1, False),
                current(20, 1, True),
                current(5, 2, True),
            ]
        },
        [
            {"report_id": 10, "account_id": 1, "position_all": 1, "position_shared": 1},
            {"report_id": 20, "account_id": 1, "position_all": 2, "position_shared": None},
            {"report_id": 30, "account_id": 1, "position_all": 3, "position_shared": 2},
            {"report_id": 5, "account_id": 2, "position_all": 1, "position_shared": None},
        ],
    )
