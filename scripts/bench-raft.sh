#!/usr/bin/env bash
# Replicated-write benchmark: panal vs etcd (Debian's etcd-server), side by side.
# Usage: scripts/bench-raft.sh [extra `panal bench raft` flags]
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v etcd >/dev/null; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server
    # The package starts a system etcd; the benchmark runs its own.
    systemctl disable --now etcd 2>/dev/null || pkill -x etcd || true
  else
    echo "etcd not installed and not root: the etcd columns will be skipped" >&2
  fi
fi
cargo build --release -p panal
exec ./target/release/panal bench raft "$@"
