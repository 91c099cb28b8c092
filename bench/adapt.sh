#!/usr/bin/env bash
# bench/adapt.sh — does adapting the operating mode beat every fixed one? Total transfer time of
# one handoff (handoff-export --to in namespace A, handoff-import --listen in namespace B, over a
# tbf-shaped veth from scripts/wan.sh) for every static mode and for --adaptive, at 5, 10, 25,
# 100 and 1000 Mbit/s, under a schedule that changes the rate every 10 s, and at a constant rate
# with competing CPU load added halfway. Prints one table (seconds; the best static per row;
# adaptive's time relative to it).
#
# The data (ADAPT_BENCH_DATA=guest, the default when the images are there): a real guest's
# modifications. Two snapshots of the realistic guest (bench/vm.sh's bases: the same Debian guest
# after a light and after a heavy workload, disk and RAM) give the base (light) and the changed
# chunks (every 4 KiB block where heavy differs from light: 791 MiB of memory and 340 MiB of disk
# for the 1 GiB guest). A sample of them (70 % memory, 30 % disk, whole 1 MiB regions spread over
# the images) is written through handoff-mount over the light base, its size growing with the
# rate so that each constant-rate cell measures the steady state, not the start-up (about 15 s
# or more for the best static mode, up to the whole data set, which 1000 Mbit/s gets: about
# 1050 MiB, 7 s; with 640 MiB the engine's first second of learning the link was a third of a
# 2.8 s transfer): ADAPT_BENCH_RATE_MB (default
# "5:64 10:64 25:256 100:640 1000:1200", RATE:MiB; ADAPT_BENCH_MB=N gives every rate N MiB), and
# ADAPT_BENCH_SCHED_MB (default 640) for the two schedules, which must last long enough to see
# every phase. The samples nest in their regions' order, but a small one is not a prefix of a
# large one: per-byte ratios differ between them (64 MiB: delta-zstd9 0.27 of the input; 640 MiB:
# 0.11), so compare cells within a row only. The snapshots are looked for in ADAPT_BENCH_GUEST (a
# directory with light/ and heavy/, each holding disk.img and memory.img) or else in
# ${HANDOFF_CACHE:-~/.cache/handoff}/vm-bench/base-{light,heavy}-*M; the light base is copied
# (sparse) into the work directory, since bench/vm.sh may rebuild that cache at any time.
# ADAPT_BENCH_DATA=synthetic: a 128 MiB ext4 base of /usr/share files and ADAPT_BENCH_MB MiB of
# changed blocks (half text, a fifth random, a fifth copies of other base blocks, a tenth zeros).
#
# The load row starts its busy processes ADAPT_BENCH_LOAD's seconds after the export (default
# 4 s: about half of the best static mode's transfer at 100 Mbit/s, so the load meets every mode
# mid-transfer).
#
# Static modes run with as many threads as adaptive (-T, the online CPUs), so the comparison is
# of modes, not of thread counts. A static run slower than ADAPT_BENCH_CUTOFF (default 2.5) times
# the row's best so far is stopped and shown as ">T" (it cannot be the best; modes expected to
# be fast for the row run first). The machine is shared: every row shows the 1-minute load
# average when it started, and ADAPT_BENCH_REPEAT runs each cell that many times (median).
#
# Both cloudlets are this one machine: the receiver runs at nice ADAPT_BENCH_RECV_NICE (default
# -10), so that it takes the CPU it needs first, as a destination of its own would have it, and
# the source's competing load (and the source's own modes) meet the source only. At the same
# priority the two ends share the cores: the link the exporter measures is then partly the
# receiver's CPU, which the sender's mode moves (a cheaper mode leaves the receiver more), and
# the load row's busy processes starve the receiver as much as the sender (at 100 Mbit/s
# xor-zstd1 sent its last byte at 6.5 s and finished at 9.9: the receiver's backlog).
#
# Needs root and ip netns (the tools speak TCP themselves). If the exporter lacks --adaptive or
# --progress=json the adaptive column says so; no figure is ever made up.
#
#   ADAPT_BENCH_RATES="5 10 25 100 1000"   ADAPT_BENCH_MODES="raw lz4 ..."   ADAPT_BENCH_REPEAT=1
#   ADAPT_BENCH_RATE_MB="5:64 10:64 25:256 100:640 1000:1200"   ADAPT_BENCH_SCHED_MB=640
#   ADAPT_BENCH_SCHEDULE="25mbit:10 5mbit:10 100mbit:10 10mbit:10"   (looped)
#   ADAPT_BENCH_LOAD="100mbit 4 6"   (rate, seconds before the load starts, busy processes)
#   ADAPT_BENCH_ROWS="rates schedule load"   ADAPT_BENCH_RECV_NICE=-10 (the receiver's nice value)
#   ADAPT_BENCH_LOGS=DIR (keep every mode's progress lines, one file per mode and row)
#   ADAPT_BENCH_ADAPTIVE_ARGS="-vv" (more handoff-export options for the adaptive runs; -vv logs
#   every switch with the predictions behind it)
set -u
: "${HANDOFF_BUILD:=$(cd "$(dirname "$0")/.." && pwd)/build}"
: "${HANDOFF_SRC:=$(cd "$(dirname "$0")/.." && pwd)}"
export PATH="$HANDOFF_BUILD/bin:$PATH:/usr/sbin:/sbin"
WAN="$HANDOFF_SRC/scripts/wan.sh"
MB=${ADAPT_BENCH_MB:-}
RATE_MB=${ADAPT_BENCH_RATE_MB:-"5:64 10:64 25:256 100:640 1000:1200"}
SCHED_MB=${ADAPT_BENCH_SCHED_MB:-640}
RATES=${ADAPT_BENCH_RATES:-"5 10 25 100 1000"}
SCHEDULE=${ADAPT_BENCH_SCHEDULE:-"25mbit:10 5mbit:10 100mbit:10 10mbit:10"}
LOAD=${ADAPT_BENCH_LOAD:-"100mbit 4 6"}
ROWS=${ADAPT_BENCH_ROWS:-"rates schedule load"}
REPEAT=${ADAPT_BENCH_REPEAT:-1}
CUTOFF=${ADAPT_BENCH_CUTOFF:-2.5}
RECV_NICE=${ADAPT_BENCH_RECV_NICE:--10}
DATA=${ADAPT_BENCH_DATA:-}
LOGS=${ADAPT_BENCH_LOGS:-}
read -r -a ADAPT_ARGS <<<"${ADAPT_BENCH_ADAPTIVE_ARGS:-}"
NCPU=$(nproc)
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
cleanup() {
	# transfers run in command substitutions: their load is known only by the pid file
	[ -f "$work/hogs" ] && xargs -r kill <"$work/hogs" 2>/dev/null
	"$WAN" down $NAME >/dev/null 2>&1
	for m in "$work"/mnt*; do fusermount3 -uz "$m" 2>/dev/null; done
	rm -rf "$work"
}
trap cleanup EXIT

