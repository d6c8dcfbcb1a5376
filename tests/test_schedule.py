"""Scheduled runs fire for real: `metrics-etl schedule` and the README's deploy path, end to end.

Every test runs real processes (the CLI, `prefect server start`, a worker) with a PREFECT_HOME of
its own, waits (bounded) for scheduled runs to publish snapshots, and leaves no process behind.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import suppress
from pathlib import Path

import httpx
import pytest

from metrics_etl.publish.snapshot import current_snapshot
from rawkit import base_world, jsonl, report

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
WAIT_S = 180.0  # a bound for each wait, not a measurement


def prefect_env(home: Path, api_url: str | None = None) -> dict[str, str]:
    """The environment of a child process: its own PREFECT_HOME, quick polling, no analytics."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API_")}
    env.update(
        PREFECT_HOME=str(home),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_RUNNER_POLL_FREQUENCY="2",
        PREFECT_WORKER_QUERY_SECONDS="2",
        METRICS_ETL_RETENTION_MINUTES="0",
    )
    if api_url:
        env["PREFECT_API_URL"] = api_url
    return env


def processes_using(home: Path) -> list[int]:
    """Ids of live processes started with PREFECT_HOME=home (servers, runners, flow runs)."""
    marker = f"PREFECT_HOME={home}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if marker in environ and state != "Z":
            found.append(int(entry.name))
    return found


def kill_all_using(home: Path) -> None:
    """SIGKILL whatever is still running with PREFECT_HOME=home (a failed test's leftovers)."""
    for pid in processes_using(home):
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def wait_for(what: str, ready: Callable[[], object], process: subprocess.Popen | None = None):
    """Poll until ready() is truthy; fail (with the process's output) after WAIT_S or its exit."""
    deadline = time.monotonic() + WAIT_S
    while True:
        value = ready()
        if value:
            return value
        if process is not None and process.poll() is not None:
            pytest.fail(f"process exited with {process.returncode} before {what}")
        if time.monotonic() > deadline:
            pytest.fail(f"no {what} within {WAIT_S:.0f} s")
        time.sleep(0.5)


def start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    """Start a process in a session of its own, stdout and stderr to files beside log."""
    with log.with_suffix(".out").open("wb") as out, log.with_suffix(".err").open("wb") as err:
        return subprocess.Popen(
            args, cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
            start_new_session=True,
        )  # fmt: skip


