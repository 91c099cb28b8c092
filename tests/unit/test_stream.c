/*
 * test_stream.c — the stream format in memory: encode a small reference stream, decode it back
 * (whole, byte by byte, with and without a key, with frame codecs), then damage it every way the
 * format promises to catch: every truncation point, every single-bit flip, reordered, duplicated
 * and foreign frames, trailing bytes, wrong and missing keys, a future version.
 */
#include <stdlib.h>
#include <string.h>
#include "common/common.h"
#include "pipeline/stream.h"
#include "tests/unit/tap.h"

#define CS 512u
#define DISK_SIZE (CS * 24)
#define MEM_SIZE (CS * 8 + 100)       /* a short last chunk */

struct buf { uint8_t *p; size_t len, cap; size_t frame_off[64]; size_t frame_len[64]; int nframes; };

static int sink(void *arg, const struct stream_piece *pc)
{
	struct buf *b = arg;
	if (b->len + pc->len > b->cap) {
		b->cap = (b->len + pc->len) * 2;
		b->p = realloc(b->p, b->cap);
	}
	if (pc->kind != STREAM_EMIT_HEADER && b->nframes < 64) {
		b->frame_off[b->nframes] = b->len;
		b->frame_len[b->nframes++] = pc->len;
	}
	memcpy(b->p + b->len, pc->buf, pc->len);
	b->len += pc->len;
	return 0;
}

static uint8_t base_byte(int img, uint64_t off) { return (uint8_t)(img * 31 + off * 7 + (off >> 9)); }

static int read_base(void *arg, int img, uint64_t off, uint8_t *out, uint32_t len)
{
	(void)arg;
	for (uint32_t i = 0; i < len; i++)
		out[i] = base_byte(img, off + i);
	return 0;
}

/* The receiver's image: starts as the base; chunks are applied as they come. */
struct rx { uint8_t img[2][DISK_SIZE]; int nchunks; int ended; };

static int read_sent(void *arg, int img, uint64_t idx, uint8_t *out, uint32_t len)
{
	struct rx *r = arg;
	memcpy(out, r->img[img] + idx * CS, len);
	return 0;
}

static int on_chunk(void *arg, const struct stream_chunk *c)
{
	struct rx *r = arg;
	memcpy(r->img[c->image] + c->idx * CS, c->data, c->len);
	r->nchunks++;
	return 0;
}

static int on_end(void *arg, const struct stream_end *e)
{
	(void)e;
	((struct rx *)arg)->ended = 1;
	return 0;
}

static const struct stream_dec_ops ops = { NULL, read_base, read_sent, on_chunk, NULL, on_end };

static void rx_init(struct rx *r)
{
	memset(r, 0, sizeof(*r));
	for (int i = 0; i < 2; i++)
		read_base(NULL, i, 0, r->img[i], i ? MEM_SIZE : DISK_SIZE);
}

static void header_init(struct stream_header *h, uint8_t tag)
{
	memset(h, 0, sizeof(*h));
	memset(h->id, tag, sizeof(h->id));
	memset(h->sender, 0x5a, sizeof(h->sender));
	h->since = 3;
	h->until = 7;
	h->chunk_size = CS;
	h->frame_max = 1400;
	strcpy(h->mode, "test");
	h->image[0].size = h->image[0].base.size = DISK_SIZE;
	h->image[1].size = h->image[1].base.size = MEM_SIZE;
	memset(h->image[0].base.digest, 1, 32);
	memset(h->image[1].base.digest, 2, 32);
}

/* The sender's images: the base with some chunks changed. */
static uint8_t tx[2][DISK_SIZE];

static void tx_init(void);

static unsigned enc_threads;
static uint8_t xorbuf[CS];

static int encode_twist(struct buf *b, uint8_t tag, const char *key, int codec, int level,
			struct stream_end *end, int twist)
{
	struct stream_header h;
	struct stream_enc *e;
	int rc;

