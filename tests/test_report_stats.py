"""Report stats on hand-made edge cases, asserted directly and against the reference."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from conftest import build
from metrics_etl.serve.reader import Reader
from rawkit import T0, base_world, jsonl, report
from reference import Reference

AS_OF = dt.datetime(2017, 1, 31, tzinfo=dt.UTC)
EDGE = "2017-01-01T00:00:00Z"  # exactly 30 days before AS_OF


def run(run_id: int, report_id: int, user_id: int, run_type: str, at: str) -> dict:
    """A report run record."""
    return {
        "run_id": run_id,
        "account_id": 1,
        "report_id": report_id,
        "user_id": user_id,
        "run_type": run_type,
        "ran_at": at,
    }


def world(raw: Path) -> None:
    """Reports with runs at the window edges, schedules in every state, emails that change."""
    base_world(raw)
    jsonl(
        raw / "accounts/empty.jsonl",
        [{"account_id": 3, "username": "empty org", "name": "Nobody", "updated_at": T0}],
    )
    jsonl(
        raw / "reports/r.jsonl",
        [
            report(1, "2016-11-07T14:00:00Z"),
            report(2, "2016-11-07T15:00:00Z", user_id=5),  # author without email
            report(3, "2016-11-07T16:00:00Z", channel_id=3),  # personal channel
            report(4, "2016-11-07T17:00:00Z", channel_id=4),  # deleted channel
            report(5, "2016-11-07T18:00:00Z", deleted_at="2016-12-01T00:00:00Z"),
        ],
    )
    jsonl(
        raw / "report_runs/r.jsonl",
        [
            run(1, 1, 3, "manual", EDGE),  # counts: as_of - 30 days <= ran_at
            run(2, 1, 4, "manual", "2017-01-31T00:00:00Z"),  # at as_of: does not count
            run(3, 1, 4, "manual", "2016-12-31T23:59:59.999999Z"),  # just before the window
            run(4, 1, 4, "scheduled", "2016-06-01T00:00:00Z"),
            run(5, 1, 5, "scheduled", "2016-06-01T00:00:00Z"),  # no email: left out
            run(6, 2, 3, "manual", "2017-01-20T00:00:00Z"),
        ],
    )
    jsonl(
        raw / "schedules/s.jsonl",
        [
            {
                "schedule_id": 1,
                "account_id": 1,
                "report_id": 1,
                "user_id": 3,
                "created_at": T0,
                "updated_at": T0,
            },
            {
                "schedule_id": 2,
                "account_id": 1,
                "report_id": 1,
                "user_id": 3,
                "created_at": T0,
                "updated_at": T0,
                "paused": True,
            },
            {
                "schedule_id": 3,
                "account_id": 1,
                "report_id": 1,
                "user_id": 3,
                "created_at": T0,
                "updated_at": T0,
                "deleted_at": T0,
            },
            {
                "schedule_id": 4,
                "account_id": 1,
                "report_id": 1,
                "user_id": 3,
                "created_at": T0,
                "updated_at": T0,
                "paused": False,
            },
        ],
    )
    jsonl(
        raw / "report_edits/e.jsonl",
        [{"edit_id": 1, "account_id": 1, "report_id": 2, "user_id": 4, "edited_at": T0}],
    )
    jsonl(
        raw / "users/newer.jsonl",
        [
            {
                "user_id": 4,
                "account_id": 1,
                "email": "amy.new@x.com",
                "updated_at": "2016-06-01T00:00:00Z",
            }
        ],
    )


def test_rows_edges_and_pagination(tmp_path: Path) -> None:
    raw, wh = tmp_path / "raw", tmp_path / "wh"
    world(raw)
    build(raw, wh, AS_OF)
    reader, ref = Reader(wh), Reference(raw, AS_OF)
    status, body = reader.get("/batch/acme/report_stats", 1)
    assert status == 200
    rows = {r["report_id"]: r for r in body["report_stats"]}
    assert sorted(rows) == [1, 2]  # personal, deleted-channel and deleted reports are out
    assert rows[1]["recent_manual_run_creators_emails"] == ["john@x.com"]
    assert rows[1]["scheduled_run_creators_emails"] == ["amy.new@x.com"]
    assert rows[1]["active_schedules_count"] == 2
    assert rows[1]["editors_emails"] == ["john@x.com"]
    assert rows[2]["editors_emails"] == ["amy.new@x.com"]  # the author has no email
    assert (
        reader.get("/batch/acme/report_stats?include_spaces=all", 1)[1]["pagination"]["total_count"]
        == 3
    )
    empty = reader.get("/batch/empty%20org/report_stats?page=3&per_page=5", 3)
    assert empty[1]["pagination"] == {
        "page": 3,
        "per_page": 5,
        "count": 0,
        "total_pages": 0,
        "total_count": 0,
    }
    assert (
        empty[1]["_links"]["next_page"]["href"]
        == "/batch/empty%20org/report_stats?page=1&per_page=5"
    )
    for path, account in [
        ("/batch/acme/report_stats", 1),
        ("/batch/acme/report_stats?per_page=1&page=2&include_spaces=all", 1),
        ("/batch/acme/report_stats?per_page=1&page=9", 1),
        ("/batch/empty%20org/report_stats?page=3&per_page=5", 3),
        ("/batch/acme/report_stats", 2),
        ("/batch/nope/report_stats", 1),
        ("/batch/acme/report_stats?include_spaces=yes", 1),
        ("/batch/acme/report_stats?page=0", 1),
        ("/batch/acme/report_stats?per_page=1001", 1),
    ]:
        expected, got = ref.get(path, account), reader.get(path, account)
        assert got[0] == expected[0], path
        assert (got[1] if got[0] == 200 else got[1]["error"]) == (
            expected[1] if expected[0] == 200 else expected[1]["error"]
        ), path
