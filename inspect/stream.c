/*
 * stream.c — looks inside a handoff stream file without applying it: runs the pipeline's own
 * decoder (pipeline/stream.h: every checksum, MAC, sequence number and the END digest verified)
 * and reports the header, the records by encoding, and where the stream's bytes go (header,
 * frame headers, MACs, compressed frame payloads, record headers and payloads). Records that need
 * base bytes (base references, XOR) are rebuilt from the bases of an overlay given with
 * --overlay; chunks the stream references as "sent" are kept in an unlinked temporary file.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "common/common.h"
#include "inspect/inspect_int.h"
#include "pipeline/stream.h"

#define FEED (1u << 20)

struct sctx {
	struct inspect *in;               /* NULL without --overlay */
	const char *path;
	struct stream_header h;
	bool have_header;
	int spill;                        /* reconstructed chunks, at (image offset + image start) */
	uint64_t spill_base[STREAM_NIMAGES];
	uint64_t *have[STREAM_NIMAGES];   /* bitmap: chunk reconstructed in the spill file */
	uint64_t chunks[STREAM_ENC_COUNT], bytes[STREAM_ENC_COUNT], records[STREAM_ENC_COUNT];
	uint64_t img_chunks[STREAM_NIMAGES], img_bytes[STREAM_NIMAGES];
	int last_enc, last_img, last_src_img;
	uint64_t last_idx, last_src_idx;
	bool base_warned;
	int err;                          /* our own error from a callback */
	char msg[512];
};

static int on_header(void *arg, const struct stream_header *h)
{
	struct sctx *s = arg;

	s->h = *h;
	s->have_header = true;
	for (int i = 0; i < STREAM_NIMAGES; i++) {
		uint64_t n = stream_nchunks(h->image[i].size, h->chunk_size);
		s->have[i] = calloc(n / 64 + 1, sizeof(uint64_t));
		if (!s->have[i])
			return HO_ENOMEM;
		s->spill_base[i] = i ? s->spill_base[i - 1] + h->image[i - 1].size : 0;
	}
	if (s->in) {
		for (int i = 0; i < STREAM_NIMAGES; i++) {
			const struct overlay_identity *id = overlay_base_identity(s->in->ov, i);
			if (id->size != h->image[i].base.size || id->zero != h->image[i].base.zero ||
			    memcmp(id->digest, h->image[i].base.digest, 32) != 0) {
				snprintf(s->msg, sizeof(s->msg), "stream was made against another base of '%s' "
					 "than overlay '%s' has", overlay_image_name(i), s->in->dir);
				return s->err = HO_EBASE;
			}
		}
	}
	return 0;
}

/* len base bytes of img at byte offset off (a referenced chunk, the base under an XOR, or a
 * delta's dictionary). */
static int on_read_base(void *arg, int img, uint64_t off, uint8_t *buf, uint32_t len)
{
	struct sctx *s = arg;
	int err;

	if (!s->in) {
		snprintf(s->msg, sizeof(s->msg), "stream refers to base bytes of '%s': give --overlay DIR "
			 "of an overlay on the same bases", overlay_image_name(img));
		return s->err = HO_EBASE;
	}
	err = overlay_read_base(s->in->ov, img, buf, len, off);
	return err < 0 ? err : 0;
}

static int on_read_sent(void *arg, int img, uint64_t idx, uint8_t *buf, uint32_t len)
{
	struct sctx *s = arg;
	ssize_t n;

	if (s->have[img][idx / 64] >> (idx % 64) & 1) {
		/* zero chunks were not written: past the end of the sparse file they read short */
		n = ho_pread_full(s->spill, buf, len, s->spill_base[img] + idx * s->h.chunk_size);
		if (n < 0)
			return (int)n;
		memset(buf + n, 0, len - (size_t)n);
		return 0;
	}
	if (s->in && s->in->chunk_size == s->h.chunk_size)
		return inspect_read(s->in, img, buf, len, idx * s->h.chunk_size);
	snprintf(s->msg, sizeof(s->msg), "stream refers to chunk %llu of '%s' held by the receiver: "
		 "give --overlay DIR of the receiving overlay", (unsigned long long)idx,
		 overlay_image_name(img));
	return s->err = HO_ESTATE;
}

