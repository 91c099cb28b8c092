/*
 * test_dedup.c — the base index (fingerprints of every non-zero aligned chunk, anchors, holes
 * skipped on a 4 GiB sparse image, the on-disk cache: written, reused, rejected when corrupt or
 * for another base) and the sent set (lookup order by seq, invalidation when a location is
 * re-sent, persistence, many entries).
 */
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "common/common.h"
#include "overlay/overlay.h"
#include "pipeline/dedup.h"
#include "tests/unit/tap.h"

#define CS 4096u

static uint64_t rs = 7;
static uint64_t rnd(void)
{
	uint64_t z = (rs += 0x9E3779B97F4A7C15ull);
	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
	return z ^ (z >> 31);
}

int main(void)
{
	char dir[] = "/tmp/test_dedup.XXXXXX";
	if (!mkdtemp(dir))
		return 1;
	char *img = ho_path_join(dir, "base.img"), *cache = ho_path_join(dir, "cache");

	/* a 16 MiB base: random chunks, zero chunks and a duplicated chunk */
	enum { N = 4096 };
	uint8_t *b = calloc(N, CS);
	for (size_t c = 0; c < N; c++)
		if (c % 3 != 0)
			for (size_t i = 0; i < CS; i += 8) {
				uint64_t v = rnd();
				memcpy(b + c * CS + i, &v, 8);
			}
	memcpy(b + 100 * CS, b + 200 * CS, CS);
	int fd = open(img, O_RDWR | O_CREAT | O_TRUNC, 0644);
	ho_pwrite_full(fd, b, (size_t)N * CS, 0);

	struct baseidx *bi;
	is_int(baseidx_build(fd, (uint64_t)N * CS, CS, 0, &bi), 0, "build");
	size_t nonzero = N - (N + 2) / 3;
	is_int(baseidx_nchunks(bi), nonzero, "one entry per non-zero chunk");
	ok(baseidx_nanchors(bi) > N * CS / 1024 && baseidx_nanchors(bi) < N * CS / 32, "anchors: %zu", baseidx_nanchors(bi));
	uint64_t idx[4];
	int bad = 0;
	for (size_t c = 1; c < N; c += 3) {
		size_t n = baseidx_lookup(bi, baseidx_fp(b + c * CS, CS), idx, 4);
		bad += n < 1 || (idx[0] != c && !(c == 200 && idx[0] == 100));
	}
	ok(bad == 0, "every non-zero chunk is found at its index");
	size_t n = baseidx_lookup(bi, baseidx_fp(b + 200 * CS, CS), idx, 4);
	ok(n == 2 && idx[0] == 100 && idx[1] == 200, "duplicates: both candidates, ascending");
	uint8_t other[CS];
	memset(other, 0x33, CS);
	is_int(baseidx_lookup(bi, baseidx_fp(other, CS), idx, 4), 0, "unknown chunk: no candidates");

	/* anchors: a piece of the base copied to an unaligned place is found again */
	uint8_t piece[1000];
	memcpy(piece, b + 7 * CS + 1234, sizeof(piece));
	uint32_t key[64], pos[64];
	size_t na = dedup_anchors(piece, sizeof(piece), key, pos, 64);
	int found = 0;
	for (size_t a = 0; a < na; a++) {
		uint64_t offs[8];
		size_t k = baseidx_anchor_lookup(bi, key[a], offs, 8);
		for (size_t j = 0; j < HO_MIN(k, (size_t)8); j++)
			found += offs[j] == 7 * CS + 1234 + pos[a];
	}
	ok(na > 0 && found > 0, "anchors of an unaligned copy point back at its origin (%zu anchors, %d hits)", na, found);

	/* cache: open builds and stores, the second open loads, same content */
	struct overlay_identity id = { .size = (uint64_t)N * CS };
	ho_sha256("base-1", 6, id.digest);
	struct baseidx *b1, *b2;
	bool built;
	is_int(baseidx_open(cache, &id, fd, CS, 0, &b1, &built), 0, "open (cold)");
	ok(built, "cold open builds");
	char *path = baseidx_cache_path(cache, &id, CS);
	struct stat st;
	ok(path && stat(path, &st) == 0, "cache file written");
	ok(st.st_size < (off_t)(N * CS / 10), "cache file is small: %lld bytes for a %d KiB base",
	   (long long)st.st_size, N * CS / 1024);
	is_int(baseidx_open(cache, &id, fd, CS, 0, &b2, &built), 0, "open (warm)");
	ok(!built, "warm open loads the cache");
	ok(baseidx_nchunks(b2) == baseidx_nchunks(b1) && baseidx_nanchors(b2) == baseidx_nanchors(b1),
	   "loaded index equals the built one");
	n = baseidx_lookup(b2, baseidx_fp(b + 5 * CS, CS), idx, 4);
	ok(n == 1 && idx[0] == 5, "loaded index finds chunks");
	baseidx_free(b2);
	is_int(baseidx_open(cache, &id, fd, CS, BASEIDX_NO_ANCHORS, &b2, &built), 0, "open without anchors");
	ok(!built && baseidx_nanchors(b2) == 0 && baseidx_nchunks(b2) == nonzero &&
	   baseidx_memory(b2) < baseidx_memory(b1), "anchors dropped, fingerprints kept");
	ok(baseidx_anchor_lookup(b2, key[0], idx, 4) == 0, "anchor lookups find nothing");
	baseidx_free(b2);
	/* another base identity, other chunk size: not this file */
	struct baseidx *b3;
	uint8_t d2[32];
	ho_sha256("base-2", 6, d2);
	is_int(baseidx_load(path, d2, id.size, CS, &b3), HO_EBASE, "load for another base refused");
	is_int(baseidx_load(path, id.digest, id.size, 8192, &b3), HO_EBASE, "load for another chunk size refused");
	/* corruption: flip a byte; open ignores the file and rebuilds */
	int cfd = open(path, O_RDWR);
	uint8_t byte;
	pread(cfd, &byte, 1, 100);
	byte ^= 1;
	pwrite(cfd, &byte, 1, 100);
	close(cfd);
	is_int(baseidx_load(path, id.digest, id.size, CS, &b3), HO_ECORRUPT, "corrupt cache file detected");
	is_int(baseidx_open(cache, &id, fd, CS, 0, &b3, &built), 0, "open with a corrupt cache");
	ok(built && baseidx_nchunks(b3) == nonzero, "corrupt cache rebuilt");
	baseidx_free(b3);
	is_int(baseidx_load(path, id.digest, id.size, CS, &b3), 0, "rebuilt cache file loads");
	baseidx_free(b3);
	/* a zero base needs no file */
	struct overlay_identity zid = { .size = 1 << 20, .zero = true };
	is_int(baseidx_open(cache, &zid, -1, CS, 0, &b3, NULL), 0, "zero base");
	is_int(baseidx_nchunks(b3), 0, "zero base: empty index");
	baseidx_free(b3);
	is_int(baseidx_build(fd, id.size, 1000, 0, &b3), HO_EINVAL, "chunk size must be a power of two");
	baseidx_free(b1);
	baseidx_free(bi);
	close(fd);

	/* a 4 GiB sparse image with 64 data chunks indexes fast, in little memory */
	{
		char *sp = ho_path_join(dir, "sparse.img");
		int sfd = open(sp, O_RDWR | O_CREAT | O_TRUNC, 0644);
		uint64_t size = 4ull << 30;
		ftruncate(sfd, (off_t)size);
		for (int i = 0; i < 64; i++)
			ho_pwrite_full(sfd, b + (1 + 3 * (size_t)i) * CS, CS, (uint64_t)i * (size / 64) + 12345 * CS);
		uint64_t t0 = ho_mono_ns();
		struct baseidx *sb;
		is_int(baseidx_build(sfd, size, CS, 0, &sb), 0, "build on a 4 GiB sparse image");
		double secs = (double)(ho_mono_ns() - t0) / 1e9;
		ok(secs < 5, "sparse build took %.2f s", secs);
		is_int(baseidx_nchunks(sb), 64, "only the data chunks have entries");
		ok(baseidx_memory(sb) < (1 << 20), "index memory %zu bytes", baseidx_memory(sb));
		n = baseidx_lookup(sb, baseidx_fp(b + 4 * CS, CS), idx, 4);
		ok(n == 1 && idx[0] == (size / 64 + 12345 * CS) / CS, "a data chunk of the sparse image is found");
		baseidx_free(sb);
		close(sfd);
		unlink(sp);
		free(sp);
	}

	/* sent set */
	{
		struct sentset *s = sentset_new();
		uint8_t f1[16] = { 1 }, f2[16] = { 2 }, f3[16] = { 3 };
		int im;
		uint64_t ix;
		is_int(sentset_add(s, f1, 0, 10, 1), 0, "add");
		is_int(sentset_lookup(s, f1, 1, &im, &ix), HO_ENOENT, "not visible at its own seq");
		is_int(sentset_lookup(s, f1, 2, &im, &ix), 0, "visible to a later record");
		ok(im == 0 && ix == 10, "location returned");
		sentset_add(s, f1, 1, 20, 2);
		sentset_lookup(s, f1, 5, &im, &ix);
		ok(im == 0 && ix == 10, "the earliest copy stays the reference");
		sentset_add(s, f2, 0, 10, 3);              /* location 0/10 re-sent with other content */
		ok(sentset_lookup(s, f1, 5, &im, &ix) == 0 && im == 1 && ix == 20,
		   "re-sending a location drops its old content (the copy at 1/20 takes over)");
		is_int(sentset_lookup(s, f2, 5, &im, &ix), 0, "and records the new content");
		sentset_invalidate(s, 0, 10);
		is_int(sentset_lookup(s, f2, 5, &im, &ix), HO_ENOENT, "invalidate drops the entry");
		/* many entries with collisions of the low bits; delete every other one */
		uint8_t fp[16] = { 0 };
		for (uint32_t i = 0; i < 50000; i++) {
			ho_put_le32(fp + 8, i);
			sentset_add(s, fp, 1, 1000 + i, 10);
		}
		for (uint32_t i = 0; i < 50000; i += 2)
			sentset_invalidate(s, 1, 1000 + i);
		bad = 0;
		for (uint32_t i = 0; i < 50000; i++) {
			ho_put_le32(fp + 8, i);
			int r = sentset_lookup(s, fp, 11, &im, &ix);
			bad += (i % 2) ? (r != 0 || ix != 1000 + i) : r != HO_ENOENT;
		}
		ok(bad == 0, "50000 entries with colliding hashes, half invalidated (%d wrong)", bad);
		sentset_add(s, f3, 1, 7, 99);
		{   /* copies: when the referenced location is rewritten, another copy takes over */
			struct sentset *c = sentset_new();
			uint8_t a[16] = { 0xa1 }, bb[16] = { 0xb2 };
			sentset_add(c, a, 0, 1, 1);
			sentset_add(c, a, 1, 5, 2);
			sentset_add(c, a, 0, 9, 3);
			sentset_add(c, bb, 0, 1, 4);          /* location 0/1 rewritten */
			ok(sentset_lookup(c, a, 10, &im, &ix) == 0 && im == 0 && ix == 9, "copy 0/9 referenced after 0/1 was rewritten");
			sentset_invalidate(c, 1, 5);
			sentset_invalidate(c, 0, 9);
			is_int(sentset_lookup(c, a, 10, &im, &ix), HO_ENOENT, "no copy left");
			ok(sentset_lookup(c, bb, 10, &im, &ix) == 0 && im == 0 && ix == 1, "new content at 0/1");
			sentset_free(c);
		}
		char *sp = ho_path_join(dir, "sentset");
		struct sentset_lineage lin = { .until = 42 }, got;
		memset(lin.stream, 0xab, 16);
		sentset_set_lineage(s, &lin);
		is_int(sentset_save(s, sp), 0, "save");
		struct sentset *l;
		is_int(sentset_load(sp, &l), 0, "load");
		is_int(sentset_count(l), sentset_count(s), "same count");
		sentset_get_lineage(l, &got);
		ok(got.until == 42 && got.stream[0] == 0xab && got.stream[15] == 0xab, "lineage kept (until %u)", got.until);
		is_int(sentset_lookup(l, f3, 1, &im, &ix), 0, "loaded entries are from before this stream (seq 0)");
		ok(im == 1 && ix == 7, "loaded location");
		sentset_free(l);
		int sfd = open(sp, O_RDWR);
		pwrite(sfd, "X", 1, 30);
		close(sfd);
		is_int(sentset_load(sp, &l), HO_ECORRUPT, "corrupt sent set refused");
		is_int(sentset_load("/nonexistent/sentset", &l), HO_ENOENT, "missing sent set");
		unlink(sp);
		free(sp);
		sentset_free(s);
	}
	unlink(path);
	rmdir(cache);
	unlink(img);
	rmdir(dir);
	free(path); free(img); free(cache); free(b);
	return done_testing();
}
