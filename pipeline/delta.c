/*
 * delta.c — the chunk encoder and decoder of delta.h: dedup checks first (cheap), then the
 * mode's delta (XOR, or compression against a dictionary of base bytes gathered from the chunk's
 * neighbourhood and from far anchors), keeping whichever record is smallest.
 */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "common/common.h"
#include "pipeline/delta.h"

#define FAR_SLACK       8     /* bytes of base kept on each side of a far match */
#define MAX_ANCHORS     64    /* anchors considered per chunk */
#define MAX_CAND_READS  24    /* base candidates read per chunk */
#define MIN_FAR_MATCH   48    /* shorter far matches are not worth a region header */
#define XOR_SPARSE      32    /* DICT modes: XOR when at most 1/32 of the bytes changed in place */
#define LZ4_DICT      65536   /* lz4 sees only the last 64 KiB of a dictionary */

static const char *const kind_names[CHUNK_NKINDS] = { "zero", "baseref", "sentref", "xor", "delta", "raw" };

const char *chunk_kind_name(enum chunk_kind k)
{
	return (unsigned)k < CHUNK_NKINDS ? kind_names[k] : NULL;
}

int delta_read_fds(void *arg, int img, void *buf, size_t len, uint64_t off)
{
	const int *fd = arg;
	if (img < 0 || img >= DELTA_NIMAGES)
		return HO_EINVAL;
	if (fd[img] < 0) {
		memset(buf, 0, len);
		return 0;
	}
	ssize_t n = ho_pread_full(fd[img], buf, len, off);
	if (n < 0)
		return (int)n;
	if ((size_t)n < len)
		memset((uint8_t *)buf + n, 0, len - (size_t)n);   /* a short base reads as zero-padded */
	return 0;
}

void delta_xor(void *out, const void *a, const void *b, size_t len)
{
	uint8_t *o = out;
	const uint8_t *x = a, *y = b;
	size_t i = 0;
	for (; i + 8 <= len; i += 8) {
		uint64_t u, v;
		memcpy(&u, x + i, 8);
		memcpy(&v, y + i, 8);
		u ^= v;
		memcpy(o + i, &u, 8);
	}
	for (; i < len; i++)
		o[i] = x[i] ^ y[i];
}

size_t delta_put_uleb(uint8_t *p, uint64_t v)
{
	size_t n = 0;
	do {
		uint8_t b = v & 0x7f;
		v >>= 7;
		p[n++] = b | (v ? 0x80 : 0);
	} while (v);
	return n;
}

size_t delta_get_uleb(const uint8_t *p, size_t avail, uint64_t *v)
{
	uint64_t r = 0;
	for (size_t i = 0; i < avail && i < 10; i++) {
		uint64_t b = p[i] & 0x7f;
		if (i == 9 && b > 1)
			return 0;                       /* overflow */
		r |= b << (7 * i);
		if (!(p[i] & 0x80)) {
			if (i > 0 && b == 0)
				return 0;               /* overlong: one canonical form only */
			*v = r;
			return i + 1;
		}
	}
	return 0;
}

/* ---- shared: dictionary assembly ---------------------------------------------------------------- */

struct region { int img; uint64_t off, len; };

static void near_range(const struct delta_base *b, int img, uint64_t idx, size_t len, unsigned before,
		       unsigned after, uint64_t *lo, uint64_t *hi)
{
	uint64_t cs = b->chunk_size, off = idx * cs;
	uint64_t back = (uint64_t)before * cs;
	*lo = off > back ? off - back : 0;
	uint64_t end = off + len + (uint64_t)after * cs;
	*hi = HO_MIN(end, b->size[img]);
	if (*lo > *hi)
		*lo = *hi;
}

/* Read regions then the near range into dict (capacity checked by the caller). */
static int read_dict(const struct delta_base *b, const struct region *far, unsigned nfar, int img,
		     uint64_t lo, uint64_t hi, uint8_t *dict, size_t *dict_len)
{
	size_t n = 0;
	int rc;
	for (unsigned i = 0; i < nfar; i++) {
		if ((rc = b->read(b->arg, far[i].img, dict + n, far[i].len, far[i].off)))
			return rc;
		n += far[i].len;
	}
	if (hi > lo) {
		if ((rc = b->read(b->arg, img, dict + n, hi - lo, lo)))
			return rc;
		n += hi - lo;
	}
	*dict_len = n;
	return 0;
}

