#!/usr/bin/env bash
# t4060 — dedup across the rounds of one handoff: a round that copies data sent in an earlier
# round to new places (disk <-> memory, aligned) sends sent-refs to the receiver's copy instead of
# the bytes, and the receiver reconstructs byte-identical images; a location the same stream
# rewrites is handled right; a receiver that does not hold what the sender believes (changed
# behind its back, or it applied another stream) refuses the stream without changing anything,
# and over TCP the sender falls back to a stream without such references.
. "$HANDOFF_SRC/tests/lib.sh"
mk=$HANDOFF_BUILD/tests/mkoverlay
export HANDOFF_CACHE=$PWD/cache
[ -x "$mk" ] || bail "mkoverlay helper not built"
M=delta-zstd3
K=1024 MI=1048576

same_images() {   # same_images A B DESC
	if [ "$("$mk" hash "$1")" = "$("$mk" hash "$2")" ]; then ok "$3"; else not_ok "$3"; fi
}
size() { stat -c %s "$1"; }

"$mk" mkbase disk.img 8M 1 && "$mk" mkbase mem.img 4M 2 || bail "cannot make bases"
"$mk" create src disk.img mem.img || bail "cannot create overlay"

# round 0: random memory (incompressible), a few disk writes
"$mk" fill src memory 5 && "$mk" write src 1 100 || bail "round 0 writes"
check "round 0: export" handoff-export -q --mode $M src -o s0.hs --gen-file gen
g0=$(cat gen)
check "round 0: sent set recorded" test -s src/sentset
check "round 0: import" handoff-import -q --disk disk.img --memory mem.img dst s0.hs
same_images src dst "round 0: receiver equals sender"
cp -a dst dst.r0

# round 1: memory 0..2M copied to disk 4M (disk <- memory); old memory 3M.. copied to disk 7M,
# then memory 3M..4M overwritten by memory 1M..2M (a location this stream rewrites)
"$mk" copy src memory 0 disk $((4 * MI)) $((2 * MI)) &&
"$mk" copy src memory $((3 * MI)) disk $((7 * MI)) $((256 * K)) &&
"$mk" copy src memory $((1 * MI)) memory $((3 * MI)) $((1 * MI)) || bail "round 1 copies"
cp -a src src.nohist
cp -a src src.z
handoff-export -v --mode $M --since $g0 src -o s1.hs --gen-file gen 2>tx1.log
is "$?" 0 "round 1: export"
g1=$(cat gen)
handoff-export -q --mode $M --no-history --since $g0 src.nohist -o s1n.hs 2>/dev/null
refs=$(sed -n 's/.*: \([0-9]*\) chunks sent as references.*/\1/p' tx1.log)
check "round 1: sent-refs to earlier rounds ($refs chunks)" test "${refs:-0}" -ge 700
check "round 1: the log says earlier exports were referenced" grep -q "including chunks of earlier exports" tx1.log
check "round 1: stream with history ($(size s1.hs) bytes) < 1/8 of without ($(size s1n.hs) bytes)" \
	test $(($(size s1.hs) * 8)) -lt "$(size s1n.hs)"
check "round 1: peak memory reported" grep -q "peak memory [0-9]* KiB" tx1.log
check "round 1: verify-only accepts it" handoff-import -q --verify-only dst s1.hs
check "round 1: import" handoff-import -q dst s1.hs
same_images src dst "round 1: receiver equals sender (copies and a rewritten location)"
cp -a dst dst.r1

# round 2: round-1 data (disk 7M, sent in round 1) copied into memory, plus new writes
"$mk" copy src disk $((7 * MI)) memory 0 $((256 * K)) && "$mk" write src 2 50 || bail "round 2 writes"
cp -a src src.r2
handoff-export -v --mode $M --since $g1 src -o s2.hs --gen-file gen 2>tx2.log
is "$?" 0 "round 2: export"
refs=$(sed -n 's/.*: \([0-9]*\) chunks sent as references.*/\1/p' tx2.log)
check "round 2: sent-refs to round-1 data ($refs chunks)" test "${refs:-0}" -ge 48

# a receiver changed behind the sender's back (the copied range) refuses with a digest error
cp -a dst dst.changed
"$mk" copy dst.changed disk 0 disk $((7 * MI)) $((256 * K)) || bail "local change"
before=$("$mk" hash dst.changed)
handoff-import -q dst.changed s2.hs 2>err
is "$?" 3 "changed receiver: refused (verification failed, exit 3)"
check "changed receiver: the digest caught it" grep -q "digest" err
is "$("$mk" hash dst.changed)" "$before" "changed receiver: nothing was changed"

# a receiver that applied another round-1 stream (same range, other mode) refuses: stale
cp -a dst.r0 dst.other
handoff-export -q --mode zstd --since $g0 src.z -o s1z.hs 2>/dev/null
check "other round 1 applied" handoff-import -q dst.other s1z.hs
before=$("$mk" hash dst.other)
handoff-import -q dst.other s2.hs 2>err
is "$?" 5 "other lineage: refused as stale (exit 5)"
check "other lineage: the message says why" grep -q "refers to chunks of stream.*--no-history" err
is "$("$mk" hash dst.other)" "$before" "other lineage: nothing was changed"

# the real round 2 applies
check "round 2: import" handoff-import -q dst s2.hs
same_images src dst "round 2: receiver equals sender"

# over TCP the sender falls back to a stream without references to earlier exports
rm -f port
handoff-import -q --listen 127.0.0.1:0 --port-file port dst.other 2>rx.log &
rx=$!
for _ in $(seq 200); do [ -s port ] && break; sleep 0.02; done
[ -s port ] || bail "receiver did not start"
handoff-export --mode $M --since $g1 --to 127.0.0.1:"$(cat port)" src.r2 2>tx3.log
is "$?" 0 "TCP, other lineage: export succeeds"
wait $rx
is "$?" 0 "TCP, other lineage: import succeeds"
check "TCP, other lineage: the sender fell back" grep -q "without references to them" tx3.log
same_images src.r2 dst.other "TCP, other lineage: receiver equals sender"

# a record of another generation is not used (export --since other than its lineage)
handoff-export -v --mode $M --since $g0 src.r2 -o s12.hs 2>tx4.log
check "sent set of another generation: not used" grep -q "not using it" tx4.log
check "sent set of another generation: stream applies" handoff-import -q dst.r0 s12.hs
same_images src.r2 dst.r0 "sent set of another generation: receiver equals sender"
done_testing
