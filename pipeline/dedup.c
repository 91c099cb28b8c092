/*
 * dedup.c — the base index (aligned-chunk fingerprints plus content-defined anchors, built once
 * per base and cached on disk) and the sent set (what this handoff already sent, and where to),
 * as documented in dedup.h.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "common/common.h"
#include "overlay/overlay.h"
#include "pipeline/dedup.h"

/* ---- gear rolling hash ------------------------------------------------------------------------- */

static const uint64_t gear[256] = {
	0x3a34ce6380fc0bc5ull, 0xc05a677850dc981aull, 0x9e32cdf7948370bdull, 0xa7765f796f00bbefull,
	0xbbbb23fe6921fe52ull, 0x5bf0c31cacf1e17full, 0x3e1900a6529be043ull, 0x2a16cd9ed424ea1eull,
	0x579593114410e048ull, 0x0a29f5fe3df351f0ull, 0x1b4897e079059ad2ull, 0x2d9cd179c9e412e1ull,
	0x315949173d12f7e0ull, 0x7c69b356b72b606full, 0xb6ec11f8caa9ebcfull, 0x841e03b1ed92f734ull,
	0x8898a5df2ba2ae99ull, 0xf810fea09e7eeaa5ull, 0x27a56de32b6a852cull, 0x141d3cdeb2a328a7ull,
	0xfa6c784c6c59c00full, 0x6bb8c0b28140b75full, 0xb3469baeabcf5facull, 0xc03b1af969a981b8ull,
	0xec7c99144be2ac06ull, 0x52af400deb7b9daeull, 0x4e3c54f2f51f1e28ull, 0x7991820c21348daaull,
	0x16fda58f4606377cull, 0x1f2b3b8ec35c9e73ull, 0x88ba012f31187eb0ull, 0x38156c76ce316da2ull,
	0x568c3abe507f99c9ull, 0xfbb94b9c5aa35f85ull, 0x6357d4ce0564f16dull, 0x807b8e8b225d506cull,
	0xe94dd7b1c51efc33ull, 0xc78818d18f476c5aull, 0xafdd7f640cfb3147ull, 0x88e410d77db44e58ull,
	0x00871a89c7e149d2ull, 0xc32a37d735a6a5c3ull, 0x9814cde8cb99c6a2ull, 0x49fbb7b0c24a1146ull,
	0xed934cc988d7dd5dull, 0x5cdc4addde6b913dull, 0xa1708eaaf26cfbc9ull, 0xa7290a064d79dba7ull,
	0x7def499a20a56e26ull, 0x107532de91bfdb7full, 0xb01c7470f051b1d1ull, 0xaff67c257e344217ull,
	0x02774eed2cac1497ull, 0xc51c12415224ee63ull, 0x0d3f09b4649a477dull, 0xa5c44956672c538cull,
	0x7bd882afdda23261ull, 0x8492e86fef7afd00ull, 0x0fcd515a9fcba46aull, 0xb19e422e29164cddull,
	0x10cda2da6a6d40a3ull, 0xed515e82625cf1c7ull, 0xe8f457f3878b7139ull, 0x4b7d7f308ceb0775ull,
	0x5b83f5eb70523dc8ull, 0x59ed655f6ae89864ull, 0xded49194cbf83585ull, 0x0fe79ce92e869f62ull,
	0xd9bc2484cafaddaeull, 0x9ecf31b73df8b814ull, 0x2855cd6f8a104633ull, 0x404a344696f96da5ull,
	0xe600db82e1421b10ull, 0x0a318c1a911a191cull, 0xdb7953532d88a357ull, 0xa71d06d262f333bdull,
	0xb499f28a378ab16dull, 0xfcd64315c9504ed7ull, 0xca1bad293a211cb4ull, 0x4566adfe33ad67a4ull,
	0x5a0830bf07b05d59ull, 0xa90b17a2439b9841ull, 0x0c22780170cac946ull, 0x527d22089f04e86bull,
	0x5e6d2f2d8969e8ffull, 0xeecf581aa4058b31ull, 0xf429125017cd9cbcull, 0x3175643ba4f207e7ull,
	0x9d79cd627cde46fdull, 0x182d1019eee91d03ull, 0x13fb51794e08d5feull, 0xd09791485f62cc6dull,
	0xc5d2841bdbfd17c7ull, 0x044b9229fef99e2bull, 0x5638a674aa677f4dull, 0x7bb7563b8371f36dull,
	0x9ebb8f5cee4a1885ull, 0x56108f9d3525303full, 0x1fb9fb85b110266full, 0xf814c735eced402eull,
	0x9996531dfe795cc0ull, 0x002476bf2afb98c2ull, 0x3140b6da2da0eb8full, 0xa9fb608148b6b2f6ull,
	0xa80e6c55a1ced04eull, 0xf78b708856f595aaull, 0xc9613529265d78a7ull, 0xe03463328ba97162ull,
	0x77a16aebf582a0b6ull, 0x934ea0a3d064d760ull, 0xaabba997d04e2371ull, 0x3ee33c9b4d47d547ull,
	0x4c6f91acddec8e11ull, 0x6d36efd64081f73cull, 0xa6515d7794cf0a95ull, 0x5d240603e1282dedull,
	0xcabf76c5be9abbd9ull, 0x7c1a49a0335efd1bull, 0xf4ca582eadea42d1ull, 0xd007fb3e30f2f294ull,
	0x82e5a844e1d348b2ull, 0x1f951b0caee3f67aull, 0xb1df2f880eb4d95aull, 0xec96cf3f70023092ull,
	0x9196a471d5b76c9aull, 0x053afc77e0214c85ull, 0xcd6b162343191c82ull, 0x3816e016eb54bea9ull,
	0x5afb21b6f886a49bull, 0xd8d3498264b760a2ull, 0xeeca2595505275b8ull, 0x4ac07cc235fad7bdull,
	0x35192252d7067931ull, 0xe1e0319d7fda56e1ull, 0xd156ec54ac7f53e5ull, 0x2116f914e6374007ull,
	0x25ad05874443bcb7ull, 0xca0c2f5d14c4b3e6ull, 0x3588d804dc8ec281ull, 0x087c98e1ea1f0c1dull,
	0x7b4b23a793460d50ull, 0x9c4610d040fe2ab1ull, 0xeb6884351ac65022ull, 0x015cadaaf2ed3ca8ull,
	0x4631d9d6ee88891eull, 0xa2f62023f63964dfull, 0x880b97f8eacccaf7ull, 0xe2a3e504ac8e8377ull,
	0xfc3c93a73eb81c5bull, 0x30273a6da2c2f358ull, 0x07e2bb5b7cf9e8fdull, 0x4ea657778c88a3fdull,
	0x0a50514618b4c467ull, 0xfdf1ca56f118eb1dull, 0x2fe16074d36c50c6ull, 0x199479a30363e9a3ull,
	0x7e04197129b6da7cull, 0xba87a1d6ea28adc8ull, 0x558767c6c8b09fe7ull, 0xe159c55fabe88c28ull,
	0x2928b25d91382f13ull, 0x597239b432c558f2ull, 0x223f5eb4609cf806ull, 0x47f5f6ebdabc9c9eull,
	0xeac22ef6291c5ee5ull, 0xdd6e89c060e6cfe6ull, 0xb9c1b98c28d11f57ull, 0x01737372dd71dd46ull,
	0xb1cabe5101a2273bull, 0xb104f690e9efa0e1ull, 0x0b7ec7506faf2a23ull, 0x952847f5ddc433b0ull,
	0x875c97974a576e7full, 0x42da8b1b0db51c0aull, 0x72b25556c3e86619ull, 0x467e464568943656ull,
	0xb52e7c0ab765dfd5ull, 0x8beed33a466f5e0cull, 0x02af80f038dfeed2ull, 0x9234374df65af7abull,
	0x9bd98e49a52406b2ull, 0x283539c42cd8bd92ull, 0x01b1a48888d4b3b1ull, 0xaa897f77bad6a507ull,
	0x0b2b199e1d631262ull, 0x2c51d9555c6a83f4ull, 0x8bc0607fd01c1870ull, 0x26d2f0882a5952dfull,
	0x6855047dd48ee5abull, 0x2c94a78cc8e64044ull, 0x4f6bad17d24779a0ull, 0x7ccf66959f2049cbull,
	0xb68a2c2671d054e3ull, 0x6a0abd52d3320f60ull, 0x8b87bcf7ec136931ull, 0xd5301635aa887a47ull,
	0x31a7a0d1811c9f7eull, 0x3046a8bd8a665bdcull, 0xe3fb10d69bfc9832ull, 0x2138f9247d055230ull,
	0xf9a0a9986fa3d223ull, 0x2ed61d45675ca81full, 0x6721254e5dc00975ull, 0xd5cdd98381af544aull,
	0x5286da550030f4c7ull, 0xe8fa22d9cc6cdb1full, 0xd8ae29b2f98a6860ull, 0x67b4bf39cabfae80ull,
	0x02fcec5f3918cf17ull, 0x6199688d756289efull, 0xd5ccf5a9e99fb8e1ull, 0xe37880a15b916f91ull,
	0x1cb9968fa531cde9ull, 0x22c01162bb425c2eull, 0x75df6860219706c3ull, 0xac48bafb8bc7cdd4ull,
	0x48d40650ec52eceaull, 0x2aec63a933ebd65eull, 0xbafe42d09a72d678ull, 0x1ff6acbb028518b7ull,
	0xac816e84499e6c97ull, 0x9d85708482b24e31ull, 0x0a5968810a8ce199ull, 0xd76eb8fb16903b52ull,
	0xb8c19a72172e3075ull, 0x5b87115c791b9cefull, 0x7e580ca80dadcb5bull, 0x7e52e8c54a694856ull,
	0xf5e66c601c1dac10ull, 0x30d493f5162d2857ull, 0x01ff2284c5b7493cull, 0x07aa5a3417e3a471ull,
	0xc47b029ac7f245beull, 0x422d8003bd93d3dcull, 0x9555aeeabaa414a9ull, 0xb1edae8c410e4e9eull,
	0xffae734102138644ull, 0x1e16303442d57d73ull, 0x5c172fa6a7d2809full, 0x13af9e58b4657468ull,
	0x2a5da19b2b21ea60ull, 0x0c7f5d64035f270cull, 0x90f0ea75acd56271ull, 0x1fcbb989581b9a2aull,
	0xb9d345cfba49eb71ull, 0x781fe4e90b57e841ull, 0xdc64e5fc37341308ull, 0x4f3d89becad5c6f7ull,
	0x3d39931e79866116ull, 0xccafb8e425a9a790ull, 0x8ce70306bcd5668aull, 0x05594f8c7fc667dcull,
	0x25d22aba76087689ull, 0x0caac812356db544ull, 0xaa454721672cef16ull, 0x2bedf90cc93ef903ull
};

