"""report_stats: per current report, its organization, token, counts (active schedules,
explorations, views) and sorted distinct email lists: manual runs in [as_of - 30 days, as_of),
scheduled runs (any time), editors (the author and whoever edited it); users without an email are
left out. Stored by account, report."""

from __future__ import annotations

from models.harness import check, ts

AS_OF = "2017-01-31 00:00:00+00"


def run(run_id: int, user_id: int, run_type: str, at: str) -> dict:
    """A run of report 1."""
    return {
        "run_id": run_id,
        "report_id": 1,
        "user_id": user_id,
        "run_type": run_type,
        "ran_at": ts(at),
    }


def schedule(schedule_id: int, paused: bool, deleted: bool) -> dict:
    """A schedule of report 1."""
    return {"schedule_id": schedule_id, "report_id": 1, "paused": paused, "is_deleted": deleted}


def test_counts_and_email_lists() -> None:
    check(
        "report_stats",
        {
            "int_current_reports": [
                {"report_id": 2, "token": "tok2", "user_id": 5, "account_id": 1, "personal": True},
                {"report_id": 1, "token": "tok1", "user_id": 3, "account_id": 1, "personal": False},
            ],
            "int_report_positions": [
                {"report_id": 1, "account_id": 1, "position_all": 1, "position_shared": 1},
                {"report_id": 2, "account_id": 1, "position_all": 2, "position_shared": None},
            ],
            "stg_accounts": [{"account_id": 1, "username": "acme"}],
            "stg_users": [
                {"user_id": 3, "email": "c@x"},
                {"user_id": 4, "email": "a@x"},
                {"user_id": 5, "email": None},
                {"user_id": 6, "email": "b@x"},
            ],
            "stg_schedules": [
                schedule(1, False, False),
                schedule(2, True, False),
                schedule(3, False, True),
            ],
            "stg_explorations": [{"exploration_id": i, "report_id": 1} for i in (1, 2)],
            "stg_reads": [{"read_id": i, "report_id": 1} for i in (1, 2, 3)]
            + [{"read_id": 4, "report_id": 9}],
            "stg_report_runs": [
                run(1, 4, "manual", "2017-01-01 00:00"),  # the window's first instant: counts
                run(2, 4, "manual", "2017-01-15 00:00"),  # the same email again
                run(3, 6, "manual", "2017-01-31 00:00"),  # at as_of: outside
                run(4, 6, "manual", "2016-12-31 23:59:59.999999"),  # just before the window
                run(5, 6, "scheduled", "2016-06-01 00:00"),
                run(6, 5, "scheduled", "2016-06-01 00:00"),  # no email
            ],
            "stg_report_edits": [
                {"edit_id": 1, "report_id": 1, "user_id": 6},
                {"edit_id": 2, "report_id": 1, "user_id": 4},
                {"edit_id": 3, "report_id": 1, "user_id": 3},  # the author again
            ],
        },
        [
            {
                "account_id": 1,
                "organization": "acme",
                "personal": False,
                "report_id": 1,
                "report_token": "tok1",
                "active_schedules_count": 1,
                "explorations_count": 2,
                "total_views_count": 3,
                "recent_manual_run_creators_emails": ["a@x"],
                "scheduled_run_creators_emails": ["b@x"],
                "editors_emails": ["a@x", "b@x", "c@x"],
                "position_all": 1,
                "position_shared": 1,
            },
            {
                "account_id": 1,
                "organization": "acme",
                "personal": True,
                "report_id": 2,
                "report_token": "tok2",
                "active_schedules_count": 0,
                "explorations_count": 0,
                "total_views_count": 0,
                "recent_manual_run_creators_emails": [],
                "scheduled_run_creators_emails": [],
                "editors_emails": [],
                "position_all": 2,
                "position_shared": None,
            },
        ],
        as_of=AS_OF,
    )
