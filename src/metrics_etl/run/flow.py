"""The metrics-etl flow (load, transform, audit, publish); `flows/etl.py` is its Prefect entrypoint."""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any

from prefect import flow
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.states import Failed

from metrics_etl.errors import UserError
from metrics_etl.run import dask_build, pipeline

COUNTS = ("files", "lines", "accepted", "rejected")


def summary_table(summary: pipeline.RunSummary) -> list[dict[str, Any]]:
    """One row per raw stream loaded, then a row of totals: files, lines, accepted, rejected."""
    rows = [
        {"stream": name, **{k: int(counts[k]) for k in COUNTS}}
        for name, counts in sorted(summary.streams.items())
    ]
    return [*rows, {"stream": "total", **summary.totals()}]


def summary_headline(summary: pipeline.RunSummary) -> str:
    """The run in one line: status, snapshot, partitions, as-of, transform mode, time."""
    if summary.snapshot_id:
        outcome = (
            f"published snapshot {summary.snapshot_id}: {summary.partitions_written} partitions "
            f"written, {summary.partitions_reused} reused"
        )
    else:
        outcome = f"{summary.status}: {summary.message or 'nothing published'}"
    mode = f", {summary.transform_mode} transform" if summary.transform_mode else ""
    total = summary.seconds.get("total")
    took = f", {total:.1f} s" if total is not None else ""
    return f"run {summary.run_id}: {outcome} (as of {summary.as_of}{mode}{took})"


@flow(name="metrics-etl")
def etl(
    raw: str = "data/raw",
    warehouse: str = "data/warehouse",
    as_of: datetime | None = None,
    full_refresh: bool = False,
    partitions: int = 0,
    threads: int = 0,
):
    """Load new raw files, rebuild the marts, audit them and publish a snapshot.

    With `partitions` > 0 the transform runs as that many partitions' tasks on the flow's task
    runner (a DaskTaskRunner: `metrics-etl run --workers N` or `--dask-address`), each task's
    DuckDB with `threads` threads (0: its Dask worker's threads); see run/dask_build.py.
    """
    step = None
    if partitions > 0:
        dask_build.warm_workers()
        step = partial(dask_build.transform_partitioned, parts=partitions, threads=threads)
    try:
        summary = pipeline.run(Path(raw), Path(warehouse), as_of, full_refresh, step)
    except (UserError, pipeline.AuditFailed) as error:
        return Failed(message=str(error))
    # Keyed, so `prefect artifact inspect metrics-etl-run` shows the latest runs' tables.
    create_table_artifact(
        key="metrics-etl-run",
        table=summary_table(summary),
        description=summary_headline(summary),
    )
    # Unkeyed: the console summary, on the flow run's page in the Prefect UI.
    create_markdown_artifact(
        markdown="```\n" + pipeline.format_summary(summary) + "\n```",
        description="metrics-etl run summary",
    )
    return asdict(summary)