	tx_init();
	memset(b, 0, sizeof(*b));
	header_init(&h, tag);
	rc = stream_enc_new(&h, key, key ? strlen(key) : 0, codec, level, sink, b, &e);
	if (rc)
		return rc;
	if ((rc = stream_enc_set_threads(e, enc_threads)))
		goto out;
	for (int img = 0; img < 2; img++) {
		uint64_t size = img ? MEM_SIZE : DISK_SIZE;
		for (uint64_t idx = 0; idx < stream_nchunks(size, CS); idx++) {
			struct stream_chunk c = { .image = img, .idx = idx };
			c.len = stream_chunk_len(size, CS, idx);
			c.data = tx[img] + idx * CS;
			switch ((idx * 7 + img + tag) % 9) {
			case 0: case 1:
				c.enc = STREAM_ENC_RAW;
				for (uint32_t i = 0; i < c.len; i += 3)
					tx[img][idx * CS + i] ^= (uint8_t)(i * 13 + 1 + twist);
				break;
			case 3: c.enc = STREAM_ENC_ZERO; memset(tx[img] + idx * CS, 0, c.len); break;
			case 4:            /* equal to a base chunk elsewhere */
				c.enc = STREAM_ENC_BASE_REF;
				c.src_image = 0;
				c.src_idx = (idx + 5) % (DISK_SIZE / CS);
				if (c.len != CS)
					c.src_idx = 0, c.enc = STREAM_ENC_RAW;
				else
					read_base(NULL, 0, c.src_idx * CS, tx[img] + idx * CS, CS);
				break;
			case 5:            /* equal to a chunk sent before (disk chunk 0 or 1) */
				if (img == 1 && c.len == CS) {
					c.enc = STREAM_ENC_SENT_REF;
					c.src_image = 0;
					c.src_idx = 2;
					memcpy(tx[img] + idx * CS, tx[0] + 2 * CS, CS);
				} else
					continue;
				break;
			case 6:            /* a sparse edit, sent as XOR with the base */
				if (c.len != CS)
					continue;
				c.enc = STREAM_ENC_XOR_BASE;
				tx[img][idx * CS + 17] ^= 0x40;
				tx[img][idx * CS + 300] ^= 0x01;
				read_base(NULL, img, idx * CS, xorbuf, CS);
				for (uint32_t i = 0; i < CS; i++)
					xorbuf[i] ^= tx[img][idx * CS + i];
				c.payload = xorbuf;
				c.payload_len = CS;
				break;
			default: continue; /* unchanged */
			}
			if ((rc = stream_enc_chunk(e, &c)))
				goto out;
		}
	}
	rc = stream_enc_finish(e, end);
out:
	stream_enc_free(e);
	return rc;
}

static void tx_init(void)
{
	for (int img = 0; img < 2; img++)
		read_base(NULL, img, 0, tx[img], img ? MEM_SIZE : DISK_SIZE);
}

static int encode(struct buf *b, uint8_t tag, const char *key, int codec, int level, struct stream_end *end)
{
	return encode_twist(b, tag, key, codec, level, end, 0);
}

/* Decode b (len bytes, step bytes per feed) into a fresh receiver; returns the error. */
static unsigned dec_threads;
static char last_msg[256];
static size_t damage_stride = 1;   /* test every n-th truncation point and bit */

static int decode(const uint8_t *p, size_t len, const char *key, size_t step, struct rx *r)
{
	struct stream_dec *d;
	int rc;

	rx_init(r);
	if (stream_dec_new(key, key ? strlen(key) : 0, &ops, r, &d))
		return HO_ENOMEM;
	if (stream_dec_set_threads(d, dec_threads)) {
		stream_dec_free(d);
		return HO_ESTATE;
	}
	stream_dec_set_quiet(d, true);
	rc = 0;
	for (size_t off = 0; off < len && !rc; ) {
		size_t n = HO_MIN(step, len - off);
		rc = stream_dec_feed(d, p + off, &n);
		off += n;
	}
	if (!rc)
		rc = stream_dec_finish(d);
	snprintf(last_msg, sizeof(last_msg), "%s", stream_dec_errmsg(d));
	stream_dec_free(d);
	return rc;
}

static bool images_match(const struct rx *r)
{
	return memcmp(r->img[0], tx[0], DISK_SIZE) == 0 && memcmp(r->img[1], tx[1], MEM_SIZE) == 0;
}

static bool is_verify_error(int rc)
{
	return rc == HO_ETRUNC || rc == HO_ECHECKSUM || rc == HO_ESEQ || rc == HO_EAUTH || rc == HO_EFORMAT ||
	       rc == HO_EVERSION || rc == HO_EDIGEST || rc == HO_ETRAILING;
}

