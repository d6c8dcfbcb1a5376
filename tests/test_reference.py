"""Hand-computed checks of the independent reference (tests/reference.py).

Every expected value below was worked out by hand from the contracts and the
README decisions; none comes from running the pipeline.
"""

from __future__ import annotations

import gzip
import json
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

try:
    from reference import Reference
except ImportError:  # tests/ imported as a package
    from tests.reference import Reference

AS_OF = datetime(2016, 12, 1, tzinfo=UTC)
T0 = "2016-01-01T00:00:00Z"


def write_jsonl(raw: Path, rel: str, lines: list, gz: bool = False) -> None:
    """Each item: a dict (dumped as JSON) or a str (written verbatim)."""
    path = raw / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines)
    data = text.encode("utf-8")
    path.write_bytes(gzip.compress(data) if gz else data)


def write_parquet(raw: Path, rel: str, table: pa.Table) -> None:
    path = raw / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)


def report(rid, channel, user=3, created="2016-11-07T00:00:00Z", updated=T0, **kw):
    rec = {
        "report_id": rid,
        "account_id": 1,
        "channel_id": channel,
        "user_id": user,
        "token": f"tok{rid}",
        "created_at": created,
        "updated_at": updated,
    }
    rec.update(kw)
    return rec


# --------------------------------------------------------------------------
# Loading: latest wins, ties, dedup, bad records, accounting, file selection
# --------------------------------------------------------------------------


def test_latest_wins_and_tie_break(tmp_path):
    raw = tmp_path / "raw"
    write_jsonl(
        raw,
        "reports/2016/a.jsonl",
        [
            report(1, 1, token="new", updated="2016-11-08T00:00:00Z"),
            report(2, 1, token="a2", updated="2016-11-01T00:00:00Z"),
            report(2, 1, token="a2-later-line", updated="2016-11-01T00:00:00Z"),
            # 7th fractional digit truncated: ties with b.jsonl line 3
            report(3, 1, token="a3", updated="2016-11-01T00:00:00.1234567Z"),
            report(5, 1, token="a5", updated="2016-11-01T00:00:00Z"),
            report(
                6,
                1,
                token="a6-deleted",
                updated="2016-11-01T00:00:00Z",
                deleted_at="2016-11-01T00:00:00Z",
            ),
        ],
    )
    write_jsonl(
        raw,
        "reports/2016/b.jsonl",
        [
            report(1, 1, token="old", updated="2016-11-07T00:00:00Z"),  # older, later file
            report(2, 1, token="b2", updated="2016-11-01T00:00:00Z"),  # tie, later file
            report(3, 1, token="b3", updated="2016-11-01T00:00:00.123456Z"),
            report(4, 1, token="b4", updated="2016-11-01T05:45:00+05:45"),
            report(5, 1, token="b5", updated="2016-11-02T00:00:00Z"),  # newer, later file
            report(6, 1, token="b6-undeleted", updated="2016-11-02T00:00:00Z"),
        ],
    )
    write_jsonl(
        raw, "reports/2016/c.jsonl", [report(4, 1, token="c4", updated="2016-11-01T00:00:00Z")]
    )
    ref = Reference(raw, AS_OF)
    cur = ref.current("reports")
    assert {k: v["token"] for k, v in cur.items()} == {
        1: "new",
        2: "a2",
        3: "a3",
        4: "b4",
        5: "b5",
        6: "b6-undeleted",
    }
    assert cur[3]["updated_at"] == datetime(2016, 11, 1, 0, 0, 0, 123456, tzinfo=UTC)
    assert cur[4]["updated_at"] == datetime(2016, 11, 1, tzinfo=UTC)
    assert cur[6]["deleted_at"] is None
    assert cur[1]["selections"] is None and cur[1]["state_id"] is None
    assert ref.rejects == []


def test_event_dedup_smallest_file_line_wins(tmp_path):
    raw = tmp_path / "raw"
    read = {"read_id": 10, "account_id": 1, "report_id": 1, "read_at": "2016-11-08T10:00:00Z"}
    write_jsonl(
        raw, "reads/x.jsonl", [{**read, "read_id": 11, "user_id": 1}, {**read, "user_id": 5}]
    )
    write_jsonl(
        raw,
        "reads/a.jsonl",
        [
            {**read, "read_id": 12, "user_id": 1},
            {**read, "read_id": 13, "user_id": 1},
            {**read, "user_id": 6},
            {**read, "user_id": 7},
        ],
    )
    ref = Reference(raw, AS_OF)
    cur = ref.current("reads")
    assert sorted(cur) == [10, 11, 12, 13]
    assert cur[10]["user_id"] == 6  # reads/a.jsonl line 3 < reads/x.jsonl line 2
    assert cur[10]["read_at"] == datetime(2016, 11, 8, 10, tzinfo=UTC)


