"""Publish: write a snapshot's Parquet files aside, switch `current`, clean up."""
