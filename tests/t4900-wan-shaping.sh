#!/usr/bin/env bash
# exclusive: measures link throughput, so it must not share the cores with other tests
# t4900-wan-shaping.sh — scripts/wan.sh, the emulated WAN the adaptive-mode tests and benchmarks
# run on: two namespaces joined by a tbf-shaped veth pair must carry a TCP stream at its nominal
# rate (10 and 50 Mbit/s, within 15 %), follow a rate change in the middle of a transfer, refuse
# bad arguments with a one-line message and exit 2 (1 for other failures, like not being root), and
# leave nothing behind after `down`.
. "$(dirname "$0")/lib.sh"
WAN="$HANDOFF_SRC/scripts/wan.sh"
[ "$(id -u)" = 0 ] || skip_all "needs root for network namespaces"
PATH=$PATH:/usr/sbin:/sbin
command -v ip >/dev/null && command -v tc >/dev/null || skip_all "iproute2 not installed (make deps)"
command -v socat >/dev/null || skip_all "socat not installed (make deps)"
command -v perl >/dev/null || skip_all "perl not installed"
ip netns list >/dev/null 2>&1 || skip_all "'ip netns' unavailable"

NAME=tw$$
trap '"$WAN" down $NAME >/dev/null 2>&1; t_cleanup' EXIT

# the receiver's meter: "SECONDS BYTES" every 0.25 s from the first byte on, and at the end
cat >meter.pl <<'EOF'
use strict; use warnings; use Time::HiRes qw(time);
$| = 1;
my ($t0, $n, $next, $buf) = (undef, 0, 0);
while (1) {
	my $r = sysread(STDIN, $buf, 1 << 16);
	last unless $r;
	my $t = time;
	if (!defined $t0) { $t0 = $t; $next = $t0 + 0.25; }
	$n += $r;
	while ($t >= $next) { printf "%.3f %d\n", $t - $t0, $n; $next += 0.25; }
}
printf "%.3f %d\n", defined $t0 ? time - $t0 : 0, $n;
EOF

# transfer MIB of zeros from side a to side b; the meter log lands in LOG
transfer() {
	local mib=$1 log=$2
	"$WAN" exec $NAME b sh -c 'exec socat -u TCP-LISTEN:5001,reuseaddr STDOUT | perl meter.pl' >"$log" &
	local rpid=$!
	"$WAN" exec $NAME a sh -c "head -c ${mib}M /dev/zero | socat -u STDIN TCP:$("$WAN" addr $NAME b):5001,retry=100,interval=0.05"
	local rc=$?
	wait $rpid
	return $rc
}

# Mbit/s between the first log line at or after FROM seconds and the last at or before TO
rate_between() {
	awk -v a="$2" -v b="$3" '
		$1 >= a && !s { s = 1; t0 = $1; n0 = $2 }
		$1 <= b { t1 = $1; n1 = $2 }
		END { if (s && t1 > t0) printf "%.2f\n", (n1 - n0) * 8 / (t1 - t0) / 1e6; else print 0 }' "$1"
}

# a process is gone when it is no more, or a zombie nobody reaped yet
gone() { local s; s=$(ps -o stat= -p "$1" 2>/dev/null); [ -z "$s" ] || [[ $s == Z* ]]; }
within() { awk -v g="$1" -v w="$2" -v p="$3" 'BEGIN { exit !(g >= w * (1 - p) && g <= w * (1 + p)) }'; }

"$WAN" up $NAME 10mbit 2>err || { grep -q "cannot create" err && skip_all "$(cat err)"; bail "wan.sh up failed: $(cat err)"; }
ok "link up at 10 Mbit/s"
check "namespaces $NAME-a and $NAME-b exist" sh -c "ip netns list | grep -q '^$NAME-a' && ip netns list | grep -q '^$NAME-b'"
check "the test addresses are not on the host" sh -c "! ip -o addr show | grep -q '10\.213\.0\.'"
check "tbf shapes side a" sh -c "'$WAN' exec $NAME a tc qdisc show dev $NAME-va | grep -q 'tbf.*rate 10Mbit'"
check "tbf shapes side b" sh -c "'$WAN' exec $NAME b tc qdisc show dev $NAME-vb | grep -q 'tbf.*rate 10Mbit'"

for r in 10 50; do
	"$WAN" rate $NAME ${r}mbit
	transfer $((r / 4)) "m$r.log"       # ~2 s worth
	got=$(rate_between "m$r.log" 0.25 1000)
	if within "$got" "$r" 0.15; then ok "$r Mbit/s link carries $got Mbit/s"; else not_ok "$r Mbit/s link carries $got Mbit/s"; cat "m$r.log" | sed 's/^/#   /'; fi
done

# a change in the middle of a transfer: 10 Mbit/s for 1.5 s, then 40 Mbit/s
pid=$("$WAN" schedule $NAME "10mbit:1.5 40mbit:30")
check "schedule runs in the background (pid $pid)" kill -0 "$pid"
transfer 12 msched.log
before=$(rate_between msched.log 0.25 1.0)
after=$(rate_between msched.log 2.25 1000)
if within "$before" 10 0.25 && within "$after" 40 0.2; then
	ok "rate follows the schedule mid-transfer: $before then $after Mbit/s"
else
	not_ok "rate follows the schedule mid-transfer: $before then $after Mbit/s"; sed 's/^/#   /' msched.log
fi
is "$(wc -l </run/handoff-wan/$NAME.schedule.log)" 2 "schedule logged two changes"

# refusals: one line, exit 2
"$WAN" up 2>err; is "$?:$(wc -l <err)" "2:1" "no arguments: one-line usage error, exit 2"
"$WAN" up $NAME 10parsec 2>err; rc=$?
is "$rc" 2 "bad rate: exit 2"; check "bad rate: names the rate" grep -q "invalid rate '10parsec'" err
"$WAN" up 'Bad Name' 1mbit 2>err; is "$?" 2 "bad name: exit 2"
"$WAN" schedule $NAME "10mbit" 2>err; is "$?" 2 "bad schedule step: exit 2"
"$WAN" rate nosuch$$ 1mbit 2>err; is "$?:$(wc -l <err)" "1:1" "unknown link: one line, exit 1"
if command -v setpriv >/dev/null; then
	setpriv --reuid=65534 --regid=65534 --clear-groups "$WAN" up $NAME 1mbit 2>err
	is "$?" 1 "not root: exit 1"; check "not root: says so" grep -q "must run as root" err
fi

check "down" "$WAN" down $NAME
check "schedule ended with the link" gone "$pid"
check_fail "namespaces gone" sh -c "ip netns list | grep -q '^$NAME-'"
check_fail "veth gone" sh -c "ip link show $NAME-va >/dev/null 2>&1"
check "down again is harmless" "$WAN" down $NAME
done_testing
