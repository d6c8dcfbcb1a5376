"""Contract validation as SQL: turns raw JSON lines into typed rows or reasons."""

from __future__ import annotations

import zoneinfo
from dataclasses import dataclass

import duckdb

from metrics_etl.contract import ALLOWED_VALUES, DUCKDB_TYPES, Field, Stream

# A timestamp string: year 0001-9999, hour 00-23, minute and second 00-59, an offset of at most
# ±23:59 (DuckDB's cast alone takes hour 24, offset +24:00 or +99:99, and year 0000, and moves
# the instant). The cast then checks that the day exists in its month.
TS_OFFSET_PATTERN = r"([Zz]|[+-]([01][0-9]|2[0-3])(:?[0-5][0-9])?)"
TS_PATTERN = (
    r"(000[1-9]|00[1-9][0-9]|0[1-9][0-9]{2}|[1-9][0-9]{3})-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])"
    r"[T ]([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]+)?" + TS_OFFSET_PATTERN
)
# The shape alone, digits unchecked: a value of this shape that is not a TS_PATTERN is out of range.
TS_SHAPE_PATTERN = r"[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?([Zz]|[+-][0-9]{2}(:?[0-9]{2})?)"
# How DuckDB renders a timestamp column's instant beyond those years (to_json of a Parquet row).
TS_FAR_PATTERN = r"([0-9]{5,}-[0-9]{2}-[0-9]{2}|[0-9]{4}-[0-9]{2}-[0-9]{2} \(BC\)) .*"
NAIVE_TS_PATTERN = r"[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]+)?)?"
# Instants are kept within years 0001-9999 in UTC too (0001-01-01T00:30:00+01:00 is not).
TS_RANGE = (
    "timestamptz '0001-01-01 00:00:00+00'",
    "timestamptz '9999-12-31 23:59:59.999999+00'",
)

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
        + f"') and {{c}} between {TS_RANGE[0]} and {TS_RANGE[1]})"
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

# The keys the contract reads inside each nested value (an element of a list, or the object).
NESTED_KEYS: dict[str, tuple[str, ...]] = {
    "selections": ("field_id", "value"),
    "options": ("value", "name"),
    "styles": ("thumb", "medium"),
}


def known_timezones(conn: duckdb.DuckDBPyConnection) -> list[str]:
    """Zone names that both DuckDB (ICU) and Python (zoneinfo) know."""
    icu = {row[0] for row in conn.execute("select name from pg_timezone_names()").fetchall()}
    return sorted(icu & zoneinfo.available_timezones())


def install(conn: duckdb.DuckDBPyConnection) -> None:
    """Create the validation macros and the known-zone list on a connection."""
    # one string, split in SQL: binding a Python list of ~600 names costs 50 ms, this 1 ms
    conn.execute(
        "set variable known_tz = string_split(?, '\n')", ["\n".join(known_timezones(conn))]
    )
    conn.execute(MACROS)


def sql_str(text: str) -> str:
    """Quote text as a SQL string literal (our constants, file names, names from file schemas)."""
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
    expected = sql_str(f"field {field.name}: expected {EXPECTED[field.type]}, got ")
    problem = f"{expected} || {preview}"
    if field.type == "ts":
        shaped = f"{t} = 'VARCHAR' and regexp_full_match({v}, '{TS_SHAPE_PATTERN}')"
        name = field.name
        problem = (
            f"case when {t} = 'VARCHAR' and regexp_full_match({v}, '{NAIVE_TS_PATTERN}') "
            f"then 'field {name}: timestamp has no offset (add Z or an offset such as +05:45): ' "
            f"|| {preview} "
            f"when {shaped} and not regexp_matches({v}, '{TS_OFFSET_PATTERN}$') "
            f"then 'field {name}: offset ' || regexp_extract({v}, '[+-][0-9:]+$') "
            f"|| ' is out of range (hours 00-23, minutes 00-59, so at most ±23:59): ' || {preview} "
            f"when ({shaped} and regexp_full_match({v}, '{TS_PATTERN}') and c{index} is not null) "
            f"or ({t} = 'VARCHAR' and regexp_full_match({v}, '{TS_FAR_PATTERN}')) "
            f"then 'field {name}: the instant is outside years 0001-9999 in UTC: ' || {preview} "
            f"when {shaped} then 'field {name}: not a real date and time (year 0001-9999, "
            f"month 01-12, a day of that month, hour 00-23, minute and second 00-59): ' "
            f"|| {preview} else {problem} end"
        )
    parts.append(f"when not {_check(field, index)} then {problem}")
    allowed = ALLOWED_VALUES.get((stream.name, field.name))
    if allowed:
        values = ", ".join(sql_str(a) for a in allowed)
        msg = sql_str(f"field {field.name}: must be one of {', '.join(allowed)}, got ")
        parts.append(f"when {v} not in ({values}) then {msg} || {preview}")
    return "case " + " ".join(parts) + " end"


