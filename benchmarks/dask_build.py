"""The partitioned build on a local Dask cluster, side by side with the single-process build.

    .venv/bin/python benchmarks/dask_build.py [--events 1000000] [--rounds 1]
        [--configs single,1x1,1x2,1x4,2x1,2x2,2x4] [--json out.json]
    .venv/bin/python benchmarks/dask_build.py --incremental 1 [--configs single,2x2]

Generates raw data once, starts one Prefect server (its start-up not counted), then runs
`metrics-etl run` (a full build into a fresh warehouse) per configuration, alternating within
each round: `single` is today's build, `NxP` is `--workers N --partitions P`. For each run it
prints the wall time, the pipeline's step times, the writer's peak RSS, and for a partitioned
run the transform's steps, the shuffle bytes (raw by key, staged by channel, partition
outputs), and per step the slowest task and the peak RSS of each Dask worker process.

With `--incremental PERCENT`, each configuration builds in full, then ~PERCENT% new events per
event stream land (benchmarks/freshness.py's `stage`: a sample of existing events under fresh
keys, spread over the data's whole time range) in a hard-linked copy of the raw folder, and the
same configuration runs again, incrementally; both runs are printed.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import freshness

PY = sys.executable
AS_OF = "2018-02-01T00:00:00Z"


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(work: Path, env: dict[str, str]) -> tuple[subprocess.Popen[bytes], str]:
    """A Prefect server on 127.0.0.1 for every run (so no run pays a temporary server)."""
    port = free_port()
    log = (work / "server.log").open("wb")
    server = subprocess.Popen(
        [PY, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}/api"
    for _ in range(240):
        try:
            urllib.request.urlopen(f"{url}/health", timeout=2)
            return server, url
        except OSError:
            time.sleep(0.5)
    server.terminate()
    raise SystemExit("the Prefect server did not start; see " + str(work / "server.log"))


def run_once(raw: Path, warehouse: Path, config: str, env: dict[str, str], label: str = "") -> dict:
    """One full build in a fresh warehouse: wall time, step times, the writer's peak RSS."""
    args = [PY, "-m", "metrics_etl.cli", "run", "--raw", str(raw), "--warehouse", str(warehouse)]
    args += ["--as-of", AS_OF]
    if config != "single":
        workers, parts = config.split("x")
        args += ["--workers", workers, "--partitions", parts]
    started = time.monotonic()
    with open(warehouse.parent / f"{config}{label}.log", "wb") as log:
        child = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=log)
        assert child.stdout is not None
        out = child.stdout.read()
        _, status, usage = os.wait4(child.pid, 0)  # reaped here, to read its peak RSS
        child.returncode = os.waitstatus_to_exitcode(status)
    wall = time.monotonic() - started
    text = out.decode()
    if child.returncode != 0:
        raise SystemExit(f"{config} failed:\n{text}\nsee {warehouse.parent / f'{config}.log'}")
    result: dict = {"config": config + label, "wall_s": round(wall, 2)}
    line = next((x.strip() for x in text.splitlines() if x.strip().startswith("time:")), "")
    result["steps"] = line.removeprefix("time: ")
    result["writer_peak_rss_mib"] = round(_peak_rss(usage) / 2**20) if usage else None
    stats = warehouse / "_state" / "dask_build.json"
    if config != "single" and stats.exists():
        result["dask"] = json.loads(stats.read_text())
    return result


def _peak_rss(usage: object) -> int:
    """Peak RSS in bytes from a resource usage (ru_maxrss is in KiB on Linux)."""
    return int(getattr(usage, "ru_maxrss", 0)) * 1024


def describe(result: dict) -> str:
    """A run's lines for the console."""
    lines = [f"{result['config']:>6}: {result['wall_s']:7.1f} s wall; {result['steps']}"]
    if result.get("writer_peak_rss_mib"):
        lines[0] += f"; writer peak RSS {result['writer_peak_rss_mib']} MiB"
    dask = result.get("dask")
    if dask:
        steps = ", ".join(f"{k} {v:.1f}" for k, v in dask["seconds"].items())
        shuffle = ", ".join(f"{k} {v / 2**20:.1f} MiB" for k, v in dask["shuffle_bytes"].items())
        lines.append(f"        transform steps (s): {steps}")
        lines.append(f"        shuffle: {shuffle}")
        lines.append(
            f"        {dask.get('mode', 'full')}: {len(dask.get('dirty', []))} of "
            f"{dask['parts']} channel partitions built"
        )
        by_step: dict[str, list[dict]] = {}
        for t in dask["tasks"]:
            by_step.setdefault(t["name"].rsplit("-", 1)[0], []).append(t)
        for step, tasks in by_step.items():
            times = " ".join(f"{t['seconds']:.1f}" for t in tasks)
            lines.append(f"        {step} task s: {times}")
        peaks: dict[str, int] = {}
        for t in dask["tasks"]:
            peaks[t["worker"]] = max(peaks.get(t["worker"], 0), t["peak_rss_bytes"])
        lines.append(
            "        worker peak RSS MiB: " + " ".join(str(v // 2**20) for v in peaks.values())
        )
    return "\n".join(lines)


def main() -> int:
    """Generate, then run each configuration per round, alternating; print and save figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--configs", default="single,1x1,1x2,1x4,2x1,2x2,2x4")
    parser.add_argument("--raw", type=Path, default=None, help="use this raw folder")
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    parser.add_argument(
        "--incremental", type=float, default=0.0, help="then land this %% of new events, run again"
    )
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="metrics-etl-dask-bench-"))
    env = {
        **os.environ,
        "PREFECT_HOME": str(work / "prefect"),
        "DO_NOT_TRACK": "1",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }
    raw = args.raw or work / "raw"
    if args.raw is None:
        subprocess.run(
            [
                PY,
                "-m",
                "metrics_etl.cli",
                "generate",
                "--raw",
                str(raw),
                "--events",
                str(args.events),
            ],
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
        )
    server, url = start_server(work, env)
    env["PREFECT_API_URL"] = url
    results = []
    try:
        size = f"raw {args.raw}" if args.raw else f"{args.events:,} events"
        print(f"{size}, cpu count {os.cpu_count()}, load {os.getloadavg()}")
        for round_ in range(1, args.rounds + 1):
            for config in args.configs.split(","):
                warehouse = work / f"wh-{config}"
                subprocess.run(["rm", "-rf", str(warehouse)], check=True)
                source = raw
                if args.incremental:  # a copy of the raw folder the new events land in
                    source = work / f"raw-{config}"
                    subprocess.run(["rm", "-rf", str(source)], check=True)
                    subprocess.run(["cp", "-al", str(raw), str(source)], check=True)
                result = run_once(source, warehouse, config, env)
                result["round"] = round_
                result["load"] = os.getloadavg()[0]
                results.append(result)
                print(describe(result), flush=True)
                if args.incremental:
                    staged = work / f"staged-{round_}"
                    if not staged.exists():
                        result["new_lines"] = freshness.stage(
                            raw, staged, args.incremental, False, round_
                        )
                    freshness.land(staged, source)
                    result = run_once(source, warehouse, config, env, "+inc")
                    result["round"] = round_
                    result["load"] = os.getloadavg()[0]
                    results.append(result)
                    print(describe(result), flush=True)
                    subprocess.run(["rm", "-rf", str(source)], check=True)
                subprocess.run(["rm", "-rf", str(warehouse)], check=True)
    finally:
        server.terminate()
        server.wait(timeout=30)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
