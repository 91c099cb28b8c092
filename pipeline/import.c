/*
 * import.c — applying a handoff stream to an overlay, all or nothing.
 *
 * The decoder (stream.c) verifies every frame; the chunks it hands out are appended to a staging
 * file, OVERLAY_DIR/staging/stream.stage (bounded memory, fdatasync'ed per frame so a TCP
 * receiver can acknowledge what is durable and resume after a drop). Only when END verified is
 * the staging file renamed to OVERLAY_DIR/staging/journal — the commit point — and then
 * published: chunk data written into the overlay, overlay_sync(), the chunks marked in the
 * tracker together with the applied stream's identity in one transaction, the journal removed.
 * A crash during publishing leaves the journal, which import_recover() replays (writing the same
 * bytes again is harmless). A crash before the rename leaves only a staging file, which is
 * discarded (or, for the TCP receiver, continued).
 *
 * Chunks the overlay does not hold yet (the tracker has never marked them: every chunk of a
 * handoff's first round) skip the copy: their bytes go straight into the overlay's data files,
 * at their own offsets, as their frame verifies, and the staging file gets only a "direct" entry
 * naming them. Until the tracker marks them, nothing reads those bytes (an unmarked chunk is
 * read from the base; the mount copies a base chunk up before a partial write), so a stream that
 * fails or is abandoned leaves the overlay as it was, and a crash leaves only unreferenced bytes.
 * They are made durable before the frame that holds them is (so before it is acknowledged) and
 * before the commit point; publishing then only marks them. Publishing used to copy every chunk
 * of the staging file into the overlay after the stream ended: about 3 s of a 1 Gbit/s transfer
 * of 1.2 GB of a guest's changes (6-9 s), spent after the last byte arrived. Chunks the overlay
 * holds are staged as before: writing them early would change what the overlay reads before the
 * stream is complete.
 *
 * Staging file: the stream's 256-byte header, then entries of a 40-byte header
 *   0 type (1 chunk, 2 frame end, 3 stream end)  1 image  2 kind (0 data, 1 zero, 2 base,
 *   3 direct: already in the overlay's data file at its own offset; source = itself)
 *   3 source image  4 count u32  8 index u64  16 source index u64  24 payload length u32
 *   28 zero u32  32 check u64 = XXH3(header[0..32]) ^ XXH3(payload)
 * and the payload: a data chunk's bytes; a frame end's decoder position (resume point); a stream
 * end's END record. Every chunk is resolved (a sent-ref becomes data), so publishing needs
 * nothing but the base images. A side index (stream.index, 32-byte sorted entries, rebuilt on
 * resume, never synced) finds a chunk staged earlier in the stream for a sent-ref.
 *
 * The applied stream is recorded in the tracker's meta "stream.applied" as
 * "SENDER-HEX ID-HEX SINCE UNTIL"; the next stream must come from the same sender and start at
 * UNTIL, or be that very stream again (a no-op).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include "common/common.h"
#include "overlay/overlay.h"
#include "tracker/tracker.h"
#include "pipeline/pipeline.h"
#include "pipeline/stream.h"
#include "pipeline/import_int.h"

#define STAGING_DIR   "staging"
#define STAGE_NAME    "staging/stream.stage"
#define INDEX_NAME    "staging/stream.index"
#define JOURNAL_NAME  "staging/journal"
#define META_APPLIED  "stream.applied"

enum { E_CHUNK = 1, E_FRAME = 2, E_END = 3 };
enum { K_DATA = 0, K_ZERO = 1, K_BASE = 2, K_DIRECT = 3 };
#define ENT_LEN 40
#define IDX_LEN 32
#define POS_LEN 96
#define WBUF_SIZE (1u << 20)
#define WALK_BUF  (4u << 20)    /* read-ahead of a journal walk: > 2 entries of the largest chunk */
#define RUN_CAP   (1u << 20)    /* consecutive chunks written to the overlay with one write */

static bool test_crash(const char *point);

/* Consecutive chunks of one image, all data or all zero, written to the overlay with one call:
 * the direct chunks as they arrive, and the staged chunks when a journal is published. */
struct run {
	uint8_t *buf;                    /* RUN_CAP bytes */
	uint64_t len;
	bool zero;
	int img;
	uint64_t off;
};

static int run_flush(struct overlay *ov, struct run *r)
{
	int rc;

	if (!r->len)
		return 0;
	rc = r->zero ? overlay_zero(ov, r->img, r->off, r->len) : overlay_write(ov, r->img, r->buf, r->len, r->off);
	r->len = 0;
	return rc;
}

/* len bytes at off of img (data NULL: zeros) into the run, which is written first when they do
 * not continue it. Data comes a chunk at a time (len <= RUN_CAP). */
static int run_add(struct overlay *ov, struct run *r, int img, uint64_t off, const uint8_t *data, uint64_t len)
{
	bool zero = data == NULL;
	int rc;

	if (r->len && (r->img != img || r->zero != zero || r->off + r->len != off || (!zero && r->len + len > RUN_CAP)) &&
	    (rc = run_flush(ov, r)))
		return rc;
	if (!r->len) {
		r->img = img;
		r->off = off;
		r->zero = zero;
	}
	if (!zero)
		memcpy(r->buf + r->len, data, (size_t)len);
	r->len += len;
	return 0;
}

struct entry {
	int type, image, kind, src_image;
	uint32_t count, len;
	uint64_t idx, src_idx;
};

struct importer {
	struct overlay *ov;
	struct tracker *t;
	struct import_opts o;
	struct stream_dec *dec;
	const struct stream_header *h;
	uint32_t cs;
	char msg[320];
	int err;
	bool header_done, noop, ended, finished;
	size_t hdr_fed;                  /* header bytes fed so far */
	struct stream_end end;

	/* staging */
	char *stage_path, *index_path, *journal_path, *staging_dir;
	int sfd, ifd;                    /* stage file, index file */
	uint64_t soff, ioff;             /* their lengths as written (including wbuf) */
	uint8_t *wbuf;                   /* buffered stage writes */
	size_t wlen;
	uint64_t wbase;                  /* file offset of wbuf[0] */
	uint8_t *ibuf;                   /* buffered index writes */
	size_t ilen;
	uint64_t ibase;
	/* the index file's written part, mapped for the sent-refs' binary search (index_entry): a
	 * pread per probe cost 17 system calls a ref, and flushing the buffers before each ref one
	 * more write; a guest's changes have a ref every other chunk (a 640 MiB import: 1.8 million
	 * preads, 13 s of system time) */
	uint8_t *imap;
	size_t imap_len;
	bool pending;                    /* an open zero/base/direct run not yet written */
	struct entry pend;
	uint8_t *chunk;                  /* chunk_size scratch */

