#!/usr/bin/env bash
# kmod-test.sh - build kernel-module/panal_procs.ko against Debian's packaged
# kernel and check it end to end inside a throwaway qemu guest (TCG, no KVM).
#
# Runs as root. Idempotent: packages are installed only when missing, all
# build products live in a temporary directory that is removed on exit, and
# the qemu process is killed on any exit path.
#
# Inside the guest (busybox initramfs, /init below):
#   1. start a fixture program that parks processes in the states D, T, t, Z
#      (plain zombie and zombie thread-group leader) and a multi-threaded one;
#   2. insmod the module, read /proc/panal_procs several times (cat and dd
#      with a tiny block size);
#   3. compare the module against a scan of /proc/[pid]/stat (see
#      "Comparing with the /proc scan" below);
#   4. with --bench only: run `panal bench metrics` (a static musl build from
#      scripts/build-static.sh) with the module loaded;
#   5. rmmod, check /proc/panal_procs is gone, dump dmesg, power off.
# The host then parses the serial log and asserts everything (python3 json).
#
# Usage: kmod-test.sh [--bench]
#   --bench  also time one metrics sample in the guest (scan, module, full
#            sample with 100, 1,000 and 5,000 idle processes) and print the
#            table; the guest then gets 2 GiB and a longer boot timeout.
#
# Comparing with the /proc scan: the scan and the module read must see the
# same set of processes, including the one doing the reading. So a single
# forked subshell does, back to back and without forking anything: read
# /proc/panal_procs (the "read" builtin), scan /proc/[0-9]*/stat with shell
# builtins only, read /proc/panal_procs again. In every snapshot the
# subshell itself is the only extra process and it is "R" in both; PID 1
# waits for it in "S". Kernel threads of an idle guest can still change
# state between the reads (a kworker waking up), so an attempt passes if the
# scan equals either read, and up to $PANAL_KMOD_TRIES attempts are made.
#
# Environment knobs:
#   PANAL_KMOD_BOOT_TIMEOUT  seconds to wait for the guest to finish (300;
#                            3600 with --bench)
#   PANAL_KMOD_TRIES         comparison attempts inside the guest (20)
#   PANAL_KMOD_KVER          kernel version to test (default: the one
#                            linux-image-amd64 depends on)
#   PANAL_KMOD_FIXTURES_DIR  if set, write the captured JSON there
#   PANAL_KMOD_KEEP=1        keep the temporary directory (for debugging)
#   PANAL_KMOD_BENCH_ARGS    extra `panal bench metrics` flags with --bench,
#                            e.g. "--iterations 50 --processes 100,1000"
#   PANAL_KMOD_BENCH_JSON    with --bench, write the benchmark's JSON there
set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
MODULE_SRC=$REPO_ROOT/kernel-module
TRIES=${PANAL_KMOD_TRIES:-20}
KEEP=${PANAL_KMOD_KEEP:-0}
FIXTURES_DIR=${PANAL_KMOD_FIXTURES_DIR:-}
BENCH_ARGS=${PANAL_KMOD_BENCH_ARGS:-}
BENCH_JSON=${PANAL_KMOD_BENCH_JSON:-}

log() { printf 'kmod-test: %s\n' "$*" >&2; }
die() {
	printf 'kmod-test: FAIL: %s\n' "$*" >&2
	exit 1
}

BENCH=0
for arg in "$@"; do
	case $arg in
	--bench) BENCH=1 ;;
	*) die "unknown argument '$arg' (usage: kmod-test.sh [--bench])" ;;
	esac
done
# Pasted into the guest's /init: plain words only.
[[ $BENCH_ARGS =~ ^[A-Za-z0-9,.=\ -]*$ ]] || die "PANAL_KMOD_BENCH_ARGS may hold only letters, digits and , . = - and spaces"
if ((BENCH)); then
	# 5,000 extra processes and the static binary in the initramfs need more than
	# the 512 MiB the module test uses, and TCG runs the benchmark slowly.
	GUEST_MEM=2048M
	BOOT_TIMEOUT=${PANAL_KMOD_BOOT_TIMEOUT:-3600}
else
	GUEST_MEM=512M
	BOOT_TIMEOUT=${PANAL_KMOD_BOOT_TIMEOUT:-300}
fi

[[ $(id -u) -eq 0 ]] || die "must run as root (apt-get, mknod)"
[[ -f $MODULE_SRC/panal_procs.c ]] || die "missing $MODULE_SRC/panal_procs.c"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/panal-kmod.XXXXXX")
QEMU_PID=

cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	if [[ -n $QEMU_PID ]] && kill -0 "$QEMU_PID" 2>/dev/null; then
		kill "$QEMU_PID" 2>/dev/null || true
		for _ in 1 2 3 4 5 6 7 8 9 10; do
			kill -0 "$QEMU_PID" 2>/dev/null || break
			sleep 0.5
		done
		kill -9 "$QEMU_PID" 2>/dev/null || true
		wait "$QEMU_PID" 2>/dev/null || true
	fi
	if [[ $rc -ne 0 ]]; then
		if [[ -s $WORK/serial.log ]]; then
			log "last 60 lines of the guest serial log:"
			tail -n 60 "$WORK/serial.log" | tr -d '\r' >&2 || true
		fi
		if [[ -s $WORK/qemu.log ]]; then
			log "qemu output:"
			cat "$WORK/qemu.log" >&2 || true
		fi
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

# --- 1. packages --------------------------------------------------------------
PKGS=(linux-headers-amd64 linux-image-amd64 qemu-system-x86 busybox-static
	gcc libc6-dev make cpio)
missing=()
for p in "${PKGS[@]}"; do
	dpkg-query -W -f='${db:Status-Abbrev}' "$p" 2>/dev/null | grep -q '^ii' ||
		missing+=("$p")
