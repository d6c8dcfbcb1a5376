"""Ingest: discover raw files, read them in blocks, validate records, load them."""
