/*
 * codec.c — the codec wrappers of codec.h: lz4 and lz4hc block compression with a dictionary
 * (LZ4_loadDict / LZ4_decompress_safe_usingDict), magicless zstd with a raw prefix
 * (ZSTD_CCtx_refPrefix), and raw LZMA2 with a preset dictionary. Everything the decoder does is
 * bounded by the caller's capacity, and every library failure maps to one enum ho_err.
 */
#define ZSTD_STATIC_LINKING_ONLY /* ZSTD_c_format, ZSTD_f_zstd1_magicless (stable in libzstd >= 1.4) */
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <lz4.h>
#include <lz4hc.h>
#include <lzma.h>
#include <zstd.h>
#include <zstd_errors.h>
#include "common/common.h"
#include "pipeline/codec.h"

struct codec_ctx {
	ZSTD_CCtx *zc;
	ZSTD_DCtx *zd;
	LZ4_stream_t *l4;
	LZ4_streamHC_t *l4hc;
};

static const char *const names[CODEC_COUNT] = { "none", "lz4", "lz4hc", "zstd", "lzma" };

struct codec_ctx *codec_ctx_new(void)
{
	return calloc(1, sizeof(struct codec_ctx));
}

void codec_ctx_free(struct codec_ctx *ctx)
{
	if (!ctx)
		return;
	ZSTD_freeCCtx(ctx->zc);
	ZSTD_freeDCtx(ctx->zd);
	free(ctx->l4);
	free(ctx->l4hc);
	free(ctx);
}

const char *codec_name(enum codec c)
{
	return (unsigned)c < CODEC_COUNT ? names[c] : NULL;
}

int codec_parse(const char *name, enum codec *out)
{
	for (int i = 0; i < CODEC_COUNT; i++)
		if (name && strcmp(name, names[i]) == 0) {
			*out = (enum codec)i;
			return 0;
		}
	return HO_EINVAL;
}

int codec_default_level(enum codec c)
{
	switch (c) {
	case CODEC_LZ4: return 1;
	case CODEC_LZ4HC: return 9;
	case CODEC_ZSTD: return 3;
	case CODEC_LZMA: return 6;
	default: return 0;
	}
}

int codec_level_valid(enum codec c, int level)
{
	switch (c) {
	case CODEC_NONE: return level == 0;
	case CODEC_LZ4: return level >= 1 && level <= 65537;          /* acceleration */
	case CODEC_LZ4HC: return level >= 1 && level <= LZ4HC_CLEVEL_MAX;
	case CODEC_ZSTD: return level >= -7 && level <= 19 && level != 0;
	case CODEC_LZMA: return level >= 0 && level <= 9;
	default: return 0;
	}
}

size_t codec_bound(enum codec c, size_t n)
{
	if (n > CODEC_MAX_SRC)
		return 0;
	switch (c) {
	case CODEC_NONE: return n;
	case CODEC_LZ4:
	case CODEC_LZ4HC: return (size_t)LZ4_compressBound((int)n);
	case CODEC_ZSTD: return ZSTD_compressBound(n);
	case CODEC_LZMA: return n + (n >> 12) + 64;   /* LZMA2 stores incompressible chunks: 3 bytes per 64 KiB + end */
	default: return 0;
	}
}

/* ---- lz4 ------------------------------------------------------------------------------------ */

