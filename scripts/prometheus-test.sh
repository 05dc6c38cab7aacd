#!/usr/bin/env bash
# prometheus-test.sh - scrape a local 3-node panal cluster with a real
# Prometheus (Debian's package) and check what it stores.
#
#   1. install Debian's `prometheus` (prometheus + promtool) when missing;
#      without root or apt-get that is not possible: SKIP, exit 0;
#   2. cargo build --release -p panal (or PANAL_BIN=/path/to/panal);
#   3. `panal up --dir <tmp> --base-port <free>` in the background, in its own
#      process group, until it prints its banner (every node ready);
#   4. `promtool check metrics` on one node's /metrics (no lint problem allowed);
#      `promtool check rules` on scripts/prometheus-rules.yml and `promtool test
#      rules` on scripts/prometheus-rules.test.yml (each alert fires, or not, on
#      given series);
#   5. prometheus with scripts/prometheus.yml and its alert rules, its targets
#      rewritten to the cluster's ports and a 1 s scrape and evaluation interval
#      (checked by promtool check config), TSDB in the temp dir, web UI on a free
#      loopback port;
#   6. poll /api/v1/targets until the 3 targets are up, then /api/v1/query
#      until `panal_node_info == 1` and `panal_node_processes` each return
#      exactly one series per node; the per-service restart, failure, retry and
#      in-flight series exist at start for every service of every node, and
#      `panal_process_cpu_seconds_total` is a counter; every alert rule is
#      evaluated without error and none fires on the healthy cluster; every
#      query of scripts/grafana-dashboard.json returns data.
# Every wait polls with a deadline. The cluster, prometheus and the temp dir
# are removed on every exit path. Prints PASS or FAIL; exits non-zero on FAIL.
#
# Environment knobs:
#   PANAL_PROM_TIMEOUT   seconds allowed for each wait (120)
#   PANAL_PROM_KEEP=1    keep the temporary directory (logs, config, TSDB)
set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TIMEOUT=${PANAL_PROM_TIMEOUT:-120}
KEEP=${PANAL_PROM_KEEP:-0}
TARGET_DIR=${CARGO_TARGET_DIR:-$REPO_ROOT/target}

log() { printf 'prometheus-test: %s\n' "$*" >&2; }
fail() {
	printf 'prometheus-test: FAIL: %s\n' "$*" >&2
	exit 1
}

# --- 1. packages --------------------------------------------------------------
if ! command -v prometheus >/dev/null || ! command -v promtool >/dev/null; then
	if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null; then
		echo "prometheus-test: SKIP: prometheus/promtool missing and cannot install them (needs root and apt-get)"
		exit 0
	fi
	log "installing Debian's prometheus"
	export DEBIAN_FRONTEND=noninteractive
	apt_log=$(mktemp)
	if ! { apt-get update -q && apt-get install -y -q --no-install-recommends prometheus; } >"$apt_log" 2>&1; then
		tail -n 40 "$apt_log" >&2
		rm -f "$apt_log"
		fail "apt-get install prometheus failed"
	fi
	rm -f "$apt_log"
fi
log "$(prometheus --version 2>&1 | head -n 1)"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/panal-prom.XXXXXX")
UP_PID=
PROM_PID=

# SIGTERM, up to 20 s for a clean exit, then SIGKILL to the whole group.
stop_group() {
	local pid=$1
	kill -0 "$pid" 2>/dev/null || return 0
	kill -TERM "$pid" 2>/dev/null || true
	for _ in $(seq 1 100); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.2
	done
	kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
}

cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	[[ -z $PROM_PID ]] || stop_group "$PROM_PID"
	# `panal up` stops its nodes on SIGTERM; the group kill catches any leftover.
	[[ -z $UP_PID ]] || stop_group "$UP_PID"
	if [[ $rc -ne 0 ]]; then
		for f in "$WORK"/up.log "$WORK"/cluster/node*.log "$WORK"/prometheus.log; do
			[[ -s $f ]] || continue
			log "last lines of $f:"
			tail -n 20 "$f" >&2 || true
		done
		echo "prometheus-test: FAIL"
	fi
	if [[ $KEEP == 1 ]]; then
		log "kept $WORK"
	else
		rm -rf "$WORK"
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Polls `"$@"` every 0.2 s until it succeeds; fails after $TIMEOUT s (with
# the last reason check.py gave, if any) or if a background process we depend
# on has exited.
wait_for() {
	local what=$1
	shift
	local deadline=$((SECONDS + TIMEOUT))
	until "$@"; do
		[[ -z $UP_PID ]] || kill -0 "$UP_PID" 2>/dev/null || fail "panal up exited while waiting for $what"
		[[ -z $PROM_PID ]] || kill -0 "$PROM_PID" 2>/dev/null || fail "prometheus exited while waiting for $what"
		if ((SECONDS >= deadline)); then
			[[ ! -s $WORK/check.log ]] || log "last check: $(cat "$WORK/check.log")"
			fail "no $what within ${TIMEOUT}s"
		fi
		sleep 0.2
	done
}

# --- 2. build -----------------------------------------------------------------
# PANAL_BIN: a binary built once for every suite (.ci/run); else a release build here.
if [[ -n ${PANAL_BIN:-} ]]; then
	PANAL=$PANAL_BIN
else
	log "building panal (release)"
	(cd "$REPO_ROOT" && cargo build --release -p panal) >"$WORK/build.log" 2>&1 ||
		{ tail -n 40 "$WORK/build.log" >&2; fail "cargo build failed"; }
	PANAL=$TARGET_DIR/release/panal
fi
[[ -x $PANAL ]] || fail "no binary at $PANAL"

# --- 3. cluster ---------------------------------------------------------------
# A base port whose 9 cluster ports (base+10i+{0,1,2}) are free, and one more
# free port for prometheus, outside that range.
read -r BASE PROM_PORT < <(python3 - <<'EOF'
import random
import socket


def free(port):
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


for _ in range(500):
    base = random.randrange(20000, 60000, 100)
    if all(free(base + 10 * i + j) for i in range(3) for j in range(3)):
        break
else:
    raise SystemExit("no free port range")
while True:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        prom = s.getsockname()[1]
    if not base <= prom <= base + 22:
        break
print(base, prom)
EOF
)
PORTS=("$BASE" $((BASE + 10)) $((BASE + 20)))
log "starting panal up on ports ${PORTS[*]}"
# setsid: the cluster gets its own process group, so cleanup can reach every node.
setsid "$PANAL" up --dir "$WORK/cluster" --base-port "$BASE" --nodes 3 \
	>"$WORK/up.log" 2>&1 </dev/null &
UP_PID=$!
wait_for "'Panal cluster up' banner" grep -q '^Panal cluster up' "$WORK/up.log"
log "cluster up"

# Traffic through the gateway, so that its series are in the exposition too.
for port in "${PORTS[@]}"; do
	curl -fsS -o /dev/null "http://127.0.0.1:$port/api/v1/auth/ping" ||
		fail "GET /api/v1/auth/ping on port $port failed"
done

# --- 4. promtool check metrics ------------------------------------------------
NODE1=http://127.0.0.1:${PORTS[0]}
has_samples() {
	curl -fsS "$NODE1/metrics" >"$WORK/metrics.txt" 2>/dev/null &&
		grep -q '^panal_node_processes{' "$WORK/metrics.txt"
}
wait_for "collector sample in $NODE1/metrics" has_samples
lines=$(grep -vc '^#' "$WORK/metrics.txt" || true)
if ! promtool check metrics <"$WORK/metrics.txt" >"$WORK/promtool.log" 2>&1; then
	cat "$WORK/promtool.log" >&2
	fail "promtool check metrics found problems in $NODE1/metrics"
fi
[[ ! -s $WORK/promtool.log ]] || { cat "$WORK/promtool.log" >&2; fail "promtool check metrics printed warnings"; }
log "promtool check metrics: $NODE1/metrics clean ($lines samples)"
for series in panal_actor_restarts_total panal_service_failures_total panal_gateway_retries_total; do
	grep -q "^# TYPE $series counter\$" "$WORK/metrics.txt" || fail "$series is not a counter in $NODE1/metrics"
done
grep -q '^# TYPE panal_process_cpu_seconds_total counter$' "$WORK/metrics.txt" ||
	fail "panal_process_cpu_seconds_total is not a counter in $NODE1/metrics"
promtool check rules "$REPO_ROOT/scripts/prometheus-rules.yml" >"$WORK/rules.log" 2>&1 ||
	{ cat "$WORK/rules.log" >&2; fail "promtool check rules rejected scripts/prometheus-rules.yml"; }
promtool test rules "$REPO_ROOT/scripts/prometheus-rules.test.yml" >"$WORK/rules-test.log" 2>&1 ||
	{ cat "$WORK/rules-test.log" >&2; fail "promtool test rules: scripts/prometheus-rules.test.yml failed"; }
log "promtool check rules and test rules: alert rules clean and tested"

# --- 5. prometheus ------------------------------------------------------------
sed -e "s/127\.0\.0\.1:7700\b/127.0.0.1:${PORTS[0]}/" \
	-e "s/127\.0\.0\.1:7710\b/127.0.0.1:${PORTS[1]}/" \
	-e "s/127\.0\.0\.1:7720\b/127.0.0.1:${PORTS[2]}/" \
	-e 's/^\(\s*\(scrape\|evaluation\)_interval:\).*/\1 1s/' \
	"$REPO_ROOT/scripts/prometheus.yml" >"$WORK/prometheus.yml"
cp "$REPO_ROOT/scripts/prometheus-rules.yml" "$WORK/prometheus-rules.yml"
for port in "${PORTS[@]}"; do
	grep -q "127.0.0.1:$port\$" "$WORK/prometheus.yml" || fail "target 127.0.0.1:$port missing from the generated config"
done
promtool check config "$WORK/prometheus.yml" >"$WORK/promtool-config.log" 2>&1 ||
	{ cat "$WORK/promtool-config.log" >&2; fail "promtool check config rejected the generated config"; }
PROM=http://127.0.0.1:$PROM_PORT
log "starting prometheus on $PROM"
setsid prometheus --config.file="$WORK/prometheus.yml" \
	--storage.tsdb.path="$WORK/tsdb" \
	--web.listen-address="127.0.0.1:$PROM_PORT" \
	>"$WORK/prometheus.log" 2>&1 </dev/null &
PROM_PID=$!

# --- 6. what prometheus scraped -----------------------------------------------
# check.py MODE: exit 0 when the condition holds, 1 (with the reason on
# stderr) when not yet; MODE "report" prints the result.
cat >"$WORK/check.py" <<'EOF'
import json
import sys
import urllib.parse
import urllib.request

prom, mode, targets = sys.argv[1], sys.argv[2], sys.argv[3].split(",")
want = set(targets)
dashboard = sys.argv[4] if len(sys.argv) > 4 else None
SERVICES = ["auth", "catalog", "energy", "prediction", "metrics"]


def get(path, **params):
    url = prom + path + ("?" + urllib.parse.urlencode(params) if params else "")
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            body = json.load(r)
    except Exception as e:  # not up yet, or an error answer
        sys.exit("%s: %s" % (url, e))
    if body.get("status") != "success":
        sys.exit("%s: %r" % (url, body))
    return body["data"]


def one_per_node(query):
    series = get("/api/v1/query", query=query)["result"]
    instances = [s["metric"].get("instance") for s in series]
    if len(series) != 3 or set(instances) != want:
        sys.exit("%s: want one series per node %s, got %r" % (query, sorted(want), series))
    return series


if mode == "targets":
    active = [t for t in get("/api/v1/targets")["activeTargets"] if t["labels"].get("job") == "panal"]
    up = {t["labels"]["instance"] for t in active if t["health"] == "up"}
    if len(active) != 3 or up != want:
        sys.exit("targets: %r" % [(t["labels"].get("instance"), t["health"], t.get("lastError")) for t in active])
elif mode in ("series", "report"):
    info = one_per_node("panal_node_info == 1")
    names = {s["metric"].get("name") for s in info}
    if len(names) != 3:
        sys.exit("panal_node_info: node names not distinct: %r" % info)
    procs = one_per_node("panal_node_processes")
    if not all(float(s["value"][1]) > 0 for s in procs):
        sys.exit("panal_node_processes: a node reports no processes: %r" % procs)
    # Present from start at 0 for every service of every node, before any event.
    for name in ["panal_actor_restarts_total", "panal_service_failures_total",
                 "panal_gateway_retries_total", "panal_gateway_in_flight"]:
        series = get("/api/v1/query", query=name)["result"]
        have = {(s["metric"].get("instance"), s["metric"].get("service")) for s in series}
        missing = sorted((i, s) for i in want for s in SERVICES if (i, s) not in have)
        if missing:
            sys.exit("%s: no series for %r" % (name, missing))
    one_per_node("panal_process_cpu_seconds_total")
    if mode == "report":
        for s in sorted(info, key=lambda s: s["metric"]["instance"]):
            p = next(x for x in procs if x["metric"]["instance"] == s["metric"]["instance"])
            print("prometheus-test:   %s name=%s role=%s panal_node_processes=%s (source=%s)" % (
                s["metric"]["instance"], s["metric"]["name"], s["metric"]["role"],
                p["value"][1], p["metric"].get("source")))
elif mode == "alerts":
    groups = get("/api/v1/rules")["groups"]
    rules = [r for g in groups for r in g["rules"]]
    if len(rules) != 6:
        sys.exit("rules: want the 6 rules of prometheus-rules.yml, got %r" % [r.get("name") for r in rules])
    bad = [(r["name"], r.get("health"), r.get("lastError")) for r in rules if r.get("health") != "ok"]
    if bad:
        sys.exit("rules not (yet) evaluated cleanly: %r" % bad)
    firing = [(r["name"], r.get("state")) for r in rules if r.get("state") != "inactive"]
    if firing:
        sys.exit("alerts pending or firing on a healthy cluster: %r" % firing)
elif mode == "dashboard":
    with open(dashboard) as f:
        panels = json.load(f)["panels"]
    exprs = [(p["title"], t["expr"]) for p in panels for t in p["targets"]]
    for title, expr in exprs:
        if not get("/api/v1/query", query=expr)["result"]:
            sys.exit("dashboard panel %r: no data for %s" % (title, expr))
    print("prometheus-test:   %d dashboard queries in %d panels return data" % (len(exprs), len(panels)))
EOF
TARGETS=$(printf '127.0.0.1:%s,' "${PORTS[@]}")
TARGETS=${TARGETS%,}
DASHBOARD=$REPO_ROOT/scripts/grafana-dashboard.json
check() { python3 "$WORK/check.py" "$PROM" "$1" "$TARGETS" "$DASHBOARD" >/dev/null 2>"$WORK/check.log"; }
wait_for "3 healthy targets in $PROM/api/v1/targets" check targets
log "prometheus: 3 targets up"
wait_for "one panal_node_info and one panal_node_processes series per node" check series
python3 "$WORK/check.py" "$PROM" report "$TARGETS"
wait_for "every alert rule evaluated, none firing" check alerts
log "prometheus: 6 alert rules evaluated, none firing"
wait_for "data for every dashboard query" check dashboard
python3 "$WORK/check.py" "$PROM" dashboard "$TARGETS" "$DASHBOARD"
echo "prometheus-test: PASS"
