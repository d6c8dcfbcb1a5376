"""The full build beside its two references, side by side in one run (issue 15, item 3).

    uv run python benchmarks/floors.py --sizes 1000000 --rounds 3

Per round, on the same generated raw files and in turn:

- **full build**: the Prefect flow in a child process (benchmarks/build_child.py) against one
  running Prefect server, as benchmarks/run.py measures it (imports and server start-up excluded);
- **typed-load floor**: DuckDB alone loading the same raw files into a DuckDB file, typed with
  the contract's columns (`metrics_etl.contract`): `read_json` of the JSONL files (plain and
  gzip) with those columns, plus the Parquet files; no validation, no rejects;
- **naive peer**: that typed load, then our model SQL (`models.build`, every model in full), then each
  published table written with `COPY … (FORMAT parquet, PARTITION_BY part)` by UTC month.

The machine is shared: only the ratios of runs in the same round mean much, and CPU seconds
(the build child's own, from wait4; this process's for the other two) move less with the load
than wall time. Prints each round and the medians (wall and CPU); results go to benchmarks/results/floors-<size>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

from metrics_etl.contract import DUCKDB_TYPES, STREAMS  # noqa: E402
from metrics_etl.ingest import discover  # noqa: E402
from metrics_etl.models import build, catalog  # noqa: E402
from run import ensure_raw, loadavg, log, run_child  # noqa: E402

AS_OF = "2018-02-01T00:00:00Z"


def cpu_seconds() -> float:
    """User plus system CPU time of this process (all its threads) so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _lit(text: str) -> str:
    """A SQL string literal (our own paths)."""
    return "'" + text.replace("'", "''") + "'"


def _connect(path: Path, memory_limit: str) -> duckdb.DuckDBPyConnection:
    """A fresh DuckDB file with the writer's threads and memory limit."""
    path.unlink(missing_ok=True)
    conn = duckdb.connect(str(path))
    conn.execute(f"set threads = {os.cpu_count() or 1}")
    conn.execute(f"set memory_limit = {_lit(memory_limit)}")
    return conn


def typed_load(conn: duckdb.DuckDBPyConnection, raw: Path) -> int:
    """Load every raw file into raw_<stream> with the contract's columns; rows loaded.

    JSONL through `read_json` (lines that do not parse or type are skipped, as
    `ignore_errors` does; a file DuckDB cannot read at all, such as a truncated gzip, is
    skipped), Parquet through `read_parquet` with each contract column cast (`try_cast`).
    `_file` and `_line` are there because the staging models read them (the line is 0).
    """
    files = discover.discover(raw).files
    total = 0
    for name, stream in STREAMS.items():
        types = {f.name: DUCKDB_TYPES[f.type] for f in stream.fields}
        cols = ", ".join(f"{n} {t}" for n, t in types.items())
        conn.execute(f"create table raw_{name} ({cols}, _file varchar, _line bigint)")
        struct = "{" + ", ".join(f"{_lit(n)}: {_lit(t)}" for n, t in types.items()) + "}"
        names = ", ".join(types)
        jsonl = [str(f.path) for f in files if f.stream == name and f.format != "parquet"]
        groups = [jsonl] if jsonl else []
        for attempt, paths in enumerate(groups):
            listed = "[" + ", ".join(_lit(p) for p in paths) + "]"
            try:
                conn.execute(
                    f"insert into raw_{name} select {names}, filename, 0 from read_json({listed}, "
                    f"format = 'newline_delimited', columns = {struct}, ignore_errors = true, "
                    f"filename = true)"
                )
            except duckdb.Error:  # one unreadable file fails the list: then file by file
                if attempt == 0 and len(paths) > 1:
                    groups.extend([p] for p in paths)
        for raw_file in (f for f in files if f.stream == name and f.format == "parquet"):
            try:
                present = {
                    row[0]
                    for row in conn.execute(
                        f"describe select * from read_parquet({_lit(str(raw_file.path))})"
                    ).fetchall()
                }
                casts = ", ".join(
                    f"try_cast({n} as {t})" if n in present else f"null::{t}"
                    for n, t in types.items()
                )
                conn.execute(
                    f"insert into raw_{name} select {casts}, {_lit(raw_file.rel)}, 0 "
                    f"from read_parquet({_lit(str(raw_file.path))})"
                )
            except duckdb.Error:
                pass
        total += conn.execute(f"select count(*) from raw_{name}").fetchall()[0][0]
    conn.execute("checkpoint")
    return int(total)


