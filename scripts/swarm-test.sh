#!/usr/bin/env bash
# swarm-test.sh - Panal on Docker Swarm, for real, on the local engine: builds the image
# (FROM scratch, static binary, no registry), joins/initialises a one-node swarm, deploys
# swarm/stack.yml (3 managers + 2 workers), waits for a ready cluster through the routing
# mesh, runs a BookStore purchase through the published port, kills a manager's container
# (Swarm restarts it and the node rejoins with the same identity and its data), does a
# rolling update to a new image tag one node at a time while writes keep succeeding, then
# removes everything it created.
#
# Usage: scripts/swarm-test.sh
#   PANAL_BINARY=/path/to/static/panal   skip the static build
#   KEEP_IMAGE=1                         keep the image it built
#   PANAL_PUBLISH_MODE=ingress|host      how ports are published (default: ingress, the
#                                        routing mesh, when the kernel has IPVS; else host)
#
# Skipped (exit 0, with a message) when there is no Docker engine or no permission to use
# it, or when the engine is a swarm worker. Leaves the engine as it found it: a swarm it
# initialised is left (and docker_gwbridge removed if it created it); on an engine that
# already was a swarm manager only its own stack, secrets, volumes, labels and images are
# removed. Cleanup runs from an EXIT trap, so it also runs on failure or Ctrl-C.
set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
T0=$(date +%s)
log() { printf '[swarm-test +%3ss] %s\n' "$(($(date +%s) - T0))" "$*" >&2; }
skip() {
	echo "swarm-test: SKIPPED: $*"
	exit 0
}
fail() {
	log "FAIL: $*"
	exit 1
}

command -v docker >/dev/null || skip "docker is not installed"
docker info >/dev/null 2>&1 || skip "no Docker engine reachable (not running, or no permission to use it)"
for tool in curl jq; do
	command -v "$tool" >/dev/null || skip "$tool is not installed"
done
SWARM_STATE=$(docker info -f '{{.Swarm.LocalNodeState}}')
case $SWARM_STATE in
inactive) ;;
active) [[ $(docker info -f '{{.Swarm.ControlAvailable}}') == true ]] ||
	skip "this engine is a swarm worker; run the test on a manager" ;;
*) skip "the engine's swarm state is '$SWARM_STATE'" ;;
esac

# One run at a time per engine: a run that initialised the swarm leaves it at the end.
exec 9>/tmp/panal-swarm-test.lock
flock -w 900 9 || fail "another swarm-test.sh holds /tmp/panal-swarm-test.lock"

RUN=pnl$(od -An -N3 -tx1 /dev/urandom | tr -d ' \n')
STACK=$RUN
IMAGE=panal:$RUN
IMAGE2=panal:$RUN-update
SERVICES=(manager1 manager2 manager3 worker1 worker2)
PASSWORD=$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')
WE_INITIALISED=0
GWBRIDGE_EXISTED=0
docker network inspect docker_gwbridge >/dev/null 2>&1 && GWBRIDGE_EXISTED=1
LABELS_ADDED=()
IMAGES_BUILT=()
NODE=""

