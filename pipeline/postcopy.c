/*
 * postcopy.c — what post-copy handoff needs beyond the stream: the manifest (which chunks the
 * final stream will carry, so the destination can hold back every access to them and resume the
 * VM at once) and the chunk server (the destination asks for exactly the chunks its VM touches;
 * the source answers ahead of the stream, which goes on in order in the background).
 *
 * Manifest: "HOMANIF1", then per image (disk, memory): a varint run count, then per run varints
 * (gap from the end of the previous run, length - 1). Compact for the scattered dirty pages of a
 * busy guest: a few bytes per run.
 *
 * Chunk server protocol (handoff-stream(5), POST-COPY), on its own TCP connection to the mirror's
 * stream listener, so requests never wait behind stream frames:
 *   source → mirror  "HOXFER 1 demand\n"
 *   mirror → source  "nonce HEX32\n"
 *   mirror → source  "want IMG IDX\n" (any number, any time)
 *   source → mirror  records: 40-byte header — magic "HOCK", image u8, codec u8 (0 none, 1 lz4
 *                    over the payload, 2 the connection's zstd stream), kind u8 (delta.h: zero,
 *                    baseref, xor, delta, raw),
 *                    referenced image u8, index u64, length u32, payload length u32, referenced
 *                    index u64, 8 zero bytes — a 32-byte tag, then the payload. The tag is
 *                    HMAC-SHA-256 (key derived from the pre-shared key and the nonce) over header
 *                    and payload, or without a key XXH3-64 of them in its first 8 bytes.
 * Chunks are encoded like the stream's (zero, same-offset base, zstd delta against the base
 * neighbourhood, XOR), and, when the exporter cached the base indexes, as references to equal
 * chunks anywhere in either base (page cache holds disk blocks) and deltas with far anchors.
 * The encoded payloads then go through one zstd stream for the whole connection (codec 2,
 * codec_stream: flushed per record, a 2^DEMAND_WLOG window with long-distance matching), so a
 * page that repeats one answered earlier costs a few bytes, as it would in the stream's frames.
 * Per record (lz4 on 4 KiB, session 6) a busy guest's answers came to 0.91 of their size: its
 * pages are copies of a few random megabytes, which no single page shows.
 * Each request is answered with the chunk and up to PREFETCH following chunks of its manifest run
 * that were not sent yet. What the destination takes from here is checked again against the
 * verified stream when that brings the same chunk (the mirror's business).
 */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>
#include <linux/sockios.h>
#include "common/common.h"
#include "overlay/overlay.h"
#include "tracker/tracker.h"
#include "pipeline/pipeline.h"
#include "pipeline/codec.h"
#include "pipeline/dedup.h"
#include "pipeline/delta.h"
#include "pipeline/mode.h"
#include "pipeline/export_int.h"

#define MANIFEST_MAGIC "HOMANIF1"
#define GREETING "HOXFER 1 demand\n"
#define REC_MAGIC "HOCK"
#define REC_HDR 40
#define TAG_LEN 32
#define PREFETCH 7
#define DEMAND_LEVEL 3
#define DEMAND_WLOG 27     /* the stream's window: 128 MiB of history at each end */

/* ---- manifest --------------------------------------------------------------------------------- */

struct mbuf { uint8_t *p; size_t len, cap; int err; };

static void put_varint(struct mbuf *b, uint64_t v)
{
	if (b->len + 10 > b->cap) {
		size_t cap = b->cap ? b->cap * 2 : 4096;
		uint8_t *p = realloc(b->p, cap);
		if (!p) {
			b->err = HO_ENOMEM;
			return;
		}
		b->p = p;
		b->cap = cap;
	}
	do {
		uint8_t c = v & 0x7f;
		v >>= 7;
		b->p[b->len++] = c | (v ? 0x80 : 0);
	} while (v);
}

