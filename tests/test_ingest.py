"""Ingestion against the contract, compared with the plain-Python reference reading."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import pyarrow as pa
import pytest

from metrics_etl import ingest, pipeline, transform
from metrics_etl.contract import STREAMS
from rawkit import T0, base_world, jsonl, parquet, report
from reference import Reference

AS_OF = dt.datetime(2017, 1, 1, tzinfo=dt.UTC)
UTC = dt.UTC


def load(raw: Path, warehouse: Path, run_id: str = "r1") -> tuple:
    """Ingest everything new under raw; returns (connection, per-stream stats)."""
    conn = pipeline.open_writer(warehouse)
    stats = ingest.ingest(conn, ingest.discover(raw), run_id, 1 << 20)
    return conn, stats


def rejects_of(conn) -> set[tuple[str, str, int]]:
    """(stream, file, line) of every reject."""
    return set(conn.execute("select stream, file, line from rejects").fetchall())


def accounting_of(conn) -> dict[str, tuple[int, int, int]]:
    """file -> (lines_read, accepted, rejected)."""
    rows = conn.execute("select file, lines_read, accepted, rejected from file_stats").fetchall()
    return {f: (a, b, c) for f, a, b, c in rows}


def bad_lines_world(raw: Path) -> None:
    """One file per format with every kind of bad record, interleaved with good ones."""
    base_world(raw)
    good = {
        "read_id": 1,
        "account_id": 1,
        "report_id": 1,
        "user_id": 3,
        "read_at": "2016-11-08T10:00:00+01:00",
    }
    bad = [
        '{"read_id": 9',  # invalid JSON
        "[1, 2]",  # not an object
        "42",  # not an object
        {k: v for k, v in good.items() if k != "user_id"},  # missing field
        {**good, "user_id": None},  # null required
        {**good, "user_id": "abc"},  # string that is not an int
        {**good, "user_id": "12abc"},
        {**good, "user_id": 1.5},  # float
        {**good, "user_id": True},  # boolean as int
        {**good, "read_at": "2016-11-08T10:00:00"},  # no offset
        {**good, "read_at": "yesterday"},  # unparseable
        {**good, "read_at": "2016-02-30T10:00:00Z"},  # impossible date
        {**good, "read_at": 1478599200},  # number as ts
        {**good, "read_id": 9223372036854775808},  # out of int64
    ]
    rows: list[object] = []
    for i, b in enumerate(bad):
        rows.append({**good, "read_id": 100 + i})
        rows.append(b)
        rows.append("   ")  # blank line
    jsonl(raw / "reads/plain.jsonl", rows)
    jsonl(raw / "reads/zipped.jsonl.gz", rows, gz=True)
    jsonl(
        raw / "report_runs/r.jsonl",
        [
            {
                "run_id": 1,
                "account_id": 1,
                "report_id": 1,
                "user_id": 3,
                "run_type": "manual",
                "ran_at": T0,
            },
            {
                "run_id": 2,
                "account_id": 1,
                "report_id": 1,
                "user_id": 3,
                "run_type": "cron",
                "ran_at": T0,
            },
        ],
    )
    jsonl(
        raw / "reports/r.jsonl",
        [
            report(1, "2016-11-07T14:03:11.250Z", selections=[{"field_id": 2, "value": "a"}]),
            report(2, "2016-11-07T14:03:11.250Z", selections=[{"field_id": "x", "value": "a"}]),
            report(3, "2016-11-07T14:03:11.250Z", selections=[{"field_id": 2}]),
            report(4, "2016-11-07T14:03:11.250Z", selections="a"),
        ],
    )
    jsonl(
        raw / "accounts/bad.jsonl",
        [
            {
                "account_id": 9,
                "username": "mars",
                "name": "M",
                "timezone": "Mars/Olympus_Mons",
                "updated_at": T0,
            }
        ],
    )
    jsonl(
        raw / "report_images/i.jsonl",
        [
            {
                "report_image_id": 1,
                "report_id": 1,
                "account_id": 1,
                "created_at": T0,
                "updated_at": T0,
                "styles": {"thumb": "t", "medium": "m"},
            },
            {
                "report_image_id": 2,
                "report_id": 1,
                "account_id": 1,
                "created_at": T0,
                "updated_at": T0,
                "styles": {"medium": "m"},
            },
        ],
    )
    ts = pa.timestamp("us", tz="UTC")
    when = dt.datetime(2016, 11, 8, tzinfo=UTC)
    parquet(
        raw / "reads/p.parquet",
        pa.table(
            {
                "read_id": pa.array([200, 201, 202, 203], pa.int64()),
                "account_id": pa.array([1, None, 1, 1], pa.int64()),
                "report_id": pa.array([1, 1, 1, 1], pa.int64()),
                "user_id": pa.array([3, 3, 3, 3], pa.int64()),
                "read_at": pa.array([when, when, None, when], ts),
            }
        ),
    )
    parquet(
        raw / "reads/strings.parquet",
        pa.table(
            {
                "read_id": pa.array(["300", "x301"]),
                "account_id": pa.array([1, 1], pa.int64()),
                "report_id": pa.array([1, 1], pa.int64()),
                "user_id": pa.array([3.0, 3.5]),
                "read_at": pa.array(["2016-11-08T00:00:00Z", "2016-11-08T00:00:00Z"]),
            }
        ),
    )
    parquet(
        raw / "reads/naive.parquet",
        pa.table(
            {
                "read_id": pa.array([400], pa.int64()),
                "account_id": pa.array([1], pa.int64()),
                "report_id": pa.array([1], pa.int64()),
                "user_id": pa.array([3], pa.int64()),
                "read_at": pa.array([dt.datetime(2016, 11, 8)], pa.timestamp("us")),
            }
        ),
    )
    (raw / "clicks").mkdir()
    jsonl(raw / "clicks/x.jsonl", [{}])
    jsonl(raw / "reads/_staging/ignored.jsonl", ["garbage"])
    (raw / "reads/notes.txt").write_text("hello")


def test_every_bad_record_is_rejected_with_file_and_line(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    bad_lines_world(raw)
    conn, _ = load(raw, tmp_path / "wh")
    ref = Reference(raw, AS_OF)
    assert rejects_of(conn) == {(r["stream"], r["file"], r["line"]) for r in ref.rejects}
    reasons = dict(
        ((f, line), reason)
        for f, line, reason in conn.execute("select file, line, reason from rejects").fetchall()
    )
    assert "no offset" in reasons[("reads/plain.jsonl", 29)]
    assert reasons[("reads/plain.jsonl", 2)].startswith("invalid JSON")
    assert reasons[("reads/plain.jsonl", 14)] == "required field user_id is null"
    assert reasons[("reads/plain.jsonl", 11)] == "missing required field user_id"
    assert "manual, scheduled" in reasons[("report_runs/r.jsonl", 2)]
    assert "Mars/Olympus_Mons" in reasons[("accounts/bad.jsonl", 1)]
    assert "no offset" in reasons[("reads/naive.parquet", 1)]
    raw_text = conn.execute(
        "select raw from rejects where file = 'reads/plain.jsonl' and line = 2"
    ).fetchall()
    assert raw_text == [('{"read_id": 9',)]


def test_accounting_balances_per_file_and_matches_reference(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    bad_lines_world(raw)
    conn, _ = load(raw, tmp_path / "wh")
    ref = Reference(raw, AS_OF)
    got = accounting_of(conn)
    assert got == {
        f: (a["lines_read"], a["accepted"], a["rejected"]) for f, a in ref.accounting.items()
    }
    for lines, accepted, rejected in got.values():
        assert lines == accepted + rejected
    blanks = dict(conn.execute("select file, blank_lines from file_stats").fetchall())
    assert blanks["reads/plain.jsonl"] == ref.blank_lines["reads/plain.jsonl"] == 14


def test_unknown_and_unsupported_files_are_reported_not_loaded(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    bad_lines_world(raw)
    found = ingest.discover(raw)
    skipped = dict(found.skipped)
    assert "unknown stream" in skipped["clicks/x.jsonl"]
    assert "unsupported extension" in skipped["reads/notes.txt"]
    assert not any("_staging" in f.rel for f in found.files)
    assert sorted(skipped) == sorted(Reference(raw, AS_OF).skipped)


def current_rows(conn, stream: str) -> dict[int, dict]:
    """Staging rows keyed by the stream's key, restricted to contract fields."""
    spec = STREAMS[stream]
    names = [f.name for f in spec.fields]
    cur = conn.execute(f"select {', '.join(names)} from stg_{stream}")
    return {row[0]: dict(zip(names, row, strict=True)) for row in cur.fetchall()}


