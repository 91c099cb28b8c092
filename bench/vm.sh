#!/usr/bin/env bash
# bench/vm.sh — a whole VM handoff against QEMU's own live migration, in the same run, over the
# shaped link of scripts/wan.sh (source in namespace A, destination in B). The guest is the
# realistic one (Debian 12, sqlite web service + load generator; 1 GiB RAM, 4 GiB disk) resumed
# from a base both sides hold; after VM_BENCH_WARM seconds of its workload it is moved by:
#   handoff     handoff-vm migrate --postcopy never: live rounds of the chunks changed since the
#               base (--mode VM_BENCH_MODE), pause, last round, resume on B after everything arrived
#               (--verify VM_BENCH_VERIFY: both sides hash the RAM image first, part of the downtime)
#   handoff-pc  the same with --postcopy always: after the live rounds, pause, device state and the
#               list of still-dirty chunks, B resumes at once and the rest streams behind it (chunks
#               the VM touches first are fetched on demand); skipped while handoff-vm lacks --postcopy
#   handoff-pc0 post-copy with no live round (--max-rounds 1): pause at once, B resumes at once, and
#               everything changed since the base streams behind it (for a guest that dirties
#               faster than the link, whose live rounds only send what it rewrites)
#   handoff-auto handoff-vm migrate's defaults (--postcopy auto): live rounds while they converge,
#               a live round abandoned once the guest rewrote half of what it sends, then post-copy
#               (or pre-copy's last round when the rounds converged)
#   handoff-nv  like handoff with --verify none (not in the default list; shows the cost of --verify)
#   qemu        QEMU live migration of RAM over TCP + drive-mirror sync=top of a qcow2 overlay whose
#               backing file is the base disk (on both sides), QEMU's usual storage migration
#   qemu-xbzrle the same with the xbzrle capability (64 MiB cache)
#   qemu-mfzstd the same with multifd (2 channels) + zstd compression
#   qemu-ac     the same with auto-converge (the vCPUs throttled until the dirty rate fits the
#               link: what an expert adds for a guest that dirties faster; not in the default list)
# QEMU does not know the destination holds the base RAM, so it sends all of RAM; that is the
# point of the comparison. Per cell: total time (start of the handoff/mirror to the VM running on
# B; for handoff-pc to the last chunk applied on B), downtime (handoff-vm's report; for QEMU its
# own "downtime" plus block-job completion and cont on B, measured on this clock), bytes on the
# wire (tc counters of A's egress) and the load average (1 min) at the start and end of the cell.
# A QEMU cell that has not finished within VM_BENCH_LIMIT seconds is cancelled and reported as
# "did not finish in N s" (pre-copy need not converge when the guest dirties faster than the
# link); handoff cells get VM_BENCH_HANDOFF_LIMIT seconds.
#
# After each handoff the source is kept paused (--keep-source) and the state it handed over is
# exported once more since the base, without history, in the same mode: that stream's size is
# what the truly changed bytes need on the wire, "true MiB"; at the link rate it gives "true s",
# the least time any transfer of that state needs, and the table shows handoff's total as a
# multiple of it (VM_BENCH_TRUE=0 skips this).
#
# At the end, one table per workload with the ratios: QEMU's best total / handoff's total (a lower
# bound ">" when QEMU did not finish), handoff-pc's downtime / handoff's downtime, and handoff's
# total / true s.
#
#   VM_BENCH_LOADS="light heavy"  VM_BENCH_RATES="10 5 25"
#   VM_BENCH_METHODS="handoff handoff-pc handoff-pc0 handoff-auto qemu qemu-xbzrle qemu-mfzstd"
#   VM_BENCH_RAM=1024M  VM_BENCH_WARM=20  VM_BENCH_LIMIT=300  VM_BENCH_HANDOFF_LIMIT=1800
#   VM_BENCH_MODE=delta-zstd3  VM_BENCH_VERIFY=memory  VM_BENCH_TRUE=1
#   VM_BENCH_QEMU_DOWNTIME=MS (QEMU's downtime-limit; default QEMU's own, 300 ms)
#   VM_BENCH_RESULTS=FILE (also append the cells as tab-separated lines to FILE)
#   VM_BENCH_LOGS=DIR (keep each cell's logs, the guests' consoles among them, in DIR/LOAD-RATE-METHOD)
#   VM_BENCH_CHECK_LATE=600 (seconds more to watch the guest's console for its self-check after
#   120 s without an answer; a late one shows as check-ok+late=Ns)
#   VM_BENCH_MIGRATE_ARGS="--max-rounds 2" (more handoff-vm migrate options for the handoff cells;
#   on a workload whose rounds do not converge, fewer live rounds shorten the handoff)
# The whole matrix takes hours under TCG (each QEMU cell that does not converge costs the full
# limit); narrow it with the variables above. Bases are cached in
# ${HANDOFF_CACHE:-~/.cache/handoff}/vm-bench/base-LOAD-RAM and rebuilt when the guest was rebuilt
# or their RAM differs. Needs root, qemu, the realistic guest (guest/build-realistic.sh, ~1 min
# with its .debs cached, a few the first time). HANDOFF_ACCEL defaults to tcg here.
set -u
: "${HANDOFF_BUILD:=$(cd "$(dirname "$0")/.." && pwd)/build}"
: "${HANDOFF_SRC:=$(cd "$(dirname "$0")/.." && pwd)}"
export PATH="$HANDOFF_BUILD/bin:$PATH:/usr/sbin:/sbin"
export HANDOFF_ACCEL=${HANDOFF_ACCEL:-tcg}
WAN=$HANDOFF_SRC/scripts/wan.sh
VMCTL=$HANDOFF_BUILD/tests/vmctl
LOADS=${VM_BENCH_LOADS:-"light heavy"}
RATES=${VM_BENCH_RATES:-"10 5 25"}
METHODS=${VM_BENCH_METHODS:-"handoff handoff-pc handoff-pc0 handoff-auto qemu qemu-xbzrle qemu-mfzstd"}
RAM=${VM_BENCH_RAM:-1024M}
WARM=${VM_BENCH_WARM:-20}
LIMIT=${VM_BENCH_LIMIT:-300}
HLIMIT=${VM_BENCH_HANDOFF_LIMIT:-1800}
MODE=${VM_BENCH_MODE:-delta-zstd3}
VERIFY=${VM_BENCH_VERIFY:-memory}
TRUEB=${VM_BENCH_TRUE:-1}
read -r -a MIGRATE_ARGS <<<"${VM_BENCH_MIGRATE_ARGS:-}"
QDOWN=${VM_BENCH_QEMU_DOWNTIME:-}     # QEMU's downtime-limit in ms (empty: QEMU's default, 300)
CACHE=${HANDOFF_CACHE:-$HOME/.cache/handoff}/vm-bench
NAME=hv$$
say() { echo "bench/vm: $*" >&2; }

