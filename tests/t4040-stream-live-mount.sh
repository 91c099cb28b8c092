#!/usr/bin/env bash
# t4040 — exporting from a live handoff-mount: the exporter flushes MOUNTPOINT/disk and /memory,
# asks the daemon for a checkpoint over the control socket (the VM would keep running) and reads
# the overlay directly. Named by mountpoint or by overlay directory; several rounds while the
# mount keeps taking writes; the receiver's images equal what the mount serves.
. "$HANDOFF_SRC/tests/lib.sh"
need_fuse
mk=$HANDOFF_BUILD/tests/mkoverlay

"$mk" mkbase disk.img 4M 1 && "$mk" mkbase mem.img 2M 2 || bail "bases"
mount_overlay ovl mnt --disk disk.img --memory mem.img || bail "cannot mount"

since=0
for r in 1 2 3; do
	for i in $(seq 20); do
		dd if=/dev/urandom of=mnt/disk bs=1000 count=$((RANDOM % 9 + 1)) seek=$((RANDOM % 4000)) conv=notrunc status=none
		dd if=/dev/urandom of=mnt/memory bs=512 count=$((RANDOM % 9 + 1)) seek=$((RANDOM % 4000)) conv=notrunc status=none
	done
	if [ $((r % 2)) = 1 ]; then target=mnt; else target=ovl; fi
	handoff-export --since $since --gen-file gen -o s$r.hs "$target" 2>err; rc=$?
	is "$rc" 0 "round $r: export from the live mount (named by $target)"
	grep -q "^handoff-export: generation $(cat gen)$" err; is "$?" 0 "round $r: reports the generation on stderr"
	check "round $r: the generation moved on" test "$(cat gen)" -gt "$since"
	if [ $r = 1 ]; then
		check "round $r: import" handoff-import -q --disk disk.img --memory mem.img dst s$r.hs
	else
		check "round $r: import" handoff-import -q dst s$r.hs
	fi
	"$mk" dump dst disk d.disk && "$mk" dump dst memory d.mem
	check "round $r: receiver disk equals the mounted disk" cmp -s d.disk mnt/disk
	check "round $r: receiver memory equals the mounted memory" cmp -s d.mem mnt/memory
	since=$(cat gen)
done
umount_overlay mnt || not_ok "unmount"
done_testing
