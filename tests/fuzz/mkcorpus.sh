#!/usr/bin/env bash
# mkcorpus.sh — regenerate the seed corpus and the golden bad inputs of fuzz_stream from real
# exports of a tiny overlay (512-byte chunks). Run from the source tree after `make`:
#   tests/fuzz/mkcorpus.sh
# Each file is one control byte (see fuzz_stream.c: bit 0 = authenticated with the fuzz key,
# bits 1-7 = first piece size / 37) followed by a stream.
set -euo pipefail
src=$(cd "$(dirname "$0")/../.." && pwd)
export PATH="$src/build/bin:$src/build/tests:$PATH"
corpus=$src/tests/fuzz/corpus/fuzz_stream
bad=$src/tests/fuzz/golden-bad/fuzz_stream
w=$(mktemp -d)
trap 'rm -rf "$w"' EXIT
mkdir -p "$corpus" "$bad"
cd "$w"
export HANDOFF_CACHE=$w/cache
printf 'fuzz-key-0123456789abcdef' >key
mkoverlay mkbase disk.img 16K 7
mkoverlay create ovl disk.img zero:8K 512
mkoverlay write ovl 1 12 1500
prefix() { printf "\\x$(printf %02x "$1")"; cat "$2"; }
n=0
for mode in raw zstd lz4 xor-lz4 delta-zstd3; do
	handoff-export -q --mode $mode --frame-size 1K -o s.hs ovl
	prefix 0 s.hs >"$corpus/$mode-unauth"
	prefix 11 s.hs >"$corpus/$mode-unauth-split"
	handoff-export -q --mode $mode --frame-size 1K --key key -o k.hs ovl
	prefix 1 k.hs >"$corpus/$mode-auth"
	mkoverlay write ovl $((n += 2)) 6 700
done
handoff-export -q --since 2 -o inc.hs ovl
prefix 0 inc.hs >"$corpus/incremental"
# golden bad: damaged copies of the raw stream
handoff-export -q --frame-size 1K -o s.hs ovl
len=$(stat -c %s s.hs)
prefix 0 <(head -c 100 s.hs) >"$bad/truncated-header"
prefix 0 <(head -c $((len - 10)) s.hs) >"$bad/truncated-end"
prefix 0 <(cat s.hs; printf x) >"$bad/trailing-byte"
for off in 9 20 60 216 300 320 400 $((len - 40)); do
	python3 - "$off" s.hs >"$bad/flip-$off" <<'PY'
import sys
off, path = int(sys.argv[1]), sys.argv[2]
b = bytearray(open(path, 'rb').read())
b[off] ^= 0x10
sys.stdout.buffer.write(b'\x00' + bytes(b))
PY
done
prefix 1 s.hs >"$bad/unauth-with-key"
prefix 0 <(head -c 256 k.hs; tail -c +257 s.hs) >"$bad/spliced-header"
ls "$corpus" "$bad" | wc -l
