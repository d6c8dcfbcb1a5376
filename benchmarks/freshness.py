"""Freshness in the production set-up: from a new raw file landing until the API answers with it.

    uv run python benchmarks/freshness.py --sizes 1000000,10000000 --rounds 3

A Prefect server (`prefect server start`) and `metrics-etl serve` run throughout, as in
production. Per size: one full build (the scale to compare against), then rounds of two cases:

- `1% spread`: ~1% new events per event stream, at times spread over the whole data;
- `0.1% recent`: ~0.1% new events per event stream, all within the last hour of the data (what
  a scheduled run usually finds).

Each round lands its files and has them run in one of two ways (`--modes`):

- `run`: a `metrics-etl run` process per run (PREFECT_API_URL set), as cron would;
- `watch`: a `metrics-etl watch --poll 0.1` process that stays up and runs the flow in-process
  when files land (the start-up is paid once).

It polls the API until it answers from the run's snapshot (the `X-Snapshot-Id` header names it).
The time from landing to that answer is split into the pipeline's steps up to its publish (from
the run's summary in the `runs` table), the server's switch (from the snapshot's publish until
the first answer from it), and the rest, `outside`: process start-up and Prefect's flow run (run),
or the poll and Prefect's flow run (watch). Results: benchmarks/results/freshness.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import duckdb
import httpx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from metrics_etl.contract import STREAMS  # noqa: E402
from metrics_etl.ingest import discover  # noqa: E402
from overhead import free_port, start_server  # noqa: E402
from run import EVENT_STREAMS, ensure_raw, log  # noqa: E402

CLI = [sys.executable, "-m", "metrics_etl.cli"]
STEPS = ("ingest", "transform", "audit", "publish")  # up to the switch (clean-up comes after)
MODES = ("run", "watch")
POLL_S = 0.1  # the watch's poll interval
CASES = {"1% spread": (1.0, False), "0.1% recent": (0.1, True)}
KEY_OFFSET = 2_000_000_000_000  # new events' keys: above every generated key, one range per round


def stage(raw: Path, out: Path, percent: float, recent: bool, round_no: int) -> int:
    """Write new events (a sample of existing ones under fresh keys) as one JSONL file per
    event stream under `out`; recent ones are moved into the data's last hour. Returns lines."""
    conn = duckdb.connect()
    conn.execute("set TimeZone = 'UTC'")
    files = discover.discover(raw).files
    summary = raw / "_generator.json"
    records = json.loads(summary.read_text())["records"] if summary.exists() else {}
    lines = 0
    for name in EVENT_STREAMS:
        stream = STREAMS[name]
        parquet = [str(f.path) for f in files if f.stream == name and f.format == "parquet"]
        if not parquet:
            continue
        # the generator writes each stream in every format; its Parquet files suffice to sample,
        # at the rate that gives `percent` of the stream's records in all formats
        source = f"read_parquet({parquet!r}, union_by_name = true)"
        in_parquet = conn.execute(f"select count(*) from {source}").fetchall()[0][0]
        rate = min(100.0, percent * records.get(name, in_parquet) / max(in_parquet, 1))
        ts = next(f.name for f in stream.fields if f.type == "ts")
        last = conn.execute(
            f"select max(try_cast({ts} as timestamptz)) from {source} "
            f"where try_cast({ts} as timestamptz) < '2100-01-01'"
        ).fetchall()[0][0]
        typed = []
        for f in stream.fields:
            expr = f.name
            if f.type == "int":
                expr = f"try_cast({f.name} as bigint)"
                if f.name == stream.key:
                    expr = f"({expr} + {KEY_OFFSET * (round_no + 1)})"
            elif f.type == "ts":
                value = f"try_cast({f.name} as timestamptz)"
                if recent and f.name == ts:
                    # our own value, not user input: a literal is fine (COPY takes no parameters)
                    value = f"'{last.isoformat()}'::timestamptz - to_microseconds((random() * 3.6e9)::bigint)"
                expr = f"strftime({value}, '%Y-%m-%dT%H:%M:%S.%fZ')"
            typed.append(f"{expr} as {f.name}")
        valid = " and ".join(f"{f.name} is not null" for f in stream.fields if f.required)
        target = out / name / f"fresh-{round_no:03d}.jsonl"
        target.parent.mkdir(parents=True, exist_ok=True)
        conn.execute(
            f"copy (select * from (select {', '.join(typed)} from {source}) where {valid} "
            f"using sample {rate} percent (bernoulli, {round_no})) to '{target}' (format json)"
        )
        with target.open("rb") as handle:
            lines += sum(1 for _ in handle)
    conn.close()
    return lines


