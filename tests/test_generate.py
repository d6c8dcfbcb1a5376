"""Tests of the synthetic raw generator against an independent plain-Python reading of the contract."""

from __future__ import annotations

import gzip
import hashlib
import itertools
import json
import re
from collections import Counter, defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from metrics_etl.generator.generate import generate

# ---------------------------------------------------------------- the contract, written out again

REQ, OPT = True, False
CONTRACT: dict[str, dict[str, tuple[str, bool]]] = {
    "accounts": {
        "account_id": ("int", REQ),
        "username": ("string", REQ),
        "name": ("string", REQ),
        "timezone": ("tz", OPT),
        "updated_at": ("ts", REQ),
    },
    "channels": {
        "channel_id": ("int", REQ),
        "account_id": ("int", REQ),
        "name": ("string", REQ),
        "personal": ("bool", OPT),
        "owner_user_id": ("int", OPT),
        "updated_at": ("ts", REQ),
        "deleted_at": ("ts", OPT),
    },
    "users": {
        "user_id": ("int", REQ),
        "account_id": ("int", REQ),
        "first_name": ("string", OPT),
        "last_name": ("string", OPT),
        "email": ("string", OPT),
        "updated_at": ("ts", REQ),
    },
    "states": {
        "state_id": ("int", REQ),
        "account_id": ("int", REQ),
        "name": ("string", REQ),
        "updated_at": ("ts", REQ),
    },
    "fields": {
        "field_id": ("int", REQ),
        "account_id": ("int", REQ),
        "field_type": ("string", REQ),
        "label": ("string", REQ),
        "options": ("options", OPT),
        "updated_at": ("ts", REQ),
    },
    "reports": {
        "report_id": ("int", REQ),
        "account_id": ("int", REQ),
        "channel_id": ("int", REQ),
        "user_id": ("int", REQ),
        "state_id": ("int", OPT),
        "token": ("string", REQ),
        "created_at": ("ts", REQ),
        "updated_at": ("ts", REQ),
        "deleted_at": ("ts", OPT),
        "selections": ("selections", OPT),
    },
    "report_images": {
        "report_image_id": ("int", REQ),
        "report_id": ("int", REQ),
        "account_id": ("int", REQ),
        "created_at": ("ts", REQ),
        "updated_at": ("ts", REQ),
        "deleted_at": ("ts", OPT),
        "styles": ("styles", REQ),
    },
    "schedules": {
        "schedule_id": ("int", REQ),
        "account_id": ("int", REQ),
        "report_id": ("int", REQ),
        "user_id": ("int", REQ),
        "created_at": ("ts", REQ),
        "updated_at": ("ts", REQ),
        "paused": ("bool", OPT),
        "deleted_at": ("ts", OPT),
    },
    "reads": {
        "read_id": ("int", REQ),
        "account_id": ("int", REQ),
        "report_id": ("int", REQ),
        "user_id": ("int", REQ),
        "read_at": ("ts", REQ),
    },
    "alerts": {
        "delivery_id": ("int", REQ),
        "alert_id": ("int", REQ),
        "account_id": ("int", REQ),
        "report_id": ("int", REQ),
        "user_id": ("int", REQ),
        "sent_at": ("ts", REQ),
    },
    "alert_opens": {
        "open_id": ("int", REQ),
        "delivery_id": ("int", REQ),
        "account_id": ("int", REQ),
        "opened_at": ("ts", REQ),
    },
    "report_edits": {
        "edit_id": ("int", REQ),
        "account_id": ("int", REQ),
        "report_id": ("int", REQ),
        "user_id": ("int", REQ),
        "edited_at": ("ts", REQ),
    },
    "report_runs": {
        "run_id": ("int", REQ),
        "account_id": ("int", REQ),
        "report_id": ("int", REQ),
        "user_id": ("int", REQ),
        "run_type": ("string", REQ),
        "ran_at": ("ts", REQ),
    },
    "explorations": {
        "exploration_id": ("int", REQ),
        "account_id": ("int", REQ),
        "report_id": ("int", REQ),
        "user_id": ("int", REQ),
        "created_at": ("ts", REQ),
    },
}
EVENTS = ("reads", "alerts", "alert_opens", "report_edits", "report_runs", "explorations")
ALL_FORMATS = {"jsonl", "jsonl.gz", "parquet"}
INT_RE = re.compile(r"^[+-]?[0-9]+$")
TS_RE = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[T ](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?"
    r"(Z|z|[+-]\d{2}(?::?\d{2})?)$"
)


class Bad(Exception):
    """A record the contract rejects."""