done
command -v python3 >/dev/null || missing+=(python3)
if ((${#missing[@]})); then
	log "installing: ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -q >"$WORK/apt.log" 2>&1 ||
		{ cat "$WORK/apt.log" >&2; die "apt-get update failed"; }
	apt-get install -y -q --no-install-recommends "${missing[@]}" \
		>>"$WORK/apt.log" 2>&1 ||
		{ tail -n 40 "$WORK/apt.log" >&2; die "apt-get install failed"; }
else
	log "packages already installed"
fi

# --- 2. which kernel ----------------------------------------------------------
# The kernel of Debian's image package, not the host's (uname -r may be a
# different kernel entirely, e.g. in a container).
KVER=${PANAL_KMOD_KVER:-}
if [[ -z $KVER ]]; then
	KVER=$(dpkg-query -W -f='${Depends}' linux-image-amd64 2>/dev/null |
		grep -o 'linux-image-[^ ,]*' | head -n 1 | sed 's/^linux-image-//' || true)
	if [[ -z $KVER || ! -f /boot/vmlinuz-$KVER ]]; then
		# Fall back to the newest kernel that has both an image and modules.
		KVER=
		for d in $(find /lib/modules -mindepth 1 -maxdepth 1 -printf '%f\n' 2>/dev/null |
			sort -rV); do
			if [[ -f /boot/vmlinuz-$d ]]; then
				KVER=$d
				break
			fi
		done
	fi
fi
[[ -n $KVER ]] || die "no kernel found in /lib/modules with a /boot/vmlinuz-*"
VMLINUZ=/boot/vmlinuz-$KVER
[[ -f $VMLINUZ ]] || die "missing $VMLINUZ"
if [[ -d /lib/modules/$KVER/build ]]; then
	KDIR=/lib/modules/$KVER/build
elif [[ -d /usr/src/linux-headers-$KVER ]]; then
	KDIR=/usr/src/linux-headers-$KVER
else
	die "no headers for $KVER (install linux-headers-$KVER)"
fi
log "kernel $KVER, headers $KDIR"

# --- 3. build the module (out of the source tree) ----------------------------
mkdir -p "$WORK/build"
cp "$MODULE_SRC/panal_procs.c" "$MODULE_SRC/Makefile" "$WORK/build/"
make -C "$WORK/build" KDIR="$KDIR" >"$WORK/build.log" 2>&1 ||
	{ cat "$WORK/build.log" >&2; die "module build failed"; }
if grep -E '(warning|error):' "$WORK/build.log" >&2; then
	die "module build produced warnings"
fi
KO=$WORK/build/panal_procs.ko
vermagic=$(modinfo -F vermagic "$KO")
[[ $vermagic == "$KVER "* ]] || die "vermagic '$vermagic' does not match $KVER"
log "built panal_procs.ko ($vermagic)"

# --- 4. guest fixture program -------------------------------------------------
# Parks processes in states that an idle busybox guest would otherwise never
# show, so every bucket except "dead" (transient by nature) is exercised.
cat >"$WORK/fixture.c" <<'EOF'
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ptrace.h>
#include <time.h>
#include <unistd.h>

static char vfork_stack[64 * 1024] __attribute__((aligned(16)));

static void *sleeper(void *arg)
{
	(void)arg;
	for (;;)
		pause();
	return NULL;
}

static int vfork_child(void *arg)
{
	(void)arg;
	for (;;)
		pause();
	return 0;
}

static void start_threads(int n)
{
	pthread_t th;

	while (n--)
		if (pthread_create(&th, NULL, sleeper, NULL))
			_exit(2);
}

static pid_t spawn(char role)
{
	pid_t pid = fork();

	if (pid < 0) {
		perror("fork");
		exit(1);
	}
	if (pid)
		return pid;
	switch (role) {
	case 'Z':	/* plain zombie: exit, never reaped */
		_exit(0);
	case 'T':	/* job-control stop */
		raise(SIGSTOP);
		break;
	case 't':	/* ptrace stop, the fixture parent is the tracer */
		ptrace(PTRACE_TRACEME, 0, NULL, NULL);
		raise(SIGSTOP);
		break;
	case 'M':	/* multi-threaded, sleeping */
		start_threads(2);
		break;
	case 'L':	/* zombie group leader: leader exits, threads live */
		start_threads(2);
		pthread_exit(NULL);
	case 'D':	/* vfork parent waits killable (uninterruptible): D */
		clone(vfork_child, vfork_stack + sizeof(vfork_stack),
		      CLONE_VFORK | SIGCHLD, NULL);
		break;
	}
	for (;;)
		pause();
}

static char state_of(pid_t pid)
{
	char path[64], buf[512], *p;
	FILE *f;
	size_t n;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	f = fopen(path, "r");
	if (!f)
		return '?';
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = 0;
	p = strrchr(buf, ')');
	return p && p[1] == ' ' ? p[2] : '?';
}

int main(void)
{
	static const char roles[] = "ZTtMLD";
	static const char want[] = "ZTtSZD";
	pid_t pids[sizeof(roles)];
	struct timespec ts = { 0, 50 * 1000 * 1000 };
	int i, tries;
	FILE *f;

	for (i = 0; roles[i]; i++)
		pids[i] = spawn(roles[i]);
	for (i = 0; roles[i]; i++) {
		for (tries = 0; state_of(pids[i]) != want[i]; tries++) {
			if (tries > 600) {
				fprintf(stderr, "fixture: pid %d stuck in %c, want %c\n",
					(int)pids[i], state_of(pids[i]), want[i]);
				return 1;
			}
			nanosleep(&ts, NULL);
		}
	}
	f = fopen("/tmp/fixture.ready", "w");
	if (!f)
		return 1;
	for (i = 0; roles[i]; i++)
		fprintf(f, "%c=%d ", want[i], (int)pids[i]);
	fclose(f);
	for (;;)
		pause();
}
EOF

# --- 5. initramfs -------------------------------------------------------------
ROOT=$WORK/initramfs
mkdir -p "$ROOT"/{bin,dev,proc,sys,tmp}
# The initramfs has no libc: busybox must be the static build.
if ldd /bin/busybox >/dev/null 2>&1; then
	die "/bin/busybox is dynamically linked (install busybox-static)"
fi
cp /bin/busybox "$ROOT/bin/busybox"
cp "$KO" "$ROOT/panal_procs.ko"
if ((BENCH)); then
	log "building a static panal for the guest (scripts/build-static.sh)"
	"$REPO_ROOT/scripts/build-static.sh" >"$WORK/static.out" 2>"$WORK/static.log" ||
		{ tail -n 40 "$WORK/static.log" >&2; die "static build failed"; }
	cp "$(tail -n 1 "$WORK/static.out")" "$ROOT/bin/panal"
fi
gcc -static -O2 -pthread -Wall -Werror -o "$ROOT/bin/panal-fixture" \
	"$WORK/fixture.c" >"$WORK/fixture.log" 2>&1 ||
	{ cat "$WORK/fixture.log" >&2; die "fixture build failed"; }
# The kernel opens /dev/console before running /init; /init re-opens it from
# devtmpfs anyway in case mknod is not permitted here.
mknod -m 600 "$ROOT/dev/console" c 5 1 2>/dev/null || true

cat >"$ROOT/init" <<EOF
#!/bin/busybox sh
TRIES=$TRIES
BENCH=$BENCH
BENCH_ARGS='$BENCH_ARGS'
EOF
cat >>"$ROOT/init" <<'EOF'
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
exec </dev/console >/dev/console 2>&1
# Keep printk off the console while we print results (no interleaving);
# the whole kernel log is dumped with dmesg at the end.
dmesg -n 1

say() { echo "PANAL:$*"; }

# Scan /proc/[pid]/stat with builtins only (no fork, see kmod-test.sh).
# The state is the first field after the last ") " (comm may contain
# spaces and parentheses); num_threads is field 20, i.e. the 18th after it.
scan() {
	t=0 r=0 s=0 d=0 st=0 tr=0 z=0 x=0 i=0 th=0
	for f in /proc/[0-9]*/stat; do
		line=
		read -r line 2>/dev/null <"$f" || continue
		[ -n "$line" ] || continue
		# Split on purpose: after ") " come only numbers and one letter.
		# shellcheck disable=SC2086
		set -- ${line##*") "}
		t=$((t + 1))
		th=$((th + ${18}))
		case $1 in
		R) r=$((r + 1)) ;;
		S) s=$((s + 1)) ;;
		D) d=$((d + 1)) ;;
		T) st=$((st + 1)) ;;
		t) tr=$((tr + 1)) ;;
		Z) z=$((z + 1)) ;;
		X) x=$((x + 1)) ;;
		I) i=$((i + 1)) ;;
		esac
	done
	SCAN="{\"total\":$t,\"running\":$r,\"sleeping\":$s,\"disk_sleep\":$d,\"stopped\":$st,\"traced\":$tr,\"zombie\":$z,\"dead\":$x,\"idle\":$i,\"threads\":$th"
}

