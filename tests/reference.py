"""Independent plain-Python reference (test oracle) for metrics-etl.

Written only from the contracts in ``/work/shared/spec`` and the section
"Decisions where the spec is silent" of the README; it never reads or imports
the implementation (``src/``, ``sql/``).  It favours obviousness over speed:
every request is answered by filtering the current raw state directly.

Usage::

    ref = Reference(Path("data/raw"), as_of=datetime(2016, 12, 1, tzinfo=UTC))
    status, body = ref.get("/api/v4/analytics/reports_per_user?channel_id=1"
                           "&start_date=2016-01-01&end_date=2017-01-01", account_id=1)
"""

from __future__ import annotations

import gzip
import json
import math
import os
import re
import zoneinfo
from collections import Counter, defaultdict
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlsplit

# --------------------------------------------------------------------------
# Stream definitions (raw-contract.md)
# --------------------------------------------------------------------------

# (name, type, required)
_F = tuple[str, str, bool]

SNAPSHOT_STREAMS: dict[str, tuple[str, list[_F]]] = {
    "accounts": (
        "account_id",
        [
            ("account_id", "int", True),
            ("username", "string", True),
            ("name", "string", True),
            ("timezone", "tz", False),
            ("updated_at", "ts", True),
        ],
    ),
    "channels": (
        "channel_id",
        [
            ("channel_id", "int", True),
            ("account_id", "int", True),
            ("name", "string", True),
            ("personal", "bool", False),
            ("owner_user_id", "int", False),
            ("updated_at", "ts", True),
            ("deleted_at", "ts", False),
        ],
    ),
    "users": (
        "user_id",
        [
            ("user_id", "int", True),
            ("account_id", "int", True),
            ("first_name", "string", False),
            ("last_name", "string", False),
            ("email", "string", False),
            ("updated_at", "ts", True),
        ],
    ),
    "states": (
        "state_id",
        [
            ("state_id", "int", True),
            ("account_id", "int", True),
            ("name", "string", True),
            ("updated_at", "ts", True),
        ],
    ),
    "fields": (
        "field_id",
        [
            ("field_id", "int", True),
            ("account_id", "int", True),
            ("field_type", "string", True),
            ("label", "string", True),
            ("options", "options", False),
            ("updated_at", "ts", True),
        ],
    ),
    "reports": (
        "report_id",
        [
            ("report_id", "int", True),
            ("account_id", "int", True),
            ("channel_id", "int", True),
            ("user_id", "int", True),
            ("state_id", "int", False),
            ("token", "string", True),
            ("created_at", "ts", True),
            ("updated_at", "ts", True),
            ("deleted_at", "ts", False),
            ("selections", "selections", False),
        ],
    ),
    "report_images": (
        "report_image_id",
        [
            ("report_image_id", "int", True),
            ("report_id", "int", True),
            ("account_id", "int", True),
            ("created_at", "ts", True),
            ("updated_at", "ts", True),
            ("deleted_at", "ts", False),
            ("styles", "styles", True),
        ],
    ),
    "schedules": (
        "schedule_id",
        [
            ("schedule_id", "int", True),
            ("account_id", "int", True),
            ("report_id", "int", True),
            ("user_id", "int", True),
            ("created_at", "ts", True),
            ("updated_at", "ts", True),
            ("paused", "bool", False),
            ("deleted_at", "ts", False),
        ],
    ),
}

EVENT_STREAMS: dict[str, tuple[str, list[_F]]] = {
    "reads": (
        "read_id",
        [
            ("read_id", "int", True),
            ("account_id", "int", True),
            ("report_id", "int", True),
            ("user_id", "int", True),
            ("read_at", "ts", True),
        ],
    ),
    "alerts": (
        "delivery_id",
        [
            ("delivery_id", "int", True),
            ("alert_id", "int", True),
            ("account_id", "int", True),
            ("report_id", "int", True),
            ("user_id", "int", True),
            ("sent_at", "ts", True),
        ],
    ),
    "alert_opens": (
        "open_id",
        [
            ("open_id", "int", True),
            ("delivery_id", "int", True),
            ("account_id", "int", True),
            ("opened_at", "ts", True),
        ],
    ),
    "report_edits": (
        "edit_id",
        [
            ("edit_id", "int", True),
            ("account_id", "int", True),
            ("report_id", "int", True),
            ("user_id", "int", True),
            ("edited_at", "ts", True),
        ],
    ),
    "report_runs": (
        "run_id",
        [
            ("run_id", "int", True),
            ("account_id", "int", True),
            ("report_id", "int", True),
            ("user_id", "int", True),
            ("run_type", "run_type", True),
            ("ran_at", "ts", True),
        ],
    ),
    "explorations": (
        "exploration_id",
        [
            ("exploration_id", "int", True),
            ("account_id", "int", True),
            ("report_id", "int", True),
            ("user_id", "int", True),
            ("created_at", "ts", True),
        ],
    ),
}

