"""Answer rows held as columns: the API's JSON written from them by Arrow, dicts only when asked.

An answer of thousands of rows (`reports_per_user`, `user_awareness` on a large channel's year)
spent most of its time building a Python dict per row, then orjson took them apart again. A
`Rows` keeps the columns (NumPy integers, Arrow strings, or one value for every row) and writes
the JSON array in a few vectorized Arrow calls: each row's text is the columns' text joined with
the keys between them, and the rows' texts lie end to end in one Arrow buffer, which is the
answer. `records()` gives the same answer as dicts (`metrics-etl get`, `Reader.get`, the tests);
`json()` equals `orjson.dumps(records())` byte for byte (tested).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from itertools import repeat
from typing import Any, TypeAlias

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

# what orjson escapes in a string: the quote, the backslash and the control characters
NEEDS_ESCAPE = '["\\\\\\x00-\\x1f]'


@functools.cache
def _row_builder(keys: tuple[str, ...]) -> Callable[[Iterable[tuple[Any, ...]]], list[dict]]:
    """A function turning rows into dicts with `keys`, each built by one dict display
    (`{k0: v0, k1: v1, ...}`), twice as fast as `dict(zip(keys, row))` per row. The generated
    code names the keys through variables bound to them, never their text."""
    names = [f"v{i}" for i in range(len(keys))]
    pairs = ", ".join(f"k{i}: {name}" for i, name in enumerate(names))
    unpack = "".join(f"{name}, " for name in names)
    scope: dict[str, Any] = {f"k{i}": key for i, key in enumerate(keys)}
    exec(f"def build(rows):\n    return [{{{pairs}}} for {unpack}in rows]", scope)
    return scope["build"]


def records(keys: tuple[str, ...], rows: Iterable[tuple[Any, ...]]) -> list[dict[str, Any]]:
    """Rows (each as long as `keys`) as dicts."""
    return _row_builder(tuple(keys))(rows)


Column: TypeAlias = "np.ndarray | pa.Array | int | str | None"  # an array, or one value per row


@dataclass(frozen=True)
class Rows:
    """An answer's rows as columns, one per key, in the order the keys appear in each row."""

    keys: tuple[str, ...]
    columns: tuple[Column, ...]
    length: int

    @classmethod
    def of(cls, length: int, **columns: Column) -> Rows:
        """Rows of `length` from columns by key (arrays of that length, or single values)."""
        return cls(tuple(columns), tuple(columns.values()), length)

    def records(self) -> list[dict[str, Any]]:
        """The rows as dicts."""
        values = [_values(c, self.length) for c in self.columns]
        return records(self.keys, zip(*values, strict=True))

    def json(self) -> bytes:
        """The rows as a JSON array, exactly as `orjson.dumps(self.records())` writes it."""
        if not self.length:
            return b"[]"
        parts: list[Any] = []
        text = "{"
        for n, (key, column) in enumerate(zip(self.keys, self.columns, strict=True)):
            text += ("," if n else "") + orjson.dumps(key).decode() + ":"
            if _single(column):
                text += orjson.dumps(column).decode()
            else:
                parts += [text, _json_texts(column)]
                text = ""
        parts.append(text + "},")
        if len(parts) == 1:  # every column one value
            return b"[" + b",".join([parts[0][:-1].encode()] * self.length) + b"]"
        joined = pc.binary_join_element_wise(*parts, "")
        _, offsets, data = joined.buffers()
        first, end = np.frombuffer(offsets, np.int32)[[joined.offset, joined.offset + len(joined)]]
        return b"[" + data[first : end - 1].to_pybytes() + b"]"  # the last row's comma left out

    def fragment(self) -> orjson.Fragment:
        """The rows as JSON for orjson to place inside a larger answer."""
        return orjson.Fragment(self.json())


def to_json(body: Any) -> bytes:
    """An answer as the bytes the server sends: `Rows` written from their columns, anything
    else by orjson."""
    return body.json() if isinstance(body, Rows) else orjson.dumps(body)


def _single(column: Column) -> bool:
    """Whether a column is one value for every row."""
    return column is None or isinstance(column, int | str)


def _values(column: Column, length: int) -> Sequence[Any] | Iterable[Any]:
    """A column's values as Python objects."""
    if _single(column):
        return repeat(column, length)
    if isinstance(column, np.ndarray):
        return column.tolist()
    array: Any = column
    return array.to_pylist()


def _json_texts(column: Column) -> Any:
    """A column's values as JSON texts, one Arrow string each."""
    array: Any = column
    if isinstance(column, np.ndarray):
        if column.dtype.kind not in "iuU":
            raise TypeError(f"no JSON text for a NumPy column of {column.dtype}")
        array = _strings(column) if column.dtype.kind == "U" else pa.array(column)
    if pa.types.is_integer(array.type):
        return pc.fill_null(pc.cast(array, pa.string()), "null")
    if pa.types.is_large_string(array.type):
        array = array.cast(pa.string())
    if not pa.types.is_string(array.type):
        raise TypeError(f"no JSON text for an Arrow column of {array.type}")
    if pc.any(pc.match_substring_regex(array, NEEDS_ESCAPE)).as_py():
        # rare: names with quotes, backslashes or control characters are escaped by orjson
        texts = [None if v is None else orjson.dumps(v).decode() for v in array.to_pylist()]
        return pc.fill_null(pa.array(texts, pa.string()), "null")
    return pc.fill_null(pc.binary_join_element_wise('"', array, '"', ""), "null")


def _strings(column: np.ndarray) -> Any:
    """A NumPy string column as an Arrow one: ASCII from its code points without a Python
    object per value (Arrow's own conversion stops at a NUL), anything else through Python."""
    column, width = np.ascontiguousarray(column), column.dtype.itemsize // 4
    points = column.view(np.uint32).reshape(len(column), width)
    if not width or points.max() >= 128:
        return pa.array(column.tolist(), pa.string())
    lengths = np.strings.str_len(column)  # without the NULs padding each value
    data = points.astype(np.uint8)[np.arange(width) < lengths[:, None]]
    offsets = np.concatenate(([0], np.cumsum(lengths))).astype(np.int32)
    return pa.StringArray.from_buffers(len(column), pa.py_buffer(offsets), pa.py_buffer(data))
