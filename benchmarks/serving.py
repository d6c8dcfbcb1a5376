"""Serving benchmarks (issue 13): start-up to first answer, memory per worker, switch after a 1%
incremental run, HTTP throughput and latency with 1 and 2 workers, in-process latency per
endpoint and its ratio to on-the-fly SQL.

    uv run python benchmarks/serving.py WAREHOUSE --label segments [--raw RAW] [--onthefly]
    PYTHONPATH=OLD/src uv run python benchmarks/serving.py WAREHOUSE --label in-memory --workers 1

It measures whatever `metrics_etl` it imports (and starts `metrics-etl serve` with the same
PYTHONPATH), so the same script measures the in-memory index of an older commit side by side.
`--raw` also runs a 1% incremental build (new code only) while a server answers, and times the
switch. Results: benchmarks/results/serving-<label>-<warehouse name>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from metrics_etl.serve.http import settle_heap  # noqa: E402
from metrics_etl.serve.keys import KeyStore  # noqa: E402
from metrics_etl.serve.reader import Reader  # noqa: E402
from run import (  # noqa: E402
    free_port,
    loadavg,
    log,
    make_requests,
    pct,
    pick_targets,
    place_new_events,
    rss_mib,
    stage_new_events,
    time_calls,
)

SMAPS_KEYS = (
    "Rss",
    "Pss",
    "Pss_Anon",
    "Pss_File",
    "Shared_Clean",
    "Private_Clean",
    "Private_Dirty",
)


def smaps(pid: int) -> dict[str, float]:
    """A process's memory in MiB from /proc/<pid>/smaps_rollup; USS = private clean + dirty."""
    out: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        key, value = line.split(":", 1)
        if key in SMAPS_KEYS:
            out[key] = int(value.split()[0]) / 1024
    out["USS"] = out["Private_Clean"] + out["Private_Dirty"]
    return out


def worker_pids(server: subprocess.Popen) -> list[int]:
    """The processes answering requests: uvicorn's spawned workers, or the server itself."""
    text = Path(f"/proc/{server.pid}/task/{server.pid}/children").read_text()
    found = []
    for pid in map(int, text.split()):
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            if b"spawn_main" in handle.read():
                found.append(pid)
    return found or [server.pid]


def start_server(warehouse: Path, workers: int) -> tuple[subprocess.Popen, int, float]:
    """`metrics-etl serve` on a free port; returns the process, port and start time."""
    port = free_port()
    command = [sys.executable, "-m", "metrics_etl.cli", "serve", "--warehouse", str(warehouse)]
    command += ["--host", "127.0.0.1", "--port", str(port)]
    if workers > 1:
        command += ["--workers", str(workers)]
    started = time.monotonic()
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return server, port, started


def first_answer(
    port: int, url: str, secret: str, expected: Any, started: float, server: subprocess.Popen
) -> dict[str, float]:
    """Poll until the server accepts connections (its /docs page answers), then until it gives
    the expected answer to a real request."""
    headers = {"Authorization": f"Bearer {secret}"}
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=900) as client:
        while True:
            if server.poll() is not None:
                raise RuntimeError("server exited")
            try:
                client.get("/docs")
                break
            except httpx.TransportError:
                time.sleep(0.005)
        accepted = time.monotonic()
        while True:
            response = client.get(url, headers=headers)
            now = time.monotonic()
            if response.status_code == 200 and response.json() == expected:
                return {"from_process_start_s": now - started, "from_accepting_s": now - accepted}
            time.sleep(0.005)


