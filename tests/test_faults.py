"""Faults: a run SIGKILLed at every step, a second writer, corrupt raw files, snapshots in use.

For each crash point the pipeline runs in a child process with METRICS_ETL_FAULT=<step> and
kills itself there. Afterwards `current` must still name one whole, readable snapshot (before
the switch: the old one, answering exactly as before), and one more run without the fault must
publish the same tables as a clean full rebuild of the same raw files.

Every crash point gets its own warehouse: a copy of one first snapshot built in-process. The
child runs are forked, at the same time, from one helper subprocess that imported the pipeline
once, so Prefect's slow import is paid once rather than per crash.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import gzip
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import build
from metrics_etl.errors import UserError
from metrics_etl.publish import snapshot as publish
from metrics_etl.run import pipeline
from metrics_etl.serve.reader import ANALYTICS, Reader
from rawkit import base_world, jsonl, parquet, reads, report
from snapshots import ask as answers
from snapshots import assert_same_tables, published_tables, records
from test_readers import assert_tree_matches_manifest

UTC = dt.UTC
AS_OF = dt.datetime(2017, 1, 1, tzinfo=UTC)
STEPS = ("load", "transform", "parquet", "before-switch", "after-switch", "cleanup")
BEFORE_SWITCH = ("load", "transform", "parquet", "before-switch")
CHILD_TIMEOUT_S = 300

# --------------------------------------------------------------------------- raw data


def delivery(
    delivery_id: int,
    report_id: int,
    user_id: int = 4,
    alert_id: int = 5,
    at: str = "2016-11-07T14:04:00Z",
) -> dict:
    return {
        "delivery_id": delivery_id,
        "alert_id": alert_id,
        "account_id": 1,
        "report_id": report_id,
        "user_id": user_id,
        "sent_at": at,
    }


def write_base(raw: Path) -> None:
    """The first run's files: the rawkit world, four reports over several months, their events."""
    base_world(raw)
    jsonl(
        raw / "reports/base.jsonl",
        [
            report(1, "2016-02-03T10:00:00Z", selections=[{"field_id": 2, "value": "a"}]),
            report(2, "2016-03-04T11:30:00.5Z"),
            report(3, "2016-05-06T00:15:00Z", channel_id=3),
            report(4, "2016-07-08T23:59:59.999999Z", user_id=4, state_id=None),
        ],
    )
    jsonl(
        raw / "reads/base.jsonl",
        [
            *reads([1, 2], 1),
            *reads([3], 2, user_id=3, at="2016-03-05T09:00:00Z"),
            *reads([4], 3, at="2016-05-07T01:00:00-04:00"),
        ],
    )
    jsonl(
        raw / "alerts/base.jsonl",
        [delivery(1, 1), delivery(2, 2, user_id=3, alert_id=6), delivery(3, 4)],
    )
    jsonl(
        raw / "alert_opens/base.jsonl",
        [{"open_id": 1, "delivery_id": 1, "account_id": 1, "opened_at": "2016-11-09T08:00:00Z"}],
    )
    jsonl(
        raw / "report_runs/base.jsonl",
        [
            {
                "run_id": 1,
                "account_id": 1,
                "report_id": 1,
                "user_id": 3,
                "run_type": "manual",
                "ran_at": "2016-12-20T00:00:00Z",
            }
        ],
    )