#define ANCHOR_SHIFT (64 - DEDUP_ANCHOR_BITS)
#define ANCHOR_PARAMS ((uint32_t)DEDUP_ANCHOR_BITS | (uint32_t)DEDUP_ANCHOR_MIN_GAP << 8 | (uint32_t)DEDUP_ANCHOR_WIN << 20)

static uint32_t anchor_key(const uint8_t *end)
{
	return (uint32_t)(ho_xxh64(end - DEDUP_ANCHOR_WIN, DEDUP_ANCHOR_WIN) >> 32);
}

static uint32_t zero_key(void)
{
	static const uint8_t z[DEDUP_ANCHOR_WIN];
	return anchor_key(z + DEDUP_ANCHOR_WIN);
}

size_t dedup_anchors(const void *buf, size_t len, uint32_t *key, uint32_t *pos, size_t max)
{
	const uint8_t *p = buf;
	uint64_t h = 0;
	size_t n = 0;
	uint32_t zk = zero_key();
	for (size_t i = 0; i < len && n < max; i++) {
		h = (h << 1) + gear[p[i]];
		if (i + 1 >= 64 && (h >> ANCHOR_SHIFT) == 0) {
			uint32_t k = anchor_key(p + i + 1);
			if (k == zk || (n && key[n - 1] == k))
				continue;
			key[n] = k;
			pos[n] = (uint32_t)(i + 1);
			n++;
		}
	}
	return n;
}

