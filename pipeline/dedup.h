/*
 * dedup.h — finding chunks the receiver already has, so they travel as references instead of
 * bytes: zero chunks (ho_is_zero() in common.h), chunks equal to some aligned chunk of a base
 * image (the base index), chunks equal to one already sent in this handoff (the sent set), and,
 * for the delta encoder, byte-granular anchors into the base (for unaligned copies of base data
 * that moved far from their origin).
 *
 * ---- Base index -------------------------------------------------------------------------------
 * For one base image and one chunk size: the XXH3-64 fingerprint of every aligned non-zero chunk
 * (holes are skipped with SEEK_DATA/SEEK_HOLE, zero chunks get no entry), sorted, and a sample of
 * content-defined anchors (see "anchors" below). A fingerprint is only a hint: the sender verifies
 * a hit by comparing the candidate's bytes with the base before it emits a reference (and the
 * stream's END digest catches anything else), so a collision can cost bytes, never data.
 *
 * Cache file (built once per base, reused by every export): DIR/<digest hex, 32 chars>-<chunk>.idx,
 * DIR = ${HANDOFF_CACHE:-$HOME/.cache/handoff}/baseidx by default. All integers little-endian:
 *     0  8  magic "HOBIDX1\n"
 *     8  4  format version (1)
 *    12  4  chunk size
 *    16  8  image size
 *    24 32  base identity digest (struct overlay_identity.digest)
 *    56  8  N, number of chunk entries
 *    64  8  M, number of anchors
 *    72  4  anchor parameters: DEDUP_ANCHOR_BITS | MIN_GAP << 8 | WIN << 20 (another value: rebuild)
 *    76  4  reserved (0)
 *    80     N x 8  chunk fingerprints, ascending;  N x 4  chunk index of each (same order)
 *           M x 4  anchor keys, ascending;         M x 8  base offset of each (same order)
 *   end  8  XXH3-64 of all preceding bytes
 * i.e. 12 bytes per non-zero chunk plus 12 bytes per anchor (~1 per 512 bytes of data):
 * about 3 % of the base's non-zero data for 4 KiB chunks. Written atomically; a file that fails
 * any check is ignored and rebuilt.
 *
 * Anchors: a 64-bit gear rolling hash h over the data; position p (the byte after the window) is an
 * anchor when h >> (64 - DEDUP_ANCHOR_BITS) == 0 and no anchor was taken in the previous
 * DEDUP_ANCHOR_MIN_GAP bytes; its key is the top 32 bits of XXH3-64 of the DEDUP_ANCHOR_WIN
 * bytes before p. The same rule run over new data finds where its pieces sit in the base.
 *
 * ---- Sent set ---------------------------------------------------------------------------------
 * Fingerprints (XXH3-128) of chunks already sent in this handoff, each with the location (image,
 * chunk index) it was sent to and the stream position (seq) of its record; persisted in the
 * overlay directory between export rounds (entries then get seq 0, "before this stream").
 * A sent-ref (image, idx) is valid only if, when the receiver applies it, that location holds the
 * referenced content. The sender guarantees this when:
 *   - every chunk sent in a stream is added (sentset_add; an all-zero one is only invalidated,
 *     sentset_invalidate) in stream order BEFORE the stream's records are encoded — this drops
 *     any entry that pointed at a location's old content, so references never name a location
 *     the same stream overwrites;
 *   - lookups pass the record's own seq, and only entries with a smaller seq (earlier records of
 *     this stream, or earlier rounds) are returned; the receiver applies records in stream order
 *     and resolves a sent-ref against its current (staged) content of that location;
 *   - the persisted set is only used for a stream that follows the one that produced it: the set
 *     carries its lineage (the generation `until` and the id of the stream after which it was
 *     saved); the exporter uses it only for --since == until and names that stream id in the
 *     header's basis field, and the receiver refuses such a stream unless the stream it applied
 *     last is that very stream (handoff-stream(5)). The END digest over the reconstructed bytes
 *     is the backstop for anything else (a receiver changed behind our back).
 * Output is deterministic whatever the number of encoding threads, because the set is filled in
 * stream order before the parallel encode.
 *
 * Thread safety: a built/loaded base index is immutable and may be shared by any number of threads.
 * The sent set has an internal rwlock: any functions may be called concurrently.
 */
#ifndef HANDOFF_PIPELINE_DEDUP_H
#define HANDOFF_PIPELINE_DEDUP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct overlay_identity;

#define DEDUP_ANCHOR_WIN      32     /* bytes hashed into an anchor key */
#define DEDUP_ANCHOR_BITS     7
#define DEDUP_ANCHOR_MIN_GAP  32

/* ---- base index -------------------------------------------------------------------------------- */

struct baseidx;

enum baseidx_flags {
	BASEIDX_NO_ANCHORS = 1 << 0,   /* chunk fingerprints only (saves ~half the build time and size) */
	BASEIDX_NO_CACHE   = 1 << 1,   /* neither read nor write a cache file */
};

