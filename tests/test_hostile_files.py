"""Hostile raw folders: odd names, special files, symlinks, files that vanish or fail to read."""

from __future__ import annotations

import datetime as dt
import errno
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow as pa
import pytest

from conftest import build
from metrics_etl import state
from metrics_etl.ingest import discover, load
from metrics_etl.run import pipeline
from rawkit import base_world, jsonl, parquet, report

AS_OF = dt.datetime(2017, 1, 1, tzinfo=dt.UTC)

# Names DuckDB, a shell or a SQL literal would read as something else, next to names they match.
HOSTILE = [
    "part-1",
    "part-2",
    "part-*",
    "part-?",
    "a",
    "b",
    "[ab]",
    "{a,b}",
    "it's",
    'say "hi"',
    "two  spaces",
    "new\nline",
    "back\\slash",
    "été ü 日本",
    "**",
]
FORMATS = {"jsonl": ".jsonl", "gz": ".jsonl.gz", "parquet": ".parquet"}


def read_row(read_id: int) -> dict:
    """One valid reads record."""
    return {
        "read_id": read_id,
        "account_id": 1,
        "report_id": 1,
        "user_id": 3,
        "read_at": "2016-11-08T10:00:00Z",
    }


def write_read(path: Path, read_id: int) -> Path:
    """A one-record reads file in the format its name says."""
    row = read_row(read_id)
    if path.name.endswith(".parquet"):
        return parquet(path, pa.table({k: [v] for k, v in row.items()}))
    return jsonl(path, [row], gz=path.name.endswith(".gz"))


def ingest_once(raw: Path, warehouse: Path, run_id: str = "r1") -> tuple:
    """Discover and ingest with a real DuckDB; returns (connection, discovery, stats)."""
    conn = pipeline.open_writer(warehouse)
    found = discover.discover(raw)
    stats = load.ingest(conn, found, run_id, 1 << 20)
    return conn, found, stats


def records_by_file(conn) -> dict[str, list[int]]:
    """read_id values of raw reads per file."""
    rows = conn.execute("select _file, list(read_id order by read_id) from raw_reads group by 1")
    return dict(rows.fetchall())


def accounting(conn) -> dict[str, tuple[int, int, int]]:
    """file -> (lines_read, accepted, rejected) for reads files."""
    rows = conn.execute(
        "select file, lines_read, accepted, rejected from file_stats where stream = 'reads'"
    ).fetchall()
    return {f: (a, b, c) for f, a, b, c in rows}


# ---------------------------------------------------------------- 1. names are names


