#!/usr/bin/env bash
# build-realistic.sh — builds the realistic demo/benchmark guest: a Debian 12 minbase made with
# debootstrap from the machine's configured apt mirror, with the cloud kernel installed inside,
# python3 + sqlite3, and a small HTTP key-value service over sqlite (guest/realistic/app.py)
# driven by a load generator (guest/realistic/loadgen.py) whose "light" or "heavy" workload is
# chosen on the kernel command line. It exists so demos and benchmarks hand off a VM that
# behaves like a real service; it takes minutes and is not used by `make check`.
#
# Usage: guest/build-realistic.sh [OUTDIR]
#   OUTDIR defaults to ${HANDOFF_CACHE:-$HOME/.cache/handoff}/guest-realistic
# Outputs in OUTDIR: vmlinuz, initrd (the guest's own, from initramfs-tools), disk.img (raw ext4,
# sparse, root file system on /dev/vda), guest.env (GUEST_KERNEL, GUEST_INITRD, GUEST_DISK,
# GUEST_RAM_MB, GUEST_CMDLINE = light workload, GUEST_CMDLINE_HEAVY), stamp. Prints the path of
# guest.env on stdout; logs to stderr. Skips the build when the stamp matches. Downloaded .debs
# are kept in OUTDIR/debs for rebuilds. The image is not bit-for-bit reproducible (dpkg logs,
# timestamps); the cache key covers what makes it different in behaviour.
#
# Knobs: HANDOFF_DEBIAN_MIRROR (default: first non-security URI of /etc/apt/sources.list*),
# HANDOFF_REAL_DISK_GB (4), HANDOFF_REAL_RAM_MB (1024), HANDOFF_REAL_SUITE (bookworm).
# Needs root, debootstrap, e2fsprogs, and the mirror reachable.
set -euo pipefail

die() { echo "build-realistic: $*" >&2; exit 1; }
log() { echo "build-realistic: $*" >&2; }

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
out=${1:-${HANDOFF_CACHE:-${HOME:-/tmp}/.cache/handoff}/guest-realistic}
suite=${HANDOFF_REAL_SUITE:-bookworm}
disk_gb=${HANDOFF_REAL_DISK_GB:-4}
ram_mb=${HANDOFF_REAL_RAM_MB:-1024}
pkgs=linux-image-cloud-amd64,initramfs-tools,python3,sqlite3,iproute2,procps
[ "$(id -u)" = 0 ] || die "must run as root (debootstrap, chroot)"
for c in debootstrap mkfs.ext4 chroot sha256sum; do
	command -v "$c" >/dev/null || die "$c not found (apt-get install debootstrap e2fsprogs)"
done

# The mirror: what apt on this machine uses (deb822 .sources or one-line sources.list).
mirror=${HANDOFF_DEBIAN_MIRROR:-}
if [ -z "$mirror" ]; then
	mirror=$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null | awk -v s="$suite" '
		/^[ \t]*$/ { if (uri != "" && suites ~ ("(^| )" s "( |$)")) { print uri; exit } uri = ""; suites = ""; next }
		tolower($1) == "uris:" { uri = $2 }
		tolower($1) == "suites:" { $1 = ""; suites = $0 " " }
		END { if (uri != "" && suites ~ ("(^| )" s "( |$)")) print uri }' | head -n1)
fi
if [ -z "$mirror" ]; then
	mirror=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
		awk -v s="$suite" '$1 == "deb" { i = 2; if ($2 ~ /^\[/) { while ($i !~ /\]$/) i++; i++ } if ($(i+1) == s) { print $i; exit } }')
fi
[ -n "$mirror" ] || die "no apt mirror for $suite in /etc/apt/sources.list* (set HANDOFF_DEBIAN_MIRROR)"

key=$({
	echo "v1 $suite $mirror $pkgs $disk_gb $ram_mb"
	sha256sum "$here/build-realistic.sh" "$here/realistic/app.py" "$here/realistic/loadgen.py" \
		"$here/realistic/init.sh" | cut -c1-64
} | sha256sum | cut -c1-64)

mkdir -p "$out/debs"
out=$(cd "$out" && pwd)
exec 9>"$out/.lock"
flock 9
if [ -f "$out/stamp" ] && [ "$(cat "$out/stamp")" = "$key" ] &&
	[ -f "$out/vmlinuz" ] && [ -f "$out/initrd" ] && [ -f "$out/disk.img" ] && [ -f "$out/guest.env" ]; then
	log "up to date: $out"
	echo "$out/guest.env"
	exit 0