static int get_varint(const uint8_t *buf, size_t len, size_t *pos, uint64_t *v)
{
	*v = 0;
	for (int shift = 0; shift < 64; shift += 7) {
		if (*pos >= len)
			return HO_ECORRUPT;
		uint8_t c = buf[(*pos)++];
		*v |= (uint64_t)(c & 0x7f) << shift;
		if (!(c & 0x80))
			return 0;
	}
	return HO_ECORRUPT;
}

struct run { uint64_t first, count; };
struct runs { struct run *r; size_t n, cap; int img; uint64_t chunks; };

static int collect_cb(const struct tracker_chunk *c, void *arg)
{
	struct runs *rs = arg;
	if (c->image != rs->img)
		return 0;
	rs->chunks++;
	if (rs->n && rs->r[rs->n - 1].first + rs->r[rs->n - 1].count == c->idx) {
		rs->r[rs->n - 1].count++;
		return 0;
	}
	if (rs->n == rs->cap) {
		size_t cap = rs->cap ? rs->cap * 2 : 1024;
		struct run *r = realloc(rs->r, cap * sizeof(*r));
		if (!r)
			return HO_ENOMEM;
		rs->r = r;
		rs->cap = cap;
	}
	rs->r[rs->n++] = (struct run){ c->idx, 1 };
	return 0;
}

int postcopy_manifest(const char *dir, uint32_t since, uint32_t until, uint8_t **buf, size_t *len,
		      uint64_t *nchunks)
{
	struct overlay *ov = NULL;
	struct tracker *t = NULL;
	struct mbuf b = { 0 };
	uint64_t n[OVERLAY_NIMAGES], total = 0;
	int rc;

	if ((rc = overlay_open(dir, NULL, 0, OVERLAY_READONLY, &ov)))
		return rc;
	for (int i = 0; i < OVERLAY_NIMAGES; i++)
		n[i] = overlay_nchunks(ov, i);
	if ((rc = tracker_open(dir, OVERLAY_NIMAGES, n, TRACKER_READONLY, &t)))
		goto out;
	if (!(b.p = malloc(b.cap = 4096))) {
		rc = HO_ENOMEM;
		goto out;
	}
	memcpy(b.p, MANIFEST_MAGIC, 8);
	b.len = 8;
	for (int i = 0; i < OVERLAY_NIMAGES && !rc; i++) {
		struct runs rs = { .img = i };
		rc = tracker_foreach(t, i, since, until, collect_cb, &rs);
		if (!rc) {
			uint64_t end = 0;
			put_varint(&b, rs.n);
			for (size_t k = 0; k < rs.n; k++) {
				put_varint(&b, rs.r[k].first - end);
				put_varint(&b, rs.r[k].count - 1);
				end = rs.r[k].first + rs.r[k].count;
			}
			total += rs.chunks;
			rc = b.err;
		}
		free(rs.r);
	}
out:
	if (t)
		tracker_close(t);
	overlay_close(ov);
	if (rc) {
		free(b.p);
		return rc;
	}
	*buf = b.p;
	*len = b.len;
	if (nchunks)
		*nchunks = total;
	return 0;
}

int postcopy_manifest_foreach(const uint8_t *buf, size_t len, const uint64_t nchunks[2],
			      int (*fn)(void *arg, int img, uint64_t idx, uint64_t count), void *arg)
{
	size_t pos = 8;
	int rc;

	if (len < 8 || memcmp(buf, MANIFEST_MAGIC, 8))
		return HO_ECORRUPT;
	for (int img = 0; img < OVERLAY_NIMAGES; img++) {
		uint64_t nruns, end = 0, gap, cm1;
		if ((rc = get_varint(buf, len, &pos, &nruns)))
			return rc;
		for (uint64_t k = 0; k < nruns; k++) {
			if ((rc = get_varint(buf, len, &pos, &gap)) || (rc = get_varint(buf, len, &pos, &cm1)))
				return rc;
			if (gap > nchunks[img] - end || cm1 >= nchunks[img] - end - gap)
				return HO_ECORRUPT;
			uint64_t first = end + gap;
			end = first + cm1 + 1;
			if ((rc = fn(arg, img, first, cm1 + 1)))
				return rc;
		}
	}
	return pos == len ? 0 : HO_ECORRUPT;
}

