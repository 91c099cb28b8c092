#!/usr/bin/env bash
# t3010 — random pread/pwrite/mmap/fsync/discard against a shadow copy (a small fsx), on both
# images, across remounts and chunk sizes; then cmp of both images, and the bases untouched.
. "$HANDOFF_SRC/tests/lib.sh"
need_fuse
fsx=$HANDOFF_BUILD/tests/fsx
ops=${FSX_OPS:-1500}
[ "${HANDOFF_LONG:-0}" = 1 ] && ops=20000

head -c 12M /dev/urandom >base.disk
sha_disk=$(sha256sum <base.disk)
for cs in 4K 16K; do
	rm -rf ovl; cp base.disk cur.disk; head -c 6M /dev/zero >cur.mem
	for round in 1 2 3; do
		if [ $round = 1 ]; then args=(--disk base.disk --memory-size 6M --chunk-size $cs); else args=(); fi
		check "mount (chunk $cs, round $round)" mount_overlay ovl mnt "${args[@]}"
		check "fsx on disk (chunk $cs, round $round)" "$fsx" mnt/disk cur.disk $round$cs $ops --shadow-out cur.disk
		check "fsx on memory (chunk $cs, round $round)" "$fsx" mnt/memory cur.mem 7$round $ops --shadow-out cur.mem
		check "unmount" umount_overlay mnt
	done
	check "remount (chunk $cs)" mount_overlay ovl mnt
	check "disk matches the shadow after remounts (chunk $cs)" cmp mnt/disk cur.disk
	check "memory matches the shadow after remounts (chunk $cs)" cmp mnt/memory cur.mem
	check "unmount" umount_overlay mnt
done
check "base is byte-identical" [ "$(sha256sum <base.disk)" = "$sha_disk" ]
done_testing
