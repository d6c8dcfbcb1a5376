"""The model catalog: every model's header parses, publish lays tables out from it, and it has its own
unit test here; a malformed header is refused with a clear error; the unique-keys audit covers
every published model's grain."""

from __future__ import annotations

from pathlib import Path

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
    assert len(names) == 35
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
    assert model.storage_order == "date_trunc('month', hour_start), channel_id, hour_start"
    assert model.part_expr == "strftime(hour_start, '%Y-%m')"
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
