/*
 * fs.c — the libfuse3 low-level filesystem of fs.h. Three inodes: the root (1), disk (2) and
 * memory (3). Writes are split per chunk; the first write to a chunk copies the rest of it up
 * from the base under a striped lock, later writes go straight to the overlay. Marks go to the
 * tracker only after the data is in the overlay, and commits make the data durable first.
 * For a post-copy handoff, requests that touch a chunk that has not arrived yet wait for it
 * (fs.h, "post-copy").
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <unistd.h>
#include <fuse_lowlevel.h>
#include "common/common.h"
#include "common/ctl.h"
#include "common/daemon.h"
#include "overlay/overlay.h"
#include "tracker/tracker.h"
#include "fs/fs.h"
#include "fs/digest.h"

#define INO_ROOT 1
#define INO_IMG(img) ((fuse_ino_t)(2 + (img)))
#define NSTRIPES 256
#define ATTR_TIMEOUT 86400.0

extern char **environ;

struct fs {
	struct overlay *ov;
	struct tracker *tr;
	struct fs_options opt;
	char *mountpoint;
	struct fuse_session *se;
	uint32_t cs;                         /* chunk size */
	struct timespec mtime;               /* stable mtime reported for every file */
	pthread_mutex_t stripe[NSTRIPES];    /* guards copy-up of an unmodified chunk */
	_Atomic uint64_t *nt_bits[OVERLAY_NIMAGES];   /* --no-tracking: modified bitmap */

	pthread_t flusher, ctl_thread, sig_thread;
	pthread_mutex_t flush_lock;          /* guards stop, flush_cond */
	pthread_cond_t flush_cond;
	bool stop;
	int ctl_fd;                          /* listening control socket */
	int wake[2];                         /* wakes the control thread at shutdown */
	_Atomic int first_err;               /* first durability error (sticky) */

	/* post-copy (fs.h): chunks that have not arrived yet */
	_Atomic uint64_t npending;           /* pending chunks; the only thing the fast path reads */
	pthread_mutex_t pend_lock;           /* guards the pend_ and ra_ fields, fetch, bdi */
	pthread_cond_t pend_cond;            /* CLOCK_MONOTONIC; broadcast on arrival and on failure */
	uint64_t *pend_bits[OVERLAY_NIMAGES];   /* pending chunks (NULL until the first add) */
	uint64_t *pend_asked[OVERLAY_NIMAGES];  /* pending chunks the fetch hook was called for */
	bool pend_failed;                    /* fs_pending_fail(): final */
	bool ra_off;                         /* read_ahead_kb is 0 until nothing is pending */
	fs_fetch_fn fetch;
	void *fetch_arg;
	char bdi[96];                        /* the bdi dir tune_bdi() tuned, "" if it did not */

	struct fs_digest *dig;               /* "digest": base sums of this mount (fs/digest.h) */
};

static int sig_pipe[2] = { -1, -1 };

/* ---- chunk state --------------------------------------------------------------------------- */

static bool chunk_modified(struct fs *fs, int img, uint64_t c)
{
	if (fs->opt.no_tracking)
		return atomic_load_explicit(&fs->nt_bits[img][c / 64], memory_order_acquire) >> (c % 64) & 1;
	return tracker_chunk_gen(fs->tr, img, c) != 0;
}

static void chunk_mark(struct fs *fs, int img, uint64_t first, uint64_t count, uint64_t now)
{
	if (fs->opt.no_tracking) {
		for (uint64_t c = first; c < first + count; c++)
			atomic_fetch_or_explicit(&fs->nt_bits[img][c / 64], 1ull << (c % 64), memory_order_release);
		return;
	}
	tracker_mark(fs->tr, img, first, count, now);
}

static int durable_cb(void *arg)
{
	return overlay_sync(arg);
}

int fs_sync(struct fs *fs)
{
	int rc;
	if (fs->opt.no_tracking)
		return overlay_sync(fs->ov);
	rc = tracker_commit(fs->tr, durable_cb, fs->ov);
	if (rc) {
		ho_err("cannot commit the chunk index: %s", ho_strerror(rc));
		int none = 0;
		atomic_compare_exchange_strong(&fs->first_err, &none, rc);
	}
	return rc;
}

/* ---- post-copy: waiting for chunks that have not arrived ------------------------------------- */

static bool any_pending(struct fs *fs)
{
	return atomic_load_explicit(&fs->npending, memory_order_acquire) != 0;
}

/* The first set bit of bits in [from, to], or UINT64_MAX. */
static uint64_t next_bit(const uint64_t *bits, uint64_t from, uint64_t to)
{
	while (from <= to) {
		uint64_t w = bits[from / 64] >> (from % 64);
		if (w) {
			uint64_t c = from + (uint64_t)__builtin_ctzll(w);
			return c <= to ? c : UINT64_MAX;
		}
		from = (from / 64 + 1) * 64;
	}
	return UINT64_MAX;
}

#define FETCH_BATCH 64
#define WAIT_TICK_MS 200

/* Wait until no chunk of [off, off+len) of img is pending, calling the fetch hook (unlocked) for
 * each pending chunk nobody asked for yet. Called before any stripe lock is taken. Returns 0, or
 * the errno to reply: EIO after fs_pending_fail() or once the session ends, EINTR when the
 * kernel interrupted req (its caller got a fatal signal). Every pass re-scans the whole range,
 * so chunks added meanwhile are asked for too, and wakes missed while unlocked do not matter. */
