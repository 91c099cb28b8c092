# tests/lib.sh — shared helpers for the shell tests (sourced). Each test runs in its own temp
# dir (the runner cds into one), prints TAP lines, exits 0/1, or 77 with "# SKIP reason".
set -u
: "${HANDOFF_BUILD:=$(cd "$(dirname "$0")/.." && pwd)/build}"
: "${HANDOFF_SRC:=$(cd "$(dirname "$0")/.." && pwd)}"
export PATH="$HANDOFF_BUILD/bin:$PATH"
T_N=0 T_FAIL=0
T_MOUNTS=()
T_PIDS=()

ok()      { T_N=$((T_N+1)); echo "ok $T_N - $*"; }
not_ok()  { T_N=$((T_N+1)); T_FAIL=$((T_FAIL+1)); echo "not ok $T_N - $*"; }
# check DESC CMD...: run CMD, ok if it succeeds
check()   { local d=$1; shift; if "$@"; then ok "$d"; else not_ok "$d"; fi; }
# check_fail DESC CMD...: ok if CMD fails
check_fail() { local d=$1; shift; if "$@"; then not_ok "$d"; else ok "$d"; fi; }
is()      { if [ "$1" = "$2" ]; then ok "$3"; else not_ok "$3"; echo "#   got '$1', want '$2'"; fi; }
skip_all() { echo "# SKIP $*"; exit 77; }
bail()    { echo "Bail out! $*"; exit 1; }
done_testing() { echo "1..$T_N"; [ $T_FAIL = 0 ]; exit $?; }

# need_wan: what scripts/wan.sh needs (root, ip netns); sets WAN and puts sbin on PATH
need_wan() {
	WAN="$HANDOFF_SRC/scripts/wan.sh"
	PATH=$PATH:/usr/sbin:/sbin
	[ "$(id -u)" = 0 ] || skip_all "needs root for network namespaces"
	ip netns list >/dev/null 2>&1 || skip_all "'ip netns' unavailable"
}

# need_export_opts OPT...: skip until handoff-export --help lists every OPT
need_export_opts() {
	local help opt
	help=$(handoff-export --help 2>&1)
	for opt; do
		grep -q -- "$opt" <<<"$help" || skip_all "handoff-export has no $opt yet"
	done
}

need_fuse() {
	[ -c /dev/fuse ] || skip_all "/dev/fuse missing"
	command -v fusermount3 >/dev/null || skip_all "fusermount3 not installed (make deps)"
}

# mount_overlay OVERLAY MNT ARGS...: mount in the background, wait for readiness via --ready-fd
mount_overlay() {
	local ovl=$1 mnt=$2; shift 2
	mkdir -p "$mnt"
	handoff-mount "$@" "$ovl" "$mnt" || return 1
	T_MOUNTS+=("$mnt")
}

umount_overlay() {
	local mnt=$1
	fusermount3 -u "$mnt" 2>/dev/null || return 1
	# wait until the daemon released the overlay
	for _ in $(seq 100); do mountpoint -q "$mnt" || return 0; sleep 0.05; done
	return 1
}

# seal_overlay OVERLAY MNT: the data set written through MNT is done: flush it, note its images'
# SHA-256 in SEAL_DISK and SEAL_MEM (what a receiver must end up with), close the generation and
# unmount. Non-zero (with a message) when the checkpoint or the unmount failed.
seal_overlay() {
	local ovl=$1 mnt=$2
	sync "$mnt/disk" "$mnt/memory"
	SEAL_DISK=$(sha256sum <"$mnt/disk" | cut -d' ' -f1)
	SEAL_MEM=$(sha256sum <"$mnt/memory" | cut -d' ' -f1)
	handoff-mount --checkpoint "$ovl" >/dev/null || { echo "# checkpoint of '$ovl' failed"; return 1; }
	umount_overlay "$mnt" || { echo "# cannot unmount '$mnt'"; return 1; }
}

t_cleanup() {
	local m p
	for p in "${T_PIDS[@]:-}"; do [ -n "$p" ] && kill -9 "$p" 2>/dev/null; done
	for m in "${T_MOUNTS[@]:-}"; do [ -n "$m" ] && fusermount3 -uz "$m" 2>/dev/null; done
	return 0
}
trap t_cleanup EXIT
