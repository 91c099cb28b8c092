#!/usr/bin/env bash
# t4070 — the mirror mount as a TCP receiver: rounds sent with handoff-export --to arrive on the
# running mirror and its files follow the source byte for byte; a sender with the wrong key is
# refused and changes nothing; a mirror killed in the middle of a transfer is restarted and the
# same export resumes to a byte-identical result.
. "$HANDOFF_SRC/tests/lib.sh"
need_fuse

head -c 16M /dev/urandom >base.disk
head -c 8M /dev/urandom >base.mem
head -c 32 /dev/urandom >psk
head -c 32 /dev/urandom >other.psk
check "source mount" mount_overlay src msrc --disk base.disk --memory base.mem
mkdir -p mdst
start_mirror() {
	rm -f port
	handoff-mirror --disk base.disk --memory base.mem --listen 127.0.0.1:0 --port-file port --key psk dst mdst 2>mirror.err &&
		T_MOUNTS+=(mdst)
}
check "mirror mount listening" start_mirror
port=$(cat port)

dd if=/dev/urandom of=msrc/disk bs=4096 seek=100 count=200 conv=notrunc 2>/dev/null
dd if=/dev/urandom of=msrc/memory bs=4096 seek=7 count=50 conv=notrunc 2>/dev/null
check "round 1 to the mirror" handoff-export -q --since 0 --gen-file gen --to 127.0.0.1:$port --key psk msrc
check "mirror disk follows round 1" cmp msrc/disk mdst/disk
check "mirror memory follows round 1" cmp msrc/memory mdst/memory

printf 'round two' | dd of=msrc/disk bs=1 seek=5000000 conv=notrunc 2>/dev/null
sum_before=$(cat mdst/disk mdst/memory | sha256sum)
handoff-export -q --since "$(cat gen)" --to 127.0.0.1:$port --key other.psk msrc 2>wrong.err
is "$?" 3 "a sender with the wrong key is refused (exit 3)"
is "$(cat mdst/disk mdst/memory | sha256sum)" "$sum_before" "and the mirror is unchanged"
check "round 2 with the right key" handoff-export -q --since "$(cat gen)" --gen-file gen --to 127.0.0.1:$port --key psk msrc
check "mirror follows round 2" cmp msrc/disk mdst/disk

# a big round, the mirror killed while it arrives, restarted, the export re-run
dd if=/dev/urandom of=msrc/disk bs=1M seek=4 count=8 conv=notrunc 2>/dev/null
since=$(cat gen)
handoff-export -q --since "$since" --rate-limit 4M --frame-size 64K --to 127.0.0.1:$port --key psk msrc 2>/dev/null &
epid=$!
sleep 1
kill -9 "$(awk '{print $1}' dst/lock)"
wait $epid; erc=$?
check "the interrupted export failed" [ "$erc" != 0 ]
fusermount3 -uz mdst
check "mirror restarted" start_mirror
port=$(cat port)
check "the same export resumes" handoff-export -q --since "$since" --to 127.0.0.1:$port --key psk msrc
check "mirror disk is byte-identical after the resume" cmp msrc/disk mdst/disk
check "mirror memory is byte-identical after the resume" cmp msrc/memory mdst/memory
check "unmount source" umount_overlay msrc
check "unmount mirror" umount_overlay mdst
done_testing