# ---- the data ------------------------------------------------------------------------------
find_guest() {   # sets LIGHT and HEAVY (directories with disk.img and memory.img)
	local g=${ADAPT_BENCH_GUEST:-} c=${HANDOFF_CACHE:-$HOME/.cache/handoff}/vm-bench l h
	if [ -n "$g" ]; then
		LIGHT=$g/light HEAVY=$g/heavy
	else
		LIGHT= HEAVY=
		for l in "$c"/base-light-*M; do
			h=${l/base-light-/base-heavy-}
			[ -f "$l/memory.img" ] && [ -f "$h/memory.img" ] && { LIGHT=$l HEAVY=$h; }
		done
	fi
	[ -n "$LIGHT" ] && for f in disk.img memory.img; do
		[ -f "$LIGHT/$f" ] && [ -f "$HEAVY/$f" ] &&
			[ "$(stat -c %s "$LIGHT/$f")" = "$(stat -c %s "$HEAVY/$f")" ] || return 1
	done
}

# blocks.pl BASE NEW MIB OUT: write into OUT the 4 KiB blocks where NEW differs from BASE, whole
# 1 MiB regions at a time, every k-th region that has differences, k chosen for about MIB MiB
cat >"$work/blocks.pl" <<'EOF'
use strict;
my ($base, $new, $target, $out) = @ARGV;
my ($R, $B) = (1 << 20, 4096);
open(my $fa, "<:raw", $base) or die "$base: $!";
open(my $fb, "<:raw", $new) or die "$new: $!";
my (@reg, $total);
for (my $i = 0; ; $i++) {
	my $na = read($fa, my $x, $R); my $nb = read($fb, my $y, $R);
	last unless $na && $nb;
	next if $x eq $y;
	my $d = 0;
	for (my $o = 0; $o < $na; $o += $B) { $d++ if substr($x, $o, $B) ne substr($y, $o, $B) }
	push @reg, $i; $total += $d;
}
my $k = $total * $B / ($target * $R); $k = 1 if $k < 1;
open(my $fo, "+<:raw", $out) or die "$out: $!";
my ($acc, $written) = (0, 0);
for my $i (@reg) {
	$acc += 1;
	next if $acc < $k;
	$acc -= $k;
	seek($fa, $i * $R, 0); seek($fb, $i * $R, 0);
	my $na = read($fa, my $x, $R); read($fb, my $y, $R);
	for (my $o = 0; $o < $na; $o += $B) {
		my $b = substr($y, $o, $B);
		next if substr($x, $o, $B) eq $b;
		seek($fo, $i * $R + $o, 0); print $fo $b; $written += $B;
	}
}
close($fo) or die "$out: $!";
printf "%.1f\n", $written / $R;
EOF

