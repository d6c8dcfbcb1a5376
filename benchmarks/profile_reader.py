"""Where a reader request's time goes: the same requests against the published snapshot as the
reader opens it (views over read_parquet of the manifest's files) and against the same snapshot
loaded into in-memory DuckDB tables (an experiment, not the project's code path).

    uv run python benchmarks/profile_reader.py WAREHOUSE CHANNEL_ID ACCOUNT_ID
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

from metrics_etl.reader import Reader


def bench(reader: Reader, urls: list[str], account: int) -> tuple[float, float]:
    lat = []
    for url in urls:
        t0 = time.perf_counter()
        status, _ = reader.get(url, account)
        lat.append((time.perf_counter() - t0) * 1000)
        assert status == 200
    lat.sort()
    return statistics.median(lat), lat[int(len(lat) * 0.99) - 1]


def main() -> None:
    warehouse, channel, account = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    urls = [
        f"/api/v4/analytics/{ep}?channel_id={channel}&start_date=2016-{m:02d}-03T05:06:07.123456Z"
        f"&end_date=2016-{m:02d}-04T05:06:07.123456Z"
        for m in range(1, 13)
        for ep in ("reports_per_user", "reports_read", "reports_over_time")
    ] * 4
    reader = Reader(warehouse)
    reader.get(urls[0], account)
    print("views over Parquet   p50 {:.1f} ms  p99 {:.1f} ms".format(*bench(reader, urls, account)))
    snap = reader.snapshot()
    t0 = time.perf_counter()
    for table in snap.manifest["tables"]:
        snap.conn.execute(f"create table mem_{table} as select * from {table}")
        snap.conn.execute(f"drop view {table}")
        snap.conn.execute(f"alter table mem_{table} rename to {table}")
    print("loaded snapshot into memory in %.1f s" % (time.perf_counter() - t0))
    print("in-memory tables     p50 {:.1f} ms  p99 {:.1f} ms".format(*bench(reader, urls, account)))
    one = reader._query
    t0 = time.perf_counter()
    for _ in range(100):
        one("select 1", {})
    print("trivial query (cursor + execute) %.2f ms" % ((time.perf_counter() - t0) * 10))


if __name__ == "__main__":
    main()