static int lz4_compress(struct codec_ctx *ctx, bool hc, int level, const void *dict, size_t dict_len,
			const void *src, size_t n, void *dst, size_t cap, size_t *out)
{
	int r;
	int icap = cap > INT_MAX ? INT_MAX : (int)cap;
	if (dict_len > 65536) {
		dict = (const uint8_t *)dict + dict_len - 65536;
		dict_len = 65536;
	}
	if (!hc) {
		if (!ctx->l4 && !(ctx->l4 = malloc(sizeof(*ctx->l4))))
			return HO_ENOMEM;
		if (dict_len) {
			LZ4_initStream(ctx->l4, sizeof(*ctx->l4));
			LZ4_loadDict(ctx->l4, dict, (int)dict_len);
			r = LZ4_compress_fast_continue(ctx->l4, src, dst, (int)n, icap, level);
		} else {
			r = LZ4_compress_fast_extState(ctx->l4, src, dst, (int)n, icap, level);
		}
	} else {
		if (!ctx->l4hc && !(ctx->l4hc = malloc(sizeof(*ctx->l4hc))))
			return HO_ENOMEM;
		if (dict_len) {
			LZ4_initStreamHC(ctx->l4hc, sizeof(*ctx->l4hc));
			LZ4_resetStreamHC_fast(ctx->l4hc, level);   /* sets the level; loadDictHC keeps it */
			LZ4_loadDictHC(ctx->l4hc, dict, (int)dict_len);
			r = LZ4_compress_HC_continue(ctx->l4hc, src, dst, (int)n, icap);
		} else {
			r = LZ4_compress_HC_extStateHC(ctx->l4hc, src, dst, (int)n, icap, level);
		}
	}
	if (r <= 0)
		return HO_ELIMIT;
	*out = (size_t)r;
	return 0;
}

static int lz4_decompress(const void *dict, size_t dict_len, const void *src, size_t n, void *dst,
			  size_t cap, size_t *out)
{
	int r;
	if (n > INT_MAX)
		return HO_EFORMAT;
	if (dict_len > 65536) {
		dict = (const uint8_t *)dict + dict_len - 65536;
		dict_len = 65536;
	}
	if (dict_len)
		r = LZ4_decompress_safe_usingDict(src, dst, (int)n, (int)cap, dict, (int)dict_len);
	else
		r = LZ4_decompress_safe(src, dst, (int)n, (int)cap);
	if (r < 0)
		return HO_EFORMAT;
	*out = (size_t)r;
	return 0;
}

/* ---- zstd ----------------------------------------------------------------------------------- */

/* Inputs above this size get a whole-input window and long-distance matching (zstd_compress). */
#define ZSTD_LDM_MIN (1u << 20)

static int zstd_compress(struct codec_ctx *ctx, int level, const void *dict, size_t dict_len,
			 const void *src, size_t n, void *dst, size_t cap, size_t *out)
{
	if (!ctx->zc && !(ctx->zc = ZSTD_createCCtx()))
		return HO_ENOMEM;
	ZSTD_CCtx *z = ctx->zc;
	ZSTD_CCtx_reset(z, ZSTD_reset_session_and_parameters);
	if (ZSTD_isError(ZSTD_CCtx_setParameter(z, ZSTD_c_compressionLevel, level)) ||
	    ZSTD_isError(ZSTD_CCtx_setParameter(z, ZSTD_c_format, ZSTD_f_zstd1_magicless)) ||
	    ZSTD_isError(ZSTD_CCtx_setParameter(z, ZSTD_c_checksumFlag, 0)) ||
	    ZSTD_isError(ZSTD_CCtx_setParameter(z, ZSTD_c_dictIDFlag, 0)))
		return HO_EINVAL;
	if (dict_len && ZSTD_isError(ZSTD_CCtx_refPrefix(z, dict, dict_len)))
		return HO_EINVAL;
	/* A large input without a dictionary (a frame): a window over all of it, and long-distance
	 * matching. The levels' own windows are 2 MiB (3) to 8 MiB (19), while guest RAM repeats
	 * itself across whole frames: on a real guest's changes (bench/adapt.sh, 640 MiB, 16 MiB
	 * frames), zstd-3 frames came to 74.0 MB with the level's window, 70.1 with a 16 MiB one and
	 * 67.8 with long-distance matching as well, at the same CPU time (zstd-9: 70.3, 67.7, 67.5).
	 * The window stays within the decoder's 2^27 limit below (frames are at most 16 MiB). */
	if (!dict_len && n > ZSTD_LDM_MIN) {
		int wlog = 20;   /* n > 2^20 */
		while (wlog < 27 && ((size_t)1 << wlog) < n)
			wlog++;
		if (ZSTD_isError(ZSTD_CCtx_setParameter(z, ZSTD_c_windowLog, wlog)) ||
		    ZSTD_isError(ZSTD_CCtx_setParameter(z, ZSTD_c_enableLongDistanceMatching, 1)))
			return HO_EINVAL;
	}
	size_t r = ZSTD_compress2(z, dst, cap, src, n);
	if (ZSTD_isError(r)) {
		if (ZSTD_getErrorCode(r) == ZSTD_error_dstSize_tooSmall)
			return HO_ELIMIT;
		return ZSTD_getErrorCode(r) == ZSTD_error_memory_allocation ? HO_ENOMEM : HO_EINVAL;
	}
	*out = r;
	return 0;
}

