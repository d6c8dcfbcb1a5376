"""Request parameters: parse and validate a GET request's path and query, in the README's
error order, then let the reader answer it.

`answer` is the one entry point that the HTTP server, `metrics-etl get` and the tests share.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs, unquote

from metrics_etl.serve.reader import (
    ANALYTICS,
    AWARENESS_FIELDS,
    PAGE_RULE,
    PER_PAGE_RULE,
    READ_FIELDS,
    WIDTHS,
    ApiError,
    Reader,
    bad_request,
    not_found,
)
from metrics_etl.timeparse import parse_instant, shown

INT_RE = re.compile(r"[+-]?[0-9]+")  # ASCII digits only (`\d` matches any script's)
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def answer(reader: Reader, path_and_query: str, account_id: int) -> tuple[int, Any]:
    """Answer a GET request as the HTTP API would: (status, JSON-ready body), from one whole
    snapshot."""
    try:
        with reader.pinned():
            return 200, dispatch(reader, path_and_query, account_id)
    except ApiError as error:
        return error.status, error.body()


def dispatch(reader: Reader, path_and_query: str, account_id: int) -> Any:
    """Route a request to its endpoint after validating its parameters."""
    path, _, query = path_and_query.partition("?")
    params = parse_qs(query, keep_blank_values=True)
    parts = [unquote(part) for part in path.split("/")[1:]]  # each segment decoded once
    if len(parts) == 3 and parts[0] == "batch" and parts[1] and parts[2] == "report_stats":
        return report_stats_request(reader, parts[1], params, account_id)
    if len(parts) != 4 or parts[:3] != ["api", "v4", "analytics"] or parts[3] not in ANALYTICS:
        raise not_found(f"no endpoint at {shown(path, 200)}; see /docs for the endpoints")
    return analytics_request(reader, parts[3], params, account_id)


def analytics_request(
    reader: Reader, endpoint: str, params: dict[str, list[str]], account_id: int
) -> Any:
    """Validate the common and endpoint parameters, then answer."""
    channel_id = parse_int(params, "channel_id")
    start = parse_date(params, "start_date")
    end = parse_date(params, "end_date")
    if start >= end:
        raise bad_request("start_date must be before end_date")
    if endpoint == "reports_per_field_selection":
        field_id = parse_int(params, "field_id")
        return reader.reports_per_field_selection(account_id, channel_id, start, end, field_id)
    if endpoint == "reports_over_time":
        width = _param(params, "datetime_range_width")
        if width is not None and width not in WIDTHS:
            raise bad_request(
                f"datetime_range_width must be one of {', '.join(WIDTHS)}, got '{shown(width)}'"
            )
        return reader.reports_over_time(account_id, channel_id, start, end, width)
    if endpoint == "reports_read":
        fields = parse_fields(params, READ_FIELDS)
        return reader.reports_read(account_id, channel_id, start, end, fields)
    if endpoint == "user_awareness":
        fields = parse_fields(params, AWARENESS_FIELDS)
        return reader.user_awareness(account_id, channel_id, start, end, fields)
    method = getattr(reader, endpoint)
    return method(account_id, channel_id, start, end)


def report_stats_request(
    reader: Reader, organization: str, params: dict[str, list[str]], account_id: int
) -> dict:
    """Validate report-stats parameters in order (the organization first), then answer."""
    if reader.organization_account(organization) != account_id:
        raise not_found(f"organization '{shown(organization)}' not found")
    include = _param(params, "include_spaces")
    if include is not None and include != "all":
        raise bad_request(f"include_spaces must be 'all' when given, got '{shown(include)}'")
    page = parse_int(params, "page", 1, PAGE_RULE)
    if page < 1:
        raise bad_request(f"page must be {PAGE_RULE}, got '{shown(_param(params, 'page') or '')}'")
    per_page = parse_int(params, "per_page", 1000, PER_PAGE_RULE)
    if not 1 <= per_page <= 1000:
        raw = shown(_param(params, "per_page") or "")
        raise bad_request(f"per_page must be {PER_PAGE_RULE}, got '{raw}'")
    return reader.report_stats(account_id, organization, page, per_page, include == "all")


def _param(params: dict[str, list[str]], name: str) -> str | None:
    """The last value of a query parameter, or None when absent."""
    values = params.get(name)
    return values[-1] if values else None


def int64(raw: str) -> int | None:
    """A base-10 integer in ASCII digits within the signed 64-bit range, or None. Never calls
    int() on more than 20 digits (CPython refuses more than 4300)."""
    if not INT_RE.fullmatch(raw):
        return None
    digits = raw.lstrip("+-").lstrip("0")
    if len(digits) > 19:
        return None
    value = (-1 if raw[0] == "-" else 1) * int(digits or "0")
    return value if INT64_MIN <= value <= INT64_MAX else None


def parse_int(
    params: dict[str, list[str]], name: str, default: int | None = None, rule: str = ""
) -> int:
    """A required (or defaulted) integer parameter; `rule` words its range in messages."""
    raw = _param(params, name)
    if raw is None:
        if default is not None:
            return default
        raise bad_request(f"{name} is required (an integer)")
    value = int64(raw)
    if value is None:
        rule = rule or f"an integer from {INT64_MIN} to {INT64_MAX}"
        raise bad_request(f"{name} must be {rule} in ASCII digits, got '{shown(raw)}'")
    return value


def parse_date(params: dict[str, list[str]], name: str) -> datetime:
    """A required ISO 8601 date or date-time parameter (no offset means UTC)."""
    raw = _param(params, name)
    if raw is None:
        raise bad_request(f"{name} is required (ISO 8601, e.g. 2016-11-07T00:00:00Z)")
    try:
        return parse_instant(raw.replace(" ", "+"))
    except ValueError as error:
        raise bad_request(
            f"{name}: {error}; use an ISO 8601 date or date-time from 0001-01-01 to "
            "9999-12-31, e.g. 2016-11-07 or 2016-11-07T10:15:00Z"
        ) from None


def parse_fields(params: dict[str, list[str]], allowed: tuple[str, ...]) -> list[str]:
    """The `fields` parameter: known names in the allowed order; default the first one."""
    raw = _param(params, "fields") or ""
    names = {item.strip() for item in raw.split(",") if item.strip()}
    unknown = sorted(names - set(allowed))
    if unknown:
        raise bad_request(
            f"fields has unknown names {shown(str(unknown))}; allowed: {', '.join(allowed)}"
        )
    return [name for name in allowed if name in names] or [allowed[0]]
