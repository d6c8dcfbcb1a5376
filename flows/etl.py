"""Prefect entrypoint: the metrics-etl flow (load, transform, audit, publish), defined in the package."""

from __future__ import annotations

from metrics_etl.run.flow import etl

__all__ = ["etl"]
