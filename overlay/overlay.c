/*
 * overlay.c — the overlay store of overlay.h: base identities recorded once in overlay.meta,
 * modified chunk data in one sparse file per image at the chunk's own offset, and an OFD lock
 * that makes one process the owner. Sparse files keep the read path a plain pread and let the
 * filesystem, not us, allocate; holes read as zeroes.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include "common/common.h"
#include "overlay/overlay.h"

#define META_NAME "overlay.meta"
#define META_MAGIC "handoff-overlay 1"

struct statsig { uint64_t dev, ino, size, mtime_ns, ctime_ns; };

struct image {
	struct overlay_identity id;
	char *base_path;             /* NULL for a zero base */
	struct statsig sig;          /* recorded stat signature of the base */
	int base_fd;                 /* -1 for a zero base */
	int data_fd;
	uint64_t nchunks;
};

struct overlay {
	char *dir;
	uint32_t chunk_size;
	unsigned flags;
	int lock_fd;                 /* -1 unless OVERLAY_LOCK */
	struct image img[OVERLAY_NIMAGES];
};

static const char *const image_names[OVERLAY_NIMAGES] = { "disk", "memory" };

const char *overlay_image_name(int img)
{
	return (img >= 0 && img < OVERLAY_NIMAGES) ? image_names[img] : "?";
}

static void sig_of(const struct stat *st, struct statsig *s)
{
	s->dev = st->st_dev;
	s->ino = st->st_ino;
	s->size = (uint64_t)st->st_size;
	s->mtime_ns = (uint64_t)st->st_mtim.tv_sec * 1000000000ull + (uint64_t)st->st_mtim.tv_nsec;
	s->ctime_ns = (uint64_t)st->st_ctim.tv_sec * 1000000000ull + (uint64_t)st->st_ctim.tv_nsec;
}

/* A base changed within its file system's timestamp granularity of the moment its signature was
 * taken can keep its mtime and ctime (t3020 once mounted over a base changed in place 0 s after
 * the overlay was made over it): as git does with racy index entries, a signature taken that
 * close to the file's last change is written as one no stat matches, so the next attach hashes
 * the content again (and writes a settled signature). */
#define RACY_NS 2000000000ull

static uint64_t sig_mtime_to_write(const struct statsig *s)
{
	struct timespec now;
	uint64_t n;

	if (clock_gettime(CLOCK_REALTIME, &now) < 0)
		return UINT64_MAX;
	n = (uint64_t)now.tv_sec * 1000000000ull + (uint64_t)now.tv_nsec;
	return s->mtime_ns + RACY_NS > n || s->ctime_ns + RACY_NS > n ? UINT64_MAX : s->mtime_ns;
}

/* ---- meta file ----------------------------------------------------------------------------- */

static int meta_write(struct overlay *ov)
{
	char *buf = NULL, *path;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);
	int rc;

	if (!f)
		return HO_ENOMEM;
	fprintf(f, "%s\nchunk_size %" PRIu32 "\n", META_MAGIC, ov->chunk_size);
	for (int i = 0; i < OVERLAY_NIMAGES; i++) {
		struct image *im = &ov->img[i];
		char hex[65];
		ho_hex(im->id.digest, 32, hex);
		fprintf(f, "%s.size %" PRIu64 "\n%s.zero %d\n%s.digest %s\n", image_names[i], im->id.size,
			image_names[i], im->id.zero, image_names[i], hex);
		if (!im->id.zero)
			fprintf(f, "%s.stat %" PRIu64 " %" PRIu64 " %" PRIu64 " %" PRIu64 " %" PRIu64 "\n"
				"%s.path %s\n", image_names[i], im->sig.dev, im->sig.ino, im->sig.size,
				sig_mtime_to_write(&im->sig), im->sig.ctime_ns, image_names[i], im->base_path);
	}
	fclose(f);
	path = ho_path_join(ov->dir, META_NAME);
	/* the meta's mtime is the overlay's creation time, the stable mtime the mount reports
	 * (fs.c): a rewrite (a base's new signature) keeps it */
	struct stat old;
	bool had = path && stat(path, &old) == 0;
	rc = path ? ho_write_file_atomic(path, buf, len) : HO_ENOMEM;
	if (!rc && had) {
		struct timespec ts[2] = { old.st_atim, old.st_mtim };
		if (utimensat(AT_FDCWD, path, ts, 0) < 0)
			ho_warn("cannot keep the mtime of '%s': %s", path, strerror(errno));
	}
	free(path);
	free(buf);
	return rc;
}

