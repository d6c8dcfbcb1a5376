"""Hostile raw records: timestamps that are not real instants, and objects with a repeated key.

Each goes through the real ingest (raw file -> fast pass -> detailed validation -> rejects) and
is compared with the plain-Python reference: the same lines are rejected, with file, line and a
reason, every file balances (lines read = accepted + rejected), and accepted values agree.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pyarrow as pa
import pytest

from metrics_etl.ingest import discover, load
from metrics_etl.run import pipeline
from rawkit import T0, base_world, jsonl, parquet, report
from reference import BadRecord, Reference, decode_json_line, validate_record

AS_OF = dt.datetime(2017, 1, 1, tzinfo=dt.UTC)
UTC = dt.UTC
READ = {"read_id": 0, "account_id": 1, "report_id": 1, "user_id": 3, "read_at": T0}

# read_at values that are not real instants: (value, words the reason must hold)
BAD_TS: list[tuple[str, str]] = [
    ("2016-11-07T10:15:00+24:00", "offset +24:00 is out of range"),
    ("2016-11-07T10:15:00+2400", "offset +2400 is out of range"),
    ("2016-11-07T10:15:00+99:99", "offset +99:99 is out of range"),
    ("2016-11-07T10:15:00+00:60", "offset +00:60 is out of range"),
    ("2016-11-07T10:15:00-24", "offset -24 is out of range"),
    ("2016-11-07T24:00:00Z", "not a real date and time"),
    ("2016-11-07T23:60:00Z", "not a real date and time"),
    ("2016-11-07T10:15:60Z", "not a real date and time"),
    ("0000-01-01T00:00:00Z", "not a real date and time"),
    ("2016-00-10T00:00:00Z", "not a real date and time"),
    ("2015-02-29T00:00:00Z", "not a real date and time"),
    ("0001-01-01T00:00:00+01:00", "the instant is outside years 0001-9999 in UTC"),
    ("9999-12-31T23:59:59-00:01", "the instant is outside years 0001-9999 in UTC"),
]
# read_at values at the edges that are real instants, and the instant each one is
GOOD_TS: list[tuple[str, dt.datetime]] = [
    ("2016-11-07T10:15:00+23:59", dt.datetime(2016, 11, 6, 10, 16, tzinfo=UTC)),
    ("2016-11-07T10:15:00-2359", dt.datetime(2016, 11, 8, 10, 14, tzinfo=UTC)),
    ("2016-11-07T23:59:59.999999Z", dt.datetime(2016, 11, 7, 23, 59, 59, 999999, tzinfo=UTC)),
    ("2016-02-29T00:00:00-00:00", dt.datetime(2016, 2, 29, tzinfo=UTC)),
    ("0001-01-01T00:00:00Z", dt.datetime(1, 1, 1, tzinfo=UTC)),
    ("0001-01-01T00:30:00+00:30", dt.datetime(1, 1, 1, tzinfo=UTC)),
    ("9999-12-31T23:59:59.999999Z", dt.datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)),
]


def _read_line(read_id: int, tail: str = "", **fields: object) -> str:
    """A read as a JSON line; `tail` is raw JSON text added before the closing brace."""
    return json.dumps({**READ, "read_id": read_id, **fields})[:-1] + tail + "}"


# reads lines with a repeated key: (line, words the reason must hold or None when accepted)
READ_KEYS: list[tuple[str, str | None]] = [
    (_read_line(500, ', "read_id": 501'), "key read_id appears more than once in the object"),
    ('{"read_id": 502, ' + _read_line(502)[1:], "key read_id appears more than once"),
    (_read_line(503, ', "read_at": "2016-01-01T00:00:00Z"'), "key read_at appears more than once"),
    (_read_line(504, ', "read\\u005fid": 504'), "key read_id appears more than once"),
    (_read_line(505, ', "user_id": null'), "key user_id appears more than once"),
    (_read_line(506, ', "source": "a", "source": "b"'), None),  # an extra key: ignored
    (_read_line(507, ', "meta": {"read_id": 1, "read_id": 2}'), None),  # inside an extra key
    (_read_line(508, ', "READ_ID": 9'), None),  # another key (keys are case-sensitive)
]

SELECTION = {"field_id": 2, "value": "a"}
# (stream, record as JSON text, words the reason must hold or None when accepted)
NESTED_KEYS: list[tuple[str, str, str | None]] = [
    (
        "reports",
        json.dumps(report(1, T0))[:-1]
        + ', "selections": [{"field_id": 2, "value": "a"}, {"field_id": 2, "field_id": 3, '
        '"value": "b"}]}',
        "key field_id appears more than once in an element of selections",
    ),
    (
        "reports",
        json.dumps(report(2, T0))[:-1] + ', "selections": [{"field_id": 2, "value": "a", '
        '"value": "b"}]}',
        "key value appears more than once in an element of selections",
    ),
    (
        "reports",
        json.dumps(report(3, T0, selections=[SELECTION]))[:-1] + ', "selections": []}',
        "key selections appears more than once in the object",
    ),
    (
        "reports",
        json.dumps(report(4, T0))[:-1]
        + ', "selections": [{"field_id": 2, "value": "a", "x": 1, "x": 2}]}',
        None,  # an extra key inside an element: ignored
    ),
    (
        "reports",
        json.dumps(report(5, T0, selections=[SELECTION, {"field_id": 5, "value": "z"}])),
        None,
    ),
    (
        "fields",
        '{"field_id": 7, "account_id": 1, "field_type": "Radio", "label": "R", "options": '
        '[{"value": "a", "name": "A", "name": "B"}], "updated_at": "2016-01-01T00:00:00Z"}',
        "key name appears more than once in an element of options",
    ),
    (
        "report_images",
        '{"report_image_id": 1, "report_id": 1, "account_id": 1, "created_at": "2016-01-01T00:00:00Z",'
        ' "updated_at": "2016-01-01T00:00:00Z", "styles": {"thumb": "t", "medium": "m", '
        '"thumb": "u"}}',
        "key thumb appears more than once in styles",
    ),
    (
        "report_images",
        '{"report_image_id": 2, "report_id": 1, "account_id": 1, "created_at": "2016-01-01T00:00:00Z",'
        ' "updated_at": "2016-01-01T00:00:00Z", "styles": {"thumb": "t", "medium": "m"}}',
        None,
    ),
]


def hostile_world(raw: Path) -> dict[tuple[str, int], str | None]:
    """Write the hostile records; returns (file, line) -> words of the reason (None: accepted)."""
    base_world(raw)
    expected: dict[tuple[str, int], str | None] = {}
    lines: list[str] = []
    for i, (value, reason) in enumerate(BAD_TS):
        lines.append(_read_line(100 + i, read_at=value))
        expected[("reads/ts.jsonl", len(lines))] = f"field read_at: {reason}"
        lines.append("")  # a blank line between records: not counted, still numbered
    for i, (value, _) in enumerate(GOOD_TS):
        lines.append(_read_line(200 + i, read_at=value))
        expected[("reads/ts.jsonl", len(lines))] = None
    jsonl(raw / "reads/ts.jsonl", lines)
    jsonl(raw / "reads/late/ts.jsonl.gz", lines, gz=True)
    expected.update({("reads/late/ts.jsonl.gz", n): r for (_, n), r in list(expected.items())})

    values = [value for value, _ in BAD_TS] + [value for value, _ in GOOD_TS]
    parquet(
        raw / "reads/ts.parquet",
        pa.table(
            {
                "read_id": pa.array(range(300, 300 + len(values)), pa.int64()),
                "account_id": pa.array([1] * len(values), pa.int64()),
                "report_id": pa.array([1] * len(values), pa.int64()),
                "user_id": pa.array([3] * len(values), pa.int64()),
                "read_at": pa.array(values, pa.string()),
            }
        ),
    )
    for row, (_, reason) in enumerate(BAD_TS, start=1):
        expected[("reads/ts.parquet", row)] = f"field read_at: {reason}"
    for row in range(len(BAD_TS) + 1, len(values) + 1):
        expected[("reads/ts.parquet", row)] = None

    # a timestamp column: the first and last microsecond of years 0001-9999, and one beyond each
    first, last = -62135596800 * 10**6, 253402300799999999
    edges = [first, first - 1, last, last + 1]
    parquet(
        raw / "reads/edges.parquet",
        pa.table(
            {
                "read_id": pa.array(range(400, 404), pa.int64()),
                "account_id": pa.array([1] * 4, pa.int64()),
                "report_id": pa.array([1] * 4, pa.int64()),
                "user_id": pa.array([3] * 4, pa.int64()),
                "read_at": pa.array(edges, pa.int64()).cast(pa.timestamp("us", tz="UTC")),
            }
        ),
    )
    outside = "field read_at: the instant is outside years 0001-9999 in UTC"
    expected.update(
        {("reads/edges.parquet", n): outside if n % 2 == 0 else None for n in (1, 2, 3, 4)}
    )

    jsonl(raw / "reads/keys.jsonl", [line for line, _ in READ_KEYS])
    for n, (_, reason) in enumerate(READ_KEYS, start=1):
        expected[("reads/keys.jsonl", n)] = reason
    for stream in ("reports", "fields", "report_images"):
        rows = [(text, reason) for s, text, reason in NESTED_KEYS if s == stream]
        jsonl(raw / f"{stream}/keys.jsonl", [text for text, _ in rows])
        for n, (_, reason) in enumerate(rows, start=1):
            expected[(f"{stream}/keys.jsonl", n)] = reason
    return expected


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory):
    """The hostile world, ingested once, with its reference reading."""
    tmp = tmp_path_factory.mktemp("hostile")
    raw = tmp / "raw"
    expected = hostile_world(raw)
    conn = pipeline.open_writer(tmp / "wh")
    load.ingest(conn, discover.discover(raw), "r1", 1 << 20)
    yield conn, Reference(raw, AS_OF), expected
    conn.close()


def test_each_hostile_record_is_rejected_with_file_line_and_reason(loaded) -> None:
    conn, _, expected = loaded
    reasons = {
        (f, line): reason
        for f, line, reason in conn.execute("select file, line, reason from rejects").fetchall()
    }
    for where, words in expected.items():
        if words is None:
            assert where not in reasons, (where, reasons.get(where))
        else:
            assert words in reasons.get(where, ""), (where, reasons.get(where))
    repeated = [r for r in reasons.values() if "more than once" in r]
    assert repeated and all(r.endswith("; write each key once") for r in repeated)


def test_rejects_and_accounting_agree_with_the_reference(loaded) -> None:
    conn, ref, expected = loaded
    rejects = set(conn.execute("select stream, file, line from rejects").fetchall())
    assert rejects == {(r["stream"], r["file"], r["line"]) for r in ref.rejects}
    hostile_files = {f for f, _ in expected}
    stats = {
        f: (read, accepted, rejected)
        for f, read, accepted, rejected in conn.execute(
            "select file, lines_read, accepted, rejected from file_stats"
        ).fetchall()
    }
    for f in hostile_files:
        read, accepted, rejected = stats[f]
        assert read == accepted + rejected == len([w for w in expected if w[0] == f])
        assert rejected == sum(1 for (g, _), r in expected.items() if g == f and r is not None)
        a = ref.accounting[f]
        assert (a["lines_read"], a["accepted"], a["rejected"]) == stats[f]


def test_accepted_edge_instants_and_records_equal_the_reference(loaded) -> None:
    conn, ref, _ = loaded
    got = dict(conn.execute("select read_id, read_at from raw_reads").fetchall())
    for i, (_, instant) in enumerate(GOOD_TS):
        assert got[200 + i] == instant
        assert got[300 + len(BAD_TS) + i] == instant
    assert got[400] == dt.datetime(1, 1, 1, tzinfo=UTC)
    assert got[402] == dt.datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
    current = ref.current("reads")
    assert {k: v["read_at"] for k, v in current.items()} == got
    for read_id in (506, 507, 508):
        assert current[read_id]["user_id"] == 3
    assert sorted(ref.current("reports")) == [4, 5]
    (selections,) = conn.execute(
        "select selections from raw_reports where report_id = 4"
    ).fetchone()
    assert selections == [{"field_id": 2, "value": "a"}]


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ('{"read_id": 1, "read_id": 2}', "key read_id appears more than once in the object"),
        ('{"read_id": 1, "read\\u005fid": 1}', "key read_id appears more than once"),
    ],
)
def test_reference_rejects_a_repeated_key_whatever_its_values(text: str, words: str) -> None:
    obj = decode_json_line(text[:-1] + ', "account_id": 1, "report_id": 1, "user_id": 3, '
                           '"read_at": "2016-01-01T00:00:00Z"}')  # fmt: skip
    with pytest.raises(BadRecord, match=words):
        validate_record("reads", obj)
