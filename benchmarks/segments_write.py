"""The segments step of a full build alone, for two versions of the code side by side:
`segments.write_segments` over a built writer database, into an empty warehouse folder.

    uv run python benchmarks/segments_write.py DATABASE --old OLD/src [--rounds 3]

DATABASE is a warehouse's `_state/warehouse.duckdb` after a run (opened read-only). Each round
runs both versions, in alternating order, each in a process of its own (PYTHONPATH=<src>), and
prints the seconds and peak RSS of each; then the medians and the ratio new / old.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
NEW_SRC = HERE.parent / "src"


def one(database: Path) -> float:
    """Write every segment of `database` into a new folder; the seconds it took."""
    import duckdb

    from metrics_etl.serve import segments

    folder = Path(tempfile.mkdtemp(prefix="segments-write-"))
    try:
        conn = duckdb.connect(str(database), read_only=True)
        conn.execute("set preserve_insertion_order = false")  # as the writer's connection
        started = time.perf_counter()
        segments.write_segments(conn, folder)
        return time.perf_counter() - started
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def timed(src: Path, database: Path) -> tuple[float, float]:
    """One round of one version, in a process of its own: seconds, and peak RSS in MiB."""
    env = {**os.environ, "PYTHONPATH": str(src)}
    out = subprocess.run(
        [sys.executable, __file__, str(database), "--one"],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    peak, seconds = out.stdout.split()[-2:]
    return float(seconds), float(peak)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("database", type=Path)
    parser.add_argument("--old", type=Path, help="the src folder of the version to compare")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        seconds = one(args.database)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"{peak:.0f} {seconds:.3f}")
        return 0
    versions = {"new": NEW_SRC, **({"old": args.old} if args.old else {})}
    seconds: dict[str, list[float]] = {name: [] for name in versions}
    for round_no in range(args.rounds):
        names = list(versions)[:: 1 if round_no % 2 == 0 else -1]
        for name in names:
            took, peak = timed(versions[name], args.database)
            seconds[name].append(took)
            load = os.getloadavg()[0]
            print(
                f"round {round_no} {name}: {took:.2f} s, peak RSS {peak:.0f} MiB (load {load:.1f})"
            )
    medians = {name: statistics.median(values) for name, values in seconds.items()}
    print("medians: " + ", ".join(f"{name} {m:.2f} s" for name, m in medians.items()))
    if "old" in medians:
        print(f"new / old: {medians['new'] / medians['old']:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
