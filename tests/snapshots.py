"""Reading and comparing the published tables of warehouses, for tests."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import duckdb

from metrics_etl.serve.reader import Reader


def manifest_of(warehouse: Path) -> dict:
    """The manifest of the snapshot `current` points at."""
    return json.loads((warehouse / "current" / "manifest.json").read_text())


def published_tables(warehouse: Path) -> dict[str, tuple[list, list[tuple]]]:
    """Every published table of the current snapshot (no `runs`, no `run_id` columns): columns, sorted rows."""
    manifest = manifest_of(warehouse)
    out: dict[str, tuple[list, list[tuple]]] = {}
    with duckdb.connect() as con:
        con.execute("set TimeZone = 'UTC'")
        for table, info in sorted(manifest["tables"].items()):
            if table == "runs":
                continue
            columns = [
                c
                for c in info["columns"]
                if not (table in ("rejects", "file_stats") and c[0] == "run_id")
            ]
            select = ", ".join('"' + name + '"' for name, _ in columns)
            paths = [str(warehouse / f) for f in info["files"]]
            rows = con.execute(
                f"select {select} from read_parquet(?) order by all", [paths]
            ).fetchall()
            assert len(rows) == info["rows"], (
                f"{table}: manifest says {info['rows']} rows, files hold {len(rows)}"
            )
            out[table] = (columns, rows)
    return out


def records(tables: dict[str, tuple[list, list[tuple]]], table: str) -> list[dict]:
    """Rows of a table from published_tables as dicts by column name."""
    columns, rows = tables[table]
    return [dict(zip([c[0] for c in columns], row, strict=True)) for row in rows]


def assert_same_tables(got: Path, want: Path) -> None:
    """Published tables of two warehouses are equal; on failure, show the differing rows."""
    a, b = published_tables(got), published_tables(want)
    assert sorted(a) == sorted(b), "different sets of published tables"
    problems = []
    for table in sorted(a):
        if a[table][0] != b[table][0]:
            problems.append(f"{table}: columns {a[table][0]} != {b[table][0]}")
            continue
        if a[table][1] != b[table][1]:
            ca, cb = Counter(a[table][1]), Counter(b[table][1])
            extra, missing = list((ca - cb).elements()), list((cb - ca).elements())
            problems.append(
                f"{table}: {len(extra)} rows only in the first warehouse, e.g. {extra[:3]}; "
                f"{len(missing)} rows only in the second, e.g. {missing[:3]}"
            )
    assert not problems, "warehouses differ:\n" + "\n".join(problems)


def ask(
    warehouse: Path, requests: Iterable[tuple[str, int]]
) -> dict[tuple[str, int], tuple[int, object]]:
    """Reader answers (status, body) for (path_and_query, account_id) requests."""
    reader = Reader(warehouse)
    try:
        return {(url, account): reader.get(url, account) for url, account in requests}
    finally:
        reader.close()


def same(expected: tuple[int, object], got: tuple[int, object]) -> bool:
    """Equal status; equal body for 200s, equal error code otherwise."""
    if expected[0] != got[0]:
        return False
    if expected[0] == 200:
        return expected[1] == got[1]
    return expected[1]["error"] == got[1]["error"]  # type: ignore[index]
