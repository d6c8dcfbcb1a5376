"""Hostile Parquet files: repeated columns and odd physical types of contract fields.

Each file goes through the real ingest and is compared with the plain-Python reference: the same
rows are rejected (or the same whole file is unreadable), each with file, line and a reason, every
file balances (lines read = accepted + rejected), accepted values agree, and nothing crashes.
"""

from __future__ import annotations

import datetime as dt
import decimal
from pathlib import Path

import pyarrow as pa
import pytest

from metrics_etl.ingest import discover, load
from metrics_etl.run import pipeline
from rawkit import T0, base_world, parquet, report
from reference import Reference

AS_OF = dt.datetime(2017, 1, 1, tzinfo=dt.UTC)
UTC = dt.UTC
WHEN = dt.datetime(2016, 11, 8, tzinfo=UTC)
INT64_MAX = 2**63 - 1


def _reads(ids: list[int], **columns: pa.Array) -> pa.Table:
    """A reads table (one row per id) with some columns replaced or added."""
    n = len(ids)
    base: dict[str, pa.Array] = {
        "read_id": pa.array(ids, pa.int64()),
        "account_id": pa.array([1] * n, pa.int64()),
        "report_id": pa.array([1] * n, pa.int64()),
        "user_id": pa.array([3] * n, pa.int64()),
        "read_at": pa.array([WHEN] * n, pa.timestamp("us", tz="UTC")),
    }
    return pa.table({**base, **columns})


def _with_column(table: pa.Table, name: str, values: pa.Array) -> pa.Table:
    """The table with one more column, whatever names it already has."""
    return pa.Table.from_arrays([*table.columns, values], names=[*table.column_names, name])


def _ts(values: list[int | None], unit: str, tz: str | None = "UTC") -> pa.Array:
    """A timestamp column from raw counts of `unit` since 1970."""
    return pa.array(values, pa.int64()).cast(pa.timestamp(unit, tz=tz))


# file -> {row: words the reason must hold, or None when accepted}; a row 0 is the whole file
EXPECTED: dict[str, dict[int, str | None]] = {}


