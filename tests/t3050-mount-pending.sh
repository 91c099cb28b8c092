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
T_MOUNTS+=("$PWD/work/mnt")      # unmounted by the trap if pendfs dies mid-way
"$pendfs" "$PWD/work"
exit $?