def write_more(raw: Path) -> None:
    """The second run's files (several, in every format): new reports, a moved report, new events."""
    jsonl(
        raw / "alert_opens/more.jsonl",
        [
            {"open_id": 2, "delivery_id": 2, "account_id": 1, "opened_at": "2016-11-09T08:00:00Z"},
            {"open_id": 3, "delivery_id": 5, "account_id": 1, "opened_at": "2016-11-10T08:00:00Z"},
        ],
    )
    sent = [dt.datetime(2016, 9, 11, 12, tzinfo=UTC), dt.datetime(2016, 10, 12, 6, 30, tzinfo=UTC)]
    parquet(
        raw / "alerts/more.parquet",
        pa.table(
            {
                "delivery_id": [4, 5],
                "alert_id": [7, 7],
                "account_id": [1, 1],
                "report_id": [5, 6],
                "user_id": [4, 5],
                "sent_at": pa.array(sent, pa.timestamp("us", tz="UTC")),
            }
        ),
    )
    jsonl(
        raw / "reads/more.jsonl.gz",
        [*reads([5, 6], 5, at="2016-09-12T00:00:00Z"), *reads([7], 6), *reads([8], 2, user_id=5)],
        gz=True,
    )
    jsonl(
        raw / "report_edits/more.jsonl",
        [
            {
                "edit_id": 1,
                "account_id": 1,
                "report_id": 1,
                "user_id": 4,
                "edited_at": "2016-06-01T00:00:00Z",
            }
        ],
    )
    jsonl(
        raw / "reports/more.jsonl",
        [
            report(
                2, "2016-03-04T11:30:00.5Z", "2016-12-01T00:00:00Z", channel_id=3
            ),  # moves channel
            report(5, "2016-09-10T08:00:00Z", selections=[{"field_id": 2, "value": "a"}]),
            report(6, "2016-10-11T21:45:00Z", user_id=5),
        ],
    )
    jsonl(
        raw / "schedules/more.jsonl",
        [
            {
                "schedule_id": 1,
                "account_id": 1,
                "report_id": 5,
                "user_id": 3,
                "created_at": "2016-09-10T09:00:00Z",
                "updated_at": "2016-09-10T09:00:00Z",
            }
        ],
    )


def requests() -> list[tuple[str, int]]:
    """Every analytics endpoint for the two live channels of account 1 (whole 2016 and a partial range), report stats."""
    out = []
    for channel_id in (1, 3):
        for start, end in (
            ("2016-01-01", "2017-01-01"),
            ("2016-03-04T11:30:00.5Z", "2016-11-08T10:00:00.000001Z"),
        ):
            q = f"channel_id={channel_id}&start_date={start}&end_date={end}"
            for endpoint in ANALYTICS:
                extra = {
                    "reports_per_field_selection": "&field_id=2",
                    "reports_read": "&fields=total_reads,unique_reads,report_readers,reports_seen",
                    "user_awareness": "&fields=total_alerts,unique_alerts,alert_source_reports,alerts_opened",
                }.get(endpoint, "")
                out.append((f"/api/v4/analytics/{endpoint}?{q}{extra}", 1))
    for page in ("page=1&per_page=2", "page=2&per_page=2", "include_spaces=all"):
        out.append((f"/batch/acme/report_stats?{page}", 1))
    return out


REQUESTS = requests()

# --------------------------------------------------------------------------- checks


def ask(
    warehouse: Path, reqs: list[tuple[str, int]] = REQUESTS
) -> dict[tuple[str, int], tuple[int, object]]:
    """Reader answers for the fixed requests of this module."""
    return answers(warehouse, reqs)


def current_id(warehouse: Path) -> str:
    return Path(os.readlink(warehouse / "current")).name


def assert_current_is_whole(warehouse: Path) -> str:
    """`current` names a finished snapshot whose manifest lists only complete, readable Parquet files."""
    link = warehouse / "current"
    assert link.is_symlink(), "current must be a symlink"
    target = Path(os.readlink(link))
    assert target.parent == Path("snapshots") and not target.name.startswith("."), target
    folder = warehouse / target
    # nothing half-written is reachable: the final manifest and catalog, no temp files
    names = {p.name for p in folder.iterdir()}
    assert {"catalog.duckdb", "manifest.json"} <= names, names
    assert not [n for n in names if n.startswith(".") or "tmp" in n], (
        f"temp files in the snapshot: {names}"
    )
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["snapshot_id"] == target.name
    assert set(manifest["tables"]) >= {
        "fct_reports",
        "report_stats",
        "rejects",
        "file_stats",
        "runs",
    }
    for table, info in manifest["tables"].items():
        assert info["files"], f"{table} lists no files"
        rows = 0
        for rel in info["files"]:
            parts = Path(rel).parts
            assert parts[:2] == ("data", table) and rel.endswith(".parquet"), rel
            assert not any(p.startswith(".") or "tmp" in p for p in parts), (
                f"temp file reachable: {rel}"
            )
            path = warehouse / rel
            assert path.is_file() and not path.is_symlink(), f"missing: {rel}"
            data = pq.read_table(path)  # raises on a partial or broken file
            assert data.column_names == [c[0] for c in info["columns"]], rel
            rows += data.num_rows
        assert rows == info["rows"], (
            f"{table}: manifest says {info['rows']} rows, files hold {rows}"
        )
    assert_tree_matches_manifest(warehouse, folder)  # its per-table folders, whole
    return target.name


