/*
 * delta.h — turning one modified chunk into the smallest record the receiver can rebuild it from,
 * given the base images both sides hold: ZERO, a reference to a base chunk or to a chunk sent
 * earlier, an XOR with the same-offset base chunk, a DELTA (the chunk compressed with nearby and
 * far-away base bytes as dictionary, so unaligned copies of base data cost a few bytes), or RAW.
 * The stream engineer's framing carries (kind, payload) per chunk and compresses frames with the
 * mode's frame codec (see mode.h for the recommended composition).
 *
 * Choice per chunk (chunk_encode), cheapest test first, as the mode allows: all-zero -> ZERO;
 * equal to the same-offset base chunk -> BASEREF; equal (verified) to any aligned chunk of either
 * base image -> BASEREF (memory pages that are disk blocks and vice versa); equal to a chunk sent
 * earlier -> SENTREF; at most 1/32 of the bytes differ from the same-offset base chunk -> XOR
 * (sparse in-place edits: cheapest, and smallest once the frame codec squeezes the zero runs);
 * then DELTA if compressing against the base dictionary gives under 1/4 of the chunk, or beats
 * compressing the chunk alone by 1/8; else RAW (left to the frame codec, which sees neighbouring
 * chunks as context). No delta is tried when the dictionary would be all zeroes (new data in
 * empty space), nor the "alone" comparison when the delta is within 1/16 of the chunk size.
 * XOR-mode: XOR whenever at least 1/4 of the bytes are unchanged.
 *
 * Record payloads (the record header — image, chunk index, kind, payload length — is the stream's):
 *   ZERO     empty
 *   BASEREF  u8 image, uleb128 chunk index: the base chunk (image, idx) (either image's base)
 *   SENTREF  u8 image, uleb128 chunk index: the receiver's current content of that chunk
 *            (sent earlier in this stream, or in an earlier round: see dedup.h for validity)
 *   XOR      len bytes: the chunk XOR the same-offset base chunk
 *   DELTA    u8 codec (enum codec), u8 before, u8 after, u8 nfar,
 *            nfar x { u8 image, uleb128 base offset, uleb128 length },
 *            then the codec's output. The dictionary is the far regions in order, followed by the
 *            base bytes of the chunk's own image from (idx - before) * chunk to
 *            (idx + 1 + after) * chunk, clipped to the image. Decoding must yield exactly len bytes.
 *   RAW      len bytes
 * len is the chunk's length: the chunk size, or less for the last chunk of an image.
 *
 * Limits checked by the decoder: before, after <= DELTA_MAX_WINDOW, nfar <= DELTA_MAX_FAR, each far
 * region within its image and <= DELTA_MAX_REGION bytes, the whole dictionary <= DELTA_MAX_DICT;
 * violations give HO_EFORMAT, never an out-of-bounds access.
 *
 * Typical use (export; tests/helpers/pipebench.c does exactly this):
 *     struct delta_base b = { chunk, { disk_size, mem_size }, delta_read_fds, base_fds };
 *     baseidx_open(NULL, overlay_base_identity(ov, i), overlay_base_fd(ov, i), chunk,
 *                  mode->far ? 0 : BASEIDX_NO_ANCHORS, &idx[i], NULL);  b.index[i] = idx[i];
 *     sentset_load(OVERLAY_DIR "/sentset", &ss)  (HO_ENOENT: sentset_new());
 *     for each dirty chunk k = 1.. in stream order: xxh128 -> sentset_add(ss, fp, img, idx, k)
 *                                                   (all-zero: sentset_invalidate(ss, img, idx));
 *     per thread: chunk_enc_new(mode, &b, ss, &e); for its chunks: chunk_encode(e, img, idx,
 *                 data, len, k, buf, chunk_payload_bound(chunk), &rec) -> record (rec.kind, buf,
 *                 rec.len) into the frame; frames compressed with mode->frame_codec/level;
 *     after the receiver acknowledged the stream: sentset_save(ss, OVERLAY_DIR "/sentset").
 * Import: chunk_dec_new(&b, &d) per thread; chunk_decode(d, img, idx, kind, payload, plen, out,
 * len, read_current, arg) where read_current reads the receiver's staged/current chunk.
 *
 * Determinism: the same (mode, base, sent set, chunk, seq) always gives the same record.
 * Thread safety: a chunk_enc / chunk_dec belongs to one thread; make one per thread. They share
 * the struct delta_base (and its base indexes) and the sent set read-only / under its own lock.
 */
#ifndef HANDOFF_PIPELINE_DELTA_H
#define HANDOFF_PIPELINE_DELTA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "pipeline/codec.h"
#include "pipeline/dedup.h"
#include "pipeline/mode.h"

#define DELTA_NIMAGES     2           /* = OVERLAY_NIMAGES: 0 disk, 1 memory */
#define DELTA_MAX_WINDOW  64
#define DELTA_MAX_FAR     32
#define DELTA_MAX_REGION  (1u << 20)
#define DELTA_MAX_DICT    (8u << 20)

enum chunk_kind {
	CHUNK_ZERO    = 0,
	CHUNK_BASEREF = 1,
	CHUNK_SENTREF = 2,
	CHUNK_XOR     = 3,
	CHUNK_DELTA   = 4,
	CHUNK_RAW     = 5,
	CHUNK_NKINDS  = 6,
};

