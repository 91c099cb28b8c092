#!/usr/bin/env bash
# exclusive: compares CPU-bound mode choices, so it must not share the cores with other tests
# t4910-adapt-shaped.sh — the adaptive exporter on an emulated WAN (scripts/wan.sh): at 5 Mbit/s
# it must settle on a stronger mode than at 1 Gbit/s, with a competing busy process per core it
# must move toward cheaper compression than on an idle machine at the same rate, and every
# transfer must leave the receiver's images byte-identical to the sender's.
# Modes are ranked by their order in `handoff-export --list-modes` (cheapest first); the mode a
# run "settled on" is the one its last --progress=json line names. The engine keeps its first
# mode until acknowledgements told it something about the link, and needs a second or so of them
# to learn a fat one, so the 1 Gbit/s transfer gets more data: 128 MiB of shared libraries (a 6 MiB
# export is over in a tenth of a second there), on which zstd is not much better than lz4.
# Skips until handoff-export has --adaptive, --progress=json and --list-modes.
. "$(dirname "$0")/lib.sh"
need_wan
need_export_opts --adaptive --progress --list-modes
need_fuse
MODES=$(handoff-export --list-modes 2>/dev/null | awk '{print $1}')
[ "$(wc -l <<<"$MODES")" -ge 2 ] || bail "handoff-export --list-modes lists fewer than two modes"

NAME=ta$$
BUSY=()
trap '"$WAN" down $NAME >/dev/null 2>&1; for p in "${BUSY[@]:-}"; do [ -n "$p" ] && kill $p 2>/dev/null; done; t_cleanup' EXIT

# a 64 MiB base and 46 MiB of changes: text, random, copies of base blocks, and 40 MiB of memory
# of the same text over and over, each copy a few bytes further on (no two chunks alike, and a
# frame's codec finds them all): the exporter's first two frames are full-size once the thin link
# shows itself (export.c, warm_grow) and go out in the mode chosen before the link was known, so
# the data must outlast them to see what the engine chose for the link, yet fit in seconds
mkdir -p tree mnt
find /usr/share/doc -type f -printf '%s %p\n' 2>/dev/null | awk '{ s += $1; if (s > 40e6) exit; sub(/^[0-9]+ /, ""); print }' |
	xargs -d '\n' cp --parents -t tree 2>/dev/null
mkfs.ext4 -q -F -d tree base.img 64M >/dev/null 2>&1 || bail "mkfs.ext4 failed"
find /usr/share/doc -type f -name copyright | head -n 3000 | xargs cat 2>/dev/null | head -c 3M >text
mount_overlay ovl mnt --disk base.img --memory-size 48M || bail "cannot mount the overlay"
dd if=text of=mnt/disk bs=64K seek=16 conv=notrunc status=none
head -c 2M /dev/urandom | dd of=mnt/disk bs=64K seek=128 conv=notrunc status=none
dd if=base.img of=mnt/disk bs=64K skip=300 seek=200 count=16 conv=notrunc status=none
for i in $(seq 14); do printf 'copy %d\n' "$i"; cat text; done | head -c 40M | dd of=mnt/memory bs=64K seek=8 conv=notrunc status=none
seal_overlay ovl mnt || bail "cannot seal the first data set"
sha_disk=$SEAL_DISK sha_mem=$SEAL_MEM
# the larger set for the fat link: the same disk changes, and 128 MiB of memory of shared libraries
find /usr/lib -type f -name '*.so*' -size +100k 2>/dev/null | sort | head -n 400 | xargs cat 2>/dev/null | head -c 128M >text2
[ "$(stat -c %s text2)" -ge $((100 << 20)) ] || skip_all "not enough shared libraries on this system for the data set"
mount_overlay ovl2 mnt --disk base.img --memory-size 136M || bail "cannot mount the second overlay"
dd if=text of=mnt/disk bs=64K seek=16 conv=notrunc status=none
head -c 2M /dev/urandom | dd of=mnt/disk bs=64K seek=128 conv=notrunc status=none
dd if=base.img of=mnt/disk bs=64K skip=300 seek=200 count=16 conv=notrunc status=none
dd if=text2 of=mnt/memory bs=1M conv=notrunc status=none
seal_overlay ovl2 mnt || bail "cannot seal the second data set"
sha_disk2=$SEAL_DISK sha_mem2=$SEAL_MEM
rm -f text2

"$WAN" up $NAME 5mbit 2>err || bail "wan.sh up: $(cat err)"
B=$("$WAN" addr $NAME b)
n=0