static int wait_arrived(struct fs *fs, fuse_req_t req, int img, uint64_t off, uint64_t len)
{
	uint64_t batch[FETCH_BATCH];
	int err = 0;

	if (len == 0)
		return 0;
	pthread_mutex_lock(&fs->pend_lock);
	uint64_t *bits = fs->pend_bits[img], *asked = fs->pend_asked[img];
	uint64_t first = off / fs->cs, last = HO_MIN((off + len - 1) / fs->cs, overlay_nchunks(fs->ov, img) - 1);
	while (bits) {
		bool pending = false, fetched = false;
		size_t n = 0;
		for (uint64_t c = next_bit(bits, first, last); c != UINT64_MAX;
		     c = c < last ? next_bit(bits, c + 1, last) : UINT64_MAX) {
			pending = true;
			if (fs->pend_failed)
				break;
			if (asked[c / 64] >> (c % 64) & 1)
				continue;
			asked[c / 64] |= 1ull << (c % 64);
			batch[n++] = c;
			if (n == FETCH_BATCH) {
				fs_fetch_fn fn = fs->fetch;
				void *arg = fs->fetch_arg;
				pthread_mutex_unlock(&fs->pend_lock);
				for (size_t i = 0; fn && i < n; i++)
					fn(arg, img, batch[i]);
				pthread_mutex_lock(&fs->pend_lock);
				n = 0;
				fetched = true;
			}
		}
		if (n) {
			fs_fetch_fn fn = fs->fetch;
			void *arg = fs->fetch_arg;
			pthread_mutex_unlock(&fs->pend_lock);
			for (size_t i = 0; fn && i < n; i++)
				fn(arg, img, batch[i]);
			pthread_mutex_lock(&fs->pend_lock);
			fetched = true;
		}
		if (!pending)
			break;
		if (fs->pend_failed) {
			err = EIO;
			break;
		}
		if (fetched)
			continue;        /* arrivals while unlocked woke nobody: look again first */
		struct timespec ts = ho_deadline(CLOCK_MONOTONIC, WAIT_TICK_MS);
		pthread_cond_timedwait(&fs->pend_cond, &fs->pend_lock, &ts);
		if (req && fuse_req_interrupted(req)) {
			err = EINTR;
			break;
		}
		if (fuse_session_exited(fs->se)) {
			err = EIO;
			break;
		}
	}
	pthread_mutex_unlock(&fs->pend_lock);
	return err;
}

/* Turn the mount's readahead off (while chunks are pending) or back to what tune_bdi() set.
 * Caller holds pend_lock. */
static void set_readahead(struct fs *fs, bool off);

void fs_set_fetch(struct fs *fs, fs_fetch_fn fn, void *arg)
{
	pthread_mutex_lock(&fs->pend_lock);
	fs->fetch = fn;
	fs->fetch_arg = arg;
	pthread_mutex_unlock(&fs->pend_lock);
}

int fs_pending_add(struct fs *fs, int img, uint64_t idx, uint64_t count)
{
	uint64_t n, added = 0;
	int rc = 0;

	if (img < 0 || img >= OVERLAY_NIMAGES)
		return HO_EINVAL;
	n = overlay_nchunks(fs->ov, img);
	if (idx > n || count > n - idx)
		return HO_EINVAL;
	if (count == 0)
		return 0;
	pthread_mutex_lock(&fs->pend_lock);
	if (fs->pend_failed) {
		rc = HO_ESTATE;
		goto out;
	}
	if (!fs->pend_bits[img]) {
		fs->pend_bits[img] = calloc(n / 64 + 1, sizeof(uint64_t));
		fs->pend_asked[img] = calloc(n / 64 + 1, sizeof(uint64_t));
		if (!fs->pend_bits[img] || !fs->pend_asked[img]) {
			free(fs->pend_bits[img]);
			free(fs->pend_asked[img]);
			fs->pend_bits[img] = fs->pend_asked[img] = NULL;
			rc = HO_ENOMEM;
			goto out;
		}
	}
	for (uint64_t c = idx; c < idx + count; c++) {
		uint64_t *w = &fs->pend_bits[img][c / 64], m = 1ull << (c % 64);
		if (!(*w & m)) {
			*w |= m;
			added++;
		}
	}
	atomic_fetch_add_explicit(&fs->npending, added, memory_order_release);
out:
	pthread_mutex_unlock(&fs->pend_lock);
	return rc;
}

int fs_pending_begin(struct fs *fs)
{
	int rc = 0;
	for (int img = 0; img < OVERLAY_NIMAGES && rc == 0; img++) {
		/* -ENOSYS: the kernel's INIT is not answered yet, so nothing is cached */
		int r = fuse_lowlevel_notify_inval_inode(fs->se, INO_IMG(img), 0, 0);
		if (r && r != -ENOENT && r != -ENOSYS) {
			ho_err("cannot drop the page cache of '%s': %s", overlay_image_name(img), strerror(-r));
			rc = ho_from_errno(-r);
		}
	}
	pthread_mutex_lock(&fs->pend_lock);
	if (any_pending(fs) && !fs->pend_failed && !fs->ra_off) {
		fs->ra_off = true;
		set_readahead(fs, true);
	}
	pthread_mutex_unlock(&fs->pend_lock);
	return rc;
}

void fs_chunk_arrived(struct fs *fs, int img, uint64_t idx, uint64_t count)
{
	uint64_t removed = 0;

	if (img < 0 || img >= OVERLAY_NIMAGES || count == 0)
		return;
	pthread_mutex_lock(&fs->pend_lock);
	uint64_t n = overlay_nchunks(fs->ov, img), *bits = fs->pend_bits[img], *asked = fs->pend_asked[img];
	if (!bits || fs->pend_failed || idx >= n) {
		pthread_mutex_unlock(&fs->pend_lock);
		return;
	}
	count = HO_MIN(count, n - idx);
	for (uint64_t c = idx; c < idx + count; c++) {
		uint64_t m = 1ull << (c % 64);
		if (bits[c / 64] & m) {
			bits[c / 64] &= ~m;
			asked[c / 64] &= ~m;
			removed++;
		}
	}
	if (removed) {
		uint64_t left = atomic_fetch_sub_explicit(&fs->npending, removed, memory_order_release) - removed;
		pthread_cond_broadcast(&fs->pend_cond);
		if (left == 0 && fs->ra_off) {
			fs->ra_off = false;
			set_readahead(fs, false);
		}
	}
	pthread_mutex_unlock(&fs->pend_lock);
}

void fs_pending_fail(struct fs *fs)
{
	pthread_mutex_lock(&fs->pend_lock);
	if (!fs->pend_failed) {
		fs->pend_failed = true;
		pthread_cond_broadcast(&fs->pend_cond);
		if (fs->ra_off) {
			fs->ra_off = false;
			set_readahead(fs, false);
		}
	}
	pthread_mutex_unlock(&fs->pend_lock);
}

uint64_t fs_pending_count(struct fs *fs)
{
	return atomic_load_explicit(&fs->npending, memory_order_acquire);
}

