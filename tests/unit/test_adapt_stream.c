/*
 * test_adapt_stream.c — the stream encoder's hooks for the adaptive exporter: a frame limit below
 * the header's frame_max that can change between frames (stream_enc_set_frame_limit: strong codecs
 * get large frames, light ones small), and closing the frame being collected at once
 * (stream_enc_flush_frame, at a switch of mode). Frames must respect the limit in force when they
 * were collected, never exceed the header's frame_max, carry the codec set when they were closed,
 * and the stream must decode to the same chunks whatever the limits and flushes; threaded frame
 * compression must give the same bytes.
 */
#include <stdlib.h>
#include <string.h>
#include "common/common.h"
#include "pipeline/stream.h"
#include "tests/unit/tap.h"

#define CS 4096u
#define NCHUNKS 96u
#define IMG_SIZE ((uint64_t)CS * NCHUNKS)

struct frame { size_t raw, len; int codec; };
struct sink { uint8_t *p; size_t len, cap; struct frame f[256]; int n; uint64_t chunk_bytes, literal_bytes; };

static int sink(void *arg, const struct stream_piece *pc)
{
	struct sink *b = arg;

	if (b->len + pc->len > b->cap) {
		b->cap = (b->len + pc->len) * 2;
		b->p = realloc(b->p, b->cap);
	}
	if (pc->kind == STREAM_EMIT_FRAME && b->n < 256) {
		b->f[b->n].raw = pc->input_bytes;
		b->f[b->n].len = pc->len;
		b->f[b->n].codec = pc->buf[1];     /* the frame header's codec byte (handoff-stream(5)) */
		b->n++;
	}
	if (pc->kind == STREAM_EMIT_FRAME) {
		b->chunk_bytes += pc->chunk_bytes;
		b->literal_bytes += pc->literal_bytes;
	}
	memcpy(b->p + b->len, pc->buf, pc->len);
	b->len += pc->len;
	return 0;
}

static uint8_t data[IMG_SIZE];
static bool zero_thirds;     /* encode() sends every third chunk as ZERO */

static void header_init(struct stream_header *h, uint32_t frame_max)
{
	memset(h, 0, sizeof(*h));
	memset(h->id, 0x5a, sizeof(h->id));
	memset(h->sender, 0xa5, sizeof(h->sender));
	h->until = 1;
	h->chunk_size = CS;
	h->frame_max = frame_max;
	strcpy(h->mode, "adaptive");
	h->image[0].size = IMG_SIZE;
	h->image[1].size = IMG_SIZE;
}

/* Encode every chunk of image 0 as RAW (so a frame's raw size is what its records took), with
 * frame limits and flushes from a script: at chunk i, limit[i] (0: keep) and flush[i]. */
static int encode(struct sink *b, uint32_t frame_max, const uint32_t *limit, const bool *flush, int codec_at_flush,
		  unsigned threads)
{
	struct stream_header h;
	struct stream_enc *e;
	struct stream_end end;
	int rc;

	memset(b, 0, sizeof(*b));
	header_init(&h, frame_max);
	if ((rc = stream_enc_new(&h, NULL, 0, STREAM_CODEC_ZSTD, 3, sink, b, &e)))
		return rc;
	if (threads > 1 && (rc = stream_enc_set_threads(e, threads)))
		goto out;
	for (uint32_t i = 0; i < NCHUNKS; i++) {
		struct stream_chunk c = { .image = 0, .idx = i, .len = CS,
					  .enc = zero_thirds && i % 3 == 0 ? STREAM_ENC_ZERO : STREAM_ENC_RAW,
					  .data = data + (size_t)i * CS };
		if (flush && flush[i]) {
			if ((rc = stream_enc_flush_frame(e)))
				goto out;
			if (codec_at_flush >= 0 && (rc = stream_enc_set_codec(e, codec_at_flush, 1)))
				goto out;
		}
		if (limit && limit[i])
			stream_enc_set_frame_limit(e, limit[i]);
		if ((rc = stream_enc_chunk(e, &c)))
			goto out;
	}
	rc = stream_enc_finish(e, &end);
out:
	stream_enc_free(e);
	return rc;
}

struct rx { uint8_t img[IMG_SIZE]; unsigned n; bool ended; };

static int on_chunk(void *arg, const struct stream_chunk *c)
{
	struct rx *r = arg;
	if (c->image != 0 || c->idx >= NCHUNKS)
		return HO_EINVAL;
	memcpy(r->img + c->idx * CS, c->data, c->len);
	r->n++;
	return 0;
}

static int on_end(void *arg, const struct stream_end *e)
{
	(void)e;
	((struct rx *)arg)->ended = true;
	return 0;
}

static bool decodes(const struct sink *b)
{
	static const struct stream_dec_ops ops = { NULL, NULL, NULL, on_chunk, NULL, on_end };
	static struct rx r;
	struct stream_dec *d;
	size_t len = b->len;
	bool good;

	memset(&r, 0, sizeof(r));
	if (stream_dec_new(NULL, 0, &ops, &r, &d))
		return false;
	good = stream_dec_feed(d, b->p, &len) == 0 && stream_dec_finish(d) == 0 && r.ended && r.n == NCHUNKS &&
	       memcmp(r.img, data, IMG_SIZE) == 0;
	stream_dec_free(d);
	return good;
}