def test_bad_records_each_kind_and_accounting(tmp_path):
    raw = tmp_path / "raw"
    ok = report(1, 1)
    lines = [
        ok,  # 1 ok
        "",  # 2 blank
        "   \t",  # 3 blank
        "{not json",  # 4 invalid JSON
        "[1, 2]",  # 5 not an object
        {k: v for k, v in report(2, 1).items() if k != "token"},  # 6 missing field
        report(3, None),  # 7 null required
        report(4, 1, token=123),  # 8 wrong type
        report(5, "7"),  # 9 string int: ok
        report(6, 1.0),  # 10 float int
        report(7, 1, created="2016-11-07T10:00:00"),  # 11 naive ts
        report(8, 1, created="2016-11-07T10:00Z"),  # 12 no seconds
        report(9, 1, selections=[{"field_id": 2}]),  # 13 selection lacks value
        report(10, 1, selections=["v1"]),  # 14 selection not an object
        report(11, True),  # 15 bool for int
        '{"report_id": NaN}',  # 16 not JSON
        report(12, 1, updated="2016-02-30T00:00:00Z"),  # 17 not a real date
        report(13, "9223372036854775808"),  # 18 out of int64
        {
            **report(
                14,
                1,
                created="2016-11-07 10:00:00.123456789+0545",
                selections=[{"field_id": "2", "value": "v"}],
            ),
            "extra": [1],
        },  # 19 ok
        "42",  # 20 not an object
        report(15, 1, state_id=" 3"),  # 21 int with spaces
        report(16, 1, selections=[{"field_id": 2, "value": None}]),  # 22 null value in element
        report(17, 1, created="2016-11-07T10:00:00+05:45"),  # 23 ok
    ]
    write_jsonl(raw, "reports/r.jsonl", lines)
    write_jsonl(
        raw,
        "accounts/a.jsonl",
        [
            {
                "account_id": 1,
                "username": "a",
                "name": "A",
                "timezone": "Mars/Olympus",
                "updated_at": T0,
            },
            {"account_id": 2, "username": "b", "name": "B", "timezone": None, "updated_at": T0},
            {"account_id": 3, "username": "c", "name": "C", "timezone": "", "updated_at": T0},
            {"account_id": 4, "username": "d", "name": "D", "updated_at": T0},
            {
                "account_id": 5,
                "username": "e",
                "name": "E",
                "timezone": "Asia/Kathmandu",
                "updated_at": T0,
            },
        ],
    )
    run = {"account_id": 1, "report_id": 1, "user_id": 1, "ran_at": T0}
    write_jsonl(
        raw,
        "report_runs/r.jsonl",
        [
            {**run, "run_id": 1, "run_type": "Manual"},
            {**run, "run_id": 2, "run_type": "scheduled"},
            {**run, "run_id": 3, "run_type": None},
            {**run, "run_id": 4, "run_type": "manual"},
        ],
    )
    img = {"report_id": 1, "account_id": 1, "created_at": T0, "updated_at": T0}
    write_jsonl(
        raw,
        "report_images/i.jsonl",
        [
            {**img, "report_image_id": 1, "styles": {"medium": "m"}},
            {**img, "report_image_id": 2, "styles": None},
            {**img, "report_image_id": 3},
            {**img, "report_image_id": 4, "styles": {"thumb": "t", "medium": "m", "large": "l"}},
        ],
    )
    fld = {"account_id": 1, "field_type": "Category", "label": "L", "updated_at": T0}
    write_jsonl(
        raw,
        "fields/f.jsonl",
        [
            {**fld, "field_id": 1, "options": [{"value": "v"}]},
            {**fld, "field_id": 2, "options": None},
            {**fld, "field_id": 3, "options": [{"value": "v", "name": "n", "x": 1}]},
        ],
    )
    ch = {"account_id": 1, "name": "c", "updated_at": T0}
    write_jsonl(
        raw,
        "channels/c.jsonl",
        [
            {**ch, "channel_id": 1, "personal": "yes"},
            {**ch, "channel_id": 2, "personal": None},
            {**ch, "channel_id": 3, "deleted_at": "garbage"},
            "\r",
            {**ch, "channel_id": 4},
        ],
    )
    ref = Reference(raw, AS_OF)

    bad = {(r["file"], r["line"]) for r in ref.rejects}
    assert bad == {
        *(
            ("reports/r.jsonl", n)
            for n in (4, 5, 6, 7, 8, 10, 11, 12, 13, 14, 15, 16, 17, 18, 20, 21, 22)
        ),
        ("accounts/a.jsonl", 1),
        ("accounts/a.jsonl", 3),
        ("report_runs/r.jsonl", 1),
        ("report_runs/r.jsonl", 3),
        ("report_images/i.jsonl", 1),
        ("report_images/i.jsonl", 2),
        ("report_images/i.jsonl", 3),
        ("fields/f.jsonl", 1),
        ("channels/c.jsonl", 1),
        ("channels/c.jsonl", 3),
    }
    assert all(r["stream"] == r["file"].split("/")[0] and r["reason"] for r in ref.rejects)
    assert ref.accounting == {
        "reports/r.jsonl": {"stream": "reports", "lines_read": 21, "accepted": 4, "rejected": 17},
        "accounts/a.jsonl": {"stream": "accounts", "lines_read": 5, "accepted": 3, "rejected": 2},
        "report_runs/r.jsonl": {
            "stream": "report_runs",
            "lines_read": 4,
            "accepted": 2,
            "rejected": 2,
        },
        "report_images/i.jsonl": {
            "stream": "report_images",
            "lines_read": 4,
            "accepted": 1,
            "rejected": 3,
        },
        "fields/f.jsonl": {"stream": "fields", "lines_read": 3, "accepted": 2, "rejected": 1},
        "channels/c.jsonl": {"stream": "channels", "lines_read": 4, "accepted": 2, "rejected": 2},
    }
    assert ref.blank_lines["reports/r.jsonl"] == 2
    assert ref.blank_lines["channels/c.jsonl"] == 1

    reports = ref.current("reports")
    assert sorted(reports) == [1, 5, 14, 17]
    assert reports[5]["channel_id"] == 7
    # 10:00:00.123456789 at +05:45 -> 04:15:00.123456 UTC (truncated, not rounded)
    assert reports[14]["created_at"] == datetime(2016, 11, 7, 4, 15, 0, 123456, tzinfo=UTC)
    assert reports[14]["selections"] == [{"field_id": 2, "value": "v"}]
    assert reports[17]["created_at"] == datetime(2016, 11, 7, 4, 15, tzinfo=UTC)
    accounts = ref.current("accounts")
    assert {k: v["timezone"] for k, v in accounts.items()} == {
        2: None,
        4: None,
        5: "Asia/Kathmandu",
    }
    assert ref.current("report_images")[4]["styles"] == {"thumb": "t", "medium": "m"}
    assert ref.current("fields")[3]["options"] == [{"value": "v", "name": "n"}]
    assert ref.current("channels")[2]["personal"] is None


def test_file_selection_gzip_and_crlf(tmp_path):
    raw = tmp_path / "raw"
    read = {"account_id": 1, "report_id": 1, "user_id": 1, "read_at": "2016-11-08T10:00:00Z"}
    write_jsonl(
        raw,
        "reads/2016/11/x.jsonl.gz",
        [{**read, "read_id": 1}, "", {**read, "read_id": 2}],
        gz=True,
    )
    (raw / "reads/crlf.jsonl").write_bytes(
        (
            json.dumps({**read, "read_id": 3}) + "\r\n\r\n" + json.dumps({**read, "read_id": 4})
        ).encode()
    )  # last line without newline
    write_jsonl(raw, "notastream/x.jsonl", [{**read, "read_id": 5}])
    write_jsonl(raw, "top.jsonl", [{**read, "read_id": 6}])
    write_jsonl(raw, "reads/x.csv", ["a,b"])
    write_jsonl(raw, "_generator.json", ["{}"])
    write_jsonl(raw, "reads/.tmp-x.jsonl", [{**read, "read_id": 7}])
    write_jsonl(raw, "reads/_staging/y.jsonl", [{**read, "read_id": 8}])
    write_jsonl(raw, ".hidden/reads/z.jsonl", [{**read, "read_id": 9}])
    write_jsonl(raw, "_old/reads/z.jsonl", [{**read, "read_id": 10}])
    ref = Reference(raw, AS_OF)
    assert sorted(ref.current("reads")) == [1, 2, 3, 4]
    assert sorted(ref.skipped) == ["notastream/x.jsonl", "reads/x.csv", "top.jsonl"]
    assert ref.accounting == {
        "reads/2016/11/x.jsonl.gz": {
            "stream": "reads",
            "lines_read": 2,
            "accepted": 2,
            "rejected": 0,
        },
        "reads/crlf.jsonl": {"stream": "reads", "lines_read": 2, "accepted": 2, "rejected": 0},
    }


