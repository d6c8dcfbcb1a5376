"""Fixed overhead of the CLI: the commands that run no flow, a run with nothing new, and the
smallest real run (one new file), against a running Prefect server and against Prefect's
temporary server, side by side in one run.

    uv run python benchmarks/overhead.py --repeat 5

Every figure is the wall time of a whole `metrics-etl` process, as a user or a scheduler sees it.
Results: benchmarks/results/overhead.json and a markdown table on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
CLI = [sys.executable, "-m", "metrics_etl.cli"]


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def timed(args: list[str], env: dict[str, str]) -> float:
    """Wall seconds of one command, which must succeed."""
    started = time.perf_counter()
    done = subprocess.run(args, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{done.stderr[-2000:]}")
    return seconds


def start_server(home: Path, env: dict[str, str]) -> tuple[subprocess.Popen, str]:
    """`prefect server start` on a free port; returns the process and its API URL."""
    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "prefect",
            "server",
            "start",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        env={**env, "PREFECT_HOME": str(home)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/api"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return server, url
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    server.kill()
    raise SystemExit("the Prefect server did not start within 180 s")


def summary(samples: list[float]) -> dict[str, float]:
    """Median, min and max of samples, in seconds."""
    return {
        "median": round(statistics.median(samples), 3),
        "min": round(min(samples), 3),
        "max": round(max(samples), 3),
    }


def main() -> None:
    """Measure every command `repeat` times, interleaved, and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--events", type=int, default=20_000)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="metrics-etl-overhead-"))
    raw, wh = work / "raw", work / "wh"
    env = {
        **os.environ,
        "PREFECT_HOME": str(work / "prefect-home"),
        "DO_NOT_TRACK": "1",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }
    env.pop("PREFECT_API_URL", None)
    server, url = start_server(work / "server-home", env)
    served = {**env, "PREFECT_API_URL": url}
    try:
        subprocess.run(
            [*CLI, "generate", "--raw", str(raw), "--events", str(args.events)],
            env=env,
            check=True,
            capture_output=True,
        )
        subprocess.run(
            [*CLI, "run", "--raw", str(raw), "--warehouse", str(wh)],
            env=served,
            check=True,
            capture_output=True,
        )
        channel = (
            subprocess.run(
                [
                    *CLI,
                    "sql",
                    "--warehouse",
                    str(wh),
                    "--format",
                    "csv",
                    "select channel_id, account_id from dim_channels limit 1",
                ],
                env=env,
                check=True,
                capture_output=True,
                text=True,
            )
            .stdout.splitlines()[1]
            .split(",")
        )
        path = f"/api/v4/analytics/reports_per_user?channel_id={channel[0]}&start_date=2016-01-01&end_date=2018-01-01"
        subprocess.run(
            [*CLI, "keys", "create", "--warehouse", str(wh), "--account-id", channel[1]],
            env=env,
            check=True,
            capture_output=True,
        )
        commands: dict[str, tuple[list[str], dict[str, str]]] = {
            "--help": ([*CLI, "--help"], env),
            "sql": ([*CLI, "sql", "--warehouse", str(wh), "select count(*) from runs"], env),
            "get": ([*CLI, "get", "--warehouse", str(wh), "--account-id", channel[1], path], env),
            "keys list": ([*CLI, "keys", "list", "--warehouse", str(wh)], env),
            "run, nothing new (running server)": (
                [*CLI, "run", "--raw", str(raw), "--warehouse", str(wh)],
                served,
            ),
            "run, one new file (running server)": (
                [*CLI, "run", "--raw", str(raw), "--warehouse", str(wh)],
                served,
            ),
            "run, one new file (temporary server)": (
                [*CLI, "run", "--raw", str(raw), "--warehouse", str(wh)],
                env,
            ),
            "python -c 'import prefect'": ([sys.executable, "-c", "import prefect"], env),
        }
        samples: dict[str, list[float]] = {name: [] for name in commands}
        for repeat in range(args.repeat):
            for name, (command, command_env) in commands.items():
                if "one new file" in name:
                    new = (
                        raw / "reads" / f"overhead-{name[-16:-1].replace(' ', '-')}-{repeat}.jsonl"
                    )
                    new.write_text(
                        json.dumps(
                            {
                                "read_id": 10**12 + len(list(raw.glob("reads/overhead-*"))),
                                "account_id": 1,
                                "report_id": 1,
                                "user_id": 1,
                                "read_at": "2017-01-01T00:00:00Z",
                            }
                        )
                        + "\n"
                    )
                samples[name].append(timed(command, command_env))
        results = {name: summary(values) for name, values in samples.items()}
    finally:
        server.terminate()
        server.wait(timeout=60)
        shutil.rmtree(work, ignore_errors=True)
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / "overhead.json").write_text(
        json.dumps({"repeat": args.repeat, "events": args.events, "seconds": results}, indent=1)
    )
    print(f"| command ({args.repeat} runs, interleaved) | median s | min s | max s |")
    print("| --- | --- | --- | --- |")
    for name, figures in results.items():
        print(
            f"| `{name}` | {figures['median']:.2f} | {figures['min']:.2f} | {figures['max']:.2f} |"
        )


if __name__ == "__main__":
    main()
