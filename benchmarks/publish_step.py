"""The publish step's writing alone, over a built writer database: the tables' Parquet, the
serving segments, and both, in turn (as until 5 Dec 2026) or alongside (the segments on a
thread of their own, as the pipeline writes them now).

    uv run python benchmarks/publish_step.py DATABASE [--rounds 3] [--memory-limit 3GB]

DATABASE is a warehouse's `_state/warehouse.duckdb` after a full run (opened read-only). Each
round runs the four modes, in an order rotated from round to round, each in a process of its
own writing into an empty folder; it prints each one's wall and CPU seconds and peak RSS, then
the medians and what the segments add to the tables' time in turn and alongside.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MODES = ("tables", "segments", "in_turn", "alongside")


def child(mode: str, database: Path, memory_limit: str | None) -> dict[str, float]:
    """Run one mode into a new folder; its wall and CPU seconds and peak RSS."""
    import duckdb

    from metrics_etl.models.build import published_models
    from metrics_etl.publish import snapshot
    from metrics_etl.serve import segments

    folder = Path(tempfile.mkdtemp(prefix="publish-step-"))
    conn = duckdb.connect(str(database), read_only=True)
    conn.execute("set preserve_insertion_order = false")  # as the writer's connection
    if memory_limit:
        conn.execute("set memory_limit = ?", [memory_limit])
    tables = [*published_models(), "rejects", "file_stats"]
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu0 = usage.ru_utime + usage.ru_stime
    started = time.perf_counter()
    try:
        if mode in ("tables", "in_turn"):
            snapshot.write_tables(conn, folder, tables, "bench")
        if mode in ("segments", "in_turn"):
            segments.write_segments(conn, folder)
        if mode == "alongside":
            with segments.Alongside(conn, folder, None, None) as alongside:
                snapshot.write_tables(conn, folder, tables, "bench")
            alongside.result()
        wall = time.perf_counter() - started
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "wall": wall,
        "cpu": usage.ru_utime + usage.ru_stime - cpu0,
        "rss_mib": usage.ru_maxrss / 1024,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("database", type=Path)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--memory-limit", help="DuckDB's, as METRICS_ETL_MEMORY_LIMIT")
    parser.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.database, args.memory_limit)))
        return 0
    found: dict[str, list[dict[str, float]]] = {mode: [] for mode in MODES}
    for round_no in range(args.rounds):
        order = MODES[round_no % len(MODES) :] + MODES[: round_no % len(MODES)]
        for mode in order:
            limit = ["--memory-limit", args.memory_limit] if args.memory_limit else []
            out = subprocess.run(
                [sys.executable, __file__, str(args.database), "--child", mode, *limit],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
            result = json.loads(out.strip().splitlines()[-1])
            found[mode].append(result)
            print(
                f"round {round_no + 1} {mode:9s} {result['wall']:7.2f} s wall "
                f"{result['cpu']:7.2f} s CPU {result['rss_mib']:7.0f} MiB",
                flush=True,
            )
    median = {mode: statistics.median(r["wall"] for r in found[mode]) for mode in MODES}
    print("medians: " + ", ".join(f"{mode} {median[mode]:.2f} s" for mode in MODES))
    for mode in ("in_turn", "alongside"):
        added = median[mode] - median["tables"]
        print(f"the segments add {added:.2f} s to the tables' {median['tables']:.2f} s {mode}")
    print(f"alongside / in turn: {median['alongside'] / median['in_turn']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
