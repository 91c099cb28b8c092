/*
 * test_codec.c — every codec round-trips, with and without a dictionary, on text, random, zero and
 * tiny inputs; a dictionary actually helps; decompression refuses small buffers, truncation,
 * trailing bytes and corrupt input without writing past the capacity; names and bounds. The
 * stream across buffers (codec_stream): records decode one by one to their bytes, a record that
 * repeats an earlier one costs a few bytes, and bad input is refused without overrun.
 */
#include <stdlib.h>
#include <string.h>
#include "common/common.h"
#include "pipeline/codec.h"
#include "tests/unit/tap.h"

static uint64_t rng = 88172645463325252ull;
static uint64_t next(void) { rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17; return rng; }

static void fill_text(uint8_t *p, size_t n)
{
	static const char *w[] = { "the ", "quick ", "brown ", "fox ", "jumps ", "over ", "lazy ", "dog\n",
				   "handoff ", "chunk ", "overlay ", "=", "0x", "static ", "int " };
	size_t i = 0;
	while (i < n) {
		const char *s = w[next() % HO_ARRAY_SIZE(w)];
		for (; *s && i < n; s++)
			p[i++] = (uint8_t)*s;
	}
}

static void test_stream(void)
{
	enum { REC = 4096, NREC = 64, BLOCK = 1 << 18 };
	uint8_t *block = malloc(BLOCK), *rec = malloc(REC), *c = malloc(codec_stream_bound(REC)), *o = malloc(REC + 64);
	uint8_t **outs = calloc(NREC, sizeof(*outs));
	size_t *lens = calloc(NREC, sizeof(*lens)), total = 0, first_half = 0;
	struct codec_stream *enc = NULL, *dec = NULL;
	int bad = 0;

	for (size_t i = 0; i < BLOCK; i++)
		block[i] = (uint8_t)next();
	ok(codec_stream_new(true, 3, 9, &enc) == HO_EINVAL && codec_stream_new(true, 3, 28, &enc) == HO_EINVAL &&
	   codec_stream_new(true, 99, 20, &enc) == HO_EINVAL, "stream: bad window or level refused");
	ok(codec_stream_new(true, 3, 24, &enc) == 0 && codec_stream_new(false, 0, 24, &dec) == 0, "stream: created");
	/* records: random pages, the first half new, the second half repeats of them (salted) */
	for (int r = 0; r < NREC; r++) {
		uint32_t page = r < NREC / 2 ? (uint32_t)r : (uint32_t)(next() % (NREC / 2));
		memcpy(rec, block + (size_t)page * REC, REC);
		rec[0] = (uint8_t)r;
		size_t cl = 0;
		if (codec_stream_compress(enc, rec, REC, c, codec_stream_bound(REC), &cl)) {
			bad++;
			continue;
		}
		outs[r] = malloc(cl);
		memcpy(outs[r], c, cl);
		lens[r] = cl;
		total += cl;
		if (r < NREC / 2)
			first_half += cl;
		/* each output decodes at once to its record: nothing is held back for later */
		size_t ol = 0;
		memset(o, 0xAB, REC + 64);
		if (codec_stream_decompress(dec, c, cl, o, REC, &ol) || ol != REC || memcmp(o, rec, REC) || o[REC] != 0xAB)
			bad++;
	}
	ok(bad == 0, "stream: %d records decode one by one to their bytes", NREC);
	ok(total - first_half < (size_t)NREC / 2 * 200, "stream: repeated pages cost %zu bytes for %d, new ones %zu",
	   total - first_half, NREC / 2, first_half);
	codec_stream_free(dec);

	/* a fresh decoder: too small a buffer, corruption */
	codec_stream_new(false, 0, 24, &dec);
	size_t ol = 0;
	memset(o, 0xAB, REC + 64);
	int rc = codec_stream_decompress(dec, outs[0], lens[0], o, REC - 1, &ol);
	ok(rc == HO_EFORMAT && o[REC - 1] == 0xAB, "stream: output larger than capacity refused (%d)", rc);
	codec_stream_free(dec);
	int crashes = 0;
	for (int t = 0; t < 200; t++) {
		codec_stream_new(false, 0, 24, &dec);
		uint8_t *x = malloc(lens[0]);
		memcpy(x, outs[0], lens[0]);
		x[next() % lens[0]] ^= (uint8_t)(1 + next() % 255);
		memset(o, 0xAB, REC + 64);
		rc = codec_stream_decompress(dec, x, lens[0], o, REC, &ol);
		if (o[REC] != 0xAB || (rc && rc != HO_EFORMAT) || (rc == 0 && ol > REC))
			crashes++;
		free(x);
		codec_stream_free(dec);
	}
	ok(crashes == 0, "stream: 200 corrupted records handled");
	/* a window smaller than the encoder's is refused */
	codec_stream_new(false, 0, 12, &dec);
	is_int(codec_stream_decompress(dec, outs[0], lens[0], o, REC, &ol), HO_EFORMAT, "stream: too large a window refused");
	codec_stream_free(dec);
	for (size_t i = 0; i < REC; i++)
		rec[i] = (uint8_t)next();              /* new bytes: they cannot shrink */
	is_int(codec_stream_compress(enc, rec, REC, c, 16, &ol), HO_ELIMIT, "stream: too small an output gives HO_ELIMIT");
	codec_stream_free(enc);
	for (int r = 0; r < NREC; r++)
		free(outs[r]);
	free(outs); free(lens); free(block); free(rec); free(c); free(o);
}

