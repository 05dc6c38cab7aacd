#!/usr/bin/env bash
# The long drill: 10 minutes of random faults on a local 5-manager cluster, report in
# drill-report/ (report.md, figures.json, timeline.svg, history.json).
# Usage: scripts/drill-long.sh [extra `panal drill` flags, e.g. --seed 42 --rate 300]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p panal
exec ./target/release/panal drill random --nodes 5 --duration 10m --report drill-report "$@"
