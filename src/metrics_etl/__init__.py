"""metrics-etl: exact, precomputed product-analytics metrics served as JSON APIs."""

from __future__ import annotations

__version__ = "0.1.0"