# guest_set OVL MIB: an overlay over the light base holding MIB MiB of the heavy snapshot's changes
guest_set() {
	local o=$1 mib=$2 mnt=$work/mnt.$RANDOM m d
	mkdir -p "$mnt"
	handoff-mount --disk "$work/base/disk.img" --memory "$work/base/memory.img" "$o" "$mnt" || return 1
	m=$(perl "$work/blocks.pl" "$work/base/memory.img" "$HEAVY/memory.img" $((mib * 7 / 10)) "$mnt/memory") &&
	d=$(perl "$work/blocks.pl" "$work/base/disk.img" "$HEAVY/disk.img" $((mib - mib * 7 / 10)) "$mnt/disk") || return 1
	sync "$mnt/disk" "$mnt/memory"
	handoff-mount --checkpoint "$o" >/dev/null || return 1
	fusermount3 -u "$mnt"
	for _ in $(seq 100); do mountpoint -q "$mnt" || break; sleep 0.05; done
	say "$o: $m MiB of memory and $d MiB of disk changed"
}

synthetic_set() {
	local o=$1 mib=$2 d off run ntext nrand ncopy nzero i src
	[ -f "$work/base/disk.img" ] || {
		mkdir -p "$work/tree" "$work/base"
		find /usr/share/doc /usr/share/man -type f -printf '%s %p\n' 2>/dev/null |
			awk '{ s += $1; if (s > 90e6) exit; sub(/^[0-9]+ /, ""); print }' |
			xargs -d '\n' cp --parents -t "$work/tree" 2>/dev/null
		mkfs.ext4 -q -F -d "$work/tree" "$work/base/disk.img" 128M >/dev/null 2>&1 || { say "mkfs.ext4 failed"; return 1; }
		rm -rf "$work/tree"
	}
	find /usr/share/doc /usr/share/man -type f \( -name '*.gz' -prune -o -print \) 2>/dev/null |
		head -n 5000 | xargs cat 2>/dev/null | head -c $((mib * 1024 * 1024 / 2)) >"$work/text"
	mkdir -p "$work/mnt.s"
	handoff-mount --disk "$work/base/disk.img" --memory-size 32M "$o" "$work/mnt.s" || return 1
	d="$work/mnt.s/disk" off=$((4 * 1024)) run=64
	ntext=$((mib * 128 / run)) nrand=$((mib * 256 / 5 / run)) ncopy=$((mib * 256 / 5 / run)) nzero=$((mib * 256 / 10 / run))
	for i in $(seq 0 $((ntext - 1))); do
		dd if="$work/text" of="$d" bs=4K skip=$((i * run)) seek=$((off + i * run * 2)) count=$run conv=notrunc status=none
	done
	off=$((off + ntext * run * 2))
	for i in $(seq 0 $((nrand - 1))); do
		head -c $((run * 4096)) /dev/urandom | dd of="$d" bs=4K seek=$((off + i * run * 2)) conv=notrunc status=none
	done
	off=$((off + nrand * run * 2))
	perl -e 'open(F, "<", $ARGV[0]) or die; binmode F; my $z = "\0" x 4096; my $i = 0;
		while (read(F, my $b, 262144) == 262144) {
			my $ok = 1; for (my $o = 0; $o < 262144; $o += 4096) { $ok = 0, last if substr($b, $o, 4096) eq $z }
			print "$i\n" if $ok; $i++ }' "$work/base/disk.img" | awk 'NR % 3 == 0' | head -n $ncopy >"$work/copies"
	i=0
	while read -r src; do
		dd if="$work/base/disk.img" of="$d" bs=4K skip=$((src * run)) seek=$((off + i * run * 2)) count=$run conv=notrunc status=none
		i=$((i + 1))
	done <"$work/copies"
	off=$((off + ncopy * run * 2))
	for i in $(seq 0 $((nzero - 1))); do
		dd if=/dev/zero of="$d" bs=4K seek=$((off + i * run * 2)) count=$run conv=notrunc status=none
	done
	[ $((off + nzero * run * 2)) -lt 32768 ] || { say "$mib MiB is too much for the 128 MiB synthetic base"; return 1; }
	sync "$d"
	handoff-mount --checkpoint "$o" >/dev/null || return 1
	fusermount3 -u "$work/mnt.s"
	for _ in $(seq 100); do mountpoint -q "$work/mnt.s" || break; sleep 0.05; done
	rm -f "$work/text"
}

