"""API keys: each belongs to one account; only a hash of the secret is stored."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from datetime import UTC, datetime
from pathlib import Path

from metrics_etl.errors import UserError


def _hash(secret: str) -> str:
    """SHA-256 of a key's secret."""
    return hashlib.sha256(secret.encode()).hexdigest()


class KeyStore:
    """API keys kept in `<warehouse>/keys.json`, written atomically."""

    def __init__(self, warehouse: Path) -> None:
        self.path = Path(warehouse) / "keys.json"
        self._cache: tuple[float, dict[str, int]] | None = None

    def _load(self) -> list[dict]:
        """All key records."""
        if not self.path.exists():
            return []
        return list(json.loads(self.path.read_text())["keys"])

    def _save(self, rows: list[dict]) -> None:
        """Replace the key file atomically."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps({"keys": rows}, indent=1))
        os.chmod(tmp, 0o600)
        os.replace(tmp, self.path)

    def create(self, account_id: int) -> tuple[str, str]:
        """Create a key for an account; returns (key_id, secret). The secret is not stored."""
        key_id = secrets.token_hex(4)
        secret = f"mk_{key_id}_{secrets.token_urlsafe(24)}"
        rows = self._load()
        rows.append(
            {
                "key_id": key_id,
                "account_id": account_id,
                "sha256": _hash(secret),
                "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
                "revoked_at": None,
            }
        )
        self._save(rows)
        return key_id, secret

    def list(self) -> list[dict]:
        """Key records without their hashes."""
        return [{k: v for k, v in row.items() if k != "sha256"} for row in self._load()]

    def revoke(self, key_id: str) -> None:
        """Revoke a key by id."""
        rows = self._load()
        for row in rows:
            if row["key_id"] == key_id:
                row["revoked_at"] = datetime.now(UTC).isoformat(timespec="seconds")
                self._save(rows)
                return
        raise UserError(f"no key with id {key_id}; see `metrics-etl keys list`")

    def account_for(self, secret: str) -> int | None:
        """The account of an active key, or None. Re-reads the file when it changes."""
        try:
            mtime = self.path.stat().st_mtime
        except OSError:
            return None
        if self._cache is None or self._cache[0] != mtime:
            active = {
                row["sha256"]: row["account_id"] for row in self._load() if not row["revoked_at"]
            }
            self._cache = (mtime, active)
        digest = _hash(secret)
        for known, account in self._cache[1].items():
            if hmac.compare_digest(known, digest):
                return int(account)
        return None