static int on_chunk(void *arg, const struct stream_chunk *c)
{
	struct sctx *s = arg;
	bool ref = c->enc == STREAM_ENC_BASE_REF || c->enc == STREAM_ENC_SENT_REF;
	int enc = (int)c->enc, err;

	if (enc < 0 || enc >= STREAM_ENC_COUNT)
		return HO_EFORMAT;
	/* a new record unless it continues the previous run (the encoder merges those) */
	if (enc != s->last_enc || c->image != s->last_img || c->idx != s->last_idx + 1 ||
	    (ref && (c->src_image != s->last_src_img || c->src_idx != s->last_src_idx + 1)))
		s->records[c->enc]++;
	s->last_enc = enc;
	s->last_img = c->image;
	s->last_idx = c->idx;
	s->last_src_img = c->src_image;
	s->last_src_idx = c->src_idx;
	s->chunks[c->enc]++;
	s->bytes[c->enc] += c->len;
	s->img_chunks[c->image]++;
	s->img_bytes[c->image] += c->len;
	if (c->data && !ho_is_zero(c->data, c->len)) {
		err = ho_pwrite_full(s->spill, c->data, c->len,
				     s->spill_base[c->image] + c->idx * s->h.chunk_size);
		if (err < 0)
			return err;
	}
	s->have[c->image][c->idx / 64] |= 1ull << (c->idx % 64);
	return 0;
}

static int on_frame(void *arg, uint64_t seq)
{
	struct sctx *s = arg;
	(void)seq;
	s->last_enc = -1;   /* records never span frames */
	return 0;
}

