"""`metrics-etl serve --workers 2`: two worker processes answer over real HTTP, each follows
`current` on its own, and no answer comes from a partial snapshot while a run publishes."""

from __future__ import annotations

import datetime as dt
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from conftest import build
from metrics_etl.serve.keys import KeyStore
from metrics_etl.serve.reader import ANALYTICS
from rawkit import base_world, jsonl, reads, report
from snapshots import ask

AS_OF = dt.datetime(2017, 1, 1, tzinfo=dt.UTC)
REPO = Path(__file__).resolve().parent.parent


def urls() -> list[str]:
    """Every analytics endpoint for channel 1 over November 2016, and report-stats pages."""
    q = "channel_id=1&start_date=2016-11-01&end_date=2016-12-01T00:00:00.000001Z"
    extra = {
        "reports_per_field_selection": "&field_id=2",
        "reports_read": "&fields=total_reads,unique_reads,report_readers,reports_seen",
        "user_awareness": "&fields=total_alerts,unique_alerts,alert_source_reports,alerts_opened",
    }
    stats = ["/batch/acme/report_stats?per_page=2", "/batch/acme/report_stats?page=3&per_page=2"]
    return [*[f"/api/v4/analytics/{e}?{q}{extra.get(e, '')}" for e in ANALYTICS], *stats]


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def children(pid: int) -> list[int]:
    """The child processes of a process."""
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return [int(p) for p in text.split()]


def test_two_workers_follow_a_publish_and_never_answer_from_a_partial_snapshot(
    tmp_path: Path,
) -> None:
    raw, wh = tmp_path / "raw", tmp_path / "wh"
    base_world(raw)
    jsonl(raw / "reports/r.jsonl", [report(i, f"2016-11-0{i}T12:00:00Z") for i in range(1, 6)])
    jsonl(raw / "reads/r.jsonl", reads([1, 2, 3], 2, at="2016-11-05T10:00:00Z"))
    build(raw, wh, AS_OF)
    _, key = KeyStore(wh).create(1)
    headers = {"Authorization": f"Bearer {key}"}
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    command = [sys.executable, "-m", "metrics_etl.cli", "serve", "--warehouse", str(wh)]
    server = subprocess.Popen(
        [*command, "--port", str(port), "--workers", "2"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    requests = [(url, 1) for url in urls()]
    before = {url: body for (url, _), body in ask(wh, requests).items()}
    seen: list[tuple[str, int, object]] = []
    stop = threading.Event()
    # no keep-alive: every request is a new connection, so both workers take requests
    client = httpx.Client(
        base_url=f"http://127.0.0.1:{port}",
        timeout=60,
        limits=httpx.Limits(max_keepalive_connections=0),
    )

    def get(url: str) -> tuple[int, object]:
        response = client.get(url, headers=headers)
        return response.status_code, response.json()

    def hammer() -> None:
        while not stop.is_set():
            for url in urls():
                seen.append((url, *get(url)))

    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if get(urls()[0])[0] == 200:
                    break
            except httpx.TransportError:
                pass
            assert server.poll() is None, "the server exited"
            assert time.monotonic() < deadline, "the server did not answer within 120 s"
            time.sleep(0.2)
        assert len(children(server.pid)) >= 2, "two worker processes"
        for url in urls():
            assert get(url) == before[url], url
        worker = threading.Thread(target=hammer)
        worker.start()
        try:
            at = "2016-11-20T00:00:00Z"
            jsonl(raw / "reports/more.jsonl", [report(50, at, at, user_id=4)])
            jsonl(raw / "reads/more.jsonl", reads([9], 50, at="2016-11-20T01:00:00Z"))
            build(raw, wh, AS_OF)
            after = {url: body for (url, _), body in ask(wh, requests).items()}
            assert after != before
            # every worker follows `current`: 30 rounds in a row answered from the new snapshot
            deadline = time.monotonic() + 60
            fresh = 0
            while fresh < 30:
                assert time.monotonic() < deadline, "the workers did not all switch within 60 s"
                got = {url: get(url) for url in urls()}
                fresh = fresh + 1 if got == after else 0
        finally:
            stop.set()
            worker.join()
    finally:
        client.close()
        server.terminate()
        server.wait(timeout=60)
    assert len(seen) > len(urls())
    for url, status, body in seen:
        assert (status, body) in (before[url], after[url]), f"{url}: {status} {body}"
