/*
 * export.c — turning what changed in an overlay into a handoff stream: close a generation (on a
 * live mount through its daemon, so the VM keeps running; offline under the overlay lock), then
 * walk the tracker for chunks with since < gen <= until, read their bytes from the overlay and
 * feed them to the stream encoder.
 *
 * A stream is deterministic: its id derives from the sender id (a random id kept in
 * OVERLAY_DIR/stream-sender-id, created once), the generation range, the chunk size, the mode and
 * the frame size and the base identities, and the encoder is deterministic, so an export of the
 * same range regenerates the same bytes — what TCP resume relies on (transport.c).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <pthread.h>
#include <time.h>
#include <unistd.h>
#include "common/common.h"
#include "common/ctl.h"
#include "overlay/overlay.h"
#include "tracker/tracker.h"
#include "pipeline/codec.h"
#include "pipeline/dedup.h"
#include "pipeline/delta.h"
#include "pipeline/mode.h"
#include "pipeline/pipeline.h"
#include "pipeline/stream.h"
#include "pipeline/export_int.h"

#define SENDER_ID_NAME "stream-sender-id"

int pipeline_exit_code(int err)
{
	switch (err) {
	case 0:
		return PIPELINE_EXIT_OK;
	case HO_ETRUNC: case HO_ECHECKSUM: case HO_ESEQ: case HO_ETRAILING: case HO_EAUTH:
	case HO_EDIGEST: case HO_EFORMAT: case HO_EVERSION: case HO_EPROTO:
		return PIPELINE_EXIT_VERIFY;
	case HO_EBASE:
		return PIPELINE_EXIT_BASE;
	case HO_ESTALE:
		return PIPELINE_EXIT_STALE;
	case HO_EIO: case HO_ENOSPC: case HO_ECORRUPT: case HO_EDB:
		return PIPELINE_EXIT_IO;
	case HO_ECONN: case HO_ETIMEDOUT:
		return PIPELINE_EXIT_CONN;
	default:
		return PIPELINE_EXIT_USAGE;
	}
}

int pipeline_load_key(const char *path, uint8_t **key, size_t *len)
{
	char *buf;
	size_t n;
	int rc = ho_read_file(path, &buf, &n, 4096);

	if (rc) {
		ho_err("cannot read key file '%s': %s", path, rc == HO_ELIMIT ? "longer than 4096 bytes" : ho_strerror(rc));
		return rc == HO_ELIMIT ? HO_EINVAL : rc;
	}
	if (n < 16) {
		ho_err("key file '%s' is too short (%zu bytes, at least 16 needed)", path, n);
		free(buf);
		return HO_EINVAL;
	}
	*key = (uint8_t *)buf;
	*len = n;
	return 0;
}

/* ---- which overlay -------------------------------------------------------------------------- */

static bool is_overlay(const char *dir)
{
	char *meta = ho_path_join(dir, "overlay.meta");
	bool yes = meta && access(meta, F_OK) == 0;
	free(meta);
	return yes;
}

/* Undo mountinfo's octal escapes (\040 for a space) in place. */
static void unescape(char *s)
{
	char *o = s;
	for (; *s; s++) {
		if (s[0] == '\\' && s[1] >= '0' && s[1] <= '3' && s[2] >= '0' && s[2] <= '7' && s[3] >= '0' && s[3] <= '7') {
			*o++ = (char)((s[1] - '0') << 6 | (s[2] - '0') << 3 | (s[3] - '0'));
			s += 3;
		} else {
			*o++ = *s;
		}
	}
	*o = 0;
}

int export_resolve_dir(const char *arg, char **dir)
{
	char real[PATH_MAX], line[3 * PATH_MAX];
	FILE *f;

	*dir = NULL;
	if (!realpath(arg, real)) {
		ho_err("cannot open '%s': %s", arg, strerror(errno));
		return ho_from_errno(errno);
	}
	if (is_overlay(real))
		return (*dir = strdup(real)) ? 0 : HO_ENOMEM;
	/* a handoff-mount mountpoint: its fsname is "handoff:OVERLAY_DIR" */
	f = fopen("/proc/self/mountinfo", "re");
	while (f && fgets(line, sizeof(line), f)) {
		/* ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPEROPTS */
		char *sep = strstr(line, " - "), *save = NULL, *mp = NULL, *src, *tok;
		int i = 0;
		if (!sep)
			continue;
		*sep = 0;
		for (tok = strtok_r(line, " ", &save); tok && i < 4; tok = strtok_r(NULL, " ", &save))
			i++;
		mp = tok;
		save = NULL;
		if (!mp || !strtok_r(sep + 3, " \n", &save) || !(src = strtok_r(NULL, " \n", &save)))
			continue;
		unescape(mp);
		unescape(src);
		if (strcmp(mp, real) == 0 && strncmp(src, "handoff:", 8) == 0 && is_overlay(src + 8)) {
			fclose(f);
			return (*dir = strdup(src + 8)) ? 0 : HO_ENOMEM;
		}
	}
	if (f)
		fclose(f);
	ho_err("'%s' is neither a handoff overlay directory nor a handoff-mount mountpoint", arg);
	return HO_ENOENT;
}

