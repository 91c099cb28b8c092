#!/usr/bin/env bash
# t4020 — TCP transfer with acknowledgements and resume: in each round the sender gets new writes
# and starts a throttled transfer to handoff-import --listen (loopback only); the exporter or the
# receiver is killed -9 at a random moment; the killed side is restarted and the same export
# re-run, which resumes from what the receiver acknowledged. After every round the receiver's
# images are byte-identical to the sender's. 20 rounds (100 with make test-long).
. "$HANDOFF_SRC/tests/lib.sh"
mk=$HANDOFF_BUILD/tests/mkoverlay
rounds=20; [ "${HANDOFF_LONG:-0}" = 1 ] && rounds=100

"$mk" mkbase disk.img 2M 1 && "$mk" mkbase mem.img 1M 2 || bail "bases"
"$mk" create src disk.img mem.img && "$mk" create dst disk.img mem.img || bail "overlays"
head -c 32 /dev/urandom >key

rx_pid= restarts=0
start_rx() {   # the first time on any port; restarts alternate between the same port and a new one
	local p=0
	[ -s port ] && [ $((restarts++ % 2)) = 0 ] && p=$(cat port)
	rm -f port
	handoff-import -q --key key --listen 127.0.0.1:$p --port-file port --keep-going dst 2>>rx.log &
	rx_pid=$!
	T_PIDS+=("$rx_pid")
	for _ in $(seq 200); do [ -s port ] && break; sleep 0.02; done
	[ -s port ] || bail "receiver did not start"
}
start_rx

since=0 resumed=0
for r in $(seq "$rounds"); do
	"$mk" write src "$r" $((20 + RANDOM % 20)) 12000
	echo $since >gen
	handoff-export -q --key key --since $since --frame-size 4K --rate-limit 400K --gen-file gen --to 127.0.0.1:"$(cat port)" src 2>tx.log &
	tx=$!
	sleep "0.$((RANDOM % 5 + 1))"
	if [ $((RANDOM % 2)) = 0 ]; then
		victim=exporter; kill -9 $tx 2>/dev/null; wait $tx 2>/dev/null
	else
		victim=receiver; kill -9 "$rx_pid" 2>/dev/null; wait "$rx_pid" 2>/dev/null; wait $tx 2>/dev/null
		start_rx
	fi
	# if the first run finished before the kill, gen moved on and this is just the next round
	handoff-export -v --key key --since "$(cat gen)" --frame-size 4K --to 127.0.0.1:"$(cat port)" --gen-file gen src 2>tx2.log
	rc=$?
	if [ $rc != 0 ]; then not_ok "round $r: re-run after killing the $victim (exit $rc)"; sed 's/^/#   /' tx2.log; continue; fi
	grep -q "frames already: resuming" tx2.log && resumed=$((resumed + 1))
	if [ "$("$mk" hash src)" = "$("$mk" hash dst)" ]; then ok "round $r: killed the $victim, resumed, images identical"
	else not_ok "round $r: killed the $victim: images differ"; fi
	since=$(cat gen)
done
# the overlay changes between the interrupted transfer and the re-run: the regenerated stream
# differs from what the receiver staged, so the sender starts over; the next round catches up
"$mk" write src 1000 200 12000
echo $since >gen
handoff-export -q --key key --since $since --frame-size 4K --rate-limit 300K --to 127.0.0.1:"$(cat port)" src 2>/dev/null &
tx=$!
sleep 0.5; kill -9 $tx 2>/dev/null; wait $tx 2>/dev/null
"$mk" fill src disk 1001     # every disk chunk changes: the staged frames no longer match
handoff-export -v --key key --since $since --frame-size 4K --to 127.0.0.1:"$(cat port)" --gen-file gen src 2>tx2.log
is "$?" 0 "changed overlay: the re-run succeeds"
grep -q "the overlay changed since the interrupted transfer: starting over" tx2.log
is "$?" 0 "changed overlay: the sender noticed and started over"
handoff-export -q --key key --since "$(cat gen)" --to 127.0.0.1:"$(cat port)" --gen-file gen src 2>/dev/null
is "$?" 0 "changed overlay: the next round"
is "$("$mk" hash src)" "$("$mk" hash dst)" "changed overlay: after the next round the images are identical"
kill "$rx_pid" 2>/dev/null; wait "$rx_pid" 2>/dev/null
check "some rounds resumed a partial transfer ($resumed of $rounds)" test "$resumed" -gt 0
check "no staging file is left behind" test ! -e dst/staging/journal
done_testing
