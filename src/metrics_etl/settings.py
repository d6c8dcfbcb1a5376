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


def load() -> Settings:
    """Build the settings from the environment."""
    temp = _env("METRICS_ETL_TEMP_DIR", "")
    return Settings(
        raw=Path(_env("METRICS_ETL_RAW", "data/raw")),
        warehouse=Path(_env("METRICS_ETL_WAREHOUSE", "data/warehouse")),
        memory_limit=_env("METRICS_ETL_MEMORY_LIMIT", "4GB"),
        threads=int(_env("METRICS_ETL_THREADS", str(os.cpu_count() or 2))),
        temp_dir=Path(temp) if temp else None,
        retention_minutes=float(_env("METRICS_ETL_RETENTION_MINUTES", "60")),
        keep_snapshots=int(_env("METRICS_ETL_KEEP_SNAPSHOTS", "3")),
        read_chunk_bytes=int(_env("METRICS_ETL_READ_CHUNK_BYTES", str(64 * 1024 * 1024))),
        lock_timeout_s=float(_env("METRICS_ETL_LOCK_TIMEOUT_S", "0")),
        demo_events=int(_env("METRICS_ETL_DEMO_EVENTS", "50000")),
    )


def crash_point(step: str) -> None:
    """Testing hook: SIGKILL this process at a named step when METRICS_ETL_FAULT names it."""
    if os.environ.get("METRICS_ETL_FAULT") == step:
        import signal

        os.kill(os.getpid(), signal.SIGKILL)