/* ---- checkpoint ------------------------------------------------------------------------------- */

static int sync_overlay(void *arg) { return overlay_sync(arg); }

static int fsync_path(const char *dir, const char *name)
{
	char *p = ho_path_join(dir, name);
	int fd, rc = 0;

	if (!p)
		return HO_ENOMEM;
	fd = open(p, O_RDONLY | O_CLOEXEC);
	if (fd < 0 || fsync(fd) < 0) {
		rc = ho_from_errno(errno);
		ho_err("cannot flush '%s': %s", p, strerror(errno));
	}
	if (fd >= 0)
		close(fd);
	free(p);
	return rc;
}

int export_checkpoint(const char *dir, uint32_t *closed)
{
	char mp[PATH_MAX], reply[HO_CTL_LINE];
	int pid = 0, rc;

	rc = overlay_lock_holder(dir, &pid, mp, sizeof(mp));
	if (rc == 0) {
		/* a live mount: flush what the guest wrote, then let the daemon close the generation */
		if (mp[0] && ((rc = fsync_path(mp, "disk")) || (rc = fsync_path(mp, "memory"))))
			return rc;
		rc = ho_ctl_call(dir, "checkpoint", -1, 60000, reply, sizeof(reply));
		if (rc == HO_ENOENT) {
			ho_err("overlay '%s' is locked by process %d, which does not answer checkpoint requests", dir, pid);
			return HO_EBUSY;
		}
		if (rc) {
			ho_err("checkpoint of '%s' failed: %s", dir, ho_strerror(rc));
			return rc;
		}
		char *end;
		unsigned long g = strtoul(reply, &end, 10);
		if (end == reply || g > UINT32_MAX) {
			ho_err("checkpoint of '%s': unexpected reply '%s'", dir, reply);
			return HO_EPROTO;
		}
		*closed = (uint32_t)g;
		return 0;
	}
	if (rc != HO_ENOENT)
		return rc;
	/* offline */
	struct overlay *ov;
	struct tracker *t;
	uint64_t n[OVERLAY_NIMAGES];
	if ((rc = overlay_open(dir, NULL, 0, OVERLAY_LOCK, &ov)))
		return rc;
	for (int i = 0; i < OVERLAY_NIMAGES; i++)
		n[i] = overlay_nchunks(ov, i);
	if ((rc = tracker_open(dir, OVERLAY_NIMAGES, n, 0, &t))) {
		overlay_close(ov);
		return rc;
	}
	rc = tracker_checkpoint(t, sync_overlay, ov, closed);
	if (rc)
		ho_err("checkpoint of '%s' failed: %s", dir, ho_strerror(rc));
	tracker_close(t);
	overlay_close(ov);
	return rc;
}

/* ---- sender id and stream id ------------------------------------------------------------------ */

int export_sender_id(const char *dir, uint8_t id[16])
{
	char *path = ho_path_join(dir, SENDER_ID_NAME), *buf = NULL, tmp[PATH_MAX], hex[33];
	int rc;

	if (!path)
		return HO_ENOMEM;
	rc = ho_read_file(path, &buf, NULL, 256);
	if (rc == HO_ENOENT) {
		/* create it once: write a temp file, link it into place (the first linker wins) */
		uint8_t r[16];
		int fd;
		if ((rc = ho_random(r, sizeof(r))))
			goto out;
		ho_hex(r, 16, hex);
		hex[32] = '\n';
		snprintf(tmp, sizeof(tmp), "%s.%d", path, (int)getpid());
		fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
		if (fd < 0 || ho_write_full(fd, hex, 33) || fsync(fd) < 0) {
			rc = HO_EIO;
			ho_err("cannot create '%s': %s", path, strerror(errno));
			if (fd >= 0)
				close(fd);
			unlink(tmp);
			goto out;
		}
		close(fd);
		if (link(tmp, path) < 0 && errno != EEXIST) {
			rc = ho_from_errno(errno);
			ho_err("cannot create '%s': %s", path, strerror(errno));
			unlink(tmp);
			goto out;
		}
		unlink(tmp);
		ho_fsync_dir(path);
		rc = ho_read_file(path, &buf, NULL, 256);
	}
	if (rc)
		goto out;
	if (strlen(buf) < 32 || (buf[32] = 0, ho_unhex(buf, id, 16))) {
		ho_err("'%s' is corrupt", path);
		rc = HO_ECORRUPT;
	}
out:
	free(buf);
	free(path);
	return rc;
}

