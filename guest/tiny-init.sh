#!/bin/sh
# tiny-init.sh — /init of the handoff tiny test guest (copied into its initramfs by
# guest/build-tiny.sh). It exists so that a live handoff can be checked from outside: it keeps a
# counter in RAM that ticks every ~0.2 s, keeps pseudo-random data both in RAM (tmpfs) and on the
# disk (/dev/vda, ext4, mounted on /data) with md5s remembered in RAM, and re-verifies all of it
# every few seconds or on request. After a handoff the counter must go on from where it was (same
# boot id) and the check must still pass.
#
# Serial console (ttyS0) protocol, one line each, parseable by tests:
#   HANDOFF-BOOT <boot-id>                     once, early
#   HANDOFF-READY boot=<id> data=<MiB>         once, when the workload runs
#   HANDOFF-COUNTER <n> boot=<id>              every tick
#   HANDOFF-CHECK ok n=<n> checks=<k> boot=<id>
#   HANDOFF-CHECK fail n=<n> checks=<k> boot=<id> reason=<what,...>
#   HANDOFF-ERROR <message>                    setup failed (workload does not run)
# Request a check: write a line "check" to the second serial port (ttyS1) when the VM has one;
# the CHECK line then also goes to ttyS1. A check also runs every handoff.check ticks.
#
# Kernel cmdline knobs (defaults): handoff.tick=0.2 handoff.datamb=4 handoff.churnkb=256
#   handoff.sync=5 (ticks between counter writes to disk) handoff.churn=10 (ticks between
#   rewrites of the churn file) handoff.check=25 (ticks between checks)

PATH=/bin:/sbin:/usr/bin:/usr/sbin
export PATH
umask 022

mkdir -p /proc /sys /dev /run /data /tmp
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
exec 0</dev/console 1>/dev/console 2>&1
mount -t tmpfs -o size=75% tmpfs /run
echo 1 >/proc/sys/kernel/printk 2>/dev/null

fatal() {
	echo "HANDOFF-ERROR $*"
	while :; do sleep 3600; done
}

TICK=0.2 DATAMB=4 CHURNKB=256 SYNC=5 CHURN=10 CHECK=25
for w in $(cat /proc/cmdline); do
	case "$w" in
	handoff.tick=*) TICK=${w#*=} ;;
	handoff.datamb=*) DATAMB=${w#*=} ;;
	handoff.churnkb=*) CHURNKB=${w#*=} ;;
	handoff.sync=*) SYNC=${w#*=} ;;
	handoff.churn=*) CHURN=${w#*=} ;;
	handoff.check=*) CHECK=${w#*=} ;;
	esac
done

BOOT=$(cut -c1-8 /proc/sys/kernel/random/boot_id)
echo "HANDOFF-BOOT $BOOT"

# virtio drivers that the kernel has as modules, in dependency order (written by the build)
if [ -f /lib/modules/load-order ]; then
	while read -r m; do
		[ -n "$m" ] || continue
		insmod "/lib/modules/$m.ko" || echo "HANDOFF-WARN insmod $m failed"
	done </lib/modules/load-order
fi

i=0
while [ ! -b /dev/vda ]; do
	i=$((i + 1))
	[ $i -gt 100 ] && fatal "no /dev/vda after 10 s"
	sleep 0.1
done
mount -t ext4 -o noatime /dev/vda /data || fatal "cannot mount /dev/vda on /data"

# shellcheck disable=SC2046 # split "hash  name" into words on purpose
md5of() { set -- $(md5sum "$1" 2>/dev/null); echo "${1:-none}"; }

# pseudo-random data generated in RAM, copied to disk; the md5 lives in a shell variable (RAM)
dd if=/dev/urandom of=/run/ram.bin bs=1024 count=$((DATAMB * 1024)) 2>/dev/null || fatal "dd ram"
DATA_MD5=$(md5of /run/ram.bin)
cp /run/ram.bin /data/disk.bin.tmp && mv /data/disk.bin.tmp /data/disk.bin || fatal "write /data/disk.bin"
echo "$DATA_MD5" >/data/disk.md5

churn() {
	dd if=/dev/urandom of=/run/churn.bin bs=1024 count="$CHURNKB" 2>/dev/null
	CHURN_MD5=$(md5of /run/churn.bin)
	cp /run/churn.bin /data/churn.bin.tmp && mv /data/churn.bin.tmp /data/churn.bin
}
churn
N=0 CHECKS=0 FAILS=0
echo 0 >/data/counter
sync

CMDPORT=
if [ -c /dev/ttyS1 ] && stty -F /dev/ttyS1 raw -echo 2>/dev/null; then
	CMDPORT=/dev/ttyS1
	(
		exec 0</dev/ttyS1
		while :; do
			if read -r line; then
				case "$line" in
				check*) : >/run/check.req ;;
				esac
			else
				sleep 1
			fi
		done
	) &
fi

check() {
	why=
	sync
	echo 3 >/proc/sys/vm/drop_caches
	[ "$(cat /run/counter)" = "$N" ] || why="$why,ramcounter"
	d=$(cat /data/counter 2>/dev/null)
	case "$d" in '' | *[!0-9]*) d=-1 ;; esac
	if [ "$d" -lt 0 ] || [ "$d" -gt "$N" ] || [ $((N - d)) -gt "$SYNC" ]; then
		why="$why,diskcounter=$d"
	fi
	[ "$(md5of /run/ram.bin)" = "$DATA_MD5" ] || why="$why,ramdata"
	[ "$(md5of /data/disk.bin)" = "$DATA_MD5" ] || why="$why,diskdata"
	[ "$(cat /data/disk.md5 2>/dev/null)" = "$DATA_MD5" ] || why="$why,diskmd5"
	[ "$(md5of /run/churn.bin)" = "$CHURN_MD5" ] || why="$why,ramchurn"
	[ "$(md5of /data/churn.bin)" = "$CHURN_MD5" ] || why="$why,diskchurn"
	(cd /data/base && md5sum -c -s MD5SUMS) || why="$why,base"
	CHECKS=$((CHECKS + 1))
	if [ -z "$why" ]; then
		msg="HANDOFF-CHECK ok n=$N checks=$CHECKS boot=$BOOT"
	else
		FAILS=$((FAILS + 1))
		msg="HANDOFF-CHECK fail n=$N checks=$CHECKS boot=$BOOT reason=${why#,}"
	fi
	echo "$msg"
	[ -n "$CMDPORT" ] && echo "$msg" >"$CMDPORT"
}

echo 0 >/run/counter
check
echo "HANDOFF-READY boot=$BOOT data=$DATAMB"
while :; do
	N=$((N + 1))
	echo "$N" >/run/counter
	echo "HANDOFF-COUNTER $N boot=$BOOT"
	if [ $((N % SYNC)) -eq 0 ]; then
		echo "$N" >/data/counter.tmp && mv /data/counter.tmp /data/counter
	fi
	[ $((N % CHURN)) -eq 0 ] && churn
	if [ $((N % CHECK)) -eq 0 ] || [ -e /run/check.req ]; then
		rm -f /run/check.req
		check
	fi
	sleep "$TICK"
done
