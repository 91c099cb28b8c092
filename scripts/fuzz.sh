#!/usr/bin/env bash
# fuzz.sh — `make fuzz [FUZZ_SECONDS=N]`: build every tests/fuzz/fuzz_*.c with clang's libFuzzer
# and AddressSanitizer (all module sources instrumented, in build-fuzz/) and run each for N seconds
# (default 60) from its seed corpus (tests/fuzz/corpus/TARGET) plus the golden bad inputs. New
# inputs go to build-fuzz/corpus/TARGET; crashes to build-fuzz/crash-TARGET-*. A crash fails the
# run; copy the input into tests/fuzz/golden-bad/TARGET/ once fixed so `make check` replays it.
set -euo pipefail
secs=${1:-60}
src=${HANDOFF_SRC:-$(cd "$(dirname "$0")/.." && pwd)}
cc=${FUZZ_CC:-clang}
out=$src/build-fuzz
command -v "$cc" >/dev/null || { echo "fuzz.sh: $cc not found (apt-get install clang)" >&2; exit 1; }
pkgs="fuse3 sqlite3 liblz4 liblzma libzstd libcrypto libxxhash ext2fs com_err libpng"
cflags="-std=gnu11 -D_GNU_SOURCE -D_FILE_OFFSET_BITS=64 -DFUSE_USE_VERSION=314 -I$src -g -O1 \
 -fsanitize=address,fuzzer-no-link -fno-omit-frame-pointer $(pkg-config --cflags $pkgs 2>/dev/null) -pthread"
libs="$(pkg-config --libs $pkgs 2>/dev/null) -lm -pthread"
mkdir -p "$out/obj"
objs=()
for m in common overlay tracker pipeline; do
	for f in "$src"/$m/*.c; do
		[ -e "$f" ] || continue
		o=$out/obj/$m-$(basename "${f%.c}").o
		if [ ! -e "$o" ] || [ "$f" -nt "$o" ]; then
			$cc $cflags -c -o "$o" "$f"
		fi
		objs+=("$o")
	done
done
fail=0
for t in "$src"/tests/fuzz/fuzz_*.c; do
	name=$(basename "${t%.c}")
	bin=$out/$name
	$cc $cflags -fsanitize=fuzzer -o "$bin" "$t" "${objs[@]}" $libs
	mkdir -p "$out/corpus/$name"
	seeds=()
	for d in "$src/tests/fuzz/corpus/$name" "$src/tests/fuzz/golden-bad/$name"; do
		[ -d "$d" ] && seeds+=("$d")
	done
	echo "fuzz.sh: running $name for ${secs}s" >&2
	if ! (cd "$out" && "$bin" -max_total_time="$secs" -max_len=65536 -rss_limit_mb=1024 \
		-artifact_prefix="$out/crash-$name-" -print_final_stats=1 "$out/corpus/$name" "${seeds[@]}"); then
		echo "fuzz.sh: $name found a crash (see $out/crash-$name-*)" >&2
		fail=1
	fi
done
exit $fail
