#!/usr/bin/env bash
# t6030-vm-handoff-failures.sh — a handoff that fails must leave the VM running where it was:
# (1) a destination holding a different base is refused at hello, before the source pauses;
# (2) the destination killed in the middle of the live rounds; (3) the destination dying after it
# got the device state, while the source is paused (receive --fault, test only); (4) the final
# round's stream corrupted on the wire (migrate --fault corrupt-final, test only): the mirror
# refuses it; (5) the destination's image digests differ from the source's (migrate --fault
# wrong-digest, test only): it refuses to resume; (6) a source with the wrong key is refused at
# hello. Each time migrate exits with its documented status and a one-line error, and the
# source guest goes on counting with its self-check passing; then a clean handoff still works.
set -u
HANDOFF_SRC=${HANDOFF_SRC:-$(cd "$(dirname "$0")/.." && pwd)}
. "$HANDOFF_SRC/tests/lib.sh"
. "$HANDOFF_SRC/guest/vmtest.sh"
need_fuse

T=$(mktemp -d /tmp/t6030.XXXXXX)
RPID=
cleanup() {
	[ -n "$RPID" ] && kill -9 "$RPID" 2>/dev/null
	handoff-vm -q stop --run-dir "$T/src.run" 2>/dev/null
	handoff-vm -q stop --run-dir "$T/ok.run" 2>/dev/null
	vmt_cleanup; t_cleanup
	for m in "$T"/*.mnt; do fusermount3 -uz "$m" 2>/dev/null; done
	rm -rf "$T"
}
trap cleanup EXIT
vmt_init "$T"
vmt_tiny
export HANDOFF_ACCEL=tcg

handoff-vm -q base create --guest "$GUEST_DIR/guest.env" --settle 1 "$T/base" 2>"$T/base.log" ||
	{ sed 's/^/# /' "$T/base.log"; bail "handoff-vm base create failed"; }
cp -a --sparse=always "$T/base" "$T/dbase"
# a destination whose base memory image differs in one byte
cp -a --sparse=always "$T/base" "$T/wrongbase"
printf 'X' | dd of="$T/wrongbase/memory.img" bs=1 seek=4096 conv=notrunc status=none

handoff-vm -q start --base "$T/base" --overlay "$T/src.ovl" --mount "$T/src.mnt" --run-dir "$T/src.run" 2>"$T/start.log" ||
	{ sed 's/^/# /' "$T/start.log"; bail "handoff-vm start failed"; }
slog=$T/src.run/serial.log
src_pid=$(cat "$T/src.run/qemu.pid")
vmt_wait_counter "$slog" 1 30 || bail "source guest does not count"
ok "source VM runs (pid $src_pid)"

# receiver NAME BASE [ARGS...]: start handoff-vm receive in the background on a fresh overlay
receiver() {
	local name=$1 base=$2; shift 2
	rm -f "$T/$name.port"
	handoff-vm receive --base "$base" --overlay "$T/$name.ovl" --mount "$T/$name.mnt" --run-dir "$T/$name.run" \
		--listen 127.0.0.1:0 --port-file "$T/$name.port" --timeout 120 "$@" 2>"$T/$name.recv.log" &
	RPID=$!
	for _ in $(seq 150); do [ -s "$T/$name.port" ] && return 0; sleep 0.1; done
	return 1
}

# source_survived WHAT: the source QEMU is the same process, runs, counts on, and passes its check
source_survived() {
	local what=$1 c
	check "$what: source qemu still alive" vmt_alive "$src_pid"
	is "$("$VMCTL" status "$T/src.run")" running "$what: source VM is running"
	c=$(vmt_counter "$slog")
	check "$what: source counter goes on past $c" vmt_wait_counter "$slog" $((c + 3)) 30
	local reply
	reply=$("$VMCTL" send "$T/src.run" check 30000)
	case "$reply" in
	"HANDOFF-CHECK ok"*) ok "$what: source self-check passes" ;;
	*) not_ok "$what: source self-check passes"; echo "#   got '$reply'" ;;
	esac
}

# ---- (1) wrong base ---------------------------------------------------------------------------
receiver wrong "$T/wrongbase" || bail "receiver did not start"
handoff-vm migrate --run-dir "$T/src.run" --to "127.0.0.1:$(cat "$T/wrong.port")" 2>"$T/m1.log"
is "$?" 3 "wrong base: migrate exits 3"
sed 's/^/# /' "$T/m1.log"
check "wrong base: one-line error names the base" grep -q 'refused the handoff: base differs' "$T/m1.log"
check "wrong base: refused before any round" test "$(grep -c 'round ' "$T/m1.log")" = 0
wait "$RPID"; is "$?" 3 "wrong base: receiver exits 3"; RPID=
check "wrong base: nothing was paused (no device state saved)" test ! -e "$T/src.run/devstate.out"
check_fail "wrong base: receiver unmounted its mirror" mountpoint -q "$T/wrong.mnt"
source_survived "wrong base"

# ---- (2) destination killed during the live rounds --------------------------------------------
receiver killed "$T/dbase" || bail "receiver did not start"
handoff-vm migrate --run-dir "$T/src.run" --to "127.0.0.1:$(cat "$T/killed.port")" --mode raw --rate-limit 1M --timeout 5 2>"$T/m2.log" &
MPID=$!
sleep 2
mirror_pid=$(handoff-mount --status "$T/killed.ovl" 2>/dev/null | awk '$1 == "pid" { print $2 }')
kill -9 "$RPID" ${mirror_pid:+"$mirror_pid"} 2>/dev/null
RPID=
ok "killed the receiver and its mirror (pid ${mirror_pid:-?}) mid-round"
wait "$MPID"
is "$?" 4 "destination killed: migrate exits 4"
sed 's/^/# /' "$T/m2.log"
check "destination killed: says the VM keeps running" grep -q 'keeps running' "$T/m2.log"
fusermount3 -uz "$T/killed.mnt" 2>/dev/null
source_survived "destination killed"

# ---- (3) destination dies after the device state (source paused) --------------------------------
receiver dies "$T/dbase" --fault die-after-devstate || bail "receiver did not start"
handoff-vm migrate --run-dir "$T/src.run" --to "127.0.0.1:$(cat "$T/dies.port")" 2>"$T/m3.log"
is "$?" 4 "destination died while the source was paused: migrate exits 4"
sed 's/^/# /' "$T/m3.log"
check "paused case: the device state had been saved" test -s "$T/src.run/devstate.out"
check "paused case: says the source VM was resumed" grep -q 'source VM was resumed' "$T/m3.log"
wait "$RPID"; RPID=
fusermount3 -uz "$T/dies.mnt" 2>/dev/null
source_survived "destination died"

# ---- (4) corrupted stream in the final round -----------------------------------------------------
receiver corrupt "$T/dbase" || bail "receiver did not start"
handoff-vm migrate --run-dir "$T/src.run" --to "127.0.0.1:$(cat "$T/corrupt.port")" --fault corrupt-final 2>"$T/m4.log"
is "$?" 4 "corrupted stream: migrate exits 4"
sed 's/^/# /' "$T/m4.log"
check "corrupted stream: the receiver refused it" grep -q 'receiver refused the stream' "$T/m4.log"
wait "$RPID"; rrc=$?; RPID=
check "corrupted stream: receiver failed too (exit $rrc)" test "$rrc" != 0
check_fail "corrupted stream: no VM runs on the destination" test -s "$T/corrupt.run/qemu.pid"
source_survived "corrupted stream"

# ---- (5) the destination's images differ from the source's (--verify; wrong-digest fault) -------
receiver digest "$T/dbase" || bail "receiver did not start"
handoff-vm migrate --run-dir "$T/src.run" --to "127.0.0.1:$(cat "$T/digest.port")" --fault wrong-digest 2>"$T/m6.log"
is "$?" 4 "images differ: migrate exits 4"
sed 's/^/# /' "$T/m6.log"
wait "$RPID"; is "$?" 6 "images differ: receiver refuses to resume (exit 6)"; RPID=
check "images differ: receiver says so" grep -q 'images differ from the source' "$T/digest.recv.log"
check_fail "images differ: no VM runs on the destination" test -s "$T/digest.run/qemu.pid"
source_survived "images differ"

# ---- (6) a source without the destination's key is refused at hello ------------------------------
head -c 32 /dev/urandom >"$T/key.dst"
head -c 32 /dev/urandom >"$T/key.src"
receiver keyed "$T/dbase" --key "$T/key.dst" || bail "receiver did not start"
handoff-vm migrate --run-dir "$T/src.run" --to "127.0.0.1:$(cat "$T/keyed.port")" --key "$T/key.src" 2>"$T/m7.log"
is "$?" 4 "wrong key: migrate exits 4"
sed 's/^/# /' "$T/m7.log"
check "wrong key: refused before any round" test "$(grep -c 'round ' "$T/m7.log")" = 0
wait "$RPID"; is "$?" 6 "wrong key: receiver exits 6"; RPID=
source_survived "wrong key"

# ---- and then a clean handoff still works ----------------------------------------------------------
receiver ok "$T/dbase" || bail "receiver did not start"
handoff-vm migrate --run-dir "$T/src.run" --to "127.0.0.1:$(cat "$T/ok.port")" 2>"$T/m5.log"
is "$?" 0 "after all that, a clean handoff succeeds"
wait "$RPID"; RPID=
c=$(vmt_counter "$slog")
check "destination counts on from $c" vmt_wait_counter "$T/ok.run/serial.log" $((c + 3)) 30
check "counter without gap or reset" vmt_counter_seq "$T/base/console.log" "$slog" "$T/ok.run/serial.log"
done_testing
