#!/usr/bin/env bash
# HTTP benchmark: panal route by route (/health, ping, book list, book page, energy summary;
# local / round-robin / p2c through one node of a 3-node cluster)
# beside a single-process FastAPI + SQLite service doing the same work, in one run.
# Usage: scripts/bench-http.sh [extra `panal bench http` flags]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/baselines.sh
install_wrk
python=$(baseline_python)
build_release
exec ./target/release/panal bench http --baseline-python "$python" "$@"
