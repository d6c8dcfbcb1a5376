"""API keys: each belongs to one account; only a hash of the secret is stored.

Creates and revokes may run in many processes at once: each one holds an exclusive `flock` on
`<warehouse>/keys.lock` while it reads `keys.json`, changes it and writes it back (a unique
temporary file, fsync, rename, fsync of the folder). A key is printed or a revoke reported only
once it is on disk. Readers (the server, `keys list`) never lock: a rename is atomic.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import json
import os
import secrets
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from metrics_etl.errors import UserError
from metrics_etl.files import fsync_dir

KEYS_FILE = "keys.json"
LOCK_FILE = "keys.lock"
TEMP_PREFIX = ".keys.json."
TEMP_SUFFIX = ".tmp"
UNKNOWN_ACCOUNT_FLAG = "--allow-unknown-account"


def _hash(secret: str) -> str:
    """SHA-256 of a key's secret."""
    return hashlib.sha256(secret.encode()).hexdigest()


def _now() -> str:
    """The current UTC time, to the second, ISO 8601."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def _version(stat: os.stat_result) -> tuple[int, int, int]:
    """What identifies one version of the key file: mtime (ns), inode and size."""
    return (stat.st_mtime_ns, stat.st_ino, stat.st_size)


def _parse(data: bytes, path: Path) -> list[dict]:
    """The key records of a key file's bytes."""
    try:
        return list(json.loads(data)["keys"])
    except (ValueError, KeyError, TypeError):
        raise UserError(f"{path} is not a valid key file; restore it from a backup") from None


def account_exists(warehouse: Path, account_id: int) -> bool:
    """True when the current snapshot's dim_accounts has the account."""
    from metrics_etl.serve.reader import open_snapshot  # lazy: DuckDB only for `keys create`

    with open_snapshot(Path(warehouse)) as snap:
        found = snap.conn.execute(
            "select 1 from dim_accounts where account_id = ? limit 1", [account_id]
        ).fetchall()
    return bool(found)


def require_account(warehouse: Path, account_id: int) -> None:
    """Refuse, with what to do, a key for an account the current snapshot does not have."""
    from metrics_etl.publish.snapshot import current_snapshot

    if current_snapshot(Path(warehouse)) is None:
        raise UserError(
            f"nothing is published in {warehouse} yet, so account {account_id} cannot be checked; "
            f"run `metrics-etl run` first, or pass {UNKNOWN_ACCOUNT_FLAG}"
        )
    if not account_exists(warehouse, account_id):
        raise UserError(
            f"account {account_id} is not in the current snapshot of {warehouse}; check "
            f'--account-id (`metrics-etl sql "select account_id, username from dim_accounts"`), '
            f"or pass {UNKNOWN_ACCOUNT_FLAG}"
        )


class KeyStore:
    """API keys kept in `<warehouse>/keys.json`; changes are serialized by `keys.lock`."""

    def __init__(self, warehouse: Path) -> None:
        self.folder = Path(warehouse)
        self.path = self.folder / KEYS_FILE
        self.lock_path = self.folder / LOCK_FILE
        self._cache: tuple[tuple[int, int, int], dict[str, int]] | None = None

    def _load(self) -> list[dict]:
        """All key records."""
        try:
            text = self.path.read_bytes()
        except FileNotFoundError:
            return []
        return _parse(text, self.path)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Hold the exclusive key lock (waiting for it) for the duration of a block."""
        try:
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as error:
            raise UserError(
                f"cannot open {self.lock_path}: {error.strerror}; check the folder's permissions"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            self._remove_stale_temp_files()
            yield
        finally:
            os.close(fd)  # closing releases the lock

    def _remove_stale_temp_files(self) -> None:
        """Delete temporary files left by a writer that died (only run under the lock)."""
        for stale in self.folder.glob(f"{TEMP_PREFIX}*{TEMP_SUFFIX}"):
            stale.unlink(missing_ok=True)

    def _save(self, rows: list[dict]) -> None:
        """Replace the key file durably: unique temp file, fsync, rename, fsync the folder."""
        fd, name = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=TEMP_SUFFIX, dir=self.folder)
        try:
            with os.fdopen(fd, "w") as handle:
                handle.write(json.dumps({"keys": rows}, indent=1))
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(name, self.path)
        except BaseException:
            Path(name).unlink(missing_ok=True)
            raise
        fsync_dir(self.folder)

    def create(self, account_id: int) -> tuple[str, str]:
        """Create a key for an account; returns (key_id, secret). The secret is not stored."""
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise UserError(
                f"cannot create {self.folder}: {error.strerror}; check --warehouse"
            ) from None
        with self._locked():
            rows = self._load()
            taken = {row["key_id"] for row in rows}
            key_id = secrets.token_hex(4)
            while key_id in taken:
                key_id = secrets.token_hex(4)
            secret = f"mk_{key_id}_{secrets.token_urlsafe(24)}"
            rows.append(
                {
                    "key_id": key_id,
                    "account_id": account_id,
                    "sha256": _hash(secret),
                    "created_at": _now(),
                    "revoked_at": None,
                }
            )
            self._save(rows)
        return key_id, secret

    def _read_active(self) -> tuple[tuple[int, int, int], dict[str, int]]:
        """The version of the key file and its active keys (hash -> account), read together."""
        try:
            handle = self.path.open("rb")
        except FileNotFoundError:
            return (0, 0, 0), {}
        with handle:
            version = _version(os.fstat(handle.fileno()))
            rows = _parse(handle.read(), self.path)
        return version, {row["sha256"]: row["account_id"] for row in rows if not row["revoked_at"]}

    def list(self) -> list[dict]:
        """Key records without their hashes."""
        return [{k: v for k, v in row.items() if k != "sha256"} for row in self._load()]

    def revoke(self, key_id: str) -> str | None:
        """Revoke a key by id; returns when it was revoked before, or None if it was active."""
        missing = UserError(f"no key with id {key_id}; see `metrics-etl keys list`")
        if not self.folder.is_dir():
            raise missing
        with self._locked():
            rows = self._load()
            for row in rows:
                if row["key_id"] == key_id:
                    if row["revoked_at"]:
                        return str(row["revoked_at"])
                    row["revoked_at"] = _now()
                    self._save(rows)
                    return None
        raise missing

    def account_for(self, secret: str) -> int | None:
        """The account of an active key, or None. Re-reads the file when it changes."""
        try:
            stat = self.path.stat()
        except OSError:
            return None
        # Every write is a new file (a rename) that is longer than the one before (a key added,
        # or a null revoked_at filled in), so a change shows even within one mtime tick.
        if self._cache is None or self._cache[0] != _version(stat):
            self._cache = self._read_active()
        digest = _hash(secret)
        for known, account in self._cache[1].items():
            if hmac.compare_digest(known, digest):
                return int(account)
        return None
