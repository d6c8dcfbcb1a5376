"""Run: the Prefect flow and its tasks, progress, the local Prefect server."""
