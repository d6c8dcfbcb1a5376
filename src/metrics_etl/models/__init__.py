"""Models: the SQL models' catalog, the full build, the incremental build, audits."""
