"""The API as a typed contract: response models (the JSON shapes of api-contract.md) and the
OpenAPI description of every request parameter, for `/openapi.json`, `/docs` and clients.

Requests are parsed and validated by `params` (one parser, the README's error order and
messages); these declarations describe exactly what it accepts.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import SkipJsonSchema

from metrics_etl.serve.params import FIELDS, INT64_MAX, INT64_MIN, PER_PAGE_MAX
from metrics_etl.serve.reader import ANALYTICS, WIDTHS

# -- responses ---------------------------------------------------------------------------------


class Model(BaseModel):
    """A response object: exactly the listed keys."""

    model_config = ConfigDict(extra="forbid")


Instant = Field(
    json_schema_extra={"format": "date-time"},
    description="UTC, millisecond precision, Z",
    examples=["2016-11-07T00:00:00.000Z"],
)


class ReportsOverTimeRow(Model):
    account_id: int
    datetime_range_start: str = Instant
    report_count: int
    datetime_range_width: Literal["hour", "day", "week", "month"]


class FieldSelectionRow(Model):
    field_id: int
    account_id: int
    name: str | None = Field(description="the option's current name; null when none")
    value: str
    report_count: int


class StateRow(Model):
    id: int
    name: str | None = Field(description="null when the state does not exist")
    account_id: int
    report_count: int


class UserRow(Model):
    user_id: int
    account_id: int
    report_count: int


class DayHourRow(Model):
    account_id: int
    hour: int = Field(ge=0, le=23, description="local hour of day")
    report_count: int


class WeekDayRow(Model):
    account_id: int
    dow: int = Field(ge=0, le=6, description="local weekday, 0 = Sunday")
    report_count: int


class ImageStyles(Model):
    thumb: str
    medium: str


class ImageRow(Model):
    report_image_id: int
    account_id: int
    report_id: int
    created_at: str = Instant
    styles: ImageStyles


Count = SkipJsonSchema[None]  # a selected field: present (an integer) only when selected


class ReadsAnswer(Model):
    """The selected fields (`fields`; default `total_reads`), and only those."""

    total_reads: int | Count = None
    unique_reads: int | Count = None
    report_readers: int | Count = None
    reports_seen: int | Count = None


class AwarenessRow(Model):
    """A recipient and the selected fields (`fields`; default `total_alerts`)."""

    total_alerts: int | Count = None
    unique_alerts: int | Count = None
    alert_source_reports: int | Count = None
    alerts_opened: int | Count = None
    user_id: int
    first_name: str | None
    last_name: str | None


class Pagination(Model):
    page: int
    per_page: int
    count: int = Field(description="rows on this page")
    total_pages: int = Field(description="ceil(total_count / per_page)")
    total_count: int


class ReportStatRow(Model):
    report_id: int
    report_token: str | None
    active_schedules_count: int
    explorations_count: int
    total_views_count: int
    recent_manual_run_creators_emails: list[str]
    scheduled_run_creators_emails: list[str]
    editors_emails: list[str]


class Link(Model):
    href: str = Field(examples=["/batch/acme/report_stats?page=2&per_page=1000"])


class Links(Model):
    next_page: Link
    prev_page: Link


class ReportStats(Model):
    pagination: Pagination
    report_stats: list[ReportStatRow]
    links: Links = Field(alias="_links")


class ErrorBody(Model):
    """Every error answer."""

    error: str = Field(
        description="bad_request (400), unauthorized (401), not_found (404), "
        "method_not_allowed (405), unavailable (503)",
        examples=["bad_request"],
    )
    message: str = Field(
        description="names the parameter and what is wrong with it",
        examples=["channel_id is required (an integer)"],
    )


class Health(Model):
    status: Literal["ok"]


class Readiness(Model):
    status: Literal["ready", "loading"]
    snapshot_id: str | None = Field(description="the snapshot being served; null while loading")
    snapshot_age_seconds: float | None = Field(
        description="seconds since that snapshot was published"
    )


ANALYTICS_MODELS: dict[str, Any] = {
    "reports_over_time": list[ReportsOverTimeRow],
    "reports_per_field_selection": list[FieldSelectionRow],
    "reports_per_state": list[StateRow],
    "reports_per_user": list[UserRow],
    "reports_per_day_hour": list[DayHourRow],
    "reports_per_week_day": list[WeekDayRow],
    "reports_images": list[ImageRow],
    "reports_read": ReadsAnswer,
    "user_awareness": list[AwarenessRow],
}
assert set(ANALYTICS_MODELS) == set(ANALYTICS)

SUMMARIES = {
    "reports_over_time": "Reports per local time bucket (hour, day, week or month)",
    "reports_per_field_selection": "Reports per selected option of a Category, DropDown or Radio field",
    "reports_per_state": "Reports per state",
    "reports_per_user": "Reports per author",
    "reports_per_day_hour": "Reports per local hour of day",
    "reports_per_week_day": "Reports per local weekday",
    "reports_images": "Images of the channel's reports created in the range",
    "reports_read": "Read counts over the channel's reports",
    "user_awareness": "Alert deliveries per recipient",
}

# -- request parameters ------------------------------------------------------------------------

INT64 = {"type": "integer", "format": "int64", "minimum": INT64_MIN, "maximum": INT64_MAX}
# The syntax `timeparse.parse_instant` reads, with the ranges of each part. A date must also be
# a real calendar date (29 February only in leap years, so the pattern leaves it out), and the
# instant, once its offset is applied, within 0001-01-01T00:00:00Z … 9999-12-31T23:59:59.999999Z.
INSTANT_PATTERN = (
    r"^(000[1-9]|00[1-9][0-9]|0[1-9][0-9]{2}|[1-9][0-9]{3})-"
    r"((0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])|(0[13-9]|1[0-2])-(29|30)|(0[13578]|1[02])-31)"
    r"(T([01][0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9](\.[0-9]+)?)?"
    r"(Z|[+-]([01][0-9]|2[0-3])(:?[0-5][0-9])?)?)?$"
)
ERRORS_IN_ORDER = (
    "Checked in this order, the first failure answering: `channel_id` (400), `start_date`, "
    "`end_date` (400), `start_date` < `end_date` (400), the endpoint's own parameters (400), "
    "then the channel (404)."
)


def query_param(
    name: str, schema: dict, description: str, required: bool = False, example: Any = None
) -> dict:
    """An OpenAPI query parameter."""
    found: dict[str, Any] = {
        "name": name,
        "in": "query",
        "required": required,
        "description": description,
        "schema": schema,
    }
    if example is not None:
        found["example"] = example
    if schema.get("type") == "array":
        found["style"], found["explode"] = "form", False  # fields=a,b
    return found


def instant_param(name: str, description: str, example: str) -> dict:
    """A required ISO 8601 date or date-time parameter."""
    schema = {"type": "string", "pattern": INSTANT_PATTERN}
    text = (
        f"{description}. ISO 8601: `YYYY-MM-DD` (midnight UTC) or `YYYY-MM-DDTHH:MM[:SS[.fraction]]` "
        "with an optional `Z`, `±HH:MM`, `±HHMM` or `±HH` offset (none means UTC); a real "
        "calendar date and time from 0001-01-01T00:00:00Z to 9999-12-31T23:59:59.999999Z."
    )
    return query_param(name, schema, text, required=True, example=example)


def analytics_params(endpoint: str) -> list[dict]:
    """The query parameters of an analytics endpoint, common ones first."""
    found = [
        query_param(
            "channel_id",
            INT64,
            "A channel of the caller's account (another account's, deleted or unknown: 404).",
            required=True,
            example=1,
        ),
        instant_param("start_date", "Start of the range, inclusive", "2016-11-01"),
        instant_param("end_date", "End of the range, exclusive; after `start_date`", "2016-12-01"),
    ]
    if endpoint == "reports_per_field_selection":
        found.append(
            query_param(
                "field_id",
                INT64,
                "A Category, DropDown or Radio field of the caller's account (another type: "
                "400; unknown or another account's: 404).",
                required=True,
                example=2,
            )
        )
    if endpoint == "reports_over_time":
        found.append(
            query_param(
                "datetime_range_width",
                {"type": "string", "enum": list(WIDTHS)},
                "Bucket width; absent: by range length (≤ 2 days hour, ≤ 62 days day, "
                "≤ 732 days week, else month).",
                example="day",
            )
        )
    if endpoint in FIELDS:
        allowed = FIELDS[endpoint]
        found.append(
            query_param(
                "fields",
                {"type": "array", "items": {"type": "string", "enum": list(allowed)}},
                f"Comma-separated names to answer (absent or empty: `{allowed[0]}`); the answer "
                "has exactly these keys.",
                example=list(allowed),
            )
        )
    return found


REPORT_STATS_PARAMS = [
    {
        "name": "organization",
        "in": "path",
        "required": True,
        "description": "The caller's organization (account username); percent-encode a `/` "
        "in it as %2F. Another account's or unknown: 404.",
        "schema": {"type": "string", "minLength": 1},
        "example": "acme",
    },
    query_param(
        "page",
        {"type": "integer", "format": "int64", "minimum": 1, "maximum": INT64_MAX, "default": 1},
        "Page number from 1; a page past the end is empty.",
    ),
    query_param(
        "per_page",
        {"type": "integer", "minimum": 1, "maximum": PER_PAGE_MAX, "default": PER_PAGE_MAX},
        "Rows per page.",
    ),
    query_param(
        "include_spaces",
        {"type": "string", "enum": ["all"]},
        "`all` to include reports in personal channels.",
    ),
]


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI responses for error statuses, each with the `{error, message}` body."""
    words = {
        400: "A parameter is missing or invalid (the message names it)",
        401: "Missing or invalid API key (`WWW-Authenticate: Bearer`)",
        404: "Unknown endpoint, or a channel, field or organization that does not exist for "
        "the caller",
        503: "Nothing is published yet",
    }
    return {status: {"model": ErrorBody, "description": words[status]} for status in statuses}


SNAPSHOT_HEADERS = {
    "X-Snapshot-Id": {
        "description": "The published snapshot the answer was computed from",
        "schema": {"type": "string"},
        "required": True,
    },
    "ETag": {
        "description": "A strong tag of the answer's bytes; send it back in `If-None-Match`",
        "schema": {"type": "string"},
        "required": True,
    },
}


def api_responses(model: Any) -> dict[int | str, dict[str, Any]]:
    """The responses of an API endpoint: its answer, 304 for a matching If-None-Match, errors."""
    return {
        200: {"model": model, "description": "The answer", "headers": SNAPSHOT_HEADERS},
        304: {
            "description": "Not modified: `If-None-Match` holds the answer's ETag",
            "headers": SNAPSHOT_HEADERS,
        },
        **error_responses(400, 401, 404, 503),
    }