void fs_pending_reset(struct fs *fs)
{
	pthread_mutex_lock(&fs->pend_lock);
	for (int img = 0; img < OVERLAY_NIMAGES; img++)
		if (fs->pend_bits[img]) {
			size_t words = overlay_nchunks(fs->ov, img) / 64 + 1;
			memset(fs->pend_bits[img], 0, words * sizeof(uint64_t));
			memset(fs->pend_asked[img], 0, words * sizeof(uint64_t));
		}
	atomic_store_explicit(&fs->npending, 0, memory_order_release);
	fs->pend_failed = false;
	pthread_cond_broadcast(&fs->pend_cond);
	if (fs->ra_off) {
		fs->ra_off = false;
		set_readahead(fs, false);
	}
	pthread_mutex_unlock(&fs->pend_lock);
}

/* ---- attributes ---------------------------------------------------------------------------- */

static int ino_image(fuse_ino_t ino)
{
	return (ino == INO_IMG(OVERLAY_DISK) || ino == INO_IMG(OVERLAY_MEMORY)) ? (int)(ino - 2) : -1;
}

static void fill_attr(struct fs *fs, fuse_ino_t ino, struct stat *st)
{
	memset(st, 0, sizeof(*st));
	st->st_ino = ino;
	st->st_uid = getuid();
	st->st_gid = getgid();
	st->st_atim = st->st_mtim = st->st_ctim = fs->mtime;
	if (ino == INO_ROOT) {
		st->st_mode = S_IFDIR | 0755;
		st->st_nlink = 2;
		return;
	}
	int img = ino_image(ino);
	st->st_mode = S_IFREG | 0600;
	st->st_nlink = 1;
	st->st_size = (off_t)overlay_image_size(fs->ov, img);
	st->st_blksize = (blksize_t)fs->cs;
	st->st_blocks = (blkcnt_t)((overlay_image_size(fs->ov, img) + 511) / 512);
}

static void op_init(void *userdata, struct fuse_conn_info *conn)
{
	struct fs *fs = userdata;

	/* never invalidate QEMU's mapped RAM because an mtime "changed" */
	conn->want &= ~FUSE_CAP_AUTO_INVAL_DATA;
	if (!fs->opt.no_writeback_cache && (conn->capable & FUSE_CAP_WRITEBACK_CACHE))
		conn->want |= FUSE_CAP_WRITEBACK_CACHE;
	conn->want |= conn->capable & FUSE_CAP_SPLICE_WRITE;
	conn->max_write = 1u << 20;
	conn->max_readahead = 1u << 20;
	conn->max_background = 64;
	conn->congestion_threshold = 48;
}

static void op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct fs *fs = fuse_req_userdata(req);
	struct fuse_entry_param e;
	int img = -1;

	if (parent != INO_ROOT) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	for (int i = 0; i < OVERLAY_NIMAGES; i++)
		if (strcmp(name, overlay_image_name(i)) == 0)
			img = i;
	if (img < 0) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	memset(&e, 0, sizeof(e));
	e.ino = INO_IMG(img);
	e.attr_timeout = e.entry_timeout = ATTR_TIMEOUT;
	fill_attr(fs, e.ino, &e.attr);
	fuse_reply_entry(req, &e);
}

static void op_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct fs *fs = fuse_req_userdata(req);
	struct stat st;
	(void)fi;
	if (ino != INO_ROOT && ino_image(ino) < 0) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	fill_attr(fs, ino, &st);
	fuse_reply_attr(req, &st, ATTR_TIMEOUT);
}

static void op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set,
		       struct fuse_file_info *fi)
{
	struct fs *fs = fuse_req_userdata(req);
	struct stat st;
	int img = ino_image(ino);
	(void)fi;

	if (to_set & (FUSE_SET_ATTR_MODE | FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID)) {
		fuse_reply_err(req, EPERM);
		return;
	}
	if (to_set & FUSE_SET_ATTR_SIZE) {
		/* the images have the sizes of their bases; truncating one is refused */
		if (img < 0 || (uint64_t)attr->st_size != overlay_image_size(fs->ov, img)) {
			fuse_reply_err(req, EPERM);
			return;
		}
	}
	/* times are accepted and ignored: the reported mtime stays stable (see fs.h) */
	fill_attr(fs, ino, &st);
	fuse_reply_attr(req, &st, ATTR_TIMEOUT);
}

static void op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi)
{
	struct fs *fs = fuse_req_userdata(req);
	char buf[512];
	size_t used = 0;
	static const char *const names[] = { ".", "..", "disk", "memory" };
	static const fuse_ino_t inos[] = { INO_ROOT, INO_ROOT, INO_IMG(0), INO_IMG(1) };
	(void)fi;

	if (ino != INO_ROOT) {
		fuse_reply_err(req, ENOTDIR);
		return;
	}
	for (off_t i = off; i < 4; i++) {
		struct stat st;
		fill_attr(fs, inos[i], &st);
		size_t need = fuse_add_direntry(req, buf + used, sizeof(buf) - used, names[i], &st, i + 1);
		if (used + need > size || used + need > sizeof(buf))
			break;
		used += need;
	}
	fuse_reply_buf(req, buf, used);
}

static void op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	if (ino_image(ino) < 0) {
		fuse_reply_err(req, ino == INO_ROOT ? EISDIR : ENOENT);
		return;
	}
	if (fi->flags & O_TRUNC) {
		fuse_reply_err(req, EPERM);
		return;
	}
	fi->keep_cache = 1;       /* opening must not drop QEMU's RAM pages */
	fi->direct_io = 0;
	fi->fh = (uint64_t)ino_image(ino);
	fuse_reply_open(req, fi);
}

static void op_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	if (ino != INO_ROOT)
		fuse_reply_err(req, ENOTDIR);
	else
		fuse_reply_open(req, fi);
}

/* ---- read ---------------------------------------------------------------------------------- */

/* Reads reply with fd-backed buffers: one per run of chunks in the same state, pointing into the
 * overlay data file or the base, so libfuse can splice them to the kernel without a copy. An
 * all-zero base has no fd: its runs point at a static block of zeroes. A read is never answered
 * short: FUSE takes a short read of the page cache as end of file and zero-fills the rest. */
