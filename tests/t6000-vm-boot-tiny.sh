#!/usr/bin/env bash
# t6000-vm-boot-tiny.sh — boots the tiny test guest under TCG with its RAM in a plain file and
# its disk on a plain copy of the image, through the vm module (vmctl): the workload must start,
# the counter must tick, stop while paused and go on after cont, the guest's self-check must pass
# (also on request over the second serial port), and quit must end QEMU.
set -u
HANDOFF_SRC=${HANDOFF_SRC:-$(cd "$(dirname "$0")/.." && pwd)}
. "$HANDOFF_SRC/tests/lib.sh"
. "$HANDOFF_SRC/guest/vmtest.sh"

T=$(mktemp -d /tmp/t6000.XXXXXX)
trap 'vmt_cleanup; t_cleanup; rm -rf "$T"' EXIT
vmt_init "$T"
vmt_tiny
ok "tiny guest built ($GUEST_KVER, modules: ${GUEST_MODULES:-none})"

cp --sparse=always "$GUEST_DISK" "$T/disk.img"
truncate -s "${GUEST_RAM_MB}M" "$T/mem"
run=$T/vm
t0=$(date +%s.%N)
if vmt_start "$run" --accel tcg --kernel "$GUEST_KERNEL" --initrd "$GUEST_INITRD" \
	--append "$GUEST_CMDLINE" --disk "$T/disk.img" --mem-file "$T/mem" --mem-mb "$GUEST_RAM_MB" --cmd-port; then
	ok "qemu started (pid $VMT_LAST_PID)"
else
	not_ok "qemu started"
	cat "$run/qemu.log" 2>/dev/null | sed 's/^/# /'
	done_testing
fi
log=$run/serial.log

if "$VMCTL" wait-serial "$run" HANDOFF-READY 90000 >/dev/null; then
	ok "guest reached its workload in $(vmt_elapsed "$t0") s"
else
	not_ok "guest reached its workload"
	tail -n 20 "$log" | sed 's/^/# /'
	done_testing
fi
check "counter ticks (>= 5 within 20 s)" vmt_wait_counter "$log" 5 20
check "first self-check passed" grep -q 'HANDOFF-CHECK ok' "$log"
is "$("$VMCTL" status "$run")" running "status is running"

used_kb=$(du -k "$T/mem" | cut -f1)
check "guest RAM lives in the memory file (${used_kb} KiB allocated)" test "$used_kb" -gt 8192

check "pause" "$VMCTL" pause "$run"
is "$("$VMCTL" status "$run")" paused "status is paused"
c1=$(vmt_counter "$log")
sleep 1.5
c2=$(vmt_counter "$log")
is "$c2" "$c1" "counter frozen while paused"

check "cont" "$VMCTL" cont "$run"
is "$("$VMCTL" status "$run")" running "status is running again"
check "counter goes on after cont" vmt_wait_counter "$log" $((c1 + 3)) 20

reply=$("$VMCTL" send "$run" check 20000)
case "$reply" in
"HANDOFF-CHECK ok"*) ok "check on request over ttyS1: $reply" ;;
*) not_ok "check on request over ttyS1"; echo "#   got '$reply'" ;;
esac
check "no failed self-check on the console" test "$(grep -c 'HANDOFF-CHECK fail' "$log")" = 0
check "no reboot (one HANDOFF-BOOT line)" test "$(grep -c 'HANDOFF-BOOT' "$log")" = 1

check "quit" "$VMCTL" quit "$run"
check_fail "qemu process is gone" vmt_alive "$VMT_LAST_PID"
done_testing