# --------------------------------------------------------------------------- crashed runs

# The children are forked from one helper process that has imported the pipeline once, so each
# crash costs a run, not a Prefect import. A child sets its own environment (METRICS_ETL_FAULT,
# ...) before it calls `pipeline.run`; the helper reports how each child ended, as a
# subprocess return code (-9 for SIGKILL).
ZYGOTE = r"""
import datetime as dt, json, os, sys, threading, traceback
from pathlib import Path
from metrics_etl.run import pipeline
assert threading.active_count() == 1, "forking is only safe without threads"
jobs = json.load(sys.stdin)
pids = {}
for job in jobs:
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            out = os.open(job["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            os.dup2(out, 1)
            os.dup2(out, 2)
            os.environ.update(job["env"])
            summary = pipeline.run(
                Path(job["raw"]), Path(job["warehouse"]), dt.datetime.fromisoformat(job["as_of"]),
                job["full_refresh"],
            )
            print("NOT KILLED:", summary.status, getattr(summary, "transform_mode", ""), flush=True)
            code = 0
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    pids[pid] = job["name"]
results = {}
for pid, name in pids.items():
    _, status = os.waitpid(pid, 0)
    results[name] = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
print(json.dumps(results))
"""


@dataclass
class Crash:
    """One warehouse whose second run was SIGKILLed at a step."""

    name: str
    raw: Path
    warehouse: Path
    first_snapshot: str
    returncode: int
    output: str


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory):
    """A first warehouse (base files), the answers it gives, and a clean rebuild of base + more."""
    from prefect.settings import PREFECT_API_URL

    root = tmp_path_factory.mktemp("faults")
    write_base(root / "base_raw")
    build(root / "base_raw", root / "base_wh", AS_OF)
    write_base(root / "all_raw")
    write_more(root / "all_raw")
    build(root / "all_raw", root / "clean", AS_OF)
    before, after = ask(root / "base_wh"), ask(root / "clean")
    changed = [req for req in REQUESTS if before[req] != after[req]]
    assert len(changed) > len(REQUESTS) // 3, "the second run's files must change many answers"
    assert all(status == 200 for status, _ in after.values())
    return root, before, after, PREFECT_API_URL.value()


def prepare_crash(
    root: Path, name: str, step: str, api: str, more, full_refresh: bool = False
) -> tuple[dict, Crash]:
    """Copy the base warehouse, add files; the job of a child run that SIGKILLs itself at step."""
    raw, warehouse, log = root / name / "raw", root / name / "wh", root / name / "child.log"
    write_base(raw)
    shutil.copytree(root / "base_wh", warehouse, symlinks=True)
    first = assert_current_is_whole(warehouse)
    more(raw)
    env = {"METRICS_ETL_FAULT": step}
    if step == "cleanup":  # clean-up reaches its crash point only when it removes a snapshot
        env.update(METRICS_ETL_KEEP_SNAPSHOTS="1", METRICS_ETL_RETENTION_MINUTES="0")
    job = {
        "name": name,
        "raw": str(raw),
        "warehouse": str(warehouse),
        "as_of": AS_OF.isoformat(),
        "full_refresh": full_refresh,
        "env": env,
        "log": str(log),
    }
    return job, Crash(name, raw, warehouse, first, 0, "")


def one_more_read(raw: Path) -> None:
    """A single new file (see test_killed_while_loading_the_only_new_file)."""
    jsonl(raw / "reads/one.jsonl", reads([50, 51], 3, at="2016-05-08T00:00:00Z"))