# transfer WHAT [OVL MEMSIZE SHA_DISK SHA_MEM]: adaptive transfer at the current rate (of ovl by
# default); the settled mode's rank in $RANK; checks the result
transfer() {
	local what=$1 o=${2:-ovl} msize=${3:-48M} want_disk=${4:-$sha_disk} want_mem=${5:-$sha_mem} recv port rc irc settled
	n=$((n + 1)); recv=recv$n
	rm -f port $o/export-pending
	"$WAN" exec $NAME b handoff-import -q --listen "$B:0" --port-file port --disk base.img --memory-size $msize $recv 2>import$n.err &
	local ipid=$!
	for _ in $(seq 200); do [ -s port ] && break; sleep 0.05; done
	# each line stamped with the time it arrived
	"$WAN" exec $NAME a handoff-export --adaptive --progress=json --to "$B:$(cat port)" $o 2>&1 >/dev/null |
		while IFS= read -r l; do printf '%s %s\n' "$EPOCHREALTIME" "$l"; done >progress$n
	rc=${PIPESTATUS[0]}
	wait $ipid; irc=$?
	is "$rc:$irc" "0:0" "$what: export and import succeed"
	# the mode of the last line: what the engine chose once it had measured the link (on the fat
	# link it starts from a guess and needs half of the two seconds to learn it)
	settled=$(grep -o '"mode":"[^"]*"' progress$n | tail -n 1 | cut -d'"' -f4)
	RANK=$(grep -nxF -- "$settled" <<<"$MODES" | cut -d: -f1)
	if [ -n "$RANK" ]; then ok "$what: settled on '$settled' (rank $RANK of $(wc -l <<<"$MODES"))"
	else not_ok "$what: no known mode in the progress lines ('$settled')"; RANK=0; fi
	check "$what: progress lines carry mode, bandwidth_bps, ratio, bytes_sent, eta_s" \
		grep -q '"mode":.*"bandwidth_bps":.*"ratio":.*"bytes_sent":.*"eta_s":' progress$n
	mkdir -p rmnt$n
	if mount_overlay $recv rmnt$n; then
		is "$(sha256sum <rmnt$n/disk | cut -d' ' -f1)" "$want_disk" "$what: receiver's disk is byte-identical"
		is "$(sha256sum <rmnt$n/memory | cut -d' ' -f1)" "$want_mem" "$what: receiver's memory is byte-identical"
		umount_overlay rmnt$n
	else
		not_ok "$what: cannot mount the receiver's overlay"
	fi
}

transfer "5 Mbit/s"; thin=${RANK:-0}
# a progress line every half second, also while the sender waits for acknowledgements (its
# window is full, or everything is encoded and the link drains the rest): from the first line to
# the end of the export (its last message), no gap of 1.5 s or more
gap=$(awk '/"mode":/ { on = 1 } on { if (p) { g = $1 - p; if (g > m) m = g } p = $1 } END { printf "%.2f", m }' progress1)
lines=$(grep -c '"mode":' progress1)
check "5 Mbit/s: progress lines keep coming while the link drains ($lines lines, largest gap $gap s)" \
	awk -v g="$gap" -v n="$lines" 'BEGIN { exit !(g < 1.5 && n >= 4) }'
last_eta=$(grep '"mode":' progress1 | tail -n 1 | grep -o '"eta_s":[^,]*' | cut -d: -f2)
check "5 Mbit/s: the last progress line has an ETA of zero (eta_s $last_eta)" awk -v e="$last_eta" 'BEGIN { exit !(e != "null" && e + 0 < 0.5) }'
# while frames are on their way the ETA counts them: no zero ETA before the last line
early0=$(grep '"mode":' progress1 | head -n -1 | grep -c '"eta_s":0\.0,')
is "$early0" 0 "5 Mbit/s: no ETA of zero while bytes are still unacknowledged"
"$WAN" rate $NAME 1gbit
transfer "1 Gbit/s" ovl2 136M "$sha_disk2" "$sha_mem2"; fat=${RANK:-0}
# The fat transfer lasts a second and a half; the engine decides on the first second of acks, and
# about one run in twelve ends where it started (delta-zstd3) or a step stronger. A second try
# tells a wrong start from an engine that does not lighten on a fat link at all.
if [ "$thin" -le "$fat" ]; then
	echo "# 1 Gbit/s: ended on rank $fat, not lighter than rank $thin at 5 Mbit/s; a second try"
	transfer "1 Gbit/s, second try" ovl2 136M "$sha_disk2" "$sha_mem2"; fat=${RANK:-0}
fi
if [ "$thin" -gt "$fat" ]; then ok "stronger mode at 5 Mbit/s (rank $thin) than at 1 Gbit/s (rank $fat)"
else not_ok "stronger mode at 5 Mbit/s (rank $thin) than at 1 Gbit/s (rank $fat)"; fi

# CPU contention at a rate where the idle machine compresses hard, with busy loops anywhere on the
# machine. Unpinned, the loops also slow the receiver and its acks, which can make stronger
# compression look right; so this part runs in make test-long (an otherwise idle machine).
# t4920-adapt-contention.sh is the make check version: exporter and loops pinned to one CPU, the
# receiver to the other. The contention decision itself is tested deterministically in test_adapt.
if [ "${HANDOFF_LONG:-0}" = 1 ]; then
	"$WAN" rate $NAME 25mbit
	transfer "25 Mbit/s, idle"; idle=${RANK:-0}
	for _ in $(seq $((3 * $(nproc)))); do sh -c 'while :; do :; done' & BUSY+=($!); done
	transfer "25 Mbit/s, $((3 * $(nproc))) busy processes"; loaded=${RANK:-0}
	kill "${BUSY[@]}"; BUSY=()
	check "25 Mbit/s, idle: compresses harder than the cheapest mode (rank $idle)" [ "$idle" -gt 1 ]
	if [ "$loaded" -lt "$idle" ]; then
		ok "busy CPU moves toward cheaper compression (rank $idle -> $loaded)"
	else
		not_ok "busy CPU moves toward cheaper compression (rank $idle -> $loaded)"
	fi
else
	echo "# the unpinned CPU contention run is in make test-long (needs an idle machine); see t4920"
fi
done_testing
