/*
 * test_delta.c — the chunk encoder and decoder: every mode round-trips a randomized mix of chunks
 * (zero, unchanged, copies of other base chunks of either image, unaligned copies of base data
 * under malloc-like headers, small edits, text, random, duplicates of new data) against an
 * in-memory disk and memory base; the expected record kinds appear (memory chunks dedup against
 * the disk base and vice versa, edits become small deltas, far copies use far regions); output
 * is deterministic; hostile payloads are refused with HO_EFORMAT.
 */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "common/common.h"
#include "pipeline/dedup.h"
#include "pipeline/delta.h"
#include "pipeline/mode.h"
#include "tests/unit/tap.h"

#define CS 4096u
#define DISK_CHUNKS 2048u     /* 8 MiB */
#define MEM_CHUNKS  1024u     /* 4 MiB */

static uint64_t rs = 42;
static uint64_t rnd(void)
{
	uint64_t z = (rs += 0x9E3779B97F4A7C15ull);
	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
	return z ^ (z >> 31);
}
static uint64_t rn(uint64_t n) { return rnd() % n; }

static void fill_random(uint8_t *p, size_t n) { for (size_t i = 0; i < n; i++) p[i] = (uint8_t)rnd(); }
static void fill_text(uint8_t *p, size_t n)
{
	static const char *w[] = { "alpha ", "beta ", "gamma ", "delta ", "overlay ", "chunk ", "base ",
				   "memory ", "disk\n", "42 ", "handoff ", "cloudlet ", "edge " };
	for (size_t i = 0; i < n; ) {
		const char *s = w[rn(HO_ARRAY_SIZE(w))];
		for (; *s && i < n; s++) p[i++] = (uint8_t)*s;
	}
}

struct mem_base { uint8_t *img[2]; uint64_t size[2]; };

static int mem_read(void *arg, int img, void *buf, size_t len, uint64_t off)
{
	struct mem_base *m = arg;
	if (img < 0 || img > 1 || off > m->size[img] || len > m->size[img] - off)
		return HO_EINVAL;
	memcpy(buf, m->img[img] + off, len);
	return 0;
}

/* the "receiver": the new images, as they are after applying the stream in order */
static uint8_t *new_img[2];
static int read_cur(void *arg, int img, uint64_t idx, void *buf, size_t len)
{
	(void)arg;
	memcpy(buf, new_img[img] + idx * CS, len);
	return 0;
}

struct item { int img; uint64_t idx; int type; };
enum { T_ZERO, T_SAME, T_COPY_SAME_IMG, T_COPY_OTHER_IMG, T_EDIT, T_SHIFT, T_HEAP, T_TEXT, T_RANDOM, T_DUP, T_NTYPES };
static const char *tname[T_NTYPES] = { "zero", "unchanged", "copy", "cross-image copy", "edit", "insertion", "heap", "text", "random", "dup" };

/* a heap page: 16-byte headers followed by unaligned pieces of base memory and base disk */
static void heap_page(uint8_t *p, struct mem_base *mb)
{
	size_t i = 0;
	while (i < CS) {
		size_t l = 200 + 16 * rn(40);
		uint64_t hdr[2] = { l | 1, 0x55d0c0000000ull + rn(1 << 20) * 16 };
		memcpy(p + i, hdr, HO_MIN((size_t)16, CS - i));
		i += 16;
		if (i >= CS)
			break;
		l = HO_MIN(l, CS - i);
		int im = (int)rn(2);
		uint64_t at;
		do
			at = rn(mb->size[im] - l);
		while (ho_is_zero(mb->img[im] + at, l));
		memcpy(p + i, mb->img[im] + at, l);
		i += l;
	}
}

