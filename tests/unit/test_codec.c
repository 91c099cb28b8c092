/*
 * test_codec.c — every codec round-trips, with and without a dictionary, on text, random, zero and
 * tiny inputs; a dictionary actually helps; decompression refuses small buffers, truncation,
 * trailing bytes and corrupt input without writing past the capacity; names and bounds.
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
	free(text); free(rnd); free(zero); free(dict); free(c); free(c2); free(o);
	return done_testing();
}
