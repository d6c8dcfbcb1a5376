"""Hostile input to the API: ASCII 64-bit integers, real instants only, data and ranges at
years 0001 and 9999, arbitrary query strings and header values. Never a 5xx; every 200 equals
the reference."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from urllib.parse import quote, unquote

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from conftest import build
from metrics_etl.serve.http import create_app
from metrics_etl.serve.keys import KeyStore
from metrics_etl.serve.reader import ANALYTICS, Reader
from rawkit import T0, base_world, jsonl, report
from reference import Reference
from snapshots import assert_same_tables, same

AS_OF = dt.datetime(2017, 1, 1, tzinfo=dt.UTC)
FIRST = "0001-01-01T00:00:00Z"
LAST = "9999-12-31T23:59:59.999999Z"
ORG3 = "a/b c-ü"  # an organization name that needs percent-encoding, a slash included
# Instants at the edges of the calendar and ordinary ones around a New York DST night. New York
# keeps its local mean time (-4:56:02) back to year 1, so 04:58Z on 0001-01-01 is local 00:01:58
# on Monday while 00:30Z is 19:33:58 on Sunday 0000-12-31 (a day before year 1).
TIMES = [
    "0001-01-01T00:00:00Z",
    "0001-01-01T00:30:00Z",
    "0001-01-01T04:58:00Z",
    "0001-01-01T05:10:00.5Z",
    "0001-01-09T12:00:00Z",
    "2016-11-06T05:30:00Z",
    "2016-11-06T06:30:00.25Z",
    "2016-11-07T12:00:00Z",
    "9999-12-31T04:00:00Z",
    "9999-12-31T23:00:00Z",
    "9999-12-31T23:59:59.999999Z",
]
# channel -> owning account: New York, Kathmandu (+05:45, local year 10000 at the end), UTC
CHANNELS = {1: 1, 2: 2, 5: 3}


def hostile_raw(raw: Path) -> None:
    """Base world plus an account with a slash in its name, and every kind of event at TIMES."""
    base_world(raw)
    jsonl(
        raw / "accounts/b.jsonl",
        [{"account_id": 3, "username": ORG3, "name": "Slash", "updated_at": T0}],
    )
    jsonl(
        raw / "channels/b.jsonl",
        [{"channel_id": 5, "account_id": 3, "name": "utc", "updated_at": T0}],
    )
    reports, reads, alerts, images = [], [], [], []
    for n, t in enumerate(TIMES):
        for channel, account in CHANNELS.items():
            rid = 100 * channel + n
            reports.append(
                report(
                    rid,
                    t,
                    account_id=account,
                    channel_id=channel,
                    user_id=3 + n % 3,
                    state_id=1 if n % 2 else None,
                    selections=[{"field_id": 2, "value": "a"}] if channel == 1 else None,
                )
            )
            reads.append(
                {
                    "read_id": rid,
                    "account_id": account,
                    "report_id": rid - n % 3,
                    "user_id": 3 + n % 2,
                    "read_at": t,
                }
            )
            alerts.append(
                {
                    "delivery_id": rid,
                    "alert_id": n % 3,
                    "account_id": account,
                    "report_id": rid - n % 2,
                    "user_id": 3 + n % 3,
                    "sent_at": t,
                }
            )
            images.append(
                {
                    "report_image_id": rid,
                    "report_id": rid - n % 4,
                    "account_id": account,
                    "created_at": t,
                    "updated_at": T0,
                    "styles": {"thumb": "t", "medium": "m"},
                }
            )
    jsonl(raw / "reports/r.jsonl", reports)
    jsonl(raw / "reads/r.jsonl", reads)
    jsonl(raw / "alerts/a.jsonl", alerts)
    jsonl(raw / "report_images/i.jsonl", images)
    jsonl(
        raw / "alert_opens/o.jsonl",
        [{"open_id": 1, "delivery_id": 100, "account_id": 1, "opened_at": LAST}],
    )


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The hostile raw folder and its warehouse, built once."""
    root = tmp_path_factory.mktemp("hostile")
    raw, wh = root / "raw", root / "wh"
    hostile_raw(raw)
    summary = build(raw, wh, AS_OF)
    assert summary.status == "published"
    assert all(s["rejected"] == 0 for s in summary.streams.values()), summary.streams
    return raw, wh


