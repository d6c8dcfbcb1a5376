"""Request parameters: parse a GET request's path and query once, in the README's error order,
into a typed request (`AnalyticsRequest`, `ReportStatsRequest`) that the reader answers.

`parse` is the one parser and `respond` the one typed entry point: the HTTP server (as a FastAPI
dependency), `metrics-etl get` and the tests (through `answer`, i.e. `Reader.get`) share both.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple
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
PER_PAGE_MAX = 1000
# the endpoints that take `fields`, and the names each allows (the first is the default)
FIELDS = {"reports_read": READ_FIELDS, "user_awareness": AWARENESS_FIELDS}
Query = dict[str, list[str]]


@dataclass(frozen=True)
class AnalyticsRequest:
    """A valid Analytics API v4 request: the common parameters and the endpoint's own."""

    endpoint: str
    channel_id: int
    start: datetime
    end: datetime
    width: str | None = None  # reports_over_time: None means the rule by range length
    fields: tuple[str, ...] = ()  # reports_read, user_awareness: in the allowed order
    field_id: int | None = None  # reports_per_field_selection


@dataclass(frozen=True, eq=False)
class ReportStatsRequest:
    """A report-stats request. A parameter error is kept in `invalid` and answered only after
    the organization is found (the README's order: organization 404 first)."""

    organization: str
    page: int = 1
    per_page: int = PER_PAGE_MAX
    include_spaces: bool = False
    invalid: ApiError | None = None


ApiRequest = AnalyticsRequest | ReportStatsRequest


class Answer(NamedTuple):
    """An answer: HTTP status, JSON-ready body, and the snapshot it came from (None when no
    snapshot was read)."""

    status: int
    body: Any
    snapshot_id: str | None


def answer(reader: Reader, path_and_query: str, account_id: int) -> tuple[int, Any]:
    """Answer a GET request target as the HTTP API would: (status, JSON-ready body)."""
    try:
        request = parse(path_and_query)
    except ApiError as error:
        return error.status, error.body()
    status, body, _ = respond(reader, request, account_id)
    return status, body


def respond(reader: Reader, request: ApiRequest, account_id: int) -> Answer:
    """Answer a parsed request from one whole snapshot."""
    snapshot_id = None
    try:
        with reader.pinned() as snap:
            snapshot_id = snap.snapshot_id
            return Answer(200, _dispatch(reader, request, account_id), snapshot_id)
    except ApiError as error:
        return Answer(error.status, error.body(), snapshot_id)


def _dispatch(reader: Reader, request: ApiRequest, account_id: int) -> Any:
    """Call the reader method that answers a request."""
    if isinstance(request, ReportStatsRequest):
        if reader.organization_account(request.organization) != account_id:
            raise not_found(f"organization '{shown(request.organization)}' not found")
        if request.invalid is not None:
            raise request.invalid
        return reader.report_stats(
            account_id, request.organization, request.page, request.per_page, request.include_spaces
        )
    common = (account_id, request.channel_id, request.start, request.end)
    if request.endpoint == "reports_per_field_selection":
        assert request.field_id is not None
        return reader.reports_per_field_selection(*common, request.field_id)
    if request.endpoint == "reports_over_time":
        return reader.reports_over_time(*common, request.width)
    if request.endpoint == "reports_read":
        return reader.reports_read(*common, list(request.fields))
    if request.endpoint == "user_awareness":
        return reader.user_awareness(*common, list(request.fields))
    return getattr(reader, request.endpoint)(*common)


# -- parsing -----------------------------------------------------------------------------------


def parse(path_and_query: str) -> ApiRequest:
    """Parse a request target (path and query, percent escapes not yet decoded) into a typed
    request; raises ApiError (404 for an unknown endpoint, 400 for a bad parameter)."""
    path, _, query = path_and_query.partition("?")
    params = query_params(query)
    parts = [unquote(part) for part in path.split("/")[1:]]  # each segment decoded once
    if len(parts) == 3 and parts[0] == "batch" and parts[1] and parts[2] == "report_stats":
        return report_stats_request(parts[1], params)
    if len(parts) != 4 or parts[:3] != ["api", "v4", "analytics"] or parts[3] not in ANALYTICS:
        raise not_found(f"no endpoint at {shown(path, 200)}; see /docs for the endpoints")
    return analytics_request(parts[3], params)


def query_params(query: str) -> Query:
    """A query string's parameters, every value of each, percent-decoded as UTF-8 once."""
    return parse_qs(query, keep_blank_values=True)


def analytics_request(endpoint: str, params: Query) -> AnalyticsRequest:
    """Validate the common parameters, then the endpoint's own, in the README's order."""
    channel_id = parse_int(params, "channel_id")
    start = parse_date(params, "start_date")
    end = parse_date(params, "end_date")
    if start >= end:
        raise bad_request("start_date must be before end_date")
    if endpoint == "reports_per_field_selection":
        field_id = parse_int(params, "field_id")
        return AnalyticsRequest(endpoint, channel_id, start, end, field_id=field_id)
    if endpoint == "reports_over_time":
        width = _param(params, "datetime_range_width")
        if width is not None and width not in WIDTHS:
            raise bad_request(
                f"datetime_range_width must be one of {', '.join(WIDTHS)}, got '{shown(width)}'"
            )
        return AnalyticsRequest(endpoint, channel_id, start, end, width=width)
    if endpoint in FIELDS:
        fields = parse_fields(params, FIELDS[endpoint])
        return AnalyticsRequest(endpoint, channel_id, start, end, fields=fields)
    return AnalyticsRequest(endpoint, channel_id, start, end)


def report_stats_request(organization: str, params: Query) -> ReportStatsRequest:
    """Validate report-stats parameters in order; the first error waits in `invalid`."""
    try:
        include = _param(params, "include_spaces")
        if include is not None and include != "all":
            raise bad_request(f"include_spaces must be 'all' when given, got '{shown(include)}'")
        page = parse_int(params, "page", 1, PAGE_RULE)
        if page < 1:
            raise bad_request(
                f"page must be {PAGE_RULE}, got '{shown(_param(params, 'page') or '')}'"
            )
        per_page = parse_int(params, "per_page", PER_PAGE_MAX, PER_PAGE_RULE)
        if not 1 <= per_page <= PER_PAGE_MAX:
            raw = shown(_param(params, "per_page") or "")
            raise bad_request(f"per_page must be {PER_PAGE_RULE}, got '{raw}'")
    except ApiError as error:
        return ReportStatsRequest(organization, invalid=error)
    return ReportStatsRequest(organization, page, per_page, include == "all")


def _param(params: Query, name: str) -> str | None:
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


def parse_int(params: Query, name: str, default: int | None = None, rule: str = "") -> int:
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


def parse_date(params: Query, name: str) -> datetime:
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


def parse_fields(params: Query, allowed: tuple[str, ...]) -> tuple[str, ...]:
    """The `fields` parameter: known names in the allowed order; default the first one."""
    raw = _param(params, "fields") or ""
    names = {item.strip() for item in raw.split(",") if item.strip()}
    unknown = sorted(names - set(allowed))
    if unknown:
        raise bad_request(
            f"fields has unknown names {shown(str(unknown))}; allowed: {', '.join(allowed)}"
        )
    return tuple(name for name in allowed if name in names) or (allowed[0],)
