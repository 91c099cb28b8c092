#!/usr/bin/env bash
# bench/vm.sh — a whole VM handoff against QEMU's own live migration, in the same run, over the
# shaped link of scripts/wan.sh (source in namespace A, destination in B). The guest is the
# realistic one (Debian 12, sqlite web service + load generator) resumed from a base both sides
# hold; after VM_BENCH_WARM seconds of its workload it is moved by:
#   handoff     handoff-vm migrate (live rounds of changed chunks since the base, --mode VM_BENCH_MODE;
#               --verify memory: both sides hash the RAM image before B resumes, part of the downtime)
#   handoff-nv  the same with --verify none
#   qemu        QEMU live migration of RAM over TCP + drive-mirror sync=top of a qcow2 overlay whose
#               backing file is the base disk (on both sides), QEMU's usual storage migration
#   qemu-xbzrle the same with the xbzrle capability (64 MiB cache)
#   qemu-mfzstd the same with multifd (2 channels) + zstd compression
# QEMU does not know the destination holds the base RAM, so it sends all of RAM; that is the
# point of the comparison. Per cell: total time (start of the handoff/mirror to the VM running on
# B), downtime (handoff-vm's report; for QEMU its own "downtime" plus block-job completion and cont
# on B, measured on this clock), and bytes on the wire (tc counters of A's egress). A method that
# has not finished within VM_BENCH_LIMIT seconds is reported as such (QEMU's pre-copy need not
# converge when the guest dirties faster than the link).
#
#   VM_BENCH_LOADS="light heavy"  VM_BENCH_RATES="10 5 25"
#   VM_BENCH_METHODS="handoff handoff-nv qemu qemu-xbzrle qemu-mfzstd"
#   VM_BENCH_RAM=256M  VM_BENCH_WARM=20  VM_BENCH_LIMIT=300  VM_BENCH_MODE=delta-zstd3
#   VM_BENCH_QEMU_DOWNTIME=MS (QEMU's downtime-limit; default QEMU's own, 300 ms)
# The whole matrix takes long (QEMU's pre-copy often runs into the limit at these rates): up to
# ~1.5 h; narrow it with the variables above. Bases are cached in
# ${HANDOFF_CACHE:-~/.cache/handoff}/vm-bench/. Needs root, qemu, the realistic guest
# (guest/build-realistic.sh, ~3 min the first time).
set -u
: "${HANDOFF_BUILD:=$(cd "$(dirname "$0")/.." && pwd)/build}"
: "${HANDOFF_SRC:=$(cd "$(dirname "$0")/.." && pwd)}"
export PATH="$HANDOFF_BUILD/bin:$PATH:/usr/sbin:/sbin"
WAN=$HANDOFF_SRC/scripts/wan.sh
VMCTL=$HANDOFF_BUILD/tests/vmctl
LOADS=${VM_BENCH_LOADS:-"light heavy"}
RATES=${VM_BENCH_RATES:-"10 5 25"}
METHODS=${VM_BENCH_METHODS:-"handoff handoff-nv qemu qemu-xbzrle qemu-mfzstd"}
RAM=${VM_BENCH_RAM:-256M}
WARM=${VM_BENCH_WARM:-20}
LIMIT=${VM_BENCH_LIMIT:-300}
MODE=${VM_BENCH_MODE:-delta-zstd3}
QDOWN=${VM_BENCH_QEMU_DOWNTIME:-}     # QEMU's downtime-limit in ms (empty: QEMU's default, 300)
CACHE=${HANDOFF_CACHE:-$HOME/.cache/handoff}/vm-bench
NAME=hv$$
say() { echo "bench/vm: $*" >&2; }

[ "$(id -u)" = 0 ] || { say "needs root (network namespaces, FUSE): skipped"; exit 0; }
command -v qemu-system-x86_64 >/dev/null || { say "qemu-system-x86_64 missing: skipped"; exit 0; }
command -v qemu-img >/dev/null || { say "qemu-img missing: skipped"; exit 0; }
[ -x "$VMCTL" ] || { say "$VMCTL not built: skipped"; exit 0; }
env=$("$HANDOFF_SRC/guest/build-realistic.sh") || { say "cannot build the realistic guest: skipped"; exit 0; }

W=$(mktemp -d /tmp/handoff-bench-vm.XXXXXX)
cleanup() {
	for r in "$W"/*/*.run; do [ -d "$r" ] && { handoff-vm -q stop --run-dir "$r" 2>/dev/null || "$VMCTL" kill "$r" 2>/dev/null; }; done
	"$WAN" down "$NAME" 2>/dev/null
	for m in "$W"/*/*.mnt; do fusermount3 -uz "$m" 2>/dev/null; done
	rm -rf "$W"
}
trap cleanup EXIT
ADDR_B=10.213.0.2