if [ -z "$DATA" ]; then
	if find_guest; then DATA=guest; else DATA=synthetic; fi
fi
# rate_mb RATE: MiB of changes for a constant-rate cell at RATE Mbit/s
rate_mb() {
	local e
	[ -n "$MB" ] && { echo "$MB"; return; }
	for e in $RATE_MB; do [ "${e%%:*}" = "$1" ] && { echo "${e#*:}"; return; }; done
	echo 64
}
# the data set sizes the rows need, each built once as $work/ovl-SIZE
SIZES=
case " $ROWS " in *" rates "*) for r in $RATES; do SIZES="$SIZES $(rate_mb "$r")"; done;; esac
case " $ROWS " in *" schedule "*|*" load "*) SIZES="$SIZES $SCHED_MB";; esac
[ "$DATA" = synthetic ] && SIZES=$(for s in $SIZES; do [ "$s" -gt 100 ] && s=100; echo "$s"; done)
SIZES=$(for s in $SIZES; do echo "$s"; done | sort -nu | tr '\n' ' ')
mkdir -p "$work/base"
if [ "$DATA" = guest ]; then
	find_guest || { say "no pair of guest snapshots (light and heavy) found: ADAPT_BENCH_DATA=synthetic"; exit 1; }
	say "real guest data: base $LIGHT, changes from $HEAVY"
	cp --sparse=always "$LIGHT/disk.img" "$LIGHT/memory.img" "$work/base/" || { say "cannot copy the base"; exit 1; }
	MEMARG=(--memory "$work/base/memory.img")
	for s in $SIZES; do guest_set "$work/ovl-$s" "$s" || { say "cannot build the data set"; exit 1; }; done
	DESC="a real guest's changes (light -> heavy snapshot of the realistic guest, $(($(stat -c %s "$work/base/memory.img") >> 20)) MiB RAM)"
else
	say "synthetic data"
	MEMARG=(--memory-size 32M)
	[ "$SCHED_MB" -gt 100 ] && SCHED_MB=100
	for s in $SIZES; do synthetic_set "$work/ovl-$s" "$s" || exit 1; done
	DESC="synthetic changes of a 128 MiB disk"
fi

"$WAN" up $NAME 1gbit || exit 1
B=$("$WAN" addr $NAME b)