static int meta_read(struct overlay *ov, const char *path)
{
	char *buf, *line, *save = NULL;
	int rc, seen = 0;

	rc = ho_read_file(path, &buf, NULL, 1 << 20);
	if (rc)
		return rc;
	line = strtok_r(buf, "\n", &save);
	if (!line || strcmp(line, META_MAGIC) != 0) {
		ho_err("'%s' is not a handoff overlay meta file", path);
		free(buf);
		return HO_ECORRUPT;
	}
	while ((line = strtok_r(NULL, "\n", &save))) {
		char *val = strchr(line, ' ');
		if (!val)
			goto bad;
		*val++ = 0;
		if (strcmp(line, "chunk_size") == 0) {
			ov->chunk_size = (uint32_t)strtoul(val, NULL, 10);
			seen |= 1;
			continue;
		}
		char *dot = strchr(line, '.');
		int i;
		if (!dot)
			goto bad;
		*dot++ = 0;
		for (i = 0; i < OVERLAY_NIMAGES && strcmp(line, image_names[i]); i++)
			;
		if (i == OVERLAY_NIMAGES)
			goto bad;
		struct image *im = &ov->img[i];
		if (strcmp(dot, "size") == 0) {
			im->id.size = strtoull(val, NULL, 10);
			seen |= 2 << i;
		} else if (strcmp(dot, "zero") == 0) {
			im->id.zero = atoi(val) != 0;
		} else if (strcmp(dot, "digest") == 0) {
			if (ho_unhex(val, im->id.digest, 32))
				goto bad;
		} else if (strcmp(dot, "stat") == 0) {
			if (sscanf(val, "%" SCNu64 " %" SCNu64 " %" SCNu64 " %" SCNu64 " %" SCNu64, &im->sig.dev,
				   &im->sig.ino, &im->sig.size, &im->sig.mtime_ns, &im->sig.ctime_ns) != 5)
				goto bad;
		} else if (strcmp(dot, "path") == 0) {
			free(im->base_path);
			im->base_path = strdup(val);
		}
	}
	free(buf);
	if (seen != 7 || ov->chunk_size < 512 || ov->chunk_size > (1u << 20) ||
	    (ov->chunk_size & (ov->chunk_size - 1))) {
		ho_err("overlay meta '%s' is incomplete", path);
		return HO_ECORRUPT;
	}
	for (int i = 0; i < OVERLAY_NIMAGES; i++)
		if (!ov->img[i].id.zero && !ov->img[i].base_path) {
			ho_err("overlay meta '%s' lacks the %s base path", path, image_names[i]);
			return HO_ECORRUPT;
		}
	return 0;
bad:
	free(buf);
	ho_err("overlay meta '%s' is corrupt", path);
	return HO_ECORRUPT;
}

/* ---- bases --------------------------------------------------------------------------------- */

/* Open the base of image i at path, check it against the recorded identity (re-hashing only if
 * its stat signature changed); *sig_changed tells the caller to rewrite the meta. */
static int base_attach(struct overlay *ov, int i, const char *path, bool *sig_changed)
{
	struct image *im = &ov->img[i];
	struct stat st;
	struct statsig sig;
	uint8_t digest[32];
	int rc;

	im->base_fd = open(path, O_RDONLY | O_CLOEXEC);
	if (im->base_fd < 0 || fstat(im->base_fd, &st) < 0) {
		rc = ho_from_errno(errno);
		ho_err("cannot open %s base '%s': %s", image_names[i], path, strerror(errno));
		return rc;
	}
	if (!S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode)) {
		ho_err("%s base '%s' is not a regular file", image_names[i], path);
		return HO_EINVAL;
	}
	if ((uint64_t)st.st_size != im->id.size) {
		ho_err("%s base '%s' has size %lld, the overlay was created over %" PRIu64 " bytes",
		       image_names[i], path, (long long)st.st_size, im->id.size);
		return HO_EBASE;
	}
	sig_of(&st, &sig);
	if (memcmp(&sig, &im->sig, sizeof(sig)) == 0)
		return 0;
	ho_info("%s base '%s' changed on disk since last use; verifying its content", image_names[i], path);
	rc = ho_sha256_file(path, 0, digest);
	if (rc) {
		ho_err("cannot read %s base '%s': %s", image_names[i], path, ho_strerror(rc));
		return rc;
	}
	if (memcmp(digest, im->id.digest, 32) != 0) {
		ho_err("%s base '%s' differs from the base the overlay was created over", image_names[i], path);
		return HO_EBASE;
	}
	im->sig = sig;
	*sig_changed = true;
	return 0;
}

