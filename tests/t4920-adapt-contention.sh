#!/usr/bin/env bash
# exclusive: measures how much CPU the exporter gets, so it must not share the cores with other tests
# t4920-adapt-contention.sh — the adaptive exporter under CPU contention: the same transfer over
# the same emulated link (scripts/wan.sh, 15 Mbit/s), once with the exporter alone on a CPU and
# once sharing that CPU with 15 busy processes, must move to cheaper compression (a lower mean
# rank, over its progress lines, in `handoff-export --list-modes`), report the contention it saw
# (cpu_avail in --progress=json), and leave the receiver's images byte-identical both times.
#
# Why it does not flake (t4910's unpinned version did, so it moved to make test-long):
#  - the exporter and the busy loops are pinned with taskset to one CPU, the receiver to another:
#    the loops take a known share from the exporter (1/16) and none from the receiver, whose acks
#    therefore measure the link, not the load; the receiver runs at nice -10, so other work on
#    the machine does not starve it either (a starved receiver is a slow, erratic link to the
#    exporter); tbf and the veth run in softirq context, which busy user processes do not delay
#    at 15 Mbit/s;
#  - the exporter's CPU is the less busy one at the start, and the "alone" run must have seen at
#    least 0.15 of it (else other work on the machine broke the premise: it is run once more on
#    the other CPU, then the test skips rather than guess);
#  - the margins are wide: 32 MiB of source text, where zstd modes make 0.21 of the input and lz4
#    modes 0.32 (zstd-3 ~50 MB/s per core, lz4 ~500). At 15 Mbit/s the link, not the CPU, bounds
#    zstd-3 on anything above a sixth of a core, and then it consumes 1.5x what lz4 does; with
#    1/16 of a core zstd-3 consumes ~3 MB/s against ~6 MB/s for lz4 (link-bound). Each run keeps
#    its order from about a fifth of a core (alone) down to 1/10 (busy), and the engine switches
#    only for a 10 % gain.
. "$(dirname "$0")/lib.sh"
need_wan
HOGS=${T4920_HOGS:-15}
command -v taskset >/dev/null || skip_all "taskset missing (util-linux)"
need_export_opts --adaptive --progress --list-modes
need_fuse
# two CPUs we may use: the exporter's and the receiver's
mapfile -t CPUS < <(taskset -cp $$ | sed 's/.*: //' | tr ',' '\n' |
	awk -F- '{ if (NF == 2) for (i = $1; i <= $2; i++) print i; else print $1 }')
[ "${#CPUS[@]}" -ge 2 ] || skip_all "needs two CPUs (one for the exporter and its neighbours, one for the receiver)"
MODES=$(handoff-export --list-modes 2>/dev/null | awk '{print $1}')
NMODES=$(wc -l <<<"$MODES")
[ "$NMODES" -ge 3 ] || bail "handoff-export --list-modes lists fewer than three modes"
rank() { grep -nxF -- "$1" <<<"$MODES" | cut -d: -f1; }
[ -n "$(rank lz4)" ] && [ -n "$(rank xor-zstd1)" ] || bail "expected modes lz4 and xor-zstd1 in --list-modes"

