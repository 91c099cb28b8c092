/*
 * stream.h — the handoff stream format (handoff-stream(5)): an encoder that turns chunks into
 * checksummed, optionally authenticated frames, and a push decoder that verifies every byte of a
 * stream before handing out the chunks it carries. Both sides of the wire and the fuzz target use
 * exactly this code, so what the man page specifies is what runs.
 *
 * Layout (all integers little-endian; details and the reasons in handoff-stream(5)):
 *   header  256 bytes: magic, version, flags, stream id, sender id, generation range, chunk size,
 *           frame limit, mode name, per image its size and base identity, XXH3 checksum, HMAC.
 *   frames  a 64-byte frame header (type, codec, level, record count, sequence number, stream id,
 *           sizes, the previous frame's header checksum, payload and header checksums), then the
 *           payload (records, compressed as a whole by the frame codec), then a 32-byte HMAC chained
 *           over the previous frame's HMAC when the stream is authenticated.
 *   END     the last frame: counts and a SHA-256 over (image, index, bytes) of every chunk in
 *           stream order, so the receiver verifies the images it reconstructed.
 *
 * This is an internal header of the pipeline module (tools use pipeline.h); unit tests and the
 * fuzz target include it directly.
 *
 * Thread safety: an encoder or decoder belongs to one thread at a time.
 */
#ifndef HANDOFF_PIPELINE_STREAM_H
#define HANDOFF_PIPELINE_STREAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "overlay/overlay.h"

#define STREAM_MAGIC         "HOSTRM\r\n"
#define STREAM_VERSION       1
#define STREAM_HEADER_LEN    256
#define STREAM_FRAME_HDR_LEN 64
#define STREAM_MAC_LEN       32
#define STREAM_ID_LEN        16
#define STREAM_NIMAGES       2
#define STREAM_MODE_LEN      16          /* mode name field, NUL-padded (at most 15 characters) */
#define STREAM_REC_HDR_LEN   20
#define STREAM_END_LEN       72
#define STREAM_REF_LEN       16          /* payload of BASE_REF / SENT_REF records */
/* Limits a receiver enforces (documented in handoff-stream(5), LIMITS). */
#define STREAM_FRAME_MAX     (16u << 20) /* largest frame payload (decoded or encoded) */
#define STREAM_FRAME_MIN     1024u       /* smallest frame limit a header may declare */
#define STREAM_FRAME_DEFAULT (1u << 20)  /* what the encoder uses unless told otherwise */
/* The encoder also closes a frame once its chunks stand for this many image bytes, references
 * and zero chunks included, whatever its payload: the receiver writes every one of those bytes,
 * after the frame's last byte arrived. With the payload limit alone one frame of base references
 * stood for 331 MB of a guest's memory (a 16 MiB payload holding 44 MB of data chunks and the
 * rest references), and the receiver's last second went on it after the link had fallen idle
 * (bench/adapt.sh, 100 Mbit/s, xor-zstd1: 7.33-8.81 s before, 7.08-7.16 with this bound, for
 * 1.9 % more stream bytes). Not a format limit: a decoder takes any count. */
#define STREAM_FRAME_CHUNKS (64ull << 20)

enum stream_flags { STREAM_F_AUTH = 1 << 0 };

enum stream_frame_type { STREAM_FRAME_DATA = 1, STREAM_FRAME_END = 2 };

/* Frame codecs: the same numbering as enum codec in codec.h. */
enum stream_codec {
	STREAM_CODEC_NONE = 0, STREAM_CODEC_LZ4 = 1, STREAM_CODEC_LZ4HC = 2,
	STREAM_CODEC_ZSTD = 3, STREAM_CODEC_LZMA = 4, STREAM_CODEC_COUNT = 5,
};

