/*
 * classify.c — sorts every modified chunk into what a stream would have to do with it:
 * reverted (equal to its own base chunk: nothing), zero (a tiny record), dup-base (a reference to
 * any chunk of either base), dup-overlay (a reference to an earlier modified chunk) or rest (data
 * to compress). Fingerprints are ho_xxh128; every fingerprint hit is confirmed byte for byte.
 *
 * For dup-base the obvious plan is a table of every base chunk's fingerprint; this file turns it
 * around and sorts the (usually far fewer) candidate chunks' fingerprints, then streams both
 * bases once, skipping holes and zero chunks, and looks each base chunk up in that sorted array.
 * The answer is the same; memory follows the dirty set instead of the base size (an 8 GiB base
 * would otherwise need ~2 M table entries per image).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "common/common.h"
#include "inspect/inspect_int.h"

#define RUN_BYTES (1u << 20)

static int cmp_hash(const void *a, const void *b)
{
	const struct inspect_chunk *x = *(const struct inspect_chunk *const *)a;
	const struct inspect_chunk *y = *(const struct inspect_chunk *const *)b;
	int c = memcmp(x->hash, y->hash, 16);
	if (c)
		return c;
	if (x->image != y->image)
		return x->image < y->image ? -1 : 1;
	return x->idx < y->idx ? -1 : x->idx > y->idx;
}

/* Pass 1: read runs of consecutive modified chunks with their base; hash; reverted / zero. */
static int pass_local(struct inspect *in, int image, uint8_t *cur, uint8_t *base)
{
	struct inspect_image *im = &in->img[image];
	uint32_t cs = in->chunk_size;
	size_t per_run = RUN_BYTES / cs;

	for (size_t i = 0; i < im->count;) {
		size_t n = 1;
		uint64_t off = im->chunks[i].idx * cs;
		size_t bytes;
		int err;

		while (i + n < im->count && n < per_run &&
		       im->chunks[i + n].idx == im->chunks[i].idx + n)
			n++;
		bytes = (size_t)(im->chunks[i + n - 1].idx * cs + im->chunks[i + n - 1].len - off);
		err = overlay_read(in->ov, image, cur, bytes, off);
		if (err >= 0)
			err = overlay_read_base(in->ov, image, base, bytes, off);
		if (err < 0) {
			ho_err("cannot read chunks %llu-%llu of '%s' in '%s': %s",
			       (unsigned long long)im->chunks[i].idx,
			       (unsigned long long)im->chunks[i + n - 1].idx, overlay_image_name(image),
			       in->dir, ho_strerror(err));
			return err;
		}
		for (size_t k = 0; k < n; k++) {
			struct inspect_chunk *c = &im->chunks[i + k];
			const uint8_t *p = cur + k * cs, *q = base + k * cs;
			ho_xxh128(p, c->len, c->hash);
			c->ref_image = -1;
			if (memcmp(p, q, c->len) == 0)
				c->cls = INSPECT_REVERTED;
			else if (ho_is_zero(p, c->len))
				c->cls = INSPECT_ZERO;
			else
				c->cls = INSPECT_UNCLASSIFIED;
		}
		i += n;
	}
	return 0;
}

static int read_current(struct inspect *in, const struct inspect_chunk *c, uint8_t *buf)
{
	int err = overlay_read(in->ov, c->image, buf, c->len, c->idx * in->chunk_size);
	if (err < 0)
		ho_err("cannot read chunk %llu of '%s' in '%s': %s", (unsigned long long)c->idx,
		       overlay_image_name(c->image), in->dir, ho_strerror(err));
	return err < 0 ? err : 0;
}

