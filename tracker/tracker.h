/*
 * tracker.h — which chunks of which image changed, in which generation, when and how often:
 * an sqlite index (WAL) in OVERLAY_DIR/index.db, fed from memory in batches.
 *
 * The hot write path calls tracker_mark(), which only touches memory (a per-chunk generation
 * array and a pending map). tracker_commit() writes the pending marks in one transaction; the
 * caller passes a callback that makes the chunk data durable, which tracker_commit() calls AFTER
 * taking its snapshot of pending marks and BEFORE committing them — so the index never names a
 * chunk whose data is not durable (see overlay.h).
 *
 * Generations: the open generation G starts at 1. Marks record G. tracker_checkpoint() commits
 * and closes G (returns it) and opens G+1. "What changed since N" = chunks whose gen > N.
 *
 * Schema (documented in handoff-mount(8), FILES):
 *   meta(key TEXT PRIMARY KEY, value)           generation, bytes_read, bytes_written, ...
 *   chunks(image, idx, gen, first_ns, last_ns, writes, PRIMARY KEY(image, idx)) WITHOUT ROWID
 *   generations(gen PRIMARY KEY, opened_ns, closed_ns)
 *
 * Thread safety: tracker_mark(), tracker_chunk_gen(), tracker_add_io() and tracker_commit() may
 * be called from many threads (one internal mutex; tracker_chunk_gen is lock-free). Readers in
 * other processes open with TRACKER_READONLY and see committed state only.
 */
#ifndef HANDOFF_TRACKER_H
#define HANDOFF_TRACKER_H

#include <stdbool.h>
#include <stdint.h>

#define TRACKER_MAX_IMAGES 2

enum tracker_flags {
	TRACKER_CREATE   = 1 << 0,  /* create index.db if missing */
	TRACKER_READONLY = 1 << 1,  /* a reader in another process: no marks, no commits */
	TRACKER_NOSYNC   = 1 << 2,  /* tests/benchmarks only: sqlite synchronous=OFF */
};

struct tracker;

/* A committed chunk row. */
struct tracker_chunk {
	int image;
	uint64_t idx;
	uint32_t gen;
	uint64_t first_ns, last_ns;   /* CLOCK_REALTIME of the first and last write */
	uint64_t writes;              /* number of write requests that touched the chunk */
};

struct tracker_stats {
	uint32_t generation;                         /* the open generation */
	uint64_t modified[TRACKER_MAX_IMAGES];       /* modified chunks per image (committed + pending) */
	uint64_t bytes_read, bytes_written;          /* served by the mount, cumulative */
	uint64_t commits;                            /* transactions committed by this handle */
};

/*
 * Open dir/index.db for images with nchunks[i] chunks each. A writer loads the committed state
 * into memory. Errors: HO_ENOENT (no index and no TRACKER_CREATE), HO_EDB, HO_ECORRUPT (schema or
 * sizes inconsistent with nchunks), HO_ENOMEM.
 */
int tracker_open(const char *dir, int nimages, const uint64_t *nchunks, unsigned flags,
		 struct tracker **out);
/* Commit what is pending WITHOUT a durability callback only if the caller made data durable;
 * then close. Pass NULL to drop pending marks (after a failed sync). */
void tracker_close(struct tracker *t);

/* Mark count chunks from first_idx of image as written now (in the open generation). Memory only. */
void tracker_mark(struct tracker *t, int image, uint64_t first_idx, uint64_t count, uint64_t now_ns);
/* Generation of a chunk's last modification, 0 if never modified (committed or pending). */
uint32_t tracker_chunk_gen(const struct tracker *t, int image, uint64_t idx);
/* Count bytes served, for statistics (persisted at the next commit). */
void tracker_add_io(struct tracker *t, uint64_t bytes_read, uint64_t bytes_written);
/* Queue a meta key/value to be written in the next commit (e.g. the mirror's applied stream). */
int tracker_set_meta(struct tracker *t, const char *key, const char *value);
/* Read a committed meta value into buf. HO_ENOENT if absent. */
int tracker_get_meta(struct tracker *t, const char *key, char *buf, size_t len);

/* Commit pending marks: snapshot them, call make_durable(arg) if non-NULL (its failure aborts,
 * and the marks stay pending), then write them in one transaction. 0 or negative. */
int tracker_commit(struct tracker *t, int (*make_durable)(void *), void *arg);
/* Commit (as above), close the open generation and open the next. *closed gets the generation
 * just closed: everything up to it is now committed. */
int tracker_checkpoint(struct tracker *t, int (*make_durable)(void *), void *arg, uint32_t *closed);
/* The open generation. */
uint32_t tracker_generation(const struct tracker *t);

/* Call cb for every committed chunk of image (or all images with image < 0) with
 * since < gen <= until (until 0 = no upper bound), ordered by (image, idx). cb returning
 * non-zero stops the walk and is returned. */
int tracker_foreach(struct tracker *t, int image, uint32_t since, uint32_t until,
		    int (*cb)(const struct tracker_chunk *c, void *arg), void *arg);
/* Counts per image and generation: calls cb(image, gen, chunks, arg) for every pair present. */
int tracker_gen_counts(struct tracker *t, int (*cb)(int image, uint32_t gen, uint64_t chunks, void *arg), void *arg);
int tracker_stats(struct tracker *t, struct tracker_stats *out);
/* Run PRAGMA integrity_check and the index's own consistency checks. 0, HO_ECORRUPT or HO_EDB. */
int tracker_verify(struct tracker *t);

#endif
