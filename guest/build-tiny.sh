#!/usr/bin/env bash
# build-tiny.sh — builds the tiny test guest that handoff's tests boot under QEMU/TCG: the host's
# Debian cloud kernel, an initramfs with busybox-static, the virtio modules that kernel lacks
# built in, and guest/tiny-init.sh as /init, plus a small raw ext4 disk image that the guest mounts
# on /data. It exists so tests get a guest that boots in seconds and checks itself across a
# handoff, built only from Debian packages already on the machine, reproducibly and cached.
#
# Usage: guest/build-tiny.sh [OUTDIR]
#   OUTDIR defaults to ${HANDOFF_CACHE:-$HOME/.cache/handoff}/guest-tiny
# Outputs in OUTDIR: vmlinuz, initrd (uncompressed newc cpio), disk.img (raw ext4, sparse),
# guest.env (shell-sourceable: GUEST_KERNEL, GUEST_INITRD, GUEST_DISK, GUEST_RAM_MB,
# GUEST_CMDLINE, ...), stamp (cache key). Prints the path of guest.env on stdout, logs to stderr.
# Does nothing when the stamp matches (same script, init, kernel, busybox, knobs).
#
# Knobs (environment): HANDOFF_GUEST_KVER (default: newest /boot/vmlinuz-*-cloud-amd64),
# HANDOFF_TINY_DISK_MB (64), HANDOFF_TINY_BASE_MB (8: deterministic data baked into the disk
# image at /base, verified by the guest), HANDOFF_TINY_RAM_MB (128), SOURCE_DATE_EPOCH
# (default: the kernel image's mtime, which dpkg sets from the package).
# Needs: busybox-static, cpio, e2fsprogs (mkfs.ext4 -d, debugfs), coreutils; root or a readable
# /boot/vmlinuz-* (Debian installs it mode 0600).
set -euo pipefail

die() { echo "build-tiny: $*" >&2; exit 1; }
log() { echo "build-tiny: $*" >&2; }

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
out=${1:-${HANDOFF_CACHE:-${HOME:-/tmp}/.cache/handoff}/guest-tiny}
disk_mb=${HANDOFF_TINY_DISK_MB:-64}
base_mb=${HANDOFF_TINY_BASE_MB:-8}
ram_mb=${HANDOFF_TINY_RAM_MB:-128}

for c in cpio mkfs.ext4 debugfs md5sum sha256sum flock; do
	command -v "$c" >/dev/null || die "$c not found (apt-get install cpio e2fsprogs)"
done
busybox=
for b in /bin/busybox /usr/bin/busybox; do
	# ldd fails on a static binary ("not a dynamic executable")
	if [ -x "$b" ] && ! ldd "$b" >/dev/null 2>&1; then busybox=$b; break; fi
done
[ -n "$busybox" ] || die "no static busybox (apt-get install busybox-static)"

kver=${HANDOFF_GUEST_KVER:-}
if [ -z "$kver" ]; then
	kver=$(ls /boot/vmlinuz-*-cloud-amd64 2>/dev/null | sed 's|^/boot/vmlinuz-||' | sort -V | tail -n1)
fi
[ -n "$kver" ] || die "no /boot/vmlinuz-*-cloud-amd64 (apt-get install linux-image-cloud-amd64)"
kernel=/boot/vmlinuz-$kver
moddir=/lib/modules/$kver
[ -r "$kernel" ] || die "$kernel not readable (run as root)"
[ -f "$moddir/modules.dep" ] || die "$moddir/modules.dep missing"

# Which drivers the guest needs that are modules rather than built in: virtio-pci and virtio-blk
# for the disk, ext4 for its file system. modules.dep gives each one's dependencies.
wanted="virtio_pci virtio_blk ext4"
declare -A seen=()
order=()
modpath() { # NAME -> relative path in modules.dep, or "" when built in / absent
	local n=$1 alt=${1//_/-}
	grep -E "(^|/)($n|$alt)\.ko(\.xz|\.zst|\.gz)?:" "$moddir/modules.dep" | head -n1 | cut -d: -f1 || true
}
add_mod() { # depth-first: dependencies before the module
	local rel=$1 dep
	[ -n "${seen[$rel]:-}" ] && return 0
	seen[$rel]=1
	for dep in $(grep -E "^$rel:" "$moddir/modules.dep" | cut -d: -f2- || true); do add_mod "$dep"; done
	order+=("$rel")
}
for m in $wanted; do
	rel=$(modpath "$m")
	if [ -z "$rel" ]; then
		grep -qE "/($m|${m//_/-})\.ko" "$moddir/modules.builtin" || die "$m is neither a module nor built in"
		continue
	fi
	add_mod "$rel"
done
mods_hash=$(cd "$moddir" && { [ ${#order[@]} -eq 0 ] || sha256sum "${order[@]}"; } | sha256sum | cut -c1-64)

epoch=${SOURCE_DATE_EPOCH:-$(stat -c %Y "$kernel")}
# The cmdline: quiet console on ttyS0; panic=-1 + QEMU -no-reboot turns a guest panic into exit.
cmdline="console=ttyS0 quiet loglevel=1 panic=-1 rdinit=/init tsc=reliable init_on_alloc=0"

key=$({
	echo "v1 $kver $disk_mb $base_mb $ram_mb $epoch $cmdline"
	sha256sum "$here/build-tiny.sh" "$here/tiny-init.sh" "$busybox" | cut -c1-64
	sha256sum "$kernel" | cut -c1-64
	echo "$mods_hash ${order[*]:-}"
} | sha256sum | cut -c1-64)

mkdir -p "$out"
out=$(cd "$out" && pwd)
exec 9>"$out/.lock"
flock 9
if [ -f "$out/stamp" ] && [ "$(cat "$out/stamp")" = "$key" ] &&
	[ -f "$out/vmlinuz" ] && [ -f "$out/initrd" ] && [ -f "$out/disk.img" ] && [ -f "$out/guest.env" ]; then
	log "up to date: $out"
	echo "$out/guest.env"
	exit 0
fi
log "building in $out (kernel $kver)"
rm -f "$out/stamp"

work=$(mktemp -d "$out/.build.XXXXXX")
trap 'rm -rf "$work"' EXIT

# ---- initramfs -----------------------------------------------------------------------------
root=$work/initramfs
mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,dev,proc,sys,run,tmp,data,lib/modules}
cp "$busybox" "$root/bin/busybox"
# one symlink per applet, at the path busybox itself names
"$busybox" --list-full | while read -r p; do
	[ "$p" = bin/busybox ] && continue
	d=$(dirname "$p")
	rel=$(echo "$d" | sed -e 's|[^/]*|..|g')
	ln -sf "$rel/bin/busybox" "$root/$p"
done
for rel in "${order[@]:-}"; do
	[ -n "$rel" ] || continue
	case "$rel" in
	*.ko) cp "$moddir/$rel" "$root/lib/modules/" ;;
	*.ko.xz) xz -dc "$moddir/$rel" >"$root/lib/modules/$(basename "${rel%.xz}")" ;;
	*.ko.zst) zstd -qdc "$moddir/$rel" >"$root/lib/modules/$(basename "${rel%.zst}")" ;;
	*.ko.gz) gzip -dc "$moddir/$rel" >"$root/lib/modules/$(basename "${rel%.gz}")" ;;
	esac
	n=$(basename "$rel"); echo "${n%%.ko*}"