#define READ_STACK_RUNS 16
static const uint8_t zero_buf[1u << 20];

static void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi)
{
	struct fs *fs = fuse_req_userdata(req);
	int img = (int)fi->fh;
	uint64_t isz = overlay_image_size(fs->ov, img), pos = (uint64_t)off, end;
	union { struct fuse_bufvec v; char space[sizeof(struct fuse_bufvec) + READ_STACK_RUNS * sizeof(struct fuse_buf)]; } u;
	struct fuse_bufvec *bv = &u.v;
	int data_fd = overlay_data_fd(fs->ov, img), base_fd = overlay_base_fd(fs->ov, img);
	(void)ino;

	if (pos >= isz) {
		fuse_reply_buf(req, NULL, 0);
		return;
	}
	end = pos + HO_MIN((uint64_t)size, isz - pos);
	if (end - pos > sizeof(zero_buf)) {
		fuse_reply_err(req, EINVAL);     /* larger than max_read: the kernel never asks */
		return;
	}
	if (any_pending(fs)) {
		int err = wait_arrived(fs, req, img, pos, end - pos);
		if (err) {
			fuse_reply_err(req, err);
			return;
		}
	}
	/* at most one run per chunk touched, plus one */
	size_t max_runs = (size_t)((end - 1) / fs->cs - pos / fs->cs + 1);
	if (max_runs > READ_STACK_RUNS) {
		bv = calloc(1, sizeof(struct fuse_bufvec) + max_runs * sizeof(struct fuse_buf));
		if (!bv) {
			fuse_reply_err(req, ENOMEM);
			return;
		}
	} else {
		memset(&u, 0, sizeof(u));
	}
	bv->count = 0;
	while (pos < end) {
		uint64_t c = pos / fs->cs;
		bool mod = chunk_modified(fs, img, c);
		uint64_t run_end = (c + 1) * fs->cs;
		while (run_end < end && chunk_modified(fs, img, run_end / fs->cs) == mod)
			run_end += fs->cs;
		run_end = HO_MIN(run_end, end);
		struct fuse_buf *b = &bv->buf[bv->count++];
		b->size = run_end - pos;
		if (mod || base_fd >= 0) {
			b->flags = FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK | FUSE_BUF_FD_RETRY;
			b->fd = mod ? data_fd : base_fd;
			b->pos = (off_t)pos;
		} else {
			b->mem = (void *)zero_buf;
		}
		pos = run_end;
	}
	if (!fs->opt.no_tracking)
		tracker_add_io(fs->tr, end - (uint64_t)off, 0);
	int rc = fuse_reply_data(req, bv, 0);
	if (rc)
		ho_err("cannot reply to a read of %s at %lld: %s", overlay_image_name(img), (long long)off, strerror(-rc));
	if (bv != &u.v)
		free(bv);
}

/* ---- write --------------------------------------------------------------------------------- */

/* Write [pos, pos+n) inside chunk c, which was unmodified when we looked: copy it up under the
 * chunk's stripe lock, then mark it (still under the lock, so a reader or writer that sees it
 * modified finds its data complete). zero: write zeroes (src ignored). */
static int copy_up_write(struct fs *fs, int img, uint64_t c, const uint8_t *src, uint64_t pos,
			 uint64_t n, uint64_t now)
{
	pthread_mutex_t *m = &fs->stripe[c % NSTRIPES];
	uint64_t cstart = c * fs->cs, clen = HO_MIN((uint64_t)fs->cs, overlay_image_size(fs->ov, img) - cstart);
	int rc = 0;

	pthread_mutex_lock(m);
	if (chunk_modified(fs, img, c)) {
		pthread_mutex_unlock(m);
		return src ? overlay_write(fs->ov, img, src, n, pos) : overlay_zero(fs->ov, img, pos, n);
	}
	if (n == clen) {
		rc = src ? overlay_write(fs->ov, img, src, n, pos) : overlay_zero(fs->ov, img, pos, n);
	} else {
		uint8_t *tmp = malloc(clen);
		if (!tmp) {
			pthread_mutex_unlock(m);
			return HO_ENOMEM;
		}
		rc = overlay_read_base(fs->ov, img, tmp, clen, cstart);
		if (rc == 0) {
			if (src)
				memcpy(tmp + (pos - cstart), src, n);
			else
				memset(tmp + (pos - cstart), 0, n);
			rc = overlay_write(fs->ov, img, tmp, clen, cstart);
		}
		free(tmp);
	}
	if (rc == 0)
		chunk_mark(fs, img, c, 1, now);
	pthread_mutex_unlock(m);
	return rc;
}

/* How many chunks from pos on are unmodified and completely covered by [pos, end) (0 if pos is
 * not chunk-aligned). Such chunks need no copy-up: their old content is overwritten whole. */
#define MAX_WHOLE_RUN 1024
static uint64_t whole_unmodified_run(struct fs *fs, int img, uint64_t pos, uint64_t end)
{
	uint64_t isz = overlay_image_size(fs->ov, img), c = pos / fs->cs, n = 0;
	if (pos % fs->cs)
		return 0;
	while (n < MAX_WHOLE_RUN) {
		uint64_t cend = HO_MIN((c + n + 1) * fs->cs, isz);
		if (cend > end || chunk_modified(fs, img, c + n))
			break;
		n++;
		if (cend == isz)
			break;
	}
	return n;
}

/* Write n whole chunks from c with one pwrite, holding their stripe locks (taken in ascending
 * stripe order, so a run never deadlocks with another run or a single copy-up). */
static int write_whole_run(struct fs *fs, int img, const uint8_t *src, uint64_t c, uint64_t n, uint64_t now)
{
	uint64_t off = c * fs->cs, len = HO_MIN(n * fs->cs, overlay_image_size(fs->ov, img) - off);
	bool need[NSTRIPES] = { false };
	int rc;

	for (uint64_t i = 0; i < n && i < NSTRIPES; i++)
		need[(c + i) % NSTRIPES] = true;
	for (int s = 0; s < NSTRIPES; s++)
		if (need[s])
			pthread_mutex_lock(&fs->stripe[s]);
	rc = src ? overlay_write(fs->ov, img, src, len, off) : overlay_zero(fs->ov, img, off, len);
	if (rc == 0)
		chunk_mark(fs, img, c, n, now);
	for (int s = NSTRIPES - 1; s >= 0; s--)
		if (need[s])
			pthread_mutex_unlock(&fs->stripe[s]);
	return rc;
}