/* ---- base index ------------------------------------------------------------------------------- */

#define DIR_BITS 16
#define DIR_SIZE ((1u << DIR_BITS) + 1)

struct baseidx {
	uint32_t chunk;
	uint64_t size;
	size_t n, m;
	uint64_t *fp;        /* n, ascending */
	uint32_t *idx;       /* n */
	uint32_t *akey;      /* m, ascending */
	uint64_t *aoff;      /* m */
	uint32_t *fdir;      /* DIR_SIZE: first entry whose fp >> 48 >= bucket */
	uint32_t *adir;      /* DIR_SIZE: same over akey >> 16 */
};

struct fp_ent { uint64_t fp; uint32_t idx; };
struct an_ent { uint32_t key; uint64_t off; };

static int cmp_fp(const void *a, const void *b)
{
	const struct fp_ent *x = a, *y = b;
	if (x->fp != y->fp)
		return x->fp < y->fp ? -1 : 1;
	return x->idx < y->idx ? -1 : x->idx > y->idx;
}

static int cmp_an(const void *a, const void *b)
{
	const struct an_ent *x = a, *y = b;
	if (x->key != y->key)
		return x->key < y->key ? -1 : 1;
	return x->off < y->off ? -1 : x->off > y->off;
}

uint64_t baseidx_fp(const void *chunk, size_t len)
{
	return ho_xxh64(chunk, len);
}

static int valid_chunk(uint32_t chunk)
{
	return chunk >= 512 && chunk <= (1u << 20) && (chunk & (chunk - 1)) == 0;
}

static int make_dirs(struct baseidx *bi)
{
	bi->fdir = malloc(DIR_SIZE * sizeof(uint32_t));
	bi->adir = malloc(DIR_SIZE * sizeof(uint32_t));
	if (!bi->fdir || !bi->adir)
		return HO_ENOMEM;
	size_t j = 0;
	for (uint32_t b = 0; b < DIR_SIZE; b++) {
		while (j < bi->n && (bi->fp[j] >> (64 - DIR_BITS)) < b)
			j++;
		bi->fdir[b] = (uint32_t)j;
	}
	j = 0;
	for (uint32_t b = 0; b < DIR_SIZE; b++) {
		while (j < bi->m && (bi->akey[j] >> (32 - DIR_BITS)) < b)
			j++;
		bi->adir[b] = (uint32_t)j;
	}
	return 0;
}

static struct baseidx *bi_alloc(uint32_t chunk, uint64_t size, size_t n, size_t m)
{
	struct baseidx *bi = calloc(1, sizeof(*bi));
	if (!bi)
		return NULL;
	bi->chunk = chunk, bi->size = size, bi->n = n, bi->m = m;
	bi->fp = malloc((n ? n : 1) * 8);
	bi->idx = malloc((n ? n : 1) * 4);
	bi->akey = malloc((m ? m : 1) * 4);
	bi->aoff = malloc((m ? m : 1) * 8);
	if (!bi->fp || !bi->idx || !bi->akey || !bi->aoff) {
		baseidx_free(bi);
		return NULL;
	}
	return bi;
}

void baseidx_free(struct baseidx *bi)
{
	if (!bi)
		return;
	free(bi->fp);
	free(bi->idx);
	free(bi->akey);
	free(bi->aoff);
	free(bi->fdir);
	free(bi->adir);
	free(bi);
}

/* growable arrays for the build */
struct vec { void *p; size_t n, cap, esz; };

static int vec_push(struct vec *v, const void *e)
{
	if (v->n == v->cap) {
		size_t nc = v->cap ? v->cap * 2 : 4096;
		void *np = realloc(v->p, nc * v->esz);
		if (!np)
			return HO_ENOMEM;
		v->p = np, v->cap = nc;
	}
	memcpy((char *)v->p + v->n * v->esz, e, v->esz);
	v->n++;
	return 0;
}

