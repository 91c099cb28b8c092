#!/usr/bin/env bash
# t5110 — handoff-inspect's refusals: a mis-typed overlay path, a directory that is no overlay, a
# corrupt index, a corrupt meta file, bad options, and a disk without a filesystem each give ONE
# line on stderr and the exit status handoff-inspect(1) documents; nothing is written anywhere.
. "$HANDOFF_SRC/tests/lib.sh"
fixture="$HANDOFF_BUILD/tests/inspect_fixture"
[ -x "$fixture" ] || bail "inspect_fixture not built"

head -c 1M /dev/urandom >base.disk
printf 'time 1700000000\nfill disk 0 4096 1\ncheckpoint\nfill memory 4096 4096 2\n' |
	"$fixture" --disk base.disk --memory-size 256K ovl || bail "fixture failed"

# expect NAME STATUS PATTERN CMD...: CMD exits STATUS, prints one stderr line matching PATTERN
# and nothing on stdout
expect() {
	local name=$1 want=$2 pat=$3; shift 3
	"$@" >out.txt 2>err.txt
	local rc=$? lines
	lines=$(wc -l <err.txt)
	if [ "$rc" = "$want" ] && [ "$lines" = 1 ] && grep -qE -- "$pat" err.txt && [ ! -s out.txt ]; then
		ok "$name"
	else
		not_ok "$name (exit $rc, want $want; $lines stderr lines)"
		sed 's/^/#   stderr: /' err.txt
		sed 's/^/#   stdout: /' out.txt | head -5
	fi
}

expect "mis-typed overlay path: exit 3" 3 "cannot open overlay 'ovlx': no such file" \
	handoff-inspect summary ovlx
mkdir notovl
expect "a directory without overlay.meta: exit 3" 3 "not an overlay" handoff-inspect list notovl
expect "a file instead of a directory: exit 3" 3 "not a directory" handoff-inspect list base.disk

cp -r ovl noidx && rm -f noidx/index.db*
expect "overlay without its index: exit 3" 3 "no index.db" handoff-inspect list noidx

cp -r ovl badidx && rm -f badidx/index.db-* && head -c 20480 /dev/urandom >badidx/index.db
expect "corrupt index: exit 4" 4 "index of overlay 'badidx'" handoff-inspect summary badidx

if command -v python3 >/dev/null; then
	cp -r ovl badrow
	python3 -c "import sqlite3; c = sqlite3.connect('badrow/index.db'); c.execute('update chunks set idx = 99999 where image = 0'); c.commit()"
	expect "an index row beyond the image: exit 4" 4 "corrupt index in overlay 'badrow': chunk 99999 of 'disk' is beyond the image" \
		handoff-inspect list badrow
	cp -r ovl badgen
	python3 -c "import sqlite3; c = sqlite3.connect('badgen/index.db'); c.execute('update chunks set gen = 77 where image = 0'); c.commit()"
	expect "an index row from a future generation: exit 4" 4 "generation 77" handoff-inspect summary badgen
	cp -r ovl notable
	python3 -c "import sqlite3; c = sqlite3.connect('notable/index.db'); c.execute('drop table chunks'); c.commit()"
	expect "an index without its chunks table: exit 4" 4 "index of overlay 'notable'" handoff-inspect list notable
fi

cp -r ovl badmeta && printf 'garbage\n' >badmeta/overlay.meta
expect "corrupt overlay.meta: exit 4" 4 "cannot open overlay 'badmeta'" handoff-inspect list badmeta

cp base.disk base2.disk
printf 'time 1700000000\nfill disk 0 4096 1\n' | "$fixture" --disk base2.disk --memory-size 256K ovl2 ||
	bail "fixture failed"
printf 'x' | dd of=base2.disk bs=1 seek=5000 conv=notrunc 2>/dev/null
expect "a base changed under the overlay: exit 5" 5 "base image mismatch" handoff-inspect summary ovl2
rm base2.disk
expect "a base missing: exit 3" 3 "cannot open overlay 'ovl2'.*missing" handoff-inspect summary ovl2

expect "unknown subcommand: exit 2" 2 "unknown subcommand 'sumary'" handoff-inspect sumary ovl
expect "option of another subcommand: exit 2" 2 "does not apply" handoff-inspect summary --csv ovl
expect "bad generation range: exit 2" 2 "invalid generation range" handoff-inspect list --gen 5..2 ovl
expect "bad time: exit 2" 2 "invalid time" handoff-inspect list --since yesterday ovl
expect "bad image: exit 2" 2 "invalid image 'disc'" handoff-inspect list --image disc ovl
expect "heatmap without -o: exit 2" 2 "needs -o" handoff-inspect heatmap ovl
expect "heatmap to stdout: exit 2" 2 "not to stdout" handoff-inspect heatmap -o - ovl
expect "diff without a place: exit 2" 2 "one of --chunk" handoff-inspect diff --image disk ovl
expect "diff of a chunk beyond the image: exit 2" 2 "invalid chunk '256'" \
	handoff-inspect diff --image disk --chunk 256 ovl
expect "diff of a range leaving the image: exit 2" 2 "invalid length '2' at 1048575" \
	handoff-inspect diff --image disk --offset 1048575 --length 2 ovl
expect "missing overlay argument: exit 2" 2 "missing OVERLAY_DIR" handoff-inspect list
expect "no ext filesystem on the disk: exit 7" 7 "no ext2/3/4 filesystem" handoff-inspect files ovl
expect "summary with an unknown codec: exit 2" 2 "unknown codec" \
	handoff-inspect summary --estimate lz5 ovl

# read-only: nothing in the overlay changed (sqlite's shared-memory file of a WAL reader may be
# touched, not its content), and no lock was taken
snap() {
	(cd ovl && find . -type f ! -name 'index.db-shm' ! -name 'index.db-wal' -printf '%p %s %T@\n' |
		sort; sha256sum ./* | sort)
}
before=$(snap)
handoff-inspect summary ovl >/dev/null && handoff-inspect list --json ovl >/dev/null &&
	handoff-inspect heatmap -o h.png ovl && handoff-inspect diff --image memory --chunk 1 ovl >/dev/null
is "$?" 0 "every subcommand ran"
after=$(snap)
is "$after" "$before" "the overlay directory is unchanged by inspection"
done_testing
