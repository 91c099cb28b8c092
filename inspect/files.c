/*
 * files.c — from "chunk 1757 of the disk changed" to "/etc/hosts changed": finds the ext2/3/4
 * filesystems on the CURRENT disk image (the whole disk, or MBR / GPT primary partitions), opens
 * each with e2fsprogs' libext2fs through an io_manager of our own that reads base + overlay at the
 * partition's offset (read-only, nothing materialised), and names the owner of every block in a
 * modified chunk: a file's data or mapping blocks (inode, paths), or filesystem metadata
 * (superblock, group descriptors, bitmaps, inode tables with the inodes they hold, the journal),
 * free space, or bytes outside any filesystem (partition tables, gaps).
 *
 * When a chunk holds several filesystem blocks, only the blocks whose bytes differ from the base
 * are attributed (the others were merely swept along by chunk-granular copy-on-write); when a
 * chunk is a block or smaller, every block of a modified chunk is listed.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <ext2fs/ext2_fs.h>
#include <ext2fs/ext2fs.h>
#include "common/common.h"
#include "inspect/inspect_int.h"

#define SECTOR 512
#define MAX_FS 16

enum owner_kind {
	OW_FILE, OW_DIR, OW_SYMLINK, OW_SPECIAL_FILE, OW_JOURNAL, OW_RESIZE, OW_RESERVED_INODE,
	OW_UNLINKED, OW_XATTR, OW_SUPER, OW_GDT, OW_RESERVED_GDT, OW_BBITMAP, OW_IBITMAP,
	OW_ITABLE, OW_BOOT, OW_FREE, OW_UNOWNED,
};

static const char *const kind_names[] = {
	[OW_FILE] = "file", [OW_DIR] = "dir", [OW_SYMLINK] = "symlink",
	[OW_SPECIAL_FILE] = "special", [OW_JOURNAL] = "journal", [OW_RESIZE] = "metadata",
	[OW_RESERVED_INODE] = "metadata", [OW_UNLINKED] = "unlinked", [OW_XATTR] = "xattr",
	[OW_SUPER] = "metadata", [OW_GDT] = "metadata", [OW_RESERVED_GDT] = "metadata",
	[OW_BBITMAP] = "metadata", [OW_IBITMAP] = "metadata", [OW_ITABLE] = "metadata",
	[OW_BOOT] = "metadata", [OW_FREE] = "free", [OW_UNOWNED] = "unowned",
};

struct owner {
	enum owner_kind kind;
	ext2_ino_t ino;          /* inode owners and xattr blocks */
	uint64_t key;            /* group or block for metadata owners */
	char *label;             /* path(s) or "<what>" */
	uint64_t first_blk;      /* for sorting */
};

struct dblk {
	blk64_t blk;
	int owner;               /* -1 until found */
	int64_t lblk;            /* file-relative block (>= 0), or < 0 for mapping blocks */
};

struct fsinfo {
	int part;                /* 0 = whole disk */
	const char *table;       /* "whole disk", "MBR", "GPT" */
	uint64_t off, len;       /* byte range of the partition */
};

struct fsmap {
	struct inspect *in;
	const struct fsinfo *fi;
	ext2_filsys fs;
	struct dblk *blk;
	size_t nblk, unassigned, skipped;
	struct owner *own;
	size_t nown, capown;
	ext2_ino_t *dirs;        /* directories, for finding the names of owned inodes */
	size_t ndirs, capdirs;
};

/* ---- the io_manager: ext2fs reads the current disk image at the partition offset --------- */

struct hio {
	struct inspect *in;
	uint64_t off, len;
};

/* Set right before ext2fs_open2() (single-threaded by the handle's contract). */
static struct hio *hio_pending;

static errcode_t hio_open(const char *name, int flags, io_channel *channel);

static errcode_t hio_close(io_channel ch)
{
	if (--ch->refcount > 0)
		return 0;
	free(ch->private_data);
	free(ch->name);
	free(ch);
	return 0;
}

static errcode_t hio_set_blksize(io_channel ch, int blksize)
{
	ch->block_size = blksize;
	return 0;
}

static errcode_t hio_read_blk64(io_channel ch, unsigned long long block, int count, void *data)
{
	struct hio *h = ch->private_data;
	uint64_t len = count < 0 ? (uint64_t)-count : (uint64_t)count * ch->block_size;
	uint64_t pos = block * ch->block_size;

	if (pos > h->len || len > h->len - pos) {
		/* past the partition: ext2fs treats a short read as an error too */
		memset(data, 0, len);
		return EXT2_ET_SHORT_READ;
	}
	return inspect_read(h->in, OVERLAY_DISK, data, len, h->off + pos) < 0 ? EIO : 0;
}

static errcode_t hio_read_blk(io_channel ch, unsigned long block, int count, void *data)
{
	return hio_read_blk64(ch, block, count, data);
}

static errcode_t hio_write_blk64(io_channel ch, unsigned long long block, int count,
				 const void *data)
{
	(void)ch; (void)block; (void)count; (void)data;
	return EXT2_ET_RO_FILSYS;
}

static errcode_t hio_write_blk(io_channel ch, unsigned long block, int count, const void *data)
{
	return hio_write_blk64(ch, block, count, data);
}

static errcode_t hio_write_byte(io_channel ch, unsigned long offset, int count, const void *data)
{
	(void)ch; (void)offset; (void)count; (void)data;
	return EXT2_ET_RO_FILSYS;
}