/* Every prefix and every single-bit flip of b must be rejected with a verification error. */
static void damage_all(const struct buf *b, const char *key, const char *what)
{
	uint8_t *p = malloc(b->len + 1);
	struct rx *r = malloc(sizeof(*r));
	size_t bad = 0, not_trunc = 0, applied = 0;

	for (size_t cut = 0; cut < b->len; cut += damage_stride) {
		int rc = decode(b->p, cut, key, b->len, r);
		if (rc != HO_ETRUNC)
			not_trunc++;
		if (r->ended)
			applied++;
	}
	ok(not_trunc == 0 && applied == 0, "%s: all %zu truncation points give HO_ETRUNC", what, b->len / damage_stride);
	for (size_t bit = 0; bit < b->len * 8; bit += damage_stride) {
		memcpy(p, b->p, b->len);
		p[bit / 8] ^= (uint8_t)(1u << (bit % 8));
		int rc = decode(p, b->len, key, b->len, r);
		if (!is_verify_error(rc) || r->ended) {
			if (bad++ < 5)
				diag("bit %zu (byte %zu): rc %d (%s), ended %d", bit, bit / 8, rc, ho_strerror(rc), r->ended);
		}
	}
	ok(bad == 0, "%s: all %zu single-bit flips rejected", what, b->len * 8 / damage_stride);
	free(p);
	free(r);
}

/* Frames close at STREAM_FRAME_CHUNKS bytes of chunks even when their payload is tiny: 200 MiB
 * of zero chunks (one record per run, 20 bytes) go in 4 frames, none standing for more than the
 * bound, and together for every chunk. */
struct count { int frames; uint64_t chunk_bytes, max_chunks; };
static int count_sink(void *arg, const struct stream_piece *pc)
{
	struct count *n = arg;
	if (pc->kind == STREAM_EMIT_FRAME) {
		n->frames++;
		n->chunk_bytes += pc->chunk_bytes;
		n->max_chunks = HO_MAX(n->max_chunks, pc->chunk_bytes);
	}
	return 0;
}

static void test_frame_chunks(void)
{
	const uint32_t cs = 64 * 1024;
	const uint64_t size = 200ull << 20;
	struct stream_header h;
	struct stream_enc *e;
	struct count n = { 0 };
	int rc;

	header_init(&h, 9);
	h.chunk_size = cs;
	h.frame_max = 1u << 20;
	h.image[0].size = h.image[0].base.size = size;
	h.image[1].size = h.image[1].base.size = cs;
	rc = stream_enc_new(&h, NULL, 0, STREAM_CODEC_NONE, 0, count_sink, &n, &e);
	for (uint64_t idx = 0; rc == 0 && idx < size / cs; idx++) {
		struct stream_chunk c = { .image = 0, .idx = idx, .len = cs, .enc = STREAM_ENC_ZERO };
		rc = stream_enc_chunk(e, &c);
	}
	if (rc == 0)
		rc = stream_enc_finish(e, NULL);
	stream_enc_free(e);
	is_int(rc, 0, "encode 200 MiB of zero chunks");
	ok(n.frames == 4 && n.chunk_bytes == size && n.max_chunks <= STREAM_FRAME_CHUNKS,
	   "...in 4 frames of at most %llu bytes of chunks (%d frames, largest %llu, %llu in all)",
	   (unsigned long long)STREAM_FRAME_CHUNKS, n.frames, (unsigned long long)n.max_chunks,
	   (unsigned long long)n.chunk_bytes);
}

/* With workers, the digest runs on a thread of its own through an 8 MiB ring: 40 MiB of chunks
 * (raw, zero and references mixed, so the ring wraps mid-chunk) give the END digest the
 * encoder without workers gives, and the same stream. */
