#!/usr/bin/env bash
# t6010-vm-device-state.sh — the handoff primitive without the stream: boot the tiny guest with
# its RAM in a file, let it run, pause it, save only its device state (migration with
# x-ignore-shared: RAM stays in the file), kill QEMU, then start a new QEMU with -incoming defer
# on copies of the same disk and memory files, load the device state and cont. The guest must
# go on where it was: same boot, counter continuing (not reset), self-check passing.
set -u
HANDOFF_SRC=${HANDOFF_SRC:-$(cd "$(dirname "$0")/.." && pwd)}
. "$HANDOFF_SRC/tests/lib.sh"
. "$HANDOFF_SRC/guest/vmtest.sh"

T=$(mktemp -d /tmp/t6010.XXXXXX)
trap 'vmt_cleanup; t_cleanup; rm -rf "$T"' EXIT
vmt_init "$T"
vmt_tiny

mkdir -p "$T/src" "$T/dst"
cp --sparse=always "$GUEST_DISK" "$T/src/disk.img"
truncate -s "${GUEST_RAM_MB}M" "$T/src/mem"
common=(--accel tcg --kernel "$GUEST_KERNEL" --initrd "$GUEST_INITRD" --append "$GUEST_CMDLINE"
	--mem-mb "$GUEST_RAM_MB" --cmd-port)

# ---- source --------------------------------------------------------------------------------
if vmt_start "$T/a" "${common[@]}" --disk "$T/src/disk.img" --mem-file "$T/src/mem"; then
	ok "source qemu started"
else
	not_ok "source qemu started"
	sed 's/^/# /' "$T/a/qemu.log" 2>/dev/null
	done_testing
fi
src_pid=$VMT_LAST_PID
slog=$T/a/serial.log
"$VMCTL" wait-serial "$T/a" HANDOFF-READY 90000 >/dev/null || { tail -n 20 "$slog" | sed 's/^/# /'; bail "source guest did not reach its workload"; }
# past the first churn (tick 10) and the first counter write to disk (tick 5)
check "source counter reaches 12" vmt_wait_counter "$slog" 12 30
check "pause source" "$VMCTL" pause "$T/a"
sleep 0.3
before=$(vmt_counter "$slog")
boot=$(vmt_boot_id "$slog")
ok "source paused at counter $before (boot $boot)"

size=$("$VMCTL" save "$T/a" "$T/dev.state" "$T/src/mem")
if [ -n "$size" ] && [ "$size" -gt 0 ] && [ "$size" -lt $((4 * 1024 * 1024)) ]; then
	ok "device state saved with x-ignore-shared: $size bytes (RAM not included)"
else
	not_ok "device state saved with x-ignore-shared (size '${size:-}')"
fi
is "$("$VMCTL" status "$T/a")" postmigrate "source is postmigrate"
check "kill source" "$VMCTL" kill "$T/a"
check_fail "source qemu is gone" vmt_alive "$src_pid"
is "$(vmt_counter "$slog")" "$before" "source counter did not move after pause"

# ---- destination on copies -----------------------------------------------------------------
cp --sparse=always "$T/src/mem" "$T/dst/mem"
cp --sparse=always "$T/src/disk.img" "$T/dst/disk.img"
if vmt_start "$T/b" "${common[@]}" --disk "$T/dst/disk.img" --mem-file "$T/dst/mem" --incoming; then
	ok "destination qemu started with -incoming defer"
else
	not_ok "destination qemu started with -incoming defer"
	sed 's/^/# /' "$T/b/qemu.log" 2>/dev/null
	done_testing
fi
dlog=$T/b/serial.log
is "$("$VMCTL" status "$T/b")" inmigrate "destination waits in inmigrate"
t0=$(date +%s.%N)
check "device state loaded" "$VMCTL" load "$T/b" "$T/dev.state"
is "$("$VMCTL" status "$T/b")" paused "destination arrives paused"
check "cont destination" "$VMCTL" cont "$T/b"
ok "load + cont took $(vmt_elapsed "$t0") s"

check "destination counter ticks" vmt_wait_counter "$dlog" $((before + 5)) 30
# a pause may cut a console line: read the two logs as one stream
if seq=$(vmt_counter_seq "$slog" "$dlog"); then
	ok "counter continued from $before without gap or reset: $seq"
else
	not_ok "counter continued from $before without gap or reset: $seq"
fi
after=$(vmt_counter "$dlog")
check "counter went past the pause point ($before -> $after)" test "$after" -gt "$before"
is "$(vmt_boot_id "$dlog")" "$boot" "same boot id after handoff"
check "no reboot on the destination" test "$(grep -c HANDOFF-BOOT "$dlog")" = 0

reply=$("$VMCTL" send "$T/b" check 30000)
case "$reply" in
"HANDOFF-CHECK ok"*) ok "self-check after handoff (RAM and disk md5s, counters): $reply" ;;
*) not_ok "self-check after handoff"; echo "#   got '$reply'"; tail -n 5 "$dlog" | sed 's/^/#   /' ;;
esac
check "no failed self-check on either console" test "$(cat "$slog" "$dlog" | grep -c 'HANDOFF-CHECK fail')" = 0
check "quit destination" "$VMCTL" quit "$T/b"
done_testing