def to_int(v: Any) -> int:
    """Contract int: JSON integer or base-10 string, within int64."""
    if isinstance(v, bool):
        raise Bad("bool as int")
    if isinstance(v, str) and INT_RE.match(v):
        v = int(v)
    if not isinstance(v, int) or not -(2**63) <= v < 2**63:
        raise Bad(f"not an int: {v!r}")
    return v


def to_ts(v: Any) -> datetime:
    """Contract ts: ISO string with offset (or an aware datetime from Parquet)."""
    if isinstance(v, datetime):
        if v.tzinfo is None:
            raise Bad("naive timestamp")
        return v.astimezone(UTC)
    m = TS_RE.match(v) if isinstance(v, str) else None
    if not m:
        raise Bad(f"not a ts: {v!r}")
    y, mo, d, h, mi, s, frac, off = m.groups()
    try:
        local = datetime(
            int(y), int(mo), int(d), int(h), int(mi), int(s), int((frac or "0")[:6].ljust(6, "0"))
        )
    except ValueError as error:
        raise Bad(str(error)) from None
    if off in ("Z", "z"):
        delta = timedelta(0)
    else:
        digits = off[1:].replace(":", "")
        delta = timedelta(hours=int(digits[:2]), minutes=int(digits[2:] or 0))
        delta = delta if off[0] == "+" else -delta
    return (local - delta).replace(tzinfo=UTC)


def check_value(kind: str, v: Any) -> Any:
    """Validate one non-null value of a contract type; returns a normalised value."""
    if kind == "int":
        return to_int(v)
    if kind == "ts":
        return to_ts(v)
    if kind == "string":
        if not isinstance(v, str):
            raise Bad("not a string")
        return v
    if kind == "bool":
        if not isinstance(v, bool):
            raise Bad("not a bool")
        return v
    if kind == "tz":
        if not isinstance(v, str):
            raise Bad("tz not a string")
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise Bad(f"unknown tz {v}") from None
        return v
    if kind == "selections":
        if not isinstance(v, list):
            raise Bad("selections not a list")
        out = []
        for e in v:
            if (
                not isinstance(e, dict)
                or e.get("field_id") is None
                or not isinstance(e.get("value"), str)
            ):
                raise Bad("bad selection")
            out.append((to_int(e["field_id"]), e["value"]))
        return out
    if kind == "options":
        if not isinstance(v, list):
            raise Bad("options not a list")
        for e in v:
            if not (
                isinstance(e, dict)
                and isinstance(e.get("value"), str)
                and isinstance(e.get("name"), str)
            ):
                raise Bad("bad option")
        return [(e["value"], e["name"]) for e in v]
    if kind == "styles":
        if not (
            isinstance(v, dict)
            and isinstance(v.get("thumb"), str)
            and isinstance(v.get("medium"), str)
        ):
            raise Bad("bad styles")
        return (v["thumb"], v["medium"])
    raise AssertionError(kind)


def check_record(stream: str, rec: Any) -> dict[str, Any]:
    """Validate a parsed record; returns its normalised fields (raises Bad)."""
    if not isinstance(rec, dict):
        raise Bad("not an object")
    out = {}
    for name, (kind, required) in CONTRACT[stream].items():
        v = rec.get(name)
        if v is None:
            if required:
                raise Bad(f"{name} missing or null")
            out[name] = None
            continue
        out[name] = check_value(kind, v)
    if stream == "report_runs" and out["run_type"] not in ("manual", "scheduled"):
        raise Bad("run_type")
    return out


def parquet_rows(path: Path) -> Iterator[Any]:
    """Rows of a Parquet file; naive timestamp columns make every row with a value bad."""
    table = pq.read_table(path)
    naive = {f.name for f in table.schema if pa.types.is_timestamp(f.type) and f.type.tz is None}
    for row in table.to_pylist():
        if any(row[c] is not None for c in naive):
            yield Bad("naive timestamp column")
        else:
            yield row


def read_file(path: Path, stream: str) -> tuple[int, int, list[dict[str, Any]]]:
    """(non-blank lines, bad records, good normalised records) of one raw file."""
    lines, bad, good = 0, 0, []
    if path.suffix == ".parquet":
        raw_rows: Iterator[Any] = parquet_rows(path)
    else:
        opener = gzip.open if path.name.endswith(".gz") else open
        with opener(path, "rt", encoding="utf-8") as fh:
            texts = [t for t in fh.read().split("\n") if t.strip()]

        def parse() -> Iterator[Any]:
            for text in texts:
                try:
                    yield json.loads(text)
                except ValueError:
                    yield Bad("invalid json")

        raw_rows = parse()
    for row in raw_rows:
        lines += 1
        try:
            if isinstance(row, Bad):
                raise row
            good.append(check_record(stream, row))
        except Bad:
            bad += 1
    return lines, bad, good


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="session", autouse=True)
def prefect_harness() -> Iterator[None]:
    """The generator needs no Prefect API: skip conftest's session harness in this module."""
    yield