static void report(struct sctx *s, const struct stream_dec_pos *pos, uint64_t wire, bool done,
		   const char *why, enum inspect_format fmt, FILE *out)
{
	const struct stream_header *h = &s->h;
	uint64_t frames = pos->frames + (done ? 1 : 0), mac = h->authenticated ? STREAM_MAC_LEN : 0;
	uint64_t fixed = STREAM_HEADER_LEN + frames * (STREAM_FRAME_HDR_LEN + mac) +
			 (done ? STREAM_END_LEN : 0);
	uint64_t payload = wire > fixed ? wire - fixed : 0, rec_hdr = pos->records * STREAM_REC_HDR_LEN;
	uint64_t pl[STREAM_ENC_COUNT] = { 0 };
	char id[33], sender[33], dg[65], a[32], b[32];

	for (int e = 0; e < STREAM_ENC_COUNT; e++)
		pl[e] = e == STREAM_ENC_RAW || e == STREAM_ENC_XOR_BASE ? s->bytes[e]
			: e == STREAM_ENC_BASE_REF || e == STREAM_ENC_SENT_REF ? s->records[e] * STREAM_REF_LEN
			: 0;
	if (s->chunks[STREAM_ENC_DELTA_BASE]) {
		uint64_t known = rec_hdr;
		for (int e = 0; e < STREAM_ENC_COUNT; e++)
			known += pl[e];
		pl[STREAM_ENC_DELTA_BASE] = pos->bytes > known ? pos->bytes - known : 0;
	}
	ho_hex(h->id, 16, id);
	ho_hex(h->sender, 16, sender);

	if (fmt == INSPECT_JSON) {
		fputs("{\"file\":", out);
		inspect_json_str(out, s->path);
		fprintf(out, ",\"verified\":%s", done ? "true" : "false");
		if (why) {
			fputs(",\"error\":", out);
			inspect_json_str(out, why);
		}
		fprintf(out, ",\"version\":%u,\"authenticated\":%s,\"id\":\"%s\",\"sender\":\"%s\","
			"\"since\":%u,\"until\":%u,\"chunk_size\":%u,\"frame_max\":%u,\"mode\":",
			h->version, h->authenticated ? "true" : "false", id, sender, h->since, h->until,
			h->chunk_size, h->frame_max);
		inspect_json_str(out, h->mode);
		fputs(",\"images\":[", out);
		for (int i = 0; i < STREAM_NIMAGES; i++) {
			ho_hex(h->image[i].base.digest, 32, dg);
			fprintf(out, "%s{\"image\":\"%s\",\"size\":%llu,\"base_size\":%llu,\"base_zero\":%s,"
				"\"base_sha256\":\"%s\",\"chunks\":%llu,\"bytes\":%llu}", i ? "," : "",
				overlay_image_name(i), (unsigned long long)h->image[i].size,
				(unsigned long long)h->image[i].base.size,
				h->image[i].base.zero ? "true" : "false", dg,
				(unsigned long long)s->img_chunks[i], (unsigned long long)s->img_bytes[i]);
		}
		fputs("],\"encodings\":{", out);
		for (int e = 0; e < STREAM_ENC_COUNT; e++)
			fprintf(out, "%s\"%s\":{\"records\":%llu,\"chunks\":%llu,\"bytes\":%llu,"
				"\"payload\":%llu}", e ? "," : "", stream_encoding_name(e),
				(unsigned long long)s->records[e], (unsigned long long)s->chunks[e],
				(unsigned long long)s->bytes[e], (unsigned long long)pl[e]);
		fprintf(out, "},\"wire\":{\"total\":%llu,\"header\":%d,\"frame_headers\":%llu,\"macs\":%llu,"
			"\"end\":%d,\"frame_payloads\":%llu},\"frames\":%llu,\"records\":%llu,"
			"\"decoded_payload\":%llu,\"record_headers\":%llu}\n", (unsigned long long)wire,
			STREAM_HEADER_LEN, (unsigned long long)(frames * STREAM_FRAME_HDR_LEN),
			(unsigned long long)(frames * mac), done ? STREAM_END_LEN : 0,
			(unsigned long long)payload, (unsigned long long)pos->frames,
			(unsigned long long)pos->records, (unsigned long long)pos->bytes,
			(unsigned long long)rec_hdr);
		return;
	}

	if (done)
		fprintf(out, "stream '%s': verified (checksums, sequence, end digest%s)\n", s->path,
			h->authenticated ? ", MACs" : "; not authenticated");
	else
		fprintf(out, "stream '%s': %s\n", s->path, why ? "REJECTED" : "incomplete");
	if (why)
		fprintf(out, "  rejected: %s\n", why);
	fprintf(out, "  version %u, %s, mode '%s', chunk size %u, frame limit %s\n", h->version,
		h->authenticated ? "authenticated" : "unauthenticated", h->mode, h->chunk_size,
		ho_fmt_bytes(h->frame_max, a, sizeof(a)));
	fprintf(out, "  id %s, sender %s\n", id, sender);
	fprintf(out, "  generations %u..%u (changes after %u up to %u)\n", h->since + 1, h->until,
		h->since, h->until);
	for (int i = 0; i < STREAM_NIMAGES; i++) {
		ho_hex(h->image[i].base.digest, 8, dg);
		fprintf(out, "  %-6s  %s, base %s, %llu chunks (%s) in the stream\n",
			overlay_image_name(i), ho_fmt_bytes(h->image[i].size, a, sizeof(a)),
			h->image[i].base.zero ? "all zero" : dg, (unsigned long long)s->img_chunks[i],
			ho_fmt_bytes(s->img_bytes[i], b, sizeof(b)));
	}
	fprintf(out, "\n  %-10s  %8s  %10s  %12s  %12s\n", "encoding", "records", "chunks", "chunk bytes",
		"payload");
	for (int e = 0; e < STREAM_ENC_COUNT; e++) {
		char c[32];
		fprintf(out, "  %-10s  %8llu  %10llu  %12s  %12s\n", stream_encoding_name(e),
			(unsigned long long)s->records[e], (unsigned long long)s->chunks[e],
			ho_fmt_bytes(s->bytes[e], a, sizeof(a)), ho_fmt_bytes(pl[e], c, sizeof(c)));
	}
	fprintf(out, "\n  where the bytes go (%s on the wire)\n", ho_fmt_bytes(wire, a, sizeof(a)));
	fprintf(out, "  %-28s  %12s\n", "header", ho_fmt_bytes(STREAM_HEADER_LEN, a, sizeof(a)));
	fprintf(out, "  %-28s  %12s  (%llu data frames%s)\n", "frame headers",
		ho_fmt_bytes(frames * STREAM_FRAME_HDR_LEN, a, sizeof(a)),
		(unsigned long long)pos->frames, done ? " + end" : "");
	if (mac)
		fprintf(out, "  %-28s  %12s\n", "frame MACs", ho_fmt_bytes(frames * mac, a, sizeof(a)));
	if (done)
		fprintf(out, "  %-28s  %12s\n", "end record", ho_fmt_bytes(STREAM_END_LEN, a, sizeof(a)));
	fprintf(out, "  %-28s  %12s", "frame payloads", ho_fmt_bytes(payload, a, sizeof(a)));
	if (pos->bytes)
		fprintf(out, "  (%s decoded, ratio %.3f)", ho_fmt_bytes(pos->bytes, b, sizeof(b)),
			(double)payload / (double)pos->bytes);
	fprintf(out, "\n  %-28s  %12s  (%llu records)\n", "  of which record headers",
		ho_fmt_bytes(rec_hdr, a, sizeof(a)), (unsigned long long)pos->records);
	for (int e = 0; e < STREAM_ENC_COUNT; e++) {
		char label[40];
		if (!pl[e])
			continue;
		snprintf(label, sizeof(label), "  of which %s payloads", stream_encoding_name(e));
		fprintf(out, "  %-28s  %12s\n", label, ho_fmt_bytes(pl[e], a, sizeof(a)));
	}
	(void)b;
}

