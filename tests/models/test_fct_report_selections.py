"""fct_report_selections: each distinct (field, value) a current report selects, with the hour
of the report's creation; reports without selections have no rows."""

from __future__ import annotations

from models.harness import check, ts, utc_slot


def current(report_id: int, created_at: str, selections: list[dict] | None) -> dict:
    """A current report in channel 7 (UTC)."""
    return {
        "report_id": report_id,
        "created_at": ts(created_at),
        "selections": selections,
        "channel_id": 7,
        "timezone": "UTC",
    }


def pick(field_id: int, value: str) -> dict:
    """One selection."""
    return {"field_id": field_id, "value": value}


def test_distinct_selections_per_report() -> None:
    check(
        "fct_report_selections",
        {
            "int_current_reports": [
                current(2, "2016-11-07 14:20", [pick(2, "b"), pick(1, "a"), pick(2, "b")]),
                current(1, "2016-11-07 14:20", [pick(1, "z")]),
                current(3, "2016-11-07 14:25", None),
                current(4, "2016-10-31 23:59", [pick(1, "a")]),
            ],
            "int_local_slots": [utc_slot("2016-11-07 14:15"), utc_slot("2016-10-31 23:45")],
        },
        [
            {
                "channel_id": 7,
                "created_at": ts("2016-10-31 23:59"),
                "hour_start": ts("2016-10-31 23:00"),
                "report_id": 4,
                "field_id": 1,
                "value": "a",
            },
            {
                "channel_id": 7,
                "created_at": ts("2016-11-07 14:20"),
                "hour_start": ts("2016-11-07 14:00"),
                "report_id": 1,
                "field_id": 1,
                "value": "z",
            },
            {
                "channel_id": 7,
                "created_at": ts("2016-11-07 14:20"),
                "hour_start": ts("2016-11-07 14:00"),
                "report_id": 2,
                "field_id": 1,
                "value": "a",
            },
            {
                "channel_id": 7,
                "created_at": ts("2016-11-07 14:20"),
                "hour_start": ts("2016-11-07 14:00"),
                "report_id": 2,
                "field_id": 2,
                "value": "b",
            },
        ],
    )
