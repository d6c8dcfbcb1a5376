"""Ingestion against the contract, compared with the plain-Python reference reading."""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path

import pyarrow as pa
import pytest

from metrics_etl.contract import STREAMS
from metrics_etl.ingest import discover
from metrics_etl.ingest import load as loading
from metrics_etl.models import build as transform
from metrics_etl.run import pipeline
from rawkit import T0, base_world, jsonl, parquet, report
from reference import Reference

AS_OF = dt.datetime(2017, 1, 1, tzinfo=dt.UTC)
UTC = dt.UTC


def load(raw: Path, warehouse: Path, run_id: str = "r1") -> tuple:
    """Ingest everything new under raw; returns (connection, per-stream stats)."""
    conn = pipeline.open_writer(warehouse)
    stats = loading.ingest(conn, discover.discover(raw), run_id, 1 << 20)
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
    found = discover.discover(raw)
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
    loading.ingest(conn, discover.discover(raw), "r2", 1 << 20)
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
        loading.ingest(conn, discover.discover(raw), "r2", 1 << 20) == {}
    )  # unchanged: not loaded again
    os.utime(path, ns=(1, 1))  # touched, same content: not loaded again
    assert loading.ingest(conn, discover.discover(raw), "r3", 1 << 20) == {}
    jsonl(
        path, [{"read_id": 9, "account_id": 1, "report_id": 1, "user_id": 3, "read_at": T0}, "bad"]
    )
    again = loading.ingest(conn, discover.discover(raw), "r4", 1 << 20)
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
        discover.discover(tmp_path / "nope")
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="not a folder"):
        discover.discover(tmp_path / "file")


# --- The fast pass must never accept what the detailed validation rejects, nor type it otherwise.

GOOD_VALUE = {
    "int": 12,
    "string": "abc",
    "bool": True,
    "ts": "2016-11-07T10:15:00Z",
    "tz": "America/New_York",
    "selections": [{"field_id": 2, "value": "a"}],
    "options": [{"value": "a", "name": "A"}],
    "styles": {"thumb": "t", "medium": "m"},
}
TRICKY_VALUES: dict[str, list[object]] = {
    "int": [0, -1, "12", "+12", "-12", " 12", "12 ", "1_000", 1.0, 1.5, 1e3, True, "", "abc",
            2**63 - 1, 2**63, -(2**63), -(2**63) - 1, "9223372036854775808", [], {}, "-0",
            "0x10", "\u0661\u0662", "1e3", "1.0", "00012", 2**64, "null"],
    "string": ["", 'with "quote"', "\u00e9", "\u0301x", "\u0000", "null", 123, True, [], {},
               "tab\t", "\\", "true", "\u2028", "a/b", "\U0001f600"],
    "bool": [False, "true", "false", 1, 0, "null", [], "True"],
    "ts": ["2016-11-07T10:15:00z", "2016-11-07 10:15:00+05:45", "2016-11-07T10:15:00+0545",
           "2016-11-07T10:15:00+05", "2016-11-07T10:15:00", "2016-11-07T10:15Z",
           "2016-02-30T10:15:00Z", "2016-11-07T10:15:00.1234567Z",
           "2016-11-07T10:15:00.999999999-03:30", " 2016-11-07T10:15:00Z",
           "2016-11-07T10:15:00Z ", "2016-11-07t10:15:00Z", 1478599200, "",
           "2016-11-07T24:00:00Z", "2016-11-07T10:15:60Z", "2016-11-07T10:15:00+99:99",
           "2016-11-07T10:15:00+23:59", "2016-11-07T10:15:00-00:00", "2016-11-07T10:15:00.Z",
           "0001-01-01T00:00:00Z", "9999-12-31T23:59:59.999999-12:00",
           "2016-11-07T10:15:00UTC", "2016-11-07T10:15:00 Z", "2016-11-07T10:15:00+5:45",
           "2016-11-07", "null", {}, [], True],
    "tz": ["UTC", "Asia/Kathmandu", "Mars/Olympus_Mons", "utc", 5, "", "localtime", "Etc/GMT+5",
           "null", [], " UTC"],
    "selections": [[], [{"field_id": "2", "value": "a"}], [{"field_id": "x", "value": "a"}],
                   [{"field_id": 2}], "a", ["a"], [None], [{"field_id": 2, "value": 5}],
                   [{"field_id": 2.0, "value": "a"}], [{"field_id": 2, "value": "a", "x": [1]}],
                   {"field_id": 2, "value": "a"}, [{"field_id": 2, "value": 'a"b'}], "null",
                   [[]], [{"field_id": 2, "value": None}], [{"field_id": None, "value": "a"}],
                   [{"field_id": 2, "value": "\u00e9"}, {"field_id": 3, "value": "b"}], [{}], 5,
                   [[{"field_id": 2, "value": "a"}]], True, [{"field_id": {"a": 1}, "value": "a"}]],
    "options": [[], [{"value": "a"}], "a,b", [{"value": "a", "name": None}],
                [{"value": 1, "name": "x"}], [None], {"value": "a", "name": "b"},
                [{"value": "\u00e9", "name": "\\"}], [[]], "null"],
    "styles": [{}, {"thumb": "t"}, {"thumb": None, "medium": "m"}, "t", [],
               {"thumb": 1, "medium": "m"}, {"thumb": "t", "medium": "m", "x": 1},
               {"thumb": 'a"', "medium": "\u00e9"}, "null", [{"thumb": "t", "medium": "m"}], 5],
}  # fmt: skip