def test_parquet(tmp_path):
    raw = tmp_path / "raw"
    aware = pa.timestamp("us", tz="UTC")
    table = pa.table(
        {
            "report_id": pa.array([1, 2], pa.int32()),
            "account_id": pa.array([1, 1], pa.int64()),
            "channel_id": pa.array(["1", "x"], pa.string()),  # string column: int rules
            "user_id": pa.array([3, 3], pa.int64()),
            "token": pa.array(["t1", "t2"]),
            "created_at": pa.array(
                [
                    datetime(2016, 11, 7, 10, 0, 0, 123456, tzinfo=UTC),
                    datetime(2016, 11, 7, tzinfo=UTC),
                ],
                aware,
            ),
            "updated_at": pa.array(["2016-11-08T00:00:00+01:00", "2016-11-08T00:00:00Z"]),
            "deleted_at": pa.array([None, None], aware),
            "selections": pa.array(
                [[{"field_id": 2, "value": "v1"}], None],
                pa.list_(pa.struct([("field_id", pa.int64()), ("value", pa.string())])),
            ),
        }
    )
    write_parquet(raw, "reports/p.parquet", table)
    naive = pa.table(
        {
            "read_id": [1, 2],
            "account_id": [1, 1],
            "report_id": [1, 1],
            "user_id": [1, 1],
            "read_at": pa.array([datetime(2016, 11, 7), datetime(2016, 11, 8)], pa.timestamp("us")),
        }
    )
    write_parquet(raw, "reads/naive.parquet", naive)
    ns = pa.table(
        {
            "read_id": [3, 4],
            "account_id": [1, 1],
            "report_id": [1, 1],
            "user_id": pa.array([1.0, 1.0]),  # float column for an int field: bad for every row
            "read_at": pa.array([1478512800123456789, 0], pa.timestamp("ns", tz="Asia/Kathmandu")),
        }
    )
    write_parquet(raw, "reads/ns.parquet", ns)
    ns_ok = ns.set_column(3, "user_id", pa.array([1, 2], pa.int64()))
    write_parquet(raw, "reads/ns_ok.parquet", ns_ok)
    ref = Reference(raw, AS_OF)
    reports = ref.current("reports")
    assert list(reports) == [1]
    assert reports[1]["channel_id"] == 1 and reports[1]["selections"] == [
        {"field_id": 2, "value": "v1"}
    ]
    assert reports[1]["created_at"] == datetime(2016, 11, 7, 10, 0, 0, 123456, tzinfo=UTC)
    assert reports[1]["updated_at"] == datetime(2016, 11, 7, 23, tzinfo=UTC)
    assert reports[1]["deleted_at"] is None
    assert {(r["file"], r["line"]) for r in ref.rejects} == {
        ("reports/p.parquet", 2),
        ("reads/naive.parquet", 1),
        ("reads/naive.parquet", 2),
        ("reads/ns.parquet", 1),
        ("reads/ns.parquet", 2),
    }
    assert ref.accounting["reads/naive.parquet"] == {
        "stream": "reads",
        "lines_read": 2,
        "accepted": 0,
        "rejected": 2,
    }
    reads = ref.current("reads")
    assert sorted(reads) == [3, 4]
    # 1478512800.123456789 s -> microseconds truncated; the column's zone does not matter
    assert reads[3]["read_at"] == datetime(2016, 11, 7, 10, 0, 0, 123456, tzinfo=UTC)
    assert reads[4]["read_at"] == datetime(1970, 1, 1, tzinfo=UTC)


# --------------------------------------------------------------------------
# A small world for the API
# --------------------------------------------------------------------------