def hostile_parquet_world(raw: Path) -> None:
    """Write the hostile Parquet files and fill EXPECTED."""
    base_world(raw)
    EXPECTED.clear()
    # a contract column twice: every row is ambiguous, the whole file is unreadable
    parquet(raw / "reads/dup.parquet", _with_column(_reads([1, 2]), "read_id", pa.array([7, 8])))
    EXPECTED["reads/dup.parquet"] = {0: "column read_id appears 2 times"}
    # an extra column twice: ignored, as extra keys are
    twice = _with_column(_reads([3, 4]), "source", pa.array(["a", "b"]))
    parquet(raw / "reads/dup_extra.parquet", _with_column(twice, "source", pa.array(["c", "d"])))
    EXPECTED["reads/dup_extra.parquet"] = {1: None, 2: None}
    # another column whose name differs only in case, written first: an extra column
    upper = pa.Table.from_arrays(
        [pa.array([99], pa.int64()), *_reads([80]).columns],
        names=["READ_ID", *_reads([80]).column_names],
    )
    parquet(raw / "reads/case.parquet", upper)
    EXPECTED["reads/case.parquet"] = {1: None}
    # a column named file_row_number (DuckDB's name for its row numbers): an extra column
    parquet(
        raw / "reads/frn.parquet",
        _with_column(_reads([90, 91]), "file_row_number", pa.array([7, 7])),
    )
    EXPECTED["reads/frn.parquet"] = {1: None, 2: None}
    far_ms = _reads([92, 93], read_at=_ts([0, 2**62], "ms"))
    parquet(raw / "reads/frn_ms.parquet", _with_column(far_ms, "file_row_number", pa.array([7, 7])))
    EXPECTED["reads/frn_ms.parquet"] = {1: None, 2: "field read_at: the instant is outside"}
    # seconds and milliseconds beyond what a microsecond timestamp holds: those rows rejected
    far = "field read_at: the instant is outside years 0001-9999 in UTC"
    for unit in ("s", "ms"):
        big = 2**52 if unit == "s" else 2**62
        counts = [0, big, 1_478_563_200 * (1 if unit == "s" else 1000), -big, None]
        parquet(
            raw / f"reads/ts_{unit}.parquet",
            _reads([10, 11, 12, 13, 14], read_at=_ts(counts, unit)),
        )
        EXPECTED[f"reads/ts_{unit}.parquet"] = {
            1: None,
            2: far,
            3: None,
            4: far,
            5: "required field read_at is null",
        }
    # the same in an optional field: a null stays accepted, a far instant is rejected
    rows = [report(i, T0) for i in (20, 21, 22)]
    table = pa.Table.from_pylist(rows)
    parquet(
        raw / "reports/deleted_ms.parquet",
        _with_column(table, "deleted_at", _ts([None, 2**62, 1_478_563_200_000], "ms")),
    )
    EXPECTED["reports/deleted_ms.parquet"] = {1: None, 2: "field deleted_at: the instant", 3: None}
    # a naive millisecond timestamp beyond range: rejected (it has no offset anyway)
    parquet(
        raw / "reads/ts_naive_ms.parquet", _reads([30, 31], read_at=_ts([0, 2**62], "ms", None))
    )
    EXPECTED["reads/ts_naive_ms.parquet"] = {1: "no offset", 2: "field read_at"}
    # nanoseconds: truncated to the microsecond, towards the past (as the reference floors)
    ns = [1_478_563_200_000_001_999, -1, -1500, 2**62]
    parquet(raw / "reads/ts_ns.parquet", _reads([40, 41, 42, 43], read_at=_ts(ns, "ns")))
    EXPECTED["reads/ts_ns.parquet"] = {n: None for n in (1, 2, 3, 4)}
    # uint64 above the int64 maximum: not a 64-bit integer
    parquet(
        raw / "reads/u64.parquet",
        _reads([50, 51, 52], user_id=pa.array([3, INT64_MAX + 1, 2**64 - 1], pa.uint64())),
    )
    EXPECTED["reads/u64.parquet"] = {1: None, 2: "field user_id", 3: "field user_id"}
    # decimals with a scale: not integers, whatever their value (as 3.0 in JSON)
    d = decimal.Decimal
    parquet(
        raw / "reads/dec.parquet",
        _reads(
            [60, 61, 62], user_id=pa.array([d("3.00"), d("3.50"), d("-3.00")], pa.decimal128(10, 2))
        ),
    )
    EXPECTED["reads/dec.parquet"] = {n: "field user_id" for n in (1, 2, 3)}
    parquet(
        raw / "reads/dec0.parquet",
        _reads([63, 64], user_id=pa.array([d("3"), d(10**30)], pa.decimal128(38, 0))),
    )
    EXPECTED["reads/dec0.parquet"] = {1: None, 2: "field user_id"}  # scale 0: written as 3
    # large strings and dictionary-encoded strings: strings like any other
    parquet(
        raw / "reports/strings.parquet",
        pa.Table.from_pylist([report(i, T0) for i in (70, 71)])
        .set_column(5, "token", pa.array(["t70", "t71"], pa.large_string()))
        .set_column(6, "created_at", pa.array([T0, "2016-01-01"]).dictionary_encode()),
    )
    EXPECTED["reports/strings.parquet"] = {1: None, 2: "field created_at: expected an ISO 8601"}
    # bytes (binary without a string annotation) and durations are never contract values
    parquet(raw / "reads/bytes.parquet", _reads([100, 101], user_id=pa.array([b"3", None])))
    EXPECTED["reads/bytes.parquet"] = {1: 'got {"bytes":"3"}', 2: "required field user_id"}
    seconds = pa.array([dt.timedelta(seconds=3)], pa.duration("s"))
    parquet(raw / "reads/duration.parquet", _reads([102], user_id=seconds))
    EXPECTED["reads/duration.parquet"] = {1: "field user_id"}
    binary = pa.table({"token": pa.array([b"t", None, b"u"])})
    bytes_reports = pa.Table.from_pylist([report(i, T0) for i in (103, 104, 105)])
    parquet(raw / "reports/bytes.parquet", bytes_reports.set_column(5, "token", binary["token"]))
    EXPECTED["reports/bytes.parquet"] = {
        1: "field token",
        2: "required field token",
        3: "field token",
    }
    # a binary contract key inside selections: a bad record, but for a null or empty list
    kinds = [("field_id", pa.int64()), ("value", pa.binary()), ("x", pa.binary())]
    element = pa.list_(pa.struct(kinds))
    sels = [[{"field_id": 2, "value": b"a", "x": b""}], None, [], [{"field_id": 2, "value": None}]]
    nested = pa.Table.from_pylist([report(i, T0) for i in (106, 107, 108, 109)])
    parquet(
        raw / "reports/bytes_nested.parquet",
        _with_column(nested, "selections", pa.array(sels, element)),
    )
    EXPECTED["reports/bytes_nested.parquet"] = {
        1: "field selections",
        2: None,
        3: None,
        4: "field selections",
    }
    extra = pa.list_(
        pa.struct([("field_id", pa.int64()), ("value", pa.string()), ("x", pa.binary())])
    )
    sels = [[{"field_id": 2, "value": "a", "x": b"z"}]]
    extra_key = _with_column(
        pa.Table.from_pylist([report(110, T0)]), "selections", pa.array(sels, extra)
    )
    parquet(raw / "reports/bytes_extra_key.parquet", extra_key)
    EXPECTED["reports/bytes_extra_key.parquet"] = {1: None}  # an extra key: ignored
    # the same odd types in a file read through Arrow (a timestamp in nanoseconds)
    odd = pa.Table.from_pylist([report(i, T0) for i in (73, 74, 75)])
    odd = odd.set_column(3, "user_id", pa.array([3, INT64_MAX + 1, 3], pa.uint64()))
    odd = odd.set_column(
        5, "token", pa.array(["a", "b", "c"], pa.large_string()).dictionary_encode()
    )
    odd = odd.set_column(6, "created_at", _ts([1, 2, -1], "ns"))
    selections = [[{"field_id": 2, "value": "a"}], None, [{"field_id": 2, "value": None}]]
    odd = _with_column(odd, "selections", pa.array(selections))
    parquet(raw / "reports/odd_ns.parquet", _with_column(odd, "selections2", pa.array([1, 2, 3])))
    EXPECTED["reports/odd_ns.parquet"] = {1: None, 2: "field user_id", 3: "selections"}


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory):
    """The hostile Parquet world, ingested once, with its reference reading."""
    tmp = tmp_path_factory.mktemp("hostile_parquet")
    raw = tmp / "raw"
    hostile_parquet_world(raw)
    conn = pipeline.open_writer(tmp / "wh")
    load.ingest(conn, discover.discover(raw), "r1", 1 << 20)
    yield conn, Reference(raw, AS_OF)
    conn.close()