static void stream_id(struct stream_header *h)
{
	static const char label[] = "handoff-stream-id v1";
	struct ho_sha256 *s = ho_sha256_new();
	uint8_t le[8], d[32];

	if (!s) {
		ho_random(h->id, sizeof(h->id));
		return;
	}
	ho_sha256_update(s, label, sizeof(label) - 1);
	ho_sha256_update(s, h->sender, 16);
	ho_put_le32(le, h->since);
	ho_put_le32(le + 4, h->until);
	ho_sha256_update(s, le, 8);
	ho_put_le32(le, h->chunk_size);
	ho_put_le32(le + 4, h->frame_max);
	ho_sha256_update(s, le, 8);
	ho_sha256_update(s, h->mode, STREAM_MODE_LEN);
	for (int i = 0; i < STREAM_NIMAGES; i++) {
		ho_put_le64(le, h->image[i].size);
		ho_sha256_update(s, le, 8);
		ho_sha256_update(s, h->image[i].base.digest, 32);
	}
	ho_sha256_final(s, d);
	ho_sha256_free(s);
	memcpy(h->id, d, sizeof(h->id));
}

/* ---- modes ------------------------------------------------------------------------------------ */

/* "raw" (no codec, zero chunks only), "CODEC" or "CODEC-LEVEL" (frame codec; chunks equal to
 * their base travel as base references). */
int export_parse_mode(const char *name, struct export_mode *m)
{
	char buf[STREAM_MODE_LEN], *dash;
	enum codec c;

	memset(m, 0, sizeof(*m));
	if (!name || !*name)
		name = "raw";
	if (strlen(name) >= STREAM_MODE_LEN)
		goto bad;
	strcpy(m->name, name);
	if (strcmp(name, "raw") && (m->full = mode_find(name))) {
		m->codec = (int)m->full->frame_codec;
		m->level = m->full->frame_level;
		return 0;
	}
	if (!strcmp(name, "raw") || !strcmp(name, "none")) {
		m->codec = STREAM_CODEC_NONE;
		return 0;
	}
	strcpy(buf, name);
	dash = strrchr(buf, '-');
	if (dash)
		*dash = 0;
	if (codec_parse(buf, &c) != 0)
		goto bad;
	m->codec = (int)c;
	m->level = codec_default_level(c);
	if (dash) {
		char *end;
		long l = strtol(dash + 1, &end, 10);
		if (*end || end == dash + 1 || !codec_level_valid(c, (int)l))
			goto bad;
		m->level = (int)l;
	}
	m->base_refs = true;
	return 0;
bad:
	ho_err("unknown mode '%s' (see --list-modes, or raw, lz4, lz4hc, zstd, lzma, optionally with -LEVEL)", name);
	return HO_EINVAL;
}

int export_list_modes(void)
{
	return mode_list(stdout);
}

/* ---- the export walk -------------------------------------------------------------------------- */

#define RUN_MAX (1u << 20)
#define WALK_MAX_THREADS 64

struct walk {
	struct overlay *ov;
	struct stream_enc *enc;
	struct export_mode mode;
	uint32_t cs;
	int img;
	uint64_t first, count;     /* the run being collected */
	uint8_t *buf, *base;
	struct export_result *res;
	int err;
	/* full modes: the chunk encoder, one per thread; a run's records are encoded in parallel
	 * slices into per-chunk slots, then fed to the stream in order */
	struct chunk_enc *ce;              /* = ces[0] */
	struct chunk_enc *ces[WALK_MAX_THREADS];
	unsigned nthreads;
	struct delta_base dbase;
	struct sentset *sent;
	struct baseidx *bidx[OVERLAY_NIMAGES];
	uint8_t *rec;                      /* RUN_MAX / cs slots of rec_cap bytes */
	size_t rec_cap;
	struct chunk_rec *recs;
	uint64_t seq;                      /* chunks (records) so far: seq of the last one */
};

