"""The operable service: /healthz, /readyz (also while a snapshot switches), /metrics, the
snapshot id and ETag on answers (304 on a match), the load log line, and docs served offline.
Real `metrics-etl serve` processes where it matters."""

from __future__ import annotations

import datetime as dt
import gc
import os
import re
import threading
import time
import weakref
from pathlib import Path

import prometheus_client
import pytest
from fastapi.testclient import TestClient

from conftest import build
from metrics_etl.serve.http import Ops, create_app, etag_matches
from metrics_etl.serve.keys import KeyStore
from metrics_etl.serve.reader import Reader
from rawkit import base_world, jsonl, report
from served import serving, wait_ready

AS_OF = dt.datetime(2017, 1, 1, tzinfo=dt.UTC)
STATS = "/batch/acme/report_stats"
USERS = "/api/v4/analytics/reports_per_user?channel_id=1&start_date=2016-11-01&end_date=2016-12-01"


def world(raw: Path, reports: int = 5) -> None:
    """The base world and some reports in channel 1."""
    base_world(raw)
    jsonl(
        raw / "reports/r.jsonl",
        [report(i, f"2016-11-0{i % 9 + 1}T12:00:00Z") for i in range(1, reports + 1)],
    )


def current_id(warehouse: Path) -> str:
    """The id of the warehouse's current snapshot."""
    return Path(os.readlink(warehouse / "current")).name


def auth(key: str, **more: str) -> dict[str, str]:
    """Headers with a bearer key."""
    return {"Authorization": f"Bearer {key}", **more}


def metric(text: str, name: str, **labels: str) -> float | None:
    """A sample's value in Prometheus text, or None."""
    wanted = ",".join(f'{k}="{v}"' for k, v in labels.items())
    pattern = "^" + re.escape(name + (f"{{{wanted}}}" if labels else "")) + r" (\S+)$"
    found = re.search(pattern, text, re.MULTILINE)
    return float(found.group(1)) if found else None


def test_readiness_follows_the_snapshots_through_a_switch(tmp_path: Path) -> None:
    """Not ready before anything is published (alive all along); ready with the snapshot's id
    and age once its index is loaded; during a switch always ready, serving the old snapshot
    and then the new one, never back; one log line per load; metrics follow."""
    raw, wh = tmp_path / "raw", tmp_path / "wh"
    wh.mkdir()
    _, key = KeyStore(wh).create(1)
    with serving(wh, tmp_path / "server.log") as served:
        assert served.get("/healthz").json() == {"status": "ok"}
        response = served.get("/readyz")
        assert response.status_code == 503
        assert response.json() == {"status": "loading", "snapshot_id": None, "snapshot_age_seconds": None}  # fmt: skip
        unpublished = served.get(STATS, headers=auth(key))
        assert unpublished.status_code == 503 and unpublished.json()["error"] == "unavailable"
        world(raw)
        build(raw, wh, AS_OF)
        first = current_id(wh)
        ready = wait_ready(served)
        assert ready["status"] == "ready" and ready["snapshot_id"] == first
        assert 0 <= ready["snapshot_age_seconds"] < 600
        answer = served.get(STATS, headers=auth(key))
        assert answer.status_code == 200 and answer.headers["x-snapshot-id"] == first
        before = answer.json()["pagination"]["total_count"]

        seen: list[tuple[int, str | None, str | None, int | None]] = []
        stop = threading.Event()

        def poll() -> None:
            """Readiness and an answer, over and over, while the switch happens."""
            while not stop.is_set():
                ready = served.get("/readyz")
                answer = served.get(STATS, headers=auth(key))
                count = answer.json()["pagination"]["total_count"] if answer.status_code == 200 else None  # fmt: skip
                seen.append(
                    (
                        ready.status_code,
                        ready.json()["snapshot_id"],
                        answer.headers.get("x-snapshot-id"),
                        count,
                    )
                )
                time.sleep(0.02)

        poller = threading.Thread(target=poll)
        poller.start()
        try:
            jsonl(raw / "reports/more.jsonl", [report(50, "2016-11-20T00:00:00Z")])
            build(raw, wh, AS_OF)
            second = current_id(wh)
            deadline = time.monotonic() + 60
            while not seen or seen[-1][1] != second:
                assert time.monotonic() < deadline, "the new snapshot was not served within 60 s"
                time.sleep(0.05)
        finally:
            stop.set()
            poller.join()
        assert second != first
        assert {s[0] for s in seen} == {200}, "always ready during the switch"
        ids = [s[1] for s in seen]
        assert set(ids) == {first, second} or set(ids) == {second}
        assert ids == sorted(ids, key=[first, second].index), "never back to the old snapshot"
        for _, _, snapshot_id, count in seen:  # each answer is its snapshot's, whole
            assert (snapshot_id, count) in {(first, before), (second, before + 1)}
        metrics = served.get("/metrics").text
        log = served.log_text()
    assert metric(metrics, "metrics_etl_snapshot_info", snapshot_id=second) == 1
    assert metric(metrics, "metrics_etl_snapshot_info", snapshot_id=first) is None
    assert metric(metrics, "metrics_etl_snapshot_loads_total") == 2
    assert (metric(metrics, "metrics_etl_index_bytes") or 0) > 0
    assert (metric(metrics, "metrics_etl_index_load_seconds") or -1) >= 0
    assert 0 <= (metric(metrics, "metrics_etl_snapshot_age_seconds") or -1) < 600
    assert metric(metrics, "metrics_etl_ready") == 1
    stats = {"endpoint": "/batch/{organization}/report_stats", "status": "200"}
    assert (metric(metrics, "metrics_etl_http_requests_total", **stats) or 0) >= len(seen)
    # 503s: only before the first snapshot was loaded (the check above, and wait_ready's polls
    # until then); the switch itself had none (asserted on `seen`)
    assert (
        metric(metrics, "metrics_etl_http_requests_total", endpoint="/readyz", status="503") or 0
    ) >= 1
    assert metric(metrics, "metrics_etl_http_request_duration_seconds_count", **stats) == metric(
        metrics, "metrics_etl_http_requests_total", **stats
    )
    assert 'metrics_etl_http_request_duration_seconds_bucket{endpoint="/batch/{organization}/report_stats",le="0.005",status="200"}' in metrics  # fmt: skip
    loads = re.findall(r"serving snapshot (\S+?)(?: \(switched from (\S+)\))?: index loaded in ([0-9.]+) s, ([0-9]+) bytes", log)  # fmt: skip
    assert [(i, old) for i, old, _, _ in loads] == [(first, ""), (second, first)], log
    assert all(int(size) > 0 for *_, size in loads)
    assert "Traceback" not in log