def _reasons(conn) -> dict[tuple[str, int], str]:
    """(file, line) -> reason of every reject."""
    rows = conn.execute("select file, line, reason from rejects").fetchall()
    return {(f, line): reason for f, line, reason in rows}


def _stats(conn) -> dict[str, tuple[int, int, int]]:
    """file -> (lines_read, accepted, rejected)."""
    rows = conn.execute("select file, lines_read, accepted, rejected from file_stats").fetchall()
    return {f: (a, b, c) for f, a, b, c in rows}


@pytest.mark.parametrize(
    "file",
    [
        "reads/dup.parquet",
        "reads/dup_extra.parquet",
        "reads/case.parquet",
        "reads/ts_s.parquet",
        "reads/ts_ms.parquet",
        "reports/deleted_ms.parquet",
        "reads/ts_naive_ms.parquet",
        "reads/ts_ns.parquet",
        "reads/u64.parquet",
        "reads/dec.parquet",
        "reads/dec0.parquet",
        "reports/strings.parquet",
        "reports/odd_ns.parquet",
        "reads/frn.parquet",
        "reads/frn_ms.parquet",
        "reads/bytes.parquet",
        "reads/duration.parquet",
        "reports/bytes.parquet",
        "reports/bytes_nested.parquet",
        "reports/bytes_extra_key.parquet",
    ],
)
def test_each_row_is_accepted_or_rejected_with_a_reason_as_the_reference(loaded, file) -> None:
    conn, ref = loaded
    reasons = _reasons(conn)
    for row, words in EXPECTED[file].items():
        if words is None:
            assert (file, row) not in reasons, reasons.get((file, row))
        else:
            assert words in reasons.get((file, row), ""), (row, reasons.get((file, row)))
    got = {(f, line) for f, line in reasons if f == file}
    assert got == {(r["file"], r["line"]) for r in ref.rejects if r["file"] == file}
    read, accepted, rejected = _stats(conn)[file]
    a = ref.accounting[file]
    assert (read, accepted, rejected) == (a["lines_read"], a["accepted"], a["rejected"])
    assert read == accepted + rejected
    bad = sum(1 for w in EXPECTED[file].values() if w is not None)
    assert rejected == bad
    assert read == (1 if 0 in EXPECTED[file] else len(EXPECTED[file]))


