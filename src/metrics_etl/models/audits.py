"""Audits: SQL that returns failing rows (models/sql/audits), run over what a run changed.

Each audit's header names its scope (`-- scope: ...`), which says what it must read again
after an incremental transform, given that everything unchanged passed before:

- `keys`: only rows whose grain key was added (a duplicate needs an added row);
- `channels`: only the channels with a changed row in any published table;
- `all`: everything (the invariants that span whole tables, cheap to check).

Scoped, an audit reads each published table through a temp view of the rows in its scope
(`build.substitute` points its `from`/`join` at them); a table changed without a change log
is read whole, and so is everything after a full transform. Exactly as strict: an audit that
returns rows fails the run either way.
"""

from __future__ import annotations

import re
from pathlib import Path

import duckdb

from metrics_etl.models import catalog as models
from metrics_etl.models.build import SQL_DIR, install_macros, substitute

AUDIT_DIR = SQL_DIR / "audits"
SCOPES = ("keys", "channels", "all")
SCOPE = re.compile(r"^-- scope: (\w+)\b", re.MULTILINE)

# A published table's changes since the last publish: its change log, or None (changed without
# one). Tables not in the mapping did not change.
Changed = dict[str, str | None]


def audit_files() -> list[Path]:
    """Every audit, by name."""
    return sorted(AUDIT_DIR.glob("*.sql"))


def scope_of(path: Path, sql: str) -> str:
    """An audit's declared scope."""
    match = SCOPE.search(sql)
    if match is None or match.group(1) not in SCOPES:
        raise ValueError(f"{path.name}: its header needs `-- scope: {'|'.join(SCOPES)}`")
    return match.group(1)


def _view(conn: duckdb.DuckDBPyConnection, name: str, sql: str) -> str:
    """(Re)create a temp view; returns its name."""
    conn.execute(f"create or replace temp view {name} as {sql}")
    return name


def key_views(conn: duckdb.DuckDBPyConnection, changed: Changed) -> dict[str, str]:
    """Per published table, a view of its rows whose grain key was added since the last publish
    (none for an unchanged table, all of them for one changed without a log)."""
    views = {}
    for model in models.published():
        table, log = model.name, changed.get(model.name)
        if table not in changed:
            sql = f"select * from {table} limit 0"
        elif log is None:
            continue
        else:
            match = " and ".join(f"t.{c} is not distinct from a.{c}" for c in model.grain)
            sql = (
                f"select t.* from {table} as t semi join "
                f"(select * from {log} where _added) as a on {match}"
            )
        views[table] = _view(conn, f"audit_{table}", sql)
    return views


def channel_views(
    conn: duckdb.DuckDBPyConnection, changed: Changed, reads: set[str]
) -> dict[str, str] | None:
    """Per published table with a channel, a view of its rows in the channels with a changed
    row in the tables the audit `reads`; None when one of those changed without a log or has
    no channel (then everything is read)."""
    with_channel = {
        row[0]
        for row in conn.execute(
            "select table_name from duckdb_columns() where column_name = 'channel_id' "
            "and schema_name = 'main'"
        ).fetchall()
    }
    logs = []
    for table, log in changed.items():
        if table not in reads:
            continue
        if log is None or table not in with_channel:
            return None
        logs.append(f"select channel_id from {log}")
    conn.execute(
        "create or replace temp table audit_channels as "
        + (" union ".join(logs) if logs else "select null::bigint as channel_id limit 0")
    )
    channels = "select channel_id from audit_channels"
    return {
        m.name: _view(
            conn, f"audit_{m.name}", f"select * from {m.name} where channel_id in ({channels})"
        )
        for m in models.published()
        if m.name in with_channel
    }


def run_audits(conn: duckdb.DuckDBPyConnection, changed: Changed | None) -> dict[str, list[tuple]]:
    """Run every audit over its scope of what changed (`changed` None: over everything);
    returns the failing rows per audit (empty lists when all pass)."""
    results = {}
    try:
        for path in audit_files():
            sql = path.read_text()
            scope = scope_of(path, sql)
            views: dict[str, str] | None = None
            if changed is not None and scope == "keys":
                views = key_views(conn, changed)
                text = substitute(models.unique_keys_query(), views).replace("'", "''")
                conn.execute(f"create or replace macro unique_keys_query() as '{text}'")
            elif changed is not None and scope == "channels":
                views = channel_views(conn, changed, set(models.REFERENCE.findall(sql)))
            results[path.stem] = conn.execute(substitute(sql, views or {})).fetchall()
    finally:
        install_macros(conn)  # the unscoped unique_keys_query() again
    return results
