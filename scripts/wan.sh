#!/usr/bin/env bash
# wan.sh — an emulated WAN for tests and benchmarks: two network namespaces NAME-a and NAME-b
# joined by a veth pair, each direction shaped by a tbf qdisc, whose rate can be changed while a
# transfer runs, by hand or on a schedule. The handoff source runs in NAME-a (10.213.0.1), the
# destination in NAME-b (10.213.0.2); those addresses exist only inside the two namespaces, so
# the host's own networking is never touched. netem and fq are not in these kernels, so there is no
# added delay: tbf's queue (latency 400ms) is the only buffer.
#
#   wan.sh up NAME RATE                 create (or re-shape) the link; RATE as tc takes it: 5mbit, 1gbit
#   wan.sh rate NAME RATE               change the rate of both directions now
#   wan.sh schedule NAME "R:S R:S ..."  in the background, hold rate R for S seconds each, in turn
#                                       (prints the changer's pid; the last rate stays; --loop repeats;
#                                       each change is logged as "EPOCH RATE" in STATE/NAME.schedule.log)
#   wan.sh stop NAME                    end a running schedule (the current rate stays)
#   wan.sh exec NAME a|b CMD...         run CMD inside NAME-a or NAME-b
#   wan.sh addr NAME a|b                print the side's address
#   wan.sh show NAME                    the qdiscs and their counters
#   wan.sh down NAME                    remove everything (idempotent)
#
# Exit status: 0 success, 1 failure (one-line message on stderr), 2 usage error. Needs root and
# iproute2 with tc (Debian: iproute2).
set -u
PROG=wan.sh
ADDR_A=10.213.0.1
ADDR_B=10.213.0.2
STATE=${WAN_STATE_DIR:-/run/handoff-wan}
PATH=$PATH:/usr/sbin:/sbin

die()   { echo "$PROG: $*" >&2; exit 1; }
usage() { echo "$PROG: $* (usage: $PROG up|rate|schedule|stop|exec|addr|show|down NAME ...)" >&2; exit 2; }

check_name() {
	# veth names are NAME-va / NAME-vb and must fit IFNAMSIZ (15)
	[[ "$1" =~ ^[a-z0-9][a-z0-9_]{0,11}$ ]] || usage "invalid link name '$1' (1-12 of [a-z0-9_])"
}

check_rate() {
	[[ "$1" =~ ^[0-9]+(\.[0-9]+)?(bit|kbit|mbit|gbit)$ ]] || usage "invalid rate '$1' (e.g. 500kbit, 10mbit, 1gbit)"
}

# bits per second of a tc rate string
rate_bps() {
	awk -v r="$1" 'BEGIN {
		n = r + 0; u = r; sub(/^[0-9.]+/, "", u)
		m = (u == "kbit") ? 1e3 : (u == "mbit") ? 1e6 : (u == "gbit") ? 1e9 : 1
		printf "%.0f\n", n * m }'
}

need_root() {
	[ "$(id -u)" = 0 ] || die "must run as root (network namespaces and tc)"
	command -v ip >/dev/null || die "'ip' not found (install iproute2)"
	command -v tc >/dev/null || die "'tc' not found (install iproute2)"
}

exists() { ip netns list 2>/dev/null | grep -qE "^$1( |\$)"; }

# tbf on the egress of one side. The bucket must hold what the kernel may hand over between two
# timer ticks at the target rate (10 ms worth) and at least a few full frames, or the measured rate
# falls short of nominal; the queue holds 400 ms worth.
shape() {
	local ns=$1 dev=$2 rate=$3 bps burst
	bps=$(rate_bps "$rate")
	burst=$(( bps / 8 / 100 ))
	[ "$burst" -lt 32768 ] && burst=32768
	ip netns exec "$ns" tc qdisc replace dev "$dev" root tbf rate "$rate" burst "$burst" latency 400ms \
		|| die "cannot shape '$dev' in '$ns' to '$rate'"
}

kill_schedule() {
	local pidf="$STATE/$1.schedule" pid
	[ -f "$pidf" ] || return 0
	read -r pid <"$pidf" 2>/dev/null || pid=
	[ -n "$pid" ] && kill "$pid" 2>/dev/null
	rm -f "$pidf"
}

cmd_up() {
	local name=$1 rate=$2 a="$1-a" b="$1-b"
	check_name "$name"; check_rate "$rate"; need_root
	if exists "$a" && exists "$b" && ip -n "$a" link show "$name-va" >/dev/null 2>&1; then
		kill_schedule "$name"
		shape "$a" "$name-va" "$rate"; shape "$b" "$name-vb" "$rate"
		return 0
	fi
	cmd_down "$name" >/dev/null 2>&1
	ip netns add "$a" 2>/dev/null || die "cannot create network namespace '$a'"
	ip netns add "$b" 2>/dev/null || { ip netns del "$a"; die "cannot create network namespace '$b'"; }
	if ! { ip link add "$name-va" netns "$a" type veth peer name "$name-vb" netns "$b" &&
	       ip -n "$a" addr add "$ADDR_A/30" dev "$name-va" &&
	       ip -n "$b" addr add "$ADDR_B/30" dev "$name-vb" &&
	       ip -n "$a" link set lo up && ip -n "$b" link set lo up &&
	       ip -n "$a" link set "$name-va" up && ip -n "$b" link set "$name-vb" up; } 2>/dev/null; then
		cmd_down "$name" >/dev/null 2>&1
		die "cannot create the veth pair '$name-va'/'$name-vb'"
	fi
	shape "$a" "$name-va" "$rate"
	shape "$b" "$name-vb" "$rate"
	mkdir -p "$STATE"
}

