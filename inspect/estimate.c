/*
 * estimate.c — what a stream of every modified chunk would weigh in each of the pipeline's named
 * operating modes (pipeline/mode.h): each chunk goes through the pipeline's own chunk encoder
 * (delta.h: zero, same-offset and any-base references, sent references, XOR, dictionary deltas)
 * in stream order, and the records through the stream encoder itself (stream.h) into a sink that
 * only counts bytes — the steps handoff-export takes, so the figure is the size of the stream an
 * export of every generation would write now (an estimate only in that the exporter may change).
 *
 * Base indexes come from the exporter's cache when one is there (read, never written: inspection
 * stays side-effect free) or are built in memory.
 */
#include <stdlib.h>
#include <string.h>
#include "common/common.h"
#include "inspect/inspect_int.h"
#include "pipeline/codec.h"
#include "pipeline/dedup.h"
#include "pipeline/delta.h"
#include "pipeline/mode.h"
#include "pipeline/stream.h"

static int read_base(void *arg, int img, void *buf, size_t len, uint64_t off)
{
	struct inspect *in = arg;
	int err = overlay_read_base(in->ov, img, buf, len, off);
	return err < 0 ? err : 0;
}

/* The base index of image img: the exporter's cached one if present, else built here. */
static int base_index(struct inspect *in, int img, struct baseidx **out)
{
	const struct overlay_identity *id = overlay_base_identity(in->ov, img);
	char *path = baseidx_cache_path(NULL, id, in->chunk_size);
	int err = HO_ENOENT;

	if (path) {
		int level = ho_log_get_level();
		ho_log_set_level(LOG_CRIT);   /* a missing or stale cache is no news */
		err = baseidx_load(path, id->digest, id->size, in->chunk_size, out);
		ho_log_set_level(level);
		free(path);
	}
	if (err < 0)
		err = baseidx_build(overlay_base_fd(in->ov, img), id->size, in->chunk_size,
				    BASEIDX_NO_CACHE, out);
	if (err < 0)
		ho_err("cannot index the base of '%s': %s", overlay_image_name(img), ho_strerror(err));
	return err;
}

static int count_emit(void *arg, const struct stream_piece *p)
{
	*(uint64_t *)arg += p->len;
	return 0;
}

/* Estimate one mode the way handoff-export runs it (pipeline/export.c): every chunk through the
 * chunk encoder in stream order, each encoded chunk then entered in the sent set, records framed
 * by the stream encoder itself; "raw" sends zero chunks as ZERO and the rest as they are. Only
 * the bytes emitted are kept. */
static int estimate_mode(struct inspect *in, const struct mode *m, struct delta_base *db,
			 struct inspect_mode_estimate *r)
{
	uint32_t cs = in->chunk_size;
	size_t pcap = chunk_payload_bound(cs);
	bool raw = strcmp(m->name, "raw") == 0;
	struct chunk_enc *enc = NULL;
	struct sentset *sent = NULL;
	struct stream_enc *se = NULL;
	struct stream_header h;
	uint8_t *data = malloc(cs), *pl = malloc(pcap);
	uint64_t seq = 0, total = 0;
	int err = HO_ENOMEM;

