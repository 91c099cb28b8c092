#!/usr/bin/env bash
# t3050 — post-copy on the mount (fs.h, "post-copy"): a request that touches a chunk that has not
# arrived waits for it and asks for it once; reads then see the arrived bytes, writes and
# discards land on top of them, mmap faults on guest RAM wait the same way, and after a failed
# transfer such requests get EIO at once. The checks run in tests/helpers/pendfs.c, which mounts
# in-process (the API is a library one); its TAP lines are this test's.
. "$HANDOFF_SRC/tests/lib.sh"
need_fuse
pendfs=$HANDOFF_BUILD/tests/pendfs
[ -x "$pendfs" ] || bail "$pendfs is not built"

mkdir work
"$pendfs" "$PWD/work"
rc=$?
if mountpoint -q work/mnt; then
	# pendfs aborts its own mount when it dies of a signal; this is the last resort
	echo "# pendfs left its mount behind"
	umount -f work/mnt 2>/dev/null || fusermount3 -uz work/mnt
	[ $rc = 0 ] && rc=1
fi
exit $rc