/* Build the index of the base image readable from fd (size bytes; fd -1 = an all-zero base, which
 * gives an empty index). chunk: a power of two 512..1 MiB. Reads the file once, skipping holes.
 * Errors: HO_EIO, HO_ENOMEM, HO_EINVAL. */
int baseidx_build(int fd, uint64_t size, uint32_t chunk, unsigned flags, struct baseidx **out);

/* Open the index for the base identified by id from cache_dir (NULL = baseidx_default_dir()), or
 * build it from fd and store it there (creating the directory; a failure to store is logged as a
 * warning and not an error). *built tells whether it was built (may be NULL). With
 * BASEIDX_NO_ANCHORS a cached file's anchors are dropped after loading (less memory). */
int baseidx_open(const char *cache_dir, const struct overlay_identity *id, int fd, uint32_t chunk,
		 unsigned flags, struct baseidx **out, bool *built);

/* Save / load an index file (format above). Load checks magic, version, sizes, checksum and that
 * chunk, size and digest match the arguments: HO_ECORRUPT, HO_EBASE (another base), HO_ENOENT. */
int baseidx_save(const struct baseidx *bi, const char *path, const uint8_t digest[32]);
int baseidx_load(const char *path, const uint8_t digest[32], uint64_t size, uint32_t chunk,
		 struct baseidx **out);

/* The cache file path for (id, chunk) under cache_dir (NULL = default). malloc'd; NULL on ENOMEM. */
char *baseidx_cache_path(const char *cache_dir, const struct overlay_identity *id, uint32_t chunk);
/* ${HANDOFF_CACHE:-$HOME/.cache/handoff}/baseidx into buf. 0 or HO_EINVAL (too long / no HOME). */
int baseidx_default_dir(char *buf, size_t len);

void baseidx_free(struct baseidx *bi);

uint32_t baseidx_chunk_size(const struct baseidx *bi);
uint64_t baseidx_image_size(const struct baseidx *bi);
size_t baseidx_nchunks(const struct baseidx *bi);   /* entries (non-zero chunks) */
size_t baseidx_nanchors(const struct baseidx *bi);
size_t baseidx_memory(const struct baseidx *bi);    /* bytes held in memory */

/* Fingerprint of a chunk as the index stores it. */
uint64_t baseidx_fp(const void *chunk, size_t len);

/* Candidate chunks whose fingerprint is fp: writes up to max indexes (ascending) into idx and
 * returns how many there are in total (may exceed max). The caller verifies the bytes. */
size_t baseidx_lookup(const struct baseidx *bi, uint64_t fp, uint64_t *idx, size_t max);

/* Base offsets (anchor positions, see above) whose anchor key is key: like baseidx_lookup. */
size_t baseidx_anchor_lookup(const struct baseidx *bi, uint32_t key, uint64_t *off, size_t max);

/* Anchor candidates in buf, query side (every position that passes the hash condition, at most max,
 * in order): pos[i] is the position after the anchor window, key[i] its key. Returns the count. */
size_t dedup_anchors(const void *buf, size_t len, uint32_t *key, uint32_t *pos, size_t max);

/* ---- sent set ---------------------------------------------------------------------------------- */

struct sentset;

struct sentset *sentset_new(void);
void sentset_free(struct sentset *s);

/* Record that the chunk with fingerprint fp (XXH3-128, ho_xxh128) is sent to (img, idx) by the
 * record at stream position seq (>= 1). Drops any entry that pointed at (img, idx)'s previous
 * content. If fp is already present at another location, that (earlier) entry is kept.
 * 0 or HO_ENOMEM. */
int sentset_add(struct sentset *s, const uint8_t fp[16], int img, uint64_t idx, uint64_t seq);
/* Forget whatever (img, idx) held (it is being rewritten by other means). */
void sentset_invalidate(struct sentset *s, int img, uint64_t idx);
/* Find fp among entries with seq < before_seq: 0 with img and idx set, or HO_ENOENT. */
int sentset_lookup(struct sentset *s, const uint8_t fp[16], uint64_t before_seq, int *img,
		   uint64_t *idx);
size_t sentset_count(struct sentset *s);

/* What a persisted set describes: the receiver's images after it applied stream `stream` of this
 * sender, which ended at generation `until` (all zero: nothing, a new set). */
struct sentset_lineage {
	uint32_t until;
	uint8_t stream[16];
};
void sentset_set_lineage(struct sentset *s, const struct sentset_lineage *l);
void sentset_get_lineage(struct sentset *s, struct sentset_lineage *l);

/* Persist / restore with the lineage (durable replace; loaded entries get seq 0). Format:
 * "HOSENT2\n", u32 version 2, u32 until, u64 count, 16-byte stream id,
 * count x {16-byte fp, u8 image, u64 idx}, XXH3-64 of all before.
 * load: HO_ENOENT (no file), HO_ECORRUPT. */
int sentset_save(struct sentset *s, const char *path);
int sentset_load(const char *path, struct sentset **out);

#endif