ALL_STREAMS: dict[str, tuple[str, list[_F]]] = {**SNAPSHOT_STREAMS, **EVENT_STREAMS}

EXTENSIONS = (".jsonl.gz", ".jsonl", ".parquet")

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1

_INT_STR_RE = re.compile(r"[+-]?[0-9]+")
_RAW_TS_RE = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[T ]([0-9]{2}):([0-9]{2}):([0-9]{2})"
    r"(?:\.([0-9]+))?"
    r"(Z|z|[+-][0-9]{2}(?::?[0-9]{2})?)"
)
_API_DATE_RE = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})"
    r"(?:T([0-9]{2}):([0-9]{2})(?::([0-9]{2})(?:\.([0-9]+))?)?"
    r"(Z|[+-][0-9]{2}(?::?[0-9]{2})?)?)?"
)

# IANA names known to zoneinfo.  "localtime" is a host alias, not an IANA name.
_KNOWN_TZ = frozenset(zoneinfo.available_timezones()) - {"localtime", "posixrules"}

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class BadRecord(Exception):
    """A record that must go to the rejects list."""


class JsonObject(dict):
    """A decoded JSON object that remembers which keys were written more than once."""

    repeated: frozenset[str] = frozenset()


def _object_from_pairs(pairs: list[tuple[str, Any]]) -> JsonObject:
    """object_pairs_hook for json.loads: keep every key, note the repeated ones."""
    obj = JsonObject(pairs)
    if len(obj) < len(pairs):
        counts = Counter(k for k, _ in pairs)
        obj.repeated = frozenset(k for k, n in counts.items() if n > 1)
    return obj


def _check_repeated(obj: dict, names: tuple[str, ...] | list[str], where: str) -> None:
    """A key the contract reads, written twice in one object, is ambiguous: a bad record."""
    repeated = getattr(obj, "repeated", frozenset())
    for name in names:
        if name in repeated:
            raise BadRecord(f"key {name} appears more than once {where}")


# --------------------------------------------------------------------------
# Value parsing
# --------------------------------------------------------------------------


def _make_ts(
    y: str, mo: str, d: str, h: str, mi: str, s: str, frac: str | None, off: str | None
) -> datetime:
    """Build a UTC datetime from regex groups; raises ValueError when not real."""
    micro = int((frac or "")[:6].ljust(6, "0"))  # truncate past the 6th digit
    local = datetime(int(y), int(mo), int(d), int(h), int(mi), int(s), micro)
    if off is None or off in ("Z", "z"):
        delta = timedelta(0)
    else:
        sign = -1 if off[0] == "-" else 1
        digits = off[1:].replace(":", "")
        oh = int(digits[:2])
        om = int(digits[2:4]) if len(digits) > 2 else 0
        if oh > 23 or om > 59:
            raise ValueError("offset out of range")
        delta = sign * timedelta(hours=oh, minutes=om)
    # local - offset = UTC; may overflow at the edges of the datetime range
    return (local - delta).replace(tzinfo=UTC)


def parse_raw_ts(value: Any) -> datetime:
    if isinstance(value, datetime):  # from a Parquet timestamp column
        if value.tzinfo is None:
            raise BadRecord("timestamp without offset")
        return value.astimezone(UTC)
    if not isinstance(value, str):
        raise BadRecord("timestamp is not a string")
    m = _RAW_TS_RE.fullmatch(value)
    if not m:
        raise BadRecord(f"invalid timestamp {value!r} (needs seconds and an offset)")
    try:
        return _make_ts(*m.groups())
    except (ValueError, OverflowError) as e:
        raise BadRecord(f"invalid timestamp {value!r}: {e}") from None


def parse_int(value: Any) -> int:
    if isinstance(value, bool):
        raise BadRecord("boolean where integer expected")
    if isinstance(value, int):
        n = value
    elif isinstance(value, str) and _INT_STR_RE.fullmatch(value):
        n = int(value)
    else:
        raise BadRecord(f"not an integer: {value!r}")
    if not INT64_MIN <= n <= INT64_MAX:
        raise BadRecord(f"integer out of 64-bit range: {value!r}")
    return n


def parse_string(value: Any) -> str:
    if not isinstance(value, str):
        raise BadRecord(f"not a string: {value!r}")
    return value


def parse_bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise BadRecord(f"not a boolean: {value!r}")
    return value