int main(void)
{
	enum { N = 20000 };
	uint8_t *text = malloc(N), *rnd = malloc(N), *zero = calloc(1, N), *dict = malloc(3 * N);
	uint8_t *c = malloc(2 * N + 4096), *o = malloc(N + 64);
	const uint8_t *inputs[] = { text, rnd, zero };
	const char *iname[] = { "text", "random", "zero" };
	size_t sizes[] = { 0, 1, 17, 4096, N };

	fill_text(text, N);
	for (size_t i = 0; i < N; i++)
		rnd[i] = (uint8_t)next();
	/* the dictionary holds the random data shifted by 13 bytes: only a dictionary finds it */
	for (size_t i = 0; i < 3 * N; i++)
		dict[i] = (uint8_t)(i * 7);
	memcpy(dict + N + 13, rnd, N);

	is_str(codec_name(CODEC_ZSTD), "zstd", "codec_name zstd");
	ok(codec_name(CODEC_COUNT) == NULL, "codec_name of unknown is NULL");
	enum codec pc;
	is_int(codec_parse("lzma", &pc), 0, "codec_parse lzma");
	is_int(pc, CODEC_LZMA, "codec_parse lzma value");
	is_int(codec_parse("gzip", &pc), HO_EINVAL, "codec_parse unknown");
	ok(codec_bound(CODEC_LZ4, 4096) >= 4096, "codec_bound lz4");
	is_int(codec_bound(CODEC_ZSTD, (size_t)CODEC_MAX_SRC + 1), 0, "codec_bound too large");

	struct codec_ctx *ctx = codec_ctx_new();
	for (int cdc = 0; cdc < CODEC_COUNT; cdc++) {
		int lvl = codec_default_level(cdc);
		int fails = 0, checks = 0;
		for (size_t in = 0; in < HO_ARRAY_SIZE(inputs); in++) {
			for (size_t si = 0; si < HO_ARRAY_SIZE(sizes); si++) {
				for (int usedict = 0; usedict < 2; usedict++) {
					size_t n = sizes[si], cl = 0, ol = 0;
					const uint8_t *dp = usedict ? dict : NULL;
					size_t dl = usedict ? 3 * N : 0;
					struct codec_ctx *cx = (si & 1) ? NULL : ctx;   /* both ways */
					int rc = codec_compress(cx, cdc, lvl, dp, dl, inputs[in], n, c,
								codec_bound(cdc, n), &cl);
					int rd = rc ? rc : codec_decompress(cx, cdc, dp, dl, c, cl, o, N + 64, &ol);
					checks++;
					if (rc || rd || ol != n || memcmp(o, inputs[in], n)) {
						fails++;
						diag("%s %s n=%zu dict=%d: rc %d rd %d ol %zu", codec_name(cdc),
						     iname[in], n, usedict, rc, rd, ol);
					}
				}
			}
		}
		ok(fails == 0, "%s: %d round trips", codec_name(cdc), checks);

		/* a dictionary with the data in it makes random data compressible (not for none) */
		size_t with = 0, without = 0, ol = 0;
		codec_compress(ctx, cdc, lvl, dict, 3 * N, rnd + 100, 4096, c, codec_bound(cdc, 4096), &with);
		codec_compress(ctx, cdc, lvl, NULL, 0, rnd + 100, 4096, c + 8192, codec_bound(cdc, 4096), &without);
		if (cdc == CODEC_NONE)
			ok(with == 4096 && without == 4096, "none: no compression");
		else
			ok(with < 200 && without > 4000, "%s: unaligned match in the dictionary (%zu vs %zu bytes)",
			   codec_name(cdc), with, without);

		/* decompression into a buffer one byte too small fails cleanly, without overrun */
		size_t cl;
		codec_compress(ctx, cdc, lvl, NULL, 0, text, 4096, c, codec_bound(cdc, 4096), &cl);
		memset(o, 0xAB, N + 64);
		int rc = codec_decompress(ctx, cdc, NULL, 0, c, cl, o, 4095, &ol);
		ok(rc == HO_EFORMAT && o[4095] == 0xAB, "%s: output larger than capacity refused (%d)",
		   codec_name(cdc), rc);
		if (cdc == CODEC_NONE)
			continue;
		/* truncation and trailing bytes */
		rc = codec_decompress(ctx, cdc, NULL, 0, c, cl - 1, o, N, &ol);
		ok(rc == HO_EFORMAT || (rc == 0 && ol != 4096), "%s: truncated input refused (%d)", codec_name(cdc), rc);
		c[cl] = 0;
		rc = codec_decompress(ctx, cdc, NULL, 0, c, cl + 1, o, N, &ol);
		ok(rc == HO_EFORMAT || (rc == 0 && ol != 4096), "%s: trailing byte refused (%d)", codec_name(cdc), rc);
		/* random corruption never crashes, never overruns; success must mean N bytes at most */
		int bad = 0;
		for (int t = 0; t < 300; t++) {
			codec_compress(ctx, cdc, lvl, dict, 3 * N, text, 4096, c, codec_bound(cdc, 4096), &cl);
			size_t pos = next() % cl;
			c[pos] ^= (uint8_t)(1 + next() % 255);
			memset(o, 0xAB, N + 64);
			rc = codec_decompress(ctx, cdc, dict, 3 * N, c, cl, o, 4096, &ol);
			if (o[4096] != 0xAB || (rc == 0 && ol > 4096) || (rc && rc != HO_EFORMAT))
				bad++;
		}
		ok(bad == 0, "%s: 300 corrupted inputs handled", codec_name(cdc));
	}
	/* determinism */
	size_t l1, l2;
	uint8_t *c2 = malloc(2 * N);
	codec_compress(ctx, CODEC_ZSTD, 9, dict, 3 * N, text, N, c, codec_bound(CODEC_ZSTD, N), &l1);
	codec_compress(NULL, CODEC_ZSTD, 9, dict, 3 * N, text, N, c2, codec_bound(CODEC_ZSTD, N), &l2);
	ok(l1 == l2 && memcmp(c, c2, l1) == 0, "zstd output deterministic across contexts");
	size_t cl;
	is_int(codec_compress(ctx, CODEC_ZSTD, 3, NULL, 0, rnd, 4096, c, 100, &cl), HO_ELIMIT,
	       "compress into too small a buffer gives HO_ELIMIT");
	is_int(codec_compress(ctx, CODEC_LZMA, 42, NULL, 0, rnd, 4096, c, 8192, &cl), HO_EINVAL, "bad level");
	codec_ctx_free(ctx);
	test_stream();
	free(text); free(rnd); free(zero); free(dict); free(c); free(c2); free(o);
	return done_testing();
}