def _sql_list(items: tuple[str, ...] | list[str]) -> str:
    """A list of our constant strings as a SQL list literal."""
    return "[" + ", ".join(sql_str(i) for i in items) + "]"


def _first_repeated(names: tuple[str, ...] | list[str], keys: str) -> str:
    """SQL: the first of `names` that the key list `keys` holds more than once, or null."""
    return (
        f"list_filter({_sql_list(names)}, "
        f"lambda k: len(list_filter({keys}, lambda x: x = k)) > 1)[1]"
    )


def _repeated_keys(stream: Stream) -> tuple[list[str], list[str]]:
    """SQL columns naming a repeated contract key (null if none), and the reasons they give.

    A key the contract reads that appears twice in one object makes the record ambiguous (which
    value counts?): in the record itself, in `styles`, or in an element of `selections` or
    `options`. Keys the contract does not read are ignored, repeated or not.
    """
    found = {0: _first_repeated([f.name for f in stream.fields], "json_keys(text)")}
    where = {0: "in the object"}
    for i, f in enumerate(stream.fields, start=1):
        names = NESTED_KEYS.get(f.type)
        if names is None:
            continue
        if f.type == "styles":
            found[i] = _first_repeated(names, f"json_keys(text, '$.{f.name}')")
            where[i] = f"in {f.name}"
        else:
            found[i] = (
                f"list_filter({_sql_list(names)}, lambda k: list_bool_or(list_transform("
                f"json_keys(text, '$.{f.name}[*]'), "
                f"lambda e: len(list_filter(e, lambda x: x = k)) > 1)))[1]"
            )
            where[i] = f"in an element of {f.name}"
    columns = [
        f"case when root_type = 'OBJECT' then {sql} end as rk{i}" for i, sql in found.items()
    ]
    reasons = [
        f"when rk{i} is not null then "
        f"'key ' || rk{i} || ' appears more than once {where[i]}; write each key once'"
        for i in found
    ]
    return columns, reasons


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
    key_columns, key_reasons = _repeated_keys(stream)
    repeated = ",\n        ".join(key_columns)
    repeated_reasons = "\n            ".join(key_reasons)
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
        case when root_type = 'OBJECT' then json_extract_string(text, {paths}) end as v,
        {repeated}
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
            {repeated_reasons}
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


# ---------------------------------------------------------------------------------------------
# The fast pass. Every line (or Parquet row) gets one cheap check and conversion; the check is
# true only when the detailed validation above would accept the record, and the conversion then
# equals its conversion. Lines the fast pass does not vouch for (a handful: bad records, and the
# odd escaped string) go through the detailed validation, which accepts them or finds a reason.
#
# JSON lines are parsed once with `from_json`: as VARCHAR where the text alone decides (no JSON
# value other than the accepted ones renders as an int, ts, tz or allowed value), as JSON text
# where the JSON type matters (strings, booleans), and nested values in their shape, with their
# leaves read in the same way. A JSON null reads as SQL null, as does a missing key, and so does a
# nested value of another shape (a string where a list belongs).
FAST_READ_AS: dict[str, str] = {
    "int": '"VARCHAR"',
    "string": '"JSON"',
    "bool": '"JSON"',
    "ts": '"VARCHAR"',
    "tz": '"VARCHAR"',
    "selections": '[{"field_id": "VARCHAR", "value": "JSON"}]',
    "options": '[{"value": "JSON", "name": "JSON"}]',
    "styles": '{"thumb": "JSON", "medium": "JSON"}',
}


