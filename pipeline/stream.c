/*
 * stream.c — the handoff stream format: encoder and push decoder (see stream.h and
 * handoff-stream(5)). Everything that crosses the wire is checked here, in a fixed order, so each
 * kind of damage gets its own error: a cut stream HO_ETRUNC, a flipped bit HO_ECHECKSUM, a
 * reordered, duplicated or foreign frame HO_ESEQ, a wrong key HO_EAUTH, bytes after END
 * HO_ETRAILING, a structurally bad record HO_EFORMAT, a wrong reconstruction HO_EDIGEST.
 */
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "common/common.h"
#include "pipeline/codec.h"
#include "pipeline/delta.h"
#include "pipeline/stream.h"

static const char *const enc_names[STREAM_ENC_COUNT] = {
	"raw", "zero", "base-ref", "sent-ref", "xor-base", "delta-base",
};
static const char *const codec_names[STREAM_CODEC_COUNT] = {
	"none", "lz4", "lz4hc", "zstd", "lzma",
};

const char *stream_encoding_name(int enc)
{
	return enc >= 0 && enc < STREAM_ENC_COUNT ? enc_names[enc] : NULL;
}

const char *stream_codec_name(int codec)
{
	return codec >= 0 && codec < STREAM_CODEC_COUNT ? codec_names[codec] : NULL;
}

void stream_derive_key(const void *psk, size_t psk_len, const uint8_t id[STREAM_ID_LEN],
		       const uint8_t sender[STREAM_ID_LEN], uint8_t out[32])
{
	static const char label[] = "handoff-stream-v1 key";
	struct ho_hmac *h = ho_hmac_new(psk, psk_len);
	if (!h) {               /* out of memory: a key nobody can match */
		ho_random(out, 32);
		return;
	}
	ho_hmac_update(h, label, sizeof(label) - 1);
	ho_hmac_update(h, id, STREAM_ID_LEN);
	ho_hmac_update(h, sender, STREAM_ID_LEN);
	ho_hmac_final(h, out);
	ho_hmac_free(h);
}

/* HMAC-SHA-256 over up to three pieces. */
static void mac3(const uint8_t key[32], const void *a, size_t alen, const void *b, size_t blen,
		 const void *c, size_t clen, uint8_t out[32])
{
	struct ho_hmac *h = ho_hmac_new(key, 32);
	if (!h) {
		memset(out, 0xff, 32);     /* never equal to a real MAC by accident... and logged below */
		ho_err("cannot compute hmac: out of memory");
		return;
	}
	if (alen)
		ho_hmac_update(h, a, alen);
	if (blen)
		ho_hmac_update(h, b, blen);
	if (clen)
		ho_hmac_update(h, c, clen);
	ho_hmac_final(h, out);
	ho_hmac_free(h);
}

/* ---- header ----------------------------------------------------------------------------------- */

enum {
	H_MAGIC = 0, H_VERSION = 8, H_FLAGS = 10, H_LEN = 12, H_ID = 16, H_SENDER = 32, H_SINCE = 48,
	H_UNTIL = 52, H_CHUNK = 56, H_FRAMEMAX = 60, H_NIMAGES = 64, H_MODE = 72, H_IMAGES = 88,
	H_IMAGE_LEN = 56, H_BASIS = 200, H_CHECK = 216, H_MAC = 224,
};
enum { I_SIZE = 0, I_BASE_SIZE = 8, I_ZERO = 16, I_DIGEST = 24 };
enum {
	F_TYPE = 0, F_CODEC = 1, F_LEVEL = 2, F_FLAGS = 3, F_NREC = 4, F_SEQ = 8, F_ID = 16,
	F_RAW = 32, F_ENC = 36, F_PREV = 40, F_PCHECK = 48, F_HCHECK = 56,
};

void stream_header_pack(const struct stream_header *h, const uint8_t key[32], uint8_t out[STREAM_HEADER_LEN])
{
	memset(out, 0, STREAM_HEADER_LEN);
	memcpy(out + H_MAGIC, STREAM_MAGIC, 8);
	ho_put_le16(out + H_VERSION, STREAM_VERSION);
	ho_put_le16(out + H_FLAGS, key ? STREAM_F_AUTH : 0);
	ho_put_le32(out + H_LEN, STREAM_HEADER_LEN);
	memcpy(out + H_ID, h->id, STREAM_ID_LEN);
	memcpy(out + H_SENDER, h->sender, STREAM_ID_LEN);
	ho_put_le32(out + H_SINCE, h->since);
	ho_put_le32(out + H_UNTIL, h->until);
	ho_put_le32(out + H_CHUNK, h->chunk_size);
	ho_put_le32(out + H_FRAMEMAX, h->frame_max);
	out[H_NIMAGES] = STREAM_NIMAGES;
	memcpy(out + H_MODE, h->mode, strnlen(h->mode, STREAM_MODE_LEN - 1));
	for (int i = 0; i < STREAM_NIMAGES; i++) {
		uint8_t *p = out + H_IMAGES + i * H_IMAGE_LEN;
		ho_put_le64(p + I_SIZE, h->image[i].size);
		ho_put_le64(p + I_BASE_SIZE, h->image[i].base.size);
		p[I_ZERO] = h->image[i].base.zero ? 1 : 0;
		memcpy(p + I_DIGEST, h->image[i].base.digest, 32);
	}
	memcpy(out + H_BASIS, h->basis, STREAM_ID_LEN);
	ho_put_le64(out + H_CHECK, ho_xxh64(out, H_CHECK));
	if (key)
		mac3(key, out, H_MAC, NULL, 0, NULL, 0, out + H_MAC);
}

static bool all_zero(const uint8_t *p, size_t n)
{
	while (n--)
		if (*p++)
			return false;
	return true;
}

/* Reasons go to *why (static strings or buf). */
static int header_parse(const uint8_t *in, struct stream_header *h, char *why, size_t why_len)
{
	uint32_t cs;

	memset(h, 0, sizeof(*h));
	if (memcmp(in + H_MAGIC, STREAM_MAGIC, 8) != 0) {
		snprintf(why, why_len, "not a handoff stream (bad magic)");
		return HO_EFORMAT;
	}
	h->version = ho_get_le16(in + H_VERSION);
	if (h->version != STREAM_VERSION) {
		snprintf(why, why_len, "stream format version %u is not supported (this program reads version %d)",
			 h->version, STREAM_VERSION);
		return HO_EVERSION;
	}
	if (ho_get_le32(in + H_LEN) != STREAM_HEADER_LEN) {
		snprintf(why, why_len, "stream header length %u is not %d", ho_get_le32(in + H_LEN), STREAM_HEADER_LEN);
		return HO_EFORMAT;
	}
	if (ho_get_le64(in + H_CHECK) != ho_xxh64(in, H_CHECK)) {
		snprintf(why, why_len, "stream header checksum mismatch");
		return HO_ECHECKSUM;
	}
	uint16_t flags = ho_get_le16(in + H_FLAGS);
	if (flags & ~STREAM_F_AUTH) {
		snprintf(why, why_len, "stream header has unknown flags 0x%x", flags);
		return HO_EFORMAT;
	}
	h->authenticated = flags & STREAM_F_AUTH;
	memcpy(h->id, in + H_ID, STREAM_ID_LEN);
	memcpy(h->sender, in + H_SENDER, STREAM_ID_LEN);
	h->since = ho_get_le32(in + H_SINCE);
	h->until = ho_get_le32(in + H_UNTIL);
	h->chunk_size = cs = ho_get_le32(in + H_CHUNK);
	h->frame_max = ho_get_le32(in + H_FRAMEMAX);
	if (cs < 512 || cs > (1u << 20) || (cs & (cs - 1))) {
		snprintf(why, why_len, "stream chunk size %u is invalid", cs);
		return HO_EFORMAT;
	}
	if (h->frame_max < STREAM_FRAME_MIN || h->frame_max > STREAM_FRAME_MAX ||
	    h->frame_max < cs + STREAM_REC_HDR_LEN) {
		snprintf(why, why_len, "stream frame limit %u is outside %u..%u or below one chunk",
			 h->frame_max, STREAM_FRAME_MIN, STREAM_FRAME_MAX);
		return HO_EFORMAT;
	}
	if (h->since > h->until) {
		snprintf(why, why_len, "stream generation range %u..%u is reversed", h->since, h->until);
		return HO_EFORMAT;
	}
	if (in[H_NIMAGES] != STREAM_NIMAGES || !all_zero(in + H_NIMAGES + 1, 7)) {
		snprintf(why, why_len, "stream header has unknown fields set");
		return HO_EFORMAT;
	}
	memcpy(h->basis, in + H_BASIS, STREAM_ID_LEN);
	memcpy(h->mode, in + H_MODE, STREAM_MODE_LEN);
	if (h->mode[STREAM_MODE_LEN - 1] != 0) {
		snprintf(why, why_len, "stream mode name is not terminated");
		return HO_EFORMAT;
	}
	for (int i = 0; h->mode[i]; i++)
		if (h->mode[i] < 0x21 || h->mode[i] > 0x7e) {
			snprintf(why, why_len, "stream mode name has invalid characters");
			return HO_EFORMAT;
		}
	for (int i = 0; i < STREAM_NIMAGES; i++) {
		const uint8_t *p = in + H_IMAGES + i * H_IMAGE_LEN;
		h->image[i].size = ho_get_le64(p + I_SIZE);
		h->image[i].base.size = ho_get_le64(p + I_BASE_SIZE);
		if (p[I_ZERO] > 1 || !all_zero(p + I_ZERO + 1, 7)) {
			snprintf(why, why_len, "stream header has unknown fields set");
			return HO_EFORMAT;
		}
		h->image[i].base.zero = p[I_ZERO];
		memcpy(h->image[i].base.digest, p + I_DIGEST, 32);
		if (h->image[i].size > (1ull << 50) || h->image[i].base.size > (1ull << 50)) {
			snprintf(why, why_len, "stream image size is out of range");
			return HO_EFORMAT;
		}
	}
	if (!h->authenticated && !all_zero(in + H_MAC, STREAM_MAC_LEN)) {
		snprintf(why, why_len, "unauthenticated stream header carries a mac");
		return HO_EFORMAT;
	}
	return 0;
}

