#!/usr/bin/env bash
# Fuzzes the HTTP API against its own /openapi.json with Schemathesis: starts a 3-node
# `panal up --demo` cluster, validates the document with openapi-spec-validator, then runs
# every check as an anonymous client, as a demo user and as the admin, with a fixed seed
# and a bounded number of examples. Exits non-zero on any failure; the cluster is stopped
# on exit whatever happens.
#
#   PANAL_BIN=path/to/panal   use this binary instead of building one
#   ST_BASE_PORT=7950         first API port of the cluster (node i: +10·i)
#   ST_MAX_EXAMPLES=8         examples per operation and phase
#   ST_SEED=20261202          the seed
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

if ! command -v python3 >/dev/null || ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
  echo "schemathesis-test: skipped, needs python3 with venv and pip"
  exit 0
fi

venv="$root/.schemathesis-venv"
if [ ! -x "$venv/bin/st" ] || [ ! -x "$venv/bin/openapi-spec-validator" ]; then
  echo "== installing schemathesis and openapi-spec-validator into $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check 'schemathesis==4.32.5' 'openapi-spec-validator==0.9.0'
fi

bin=${PANAL_BIN:-}
if [ -z "$bin" ]; then
  echo "== building panal"
  cargo build --quiet -p panal
  bin="$root/target/debug/panal"
fi

base=${ST_BASE_PORT:-7950}
examples=${ST_MAX_EXAMPLES:-8}
seed=${ST_SEED:-20261202}
dir=$(mktemp -d /tmp/panal-schemathesis.XXXXXX)
api="http://127.0.0.1:$base"
up_pid=""

stop() {
  local rc=$?
  if [ -n "$up_pid" ] && kill -0 "$up_pid" 2>/dev/null; then
    # `panal up` stops every node on SIGTERM.
    kill -TERM "$up_pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$up_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$up_pid" 2>/dev/null || true
  fi
  if [ "$rc" -ne 0 ]; then
    echo "schemathesis-test: FAILED (exit $rc); node logs:"
    tail -n 20 "$dir"/node*.log 2>/dev/null || true
  fi
  rm -rf "$dir"
}
trap stop EXIT

echo "== starting a 3-node demo cluster on ports $base.. (data in $dir)"
"$bin" up --demo --nodes 3 --dir "$dir/cluster" --base-port "$base" >"$dir/up.log" 2>&1 &
up_pid=$!
deadline=$((SECONDS + 240))
until grep -q "^Ctrl-C" "$dir/up.log" 2>/dev/null; do
  if ! kill -0 "$up_pid" 2>/dev/null || [ $SECONDS -gt $deadline ]; then
    echo "the cluster did not come up:"; cat "$dir/up.log"; exit 1
  fi
  sleep 0.5
done

curl -sf "$api/openapi.json" -o "$dir/openapi.json"
echo "== openapi-spec-validator"
"$venv/bin/openapi-spec-validator" "$dir/openapi.json"

login() {
  curl -sf "$api/api/v1/auth/login" -H 'content-type: application/json' \
    -d "{\"username\":\"$1\",\"password\":\"$2\"}" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])'
}
user_token=$(login alice alice-demo-pass)
admin_token=$(login admin "$(cat "$dir/cluster/admin-password")")

# Operations that would end the run's own premises: logging out revokes the token being
# used, membership and node availability changes would take nodes out of the cluster under
# test, service specs would scale services away under the run, and a CA rotation would
# re-issue every certificate during it. They are fuzzed anonymously (where they must
# answer 401) and covered by the e2e tests (tests/tests/tls.rs rotates under writes).
destructive='^/api/v1/(auth/logout|cluster/nodes/\{id\}.*|services/\{name\}.*|cluster/ca/rotate)$'

summary=()
failed=0
run() {
  local role=$1; shift
  local report="$dir/$role.json"
  echo "== schemathesis as $role"
  # One worker: hypothesis compiles code in its threads, and CPython 3.11's compile() is not
  # thread-safe ("AST constructor recursion depth mismatch").
  set +e
  "$venv/bin/st" --config-file "$root/scripts/schemathesis.toml" run "$api/openapi.json" \
    --checks all --seed "$seed" --max-examples "$examples" --workers 1 \
    --phases examples,coverage,fuzzing --no-shrink \
    --request-timeout 20 --suppress-health-check all --warnings off \
    --report ndjson --report-ndjson-path "$dir/$role.ndjson" "$@" 2>&1 | tee "$dir/$role.log"
  local rc=${PIPESTATUS[0]}
  set -e
  local cases failures
  cases=$(grep -oE '[0-9]+ generated' "$dir/$role.log" | tail -1 | grep -oE '[0-9]+' || echo 0)
  failures=$(grep -oE '[0-9]+ unique failures?' "$dir/$role.log" | tail -1 | grep -oE '[0-9]+' || echo 0)
  summary+=("$(printf '%-10s %8s cases %6s failures  (exit %s)' "$role" "$cases" "$failures" "$rc")")
  if [ "$rc" -ne 0 ]; then failed=1; fi
  total=$((total + cases))
}
total=0
run anonymous
run user -H "Authorization: Bearer $user_token" --exclude-path-regex "$destructive"
run admin -H "Authorization: Bearer $admin_token" --exclude-path-regex "$destructive"

echo "== schemathesis summary (seed $seed, $examples examples per operation and phase)"
printf '%s\n' "${summary[@]}"
echo "total: $total cases"
if [ "$total" -lt 1000 ]; then
  echo "fewer than 1,000 cases: raise ST_MAX_EXAMPLES"; failed=1
fi
exit "$failed"
