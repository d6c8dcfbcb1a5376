"""Operating the pipeline: a true run record, stages as Prefect tasks with their own logs,
progress on a terminal only, a no-op run without a flow, a full disk, and CLI conventions."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import pty
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import build
from metrics_etl.cli import build_parser
from metrics_etl.models import build as transform
from metrics_etl.run import plan
from metrics_etl.serve.reader import open_snapshot
from rawkit import base_world, jsonl, reads, report
from snapshots import assert_same_tables

AS_OF = dt.datetime(2017, 1, 1, tzinfo=dt.UTC)


def small_raw(raw: Path) -> Path:
    """A raw folder with every kind of row the marts need, and one bad line."""
    base_world(raw)
    jsonl(raw / "reports/r.jsonl", [report(1, "2016-11-07T14:00:00Z"), "not json"])
    jsonl(raw / "reads/a.jsonl", reads([1, 2, 3], 1))
    return raw


def cli_env(**extra: str) -> dict[str, str]:
    """The environment of a CLI subprocess: this session's Prefect API, so no temporary server."""
    from prefect.settings import PREFECT_API_URL

    return {**os.environ, "PREFECT_API_URL": str(PREFECT_API_URL.value()), **extra}


def cli(*args: str, **env: str) -> subprocess.CompletedProcess:
    """Run `metrics-etl` in a subprocess with its output piped (not a terminal)."""
    return subprocess.run(
        [sys.executable, "-m", "metrics_etl.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=cli_env(**env),
    )


# --------------------------------------------------------------------------- the run record


def test_runs_table_describes_the_run_that_published_it(tmp_path: Path) -> None:
    raw, wh = small_raw(tmp_path / "raw"), tmp_path / "wh"
    summary = build(raw, wh, AS_OF)
    with open_snapshot(wh) as snap:
        row = snap.conn.execute(
            "select run_id, snapshot_id, partitions_written, partitions_reused, "
            "summary->>'$.seconds.publish' from runs"
        ).fetchall()
    assert row == [
        (
            summary.run_id,
            summary.snapshot_id,
            summary.partitions_written,
            summary.partitions_reused,
            str(summary.seconds["publish"]),
        )
    ]
    manifest = json.loads((wh / "current/manifest.json").read_text())
    files = {f for table in manifest["tables"].values() for f in table["files"]}
    assert summary.partitions_written == len(files)  # a first snapshot writes every file it lists


# --------------------------------------------------------------------------- stages as tasks


def test_each_stage_is_a_prefect_task_that_logs_what_it_did(tmp_path: Path) -> None:
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, LogFilter
    from prefect.logging.handlers import APILogHandler

    from metrics_etl.cli import load_flow

    raw, wh = small_raw(tmp_path / "raw"), tmp_path / "wh"
    state = load_flow()(raw=str(raw), warehouse=str(wh), return_state=True)
    assert state.is_completed()
    flow_run_id = state.state_details.flow_run_id
    APILogHandler().flush()  # logs reach the API in batches
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
        )
        logs = client.read_logs(LogFilter(flow_run_id={"any_": [flow_run_id]}))
    names = {run.name for run in runs}
    streams = {"accounts", "channels", "fields", "reads", "reports", "states", "users"}
    assert {f"ingest-{s}" for s in streams} <= names
    assert {"transform-staging", "transform-marts"} <= names
    assert any(n.startswith("audit") for n in names) and any(n.startswith("publish") for n in names)
    messages = [log.message for log in logs]
    assert "reports: 1 files, 2 lines: 1 accepted, 1 rejected" in "\n".join(messages)
    assert any(m.startswith("marts: ") and "models rebuilt" in m for m in messages)
    assert any(m.startswith("snapshot ") and "partitions written" in m for m in messages)
    task_lines = [log.message for log in logs if log.task_run_id is not None]
    assert not any(m.startswith("Finished in state Completed(") for m in task_lines)


# --------------------------------------------------------------------------- progress