int stream_header_parse(const uint8_t in[STREAM_HEADER_LEN], struct stream_header *h)
{
	char why[256];
	return header_parse(in, h, why, sizeof(why));
}

/* ---- encoder ---------------------------------------------------------------------------------- */

struct stream_enc {
	struct stream_header h;
	bool auth;
	uint8_t key[32];
	int codec, level;
	struct codec_ctx *cctx;
	stream_emit_fn emit;
	void *arg;
	int err;                        /* sticky */

	uint8_t *payload;               /* frame_max: records being collected */
	size_t plen;
	uint64_t pchunks;               /* image bytes of the chunks in the frame being collected */
	uint64_t plit;                  /* ...of those of them encoded as data (RAW, XOR, DELTA) */
	uint32_t frame_lim;             /* close frames at this size (<= h.frame_max) */
	uint32_t nrec;
	/* the open record (its header is written when it closes) */
	bool rec_open;
	size_t rec_off;
	int rec_enc, rec_image, rec_src_image;
	uint64_t rec_idx, rec_count, rec_src_idx;

	uint8_t *out;                   /* frame header + encoded payload + mac */
	uint64_t seq, prev_check;
	uint8_t prev_mac[32];
	int last_image;
	uint64_t last_idx;
	struct stream_end end;
	struct ho_sha256 *digest;
	uint8_t *zero;                  /* chunk_size zeroes */
	struct enc_digest *dig;         /* with workers: the digest on a thread of its own */

	/* parallel compression (stream_enc_set_threads): a ring of frame jobs, compressed by the
	 * workers in any order, finalised (chain, checksums, mac, emit) in order by the caller */
	unsigned nthreads, njobs;
	pthread_t *workers;
	struct enc_job *jobs;           /* guarded by mu: state; the rest belongs to whoever runs it */
	unsigned head, count;           /* guarded by mu: jobs head .. head+count-1 are submitted */
	bool stop;                      /* guarded by mu */
	pthread_mutex_t mu;
	pthread_cond_t cv;
};

enum { JOB_FREE, JOB_QUEUED, JOB_RUNNING, JOB_DONE };

struct enc_job {
	uint8_t *payload, *out;         /* frame_max; frame header + frame_max + mac */
	size_t plen, enc_len;
	uint64_t chunks;                /* image bytes of its chunks */
	uint64_t lit;                   /* ...encoded as data */
	uint32_t nrec;
	int codec, level, rc, state;
};

static int enc_emit(struct stream_enc *e, enum stream_emit_kind kind, uint64_t seq, uint64_t check,
		    const uint8_t *buf, size_t len, uint64_t input, uint64_t chunks, uint64_t lit)
{
	struct stream_piece p = { kind, seq, check, buf, len, input, chunks, lit };
	return e->emit(e->arg, &p);
}

int stream_enc_new(const struct stream_header *h, const void *psk, size_t psk_len,
		   int codec, int level, stream_emit_fn emit, void *arg, struct stream_enc **out)
{
	struct stream_enc *e;
	uint8_t hdr[STREAM_HEADER_LEN];
	uint32_t cs = h->chunk_size;
	int rc;

	*out = NULL;
	if (cs < 512 || cs > (1u << 20) || (cs & (cs - 1)) || h->since > h->until)
		return HO_EINVAL;
	e = calloc(1, sizeof(*e));
	if (!e)
		return HO_ENOMEM;
	e->h = *h;
	if (!e->h.frame_max)
		e->h.frame_max = STREAM_FRAME_DEFAULT;
	e->h.frame_max = HO_MAX(e->h.frame_max, HO_MAX(STREAM_FRAME_MIN, cs + STREAM_REC_HDR_LEN));
	e->h.frame_max = HO_MIN(e->h.frame_max, STREAM_FRAME_MAX);
	e->frame_lim = e->h.frame_max;
	e->h.version = STREAM_VERSION;
	e->h.authenticated = psk != NULL;
	e->h.mode[STREAM_MODE_LEN - 1] = 0;
	e->emit = emit;
	e->arg = arg;
	e->last_image = -1;
	e->payload = malloc(e->h.frame_max);
	e->out = malloc(STREAM_FRAME_HDR_LEN + e->h.frame_max + STREAM_MAC_LEN);
	e->zero = calloc(1, cs);
	e->digest = ho_sha256_new();
	if (!e->payload || !e->out || !e->zero || !e->digest) {
		stream_enc_free(e);
		return HO_ENOMEM;
	}
	if ((rc = stream_enc_set_codec(e, codec, level))) {
		stream_enc_free(e);
		return rc;
	}
	if (psk) {
		e->auth = true;
		stream_derive_key(psk, psk_len, h->id, h->sender, e->key);
	}
	stream_header_pack(&e->h, e->auth ? e->key : NULL, hdr);
	e->prev_check = ho_get_le64(hdr + H_CHECK);
	memcpy(e->prev_mac, hdr + H_MAC, 32);
	rc = enc_emit(e, STREAM_EMIT_HEADER, 0, e->prev_check, hdr, sizeof(hdr), 0, 0, 0);
	if (rc) {
		stream_enc_free(e);
		return rc;
	}
	*out = e;
	return 0;
}

int stream_enc_set_codec(struct stream_enc *e, int codec, int level)
{
	if (codec < 0 || codec >= STREAM_CODEC_COUNT || level < -128 || level > 127)
		return HO_EINVAL;
	if (codec != STREAM_CODEC_NONE) {
		if (!codec_level_valid((enum codec)codec, level))
			return HO_EINVAL;
		if (!e->cctx && !(e->cctx = codec_ctx_new()))
			return HO_ENOMEM;
	}
	e->codec = codec;
	e->level = codec == STREAM_CODEC_NONE ? 0 : level;
	return 0;
}

static void enc_close_record(struct stream_enc *e)
{
	uint8_t *p;

	if (!e->rec_open)
		return;
	p = e->payload + e->rec_off;
	p[0] = (uint8_t)e->rec_enc;
	p[1] = (uint8_t)e->rec_image;
	ho_put_le16(p + 2, 0);
	ho_put_le32(p + 4, (uint32_t)e->rec_count);
	ho_put_le64(p + 8, e->rec_idx);
	ho_put_le32(p + 16, (uint32_t)(e->plen - e->rec_off - STREAM_REC_HDR_LEN));
	e->rec_open = false;
	e->nrec++;
}

/* Frame header + checks + mac around the payload at e->out + 64 (enc_len bytes), then emit. */
static int enc_emit_frame(struct stream_enc *e, uint8_t *f, int type, int codec, int level, uint32_t nrec,
			  uint32_t raw_len, uint32_t enc_len, uint64_t chunks, uint64_t lit)
{
	uint8_t *mac = f + STREAM_FRAME_HDR_LEN + enc_len;
	uint64_t check;
	int rc;

	memset(f, 0, STREAM_FRAME_HDR_LEN);
	f[F_TYPE] = (uint8_t)type;
	f[F_CODEC] = (uint8_t)codec;
	f[F_LEVEL] = (uint8_t)(int8_t)level;
	ho_put_le32(f + F_NREC, nrec);
	ho_put_le64(f + F_SEQ, e->seq);
	memcpy(f + F_ID, e->h.id, STREAM_ID_LEN);
	ho_put_le32(f + F_RAW, raw_len);
	ho_put_le32(f + F_ENC, enc_len);
	ho_put_le64(f + F_PREV, e->prev_check);
	ho_put_le64(f + F_PCHECK, ho_xxh64(f + STREAM_FRAME_HDR_LEN, enc_len));
	check = ho_xxh64(f, F_HCHECK);
	ho_put_le64(f + F_HCHECK, check);
	if (e->auth) {
		mac3(e->key, e->prev_mac, 32, f, STREAM_FRAME_HDR_LEN + (size_t)enc_len, NULL, 0, mac);
		memcpy(e->prev_mac, mac, 32);
	}
	rc = enc_emit(e, type == STREAM_FRAME_END ? STREAM_EMIT_END : STREAM_EMIT_FRAME, e->seq, check, f,
		      STREAM_FRAME_HDR_LEN + (size_t)enc_len + (e->auth ? STREAM_MAC_LEN : 0),
		      type == STREAM_FRAME_END ? 0 : raw_len, chunks, lit);
	e->prev_check = check;
	e->seq++;
	return rc;
}

