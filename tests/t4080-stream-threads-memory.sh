#!/usr/bin/env bash
# t4080 — parallel encoding and decoding give the same result whatever the thread count
# (export -T 1/2/4 writes the same bytes, import -T 1/2/4 builds the same images, in a cheap and
# an expensive mode), errors in a frame decoded in parallel are still caught and reported in
# order, and memory stays bounded on a large sparse image: an 8 GiB memory image with a few MB
# dirty is exported and imported with a peak resident set under 200 MB (-v reports it).
. "$HANDOFF_SRC/tests/lib.sh"
mk=$HANDOFF_BUILD/tests/mkoverlay
export HANDOFF_CACHE=$PWD/cache
[ -x "$mk" ] || bail "mkoverlay helper not built"

"$mk" mkbase disk.img 4M 1 && "$mk" mkbase mem.img 2M 2 || bail "cannot make bases"
"$mk" create src disk.img mem.img || bail "cannot create overlay"
cp -a src dst0
"$mk" write src 5 400 && "$mk" copy src disk 0 memory 1048576 262144 || bail "writes"
handoff-export -q src -o /dev/null 2>/dev/null || bail "first export (creates the sender id)"

for mode in delta-zstd3 best; do
	for T in 1 2 4; do
		cp -a src src.$mode.$T
		handoff-export -q --mode $mode -T $T src.$mode.$T -o $mode.$T.hs 2>/dev/null ||
			not_ok "$mode: export -T $T"
	done
	check "$mode: export -T 2 writes the same bytes as -T 1" cmp -s $mode.1.hs $mode.2.hs
	check "$mode: export -T 4 writes the same bytes as -T 1" cmp -s $mode.1.hs $mode.4.hs
	for T in 1 2 4; do
		rm -rf d.$T; cp -a dst0 d.$T
		check "$mode: import -T $T" handoff-import -q -T $T d.$T $mode.1.hs
	done
	want=$("$mk" hash src)
	is "$("$mk" hash d.1)" "$want" "$mode: import -T 1 equals the sender"
	is "$("$mk" hash d.2)" "$want" "$mode: import -T 2 equals the sender"
	is "$("$mk" hash d.4)" "$want" "$mode: import -T 4 equals the sender"
done
check_fail "-T 0 is refused" handoff-import -q -T 0 d.1 best.1.hs 2>/dev/null

# a flipped bit in a late frame of a parallel import: refused, nothing applied
handoff-export -q --mode delta-zstd3 --frame-size 64K src.delta-zstd3.1 -o small.hs 2>/dev/null
size=$(stat -c %s small.hs)
cp small.hs bad.hs
printf '\xff' | dd of=bad.hs bs=1 seek=$((size - 300)) conv=notrunc status=none
rm -rf d.bad; cp -a dst0 d.bad
before=$("$mk" hash d.bad)
handoff-import -q -T 4 d.bad bad.hs 2>err
is "$?" 3 "corrupt late frame, -T 4: refused (exit 3)"
is "$("$mk" hash d.bad)" "$before" "corrupt late frame, -T 4: nothing applied"
check "small frames, -T 4: verify-only accepts the good stream" handoff-import -q -T 4 --verify-only d.bad small.hs
# a truncated stream in parallel: the frames before the cut decode, then truncation is reported
head -c $((size / 2)) small.hs >cut.hs
handoff-import -q -T 4 --verify-only d.bad cut.hs 2>err
is "$?" 3 "truncated stream, -T 4: refused (exit 3)"
check "truncated stream, -T 4: says so" grep -q "ends early" err

# bounded memory: 8 GiB memory image (all-zero base), 64 MiB disk, a few MB dirty
truncate -s 64M bigdisk.img
"$mk" create big bigdisk.img zero:8G || bail "cannot create the large overlay"
cp -a big bigdst
"$mk" write big 9 300 64K || bail "large overlay writes"
handoff-export -v --mode delta-zstd3 -T 2 big -o big.hs 2>tx.log
is "$?" 0 "8 GiB image: export"
kib=$(sed -n 's/.*peak memory \([0-9]*\) KiB.*/\1/p' tx.log)
check "8 GiB image: export peak memory ${kib:-?} KiB < 200 MB" test "${kib:-999999}" -lt 204800
handoff-import -v -T 2 bigdst big.hs 2>rx.log
is "$?" 0 "8 GiB image: import (digest of the reconstructed chunks verified)"
kib=$(sed -n 's/.*peak memory \([0-9]*\) KiB.*/\1/p' rx.log)
check "8 GiB image: import peak memory ${kib:-?} KiB < 200 MB" test "${kib:-999999}" -lt 204800
done_testing
