#!/usr/bin/env bash
# The web console in a real headless Chromium: starts a 3-node `panal up --demo` cluster on
# a free base port and drives /ui/ with Selenium (scripts/browser_test.py): a shopper signs
# in, searches, buys, is declined, pays, opens the invoice; the admin sees the nodes, the
# leader and live metrics; both sign out. Screenshots go to $ARTIFACTS (default
# target/browser-artifacts). Installs chromium + chromium-driver (apt, when root) and
# selenium (a gitignored venv) when missing; skips with a message where that is impossible.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
ARTIFACTS=${ARTIFACTS:-$ROOT/target/browser-artifacts}
VENV=$ROOT/.browser-venv

skip() {
  echo "browser-test skipped: $*"
  exit 0
}

find_chromium() {
  CHROME=$(command -v chromium || command -v chromium-browser || true)
  DRIVER=$(command -v chromedriver || true)
}

find_chromium
if [ -z "$CHROME" ] || [ -z "$DRIVER" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "== installing chromium and chromium-driver (apt)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver >/dev/null ||
      { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver >/dev/null; } ||
      skip "apt-get could not install chromium and chromium-driver"
    find_chromium
  fi
fi
[ -n "$CHROME" ] && [ -n "$DRIVER" ] || skip "Chromium or chromedriver is missing (apt-get install chromium chromium-driver)"

if ! [ -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import selenium' 2>/dev/null; then
  echo "== installing selenium into $VENV"
  python3 -m venv "$VENV" || skip "python3 -m venv is unavailable"
  "$VENV/bin/pip" install -q 'selenium>=4.10,<5' || skip "pip could not install selenium"
fi
[ "${BROWSER_TEST_INSTALL_ONLY:-}" = 1 ] && { echo "browser-test: tools installed"; exit 0; }

# PANAL_BIN: a binary built once for every suite (.ci/run); else a debug build here.
if [ -n "${PANAL_BIN:-}" ]; then
  PANAL=$PANAL_BIN
else
  echo "== building panal"
  cargo build -q -p panal --bin panal
  PANAL=$ROOT/target/debug/panal
fi

# A free base port: node i uses base+10i .. base+10i+2.
BASE=$(python3 - <<'PY'
import random, socket
for _ in range(200):
    base = random.randrange(20000, 60000, 10)
    try:
        socks = []
        for p in [base + 10 * i + k for i in range(3) for k in range(3)]:
            s = socket.socket(); s.bind(("127.0.0.1", p)); socks.append(s)
        print(base); break
    except OSError:
        pass
    finally:
        for s in socks: s.close()
PY
)
UPDIR=$(mktemp -d)
LOG=$UPDIR/up.log
"$PANAL" up --demo --dir "$UPDIR" --base-port "$BASE" >"$LOG" 2>&1 &
UP_PID=$!
cleanup() {
  kill "$UP_PID" 2>/dev/null || true
  wait "$UP_PID" 2>/dev/null || true
  rm -rf "$UPDIR"
}
trap cleanup EXIT
# `up --demo` prints "Try:" once the cluster is ready and the demo data is loaded.
for _ in $(seq 1 240); do
  grep -q '^Try:' "$LOG" && break
  kill -0 "$UP_PID" 2>/dev/null || { cat "$LOG"; echo "panal up exited"; exit 1; }
  sleep 1
done
grep -q '^Try:' "$LOG" || { cat "$LOG"; echo "panal up did not get ready within 4 minutes"; exit 1; }

mkdir -p "$ARTIFACTS"
"$VENV/bin/python" scripts/browser_test.py \
  --url "http://127.0.0.1:$BASE" --other "http://127.0.0.1:$((BASE + 20))" \
  --admin-password "$(cat "$UPDIR/admin-password")" \
  --chrome "$CHROME" --driver "$DRIVER" --artifacts "$ARTIFACTS"
