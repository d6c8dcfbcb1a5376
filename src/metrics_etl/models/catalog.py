"""The catalog of SQL models: each model's metadata, read from the header of its SQL file.

A model's file starts with a header of `-- key: value` comments (plain SQL comments, so the
file stays plain DuckDB SQL); a value may go on over lines indented under it (`--     more`):

    -- model: agg_reads_hourly
    -- purpose: reads per channel, local hour bucket, report and reader.
    -- grain: channel_id, hour_start, report_id, user_id
    -- partitioned_by: hour_start (month)
    -- order_by: channel_id, hour_start, report_id, user_id
    -- incremental: by_group

- model: the table's name, the file's name without `.sql`;
- purpose: what a row is, in words;
- grain: the columns that identify a row (the unique-keys audit checks them);
- partitioned_by: the time column whose UTC month names a published table's partition
  (a published table without one has a single partition, `all`);
- order_by: the sort keys a published table is stored in (within its partition);
- incremental: how an incremental run brings the model up to date (INCREMENTAL); `by_key`
  names its key column, `by_group` may name its group columns (default: the grain).

Published models (marts not named `int_`) declare order_by; the others declare neither
order_by nor partitioned_by (they are kept in no particular order).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from graphlib import TopologicalSorter
from pathlib import Path

SQL_DIR = Path(__file__).resolve().parent / "sql"  # package data
LAYERS = ("staging", "marts")
# incremental kinds: how an incremental run (incremental.py) brings a model up to date
INCREMENTAL = {
    "by_key": "the rows of changed keys are recomputed and replaced: by_key(column)",
    "on_change": "rebuilt when a source changed; published again only if its rows differ",
    "by_report": "recomputed for the dirty reports and the reports of changed channels",
    "by_account": "recomputed for the organizations whose listed reports changed",
    "append_missing": "rows missing for changed reports and events are added, never changed",
    "by_group": "the groups replaced fact rows fall in are recomputed: by_group[(columns)]",
    "by_report_inputs": "recomputed for the reports whose inputs changed",
    "full": "rebuilt in full, every partition marked changed",
}
KEYS = ("model", "purpose", "grain", "partitioned_by", "order_by", "incremental")
REQUIRED = ("model", "purpose", "grain", "incremental")
IDENT = r"[a-z_][a-z0-9_]*"
REFERENCE = re.compile(rf"\b(?:from|join)\s+({IDENT})")


class ModelHeaderError(ValueError):
    """A model's header is missing, malformed or inconsistent."""


@dataclass(frozen=True)
class Model:
    """One SQL model: its table name, layer, query text and header metadata."""

    name: str
    layer: str
    sql: str
    purpose: str = ""
    grain: tuple[str, ...] = ()
    partitioned_by: str | None = None
    order_by: tuple[str, ...] = ()
    incremental: str = "full"
    incremental_columns: tuple[str, ...] = ()
    refs: frozenset[str] = frozenset()

    @property
    def incremental_key(self) -> str:
        """The key column of a `by_key(column)` model."""
        (key,) = self.incremental_columns
        return key

    @property
    def groups(self) -> tuple[str, ...]:
        """The group columns of a `by_group` rollup: those named, or its grain."""
        return self.incremental_columns or self.grain

    @property
    def published(self) -> bool:
        """True for the marts published as Parquet (intermediate `int_` models are not)."""
        return is_published(self.name, self.layer)

    @property
    def storage_order(self) -> str | None:
        """The order the table is stored in: by partition month, then order_by (None: any)."""
        if not self.order_by:
            return None
        keys = ", ".join(self.order_by)
        if self.partitioned_by is None:
            return keys
        return f"{utc_month_start(self.partitioned_by)}, {keys}"

    @property
    def part_expr(self) -> str:
        """SQL for the name of the partition a row falls in (a UTC month, or 'all')."""
        return "'all'" if self.partitioned_by is None else utc_month_name(self.partitioned_by)


# A timestamptz column's UTC month, in plain arithmetic on its epoch microseconds and a naive
# timestamp: DuckDB's date_trunc and strftime of a timestamptz go through ICU, about 5x slower
# per row (0.63 against 0.13 s for the 6M reads of 10M events), whatever the session's zone.
def utc_month_start(column: str) -> str:
    """SQL for the first instant of a timestamptz column's UTC month (a naive timestamp)."""
    return f"date_trunc('month', make_timestamp(epoch_us({column})))"


def utc_month_name(column: str) -> str:
    """SQL for a timestamptz column's UTC month as `YYYY-MM`: the name of its partition."""
    return f"strftime(make_timestamp(epoch_us({column})), '%Y-%m')"


def is_published(name: str, layer: str) -> bool:
    """Whether a model of this name and layer is published."""
    return layer == "marts" and not name.startswith("int_")


def _columns(path: Path, key: str, value: str) -> tuple[str, ...]:
    """A comma-separated list of column names."""
    columns = tuple(part.strip() for part in value.split(","))
    for column in columns:
        if not re.fullmatch(IDENT, column):
            raise ModelHeaderError(f"{path}: {key}: {column!r} is not a column name")
    if len(set(columns)) != len(columns):
        raise ModelHeaderError(f"{path}: {key}: a column is listed twice")
    return columns


