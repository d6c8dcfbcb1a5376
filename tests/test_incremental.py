"""Incremental runs equal one full rebuild, whatever the order and split of the raw files.

The contract ("Arrival order"): however files are split over runs and in whatever order they
arrive, the published tables after a run equal those of one full rebuild from all files loaded
so far. A seeded-random property test splits generated data over 2-5 runs; hand-built cases
cover the nasty orders (older snapshot after a newer one, a report that moves channel after its
events were counted, opens before deliveries, reads before their report, a changed file).
"""

from __future__ import annotations

import datetime as dt
import random
import shutil
from collections.abc import Iterable
from pathlib import Path

import duckdb
import pytest

from conftest import build
from metrics_etl.generator.generate import generate
from metrics_etl.serve.reader import ANALYTICS
from rawkit import base_world, jsonl, reads, report
from snapshots import ask, assert_same_tables, manifest_of, published_tables, records

UTC = dt.UTC
HAND_AS_OF = dt.datetime(2017, 1, 1, tzinfo=UTC)
# (seed, run after which the prefix is also compared with its own full rebuild)
SPLITS = ((9, 0), (3, None), (11, None))  # 2, 3 and 5 runs

# --------------------------------------------------------------------------- comparison helpers


def assert_same_answers(got: Path, want: Path | dict, requests: list[tuple[str, int]]) -> None:
    """The reader answers every request identically from both warehouses (or as recorded)."""
    a, b = ask(got, requests), want if isinstance(want, dict) else ask(want, requests)
    diffs = [(req, a[req], b[req]) for req in requests if a[req] != b[req]]
    assert not diffs, f"{len(diffs)} of {len(requests)} answers differ, e.g. {diffs[:2]}"


def analytics_urls(channel_id: int, field_id: int, start: str, end: str) -> list[str]:
    """Every analytics endpoint for one channel and range (all read/awareness fields)."""
    q = f"channel_id={channel_id}&start_date={start}&end_date={end}"
    urls = []
    for endpoint in ANALYTICS:
        extra = ""
        if endpoint == "reports_per_field_selection":
            extra = f"&field_id={field_id}"
        elif endpoint == "reports_read":
            extra = "&fields=total_reads,unique_reads,report_readers,reports_seen"
        elif endpoint == "user_awareness":
            extra = "&fields=total_alerts,unique_alerts,alert_source_reports,alerts_opened"
        urls.append(f"/api/v4/analytics/{endpoint}?{q}{extra}")
    return urls


def stats_urls(organization: str) -> list[str]:
    """Report-stats pages: the first two small pages, and a page with personal spaces included."""
    base = f"/batch/{organization}/report_stats"
    return [
        f"{base}?page=1&per_page=7",
        f"{base}?page=2&per_page=7",
        f"{base}?include_spaces=all&page=2&per_page=5",
    ]


def copy_files(src: Path, dst: Path, rels: Iterable[str]) -> Path:
    """Copy raw files (same relative paths) from src into dst."""
    for rel in rels:
        target = dst / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src / rel, target)
    dst.mkdir(parents=True, exist_ok=True)
    return dst


def raw_files(raw: Path) -> list[str]:
    """Relative paths of every file under raw (the generator's `_generator.json` aside)."""
    return sorted(
        p.relative_to(raw).as_posix()
        for p in raw.rglob("*")
        if p.is_file() and not p.name.startswith("_")
    )


def build_incrementally(raw: Path, warehouse: Path, as_of: dt.datetime = HAND_AS_OF):
    """A run on top of an existing warehouse; it must take the incremental transform path."""
    summary = build(raw, warehouse, as_of)
    assert summary.status == "published", summary.message
    # without this the tests below would only prove the full transform
    mode = getattr(summary, "transform_mode", "incremental")
    assert mode == "incremental", f"expected an incremental transform, got {mode}"
    return summary


def full_rebuild(
    folders: list[Path], raw: Path, warehouse: Path, as_of: dt.datetime = HAND_AS_OF
) -> Path:
    """One full build of all files of the run folders (a later folder's version of a path wins)."""
    for folder in folders:
        copy_files(folder, raw, raw_files(folder))
    build(raw, warehouse, as_of)
    return warehouse


# --------------------------------------------------------------------------- property test


def generated_full_build(
    root: Path, events: int, seed: int
) -> tuple[Path, list[str], dt.datetime, Path]:
    """Generated raw files under root/gen, their files, as-of time, and one full build of them."""
    gen = root / "gen"
    summary = generate(gen, events=events, seed=seed)
    as_of = dt.datetime.fromisoformat(summary["as_of"].replace("Z", "+00:00"))
    files = raw_files(gen)
    full = root / "full"
    build(copy_files(gen, root / "full_raw", files), full, as_of)
    return gen, files, as_of, full


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory):
    """Generated raw files, their full rebuild, and a set of requests chosen from it."""
    gen, files, as_of, full = generated_full_build(
        tmp_path_factory.mktemp("incremental"), events=1000, seed=17
    )
    tables = published_tables(full)
    assert tables["fct_reads"][1] and tables["fct_deliveries"][1] and tables["rejects"][1]
    requests = requests_for(full)
    answers = ask(full, requests)
    hits = [body for status, body in answers.values() if status == 200 and body not in ([], {})]
    assert len(hits) > len(requests) // 2, "the request set should mostly hit data"
    return gen, files, as_of, full, requests, answers


