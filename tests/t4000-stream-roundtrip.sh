#!/usr/bin/env bash
# t4000 — export/import round trips without FUSE: random writes on both images of an overlay
# (tests/helpers/mkoverlay), several incremental rounds in every mode, through files and pipes,
# with and without a key; after each round the receiver's full images equal the sender's (cmp),
# and --verify-only changes nothing.
. "$HANDOFF_SRC/tests/lib.sh"
mk=$HANDOFF_BUILD/tests/mkoverlay
export HANDOFF_CACHE=$PWD/cache     # base indexes of the delta modes
[ -x "$mk" ] || bail "mkoverlay helper not built"

same_images() {   # same_images A B DESC: cmp of both dumped images
	local a=$1 b=$2 d=$3
	"$mk" dump "$a" disk a.disk && "$mk" dump "$a" memory a.mem &&
	"$mk" dump "$b" disk b.disk && "$mk" dump "$b" memory b.mem || { not_ok "$d (dump failed)"; return; }
	if cmp -s a.disk b.disk && cmp -s a.mem b.mem; then ok "$d"; else not_ok "$d"; cmp a.disk b.disk | head -2; cmp a.mem b.mem | head -2; fi
}

"$mk" mkbase disk.img 4M 1 && "$mk" mkbase mem.img 2M 2 || bail "cannot make bases"
"$mk" create src disk.img mem.img || bail "cannot create overlay"
head -c 32 /dev/urandom >key

# first stream creates the receiver's overlay from the same bases
"$mk" write src 1 300
check "full export to a file" handoff-export -q src -o s0.hs --gen-file gen
is "$(cat gen)" 1 "--gen-file holds the closed generation"
check "import creates the receiver over --disk/--memory" handoff-import -q --disk disk.img --memory mem.img dst s0.hs
same_images src dst "round 0: receiver equals sender"

since=1 round=1
for mode in raw zstd lz4 lz4hc lzma-1 zstd-19 xor-lz4 delta-lz4 delta-zstd3 best raw; do
	"$mk" write src $((round + 10)) $((50 + round * 20))
	before=$("$mk" hash dst)
	keyopt=(); [ $((round % 2)) = 1 ] && keyopt=(--key key)
	handoff-export -q "${keyopt[@]}" --mode $mode -T $((round % 3 + 1)) --since $since src -o s$round.hs --gen-file gen 2>err
	rc=$?; is "$rc" 0 "round $round ($mode): export"
	check "round $round ($mode): verify-only accepts it" handoff-import -q "${keyopt[@]}" --verify-only dst s$round.hs
	is "$("$mk" hash dst)" "$before" "round $round ($mode): verify-only changed nothing"
	check "round $round ($mode): import" handoff-import -q "${keyopt[@]}" dst s$round.hs
	same_images src dst "round $round ($mode): receiver equals sender"
	since=$(cat gen) round=$((round + 1))
done

# the delta modes make smaller streams of the same changes than raw
"$mk" write src 77 60
handoff-export -q --mode raw --since $since src -o r.hs 2>/dev/null
handoff-export -q --since $since --mode delta-zstd3 src -o d.hs --gen-file gen 2>/dev/null
check "delta-zstd3 ($(stat -c %s d.hs) bytes) is smaller than raw ($(stat -c %s r.hs) bytes)" test "$(stat -c %s d.hs)" -lt "$(stat -c %s r.hs)"
check "delta-zstd3 stream of a wider range applies" handoff-import -q dst d.hs
same_images src dst "delta round: receiver equals sender"
since=$(cat gen)

# the stream does not depend on -T: two copies of the same overlay, exported with 1 and 3 threads
"$mk" write src 78 200
cp -a src srcT
handoff-export -q --since $since --mode delta-zstd3 -T 1 src -o t1.hs --gen-file gen 2>/dev/null
handoff-export -q --since $since --mode delta-zstd3 -T 3 srcT -o t3.hs 2>/dev/null
check "delta-zstd3: -T 3 writes the same bytes as -T 1" cmp -s t1.hs t3.hs
handoff-export -q --since $since --mode zstd -T 1 src -o z1.hs 2>/dev/null
handoff-export -q --since $since --mode zstd -T 3 srcT -o z3.hs 2>/dev/null
check "zstd: -T 3 writes the same bytes as -T 1" cmp -s z1.hs z3.hs
check "the -T 3 stream applies" handoff-import -q dst t3.hs
same_images src dst "threads round: receiver equals sender"
since=$(cat gen)

# a pipe, with the stream on stdout and stdin
"$mk" write src 99 80
handoff-export -q --since $since --gen-file gen src 2>/dev/null | handoff-import -q dst - 2>/dev/null
is "$?" 0 "export | import - through a pipe"
same_images src dst "pipe round: receiver equals sender"
since=$(cat gen)

# an empty round (nothing written) is a valid stream too
handoff-export -q --since $since --gen-file gen src -o empty.hs 2>/dev/null
check "empty round imports" handoff-import -q dst empty.hs
same_images src dst "empty round: receiver equals sender"

# the same changes cost fewer bytes with a codec mode (base references, compressed frames)
"$mk" write src 123 60
handoff-export -q --mode raw --since "$(cat gen)" src -o raw.hs 2>/dev/null
handoff-export -q --since "$(cat gen)" --mode zstd src -o zstd.hs 2>/dev/null
rawsz=$(stat -c %s raw.hs) zsz=$(stat -c %s zstd.hs)
check "zstd mode stream ($zsz bytes) is smaller than raw ($rawsz bytes)" test "$zsz" -lt "$rawsz"
check "the larger range imports (raw)" handoff-import -q dst raw.hs
same_images src dst "codec comparison round: receiver equals sender"

# small chunks, an all-zero memory base whose size is not a chunk multiple
"$mk" mkbase d2.img 300K 5
"$mk" create s2 d2.img zero:100001 512 || bail "create s2"
"$mk" write s2 7 200 3000
handoff-export -q s2 -o t0.hs --gen-file g2 2>/dev/null
check "512-byte chunks, odd memory size: import" handoff-import -q --disk d2.img --memory-size 100001 --chunk-size 512 d2 t0.hs
same_images s2 d2 "512-byte chunks: receiver equals sender"
"$mk" write s2 8 100 3000
handoff-export -q --mode zstd --since "$(cat g2)" s2 -o t1.hs 2>/dev/null
check "512-byte chunks: second round" handoff-import -q d2 t1.hs
same_images s2 d2 "512-byte chunks round 2: receiver equals sender"

# the END digest is what the receiver checks: report it on a good stream
handoff-import -v --verify-only d2 t1.hs 2>err
grep -q "verified stream of generations" err; is "$?" 0 "verify-only reports the verified stream"
done_testing