case $RAM in
*[Gg]) RAM_MB=$(( ${RAM%[Gg]} * 1024 )) ;;
*[Mm]) RAM_MB=${RAM%[Mm]} ;;
*) RAM_MB=$RAM ;;
esac
[[ "$RAM_MB" =~ ^[0-9]+$ ]] || { say "invalid VM_BENCH_RAM '$RAM' (e.g. 1024M, 1G)"; exit 2; }
for v in WARM LIMIT HLIMIT; do
	[[ "${!v}" =~ ^[0-9]+$ ]] || { say "invalid $v '${!v}' (whole seconds)"; exit 2; }
done

[ "$(id -u)" = 0 ] || { say "needs root (network namespaces, FUSE): skipped"; exit 0; }
command -v qemu-system-x86_64 >/dev/null || { say "qemu-system-x86_64 missing: skipped"; exit 0; }
command -v qemu-img >/dev/null || { say "qemu-img missing: skipped"; exit 0; }
[ -x "$VMCTL" ] || { say "$VMCTL not built: skipped"; exit 0; }
env=$("$HANDOFF_SRC/guest/build-realistic.sh") || { say "cannot build the realistic guest: skipped"; exit 0; }

# handoff-vm validates --postcopy before anything else when it knows the option
PC_OK=0
handoff-vm migrate --postcopy bogus 2>&1 | grep -q 'invalid --postcopy' && PC_OK=1