@pytest.fixture(scope="module")
def crashes(world) -> dict[str, Crash]:
    """Every crash point, each in its own warehouse; the child runs run concurrently."""
    root, _, _, api = world
    prepared = [prepare_crash(root, step, step, api, write_more) for step in STEPS]
    # the full transform (a --full-refresh run) does reach the transform crash point
    prepared.append(
        prepare_crash(root, "transform-full-refresh", "transform", api, write_more, True)
    )
    prepared.append(prepare_crash(root, "load-one-file", "load", api, one_more_read))
    env = {**os.environ, "PREFECT_API_URL": api}
    env.pop("METRICS_ETL_FAULT", None)
    helper = subprocess.run(
        [sys.executable, "-c", ZYGOTE],
        input=json.dumps([job for job, _ in prepared]),
        env=env,
        capture_output=True,
        text=True,
        timeout=CHILD_TIMEOUT_S,
    )
    assert helper.returncode == 0, helper.stderr[-3000:]
    codes = json.loads(helper.stdout.strip().splitlines()[-1])
    out = {}
    for job, crash in prepared:
        crash.returncode = codes[crash.name]
        crash.output = Path(job["log"]).read_text()[-3000:]
        out[crash.name] = crash
    return out


@pytest.mark.parametrize("name", [*STEPS, "transform-full-refresh"])
def test_run_killed_at_step(world, crashes, name: str) -> None:
    """After a SIGKILL at a step: a whole snapshot is current; one more run equals a clean rebuild."""
    root, before, after, _ = world
    crash = crashes[name]
    step = name.removesuffix("-full-refresh")
    assert crash.returncode == -signal.SIGKILL, (
        f"child was not SIGKILLed at {name}:\n{crash.output}"
    )
    wh = crash.warehouse

    now = assert_current_is_whole(wh)
    if step in BEFORE_SWITCH:
        assert now == crash.first_snapshot, "current moved although the run died before the switch"
        assert ask(wh) == before, "readers must see exactly the old snapshot"
    else:
        assert now != crash.first_snapshot, (
            "the run died after the switch: the new snapshot is current"
        )
        assert ask(wh) == after, "the switched-to snapshot must be whole"
    if step == "cleanup":
        # it died inside clean-up, after moving the old snapshot aside
        assert not (wh / "snapshots" / crash.first_snapshot).exists()

    summary = build(crash.raw, wh, AS_OF)
    # before the switch the new data is not published yet: this run must publish it
    assert summary.status in (
        ("published",) if step in BEFORE_SWITCH else ("published", "no-op")
    ), summary.message
    assert_current_is_whole(wh)
    assert_same_tables(wh, root / "clean")
    assert ask(wh) == after


def test_killed_while_loading_the_only_new_file(world, crashes, tmp_path: Path) -> None:
    """Killed right after committing its only new file: the next run must still publish that file.

    (Regression: the 'dirty' flag used to be set only after the whole ingest task, so the next
    run saw no new file and no pending data and was a no-op.)
    """
    before = world[1]
    crash = crashes["load-one-file"]
    assert crash.returncode == -signal.SIGKILL, crash.output
    assert current_id(crash.warehouse) == crash.first_snapshot and ask(crash.warehouse) == before

    summary = build(crash.raw, crash.warehouse, AS_OF)
    clean = tmp_path / "clean"
    build(crash.raw, clean, AS_OF)
    assert_same_tables(crash.warehouse, clean)
    assert summary.status == "published"


# --------------------------------------------------------------------------- lock, corrupt files, snapshots in use


