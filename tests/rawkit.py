"""Small helpers to write raw files in the three formats of the contract."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq


def jsonl(path: Path, rows: list[object], gz: bool = False) -> Path:
    """Write rows (dicts are JSON-encoded, strings written as they are) as JSONL."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows)
    if gz:
        with gzip.open(path, "wt", encoding="utf-8") as handle:
            handle.write(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def parquet(path: Path, table: pa.Table) -> Path:
    """Write an Arrow table as Parquet."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    return path


T0 = "2016-01-01T00:00:00Z"


def base_world(raw: Path) -> None:
    """Two accounts (New York and Kathmandu), channels, users, states and fields."""
    jsonl(
        raw / "accounts/a.jsonl",
        [
            {
                "account_id": 1,
                "username": "acme",
                "name": "Acme",
                "timezone": "America/New_York",
                "updated_at": T0,
            },
            {
                "account_id": 2,
                "username": "kat",
                "name": "Kat",
                "timezone": "Asia/Kathmandu",
                "updated_at": T0,
            },
        ],
    )
    jsonl(
        raw / "channels/c.jsonl",
        [
            {"channel_id": 1, "account_id": 1, "name": "ops", "updated_at": T0},
            {"channel_id": 2, "account_id": 2, "name": "k", "updated_at": T0},
            {
                "channel_id": 3,
                "account_id": 1,
                "name": "mine",
                "personal": True,
                "owner_user_id": 3,
                "updated_at": T0,
            },
            {"channel_id": 4, "account_id": 1, "name": "gone", "updated_at": T0, "deleted_at": T0},
        ],
    )
    jsonl(
        raw / "users/u.jsonl",
        [
            {
                "user_id": 3,
                "account_id": 1,
                "first_name": "John",
                "last_name": "Doe",
                "email": "john@x.com",
                "updated_at": T0,
            },
            {"user_id": 4, "account_id": 1, "email": "amy@x.com", "updated_at": T0},
            {"user_id": 5, "account_id": 1, "updated_at": T0},
        ],
    )
    jsonl(
        raw / "states/s.jsonl", [{"state_id": 1, "account_id": 1, "name": "Open", "updated_at": T0}]
    )
    jsonl(
        raw / "fields/f.jsonl",
        [
            {
                "field_id": 2,
                "account_id": 1,
                "field_type": "Radio",
                "label": "R",
                "options": [{"value": "a", "name": "A"}],
                "updated_at": T0,
            },
            {"field_id": 5, "account_id": 1, "field_type": "Text", "label": "T", "updated_at": T0},
            {
                "field_id": 6,
                "account_id": 2,
                "field_type": "Category",
                "label": "C",
                "options": [],
                "updated_at": T0,
            },
        ],
    )


def report(
    report_id: int, created_at: str, updated_at: str = "2016-11-08T00:00:00Z", **extra: object
) -> dict:
    """A report record with sensible defaults."""
    row: dict = {
        "report_id": report_id,
        "account_id": 1,
        "channel_id": 1,
        "user_id": 3,
        "state_id": 1,
        "token": f"tok{report_id}",
        "created_at": created_at,
        "updated_at": updated_at,
    }
    row.update(extra)
    return row


def reads(
    ids: Iterable[int], report_id: int, user_id: int = 4, at: str = "2016-11-08T10:00:00Z"
) -> list[dict]:
    """Read records of one report by one user, one per id."""
    return [
        {"read_id": i, "account_id": 1, "report_id": report_id, "user_id": user_id, "read_at": at}
        for i in ids
    ]