# base LOAD: the cached base of the realistic guest under that workload
base_for() {
	local b=$CACHE/base-$1-$RAM
	if [ ! -s "$b/base.env" ] || [ "$b/base.env" -ot "$(dirname "$env")/stamp" ]; then
		mkdir -p "$CACHE"
		say "creating the base for the $1 workload ($RAM RAM; a few minutes under TCG)"
		handoff-vm -q base create --force --guest "$env" --ram "$RAM" --settle 20 --append "handoff.load=$1" "$b" >&2 || return 1
	fi
	echo "$b"
}

# tx bytes of A's egress qdisc
tx_bytes() { ip netns exec "$NAME-a" tc -s qdisc show dev "$NAME-va" | awk '/Sent/ { print $2; exit }'; }
now() { date +%s.%N; }
qmp() { "$VMCTL" qmp "$@"; }
jget() { python3 -c 'import json,sys; d=json.load(sys.stdin)
for k in sys.argv[1].split("."):
    d = d.get(k, {}) if isinstance(d, dict) else {}
print(d if d != {} else "")' "$1"; }

# ---- handoff ----------------------------------------------------------------------------------
run_handoff() {
	local base=$1 d=$3 tx0 t0 rc
	mkdir -p "$d"
	handoff-vm -q start --base "$base" --overlay "$d/src.ovl" --mount "$d/src.mnt" --run-dir "$d/s.run" || return 1
	sleep "$WARM"
	"$WAN" exec "$NAME" b handoff-vm -q receive --base "$base" --overlay "$d/dst.ovl" --mount "$d/dst.mnt" \
		--run-dir "$d/d.run" --listen "$ADDR_B:7300" --port-file "$d/port" --timeout "$LIMIT" 2>"$d/recv.log" &
	local rp=$!
	# the clock starts once the receiver listens (its first mount hashes the base)
	for _ in $(seq 600); do [ -s "$d/port" ] && break; sleep 0.1; done
	tx0=$(tx_bytes)
	timeout "$LIMIT" "$WAN" exec "$NAME" a handoff-vm migrate --run-dir "$d/s.run" --to "$ADDR_B:7300" \
		--mode "$MODE" --verify "$2" --report "$d/report.json" 2>"$d/migrate.log"
	rc=$?
	wait "$rp"
	if [ $rc != 0 ]; then
		echo "failed(exit $rc)"
		sed 's/^/bench\/vm:   /' "$d/migrate.log" >&2
		handoff-vm -q stop --run-dir "$d/s.run" 2>/dev/null
		return 0
	fi
	local check
	check=$("$VMCTL" send "$d/d.run" check 120000 2>/dev/null | cut -c1-18)
	python3 - "$d/report.json" "$(( $(tx_bytes) - tx0 ))" "$check" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
p = r["downtime_parts"]
print("%.1f %.3f %.1f rounds=%d save+final+resume=%.2f+%.2f+%.2fs %s" % (r["total_seconds"], r["downtime_seconds"],
      int(sys.argv[2]) / 2**20, r["rounds_total"], p["save_device_state"], p["final_round"], p["device_state_verify_resume"],
      "check-ok" if sys.argv[3].startswith("HANDOFF-CHECK ok") else "check=" + (sys.argv[3] or "none").replace(" ", "_")))
PY
	handoff-vm -q stop --run-dir "$d/d.run"
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
	"$WAN" exec "$NAME" a "$VMCTL" start "$d/s.run" "${common[@]}" --disk "$d/src.qcow2" --mem-file "$d/src.mem" >/dev/null || return 1
	"$VMCTL" load "$d/s.run" "$base/devstate" && "$VMCTL" cont "$d/s.run" || return 1
	sleep "$WARM"
	# -S on B too: it must not run before the disk mirror is complete (as libvirt does)
	"$WAN" exec "$NAME" b "$VMCTL" start "$d/d.run" "${common[@]}" --paused --disk "$d/dst.qcow2" --mem-file "$d/dst.mem" >/dev/null || return 1
	local caps='{"capability":"x-ignore-shared","state":false}'
	case $variant in
	xbzrle) caps="$caps,"'{"capability":"xbzrle","state":true}'
		qmp "$d/s.run" migrate-set-parameters '{"xbzrle-cache-size":67108864}' >/dev/null ;;
	mfzstd) caps="$caps,"'{"capability":"multifd","state":true}'
		for r in s d; do qmp "$d/$r.run" migrate-set-parameters '{"multifd-compression":"zstd","multifd-channels":2}' >/dev/null; done ;;
	esac
	[ -n "$QDOWN" ] && qmp "$d/s.run" migrate-set-parameters "{\"downtime-limit\":$QDOWN}" >/dev/null
	qmp "$d/s.run" migrate-set-capabilities "{\"capabilities\":[$caps]}" >/dev/null || return 1
	qmp "$d/d.run" migrate-set-capabilities "{\"capabilities\":[$caps]}" >/dev/null || return 1
	qmp "$d/d.run" nbd-server-start "{\"addr\":{\"type\":\"inet\",\"data\":{\"host\":\"$ADDR_B\",\"port\":\"7500\"}}}" >/dev/null || return 1
	qmp "$d/d.run" nbd-server-add '{"device":"virtio0","writable":true}' >/dev/null || return 1
	qmp "$d/d.run" migrate-incoming "{\"uri\":\"tcp:$ADDR_B:7400\"}" >/dev/null || return 1
	tx0=$(tx_bytes)
	t0=$(now)
	qmp "$d/s.run" drive-mirror "{\"device\":\"virtio0\",\"job-id\":\"m0\",\"target\":\"nbd://$ADDR_B:7500/virtio0\",\"format\":\"raw\",\"sync\":\"top\",\"mode\":\"existing\"}" >/dev/null || return 1
	local deadline=$(( $(date +%s) + LIMIT ))
	until qmp "$d/s.run" query-block-jobs | grep -q '"ready": *true'; do
		[ "$(date +%s)" -lt "$deadline" ] || { echo "dnf(mirror>${LIMIT}s)"; return 0; }
		sleep 0.2
	done
	qmp "$d/s.run" migrate "{\"uri\":\"tcp:$ADDR_B:7400\"}" >/dev/null || return 1
	while :; do
		st=$(qmp "$d/s.run" query-migrate | jget status)
		case $st in completed) break ;; failed|cancelled) echo "failed($st)"; return 0 ;; esac
		if [ "$(date +%s)" -ge "$deadline" ]; then
			local left sent
			left=$(qmp "$d/s.run" query-migrate | jget ram.remaining)
			sent=$(( $(tx_bytes) - tx0 ))
			qmp "$d/s.run" migrate_cancel >/dev/null
			echo "dnf(>${LIMIT}s:$((sent / 1048576))MiB-sent,$((${left:-0} / 1048576))MiB-RAM-left)"
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
	"$VMCTL" cont "$d/d.run" >/dev/null || { echo "failed(cont)"; return 0; }
	local t2 check
	t2=$(now)
	check=$("$VMCTL" send "$d/d.run" check 120000 2>/dev/null | cut -c1-18)
	awk -v t0="$t0" -v t1="$t1" -v t2="$t2" -v q="${qdown:-0}" -v b="$(( $(tx_bytes) - tx0 ))" -v c="$check" \
		'BEGIN { printf "%.1f %.3f %.1f qemu-downtime=%dms %s\n", t2 - t0, q / 1000 + (t2 - t1), b / 1048576, q,
			(c ~ /^HANDOFF-CHECK ok/) ? "check-ok" : "check=" c }'
	"$VMCTL" kill "$d/s.run" >/dev/null 2>&1
	"$VMCTL" kill "$d/d.run" >/dev/null 2>&1
}