int inspect_stream(const char *path, const struct inspect_stream_opts *o, FILE *out)
{
	static const struct stream_dec_ops ops = {
		.header = on_header, .read_base = on_read_base, .read_sent = on_read_sent,
		.chunk = on_chunk, .frame = on_frame,
	};
	struct sctx s = { .path = path, .spill = -1, .last_enc = -1 };
	struct stream_dec *d = NULL;
	struct stream_dec_pos pos;
	uint8_t *buf = malloc(FEED);
	uint64_t wire = 0;
	const char *tmpdir = getenv("TMPDIR");
	int fd = -1, err;

	if (!buf)
		return HO_ENOMEM;
	if (o->overlay_dir && (err = inspect_open(o->overlay_dir, 0, &s.in)) < 0)
		goto out;
	fd = strcmp(path, "-") == 0 ? STDIN_FILENO : open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		err = ho_from_errno(errno);
		ho_err("cannot open stream '%s': %s", path, ho_strerror(err));
		goto out;
	}
	s.spill = open(tmpdir && *tmpdir ? tmpdir : "/tmp", O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
	if (s.spill < 0) {
		err = ho_from_errno(errno);
		ho_err("cannot create a temporary file in '%s': %s", tmpdir && *tmpdir ? tmpdir : "/tmp",
		       strerror(errno));
		goto out;
	}
	if ((err = stream_dec_new(o->key, o->key_len, &ops, &s, &d)) < 0)
		goto out;
	stream_dec_set_quiet(d, true);
	for (;;) {
		ssize_t n = ho_read_full(fd, buf, FEED);
		size_t len;
		if (n < 0) {
			err = (int)n;
			ho_err("cannot read stream '%s': %s", path, ho_strerror(err));
			goto out;
		}
		if (n == 0) {
			err = stream_dec_finish(d);
			break;
		}
		len = (size_t)n;
		err = stream_dec_feed(d, buf, &len);
		wire += len;
		if (err)
			break;
	}
	stream_dec_get_pos(d, &pos);
	if (err) {
		const char *why = s.err && s.msg[0] ? s.msg : stream_dec_errmsg(d);
		ho_err("cannot verify stream '%s': %s", path, why && *why ? why : ho_strerror(err));
		if (s.have_header)
			report(&s, &pos, wire, false, why, o->fmt, out);
		if (s.err)
			err = s.err;
		goto out;
	}
	report(&s, &pos, wire, true, NULL, o->fmt, out);
	err = ferror(out) ? HO_EIO : 0;
out:
	stream_dec_free(d);
	if (fd > STDIN_FILENO)
		close(fd);
	if (s.spill >= 0)
		close(s.spill);
	for (int i = 0; i < STREAM_NIMAGES; i++)
		free(s.have[i]);
	inspect_close(s.in);
	free(buf);
	return err;
}
