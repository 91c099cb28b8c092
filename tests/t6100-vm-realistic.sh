#!/usr/bin/env bash
# t6100-vm-realistic.sh — the realistic guest (Debian 12 + sqlite web service) survives a
# device-state handoff under both workloads: boot, let the load run, pause, save device state,
# kill, resume a new QEMU on copies of the disk and memory files, and the guest's full check
# (sqlite quick_check + values read back against digests kept in RAM) must pass. Slow (builds
# the guest with debootstrap the first time): runs only with HANDOFF_LONG=1 (make test-long).
set -u
HANDOFF_SRC=${HANDOFF_SRC:-$(cd "$(dirname "$0")/.." && pwd)}
. "$HANDOFF_SRC/tests/lib.sh"
. "$HANDOFF_SRC/guest/vmtest.sh"
[ "${HANDOFF_LONG:-0}" = 1 ] || skip_all "slow (debootstrap + TCG boots): set HANDOFF_LONG=1"
[ "$(id -u)" = 0 ] || skip_all "building the realistic guest needs root"
command -v debootstrap >/dev/null || skip_all "debootstrap not installed"

T=$(mktemp -d /tmp/t6100.XXXXXX)
trap 'vmt_cleanup; t_cleanup; rm -rf "$T"' EXIT
vmt_init "$T"
if ! env=$("$HANDOFF_SRC/guest/build-realistic.sh" 2>"$T/build.log"); then
	sed 's/^/# /' "$T/build.log" | tail -n 30
	bail "guest/build-realistic.sh failed"
fi
# shellcheck disable=SC1090
. "$env"
ok "realistic guest built ($GUEST_KVER, $GUEST_RAM_MB MiB RAM)"

for load in light heavy; do
	d=$T/$load
	mkdir -p "$d"
	cp --sparse=always "$GUEST_DISK" "$d/disk.img"
	truncate -s "${GUEST_RAM_MB}M" "$d/mem"
	cmdline=$GUEST_CMDLINE
	[ $load = heavy ] && cmdline=$GUEST_CMDLINE_HEAVY
	common=(--accel tcg --kernel "$GUEST_KERNEL" --initrd "$GUEST_INITRD" --append "$cmdline"
		--mem-mb "$GUEST_RAM_MB" --cmd-port)
	t0=$(date +%s.%N)
	if ! vmt_start "$d/a" "${common[@]}" --disk "$d/disk.img" --mem-file "$d/mem"; then
		not_ok "$load: source started"
		continue
	fi
	if ! "$VMCTL" wait-serial "$d/a" HANDOFF-READY 300000 >/dev/null; then
		not_ok "$load: guest reached its workload"
		tail -n 20 "$d/a/serial.log" | sed 's/^/# /'
		continue
	fi
	ok "$load: guest reached its workload in $(vmt_elapsed "$t0") s"
	sleep 20
	"$VMCTL" pause "$d/a"
	sleep 0.5
	before=$(vmt_counter "$d/a/serial.log")
	size=$("$VMCTL" save "$d/a" "$d/dev.state" "$d/mem") && ok "$load: device state saved ($size bytes) at counter $before" ||
		not_ok "$load: device state saved"
	"$VMCTL" kill "$d/a"
	cp --sparse=always "$d/mem" "$d/mem2"
	cp --sparse=always "$d/disk.img" "$d/disk2.img"
	vmt_start "$d/b" "${common[@]}" --disk "$d/disk2.img" --mem-file "$d/mem2" --incoming &&
		"$VMCTL" load "$d/b" "$d/dev.state" && "$VMCTL" cont "$d/b"
	check "$load: destination runs" test "$("$VMCTL" status "$d/b")" = running
	reply=$("$VMCTL" send "$d/b" check 300000)
	case "$reply" in
	"HANDOFF-CHECK ok"*) ok "$load: full check after handoff: $reply" ;;
	*) not_ok "$load: full check after handoff"; echo "#   got '$reply'" ;;
	esac
	check "$load: counter continued from $before" vmt_wait_counter "$d/b/serial.log" $((before + 3)) 120
	seq=$(vmt_counter_seq "$d/a/serial.log" "$d/b/serial.log") && ok "$load: no gap or reset: $seq" ||
		not_ok "$load: no gap or reset: $seq"
	check "$load: no failed check" test "$(cat "$d/a/serial.log" "$d/b/serial.log" | grep -c 'HANDOFF-CHECK fail')" = 0
	"$VMCTL" quit "$d/b"
	rm -f "$d"/mem* "$d"/disk*
done
done_testing