/* Anchors of one contiguous run of non-zero data at base offset off. */
static int scan_anchors(const uint8_t *p, size_t len, uint64_t off, struct vec *an, uint32_t zk)
{
	uint64_t h = 0;
	size_t last = 0;
	uint32_t lastkey = zk;
	for (size_t i = 0; i < len; i++) {
		h = (h << 1) + gear[p[i]];
		if (i + 1 < 64 || (h >> ANCHOR_SHIFT) != 0 || (last && i + 1 - last < DEDUP_ANCHOR_MIN_GAP))
			continue;
		struct an_ent e = { anchor_key(p + i + 1), off + i + 1 };
		if (e.key == zk || e.key == lastkey)
			continue;
		int rc = vec_push(an, &e);
		if (rc)
			return rc;
		last = i + 1;
		lastkey = e.key;
	}
	return 0;
}

int baseidx_build(int fd, uint64_t size, uint32_t chunk, unsigned flags, struct baseidx **out)
{
	enum { BUF = 4 << 20 };
	struct vec fps = { .esz = sizeof(struct fp_ent) }, ans = { .esz = sizeof(struct an_ent) };
	uint8_t *buf = NULL;
	int rc = 0;
	uint32_t zk = zero_key();

	*out = NULL;
	if (!valid_chunk(chunk) || size / chunk > UINT32_MAX)
		return HO_EINVAL;
	if (fd >= 0) {
		if (!(buf = malloc(BUF)))
			return HO_ENOMEM;
		posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
	}
	uint64_t pos = 0;
	while (fd >= 0 && pos < size) {
		/* skip holes; fall back to reading everything where SEEK_DATA is unsupported */
		off_t d = lseek(fd, (off_t)pos, SEEK_DATA);
		if (d < 0) {
			if (errno == ENXIO)
				break;                   /* only a hole remains */
			d = (off_t)pos;
		}
		uint64_t start = (uint64_t)d / chunk * chunk;
		if (start < pos)
			start = pos;
		off_t e = lseek(fd, (off_t)start, SEEK_HOLE);
		uint64_t end = e < 0 ? size : (uint64_t)e;
		end = (end + chunk - 1) / chunk * chunk;
		if (end > size || end <= start)
			end = size;
		for (uint64_t off = start; off < end; ) {
			size_t want = (size_t)HO_MIN((uint64_t)BUF, end - off);
			ssize_t got = ho_pread_full(fd, buf, want, off);
			if (got < 0) {
				rc = (int)got;
				goto out;
			}
			if ((size_t)got < want)
				memset(buf + got, 0, want - (size_t)got);
			size_t run_start = 0;
			bool in_run = false;
			for (size_t c = 0; c < want; c += chunk) {
				size_t clen = HO_MIN((size_t)chunk, want - c);
				bool zero = ho_is_zero(buf + c, clen);
				if (!zero) {
					struct fp_ent fe = { baseidx_fp(buf + c, clen), (uint32_t)((off + c) / chunk) };
					if ((rc = vec_push(&fps, &fe)))
						goto out;
				}
				if (!(flags & BASEIDX_NO_ANCHORS)) {
					if (!zero && !in_run)
						run_start = c, in_run = true;
					if (zero && in_run) {
						if ((rc = scan_anchors(buf + run_start, c - run_start, off + run_start, &ans, zk)))
							goto out;
						in_run = false;
					}
				}
			}
			if (in_run && (rc = scan_anchors(buf + run_start, want - run_start, off + run_start, &ans, zk)))
				goto out;
			off += want;
		}
		pos = end;
	}
	if (fps.n)
		qsort(fps.p, fps.n, fps.esz, cmp_fp);
	if (ans.n)
		qsort(ans.p, ans.n, ans.esz, cmp_an);
	struct baseidx *bi = bi_alloc(chunk, size, fps.n, ans.n);
	if (!bi) {
		rc = HO_ENOMEM;
		goto out;
	}
	for (size_t i = 0; i < fps.n; i++) {
		const struct fp_ent *fe = (const struct fp_ent *)fps.p + i;
		bi->fp[i] = fe->fp, bi->idx[i] = fe->idx;
	}
	for (size_t i = 0; i < ans.n; i++) {
		const struct an_ent *ae = (const struct an_ent *)ans.p + i;
		bi->akey[i] = ae->key, bi->aoff[i] = ae->off;
	}
	if ((rc = make_dirs(bi))) {
		baseidx_free(bi);
		goto out;
	}
	*out = bi;
out:
	free(fps.p);
	free(ans.p);
	free(buf);
	return rc;
}

uint32_t baseidx_chunk_size(const struct baseidx *bi) { return bi->chunk; }
uint64_t baseidx_image_size(const struct baseidx *bi) { return bi->size; }
size_t baseidx_nchunks(const struct baseidx *bi) { return bi->n; }
size_t baseidx_nanchors(const struct baseidx *bi) { return bi->m; }

size_t baseidx_memory(const struct baseidx *bi)
{
	return sizeof(*bi) + bi->n * 12 + bi->m * 12 + 2 * DIR_SIZE * sizeof(uint32_t);
}

