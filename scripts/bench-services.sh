#!/usr/bin/env bash
# Service-mix benchmark: browse (book list), purchase (orders) and ingest (reading batches)
# through a local 3-node panal cluster, requests spread over every node, beside a
# single-process FastAPI + SQLite service (scripts/baseline/fastapi_services.py) doing the
# same work, in one run. FastAPI and uvicorn (with its standard extras, httptools and
# uvloop, as FastAPI recommends for deployment) come from PyPI into a private venv
# (.bench-venv, shared with scripts/bench-http.sh), never vendored.
# Usage: scripts/bench-services.sh [extra `panal bench services` flags, e.g. --seconds 10 --json out.json]
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.bench-venv
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
if ! "$venv/bin/python" -c 'import fastapi, uvicorn, httptools, uvloop' 2>/dev/null; then
  "$venv/bin/pip" install --quiet fastapi 'uvicorn[standard]'
fi
cargo build --release -p panal
exec ./target/release/panal bench services --baseline-python "$venv/bin/python" "$@"