static int zstd_decompress(struct codec_ctx *ctx, const void *dict, size_t dict_len, const void *src,
			   size_t n, void *dst, size_t cap, size_t *out)
{
	if (!ctx->zd && !(ctx->zd = ZSTD_createDCtx()))
		return HO_ENOMEM;
	ZSTD_DCtx *z = ctx->zd;
	ZSTD_DCtx_reset(z, ZSTD_reset_session_and_parameters);
	/* windows beyond 2^27 are refused: our buffers are small, and the limit bounds memory */
	if (ZSTD_isError(ZSTD_DCtx_setParameter(z, ZSTD_d_format, ZSTD_f_zstd1_magicless)) ||
	    ZSTD_isError(ZSTD_DCtx_setParameter(z, ZSTD_d_windowLogMax, 27)))
		return HO_EINVAL;
	if (dict_len && ZSTD_isError(ZSTD_DCtx_refPrefix(z, dict, dict_len)))
		return HO_EINVAL;
	ZSTD_inBuffer in = { src, n, 0 };
	ZSTD_outBuffer ob = { dst, cap, 0 };
	for (;;) {
		size_t r = ZSTD_decompressStream(z, &ob, &in);
		if (ZSTD_isError(r))
			return ZSTD_getErrorCode(r) == ZSTD_error_memory_allocation ? HO_ENOMEM : HO_EFORMAT;
		if (r == 0)
			break;                            /* one frame complete */
		if (ob.pos == ob.size) {
			/* output full: either more output is coming (too large) or the frame end is
			 * still in the input; one more call with no room tells which */
			uint8_t probe;
			ZSTD_outBuffer p = { &probe, 1, 0 };
			r = ZSTD_decompressStream(z, &p, &in);
			if (ZSTD_isError(r) || p.pos)
				return HO_EFORMAT;
			if (r == 0)
				break;
			if (in.pos == in.size)
				return HO_EFORMAT;
			continue;
		}
		if (in.pos == in.size)
			return HO_EFORMAT;                /* truncated */
	}
	if (in.pos != in.size)
		return HO_EFORMAT;                        /* trailing bytes */
	*out = ob.pos;
	return 0;
}

/* ---- zstd stream across buffers ---------------------------------------------------------------- */

struct codec_stream {
	ZSTD_CCtx *c;
	ZSTD_DCtx *d;
};

int codec_stream_new(bool compress, int level, int window_log, struct codec_stream **out)
{
	struct codec_stream *cs;

	if (window_log < 10 || window_log > 27 || (compress && !codec_level_valid(CODEC_ZSTD, level)))
		return HO_EINVAL;
	if (!(cs = calloc(1, sizeof(*cs))))
		return HO_ENOMEM;
	if (compress) {
		/* long-distance matching: the repeats this is for lie anywhere in the window, where
		 * the level's own match finder has long forgotten them */
		if (!(cs->c = ZSTD_createCCtx()) ||
		    ZSTD_isError(ZSTD_CCtx_setParameter(cs->c, ZSTD_c_compressionLevel, level)) ||
		    ZSTD_isError(ZSTD_CCtx_setParameter(cs->c, ZSTD_c_format, ZSTD_f_zstd1_magicless)) ||
		    ZSTD_isError(ZSTD_CCtx_setParameter(cs->c, ZSTD_c_checksumFlag, 0)) ||
		    ZSTD_isError(ZSTD_CCtx_setParameter(cs->c, ZSTD_c_windowLog, window_log)) ||
		    ZSTD_isError(ZSTD_CCtx_setParameter(cs->c, ZSTD_c_enableLongDistanceMatching, 1)))
			goto fail;
	} else {
		if (!(cs->d = ZSTD_createDCtx()) ||
		    ZSTD_isError(ZSTD_DCtx_setParameter(cs->d, ZSTD_d_format, ZSTD_f_zstd1_magicless)) ||
		    ZSTD_isError(ZSTD_DCtx_setParameter(cs->d, ZSTD_d_windowLogMax, window_log)))
			goto fail;
	}
	*out = cs;
	return 0;
fail:
	codec_stream_free(cs);
	return HO_ENOMEM;
}

