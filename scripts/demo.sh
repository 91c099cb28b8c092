#!/usr/bin/env bash
# demo.sh — the README's main job (make demo). Stage 1 of the product: build a base disk image
# holding an ext4 filesystem, mount it copy-on-write with handoff-mount, change files inside
# the guest filesystem (debugfs writes through the mount), and show what the tracker recorded,
# per generation. Everything happens in a temp dir that is removed afterwards.
set -euo pipefail
: "${HANDOFF_BUILD:=$(cd "$(dirname "$0")/.." && pwd)/build}"
export PATH="$HANDOFF_BUILD/bin:$PATH:/sbin:/usr/sbin"
work=$(mktemp -d /tmp/handoff-demo.XXXXXX)
cleanup() { fusermount3 -uz "$work/mnt" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
say() { printf '\n\033[1m== %s\033[0m\n' "$*" >&2; }

say "building a 64 MiB ext4 base image holding /usr/share/doc/[a-f]*"
mkdir -p "$work/tree" "$work/mnt"
cp -r /usr/share/doc/[a-f]* "$work/tree/" 2>/dev/null || true
mkfs.ext4 -q -F -d "$work/tree" "$work/base.img" 64M
ls -l "$work/base.img" >&2

say "mounting it copy-on-write (disk) with a 32 MiB all-zero memory image"
handoff-mount --disk "$work/base.img" --memory-size 32M "$work/ovl" "$work/mnt"
ls -l "$work/mnt" >&2

say "generation 1: the guest writes two files"
printf 'hello from generation 1\n' >"$work/hello.txt"
head -c 200000 /dev/urandom >"$work/blob.bin"
debugfs -w -R "write $work/hello.txt /hello.txt" "$work/mnt/disk" >/dev/null 2>&1
debugfs -w -R "write $work/blob.bin /blob.bin" "$work/mnt/disk" >/dev/null 2>&1
dd if=/dev/urandom of="$work/mnt/memory" bs=4096 count=64 seek=1000 conv=notrunc,fsync status=none
echo "checkpoint closed generation $(handoff-mount --checkpoint "$work/ovl")" >&2

say "generation 2: the guest changes one file"
debugfs -w -R "rm /hello.txt" "$work/mnt/disk" >/dev/null 2>&1
printf 'hello again, generation 2\n' >"$work/hello.txt"
debugfs -w -R "write $work/hello.txt /hello.txt" "$work/mnt/disk" >/dev/null 2>&1

say "what the tracker recorded (handoff-mount --status)"
handoff-mount --status "$work/ovl" >&2
say "the guest filesystem through the mount"
debugfs -R "cat /hello.txt" "$work/mnt/disk" >&2 2>/dev/null
say "the base image is untouched"
debugfs -R "ls /" "$work/base.img" 2>/dev/null | grep -c hello.txt | sed 's/^/hello.txt entries in the base: /' >&2 || true
fusermount3 -u "$work/mnt"
say "done: unmounted; the overlay held $(du -sh "$work/ovl" | cut -f1) for a 64 MiB disk"