def parse_tz(value: Any) -> str:
    if not isinstance(value, str):
        raise BadRecord(f"time zone is not a string: {value!r}")
    if value not in _KNOWN_TZ:
        raise BadRecord(f"unknown time zone {value!r}")
    return value


def parse_run_type(value: Any) -> str:
    if not isinstance(value, str) or value not in ("manual", "scheduled"):
        raise BadRecord(f"run_type must be manual or scheduled: {value!r}")
    return value


def _sub_required(obj: dict, name: str, parser) -> Any:
    if name not in obj:
        raise BadRecord(f"element lacks {name}")
    if obj[name] is None:
        raise BadRecord(f"element has null {name}")
    return parser(obj[name])


def parse_selections(value: Any) -> list[dict]:
    if not isinstance(value, list):
        raise BadRecord("selections is not a list")
    out = []
    for el in value:
        if not isinstance(el, dict):
            raise BadRecord("selection element is not an object")
        _check_repeated(el, ("field_id", "value"), "in an element of selections")
        out.append(
            {
                "field_id": _sub_required(el, "field_id", parse_int),
                "value": _sub_required(el, "value", parse_string),
            }
        )
    return out


def parse_options(value: Any) -> list[dict]:
    if not isinstance(value, list):
        raise BadRecord("options is not a list")
    out = []
    for el in value:
        if not isinstance(el, dict):
            raise BadRecord("option element is not an object")
        _check_repeated(el, ("value", "name"), "in an element of options")
        out.append(
            {
                "value": _sub_required(el, "value", parse_string),
                "name": _sub_required(el, "name", parse_string),
            }
        )
    return out


def parse_styles(value: Any) -> dict:
    if not isinstance(value, dict):
        raise BadRecord("styles is not an object")
    _check_repeated(value, ("thumb", "medium"), "in styles")
    return {
        "thumb": _sub_required(value, "thumb", parse_string),
        "medium": _sub_required(value, "medium", parse_string),
    }


PARSERS = {
    "int": parse_int,
    "string": parse_string,
    "bool": parse_bool,
    "ts": parse_raw_ts,
    "tz": parse_tz,
    "run_type": parse_run_type,
    "selections": parse_selections,
    "options": parse_options,
    "styles": parse_styles,
}


def validate_record(stream: str, obj: Any) -> dict:
    """Normalise one decoded record or raise BadRecord."""
    if not isinstance(obj, dict):
        raise BadRecord(f"record is not a JSON object ({type(obj).__name__})")
    _, fields = ALL_STREAMS[stream]
    _check_repeated(obj, [name for name, _, _ in fields], "in the object")
    out: dict[str, Any] = {}
    for name, typ, required in fields:
        if name not in obj:
            if required:
                raise BadRecord(f"missing required field {name}")
            out[name] = None
            continue
        v = obj[name]
        if v is None:
            if required:
                raise BadRecord(f"null in required field {name}")
            out[name] = None
            continue
        try:
            out[name] = PARSERS[typ](v)
        except BadRecord as e:
            raise BadRecord(f"{name}: {e}") from None
    return out


def _reject_constant(name: str) -> Any:
    raise ValueError(f"invalid JSON constant {name}")


def decode_json_line(text: str) -> Any:
    try:
        return json.loads(
            text, parse_constant=_reject_constant, object_pairs_hook=_object_from_pairs
        )
    except (ValueError, RecursionError) as e:
        raise BadRecord(f"invalid JSON: {e}") from None


# --------------------------------------------------------------------------
# Output formatting / API parameter parsing
# --------------------------------------------------------------------------


def fmt_ts(t: datetime) -> str:
    """UTC, millisecond precision (truncated), Z."""
    t = t.astimezone(UTC)
    return (
        f"{t.year:04d}-{t.month:02d}-{t.day:02d}T{t.hour:02d}:{t.minute:02d}:"
        f"{t.second:02d}.{t.microsecond // 1000:03d}Z"
    )


def parse_api_date(value: str) -> datetime | None:
    """README 'Dates': returns a UTC datetime, or None when invalid."""
    value = value.replace(" ", "+")  # a '+' decoded to a space in a query string
    m = _API_DATE_RE.fullmatch(value)
    if not m:
        return None
    y, mo, d, h, mi, s, frac, off = m.groups()
    try:
        return _make_ts(y, mo, d, h or "0", mi or "0", s or "0", frac, off)
    except (ValueError, OverflowError):
        return None


def parse_api_int(value: str | None) -> int | None:
    if value is None or not _INT_STR_RE.fullmatch(value):
        return None
    digits = value.lstrip("+-").lstrip("0")
    if len(digits) > 19:  # int() refuses more than 4300 digits
        return None
    n = int(digits or "0") * (-1 if value[0] == "-" else 1)
    if not INT64_MIN <= n <= INT64_MAX:
        return None
    return n


