/*
 * mkoverlay — build and inspect overlay fixtures for the stream tests without FUSE: create an
 * overlay over base files, apply random writes the way the mount would (copy-on-write of whole
 * chunks, data durable before the tracker commits), checkpoint, and dump or hash the full images
 * (base + modified chunks) so tests can compare sender and receiver with cmp.
 *
 *   mkoverlay mkbase FILE SIZE SEED           a base image: random data with zero stretches
 *   mkoverlay create DIR DISK_BASE MEM_BASE|zero:SIZE [CHUNK]
 *   mkoverlay write DIR SEED COUNT [MAXLEN]   COUNT random writes over both images, one commit
 *   mkoverlay fill DIR disk|memory SEED       overwrite a whole image with random data
 *   mkoverlay checkpoint DIR                  close the generation; print its number
 *   mkoverlay dump DIR disk|memory OUT        the full image
 *   mkoverlay hash DIR                        sha256 of both full images, one line
 */
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "common/common.h"
#include "overlay/overlay.h"
#include "tracker/tracker.h"

static uint64_t rng_state;
static uint64_t rnd(void)
{
	/* splitmix64: deterministic per seed */
	uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static int sync_cb(void *arg) { return overlay_sync(arg); }

static int open_both(const char *dir, unsigned oflags, unsigned tflags, struct overlay **ov, struct tracker **t)
{
	uint64_t n[OVERLAY_NIMAGES];
	int rc = overlay_open(dir, NULL, 0, oflags, ov);
	if (rc)
		return rc;
	for (int i = 0; i < OVERLAY_NIMAGES; i++)
		n[i] = overlay_nchunks(*ov, i);
	if ((rc = tracker_open(dir, OVERLAY_NIMAGES, n, tflags, t)))
		overlay_close(*ov);
	return rc;
}

static int cmd_mkbase(const char *path, const char *size_s, const char *seed_s)
{
	uint64_t size;
	uint8_t buf[4096];
	FILE *f;

	if (ho_parse_size(size_s, &size))
		return 2;
	rng_state = strtoull(seed_s, NULL, 0);
	f = fopen(path, "wb");
	if (!f)
		return 1;
	for (uint64_t off = 0; off < size; off += sizeof(buf)) {
		size_t n = (size_t)HO_MIN(sizeof(buf), size - off);
		if (rnd() % 4 == 0)
			memset(buf, 0, n);
		else
			for (size_t i = 0; i < n; i += 8) {
				uint64_t r = rnd();
				memcpy(buf + i, &r, HO_MIN(8, n - i));
			}
		fwrite(buf, 1, n, f);
	}
	return fclose(f) ? 1 : 0;
}

static int cmd_create(const char *dir, const char *disk, const char *mem, const char *chunk_s)
{
	struct overlay_base_spec b[OVERLAY_NIMAGES] = { { disk, 0 }, { mem, 0 } };
	struct overlay *ov;
	struct tracker *t;
	uint64_t chunk = 0, n[OVERLAY_NIMAGES];
	int rc;

	if (!strncmp(mem, "zero:", 5)) {
		b[1].path = NULL;
		if (ho_parse_size(mem + 5, &b[1].size))
			return 2;
	}
	if (chunk_s && ho_parse_size(chunk_s, &chunk))
		return 2;
	if ((rc = overlay_open(dir, b, (uint32_t)chunk, OVERLAY_CREATE | OVERLAY_LOCK, &ov)))
		return 1;
	for (int i = 0; i < OVERLAY_NIMAGES; i++)
		n[i] = overlay_nchunks(ov, i);
	rc = tracker_open(dir, OVERLAY_NIMAGES, n, TRACKER_CREATE, &t);
	if (!rc)
		tracker_close(t);
	overlay_close(ov);
	return rc ? 1 : 0;
}

/* Write len bytes at off of image img the way the mount does: copy-on-write the chunks first. */
static int cow_write(struct overlay *ov, struct tracker *t, int img, const uint8_t *data, uint64_t len, uint64_t off)
{
	uint32_t cs = overlay_chunk_size(ov);
	uint64_t size = overlay_image_size(ov, img), first = off / cs, last = (off + len - 1) / cs;
	uint8_t *chunk = malloc(cs);
	int rc = 0;

	for (uint64_t c = first; c <= last && !rc; c++) {
		if (tracker_chunk_gen(t, img, c) > 0)
			continue;
		uint64_t coff = c * cs, clen = HO_MIN(cs, size - coff);
		if (!(rc = overlay_read_base(ov, img, chunk, clen, coff)))
			rc = overlay_write(ov, img, chunk, clen, coff);
	}
	free(chunk);
	if (!rc)
		rc = overlay_write(ov, img, data, len, off);
	if (!rc)
		tracker_mark(t, img, first, last - first + 1, ho_now_ns());
	return rc;
}

static int cmd_write(const char *dir, const char *seed_s, const char *count_s, const char *maxlen_s)
{
	struct overlay *ov;
	struct tracker *t;
	uint64_t count = strtoull(count_s, NULL, 0), maxlen = 3 * 4096;
	uint8_t *buf;
	int rc;

	rng_state = strtoull(seed_s, NULL, 0) * 7919 + 1;
	if (maxlen_s && ho_parse_size(maxlen_s, &maxlen))
		return 2;
	if ((rc = open_both(dir, OVERLAY_LOCK, 0, &ov, &t)))
		return 1;
	buf = malloc(maxlen);
	uint32_t cs = overlay_chunk_size(ov);
	for (uint64_t i = 0; i < count && !rc; i++) {
		int img = (int)(rnd() % 2);
		uint64_t size = overlay_image_size(ov, img);
		if (!size)
			continue;
		uint64_t len = 1 + rnd() % maxlen, off;
		len = HO_MIN(len, size);
		off = rnd() % (size - len + 1);
		switch (rnd() % 8) {
		case 0:              /* zeroes over whole chunks */
			off = off / cs * cs;
			len = HO_MIN(HO_MAX(len / cs, 1) * cs, size - off);
			memset(buf, 0, len);
			break;
		case 1:              /* base content put back (a chunk equal to its base) */
			off = off / cs * cs;
			len = HO_MIN(cs, size - off);
			rc = overlay_read_base(ov, img, buf, len, off);
			break;
		default:
			for (uint64_t k = 0; k < len; k++)
				buf[k] = (uint8_t)(rnd() >> 24);
			break;
		}
		if (!rc)
			rc = cow_write(ov, t, img, buf, len, off);
	}
	if (!rc)
		rc = tracker_commit(t, sync_cb, ov);
	free(buf);
	tracker_close(t);
	overlay_close(ov);
	if (rc)
		fprintf(stderr, "mkoverlay: write failed: %s\n", ho_strerror(rc));
	return rc ? 1 : 0;
}

static int cmd_fill(const char *dir, const char *img_s, const char *seed_s)
{
	struct overlay *ov;
	struct tracker *t;
	enum { PIECE = 1 << 20 };
	uint8_t *buf = malloc(PIECE);
	int img = !strcmp(img_s, "memory"), rc;

	rng_state = strtoull(seed_s, NULL, 0);
	if (!buf || (rc = open_both(dir, OVERLAY_LOCK, 0, &ov, &t)))
		return 1;
	uint64_t size = overlay_image_size(ov, img);
	uint32_t cs = overlay_chunk_size(ov);
	for (uint64_t off = 0; off < size && !rc; off += PIECE) {
		size_t n = (size_t)HO_MIN(PIECE, size - off);
		for (size_t i = 0; i < n; i += 8) {
			uint64_t r = rnd();
			memcpy(buf + i, &r, HO_MIN(8, n - i));
		}
		rc = overlay_write(ov, img, buf, n, off);
		tracker_mark(t, img, off / cs, (n + cs - 1) / cs, ho_now_ns());
	}
	if (!rc)
		rc = tracker_commit(t, sync_cb, ov);
	tracker_close(t);
	overlay_close(ov);
	free(buf);
	return rc ? 1 : 0;
}

/* Copy len bytes of the current content of image si at soff to image di at doff (what a guest
 * does when it copies data: the copy is a modified range with the same bytes elsewhere). */
static int cmd_copy(char **a)
{
	struct overlay *ov;
	struct tracker *t;
	int si = !strcmp(a[0], "memory"), di = !strcmp(a[2], "memory"), rc;
	uint64_t soff, doff, len;
	if (ho_parse_size(a[1], &soff) || ho_parse_size(a[3], &doff) || ho_parse_size(a[4], &len))
		return 2;
	uint8_t *buf = malloc(len ? len : 1);

	if (!buf || (rc = open_both(a[-1], OVERLAY_LOCK, 0, &ov, &t)))
		return 1;
	uint32_t cs = overlay_chunk_size(ov);
	rc = soff + len > overlay_image_size(ov, si) || doff + len > overlay_image_size(ov, di) ? HO_EINVAL : 0;
	for (uint64_t o = 0; o < len && !rc; ) {
		uint64_t c = (soff + o) / cs, n = HO_MIN(len - o, (c + 1) * cs - (soff + o));
		if (tracker_chunk_gen(t, si, c) > 0)
			rc = overlay_read(ov, si, buf + o, n, soff + o);
		else
			rc = overlay_read_base(ov, si, buf + o, n, soff + o);
		o += n;
	}
	if (!rc)
		rc = cow_write(ov, t, di, buf, len, doff);
	if (!rc)
		rc = tracker_commit(t, sync_cb, ov);
	tracker_close(t);
	overlay_close(ov);
	free(buf);
	if (rc)
		fprintf(stderr, "mkoverlay: copy failed: %s\n", ho_strerror(rc));
	return rc ? 1 : 0;
}

static int cmd_checkpoint(const char *dir)
{
	struct overlay *ov;
	struct tracker *t;
	uint32_t closed;
	int rc;

	if ((rc = open_both(dir, OVERLAY_LOCK, 0, &ov, &t)))
		return 1;
	rc = tracker_checkpoint(t, sync_cb, ov, &closed);
	tracker_close(t);
	overlay_close(ov);
	if (rc)
		return 1;
	printf("%u\n", closed);
	return 0;
}

struct dump { struct overlay *ov; int img; int fd; uint8_t *buf; int rc; struct ho_sha256 *sha; };

/* Stream the full image: base, with modified chunks (committed in the tracker) from the overlay. */
static int full_image(struct overlay *ov, struct tracker *t, int img, int fd, struct ho_sha256 *sha)
{
	uint32_t cs = overlay_chunk_size(ov);
	uint64_t size = overlay_image_size(ov, img), n = overlay_nchunks(ov, img);
	uint8_t *buf = malloc(cs);
	int rc = 0;

	for (uint64_t c = 0; c < n && !rc; c++) {
		uint64_t off = c * cs, len = HO_MIN(cs, size - off);
		if (tracker_chunk_gen(t, img, c) > 0)
			rc = overlay_read(ov, img, buf, len, off);
		else
			rc = overlay_read_base(ov, img, buf, len, off);
		if (!rc && fd >= 0)
			rc = ho_write_full(fd, buf, len);
		if (!rc && sha)
			ho_sha256_update(sha, buf, len);
	}
	free(buf);
	return rc;
}

static int cmd_dump(const char *dir, const char *img_s, const char *out)
{
	struct overlay *ov;
	struct tracker *t;
	int img = !strcmp(img_s, "memory"), fd, rc;

	if ((rc = open_both(dir, OVERLAY_READONLY, TRACKER_READONLY, &ov, &t)))
		return 1;
	fd = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	rc = fd < 0 ? HO_EIO : full_image(ov, t, img, fd, NULL);
	if (fd >= 0)
		close(fd);
	tracker_close(t);
	overlay_close(ov);
	return rc ? 1 : 0;
}

static int cmd_hash(const char *dir)
{
	struct overlay *ov;
	struct tracker *t;
	struct ho_sha256 *sha = ho_sha256_new();
	uint8_t d[32];
	char hex[65];
	int rc;

	if ((rc = open_both(dir, OVERLAY_READONLY, TRACKER_READONLY, &ov, &t)))
		return 1;
	for (int i = 0; i < OVERLAY_NIMAGES && !rc; i++) {
		rc = full_image(ov, t, i, -1, sha);
		ho_sha256_final(sha, d);
		ho_hex(d, 32, hex);
		printf("%s%s", i ? " " : "", hex);
	}
	printf("\n");
	ho_sha256_free(sha);
	tracker_close(t);
	overlay_close(ov);
	return rc ? 1 : 0;
}

int main(int argc, char **argv)
{
	ho_log_init("mkoverlay");
	if (argc >= 5 && !strcmp(argv[1], "mkbase"))
		return cmd_mkbase(argv[2], argv[3], argv[4]);
	if (argc >= 5 && !strcmp(argv[1], "create"))
		return cmd_create(argv[2], argv[3], argv[4], argc > 5 ? argv[5] : NULL);
	if (argc >= 5 && !strcmp(argv[1], "write"))
		return cmd_write(argv[2], argv[3], argv[4], argc > 5 ? argv[5] : NULL);
	if (argc == 5 && !strcmp(argv[1], "fill"))
		return cmd_fill(argv[2], argv[3], argv[4]);
	if (argc == 8 && !strcmp(argv[1], "copy"))
		return cmd_copy(argv + 3);
	if (argc == 3 && !strcmp(argv[1], "checkpoint"))
		return cmd_checkpoint(argv[2]);
	if (argc == 5 && !strcmp(argv[1], "dump"))
		return cmd_dump(argv[2], argv[3], argv[4]);
	if (argc == 3 && !strcmp(argv[1], "hash"))
		return cmd_hash(argv[2]);
	fprintf(stderr, "usage: mkoverlay mkbase FILE SIZE SEED | create DIR DISK MEM|zero:SIZE [CHUNK] |\n"
			"       write DIR SEED COUNT [MAXLEN] | fill DIR disk|memory SEED | checkpoint DIR |\n"
			"       dump DIR disk|memory OUT | hash DIR |\n"
			"       copy DIR disk|memory SRC_OFF disk|memory DST_OFF LEN\n");
	return 2;
}