/* Compress a job's payload into its out buffer (or copy it when the codec would not shrink it). */
static void job_compress(struct codec_ctx *ctx, struct enc_job *j)
{
	size_t enc_len = 0;
	int rc;

	j->rc = 0;
	if (j->codec != STREAM_CODEC_NONE) {
		rc = codec_compress(ctx, (enum codec)j->codec, j->level, NULL, 0, j->payload, j->plen,
				    j->out + STREAM_FRAME_HDR_LEN, j->plen - 1, &enc_len);
		if (rc == HO_ELIMIT) {
			j->codec = STREAM_CODEC_NONE;     /* would not shrink: send it as it is */
		} else if (rc) {
			j->rc = rc;
			return;
		}
	}
	if (j->codec == STREAM_CODEC_NONE) {
		memcpy(j->out + STREAM_FRAME_HDR_LEN, j->payload, j->plen);
		enc_len = j->plen;
		j->level = 0;
	}
	j->enc_len = enc_len;
}

static int job_finalize(struct stream_enc *e, struct enc_job *j)
{
	if (j->rc)
		return j->rc;
	return enc_emit_frame(e, j->out, STREAM_FRAME_DATA, j->codec, j->level, j->nrec, (uint32_t)j->plen,
			      (uint32_t)j->enc_len, j->chunks, j->lit);
}

static void *enc_worker(void *arg)
{
	struct stream_enc *e = arg;
	struct codec_ctx *ctx = codec_ctx_new();

	pthread_mutex_lock(&e->mu);
	for (;;) {
		struct enc_job *j = NULL;
		for (unsigned i = 0; i < e->count && !j; i++) {
			struct enc_job *c = &e->jobs[(e->head + i) % e->njobs];
			if (c->state == JOB_QUEUED)
				j = c;
		}
		if (!j) {
			if (e->stop)
				break;
			pthread_cond_wait(&e->cv, &e->mu);
			continue;
		}
		j->state = JOB_RUNNING;
		pthread_mutex_unlock(&e->mu);
		if (ctx)
			job_compress(ctx, j);
		else
			j->rc = HO_ENOMEM;
		pthread_mutex_lock(&e->mu);
		j->state = JOB_DONE;
		pthread_cond_broadcast(&e->cv);
	}
	pthread_mutex_unlock(&e->mu);
	codec_ctx_free(ctx);
	return NULL;
}

/* Emit the oldest compressed frame if it is done (wait: wait for it). *none is set when there was
 * nothing to emit; otherwise the emit callback's return (which may be positive) is returned. */
static int enc_retire(struct stream_enc *e, bool wait, bool *none)
{
	struct enc_job *j;
	int rc;

	*none = true;
	if (!e->nthreads)
		return 0;
	pthread_mutex_lock(&e->mu);
	if (!e->count) {
		pthread_mutex_unlock(&e->mu);
		return 0;
	}
	j = &e->jobs[e->head];
	while (wait && j->state != JOB_DONE)
		pthread_cond_wait(&e->cv, &e->mu);
	if (j->state != JOB_DONE) {
		pthread_mutex_unlock(&e->mu);
		return 0;
	}
	*none = false;
	pthread_mutex_unlock(&e->mu);
	rc = job_finalize(e, j);
	pthread_mutex_lock(&e->mu);
	j->state = JOB_FREE;
	e->head = (e->head + 1) % e->njobs;
	e->count--;
	pthread_mutex_unlock(&e->mu);
	return rc;
}

static int enc_flush(struct stream_enc *e)
{
	int rc = 0;

	enc_close_record(e);
	if (!e->plen)
		return 0;
	e->end.frames++;
	e->end.records += e->nrec;
	e->end.bytes += e->plen;
	if (e->nthreads > 1 && e->codec != STREAM_CODEC_NONE) {
		/* retire what is done; wait for the oldest if the ring is full */
		bool none;
		while ((rc = enc_retire(e, e->count == e->njobs, &none)) == 0 && !none)
			;
		if (rc)
			return rc;
		pthread_mutex_lock(&e->mu);
		struct enc_job *j = &e->jobs[(e->head + e->count) % e->njobs];
		uint8_t *t = j->payload;
		j->payload = e->payload;
		e->payload = t;
		j->plen = e->plen;
		j->chunks = e->pchunks;
		j->lit = e->plit;
		j->nrec = e->nrec;
		j->codec = e->codec;
		j->level = e->level;
		j->state = JOB_QUEUED;
		e->count++;
		pthread_cond_broadcast(&e->cv);
		pthread_mutex_unlock(&e->mu);
	} else {
		/* drain parallel jobs first (the codec may have changed to none) */
		bool none;
		while ((rc = enc_retire(e, true, &none)) == 0 && !none)
			;
		if (rc)
			return rc;
		struct enc_job j = { .payload = e->payload, .out = e->out, .plen = e->plen, .nrec = e->nrec,
				     .codec = e->codec, .level = e->level, .chunks = e->pchunks,
				     .lit = e->plit };
		job_compress(e->cctx, &j);
		if ((rc = job_finalize(e, &j)))
			return rc;
	}
	e->plen = 0;
	e->pchunks = 0;
	e->plit = 0;
	e->nrec = 0;
	return 0;
}

/* The stream digest (SHA-256 of every chunk's image, index and bytes, in order) on a thread of
 * its own when the encoder has workers: it was a quarter of the caller's CPU (the export's walk,
 * the pipeline's longest stage), 0.46 s of 2.1 for 640 MiB of a guest's changes in delta-zstd3,
 * where copying the bytes into this ring costs a few percent of that. The ring carries exactly
 * the bytes the digest reads, in order. */
#define DIGEST_RING (8u << 20)

struct enc_digest {
	struct ho_sha256 *sha;
	uint8_t *ring;
	pthread_t th;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	size_t rd, used;                /* guarded by mu: read position, bytes waiting */
	bool hashing;                   /* guarded by mu: the thread works on bytes it took */
	bool stop;
};

static void *digest_main(void *arg)
{
	struct enc_digest *d = arg;

	pthread_mutex_lock(&d->mu);
	for (;;) {
		if (!d->used) {
			if (d->stop)
				break;
			pthread_cond_wait(&d->cv, &d->mu);
			continue;
		}
		size_t rd = d->rd, n = HO_MIN(d->used, (size_t)DIGEST_RING - rd);
		d->hashing = true;
		pthread_mutex_unlock(&d->mu);
		ho_sha256_update(d->sha, d->ring + rd, n);
		pthread_mutex_lock(&d->mu);
		d->hashing = false;
		d->rd = (rd + n) % DIGEST_RING;
		d->used -= n;
		pthread_cond_broadcast(&d->cv);
	}
	pthread_mutex_unlock(&d->mu);
	return NULL;
}

/* Append len bytes to the ring, waiting for room. */
static void digest_push(struct enc_digest *d, const uint8_t *p, size_t len)
{
	while (len) {
		pthread_mutex_lock(&d->mu);
		while (d->used == DIGEST_RING)
			pthread_cond_wait(&d->cv, &d->mu);
		size_t wr = (d->rd + d->used) % DIGEST_RING;
		size_t n = HO_MIN(len, HO_MIN((size_t)DIGEST_RING - d->used, (size_t)DIGEST_RING - wr));
		pthread_mutex_unlock(&d->mu);
		/* only this thread writes, and the reader stays out of [wr, wr + n) until used says so */
		memcpy(d->ring + wr, p, n);
		pthread_mutex_lock(&d->mu);
		d->used += n;
		pthread_cond_broadcast(&d->cv);
		pthread_mutex_unlock(&d->mu);
		p += n;
		len -= n;
	}
}

/* Wait until the thread has hashed everything pushed. */
static void digest_drain(struct enc_digest *d)
{
	pthread_mutex_lock(&d->mu);
	while (d->used || d->hashing)
		pthread_cond_wait(&d->cv, &d->mu);
	pthread_mutex_unlock(&d->mu);
}

static void digest_free(struct enc_digest *d)
{
	if (!d)
		return;
	pthread_mutex_lock(&d->mu);
	d->stop = true;
	pthread_cond_broadcast(&d->cv);
	pthread_mutex_unlock(&d->mu);
	pthread_join(d->th, NULL);
	pthread_cond_destroy(&d->cv);
	pthread_mutex_destroy(&d->mu);
	free(d->ring);
	free(d);
}

static struct enc_digest *digest_new(struct ho_sha256 *sha)
{
	struct enc_digest *d = calloc(1, sizeof(*d));

	if (!d || !(d->ring = malloc(DIGEST_RING))) {
		free(d);
		return NULL;
	}
	d->sha = sha;
	pthread_mutex_init(&d->mu, NULL);
	pthread_cond_init(&d->cv, NULL);
	if (pthread_create(&d->th, NULL, digest_main, d) != 0) {
		pthread_cond_destroy(&d->cv);
		pthread_mutex_destroy(&d->mu);
		free(d->ring);
		free(d);
		return NULL;
	}
	return d;
}