/* Record encodings: how the bytes of a run of chunks are carried. */
enum stream_encoding {
	STREAM_ENC_RAW        = 0,   /* the bytes */
	STREAM_ENC_ZERO       = 1,   /* all zero */
	STREAM_ENC_BASE_REF   = 2,   /* equal to chunks SRC.. of base image SRC_IMAGE */
	STREAM_ENC_SENT_REF   = 3,   /* equal to chunks the receiver holds (see handoff-stream(5)) */
	STREAM_ENC_XOR_BASE   = 4,   /* the bytes XOR the base chunk at the same place */
	STREAM_ENC_DELTA_BASE = 5,   /* a delta against the base around the same place (delta.h DELTA) */
	STREAM_ENC_COUNT      = 6,
};

/* The stream header as a struct. */
struct stream_header {
	uint16_t version;
	bool authenticated;
	uint8_t id[STREAM_ID_LEN];       /* this stream (deterministic: see export.c) */
	uint8_t sender[STREAM_ID_LEN];   /* the sending overlay */
	uint32_t since, until;           /* generation range (since, until] */
	uint32_t chunk_size;
	uint32_t frame_max;              /* largest frame payload the sender emits */
	char mode[STREAM_MODE_LEN];      /* NUL-terminated */
	uint8_t basis[STREAM_ID_LEN];    /* sent-refs may name chunks received before this stream:
	                                    the id of the stream the receiver must have applied last
	                                    (all zero: they name only chunks of this stream) */
	struct {
		uint64_t size;                   /* image size */
		struct overlay_identity base;    /* its base */
	} image[STREAM_NIMAGES];
};

/* What the END frame carries (and what the decoder counted). */
struct stream_end {
	uint64_t frames;                   /* data frames before END */
	uint64_t records;
	uint64_t chunks[STREAM_NIMAGES];
	uint64_t bytes;                    /* sum of decoded payload sizes of the data frames */
	uint8_t digest[32];
};

/* One chunk, on its way into the encoder or out of the decoder. */
struct stream_chunk {
	int image;
	uint64_t idx;
	uint32_t len;                /* chunk length (the last chunk of an image may be short) */
	enum stream_encoding enc;    /* how it travels */
	int src_image;               /* BASE_REF / SENT_REF: referenced image and chunk */
	uint64_t src_idx;
	const uint8_t *data;         /* its reconstructed bytes (len); NULL allowed for ZERO */
	const uint8_t *payload;      /* XOR_BASE (len bytes) and DELTA_BASE: the record payload as */
	uint32_t payload_len;        /* the encoder should carry it (delta.h formats) */
};

/* Length of chunk idx of an image of `size` bytes. */
static inline uint32_t stream_chunk_len(uint64_t size, uint32_t chunk_size, uint64_t idx)
{
	uint64_t off = idx * chunk_size;
	return off >= size ? 0 : (uint32_t)(size - off < chunk_size ? size - off : chunk_size);
}
static inline uint64_t stream_nchunks(uint64_t size, uint32_t chunk_size)
{
	return (size + chunk_size - 1) / chunk_size;
}

/* Names for messages: "raw", "zero", ...; codec names as in codec.h. NULL if out of range. */
const char *stream_encoding_name(int enc);
const char *stream_codec_name(int codec);

/* Derive the per-stream HMAC key from a pre-shared key (handoff-stream(5), AUTHENTICATION). */
void stream_derive_key(const void *psk, size_t psk_len, const uint8_t id[STREAM_ID_LEN],
		       const uint8_t sender[STREAM_ID_LEN], uint8_t out[32]);

/* Serialise / parse a header (parse checks magic, version, checksum and field ranges, not the
 * MAC: the decoder does that). */
void stream_header_pack(const struct stream_header *h, const uint8_t key[32] /* NULL = unauth */,
			uint8_t out[STREAM_HEADER_LEN]);
int stream_header_parse(const uint8_t in[STREAM_HEADER_LEN], struct stream_header *h);

/* ---- encoder -------------------------------------------------------------------------------- */

enum stream_emit_kind { STREAM_EMIT_HEADER, STREAM_EMIT_FRAME, STREAM_EMIT_END };

/* The encoder hands out whole pieces of the stream: the header, each frame, END. seq is the frame
 * sequence number (0 for the header), check the piece's header checksum (the chain value). */