def test_second_run_while_the_writer_lock_is_held(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run that cannot take the writer lock fails with a UserError and changes nothing."""
    raw, wh = tmp_path / "raw", tmp_path / "wh"
    write_base(raw)
    monkeypatch.setenv("METRICS_ETL_LOCK_TIMEOUT_S", "1")
    with pipeline.writer_lock(wh, 0):
        started = time.monotonic()
        with pytest.raises(UserError, match="another run is writing") as error:
            pipeline.run(raw, wh, AS_OF, False)
        assert time.monotonic() - started >= 1.0, (
            "it waits METRICS_ETL_LOCK_TIMEOUT_S before giving up"
        )
    assert f"pid {os.getpid()}" in str(error.value), "the message names the holder"
    assert str(wh) in str(error.value)
    assert not (wh / "current").exists() and not (wh / "snapshots").exists()
    # once the lock is free, the same run goes through
    assert pipeline.run(raw, wh, AS_OF, False).status == "published"
    assert_current_is_whole(wh)


def test_corrupt_raw_files_land_in_rejects(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A truncated gzip and garbage Parquet do not fail the run: one reject each, nothing loaded from them."""
    monkeypatch.setenv(
        "METRICS_ETL_READ_CHUNK_BYTES", "512"
    )  # blocks of the gzip load before the damage
    raw, wh = tmp_path / "raw", tmp_path / "wh"
    write_base(raw)
    whole = gzip.compress("".join(json.dumps(r) + "\n" for r in reads(range(100, 400), 1)).encode())
    (raw / "reads/truncated.jsonl.gz").write_bytes(whole[: len(whole) * 2 // 3])
    (raw / "reports/garbage.parquet").write_bytes(b"PAR1" + os.urandom(300) + b"not a footer")
    good = raw / "alerts/footer.parquet"
    parquet(
        good,
        pa.table(
            {
                "delivery_id": [9],
                "alert_id": [9],
                "account_id": [1],
                "report_id": [1],
                "user_id": [5],
                "sent_at": pa.array([AS_OF], pa.timestamp("us", tz="UTC")),
            }
        ),
    )
    (raw / "alerts/broken_footer.parquet").write_bytes(good.read_bytes()[:-12])
    good.unlink()

    summary = build(raw, wh, AS_OF)
    assert summary.status == "published"
    assert_current_is_whole(wh)
    tables = published_tables(wh)
    rejects = {r["file"]: r for r in records(tables, "rejects") if r["line"] == 0}
    assert sorted(rejects) == [
        "alerts/broken_footer.parquet",
        "reads/truncated.jsonl.gz",
        "reports/garbage.parquet",
    ]
    for file, r in rejects.items():
        assert (r["stream"], r["raw"]) == (file.split("/")[0], "") and "unreadable" in r[
            "reason"
        ], r
    counts = ("lines_read", "blank_lines", "accepted", "rejected")
    stats = {r["file"]: tuple(r[c] for c in counts) for r in records(tables, "file_stats")}
    for file in rejects:
        assert stats[file] == (1, 0, 0, 1), file
    assert len(tables["fct_reads"][1]) == 4, (
        "nothing of the truncated gzip is loaded, the good reads are"
    )
    body = ask(wh, [("/batch/acme/report_stats?include_spaces=all", 1)])[
        ("/batch/acme/report_stats?include_spaces=all", 1)
    ][1]
    assert {r["report_id"]: r["total_views_count"] for r in body["report_stats"]}[1] == 2

    # the producer rewrites the broken gzip in full: it is loaded and its reject disappears
    (raw / "reads/truncated.jsonl.gz").write_bytes(whole)
    build(raw, wh, AS_OF)
    tables = published_tables(wh)
    assert sorted(r["file"] for r in records(tables, "rejects") if r["line"] == 0) == [
        "alerts/broken_footer.parquet",
        "reports/garbage.parquet",
    ]
    stats = {r["file"]: tuple(r[c] for c in counts) for r in records(tables, "file_stats")}
    assert stats["reads/truncated.jsonl.gz"] == (300, 0, 300, 0)
    assert len(tables["fct_reads"][1]) == 304


def snapshot_dirs(warehouse: Path) -> list[str]:
    return sorted(p.name for p in (warehouse / "snapshots").iterdir() if not p.name.startswith("."))


def assert_snapshot_readable(warehouse: Path, snapshot_id: str) -> None:
    manifest = json.loads((warehouse / "snapshots" / snapshot_id / "manifest.json").read_text())
    for info in manifest["tables"].values():
        for rel in info["files"]:
            pq.read_table(warehouse / rel)


def test_clean_up_keeps_snapshots_that_readers_hold(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With KEEP_SNAPSHOTS=1 and RETENTION_MINUTES=0, only a reader's lease keeps an old snapshot."""
    monkeypatch.setenv("METRICS_ETL_KEEP_SNAPSHOTS", "1")
    monkeypatch.setenv("METRICS_ETL_RETENTION_MINUTES", "0")
    raw, wh = tmp_path / "raw", tmp_path / "wh"
    read_url = (
        "/api/v4/analytics/reports_read?channel_id=1&start_date=2016-01-01&end_date=2017-01-01"
    )
    write_base(raw)
    build(raw, wh, AS_OF)
    a = current_id(wh)
    reader = Reader(wh)
    try:
        assert reader.get(read_url, 1) == (
            200,
            {"total_reads": 3},
        )  # the reader now holds snapshot a

        jsonl(raw / "reads/r2.jsonl", reads([20, 21], 1))
        b = build(raw, wh, AS_OF).snapshot_id
        assert current_id(wh) == b != a
        assert snapshot_dirs(wh) == sorted([a, b]), (
            "a is held by the reader: clean-up must leave it"
        )
        assert_snapshot_readable(wh, a)

        assert reader.get(read_url, 1) == (200, {"total_reads": 5})  # moves on to b, releases a
        jsonl(raw / "reads/r3.jsonl", reads([30], 1))
        c = build(raw, wh, AS_OF).snapshot_id
        assert snapshot_dirs(wh) == sorted([b, c]), "a is free and old: removed; b is held: kept"
        assert_snapshot_readable(wh, b)
    finally:
        reader.close()  # releases b
    removed = publish.clean_up(wh, 1, 0)
    assert removed["snapshots"] == 1 and snapshot_dirs(wh) == [c]
    assert not list((wh / "snapshots").glob(".del-*"))
    assert_current_is_whole(wh)
    # every data file left is one that c uses
    manifest = json.loads((wh / "current" / "manifest.json").read_text())
    used = publish.listed_files(manifest)  # its tables' files and its serving segments
    assert {p.relative_to(wh).as_posix() for p in (wh / "data").rglob("*") if p.is_file()} == used
    assert ask(wh, [(read_url, 1)])[(read_url, 1)] == (200, {"total_reads": 6})


SIGTERM_DURING_A_QUERY = """
import os, signal, threading
import duckdb
from prefect.exceptions import TerminationSignal
from prefect.states import Failed
from prefect.utilities.engine import _prefect_sigterm_handler
from metrics_etl.run import pipeline

conn = duckdb.connect()
signal.signal(signal.SIGTERM, _prefect_sigterm_handler)
threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGTERM)).start()
try:
    # many small tasks: DuckDB looks for signals between tasks (one nested-loop join's task
    # can run for minutes)
    conn.execute("select sum(range % 7) from range(20000000000)")
    print("the query finished before the signal")
except BaseException as error:
    stop = pipeline.stop_signal(error)
    print(type(error).__name__, type(stop).__name__, getattr(stop, "signal", None),
          pipeline.transient(None, None, Failed(data=error)),
          pipeline.transient(None, None, Failed(data=RuntimeError("IO Error: timed out"))),
          flush=True)
os._exit(0)  # DuckDB may still be finishing the interrupted query's tasks
"""


def test_sigterm_during_a_query_is_a_stop_not_a_failure_to_retry() -> None:
    """DuckDB turns a signal handler's exception into RuntimeError("Query interrupted"); the
    run must still see Prefect's TerminationSignal behind it (and not retry). In a child
    process: the signal, and a query that might outlive a missed one, stay out of pytest's."""
    child = subprocess.run(
        [sys.executable, "-c", SIGTERM_DURING_A_QUERY], capture_output=True, text=True, timeout=120
    )
    assert child.returncode == 0, child.stderr
    assert child.stdout.split() == ["RuntimeError", "TerminationSignal", "15", "False", "True"]


# The signal arrives while DuckDB looks for pandas, as it does on every query with parameters.
SIGNAL_ON_PANDAS = """
import os, signal, sys

sent = []


class SignalOnPandas:
    # SIGTERM arrives while DuckDB looks for pandas, as it does on every query with parameters
    def find_spec(self, name, path=None, target=None):
        if name == "pandas" and not sent:
            sent.append(True)
            os.kill(os.getpid(), signal.SIGTERM)
"""

SIGTERM_SWALLOWED_DURING_A_RUN = (
    SIGNAL_ON_PANDAS
    + """
import threading
from pathlib import Path
import duckdb
from prefect.exceptions import TerminationSignal
from metrics_etl.run import watch


def bridge(signum, frame):
    raise TerminationSignal(signal=signum)  # Prefect's SIGTERM handler during a flow run


def run_once(raw, warehouse):
    previous = signal.signal(signal.SIGTERM, bridge)
    sys.meta_path.insert(0, SignalOnPandas())
    try:
        duckdb.connect().execute("select ?", [[1]]).fetchall()
    finally:
        signal.signal(signal.SIGTERM, previous)
    if len(sent) == 1:
        sent.append(True)
        print("the run went on", flush=True)  # DuckDB dropped the handler's exception
    return None


watch.run_once = run_once
threading.Timer(60, os._exit, (3,)).start()  # a watch that missed the signal polls on
print(watch.watch(Path("raw"), Path("wh"), 0.05, print), flush=True)
os._exit(0)
"""
)


def test_a_sigterm_whose_exception_a_library_swallows_still_stops_the_watch() -> None:
    """DuckDB drops an exception raised while it tries `import pandas` (on every query with
    parameters), so Prefect's TerminationSignal can vanish and the run go on (this test
    makes the signal land there). The watch still stops after that run, exit 143, from the
    interpreter's own note of the signal. In a child process, as above."""
    child = subprocess.run(
        [sys.executable, "-c", SIGTERM_SWALLOWED_DURING_A_RUN],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert child.returncode == 0, child.stdout + child.stderr
    assert child.stdout.split("\n")[:2] == ["the run went on", "143"], child.stdout


INTERRUPTED_CHECK = """
import os, signal, sys, threading
from pathlib import Path
from metrics_etl.run import watch


def run_once(raw, warehouse):
    signal.raise_signal(signal.SIGINT)  # a stop signal while the watch checks for new files
    raise RuntimeError("Query interrupted")  # what DuckDB raises when the signal cuts its query


watch.run_once = run_once
threading.Timer(60, os._exit, (3,)).start()
print(watch.watch(Path("raw"), Path("wh"), 0.05, print), flush=True)
os._exit(0)
"""


def test_a_stop_signal_that_cuts_the_check_short_is_not_reported_as_a_failed_run() -> None:
    """A signal that interrupts the watch's check for new files (found by an adversarial try:
    `run failed: RuntimeError('Query interrupted')`) stops the watch without a failed run."""
    child = subprocess.run(
        [sys.executable, "-c", INTERRUPTED_CHECK], capture_output=True, text=True, timeout=120
    )
    assert child.returncode == 0, child.stdout + child.stderr
    assert child.stdout.split("\n")[0] == "130", child.stdout
    assert "run failed" not in child.stdout


SIGTERM_DURING_RUN_CLI = (
    SIGNAL_ON_PANDAS
    + """
from metrics_etl import cli
from metrics_etl.ingest import load


plan = load.plan


def armed_plan(*args, **kwargs):  # inside the flow run, under Prefect's SIGTERM handler
    if sys.argv[3] == "swallowed":
        sys.meta_path.insert(0, SignalOnPandas())
    else:
        sent.append(True)
        os.kill(os.getpid(), signal.SIGTERM)
    return plan(*args, **kwargs)


load.plan = armed_plan
code = cli.main(["run", "--raw", sys.argv[1], "--warehouse", sys.argv[2]])
print("exit", code, "signal sent:", bool(sent), flush=True)
sys.exit(code)
"""
)


@pytest.mark.parametrize("how", ["plain", "swallowed"])
def test_sigterm_stops_a_run_and_its_temporary_server(tmp_path: Path, how: str) -> None:
    """`metrics-etl run` stopped by SIGTERM during planning exits 143 with nothing published,
    and stops Prefect's temporary server on its way out (Prefect's engine sends the signal
    again to the handler it found: by default the process died there, leaving the server
    running). Also when DuckDB swallows the signal (as above): the run stops before its next
    step, as Prefect's handler would have stopped it."""
    raw, wh = tmp_path / "raw", tmp_path / "wh"
    write_base(raw)
    out, err = tmp_path / "out", tmp_path / "err"
    with out.open("w") as stdout, err.open("w") as stderr:
        child = subprocess.Popen(
            [sys.executable, "-c", SIGTERM_DURING_RUN_CLI, str(raw), str(wh), how],
            stdout=stdout, stderr=stderr, start_new_session=True,
        )  # fmt: skip
        try:
            code = child.wait(timeout=300)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, signal.SIGKILL)  # anything left in its group: none expected
    text = out.read_text() + err.read_text()
    assert code == 128 + signal.SIGTERM, text[-3000:]
    assert "exit 143 signal sent: True" in text, text[-3000:]
    assert "stopped by SIGTERM; nothing was published" in text, text[-3000:]
    assert "Stopping temporary server" in text, text[-3000:]
    assert publish.current_id(wh) is None


# The same, with SIGINT (Ctrl-C) for SIGTERM.
SIGINT_DURING_RUN_CLI = SIGTERM_DURING_RUN_CLI.replace("signal.SIGTERM", "signal.SIGINT")


@pytest.mark.parametrize("how", ["plain", "swallowed"])
def test_ctrl_c_stops_a_run_even_when_a_library_swallows_it(tmp_path: Path, how: str) -> None:
    """Ctrl-C during `metrics-etl run` exits 130 with nothing published and Prefect's temporary
    server stopped. When DuckDB swallows the KeyboardInterrupt (it lands while DuckDB looks for
    pandas), the run stops before its next step, from the interpreter's note of the signal;
    before, it went on and published."""
    raw, wh = tmp_path / "raw", tmp_path / "wh"
    write_base(raw)
    child = subprocess.run(
        [sys.executable, "-c", SIGINT_DURING_RUN_CLI, str(raw), str(wh), how],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    text = child.stdout + child.stderr
    assert child.returncode == 128 + signal.SIGINT, text[-3000:]
    assert "exit 130 signal sent: True" in text, text[-3000:]
    assert "interrupted" in text, text[-3000:]
    assert "Stopping temporary server" in text, text[-3000:]
    assert publish.current_id(wh) is None


def test_a_failed_audit_publishes_nothing_and_keeps_the_previous_snapshot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run whose audit returns rows fails naming the audit and its rows; `current` stays on
    the previous snapshot, whose answers do not change; the next run, audited clean, publishes
    the new rows."""
    raw, wh = tmp_path / "raw", tmp_path / "wh"
    base_world(raw)
    jsonl(raw / "reports/r.jsonl", [report(1, "2016-11-08T09:00:00Z")])
    jsonl(raw / "reads/a.jsonl", reads([1, 2], 1))
    as_of = dt.datetime(2016, 12, 1, tzinfo=dt.UTC)
    assert build(raw, wh, as_of).status == "published"
    before = publish.current_id(wh)
    url = (
        "/api/v4/analytics/reports_read?channel_id=1&start_date=2016-11-01"
        "&end_date=2016-12-01&fields=total_reads"
    )
    assert answers(wh, [(url, 1)])[(url, 1)] == (200, {"total_reads": 2})
    jsonl(raw / "reads/b.jsonl", reads([3], 1))
    with monkeypatch.context() as patch:
        patch.setattr(
            pipeline.audits, "run_audits", lambda conn, changed: {"unique_keys": [("t", "1", 2)]}
        )
        with pytest.raises(pipeline.AuditFailed, match=r"nothing published.*unique_keys"):
            build(raw, wh, as_of)
    assert publish.current_id(wh) == before
    assert answers(wh, [(url, 1)])[(url, 1)] == (200, {"total_reads": 2})
    assert build(raw, wh, as_of).status == "published"
    assert answers(wh, [(url, 1)])[(url, 1)] == (200, {"total_reads": 3})
