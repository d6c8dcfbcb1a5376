"""One place for configuration: environment variables with local defaults."""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

from metrics_etl.errors import UserError


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


def _bad(name: str, expected: str) -> UserError:
    """The error for a setting whose value is not usable."""
    env, default = ENV[name]
    fallback = f" ({default})" if default else ""
    return UserError(
        f"{env}={os.environ.get(env, '')!r} is not {expected}; fix it, or unset it for the "
        f"default{fallback}"
    )


def _number(name: str, kind: type[int] | type[float], low: float) -> int | float:
    """A numeric setting of at least `low` (a UserError naming the variable otherwise)."""
    text = _get(name)
    try:
        value = kind(text)
    except ValueError:
        value = None
    if value is None or not math.isfinite(value) or value < low:
        whole = "a whole number" if kind is int else "a number"
        raise _bad(name, f"{whole} of at least {low:g}")
    return value


# What DuckDB takes as a memory limit: a positive size with a unit (4GB, 3.5 GiB, 512MB)
MEMORY = re.compile(r"\s*(?=[0-9.]*[1-9])[0-9]+(\.[0-9]+)?\s*([KMGT]i?B?|B|bytes?)\s*", re.I)


def load() -> Settings:
    """Build the settings from the environment (a UserError names a variable set wrongly)."""
    temp = _get("temp_dir")
    if temp and Path(temp).exists() and not Path(temp).is_dir():
        raise _bad("temp_dir", "a folder (it names a file)")
    memory_limit = _get("memory_limit")
    if not MEMORY.fullmatch(memory_limit):
        raise _bad("memory_limit", "a memory size such as 4GB or 3.5GiB")
    return Settings(
        raw=Path(_get("raw")),
        warehouse=Path(_get("warehouse")),
        memory_limit=memory_limit,
        threads=int(_number("threads", int, 1)),
        temp_dir=Path(temp) if temp else None,
        retention_minutes=float(_number("retention_minutes", float, 0)),
        keep_snapshots=int(_number("keep_snapshots", int, 1)),
        read_chunk_bytes=int(_number("read_chunk_bytes", int, 1)),
        lock_timeout_s=float(_number("lock_timeout_s", float, 0)),
        demo_events=int(_number("demo_events", int, MIN_EVENTS)),
    )


def crash_point(step: str) -> None:
    """Testing hook: SIGKILL this process at a named step when METRICS_ETL_FAULT names it."""
    if os.environ.get("METRICS_ETL_FAULT") == step:
        import signal

        os.kill(os.getpid(), signal.SIGKILL)