@pytest.fixture(scope="module")
def gen(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """One generation at the default size."""
    raw = tmp_path_factory.mktemp("raw")
    return raw, generate(raw)


@pytest.fixture(scope="module")
def loaded(gen: tuple[Path, dict[str, Any]]) -> dict[str, Any]:
    """Every file read back by the plain-Python reader, in sorted relpath order."""
    raw, _ = gen
    per_file, good = {}, defaultdict(list)
    for rel in sorted(p.relative_to(raw).as_posix() for p in raw.rglob("*") if p.is_file()):
        stream = rel.split("/")[0]
        if rel.startswith(("_", ".")) or stream not in CONTRACT:
            continue
        lines, bad, recs = read_file(raw / rel, stream)
        per_file[rel] = (lines, bad)
        good[stream] += [(rel, r) for r in recs]
    return {"files": per_file, "good": good}


def digest(raw: Path) -> dict[str, str]:
    """sha256 of every file under raw."""
    return {
        p.relative_to(raw).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(raw.rglob("*"))
        if p.is_file()
    }


# ---------------------------------------------------------------- tests


def test_deterministic_for_a_seed(gen: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    raw, summary = gen
    again = generate(tmp_path / "same")
    assert again == summary
    assert digest(tmp_path / "same") == digest(raw)
    generate(tmp_path / "other", seed=8)
    other = digest(tmp_path / "other")
    same_names = set(other) & set(digest(raw))
    assert sum(other[k] != digest(raw)[k] for k in same_names) > len(same_names) // 2


def test_regenerating_in_place_replaces_previous_files(tmp_path: Path) -> None:
    first = generate(tmp_path, events=2_000)
    second = generate(tmp_path, events=1_000, seed=3)
    on_disk = {p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()}
    assert on_disk == set(second["files"]) | set(second["unknown_stream_files"]) | {
        "_generator.json"
    }
    assert first["files"] != second["files"]


def test_too_few_events_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least"):
        generate(tmp_path, events=10)


def test_layout_formats_and_summary(gen: tuple[Path, dict[str, Any]]) -> None:
    raw, summary = gen
    assert json.loads((raw / "_generator.json").read_text()) == summary
    assert summary["seed"] == 7 and summary["events"] == 20_000
    as_of = to_ts(summary["as_of"])
    files = summary["files"]
    on_disk = {p.relative_to(raw).as_posix() for p in raw.rglob("*") if p.is_file()}
    assert on_disk == set(files) | set(summary["unknown_stream_files"]) | {"_generator.json"}
    assert summary["unknown_stream_files"] and all(
        f.split("/")[0] not in CONTRACT for f in summary["unknown_stream_files"]
    )
    for stream in CONTRACT:
        mine = {rel: info for rel, info in files.items() if info["stream"] == stream}
        assert {i["format"] for i in mine.values()} == ALL_FORMATS, stream
        assert all(rel.startswith(stream + "/") and rel.count("/") >= 2 for rel in mine)
        if stream in EVENTS or stream == "reports":
            assert len(mine) >= 3
        assert summary["records"][stream] == sum(i["lines"] for i in mine.values())
        assert summary["bad_records"][stream] == sum(i["bad"] for i in mine.values())
    assert sum(summary["records"][s] for s in EVENTS) == 20_000
    assert sum(summary["bad_records"].values()) < 0.02 * sum(summary["records"].values())
    assert as_of == datetime(2018, 2, 1, tzinfo=UTC)


def test_counts_and_bad_records_match_an_independent_reader(
    gen: tuple[Path, dict[str, Any]], loaded: dict[str, Any]
) -> None:
    _, summary = gen
    for rel, info in summary["files"].items():
        assert loaded["files"][rel] == (info["lines"], info["bad"]), rel
    assert set(loaded["files"]) == set(summary["files"])
    blank = sum(i["blank_lines"] for i in summary["files"].values())
    assert blank == summary["behaviours"]["blank_lines"] > 0
    kinds = summary["bad_kinds"]
    assert sum(kinds.values()) == sum(summary["bad_records"].values())
    for kind in (
        "invalid_json",
        "json_array",
        "missing_required",
        "null_required",
        "string_for_int",
        "int_for_string",
        "int_garbage",
        "float_as_int",
        "bool_as_int",
        "ts_no_offset",
        "ts_unparseable",
        "unknown_tz",
        "bad_run_type",
        "bad_selection_field_id",
        "missing_thumb",
        "parquet_null_required",
        "parquet_naive_ts",
        "parquet_ts_unparseable",
    ):
        assert kinds.get(kind, 0) > 0, kind
    for stream in CONTRACT:
        bad_formats = {
            i["format"] for i in summary["files"].values() if i["stream"] == stream and i["bad"]
        }
        assert bad_formats == ALL_FORMATS, stream


def test_every_behaviour_is_present(gen: tuple[Path, dict[str, Any]]) -> None:
    b = gen[1]["behaviours"]
    for name in (
        "retried_events",
        "newer_report_snapshots",
        "older_snapshot_after_newer",
        "event_before_referent",
        "orphans",
        "duplicate_snapshot",
        "renamed_state",
        "renamed_option",
        "removed_option",
        "user_email_change",
        "account_timezone_change",
        "dst_fall_back_reports",
        "dst_spring_forward_reports",
        "kathmandu_midnight_reports",
        "runs_at_30d_edges",
        "runs_in_last_30_days",
        "deliveries_opened_multiple_times",
        "deliveries_never_opened",
        "personal_channels",
        "deleted_channels",
        "paused_schedules",
        "deleted_schedules",
        "null_emails",
        "int_as_string",
        "ts_nanoseconds",
        "ts_space_separator",
        "extra_keys",
        "omitted_optional_keys",
        "blank_lines",
    ):
        assert b.get(name, 0) > 0, name
    for sub in ("state_change", "channel_move", "selection_change", "delete", "undelete"):
        assert b[f"newer_report_snapshots.{sub}"] > 0, sub
    assert b["newer_report_snapshots"] == sum(
        b[f"newer_report_snapshots.{s}"]
        for s in ("state_change", "channel_move", "selection_change", "delete", "undelete")
    )


def _versions(loaded: dict[str, Any], stream: str) -> dict[int, list[tuple[str, dict[str, Any]]]]:
    """Good records of a snapshot stream grouped by key, in file order."""
    key = next(iter(CONTRACT[stream]))
    out: dict[int, list[tuple[str, dict[str, Any]]]] = defaultdict(list)
    for rel, rec in loaded["good"][stream]:
        out[rec[key]].append((rel, rec))
    return out


def _current(loaded: dict[str, Any], stream: str) -> dict[int, dict[str, Any]]:
    """Latest version per key (ties: first in file order)."""
    return {
        k: max(v, key=lambda x: x[1]["updated_at"])[1] for k, v in _versions(loaded, stream).items()
    }


def test_events_retries_orphans_and_late_referents(
    gen: tuple[Path, dict[str, Any]], loaded: dict[str, Any]
) -> None:
    b = gen[1]["behaviours"]
    reports = _versions(loaded, "reports")
    deliveries: dict[int, list[str]] = defaultdict(list)
    for rel, rec in loaded["good"]["alerts"]:
        deliveries[rec["delivery_id"]].append(rel)
    retried = orphans = late = 0
    for stream in EVENTS:
        key = next(iter(CONTRACT[stream]))
        seen: dict[int, tuple[str, dict[str, Any]]] = {}
        for rel, rec in loaded["good"][stream]:
            if rec[key] in seen:
                first_rel, first = seen[rec[key]]
                assert first == rec and first_rel != rel, (stream, rec)
                retried += 1
            else:
                seen[rec[key]] = (rel, rec)
            if stream == "alert_opens":
                files = deliveries.get(rec["delivery_id"])
            else:
                files = [r for r, _ in reports.get(rec["report_id"], [])]
            if not files:
                orphans += 1
            elif min(files).split("/")[1] == "zz_late":
                late += 1
    assert retried == b["retried_events"]
    assert orphans == b["orphans"]
    assert late == b["event_before_referent"]


def test_report_versions_are_consistent(
    gen: tuple[Path, dict[str, Any]], loaded: dict[str, Any]
) -> None:
    b = gen[1]["behaviours"]
    channels = _current(loaded, "channels")
    kinds: Counter[str] = Counter()
    dup = older_after = 0
    for versions in _versions(loaded, "reports").values():
        assert len({r["created_at"] for _, r in versions}) == 1
        by_upd: dict[datetime, dict[str, Any]] = {}
        for _, rec in versions:
            if rec["updated_at"] in by_upd:
                assert by_upd[rec["updated_at"]] == rec
                dup += 1
            by_upd[rec["updated_at"]] = rec
        ordered = [by_upd[t] for t in sorted(by_upd)]
        for old, new in itertools.pairwise(ordered):
            if old["deleted_at"] is None and new["deleted_at"] is not None:
                kinds["delete"] += 1
            elif old["deleted_at"] is not None and new["deleted_at"] is None:
                kinds["undelete"] += 1
            elif old["channel_id"] != new["channel_id"]:
                assert (
                    channels[old["channel_id"]]["account_id"]
                    == channels[new["channel_id"]]["account_id"]
                )
                kinds["channel_move"] += 1
            elif old["state_id"] != new["state_id"]:
                kinds["state_change"] += 1
            else:
                assert old["selections"] != new["selections"]
                kinds["selection_change"] += 1
        first_file = {}
        for rel, rec in versions:
            first_file.setdefault(rec["updated_at"], rel)
        stamps = sorted(first_file)
        if any(first_file[a] > first_file[c] for a, c in itertools.pairwise(stamps)):
            older_after += 1
        cur = ordered[-1]
        assert channels[cur["channel_id"]]["account_id"] == cur["account_id"]
    for kind, n in kinds.items():
        assert b[f"newer_report_snapshots.{kind}"] == n, kind
    assert dup == b["duplicate_snapshot.reports"]
    assert older_after == b["older_snapshot_after_newer"]


def test_options_states_users_and_times(
    gen: tuple[Path, dict[str, Any]], loaded: dict[str, Any]
) -> None:
    b = gen[1]["behaviours"]
    fields = _versions(loaded, "fields")
    current_reports = _current(loaded, "reports")
    selected = Counter(sel for r in current_reports.values() for sel in (r["selections"] or []))
    removed = renamed = 0
    for versions in fields.values():
        recs = sorted(
            {r["updated_at"]: r for _, r in versions}.values(), key=lambda r: r["updated_at"]
        )
        for old, new in itertools.pairwise(recs):
            gone = {v for v, _ in old["options"]} - {v for v, _ in new["options"]}
            for value in gone:
                assert selected[(new["field_id"], value)] > 0
            removed += len(gone)
            renamed += len(set(new["options"]) - set(old["options"])) > 0 and not gone
    assert removed == b["removed_option"] and renamed == b["renamed_option"]
    states = _versions(loaded, "states")
    assert sum(len({r["name"] for _, r in v}) > 1 for v in states.values()) == b["renamed_state"]
    users = _versions(loaded, "users")
    assert (
        sum(len({r["email"] for _, r in v}) > 1 for v in users.values()) == b["user_email_change"]
    )
    accounts = _current(loaded, "accounts")
    assert accounts[1]["timezone"] == "America/New_York"
    assert accounts[2]["timezone"] == "Asia/Kathmandu"
    assert any(a["timezone"] is None for a in accounts.values())
    assert len({a["username"] for a in accounts.values()}) == len(accounts)
    created = [
        r["created_at"]
        for versions in _versions(loaded, "reports").values()
        for _, r in versions[:1]
    ]

    def within(starts: list[str], hours: float) -> int:
        spans = [(to_ts(s), to_ts(s) + timedelta(hours=hours)) for s in starts]
        return sum(any(a <= t < z for a, z in spans) for t in created)

    assert within(["2016-11-06T05:00:00Z", "2017-11-05T05:00:00Z"], 2) >= b["dst_fall_back_reports"]
    assert (
        within(["2016-03-13T06:00:00Z", "2017-03-12T06:00:00Z"], 2)
        >= b["dst_spring_forward_reports"]
    )
    assert (
        within(["2016-06-30T18:00:00Z", "2016-12-31T18:00:00Z", "2017-03-05T18:00:00Z"], 1)
        >= b["kathmandu_midnight_reports"]
    )
    newest = max(
        v
        for recs in loaded["good"].values()
        for _, r in recs
        for v in r.values()
        if isinstance(v, datetime)
    )
    assert newest < to_ts(gen[1]["as_of"]) <= newest + timedelta(days=1)
    runs = [r["ran_at"] for _, r in loaded["good"]["report_runs"]]
    as_of = to_ts(gen[1]["as_of"])
    assert as_of - timedelta(days=30) in runs
    assert max(runs) < as_of
    assert {r["run_type"] for _, r in loaded["good"]["report_runs"]} == {"manual", "scheduled"}
