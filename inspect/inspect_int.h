/*
 * inspect_int.h — what the inspect/ files share among themselves and nobody else: the handle's
 * layout and small helpers for output formatting.
 */
#ifndef HANDOFF_INSPECT_INT_H
#define HANDOFF_INSPECT_INT_H

#include "inspect/inspect.h"
#include "overlay/overlay.h"
#include "tracker/tracker.h"

struct inspect_image {
	uint64_t size, nchunks;
	struct inspect_chunk *chunks;   /* modified chunks, ordered by idx */
	size_t count, cap;
	uint64_t *dirty;                /* bitmap of nchunks bits: chunk is modified */
};

struct inspect {
	char *dir;
	unsigned flags;
	struct overlay *ov;
	struct tracker *tr;
	uint32_t chunk_size;
	uint32_t generation;
	bool classified;
	struct tracker_stats stats;
	bool have_stats;
	struct inspect_image img[OVERLAY_NIMAGES];
	char msg[256];                  /* why the index was found corrupt while loading */
};

static inline bool inspect_is_dirty(const struct inspect *in, int image, uint64_t idx)
{
	const struct inspect_image *im = &in->img[image];
	return idx < im->nchunks && (im->dirty[idx / 64] >> (idx % 64) & 1);
}

/* One pipeline mode's estimated stream (estimate.c). */
#define INSPECT_NKINDS 6             /* = CHUNK_NKINDS of pipeline/delta.h */
struct inspect_mode_estimate {
	const char *mode;               /* the mode's name (static) */
	uint64_t bytes;                 /* estimated stream bytes */
	uint64_t kinds[INSPECT_NKINDS]; /* chunks encoded as each chunk kind */
};

/* Estimate the stream of every modified chunk for each mode in list ("all" or comma-separated
 * mode names); *n gets the number filled (at most max). HO_EINVAL for an unknown mode. */
int inspect_estimate_modes(struct inspect *in, const char *list, struct inspect_mode_estimate *out,
			   int max, int *n);
/* "zero", "baseref", "sentref", "xor", "delta", "raw". */
const char *inspect_kind_name(int kind);

/* The chunk record for (image, idx), or NULL when the chunk is not modified. */
struct inspect_chunk *inspect_find(struct inspect *in, int image, uint64_t idx);

/* Print s as a JSON string literal (quotes included). */
void inspect_json_str(FILE *out, const char *s);
/* Print s as a CSV field (quoted when it holds a comma, quote or newline). */
void inspect_csv_str(FILE *out, const char *s);

#endif