@dataclass(frozen=True)
class FastField:
    """One field in the fast pass: its typed value and its check, as SQL."""

    conversion: str
    check: str


def _json_string(j: str) -> str:
    """The string a JSON string value holds, from its JSON text (null when not a string)."""
    return (
        f"case when starts_with({j}, '\"') then case when contains({j}, '\\') "
        f"then json_extract_string({j}, '$') else {j}[2:-2] end end"
    )


def _is_json_string(j: str) -> str:
    """True when a JSON text is a string."""
    return f"starts_with({j}, '\"')"


def _int_ok(ref: str, value: str | None = None) -> str:
    """An int read as VARCHAR (`ref`, converted to bigint as `value`) that the fast pass takes.

    It must be written as the bigint is: base-10 digits that fit in 64 bits, no plus sign, no
    leading zeros (those few, also good, are left to the detailed validation). Cheaper than a
    regular expression, and it proves that the text is an integer and not, say, 1.0 or 1e3.
    """
    return f"({value or f'try_cast({ref} as bigint)'}::varchar = {ref})"


def _nested(kind: str, n: str) -> tuple[str, str]:
    """(check, conversion) of a nested value already read into its shape as `n`."""
    if kind == "selections":
        element = f"{_int_ok('e.field_id')} and {_is_json_string('e.value')}"
        value = (
            f"{{'field_id': try_cast(e.field_id as bigint), 'value': {_json_string('e.value')}}}"
        )
    elif kind == "options":
        element = f"{_is_json_string('e.value')} and {_is_json_string('e.name')}"
        value = f"{{'value': {_json_string('e.value')}, 'name': {_json_string('e.name')}}}"
    else:
        check = (
            f"coalesce({_is_json_string(n + '.thumb')} and {_is_json_string(n + '.medium')}, false)"
        )
        value = (
            f"{{'thumb': {_json_string(n + '.thumb')}, 'medium': {_json_string(n + '.medium')}}}"
        )
        return check, value
    check = f"coalesce(list_bool_and(list_transform({n}, e -> coalesce({element}, false))), true)"
    return check, f"list_transform({n}, e -> {value})"


def _fast_field(stream: Stream, field: Field, index: int, ref: str, null_type: str) -> FastField:
    """The fast pass of one field whose value, read as FAST_READ_AS says, is `ref`.

    `null_type` is SQL for where a nested `ref` is null: the JSON type the detailed validation
    sees there ('NULL' for an explicit null, which it turns into an empty list; null when the key
    is missing; another type for a value of the wrong shape).
    """
    v = f"v{index}"
    if field.type == "int":
        conversion = f"try_cast({ref} as bigint)"
        check = _int_ok(ref, v)
    elif field.type == "string":
        conversion = _json_string(ref)
        check = _is_json_string(ref)
    elif field.type == "bool":
        conversion = f"case when {ref} in ('true', 'false') then {ref} = 'true' end"
        check = f"{ref} in ('true', 'false')"
    elif field.type == "ts":
        conversion = f"try_cast(upper({ref}) as timestamptz)"
        check = (
            f"(regexp_full_match({ref}, '{TS_PATTERN}') "
            f"and {v} between {TS_RANGE[0]} and {TS_RANGE[1]})"
        )
    elif field.type == "tz":
        conversion = ref
        check = f"list_contains(getvariable('known_tz'), {ref})"
    else:
        check, conversion = _nested(field.type, ref)
        if field.required:
            check = f"({ref} is not null and {check})"
        else:
            check = (
                f"case when {ref} is not null then {check} "
                f"else coalesce({null_type} = 'NULL', true) end"
            )
            conversion = f"case when {ref} is not null then {conversion} when {null_type} = 'NULL' then [] end"
        return FastField(
            f"try_cast({conversion} as {DUCKDB_TYPES[field.type]})", f"coalesce({check}, false)"
        )
    return _finish(stream, field, index, ref, conversion, check)