struct slice {
	struct walk *w;
	unsigned t;                        /* thread index: its chunk encoder */
	uint64_t from, to;                 /* chunk positions in the run */
	uint64_t seq0;                     /* seq of position 0 */
	int rc;
};

static int base_read(void *arg, int img, void *buf, size_t len, uint64_t off)
{
	return overlay_read_base(arg, img, buf, len, off);
}

/* Set up the chunk encoder of a mode.h mode: base reader, base indexes (cached), a sent set for
 * this stream (references to chunks sent earlier in it). */
static int walk_full_init(struct walk *w)
{
	const struct mode *m = w->mode.full;
	int rc;

	w->dbase.chunk_size = w->cs;
	w->dbase.read = base_read;
	w->dbase.arg = w->ov;
	for (int i = 0; i < OVERLAY_NIMAGES; i++) {
		w->dbase.size[i] = overlay_base_identity(w->ov, i)->size;
		if ((m->dedup & MODE_DEDUP_BASE) || (m->delta == MODE_DELTA_DICT && m->far)) {
			rc = baseidx_open(NULL, overlay_base_identity(w->ov, i), overlay_base_fd(w->ov, i), w->cs,
					  m->far ? 0 : BASEIDX_NO_ANCHORS, &w->bidx[i], NULL);
			if (rc) {
				ho_warn("no base index for '%s' (%s): exporting without it", overlay_image_name(i),
					ho_strerror(rc));
				w->bidx[i] = NULL;
			}
			w->dbase.index[i] = w->bidx[i];
		}
	}
	if ((m->dedup & MODE_DEDUP_SENT) && !(w->sent = sentset_new()))
		return HO_ENOMEM;
	w->rec_cap = chunk_payload_bound(w->cs);
	w->rec = malloc((RUN_MAX / w->cs) * w->rec_cap);
	w->recs = calloc(RUN_MAX / w->cs, sizeof(*w->recs));
	if (!w->rec || !w->recs)
		return HO_ENOMEM;
	w->nthreads = HO_MAX(1u, HO_MIN(w->nthreads, (unsigned)WALK_MAX_THREADS));
	for (unsigned i = 0; i < w->nthreads; i++)
		if ((rc = chunk_enc_new(m, &w->dbase, w->sent, &w->ces[i])))
			return rc;
	w->ce = w->ces[0];
	return 0;
}

static void walk_full_free(struct walk *w)
{
	for (unsigned i = 0; i < WALK_MAX_THREADS; i++)
		chunk_enc_free(w->ces[i]);
	free(w->recs);
	sentset_free(w->sent);
	for (int i = 0; i < OVERLAY_NIMAGES; i++)
		baseidx_free(w->bidx[i]);
	free(w->rec);
}

static void *slice_main(void *arg)
{
	struct slice *sl = arg;
	struct walk *w = sl->w;
	uint64_t size = overlay_image_size(w->ov, w->img);

	sl->rc = 0;
	for (uint64_t i = sl->from; i < sl->to && !sl->rc; i++) {
		uint64_t idx = w->first + i;
		sl->rc = chunk_encode(w->ces[sl->t], w->img, idx, w->buf + i * w->cs,
				      stream_chunk_len(size, w->cs, idx), sl->seq0 + i, w->rec + i * w->rec_cap,
				      w->rec_cap, &w->recs[i]);
	}
	return NULL;
}

/* Encode the run's chunks with the chunk encoder: first every chunk joins the sent set in stream
 * order (so a chunk can reference any earlier one, and the result does not depend on the number
 * of threads), then slices are encoded in parallel. */
static int encode_run(struct walk *w, uint64_t size)
{
	struct slice sl[WALK_MAX_THREADS];
	pthread_t th[WALK_MAX_THREADS];
	bool started[WALK_MAX_THREADS] = { false };
	uint64_t seq0 = w->seq + 1, n = w->count;
	unsigned nt = (unsigned)HO_MIN((uint64_t)w->nthreads, (n + 15) / 16);
	int rc = 0;

	if (w->sent) {
		for (uint64_t i = 0; i < n; i++) {
			uint8_t fp[16];
			uint64_t idx = w->first + i;
			ho_xxh128(w->buf + i * w->cs, stream_chunk_len(size, w->cs, idx), fp);
			if ((rc = sentset_add(w->sent, fp, w->img, idx, seq0 + i)))
				return rc;
		}
	}
	w->seq += n;
	nt = HO_MAX(nt, 1u);
	for (unsigned t = 0; t < nt; t++) {
		sl[t] = (struct slice){ .w = w, .t = t, .from = n * t / nt, .to = n * (t + 1) / nt, .seq0 = seq0 };
		if (t && pthread_create(&th[t], NULL, slice_main, &sl[t]) == 0)
			started[t] = true;
	}
	slice_main(&sl[0]);
	for (unsigned t = 1; t < nt; t++) {
		if (started[t])
			pthread_join(th[t], NULL);
		else
			slice_main(&sl[t]);      /* no thread: do it here */
		if (!rc)
			rc = sl[t].rc;
	}
	return sl[0].rc ? sl[0].rc : rc;
}