static errcode_t hio_flush(io_channel ch)
{
	(void)ch;
	return 0;
}

static errcode_t hio_set_option(io_channel ch, const char *option, const char *arg)
{
	(void)ch; (void)option; (void)arg;
	return EXT2_ET_INVALID_ARGUMENT;
}

static struct struct_io_manager hio_manager = {
	.magic = EXT2_ET_MAGIC_IO_MANAGER,
	.name = "handoff overlay I/O manager",
	.open = hio_open,
	.close = hio_close,
	.set_blksize = hio_set_blksize,
	.read_blk = hio_read_blk,
	.write_blk = hio_write_blk,
	.flush = hio_flush,
	.write_byte = hio_write_byte,
	.set_option = hio_set_option,
	.read_blk64 = hio_read_blk64,
	.write_blk64 = hio_write_blk64,
};

static errcode_t hio_open(const char *name, int flags, io_channel *channel)
{
	io_channel ch;
	struct hio *h;

	if (!hio_pending)
		return EXT2_ET_BAD_DEVICE_NAME;
	if (flags & IO_FLAG_RW)
		return EXT2_ET_RO_FILSYS;
	ch = calloc(1, sizeof(*ch));
	h = malloc(sizeof(*h));
	if (!ch || !h || !(ch->name = strdup(name))) {
		free(ch);
		free(h);
		return EXT2_ET_NO_MEMORY;
	}
	*h = *hio_pending;
	ch->magic = EXT2_ET_MAGIC_IO_CHANNEL;
	ch->manager = &hio_manager;
	ch->block_size = 1024;
	ch->refcount = 1;
	ch->private_data = h;
	*channel = ch;
	return 0;
}

/* ---- finding filesystems ------------------------------------------------------------------ */

static bool has_ext_magic(struct inspect *in, uint64_t off)
{
	uint8_t sb[2];
	return off + 1024 + 58 <= in->img[OVERLAY_DISK].size &&
	       inspect_read(in, OVERLAY_DISK, sb, 2, off + 1024 + 56) == 0 &&
	       ho_get_le16(sb) == EXT2_SUPER_MAGIC;
}

static void add_fs(struct inspect *in, struct fsinfo *fs, int *n, int part, const char *table,
		   uint64_t off, uint64_t len)
{
	uint64_t size = in->img[OVERLAY_DISK].size;
	if (*n == MAX_FS || off >= size || !has_ext_magic(in, off))
		return;
	fs[*n].part = part;
	fs[*n].table = table;
	fs[*n].off = off;
	fs[*n].len = HO_MIN(len, size - off);
	(*n)++;
}

/* Byte ranges of partition tables, to name chunks outside every filesystem. */
struct tables {
	uint64_t start[3], end[3];
	int n;
};

static void find_gpt(struct inspect *in, struct fsinfo *fs, int *n, struct tables *t)
{
	uint8_t hdr[SECTOR], *ents = NULL;
	uint64_t size = in->img[OVERLAY_DISK].size, lba, alt;
	uint32_t count, esz;

	if (inspect_read(in, OVERLAY_DISK, hdr, SECTOR, SECTOR) < 0 || memcmp(hdr, "EFI PART", 8))
		return;
	alt = ho_get_le64(hdr + 32);
	lba = ho_get_le64(hdr + 72);
	count = ho_get_le32(hdr + 80);
	esz = ho_get_le32(hdr + 84);
	if (esz < 128 || esz > 4096 || count > 4096 || lba * SECTOR >= size ||
	    (uint64_t)count * esz > size - lba * SECTOR)
		return;
	t->start[t->n] = SECTOR;
	t->end[t->n++] = lba * SECTOR + (uint64_t)count * esz;
	if (alt * SECTOR < size) {
		/* the backup table and header sit at the end of the disk */
		t->start[t->n] = alt * SECTOR >= (uint64_t)count * esz ? alt * SECTOR - (uint64_t)count * esz
								       : 0;
		t->end[t->n++] = alt * SECTOR + SECTOR;
	}
	ents = malloc((size_t)count * esz);
	if (!ents || inspect_read(in, OVERLAY_DISK, ents, (size_t)count * esz, lba * SECTOR) < 0) {
		free(ents);
		return;
	}
	for (uint32_t i = 0; i < count; i++) {
		const uint8_t *e = ents + (size_t)i * esz;
		uint64_t first = ho_get_le64(e + 32), last = ho_get_le64(e + 40);
		if (ho_is_zero(e, 16) || last < first || first > size / SECTOR)
			continue;
		add_fs(in, fs, n, (int)i + 1, "GPT", first * SECTOR, (last - first + 1) * SECTOR);
	}
	free(ents);
}

static int find_filesystems(struct inspect *in, struct fsinfo *fs, struct tables *t)
{
	uint8_t mbr[SECTOR];
	int n = 0;

	t->n = 0;
	if (has_ext_magic(in, 0)) {
		add_fs(in, fs, &n, 0, "whole disk", 0, in->img[OVERLAY_DISK].size);
		return n;
	}
	if (in->img[OVERLAY_DISK].size < SECTOR ||
	    inspect_read(in, OVERLAY_DISK, mbr, SECTOR, 0) < 0 || mbr[510] != 0x55 || mbr[511] != 0xaa)
		return 0;
	t->start[0] = 0;
	t->end[0] = SECTOR;
	t->n = 1;
	for (int i = 0; i < 4; i++) {
		const uint8_t *e = mbr + 446 + 16 * i;
		if (e[4] == 0xee) {
			find_gpt(in, fs, &n, t);
			return n;
		}
	}
	for (int i = 0; i < 4; i++) {
		const uint8_t *e = mbr + 446 + 16 * i;
		uint32_t start = ho_get_le32(e + 8), len = ho_get_le32(e + 12);
		if (e[4] && start && len)
			add_fs(in, fs, &n, i + 1, "MBR", (uint64_t)start * SECTOR, (uint64_t)len * SECTOR);
	}
	return n;
}