size_t baseidx_lookup(const struct baseidx *bi, uint64_t fp, uint64_t *idx, size_t max)
{
	if (!bi || !bi->n)
		return 0;
	uint32_t b = (uint32_t)(fp >> (64 - DIR_BITS));
	size_t lo = bi->fdir[b], hi = bi->fdir[b + 1];
	while (lo < hi) {                           /* first entry >= fp */
		size_t mid = lo + (hi - lo) / 2;
		if (bi->fp[mid] < fp)
			lo = mid + 1;
		else
			hi = mid;
	}
	size_t n = 0;
	for (size_t i = lo; i < bi->n && bi->fp[i] == fp; i++, n++)
		if (n < max)
			idx[n] = bi->idx[i];
	return n;
}

size_t baseidx_anchor_lookup(const struct baseidx *bi, uint32_t key, uint64_t *off, size_t max)
{
	if (!bi || !bi->m)
		return 0;
	uint32_t b = key >> (32 - DIR_BITS);
	size_t lo = bi->adir[b], hi = bi->adir[b + 1];
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (bi->akey[mid] < key)
			lo = mid + 1;
		else
			hi = mid;
	}
	size_t n = 0;
	for (size_t i = lo; i < bi->m && bi->akey[i] == key; i++, n++)
		if (n < max)
			off[n] = bi->aoff[i];
	return n;
}

/* ---- base index files ------------------------------------------------------------------------- */

#define IDX_MAGIC "HOBIDX1\n"
#define IDX_HDR 80

int baseidx_save(const struct baseidx *bi, const char *path, const uint8_t digest[32])
{
	size_t len = IDX_HDR + bi->n * 12 + bi->m * 12 + 8;
	uint8_t *b = malloc(len), *p;
	if (!b)
		return HO_ENOMEM;
	memset(b, 0, IDX_HDR);
	memcpy(b, IDX_MAGIC, 8);
	ho_put_le32(b + 8, 1);
	ho_put_le32(b + 12, bi->chunk);
	ho_put_le64(b + 16, bi->size);
	memcpy(b + 24, digest, 32);
	ho_put_le64(b + 56, bi->n);
	ho_put_le64(b + 64, bi->m);
	ho_put_le32(b + 72, ANCHOR_PARAMS);
	p = b + IDX_HDR;
	for (size_t i = 0; i < bi->n; i++, p += 8)
		ho_put_le64(p, bi->fp[i]);
	for (size_t i = 0; i < bi->n; i++, p += 4)
		ho_put_le32(p, bi->idx[i]);
	for (size_t i = 0; i < bi->m; i++, p += 4)
		ho_put_le32(p, bi->akey[i]);
	for (size_t i = 0; i < bi->m; i++, p += 8)
		ho_put_le64(p, bi->aoff[i]);
	ho_put_le64(p, ho_xxh64(b, len - 8));
	int rc = ho_write_file_atomic(path, b, len);
	free(b);
	return rc;
}

int baseidx_load(const char *path, const uint8_t digest[32], uint64_t size, uint32_t chunk,
		 struct baseidx **out)
{
	char *b = NULL;
	size_t len = 0;
	int rc;

	*out = NULL;
	if ((rc = ho_read_file(path, &b, &len, (size_t)1 << 34)))
		return rc;
	const uint8_t *u = (const uint8_t *)b;
	rc = HO_ECORRUPT;
	if (len < IDX_HDR + 8 || memcmp(u, IDX_MAGIC, 8) || ho_get_le32(u + 8) != 1 ||
	    ho_get_le64(u + len - 8) != ho_xxh64(u, len - 8))
		goto out;
	uint64_t n = ho_get_le64(u + 56), m = ho_get_le64(u + 64);
	if (n > len / 12 || m > len / 12 || IDX_HDR + n * 12 + m * 12 + 8 != len)
		goto out;
	if (ho_get_le32(u + 72) != ANCHOR_PARAMS) {
		rc = HO_EVERSION;                 /* built with other anchor parameters: rebuild */
		goto out;
	}
	if (ho_get_le32(u + 12) != chunk || ho_get_le64(u + 16) != size || memcmp(u + 24, digest, 32)) {
		rc = HO_EBASE;
		goto out;
	}
	struct baseidx *bi = bi_alloc(chunk, size, n, m);
	if (!bi) {
		rc = HO_ENOMEM;
		goto out;
	}
	const uint8_t *p = u + IDX_HDR;
	for (size_t i = 0; i < n; i++, p += 8)
		bi->fp[i] = ho_get_le64(p);
	for (size_t i = 0; i < n; i++, p += 4)
		bi->idx[i] = ho_get_le32(p);
	for (size_t i = 0; i < m; i++, p += 4)
		bi->akey[i] = ho_get_le32(p);
	for (size_t i = 0; i < m; i++, p += 8)
		bi->aoff[i] = ho_get_le64(p);
	/* the lookups rely on order: refuse an unsorted file rather than miss silently */
	for (size_t i = 1; i < n; i++)
		if (bi->fp[i] < bi->fp[i - 1])
			goto bad;
	for (size_t i = 1; i < m; i++)
		if (bi->akey[i] < bi->akey[i - 1])
			goto bad;
	if ((rc = make_dirs(bi))) {
		baseidx_free(bi);
		goto out;
	}
	*out = bi;
	rc = 0;
	goto out;
bad:
	baseidx_free(bi);
	rc = HO_ECORRUPT;
out:
	free(b);
	return rc;
}

