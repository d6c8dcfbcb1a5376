"""One measured pipeline run, in its own process (so its peak RSS is its own).

Usage: python benchmarks/build_child.py RAW WAREHOUSE OUT_JSON [--full-refresh]

Runs the Prefect flow of flows/etl.py against the Prefect server named by PREFECT_API_URL
(started once by benchmarks/run.py) and writes the wall time of the flow call, the time spent
importing Prefect and the flow (reported separately, not part of the build time) and the
pipeline's RunSummary to OUT_JSON.
"""

from __future__ import annotations

import json
import sys
import time

started = time.monotonic()


def main() -> int:
    raw, warehouse, out = sys.argv[1:4]
    full_refresh = "--full-refresh" in sys.argv[4:]
    from metrics_etl.cli import load_flow

    etl = load_flow()
    import_s = time.monotonic() - started
    t0 = time.monotonic()
    state = etl(raw=raw, warehouse=warehouse, full_refresh=full_refresh, return_state=True)
    wall = time.monotonic() - t0
    failed = state.is_failed()
    summary = None if failed else state.result()
    with open(out, "w") as handle:
        json.dump(
            {
                "wall_s": wall,
                "import_s": import_s,
                "failed": failed,
                "message": state.message,
                "summary": summary,
            },
            handle,
            default=str,
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