/* ---- owners --------------------------------------------------------------------------------- */

/* The owner id of (kind, ino, key), added when new. Owners are few compared with blocks, and
 * consecutive blocks mostly share one, so a check of the last few is enough before a scan. */
static int owner_id(struct fsmap *m, enum owner_kind kind, ext2_ino_t ino, uint64_t key)
{
	for (size_t i = m->nown; i-- > 0;)
		if (m->own[i].kind == kind && m->own[i].ino == ino && m->own[i].key == key)
			return (int)i;
	if (m->nown == m->capown) {
		size_t cap = m->capown ? m->capown * 2 : 64;
		struct owner *n = realloc(m->own, cap * sizeof(*n));
		if (!n)
			return HO_ENOMEM;
		m->own = n;
		m->capown = cap;
	}
	memset(&m->own[m->nown], 0, sizeof(m->own[0]));
	m->own[m->nown].kind = kind;
	m->own[m->nown].ino = ino;
	m->own[m->nown].key = key;
	m->own[m->nown].first_blk = UINT64_MAX;
	return (int)m->nown++;
}

/* Give blocks [first, first+count) that are dirty and unowned to (kind, ino, key). */
static int claim(struct fsmap *m, blk64_t first, uint64_t count, enum owner_kind kind,
		 ext2_ino_t ino, uint64_t key, int64_t lblk)
{
	struct dblk k = { .blk = first }, *d;
	size_t lo = 0, hi = m->nblk;

	if (!count || !m->unassigned)
		return 0;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (m->blk[mid].blk < k.blk)
			lo = mid + 1;
		else
			hi = mid;
	}
	for (d = m->blk + lo; d < m->blk + m->nblk && d->blk < first + count; d++) {
		int id;
		if (d->owner >= 0)
			continue;
		if ((id = owner_id(m, kind, ino, key)) < 0)
			return id;
		d->owner = id;
		d->lblk = lblk < 0 ? lblk : lblk + (int64_t)(d->blk - first);
		m->unassigned--;
	}
	return 0;
}

/* Superblocks, descriptors, bitmaps and inode tables of every group. */
static int claim_metadata(struct fsmap *m)
{
	ext2_filsys fs = m->fs;
	uint32_t ipb = fs->blocksize / EXT2_INODE_SIZE(fs->super);
	int err;

	if (fs->super->s_first_data_block == 1 && (err = claim(m, 0, 1, OW_BOOT, 0, 0, -1)) < 0)
		return err;
	for (dgrp_t g = 0; g < fs->group_desc_count && m->unassigned; g++) {
		blk64_t super = 0, old_desc = 0, new_desc = 0, itable;
		blk_t used = 0;
		ext2fs_super_and_bgd_loc2(fs, g, &super, &old_desc, &new_desc, &used);
		if (g == 0)
			super = fs->super->s_first_data_block;
		if ((super || g == 0) && (err = claim(m, super, 1, OW_SUPER, 0, g, -1)) < 0)
			return err;
		if (old_desc) {
			if ((err = claim(m, old_desc, fs->desc_blocks, OW_GDT, 0, g, -1)) < 0 ||
			    (err = claim(m, old_desc + fs->desc_blocks, fs->super->s_reserved_gdt_blocks,
					 OW_RESERVED_GDT, 0, g, -1)) < 0)
				return err;
		}
		if (new_desc && (err = claim(m, new_desc, 1, OW_GDT, 0, g, -1)) < 0)
			return err;
		if ((err = claim(m, ext2fs_block_bitmap_loc(fs, g), 1, OW_BBITMAP, 0, g, -1)) < 0 ||
		    (err = claim(m, ext2fs_inode_bitmap_loc(fs, g), 1, OW_IBITMAP, 0, g, -1)) < 0)
			return err;
		itable = ext2fs_inode_table_loc(fs, g);
		if (!itable)
			continue;
		/* one owner per inode-table block, so the inodes it holds can be named */
		for (uint32_t b = 0; b < fs->inode_blocks_per_group && m->unassigned; b++)
			if ((err = claim(m, itable + b, 1, OW_ITABLE, (ext2_ino_t)g,
					 (uint64_t)g * EXT2_INODES_PER_GROUP(fs->super) + (uint64_t)b * ipb + 1,
					 -1)) < 0)
				return err;
	}
	return 0;
}

struct iter {
	struct fsmap *m;
	enum owner_kind kind;
	ext2_ino_t ino;
	int err;
};

static int iter_block(ext2_filsys fs, blk64_t *blocknr, e2_blkcnt_t blockcnt, blk64_t ref_blk,
		      int ref_offset, void *priv)
{
	struct iter *it = priv;
	(void)fs; (void)ref_blk; (void)ref_offset;
	it->err = claim(it->m, *blocknr, 1, it->kind, it->ino, 0, blockcnt < 0 ? -1 : blockcnt);
	return it->err < 0 || !it->m->unassigned ? BLOCK_ABORT : 0;
}