static int identity_create(struct overlay *ov, int i, const struct overlay_base_spec *spec)
{
	struct image *im = &ov->img[i];
	struct stat st;
	char real[PATH_MAX];
	int rc;

	if (!spec->path) {
		if (spec->size == 0) {
			ho_err("%s image needs a base or a size", image_names[i]);
			return HO_EINVAL;
		}
		im->id.zero = true;
		im->id.size = spec->size;
		return ho_sha256_file(NULL, spec->size, im->id.digest);
	}
	if (!realpath(spec->path, real) || stat(real, &st) < 0) {
		ho_err("cannot open %s base '%s': %s", image_names[i], spec->path, strerror(errno));
		return ho_from_errno(errno);
	}
	if (!S_ISREG(st.st_mode)) {
		ho_err("%s base '%s' is not a regular file", image_names[i], spec->path);
		return HO_EINVAL;
	}
	if (st.st_size == 0) {
		ho_err("%s base '%s' is empty", image_names[i], spec->path);
		return HO_EINVAL;
	}
	im->id.size = (uint64_t)st.st_size;
	im->base_path = strdup(real);
	sig_of(&st, &im->sig);
	ho_info("hashing %s base '%s'", image_names[i], real);
	rc = ho_sha256_file(real, 0, im->id.digest);
	if (rc)
		ho_err("cannot read %s base '%s': %s", image_names[i], real, ho_strerror(rc));
	return rc;
}

/* ---- lock ---------------------------------------------------------------------------------- */

static int lock_take(struct overlay *ov)
{
	char *path = ho_path_join(ov->dir, "lock");
	struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET };
	int fd;

	if (!path)
		return HO_ENOMEM;
	fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
	free(path);
	if (fd < 0)
		return ho_from_errno(errno);
	if (fcntl(fd, F_OFD_SETLK, &fl) < 0) {
		int e = errno;
		close(fd);
		return (e == EAGAIN || e == EACCES) ? HO_EBUSY : ho_from_errno(e);
	}
	ov->lock_fd = fd;
	return overlay_set_mountpoint(ov, "");
}

int overlay_set_mountpoint(struct overlay *ov, const char *mountpoint)
{
	char line[PATH_MAX + 32];
	int n;

	if (ov->lock_fd < 0)
		return HO_ESTATE;
	n = snprintf(line, sizeof(line), "%d %s\n", (int)getpid(), mountpoint);
	if (ftruncate(ov->lock_fd, 0) < 0)
		return ho_from_errno(errno);
	return ho_pwrite_full(ov->lock_fd, line, (size_t)n, 0);
}

int overlay_lock_holder(const char *dir, int *pid, char *mountpoint, size_t mp_len)
{
	char *path = ho_path_join(dir, "lock");
	struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET };
	char line[PATH_MAX + 32];
	ssize_t n;
	int fd;

	if (!path)
		return HO_ENOMEM;
	fd = open(path, O_RDONLY | O_CLOEXEC);
	free(path);
	if (fd < 0)
		return errno == ENOENT ? HO_ENOENT : ho_from_errno(errno);
	if (fcntl(fd, F_OFD_GETLK, &fl) < 0 || fl.l_type == F_UNLCK) {
		close(fd);
		return HO_ENOENT;
	}
	n = ho_pread_full(fd, line, sizeof(line) - 1, 0);
	close(fd);
	if (n < 0)
		return (int)n;
	line[n] = 0;
	char *nl = strchr(line, '\n'), *sp = strchr(line, ' ');
	if (nl)
		*nl = 0;
	if (pid)
		*pid = atoi(line);
	if (mountpoint && mp_len)
		snprintf(mountpoint, mp_len, "%s", sp ? sp + 1 : "");
	return 0;
}

