#!/usr/bin/env bash
# bench/adapt.sh — does adapting the operating mode beat every fixed one? Total transfer time of
# one handoff (handoff-export --to in namespace A, handoff-import --listen in namespace B, over a
# tbf-shaped veth from scripts/wan.sh) for every static mode and for --adaptive, at 5, 10, 25,
# 100 and 1000 Mbit/s, under a changing rate schedule, and at 25 Mbit/s with a competing busy
# process. Prints one table (seconds; the best static per row; adaptive's time relative to it).
#
# The data: a 128 MiB ext4 base image of /usr/share files, and ADAPT_BENCH_MB (default 24) MiB of
# changed blocks written through handoff-mount: half text, a fifth random, a fifth copies of other
# base blocks, a tenth zeros, in runs.
#
# Needs root and ip netns (the tools speak TCP themselves). Modes come from
# `handoff-export --list-modes` when it has one. If the exporter lacks --adaptive or
# --progress=json the adaptive column says so; no figure is ever made up.
#
#   ADAPT_BENCH_MB=24  ADAPT_BENCH_RATES="5 10 25 100 1000"  ADAPT_BENCH_MODES="raw lz4 ..."
#   ADAPT_BENCH_REPEAT=3 (each cell is the median of that many runs: this machine is shared)
set -u
: "${HANDOFF_BUILD:=$(cd "$(dirname "$0")/.." && pwd)/build}"
: "${HANDOFF_SRC:=$(cd "$(dirname "$0")/.." && pwd)}"
export PATH="$HANDOFF_BUILD/bin:$PATH:/usr/sbin:/sbin"
WAN="$HANDOFF_SRC/scripts/wan.sh"
MB=${ADAPT_BENCH_MB:-24}
RATES=${ADAPT_BENCH_RATES:-"5 10 25 100 1000"}
SCHEDULE=${ADAPT_BENCH_SCHEDULE:-"5mbit:8 100mbit:4 10mbit:8"}
REPEAT=${ADAPT_BENCH_REPEAT:-3}
NAME=hb$$
say() { echo "bench/adapt: $*" >&2; }

[ "$(id -u)" = 0 ] || { say "needs root (network namespaces): skipped"; exit 0; }
ip netns list >/dev/null 2>&1 || { say "'ip netns' unavailable: skipped"; exit 0; }
for t in handoff-export handoff-import handoff-mount; do
	command -v $t >/dev/null || { say "'$t' not built: skipped"; exit 0; }
done
help=$(handoff-export --help 2>&1)
for opt in --to --mode; do
	grep -q -- "$opt" <<<"$help" || { say "handoff-export lacks $opt: skipped"; exit 0; }
done
adaptive=1
for opt in --adaptive --progress; do
	grep -q -- "$opt" <<<"$help" || { adaptive=0; say "handoff-export lacks $opt: no adaptive column yet"; }
done
if [ -n "${ADAPT_BENCH_MODES:-}" ]; then
	MODES=$ADAPT_BENCH_MODES
elif out=$(handoff-export --list-modes 2>/dev/null) && [ -n "$out" ]; then
	MODES=$(awk '{print $1}' <<<"$out" | tr '\n' ' ')
else
	MODES="raw lz4 zstd-3 zstd-9 zstd-19 lzma-6"
fi

work=$(mktemp -d /tmp/handoff-bench-adapt.XXXXXX)
busy=
cleanup() {
	[ -n "$busy" ] && kill $busy 2>/dev/null
	"$WAN" down $NAME >/dev/null 2>&1
	fusermount3 -uz "$work/mnt" 2>/dev/null
	rm -rf "$work"
}
trap cleanup EXIT

# ---- the data ------------------------------------------------------------------------------
say "building a 128 MiB base and $MB MiB of changes"
mkdir -p "$work/tree" "$work/mnt"
find /usr/share/doc /usr/share/man -type f -printf '%s %p\n' 2>/dev/null |
	awk '{ s += $1; if (s > 90e6) exit; sub(/^[0-9]+ /, ""); print }' |
	xargs -d '\n' cp --parents -t "$work/tree" 2>/dev/null
mkfs.ext4 -q -F -d "$work/tree" "$work/base.img" 128M >/dev/null 2>&1 || { say "mkfs.ext4 failed"; exit 1; }
rm -rf "$work/tree"
find /usr/share/doc /usr/share/man -type f \( -name '*.gz' -prune -o -print \) 2>/dev/null |
	head -n 5000 | xargs cat 2>/dev/null | head -c $((MB * 1024 * 1024 / 2)) >"$work/text"
handoff-mount --disk "$work/base.img" --memory-size 32M "$work/ovl" "$work/mnt" || { say "mount failed"; exit 1; }
d="$work/mnt/disk"
# runs of 256 KiB, spread over the disk: text, random, base copies, zeros
off=$((4 * 1024))            # in 4 KiB blocks
run=64
ntext=$((MB * 128 / run)) nrand=$((MB * 256 / 5 / run)) ncopy=$((MB * 256 / 5 / run)) nzero=$((MB * 256 / 10 / run))
for i in $(seq 0 $((ntext - 1))); do
	dd if="$work/text" of="$d" bs=4K skip=$((i * run)) seek=$((off + i * run * 2)) count=$run conv=notrunc status=none
done
off=$((off + ntext * run * 2))
for i in $(seq 0 $((nrand - 1))); do
	head -c $((run * 4096)) /dev/urandom | dd of="$d" bs=4K seek=$((off + i * run * 2)) conv=notrunc status=none