/* ---- record tags ------------------------------------------------------------------------------ */

static struct ho_hmac *tag_key(const uint8_t *key, size_t key_len, const uint8_t nonce[16])
{
	uint8_t k[HO_SHA256_LEN];
	struct ho_hmac *h = ho_hmac_new(key, key_len);
	if (!h)
		return NULL;
	ho_hmac_update(h, "handoff postcopy", 16);
	ho_hmac_update(h, nonce, 16);
	ho_hmac_final(h, k);
	ho_hmac_free(h);
	return ho_hmac_new(k, sizeof(k));
}

static void tag_of(struct ho_hmac *h, const uint8_t *hdr, const uint8_t *payload, size_t plen, uint8_t tag[TAG_LEN])
{
	if (h) {
		ho_hmac_update(h, hdr, REC_HDR);
		ho_hmac_update(h, payload, plen);
		ho_hmac_final(h, tag);
		return;
	}
	memset(tag, 0, TAG_LEN);
	ho_put_le64(tag, ho_xxh64(hdr, REC_HDR) ^ ho_xxh64(payload, plen));
}

/* ---- the source's chunk server ---------------------------------------------------------------- */

struct postcopy_server {
	struct overlay *ov;
	int fd;
	uint8_t *want[OVERLAY_NIMAGES];    /* manifest bitmaps: may be asked for */
	uint8_t *sent[OVERLAY_NIMAGES];    /* sent already */
	uint64_t n[OVERLAY_NIMAGES];
	struct ho_hmac *mac;
	struct codec_stream *zs;
	struct mode mode;
	struct delta_base base;
	int base_fd[OVERLAY_NIMAGES];
	struct baseidx *bidx[OVERLAY_NIMAGES];   /* the exporter's cached base indexes (NULL: none) */
	struct chunk_enc *enc;
	uint64_t seq;
	pthread_t th;
	bool running;
	struct postcopy_stats st;
	uint64_t demand_ns;                /* when the last request came (atomic) */
};

static uint64_t stream_nchunks_of(struct overlay *ov, int img) { return overlay_nchunks(ov, img); }

static bool bit(const uint8_t *b, uint64_t i) { return b[i >> 3] >> (i & 7) & 1; }
static void set_bit(uint8_t *b, uint64_t i) { b[i >> 3] |= (uint8_t)(1u << (i & 7)); }

static int mark_cb(void *arg, int img, uint64_t idx, uint64_t count)
{
	struct postcopy_server *s = arg;
	for (uint64_t i = 0; i < count; i++)
		set_bit(s->want[img], idx + i);
	return 0;
}

static int send_chunk(struct postcopy_server *s, int img, uint64_t idx, uint8_t *raw, uint8_t *rec, uint8_t *out,
		      size_t cap)
{
	uint32_t cs = overlay_chunk_size(s->ov);
	uint64_t size = overlay_image_size(s->ov, img), off = idx * cs;
	uint32_t len = (uint32_t)HO_MIN((uint64_t)cs, size - off);
	uint8_t hdr[REC_HDR], tag[TAG_LEN];
	struct chunk_rec r;
	const uint8_t *payload = rec;
	size_t plen, clen = 0;
	int rc, codec = 0;

	if ((rc = overlay_read(s->ov, img, raw, len, off)) ||
	    (rc = chunk_encode(s->enc, img, idx, raw, len, ++s->seq, rec, cap, &r)))
		return rc;
	plen = r.len;
	if (plen) {
		if ((rc = codec_stream_compress(s->zs, rec, plen, out, cap, &clen)))
			return rc;
		codec = 2;
		payload = out;
		plen = clen;
	}
	memset(hdr, 0, sizeof(hdr));
	memcpy(hdr, REC_MAGIC, 4);
	hdr[4] = (uint8_t)img;
	hdr[5] = (uint8_t)codec;
	hdr[6] = (uint8_t)r.kind;
	hdr[7] = (uint8_t)(r.kind == CHUNK_BASEREF ? r.ref_img : 0);
	ho_put_le64(hdr + 8, idx);
	ho_put_le32(hdr + 16, len);
	ho_put_le32(hdr + 20, (uint32_t)plen);
	ho_put_le64(hdr + 24, r.kind == CHUNK_BASEREF ? r.ref_idx : 0);
	tag_of(s->mac, hdr, payload, plen, tag);
	if (ho_write_full(s->fd, hdr, REC_HDR) || ho_write_full(s->fd, tag, TAG_LEN) || ho_write_full(s->fd, payload, plen))
		return HO_ECONN;
	__atomic_fetch_or(&s->sent[img][idx >> 3], (uint8_t)(1u << (idx & 7)), __ATOMIC_RELEASE);
	s->st.chunks++;
	s->st.bytes += REC_HDR + TAG_LEN + plen;
	return 0;
}