def tricky_lines(stream: str) -> list[str]:
    """Good records, each field replaced by tricky values, and tricky whole lines."""
    spec = STREAMS[stream]
    base: dict[str, object] = {f.name: GOOD_VALUE[f.type] for f in spec.fields}
    if stream == "report_runs":
        base["run_type"] = "manual"
    lines = [json.dumps(base), json.dumps(base, separators=(",", ":"))]
    for f in spec.fields:
        for value in [None, *TRICKY_VALUES[f.type], "scheduled", "Manual"]:
            for ascii_only in (True, False):
                lines.append(json.dumps({**base, f.name: value}, ensure_ascii=ascii_only))
        missing = {k: v for k, v in base.items() if k != f.name}
        lines += [json.dumps(missing), json.dumps({**missing, f.name.upper(): base[f.name]})]
    body = json.dumps(base)[1:-1]
    key = spec.fields[0].name
    escaped_key = key[:-1] + "\\u00" + format(ord(key[-1]), "x")
    lines += [
        "{" + body + ', "extra": NaN}',
        "{" + body + ",}",
        "{" + body + f', "{key}": "dup"' + "}",
        "{" + f'"{key}": "dup", ' + body + "}",
        "{" + body.replace(f'"{key}"', f'"{escaped_key}"') + "}",
        "  {" + body + "}  ",
        "{" + body + "} x",
        "\ufeff{" + body + "}",
        "{" + body.replace(": 12", ": NaN", 1) + "}",
        "{" + body.replace(": 12", ": -0", 1) + "}",
        "{" + body.replace(": 12", ": 1.2e1", 1) + "}",
        "{" + body.replace(": 12", ": 0012", 1) + "}",
        "/* c */ {" + body + "}",
        '{"a":',
        "[1, 2]",
        "42",
        "null",
        '"str"',
        "{}",
    ]
    return lines


def fast_and_detailed(conn, stream: str, fast: str, detailed: str) -> tuple[list, int, int]:
    """(lines the fast pass wrongly accepts, lines it leaves to the detailed pass, accepted)."""
    from metrics_etl.ingest import validate

    spec = STREAMS[stream]
    conn.execute(f"create or replace temp table fast as {fast}")
    conn.execute(f"create or replace temp table slow as {validate.validated_sql(spec, detailed)}")
    differs = " or ".join(f"f.{f.name} is distinct from s.{f.name}" for f in spec.fields)
    wrong = conn.execute(
        f"select f.line, s.reason, s.text from fast f join slow s using (line) "
        f"where f.ok and (s.reason is not null or {differs})"
    ).fetchall()
    left, accepted = conn.execute(
        "select count(*) filter (where not f.ok and s.reason is null), "
        "count(*) filter (where f.ok) from fast f join slow s using (line)"
    ).fetchall()[0]
    assert (
        conn.execute("select count(*) from fast").fetchall()
        == conn.execute("select count(*) from slow").fetchall()
    )
    return wrong, left, accepted