W=$(mktemp -d /tmp/handoff-bench-vm.XXXXXX)
RES=$W/results.tsv
: >"$RES"
cleanup() {
	for r in "$W"/*/*.run; do [ -d "$r" ] && { handoff-vm -q stop --run-dir "$r" 2>/dev/null || "$VMCTL" kill "$r" 2>/dev/null; }; done
	"$WAN" down "$NAME" 2>/dev/null
	for m in "$W"/*/*.mnt; do fusermount3 -uz "$m" 2>/dev/null; done
	rm -rf "$W"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
ADDR_B=10.213.0.2

# base LOAD: the cached base of the realistic guest under that workload (RAM_MB MiB of RAM)
base_for() {
	local b=$CACHE/base-$1-${RAM_MB}M ram=
	[ -s "$b/base.env" ] && ram=$(. "$b/base.env" && echo "${BASE_RAM_MB:-}")
	if [ "$ram" != "$RAM_MB" ] || [ "$b/base.env" -ot "$(dirname "$env")/stamp" ]; then
		mkdir -p "$CACHE"
		say "creating the base for the $1 workload ($RAM_MB MiB RAM; about a minute under TCG)"
		handoff-vm -q base create --force --guest "$env" --ram "${RAM_MB}M" --settle 20 \
			--append "handoff.load=$1" "$b" >&2 || return 1
	fi
	echo "$b"
}

# tx bytes of A's egress qdisc
tx_bytes() { ip netns exec "$NAME-a" tc -s qdisc show dev "$NAME-va" | awk '/Sent/ { print $2; exit }'; }
now() { date +%s.%N; }

# guest_check RUN_DIR: ask the resumed guest for its full self-check (on its command port) and
# print the cell's note for it: check-ok, or check=ANSWER (its first 18 characters, "none" without
# one). A guest that has not answered within 120 s (a heavy workload under TCG, pages still
# arriving) may answer later: its checker prints every result on its console too, so the console
# is watched for a full check after the request for up to VM_BENCH_CHECK_LATE more seconds, and
# "+late=Ns" follows such an answer. Without one the console's last lines go to stderr (the raw
# output).
# stuck_report RUN_DIR: why a destination guest might not answer. Each thread of its QEMU and of
# every handoff process: state, wait channel, kernel stack; the guest's instruction pointers twice,
# 2 s apart (they move if the guest runs); the CPU time QEMU used in those 2 s.
stuck_report() {
	local rd=$1 qpid p t
	qpid=$(cat "$rd/qemu.pid" 2>/dev/null)
	for p in $qpid $(pgrep -f '^handoff-|/handoff-'); do
		[ -d "/proc/$p" ] || continue
		echo "bench/vm:   stuck: process $p $(tr '\0' ' ' <"/proc/$p/cmdline" | cut -c1-160)"
		for t in /proc/"$p"/task/*; do
			echo "bench/vm:   stuck:   thread ${t##*/} $(cat "$t/comm") state $(awk '{print $3}' "$t/stat") wchan $(cat "$t/wchan" 2>/dev/null)"
			sed 's/^/bench\/vm:   stuck:     /' "$t/stack" 2>/dev/null | head -n 12
		done
	done
	[ -n "$qpid" ] || return 0
	local c0 c1
	c0=$(awk '{print $14 + $15}' "/proc/$qpid/stat" 2>/dev/null)
	"$VMCTL" qmp "$rd" human-monitor-command '{"command-line":"info registers"}' 2>&1 | grep -o 'RIP=[0-9a-f]*' |
		sed 's/^/bench\/vm:   stuck: guest (1st) /'
	sleep 2
	"$VMCTL" qmp "$rd" human-monitor-command '{"command-line":"info registers"}' 2>&1 | grep -o 'RIP=[0-9a-f]*' |
		sed 's/^/bench\/vm:   stuck: guest (2 s later) /'
	c1=$(awk '{print $14 + $15}' "/proc/$qpid/stat" 2>/dev/null)
	echo "bench/vm:   stuck: QEMU used $(( ${c1:-0} - ${c0:-0} )) clock ticks of CPU in those 2 s"
}

