#!/usr/bin/env bash
# demo.sh — the README's main job (make demo): a real VM handoff between two "cloudlets" on this
# machine. Builds the tiny test guest if needed, records a base VM of it that both cloudlets hold,
# resumes the base on the source's handoff-mount, and hands the running guest over a shaped
# 10 Mbit/s link between two network namespaces (scripts/wan.sh) to the destination's mirror
# mount; then shows the guest going on there (its counter keeps counting, its self-check of RAM
# and disk data passes) and the timing summary. Everything lives in a temp dir removed afterwards.
# Needs root (namespaces, FUSE), qemu-system-x86 and the guest's packages: make deps.
set -euo pipefail
: "${HANDOFF_SRC:=$(cd "$(dirname "$0")/.." && pwd)}"
: "${HANDOFF_BUILD:=$HANDOFF_SRC/build}"
export PATH="$HANDOFF_BUILD/bin:$PATH:/sbin:/usr/sbin"
RATE=${DEMO_RATE:-10mbit}
MODE=${DEMO_MODE:-delta-zstd3}
LINK=hodemo
WAN=$HANDOFF_SRC/scripts/wan.sh
VMCTL=$HANDOFF_BUILD/tests/vmctl

say()  { printf '\n\033[1m== %s\033[0m\n' "$*" >&2; }
info() { printf '   %s\n' "$*" >&2; }
die()  { printf 'demo: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root (network namespaces and FUSE mounts)"
command -v qemu-system-x86_64 >/dev/null || die "qemu-system-x86_64 missing (make deps)"
command -v fusermount3 >/dev/null || die "fusermount3 missing (make deps)"
[ -x "$VMCTL" ] && command -v handoff-vm >/dev/null || die "not built (make)"

work=$(mktemp -d /tmp/handoff-demo.XXXXXX)
A=$work/cloudlet-a B=$work/cloudlet-b
cleanup() {
	set +e
	handoff-vm -q stop --run-dir "$B/vm.run" 2>/dev/null
	handoff-vm -q stop --run-dir "$A/vm.run" 2>/dev/null
	"$WAN" down "$LINK" 2>/dev/null
	fusermount3 -uz "$A/mnt" 2>/dev/null; fusermount3 -uz "$B/mnt" 2>/dev/null
	rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$A" "$B"

# counter LOG: the guest's last counter value on a console log
counter() { tr -d '\r' <"$1" 2>/dev/null | awk '$1 == "HANDOFF-COUNTER" && $3 ~ /^boot=/ { n = $2 } END { print n + 0 }'; }

say "1. the guest: a small Linux (host kernel + busybox) that counts in RAM and keeps data in RAM and on disk"
env_file=$("$HANDOFF_SRC/guest/build-tiny.sh") || die "cannot build the tiny guest (see above)"
# shellcheck disable=SC1090
. "$env_file"
info "kernel $GUEST_KVER, ${GUEST_RAM_MB} MiB RAM, ${GUEST_DISK_MB} MiB disk ($GUEST_DIR)"
info "accelerator: $("$VMCTL" kvm-works >/dev/null 2>&1 && echo kvm || echo "tcg (no working KVM here)")"

say "2. the base VM, which both cloudlets hold: boot it once, let it settle, pause, save disk + RAM + device state"
handoff-vm base create --guest "$env_file" "$A/base"
cp -a --sparse=always "$A/base" "$B/base"
info "$(du -sh --apparent-size "$A/base" | cut -f1) apparent, $(du -sh "$A/base" | cut -f1) allocated; copied to cloudlet B"
info "identity: $(grep SHA256 "$A/base/base.env" | tr '\n' ' ')"

say "3. a WAN between the cloudlets: network namespaces $LINK-a and $LINK-b, shaped to $RATE"
"$WAN" up "$LINK" "$RATE"
ADDR_B=$("$WAN" addr "$LINK" b)
info "cloudlet A is $("$WAN" addr "$LINK" a), cloudlet B is $ADDR_B"

say "4. cloudlet B: waits for the VM with a mirror mount over its copy of the base"
# (B starts before A mounts: `ip netns exec` copies the mounts that exist, and a copy of A's
# mount inside B's namespace would keep A's mount daemon alive after the handoff)
"$WAN" exec "$LINK" b handoff-vm receive --base "$B/base" --overlay "$B/ovl" --mount "$B/mnt" \
	--run-dir "$B/vm.run" --listen "$ADDR_B:7300" --port-file "$B/port" --timeout 300 2>"$B/receive.log" &
recv_pid=$!
for _ in $(seq 100); do [ -s "$B/port" ] && break; sleep 0.1; done
[ -s "$B/port" ] || { cat "$B/receive.log" >&2; die "the receiver did not start"; }
info "listening on $ADDR_B:7300"

say "5. cloudlet A: the VM resumes from the base on a handoff-mount (its disk and RAM are MNT/disk, MNT/memory)"
handoff-vm start --base "$A/base" --overlay "$A/ovl" --mount "$A/mnt" --run-dir "$A/vm.run"
sleep 4
info "the guest runs on A: counter $(counter "$A/vm.run/serial.log") (it was $(counter "$A/base/console.log") when the base was taken)"
handoff-mount --status "$A/ovl" | grep -E '^(memory|disk)_modified_chunks|^generation' | sed 's/^/   /' >&2 || true

say "6. the handoff: live rounds over $RATE ($MODE), pause, last round + device state, resume on B"
before=$(counter "$A/vm.run/serial.log")
info "A's counter before: $before"
if ! "$WAN" exec "$LINK" a handoff-vm migrate --run-dir "$A/vm.run" --to "$ADDR_B:7300" --mode "$MODE" \
	--report "$work/report.json"; then
	sed 's/^/   B: /' "$B/receive.log" >&2
	die "the handoff failed (the VM keeps running on A)"
fi
wait "$recv_pid" || true
sed 's/^/   B: /' "$B/receive.log" >&2

say "7. the guest goes on at cloudlet B"
sleep 3
slog=$A/vm.run/serial.log dlog=$B/vm.run/serial.log
info "last counter on A: $(counter "$slog"); on B now: $(counter "$dlog") (same boot: $(grep -c HANDOFF-BOOT "$dlog") reboots on B)"
tail -n 3 "$dlog" | tr -d '\r' | sed 's/^/   B console: /' >&2
reply=$("$VMCTL" send "$B/vm.run" check 30000 || true)
info "guest self-check on B (md5s of its RAM and disk data, counter in RAM): $reply"
case "$reply" in "HANDOFF-CHECK ok"*) ;; *) die "the guest's self-check failed on B" ;; esac
info "A's QEMU is gone: $([ -e "$A/vm.run/qemu.pid" ] && kill -0 "$(cat "$A/vm.run/qemu.pid")" 2>/dev/null && echo no || echo yes); A's mount is gone: $(mountpoint -q "$A/mnt" && echo no || echo yes)"

say "8. timing"
python3 - "$work/report.json" <<'PY' >&2
import json, sys
r = json.load(open(sys.argv[1]))
for x in r["rounds"]:
    print("   round %d %-6s %6.1f MiB changed -> %6.2f MiB on the wire in %5.2f s" % (
        x["round"], "live" if x["live"] else "paused", x["changed_bytes"] / 2**20, x["wire_bytes"] / 2**20, x["seconds"]))
print("   total %.2f s, downtime %.3f s (pause on A -> running on B), %d rounds, %.2f MiB + %d bytes of device state"
      % (r["total_seconds"], r["downtime_seconds"], r["rounds_total"], r["wire_bytes_total"] / 2**20, r["devstate_bytes"]))
PY
say "done: the VM moved from cloudlet A to cloudlet B over $RATE and kept running"
