#!/usr/bin/env bash
# exclusive: measures the link through the exporter and receiver, which other tests starve of CPU
# t4930-adapt-link-change.sh — the adaptive exporter follows a link whose rate drops mid-transfer.
# The transfer starts at 25 Mbit/s and the link drops to 5 Mbit/s 1.5 s in (scripts/wan.sh); the
# data are 12 MiB of random bytes (no mode makes them smaller, so the transfer lasts about 14 s
# whatever mode runs). Two seconds after the drop, and from then to the end, every progress line
# must report the bandwidth as the link's new rate (within a factor of two), and the receiver's
# images must be byte-identical to the sender's.
# Why: the engine once learnt the link from frame acknowledgements only, one sample a frame, and
# frames are sized to seconds of the link (they compress better large): after such a drop it had
# no sample for the length of a frame, 20 s at 5 Mbit/s, and took the silence for a fat link.
# Skips until handoff-export has --adaptive and --progress=json.
. "$(dirname "$0")/lib.sh"
need_wan
need_export_opts --adaptive --progress
need_fuse

NAME=tl$$
trap '"$WAN" down $NAME >/dev/null 2>&1; t_cleanup' EXIT

mkdir -p mnt
truncate -s 64M base.img
mount_overlay ovl mnt --disk base.img --memory-size 16M || bail "cannot mount the overlay"
head -c 12M /dev/urandom | dd of=mnt/disk bs=1M seek=8 conv=notrunc status=none
seal_overlay ovl mnt || bail "cannot seal the data set"
sha_disk=$SEAL_DISK sha_mem=$SEAL_MEM

"$WAN" up $NAME 25mbit 2>err || bail "wan.sh up: $(cat err)"
B=$("$WAN" addr $NAME b)
"$WAN" exec $NAME b handoff-import -q --listen "$B:0" --port-file port --disk base.img --memory-size 16M recv 2>import.err &
ipid=$!
for _ in $(seq 200); do [ -s port ] && break; sleep 0.05; done
(sleep 1.5; "$WAN" rate $NAME 5mbit) &
"$WAN" exec $NAME a handoff-export --adaptive --progress=json --to "$B:$(cat port)" ovl 2>progress >/dev/null
rc=$?
wait $ipid; irc=$?
is "$rc:$irc" "0:0" "export and import succeed"
lines=$(grep -c '"elapsed_s":' progress)
# lines from 3.5 s on, until the last byte was acknowledged (the lines after it repeat the last estimate)
bad=$(awk -F'[:,}]' '/"elapsed_s":/ {
	for (i = 1; i < NF; i++) { if ($i ~ /"bandwidth_bps"/) bw = $(i + 1); if ($i ~ /"elapsed_s"/) t = $(i + 1) }
	if (t >= 3.5) { n++; if (bw < 2.5e6 || bw > 10e6) { b++; printf "%s:%.2g ", t, bw } } }
	END { printf "%d of %d", b, n }' progress)
echo "# lines off (elapsed_s:bandwidth_bps): $bad"
count=$(grep -o '[0-9]* of [0-9]*$' <<<"$bad")
check "every progress line from 2 s after the drop reports 5 Mbit/s within a factor of 2 ($count off, $lines lines)" \
	awk -v s="$count" 'BEGIN { split(s, a, " of "); exit !(a[1] == 0 && a[2] >= 10) }'
mkdir -p rmnt
if mount_overlay recv rmnt; then
	is "$(sha256sum <rmnt/disk | cut -d' ' -f1)" "$sha_disk" "receiver's disk is byte-identical"
	is "$(sha256sum <rmnt/memory | cut -d' ' -f1)" "$sha_mem" "receiver's memory is byte-identical"
	umount_overlay rmnt
else
	not_ok "cannot mount the receiver's overlay"
fi
done_testing