done >"$root/lib/modules/load-order"
install -m 0755 "$here/tiny-init.sh" "$root/init"
find "$root" -exec touch -h -d "@$epoch" {} +
(cd "$root" && find . -mindepth 1 | LC_ALL=C sort |
	cpio --quiet -o -H newc -R 0:0 --reproducible >"$work/initrd")

# ---- disk image ----------------------------------------------------------------------------
droot=$work/diskroot
mkdir -p "$droot/base"
# deterministic high-entropy data the guest verifies: the (compressed) kernel image's bytes,
# repeated as often as needed; no tool beyond coreutils
reps=$(( (base_mb * 1024 * 1024) / $(stat -c %s "$kernel") + 1 ))
for _ in $(seq "$reps"); do cat "$kernel"; done | head -c $((base_mb * 1024 * 1024)) >"$droot/base/blob.bin" || true
[ "$(stat -c %s "$droot/base/blob.bin")" = $((base_mb * 1024 * 1024)) ] || die "could not write base/blob.bin"
(cd "$droot/base" && md5sum blob.bin >MD5SUMS)
cat >"$droot/README" <<EOF
handoff tiny guest disk ($kver). /base is baked in at build time and verified by the guest;
disk.bin, churn.bin and counter are rewritten by the guest's workload at every boot.
EOF
find "$droot" -exec touch -h -d "@$epoch" {} +
truncate -s "${disk_mb}M" "$work/disk.img"
E2FSPROGS_FAKE_TIME=$epoch mkfs.ext4 -q -F -L handoff-tiny \
	-U 6a1d0ff0-7e57-4e57-8000-000000000001 \
	-E root_owner=0:0,hash_seed=6a1d0ff0-7e57-4e57-8000-000000000002,lazy_itable_init=0,lazy_journal_init=0 \
	-d "$droot" "$work/disk.img" >&2
# mke2fs 1.47.0 stamps populated inodes' ctime with the real clock: pin it (root is inode 2,
# lost+found 11, the -d files follow from 12)
nfiles=$(find "$droot" -mindepth 1 | wc -l)
for ino in 2 $(seq 11 $((11 + nfiles))); do echo "sif <$ino> ctime @$epoch"; done >"$work/debugfs.cmd"
E2FSPROGS_FAKE_TIME=$epoch debugfs -w -f "$work/debugfs.cmd" "$work/disk.img" >/dev/null 2>&1 ||
	die "debugfs could not pin inode times"

cp "$kernel" "$work/vmlinuz"
touch -d "@$epoch" "$work/vmlinuz" "$work/initrd" "$work/disk.img"

cat >"$work/guest.env" <<EOF
# guest.env — the handoff tiny test guest, written by guest/build-tiny.sh (shell-sourceable).
GUEST_KIND=tiny
GUEST_DIR=$out
GUEST_KERNEL=$out/vmlinuz
GUEST_INITRD=$out/initrd
GUEST_DISK=$out/disk.img
GUEST_DISK_FORMAT=raw
GUEST_DISK_MB=$disk_mb
GUEST_RAM_MB=$ram_mb
GUEST_KVER=$kver
GUEST_MODULES="$(tr '\n' ' ' <"$root/lib/modules/load-order" | sed 's/ $//')"
GUEST_CMDLINE="$cmdline"
EOF

for f in vmlinuz initrd disk.img guest.env; do mv -f "$work/$f" "$out/$f"; done
echo "$key" >"$out/stamp"
log "done: initrd $(stat -c %s "$out/initrd") bytes, disk ${disk_mb} MiB ($(du -k "$out/disk.img" | cut -f1) KiB used)"
echo "$out/guest.env"