@pytest.fixture(scope="module")
def world(built: tuple[Path, Path]):
    """The reference, an in-process reader and an HTTP client with keys per account."""
    raw, wh = built
    store = KeyStore(wh)
    keys = {account: store.create(account)[1] for account in (1, 2, 3)}
    reader = Reader(wh)
    with TestClient(create_app(wh), raise_server_exceptions=False) as client:
        yield Reference(raw, AS_OF), reader, client, keys
    reader.close()


def analytics(endpoint: str, channel: object, start: str, end: str, extra: str = "") -> str:
    """An analytics path with its dates percent-encoded."""
    return (
        f"/api/v4/analytics/{endpoint}?channel_id={channel}"
        f"&start_date={quote(start)}&end_date={quote(end)}{extra}"
    )


def extras(endpoint: str) -> list[str]:
    """The endpoint's own parameters worth varying."""
    if endpoint == "reports_over_time":
        return ["", *(f"&datetime_range_width={w}" for w in ("hour", "day", "week", "month"))]
    if endpoint == "reports_per_field_selection":
        return ["&field_id=2"]
    if endpoint == "reports_read":
        return ["&fields=total_reads,unique_reads,report_readers,reports_seen"]
    if endpoint == "user_awareness":
        return ["&fields=total_alerts,unique_alerts,alert_source_reports,alerts_opened"]
    return [""]


# -- item 4: integers are ASCII and 64-bit; dates are real instants -------------------------


@pytest.mark.parametrize(
    ("channel", "status"),
    [
        ("\u0661", 400),  # Arabic-Indic digit one: int() reads it as 1
        ("\u0967", 400),  # Devanagari digit one
        ("-9223372036854775808", 404),  # the least int64: an integer, no such channel
        ("9223372036854775807", 404),
        ("9223372036854775808", 400),
        ("-9223372036854775809", 400),
        ("9" * 4301, 400),  # int() raises ValueError past 4300 digits
        ("-" + "1" * 5000, 400),
        ("0" * 5000 + "1", 200),  # leading zeros: the integer 1
        ("%2B1", 200),
        ("+1", 400),  # a query's '+' is a space
        ("%201", 400),  # a space is not part of an integer
        ("1_0", 400),
    ],
)
def test_integer_parameters_are_ascii_64_bit(world, channel: str, status: int) -> None:
    ref, reader, _, _ = world
    path = analytics("reports_per_user", quote(channel, safe="%+"), "2016-11-01", "2016-12-01")
    assert path.isascii()
    got = reader.get(path, 1)
    assert got[0] == status, got
    assert same(ref.get(path, 1), got)
    if status == 400:
        message = got[1]["message"]
        assert "channel_id" in message and len(message) < 300 and "\n" not in message


@pytest.mark.parametrize("name", ["page", "per_page"])
@pytest.mark.parametrize("value", ["\u0661", "9" * 4400, "-9223372036854775809"])
def test_report_stats_integers_are_ascii_64_bit(world, name: str, value: str) -> None:
    _, reader, _, _ = world
    status, body = reader.get(f"/batch/acme/report_stats?{name}={quote(value)}", 1)
    assert status == 400 and name in body["message"], body


@pytest.mark.parametrize(
    "date",
    [
        "2016-11-01T24:00:00Z",  # hour 24
        "2016-11-01T10:60:00Z",
        "2016-11-01T10:00:60Z",  # no leap seconds
        "2016-13-01",
        "2016-02-30",
        "0000-01-01",  # year 0
        "0000-12-31T23:00:00-01:00",  # 0001-01-01T00:00Z, but year 0 as written
        "2016-11-01T10:00:00+24:00",  # offsets within ±23:59
        "2016-11-01T10:00:00-05:60",
        "2016-11-01T10:00:00+9999",
        "0001-01-01T00:30:00+01:00",  # before 0001-01-01T00:00Z
        "9999-12-31T23:30:00-01:00",  # after 9999-12-31T23:59:59.999999Z
        "\u0662\u0660\u0661\u0666-11-01",  # Arabic-Indic digits
        "2016-11-01T1\u0660:00:00Z",
        "10000-01-01",
        "",
    ],
)
def test_dates_are_real_instants_in_ascii(world, date: str) -> None:
    ref, reader, _, _ = world
    for start, end, name in [(date, "2017-01-01", "start_date"), ("2016-01-01", date, "end_date")]:
        path = analytics("reports_per_user", 1, start, end)
        got = reader.get(path, 1)
        assert got[0] == 400 and name in got[1]["message"], got
        assert same(ref.get(path, 1), got)