@pytest.fixture
def validation_conn():
    """A bare DuckDB connection with the validation helpers."""
    import duckdb

    from metrics_etl.ingest import validate

    conn = duckdb.connect()
    conn.execute("set TimeZone = 'UTC'")
    validate.install(conn)
    yield conn
    conn.close()


@pytest.mark.parametrize("stream", sorted(STREAMS))
def test_fast_pass_agrees_with_detailed_validation_on_json(validation_conn, stream: str) -> None:
    from metrics_etl.ingest import validate

    lines = tricky_lines(stream)
    table = pa.table(
        {
            "file": ["f"] * len(lines),
            "line": list(range(1, len(lines) + 1)),
            "text": lines,
            "bad_utf8": [False] * len(lines),
            "blank": [False] * len(lines),
        }
    )
    validation_conn.register("src", table)
    fast = validate.fast_sql(STREAMS[stream], "src")
    wrong, left, accepted = fast_and_detailed(validation_conn, stream, fast, "src")
    assert wrong == []
    # nearly every good line is typed by the fast pass alone (not: ints written +12, 0012, -0)
    assert left <= 6 * sum(f.type == "int" for f in STREAMS[stream].fields) + 2
    assert accepted > 10


PARQUET_VARIANTS: dict[str, list[tuple[pa.DataType, list]]] = {
    "int": [
        (pa.int64(), [1, -5, 0, None, 2**63 - 1, -(2**63)]),
        (pa.int32(), [1, None]),
        (pa.uint64(), [1, None, 2**63, 2**64 - 1]),
        (pa.float64(), [1.0, 1.5, None]),
        (pa.string(), ["12", "+3", " 4", "x", None, "1.0", "-0"]),
        (pa.bool_(), [True, None]),
    ],
    "string": [
        (pa.string(), ["a", "", None, 'q"uote', "\\", "\u00e9\u0001"]),
        (pa.large_string(), ["a", None]),
        (pa.int64(), [1, None]),
    ],
    "bool": [(pa.bool_(), [True, False, None]), (pa.int8(), [1, None]), (pa.string(), ["true"])],
    "ts": [
        (
            pa.timestamp("us", tz="UTC"),
            [
                dt.datetime(2016, 11, 8, 10, 15, 0, 123456, tzinfo=UTC),
                dt.datetime(1, 1, 1, tzinfo=UTC),
                dt.datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
                None,
            ],
        ),
        (pa.timestamp("ms", tz="Asia/Kathmandu"), [dt.datetime(2016, 1, 1, tzinfo=UTC), None]),
        (pa.timestamp("ns", tz="UTC"), [dt.datetime(2016, 1, 1, 0, 0, 0, 1, tzinfo=UTC)]),
        (pa.timestamp("us"), [dt.datetime(2016, 11, 8), None]),
        (pa.string(), ["2016-11-08T00:00:00Z", "2016-11-08T00:00:00", None, "x"]),
        (pa.date32(), [dt.date(2016, 1, 1), None]),
        (pa.int64(), [1478599200, None]),
    ],
    "tz": [(pa.string(), ["UTC", "Mars/X", None, ""]), (pa.int64(), [1, None])],
    "selections": [
        (
            pa.list_(pa.struct([("field_id", pa.int64()), ("value", pa.string())])),
            [
                [{"field_id": 1, "value": "a"}],
                [],
                None,
                [None],
                [{"field_id": None, "value": "a"}],
                [{"field_id": 2, "value": None}],
                [{"field_id": 1, "value": 'x"y'}, {"field_id": 3, "value": "b"}],
            ],
        ),
        (
            pa.list_(pa.struct([("field_id", pa.string()), ("value", pa.string())])),
            [[{"field_id": "1", "value": "a"}], [{"field_id": "z", "value": "a"}]],
        ),
        (pa.list_(pa.struct([("field_id", pa.int64())])), [[{"field_id": 1}], None, []]),
        (pa.string(), ["[]", None]),
    ],
    "options": [
        (
            pa.list_(pa.struct([("value", pa.string()), ("name", pa.string())])),
            [[{"value": "a", "name": "A"}], [], None, [None], [{"value": "a", "name": None}]],
        ),
        (pa.list_(pa.struct([("value", pa.int64()), ("name", pa.string())])), [None]),
    ],
    "styles": [
        (
            pa.struct([("thumb", pa.string()), ("medium", pa.string())]),
            [{"thumb": "t", "medium": "m"}, None, {"thumb": None, "medium": "m"}],
        ),
        (pa.struct([("thumb", pa.string())]), [{"thumb": "t"}, None]),
    ],
}


