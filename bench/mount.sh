#!/usr/bin/env bash
# bench/mount.sh — the mount against a plain file on the same disk, in one run: sequential 1 MiB
# reads and writes, random 4 KiB reads and writes at QD 1 and QD 16 (fio), on a 1 GiB base.
# Rows also give the mount with tracking off, to show what the tracker costs.
# Targets (issue 2): mount/plain >= 0.7 sequential, >= 0.5 random 4 KiB writes; tracker < 5 %.
set -eu
command -v fio >/dev/null || { echo "fio missing: make deps"; exit 1; }
size=${BENCH_MOUNT_SIZE:-1G}
runtime=${BENCH_MOUNT_SECONDS:-8}
work=$(mktemp -d /var/tmp/handoff-bench-mount.XXXXXX)
cleanup() { fusermount3 -uz "$work/mnt" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
mkdir "$work/mnt"
echo "# creating a $size base (random data)"
head -c "$size" /dev/urandom >"$work/base.img"

# fio_bw FILE JOB: prints MB/s
fio_bw() {
	local file=$1 rw=$2 bs=$3 qd=$4 engine=psync extra=()
	[ "$qd" -gt 1 ] && { engine=libaio; extra=(--iodepth="$qd" --direct=1); }
	fio --name=b --filename="$file" --rw="$rw" --bs="$bs" --size="$size" --runtime="$runtime" \
	    --time_based=1 --ioengine="$engine" "${extra[@]}" --end_fsync=1 --invalidate=1 \
	    --randrepeat=1 --output-format=terse --terse-version=3 2>/dev/null |
	awk -F';' -v rw="$rw" '{ bw = (rw ~ /write/) ? $48 : $7; printf "%.1f", bw / 1024 }'
}

setup() {  # setup plain|track|notrack: prints the file to benchmark
	fusermount3 -uz "$work/mnt" 2>/dev/null || true
	rm -rf "$work/ovl" "$work/plain.img"
	case $1 in
	plain) cp --reflink=never "$work/base.img" "$work/plain.img"; sync; echo "$work/plain.img" ;;
	track) handoff-mount --disk "$work/base.img" --memory-size 1M "$work/ovl" "$work/mnt"; echo "$work/mnt/disk" ;;
	notrack) handoff-mount --no-tracking --disk "$work/base.img" --memory-size 1M "$work/ovl" "$work/mnt"; echo "$work/mnt/disk" ;;
	esac
}

printf '\n%-26s %10s %10s %10s %8s %9s %s\n' test "plain MB/s" "mount MB/s" "notrack" "ratio" "tracker" target
for t in "seq-read read 1M 1 0.7" "seq-write write 1M 1 0.7" "rand-read-qd1 randread 4k 1 -" \
         "rand-write-qd1 randwrite 4k 1 0.5" "rand-read-qd16 randread 4k 16 -" "rand-write-qd16 randwrite 4k 16 0.5"; do
	set -- $t
	p=$(fio_bw "$(setup plain)" "$2" "$3" "$4")
	m=$(fio_bw "$(setup track)" "$2" "$3" "$4")
	n=$(fio_bw "$(setup notrack)" "$2" "$3" "$4")
	awk -v t="$1" -v p="$p" -v m="$m" -v n="$n" -v tg="$5" 'BEGIN {
		r = (p > 0) ? m / p : 0; o = (n > 0) ? (n - m) / n * 100 : 0
		printf "%-26s %10.1f %10.1f %10.1f %7.2fx %8.1f%% %s\n", t, p, m, n, r, o, (tg == "-") ? "" : ">= " tg "x" }'
done
fusermount3 -uz "$work/mnt" 2>/dev/null || true
