#!/usr/bin/env bash
# HTTP benchmark: panal (local / round-robin / p2c through one node of a 3-node cluster)
# beside a single-process FastAPI + SQLite service doing the same work, in one run.
# FastAPI and uvicorn come from PyPI into a private venv (.bench-venv), never vendored.
# Usage: scripts/bench-http.sh [extra `panal bench http` flags]
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.bench-venv
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet fastapi uvicorn
fi
cargo build --release -p panal
exec ./target/release/panal bench http --baseline-python "$venv/bin/python" "$@"
