/*
 * fs.h — the FUSE filesystem that presents a VM's `disk` and `memory` as regular files: reads
 * come from the base where a chunk is unmodified and from the overlay where it is modified; the
 * first write to a chunk copies it up (chunk-level copy-on-write) and the tracker records it.
 *
 * The cache rules are QEMU's: `memory` is mapped shared by QEMU as guest RAM, so files never use
 * direct_io, keep their page cache across opens, report a stable mtime, and the kernel's
 * automatic data invalidation is turned off — one `stat` must never make QEMU re-fault its RAM.
 *
 * Durability: fsync (and the periodic flusher, and checkpoint, and unmount) make overlay data
 * durable before the tracker commits (overlay.h, tracker.h). A daemon killed with -9 loses only
 * writes that were never fsynced.
 *
 * The daemon also answers the control socket (common/ctl.h): "checkpoint" → "ok GEN", "sync",
 * "status" (ending in "pending=N", see fs_pending_count()), "digest memory|disk|all" → "memory=HEX
 * disk=HEX" (the image digest both ends of a handoff compare, defined in fs/digest.h; it costs
 * the modified chunks plus, once per mount, one read of the base) and "digest-prepare
 * memory|disk|all" (start reading the base for it in the background); other requests go to the
 * caller's hook (the mirror's "apply").
 */
#ifndef HANDOFF_FS_H
#define HANDOFF_FS_H

#include <stdbool.h>
#include <stdint.h>

struct overlay;
struct overlay_base_spec;
struct tracker;
struct fs;

/* A hook for control requests fs does not know. Reply with ho_ctl_reply(conn_fd, ...) and own
 * passed_fd (-1 if none). Runs on the control thread. */
typedef void (*fs_ctl_hook)(struct fs *fs, const char *request, int conn_fd, int passed_fd, void *arg);

struct fs_options {
	const char *mountpoint;
	bool allow_other;           /* -o allow_other (off by default) */
	bool debug;                 /* libfuse debug output */
	bool no_writeback_cache;    /* do not use the kernel's writeback cache */
	bool no_tracking;           /* benchmarks only: an in-memory bitmap instead of the tracker */
	bool no_bdi_tuning;         /* keep the kernel's dirty limits and readahead for the mount */
	int ready_fd;               /* write "ready\n" here once mounted and serving; -1 = none */
	int *report_fd;             /* a daemonized tool's report fd (common/daemon.h): fs_run()
	                               calls ho_daemon_ready() on it once serving; NULL = none */
	unsigned commit_ms;         /* flusher period (default 5000 ms) */
	fs_ctl_hook ctl_hook;
	void *ctl_hook_arg;
	/* Called in the serving process (after daemonizing), before the first request is served:
	 * where the mirror starts its listener thread. A non-zero return aborts fs_run(). */
	int (*started)(struct fs *fs, void *arg);
	/* Called after the last request, before the final commit: stop what started() started. */
	void (*stopping)(struct fs *fs, void *arg);
	void *hook_arg;
};

/* 0 if mp is an existing, empty directory and not a stale mount; else logs why and returns
 * HO_ENOENT, HO_EINVAL, HO_EEXIST (not empty) or HO_ESTATE (stale FUSE mount). */
int fs_check_mountpoint(const char *mp);
/* Mount: checks the mountpoint (exists, is an empty directory, is not a stale mount), mounts,
 * and starts nothing yet. A background tool daemonizes (common/daemon.h) BEFORE it opens the
 * overlay and tracker — sqlite must not cross fork() — and passes its report fd in opt.
 * fs does not own ov and tr. */
int fs_mount(struct overlay *ov, struct tracker *tr, const struct fs_options *opt, struct fs **out);
/* Serve until unmounted (fusermount3 -u) or SIGTERM/SIGINT (which flush the page cache and
 * unmount cleanly), then commit everything. Returns 0 or the first durability error. */
int fs_run(struct fs *fs);
/* Free what fs_mount allocated (after fs_run). */
void fs_free(struct fs *fs);

/* Drop the kernel page cache of [off, off+len) of image img (after the overlay changed under it). */
int fs_invalidate(struct fs *fs, int img, uint64_t off, uint64_t len);
/* Commit now (data durable first). */
int fs_sync(struct fs *fs);

/* ---- post-copy: chunks that have not arrived yet ------------------------------------------- */

/* The destination of a post-copy handoff resumes the VM before every changed chunk has arrived.
 * Its mount marks those chunks pending: a read, write or fallocate that touches one waits (in its
 * FUSE worker) until the chunk arrives, and the owner is told once per chunk so it can ask the
 * sender for that chunk first. With nothing pending this costs one atomic load per request.
 * Every function below may be called from any thread, before or during fs_run(). */