int stream_enc_set_threads(struct stream_enc *e, unsigned n)
{
	if (e->nthreads || n <= 1)
		return 0;
	e->njobs = 2 * n;
	e->jobs = calloc(e->njobs, sizeof(*e->jobs));
	e->workers = calloc(n, sizeof(*e->workers));
	if (!e->jobs || !e->workers)
		return HO_ENOMEM;
	for (unsigned i = 0; i < e->njobs; i++) {
		e->jobs[i].payload = malloc(e->h.frame_max);
		e->jobs[i].out = malloc(STREAM_FRAME_HDR_LEN + (size_t)e->h.frame_max + STREAM_MAC_LEN);
		if (!e->jobs[i].payload || !e->jobs[i].out)
			return HO_ENOMEM;
	}
	if (!(e->dig = digest_new(e->digest)))
		return HO_ENOMEM;
	pthread_mutex_init(&e->mu, NULL);
	pthread_cond_init(&e->cv, NULL);
	for (unsigned i = 0; i < n; i++) {
		if (pthread_create(&e->workers[i], NULL, enc_worker, e) != 0)
			break;
		e->nthreads++;
	}
	return e->nthreads ? 0 : HO_ENOMEM;
}

int stream_enc_set_frame_limit(struct stream_enc *e, uint32_t limit)
{
	uint32_t lo = HO_MAX(STREAM_FRAME_MIN, e->h.chunk_size + STREAM_REC_HDR_LEN);

	if (!limit || limit > e->h.frame_max)
		limit = e->h.frame_max;
	e->frame_lim = HO_MAX(limit, HO_MIN(lo, e->h.frame_max));
	return 0;
}

uint64_t stream_enc_frames_queued(struct stream_enc *e)
{
	uint64_t n;

	if (!e->nthreads)
		return 0;
	pthread_mutex_lock(&e->mu);
	n = e->count;
	pthread_mutex_unlock(&e->mu);
	return n;
}

int stream_enc_flush_frame(struct stream_enc *e)
{
	int rc;

	if (e->err)
		return e->err;
	if ((rc = enc_flush(e)))
		return e->err = rc;
	return 0;
}

/* Bytes the record payload needs for one more chunk of this encoding. */
static size_t enc_chunk_bytes(const struct stream_chunk *c)
{
	switch (c->enc) {
	case STREAM_ENC_RAW:        return c->len;
	case STREAM_ENC_XOR_BASE:   return c->len;
	case STREAM_ENC_DELTA_BASE: return c->payload_len;
	default:                    return 0;
	}
}

int stream_enc_chunk(struct stream_enc *e, const struct stream_chunk *c)
{
	uint64_t size;
	uint8_t le[9];
	size_t need;
	bool extend;

	if (e->err)
		return e->err;
	if (c->image < 0 || c->image >= STREAM_NIMAGES || c->enc < 0 || c->enc >= STREAM_ENC_COUNT)
		return e->err = HO_EINVAL;
	size = e->h.image[c->image].size;
	if (c->idx >= stream_nchunks(size, e->h.chunk_size) ||
	    c->len != stream_chunk_len(size, e->h.chunk_size, c->idx) ||
	    (c->image < e->last_image || (c->image == e->last_image && c->idx <= e->last_idx)) ||
	    (!c->data && c->enc != STREAM_ENC_ZERO)) {
		ho_err("cannot encode chunk %llu of '%s': out of order or out of range",
		       (unsigned long long)c->idx, overlay_image_name(c->image));
		return e->err = HO_EINVAL;
	}
	if ((c->enc == STREAM_ENC_XOR_BASE && (!c->payload || c->payload_len != c->len)) ||
	    (c->enc == STREAM_ENC_DELTA_BASE &&
	     (!c->payload || !c->payload_len || c->payload_len + STREAM_REC_HDR_LEN > e->h.frame_max))) {
		ho_err("cannot encode chunk %llu of '%s': bad %s payload", (unsigned long long)c->idx,
		       overlay_image_name(c->image), enc_names[c->enc]);
		return e->err = HO_EINVAL;
	}
	if (c->enc == STREAM_ENC_BASE_REF || c->enc == STREAM_ENC_SENT_REF) {
		uint64_t ssize = c->enc == STREAM_ENC_BASE_REF ? e->h.image[c->src_image & 1].base.size
							     : e->h.image[c->src_image & 1].size;
		if (c->src_image < 0 || c->src_image >= STREAM_NIMAGES ||
		    c->src_idx >= stream_nchunks(ssize, e->h.chunk_size) ||
		    stream_chunk_len(ssize, e->h.chunk_size, c->src_idx) != c->len)
			return e->err = HO_EINVAL;
	}
	/* digest: (image, idx, bytes) */
	le[0] = (uint8_t)c->image;
	ho_put_le64(le + 1, c->idx);
	if (e->dig) {
		digest_push(e->dig, le, 9);
		digest_push(e->dig, c->data ? c->data : e->zero, c->len);
	} else {
		ho_sha256_update(e->digest, le, 9);
		ho_sha256_update(e->digest, c->data ? c->data : e->zero, c->len);
	}
	e->end.chunks[c->image]++;
	e->last_image = c->image;
	e->last_idx = c->idx;

	need = enc_chunk_bytes(c);
	/* a frame also closes at STREAM_FRAME_CHUNKS bytes of chunks, references included */
	bool full = e->pchunks + c->len > STREAM_FRAME_CHUNKS;
	extend = !full && e->rec_open && c->enc != STREAM_ENC_DELTA_BASE && e->rec_enc == (int)c->enc && e->rec_image == c->image &&
		 e->rec_idx + e->rec_count == c->idx && e->rec_count < UINT32_MAX &&
		 e->plen + need <= e->frame_lim &&
		 /* a short chunk can only be the last of a record */
		 c->len == e->h.chunk_size;
	if (extend && (c->enc == STREAM_ENC_BASE_REF || c->enc == STREAM_ENC_SENT_REF))
		extend = e->rec_src_image == c->src_image && e->rec_src_idx + e->rec_count == c->src_idx;
	if (!extend) {
		enc_close_record(e);
		size_t rec = STREAM_REC_HDR_LEN + need +
			     ((c->enc == STREAM_ENC_BASE_REF || c->enc == STREAM_ENC_SENT_REF) ? STREAM_REF_LEN : 0);
		if (e->plen + rec > e->frame_lim || full) {
			int rc = enc_flush(e);
			if (rc)
				return e->err = rc;
		}
		e->rec_open = true;
		e->rec_off = e->plen;
		e->rec_enc = c->enc;
		e->rec_image = c->image;
		e->rec_idx = c->idx;
		e->rec_count = 0;
		e->rec_src_image = c->src_image;
		e->rec_src_idx = c->src_idx;
		e->plen += STREAM_REC_HDR_LEN;
		if (c->enc == STREAM_ENC_BASE_REF || c->enc == STREAM_ENC_SENT_REF) {
			uint8_t *p = e->payload + e->plen;
			memset(p, 0, STREAM_REF_LEN);
			p[0] = (uint8_t)c->src_image;
			ho_put_le64(p + 8, c->src_idx);
			e->plen += STREAM_REF_LEN;
		}
	}
	if (c->enc == STREAM_ENC_RAW)
		memcpy(e->payload + e->plen, c->data, c->len);
	else if (c->enc == STREAM_ENC_XOR_BASE || c->enc == STREAM_ENC_DELTA_BASE)
		memcpy(e->payload + e->plen, c->payload, need);
	e->plen += need;
	e->rec_count++;
	e->pchunks += c->len;
	if (c->enc == STREAM_ENC_RAW || c->enc == STREAM_ENC_XOR_BASE || c->enc == STREAM_ENC_DELTA_BASE)
		e->plit += c->len;
	/* a short (last) chunk closes its record, and a delta is one chunk */
	if (c->len != e->h.chunk_size || c->enc == STREAM_ENC_DELTA_BASE)
		enc_close_record(e);
	return 0;
}

int stream_enc_finish(struct stream_enc *e, struct stream_end *end)
{
	uint8_t *p = e->out + STREAM_FRAME_HDR_LEN;
	int rc;

	if (e->err)
		return e->err;
	if ((rc = enc_flush(e)))
		return e->err = rc;
	bool none;
	while ((rc = enc_retire(e, true, &none)) == 0 && !none)
		;
	if (rc)
		return e->err = rc;
	if (e->dig)
		digest_drain(e->dig);
	ho_sha256_final(e->digest, e->end.digest);
	ho_put_le64(p, e->end.frames);
	ho_put_le64(p + 8, e->end.records);
	ho_put_le64(p + 16, e->end.chunks[0]);
	ho_put_le64(p + 24, e->end.chunks[1]);
	ho_put_le64(p + 32, e->end.bytes);
	memcpy(p + 40, e->end.digest, 32);
	rc = enc_emit_frame(e, e->out, STREAM_FRAME_END, STREAM_CODEC_NONE, 0, 0, STREAM_END_LEN, STREAM_END_LEN, 0, 0);
	if (rc)
		return e->err = rc;
	if (end)
		*end = e->end;
	e->err = HO_ESTATE;     /* finished: nothing more can be added */
	return 0;
}