def normalized_reference(ref: Reference, stream: str) -> dict[int, dict]:
    """Reference current state with the documented defaults applied (UTC, false)."""
    defaults = {
        ("accounts", "timezone"): "UTC",
        ("channels", "personal"): False,
        ("schedules", "paused"): False,
    }
    out = {}
    for key, rec in ref.current(stream).items():
        row = dict(rec)
        for (s, name), value in defaults.items():
            if s == stream and row.get(name) is None:
                row[name] = value
        out[key] = row
    return out


def test_latest_wins_ties_and_event_dedup_across_runs(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    base_world(raw)
    jsonl(
        raw / "reports/1.jsonl",
        [report(1, "2016-11-07T14:00:00Z", "2016-11-09T00:00:00Z", state_id=None)],
    )
    jsonl(
        raw / "reads/1.jsonl",
        [{"read_id": 1, "account_id": 1, "report_id": 1, "user_id": 3, "read_at": T0}],
    )
    conn, _ = load(raw, tmp_path / "wh")
    # later run: an older version arrives last; a same-updated_at version in a later file; a retry
    jsonl(
        raw / "reports/2.jsonl",
        [report(1, "2016-11-07T14:00:00Z", "2016-11-08T00:00:00Z", state_id=1)],
    )
    jsonl(
        raw / "reports/0.jsonl",
        [report(1, "2016-11-07T14:00:00Z", "2016-11-09T00:00:00Z", token="tie")],
    )
    jsonl(
        raw / "reads/2.jsonl",
        [{"read_id": 1, "account_id": 1, "report_id": 1, "user_id": 4, "read_at": T0}],
    )
    ingest.ingest(conn, ingest.discover(raw), "r2", 1 << 20)
    transform.run_models(conn, AS_OF.isoformat())
    ref = Reference(raw, AS_OF)
    for stream in STREAMS:
        assert current_rows(conn, stream) == normalized_reference(ref, stream), stream
    assert current_rows(conn, "reports")[1]["token"] == "tie"  # smallest (file, line) wins a tie
    assert current_rows(conn, "reads")[1]["user_id"] == 3


def test_reload_rules(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    base_world(raw)
    path = jsonl(
        raw / "reads/1.jsonl",
        [
            {"read_id": i, "account_id": 1, "report_id": 1, "user_id": 3, "read_at": T0}
            for i in range(5)
        ],
    )
    conn, first = load(raw, tmp_path / "wh")
    assert first["reads"].files == 1
    assert (
        ingest.ingest(conn, ingest.discover(raw), "r2", 1 << 20) == {}
    )  # unchanged: not loaded again
    os.utime(path, ns=(1, 1))  # touched, same content: not loaded again
    assert ingest.ingest(conn, ingest.discover(raw), "r3", 1 << 20) == {}
    jsonl(
        path, [{"read_id": 9, "account_id": 1, "report_id": 1, "user_id": 3, "read_at": T0}, "bad"]
    )
    again = ingest.ingest(conn, ingest.discover(raw), "r4", 1 << 20)
    assert again["reads"].files == 1
    ids = [r[0] for r in conn.execute("select read_id from raw_reads order by 1").fetchall()]
    assert ids == [9]  # the path's earlier records were replaced
    assert accounting_of(conn)["reads/1.jsonl"] == (2, 1, 1)
    assert rejects_of(conn) == {("reads", "reads/1.jsonl", 2)}


def test_corrupt_files_load_nothing_and_count_one_reject(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    base_world(raw)
    good = jsonl(
        tmp_path / "g.jsonl.gz",
        [
            {"read_id": i, "account_id": 1, "report_id": 1, "user_id": 3, "read_at": T0}
            for i in range(500)
        ],
        gz=True,
    )
    (raw / "reads").mkdir()
    (raw / "reads/trunc.jsonl.gz").write_bytes(good.read_bytes()[:-20])
    (raw / "reads/garbage.parquet").write_bytes(b"PAR1 not really")
    conn, _ = load(raw, tmp_path / "wh")
    ref = Reference(raw, AS_OF)
    assert rejects_of(conn) == {(r["stream"], r["file"], r["line"]) for r in ref.rejects}
    assert accounting_of(conn)["reads/trunc.jsonl.gz"] == (1, 0, 1)
    assert conn.execute("select count(*) from raw_reads").fetchall() == [(0,)]


def test_missing_or_unreadable_raw_folder_is_a_clear_error(tmp_path: Path) -> None:
    from metrics_etl.errors import UserError

    with pytest.raises(UserError, match="does not exist"):
        ingest.discover(tmp_path / "nope")
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="not a folder"):
        ingest.discover(tmp_path / "file")