bool postcopy_server_sent(void *arg, int img, uint64_t idx)
{
	const struct postcopy_server *s = arg;
	if (img < 0 || img >= OVERLAY_NIMAGES || idx >= s->n[img])
		return false;
	return __atomic_load_n(&s->sent[img][idx >> 3], __ATOMIC_ACQUIRE) >> (idx & 7) & 1;
}

#define BUSY_NS 100000000ull

bool postcopy_server_busy(void *arg, uint64_t now_ns)
{
	struct postcopy_server *s = arg;
	uint64_t t = __atomic_load_n(&s->demand_ns, __ATOMIC_ACQUIRE);
	int q;

	if (t && now_ns >= t && now_ns - t < BUSY_NS)
		return true;
	/* answers in the socket or on the link: the VM is still waiting for them */
	return t && ioctl(s->fd, SIOCOUTQ, &q) == 0 && q > 0;
}

static void *server_main(void *arg)
{
	struct postcopy_server *s = arg;
	uint32_t cs = overlay_chunk_size(s->ov);
	size_t cap = codec_stream_bound(chunk_payload_bound(cs));
	uint8_t *raw = malloc(cs), *rec = malloc(cap), *out = malloc(cap);
	char buf[4096];
	size_t have = 0;

	while (raw && rec && out) {
		char *nl;
		while ((nl = memchr(buf, '\n', have))) {
			*nl = 0;
			unsigned img;
			uint64_t idx;
			if (sscanf(buf, "want %u %" SCNu64, &img, &idx) == 2 && img < OVERLAY_NIMAGES && idx < s->n[img] &&
			    bit(s->want[img], idx)) {
				s->st.requests++;
				__atomic_store_n(&s->demand_ns, ho_mono_ns(), __ATOMIC_RELEASE);
				/* the chunk, then following ones of its run the receiver will want next; none
				 * twice: TCP delivers what was sent, and a request for a chunk sent already
				 * crossed it on the way (a burst of requests for a run the receiver reads) */
				for (uint64_t i = idx, k = 0; i < s->n[img] && bit(s->want[img], i) && k <= PREFETCH; i++, k++) {
					if (postcopy_server_sent(s, (int)img, i))
						continue;
					if (send_chunk(s, (int)img, i, raw, rec, out, cap))
						goto done;
				}
			} else {
				ho_warn("post-copy: ignoring a request for a chunk outside the manifest: '%.60s'", buf);
			}
			size_t used = (size_t)(nl + 1 - buf);
			memmove(buf, nl + 1, have - used);
			have -= used;
		}
		if (have == sizeof(buf))
			break;
		ssize_t n = read(s->fd, buf + have, sizeof(buf) - have);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			continue;                 /* idle: the stream may take long */
		if (n <= 0)
			break;
		have += (size_t)n;
	}
done:
	free(raw);
	free(rec);
	free(out);
	return NULL;
}

