#!/usr/bin/env bash
# bench/helpers/mkimages.sh DIR [DISK_SIZE] [MEM_SIZE] — the benchmark datasets of bench/pipeline.sh, in DIR:
#   disk/  disk.base (an ext4 image of DISK_SIZE, default 256M, filled from /usr with mkfs.ext4 -d),
#          disk.new + disk.dirty (5 % of its 4 KiB blocks changed: tests/helpers/mkdataset.c)
#   mem/   disk.base (a link to the same image), mem.base (MEM_SIZE "RAM", default 512M) and
#          mem.new + mem.dirty (1.6 % of pages changed)
#   thru/  disk.base + disk.new with 50 % of blocks changed: enough dirty input to time the fast modes
# Reuses what exists. Needs mkfs.ext4 (e2fsprogs) and HANDOFF_BUILD (mkdataset).
set -eu
dir=$1 dsize=${2:-256M} msize=${3:-512M}
mk=${HANDOFF_BUILD:?}/tests/mkdataset
mkdir -p "$dir/disk" "$dir/mem" "$dir/thru"
if [ ! -s "$dir/disk/disk.base" ]; then
	stage=$(mktemp -d "$dir/stage.XXXX")
	# about 70 % of the image in files from /usr, hard-linked where possible (same file system)
	budget=$(( $(numfmt --from=iec "$dsize") * 7 / 10 ))
	find /usr/share /usr/lib /usr/bin -xdev -type f -size -4M -readable 2>/dev/null | sort |
	awk -v seed=7 'BEGIN{srand(seed)} {if (rand() < 0.25) print}' |
	while IFS= read -r f; do
		s=$(stat -c %s "$f")
		budget=$((budget - s - 4096))
		[ $budget -gt 0 ] || break
		printf '%s\0' "$f"
	done | (cd "$stage" && xargs -0 cp -al --parents -t . 2>/dev/null || true)
	mkfs.ext4 -q -F -b 4096 -E root_owner=0:0,nodiscard -d "$stage" "$dir/disk/disk.base" "$dsize"
	rm -rf "$stage"
fi
[ -s "$dir/disk/disk.dirty" ] || "$mk" disk "$dir/disk/disk.base" "$dir/disk/disk.new" "$dir/disk/disk.dirty" 0.05 11
ln -f "$dir/disk/disk.base" "$dir/mem/disk.base"
[ -s "$dir/mem/mem.dirty" ] || "$mk" mem "$dir/disk/disk.base" "$dir/mem/mem.base" "$dir/mem/mem.new" "$dir/mem/mem.dirty" "$msize" 0.016 12
ln -f "$dir/disk/disk.base" "$dir/thru/disk.base"
[ -s "$dir/thru/disk.dirty" ] || "$mk" disk "$dir/disk/disk.base" "$dir/thru/disk.new" "$dir/thru/disk.dirty" 0.5 13