def stop(process: subprocess.Popen, signum: int = signal.SIGTERM) -> int:
    """Send a signal to a process, wait for it (SIGKILL after WAIT_S), return its exit code."""
    if process.poll() is None:
        process.send_signal(signum)
        try:
            process.wait(timeout=WAIT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def healthy(api_url: str) -> bool:
    """Whether a Prefect API answers its health check."""
    try:
        return httpx.get(f"{api_url}/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def api(method: str, url: str, body: dict | None = None) -> httpx.Response:
    """A Prefect API call, retried while the server answers 503 (SQLite busy), as its client does."""
    for _ in range(30):
        response = httpx.request(method, url, json=body, timeout=30)
        if response.status_code != 503:
            return response
        time.sleep(1)
    return response


def published(warehouse: Path) -> str | None:
    """The id of the warehouse's current snapshot, if any."""
    current = current_snapshot(warehouse)
    return current.name if current else None


def flow_runs(api_url: str, deployment: str) -> list[dict]:
    """The flow runs of a deployment of the metrics-etl flow."""
    body = {"deployments": {"name": {"any_": [deployment]}}, "limit": 200}
    response = api("POST", f"{api_url}/flow_runs/filter", body)
    response.raise_for_status()
    return response.json()


def raw_world(root: Path) -> Path:
    """A small raw folder: two accounts, channels, users and one report."""
    raw = root / "raw"
    base_world(raw)
    jsonl(raw / "reports/r1.jsonl", [report(1, "2016-11-07T14:00:00Z")])
    return raw


@pytest.fixture(scope="module")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A `prefect server start`, as a user starts one: its API URL and PREFECT_HOME."""
    home = tmp_path_factory.mktemp("prefect-server-home")
    port = free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    # its scheduler looks for runs to create every 5 s, not every 60 s: the deploy path's
    # first scheduled run comes sooner, nothing else changes
    env = {**prefect_env(home), "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "5"}
    server = start(
        [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env,
        home / "server.log",
    )
    try:
        wait_for("Prefect server", lambda: healthy(api_url), server)
        yield api_url, home
    finally:
        stop(server)
        kill_all_using(home)


def test_schedule_starts_a_server_runs_on_the_interval_and_stops_on_sigterm(
    tmp_path: Path,
) -> None:
    raw, wh, home = raw_world(tmp_path), tmp_path / "wh", tmp_path / "prefect-home"
    command = [str(BIN / "metrics-etl"), "schedule", "--interval", "5"]
    command += ["--raw", str(raw), "--warehouse", str(wh), "--name", "every-5s"]
    schedule = start(command, prefect_env(home), tmp_path / "schedule.log")
    try:
        first = wait_for("first scheduled snapshot", lambda: published(wh), schedule)
        jsonl(raw / "reports/r2.jsonl", [report(2, "2016-11-08T09:00:00Z")])
        wait_for("second scheduled snapshot", lambda: published(wh) not in (None, first), schedule)
        out = (tmp_path / "schedule.out").read_text()
        api_url = out.split("on the Prefect API ", 1)[1].split()[0]
        wait_for(
            "two completed scheduled flow runs",
            lambda: (
                sum(
                    r["auto_scheduled"] and r["state_type"] == "COMPLETED"
                    for r in flow_runs(api_url, "every-5s")
                )
                >= 2
            ),
            schedule,
        )
        code = stop(schedule, signal.SIGTERM)
    finally:
        stop(schedule, signal.SIGKILL)
        leftovers = processes_using(home)
        kill_all_using(home)
    err = (tmp_path / "schedule.err").read_text()
    assert code == 143, err
    assert "stopped by SIGTERM" in err
    for bad in ("Traceback", "never awaited", "Error logging to API"):
        assert bad not in err
    assert leftovers == []  # its Prefect server and flow-run processes are gone too
    assert not healthy(api_url)
    status = subprocess.run(
        [str(BIN / "metrics-etl"), "sql", "--warehouse", str(wh), "select status from runs"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert status.stdout.count("published") == 2, status.stdout


def test_schedule_serves_on_the_server_in_prefect_api_url_and_exits_130_on_sigint(
    tmp_path: Path, prefect_server: tuple[str, Path]
) -> None:
    api_url, _ = prefect_server
    home = tmp_path / "prefect-home"
    command = [str(BIN / "metrics-etl"), "schedule", "--cron", "0 3 * * *", "--name", "nightly"]
    command += ["--raw", str(raw_world(tmp_path)), "--warehouse", str(tmp_path / "wh")]
    schedule = start(command, prefect_env(home, api_url), tmp_path / "schedule.log")
    deployment = f"{api_url}/deployments/name/metrics-etl/nightly"
    try:
        wait_for(
            "deployment served",
            lambda: api("GET", deployment).status_code == 200,
            schedule,
        )
        assert api("GET", deployment).json()["paused"] is False
        code = stop(schedule, signal.SIGINT)
    finally:
        stop(schedule, signal.SIGKILL)
        leftovers = processes_using(home)
        kill_all_using(home)
    err = (tmp_path / "schedule.err").read_text()
    assert code == 130, err
    assert "stopped by SIGINT" in err and "Traceback" not in err and "never awaited" not in err
    assert f"on the Prefect API {api_url} " in (tmp_path / "schedule.out").read_text()
    assert leftovers == []  # it started no server of its own
    assert healthy(api_url)  # and left the user's server running
    assert api("GET", deployment).json()["paused"] is True  # no runs pile up


def test_schedule_with_an_unreachable_prefect_api_url_says_so(tmp_path: Path) -> None:
    result = subprocess.run(
        [str(BIN / "metrics-etl"), "schedule", "--interval", "60", "--raw", str(tmp_path)],
        env=prefect_env(tmp_path / "home", f"http://127.0.0.1:{free_port()}/api"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert "(PREFECT_API_URL) does not answer" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_readme_deploy_path_fires_on_schedule_and_the_artifact_inspects(
    tmp_path: Path, prefect_server: tuple[str, Path]
) -> None:
    api_url, home = prefect_server
    raw, wh = raw_world(tmp_path), tmp_path / "wh"
    env = {**prefect_env(home, api_url), "COLUMNS": "200"}  # rich tables, not cut at 80
    prefect = str(BIN / "prefect")

    def cli(*args: str) -> str:
        """Run a prefect CLI command in the repo; fail on a non-zero exit."""
        done = subprocess.run(
            [prefect, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    cli("work-pool", "create", "metrics-etl-test", "--type", "process")
    cli(
        "--no-prompt", "deploy", "flows/etl.py:etl", "--name", "readme-path",
        "--pool", "metrics-etl-test", "--interval", "5", "--concurrency-limit", "1",
        "--param", f"raw={raw}", "--param", f"warehouse={wh}",
    )  # fmt: skip
    worker = start(
        [prefect, "worker", "start", "--pool", "metrics-etl-test"], env, tmp_path / "worker.log"
    )
    deployment = api("GET", f"{api_url}/deployments/name/metrics-etl/readme-path").json()
    try:
        wait_for("snapshot from a scheduled run", lambda: published(wh), worker)
        # no new runs, then let the one in flight finish before the worker stops
        api(
            "PATCH", f"{api_url}/deployments/{deployment['id']}", {"paused": True}
        ).raise_for_status()
        wait_for(
            "runs to finish",
            lambda: (
                not any(
                    r["state_type"] in ("RUNNING", "PENDING")
                    for r in flow_runs(api_url, "readme-path")
                )
            ),
        )
    finally:
        # Prefect's worker may take minutes to stop after SIGTERM (seen: the whole 180 s bound);
        # its runs are over and its shutdown is not this test's subject, so it is killed
        # (the fixture's teardown ends whatever it started)
        stop(worker, signal.SIGKILL)
    runs = flow_runs(api_url, "readme-path")
    assert any(r["auto_scheduled"] and r["state_type"] == "COMPLETED" for r in runs)
    assert "Traceback" not in (tmp_path / "worker.err").read_text()
    # The run summary is a table artifact that Prefect's own CLI lists and inspects.
    assert "metrics-etl-run" in cli("artifact", "ls")
    shown = cli("artifact", "inspect", "metrics-etl-run")  # its latest versions
    assert "'type': 'table'" in shown and "published snapshot" in shown


def start_watch(raw: Path, wh: Path, env: dict[str, str], folder: Path) -> subprocess.Popen:
    """`metrics-etl watch` polling every 0.2 s; its output in folder/watch.out and .err."""
    command = [str(BIN / "metrics-etl"), "watch", "--poll", "0.2"]
    command += ["--raw", str(raw), "--warehouse", str(wh)]
    return start(command, env, folder / "watch.log")


def test_watch_runs_in_process_when_files_land_and_stops_cleanly(
    tmp_path: Path, prefect_server: tuple[str, Path]
) -> None:
    api_url, home = prefect_server
    raw, wh = raw_world(tmp_path), tmp_path / "wh"
    watcher = start_watch(raw, wh, prefect_env(home, api_url), tmp_path)
    try:
        first = wait_for("the first snapshot", lambda: published(wh), watcher)
        jsonl(raw / "reports/r2.jsonl", [report(2, "2016-11-08T09:00:00Z")])
        wait_for(
            "a snapshot with the landed file", lambda: published(wh) not in (None, first), watcher
        )
        second = published(wh)
        rows = subprocess.run(
            [str(BIN / "metrics-etl"), "sql", "--warehouse", str(wh), "--format", "csv",
             "select report_id from fct_reports order by report_id"],
            capture_output=True, text=True, check=True,
        ).stdout.split()  # fmt: skip
        assert rows == ["report_id", "1", "2"]
        time.sleep(1)  # a few idle polls: nothing new, so no run and no new snapshot
        assert published(wh) == second
        code = stop(watcher, signal.SIGTERM)
    finally:
        stop(watcher, signal.SIGKILL)
    assert code == 128 + signal.SIGTERM
    out = (tmp_path / "watch.out").read_text()
    err = (tmp_path / "watch.err").read_text()
    assert out.count("published snapshot") == 2, out
    assert "stopped by SIGTERM" in err and "Traceback" not in err, err
    runs = api("POST", f"{api_url}/flow_runs/filter", {"limit": 200}).json()
    finished = [r for r in runs if r["name"] and r["state_type"] == "COMPLETED"]
    assert len(finished) >= 2  # each run is a flow run on the server


def test_watch_stopped_by_sigterm_during_a_run_exits_143_and_the_next_run_publishes(
    tmp_path: Path, prefect_server: tuple[str, Path]
) -> None:
    api_url, home = prefect_server
    raw, wh = raw_world(tmp_path), tmp_path / "wh"
    env = prefect_env(home, api_url)
    watcher = start_watch(raw, wh, env, tmp_path)
    err = tmp_path / "watch.err"
    try:
        wait_for("a run in flight", lambda: "ingest-" in err.read_text(), watcher)
        code = stop(watcher, signal.SIGTERM)
    finally:
        stop(watcher, signal.SIGKILL)
    assert code == 128 + signal.SIGTERM
    text = err.read_text()
    assert "stopped by SIGTERM" in text and "Traceback" not in text, text
    done = subprocess.run(
        [str(BIN / "metrics-etl"), "run", "--raw", str(raw), "--warehouse", str(wh)],
        env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert published(wh) is not None