/* Called from a FUSE worker (without fs locks held) the first time a request has to wait for
 * chunk idx of img; must not block for long (it queues a request). */
typedef void (*fs_fetch_fn)(void *arg, int img, uint64_t idx);
/* Set the fetch hook (NULL = none). Set it before fs_pending_add(). */
void fs_set_fetch(struct fs *fs, fs_fetch_fn fn, void *arg);
/* Mark chunks [idx, idx+count) of img pending (the first call for an image allocates its
 * bitmaps: 2 bits per chunk). Reads, writes and fallocate that touch a pending chunk wait until
 * fs_chunk_arrived() covers it (or fs_pending_fail()). Chunks pending already stay pending.
 * Returns 0, HO_EINVAL (img or range outside the image; nothing marked), HO_ESTATE (after
 * fs_pending_fail()) or HO_ENOMEM. */
int fs_pending_add(struct fs *fs, int img, uint64_t idx, uint64_t count);
/* Once the pending set is complete (before anyone uses the files): drop the kernel page cache of
 * both images (whole files) so no stale page survives, and turn the mount's readahead off while
 * anything is pending (bdi read_ahead_kb 0, so a fault on guest RAM waits for its own chunk, not
 * for a 1 MiB window). Files opened before this call keep the readahead
 * window they were opened with. The readahead fs_run() set (1024 KiB) is restored when the last
 * chunk arrives and on fs_pending_fail(); readahead is not touched with no_bdi_tuning or when
 * fs_run() could not tune it (not root). May be called again after more fs_pending_add() calls.
 * Returns 0 or the error of dropping the page cache. Dropping writes dirty pages back first, and
 * writing back a page of a pending chunk waits for that chunk: if anything may have written
 * through the mount, flush it (fs_invalidate() of each whole image) before fs_pending_add(). */
int fs_pending_begin(struct fs *fs);
/* The data of [idx, idx+count) of img is now in the overlay and marked in the tracker (the
 * caller did that first): clear them and wake whoever waits. Chunks not pending are ignored, and
 * so is everything after fs_pending_fail(). */
void fs_chunk_arrived(struct fs *fs, int img, uint64_t idx, uint64_t count);
/* The transfer failed: every waiter, and every later request touching a still-pending chunk,
 * fails with EIO; fs_pending_count() then stays what it was (until fs_pending_reset()). A
 * SIGTERM/SIGINT stop of a mount with chunks pending calls it too, so the unmount never hangs
 * on a waiter. */
void fs_pending_fail(struct fs *fs);
/* Chunks still pending (all images). Also the last field ("pending=N") of the "status" reply. */
uint64_t fs_pending_count(struct fs *fs);
/* Forget every pending chunk and a failure, for a new post-copy on the same mount (after
 * fs_pending_fail(), fs_pending_add() refuses with HO_ESTATE until this is called). Waiters wake
 * and proceed with what the overlay holds; the count is 0; readahead is restored. */
void fs_pending_reset(struct fs *fs);

/* ---- what handoff-mount and handoff-mirror share at the command line (fs/cli.c) ------------ */

/* Exit statuses of handoff-mount(8), EXIT STATUS; handoff-mirror(8) uses the same ones. */
enum fs_exit {
	FS_EXIT_OK = 0, FS_EXIT_USAGE = 1, FS_EXIT_MOUNTPOINT = 2, FS_EXIT_BASE = 3, FS_EXIT_BUSY = 4,
	FS_EXIT_CORRUPT = 5, FS_EXIT_IO = 6, FS_EXIT_FUSE = 7,
};
/* The exit status for an error of opening an overlay or serving it. */
int fs_exit_code(int err);

/* The image options both tools take: --disk, --memory, --memory-size, --chunk-size. */
struct fs_images {
	const char *disk, *memory;
	uint64_t memory_size, chunk_size;
};
/* Take option `name` (one of the four, without dashes) with its value. 0, or HO_EINVAL after
 * logging a bad value. */
int fs_images_option(struct fs_images *im, const char *name, const char *value);
/* Check the combination (all or none: --disk plus exactly one of --memory, --memory-size) and
 * fill bases[0..1]. *out is bases, or NULL when no image was named (an existing overlay). 0 or
 * HO_EINVAL (logged). */
int fs_images_bases(const struct fs_images *im, struct overlay_base_spec *bases,
		    const struct overlay_base_spec **out);
/* Open dir's overlay (creating it over bases if new) and its tracker, as their one writer. Errors
 * are logged; the handles are the caller's. */
int fs_open_owned(const char *dir, const struct overlay_base_spec *bases, uint32_t chunk_size,
		  struct overlay **ov, struct tracker **tr);

#endif