void stream_enc_free(struct stream_enc *e)
{
	if (!e)
		return;
	if (e->nthreads) {
		pthread_mutex_lock(&e->mu);
		e->stop = true;
		pthread_cond_broadcast(&e->cv);
		pthread_mutex_unlock(&e->mu);
		for (unsigned i = 0; i < e->nthreads; i++)
			pthread_join(e->workers[i], NULL);
		pthread_mutex_destroy(&e->mu);
		pthread_cond_destroy(&e->cv);
	}
	for (unsigned i = 0; e->jobs && i < e->njobs; i++) {
		free(e->jobs[i].payload);
		free(e->jobs[i].out);
	}
	digest_free(e->dig);
	free(e->jobs);
	free(e->workers);
	free(e->payload);
	free(e->out);
	free(e->zero);
	ho_sha256_free(e->digest);
	codec_ctx_free(e->cctx);
	memset(e->key, 0, sizeof(e->key));
	free(e);
}

/* ---- decoder ---------------------------------------------------------------------------------- */

enum dec_state { D_HEADER, D_FRAME_HDR, D_PAYLOAD, D_DONE };

struct stream_dec {
	const struct stream_dec_ops *ops;
	void *arg;
	bool has_key, auth, quiet;
	uint8_t *psk;
	size_t psk_len;
	uint8_t key[32];
	int err;                         /* sticky */
	char msg[256];

	enum dec_state state;
	size_t need, have;               /* bytes wanted / collected in buf for the current piece */
	uint8_t hdr[STREAM_HEADER_LEN];
	uint8_t fhdr[STREAM_FRAME_HDR_LEN];
	uint8_t *buf;                    /* encoded payload + mac, frame_max + 32 */
	uint8_t *chunk;                  /* chunk_size scratch (refs) */
	uint8_t *chunk2;                 /* chunk_size scratch (xor base) */
	uint8_t *zero;
	struct codec_ctx *cctx;
	struct chunk_dec *cdec;          /* delta decoder, made on the first DELTA_BASE record */
	struct delta_base dbase;
	bool header_ok;
	struct stream_header h;
	uint64_t nchunks[STREAM_NIMAGES], nbase[STREAM_NIMAGES];

	/* the current frame (its header, as it is being received) */
	int type, codec;
	uint32_t nrec, raw_len, enc_len;
	uint64_t seq, check;

	/* The chain as verified on input (frames, check, mac), ahead of pos while frames are being
	 * decompressed; pos is what was handed out (records, chunks, resume point). */
	uint64_t in_frames, in_check;
	uint8_t in_mac[STREAM_MAC_LEN];
	struct stream_dec_pos pos;
	bool pos_settable;
	struct ho_sha256 *digest;

	/* parallel decoding (stream_dec_set_threads): verified frames go into a ring of jobs that
	 * the workers decompress and check in any order; the feeding thread hands out their chunks
	 * in order (references, digest, callbacks stay on that thread) */
	unsigned want_threads, nthreads, njobs;
	pthread_t *workers;
	struct dec_job *jobs;           /* guarded by mu: state; the rest belongs to whoever runs it */
	unsigned head, count;           /* guarded by mu: jobs head .. head+count-1 are submitted */
	bool stop;                      /* guarded by mu */
	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct dec_job *one;            /* the job of the sequential path */
	bool handing_out;               /* in dec_hand_out() */
};

/* One DATA frame between input verification and handing out its chunks. */
struct dec_job {
	uint8_t *buf, *raw;             /* payload as stored (frame_max + mac), decompressed */
	const uint8_t *rec;             /* the records: raw, or buf for codec none */
	int codec, rc, state;
	uint32_t nrec, raw_len, enc_len;
	uint64_t seq, check;
	uint8_t mac[STREAM_MAC_LEN];
	int first_image;                /* the frame's first chunk (order against the frame before) */
	uint64_t first_idx;
	char msg[200];
};

static int dec_drain(struct stream_dec *d);

/* Fail with err. Errors are reported in stream order: frames still being decoded in parallel,
 * which came before what failed, are handed out first, and an error among them wins. */
static int __attribute__((format(printf, 3, 4))) dec_fail(struct stream_dec *d, int err, const char *fmt, ...)
{
	va_list ap;
	if (d->nthreads && d->count && !d->handing_out && !d->err) {
		int rc = dec_drain(d);
		if (rc)
			return rc;
	}
	va_start(ap, fmt);
	vsnprintf(d->msg, sizeof(d->msg), fmt, ap);
	va_end(ap);
	d->err = err;
	if (!d->quiet)
		ho_err("%s", d->msg);
	return err;
}

int stream_dec_new(const void *psk, size_t psk_len, const struct stream_dec_ops *ops, void *arg,
		   struct stream_dec **out)
{
	static const struct stream_dec_ops no_ops;
	struct stream_dec *d = calloc(1, sizeof(*d));

	*out = NULL;
	if (!d)
		return HO_ENOMEM;
	d->ops = ops ? ops : &no_ops;
	d->arg = arg;
	d->digest = ho_sha256_new();
	if (!d->digest) {
		stream_dec_free(d);
		return HO_ENOMEM;
	}
	if (psk) {
		d->has_key = true;
		d->psk = malloc(psk_len ? psk_len : 1);
		if (!d->psk) {
			stream_dec_free(d);
			return HO_ENOMEM;
		}
		memcpy(d->psk, psk, psk_len);
		d->psk_len = psk_len;
	}
	d->state = D_HEADER;
	d->need = STREAM_HEADER_LEN;
	d->pos.last_image = -1;
	*out = d;
	return 0;
}

void stream_dec_free(struct stream_dec *d)
{
	if (!d)
		return;
	if (d->psk) {
		memset(d->psk, 0, d->psk_len);
		free(d->psk);
	}
	memset(d->key, 0, sizeof(d->key));
	if (d->nthreads) {
		pthread_mutex_lock(&d->mu);
		d->stop = true;
		pthread_cond_broadcast(&d->cv);
		pthread_mutex_unlock(&d->mu);
		for (unsigned i = 0; i < d->nthreads; i++)
			pthread_join(d->workers[i], NULL);
		pthread_mutex_destroy(&d->mu);
		pthread_cond_destroy(&d->cv);
	}
	for (unsigned i = 0; d->jobs && i < d->njobs; i++) {
		free(d->jobs[i].buf);
		free(d->jobs[i].raw);
	}
	free(d->jobs);
	free(d->workers);
	free(d->buf);
	free(d->chunk);
	free(d->chunk2);
	free(d->zero);
	codec_ctx_free(d->cctx);
	chunk_dec_free(d->cdec);
	ho_sha256_free(d->digest);
	free(d);
}

void stream_dec_set_quiet(struct stream_dec *d, bool quiet) { d->quiet = quiet; }
const char *stream_dec_errmsg(const struct stream_dec *d) { return d->msg; }
bool stream_dec_done(const struct stream_dec *d) { return d->state == D_DONE && !d->err; }
const struct stream_header *stream_dec_header(const struct stream_dec *d) { return d->header_ok ? &d->h : NULL; }
void stream_dec_get_pos(const struct stream_dec *d, struct stream_dec_pos *pos) { *pos = d->pos; }
const uint8_t *stream_dec_header_bytes(const struct stream_dec *d) { return d->hdr; }

int stream_dec_set_pos(struct stream_dec *d, const struct stream_dec_pos *pos)
{
	if (!d->header_ok || !d->pos_settable || d->err)
		return HO_ESTATE;
	d->pos = *pos;
	d->in_frames = pos->frames;
	d->in_check = pos->prev_check;
	memcpy(d->in_mac, pos->prev_mac, STREAM_MAC_LEN);
	return 0;
}

int stream_dec_set_threads(struct stream_dec *d, unsigned n)
{
	if (d->header_ok || d->state != D_HEADER || d->have)
		return HO_ESTATE;
	d->want_threads = n > 1 ? HO_MIN(n, 64u) : 0;
	return 0;
}

void stream_dec_replay_chunk(struct stream_dec *d, int img, uint64_t idx, const void *data, uint32_t len)
{
	uint8_t le[9];
	le[0] = (uint8_t)img;
	ho_put_le64(le + 1, idx);
	ho_sha256_update(d->digest, le, 9);
	ho_sha256_update(d->digest, data ? data : d->zero, len);
}

static int dec_start_jobs(struct stream_dec *d);

