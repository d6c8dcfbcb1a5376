"""API keys: creates and revokes from many processes at once are all kept; accounts are checked."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import build
from metrics_etl.cli import main
from metrics_etl.serve.keys import KeyStore
from rawkit import base_world, jsonl, report

AS_OF = dt.datetime(2017, 1, 1, tzinfo=dt.UTC)
CREATES = 16


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A published warehouse with accounts 1 and 2 (built once for the module)."""
    root = tmp_path_factory.mktemp("keys")
    raw, wh = root / "raw", root / "wh"
    base_world(raw)
    jsonl(raw / "reports/r.jsonl", [report(1, "2016-11-07T14:00:00Z")])
    build(raw, wh, AS_OF)
    return wh


@pytest.fixture
def wh(built: Path, tmp_path: Path) -> Path:
    """A private copy of the built warehouse, without keys."""
    copy = tmp_path / "wh"
    shutil.copytree(built, copy, symlinks=True)
    return copy


def start(*args: str) -> subprocess.Popen:
    """Start `metrics-etl` in its own OS process, as a user would; do not wait for it."""
    return subprocess.Popen(
        [sys.executable, "-m", "metrics_etl.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(procs: list[subprocess.Popen]) -> list[tuple[int, str, str]]:
    """Wait for every process; (exit code, stdout, stderr) of each."""
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        results.append((proc.returncode, out, err))
    return results


def printed_key(out: str) -> tuple[str, str]:
    """(key_id, secret) from the output of `keys create`."""
    lines = out.strip().splitlines()
    secret = lines[-1]
    assert secret.startswith("mk_"), out
    return secret.split("_")[1], secret


def stored(wh: Path) -> dict[str, dict]:
    """The key records on disk, by id."""
    return {row["key_id"]: row for row in KeyStore(wh).list()}


def test_parallel_creates_are_all_stored_and_authenticate(wh: Path) -> None:
    procs = [
        start("keys", "create", "--warehouse", str(wh), "--account-id", str(1 + i % 2))
        for i in range(CREATES)
    ]
    results = finish(procs)
    assert [code for code, _, _ in results] == [0] * CREATES, [err for _, _, err in results]
    printed = [printed_key(out) for _, out, _ in results]
    on_disk = stored(wh)
    assert len(on_disk) == CREATES
    assert {key_id for key_id, _ in printed} == set(on_disk)
    fresh = KeyStore(wh)
    for i, (_, secret) in enumerate(printed):
        assert fresh.account_for(secret) == 1 + i % 2
    assert not list(wh.glob(".keys.json.*"))  # no temporary file left behind


def test_revokes_racing_creates_are_all_really_revoked(wh: Path) -> None:
    store = KeyStore(wh)
    old = [store.create(1) for _ in range(CREATES // 2)]
    procs = []
    for key_id, _ in old:  # each revoke starts next to a create
        procs.append(start("keys", "revoke", "--warehouse", str(wh), key_id))
        procs.append(start("keys", "create", "--warehouse", str(wh), "--account-id", "2"))
    results = finish(procs)
    assert [code for code, _, _ in results] == [0] * len(procs), [err for _, _, err in results]
    revokes, creates = results[0::2], results[1::2]
    on_disk = stored(wh)
    fresh = KeyStore(wh)
    for (key_id, secret), (_, out, _) in zip(old, revokes, strict=True):
        assert out.strip() == f"revoked key {key_id}"
        assert on_disk[key_id]["revoked_at"] is not None
        assert fresh.account_for(secret) is None
    for _, out, _ in creates:
        key_id, secret = printed_key(out)
        assert on_disk[key_id]["revoked_at"] is None
        assert fresh.account_for(secret) == 2
    assert len(on_disk) == len(old) + len(creates)


def test_a_revoke_within_one_mtime_tick_is_seen_by_the_server(wh: Path) -> None:
    server = KeyStore(wh)  # the server's store: it caches the active keys
    key_id, secret = KeyStore(wh).create(1)
    assert server.account_for(secret) == 1
    before = (wh / "keys.json").stat()
    KeyStore(wh).revoke(key_id)
    os.utime(wh / "keys.json", ns=(before.st_atime_ns, before.st_mtime_ns))  # same clock tick
    assert server.account_for(secret) is None


def test_create_for_an_unknown_account_is_refused_unless_allowed(
    wh: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["keys", "create", "--warehouse", str(wh), "--account-id", "99"]) == 1
    err = capsys.readouterr().err
    assert "account 99 is not in the current snapshot" in err
    assert "--allow-unknown-account" in err and len(err.strip().splitlines()) == 1
    empty = tmp_path / "empty"
    assert main(["keys", "create", "--warehouse", str(empty), "--account-id", "1"]) == 1
    err = capsys.readouterr().err
    assert "nothing is published" in err and "--allow-unknown-account" in err
    assert not (wh / "keys.json").exists() and not empty.exists()
    for folder in (wh, empty):
        args = ["keys", "create", "--warehouse", str(folder), "--account-id", "99"]
        assert main([*args, "--allow-unknown-account"]) == 0
        _, secret = printed_key(capsys.readouterr().out)
        assert KeyStore(folder).account_for(secret) == 99


def test_list_has_a_header_and_json_without_secrets(
    wh: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["keys", "list", "--warehouse", str(wh)]) == 0
    assert capsys.readouterr().out.split() == [
        "key_id",
        "account_id",
        "status",
        "created_at",
        "revoked_at",
    ]
    assert main(["keys", "list", "--warehouse", str(wh), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []
    first, secret1 = KeyStore(wh).create(1)
    second, secret2 = KeyStore(wh).create(2)
    KeyStore(wh).revoke(first)
    assert main(["keys", "list", "--warehouse", str(wh)]) == 0
    header, *lines = capsys.readouterr().out.strip().splitlines()
    assert header.split()[0] == "key_id"
    assert [line.split()[:3] for line in lines] == [
        [first, "1", "revoked"],
        [second, "2", "active"],
    ]
    assert main(["keys", "list", "--warehouse", str(wh), "--json"]) == 0
    text = capsys.readouterr().out
    rows = json.loads(text)
    assert [(r["key_id"], r["account_id"], r["revoked_at"] is None) for r in rows] == [
        (first, 1, False),
        (second, 2, True),
    ]
    assert all(set(r) == {"key_id", "account_id", "created_at", "revoked_at"} for r in rows)
    assert secret1 not in text and secret2 not in text and "sha256" not in text


def test_revoke_unknown_or_already_revoked(wh: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key_id, secret = KeyStore(wh).create(1)
    assert main(["keys", "revoke", "--warehouse", str(wh), "nosuch"]) == 1
    assert "no key with id nosuch" in capsys.readouterr().err
    assert main(["keys", "revoke", "--warehouse", str(wh), key_id]) == 0
    assert capsys.readouterr().out.strip() == f"revoked key {key_id}"
    revoked_at = stored(wh)[key_id]["revoked_at"]
    assert main(["keys", "revoke", "--warehouse", str(wh), key_id]) == 0
    out = capsys.readouterr().out
    assert "already revoked" in out and revoked_at in out
    assert stored(wh)[key_id]["revoked_at"] == revoked_at
    assert KeyStore(wh).account_for(secret) is None