struct stream_piece {
	enum stream_emit_kind kind;
	uint64_t seq;
	uint64_t check;
	const uint8_t *buf;
	size_t len;
	uint64_t input_bytes;     /* FRAME: decoded payload bytes in it */
	uint64_t chunk_bytes;     /* FRAME: image bytes of the chunks it carries (ZERO and references
	                             included): the input it stands for */
	uint64_t literal_bytes;   /* FRAME: ...of those, the chunks it carries as data (RAW, XOR,
	                             DELTA): what the mode's encoders and codec worked on */
};
typedef int (*stream_emit_fn)(void *arg, const struct stream_piece *p);

struct stream_enc;

/*
 * Create an encoder for header h (h->frame_max 0 = STREAM_FRAME_DEFAULT, clamped to the limits;
 * h->authenticated is set from psk). psk NULL = unauthenticated. codec/level: the frame codec
 * (a frame the codec would not shrink goes out uncompressed). The header is emitted at once.
 * Returns 0 or HO_EINVAL / HO_ENOMEM / the emit callback's error.
 */
int stream_enc_new(const struct stream_header *h, const void *psk, size_t psk_len,
		   int codec, int level, stream_emit_fn emit, void *arg, struct stream_enc **out);
/* Compress frames on n worker threads (n <= 1: in the caller). The output is the same bytes
 * whatever n: frames are compressed in any order but finalised and emitted in order. Call once,
 * before the first chunk. */
int stream_enc_set_threads(struct stream_enc *e, unsigned n);
/* Set the frame codec for the next frames (e.g. from the adaptive engine). */
int stream_enc_set_codec(struct stream_enc *e, int codec, int level);
/* Close frames once their records reach limit bytes (0 or more than the header's frame_max: the
 * header's frame_max, which stays the hard limit; at least one chunk's record), from the frame
 * being collected on. Lets a sender that switches codecs between frames (the adaptive exporter)
 * give each codec the frame size it compresses well at: strong codecs gain from large frames,
 * cheap ones lose nothing with small ones and switch sooner. Always 0. */
int stream_enc_set_frame_limit(struct stream_enc *e, uint32_t limit);
/* Close the frame being collected now (it is compressed with the codec set at this moment), so
 * what follows goes into a new frame, e.g. at a switch of codec. A no-op when it is empty. 0 or
 * the (sticky) error of compressing or emitting it. */
int stream_enc_flush_frame(struct stream_enc *e);
/* Frames handed to the worker threads and not emitted yet (0 without workers): the next that
 * many frames emitted are those, in order. */
uint64_t stream_enc_frames_queued(struct stream_enc *e);
/* Add a chunk. Chunks must come in strictly increasing (image, idx) order; c->data must hold the
 * chunk's bytes for every encoding (they feed the END digest; NULL is read as zeroes for ZERO);
 * XOR_BASE and DELTA_BASE also need c->payload (the encoding is the caller's: delta.h).
 * Consecutive chunks of the same encoding are merged into one record (not DELTA_BASE).
 * Errors are sticky. */
int stream_enc_chunk(struct stream_enc *e, const struct stream_chunk *c);
/* Flush the last frame and emit END. end (may be NULL) gets the counts and digest. */
int stream_enc_finish(struct stream_enc *e, struct stream_end *end);
void stream_enc_free(struct stream_enc *e);

/* ---- decoder -------------------------------------------------------------------------------- */

/* What the decoder asks of and tells its caller. Any callback may be NULL (read_* then give
 * HO_EFORMAT for records that need them). A non-zero return stops decoding with that error. */