@pytest.fixture
def client(tmp_path: Path):
    """A built warehouse, a TestClient of the app and a key of account 1."""
    raw, wh = tmp_path / "raw", tmp_path / "wh"
    world(raw)
    build(raw, wh, AS_OF)
    _, key = KeyStore(wh).create(1)
    with TestClient(create_app(wh)) as test_client:
        yield test_client, key, wh


def test_answers_carry_the_snapshot_id_and_an_etag_and_304_when_unchanged(client) -> None:
    test_client, key, wh = client
    first = test_client.get(USERS, headers=auth(key))
    assert first.status_code == 200 and first.headers["x-snapshot-id"] == current_id(wh)
    etag = first.headers["etag"]
    assert re.fullmatch(r'"[0-9a-f]{32}"', etag)
    for match in (etag, f"W/{etag}", f'"other", {etag}', "*"):
        again = test_client.get(USERS, headers=auth(key, **{"If-None-Match": match}))
        assert again.status_code == 304 and again.content == b"", match
        assert again.headers["etag"] == etag and again.headers["x-snapshot-id"] == current_id(wh)
    other = test_client.get(USERS, headers=auth(key, **{"If-None-Match": '"other"'}))
    assert (other.status_code, other.content) == (200, first.content)
    # a different answer has a different tag; errors are never 304 and carry no tag
    stats = test_client.get(STATS, headers=auth(key, **{"If-None-Match": etag}))
    assert stats.status_code == 200 and stats.headers["etag"] != etag
    missing = test_client.get(
        USERS.replace("channel_id=1", "channel_id=9"), headers=auth(key, **{"If-None-Match": "*"})
    )
    assert missing.status_code == 404 and missing.json()["error"] == "not_found"
    assert missing.headers["x-snapshot-id"] == current_id(wh) and "etag" not in missing.headers
    unauthorized = test_client.get(USERS, headers={"If-None-Match": "*"})
    assert unauthorized.status_code == 401 and "x-snapshot-id" not in unauthorized.headers


def test_etag_matching() -> None:
    assert etag_matches('"a"', '"a"') and etag_matches('W/"a"', '"a"')
    assert etag_matches(' "b" , "a" ', '"a"') and etag_matches("*", '"a"')
    assert not etag_matches(None, '"a"') and not etag_matches("", '"a"')
    assert not etag_matches('"ab"', '"a"') and not etag_matches("a", '"a"')