@pytest.mark.parametrize(
    ("start", "end"),
    [
        ("0001-01-01T00:00:00-23:59", "0001-01-02"),
        ("0001-01-01", LAST),
        ("9999-12-31T23:59:59.999999+23:59", "9999-12-31T23:59:59.9999999999Z"),
    ],
)
def test_extreme_valid_dates_are_accepted(world, start: str, end: str) -> None:
    ref, reader, _, _ = world
    path = analytics("reports_per_user", 1, start, end)
    got = reader.get(path, 1)
    assert got[0] == 200 and got == ref.get(path, 1)


# -- item 5: never a 500; ranges and data at years 0001 and 9999 ----------------------------

EDGE_RANGES = [
    (FIRST, "0001-01-01T00:00:00.000001Z"),
    (FIRST, "0001-01-01T00:45:00Z"),
    (FIRST, "0001-01-01T01:00:00Z"),
    ("0001-01-01T00:30:00Z", "0001-01-01T01:29:59Z"),
    ("0001-01-01T04:57:00Z", "0001-01-01T04:59:00Z"),
    (FIRST, "0001-02-01"),
    ("9999-12-31T23:00:00Z", LAST),
    ("9999-12-31T23:30:00Z", LAST),
    ("9999-12-31T22:59:59.999999Z", "9999-12-31T23:59:59Z"),
    ("9999-12-01", LAST),
    (FIRST, LAST),
    ("2016-11-06T05:00:00Z", "2016-11-06T07:00:00Z"),
]


@pytest.mark.parametrize(("start", "end"), EDGE_RANGES)
def test_ranges_at_the_edges_of_the_calendar_equal_reference(world, start: str, end: str) -> None:
    ref, reader, _, _ = world
    for channel, account in CHANNELS.items():
        for endpoint in ANALYTICS:
            for extra in extras(endpoint):
                path = analytics(endpoint, channel, start, end, extra)
                expected = ref.get(path, account)
                field_elsewhere = endpoint == "reports_per_field_selection" and channel != 1
                assert expected[0] == (404 if field_elsewhere else 200), (path, expected)
                assert same(expected, reader.get(path, account)), path


def test_a_bucket_starting_before_year_one_starts_at_the_first_instant(world) -> None:
    _, reader, _, _ = world
    starts = {}
    for width in ("hour", "day", "week", "month"):
        path = analytics(
            "reports_over_time", 1, FIRST, "0001-01-02", f"&datetime_range_width={width}"
        )
        status, rows = reader.get(path, 1)
        assert status == 200
        starts[width] = [(r["datetime_range_start"], r["report_count"]) for r in rows]
    # 00:00Z and 00:30Z are local Sunday 0000-12-31 (New York's -4:56:02): their hour, day, week
    # and month all begin before year 1, so start at its first instant. 04:58Z and 05:10Z are
    # local 00:01:58 and 00:13:58 on Monday 0001-01-01, whose midnight is 04:56:02Z.
    assert starts["hour"] == [("0001-01-01T00:00:00.000Z", 2), ("0001-01-01T04:56:02.000Z", 2)]
    for width in ("day", "week", "month"):
        assert starts[width] == [("0001-01-01T00:00:00.000Z", 2), ("0001-01-01T04:56:02.000Z", 2)]


def test_local_mean_time_attributes_are_exact_within_a_quarter_hour(world) -> None:
    """04:58Z is in the 04:45Z quarter hour, which New York's LMT cuts at 04:56:02Z."""
    _, reader, _, _ = world
    path = analytics("reports_per_day_hour", 1, "0001-01-01T04:45:00Z", "0001-01-01T05:00:00Z")
    assert reader.get(path, 1) == (200, [{"account_id": 1, "hour": 0, "report_count": 1}])
    path = path.replace("reports_per_day_hour", "reports_per_week_day")
    assert reader.get(path, 1) == (200, [{"account_id": 1, "dow": 1, "report_count": 1}])


def test_the_end_of_year_9999_in_kathmandu_is_local_year_10000(world) -> None:
    _, reader, _, _ = world
    path = analytics(
        "reports_over_time", 2, "9999-12-31T20:00:00Z", LAST, "&datetime_range_width=month"
    )
    # 23:00Z is local 10000-01-01 04:45 (+05:45). The event at 23:59:59.999999Z is in no range:
    # end_date is exclusive and cannot be later.
    assert reader.get(path, 2) == (
        200,
        [
            {
                "account_id": 2,
                "datetime_range_start": "9999-12-31T18:15:00.000Z",
                "report_count": 1,
                "datetime_range_width": "month",
            }
        ],
    )