def build_world(raw: Path) -> None:
    write_jsonl(
        raw,
        "accounts/a.jsonl",
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
                "username": "globex",
                "name": "Globex",
                "timezone": None,
                "updated_at": T0,
            },
            {
                "account_id": 3,
                "username": "kat",
                "name": "Kat",
                "timezone": "Asia/Kathmandu",
                "updated_at": T0,
            },
            # old username of account 2; the current one is "globex"
            {
                "account_id": 2,
                "username": "oldglobex",
                "name": "G",
                "updated_at": "2015-01-01T00:00:00Z",
            },
        ],
    )
    ch = {"name": "c", "updated_at": T0}
    write_jsonl(
        raw,
        "channels/c.jsonl",
        [
            {**ch, "channel_id": 1, "account_id": 1, "personal": False},
            {**ch, "channel_id": 2, "account_id": 1, "personal": True, "owner_user_id": 3},
            {**ch, "channel_id": 3, "account_id": 1, "deleted_at": "2016-06-01T00:00:00Z"},
            {**ch, "channel_id": 4, "account_id": 2},
            {**ch, "channel_id": 5, "account_id": 3},
        ],
    )
    u = {"account_id": 1, "updated_at": T0}
    write_jsonl(
        raw,
        "users/u.jsonl",
        [
            {**u, "user_id": 3, "first_name": "John", "last_name": "Doe", "email": "john@x.com"},
            {**u, "user_id": 4, "first_name": "Ann", "last_name": "Lee", "email": None},
            {**u, "user_id": 5, "first_name": "Bob", "last_name": "Ray", "email": "b@x.com"},
            {**u, "user_id": 6, "last_name": "Zed", "email": "zed@x.com"},
            {**u, "user_id": 7, "first_name": "Al", "last_name": "Ice", "email": "Alice@X.com"},
        ],
    )
    write_jsonl(
        raw,
        "states/s.jsonl",
        [
            {"state_id": 1, "account_id": 1, "name": "Open", "updated_at": T0},
            {"state_id": 2, "account_id": 1, "name": "Closed", "updated_at": T0},
        ],
    )
    f = {"account_id": 1, "label": "L", "updated_at": T0}
    write_jsonl(
        raw,
        "fields/f.jsonl",
        [
            {
                **f,
                "field_id": 2,
                "field_type": "Category",
                "options": [
                    {"value": "v1", "name": "Resolved"},
                    {"value": "v2", "name": "Pending"},
                    {"value": "v1", "name": "Dup"},
                ],
            },
            {**f, "field_id": 3, "field_type": "Text"},
            {**f, "field_id": 4, "field_type": "Radio", "account_id": 2},
            {**f, "field_id": 5, "field_type": "DropDown"},  # no options at all
        ],
    )
    write_jsonl(
        raw,
        "reports/r1.jsonl",
        [
            # NY fall-back night: 01:30 EDT and 01:30 EST (Sunday Nov 6)
            report(
                101,
                1,
                user=3,
                created="2016-11-06T05:30:00Z",
                state_id=1,
                selections=[
                    {"field_id": 2, "value": "v1"},
                    {"field_id": 2, "value": "v1"},
                    {"field_id": 3, "value": "x"},
                ],
            ),
            report(
                102,
                1,
                user=4,
                created="2016-11-06T06:30:00Z",
                state_id=1,
                selections=[{"field_id": 2, "value": "v2"}, {"field_id": 5, "value": "q"}],
            ),
            report(
                103,
                1,
                user=3,
                created="2016-11-07T14:03:11.250Z",
                state_id=2,
                selections=[{"field_id": 2, "value": "v1"}, {"field_id": 2, "value": "v3"}],
            ),
            # 23:59:59.999999 EST Monday Nov 7
            report(104, 1, user=5, created="2016-11-08T04:59:59.999999Z"),
            report(
                105,
                1,
                user=3,
                created="2016-11-07T15:00:00Z",
                state_id=1,
                deleted_at="2016-11-20T00:00:00Z",
                updated="2016-11-20T00:00:00Z",
            ),
            report(106, 1, user=3, created="2016-11-07T10:00:00Z", state_id=1),  # moved later
            # a report whose own account_id disagrees with its channel's
            report(107, 1, user=5, created="2016-11-07T12:00:00Z", state_id=7, account_id=2),
            report(108, 1, user=3, created="2016-10-01T12:00:00Z"),
            report(201, 2, user=6, created="2016-11-07T12:00:00Z"),
            report(251, 3, user=3, created="2016-11-07T12:00:00Z"),
            report(252, 77, user=3, created="2016-11-07T12:00:00Z"),
            # Kathmandu (+05:45)
            report(301, 5, created="2016-11-07T18:14:59.999Z"),  # 23:59:59.999 Mon Nov 7
            report(302, 5, created="2016-11-07T18:15:00Z"),  # 00:00 Tue Nov 8
            report(303, 5, created="2016-11-07T10:20:00Z"),  # 16:05 Mon Nov 7
        ],
    )
    write_jsonl(
        raw,
        "reports/r2.jsonl",
        [
            report(
                106,
                4,
                user=3,
                created="2016-11-07T10:00:00Z",
                state_id=1,
                updated="2016-11-09T00:00:00Z",
            )
        ],
    )
    im = {"account_id": 1, "updated_at": T0, "styles": {"thumb": "t", "medium": "m"}}
    write_jsonl(
        raw,
        "report_images/i.jsonl",
        [
            {**im, "report_image_id": 1, "report_id": 108, "created_at": "2016-11-07T00:00:00Z"},
            {**im, "report_image_id": 2, "report_id": 101, "created_at": "2016-11-07T00:00:00Z"},
            {
                **im,
                "report_image_id": 3,
                "report_id": 103,
                "created_at": "2016-11-09T12:00:00.123999Z",
                "styles": {"thumb": "t3", "medium": "m3"},
            },
            {
                **im,
                "report_image_id": 4,
                "report_id": 103,
                "created_at": "2016-11-09T00:00:00Z",
                "deleted_at": "2016-11-10T00:00:00Z",
            },
            {**im, "report_image_id": 5, "report_id": 105, "created_at": "2016-11-09T00:00:00Z"},
            {**im, "report_image_id": 6, "report_id": 106, "created_at": "2016-11-09T00:00:00Z"},
            {**im, "report_image_id": 7, "report_id": 103, "created_at": "2016-10-15T00:00:00Z"},
            {**im, "report_image_id": 8, "report_id": 999, "created_at": "2016-11-09T00:00:00Z"},
        ],
    )
    rd = {"account_id": 1}
    write_jsonl(
        raw,
        "reads/a.jsonl",
        [
            {
                **rd,
                "read_id": 1,
                "report_id": 101,
                "user_id": 3,
                "read_at": "2016-11-08T10:00:00+01:00",
            },
            {**rd, "read_id": 2, "report_id": 101, "user_id": 3, "read_at": "2016-11-09T00:00:00Z"},
            {**rd, "read_id": 3, "report_id": 101, "user_id": 4, "read_at": "2016-11-09T00:00:00Z"},
            {**rd, "read_id": 4, "report_id": 108, "user_id": 4, "read_at": "2016-11-10T00:00:00Z"},
            {**rd, "read_id": 5, "report_id": 105, "user_id": 4, "read_at": "2016-11-10T00:00:00Z"},
            {**rd, "read_id": 6, "report_id": 106, "user_id": 4, "read_at": "2016-11-10T00:00:00Z"},
            {**rd, "read_id": 7, "report_id": 999, "user_id": 4, "read_at": "2016-11-10T00:00:00Z"},
            {**rd, "read_id": 8, "report_id": 103, "user_id": 5, "read_at": "2016-10-20T00:00:00Z"},
        ],
    )
    write_jsonl(  # a retry of read 1 with other content: a.jsonl line 1 wins
        raw,
        "reads/b.jsonl",
        [{**rd, "read_id": 1, "report_id": 102, "user_id": 9, "read_at": "2016-11-08T10:00:00Z"}],
    )
    al = {"account_id": 1}
    write_jsonl(
        raw,
        "alerts/a.jsonl",
        [
            {
                **al,
                "delivery_id": 1,
                "alert_id": 5,
                "report_id": 101,
                "user_id": 3,
                "sent_at": "2016-11-07T00:00:00Z",
            },
            {
                **al,
                "delivery_id": 2,
                "alert_id": 5,
                "report_id": 101,
                "user_id": 3,
                "sent_at": "2016-11-08T00:00:00Z",
            },
            {
                **al,
                "delivery_id": 3,
                "alert_id": 6,
                "report_id": 103,
                "user_id": 3,
                "sent_at": "2016-11-08T00:00:00Z",
            },
            {
                **al,
                "delivery_id": 4,
                "alert_id": 5,
                "report_id": 101,
                "user_id": 9,
                "sent_at": "2016-11-08T00:00:00Z",
            },
            {
                **al,
                "delivery_id": 5,
                "alert_id": 6,
                "report_id": 103,
                "user_id": 4,
                "sent_at": "2016-11-09T00:00:00Z",
            },
            {
                **al,
                "delivery_id": 6,
                "alert_id": 7,
                "report_id": 103,
                "user_id": 4,
                "sent_at": "2016-11-09T00:00:00Z",
            },
            {
                **al,
                "delivery_id": 7,
                "alert_id": 5,
                "report_id": 105,
                "user_id": 3,
                "sent_at": "2016-11-09T00:00:00Z",
            },
            {
                **al,
                "delivery_id": 8,
                "alert_id": 5,
                "report_id": 101,
                "user_id": 3,
                "sent_at": "2016-12-05T00:00:00Z",
            },
            {
                **al,
                "delivery_id": 9,
                "alert_id": 8,
                "report_id": 102,
                "user_id": 6,
                "sent_at": "2016-11-10T00:00:00Z",
            },
            {
                **al,
                "delivery_id": 10,
                "alert_id": 8,
                "report_id": 102,
                "user_id": 6,
                "sent_at": "2016-11-10T00:00:00Z",
            },
            {
                **al,
                "delivery_id": 10,
                "alert_id": 9,
                "report_id": 102,
                "user_id": 6,
                "sent_at": "2016-11-10T00:00:00Z",
            },
        ],
    )
    op = {"account_id": 1}
    write_jsonl(
        raw,
        "alert_opens/o.jsonl",
        [
            {**op, "open_id": 1, "delivery_id": 1, "opened_at": "2016-11-07T01:00:00Z"},
            {**op, "open_id": 2, "delivery_id": 2, "opened_at": "2016-11-08T01:00:00Z"},
            {**op, "open_id": 3, "delivery_id": 2, "opened_at": "2016-11-08T02:00:00Z"},
            {**op, "open_id": 4, "delivery_id": 4, "opened_at": "2017-06-01T00:00:00Z"},
            {
                **op,
                "open_id": 5,
                "delivery_id": 6,
                "opened_at": "2016-11-09T01:00:00Z",
                "account_id": 99,
            },
            {**op, "open_id": 6, "delivery_id": 777, "opened_at": "2016-11-09T01:00:00Z"},
        ],
    )
    sc = {"account_id": 1, "user_id": 3, "created_at": T0, "updated_at": T0}
    write_jsonl(
        raw,
        "schedules/s.jsonl",
        [
            {**sc, "schedule_id": 1, "report_id": 101, "paused": False},
            {**sc, "schedule_id": 2, "report_id": 101, "paused": True},
            {**sc, "schedule_id": 3, "report_id": 101, "deleted_at": "2016-02-01T00:00:00Z"},
            {**sc, "schedule_id": 4, "report_id": 101, "paused": None},
            {**sc, "schedule_id": 5, "report_id": 101, "paused": False},
            {
                **sc,
                "schedule_id": 5,
                "report_id": 101,
                "paused": True,
                "updated_at": "2016-02-01T00:00:00Z",
            },
            {**sc, "schedule_id": 6, "report_id": 103},
        ],
    )
    ex = {"account_id": 1, "user_id": 3, "created_at": T0}
    write_jsonl(
        raw,
        "explorations/e.jsonl",
        [
            {**ex, "exploration_id": 1, "report_id": 101},
            {**ex, "exploration_id": 2, "report_id": 101},
            {**ex, "exploration_id": 2, "report_id": 101},
            {**ex, "exploration_id": 3, "report_id": 108},
        ],
    )
    rn = {"account_id": 1, "report_id": 101}
    write_jsonl(
        raw,
        "report_runs/r.jsonl",
        [
            {
                **rn,
                "run_id": 1,
                "user_id": 3,
                "run_type": "manual",
                "ran_at": "2016-11-01T00:00:00Z",
            },
            {
                **rn,
                "run_id": 2,
                "user_id": 5,
                "run_type": "manual",
                "ran_at": "2016-10-31T23:59:59.999999Z",
            },
            {
                **rn,
                "run_id": 3,
                "user_id": 6,
                "run_type": "manual",
                "ran_at": "2016-12-01T00:00:00Z",
            },
            {
                **rn,
                "run_id": 4,
                "user_id": 4,
                "run_type": "manual",
                "ran_at": "2016-11-15T00:00:00Z",
            },
            {
                **rn,
                "run_id": 5,
                "user_id": 9,
                "run_type": "manual",
                "ran_at": "2016-11-15T00:00:00Z",
            },
            {
                **rn,
                "run_id": 6,
                "user_id": 5,
                "run_type": "scheduled",
                "ran_at": "2015-01-01T00:00:00Z",
            },
            {
                **rn,
                "run_id": 7,
                "user_id": 6,
                "run_type": "scheduled",
                "ran_at": "2017-01-01T00:00:00Z",
            },
            {
                **rn,
                "run_id": 8,
                "user_id": 3,
                "run_type": "scheduled",
                "ran_at": "2016-11-15T00:00:00Z",
            },
            {
                **rn,
                "run_id": 9,
                "user_id": 3,
                "run_type": "scheduled",
                "ran_at": "2016-11-16T00:00:00Z",
            },
            {
                **rn,
                "run_id": 10,
                "user_id": 5,
                "run_type": "manual",
                "ran_at": "2016-11-20T00:00:00-05:00",
                "report_id": 104,
            },
        ],
    )
    ed = {"account_id": 1, "report_id": 101, "edited_at": T0}
    write_jsonl(
        raw,
        "report_edits/e.jsonl",
        [
            {**ed, "edit_id": 1, "user_id": 5},
            {**ed, "edit_id": 2, "user_id": 7},
            {**ed, "edit_id": 3, "user_id": 3},
            {**ed, "edit_id": 4, "user_id": 4},
            {**ed, "edit_id": 5, "user_id": 7, "report_id": 102},
        ],
    )


