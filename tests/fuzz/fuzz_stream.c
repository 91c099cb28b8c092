/*
 * fuzz_stream.c — libFuzzer target for the stream decoder (pipeline/stream.c): whatever the bytes,
 * the decoder must reject or accept them without crashing, reading out of bounds, leaking or
 * allocating more than its documented limits. Input: one control byte, then the stream.
 * Control bit 0: decode with the key "fuzz-key-0123456789abcdef"; bit 1: "records mode" — the
 * rest is the payload of one data frame, wrapped here in a valid header, frame header and
 * checksums (and END), so the fuzzer reaches the record parser instead of the checksums;
 * bits 2-7: the size of the first piece fed (x 37), to exercise partial feeds; bit 7 also
 * decodes on two worker threads. Built with clang -fsanitize=fuzzer,address by `make fuzz`,
 * and with tests/fuzz/replay.c under gcc so `make check` replays the corpus and golden-bad inputs.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "common/common.h"
#include "pipeline/stream.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_KEY "fuzz-key-0123456789abcdef"
#define FUZZ_MAX_IMAGE (64ull << 20)   /* keep runs short: refuse bigger images, as a receiver would */

static int on_header(void *arg, const struct stream_header *h)
{
	(void)arg;
	for (int i = 0; i < STREAM_NIMAGES; i++)
		if (h->image[i].size > FUZZ_MAX_IMAGE || h->image[i].base.size > FUZZ_MAX_IMAGE)
			return HO_EBASE;
	return 0;
}

static int read_base(void *arg, int img, uint64_t off, uint8_t *buf, uint32_t len)
{
	(void)arg;
	for (uint32_t i = 0; i < len; i++)
		buf[i] = (uint8_t)(img * 31 + (off + i) * 7 + ((off + i) >> 9));
	return 0;
}

static int read_sent(void *arg, int img, uint64_t idx, uint8_t *buf, uint32_t len)
{
	(void)arg;
	(void)img;
	memset(buf, (int)(idx & 0xff), len);
	return 0;
}

static int on_chunk(void *arg, const struct stream_chunk *c)
{
	uint64_t *sum = arg;
	/* touch every byte the decoder hands out */
	for (uint32_t i = 0; i < c->len; i += 64)
		*sum += c->data[i];
	*sum += c->data[c->len - 1];
	return 0;
}

static const struct stream_dec_ops ops = { on_header, read_base, read_sent, on_chunk, NULL, NULL };

/* Records mode: header + one data frame carrying payload + END, all checksums valid. */
static uint8_t *wrap(const uint8_t *payload, size_t len, size_t *out_len)
{
	struct stream_header h = { 0 };
	size_t total = STREAM_HEADER_LEN + 2 * STREAM_FRAME_HDR_LEN + len + STREAM_END_LEN;
	uint8_t *b, *f, *e;

	if (len == 0 || len > 16384)
		return NULL;
	b = calloc(1, total);
	if (!b)
		return NULL;
	memset(h.id, 0x11, sizeof(h.id));
	h.until = 1;
	h.chunk_size = 512;
	h.frame_max = 16384;
	h.image[0].size = h.image[0].base.size = 16384;
	h.image[1].size = h.image[1].base.size = 8192 + 100;
	stream_header_pack(&h, NULL, b);
	f = b + STREAM_HEADER_LEN;
	f[0] = STREAM_FRAME_DATA;
	/* the record count the payload's own length fields imply */
	uint32_t nrec = 0;
	for (size_t off = 0; off + STREAM_REC_HDR_LEN <= len; nrec++)
		off += STREAM_REC_HDR_LEN + (size_t)ho_get_le32(payload + off + 16);
	ho_put_le32(f + 4, nrec ? nrec : 1);
	memcpy(f + 16, h.id, 16);
	ho_put_le32(f + 32, (uint32_t)len);
	ho_put_le32(f + 36, (uint32_t)len);
	ho_put_le64(f + 40, ho_get_le64(b + 216));
	memcpy(f + STREAM_FRAME_HDR_LEN, payload, len);
	ho_put_le64(f + 48, ho_xxh64(payload, len));
	ho_put_le64(f + 56, ho_xxh64(f, 56));
	e = f + STREAM_FRAME_HDR_LEN + len;
	e[0] = STREAM_FRAME_END;
	ho_put_le64(e + 8, 1);
	memcpy(e + 16, h.id, 16);
	ho_put_le32(e + 32, STREAM_END_LEN);
	ho_put_le32(e + 36, STREAM_END_LEN);
	ho_put_le64(e + 40, ho_get_le64(f + 56));
	ho_put_le64(e + 64 + 0, 1);
	ho_put_le64(e + 48, ho_xxh64(e + 64, STREAM_END_LEN));
	ho_put_le64(e + 56, ho_xxh64(e, 56));
	*out_len = total;
	return b;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct stream_dec *d;
	uint64_t sum = 0;
	size_t first, n;
	int rc;

	if (size < 1)
		return 0;
	ho_log_set_level(LOG_CRIT);
	if (stream_dec_new((data[0] & 1) ? FUZZ_KEY : NULL, (data[0] & 1) ? strlen(FUZZ_KEY) : 0, &ops, &sum, &d))
		return 0;
	stream_dec_set_quiet(d, true);
	uint8_t ctl = data[0], *wrapped = NULL;
	if (ctl & 0x80)                 /* the parallel decoder too (same verdicts, in order) */
		stream_dec_set_threads(d, 2);
	data++;
	size--;
	if ((ctl & 2) && !(ctl & 1)) {
		size_t wl = 0;
		wrapped = wrap(data, size, &wl);
		if (!wrapped) {
			stream_dec_free(d);
			return 0;
		}
		data = wrapped;
		size = wl;
	}
	first = HO_MIN(size, (size_t)(ctl >> 2) * 37);
	n = first;
	rc = stream_dec_feed(d, data, &n);
	if (!rc) {
		n = size - first;
		rc = stream_dec_feed(d, data + first, &n);
	}
	if (!rc)
		stream_dec_finish(d);
	stream_dec_free(d);
	free(wrapped);
	return 0;
}
