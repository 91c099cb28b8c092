#!/usr/bin/env bash
# t4940-adapt-file-frames.sh — an adaptive export to a file is made of full-size frames. The
# adaptive exporter starts a transfer with small runs and frames while it learns the link (so the
# first decisions and the drain tests come soon); a file or a pipe has no link to learn, and its
# export once spent the engine's whole learning hold (a second) in 256 KiB frames, which compress
# far worse (640 MiB of a guest's changes: 80.2 MB against 59.4 for the same mode's 16 MiB frames).
# Here 24 MiB of random data (filling a 16 MiB memory image and most of a 16 MiB disk) must go in
# frames of 2 MiB or more on average, and the stream must still apply to the same images.
. "$HANDOFF_SRC/tests/lib.sh"
mk=$HANDOFF_BUILD/tests/mkoverlay
export HANDOFF_CACHE=$PWD/cache
[ -x "$mk" ] || bail "mkoverlay helper not built"
need_export_opts --adaptive

"$mk" mkbase disk.img 16M 1 && "$mk" mkbase mem.img 16M 2 || bail "cannot make bases"
"$mk" create src disk.img mem.img || bail "cannot create overlay"
"$mk" fill src memory 3 >/dev/null && "$mk" write src 4 3000 65536 >/dev/null || bail "cannot write the data set"
"$mk" checkpoint src >/dev/null || bail "cannot checkpoint"

check "adaptive export to a file" handoff-export -q --adaptive src -o a.hs
json=$(handoff-inspect stream --overlay src --json a.hs 2>/dev/null)
frames=$(grep -o '"frames":[0-9]*' <<<"$json" | head -n 1 | cut -d: -f2)
bytes=$(grep -o '"decoded_payload":[0-9]*' <<<"$json" | cut -d: -f2)
echo "# $frames frames, $bytes bytes of records"
check "frames of 2 MiB or more on average ($frames frames for $bytes bytes of records)" \
	awk -v f="$frames" -v b="$bytes" 'BEGIN { exit !(f > 0 && b > 20e6 && b / f >= 2 * 1048576) }'
check "the stream applies" handoff-import -q --disk disk.img --memory mem.img dst a.hs
is "$("$mk" hash dst)" "$("$mk" hash src)" "receiver equals sender"
done_testing
