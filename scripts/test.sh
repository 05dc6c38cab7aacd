#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit and end-to-end tests.
# End-to-end tests start real `panal` processes on 127.x.y.z loopback addresses.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --quiet -- -D warnings
cargo test --workspace