def requests_for(warehouse: Path) -> list[tuple[str, int]]:
    """Every endpoint for the busiest channels (one per account), a personal and a deleted one."""
    with duckdb.connect() as con:
        manifest = manifest_of(warehouse)
        for table in ("dim_channels", "dim_fields", "dim_accounts", "fct_reports"):
            paths = [str(warehouse / f) for f in manifest["tables"][table]["files"]]
            con.execute(f"create view {table} as select * from read_parquet({paths!r})")
        busiest = con.execute(
            """
            select c.channel_id, c.account_id from dim_channels c
            join fct_reports r using (channel_id)
            where not c.is_deleted and not c.personal
            group by c.channel_id, c.account_id
            qualify row_number() over (partition by c.account_id order by count(*) desc, c.channel_id) = 1
            order by count(*) desc limit 3
            """
        ).fetchall()
        personal = con.execute(
            "select c.channel_id, c.account_id from dim_channels c join fct_reports r using (channel_id) "
            "where c.personal and not c.is_deleted group by c.channel_id, c.account_id "
            "order by count(*) desc, 1 limit 1"
        ).fetchall()
        deleted = con.execute(
            "select channel_id, account_id from dim_channels where is_deleted order by 1 limit 1"
        ).fetchall()
        fields = dict(
            con.execute(
                "select account_id, min(field_id) from dim_fields "
                "where field_type in ('Category', 'DropDown', 'Radio') group by all"
            ).fetchall()
        )
        accounts = con.execute(
            "select account_id, username from dim_accounts order by 1"
        ).fetchall()
        first_report = dict(
            con.execute(
                "select channel_id, min(created_at) from fct_reports group by all"
            ).fetchall()
        )
    wide = [
        ("2015-12-01", "2018-03-01"),  # everything: month buckets, whole hours only
        (
            "2016-09-10T07:20:00.123456-04:00",
            "2017-03-14T17:40:10Z",
        ),  # partial edges, two DST changes
    ]
    requests = []
    for index, (channel_id, account_id) in enumerate(busiest + personal):
        # an hour-width range with partial edges around the channel's first report
        t = first_report[channel_id]
        near = (
            iso(t - dt.timedelta(hours=5, minutes=30)),
            iso(t + dt.timedelta(hours=20, microseconds=1)),
        )
        for start, end in [wide[index % 2], near]:
            for u in analytics_urls(channel_id, fields.get(account_id, 1), start, end):
                requests.append((u, account_id))
    for channel_id, account_id in deleted:
        requests.extend((u, account_id) for u in analytics_urls(channel_id, 1, *wide[0]))
    for account_id, username in accounts:
        requests.extend((u, account_id) for u in stats_urls(username))
    return requests


def iso(t: dt.datetime) -> str:
    """An instant as a query-string-safe ISO 8601 value."""
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def random_split(files: list[str], seed: int) -> list[list[str]]:
    """Shuffle the files and cut them into 2-5 non-empty runs."""
    rng = random.Random(seed)
    shuffled = files[:]
    rng.shuffle(shuffled)
    runs = rng.randint(2, 5)
    cuts = sorted(rng.sample(range(1, len(shuffled)), runs - 1))
    return [shuffled[lo:hi] for lo, hi in zip([0, *cuts], [*cuts, len(shuffled)], strict=True)]


@pytest.mark.parametrize(("seed", "check_prefix_at"), SPLITS)
def test_random_split_equals_full_rebuild(
    generated, tmp_path: Path, seed: int, check_prefix_at: int | None
) -> None:
    """Generated files, shuffled and split over 2-5 runs, publish the same tables and answers as one rebuild."""
    gen, files, as_of, full, requests, answers = generated
    runs = random_split(files, seed)
    assert sorted(f for run in runs for f in run) == files
    warehouse = tmp_path / "wh"
    modes = []
    for index, run in enumerate(runs):
        summary = build(copy_files(gen, tmp_path / f"raw{index}", run), warehouse, as_of)
        assert summary.status in ("published", "no-op"), summary.message
        modes.append(getattr(summary, "transform_mode", "incremental"))
        if index == check_prefix_at:  # "after a run" means after every run, not only the last
            prefix = [f for r in runs[: index + 1] for f in r]
            rebuilt = tmp_path / "prefix"
            build(copy_files(gen, tmp_path / "prefix_raw", prefix), rebuilt, as_of)
            assert_same_tables(warehouse, rebuilt)
    assert "incremental" in modes[1:], f"no later run used the incremental transform: {modes}"
    assert_same_tables(warehouse, full)
    assert_same_answers(warehouse, answers, requests)