/* ---- open / close -------------------------------------------------------------------------- */

static int data_open(struct overlay *ov, int i, bool create)
{
	char name[32];
	char *path;
	struct stat st;
	int ro = ov->flags & OVERLAY_READONLY;

	snprintf(name, sizeof(name), "%s.data", image_names[i]);
	path = ho_path_join(ov->dir, name);
	if (!path)
		return HO_ENOMEM;
	ov->img[i].data_fd = open(path, (ro ? O_RDONLY : O_RDWR | (create ? O_CREAT : 0)) | O_CLOEXEC, 0600);
	if (ov->img[i].data_fd < 0) {
		int rc = ho_from_errno(errno);
		ho_err("cannot open overlay data '%s': %s", path, strerror(errno));
		free(path);
		return rc;
	}
	free(path);
	if (fstat(ov->img[i].data_fd, &st) < 0)
		return ho_from_errno(errno);
	if ((uint64_t)st.st_size != ov->img[i].id.size) {
		if (ro || (uint64_t)st.st_size > ov->img[i].id.size) {
			ho_err("overlay data of %s has the wrong size", image_names[i]);
			return HO_ECORRUPT;
		}
		if (ftruncate(ov->img[i].data_fd, (off_t)ov->img[i].id.size) < 0)
			return ho_from_errno(errno);
	}
	return 0;
}

