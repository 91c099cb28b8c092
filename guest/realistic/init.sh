#!/bin/bash
# init.sh — PID 1 of the realistic guest (installed as /sbin/handoff-init by
# guest/build-realistic.sh, chosen with init= on the kernel command line). It exists because a
# minbase Debian has no init system, and a demo guest needs none: it mounts what the app needs,
# brings up loopback, starts app.py and loadgen.py with the workload named by handoff.load=
# (light|heavy) and reaps orphans forever.
PATH=/usr/sbin:/usr/bin:/sbin:/bin
export PATH

mountpoint -q /proc || mount -t proc proc /proc
mountpoint -q /sys || mount -t sysfs sysfs /sys
mountpoint -q /dev || mount -t devtmpfs devtmpfs /dev
exec 0</dev/console 1>/dev/console 2>&1
echo "HANDOFF-BOOT $(cut -c1-8 /proc/sys/kernel/random/boot_id)"
mount -o remount,rw / || echo "HANDOFF-ERROR cannot remount / rw"
mountpoint -q /run || mount -t tmpfs -o mode=0755 tmpfs /run
mountpoint -q /tmp || mount -t tmpfs tmpfs /tmp
mkdir -p /dev/pts /dev/shm
mountpoint -q /dev/pts || mount -t devpts devpts /dev/pts
mountpoint -q /dev/shm || mount -t tmpfs tmpfs /dev/shm
echo 1 >/proc/sys/kernel/printk
hostname handoff-guest
ip link set lo up || echo "HANDOFF-ERROR no loopback"

LOAD=light
for w in $(cat /proc/cmdline); do
	case "$w" in
	handoff.load=*) LOAD=${w#*=} ;;
	esac
done

python3 /opt/handoff/app.py >/var/log/handoff-app.log 2>&1 &
python3 /opt/handoff/loadgen.py --load "$LOAD" 2>>/var/log/handoff-loadgen.log &

# PID 1 must never exit; bash reaps any child on SIGCHLD, orphans re-parented to it too
while :; do
	wait
	sleep 1
done