/* ---- encoder ------------------------------------------------------------------------------------ */

struct chunk_enc {
	const struct mode *m;
	const struct delta_base *b;
	struct sentset *sent;
	delta_read_chunk_fn verify;
	void *verify_arg;
	struct codec_ctx *cc;
	uint8_t *basebuf;         /* one chunk of base */
	uint8_t *tmp;             /* one chunk: xor / verification / candidate */
	uint8_t *dict;            /* DELTA_MAX_DICT */
	uint8_t *cbuf;            /* codec output, bound(chunk) */
	size_t cbuf_cap;
	struct chunk_stats st;
};

size_t chunk_payload_bound(uint32_t chunk_size)
{
	size_t hdr = 4 + DELTA_MAX_FAR * 21;
	return (size_t)chunk_size + hdr + 16;
}

int chunk_enc_new(const struct mode *m, const struct delta_base *b, struct sentset *sent,
		  struct chunk_enc **out)
{
	*out = NULL;
	if (mode_check(m) || !b || !b->read || b->chunk_size < 512 || b->chunk_size > (1u << 20) ||
	    (b->chunk_size & (b->chunk_size - 1)))
		return HO_EINVAL;
	size_t dict_cap = (size_t)b->chunk_size * (2 * m->window + 1) +
			  DELTA_MAX_FAR * ((size_t)b->chunk_size + 2 * FAR_SLACK) + 64;
	if (dict_cap > DELTA_MAX_DICT)
		return HO_EINVAL;
	struct chunk_enc *e = calloc(1, sizeof(*e));
	if (!e)
		return HO_ENOMEM;
	e->m = m, e->b = b, e->sent = sent;
	e->cbuf_cap = codec_bound(CODEC_ZSTD, b->chunk_size) + codec_bound(CODEC_LZMA, b->chunk_size) +
		      codec_bound(CODEC_LZ4, b->chunk_size);
	e->cc = codec_ctx_new();
	e->basebuf = malloc(b->chunk_size);
	e->tmp = malloc(b->chunk_size);
	e->dict = malloc(dict_cap);
	e->cbuf = malloc(e->cbuf_cap);
	if (!e->cc || !e->basebuf || !e->tmp || !e->dict || !e->cbuf) {
		chunk_enc_free(e);
		return HO_ENOMEM;
	}
	*out = e;
	return 0;
}

void chunk_enc_free(struct chunk_enc *e)
{
	if (!e)
		return;
	codec_ctx_free(e->cc);
	free(e->basebuf);
	free(e->tmp);
	free(e->dict);
	free(e->cbuf);
	free(e);
}

void chunk_enc_set_verify(struct chunk_enc *e, delta_read_chunk_fn fn, void *arg)
{
	e->verify = fn;
	e->verify_arg = arg;
}

void chunk_enc_stats(const struct chunk_enc *e, struct chunk_stats *st)
{
	*st = e->st;
}

static size_t put_ref(uint8_t *p, int img, uint64_t idx)
{
	p[0] = (uint8_t)img;
	return 1 + delta_put_uleb(p + 1, idx);
}

static void finish(struct chunk_enc *e, struct chunk_rec *rec, enum chunk_kind k, size_t in, size_t plen)
{
	rec->kind = k;
	rec->len = plen;
	e->st.count[k]++;
	e->st.in_bytes[k] += in;
	e->st.out_bytes[k] += plen;
}

/* Is base chunk (img, idx) equal to data? Reads into e->tmp. */
static int base_equal(struct chunk_enc *e, int img, uint64_t idx, const void *data, size_t len, bool *eq)
{
	const struct delta_base *b = e->b;
	uint64_t off = idx * b->chunk_size;
	*eq = false;
	if (off + len > b->size[img])
		return 0;
	int rc = b->read(b->arg, img, e->tmp, len, off);
	if (rc)
		return rc;
	*eq = memcmp(e->tmp, data, len) == 0;
	return 0;
}

/* Far regions: base places where pieces of the chunk occur, found through anchors and verified
 * byte by byte; each region is the exact extent of the match (plus FAR_SLACK bytes each side), so
 * a chunk assembled from many small unaligned copies (a heap page) gets a small dictionary. */