/* "zero", "baseref", "sentref", "xor", "delta", "raw" (NULL if unknown). */
const char *chunk_kind_name(enum chunk_kind k);

/* How both sides reach the base images. */
struct delta_base {
	uint32_t chunk_size;                    /* power of two */
	uint64_t size[DELTA_NIMAGES];           /* image sizes (0 = no such image) */
	/* read len base bytes of img at off (always within size[img]); 0 or negative enum ho_err.
	 * Called concurrently from every encoder/decoder thread. */
	int (*read)(void *arg, int img, void *buf, size_t len, uint64_t off);
	void *arg;
	/* sender only, may be NULL: the base indexes (BASEREF dedup across images, far anchors) */
	const struct baseidx *index[DELTA_NIMAGES];
};

/* A ready-made delta_base.read over file descriptors: arg points to int fd[DELTA_NIMAGES];
 * fd -1 reads as zeroes (an all-zero base). */
int delta_read_fds(void *arg, int img, void *buf, size_t len, uint64_t off);

/* Reads the receiver's (or, for verification, the sender's) current content of a chunk. */
typedef int (*delta_read_chunk_fn)(void *arg, int img, uint64_t idx, void *buf, size_t len);

/* ---- encoder ------------------------------------------------------------------------------------ */

struct chunk_rec {
	enum chunk_kind kind;
	int ref_img;                 /* BASEREF / SENTREF: the location referenced */
	uint64_t ref_idx;
	size_t len;                  /* payload bytes written to the caller's buffer */
	bool has_fp;                 /* fp below is set (when the mode dedups against sent chunks) */
	uint8_t fp[16];              /* XXH3-128 of the chunk: what sentset_add() wants */
};

struct chunk_stats {
	uint64_t count[CHUNK_NKINDS];
	uint64_t in_bytes[CHUNK_NKINDS];    /* chunk bytes encoded as each kind */
	uint64_t out_bytes[CHUNK_NKINDS];   /* payload bytes produced */
	uint64_t far_regions;               /* far dictionary regions used in DELTA records */
};

struct chunk_enc;

/* An encoder for one thread. mode and base must outlive it; sent may be NULL (no SENTREF).
 * Errors: HO_EINVAL (bad mode or chunk size), HO_ENOMEM. */
int chunk_enc_new(const struct mode *mode, const struct delta_base *base, struct sentset *sent,
		  struct chunk_enc **out);
void chunk_enc_free(struct chunk_enc *e);
/* Verify SENTREF candidates by reading the sender's current copy of the referenced chunk (optional:
 * without it a 128-bit fingerprint match is trusted and the stream's END digest is the backstop). */
void chunk_enc_set_verify(struct chunk_enc *e, delta_read_chunk_fn fn, void *arg);
/* Per-kind counters since chunk_enc_new. */
void chunk_enc_stats(const struct chunk_enc *e, struct chunk_stats *st);

/* Capacity a payload buffer needs for a chunk of chunk_size bytes. */
size_t chunk_payload_bound(uint32_t chunk_size);

/*
 * Encode the chunk (img, idx) whose new content is data[0..len) (len = chunk size, or less for an
 * image's last chunk). seq: the record's position in the stream (>= 1, increasing): SENTREFs only
 * name entries with a smaller seq. Writes the payload into out (capacity cap >=
 * chunk_payload_bound()) and describes it in *rec. Tries, as the mode allows and cheapest first:
 * zero, same-offset base chunk, any base chunk (verified), sent chunk, then the mode's delta,
 * keeping the smaller of delta and RAW. Errors: HO_EINVAL, HO_EIO (base read), HO_ENOMEM.
 */
int chunk_encode(struct chunk_enc *e, int img, uint64_t idx, const void *data, size_t len, uint64_t seq,
		 void *out, size_t cap, struct chunk_rec *rec);

/* ---- decoder ------------------------------------------------------------------------------------ */

struct chunk_dec;

int chunk_dec_new(const struct delta_base *base, struct chunk_dec **out);
void chunk_dec_free(struct chunk_dec *d);

/*
 * Rebuild chunk (img, idx) of length len into out from a record (kind, payload). read_current
 * resolves SENTREF (NULL: HO_EINVAL for such records). Never writes more than len bytes to out.
 * Errors: HO_EFORMAT (malformed or inconsistent payload, reference outside an image),
 * HO_EINVAL, HO_EIO (base read), HO_ENOMEM.
 */
int chunk_decode(struct chunk_dec *d, int img, uint64_t idx, enum chunk_kind kind, const void *payload,
		 size_t plen, void *out, size_t len, delta_read_chunk_fn read_current, void *arg);

/* ---- building blocks (exposed for tests and the benchmark) -------------------------------------- */

/* out[i] = a[i] ^ b[i] (out may alias a or b). */
void delta_xor(void *out, const void *a, const void *b, size_t len);
/* uleb128: put returns bytes written (<= 10); get returns bytes read, or 0 if malformed/truncated. */
size_t delta_put_uleb(uint8_t *p, uint64_t v);
size_t delta_get_uleb(const uint8_t *p, size_t avail, uint64_t *v);

#endif
