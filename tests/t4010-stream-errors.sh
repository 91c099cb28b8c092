#!/usr/bin/env bash
# t4010 — golden tests of what the tools say and how they exit when a stream must be refused:
# wrong base, wrong or missing key, a replayed or out-of-order stream, frames from another
# stream, truncation, trailing bytes, a terminal on stdout. Each refusal leaves the receiver's
# images exactly as they were (hash before/after). Exit codes: handoff-import(1), EXIT STATUS.
. "$HANDOFF_SRC/tests/lib.sh"
mk=$HANDOFF_BUILD/tests/mkoverlay

# golden NAME WANT_RC WANT_LINE CMD...: run CMD; its exit status and the first stderr line that is
# not the "unauthenticated" warning must match (WANT_LINE is a grep -E pattern anchored at both ends)
golden() {
	local name=$1 want_rc=$2 want=$3 rc line before after; shift 3
	before=$("$mk" hash dst)
	"$@" 2>err >/dev/null; rc=$?
	line=$(grep -v 'warning: the stream is unauthenticated' err | head -1)
	is "$rc" "$want_rc" "$name: exit status $want_rc"
	if [[ "$line" =~ ^$want$ ]]; then ok "$name: message"; else not_ok "$name: message"; echo "#   got  '$line'"; echo "#   want '$want'"; fi
	after=$("$mk" hash dst)
	is "$after" "$before" "$name: receiver unchanged"
}

"$mk" mkbase disk.img 1M 1 && "$mk" mkbase mem.img 512K 2 && "$mk" mkbase other.img 1M 3 || bail "bases"
"$mk" create src disk.img mem.img && "$mk" create dst disk.img mem.img && "$mk" create wrong other.img mem.img || bail "overlays"
printf 'the-right-key-0123456789' >key
printf 'a-wrong-key-0123456789ab' >badkey
printf 'short' >shortkey

"$mk" write src 1 100
handoff-export -q --key key src -o k1.hs --gen-file gen || bail "export k1"
handoff-export -q src -o u1.hs || bail "export u1"            # unauthenticated, gens 0..2
"$mk" write src 2 100

# --- authentication
golden "wrong key" 3 "handoff-import: error: stream authentication failed: wrong key or forged stream" \
	handoff-import --key badkey dst k1.hs
golden "missing key" 3 "handoff-import: error: stream is authenticated but no key was given \(--key\)" \
	handoff-import dst k1.hs
golden "key for an unauthenticated stream" 3 "handoff-import: error: stream is not authenticated but a key was given: refusing it" \
	handoff-import --key key dst u1.hs
golden "key file too short" 1 "handoff-import: error: key file 'shortkey' is too short \(5 bytes, at least 16 needed\)" \
	handoff-import --key shortkey dst k1.hs
handoff-import dst u1.hs 2>err >/dev/null
grep -q "^handoff-import: warning: the stream is unauthenticated" err; is "$?" 0 "import without a key warns that the stream is unauthenticated"
handoff-export src -o /dev/null 2>err; grep -q "^handoff-export: warning: the stream is unauthenticated (no --key)" err
is "$?" 0 "export without a key warns that the stream is unauthenticated"

# --- base identity
golden "wrong base image" 4 "handoff-import: error: stream's 'disk' base \(1048576 bytes, sha256 [0-9a-f]{16}\.\.\.\) differs from the base of overlay '.*/wrong' \(1048576 bytes, sha256 [0-9a-f]{16}\.\.\.\)" \
	handoff-import --key key wrong k1.hs
golden "wrong base image, verify-only" 4 "handoff-import: error: stream's 'disk' base .* differs from the base of overlay '.*/wrong' .*" \
	handoff-import --key key --verify-only wrong k1.hs

# --- sequence: dst has applied u1 (0..2) now
handoff-export -q --since 2 src -o u2.hs --gen-file gen || bail "export u2"   # 2..4
"$mk" write src 3 50
handoff-export -q --since 4 src -o u3.hs || bail "export u3"                   # 4..5
golden "a stream is missing (gap)" 5 "handoff-import: error: stream starts after generation 4 but overlay '.*/dst' has applied up to generation 2 \(a stream is missing\)" \
	handoff-import dst u3.hs
check "the next stream applies" handoff-import -q dst u2.hs
golden "replayed old stream" 5 "handoff-import: error: stale stream: it covers generations 0\.\.2 but overlay '.*/dst' has already applied up to generation 4 \(replayed old stream\?\)" \
	handoff-import dst u1.hs