static unsigned find_far(struct chunk_enc *e, int img, const uint8_t *data, size_t len, uint64_t nlo,
			 uint64_t nhi, const uint8_t *same, unsigned max, struct region *far)
{
	const struct delta_base *b = e->b;
	uint32_t key[MAX_ANCHORS], pos[MAX_ANCHORS];
	size_t na = dedup_anchors(data, len, key, pos, MAX_ANCHORS);
	unsigned nfar = 0, reads = 0;
	size_t covered_end = 0;                   /* new-chunk bytes [0, covered_end) are matched */
	uint8_t *win = e->tmp;

	for (size_t a = 0; a < na && nfar < max && reads < MAX_CAND_READS; a++) {
		if (pos[a] <= covered_end)
			continue;
		/* an in-place edit: the same-offset base chunk has this piece where it was */
		if (same && memcmp(same + pos[a] - DEDUP_ANCHOR_WIN, data + pos[a] - DEDUP_ANCHOR_WIN,
				   DEDUP_ANCHOR_WIN) == 0)
			continue;
		uint64_t cand[DELTA_NIMAGES][4];
		size_t ncand[DELTA_NIMAGES];
		bool near = false;
		for (int im = 0; im < DELTA_NIMAGES; im++) {
			ncand[im] = HO_MIN(baseidx_anchor_lookup(b->index[im], key[a], cand[im], 4), (size_t)4);
			for (size_t c = 0; c < ncand[im] && im == img; c++)
				near |= cand[im][c] >= nlo && cand[im][c] < nhi;
		}
		if (near)
			continue;                                 /* the near dictionary has it */
		bool found = false;
		for (int k = 0; k < DELTA_NIMAGES && !found && reads < MAX_CAND_READS; k++) {
			int im = (img + k) % DELTA_NIMAGES;       /* own image first */
			for (size_t c = 0; c < HO_MIN(ncand[im], (size_t)2) && !found && reads < MAX_CAND_READS; c++) {
				uint64_t boff = cand[im][c], p = pos[a];
				if (boff < DEDUP_ANCHOR_WIN || boff > b->size[im])
					continue;
				/* base bytes aligned with the whole chunk: [boff - p, boff - p + len) */
				uint64_t ws = boff >= p ? boff - p : 0;
				size_t lead = (size_t)(boff - ws);        /* base bytes before boff */
				uint64_t we = HO_MIN(boff + (len - p), b->size[im]);
				size_t wl = (size_t)(we - ws);
				reads++;
				if (b->read(b->arg, im, win, wl, ws))
					continue;
				/* the anchor window must match; then extend both ways */
				if (memcmp(win + lead - DEDUP_ANCHOR_WIN, data + p - DEDUP_ANCHOR_WIN, DEDUP_ANCHOR_WIN))
					continue;
				size_t back = DEDUP_ANCHOR_WIN;
				while (back < lead && back < p && win[lead - back - 1] == data[p - back - 1])
					back++;
				size_t fwd = 0;
				while (lead + fwd < wl && p + fwd < len && win[lead + fwd] == data[p + fwd])
					fwd++;
				if (back + fwd < MIN_FAR_MATCH)
					continue;
				uint64_t rs = boff - back, re = boff + fwd;
				rs = rs > FAR_SLACK ? rs - FAR_SLACK : 0;
				re = HO_MIN(re + FAR_SLACK, b->size[im]);
				far[nfar++] = (struct region){ im, rs, re - rs };
				covered_end = p + fwd;
				found = true;
			}
		}
	}
	return nfar;
}