/* Look the base chunk (image, idx) with content p up among the sorted candidates. */
static int match_base(struct inspect *in, struct inspect_chunk **cand, size_t ncand, int image,
		      uint64_t idx, const uint8_t *p, uint32_t len, uint8_t *tmp, size_t *left)
{
	struct inspect_chunk key, *kp = &key;
	size_t lo = 0, hi = ncand;

	ho_xxh128(p, len, key.hash);
	key.image = -1;
	key.idx = 0;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (cmp_hash(&cand[mid], &kp) < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	for (; lo < ncand && memcmp(cand[lo]->hash, key.hash, 16) == 0; lo++) {
		struct inspect_chunk *c = cand[lo];
		int err;
		if (c->cls == INSPECT_DUP_BASE || c->len != len)
			continue;
		if ((err = read_current(in, c, tmp)) < 0)
			return err;
		if (memcmp(tmp, p, len) != 0)
			continue;
		c->cls = INSPECT_DUP_BASE;
		c->ref_image = image;
		c->ref_idx = idx;
		(*left)--;
	}
	return 0;
}

/* Pass 2: stream both bases (data regions only), looking every non-zero chunk up. */
static int pass_bases(struct inspect *in, struct inspect_chunk **cand, size_t ncand, uint8_t *buf,
		      uint8_t *tmp)
{
	uint32_t cs = in->chunk_size;
	size_t left = ncand;

	for (int image = 0; image < OVERLAY_NIMAGES && left; image++) {
		int fd = overlay_base_fd(in->ov, image);
		uint64_t size = in->img[image].size, pos = 0;

		if (fd < 0)
			continue;   /* an all-zero base holds no non-zero chunk */
		while (pos < size && left) {
			off_t data = lseek(fd, (off_t)pos, SEEK_DATA), hole;
			uint64_t start, end;
			if (data < 0) {
				if (errno == ENXIO)
					break;
				data = (off_t)pos;   /* no SEEK_DATA here: read everything */
				hole = (off_t)size;
			} else {
				hole = lseek(fd, data, SEEK_HOLE);
				if (hole < 0)
					hole = (off_t)size;
			}
			start = (uint64_t)data / cs * cs;
			end = HO_MIN(size, ((uint64_t)hole + cs - 1) / cs * cs);
			for (uint64_t off = start; off < end && left; off += RUN_BYTES) {
				size_t n = (size_t)HO_MIN((uint64_t)RUN_BYTES, end - off);
				int err = overlay_read_base(in->ov, image, buf, n, off);
				if (err < 0) {
					ho_err("cannot read the base of '%s' at %llu: %s",
					       overlay_image_name(image), (unsigned long long)off,
					       ho_strerror(err));
					return err;
				}
				for (size_t k = 0; k < n && left; k += cs) {
					uint32_t len = (uint32_t)HO_MIN((size_t)cs, n - k);
					if (ho_is_zero(buf + k, len))
						continue;
					err = match_base(in, cand, ncand, image, (off + k) / cs, buf + k,
							 len, tmp, &left);
					if (err < 0)
						return err;
				}
			}
			pos = end > pos ? end : pos + cs;
		}
	}
	return 0;
}

/* Pass 3: among candidates not found in a base, the first of each content is rest, the others
 * duplicate it. */
static int pass_overlay(struct inspect *in, struct inspect_chunk **cand, size_t ncand, uint8_t *a,
			uint8_t *b)
{
	for (size_t g = 0; g < ncand;) {
		size_t e = g + 1;
		while (e < ncand && memcmp(cand[e]->hash, cand[g]->hash, 16) == 0)
			e++;
		for (size_t i = g; i < e; i++) {
			struct inspect_chunk *c = cand[i];
			if (c->cls == INSPECT_DUP_BASE)
				continue;
			c->cls = INSPECT_REST;
			if (i == g)
				continue;
			for (size_t j = g; j < i; j++) {
				struct inspect_chunk *l = cand[j];
				int err;
				if (l->cls != INSPECT_REST || l->len != c->len)
					continue;
				if ((err = read_current(in, c, a)) < 0 ||
				    (err = read_current(in, l, b)) < 0)
					return err;
				if (memcmp(a, b, c->len) == 0) {
					c->cls = INSPECT_DUP_OVERLAY;
					c->ref_image = l->image;
					c->ref_idx = l->idx;
					break;
				}
			}
		}
		g = e;
	}
	return 0;
}

int inspect_classify(struct inspect *in)
{
	uint8_t *cur = NULL, *base = NULL, *tmp = NULL;
	struct inspect_chunk **cand = NULL;
	size_t ncand = 0, total = 0;
	int err = HO_ENOMEM;

	if (in->classified)
		return 0;
	cur = malloc(RUN_BYTES + in->chunk_size);
	base = malloc(RUN_BYTES + in->chunk_size);
	tmp = malloc(in->chunk_size);
	if (!cur || !base || !tmp)
		goto out;
	for (int i = 0; i < OVERLAY_NIMAGES; i++) {
		if ((err = pass_local(in, i, cur, base)) < 0)
			goto out;
		total += in->img[i].count;
	}
	err = HO_ENOMEM;
	cand = malloc((total ? total : 1) * sizeof(*cand));
	if (!cand)
		goto out;
	for (int i = 0; i < OVERLAY_NIMAGES; i++)
		for (size_t k = 0; k < in->img[i].count; k++)
			if (in->img[i].chunks[k].cls == INSPECT_UNCLASSIFIED)
				cand[ncand++] = &in->img[i].chunks[k];
	qsort(cand, ncand, sizeof(*cand), cmp_hash);
	if (ncand && (err = pass_bases(in, cand, ncand, cur, tmp)) < 0)
		goto out;
	if ((err = pass_overlay(in, cand, ncand, cur, base)) < 0)
		goto out;
	in->classified = true;
	err = 0;
out:
	free(cand);
	free(cur);
	free(base);
	free(tmp);
	return err;
}
