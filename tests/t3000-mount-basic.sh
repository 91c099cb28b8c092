#!/usr/bin/env bash
# t3000 — the mount's basic contract: sizes, reads from the base, copy-on-write writes, status
# counts, checkpoints, remount continuing with the modified chunks, readiness in the foreground,
# clean unmount by fusermount3 and by SIGTERM, and a base that is never written.
. "$HANDOFF_SRC/tests/lib.sh"
need_fuse

head -c 8M /dev/urandom >base.disk
head -c 4M /dev/urandom >base.mem
sha_disk=$(sha256sum <base.disk)
sha_mem=$(sha256sum <base.mem)

check "mount in the background returns once mounted" mount_overlay ovl mnt --disk base.disk --memory base.mem
is "$(stat -c %s mnt/disk) $(stat -c %s mnt/memory)" "8388608 4194304" "files have the base sizes"
check "disk reads as the base" cmp mnt/disk base.disk
check "memory reads as the base" cmp mnt/memory base.mem

cp base.disk shadow.disk
printf 'hello' | dd of=mnt/disk bs=1 seek=100 conv=notrunc 2>/dev/null
printf 'hello' | dd of=shadow.disk bs=1 seek=100 conv=notrunc 2>/dev/null
dd if=/dev/zero of=mnt/disk bs=4096 seek=10 count=3 conv=notrunc,fsync 2>/dev/null
dd if=/dev/zero of=shadow.disk bs=4096 seek=10 count=3 conv=notrunc 2>/dev/null
check "partial and whole-chunk writes read back" cmp mnt/disk shadow.disk
status=$(handoff-mount --status ovl)
is "$(echo "$status" | awk '$1=="disk.modified_chunks"{print $2}')" 4 "status counts 4 modified disk chunks"
is "$(echo "$status" | awk '$1=="memory.modified_chunks"{print $2}')" 0 "and no memory chunks"
is "$(echo "$status" | awk '$1=="state"{print $2}')" mounted "status says mounted"
is "$(handoff-mount --checkpoint ovl)" 1 "checkpoint closes generation 1"
printf 'x' | dd of=mnt/memory bs=1 seek=4095 conv=notrunc,fsync 2>/dev/null
status=$(handoff-mount --status ovl)
is "$(echo "$status" | grep '^gen ' | sort | tr '\n' ' ')" "gen 1 disk 4 gen 2 memory 1 " "per-generation counts"

check "unmount with fusermount3" umount_overlay mnt
is "$(handoff-mount --status ovl | awk '$1=="state"{print $2}')" unmounted "status works unmounted"
check "remount without naming the bases" mount_overlay ovl mnt
check "remount continues with the modified chunks" cmp mnt/disk shadow.disk

# SIGTERM unmounts cleanly after flushing what the kernel still caches
pid=$(awk '{print $1}' ovl/lock)
printf 'after-term' | dd of=mnt/disk bs=1 seek=5000 conv=notrunc 2>/dev/null
printf 'after-term' | dd of=shadow.disk bs=1 seek=5000 conv=notrunc 2>/dev/null
kill -TERM "$pid"
for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
check "SIGTERM ends the daemon" bash -c "! kill -0 $pid 2>/dev/null"
check "and unmounts" bash -c "! mountpoint -q mnt"

# foreground with a ready fd: the test blocks on the pipe instead of sleeping
exec 5< <(handoff-mount -f --ready-fd 3 ovl mnt 3>&1 >/dev/null 2>fg.err)
read -r -t 20 ready <&5
is "$ready" ready "foreground mount signals readiness"
T_MOUNTS+=(mnt)
check "unflushed write before SIGTERM survived" cmp mnt/disk shadow.disk
check "unmount the foreground mount" umount_overlay mnt
check "disk base is byte-identical afterwards" [ "$(sha256sum <base.disk)" = "$sha_disk" ]
check "memory base is byte-identical afterwards" [ "$(sha256sum <base.mem)" = "$sha_mem" ]

# a fragmented dirty pattern: every other chunk of 4 MiB, so one 1 MiB readahead spans hundreds
# of runs of base and overlay; none may come back short (FUSE zero-fills after a short read)
check "mount for the fragmented pattern" mount_overlay ovl mnt
for ((c = 0; c < 1024; c += 2)); do printf 'F%07d' $c; done | fold -w8 | while read -r w; do
	c=${w#F}; c=$((10#$c)); printf '%s' "$w" | dd of=mnt/disk bs=4096 seek=$c conv=notrunc 2>/dev/null
	printf '%s' "$w" | dd of=shadow.disk bs=4096 seek=$c conv=notrunc 2>/dev/null
done
check "unmount" umount_overlay mnt
check "remount (cold page cache)" mount_overlay ovl mnt
check "a fragmented pattern reads back whole" cmp mnt/disk shadow.disk
check "unmount" umount_overlay mnt

# --memory-size: an all-zero memory base
check "mount with --memory-size" mount_overlay ovl2 mnt2 --disk base.disk --memory-size 2M --chunk-size 64K
check "zero memory reads as zeroes" cmp mnt2/memory <(head -c 2M /dev/zero)
is "$(handoff-mount --status ovl2 | awk '$1=="chunk_size"{print $2}')" 65536 "chunk size is configurable"
check "unmount" umount_overlay mnt2
done_testing