static enum owner_kind inode_kind(ext2_filsys fs, ext2_ino_t ino, const struct ext2_inode *inode)
{
	struct ext2_super_block *sb = fs->super;

	if (ino == sb->s_journal_inum)
		return OW_JOURNAL;
	if (ino == EXT2_RESIZE_INO)
		return OW_RESIZE;
	if (ino < EXT2_FIRST_INO(sb) && ino != EXT2_ROOT_INO)
		return OW_RESERVED_INODE;
	if (inode->i_links_count == 0)
		return OW_UNLINKED;
	if (LINUX_S_ISDIR(inode->i_mode))
		return OW_DIR;
	if (LINUX_S_ISREG(inode->i_mode))
		return OW_FILE;
	if (LINUX_S_ISLNK(inode->i_mode))
		return OW_SYMLINK;
	return OW_SPECIAL_FILE;
}

static int add_dir(struct fsmap *m, ext2_ino_t ino)
{
	if (m->ndirs == m->capdirs) {
		size_t cap = m->capdirs ? m->capdirs * 2 : 256;
		ext2_ino_t *n = realloc(m->dirs, cap * sizeof(*n));
		if (!n)
			return HO_ENOMEM;
		m->dirs = n;
		m->capdirs = cap;
	}
	m->dirs[m->ndirs++] = ino;
	return 0;
}

/* Walk every inode's blocks (data, mapping, xattr) and note the directories. */
static int claim_inodes(struct fsmap *m)
{
	ext2_filsys fs = m->fs;
	ext2_inode_scan scan;
	struct ext2_inode inode;
	ext2_ino_t ino;
	errcode_t e;
	int err = 0;

	if ((e = ext2fs_open_inode_scan(fs, 0, &scan))) {
		ho_err("cannot scan the inodes of the filesystem at %llu of 'disk': %s",
		       (unsigned long long)m->fi->off, error_message(e));
		return HO_ECORRUPT;
	}
	ext2fs_inode_scan_flags(scan, EXT2_SF_SKIP_MISSING_ITABLE, 0);
	while (!(e = ext2fs_get_next_inode(scan, &ino, &inode)) && ino) {
		struct iter it = { m, OW_FILE, ino, 0 };
		blk64_t acl;
		if (ino == EXT2_BAD_INO || (inode.i_links_count == 0 && inode.i_dtime) ||
		    (!inode.i_mode && ino >= EXT2_FIRST_INO(fs->super)))
			continue;
		if (LINUX_S_ISDIR(inode.i_mode) && inode.i_links_count && (err = add_dir(m, ino)) < 0)
			break;
		if (!m->unassigned)
			continue;
		it.kind = inode_kind(fs, ino, &inode);
		if ((acl = ext2fs_file_acl_block(fs, &inode)) &&
		    (err = claim(m, acl, 1, OW_XATTR, ino, 0, -1)) < 0)
			break;
		if (!ext2fs_inode_has_valid_blocks2(fs, &inode))
			continue;
		e = ext2fs_block_iterate3(fs, ino, BLOCK_FLAG_READ_ONLY, NULL, iter_block, &it);
		if (it.err < 0) {
			err = it.err;
			break;
		}
		if (e)
			ho_warn("cannot map the blocks of inode %u in the filesystem at %llu of 'disk': %s",
				ino, (unsigned long long)m->fi->off, error_message(e));
	}
	if (e && e != EXT2_ET_BAD_BLOCK_IN_INODE_TABLE)
		ho_warn("inode scan of the filesystem at %llu of 'disk' stopped: %s",
			(unsigned long long)m->fi->off, error_message(e));
	ext2fs_close_inode_scan(scan);
	return err;
}

/* ---- names ---------------------------------------------------------------------------------- */

static int cmp_ino_owner(const void *a, const void *b)
{
	const struct owner *const *x = a, *const *y = b;
	return (*x)->ino < (*y)->ino ? -1 : (*x)->ino > (*y)->ino;
}

struct names {
	struct fsmap *m;
	struct owner **byino;    /* inode owners sorted by inode */
	size_t n;
	int err;
};

static int append_label(struct owner *o, const char *dirpath, const char *name, int len)
{
	size_t old = o->label ? strlen(o->label) : 0;
	size_t add = strlen(dirpath) + (size_t)len + 8;
	char *n;

	if (old > 4096)
		return 0;    /* enough hard links named */
	n = realloc(o->label, old + add);
	if (!n)
		return HO_ENOMEM;
	snprintf(n + old, add, "%s%s%s%.*s", old ? " | " : "", dirpath,
		 strcmp(dirpath, "/") ? "/" : "", len, name);
	o->label = n;
	return 0;
}

struct dir_ctx {
	struct names *nm;
	char *path;
};