static int dec_header(struct stream_dec *d)
{
	int rc = header_parse(d->hdr, &d->h, d->msg, sizeof(d->msg));
	uint8_t mac[32];

	if (rc) {
		d->err = rc;
		if (!d->quiet)
			ho_err("%s", d->msg);
		return rc;
	}
	if (d->h.authenticated && !d->has_key)
		return dec_fail(d, HO_EAUTH, "stream is authenticated but no key was given (--key)");
	if (!d->h.authenticated && d->has_key)
		return dec_fail(d, HO_EAUTH, "stream is not authenticated but a key was given: refusing it");
	if (d->h.authenticated) {
		stream_derive_key(d->psk, d->psk_len, d->h.id, d->h.sender, d->key);
		mac3(d->key, d->hdr, H_MAC, NULL, 0, NULL, 0, mac);
		if (!ho_mem_equal_ct(mac, d->hdr + H_MAC, 32))
			return dec_fail(d, HO_EAUTH, "stream authentication failed: wrong key or forged stream");
		d->auth = true;
	}
	d->pos.prev_check = d->in_check = ho_get_le64(d->hdr + H_CHECK);
	memcpy(d->pos.prev_mac, d->hdr + H_MAC, 32);
	memcpy(d->in_mac, d->hdr + H_MAC, 32);
	for (int i = 0; i < STREAM_NIMAGES; i++) {
		d->nchunks[i] = stream_nchunks(d->h.image[i].size, d->h.chunk_size);
		d->nbase[i] = stream_nchunks(d->h.image[i].base.size, d->h.chunk_size);
	}
	d->buf = malloc((size_t)d->h.frame_max + STREAM_MAC_LEN);
	d->chunk = malloc(d->h.chunk_size);
	d->chunk2 = malloc(d->h.chunk_size);
	d->zero = calloc(1, d->h.chunk_size);
	if (!d->buf || !d->chunk || !d->chunk2 || !d->zero || (rc = dec_start_jobs(d)))
		return dec_fail(d, HO_ENOMEM, "cannot decode stream: out of memory");
	d->header_ok = true;
	if (d->ops->header && (rc = d->ops->header(d->arg, &d->h))) {
		d->err = rc;
		snprintf(d->msg, sizeof(d->msg), "stream refused: %s", ho_strerror(rc));
		return rc;
	}
	d->pos_settable = true;
	return 0;
}

static int dec_frame_header(struct stream_dec *d)
{
	const uint8_t *f = d->fhdr;
	uint64_t prev;

	if (ho_get_le64(f + F_HCHECK) != ho_xxh64(f, F_HCHECK))
		return dec_fail(d, HO_ECHECKSUM, "frame %llu: header checksum mismatch",
				(unsigned long long)d->in_frames);
	d->pos_settable = false;
	d->type = f[F_TYPE];
	d->codec = f[F_CODEC];
	d->nrec = ho_get_le32(f + F_NREC);
	d->seq = ho_get_le64(f + F_SEQ);
	d->raw_len = ho_get_le32(f + F_RAW);
	d->enc_len = ho_get_le32(f + F_ENC);
	d->check = ho_get_le64(f + F_HCHECK);
	prev = ho_get_le64(f + F_PREV);
	if (memcmp(f + F_ID, d->h.id, STREAM_ID_LEN) != 0)
		return dec_fail(d, HO_ESEQ, "frame %llu belongs to another stream",
				(unsigned long long)d->in_frames);
	if (d->seq != d->in_frames)
		return dec_fail(d, HO_ESEQ, "frame %llu arrived where frame %llu was expected (reordered or duplicated)",
				(unsigned long long)d->seq, (unsigned long long)d->in_frames);
	if (prev != d->in_check)
		return dec_fail(d, HO_ESEQ, "frame %llu does not follow the frame before it (spliced stream)",
				(unsigned long long)d->seq);
	if (d->type != STREAM_FRAME_DATA && d->type != STREAM_FRAME_END)
		return dec_fail(d, HO_EFORMAT, "frame %llu has unknown type %d", (unsigned long long)d->seq, d->type);
	if (f[F_FLAGS])
		return dec_fail(d, HO_EFORMAT, "frame %llu has unknown flags", (unsigned long long)d->seq);
	if (d->codec >= STREAM_CODEC_COUNT)
		return dec_fail(d, HO_EFORMAT, "frame %llu has unknown codec %d", (unsigned long long)d->seq, d->codec);
	if (d->codec == STREAM_CODEC_NONE && (f[F_LEVEL] || d->enc_len != d->raw_len))
		return dec_fail(d, HO_EFORMAT, "frame %llu: uncompressed frame with a level or a size mismatch",
				(unsigned long long)d->seq);
	if (d->raw_len > d->h.frame_max || d->enc_len > d->h.frame_max || d->enc_len == 0 ||
	    (d->codec != STREAM_CODEC_NONE && d->enc_len >= d->raw_len))
		return dec_fail(d, HO_EFORMAT, "frame %llu: size %u (encoded %u) outside the limit %u",
				(unsigned long long)d->seq, d->raw_len, d->enc_len, d->h.frame_max);
	if (d->type == STREAM_FRAME_END &&
	    (d->codec != STREAM_CODEC_NONE || d->raw_len != STREAM_END_LEN || d->nrec != 0))
		return dec_fail(d, HO_EFORMAT, "frame %llu: malformed end record", (unsigned long long)d->seq);
	if (d->type == STREAM_FRAME_DATA && (d->nrec == 0 || d->nrec > d->raw_len / STREAM_REC_HDR_LEN))
		return dec_fail(d, HO_EFORMAT, "frame %llu: record count %u is impossible",
				(unsigned long long)d->seq, d->nrec);
	return 0;
}

/* Bytes of chunks [idx, idx+count) of an image of `size`. */
static uint64_t range_bytes(uint64_t size, uint32_t cs, uint64_t idx, uint64_t count)
{
	uint64_t a = idx * cs, b = (idx + count) * cs;
	return HO_MIN(b, size) - a;
}

static int __attribute__((format(printf, 3, 4))) job_fail(struct dec_job *j, int err, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(j->msg, sizeof(j->msg), fmt, ap);
	va_end(ap);
	return j->rc = err;
}

/* Pass 1 (any thread): the structure, bounds and order of every record of a frame. The order
 * against the frame before is checked when the frame is handed out (job_first). */
static int dec_check_records(const struct stream_dec *d, struct dec_job *j)
{
	const uint8_t *p = j->rec;
	uint32_t left = j->raw_len, n = 0, cs = d->h.chunk_size;
	int last_image = -1;
	uint64_t last_idx = 0;
	unsigned long long seq = (unsigned long long)j->seq;

	while (left) {
		if (left < STREAM_REC_HDR_LEN)
			return job_fail(j, HO_EFORMAT, "frame %llu: record %u is cut short", seq, n);
		int enc = p[0], img = p[1];
		uint32_t count = ho_get_le32(p + 4), len = ho_get_le32(p + 16);
		uint64_t idx = ho_get_le64(p + 8);
		p += STREAM_REC_HDR_LEN;
		left -= STREAM_REC_HDR_LEN;
		if (len > left)
			return job_fail(j, HO_EFORMAT, "frame %llu: record %u is longer than its frame", seq, n);
		if (ho_get_le16(p - STREAM_REC_HDR_LEN + 2) != 0)
			return job_fail(j, HO_EFORMAT, "frame %llu: record %u has unknown flags", seq, n);
		if (enc >= STREAM_ENC_COUNT)
			return job_fail(j, HO_EFORMAT, "frame %llu: record %u has unknown encoding %d", seq, n, enc);
		if (img >= STREAM_NIMAGES)
			return job_fail(j, HO_EFORMAT, "frame %llu: record %u names unknown image %d", seq, n, img);
		if (count == 0 || idx >= d->nchunks[img] || count > d->nchunks[img] - idx)
			return job_fail(j, HO_EFORMAT, "frame %llu: record %u (chunks %llu+%u of '%s') is outside the image (%llu chunks)",
					seq, n, (unsigned long long)idx, count, overlay_image_name(img),
					(unsigned long long)d->nchunks[img]);
		if (n == 0) {
			j->first_image = img;
			j->first_idx = idx;
		} else if (img < last_image || (img == last_image && idx <= last_idx)) {
			return job_fail(j, HO_ESEQ, "frame %llu: chunk %llu of '%s' is out of order or duplicated",
					seq, (unsigned long long)idx, overlay_image_name(img));
		}
		uint64_t bytes = range_bytes(d->h.image[img].size, cs, idx, count);
		bool ok;
		switch (enc) {
		case STREAM_ENC_RAW:
		case STREAM_ENC_XOR_BASE:
			ok = len == bytes;
			if (ok && enc == STREAM_ENC_XOR_BASE)
				ok = idx + count <= d->nbase[img] &&
				     range_bytes(d->h.image[img].base.size, cs, idx, count) == bytes;
			break;
		case STREAM_ENC_ZERO:
			ok = len == 0;
			break;
		case STREAM_ENC_BASE_REF:
		case STREAM_ENC_SENT_REF: {
			int simg = p[0];
			uint64_t sidx = ho_get_le64(p + 8);
			ok = len == STREAM_REF_LEN && simg < STREAM_NIMAGES && all_zero(p + 1, 7);
			if (ok) {
				uint64_t ssize = enc == STREAM_ENC_BASE_REF ? d->h.image[simg].base.size
									    : d->h.image[simg].size;
				uint64_t sn = stream_nchunks(ssize, cs);
				ok = sidx < sn && count <= sn - sidx && range_bytes(ssize, cs, sidx, count) == bytes;
			}
			break;
		}
		default: /* DELTA_BASE: one chunk, a payload no longer than the chunk, within the base */
			ok = count == 1 && len >= 1 && len <= bytes && idx < d->nbase[img] &&
			     range_bytes(d->h.image[img].base.size, cs, idx, 1) == bytes;
			break;
		}
		if (!ok) {
			return job_fail(j, HO_EFORMAT, "frame %llu: %s record for chunk %llu of '%s' is malformed or out of range",
					seq, enc_names[enc], (unsigned long long)idx, overlay_image_name(img));
		}
		p += len;
		left -= len;
		last_image = img;
		last_idx = idx + count - 1;
		n++;
	}
	if (n != j->nrec)
		return job_fail(j, HO_EFORMAT, "frame %llu holds %u records, its header says %u", seq, n, j->nrec);
	return 0;
}

