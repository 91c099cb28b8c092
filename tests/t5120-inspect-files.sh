#!/usr/bin/env bash
# t5120 — handoff-inspect files: on ext4 images made with mkfs.ext4 -d from known files (on the
# whole disk, in an MBR partition with 1 KiB blocks under 4 KiB chunks, in a GPT partition with
# 64 KiB chunks), writing into the blocks debugfs names for chosen files makes `files` name
# exactly those paths; metadata (inode table, journal), directories and free space are named as
# such; and it works on a live mount written through MOUNT/disk with dd.
. "$HANDOFF_SRC/tests/lib.sh"
command -v mkfs.ext4 >/dev/null || skip_all "mkfs.ext4 not installed"
command -v debugfs >/dev/null || skip_all "debugfs not installed"
command -v python3 >/dev/null || skip_all "python3 not installed"
fixture="$HANDOFF_BUILD/tests/inspect_fixture"
[ -x "$fixture" ] || bail "inspect_fixture not built"

mkdir -p root/etc root/home/user "root/my docs" root/var/log
echo myhost >root/etc/hostname
seq 1 5000 >root/etc/numbers.txt
head -c 40000 /dev/urandom >root/home/user/data.bin
head -c 9000 /dev/urandom >"root/my docs/a b.txt"
seq 1 3000 >root/var/log/syslog
for i in $(seq 1 40); do echo "small $i" >root/var/log/small$i; done
ln root/etc/hostname root/hostlink

# blocks FS PATH: the filesystem blocks of PATH, one per line
blocks() { debugfs -R "blocks \"$2\"" "$1" 2>/dev/null | tr ' ' '\n' | grep -E '^[0-9]+$'; }
# paths of the file rows of `files` output (kind file), sorted
file_paths() { awk '$2 == "file" { sub(/^ *[^ ]+ +[^ ]+ +[^ ]+ +[^ ]+ +[^ ]+ +/, ""); print }' | sort; }

# ---- A: whole disk, 4 KiB blocks and chunks ---------------------------------------------------
mkfs.ext4 -q -F -b 4096 -d root -L inspect fsA.img 16M || bail "mkfs.ext4 failed"
b_num=$(blocks fsA.img /etc/numbers.txt | sed -n 2p)
b_data=$(blocks fsA.img /home/user/data.bin | sed -n 4p)
b_space=$(blocks fsA.img "/my docs/a b.txt" | sed -n 1p)
b_host=$(blocks fsA.img /etc/hostname | sed -n 1p)
b_jour=$(blocks fsA.img '<8>' | sed -n 5p)
b_free=$(debugfs -R 'ffb 1 3500' fsA.img 2>/dev/null | grep -oE '[0-9]+' | tail -n 1)
b_dir=$(blocks fsA.img /var/log | sed -n 1p)
# the inode table block holding /etc/numbers.txt's inode: "imap" says "located at block B, offset O"
imap=$(debugfs -R 'imap /etc/numbers.txt' fsA.img 2>/dev/null | grep -oE 'block [0-9]+, offset 0x[0-9a-f]+')
b_itab=$(echo "$imap" | awk '{print $2}' | tr -d ,)
ino_num=$(debugfs -R 'stat /etc/numbers.txt' fsA.img 2>/dev/null | grep -oE 'Inode: [0-9]+' | awk '{print $2}')
[ -n "$b_num" ] && [ -n "$b_data" ] && [ -n "$b_space" ] && [ -n "$b_host" ] && [ -n "$b_jour" ] &&
	[ -n "$b_free" ] && [ -n "$b_dir" ] && [ -n "$b_itab" ] || bail "debugfs gave no block numbers"

