"""Small file-system helpers shared by ingest, publish and the key store."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path


def fsync_dir(folder: Path) -> None:
    """Make a rename or a new entry in a folder durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sha256_of(blocks: Iterable[bytes]) -> str:
    """The SHA-256 hex digest of bytes read block by block (raw files, written Parquet files)."""
    digest = hashlib.sha256()
    for block in blocks:
        digest.update(block)
    return digest.hexdigest()