static int try_delta(struct chunk_enc *e, int img, uint64_t idx, const uint8_t *data, size_t len,
		     const uint8_t *same, uint8_t *out, size_t cap, size_t *plen)
{
	const struct mode *m = e->m;
	const struct delta_base *b = e->b;
	unsigned win = m->window;
	uint64_t lo, hi;
	struct region far[DELTA_MAX_FAR];
	unsigned nfar = 0, maxfar = DELTA_MAX_FAR;
	int rc;

	near_range(b, img, idx, len, win, win, &lo, &hi);
	if (m->delta_codec == CODEC_LZ4 || m->delta_codec == CODEC_LZ4HC) {
		/* lz4 uses the last 64 KiB of the dictionary: keep everything inside it */
		while (hi - lo > LZ4_DICT / 2 && win > 0) {
			win--;
			near_range(b, img, idx, len, win, win, &lo, &hi);
		}
	}
	if (m->far)
		nfar = find_far(e, img, data, len, lo, hi, same, maxfar, far);
	if (m->delta_codec == CODEC_LZ4 || m->delta_codec == CODEC_LZ4HC) {
		size_t tot = hi - lo;
		unsigned keep = 0;
		for (; keep < nfar && tot + far[keep].len <= LZ4_DICT; keep++)
			tot += far[keep].len;
		nfar = keep;
	}
	size_t dict_len;
	if ((rc = read_dict(b, far, nfar, img, lo, hi, e->dict, &dict_len)))
		return rc;
	if (nfar == 0 && ho_is_zero(e->dict, dict_len)) {
		*plen = SIZE_MAX;                 /* new data in empty space: nothing to delta against */
		return 0;
	}

	uint8_t *p = out;
	p[0] = (uint8_t)m->delta_codec;
	p[1] = (uint8_t)win;
	p[2] = (uint8_t)win;
	p[3] = (uint8_t)nfar;
	size_t h = 4;
	for (unsigned i = 0; i < nfar; i++) {
		p[h++] = (uint8_t)far[i].img;
		h += delta_put_uleb(p + h, far[i].off);
		h += delta_put_uleb(p + h, far[i].len);
	}
	if (h >= len || h >= cap) {
		*plen = SIZE_MAX;
		return 0;
	}
	size_t clen;
	rc = codec_compress(e->cc, m->delta_codec, m->delta_level, e->dict, dict_len, data, len, p + h,
			    HO_MIN(cap - h, len - h), &clen);
	if (rc == HO_ELIMIT) {
		*plen = SIZE_MAX;
		return 0;
	}
	if (rc)
		return rc;
	*plen = h + clen;
	e->st.far_regions += nfar;
	return 0;
}