def parse_fields_param(value: str | None) -> list[str]:
    if value is None:
        return []
    out: list[str] = []
    for item in value.split(","):
        item = item.strip()
        if item and item not in out:
            out.append(item)
    return out


def _err(status: int, message: str) -> tuple[int, dict]:
    code = {400: "bad_request", 401: "unauthorized", 404: "not_found"}[status]
    return status, {"error": code, "message": message}


ANALYTICS_PREFIX = "/api/v4/analytics/"
ANALYTICS_ENDPOINTS = (
    "reports_over_time",
    "reports_per_field_selection",
    "reports_per_state",
    "reports_per_user",
    "reports_per_day_hour",
    "reports_per_week_day",
    "reports_images",
    "reports_read",
    "user_awareness",
)
WIDTHS = ("hour", "day", "week", "month")
READ_FIELDS = ("total_reads", "unique_reads", "report_readers", "reports_seen")
AWARENESS_FIELDS = ("total_alerts", "unique_alerts", "alert_source_reports", "alerts_opened")
SELECTION_FIELD_TYPES = ("Category", "DropDown", "Radio")


def choose_width(start: datetime, end: datetime) -> str:
    d = end - start
    if d <= timedelta(days=2):
        return "hour"
    if d <= timedelta(days=62):
        return "day"
    if d <= timedelta(days=732):
        return "week"
    return "month"


def _local_midnight_utc(d: date, zone: zoneinfo.ZoneInfo) -> datetime:
    return datetime(d.year, d.month, d.day, tzinfo=zone, fold=0).astimezone(UTC)


# 400 Gregorian years: dates, weekdays and every zone's rules (constant LMT before its first
# transition, the yearly rule after its last) repeat, so years 1 and 9999, whose local time may
# fall outside Python's years 1-9999, are worked out 400 years away.
_CYCLE = timedelta(days=146097)
_FIRST = datetime(1, 1, 1, tzinfo=UTC)


def _cycle_shift(t: datetime) -> timedelta:
    return _CYCLE if t.year == 1 else -_CYCLE if t.year == 9999 else timedelta(0)


def local_time(t: datetime, zone: zoneinfo.ZoneInfo) -> datetime:
    """t's wall-clock time in zone (400 years later or earlier in years 1 and 9999)."""
    return (t + _cycle_shift(t)).astimezone(zone)


def bucket_start(t: datetime, width: str, zone: zoneinfo.ZoneInfo) -> datetime:
    shift = _cycle_shift(t)
    if shift:  # a bucket starting before 0001-01-01T00:00Z starts then (README)
        moved = bucket_start(t + shift, width, zone)
        return (max(moved, _FIRST + shift) if t.year == 1 else moved) - shift
    local = t.astimezone(zone)
    if width == "hour":
        return t - timedelta(
            minutes=local.minute, seconds=local.second, microseconds=local.microsecond
        )
    d = local.date()
    if width == "day":
        first = d
    elif width == "week":
        first = d - timedelta(days=d.weekday())  # Monday
    elif width == "month":
        first = d.replace(day=1)
    else:  # pragma: no cover
        raise ValueError(width)
    return _local_midnight_utc(first, zone)


# --------------------------------------------------------------------------
# The reference
# --------------------------------------------------------------------------


