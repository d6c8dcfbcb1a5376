"""Synthetic raw data generator that writes the raw landing contract, messy behaviours included."""

from __future__ import annotations

import gzip
import json
import math
import os
import zlib
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from metrics_etl.contract import STREAMS as CONTRACT
from metrics_etl.errors import UserError
from metrics_etl.settings import MIN_EVENTS

# --------------------------------------------------------------------------- constants

US = 1_000_000
MINUTE = 60 * US
HOUR = 3_600 * US
DAY = 86_400 * US


def _us(iso: str) -> int:
    """Epoch microseconds of an ISO timestamp with offset."""
    dt = datetime.fromisoformat(iso.replace("Z", "+00:00"))
    return (int(dt.timestamp()) * US) + dt.microsecond


PRE = _us("2015-12-01T00:00:00Z")
START = _us("2016-01-01T00:00:00Z")
UPDATES_FROM = _us("2017-01-01T00:00:00Z")
CREATE_END = _us("2018-01-01T00:00:00Z")
AS_OF = _us("2018-02-01T00:00:00Z")
AS_OF_ISO = "2018-02-01T00:00:00Z"

CHUNK_ROWS = 1_000_000
FORMATS = ("jsonl.gz", "parquet", "jsonl")
ORPHAN_BASE = 900_000_000_000
BAD_KEY_BASE = 800_000_000_000
MISSING_STATE_BASE = 700_000_000

# field types as the raw contract names them
INT, STR, BOOL, TS, TZ = "int", "string", "bool", "ts", "tz"
Spec = tuple[tuple[str, str, bool], ...]

# the raw contract's streams as (name, type, required) per field, in the contract's order
SCHEMAS: dict[str, Spec] = {
    name: tuple((f.name, f.type, f.required) for f in stream.fields)
    for name, stream in CONTRACT.items()
}
STREAMS = tuple(SCHEMAS)
EVENT_STREAMS = ("reads", "alerts", "alert_opens", "report_edits", "report_runs", "explorations")
EVENT_SHARE = {
    "reads": 0.60,
    "alerts": 0.12,
    "alert_opens": 0.08,
    "report_edits": 0.08,
    "report_runs": 0.07,
    "explorations": 0.05,
}
EVENT_TS = {
    "reads": "read_at",
    "alerts": "sent_at",
    "alert_opens": "opened_at",
    "report_edits": "edited_at",
    "report_runs": "ran_at",
    "explorations": "created_at",
}

SELECTION_TYPE = pa.list_(pa.struct([("field_id", pa.int64()), ("value", pa.string())]))
OPTIONS_TYPE = pa.list_(pa.struct([("value", pa.string()), ("name", pa.string())]))
STYLES_TYPE = pa.struct([("thumb", pa.string()), ("medium", pa.string())])
ARROW_TYPES: dict[str, pa.DataType] = {
    INT: pa.int64(),
    STR: pa.string(),
    BOOL: pa.bool_(),
    TS: pa.int64(),
    TZ: pa.string(),
    "selections": SELECTION_TYPE,
    "options": OPTIONS_TYPE,
    "styles": STYLES_TYPE,
}

# JSON presentation: per-row random bits in `_v` pick the variant (so retries are byte-identical).
TS_SUFFIX = [
    "Z",
    "Z",
    "Z",
    "Z",
    "Z",
    "Z",
    "+00:00",
    "+05:45",
    "-05:00",
    "-04:00",
    "+01:00",
    "-08:00",
    "+0530",
    "+09",
    "z",
    "-03:30",
]
TS_OFFSET_MIN = [0, 0, 0, 0, 0, 0, 0, 345, -300, -240, 60, -480, 330, 540, 0, -210]
BIT_SPACE, BIT_INTSTR, BIT_OMIT, BIT_NANO, BIT_EXTRA = 16, 21, 27, 29, 36

BASE_ACCOUNTS: list[tuple[str, str, str | None]] = [
    ("acme", "Acme Inc", "America/New_York"),
    ("himalaya-survey", "Himalaya Survey Pvt", "Asia/Kathmandu"),
    ("nulltz", "Null Zone Ltd", None),
    ("absenttz", "Absent Zone GmbH", None),
    ("berliner-werk", "Berliner Werk AG", "Europe/Berlin"),
    ("sydney-co", 'Sydney & Co "Pty"', "Australia/Sydney"),
]
EXTRA_TZ: list[str | None] = [
    "UTC",
    "America/Los_Angeles",
    "Europe/London",
    "Asia/Tokyo",
    "Asia/Kolkata",
    "America/Sao_Paulo",
    "Pacific/Auckland",
    "America/Chicago",
    "Africa/Nairobi",
    None,
]
STATE_NAMES = ["Draft", "In review", "Approved", "Archived"]
FIELD_TYPES = ["Category", "DropDown", "Radio", "Text", "Number"]
FIELD_LABELS = ["Category", "Priority", "Shift", "Notes", "Count"]
OPTION_NAMES = [
    ["Safety", "Quality", "Maintenance", "Logistics", "Training", "Audit", "Other"],
    ["Low", "Medium", "High", "Urgent", "Blocker", "Trivial", "Unknown"],
    ["Day", "Night", "Weekend", "Holiday", "On call", "Split", "None"],
]
FIELDS_PER_ACCOUNT = 5
STATES_PER_ACCOUNT = 4
FIRST = [
    "Ana",
    "Bruno",
    "Chloé",
    "Dmitri",
    "Eve",
    "Femi",
    "Gao",
    "Hana",
    "Ivan",
    "José",
    "Kiran",
    "Lena",
    "Mateo",
    "Nia",
    "Oskar",
    "Priya",
    "Quinn",
    "Rosa",
    "Sven",
    "Zoë",
]
FIRST_ASCII = [
    "ana",
    "bruno",
    "chloe",
    "dmitri",
    "eve",
    "femi",
    "gao",
    "hana",
    "ivan",
    "jose",
    "kiran",
    "lena",
    "mateo",
    "nia",
    "oskar",
    "priya",
    "quinn",
    "rosa",
    "sven",
    "zoe",
]
LAST = [
    "Silva",
    "O'Brien",
    "Müller",
    "Nguyen",
    "Smith",
    "Kowalski",
    "Tanaka",
    "Okafor",
    "Larsen",
    "García",
    "Shrestha",
    "Cohen",
]
LAST_ASCII = [
    "silva",
    "obrien",
    "muller",
    "nguyen",
    "smith",
    "kowalski",
    "tanaka",
    "okafor",
    "larsen",
    "garcia",
    "shrestha",
    "cohen",
]
CHANNEL_NAMES = [
    "Field ops",
    "Sales",
    "Quality",
    "Safety",
    "Maintenance",
    "Équipe terrain",
    'R&D "Labs"',
    "Warehouse",
    "HQ / Admin",
    "Fleet",
]

# Reports timestamped in the America/New_York DST nights and around Kathmandu local midnight.
DST_FALL = [
    "2016-11-06T05:00:00Z",
    "2016-11-06T05:30:00.250Z",
    "2016-11-06T05:59:59.999999Z",
    "2016-11-06T06:00:00Z",
    "2016-11-06T06:30:00Z",
    "2016-11-06T06:59:59Z",
    "2017-11-05T05:15:00Z",
    "2017-11-05T06:15:00Z",
]
DST_SPRING = [
    "2016-03-13T06:30:00Z",
    "2016-03-13T06:59:59.999Z",
    "2016-03-13T07:00:00Z",
    "2016-03-13T07:30:00Z",
    "2017-03-12T06:59:59Z",
    "2017-03-12T07:00:00.500Z",
]
KTM_MIDNIGHT = [
    "2016-06-30T18:14:59.999999Z",
    "2016-06-30T18:15:00Z",
    "2016-12-31T18:15:00.001Z",
    "2016-12-31T18:14:59Z",
    "2017-03-05T18:15:00Z",
    "2017-03-05T18:45:00Z",
]

# Bad JSON record kinds per stream (one record each) and bad Parquet row kinds per stream.
GENERIC_BAD = [
    "invalid_json",
    "json_array",
    "missing_required",
    "null_required",
    "string_for_int",
    "int_garbage",
    "float_as_int",
    "bool_as_int",
    "ts_no_offset",
    "ts_unparseable",
]
BAD_JSON: dict[str, list[str]] = {
    "accounts": [
        "unknown_tz",
        "int_for_string",
        "missing_required",
        "ts_unparseable",
        "json_scalar",
        "unknown_tz_case",
    ],
    "channels": ["invalid_json", "null_required", "string_for_bool", "bool_as_int", "ts_no_offset"],
    "users": [
        "invalid_json",
        "missing_required",
        "null_required",
        "int_garbage",
        "ts_no_seconds",
        "json_array",
    ],
    "states": ["json_array", "int_for_string", "null_required", "ts_invalid_date"],
    "fields": [
        "invalid_json",
        "missing_required",
        "int_for_string",
        "bad_option_missing_name",
        "bad_option_not_list",
    ],
    "reports": [
        *GENERIC_BAD,
        "int_for_string",
        "bad_selection_field_id",
        "bad_selection_missing_value",
        "bad_selection_not_object",
        "bad_selection_value_type",
        "bad_selection_not_list",
    ],
    "report_images": [
        "invalid_json",
        "missing_required",
        "null_required",
        "ts_no_offset",
        "string_for_int",
        "missing_thumb",
        "null_thumb",
        "styles_not_object",
    ],
    "schedules": [
        "invalid_json",
        "null_required",
        "string_for_bool",
        "float_as_int",
        "ts_no_offset",
        "ts_unparseable",
    ],
    "reads": [
        *GENERIC_BAD,
        "json_scalar",
        "int_overflow",
        "ts_invalid_date",
        "ts_no_seconds",
        "float_integral_as_int",
    ],
    "alerts": [*GENERIC_BAD, "int_overflow", "ts_no_seconds"],
    "alert_opens": [*GENERIC_BAD, "json_scalar", "ts_invalid_date"],
    "report_edits": [*GENERIC_BAD, "float_integral_as_int"],
    "report_runs": [*GENERIC_BAD, "int_for_string", "bad_run_type", "bad_run_type_case"],
    "explorations": [*GENERIC_BAD, "ts_no_seconds"],
}
BAD_PARQUET: dict[str, list[str]] = {
    "accounts": ["parquet_unknown_tz"],
    "channels": ["parquet_null_required"],
    "users": ["parquet_null_required"],
    "states": ["parquet_null_required"],
    "fields": ["parquet_bad_option"],
    "reports": ["parquet_null_required", "parquet_bad_selection"],
    "report_images": ["parquet_null_required", "parquet_null_thumb"],
    "schedules": ["parquet_null_required"],
    "reads": ["parquet_null_required"],
    "alerts": ["parquet_null_required"],
    "alert_opens": ["parquet_null_required"],
    "report_edits": ["parquet_null_required"],
    "report_runs": ["parquet_null_required", "parquet_bad_run_type"],
    "explorations": ["parquet_null_required"],
}
MISSING_FIELD = {
    "accounts": "username",
    "channels": "account_id",
    "users": "updated_at",
    "states": "name",
    "fields": "field_type",
    "reports": "channel_id",
    "report_images": "styles",
    "schedules": "report_id",
    "reads": "report_id",
    "alerts": "alert_id",
    "alert_opens": "delivery_id",
    "report_edits": "edited_at",
    "report_runs": "run_type",
    "explorations": "user_id",
}
NULL_FIELD = {
    "accounts": "name",
    "channels": "updated_at",
    "users": "account_id",
    "states": "account_id",
    "fields": "label",
    "reports": "created_at",
    "report_images": "report_id",
    "schedules": "user_id",
    "reads": "read_at",
    "alerts": "sent_at",
    "alert_opens": "opened_at",
    "report_edits": "report_id",
    "report_runs": "ran_at",
    "explorations": "report_id",
}
STR_FIELD = {
    "accounts": "username",
    "states": "name",
    "fields": "label",
    "reports": "token",
    "report_runs": "run_type",
}
BOOL_FIELD = {"channels": "personal", "schedules": "paused"}
STRING_TS_STREAMS = ("alert_opens", "explorations")
RETRY_FORMAT = {
    "reads": "jsonl.gz",
    "alerts": "jsonl",
    "alert_opens": "parquet",
    "report_edits": "jsonl",
    "report_runs": "jsonl.gz",
    "explorations": "jsonl",
}


