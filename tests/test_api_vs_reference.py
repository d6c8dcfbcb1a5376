"""Hundreds of randomized API requests over generated data, compared with the reference."""

from __future__ import annotations

import datetime as dt
import random
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient

from conftest import build
from metrics_etl.generator.generate import generate
from metrics_etl.serve.http import create_app
from metrics_etl.serve.keys import KeyStore
from metrics_etl.serve.reader import ANALYTICS, Reader
from reference import Reference
from snapshots import same

UTC = dt.UTC
NY = "America/New_York"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory):
    """Generated raw data, a built warehouse, the reference and the reader."""
    root = tmp_path_factory.mktemp("api")
    raw, wh = root / "raw", root / "wh"
    summary = generate(raw, events=12_000, seed=11)
    as_of = dt.datetime.fromisoformat(summary["as_of"].replace("Z", "+00:00"))
    build(raw, wh, as_of)
    reader = Reader(wh)
    yield raw, wh, Reference(raw, as_of), reader, summary
    reader.close()


def test_rejects_are_exactly_the_bad_records_the_generator_wrote(world) -> None:
    _, _, ref, reader, summary = world
    snap = reader.snapshot()
    per_stream = dict(
        snap.conn.execute("select stream, count(*) from rejects group by stream").fetchall()
    )
    assert per_stream == {k: v for k, v in summary["bad_records"].items() if v}
    per_file = dict(
        snap.conn.execute("select file, count(*) from rejects group by file").fetchall()
    )
    assert per_file == {f: info["bad"] for f, info in summary["files"].items() if info["bad"]}
    assert len(ref.rejects) == sum(per_stream.values())


def fmt(t: dt.datetime, style: int) -> str:
    """Render an instant in one of several accepted ISO 8601 styles."""
    if style == 0:
        return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    if style == 1:
        return t.astimezone(dt.timezone(dt.timedelta(hours=5, minutes=45))).isoformat()
    if style == 2:
        return t.astimezone(dt.timezone(dt.timedelta(hours=-5))).isoformat()
    if style == 3:
        return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")  # no offset: UTC
    return t.astimezone(UTC).strftime("%Y-%m-%d")  # date alone


def random_range(rng: random.Random) -> tuple[str, str]:
    """A random [start, end): aligned or not, short or long, around DST nights or not."""
    lo = dt.datetime(2015, 12, 1, tzinfo=UTC)
    kind = rng.randrange(6)
    if kind == 0:  # New York fall-back and spring-forward nights
        night = rng.choice(
            [
                dt.datetime(2016, 11, 6, 5, tzinfo=UTC),
                dt.datetime(2017, 3, 12, 6, tzinfo=UTC),
                dt.datetime(2017, 11, 5, 5, tzinfo=UTC),
            ]
        )
        start = night - dt.timedelta(hours=rng.randrange(0, 30), microseconds=rng.randrange(10**6))
        end = night + dt.timedelta(hours=rng.randrange(1, 30), microseconds=rng.randrange(10**6))
    else:
        start = lo + dt.timedelta(
            seconds=rng.randrange(0, 760 * 86400),
            microseconds=rng.randrange(10**6) if kind < 4 else 0,
        )
        span = rng.choice(
            [
                dt.timedelta(minutes=rng.randrange(1, 180)),
                dt.timedelta(hours=rng.randrange(1, 49)),
                dt.timedelta(days=rng.randrange(1, 63)),
                dt.timedelta(days=rng.randrange(60, 740)),
                dt.timedelta(days=rng.randrange(700, 900)),
            ]
        )
        end = start + span + dt.timedelta(microseconds=rng.randrange(10**6) if kind < 3 else 0)
        if kind == 5:
            start = start.replace(minute=0, second=0, microsecond=0)
            end = end.replace(minute=0, second=0, microsecond=0) + dt.timedelta(hours=1)
    style = rng.randrange(5)
    if style == 4:
        end = end + dt.timedelta(days=1)
    return fmt(start, style), fmt(end, style)


