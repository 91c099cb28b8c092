#!/usr/bin/env bash
# install-deps.sh — everything handoff needs to build, test, benchmark and run its demo, from
# Debian 12's archive only. Run as root (make deps). Idempotent: installs only what is missing.
set -eu
pkgs=(
	build-essential pkg-config clang                # compilers (clang: libFuzzer for make fuzz)
	libfuse3-dev fuse3                              # the mount
	libsqlite3-dev sqlite3                          # the tracker (sqlite3 CLI: tests)
	liblz4-dev liblzma-dev libzstd-dev libxxhash-dev libssl-dev   # pipeline, hashing, MAC
	libext2fs-dev e2fsprogs libpng-dev              # handoff-inspect files / heatmap
	qemu-system-x86 qemu-utils                      # the VM driver
	linux-image-cloud-amd64 busybox-static cpio debootstrap   # guest images
	iproute2 socat procps psmisc time man-db        # network namespaces, tests
	xdelta3 zstd rsync fio python3                  # benchmark peers and helpers
)
missing=()
for p in "${pkgs[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
	echo "install-deps: all dependencies present" >&2
	exit 0
fi
if [ "$(id -u)" != 0 ]; then
	echo "install-deps: missing packages (${missing[*]}); run as root: make deps" >&2
	exit 1
fi
echo "install-deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
modprobe fuse 2>/dev/null || true
echo "install-deps: done" >&2