def floor_run(raw: Path, work: Path, memory_limit: str) -> dict[str, Any]:
    """The typed-load floor once: seconds and rows."""
    db = work / "floor.duckdb"
    t0, c0 = time.monotonic(), cpu_seconds()
    conn = _connect(db, memory_limit)
    rows = typed_load(conn, raw)
    conn.close()
    seconds, cpu = time.monotonic() - t0, cpu_seconds() - c0
    db.unlink()
    return {"seconds": seconds, "cpu_s": cpu, "rows": rows}


def naive_run(raw: Path, work: Path, memory_limit: str) -> dict[str, Any]:
    """The naive peer once: seconds (load, models, copy) and rows loaded."""
    db, out = work / "naive.duckdb", work / "naive-out"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    t0, c0 = time.monotonic(), cpu_seconds()
    conn = _connect(db, memory_limit)
    conn.execute(f"set temp_directory = {_lit(str(work / 'naive-spill'))}")
    rows = typed_load(conn, raw)
    t1 = time.monotonic()
    build.prepare(conn, AS_OF)
    for models in build.layers().values():
        build.build_models(conn, models)
    t2 = time.monotonic()
    files = 0
    for model in catalog.load_models():
        if model.published:
            target = out / model.name
            conn.execute(
                f"copy (select *, {model.part_expr} as part from {model.name}) to "
                f"{_lit(str(target))} (format parquet, compression zstd, partition_by (part))"
            )
            files += sum(1 for _ in target.rglob("*.parquet"))
    conn.close()
    t3, cpu = time.monotonic(), cpu_seconds() - c0
    db.unlink()
    shutil.rmtree(out, ignore_errors=True)
    return {
        "seconds": t3 - t0,
        "cpu_s": cpu,
        "load_s": t1 - t0,
        "models_s": t2 - t1,
        "copy_s": t3 - t2,
        "rows": rows,
        "files": files,
    }


def build_run(raw: Path, work: Path, env: dict[str, str]) -> dict[str, Any]:
    """Our full build once (a child process): wall seconds and the pipeline's step times."""
    warehouse = work / "wh"
    shutil.rmtree(warehouse, ignore_errors=True)
    warehouse.mkdir(parents=True)
    res = run_child(raw, warehouse, env)
    shutil.rmtree(warehouse, ignore_errors=True)
    return {
        "seconds": res["wall_s"],
        "cpu_s": res["cpu_s"],
        "steps": res["summary"]["seconds"],
        "peak_rss_bytes": res["peak_rss_bytes"],
    }


