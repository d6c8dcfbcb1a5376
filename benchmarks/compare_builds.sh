#!/usr/bin/env bash
# Side by side: full builds of the same generated data by two commits, alternating, against one
# running Prefect server (its start-up not counted).
#   benchmarks/compare_builds.sh OLD_REV NEW_REV [EVENTS=1000000] [ROUNDS=5]
# Prints each run's wall time and the pipeline's own step times.
set -euo pipefail
old=$1 new=$2 events=${3:-1000000} rounds=${4:-5}
repo=$(cd "$(dirname "$0")/.." && pwd)
py=$repo/.venv/bin/python
work=$(mktemp -d /tmp/metrics-etl-compare-XXXXXX)
trap 'kill $server 2>/dev/null || true; rm -rf "$work"' EXIT
for rev in "$old" "$new"; do
    # the SQL models moved into the package (src/metrics_etl/.../sql); older revisions have sql/
    paths=$(git -C "$repo" ls-tree --name-only "$rev" src sql flows)
    mkdir -p "$work/$rev" && git -C "$repo" archive "$rev" $paths | tar -x -C "$work/$rev"
done
PYTHONPATH=$work/$new/src $py -m metrics_etl.cli generate --raw "$work/raw" --events "$events" > /dev/null
port=$($py -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
export PREFECT_HOME=$work/prefect DO_NOT_TRACK=1 PREFECT_SERVER_ANALYTICS_ENABLED=false
$py -m prefect server start --host 127.0.0.1 --port "$port" > "$work/server.log" 2>&1 &
server=$!
for _ in $(seq 1 120); do curl -sf "http://127.0.0.1:$port/api/health" > /dev/null && break; sleep 1; done
export PREFECT_API_URL=http://127.0.0.1:$port/api
for round in $(seq 1 "$rounds"); do
    for rev in "$old" "$new"; do
        rm -rf "$work/wh"
        start=$(date +%s.%N)
        PYTHONPATH=$work/$rev/src $py -m metrics_etl.cli run --raw "$work/raw" --warehouse "$work/wh" \
            --as-of 2018-02-01T00:00:00Z > "$work/out" 2> "$work/err"
        end=$(date +%s.%N)
        printf '%s round %s: %.2f s wall; %s\n' "$rev" "$round" "$(echo "$end - $start" | bc)" \
            "$(grep 'time:' "$work/out" | sed 's/^ *//')"
    done
done