say "BOOTED kernel=$(uname -r) cpus=$(nproc)"

panal-fixture &
n=0
while [ ! -f /tmp/fixture.ready ] && [ $n -lt 300 ]; do
	usleep 100000
	n=$((n + 1))
done
say "FIXTURE $(cat /tmp/fixture.ready 2>/dev/null)"

insmod /panal_procs.ko
say "INSMOD rc=$?"
if grep -q '^panal_procs ' /proc/modules; then say "LOADED yes"; else say "LOADED no"; fi
say "MODE $(ls -l /proc/panal_procs 2>&1)"
for k in 1 2 3; do
	say "READ $(cat /proc/panal_procs)"
done
say "DDREAD $(dd if=/proc/panal_procs bs=3 2>/dev/null)"

# One subshell = one reader process for both the module and the scan.
(
	k=0
	while [ $k -lt $TRIES ]; do
		k=$((k + 1))
		read -r M1 </proc/panal_procs
		scan
		read -r M2 </proc/panal_procs
		say "TRY $k"
		say "MOD1 $M1"
		say "SCAN $SCAN}"
		say "MOD2 $M2"
		if [ "${M1%%,\"kernel_version\"*}" = "$SCAN" ] ||
		   [ "${M2%%,\"kernel_version\"*}" = "$SCAN" ]; then
			say "MATCH $k"
			exit 0
		fi
		usleep 300000
	done
	say "NOMATCH"
)

if [ "$BENCH" = 1 ]; then
	# threads-max defaults to a share of guest memory; 5,000 idle processes must fit.
	echo 100000 >/proc/sys/kernel/threads-max
	ulimit -u unlimited
	say "BENCH_BEGIN processes=$(ls -d /proc/[0-9]* | wc -l) mem_kb=$(grep MemTotal /proc/meminfo | tr -s ' ' | cut -d' ' -f2)"
	# Word splitting of BENCH_ARGS is intended (plain words, checked on the host).
	# shellcheck disable=SC2086
	panal bench metrics --json /tmp/bench.json $BENCH_ARGS 2>/tmp/bench.err
	rc=$?
	say "BENCH rc=$rc"
	[ $rc -eq 0 ] || cat /tmp/bench.err
	say "BENCH_JSON $(tr -d '\n' </tmp/bench.json 2>/dev/null)"
	say "BENCH_END"
fi

rmmod panal_procs
say "RMMOD rc=$?"
if [ -e /proc/panal_procs ]; then say "GONE no"; else say "GONE yes"; fi
if grep -q '^panal_procs ' /proc/modules; then say "UNLOADED no"; else say "UNLOADED yes"; fi
say "DMESG_BEGIN"
dmesg
say "DMESG_END"
say "DONE"
poweroff -f
sleep 10
reboot -f
EOF
chmod 755 "$ROOT/init"
(cd "$ROOT" && find . -print0 | cpio --null -o -H newc --quiet) >"$WORK/initramfs.cpio"

