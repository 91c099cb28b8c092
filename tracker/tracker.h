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
 * Meta keys kept by the tracker itself (reserved: tracker_set_meta refuses them): format,
 * generation, bytes_read, bytes_written, nimages, nchunks.<i> (recorded at creation and checked
 * at every open).
 *
 * Thread safety: every function except tracker_open/tracker_close may be called from many
 * threads. tracker_mark() takes one short mutex and never touches sqlite; tracker_chunk_gen() of
 * a writer is lock-free; commits and checkpoints are serialized by their own mutex (separate
 * from the mark mutex, so writers keep marking while a commit waits for fsync). Queries
 * (foreach, gen_counts, get_meta, verify, stats) use a second, read-only connection, so a long
 * walk never holds up commits.
 *
 * One writer per index: the caller holds the overlay lock (overlay.h). Readers in other
 * processes open with TRACKER_READONLY: they never write anything (no schema, no meta), cache
 * nothing, and each call sees the latest committed state (WAL; a busy timeout covers the
 * writer's brief locks).
 *
 * Durability: a writer runs sqlite with synchronous=FULL, so a commit that returned 0 survives
 * a crash or power loss (TRACKER_NOSYNC: synchronous=OFF, tests and benchmarks only).
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
	uint64_t pending;                            /* chunks marked since the last commit (writer) */
};

/*
 * Open dir/index.db for images with nchunks[i] chunks each. A writer loads the committed state
 * into memory (a uint32 per chunk). A TRACKER_READONLY opener may pass nimages 0 and nchunks
 * NULL to accept the recorded sizes. Errors: HO_ENOENT (no index and no TRACKER_CREATE), HO_EDB,
 * HO_ECORRUPT (no or bad schema, recorded sizes differ from nimages/nchunks, a chunk row out
 * of range; the reason is logged), HO_EINVAL, HO_ENOMEM.
 */
int tracker_open(const char *dir, int nimages, const uint64_t *nchunks, unsigned flags,
		 struct tracker **out);
/* Close WITHOUT committing: marks still pending are dropped (their data was never
 * acknowledged as durable). To keep them, call tracker_commit() with the data's durability
 * callback first (fs/ does so at unmount). tracker_close(NULL) does nothing. */
void tracker_close(struct tracker *t);

/* Mark count chunks from first_idx of image as written now (in the open generation). Memory only:
 * a pending entry per chunk until the next commit. Call it AFTER the chunk's data (including its
 * copy-on-write fill) is written to the overlay, so that the next commit's make_durable covers
 * it. Out-of-range chunks are ignored (and logged); a no-op on a READONLY handle. */
void tracker_mark(struct tracker *t, int image, uint64_t first_idx, uint64_t count, uint64_t now_ns);
/* Generation of a chunk's last modification, 0 if never modified (committed or pending).
 * Lock-free for a writer; a READONLY handle queries the committed state. */
uint32_t tracker_chunk_gen(const struct tracker *t, int image, uint64_t idx);
/* Count bytes served, for statistics (persisted at the next commit). */
void tracker_add_io(struct tracker *t, uint64_t bytes_read, uint64_t bytes_written);
/* Queue a meta key/value to be written in the next commit (e.g. the mirror's applied stream);
 * a later value for the same key replaces the queued one. HO_EINVAL for a reserved key or a
 * value over 4096 bytes, HO_ESTATE on a READONLY handle. */
int tracker_set_meta(struct tracker *t, const char *key, const char *value);
/* Read a committed meta value (as text) into buf, NUL-terminated. HO_ENOENT if absent, HO_ELIMIT
 * if it does not fit in len bytes. */
int tracker_get_meta(struct tracker *t, const char *key, char *buf, size_t len);

/* Commit pending marks: snapshot them (and queued meta, I/O counters), call make_durable(arg) if
 * non-NULL — always, even with nothing pending, so it can serve an fsync — and only then write the
 * snapshot in one transaction. If make_durable returns non-zero (a negative enum ho_err, or
 * anything else = HO_EIO) or the transaction fails, nothing is written and the snapshot goes back
 * into pending, merged with newer marks. Marks made during the call belong to the next commit.
 * 0 or negative; HO_ESTATE on a READONLY handle. */
int tracker_commit(struct tracker *t, int (*make_durable)(void *), void *arg);
/* Commit (as above), close the open generation and open the next, in the same transaction.
 * *closed gets the generation just closed: everything marked in it is now committed (marks that
 * race with the call go to the next generation). On failure the open generation is unchanged. */
int tracker_checkpoint(struct tracker *t, int (*make_durable)(void *), void *arg, uint32_t *closed);
/* The open generation (a READONLY handle reads the committed one; 0 on a database error). */
uint32_t tracker_generation(const struct tracker *t);

/* Call cb for every committed chunk of image (or all images with image < 0) with
 * since < gen <= until (until 0 = no upper bound), ordered by (image, idx). cb returning
 * non-zero stops the walk and is returned. The walk sees one consistent snapshot; cb may call
 * any function of the handle (commits included: they do not wait for the walk). */
int tracker_foreach(struct tracker *t, int image, uint32_t since, uint32_t until,
		    int (*cb)(const struct tracker_chunk *c, void *arg), void *arg);
/* Counts of committed chunks per image and generation: calls cb(image, gen, chunks, arg) for
 * every pair present, ordered by (image, gen). cb returning non-zero stops and is returned. */
int tracker_gen_counts(struct tracker *t, int (*cb)(int image, uint32_t gen, uint64_t chunks, void *arg), void *arg);
/* A writer reports its memory (pending included); a READONLY handle the committed state. */
int tracker_stats(struct tracker *t, struct tracker_stats *out);
/* Run PRAGMA integrity_check and the index's own consistency checks (recorded sizes, every
 * chunk row within its image with 1 <= gen <= the open generation, writes >= 1, first <= last,
 * generations 1..G with only G open, and for a writer that memory knows every committed chunk).
 * Reads committed state only. 0, HO_ECORRUPT (reason logged) or HO_EDB. */
int tracker_verify(struct tracker *t);

#endif