def _finish(
    stream: Stream, field: Field, index: int, ref: str, conversion: str, check: str
) -> FastField:
    """Add the allowed-values check, and accept a missing optional value (`ref` null)."""
    allowed = ALLOWED_VALUES.get((stream.name, field.name))
    if allowed:
        check = f"({check} and v{index} in ({', '.join(sql_str(a) for a in allowed)}))"
    check = f"coalesce({check}, false)"
    if not field.required:
        check = f"({ref} is null or {check})"
    return FastField(f"try_cast({conversion} as {DUCKDB_TYPES[field.type]})", check)


def _fast_query(
    stream: Stream,
    source: str,
    parsed: str,
    fields: list[FastField],
    guard: str = "true",
    extra: tuple[str, ...] = (),
    keep: tuple[str, ...] = (),
) -> str:
    """SQL (line, ok, typed fields, then `keep`) over the columns `parsed` reads from `source`
    (`keep` may use them and `ok`).

    `extra` are more columns computed next to the conversions, for `guard` to use.
    """
    conversions = ",\n        ".join(
        [*(f"{f.conversion} as v{i}" for i, f in enumerate(fields, 1)), *extra]
    )
    checks = "\n        and ".join([guard, *(f.check for f in fields)])
    typed = ", ".join([*(f"v{i} as {f.name}" for i, f in enumerate(stream.fields, 1)), *keep])
    return f"""
with parsed as (
    select
        {parsed}
    from {source}
),

converted as (
    select
        *,
        {conversions}
    from parsed
),

checked as (
    select
        *,
        coalesce(
            {checks},
            false) as ok
    from converted
)

select
    line,
    ok,
    {typed}
from checked
"""


def _fast_keys(stream: Stream) -> tuple[str, str]:
    """A column `nk`, how many keys a parsed line has, and a check that no contract key repeats.

    The keys are read once more with json_keys. When there are as many as non-null contract
    fields, each is a different field's key; otherwise they must all differ (a repeated extra
    key, which is allowed, is left to the detailed validation). A list element or `styles`
    object the fast pass takes holds both its contract keys: with just two keys, none repeats.
    Each json_keys sits in a `case` that runs it only on lines that parsed.
    """
    present = " + ".join(f"(j.{f.name} is not null)::int" for f in stream.fields)
    checks = [
        f"case when nk = {present} then true "
        f"when nk is not null then list_unique(json_keys(text)) = nk end"
    ]
    for f in stream.fields:
        count = len(NESTED_KEYS.get(f.type, ()))
        if f.type == "styles":
            checks.append(
                f"case when j.{f.name} is not null "
                f"then len(json_keys(text, '$.{f.name}')) = {count} else true end"
            )
        elif f.type in NESTED_KEYS:
            checks.append(
                f"case when len(j.{f.name}) > 0 then len(flatten(json_keys(text, '$.{f.name}[*]')))"
                f" = {count} * len(j.{f.name}) else true end"
            )
    return "case when j is not null then len(json_keys(text)) end as nk", " and ".join(checks)


def fast_sql(stream: Stream, source: str, keep: tuple[str, ...] = ()) -> str:
    """Fast pass over `source(line, text, bad_utf8, blank)` of JSON lines: (line, ok, fields).

    Blank lines are left out; `ok` is false for lines to validate in detail. `keep` are more
    output columns, SQL over the line's `text` and `ok`.
    """
    struct = "{" + ", ".join(f'"{f.name}": {FAST_READ_AS[f.type]}' for f in stream.fields) + "}"
    fields = [
        _fast_field(stream, f, i, f"j.{f.name}", f"try(json_type(text, '$.{f.name}'))")
        for i, f in enumerate(stream.fields, 1)
    ]
    # A line that does not parse has no j; a JSON value that is not an object has no key. (Not
    # json_transform_strict, which also fails on repeated keys: a failing row makes try() redo
    # its whole vector row by row, 5x slower with one record lacking a key in 2,000.)
    parsed = f"line, text, case when not bad_utf8 then try(from_json(text, '{struct}')) end as j"
    keys, keys_ok = _fast_keys(stream)
    guard = f"j is not null and {keys_ok}"
    return _fast_query(stream, f"{source} where not blank", parsed, fields, guard, (keys,), keep)


