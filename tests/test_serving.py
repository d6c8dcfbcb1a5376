"""The serving index's building blocks against brute force over plain Python lists."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from metrics_etl.serve.index import (
    FEW_KEYS,
    Codes,
    Distinct,
    Lookup,
    ReportStats,
    Sorted,
    largest_first,
    totals_by,
)
from metrics_etl.timeparse import parse_instant

keys = st.lists(st.integers(-5, 5), max_size=40)


@settings(max_examples=300, deadline=None)
@given(keys, st.data())
def test_distinct_first_in_and_occurs_match_brute_force(values: list[int], data) -> None:
    index = Distinct.of(np.array(values, dtype=np.int64))
    i = data.draw(st.integers(0, len(values)))
    j = data.draw(st.integers(i, len(values)))
    assert int(index.first_in(i, j).sum()) == len(set(values[i:j]))
    for key in range(-6, 7):
        assert index.occurs(key, i, j) == (key in values[i:j])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 4), st.integers(0, 30)), max_size=40), st.data())
def test_span_is_the_channel_rows_in_the_time_range(rows: list[tuple[int, int]], data) -> None:
    rows.sort()
    channel = np.array([c for c, _ in rows], dtype=np.int64)
    channels, first = np.unique(channel, return_index=True)
    table = Sorted(
        channels,
        np.append(first, len(rows)),
        np.array([t for _, t in rows], dtype=np.int64),
        {},
    )
    c = data.draw(st.integers(0, 5))
    lo = data.draw(st.integers(-1, 31))
    hi = data.draw(st.integers(lo, 32))
    i, j = table.span(c, lo, hi)
    assert [rows[k] for k in range(i, j)] == [r for r in rows if r[0] == c and lo <= r[1] < hi]


@given(
    st.lists(st.tuples(st.integers(0, 9), st.integers(1, 5)), max_size=30),
    st.sampled_from([1, -7, 10**12]),  # keys dense (counted over their range) or sparse
)
def test_totals_by_sums_weights_per_key(pairs: list[tuple[int, int]], scale: int) -> None:
    pairs = [(k * scale, w) for k, w in pairs]
    half = len(pairs) // 2
    arrays = [
        np.array([k for k, _ in part], dtype=np.int64) for part in (pairs[:half], pairs[half:])
    ]
    weights = [
        np.array([w for _, w in part], dtype=np.int64) for part in (pairs[:half], pairs[half:])
    ]
    expected: dict[int, int] = {}
    for k, w in pairs:
        expected[k] = expected.get(k, 0) + w
    values, totals = totals_by(arrays, weights)
    assert list(zip(values.tolist(), totals.tolist(), strict=True)) == sorted(expected.items())
    keys, counts = largest_first(values, totals)
    ranked = sorted(expected.items(), key=lambda kv: (-kv[1], kv[0]))
    assert list(zip(keys, counts, strict=True)) == ranked


def test_codes_find_known_and_unknown_ids() -> None:
    codes, encoded = Codes.of(np.array([30, 10, 30, 20], dtype=np.int64))
    assert encoded.tolist() == [2, 0, 2, 1]
    assert [codes.find(v) for v in (10, 20, 30, 15, 99, -1)] == [0, 1, 2, -1, -1, -1]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.integers(1, 3), st.booleans()), max_size=30),
    st.integers(0, 3),
    st.data(),
)
def test_report_stats_pages_match_brute_force(
    reports: list[tuple[int, bool]], skip: int, data
) -> None:
    """Pages of all or shared reports, over a struct array that is itself a slice (as a
    segment's array may be)."""
    reports.sort(key=lambda r: r[0])
    ids = list(range(100, 100 + len(reports)))
    emails = [[f"u{i}@x", "z@x"][: i % 3] for i in ids]
    whole = pa.StructArray.from_arrays(
        [
            pa.array([0] * skip + ids, pa.int64()),
            pa.array([[]] * skip + emails, pa.list_(pa.string())),
        ],
        names=["report_id", "emails"],
    )
    account = np.array([a for a, _ in reports], dtype=np.int64)
    shared = np.flatnonzero(np.array([s for _, s in reports], dtype=bool))
    stats = ReportStats(whole.slice(skip), account, shared, account[shared])
    who = data.draw(st.integers(0, 4))
    spaces = data.draw(st.booleans())
    first = data.draw(st.integers(1, 12))
    size = data.draw(st.integers(1, 5))
    rows = [
        (i, e)
        for i, e, (a, s) in zip(ids, emails, reports, strict=True)
        if a == who and (spaces or s)
    ]
    assert stats.page(who, first, size, spaces) == (len(rows), rows[first - 1 : first - 1 + size])


def test_report_stat_columns_are_declared_once_for_the_loader_the_answer_and_the_schema() -> None:
    from metrics_etl.serve.api_models import ReportStatRow
    from metrics_etl.serve.index import REPORT_STAT_KEYS

    assert tuple(ReportStatRow.model_fields) == REPORT_STAT_KEYS


@pytest.mark.parametrize("n", [0, 1, FEW_KEYS, FEW_KEYS + 1, 200])
def test_lookup_columns_are_each_keys_values_or_none(n: int) -> None:
    """Looking up a few keys (one by one) and many (one Arrow take) gives each key's values,
    None for a key that is not there, in the order asked."""
    rng = np.random.default_rng(n)
    stored = np.unique(rng.integers(-50, 50, 60)).astype(np.int64)
    names = {int(k): f"name {k}" for k in stored}
    lookup = Lookup(stored, {"name": pa.array(list(names.values())), "k": pa.array(stored)})
    asked = rng.integers(-60, 60, n).astype(np.int64)
    got = lookup.columns(asked, ("name", "k"))
    assert got == [
        [names.get(int(k)) for k in asked],
        [int(k) if int(k) in names else None for k in asked],
    ]


@settings(max_examples=300, deadline=None)
@given(
    st.datetimes(min_value=dt.datetime(1, 1, 1), max_value=dt.datetime(9999, 12, 31, 23, 59, 59)),
    st.sampled_from(["seconds", "milliseconds", "microseconds"]),
)
def test_instants_in_the_usual_shape_parse_to_themselves(value: dt.datetime, unit: str) -> None:
    """`2016-11-07T10:15:00Z`, `...00.123Z` and `...00.123456Z` (parsed by fromisoformat) give
    the instant written, as every other ISO 8601 shape does."""
    text = value.isoformat(timespec=unit) + "Z"
    cut = {"seconds": 0, "milliseconds": value.microsecond // 1000 * 1000}.get(
        unit, value.microsecond
    )
    expected = value.replace(microsecond=cut, tzinfo=dt.UTC)
    assert parse_instant(text) == expected
    assert parse_instant(text.replace("Z", "+00:00")) == expected  # the general path


@pytest.mark.parametrize(
    "text",
    [
        "2016-11-07T24:00:00Z",
        "2016-11-07T23:60:00Z",
        "2016-11-07T10:15:60Z",
        "2016-13-07T10:15:00.000Z",
        "2016-02-30T10:15:00.000000Z",
        "0000-01-01T00:00:00Z",
    ],
)
def test_unreal_instants_in_the_usual_shape_say_why(text: str) -> None:
    """An instant in the usual shape that is no real date and time gets the general path's
    message."""
    with pytest.raises(ValueError, match="is not a real date and time"):
        parse_instant(text)
