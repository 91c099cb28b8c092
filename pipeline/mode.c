/*
 * mode.c — the table of named modes (mode.h), cheapest first.
 */
#include <string.h>
#include "common/common.h"
#include "pipeline/mode.h"

#define ALL_DEDUP (MODE_DEDUP_ZERO | MODE_DEDUP_SAME | MODE_DEDUP_BASE | MODE_DEDUP_SENT)
#define MiB (1u << 20)

/* Frame sizes: lz4 finds nothing beyond 64 KiB, so its frames stay 1 MiB (finer acknowledgements
 * and resume points); zstd frames are the format's largest, 16 MiB, since the codec gives them a
 * window over the whole frame (codec.c): on a real guest's changes (640 MiB) delta-zstd3 made
 * 94.3 MB with 1 MiB frames and 67.8 MB with 16 MiB ones, at the same CPU time.
 * The same changes exported to a file with -T 2 (bytes, user CPU s): xor-lz4 169.7 MB 0.91,
 * delta-lz4 162.6 MB 1.51, xor-zstd1 75.0 MB 1.10, xor-zstd3 73.9 MB 1.17, delta-zstd1 68.8 MB
 * 1.79, delta-zstd3 67.8 MB 2.27: the whole-frame window does most of what the delta does, so
 * xor-zstd1 costs about what the lz4 modes cost for less than half their bytes, and delta-zstd3
 * buys the last 10 % for twice the CPU. (zstd's fast levels: -3 made 78.8 MB at the same CPU.) */
static const struct mode modes[] = {
	{ "raw", "no dedup, no delta, no compression: the bytes as they are",
	  0, MODE_DELTA_NONE, CODEC_NONE, 0, 0, false, CODEC_NONE, 0, MiB },
	{ "lz4", "zero chunks elided, frames lz4: cheapest squeeze",
	  MODE_DEDUP_ZERO, MODE_DELTA_NONE, CODEC_NONE, 0, 0, false, CODEC_LZ4, 1, MiB },
	{ "xor-lz4", "dedup (zero, base, sent), XOR with the same-offset base chunk, frames lz4",
	  ALL_DEDUP, MODE_DELTA_XOR, CODEC_NONE, 0, 0, false, CODEC_LZ4, 1, MiB },
	{ "delta-lz4", "dedup, lz4 delta against base chunks +-1 and far anchors, frames lz4",
	  ALL_DEDUP, MODE_DELTA_DICT, CODEC_LZ4, 1, 1, true, CODEC_LZ4, 1, MiB },
	{ "xor-zstd1", "dedup, XOR with the same-offset base chunk, frames zstd-1",
	  ALL_DEDUP, MODE_DELTA_XOR, CODEC_NONE, 0, 0, false, CODEC_ZSTD, 1, 16 * MiB },
	{ "delta-zstd3", "dedup, zstd-3 delta against base chunks +-1 and far anchors, frames zstd-6",
	  ALL_DEDUP, MODE_DELTA_DICT, CODEC_ZSTD, 3, 1, true, CODEC_ZSTD, 6, 16 * MiB },
	{ "delta-zstd9", "dedup, zstd-9 delta against base chunks +-2 and far anchors, frames zstd-9",
	  ALL_DEDUP, MODE_DELTA_DICT, CODEC_ZSTD, 9, 2, true, CODEC_ZSTD, 9, 16 * MiB },
	{ "delta-lzma6", "dedup, lzma-6 delta against base chunks +-2 and far anchors, frames lzma-6",
	  ALL_DEDUP, MODE_DELTA_DICT, CODEC_LZMA, 6, 2, true, CODEC_LZMA, 6, 4 * MiB },
	{ "best", "dedup, zstd-19 delta against base chunks +-2 and far anchors, frames lzma-9",
	  ALL_DEDUP, MODE_DELTA_DICT, CODEC_ZSTD, 19, 2, true, CODEC_LZMA, 9, 4 * MiB },
};

size_t mode_count(void)
{
	return HO_ARRAY_SIZE(modes);
}

const struct mode *mode_get(size_t i)
{
	return i < HO_ARRAY_SIZE(modes) ? &modes[i] : NULL;
}

const struct mode *mode_find(const char *name)
{
	for (size_t i = 0; name && i < HO_ARRAY_SIZE(modes); i++)
		if (strcmp(modes[i].name, name) == 0)
			return &modes[i];
	return NULL;
}

const struct mode *mode_default(void)
{
	return mode_find("delta-zstd3");
}

int mode_list(FILE *out)
{
	for (size_t i = 0; i < HO_ARRAY_SIZE(modes); i++)
		if (fprintf(out, "%-12s %s\n", modes[i].name, modes[i].desc) < 0)
			return HO_EIO;
	return fflush(out) ? HO_EIO : 0;
}

int mode_check(const struct mode *m)
{
	if (!m || !m->name || m->delta > MODE_DELTA_DICT || !codec_level_valid(m->frame_codec, m->frame_level) ||
	    m->frame_size < 4096 || m->frame_size > 64 * MiB || m->window > 64)
		return HO_EINVAL;
	if (m->delta == MODE_DELTA_DICT &&
	    (m->delta_codec == CODEC_NONE || !codec_level_valid(m->delta_codec, m->delta_level)))
		return HO_EINVAL;
	return 0;
}
