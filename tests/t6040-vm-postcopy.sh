#!/usr/bin/env bash
# t6040-vm-postcopy.sh — post-copy handoff (handoff-vm migrate --postcopy always): the destination
# resumes the guest before the last round arrived; every access to a chunk still to come waits
# for it, and the chunks the guest touches are fetched from the source's chunk server ahead of
# the stream (slowed to 8 kB/s here with the test-only --fault slow-postcopy, so the guest really
# runs on a partial image). Checked: the guest goes on with its counter and its RAM/disk
# self-check after the handoff; the report shows post-copy with demand requests answered; and two
# failures leave the VM running on the source and none on the destination: (1) the post-copy
# stream corrupted on the wire (the mirror refuses it; the destination VM, already running, is
# killed); (2) the destination's handoff-vm killed while the guest runs there on a partial image
# (its watchdog kills that VM; the source resumes); (2b) the destination's QEMU killed while it
# runs on a partial image (every chunk still arrives, but the destination does not confirm: the
# source resumes). Then the guest moves on twice with no live round (--max-rounds 1): once with
# post-copy (auto picks it: everything is still to go), once with everything in the paused round;
# and (6) once more with a live round that the guest's writes outrun: abandoned, then post-copy.
set -u
HANDOFF_SRC=${HANDOFF_SRC:-$(cd "$(dirname "$0")/.." && pwd)}
. "$HANDOFF_SRC/tests/lib.sh"
. "$HANDOFF_SRC/guest/vmtest.sh"
need_fuse