static int digest_run(unsigned threads, struct stream_end *end, struct buf *b)
{
	const uint32_t cs = 4096;             /* 9 + 4096 bytes a chunk: pieces straddle the ring's end */
	const uint64_t size = 40ull << 20;
	struct stream_header h;
	struct stream_enc *e;
	uint8_t *data = malloc(cs);
	int rc;

	memset(b, 0, sizeof(*b));
	header_init(&h, 11);
	h.chunk_size = cs;
	h.frame_max = 1u << 20;
	h.image[0].size = h.image[0].base.size = size;
	h.image[1].size = h.image[1].base.size = cs;
	rc = stream_enc_new(&h, NULL, 0, STREAM_CODEC_LZ4, 1, sink, b, &e);
	if (!rc && threads > 1)
		rc = stream_enc_set_threads(e, threads);
	for (uint64_t idx = 0; rc == 0 && idx < size / cs; idx++) {
		for (uint32_t i = 0; i < cs; i++)
			data[i] = (uint8_t)(idx * 131 + i * (idx % 7 + 1));
		struct stream_chunk c = { .image = 0, .idx = idx, .len = cs, .data = data, .enc = STREAM_ENC_RAW };
		if (idx % 5 == 1) {
			c.enc = STREAM_ENC_ZERO;
			c.data = NULL;
		} else if (idx % 5 == 3) {
			c.enc = STREAM_ENC_BASE_REF;
			c.src_image = 0;
			c.src_idx = idx;
		}
		rc = stream_enc_chunk(e, &c);
	}
	if (rc == 0)
		rc = stream_enc_finish(e, end);
	stream_enc_free(e);
	free(data);
	return rc;
}

static void test_digest_thread(void)
{
	struct stream_end e1, e2;
	struct buf b1, b2;

	is_int(digest_run(1, &e1, &b1), 0, "40 MiB of chunks, no workers");
	is_int(digest_run(2, &e2, &b2), 0, "the same with 2 workers (the digest on its own thread)");
	is_mem(e2.digest, e1.digest, 32, "  ... the same digest");
	ok(b1.len == b2.len && memcmp(b1.p, b2.p, b1.len) == 0, "  ... and the same stream (%zu bytes)", b2.len);
	free(b1.p);
	free(b2.p);
}