struct stream_dec_ops {
	/* The header verified (checksum and, with a key, MAC): check base identity and state. */
	int (*header)(void *arg, const struct stream_header *h);
	/* len bytes of base image img at off (always within the base) for BASE_REF, XOR_BASE and
	 * DELTA_BASE; may be called for any offset a delta's dictionary names. */
	int (*read_base)(void *arg, int img, uint64_t off, uint8_t *buf, uint32_t len);
	/* Bytes the receiver holds for chunk idx of img, as reconstructed so far, for SENT_REF. */
	int (*read_sent)(void *arg, int img, uint64_t idx, uint8_t *buf, uint32_t len);
	/* A verified, reconstructed chunk. Called for every chunk of a data frame only after the
	 * whole frame verified. */
	int (*chunk)(void *arg, const struct stream_chunk *c);
	/* All chunks of data frame seq were handed out; check is its chain value, mac its HMAC
	 * (zeroes without a key). The state to resume after this frame is in stream_dec_state(). */
	int (*frame)(void *arg, uint64_t seq);
	/* END verified: counts and digest match. */
	int (*end)(void *arg, const struct stream_end *end);
};

/* The decoder's position, enough to continue a stream after frame `frames - 1` (resume). */
struct stream_dec_pos {
	uint64_t frames;                 /* data frames accepted */
	uint64_t records;
	uint64_t chunks[STREAM_NIMAGES];
	uint64_t bytes;
	uint64_t prev_check;             /* chain value of the last frame (or of the header) */
	uint8_t prev_mac[STREAM_MAC_LEN];
	int last_image;                  /* last chunk seen, -1 before the first */
	uint64_t last_idx;
};

struct stream_dec;

/* psk NULL = expect an unauthenticated stream (an authenticated one is then rejected, HO_EAUTH). */
int stream_dec_new(const void *psk, size_t psk_len, const struct stream_dec_ops *ops, void *arg,
		   struct stream_dec **out);
void stream_dec_free(struct stream_dec *d);
/* Decompress and check frames on n worker threads (n <= 1: in the caller), before the first byte
 * is fed (else HO_ESTATE). Frames are verified (checksums, chain, mac) as they arrive and their
 * chunks handed out in stream order from the feeding thread, so callbacks never run concurrently
 * and the result is the same whatever n; a frame's chunks may be handed out during a later
 * stream_dec_feed() or stream_dec_finish() call, and an error in a frame is reported once the
 * frames before it were handed out. At most n + 1 frames are held. */
int stream_dec_set_threads(struct stream_dec *d, unsigned n);
/* Consume up to *len bytes of src; *len gets what was consumed (all of it unless an error or the
 * end of the stream came first). Returns 0 or the (sticky) error; every rejection is logged once
 * with the reason (ho_err) unless quiet was set. Bytes after END give HO_ETRAILING. */
int stream_dec_feed(struct stream_dec *d, const void *src, size_t *len);
/* Wait for the frames the workers hold (all input fed so far) and hand them out: a receiver
 * calls it before it waits for more input, so what it has is acknowledged (a sender may wait for
 * that before it sends more). 0 or the (sticky) error. */
int stream_dec_drain(struct stream_dec *d);
/* The input ended: 0 if END was verified, HO_ETRUNC (logged) otherwise. */
int stream_dec_finish(struct stream_dec *d);
bool stream_dec_done(const struct stream_dec *d);
/* NULL until the header verified. */
const struct stream_header *stream_dec_header(const struct stream_dec *d);
/* The header's STREAM_HEADER_LEN bytes as received (valid once stream_dec_header() is not NULL). */
const uint8_t *stream_dec_header_bytes(const struct stream_dec *d);
void stream_dec_get_pos(const struct stream_dec *d, struct stream_dec_pos *pos);
/* After the header was fed: continue at frame pos->frames (the earlier frames were accepted by a
 * previous decoder); replay_chunk() must then be given every chunk of those frames, in order, so
 * the END digest covers them. HO_ESTATE if not right after the header. */
int stream_dec_set_pos(struct stream_dec *d, const struct stream_dec_pos *pos);
void stream_dec_replay_chunk(struct stream_dec *d, int img, uint64_t idx, const void *data, uint32_t len);
/* Do not log rejections (the fuzz target and the bit-flip tests). */
void stream_dec_set_quiet(struct stream_dec *d, bool quiet);
/* The last rejection's message ("" if none). */
const char *stream_dec_errmsg(const struct stream_dec *d);

#endif