/* Write (or, src == NULL, zero) [off, off+len) of img chunk by chunk; returns 0 or negative. */
static int write_range(struct fs *fs, int img, const uint8_t *src, uint64_t off, uint64_t len)
{
	uint64_t pos = off, end = off + len, now = ho_now_ns();
	int rc = 0;

	while (pos < end && rc == 0) {
		uint64_t c = pos / fs->cs;
		uint64_t whole = whole_unmodified_run(fs, img, pos, end);
		if (whole) {
			rc = write_whole_run(fs, img, src ? src + (pos - off) : NULL, c, whole, now);
			pos = HO_MIN(end, (c + whole) * fs->cs);
			continue;
		}
		if (!chunk_modified(fs, img, c)) {
			uint64_t n = HO_MIN(end, (c + 1) * fs->cs) - pos;
			rc = copy_up_write(fs, img, c, src ? src + (pos - off) : NULL, pos, n, now);
			pos += n;
			continue;
		}
		/* a run of already-modified chunks: one write, then mark them */
		uint64_t run_end = (c + 1) * fs->cs;
		while (run_end < end && chunk_modified(fs, img, run_end / fs->cs))
			run_end += fs->cs;
		run_end = HO_MIN(run_end, end);
		rc = src ? overlay_write(fs->ov, img, src + (pos - off), run_end - pos, pos)
			 : overlay_zero(fs->ov, img, pos, run_end - pos);
		if (rc == 0)
			chunk_mark(fs, img, c, (run_end - 1) / fs->cs - c + 1, now);
		pos = run_end;
	}
	return rc;
}

static void op_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size, off_t off,
		     struct fuse_file_info *fi)
{
	struct fs *fs = fuse_req_userdata(req);
	int img = (int)fi->fh;
	uint64_t isz = overlay_image_size(fs->ov, img);
	int rc;
	(void)ino;

	if ((uint64_t)off >= isz) {
		fuse_reply_err(req, size ? EFBIG : 0);
		return;
	}
	size = (size_t)HO_MIN((uint64_t)size, isz - (uint64_t)off);
	if (any_pending(fs)) {
		int err = wait_arrived(fs, req, img, (uint64_t)off, size);
		if (err) {
			fuse_reply_err(req, err);
			return;
		}
	}
	rc = write_range(fs, img, (const uint8_t *)buf, (uint64_t)off, size);
	if (rc) {
		ho_err("cannot write %s at %lld: %s", overlay_image_name(img), (long long)off, ho_strerror(rc));
		fuse_reply_err(req, ho_to_errno(rc));
		return;
	}
	if (!fs->opt.no_tracking)
		tracker_add_io(fs->tr, 0, size);
	fuse_reply_write(req, size);
}

static void op_fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t off, off_t len,
			 struct fuse_file_info *fi)
{
	struct fs *fs = fuse_req_userdata(req);
	int img = (int)fi->fh, rc;
	uint64_t isz = overlay_image_size(fs->ov, img);
	(void)ino;

	if (off < 0 || len <= 0) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	if ((uint64_t)off >= isz || (uint64_t)len > isz - (uint64_t)off) {
		if (mode & (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE)) {
			if ((uint64_t)off >= isz) {
				fuse_reply_err(req, 0);
				return;
			}
			len = (off_t)(isz - (uint64_t)off);
		} else {
			fuse_reply_err(req, EFBIG);
			return;
		}
	}
	if (mode == 0 || mode == FALLOC_FL_KEEP_SIZE) {
		fuse_reply_err(req, 0);       /* space inside a fixed-size image: nothing to do */
		return;
	}
	if (!(mode & (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE))) {
		fuse_reply_err(req, EOPNOTSUPP);
		return;
	}
	/* discard / zero range: the chunks become zero in the overlay (the pipeline sends them as
	 * zero chunks, not data); a pending chunk must arrive first, or its data would land on top */
	if (any_pending(fs) && (rc = wait_arrived(fs, req, img, (uint64_t)off, (uint64_t)len))) {
		fuse_reply_err(req, rc);
		return;
	}
	rc = write_range(fs, img, NULL, (uint64_t)off, (uint64_t)len);
	fuse_reply_err(req, rc ? ho_to_errno(rc) : 0);
}

static void op_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
	struct fs *fs = fuse_req_userdata(req);
	(void)ino; (void)datasync; (void)fi;
	int rc = fs_sync(fs);
	fuse_reply_err(req, rc ? ho_to_errno(rc) : 0);
}

static void op_fsyncdir(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
	op_fsync(req, ino, datasync, fi);
}

static void op_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	(void)ino; (void)fi;
	fuse_reply_err(req, 0);
}

static void op_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	(void)ino; (void)fi;
	fuse_reply_err(req, 0);
}

static void op_statfs(fuse_req_t req, fuse_ino_t ino)
{
	struct fs *fs = fuse_req_userdata(req);
	struct statvfs sv, under;
	(void)ino;
	memset(&sv, 0, sizeof(sv));
	sv.f_bsize = sv.f_frsize = fs->cs;
	sv.f_blocks = (overlay_image_size(fs->ov, 0) + overlay_image_size(fs->ov, 1)) / fs->cs;
	if (statvfs(overlay_dir(fs->ov), &under) == 0) {
		sv.f_bfree = sv.f_bavail = (fsblkcnt_t)((uint64_t)under.f_bavail * under.f_frsize / fs->cs);
		if (sv.f_bfree > sv.f_blocks)
			sv.f_bfree = sv.f_bavail = sv.f_blocks;
	}
	sv.f_files = 3;
	sv.f_namemax = 255;
	fuse_reply_statfs(req, &sv);
}

static void op_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
		      struct fuse_file_info *fi)
{
	(void)parent; (void)name; (void)mode; (void)fi;
	fuse_reply_err(req, EPERM);
}

static void op_destroy(void *userdata)
{
	/* the kernel has written back its dirty pages by now: make everything durable */
	fs_sync(userdata);
}

