"""Shared fixtures: one Prefect test harness per session, raw-folder builders, pipeline runs."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
# the tests' Prefect home (and its database) is their own, never the user's ~/.prefect
os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="metrics-etl-tests-prefect-"))
os.environ.setdefault("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")
os.environ.setdefault("METRICS_ETL_MEMORY_LIMIT", "2GB")
os.environ.setdefault("METRICS_ETL_RETENTION_MINUTES", "0")


@pytest.fixture(scope="session", autouse=True)
def prefect_harness() -> Iterator[None]:
    """One temporary Prefect API for the whole session."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


def build(raw: Path, warehouse: Path, as_of: datetime, full_refresh: bool = False):
    """Run the pipeline once (tasks run under the session's Prefect harness)."""
    from metrics_etl.run import pipeline

    return pipeline.run(raw, warehouse, as_of, full_refresh)
