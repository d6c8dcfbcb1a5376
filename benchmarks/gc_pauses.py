"""In-process latency per endpoint with the heap as it is and then frozen, side by side in one
process, with every garbage collection's pause recorded (`gc.callbacks`).

    uv run python benchmarks/gc_pauses.py WAREHOUSE [--requests 100] [--rounds 2]

Each round times `run.py`'s cells (endpoint x channel x range) twice: `plain` (the heap as the
reader leaves it) and `frozen` (after `settle_heap()`, as `metrics-etl serve` does once it
serves a snapshot; unfrozen again before the next round). Prints, per mode, the collections and
their longest pause per generation, and the worst cell's p50 / p99 per endpoint.
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from metrics_etl.serve.http import settle_heap  # noqa: E402
from metrics_etl.serve.reader import Reader  # noqa: E402
from run import loadavg, make_requests, pct, pick_targets, time_calls  # noqa: E402


class Pauses:
    """Every collection's generation and pause in ms, while installed."""

    def __init__(self) -> None:
        self.seen: list[tuple[int, float]] = []
        self._start = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._start = time.perf_counter()
        else:
            self.seen.append((info["generation"], (time.perf_counter() - self._start) * 1000))

    def summary(self) -> str:
        """Collections and the longest pause per generation."""
        parts = []
        for generation in (0, 1, 2):
            pauses = [ms for g, ms in self.seen if g == generation]
            parts.append(f"gen {generation}: {len(pauses)}, max {max(pauses, default=0):.1f} ms")
        return "; ".join(parts)


def measure(reader: Reader, cells: dict[str, list[tuple[str, int]]]) -> tuple[Pauses, dict]:
    """Time every cell; the collections meanwhile and the worst p50 / p99 per endpoint."""
    pauses = Pauses()
    gc.callbacks.append(pauses)
    worst: dict[str, tuple[float, float]] = {}
    try:
        for cell, urls in cells.items():
            lat, _ = time_calls(reader.get, urls)
            endpoint = cell.split("|")[0]
            p50, p99 = worst.get(endpoint, (0.0, 0.0))
            worst[endpoint] = (max(p50, pct(lat, 50)), max(p99, pct(lat, 99)))
    finally:
        gc.callbacks.remove(pauses)
    return pauses, worst


def main() -> int:
    """Open the snapshot, warm it, then measure plain and frozen in turn, per round."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("warehouse", type=Path)
    parser.add_argument("--requests", type=int, default=100, help="requests per cell")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    reader = Reader(args.warehouse)
    cells = make_requests(pick_targets(reader), args.requests, seed=11)
    reader.close()
    reader = Reader(args.warehouse)
    reader.warm()
    for urls in cells.values():
        for url, account in urls[:2]:
            reader.get(url, account)
    print(f"{args.warehouse}: load {loadavg()}")
    for round_ in range(args.rounds):
        for mode in ("plain", "frozen"):
            if mode == "frozen":
                settle_heap()
            pauses, worst = measure(reader, cells)
            gc.unfreeze()
            print(f"round {round_} {mode}: {pauses.summary()}")
            for endpoint, (p50, p99) in worst.items():
                print(f"    {endpoint:30s} p50 {p50:6.2f}  p99 {p99:6.2f} ms")
    reader.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