# --- 6. boot ------------------------------------------------------------------
SERIAL=$WORK/serial.log
: >"$SERIAL"
log "booting $KVER under qemu (TCG), timeout ${BOOT_TIMEOUT}s"
start=$SECONDS
qemu-system-x86_64 \
	-accel tcg -m "$GUEST_MEM" -smp 2 \
	-nodefaults -display none -monitor none -nic none \
	-serial "file:$SERIAL" -no-reboot \
	-kernel "$VMLINUZ" -initrd "$WORK/initramfs.cpio" \
	-append "console=ttyS0 rdinit=/init panic=-1 tsc=unstable" \
	>"$WORK/qemu.log" 2>&1 </dev/null &
QEMU_PID=$!

while ! grep -q 'PANAL:DONE' "$SERIAL"; do
	kill -0 "$QEMU_PID" 2>/dev/null || die "qemu exited before the guest finished"
	((SECONDS - start < BOOT_TIMEOUT)) || die "guest did not finish within ${BOOT_TIMEOUT}s"
	sleep 1
done
# The guest powers off right after DONE; give it a moment, then make sure.
for _ in $(seq 1 30); do
	kill -0 "$QEMU_PID" 2>/dev/null || break
	sleep 1
done
if kill -0 "$QEMU_PID" 2>/dev/null; then
	log "guest did not power off, killing qemu"
	kill "$QEMU_PID" 2>/dev/null || true
fi
wait "$QEMU_PID" 2>/dev/null || true
QEMU_PID=
log "guest finished in $((SECONDS - start))s"

# --- 7. verify ----------------------------------------------------------------
python3 - "$SERIAL" "$KVER" "$FIXTURES_DIR" "$BENCH" "$BENCH_JSON" <<'EOF'
import json
import os
import re
import sys

serial, kver, fixtures_dir = sys.argv[1], sys.argv[2], sys.argv[3]
bench, bench_json = sys.argv[4] == "1", sys.argv[5]
with open(serial, encoding="utf-8", errors="replace") as f:
    text = f.read().replace("\r", "")
lines = text.split("\n")

COUNTS = ["total", "running", "sleeping", "disk_sleep", "stopped", "traced",
          "zombie", "dead", "idle", "threads"]
FIELDS = COUNTS + ["kernel_version", "collected_ns"]
errors = []


def fail(msg):
    errors.append(msg)


def tagged(tag):
    p = "PANAL:" + tag + " "
    return [l[len(p):] for l in lines if l.startswith(p)]


def one(tag):
    v = tagged(tag)
    if len(v) != 1:
        fail("expected one PANAL:%s line, got %d" % (tag, len(v)))
        return ""
    return v[0]


def module_json(s, what):
    try:
        d = json.loads(s)
    except ValueError as e:
        fail("%s: invalid JSON (%s): %r" % (what, e, s))
        return None
    if not isinstance(d, dict) or list(d) != FIELDS:
        fail("%s: wrong fields: %r" % (what, s))
        return None
    for k in COUNTS + ["collected_ns"]:
        if type(d[k]) is not int or d[k] < 0:
            fail("%s: %s is not a non-negative integer" % (what, k))
    if d["kernel_version"] != kver:
        fail("%s: kernel_version %r != %r" % (what, d["kernel_version"], kver))
    states = sum(d[k] for k in COUNTS[1:-1])
    if states > d["total"] or d["threads"] < d["total"] or d["total"] == 0:
        fail("%s: inconsistent counts: %r" % (what, s))
    return d


booted = one("BOOTED")
if not booted.startswith("kernel=%s " % kver):
    fail("guest kernel is not %s: %r" % (kver, booted))
fixture = one("FIXTURE")
if not re.fullmatch(r"(\S=\d+ ){6}", fixture):
    fail("fixture processes not ready: %r" % fixture)
if one("INSMOD") != "rc=0" or one("LOADED") != "yes":
    fail("module did not load")
mode = one("MODE")
if not mode.startswith("-r--r--r--"):
    fail("/proc/panal_procs mode is not 0444: %r" % mode)

reads = [module_json(s, "read %d" % (i + 1)) for i, s in enumerate(tagged("READ"))]
if len(reads) < 3:
    fail("expected 3 reads, got %d" % len(reads))
stamps = [r["collected_ns"] for r in reads if r]
if stamps != sorted(stamps):
    fail("collected_ns went backwards: %r" % stamps)