int main(void)
{
	struct mem_base mb = { .size = { (uint64_t)DISK_CHUNKS * CS, (uint64_t)MEM_CHUNKS * CS } };
	for (int i = 0; i < 2; i++) {
		mb.img[i] = calloc(1, mb.size[i]);
		new_img[i] = malloc(mb.size[i]);
	}
	/* bases: runs of text, random and zero chunks; memory also holds page-cache copies of disk */
	for (int im = 0; im < 2; im++)
		for (uint64_t c = 0; c < mb.size[im] / CS; c++) {
			uint8_t *p = mb.img[im] + c * CS;
			uint64_t t = (c / 8 + (uint64_t)im) % 4;
			if (t == 0) fill_text(p, CS);
			else if (t == 1) fill_random(p, CS);
			else if (t == 2 && im == 1) memcpy(p, mb.img[0] + rn(DISK_CHUNKS) * CS, CS);
		}
	for (int i = 0; i < 2; i++)
		memcpy(new_img[i], mb.img[i], mb.size[i]);

	/* the changes */
	enum { NITEMS = 400 };
	struct item *items = calloc(NITEMS, sizeof(*items));
	uint8_t *mark[2] = { calloc(1, DISK_CHUNKS), calloc(1, MEM_CHUNKS) };
	size_t n = 0;
	while (n < NITEMS) {
		int im = (int)rn(2);
		uint64_t idx = rn(mb.size[im] / CS);
		if (mark[im][idx])
			continue;
		int type = (int)rn(T_NTYPES);
		uint8_t *p = new_img[im] + idx * CS;
		switch (type) {
		case T_ZERO: memset(p, 0, CS); break;
		case T_SAME: break;
		case T_COPY_SAME_IMG: memcpy(p, mb.img[im] + rn(mb.size[im] / CS) * CS, CS); break;
		case T_COPY_OTHER_IMG: {
			uint64_t src;
			do src = rn(mb.size[!im] / CS); while (ho_is_zero(mb.img[!im] + src * CS, CS));
			memcpy(p, mb.img[!im] + src * CS, CS);
			break;
		}
		case T_EDIT:
			if (ho_is_zero(p, CS))
				continue;                 /* edits happen to existing data */
			for (int e = 0; e < 4; e++)
				p[rn(CS)] ^= 0x5a;
			break;
		case T_SHIFT: {                           /* 7 bytes inserted: nothing stays aligned */
			if (ho_is_zero(p, CS))
				continue;
			size_t at = rn(CS / 2);
			memmove(p + at + 7, p + at, CS - at - 7);
			fill_random(p + at, 7);
			break;
		}
		case T_HEAP: heap_page(p, &mb); break;
		case T_TEXT: fill_text(p, CS); break;
		case T_RANDOM: fill_random(p, CS); break;
		case T_DUP: {
			if (!n) { fill_random(p, CS); break; }
			const struct item *o = &items[rn(n)];
			memcpy(p, new_img[o->img] + o->idx * CS, CS);
			break;
		}
		}
		mark[im][idx] = 1;
		items[n++] = (struct item){ im, idx, type };
	}

	struct delta_base base = { .chunk_size = CS, .size = { mb.size[0], mb.size[1] }, .read = mem_read, .arg = &mb };
	/* base indexes, built from files (the index reads fds) */
	char tmpl[] = "/tmp/test_delta.XXXXXX";
	int fds[2];
	for (int i = 0; i < 2; i++) {
		fds[i] = mkstemp(tmpl);
		unlink(tmpl);
		strcpy(tmpl, "/tmp/test_delta.XXXXXX");
		ho_pwrite_full(fds[i], mb.img[i], mb.size[i], 0);
		struct baseidx *bi;
		is_int(baseidx_build(fds[i], mb.size[i], CS, 0, &bi), 0, "build base index");
		base.index[i] = bi;
	}
	struct delta_base fdbase = base;                 /* same bases read through delta_read_fds */
	fdbase.read = delta_read_fds;
	fdbase.arg = fds;

	size_t pb = chunk_payload_bound(CS);
	uint8_t *pl = malloc(pb), *pl2 = malloc(pb), *out = malloc(CS);
	struct chunk_dec *dec;
	is_int(chunk_dec_new(&base, &dec), 0, "chunk_dec_new");

	for (size_t mi = 0; mi < mode_count(); mi++) {
		const struct mode *m = mode_get(mi);
		struct sentset *ss = sentset_new();
		uint8_t fp[16];
		for (size_t i = 0; i < n; i++) {
			const uint8_t *d = new_img[items[i].img] + items[i].idx * CS;
			if (ho_is_zero(d, CS))
				continue;
			ho_xxh128(d, CS, fp);
			sentset_add(ss, fp, items[i].img, items[i].idx, i + 1);
		}
		struct chunk_enc *enc, *enc2;
		int rc = chunk_enc_new(m, &base, ss, &enc);
		rc |= chunk_enc_new(m, &fdbase, ss, &enc2);
		chunk_enc_set_verify(enc, read_cur, NULL);
		int fails = 0, nondet = 0;
		uint64_t kinds_of[T_NTYPES][CHUNK_NKINDS] = { { 0 } };
		size_t total = 0, edit_bytes = 0, nedit = 0, heap_bytes = 0, nheap = 0;
		for (size_t i = 0; i < n && !rc; i++) {
			const struct item *it = &items[i];
			const uint8_t *d = new_img[it->img] + it->idx * CS;
			struct chunk_rec rec, rec2;
			rc = chunk_encode(enc, it->img, it->idx, d, CS, i + 1, pl, pb, &rec);
			rc = rc ? rc : chunk_encode(enc2, it->img, it->idx, d, CS, i + 1, pl2, pb, &rec2);
			if (rc)
				break;
			if (rec.kind != rec2.kind || rec.len != rec2.len || memcmp(pl, pl2, rec.len))
				nondet++;
			memset(out, 0xEE, CS);
			int dr = chunk_decode(dec, it->img, it->idx, rec.kind, pl, rec.len, out, CS, read_cur, NULL);
			if (dr || memcmp(out, d, CS)) {
				if (fails++ < 5)
					diag("%s: %s chunk %d/%llu as %s: %s", m->name, tname[it->type], it->img,
					     (unsigned long long)it->idx, chunk_kind_name(rec.kind), ho_strerror(dr));
			}
			kinds_of[it->type][rec.kind]++;
			total += rec.len;
			if (it->type == T_SHIFT)
				edit_bytes += rec.len, nedit++;
			if (it->type == T_HEAP)
				heap_bytes += rec.len, nheap++;
		}
		is_int(rc, 0, "encode without errors");
		ok(fails == 0, "%s: %zu chunks round-trip (%zu payload bytes)", m->name, n, total);
		ok(nondet == 0, "%s: deterministic, whichever way the base is read", m->name);
		if (m->dedup & MODE_DEDUP_ZERO)
			ok(kinds_of[T_ZERO][CHUNK_ZERO] > 0, "%s: zero chunks become ZERO records", m->name);
		if (m->dedup & MODE_DEDUP_BASE) {
			uint64_t all = 0;
			for (int k = 0; k < CHUNK_NKINDS; k++)
				all += kinds_of[T_COPY_OTHER_IMG][k];
			ok(kinds_of[T_COPY_OTHER_IMG][CHUNK_BASEREF] > 0 &&
			   kinds_of[T_COPY_OTHER_IMG][CHUNK_BASEREF] + kinds_of[T_COPY_OTHER_IMG][CHUNK_SENTREF] == all,
			   "%s: copies of the other image's base chunks become BASEREF (disk<->memory)", m->name);
			ok(kinds_of[T_SAME][CHUNK_BASEREF] > 0 && kinds_of[T_SAME][CHUNK_RAW] == 0,
			   "%s: unchanged chunks become BASEREF", m->name);
		}
		if (m->dedup & MODE_DEDUP_SENT)
			ok(kinds_of[T_DUP][CHUNK_SENTREF] > 0, "%s: duplicates of new data become SENTREF", m->name);
		if (m->delta == MODE_DELTA_XOR)
			ok(kinds_of[T_EDIT][CHUNK_XOR] > 0, "%s: edits become XOR", m->name);
		if (m->delta == MODE_DELTA_DICT) {
			ok(kinds_of[T_EDIT][CHUNK_XOR] > 0, "%s: sparse edits become XOR", m->name);
			/* lz4's greedy parser keeps losing the long match in this very repetitive text */
			size_t lim = m->delta_codec == CODEC_LZ4 ? CS / 4 : 300;
			ok(nedit && edit_bytes / nedit < lim, "%s: insertions cost %zu bytes each", m->name,
			   nedit ? edit_bytes / nedit : 0);
			if (m->far)
				ok(nheap && heap_bytes / nheap < CS / 4, "%s: heap pages of unaligned far copies cost %zu bytes each",
				   m->name, nheap ? heap_bytes / nheap : 0);
		}
		chunk_enc_free(enc);
		chunk_enc_free(enc2);
		sentset_free(ss);
	}

	/* SENTREF validity: an entry only serves records after it */
	{
		struct sentset *ss = sentset_new();
		const struct mode *m = mode_find("xor-lz4");
		struct chunk_enc *enc;
		uint8_t fp[16], *d = malloc(CS);
		fill_random(d, CS);
		ho_xxh128(d, CS, fp);
		sentset_add(ss, fp, 1, 7, 5);
		chunk_enc_new(m, &base, ss, &enc);
		struct chunk_rec rec;
		chunk_encode(enc, 0, 3, d, CS, 5, pl, pb, &rec);
		ok(rec.kind != CHUNK_SENTREF, "no SENTREF to a record at the same position");
		chunk_encode(enc, 0, 3, d, CS, 6, pl, pb, &rec);
		ok(rec.kind == CHUNK_SENTREF && rec.ref_img == 1 && rec.ref_idx == 7, "SENTREF to an earlier record");
		ok(rec.has_fp && memcmp(rec.fp, fp, 16) == 0, "the record carries the chunk's fingerprint");
		sentset_invalidate(ss, 1, 7);
		chunk_encode(enc, 0, 3, d, CS, 6, pl, pb, &rec);
		ok(rec.kind != CHUNK_SENTREF, "no SENTREF after the location was invalidated");
		/* a short last chunk */
		is_int(chunk_encode(enc, 0, DISK_CHUNKS - 1, d, 100, 9, pl, pb, &rec), 0, "short chunk encodes");
		is_int(chunk_encode(enc, 0, DISK_CHUNKS, d, CS, 9, pl, pb, &rec), HO_EINVAL, "chunk beyond the image refused");
		is_int(chunk_encode(enc, 0, 1, d, CS, 9, pl, 10, &rec), HO_EINVAL, "small payload buffer refused");
		chunk_enc_free(enc);
		sentset_free(ss);
		free(d);
	}

	/* hostile payloads */
	{
		uint8_t p[64];
		int bad = 0;
		p[0] = 0; p[1] = 0x80; /* truncated uleb */
		bad += chunk_decode(dec, 0, 1, CHUNK_BASEREF, p, 2, out, CS, NULL, NULL) != HO_EFORMAT;
		p[0] = 2; p[1] = 1;    /* image 2 */
		bad += chunk_decode(dec, 0, 1, CHUNK_BASEREF, p, 2, out, CS, NULL, NULL) != HO_EFORMAT;
		p[0] = 1; size_t l = 1 + delta_put_uleb(p + 1, MEM_CHUNKS);   /* one past the end */
		bad += chunk_decode(dec, 0, 1, CHUNK_BASEREF, p, l, out, CS, NULL, NULL) != HO_EFORMAT;
		p[0] = 1; p[1] = 0x81; p[2] = 0x00;                           /* overlong uleb */
		bad += chunk_decode(dec, 0, 1, CHUNK_BASEREF, p, 3, out, CS, NULL, NULL) != HO_EFORMAT;
		bad += chunk_decode(dec, 0, 1, CHUNK_SENTREF, (uint8_t[]){ 0, 1 }, 2, out, CS, NULL, NULL) != HO_EINVAL;
		bad += chunk_decode(dec, 0, 1, CHUNK_RAW, p, 10, out, CS, NULL, NULL) != HO_EFORMAT;
		bad += chunk_decode(dec, 0, 1, CHUNK_XOR, p, 10, out, CS, NULL, NULL) != HO_EFORMAT;
		bad += chunk_decode(dec, 0, 1, CHUNK_ZERO, p, 1, out, CS, NULL, NULL) != HO_EFORMAT;
		bad += chunk_decode(dec, 0, 1, (enum chunk_kind)9, p, 1, out, CS, NULL, NULL) != HO_EFORMAT;
		/* DELTA: bad codec, window too large, too many regions, region beyond the image */
		uint8_t d1[] = { 9, 0, 0, 0, 1, 2, 3 };
		bad += chunk_decode(dec, 0, 1, CHUNK_DELTA, d1, sizeof(d1), out, CS, NULL, NULL) != HO_EFORMAT;
		uint8_t d2[] = { CODEC_ZSTD, 65, 0, 0, 1, 2, 3 };
		bad += chunk_decode(dec, 0, 1, CHUNK_DELTA, d2, sizeof(d2), out, CS, NULL, NULL) != HO_EFORMAT;
		uint8_t d3[] = { CODEC_ZSTD, 0, 0, DELTA_MAX_FAR + 1, 1, 2, 3 };
		bad += chunk_decode(dec, 0, 1, CHUNK_DELTA, d3, sizeof(d3), out, CS, NULL, NULL) != HO_EFORMAT;
		uint8_t d4[16] = { CODEC_ZSTD, 0, 0, 1, 1 };
		l = 5 + delta_put_uleb(d4 + 5, mb.size[1] - 10);
		l += delta_put_uleb(d4 + l, 11);
		bad += chunk_decode(dec, 0, 1, CHUNK_DELTA, d4, l + 2, out, CS, NULL, NULL) != HO_EFORMAT;
		uint8_t d5[] = { CODEC_ZSTD, 1, 1, 0, 0xde, 0xad, 0xbe, 0xef };
		bad += chunk_decode(dec, 0, 1, CHUNK_DELTA, d5, sizeof(d5), out, CS, NULL, NULL) != HO_EFORMAT;
		ok(bad == 0, "hostile payloads refused with the documented errors (%d wrong)", bad);
	}
	/* uleb */
	{
		uint8_t b[10];
		uint64_t v, vals[] = { 0, 1, 127, 128, 300, 1ull << 35, UINT64_MAX };
		int bad = 0;
		for (size_t i = 0; i < HO_ARRAY_SIZE(vals); i++) {
			size_t l = delta_put_uleb(b, vals[i]);
			bad += delta_get_uleb(b, l, &v) != l || v != vals[i] || delta_get_uleb(b, l - 1, &v) != 0;
		}
		ok(bad == 0, "uleb128 round trips and truncation");
	}
	chunk_dec_free(dec);
	for (int i = 0; i < 2; i++) {
		baseidx_free((struct baseidx *)base.index[i]);
		close(fds[i]);
		free(mb.img[i]);
		free(new_img[i]);
		free(mark[i]);
	}
	free(items); free(pl); free(pl2); free(out);
	return done_testing();
}