int baseidx_default_dir(char *buf, size_t len)
{
	const char *c = getenv("HANDOFF_CACHE"), *home = getenv("HOME");
	int n;
	if (c && *c)
		n = snprintf(buf, len, "%s/baseidx", c);
	else if (home && *home)
		n = snprintf(buf, len, "%s/.cache/handoff/baseidx", home);
	else
		return HO_EINVAL;
	return n < 0 || (size_t)n >= len ? HO_EINVAL : 0;
}

char *baseidx_cache_path(const char *cache_dir, const struct overlay_identity *id, uint32_t chunk)
{
	char dir[4096], name[64], hex[33];
	if (!cache_dir) {
		if (baseidx_default_dir(dir, sizeof(dir)))
			return NULL;
		cache_dir = dir;
	}
	ho_hex(id->digest, 16, hex);
	snprintf(name, sizeof(name), "%s-%u.idx", hex, chunk);
	return ho_path_join(cache_dir, name);
}

/* Free the anchor arrays of an index whose user does not look anchors up. */
static void drop_anchors(struct baseidx *bi)
{
	uint32_t *k = malloc(4);
	uint64_t *o = malloc(8);
	if (!k || !o) {
		free(k);
		free(o);
		return;                                   /* keep them: still correct */
	}
	free(bi->akey);
	free(bi->aoff);
	bi->akey = k, bi->aoff = o, bi->m = 0;
	memset(bi->adir, 0, DIR_SIZE * sizeof(uint32_t));
}

int baseidx_open(const char *cache_dir, const struct overlay_identity *id, int fd, uint32_t chunk,
		 unsigned flags, struct baseidx **out, bool *built)
{
	char dbuf[4096];
	char *path = NULL;
	int rc;

	if (built)
		*built = false;
	if (id->zero || fd < 0)
		return baseidx_build(-1, id->size, chunk, flags, out);
	if (!(flags & BASEIDX_NO_CACHE)) {
		if (!cache_dir) {
			if (baseidx_default_dir(dbuf, sizeof(dbuf)) == 0)
				cache_dir = dbuf;
		}
		if (cache_dir && (path = baseidx_cache_path(cache_dir, id, chunk))) {
			rc = baseidx_load(path, id->digest, id->size, chunk, out);
			/* an index built without anchors does not serve a caller that wants them */
			if (rc == 0 && !(flags & BASEIDX_NO_ANCHORS) && (*out)->m == 0 && (*out)->n > 0) {
				baseidx_free(*out);
				*out = NULL;
				rc = HO_ENOENT;
			}
			if (rc == 0) {
				if (flags & BASEIDX_NO_ANCHORS)
					drop_anchors(*out);
				free(path);
				return 0;
			}
			if (rc != HO_ENOENT && rc != HO_EVERSION)
				ho_warn("ignoring base index '%s': %s", path, ho_strerror(rc));
		}
	}
	/* a cached index always has anchors, whoever builds it first */
	if ((rc = baseidx_build(fd, id->size, chunk, path ? flags & ~BASEIDX_NO_ANCHORS : flags, out))) {
		free(path);
		return rc;
	}
	if (built)
		*built = true;
	if (path) {
		int src = ho_mkdir_p(cache_dir, 0755);
		if (src == 0)
			src = baseidx_save(*out, path, id->digest);
		if (src)
			ho_warn("cannot store base index '%s': %s", path, ho_strerror(src));
		if (flags & BASEIDX_NO_ANCHORS)
			drop_anchors(*out);
	}
	free(path);
	return 0;
}

/* ---- sent set --------------------------------------------------------------------------------- */

/* Two open-addressing tables with linear probing and backward-shift deletion:
 * by fingerprint (fp -> the location references name, its seq) and by location (location -> fp,
 * seq, and the next location holding the same content). Every location holding an fp is on a
 * list that starts at the fingerprint entry's location, so when that one is rewritten another
 * copy takes its place (data copied around in one round stays referenceable in the next). */
#define NOLOC UINT64_MAX
struct sent_ent { uint8_t fp[16]; uint64_t loc; uint64_t seq; bool used; };
struct loc_ent { uint64_t loc; uint8_t fp[16]; uint64_t seq, next; bool used; };

struct sentset {
	pthread_rwlock_t lock;
	struct sent_ent *ft;   /* guarded by lock */
	struct loc_ent *lt;    /* guarded by lock */
	size_t cap, n, ln;     /* guarded by lock; cap: power of two, same for both tables */
	uint64_t key;          /* hash key, set once at creation */
	struct sentset_lineage lineage;   /* guarded by lock */
};

static uint64_t mkloc(int img, uint64_t idx) { return (uint64_t)img << 56 | (idx & ((1ull << 56) - 1)); }
/* table position of a fingerprint: both halves, mixed with a per-set random key, so chunks crafted
 * to collide in some bits (the guest controls its data; XXH3 is not collision-resistant) cannot
 * pile up in one probe sequence */
static uint64_t fp_hash_key(const uint8_t fp[16], uint64_t key)
{
	uint64_t h = (ho_get_le64(fp) ^ key) * 0x9E3779B97F4A7C15ull;
	h ^= (ho_get_le64(fp + 8) + key) * 0xC2B2AE3D27D4EB4Full;
	return h ^ (h >> 29);
}
#define fp_hash(fp) fp_hash_key((fp), s->key)
static uint64_t loc_hash(uint64_t loc) { return (loc + 1) * 0x9E3779B97F4A7C15ull; }

