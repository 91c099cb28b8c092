#!/usr/bin/env bash
# t5100 — handoff-inspect's user-facing text, pinned: summary (text and JSON), list (table, JSON
# lines, CSV, each filter), diff, on an overlay built with fixed timestamps by the
# inspect_fixture helper, so every class (reverted, zero, dup-base across images, dup-overlay
# across images, rest) and three generations appear. The pipeline-mode estimates are pinned for
# the lz4 mode only (its encoder output is plain); the delta modes are checked for what any
# encoder must find here. HANDOFF_UPDATE_GOLDEN=1 rewrites the files.
. "$HANDOFF_SRC/tests/lib.sh"
command -v python3 >/dev/null || skip_all "python3 not installed"
fixture="$HANDOFF_BUILD/tests/inspect_fixture"
[ -x "$fixture" ] || bail "inspect_fixture not built"
golden="$HANDOFF_SRC/tests/golden/inspect"

# deterministic bases: 1 MiB of text and pseudo-random halves
python3 - <<'PY'
import random
r = random.Random(5100)
text = b"".join(b"line %06d of the base disk\n" % i for i in range(20000))[:512 * 1024]
noise = bytes(r.getrandbits(8) for _ in range(512 * 1024))
open("base.disk", "wb").write(text + noise)
PY

"$fixture" --disk base.disk --memory-size 512K ovl <<'SCRIPT' || bail "fixture failed"
time 1700000000
text disk 100 hello, world
fill disk 8192 4096 0
copybase disk 16384 disk 524288 4096
time 1700000005.5
random memory 0 8192 1
copy memory 40960 memory 0 4096
copybase memory 49152 disk 4096 4096
checkpoint
time 1700000030
text disk 100 hello, again
revert disk 8192 4096
fill disk 1044480 4096 255
fill disk 28672 4096 0
copy disk 20480 memory 4096 4096
io 12345 67890
checkpoint
time 1700000031
fill memory 65536 10 7
SCRIPT

# compare NAME CMD...: stdout of CMD (with the temp dir replaced by '.') against golden/NAME
compare() {
	local name=$1; shift
	local out rc
	out=$("$@" 2>err.txt); rc=$?
	out=${out//$PWD/.}
	if [ "${HANDOFF_UPDATE_GOLDEN:-0}" = 1 ]; then
		printf '%s\n' "$out" >"$golden/$name"
	fi
	if [ $rc = 0 ] && [ -s "$golden/$name" ] && [ "$out" = "$(cat "$golden/$name")" ] && [ ! -s err.txt ]; then
		ok "$name"
	else
		not_ok "$name (exit $rc)"
		diff <(printf '%s\n' "$out") "$golden/$name" | sed 's/^/#   /' | head -20
		sed 's/^/#   stderr: /' err.txt
	fi
}

compare summary.txt handoff-inspect summary --modes lz4 ovl
compare summary-notimes.txt handoff-inspect summary --no-times --estimate lz4,zstd:1 --modes '' ovl
compare summary.json handoff-inspect summary --json --modes raw,lz4 ovl
compare list.txt handoff-inspect list ovl
compare list-notimes.txt handoff-inspect list --no-times ovl
compare list.json handoff-inspect list --json ovl
compare list.csv handoff-inspect list --csv ovl
compare list-memory-gen2.txt handoff-inspect list --no-times --image memory --gen 2.. ovl
compare list-gen1.csv handoff-inspect list --csv --gen 1 ovl
compare list-since.txt handoff-inspect list --no-times --since 2023-11-14T22:13:25Z ovl
compare list-until.txt handoff-inspect list --no-times --until @1700000005.5 ovl
compare list-offset.txt handoff-inspect list --no-times --offset 8K..20K ovl
compare diff-chunk0.txt handoff-inspect diff --image disk --chunk 0 ovl
compare diff-range.txt handoff-inspect diff --image disk --offset 100 --length 32 ovl
compare diff-reverted.txt handoff-inspect diff --image disk --chunk 2 ovl
compare diff-memory.txt handoff-inspect diff --image memory --offset 65530 --length 20 ovl

# the JSON outputs parse, and agree with the table on what is there
check "summary --json is one valid JSON object" python3 -c '
import json, subprocess, sys
o = json.loads(subprocess.run(["handoff-inspect", "summary", "--json", "ovl"], capture_output=True, check=True).stdout)
c = o["classes"]
assert o["modified_chunks"] == 11, o["modified_chunks"]
assert [c[k]["chunks"] for k in ("reverted", "zero", "dup-base", "dup-overlay", "rest")] == [1, 1, 2, 2, 5], c
'
check "delta modes find the zero chunk, 3 base references and 2 sent references" python3 -c '
import json, subprocess
o = json.loads(subprocess.run(["handoff-inspect", "summary", "--json", "--estimate", "", "--modes", "xor-lz4,delta-zstd3", "ovl"],
                              capture_output=True, check=True).stdout)
for m in o["modes"]:
    k = m["kinds"]
    assert sum(k.values()) == 11, m
    assert k["zero"] == 1 and k["baseref"] == 3 and k["sentref"] == 2, m
    assert 0 < m["bytes"] < o["modified_bytes"], m
'
check "list --json lines parse and name every chunk once" python3 -c '
import json, subprocess
rows = [json.loads(l) for l in subprocess.run(["handoff-inspect", "list", "--json", "ovl"], capture_output=True, check=True).stdout.splitlines()]
keys = [(r["image"], r["chunk"]) for r in rows]
assert len(keys) == len(set(keys)) == 11, keys
assert {(r["image"], r["chunk"]): r["class"] for r in rows}[("memory", 1)] == "dup-overlay"
'
done_testing
