#!/usr/bin/env bash
# bench/pipeline.sh — the data-reduction benchmark: every mode of handoff's chunk encoder
# (tests/helpers/pipebench) against the peers of /work/shared/BENCH-PEERS.md, on a disk pair
# (an ext4 image filled from /usr, 5 % of blocks changed) and a memory pair (a RAM image, 1.6 % of
# pages changed), then the throughput of the fast modes with 1 and 2 threads. One table per dataset:
# bytes, CPU (user+sys) s, wall s, peak RSS, and ratios to the best peer (smallest output).
# Run by `make bench` (bench/run); alone: HANDOFF_BUILD=build bench/pipeline.sh
# Environment: BENCH_DIR (datasets, reused between runs; default /tmp/handoff-bench),
#   BENCH_DISK_SIZE (256M), BENCH_MEM_SIZE (512M), BENCH_SLOW=1 (also zstd -19 on memory),
#   BENCH_MODES (default: all modes).
# Exit 0 when it ran (targets are reported, not enforced), 77 when a needed tool is missing.
set -u
: "${HANDOFF_BUILD:?set HANDOFF_BUILD to the build directory}"
src=${HANDOFF_SRC:-$(cd "$(dirname "$0")/.." && pwd)}
work=${BENCH_DIR:-/tmp/handoff-bench}
pb=$HANDOFF_BUILD/tests/pipebench
cache=$work/cache
T=/usr/bin/time

for t in zstd xdelta3 rsync qemu-img mkfs.ext4 "$T" "$pb"; do
	command -v "$t" >/dev/null || { echo "# SKIP $t missing (apt-get install zstd xdelta3 rsync qemu-utils e2fsprogs time)"; exit 77; }
done
mkdir -p "$work" "$cache"
echo "# datasets in $work (building if missing)"
HANDOFF_BUILD=$HANDOFF_BUILD "$src/bench/helpers/mkimages.sh" "$work" "${BENCH_DISK_SIZE:-256M}" "${BENCH_MEM_SIZE:-512M}" || exit 1
modes=${BENCH_MODES:-$("$pb" --list-modes | awk '{print $1}')}
rows=$(mktemp -d "$work/rows.XXXX")
trap 'rm -rf "$rows"' EXIT

# timed NAME OUT_FILE CMD... — run CMD under /usr/bin/time; append "NAME bytes cpu wall rss_kb"
# to $rows/cur (bytes: size of OUT_FILE, or the first number pipebench printed when OUT_FILE is -)
timed() {
	local name=$1 out=$2; shift 2
	local tf=$rows/time so=$rows/stdout
	if ! $T -f "%e %U %S %M" -o "$tf" "$@" >"$so" 2>"$rows/stderr"; then
		echo "# $name failed: $(tail -n 2 "$rows/stderr" | tr '\n' ' ')"
		return 1
	fi
	local bytes
	if [ "$out" = - ]; then bytes=$(awk '{print $2; exit}' "$so"); else bytes=$(stat -c %s "$out"); fi
	read -r wall usr sys rss < <(tail -n 1 "$tf")
	echo "$name $bytes $(echo "$usr + $sys" | bc) $wall $rss" >>"$rows/cur"
}

log2() { awk -v n="$1" 'BEGIN{l=0; while (2^l < n) l++; print l}'; }

peers() {   # peers BASE NEW SIZE SLOW
	local base=$1 new=$2 size=$3 slow=$4 w
	w=$(( $(log2 "$size") + 1 ))
	cat "$base" "$new" >/dev/null
	timed "zstd-3 --patch-from" "$rows/p.zst" zstd -3 -q -f --long=$w --patch-from="$base" "$new" -o "$rows/p.zst"
	if [ "$slow" = 1 ]; then
		timed "zstd-19 --patch-from" "$rows/p.zst" zstd -19 -q -f --long=$w --patch-from="$base" "$new" -o "$rows/p.zst"
	fi
	timed "xdelta3 -9" "$rows/x.vcd" xdelta3 -e -9 -f -B "$size" -s "$base" "$new" "$rows/x.vcd"
	cp "$base" "$rows/copy"
	timed "rsync -B4096 + zstd-3" "$rows/b.zst" bash -c "rsync --no-whole-file --inplace -B 4096 --only-write-batch='$rows/b' '$new' '$rows/copy' >/dev/null && zstd -3 -q -f '$rows/b' -o '$rows/b.zst'"
	rm -f "$rows/copy" "$rows/b" "$rows/b.sh" "$rows/d.qcow2"
	timed "qemu-img rebase + zstd-3" "$rows/q.zst" bash -c "qemu-img create -q -f qcow2 -o cluster_size=4096 -b '$new' -F raw '$rows/d.qcow2' && qemu-img rebase -b '$base' -F raw '$rows/d.qcow2' && zstd -3 -q -f '$rows/d.qcow2' -o '$rows/q.zst'"
	rm -f "$rows/d.qcow2" "$rows/p.zst" "$rows/x.vcd" "$rows/q.zst" "$rows/b.zst"
}