static void server_free(struct postcopy_server *s)
{
	if (!s)
		return;
	if (s->fd >= 0)
		close(s->fd);
	for (int i = 0; i < OVERLAY_NIMAGES; i++) {
		free(s->want[i]);
		free(s->sent[i]);
	}
	ho_hmac_free(s->mac);
	codec_stream_free(s->zs);
	chunk_enc_free(s->enc);
	for (int i = 0; i < OVERLAY_NIMAGES; i++)
		baseidx_free(s->bidx[i]);
	overlay_close(s->ov);
	free(s);
}

int postcopy_server_start(const char *dir, const uint8_t *manifest, size_t mlen, const uint8_t *key,
			  size_t key_len, const char *hostport, int timeout_ms, struct postcopy_server **out)
{
	struct postcopy_server *s = calloc(1, sizeof(*s));
	char line[128];
	size_t have = 0;
	int rc;

	if (!s)
		return HO_ENOMEM;
	s->fd = -1;
	/* a destination that refused a record hangs up: the answer being written must fail with
	 * EPIPE, not kill the process (test_postcopy died so, now and then, after a refusal) */
	signal(SIGPIPE, SIG_IGN);
	if ((rc = overlay_open(dir, NULL, 0, OVERLAY_READONLY, &s->ov)))
		goto fail;
	for (int i = 0; i < OVERLAY_NIMAGES; i++) {
		s->n[i] = overlay_nchunks(s->ov, i);
		s->want[i] = calloc(s->n[i] / 8 + 1, 1);
		s->sent[i] = calloc(s->n[i] / 8 + 1, 1);
		if (!s->want[i] || !s->sent[i]) {
			rc = HO_ENOMEM;
			goto fail;
		}
	}
	if ((rc = postcopy_manifest_foreach(manifest, mlen, s->n, mark_cb, s)))
		goto fail;
	if ((rc = codec_stream_new(true, DEMAND_LEVEL, DEMAND_WLOG, &s->zs)))
		goto fail;
	/* the stream's default mode, less the sent set; with the base indexes the exporter cached
	 * (it built them in the live rounds or builds them for the stream now; never here, where
	 * building would hold up the resume), chunks found anywhere in either base go as references
	 * and deltas use far anchors: a guest's page cache holds disk blocks (on a real guest's
	 * changes, 13 % fewer bytes for memory pages) */
	s->mode = *mode_default();
	s->mode.dedup = MODE_DEDUP_ZERO | MODE_DEDUP_SAME;
	s->base.chunk_size = overlay_chunk_size(s->ov);
	bool indexed = true;
	for (int i = 0; i < OVERLAY_NIMAGES; i++) {
		const struct overlay_identity *id = overlay_base_identity(s->ov, i);
		s->base.size[i] = id->size;
		s->base_fd[i] = overlay_base_fd(s->ov, i);
		char *ip = id->zero ? NULL : baseidx_cache_path(NULL, id, s->base.chunk_size);
		if (ip && baseidx_load(ip, id->digest, id->size, s->base.chunk_size, &s->bidx[i]) == 0)
			s->base.index[i] = s->bidx[i];
		else if (!id->zero)
			indexed = false;
		free(ip);
	}
	if (indexed)
		s->mode.dedup |= MODE_DEDUP_BASE;
	else
		s->mode.far = false;
	ho_debug("post-copy chunk server: %s", indexed ? "base indexes loaded" : "no cached base index");
	s->base.read = delta_read_fds;
	s->base.arg = s->base_fd;
	if ((rc = chunk_enc_new(&s->mode, &s->base, NULL, &s->enc)))
		goto fail;
	if ((rc = transport_connect(hostport, timeout_ms, &s->fd)))
		goto fail;
	if (ho_write_full(s->fd, GREETING, strlen(GREETING))) {
		rc = HO_ECONN;
		goto fail;
	}
	/* the nonce line */
	while (have < sizeof(line) - 1) {
		ssize_t n = read(s->fd, line + have, 1);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			rc = HO_ECONN;
			goto fail;
		}
		if (line[have++] == '\n')
			break;
	}
	line[have] = 0;
	uint8_t nonce[16];
	if (strncmp(line, "nonce ", 6) || strlen(line) != 6 + 32 + 1 || (line[38] = 0, ho_unhex(line + 6, nonce, 16))) {
		ho_err("the destination did not open the post-copy channel: '%.60s'", line);
		rc = HO_EPROTO;
		goto fail;
	}
	if (key && !(s->mac = tag_key(key, key_len, nonce))) {
		rc = HO_ENOMEM;
		goto fail;
	}
	if (pthread_create(&s->th, NULL, server_main, s) != 0) {
		rc = HO_ENOMEM;
		goto fail;
	}
	s->running = true;
	*out = s;
	return 0;