void codec_stream_free(struct codec_stream *cs)
{
	if (!cs)
		return;
	ZSTD_freeCCtx(cs->c);
	ZSTD_freeDCtx(cs->d);
	free(cs);
}

size_t codec_stream_bound(size_t n)
{
	/* a flush ends a block: the frame header (first output), block headers, the raw fallback */
	return ZSTD_compressBound(n) + 64;
}

int codec_stream_compress(struct codec_stream *cs, const void *src, size_t n, void *dst, size_t cap, size_t *out)
{
	if (!cs || !cs->c || (n && !src))
		return HO_EINVAL;
	ZSTD_inBuffer in = { src, n, 0 };
	ZSTD_outBuffer ob = { dst, cap, 0 };
	for (;;) {
		size_t r = ZSTD_compressStream2(cs->c, &ob, &in, ZSTD_e_flush);
		if (ZSTD_isError(r))
			return ZSTD_getErrorCode(r) == ZSTD_error_memory_allocation ? HO_ENOMEM : HO_EINVAL;
		if (r == 0 && in.pos == in.size)
			break;
		if (ob.pos == ob.size)
			return HO_ELIMIT;
	}
	*out = ob.pos;
	return 0;
}

int codec_stream_decompress(struct codec_stream *cs, const void *src, size_t n, void *dst, size_t cap, size_t *out)
{
	if (!cs || !cs->d || (n && !src) || (cap && !dst))
		return HO_EINVAL;
	ZSTD_inBuffer in = { src, n, 0 };
	ZSTD_outBuffer ob = { dst, cap, 0 };
	while (in.pos < in.size) {
		size_t r = ZSTD_decompressStream(cs->d, &ob, &in);
		if (ZSTD_isError(r))
			return ZSTD_getErrorCode(r) == ZSTD_error_memory_allocation ? HO_ENOMEM : HO_EFORMAT;
		if (r == 0 && in.pos < in.size)
			return HO_EFORMAT;                /* a frame ended inside: not our compressor's */
		if (ob.pos == ob.size && in.pos < in.size)
			return HO_EFORMAT;                /* more than dst_cap */
	}
	/* a flushed block is whole in its input: nothing may be held back for later output */
	uint8_t probe;
	ZSTD_outBuffer p = { &probe, 1, 0 };
	size_t r = ZSTD_decompressStream(cs->d, &p, &in);
	if (ZSTD_isError(r) || p.pos)
		return HO_EFORMAT;
	*out = ob.pos;
	return 0;
}

/* ---- lzma ----------------------------------------------------------------------------------- */

static uint32_t lzma_dict_size(size_t need)
{
	uint32_t d = 4096;
	while (d < need && d < (1u << 30))
		d <<= 1;
	return d;
}

static int lzma_compress(int level, const void *dict, size_t dict_len, const void *src, size_t n,
			 void *dst, size_t cap, size_t *out)
{
	lzma_options_lzma opt;
	if (lzma_lzma_preset(&opt, (uint32_t)level))
		return HO_EINVAL;
	uint32_t ds = lzma_dict_size(dict_len + n);
	if (ds < opt.dict_size)
		opt.dict_size = ds;
	opt.lc = 3, opt.lp = 0, opt.pb = 2;
	opt.preset_dict = dict_len ? dict : NULL;
	opt.preset_dict_size = (uint32_t)dict_len;
	lzma_filter f[2] = { { LZMA_FILTER_LZMA2, &opt }, { LZMA_VLI_UNKNOWN, NULL } };
	size_t pos = 0;
	lzma_ret r = lzma_raw_buffer_encode(f, NULL, src, n, dst, &pos, cap);
	if (r == LZMA_BUF_ERROR)
		return HO_ELIMIT;
	if (r == LZMA_MEM_ERROR)
		return HO_ENOMEM;
	if (r != LZMA_OK)
		return HO_EINVAL;
	*out = pos;
	return 0;
}