static int dir_entry(ext2_ino_t dir, int entry, struct ext2_dir_entry *de, int offset,
		     int blocksize, char *buf, void *priv)
{
	struct dir_ctx *dc = priv;
	struct names *nm = dc->nm;
	struct owner key = { .ino = de->inode }, *kp = &key, **hit;
	int len = ext2fs_dirent_name_len(de);
	(void)dir; (void)offset; (void)blocksize; (void)buf;

	if (entry == DIRENT_DOT_FILE || entry == DIRENT_DOT_DOT_FILE || !de->inode)
		return 0;
	if (len == 1 && de->name[0] == '.')
		return 0;
	if (len == 2 && de->name[0] == '.' && de->name[1] == '.')
		return 0;
	hit = bsearch(&kp, nm->byino, nm->n, sizeof(*nm->byino), cmp_ino_owner);
	if (!hit || (*hit)->kind == OW_DIR)
		return 0;
	/* several owners (file data and its xattr block) may share the inode */
	while (hit > nm->byino && hit[-1]->ino == de->inode)
		hit--;
	for (; hit < nm->byino + nm->n && (*hit)->ino == de->inode; hit++) {
		if ((*hit)->kind == OW_DIR)
			continue;
		if ((nm->err = append_label(*hit, dc->path, de->name, len)) < 0)
			return DIRENT_ABORT;
	}
	return 0;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Hard links are found in directory order; list their names sorted, so output is stable. */
static int sort_names(struct owner *o)
{
	size_t n = 1, len = strlen(o->label);
	char **names, *out, *p;

	for (p = o->label; (p = strstr(p, " | ")); p += 3)
		n++;
	if (n == 1)
		return 0;
	names = malloc(n * sizeof(*names));
	out = malloc(len + 1);
	if (!names || !out) {
		free(names);
		free(out);
		return HO_ENOMEM;
	}
	n = 0;
	for (p = o->label; p;) {
		char *sep = strstr(p, " | ");
		names[n++] = p;
		if (sep)
			*sep = 0;
		p = sep ? sep + 3 : NULL;
	}
	qsort(names, n, sizeof(*names), cmp_str);
	out[0] = 0;
	for (size_t i = 0; i < n; i++) {
		if (i)
			strcat(out, " | ");
		strcat(out, names[i]);
	}
	free(names);
	free(o->label);
	o->label = out;
	return 0;
}

static char *dir_path(ext2_filsys fs, ext2_ino_t dir)
{
	char *name = NULL, *copy;
	if (ext2fs_get_pathname(fs, dir, 0, &name) || !name)
		return strdup("?");
	copy = strdup(name);
	ext2fs_free_mem(&name);
	return copy;
}

static int name_owners(struct fsmap *m)
{
	struct names nm = { m, NULL, 0, 0 };
	bool need_dirs = false;
	char buf[128];
	int err = 0;

	nm.byino = malloc((m->nown ? m->nown : 1) * sizeof(*nm.byino));
	if (!nm.byino)
		return HO_ENOMEM;
	for (size_t i = 0; i < m->nown; i++) {
		struct owner *o = &m->own[i];
		switch (o->kind) {
		case OW_DIR:
			o->label = dir_path(m->fs, o->ino);
			break;
		case OW_FILE: case OW_SYMLINK: case OW_SPECIAL_FILE: case OW_XATTR:
			nm.byino[nm.n++] = o;
			need_dirs = true;
			continue;
		case OW_JOURNAL: snprintf(buf, sizeof(buf), "<journal>"); break;
		case OW_RESIZE: snprintf(buf, sizeof(buf), "<reserved gdt blocks (resize inode)>"); break;
		case OW_RESERVED_INODE:
			if (o->ino == m->fs->super->s_orphan_file_inum)
				snprintf(buf, sizeof(buf), "<orphan file>");
			else if (o->ino == m->fs->super->s_usr_quota_inum ||
				 o->ino == m->fs->super->s_grp_quota_inum ||
				 o->ino == m->fs->super->s_prj_quota_inum)
				snprintf(buf, sizeof(buf), "<quota file>");
			else
				snprintf(buf, sizeof(buf), "<reserved inode %u>", o->ino);
			break;
		case OW_UNLINKED: snprintf(buf, sizeof(buf), "<unlinked inode %u>", o->ino); break;
		case OW_SUPER: snprintf(buf, sizeof(buf), "<superblock, group %llu>",
					(unsigned long long)o->key); break;
		case OW_GDT: snprintf(buf, sizeof(buf), "<group descriptors, group %llu>",
				      (unsigned long long)o->key); break;
		case OW_RESERVED_GDT: snprintf(buf, sizeof(buf), "<reserved gdt blocks, group %llu>",
					       (unsigned long long)o->key); break;
		case OW_BBITMAP: snprintf(buf, sizeof(buf), "<block bitmap, group %llu>",
					  (unsigned long long)o->key); break;
		case OW_IBITMAP: snprintf(buf, sizeof(buf), "<inode bitmap, group %llu>",
					  (unsigned long long)o->key); break;
		case OW_ITABLE: {
			uint32_t ipb = m->fs->blocksize / EXT2_INODE_SIZE(m->fs->super);
			snprintf(buf, sizeof(buf), "<inode table, group %u, inodes %llu-%llu>", o->ino,
				 (unsigned long long)o->key, (unsigned long long)(o->key + ipb - 1));
			break;
		}
		case OW_BOOT: snprintf(buf, sizeof(buf), "<boot block>"); break;
		case OW_FREE: snprintf(buf, sizeof(buf), "<free space>"); break;
		case OW_UNOWNED: snprintf(buf, sizeof(buf), "<allocated, no owner found>"); break;
		}
		if (!o->label && !(o->label = strdup(buf))) {
			err = HO_ENOMEM;
			goto out;
		}
	}
	if (need_dirs) {
		qsort(nm.byino, nm.n, sizeof(*nm.byino), cmp_ino_owner);
		for (size_t i = 0; i < m->ndirs && !nm.err; i++) {
			struct dir_ctx dc = { &nm, dir_path(m->fs, m->dirs[i]) };
			if (!dc.path) {
				err = HO_ENOMEM;
				goto out;
			}
			ext2fs_dir_iterate2(m->fs, m->dirs[i], 0, NULL, dir_entry, &dc);
			free(dc.path);
		}
		if ((err = nm.err) < 0)
			goto out;
		for (size_t i = 0; i < nm.n; i++) {
			struct owner *o = nm.byino[i];
			if (o->label && (err = sort_names(o)) < 0)
				goto out;
			if (!o->label) {
				snprintf(buf, sizeof(buf), "<inode %u, no name found>", o->ino);
				if (!(o->label = strdup(buf))) {
					err = HO_ENOMEM;
					goto out;
				}
			}
			if (o->kind == OW_XATTR) {
				char *n = malloc(strlen(o->label) + 16);
				if (!n) {
					err = HO_ENOMEM;
					goto out;
				}
				sprintf(n, "%s (xattrs)", o->label);
				free(o->label);
				o->label = n;
			}
		}
	}
out:
	free(nm.byino);
	return err;
}

/* ---- output --------------------------------------------------------------------------------- */

/* "a-b,c,d-e" of the values; vals sorted ascending, duplicates allowed. */
static void ranges(FILE *out, const uint64_t *v, size_t n, bool json)
{
	bool first = true;
	if (json)
		fputc('[', out);
	for (size_t i = 0; i < n;) {
		size_t j = i;
		while (j + 1 < n && (v[j + 1] == v[j] || v[j + 1] == v[j] + 1))
			j++;
		if (json)
			fprintf(out, "%s[%llu,%llu]", first ? "" : ",", (unsigned long long)v[i],
				(unsigned long long)v[j]);
		else if (v[i] == v[j])
			fprintf(out, "%s%llu", first ? "" : ",", (unsigned long long)v[i]);
		else
			fprintf(out, "%s%llu-%llu", first ? "" : ",", (unsigned long long)v[i],
				(unsigned long long)v[j]);
		first = false;
		i = j + 1;
	}
	if (json)
		fputc(']', out);
	else if (first)
		fputc('-', out);
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

#define COL_MAX 40

/* The ranges of v as text for the table, cut at COL_MAX characters. */
static char *ranges_str(const uint64_t *v, size_t n, size_t nmap)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);

	if (!f)
		return NULL;
	if (n || !nmap)
		ranges(f, v, n, false);
	if (nmap)
		fprintf(f, "%s%zu map", n ? "+" : "", nmap);
	if (fclose(f) != 0)
		return NULL;
	if (len > COL_MAX) {
		size_t cut = COL_MAX - 3;
		while (cut && buf[cut - 1] != ',')
			cut--;
		if (!cut)
			cut = COL_MAX - 3;
		strcpy(buf + cut, "...");
	}
	return buf;
}