@pytest.mark.parametrize("stream", sorted(STREAMS))
def test_fast_pass_agrees_with_detailed_validation_on_parquet(
    validation_conn, tmp_path: Path, stream: str
) -> None:
    from metrics_etl.ingest import validate

    spec = STREAMS[stream]
    good = {f.name: PARQUET_VARIANTS[f.type][0] for f in spec.fields}
    accepted = 0
    for f in spec.fields:
        for variant, (column_type, values) in enumerate([*PARQUET_VARIANTS[f.type], (None, [])]):
            rows = max(len(values), 1)
            columns = {}
            for g in spec.fields:
                if g is f and column_type is None:
                    continue  # no such column
                typ, vals = (column_type, values) if g is f else good[g.name]
                if g is not f:  # a good value for every other column
                    vals = [vals[0]] * rows
                    if g.type == "tz":
                        vals = ["UTC"] * rows
                    if g.name == "run_type":
                        vals = ["manual"] * rows
                columns[g.name] = pa.array(vals, typ)
            columns["extra"] = pa.array(range(rows))
            path = tmp_path / f"{f.name}-{variant}.parquet"
            parquet(path, pa.table(columns))
            scan = f"read_parquet('{path}', file_row_number = true)"
            described = validation_conn.execute(f"describe select * from {scan}").fetchall()
            types = {row[0]: row[1] for row in described if row[0] != "file_row_number"}
            struct = ", ".join(f"'{c}': {validate.quote_ident(c)}" for c in types)
            lines = (
                f"(select 'f' as file, file_row_number + 1 as line, "
                f"to_json({{{struct}}})::varchar as text, false as bad_utf8, false as blank "
                f"from {scan})"
            )
            source = f"(select file_row_number + 1 as line, * from {scan})"
            fast = validate.parquet_fast_sql(spec, source, types)
            wrong, left, ok = fast_and_detailed(validation_conn, stream, fast, lines)
            assert wrong == [], (f.name, column_type)
            assert left <= 2, (f.name, column_type)  # ints written +3 or -0
            accepted += ok
    assert accepted > 0


