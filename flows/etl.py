"""Prefect entrypoint: the metrics-etl flow (load, transform, audit, publish)."""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from pathlib import Path

from prefect import flow
from prefect.artifacts import create_markdown_artifact
from prefect.states import Failed

from metrics_etl import pipeline
from metrics_etl.errors import UserError


@flow(name="metrics-etl")
def etl(
    raw: str = "data/raw",
    warehouse: str = "data/warehouse",
    as_of: datetime | None = None,
    full_refresh: bool = False,
):
    """Load new raw files, rebuild the marts, audit them and publish a snapshot."""
    try:
        summary = pipeline.run(Path(raw), Path(warehouse), as_of, full_refresh)
    except (UserError, pipeline.AuditFailed) as error:
        return Failed(message=str(error))
    create_markdown_artifact(
        key="metrics-etl-run",
        markdown="```\n" + pipeline.format_summary(summary) + "\n```",
        description="metrics-etl run summary",
    )
    return asdict(summary)