# table TITLE — print $rows/cur: peers first (lines up to the marker), then our modes
table() {
	echo
	echo "## $1"
	awk '
	/^--$/ { ours = 1; next }
	{ n++; name[n] = $1; for (i = 2; i <= NF - 4; i++) name[n] = name[n] " " $i
	  b[n] = $(NF-3); c[n] = $(NF-2); w[n] = $(NF-1); r[n] = $NF; our[n] = ours
	  if (!ours && (best == 0 || b[n] < b[best])) best = n }
	END {
	  printf "%-36s %12s %7s %8s %8s %9s %7s %8s\n", "row", "bytes", "x best", "CPU s", "x CPU", "wall s", "RSS MB", "x RSS"
	  for (i = 1; i <= n; i++) {
	    printf "%-36s %12d %7.2f %8.2f %8.3f %9.2f %7.1f %8.3f\n", (our[i] ? "handoff " : "") name[i], b[i], b[i] / b[best],
	      c[i], (c[best] > 0 ? c[i] / c[best] : 0), w[i], r[i] / 1024, r[i] / r[best]
	  }
	  printf "best peer: %s (%d bytes, %.2f s CPU, %.0f MB RSS)\n", name[best], b[best], c[best], r[best] / 1024
	}' "$rows/cur"
}

run_ours() {   # run_ours DIR IMAGE
	local m
	for m in $modes; do
		timed "$m" - "$pb" -T 1 --cache "$cache" --only "$2" -m "$m" "$1"
	done
	# does the far-match index pay? the default mode without it
	timed "delta-zstd3 (no far index)" - "$pb" -T 1 --cache "$cache" --only "$2" -m delta-zstd3 --far 0 "$1"
}

warm_index() {   # build (or load) the cached base indexes once, outside the timed rows
	local out cold
	rm -rf "$rows/cold"
	cold=$("$pb" --cache "$rows/cold" --only "$2" -m best "$1" | awk '{print $6}') || return 1
	echo "# base indexes for $1: built from scratch in $cold s (once per base, then cached: $(du -bc "$rows/cold"/*.idx | tail -n 1 | cut -f1) bytes on disk)"
	rm -rf "$rows/cold"
	out=$("$pb" --cache "$cache" --only "$2" -m best "$1") || return 1
	echo "# loading the cached indexes: $(echo "$out" | awk '{print $6}') s"
}

echo "# $(date -u '+%F %T') UTC, $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg); CPU = user + sys"
# ---- disk --------------------------------------------------------------------------------------
d=$work/disk
dsize=$(stat -c %s "$d/disk.base")
: >"$rows/cur"
peers "$d/disk.base" "$d/disk.new" "$dsize" 1
echo -- >>"$rows/cur"
warm_index "$d" disk
run_ours "$d" disk
cp "$rows/cur" "$rows/disk"
table "disk: $(numfmt --to=iec "$dsize") ext4 from /usr, $(wc -l <"$d/disk.dirty") dirty 4 KiB chunks ($(( $(wc -l <"$d/disk.dirty") * 4096 )) bytes)"

# ---- memory ------------------------------------------------------------------------------------
m=$work/mem
msize=$(stat -c %s "$m/mem.base")
: >"$rows/cur"
peers "$m/mem.base" "$m/mem.new" "$msize" "${BENCH_SLOW:-0}"
echo -- >>"$rows/cur"
warm_index "$m" memory
run_ours "$m" memory
cp "$rows/cur" "$rows/mem"
table "memory: $(numfmt --to=iec "$msize") RAM, $(wc -l <"$m/mem.dirty") dirty pages; the disk base is indexed too (disk<->memory dedup)"

