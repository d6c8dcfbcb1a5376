"""Benchmark harness: full build, parse-only floor, incremental 1% run, reader latency (in-process,
HTTP, and on-the-fly SQL over staging tables), scaling, and optionally 100M under a memory limit.

    uv run python benchmarks/run.py --sizes 1000000,10000000 --repeat 3

Every pipeline run is a separate child process (benchmarks/build_child.py) whose peak RSS is read
with os.wait4 (that child only). One Prefect server (prefect_test_harness) serves all of them; its
start-up, and each child's Python/Prefect import time, are excluded from the build times.
Results: benchmarks/results/<size>.json and benchmarks/results/summary.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import random
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import duckdb

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


from metrics_etl.contract import STREAMS  # noqa: E402
from metrics_etl.generator.generate import generate  # noqa: E402
from metrics_etl.ingest import discover  # noqa: E402
from metrics_etl.serve.keys import KeyStore  # noqa: E402
from metrics_etl.serve.reader import (  # noqa: E402
    ANALYTICS,
    AWARENESS_FIELDS,
    READ_FIELDS,
    SELECTABLE_FIELD_TYPES,
    Reader,
)
from onthefly import OnTheFly  # noqa: E402

EVENT_STREAMS = [name for name, s in STREAMS.items() if s.kind == "event"]
NEW_KEY_OFFSET = 1_000_000_000_000
ENDPOINTS = list(ANALYTICS)


def log(msg: str) -> None:
    print(f"[{datetime.now().strftime('%H:%M:%S')}] {msg}", flush=True)


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def stats(values: list[float]) -> dict[str, float]:
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "n": len(values),
        "all": values,
    }


def pct(values: list[float], q: float) -> float:
    data = sorted(values)
    if not data:
        return float("nan")
    k = (len(data) - 1) * q / 100
    f = int(k)
    c = min(f + 1, len(data) - 1)
    return data[f] + (data[c] - data[f]) * (k - f)


def dir_size(path: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.path.getsize(os.path.join(root, name))
    return total


# ------------------------------------------------------------------------------- building


BUILD_TIMEOUT: list[float] = []


def run_child(
    raw: Path, warehouse: Path, env: dict[str, str], full_refresh: bool = False
) -> dict[str, Any]:
    """One pipeline run in a child process: wall time, peak RSS (that child only), max spill."""
    out = warehouse.parent / f"child-{os.getpid()}-{time.monotonic_ns()}.json"
    cmd = [sys.executable, str(HERE / "build_child.py"), str(raw), str(warehouse), str(out)]
    if full_refresh:
        cmd.append("--full-refresh")
    spill = warehouse / "_state" / "spill"
    peak_spill = 0
    done = threading.Event()

    def watch() -> None:
        nonlocal peak_spill
        while not done.wait(0.5):
            if spill.exists():
                peak_spill = max(peak_spill, dir_size(spill))

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    t0 = time.monotonic()
    proc = subprocess.Popen(
        cmd, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    assert proc.stdout is not None
    killer = threading.Timer(BUILD_TIMEOUT[0], proc.kill) if BUILD_TIMEOUT else None
    if killer:
        killer.start()
    output = proc.stdout.read()
    _pid, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    process_s = time.monotonic() - t0
    if killer:
        killer.cancel()
    done.set()
    watcher.join()
    if proc.returncode != 0 or not out.exists():
        sys.stderr.write(output.decode(errors="replace")[-5000:])
        raise RuntimeError(
            f"pipeline child failed with {proc.returncode} after {process_s:.0f}s "
            f"(peak RSS {usage.ru_maxrss / 1024:.0f} MiB)"
        )
    result = json.loads(out.read_text())
    out.unlink()
    result["process_s"] = process_s
    result["peak_rss_bytes"] = usage.ru_maxrss * 1024
    result["cpu_s"] = usage.ru_utime + usage.ru_stime  # the child's own (all its threads)
    result["peak_spill_bytes"] = peak_spill
    return result


def stage_new_events(raw: Path) -> Path:
    """Make ~1% new events per event stream (fresh keys, existing references) with DuckDB, kept
    under `<raw>/_bench_new/` (ignored by the pipeline) until an incremental run copies them in."""
    staged = raw / "_bench_new"
    if (staged / "done").exists():
        return staged
    shutil.rmtree(staged, ignore_errors=True)
    conn = duckdb.connect()
    conn.execute("set TimeZone = 'UTC'")
    found = [f for f in discover.discover(raw).files]
    for name in EVENT_STREAMS:
        stream = STREAMS[name]
        cols = [f.name for f in stream.fields]
        jsonl = [
            str(f.path) for f in found if f.stream == name and f.format in ("jsonl", "jsonl.gz")
        ]
        parquet = [str(f.path) for f in found if f.stream == name and f.format == "parquet"]
        sources = []
        if jsonl:
            spec = "{" + ", ".join(f"'{c}': 'VARCHAR'" for c in cols) + "}"
            sources.append(
                f"select {', '.join(cols)} from read_json({jsonl!r}, format='newline_delimited', "
                f"ignore_errors=true, columns={spec})"
            )
        if parquet:
            for p in parquet:
                try:
                    have = {
                        r[0]
                        for r in conn.execute(
                            f"describe select * from read_parquet('{p}')"
                        ).fetchall()
                    }
                except duckdb.Error:
                    continue
                sel = ", ".join(
                    f"{c}::varchar as {c}" if c in have else f"null::varchar as {c}" for c in cols
                )
                sources.append(f"select {sel} from read_parquet('{p}')")
        typed = []
        for f in stream.fields:
            if f.type == "int":
                expr = f"try_cast({f.name} as bigint)"
                if f.name == stream.key:
                    expr = f"({expr} + {NEW_KEY_OFFSET})"
            elif f.type == "ts":
                expr = f"strftime(try_cast({f.name} as timestamptz), '%Y-%m-%dT%H:%M:%S.%fZ')"
            else:
                expr = f.name
            typed.append(f"{expr} as {f.name}")
        valid = " and ".join(f"{f.name} is not null" for f in stream.fields if f.required)
        target = staged / name / "new" / "part-0000.jsonl"
        target.parent.mkdir(parents=True, exist_ok=True)
        conn.execute(
            f"copy (select * from (select {', '.join(typed)} from ({' union all '.join(sources)})) "
            f"where {valid} using sample 1 percent (bernoulli, 42)) to '{target}' (format json)"
        )
    conn.close()
    (staged / "done").write_text("")
    return staged


def place_new_events(raw: Path, staged: Path, present: bool) -> int:
    """Copy the staged new-event files into the raw folder (or remove them); returns event count."""
    lines = 0
    for name in EVENT_STREAMS:
        dest = raw / name / "new"
        if present:
            dest.mkdir(parents=True, exist_ok=True)
            src = staged / name / "new" / "part-0000.jsonl"
            shutil.copy2(src, dest / "part-0000.jsonl")
            with src.open("rb") as handle:
                lines += sum(1 for _ in handle)
        else:
            shutil.rmtree(dest, ignore_errors=True)
    return lines


def parse_floor(raw: Path, memory_limit: str | None) -> dict[str, Any]:
    """DuckDB alone counting the same raw files the pipeline loads (JSON parsed, Parquet counted)."""
    files = discover.discover(raw).files
    conn = duckdb.connect()
    conn.execute("set threads = 2")
    if memory_limit:
        conn.execute(f"set memory_limit = '{memory_limit}'")
    t0 = time.monotonic()
    total = 0
    failed: list[str] = []
    for name in sorted({f.stream for f in files}):
        jsonl = [str(f.path) for f in files if f.stream == name and f.format != "parquet"]
        parquet = [str(f.path) for f in files if f.stream == name and f.format == "parquet"]
        if jsonl:
            try:
                total += conn.execute(
                    f"select count(*) from read_json({jsonl!r}, format='newline_delimited', ignore_errors=true)"
                ).fetchone()[0]
            except duckdb.Error:
                for path in jsonl:  # a broken file (e.g. truncated gzip) fails the whole list
                    try:
                        total += conn.execute(
                            f"select count(*) from read_json('{path}', format='newline_delimited', "
                            "ignore_errors=true)"
                        ).fetchone()[0]
                    except duckdb.Error:
                        failed.append(path)
        for path in parquet:
            try:
                total += conn.execute(f"select count(*) from read_parquet('{path}')").fetchone()[0]
            except duckdb.Error:
                failed.append(path)
    seconds = time.monotonic() - t0
    conn.close()
    return {"seconds": seconds, "rows": total, "files": len(files), "unreadable_files": len(failed)}


def bench_builds(
    size: int, raw: Path, work: Path, env: dict[str, str], repeat: int, memory_limit: str | None
) -> dict:
    """Full build, floor and incremental 1%, `repeat` times each. Leaves the last warehouse."""
    staged = stage_new_events(raw)
    warehouse = work / f"wh-{size}"
    full, incr, floors = [], [], []
    new_events = 0
    for i in range(repeat):
        place_new_events(raw, staged, present=False)
        shutil.rmtree(warehouse, ignore_errors=True)
        warehouse.mkdir(parents=True)
        log(f"{size:,}: full build {i + 1}/{repeat} (load {loadavg()})")
        res = run_child(raw, warehouse, env)
        res["loadavg_after"] = loadavg()
        full.append(res)
        log(
            f"  full build {res['wall_s']:.1f}s, peak RSS {res['peak_rss_bytes'] / 2**20:.0f} MiB, "
            f"steps {res['summary']['seconds']}"
        )
        floor = parse_floor(raw, memory_limit)
        floors.append(floor)
        log(f"  parse-only floor {floor['seconds']:.1f}s ({floor['rows']:,} rows)")
        new_events = place_new_events(raw, staged, present=True)
        res = run_child(raw, warehouse, env)
        res["loadavg_after"] = loadavg()
        incr.append(res)
        log(
            f"  incremental (+{new_events:,} events) {res['wall_s']:.1f}s, "
            f"mode {res['summary']['transform_mode']}, steps {res['summary']['seconds']}"
        )
    # leave the new events in place: the warehouse now reflects them
    steps = ["ingest", "transform", "audit", "publish", "total"]
    full_wall = stats([r["wall_s"] for r in full])
    floor_s = stats([f["seconds"] for f in floors])
    incr_wall = stats([r["wall_s"] for r in incr])
    return {
        "warehouse": str(warehouse),
        "full_build": {
            "wall_s": full_wall,
            "process_s": stats([r["process_s"] for r in full]),
            "import_s": stats([r["import_s"] for r in full]),
            "events_per_s": size / full_wall["median"],
            "peak_rss_bytes": stats([r["peak_rss_bytes"] for r in full]),
            "peak_spill_bytes": max(r["peak_spill_bytes"] for r in full),
            "steps_s": {
                k: stats([r["summary"]["seconds"].get(k, 0.0) for r in full]) for k in steps
            },
            "transform_mode": [r["summary"]["transform_mode"] for r in full],
            "totals": full[-1]["summary"]["streams"],
            "loadavg_after": [r["loadavg_after"] for r in full],
        },
        "parse_floor": {
            **floors[-1],
            "seconds": floor_s,
            "build_over_floor": full_wall["median"] / floor_s["median"],
        },
        "incremental": {
            "new_events": new_events,
            "wall_s": incr_wall,
            "peak_rss_bytes": stats([r["peak_rss_bytes"] for r in incr]),
            "steps_s": {
                k: stats([r["summary"]["seconds"].get(k, 0.0) for r in incr]) for k in steps
            },
            "transform_mode": [r["summary"]["transform_mode"] for r in incr],
            "ratio_to_full": incr_wall["median"] / full_wall["median"],
            "partitions_written": [r["summary"]["partitions_written"] for r in incr],
            "partitions_reused": [r["summary"]["partitions_reused"] for r in incr],
            "loadavg_after": [r["loadavg_after"] for r in incr],
        },
    }


# ------------------------------------------------------------------------------- reader


def pick_targets(reader: Reader) -> dict[str, Any]:
    """Largest and median channel (rows in fct_reports) and organization (report_stats rows)."""
    conn = reader.snapshot().conn

    def q(sql: str, params: dict[str, Any]) -> list[tuple]:
        return conn.execute(sql, params).fetchall()

    chans = q(
        "select f.channel_id, c.account_id, count(*) as n from fct_reports f "
        "join dim_channels c using (channel_id) where not c.is_deleted group by all order by n desc, 1",
        {},
    )
    orgs = q(
        "select r.account_id, a.username, count(*) as n from report_stats r "
        "join dim_accounts a using (account_id) group by all order by n desc, 1",
        {},
    )
    picks = {"largest": chans[0], "typical": chans[len(chans) // 2]}
    channels = {}
    for label, (channel_id, account_id, n) in picks.items():
        fields = q(
            "select s.field_id, count(*) from fct_report_selections s join dim_fields f using (field_id) "
            f"where s.channel_id = $c and f.account_id = $a and f.field_type in {SELECTABLE_FIELD_TYPES!r} "
            "group by 1 order by 2 desc, 1 limit 1",
            {"c": channel_id, "a": account_id},
        )
        if not fields:
            fields = q(
                f"select field_id, 0 from dim_fields where account_id = $a and field_type in {SELECTABLE_FIELD_TYPES!r} "
                "order by 1 limit 1",
                {"a": account_id},
            )
        channels[label] = {
            "channel_id": channel_id,
            "account_id": account_id,
            "reports": n,
            "field_id": fields[0][0] if fields else None,
        }
    org_picks = {"largest": orgs[0], "typical": orgs[len(orgs) // 2]}
    organizations = {
        label: {"account_id": a, "organization": u, "reports": n}
        for label, (a, u, n) in org_picks.items()
    }
    lo, hi = q("select min(created_at), max(created_at) from fct_reports", {})[0]
    return {
        "channels": channels,
        "organizations": organizations,
        "span": [lo.isoformat(), hi.isoformat()],
        "n_channels": len(chans),
        "n_orgs": len(orgs),
    }


def iso(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def make_requests(targets: dict, n: int, seed: int) -> dict[str, list[tuple[str, int]]]:
    """Per cell (endpoint | channel | range), n request URLs with random non-aligned starts."""
    rng = random.Random(seed)
    lo = datetime.fromisoformat(targets["span"][0])
    hi = datetime.fromisoformat(targets["span"][1])
    cells: dict[str, list[tuple[str, int]]] = {}
    for label, ch in targets["channels"].items():
        for rname, width in (("1y", timedelta(days=365)), ("1d", timedelta(days=1))):
            room = max((hi - lo - width).total_seconds(), 0.0)
            for endpoint in ENDPOINTS:
                urls = []
                for _ in range(n):
                    start = lo + timedelta(
                        seconds=rng.uniform(0, room), microseconds=rng.randrange(1, 10**6)
                    )
                    end = start + width
                    query = (
                        f"channel_id={ch['channel_id']}&start_date={iso(start)}&end_date={iso(end)}"
                    )
                    if endpoint == "reports_per_field_selection":
                        query += f"&field_id={ch['field_id']}"
                    if endpoint == "reports_read":
                        query += "&fields=" + ",".join(READ_FIELDS)
                    if endpoint == "user_awareness":
                        query += "&fields=" + ",".join(AWARENESS_FIELDS)
                    urls.append((f"/api/v4/analytics/{endpoint}?{query}", ch["account_id"]))
                cells[f"{endpoint}|channel:{label}|{rname}"] = urls
    for label, org in targets["organizations"].items():
        urls = []
        for i in range(n):
            include = "&include_spaces=all" if i % 2 else ""
            pages = max(1, -(-org["reports"] // 1000))
            urls.append(
                (
                    f"/batch/{quote(org['organization'], safe='')}/report_stats?page={rng.randint(1, pages)}"
                    f"&per_page=1000{include}",
                    org["account_id"],
                )
            )
        cells[f"report_stats|org:{label}|-"] = urls
    return cells


def time_calls(fn, urls: list[tuple[str, int]], keep: int = 0) -> tuple[list[float], list[Any]]:
    """Latency of each call in ms, and the first `keep` answers (a server keeps none: holding
    every answer would grow the heap and make the garbage collector's pauses the measurement)."""
    lat, bodies = [], []
    for url, account in urls:
        t0 = time.perf_counter()
        status, body = fn(url, account)
        lat.append((time.perf_counter() - t0) * 1000)
        if status != 200:
            raise RuntimeError(f"{url} -> {status} {body}")
        if len(bodies) < keep:
            bodies.append(body)
        del body
    return lat, bodies


def rss_mib() -> float:
    """This process's resident set size in MiB."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bench_reader(
    warehouse: Path, work: Path, args: argparse.Namespace, env: dict[str, str]
) -> dict:
    reader = Reader(warehouse)
    targets = pick_targets(reader)
    log(f"  targets: {json.dumps(targets)}")
    cells = make_requests(targets, args.requests, seed=11)
    rss_before, t0 = rss_mib(), time.perf_counter()
    reader.warm()  # map the snapshot's serving segments (the server does this aside)
    index_load = {"seconds": time.perf_counter() - t0, "rss_mib": rss_mib() - rss_before}
    log(
        f"  serving index mapped in {index_load['seconds']:.2f} s, +{index_load['rss_mib']:.0f} MiB"
    )
    for urls in cells.values():
        for url, account in urls[:2]:
            reader.get(url, account)
    results: dict[str, dict] = {}
    log(f"  in-process reader: {len(cells)} cells x {args.requests} requests (load {loadavg()})")
    for cell, urls in cells.items():
        lat, _ = time_calls(reader.get, urls)
        results[cell] = {
            "inproc": {"p50": pct(lat, 50), "p99": pct(lat, 99), "max": max(lat), "n": len(lat)}
        }

    # on-the-fly SQL over a read-only copy of the writer database
    copy = work / "onthefly-copy.duckdb"
    shutil.copy2(warehouse / "_state" / "warehouse.duckdb", copy)
    as_of = json.loads((warehouse / "current" / "manifest.json").read_text())["as_of"]
    otf = OnTheFly(copy, as_of)
    checked = mismatched = 0
    mismatches: list[str] = []
    log(f"  on-the-fly SQL: {len(cells)} cells x {args.otf_requests} requests (load {loadavg()})")
    for cell, urls in cells.items():
        sub = urls[: args.otf_requests]
        otf.get(*sub[0])  # warm-up
        lat, bodies = time_calls(otf.get, sub, keep=3)
        for (url, account), body in zip(sub[: len(bodies)], bodies, strict=True):
            checked += 1
            if reader.get(url, account)[1] != body:
                mismatched += 1
                mismatches.append(url)
        results[cell]["onthefly"] = {
            "p50": pct(lat, 50),
            "p99": pct(lat, 99),
            "max": max(lat),
            "n": len(lat),
        }
        results[cell]["speedup_p50"] = (
            results[cell]["onthefly"]["p50"] / results[cell]["inproc"]["p50"]
        )
        results[cell]["speedup_p99"] = (
            results[cell]["onthefly"]["p99"] / results[cell]["inproc"]["p99"]
        )
    otf.close()
    copy.unlink()
    reader.close()
    log(f"  on-the-fly answers checked against the reader: {checked}, mismatched {mismatched}")

    http_info: dict[str, Any] = {"skipped": True}
    if not args.skip_http:
        http_info = bench_http(warehouse, cells, results, targets, args, env)
    return {
        "targets": targets,
        "requests_per_cell": {
            "inproc": args.requests,
            "onthefly": args.otf_requests,
            "http": args.http_requests,
        },
        "serving_index": index_load,
        "cells": results,
        "onthefly_check": {
            "checked": checked,
            "mismatched": mismatched,
            "examples": mismatches[:5],
        },
        "http": http_info,
        "loadavg_after": loadavg(),
    }


def bench_http(
    warehouse: Path,
    cells: dict,
    results: dict,
    targets: dict,
    args: argparse.Namespace,
    env: dict[str, str],
) -> dict:
    import httpx

    store = KeyStore(warehouse)
    accounts = {c["account_id"] for c in targets["channels"].values()} | {
        o["account_id"] for o in targets["organizations"].values()
    }
    secrets = {a: store.create(a)[1] for a in accounts}
    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "metrics_etl.cli",
            "serve",
            "--warehouse",
            str(warehouse),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        env=env,
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=base, timeout=900) as client:
            deadline = time.monotonic() + 60
            while True:
                try:
                    client.get("/docs")
                    break
                except httpx.TransportError:
                    if time.monotonic() > deadline or server.poll() is not None:
                        raise RuntimeError("HTTP server did not start") from None
                    time.sleep(0.2)

            def get(url: str, account: int) -> tuple[int, bytes]:
                """One request, timed to the last byte of the answer (decoding it is the
                client's work, as it is for the in-process reader's callers)."""
                r = client.get(url, headers={"Authorization": f"Bearer {secrets[account]}"})
                return r.status_code, r.content

            t0 = time.monotonic()
            for urls in cells.values():  # the first waits for the server's index to be loaded
                get(*urls[0])
            log(f"  HTTP server answering {time.monotonic() - t0:.1f} s after it accepted requests")
            log(f"  HTTP: {len(cells)} cells x {args.http_requests} requests (load {loadavg()})")
            for cell, urls in cells.items():
                lat, _ = time_calls(get, urls[: args.http_requests])
                results[cell]["http"] = {
                    "p50": pct(lat, 50),
                    "p99": pct(lat, 99),
                    "max": max(lat),
                    "n": len(lat),
                }
    finally:
        server.terminate()
        server.wait(timeout=30)
    return {
        "skipped": False,
        "server": "metrics-etl serve (uvicorn) on 127.0.0.1, httpx client, keep-alive",
    }


def bench_serving(warehouse: Path, env: dict[str, str]) -> dict:
    """benchmarks/serving.py on a warehouse: start-up, memory per worker, HTTP load with 1 and
    2 workers (its 1% switch needs fresh raw events: run it with --raw on its own)."""
    label = "segments"
    subprocess.run(
        [sys.executable, str(HERE / "serving.py"), str(warehouse), "--label", label],
        env=env,
        cwd=REPO,
        check=True,
    )
    return json.loads((HERE / "results" / f"serving-{label}-{warehouse.name}.json").read_text())


# ------------------------------------------------------------------------------- report


def machine() -> dict[str, Any]:
    mem = 0
    with open("/proc/meminfo") as handle:
        for line in handle:
            if line.startswith("MemTotal"):
                mem = int(line.split()[1]) * 1024
    cpu = ""
    with open("/proc/cpuinfo") as handle:
        for line in handle:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    import prefect

    return {
        "cores": os.cpu_count(),
        "cpu": cpu,
        "memory_bytes": mem,
        "python": platform.python_version(),
        "duckdb": duckdb.__version__,
        "prefect": prefect.__version__,
        "kernel": platform.release(),
    }


def mib(x: float) -> str:
    return f"{x / 2**20:,.0f} MiB"


def fmt_s(s: dict) -> str:
    return f"{s['median']:.2f} ({s['min']:.2f}–{s['max']:.2f})"


def reader_table(size: int, rd: dict) -> list[str]:
    """Markdown lines of one size's reader latency table."""
    out = [f"\n### Reader latency at {size:,} events (ms)\n"]
    rq = rd["requests_per_cell"]
    out.append(
        f"Requests per cell: in-process {rq['inproc']}, HTTP {rq['http']}, on-the-fly {rq['onthefly']}. "
        f"On-the-fly answers checked against the reader: {rd['onthefly_check']['checked']}, "
        f"mismatched {rd['onthefly_check']['mismatched']}. Serving index: mapped in "
        f"{rd['serving_index']['seconds']:.2f} s, +{rd['serving_index']['rss_mib']:,.0f} MiB.\n"
    )
    out.append(
        "| endpoint | target | range | in-proc p50 | in-proc p99 | HTTP p50 | HTTP p99 | "
        "on-the-fly p50 | on-the-fly p99 | speed-up p50 | speed-up p99 |"
    )
    out.append("|---|---|---|---|---|---|---|---|---|---|---|")
    for cell, v in rd["cells"].items():
        endpoint, target, rng = cell.split("|")
        h = v.get("http", {})
        o = v["onthefly"]
        out.append(
            f"| {endpoint} | {target} | {rng} | {v['inproc']['p50']:.1f} | {v['inproc']['p99']:.1f} | "
            f"{h.get('p50', float('nan')):.1f} | {h.get('p99', float('nan')):.1f} | {o['p50']:.1f} | "
            f"{o['p99']:.1f} | {v['speedup_p50']:.1f}× | {v['speedup_p99']:.1f}× |"
        )
    return out


def reader_extremes(rd: dict) -> tuple[float, float, float]:
    """Worst in-process p99, worst HTTP p99 and smallest p99 speed-up over a size's cells."""
    cells = rd.get("cells", {})
    worst = max((v["inproc"]["p99"] for v in cells.values()), default=float("nan"))
    worst_h = max(
        (v.get("http", {}).get("p99", float("nan")) for v in cells.values()),
        default=float("nan"),
    )
    min_sp = min((v["speedup_p99"] for v in cells.values()), default=float("nan"))
    return worst, worst_h, min_sp


def summarize(results_dir: Path) -> str:
    """Markdown tables from every results/<size>.json present."""
    runs = sorted(
        (json.loads(p.read_text()) for p in results_dir.glob("*.json") if p.stem.isdigit()),
        key=lambda r: r["size"],
    )
    out = []
    out.append("### Builds (median (min–max) over repeats; seconds)\n")
    out.append(
        "| events | repeats | full build | events/s | peak RSS | ingest | transform | audit | publish | "
        "parse-only floor | build/floor | incremental 1% | incr/full | incr mode |"
    )
    out.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in runs:
        if "full_build" not in r:
            continue
        fb, fl, inc = r["full_build"], r["parse_floor"], r["incremental"]
        st = fb["steps_s"]
        out.append(
            f"| {r['size']:,} | {fb['wall_s']['n']} | {fmt_s(fb['wall_s'])} | {fb['events_per_s']:,.0f} | "
            f"{mib(fb['peak_rss_bytes']['median'])} | {fmt_s(st['ingest'])} | {fmt_s(st['transform'])} | "
            f"{fmt_s(st['audit'])} | {fmt_s(st['publish'])} | {fmt_s(fl['seconds'])} | "
            f"{fl['build_over_floor']:.1f}× | {fmt_s(inc['wall_s'])} (+{inc['new_events']:,} events) | "
            f"{inc['ratio_to_full'] * 100:.1f}% | {','.join(sorted(set(inc['transform_mode'])))} |"
        )
    for r in runs:
        if "reader" in r:
            out += reader_table(r["size"], r["reader"])
    big = results_dir / "100m.json"
    b = json.loads(big.read_text()) if big.exists() else None
    if b and "reader" in b:
        out += reader_table(100_000_000, b["reader"])
    out.append("\n### Scaling\n")
    out.append(
        "| events | full build s | build/floor | incremental s | peak RSS | worst in-proc p99 ms | "
        "worst HTTP p99 ms | min speed-up p99 |"
    )
    out.append("|---|---|---|---|---|---|---|---|")
    for r in runs:
        if "full_build" not in r:
            continue
        worst, worst_h, min_sp = reader_extremes(r.get("reader", {}))
        out.append(
            f"| {r['size']:,} | {r['full_build']['wall_s']['median']:.1f} | "
            f"{r['parse_floor']['build_over_floor']:.1f}× | {r['incremental']['wall_s']['median']:.1f} | "
            f"{mib(r['full_build']['peak_rss_bytes']['median'])} | {worst:.1f} | {worst_h:.1f} | {min_sp:.1f}× |"
        )
    if b:
        worst, worst_h, min_sp = reader_extremes(b.get("reader", {}))
        floor = b.get("parse_floor", {}).get("seconds")
        ratio = f"{b['wall_s'] / floor:.1f}×" if floor else "-"
        out.append(
            f"| 100,000,000 (limit {b['memory_limit']}) | {b['wall_s']:.1f} | {ratio} | - | "
            f"{mib(b['peak_rss_bytes'])} | {worst:.1f} | {worst_h:.1f} | {min_sp:.1f}× |"
        )
        out.append("\n### 100M under a memory limit\n")
        out.append(
            f"memory limit {b['memory_limit']}: wall {b['wall_s']:.0f} s, peak RSS {mib(b['peak_rss_bytes'])}, "
            f"peak spill {mib(b['peak_spill_bytes'])}, steps {b['summary']['seconds']}"
        )
    return "\n".join(out)


# ------------------------------------------------------------------------------- main


def ensure_raw(work: Path, size: int) -> Path:
    raw = work / f"raw-{size}"
    if not (raw / "_generator.json").exists():
        log(f"generating {size:,} events into {raw} (not timed)")
        t0 = time.monotonic()
        generate(raw, size, 7)
        log(f"  generated in {time.monotonic() - t0:.0f}s")
    return raw


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="1000000,10000000", help="comma-separated event counts")
    parser.add_argument(
        "--repeat", type=int, default=3, help="runs per build measurement (median, min, max)"
    )
    parser.add_argument(
        "--repeat-large",
        type=int,
        default=None,
        help="repeats for sizes >= 10M (default: --repeat)",
    )
    parser.add_argument("--workdir", default=str(HERE / "work"), type=Path)
    parser.add_argument("--skip-http", action="store_true")
    parser.add_argument(
        "--skip-serving",
        action="store_true",
        help="skip benchmarks/serving.py (start-up, memory per worker, HTTP load with 1 and 2 "
        "workers) after each size's reader benchmarks",
    )
    parser.add_argument(
        "--skip-builds",
        action="store_true",
        help="reuse the warehouse left in --workdir by an earlier run (reader only)",
    )
    parser.add_argument("--include-100m", action="store_true")
    parser.add_argument(
        "--reader-100m",
        action="store_true",
        help="with --include-100m: also measure the reader on the 100M warehouse (~10 GiB index)",
    )
    parser.add_argument(
        "--memory-limit",
        default=None,
        help="METRICS_ETL_MEMORY_LIMIT for the builds (default: the pipeline's 4GB; 2GB for 100M)",
    )
    parser.add_argument(
        "--build-timeout", type=float, default=None, help="seconds before a build is abandoned"
    )
    parser.add_argument("--requests", type=int, default=200, help="in-process requests per cell")
    parser.add_argument("--http-requests", type=int, default=50, help="HTTP requests per cell")
    parser.add_argument(
        "--otf-requests", type=int, default=20, help="on-the-fly SQL requests per cell"
    )
    args = parser.parse_args()

    if args.build_timeout:
        BUILD_TIMEOUT.append(args.build_timeout)
    work = args.workdir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    results_dir = HERE / "results"
    results_dir.mkdir(exist_ok=True)
    sizes = [int(s) for s in args.sizes.split(",") if s]
    info = machine()
    log(f"machine {info}, load {loadavg()}")

    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    t0 = time.monotonic()
    with prefect_test_harness(server_startup_timeout=120):
        api_url = PREFECT_API_URL.value()
        prefect_start = time.monotonic() - t0
        log(
            f"Prefect test server at {api_url} started in {prefect_start:.1f}s (excluded from build times)"
        )
        env = dict(os.environ)
        env.update(
            {
                "PREFECT_API_URL": api_url,
                "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                "PYTHONPATH": str(REPO / "src"),
            }
        )
        if args.memory_limit:
            env["METRICS_ETL_MEMORY_LIMIT"] = args.memory_limit
        for size in sizes:
            raw = ensure_raw(work, size)
            path = results_dir / f"{size}.json"
            record: dict[str, Any] = {
                "size": size,
                "machine": info,
                "argv": sys.argv,
                "started": datetime.now(UTC).isoformat(),
                "loadavg_start": loadavg(),
                "prefect_startup_s": prefect_start,
                "memory_limit": args.memory_limit or "4GB (default)",
            }
            repeat = (
                args.repeat if size < 10_000_000 or args.repeat_large is None else args.repeat_large
            )
            if args.skip_builds and path.exists():
                old = json.loads(path.read_text())
                record.update(
                    {
                        k: old[k]
                        for k in ("full_build", "parse_floor", "incremental", "warehouse")
                        if k in old
                    }
                )
                warehouse = work / f"wh-{size}"
            else:
                record.update(bench_builds(size, raw, work, env, repeat, args.memory_limit))
                warehouse = Path(record["warehouse"])
                path.write_text(json.dumps(record, indent=1, default=str))
            log(f"{size:,}: reader benchmarks")
            record["reader"] = bench_reader(warehouse, work, args, env)
            if not args.skip_serving:
                record["serving"] = bench_serving(warehouse, env)
            record["loadavg_end"] = loadavg()
            path.write_text(json.dumps(record, indent=1, default=str))
        if args.include_100m:
            size = 100_000_000
            raw = ensure_raw(work, size)
            warehouse = work / "wh-100000000"
            big = results_dir / "100m.json"
            if args.skip_builds and big.exists() and (warehouse / "current").exists():
                res = json.loads(big.read_text())
            else:
                shutil.rmtree(warehouse, ignore_errors=True)
                warehouse.mkdir(parents=True)
                limit = args.memory_limit or "2GB"
                env100 = {**env, "METRICS_ETL_MEMORY_LIMIT": limit}
                log(f"100M: full build under METRICS_ETL_MEMORY_LIMIT={limit} (load {loadavg()})")
                res = run_child(raw, warehouse, env100)
                res.update(
                    {"memory_limit": limit, "raw_bytes": dir_size(raw), "loadavg_after": loadavg()}
                )
                log(
                    f"  100M: {res['wall_s']:.0f}s, peak RSS {mib(res['peak_rss_bytes'])}, "
                    f"peak spill {mib(res['peak_spill_bytes'])}"
                )
                res["parse_floor"] = parse_floor(raw, limit)
                log(f"  parse-only floor {res['parse_floor']['seconds']:.1f}s")
                big.write_text(json.dumps(res, indent=1, default=str))
            if args.reader_100m:
                log("100M: reader benchmarks")
                res["reader"] = bench_reader(warehouse, work, args, env)
                big.write_text(json.dumps(res, indent=1, default=str))
    table = summarize(results_dir)
    (results_dir / "summary.md").write_text(table + "\n")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