guest_check() {
	local rd=$1 c n0 t0 late="" lim=$((120 + ${VM_BENCH_CHECK_LATE:-600}))
	n0=$(grep -c 'HANDOFF-CHECK' "$rd/serial.log" 2>/dev/null)
	t0=$(date +%s)
	c=$("$VMCTL" send "$rd" check 120000 2>/dev/null)
	while [ -z "$c" ] && [ $(( $(date +%s) - t0 )) -lt $lim ]; do
		c=$(grep 'HANDOFF-CHECK' "$rd/serial.log" 2>/dev/null | tail -n +$((n0 + 1)) | grep -m1 ' full ' |
			sed 's/.*\(HANDOFF-CHECK\)/\1/')
		[ -n "$c" ] && late="+late=$(( $(date +%s) - t0 ))s" || sleep 2
	done
	if [ -z "$c" ]; then
		tail -n 8 "$rd/serial.log" 2>/dev/null | sed 's/^/bench\/vm:   dst console (no check answer): /' >&2
		# what state QEMU is in, and how busy (a guest that runs burns CPU under TCG)
		echo "bench/vm:   dst (no check answer): serial.log $(stat -c %s "$rd/serial.log" 2>/dev/null || echo missing) bytes;" \
			"query-status $("$VMCTL" qmp "$rd" query-status 2>&1 | tr -d '\n' | cut -c1-120);" \
			"qemu $(ps -o stat=,time= -p "$(cat "$rd"/*.pid 2>/dev/null | head -n1)" 2>/dev/null | tr -s ' ')" >&2
		stuck_report "$rd" >&2
	fi
	case $c in
	"HANDOFF-CHECK ok"*) echo "check-ok$late" ;;
	*) c=$(cut -c1-18 <<<"${c:-none}"); echo "check=${c// /_}$late" ;;
	esac
}
load1() { cut -d' ' -f1 /proc/loadavg; }
qmp() { "$VMCTL" qmp "$@"; }
jget() { python3 -c 'import json,sys
try:
    d = json.load(sys.stdin)
except ValueError:   # no answer from QMP (e.g. the machine is overloaded): nothing
    d = {}
for k in sys.argv[1].split("."):
    d = d.get(k, {}) if isinstance(d, dict) else {}
print(d if d != {} else "")' "$1"; }

# Each run_* prints one line: STATUS TOTAL_S DOWNTIME_S WIRE_MIB TRUE_MIB NOTES...
# (STATUS ok | dnf | failed; "-" where a figure does not exist)

# ---- handoff ----------------------------------------------------------------------------------
# run_handoff BASE VERIFY POSTCOPY(never|always|-) DIR [MORE MIGRATE OPTIONS...]
run_handoff() {
	local base=$1 verify=$2 pc=$3 d=$4 tx0 rc pcopt=()
	shift 4
	[ "$pc" != - ] && pcopt=(--postcopy "$pc")
	mkdir -p "$d"
	handoff-vm -q start --base "$base" --overlay "$d/src.ovl" --mount "$d/src.mnt" --run-dir "$d/s.run" ||
		{ echo "failed - - - - start"; return 0; }
	sleep "$WARM"
	"$WAN" exec "$NAME" b handoff-vm receive --base "$base" --overlay "$d/dst.ovl" --mount "$d/dst.mnt" \
		--run-dir "$d/d.run" --listen "$ADDR_B:7300" --port-file "$d/port" --timeout "$HLIMIT" 2>"$d/recv.log" &
	local rp=$!
	# the clock starts once the receiver listens (its first mount hashes the base)
	for _ in $(seq 600); do [ -s "$d/port" ] && break; sleep 0.1; done
	tx0=$(tx_bytes)
	timeout "$HLIMIT" "$WAN" exec "$NAME" a handoff-vm migrate --run-dir "$d/s.run" --to "$ADDR_B:7300" \
		--mode "$MODE" --verify "$verify" "${pcopt[@]}" "${MIGRATE_ARGS[@]}" "$@" --keep-source --report "$d/report.json" 2>"$d/migrate.log"
	rc=$?
	wait "$rp"
	local sent=$(( $(tx_bytes) - tx0 ))
	sed 's/^/bench\/vm:   /' "$d/migrate.log" >&2
	if [ $rc != 0 ]; then
		# keep the destination's side of a failed cell in the raw output (the cell's directory goes)
		sed 's/^/bench\/vm:   recv: /' "$d/recv.log" >&2
		[ -f "$d/d.run/serial.log" ] && tail -n 5 "$d/d.run/serial.log" | sed 's/^/bench\/vm:   dst console: /' >&2
		if [ $rc = 124 ]; then
			echo "dnf >$HLIMIT - $((sent / 1048576)) - did-not-finish-in-${HLIMIT}s"
		else
			echo "failed - - $((sent / 1048576)) - exit-$rc:$(tail -n1 "$d/migrate.log" | tr ' ' '_' | cut -c1-120)"
		fi
		return 0
	fi
	local check tb=-
	check=$(guest_check "$d/d.run")
	handoff-vm -q stop --run-dir "$d/d.run"
	if [ "$TRUEB" = 1 ]; then
		# the paused source's state since the base, as one stream without history: the truly changed bytes
		tb=$(set -o pipefail; handoff-export -q --mode "$MODE" -T 2 --no-history -o - "$d/src.mnt" | wc -c) || tb=-
	fi
	handoff-vm -q stop --run-dir "$d/s.run"
	python3 - "$d/report.json" "$sent" "$check" "$tb" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
p = r["downtime_parts"]
tb = "-" if sys.argv[4] in ("-", "") else "%.1f" % (int(sys.argv[4]) / 2**20)
changed = sum(x["changed_bytes"] for x in r["rounds"]) / 2**20
last = r["rounds"][-1]
notes = "rounds=%d changed=%.0fMiB last-round=%.0fMiB/%.0fMiB-wire save+final+resume=%.2f+%.2f+%.2fs" % (
    r["rounds_total"], changed, last["changed_bytes"] / 2**20, last["wire_bytes"] / 2**20,
    p["save_device_state"], p["final_round"], p["device_state_verify_resume"])
if r.get("postcopy"):
    notes += " postcopy=%.1fs/%dchunks/%ddemand/held=%.1fs" % (r["postcopy_seconds"], r["postcopy_chunks"],
        r["postcopy_demand_requests"], r.get("postcopy_stream_held_seconds", 0))
a = r.get("live_round_abandoned")
if a:
    notes += " abandoned=%.1fs(%d/%d)" % (a["after_seconds"], a["rewritten_chunks"], a["round_chunks"])
notes += " " + sys.argv[3]
print("ok %.1f %.3f %.1f %s %s" % (r["total_seconds"], r["downtime_seconds"], int(sys.argv[2]) / 2**20, tb, notes))
PY
}

# ---- QEMU live migration + drive-mirror ----------------------------------------------------------
run_qemu() {
	local base=$1 d=$2 variant=$3 tx0 t0 t1 st
	mkdir -p "$d"
	# shellcheck disable=SC1091
	. "$base/base.env"
	local common=(--accel tcg --kernel "$base/vmlinuz" --initrd "$base/initrd" --append "$BASE_CMDLINE"
		--mem-mb "$BASE_RAM_MB" --cmd-port --disk-format qcow2 --incoming)
	cp --sparse=always "$base/memory.img" "$d/src.mem"
	truncate -s "$BASE_MEMORY_SIZE" "$d/dst.mem"
	qemu-img create -q -f qcow2 -b "$base/disk.img" -F raw "$d/src.qcow2"
	qemu-img create -q -f qcow2 -b "$base/disk.img" -F raw "$d/dst.qcow2"
	"$WAN" exec "$NAME" a "$VMCTL" start "$d/s.run" "${common[@]}" --disk "$d/src.qcow2" --mem-file "$d/src.mem" >/dev/null ||
		{ echo "failed - - - - vmctl-start"; return 0; }
	{ "$VMCTL" load "$d/s.run" "$base/devstate" && "$VMCTL" cont "$d/s.run"; } >/dev/null || { echo "failed - - - - load"; return 0; }
	sleep "$WARM"
	# -S on B too: it must not run before the disk mirror is complete (as libvirt does)
	"$WAN" exec "$NAME" b "$VMCTL" start "$d/d.run" "${common[@]}" --paused --disk "$d/dst.qcow2" --mem-file "$d/dst.mem" >/dev/null ||
		{ echo "failed - - - - vmctl-start-b"; return 0; }
	local caps='{"capability":"x-ignore-shared","state":false}'
	case $variant in
	xbzrle) caps="$caps,"'{"capability":"xbzrle","state":true}'
		qmp "$d/s.run" migrate-set-parameters '{"xbzrle-cache-size":67108864}' >/dev/null ;;
	mfzstd) caps="$caps,"'{"capability":"multifd","state":true}'
		for r in s d; do qmp "$d/$r.run" migrate-set-parameters '{"multifd-compression":"zstd","multifd-channels":2}' >/dev/null; done ;;
	ac) caps="$caps,"'{"capability":"auto-converge","state":true}' ;;
	esac
	[ -n "$QDOWN" ] && qmp "$d/s.run" migrate-set-parameters "{\"downtime-limit\":$QDOWN}" >/dev/null
	{ qmp "$d/s.run" migrate-set-capabilities "{\"capabilities\":[$caps]}" &&
	  qmp "$d/d.run" migrate-set-capabilities "{\"capabilities\":[$caps]}" &&
	  qmp "$d/d.run" nbd-server-start "{\"addr\":{\"type\":\"inet\",\"data\":{\"host\":\"$ADDR_B\",\"port\":\"7500\"}}}" &&
	  qmp "$d/d.run" nbd-server-add '{"device":"virtio0","writable":true}' &&
	  qmp "$d/d.run" migrate-incoming "{\"uri\":\"tcp:$ADDR_B:7400\"}"; } >/dev/null || { echo "failed - - - - qmp-setup"; return 0; }
	tx0=$(tx_bytes)
	t0=$(now)
	qmp "$d/s.run" drive-mirror "{\"device\":\"virtio0\",\"job-id\":\"m0\",\"target\":\"nbd://$ADDR_B:7500/virtio0\",\"format\":\"raw\",\"sync\":\"top\",\"mode\":\"existing\"}" >/dev/null ||
		{ echo "failed - - - - drive-mirror"; return 0; }
	local deadline=$(( $(date +%s) + LIMIT ))
	until qmp "$d/s.run" query-block-jobs | grep -q '"ready": *true'; do
		if [ "$(date +%s)" -ge "$deadline" ]; then
			echo "dnf >$LIMIT - $(( ($(tx_bytes) - tx0) / 1048576 )) - did-not-finish-in-${LIMIT}s:disk-mirror-not-ready"
			return 0
		fi
		sleep 0.2
	done
	local tm
	tm=$(awk -v a="$t0" -v b="$(now)" 'BEGIN { printf "%.0f", b - a }')
	qmp "$d/s.run" migrate "{\"uri\":\"tcp:$ADDR_B:7400\"}" >/dev/null || { echo "failed - - - - migrate"; return 0; }
	while :; do
		st=$(qmp "$d/s.run" query-migrate | jget status)
		case $st in completed) break ;; failed|cancelled) echo "failed - - - - migration-$st"; return 0 ;; esac
		if [ "$(date +%s)" -ge "$deadline" ]; then
			local q left xfer
			q=$(qmp "$d/s.run" query-migrate)
			left=$(jget ram.remaining <<<"$q")
			xfer=$(jget ram.transferred <<<"$q")
			qmp "$d/s.run" migrate_cancel >/dev/null
			echo "dnf >$LIMIT - $(( ($(tx_bytes) - tx0) / 1048576 )) - did-not-finish-in-${LIMIT}s:mirror-ready-after-${tm}s,RAM-$(( ${xfer:-0} / 1048576 ))MiB-sent,$(( ${left:-0} / 1048576 ))MiB-left"
			return 0
		fi
		sleep 0.1
	done
	t1=$(now)
	local qdown
	qdown=$(qmp "$d/s.run" query-migrate | jget downtime)
	qmp "$d/s.run" block-job-cancel '{"device":"m0"}' >/dev/null
	while qmp "$d/s.run" query-block-jobs | grep -q m0; do sleep 0.05; done
	qmp "$d/d.run" nbd-server-stop >/dev/null
	"$VMCTL" wait-status "$d/d.run" paused 30000 >/dev/null
	"$VMCTL" cont "$d/d.run" >/dev/null || { echo "failed - - - - cont"; return 0; }
	local t2 check
	t2=$(now)
	check=$(guest_check "$d/d.run")
	awk -v t0="$t0" -v t1="$t1" -v t2="$t2" -v q="${qdown:-0}" -v b="$(( $(tx_bytes) - tx0 ))" -v c="$check" -v tm="$tm" \
		'BEGIN { printf "ok %.1f %.3f %.1f - mirror-ready-after-%ss qemu-downtime=%dms %s\n", t2 - t0, q / 1000 + (t2 - t1), b / 1048576, tm, q, c }'
	"$VMCTL" kill "$d/s.run" >/dev/null 2>&1
	"$VMCTL" kill "$d/d.run" >/dev/null 2>&1
}

# ---- the tables -----------------------------------------------------------------------------------
tables() {
	python3 - "$RES" "$RAM_MB" "$WARM" "$LIMIT" "$MODE" <<'PY'
import re, sys
res, ram, warm, limit, mode = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
rows = [l.rstrip("\n").split("\t") for l in open(res) if l.strip()]
def num(s):
    try:
        return float(s)
    except ValueError:
        return None
for load in dict.fromkeys(r[0] for r in rows):
    print()
    print("== %s workload: %s MiB RAM, warm-up %s s, handoff mode %s, QEMU limit %s s; load = 1-min load average at start/end of the cell"
          % (load, ram, warm, mode, limit))
    print("%-5s %-12s %9s %10s %9s %9s %9s %10s  %s" % ("mbit", "method", "total_s", "downtime_s", "wire_MiB", "true_MiB", "true_s", "load", "notes"))
    for rate in dict.fromkeys(r[1] for r in rows if r[0] == load):
        cells = {r[2]: r for r in rows if r[0] == load and r[1] == rate}
        bps = float(rate) * 1e6 / 8
        for m, r in cells.items():
            st, tot, down, wire, tb, l0, l1, notes = r[3:11]
            if st == "dnf":
                tot, down = tot, "-"
                rest = re.sub(r"^did-not-finish-in-[0-9]+s:?", "", notes)
                notes = "did not finish in %s s%s" % (tot.lstrip(">"), "; " + rest if rest else "")
            elif st != "ok":
                notes = "%s: %s" % (st, notes)
            ts = "%.0f" % (float(tb) * 2**20 / bps) if num(tb) is not None else "-"
            print("%-5s %-12s %9s %10s %9s %9s %9s %10s  %s" % (rate, m, tot, down, wire, tb, ts, l0 + "/" + l1, notes))
        ho = cells.get("handoff")
        out = []
        hot = num(ho[4]) if ho and ho[3] == "ok" else None
        q = [(m, r) for m, r in cells.items() if m.startswith("qemu")]
        qok = [(num(r[4]), m) for m, r in q if r[3] == "ok"]
        if hot and q:
            if qok:
                t, m = min(qok)
                out.append("QEMU best total / handoff total = %.1fx (%s %.1f s / %.1f s)" % (t / hot, m, t, hot))
            elif all(r[3] == "dnf" for m, r in q):
                lim = min(float(r[4].lstrip(">")) for m, r in q)
                if lim > hot:
                    out.append("QEMU best total / handoff total > %.1fx (no QEMU method finished in %.0f s; handoff %.1f s)" % (lim / hot, lim, hot))
                else:
                    out.append("QEMU best total / handoff total unknown: no QEMU method finished in %.0f s, handoff took %.1f s (raise VM_BENCH_LIMIT)" % (lim, hot))
        pc = cells.get("handoff-pc")
        if ho and pc and ho[3] == "ok" and pc[3] == "ok" and num(ho[5]):
            out.append("handoff-pc downtime / handoff downtime = %.3f (%s s / %s s)" % (num(pc[5]) / num(ho[5]), pc[5], ho[5]))
            if hot and num(pc[4]):
                out.append("handoff-pc total / handoff total = %.2f" % (num(pc[4]) / hot))
        p0 = cells.get("handoff-pc0")
        if hot and p0 and p0[3] == "ok" and num(p0[4]):
            out.append("handoff-pc0 total / handoff total = %.2f" % (num(p0[4]) / hot))
        pa = cells.get("handoff-auto")
        if hot and pa and pa[3] == "ok" and num(pa[4]):
            out.append("handoff-auto total / handoff total = %.2f" % (num(pa[4]) / hot))
        for m in ("handoff", "handoff-pc", "handoff-pc0", "handoff-auto"):
            r = cells.get(m)
            if r and r[3] == "ok" and num(r[7]):
                need = num(r[7]) * 2**20 / bps
                out.append("%s: truly changed state %.1f MiB on the wire needs %.1f s at %s Mbit/s; total = %.2fx that"
                           % (m, num(r[7]), need, rate, num(r[4]) / need))
        for o in out:
            print("      %s: %s" % (rate, o))
PY
}

echo "# bench/vm: $(date -u '+%F %T') UTC, $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg), RAM ${RAM_MB} MiB, accel $HANDOFF_ACCEL${VM_BENCH_MIGRATE_ARGS:+, migrate $VM_BENCH_MIGRATE_ARGS}"
printf '%-6s %-5s %-12s %9s %10s %9s %9s %10s  %s\n' load mbit method total_s downtime_s wire_MiB true_MiB load notes
for load in $LOADS; do
	base=$(base_for "$load") || { say "cannot create the $load base"; continue; }
	for rate in $RATES; do
		"$WAN" up "$NAME" "${rate}mbit" || exit 1
		for m in $METHODS; do
			d=$W/$load-$rate-$m
			l0=$(load1)
			case $m in
			handoff) out=$(run_handoff "$base" "$VERIFY" "$([ $PC_OK = 1 ] && echo never || echo -)" "$d") ;;
			handoff-nv) out=$(run_handoff "$base" none "$([ $PC_OK = 1 ] && echo never || echo -)" "$d") ;;
			handoff-pc)
				if [ $PC_OK = 1 ]; then
					out=$(run_handoff "$base" "$VERIFY" always "$d")
				else
					say "handoff-pc skipped: this handoff-vm has no --postcopy yet"
					out="skipped - - - - handoff-vm-has-no---postcopy-yet"
				fi ;;
			handoff-pc0)
				if [ $PC_OK = 1 ]; then
					out=$(run_handoff "$base" "$VERIFY" always "$d" --max-rounds 1)
				else
					out="skipped - - - - handoff-vm-has-no---postcopy-yet"
				fi ;;
			handoff-auto)
				if [ $PC_OK = 1 ]; then
					out=$(run_handoff "$base" "$VERIFY" auto "$d")
				else
					out="skipped - - - - handoff-vm-has-no---postcopy-yet"
				fi ;;
			qemu) out=$(run_qemu "$base" "$d" plain) ;;
			qemu-xbzrle) out=$(run_qemu "$base" "$d" xbzrle) ;;
			qemu-mfzstd) out=$(run_qemu "$base" "$d" mfzstd) ;;
			qemu-ac) out=$(run_qemu "$base" "$d" ac) ;;
			*) say "unknown method '$m'"; continue ;;
			esac
			l1=$(load1)
			[ -n "$out" ] || out="failed - - - - no-result(see-above)"
			set -- $out
			[ $# -ge 5 ] || set -- failed - - - - "$out"
			printf '%-6s %-5s %-12s %9s %10s %9s %9s %10s  %s\n' "$load" "$rate" "$m" "$2" "$3" "$4" "$5" "$l0/$l1" "$1 ${*:6}"
			printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$load" "$rate" "$m" "$1" "$2" "$3" "$4" "$5" "$l0" "$l1" "${*:6}" >>"$RES"
			[ -n "${VM_BENCH_RESULTS:-}" ] && tail -n1 "$RES" >>"$VM_BENCH_RESULTS"
			if [ -n "${VM_BENCH_LOGS:-}" ]; then
				mkdir -p "$VM_BENCH_LOGS/$load-$rate-$m"
				for f in "$d"/*.log "$d"/*.run/*.log; do
					[ -f "$f" ] && cp "$f" "$VM_BENCH_LOGS/$load-$rate-$m/$(basename "$(dirname "$f")" .run)-$(basename "$f")"
				done
			fi
			for r in "$d"/*.run; do [ -d "$r" ] && { handoff-vm -q stop --run-dir "$r" >/dev/null 2>&1 || "$VMCTL" kill "$r" >/dev/null 2>&1; }; done
			for mnt in "$d"/*.mnt; do fusermount3 -uz "$mnt" 2>/dev/null; done
			rm -rf "$d"
		done
		"$WAN" down "$NAME" 2>/dev/null
	done
done
tables
