"""Contract validation as SQL: turns raw JSON lines into typed rows or reasons."""

from __future__ import annotations

import zoneinfo

import duckdb

from metrics_etl.contract import ALLOWED_VALUES, DUCKDB_TYPES, Field, Stream

TS_PATTERN = r"[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?([Zz]|[+-][0-9]{2}(:?[0-9]{2})?)"
NAIVE_TS_PATTERN = r"[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]+)?)?"

MACROS = """
create or replace temp macro v_is_int(v) as coalesce(
    (json_type(v) in ('BIGINT', 'UBIGINT') and try_cast(json_extract_string(v, '$') as bigint) is not null)
    or (json_type(v) = 'VARCHAR'
        and regexp_full_match(json_extract_string(v, '$'), '[+-]?[0-9]+')
        and try_cast(json_extract_string(v, '$') as bigint) is not null),
    false);
create or replace temp macro v_as_int(v) as try_cast(json_extract_string(v, '$') as bigint);
create or replace temp macro v_is_selections(v) as coalesce(
    json_type(v) = 'ARRAY' and coalesce(list_bool_and(list_transform(
        json_extract(v, '$[*]'),
        lambda e: coalesce(json_type(e) = 'OBJECT' and v_is_int(json_extract(e, '$.field_id'))
            and json_type(json_extract(e, '$.value')) = 'VARCHAR', false))), true),
    false);
create or replace temp macro v_as_selections(v) as list_transform(
    json_extract(v, '$[*]'),
    lambda e: {'field_id': v_as_int(json_extract(e, '$.field_id')), 'value': json_extract_string(e, '$.value')});
create or replace temp macro v_is_options(v) as coalesce(
    json_type(v) = 'ARRAY' and coalesce(list_bool_and(list_transform(
        json_extract(v, '$[*]'),
        lambda e: coalesce(json_type(e) = 'OBJECT' and json_type(json_extract(e, '$.value')) = 'VARCHAR'
            and json_type(json_extract(e, '$.name')) = 'VARCHAR', false))), true),
    false);
create or replace temp macro v_as_options(v) as list_transform(
    json_extract(v, '$[*]'),
    lambda e: {'value': json_extract_string(e, '$.value'), 'name': json_extract_string(e, '$.name')});
create or replace temp macro v_is_styles(v) as coalesce(
    json_type(v) = 'OBJECT' and json_type(json_extract(v, '$.thumb')) = 'VARCHAR'
    and json_type(json_extract(v, '$.medium')) = 'VARCHAR', false);
create or replace temp macro v_as_styles(v) as {'thumb': json_extract_string(v, '$.thumb'), 'medium': json_extract_string(v, '$.medium')};
"""

EXPECTED: dict[str, str] = {
    "int": "an integer (JSON integer or base-10 string)",
    "string": "a string",
    "bool": "true or false",
    "ts": "an ISO 8601 timestamp with Z or an offset, e.g. 2016-11-07T10:15:00Z",
    "tz": "an IANA time-zone name, e.g. America/New_York",
    "selections": "a list of {field_id: int, value: string}",
    "options": "a list of {value: string, name: string}",
    "styles": "an object {thumb: string, medium: string}",
}

# Checks over the field's JSON type name {t} and its string value {v} (one parse per line).
# {c} is the value converted once (see SCALAR_CONVERSIONS); null when it does not convert.
SCALAR_CHECKS: dict[str, str] = {
    "int": (
        "({c} is not null and ({t} in ('BIGINT', 'UBIGINT')"
        " or ({t} = 'VARCHAR' and regexp_full_match({v}, '[+-]?[0-9]+'))))"
    ),
    "string": "({t} = 'VARCHAR')",
    "bool": "({t} = 'BOOLEAN')",
    "ts": (
        "({c} is not null and regexp_full_match({v}, '"
        + TS_PATTERN.replace("{", "{{").replace("}", "}}")
        + "'))"
    ),
    "tz": "({t} = 'VARCHAR' and list_contains(getvariable('known_tz'), {v}))",
}

SCALAR_CONVERSIONS: dict[str, str] = {
    "int": "try_cast({v} as bigint)",
    "string": "{v}",
    "bool": "try_cast({v} as boolean)",
    "ts": "case when {t} = 'VARCHAR' then try_cast(upper({v}) as timestamptz) end",
    "tz": "{v}",
}

# Nested values are checked on their JSON text with the macros above.
NESTED_CHECKS: dict[str, str] = {
    "selections": "v_is_selections({j})",
    "options": "v_is_options({j})",
    "styles": "v_is_styles({j})",
}

NESTED_CONVERSIONS: dict[str, str] = {
    "selections": "v_as_selections({j})",
    "options": "v_as_options({j})",
    "styles": "v_as_styles({j})",
}