class GenerateInputError(UserError, ValueError):
    """Invalid arguments to `generate` (too few events, negative seed)."""


# --------------------------------------------------------------------------- small helpers


def _iso(us: int) -> str:
    """ISO string (UTC, `Z`) of epoch microseconds."""
    dt = datetime.fromtimestamp(us // US, tz=UTC).replace(microsecond=us % US)
    return dt.isoformat().replace("+00:00", "Z")


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser on uint64 (counter-based randomness)."""
    z = x.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def _hash_bits(ids: np.ndarray, seed: int, tag: str, col: int = 0) -> np.ndarray:
    """Deterministic 62 random bits per id for (seed, tag, col), as int64."""
    salt = (zlib.crc32(tag.encode()) << 20) ^ (seed << 8) ^ col
    with np.errstate(over="ignore"):
        h = _mix(_mix(ids.astype(np.uint64) ^ np.uint64(salt & 0xFFFFFFFFFFFFFFFF)))
    return (h >> np.uint64(2)).astype(np.int64)


def _hash_unit(ids: np.ndarray, seed: int, tag: str, col: int = 0) -> np.ndarray:
    """Deterministic uniform [0, 1) per id."""
    return (_hash_bits(ids, seed, tag, col) >> 9).astype(np.float64) / float(1 << 53)


def _heavy(n: np.ndarray, u: np.ndarray, power: float) -> np.ndarray:
    """Heavy-tailed index in [0, n): small indexes are much more likely."""
    return np.minimum((n * u**power).astype(np.int64), n - 1)


def _zipf_cdf(rng: np.random.Generator, n: int, s: float) -> np.ndarray:
    """Cumulative Zipf-like weights over n items in random rank order."""
    ranks = rng.permutation(n).astype(np.float64) + 1.0
    return np.cumsum(ranks**-s)


def _sample_cdf(rng: np.random.Generator, cdf: np.ndarray, n: int) -> np.ndarray:
    """Sample 1-based item ids from a cumulative weight array."""
    idx = np.searchsorted(cdf, rng.random(n) * cdf[-1], side="right")
    return np.minimum(idx, len(cdf) - 1).astype(np.int64) + 1


def _precision(rng: np.random.Generator, t: np.ndarray) -> np.ndarray:
    """Truncate instants to a mix of second, millisecond and microsecond precision."""
    p = rng.random(len(t))
    return np.where(p < 0.6, t - t % US, np.where(p < 0.85, t - t % 1000, t))


def _delays(rng: np.random.Generator, base: np.ndarray, limit: int) -> np.ndarray:
    """Instants after `base` (minutes to weeks later), strictly before `limit`."""
    n = len(base)
    k = rng.random(n)
    sec = np.where(
        k < 0.05,
        rng.random(n) * 1_800,
        np.where(k < 0.30, rng.exponential(7_200, n), rng.exponential(20 * 86_400, n)),
    )
    d = (sec * US).astype(np.int64)
    room = np.maximum(limit - US - base, 2 * US)
    t = base + US + d % (room - US)
    return np.maximum(_precision(rng, t), base + 1)


def _hex12(x: np.ndarray) -> pa.Array:
    """12-character lowercase hex strings of the low 48 bits."""
    x = x.astype(np.uint64) & np.uint64(0xFFFFFFFFFFFF)
    shifts = np.arange(44, -1, -4, dtype=np.uint64)
    digits = ((x[:, None] >> shifts) & np.uint64(15)).astype(np.uint8)
    chars = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)[digits]
    offsets = pa.py_buffer(np.arange(0, 12 * len(x) + 1, 12, dtype=np.int32).tobytes())
    return pa.StringArray.from_buffers(len(x), offsets, pa.py_buffer(chars.tobytes()))


def _join(*parts: Any) -> pa.Array:
    """Element-wise string concatenation of arrays and literals."""
    return pc.binary_join_element_wise(
        *[
            p if isinstance(p, str | pa.Array | pa.ChunkedArray) else pa.array(p).cast(pa.string())
            for p in parts
        ],
        "",
    )


def _take(values: Sequence[Any], idx: np.ndarray) -> pa.Array:
    """Vectorised lookup of small Python lists."""
    return pc.take(pa.array(values), pa.array(idx))


def _splits(n: int, min_chunks: int = 3) -> list[tuple[int, int]]:
    """Chunk [0, n) into at least `min_chunks` pieces of at most CHUNK_ROWS rows."""
    k = max(min_chunks, math.ceil(n / CHUNK_ROWS))
    b = np.linspace(0, n, k + 1).astype(np.int64)
    return [(int(b[i]), int(b[i + 1])) for i in range(k)]


def _fmt_of(rel: str) -> str:
    """Format name of a relative path."""
    for fmt in ("jsonl.gz", "jsonl", "parquet"):
        if rel.endswith("." + fmt):
            return fmt
    raise ValueError(rel)


def _rotate(stream: str, i: int) -> str:
    """Format of chunk i of a stream (rotates so every stream has all three)."""
    return FORMATS[(i + STREAMS.index(stream)) % 3]


def _table(stream: str, cols: dict[str, Any], v: np.ndarray) -> pa.Table:
    """Internal table of a stream (ts as int64 epoch micros) plus the `_v` variant bits."""
    arrays, names = [], []
    n = len(v)
    for name, typ, _ in SCHEMAS[stream]:
        val = cols.get(name)
        typ_a = ARROW_TYPES[typ]
        if val is None:
            arr = pa.nulls(n, typ_a)
        elif isinstance(val, pa.Array | pa.ChunkedArray):
            arr = val if val.type == typ_a else val.cast(typ_a)
        else:
            arr = pa.array(val, typ_a)
        arrays.append(arr)
        names.append(name)
    arrays.append(pa.array(v, pa.int64()))
    names.append("_v")
    return pa.table(arrays, names=names)


# --------------------------------------------------------------------------- context & writer


@dataclass
class Ctx:
    """Generation state: output root, DuckDB connection and summary counters."""

    raw: Path
    seed: int
    events: int
    con: duckdb.DuckDBPyConnection
    files: dict[str, dict[str, Any]] = field(default_factory=dict)
    behaviours: Counter[str] = field(default_factory=Counter)
    bad_kinds: Counter[str] = field(default_factory=Counter)
    pool: dict[str, dict[str, list[Any]]] = field(default_factory=dict)
    next_bad: int = BAD_KEY_BASE
    line_sql: dict[str, str] = field(default_factory=dict)

    def rng(self, *tags: object) -> np.random.Generator:
        """Independent deterministic generator for a tag path."""
        return np.random.default_rng([self.seed, *[zlib.crc32(str(t).encode()) for t in tags]])

    def bad_key(self) -> int:
        """A fresh key for a bad record (never used by a good one)."""
        self.next_bad += 1
        return self.next_bad


def _ts_sql(col: str, k: int) -> str:
    """DuckDB expression formatting epoch micros `col` as a varied ISO string."""
    o = f"(((_v >> {4 * k}) & 15)::INTEGER + 1)"
    off = "[" + ",".join(str(m) for m in TS_OFFSET_MIN) + "]"
    suf = "[" + ",".join(f"'{s}'" for s in TS_SUFFIX) + "]"
    loc = (
        f"strftime(make_timestamp(\"{col}\" + {off}[{o}]::BIGINT * 60000000), '%Y-%m-%dT%H:%M:%S')"
    )
    date_time = (
        f"CASE WHEN (_v >> {BIT_SPACE}) & 31 = 0 THEN replace({loc}, 'T', ' ') ELSE {loc} END"
    )
    frac = (
        f"CASE WHEN \"{col}\" % 1000000 = 0 THEN '' "
        f"WHEN \"{col}\" % 1000 = 0 THEN '.' || lpad(((\"{col}\" // 1000) % 1000)::VARCHAR, 3, '0') "
        f"ELSE '.' || lpad((\"{col}\" % 1000000)::VARCHAR, 6, '0') || "
        f"CASE WHEN (_v >> {BIT_NANO}) & 31 = 0 THEN '789' ELSE '' END END"
    )
    return f"concat({date_time}, {frac}, {suf}[{o}])"


def _line_sql(stream: str) -> str:
    """DuckDB expression building one JSON line (with trailing newline) per row."""
    args, k = [], 0
    for i, (name, typ, req) in enumerate(SCHEMAS[stream]):
        q = f'"{name}"'
        if typ == TS:
            val = f"'\"', {_ts_sql(name, k)}, '\"'"
            k += 1
        elif typ == INT and name == "account_id":
            val = (
                f"CASE WHEN (_v >> {BIT_INTSTR}) & 63 = 0 THEN '\"' || {q}::VARCHAR || '\"' "
                f"ELSE {q}::VARCHAR END"
            )
        elif typ == INT:
            val = f"{q}::VARCHAR"
        elif typ == BOOL:
            val = f"CASE WHEN {q} THEN 'true' ELSE 'false' END"
        else:
            val = f"to_json({q})::VARCHAR"
        lead = ("'{" if i == 0 else "',") + f'"{name}":\''
        if req:
            args.append(f"{lead}, {val}")
        else:
            args.append(
                f"CASE WHEN {q} IS NOT NULL THEN concat({lead}, {val}) "
                f"WHEN (_v >> {BIT_OMIT}) & 1 = 0 THEN {lead} || 'null' END"
            )
    args.append(f'CASE WHEN (_v >> {BIT_EXTRA}) & 31 = 0 THEN \',"client":"web"\' END')
    args.append("'}' || chr(10)")
    return "concat(" + ", ".join(args) + ")"


def _json_lines(ctx: Ctx, stream: str, table: pa.Table) -> tuple[memoryview, np.ndarray]:
    """Render a table to JSON lines: the byte buffer and per-row offsets."""
    if table.num_rows == 0:
        return memoryview(b""), np.zeros(1, dtype=np.int64)
    sql = ctx.line_sql.setdefault(stream, _line_sql(stream))
    ctx.con.register("_gen_t", table)
    try:
        arr = ctx.con.sql(f"SELECT {sql} AS line FROM _gen_t").to_arrow_table().column(0)
    finally:
        ctx.con.unregister("_gen_t")
    arr = arr.combine_chunks()
    if arr.type != pa.string() and arr.type != pa.large_string():
        arr = arr.cast(pa.large_string())
    width = 8 if arr.type == pa.large_string() else 4
    offs = np.frombuffer(
        arr.buffers()[1],
        dtype=np.int64 if width == 8 else np.int32,
        count=len(arr) + 1,
        offset=arr.offset * width,
    ).astype(np.int64)
    return memoryview(arr.buffers()[2]), offs


def _ts_strings(ctx: Ctx, table: pa.Table, col: str, k: int) -> pa.Array:
    """ISO strings (varied offsets) for a ts column, as used in string-typed Parquet."""
    ctx.con.register("_gen_s", table.select([col, "_v"]))
    try:
        out = ctx.con.sql(f"SELECT {_ts_sql(col, k)} AS s FROM _gen_s").to_arrow_table()
    finally:
        ctx.con.unregister("_gen_s")
    return out.column(0).combine_chunks()


def _presentation(ctx: Ctx, stream: str, table: pa.Table) -> None:
    """Count the JSON presentation variants that a table's rows will show."""
    if table.num_rows == 0:
        return
    v = table.column("_v").to_numpy()
    b = ctx.behaviours
    ts_cols = [n for n, t, _ in SCHEMAS[stream] if t == TS]
    b["extra_keys"] += int(((v >> BIT_EXTRA) & 31 == 0).sum())
    b["ts_space_separator"] += int(((v >> BIT_SPACE) & 31 == 0).sum())
    if "account_id" in table.column_names:
        b["int_as_string"] += int(((v >> BIT_INTSTR) & 63 == 0).sum())
    for k, col in enumerate(ts_cols):
        arr = table.column(col)
        present = ~np.asarray(arr.is_null().to_numpy(zero_copy_only=False))
        vals = np.asarray(arr.fill_null(0).to_numpy(zero_copy_only=False))
        o = (v >> (4 * k)) & 15
        b["ts_offset_hhmm_or_hh"] += int((present & ((o == 12) | (o == 13))).sum())
        b["ts_lowercase_z"] += int((present & (o == 14)).sum())
        b["ts_nanoseconds"] += int(
            (present & (vals % 1000 != 0) & ((v >> BIT_NANO) & 31 == 0)).sum()
        )
    for name, _, req in SCHEMAS[stream]:
        if not req:
            nulls = np.asarray(table.column(name).is_null().to_numpy(zero_copy_only=False))
            b["omitted_optional_keys"] += int((nulls & ((v >> BIT_OMIT) & 1 == 1)).sum())


def _to_parquet_table(table: pa.Table, stream: str, ts_mode: str) -> pa.Table:
    """Convert an internal table to its Parquet shape (ts as timestamp columns)."""
    cols, names = [], []
    for name, typ, _ in SCHEMAS[stream]:
        arr = table.column(name)
        if typ == TS and ts_mode == "tz":
            arr = arr.cast(pa.timestamp("us", tz="UTC"))
        elif typ == TS and ts_mode == "naive":
            arr = arr.cast(pa.timestamp("us"))
        cols.append(arr)
        names.append(name)
    return pa.table(cols, names=names)


def _atomic_path(path: Path) -> Path:
    """Hidden temporary sibling path (ignored by loaders) for an atomic write."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.with_name("." + path.name + ".tmp")


def _write_bytes(
    path: Path, gz: bool, data: memoryview, offs: np.ndarray, extras: list[tuple[int, str]]
) -> None:
    """Write JSON lines with extra lines inserted before given row positions."""
    tmp = _atomic_path(path)
    with open(tmp, "wb") as fh:
        out: Any = (
            gzip.GzipFile(filename="", mode="wb", fileobj=fh, compresslevel=1, mtime=0)
            if gz
            else fh
        )
        prev = 0
        for pos, text in extras:
            out.write(data[offs[prev] - offs[0] : offs[pos] - offs[0]])
            out.write(text.encode() + b"\n")
            prev = pos
        out.write(data[offs[prev] - offs[0] : offs[-1] - offs[0]])
        if gz:
            out.close()
    os.replace(tmp, path)


def _record_file(ctx: Ctx, stream: str, rel: str, lines: int, bad: int, blank: int) -> None:
    """Add a written file to the summary."""
    ctx.files[rel] = {
        "stream": stream,
        "format": _fmt_of(rel),
        "lines": lines,
        "bad": bad,
        "blank_lines": blank,
    }


def write_file(
    ctx: Ctx,
    stream: str,
    rel: str,
    table: pa.Table,
    ts_mode: str = "tz",
    bad_ts: Sequence[tuple[str, str]] = (),
) -> None:
    """Write one raw file; the first file of each format takes the stream's pending bad records."""
    fmt = _fmt_of(rel)
    pending = ctx.pool.get(stream, {}).pop(fmt, [])
    path = ctx.raw / rel
    if fmt == "parquet":
        _write_parquet(ctx, stream, path, rel, table, pending, ts_mode, bad_ts)
        return
    _presentation(ctx, stream, table)
    data, offs = _json_lines(ctx, stream, table)
    rng = ctx.rng("extras", rel)
    pos = np.sort(rng.integers(0, table.num_rows + 1, len(pending)))
    extras = [(int(p), text) for p, (text, _) in zip(pos, pending, strict=True)]
    _write_bytes(path, fmt == "jsonl.gz", data, offs, extras)
    bad = [kind for _, kind in pending if kind is not None]
    blank = len(pending) - len(bad)
    for kind in bad:
        ctx.bad_kinds[kind] += 1
    ctx.behaviours["blank_lines"] += blank
    _record_file(ctx, stream, rel, table.num_rows + len(bad), len(bad), blank)


def _write_parquet(
    ctx: Ctx,
    stream: str,
    path: Path,
    rel: str,
    table: pa.Table,
    pending: list[Any],
    ts_mode: str,
    bad_ts: Sequence[tuple[str, str]],
) -> None:
    """Write a Parquet file, splicing in bad rows of the given kinds."""
    kinds = [k for k, _ in pending]
    if kinds:
        bad = _bad_parquet_rows(ctx, stream, table, kinds)
        p = int(ctx.rng("pq", rel).integers(0, table.num_rows + 1))
        table = pa.concat_tables([table.slice(0, p), bad, table.slice(p)])
    out = _to_parquet_table(table, stream, "naive" if ts_mode == "naive" else "tz")
    n_bad = len(kinds)
    if ts_mode == "string":
        out, n_extra = _string_ts_table(ctx, stream, table, out, bad_ts)
        n_bad += n_extra
    if ts_mode == "naive":
        ctx.bad_kinds["parquet_naive_ts"] += table.num_rows - len(kinds)
        n_bad = table.num_rows
    for kind in kinds:
        ctx.bad_kinds[kind] += 1
    tmp = _atomic_path(path)
    pq.write_table(out, tmp, compression="zstd")
    os.replace(tmp, path)
    _record_file(ctx, stream, rel, out.num_rows, n_bad, 0)


def _string_ts_table(
    ctx: Ctx, stream: str, table: pa.Table, out: pa.Table, bad_ts: Sequence[tuple[str, str]]
) -> tuple[pa.Table, int]:
    """Turn ts columns into ISO string columns and append rows with bad ts strings."""
    ts_cols = [n for n, t, _ in SCHEMAS[stream] if t == TS]
    for k, col in enumerate(ts_cols):
        out = out.set_column(out.schema.get_field_index(col), col, _ts_strings(ctx, table, col, k))
    if not bad_ts or out.num_rows == 0:
        return out, 0
    rows = []
    key = SCHEMAS[stream][0][0]
    template = out.slice(0, 1).to_pylist()[0]
    for kind, text in bad_ts:
        row = dict(template)
        row[key] = ctx.bad_key()
        row[ts_cols[0]] = text
        rows.append(row)
        ctx.bad_kinds[kind] += 1
    bad = pa.Table.from_pylist(rows, schema=out.schema)
    return pa.concat_tables([out, bad]), len(rows)


# --------------------------------------------------------------------------- bad records


def _template(stream: str, key: int) -> dict[str, Any]:
    """A valid JSON record of a stream with a fresh key, to be broken by one defect."""
    ts = "2016-11-07T10:15:00Z"
    base: dict[str, dict[str, Any]] = {
        "accounts": {
            "account_id": key,
            "username": f"bad-{key}",
            "name": "Bad Co",
            "timezone": "UTC",
            "updated_at": ts,
        },
        "channels": {
            "channel_id": key,
            "account_id": 1,
            "name": "Bad channel",
            "personal": False,
            "owner_user_id": None,
            "updated_at": ts,
        },
        "users": {
            "user_id": key,
            "account_id": 1,
            "first_name": "Bad",
            "last_name": "User",
            "email": "bad@example.com",
            "updated_at": ts,
        },
        "states": {"state_id": key, "account_id": 1, "name": "Bad state", "updated_at": ts},
        "fields": {
            "field_id": key,
            "account_id": 1,
            "field_type": "Category",
            "label": "Bad",
            "options": [{"value": "v1", "name": "One"}],
            "updated_at": ts,
        },
        "reports": {
            "report_id": key,
            "account_id": 1,
            "channel_id": 1,
            "user_id": 1,
            "state_id": 1,
            "token": "0badc0ffee00",
            "created_at": ts,
            "updated_at": ts,
            "deleted_at": None,
            "selections": [{"field_id": 1, "value": "f_1_0"}],
        },
        "report_images": {
            "report_image_id": key,
            "report_id": 1,
            "account_id": 1,
            "created_at": ts,
            "updated_at": ts,
            "styles": {
                "thumb": "https://img.example.com/t.jpg",
                "medium": "https://img.example.com/m.jpg",
            },
        },
        "schedules": {
            "schedule_id": key,
            "account_id": 1,
            "report_id": 1,
            "user_id": 1,
            "created_at": ts,
            "updated_at": ts,
            "paused": False,
        },
        "reads": {"read_id": key, "account_id": 1, "report_id": 1, "user_id": 1, "read_at": ts},
        "alerts": {
            "delivery_id": key,
            "alert_id": 1,
            "account_id": 1,
            "report_id": 1,
            "user_id": 1,
            "sent_at": ts,
        },
        "alert_opens": {"open_id": key, "delivery_id": 1, "account_id": 1, "opened_at": ts},
        "report_edits": {
            "edit_id": key,
            "account_id": 1,
            "report_id": 1,
            "user_id": 1,
            "edited_at": ts,
        },
        "report_runs": {
            "run_id": key,
            "account_id": 1,
            "report_id": 1,
            "user_id": 1,
            "run_type": "manual",
            "ran_at": ts,
        },
        "explorations": {
            "exploration_id": key,
            "account_id": 1,
            "report_id": 1,
            "user_id": 1,
            "created_at": ts,
        },
    }
    return base[stream]


def bad_json_line(stream: str, kind: str, key: int) -> str:
    """One bad JSON line of the given kind for a stream."""
    d = _template(stream, key)
    ts_field = next(n for n, t, _ in SCHEMAS[stream] if t == TS)
    int_field = "account_id"
    if kind == "invalid_json":
        s = json.dumps(d, separators=(",", ":"))
        return s[: len(s) // 2]
    if kind == "json_array":
        return json.dumps(list(d.values()), separators=(",", ":"))
    if kind == "json_scalar":
        return "42"
    mutate: dict[str, Callable[[], None]] = {
        "missing_required": lambda: d.pop(MISSING_FIELD[stream]),
        "null_required": lambda: d.__setitem__(NULL_FIELD[stream], None),
        "string_for_int": lambda: d.__setitem__(int_field, "twelve"),
        "int_garbage": lambda: d.__setitem__(int_field, "12abc"),
        "float_as_int": lambda: d.__setitem__(int_field, 1.5),
        "float_integral_as_int": lambda: d.__setitem__(int_field, 1.0),
        "bool_as_int": lambda: d.__setitem__(int_field, True),
        "int_overflow": lambda: d.__setitem__(int_field, 9_223_372_036_854_775_808),
        "int_for_string": lambda: d.__setitem__(STR_FIELD.get(stream, ""), 123),
        "string_for_bool": lambda: d.__setitem__(BOOL_FIELD.get(stream, ""), "yes"),
        "ts_no_offset": lambda: d.__setitem__(ts_field, "2016-11-07T10:15:00"),
        "ts_unparseable": lambda: d.__setitem__(ts_field, "next tuesday"),
        "ts_invalid_date": lambda: d.__setitem__(ts_field, "2017-02-29T10:15:00Z"),
        "ts_no_seconds": lambda: d.__setitem__(ts_field, "2016-11-07T10:15Z"),
        "unknown_tz": lambda: d.__setitem__("timezone", "Mars/Olympus_Mons"),
        "unknown_tz_case": lambda: d.__setitem__("timezone", "Not/A_Zone"),
        "bad_run_type": lambda: d.__setitem__("run_type", "automatic"),
        "bad_run_type_case": lambda: d.__setitem__("run_type", "Manual"),
        "bad_selection_field_id": lambda: d.__setitem__(
            "selections", [{"field_id": "x1", "value": "f_1_0"}]
        ),
        "bad_selection_missing_value": lambda: d.__setitem__("selections", [{"field_id": 1}]),
        "bad_selection_not_object": lambda: d.__setitem__("selections", ["f_1_0"]),
        "bad_selection_value_type": lambda: d.__setitem__(
            "selections", [{"field_id": 1, "value": "f_1_0"}, {"field_id": 2, "value": 5}]
        ),
        "bad_selection_not_list": lambda: d.__setitem__("selections", "f_1_0"),
        "bad_option_missing_name": lambda: d.__setitem__("options", [{"value": "v1"}]),
        "bad_option_not_list": lambda: d.__setitem__("options", "v1,v2"),
        "missing_thumb": lambda: d.__setitem__(
            "styles", {"medium": "https://img.example.com/m.jpg"}
        ),
        "null_thumb": lambda: d.__setitem__(
            "styles", {"thumb": None, "medium": "https://img.example.com/m.jpg"}
        ),
        "styles_not_object": lambda: d.__setitem__("styles", "https://img.example.com/t.jpg"),
    }
    mutate[kind]()
    d.pop("", None)
    return json.dumps(d, ensure_ascii=False, separators=(",", ":"))


def _bad_parquet_rows(ctx: Ctx, stream: str, table: pa.Table, kinds: list[str]) -> pa.Table:
    """Rows (internal shape) that are bad in Parquet, one per kind, with fresh keys."""
    template = table.slice(0, 1).to_pylist()[0]
    key = SCHEMAS[stream][0][0]
    rows = []
    for kind in kinds:
        row = dict(template)
        row[key] = ctx.bad_key()
        if kind == "parquet_null_required":
            row["username" if stream == "accounts" else "account_id"] = None
        elif kind == "parquet_unknown_tz":
            row["timezone"] = "Mars/Olympus_Mons"
        elif kind == "parquet_bad_selection":
            row["selections"] = [{"field_id": 1, "value": None}]
        elif kind == "parquet_null_thumb":
            row["styles"] = {"thumb": None, "medium": "https://img.example.com/m.jpg"}
        elif kind == "parquet_bad_run_type":
            row["run_type"] = "cron"
        elif kind == "parquet_bad_option":
            row["options"] = [{"value": "v1", "name": None}]
        else:
            raise ValueError(kind)
        rows.append(row)
    return pa.Table.from_pylist(rows, schema=table.schema)


def _fill_pool(ctx: Ctx, stream: str) -> int:
    """Queue a stream's bad records and blank lines for its first file of each format."""
    kinds = BAD_JSON[stream]
    jl: list[tuple[str, str | None]] = [("", None), ("   ", None)]
    gz: list[tuple[str, str | None]] = [("", None)]
    for i, kind in enumerate(kinds):
        (jl if i % 2 == 0 else gz).append((bad_json_line(stream, kind, ctx.bad_key()), kind))
    ctx.pool[stream] = {
        "jsonl": jl,
        "jsonl.gz": gz,
        "parquet": [(k, None) for k in BAD_PARQUET[stream]],
    }
    return len(kinds) + len(BAD_PARQUET[stream])


# --------------------------------------------------------------------------- world


@dataclass
class World:
    """Entities shared across streams (ids are 1-based; arrays are indexed by id)."""

    n_acc: int
    acc_tz: list[str | None]
    usernames: list[str]
    names: list[str]
    u_start: np.ndarray
    u_count: np.ndarray
    c_start: np.ndarray
    c_count: np.ndarray
    c_personal: np.ndarray
    nopt: np.ndarray
    rep_created: np.ndarray
    rep_acc: np.ndarray
    rep_chan: np.ndarray
    rep_user: np.ndarray
    rep_state: np.ndarray
    rep_cdf: np.ndarray
    late: np.ndarray
    subsets: dict[str, np.ndarray]
    specials: dict[str, np.ndarray]
    removed: list[int]
    cfg_report: np.ndarray
    cfg_cdf: np.ndarray
    deliv_sent: np.ndarray = field(default_factory=lambda: np.zeros(1, np.int64))
    deliv_acc: np.ndarray = field(default_factory=lambda: np.zeros(1, np.int64))
    deliv_late: np.ndarray = field(default_factory=lambda: np.zeros(1, bool))
    deliv_cdf: np.ndarray = field(default_factory=lambda: np.ones(1))

    @property
    def n_reports(self) -> int:
        """Number of reports."""
        return len(self.rep_created) - 1

    def users_of(self, rng: np.random.Generator, acc: np.ndarray, power: float = 2.0) -> np.ndarray:
        """Heavy-tailed users of the given accounts."""
        return self.u_start[acc] + _heavy(self.u_count[acc], rng.random(len(acc)), power)


def _counts_by_weight(
    rng: np.random.Generator, total: int, w: np.ndarray, floor: int
) -> np.ndarray:
    """Split `total` into per-account counts, each at least `floor`."""
    rest = max(0, total - floor * len(w))
    return floor + rng.multinomial(rest, w / w.sum())


def _account_weights(n_acc: int) -> np.ndarray:
    """Heavy-tailed account sizes (acme biggest)."""
    w = 1.0 / np.arange(1, n_acc + 1) ** 0.9
    w[1] = max(w[1], 0.5)
    return w


def build_world(ctx: Ctx) -> World:
    """Draw accounts, users, channels, fields and reports (the referents of events)."""
    e = ctx.events
    rng = ctx.rng("world")
    n_acc = max(6, min(500, 5 + e // 100_000))
    acc_tz = [a[2] for a in BASE_ACCOUNTS] + [
        EXTRA_TZ[i % len(EXTRA_TZ)] for i in range(n_acc - len(BASE_ACCOUNTS))
    ]
    usernames = [a[0] for a in BASE_ACCOUNTS] + [f"org-{i}" for i in range(7, n_acc + 1)]
    names = [a[1] for a in BASE_ACCOUNTS] + [f"Organisation {i}" for i in range(7, n_acc + 1)]
    w = _account_weights(n_acc)
    u_count = np.concatenate([[0], _counts_by_weight(rng, max(12 * n_acc, e // 200), w, 4)])
    c_count = np.concatenate([[0], _counts_by_weight(rng, max(6 * n_acc, e // 1000), w, 4)])
    c_count[1] += 2
    u_start = np.concatenate([[0], 1 + np.concatenate([[0], np.cumsum(u_count[1:])[:-1]])])
    c_start = np.concatenate([[0], 1 + np.concatenate([[0], np.cumsum(c_count[1:])[:-1]])])
    c_personal = np.maximum(1, c_count // 5)
    c_personal[0] = 0
    n_fields = n_acc * FIELDS_PER_ACCOUNT + 1
    nopt = rng.integers(3, 8, n_fields + 1)

    n_rep = max(300, e // 10)
    acc = rng.choice(n_acc, n_rep, p=w / w.sum()) + 1
    chan = c_start[acc] + _heavy(c_count[acc], rng.random(n_rep), 2.0)
    user = u_start[acc] + _heavy(u_count[acc], rng.random(n_rep), 2.5)
    sj = _heavy(np.full(n_rep, STATES_PER_ACCOUNT), rng.random(n_rep), 1.5)
    state = (acc - 1) * STATES_PER_ACCOUNT + sj + 1
    r = rng.random(n_rep)
    state = np.where(r < 0.08, -1, np.where(r < 0.09, MISSING_STATE_BASE + acc, state))
    state[-1] = MISSING_STATE_BASE + acc[-1]
    state[-2] = -1
    created = START + (np.sort(rng.random(n_rep)) ** 0.8 * (CREATE_END - START)).astype(np.int64)
    created = _precision(rng, created)
    pad = np.zeros(1, np.int64)
    rep = {
        "acc": np.concatenate([pad, acc]),
        "chan": np.concatenate([pad, chan]),
        "user": np.concatenate([pad, user]),
        "state": np.concatenate([pad, state]),
        "created": np.concatenate([pad, created]),
    }

    perm = rng.permutation(n_rep) + 1
    specials, cursor = _place_specials(rep, perm, u_start, c_start, n_acc)
    removed = [a for a in range(1, n_acc + 1) if a <= 3 or a % 4 == 0]
    forced = perm[cursor : cursor + 2 * len(removed)]
    cursor += len(forced)
    for i, a in enumerate(removed):
        for rid in forced[2 * i : 2 * i + 2]:
            _pin_report(rep, int(rid), a, u_start, c_start, None)
    specials["forced_removed_option"] = forced
    rest = perm[cursor:]
    sizes = {
        "late": max(5, n_rep // 100),
        "state_change": max(4, n_rep // 25),
        "channel_move": max(4, n_rep // 33),
        "selection_change": max(4, n_rep // 25),
        "delete": max(3, n_rep // 50),
        "undelete": max(3, n_rep // 100),
        "duplicate": max(3, n_rep // 100),
    }
    subsets: dict[str, np.ndarray] = {}
    for name, size in sizes.items():
        subsets[name] = np.sort(rest[:size])
        rest = rest[size:]
    versioned = np.sort(
        np.concatenate(
            [
                subsets[k]
                for k in ("state_change", "channel_move", "selection_change", "delete", "undelete")
            ]
        )
    )
    subsets["older_after_newer"] = np.sort(
        rng.choice(versioned, max(3, len(versioned) // 4), replace=False)
    )
    late = np.zeros(n_rep + 1, bool)
    late[subsets["late"]] = True

    n_cfg = max(12, int(e * EVENT_SHARE["alerts"]) // 6)
    rep_cdf = _zipf_cdf(rng, n_rep, 0.9)
    return World(
        n_acc=n_acc,
        acc_tz=acc_tz,
        usernames=usernames,
        names=names,
        u_start=u_start,
        u_count=u_count,
        c_start=c_start,
        c_count=c_count,
        c_personal=c_personal,
        nopt=nopt,
        rep_created=rep["created"],
        rep_acc=rep["acc"],
        rep_chan=rep["chan"],
        rep_user=rep["user"],
        rep_state=rep["state"],
        rep_cdf=rep_cdf,
        late=late,
        subsets=subsets,
        specials=specials,
        removed=removed,
        cfg_report=np.concatenate([pad, _sample_cdf(rng, rep_cdf, n_cfg)]),
        cfg_cdf=_zipf_cdf(rng, n_cfg, 1.0),
    )


def _pin_report(
    rep: dict[str, np.ndarray],
    rid: int,
    a: int,
    u_start: np.ndarray,
    c_start: np.ndarray,
    created: int | None,
) -> None:
    """Put a report in account a's first channel (optionally at a fixed instant)."""
    rep["acc"][rid] = a
    rep["chan"][rid] = c_start[a]
    rep["user"][rid] = u_start[a]
    rep["state"][rid] = (a - 1) * STATES_PER_ACCOUNT + 1
    if created is not None:
        rep["created"][rid] = created


def _place_specials(
    rep: dict[str, np.ndarray],
    perm: np.ndarray,
    u_start: np.ndarray,
    c_start: np.ndarray,
    n_acc: int,
) -> tuple[dict[str, np.ndarray], int]:
    """Pin reports at DST-night and Kathmandu-midnight instants; returns groups and cursor."""
    groups = {
        "dst_fall_back": (1, DST_FALL),
        "dst_spring_forward": (1, DST_SPRING),
        "kathmandu_midnight": (2, KTM_MIDNIGHT),
    }
    out: dict[str, np.ndarray] = {}
    cursor = 0
    for name, (a, instants) in groups.items():
        ids = perm[cursor : cursor + len(instants)]
        cursor += len(instants)
        for rid, iso in zip(ids, instants, strict=True):
            _pin_report(rep, int(rid), a, u_start, c_start, _us(iso))
        out[name] = ids
    return out, cursor


# --------------------------------------------------------------------------- small snapshot streams


def _v_for(ctx: Ctx, stream: str, ids: np.ndarray, version: int) -> np.ndarray:
    """Deterministic presentation bits of (stream, id, version)."""
    return _hash_bits(ids, ctx.seed, f"v:{stream}:{version}")


def gen_accounts(ctx: Ctx, w: World) -> None:
    """Accounts: tz variety (NY, Kathmandu, null, absent), a tz change, a duplicate."""
    _fill_pool(ctx, "accounts")
    ids = np.arange(1, w.n_acc + 1)
    v = _v_for(ctx, "accounts", ids, 1)
    omit = 1 << BIT_OMIT
    v[2] &= ~omit  # account 3: "timezone": null
    v[3] |= omit  # account 4: timezone key absent
    upd = PRE + ids * HOUR
    base = _table(
        "accounts",
        {
            "account_id": ids,
            "username": w.usernames,
            "name": w.names,
            "timezone": w.acc_tz,
            "updated_at": upd,
        },
        v,
    )
    write_file(ctx, "accounts", "accounts/base/part-0000.jsonl", base)
    upd2 = np.array([_us("2017-03-01T12:00:00Z"), _us("2017-04-02T08:30:00.5+02:00")])
    newer = _table(
        "accounts",
        {
            "account_id": [5, 6],
            "username": [w.usernames[4], w.usernames[5]],
            "name": [w.names[4], "Sydney & Co Pty Ltd"],
            "timezone": ["Europe/London", w.acc_tz[5]],
            "updated_at": upd2,
        },
        _v_for(ctx, "accounts", np.array([5, 6]), 2),
    )
    write_file(ctx, "accounts", "accounts/updates/part-0001.parquet", newer)
    write_file(ctx, "accounts", "accounts/zz_misc/part-0002.jsonl.gz", base.slice(0, 1))
    ctx.behaviours["account_timezone_change"] += 1
    ctx.behaviours["duplicate_snapshot"] += 1
    ctx.behaviours["duplicate_snapshot.accounts"] += 1
    ctx.behaviours["accounts_null_timezone"] += sum(tz is None for tz in w.acc_tz)


def gen_states(ctx: Ctx, w: World) -> None:
    """States per account; some renamed in a newer snapshot."""
    _fill_pool(ctx, "states")
    acc = np.repeat(np.arange(1, w.n_acc + 1), STATES_PER_ACCOUNT)
    j = np.tile(np.arange(STATES_PER_ACCOUNT), w.n_acc)
    ids = (acc - 1) * STATES_PER_ACCOUNT + j + 1
    upd = PRE + ids * MINUTE * 7
    base = _table(
        "states",
        {"state_id": ids, "account_id": acc, "name": _take(STATE_NAMES, j), "updated_at": upd},
        _v_for(ctx, "states", ids, 1),
    )
    write_file(ctx, "states", "states/base/part-0000.jsonl", base)
    ren_acc = np.array([a for a in range(1, w.n_acc + 1) if a % 3 == 1 or a == 2])
    ren = (ren_acc - 1) * STATES_PER_ACCOUNT + 2
    newer = _table(
        "states",
        {
            "state_id": ren,
            "account_id": ren_acc,
            "name": ["Under review"] * len(ren),
            "updated_at": UPDATES_FROM + ren * HOUR,
        },
        _v_for(ctx, "states", ren, 2),
    )
    write_file(ctx, "states", "states/updates/part-0001.parquet", newer)
    write_file(ctx, "states", "states/zz_misc/part-0002.jsonl.gz", base.slice(0, 1))
    ctx.behaviours["renamed_state"] += len(ren)
    ctx.behaviours["duplicate_snapshot"] += 1
    ctx.behaviours["duplicate_snapshot.states"] += 1


def _field_rows(w: World) -> list[dict[str, Any]]:
    """Version-1 field rows (Python dicts; a few thousand at most)."""
    rows = []
    for a in range(1, w.n_acc + 1):
        for j in range(FIELDS_PER_ACCOUNT):
            fid = (a - 1) * FIELDS_PER_ACCOUNT + j + 1
            opts = None
            if j < 3:
                opts = [
                    {"value": f"f_{fid}_{k}", "name": OPTION_NAMES[j][k]}
                    for k in range(int(w.nopt[fid]))
                ]
                if fid == 2:
                    opts.append({"value": "f_2_1", "name": "Medium (duplicate value)"})
            rows.append(
                {
                    "field_id": fid,
                    "account_id": a,
                    "field_type": FIELD_TYPES[j],
                    "label": FIELD_LABELS[j],
                    "options": opts,
                    "updated_at": PRE + fid * MINUTE * 3,
                }
            )
    rows.append(
        {
            "field_id": w.n_acc * FIELDS_PER_ACCOUNT + 1,
            "account_id": 1,
            "field_type": "Date",
            "label": "Due date",
            "options": None,
            "updated_at": PRE + DAY,
        }
    )
    return rows


def _rows_table(ctx: Ctx, stream: str, rows: list[dict[str, Any]], version: int) -> pa.Table:
    """Internal table from Python dict rows (small streams only)."""
    key = SCHEMAS[stream][0][0]
    cols = {name: [r.get(name) for r in rows] for name, _, _ in SCHEMAS[stream]}
    ids = np.array([r[key] for r in rows], dtype=np.int64)
    return _table(stream, cols, _v_for(ctx, stream, ids, version))


def gen_fields(ctx: Ctx, w: World) -> None:
    """Fields with options; newer versions rename an option or drop a still-selected one."""
    _fill_pool(ctx, "fields")
    rows = _field_rows(w)
    write_file(ctx, "fields", "fields/base/part-0000.jsonl", _rows_table(ctx, "fields", rows, 1))
    by_id = {r["field_id"]: r for r in rows}
    removed, renamed = [], []
    for a in w.removed:
        r = dict(by_id[(a - 1) * FIELDS_PER_ACCOUNT + 1])
        r["options"] = [o for o in r["options"] if o["value"] != f"f_{r['field_id']}_0"]
        r["updated_at"] = UPDATES_FROM + r["field_id"] * HOUR
        removed.append(r)
    for a in range(1, w.n_acc + 1, 2):
        r = dict(by_id[(a - 1) * FIELDS_PER_ACCOUNT + 3])
        r["options"] = [
            dict(o, name=o["name"] + " (renamed)") if o["value"] == f"f_{r['field_id']}_1" else o
            for o in r["options"]
        ]
        r["updated_at"] = UPDATES_FROM + DAY + r["field_id"] * HOUR
        renamed.append(r)
    write_file(
        ctx, "fields", "fields/updates/part-0001.parquet", _rows_table(ctx, "fields", removed, 2)
    )
    write_file(
        ctx, "fields", "fields/updates/part-0002.jsonl.gz", _rows_table(ctx, "fields", renamed, 2)
    )
    ctx.behaviours["removed_option"] += len(removed)
    ctx.behaviours["renamed_option"] += len(renamed)
    ctx.behaviours["duplicate_option_value"] += 1
    ctx.behaviours["unsupported_field_type"] += 1


def gen_users(ctx: Ctx, w: World) -> None:
    """Users with emails (some null), email changes and duplicate snapshots."""
    _fill_pool(ctx, "users")
    rng = ctx.rng("users")
    n = int(w.u_count.sum())
    ids = np.arange(1, n + 1)
    acc = np.repeat(np.arange(1, w.n_acc + 1), w.u_count[1:])
    fi = rng.integers(0, len(FIRST), n)
    li = rng.integers(0, len(LAST), n)
    uname = _take(w.usernames, acc - 1)
    local = _join(_take(FIRST_ASCII, fi), ".", _take(LAST_ASCII, li), ids)
    cap = pa.array(rng.random(n) < 0.1)
    local = pc.if_else(cap, pc.utf8_capitalize(local), local)
    email = _join(local, "@", uname, ".example.com")
    r = rng.random(n)
    email = pc.if_else(pa.array(r < 0.05), pa.nulls(n, pa.string()), email)
    first = pc.if_else(pa.array(rng.random(n) < 0.03), pa.nulls(n, pa.string()), _take(FIRST, fi))
    upd = PRE + rng.integers(0, 30 * 86_400, n) * US
    cols = {
        "user_id": ids,
        "account_id": acc,
        "first_name": first,
        "last_name": _take(LAST, li),
        "email": email,
        "updated_at": upd,
    }
    base = _table("users", cols, _v_for(ctx, "users", ids, 1))
    for i, (lo, hi) in enumerate(_splits(n)):
        write_file(
            ctx, "users", f"users/base/part-{i:04d}.{_rotate('users', i)}", base.slice(lo, hi - lo)
        )
    ctx.behaviours["null_emails"] += int((r < 0.05).sum())
    pick = rng.permutation(n)
    chg = np.sort(pick[: max(2, n // 25)])
    chg = chg[np.asarray(pc.is_valid(email.take(pa.array(chg))))]
    new_email = _join(local.take(pa.array(chg)), "@", uname.take(pa.array(chg)), ".example.org")
    newer = _table(
        "users",
        {
            "user_id": ids[chg],
            "account_id": acc[chg],
            "first_name": first.take(pa.array(chg)),
            "last_name": _take(LAST, li[chg]),
            "email": new_email,
            "updated_at": UPDATES_FROM + rng.integers(0, 300 * 86_400, len(chg)) * US,
        },
        _v_for(ctx, "users", ids[chg], 2),
    )
    dup = np.sort(pick[max(2, n // 25) : max(2, n // 25) + max(2, n // 100)])
    write_file(ctx, "users", "users/updates/part-0000.jsonl", newer)
    write_file(ctx, "users", "users/updates/part-0001.jsonl.gz", base.take(pa.array(dup)))
    ctx.behaviours["user_email_change"] += len(chg)
    ctx.behaviours["duplicate_snapshot"] += len(dup)
    ctx.behaviours["duplicate_snapshot.users"] += len(dup)


def gen_channels(ctx: Ctx, w: World) -> None:
    """Channels per account (personal ones with owners), renames and deletions as newer versions."""
    _fill_pool(ctx, "channels")
    rng = ctx.rng("channels")
    n = int(w.c_count.sum())
    ids = np.arange(1, n + 1)
    acc = np.repeat(np.arange(1, w.n_acc + 1), w.c_count[1:])
    pos = ids - w.c_start[acc]
    personal = pos >= (w.c_count[acc] - w.c_personal[acc])
    owner = np.where(personal, w.u_start[acc] + pos % w.u_count[acc], -1)
    flag = pa.array(np.where(personal, True, False))
    flag = pc.if_else(pa.array(~personal & (rng.random(n) < 0.4)), pa.nulls(n, pa.bool_()), flag)
    name = pc.if_else(
        pa.array(personal),
        _join("Personal space ", ids),
        _join(_take(CHANNEL_NAMES, ids % len(CHANNEL_NAMES)), " ", ids),
    )
    upd = PRE + rng.integers(0, 30 * 86_400, n) * US
    owner_arr = pa.array(owner, mask=~personal)
    base = _table(
        "channels",
        {
            "channel_id": ids,
            "account_id": acc,
            "name": name,
            "personal": flag,
            "owner_user_id": owner_arr,
            "updated_at": upd,
        },
        _v_for(ctx, "channels", ids, 1),
    )
    for i, (lo, hi) in enumerate(_splits(n)):
        write_file(
            ctx,
            "channels",
            f"channels/base/part-{i:04d}.{_rotate('channels', i)}",
            base.slice(lo, hi - lo),
        )
    cand = ~personal & (pos >= 2)
    dele = cand & (rng.random(n) < 0.12)
    dele[np.flatnonzero(cand & (acc == 1))[0]] = True
    ren = ~dele & ~personal & (rng.random(n) < 0.1)
    ren[np.flatnonzero(~dele & ~personal & (acc == 2))[0]] = True
    sel = np.flatnonzero(dele | ren)
    t2 = UPDATES_FROM + rng.integers(0, 300 * 86_400, len(sel)) * US
    newer = base.take(pa.array(sel))
    newer = newer.set_column(
        newer.schema.get_field_index("name"),
        "name",
        pc.if_else(
            pa.array(ren[sel]), _join(newer.column("name"), " (renamed)"), newer.column("name")
        ),
    )
    newer = newer.set_column(newer.schema.get_field_index("updated_at"), "updated_at", pa.array(t2))
    newer = newer.set_column(
        newer.schema.get_field_index("deleted_at"), "deleted_at", pa.array(t2, mask=~dele[sel])
    )
    newer = newer.set_column(
        newer.schema.get_field_index("_v"), "_v", pa.array(_v_for(ctx, "channels", ids[sel], 2))
    )
    write_file(ctx, "channels", "channels/updates/part-0000.jsonl.gz", newer)
    ctx.behaviours["personal_channels"] += int(personal.sum())
    ctx.behaviours["deleted_channels"] += int(dele.sum())
    ctx.behaviours["renamed_channel"] += int(ren.sum())


# --------------------------------------------------------------------------- reports


def _selections(ctx: Ctx, w: World, ids: np.ndarray, salt: int) -> pa.Array:
    """Selections of reports (deterministic per report id and salt)."""
    acc = w.rep_acc[ids]
    u = np.stack([_hash_unit(ids, ctx.seed, f"sel{salt}", c) for c in range(7)], axis=1)
    fids = (acc[:, None] - 1) * FIELDS_PER_ACCOUNT + np.arange(1, 4)[None, :]
    include = u[:, :3] < 0.7
    k = _heavy(w.nopt[fids], u[:, 3:6], 2.0)
    forced = np.isin(ids, w.specials["forced_removed_option"])
    include[forced, 0] = True
    k[forced, 0] = 0
    null = (u[:, 6] < 0.05) & ~forced
    include &= ~null[:, None]
    counts = include.sum(axis=1)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
    flat_f, flat_k = fids[include], k[include]
    values = _join("f_", flat_f, "_", flat_k) if len(flat_f) else pa.array([], pa.string())
    struct = pa.StructArray.from_arrays(
        [pa.array(flat_f, pa.int64()), values], names=["field_id", "value"]
    )
    return pa.ListArray.from_arrays(pa.array(offsets), struct, mask=pa.array(null))


def _report_table(
    ctx: Ctx,
    w: World,
    ids: np.ndarray,
    version: int,
    updated: np.ndarray,
    deleted: np.ndarray | None = None,
    chan: np.ndarray | None = None,
    state: np.ndarray | None = None,
    sel_salt: int = 0,
) -> pa.Table:
    """Report snapshot rows for the given ids."""
    st = w.rep_state[ids] if state is None else state
    with np.errstate(over="ignore"):
        token = _hex12(
            (ids.astype(np.uint64) ^ np.uint64((ctx.seed * 7919) & (2**64 - 1)))
            * np.uint64(0x9E3779B97F4B)
        )
    cols = {
        "report_id": ids,
        "account_id": w.rep_acc[ids],
        "channel_id": w.rep_chan[ids] if chan is None else chan,
        "user_id": w.rep_user[ids],
        "state_id": pa.array(st, mask=st < 0),
        "token": token,
        "created_at": w.rep_created[ids],
        "updated_at": updated,
        "deleted_at": None if deleted is None else pa.array(deleted, mask=deleted < 0),
        "selections": _selections(ctx, w, ids, sel_salt),
    }
    return _table("reports", cols, _v_for(ctx, "reports", ids, version))


def _v1_updated(ctx: Ctx, w: World, ids: np.ndarray) -> np.ndarray:
    """Version-1 updated_at (created_at, or up to two days later)."""
    u = _hash_unit(ids, ctx.seed, "v1upd")
    lag = np.where(u < 0.3, (u / 0.3 * 2 * 86_400).astype(np.int64) * US, 0)
    return w.rep_created[ids] + lag


def _later(ctx: Ctx, ids: np.ndarray, after: np.ndarray, tag: str) -> np.ndarray:
    """Whole-second instants strictly after `after` and before the as-of day."""
    u = _hash_unit(ids, ctx.seed, tag)
    t = after + US + (u * 0.6 * (AS_OF - DAY - after)).astype(np.int64)
    return t - t % US + US


def gen_reports(ctx: Ctx, w: World) -> None:
    """Report base versions, newer versions, late reports, older-after-newer and duplicates."""
    _fill_pool(ctx, "reports")
    sub = w.subsets
    held = np.zeros(w.n_reports + 1, bool)
    held[sub["late"]] = True
    held[sub["older_after_newer"]] = True
    base_ids = np.flatnonzero(~held[1:]) + 1
    for i, (lo, hi) in enumerate(_splits(len(base_ids))):
        ids = base_ids[lo:hi]
        year = datetime.fromtimestamp(int(w.rep_created[ids[0]]) // US, tz=UTC).year
        t = _report_table(ctx, w, ids, 1, _v1_updated(ctx, w, ids))
        write_file(ctx, "reports", f"reports/{year}/part-{i:04d}.{_rotate('reports', i)}", t)
        _count_reports(ctx, w, ids)
    newer = _newer_reports(ctx, w)
    dup = sub["duplicate"]
    newer.append(_report_table(ctx, w, dup, 1, _v1_updated(ctx, w, dup)))
    ctx.behaviours["duplicate_snapshot"] += len(dup)
    ctx.behaviours["duplicate_snapshot.reports"] += len(dup)
    upd = pa.concat_tables(newer)
    for i, (lo, hi) in enumerate(_splits(upd.num_rows, 1)):
        fmt = "jsonl.gz" if i % 2 == 0 else "parquet"
        write_file(ctx, "reports", f"reports/updates/part-{i:04d}.{fmt}", upd.slice(lo, hi - lo))
    late_ids = np.sort(np.concatenate([sub["late"], sub["older_after_newer"]]))
    write_file(
        ctx,
        "reports",
        "reports/zz_late/part-0000.jsonl",
        _report_table(ctx, w, late_ids, 1, _v1_updated(ctx, w, late_ids)),
    )
    _count_reports(ctx, w, late_ids)
    ctx.behaviours["late_reports"] += len(sub["late"])
    ctx.behaviours["older_snapshot_after_newer"] += len(sub["older_after_newer"])


def _count_reports(ctx: Ctx, w: World, ids: np.ndarray) -> None:
    """Behaviour counts of report base versions."""
    st = w.rep_state[ids]
    ctx.behaviours["reports_null_state"] += int((st < 0).sum())
    ctx.behaviours["reports_missing_state"] += int((st >= MISSING_STATE_BASE).sum())
    for name in ("dst_fall_back", "dst_spring_forward", "kathmandu_midnight"):
        ctx.behaviours[f"{name}_reports"] += int(np.isin(ids, w.specials[name]).sum())


def _newer_reports(ctx: Ctx, w: World) -> list[pa.Table]:
    """Newer versions: state change, channel move, selection change, delete, undelete."""
    sub, b = w.subsets, ctx.behaviours
    out = []
    ids = sub["state_change"]
    acc = w.rep_acc[ids]
    old = np.where(w.rep_state[ids] > 0, (w.rep_state[ids] - 1) % STATES_PER_ACCOUNT, 0)
    shift = 1 + (_hash_unit(ids, ctx.seed, "st") * (STATES_PER_ACCOUNT - 1)).astype(np.int64)
    new_state = (acc - 1) * STATES_PER_ACCOUNT + (old + shift) % STATES_PER_ACCOUNT + 1
    out.append(
        _report_table(
            ctx, w, ids, 2, _later(ctx, ids, _v1_updated(ctx, w, ids), "u2"), state=new_state
        )
    )
    ids = sub["channel_move"]
    acc = w.rep_acc[ids]
    pos = w.rep_chan[ids] - w.c_start[acc]
    shift = 1 + (_hash_unit(ids, ctx.seed, "mv") * (w.c_count[acc] - 1)).astype(np.int64)
    new_chan = w.c_start[acc] + (pos + shift) % w.c_count[acc]
    out.append(
        _report_table(
            ctx, w, ids, 2, _later(ctx, ids, _v1_updated(ctx, w, ids), "u2"), chan=new_chan
        )
    )
    ids = sub["selection_change"]
    out.append(
        _report_table(ctx, w, ids, 2, _later(ctx, ids, _v1_updated(ctx, w, ids), "u2"), sel_salt=1)
    )
    for name in ("delete", "undelete"):
        ids = sub[name]
        t2 = _later(ctx, ids, _v1_updated(ctx, w, ids), "u2")
        out.append(_report_table(ctx, w, ids, 2, t2, deleted=t2))
        b["newer_report_snapshots.delete"] += len(ids)
        if name == "undelete":
            t3 = _later(ctx, ids, t2, "u3")
            out.append(_report_table(ctx, w, ids, 3, t3, deleted=np.full(len(ids), -1)))
            b["newer_report_snapshots.undelete"] += len(ids)
    for name in ("state_change", "channel_move", "selection_change"):
        b[f"newer_report_snapshots.{name}"] += len(sub[name])
    b["newer_report_snapshots"] += sum(t.num_rows for t in out)
    return out


def gen_report_images(ctx: Ctx, w: World) -> None:
    """Report images with thumb/medium styles; some deleted in a newer version."""
    _fill_pool(ctx, "report_images")
    rng = ctx.rng("images")
    n = max(60, w.n_reports // 2)
    rep = _sample_cdf(rng, w.rep_cdf, n)
    created = _delays(rng, w.rep_created[rep], AS_OF - DAY)
    ids = np.arange(1, n + 1)
    stem = _join("https://img.example.com/r/", rep, "/", ids)
    styles = pa.StructArray.from_arrays(
        [_join(stem, "/thumb.jpg"), _join(stem, "/medium.jpg")], names=["thumb", "medium"]
    )
    cols = {
        "report_image_id": ids,
        "report_id": rep,
        "account_id": w.rep_acc[rep],
        "created_at": created,
        "updated_at": created,
        "styles": styles,
    }
    base = _table("report_images", cols, _v_for(ctx, "report_images", ids, 1))
    for i, (lo, hi) in enumerate(_splits(n)):
        rel = f"report_images/base/part-{i:04d}.{_rotate('report_images', i)}"
        write_file(ctx, "report_images", rel, base.slice(lo, hi - lo))
    dele = np.sort(rng.permutation(n)[: max(3, n // 20)])
    t2 = _later(ctx, ids[dele], created[dele], "img")
    newer = base.take(pa.array(dele))
    for col, val in (
        ("updated_at", t2),
        ("deleted_at", t2),
        ("_v", _v_for(ctx, "report_images", ids[dele], 2)),
    ):
        newer = newer.set_column(newer.schema.get_field_index(col), col, pa.array(val))
    write_file(ctx, "report_images", "report_images/updates/part-0000.jsonl", newer)
    ctx.behaviours["deleted_report_images"] += len(dele)


def gen_schedules(ctx: Ctx, w: World) -> None:
    """Schedules (some paused, some deleted), newer versions and a naive-timestamp file."""
    _fill_pool(ctx, "schedules")
    rng = ctx.rng("schedules")
    n = max(40, w.n_reports // 10)
    ids = np.arange(1, n + 1)
    rep = _sample_cdf(rng, w.rep_cdf, n)
    acc = w.rep_acc[rep]
    created = _delays(rng, w.rep_created[rep], AS_OF - 2 * DAY)
    r = rng.random(n)
    paused = pa.array(np.where(r < 0.15, True, False), mask=r > 0.55)
    deleted = rng.random(n) < 0.06
    del_at = _later(ctx, ids, created, "sdel")
    cols = {
        "schedule_id": ids,
        "account_id": acc,
        "report_id": rep,
        "user_id": w.users_of(rng, acc),
        "created_at": created,
        "updated_at": np.where(deleted, del_at, created),
        "paused": paused,
        "deleted_at": pa.array(del_at, mask=~deleted),
    }
    base = _table("schedules", cols, _v_for(ctx, "schedules", ids, 1))
    for i, (lo, hi) in enumerate(_splits(n)):
        write_file(
            ctx,
            "schedules",
            f"schedules/base/part-{i:04d}.{_rotate('schedules', i)}",
            base.slice(lo, hi - lo),
        )
    tog = np.sort(rng.permutation(np.flatnonzero(~deleted))[: max(3, n // 10)])
    newer = base.take(pa.array(tog))
    t2 = _later(ctx, ids[tog], created[tog], "s2")
    flipped = pc.invert(pc.fill_null(newer.column("paused"), False))
    for col, val in (
        ("updated_at", pa.array(t2)),
        ("paused", flipped),
        ("_v", pa.array(_v_for(ctx, "schedules", ids[tog], 2))),
    ):
        newer = newer.set_column(newer.schema.get_field_index(col), col, val)
    write_file(ctx, "schedules", "schedules/updates/part-0000.jsonl", newer)
    naive = base.slice(0, 3)
    naive = naive.set_column(
        0, "schedule_id", pa.array([ctx.bad_key() for _ in range(naive.num_rows)])
    )
    write_file(ctx, "schedules", "schedules/zz_misc/naive-0000.parquet", naive, ts_mode="naive")
    ctx.behaviours["paused_schedules"] += int(np.asarray(pc.fill_null(paused, False)).sum())
    ctx.behaviours["deleted_schedules"] += int(deleted.sum())
    ctx.behaviours["schedule_pause_toggled"] += len(tog)


# --------------------------------------------------------------------------- event streams


def _event_counts(events: int) -> dict[str, int]:
    """Records per event stream (sums to `events`)."""
    counts = {s: int(events * EVENT_SHARE[s]) for s in EVENT_STREAMS}
    counts["reads"] += events - sum(counts.values())
    return counts


def _event_table(
    ctx: Ctx, w: World, stream: str, ids: np.ndarray, rng: np.random.Generator
) -> pa.Table:
    """One chunk of good events with keys `ids`."""
    n = len(ids)
    key = SCHEMAS[stream][0][0]
    ts_col = EVENT_TS[stream]
    v = rng.integers(0, 1 << 62, n, dtype=np.int64)
    if stream == "alert_opens":
        deliv = _sample_cdf(rng, w.deliv_cdf, n)
        ts = _delays(rng, w.deliv_sent[deliv], AS_OF)
        return _table(
            stream,
            {key: ids, "delivery_id": deliv, "account_id": w.deliv_acc[deliv], ts_col: ts},
            v,
        )
    cols: dict[str, Any] = {key: ids}
    if stream == "alerts":
        alert = _sample_cdf(rng, w.cfg_cdf, n)
        rep = w.cfg_report[alert]
        cols["alert_id"] = alert
    else:
        rep = _sample_cdf(rng, w.rep_cdf, n)
    acc = w.rep_acc[rep]
    cols.update({"account_id": acc, "report_id": rep, "user_id": w.users_of(rng, acc)})
    limit = AS_OF - DAY if stream == "alerts" else AS_OF
    cols[ts_col] = _delays(rng, w.rep_created[rep], limit)
    if stream == "report_runs":
        cols["run_type"] = _take(["manual", "scheduled"], (rng.random(n) < 0.35).astype(np.int64))
    return _table(stream, cols, v)


def _force_rows(ctx: Ctx, w: World, stream: str, t: pa.Table, rng: np.random.Generator) -> pa.Table:
    """Point the first rows of chunk 0 at late referents and DST-night reports."""
    ts_col = EVENT_TS[stream]
    if stream == "alert_opens":
        late = np.flatnonzero(w.deliv_late)
        k = min(len(late) * 2, t.num_rows // 4)
        deliv = np.asarray(t.column("delivery_id").to_numpy()).copy()
        ts = np.asarray(t.column(ts_col).to_numpy()).copy()
        acc = np.asarray(t.column("account_id").to_numpy()).copy()
        deliv[:k] = late[np.arange(k) % len(late)]
        acc[:k] = w.deliv_acc[deliv[:k]]
        ts[:k] = _delays(rng, w.deliv_sent[deliv[:k]], AS_OF)
        cols = {"delivery_id": deliv, "account_id": acc, ts_col: ts}
    elif stream == "reads":
        targets = np.concatenate(
            [
                w.subsets["late"],
                *[
                    w.specials[g]
                    for g in ("dst_fall_back", "dst_spring_forward", "kathmandu_midnight")
                ],
            ]
        )
        k = min(len(targets) * 2, t.num_rows // 4)
        rep = np.asarray(t.column("report_id").to_numpy()).copy()
        ts = np.asarray(t.column(ts_col).to_numpy()).copy()
        rep[:k] = targets[np.arange(k) % len(targets)]
        ts[:k] = w.rep_created[rep[:k]] + (rng.random(k) * 20 * 60).astype(np.int64) * US + US
        acc = w.rep_acc[rep]
        user = np.asarray(t.column("user_id").to_numpy()).copy()
        user[:k] = w.users_of(rng, acc[:k])
        cols = {"report_id": rep, "account_id": acc, "user_id": user, ts_col: ts}
        ctx.behaviours["special_time_reads"] += k
    else:
        return t
    for name, val in cols.items():
        t = t.set_column(t.schema.get_field_index(name), name, pa.array(val, pa.int64()))
    return t


def _count_events(ctx: Ctx, w: World, stream: str, t: pa.Table, opened: np.ndarray | None) -> None:
    """Behaviour counts of good event records (late referents, recent runs, opens)."""
    if t.num_rows == 0:
        return
    if stream == "alert_opens":
        deliv = t.column("delivery_id").to_numpy()
        ctx.behaviours["event_before_referent"] += int(w.deliv_late[deliv].sum())
        if opened is not None:
            np.add.at(opened, deliv, 1)
        return
    rep = t.column("report_id").to_numpy()
    ctx.behaviours["event_before_referent"] += int(w.late[rep].sum())
    if stream == "report_runs":
        ran = t.column("ran_at").to_numpy()
        ctx.behaviours["runs_in_last_30_days"] += int(
            ((ran >= AS_OF - 30 * DAY) & (ran < AS_OF)).sum()
        )


def _orphan_table(
    ctx: Ctx,
    w: World,
    stream: str,
    first_id: int,
    n: int,
    n_unknown_user: int,
    rng: np.random.Generator,
) -> pa.Table:
    """Events whose report/delivery never exists (plus a few with unknown users)."""
    total = n + n_unknown_user
    t = _event_table(ctx, w, stream, np.arange(first_id, first_id + total), rng)
    ref = "delivery_id" if stream == "alert_opens" else "report_id"
    refs = np.asarray(t.column(ref).to_numpy()).copy()
    refs[:n] = ORPHAN_BASE + np.arange(n) + first_id
    t = t.set_column(t.schema.get_field_index(ref), ref, pa.array(refs))
    if n_unknown_user:
        users = np.asarray(t.column("user_id").to_numpy()).copy()
        users[n:] = ORPHAN_BASE + np.arange(n_unknown_user)
        t = t.set_column(t.schema.get_field_index("user_id"), "user_id", pa.array(users))
        ctx.behaviours["unknown_user_refs"] += n_unknown_user
    ctx.behaviours["orphans"] += n
    return t


def _edge_runs(ctx: Ctx, w: World, first_id: int) -> pa.Table:
    """Runs exactly at (and 1 µs around) the 30-days-before-as-of edge and just before as-of."""
    edge = AS_OF - 30 * DAY
    times = np.array([edge, edge, edge - 1, edge + 1, AS_OF - 1, AS_OF - US])
    offs = np.array([0, 8, 0, 7, 0, 8])  # Z, -05:00, Z, +05:45, Z, -05:00
    n = len(times)
    rep = w.specials["dst_fall_back"][np.arange(n) % len(w.specials["dst_fall_back"])]
    acc = w.rep_acc[rep]
    quiet = (1 << BIT_SPACE) | (1 << BIT_INTSTR) | (1 << BIT_NANO) | (1 << BIT_EXTRA)
    cols = {
        "run_id": np.arange(first_id, first_id + n),
        "account_id": acc,
        "report_id": rep,
        "user_id": w.u_start[acc],
        "run_type": ["manual", "scheduled"] * (n // 2),
        "ran_at": times,
    }
    ctx.behaviours["runs_at_30d_edges"] += n
    ctx.behaviours["runs_in_last_30_days"] += int(((times >= edge) & (times < AS_OF)).sum())
    return _table("report_runs", cols, quiet | offs)


def gen_events(ctx: Ctx, w: World, stream: str, total: int) -> None:
    """One event stream: chunk files, retries, orphans, special files; exactly `total` records."""
    n_bad = _fill_pool(ctx, stream)
    n_retry = max(3, total // 400)
    n_orphan = max(2, total // 1000)
    n_unknown = 2 if stream in ("report_edits", "report_runs") else 0
    n_strbad = 2 if stream in STRING_TS_STREAMS else 0
    n_naive = 5 if stream == "reads" else 0
    n_edges = 6 if stream == "report_runs" else 0
    n_good = total - n_bad - n_retry - n_orphan - n_unknown - n_strbad - n_naive - n_edges
    if stream == "alerts":
        _init_deliveries(ctx, w, n_good)
    opened = np.zeros(len(w.deliv_sent), np.int64) if stream == "alert_opens" else None
    retries: pa.Table | None = None
    late_rows: list[pa.Table] = []
    splits = _splits(n_good)
    for i, (lo, hi) in enumerate(splits):
        rng = ctx.rng(stream, i)
        t = _event_table(ctx, w, stream, np.arange(lo + 1, hi + 1), rng)
        if stream == "alerts":
            t, late = _split_late_deliveries(w, t)
            late_rows.append(late)
        if i == 0:
            t = _force_rows(ctx, w, stream, t, rng)
            pick = np.sort(
                rng.choice(np.arange(t.num_rows // 4, t.num_rows), n_retry, replace=False)
            )
            retries = t.take(pa.array(pick))
        _count_events(ctx, w, stream, t, opened)
        year = 2016 if i < max(1, len(splits) // 2) else 2017
        write_file(ctx, stream, f"{stream}/{year}/part-{i:04d}.{_rotate(stream, i)}", t)
    assert retries is not None
    _count_events(ctx, w, stream, retries, None)
    ctx.behaviours["retried_events"] += retries.num_rows
    write_file(ctx, stream, f"{stream}/retries/part-0000.{RETRY_FORMAT[stream]}", retries)
    orphans = _orphan_table(ctx, w, stream, n_good + 1, n_orphan, n_unknown, ctx.rng(stream, "o"))
    if stream in STRING_TS_STREAMS:
        write_file(
            ctx,
            stream,
            f"{stream}/misc/orphans-0000.parquet",
            orphans,
            ts_mode="string",
            bad_ts=[
                ("parquet_ts_no_offset", "2016-11-07T10:15:00"),
                ("parquet_ts_unparseable", "07/11/2016 10:15"),
            ],
        )
    else:
        fmt = "jsonl" if stream in ("reads", "report_runs") else "jsonl.gz"
        write_file(ctx, stream, f"{stream}/misc/orphans-0000.{fmt}", orphans)
    if n_naive:
        naive = _event_table(
            ctx,
            w,
            stream,
            np.array([ctx.bad_key() for _ in range(n_naive)]),
            ctx.rng(stream, "naive"),
        )
        write_file(ctx, stream, f"{stream}/misc/naive-0000.parquet", naive, ts_mode="naive")
    if n_edges:
        write_file(
            ctx,
            stream,
            f"{stream}/misc/edges-0000.jsonl",
            _edge_runs(ctx, w, n_good + n_orphan + n_unknown + 1),
        )
    if stream == "alerts":
        late = pa.concat_tables(late_rows)
        _count_events(ctx, w, stream, late, None)
        write_file(ctx, stream, "alerts/zz_late/part-0000.jsonl", late)
        ctx.behaviours["late_deliveries"] += late.num_rows
    if opened is not None:
        ctx.behaviours["deliveries_opened_multiple_times"] += int((opened[1:] >= 2).sum())
        ctx.behaviours["deliveries_never_opened"] += int((opened[1:] == 0).sum())


def _init_deliveries(ctx: Ctx, w: World, n: int) -> None:
    """Allocate per-delivery arrays (filled as alert chunks are generated)."""
    rng = ctx.rng("deliveries")
    w.deliv_sent = np.zeros(n + 1, np.int64)
    w.deliv_acc = np.zeros(n + 1, np.int64)
    w.deliv_late = np.zeros(n + 1, bool)
    w.deliv_late[rng.choice(np.arange(1, n + 1), max(3, n // 200), replace=False)] = True
    w.deliv_cdf = _zipf_cdf(rng, n, 0.6)


def _split_late_deliveries(w: World, t: pa.Table) -> tuple[pa.Table, pa.Table]:
    """Record delivery facts and move late deliveries out of the chunk."""
    ids = t.column("delivery_id").to_numpy()
    w.deliv_sent[ids] = t.column("sent_at").to_numpy()
    w.deliv_acc[ids] = t.column("account_id").to_numpy()
    late = w.deliv_late[ids]
    return t.filter(pa.array(~late)), t.filter(pa.array(late))


# --------------------------------------------------------------------------- entry point


def _clean_previous(raw: Path) -> None:
    """Remove files listed by a previous generator run in the same folder."""
    manifest = raw / "_generator.json"
    if not manifest.exists():
        return
    try:
        old = json.loads(manifest.read_text())
    except ValueError:
        return
    for rel in [*old.get("files", {}), *old.get("unknown_stream_files", [])]:
        (raw / rel).unlink(missing_ok=True)
    for d in sorted((p for p in raw.rglob("*") if p.is_dir()), reverse=True):
        if not any(d.iterdir()):
            d.rmdir()


def _unknown_stream(raw: Path) -> list[str]:
    """Write a file under a folder that is not a stream (the loader must report it)."""
    rel = "clicks/part-0000.jsonl"
    (raw / "clicks").mkdir(parents=True, exist_ok=True)
    lines = [
        json.dumps({"click_id": i, "account_id": 1, "clicked_at": "2017-01-01T00:00:00Z"})
        for i in range(1, 4)
    ]
    (raw / rel).write_text("\n".join(lines) + "\n")
    return [rel]


def generate(raw: Path, events: int = 20_000, seed: int = 7) -> dict:
    """Write synthetic raw files for all 14 streams under `raw` and return their summary."""
    raw = Path(raw)
    if events < MIN_EVENTS:
        raise GenerateInputError(
            f"--events must be at least {MIN_EVENTS} so that every messy behaviour fits (got {events})"
        )
    if seed < 0:
        raise GenerateInputError(f"--seed must be a non-negative integer (got {seed})")
    raw.mkdir(parents=True, exist_ok=True)
    _clean_previous(raw)
    con = duckdb.connect()
    ctx = Ctx(raw=raw, seed=seed, events=events, con=con)
    try:
        w = build_world(ctx)
        gen_accounts(ctx, w)
        gen_states(ctx, w)
        gen_fields(ctx, w)
        gen_users(ctx, w)
        gen_channels(ctx, w)
        gen_reports(ctx, w)
        gen_report_images(ctx, w)
        gen_schedules(ctx, w)
        for stream, total in _event_counts(events).items():
            gen_events(ctx, w, stream, total)
    finally:
        con.close()
    leftover = {s: list(p) for s, p in ctx.pool.items() if any(p.values())}
    if leftover:
        raise RuntimeError(f"bad records not placed: {leftover}")
    summary = _summary(ctx, _unknown_stream(raw))
    (raw / "_generator.json").write_text(json.dumps(summary, indent=1, sort_keys=True) + "\n")
    return summary


def _summary(ctx: Ctx, unknown: list[str]) -> dict[str, Any]:
    """The summary dict returned by `generate` and written to `_generator.json`."""
    files = dict(sorted(ctx.files.items()))
    bad: Counter[str] = Counter()
    records: Counter[str] = Counter()
    for info in files.values():
        bad[info["stream"]] += info["bad"]
        records[info["stream"]] += info["lines"]
    return {
        "seed": ctx.seed,
        "events": ctx.events,
        "as_of": AS_OF_ISO,
        "files": files,
        "bad_records": {s: bad[s] for s in STREAMS},
        "records": {s: records[s] for s in STREAMS},
        "behaviours": dict(sorted(ctx.behaviours.items())),
        "bad_kinds": dict(sorted(ctx.bad_kinds.items())),
        "unknown_stream_files": unknown,
    }


__all__ = ["AS_OF_ISO", "EVENT_STREAMS", "SCHEMAS", "STREAMS", "bad_json_line", "generate"]
