"""Per-model unit tests run on an in-memory DuckDB, without Prefect."""

from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture(scope="session", autouse=True)
def prefect_harness() -> Iterator[None]:
    """No Prefect API here (overrides tests/conftest.py's): these tests never run a flow."""
    yield