# ---- competing load ------------------------------------------------------------------------
LOAD_PID=
load_start() {   # load_start SECONDS N: N busy processes from SECONDS from now on
	: >"$work/hogs"
	(
		sleep "$1"
		for _ in $(seq "$2"); do
			sh -c 'while :; do :; done' &
			echo $! >>"$work/hogs"
		done
		wait
	) </dev/null >/dev/null 2>&1 &
	LOAD_PID=$!
}
load_stop() {
	[ -n "$LOAD_PID" ] || return 0
	kill "$LOAD_PID" 2>/dev/null
	[ -f "$work/hogs" ] && xargs -r kill <"$work/hogs" 2>/dev/null
	wait "$LOAD_PID" 2>/dev/null
	LOAD_PID=
}

# ---- transfers -----------------------------------------------------------------------------
# transfer1 MODE|adaptive LOG OVL LIMIT: one transfer; prints seconds, ">LIMIT" when stopped at
# LIMIT seconds, or FAIL. $prep (rate, schedule, load) runs just before the export starts.
transfer1() {
	local mode=$1 log=$2 ovl=$3 limit=$4 recv port t0 t1 rc irc
	recv=$(mktemp -u "$work/recv.XXXXXX")
	rm -f "$work/port"
	local quiet=-q
	[ -n "$LOGS" ] && quiet=-v   # (the import's info lines too: when it published)
	"$WAN" exec $NAME b nice -n "$RECV_NICE" handoff-import $quiet --listen "$B:0" --port-file "$work/port" \
		--disk "$work/base/disk.img" "${MEMARG[@]}" "$recv" 2>"$log.import" &
	local ipid=$!
	for _ in $(seq 1200); do [ -s "$work/port" ] && break; sleep 0.05; done
	port=$(cat "$work/port" 2>/dev/null)
	[ -n "$port" ] || { kill $ipid 2>/dev/null; echo FAIL; return; }
	rm -f "$ovl/export-pending"
	local args=(--mode "$mode" -T "$NCPU")
	[ "$mode" = adaptive ] && args=(--adaptive --progress=json "${ADAPT_ARGS[@]}")
	[ "$mode" != adaptive ] && [ -n "$LOGS" ] && args+=(--progress=json)
	eval "$prep"
	t0=$(date +%s.%N)
	"$WAN" exec $NAME a timeout "$limit" handoff-export -q "${args[@]}" --to "$B:$port" "$ovl" 2>"$log"
	rc=$?
	t1=$(date +%s.%N)
	load_stop
	"$WAN" stop $NAME
	# a failed export leaves the receiver listening
	[ $rc = 0 ] || kill $ipid 2>/dev/null
	wait $ipid; irc=$?
	rm -rf "$recv"
	if [ $rc = 124 ]; then echo ">$limit"; return; fi
	if [ $rc != 0 ] || [ $irc != 0 ]; then say "$mode: $(head -n 1 "$log") $(head -n 1 "$log.import")"; echo FAIL; return; fi
	awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f\n", b - a }'
}

# the median of REPEAT transfers (the first stopped or failed one ends it)
transfer() {
	local i t all=()
	for i in $(seq "$REPEAT"); do
		t=$(transfer1 "$@")
		case $t in FAIL|">"*) echo "$t"; return;; esac
		all+=("$t")
	done
	printf '%s\n' "${all[@]}" | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'
}

# modes in the order they are likely to do well for a row (so the cut-off bites the others)
order_modes() {   # $1: light | strong
	local want m out=
	if [ "$1" = light ]; then want="delta-lz4 xor-lz4 delta-zstd3 lz4 raw delta-zstd9"
	else want="delta-zstd9 delta-zstd3 delta-lz4 xor-lz4 lz4 raw"; fi
	for m in $want; do case " $MODES " in *" $m "*) out="$out $m";; esac; done
	for m in $MODES; do case " $out " in *" $m "*) ;; *) out="$out $m";; esac; done
	echo $out
}

# keep_log MODE LABEL: with ADAPT_BENCH_LOGS, keep the export's and the import's log of the cell
keep_log() {
	local f
	[ -n "$LOGS" ] || return 0
	f="$LOGS/$1-$(tr -c 'A-Za-z0-9.\n' '_' <<<"$2" | cut -c1-60).log"
	mkdir -p "$LOGS" && cp "$work/log.$1" "$f" && cp "$work/log.$1.import" "$f.import"
}

