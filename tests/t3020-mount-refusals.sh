#!/usr/bin/env bash
# t3020 — every refusal of handoff-mount gives one line on stderr and its documented exit code
# (handoff-mount(8), EXIT STATUS), and leaves nothing mounted.
. "$HANDOFF_SRC/tests/lib.sh"
need_fuse

head -c 1M /dev/urandom >base.disk
head -c 1M /dev/urandom >other.disk
head -c 2M /dev/urandom >big.disk
mkdir mnt full; touch full/x

# refuse CODE PATTERN DESC ARGS...: exit code, one stderr line matching PATTERN
refuse() {
	local code=$1 pat=$2 desc=$3; shift 3
	handoff-mount "$@" 2>err >/dev/null
	local rc=$?
	if [ $rc = "$code" ] && [ "$(wc -l <err)" = 1 ] && grep -q -- "$pat" err; then ok "$desc"
	else not_ok "$desc"; echo "#   exit $rc (want $code), stderr:"; sed 's/^/#     /' err; fi
	mountpoint -q "${REFUSE_MNT:-mnt}" && { fusermount3 -u "${REFUSE_MNT:-mnt}"; not_ok "$desc left a mount"; }
}

refuse 3 "cannot open disk base 'missing.disk'" "missing base" --disk missing.disk --memory-size 1M ovl mnt
refuse 2 "mountpoint 'nowhere' does not exist" "missing mountpoint" --disk base.disk --memory-size 1M ovl nowhere
refuse 2 "mountpoint 'full' is not empty" "non-empty mountpoint" --disk base.disk --memory-size 1M ovl full
refuse 1 "chunk size 3072 is not a power of two" "bad chunk size" --disk base.disk --memory-size 1M --chunk-size 3K ovl mnt
refuse 1 "exclude each other" "--memory with --memory-size" --disk base.disk --memory base.disk --memory-size 1M ovl mnt
refuse 1 "expected OVERLAY_DIR and MOUNTPOINT" "missing arguments" --disk base.disk
refuse 1 "creating overlay 'newovl' needs base images" "new overlay without bases" newovl mnt

check "create the overlay" mount_overlay ovl mnt --disk base.disk --memory-size 1M
mkdir mnt2
REFUSE_MNT=mnt2 refuse 4 "overlay 'ovl' is in use: mounted on '$PWD/mnt'" "second mount of the same overlay" ovl mnt2
check "unmount" umount_overlay mnt

refuse 3 "has size 2097152, the overlay was created over 1048576 bytes" "base of another size" --disk big.disk --memory-size 1M ovl mnt
refuse 3 "differs from the base the overlay was created over" "base with other content" --disk other.disk --memory-size 1M ovl mnt
refuse 3 "created with size 1048576, not 2097152" "memory size differs" --disk base.disk --memory-size 2M ovl mnt
refuse 3 "created over an all-zero base, not a base file" "memory base kind differs" --disk base.disk --memory base.disk ovl mnt
# the base changes content behind the overlay's back, keeping its size: detected on remount
cp base.disk saved.disk
printf 'X' | dd of=base.disk bs=1 seek=1000 conv=notrunc 2>/dev/null
refuse 3 "differs from the base the overlay was created over" "base modified in place" ovl mnt
cp saved.disk base.disk

# a stale mountpoint: the daemon was killed
check "mount again" mount_overlay ovl mnt
kill -9 "$(awk '{print $1}' ovl/lock)"; sleep 0.3
refuse 2 "is a stale FUSE mount" "stale mountpoint" ovl mnt
fusermount3 -uz mnt
check "mount after clearing the stale mount" mount_overlay ovl mnt
check "unmount" umount_overlay mnt
done_testing