printf '%-6s %-5s %-12s %9s %10s %10s  %s\n' load mbit method total_s downtime_s wire_MiB notes
for load in $LOADS; do
	base=$(base_for "$load") || { say "cannot create the $load base"; continue; }
	for rate in $RATES; do
		"$WAN" up "$NAME" "${rate}mbit" || exit 1
		for m in $METHODS; do
			d=$W/$load-$rate-$m
			case $m in
			handoff) out=$(run_handoff "$base" memory "$d") ;;
			handoff-nv) out=$(run_handoff "$base" none "$d") ;;
			qemu) out=$(run_qemu "$base" "$d" plain) ;;
			qemu-xbzrle) out=$(run_qemu "$base" "$d" xbzrle) ;;
			qemu-mfzstd) out=$(run_qemu "$base" "$d" mfzstd) ;;
			*) say "unknown method '$m'"; continue ;;
			esac
			[ -n "$out" ] || out="error (see above)"
			set -- $out
			if [ $# -ge 3 ]; then
				printf '%-6s %-5s %-12s %9s %10s %10s  %s\n' "$load" "$rate" "$m" "$1" "$2" "$3" "${*:4}"
			else
				printf '%-6s %-5s %-12s %9s %10s %10s  %s\n' "$load" "$rate" "$m" - - - "$out"
			fi
			for r in "$d"/*.run; do [ -d "$r" ] && { "$VMCTL" kill "$r" >/dev/null 2>&1; }; done
			for mnt in "$d"/*.mnt; do fusermount3 -uz "$mnt" 2>/dev/null; done
			rm -rf "$d"
		done
	done
done
