"""Time the ingest step alone, per file, against a fresh writer database.

    uv run python benchmarks/profile_ingest.py RAW [--db /tmp/ingest.duckdb] [--keep]
        [--compare OTHER.duckdb] [--statements]

Opens a new writer database (as the pipeline does), ingests every file under RAW and prints the
seconds of each file and the total. With --compare, checks that the raw tables, rejects and
file_stats equal those of another database built the same way (e.g. by an earlier version).
With --statements, also prints the wall and CPU seconds of each kind of SQL statement (its first
words, names of raw tables and literals folded), summed over the files.
"""

from __future__ import annotations

import argparse
import re
import resource
import shutil
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import duckdb

from metrics_etl.contract import STREAMS
from metrics_etl.ingest import discover, load
from metrics_etl.run import pipeline


def cpu_seconds() -> float:
    """User plus system CPU time of this process (all threads) so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def compare(conn: duckdb.DuckDBPyConnection, other: Path) -> bool:
    """True when every raw table, rejects and file_stats equal those of `other`."""
    conn.execute(f"attach '{other}' as other (read_only)")
    tables = [f"raw_{s}" for s in STREAMS]
    ok = True
    checks = {t: "*" for t in tables}
    checks["rejects"] = "stream, file, line, raw, reason"
    checks["file_stats"] = "file, stream, lines_read, blank_lines, accepted, rejected"
    for table, cols in checks.items():
        diff = conn.execute(
            f"select (select count(*) from (select {cols} from {table} except all "
            f"select {cols} from other.{table})), (select count(*) from (select {cols} from "
            f"other.{table} except all select {cols} from {table})), "
            f"(select count(*) from {table})"
        ).fetchall()[0]
        status = "same" if diff[:2] == (0, 0) else "DIFFERENT"
        ok = ok and status == "same"
        print(
            f"{table:20s} rows {diff[2]:>10,} only-here {diff[0]:>8,} only-there {diff[1]:>8,} {status}"
        )
    return ok


class TimedConnection:
    """A connection that sums the wall and CPU seconds of its statements by kind."""

    def __init__(self, conn: duckdb.DuckDBPyConnection) -> None:
        self.conn = conn
        self.spent: dict[str, list[float]] = defaultdict(lambda: [0, 0.0, 0.0])

    def execute(self, sql: str, *args: Any) -> Any:
        """Run a statement, adding its time to its kind's."""
        kind = re.sub(r"'[^']*'", "'.'", re.sub(r"raw_\w+", "raw_X", " ".join(sql.split())))[:60]
        t0, c0 = time.monotonic(), cpu_seconds()
        out = self.conn.execute(sql, *args)
        spent = self.spent[kind]
        spent[0] += 1
        spent[1] += time.monotonic() - t0
        spent[2] += cpu_seconds() - c0
        return out

    def __getattr__(self, name: str) -> Any:
        return getattr(self.conn, name)

    def report(self, top: int = 14) -> None:
        """Print the statement kinds that took the most wall time."""
        print(f"{'wall s':>8} {'CPU s':>8} {'count':>6}  statement")
        for kind, (count, wall, cpu) in sorted(self.spent.items(), key=lambda kv: -kv[1][1])[:top]:
            print(f"{wall:8.2f} {cpu:8.2f} {int(count):6d}  {kind}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("raw", type=Path)
    parser.add_argument("--warehouse", type=Path, default=Path("/tmp/profile-ingest-wh"))
    parser.add_argument("--chunk-bytes", type=int, default=64 * 1024 * 1024)
    parser.add_argument("--compare", type=Path)
    parser.add_argument("--quiet", action="store_true", help="no per-file lines")
    parser.add_argument("--statements", action="store_true", help="time each kind of statement")
    args = parser.parse_args()
    shutil.rmtree(args.warehouse, ignore_errors=True)
    conn = pipeline.open_writer(args.warehouse)
    timed_conn = TimedConnection(conn) if args.statements else None
    original = load.load_file
    per_file: list[tuple[float, str]] = []

    def timed(*a, **k):  # type: ignore[no-untyped-def]
        t0 = time.monotonic()
        out = original(*a, **k)
        per_file.append((time.monotonic() - t0, a[1].rel))
        return out

    load.load_file = timed  # type: ignore[assignment]
    t0, c0 = time.monotonic(), cpu_seconds()
    stats = load.ingest(
        timed_conn or conn,  # type: ignore[arg-type]
        discover.discover(args.raw),
        "profile",
        args.chunk_bytes,
    )
    total, cpu = time.monotonic() - t0, cpu_seconds() - c0
    if not args.quiet:
        for seconds, rel in sorted(per_file, reverse=True)[:15]:
            print(f"{seconds:8.2f}  {rel}")
    print(f"load_file total {sum(p[0] for p in per_file):.2f} s over {len(per_file)} files")
    lines = sum(s.lines for s in stats.values())
    rejected = sum(s.rejected for s in stats.values())
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"ingest total {total:.2f} s (CPU {cpu:.2f} s), {lines:,} lines, {rejected:,} rejected, "
        f"peak RSS {peak:.0f} MiB"
    )
    if timed_conn:
        timed_conn.report()
    if args.compare:
        conn.execute("checkpoint")
        ok = compare(conn, args.compare)
        print("IDENTICAL" if ok else "MISMATCH")


if __name__ == "__main__":
    main()
