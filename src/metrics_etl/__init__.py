"""metrics-etl: exact, precomputed product-analytics metrics served as JSON APIs."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from metrics_etl.serve.warehouse import open_warehouse

__version__ = "0.1.0"
__all__ = ["__version__", "open_warehouse"]


def __getattr__(name: str) -> Any:
    """`open_warehouse`, imported on first use (the CLI does not pay for polars)."""
    if name == "open_warehouse":
        from metrics_etl.serve.warehouse import open_warehouse

        return open_warehouse
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
