/*
 * mode.h — named operating modes: every knob that trades CPU for bytes (which dedup sources to
 * try, which delta, which codec and level for deltas and for frames, frame size), gathered in one
 * plain struct so the chunk encoder (delta.h) and the stream framing read the same choice, and so
 * an adaptive controller can switch between modes by name after measuring CPU and bandwidth.
 *
 * `handoff-export --list-modes` prints mode_list(): one mode per line, the name first, then a
 * short description. The table is ordered from cheapest to most thorough.
 *
 * Recommended composition (measured with tests/helpers/pipebench, bench/pipeline.sh): the chunk
 * encoder (delta.h) emits one record per chunk; the stream packs records into frames of about
 * frame_size bytes and compresses each whole frame (headers and payloads) with frame_codec at
 * frame_level. XOR and RAW payloads are left uncompressed by the encoder precisely so that the
 * frame codec sees runs of neighbouring chunks together (new text, records and duplicated new data
 * compress across chunks: zstd-6 frames gave 1.8 % fewer bytes than zstd-3 frames on the disk set;
 * 1 MiB frames vs 256 KiB, another 0.6 %). DELTA payloads are already compressed against the
 * base; recompressing them inside the frame still saved 0.1-0.3 % (region headers, codec frame
 * headers) at no measurable CPU, so storing them beside the compressed part is not worth a second
 * code path. Frames are the unit of parallelism (one frame per thread at a time): the encoder
 * state is per thread, the base index and sent set are shared.
 */
#ifndef HANDOFF_PIPELINE_MODE_H
#define HANDOFF_PIPELINE_MODE_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include "pipeline/codec.h"

enum mode_dedup {
	MODE_DEDUP_ZERO = 1 << 0,   /* all-zero chunks become ZERO records */
	MODE_DEDUP_SAME = 1 << 1,   /* chunks equal to the same-offset base chunk become BASEREF */
	MODE_DEDUP_BASE = 1 << 2,   /* chunks equal to any aligned base chunk (either image): BASEREF */
	MODE_DEDUP_SENT = 1 << 3,   /* chunks equal to one sent earlier in this handoff: SENTREF */
};

enum mode_delta {
	MODE_DELTA_NONE = 0,        /* new chunks go RAW */
	MODE_DELTA_XOR  = 1,        /* XOR with the same-offset base chunk when that helps */
	MODE_DELTA_DICT = 2,        /* compress against the base neighbourhood (and far anchors) */
};

struct mode {
	const char *name;
	const char *desc;
	unsigned dedup;             /* enum mode_dedup bits */
	enum mode_delta delta;
	enum codec delta_codec;     /* MODE_DELTA_DICT: codec and level of the per-chunk delta */
	int delta_level;
	uint32_t window;            /* MODE_DELTA_DICT: base chunks on each side of the same-offset one */
	bool far;                   /* MODE_DELTA_DICT: add base regions found through anchors */
	enum codec frame_codec;     /* codec and level for frames (record headers + XOR/RAW payloads) */
	int frame_level;
	uint32_t frame_size;        /* target uncompressed record bytes per frame */
};

/* The mode called name, or NULL. */
const struct mode *mode_find(const char *name);
/* The i-th mode (0 .. mode_count()-1), or NULL. */
const struct mode *mode_get(size_t i);
size_t mode_count(void);
/* The default mode for exports ("delta-zstd3"). */
const struct mode *mode_default(void);
/* Print the list for --list-modes: "NAME  DESCRIPTION\n" per mode. 0 or HO_EIO. */
int mode_list(FILE *out);
/* Check a (possibly hand-made) mode for consistency: 0 or HO_EINVAL. */
int mode_check(const struct mode *m);

#endif
