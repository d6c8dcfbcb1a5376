"""Audits over what a run changed: as strict as over everything for a changed row, and blind
only to rows that did not change (which passed the previous run's audits)."""

from __future__ import annotations

from collections.abc import Iterator

import duckdb
import pytest

from metrics_etl import state
from metrics_etl.models import audits
from metrics_etl.models.audits import Changed
from models.harness import warehouse


@pytest.fixture
def conn() -> Iterator[duckdb.DuckDBPyConnection]:
    """The empty in-memory warehouse, in a transaction rolled back after the test."""
    connection = warehouse()
    connection.execute("begin")
    try:
        yield connection
    finally:
        connection.execute("rollback")


def added_reads(conn: duckdb.DuckDBPyConnection, rows: list[tuple[int, int]]) -> Changed:
    """Insert fct_reads rows (read_id, channel_id) and log them as added; the change mapping."""
    for read_id, channel_id in rows:
        conn.execute(
            "insert into fct_reads (read_id, channel_id) values (?, ?)", [read_id, channel_id]
        )
    ids = ", ".join(str(read_id) for read_id, _ in rows)
    added = f"(from fct_reads where read_id in ({ids}))"
    state.log_changes(conn, "fct_reads", "(from fct_reads limit 0)", added)
    return {"fct_reads": "changes_fct_reads"}


def failing(conn: duckdb.DuckDBPyConnection, changed: Changed | None) -> dict[str, int]:
    """The audits that fail, with their failing rows' count."""
    return {name: len(rows) for name, rows in audits.run_audits(conn, changed).items() if rows}


def test_every_audit_declares_its_scope() -> None:
    for path in audits.audit_files():
        assert audits.scope_of(path, path.read_text()) in audits.SCOPES


def test_a_duplicated_key_among_changed_rows_fails_as_in_a_full_audit(conn) -> None:
    changed = added_reads(conn, [(1, 5), (1, 5)])
    assert failing(conn, changed)["unique_keys"] == 1
    assert failing(conn, None)["unique_keys"] == 1


def test_a_duplicate_older_than_the_run_is_out_of_scope(conn) -> None:
    """Unchanged rows passed before: a scoped run does not read them again."""
    conn.execute("insert into fct_reads (read_id, channel_id) values (1, 5), (1, 5)")
    assert "unique_keys" not in failing(conn, {})
    assert "unique_keys" in failing(conn, None)


def test_a_table_changed_without_a_log_is_audited_whole(conn) -> None:
    conn.execute("insert into fct_reads (read_id, channel_id) values (1, 5), (1, 5)")
    assert "unique_keys" in failing(conn, {"fct_reads": None})


def test_rollup_totals_are_checked_in_the_channels_that_changed(conn) -> None:
    """A read with no rollup row: its channel's totals differ. A change elsewhere does not
    read channel 5; a change in channel 5 does, as a full audit does."""
    conn.execute("insert into fct_reads (read_id, channel_id) values (7, 5)")
    elsewhere = added_reads(conn, [(8, 6)])
    assert failing(conn, elsewhere)["rollup_totals"] == 1  # channel 6: a read, no rollup
    conn.execute("delete from changes_fct_reads")
    conn.execute("delete from fct_reads where read_id = 8")
    state.log_changes(
        conn, "fct_reads", "(from fct_reads limit 0)", "(from fct_reads where read_id = 7)"
    )
    assert failing(conn, elsewhere)["rollup_totals"] == 1
    assert failing(conn, None)["rollup_totals"] == 1
    conn.execute("delete from changes_fct_reads")
    assert "rollup_totals" not in failing(conn, elsewhere)


def test_scoped_audits_leave_the_unscoped_macro_installed(conn) -> None:
    added_reads(conn, [(1, 5)])
    audits.run_audits(conn, {"fct_reads": "changes_fct_reads"})
    text = conn.execute("select * from query(unique_keys_query())").fetchall()
    assert text == []
    assert (
        "audit_"
        not in conn.execute(
            "select macro_definition from duckdb_functions() where function_name = 'unique_keys_query'"
        ).fetchall()[0][0]
    )