def test_every_raw_file_is_read_as_exactly_that_file_whatever_its_name(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    base_world(raw)
    expected: dict[str, list[int]] = {}
    read_id = 1
    for folder in ["reads/plain", "reads/2016-*", "reads/[x]y", "reads/x"]:
        for fmt, suffix in FORMATS.items():
            for name in HOSTILE:
                rel = f"{folder}/{fmt}/{name}{suffix}"
                write_read(raw / rel, read_id)
                expected[rel] = [read_id]
                read_id += 1
    conn, found, _ = ingest_once(raw, tmp_path / "wh")
    assert not found.skipped
    assert records_by_file(conn) == expected
    assert accounting(conn) == {rel: (1, 1, 0) for rel in expected}
    assert conn.execute("select count(*) from rejects").fetchall() == [(0,)]


def test_a_corrupt_parquet_file_with_a_pattern_name_is_one_reject_under_its_name(
    tmp_path: Path,
) -> None:
    raw = tmp_path / "raw"
    base_world(raw)
    write_read(raw / "reads/broken1.parquet", 1)
    (raw / "reads/broken*.parquet").write_bytes(b"PAR1" + b"x" * 100 + b"not a footer")
    conn, _, _ = ingest_once(raw, tmp_path / "wh")
    assert records_by_file(conn) == {"reads/broken1.parquet": [1]}
    assert accounting(conn) == {
        "reads/broken1.parquet": (1, 1, 0),
        "reads/broken*.parquet": (1, 0, 1),
    }
    [(line, reason)] = conn.execute(
        "select line, reason from rejects where file = 'reads/broken*.parquet'"
    ).fetchall()
    assert line == 0
    assert reason.startswith("unreadable file (")
    assert "/fd/" not in reason


# ------------------------------------------------- 2. only regular files; one bad entry never stops


def test_special_entries_are_skipped_with_their_reason_and_never_hang(tmp_path: Path) -> None:
    """A FIFO or a symlink to /dev/zero named like a raw file used to hang the run forever.

    The run is in a child process, so that a regression fails this test instead of hanging it.
    """
    raw = tmp_path / "raw"
    base_world(raw)
    write_read(raw / "reads/good.jsonl", 1)
    os.mkfifo(raw / "reads/fifo.jsonl")
    os.mkfifo(raw / "reads/fifo.parquet")
    (raw / "reads/zero.jsonl.gz").symlink_to("/dev/zero")
    (raw / "reads/null.parquet").symlink_to("/dev/null")
    script = textwrap.dedent(
        """
        import json, sys
        from pathlib import Path
        from metrics_etl.ingest import discover, load
        from metrics_etl import state
        from metrics_etl.run import pipeline
        conn = pipeline.open_writer(Path(sys.argv[2]))
        found = discover.discover(Path(sys.argv[1]))
        load.ingest(conn, found, "r1", 1 << 20)
        files = conn.execute("select file from file_stats where stream = 'reads'").fetchall()
        print(json.dumps({"skipped": dict(found.skipped), "loaded": [f for f, in files]}))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(raw), str(tmp_path / "wh")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["loaded"] == ["reads/good.jsonl"]
    assert out["skipped"] == {
        "reads/fifo.jsonl": "not a regular file (FIFO)",
        "reads/fifo.parquet": "not a regular file (FIFO)",
        "reads/zero.jsonl.gz": "not a regular file (character device)",
        "reads/null.parquet": "not a regular file (character device)",
    }


def test_broken_links_and_unreadable_files_are_skipped_and_the_rest_loads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    raw = tmp_path / "raw"
    base_world(raw)
    write_read(raw / "reads/good.jsonl", 1)
    (raw / "reads/loop.jsonl").symlink_to("loop.jsonl")
    (raw / "reads/ping.parquet").symlink_to("pong.parquet")
    (raw / "reads/pong.parquet").symlink_to("ping.parquet")
    (raw / "reads/dangling.jsonl").symlink_to("missing.jsonl")
    locked = write_read(raw / "reads/locked.jsonl", 2)
    locked.chmod(0)
    if os.geteuid() == 0:  # root reads any file: the OS refusal is simulated
        real_access = os.access

        def access(path: object, mode: int, **kwargs: object) -> bool:
            return Path(str(path)) != locked and real_access(path, mode, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(os, "access", access)
    write_read(raw / "reads/folder.jsonl/inside.jsonl", 3)  # a folder named like a file

    summary = build(raw, tmp_path / "wh", AS_OF)

    assert summary.status == "published"
    skipped = dict(summary.skipped_files)
    assert skipped == {
        "reads/loop.jsonl": "symlink loop",
        "reads/ping.parquet": "symlink loop",
        "reads/pong.parquet": "symlink loop",
        "reads/dangling.jsonl": "dangling symlink (its target does not exist)",
        "reads/locked.jsonl": (
            "permission denied: fix its permissions or move it out of the raw folder"
        ),
    }
    assert "skipped reads/loop.jsonl: symlink loop" in pipeline.format_summary(summary)
    assert summary.streams["reads"]["files"] == 2
    conn = pipeline.open_writer(tmp_path / "wh")
    assert records_by_file(conn) == {
        "reads/good.jsonl": [1],
        "reads/folder.jsonl/inside.jsonl": [3],
    }
    conn.close()


def test_a_file_refused_when_opened_is_skipped_and_read_by_the_next_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Permission denied (or any read failure) at load time stops nothing and records nothing."""
    raw = tmp_path / "raw"
    base_world(raw)
    write_read(raw / "reads/good.jsonl", 1)
    refused = write_read(raw / "reads/refused.parquet", 2)
    failing = write_read(raw / "reads/failing.jsonl.gz", 3)
    real_open, real_pread = os.open, os.pread
    failing_fds: set[int] = set()

    def fake_open(path: object, flags: int, *args: object, **kwargs: object) -> int:
        if Path(str(path)) == refused:
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        fd = real_open(path, flags, *args, **kwargs)  # type: ignore[arg-type]
        if Path(str(path)) == failing:
            failing_fds.add(fd)
        else:  # a descriptor number is reused once closed
            failing_fds.discard(fd)
        return fd

    def fake_pread(fd: int, size: int, offset: int) -> bytes:
        if fd in failing_fds:
            raise OSError(errno.EIO, "Input/output error")
        return real_pread(fd, size, offset)

    monkeypatch.setattr(os, "open", fake_open)
    monkeypatch.setattr(os, "pread", fake_pread)
    conn, found, _ = ingest_once(raw, tmp_path / "wh")
    monkeypatch.undo()

    assert dict(found.skipped) == {
        "reads/refused.parquet": (
            "permission denied: fix its permissions or move it out of the raw folder"
        ),
        "reads/failing.jsonl.gz": "cannot read it (Input/output error); a later run tries again",
    }
    assert records_by_file(conn) == {"reads/good.jsonl": [1]}
    manifest = {f for (f,) in conn.execute("select file from manifest").fetchall()}
    assert not manifest & {"reads/refused.parquet", "reads/failing.jsonl.gz"}
    assert conn.execute("select count(*) from rejects").fetchall() == [(0,)]

    found = discover.discover(raw)
    load.ingest(conn, found, "r2", 1 << 20)
    assert not found.skipped
    assert records_by_file(conn) == {
        "reads/good.jsonl": [1],
        "reads/refused.parquet": [2],
        "reads/failing.jsonl.gz": [3],
    }


def test_symlinks_to_regular_files_are_read_under_their_own_name(tmp_path: Path) -> None:
    """A link to a file outside or inside <raw> is read as its target; folder links are followed
    once (a link back up the tree is not walked twice)."""
    raw = tmp_path / "raw"
    base_world(raw)
    outside = write_read(tmp_path / "elsewhere/out.parquet", 1)
    (raw / "reads").mkdir(parents=True, exist_ok=True)
    (raw / "reads/out.parquet").symlink_to(outside)
    write_read(raw / "reads/in.jsonl", 2)
    (raw / "reads/alias.jsonl").symlink_to("in.jsonl")
    write_read(tmp_path / "elsewhere/folder/f.jsonl.gz", 3)
    (raw / "reads/linked").symlink_to(tmp_path / "elsewhere/folder")
    (raw / "reads/linked_again").symlink_to(tmp_path / "elsewhere/folder")
    (raw / "reads/up").symlink_to("..")

    conn, found, _ = ingest_once(raw, tmp_path / "wh")

    assert records_by_file(conn) == {
        "reads/out.parquet": [1],
        "reads/in.jsonl": [2],
        "reads/alias.jsonl": [2],
        "reads/linked/f.jsonl.gz": [3],
    }
    assert dict(found.skipped) == {
        "reads/linked_again/": "symlink to a folder already read as reads/linked/",
        "reads/up/": "symlink to a folder already read as the raw folder",
    }


def test_a_file_name_that_is_not_utf8_is_skipped_with_a_printable_name(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    base_world(raw)
    write_read(raw / "reads/good.jsonl", 1)
    write_read(Path(os.fsdecode(os.fsencode(raw / "reads") + b"/bad\xff.jsonl")), 2)
    conn, found, _ = ingest_once(raw, tmp_path / "wh")
    assert dict(found.skipped) == {"reads/bad\\xff.jsonl": "its name is not valid UTF-8; rename it"}
    assert records_by_file(conn) == {"reads/good.jsonl": [1]}


# ------------------------------------------------------------- 3. files that vanish or disappear


def test_a_file_that_vanishes_before_it_is_read_is_read_when_it_comes_back(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    base_world(raw)
    write_read(raw / "reads/stays.jsonl", 1)
    paths = [
        write_read(raw / f"reads/goes{suffix}", i) for i, suffix in enumerate(FORMATS.values(), 2)
    ]
    kept = {p: (p.read_bytes(), p.stat()) for p in paths}
    conn = pipeline.open_writer(tmp_path / "wh")
    found = discover.discover(raw)
    for path in paths:
        path.unlink()  # between discovery and reading
    load.ingest(conn, found, "r1", 1 << 20)

    reason = "vanished before it was read; it is read by a later run if it comes back"
    assert dict(found.skipped) == {f"reads/{p.name}": reason for p in paths}
    assert records_by_file(conn) == {"reads/stays.jsonl": [1]}
    assert conn.execute("select count(*) from rejects").fetchall() == [(0,)]

    for path, (data, st) in kept.items():  # back unchanged: same bytes, size and mtime
        path.write_bytes(data)
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    found = discover.discover(raw)
    load.ingest(conn, found, "r2", 1 << 20)
    assert not found.skipped
    assert records_by_file(conn) == {
        "reads/stays.jsonl": [1],
        "reads/goes.jsonl": [2],
        "reads/goes.jsonl.gz": [3],
        "reads/goes.parquet": [4],
    }
    assert accounting(conn)["reads/goes.parquet"] == (1, 1, 0)


def test_a_deleted_raw_file_keeps_its_records_and_the_summary_says_so(tmp_path: Path) -> None:
    raw, warehouse = tmp_path / "raw", tmp_path / "wh"
    base_world(raw)
    write_read(raw / "reads/kept.jsonl", 1)
    old = [write_read(raw / f"reads/old-{i}.jsonl", 10 + i) for i in range(3)]
    build(raw, warehouse, AS_OF)
    old[0].unlink()
    summary = build(raw, warehouse, AS_OF)

    gone = (
        "no longer in the raw folder: the records loaded from it are kept, as the raw contract "
        "asks; run with --full-refresh to rebuild from the files there now"
    )
    assert summary.skipped_files == [["reads/old-0.jsonl", gone]]
    assert f"skipped reads/old-0.jsonl: {gone}" in pipeline.format_summary(summary)
    conn = pipeline.open_writer(warehouse)
    assert records_by_file(conn)["reads/old-0.jsonl"] == [10]
    assert conn.execute("select count(*) from stg_reads where read_id = 10").fetchall() == [(1,)]
    conn.close()

    for path in old[1:]:
        path.unlink()
    summary = build(raw, warehouse, AS_OF)
    assert summary.skipped_files == [["reads/old-0.jsonl and 2 more loaded earlier", gone]]

    summary = build(raw, warehouse, AS_OF, full_refresh=True)
    assert summary.skipped_files == []
    conn = pipeline.open_writer(warehouse)
    assert records_by_file(conn) == {"reads/kept.jsonl": [1]}
    conn.close()


def test_a_file_changed_in_place_with_the_same_size_and_mtime_is_not_read_again(
    tmp_path: Path,
) -> None:
    """Documented: size and mtime decide whether a known file is read; --full-refresh reads all."""
    raw = tmp_path / "raw"
    base_world(raw)
    path = write_read(raw / "reads/r.jsonl", 1)
    st = path.stat()
    conn, _, _ = ingest_once(raw, tmp_path / "wh")
    path.write_text(json.dumps(read_row(2)) + "\n")  # same length, other content
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_size == st.st_size
    assert load.ingest(conn, discover.discover(raw), "r2", 1 << 20) == {}
    assert records_by_file(conn) == {"reads/r.jsonl": [1]}
    state.reset_state(conn)  # what --full-refresh does first
    load.ingest(conn, discover.discover(raw), "r3", 1 << 20)
    assert records_by_file(conn) == {"reads/r.jsonl": [2]}


def test_a_warehouse_folder_named_like_a_pattern_reads_its_own_files(tmp_path: Path) -> None:
    """DuckDB reads every path as a glob: a warehouse at `wh*` next to a copy of it
    (`wh-copy`, which the pattern matches) must read its own Parquet files once, not both
    copies, in the API and in the catalog of views."""
    import shutil

    import duckdb

    from metrics_etl.serve.reader import Reader, open_snapshot

    raw = tmp_path / "raw"
    base_world(raw)
    jsonl(raw / "reports/r.jsonl", [report(1, "2016-11-07T14:00:00Z")])
    jsonl(raw / "reads/r.jsonl", [read_row(1)])
    odd = tmp_path / "wh*"
    build(raw, odd, AS_OF)
    shutil.copytree(odd, tmp_path / "wh-copy", symlinks=True)  # a backup beside it
    path = "/api/v4/analytics/reports_read?channel_id=1&start_date=2016-01-01&end_date=2017-01-01"
    status, body = Reader(odd).get(path, 1)
    assert (status, body["total_reads"]) == (200, 1)
    with open_snapshot(odd) as snap:
        assert snap.conn.execute("select count(*) from fct_reads").fetchall() == [(1,)]
    with duckdb.connect(str(odd / "current" / "catalog.duckdb"), read_only=True) as cat:
        assert cat.execute("select count(*) from fct_reads").fetchall() == [(1,)]


def test_a_warehouse_path_with_a_question_mark_is_refused_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """DuckDB reads what follows '?' in a database path as options: say so, before any work."""
    from metrics_etl.cli import main

    raw = tmp_path / "raw"
    base_world(raw)
    assert main(["run", "--raw", str(raw), "--warehouse", str(tmp_path / "w?x")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("metrics-etl run: error: the warehouse path") and "'?'" in err[-1]
    assert not (tmp_path / "w?x").exists()