T=$(mktemp -d /tmp/t6040.XXXXXX)
RPID=
cleanup() {
	[ -n "$RPID" ] && kill -9 "$RPID" 2>/dev/null
	for r in "$T"/*.run; do handoff-vm -q stop --run-dir "$r" 2>/dev/null; done
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
head -c 32 /dev/urandom >"$T/key"

handoff-vm -q start --base "$T/base" --overlay "$T/src.ovl" --mount "$T/src.mnt" --run-dir "$T/src.run" 2>"$T/start.log" ||
	{ sed 's/^/# /' "$T/start.log"; bail "handoff-vm start failed"; }
slog=$T/src.run/serial.log
src_pid=$(cat "$T/src.run/qemu.pid")
vmt_wait_counter "$slog" 3 30 || bail "source guest does not count"
ok "source VM runs (pid $src_pid)"

receiver() {
	local name=$1; shift
	rm -f "$T/$name.port"
	handoff-vm receive --base "$T/dbase" --overlay "$T/$name.ovl" --mount "$T/$name.mnt" --run-dir "$T/$name.run" \
		--listen 127.0.0.1:0 --port-file "$T/$name.port" --timeout 120 --key "$T/key" "$@" 2>"$T/$name.recv.log" &
	RPID=$!
	for _ in $(seq 150); do [ -s "$T/$name.port" ] && return 0; sleep 0.1; done
	return 1
}

# self_check NAME WHAT: the guest of NAME.run passes its full self-check (RAM and disk md5s, the
# counter); on failure its console's last lines are shown
self_check() {
	local reply
	reply=$("$VMCTL" send "$T/$1.run" check 30000)
	case "$reply" in
	"HANDOFF-CHECK ok"*) ok "$2: $reply" ;;
	*) not_ok "$2"; echo "#   got '$reply'"; tail -n 5 "$T/$1.run/serial.log" | sed 's/^/#   /' ;;
	esac
}

source_survived() {
	local what=$1 c
	check "$what: source qemu still alive" vmt_alive "$src_pid"
	is "$("$VMCTL" status "$T/src.run")" running "$what: source VM is running"
	c=$(vmt_counter "$slog")
	check "$what: source counter goes on past $c" vmt_wait_counter "$slog" $((c + 3)) 30
	self_check src "$what: source self-check passes"
}

# no_dst_vm NAME: the destination's QEMU (if it was started) is gone within 10 s
no_dst_vm() {
	local pidf=$T/$1.run/qemu.pid p
	[ -s "$pidf" ] || return 0
	p=$(cat "$pidf")
	for _ in $(seq 100); do vmt_alive "$p" || return 0; sleep 0.1; done
	return 1
}

# migrate_slowly NAME LOG: a slowed post-copy migrate to receiver NAME in the background (its pid
# in MPID, its stderr in LOG); true once the destination's VM resumed on a partial image
migrate_slowly() {
	local name=$1
	handoff-vm migrate --run-dir "$T/src.run" --to "127.0.0.1:$(cat "$T/$name.port")" --key "$T/key" \
		--postcopy always --fault slow-postcopy 2>"$2" &
	MPID=$!
	for _ in $(seq 300); do grep -q 'VM resumed here' "$T/$name.recv.log" && return 0; sleep 0.1; done
	return 1
}

# ---- (1) the post-copy stream corrupted on the wire ----------------------------------------------
receiver bad || bail "receiver did not start"
handoff-vm migrate --run-dir "$T/src.run" --to "127.0.0.1:$(cat "$T/bad.port")" --key "$T/key" --postcopy always \
	--fault corrupt-postcopy 2>"$T/m1.log"
is "$?" 4 "corrupt post-copy stream: migrate exits 4 (source resumed)"
wait "$RPID"; rrc=$?; RPID=
check "corrupt post-copy stream: receiver fails ($rrc)" test "$rrc" -ne 0
sed 's/^/# /' "$T/m1.log" | tail -n 4
check "corrupt post-copy stream: it was a post-copy handoff" grep -q 'post-copy: the destination awaits' "$T/m1.log"
check "corrupt post-copy stream: the mirror refused it" grep -q "the receiver refused the stream" "$T/m1.log"
check "corrupt post-copy stream: no VM left on the destination" no_dst_vm bad
source_survived "corrupt post-copy stream"

# ---- (2) the destination's handoff-vm dies while its VM runs on a partial image ------------------
receiver dead || bail "receiver did not start"
check "destination killed: its VM had resumed on a partial image" migrate_slowly dead "$T/m2.log"
kill -9 "$RPID" 2>/dev/null; wait "$RPID" 2>/dev/null; RPID=
wait "$MPID"
is "$?" 4 "destination killed: migrate exits 4 (source resumed)"
sed 's/^/# /' "$T/m2.log" | tail -n 3
check "destination killed: its watchdog killed the VM there" no_dst_vm dead
fusermount3 -uz "$T/dead.mnt" 2>/dev/null
source_survived "destination killed"

# ---- (2b) the destination's QEMU dies while it runs on a partial image ------------------------------
# every chunk still arrives, but the source must not let its copy go: it resumes
receiver qdead || bail "receiver did not start"
check "destination QEMU killed: its VM had resumed on a partial image" migrate_slowly qdead "$T/m2b.log"
kill -9 "$(cat "$T/qdead.run/qemu.pid" 2>/dev/null)" 2>/dev/null
wait "$MPID"
is "$?" 4 "destination QEMU killed: migrate exits 4 (source resumed)"
wait "$RPID"; rrc=$?; RPID=
check "destination QEMU killed: receiver fails ($rrc)" test "$rrc" -ne 0
check "destination QEMU killed: the receiver said why" grep -q "the VM here is not running" "$T/qdead.recv.log"
sed 's/^/# /' "$T/m2b.log" | tail -n 3
fusermount3 -uz "$T/qdead.mnt" 2>/dev/null
source_survived "destination QEMU killed"

# ---- (3) a post-copy handoff ---------------------------------------------------------------------
receiver dst || bail "receiver did not start"
c_before=$(vmt_counter "$slog")
if handoff-vm migrate --run-dir "$T/src.run" --to "127.0.0.1:$(cat "$T/dst.port")" --key "$T/key" --mode delta-zstd3 \
	--postcopy always --fault slow-postcopy --report "$T/report.json" 2>"$T/migrate.log"; then
	ok "post-copy handoff succeeded"
else
	not_ok "post-copy handoff succeeded"; sed 's/^/# /' "$T/migrate.log" "$T/dst.recv.log"
fi
wait "$RPID"; is "$?" 0 "receiver exited 0"; RPID=
sed 's/^/# /' "$T/migrate.log"
if python3 - "$T/report.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
assert r["handed_off"] is True and r["postcopy"] is True, "handed off with post-copy"
assert r["postcopy_chunks"] > 0, "chunks came after the resume"
assert r["postcopy_demand_requests"] > 0 and r["postcopy_demand_chunks"] >= r["postcopy_demand_requests"], "demand"
assert r["rounds"][-1]["live"] is False and r["rounds"][0]["live"] is True
streamed = r["rounds"][-1]["memory_chunks"] + r["rounds"][-1]["disk_chunks"]
# the stream leaves out what the chunk server delivered first; between them, every chunk came
assert streamed <= r["postcopy_chunks"], "the stream carried no more than the manifest"
assert streamed + r["postcopy_demand_chunks"] >= r["postcopy_chunks"], "every chunk came one way or the other"
assert 0 < r["downtime_seconds"] < r["postcopy_seconds"], "resumed before the last chunk arrived"
# the stream gives the link to the chunk server's answers while the VM waits for them, but only
# for part of its own time (it is never starved)
assert 0 <= r["postcopy_stream_held_seconds"] <= r["rounds"][-1]["seconds"], "stream held within its time"
PY
then ok "report: post-copy, demand requests answered, resumed before the last chunk arrived"
else not_ok "report: post-copy consistent"; sed 's/^/# /' "$T/report.json"; fi
check "the chunk server answered requests" grep -Eq 'post-copy: the destination ran .* [1-9][0-9]* requests' "$T/migrate.log"
# the stream starts once the destination runs: its answers to QEMU's faults never queue behind it
check "the stream began after the destination reported RUNNING" \
	grep -q 'post-copy: the VM runs on the destination after .* s of downtime; streaming the rest' "$T/migrate.log"

check_fail "source qemu is gone" vmt_alive "$src_pid"
check_fail "source mount is gone" mountpoint -q "$T/src.mnt"
dlog=$T/dst.run/serial.log
is "$("$VMCTL" status "$T/dst.run")" running "destination VM runs"
last=$(vmt_counter "$slog")
check "destination counter goes on past the source's last ($last)" vmt_wait_counter "$dlog" $((last + 5)) 30
check "no reboot on the destination" test "$(grep -c HANDOFF-BOOT "$dlog")" = 0
self_check dst "guest self-check after the post-copy handoff (RAM + disk md5s)"
check "no failed self-check on any console" test "$(cat "$slog" "$dlog" | grep -c 'HANDOFF-CHECK fail')" = 0

# ---- (4), (5) no live round (--max-rounds 1): the VM is paused at once -------------------------------
# handoff_no_live FROM TO POSTCOPY WANT_PC: hand the guest of FROM.run over to a new receiver TO with
# --max-rounds 1; the report has one round, paused, post-copy as WANT_PC says; the guest goes on
handoff_no_live() {
	local from=$1 to=$2 pc=$3 want=$4 flog=$T/$1.run/serial.log tlog=$T/$2.run/serial.log last
	receiver "$to" || bail "receiver $to did not start"
	if handoff-vm migrate --run-dir "$T/$from.run" --to "127.0.0.1:$(cat "$T/$to.port")" --key "$T/key" \
		--max-rounds 1 --postcopy "$pc" --report "$T/$to.json" 2>"$T/$to.migrate.log"; then
		ok "--max-rounds 1 --postcopy $pc: handoff succeeded"
	else
		not_ok "--max-rounds 1 --postcopy $pc: handoff succeeded"; sed 's/^/# /' "$T/$to.migrate.log" "$T/$to.recv.log"
	fi
	wait "$RPID"; is "$?" 0 "  ... receiver exited 0"; RPID=
	if python3 - "$T/$to.json" "$want" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
assert r["handed_off"] is True
assert r["postcopy"] is (sys.argv[2] == "true"), "post-copy as expected"
assert len(r["rounds"]) == 1 and r["rounds"][0]["live"] is False, "one round, not live"
assert r["rounds"][0]["memory_chunks"] + r["rounds"][0]["disk_chunks"] + r.get("postcopy_demand_chunks", 0) > 0
PY
	then ok "  ... report: one round, paused, post-copy $want"
	else not_ok "  ... report: one round, paused, post-copy $want"; sed 's/^/# /' "$T/$to.json"; fi
	check_fail "  ... no live round was logged" grep -q 'round [0-9]* (live)' "$T/$to.migrate.log"
	last=$(vmt_counter "$flog")
	check "  ... the counter goes on past the previous host's last ($last)" vmt_wait_counter "$tlog" $((last + 5)) 30
	self_check "$to" "  ... guest self-check passes"
}
# auto goes post-copy when there is no live round to judge by
handoff_no_live dst back auto true
handoff_no_live back back2 never false

# ---- (6) a live round abandoned: the guest rewrites faster than the round sends ---------------------
# The round goes at 64 kB/s; at 2 s into it the guest has rewritten some of its chunks, more than
# the tiny fraction asked for here (the default is half of what the round sends): the round is
# abandoned, the VM paused, and everything goes by post-copy.
receiver back3 || bail "receiver back3 did not start"
last=$(vmt_counter "$T/back2.run/serial.log")
if handoff-vm migrate --run-dir "$T/back2.run" --to "127.0.0.1:$(cat "$T/back3.port")" --key "$T/key" \
	--rate-limit 64k --abandon-live 0.000001 --report "$T/back3.json" 2>"$T/back3.migrate.log"; then
	ok "--abandon-live: handoff succeeded"
else
	not_ok "--abandon-live: handoff succeeded"; sed 's/^/# /' "$T/back3.migrate.log" "$T/back3.recv.log"
fi
wait "$RPID"; is "$?" 0 "  ... receiver exited 0"; RPID=
check "  ... the live round was abandoned (logged)" grep -q 'round 1 (live) abandoned after' "$T/back3.migrate.log"
check_fail "  ... and no error logged for it" grep -q 'error' "$T/back3.migrate.log"
if python3 - "$T/back3.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
a = r["live_round_abandoned"]
assert r["handed_off"] is True and r["postcopy"] is True, "handed off by post-copy"
assert a and a["after_seconds"] >= 1.9 and a["rewritten_chunks"] > 0 and a["round_chunks"] > 0, a
assert len(r["rounds"]) == 1 and r["rounds"][0]["live"] is False and r["rounds"][0]["since"] == 0, r["rounds"]
PY
then ok "  ... report: abandoned after 2 s, then one round from the base, post-copy"
else not_ok "  ... report: abandoned after 2 s, then one round from the base, post-copy"; sed 's/^/# /' "$T/back3.json"; fi
check "  ... the counter goes on past the previous host's last ($last)" vmt_wait_counter "$T/back3.run/serial.log" $((last + 5)) 30
self_check back3 "  ... guest self-check passes"

check "no failed self-check on any console" test "$(cat "$T"/*.run/serial.log | grep -c 'HANDOFF-CHECK fail')" = 0
check "handoff-vm stop on the last destination" handoff-vm stop --run-dir "$T/back3.run"
done_testing