{
	echo "time 1700000000"
	echo "random disk $((b_num * 4096)) 4096 1"
	echo "random disk $((b_data * 4096 + 100)) 50 2"
	echo "random disk $((b_space * 4096)) 4096 3"
	echo "random disk $((b_host * 4096)) 7 4"
} | "$fixture" --disk fsA.img --memory-size 256K ovlA || bail "fixture failed"
handoff-inspect files ovlA >filesA.txt 2>errA.txt
is "$?" 0 "files on a whole-disk ext4 succeeds"
is "$(file_paths <filesA.txt)" "$(printf '%s\n' "/etc/hostname | /hostlink" "/etc/numbers.txt" "/home/user/data.bin" "/my docs/a b.txt" | sort)" \
	"files names exactly the written paths (hard link with both names, spaces kept)"
is "$(grep -c . errA.txt)" 0 "and says nothing on stderr"
check "the data.bin row names file block 3" grep -qE "^ +[0-9]+ +file +$b_data +3 +$b_data +/home/user/data.bin$" filesA.txt
handoff-inspect files --json ovlA >filesA.json
check "--json rows parse and carry inode and file blocks" python3 - "$ino_num" <<'PY'
import json, sys
rows = [json.loads(l) for l in open("filesA.json")]
num = [r for r in rows if r["path"] == "/etc/numbers.txt"]
assert len(num) == 1 and num[0]["inode"] == int(sys.argv[1]) and num[0]["file_blocks"] == [[1, 1]], num
assert num[0]["kind"] == "file" and num[0]["partition"] == 0
PY

# metadata, directory, free space
{
	echo "fill disk $((b_itab * 4096 + 4000)) 8 0"   # the last inode slot of that table block
	echo "random disk $((b_jour * 4096)) 4096 5"
	echo "random disk $((b_free * 4096)) 4096 6"
	echo "revert disk $((b_dir * 4096)) 4096"        # rewritten with its own bytes
} | "$fixture" --disk fsA.img --memory-size 256K ovlA2 || bail "fixture failed"
handoff-inspect files ovlA2 >filesA2.txt
check "an inode-table block is named with its group and inodes" \
	grep -qE "metadata +$b_itab .*<inode table, group 0, inodes [0-9]+-[0-9]+>" filesA2.txt
check "a journal block is named" grep -qE "^ +8 +journal +$b_jour .*<journal>$" filesA2.txt
check "a free block is named free space" grep -qE "free +$b_free .*<free space>$" filesA2.txt
check "a directory block names the directory" grep -qE "dir +$b_dir .* /var/log$" filesA2.txt
is "$(file_paths <filesA2.txt)" "" "no file is named when no file block changed"