int main(void)
{
	struct buf b, b2, bk;
	struct stream_end end;
	struct rx *r = malloc(sizeof(*r));
	const char *key = "0123456789abcdef-secret";
	int rc;

	ho_log_init("test_stream");
	tx_init();
	rc = encode(&b, 1, NULL, STREAM_CODEC_NONE, 0, &end);
	is_int(rc, 0, "encode reference stream");
	diag("reference stream: %zu bytes, %d frames, %llu+%llu chunks", b.len, b.nframes,
	     (unsigned long long)end.chunks[0], (unsigned long long)end.chunks[1]);
	ok(b.nframes >= 4 && b.len < 8192, "reference stream is small and has several frames");
	ok(end.chunks[0] > 10 && end.chunks[1] > 3, "reference stream carries chunks of both images");

	is_int(decode(b.p, b.len, NULL, b.len, r), 0, "decode whole stream");
	ok(images_match(r) && r->ended, "decoded images equal the sender's");
	is_int(decode(b.p, b.len, NULL, 1, r), 0, "decode one byte at a time");
	ok(images_match(r), "byte-at-a-time images equal the sender's");
	is_int(decode(b.p, b.len, NULL, 77, r), 0, "decode in 77-byte pieces");

	/* determinism: the same input gives the same bytes */
	tx_init();
	rc = encode(&b2, 1, NULL, STREAM_CODEC_NONE, 0, NULL);
	ok(rc == 0 && b2.len == b.len && memcmp(b2.p, b.p, b.len) == 0, "encoding is deterministic");
	free(b2.p);

	/* codecs */
	for (int c = STREAM_CODEC_LZ4; c < STREAM_CODEC_COUNT; c++) {
		int level = c == STREAM_CODEC_LZ4HC ? 9 : c == STREAM_CODEC_LZMA ? 6 : c == STREAM_CODEC_ZSTD ? 3 : 1;
		tx_init();
		rc = encode(&b2, 1, NULL, c, level, NULL);
		is_int(rc, 0, "encode with a codec");
		is_int(decode(b2.p, b2.len, NULL, b2.len, r), 0, "decode frames compressed by a codec");
		ok(images_match(r), "codec %s: images equal (%zu bytes vs %zu raw)", stream_codec_name(c), b2.len, b.len);
		free(b2.p);
	}

	/* parallel compression gives the same bytes */
	for (int c = STREAM_CODEC_LZ4; c <= STREAM_CODEC_ZSTD; c += 2) {
		struct buf b3;
		enc_threads = 0;
		encode(&b2, 1, key, c, c == STREAM_CODEC_ZSTD ? 3 : 1, NULL);
		enc_threads = 3;
		encode(&b3, 1, key, c, c == STREAM_CODEC_ZSTD ? 3 : 1, NULL);
		enc_threads = 0;
		ok(b2.len == b3.len && memcmp(b2.p, b3.p, b2.len) == 0 && b2.nframes >= 4,
		   "codec %s: 3 threads give the same %zu bytes as 1", stream_codec_name(c), b2.len);
		is_int(decode(b3.p, b3.len, key, b3.len, r), 0, "decode the stream compressed on 3 threads");
		free(b2.p);
		free(b3.p);
	}

	/* parallel decoding: same images, same errors, in order */
	dec_threads = 3;
	is_int(decode(b.p, b.len, NULL, b.len, r), 0, "3 decoding threads: decode whole stream");
	ok(images_match(r) && r->ended, "3 decoding threads: images equal the sender's");
	is_int(decode(b.p, b.len, NULL, 1, r), 0, "3 decoding threads: one byte at a time");
	ok(images_match(r), "3 decoding threads, byte at a time: images equal");
	for (int c = STREAM_CODEC_LZ4; c < STREAM_CODEC_COUNT; c += 3) {
		tx_init();
		encode(&b2, 1, NULL, c, c == STREAM_CODEC_LZMA ? 6 : 1, NULL);
		rc = decode(b2.p, b2.len, NULL, 100, r);
		ok(rc == 0, "3 decoding threads: codec %s in 100-byte pieces (%d)", stream_codec_name(c), rc);
		ok(images_match(r), "3 decoding threads: codec %s images equal", stream_codec_name(c));
		free(b2.p);
	}
	for (unsigned t = 0; t <= 3; t += 3) {
		/* a record made invalid in frame 2 with valid checksums: the frames before it are handed
		 * out, then the format error; nothing after */
		uint8_t *p = malloc(b.len);
		size_t f = b.frame_off[2];
		uint32_t enc_len;
		dec_threads = t;
		memcpy(p, b.p, b.len);
		enc_len = ho_get_le32(p + f + 36);
		p[f + 64 + 1] = 7;                      /* the first record's image */
		ho_put_le64(p + f + 48, ho_xxh64(p + f + 64, enc_len));
		ho_put_le64(p + f + 56, ho_xxh64(p + f, 56));
		ho_put_le64(p + b.frame_off[3] + 40, ho_get_le64(p + f + 56));
		ho_put_le64(p + b.frame_off[3] + 56, ho_xxh64(p + b.frame_off[3], 56));
		rc = decode(p, b.len, NULL, b.len, r);
		ok(rc == HO_EFORMAT, "%u threads: bad record with valid checksums: HO_EFORMAT (%d: %s)", t, rc, last_msg);
		ok(r->nchunks > 0 && !r->ended, "%u threads: the chunks of frames 0 and 1 were handed out, no more (%zu)",
		   t, (size_t)r->nchunks);
		free(p);
	}
	dec_threads = 3;
	damage_stride = 7;
	damage_all(&b, NULL, "3 decoding threads, every 7th");
	damage_stride = 1;
	dec_threads = 0;

	/* damage: truncation and bit flips, unauthenticated */
	damage_all(&b, NULL, "unauthenticated");

	/* trailing bytes */
	{
		uint8_t *p = malloc(b.len + 1);
		memcpy(p, b.p, b.len);
		p[b.len] = 0;
		is_int(decode(p, b.len + 1, NULL, b.len + 1, r), HO_ETRAILING, "a byte after END: HO_ETRAILING");
		free(p);
	}

	/* reorder, duplicate, foreign frames */
	{
		uint8_t *p = malloc(b.len * 2);
		size_t f1 = b.frame_off[1], l1 = b.frame_len[1], f2 = b.frame_off[2], l2 = b.frame_len[2], n;
		/* swap frames 1 and 2 */
		memcpy(p, b.p, f1);
		memcpy(p + f1, b.p + f2, l2);
		memcpy(p + f1 + l2, b.p + f1, l1);
		memcpy(p + f1 + l2 + l1, b.p + f2 + l2, b.len - f2 - l2);
		is_int(decode(p, b.len, NULL, b.len, r), HO_ESEQ, "reordered frames: HO_ESEQ");
		ok(!r->ended, "reordered stream not finished");
		/* duplicate frame 1 */
		memcpy(p, b.p, f2);
		memcpy(p + f2, b.p + f1, l1);
		memcpy(p + f2 + l1, b.p + f2, b.len - f2);
		is_int(decode(p, b.len + l1, NULL, b.len, r), HO_ESEQ, "duplicated frame: HO_ESEQ");
		/* drop frame 1 */
		memcpy(p, b.p, f1);
		memcpy(p + f1, b.p + f2, b.len - f2);
		is_int(decode(p, b.len - l1, NULL, b.len, r), HO_ESEQ, "missing frame: HO_ESEQ");
		/* frame 1 from another stream (other id) */
		tx_init();
		encode(&b2, 2, NULL, STREAM_CODEC_NONE, 0, NULL);
		n = 0;
		memcpy(p, b.p, f1); n = f1;
		memcpy(p + n, b2.p + b2.frame_off[1], b2.frame_len[1]); n += b2.frame_len[1];
		memcpy(p + n, b.p + f2, b.len - f2); n += b.len - f2;
		is_int(decode(p, n, NULL, b.len, r), HO_ESEQ, "frame from another stream: HO_ESEQ");
		free(b2.p);
		/* same stream id, other content (a stream regenerated after the data changed) */
		encode_twist(&b2, 1, NULL, STREAM_CODEC_NONE, 0, NULL, 1);
		memcpy(p, b.p, b.frame_off[2]); n = b.frame_off[2];
		memcpy(p + n, b2.p + b2.frame_off[2], b2.len - b2.frame_off[2]); n += b2.len - b2.frame_off[2];
		rc = decode(p, n, NULL, b.len, r);
		ok(rc == HO_ESEQ || rc == HO_EDIGEST, "spliced stream with the same id: rejected (%s)", ho_strerror(rc));
		free(b2.p);
		free(p);
	}

	/* version from the future (with a valid checksum) */
	{
		uint8_t *p = malloc(b.len);
		memcpy(p, b.p, b.len);
		ho_put_le16(p + 8, 2);
		ho_put_le64(p + 216, ho_xxh64(p, 216));
		is_int(decode(p, b.len, NULL, b.len, r), HO_EVERSION, "version 2 stream: HO_EVERSION");
		memcpy(p, "NOTASTRM", 8);
		is_int(decode(p, b.len, NULL, b.len, r), HO_EFORMAT, "bad magic: HO_EFORMAT");
		free(p);
	}

	/* authentication */
	tx_init();
	rc = encode(&bk, 1, key, STREAM_CODEC_NONE, 0, NULL);
	is_int(rc, 0, "encode authenticated stream");
	is_int(decode(bk.p, bk.len, key, bk.len, r), 0, "decode with the right key");
	ok(images_match(r), "authenticated images equal");
	is_int(decode(bk.p, bk.len, "wrong-key-wrong-key", bk.len, r), HO_EAUTH, "wrong key: HO_EAUTH");
	ok(r->nchunks == 0, "wrong key: nothing handed out");
	is_int(decode(bk.p, bk.len, NULL, bk.len, r), HO_EAUTH, "missing key: HO_EAUTH");
	is_int(decode(b.p, b.len, key, b.len, r), HO_EAUTH, "key given for an unauthenticated stream: HO_EAUTH");
	{
		/* an attacker recomputes the xxh3 checksums after changing data: the MAC catches it */
		uint8_t *p = malloc(bk.len);
		size_t f = bk.frame_off[0];
		uint32_t enc_len;
		memcpy(p, bk.p, bk.len);
		enc_len = ho_get_le32(p + f + 36);
		p[f + 64 + 30] ^= 1;
		ho_put_le64(p + f + 48, ho_xxh64(p + f + 64, enc_len));
		ho_put_le64(p + f + 56, ho_xxh64(p + f, 56));
		/* and fixes the next frame's chain value */
		ho_put_le64(p + bk.frame_off[1] + 40, ho_get_le64(p + f + 56));
		ho_put_le64(p + bk.frame_off[1] + 56, ho_xxh64(p + bk.frame_off[1], 56));
		is_int(decode(p, bk.len, key, bk.len, r), HO_EAUTH, "forged frame with valid checksums: HO_EAUTH");
		is_int(decode(p, bk.len, NULL, bk.len, r), HO_EAUTH, "(and without key: HO_EAUTH)");
		free(p);
	}
	damage_all(&bk, key, "authenticated");
	test_frame_chunks();
	test_digest_thread();

	free(b.p);
	free(bk.p);
	free(r);
	return done_testing();
}