def run_in_terminal(args: list[str], env: dict[str, str]) -> str:
    """Run a command with a pseudo-terminal as its stdout and stderr; returns what it showed."""
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        args, stdin=subprocess.DEVNULL, stdout=follower, stderr=follower, env=env
    )
    os.close(follower)
    shown = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the terminal closed: the process is done
            break
        if not chunk:
            break
        shown += chunk
    proc.wait(timeout=300)
    os.close(leader)
    assert proc.returncode == 0, shown.decode(errors="replace")
    return shown.decode(errors="replace")


def test_progress_bars_on_a_terminal_only(tmp_path: Path) -> None:
    raw = small_raw(tmp_path / "raw")
    command = [sys.executable, "-m", "metrics_etl.cli", "run", "--raw", str(raw)]
    shown = run_in_terminal(
        [*command, "--warehouse", str(tmp_path / "tty")], cli_env(COLUMNS="160")
    )
    plain = re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]", "", shown)
    assert "━" in plain
    files = sum(1 for p in raw.rglob("*") if p.is_file())
    models = len(transform.load_models())
    assert f"/{files} files" in plain and f"/{models} models" in plain  # counts of the bars
    piped = cli("run", "--raw", str(raw), "--warehouse", str(tmp_path / "pipe"))
    assert piped.returncode == 0, piped.stderr
    assert "━" not in piped.stderr + piped.stdout
    assert "docs.prefect.io" not in piped.stderr


# --------------------------------------------------------------------------- no-op


def test_a_run_with_nothing_new_starts_no_flow_and_says_so_once(tmp_path: Path) -> None:
    raw, wh = small_raw(tmp_path / "raw"), tmp_path / "wh"
    first = cli("run", "--raw", str(raw), "--warehouse", str(wh))
    assert first.returncode == 0, first.stderr
    again = cli("run", "--raw", str(raw), "--warehouse", str(wh))
    assert again.returncode == 0, again.stderr
    assert again.stdout.count("no new or changed raw files") == 1
    assert "no-op" in again.stdout
    assert "flow run" not in again.stderr.lower()  # no Prefect flow was started
    jsonl(raw / "reports/more.jsonl", [report(2, "2016-11-08T00:00:00Z")])
    third = cli("run", "--raw", str(raw), "--warehouse", str(wh))
    assert "published" in third.stdout and "incremental transform" in third.stdout


def test_a_new_as_of_is_not_a_no_op(tmp_path: Path) -> None:
    raw, wh = small_raw(tmp_path / "raw"), tmp_path / "wh"
    build(raw, wh, AS_OF)
    assert plan.check(raw, wh, AS_OF, False) is not None  # same as-of: nothing to do
    assert plan.check(raw, wh, AS_OF + dt.timedelta(days=1), False) is None
    assert plan.check(raw, wh, AS_OF, True) is None  # --full-refresh always runs


# --------------------------------------------------------------------------- a full disk


