#!/usr/bin/env bash
# t5150 — handoff-inspect beside a live handoff-mount: it never takes the overlay lock (the mount
# keeps it and keeps serving), it sees what the mount committed (after fsync), classifies a chunk
# written back with the base's own bytes as reverted, and runs while the VM-side writes go on.
. "$HANDOFF_SRC/tests/lib.sh"
need_fuse
command -v handoff-mount >/dev/null || skip_all "handoff-mount not built"

head -c 4M /dev/urandom >base.disk
mount_overlay ovl mnt --disk base.disk --memory-size 1M || bail "mount failed"
pid=$(awk '{print $1}' ovl/lock)

dd if=/dev/urandom of=mnt/disk bs=4096 seek=10 count=3 conv=notrunc,fsync 2>/dev/null
dd if=base.disk of=mnt/disk bs=4096 skip=20 seek=20 count=1 conv=notrunc,fsync 2>/dev/null
dd if=/dev/zero of=mnt/memory bs=4096 seek=5 count=1 conv=notrunc,fsync 2>/dev/null
printf 'abc' | dd of=mnt/memory bs=1 seek=8192 conv=notrunc,fsync 2>/dev/null

list=$(handoff-inspect list --no-times --csv ovl)
is "$?" 0 "list on a live mount succeeds"
is "$(echo "$list" | awk -F, 'NR > 1 { print $1 ":" $2 ":" $7 }' | tr '\n' ' ')" \
	"disk:10:rest disk:11:rest disk:12:rest disk:20:reverted memory:2:rest memory:5:reverted " \
	"it sees every fsynced write, and the rewritten base chunk as reverted"
check "summary on a live mount succeeds" bash -c "handoff-inspect summary ovl >summary.txt"
check "heatmap on a live mount succeeds" handoff-inspect heatmap -o live.png ovl
is "$(awk '{print $1}' ovl/lock)" "$pid" "the mount still holds the overlay lock"
check "the daemon is alive" kill -0 "$pid"

for i in $(seq 0 40); do
	dd if=/dev/urandom of=mnt/disk bs=4096 seek=$((100 + i)) count=1 conv=notrunc,fsync 2>/dev/null
done &
writer=$!
fails=0
for _ in $(seq 10); do handoff-inspect list --json ovl >/dev/null || fails=$((fails + 1)); done
wait $writer
is "$fails" 0 "inspection while the guest writes never fails"
is "$(handoff-inspect list --image disk --offset 400K..564K --csv ovl | tail -n +2 | wc -l)" 41 \
	"and afterwards all 41 new chunks are there"
printf 'more' | dd of=mnt/disk bs=1 seek=0 conv=notrunc,fsync 2>/dev/null
check "the mount still takes writes" cmp -n 4 mnt/disk <(printf 'more')
check "unmount" umount_overlay mnt
done_testing
