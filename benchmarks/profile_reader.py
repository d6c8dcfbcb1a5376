"""Where the reader's time and memory go: time and resident memory to map each part of the
serving index (its segments), then per-endpoint latency for one channel over 1-day and 1-year
ranges.

    uv run python benchmarks/profile_reader.py WAREHOUSE CHANNEL_ID ACCOUNT_ID [ORGANIZATION]
"""

from __future__ import annotations

import resource
import statistics
import sys
import time
from pathlib import Path

from metrics_etl.serve.index import BUILDERS, WHOLE
from metrics_etl.serve.reader import ANALYTICS, Reader


def rss_mib() -> float:
    """Current resident set size in MiB."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def main() -> None:
    warehouse, channel, account = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    org = sys.argv[4] if len(sys.argv) > 4 else None
    reader = Reader(warehouse)
    index = reader.snapshot().index
    for name in [*WHOLE, *BUILDERS]:
        before, t0 = rss_mib(), time.perf_counter()
        index.part(name, None if name in WHOLE else channel)
        print(f"map {name:13s} {time.perf_counter() - t0:8.4f} s  +{rss_mib() - before:7.1f} MiB")
    print(f"resident total {rss_mib():.0f} MiB")
    reader.warm()  # as the server does: maps every segment
    ranges = {
        "1d": ("2017-03-03T05:06:07.123456Z", "2017-03-04T05:06:07.123456Z"),
        "1y": ("2016-06-03T05:06:07.123456Z", "2017-06-03T05:06:07.123456Z"),
    }
    paths = []
    for label, (start, end) in ranges.items():
        for endpoint in ANALYTICS:
            extra = "&fields=total_reads,unique_reads,report_readers,reports_seen"
            if endpoint == "user_awareness":
                extra = "&fields=total_alerts,unique_alerts,alert_source_reports,alerts_opened"
            elif endpoint != "reports_read":
                extra = ""
            if endpoint == "reports_per_field_selection":
                continue
            paths.append(
                (
                    f"{endpoint} {label}",
                    f"/api/v4/analytics/{endpoint}?channel_id={channel}"
                    f"&start_date={start}&end_date={end}{extra}",
                )
            )
    if org:
        paths.append(("report_stats", f"/batch/{org}/report_stats?per_page=1000&page=1"))
        paths.append(("report_stats all", f"/batch/{org}/report_stats?include_spaces=all"))
    for label, path in paths:
        times = []
        for _ in range(30):
            t0 = time.perf_counter()
            status, _ = reader.get(path, account)
            times.append((time.perf_counter() - t0) * 1000)
            assert status == 200, (path, _)
        times.sort()
        print(f"{label:32s} p50 {statistics.median(times):7.2f} ms  max {times[-1]:7.2f} ms")
    print(f"resident total after requests {rss_mib():.0f} MiB")


if __name__ == "__main__":
    main()
