#!/usr/bin/env bash
# t3040 — the cache rules QEMU needs: the memory file maps shared and writable, keeps its page
# cache across stat, open and close by other processes (no automatic invalidation, a stable
# mtime), and writes made through the mapping reach the overlay on msync.
. "$HANDOFF_SRC/tests/lib.sh"
need_fuse
command -v python3 >/dev/null || skip_all "python3 missing"

head -c 1M /dev/urandom >base.disk
check "mount" mount_overlay ovl mnt --disk base.disk --memory-size 64M
m1=$(stat -c %Y.%y mnt/memory)
python3 - mnt/memory >py.out 2>&1 <<'PY' &
import mmap, os, sys, ctypes, time
libc = ctypes.CDLL(None, use_errno=True)
fd = os.open(sys.argv[1], os.O_RDWR)
size = os.fstat(fd).st_size
m = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
for off in range(0, size, 4096):        # guest RAM: every page touched and dirtied
    m[off] = 0x5a
addr = ctypes.c_void_p.from_buffer(m)
vec = (ctypes.c_ubyte * (size // 4096))()
def resident():
    libc.mincore(ctypes.c_void_p(ctypes.addressof(addr)), ctypes.c_size_t(size), vec)
    return sum(v & 1 for v in vec)
print("before", resident(), flush=True)
open("go", "w").close()
while not os.path.exists("done"):
    time.sleep(0.05)
print("after", resident(), flush=True)
m.flush()
print("content", sum(1 for off in range(0, size, 4096) if m[off] == 0x5a), flush=True)
del addr
m.close()
PY
pypid=$!
for _ in $(seq 200); do [ -e go ] && break; sleep 0.05; done
for _ in 1 2 3; do stat mnt/memory >/dev/null; cat mnt/memory >/dev/null; ls -l mnt >/dev/null; done
touch done; wait $pypid
before=$(awk '$1=="before"{print $2}' py.out); after=$(awk '$1=="after"{print $2}' py.out)
is "$before" 16384 "all pages of the mapping are resident"
is "$after" "$before" "stat, open, read and close elsewhere dropped none of them"
is "$(awk '$1=="content"{print $2}' py.out)" 16384 "mapped writes are visible"
check "unmount" umount_overlay mnt
check "remount" mount_overlay ovl mnt
# within a mount the kernel's writeback cache keeps its own mtime; what the daemon reports never moves
is "$(stat -c %Y.%y mnt/memory)" "$m1" "the daemon reports a stable mtime"
is "$(od -An -v -tx1 -w4096 mnt/memory | cut -c2-3 | sort | uniq -c | awk '{print $1, $2}')" "16384 5a" "the mapped writes reached the overlay"
check "unmount" umount_overlay mnt
done_testing
