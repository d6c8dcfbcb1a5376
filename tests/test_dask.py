"""The transform partitioned across a real 2-process Dask cluster equals the single-process build.

A module-wide local cluster (2 worker processes, 127.0.0.1) runs the partition tasks through
Prefect's DaskTaskRunner. For several partition counts, full and over random file splits (mixed
with single-process incremental runs), the published tables equal those of one single-process
build row for row; `metrics-etl run --workers 2` as a real process publishes the same tables,
and its API answers equal the independent reference.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import build
from metrics_etl.run import dask_build
from metrics_etl.serve.reader import Reader
from reference import Reference
from snapshots import assert_same_tables, same
from test_api_vs_reference import random_requests
from test_incremental import copy_files, generated_full_build, random_split, raw_files


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    """A local Dask cluster of 2 worker processes; its workers use the session's Prefect API."""
    from distributed import LocalCluster
    from prefect.settings import PREFECT_API_URL

    saved = os.environ.get("PREFECT_API_URL")
    os.environ["PREFECT_API_URL"] = str(PREFECT_API_URL.value())  # inherited by the workers
    try:
        with LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
            scheduler_kwargs={"dashboard": False},
        ) as local:
            yield local.scheduler_address
    finally:
        if saved is None:
            os.environ.pop("PREFECT_API_URL", None)
        else:
            os.environ["PREFECT_API_URL"] = saved


def partitioned(cluster: str, raw: Path, warehouse: Path, as_of: dt.datetime, parts: int) -> dict:
    """One run of the flow with its transform in `parts` partitions on the cluster."""
    from metrics_etl.run.flow import etl

    flow = etl.with_options(task_runner=dask_build.task_runner(None, cluster))
    state = flow(
        raw=str(raw),
        warehouse=str(warehouse),
        as_of=as_of,
        partitions=parts,
        threads=1,
        return_state=True,
    )
    assert state.is_completed(), state.message
    summary = state.result()
    assert summary["status"] in ("published", "no-op"), summary
    return summary


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory):
    """Generated raw files and their single-process full build."""
    return generated_full_build(tmp_path_factory.mktemp("dask"), events=2000, seed=23)


def last_stats(warehouse: Path) -> dict:
    """The last partitioned transform's figures (dask_build.json)."""
    return json.loads((warehouse / "_state" / dask_build.STATS_FILE).read_text())


@pytest.mark.parametrize("seed", [3])
def test_random_splits_partitioned_and_incremental_equal_full(
    cluster: str, generated, tmp_path: Path, seed: int
) -> None:
    """Files split over runs (late and out-of-order files, report channel moves), each run
    partitioned in 3 parts (incremental after the first) or single-process incremental in turn,
    publish after every run what one single-process build of the files so far publishes."""
    gen, files, as_of, full = generated
    runs = random_split(files, seed=seed)
    assert len(runs) >= 2
    warehouse = tmp_path / "wh"
    modes = []
    for index, run in enumerate(runs):
        raw = copy_files(gen, tmp_path / f"raw{index}", run)
        if index % 2 == 0 or index == len(runs) - 1:
            modes.append(partitioned(cluster, raw, warehouse, as_of, 3)["transform_mode"])
            assert last_stats(warehouse)["mode"] == modes[-1]
        else:
            modes.append(build(raw, warehouse, as_of).transform_mode)
        if index == 1:
            prefix = [f for r in runs[:2] for f in r]
            rebuilt = tmp_path / "prefix"
            build(copy_files(gen, tmp_path / "prefix_raw", prefix), rebuilt, as_of)
            assert_same_tables(warehouse, rebuilt)
    # the first partitioned run is full; every later run goes on incrementally
    assert modes == ["full"] + ["incremental"] * (len(runs) - 1), modes
    assert_same_tables(warehouse, full)


def late_reads(gen: Path, raw: Path, count: int) -> int:
    """Write a late reads file of `count` new reads of one report (copies of that report's reads
    with new ids) into `raw`; returns the report id."""
    lines = (gen / "reads" / "2016" / "part-0000.jsonl").read_text().splitlines()
    records = []
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and isinstance(record.get("report_id"), int):
            records.append(record)
    report = max({r["report_id"] for r in records}, key=[r["report_id"] for r in records].count)
    mine = [r for r in records if r["report_id"] == report][:count]
    late = raw / "reads" / "zz_late" / "late-0000.jsonl"
    late.parent.mkdir(parents=True, exist_ok=True)
    late.write_text(
        "".join(json.dumps({**r, "read_id": 90_000_000 + i}) + "\n" for i, r in enumerate(mine))
    )
    return report


