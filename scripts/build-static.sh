#!/usr/bin/env bash
# build-static.sh - build a fully static `panal` for x86_64-unknown-linux-musl
# (runs anywhere on x86-64 Linux: a busybox initramfs, a FROM scratch image).
#
# Usage: scripts/build-static.sh
# The last line of stdout is the path of the static binary; build output and
# progress go to stderr. Exits non-zero if the binary is not fully static.
#
# Needs: rustup (adds the musl target when missing) and musl-gcc for the C
# parts (bundled SQLite, aws-lc): Debian's musl-tools is installed with
# apt-get when missing and this runs as root.
#
# aws-lc (aws-lc-sys, under jsonwebtoken and the mesh's TLS) needs no extra
# CC/CFLAGS or cmake here: the cc crate picks musl-tools' x86_64-linux-musl-gcc,
# and since that compiler has no kernel headers, aws-lc's <linux/random.h>
# probe fails (a "fatal error" line in its build output, expected) and it
# takes its getentropy(3) path, which musl provides. Checked with aws-lc-sys
# 0.47 on Debian 12.
set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TARGET=x86_64-unknown-linux-musl
TARGET_DIR=${CARGO_TARGET_DIR:-$REPO_ROOT/target}

log() { printf 'build-static: %s\n' "$*" >&2; }
die() {
	printf 'build-static: FAIL: %s\n' "$*" >&2
	exit 1
}

if ! command -v musl-gcc >/dev/null; then
	if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null; then
		die "musl-gcc missing: install Debian's musl-tools (needs root and apt-get)"
	fi
	log "installing musl-tools"
	export DEBIAN_FRONTEND=noninteractive
	{ apt-get update -q && apt-get install -y -q --no-install-recommends musl-tools; } >&2 ||
		die "apt-get install musl-tools failed"
fi
command -v rustup >/dev/null || die "rustup missing (needed to add the $TARGET target)"
if ! rustup target list --installed | grep -qx "$TARGET"; then
	log "adding the $TARGET target"
	rustup target add "$TARGET" >&2
fi

log "cargo build --release --target $TARGET -p panal"
(cd "$REPO_ROOT" && cargo build --release --target "$TARGET" -p panal) >&2 ||
	die "cargo build failed"

BIN=$TARGET_DIR/$TARGET/release/panal
[[ -x $BIN ]] || die "no binary at $BIN"
# Static: no program interpreter, no shared libraries.
if readelf -l "$BIN" | grep -q 'Requesting program interpreter'; then
	die "$BIN has a program interpreter (dynamically linked)"
fi
if readelf -d "$BIN" | grep -q '(NEEDED)'; then
	die "$BIN needs shared libraries: $(readelf -d "$BIN" | grep '(NEEDED)' | tr -s ' ')"
fi
command -v file >/dev/null && log "$(file -b "$BIN")"
log "static binary: $BIN ($(du -h "$BIN" | cut -f1))"
echo "$BIN"
