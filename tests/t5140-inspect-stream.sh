#!/usr/bin/env bash
# t5140 — handoff-inspect stream: streams written by handoff-export (raw, compressed with base
# references, authenticated) verify and are described (header, chunks per image and encoding, a
# byte account that adds up to the file size); damaged, truncated, extended, foreign and
# wrongly-keyed streams give one line on stderr and exit 6; base-dependent records without
# --overlay give exit 5; and `summary --modes` predicts each export's size to the byte.
. "$HANDOFF_SRC/tests/lib.sh"
command -v python3 >/dev/null || skip_all "python3 not installed"
command -v handoff-export >/dev/null || skip_all "handoff-export not built"
fixture="$HANDOFF_BUILD/tests/inspect_fixture"
[ -x "$fixture" ] || bail "inspect_fixture not built"

export HANDOFF_CACHE=$PWD/cache
head -c 2M /dev/urandom >base.disk
seq 1 200000 | head -c 1M >>base.disk
"$fixture" --disk base.disk --memory-size 1M ovl <<'SCRIPT' || bail "fixture failed"
time 1700000000
text disk 100 hello
fill disk 8192 8192 0
copybase disk 65536 disk 1048576 4096
text disk 2200000 a few changed words in the text part of the base
random memory 0 16384 3
copy memory 32768 disk 2199552 4096
SCRIPT
# summary's per-mode figures, taken before any export closes a generation
modes="raw lz4 xor-lz4 delta-zstd3"
handoff-inspect summary --json --estimate '' --modes "${modes// /,}" ovl >modes.json || bail "summary failed"
for m in $modes; do
	cp -r ovl "exp-$m"
	handoff-export -q --mode "$m" -o "$m.hs" "exp-$m" 2>/dev/null || bail "handoff-export --mode $m failed"
done
cp delta-zstd3.hs zstd.hs   # a stream with base references
check "summary --modes predicts every export's size to the byte" python3 - $modes <<'PY'
import json, os, sys
est = {m["mode"]: m["bytes"] for m in json.load(open("modes.json"))["modes"]}
for m in sys.argv[1:]:
    assert est[m] == os.path.getsize(m + ".hs"), (m, est[m], os.path.getsize(m + ".hs"))
PY
head -c 32 /dev/urandom >key
head -c 32 /dev/urandom >otherkey
handoff-export -q --mode raw --key key -o auth.hs ovl 2>/dev/null || bail "handoff-export --key failed"

handoff-inspect stream raw.hs >raw.txt 2>raw.err
is "$?" 0 "a raw stream verifies"
check "it says verified" grep -q "^stream 'raw.hs': verified" raw.txt
check "it counts 5 disk chunks" grep -qE "^  disk .*, 5 chunks \(20.0 KiB\) in the stream" raw.txt
check "and 5 memory chunks" grep -qE "^  memory .*, 5 chunks \(20.0 KiB\) in the stream" raw.txt
check "nothing on stderr" [ ! -s raw.err ]

# accounts add up, against the overlay's own list
check "the JSON report's byte account adds up to the file size" python3 - <<'PY'
import json, os, subprocess
for name in ("raw.hs", "lz4.hs", "xor-lz4.hs", "delta-zstd3.hs"):
    args = ["handoff-inspect", "stream", "--json", "--overlay", "ovl", name]
    o = json.loads(subprocess.run(args, capture_output=True, check=True).stdout)
    w = o["wire"]
    assert o["verified"] is True
    assert w["total"] == os.path.getsize(name), (w, os.path.getsize(name))
    assert w["header"] + w["frame_headers"] + w["macs"] + w["end"] + w["frame_payloads"] == w["total"], w
    assert [i["chunks"] for i in o["images"]] == [5, 5], o["images"]
    assert sum(e["chunks"] for e in o["encodings"].values()) == 10
    assert sum(e["records"] for e in o["encodings"].values()) == o["records"], o
    if name == "raw.hs":
        assert o["encodings"]["raw"]["chunks"] == 8 and o["encodings"]["zero"]["chunks"] == 2, o["encodings"]
        known = o["record_headers"] + o["encodings"]["raw"]["payload"]
        assert known == o["decoded_payload"], (known, o["decoded_payload"])
    if name == "delta-zstd3.hs":
        e = o["encodings"]
        assert e["base-ref"]["chunks"] >= 1 and e["sent-ref"]["chunks"] >= 1, e
        assert e["xor-base"]["chunks"] + e["delta-base"]["chunks"] >= 1, e
PY
is "$(handoff-inspect stream - <raw.hs | head -n 1)" "stream '-': verified (checksums, sequence, end digest; not authenticated)" \
	"a stream on stdin"

# expect NAME STATUS PATTERN CMD...: exit STATUS, one stderr line matching PATTERN
expect() {
	local name=$1 want=$2 pat=$3; shift 3
	"$@" >out.txt 2>err.txt
	local rc=$?
	if [ "$rc" = "$want" ] && [ "$(wc -l <err.txt)" = 1 ] && grep -qE -- "$pat" err.txt; then
		ok "$name"
	else
		not_ok "$name (exit $rc, want $want)"
		sed 's/^/#   stderr: /' err.txt
	fi
}
expect "base references without --overlay: exit 5" 5 "give --overlay" handoff-inspect stream zstd.hs
head -c 3M /dev/urandom >other.disk
printf 'time 1700000000\n' | "$fixture" --disk other.disk --memory-size 1M otherovl || bail "fixture failed"
expect "an overlay on other bases: exit 5" 5 "another base" handoff-inspect stream --overlay otherovl zstd.hs
expect "an authenticated stream without its key: exit 6" 6 "no key was given" handoff-inspect stream auth.hs
expect "with the wrong key: exit 6" 6 "authentication failed" handoff-inspect stream --key otherkey auth.hs
handoff-inspect stream --key key auth.hs >auth.txt
is "$?" 0 "with its key it verifies"
check "and says the MACs were checked" grep -q "end digest, MACs)" auth.txt

size=$(stat -c %s raw.hs)
head -c $((size - 10)) raw.hs >trunc.hs
expect "a truncated stream: exit 6" 6 "ends early" handoff-inspect stream trunc.hs
python3 -c "
d = bytearray(open('raw.hs', 'rb').read()); d[600] ^= 0x10; open('flip.hs', 'wb').write(d)"
expect "a flipped bit: exit 6" 6 "checksum mismatch" handoff-inspect stream flip.hs
check "a rejected stream still reports what was verified" grep -q "REJECTED" out.txt
{ cat raw.hs; printf 'junk'; } >trail.hs
expect "bytes after the end: exit 6" 6 "after the end" handoff-inspect stream trail.hs
expect "not a stream at all: exit 6" 6 "not a handoff stream" handoff-inspect stream base.disk
expect "a missing file: exit 3" 3 "cannot open stream 'nope.hs'" handoff-inspect stream nope.hs
done_testing