fail:
	server_free(s);
	return rc;
}

void postcopy_server_stop(struct postcopy_server *s, struct postcopy_stats *st)
{
	if (!s)
		return;
	if (s->running) {
		/* the thread ends after the answer it is writing (its read sees the end), so the
		 * receiver sees whole records and then a clean end */
		shutdown(s->fd, SHUT_RD);
		pthread_join(s->th, NULL);
		shutdown(s->fd, SHUT_WR);
	}
	if (st)
		*st = s->st;
	server_free(s);
}

/* ---- the destination's side ------------------------------------------------------------------- */

bool postcopy_is_server(int conn_fd, int timeout_ms)
{
	char buf[sizeof(GREETING) - 1];
	struct pollfd p = { .fd = conn_fd, .events = POLLIN };
	uint64_t deadline = ho_mono_ns() + (uint64_t)timeout_ms * 1000000u;

	for (;;) {
		ssize_t n = recv(conn_fd, buf, sizeof(buf), MSG_PEEK | MSG_DONTWAIT);
		if (n == (ssize_t)sizeof(buf) || (n >= 0 && (size_t)n < sizeof(buf) && memcmp(buf, GREETING, (size_t)n)))
			return n == (ssize_t)sizeof(buf) && !memcmp(buf, GREETING, sizeof(buf));
		if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR))
			return false;
		uint64_t now = ho_mono_ns();
		if (now >= deadline)
			return false;
		poll(&p, 1, (int)HO_MAX(1ull, HO_MIN(100ull, (deadline - now) / 1000000u)));
	}
}

int postcopy_request(int conn_fd, int img, uint64_t idx)
{
	char line[64];
	int n = snprintf(line, sizeof(line), "want %d %" PRIu64 "\n", img, idx);
	return ho_write_full(conn_fd, line, (size_t)n) ? HO_ECONN : 0;
}

