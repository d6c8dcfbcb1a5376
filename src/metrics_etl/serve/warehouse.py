"""A Python reader for downstream users: one published snapshot as polars and Arrow tables,
and the API's answers from that same snapshot.

    import polars as pl
    import metrics_etl

    with metrics_etl.open_warehouse("data/warehouse") as wh:
        reads = wh.scan("fct_reads").filter(pl.col("channel_id") == 7).collect()

The snapshot `current` names when the warehouse is opened is pinned until it is closed: every
table and answer comes from it, and a shared lease on its manifest (the one the API takes)
keeps clean-up from removing its files, however many runs publish meanwhile.
"""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import polars as pl
import pyarrow as pa
import pyarrow.dataset as ds

from metrics_etl.errors import UserError
from metrics_etl.publish.snapshot import current_snapshot
from metrics_etl.serve.reader import Reader, Snapshot, _open

OPEN_ATTEMPTS = 5  # `current` moving (and its old snapshot going) while we open it, in a row


def _lease(warehouse: Path) -> tuple[Path, IO[bytes]]:
    """The current snapshot's folder and its manifest, opened under a shared lock.

    Clean-up never removes a locked snapshot, but it may have moved an old one aside between
    reading `current` and locking: then the lock is on a file no longer in place, and `current`
    is read again.
    """
    for _ in range(OPEN_ATTEMPTS):
        folder = current_snapshot(warehouse)
        if folder is None:
            raise UserError(f"nothing is published in {warehouse} yet; run `metrics-etl run` first")
        try:
            handle = (folder / "manifest.json").open("rb")
        except FileNotFoundError:
            continue
        fcntl.flock(handle.fileno(), fcntl.LOCK_SH)
        try:
            in_place = os.path.samestat(os.fstat(handle.fileno()), os.stat(handle.name))
        except OSError:
            in_place = False
        if in_place:
            return folder, handle
        handle.close()
    raise UserError(f"the current snapshot of {warehouse} kept changing while it was opened")


class _PinnedReader(Reader):
    """The API's reader, answering every request from one given snapshot."""

    def __init__(self, warehouse: Path, snap: Snapshot) -> None:
        super().__init__(warehouse)
        self._pinned = snap

    def snapshot(self) -> Snapshot:
        """The pinned snapshot, wherever `current` has moved since."""
        return self._pinned


class Warehouse:
    """One published snapshot of a warehouse, leased until `close` (or the end of a `with`)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.folder, self._lease = _lease(self.path)
        self.manifest: dict = json.loads(self._lease.read())
        self.snapshot_id: str = self.manifest["snapshot_id"]
        self._reader: _PinnedReader | None = None
        self._closed = False

    def __enter__(self) -> Warehouse:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<Warehouse {str(self.path)!r} snapshot {self.snapshot_id} ({state})>"

    def close(self) -> None:
        """Release the snapshot (clean-up may remove it afterwards); closing twice is harmless."""
        if self._closed:
            return
        self._closed = True
        if self._reader is not None:
            self._reader.snapshot().close()
            self._reader = None
        self._lease.close()

    def tables(self) -> list[str]:
        """The names of the snapshot's tables, sorted."""
        return sorted(self.manifest["tables"])

    def files(self, name: str) -> list[Path]:
        """The Parquet files that make a table in this snapshot (and nothing else)."""
        if self._closed:
            raise UserError(f"{self!r} is closed; open the warehouse again")
        info = self.manifest["tables"].get(name)
        if info is None:
            raise UserError(f"no table {name!r} in snapshot {self.snapshot_id}: {self.tables()}")
        return [self.path / rel for rel in info["files"]]

    def columns(self, name: str) -> list[tuple[str, str]]:
        """A table's columns and their DuckDB types, as the manifest lists them."""
        self.files(name)
        return [(column, kind) for column, kind in self.manifest["tables"][name]["columns"]]

    def rows(self, name: str) -> int:
        """A table's row count, as the manifest lists it."""
        self.files(name)
        return int(self.manifest["tables"][name]["rows"])

    def scan(self, name: str) -> pl.LazyFrame:
        """A table as a polars LazyFrame over exactly this snapshot's files; collect it before
        the warehouse is closed."""
        paths = [str(path) for path in self.files(name)]
        return pl.scan_parquet(paths, glob=False, hive_partitioning=False)

    def to_arrow(self, name: str) -> pa.Table:
        """A whole table as an Arrow table (the Parquet files' own types)."""
        paths = [str(path) for path in self.files(name)]
        return ds.dataset(paths, format="parquet", partitioning=None).to_table()

    def get(self, path_and_query: str, account_id: int) -> tuple[int, Any]:
        """Answer an API request from this snapshot, as `metrics-etl get` and the HTTP API do:
        (status, JSON-ready body), e.g. `get("/api/v4/analytics/reports_read?channel_id=7&"
        "start_date=2017-01-01&end_date=2017-02-01", account_id=3)`."""
        return self._api().get(path_and_query, account_id)

    def _api(self) -> _PinnedReader:
        """The API's reader over this snapshot, opened on first use."""
        if self._closed:
            raise UserError(f"{self!r} is closed; open the warehouse again")
        if self._reader is None:
            self._reader = _PinnedReader(self.path, _open(self.path, self.folder))
        return self._reader


def open_warehouse(path: str | os.PathLike[str]) -> Warehouse:
    """Open the current snapshot of a warehouse folder for reading (a context manager)."""
    return Warehouse(path)