def known_timezones(conn: duckdb.DuckDBPyConnection) -> list[str]:
    """Zone names that both DuckDB (ICU) and Python (zoneinfo) know."""
    icu = {row[0] for row in conn.execute("select name from pg_timezone_names()").fetchall()}
    return sorted(icu & zoneinfo.available_timezones())


def install(conn: duckdb.DuckDBPyConnection) -> None:
    """Create the validation macros and the known-zone list on a connection."""
    conn.execute("set variable known_tz = ?", [known_timezones(conn)])
    conn.execute(MACROS)


def _sql_str(text: str) -> str:
    """Quote a constant of ours as a SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


def _refs(field: Field, index: int) -> dict[str, str]:
    """SQL references to a field's JSON type, string value and JSON text."""
    return {
        "t": f"t[{index}]",
        "v": f"v[{index}]",
        "c": f"c{index}",
        "j": f"json_extract(text, '$.{field.name}')",
    }


def _check(field: Field, index: int) -> str:
    """SQL that is true when a present, non-null field has the right type."""
    refs = _refs(field, index)
    template = SCALAR_CHECKS.get(field.type) or NESTED_CHECKS[field.type]
    return "coalesce(" + template.format(**refs) + ", false)"


def _conversion(field: Field, index: int) -> str:
    """SQL converting a field's value to its DuckDB type (null when it does not convert)."""
    refs = _refs(field, index)
    template = SCALAR_CONVERSIONS.get(field.type) or NESTED_CONVERSIONS[field.type]
    return f"try_cast({template.format(**refs)} as {DUCKDB_TYPES[field.type]})"


def _converted(field: Field, index: int) -> str:
    """The typed value in the final select: the once-converted scalar, or the nested conversion."""
    return f"c{index}" if field.type in SCALAR_CONVERSIONS else _conversion(field, index)


def _reason(stream: Stream, field: Field, index: int) -> str:
    """SQL that yields the first problem with one field, or null."""
    t, v = f"t[{index}]", f"v[{index}]"
    preview = f"left(coalesce(json_extract(text, '$.{field.name}')::varchar, ''), 80)"
    parts = []
    if field.required:
        parts.append(f"when {t} is null then 'missing required field {field.name}'")
        parts.append(f"when {t} = 'NULL' then 'required field {field.name} is null'")
    else:
        parts.append(f"when {t} is null or {t} = 'NULL' then null")
    expected = _sql_str(f"field {field.name}: expected {EXPECTED[field.type]}, got ")
    problem = f"{expected} || {preview}"
    if field.type == "ts":
        problem = (
            f"case when {t} = 'VARCHAR' and regexp_full_match({v}, '{NAIVE_TS_PATTERN}') "
            f"then 'field {field.name}: timestamp has no offset (add Z or an offset such as +05:45): ' "
            f"|| {preview} else {problem} end"
        )
    parts.append(f"when not {_check(field, index)} then {problem}")
    allowed = ALLOWED_VALUES.get((stream.name, field.name))
    if allowed:
        values = ", ".join(_sql_str(a) for a in allowed)
        msg = _sql_str(f"field {field.name}: must be one of {', '.join(allowed)}, got ")
        parts.append(f"when {v} not in ({values}) then {msg} || {preview}")
    return "case " + " ".join(parts) + " end"


def validated_sql(stream: Stream, source: str) -> str:
    """SQL over `source(file, line, text, bad_utf8, blank)` giving reason (null if good) and typed fields."""
    fields = list(enumerate(stream.fields, start=1))
    paths = "[" + ", ".join(f"'$.{f.name}'" for f in stream.fields) + "]"
    reasons = ",\n                ".join(_reason(stream, f, i) for i, f in fields)
    typed = ",\n        ".join(
        f"case when reason is null then {_converted(f, i)} end as {f.name}" for i, f in fields
    )
    conversions = ",\n        ".join(
        f"{_conversion(f, i)} as c{i}" for i, f in fields if f.type in SCALAR_CONVERSIONS
    )
    return f"""
with nonblank as (
    select
        file,
        line,
        text,
        bad_utf8
    from {source}
    where not blank
),

shaped as (
    select
        *,
        case when not bad_utf8 then try(json_type(text)) end as root_type
    from nonblank
),

extracted as (
    select
        *,
        case when root_type = 'OBJECT' then json_type(text, {paths}) end as t,
        case when root_type = 'OBJECT' then json_extract_string(text, {paths}) end as v
    from shaped
),

converted as (
    select
        *,
        {conversions}
    from extracted
),

checked as (
    select
        *,
        case
            when bad_utf8 then 'line is not valid UTF-8'
            when root_type is null then 'invalid JSON: ' || left(text, 80)
            when root_type <> 'OBJECT' then 'not a JSON object: got ' || lower(root_type)
            else coalesce(
                {reasons}
            )
        end as reason
    from converted
),

final as (
    select
        file,
        line,
        text,
        reason,
        {typed}
    from checked
)

select * from final
"""
