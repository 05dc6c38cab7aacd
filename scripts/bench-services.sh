#!/usr/bin/env bash
# Service-mix benchmark: browse (book list), purchase (orders) and ingest (reading batches)
# through a local 3-node panal cluster, requests spread over every node, beside a
# single-process FastAPI + SQLite service (scripts/baseline/fastapi_services.py) doing the
# same work, in one run.
# Usage: scripts/bench-services.sh [extra `panal bench services` flags, e.g. --seconds 10 --json out.json]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/baselines.sh
python=$(baseline_python)
build_release
exec ./target/release/panal bench services --baseline-python "$python" "$@"
