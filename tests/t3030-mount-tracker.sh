#!/usr/bin/env bash
# t3030 — the tracker records exactly the chunks that were written, with the generation of their
# last write, across checkpoints and a remount; writes spanning chunks (merged up to 1 MiB, as
# guest RAM arrives) are split and tracked per chunk; the index passes integrity_check.
. "$HANDOFF_SRC/tests/lib.sh"
need_fuse
command -v sqlite3 >/dev/null || skip_all "sqlite3 CLI not installed (make deps)"

head -c 4M /dev/urandom >base.disk
check "mount" mount_overlay ovl mnt --disk base.disk --memory-size 8M
declare -A want   # "image idx" -> generation
w() {  # w IMAGE OFFSET LENGTH GEN: write LENGTH random bytes and record the chunks it touches
	head -c "$3" /dev/urandom | dd of="mnt/$1" bs=1M seek="$2" oflag=seek_bytes conv=notrunc 2>/dev/null
	local c; for ((c = $2 / 4096; c <= ($2 + $3 - 1) / 4096; c++)); do want["$1 $c"]=$4; done
}
w disk 0 1 1; w disk 4095 2 1; w disk 81920 4096 1; w memory 1048576 1048576 1; w memory 5000 10 1
sync mnt/disk mnt/memory 2>/dev/null || { dd if=/dev/null of=mnt/disk conv=notrunc,fsync 2>/dev/null; }
is "$(handoff-mount --checkpoint ovl)" 1 "checkpoint 1"
w disk 4095 2 2; w memory 3000000 70000 2
is "$(handoff-mount --checkpoint ovl)" 2 "checkpoint 2"
check "unmount" umount_overlay mnt
check "remount" mount_overlay ovl mnt
w disk 2000000 12345 3; w memory 0 1 3
dd if=/dev/null of=mnt/memory conv=notrunc,fsync 2>/dev/null
handoff-mount --status ovl >/dev/null   # asks the live daemon to commit

got=$(sqlite3 "file:ovl/index.db?mode=ro" "SELECT CASE image WHEN 0 THEN 'disk' ELSE 'memory' END || ' ' || idx || ' ' || gen FROM chunks ORDER BY image, idx")
exp=$(for k in "${!want[@]}"; do echo "$k ${want[$k]}"; done | sort -k1,1 -k2,2n)
got=$(echo "$got" | sort -k1,1 -k2,2n)
if [ "$got" = "$exp" ]; then ok "index holds exactly the written chunks with their generations ($(echo "$exp" | wc -l) chunks)"
else not_ok "index holds exactly the written chunks"; diff <(echo "$exp") <(echo "$got") | head -20 | sed 's/^/#   /'; fi
is "$(sqlite3 "file:ovl/index.db?mode=ro" 'SELECT writes FROM chunks WHERE image=0 AND idx=20')" 1 "write count of a chunk written once"
is "$(sqlite3 "file:ovl/index.db?mode=ro" 'SELECT writes >= 3 FROM chunks WHERE image=0 AND idx=0')" 1 "write count of a chunk written three times"
is "$(sqlite3 "file:ovl/index.db?mode=ro" 'SELECT count(*) FROM chunks WHERE first_ns > last_ns OR first_ns = 0')" 0 "first <= last write time"
is "$(sqlite3 "file:ovl/index.db?mode=ro" 'PRAGMA integrity_check')" ok "integrity_check"
is "$(sqlite3 "file:ovl/index.db?mode=ro" 'PRAGMA journal_mode')" wal "index is in WAL mode"
check "unmount" umount_overlay mnt

# readers in other processes while the (detached) daemon commits every 50 ms: sqlite state must
# never have crossed the daemon's fork (it once died with SIGBUS in the WAL here)
check "mount a fresh overlay with fast commits" mount_overlay ovl2 mnt --disk base.disk --memory-size 1M --commit-interval 50
pid=$(awk '{print $1}' ovl2/lock)
( for _ in $(seq 200); do sqlite3 "file:ovl2/index.db?mode=ro" 'SELECT count(*) FROM chunks' >/dev/null 2>&1; done ) &
check "fsx with concurrent index readers" "$HANDOFF_BUILD/tests/fsx" mnt/disk base.disk 9 1500 --no-punch
wait
check "the daemon survived the readers" kill -0 "$pid"
check "unmount" umount_overlay mnt
done_testing
