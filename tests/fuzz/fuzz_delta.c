/*
 * fuzz_delta.c — libFuzzer target for the chunk decoder (delta.h), and for encoder/decoder
 * agreement. Small fixed bases (a 64 KiB disk, a 32 KiB memory image, 4 KiB chunks).
 * Input: byte 0 = record kind (low 3 bits) | bit 7: round-trip mode; byte 1 = image (bit 0) and,
 * in round-trip mode, the mode index (bits 1-7); byte 2 = chunk index; the rest is the payload
 * (decode) or the chunk's new content (round trip: encoded with the mode, decoded, compared).
 * The decoder must return 0 or a documented error and never write past the chunk.
 */
#include <stdlib.h>
#include <string.h>
#include "common/common.h"
#include "pipeline/delta.h"
#include "pipeline/mode.h"

#define CS 4096u

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static uint8_t base_img[2][64 * 1024];
static const uint64_t base_size[2] = { 64 * 1024, 32 * 1024 };

static int rd(void *arg, int img, void *buf, size_t len, uint64_t off)
{
	(void)arg;
	if (img < 0 || img > 1 || off > base_size[img] || len > base_size[img] - off)
		abort();                                 /* the decoder checked bounds before reading */
	memcpy(buf, base_img[img] + off, len);
	return 0;
}

static int cur(void *arg, int img, uint64_t idx, void *buf, size_t len)
{
	(void)arg;
	if (img < 0 || img > 1 || idx * CS + len > base_size[img])
		abort();
	memset(buf, (int)(idx + 1), len);
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 3)
		return 0;
	if (!base_img[0][1])
		for (int i = 0; i < 2; i++)
			for (size_t j = 0; j < sizeof(base_img[i]); j++)
				base_img[i][j] = (uint8_t)((j * 2654435761u) >> (13 + i) ^ (j / 4096));
	struct delta_base b = { .chunk_size = CS, .size = { base_size[0], base_size[1] }, .read = rd };
	int img = data[1] & 1;
	uint64_t idx = data[2] % (base_size[img] / CS);
	uint8_t *out = malloc(CS + 1);
	out[CS] = 0xA5;
	struct chunk_dec *dec;
	if (chunk_dec_new(&b, &dec))
		abort();
	if (data[0] & 0x80) {
		const struct mode *m = mode_get((size_t)(data[1] >> 1) % mode_count());
		uint8_t chunk[CS];
		size_t len = HO_MIN((size_t)CS, size - 3);
		if (len == 0)
			len = 1;
		memset(chunk, 0, CS);
		memcpy(chunk, data + 3, HO_MIN(len, size - 3));
		/* mostly the base chunk with the input patched in, so deltas are exercised */
		if (data[0] & 0x40) {
			memcpy(chunk, base_img[img] + idx * CS, CS);
			for (size_t i = 3; i + 1 < size; i += 2)
				chunk[((size_t)data[i] * 16 + i) % CS] = data[i + 1];
			len = CS;
		}
		struct chunk_enc *enc;
		if (chunk_enc_new(m, &b, NULL, &enc))
			abort();
		size_t pb = chunk_payload_bound(CS);
		uint8_t *pl = malloc(pb);
		struct chunk_rec rec;
		if (chunk_encode(enc, img, idx, chunk, len, 1, pl, pb, &rec))
			abort();
		if (chunk_decode(dec, img, idx, rec.kind, pl, rec.len, out, len, cur, NULL) ||
		    memcmp(out, chunk, len))
			abort();
		free(pl);
		chunk_enc_free(enc);
	} else {
		int rc = chunk_decode(dec, img, idx, (enum chunk_kind)(data[0] & 7), data + 3, size - 3, out, CS,
				      cur, NULL);
		if (rc != 0 && rc != HO_EFORMAT && rc != HO_ENOMEM)
			abort();
	}
	if (out[CS] != 0xA5)
		abort();
	chunk_dec_free(dec);
	free(out);
	return 0;
}