# ---- B: MBR partition at 1 MiB, 1 KiB blocks, 4 KiB chunks ---------------------------------
mkfs.ext4 -q -F -b 1024 -d root fsB.img 8M || bail "mkfs.ext4 failed"
python3 - <<'PY'
import struct
fs = open("fsB.img", "rb").read()
off, size = 1 << 20, 12 << 20
disk = bytearray(size)
mbr = bytearray(512)
mbr[446:462] = struct.pack("<BBBBBBBBII", 0x80, 0, 0, 0, 0x83, 0, 0, 0, off // 512, len(fs) // 512)
mbr[510:512] = b"\x55\xaa"
disk[0:512] = mbr
disk[off:off + len(fs)] = fs
open("diskB.img", "wb").write(disk)
PY
b_syslog=$(blocks fsB.img /var/log/syslog | sed -n 3p)
b_small=$(blocks fsB.img /var/log/small7 | sed -n 1p)
{
	echo "time 1700000000"
	echo "text disk $((1048576 + b_syslog * 1024 + 10)) changed"
	echo "text disk $((1048576 + b_small * 1024)) other"
} | "$fixture" --disk diskB.img --memory-size 256K ovlB || bail "fixture failed"
handoff-inspect files ovlB >filesB.txt
check "an MBR partition is found at its offset" grep -q "in MBR partition 1 at offset 1048576, 1024-byte blocks" filesB.txt
is "$(file_paths <filesB.txt)" "$(printf '%s\n' /var/log/small7 /var/log/syslog)" \
	"1 KiB blocks under 4 KiB chunks: only the changed blocks' files are named"
check "the syslog row names file block 2" grep -qE "file +$b_syslog +2 +.*/var/log/syslog$" filesB.txt

# ---- C: GPT partition, 64 KiB chunks ---------------------------------------------------------
python3 - <<'PY'
import struct, zlib, uuid
fs = open("fsA.img", "rb").read()
size, off = 20 << 20, 1 << 20
sectors = size // 512
disk = bytearray(size)
mbr = bytearray(512)
mbr[446:462] = struct.pack("<BBBBBBBBII", 0, 0, 2, 0, 0xee, 0xff, 0xff, 0xff, 1, sectors - 1)
mbr[510:512] = b"\x55\xaa"
disk[0:512] = mbr
ent = bytearray(128 * 128)
ent[0:128] = (uuid.UUID("0fc63daf-8483-4772-8e79-3d69d8477de4").bytes_le + uuid.UUID(int=1).bytes_le +
              struct.pack("<QQQ", off // 512, (off + len(fs)) // 512 - 1, 0) + "root".encode("utf-16-le").ljust(72, b"\0"))
hdr = bytearray(struct.pack("<8sIIIIQQQQ16sQIII", b"EFI PART", 0x10000, 92, 0, 0, 1, sectors - 1, 34,
                            sectors - 34, uuid.UUID(int=2).bytes_le, 2, 128, 128, zlib.crc32(ent)))
hdr[16:20] = struct.pack("<I", zlib.crc32(hdr))
disk[512:512 + 92] = hdr
disk[1024:1024 + len(ent)] = ent
disk[off:off + len(fs)] = fs
open("diskC.img", "wb").write(disk)
PY
{
	echo "time 1700000000"
	echo "random disk $((1048576 + b_data * 4096 + 4000)) 10 7"
} | "$fixture" --disk diskC.img --memory-size 256K --chunk-size 64K ovlC || bail "fixture failed"
handoff-inspect files ovlC >filesC.txt
check "a GPT partition is found" grep -q "in GPT partition 1 at offset 1048576, 4096-byte blocks" filesC.txt
is "$(file_paths <filesC.txt)" "/home/user/data.bin" "64 KiB chunks: only the changed block's file is named"
check "blocks of the chunk equal to the base are counted, not named" grep -qE "\(15 more in modified chunks equal the base\)" filesC.txt
printf 'time 1700000000\ntext disk 600 gpt\n' | "$fixture" --disk diskC.img --memory-size 256K --chunk-size 64K ovlC2 ||
	bail "fixture failed"
check "a change in the partition table is named as such" bash -c \
	"handoff-inspect files ovlC2 | grep -qE 'outside +- +- +0 +<partition table>'"

# ---- D: a live mount written through MOUNT/disk ----------------------------------------------
if [ -c /dev/fuse ] && command -v fusermount3 >/dev/null && command -v handoff-mount >/dev/null; then
	mount_overlay ovlD mnt --disk fsA.img --memory-size 256K || bail "mount failed"
	dd if=/dev/urandom of=mnt/disk bs=4096 seek="$b_num" count=1 conv=notrunc,fsync 2>/dev/null
	dd if=/dev/urandom of=mnt/disk bs=4096 seek="$b_space" count=1 conv=notrunc,fsync 2>/dev/null
	is "$(handoff-inspect files ovlD | file_paths)" "$(printf '%s\n' "/etc/numbers.txt" "/my docs/a b.txt")" \
		"files on a live mount names the paths written with dd"
	dd if=/dev/urandom of=mnt/disk bs=4096 seek="$b_host" count=1 conv=notrunc,fsync 2>/dev/null
	check "the mount keeps serving writes after inspection" grep -q . <(handoff-mount --status ovlD)
	check "unmount" umount_overlay mnt
	is "$(handoff-inspect files ovlD | file_paths)" \
		"$(printf '%s\n' "/etc/hostname | /hostlink" "/etc/numbers.txt" "/my docs/a b.txt" | sort)" \
		"and after unmounting, the later write is there too"
else
	echo "# no FUSE here: the live-mount part is skipped"
fi
done_testing