int overlay_open(const char *dir, const struct overlay_base_spec *bases, uint32_t chunk_size,
		 unsigned flags, struct overlay **out)
{
	struct overlay *ov;
	struct stat st;
	char *meta = NULL;
	bool creating = false, sig_changed = false;
	int rc;

	if (chunk_size && (chunk_size < 512 || chunk_size > (1u << 20) || (chunk_size & (chunk_size - 1)))) {
		ho_err("chunk size %u is not a power of two from 512 to 1M", chunk_size);
		return HO_EINVAL;
	}
	if (flags & OVERLAY_READONLY)
		flags &= ~(unsigned)(OVERLAY_CREATE | OVERLAY_LOCK);
	ov = calloc(1, sizeof(*ov));
	if (!ov)
		return HO_ENOMEM;
	ov->flags = flags;
	ov->lock_fd = -1;
	for (int i = 0; i < OVERLAY_NIMAGES; i++)
		ov->img[i].base_fd = ov->img[i].data_fd = -1;

	if (stat(dir, &st) < 0) {
		if (errno != ENOENT || !(flags & OVERLAY_CREATE)) {
			ho_err("cannot open overlay '%s': %s", dir, strerror(errno));
			rc = ho_from_errno(errno);
			goto fail;
		}
		rc = ho_mkdir_p(dir, 0700);
		if (rc) {
			ho_err("cannot create overlay '%s': %s", dir, ho_strerror(rc));
			goto fail;
		}
	} else if (!S_ISDIR(st.st_mode)) {
		ho_err("overlay '%s' is not a directory", dir);
		rc = HO_EINVAL;
		goto fail;
	}
	ov->dir = realpath(dir, NULL);
	meta = ov->dir ? ho_path_join(ov->dir, META_NAME) : NULL;
	if (!meta) {
		rc = HO_ENOMEM;
		goto fail;
	}
	if (flags & OVERLAY_LOCK) {
		rc = lock_take(ov);
		if (rc == HO_EBUSY) {
			int pid = 0;
			char mp[PATH_MAX];
			if (overlay_lock_holder(ov->dir, &pid, mp, sizeof(mp)) == 0 && mp[0])
				ho_err("overlay '%s' is in use: mounted on '%s' by process %d", dir, mp, pid);
			else
				ho_err("overlay '%s' is in use by process %d", dir, pid);
		}
		if (rc)
			goto fail;
	}

	if (access(meta, F_OK) < 0) {
		if (!(flags & OVERLAY_CREATE)) {
			ho_err("'%s' is not a handoff overlay (no %s)", dir, META_NAME);
			rc = HO_ENOENT;
			goto fail;
		}
		if (!bases) {
			ho_err("creating overlay '%s' needs base images", dir);
			rc = HO_EINVAL;
			goto fail;
		}
		ov->chunk_size = chunk_size ? chunk_size : OVERLAY_DEFAULT_CHUNK;
		for (int i = 0; i < OVERLAY_NIMAGES; i++)
			if ((rc = identity_create(ov, i, &bases[i])))
				goto fail;
		creating = true;
	} else {
		if ((rc = meta_read(ov, meta)))
			goto fail;
		if (chunk_size && chunk_size != ov->chunk_size) {
			ho_err("overlay '%s' uses chunk size %u, not %u", dir, ov->chunk_size, chunk_size);
			rc = HO_EINVAL;
			goto fail;
		}
		for (int i = 0; i < OVERLAY_NIMAGES; i++) {
			struct image *im = &ov->img[i];
			const struct overlay_base_spec *sp = bases ? &bases[i] : NULL;
			if (sp && !sp->path != im->id.zero) {
				ho_err("%s: the overlay was created over %s, not %s", image_names[i],
				       im->id.zero ? "an all-zero base" : "a base file",
				       sp->path ? "a base file" : "an all-zero base");
				rc = HO_EBASE;
				goto fail;
			}
			if (im->id.zero) {
				if (sp && sp->size && sp->size != im->id.size) {
					ho_err("%s: the overlay was created with size %" PRIu64 ", not %" PRIu64,
					       image_names[i], im->id.size, sp->size);
					rc = HO_EBASE;
					goto fail;
				}
				continue;
			}
			if (sp) {
				char real[PATH_MAX];
				if (!realpath(sp->path, real)) {
					ho_err("cannot open %s base '%s': %s", image_names[i], sp->path, strerror(errno));
					rc = ho_from_errno(errno);
					goto fail;
				}
				if (strcmp(real, im->base_path)) {
					free(im->base_path);
					im->base_path = strdup(real);
					memset(&im->sig, 0, sizeof(im->sig));   /* a new path: verify content */
				}
			}
			if ((rc = base_attach(ov, i, im->base_path, &sig_changed)))
				goto fail;
		}
	}
	for (int i = 0; i < OVERLAY_NIMAGES; i++) {
		struct image *im = &ov->img[i];
		im->nchunks = (im->id.size + ov->chunk_size - 1) / ov->chunk_size;
		if (creating && !im->id.zero && (rc = base_attach(ov, i, im->base_path, &sig_changed)))
			goto fail;
		if ((rc = data_open(ov, i, creating)))
			goto fail;
	}
	if ((creating || sig_changed) && !(flags & OVERLAY_READONLY)) {
		for (int i = 0; creating && i < OVERLAY_NIMAGES; i++)
			if (ov->img[i].data_fd >= 0 && fsync(ov->img[i].data_fd) < 0) {
				rc = ho_from_errno(errno);
				goto fail;
			}
		if ((rc = meta_write(ov)))
			goto fail;
	}
	free(meta);
	*out = ov;
	return 0;
fail:
	free(meta);
	overlay_close(ov);
	return rc;
}

void overlay_close(struct overlay *ov)
{
	if (!ov)
		return;
	for (int i = 0; i < OVERLAY_NIMAGES; i++) {
		if (ov->img[i].base_fd >= 0)
			close(ov->img[i].base_fd);
		if (ov->img[i].data_fd >= 0)
			close(ov->img[i].data_fd);
		free(ov->img[i].base_path);
	}
	if (ov->lock_fd >= 0)
		close(ov->lock_fd);
	free(ov->dir);
	free(ov);
}

/* ---- accessors and I/O --------------------------------------------------------------------- */

const char *overlay_dir(const struct overlay *ov) { return ov->dir; }
uint32_t overlay_chunk_size(const struct overlay *ov) { return ov->chunk_size; }
uint64_t overlay_image_size(const struct overlay *ov, int img) { return ov->img[img].id.size; }
uint64_t overlay_nchunks(const struct overlay *ov, int img) { return ov->img[img].nchunks; }
const struct overlay_identity *overlay_base_identity(const struct overlay *ov, int img) { return &ov->img[img].id; }
const char *overlay_base_path(const struct overlay *ov, int img) { return ov->img[img].base_path; }
int overlay_base_fd(const struct overlay *ov, int img) { return ov->img[img].base_fd; }
int overlay_data_fd(const struct overlay *ov, int img) { return ov->img[img].data_fd; }

