"""Requests right after a server starts on a cold page cache, with and without read-ahead.

    uv run python benchmarks/cold_start.py WAREHOUSE [--rounds 2] [--requests 10] [--wait 5]

Each round, for each mode (`none`, then `prefetch`), drops the page cache (needs root:
`/proc/sys/vm/drop_caches`), then a fresh process opens the snapshot as `metrics-etl serve`
does (maps every segment; `prefetch` also asks the kernel to read the files ahead, as the
server now does once it serves), waits `--wait` seconds (the server is up and idle), and times
the first requests of every cell (`run.py`'s cells: endpoint x channel x range). The first
touches of pages not in the page cache are what the p99 of a freshly started server is made of.
Results: benchmarks/results/cold-start-<warehouse name>.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from metrics_etl.serve.reader import Reader  # noqa: E402
from run import loadavg, log, make_requests, pct, pick_targets, time_calls  # noqa: E402

DROP = Path("/proc/sys/vm/drop_caches")


def drop_page_cache() -> None:
    """Write dirty pages, then drop the clean ones from the page cache."""
    subprocess.run(["sync"], check=True)
    DROP.write_text("1\n")


def child(warehouse: Path, cells_file: Path, mode: str, wait: float) -> dict[str, Any]:
    """In a fresh process: open, warm (and read ahead), wait, time every cell's requests."""
    cells: dict[str, list[tuple[str, int]]] = json.loads(cells_file.read_text())
    reader = Reader(warehouse)
    t0 = time.perf_counter()
    reader.warm()
    if mode == "prefetch":
        reader.prefetch()
    opened = time.perf_counter() - t0
    time.sleep(wait)
    by_endpoint: dict[str, list[float]] = {}
    every: list[float] = []
    for cell, urls in cells.items():
        lat, _ = time_calls(reader.get, [tuple(u) for u in urls])  # type: ignore[misc]
        by_endpoint.setdefault(cell.split("|")[0], []).extend(lat)
        every += lat
    reader.close()
    return {
        "mode": mode,
        "open_and_warm_s": round(opened, 3),
        "all": {"p50": pct(every, 50), "p99": pct(every, 99), "max": max(every)},
        "endpoints": {
            e: {"p50": pct(v, 50), "p99": pct(v, 99), "max": max(v)}
            for e, v in sorted(by_endpoint.items())
        },
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("warehouse", type=Path)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--requests", type=int, default=10, help="requests per cell")
    parser.add_argument("--wait", type=float, default=5.0, help="idle seconds before requests")
    parser.add_argument("--child", nargs=2, metavar=("CELLS", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    warehouse = args.warehouse.resolve()
    if args.child:
        print(json.dumps(child(warehouse, Path(args.child[0]), args.child[1], args.wait)))
        return 0
    try:
        drop_page_cache()
    except OSError as error:
        print(f"cannot drop the page cache ({error}): run as root", file=sys.stderr)
        return 2
    reader = Reader(warehouse)
    cells = make_requests(pick_targets(reader), args.requests, seed=13)
    reader.close()
    out = HERE / "results" / f"cold-start-{warehouse.name}.json"
    out.parent.mkdir(exist_ok=True)
    cells_file = out.with_suffix(".cells.json")
    cells_file.write_text(json.dumps(cells))
    runs = []
    for round_number in range(args.rounds):
        for mode in ("none", "prefetch"):
            drop_page_cache()
            command = [sys.executable, __file__, str(warehouse), "--wait", str(args.wait)]
            found = subprocess.run(
                [*command, "--child", str(cells_file), mode],
                check=True,
                capture_output=True,
                text=True,
            )
            result = json.loads(found.stdout.strip().splitlines()[-1])
            result.update(round=round_number, load=loadavg())
            runs.append(result)
            a = result["all"]
            log(
                f"round {round_number} {mode}: p50 {a['p50']:.2f} p99 {a['p99']:.2f} "
                f"max {a['max']:.1f} ms; "
                + ", ".join(f"{e} {v['p99']:.1f}" for e, v in result["endpoints"].items())
            )
    out.write_text(json.dumps(runs, indent=1))
    cells_file.unlink()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