def test_incremental_equals_full_at_the_edges(built, tmp_path: Path) -> None:
    """Slots at years 1 and 9999 (per second before 1980) come out the same when the reports
    arrive in a later, incremental run."""
    _, full = built
    raw, wh = tmp_path / "raw", tmp_path / "wh"
    hostile_raw(raw)
    (raw / "reports").rename(tmp_path / "reports")
    build(raw, wh, AS_OF)
    (tmp_path / "reports").rename(raw / "reports")
    assert build(raw, wh, AS_OF).transform_mode == "incremental"
    assert_same_tables(wh, full)


# -- property: arbitrary query strings, header values and extreme dates --------------------

DAY_US = 86_400_000_000
OFFSETS = st.integers(-(23 * 60 + 59), 23 * 60 + 59)


def instant_text(t: dt.datetime, offset_minutes: int, style: int) -> str:
    """A UTC instant written in one of several ISO 8601 styles: at an offset (whose local date
    may be in year 0 or 10000, written out: a 400), without an offset, or as a date alone."""
    frac = f".{t.microsecond:06d}" if style % 2 else ""
    if style >= 4:
        day = f"{t.year:04d}-{t:%m-%d}"
        return day if style == 4 else f"{day}T{t:%H:%M:%S}{frac}"
    try:
        local = t + dt.timedelta(minutes=offset_minutes)
        text = f"{local.year:04d}-{local:%m-%dT%H:%M:%S}"
    except OverflowError:
        text = "0000-12-31T23:59:59" if offset_minutes < 0 else "10000-01-01T00:00:00"
    sign = "-" if offset_minutes < 0 else "+"
    hh, mm = divmod(abs(offset_minutes), 60)
    zone = f"{sign}{hh:02d}:{mm:02d}" if style < 2 else f"{sign}{hh:02d}{mm:02d}"
    return text + frac + ("Z" if offset_minutes == 0 and style == 0 else zone)


extreme_instants = st.one_of(
    st.datetimes(dt.datetime(1, 1, 1), dt.datetime(1, 1, 3)),
    st.datetimes(dt.datetime(9999, 12, 29), dt.datetime(9999, 12, 31, 23, 59, 59, 999999)),
    st.datetimes(dt.datetime(2016, 11, 5), dt.datetime(2016, 11, 8)),
    st.sampled_from([dt.datetime.fromisoformat(t[:-1]) for t in TIMES]),
)
dates = st.one_of(
    st.builds(instant_text, extreme_instants, OFFSETS | st.just(0), st.integers(0, 5)),
    st.builds(instant_text, extreme_instants, st.just(0), st.integers(0, 5)),
    st.sampled_from(["0001-01-01", "9999-12-31", FIRST, LAST, "0000-01-01", "2016-11-06T24:00Z"]),
    st.text(st.sampled_from("0123456789-+:.TZ \u0661"), max_size=30),
)
integers = st.one_of(
    st.sampled_from(["1", "2", "5", "3", "4", "999", "-9223372036854775808", "00001"]),
    st.integers(-(2**65), 2**65).map(str),
    st.text(st.sampled_from("0123456789+- \u0661\u0967_"), max_size=25),
    st.builds(lambda n, d: d * n, st.integers(4290, 4400), st.sampled_from(["9", "1", "0"])),
)
words = st.sampled_from(
    ["", "hour", "day", "week", "month", "year", "all", "none", "total_reads,reports_seen",
     "unique_alerts,alerts_opened", "bogus", "total_reads,,unique_reads", "alerts_opened"]
)  # fmt: skip
NAMES = ["channel_id", "start_date", "end_date", "field_id", "datetime_range_width", "fields",
         "page", "per_page", "include_spaces"]  # fmt: skip
values = {
    "channel_id": integers,
    "field_id": integers | st.just("2"),
    "page": integers,
    "per_page": integers,
    "start_date": dates,
    "end_date": dates,
}
junk = st.text(st.characters(codec="utf-8", exclude_characters="#"), max_size=20)