cleanup() {
	local rc=$?
	set +e
	trap - EXIT INT TERM
	if ((rc != 0)) && [[ -n $NODE ]]; then
		docker service ls --filter "label=com.docker.stack.namespace=$STACK" >&2
		for s in "${SERVICES[@]}"; do
			echo "--- docker service ps / logs ${STACK}_$s" >&2
			docker service ps --no-trunc "${STACK}_$s" 2>&1 | head -n 6 >&2
			docker service logs --tail 15 "${STACK}_$s" 2>&1 | tail -n 15 >&2
		done
	fi
	[[ -n ${upd:-} ]] && kill "$upd" 2>/dev/null
	log "cleanup: removing stack $STACK, its secrets, volumes and images"
	docker stack rm "$STACK" >/dev/null 2>&1
	for _ in $(seq 120); do
		[[ -z $(docker ps -aq --filter "label=com.docker.stack.namespace=$STACK") ]] &&
			! docker network inspect "${STACK}_panal" >/dev/null 2>&1 && break
		sleep 0.5
	done
	docker secret rm "${STACK}_cluster_token" "${STACK}_admin_password" >/dev/null 2>&1
	for s in "${SERVICES[@]}"; do
		docker volume rm "${STACK}_$s-data" >/dev/null 2>&1
	done
	for label in "${LABELS_ADDED[@]}"; do
		docker node update --label-rm "$label" "$NODE" >/dev/null 2>&1
	done
	if ((WE_INITIALISED)); then
		log "cleanup: leaving the swarm this test created"
		docker swarm leave --force >/dev/null 2>&1
		if ((!GWBRIDGE_EXISTED)); then
			for _ in $(seq 20); do
				docker network rm docker_gwbridge >/dev/null 2>&1 && break
				docker network inspect docker_gwbridge >/dev/null 2>&1 || break
				sleep 0.5
			done
		fi
	fi
	if [[ ${KEEP_IMAGE:-0} != 1 ]]; then
		for image in "${IMAGES_BUILT[@]}"; do docker image rm "$image" >/dev/null 2>&1; done
	fi
	rm -f "/tmp/$RUN-update.err" "/tmp/$RUN-ca.pem"
	# What is left of this run (should be nothing).
	local left
	left=$(
		docker ps -aq --filter "label=com.docker.stack.namespace=$STACK"
		docker volume ls -q | grep "^${STACK}_"
		docker secret ls -q --filter "name=$STACK" 2>/dev/null
	)
	[[ -n $left ]] && { log "cleanup left behind: $left"; ((rc == 0)) && rc=1; }
	if ((rc == 0)); then
		echo "swarm-test: PASS ($(($(date +%s) - T0))s)"
	else
		echo "swarm-test: FAIL (exit $rc, $(($(date +%s) - T0))s)"
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- image -------------------------------------------------------------------------------
log "building the image $IMAGE"
IMAGES_BUILT+=("$IMAGE")
"$REPO_ROOT/scripts/docker-image.sh" "$IMAGE" >/dev/null || fail "image build failed"
SIZE=$(docker image inspect -f '{{.Size}}' "$IMAGE")
log "image $IMAGE: $((SIZE / 1000 / 1000)) MB ($SIZE bytes)"
((SIZE < 30 * 1000 * 1000)) || fail "the image is not under 30 MB"
[[ $(docker image inspect -f '{{.Config.User}}' "$IMAGE") == 10001:10001 ]] || fail "the image does not run as 10001:10001"

# --- swarm -------------------------------------------------------------------------------
if [[ $SWARM_STATE == inactive ]]; then
	log "docker swarm init (this engine was not in a swarm; the test leaves it at the end)"
	WE_INITIALISED=1
	addr=$(ip -4 route get 1.1.1.1 2>/dev/null | awk '{for (i = 1; i < NF; i++) if ($i == "src") print $(i + 1)}')
	docker swarm init --advertise-addr "${addr:-127.0.0.1}" >/dev/null || fail "docker swarm init failed"
else
	log "this engine already is a swarm manager; deploying next to what runs there"
fi
NODE=$(docker info -f '{{.Swarm.NodeID}}')
for s in "${SERVICES[@]}"; do
	label=panal.$s
	if [[ $(docker node inspect -f "{{index .Spec.Labels \"$label\"}}" "$NODE") == "" ]]; then
		docker node update --label-add "$label=true" "$NODE" >/dev/null
		LABELS_ADDED+=("$label")
	fi
done

# Published ports PREFIX00, PREFIX10, … : the first prefix with all five free.
PREFIX=""
used=$(
	ss -Hltn 2>/dev/null | awk '{print $4}' | sed 's/.*://'
	docker service ls -q | xargs -r docker service inspect -f '{{range .Endpoint.Ports}}{{.PublishedPort}} {{end}}' | tr ' ' '\n'
)
for p in $(seq 47 65); do
	free=1
	for i in 0 1 2 3 4; do grep -qx "${p}${i}0" <<<"$used" && free=0; done
	((free)) && { PREFIX=$p; break; }
done
[[ -n $PREFIX ]] || fail "no free range of published ports found"
port_of() { # port_of SERVICE
	local i
	for i in "${!SERVICES[@]}"; do
		if [[ ${SERVICES[$i]} == "$1" ]]; then echo "${PREFIX}${i}0"; fi
	done
}
API=$(port_of manager1)
# The routing mesh (ingress publishing) needs IPVS in the kernel. Without it (some VM and
# container kernels) publish each node's port on the host directly instead: the same
# ports, reachable on the machine running the task (one machine here).
if [[ -z ${PANAL_PUBLISH_MODE:-} ]]; then
	if [[ -d /proc/sys/net/ipv4/vs ]] || { [[ -e /proc/modules ]] && modprobe -q ip_vs 2>/dev/null; }; then
		PANAL_PUBLISH_MODE=ingress
	else
		PANAL_PUBLISH_MODE=host
		log "this kernel has no IPVS, so the Swarm routing mesh cannot work here; publishing with mode: host"
	fi
fi
export PANAL_PUBLISH_MODE

openssl rand -hex 32 2>/dev/null | docker secret create "${STACK}_cluster_token" - >/dev/null ||
	od -An -N32 -tx1 /dev/urandom | tr -d ' \n' | docker secret create "${STACK}_cluster_token" - >/dev/null
printf '%s' "$PASSWORD" | docker secret create "${STACK}_admin_password" - >/dev/null
log "docker stack deploy $STACK (published API ports ${PREFIX}00…${PREFIX}40, mode $PANAL_PUBLISH_MODE)"
PANAL_IMAGE=$IMAGE PANAL_PORT_PREFIX=$PREFIX PANAL_SECRET_PREFIX=$STACK \
	docker stack deploy --resolve-image never -c "$REPO_ROOT/swarm/stack.yml" "$STACK" >&2 ||
	fail "docker stack deploy failed"

# --- HTTP helpers: HTTPS through the published ports on 127.0.0.1 -----------------------
# The API serves HTTPS with a certificate from the cluster CA (its SANs include 127.0.0.1);
# the CA certificate is read from manager1's volume, as stack.yml tells operators to.
CA_FILE=/tmp/$RUN-ca.pem
fetch_ca() {
	local c
	c=$(docker ps -q --filter "label=com.docker.swarm.service.name=${STACK}_manager1" | head -n 1)
	[[ -n $c ]] && docker cp "$c:/data/tls/ca.pem" "$CA_FILE" >/dev/null 2>&1 && [[ -s $CA_FILE ]]
}
# api PORT METHOD PATH [JSON] [curl args…] -> prints "STATUS BODY"
api() {
	local port=$1 method=$2 path=$3 body=${4:-}
	shift 4 2>/dev/null || shift $#
	local args=(-sS --max-time 20 -o - -w '\n%{http_code}' -X "$method" -H 'content-type: application/json')
	[[ -n $body ]] && args+=(--data "$body")
	local out
	out=$(curl --cacert "$CA_FILE" "${args[@]}" "$@" "https://127.0.0.1:$port$path" 2>/dev/null) || out=$'\n000'
	printf '%s %s\n' "${out##*$'\n'}" "${out%$'\n'*}"
}
status_of() { echo "${1%% *}"; }
body_of() { echo "${1#* }"; }
expect() { [[ $(status_of "$2") == "$1" ]] || fail "$3: expected $1, got $2"; }
wait_for() { # wait_for SECONDS WHAT COMMAND…
	local secs=$1 what=$2
	shift 2
	local deadline=$(($(date +%s) + secs))
	until "$@"; do
		(($(date +%s) < deadline)) || fail "$what: not within ${secs}s"
		sleep 1
	done
}
ready() { [[ $(status_of "$(api "$1" GET /ready)") == 200 ]]; }
TOKEN=""
admin_login() {
	local r
	r=$(api "$API" POST /api/v1/auth/login "{\"username\":\"admin\",\"password\":\"$PASSWORD\"}")
	[[ $(status_of "$r") == 200 ]] || return 1
	TOKEN=$(body_of "$r" | jq -r .access_token)
}
NODES=""
cluster_formed() { # every node a member, three managers, every task healthy
	local r
	r=$(api "$API" GET /api/v1/cluster/nodes "" -H "authorization: Bearer $TOKEN")
	[[ $(status_of "$r") == 200 ]] || return 1
	NODES=$(body_of "$r")
	[[ $(jq length <<<"$NODES") == 5 && $(jq '[.[] | select(.role == "manager")] | length' <<<"$NODES") == 3 ]] ||
		return 1
	local s
	for s in "${SERVICES[@]}"; do ready "$(port_of "$s")" || return 1; done
}

wait_for 240 "the cluster CA certificate in manager1's volume" fetch_ca
wait_for 240 "a ready cluster through the published port $API" ready "$API"
wait_for 30 "the admin login" admin_login
wait_for 120 "five members (three managers), each ready on its published port" cluster_formed
log "cluster formed: $(jq -c '[.[] | {id, name, role}]' <<<"$NODES")"
for s in manager1 manager2 manager3; do
	[[ $(jq -r ".[] | select(.name == \"$s\") | .role" <<<"$NODES") == manager ]] ||
		fail "$s should be a manager: $NODES"
done

# --- a BookStore purchase through the published port -------------------------------------
register() { # register USER -> token
	local r
	r=$(api "$API" POST /api/v1/auth/register "{\"username\":\"$1\",\"password\":\"$1-password\"}")
	expect 201 "$r" "register $1"
	for _ in $(seq 20); do
		r=$(api "$API" POST /api/v1/auth/login "{\"username\":\"$1\",\"password\":\"$1-password\"}")
		[[ $(status_of "$r") == 200 ]] && break
		sleep 0.5
	done
	expect 200 "$r" "login $1"
	body_of "$r" | jq -r .access_token
}
SELLER=$(register sally)
BUYER=$(register bob)
r=$(api "$API" POST /api/v1/books '{"title":"The Left Hand of Darkness","author":"Ursula K. Le Guin","description":"A classic","price_cents":1250,"currency":"EUR","stock":3}' -H "authorization: Bearer $SELLER")
expect 201 "$r" "create a book"
BOOK=$(body_of "$r" | jq -r .id)
r=$(api "$API" POST /api/v1/orders "{\"book_id\":$BOOK,\"quantity\":2}" -H "authorization: Bearer $BUYER" -H "idempotency-key: $RUN-order-1")
expect 201 "$r" "place an order"
ORDER=$(body_of "$r" | jq -r .id)
r=$(api "$API" POST "/api/v1/orders/$ORDER/pay" '{"card_number":"4242 4242 4242 4242","expiry":"12/39","cvc":"123"}' -H "authorization: Bearer $BUYER")
expect 200 "$r" "pay the order"
[[ $(body_of "$r" | jq -r .status) == paid ]] || fail "order not paid: $(body_of "$r")"
r=$(api "$API" GET "/api/v1/books/$BOOK" "" -H 'x-panal-consistency: linearizable')
[[ $(body_of "$r" | jq -r .stock) == 1 ]] || fail "stock should be 1 after buying 2 of 3: $r"
log "purchase through :$API: book $BOOK, order $ORDER paid with 4242…, stock 3 -> 1"

# --- kill a manager's container: Swarm restarts it, the node rejoins with its data -------
VICTIM=manager2
VPORT=$(port_of "$VICTIM")
VID=$(jq -r ".[] | select(.name == \"$VICTIM\") | .id" <<<"$NODES")
OLD_CID=$(docker ps -q --filter "label=com.docker.swarm.service.name=${STACK}_$VICTIM")
[[ -n $OLD_CID ]] || fail "no running container for $VICTIM"
log "docker kill $OLD_CID ($VICTIM, node id $VID)"
docker kill "$OLD_CID" >/dev/null
r=$(api "$API" POST /api/v1/books '{"title":"Written while manager2 is down","author":"A","price_cents":100,"currency":"EUR","stock":1}' -H "authorization: Bearer $SELLER")
expect 201 "$r" "write while $VICTIM is down"
DOWN_BOOK=$(body_of "$r" | jq -r .id)
new_task_running() {
	local cid
	cid=$(docker ps -q --filter "label=com.docker.swarm.service.name=${STACK}_$VICTIM")
	[[ -n $cid && $cid != "$OLD_CID" ]] || return 1
	NEW_CID=$cid
}
wait_for 90 "Swarm to start a new task for $VICTIM" new_task_running
wait_for 120 "the restarted $VICTIM to be ready" ready "$VPORT"
r=$(api "$VPORT" GET /health)
[[ $(body_of "$r" | jq -r .node) == "$VICTIM" ]] || fail "port $VPORT is not served by $VICTIM: $r"
r=$(api "$VPORT" GET /api/v1/cluster/nodes "" -H "authorization: Bearer $TOKEN")
expect 200 "$r" "cluster nodes through $VICTIM"
[[ $(body_of "$r" | jq -r ".[] | select(.name == \"$VICTIM\") | \"\(.id) \(.role)\"") == "$VID manager" ]] ||
	fail "$VICTIM should be back as node $VID, a manager: $(body_of "$r")"
[[ $(body_of "$r" | jq length) == 5 ]] || fail "the restart added a member: $(body_of "$r")"
r=$(api "$VPORT" GET "/api/v1/books/$BOOK" "" -H 'x-panal-consistency: stale')
expect 200 "$r" "the book on the restarted $VICTIM (its own replica)"
has_down_book() { [[ $(status_of "$(api "$VPORT" GET "/api/v1/books/$DOWN_BOOK" "" -H 'x-panal-consistency: stale')") == 200 ]]; }
wait_for 30 "the write made while $VICTIM was down to reach it" has_down_book
log "$VICTIM restarted by Swarm (container $OLD_CID -> $NEW_CID), same node id $VID, still a manager, data present and caught up"

# --- rolling update to a new image tag, one node at a time, while writes keep working ----
docker tag "$IMAGE" "$IMAGE2"
IMAGES_BUILT+=("$IMAGE2")
WRITES=0
for s in "${SERVICES[@]}"; do
	# Writes go through a manager that is not being updated.
	other=manager1
	[[ $s == manager1 ]] && other=manager2
	oport=$(port_of "$other")
	log "rolling update: $s -> $IMAGE2 (writing through $other meanwhile)"
	docker service update --quiet --image "$IMAGE2" --no-resolve-image "${STACK}_$s" >/dev/null 2>"/tmp/$RUN-update.err" &
	upd=$!
	while kill -0 "$upd" 2>/dev/null; do
		ok=0
		for _ in $(seq 10); do
			r=$(api "$oport" POST /api/v1/books "{\"title\":\"During the update of $s\",\"author\":\"A\",\"price_cents\":100,\"currency\":\"EUR\",\"stock\":1}" -H "authorization: Bearer $SELLER")
			[[ $(status_of "$r") == 201 ]] && { ok=1; break; }
			sleep 1
		done
		((ok)) || { kill "$upd" 2>/dev/null; fail "writes through $other failed during the update of $s: $r"; }
		WRITES=$((WRITES + 1))
		sleep 1
	done
	wait "$upd" || fail "docker service update $s failed: $(cat "/tmp/$RUN-update.err")"
	upd=""
	rm -f "/tmp/$RUN-update.err"
	[[ $(docker service inspect -f '{{.Spec.TaskTemplate.ContainerSpec.Image}}' "${STACK}_$s") == "$IMAGE2" ]] ||
		fail "$s does not run $IMAGE2"
	wait_for 90 "$s to be ready after its update" ready "$(port_of "$s")"
done
log "rolling update done: ${#SERVICES[@]} nodes on $IMAGE2, $WRITES writes succeeded during it"
wait_for 60 "five members, three managers, all ready after the update" cluster_formed
sums() {
	local all=() s c
	for s in "${SERVICES[@]}"; do
		c=$(api "$(port_of "$s")" GET /api/v1/cluster/checksum "" -H "authorization: Bearer $TOKEN")
		[[ $(status_of "$c") == 200 ]] || return 1
		all+=("$(body_of "$c" | jq -c '{applied_index, checksum}')")
	done
	SUMS=${all[0]}
	[[ $(printf '%s\n' "${all[@]}" | sort -u | wc -l) == 1 ]]
}
wait_for 60 "every node to converge on one state checksum" sums
r=$(api "$API" GET "/api/v1/orders/$ORDER" "" -H "authorization: Bearer $BUYER")
[[ $(body_of "$r" | jq -r .status) == paid ]] || fail "the order is not paid any more after the update: $r"
log "converged after the update: $SUMS; order $ORDER still paid"