struct row {
	struct owner *o;
	char *blocks, *file, *chunks;
};

/* Rows in disk order: by the first block they own. */
static int cmp_rows(const void *a, const void *b)
{
	const struct owner *x = ((const struct row *)a)->o, *y = ((const struct row *)b)->o;
	if (x->first_blk != y->first_blk)
		return x->first_blk < y->first_blk ? -1 : 1;
	return x->kind < y->kind ? -1 : x->kind > y->kind;
}

static int print_fs(struct fsmap *m, enum inspect_format fmt, FILE *out)
{
	uint64_t *blks = malloc((m->nblk ? m->nblk : 1) * sizeof(uint64_t));
	uint64_t *chunks = malloc((m->nblk ? m->nblk : 1) * sizeof(uint64_t));
	uint64_t *lblks = malloc((m->nblk ? m->nblk : 1) * sizeof(uint64_t));
	struct row *rows = calloc(m->nown ? m->nown : 1, sizeof(*rows));
	uint32_t cs = m->in->chunk_size, bs = m->fs->blocksize;
	int w_b = 6, w_f = 11, w_c = 6, err = HO_ENOMEM;

	if (!blks || !chunks || !lblks || !rows)
		goto out;
	for (size_t i = 0; i < m->nblk; i++)
		if (m->blk[i].owner >= 0)
			m->own[m->blk[i].owner].first_blk = HO_MIN(m->own[m->blk[i].owner].first_blk,
								   m->blk[i].blk);
	for (size_t i = 0; i < m->nown; i++)
		rows[i].o = &m->own[i];
	qsort(rows, m->nown, sizeof(*rows), cmp_rows);
	for (size_t k = 0; k < m->nown; k++) {
		struct owner *o = rows[k].o;
		bool inode = o->kind <= OW_XATTR;
		int id = (int)(o - m->own);
		size_t nb = 0, nl = 0, nmap = 0;
		for (size_t i = 0; i < m->nblk; i++) {
			if (m->blk[i].owner != id)
				continue;
			blks[nb] = m->blk[i].blk;
			chunks[nb++] = (m->fi->off + m->blk[i].blk * bs) / cs;
			if (m->blk[i].lblk >= 0)
				lblks[nl++] = (uint64_t)m->blk[i].lblk;
			else if (inode && o->kind != OW_XATTR)
				nmap++;
		}
		qsort(lblks, nl, sizeof(*lblks), cmp_u64);
		if (fmt == INSPECT_JSON) {
			fprintf(out, "{\"partition\":%d,\"fs_offset\":%llu,\"kind\":\"%s\",\"inode\":",
				m->fi->part, (unsigned long long)m->fi->off, kind_names[o->kind]);
			if (inode)
				fprintf(out, "%u", o->ino);
			else
				fputs("null", out);
			fputs(",\"path\":", out);
			inspect_json_str(out, o->label);
			fputs(",\"blocks\":", out);
			ranges(out, blks, nb, true);
			fputs(",\"file_blocks\":", out);
			ranges(out, lblks, nl, true);
			fprintf(out, ",\"mapping_blocks\":%zu,\"chunks\":", nmap);
			ranges(out, chunks, nb, true);
			fputs("}\n", out);
			continue;
		}
		rows[k].blocks = ranges_str(blks, nb, 0);
		rows[k].file = inode && o->kind != OW_XATTR ? ranges_str(lblks, nl, nmap) : strdup("-");
		rows[k].chunks = ranges_str(chunks, nb, 0);
		if (!rows[k].blocks || !rows[k].file || !rows[k].chunks)
			goto out;
		w_b = HO_MAX(w_b, (int)strlen(rows[k].blocks));
		w_f = HO_MAX(w_f, (int)strlen(rows[k].file));
		w_c = HO_MAX(w_c, (int)strlen(rows[k].chunks));
	}
	if (fmt == INSPECT_TABLE) {
		fprintf(out, "  %-7s  %-8s  %-*s  %-*s  %-*s  %s\n", "INODE", "KIND", w_b, "BLOCKS", w_f,
			"FILE BLOCKS", w_c, "CHUNKS", "PATH");
		for (size_t k = 0; k < m->nown; k++) {
			struct owner *o = rows[k].o;
			char ino[16] = "-";
			if (o->kind <= OW_XATTR)
				snprintf(ino, sizeof(ino), "%u", o->ino);
			fprintf(out, "  %-7s  %-8s  %-*s  %-*s  %-*s  %s\n", ino, kind_names[o->kind], w_b,
				rows[k].blocks, w_f, rows[k].file, w_c, rows[k].chunks, o->label);
		}
	}
	err = 0;
out:
	for (size_t k = 0; rows && k < m->nown; k++) {
		free(rows[k].blocks);
		free(rows[k].file);
		free(rows[k].chunks);
	}
	free(blks);
	free(chunks);
	free(lblks);
	free(rows);
	return err;
}

