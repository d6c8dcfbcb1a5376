"""Schemathesis hooks for tests/test_openapi.py (loaded by its `schemathesis run` process
through SCHEMATHESIS_HOOKS).

OpenAPI cannot say that `start_date` must be before `end_date`, nor that an instant stays in
0001-01-01 … 9999-12-31 once its offset is applied (`0001-01-01T00:30+01:00`): both are 400s
that the schema documents. So a generated pair in the wrong order is swapped, and a case with a
date that the pattern allows but that is no real instant is dropped. The dates are read with
the independent reference's parser, never the implementation's.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

import schemathesis

from metrics_etl.serve.api_models import INSTANT_PATTERN
from reference import parse_api_date

PATTERN = re.compile(INSTANT_PATTERN)


def _instants(query: dict[str, Any] | None) -> tuple[datetime | None, datetime | None] | None:
    """Both dates of a query when both are strings, parsed (None when not a real instant)."""
    if not query or not all(isinstance(query.get(k), str) for k in ("start_date", "end_date")):
        return None
    return parse_api_date(query["start_date"]), parse_api_date(query["end_date"])


@schemathesis.hook
def map_query(ctx: schemathesis.HookContext, query: dict[str, Any] | None) -> Any:
    """Put two valid dates in order."""
    found = _instants(query)
    if query is not None and found is not None:
        start, end = found
        if start is not None and end is not None and start > end:
            query["start_date"], query["end_date"] = query["end_date"], query["start_date"]
    return query


@schemathesis.hook
def filter_query(ctx: schemathesis.HookContext, query: dict[str, Any] | None) -> bool:
    """Drop a case with a date that matches the pattern but is no real instant, or with two
    equal dates (a date that does not match is negative data: kept)."""
    for name in ("start_date", "end_date"):
        value = (query or {}).get(name)
        if isinstance(value, str) and PATTERN.match(value) and parse_api_date(value) is None:
            return False
    found = _instants(query)
    return found is None or None in found or found[0] != found[1]
