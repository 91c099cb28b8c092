#!/usr/bin/env bash
# t4030 — atomic, idempotent apply: an import that dies right after its commit point (staging
# renamed to the journal) or halfway through publishing leaves the overlay to be fixed by the
# next open, which replays the journal; an import that dies while staging leaves nothing
# applied. Either way the result equals the sender, and re-applying is a no-op.
. "$HANDOFF_SRC/tests/lib.sh"
mk=$HANDOFF_BUILD/tests/mkoverlay

"$mk" mkbase disk.img 1M 1 && "$mk" mkbase mem.img 512K 2 || bail "bases"
"$mk" create src disk.img mem.img || bail "overlay"
"$mk" write src 1 200
handoff-export -q src -o s1.hs --gen-file gen 2>/dev/null || bail "export"

for point in after-commit mid-publish; do
	rm -rf dst; "$mk" create dst disk.img mem.img
	before=$("$mk" hash dst)
	HANDOFF_TEST_CRASH=$point handoff-import -q dst s1.hs 2>/dev/null; rc=$?
	is "$rc" 99 "$point: the import died at the crash point"
	check "$point: a committed journal is left" test -e dst/staging/journal
	# any next open replays it: here a verify-only open does not (read-only), an import does
	check "$point: verify-only still works and does not replay" handoff-import -q --verify-only dst s1.hs
	check "$point: journal still there after verify-only" test -e dst/staging/journal
	handoff-import dst s1.hs 2>err; rc=$?
	is "$rc" 0 "$point: the next import succeeds"
	grep -q "replaying the committed journal" err; is "$?" 0 "$point: it replayed the journal"
	grep -q "already applied" err; is "$?" 0 "$point: and found the stream already applied"
	check "$point: the journal is gone" test ! -e dst/staging/journal
	is "$("$mk" hash dst)" "$("$mk" hash src)" "$point: receiver equals sender"
done

# dying while staging (a cut pipe) applies nothing and leaves nothing behind
rm -rf dst; "$mk" create dst disk.img mem.img
before=$("$mk" hash dst)
head -c 300000 s1.hs | handoff-import -q dst - 2>/dev/null; rc=$?
is "$rc" 3 "cut stream: verification failure"
is "$("$mk" hash dst)" "$before" "cut stream: nothing applied"
check "cut stream: no staging file left" test ! -e dst/staging/stream.stage
# a leftover staging file (a killed import) is discarded by the next import
mkdir -p dst/staging && head -c 5000 s1.hs >dst/staging/stream.stage
check "leftover staging file: the next import succeeds" handoff-import -q dst s1.hs
check "leftover staging file: discarded" test ! -e dst/staging/stream.stage
is "$("$mk" hash dst)" "$("$mk" hash src)" "leftover staging file: receiver equals sender"
done_testing