static int lzma_decompress(const void *dict, size_t dict_len, const void *src, size_t n, void *dst,
			   size_t cap, size_t *out)
{
	lzma_options_lzma opt;
	lzma_lzma_preset(&opt, 0);
	/* no match reaches further back than dictionary + output: no need for a power of two */
	opt.dict_size = (uint32_t)HO_MAX((size_t)4096, dict_len + cap);
	opt.preset_dict = dict_len ? dict : NULL;
	opt.preset_dict_size = (uint32_t)dict_len;
	lzma_filter f[2] = { { LZMA_FILTER_LZMA2, &opt }, { LZMA_VLI_UNKNOWN, NULL } };
	size_t in_pos = 0, pos = 0;
	lzma_ret r = lzma_raw_buffer_decode(f, NULL, src, &in_pos, n, dst, &pos, cap);
	if (r == LZMA_MEM_ERROR)
		return HO_ENOMEM;
	if (r != LZMA_OK || in_pos != n)
		return HO_EFORMAT;
	*out = pos;
	return 0;
}

/* ---- dispatch ------------------------------------------------------------------------------- */

int codec_compress(struct codec_ctx *ctx, enum codec c, int level, const void *dict, size_t dict_len,
		   const void *src, size_t n, void *dst, size_t cap, size_t *out)
{
	struct codec_ctx tmp = { 0 };
	int rc;

	if (!codec_level_valid(c, level) || n > CODEC_MAX_SRC || dict_len > CODEC_MAX_DICT ||
	    (dict_len && !dict) || (n && !src))
		return HO_EINVAL;
	if (!ctx)
		ctx = &tmp;
	switch (c) {
	case CODEC_NONE:
		if (n > cap)
			return HO_ELIMIT;
		if (n)
			memcpy(dst, src, n);
		*out = n;
		rc = 0;
		break;
	case CODEC_LZ4:
	case CODEC_LZ4HC:
		rc = lz4_compress(ctx, c == CODEC_LZ4HC, level, dict, dict_len, src, n, dst, cap, out);
		break;
	case CODEC_ZSTD:
		rc = zstd_compress(ctx, level, dict, dict_len, src, n, dst, cap, out);
		break;
	case CODEC_LZMA:
		rc = lzma_compress(level, dict, dict_len, src, n, dst, cap, out);
		break;
	default:
		rc = HO_EINVAL;
	}
	if (ctx == &tmp) {
		ZSTD_freeCCtx(tmp.zc);
		free(tmp.l4);
		free(tmp.l4hc);
	}
	return rc;
}

int codec_decompress(struct codec_ctx *ctx, enum codec c, const void *dict, size_t dict_len,
		     const void *src, size_t n, void *dst, size_t cap, size_t *out)
{
	struct codec_ctx tmp = { 0 };
	int rc;

	if (cap > CODEC_MAX_SRC || dict_len > CODEC_MAX_DICT || (dict_len && !dict) || (n && !src) ||
	    (cap && !dst))
		return HO_EINVAL;
	if (!ctx)
		ctx = &tmp;
	switch (c) {
	case CODEC_NONE:
		if (n > cap)
			return HO_EFORMAT;
		if (n)
			memcpy(dst, src, n);
		*out = n;
		rc = 0;
		break;
	case CODEC_LZ4:
	case CODEC_LZ4HC:
		rc = lz4_decompress(dict, dict_len, src, n, dst, cap, out);
		break;
	case CODEC_ZSTD:
		rc = zstd_decompress(ctx, dict, dict_len, src, n, dst, cap, out);
		break;
	case CODEC_LZMA:
		rc = lzma_decompress(dict, dict_len, src, n, dst, cap, out);
		break;
	default:
		rc = HO_EINVAL;
	}
	if (ctx == &tmp)
		ZSTD_freeDCtx(tmp.zd);
	return rc;
}
