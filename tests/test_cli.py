"""The command line: one-line errors for bad input, and the commands end to end."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import build
from metrics_etl.cli import build_deployment, build_parser, main
from rawkit import base_world, jsonl, report

AS_OF = dt.datetime(2017, 1, 1, tzinfo=dt.UTC)


def run_cli(*args: str) -> subprocess.CompletedProcess:
    """Run `metrics-etl` in a subprocess, as a user would."""
    return subprocess.run(
        [sys.executable, "-m", "metrics_etl.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["run", "--raw", "/nonexistent/raw"], "does not exist"),
        (["run", "--as-of", "yesterday"], "not an ISO 8601"),
        (["run", "--bogus"], "unrecognized arguments"),
        (["generate", "--events", "0"], "must be at least 1"),
        (["keys", "revoke", "--warehouse", "/nonexistent/wh", "abc"], "no key with id"),
        (["sql", "--warehouse", "/nonexistent/wh", "select 1"], "nothing is published"),
        (["get", "--warehouse", "/nonexistent/wh", "--account-id", "x", "/"], "invalid int value"),
        (["schedule", "--cron", "every tuesday"], "not a cron expression of five fields"),
        (["schedule", "--cron", "* * * * * *"], "not a cron expression of five fields"),
        # found by an adversarial try of the CLI (5 Dec 2026): each gave a traceback or worse
        (["serve", "--port", "99999"], "must be at most 65,535"),
        (["schedule", "--interval", "99999999999999999999"], "must be at most 316,224,000"),
        (["schedule", "--interval", "60", "--name", "a/b"], "is not a name"),
        (["generate", "--events", str(10**13)], "must be at most 1,000,000,000"),
        (["generate", "--raw", sys.executable], "is a file; give a folder"),
        (["keys", "list", "--warehouse", sys.executable], "is a file; give a folder"),
        (["run", "--warehouse", sys.executable], "is a file; give a folder"),
        (["run", "--dask-address", "notaurl"], "not a Dask scheduler's address"),
        (["sql", "--max-rows", str(2**63), "select 1"], "must be at most"),
        (["sql", "--warehouse", "/nonexistent/wh", "copy (select 1) to 'x.csv'"], "only reads"),
        (["sql", "--warehouse", "/nonexistent/wh", "export database 'x'"], "only reads"),
        (["sql", "--warehouse", "/nonexistent/wh", "select 1; select 2"], "one SQL statement"),
        (["sql", "--warehouse", "/nonexistent/wh", "-- nothing"], "one SQL statement, not 0"),
        (["watch", "--raw", "/nonexistent/raw", "--max-runs", "1"], "its last run failed"),
        (["watch", "--poll", "1e-9"], "from 0.01 to 86400"),
    ],
)
def test_bad_input_gives_one_line_error_and_nonzero_exit(args: list[str], needle: str) -> None:
    result = run_cli(*args)
    assert result.returncode != 0
    assert needle in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("METRICS_ETL_THREADS", "abc"),
        ("METRICS_ETL_THREADS", "0"),
        ("METRICS_ETL_RETENTION_MINUTES", "x"),
        ("METRICS_ETL_KEEP_SNAPSHOTS", "nan"),
        ("METRICS_ETL_MEMORY_LIMIT", "abc"),
        ("METRICS_ETL_MEMORY_LIMIT", "80%"),
        ("METRICS_ETL_TEMP_DIR", sys.executable),
    ],
)
def test_a_setting_set_wrongly_is_named_in_one_line(variable: str, value: str) -> None:
    """Every command, even --version, reads the settings: one line names the variable."""
    result = subprocess.run(
        [sys.executable, "-m", "metrics_etl.cli", "--version"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, variable: value},
    )
    assert result.returncode == 1
    assert result.stderr.startswith(f"metrics-etl: error: {variable}={value!r} is not ")
    assert len(result.stderr.strip().splitlines()) == 1


def test_empty_raw_folder_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "raw").mkdir()
    code = main(["run", "--raw", str(tmp_path / "raw"), "--warehouse", str(tmp_path / "wh")])
    assert code == 1
    assert "is empty" in capsys.readouterr().err


def test_run_flow_then_sql_and_keys(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    raw, wh = tmp_path / "raw", tmp_path / "wh"
    base_world(raw)
    jsonl(raw / "reports/r.jsonl", [report(1, "2016-11-07T14:00:00Z"), "not json"])
    assert main(["run", "--raw", str(raw), "--warehouse", str(wh), "--as-of", "2017-01-01"]) == 0
    out = capsys.readouterr().out
    assert "published snapshot" in out and "reports" in out
    assert main(["run", "--raw", str(raw), "--warehouse", str(wh), "--as-of", "2017-01-01"]) == 0
    again = capsys.readouterr().out
    assert "no-op" in again and "no new or changed raw files" in again
    assert main(["sql", "--warehouse", str(wh), "select count(*) as n from rejects"]) == 0
    assert "1" in capsys.readouterr().out
    assert main(["sql", "--warehouse", str(wh), "select * from no_such_table"]) == 1
    err = capsys.readouterr().err
    assert "no_such_table" in err and "Traceback" not in err
    assert main(["keys", "create", "--warehouse", str(wh), "--account-id", "1"]) == 0
    secret = capsys.readouterr().out.strip().splitlines()[-1]
    assert secret.startswith("mk_")
    assert main(["keys", "list", "--warehouse", str(wh)]) == 0
    listing = capsys.readouterr().out
    assert listing.splitlines()[1].split()[1] == "1" and secret not in listing  # account_id
    assert (
        main(["get", "--warehouse", str(wh), "--account-id", "1", "/batch/acme/report_stats"]) == 0
    )
    assert '"report_token": "tok1"' in capsys.readouterr().out


def test_second_run_is_a_noop_and_says_so(tmp_path: Path) -> None:
    raw, wh = tmp_path / "raw", tmp_path / "wh"
    base_world(raw)
    first = build(raw, wh, AS_OF)
    assert first.status == "published"
    second = build(raw, wh, AS_OF)
    assert second.status == "no-op"
    assert "no new or changed raw files" in second.message


@pytest.mark.parametrize(
    ("when", "expected"),
    [(["--cron", "*/15 * * * *"], {"cron": "*/15 * * * *"}), (["--interval", "90"], {})],
)
def test_schedule_builds_a_deployment_of_the_flow(
    tmp_path: Path, when: list[str], expected: dict[str, str]
) -> None:
    args = build_parser().parse_args(
        ["schedule", *when, "--raw", str(tmp_path / "raw"), "--warehouse", str(tmp_path / "wh")]
    )
    deployment = build_deployment(args)
    assert deployment.entrypoint == "metrics_etl.run.flow.etl"
    schedule = deployment.schedules[0].schedule
    if "cron" in expected:
        assert schedule.cron == expected["cron"]
    else:
        assert schedule.interval == dt.timedelta(seconds=90)
    assert deployment.parameters == {
        "raw": str(tmp_path / "raw"),
        "warehouse": str(tmp_path / "wh"),
    }


def test_each_run_is_recorded_in_runs_and_as_a_prefect_artifact(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import httpx
    from prefect.settings import PREFECT_API_URL

    from metrics_etl.serve.reader import open_snapshot

    raw, wh = tmp_path / "raw", tmp_path / "wh"
    base_world(raw)
    assert main(["run", "--raw", str(raw), "--warehouse", str(wh), "--as-of", "2017-01-01"]) == 0
    jsonl(raw / "reports/more.jsonl", [report(7, "2016-11-09T00:00:00Z")])
    assert main(["run", "--raw", str(raw), "--warehouse", str(wh), "--as-of", "2017-01-01"]) == 0
    capsys.readouterr()
    with open_snapshot(wh) as snap:
        rows = snap.conn.execute(
            "select status, files_loaded, records_accepted, partitions_written, summary->>'transform_mode' "
            "from runs order by started_at"
        ).fetchall()
    assert rows[0][:3] == ("published", 5, 13)  # 2 accounts, 4 channels, 3 users, 1 state, 3 fields
    assert rows[1][:3] == ("published", 1, 1)
    assert rows[1][4] == "incremental" and rows[0][4] == "full"
    assert rows[1][3] < rows[0][3]  # unchanged partitions are reused, not rewritten
    body = {
        "artifacts": {"key": {"any_": ["metrics-etl-run"]}},
        "limit": 10,
        "offset": 0,
        "sort": "CREATED_DESC",
    }
    artifacts = httpx.post(f"{PREFECT_API_URL.value()}/artifacts/filter", json=body).json()
    latest = artifacts[0]  # a table: one row per stream loaded, then the totals
    assert latest["type"] == "table" and "published snapshot" in latest["description"]
    assert json.loads(latest["data"]) == [
        {"stream": "reports", "files": 1, "lines": 1, "accepted": 1, "rejected": 0},
        {"stream": "total", "files": 1, "lines": 1, "accepted": 1, "rejected": 0},
    ]