/* Decompress and check a verified frame (any thread; ctx belongs to the caller). */
static void dec_work(const struct stream_dec *d, struct codec_ctx *ctx, struct dec_job *j)
{
	j->rc = 0;
	j->msg[0] = 0;
	if (j->codec == STREAM_CODEC_NONE) {
		j->rec = j->buf;
	} else {
		size_t got = 0;
		int rc = ctx ? codec_decompress(ctx, (enum codec)j->codec, NULL, 0, j->buf, j->enc_len, j->raw,
						j->raw_len, &got) : HO_ENOMEM;
		j->rec = j->raw;
		if (rc == HO_ENOMEM) {
			job_fail(j, rc, "cannot decode stream: out of memory");
			return;
		}
		if (rc || got != j->raw_len) {
			job_fail(j, HO_EFORMAT, "frame %llu: %s payload does not decompress to %u bytes",
				 (unsigned long long)j->seq, codec_names[j->codec], j->raw_len);
			return;
		}
	}
	dec_check_records(d, j);
}

/* delta_base.read for the delta decoder: through the caller's read_base. */
static int dec_delta_read(void *arg, int img, void *buf, size_t len, uint64_t off)
{
	struct stream_dec *d = arg;
	if (!d->ops->read_base || len > UINT32_MAX)
		return HO_EFORMAT;
	return d->ops->read_base(d->arg, img, off, buf, (uint32_t)len);
}

/* Pass 2 (the feeding thread, in stream order): reconstruct and hand out every chunk. */
static int dec_emit_records(struct stream_dec *d, const struct dec_job *j)
{
	const uint8_t *p = j->rec, *end = j->rec + j->raw_len;
	unsigned long long seq = (unsigned long long)j->seq;
	uint32_t cs = d->h.chunk_size;
	int rc;

	while (p < end) {
		int enc = p[0], img = p[1];
		uint32_t count = ho_get_le32(p + 4), len = ho_get_le32(p + 16);
		uint64_t idx = ho_get_le64(p + 8);
		const uint8_t *data = p + STREAM_REC_HDR_LEN;
		int simg = 0;
		uint64_t sidx = 0;

		if (enc == STREAM_ENC_BASE_REF || enc == STREAM_ENC_SENT_REF) {
			simg = data[0];
			sidx = ho_get_le64(data + 8);
		}
		for (uint32_t i = 0; i < count; i++) {
			struct stream_chunk c = { .image = img, .idx = idx + i, .enc = enc };
			c.len = stream_chunk_len(d->h.image[img].size, cs, idx + i);
			switch (enc) {
			case STREAM_ENC_RAW:
				c.data = data;
				data += c.len;
				break;
			case STREAM_ENC_ZERO:
				c.data = d->zero;
				break;
			case STREAM_ENC_BASE_REF:
			case STREAM_ENC_SENT_REF:
				c.src_image = simg;
				c.src_idx = sidx + i;
				if (enc == STREAM_ENC_BASE_REF)
					rc = d->ops->read_base ? d->ops->read_base(d->arg, simg, (sidx + i) * cs, d->chunk, c.len) : HO_EFORMAT;
				else
					rc = d->ops->read_sent ? d->ops->read_sent(d->arg, simg, sidx + i, d->chunk, c.len) : HO_EFORMAT;
				if (rc)
					return dec_fail(d, rc, "frame %llu: cannot resolve %s chunk %llu of '%s': %s",
							seq, enc_names[enc], (unsigned long long)sidx + i,
							overlay_image_name(simg), ho_strerror(rc));
				c.data = d->chunk;
				break;
			case STREAM_ENC_XOR_BASE:
				rc = d->ops->read_base ? d->ops->read_base(d->arg, img, (idx + i) * cs, d->chunk, c.len) : HO_EFORMAT;
				if (rc)
					return dec_fail(d, rc, "frame %llu: cannot read base chunk %llu of '%s': %s",
							seq, (unsigned long long)idx + i, overlay_image_name(img), ho_strerror(rc));
				for (uint32_t k = 0; k < c.len; k++)
					d->chunk[k] ^= data[k];
				data += c.len;
				c.data = d->chunk;
				break;
			case STREAM_ENC_DELTA_BASE:
				if (!d->cdec) {
					d->dbase.chunk_size = cs;
					d->dbase.size[0] = d->h.image[0].base.size;
					d->dbase.size[1] = d->h.image[1].base.size;
					d->dbase.read = dec_delta_read;
					d->dbase.arg = d;
					if ((rc = chunk_dec_new(&d->dbase, &d->cdec)))
						return dec_fail(d, rc, "cannot decode deltas: %s", ho_strerror(rc));
				}
				rc = chunk_decode(d->cdec, img, idx, CHUNK_DELTA, data, len, d->chunk, c.len, NULL, NULL);
				if (rc)
					return dec_fail(d, rc == HO_EIO || rc == HO_ENOMEM ? rc : HO_EFORMAT,
							"frame %llu: delta record for chunk %llu of '%s' does not decode: %s",
							seq, (unsigned long long)idx, overlay_image_name(img), ho_strerror(rc));
				c.data = d->chunk;
				break;
			}
			stream_dec_replay_chunk(d, img, c.idx, c.data, c.len);
			d->pos.chunks[img]++;
			if (d->ops->chunk && (rc = d->ops->chunk(d->arg, &c))) {
				d->err = rc;
				snprintf(d->msg, sizeof(d->msg), "cannot store chunk %llu of '%s': %s",
					 (unsigned long long)c.idx, overlay_image_name(img), ho_strerror(rc));
				return rc;
			}
		}
		d->pos.last_image = img;
		d->pos.last_idx = idx + count - 1;
		p += STREAM_REC_HDR_LEN + len;
	}
	return 0;
}

/* Hand out a decoded frame's chunks, in stream order. */
static int dec_hand_out(struct stream_dec *d, const struct dec_job *j)
{
	int rc;

	if (j->rc) {
		d->err = j->rc;
		snprintf(d->msg, sizeof(d->msg), "%s", j->msg);
		if (!d->quiet)
			ho_err("%s", d->msg);
		return j->rc;
	}
	if (j->first_image < d->pos.last_image ||
	    (j->first_image == d->pos.last_image && j->first_idx <= d->pos.last_idx))
		return dec_fail(d, HO_ESEQ, "frame %llu: chunk %llu of '%s' is out of order or duplicated",
				(unsigned long long)j->seq, (unsigned long long)j->first_idx,
				overlay_image_name(j->first_image));
	d->handing_out = true;
	rc = dec_emit_records(d, j);
	d->handing_out = false;
	if (rc)
		return rc;
	d->pos.frames++;
	d->pos.records += j->nrec;
	d->pos.bytes += j->raw_len;
	d->pos.prev_check = j->check;
	memcpy(d->pos.prev_mac, j->mac, STREAM_MAC_LEN);
	if (d->ops->frame && (rc = d->ops->frame(d->arg, j->seq))) {
		d->err = rc;
		snprintf(d->msg, sizeof(d->msg), "cannot stage frame %llu: %s", (unsigned long long)j->seq,
			 ho_strerror(rc));
		return rc;
	}
	return 0;
}

static void *dec_worker(void *arg)
{
	struct stream_dec *d = arg;
	struct codec_ctx *ctx = codec_ctx_new();

	pthread_mutex_lock(&d->mu);
	for (;;) {
		struct dec_job *j = NULL;
		for (unsigned i = 0; i < d->count && !j; i++) {
			struct dec_job *c = &d->jobs[(d->head + i) % d->njobs];
			if (c->state == JOB_QUEUED)
				j = c;
		}
		if (!j) {
			if (d->stop)
				break;
			pthread_cond_wait(&d->cv, &d->mu);
			continue;
		}
		j->state = JOB_RUNNING;
		pthread_mutex_unlock(&d->mu);
		dec_work(d, ctx, j);
		pthread_mutex_lock(&d->mu);
		j->state = JOB_DONE;
		pthread_cond_broadcast(&d->cv);
	}
	pthread_mutex_unlock(&d->mu);
	codec_ctx_free(ctx);
	return NULL;
}

