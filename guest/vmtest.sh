# guest/vmtest.sh — shell helpers (sourced) for tests and demos that boot the handoff test
# guests: find vmctl (the CLI of the vm module, build/tests/vmctl), build and load the tiny guest, and read
# the guest's console protocol (HANDOFF-COUNTER/CHECK/BOOT lines, see guest/tiny-init.sh). It
# exists so the t6* tests and the demo share one way of doing these things. Uses ok/not_ok/
# skip_all/bail from tests/lib.sh when present; needs HANDOFF_SRC (repo root) and a scratch dir.
#
#   vmt_init SCRATCH_DIR      find qemu and vmctl (skips the test when qemu is missing)
#   vmt_tiny                  build (cached) and source the tiny guest's guest.env
#   vmt_start RUN_DIR ARGS..  vmctl start (detached); sets VMT_LAST_PID, remembered for
#                             vmt_cleanup (call it directly, not in $(...))
#   vmt_counter LOG           last HANDOFF-COUNTER value in a console log (0 if none); only
#                             lines that got as far as boot= count (QEMU may be mid-line)
#   vmt_first_counter LOG     first one
#   vmt_wait_counter LOG N S  wait up to S seconds until the counter is >= N
#   vmt_boot_id LOG           boot id of the last counter line
#   vmt_counter_seq LOG...    counter runs 1..N without gap or reset across the logs
#   vmt_alive PID             process runs (not a zombie)
#   vmt_elapsed T0            seconds since T0 (date +%s.%N)
#   vmt_cleanup               kill every QEMU started with vmt_start

: "${HANDOFF_SRC:=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}"
: "${HANDOFF_BUILD:=$HANDOFF_SRC/build}"
VMT_PIDS=()
VMCTL=

vmt_init() {
	VMT_DIR=$1
	mkdir -p "$VMT_DIR"
	command -v "${HANDOFF_QEMU:-qemu-system-x86_64}" >/dev/null ||
		skip_all "qemu-system-x86_64 not installed (apt-get install qemu-system-x86)"
	VMCTL=$HANDOFF_BUILD/tests/vmctl
	[ -x "$VMCTL" ] || bail "$VMCTL missing (run make first)"
}

vmt_tiny() {
	local env
	if ! env=$("$HANDOFF_SRC/guest/build-tiny.sh" 2>"$VMT_DIR/build-tiny.log"); then
		sed 's/^/# /' "$VMT_DIR/build-tiny.log"
		if grep -qE 'not readable|no /boot/vmlinuz|not found|no static busybox' "$VMT_DIR/build-tiny.log"; then
			skip_all "cannot build the tiny guest: $(tail -n1 "$VMT_DIR/build-tiny.log")"
		fi
		bail "guest/build-tiny.sh failed"
	fi
	# shellcheck disable=SC1090
	. "$env"
}

vmt_start() {
	local dir=$1 pid
	shift
	mkdir -p "$dir"
	pid=$("$VMCTL" start "$dir" "$@") || return 1
	VMT_PIDS+=("$pid")
	# shellcheck disable=SC2034 # for the caller
	VMT_LAST_PID=$pid
}

vmt_counter() {
	local v
	v=$(tr -d '\r' <"$1" 2>/dev/null | awk '$1 == "HANDOFF-COUNTER" && $3 ~ /^boot=/ { n = $2 } END { print n + 0 }')
	echo "${v:-0}"
}

vmt_first_counter() {
	tr -d '\r' <"$1" 2>/dev/null | awk '$1 == "HANDOFF-COUNTER" && $3 ~ /^boot=/ { print $2 + 0; found = 1; exit } END { if (!found) print 0 }'
}

vmt_boot_id() {
	tr -d '\r' <"$1" 2>/dev/null | awk '$1 == "HANDOFF-COUNTER" { b = $3 } END { sub("boot=", "", b); print b }'
}

vmt_wait_counter() {
	local log=$1 want=$2 secs=$3 i
	for ((i = 0; i < secs * 10; i++)); do
		[ "$(vmt_counter "$log")" -ge "$want" ] && return 0
		sleep 0.1
	done
	return 1
}

# vmt_counter_seq LOG...: the logs concatenated (one guest's console across handoffs: a line cut
# by a pause is completed in the next log) must count 1, 2, 3... with one boot id. Prints the
# first problem, or "1..N boot=ID"; returns 1 on a problem.
vmt_counter_seq() {
	cat "$@" 2>/dev/null | tr -d '\r' | awk '
		$1 == "HANDOFF-COUNTER" && $3 ~ /^boot=/ {
			if (boot == "") boot = $3
			else if ($3 != boot) { print "boot id changed at " $2 ": " boot " -> " $3; bad = 1; exit }
			if ($2 != prev + 1) { print "counter " prev " followed by " $2; bad = 1; exit }
			prev = $2
		}
		END { if (bad) exit 1; if (prev == 0) { print "no counter"; exit 1 } print "1.." prev " " boot }'
}

# vmt_alive PID: running and not a zombie (a detached QEMU's parent may be slow to reap it)
vmt_alive() {
	local st
	st=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -c1) || return 1
	[ -n "$st" ] && [ "$st" != Z ] && [ "$st" != X ]
}

# vmt_elapsed T0: seconds since T0 (from date +%s.%N), one decimal
vmt_elapsed() {
	awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'
}

vmt_cleanup() {
	local p
	for p in "${VMT_PIDS[@]:-}"; do
		[ -n "$p" ] && kill -9 "$p" 2>/dev/null
	done
	VMT_PIDS=()
	return 0
}