/* ---- one filesystem ------------------------------------------------------------------------- */

static int map_fs(struct inspect *in, const struct fsinfo *fi, enum inspect_format fmt, FILE *out,
		  uint64_t *attributed)
{
	struct hio h = { in, fi->off, fi->len };
	struct fsmap m = { .in = in, .fi = fi };
	uint32_t cs = in->chunk_size, bs;
	const struct inspect_image *im = &in->img[OVERLAY_DISK];
	uint8_t *cur = NULL, *base = NULL;
	size_t cap = 0;
	errcode_t e;
	int err = 0;

	hio_pending = &h;
	e = ext2fs_open2("handoff-disk", NULL,
			 EXT2_FLAG_64BITS | EXT2_FLAG_SKIP_MMP | EXT2_FLAG_IGNORE_CSUM_ERRORS, 0, 0,
			 &hio_manager, &m.fs);
	hio_pending = NULL;
	if (e) {
		ho_err("cannot open the filesystem at %llu of 'disk': %s", (unsigned long long)fi->off,
		       error_message(e));
		return HO_ECORRUPT;
	}
	bs = m.fs->blocksize;
	h.len = HO_MIN(fi->len, ext2fs_blocks_count(m.fs->super) * bs);
	cur = malloc(HO_MAX(cs, bs));
	base = malloc(HO_MAX(cs, bs));
	if (!cur || !base) {
		err = HO_ENOMEM;
		goto out;
	}

	/* the dirty blocks: blocks of modified chunks inside the filesystem (only those that differ
	 * from the base when a chunk spans several blocks) */
	for (size_t k = 0; k < im->count; k++) {
		const struct inspect_chunk *c = &im->chunks[k];
		uint64_t s = c->idx * cs, e2 = s + c->len;
		if (e2 <= fi->off || s >= fi->off + h.len)
			continue;
		s = HO_MAX(s, fi->off);
		e2 = HO_MIN(e2, fi->off + h.len);
		for (uint64_t b = (s - fi->off) / bs; b * bs + fi->off < e2; b++) {
			uint64_t bo = fi->off + b * bs;
			if (cs > bs || (cs == bs && fi->off % cs)) {
				/* compare the block's bytes inside this chunk with the base */
				uint64_t lo = HO_MAX(bo, s), hi = HO_MIN(bo + bs, e2);
				if ((err = inspect_read(in, OVERLAY_DISK, cur, hi - lo, lo)) < 0 ||
				    (err = overlay_read_base(in->ov, OVERLAY_DISK, base, hi - lo, lo)) < 0)
					goto out;
				if (memcmp(cur, base, hi - lo) == 0) {
					m.skipped++;
					continue;
				}
			}
			if (m.nblk && m.blk[m.nblk - 1].blk == b)
				continue;
			if (m.nblk == cap) {
				struct dblk *n;
				cap = cap ? cap * 2 : 256;
				if (!(n = realloc(m.blk, cap * sizeof(*n)))) {
					err = HO_ENOMEM;
					goto out;
				}
				m.blk = n;
			}
			m.blk[m.nblk].blk = b;
			m.blk[m.nblk].owner = -1;
			m.blk[m.nblk].lblk = -1;
			m.nblk++;
		}
	}
	m.unassigned = m.nblk;

	if ((err = claim_metadata(&m)) < 0 || (err = claim_inodes(&m)) < 0)
		goto out;
	if (m.unassigned) {
		bool bitmap = ext2fs_read_block_bitmap(m.fs) == 0;
		for (size_t i = 0; i < m.nblk; i++) {
			int id;
			if (m.blk[i].owner >= 0)
				continue;
			id = owner_id(&m, bitmap && !ext2fs_test_block_bitmap2(m.fs->block_map, m.blk[i].blk)
					  ? OW_FREE : OW_UNOWNED, 0, 0);
			if (id < 0) {
				err = id;
				goto out;
			}
			m.blk[i].owner = id;
		}
	}
	if ((err = name_owners(&m)) < 0)
		goto out;

	if (fmt == INSPECT_TABLE) {
		fprintf(out, "disk: ext%d filesystem ", ext2fs_has_feature_extents(m.fs->super) ? 4 :
			ext2fs_has_feature_journal(m.fs->super) ? 3 : 2);
		if (fi->part)
			fprintf(out, "in %s partition %d ", fi->table, fi->part);
		else
			fprintf(out, "on the whole disk ");
		fprintf(out, "at offset %llu, %u-byte blocks, %llu blocks; %zu modified blocks",
			(unsigned long long)fi->off, bs,
			(unsigned long long)ext2fs_blocks_count(m.fs->super), m.nblk);
		if (m.skipped)
			fprintf(out, " (%zu more in modified chunks equal the base)", m.skipped);
		fputc('\n', out);
	}
	err = print_fs(&m, fmt, out);
	*attributed += m.nblk;
out:
	for (size_t i = 0; i < m.nown; i++)
		free(m.own[i].label);
	free(m.own);
	free(m.blk);
	free(m.dirs);
	free(cur);
	free(base);
	ext2fs_close_free(&m.fs);
	return err;
}

