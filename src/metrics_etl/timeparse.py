"""Parsing and formatting of ISO 8601 instants for options and API parameters."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone

# ASCII digits only: `\d` would also match other scripts' digits (Arabic-Indic, Devanagari).
_INSTANT = re.compile(
    r"(?P<date>[0-9]{4}-[0-9]{2}-[0-9]{2})"
    r"(?:T(?P<h>[0-9]{2}):(?P<m>[0-9]{2})(?::(?P<s>[0-9]{2})(?:\.(?P<f>[0-9]+))?)?"
    r"(?P<tz>Z|[+-][0-9]{2}(?::?[0-9]{2})?)?)?"
)
# the shape API clients send (UTC, seconds, 0, 3 or 6 decimals), which fromisoformat parses
# exactly as the general path below does, 30 times faster
_CANONICAL = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T(?:[01][0-9]|2[0-3]):[0-9]{2}:[0-9]{2}(?:\.[0-9]{3}|\.[0-9]{6})?Z"
)
FIRST = "0001-01-01T00:00:00Z"
LAST = "9999-12-31T23:59:59.999999Z"


def shown(raw: str, limit: int = 60) -> str:
    """A value as quoted in a one-line message: control characters escaped, cut to `limit`
    characters."""
    text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in raw[: limit + 1])
    return text if len(text) <= limit else text[:limit] + "…"


def parse_instant(text: str) -> datetime:
    """Parse an ISO 8601 date or date-time; no offset means UTC. Raises ValueError, saying
    why, for anything that is not a real instant from 0001-01-01 to 9999-12-31 in UTC."""
    if _CANONICAL.fullmatch(text):
        try:
            return datetime.fromisoformat(text)
        except ValueError:
            pass  # year 0, month 13, second 60, ...: the general path says why
    match = _INSTANT.fullmatch(text)
    if not match:
        raise ValueError(f"'{shown(text)}' is not an ISO 8601 date or date-time")
    year, month, day = (int(x) for x in match["date"].split("-"))
    fraction = (match["f"] or "0")[:6].ljust(6, "0")
    try:  # year 0, month 13, hour 24, second 60, ...
        value = datetime(
            year,
            month,
            day,
            int(match["h"] or 0),
            int(match["m"] or 0),
            int(match["s"] or 0),
            int(fraction),
        )
    except ValueError as error:
        raise ValueError(f"'{shown(text)}' is not a real date and time ({error})") from None
    tz = match["tz"]
    if not tz or tz == "Z":
        return value.replace(tzinfo=UTC)
    sign = -1 if tz[0] == "-" else 1
    digits = tz[1:].replace(":", "")
    hours, minutes = int(digits[:2]), int(digits[2:4] or 0)
    if hours > 23 or minutes > 59:
        raise ValueError(f"'{shown(text)}' has an offset beyond ±23:59")
    offset = timedelta(hours=hours, minutes=minutes)
    try:
        return value.replace(tzinfo=timezone(sign * offset)).astimezone(UTC)
    except OverflowError:
        raise ValueError(f"'{shown(text)}' is outside {FIRST} … {LAST}") from None


def format_instant(value: datetime) -> str:
    """UTC, millisecond precision (truncated), with Z: 2016-11-07T00:00:00.000Z."""
    v = value.astimezone(UTC)
    return (
        f"{v.year:04d}-{v.month:02d}-{v.day:02d}T{v.hour:02d}:{v.minute:02d}:{v.second:02d}."
        f"{v.microsecond // 1000:03d}Z"
    )
