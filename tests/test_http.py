"""The HTTP server: auth, JSON errors, and answers equal to the in-process reader."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from conftest import build
from metrics_etl.serve.http import create_app
from metrics_etl.serve.keys import KeyStore
from metrics_etl.serve.reader import Reader
from rawkit import base_world, jsonl, report

AS_OF = dt.datetime(2017, 1, 1, tzinfo=dt.UTC)
RANGE = "start_date=2016-11-01&end_date=2016-12-01"


@pytest.fixture
def served(tmp_path: Path):
    """A built warehouse, a client, and keys for accounts 1 and 2."""
    raw, wh = tmp_path / "raw", tmp_path / "wh"
    base_world(raw)
    jsonl(
        raw / "reports/r.jsonl",
        [report(i, f"2016-11-0{i}T12:00:00Z", user_id=3 + i % 2) for i in range(1, 6)],
    )
    build(raw, wh, AS_OF)
    store = KeyStore(wh)
    _, key1 = store.create(1)
    _, key2 = store.create(2)
    with TestClient(create_app(wh)) as client:
        yield client, raw, wh, key1, key2, store


def auth(key: str) -> dict[str, str]:
    """Authorization header for a key."""
    return {"Authorization": f"Bearer {key}"}


def test_missing_bad_and_revoked_keys_are_401(served) -> None:
    client, _, _, key1, _, store = served
    url = f"/api/v4/analytics/reports_per_user?channel_id=1&{RANGE}"
    assert client.get(url).status_code == 401
    assert client.get(url, headers=auth("nope")).json()["error"] == "unauthorized"
    assert client.get(url, headers={"Authorization": key1}).status_code == 401
    assert client.get(url, headers=auth(key1)).status_code == 200
    store.revoke(store.list()[0]["key_id"])
    assert client.get(url, headers=auth(key1)).status_code == 401


def test_answers_equal_the_reader_and_other_accounts_are_404(served) -> None:
    client, _, wh, key1, key2, _ = served
    reader = Reader(wh)
    for path in [
        f"/api/v4/analytics/reports_per_user?channel_id=1&{RANGE}",
        f"/api/v4/analytics/reports_over_time?channel_id=1&{RANGE}&datetime_range_width=day",
        f"/api/v4/analytics/reports_read?channel_id=1&{RANGE}&fields=total_reads,reports_seen",
        "/batch/acme/report_stats?per_page=2&page=2",
    ]:
        response = client.get(path, headers=auth(key1))
        assert (response.status_code, response.json()) == reader.get(path, 1)
    other = client.get(
        f"/api/v4/analytics/reports_per_user?channel_id=1&{RANGE}", headers=auth(key2)
    )
    assert other.status_code == 404 and other.json()["error"] == "not_found"
    assert client.get("/batch/acme/report_stats", headers=auth(key2)).status_code == 404


@pytest.mark.parametrize(
    ("query", "status", "needle"),
    [
        ("channel_id=x&" + RANGE, 400, "channel_id"),
        ("start_date=2016-11-01&end_date=2016-12-01", 400, "channel_id"),
        ("channel_id=1&start_date=2016-12-01&end_date=2016-11-01", 400, "start_date"),
        ("channel_id=1&start_date=nope&end_date=2016-11-01", 400, "start_date"),
        ("channel_id=1&" + RANGE + "&datetime_range_width=year", 400, "datetime_range_width"),
        ("channel_id=4&" + RANGE, 404, "channel_id"),
        ("channel_id=999&" + RANGE, 404, "channel_id"),
    ],
)
def test_errors_are_json_with_code_and_message(
    served, query: str, status: int, needle: str
) -> None:
    client, _, _, key1, _, _ = served
    response = client.get(f"/api/v4/analytics/reports_over_time?{query}", headers=auth(key1))
    assert response.status_code == status
    body = response.json()
    assert set(body) == {"error", "message"} and needle in body["message"]


def test_unknown_path_is_json_404_and_docs_exist(served) -> None:
    client, _, _, key1, _, _ = served
    response = client.get("/api/v4/analytics/nope", headers=auth(key1))
    assert response.status_code == 404 and response.json()["error"] == "not_found"
    assert client.get("/openapi.json").status_code == 200
    assert "reports_per_user" in client.get("/openapi.json").text


def test_small_http_edges(served) -> None:
    """A trailing slash is a 404, not a 307; the organization is percent-decoded once; a 401
    names the Bearer scheme and a 405 the allowed method."""
    client, _, _, key1, _, _ = served
    users = f"/api/v4/analytics/reports_per_user?channel_id=1&{RANGE}"
    for path in [users.replace("?", "/?"), "/batch/acme/report_stats/", "/api/v4/analytics/"]:
        response = client.get(path, headers=auth(key1), follow_redirects=False)
        assert response.status_code == 404, path
        assert response.json()["error"] == "not_found" and "location" not in response.headers
    assert client.get("/batch/ac%6De/report_stats", headers=auth(key1)).status_code == 200
    twice = client.get("/batch/ac%256De/report_stats", headers=auth(key1))  # once: 'ac%6De'
    assert twice.status_code == 404 and "ac%6De" in twice.json()["message"]
    for headers in [{}, auth("nope"), {"Authorization": key1}]:
        response = client.get(users, headers=headers)
        assert response.status_code == 401 and response.headers["www-authenticate"] == "Bearer"
    for method in ("POST", "PUT", "DELETE", "HEAD"):
        response = client.request(method, users, headers=auth(key1))
        assert response.status_code == 405 and response.headers["allow"] == "GET", method


def test_new_snapshot_is_served_without_restart(served) -> None:
    client, raw, wh, key1, _, _ = served
    url = f"/batch/acme/report_stats?{RANGE}"
    before = client.get(url, headers=auth(key1)).json()["pagination"]["total_count"]
    jsonl(raw / "reports/more.jsonl", [report(50, "2016-11-20T00:00:00Z")])
    build(raw, wh, AS_OF)
    deadline = time.monotonic() + 60
    while True:  # the server loads the new snapshot aside, answering from the previous one
        after = client.get(url, headers=auth(key1)).json()["pagination"]["total_count"]
        if after == before + 1:
            break
        assert after == before, "every answer comes from one whole snapshot"
        assert time.monotonic() < deadline, "the new snapshot was not served within 60 s"
        time.sleep(0.05)