	memset(r->kinds, 0, sizeof(r->kinds));
	if (!data || !pl)
		goto out;
	memset(&h, 0, sizeof(h));
	h.chunk_size = cs;
	snprintf(h.mode, sizeof(h.mode), "%s", m->name);
	for (int i = 0; i < STREAM_NIMAGES; i++) {
		h.image[i].size = in->img[i].size;
		h.image[i].base = *overlay_base_identity(in->ov, i);
	}
	if (!raw) {
		if ((m->dedup & MODE_DEDUP_SENT) && !(sent = sentset_new()))
			goto out;
		if ((err = chunk_enc_new(m, db, sent, &enc)) < 0)
			goto fail;
	}
	if ((err = stream_enc_new(&h, NULL, 0, raw ? STREAM_CODEC_NONE : (int)m->frame_codec,
				  raw ? 0 : m->frame_level, count_emit, &total, &se)) < 0)
		goto fail;
	for (int i = 0; i < OVERLAY_NIMAGES; i++)
		for (size_t k = 0; k < in->img[i].count; k++) {
			const struct inspect_chunk *c = &in->img[i].chunks[k];
			struct stream_chunk sc = { .image = i, .idx = c->idx, .len = c->len, .data = data };
			struct chunk_rec rec;
			if ((err = overlay_read(in->ov, i, data, c->len, c->idx * cs)) < 0)
				goto fail;
			if (raw) {
				rec.kind = ho_is_zero(data, c->len) ? CHUNK_ZERO : CHUNK_RAW;
			} else {
				if ((err = chunk_encode(enc, i, c->idx, data, c->len, ++seq, pl, pcap, &rec)) < 0)
					goto fail;
				if (rec.has_fp && sent &&
				    (err = sentset_add(sent, rec.fp, i, c->idx, seq)) < 0)
					goto fail;
				sc.payload = pl;
				sc.payload_len = (uint32_t)rec.len;
			}
			switch (rec.kind) {
			case CHUNK_ZERO: sc.enc = STREAM_ENC_ZERO; break;
			case CHUNK_BASEREF: sc.enc = STREAM_ENC_BASE_REF; break;
			case CHUNK_SENTREF: sc.enc = STREAM_ENC_SENT_REF; break;
			case CHUNK_XOR: sc.enc = STREAM_ENC_XOR_BASE; break;
			case CHUNK_DELTA: sc.enc = STREAM_ENC_DELTA_BASE; break;
			default: sc.enc = STREAM_ENC_RAW; break;
			}
			if (rec.kind == CHUNK_BASEREF || rec.kind == CHUNK_SENTREF) {
				sc.src_image = rec.ref_img;
				sc.src_idx = rec.ref_idx;
			}
			if ((int)rec.kind >= 0 && rec.kind < INSPECT_NKINDS)
				r->kinds[rec.kind]++;
			if ((err = stream_enc_chunk(se, &sc)) < 0)
				goto fail;
		}
	if ((err = stream_enc_finish(se, NULL)) < 0)
		goto fail;
	r->bytes = total;
	err = 0;
	goto out;
fail:
	ho_err("cannot estimate mode '%s': %s", m->name, ho_strerror(err));
out:
	stream_enc_free(se);
	chunk_enc_free(enc);
	sentset_free(sent);
	free(data);
	free(pl);
	return err;
}

int inspect_estimate_modes(struct inspect *in, const char *list, struct inspect_mode_estimate *out,
			   int max, int *n)
{
	struct delta_base db;
	struct baseidx *idx[OVERLAY_NIMAGES] = { NULL, NULL };
	char *copy, *tok, *save = NULL;
	bool need_index = false;
	int err = 0;

	*n = 0;
	if (!*list)
		return 0;
	if (!(copy = strdup(list)))
		return HO_ENOMEM;
	for (tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		bool all = strcmp(tok, "all") == 0;
		for (size_t i = 0; i < mode_count(); i++) {
			const struct mode *m = mode_get(i);
			if (!all && strcmp(m->name, tok) != 0)
				continue;
			if (*n == max) {
				err = HO_EINVAL;
				ho_err("cannot estimate more than %d modes", max);
				goto out;
			}
			out[(*n)++].mode = m->name;
			need_index |= (m->dedup & MODE_DEDUP_BASE) || m->far;
		}
		if (!all && (!*n || strcmp(out[*n - 1].mode, tok) != 0)) {
			ho_err("cannot estimate mode '%s': no such mode (see handoff-export --list-modes)",
			       tok);
			err = HO_EINVAL;
			goto out;
		}
	}
	if ((err = inspect_classify(in)) < 0)
		goto out;
	memset(&db, 0, sizeof(db));
	db.chunk_size = in->chunk_size;
	for (int i = 0; i < OVERLAY_NIMAGES; i++)
		db.size[i] = overlay_base_identity(in->ov, i)->size;
	db.read = read_base;
	db.arg = in;
	for (int i = 0; need_index && i < OVERLAY_NIMAGES; i++) {
		if ((err = base_index(in, i, &idx[i])) < 0)
			goto out;
		db.index[i] = idx[i];
	}
	for (int k = 0; k < *n; k++) {
		uint64_t t0 = ho_mono_ns();
		if ((err = estimate_mode(in, mode_find(out[k].mode), &db, &out[k])) < 0)
			goto out;
		ho_info("estimated mode '%s' in %.3f s", out[k].mode, (double)(ho_mono_ns() - t0) / 1e9);
	}
out:
	for (int i = 0; i < OVERLAY_NIMAGES; i++)
		baseidx_free(idx[i]);
	free(copy);
	return err;
}

const char *inspect_kind_name(int kind)
{
	return chunk_kind_name((enum chunk_kind)kind);
}
