"""One place for configuration: environment variables with local defaults."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


def _env(name: str, default: str) -> str:
    """Read an environment variable, falling back to a default."""
    return os.environ.get(name, default)


@dataclass(frozen=True)
class Settings:
    """Runtime settings; every field has an env var (listed in the README)."""

    raw: Path
    warehouse: Path
    memory_limit: str
    threads: int
    temp_dir: Path | None
    retention_minutes: float
    keep_snapshots: int
    read_chunk_bytes: int
    lock_timeout_s: float
    demo_events: int


# The smallest synthetic data set that holds every messy behaviour of the raw contract.
MIN_EVENTS = 1_000

# Each setting's environment variable and local default (the README lists them).
ENV: dict[str, tuple[str, str]] = {
    "raw": ("METRICS_ETL_RAW", "data/raw"),
    "warehouse": ("METRICS_ETL_WAREHOUSE", "data/warehouse"),
    "memory_limit": ("METRICS_ETL_MEMORY_LIMIT", "4GB"),
    "threads": ("METRICS_ETL_THREADS", str(os.cpu_count() or 2)),
    "temp_dir": ("METRICS_ETL_TEMP_DIR", ""),
    "retention_minutes": ("METRICS_ETL_RETENTION_MINUTES", "60"),
    "keep_snapshots": ("METRICS_ETL_KEEP_SNAPSHOTS", "3"),
    "read_chunk_bytes": ("METRICS_ETL_READ_CHUNK_BYTES", str(64 * 1024 * 1024)),
    "lock_timeout_s": ("METRICS_ETL_LOCK_TIMEOUT_S", "0"),
    "demo_events": ("METRICS_ETL_DEMO_EVENTS", "50000"),
}


def _get(name: str) -> str:
    """A setting's value from its environment variable, else its default."""
    env, default = ENV[name]
    return _env(env, default)


def load() -> Settings:
    """Build the settings from the environment."""
    temp = _get("temp_dir")
    return Settings(
        raw=Path(_get("raw")),
        warehouse=Path(_get("warehouse")),
        memory_limit=_get("memory_limit"),
        threads=int(_get("threads")),
        temp_dir=Path(temp) if temp else None,
        retention_minutes=float(_get("retention_minutes")),
        keep_snapshots=int(_get("keep_snapshots")),
        read_chunk_bytes=int(_get("read_chunk_bytes")),
        lock_timeout_s=float(_get("lock_timeout_s")),
        demo_events=int(_get("demo_events")),
    )


def crash_point(step: str) -> None:
    """Testing hook: SIGKILL this process at a named step when METRICS_ETL_FAULT names it."""
    if os.environ.get("METRICS_ETL_FAULT") == step:
        import signal

        os.kill(os.getpid(), signal.SIGKILL)