def test_report_stats_built_in_account_batches_equals_one_pass(
    generated, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full build that makes report_stats one account at a time publishes the same tables."""
    from metrics_etl.models import build as transform

    gen, files, as_of, full, _requests, _answers = generated
    batches: list[int] = []
    one_batch = transform.build_by_accounts

    def spy(conn: duckdb.DuckDBPyConnection, model: transform.Model) -> int:
        batches.append(one_batch(conn, model))
        return batches[-1]

    monkeypatch.setattr(transform, "MIN_BATCH_REPORTS", 1)
    monkeypatch.setattr(transform, "REPORT_BYTES", 2**60)
    monkeypatch.setattr(transform, "build_by_accounts", spy)
    warehouse = tmp_path / "wh"
    build(copy_files(gen, tmp_path / "raw", files), warehouse, as_of)
    accounts = {row["account_id"] for row in records(published_tables(full), "report_stats")}
    assert batches == [len(accounts)] and len(accounts) > 1
    assert_same_tables(warehouse, full)


def test_splits_cover_many_shapes(generated) -> None:
    """The seeds are not degenerate: 2, 3 and 5 runs, most streams split over runs, events before their reports."""
    files = generated[1]
    for seed, _ in SPLITS:
        split = random_split(files, seed)
        runs_of: dict[str, set[int]] = {}
        for index, run in enumerate(split):
            for f in run:
                runs_of.setdefault(f.split("/")[0], set()).add(index)
        assert sum(len(r) > 1 for r in runs_of.values()) >= 8, (
            f"seed {seed}: few streams split over runs"
        )
        assert min(runs_of["reads"]) < max(runs_of["reports"]), (
            f"seed {seed}: no reads file before a reports file"
        )
    assert {len(random_split(files, seed)) for seed, _ in SPLITS} == {2, 3, 5}


# --------------------------------------------------------------------------- nasty cases

RANGE = "start_date=2016-01-01&end_date=2017-01-01"
READ_FIELDS = "fields=total_reads,unique_reads,report_readers,reports_seen"
AWARE_FIELDS = "fields=total_alerts,unique_alerts,alert_source_reports,alerts_opened"


def url(endpoint: str, channel_id: int, extra: str = "") -> str:
    """An analytics request over 2016 for channel_id."""
    return f"/api/v4/analytics/{endpoint}?channel_id={channel_id}&{RANGE}" + (
        f"&{extra}" if extra else ""
    )


def hand_requests() -> list[tuple[str, int]]:
    """Every endpoint for the hand-built world's channels of account 1, plus report stats."""
    reqs = [(u, 1) for ch in (1, 3) for u in analytics_urls(ch, 2, "2016-01-01", "2017-01-01")]
    reqs += [
        (u, 1)
        for u in analytics_urls(1, 2, "2016-11-07T14:03:11.25Z", "2016-11-08T10:00:00.000001Z")
    ]
    reqs += [(u, 1) for u in stats_urls("acme")]
    return reqs


def one(warehouse: Path, path: str, account_id: int = 1) -> object:
    """The body of a 200 answer."""
    status, body = ask(warehouse, [(path, account_id)])[(path, account_id)]
    assert status == 200, body
    return body


def reads_of(warehouse: Path, channel_id: int) -> dict[str, int]:
    return one(warehouse, url("reports_read", channel_id, READ_FIELDS))  # type: ignore[return-value]


def stats_of(warehouse: Path) -> dict[int, dict]:
    body = one(warehouse, "/batch/acme/report_stats?include_spaces=all")
    return {row["report_id"]: row for row in body["report_stats"]}  # type: ignore[index]


def delivery(delivery_id: int, report_id: int, user_id: int = 4, alert_id: int = 5) -> dict:
    return {
        "delivery_id": delivery_id,
        "alert_id": alert_id,
        "account_id": 1,
        "report_id": report_id,
        "user_id": user_id,
        "sent_at": "2016-11-07T14:04:00Z",
    }


def open_of(open_id: int, delivery_id: int) -> dict:
    return {
        "open_id": open_id,
        "delivery_id": delivery_id,
        "account_id": 1,
        "opened_at": "2016-11-09T08:00:00Z",
    }


def test_older_report_snapshot_after_newer(tmp_path: Path) -> None:
    """A newer report version loaded in run 1 stays current when an older one arrives in run 2."""
    r1, r2, inc = tmp_path / "r1", tmp_path / "r2", tmp_path / "inc"
    base_world(r1)
    created = "2016-11-07T14:03:11.250Z"
    jsonl(
        r1 / "reports/new.jsonl",
        [
            report(
                10,
                created,
                "2016-12-01T00:00:00Z",
                channel_id=1,
                state_id=1,
                selections=[{"field_id": 2, "value": "a"}],
            )
        ],
    )
    jsonl(r1 / "reads/r.jsonl", reads([1, 2], 10))
    build(r1, inc, HAND_AS_OF)
    # the older version names another channel, no state and no selection
    jsonl(
        r2 / "reports/old.jsonl",
        [report(10, created, "2016-11-08T00:00:00Z", channel_id=3, state_id=None)],
    )
    build_incrementally(r2, inc)

    over_time = one(inc, url("reports_over_time", 1, "datetime_range_width=month"))
    assert [(r["datetime_range_start"], r["report_count"]) for r in over_time] == [
        ("2016-11-01T04:00:00.000Z", 1)
    ]
    assert one(inc, url("reports_over_time", 3)) == []
    assert one(inc, url("reports_per_state", 1)) == [
        {"id": 1, "name": "Open", "account_id": 1, "report_count": 1}
    ]
    assert one(inc, url("reports_per_field_selection", 1, "field_id=2"))[0]["report_count"] == 1
    assert reads_of(inc, 1)["total_reads"] == 2 and reads_of(inc, 3)["total_reads"] == 0

    full = full_rebuild([r1, r2], tmp_path / "all", tmp_path / "full")
    assert_same_tables(inc, full)
    assert_same_answers(inc, full, hand_requests())


def test_report_moves_channel_after_its_events_were_counted(tmp_path: Path) -> None:
    """Reads and alerts counted in run 1 move, with the report, to its new channel in run 2."""
    r1, r2, inc = tmp_path / "r1", tmp_path / "r2", tmp_path / "inc"
    base_world(r1)
    created = "2016-11-07T14:03:11.250Z"
    jsonl(
        r1 / "reports/v1.jsonl",
        [
            report(
                20,
                created,
                "2016-11-08T00:00:00Z",
                channel_id=1,
                selections=[{"field_id": 2, "value": "a"}],
            ),
            report(21, created, "2016-11-08T00:00:00Z", channel_id=1),
        ],
    )
    jsonl(
        r1 / "reads/r.jsonl",
        [*reads([1, 2], 20, user_id=4), *reads([3], 20, user_id=5), *reads([4], 21)],
    )
    jsonl(
        r1 / "alerts/a.jsonl", [delivery(7, 20, user_id=4), delivery(8, 20, user_id=5, alert_id=6)]
    )
    jsonl(r1 / "alert_opens/o.jsonl", [open_of(1, 7)])
    build(r1, inc, HAND_AS_OF)
    assert reads_of(inc, 1) == {
        "total_reads": 4,
        "unique_reads": 3,
        "report_readers": 2,
        "reports_seen": 2,
    }
    assert len(one(inc, url("user_awareness", 1, AWARE_FIELDS))) == 2
    assert reads_of(inc, 3)["total_reads"] == 0

    jsonl(
        r2 / "reports/v2.jsonl",
        [
            report(
                20,
                created,
                "2016-12-01T00:00:00Z",
                channel_id=3,
                selections=[{"field_id": 2, "value": "a"}],
            )
        ],
    )
    build_incrementally(r2, inc)
    # the old channel keeps only report 21's read; the new one gets everything of report 20
    assert reads_of(inc, 1) == {
        "total_reads": 1,
        "unique_reads": 1,
        "report_readers": 1,
        "reports_seen": 1,
    }
    assert reads_of(inc, 3) == {
        "total_reads": 3,
        "unique_reads": 2,
        "report_readers": 2,
        "reports_seen": 1,
    }
    assert one(inc, url("user_awareness", 1, AWARE_FIELDS)) == []
    awareness = {row["user_id"]: row for row in one(inc, url("user_awareness", 3, AWARE_FIELDS))}
    assert {u: (r["total_alerts"], r["alerts_opened"]) for u, r in awareness.items()} == {
        4: (1, 1),
        5: (1, 0),
    }
    assert sum(r["report_count"] for r in one(inc, url("reports_over_time", 1))) == 1
    assert sum(r["report_count"] for r in one(inc, url("reports_over_time", 3))) == 1
    assert one(inc, url("reports_per_field_selection", 1, "field_id=2")) == []
    assert one(inc, url("reports_per_field_selection", 3, "field_id=2"))[0]["report_count"] == 1
    assert stats_of(inc)[20]["total_views_count"] == 3

    full = full_rebuild([r1, r2], tmp_path / "all", tmp_path / "full")
    assert_same_tables(inc, full)
    assert_same_answers(inc, full, hand_requests())


def test_alert_opens_before_their_deliveries(tmp_path: Path) -> None:
    """Opens loaded before their deliveries are kept and count once the deliveries arrive."""
    r1, r2, inc = tmp_path / "r1", tmp_path / "r2", tmp_path / "inc"
    base_world(r1)
    jsonl(r1 / "reports/r.jsonl", [report(30, "2016-11-07T14:03:11.250Z")])
    jsonl(r1 / "alert_opens/early.jsonl", [open_of(1, 70), open_of(2, 70), open_of(3, 71)])
    build(r1, inc, HAND_AS_OF)
    assert one(inc, url("user_awareness", 1, AWARE_FIELDS)) == []

    jsonl(
        r2 / "alerts/late.jsonl.gz",
        [
            delivery(70, 30, user_id=3),
            delivery(71, 30, user_id=4),
            delivery(72, 30, user_id=4, alert_id=9),
        ],
        gz=True,
    )
    build_incrementally(r2, inc)
    awareness = one(inc, url("user_awareness", 1, AWARE_FIELDS))
    assert awareness == [
        {
            "total_alerts": 2,
            "unique_alerts": 2,
            "alert_source_reports": 1,
            "alerts_opened": 1,
            "user_id": 4,
            "first_name": None,
            "last_name": None,
        },
        {
            "total_alerts": 1,
            "unique_alerts": 1,
            "alert_source_reports": 1,
            "alerts_opened": 1,
            "user_id": 3,
            "first_name": "John",
            "last_name": "Doe",
        },
    ]

    full = full_rebuild([r1, r2], tmp_path / "all", tmp_path / "full")
    assert_same_tables(inc, full)
    assert_same_answers(inc, full, hand_requests())


def test_reads_before_their_report(tmp_path: Path) -> None:
    """Reads loaded before their report count from the run in which the report arrives."""
    r1, r2, inc = tmp_path / "r1", tmp_path / "r2", tmp_path / "inc"
    base_world(r1)
    jsonl(r1 / "reads/early.jsonl", [*reads([1, 2, 3], 40), *reads([4], 40, user_id=3)])
    jsonl(
        r1 / "explorations/e.jsonl",
        [
            {
                "exploration_id": 1,
                "account_id": 1,
                "report_id": 40,
                "user_id": 3,
                "created_at": "2016-11-09T00:00:00Z",
            }
        ],
    )
    build(r1, inc, HAND_AS_OF)
    assert reads_of(inc, 1)["total_reads"] == 0
    assert 40 not in stats_of(inc)

    jsonl(r2 / "reports/late.jsonl", [report(40, "2016-11-07T14:03:11.250Z")])
    build_incrementally(r2, inc)
    assert reads_of(inc, 1) == {
        "total_reads": 4,
        "unique_reads": 2,
        "report_readers": 2,
        "reports_seen": 1,
    }
    row = stats_of(inc)[40]
    assert (row["total_views_count"], row["explorations_count"]) == (4, 1)

    full = full_rebuild([r1, r2], tmp_path / "all", tmp_path / "full")
    assert_same_tables(inc, full)
    assert_same_answers(inc, full, hand_requests())


def test_keys_left_unrecorded_make_the_next_transform_full(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run that loads files without recording their keys (its models had changed, so its
    transform would be full) and stops before transforming: the next run, with the models as
    they were, still rebuilds in full and misses nothing."""
    from metrics_etl.ingest import load
    from metrics_etl.models import build as transform
    from metrics_etl.run import pipeline, progress

    r1, r2, inc = tmp_path / "r1", tmp_path / "r2", tmp_path / "inc"
    base_world(r1)
    jsonl(r1 / "reports/r.jsonl", [report(40, "2016-11-07T14:03:11.250Z")])
    jsonl(r1 / "reads/a.jsonl", reads([1, 2], 40))
    build(r1, inc, HAND_AS_OF)
    jsonl(r2 / "reads/b.jsonl", reads([3, 4], 40, user_id=3))
    with monkeypatch.context() as patch:
        patch.setattr(transform, "models_hash", lambda root=None: "other models")
        writer = pipeline.Writer(inc)
        try:  # the run's load steps alone: it stops before its transform
            summary = pipeline.new_summary(HAND_AS_OF, False)
            todo, track = pipeline.plan_task.fn(writer, pipeline.discover(r2), summary)
            for stream, files in load.by_stream(todo).items():
                pipeline.ingest_stream.fn(writer, stream, files, summary, track, progress.Bar())
            assert writer.conn.execute("select count(*) from dirty_keys").fetchall() == [(0,)]
        finally:
            writer.close()
    summary = build(r2, inc, HAND_AS_OF)
    assert summary.transform_mode == "full"
    assert reads_of(inc, 1)["total_reads"] == 4
    assert_same_tables(inc, full_rebuild([r1, r2], tmp_path / "all", tmp_path / "full"))


def test_changed_file_replaces_its_earlier_content(tmp_path: Path) -> None:
    """A path loaded again with new content: its old records and rejects are gone, as in a rebuild."""
    r1, r2, inc = tmp_path / "r1", tmp_path / "r2", tmp_path / "inc"
    base_world(r1)
    jsonl(
        r1 / "reports/r.jsonl",
        [report(50, "2016-11-07T14:03:11.250Z"), report(51, "2016-11-07T15:00:00Z")],
    )
    jsonl(r1 / "reads/batch.jsonl", [*reads([1, 2, 3, 4], 50), '{"read_id": "broken', ""])
    build(r1, inc, HAND_AS_OF)
    assert reads_of(inc, 1)["total_reads"] == 4

    # same path, new content: reads 1 and 2 stay, 3 and 4 are gone, 5 is new, another bad line
    jsonl(r2 / "reads/batch.jsonl", [*reads([1, 2], 50), *reads([5], 51), "[1, 2]"])
    build_incrementally(r2, inc)
    assert reads_of(inc, 1) == {
        "total_reads": 3,
        "unique_reads": 2,
        "report_readers": 1,
        "reports_seen": 2,
    }
    assert stats_of(inc)[50]["total_views_count"] == 2
    tables = published_tables(inc)
    rejects = [(r["file"], r["line"], r["raw"]) for r in records(tables, "rejects")]
    assert rejects == [("reads/batch.jsonl", 4, "[1, 2]")]
    stats = {r["file"]: r for r in records(tables, "file_stats")}["reads/batch.jsonl"]
    assert (stats["lines_read"], stats["blank_lines"], stats["accepted"], stats["rejected"]) == (
        4,
        0,
        3,
        1,
    )

    full = full_rebuild([r1, r2], tmp_path / "all", tmp_path / "full")
    assert_same_tables(inc, full)
    assert_same_answers(inc, full, hand_requests())


# --------------------------------------------------------------------------- snapshot changes
# Each test loads a small world in run 1, changes snapshots in later runs (incrementally), and
# compares every published table and reader answer with one full rebuild of the same files.


def account(timezone: str, username: str = "acme", updated_at: str = "2016-12-01T00:00:00Z"):
    return {
        "account_id": 1,
        "username": username,
        "name": "Acme",
        "timezone": timezone,
        "updated_at": updated_at,
    }


def event(stream: str, key: int, report_id: int, user_id: int, at: str, **extra: object) -> dict:
    """An edit, run or exploration of a report."""
    names = {
        "report_edits": ("edit_id", "edited_at"),
        "report_runs": ("run_id", "ran_at"),
        "explorations": ("exploration_id", "created_at"),
    }
    id_name, time_name = names[stream]
    return {
        id_name: key,
        "account_id": 1,
        "report_id": report_id,
        "user_id": user_id,
        time_name: at,
        **extra,
    }


def busy_world(raw: Path) -> None:
    """The rawkit world with reports in three channels (one deleted) and events of every kind."""
    base_world(raw)
    sel = [{"field_id": 2, "value": "a"}]
    jsonl(
        raw / "reports/r.jsonl",
        [
            report(60, "2016-11-07T14:03:11.250Z", selections=sel),
            report(61, "2016-11-20T23:30:00Z", user_id=4, state_id=None),
            report(62, "2016-12-01T04:59:59.999999Z", channel_id=3, selections=sel),
            report(63, "2016-10-02T12:00:00Z", channel_id=4),  # its channel is deleted
            report(64, "2016-03-13T06:45:00Z", user_id=5),  # a spring-forward night
        ],
    )
    jsonl(
        raw / "reads/r.jsonl",
        [
            *reads([1, 2], 60),
            *reads([3], 61, user_id=3, at="2016-11-21T04:30:00Z"),
            *reads([4], 62, at="2016-12-02T00:00:00Z"),
            *reads([5], 63),
            *reads([6], 64, user_id=5, at="2016-03-13T07:15:00Z"),
        ],
    )
    jsonl(
        raw / "alerts/a.jsonl",
        [
            delivery(7, 60),
            delivery(8, 61, user_id=3, alert_id=6),
            delivery(9, 63),
            delivery(10, 64),
        ],
    )
    jsonl(raw / "alert_opens/o.jsonl", [open_of(1, 7)])
    jsonl(
        raw / "report_edits/e.jsonl",
        [event("report_edits", 1, 60, 4, "2016-11-08T00:00:00Z")],
    )
    jsonl(
        raw / "report_runs/r.jsonl",
        [
            event("report_runs", 1, 60, 3, "2016-12-20T00:00:00Z", run_type="manual"),
            event("report_runs", 2, 61, 5, "2016-12-05T00:00:00Z", run_type="manual"),
            event("report_runs", 3, 62, 4, "2016-11-01T00:00:00Z", run_type="scheduled"),
        ],
    )
    jsonl(
        raw / "explorations/x.jsonl",
        [event("explorations", 1, 61, 3, "2016-11-22T00:00:00Z")],
    )


def incremental_equals_full(
    tmp_path: Path, changes: list, org: str = "acme", as_of: list[dt.datetime] | None = None
) -> Path:
    """Run 1 (busy_world), then one incremental run per change; compare with a full rebuild."""
    times = as_of or [HAND_AS_OF] * (len(changes) + 1)
    folders = [tmp_path / "r0"]
    busy_world(folders[0])
    inc = tmp_path / "inc"
    build(folders[0], inc, times[0])
    for index, change in enumerate(changes, start=1):
        folders.append(tmp_path / f"r{index}")
        folders[-1].mkdir()
        change(folders[-1])
        build_incrementally(folders[-1], inc, times[index])
    full = full_rebuild(folders, tmp_path / "all", tmp_path / "full", times[-1])
    assert_same_tables(inc, full)
    requests = [r for r in hand_requests() if "/batch/" not in r[0]]
    requests += [(u, 1) for u in stats_urls(org)]
    requests += [(f"/batch/{org}/report_stats?include_spaces=all", 1)]
    assert_same_answers(inc, full, requests)
    return inc


def test_account_time_zone_and_name_change(tmp_path: Path) -> None:
    """A new time zone moves every local bucket of the account; a new name renames its pages."""
    later = "2016-12-02T00:00:00Z"
    inc = incremental_equals_full(
        tmp_path,
        [
            lambda raw: jsonl(raw / "accounts/tz.jsonl", [account("Asia/Kathmandu", "acme-inc")]),
            lambda raw: jsonl(
                raw / "accounts/name.jsonl", [account("Asia/Kathmandu", "acme-co", later)]
            ),
        ],
        org="acme-co",
    )
    over_time = one(inc, url("reports_over_time", 1, "datetime_range_width=day"))
    assert {r["datetime_range_start"][11:] for r in over_time} == {"18:15:00.000Z"}


def test_renames_and_new_emails(tmp_path: Path) -> None:
    """Renamed states and options, new user names and emails show in every answer naming them."""

    def change(raw: Path) -> None:
        later = "2016-12-01T00:00:00Z"
        jsonl(
            raw / "states/s2.jsonl",
            [{"state_id": 1, "account_id": 1, "name": "Opened", "updated_at": later}],
        )
        options = [{"value": "b", "name": "B"}, {"value": "a", "name": "Alpha"}]
        jsonl(
            raw / "fields/f2.jsonl",
            [
                {
                    "field_id": 2,
                    "account_id": 1,
                    "field_type": "Radio",
                    "label": "R",
                    "options": options,
                    "updated_at": later,
                }
            ],
        )
        jsonl(
            raw / "users/u2.jsonl",
            [
                {
                    "user_id": 3,
                    "account_id": 1,
                    "first_name": "Jo",
                    "email": "jo@y.com",
                    "updated_at": later,
                },
                {"user_id": 5, "account_id": 1, "email": "zed@x.com", "updated_at": later},
            ],
        )

    inc = incremental_equals_full(tmp_path, [change])
    assert one(inc, url("reports_per_state", 1))[0]["name"] == "Opened"
    stats = stats_of(inc)
    assert stats[60]["editors_emails"] == ["amy@x.com", "jo@y.com"]
    assert stats[61]["recent_manual_run_creators_emails"] == ["zed@x.com"]


def test_reports_deleted_moved_restored_and_channels_undeleted(tmp_path: Path) -> None:
    """Deleting, moving, restoring reports and undeleting a channel change their whole history."""

    def run2(raw: Path) -> None:
        jsonl(
            raw / "reports/r2.jsonl",
            [
                report(60, "2016-11-07T14:03:11.250Z", "2016-12-02T00:00:00Z", deleted_at=T1),
                report(61, "2016-11-20T23:30:00Z", "2016-12-02T00:00:00Z", channel_id=3),
                report(59, "2016-11-25T00:00:00Z"),  # a smaller id: later pages shift
            ],
        )
        jsonl(
            raw / "channels/c2.jsonl",
            [{"channel_id": 4, "account_id": 1, "name": "back", "updated_at": T1}],
        )

    def run3(raw: Path) -> None:
        jsonl(
            raw / "reports/r3.jsonl",
            [
                report(60, "2016-11-07T14:03:11.250Z", "2016-12-03T00:00:00Z", channel_id=3),
                report(62, "2016-12-01T04:59:59.999999Z", "2016-12-03T00:00:00Z", state_id=None),
            ],
        )
        jsonl(
            raw / "channels/c3.jsonl",
            [
                {
                    "channel_id": 3,
                    "account_id": 1,
                    "name": "mine",
                    "personal": False,
                    "updated_at": "2016-12-03T00:00:00Z",
                }
            ],
        )

    inc = incremental_equals_full(tmp_path, [run2, run3])
    stats = stats_of(inc)
    assert sorted(stats) == [59, 60, 61, 62, 63, 64]
    assert reads_of(inc, 1)["total_reads"] == 2  # reports 59, 62 (moved back) and 64


T1 = "2016-12-02T00:00:00Z"


def test_late_opens_and_a_moving_as_of(tmp_path: Path) -> None:
    """A late open changes its delivery; a new as-of time moves the 30-day manual-run window."""
    times = [HAND_AS_OF, HAND_AS_OF, dt.datetime(2016, 12, 15, tzinfo=UTC)]

    def late_open(raw: Path) -> None:
        jsonl(raw / "alert_opens/late.jsonl", [open_of(2, 8), open_of(3, 7)])

    inc = tmp_path / "inc"
    # run 3 sees only the same file again: nothing is loaded, only the as-of time moves
    incremental_equals_full(tmp_path, [late_open, late_open], as_of=times)
    awareness = {r["user_id"]: r for r in one(inc, url("user_awareness", 1, AWARE_FIELDS))}
    assert awareness[3]["alerts_opened"] == 1
    assert stats_of(inc)[60]["recent_manual_run_creators_emails"] == []  # its run is after as-of


def test_only_touched_partitions_are_written(tmp_path: Path) -> None:
    """A late read and a new report rewrite only their months (and report stats); every other
    file of the previous snapshot is taken over as it is."""
    r1, r2, inc = tmp_path / "r1", tmp_path / "r2", tmp_path / "inc"
    busy_world(r1)
    build(r1, inc, HAND_AS_OF)
    before = manifest_of(inc)["tables"]
    jsonl(r2 / "reads/late.jsonl", reads([90], 64, user_id=5, at="2016-03-20T00:00:00Z"))
    jsonl(r2 / "reports/new.jsonl", [report(65, "2016-11-21T10:00:00Z")])
    build_incrementally(r2, inc)
    after = manifest_of(inc)["tables"]

    def parts(files: list[str]) -> dict[str, list[str]]:
        found: dict[str, list[str]] = {}
        for f in files:
            found.setdefault(f.split("/")[2].removeprefix("part="), []).append(f)
        return found

    changed = {
        table: sorted(
            p
            for p in parts(before[table]["files"]).keys() | parts(after[table]["files"]).keys()
            if parts(before[table]["files"]).get(p) != parts(after[table]["files"]).get(p)
        )
        for table in after
        if table not in ("runs", "file_stats")
    }
    assert {t: p for t, p in changed.items() if p} == {
        "fct_reads": ["2016-03"],
        "agg_reads_hourly": ["2016-03"],
        "fct_reports": ["2016-11"],
        "agg_reports_hourly": ["2016-11"],
        "agg_reports_by_user_hourly": ["2016-11"],
        "agg_reports_by_state_hourly": ["2016-11"],
        "report_stats": ["all"],
    }
    full = full_rebuild([r1, r2], tmp_path / "all", tmp_path / "full")
    assert_same_tables(inc, full)


def part_files(warehouse: Path, table: str, part: str) -> list[str]:
    """The files of one partition of a published table, from the current manifest."""
    files = manifest_of(warehouse)["tables"][table]["files"]
    return sorted(f for f in files if f.split("/")[2] == f"part={part}")


def test_added_rows_are_published_as_files_of_their_own_until_compacted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """New rows of a partition go into a small file of their own beside its earlier files; a
    changed row, or too many files, gets the partition written whole again. Equal to full."""
    from metrics_etl.publish import snapshot

    monkeypatch.setattr(snapshot, "MAX_PART_FILES", 3)
    folders = [tmp_path / "r0"]
    busy_world(folders[0])
    inc = tmp_path / "inc"
    build(folders[0], inc, HAND_AS_OF)
    history = [part_files(inc, "fct_reads", "2016-03")]
    hours = ["2016-03-20T00:00:00Z", "2016-03-21T00:00:00Z", "2016-03-22T00:00:00Z"]
    for index, at in enumerate(hours, start=1):
        folders.append(tmp_path / f"r{index}")
        late = folders[-1] / f"reads/late-{index}.jsonl"  # a file of the same name would replace
        jsonl(late, reads([90 + index], 64, user_id=5, at=at))
        build_incrementally(folders[-1], inc)
        history.append(part_files(inc, "fct_reads", "2016-03"))
    # runs 1 and 2 add a file each and keep the earlier ones; run 3 finds 3 files and compacts
    assert len(history[0]) == 1
    assert set(history[0]) < set(history[1]) and len(history[1]) == 2
    assert set(history[1]) < set(history[2]) and len(history[2]) == 3
    assert len(history[3]) == 1 and history[3][0] not in history[2]
    added = (set(history[1]) - set(history[0])).pop()
    rows = duckdb.sql(f"select read_id from '{inc / added}'").fetchall()
    assert rows == [(91,)]
    # the same kind of read for the rollup: a new (hour, user) group is a new row, appended too
    rollup = part_files(inc, "agg_reads_hourly", "2016-03")
    assert len(rollup) == 1  # compacted with fct_reads' third run (3 files)
    # a read in an hour and by a user that has a row already changes that row: written whole
    folders.append(tmp_path / "r4")
    jsonl(folders[-1] / "reads/more.jsonl", reads([99], 64, user_id=5, at=hours[0]))
    build_incrementally(folders[-1], inc)
    assert len(part_files(inc, "agg_reads_hourly", "2016-03")) == 1
    assert part_files(inc, "agg_reads_hourly", "2016-03") != rollup
    assert len(part_files(inc, "fct_reads", "2016-03")) == 2  # the fact row is new: appended
    full = full_rebuild(folders, tmp_path / "all", tmp_path / "full")
    assert_same_tables(inc, full)
    requests = [r for r in hand_requests() if "/batch/" not in r[0]]
    assert_same_answers(inc, full, requests)


def test_an_incremental_run_checkpoints_after_its_switch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Writing what a run committed into the database file (a checkpoint) is not on the way to
    fresh answers: an incremental run switches `current` with its transform still in the
    write-ahead log, then checkpoints (the log is empty before the writer closes), and its
    tables equal a full rebuild."""
    from metrics_etl.models import incremental
    from metrics_etl.publish import snapshot as publish

    wal = tmp_path / "inc" / "_state" / "warehouse.duckdb.wal"

    def wal_bytes() -> int:
        return wal.stat().st_size if wal.exists() else 0

    at_switch: list[int] = []
    after_settle: list[int] = []
    real_switch, real_settle = publish.switch_current, incremental.settle

    def switch(warehouse: Path, snapshot_id: str) -> None:
        at_switch.append(wal_bytes())
        real_switch(warehouse, snapshot_id)

    def settle(conn: duckdb.DuckDBPyConnection) -> None:
        real_settle(conn)
        after_settle.append(wal_bytes())

    monkeypatch.setattr(publish, "switch_current", switch)
    monkeypatch.setattr(incremental, "settle", settle)
    r1, r2, inc = tmp_path / "r1", tmp_path / "r2", tmp_path / "inc"
    busy_world(r1)
    build(r1, inc, HAND_AS_OF)
    jsonl(r2 / "reads/late.jsonl", reads(range(100, 400), 64, user_id=5, at="2016-03-20T00:00:00Z"))
    summary = build_incrementally(r2, inc)
    assert list(summary.seconds)[-4:-1] == ["publish", "checkpoint", "clean-up"]  # then total
    # about 99 kB here; 18 kB (the publish's own commits) when the transform is checkpointed first
    assert at_switch[-1] > 50_000, "the transform was checkpointed before the switch"
    assert after_settle[-1] == 0, "the run did not checkpoint"
    full = full_rebuild([r1, r2], tmp_path / "all", tmp_path / "full")
    assert_same_tables(inc, full)


def test_a_run_killed_between_its_switch_and_checkpoint_recovers_from_the_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The database as a SIGKILL after the switch would leave it (the transform only in the
    write-ahead log, the snapshot not yet marked published): the next run replays the log,
    marks the snapshot published, and both warehouses go on to equal a full rebuild."""
    from metrics_etl.publish import snapshot as publish
    from metrics_etl.run import pipeline

    r1, r2, r3, wh = (tmp_path / n for n in ("r1", "r2", "r3", "wh"))
    crash = tmp_path / "crash"
    busy_world(r1)
    build(r1, wh, HAND_AS_OF)
    jsonl(r2 / "reads/late.jsonl", reads(range(100, 400), 64, user_id=5, at="2016-03-20T00:00:00Z"))
    real = pipeline.mark_published

    def image_then_mark(conn: duckdb.DuckDBPyConnection) -> None:
        shutil.copytree(wh, crash, symlinks=True)  # the files as they are at the kill
        real(conn)

    monkeypatch.setattr(pipeline, "mark_published", image_then_mark)
    build_incrementally(r2, wh)
    monkeypatch.undo()
    assert (crash / "_state" / "warehouse.duckdb.wal").stat().st_size > 50_000
    assert publish.current_id(crash) == publish.current_id(wh)
    assert build(r2, crash, HAND_AS_OF).status == "no-op"
    jsonl(
        r3 / "reads/later.jsonl", reads(range(500, 700), 64, user_id=4, at="2016-05-20T00:00:00Z")
    )
    build_incrementally(r3, crash)
    build_incrementally(r3, wh)
    full = full_rebuild([r1, r2, r3], tmp_path / "all", tmp_path / "full")
    assert_same_tables(crash, full)
    assert_same_tables(wh, full)


def test_a_checkpoint_that_fails_after_the_switch_fails_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The checkpoint comes after the snapshot is published: when it fails (a full disk), the
    run is still published, says so, and the next run replays the log and goes on."""
    from metrics_etl.models import incremental
    from metrics_etl.publish import snapshot as publish

    r1, r2, r3, wh = (tmp_path / n for n in ("r1", "r2", "r3", "wh"))
    busy_world(r1)
    build(r1, wh, HAND_AS_OF)
    before = publish.current_id(wh)
    jsonl(r2 / "reads/late.jsonl", reads(range(100, 400), 64, user_id=5, at="2016-03-20T00:00:00Z"))

    def full_disk(conn: duckdb.DuckDBPyConnection) -> None:
        raise duckdb.IOException("Could not write file: No space left on device (injected)")

    monkeypatch.setattr(incremental, "settle", full_disk)
    summary = build_incrementally(r2, wh)
    assert summary.status == "published"
    assert publish.current_id(wh) not in (None, before)
    monkeypatch.undo()
    jsonl(
        r3 / "reads/later.jsonl", reads(range(500, 700), 64, user_id=4, at="2016-05-20T00:00:00Z")
    )
    build_incrementally(r3, wh)
    full = full_rebuild([r1, r2, r3], tmp_path / "all", tmp_path / "full")
    assert_same_tables(wh, full)