int chunk_encode(struct chunk_enc *e, int img, uint64_t idx, const void *data, size_t len, uint64_t seq,
		 void *outv, size_t cap, struct chunk_rec *rec)
{
	const struct mode *m = e->m;
	const struct delta_base *b = e->b;
	uint8_t *out = outv;
	const uint8_t *d = data;
	uint64_t cs = b->chunk_size;
	int rc;
	bool eq;

	memset(rec, 0, sizeof(*rec));
	if (img < 0 || img >= DELTA_NIMAGES || len == 0 || len > cs || idx * cs + len > b->size[img] ||
	    cap < chunk_payload_bound(b->chunk_size) || seq == 0)
		return HO_EINVAL;

	if ((m->dedup & MODE_DEDUP_ZERO) && ho_is_zero(d, len)) {
		finish(e, rec, CHUNK_ZERO, len, 0);
		return 0;
	}
	/* the same-offset base chunk: unchanged content, and the XOR partner */
	bool have_base = false;
	if ((m->dedup & MODE_DEDUP_SAME) || m->delta != MODE_DELTA_NONE) {
		if ((rc = b->read(b->arg, img, e->basebuf, len, idx * cs)))
			return rc;
		have_base = true;
		if ((m->dedup & MODE_DEDUP_SAME) && memcmp(e->basebuf, d, len) == 0) {
			rec->ref_img = img, rec->ref_idx = idx;
			finish(e, rec, CHUNK_BASEREF, len, put_ref(out, img, idx));
			return 0;
		}
	}
	if ((m->dedup & MODE_DEDUP_BASE) && len == cs) {
		uint64_t fp = baseidx_fp(d, len);
		for (int k = 0; k < DELTA_NIMAGES; k++) {
			int im = (img + k) % DELTA_NIMAGES;
			uint64_t cand[4];
			size_t nc = baseidx_lookup(b->index[im], fp, cand, 4);
			for (size_t c = 0; c < HO_MIN(nc, (size_t)4); c++) {
				if ((rc = base_equal(e, im, cand[c], d, len, &eq)))
					return rc;
				if (eq) {
					rec->ref_img = im, rec->ref_idx = cand[c];
					finish(e, rec, CHUNK_BASEREF, len, put_ref(out, im, cand[c]));
					return 0;
				}
			}
		}
	}
	if (m->dedup & MODE_DEDUP_SENT) {
		ho_xxh128(d, len, rec->fp);
		rec->has_fp = true;
		int rim;
		uint64_t ridx;
		if (e->sent && sentset_lookup(e->sent, rec->fp, seq, &rim, &ridx) == 0 &&
		    !(rim == img && ridx == idx) && rim >= 0 && rim < DELTA_NIMAGES &&
		    ridx * cs + len <= b->size[rim]) {
			bool ok = true;
			if (e->verify) {
				rc = e->verify(e->verify_arg, rim, ridx, e->tmp, len);
				ok = rc == 0 && memcmp(e->tmp, d, len) == 0;
			}
			if (ok) {
				rec->ref_img = rim, rec->ref_idx = ridx;
				finish(e, rec, CHUNK_SENTREF, len, put_ref(out, rim, ridx));
				return 0;
			}
		}
	}
	if (m->delta != MODE_DELTA_NONE && have_base && !ho_is_zero(e->basebuf, len)) {
		/* XOR: for sparse in-place edits it is both the cheapest and (once the frame codec
		 * squeezes its zero runs) the smallest form; dictionary codecs with greedy parsers
		 * (lz4, zstd fast levels) tend to lose the one long same-offset match in repetitive text */
		delta_xor(out, d, e->basebuf, len);
		size_t zeros = 0;
		for (size_t i = 0; i < len; i++)
			zeros += out[i] == 0;
		size_t need = m->delta == MODE_DELTA_XOR ? len / 4 : len - len / XOR_SPARSE;
		if (zeros >= need) {
			finish(e, rec, CHUNK_XOR, len, len);
			return 0;
		}
	}
	if (m->delta == MODE_DELTA_DICT) {
		size_t dl;
		if ((rc = try_delta(e, img, idx, d, len, have_base ? e->basebuf : NULL, out, cap, &dl)))
			return rc;
		if (dl != SIZE_MAX) {
			bool take = dl <= len / 4;
			if (!take && dl < len - len / 16) {
				/* is the base of any help? compare with the chunk compressed alone, which is
				 * roughly what the frame codec would make of a RAW record */
				size_t nl;
				rc = codec_compress(e->cc, m->delta_codec, m->delta_level, NULL, 0, d, len,
						    e->cbuf, e->cbuf_cap, &nl);
				if (rc && rc != HO_ELIMIT)
					return rc;
				take = rc == 0 && dl < nl - nl / 8;
			}
			if (take) {
				finish(e, rec, CHUNK_DELTA, len, dl);
				return 0;
			}
		}
	}
	memcpy(out, d, len);
	finish(e, rec, CHUNK_RAW, len, len);
	return 0;
}

/* ---- decoder ------------------------------------------------------------------------------------ */

struct chunk_dec {
	const struct delta_base *b;
	struct codec_ctx *cc;
	uint8_t *dict;
	size_t dict_cap;
	uint8_t *tmp;
};

int chunk_dec_new(const struct delta_base *b, struct chunk_dec **out)
{
	*out = NULL;
	if (!b || !b->read || b->chunk_size < 512 || b->chunk_size > (1u << 20) ||
	    (b->chunk_size & (b->chunk_size - 1)))
		return HO_EINVAL;
	struct chunk_dec *d = calloc(1, sizeof(*d));
	if (!d)
		return HO_ENOMEM;
	d->b = b;
	d->cc = codec_ctx_new();
	d->tmp = malloc(b->chunk_size);
	if (!d->cc || !d->tmp) {
		chunk_dec_free(d);
		return HO_ENOMEM;
	}
	*out = d;
	return 0;
}

void chunk_dec_free(struct chunk_dec *d)
{
	if (!d)
		return;
	codec_ctx_free(d->cc);
	free(d->dict);
	free(d->tmp);
	free(d);
}

static int get_ref(const struct delta_base *b, const uint8_t *p, size_t plen, size_t len, int *img,
		   uint64_t *idx)
{
	if (plen < 2 || p[0] >= DELTA_NIMAGES)
		return HO_EFORMAT;
	size_t n = delta_get_uleb(p + 1, plen - 1, idx);
	if (!n || 1 + n != plen)
		return HO_EFORMAT;
	*img = p[0];
	if (*idx > b->size[*img] / b->chunk_size || *idx * b->chunk_size + len > b->size[*img])
		return HO_EFORMAT;
	return 0;
}

