#!/usr/bin/env bash
# Every benchmark in one run, written to docs/benchmarks.md (and docs/benchmarks.json)
# with the machine it ran on. Installs the baselines first (etcd, wrk, FastAPI + uvicorn).
# Usage: scripts/bench-all.sh [extra `panal bench all` flags, e.g. --seconds 5 --skip http]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/baselines.sh
install_etcd
install_wrk
python=$(baseline_python)
build_release
exec ./target/release/panal bench all --baseline-python "$python" "$@"