struct sentset *sentset_new(void)
{
	struct sentset *s = calloc(1, sizeof(*s));
	if (!s)
		return NULL;
	s->cap = 1024;
	if (ho_random(&s->key, sizeof(s->key)))
		s->key = (uint64_t)ho_mono_ns() * 0x9E3779B97F4A7C15ull;
	s->ft = calloc(s->cap, sizeof(*s->ft));
	s->lt = calloc(s->cap, sizeof(*s->lt));
	if (!s->ft || !s->lt || pthread_rwlock_init(&s->lock, NULL)) {
		free(s->ft);
		free(s->lt);
		free(s);
		return NULL;
	}
	return s;
}

void sentset_free(struct sentset *s)
{
	if (!s)
		return;
	pthread_rwlock_destroy(&s->lock);
	free(s->ft);
	free(s->lt);
	free(s);
}

static size_t ft_find(const struct sentset *s, const uint8_t fp[16])
{
	size_t mask = s->cap - 1, i = fp_hash(fp) & mask;
	while (s->ft[i].used && memcmp(s->ft[i].fp, fp, 16))
		i = (i + 1) & mask;
	return i;
}

static size_t lt_find(const struct sentset *s, uint64_t loc)
{
	size_t mask = s->cap - 1, i = loc_hash(loc) & mask;
	while (s->lt[i].used && s->lt[i].loc != loc)
		i = (i + 1) & mask;
	return i;
}

/* Backward-shift deletion in a linear-probing table: after freeing slot i, the entry found at j
 * moves back to i unless its home slot k lies cyclically in (i, j]. */
static bool backshift_moves(size_t i, size_t j, size_t k)
{
	return (j > i && (k <= i || k > j)) || (j < i && k <= i && k > j);
}

static void ft_delete(struct sentset *s, size_t i)
{
	size_t mask = s->cap - 1, j = i;
	s->ft[i].used = false;
	for (;;) {
		j = (j + 1) & mask;
		if (!s->ft[j].used)
			break;
		size_t k = fp_hash(s->ft[j].fp) & mask;
		if (backshift_moves(i, j, k)) {
			s->ft[i] = s->ft[j];
			s->ft[j].used = false;
			i = j;
		}
	}
	s->n--;
}

static void lt_delete(struct sentset *s, size_t i)
{
	size_t mask = s->cap - 1, j = i;
	s->lt[i].used = false;
	for (;;) {
		j = (j + 1) & mask;
		if (!s->lt[j].used)
			break;
		size_t k = loc_hash(s->lt[j].loc) & mask;
		if (backshift_moves(i, j, k)) {
			s->lt[i] = s->lt[j];
			s->lt[j].used = false;
			i = j;
		}
	}
	s->ln--;
}

static int grow(struct sentset *s)
{
	size_t ocap = s->cap;
	struct sent_ent *oft = s->ft;
	struct loc_ent *olt = s->lt;
	struct sent_ent *nft = calloc(ocap * 2, sizeof(*nft));
	struct loc_ent *nlt = calloc(ocap * 2, sizeof(*nlt));
	if (!nft || !nlt) {
		free(nft);
		free(nlt);
		return HO_ENOMEM;
	}
	s->ft = nft, s->lt = nlt, s->cap = ocap * 2;
	for (size_t i = 0; i < ocap; i++) {
		if (oft[i].used)
			s->ft[ft_find(s, oft[i].fp)] = oft[i];
		if (olt[i].used)
			s->lt[lt_find(s, olt[i].loc)] = olt[i];
	}
	free(oft);
	free(olt);
	return 0;
}

static void invalidate_locked(struct sentset *s, uint64_t loc)
{
	size_t li = lt_find(s, loc);
	if (!s->lt[li].used)
		return;
	uint64_t next = s->lt[li].next;
	size_t fi = ft_find(s, s->lt[li].fp);
	if (s->ft[fi].used && s->ft[fi].loc == loc) {
		if (next != NOLOC) {             /* the next copy becomes the reference */
			s->ft[fi].loc = next;
			s->ft[fi].seq = s->lt[lt_find(s, next)].seq;
		} else {
			ft_delete(s, fi);
		}
	} else if (s->ft[fi].used) {             /* unlink loc from the list of its content */
		size_t pi = lt_find(s, s->ft[fi].loc);
		while (s->lt[pi].used && s->lt[pi].next != loc && s->lt[pi].next != NOLOC)
			pi = lt_find(s, s->lt[pi].next);
		if (s->lt[pi].used && s->lt[pi].next == loc)
			s->lt[pi].next = next;
	}
	lt_delete(s, lt_find(s, loc));
}

int sentset_add(struct sentset *s, const uint8_t fp[16], int img, uint64_t idx, uint64_t seq)
{
	uint64_t loc = mkloc(img, idx);
	int rc = 0;
	pthread_rwlock_wrlock(&s->lock);
	if ((s->n + 1) * 2 > s->cap || (s->ln + 1) * 2 > s->cap) {
		if ((rc = grow(s)))
			goto out;
	}
	size_t li = lt_find(s, loc);
	if (s->lt[li].used && memcmp(s->lt[li].fp, fp, 16) == 0)
		goto out;                              /* same content at the same place */
	invalidate_locked(s, loc);
	size_t fi = ft_find(s, fp);
	uint64_t next = NOLOC;
	if (s->ft[fi].used) {
		/* an earlier copy stays the reference; this one goes on its list, right after it */
		size_t hi = lt_find(s, s->ft[fi].loc);
		next = s->lt[hi].next;
		s->lt[hi].next = loc;
	} else {
		memcpy(s->ft[fi].fp, fp, 16);
		s->ft[fi].loc = loc, s->ft[fi].seq = seq, s->ft[fi].used = true;
		s->n++;
	}
	li = lt_find(s, loc);
	s->lt[li].loc = loc, s->lt[li].used = true, s->lt[li].seq = seq, s->lt[li].next = next;
	memcpy(s->lt[li].fp, fp, 16);
	s->ln++;
out:
	pthread_rwlock_unlock(&s->lock);
	return rc;
}

