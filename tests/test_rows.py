"""Answers written as JSON from their columns equal orjson's writing of the same rows as dicts."""

from __future__ import annotations

import numpy as np
import orjson
import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from metrics_etl.serve.rows import Rows

INT64 = st.integers(-(2**63), 2**63 - 1)


def check(rows: Rows) -> None:
    """The columns' JSON is orjson's JSON of the rows' dicts, and parses back to them."""
    assert rows.json() == orjson.dumps(rows.records())
    assert orjson.loads(rows.json()) == rows.records()


def test_columns_and_single_values() -> None:
    rows = Rows.of(
        3,
        user_id=np.array([5, -3, 2**62], dtype=np.int64),
        account_id=7,
        name=pa.array(["a", None, "é ✓ \u2028"]),
        at=np.array(["2020-01-01T00:00:00.000Z"] * 3),
        width="day",
        gone=None,
    )
    assert rows.records()[1] == {
        "user_id": -3,
        "account_id": 7,
        "name": None,
        "at": "2020-01-01T00:00:00.000Z",
        "width": "day",
        "gone": None,
    }
    check(rows)


def test_strings_that_need_escaping() -> None:
    check(Rows.of(4, s=pa.array(['say "hi"', "back\\slash", "tab\tnew\nline\x00\x1f", None])))


def test_slices_large_strings_and_nulls_in_integers() -> None:
    names = pa.array(["x", "y", "z"], pa.large_string()).slice(1, 2)
    check(
        Rows.of(2, name=names, n=pa.array([1, None], pa.int64()), small=np.array([1, 2], np.int32))
    )


def test_empty_and_constant_rows() -> None:
    assert Rows.of(0, n=np.zeros(0, np.int64), a=1).json() == b"[]"
    check(Rows.of(2, a=1, b="x"))


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(INT64, st.none() | st.text(), st.text(alphabet=st.characters(codec="utf-8"))),
        max_size=30,
    ),
    st.none() | st.integers(0, 10**9) | st.text(max_size=5),
)
def test_random_rows(values: list[tuple[int, str | None, str]], single: int | str | None) -> None:
    ids = np.array([v[0] for v in values], dtype=np.int64)
    names = pa.array([v[1] for v in values], pa.string())
    texts = np.array([v[2] for v in values], dtype=str) if values else np.array([], dtype=str)
    check(Rows.of(len(values), id=ids, name=names, single=single, text=texts))
