/*
 * test_fs_digest.c — the mount daemon's image digest (fs/digest.h), against real overlays: it
 * equals the definition computed over the whole image as read through the mount (a sparse base
 * with holes, a partial last chunk), two overlays that hold different chunk sets but the same
 * image agree (a chunk modified back to its base content counts as the base's), one changed byte
 * or a lost chunk changes it, and prepared (background) base sums give the same answer.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "common/common.h"
#include "overlay/overlay.h"
#include "fs/digest.h"
#include "tests/unit/tap.h"

#define CS 4096u
#define NCH 300u                  /* chunks of the memory image; the disk image ends mid-chunk */
#define DISK_SIZE (NCH * CS - 1000)

#define BAIL_OUT(...) do { printf("Bail out! " __VA_ARGS__); printf("\n"); exit(2); } while (0)

static char dir[256];
static uint8_t *image[2];          /* the image as read through the mount, per image */
static bool mod[2][NCH];           /* the chunks the overlay under test holds */

static bool is_mod(void *arg, int img, uint64_t c)
{
	bool (*m)[NCH] = arg;
	return m[img][c];
}

static uint64_t img_size(int img) { return img == OVERLAY_DISK ? DISK_SIZE : (uint64_t)NCH * CS; }

/* the definition in fs/digest.h, over the whole image */
static void reference(int img, uint8_t out[16])
{
	uint64_t size = img_size(img), n = (size + CS - 1) / CS;
	uint8_t *words = malloc(8 * n), tail[8];
	for (uint64_t c = 0; c < n; c++)
		ho_put_le64(words + 8 * c, ho_xxh64(image[img] + c * CS, (size_t)HO_MIN((uint64_t)CS, size - c * CS)));
	ho_xxh128(words, 8 * n, out);
	ho_put_le64(tail, size);
	for (int i = 0; i < 8; i++)
		out[i] ^= tail[i];
	free(words);
}

/* base: random data at chunks 0..49 and 200..219, holes elsewhere (a sparse file) */
static void write_base(const char *path, int img, uint8_t *copy)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	if (fd < 0 || ftruncate(fd, (off_t)img_size(img)) != 0)
		BAIL_OUT("cannot create base");
	memset(copy, 0, img_size(img));
	for (unsigned c = 0; c < NCH; c++) {
		if (!(c < 50 || (c >= 200 && c < 220)))
			continue;
		uint8_t b[CS];
		ho_random(b, CS);
		size_t len = (size_t)HO_MIN((uint64_t)CS, img_size(img) - (uint64_t)c * CS);
		if (pwrite(fd, b, len, (off_t)c * CS) != (ssize_t)len)
			BAIL_OUT("cannot write base");
		memcpy(copy + (size_t)c * CS, b, len);
	}
	close(fd);
}

static struct overlay *open_overlay(const char *name, const char *b0, const char *b1)
{
	char ovl[300];
	struct overlay *ov;
	struct overlay_base_spec b[2] = { { b0, 0 }, { b1, 0 } };
	snprintf(ovl, sizeof(ovl), "%s/%s", dir, name);
	if (overlay_open(ovl, b, CS, OVERLAY_CREATE | OVERLAY_LOCK, &ov))
		BAIL_OUT("cannot create overlay %s", name);
	return ov;
}

/* modify chunk c of img in ov (and in image[]) to data */
static void put(struct overlay *ov, bool (*m)[NCH], int img, unsigned c, const uint8_t *data)
{
	size_t len = (size_t)HO_MIN((uint64_t)CS, img_size(img) - (uint64_t)c * CS);
	if (overlay_write(ov, img, data, len, (uint64_t)c * CS))
		BAIL_OUT("overlay_write");
	m[img][c] = true;
}

static bool digest_eq(struct fs_digest *d, bool (*m)[NCH], int img, const uint8_t want[16])
{
	uint8_t got[16];
	return fs_digest_image(d, img, is_mod, m, got) == 0 && memcmp(got, want, 16) == 0;
}