int inspect_files(struct inspect *in, enum inspect_format fmt, FILE *out)
{
	static bool tables_loaded;
	struct fsinfo fs[MAX_FS];
	struct tables t;
	const struct inspect_image *im = &in->img[OVERLAY_DISK];
	uint64_t attributed = 0, table_chunks = 0, other_chunks = 0;
	uint64_t *tc = NULL, *oc = NULL;
	int nfs, err = 0;

	if (!tables_loaded) {
		initialize_ext2_error_table();
		tables_loaded = true;
	}
	nfs = find_filesystems(in, fs, &t);
	if (!nfs) {
		ho_err("cannot map files of '%s': no ext2/3/4 filesystem on 'disk' (whole disk or MBR/GPT "
		       "primary partitions)", in->dir);
		return HO_ENOENT;
	}
	for (int i = 0; i < nfs && !err; i++)
		err = map_fs(in, &fs[i], fmt, out, &attributed);
	if (err)
		return err;

	/* modified chunks (or parts of them) outside every filesystem */
	tc = malloc((im->count ? im->count : 1) * sizeof(*tc));
	oc = malloc((im->count ? im->count : 1) * sizeof(*oc));
	if (!tc || !oc) {
		free(tc);
		free(oc);
		return HO_ENOMEM;
	}
	for (size_t k = 0; k < im->count; k++) {
		const struct inspect_chunk *c = &im->chunks[k];
		uint64_t s = c->idx * in->chunk_size, e = s + c->len, covered = 0;
		bool table = false;
		for (int i = 0; i < nfs; i++)
			if (s < fs[i].off + fs[i].len && e > fs[i].off)
				covered += HO_MIN(e, fs[i].off + fs[i].len) - HO_MAX(s, fs[i].off);
		for (int i = 0; i < t.n; i++)
			if (s < t.end[i] && e > t.start[i])
				table = true;
		if (table)
			tc[table_chunks++] = c->idx;
		else if (covered < c->len)
			oc[other_chunks++] = c->idx;
	}
	for (int pass = 0; pass < 2; pass++) {
		uint64_t *v = pass ? oc : tc, n = pass ? other_chunks : table_chunks;
		const char *label = pass ? "<outside any filesystem>" : "<partition table>";
		if (!n)
			continue;
		if (fmt == INSPECT_JSON) {
			fputs("{\"partition\":null,\"fs_offset\":null,\"kind\":\"outside\",\"inode\":null,"
			      "\"path\":", out);
			inspect_json_str(out, label);
			fputs(",\"blocks\":[],\"file_blocks\":[],\"mapping_blocks\":0,\"chunks\":", out);
			ranges(out, v, n, true);
			fputs("}\n", out);
		} else {
			char *r = ranges_str(v, n, 0);
			fprintf(out, "disk: outside the filesystems\n  %-7s  %-8s  %-6s  %-11s  %-6s  %s\n"
				"  %-7s  %-8s  %-6s  %-11s  %-6s  %s\n", "INODE", "KIND", "BLOCKS",
				"FILE BLOCKS", "CHUNKS", "PATH", "-", "outside", "-", "-", r ? r : "?", label);
			free(r);
		}
	}
	free(tc);
	free(oc);
	return ferror(out) ? HO_EIO : 0;
}