	/* direct chunks (see the top): allowed unless verifying only or in post-copy (arrive) */
	bool direct;
	bool direct_dirty;               /* direct chunks came since the last overlay_sync() */
	struct run run;                  /* those not written yet */

	int (*frame_cb)(void *, uint64_t);
	void *frame_arg;
};

static void im_fail(struct importer *im, int err, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void im_fail(struct importer *im, int err, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(im->msg, sizeof(im->msg), fmt, ap);
	va_end(ap);
	im->err = err;
	ho_err("%s", im->msg);
}

const char *import_errmsg(const struct importer *im)
{
	if (im->msg[0])
		return im->msg;
	return im->dec ? stream_dec_errmsg(im->dec) : "";
}

/* ---- small helpers ---------------------------------------------------------------------------- */

static int sync_overlay(void *arg) { return overlay_sync(arg); }

static uint64_t range_bytes(uint64_t size, uint32_t cs, uint64_t idx, uint64_t count)
{
	uint64_t a = idx * cs, b = (idx + count) * cs;
	return HO_MIN(b, size) - a;
}

static void ent_pack(const struct entry *e, const void *payload, uint8_t out[ENT_LEN])
{
	memset(out, 0, ENT_LEN);
	out[0] = (uint8_t)e->type;
	out[1] = (uint8_t)e->image;
	out[2] = (uint8_t)e->kind;
	out[3] = (uint8_t)e->src_image;
	ho_put_le32(out + 4, e->count);
	ho_put_le64(out + 8, e->idx);
	ho_put_le64(out + 16, e->src_idx);
	ho_put_le32(out + 24, e->len);
	ho_put_le64(out + 32, ho_xxh64(out, 32) ^ ho_xxh64(payload, e->len));
}

static void ent_unpack(const uint8_t in[ENT_LEN], struct entry *e)
{
	e->type = in[0];
	e->image = in[1];
	e->kind = in[2];
	e->src_image = in[3];
	e->count = ho_get_le32(in + 4);
	e->idx = ho_get_le64(in + 8);
	e->src_idx = ho_get_le64(in + 16);
	e->len = ho_get_le32(in + 24);
}

static void pos_pack(const struct stream_dec_pos *p, uint8_t out[POS_LEN])
{
	memset(out, 0, POS_LEN);
	ho_put_le64(out, p->frames);
	ho_put_le64(out + 8, p->records);
	ho_put_le64(out + 16, p->chunks[0]);
	ho_put_le64(out + 24, p->chunks[1]);
	ho_put_le64(out + 32, p->bytes);
	ho_put_le64(out + 40, p->prev_check);
	memcpy(out + 48, p->prev_mac, 32);
	ho_put_le32(out + 80, (uint32_t)p->last_image);
	ho_put_le64(out + 88, p->last_idx);
}

static void pos_unpack(const uint8_t in[POS_LEN], struct stream_dec_pos *p)
{
	p->frames = ho_get_le64(in);
	p->records = ho_get_le64(in + 8);
	p->chunks[0] = ho_get_le64(in + 16);
	p->chunks[1] = ho_get_le64(in + 24);
	p->bytes = ho_get_le64(in + 32);
	p->prev_check = ho_get_le64(in + 40);
	memcpy(p->prev_mac, in + 48, 32);
	p->last_image = (int)ho_get_le32(in + 80);
	p->last_idx = ho_get_le64(in + 88);
}

static void hex16(const uint8_t *in, char out[33]) { ho_hex(in, 16, out); }

/* ---- staging writes --------------------------------------------------------------------------- */

static int stage_flush(struct importer *im)
{
	int rc;
	if (im->wlen) {
		if ((rc = ho_pwrite_full(im->sfd, im->wbuf, im->wlen, im->wbase)))
			return rc;
		im->wbase += im->wlen;
		im->wlen = 0;
	}
	if (im->ilen) {
		if ((rc = ho_pwrite_full(im->ifd, im->ibuf, im->ilen, im->ibase)))
			return rc;
		im->ibase += im->ilen;
		im->ilen = 0;
	}
	return 0;
}

static int stage_append(struct importer *im, const void *p, size_t len)
{
	int rc;
	if (im->wlen + len > WBUF_SIZE && (rc = stage_flush(im)))
		return rc;
	if (len > WBUF_SIZE) {
		if ((rc = ho_pwrite_full(im->sfd, p, len, im->wbase)))
			return rc;
		im->wbase += len;
	} else {
		memcpy(im->wbuf + im->wlen, p, len);
		im->wlen += len;
	}
	im->soff += len;
	return 0;
}

static int index_append(struct importer *im, const struct entry *e, uint64_t off_or_src)
{
	uint8_t ent[IDX_LEN] = { 0 };
	int rc;
	ent[0] = (uint8_t)e->image;
	ent[1] = (uint8_t)e->kind;
	ent[2] = (uint8_t)e->src_image;
	ho_put_le32(ent + 4, e->count);
	ho_put_le64(ent + 8, e->idx);
	ho_put_le64(ent + 16, off_or_src);
	if (im->ilen + IDX_LEN > WBUF_SIZE && (rc = stage_flush(im)))
		return rc;
	memcpy(im->ibuf + im->ilen, ent, IDX_LEN);
	im->ilen += IDX_LEN;
	im->ioff += IDX_LEN;
	return 0;
}

static void index_unmap(struct importer *im)
{
	if (im->imap)
		munmap(im->imap, im->imap_len);
	im->imap = NULL;
	im->imap_len = 0;
}

/* Index entry i (< ioff / IDX_LEN): from the buffer when not written yet, else from the mapping
 * of the file, renewed when the file has grown past it. NULL when the mapping fails. */
static const uint8_t *index_entry(struct importer *im, uint64_t i)
{
	uint64_t off = i * IDX_LEN;

	if (off >= im->ibase)
		return im->ibuf + (off - im->ibase);
	if (off + IDX_LEN > im->imap_len) {
		index_unmap(im);
		void *p = mmap(NULL, (size_t)im->ibase, PROT_READ, MAP_SHARED, im->ifd, 0);
		if (p == MAP_FAILED)
			return NULL;
		im->imap = p;
		im->imap_len = (size_t)im->ibase;
	}
	return im->imap + off;
}

static int stage_entry(struct importer *im, const struct entry *e, const void *payload)
{
	uint8_t hdr[ENT_LEN];
	int rc;
	ent_pack(e, payload, hdr);
	if ((rc = stage_append(im, hdr, ENT_LEN)))
		return rc;
	if (e->type == E_CHUNK && (rc = index_append(im, e, e->kind == K_DATA ? im->soff : e->src_idx)))
		return rc;
	return e->len ? stage_append(im, payload, e->len) : 0;
}

static int flush_pending(struct importer *im)
{
	if (!im->pending)
		return 0;
	im->pending = false;
	return stage_entry(im, &im->pend, NULL);
}

/* ---- direct chunks ---------------------------------------------------------------------------- */

/* The direct chunks so far written and durable: before their frame is, and before the commit
 * point. */
static int direct_sync(struct importer *im)
{
	int rc;

	if (!im->direct_dirty)
		return 0;
	im->direct_dirty = false;
	return (rc = run_flush(im->ov, &im->run)) ? rc : overlay_sync(im->ov);
}

/* Chunk idx of img straight into the overlay (data NULL: zeros), then into the open direct run
 * of the staging file. */
static int direct_put(struct importer *im, int img, uint64_t idx, const uint8_t *data, uint32_t len)
{
	int rc;

	if ((rc = run_add(im->ov, &im->run, img, idx * im->cs, data, len)))
		return rc;
	im->direct_dirty = true;
	if (im->pending && im->pend.kind == K_DIRECT && im->pend.image == img && im->pend.idx + im->pend.count == idx &&
	    im->pend.count < UINT32_MAX) {
		im->pend.count++;
		return 0;
	}
	if ((rc = flush_pending(im)))
		return rc;
	im->pend = (struct entry){ .type = E_CHUNK, .image = img, .kind = K_DIRECT, .count = 1, .idx = idx,
				   .src_image = img, .src_idx = idx };
	im->pending = true;
	return 0;
}

static int open_tmp(int *fd)
{
	const char *dir = getenv("TMPDIR");
	*fd = open(dir && *dir ? dir : "/tmp", O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
	return *fd < 0 ? ho_from_errno(errno) : 0;
}

/* Start an empty staging file holding the stream header. */
static int stage_create(struct importer *im)
{
	int rc;

	if (im->sfd >= 0)
		close(im->sfd);
	if (im->ifd >= 0)
		close(im->ifd);
	index_unmap(im);
	im->sfd = im->ifd = -1;
	if (im->o.verify_only) {
		if ((rc = open_tmp(&im->sfd)) || (rc = open_tmp(&im->ifd)))
			return rc;
	} else {
		if ((rc = ho_mkdir_p(im->staging_dir, 0700)))
			return rc;
		im->sfd = open(im->stage_path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
		im->ifd = open(im->index_path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
		if (im->sfd < 0 || im->ifd < 0)
			return ho_from_errno(errno);
	}
	im->soff = im->ioff = im->wbase = im->ibase = 0;
	im->wlen = im->ilen = 0;
	im->pending = false;
	return stage_append(im, stream_dec_header_bytes(im->dec), STREAM_HEADER_LEN);
}

/* ---- lookups for sent-refs -------------------------------------------------------------------- */

static int read_base_cb(void *arg, int img, uint64_t off, uint8_t *buf, uint32_t len)
{
	struct importer *im = arg;
	return overlay_read_base(im->ov, img, buf, len, off);
}

/* Content of a run entry (kind, src) at chunk idx. */
static int entry_read(struct importer *im, int kind, int src_image, uint64_t src_or_off, uint64_t delta,
		      uint8_t *buf, uint32_t len)
{
	switch (kind) {
	case K_ZERO:
		memset(buf, 0, len);
		return 0;
	case K_BASE:
		return overlay_read_base(im->ov, src_image, buf, len, (src_or_off + delta) * im->cs);
	case K_DIRECT: {
		uint64_t off = (src_or_off + delta) * im->cs;
		/* still in the open run? (chunks are aligned: a chunk is in it whole or not at all) */
		const struct run *r = &im->run;
		if (r->len && r->img == src_image && off >= r->off && off - r->off < r->len) {
			if (r->zero)
				memset(buf, 0, len);
			else
				memcpy(buf, r->buf + (off - r->off), len);
			return 0;
		}
		return overlay_read(im->ov, src_image, buf, len, off);
	}
	default: {
		/* still in the write buffer? A payload goes there whole or not at all (stage_append) */
		if (src_or_off >= im->wbase) {
			if (src_or_off - im->wbase + len > im->wlen)
				return HO_ECORRUPT;
			memcpy(buf, im->wbuf + (src_or_off - im->wbase), len);
			return 0;
		}
		ssize_t n = ho_pread_full(im->sfd, buf, len, src_or_off);
		return n < 0 ? (int)n : (size_t)n == len ? 0 : HO_ECORRUPT;
	}
	}
}

static int read_sent_cb(void *arg, int img, uint64_t idx, uint8_t *buf, uint32_t len)
{
	struct importer *im = arg;

	/* the open run */
	if (im->pending && im->pend.image == img && idx >= im->pend.idx && idx - im->pend.idx < im->pend.count)
		return entry_read(im, im->pend.kind, im->pend.src_image, im->pend.src_idx, idx - im->pend.idx, buf, len);
	/* binary search the index: the last entry starting at or before (img, idx) */
	uint64_t lo = 0, hi = im->ioff / IDX_LEN;
	const uint8_t *ent;
	bool found = false;
	uint8_t best[IDX_LEN];
	while (lo < hi) {
		uint64_t mid = lo + (hi - lo) / 2;
		if (!(ent = index_entry(im, mid)))
			return HO_EIO;
		int eimg = ent[0];
		uint64_t eidx = ho_get_le64(ent + 8);
		if (eimg < img || (eimg == img && eidx <= idx)) {
			memcpy(best, ent, IDX_LEN);
			found = true;
			lo = mid + 1;
		} else {
			hi = mid;
		}
	}
	if (found && best[0] == img) {
		uint64_t start = ho_get_le64(best + 8);
		uint32_t count = ho_get_le32(best + 4);
		if (idx - start < count)
			return entry_read(im, best[1], best[2], ho_get_le64(best + 16), idx - start, buf, len);
	}
	/* not in this stream: what the receiver holds, which only a stream with a basis may name */
	if (ho_is_zero(im->h->basis, sizeof(im->h->basis)))
		return HO_EFORMAT;
	if (tracker_chunk_gen(im->t, img, idx) > 0)
		return overlay_read(im->ov, img, buf, len, idx * im->cs);
	return overlay_read_base(im->ov, img, buf, len, idx * im->cs);
}

/* ---- decoder callbacks ------------------------------------------------------------------------ */

static int check_base(struct importer *im, const struct stream_header *h)
{
	if (h->chunk_size != overlay_chunk_size(im->ov)) {
		im_fail(im, HO_EBASE, "stream uses chunk size %u but overlay '%s' uses %u", h->chunk_size,
			overlay_dir(im->ov), overlay_chunk_size(im->ov));
		return HO_EBASE;
	}
	for (int i = 0; i < STREAM_NIMAGES; i++) {
		const struct overlay_identity *id = overlay_base_identity(im->ov, i);
		char a[17], b[17];
		if (h->image[i].size == overlay_image_size(im->ov, i) && h->image[i].base.size == id->size &&
		    memcmp(h->image[i].base.digest, id->digest, 32) == 0)
			continue;
		ho_hex(h->image[i].base.digest, 8, a);
		ho_hex(id->digest, 8, b);
		im_fail(im, HO_EBASE, "stream's '%s' base (%" PRIu64 " bytes, sha256 %s...) differs from the base of overlay '%s' (%" PRIu64 " bytes, sha256 %s...)",
			overlay_image_name(i), h->image[i].base.size, a, overlay_dir(im->ov), id->size, b);
		return HO_EBASE;
	}
	return 0;
}

struct applied { bool any; uint8_t sender[16], id[16]; uint32_t since, until; };

static int get_applied(struct tracker *t, struct applied *a)
{
	char buf[256], s[64], i[64];
	unsigned since, until;
	int rc = tracker_get_meta(t, META_APPLIED, buf, sizeof(buf));

	memset(a, 0, sizeof(*a));
	if (rc == HO_ENOENT)
		return 0;
	if (rc)
		return rc;
	if (sscanf(buf, "%63s %63s %u %u", s, i, &since, &until) != 4 || ho_unhex(s, a->sender, 16) ||
	    ho_unhex(i, a->id, 16)) {
		ho_err("tracker meta '%s' is corrupt: '%s'", META_APPLIED, buf);
		return HO_ECORRUPT;
	}
	a->any = true;
	a->since = since;
	a->until = until;
	return 0;
}

static int check_sequence(struct importer *im, const struct stream_header *h)
{
	struct applied a;
	char hs[33], as[33];
	int rc = get_applied(im->t, &a);

	if (rc)
		return rc;
	if (!a.any) {
		struct tracker_stats st;
		if (h->since != 0) {
			im_fail(im, HO_ESTALE, "stream continues from generation %u but no stream was applied to overlay '%s' yet",
				h->since, overlay_dir(im->ov));
			return HO_ESTALE;
		}
		if (!(im->o.arrive && im->o.arrive_fresh) && tracker_stats(im->t, &st) == 0 &&
		    st.modified[0] + st.modified[1] > 0) {
			im_fail(im, HO_ESTALE, "overlay '%s' has local changes and no applied stream: a full stream needs a fresh overlay",
				overlay_dir(im->ov));
			return HO_ESTALE;
		}
		return 0;
	}
	hex16(h->sender, hs);
	hex16(a.sender, as);
	if (memcmp(a.sender, h->sender, 16) != 0) {
		im_fail(im, HO_ESTALE, "stream comes from sender %.12s but overlay '%s' follows sender %.12s",
			hs, overlay_dir(im->ov), as);
		return HO_ESTALE;
	}
	if (memcmp(a.id, h->id, 16) == 0 && a.since == h->since && a.until == h->until) {
		im->noop = true;
		return 0;
	}
	if (h->since == a.until)
		return 0;
	if (h->until <= a.until)
		im_fail(im, HO_ESTALE, "stale stream: it covers generations %u..%u but overlay '%s' has already applied up to generation %u (replayed old stream?)",
			h->since, h->until, overlay_dir(im->ov), a.until);
	else if (h->since > a.until)
		im_fail(im, HO_ESTALE, "stream starts after generation %u but overlay '%s' has applied up to generation %u (a stream is missing)",
			h->since, overlay_dir(im->ov), a.until);
	else
		im_fail(im, HO_ESTALE, "stream covers generations %u..%u but overlay '%s' has applied up to generation %u: export --since %u",
			h->since, h->until, overlay_dir(im->ov), a.until, a.until);
	return HO_ESTALE;
}

/* A stream whose sent-refs may name chunks received before it (a basis) was made for a receiver
 * that applied the basis stream last: anything else holds other content there. */
static int check_basis(struct importer *im, const struct stream_header *h)
{
	struct applied a;
	char want[33], have[33];
	int rc;

	if (im->noop || ho_is_zero(h->basis, sizeof(h->basis)))
		return 0;
	if ((rc = get_applied(im->t, &a)))
		return rc;
	if (a.any && memcmp(a.id, h->basis, 16) == 0)
		return 0;
	hex16(h->basis, want);
	hex16(a.id, have);
	im_fail(im, HO_ESTALE, "stream refers to chunks of stream %.12s, but overlay '%s' applied %s%.12s last: export again with --no-history",
		want, overlay_dir(im->ov), a.any ? "stream " : "no stream", a.any ? have : "");
	return HO_ESTALE;
}

static int on_header(void *arg, const struct stream_header *h)
{
	struct importer *im = arg;
	int rc;

	im->h = h;
	im->cs = h->chunk_size;
	if ((rc = check_base(im, h)) || (rc = check_sequence(im, h)) || (rc = check_basis(im, h)))
		return rc;
	if (!h->authenticated)
		ho_warn("the stream is unauthenticated (no --key): trusting checksums only");
	if (im->noop && im->o.verify_only)
		im->noop = false;        /* verify it anyway; report it was applied */
	if (!(im->chunk = malloc(h->chunk_size)))
		return HO_ENOMEM;
	im->header_done = true;
	if (im->noop)
		return 0;
	if (!im->o.keep_partial)
		return stage_create(im);
	return 0;
}

static int on_chunk(void *arg, const struct stream_chunk *c)
{
	struct importer *im = arg;
	struct entry e = { .type = E_CHUNK, .image = c->image, .count = 1, .idx = c->idx };
	int rc;

	if (im->noop)
		return 0;
	if (im->o.arrive && !im->o.verify_only && (rc = im->o.arrive(im->o.arg, c->image, c->idx, c->data, c->len)))
		return rc;
	if (im->sfd < 0 && (rc = stage_create(im)))
		return rc;
	if (im->direct && tracker_chunk_gen(im->t, c->image, c->idx) == 0) {
		if (c->image < 0 || c->image >= OVERLAY_NIMAGES || c->idx >= overlay_nchunks(im->ov, c->image) ||
		    c->len != stream_chunk_len(overlay_image_size(im->ov, c->image), im->cs, c->idx) ||
		    (c->enc != STREAM_ENC_ZERO && !c->data))
			return HO_ECORRUPT;
		return direct_put(im, c->image, c->idx, c->enc == STREAM_ENC_ZERO ? NULL : c->data, c->len);
	}
	if (c->enc == STREAM_ENC_ZERO || c->enc == STREAM_ENC_BASE_REF) {
		int kind = c->enc == STREAM_ENC_ZERO ? K_ZERO : K_BASE;
		if (im->pending && im->pend.kind == kind && im->pend.image == c->image &&
		    im->pend.idx + im->pend.count == c->idx && im->pend.count < UINT32_MAX &&
		    (kind == K_ZERO || (im->pend.src_image == c->src_image &&
					im->pend.src_idx + im->pend.count == c->src_idx))) {
			im->pend.count++;
			return 0;
		}
		if ((rc = flush_pending(im)))
			return rc;
		e.kind = kind;
		e.src_image = kind == K_BASE ? c->src_image : 0;
		e.src_idx = kind == K_BASE ? c->src_idx : 0;
		im->pend = e;
		im->pending = true;
		return 0;
	}
	if ((rc = flush_pending(im)))
		return rc;
	e.kind = K_DATA;
	e.len = c->len;
	return stage_entry(im, &e, c->data);
}

static int on_frame(void *arg, uint64_t seq)
{
	struct importer *im = arg;
	struct stream_dec_pos pos;
	uint8_t p[POS_LEN];
	struct entry e = { .type = E_FRAME, .idx = seq, .len = POS_LEN };
	int rc;

	if (im->noop)
		return 0;
	if (im->sfd < 0 && (rc = stage_create(im)))
		return rc;
	stream_dec_get_pos(im->dec, &pos);
	pos_pack(&pos, p);
	if ((rc = flush_pending(im)) || (rc = stage_entry(im, &e, p)) || (rc = stage_flush(im)))
		return rc;
	/* durable per frame only when someone relies on it (acks, resume); otherwise the one
	 * fdatasync before the commit point is enough: a crash before it discards the staging */
	if (im->o.keep_partial && !im->o.verify_only && !im->o.nosync && !im->o.arrive &&
	    ((rc = direct_sync(im)) || fdatasync(im->sfd) < 0))
		return rc ? rc : ho_from_errno(errno);
	if (im->frame_cb)
		return im->frame_cb(im->frame_arg, seq);
	return 0;
}

static int on_end(void *arg, const struct stream_end *end)
{
	struct importer *im = arg;
	im->end = *end;
	im->ended = true;
	return 0;
}

static const struct stream_dec_ops import_ops = {
	on_header, read_base_cb, read_sent_cb, on_chunk, on_frame, on_end,
};

/* ---- journal: validate and publish ------------------------------------------------------------ */

/* Walk a staging file or journal from after its header. For every valid entry call fn. Stops at
 * the first invalid or torn entry: *valid_end gets the offset after the last good entry. */
static int walk(int fd, uint8_t *buf, uint32_t buf_len,
		int (*fn)(void *arg, const struct entry *e, const uint8_t *payload, uint64_t off), void *arg,
		uint64_t *valid_end)
{
	/* buf (buf_len, at least 2 entries' worth) is a read-ahead window over the file */
	uint64_t off = STREAM_HEADER_LEN, win = 0;
	size_t have = 0;
	struct entry e;
	int rc;

	for (;;) {
		*valid_end = off;
		/* make [off, off + ENT_LEN + max payload) available in the window, as far as the file goes */
		if (off < win || off + ENT_LEN > win + have ||
		    off + ENT_LEN + ho_get_le32(buf + (off - win) + 24) > win + have) {
			ssize_t n = ho_pread_full(fd, buf, buf_len, off);
			if (n < 0)
				return (int)n;
			win = off;
			have = (size_t)n;
		}
		if (off + ENT_LEN > win + have)
			return 0;
		const uint8_t *hdr = buf + (off - win);
		ent_unpack(hdr, &e);
		if ((uint64_t)e.len + ENT_LEN > buf_len || e.type < E_CHUNK || e.type > E_END ||
		    off + ENT_LEN + e.len > win + have)
			return 0;
		const uint8_t *payload = hdr + ENT_LEN;
		if ((ho_get_le64(hdr + 32) ^ ho_xxh64(payload, e.len)) != ho_xxh64(hdr, 32))
			return 0;
		if (fn && (rc = fn(arg, &e, payload, off + ENT_LEN)))
			return rc;
		off += ENT_LEN + e.len;
	}
}

struct pub {
	struct overlay *ov;
	struct tracker *t;
	struct stream_header h;
	uint8_t *chunk;
	uint64_t now;
	bool saw_end;
	int pass;                    /* 0 validate, 1 write, 2 notify */
	import_published_fn published;
	void *arg;
	uint64_t chunks;
	struct run run;
};

static int pub_entry(void *arg, const struct entry *e, const uint8_t *payload, uint64_t off)
{
	struct pub *p = arg;
	uint32_t cs = p->h.chunk_size;
	int rc = 0;

	(void)off;
	if (e->type == E_END) {
		p->saw_end = true;
		return 0;
	}
	if (e->type != E_CHUNK)
		return 0;
	if (p->saw_end || e->image >= STREAM_NIMAGES || e->count == 0 ||
	    e->idx >= overlay_nchunks(p->ov, e->image) || e->count > overlay_nchunks(p->ov, e->image) - e->idx ||
	    (e->kind == K_DATA && (e->count != 1 || e->len != stream_chunk_len(overlay_image_size(p->ov, e->image), cs, e->idx))) ||
	    (e->kind == K_BASE && (e->src_image >= STREAM_NIMAGES ||
				   e->src_idx + e->count > overlay_nchunks(p->ov, e->src_image))) ||
	    (e->kind == K_DIRECT && e->len != 0) || e->kind > K_DIRECT)
		return HO_ECORRUPT;
	uint64_t size = overlay_image_size(p->ov, e->image);
	uint64_t bytes = range_bytes(size, cs, e->idx, e->count);
	if (p->pass == 0)
		return 0;
	if (p->pass == 2) {
		if (p->published)
			p->published(p->arg, e->image, e->idx * cs, bytes);
		return 0;
	}
	switch (e->kind) {
	case K_DATA:
		rc = run_add(p->ov, &p->run, e->image, e->idx * cs, payload, e->len);
		break;
	case K_ZERO:
		rc = run_add(p->ov, &p->run, e->image, e->idx * cs, NULL, bytes);
		break;
	case K_BASE:
		for (uint32_t i = 0; i < e->count && !rc; i++) {
			uint32_t len = stream_chunk_len(size, cs, e->idx + i);
			rc = overlay_read_base(p->ov, e->src_image, p->chunk, len, (e->src_idx + i) * cs);
			if (!rc)
				rc = run_add(p->ov, &p->run, e->image, (e->idx + i) * cs, p->chunk, len);
		}
		break;
	case K_DIRECT:
		break;                   /* in place, durable since before the commit point */
	}
	if (rc)
		return rc;
	tracker_mark(p->t, e->image, e->idx, e->count, p->now);
	p->chunks += e->count;
	if (p->chunks >= 3 && test_crash("mid-publish"))
		_exit(99);
	return 0;
}

/* Publish the committed journal at path. Idempotent; removes the journal when done. */
static int journal_publish(struct overlay *ov, struct tracker *t, const char *path,
			   import_published_fn published, void *arg)
{
	uint8_t hdr[STREAM_HEADER_LEN];
	struct pub p = { .ov = ov, .t = t, .published = published, .arg = arg, .now = ho_now_ns() };
	uint8_t *buf = NULL;
	uint64_t end;
	char value[128], sh[33], ih[33];
	int fd, rc;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return ho_from_errno(errno);
	if (ho_pread_full(fd, hdr, sizeof(hdr), 0) != (ssize_t)sizeof(hdr) || stream_header_parse(hdr, &p.h) ||
	    p.h.chunk_size != overlay_chunk_size(ov)) {
		ho_err("journal '%s' has no valid stream header", path);
		rc = HO_ECORRUPT;
		goto out;
	}
	buf = malloc(WALK_BUF);
	p.chunk = malloc(p.h.chunk_size);
	p.run.buf = malloc(RUN_CAP);
	if (!buf || !p.chunk || !p.run.buf) {
		rc = HO_ENOMEM;
		goto out;
	}
	for (p.pass = 0; p.pass < 2; p.pass++) {
		p.saw_end = false;
		rc = walk(fd, buf, WALK_BUF, pub_entry, &p, &end);
		if (!rc && p.pass == 1)
			rc = run_flush(ov, &p.run);
		if (rc || !p.saw_end) {
			ho_err("journal '%s' is corrupt (%s)", path, rc ? ho_strerror(rc) : "no end entry");
			rc = rc ? rc : HO_ECORRUPT;
			goto out;
		}
	}
	hex16(p.h.sender, sh);
	hex16(p.h.id, ih);
	snprintf(value, sizeof(value), "%s %s %u %u", sh, ih, p.h.since, p.h.until);
	if ((rc = tracker_set_meta(t, META_APPLIED, value)) || (rc = tracker_commit(t, sync_overlay, ov))) {
		ho_err("cannot commit the applied stream to the tracker of '%s': %s", overlay_dir(ov), ho_strerror(rc));
		goto out;
	}
	p.pass = 2;
	p.saw_end = false;
	walk(fd, buf, WALK_BUF, pub_entry, &p, &end);
	if (unlink(path) < 0) {
		rc = ho_from_errno(errno);
		goto out;
	}
	rc = ho_fsync_dir(path);
out:
	close(fd);
	free(buf);
	free(p.chunk);
	free(p.run.buf);
	return rc;
}

/* Crash-test hook: HANDOFF_TEST_CRASH=POINT makes the process die at POINT ("after-commit",
 * "mid-publish") so tests can check the journal replay. Never set outside tests. */
static bool test_crash(const char *point)
{
	const char *v = getenv("HANDOFF_TEST_CRASH");
	return v && !strcmp(v, point);
}

static char *ov_path(struct overlay *ov, const char *name) { return ho_path_join(overlay_dir(ov), name); }

int import_recover(struct overlay *ov, struct tracker *t, const struct import_opts *o)
{
	char *journal = ov_path(ov, JOURNAL_NAME), *stage = ov_path(ov, STAGE_NAME), *index = ov_path(ov, INDEX_NAME);
	int rc = 0;

	if (!journal || !stage || !index) {
		rc = HO_ENOMEM;
		goto out;
	}
	if (access(journal, F_OK) == 0) {
		ho_notice("replaying the committed journal of an interrupted import into '%s'", overlay_dir(ov));
		if ((rc = journal_publish(ov, t, journal, o ? o->published : NULL, o ? o->arg : NULL)))
			goto out;
	}
	if (!(o && o->keep_partial) && access(stage, F_OK) == 0) {
		ho_info("discarding the staging file of an interrupted import in '%s'", overlay_dir(ov));
		unlink(stage);
		unlink(index);
	}
out:
	free(journal);
	free(stage);
	free(index);
	return rc;
}

/* ---- the importer ----------------------------------------------------------------------------- */

int import_begin(struct overlay *ov, struct tracker *t, const struct import_opts *o, struct importer **out)
{
	struct importer *im = calloc(1, sizeof(*im));
	int rc;

	*out = NULL;
	if (!im)
		return HO_ENOMEM;
	im->ov = ov;
	im->t = t;
	im->o = *o;
	im->sfd = im->ifd = -1;
	im->stage_path = ov_path(ov, STAGE_NAME);
	im->index_path = ov_path(ov, INDEX_NAME);
	im->journal_path = ov_path(ov, JOURNAL_NAME);
	im->staging_dir = ov_path(ov, STAGING_DIR);
	im->wbuf = malloc(WBUF_SIZE);
	im->ibuf = malloc(WBUF_SIZE);
	im->direct = !o->verify_only && !o->arrive;
	if (im->direct)
		im->run.buf = malloc(RUN_CAP);
	if (!im->stage_path || !im->index_path || !im->journal_path || !im->staging_dir || !im->wbuf || !im->ibuf ||
	    (im->direct && !im->run.buf)) {
		import_free(im);
		return HO_ENOMEM;
	}
	if (!o->verify_only && (rc = import_recover(ov, t, o))) {
		import_free(im);
		return rc;
	}
	if ((rc = stream_dec_new(o->key, o->key_len, &import_ops, im, &im->dec)) ||
	    (rc = stream_dec_set_threads(im->dec, o->threads))) {
		import_free(im);
		return rc;
	}
	*out = im;
	return 0;
}

void import_on_frame(struct importer *im, int (*cb)(void *arg, uint64_t seq), void *arg)
{
	im->frame_cb = cb;
	im->frame_arg = arg;
}

bool import_header_done(const struct importer *im) { return im->header_done; }
bool import_has_basis(const struct importer *im)
{
	const struct stream_header *h = im->dec ? stream_dec_header(im->dec) : NULL;
	return h && !ho_is_zero(h->basis, sizeof(h->basis));
}

int import_feed(struct importer *im, const void *buf, size_t *len)
{
	size_t total = *len, n;
	int rc;

	if (im->err)
		return im->err;
	if (im->noop) {              /* already applied: the rest does not matter */
		return 0;
	}
	n = total;
	if (!im->header_done)         /* the header alone first: an already-applied stream stops there */
		n = HO_MIN(total, (size_t)STREAM_HEADER_LEN - im->hdr_fed);
	rc = stream_dec_feed(im->dec, buf, &n);
	if (!im->header_done)
		im->hdr_fed += n;
	if (rc) {
		im->err = rc;
		*len = n;
		return rc;
	}
	if (n < total && !im->noop && im->header_done) {
		size_t m = total - n;
		rc = stream_dec_feed(im->dec, (const uint8_t *)buf + n, &m);
		n += m;
		if (rc) {
			im->err = rc;
			*len = n;
			return rc;
		}
	}
	if (!im->noop)
		*len = n;
	return 0;
}

int import_drain(struct importer *im)
{
	if (im->err || im->noop || !im->dec)
		return im->err;
	int rc = stream_dec_drain(im->dec);
	if (rc && !im->err)
		im->err = rc;
	return rc;
}

bool import_done(const struct importer *im) { return im->noop || stream_dec_done(im->dec); }

int import_resume(struct importer *im, bool fresh, uint64_t *frames, uint64_t *check)
{
	uint8_t hdr[STREAM_HEADER_LEN];
	struct stream_dec_pos pos = { .last_image = -1 }, last = { .last_image = -1 };
	uint64_t good_end = STREAM_HEADER_LEN;
	uint8_t *buf = NULL;
	bool have_pos = false;
	int rc = 0;

	*frames = 0;
	*check = 0;
	if (!im->header_done || im->noop)
		return im->err ? im->err : 0;
	if (fresh || im->o.verify_only || access(im->stage_path, F_OK) != 0)
		return stage_create(im);
	im->sfd = open(im->stage_path, O_RDWR | O_CLOEXEC);
	if (im->sfd < 0 || ho_pread_full(im->sfd, hdr, sizeof(hdr), 0) != (ssize_t)sizeof(hdr) ||
	    memcmp(hdr, stream_dec_header_bytes(im->dec), sizeof(hdr)) != 0)
		return stage_create(im);           /* another stream's leftovers */
	index_unmap(im);
	im->ifd = open(im->index_path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	buf = malloc(HO_MAX(im->cs, 4096u));
	if (im->ifd < 0 || !buf) {
		free(buf);
		return im->ifd < 0 ? ho_from_errno(errno) : HO_ENOMEM;
	}
	/* scan: rebuild the index and the digest up to the last complete frame */
	{
		uint8_t h[ENT_LEN];
		struct entry e;
		uint64_t off = STREAM_HEADER_LEN;
		for (;;) {
			ssize_t n = ho_pread_full(im->sfd, h, ENT_LEN, off);
			if (n != ENT_LEN)
				break;
			ent_unpack(h, &e);
			if (e.len > HO_MAX(im->cs, 4096u) || e.type < E_CHUNK || e.type > E_FRAME)
				break;
			if (e.len && ho_pread_full(im->sfd, buf, e.len, off + ENT_LEN) != (ssize_t)e.len)
				break;
			if ((ho_get_le64(h + 32) ^ ho_xxh64(buf, e.len)) != ho_xxh64(h, 32))
				break;
			off += ENT_LEN + e.len;
			if (e.type == E_FRAME) {
				if (e.len != POS_LEN)
					break;
				pos_unpack(buf, &last);
				have_pos = true;
				good_end = off;
			}
		}
	}
	if (!have_pos) {
		free(buf);
		return stage_create(im);
	}
	/* truncate the torn tail, then replay the staged chunks into the decoder's digest and index */
	if (ftruncate(im->sfd, (off_t)good_end) < 0 || fdatasync(im->sfd) < 0) {
		free(buf);
		return ho_from_errno(errno);
	}
	im->soff = im->wbase = good_end;
	{
		uint8_t h[ENT_LEN];
		struct entry e;
		uint64_t off = STREAM_HEADER_LEN;
		while (off < good_end) {
			if (ho_pread_full(im->sfd, h, ENT_LEN, off) != ENT_LEN) {
				rc = HO_EIO;
				break;
			}
			ent_unpack(h, &e);
			if (e.len && ho_pread_full(im->sfd, buf, e.len, off + ENT_LEN) != (ssize_t)e.len) {
				rc = HO_EIO;
				break;
			}
			if (e.type == E_CHUNK) {
				uint64_t size = im->h->image[e.image].size;
				if ((rc = index_append(im, &e, e.kind == K_DATA ? off + ENT_LEN : e.src_idx)))
					break;
				for (uint32_t i = 0; i < e.count && !rc; i++) {
					uint32_t len = stream_chunk_len(size, im->cs, e.idx + i);
					if (e.kind == K_DATA) {
						stream_dec_replay_chunk(im->dec, e.image, e.idx, buf, len);
					} else {
						rc = entry_read(im, e.kind, e.src_image, e.src_idx, i, im->chunk, len);
						if (!rc)
							stream_dec_replay_chunk(im->dec, e.image, e.idx + i, im->chunk, len);
					}
				}
				if (rc)
					break;
			}
			off += ENT_LEN + e.len;
		}
	}
	free(buf);
	if (rc)
		return rc;
	pos = last;
	if ((rc = stream_dec_set_pos(im->dec, &pos)))
		return rc;
	*frames = pos.frames;
	*check = pos.prev_check;
	ho_info("resuming stream at frame %" PRIu64 " (%" PRIu64 " bytes staged)", pos.frames, good_end);
	return 0;
}

int import_finish(struct importer *im, struct import_result *res)
{
	const struct stream_header *h;
	int rc;

	if (im->err)
		return im->err;
	if (!im->noop && (rc = stream_dec_finish(im->dec))) {
		im->err = rc;
		return rc;
	}
	h = stream_dec_header(im->dec);
	if (res && h) {
		memset(res, 0, sizeof(*res));
		memcpy(res->id, h->id, 16);
		memcpy(res->sender, h->sender, 16);
		res->since = h->since;
		res->until = h->until;
		memcpy(res->mode, h->mode, sizeof(res->mode));
		res->chunks[0] = im->end.chunks[0];
		res->chunks[1] = im->end.chunks[1];
		res->frames = im->end.frames;
		res->authenticated = h->authenticated;
		res->basis = !ho_is_zero(h->basis, sizeof(h->basis));
	}
	if (im->noop) {
		if (res)
			res->already_applied = true;
		im->finished = true;
		return 0;
	}
	if (im->o.verify_only) {
		struct applied a;
		if (res && get_applied(im->t, &a) == 0 && a.any && !memcmp(a.id, h->id, 16))
			res->already_applied = true;
		im->finished = true;
		return 0;
	}
	if (im->o.arrive) {
		/* post-copy: every chunk is in place already (arrive()); record the stream as applied */
		char value[128], sh[33], ih[33];
		hex16(h->sender, sh);
		hex16(h->id, ih);
		snprintf(value, sizeof(value), "%s %s %u %u", sh, ih, h->since, h->until);
		im->finished = true;
		if ((rc = tracker_set_meta(im->t, META_APPLIED, value)) || (rc = tracker_commit(im->t, sync_overlay, im->ov))) {
			im_fail(im, rc, "cannot commit the applied stream to the tracker of '%s': %s", overlay_dir(im->ov),
				ho_strerror(rc));
			return rc;
		}
		if (im->sfd >= 0)
			unlink(im->stage_path);
		unlink(im->index_path);
		return 0;
	}
	/* commit point: END entry durable, then the rename */
	{
		uint8_t e[STREAM_END_LEN];
		struct entry en = { .type = E_END, .len = STREAM_END_LEN };
		if (im->sfd < 0 && (rc = stage_create(im)))
			goto fail;
		ho_put_le64(e, im->end.frames);
		ho_put_le64(e + 8, im->end.records);
		ho_put_le64(e + 16, im->end.chunks[0]);
		ho_put_le64(e + 24, im->end.chunks[1]);
		ho_put_le64(e + 32, im->end.bytes);
		memcpy(e + 40, im->end.digest, 32);
		if ((rc = flush_pending(im)) || (rc = direct_sync(im)) || (rc = stage_entry(im, &en, e)) ||
		    (rc = stage_flush(im)))
			goto fail;
		if (fdatasync(im->sfd) < 0 || rename(im->stage_path, im->journal_path) < 0) {
			rc = ho_from_errno(errno);
			goto fail;
		}
		if ((rc = ho_fsync_dir(im->journal_path)))
			goto fail;
		if (test_crash("after-commit"))
			_exit(99);
	}
	im->finished = true;
	unlink(im->index_path);
	uint64_t t0 = ho_now_ns();
	if ((rc = journal_publish(im->ov, im->t, im->journal_path, im->o.published, im->o.arg))) {
		im_fail(im, rc, "cannot publish the stream into '%s': %s (the journal is replayed on the next open)",
			overlay_dir(im->ov), ho_strerror(rc));
		return rc;
	}
	ho_info("stream published into '%s' in %.2f s after its end", overlay_dir(im->ov),
		(double)(ho_now_ns() - t0) / 1e9);
	return 0;
fail:
	im_fail(im, rc, "cannot stage the stream in '%s': %s", overlay_dir(im->ov), ho_strerror(rc));
	return rc;
}

void import_free(struct importer *im)
{
	if (!im)
		return;
	if (im->sfd >= 0)
		close(im->sfd);
	if (im->ifd >= 0)
		close(im->ifd);
	index_unmap(im);
	if (!im->o.verify_only && !im->finished && !im->o.keep_partial && im->stage_path && im->header_done) {
		unlink(im->stage_path);
		unlink(im->index_path);
	}
	stream_dec_free(im->dec);
	free(im->stage_path);
	free(im->index_path);
	free(im->journal_path);
	free(im->staging_dir);
	free(im->wbuf);
	free(im->ibuf);
	free(im->run.buf);
	free(im->chunk);
	free(im);
}

int import_fd(struct overlay *ov, struct tracker *t, int fd, const struct import_opts *o,
	      struct import_result *res)
{
	struct importer *im;
	enum { BUF = 1 << 20 };
	uint8_t *buf = malloc(BUF);
	int rc;

	if (!buf)
		return HO_ENOMEM;
	if ((rc = import_begin(ov, t, o, &im))) {
		free(buf);
		return rc;
	}
	for (;;) {
		ssize_t n = read(fd, buf, BUF);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			rc = ho_from_errno(errno);
			ho_err("cannot read the stream: %s", strerror(errno));
			break;
		}
		if (n == 0) {
			rc = import_finish(im, res);
			break;
		}
		size_t len = (size_t)n;
		if ((rc = import_feed(im, buf, &len)))
			break;
		if (im->noop) {
			rc = import_finish(im, res);
			break;
		}
	}
	import_free(im);
	free(buf);
	return rc;
}
