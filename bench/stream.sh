#!/usr/bin/env bash
# bench/stream.sh — throughput of the handoff stream itself, no compression: export to /dev/null,
# export | import through a pipe, import of a stream file, and a TCP transfer over loopback, each
# against `cat` of the same bytes (the overlay's modified data file) as the peer. The overlay has
# its whole memory image modified (BENCH_STREAM_SIZE, default 256M) plus random writes over a 64M
# disk.
# Columns: stream bytes, wall seconds, MiB/s of stream, and time relative to cat (lower is better).
# Target: export and verify within 2x of cat (every byte is checksummed and digested); import
# of this first stream writes each chunk once, in place (a later stream stages the chunks the
# overlay holds, then publishes them). Run by `make bench` (bench/run); alone:
#   HANDOFF_BUILD=build bench/stream.sh
set -u
: "${HANDOFF_BUILD:?set HANDOFF_BUILD to the build directory}"
export PATH="$HANDOFF_BUILD/bin:$PATH"
mk=$HANDOFF_BUILD/tests/mkoverlay
size=${BENCH_STREAM_SIZE:-256M}
[ -x "$mk" ] || { echo "mkoverlay not built"; exit 77; }
work=$(mktemp -d /var/tmp/handoff-bench-stream.XXXXXX)
trap 'kill $rx 2>/dev/null; rm -rf "$work"' EXIT
cd "$work"
rx=

"$mk" mkbase disk.img 64M 1 >/dev/null
"$mk" create src disk.img "zero:$size" || exit 1
"$mk" fill src memory 7 || exit 1
"$mk" write src 3 3000 1M || exit 1
bytes=$(( $(stat -c %s src/memory.data) + $(stat -c %s src/disk.data) ))
sync
cat src/memory.data src/disk.data >/dev/null     # same cache state for every row

secs() { local s e; s=$(date +%s.%N); "$@" >/dev/null 2>&1; local rc=$?; e=$(date +%s.%N); echo "$e - $s" | bc; return $rc; }
row() { printf '%-34s %10s %8.2f %9.1f %8s\n' "$1" "$(numfmt --to=iec "$2")" "$3" "$(echo "$2 / $3 / 1048576" | bc -l)" "$4"; }

printf '%-34s %10s %8s %9s %8s\n' "operation" "bytes" "seconds" "MiB/s" "time/cat"
t_cat=$(secs sh -c "cat src/memory.data src/disk.data | cat >/dev/null")
row "cat data files | cat (peer)" "$bytes" "$t_cat" "1.00"
handoff-export -q --mode raw -o s.hs src 2>/dev/null
sbytes=$(stat -c %s s.hs)
t_exp=$(secs sh -c "handoff-export -q --mode raw src >/dev/null")
row "handoff-export >/dev/null" "$sbytes" "$t_exp" "$(echo "scale=2; $t_exp / $t_cat" | bc)"
t_exp2=$(secs sh -c "handoff-export -q --mode lz4 -T 2 src >/dev/null")
row "handoff-export --mode lz4 -T 2" "$sbytes" "$t_exp2" "$(echo "scale=2; $t_exp2 / $t_cat" | bc)"
"$mk" create dst0 disk.img "zero:$size"
t_ver=$(secs handoff-import -q --verify-only dst0 s.hs)
row "handoff-import --verify-only FILE" "$sbytes" "$t_ver" "$(echo "scale=2; $t_ver / $t_cat" | bc)"
"$mk" create dst1 disk.img "zero:$size"
t_imp=$(secs handoff-import -q dst1 s.hs)
row "handoff-import FILE" "$sbytes" "$t_imp" "$(echo "scale=2; $t_imp / $t_cat" | bc)"
"$mk" create dst2 disk.img "zero:$size"
t_pipe=$(secs sh -c "handoff-export -q --mode raw src | handoff-import -q dst2 -")
row "handoff-export | handoff-import" "$sbytes" "$t_pipe" "$(echo "scale=2; $t_pipe / $t_cat" | bc)"
"$mk" create dst3 disk.img "zero:$size"
handoff-import -q --listen 127.0.0.1:0 --port-file port dst3 & rx=$!
for _ in $(seq 100); do [ -s port ] && break; sleep 0.05; done
t_tcp=$(secs handoff-export -q --mode raw --to 127.0.0.1:"$(cat port)" src)
row "handoff-export --to (loopback TCP)" "$sbytes" "$t_tcp" "$(echo "scale=2; $t_tcp / $t_cat" | bc)"
wait $rx
[ "$("$mk" hash src)" = "$("$mk" hash dst3)" ] && echo "# TCP result verified identical" || echo "# TCP result DIFFERS"