static int check_range(const struct overlay *ov, int img, uint64_t len, uint64_t off)
{
	if (img < 0 || img >= OVERLAY_NIMAGES || off > ov->img[img].id.size || len > ov->img[img].id.size - off)
		return HO_EINVAL;
	return 0;
}

int overlay_read_base(struct overlay *ov, int img, void *buf, size_t len, uint64_t off)
{
	ssize_t n;
	if (check_range(ov, img, len, off))
		return HO_EINVAL;
	if (ov->img[img].base_fd < 0) {
		memset(buf, 0, len);
		return 0;
	}
	n = ho_pread_full(ov->img[img].base_fd, buf, len, off);
	if (n < 0)
		return (int)n;
	if ((size_t)n < len)
		return HO_ETRUNC;   /* base shrank under us */
	return 0;
}

int overlay_read(struct overlay *ov, int img, void *buf, size_t len, uint64_t off)
{
	ssize_t n;
	if (check_range(ov, img, len, off))
		return HO_EINVAL;
	n = ho_pread_full(ov->img[img].data_fd, buf, len, off);
	if (n < 0)
		return (int)n;
	if ((size_t)n < len)
		memset((char *)buf + n, 0, len - (size_t)n);
	return 0;
}

int overlay_write(struct overlay *ov, int img, const void *buf, size_t len, uint64_t off)
{
	if (check_range(ov, img, len, off))
		return HO_EINVAL;
	if (ov->flags & OVERLAY_READONLY)
		return HO_EPERM;
	return ho_pwrite_full(ov->img[img].data_fd, buf, len, off);
}

int overlay_zero(struct overlay *ov, int img, uint64_t off, uint64_t len)
{
	if (check_range(ov, img, len, off))
		return HO_EINVAL;
	if (ov->flags & OVERLAY_READONLY)
		return HO_EPERM;
	if (len == 0)
		return 0;
	if (fallocate(ov->img[img].data_fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)off, (off_t)len) == 0)
		return 0;
	/* filesystems without hole punching: write zeroes */
	static const uint8_t zeroes[65536];
	while (len) {
		size_t n = len < sizeof(zeroes) ? (size_t)len : sizeof(zeroes);
		int rc = ho_pwrite_full(ov->img[img].data_fd, zeroes, n, off);
		if (rc)
			return rc;
		off += n;
		len -= n;
	}
	return 0;
}

int overlay_sync(struct overlay *ov)
{
	for (int i = 0; i < OVERLAY_NIMAGES; i++)
		if (ov->img[i].data_fd >= 0 && fdatasync(ov->img[i].data_fd) < 0) {
			int e = errno;
			ho_err("cannot sync overlay data of %s: %s", image_names[i], strerror(e));
			return ho_from_errno(e);
		}
	return 0;
}

/* ---- is someone serving it? ---------------------------------------------------------------- */

bool overlay_is_mounted(const char *overlay_dir)
{
	char *dir = realpath(overlay_dir, NULL), line[8192];
	FILE *f = fopen("/proc/self/mountinfo", "re");
	bool found = false;

	while (dir && f && !found && fgets(line, sizeof(line), f)) {
		/* ... - FSTYPE SOURCE OPTIONS */
		char *sep = strstr(line, " - "), *type, *src, *save = NULL;
		if (!sep || !(type = strtok_r(sep + 3, " ", &save)) || !(src = strtok_r(NULL, " ", &save)))
			continue;
		ho_unescape_mountinfo(src);
		found = strncmp(type, "fuse", 4) == 0 && strncmp(src, "handoff:", 8) == 0 && strcmp(src + 8, dir) == 0;
	}
	if (f)
		fclose(f);
	free(dir);
	return found;
}

void overlay_wait_released(const char *overlay_dir, int timeout_ms)
{
	char mp[4096];
	int pid;
	for (int waited = 0; waited < timeout_ms; waited += 50) {
		if (overlay_lock_holder(overlay_dir, &pid, mp, sizeof(mp)) != 0)
			return;                                  /* free */
		if (mp[0] && overlay_is_mounted(overlay_dir))
			return;                                  /* serving: overlay_open() will say so */
		usleep(50000);
	}
}
