#!/usr/bin/env bash
# t6020-vm-handoff.sh — a real VM handoff end to end with handoff-vm (TCG, on this machine):
# create a base of the tiny guest, give each side its own copy, resume the base on a source mount,
# hand the running guest over to a destination mirror mount (live rounds, pause, final round,
# device state, disk and memory digests compared (--verify all), resume there; with a pre-shared key), then check from inside the guest that nothing was lost: the counter
# goes on from where it stopped with the same boot id, and the guest's self-check (md5s of RAM and
# disk data) passes; also that >= 2 rounds happened, the report adds up and the source let go.
set -u
HANDOFF_SRC=${HANDOFF_SRC:-$(cd "$(dirname "$0")/.." && pwd)}
. "$HANDOFF_SRC/tests/lib.sh"
. "$HANDOFF_SRC/guest/vmtest.sh"
need_fuse

T=$(mktemp -d /tmp/t6020.XXXXXX)
cleanup() {
	handoff-vm -q stop --run-dir "$T/dst.run" 2>/dev/null
	handoff-vm -q stop --run-dir "$T/src.run" 2>/dev/null
	[ -n "${RPID:-}" ] && kill -9 "$RPID" 2>/dev/null
	vmt_cleanup; t_cleanup
	fusermount3 -uz "$T/src.mnt" 2>/dev/null; fusermount3 -uz "$T/dst.mnt" 2>/dev/null
	rm -rf "$T"
}
trap cleanup EXIT
vmt_init "$T"
vmt_tiny
export HANDOFF_ACCEL=tcg

if handoff-vm base create --guest "$GUEST_DIR/guest.env" "$T/base" 2>"$T/base.log"; then
	ok "base created: $(tail -n1 "$T/base.log" | sed 's/^handoff-vm: //')"
else
	sed 's/^/# /' "$T/base.log"; bail "handoff-vm base create failed"
fi
for f in disk.img memory.img devstate base.env vmlinuz initrd; do
	check "base holds $f" test -s "$T/base/$f"
done
. "$T/base/base.env"
is "$(sha256sum <"$T/base/memory.img" | cut -d' ' -f1)" "$BASE_MEMORY_SHA256" "base.env records the memory image's SHA-256"
alloc=$(du -k "$T/base/memory.img" | cut -f1)
check "memory image is sparse ($alloc KiB allocated of $((BASE_MEMORY_SIZE / 1024)))" test "$alloc" -lt $((BASE_MEMORY_SIZE / 1024))
# both cloudlets hold the base: the destination gets its own copy
cp -a --sparse=always "$T/base" "$T/dbase"

# ---- source: resume the base snapshot on a mount ----------------------------------------------
if handoff-vm start --base "$T/base" --overlay "$T/src.ovl" --mount "$T/src.mnt" --run-dir "$T/src.run" 2>"$T/start.log"; then
	ok "source VM resumed from the base on a handoff-mount"
else
	sed 's/^/# /' "$T/start.log" "$T/src.run/qemu.log" 2>/dev/null; bail "handoff-vm start failed"
fi
slog=$T/src.run/serial.log
c0=$(vmt_counter "$T/base/console.log")
check "source counter goes on from the base's ($c0)" vmt_wait_counter "$slog" $((c0 + 10)) 30
is "$(vmt_first_counter "$slog")" $((c0 + 1)) "first source counter follows the base snapshot's"
check "source is a mount" mountpoint -q "$T/src.mnt"

# ---- destination ------------------------------------------------------------------------------
head -c 32 /dev/urandom >"$T/key"
handoff-vm receive --base "$T/dbase" --overlay "$T/dst.ovl" --mount "$T/dst.mnt" --run-dir "$T/dst.run" \
	--listen 127.0.0.1:0 --port-file "$T/port" --timeout 120 --key "$T/key" 2>"$T/recv.log" &
RPID=$!
for _ in $(seq 100); do [ -s "$T/port" ] && break; sleep 0.1; done
check "receiver listens" test -s "$T/port"

# ---- the handoff --------------------------------------------------------------------------------
src_pid=$(cat "$T/src.run/qemu.pid")
if handoff-vm migrate --run-dir "$T/src.run" --to "127.0.0.1:$(cat "$T/port")" --key "$T/key" --mode delta-zstd3 \
	--verify all --postcopy never --report "$T/report.json" 2>"$T/migrate.log"; then
	ok "handoff-vm migrate succeeded (authenticated, delta-zstd3, images verified)"
else
	not_ok "handoff-vm migrate succeeded"; sed 's/^/# /' "$T/migrate.log" "$T/recv.log"
fi
wait "$RPID"; rrc=$?; RPID=
is "$rrc" 0 "receiver exited 0"
check "the destination compared disk and memory digests" grep -q 'images verified (all)' "$T/recv.log"
sed 's/^/# /' "$T/migrate.log"
grep -q 'handed off in' "$T/migrate.log" && ok "timing summary on stderr" || not_ok "timing summary on stderr"

rounds=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["rounds_total"])' "$T/report.json" 2>/dev/null)
check ">= 2 rounds (${rounds:-?})" test "${rounds:-0}" -ge 2
if python3 - "$T/report.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
assert r["handed_off"] is True
assert len(r["rounds"]) == r["rounds_total"]
assert r["rounds"][0]["live"] and not r["rounds"][-1]["live"]
assert sum(x["wire_bytes"] for x in r["rounds"]) == r["wire_bytes_total"]
assert all(r["rounds"][i]["until"] == r["rounds"][i + 1]["since"] for i in range(len(r["rounds"]) - 1))
assert 0 < r["downtime_seconds"] < r["total_seconds"] + 1
assert r["devstate_bytes"] > 0 and r["rounds"][0]["changed_bytes"] > 0
PY
then ok "report: live rounds then one paused round, generations chained, bytes add up, 0 < downtime"
else not_ok "report is consistent"; sed 's/^/# /' "$T/report.json"; fi

# ---- after: the guest runs on the destination, the source let go --------------------------------
check_fail "source qemu is gone" vmt_alive "$src_pid"
check_fail "source mount is gone" mountpoint -q "$T/src.mnt"
dlog=$T/dst.run/serial.log
check "destination is a mirror mount" mountpoint -q "$T/dst.mnt"
is "$("$VMCTL" status "$T/dst.run")" running "destination VM runs"
last=$(vmt_counter "$slog")
check "destination counter goes on past the source's last ($last)" vmt_wait_counter "$dlog" $((last + 5)) 30
if seq=$(vmt_counter_seq "$T/base/console.log" "$slog" "$dlog"); then
	ok "counter continued without gap or reset across base, source and destination: $seq"
else
	not_ok "counter continued across base, source and destination: $seq"
fi
check "no reboot on the destination" test "$(grep -c HANDOFF-BOOT "$dlog")" = 0
reply=$("$VMCTL" send "$T/dst.run" check 30000)
case "$reply" in
"HANDOFF-CHECK ok"*) ok "guest self-check after the handoff (RAM + disk md5s): $reply" ;;
*) not_ok "guest self-check after the handoff"; echo "#   got '$reply'"; tail -n 5 "$dlog" | sed 's/^/#   /' ;;
esac
check "no failed self-check on any console" test "$(cat "$slog" "$dlog" | grep -c 'HANDOFF-CHECK fail')" = 0

check "handoff-vm stop on the destination" handoff-vm stop --run-dir "$T/dst.run"
check_fail "destination mount is gone" mountpoint -q "$T/dst.mnt"
done_testing