int postcopy_receive(int conn_fd, struct overlay *ov, const uint8_t *key, size_t key_len, void (*ready)(void *arg),
		     postcopy_chunk_fn fn, void *arg)
{
	int base_fd[OVERLAY_NIMAGES];
	struct delta_base base = { .chunk_size = overlay_chunk_size(ov), .read = delta_read_fds, .arg = base_fd };
	struct chunk_dec *cdec = NULL;
	uint8_t *rec = NULL;
	size_t rcap = 0;
	for (int i = 0; i < OVERLAY_NIMAGES; i++) {
		base.size[i] = overlay_base_identity(ov, i)->size;
		base_fd[i] = overlay_base_fd(ov, i);
	}
	char greet[sizeof(GREETING) - 1], line[64];
	uint8_t nonce[16], hdr[REC_HDR], tag[TAG_LEN], want[TAG_LEN];
	struct ho_hmac *mac = NULL;
	struct codec_ctx *cctx = codec_ctx_new();
	struct codec_stream *zs = NULL;
	uint8_t *payload = NULL, *data = NULL;
	size_t pcap = 0, dcap = 0;
	int rc = 0;

	if (!cctx || chunk_dec_new(&base, &cdec) || codec_stream_new(false, 0, DEMAND_WLOG, &zs)) {
		codec_ctx_free(cctx);
		chunk_dec_free(cdec);
		return HO_ENOMEM;
	}
	if (ho_read_full(conn_fd, greet, sizeof(greet)) != (ssize_t)sizeof(greet) || memcmp(greet, GREETING, sizeof(greet))) {
		rc = HO_EPROTO;
		goto out;
	}
	ho_random(nonce, sizeof(nonce));
	memcpy(line, "nonce ", 6);
	ho_hex(nonce, 16, line + 6);
	line[38] = '\n';
	if (ho_write_full(conn_fd, line, 39)) {
		rc = HO_ECONN;
		goto out;
	}
	if (key && !(mac = tag_key(key, key_len, nonce))) {
		rc = HO_ENOMEM;
		goto out;
	}
	if (ready)
		ready(arg);
	for (;;) {
		ssize_t n = ho_read_full(conn_fd, hdr, REC_HDR);
		if (n == 0)
			break;                        /* the source closed: done */
		if (n < 0 && (n == HO_ETIMEDOUT))
			continue;
		if (n != REC_HDR || memcmp(hdr, REC_MAGIC, 4) || hdr[4] >= OVERLAY_NIMAGES || hdr[5] > 2 ||
		    hdr[6] >= CHUNK_NKINDS || hdr[6] == CHUNK_SENTREF || hdr[7] >= OVERLAY_NIMAGES || ho_get_le64(hdr + 32)) {
			rc = n < 0 || n < REC_HDR ? HO_ECONN : HO_ECORRUPT;
			break;
		}
		uint32_t len = ho_get_le32(hdr + 16), plen = ho_get_le32(hdr + 20);
		if (len == 0 || len > base.chunk_size || plen > (1u << 21)) {
			rc = HO_ECORRUPT;
			break;
		}
		if (plen > pcap && !(payload = realloc(payload, pcap = plen))) {
			rc = HO_ENOMEM;
			break;
		}
		if (len > dcap && !(data = realloc(data, dcap = len))) {
			rc = HO_ENOMEM;
			break;
		}
		if (ho_read_full(conn_fd, tag, TAG_LEN) != TAG_LEN || ho_read_full(conn_fd, payload, plen) != (ssize_t)plen) {
			rc = HO_ECONN;
			break;
		}
		tag_of(mac, hdr, payload, plen, want);
		if (!ho_mem_equal_ct(tag, want, TAG_LEN)) {
			ho_err("post-copy: a chunk from the source failed its %s: refused", mac ? "authentication" : "checksum");
			rc = mac ? HO_EAUTH : HO_ECHECKSUM;
			break;
		}
		const uint8_t *p = payload;
		size_t rlen = plen;
		if (hdr[5]) {
			size_t want_cap = chunk_payload_bound(base.chunk_size);
			if (want_cap > rcap && !(rec = realloc(rec, rcap = want_cap))) {
				rc = HO_ENOMEM;
				break;
			}
			if (hdr[5] == 1 ? codec_decompress(cctx, CODEC_LZ4, NULL, 0, payload, plen, rec, rcap, &rlen)
					: codec_stream_decompress(zs, payload, plen, rec, rcap, &rlen)) {
				rc = HO_ECORRUPT;
				break;
			}
			p = rec;
		}
		int img = hdr[4], kind = hdr[6];
		uint64_t idx = ho_get_le64(hdr + 8), ref = ho_get_le64(hdr + 24);
		if (idx >= stream_nchunks_of(ov, img)) {
			rc = HO_ECORRUPT;
			break;
		}
		if (kind == CHUNK_ZERO) {
			memset(data, 0, len);
		} else if (kind == CHUNK_BASEREF) {
			if (ref >= stream_nchunks_of(ov, hdr[7]) || (rc = overlay_read_base(ov, hdr[7], data, len, ref * base.chunk_size)))
				rc = rc ? rc : HO_ECORRUPT;
		} else {
			rc = chunk_decode(cdec, img, idx, (enum chunk_kind)kind, p, rlen, data, len, NULL, NULL);
		}
		if (rc || (rc = fn(arg, img, idx, data, len)))
			break;
	}
out:
	ho_hmac_free(mac);
	codec_ctx_free(cctx);
	codec_stream_free(zs);
	chunk_dec_free(cdec);
	free(rec);
	free(payload);
	free(data);
	return rc;
}
