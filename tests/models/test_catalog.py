"""The model catalog: every model's header parses, publish lays tables out from it, and it has its own
unit test here; a malformed header is refused with a clear error; the unique-keys audit covers
every published model's grain."""

from __future__ import annotations

import datetime as dt
import random
from pathlib import Path

import duckdb
import pytest

from metrics_etl.models import catalog as models
from metrics_etl.models.catalog import ModelHeaderError, parse_model
from metrics_etl.publish import snapshot as publish
from models.harness import warehouse

HERE = Path(__file__).parent
GOOD = """\
-- model: agg_things
-- purpose: things per hour,
--     over two lines.
-- grain: channel_id, hour_start
-- partitioned_by: hour_start (month)
-- order_by: channel_id, hour_start
-- incremental: by_group
select 1 as x
"""


def test_every_model_has_its_unit_test() -> None:
    names = {model.name for model in models.load_models()}
    assert len(names) == 37
    assert {f"test_{name}.py" for name in names} <= {p.name for p in HERE.glob("test_*.py")}


def test_publish_lays_out_the_published_models_as_their_headers_declare() -> None:
    catalog = models.catalog()
    published = {name for name, model in catalog.items() if model.published}
    assert set(publish.LAYOUTS) == published | {"rejects", "file_stats", "runs"}
    for name in published:
        layout, model = publish.LAYOUTS[name], catalog[name]
        assert (layout.time_column, layout.order_by) == (
            model.partitioned_by,
            ", ".join(model.order_by),
        ), name
        assert layout.stored_in_order, name  # the build keeps it in storage order
    for name in set(catalog) - published:
        assert models.storage_order(name) is None


def test_a_header_parses() -> None:
    model = parse_model(Path("agg_things.sql"), "marts", GOOD)
    assert model.purpose == "things per hour, over two lines."
    assert model.grain == ("channel_id", "hour_start")
    month = models.utc_month_start("hour_start")
    assert model.storage_order == f"{month}, channel_id, hour_start"
    assert model.part_expr == models.utc_month_name("hour_start")
    assert (model.incremental, model.groups) == ("by_group", ("channel_id", "hour_start"))
    other = parse_model(
        Path("agg_things.sql"), "marts", GOOD.replace("by_group", "by_group(hour_start)")
    )
    assert other.groups == ("hour_start",)


@pytest.mark.parametrize(
    ("old", "new", "error"),
    [
        ("-- model: agg_things", "-- model: agg_other", "is not the file's name"),
        ("-- grain: channel_id, hour_start\n", "", "no 'grain' line"),
        ("-- incremental: by_group", "-- incremental: sometimes", "is not one of"),
        ("-- incremental: by_group", "-- incremental: by_key", "by_key(column)"),
        ("-- incremental: by_group", "-- incremental: by_key(a, b)", "by_key(column)"),
        ("-- incremental: by_group", "-- incremental: full(x)", "only by_key and by_group"),
        ("-- incremental: by_group", "-- incremental: by_group(a b)", "is not a column name"),
        ("-- grain: channel_id, hour_start", "-- grain: channel id", "is not a column name"),
        ("-- grain: channel_id, hour_start", "-- grain: hour_start, hour_start", "listed twice"),
        ("(month)", "(day)", "expected `column (month)`"),
        ("-- order_by: channel_id, hour_start\n", "", "declares its order_by"),
        ("-- order_by: channel_id, hour_start", "-- order_by: channel_id", "not in order_by"),
        ("-- purpose: things", "-- owner: me\n-- purpose: things", "unknown header key 'owner'"),
        ("-- model: agg_things", "-- model: agg_things\n-- model: agg_things", "given twice"),
        ("--     over two lines.", "-- over two lines.", ":3: expected `-- key: value`"),
    ],
)
def test_a_malformed_header_is_refused(old: str, new: str, error: str) -> None:
    assert old in GOOD
    with pytest.raises(ModelHeaderError, match=r"agg_things\.sql") as raised:
        parse_model(Path("agg_things.sql"), "marts", GOOD.replace(old, new))
    assert error in str(raised.value)


def test_an_unpublished_model_has_no_layout() -> None:
    with pytest.raises(ModelHeaderError, match="only published models"):
        parse_model(Path("int_things.sql"), "marts", GOOD.replace("agg_things", "int_things"))


def test_unique_keys_audit_covers_every_published_grain() -> None:
    """Including those the hand-written list missed (fct_reads, fct_report_selections,
    dim_states, dim_fields); a duplicated grain is reported with its key."""
    query = models.unique_keys_query()
    for model in models.published():
        assert f"from {model.name} group by {', '.join(model.grain)} having" in query
    audit = (models.SQL_DIR / "audits" / "unique_keys.sql").read_text()
    conn = warehouse()
    conn.execute("begin")
    try:
        assert conn.execute(audit).fetchall() == []
        conn.execute("insert into dim_states (state_id, name) values (4, 'a'), (4, 'b')")
        conn.execute(
            "insert into fct_report_selections (report_id, field_id, value) "
            "values (1, 2, 'x'), (1, 2, 'x'), (1, 2, 'y')"
        )
        assert sorted(conn.execute(audit).fetchall()) == [
            ("dim_states", "4", 2),
            ("fct_report_selections", "1/2/x", 2),
        ]
    finally:
        conn.execute("rollback")


def instants(n: int, seed: int) -> list[int]:
    """Epoch microseconds from year 1 to 9999: random ones, and each side of month and year
    boundaries."""
    rng = random.Random(seed)
    lo = -62_135_596_800_000_000  # 0001-01-01
    hi = 253_402_300_799_999_999  # 9999-12-31 23:59:59.999999
    found = [lo, hi, -1, 0, 1]
    for _ in range(n):
        found.append(rng.randint(lo, hi))
        day = dt.datetime(rng.randint(1, 9999), rng.randint(1, 12), 1, tzinfo=dt.UTC)
        edge = (day - EPOCH) // dt.timedelta(microseconds=1)
        found += [edge - 1, edge, edge + 1] if lo < edge - 1 else [edge, edge + 1]
    return found


EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


@pytest.mark.parametrize("zone", ["UTC", "America/St_Johns", "Pacific/Kiritimati"])
def test_partitions_are_utc_months_in_any_session_zone(zone: str) -> None:
    """A partition's name and a row's month in the storage order are its instant's UTC month,
    from year 1 to 9999, whatever the session's time zone (Python's datetime the reference)."""
    values = instants(3000, seed=11)
    conn = duckdb.connect()
    conn.execute("set TimeZone = ?", [zone])
    conn.execute("create table t (us bigint, x timestamptz)")
    conn.executemany(
        "insert into t values (?, make_timestamp(?)::timestamp at time zone 'UTC')",
        [(v, v) for v in values],
    )
    got = conn.execute(
        f"select us, {models.utc_month_name('x')}, "
        f"epoch_us({models.utc_month_start('x')}) from t order by us"
    ).fetchall()
    for us, name, start in got:
        when = EPOCH + dt.timedelta(microseconds=us)
        month = when.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        assert name == f"{when.year:04d}-{when.month:02d}", us
        assert start == (month - EPOCH) // dt.timedelta(microseconds=1), us
    assert len(got) == len(values)