# Parquet columns whose values the fast pass takes as they are. Their JSON rendering (what the
# detailed validation reads) is always accepted and converts back to the same value: integers,
# strings, booleans, time-zone-aware timestamps whose year has four digits, and lists and
# structs of exactly the contract's shape with no null inside.
PARQUET_NATIVE: dict[str, tuple[str, ...]] = {
    "int": ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "UTINYINT", "USMALLINT", "UINTEGER"),
    "string": ("VARCHAR",),
    "bool": ("BOOLEAN",),
    "ts": ("TIMESTAMP WITH TIME ZONE",),
    "tz": ("VARCHAR",),
    "selections": ('STRUCT(field_id BIGINT, "value" VARCHAR)[]',),
    "options": ('STRUCT("value" VARCHAR, "name" VARCHAR)[]',),
    "styles": ("STRUCT(thumb VARCHAR, medium VARCHAR)",),
}


def quote_ident(name: str) -> str:
    """Quote an identifier (a column name read from a file's schema)."""
    return '"' + name.replace('"', '""') + '"'


def _parquet_field(
    stream: Stream, field: Field, index: int, column_type: str | None
) -> tuple[FastField, str | None]:
    """The fast pass of one field from its Parquet column, and how to read the column as `r<i>`.

    `column_type` is None when the file has no such column: as a missing key.
    """
    if column_type is None:
        check = "false" if field.required else "true"
        return FastField(f"null::{DUCKDB_TYPES[field.type]}", check), None
    col, ref = quote_ident(field.name), f"r{index}"
    if column_type in PARQUET_NATIVE[field.type] and field.type in ("selections", "options"):
        names = ("field_id", "value") if field.type == "selections" else ("value", "name")
        element = " and ".join(["e is not null", *(f"e.{n} is not null" for n in names)])
        check = f"coalesce(list_bool_and(list_transform({ref}, e -> {element})), true)"
        # a null list is a JSON null to the detailed validation: an empty list
        return FastField(f"coalesce({ref}, [])", check), f"{col} as {ref}"
    if column_type in PARQUET_NATIVE[field.type]:
        check = f"{ref} is not null"
        if field.type == "styles":
            check = f"{ref}.thumb is not null and {ref}.medium is not null"
        elif field.type == "ts":
            check = f"{ref} between {TS_RANGE[0]} and {TS_RANGE[1]}"
        elif field.type == "tz":
            check = f"list_contains(getvariable('known_tz'), {ref})"
        return _finish(stream, field, index, ref, ref, check), f"{col} as {ref}"
    # otherwise as the JSON text the detailed validation reads, read as FAST_READ_AS says
    if field.type in ("selections", "options", "styles"):
        shaped = f"try(from_json(to_json({col})::varchar, '{FAST_READ_AS[field.type]}'))"
        null_type = f"case when {col} is null then 'NULL' else 'OTHER' end"
        return _fast_field(stream, field, index, ref, f"n{index}"), (
            f"{shaped} as {ref}, {null_type} as n{index}"
        )
    if FAST_READ_AS[field.type] == '"JSON"':
        read = f"to_json({col})::varchar"
    elif column_type == "VARCHAR":
        read = col
    else:
        read = f"json_extract_string(to_json({col}), '$')"
    return _fast_field(stream, field, index, ref, "null"), f"{read} as {ref}"


def parquet_fast_sql(stream: Stream, source: str, columns: dict[str, str]) -> str:
    """Fast pass over a Parquet file: (line, ok, fields).

    `source` has the file's columns and `line`; `columns` maps each column name to its type.
    """
    parts = [
        _parquet_field(stream, f, i, columns.get(f.name)) for i, f in enumerate(stream.fields, 1)
    ]
    reads = ["line", *(read for _, read in parts if read)]
    return _fast_query(stream, source, ", ".join(reads), [field for field, _ in parts])