def test_docs_work_offline(client) -> None:
    """Swagger UI and ReDoc pages load their assets from this server, never from a CDN."""
    test_client, _, _ = client
    for page, assets in [
        ("/docs", ["swagger-ui-bundle.js", "swagger-ui.css"]),
        ("/redoc", ["redoc.standalone.js"]),
    ]:
        response = test_client.get(page)
        assert response.status_code == 200 and "text/html" in response.headers["content-type"]
        urls = re.findall(r"""(?:src|href)=["']([^"']+)["']""", response.text)
        urls += re.findall(r"""url: ?["']([^"']+)["']""", response.text)
        assert urls and not [u for u in urls if "://" in u or u.startswith("//")], urls
        for asset in assets:
            assert f"/docs-assets/{asset}" in urls
            served = test_client.get(f"/docs-assets/{asset}")
            assert served.status_code == 200 and len(served.content) > 10_000, asset
    assert test_client.get("/openapi.json").status_code == 200


def test_health_and_metrics_need_no_key_and_count_by_route(client) -> None:
    test_client, key, _ = client
    assert test_client.get("/healthz").json() == {"status": "ok"}
    deadline = time.monotonic() + 60
    while test_client.get("/readyz").status_code != 200:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    test_client.get(USERS, headers=auth(key))
    test_client.get(USERS)
    test_client.get("/batch/a%2Fb/report_stats", headers=auth(key))
    test_client.get("/nowhere")
    test_client.post(USERS)
    response = test_client.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    text = response.text
    users = "/api/v4/analytics/reports_per_user"
    assert metric(text, "metrics_etl_http_requests_total", endpoint=users, status="200") == 1
    assert metric(text, "metrics_etl_http_requests_total", endpoint=users, status="401") == 1
    assert metric(text, "metrics_etl_http_requests_total", endpoint=users, status="405") == 1
    batch = "/batch/{organization}/report_stats"
    assert metric(text, "metrics_etl_http_requests_total", endpoint=batch, status="404") == 1
    assert metric(text, "metrics_etl_http_requests_total", endpoint="other", status="404") == 1
    assert b"metrics_etl_" not in prometheus_client.generate_latest()  # a registry per app


def test_not_ready_while_current_is_gone(client) -> None:
    """Readiness follows what can be answered: `current` removed is a 503 (and the API says
    unavailable), `current` back is ready again."""
    test_client, key, wh = client

    def readiness(status: int) -> dict:
        deadline = time.monotonic() + 60
        while (response := test_client.get("/readyz")).status_code != status:
            assert time.monotonic() < deadline, response.text
            time.sleep(0.05)
        return response.json()

    snapshot_id = readiness(200)["snapshot_id"]
    target = os.readlink(wh / "current")
    (wh / "current").unlink()
    assert readiness(503)["status"] == "loading"
    assert test_client.get(USERS, headers=auth(key)).json()["error"] == "unavailable"
    (wh / "current").symlink_to(target)
    assert readiness(200)["snapshot_id"] == snapshot_id


def test_the_server_freezes_its_heap_after_each_switch_and_frees_the_replaced_snapshot(
    tmp_path: Path,
) -> None:
    """The server's own app collects and freezes its long-lived heap once a snapshot is served
    (so the collector's full passes never pause a request); after a switch the replaced
    snapshot is still freed, and answers come from the new one."""
    raw, wh = tmp_path / "raw", tmp_path / "wh"
    world(raw)
    build(raw, wh, AS_OF)
    reader = Reader(wh, background=True)
    ops = Ops(reader, settle=True)
    watcher = threading.Thread(target=ops.watch, daemon=True)
    try:
        watcher.start()
        assert ops.ready.wait(60)
        first = ops.served
        assert first is not None
        deadline = time.monotonic() + 60
        while gc.get_freeze_count() == 0:  # settled on the watch thread just after serving
            assert time.monotonic() < deadline, "the heap was not frozen"
            time.sleep(0.05)
        gone = weakref.ref(first)
        before = reader.get("/batch/acme/report_stats", 1)[1]["pagination"]["total_count"]
        del first
        jsonl(raw / "reports/more.jsonl", [report(50, "2016-11-20T00:00:00Z")])
        build(raw, wh, AS_OF)
        second = current_id(wh)
        deadline = time.monotonic() + 60
        while ops.served is None or ops.served.snapshot_id != second:
            assert time.monotonic() < deadline, "the new snapshot was not served within 60 s"
            time.sleep(0.05)
        while gone() is not None:  # the switch's own collection runs just after it is served
            assert time.monotonic() < deadline, "the replaced snapshot was never freed"
            time.sleep(0.05)
        after = reader.get("/batch/acme/report_stats", 1)[1]["pagination"]["total_count"]
        assert after == before + 1
    finally:
        ops.stop.set()
        watcher.join(30)
        reader.close()
        gc.unfreeze()  # the rest of this test process's heap as it was