def run_seconds(warehouse: Path, snapshot: str) -> dict[str, float]:
    """The pipeline's step times of the run that published a snapshot (its `runs` row)."""
    conn = duckdb.connect()
    rows = conn.execute(
        "select summary from read_parquet(?) where snapshot_id = ?",
        [str(warehouse / "snapshots" / snapshot / "tables" / "runs" / "*.parquet"), snapshot],
    ).fetchall()
    conn.close()
    return json.loads(rows[0][0])["seconds"]


def served_snapshot(base: str, key: str, path: str) -> str | None:
    """The snapshot id the API answered from, or None when it does not answer yet."""
    try:
        answer = httpx.get(base + path, headers={"Authorization": f"Bearer {key}"}, timeout=5)
    except httpx.TransportError:
        return None
    return answer.headers.get("x-snapshot-id") if answer.status_code == 200 else None


def first_new_answer(probe: tuple[str, str, str], old: str | None, stop: threading.Event) -> dict:
    """Poll the API every 10 ms; note when (monotonic and wall clock) it first answers from a
    snapshot other than `old`, and which."""
    seen: dict[str, Any] = {}

    def poll() -> None:
        while not stop.is_set():
            snapshot = served_snapshot(*probe)
            if snapshot is not None and snapshot != old:
                seen.update(snapshot=snapshot, at=time.monotonic(), wall=time.time())
                return
            time.sleep(0.01)

    seen["thread"] = threading.Thread(target=poll, daemon=True)
    seen["thread"].start()
    return seen


def land(staged: Path, raw: Path) -> None:
    """Move staged files into the raw folder, each landing whole (renamed into place)."""
    for src in staged.rglob("*.jsonl"):
        dest = raw / src.relative_to(staged)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dest.with_suffix(".tmp"))
        os.replace(dest.with_suffix(".tmp"), dest)