@pytest.fixture(scope="module")
def ref(tmp_path_factory) -> Reference:
    raw = tmp_path_factory.mktemp("world") / "raw"
    build_world(raw)
    r = Reference(raw, AS_OF)
    assert r.rejects == [] and r.skipped == []
    return r


def A(endpoint: str, query: str) -> str:
    return f"/api/v4/analytics/{endpoint}?{query}"


RANGE_B = "channel_id=1&start_date=2016-11-01&end_date=2016-12-01"  # 30 days -> day
RANGE_A = (
    "channel_id=1&start_date=2016-11-06T00:00:00Z&end_date=2016-11-08T00:00:00Z"  # 2 days -> hour
)
KAT = "channel_id=5&start_date=2016-11-01T00:00:00Z&end_date=2016-11-30T00:00:00Z"


def rows_over_time(ref, query, account=1):
    status, body = ref.get(A("reports_over_time", query), account)
    assert status == 200, body
    return [(r["datetime_range_start"], r["report_count"], r["datetime_range_width"]) for r in body]


def test_current_keeps_deleted_versions(ref):
    reports = ref.current("reports")
    assert reports[105]["deleted_at"] == datetime(2016, 11, 20, tzinfo=UTC)
    assert reports[106]["channel_id"] == 4
    assert ref.current("schedules")[5]["paused"] is True
    assert ref.current("alerts")[10]["alert_id"] == 8
    assert ref.current("accounts")[2]["username"] == "globex"


# ---------------- reports_over_time ----------------


def test_ny_fall_back_night_two_hour_buckets(ref):
    assert rows_over_time(ref, RANGE_A) == [
        ("2016-11-06T05:00:00.000Z", 1, "hour"),  # 01:30 EDT
        ("2016-11-06T06:00:00.000Z", 1, "hour"),  # 01:30 EST
        ("2016-11-07T12:00:00.000Z", 1, "hour"),
        ("2016-11-07T14:00:00.000Z", 1, "hour"),
    ]
    _status, body = ref.get(A("reports_over_time", RANGE_A), 1)
    assert body[0] == {
        "account_id": 1,
        "datetime_range_start": "2016-11-06T05:00:00.000Z",
        "report_count": 1,
        "datetime_range_width": "hour",
    }


def test_ny_day_week_month_buckets(ref):
    assert rows_over_time(ref, RANGE_B) == [
        ("2016-11-06T04:00:00.000Z", 2, "day"),  # Nov 6 midnight is still EDT
        ("2016-11-07T05:00:00.000Z", 3, "day"),  # 103, 104 (23:59:59.999999 EST), 107
    ]
    assert rows_over_time(ref, RANGE_B + "&datetime_range_width=week") == [
        ("2016-10-31T04:00:00.000Z", 2, "week"),  # Monday Oct 31, EDT
        ("2016-11-07T05:00:00.000Z", 3, "week"),
    ]
    assert rows_over_time(ref, RANGE_B + "&datetime_range_width=month") == [
        ("2016-11-01T04:00:00.000Z", 5, "month"),
    ]
    assert rows_over_time(ref, RANGE_B + "&datetime_range_width=hour") == [
        ("2016-11-06T05:00:00.000Z", 1, "hour"),
        ("2016-11-06T06:00:00.000Z", 1, "hour"),
        ("2016-11-07T12:00:00.000Z", 1, "hour"),
        ("2016-11-07T14:00:00.000Z", 1, "hour"),
        ("2016-11-08T04:00:00.000Z", 1, "hour"),
    ]


def test_kathmandu_boundaries(ref):
    assert rows_over_time(ref, KAT, 3) == [
        ("2016-11-06T18:15:00.000Z", 2, "day"),  # Nov 7 local: 301, 303
        ("2016-11-07T18:15:00.000Z", 1, "day"),  # Nov 8 local: 302
    ]
    q = "channel_id=5&start_date=2016-11-07&end_date=2016-11-08"
    assert rows_over_time(ref, q, 3) == [
        ("2016-11-07T10:15:00.000Z", 1, "hour"),
        ("2016-11-07T17:15:00.000Z", 1, "hour"),
        ("2016-11-07T18:15:00.000Z", 1, "hour"),
    ]
    assert rows_over_time(ref, KAT + "&datetime_range_width=week", 3) == [
        ("2016-11-06T18:15:00.000Z", 3, "week"),
    ]
    assert rows_over_time(ref, KAT + "&datetime_range_width=month", 3) == [
        ("2016-10-31T18:15:00.000Z", 3, "month"),
    ]
    assert ref.get(A("reports_per_day_hour", KAT), 3) == (
        200,
        [
            {"account_id": 3, "hour": 0, "report_count": 1},
            {"account_id": 3, "hour": 16, "report_count": 1},
            {"account_id": 3, "hour": 23, "report_count": 1},
        ],
    )
    assert ref.get(A("reports_per_week_day", KAT), 3) == (
        200,
        [
            {"account_id": 3, "dow": 1, "report_count": 2},
            {"account_id": 3, "dow": 2, "report_count": 1},
        ],
    )
    # range edge exactly on the local midnight, given with a +05:45 offset
    q = "channel_id=5&start_date=2016-11-08T00:00:00%2B05:45&end_date=2016-11-09T00:00:00%2B0545"
    assert ref.get(A("reports_per_user", q), 3) == (
        200,
        [{"user_id": 3, "account_id": 3, "report_count": 1}],
    )


@pytest.mark.parametrize(
    "end, width",
    [
        ("2016-11-09T00:00:00Z", "hour"),
        ("2016-11-09T00:00:00.000001Z", "day"),
        ("2017-01-08T00:00:00Z", "day"),  # 62 days
        ("2017-01-08T00:00:00.000001Z", "week"),
        ("2018-11-09T00:00:00Z", "week"),  # 732 days (2017 and 2018 are not leap years)
        ("2018-11-09T00:00:00.000001Z", "month"),
    ],
)
def test_width_rule_edges(ref, end, width):
    rows = rows_over_time(ref, f"channel_id=1&start_date=2016-11-07T00:00:00Z&end_date={end}")
    assert rows and {w for _, _, w in rows} == {width}