def bench_size(
    size: int,
    work: Path,
    env: dict[str, str],
    rounds: int,
    memory_limit: str,
    baseline: Path | None = None,
) -> dict[str, Any]:
    """`rounds` rounds of build, floor and naive peer on one size, each round in turn."""
    raw = ensure_raw(work, size)
    scratch = work / f"floors-{size}"
    scratch.mkdir(parents=True, exist_ok=True)
    runs: list[dict[str, Any]] = []
    for i in range(rounds):
        log(f"{size:,} round {i + 1}/{rounds} (load {loadavg()})")
        one = {
            "build": build_run(raw, scratch, env),
            "floor": floor_run(raw, scratch, memory_limit),
            "naive": naive_run(raw, scratch, memory_limit),
            "loadavg": loadavg(),
        }
        if baseline is not None:  # the same build by other code (e.g. an older commit's src)
            base = build_run(raw, scratch, {**env, "PYTHONPATH": str(baseline)})
            one["baseline"] = base
            one["baseline_over_floor"] = base["seconds"] / one["floor"]["seconds"]
            one["baseline_over_naive"] = base["seconds"] / one["naive"]["seconds"]
            one["build_over_baseline"] = one["build"]["seconds"] / base["seconds"]
            one["cpu_build_over_baseline"] = one["build"]["cpu_s"] / base["cpu_s"]
            log(
                f"  baseline build {base['seconds']:.1f}s (CPU {base['cpu_s']:.1f}s) "
                f"{base['steps']}; build/baseline {one['build_over_baseline']:.2f}x "
                f"(CPU {one['cpu_build_over_baseline']:.2f}x)"
            )
        b, f, n = one["build"]["seconds"], one["floor"]["seconds"], one["naive"]["seconds"]
        one["build_over_floor"], one["build_over_naive"] = b / f, b / n
        bc, fc, nc = one["build"]["cpu_s"], one["floor"]["cpu_s"], one["naive"]["cpu_s"]
        one["cpu_build_over_floor"], one["cpu_build_over_naive"] = bc / fc, bc / nc
        log(
            f"  build {b:.1f}s {one['build']['steps']}; floor {f:.1f}s "
            f"({one['floor']['rows']:,} rows); naive {n:.1f}s (load {one['naive']['load_s']:.1f}, "
            f"models {one['naive']['models_s']:.1f}, copy {one['naive']['copy_s']:.1f}); "
            f"build/floor {b / f:.2f}x, build/naive {b / n:.2f}x; CPU s build {bc:.1f}, "
            f"floor {fc:.1f}, naive {nc:.1f}: build/floor {bc / fc:.2f}x, "
            f"build/naive {bc / nc:.2f}x"
        )
        runs.append(one)
    shutil.rmtree(scratch, ignore_errors=True)
    return {
        "size": size,
        "rounds": runs,
        "median_build_over_floor": statistics.median(r["build_over_floor"] for r in runs),
        "median_build_over_naive": statistics.median(r["build_over_naive"] for r in runs),
        "median_cpu_build_over_floor": statistics.median(r["cpu_build_over_floor"] for r in runs),
        "median_cpu_build_over_naive": statistics.median(r["cpu_build_over_naive"] for r in runs),
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="1000000", help="comma-separated event counts")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workdir", default=str(HERE / "work"), type=Path)
    parser.add_argument(
        "--memory-limit", default="4GB", help="for all three (the writer's default)"
    )
    parser.add_argument(
        "--baseline-src",
        type=Path,
        help="also build with this src folder each round (e.g. `git archive OLD src`), beside",
    )
    args = parser.parse_args()
    work = args.workdir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    results = HERE / "results"
    results.mkdir(exist_ok=True)

    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        env = dict(os.environ)
        env.update(
            {
                "PREFECT_API_URL": PREFECT_API_URL.value(),
                "PYTHONPATH": str(REPO / "src"),
                "METRICS_ETL_MEMORY_LIMIT": args.memory_limit,
            }
        )
        for size in (int(s) for s in args.sizes.split(",") if s):
            record = bench_size(size, work, env, args.rounds, args.memory_limit, args.baseline_src)
            record["finished"] = datetime.now(UTC).isoformat()
            (results / f"floors-{size}.json").write_text(json.dumps(record, indent=1))
            log(
                f"{size:,}: median build/floor {record['median_build_over_floor']:.2f}x "
                f"(target <= 4), build/naive {record['median_build_over_naive']:.2f}x "
                f"(target <= 0.6); in CPU seconds {record['median_cpu_build_over_floor']:.2f}x "
                f"and {record['median_cpu_build_over_naive']:.2f}x"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
