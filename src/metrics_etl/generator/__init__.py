"""A generator of synthetic raw data (tests, benchmarks, the demo); never on the runtime path of a run."""