# ---- throughput --------------------------------------------------------------------------------
t=$work/thru
warm_index "$t" disk >/dev/null
in=$(( $(wc -l <"$t/disk.dirty") * 4096 ))
echo
echo "## throughput: $(numfmt --to=iec $in) of dirty input (50 % of the disk changed), best of 3 runs"
echo "# MB/s = input / wall; MB/CPU-s = input / (user+sys) of the encode, i.e. per busy core (robust on a loaded machine)"
printf "%-14s %10s %10s %8s %12s %12s %10s %7s\n" mode "T=1 MB/s" "T=2 MB/s" "T2/T1" "T=1 MB/CPUs" "T=2 MB/CPUs" bytes ratio
: >"$rows/thru"
for mm in raw lz4 xor-lz4 delta-lz4 delta-zstd3; do
	r1=0 r2=0 c1=0 c2=0 bytes=0
	for th in 1 2; do
		best=0 bestc=0
		for rep in 1 2 3; do
			out=$("$pb" -T $th --cache "$cache" --only disk -m $mm "$t") || continue
			bytes=$(echo "$out" | awk '{print $2}')
			s=$(echo "$out" | awk -v n=$in '{ if ($4 > 0) printf "%d", n / $4 / 1e6; else print 0 }')
			c=$(echo "$out" | awk -v n=$in '{ if ($3 > 0) printf "%d", n / $3 / 1e6; else print 0 }')
			[ "$s" -gt "$best" ] && best=$s
			[ "$c" -gt "$bestc" ] && bestc=$c
		done
		if [ $th = 1 ]; then r1=$best c1=$bestc; else r2=$best c2=$bestc; fi
	done
	printf "%-14s %10d %10d %8.2f %12d %12d %10d %7.3f\n" $mm $r1 $r2 "$(echo "scale=3; $r2 / ($r1 + 0.0001)" | bc)" $c1 $c2 "$bytes" "$(echo "scale=4; $bytes / $in" | bc)"
	echo "$mm $r1 $r2 $c1 $c2" >>"$rows/thru"
done

# ---- targets -----------------------------------------------------------------------------------
echo
echo "## targets (reported, not enforced)"
awk '
/^--$/ { ours = 1; next }
{ name = $1; for (i = 2; i <= NF - 4; i++) name = name " " $i
  if (!ours) { if (!pb || $(NF-3) < pb) { pb = $(NF-3); pc = $(NF-2); pr = $NF; pn = name } }
  else if (name == "best") { bb = $(NF-3); bc = $(NF-2); br = $NF }
  else if (ours) { if ($(NF-3) <= pb && $(NF-2) <= pc / 4 && $NF <= pr / 10) fit = fit " " name } }
END {
  printf "disk: mode best = %.3fx bytes of %s (target <= 1.0), %.3fx its CPU (<= 0.25), %.3fx its RSS (<= 0.1): %s\n",
    bb / pb, pn, bc / pc, br / pr, (bb <= pb && bc <= pc / 4 && br <= pr / 10) ? "MET" : "NOT MET"
  printf "disk: other modes meeting all three:%s\n", fit == "" ? " none" : fit
}' "$rows/disk"
awk '
/^--$/ { ours = 1; next }
{ name = $1; for (i = 2; i <= NF - 4; i++) name = name " " $i }
!ours && name ~ /^xdelta3/ { xb = $(NF-3) }
ours && name == "best" { bb = $(NF-3) }
ours && name == "delta-zstd3" { zb = $(NF-3) }
END { printf "memory: mode best = %.3fx xdelta3 bytes (target <= 1.2): %s; delta-zstd3 = %.3fx\n", bb / xb, bb <= 1.2 * xb ? "MET" : "NOT MET", zb / xb }' "$rows/mem"
awk '$1 == "lz4" { a = ($3 >= 1000) ? "MET" : "NOT MET"; b = ($3 >= 1.8 * $2) ? "MET" : "NOT MET"
	printf "throughput: lz4 with 2 threads %d MB/s of dirty input (target >= 1000): %s; 2 threads = %.2fx 1 thread (target >= 1.8): %s\n", $3, a, $3 / ($2 + 0.001), b
	printf "throughput: lz4 costs %d MB per CPU-second with 2 threads (%d with 1): 2 idle cores give up to %d MB/s\n", $5, $4, 2 * $5 }' "$rows/thru"
echo "# wall times and speedups are only meaningful on an otherwise idle machine (load now: $(cut -d' ' -f1-3 /proc/loadavg))"