@st.composite
def requests(draw: st.DrawFn) -> tuple[str, int]:
    """A path and query (as sent: printable ASCII, other characters percent-encoded), and the
    caller's account."""
    target = draw(st.sampled_from([*ANALYTICS, "report_stats", "other"]))
    account = draw(st.sampled_from([1, 2, 3]))
    if target == "report_stats":
        org = draw(st.sampled_from(["acme", "kat", ORG3, "ac%6De", "acme%252D", "nope", ""]))
        path = f"/batch/{quote(org, safe='%')}/report_stats"
    elif target == "other":
        path = draw(st.sampled_from(["/", "/api/v4/analytics/", "/batch/acme/report_stats/", "/x"]))
    else:
        path = f"/api/v4/analytics/{target}"
    own = {"channel_id": str({1: 1, 2: 2, 3: 5}[account]), "field_id": "2"}
    a, b = sorted(draw(st.lists(extreme_instants, min_size=2, max_size=2, unique=True)))
    offsets = st.sampled_from([0, 0, -300, 345, -(23 * 60 + 59), 23 * 60 + 59])
    own["start_date"] = instant_text(a, draw(offsets), draw(st.integers(0, 5)))
    own["end_date"] = instant_text(b, draw(offsets), draw(st.integers(0, 5)))
    query = []
    for name in NAMES:
        if draw(st.integers(0, 9)) < (9 if name in ("channel_id", "start_date", "end_date") else 3):
            for _ in range(draw(st.integers(1, 2))):  # repeated: the last one wins
                kind = draw(st.integers(0, 9))  # mostly plausible values, some hostile, some junk
                if kind < 6 and name in own:
                    value = own[name]
                elif kind < 9:
                    value = draw(values.get(name, words))
                else:
                    value = draw(junk)
                query.append(f"{name}={quote(value, safe=draw(st.sampled_from(['', ':+'])))}")
    if draw(st.booleans()):
        query.insert(
            draw(st.integers(0, len(query))), draw(junk.map(lambda s: quote(s, safe="=&+")))
        )
    return path + ("?" + "&".join(query) if query else ""), account


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(request=requests())
def test_arbitrary_requests_in_process_equal_reference(world, request: tuple[str, int]) -> None:
    ref, reader, _, _ = world
    path, account = request
    got = reader.get(path, account)
    assert got[0] in (200, 400, 404), (path, got)
    event(f"status {got[0]}")
    assert same(ref.get(path, account), got), path
    if got[0] != 200:
        assert set(got[1]) == {"error", "message"} and "\n" not in got[1]["message"]


def routed(target: str) -> bool:
    """Whether the server has a route for a target's (percent-decoded) path."""
    path = unquote(target.partition("?")[0])
    analytics_paths = {f"/api/v4/analytics/{e}" for e in ANALYTICS}
    return path in analytics_paths or re.fullmatch("/batch/.*/report_stats", path) is not None


headers = st.one_of(
    st.sampled_from(["valid", "bearer valid"]),
    st.sampled_from(["valid", "bearer valid"]),
    st.sampled_from(["valid", "Bearer", "Bearer ", "Bearer nope", "Basic dXNlcjpwYXNz", ""]),
    st.binary(max_size=40).filter(lambda b: b"\r" not in b and b"\n" not in b and b"\0" not in b),
)


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    request=requests(),
    auth=headers,
    other=st.binary(max_size=30).filter(lambda b: not set(b) & {0, 10, 13}),
    method=st.sampled_from(["GET"] * 6 + ["POST", "HEAD", "DELETE"]),
)
def test_arbitrary_requests_over_http_are_never_5xx(
    world, request: tuple[str, int], auth: str | bytes, other: bytes, method: str
) -> None:
    ref, _, client, keys = world
    path, account = request
    valid = auth in ("valid", "bearer valid")
    if isinstance(auth, str):
        auth = auth.replace(
            "valid", f"Bearer {keys[account]}" if auth == "valid" else keys[account]
        )
    response = client.request(
        method, path, headers={"Authorization": auth, "X-Anything": other, "Accept": other}
    )
    status = response.status_code
    event(f"status {status}")
    assert status < 500, (method, path, status, response.text)
    sent = response.request.url.raw_path.decode("ascii")  # the target as the client sent it
    if method != "GET":
        assert status == (405 if routed(sent) else 404)
        if status == 405:
            assert response.headers["allow"] == "GET"
    elif not valid:
        assert status == (401 if routed(sent) else 404)
        if status == 401:
            assert response.headers["www-authenticate"] == "Bearer"
    else:
        assert same(ref.get(sent, account), (status, response.json())), sent
