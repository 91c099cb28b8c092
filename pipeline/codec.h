/*
 * codec.h — whole-buffer compression with an optional dictionary, behind one small interface,
 * so the delta encoder (delta.h) and the stream framing can switch between lz4, lz4hc, zstd and
 * lzma by name and level without knowing any library's API.
 *
 * A dictionary is "bytes that precede the data": the decoder must be given the very same bytes.
 * The delta encoder passes the base neighbourhood of a chunk, so the compressor finds byte-granular
 * (unaligned) matches in the base. Per codec:
 *   lz4, lz4hc  LZ4 block format; the dictionary's last 64 KiB are used (LZ4_loadDict{,HC}).
 *               lz4's "level" is LZ4's acceleration (1 = default, higher = faster, bigger);
 *               lz4hc levels 1..12.
 *   zstd        magicless zstd frame without checksum or dictionary id; the dictionary is a
 *               raw-content prefix (ZSTD_CCtx_refPrefix). Levels 1..19 (negative = fast).
 *   lzma        raw LZMA2 (lc=3 lp=0 pb=2) with the dictionary as preset_dict; levels 0..9
 *               (the dictionary size is fitted to dict + data, so small buffers stay cheap).
 *   none        a copy.
 * The output of a codec carries no codec id and no length: the caller (the record or frame
 * header) records both.
 *
 * Thread safety: no global state. A struct codec_ctx caches library contexts between calls and
 * belongs to one thread at a time; every function also accepts ctx == NULL (a temporary context,
 * slower for small buffers). Output is deterministic for a given (codec, level, dict, src).
 */
#ifndef HANDOFF_PIPELINE_CODEC_H
#define HANDOFF_PIPELINE_CODEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum codec {
	CODEC_NONE  = 0,
	CODEC_LZ4   = 1,
	CODEC_LZ4HC = 2,
	CODEC_ZSTD  = 3,
	CODEC_LZMA  = 4,
	CODEC_COUNT = 5,
};

/* Largest dictionary any codec accepts here (larger ones give HO_EINVAL). */
#define CODEC_MAX_DICT (64u << 20)
/* Largest buffer (src for compress, dst_cap for decompress) accepted. */
#define CODEC_MAX_SRC  (256u << 20)

struct codec_ctx;

/* A context for one thread (NULL on ENOMEM). Library contexts are created on first use. */
struct codec_ctx *codec_ctx_new(void);
void codec_ctx_free(struct codec_ctx *ctx);

/* "none", "lz4", "lz4hc", "zstd", "lzma"; NULL for an unknown value. */
const char *codec_name(enum codec c);
/* Parse a name as above. 0 or HO_EINVAL. */
int codec_parse(const char *name, enum codec *out);
/* Default level of a codec (lz4 1, lz4hc 9, zstd 3, lzma 6) and whether level is valid for it. */
int codec_default_level(enum codec c);
int codec_level_valid(enum codec c, int level);

/* Worst-case compressed size of src_len bytes (0 if c is unknown or src_len too large). */
size_t codec_bound(enum codec c, size_t src_len);

/*
 * Compress src into dst (capacity dst_cap) with the dictionary dict (may be NULL/0).
 * *dst_len gets the compressed size. Returns 0, HO_ELIMIT when the output does not fit in dst_cap
 * (dst contents are then unspecified: callers use it to stop early, e.g. dst_cap = src_len), or
 * HO_EINVAL (bad codec, level or sizes), HO_ENOMEM.
 */
int codec_compress(struct codec_ctx *ctx, enum codec c, int level, const void *dict, size_t dict_len,
		   const void *src, size_t src_len, void *dst, size_t dst_cap, size_t *dst_len);

/*
 * Decompress src into dst (capacity dst_cap) with the same dictionary the compressor used.
 * Never writes past dst + dst_cap and never reads outside src and dict. *dst_len gets the
 * decompressed size. Returns 0, HO_EFORMAT (corrupt input, trailing garbage, or output larger
 * than dst_cap), HO_EINVAL, HO_ENOMEM.
 */
int codec_decompress(struct codec_ctx *ctx, enum codec c, const void *dict, size_t dict_len,
		     const void *src, size_t src_len, void *dst, size_t dst_cap, size_t *dst_len);

/*
 * A zstd stream continued across buffers: each buffer given to codec_stream_compress() comes out
 * flushed (the decoder gets back exactly that buffer from exactly that output), while matches
 * reach back over everything sent before it within the window (2^window_log bytes, 10..27).
 * For a channel of many small records that repeat one another (the post-copy chunk server's
 * answers), where a whole-buffer codec sees one record at a time. Both ends keep the history, so
 * every output must reach the decoder, in order, once: after any error the stream is unusable.
 * Decoder: windows beyond 2^window_log are refused (the limit bounds its memory).
 */
struct codec_stream;

/* A compressing (compress true) or decompressing stream. 0, HO_EINVAL, HO_ENOMEM. */
int codec_stream_new(bool compress, int level, int window_log, struct codec_stream **out);
void codec_stream_free(struct codec_stream *cs);
/* Room codec_stream_compress() may need for src_len bytes. */
size_t codec_stream_bound(size_t src_len);
/* Compress and flush src. 0, HO_ELIMIT (dst_cap too small), HO_EINVAL, HO_ENOMEM. */
int codec_stream_compress(struct codec_stream *cs, const void *src, size_t src_len, void *dst, size_t dst_cap,
			  size_t *dst_len);
/* Decode one output of the compressor into dst. 0, HO_EFORMAT (corrupt, truncated, or more than
 * dst_cap bytes), HO_ENOMEM. */
int codec_stream_decompress(struct codec_stream *cs, const void *src, size_t src_len, void *dst, size_t dst_cap,
			    size_t *dst_len);

#endif