def test_line_numbers_blank_lines_and_block_edges(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    base_world(raw)
    good = {"account_id": 1, "report_id": 1, "user_id": 3, "read_at": T0}
    lines = [
        json.dumps({**good, "read_id": 1}).encode() + b"\r",  # CRLF
        b"",
        b" \t\r",
        "\u00a0\u3000".encode(),  # only Unicode whitespace: blank
        json.dumps({**good, "read_id": 2, "pad": "x" * 300}).encode(),  # longer than a block
        b'{"read_id": 3, "bad": "\xff"}',  # not UTF-8
        json.dumps({**good, "read_id": 4}).encode() + b"\r\r",
        b"garbage",
        json.dumps({**good, "read_id": 5}).encode(),  # last line, no final newline
    ]
    path = raw / "reads/edges.jsonl"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"\n".join(lines))
    for chunk_bytes in (7, 64, 1 << 20):
        warehouse = tmp_path / f"wh{chunk_bytes}"
        conn = pipeline.open_writer(warehouse)
        loading.ingest(conn, discover.discover(raw), "r1", chunk_bytes)
        rows = conn.execute("select read_id, _line from raw_reads order by 1").fetchall()
        assert rows == [(1, 1), (2, 5), (4, 7), (5, 9)]
        rejects = conn.execute(
            "select line, raw, reason from rejects where file = 'reads/edges.jsonl' order by 1"
        ).fetchall()
        assert [(line, reason.split(":")[0]) for line, _, reason in rejects] == [
            (6, "line is not valid UTF-8"),
            (8, "invalid JSON"),
        ]
        assert rejects[1][1] == "garbage"
        assert accounting_of(conn)["reads/edges.jsonl"] == (6, 4, 2)
        blank = conn.execute(
            "select blank_lines from file_stats where file = 'reads/edges.jsonl'"
        ).fetchall()
        assert blank == [(3,)]
        ref = Reference(raw, AS_OF)
        assert rejects_of(conn) == {(r["stream"], r["file"], r["line"]) for r in ref.rejects}
        conn.close()