/* A chunk's record from the chunk encoder, as a stream chunk. */
static void full_chunk(struct walk *w, uint64_t i, struct stream_chunk *c)
{
	const struct chunk_rec *r = &w->recs[i];

	switch (r->kind) {
	case CHUNK_ZERO:    c->enc = STREAM_ENC_ZERO; break;
	case CHUNK_BASEREF: c->enc = STREAM_ENC_BASE_REF; c->src_image = r->ref_img; c->src_idx = r->ref_idx; break;
	case CHUNK_SENTREF: c->enc = STREAM_ENC_SENT_REF; c->src_image = r->ref_img; c->src_idx = r->ref_idx; break;
	case CHUNK_XOR:     c->enc = STREAM_ENC_XOR_BASE; break;
	case CHUNK_DELTA:   c->enc = STREAM_ENC_DELTA_BASE; break;
	default:            c->enc = STREAM_ENC_RAW; break;
	}
	c->payload = w->rec + i * w->rec_cap;
	c->payload_len = (uint32_t)r->len;
}

static int flush_run(struct walk *w)
{
	uint64_t size, off;
	size_t len;
	int rc;

	if (!w->count)
		return 0;
	size = overlay_image_size(w->ov, w->img);
	off = w->first * w->cs;
	len = (size_t)HO_MIN(w->count * w->cs, size - off);
	if ((rc = overlay_read(w->ov, w->img, w->buf, len, off))) {
		ho_err("cannot read chunks %" PRIu64 "..%" PRIu64 " of '%s' from the overlay: %s", w->first,
		       w->first + w->count - 1, overlay_image_name(w->img), ho_strerror(rc));
		return rc;
	}
	if (w->mode.base_refs && (rc = overlay_read_base(w->ov, w->img, w->base, len, off)))
		return rc;
	if (w->ce && (rc = encode_run(w, size))) {
		ho_err("cannot encode chunks %" PRIu64 "..%" PRIu64 " of '%s': %s", w->first,
		       w->first + w->count - 1, overlay_image_name(w->img), ho_strerror(rc));
		return rc;
	}
	for (uint64_t i = 0; i < w->count; i++) {
		struct stream_chunk c = { .image = w->img, .idx = w->first + i };
		c.len = stream_chunk_len(size, w->cs, c.idx);
		c.data = w->buf + i * w->cs;
		if (w->ce)
			full_chunk(w, i, &c);
		else if (ho_is_zero(c.data, c.len))
			c.enc = STREAM_ENC_ZERO;
		else if (w->mode.base_refs && memcmp(c.data, w->base + i * w->cs, c.len) == 0) {
			c.enc = STREAM_ENC_BASE_REF;
			c.src_image = w->img;
			c.src_idx = c.idx;
		} else
			c.enc = STREAM_ENC_RAW;
		if ((rc = stream_enc_chunk(w->enc, &c)))
			return rc;
		w->res->chunks[w->img]++;
		w->res->input_bytes += c.len;
	}
	w->count = 0;
	return 0;
}

static int walk_cb(const struct tracker_chunk *c, void *arg)
{
	struct walk *w = arg;
	int rc;

	if (c->image < 0 || c->image >= OVERLAY_NIMAGES || c->idx >= overlay_nchunks(w->ov, c->image))
		return w->err = HO_ECORRUPT;
	if (w->count && (c->image != w->img || c->idx != w->first + w->count || (w->count + 1) * w->cs > RUN_MAX)) {
		if ((rc = flush_run(w)))
			return w->err = rc;
	}
	if (!w->count) {
		w->img = c->image;
		w->first = c->idx;
	}
	w->count++;
	return 0;
}

int export_run(const char *dir, uint32_t until, const struct export_opts *o, stream_emit_fn emit, void *arg,
	       struct export_result *res)
{
	struct overlay *ov = NULL;
	struct tracker *t = NULL;
	struct stream_header h;
	struct walk w = { 0 };
	uint64_t n[OVERLAY_NIMAGES];
	int rc;