# ---------------- range edges ----------------


def _user_counts(ref, start, end):
    status, body = ref.get(
        A("reports_per_user", f"channel_id=1&start_date={start}&end_date={end}"), 1
    )
    assert status == 200, body
    return [(r["user_id"], r["report_count"]) for r in body]


def test_microsecond_range_edges(ref):
    # report 104 was created at 2016-11-08T04:59:59.999999Z
    assert _user_counts(ref, "2016-11-08T04:59:59.999999Z", "2016-11-08T05:00:00Z") == [(5, 1)]
    assert _user_counts(ref, "2016-11-08T04:59:59.9999999Z", "2016-11-08T05:00:00Z") == [(5, 1)]
    assert _user_counts(ref, "2016-11-08T04:59:59.999Z", "2016-11-08T04:59:59.999999Z") == []
    assert _user_counts(ref, "2016-11-08T05:00:00Z", "2016-11-09") == []
    # the same instant with an offset; '+' left unencoded decodes to a space
    assert _user_counts(ref, "2016-11-08T10:29:59.999999+05:30", "2016-11-08T10:30+05:30") == [
        (5, 1)
    ]
    assert _user_counts(ref, "2016-11-07T23:59:59.999999-05:00", "2016-11-08T05:00:00") == [(5, 1)]


# ---------------- other analytics endpoints ----------------


def test_reports_per_user_state_field_hour_weekday(ref):
    assert ref.get(A("reports_per_user", RANGE_B), 1) == (
        200,
        [
            {"user_id": 3, "account_id": 1, "report_count": 2},
            {"user_id": 5, "account_id": 1, "report_count": 2},
            {"user_id": 4, "account_id": 1, "report_count": 1},
        ],
    )
    assert ref.get(A("reports_per_state", RANGE_B), 1) == (
        200,
        [
            {"id": 1, "name": "Open", "account_id": 1, "report_count": 2},
            {"id": 2, "name": "Closed", "account_id": 1, "report_count": 1},
            {"id": 7, "name": None, "account_id": 1, "report_count": 1},
        ],
    )
    assert ref.get(A("reports_per_field_selection", RANGE_B + "&field_id=2"), 1) == (
        200,
        [
            {"field_id": 2, "account_id": 1, "name": "Resolved", "value": "v1", "report_count": 2},
            {"field_id": 2, "account_id": 1, "name": "Pending", "value": "v2", "report_count": 1},
            {"field_id": 2, "account_id": 1, "name": None, "value": "v3", "report_count": 1},
        ],
    )
    assert ref.get(A("reports_per_field_selection", RANGE_B + "&field_id=5"), 1) == (
        200,
        [
            {"field_id": 5, "account_id": 1, "name": None, "value": "q", "report_count": 1},
        ],
    )
    assert ref.get(A("reports_per_day_hour", RANGE_B), 1) == (
        200,
        [
            {"account_id": 1, "hour": 1, "report_count": 2},
            {"account_id": 1, "hour": 7, "report_count": 1},
            {"account_id": 1, "hour": 9, "report_count": 1},
            {"account_id": 1, "hour": 23, "report_count": 1},
        ],
    )
    assert ref.get(A("reports_per_week_day", RANGE_B), 1) == (
        200,
        [
            {"account_id": 1, "dow": 0, "report_count": 2},
            {"account_id": 1, "dow": 1, "report_count": 3},
        ],
    )
    # the moved report counts in its new channel, for that channel's account
    q = "channel_id=4&start_date=2016-11-01&end_date=2016-12-01"
    assert ref.get(A("reports_per_user", q), 2) == (
        200,
        [{"user_id": 3, "account_id": 2, "report_count": 1}],
    )
    # a personal channel is a normal channel for analytics
    q = "channel_id=2&start_date=2016-11-01&end_date=2016-12-01"
    assert ref.get(A("reports_per_user", q), 1) == (
        200,
        [{"user_id": 6, "account_id": 1, "report_count": 1}],
    )
    # empty answers are empty lists
    q = "channel_id=1&start_date=2015-01-01&end_date=2015-02-01"
    for ep in (
        "reports_over_time",
        "reports_per_state",
        "reports_per_user",
        "reports_per_day_hour",
        "reports_per_week_day",
        "reports_images",
        "user_awareness",
    ):
        assert ref.get(A(ep, q), 1) == (200, [])
    assert ref.get(A("reports_per_field_selection", q + "&field_id=2"), 1) == (200, [])


def test_reports_images(ref):
    status, body = ref.get(A("reports_images", RANGE_B), 1)
    assert status == 200
    assert body == [
        {
            "report_image_id": 3,
            "account_id": 1,
            "report_id": 103,
            "created_at": "2016-11-09T12:00:00.123Z",
            "styles": {"thumb": "t3", "medium": "m3"},
        },
        {
            "report_image_id": 2,
            "account_id": 1,
            "report_id": 101,
            "created_at": "2016-11-07T00:00:00.000Z",
            "styles": {"thumb": "t", "medium": "m"},
        },
        {
            "report_image_id": 1,
            "account_id": 1,
            "report_id": 108,
            "created_at": "2016-11-07T00:00:00.000Z",
            "styles": {"thumb": "t", "medium": "m"},
        },
    ]


def test_reports_read(ref):
    q = RANGE_B + "&fields=total_reads,unique_reads,report_readers,reports_seen"
    assert ref.get(A("reports_read", q), 1) == (
        200,
        {"total_reads": 4, "unique_reads": 3, "report_readers": 2, "reports_seen": 2},
    )
    assert ref.get(A("reports_read", RANGE_B), 1) == (200, {"total_reads": 4})
    assert ref.get(A("reports_read", RANGE_B + "&fields="), 1) == (200, {"total_reads": 4})
    assert ref.get(A("reports_read", RANGE_B + "&fields=" + quote(" , ,")), 1) == (
        200,
        {"total_reads": 4},
    )
    q = RANGE_B + "&fields=" + quote(" reports_seen ,,reports_seen,report_readers")
    assert ref.get(A("reports_read", q), 1) == (200, {"reports_seen": 2, "report_readers": 2})
    # read 1 is 2016-11-08T09:00:00Z; the range starts one microsecond later
    q = "channel_id=1&start_date=2016-11-08T09:00:00.000001Z&end_date=2016-12-01&fields=total_reads"
    assert ref.get(A("reports_read", q), 1) == (200, {"total_reads": 3})
    q = "channel_id=1&start_date=2015-01-01&end_date=2015-02-01&fields=unique_reads"
    assert ref.get(A("reports_read", q), 1) == (200, {"unique_reads": 0})


def test_user_awareness(ref):
    q = RANGE_B + "&fields=total_alerts,alert_source_reports,unique_alerts,alerts_opened"
    assert ref.get(A("user_awareness", q), 1) == (
        200,
        [
            {
                "user_id": 3,
                "first_name": "John",
                "last_name": "Doe",
                "total_alerts": 3,
                "unique_alerts": 2,
                "alert_source_reports": 2,
                "alerts_opened": 2,
            },
            {
                "user_id": 4,
                "first_name": "Ann",
                "last_name": "Lee",
                "total_alerts": 2,
                "unique_alerts": 2,
                "alert_source_reports": 1,
                "alerts_opened": 1,
            },
            {
                "user_id": 6,
                "first_name": None,
                "last_name": "Zed",
                "total_alerts": 2,
                "unique_alerts": 1,
                "alert_source_reports": 1,
                "alerts_opened": 0,
            },
            {
                "user_id": 9,
                "first_name": None,
                "last_name": None,
                "total_alerts": 1,
                "unique_alerts": 1,
                "alert_source_reports": 1,
                "alerts_opened": 1,
            },
        ],
    )
    # default field only; ordering is still by total_alerts
    status, body = ref.get(A("user_awareness", RANGE_B), 1)
    assert status == 200
    assert [(r["user_id"], r["total_alerts"]) for r in body] == [(3, 3), (4, 2), (6, 2), (9, 1)]
    assert set(body[0]) == {"user_id", "first_name", "last_name", "total_alerts"}
    status, body = ref.get(A("user_awareness", RANGE_B + "&fields=alerts_opened"), 1)
    assert [(r["user_id"], r["alerts_opened"]) for r in body] == [(3, 2), (4, 1), (6, 0), (9, 1)]
    assert set(body[0]) == {"user_id", "first_name", "last_name", "alerts_opened"}


