"""Time each SQL model of a full transform on a copy of a writer database (after ingest).

    uv run python benchmarks/profile_models.py WAREHOUSE_DUCKDB [--timeout S] [--explain MODEL]

Copies the file, then rebuilds every model in order as transform.run_models does, printing the
seconds of each; a model running past --timeout is interrupted (and reported) and its EXPLAIN plan
printed.
"""

from __future__ import annotations

import argparse
import shutil
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import duckdb

from metrics_etl.models import build as transform


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("database", type=Path)
    parser.add_argument("--timeout", type=float, default=60)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--transaction",
        action="store_true",
        help="every model in one transaction (not as the pipeline, which commits each "
        "statement on its own; in one transaction int_local_slots took 54 s against 1.5 s "
        "at 10M on 5 Dec 2026, not investigated further)",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        help="extra DuckDB SET, e.g. disabled_optimizers='join_order'",
    )
    parser.add_argument(
        "--only",
        default="",
        help="comma-separated models whose EXPLAIN plan is printed before they run",
    )
    args = parser.parse_args()
    copy = args.database.with_name("profile-copy.duckdb")
    shutil.copy2(args.database, copy)
    wal = args.database.with_name(args.database.name + ".wal")
    if wal.exists():
        shutil.copy2(wal, copy.with_name(copy.name + ".wal"))
    conn = duckdb.connect(str(copy))
    conn.execute("set TimeZone = 'UTC'")
    conn.execute(f"set threads = {args.threads}")
    conn.execute("set memory_limit = '4GB'")
    for setting in args.set:
        conn.execute(f"set {setting}")
    transform.prepare(conn, datetime.now(UTC).isoformat())
    conn.execute("set preserve_insertion_order = true")
    if args.transaction:
        conn.execute("begin transaction")
    total = 0.0
    for model in transform.load_models():
        query = transform.in_storage_order(model)
        if model.name in args.only.split(","):
            print(conn.execute(f"explain {model.sql}").fetchall()[0][1], flush=True)
        timer = threading.Timer(args.timeout, conn.interrupt)
        t0 = time.monotonic()
        timer.start()
        try:
            conn.execute(f"create or replace table {model.name} as {query}")
            status = "ok"
        except duckdb.InterruptException:
            status = "INTERRUPTED"
        finally:
            timer.cancel()
        dt = time.monotonic() - t0
        total += dt
        rows = (
            conn.execute(f"select count(*) from {model.name}").fetchone()[0]
            if status == "ok"
            else "-"
        )
        print(f"{model.name:<32} {dt:8.2f}s  rows {rows}  {status}", flush=True)
        if status != "ok":
            break
    print(f"total {total:.1f}s")
    conn.close()
    copy.unlink()
    shutil.rmtree(copy.with_name(copy.name + ".wal"), ignore_errors=True)


if __name__ == "__main__":
    main()