static const struct fuse_lowlevel_ops fs_ops = {
	.init = op_init,
	.destroy = op_destroy,
	.lookup = op_lookup,
	.getattr = op_getattr,
	.setattr = op_setattr,
	.opendir = op_opendir,
	.readdir = op_readdir,
	.open = op_open,
	.read = op_read,
	.write = op_write,
	.fallocate = op_fallocate,
	.fsync = op_fsync,
	.fsyncdir = op_fsyncdir,
	.flush = op_flush,
	.release = op_release,
	.statfs = op_statfs,
	.create = op_create,
};

/* ---- background threads -------------------------------------------------------------------- */

static void *flusher_main(void *arg)
{
	struct fs *fs = arg;
	pthread_mutex_lock(&fs->flush_lock);
	while (!fs->stop) {
		struct timespec ts = ho_deadline(CLOCK_REALTIME, (uint64_t)fs->opt.commit_ms);
		pthread_cond_timedwait(&fs->flush_cond, &fs->flush_lock, &ts);
		if (fs->stop)
			break;
		pthread_mutex_unlock(&fs->flush_lock);
		if (!fs->opt.no_tracking)
			fs_sync(fs);
		pthread_mutex_lock(&fs->flush_lock);
	}
	pthread_mutex_unlock(&fs->flush_lock);
	return NULL;
}

static void ctl_status(struct fs *fs, int conn)
{
	struct tracker_stats st;
	int rc = tracker_stats(fs->tr, &st);
	if (rc) {
		ho_ctl_reply(conn, rc, "cannot read statistics");
		return;
	}
	ho_ctl_reply(conn, 0, "generation=%u disk_modified=%" PRIu64 " memory_modified=%" PRIu64
		     " bytes_read=%" PRIu64 " bytes_written=%" PRIu64 " mountpoint=%s pending=%" PRIu64,
		     st.generation, st.modified[0], st.modified[1], st.bytes_read, st.bytes_written,
		     fs->mountpoint, fs_pending_count(fs));
}

static bool digest_modified(void *arg, int img, uint64_t c)
{
	return chunk_modified(arg, img, c);
}

/* "memory", "disk" or "all" as a mask of images; 0 if none of these */
static unsigned digest_mask(const char *what)
{
	if (!strcmp(what, "memory"))
		return 1u << OVERLAY_MEMORY;
	if (!strcmp(what, "disk"))
		return 1u << OVERLAY_DISK;
	if (!strcmp(what, "all"))
		return 1u << OVERLAY_MEMORY | 1u << OVERLAY_DISK;
	return 0;
}

/* "digest WHAT" → "memory=HEX disk=HEX" (the images WHAT names, memory first; fs/digest.h) */
static void ctl_digest(struct fs *fs, int conn, const char *what)
{
	static const int order[2] = { OVERLAY_MEMORY, OVERLAY_DISK };
	unsigned mask = digest_mask(what);
	char out[128];
	size_t o = 0;
	if (!mask) {
		ho_ctl_reply(conn, HO_EINVAL, "digest of what? (memory, disk or all)");
		return;
	}
	out[0] = 0;
	for (int k = 0; k < 2; k++) {
		int img = order[k];
		uint8_t d[16];
		char hex[33];
		if (!(mask & (1u << img)))
			continue;
		int rc = fs_digest_image(fs->dig, img, digest_modified, fs, d);
		if (rc) {
			ho_ctl_reply(conn, rc, "cannot hash '%s': %s", overlay_image_name(img), ho_strerror(rc));
			return;
		}
		ho_hex(d, 16, hex);
		o += (size_t)snprintf(out + o, sizeof(out) - o, "%s%s=%s", o ? " " : "", overlay_image_name(img), hex);
	}
	ho_ctl_reply(conn, 0, "%s", out);
}

static void *ctl_main(void *arg)
{
	struct fs *fs = arg;
	while (ho_wait_accept(fs->ctl_fd, fs->wake[0]) == 1) {
		char req[HO_CTL_LINE];
		int conn, pfd;
		if (ho_ctl_accept(fs->ctl_fd, &conn, req, sizeof(req), &pfd))
			continue;
		if (fs->opt.no_tracking && strcmp(req, "sync")) {
			if (pfd >= 0)
				close(pfd);
			ho_ctl_reply(conn, HO_ESTATE, "tracking is off on this mount");
			continue;
		}
		if (strcmp(req, "checkpoint") == 0) {
			uint32_t closed = 0;
			int rc = tracker_checkpoint(fs->tr, durable_cb, fs->ov, &closed);
			if (rc)
				ho_ctl_reply(conn, rc, "checkpoint failed: %s", ho_strerror(rc));
			else
				ho_ctl_reply(conn, 0, "%u", closed);
		} else if (strcmp(req, "sync") == 0) {
			int rc = fs_sync(fs);
			ho_ctl_reply(conn, rc, "%s", rc ? ho_strerror(rc) : "");
		} else if (strcmp(req, "status") == 0) {
			ctl_status(fs, conn);
		} else if (strncmp(req, "digest-prepare ", 15) == 0) {
			unsigned mask = digest_mask(req + 15);
			if (mask)
				fs_digest_prepare(fs->dig, mask);
			ho_ctl_reply(conn, mask ? 0 : HO_EINVAL, "%s", mask ? "" : "digest of what? (memory, disk or all)");
		} else if (strncmp(req, "digest ", 7) == 0) {
			ctl_digest(fs, conn, req + 7);
		} else if (fs->opt.ctl_hook) {
			fs->opt.ctl_hook(fs, req, conn, pfd, fs->opt.ctl_hook_arg);
			continue;
		} else {
			ho_ctl_reply(conn, HO_EINVAL, "unknown request '%s'", req);
		}
		if (pfd >= 0)
			close(pfd);
	}
	return NULL;
}

static void on_signal(int sig)
{
	int saved = errno;
	unsigned char c = (unsigned char)sig;
	if (write(sig_pipe[1], &c, 1) < 0) {
		/* nothing to do: the pipe is full, a stop is pending already */
	}
	errno = saved;
}