NAME=tc$$
HOG_PIDS=()
stop_hogs() { local p; for p in "${HOG_PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null; done; HOG_PIDS=(); }
trap 'stop_hogs; "$WAN" down $NAME >/dev/null 2>&1; t_cleanup' EXIT

# a 64 MiB base and 32 MiB of changes: C headers and Python source, distinct and compressible
mkdir -p tree mnt
find /usr/share/doc -type f -printf '%s %p\n' 2>/dev/null | awk '{ s += $1; if (s > 40e6) exit; sub(/^[0-9]+ /, ""); print }' |
	xargs -d '\n' cp --parents -t tree 2>/dev/null
mkfs.ext4 -q -F -d tree base.img 64M >/dev/null 2>&1 || bail "mkfs.ext4 failed"
rm -rf tree
find /usr/include /usr/lib/python3 /usr/share/perl /usr/share/perl5 -type f \( -name '*.h' -o -name '*.py' -o -name '*.pm' \) 2>/dev/null |
	sort | xargs -d '\n' cat 2>/dev/null | head -c 32M >text
[ "$(stat -c %s text)" -ge $((28 << 20)) ] || skip_all "not enough source text on this system for the data set"
mount_overlay ovl mnt --disk base.img --memory-size 16M || bail "cannot mount the overlay"
dd if=text of=mnt/disk bs=1M seek=8 conv=notrunc status=none
seal_overlay ovl mnt || bail "cannot seal the data set"
sha_disk=$SEAL_DISK sha_mem=$SEAL_MEM
rm -f text

# the less busy of the first two CPUs for the exporter, measured over half a second
busy_ticks() { awk -v c="cpu$1" '$1 == c { print $2 + $3 + $4 + $7 + $8 + $9 }' /proc/stat; }
a0=$(busy_ticks "${CPUS[0]}") b0=$(busy_ticks "${CPUS[1]}"); sleep 0.5
a1=$(busy_ticks "${CPUS[0]}") b1=$(busy_ticks "${CPUS[1]}")
if [ $((a1 - a0)) -le $((b1 - b0)) ]; then XCPU=${CPUS[0]} RCPU=${CPUS[1]}; else XCPU=${CPUS[1]} RCPU=${CPUS[0]}; fi

"$WAN" up $NAME 15mbit 2>err || bail "wan.sh up: $(cat err)"
B=$("$WAN" addr $NAME b)
n=0

# transfer WHAT: one adaptive transfer, exporter on $XCPU, receiver on $RCPU. Sets SETTLED (the
# mode named in the most progress lines), RANK (its place in --list-modes), MEAN (the mean rank
# over the progress lines, i.e. over time) and AVAIL (the median cpu_avail of the progress lines);
# checks the receiver's images.
transfer() {
	local what=$1 recv port rc irc
	n=$((n + 1)); recv=recv$n
	rm -f port ovl/export-pending
	"$WAN" exec $NAME b nice -n -10 taskset -c "$RCPU" handoff-import -q --listen "$B:0" --port-file port \
		--disk base.img --memory-size 16M $recv 2>import$n.err &
	local ipid=$!
	for _ in $(seq 200); do [ -s port ] && break; sleep 0.05; done
	"$WAN" exec $NAME a taskset -c "$XCPU" handoff-export -T 1 --adaptive --progress=json \
		--to "$B:$(cat port)" ovl 2>progress$n
	rc=$?
	wait $ipid; irc=$?
	is "$rc:$irc" "0:0" "$what: export and import succeed"
	SETTLED=$(grep -o '"mode":"[^"]*"' progress$n | cut -d'"' -f4 | sort | uniq -c | sort -rn | awk 'NR==1{print $2}')
	RANK=$(rank "$SETTLED")
	MEAN=$(grep -o '"mode":"[^"]*"' progress$n | cut -d'"' -f4 | awk -v list="$(tr '\n' ' ' <<<"$MODES")" '
		BEGIN { n = split(list, m, " "); for (i = 1; i <= n; i++) r[m[i]] = i }
		{ s += r[$1]; k++ } END { printf "%.2f\n", k ? s / k : 0 }')
	AVAIL=$(grep -o '"cpu_avail":[0-9.]*' progress$n | cut -d: -f2 | sort -n |
		awk '{ v[NR] = $1 } END { print NR ? v[int((NR + 1) / 2)] : -1 }')
	echo "# $what: modes $(grep -o '"mode":"[^"]*"' progress$n | cut -d'"' -f4 | uniq -c |
		awk '{ printf "%s%s x%s", s, $2, $1; s = ", " }'); mean rank $MEAN; median cpu_avail $AVAIL"
	mkdir -p rmnt$n
	if mount_overlay $recv rmnt$n; then
		is "$(sha256sum <rmnt$n/disk | cut -d' ' -f1)" "$sha_disk" "$what: receiver's disk is byte-identical"
		is "$(sha256sum <rmnt$n/memory | cut -d' ' -f1)" "$sha_mem" "$what: receiver's memory is byte-identical"
		umount_overlay rmnt$n
	else
		not_ok "$what: cannot mount the receiver's overlay"
	fi
	rm -rf $recv
	[ -n "$RANK" ] || RANK=0
}

transfer "alone on CPU $XCPU"
if awk -v a="$AVAIL" 'BEGIN { exit !(a < 0.15) }'; then
	echo "# CPU $XCPU was busy with other work (cpu_avail $AVAIL): trying CPU $RCPU"
	t=$XCPU XCPU=$RCPU RCPU=$t
	transfer "alone on CPU $XCPU"
	awk -v a="$AVAIL" 'BEGIN { exit !(a < 0.15) }' &&
		skip_all "both CPUs are too busy with other work for a contention baseline (cpu_avail $AVAIL)"
fi
idle=$RANK idle_mode=$SETTLED idle_avail=$AVAIL idle_mean=$MEAN

for _ in $(seq "$HOGS"); do
	taskset -c "$XCPU" sh -c 'while :; do :; done' &
	HOG_PIDS+=($!)
done
transfer "sharing CPU $XCPU with $HOGS busy processes"
stop_hogs
loaded=$RANK loaded_mode=$SETTLED loaded_avail=$AVAIL loaded_mean=$MEAN

# a zstd mode: on this text xor-zstd1 and delta-zstd3 make about the same bytes (nothing of it is in
# the base), and runs split their lines between the two (6 to 5, 5 to 6); the premise is zstd (0.21
# of the input) against lz4 (0.32), the lz4 modes all rank below xor-zstd1
check "alone: settles on zstd or stronger ('$idle_mode', rank $idle)" [ "$idle" -ge "$(rank xor-zstd1)" ]
check "busy: the engine saw the contention (cpu_avail $loaded_avail, alone $idle_avail)" \
	awk -v l="$loaded_avail" -v i="$idle_avail" 'BEGIN { exit !(l >= 0 && l < i / 2) }'
# over the whole transfer (the mean rank of the progress lines, i.e. over time): under heavy
# contention the engine splits its time between the equivalent lz4 modes and still visits zstd-3,
# so the single most frequent mode is not a stable measure (2 of 20 runs at load 8-16 had zstd-3
# as the most frequent line; the mean rank dropped in all 20, by 0.44 to 2.33)
echo "# most frequent mode: '$idle_mode' (rank $idle) alone, '$loaded_mode' (rank $loaded) busy"
check "busy CPU moves to cheaper compression (mean rank over time $idle_mean -> $loaded_mean)" \
	awk -v l="$loaded_mean" -v i="$idle_mean" 'BEGIN { exit !(l > 0 && l < i) }'
done_testing