void sentset_invalidate(struct sentset *s, int img, uint64_t idx)
{
	pthread_rwlock_wrlock(&s->lock);
	invalidate_locked(s, mkloc(img, idx));
	pthread_rwlock_unlock(&s->lock);
}

int sentset_lookup(struct sentset *s, const uint8_t fp[16], uint64_t before_seq, int *img, uint64_t *idx)
{
	int rc = HO_ENOENT;
	pthread_rwlock_rdlock(&s->lock);
	size_t fi = ft_find(s, fp);
	if (s->ft[fi].used && s->ft[fi].seq < before_seq) {
		*img = (int)(s->ft[fi].loc >> 56);
		*idx = s->ft[fi].loc & ((1ull << 56) - 1);
		rc = 0;
	}
	pthread_rwlock_unlock(&s->lock);
	return rc;
}

size_t sentset_count(struct sentset *s)
{
	pthread_rwlock_rdlock(&s->lock);
	size_t n = s->n;
	pthread_rwlock_unlock(&s->lock);
	return n;
}

void sentset_set_lineage(struct sentset *s, const struct sentset_lineage *l)
{
	pthread_rwlock_wrlock(&s->lock);
	s->lineage = *l;
	pthread_rwlock_unlock(&s->lock);
}

void sentset_get_lineage(struct sentset *s, struct sentset_lineage *l)
{
	pthread_rwlock_rdlock(&s->lock);
	*l = s->lineage;
	pthread_rwlock_unlock(&s->lock);
}

#define SENT_MAGIC "HOSENT2\n"
#define SENT_HDR 40
#define SENT_ENT 25

int sentset_save(struct sentset *s, const char *path)
{
	pthread_rwlock_rdlock(&s->lock);
	size_t len = SENT_HDR + s->ln * SENT_ENT + 8;
	uint8_t *b = malloc(len), *p;
	if (!b) {
		pthread_rwlock_unlock(&s->lock);
		return HO_ENOMEM;
	}
	memcpy(b, SENT_MAGIC, 8);
	ho_put_le32(b + 8, 2);
	ho_put_le32(b + 12, s->lineage.until);
	ho_put_le64(b + 16, s->ln);
	memcpy(b + 24, s->lineage.stream, 16);
	p = b + SENT_HDR;
	/* every location, the reference of each content first (it stays the reference on load) */
	for (int pass = 0; pass < 2; pass++) {
		for (size_t i = 0; i < s->cap; i++) {
			if (!s->lt[i].used)
				continue;
			size_t fi = ft_find(s, s->lt[i].fp);
			if ((s->ft[fi].used && s->ft[fi].loc == s->lt[i].loc) != (pass == 0))
				continue;
			memcpy(p, s->lt[i].fp, 16);
			p[16] = (uint8_t)(s->lt[i].loc >> 56);
			ho_put_le64(p + 17, s->lt[i].loc & ((1ull << 56) - 1));
			p += SENT_ENT;
		}
	}
	pthread_rwlock_unlock(&s->lock);
	ho_put_le64(p, ho_xxh64(b, len - 8));
	int rc = ho_write_file_atomic(path, b, len);
	free(b);
	return rc;
}

int sentset_load(const char *path, struct sentset **out)
{
	char *b = NULL;
	size_t len = 0;
	int rc;

	*out = NULL;
	if ((rc = ho_read_file(path, &b, &len, (size_t)1 << 34)))
		return rc;
	const uint8_t *u = (const uint8_t *)b;
	rc = HO_ECORRUPT;
	if (len < SENT_HDR + 8 || memcmp(u, SENT_MAGIC, 8) || ho_get_le32(u + 8) != 2 ||
	    ho_get_le64(u + len - 8) != ho_xxh64(u, len - 8))
		goto out;
	uint64_t n = ho_get_le64(u + 16);
	if (n > len / SENT_ENT || SENT_HDR + n * SENT_ENT + 8 != len)
		goto out;
	struct sentset *s = sentset_new();
	if (!s) {
		rc = HO_ENOMEM;
		goto out;
	}
	s->lineage.until = ho_get_le32(u + 12);
	memcpy(s->lineage.stream, u + 24, 16);
	for (uint64_t i = 0; i < n; i++) {
		const uint8_t *e = u + SENT_HDR + i * SENT_ENT;
		uint64_t idx = ho_get_le64(e + 17);
		if (e[16] >= OVERLAY_NIMAGES || idx >> 56) {
			rc = HO_ECORRUPT;
			sentset_free(s);
			goto out;
		}
		if ((rc = sentset_add(s, e, e[16], idx, 0))) {
			sentset_free(s);
			goto out;
		}
	}
	*out = s;
	rc = 0;
out:
	free(b);
	return rc;
}