def mount_tmpfs(folder: Path, size: str) -> None:
    """Mount a small tmpfs (skips the test where that is not allowed)."""
    folder.mkdir(parents=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")


def fill(folder: Path, leave: int) -> Path:
    """Fill a file system up to `leave` bytes free; returns the filler file."""
    stats = os.statvfs(folder)
    filler = folder / "filler"
    with filler.open("wb") as handle:
        handle.write(b"\0" * max(0, stats.f_bavail * stats.f_frsize - leave))
    return filler


class FreeOnRetry(logging.Handler):
    """Removes the filler file when Prefect announces a task's first retry."""

    def __init__(self, filler: Path) -> None:
        super().__init__()
        self.filler = filler
        self.retries = 0

    def emit(self, record: logging.LogRecord) -> None:
        if "Retry 1/" in record.getMessage():
            self.retries += 1
            self.filler.unlink(missing_ok=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")
def test_a_full_disk_fails_in_one_line_and_a_retry_opens_a_fresh_connection(
    tmp_path: Path,
) -> None:
    raw, disk = small_raw(tmp_path / "raw"), tmp_path / "disk"
    jsonl(raw / "reads/many.jsonl", reads(list(range(100, 20_100)), 1))  # a load of some MB
    mount_tmpfs(disk, "64m")
    try:
        filler = fill(disk, leave=256 * 1024)
        full = cli("run", "--raw", str(raw), "--warehouse", str(disk / "full"))
        assert full.returncode == 1
        assert "Traceback" not in full.stderr
        last = full.stderr.strip().splitlines()[-1]
        assert last.startswith("metrics-etl run: error: no space left on the device of"), last
        # another run fills the disk while loading; the disk is freed while the failed load
        # waits for its retry, which must not reuse the connection DuckDB invalidated
        shutil.rmtree(disk / "full")
        handler = FreeOnRetry(filler)
        logging.getLogger("prefect.task_runs").addHandler(handler)
        try:
            summary = build(raw, disk / "wh", AS_OF)
        finally:
            logging.getLogger("prefect.task_runs").removeHandler(handler)
        assert handler.retries == 1
        assert summary.status == "published"
        assert_same_tables(disk / "wh", build_clean(raw, tmp_path / "clean"))
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def build_clean(raw: Path, wh: Path) -> Path:
    """A clean build of the same raw files, for comparison."""
    build(raw, wh, AS_OF)
    return wh


# --------------------------------------------------------------------------- CLI conventions


def test_version_and_every_flag_says_what_it_does_and_its_default(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from metrics_etl import __version__

    with pytest.raises(SystemExit) as done:
        build_parser().parse_args(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.strip() == f"metrics-etl {__version__}"
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    subparsers = dict(commands)
    subparsers.update(
        {f"keys {k}": v for k, v in commands["keys"]._subparsers._group_actions[0].choices.items()}
    )
    for name, sub in subparsers.items():
        for action in sub._actions:
            if action.dest in ("help", "keys_command"):
                continue
            assert action.help, f"{name} {action.dest} has no help"
            takes_value = action.nargs != 0 and action.option_strings
            if takes_value and not action.required and action.default is not None:
                assert "default" in action.help, f"{name} {action.dest}: {action.help}"
            if action.dest in ("raw", "warehouse"):
                assert f"env METRICS_ETL_{action.dest.upper()}" in action.help


def test_get_prints_only_the_json_body(tmp_path: Path) -> None:
    raw, wh = small_raw(tmp_path / "raw"), tmp_path / "wh"
    build(raw, wh, AS_OF)
    ok = cli("get", "--warehouse", str(wh), "--account-id", "1", "/batch/acme/report_stats")
    assert ok.returncode == 0 and ok.stderr.strip() == "HTTP 200"
    assert json.loads(ok.stdout)["report_stats"][0]["report_id"] == 1
    missing = cli("get", "--warehouse", str(wh), "--account-id", "1", "/batch/nobody/report_stats")
    assert missing.returncode == 1 and missing.stderr.strip() == "HTTP 404"
    assert json.loads(missing.stdout)["error"] == "not_found"


def test_sql_prints_every_row_in_each_format(tmp_path: Path) -> None:
    raw, wh = small_raw(tmp_path / "raw"), tmp_path / "wh"
    build(raw, wh, AS_OF)
    query = "select range as n, 'a,b' as s from range(250)"
    table = cli("sql", "--warehouse", str(wh), query)
    assert table.returncode == 0
    assert re.search(r"│\s+249 │ a,b\s+│", table.stdout) and "250 rows" in table.stdout
    csv = cli("sql", "--warehouse", str(wh), "--format", "csv", query)
    assert csv.stdout.splitlines()[:2] == ["n,s", '0,"a,b"'] and len(csv.stdout.splitlines()) == 251
    rows = json.loads(cli("sql", "--warehouse", str(wh), "--format", "json", query).stdout)
    assert len(rows) == 250 and rows[-1] == {"n": 249, "s": "a,b"}
    some = cli("sql", "--warehouse", str(wh), "--format", "csv", "--max-rows", "3", query)
    assert len(some.stdout.splitlines()) == 4
    empty = json.loads(
        cli("sql", "--warehouse", str(wh), "--format", "json", "select 1 where false").stdout
    )
    assert empty == []