def test_keys_are_tracked_only_for_an_incremental_transform(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full rebuild reads everything, so its ingest records no changed keys; the raw tables
    are the same either way, and runs that may go incremental do record them."""
    raw = tmp_path / "raw"
    bad_lines_world(raw)
    untracked = pipeline.open_writer(tmp_path / "a")
    loading.ingest(untracked, discover.discover(raw), "r1", 1 << 20, track=False)
    tracked, _ = load(raw, tmp_path / "b")
    keys = "select count(*) from dirty_keys"
    assert untracked.execute(keys).fetchall() == [(0,)]
    assert tracked.execute(keys).fetchall()[0][0] > 0
    for stream in STREAMS:
        query = f"select * from raw_{stream} order by all"
        assert untracked.execute(query).fetchall() == tracked.execute(query).fetchall(), stream
    untracked.close()
    tracked.close()

    calls: list[bool] = []
    real = loading.load

    def spy(*args, **kwargs):
        calls.append(args[5])  # track
        return real(*args, **kwargs)

    def tracked_in(*args) -> set[bool]:
        calls.clear()
        pipeline.run(*args)
        return set(calls)

    monkeypatch.setattr(loading, "load", spy)
    warehouse = tmp_path / "wh"
    full = tracked_in(raw, warehouse, AS_OF, False)  # first build: full
    jsonl(
        raw / "reads/late.jsonl",
        [{"read_id": 99, "account_id": 1, "report_id": 1, "user_id": 3, "read_at": T0}],
    )
    incremental = tracked_in(raw, warehouse, AS_OF, False)
    refresh = tracked_in(raw, warehouse, AS_OF, True)  # --full-refresh
    assert (full, incremental, refresh) == ({False}, {True}, {False})


def _loaded_state(conn) -> dict[str, list]:
    """Every raw table, reject and count, in a comparable order."""
    tables = {f"raw_{s}": "select * from raw_" + s + " order by all" for s in STREAMS}
    tables["rejects"] = "select stream, file, line, raw, reason from rejects order by all"
    tables["file_stats"] = (
        "select file, lines_read, blank_lines, accepted, rejected from file_stats order by all"
    )
    return {name: conn.execute(sql).fetchall() for name, sql in tables.items()}


def files_the_scan_refuses(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """A list that collects the files the parallel scan refuses (read by the block reader)."""
    refused: list[str] = []
    scanned = loading._load_scanned

    def watched(conn, stream, raw_file, *args):  # type: ignore[no-untyped-def]
        try:
            return scanned(conn, stream, raw_file, *args)
        except loading.NotVouched:
            refused.append(raw_file.rel)
            raise

    monkeypatch.setattr(loading, "_load_scanned", watched)
    return refused


def test_the_parallel_scan_loads_what_the_block_reader_loads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Well-formed JSONL (plain and gzip) is read by DuckDB's parallel scan, and loads exactly
    what the block-by-block reader loads: rows, line numbers, rejects and counts. A file the scan
    cannot read exactly (a byte order mark, a truncated gzip, a carriage return)
    falls back to the block reader, with the same outcome."""
    import gzip

    raw = tmp_path / "raw"
    base_world(raw)
    good = {"account_id": 1, "report_id": 1, "user_id": 3, "read_at": T0}
    lines = [
        json.dumps({**good, "read_id": 1}).encode(),
        b"",
        b"   ",
        "\u00a0\u3000".encode(),  # only Unicode whitespace: blank
        json.dumps({**good, "read_id": 2, "s": "\\u00e9\u00e9 \\" + '"'}).encode(),
        b"garbage",
        b"[1, 2]",
        json.dumps({**good, "read_id": "3"}).encode(),  # a string holding an int
        json.dumps({**good, "read_id": 4, "read_at": "2017-01-01T00:00:00"}).encode(),
        b'{"read_id": 5, "read_id": 6, "account_id": 1, "report_id": 1, "user_id": 3, '
        b'"read_at": "2017-01-01T00:00:00Z"}',
        json.dumps({**good, "read_id": 7}).encode(),
    ]
    body = b"\n".join(lines)
    (raw / "reads").mkdir()
    well_formed = {
        "reads/plain.jsonl": body + b"\n",
        "reads/no-final-newline.jsonl": body,
        "reads/z.jsonl.gz": gzip.compress(body + b"\n"),
        "reads/empty.jsonl": b"",
        "reads/blank.jsonl.gz": gzip.compress(b"\n\n \n"),
        "reads/members.jsonl.gz": gzip.compress(body[:100]) + gzip.compress(body[100:]),
    }
    odd = {
        "reads/bom.jsonl": b"\xef\xbb\xbf" + body,
        "reads/cut.jsonl.gz": gzip.compress(body)[:-9],
        "reads/crlf.jsonl": body.replace(b"\n", b"\r\n"),
    }
    for name, data in {**well_formed, **odd}.items():
        (raw / name).write_bytes(data)
    refused = files_the_scan_refuses(monkeypatch)
    conn, _ = load(raw, tmp_path / "wh-scan")
    assert not set(refused) & set(well_formed)
    assert set(odd) <= set(refused)

    def never(*args):  # type: ignore[no-untyped-def]
        raise loading.NotVouched("the block reader only")

    monkeypatch.setattr(loading, "_load_scanned", never)
    blocks, _ = load(raw, tmp_path / "wh-blocks")
    assert _loaded_state(conn) == _loaded_state(blocks)
    ref = Reference(raw, AS_OF)
    assert rejects_of(conn) == {(r["stream"], r["file"], r["line"]) for r in ref.rejects}
    assert conn.execute(
        "select count(*) from raw_reads where _file = 'reads/plain.jsonl'"
    ).fetchall() == [(4,)]


def test_the_parallel_scan_numbers_lines_in_file_order_across_buffers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Lines are numbered in file order however many buffers the scan reads in parallel."""
    import gzip

    raw = tmp_path / "raw"
    base_world(raw)
    (raw / "reads").mkdir()
    rows = [
        json.dumps(
            {"read_id": i, "account_id": 1, "report_id": 1, "user_id": 3, "read_at": T0}
        ).encode()
        if i % 997
        else b""
        for i in range(1, 30_001)
    ]
    (raw / "reads/big.jsonl").write_bytes(b"\n".join(rows) + b"\n")
    (raw / "reads/big2.jsonl.gz").write_bytes(gzip.compress(b"\n".join(rows[::-1])))
    monkeypatch.setattr(loading, "SCAN_LINE_BYTES", 1 << 12)
    monkeypatch.setattr(loading, "SCAN_BUFFER_BYTES", 1 << 16)  # 40 buffers a file
    refused = files_the_scan_refuses(monkeypatch)
    conn, _ = load(raw, tmp_path / "wh")
    assert not refused
    wrong = conn.execute(
        "select count(*) from raw_reads where "
        "(_file = 'reads/big.jsonl' and _line <> read_id) "
        "or (_file = 'reads/big2.jsonl.gz' and _line <> 30001 - read_id)"
    ).fetchall()
    assert wrong == [(0,)]
    assert accounting_of(conn)["reads/big.jsonl"] == (29_970, 29_970, 0)


def _reads_with_a_long_line(raw: Path) -> None:
    """A reads file of numbered records, one of them a 100 kB line, and a bad record."""
    base_world(raw)
    (raw / "reads").mkdir()
    good = {"account_id": 1, "report_id": 1, "user_id": 3, "read_at": T0}
    rows = [json.dumps({**good, "read_id": i}).encode() for i in range(1, 3_001)]
    rows[1_500] = json.dumps({**good, "read_id": 1_501, "note": "x" * 100_000}).encode()
    rows[2_000] = b'{"read_id": "two thousand and one"}'
    (raw / "reads/long.jsonl").write_bytes(b"\n".join(rows) + b"\n")


def test_a_line_longer_than_the_scans_buffer_is_read_by_the_block_reader(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DuckDB's scan refuses a line longer than its buffer ("not implemented"): the file is read
    block by block instead, with every line accounted for, not a failed run."""
    raw = tmp_path / "raw"
    _reads_with_a_long_line(raw)
    monkeypatch.setattr(loading, "SCAN_LINE_BYTES", 1 << 12)
    monkeypatch.setattr(loading, "SCAN_BUFFER_BYTES", 1 << 16)
    refused = files_the_scan_refuses(monkeypatch)
    conn, _ = load(raw, tmp_path / "wh")
    assert refused == ["reads/long.jsonl"]
    assert accounting_of(conn)["reads/long.jsonl"] == (3_000, 2_999, 1)
    rejected = conn.execute("select line from rejects where file = 'reads/long.jsonl'")
    assert rejected.fetchall() == [(2_001,)]
    wrong = conn.execute(
        "select count(*) from raw_reads where _file = 'reads/long.jsonl' and _line <> read_id"
    ).fetchall()
    assert wrong == [(0,)]


def test_lines_that_do_not_fit_twice_are_numbered_as_the_scan_streams_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the scanned lines and the fast pass do not fit in memory and the temp directory at
    once, the fast pass numbers the lines as the scan streams them: the same rows, line numbers,
    rejects and counts."""
    import duckdb

    raw = tmp_path / "raw"
    _reads_with_a_long_line(raw)
    expected, _ = load(raw, tmp_path / "wh-parallel")

    def out_of_memory(*args):  # type: ignore[no-untyped-def]
        raise duckdb.OutOfMemoryException("failed to offload data block")

    monkeypatch.setattr(loading, "_numbered_lines", out_of_memory)
    refused = files_the_scan_refuses(monkeypatch)
    conn, _ = load(raw, tmp_path / "wh-streamed")
    assert not refused
    assert _loaded_state(conn) == _loaded_state(expected)


def test_the_scan_refuses_to_number_lines_without_insertion_order(tmp_path: Path) -> None:
    """Row ids follow the file's order only with preserve_insertion_order: without it the scan
    is refused (the block reader numbers the lines)."""
    raw = tmp_path / "raw"
    _reads_with_a_long_line(raw)
    conn = pipeline.open_writer(tmp_path / "wh")
    conn.execute("set preserve_insertion_order = false")
    raw_file = next(f for f in discover.discover(raw).files if f.rel == "reads/long.jsonl")
    opened = discover.hashed(raw_file)
    try:
        assert "preserve_insertion_order" in (loading.scan_ahead(conn, raw_file, opened) or "")
    finally:
        os.close(opened.fd)