int main(void)
{
	char b0[300], b1[300];
	uint8_t ref[2][16], buf[CS];
	static bool mod2[2][NCH];

	snprintf(dir, sizeof(dir), "/tmp/test_fs_digest.XXXXXX");
	if (!mkdtemp(dir))
		BAIL_OUT("mkdtemp");
	snprintf(b0, sizeof(b0), "%s/base-disk", dir);
	snprintf(b1, sizeof(b1), "%s/base-memory", dir);
	for (int img = 0; img < 2; img++)
		if (!(image[img] = malloc(img_size(img))))
			BAIL_OUT("malloc");
	write_base(b0, OVERLAY_DISK, image[OVERLAY_DISK]);
	write_base(b1, OVERLAY_MEMORY, image[OVERLAY_MEMORY]);

	/* side A: random chunks (in data and in holes), a zero chunk over data, the partial last
	 * chunk of the disk, and chunk 7 modified back to its base content */
	struct overlay *a = open_overlay("a", b0, b1);
	struct fs_digest *da, *db;
	if (fs_digest_new(a, &da))
		BAIL_OUT("fs_digest_new");
	for (int img = 0; img < 2; img++) {
		static const unsigned rnd[] = { 3, 4, 5, 60, 61, 150, 210, NCH - 1 };
		for (size_t k = 0; k < HO_ARRAY_SIZE(rnd); k++) {
			ho_random(buf, CS);
			put(a, mod, img, rnd[k], buf);
			memcpy(image[img] + (size_t)rnd[k] * CS, buf, (size_t)HO_MIN((uint64_t)CS, img_size(img) - (uint64_t)rnd[k] * CS));
		}
		memset(buf, 0, CS);
		put(a, mod, img, 20, buf);
		memset(image[img] + 20 * CS, 0, CS);
		put(a, mod, img, 7, image[img] + 7 * CS);
		reference(img, ref[img]);
	}
	ok(digest_eq(da, mod, OVERLAY_MEMORY, ref[OVERLAY_MEMORY]), "memory digest equals the definition over the whole image");
	ok(digest_eq(da, mod, OVERLAY_DISK, ref[OVERLAY_DISK]), "disk digest (partial last chunk, sparse base) equals the definition");

	/* side B: the same images, another chunk set: no revert held, chunk 30 held with its base
	 * content, the same modified data */
	struct overlay *b = open_overlay("b", b0, b1);
	if (fs_digest_new(b, &db))
		BAIL_OUT("fs_digest_new");
	fs_digest_prepare(db, 1u << OVERLAY_MEMORY | 1u << OVERLAY_DISK);
	for (int img = 0; img < 2; img++)
		for (unsigned c = 0; c < NCH; c++)
			if ((mod[img][c] && c != 7) || c == 30)
				put(b, mod2, img, c, image[img] + (size_t)c * CS);
	ok(digest_eq(db, mod2, OVERLAY_MEMORY, ref[OVERLAY_MEMORY]), "another chunk set, same memory image: same digest (prepared sums)");
	ok(digest_eq(db, mod2, OVERLAY_DISK, ref[OVERLAY_DISK]), "another chunk set, same disk image: same digest");

	/* one changed byte in one chunk of B */
	uint8_t save = image[OVERLAY_MEMORY][61 * CS + 17];
	memcpy(buf, image[OVERLAY_MEMORY] + 61 * CS, CS);
	buf[17] ^= 0x40;
	put(b, mod2, OVERLAY_MEMORY, 61, buf);
	ok(!digest_eq(db, mod2, OVERLAY_MEMORY, ref[OVERLAY_MEMORY]), "one changed byte: the digest differs");
	image[OVERLAY_MEMORY][61 * CS + 17] ^= 0x40;
	uint8_t changed[16];
	reference(OVERLAY_MEMORY, changed);
	ok(digest_eq(db, mod2, OVERLAY_MEMORY, changed), "... and equals the definition over the changed image");
	image[OVERLAY_MEMORY][61 * CS + 17] = save;
	put(b, mod2, OVERLAY_MEMORY, 61, image[OVERLAY_MEMORY] + 61 * CS);
	ok(digest_eq(db, mod2, OVERLAY_MEMORY, ref[OVERLAY_MEMORY]), "changed back: equal again");

	/* a lost chunk: B forgets it holds chunk 150 (reads the base there) */
	mod2[OVERLAY_MEMORY][150] = false;
	ok(!digest_eq(db, mod2, OVERLAY_MEMORY, ref[OVERLAY_MEMORY]), "a lost chunk (base read instead): the digest differs");
	mod2[OVERLAY_MEMORY][150] = true;
	/* a chunk that went to the wrong place (the zero chunk as 21 instead of 20) */
	mod2[OVERLAY_MEMORY][20] = false;
	memset(buf, 0, CS);
	put(b, mod2, OVERLAY_MEMORY, 21, buf);
	ok(!digest_eq(db, mod2, OVERLAY_MEMORY, ref[OVERLAY_MEMORY]), "a chunk in the wrong place: the digest differs");

	/* an image size counts: the definition folds it in */
	uint8_t dm[16], dd[16];
	ok(fs_digest_image(da, OVERLAY_MEMORY, is_mod, mod, dm) == 0 && fs_digest_image(da, OVERLAY_DISK, is_mod, mod, dd) == 0 &&
	   memcmp(dm, dd, 16) != 0, "disk and memory digests differ");
	ok(fs_digest_image(da, 5, is_mod, mod, dm) == HO_EINVAL, "an image out of range: HO_EINVAL");

	/* prepare on a digest that is being freed: free joins the thread, nothing leaks or hangs */
	struct fs_digest *dc;
	if (fs_digest_new(a, &dc))
		BAIL_OUT("fs_digest_new");
	fs_digest_prepare(dc, 3);
	fs_digest_prepare(dc, 3);
	fs_digest_free(dc);
	ok(1, "prepare twice then free: returns");

	fs_digest_free(da);
	fs_digest_free(db);
	overlay_close(a);
	overlay_close(b);
	free(image[0]);
	free(image[1]);
	char cmd[300];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	if (system(cmd) != 0)
		diag("cannot remove %s", dir);
	return done_testing();
}