	memset(res, 0, sizeof(*res));
	if ((rc = export_parse_mode(o->mode, &w.mode)))
		return rc;
	if (o->since > until) {
		ho_err("--since %u is beyond the last closed generation %u", o->since, until);
		return HO_EINVAL;
	}
	if ((rc = overlay_open(dir, NULL, 0, OVERLAY_READONLY, &ov)))
		return rc;
	for (int i = 0; i < OVERLAY_NIMAGES; i++)
		n[i] = overlay_nchunks(ov, i);
	if ((rc = tracker_open(dir, OVERLAY_NIMAGES, n, TRACKER_READONLY, &t)))
		goto out;
	memset(&h, 0, sizeof(h));
	if ((rc = export_sender_id(dir, h.sender)))
		goto out;
	h.since = o->since;
	h.until = until;
	h.chunk_size = overlay_chunk_size(ov);
	h.frame_max = o->frame_size ? o->frame_size : w.mode.full ? w.mode.full->frame_size : STREAM_FRAME_DEFAULT;
	h.frame_max = HO_MAX(h.frame_max, HO_MAX(STREAM_FRAME_MIN, h.chunk_size + STREAM_REC_HDR_LEN));
	h.frame_max = HO_MIN(h.frame_max, STREAM_FRAME_MAX);
	memcpy(h.mode, w.mode.name, sizeof(h.mode));
	for (int i = 0; i < STREAM_NIMAGES; i++) {
		h.image[i].size = overlay_image_size(ov, i);
		h.image[i].base = *overlay_base_identity(ov, i);
	}
	stream_id(&h);
	res->since = h.since;
	res->until = h.until;
	memcpy(res->id, h.id, 16);

	w.ov = ov;
	w.cs = h.chunk_size;
	w.res = res;
	w.buf = malloc(RUN_MAX);
	w.base = malloc(RUN_MAX);
	if (!w.buf || !w.base) {
		rc = HO_ENOMEM;
		goto out;
	}
	w.nthreads = o->threads;
	if (w.mode.full && (rc = walk_full_init(&w)))
		goto out;
	if ((rc = stream_enc_new(&h, o->key, o->key_len, w.mode.codec, w.mode.level, emit, arg, &w.enc)) ||
	    (rc = stream_enc_set_threads(w.enc, o->threads)))
		goto out;
	rc = tracker_foreach(t, -1, o->since, until, walk_cb, &w);
	if (w.err)
		rc = w.err;
	if (!rc)
		rc = flush_run(&w);
	if (!rc) {
		struct stream_end end;
		rc = stream_enc_finish(w.enc, &end);
		res->frames = end.frames;
	}
out:
	stream_enc_free(w.enc);
	walk_full_free(&w);
	free(w.buf);
	free(w.base);
	if (t)
		tracker_close(t);
	overlay_close(ov);
	return rc;
}

/* ---- to a file descriptor --------------------------------------------------------------------- */

void export_throttle(struct export_throttle *th, uint64_t rate, size_t bytes)
{
	if (!rate)
		return;
	if (!th->start_ns)
		th->start_ns = ho_mono_ns();
	th->bytes += bytes;
	uint64_t due = th->start_ns + th->bytes * 1000000000ull / rate, now = ho_mono_ns();
	if (due > now) {
		struct timespec ts = { (time_t)((due - now) / 1000000000ull), (long)((due - now) % 1000000000ull) };
		nanosleep(&ts, NULL);
	}
}

struct fd_sink {
	int fd;
	const struct export_opts *o;
	struct export_result *res;
	struct export_throttle th;
};

static int fd_emit(void *arg, const struct stream_piece *p)
{
	struct fd_sink *s = arg;
	int rc;

	export_throttle(&s->th, s->o->rate_limit, p->len);
	if ((rc = ho_write_full(s->fd, p->buf, p->len))) {
		ho_err("cannot write the stream: %s", rc == HO_ECONN ? "the reader went away" : ho_strerror(rc));
		return rc == HO_ECONN ? HO_EIO : rc;
	}
	s->res->wire_bytes += p->len;
	return 0;
}

int export_to_fd(const char *dir, uint32_t until, const struct export_opts *o, int fd, struct export_result *res)
{
	struct fd_sink s = { .fd = fd, .o = o, .res = res };
	return export_run(dir, until, o, fd_emit, &s, res);
}
