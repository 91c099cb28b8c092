#!/usr/bin/env bash
# t4100-pipeline-modes.sh — the data-reduction core end to end on a small synthetic dataset
# (tests/helpers/mkdataset): every mode encodes the dirty chunks of a disk and a memory image,
# every record decodes back to the new content (pipebench --verify), the output does not depend
# on the number of threads, and the modes rank as they should (more CPU, fewer bytes; the far
# index pays on memory).
. "${HANDOFF_SRC:-$(dirname "$0")/..}/tests/lib.sh"
mk=$HANDOFF_BUILD/tests/mkdataset pb=$HANDOFF_BUILD/tests/pipebench
[ -x "$mk" ] && [ -x "$pb" ] || skip_all "mkdataset or pipebench not built"

mkdir d
check "synthetic base disk" "$mk" synth-disk d/disk.base 16M 5
check "disk changes" "$mk" disk d/disk.base d/disk.new d/disk.dirty 0.08 6
check "memory pair" "$mk" mem d/disk.base d/mem.base d/mem.new d/mem.dirty 16M 0.05 7
"$mk" disk d/disk.base d/again.new d/again.dirty 0.08 6
check "mkdataset is deterministic" cmp -s d/disk.new d/again.new
check "dirty list is deterministic" cmp -s d/disk.dirty d/again.dirty
rm -f d/again.*
is "$(wc -l <d/disk.dirty)" 327 "8 % of 4096 chunks dirty"

declare -A bytes
for m in $("$pb" --list-modes | awk '{print $1}'); do
	one=$("$pb" --cache cache -m "$m" -T 1 --verify d 2>err) || { not_ok "$m: encode + verify (T=1): $(cat err)"; continue; }
	two=$("$pb" --cache cache -m "$m" -T 2 --verify d 2>err) || { not_ok "$m: encode + verify (T=2): $(cat err)"; continue; }
	ok "$m: every record decodes to the new content"
	is "$(echo "$two" | awk '{print $2}')" "$(echo "$one" | awk '{print $2}')" "$m: same bytes with 1 and 2 threads"
	bytes[$m]=$(echo "$one" | awk '{print $2}')
done
check "lz4 < raw" test "${bytes[lz4]}" -lt "${bytes[raw]}"
check "xor-lz4 < lz4" test "${bytes[xor-lz4]}" -lt "${bytes[lz4]}"
check "delta-zstd3 < delta-lz4" test "${bytes[delta-zstd3]}" -lt "${bytes[delta-lz4]}"
check "best < delta-zstd3" test "${bytes[best]}" -lt "${bytes[delta-zstd3]}"
far=$("$pb" --cache cache -m delta-zstd3 --only memory d | awk '{print $2}')
nofar=$("$pb" --cache cache -m delta-zstd3 --far 0 --only memory d | awk '{print $2}')
check "memory: far anchors shrink the stream ($far < $nofar)" test "$far" -lt "$nofar"
check "base index cache written" test -n "$(ls cache/*.idx 2>/dev/null)"
check_fail "unknown mode refused" "$pb" -m no-such-mode d
done_testing