def random_requests(ref: Reference, n: int, seed: int) -> list[tuple[str, int]]:
    """(path, account) pairs covering every endpoint, field, width and error path."""
    rng = random.Random(seed)
    channels = ref.current("channels")
    accounts = sorted(ref.current("accounts"))
    fields = sorted(ref.current("fields"))
    ny = [a for a, r in ref.current("accounts").items() if r["timezone"] == NY]
    requests = []
    for _ in range(n):
        channel_id = (
            rng.choice([*sorted(channels), 999_999])
            if rng.random() < 0.9
            else rng.choice(sorted(channels))
        )
        owner = channels.get(channel_id, {}).get("account_id", rng.choice(accounts))
        account = owner if rng.random() < 0.9 else rng.choice(accounts)
        start, end = random_range(rng)
        if rng.random() < 0.05:
            start, end = end, start
        endpoint = rng.choice(ANALYTICS)
        q = f"channel_id={channel_id}&start_date={quote(start)}&end_date={quote(end)}"
        if endpoint == "reports_over_time" and rng.random() < 0.5:
            q += "&datetime_range_width=" + rng.choice(["hour", "day", "week", "month", "year"])
        if endpoint == "reports_per_field_selection":
            q += "&field_id=" + str(
                rng.choice([*fields, 424242, "abc"]) if rng.random() < 0.95 else ""
            )
        if endpoint in ("reports_read", "user_awareness"):
            names = (
                ["total_reads", "unique_reads", "report_readers", "reports_seen"]
                if endpoint == "reports_read"
                else ["total_alerts", "unique_alerts", "alert_source_reports", "alerts_opened"]
            )
            chosen = rng.sample(names, rng.randrange(0, 5))
            if rng.random() < 0.05:
                chosen.append("bogus")
            if chosen or rng.random() < 0.5:
                q += "&fields=" + ",".join(chosen)
        if rng.random() < 0.02:
            q = q.replace("channel_id=", "channel_id=x")
        requests.append((f"/api/v4/analytics/{endpoint}?{q}", account))
    for _ in range(n // 10):
        account = rng.choice(accounts + ny)
        org = ref.current("accounts")[rng.choice(accounts)]["username"]
        q = []
        if rng.random() < 0.7:
            q.append(f"page={rng.choice([1, 1, 2, 3, 0, 'x', 50])}")
        if rng.random() < 0.7:
            q.append(f"per_page={rng.choice([1, 7, 10, 100, 1000, 0, 1001])}")
        if rng.random() < 0.5:
            q.append(f"include_spaces={rng.choice(['all', 'all', 'none'])}")
        requests.append((f"/batch/{org}/report_stats?{'&'.join(q)}", account))
    return requests


def test_randomized_requests_in_process_equal_reference(world) -> None:
    _, _, ref, reader, _ = world
    requests = random_requests(ref, 700, seed=1)
    mismatches = [(p, a) for p, a in requests if not same(ref.get(p, a), reader.get(p, a))]
    assert not mismatches, f"{len(mismatches)} of {len(requests)} differ, e.g. {mismatches[:3]}"
    statuses = {ref.get(p, a)[0] for p, a in requests}
    assert statuses == {200, 400, 404}
    nonempty = sum(1 for p, a in requests if (r := ref.get(p, a))[0] == 200 and r[1])
    assert nonempty > 200  # the comparison is not over empty answers


def test_every_report_stats_page_equals_reference(world) -> None:
    _, _, ref, reader, _ = world
    for account_id, account in sorted(ref.current("accounts").items()):
        for per_page in (1, 7, 100, 1000):
            for spaces in ("", "&include_spaces=all"):
                page = 1
                while True:
                    path = f"/batch/{account['username']}/report_stats?page={page}&per_page={per_page}{spaces}"
                    expected = ref.get(path, account_id)
                    assert reader.get(path, account_id) == expected, path
                    if page > expected[1]["pagination"]["total_pages"]:
                        break
                    page += 1


def test_randomized_requests_over_http_equal_reference(world) -> None:
    _, wh, ref, _, _ = world
    store = KeyStore(wh)
    keys = {a: store.create(a)[1] for a in ref.current("accounts")}
    requests = random_requests(ref, 120, seed=2)
    with TestClient(create_app(wh)) as client:
        for path, account in requests:
            response = client.get(path, headers={"Authorization": f"Bearer {keys[account]}"})
            assert same(ref.get(path, account), (response.status_code, response.json())), path


def test_hand_picked_edges(world) -> None:
    """Microsecond edges and DST nights for the busiest New York channel."""
    _, _, ref, reader, _ = world
    channels = ref.current("channels")
    accounts = ref.current("accounts")
    ny = [
        c
        for c, r in channels.items()
        if accounts.get(r["account_id"], {}).get("timezone") == NY and not r.get("deleted_at")
    ]
    assert ny
    for channel_id in ny[:3]:
        account = channels[channel_id]["account_id"]
        for start, end in [
            ("2016-11-06T04:59:59.999999Z", "2016-11-06T07:00:00.000001Z"),
            ("2016-11-06T05:30:00Z", "2016-11-06T06:30:00Z"),
            ("2017-03-12T06:59:59.999999Z", "2017-03-12T08:00:00Z"),
            ("2016-01-01", "2018-01-01"),
            ("2016-03-01T00:00:00.000001-05:00", "2017-03-01T00:00:00-05:00"),
        ]:
            for endpoint in ANALYTICS:
                extra = "&field_id=1" if endpoint == "reports_per_field_selection" else ""
                path = f"/api/v4/analytics/{endpoint}?channel_id={channel_id}&start_date={quote(start)}&end_date={quote(end)}{extra}"
                assert same(ref.get(path, account), reader.get(path, account)), path
