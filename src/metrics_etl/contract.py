"""The raw landing contract as data: streams, keys, fields and their types."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

FieldType = Literal["int", "string", "bool", "ts", "tz", "selections", "options", "styles"]


@dataclass(frozen=True)
class Field:
    """One field of a stream: its name, type and whether it is required."""

    name: str
    type: FieldType
    required: bool = True


@dataclass(frozen=True)
class Stream:
    """One raw stream: snapshot (latest wins) or event (dedup by key)."""

    name: str
    kind: Literal["snapshot", "event"]
    key: str
    fields: tuple[Field, ...]


def _f(spec: str) -> Field:
    """Parse a compact field spec such as `email:string?`."""
    name, type_ = spec.split(":")
    required = not type_.endswith("?")
    return Field(name, type_.rstrip("?"), required)  # type: ignore[arg-type]


def _stream(name: str, kind: Literal["snapshot", "event"], key: str, specs: str) -> Stream:
    """Build a stream from whitespace-separated field specs."""
    return Stream(name, kind, key, tuple(_f(s) for s in specs.split()))


STREAMS: dict[str, Stream] = {
    s.name: s
    for s in (
        _stream(
            "accounts",
            "snapshot",
            "account_id",
            "account_id:int username:string name:string timezone:tz? updated_at:ts",
        ),
        _stream(
            "channels",
            "snapshot",
            "channel_id",
            "channel_id:int account_id:int name:string personal:bool? owner_user_id:int? "
            "updated_at:ts deleted_at:ts?",
        ),
        _stream(
            "users",
            "snapshot",
            "user_id",
            "user_id:int account_id:int first_name:string? last_name:string? email:string? "
            "updated_at:ts",
        ),
        _stream(
            "states",
            "snapshot",
            "state_id",
            "state_id:int account_id:int name:string updated_at:ts",
        ),
        _stream(
            "fields",
            "snapshot",
            "field_id",
            "field_id:int account_id:int field_type:string label:string options:options? "
            "updated_at:ts",
        ),
        _stream(
            "reports",
            "snapshot",
            "report_id",
            "report_id:int account_id:int channel_id:int user_id:int state_id:int? token:string "
            "created_at:ts updated_at:ts deleted_at:ts? selections:selections?",
        ),
        _stream(
            "report_images",
            "snapshot",
            "report_image_id",
            "report_image_id:int report_id:int account_id:int created_at:ts updated_at:ts "
            "deleted_at:ts? styles:styles",
        ),
        _stream(
            "schedules",
            "snapshot",
            "schedule_id",
            "schedule_id:int account_id:int report_id:int user_id:int created_at:ts "
            "updated_at:ts paused:bool? deleted_at:ts?",
        ),
        _stream(
            "reads",
            "event",
            "read_id",
            "read_id:int account_id:int report_id:int user_id:int read_at:ts",
        ),
        _stream(
            "alerts",
            "event",
            "delivery_id",
            "delivery_id:int alert_id:int account_id:int report_id:int user_id:int sent_at:ts",
        ),
        _stream(
            "alert_opens",
            "event",
            "open_id",
            "open_id:int delivery_id:int account_id:int opened_at:ts",
        ),
        _stream(
            "report_edits",
            "event",
            "edit_id",
            "edit_id:int account_id:int report_id:int user_id:int edited_at:ts",
        ),
        _stream(
            "report_runs",
            "event",
            "run_id",
            "run_id:int account_id:int report_id:int user_id:int run_type:string ran_at:ts",
        ),
        _stream(
            "explorations",
            "event",
            "exploration_id",
            "exploration_id:int account_id:int report_id:int user_id:int created_at:ts",
        ),
    )
}

# Extra value checks beyond the type (field -> allowed values).
ALLOWED_VALUES: dict[tuple[str, str], tuple[str, ...]] = {
    ("report_runs", "run_type"): ("manual", "scheduled"),
}

# DuckDB column type for each contract type.
DUCKDB_TYPES: dict[str, str] = {
    "int": "bigint",
    "string": "varchar",
    "bool": "boolean",
    "ts": "timestamptz",
    "tz": "varchar",
    "selections": "struct(field_id bigint, value varchar)[]",
    "options": "struct(value varchar, name varchar)[]",
    "styles": "struct(thumb varchar, medium varchar)",
}

SUFFIXES: tuple[str, ...] = (".jsonl", ".jsonl.gz", ".parquet")
