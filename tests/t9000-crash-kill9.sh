#!/usr/bin/env bash
# t9000 — crash safety: a writer fsyncs and logs acknowledged blocks while the daemon is killed
# with -9 at random moments; after each remount nothing acknowledged is lost, nothing is torn,
# and the index passes integrity_check. 20 rounds (200 with make test-long).
. "$HANDOFF_SRC/tests/lib.sh"
need_fuse
command -v sqlite3 >/dev/null || skip_all "sqlite3 CLI not installed (make deps)"
cw=$HANDOFF_BUILD/tests/crashwriter
rounds=20; [ "${HANDOFF_LONG:-0}" = 1 ] && rounds=200

head -c 16M /dev/urandom >base.disk
: >acks
for r in $(seq "$rounds"); do
	if [ "$r" = 1 ]; then args=(--disk base.disk --memory-size 4M --commit-interval $((100 + RANDOM % 900))); else args=(); fi
	if ! mount_overlay ovl mnt "${args[@]}"; then not_ok "mount round $r"; break; fi
	pid=$(awk '{print $1}' ovl/lock)
	"$cw" write mnt/disk acks "$r" 4096 &
	wpid=$!
	sleep "0.$((RANDOM % 6 + 1))"
	if ! kill -9 "$pid"; then not_ok "round $r: daemon $pid (from the lock file) was not running"; kill -9 $wpid; wait $wpid; break; fi
	wait $wpid 2>/dev/null
	fusermount3 -uz mnt
	for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.02; done
	if ! mount_overlay ovl mnt; then not_ok "remount after kill -9 (round $r)"; break; fi
	out=$("$cw" verify mnt/disk acks 4096 2>&1); rc=$?
	if [ $rc = 0 ]; then ok "round $r: every acknowledged block survived ($(echo "$out" | grep -o '[0-9]* acknowledgements'))"
	else not_ok "round $r: acknowledged data lost"; echo "$out" | head -5 | sed 's/^/#   /'; fi
	ic=$(sqlite3 "file:ovl/index.db?mode=ro" 'PRAGMA integrity_check')
	[ "$ic" = ok ] || { not_ok "round $r: integrity_check says $ic"; }
	umount_overlay mnt || { not_ok "unmount round $r"; break; }
done
done_testing