# ---------------- errors ----------------


@pytest.mark.parametrize(
    "url, status",
    [
        ("/api/v4/analytics/nope?channel_id=abc", 404),
        ("/api/v4/analytics/?channel_id=1", 404),
        ("/api/v3/analytics/reports_per_user?" + RANGE_B, 404),
        ("/api/v4/analytics/reports_per_user/?" + RANGE_B, 404),
        ("/batch/acme/report_stats/x", 404),
        ("/nothing", 404),
        (A("reports_per_user", "start_date=2016-11-01&end_date=2016-12-01"), 400),
        (A("reports_per_user", "channel_id=abc&start_date=2016-11-01&end_date=2016-12-01"), 400),
        (A("reports_per_user", "channel_id=1.0&start_date=2016-11-01&end_date=2016-12-01"), 400),
        (A("reports_per_user", "channel_id=&start_date=2016-11-01&end_date=2016-12-01"), 400),
        (A("reports_per_user", "channel_id=999&end_date=2016-12-01"), 400),  # date before channel
        (A("reports_per_user", "channel_id=999&start_date=2016-11-01"), 400),
        (A("reports_per_user", "channel_id=1&start_date=2016-13-01&end_date=2016-12-01"), 400),
        (A("reports_per_user", "channel_id=1&start_date=yesterday&end_date=2016-12-01"), 400),
        (
            A("reports_per_user", "channel_id=1&start_date=2016-11-01T25:00&end_date=2016-12-01"),
            400,
        ),
        (A("reports_per_user", "channel_id=1&start_date=2016-11-01Z&end_date=2016-12-01"), 400),
        (A("reports_per_user", "channel_id=1&start_date=2016-11-01&end_date=2016-11-01"), 400),
        (A("reports_per_user", "channel_id=999&start_date=2016-12-01&end_date=2016-11-01"), 400),
        (
            A(
                "reports_per_user",
                "channel_id=1&start_date=2016-11-01T00:00:00.000001Z&end_date=2016-11-01",
            ),
            400,
        ),
        (
            A(
                "reports_per_field_selection",
                "channel_id=999&start_date=2016-11-01&end_date=2016-12-01",
            ),
            400,
        ),
        (A("reports_per_field_selection", RANGE_B + "&field_id=x"), 400),
        (
            A(
                "reports_over_time",
                "channel_id=999&start_date=2016-11-01&end_date=2016-12-01"
                "&datetime_range_width=year",
            ),
            400,
        ),
        (A("reports_over_time", RANGE_B + "&datetime_range_width=Day"), 400),
        (
            A(
                "reports_read",
                "channel_id=999&start_date=2016-11-01&end_date=2016-12-01&fields=nope",
            ),
            400,
        ),
        (A("reports_read", RANGE_B + "&fields=total_reads,total_alerts"), 400),
        (A("user_awareness", RANGE_B + "&fields=total_reads"), 400),
        (A("reports_per_user", "channel_id=999&start_date=2016-11-01&end_date=2016-12-01"), 404),
        (
            A("reports_per_user", "channel_id=3&start_date=2016-11-01&end_date=2016-12-01"),
            404,
        ),  # deleted
        (
            A("reports_per_user", "channel_id=4&start_date=2016-11-01&end_date=2016-12-01"),
            404,
        ),  # other acct
        (
            A(
                "reports_per_field_selection",
                "channel_id=999&start_date=2016-11-01&end_date=2016-12-01&field_id=999",
            ),
            404,
        ),
        (A("reports_per_field_selection", RANGE_B + "&field_id=999"), 404),
        (A("reports_per_field_selection", RANGE_B + "&field_id=4"), 404),  # other account's Radio
        (A("reports_per_field_selection", RANGE_B + "&field_id=3"), 400),  # Text
        # endpoint parameters of other endpoints are ignored
        (A("reports_per_user", RANGE_B + "&field_id=x&datetime_range_width=x&fields=x"), 200),
        (
            A(
                "reports_per_user",
                "channel_id=1&start_date=2016-11-01T00:00&end_date=2016-12-01T00",
            ),
            400,
        ),
        (
            A(
                "reports_per_user",
                "channel_id=1&start_date=2016-11-01T00:00&end_date=2016-12-01T00:00-05",
            ),
            200,
        ),
    ],
)
def test_error_paths(ref, url, status):
    got_status, body = ref.get(url, 1)
    assert got_status == status, body
    if status != 200:
        assert body["error"] == {400: "bad_request", 404: "not_found"}[status]
        assert isinstance(body["message"], str) and body["message"]


# ---------------- report stats ----------------


def stats(ref, query="", org="acme", account=1):
    return ref.get(f"/batch/{org}/report_stats{query}", account)


def test_report_stats_rows(ref):
    status, body = stats(ref)
    assert status == 200
    rows = body["report_stats"]
    assert [r["report_id"] for r in rows] == [101, 102, 103, 104, 107, 108]
    assert rows[0] == {
        "report_id": 101,
        "report_token": "tok101",
        "active_schedules_count": 2,
        "explorations_count": 2,
        "total_views_count": 3,
        "recent_manual_run_creators_emails": ["john@x.com"],
        "scheduled_run_creators_emails": ["b@x.com", "john@x.com", "zed@x.com"],
        "editors_emails": ["Alice@X.com", "b@x.com", "john@x.com"],
    }
    empty = {
        "active_schedules_count": 0,
        "explorations_count": 0,
        "total_views_count": 0,
        "recent_manual_run_creators_emails": [],
        "scheduled_run_creators_emails": [],
    }
    assert rows[1] == {
        "report_id": 102,
        "report_token": "tok102",
        **empty,
        "editors_emails": ["Alice@X.com"],
    }
    assert rows[2] == {
        "report_id": 103,
        "report_token": "tok103",
        **empty,
        "total_views_count": 1,
        "active_schedules_count": 1,
        "editors_emails": ["john@x.com"],
    }
    assert rows[3] == {
        "report_id": 104,
        "report_token": "tok104",
        **empty,
        "recent_manual_run_creators_emails": ["b@x.com"],
        "editors_emails": ["b@x.com"],
    }
    assert rows[5]["explorations_count"] == 1 and rows[5]["total_views_count"] == 1
    assert body["pagination"] == {
        "page": 1,
        "per_page": 1000,
        "count": 6,
        "total_pages": 1,
        "total_count": 6,
    }
    assert body["_links"] == {
        "next_page": {"href": "/batch/acme/report_stats?page=1&per_page=1000"},
        "prev_page": {"href": "/batch/acme/report_stats?page=1&per_page=1000"},
    }
    status, body = stats(ref, "?include_spaces=all")
    assert [r["report_id"] for r in body["report_stats"]] == [101, 102, 103, 104, 107, 108, 201]
    assert (
        body["_links"]["next_page"]["href"]
        == "/batch/acme/report_stats?page=1&per_page=1000&include_spaces=all"
    )
    # the moved report belongs to globex now
    status, body = stats(ref, org="globex", account=2)
    assert status == 200 and [r["report_id"] for r in body["report_stats"]] == [106]
    status, body = stats(ref, org="kat", account=3)
    assert [r["report_id"] for r in body["report_stats"]] == [301, 302, 303]