/* Unmount as fusermount3 -u would, after flushing the kernel's dirty pages to us. */
static void unmount_gracefully(struct fs *fs)
{
	int fd = open(fs->mountpoint, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd >= 0) {
		syncfs(fd);
		close(fd);
	}
	if (geteuid() == 0) {
		if (umount2(fs->mountpoint, 0) == 0)
			return;
		ho_warn("mountpoint '%s' is busy; detaching it lazily", fs->mountpoint);
		if (umount2(fs->mountpoint, MNT_DETACH) == 0)
			return;
	} else {
		char *argv[] = { "fusermount3", "-u", "-q", fs->mountpoint, NULL };
		pid_t pid;
		int st;
		if (posix_spawnp(&pid, "fusermount3", NULL, NULL, argv, environ) == 0 &&
		    waitpid(pid, &st, 0) == pid && WIFEXITED(st) && WEXITSTATUS(st) == 0)
			return;
	}
	fuse_session_exit(fs->se);
}

static void *sig_main(void *arg)
{
	struct fs *fs = arg;
	unsigned char c;
	while (read(sig_pipe[0], &c, 1) < 0 && errno == EINTR)
		;
	if (c == 0)   /* shutdown of the thread itself */
		return NULL;
	ho_notice("signal %d: unmounting '%s'", c, fs->mountpoint);
	if (any_pending(fs)) {
		/* nothing will arrive any more: waiters (and the flush below) must not hang */
		ho_warn("stopping with %" PRIu64 " chunks not arrived: requests for them fail", fs_pending_count(fs));
		fs_pending_fail(fs);
	}
	unmount_gracefully(fs);
	return NULL;
}

/* ---- kernel writeback and readahead limits of the mount -------------------------------------- */

/* The "major:minor" of our mount from /proc/self/mountinfo (a stat of the mountpoint would ask
 * this very daemon, which does not serve yet). */
static int mount_devno(const char *mountpoint, char *out, size_t len)
{
	FILE *f = fopen("/proc/self/mountinfo", "re");
	char line[8192];
	int rc = HO_ENOENT;

	while (f && fgets(line, sizeof(line), f)) {
		char devno[32], mp[4096];
		if (sscanf(line, "%*d %*d %31s %*s %4095s", devno, mp) != 2)
			continue;
		ho_unescape_mountinfo(mp);
		if (strcmp(mp, mountpoint) == 0) {
			snprintf(out, len, "%s", devno);
			rc = 0;            /* keep going: the last mount on the path is ours */
		}
	}
	if (f)
		fclose(f);
	return rc;
}

static void write_sysfs(const char *dir, const char *name, const char *value)
{
	char path[256];
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	int fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0 || write(fd, value, strlen(value)) < 0)
		ho_info("cannot set %s to %s: %s", path, value, strerror(errno));
	if (fd >= 0)
		close(fd);
}

/* FUSE mounts start with strict per-device dirty limits (strict_limit, max_ratio 1 %) and 128 KiB
 * readahead. For a VM's images that means guest RAM streamed to the daemon page by page as it
 * is dirtied (each page written back again and again) and small reads. As root, allow this mount
 * up to 20 % of the dirty threshold, non-strict, and 1 MiB readahead (handoff-mount(8)). */
#define READ_AHEAD_KB "1024"
static void tune_bdi(struct fs *fs)
{
	char devno[32], dir[96];
	if (fs->opt.no_bdi_tuning || mount_devno(fs->mountpoint, devno, sizeof(devno)))
		return;
	snprintf(dir, sizeof(dir), "/sys/class/bdi/%s", devno);
	if (access(dir, W_OK) < 0)
		return;
	pthread_mutex_lock(&fs->pend_lock);
	snprintf(fs->bdi, sizeof(fs->bdi), "%s", dir);
	write_sysfs(dir, "read_ahead_kb", fs->ra_off ? "0" : READ_AHEAD_KB);
	pthread_mutex_unlock(&fs->pend_lock);
	write_sysfs(dir, "strict_limit", "0");
	write_sysfs(dir, "max_ratio", "20");
}

static void set_readahead(struct fs *fs, bool off)
{
	if (fs->bdi[0])
		write_sysfs(fs->bdi, "read_ahead_kb", off ? "0" : READ_AHEAD_KB);
}

/* ---- mount, run, free ---------------------------------------------------------------------- */

int fs_check_mountpoint(const char *mp)
{
	struct stat st;
	DIR *d;
	struct dirent *e;

	if (stat(mp, &st) < 0) {
		if (errno == ENOTCONN) {
			ho_err("mountpoint '%s' is a stale FUSE mount (run 'fusermount3 -u %s')", mp, mp);
			return HO_ESTATE;
		}
		ho_err("mountpoint '%s' does not exist", mp);
		return HO_ENOENT;
	}
	if (!S_ISDIR(st.st_mode)) {
		ho_err("mountpoint '%s' is not a directory", mp);
		return HO_EINVAL;
	}
	d = opendir(mp);
	if (!d) {
		ho_err("cannot open mountpoint '%s': %s", mp, strerror(errno));
		return ho_from_errno(errno);
	}
	while ((e = readdir(d)))
		if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
			closedir(d);
			ho_err("mountpoint '%s' is not empty", mp);
			return HO_EEXIST;
		}
	closedir(d);
	return 0;
}