def test_partitioned_build_equals_single_process_and_then_builds_only_dirty_partitions(
    cluster: str, generated, tmp_path: Path
) -> None:
    """4 partitions publish the single-process build's tables, row for row (2: below; 1 and 3: the
    other tests). Then a late file of one report's reads: the next partitioned run is
    incremental, builds only that report's channel partition (dask_build.json's tasks), and
    publishes what a single-process full build of the same files publishes; a changed partition
    count is full."""
    gen, files, as_of, full = generated
    raw = copy_files(gen, tmp_path / "raw", files)
    warehouse = tmp_path / "wh"
    assert partitioned(cluster, raw, warehouse, as_of, 4)["transform_mode"] == "full"
    assert_same_tables(warehouse, full)
    stats = last_stats(warehouse)
    assert stats["dirty"] == [0, 1, 2, 3]
    names = [task["name"] for task in stats["tasks"]]
    assert names == [
        f"{step}-{p}" for step in ("stage-a", "stage-opens", "build") for p in range(4)
    ]
    assert all(task["worker"].startswith("tcp://127.0.0.1:") for task in stats["tasks"])
    shuffle = warehouse / "_state" / "dask"
    assert not shuffle.exists() or not any(shuffle.iterdir()), "the shuffle files are removed"
    late_reads(gen, raw, 3)
    assert partitioned(cluster, raw, warehouse, as_of, 4)["transform_mode"] == "incremental"
    stats = last_stats(warehouse)
    assert stats["mode"] == "incremental"
    assert len(stats["dirty"]) == 1, stats["dirty"]
    assert [t["name"] for t in stats["tasks"]] == [f"build-{p}" for p in stats["dirty"]]
    reference = tmp_path / "reference"
    build(copy_files(raw, tmp_path / "reference_raw", raw_files(raw)), reference, as_of)
    assert_same_tables(warehouse, reference)
    # another partition count: the partitioned run is full
    (raw / "reads" / "zz_late" / "late-0000.jsonl").rename(raw / "reads" / "zz_late" / "b.jsonl")
    summary = partitioned(cluster, raw, warehouse, as_of, 2)
    assert summary["transform_mode"] == "full"
    assert last_stats(warehouse)["dirty"] == [0, 1]


def test_cli_workers_equals_single_process_and_reference(generated, tmp_path: Path) -> None:
    """`metrics-etl run --workers 1 --partitions 1` (a real process with a local cluster of its
    own) publishes the single-process tables, and its API answers equal the reference."""
    from prefect.settings import PREFECT_API_URL

    gen, files, as_of, full = generated
    raw = copy_files(gen, tmp_path / "raw", files)
    warehouse = tmp_path / "wh"
    env = {**os.environ, "PREFECT_API_URL": str(PREFECT_API_URL.value())}
    done = subprocess.run(
        [
            *(sys.executable, "-m", "metrics_etl.cli", "run", "--workers", "1"),
            *("--partitions", "1", "--raw", str(raw), "--warehouse", str(warehouse)),
            *("--as-of", as_of.isoformat()),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "published snapshot" in done.stdout
    assert "Traceback" not in done.stderr
    assert_same_tables(warehouse, full)
    ref = Reference(raw, as_of)
    reader = Reader(warehouse)
    try:
        requests = random_requests(ref, 300, seed=3)
        mismatches = [(p, a) for p, a in requests if not same(ref.get(p, a), reader.get(p, a))]
    finally:
        reader.close()
    assert not mismatches, f"{len(mismatches)} of {len(requests)} differ, e.g. {mismatches[:3]}"
    nonempty = sum(1 for p, a in requests if (r := ref.get(p, a))[0] == 200 and r[1])
    assert nonempty > 50


def test_partitions_without_workers_is_a_clear_error(tmp_path: Path) -> None:
    """--partitions alone is refused with one line, before any work."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "metrics_etl.cli",
            "run",
            "--partitions",
            "2",
            "--raw",
            str(tmp_path / "raw"),
            "--warehouse",
            str(tmp_path / "wh"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0
    assert "--partitions needs --workers" in done.stderr
    assert "Traceback" not in done.stderr
