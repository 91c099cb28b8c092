#!/usr/bin/env bash
# t4050 — handoff-import into an overlay that a mirror mount (handoff-mirror) owns: the stream is
# handed to the daemon over the control socket, applied while the mount serves, and the mounted
# files show the sender's images at once; a stale stream is refused with the usual exit status.
. "$HANDOFF_SRC/tests/lib.sh"
need_fuse
command -v handoff-mirror >/dev/null || skip_all "handoff-mirror not built"
mk=$HANDOFF_BUILD/tests/mkoverlay

"$mk" mkbase disk.img 2M 1 && "$mk" mkbase mem.img 1M 2 || bail "bases"
"$mk" create src disk.img mem.img || bail "overlay"
mkdir -p mnt
handoff-mirror -q --disk disk.img --memory mem.img dst mnt || bail "cannot start the mirror"
T_MOUNTS+=(mnt)
since=0
for r in 1 2 3; do
	"$mk" write src $r 60
	handoff-export -q --since $since --gen-file gen src -o s$r.hs 2>/dev/null || bail "export $r"
	if [ $((r % 2)) = 1 ]; then handoff-import dst s$r.hs 2>err; else handoff-import dst - <s$r.hs 2>err; fi
	is "$?" 0 "round $r: handed to the mirror and applied"
	grep -q "the mirror serving 'dst' took the stream: applied $since $(cat gen)" err
	is "$?" 0 "round $r: reports what the mirror applied"
	"$mk" dump src disk a.disk && "$mk" dump src memory a.mem
	check "round $r: the mounted disk is the sender's" cmp -s a.disk mnt/disk
	check "round $r: the mounted memory is the sender's" cmp -s a.mem mnt/memory
	since=$(cat gen)
done
handoff-import dst s1.hs 2>err; rc=$?
is "$rc" 5 "a stale stream is refused through the mirror (exit 5)"
grep -q "the mirror serving 'dst' refused the stream" err; is "$?" 0 "and says so"
handoff-import dst s3.hs 2>err; is "$?" 0 "the last stream again is a no-op"
umount_overlay mnt || not_ok "unmount"
done_testing