static int dict_reserve(struct chunk_dec *d, size_t need)
{
	if (need <= d->dict_cap)
		return 0;
	uint8_t *n = realloc(d->dict, need);
	if (!n)
		return HO_ENOMEM;
	d->dict = n, d->dict_cap = need;
	return 0;
}

int chunk_decode(struct chunk_dec *d, int img, uint64_t idx, enum chunk_kind kind, const void *payload,
		 size_t plen, void *outv, size_t len, delta_read_chunk_fn read_current, void *arg)
{
	const struct delta_base *b = d->b;
	const uint8_t *p = payload;
	uint8_t *out = outv;
	uint64_t cs = b->chunk_size;
	int rc, rim;
	uint64_t ridx;

	if (img < 0 || img >= DELTA_NIMAGES || len == 0 || len > cs || idx > b->size[img] / cs ||
	    idx * cs + len > b->size[img] || (plen && !p))
		return HO_EINVAL;
	switch (kind) {
	case CHUNK_ZERO:
		if (plen)
			return HO_EFORMAT;
		memset(out, 0, len);
		return 0;
	case CHUNK_BASEREF:
		if ((rc = get_ref(b, p, plen, len, &rim, &ridx)))
			return rc;
		return b->read(b->arg, rim, out, len, ridx * cs);
	case CHUNK_SENTREF:
		if ((rc = get_ref(b, p, plen, len, &rim, &ridx)))
			return rc;
		if (!read_current)
			return HO_EINVAL;
		return read_current(arg, rim, ridx, out, len);
	case CHUNK_XOR:
		if (plen != len)
			return HO_EFORMAT;
		if ((rc = b->read(b->arg, img, d->tmp, len, idx * cs)))
			return rc;
		delta_xor(out, p, d->tmp, len);
		return 0;
	case CHUNK_RAW:
		if (plen != len)
			return HO_EFORMAT;
		memcpy(out, p, len);
		return 0;
	case CHUNK_DELTA:
		break;
	default:
		return HO_EFORMAT;
	}
	/* DELTA */
	if (plen < 4 || p[0] == CODEC_NONE || p[0] >= CODEC_COUNT || p[1] > DELTA_MAX_WINDOW ||
	    p[2] > DELTA_MAX_WINDOW || p[3] > DELTA_MAX_FAR)
		return HO_EFORMAT;
	struct region far[DELTA_MAX_FAR];
	unsigned nfar = p[3];
	size_t h = 4;
	uint64_t total = 0;
	for (unsigned i = 0; i < nfar; i++) {
		size_t n1, n2;
		if (h >= plen || p[h] >= DELTA_NIMAGES)
			return HO_EFORMAT;
		far[i].img = p[h++];
		if (!(n1 = delta_get_uleb(p + h, plen - h, &far[i].off)))
			return HO_EFORMAT;
		h += n1;
		if (!(n2 = delta_get_uleb(p + h, plen - h, &far[i].len)))
			return HO_EFORMAT;
		h += n2;
		if (far[i].len == 0 || far[i].len > DELTA_MAX_REGION || far[i].off > b->size[far[i].img] ||
		    far[i].len > b->size[far[i].img] - far[i].off)
			return HO_EFORMAT;
		total += far[i].len;
	}
	uint64_t lo, hi;
	near_range(b, img, idx, len, p[1], p[2], &lo, &hi);
	total += hi - lo;
	if (total > DELTA_MAX_DICT)
		return HO_EFORMAT;
	if ((rc = dict_reserve(d, (size_t)total + 1)))
		return rc;
	size_t dict_len, got;
	if ((rc = read_dict(b, far, nfar, img, lo, hi, d->dict, &dict_len)))
		return rc;
	rc = codec_decompress(d->cc, (enum codec)p[0], d->dict, dict_len, p + h, plen - h, out, len, &got);
	if (rc == HO_EINVAL)
		rc = HO_EFORMAT;
	if (rc)
		return rc;
	return got == len ? 0 : HO_EFORMAT;
}