int main(void)
{
	struct sink a, b;
	uint32_t limit[NCHUNKS] = { 0 };
	bool flush[NCHUNKS] = { false };
	size_t rec = CS, max;
	bool within;

	ho_log_init("test_adapt_stream");
	/* compressible but not trivial: text-like runs with a counter */
	for (size_t i = 0; i < IMG_SIZE; i++)
		data[i] = (uint8_t)("handoff adaptive frames "[i % 24] + (i / 4096 % 7));

	/* no limit: frames fill the header's frame_max */
	is_int(encode(&a, 64 * CS, NULL, NULL, -1, 1), 0, "encode without a frame limit");
	max = 0;
	for (int i = 0; i < a.n; i++)
		max = HO_MAX(max, a.f[i].raw);
	ok(a.n == 2 && max <= 64 * CS, "no limit: %d frames of at most frame_max (largest %zu)", a.n, max);
	ok(decodes(&a), "...decodes to the same image");
	ok(a.chunk_bytes == IMG_SIZE && a.literal_bytes == IMG_SIZE, "frames stand for every chunk's bytes, all of "
	   "them data (%llu, %llu)", (unsigned long long)a.chunk_bytes, (unsigned long long)a.literal_bytes);

	/* zero chunks count as input the frames stand for, not as data (what the adaptive engine
	 * measures modes on: adapt_observe_input), with one thread or two */
	zero_thirds = true;
	for (unsigned th = 1; th <= 2; th++) {
		struct sink z;
		ok(encode(&z, 8 * CS, NULL, NULL, -1, th) == 0, "encode with every third chunk zero (%u thread(s))", th);
		ok(z.chunk_bytes == IMG_SIZE && z.literal_bytes == (uint64_t)CS * (NCHUNKS - NCHUNKS / 3),
		   "...frames stand for %llu bytes, %llu of them data", (unsigned long long)z.chunk_bytes,
		   (unsigned long long)z.literal_bytes);
		free(z.p);
	}
	zero_thirds = false;

	/* a small limit from the start: frames close at it */
	limit[0] = 8 * CS;
	is_int(encode(&b, 64 * CS, limit, NULL, -1, 1), 0, "encode with a limit of 8 chunks");
	within = true;
	for (int i = 0; i < b.n; i++)
		within = within && b.f[i].raw <= 8 * CS && (i == b.n - 1 || b.f[i].raw + rec > 8 * CS);
	ok(b.n >= 12 && within, "limit 8 chunks: %d frames, each within it and full up to it", b.n);
	ok(decodes(&b), "...decodes to the same image");
	ok(b.len > a.len, "...and smaller frames compress worse (%zu > %zu bytes)", b.len, a.len);
	free(b.p);

	/* the limit changes mid-stream: small frames first, large ones after; a limit above the
	 * header's frame_max is the header's frame_max */
	memset(limit, 0, sizeof(limit));
	limit[0] = 4 * CS;
	limit[32] = 1u << 30;
	is_int(encode(&b, 32 * CS, limit, NULL, -1, 1), 0, "encode with the limit raised at chunk 32");
	within = true;
	int small = 0, big = 0;
	for (int i = 0; i < b.n; i++) {
		within = within && b.f[i].raw <= 32 * CS;
		small += b.f[i].raw <= 4 * CS && i < 10;
		big += b.f[i].raw > 16 * CS;
	}
	ok(within && small == 10 && big >= 2, "raised limit: %d frames (%d of 3 chunks first, %d large after), none above frame_max",
	   b.n, small, big);
	ok(decodes(&b), "...decodes to the same image");
	free(b.p);

	/* flushes: a frame closes at each, with the codec in force; the next frames use the new one */
	memset(limit, 0, sizeof(limit));
	flush[10] = flush[50] = true;
	is_int(encode(&b, 64 * CS, NULL, flush, STREAM_CODEC_LZ4, 1), 0, "encode with flushes at chunks 10 and 50");
	ok(b.n == 3 && b.f[0].raw == STREAM_REC_HDR_LEN + 10 * CS && b.f[1].raw == STREAM_REC_HDR_LEN + 40 * CS,
	   "flushes at 10 and 50: frames of 10, 40 and 46 chunks (%d frames, first %zu bytes)", b.n, b.n ? b.f[0].raw : 0);
	ok(b.n == 3 && b.f[0].codec == STREAM_CODEC_ZSTD && b.f[1].codec == STREAM_CODEC_LZ4,
	   "the flushed frame keeps its codec (zstd), the next one has the new codec (lz4)");
	ok(decodes(&b), "...decodes to the same image");

	/* the same with threaded frame compression: the same bytes */
	free(a.p);
	is_int(encode(&a, 64 * CS, NULL, flush, STREAM_CODEC_LZ4, 2), 0, "the same with 2 compression threads");
	ok(a.len == b.len && memcmp(a.p, b.p, a.len) == 0, "...gives the same bytes");
	free(a.p);
	free(b.p);

	/* an empty frame is not a frame: flushing twice, or at the start, emits nothing extra */
	memset(flush, 0, sizeof(flush));
	flush[0] = flush[20] = flush[21] = true;
	is_int(encode(&b, 128 * CS, NULL, flush, -1, 1), 0, "flushes at 0, 20 and 21");
	is_int(b.n, 3, "...make frames of 20, 1 and 75 chunks, no empty ones");
	ok(decodes(&b), "...decodes to the same image");
	free(b.p);

	/* the limit never goes below one chunk's record */
	memset(limit, 0, sizeof(limit));
	limit[0] = 1;
	is_int(encode(&b, 64 * CS, limit, NULL, -1, 1), 0, "a limit of 1 byte");
	is_int(b.n, (int)NCHUNKS, "...gives one chunk per frame");
	ok(decodes(&b), "...decodes to the same image");
	free(b.p);
	return done_testing();
}
