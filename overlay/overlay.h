/*
 * overlay.h — the on-disk overlay store: the modified chunk data of a VM's images, kept beside
 * the read-only base images they modify, plus the identity of those bases.
 *
 * OVERLAY_DIR layout (see handoff-mount(8), FILES):
 *   overlay.meta   identity: format version, chunk size, per image its size and base identity
 *                  (SHA-256 of the base content, or "zero" for an all-zero base) and the base's
 *                  stat signature (dev, ino, size, mtime, ctime) so a remount re-hashes only
 *                  when the base file may have changed. Written atomically, once.
 *   disk.data, memory.data
 *                  sparse files the size of each image; a modified chunk's data lives at the
 *                  chunk's own offset. Which chunks are modified is the tracker's business
 *                  (tracker.h): this layer only stores bytes.
 *   lock           flock()ed exclusively by the one process that owns the overlay for writing
 *                  (the mount daemon, or an offline tool); holds "PID MOUNTPOINT\n".
 *   control        the owning daemon's control socket (common/ctl.h).
 *
 * Crash-safety contract (shared with tracker.h, joined by fs/ and pipeline/): data is written
 * here first and made durable with overlay_sync(); only then may the tracker commit the chunks
 * as modified. So a committed chunk always has its data.
 *
 * Thread safety: after overlay_open(), all functions may be called concurrently (they are
 * positional I/O on fds that never change); overlay_close() must not race with them.
 */
#ifndef HANDOFF_OVERLAY_H
#define HANDOFF_OVERLAY_H

#include <stdbool.h>
#include <stdint.h>
#include <stddef.h>

enum overlay_image { OVERLAY_DISK = 0, OVERLAY_MEMORY = 1, OVERLAY_NIMAGES = 2 };

#define OVERLAY_DEFAULT_CHUNK 4096u

/* What the caller says the base of one image is. */
struct overlay_base_spec {
	const char *path;      /* base image file, or NULL for an all-zero base of `size` bytes */
	uint64_t size;         /* with path == NULL: the image size; with a path: 0 (taken from the file) */
};

/* The identity of a base image as recorded in overlay.meta and carried in streams. */
struct overlay_identity {
	uint64_t size;
	bool zero;                 /* an all-zero base (no file) */
	uint8_t digest[32];        /* SHA-256 of the base content (of `size` zeroes when zero) */
};

enum overlay_flags {
	OVERLAY_CREATE   = 1 << 0,   /* create OVERLAY_DIR and its meta if it has none yet */
	OVERLAY_LOCK     = 1 << 1,   /* take the exclusive lock (HO_EBUSY if someone holds it) */
	OVERLAY_READONLY = 1 << 2,   /* open data files read-only; no lock, no create */
};

struct overlay;

/*
 * Open (or with OVERLAY_CREATE, create) the overlay in dir.
 * bases: OVERLAY_NIMAGES specs. May be NULL with OVERLAY_READONLY or for an existing overlay
 *   whose recorded bases should be used as they are (paths are then taken from overlay.meta).
 * chunk_size: 0 = the recorded one (or OVERLAY_DEFAULT_CHUNK when creating); a power of two
 *   from 512 to 1 MiB. A different size than the recorded one gives HO_EINVAL.
 * Errors: HO_ENOENT (dir or base missing), HO_EBASE (a base's size or content differs from the
 *   recorded identity; details logged), HO_EBUSY (locked by another process), HO_ECORRUPT
 *   (unreadable meta), HO_EINVAL, HO_EIO.
 */
int overlay_open(const char *dir, const struct overlay_base_spec *bases, uint32_t chunk_size,
		 unsigned flags, struct overlay **out);
/* Close fds and release the lock. Does not sync: call overlay_sync() first if it matters. */
void overlay_close(struct overlay *ov);

const char *overlay_dir(const struct overlay *ov);
uint32_t overlay_chunk_size(const struct overlay *ov);
uint64_t overlay_image_size(const struct overlay *ov, int img);
uint64_t overlay_nchunks(const struct overlay *ov, int img);
const struct overlay_identity *overlay_base_identity(const struct overlay *ov, int img);
/* Recorded path of the base file of img (NULL for an all-zero base). */
const char *overlay_base_path(const struct overlay *ov, int img);
/* "disk" / "memory". */
const char *overlay_image_name(int img);

/* Read len bytes of the BASE image at off (zeroes for an all-zero base). 0 or negative. */
int overlay_read_base(struct overlay *ov, int img, void *buf, size_t len, uint64_t off);
/* Read / write len bytes of the OVERLAY data at off (the caller knows those chunks are modified). */
int overlay_read(struct overlay *ov, int img, void *buf, size_t len, uint64_t off);
int overlay_write(struct overlay *ov, int img, const void *buf, size_t len, uint64_t off);
/* Make [off, off+len) of the overlay data read as zeroes, freeing space where possible. */
int overlay_zero(struct overlay *ov, int img, uint64_t off, uint64_t len);
/* Make every overlay write so far durable (fdatasync of the data files). */
int overlay_sync(struct overlay *ov);
/* Underlying fds, for readers that want positional I/O of their own (-1 for a zero base). */
int overlay_base_fd(const struct overlay *ov, int img);
int overlay_data_fd(const struct overlay *ov, int img);

/* Lock holder information, readable without opening: pid and mountpoint of the process that holds
 * dir's lock. HO_ENOENT if nobody holds it. mountpoint gets "" if the holder is not a mount. */
int overlay_lock_holder(const char *dir, int *pid, char *mountpoint, size_t mp_len);
/* True if a handoff mount of dir (a FUSE mount whose fsname is "handoff:" + realpath(dir), as
 * fs/ mounts it) appears in /proc/self/mountinfo. */
bool overlay_is_mounted(const char *dir);
/* Wait up to timeout_ms for the holder of dir's lock to let go when it is on its way out: it names
 * no mountpoint any more, or its mount is gone (unmounted by fusermount3 -u, still committing).
 * Returns at once when nobody holds the lock or the holder still serves a mount. Every tool that
 * opens an overlay right after an unmount calls this first. */
void overlay_wait_released(const char *dir, int timeout_ms);
/* Record the mountpoint in the lock file (the mount daemon, after mounting). */
int overlay_set_mountpoint(struct overlay *ov, const char *mountpoint);

#endif