def test_a_repeated_contract_column_names_the_column_and_loads_nothing(loaded) -> None:
    conn, ref = loaded
    reason = _reasons(conn)[("reads/dup.parquet", 0)]
    assert "column read_id appears 2 times" in reason
    assert "\n" not in reason
    assert "column read_id appears 2 times" in next(
        r["reason"] for r in ref.rejects if r["file"] == "reads/dup.parquet"
    )
    assert conn.execute(
        "select count(*) from raw_reads where _file = 'reads/dup.parquet'"
    ).fetchall() == [(0,)]


def test_accepted_values_equal_the_reference(loaded) -> None:
    conn, ref = loaded
    got = dict(conn.execute("select read_id, read_at from raw_reads").fetchall())
    want = {k: v["read_at"] for k, v in ref.current("reads").items()}
    assert got == want
    assert got[12] == WHEN
    assert got[40] == dt.datetime(2016, 11, 8, 0, 0, 0, 1, tzinfo=UTC)
    assert got[41] == dt.datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
    assert got[42] == dt.datetime(1969, 12, 31, 23, 59, 59, 999998, tzinfo=UTC)
    assert {3, 4, 50, 63, 80, 90, 91, 92} <= set(got) and 99 not in got  # read_id, not READ_ID
    reports = dict(conn.execute("select report_id, deleted_at from raw_reports").fetchall())
    assert reports[20] is None and reports[22] == WHEN
    assert {k: v["deleted_at"] for k, v in ref.current("reports").items()} == reports
    assert reports[107] is None and {106, 109} & set(reports) == set()
    tokens = dict(conn.execute("select report_id, token from raw_reports").fetchall())
    assert tokens[70] == "t70" and tokens[73] == "a"
    columns = ("token", "created_at", "selections")
    want_reports = {  # a null list: None or [] (both: none)
        k: (v["token"], v["created_at"], v["selections"] or [])
        for k, v in ref.current("reports").items()
    }
    got_reports = conn.execute(
        f"select report_id, {', '.join(columns)} from raw_reports"
    ).fetchall()
    assert {r[0]: (*r[1:3], r[3] or []) for r in got_reports} == want_reports
    assert want_reports[73][1:] == (
        dt.datetime(1970, 1, 1, tzinfo=UTC),
        [{"field_id": 2, "value": "a"}],
    )


def test_ingest_goes_on_past_a_far_timestamp_in_seconds(tmp_path: Path) -> None:
    """2**52 seconds crashed the whole run (Timestamp(MS) to Timestamp(US)): now one reject."""
    raw = tmp_path / "raw"
    base_world(raw)
    parquet(raw / "reads/far.parquet", _reads([1, 2], read_at=_ts([0, 2**52], "s")))
    conn = pipeline.open_writer(tmp_path / "wh")
    stats = load.ingest(conn, discover.discover(raw), "r1", 1 << 20)
    assert stats["reads"].rejected == 1 and stats["reads"].accepted == 1
    conn.close()