module_json(one("DDREAD"), "dd bs=3 read")

mod1, scans, mod2 = tagged("MOD1"), tagged("SCAN"), tagged("MOD2")
if not (len(mod1) == len(scans) == len(mod2) >= 1):
    fail("comparison output incomplete")
match = None
attempt = 0
for attempt, (a, s, b) in enumerate(zip(mod1, scans, mod2), 1):
    da, db = module_json(a, "MOD1 #%d" % attempt), module_json(b, "MOD2 #%d" % attempt)
    try:
        ds = json.loads(s)
    except ValueError:
        fail("SCAN #%d: invalid JSON: %r" % (attempt, s))
        continue
    for d in (da, db):
        if d and all(d[k] == ds.get(k) for k in COUNTS):
            match = (attempt, d, ds)
            break
    if match:
        break
if not match:
    fail("module counts never matched the /proc scan in %d attempts" % attempt)
elif tagged("MATCH") != [str(match[0])]:
    fail("guest and host disagree on the matching attempt")
else:
    _, d, _ = match
    # The fixture adds D, T, t, two Z (one a zombie group leader with two
    # live threads) and a process with three threads.
    want = {"running": 1, "disk_sleep": 1, "stopped": 1, "traced": 1,
            "zombie": 2, "idle": 1}
    for k, v in want.items():
        if d[k] < v:
            fail("expected %s >= %d with the fixture, got %d" % (k, v, d[k]))
    if d["threads"] < d["total"] + 4:
        fail("expected at least 4 extra threads, got %d" % (d["threads"] - d["total"]))

if one("RMMOD") != "rc=0" or one("UNLOADED") != "yes":
    fail("module did not unload")
if one("GONE") != "yes":
    fail("/proc/panal_procs still exists after rmmod")
if "PANAL:DMESG_END" not in lines:
    fail("no dmesg dump")
if "PANAL:DONE" not in lines:
    fail("guest did not finish")
for bad in ("Oops", "BUG:", "WARNING:", "Call Trace"):
    for l in lines:
        if bad in l:
            fail("kernel log contains %r: %s" % (bad, l.strip()))
            break

bench_text = []
if bench:
    # The benchmark's figures are reported, not judged: it must run to the end,
    # with the module loaded for every row.
    if one("BENCH") != "rc=0":
        fail("panal bench metrics failed in the guest")
    try:
        results = json.loads(one("BENCH_JSON"))
        rows = results["rows"]
    except (ValueError, KeyError, TypeError) as e:
        fail("panal bench metrics wrote no valid JSON: %s" % e)
        rows = []
    if not rows:
        fail("panal bench metrics reported no rows")
    for r in rows:
        if r.get("module") is None or r.get("full_sample_source") != "module":
            fail("bench row without the module: %r" % r)
    begin = next((i for i, l in enumerate(lines) if l.startswith("PANAL:BENCH_BEGIN")), None)
    end = next((i for i, l in enumerate(lines) if l.startswith("PANAL:BENCH rc=")), None)
    if begin is None or end is None:
        fail("no benchmark output")
    else:
        bench_text = [lines[begin][len("PANAL:"):]] + [l for l in lines[begin + 1:end] if l.strip()]
    if not errors and bench_json:
        with open(bench_json, "w") as f:
            json.dump(results, f, indent=2)

if errors:
    for e in errors:
        print("kmod-test: FAIL: " + e, file=sys.stderr)
    sys.exit(1)

attempt, d, ds = match
if fixtures_dir:
    os.makedirs(fixtures_dir, exist_ok=True)
    with open(os.path.join(fixtures_dir, "panal_procs.json"), "w") as f:
        f.write(json.dumps(d, separators=(",", ":")) + "\n")
    with open(os.path.join(fixtures_dir, "proc_scan.json"), "w") as f:
        f.write(json.dumps(ds, separators=(",", ":")) + "\n")
print("kmod-test: kernel %s: module loaded, %d reads valid JSON, mode 0444"
      % (kver, len(reads) + 1))
print("kmod-test: module == /proc scan on attempt %d: %s"
      % (attempt, " ".join("%s=%d" % (k, d[k]) for k in COUNTS)))
print("kmod-test: rmmod ok, /proc/panal_procs gone, kernel log clean")
if bench_text:
    print("kmod-test: panal bench metrics in the guest (kernel %s, TCG):" % kver)
    for l in bench_text:
        print(l)
EOF
echo "kmod-test: PASS"
