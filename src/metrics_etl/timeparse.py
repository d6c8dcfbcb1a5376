"""Parsing and formatting of ISO 8601 instants for options and API parameters."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone

_INSTANT = re.compile(
    r"(?P<date>\d{4}-\d{2}-\d{2})"
    r"(?:T(?P<h>\d{2}):(?P<m>\d{2})(?::(?P<s>\d{2})(?:\.(?P<f>\d+))?)?"
    r"(?P<tz>Z|[+-]\d{2}(?::?\d{2})?)?)?"
)


def parse_instant(text: str) -> datetime:
    """Parse an ISO 8601 date or date-time; no offset means UTC. Raises ValueError."""
    match = _INSTANT.fullmatch(text)
    if not match:
        raise ValueError(f"'{text}' is not an ISO 8601 date or date-time")
    year, month, day = (int(x) for x in match["date"].split("-"))
    fraction = (match["f"] or "0")[:6].ljust(6, "0")
    value = datetime(
        year,
        month,
        day,
        int(match["h"] or 0),
        int(match["m"] or 0),
        int(match["s"] or 0),
        int(fraction),
    )
    tz = match["tz"]
    if not tz or tz == "Z":
        return value.replace(tzinfo=UTC)
    sign = -1 if tz[0] == "-" else 1
    digits = tz[1:].replace(":", "")
    hours, minutes = int(digits[:2]), int(digits[2:4] or 0)
    if hours > 23 or minutes > 59:
        raise ValueError(f"'{text}' has an offset out of range")
    offset = timedelta(hours=hours, minutes=minutes)
    return value.replace(tzinfo=timezone(sign * offset)).astimezone(UTC)


def format_instant(value: datetime) -> str:
    """UTC, millisecond precision (truncated), with Z: 2016-11-07T00:00:00.000Z."""
    value = value.astimezone(UTC)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"