def _header(path: Path, sql: str) -> dict[str, str]:
    """The `-- key: value` pairs of a file's leading comment block."""
    fields: dict[str, str] = {}
    last: str | None = None
    for number, line in enumerate(sql.splitlines(), start=1):
        if not line.startswith("--"):
            break
        text = line[2:]
        if last is not None and re.match(r" {2,}\S", text):  # an indented continuation
            fields[last] += " " + text.strip()
            continue
        match = re.fullmatch(r" ([a-z_]+): (\S.*)", text)
        if match is None:
            raise ModelHeaderError(
                f"{path}:{number}: expected `-- key: value` or an indented continuation, "
                f"got {line!r}"
            )
        key, value = match.groups()
        if key not in KEYS:
            raise ModelHeaderError(f"{path}:{number}: unknown header key {key!r} (keys: {KEYS})")
        if key in fields:
            raise ModelHeaderError(f"{path}:{number}: header key {key!r} given twice")
        fields[key], last = value.strip(), key
    for key in REQUIRED:
        if key not in fields:
            raise ModelHeaderError(f"{path}: the header has no {key!r} line")
    return fields


def _incremental(path: Path, value: str) -> tuple[str, tuple[str, ...]]:
    """An incremental kind and its columns: by_key(column), by_group[(columns)], or a kind."""
    match = re.fullmatch(r"([a-z_]+)(?:\((.*)\))?", value)
    kind, columns = match.groups() if match else (value, None)
    if kind not in INCREMENTAL:
        raise ModelHeaderError(
            f"{path}: incremental: {value!r} is not one of {', '.join(INCREMENTAL)}"
        )
    listed = _columns(path, "incremental", columns) if columns is not None else ()
    if kind == "by_key" and len(listed) != 1:
        raise ModelHeaderError(f"{path}: incremental: by_key names one key column: by_key(column)")
    if listed and kind not in ("by_key", "by_group"):
        raise ModelHeaderError(f"{path}: incremental: only by_key and by_group take columns")
    return kind, listed


def parse_model(path: Path, layer: str, sql: str | None = None) -> Model:
    """One model from its SQL file; ModelHeaderError names the file and what is wrong."""
    sql = path.read_text() if sql is None else sql
    fields = _header(path, sql)
    if fields["model"] != path.stem:
        raise ModelHeaderError(f"{path}: model: {fields['model']!r} is not the file's name")
    grain = _columns(path, "grain", fields["grain"])
    order_by = _columns(path, "order_by", fields["order_by"]) if "order_by" in fields else ()
    partitioned_by = None
    if "partitioned_by" in fields:
        match = re.fullmatch(rf"({IDENT}) \(month\)", fields["partitioned_by"])
        if match is None:
            raise ModelHeaderError(f"{path}: partitioned_by: expected `column (month)`")
        partitioned_by = match.group(1)
    kind, columns = _incremental(path, fields["incremental"])
    if is_published(path.stem, layer) and not order_by:
        raise ModelHeaderError(f"{path}: a published model declares its order_by")
    if not is_published(path.stem, layer) and (order_by or partitioned_by):
        raise ModelHeaderError(f"{path}: only published models have order_by and partitioned_by")
    if partitioned_by is not None and partitioned_by not in order_by:
        raise ModelHeaderError(f"{path}: partitioned_by: {partitioned_by} is not in order_by")
    return Model(
        name=path.stem,
        layer=layer,
        sql=sql,
        purpose=fields["purpose"],
        grain=grain,
        partitioned_by=partitioned_by,
        order_by=order_by,
        incremental=kind,
        incremental_columns=columns,
        refs=frozenset(REFERENCE.findall(re.sub(r"--[^\n]*", "", sql))),
    )


def depends_on(model: Model, names: set[str] | dict[str, Model]) -> set[str]:
    """The models (of `names`) a model reads."""
    return {ref for ref in model.refs if ref in names and ref != model.name}


def load_models(root: Path | None = None) -> list[Model]:
    """Read every staging and mart model, ordered so dependencies come first."""
    root = root or SQL_DIR
    models = {
        path.stem: parse_model(path, layer)
        for layer in LAYERS
        for path in sorted((root / layer).glob("*.sql"))
    }
    graph = {name: depends_on(model, models) for name, model in models.items()}
    return [models[name] for name in TopologicalSorter(graph).static_order()]


@cache
def catalog() -> dict[str, Model]:
    """The package's models by name (read once per process)."""
    return {model.name: model for model in load_models()}


def storage_order(table: str) -> str | None:
    """The order a model's table is stored in (None: not published, kept in any order)."""
    model = catalog().get(table)
    return model.storage_order if model else None


def published() -> list[Model]:
    """The published models, in build order."""
    return [model for model in catalog().values() if model.published]


def unique_keys_query(models: list[Model] | None = None) -> str:
    """A query of the rows whose declared grain appears more than once, in every published model
    (table_name, key: the grain's values joined by '/', copies); generated from the headers."""
    parts = []
    for model in published() if models is None else models:
        cols = ", ".join(model.grain)
        key = " || '/' || ".join(f"coalesce({c}::varchar, '')" for c in model.grain)
        parts.append(
            f"select '{model.name}' as table_name, {key} as key, count(*) as copies "
            f"from {model.name} group by {cols} having count(*) > 1"
        )
    return "\n union all ".join(parts)