class Reference:
    """Reads every raw file under ``raw`` and answers API requests naively."""

    def __init__(self, raw: Path, as_of: datetime):
        self.raw = Path(raw)
        if as_of.tzinfo is None:
            as_of = as_of.replace(tzinfo=UTC)
        self.as_of = as_of.astimezone(UTC)
        self.rejects: list[dict] = []
        self.accounting: dict[str, dict] = {}
        self.blank_lines: dict[str, int] = {}
        self.skipped: list[str] = []
        # stream -> list of (file, line, record)
        self._records: dict[str, list[tuple[str, int, dict]]] = {s: [] for s in ALL_STREAMS}
        self._load_all()
        self._current: dict[str, dict[int, dict]] = {}
        self._origin: dict[str, dict[int, tuple[str, int]]] = {}
        for stream in ALL_STREAMS:
            self._resolve(stream)
        self._build_indexes()

    # ---------------- loading ----------------

    def _iter_files(self) -> list[str]:
        out = []
        for dirpath, dirnames, filenames in os.walk(self.raw):
            dirnames[:] = [d for d in dirnames if not d.startswith(("_", "."))]
            for fn in filenames:
                if fn.startswith(("_", ".")):
                    continue
                rel = os.path.relpath(os.path.join(dirpath, fn), self.raw)
                out.append(rel.replace(os.sep, "/"))
        return sorted(out)

    def _load_all(self) -> None:
        if not self.raw.is_dir():
            return
        for rel in self._iter_files():
            parts = rel.split("/")
            if len(parts) < 2 or parts[0] not in ALL_STREAMS:
                self.skipped.append(rel)
                continue
            ext = next((e for e in EXTENSIONS if rel.endswith(e)), None)
            if ext is None:
                self.skipped.append(rel)
                continue
            stream = parts[0]
            path = self.raw / rel
            try:
                if ext == ".parquet":
                    rows = self._parquet_rows(path, [f[0] for f in ALL_STREAMS[stream][1]])
                else:
                    data = path.read_bytes()
                    if ext == ".jsonl.gz":
                        data = gzip.decompress(data)
                    rows = self._jsonl_rows(data)
            except Exception as error:  # undecodable file: one reject, nothing else loads
                self.rejects.append(
                    {"stream": stream, "file": rel, "line": 0, "reason": f"unreadable: {error}"}
                )
                self.accounting[rel] = {
                    "stream": stream,
                    "lines_read": 1,
                    "accepted": 0,
                    "rejected": 1,
                }
                self.blank_lines[rel] = 0
                continue
            acc = {"stream": stream, "lines_read": 0, "accepted": 0, "rejected": 0}
            blank = 0
            for line_no, kind, payload in rows:
                if kind == "blank":
                    blank += 1
                    continue
                acc["lines_read"] += 1
                try:
                    if kind == "bad":
                        raise BadRecord(payload)
                    if kind == "json":
                        payload = decode_json_line(payload)
                    rec = validate_record(stream, payload)
                except BadRecord as e:
                    acc["rejected"] += 1
                    self.rejects.append(
                        {"stream": stream, "file": rel, "line": line_no, "reason": str(e)}
                    )
                    continue
                acc["accepted"] += 1
                self._records[stream].append((rel, line_no, rec))
            self.accounting[rel] = acc
            self.blank_lines[rel] = blank

    @staticmethod
    def _jsonl_rows(data: bytes):
        lines = data.split(b"\n")
        if lines and lines[-1] == b"":
            lines.pop()  # the newline that ends the last line
        out = []
        for i, raw_line in enumerate(lines, start=1):
            try:
                text = raw_line.decode("utf-8")
            except UnicodeDecodeError:
                out.append((i, "bad", "invalid JSON: not UTF-8"))
                continue
            if text.strip() == "":
                out.append((i, "blank", None))
            else:
                out.append((i, "json", text))
        return out

    @staticmethod
    def _parquet_rows(path: Path, contract: list[str]):
        import pyarrow as pa
        import pyarrow.parquet as pq

        with pq.ParquetFile(path) as parquet_file:  # read_table refuses repeated names
            table = parquet_file.read()
        counts = Counter(table.column_names)
        for name in contract:  # every row would hold two values for it
            if counts[name] > 1:
                raise ValueError(f"column {name} appears {counts[name]} times")
        columns: dict[str, list] = {}
        for index, name in enumerate(table.column_names):
            if counts[name] > 1:  # an extra column written twice: ignored, as extra keys are
                continue
            col = table.column(index)
            typ = col.type
            if pa.types.is_timestamp(typ):
                per_us = {"s": 1_000_000, "ms": 1_000, "us": 1, "ns": None}[typ.unit]
                ints = col.cast(pa.int64()).to_pylist()
                vals: list = []
                for v in ints:
                    if v is None:
                        vals.append(None)
                        continue
                    us = v // 1000 if per_us is None else v * per_us  # floor = truncation
                    try:
                        t = EPOCH + timedelta(microseconds=us)
                    except OverflowError:
                        vals.append(_Unrepresentable())
                        continue
                    vals.append(t if typ.tz is not None else t.replace(tzinfo=None))
                columns[name] = vals
            elif pa.types.is_decimal(typ) and typ.scale == 0:  # written as an integer: 3, not 3.0
                columns[name] = [None if v is None else int(v) for v in col.to_pylist()]
            else:
                columns[name] = col.to_pylist()
        rows = []
        for i in range(table.num_rows):
            rows.append((i + 1, "obj", {k: v[i] for k, v in columns.items()}))
        return rows

    # ---------------- resolution ----------------

    def _resolve(self, stream: str) -> None:
        key, _ = ALL_STREAMS[stream]
        snapshot = stream in SNAPSHOT_STREAMS
        best: dict[int, tuple[str, int, dict]] = {}
        for file, line, rec in self._records[stream]:
            k = rec[key]
            cur = best.get(k)
            if cur is None:
                best[k] = (file, line, rec)
                continue
            cfile, cline, crec = cur
            if snapshot and rec["updated_at"] != crec["updated_at"]:
                if rec["updated_at"] > crec["updated_at"]:
                    best[k] = (file, line, rec)
                continue
            if (file, line) < (cfile, cline):
                best[k] = (file, line, rec)
        self._current[stream] = {k: v[2] for k, v in best.items()}
        self._origin[stream] = {k: (v[0], v[1]) for k, v in best.items()}

    def current(self, stream: str) -> dict[int, dict]:
        """Snapshot streams: key -> winning version (deleted ones included).
        Event streams: key -> winning record after dedup."""
        return {k: dict(v) for k, v in self._current[stream].items()}

    def _build_indexes(self) -> None:
        cur = self._current
        self._reads_by_report: dict[int, list[dict]] = defaultdict(list)
        for r in cur["reads"].values():
            self._reads_by_report[r["report_id"]].append(r)
        self._explorations_by_report: dict[int, int] = defaultdict(int)
        for e in cur["explorations"].values():
            self._explorations_by_report[e["report_id"]] += 1
        self._runs_by_report: dict[int, list[dict]] = defaultdict(list)
        for r in cur["report_runs"].values():
            self._runs_by_report[r["report_id"]].append(r)
        self._edits_by_report: dict[int, list[dict]] = defaultdict(list)
        for e in cur["report_edits"].values():
            self._edits_by_report[e["report_id"]].append(e)
        self._schedules_by_report: dict[int, list[dict]] = defaultdict(list)
        for s in cur["schedules"].values():
            self._schedules_by_report[s["report_id"]].append(s)
        self._opened_deliveries: set[int] = {o["delivery_id"] for o in cur["alert_opens"].values()}

    # ---------------- helpers on current state ----------------

    def _alive_reports_in_channel(self, channel_id: int) -> dict[int, dict]:
        return {
            rid: r
            for rid, r in self._current["reports"].items()
            if r["deleted_at"] is None and r["channel_id"] == channel_id
        }

    def _zone(self, account_id: int) -> zoneinfo.ZoneInfo:
        acc = self._current["accounts"].get(account_id)
        return zoneinfo.ZoneInfo((acc and acc["timezone"]) or "UTC")

    def _email(self, user_id: int) -> str | None:
        u = self._current["users"].get(user_id)
        return None if u is None else u["email"]

    def _emails(self, user_ids) -> list[str]:
        return sorted({e for e in (self._email(u) for u in user_ids) if e is not None})

    # ---------------- API ----------------

    def get(self, path_and_query: str, account_id: int) -> tuple[int, Any]:
        parts = urlsplit(path_and_query)
        params: dict[str, str] = {}
        for k, v in parse_qsl(parts.query, keep_blank_values=True):
            params[k] = v  # the last occurrence wins
        path = parts.path
        if path.startswith(ANALYTICS_PREFIX):
            endpoint = path[len(ANALYTICS_PREFIX) :]
            if endpoint not in ANALYTICS_ENDPOINTS:
                return _err(404, f"unknown endpoint {endpoint!r}")
            return self._analytics(endpoint, params, account_id)
        segs = path.split("/")
        if len(segs) == 4 and segs[0] == "" and segs[1] == "batch" and segs[3] == "report_stats":
            return self._report_stats(unquote(segs[2]), params, account_id)
        return _err(404, f"unknown path {path!r}")

    def _analytics(self, endpoint: str, p: dict[str, str], caller: int) -> tuple[int, Any]:
        channel_id = parse_api_int(p.get("channel_id"))
        if channel_id is None:
            return _err(400, "channel_id is required and must be an integer")
        if "start_date" not in p or (start := parse_api_date(p["start_date"])) is None:
            return _err(400, "start_date is required and must be an ISO 8601 date or time")
        if "end_date" not in p or (end := parse_api_date(p["end_date"])) is None:
            return _err(400, "end_date is required and must be an ISO 8601 date or time")
        if start >= end:
            return _err(400, "start_date must be before end_date")

        field_id = None
        width = None
        fields: list[str] = []
        if endpoint == "reports_per_field_selection":
            field_id = parse_api_int(p.get("field_id"))
            if field_id is None:
                return _err(400, "field_id is required and must be an integer")
        if endpoint == "reports_over_time":
            width = p.get("datetime_range_width")
            if width is not None and width not in WIDTHS:
                return _err(400, "datetime_range_width must be one of hour, day, week, month")
        if endpoint in ("reports_read", "user_awareness"):
            allowed = READ_FIELDS if endpoint == "reports_read" else AWARENESS_FIELDS
            fields = parse_fields_param(p.get("fields"))
            unknown = [f for f in fields if f not in allowed]
            if unknown:
                return _err(400, f"unknown fields {unknown}; allowed: {', '.join(allowed)}")
            if not fields:
                fields = [allowed[0]]

        channel = self._current["channels"].get(channel_id)
        if channel is None or channel["deleted_at"] is not None or channel["account_id"] != caller:
            return _err(404, f"channel {channel_id} not found")
        account_id = channel["account_id"]

        field = None
        if endpoint == "reports_per_field_selection":
            field = self._current["fields"].get(field_id)
            if field is None or field["account_id"] != caller:
                return _err(404, f"field {field_id} not found")
            if field["field_type"] not in SELECTION_FIELD_TYPES:
                return _err(
                    400,
                    f"field_id: field type {field['field_type']!r} not supported; "
                    "supported: Category, DropDown, Radio",
                )

        zone = self._zone(account_id)
        reports = self._alive_reports_in_channel(channel_id)

        def in_range(t: datetime) -> bool:
            return start <= t < end

        R = [r for r in reports.values() if in_range(r["created_at"])]

        if endpoint == "reports_over_time":
            w = width or choose_width(start, end)
            counts: dict[datetime, int] = defaultdict(int)
            for r in R:
                counts[bucket_start(r["created_at"], w, zone)] += 1
            return 200, [
                {
                    "account_id": account_id,
                    "datetime_range_start": fmt_ts(b),
                    "report_count": counts[b],
                    "datetime_range_width": w,
                }
                for b in sorted(counts)
            ]

        if endpoint == "reports_per_field_selection":
            assert field is not None
            counts_v: dict[str, int] = defaultdict(int)
            for r in R:
                values = {s["value"] for s in (r["selections"] or []) if s["field_id"] == field_id}
                for v in values:
                    counts_v[v] += 1
            names: dict[str, str] = {}
            for opt in field["options"] or []:
                names.setdefault(opt["value"], opt["name"])
            rows = [
                {
                    "field_id": field_id,
                    "account_id": account_id,
                    "name": names.get(v),
                    "value": v,
                    "report_count": n,
                }
                for v, n in counts_v.items()
            ]
            rows.sort(key=lambda x: (-x["report_count"], x["value"]))
            return 200, rows

        if endpoint == "reports_per_state":
            counts_s: dict[int, int] = defaultdict(int)
            for r in R:
                if r["state_id"] is not None:
                    counts_s[r["state_id"]] += 1
            states = self._current["states"]
            rows = [
                {
                    "id": sid,
                    "name": states[sid]["name"] if sid in states else None,
                    "account_id": account_id,
                    "report_count": n,
                }
                for sid, n in counts_s.items()
            ]
            rows.sort(key=lambda x: (-x["report_count"], x["id"]))
            return 200, rows

        if endpoint == "reports_per_user":
            counts_u: dict[int, int] = defaultdict(int)
            for r in R:
                counts_u[r["user_id"]] += 1
            rows = [
                {"user_id": u, "account_id": account_id, "report_count": n}
                for u, n in counts_u.items()
            ]
            rows.sort(key=lambda x: (-x["report_count"], x["user_id"]))
            return 200, rows

        if endpoint == "reports_per_day_hour":
            counts_h: dict[int, int] = defaultdict(int)
            for r in R:
                counts_h[local_time(r["created_at"], zone).hour] += 1
            return 200, [
                {"account_id": account_id, "hour": h, "report_count": counts_h[h]}
                for h in sorted(counts_h)
            ]

        if endpoint == "reports_per_week_day":
            counts_d: dict[int, int] = defaultdict(int)
            for r in R:
                dow = (local_time(r["created_at"], zone).weekday() + 1) % 7  # 0 = Sunday
                counts_d[dow] += 1
            return 200, [
                {"account_id": account_id, "dow": d, "report_count": counts_d[d]}
                for d in sorted(counts_d)
            ]

        if endpoint == "reports_images":
            imgs = [
                im
                for im in self._current["report_images"].values()
                if im["deleted_at"] is None
                and in_range(im["created_at"])
                and im["report_id"] in reports
            ]
            imgs.sort(key=lambda im: (im["created_at"], im["report_image_id"]), reverse=True)
            return 200, [
                {
                    "report_image_id": im["report_image_id"],
                    "account_id": account_id,
                    "report_id": im["report_id"],
                    "created_at": fmt_ts(im["created_at"]),
                    "styles": {"thumb": im["styles"]["thumb"], "medium": im["styles"]["medium"]},
                }
                for im in imgs
            ]

        if endpoint == "reports_read":
            reads = [
                r
                for r in self._current["reads"].values()
                if r["report_id"] in reports and in_range(r["read_at"])
            ]
            values = {
                "total_reads": len(reads),
                "unique_reads": len({(r["report_id"], r["user_id"]) for r in reads}),
                "report_readers": len({r["user_id"] for r in reads}),
                "reports_seen": len({r["report_id"] for r in reads}),
            }
            return 200, {f: values[f] for f in fields}

        if endpoint == "user_awareness":
            deliveries = [
                d
                for d in self._current["alerts"].values()
                if d["report_id"] in reports and in_range(d["sent_at"])
            ]
            per_user: dict[int, list[dict]] = defaultdict(list)
            for d in deliveries:
                per_user[d["user_id"]].append(d)
            users = self._current["users"]
            rows = []
            for uid, ds in per_user.items():
                stats = {
                    "total_alerts": len(ds),
                    "unique_alerts": len({d["alert_id"] for d in ds}),
                    "alert_source_reports": len({d["report_id"] for d in ds}),
                    "alerts_opened": sum(
                        1 for d in ds if d["delivery_id"] in self._opened_deliveries
                    ),
                }
                u = users.get(uid)
                row: dict[str, Any] = {
                    "user_id": uid,
                    "first_name": u["first_name"] if u else None,
                    "last_name": u["last_name"] if u else None,
                }
                for f in fields:
                    row[f] = stats[f]
                rows.append((stats["total_alerts"], uid, row))
            rows.sort(key=lambda x: (-x[0], x[1]))
            return 200, [r for _, _, r in rows]

        raise AssertionError(endpoint)  # pragma: no cover

    def _report_stats(self, org: str, p: dict[str, str], caller: int) -> tuple[int, Any]:
        account = None
        for a in self._current["accounts"].values():
            if a["username"] == org and a["account_id"] == caller:
                account = a
        if account is None:
            return _err(404, f"organization {org!r} not found")
        include = p.get("include_spaces")
        if include is not None and include != "all":
            return _err(400, "include_spaces must be absent or 'all'")
        page = 1
        if "page" in p:
            page = parse_api_int(p["page"])
            if page is None or page < 1:
                return _err(400, "page must be an integer >= 1")
        per_page = 1000
        if "per_page" in p:
            per_page = parse_api_int(p["per_page"])
            if per_page is None or not 1 <= per_page <= 1000:
                return _err(400, "per_page must be an integer between 1 and 1000")

        channels = self._current["channels"]
        rows = []
        for rid in sorted(self._current["reports"]):
            r = self._current["reports"][rid]
            if r["deleted_at"] is not None:
                continue
            ch = channels.get(r["channel_id"])
            if ch is None or ch["deleted_at"] is not None:
                continue
            if ch["account_id"] != account["account_id"]:
                continue
            if ch["personal"] and include != "all":
                continue
            rows.append(self._stats_row(r))

        total = len(rows)
        total_pages = math.ceil(total / per_page)
        page_rows = rows[(page - 1) * per_page : page * per_page] if page <= total_pages else []
        last = max(total_pages, 1)

        def href(n: int) -> str:
            n = min(max(n, 1), last)
            s = f"/batch/{quote(org, safe='')}/report_stats?page={n}&per_page={per_page}"
            return s + ("&include_spaces=all" if include == "all" else "")

        return 200, {
            "pagination": {
                "page": page,
                "per_page": per_page,
                "count": len(page_rows),
                "total_pages": total_pages,
                "total_count": total,
            },
            "report_stats": page_rows,
            "_links": {
                "next_page": {"href": href(page + 1)},
                "prev_page": {"href": href(page - 1)},
            },
        }

    def _stats_row(self, r: dict) -> dict:
        rid = r["report_id"]
        lo = self.as_of - timedelta(days=30)
        runs = self._runs_by_report.get(rid, [])
        return {
            "report_id": rid,
            "report_token": r["token"],
            "active_schedules_count": sum(
                1
                for s in self._schedules_by_report.get(rid, [])
                if s["deleted_at"] is None and not s["paused"]
            ),
            "explorations_count": self._explorations_by_report.get(rid, 0),
            "total_views_count": len(self._reads_by_report.get(rid, [])),
            "recent_manual_run_creators_emails": self._emails(
                x["user_id"]
                for x in runs
                if x["run_type"] == "manual" and lo <= x["ran_at"] < self.as_of
            ),
            "scheduled_run_creators_emails": self._emails(
                x["user_id"] for x in runs if x["run_type"] == "scheduled"
            ),
            "editors_emails": self._emails(
                [r["user_id"]] + [e["user_id"] for e in self._edits_by_report.get(rid, [])]
            ),
        }


class _Unrepresentable:
    """A Parquet timestamp outside Python's datetime range: any parser rejects it."""

    def __repr__(self) -> str:
        return "<timestamp out of range>"