/* The workers and their jobs, sized once the header told the frame limit. */
static int dec_start_jobs(struct stream_dec *d)
{
	size_t blen = (size_t)d->h.frame_max + STREAM_MAC_LEN;

	d->njobs = d->want_threads ? d->want_threads + 1 : 1;
	if (!(d->jobs = calloc(d->njobs, sizeof(*d->jobs))))
		return HO_ENOMEM;
	for (unsigned i = 0; i < d->njobs; i++) {
		/* a job's buf takes turns with d->buf (the input buffer) */
		d->jobs[i].buf = malloc(blen);
		d->jobs[i].raw = malloc(d->h.frame_max);
		if (!d->jobs[i].buf || !d->jobs[i].raw)
			return HO_ENOMEM;
	}
	d->one = &d->jobs[0];
	if (!d->want_threads)
		return 0;
	if (!(d->workers = calloc(d->want_threads, sizeof(*d->workers))))
		return HO_ENOMEM;
	pthread_mutex_init(&d->mu, NULL);
	pthread_cond_init(&d->cv, NULL);
	for (unsigned i = 0; i < d->want_threads; i++) {
		if (pthread_create(&d->workers[i], NULL, dec_worker, d) != 0)
			break;
		d->nthreads++;
	}
	if (!d->nthreads) {
		pthread_mutex_destroy(&d->mu);
		pthread_cond_destroy(&d->cv);
	}
	return 0;
}

/* Hand out the oldest submitted frame (waiting for it if wait). 1 if none was ready. */
static int dec_retire(struct stream_dec *d, bool wait)
{
	struct dec_job *j;
	int rc;

	if (!d->nthreads || d->err)
		return d->err ? d->err : 1;
	pthread_mutex_lock(&d->mu);
	if (!d->count) {
		pthread_mutex_unlock(&d->mu);
		return 1;
	}
	j = &d->jobs[d->head];
	while (wait && j->state != JOB_DONE)
		pthread_cond_wait(&d->cv, &d->mu);
	if (j->state != JOB_DONE) {
		pthread_mutex_unlock(&d->mu);
		return 1;
	}
	pthread_mutex_unlock(&d->mu);
	rc = dec_hand_out(d, j);
	pthread_mutex_lock(&d->mu);
	j->state = JOB_FREE;
	d->head = (d->head + 1) % d->njobs;
	d->count--;
	pthread_mutex_unlock(&d->mu);
	return rc;
}

/* Hand out every submitted frame. */
static int dec_drain(struct stream_dec *d)
{
	int rc;
	while ((rc = dec_retire(d, true)) == 0)
		;
	return rc < 0 ? rc : 0;
}

/* A verified DATA frame (payload in d->buf, its mac in mac): decode it now, or queue it. */
static int dec_submit(struct stream_dec *d, const uint8_t mac[STREAM_MAC_LEN])
{
	struct dec_job *j;
	uint8_t *t;
	int rc;

	if (d->nthreads) {
		/* hand out what is done; wait for the oldest if the ring is full */
		while ((rc = dec_retire(d, d->count == d->njobs)) == 0)
			;
		if (rc < 0)
			return rc;
		j = &d->jobs[(d->head + d->count) % d->njobs];
	} else {
		j = d->one;
	}
	t = j->buf;
	j->buf = d->buf;
	d->buf = t;
	j->codec = d->codec;
	j->nrec = d->nrec;
	j->raw_len = d->raw_len;
	j->enc_len = d->enc_len;
	j->seq = d->seq;
	j->check = d->check;
	memcpy(j->mac, mac, STREAM_MAC_LEN);
	if (!d->nthreads) {
		if (!d->cctx && j->codec != STREAM_CODEC_NONE && !(d->cctx = codec_ctx_new()))
			return dec_fail(d, HO_ENOMEM, "cannot decode stream: out of memory");
		dec_work(d, d->cctx, j);
		return dec_hand_out(d, j);
	}
	pthread_mutex_lock(&d->mu);
	j->state = JOB_QUEUED;
	d->count++;
	pthread_cond_broadcast(&d->cv);
	pthread_mutex_unlock(&d->mu);
	return 0;
}

static int dec_end(struct stream_dec *d)
{
	const uint8_t *p = d->buf;
	struct stream_end e;
	uint8_t digest[32];

	e.frames = ho_get_le64(p);
	e.records = ho_get_le64(p + 8);
	e.chunks[0] = ho_get_le64(p + 16);
	e.chunks[1] = ho_get_le64(p + 24);
	e.bytes = ho_get_le64(p + 32);
	memcpy(e.digest, p + 40, 32);
	if (e.frames != d->pos.frames || e.records != d->pos.records || e.chunks[0] != d->pos.chunks[0] ||
	    e.chunks[1] != d->pos.chunks[1] || e.bytes != d->pos.bytes)
		return dec_fail(d, HO_EDIGEST, "end record counts (%llu frames, %llu+%llu chunks) do not match the stream (%llu frames, %llu+%llu chunks)",
				(unsigned long long)e.frames, (unsigned long long)e.chunks[0], (unsigned long long)e.chunks[1],
				(unsigned long long)d->pos.frames, (unsigned long long)d->pos.chunks[0],
				(unsigned long long)d->pos.chunks[1]);
	ho_sha256_final(d->digest, digest);
	if (memcmp(digest, e.digest, 32) != 0)
		return dec_fail(d, HO_EDIGEST, "reconstructed images do not match the stream's digest");
	if (d->ops->end) {
		int rc = d->ops->end(d->arg, &e);
		if (rc) {
			d->err = rc;
			snprintf(d->msg, sizeof(d->msg), "cannot finish stream: %s", ho_strerror(rc));
			return rc;
		}
	}
	return 0;
}

/* The payload (and mac) of the current frame is in d->buf: verify it against the input chain,
 * then decode it (DATA) or, once every frame before it was handed out, check END. */
static int dec_frame(struct stream_dec *d)
{
	unsigned long long seq = (unsigned long long)d->seq;
	uint8_t mac[32] = { 0 };
	int rc;

	if (ho_get_le64(d->fhdr + F_PCHECK) != ho_xxh64(d->buf, d->enc_len))
		return dec_fail(d, HO_ECHECKSUM, "frame %llu: payload checksum mismatch", seq);
	if (d->auth) {
		mac3(d->key, d->in_mac, 32, d->fhdr, STREAM_FRAME_HDR_LEN, d->buf, d->enc_len, mac);
		if (!ho_mem_equal_ct(mac, d->buf + d->enc_len, 32))
			return dec_fail(d, HO_EAUTH, "frame %llu: authentication failed (forged or altered frame)", seq);
		memcpy(d->in_mac, mac, 32);
	}
	d->in_check = d->check;
	if (d->type == STREAM_FRAME_END) {
		if ((rc = dec_drain(d)))
			return rc;
		d->pos.prev_check = d->check;
		memcpy(d->pos.prev_mac, mac, 32);
		if ((rc = dec_end(d)))
			return rc;
		d->state = D_DONE;
		return 0;
	}
	d->in_frames++;
	return dec_submit(d, mac);
}

int stream_dec_feed(struct stream_dec *d, const void *src, size_t *len)
{
	const uint8_t *p = src;
	size_t left = *len;
	int rc = 0;

	while (left && !d->err) {
		if (d->state == D_DONE) {
			rc = dec_fail(d, HO_ETRAILING, "%zu unexpected bytes after the end of the stream", left);
			break;
		}
		uint8_t *dst = d->state == D_HEADER ? d->hdr : d->state == D_FRAME_HDR ? d->fhdr : d->buf;
		size_t n = HO_MIN(left, d->need - d->have);
		memcpy(dst + d->have, p, n);
		d->have += n;
		p += n;
		left -= n;
		/* reject a wrong magic as soon as it can be seen */
		if (d->state == D_HEADER && d->have >= 8 && d->have - n < 8 &&
		    memcmp(d->hdr, STREAM_MAGIC, 8) != 0) {
			rc = dec_fail(d, HO_EFORMAT, "not a handoff stream (bad magic)");
			break;
		}
		if (d->have < d->need)
			break;
		d->have = 0;
		switch (d->state) {
		case D_HEADER:
			if ((rc = dec_header(d)))
				break;
			d->state = D_FRAME_HDR;
			d->need = STREAM_FRAME_HDR_LEN;
			break;
		case D_FRAME_HDR:
			if ((rc = dec_frame_header(d)))
				break;
			d->state = D_PAYLOAD;
			d->need = d->enc_len + (d->auth ? STREAM_MAC_LEN : 0);
			break;
		case D_PAYLOAD:
			if ((rc = dec_frame(d)))
				break;
			if (d->state != D_DONE) {
				d->state = D_FRAME_HDR;
				d->need = STREAM_FRAME_HDR_LEN;
			}
			break;
		case D_DONE:
			break;
		}
	}
	/* hand out the frames the workers finished meanwhile (acks go out without waiting) */
	while (!rc && !d->err && dec_retire(d, false) == 0)
		;
	*len -= left;
	return d->err ? d->err : rc;
}

int stream_dec_drain(struct stream_dec *d)
{
	if (d->err)
		return d->err;
	int rc = dec_drain(d);
	return d->err ? d->err : rc;
}

int stream_dec_finish(struct stream_dec *d)
{
	if (d->err)
		return d->err;
	if (d->state == D_DONE)
		return 0;
	if (dec_drain(d))
		return d->err;
	if (d->state == D_HEADER)
		return dec_fail(d, HO_ETRUNC, "stream ends inside its header (%zu of %d bytes)", d->have, STREAM_HEADER_LEN);
	return dec_fail(d, HO_ETRUNC, "stream ends early, inside frame %llu (no end record)",
			(unsigned long long)d->pos.frames);
}
