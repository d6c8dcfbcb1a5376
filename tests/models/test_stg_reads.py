"""stg_reads: each read once; a retry (same read_id) keeps the copy of the smallest file, line."""

from __future__ import annotations

from models.harness import check, ts


def read(read_id: int, user_id: int, at: str, file: str, line: int) -> dict:
    """A raw read record as loaded."""
    return {
        "read_id": read_id,
        "account_id": 1,
        "report_id": 10,
        "user_id": user_id,
        "read_at": at,
        "_file": file,
        "_line": line,
    }


def test_retries_keep_the_first_copy() -> None:
    check(
        "stg_reads",
        {
            "raw_reads": [
                read(1, 7, "2016-11-07 14:00", "b.jsonl", 1),
                read(1, 8, "2016-11-07 15:00", "a.jsonl", 9),  # smaller file wins
                read(2, 7, "2016-11-07 16:00", "a.jsonl", 3),
                read(2, 9, "2016-11-07 17:00", "a.jsonl", 2),  # same file: smaller line wins
                read(3, 7, "2016-11-08 00:00", "c.jsonl", 1),
            ]
        },
        [
            {
                "read_id": 1,
                "account_id": 1,
                "report_id": 10,
                "user_id": 8,
                "read_at": ts("2016-11-07 15:00"),
            },
            {
                "read_id": 2,
                "account_id": 1,
                "report_id": 10,
                "user_id": 9,
                "read_at": ts("2016-11-07 17:00"),
            },
            {
                "read_id": 3,
                "account_id": 1,
                "report_id": 10,
                "user_id": 7,
                "read_at": ts("2016-11-08 00:00"),
            },
        ],
    )