class Watcher:
    """A `metrics-etl watch` process; counts the runs it has finished (from its output)."""

    def __init__(self, raw: Path, warehouse: Path, env: dict[str, str], log: Path) -> None:
        self.log = log
        with log.open("wb") as out:
            self.process = subprocess.Popen(
                [*CLI, "watch", "--raw", str(raw), "--warehouse", str(warehouse), "--poll", str(POLL_S)],
                env=env, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip

    def finished(self) -> int:
        """Runs finished so far (each prints a summary with its `time:` line)."""
        return self.log.read_text(errors="replace").count("  time: ")

    def wait_for_run(self, count: int, timeout: float = 600) -> None:
        """Wait until `count` runs have finished."""
        deadline = time.monotonic() + timeout
        while self.finished() < count:
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(
                    f"metrics-etl watch stopped or stalled:\n{self.log.read_text()[-3000:]}"
                )
            time.sleep(0.05)

    def stop(self) -> None:
        """SIGTERM, then wait."""
        self.process.terminate()
        self.process.wait(timeout=120)


def one_round(
    mode: str,
    raw: Path,
    warehouse: Path,
    env: dict[str, str],
    probe: tuple[str, str, str],
    staged: Path,
    watcher: Watcher | None,
) -> dict[str, Any]:
    """Land staged files, have them run (a `metrics-etl run` process, or the running watch), and
    note when the API first answers from the new snapshot (polled from the moment the files land,
    so the switch is timed while the run ends)."""
    stop = threading.Event()
    seen = first_new_answer(probe, served_snapshot(*probe), stop)
    before = watcher.finished() if watcher else 0
    land(staged, raw)
    landed, landed_wall = time.monotonic(), time.time()
    if watcher is None:
        done = subprocess.run(
            [*CLI, "run", "--raw", str(raw), "--warehouse", str(warehouse)],
            env=env, capture_output=True, text=True,
        )  # fmt: skip
        if done.returncode != 0:
            stop.set()
            raise SystemExit(
                f"metrics-etl run failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
            )
    else:
        watcher.wait_for_run(before + 1)
    ran = time.monotonic()
    snapshot = Path(os.readlink(warehouse / "current")).name
    # the manifest is the publish's last write before `current` switches (wall clock)
    published = (warehouse / "current" / "manifest.json").stat().st_mtime
    seen["thread"].join(timeout=300)
    stop.set()
    if seen.get("snapshot") != snapshot:
        raise SystemExit(f"the server did not answer from {snapshot} within 300 s")
    seconds = run_seconds(warehouse, snapshot)
    steps = {f"{step}_s": seconds.get(step, 0.0) for step in STEPS}
    segments = seconds.get("segments", 0.0)  # part of publish
    freshness = seen["at"] - landed
    switch = max(0.0, seen["wall"] - published)
    before_publish = sum(steps.values())
    return {
        "freshness_s": freshness,
        "run_wall_s": ran - landed,
        # landing to the first answer, less the pipeline's steps to its publish and the switch:
        # process start-up and Prefect's flow run (run), or the poll and Prefect's flow run (watch)
        "outside_s": max(0.0, freshness - before_publish - switch),
        "published_after_s": published - landed_wall,
        **steps,
        "segments_s": segments,
        "switch_s": switch,
        "snapshot": snapshot,
    }


def bench_size(
    size: int, work: Path, rounds: int, env: dict[str, str], modes: list[str]
) -> dict[str, Any]:
    """One size: a full build, then rounds of each case against a running server."""
    raw = ensure_raw(work, size)
    warehouse = work / f"fresh-wh-{size}"
    shutil.rmtree(warehouse, ignore_errors=True)
    for leftover in raw.rglob("fresh-*.jsonl"):
        leftover.unlink()
    log(f"{size:,}: full build")
    started = time.monotonic()
    subprocess.run(
        [*CLI, "run", "--raw", str(raw), "--warehouse", str(warehouse)],
        env=env, check=True, capture_output=True,
    )  # fmt: skip
    full = time.monotonic() - started
    account, channel = json.loads(
        subprocess.run(
            [*CLI, "sql", "--warehouse", str(warehouse), "--format", "json",
             "select account_id, channel_id from dim_channels where not is_deleted limit 1"],
            capture_output=True, text=True, check=True,
        ).stdout
    )[0].values()  # fmt: skip
    key = subprocess.run(
        [*CLI, "keys", "create", "--warehouse", str(warehouse), "--account-id", str(account)],
        capture_output=True, text=True, check=True,
    ).stdout.strip().splitlines()[-1]  # fmt: skip
    port = free_port()
    server = subprocess.Popen(
        [*CLI, "serve", "--warehouse", str(warehouse), "--port", str(port)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    probe = (
        f"http://127.0.0.1:{port}",
        key,
        f"/api/v4/analytics/reports_read?channel_id={channel}"
        "&start_date=2000-01-01&end_date=2100-01-01",
    )
    results: dict[str, dict[str, list[dict[str, Any]]]] = {
        mode: {case: [] for case in CASES} for mode in modes
    }
    watcher = None
    try:
        while served_snapshot(*probe) is None:
            time.sleep(0.1)
        for mode in modes:
            if mode == "watch":
                watcher = Watcher(raw, warehouse, env, work / f"fresh-watch-{size}.log")
            for round_no in range(rounds):
                for case, (percent, recent) in CASES.items():
                    staged = work / f"fresh-staged-{size}"
                    shutil.rmtree(staged, ignore_errors=True)
                    index = (MODES.index(mode) * rounds + round_no) * len(CASES) + list(
                        CASES
                    ).index(case)
                    lines = stage(raw, staged, percent, recent, index)
                    result = one_round(mode, raw, warehouse, env, probe, staged, watcher)
                    result["new_events"] = lines
                    results[mode][case].append(result)
                    log(
                        f"{size:,} {mode} {case} round {round_no + 1}: {result['freshness_s']:.2f} s "
                        f"({100 * result['freshness_s'] / full:.1f}% of the full build)"
                    )
            if watcher is not None:
                watcher.stop()
                watcher = None
    finally:
        if watcher is not None:
            watcher.stop()
        server.terminate()
        server.wait(timeout=30)
        for landed in raw.rglob("fresh-*.jsonl"):  # the raw folder is shared with run.py
            landed.unlink()
    return {"full_build_s": full, "cases": results}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000000,10000000")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--modes", default=",".join(MODES), help="run (a process per run), watch")
    parser.add_argument(
        "--work", type=Path, default=Path(tempfile.gettempdir()) / "metrics-etl-bench"
    )
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    home = Path(tempfile.mkdtemp(prefix="freshness-prefect-"))
    env = {**os.environ, "DO_NOT_TRACK": "1", "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    prefect, api_url = start_server(home, env)
    env = {**env, "PREFECT_HOME": str(home), "PREFECT_API_URL": api_url}
    out: dict[str, Any] = {}
    try:
        for size in (int(s) for s in args.sizes.split(",")):
            out[str(size)] = bench_size(size, args.work, args.rounds, env, args.modes.split(","))
    finally:
        prefect.terminate()
        prefect.wait(timeout=60)
    results = HERE / "results"
    results.mkdir(exist_ok=True)
    (results / "freshness.json").write_text(json.dumps(out, indent=1))
    for size, data in out.items():
        print(f"\n{int(size):,} events: full build {data['full_build_s']:.1f} s")
        for mode, cases in data["cases"].items():
            for case, rows in cases.items():
                med = {
                    k: statistics.median(r[k] for r in rows) for k in rows[0] if k.endswith("_s")
                }
                share = 100 * med["freshness_s"] / data["full_build_s"]
                parts = ", ".join(f"{k[:-2]} {v:.2f}" for k, v in med.items() if k != "freshness_s")
                print(
                    f"  {mode}, {case}: {med['freshness_s']:.2f} s median ({share:.1f}%): {parts}"
                )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
