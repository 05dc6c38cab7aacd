#!/usr/bin/env bash
# Replicated-write benchmark: panal vs etcd (Debian's etcd-server), side by side.
# Usage: scripts/bench-raft.sh [extra `panal bench raft` flags]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/baselines.sh
install_etcd
build_release
exec ./target/release/panal bench raft "$@"