int fs_mount(struct overlay *ov, struct tracker *tr, const struct fs_options *opt, struct fs **out)
{
	struct fs *fs;
	struct stat st;
	char optbuf[4096 + 64];
	int rc;

	if ((rc = fs_check_mountpoint(opt->mountpoint)))
		return rc;
	fs = calloc(1, sizeof(*fs));
	if (!fs)
		return HO_ENOMEM;
	fs->ov = ov;
	fs->tr = tr;
	fs->opt = *opt;
	if (!fs->opt.commit_ms)
		fs->opt.commit_ms = 5000;
	fs->cs = overlay_chunk_size(ov);
	fs->ctl_fd = -1;
	fs->wake[0] = fs->wake[1] = -1;
	fs->mountpoint = realpath(opt->mountpoint, NULL);
	if ((rc = fs_digest_new(ov, &fs->dig))) {
		free(fs->mountpoint);
		free(fs);
		return rc;
	}
	for (int i = 0; i < NSTRIPES; i++)
		pthread_mutex_init(&fs->stripe[i], NULL);
	pthread_mutex_init(&fs->flush_lock, NULL);
	pthread_cond_init(&fs->flush_cond, NULL);
	pthread_mutex_init(&fs->pend_lock, NULL);
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&fs->pend_cond, &ca);
	pthread_condattr_destroy(&ca);
	if (!fs->mountpoint) {
		rc = HO_ENOMEM;
		goto fail;
	}
	/* a stable mtime: when the overlay was created */
	char *meta = ho_path_join(overlay_dir(ov), "overlay.meta");
	if (meta && stat(meta, &st) == 0)
		fs->mtime = st.st_mtim;
	free(meta);
	if (opt->no_tracking)
		for (int i = 0; i < OVERLAY_NIMAGES; i++)
			if (!(fs->nt_bits[i] = calloc(overlay_nchunks(ov, i) / 64 + 1, sizeof(uint64_t)))) {
				rc = HO_ENOMEM;
				goto fail;
			}

	/* fsname tells tools which overlay a mountpoint serves (see /proc/self/mountinfo) */
	snprintf(optbuf, sizeof(optbuf), "-odefault_permissions,nosuid,nodev,noatime,subtype=handoff,fsname=handoff:%s%s",
		 overlay_dir(ov), opt->allow_other ? ",allow_other" : "");
	char *argv[] = { "handoff-mount", optbuf, opt->debug ? "-d" : NULL, NULL };
	struct fuse_args args = FUSE_ARGS_INIT(opt->debug ? 3 : 2, argv);
	fs->se = fuse_session_new(&args, &fs_ops, sizeof(fs_ops), fs);
	fuse_opt_free_args(&args);     /* libfuse may have added to them; it keeps no pointer */
	if (!fs->se) {
		ho_err("cannot create the FUSE session");
		rc = HO_EIO;
		goto fail;
	}
	if ((rc = ho_ctl_listen(overlay_dir(ov), &fs->ctl_fd))) {
		ho_err("cannot create the control socket in '%s': %s", overlay_dir(ov), ho_strerror(rc));
		goto fail;
	}
	if (fuse_session_mount(fs->se, fs->mountpoint) != 0) {
		ho_err("cannot mount on '%s' (is /dev/fuse usable and fusermount3 installed?)", fs->mountpoint);
		rc = HO_EIO;
		goto fail;
	}
	*out = fs;
	return 0;
fail:
	fs_free(fs);
	return rc;
}

int fs_run(struct fs *fs)
{
	struct sigaction sa = { .sa_handler = on_signal };
	int rc;

	overlay_set_mountpoint(fs->ov, fs->mountpoint);
	tune_bdi(fs);
	if (pipe2(sig_pipe, O_CLOEXEC) < 0 || pipe2(fs->wake, O_CLOEXEC) < 0)
		return ho_from_errno(errno);
	sigemptyset(&sa.sa_mask);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
	pthread_create(&fs->flusher, NULL, flusher_main, fs);
	pthread_create(&fs->ctl_thread, NULL, ctl_main, fs);
	pthread_create(&fs->sig_thread, NULL, sig_main, fs);
	bool started_ok = true;
	if (fs->opt.started && (rc = fs->opt.started(fs, fs->opt.hook_arg)) != 0) {
		ho_err("cannot start serving: %s", ho_strerror(rc));
		started_ok = false;
		unmount_gracefully(fs);
	}
	if (started_ok && fs->opt.report_fd)
		ho_daemon_ready(fs->opt.report_fd);     /* a detached parent may exit now */

	if (fs->opt.ready_fd >= 0) {
		if (started_ok && write(fs->opt.ready_fd, "ready\n", 6) != 6)
			ho_warn("cannot signal readiness on fd %d", fs->opt.ready_fd);
		close(fs->opt.ready_fd);
	}

	struct fuse_loop_config *cfg = fuse_loop_cfg_create();
	fuse_loop_cfg_set_clone_fd(cfg, 0);
	/* a request waiting for a chunk that has not arrived (post-copy) holds its worker: leave room
	 * for a vCPU fault or disk request each, so requests for chunks at hand still get served */
	fuse_loop_cfg_set_max_threads(cfg, 64);
	fuse_loop_cfg_set_idle_threads(cfg, 8);
	rc = fuse_session_loop_mt(fs->se, cfg);
	fuse_loop_cfg_destroy(cfg);
	if (rc)
		ho_warn("the FUSE loop ended with %d", rc);

	/* tell waiting mounts we are on our way out, stop the helpers, make everything durable */
	overlay_set_mountpoint(fs->ov, "");
	if (fs->opt.stopping)
		fs->opt.stopping(fs, fs->opt.hook_arg);
	pthread_mutex_lock(&fs->flush_lock);
	fs->stop = true;
	pthread_cond_signal(&fs->flush_cond);
	pthread_mutex_unlock(&fs->flush_lock);
	if (write(fs->wake[1], "x", 1) < 0 || write(sig_pipe[1], "", 1) < 0)
		ho_warn("cannot wake helper threads");
	pthread_join(fs->flusher, NULL);
	pthread_join(fs->ctl_thread, NULL);
	pthread_join(fs->sig_thread, NULL);
	fs_digest_free(fs->dig);             /* stops a background sum before the caller closes ov */
	fs->dig = NULL;
	fs_sync(fs);
	fuse_session_unmount(fs->se);
	ho_ctl_unlink(overlay_dir(fs->ov));
	return fs->first_err;
}

void fs_free(struct fs *fs)
{
	if (!fs)
		return;
	if (fs->se)
		fuse_session_destroy(fs->se);
	if (fs->ctl_fd >= 0)
		close(fs->ctl_fd);
	for (int i = 0; i < 2; i++) {
		if (fs->wake[i] >= 0)
			close(fs->wake[i]);
		free(fs->nt_bits[i]);
		free(fs->pend_bits[i]);
		free(fs->pend_asked[i]);
	}
	fs_digest_free(fs->dig);
	free(fs->mountpoint);
	free(fs);
}


int fs_invalidate(struct fs *fs, int img, uint64_t off, uint64_t len)
{
	int rc = fuse_lowlevel_notify_inval_inode(fs->se, INO_IMG(img), (off_t)off, (off_t)len);
	return (rc == 0 || rc == -ENOENT) ? 0 : ho_from_errno(-rc);
}
