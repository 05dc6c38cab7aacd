#!/usr/bin/env bash
# docker-image.sh - build the Panal container image (swarm/Dockerfile, FROM scratch) from
# the static musl binary; needs no registry.
#
# Usage: scripts/docker-image.sh [IMAGE]
#   IMAGE defaults to panal:<version> (the version `panal --version` prints); the image is
#   also tagged panal:latest unless IMAGE is given.
#   PANAL_BINARY=/path/to/static/panal skips the build (scripts/build-static.sh).
# The last line of stdout is the image reference; progress goes to stderr.
set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
log() { printf 'docker-image: %s\n' "$*" >&2; }
die() {
	printf 'docker-image: FAIL: %s\n' "$*" >&2
	exit 1
}

command -v docker >/dev/null || die "docker is not installed"
docker info >/dev/null 2>&1 || die "cannot talk to the Docker engine (not running, or no permission)"

BIN=${PANAL_BINARY:-}
if [[ -z $BIN ]]; then
	BIN=$("$REPO_ROOT/scripts/build-static.sh" | tail -n 1)
fi
[[ -x $BIN ]] || die "no executable binary at $BIN"
if readelf -l "$BIN" 2>/dev/null | grep -q 'program interpreter'; then
	die "$BIN is dynamically linked; a FROM scratch image needs the static build (scripts/build-static.sh)"
fi
VERSION=$("$BIN" --version | awk '{print $2}')
[[ -n $VERSION ]] || die "cannot read the version of $BIN"

IMAGE=${1:-panal:$VERSION}
EXTRA_TAG=()
[[ $# -eq 0 ]] && EXTRA_TAG=(-t panal:latest)

CONTEXT=$(mktemp -d /tmp/panal-image.XXXXXX)
trap 'rm -rf "$CONTEXT"' EXIT
cp "$BIN" "$CONTEXT/panal"
# Symbols are of no use in the image (about 4 MB of the binary).
command -v strip >/dev/null && strip --strip-all "$CONTEXT/panal"
mkdir -p "$CONTEXT/rootfs/data" "$CONTEXT/rootfs/tmp"
chmod 0755 "$CONTEXT/panal" "$CONTEXT/rootfs/data"
chmod 0755 "$CONTEXT/rootfs/tmp"

log "docker build -t $IMAGE (binary $BIN, version $VERSION)"
docker build --quiet -f "$REPO_ROOT/swarm/Dockerfile" -t "$IMAGE" "${EXTRA_TAG[@]}" \
	--label "org.opencontainers.image.version=$VERSION" \
	--label "org.opencontainers.image.title=panal" \
	"$CONTEXT" >&2 || die "docker build failed"
SIZE=$(docker image inspect -f '{{.Size}}' "$IMAGE")
log "built $IMAGE: $((SIZE / 1000 / 1000)) MB ($SIZE bytes)"
echo "$IMAGE"