done
off=$((off + nrand * run * 2))
# source runs inside files of the base (no all-zero block), so they are real copies, not zeros
perl -e 'open(F, "<", $ARGV[0]) or die; binmode F; my $z = "\0" x 4096; my $i = 0;
	while (read(F, my $b, 262144) == 262144) {
		my $ok = 1; for (my $o = 0; $o < 262144; $o += 4096) { $ok = 0, last if substr($b, $o, 4096) eq $z }
		print "$i\n" if $ok; $i++ }' "$work/base.img" | awk 'NR % 3 == 0' | head -n $ncopy >"$work/copies"
[ "$(wc -l <"$work/copies")" = $ncopy ] || { say "not enough file data in the base to copy from"; exit 1; }
i=0
while read -r src; do
	dd if="$work/base.img" of="$d" bs=4K skip=$((src * run)) seek=$((off + i * run * 2)) count=$run conv=notrunc status=none
	i=$((i + 1))
done <"$work/copies"
off=$((off + ncopy * run * 2))
for i in $(seq 0 $((nzero - 1))); do
	dd if=/dev/zero of="$d" bs=4K seek=$((off + i * run * 2)) count=$run conv=notrunc status=none
done
[ $((off + nzero * run * 2)) -lt 32768 ] || { say "ADAPT_BENCH_MB=$MB is too large for the 128 MiB base"; exit 1; }
sync "$d"
handoff-mount --checkpoint "$work/ovl" >/dev/null || { say "checkpoint failed"; exit 1; }
fusermount3 -u "$work/mnt"
for _ in $(seq 100); do mountpoint -q "$work/mnt" || break; sleep 0.05; done
rm -f "$work/text"

"$WAN" up $NAME 1gbit || exit 1
B=$("$WAN" addr $NAME b)

# one transfer: prints seconds, or FAIL; $1 = mode or "adaptive", $2 = progress log
transfer1() {
	local mode=$1 log=$2 recv port t0 t1 rc irc
	recv=$(mktemp -u "$work/recv.XXXXXX")
	rm -f "$work/port"
	"$WAN" exec $NAME b handoff-import -q --listen "$B:0" --port-file "$work/port" \
		--disk "$work/base.img" --memory-size 32M "$recv" 2>"$log.import" &
	local ipid=$!
	for _ in $(seq 200); do [ -s "$work/port" ] && break; sleep 0.05; done
	port=$(cat "$work/port" 2>/dev/null)
	[ -n "$port" ] || { kill $ipid 2>/dev/null; echo FAIL; return; }
	rm -f "$work/ovl/export-pending"
	local args=(--mode "$mode")
	[ "$mode" = adaptive ] && args=(--adaptive --progress=json)
	t0=$(date +%s.%N)
	"$WAN" exec $NAME a timeout 900 handoff-export -q "${args[@]}" --to "$B:$port" "$work/ovl" 2>"$log"
	rc=$?
	t1=$(date +%s.%N)
	# a failed export leaves the receiver listening
	[ $rc = 0 ] || { kill $ipid 2>/dev/null; say "$mode: $(head -n 1 "$log")"; }
	wait $ipid; irc=$?
	rm -rf "$recv"
	if [ $rc != 0 ] || [ $irc != 0 ]; then echo FAIL; return; fi
	awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f\n", b - a }'
}

# the median of REPEAT transfers (FAIL if any failed)
transfer() {
	local i t all=()
	for i in $(seq "$REPEAT"); do
		[ "$i" -gt 1 ] && eval "$setup"
		t=$(transfer1 "$@")
		[ "$t" = FAIL ] && { echo FAIL; return; }
		all+=("$t")
	done
	printf '%s\n' "${all[@]}" | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'
}

row() {   # row LABEL SETUP: SETUP is run before each transfer (rate, schedule)
	local label=$1 setup=$2 m t best=none bt=0 cells=() picks=""
	for m in $MODES; do
		eval "$setup"
		t=$(transfer "$m" "$work/log")
		cells+=("$t")
		if [ "$t" != FAIL ] && { [ "$best" = none ] || awk -v a="$t" -v b="$bt" 'BEGIN{exit !(a < b)}'; }; then
			best=$m bt=$t
		fi
	done
	if [ $adaptive = 1 ]; then
		eval "$setup"
		t=$(transfer adaptive "$work/log")
		picks=$(grep -o '"mode":"[^"]*"' "$work/log" | cut -d'"' -f4 | uniq -c | awk '{printf "%s%s", s, $2; s=">"}')
		[ "$t" != FAIL ] && [ "$bt" != 0 ] && rel=$(awk -v a="$t" -v b="$bt" 'BEGIN{printf "%.2f", a / b}') || rel=-
	else
		t="n/a" rel="-"
	fi
	printf '| %s | %s | %s | %s (%s) | %s | %s |\n' "$label" "$(IFS='|'; echo "${cells[*]}" | sed 's/|/ | /g')" \
		"$t" "$best" "$bt" "$rel" "${picks:--}"
}

echo
echo "Transfer time in seconds (median of $REPEAT), $MB MiB changed of a 128 MiB disk ($(nproc) cores; adaptive/best < 1 means adaptive won)"
echo
printf '| link | %s | adaptive | best static | adaptive/best | adaptive modes |\n' "$(echo $MODES | sed 's/ / | /g')"
printf '|---|%s---|---|---|---|\n' "$(for _ in $MODES; do printf -- '---|'; done)"
for r in $RATES; do
	row "${r} Mbit/s" "\"\$WAN\" rate $NAME ${r}mbit"
done
row "schedule $SCHEDULE" "\"\$WAN\" schedule $NAME \"$SCHEDULE\" --loop >/dev/null"
"$WAN" stop $NAME
"$WAN" rate $NAME 25mbit
sh -c 'while :; do :; done' &
busy=$!
row "25 Mbit/s + 1 busy process" "\"\$WAN\" rate $NAME 25mbit"
kill $busy; busy=