cmd_rate() {
	local name=$1 rate=$2
	check_name "$name"; check_rate "$rate"; need_root
	exists "$name-a" || die "no link '$name' (wan.sh up first)"
	shape "$name-a" "$name-va" "$rate"
	shape "$name-b" "$name-vb" "$rate"
}

cmd_schedule() {
	local name=$1 spec=$2 loop=${3:-} step r s
	check_name "$name"; need_root
	exists "$name-a" || die "no link '$name' (wan.sh up first)"
	[ -n "$spec" ] || usage "empty schedule"
	for step in $spec; do
		[[ "$step" =~ ^([^:]+):([0-9]+(\.[0-9]+)?)$ ]] || usage "invalid schedule step '$step' (RATE:SECONDS)"
		check_rate "${BASH_REMATCH[1]}"
	done
	kill_schedule "$name"
	mkdir -p "$STATE"
	: >"$STATE/$name.schedule.log"
	(
		sp=
		trap '[ -n "$sp" ] && kill $sp 2>/dev/null; exit 0' TERM
		while :; do
			for step in $spec; do
				r=${step%%:*}; s=${step##*:}
				cmd_rate "$name" "$r" || exit 1
				echo "$(date +%s.%N) $r" >>"$STATE/$name.schedule.log"
				sleep "$s" & sp=$!
				wait $sp
				sp=
			done
			[ "$loop" = --loop ] || break
		done
		rm -f "$STATE/$name.schedule"
	) </dev/null >/dev/null 2>>"$STATE/$name.schedule.log" &
	echo $! >"$STATE/$name.schedule"
	echo $!
}

cmd_down() {
	local name=$1 side
	check_name "$name"; need_root
	kill_schedule "$name"
	rm -f "$STATE/$name.schedule.log"
	for side in a b; do
		if exists "$name-$side"; then
			# anything still running inside keeps the namespace's processes alive: end them first
			ip netns pids "$name-$side" 2>/dev/null | xargs -r kill 2>/dev/null
			ip netns del "$name-$side" 2>/dev/null || die "cannot delete network namespace '$name-$side'"
		fi
	done
	# the veth pair goes with its namespaces; make sure no stray end was left in the host's
	ip link del "$name-va" 2>/dev/null
	ip link del "$name-vb" 2>/dev/null
	return 0
}

[ $# -ge 2 ] || usage "missing arguments"
cmd=$1 name=$2
shift 2
case "$cmd" in
up)       [ $# = 1 ] || usage "up NAME RATE"; cmd_up "$name" "$1" ;;
rate)     [ $# = 1 ] || usage "rate NAME RATE"; cmd_rate "$name" "$1" ;;
schedule) [ $# = 1 ] || [ $# = 2 ] || usage "schedule NAME \"RATE:SECONDS ...\" [--loop]"
          [ $# = 1 ] || [ "$2" = --loop ] || usage "unknown schedule option '$2'"
          cmd_schedule "$name" "$1" "${2:-}" ;;
stop)     [ $# = 0 ] || usage "stop NAME"; check_name "$name"; need_root; kill_schedule "$name" ;;
exec)     [ $# -ge 2 ] || usage "exec NAME a|b CMD..."
          case $1 in a|b) ;; *) usage "side must be 'a' or 'b', not '$1'";; esac
          check_name "$name"; need_root
          exists "$name-$1" || die "no link '$name' (wan.sh up first)"
          side=$1; shift
          # Only the network namespace: 'ip netns exec' would also give CMD a private copy of
          # every mount (here '/' is not shared), FUSE mounts included, whose daemons then
          # outlive their unmount elsewhere while CMD runs. Mounts CMD makes stay visible.
          if [ -e "/run/netns/$name-$side" ] && command -v nsenter >/dev/null; then
                  exec nsenter --net="/run/netns/$name-$side" -- "$@"
          fi
          exec ip netns exec "$name-$side" "$@" ;;
addr)     [ $# = 1 ] || usage "addr NAME a|b"
          case $1 in a) echo $ADDR_A;; b) echo $ADDR_B;; *) usage "side must be 'a' or 'b', not '$1'";; esac ;;
show)     check_name "$name"; need_root
          exists "$name-a" || die "no link '$name'"
          ip netns exec "$name-a" tc -s qdisc show dev "$name-va"
          ip netns exec "$name-b" tc -s qdisc show dev "$name-vb" ;;
down)     [ $# = 0 ] || usage "down NAME"; cmd_down "$name" ;;
*)        usage "unknown command '$cmd'" ;;
esac