declare -A CELL
row() {   # row LABEL OVL ORDER PREP: PREP is eval'd before each export (rate, schedule, load)
	local label=$1 ovl=$2 order=$3 m t best=none bt=0 picks="" rel limit load
	prep=$4
	load=$(cut -d' ' -f1 /proc/loadavg)
	for m in $(order_modes "$order"); do
		limit=900
		[ "$best" != none ] && limit=$(awk -v b="$bt" -v c="$CUTOFF" 'BEGIN { l = int(b * c + 5); print l < 20 ? 20 : l }')
		t=$(transfer "$m" "$work/log.$m" "$ovl" "$limit")
		CELL[$m]=$t
		keep_log "$m" "$label"
		say "$label: $m $t"
		if [[ "$t" =~ ^[0-9.]+$ ]] && { [ "$best" = none ] || awk -v a="$t" -v b="$bt" 'BEGIN{exit !(a < b)}'; }; then
			best=$m bt=$t
		fi
	done
	if [ $adaptive = 1 ]; then
		t=$(transfer adaptive "$work/log.adaptive" "$ovl" 900)
		say "$label: adaptive $t"
		keep_log adaptive "$label"
		picks=$(grep -o '"mode":"[^"]*"' "$work/log.adaptive" | cut -d'"' -f4 | uniq -c |
			awk '{ printf "%s%s", s, $2 ($1 > 1 ? "x" $1 : ""); s = ">" }')
		rel=-
		[[ "$t" =~ ^[0-9.]+$ ]] && [ "$bt" != 0 ] && rel=$(awk -v a="$t" -v b="$bt" 'BEGIN{printf "%.2f", a / b}')
	else
		t="n/a" rel="-"
	fi
	printf '| %s | %s |' "$label" "$load"
	for m in $MODES; do printf ' %s |' "${CELL[$m]:--}"; done
	printf ' %s | %s (%s) | %s | %s |\n' "$t" "$best" "$bt" "$rel" "${picks:--}"
	CELL=()
}

echo
echo "Transfer time in seconds (median of $REPEAT) of $DESC: at constant rates, a sample"
echo "of the changes growing with the rate so that cells measure the steady state (MiB in the link"
echo "column; ratios differ between samples, compare within a row), $SCHED_MB MiB under the schedules."
echo "Static modes run -T $NCPU like adaptive; '>T' = stopped at T s (slower than $CUTOFF x the row's"
echo "best). adaptive/best < 1 means adaptive won. $NCPU cores, shared. The last column lists the"
echo "modes of adaptive's progress lines (a line every 0.5 s)."
echo "Start: $(uptime)"
echo
printf '| link | load | %s | adaptive | best static | adaptive/best | adaptive modes (x progress lines) |\n' "$(echo $MODES | sed 's/ / | /g')"
printf '|---|---|%s---|---|---|---|\n' "$(for _ in $MODES; do printf -- '---|'; done)"
for what in $ROWS; do
	case $what in
	rates)
		for r in $RATES; do
			o=strong; [ "$r" -ge 100 ] && o=light
			s=$(rate_mb "$r"); [ "$DATA" = synthetic ] && [ "$s" -gt 100 ] && s=100
			row "${r} Mbit/s, $s MiB" "$work/ovl-$s" $o "\"\$WAN\" rate $NAME ${r}mbit"
		done ;;
	schedule)
		first=${SCHEDULE%% *}; first=${first%%:*}
		row "schedule $(echo "$SCHEDULE" | sed 's/mbit:/@/g; s/ / > /g') (Mbit/s@s, looped), $SCHED_MB MiB" "$work/ovl-$SCHED_MB" strong \
			"\"\$WAN\" rate $NAME $first; \"\$WAN\" schedule $NAME \"$SCHEDULE\" --loop >/dev/null" ;;
	load)
		read -r lrate lat ln <<<"$LOAD"
		row "$lrate, $ln busy processes from ${lat} s on, $SCHED_MB MiB" "$work/ovl-$SCHED_MB" strong \
			"\"\$WAN\" rate $NAME $lrate; load_start $lat $ln" ;;
	esac
done
echo
echo "End: $(uptime)"