def test_report_stats_manual_window_moves_with_as_of(tmp_path):
    raw = tmp_path / "raw"
    build_world(raw)
    later = Reference(raw, datetime(2016, 12, 1, 0, 0, 0, 1, tzinfo=UTC))
    rows = later.get("/batch/acme/report_stats", 1)[1]["report_stats"]
    assert rows[0]["recent_manual_run_creators_emails"] == [
        "zed@x.com"
    ]  # 11-01 drops out, 12-01 in


@pytest.mark.parametrize(
    "query, page, per_page, ids, total_pages, nxt, prv",
    [
        ("?per_page=4", 1, 4, [101, 102, 103, 104], 2, 2, 1),
        ("?page=2&per_page=4", 2, 4, [107, 108], 2, 2, 1),
        ("?page=3&per_page=4", 3, 4, [], 2, 2, 2),
        ("?page=99&per_page=1", 99, 1, [], 6, 6, 6),
        ("?page=3&per_page=2", 3, 2, [107, 108], 3, 3, 2),
        ("?page=2&per_page=2", 2, 2, [103, 104], 3, 3, 1),
        ("?page=1&per_page=1000", 1, 1000, [101, 102, 103, 104, 107, 108], 1, 1, 1),
    ],
)
def test_report_stats_pagination(ref, query, page, per_page, ids, total_pages, nxt, prv):
    status, body = stats(ref, query)
    assert status == 200
    assert [r["report_id"] for r in body["report_stats"]] == ids
    assert body["pagination"] == {
        "page": page,
        "per_page": per_page,
        "count": len(ids),
        "total_pages": total_pages,
        "total_count": 6,
    }
    assert body["_links"] == {
        "next_page": {"href": f"/batch/acme/report_stats?page={nxt}&per_page={per_page}"},
        "prev_page": {"href": f"/batch/acme/report_stats?page={prv}&per_page={per_page}"},
    }


def test_report_stats_empty_org(tmp_path):
    raw = tmp_path / "raw"
    write_jsonl(
        raw,
        "accounts/a.jsonl",
        [{"account_id": 8, "username": "empty", "name": "E", "updated_at": T0}],
    )
    ref = Reference(raw, AS_OF)
    assert ref.get("/batch/empty/report_stats?page=2&per_page=10&include_spaces=all", 8) == (
        200,
        {
            "pagination": {
                "page": 2,
                "per_page": 10,
                "count": 0,
                "total_pages": 0,
                "total_count": 0,
            },
            "report_stats": [],
            "_links": {
                "next_page": {
                    "href": "/batch/empty/report_stats?page=1&per_page=10&include_spaces=all"
                },
                "prev_page": {
                    "href": "/batch/empty/report_stats?page=1&per_page=10&include_spaces=all"
                },
            },
        },
    )


@pytest.mark.parametrize(
    "org, query, account, status",
    [
        ("nobody", "", 1, 404),
        ("globex", "", 1, 404),  # another account's organization
        ("oldglobex", "", 2, 404),  # not the current username
        ("nobody", "?page=0&include_spaces=x", 1, 404),
        ("acme", "?include_spaces=yes&page=0", 1, 400),
        ("acme", "?include_spaces=", 1, 400),
        ("acme", "?page=0", 1, 400),
        ("acme", "?page=-1", 1, 400),
        ("acme", "?page=abc", 1, 400),
        ("acme", "?page=", 1, 400),
        ("acme", "?per_page=0", 1, 400),
        ("acme", "?per_page=1001", 1, 400),
        ("acme", "?per_page=x", 1, 400),
        ("acme", "?per_page=1000&page=5", 1, 200),
        ("acme", "?include_spaces=all&per_page=1", 1, 200),
    ],
)
def test_report_stats_errors(ref, org, query, account, status):
    got, body = stats(ref, query, org=org, account=account)
    assert got == status, body
    if status != 200:
        assert body["error"] == {400: "bad_request", 404: "not_found"}[status]


def test_midnight_transitions_use_first_midnight(tmp_path):
    """Havana repeats 00:00-01:00 on 2016-11-06; Sao Paulo skips 00:00-01:00 on 2016-10-16."""
    raw = tmp_path / "raw"
    write_jsonl(
        raw,
        "accounts/a.jsonl",
        [
            {
                "account_id": 1,
                "username": "hav",
                "name": "H",
                "timezone": "America/Havana",
                "updated_at": T0,
            },
            {
                "account_id": 2,
                "username": "sao",
                "name": "S",
                "timezone": "America/Sao_Paulo",
                "updated_at": T0,
            },
        ],
    )
    write_jsonl(
        raw,
        "channels/c.jsonl",
        [
            {"channel_id": 1, "account_id": 1, "name": "h", "updated_at": T0},
            {"channel_id": 2, "account_id": 2, "name": "s", "updated_at": T0},
        ],
    )
    write_jsonl(
        raw,
        "reports/r.jsonl",
        [
            report(1, 1, created="2016-11-06T03:30:00Z"),  # Nov 5 23:30 -04
            report(2, 1, created="2016-11-06T04:30:00Z"),  # Nov 6 00:30 -04 (first)
            report(3, 1, created="2016-11-06T05:30:00Z"),  # Nov 6 00:30 -05 (second)
            report(4, 2, created="2016-10-16T02:30:00Z"),  # Oct 15 23:30 -03
            report(5, 2, created="2016-10-16T03:30:00Z"),  # Oct 16 01:30 -02
        ],
    )
    ref = Reference(raw, AS_OF)
    q = "channel_id=1&start_date=2016-11-01&end_date=2016-11-30"
    assert rows_over_time(ref, q, 1) == [
        ("2016-11-05T04:00:00.000Z", 1, "day"),
        ("2016-11-06T04:00:00.000Z", 2, "day"),
    ]
    q = "channel_id=1&start_date=2016-11-06&end_date=2016-11-07"
    assert rows_over_time(ref, q, 1) == [
        ("2016-11-06T03:00:00.000Z", 1, "hour"),
        ("2016-11-06T04:00:00.000Z", 1, "hour"),
        ("2016-11-06T05:00:00.000Z", 1, "hour"),
    ]
    assert ref.get(A("reports_per_day_hour", q), 1) == (
        200,
        [
            {"account_id": 1, "hour": 0, "report_count": 2},
            {"account_id": 1, "hour": 23, "report_count": 1},
        ],
    )
    q = "channel_id=2&start_date=2016-10-01&end_date=2016-10-30"
    assert rows_over_time(ref, q, 2) == [
        ("2016-10-15T03:00:00.000Z", 1, "day"),
        ("2016-10-16T03:00:00.000Z", 1, "day"),  # the day starts at 01:00 -02
    ]
    q = "channel_id=2&start_date=2016-10-16&end_date=2016-10-17"
    assert rows_over_time(ref, q, 2) == [
        ("2016-10-16T02:00:00.000Z", 1, "hour"),
        ("2016-10-16T03:00:00.000Z", 1, "hour"),
    ]
    assert ref.get(A("reports_per_week_day", q), 2) == (
        200,
        [
            {"account_id": 2, "dow": 0, "report_count": 1},  # Sunday Oct 16
            {"account_id": 2, "dow": 6, "report_count": 1},  # Saturday Oct 15
        ],
    )