async def _client(
    port: int, requests: list[bytes], until: float, latencies: list[float], errors: list[str]
) -> None:
    """One keep-alive HTTP/1.1 connection sending requests in turn until a deadline."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    i = 0
    while time.monotonic() < until:
        raw = requests[i % len(requests)]
        i += 1
        t0 = time.perf_counter()
        writer.write(raw)
        head = await reader.readuntil(b"\r\n\r\n")
        status = head.split(b" ", 2)[1]
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        await reader.readexactly(length)
        latencies.append((time.perf_counter() - t0) * 1000)
        if status != b"200":
            errors.append(status.decode())
    writer.close()


def http_load(port: int, requests: list[tuple[str, str]], clients: int, seconds: float) -> dict:
    """Throughput and latency of `clients` concurrent keep-alive connections for `seconds`."""
    encoded = [
        f"GET {url} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {secret}\r\n\r\n".encode()
        for url, secret in requests
    ]
    latencies: list[float] = []
    errors: list[str] = []

    async def main() -> None:
        until = time.monotonic() + seconds
        shuffled = []
        for k in range(clients):
            mine = encoded[:]
            random.Random(k).shuffle(mine)
            shuffled.append(mine)
        await asyncio.gather(*(_client(port, r, until, latencies, errors) for r in shuffled))

    t0 = time.monotonic()
    asyncio.run(main())
    elapsed = time.monotonic() - t0
    return {
        "clients": clients,
        "requests": len(latencies),
        "errors": len(errors),
        "per_s": len(latencies) / elapsed,
        "p50": pct(latencies, 50),
        "p99": pct(latencies, 99),
    }


def switch_after_incremental(
    warehouse: Path,
    raw: Path,
    port: int,
    server: subprocess.Popen,
    watch: list[tuple[str, str, int]],
) -> dict:
    """Run a 1% incremental build while the server answers; time from `current` moving to the
    server answering every watched request from the new snapshot, and the memory meanwhile."""
    staged = stage_new_events(raw)
    new_events = place_new_events(raw, staged, present=True)
    link = warehouse / "current"
    before_link = os.readlink(link)
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=900)

    def answers() -> list[Any]:
        out = []
        for url, secret, _ in watch:
            response = client.get(url, headers={"Authorization": f"Bearer {secret}"})
            out.append(response.json())
        return out

    old = answers()
    pids = worker_pids(server)
    memory_before = {pid: smaps(pid) for pid in pids}
    env = {**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1"}
    env.setdefault("PREFECT_HOME", str(warehouse.parent / "prefect-home"))
    build = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "metrics_etl.cli",
            "run",
            "--raw",
            str(raw),
            "--warehouse",
            str(warehouse),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    moved_at = None
    while moved_at is None:
        if os.readlink(link) != before_link:
            moved_at = time.monotonic()
        elif build.poll() is not None:
            raise RuntimeError(
                f"incremental build ended without publishing: {build.stdout.read()!r}"
            )
        else:
            time.sleep(0.002)
    peak = {pid: 0.0 for pid in pids}
    polls: list[tuple[float, list[Any]]] = []
    expected = None
    while True:  # poll until the build has ended and the answers are those of its snapshot
        polls.append((time.monotonic(), answers()))
        for pid in pids:
            peak[pid] = max(peak[pid], smaps(pid)["USS"])
        if expected is None and build.poll() is not None:
            reader = Reader(warehouse)
            expected = [reader.get(url, account)[1] for url, _, account in watch]
            reader.close()
        if expected is not None and polls[-1][1] == expected:
            break
        if time.monotonic() - moved_at > 600:
            raise RuntimeError("the server did not switch within 600 s")
    output = build.communicate()[0].decode(errors="replace")
    client.close()
    changed = next(t for t, got in polls if got != old)
    served = next(t for t, got in polls if got == expected)
    mixed = [got for _, got in polls if got not in (old, expected)]
    summary = [line for line in output.splitlines() if "time:" in line or "published" in line]
    return {
        "new_events": new_events,
        "first_changed_answer_s": changed - moved_at,
        "switch_s": served - moved_at,
        "polls": len(polls),
        "polls_neither_old_nor_new": len(mixed),
        "uss_before_mib": {str(p): memory_before[p]["USS"] for p in pids},
        "uss_peak_during_switch_mib": {str(p): peak[p] for p in pids},
        "uss_after_mib": {str(p): smaps(p)["USS"] for p in pids},
        "build_summary": summary,
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("warehouse", type=Path)
    parser.add_argument(
        "--label", required=True, help="names the results file (segments, in-memory)"
    )
    parser.add_argument("--workers", default="1,2", help="worker counts for the HTTP load")
    parser.add_argument("--clients", default="1,8,32", help="concurrent HTTP clients")
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds per HTTP load cell")
    parser.add_argument("--requests", type=int, default=200, help="in-process requests per cell")
    parser.add_argument("--onthefly", type=int, default=0, help="on-the-fly SQL requests per cell")
    parser.add_argument("--raw", type=Path, default=None, help="run a 1% incremental build from it")
    args = parser.parse_args()
    warehouse = args.warehouse.resolve()
    out = HERE / "results" / f"serving-{args.label}-{warehouse.name}.json"
    out.parent.mkdir(exist_ok=True)
    result: dict[str, Any] = {
        "label": args.label,
        "warehouse": str(warehouse),
        "load_start": loadavg(),
    }

    # in-process: open, first answer, per-cell latency (and on-the-fly SQL)
    rss0, t0 = rss_mib(), time.perf_counter()
    reader = Reader(warehouse)
    targets = pick_targets(reader)  # SQL over the snapshot's Parquet (not part of serving)
    cells = make_requests(targets, args.requests, seed=11)
    reader.close()
    reader = Reader(warehouse)
    rss0, t0 = rss_mib(), time.perf_counter()
    first_url, first_account = cells["user_awareness|channel:largest|1y"][0]
    _status, expected_first = reader.get(first_url, first_account)
    result["inproc_first_answer_s"] = time.perf_counter() - t0
    reader.warm()
    result["inproc_warm_s"] = time.perf_counter() - t0
    result["inproc_rss_after_warm_mib"] = rss_mib() - rss0
    log(
        f"{args.label}: first in-process answer {result['inproc_first_answer_s']:.3f} s, warm {result['inproc_warm_s']:.2f} s"
    )
    for urls in cells.values():
        for url, account in urls[:2]:
            reader.get(url, account)
    settle_heap()  # as the server does once it serves a snapshot
    cell_results: dict[str, dict] = {}
    for cell, urls in cells.items():
        lat, _ = time_calls(reader.get, urls)
        cell_results[cell] = {"inproc": {"p50": pct(lat, 50), "p99": pct(lat, 99), "max": max(lat)}}
    result["inproc_rss_after_traffic_mib"] = rss_mib() - rss0
    result["inproc_smaps_after_traffic"] = smaps(os.getpid())
    if args.onthefly:
        from onthefly import OnTheFly

        copy = warehouse.parent / f"onthefly-{args.label}.duckdb"
        shutil.copy2(warehouse / "_state" / "warehouse.duckdb", copy)
        as_of = json.loads((warehouse / "current" / "manifest.json").read_text())["as_of"]
        otf = OnTheFly(copy, as_of)
        mismatched = 0
        for cell, urls in cells.items():
            sub = urls[: args.onthefly]
            otf.get(*sub[0])
            lat, bodies = time_calls(otf.get, sub, keep=2)
            for (url, account), body in zip(sub, bodies, strict=False):
                mismatched += reader.get(url, account)[1] != body
            o = {"p50": pct(lat, 50), "p99": pct(lat, 99)}
            cell_results[cell]["onthefly"] = o
            cell_results[cell]["speedup_p50"] = o["p50"] / cell_results[cell]["inproc"]["p50"]
        otf.close()
        copy.unlink()
        result["onthefly_mismatched"] = mismatched
    result["cells"] = cell_results
    reader.close()

    # HTTP: start-up, memory after mixed traffic, load at 1/8/32 clients, per worker count
    store = KeyStore(warehouse)
    accounts = {a for urls in cells.values() for _, a in urls}
    secrets = {a: store.create(a)[1] for a in accounts}
    mixed = [(url, secrets[a]) for urls in cells.values() for url, a in urls[:20]]
    result["http"] = {}
    for workers in [int(w) for w in args.workers.split(",") if w]:  # "": no HTTP
        with_reader = Reader(
            warehouse
        )  # the answer of the snapshot current now (a run may have moved it)
        expected_first = with_reader.get(first_url, first_account)[1]
        with_reader.close()
        server, port, started = start_server(warehouse, workers)
        try:
            startup = first_answer(
                port, first_url, secrets[first_account], expected_first, started, server
            )
            log(f"{args.label}, {workers} worker(s): first answer {startup}")
            time.sleep(1.0)  # let every worker finish starting
            pids = worker_pids(server)
            http_load(port, mixed, 8, 5.0)  # warm-up with mixed traffic
            memory = {str(p): smaps(p) for p in pids}
            log(
                f"  USS per worker {[round(m['USS']) for m in memory.values()]} MiB, PSS {[round(m['Pss']) for m in memory.values()]} MiB"
            )
            loads = []
            for clients in [int(c) for c in args.clients.split(",")]:
                cell = http_load(port, mixed, clients, args.seconds)
                loads.append(cell)
                log(
                    f"  {clients} clients: {cell['per_s']:.0f}/s p50 {cell['p50']:.1f} ms p99 {cell['p99']:.1f} ms errors {cell['errors']}"
                )
            result["http"][str(workers)] = {
                "startup": startup,
                "memory_after_warmup": memory,
                "memory_after_load": {str(p): smaps(p) for p in pids},
                "load": loads,
            }
            if args.raw is not None and workers == 1:
                watch_cells = [
                    "reports_read|channel:largest|1y",
                    "reports_read|channel:typical|1y",
                    "report_stats|org:largest|-",
                ]
                watch = [
                    (cells[c][0][0], secrets[cells[c][0][1]], cells[c][0][1]) for c in watch_cells
                ]
                result["switch"] = switch_after_incremental(
                    warehouse, args.raw, port, server, watch
                )
                log(f"  switch after a 1% incremental run: {result['switch']}")
        finally:
            server.terminate()
            server.wait(timeout=60)
        out.write_text(json.dumps(result, indent=1, default=str))  # what is measured so far
    result["load_end"] = loadavg()
    out.write_text(json.dumps(result, indent=1, default=str))
    log(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