fi
rm -f "$out/stamp"
work=$(mktemp -d "$out/.build.XXXXXX")
root=$work/rootfs

cleanup() {
	# unmount anything debootstrap or we left mounted inside the tree before deleting it
	local m
	for m in $(awk -v w="$work" 'index($2, w) == 1 { print $2 }' /proc/mounts | sort -r); do
		umount -l "$m" 2>/dev/null || true
	done
	if awk -v w="$work" 'index($2, w) == 1 { found = 1 } END { exit !found }' /proc/mounts; then
		log "leaving $work: something is still mounted there"
	else
		rm -rf "$work"
	fi
}
trap cleanup EXIT

log "debootstrap $suite (minbase + $pkgs) from $mirror into $root; this takes minutes"
t0=$(date +%s)
if ! debootstrap --variant=minbase --include="$pkgs" --cache-dir="$out/debs" \
	"$suite" "$root" "$mirror" >"$work/debootstrap.log" 2>&1; then
	tail -n 30 "$work/debootstrap.log" >&2
	[ -f "$root/debootstrap/debootstrap.log" ] && tail -n 30 "$root/debootstrap/debootstrap.log" >&2
	die "debootstrap failed"
fi
log "debootstrap done in $(($(date +%s) - t0)) s"

kver=$(ls "$root"/boot/vmlinuz-* 2>/dev/null | sed 's|.*/vmlinuz-||' | sort -V | tail -n1)
[ -n "$kver" ] || die "no kernel installed in the guest"
if [ ! -f "$root/boot/initrd.img-$kver" ]; then
	log "building the guest's initramfs"
	mount -t proc proc "$root/proc"
	chroot "$root" update-initramfs -c -k "$kver" >&2
	umount "$root/proc"
fi
[ -f "$root/boot/initrd.img-$kver" ] || die "no initrd for $kver in the guest"

# ---- configure -----------------------------------------------------------------------------
install -d "$root/opt/handoff" "$root/var/lib/handoff-app"
install -m 0755 "$here/realistic/app.py" "$root/opt/handoff/app.py"
install -m 0755 "$here/realistic/loadgen.py" "$root/opt/handoff/loadgen.py"
install -m 0755 "$here/realistic/init.sh" "$root/sbin/handoff-init"
echo handoff-guest >"$root/etc/hostname"
printf '127.0.0.1 localhost\n127.0.1.1 handoff-guest\n' >"$root/etc/hosts"
printf '/dev/vda / ext4 rw,noatime 0 1\n' >"$root/etc/fstab"
: >"$root/etc/machine-id"
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* "$root"/var/log/*.log
cat >"$root/etc/motd" <<EOF
handoff realistic guest: /opt/handoff/app.py (sqlite KV service on 127.0.0.1:8080) driven by
/opt/handoff/loadgen.py; workload chosen by handoff.load=light|heavy on the kernel cmdline.
EOF

cp "$root/boot/vmlinuz-$kver" "$work/vmlinuz"
cp "$root/boot/initrd.img-$kver" "$work/initrd"

# ---- disk image ----------------------------------------------------------------------------
log "making a ${disk_gb} GiB ext4 image"
truncate -s "${disk_gb}G" "$work/disk.img"
mkfs.ext4 -q -F -L handoff-real -U 6a1d0ff0-7e57-4e57-8000-0000000000a1 \
	-E root_owner=0:0,lazy_itable_init=0,lazy_journal_init=0 \
	-d "$root" "$work/disk.img" >&2

cmdline="console=ttyS0 root=/dev/vda rootfstype=ext4 rw quiet init=/sbin/handoff-init"
cat >"$work/guest.env" <<EOF
# guest.env — the handoff realistic guest, written by guest/build-realistic.sh (shell-sourceable).
GUEST_KIND=realistic
GUEST_DIR=$out
GUEST_KERNEL=$out/vmlinuz
GUEST_INITRD=$out/initrd
GUEST_DISK=$out/disk.img
GUEST_DISK_FORMAT=raw
GUEST_DISK_MB=$((disk_gb * 1024))
GUEST_RAM_MB=$ram_mb
GUEST_KVER=$kver
GUEST_SUITE=$suite
GUEST_CMDLINE="$cmdline handoff.load=light"
GUEST_CMDLINE_HEAVY="$cmdline handoff.load=heavy"
EOF
for f in vmlinuz initrd disk.img guest.env; do mv -f "$work/$f" "$out/$f"; done
echo "$key" >"$out/stamp"
log "done: $out (kernel $kver, disk $(du -m "$out/disk.img" | cut -f1) MiB used of ${disk_gb} GiB)"
echo "$out/guest.env"