golden "re-applying the last stream is a no-op" 0 "handoff-import: stream of generations 2\.\.4 was already applied: nothing to do" \
	handoff-import dst u2.hs
"$mk" create other disk.img mem.img
"$mk" write other 9 20
handoff-export -q other -o o1.hs
golden "stream from another sender" 5 "handoff-import: error: stream comes from sender [0-9a-f]{12} but overlay '.*/dst' follows sender [0-9a-f]{12}" \
	handoff-import dst o1.hs

# --- damage
len=$(stat -c %s u3.hs)
head -c $((len / 2)) u3.hs >cut.hs
golden "truncated stream" 3 "handoff-import: error: stream ends early, inside frame [0-9]+ \(no end record\)" \
	handoff-import dst cut.hs
head -c 100 u3.hs >cuthdr.hs
golden "stream cut inside its header" 3 "handoff-import: error: stream ends inside its header \(100 of 256 bytes\)" \
	handoff-import dst cuthdr.hs
{ cat u3.hs; printf 'x'; } >trail.hs
golden "bytes after END" 3 "handoff-import: error: 1 unexpected bytes after the end of the stream" \
	handoff-import dst trail.hs
cp u3.hs flip.hs; printf '\x5a' | dd of=flip.hs bs=1 seek=$((len / 2)) conv=notrunc status=none
golden "flipped byte" 3 "handoff-import: error: frame [0-9]+: (payload|header) checksum mismatch" \
	handoff-import dst flip.hs
# u3's header followed by the frames of another stream (o1, same bases, other id)
{ head -c 256 u3.hs; tail -c +257 o1.hs; } >splice.hs
golden "frames from another stream" 3 "handoff-import: error: frame 0 belongs to another stream" \
	handoff-import dst splice.hs
printf 'not a stream at all, just some text that is long enough to be read' >junk.hs
golden "not a stream" 3 "handoff-import: error: not a handoff stream \(bad magic\)" \
	handoff-import dst junk.hs
check "the intact stream still applies after all that" handoff-import -q dst u3.hs

# --- over TCP: the receiver's refusal reaches the sender, both exit with the same status
"$mk" create tdst disk.img mem.img
handoff-import --key badkey --listen 127.0.0.1:0 --port-file port tdst 2>rx.err & rx=$!
T_PIDS+=("$rx")
for _ in $(seq 200); do [ -s port ] && break; sleep 0.02; done
handoff-export --key key --to 127.0.0.1:"$(cat port)" src 2>tx.err; rc=$?
wait $rx; rxrc=$?
is "$rc" 3 "TCP, wrong key: the exporter exits 3"
is "$rxrc" 3 "TCP, wrong key: the receiver exits 3"
line=$(grep -v warning tx.err | head -1)
is "$line" "handoff-export: error: the receiver refused the stream: stream authentication failed: wrong key or forged stream" "TCP, wrong key: the exporter says why"
handoff-export --to 127.0.0.1:1 src 2>tx.err; rc=$?
is "$rc" 7 "TCP, nobody listening: exit 7"
grep -q "^handoff-export: error: cannot connect to '127.0.0.1:1': Connection refused" tx.err
is "$?" 0 "TCP, nobody listening: message"

# --- usage and refusals
golden "not an overlay" 1 "handoff-export: error: '.*' is neither a handoff overlay directory nor a handoff-mount mountpoint" \
	handoff-export -o x.hs .
golden "import into a missing overlay without bases" 1 "handoff-import: error: 'nope' is not a handoff overlay: give --disk and --memory \(or --memory-size\) to create it" \
	handoff-import nope u1.hs
golden "unknown mode" 1 "handoff-export: error: unknown mode 'zip' \(see --list-modes, or raw, lz4, lz4hc, zstd, lzma, optionally with -LEVEL\)" \
	handoff-export --mode zip -o x.hs src
if command -v script >/dev/null; then
	script -qec "handoff-export src" /dev/null >tty.out 2>&1; rc=$?
	is "$rc" 2 "export to a terminal: exit status 2"
	grep -q "handoff-export: error: refusing to write a binary stream to a terminal" tty.out
	is "$?" 0 "export to a terminal: message"
else
	ok "# SKIP script(1) not installed: no terminal test"
fi
done_testing
