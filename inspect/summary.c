/*
 * summary.c — the one-screen answer: per image how much changed, in which generations, when and
 * how fast, how the changed chunks classify against the bases, and what the unique rest would
 * weigh compressed with each codec the pipeline offers (compressed in 1 MiB frames the way the
 * stream's frames are; labelled as an estimate because records, references and headers are left
 * out).
 */
#include <stdlib.h>
#include <string.h>
#include "common/common.h"
#include "inspect/inspect_int.h"
#include "pipeline/codec.h"

#define EST_FRAME (1u << 20)
#define EST_MAX 8
#define RATE_BUCKETS 10

struct estimate {
	enum codec codec;
	int level;
	uint64_t bytes;
};

struct gen_sum {
	uint64_t chunks, bytes, first, last;
};

struct img_sum {
	uint64_t chunks, bytes, writes, first, last;
	uint64_t cls_chunks[INSPECT_NCLASSES], cls_bytes[INSPECT_NCLASSES];
	struct gen_sum *gens;          /* [generation + 1] */
	uint64_t rate_chunks[RATE_BUCKETS], rate_bytes[RATE_BUCKETS];
	uint64_t t0, span;             /* rate window: [t0, t0 + span] by first write */
};

static int parse_estimates(const char *spec, struct estimate *est, int *n)
{
	char *copy, *tok, *save = NULL;
	int err = 0;

	*n = 0;
	if (!spec)
		spec = "lz4,zstd,lzma";
	if (!*spec)
		return 0;
	if (!(copy = strdup(spec)))
		return HO_ENOMEM;
	for (tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		char *colon = strchr(tok, ':');
		enum codec c;
		int level;
		if (colon)
			*colon = 0;
		if (*n == EST_MAX || codec_parse(tok, &c) < 0 || c == CODEC_NONE) {
			ho_err("cannot estimate with '%s': unknown codec (lz4, lz4hc, zstd, lzma)", tok);
			err = HO_EINVAL;
			break;
		}
		level = codec_default_level(c);
		if (colon) {
			char *end;
			long v = strtol(colon + 1, &end, 10);
			if (!colon[1] || *end || !codec_level_valid(c, (int)v)) {
				ho_err("cannot estimate with '%s:%s': invalid level", tok, colon + 1);
				err = HO_EINVAL;
				break;
			}
			level = (int)v;
		}
		est[*n].codec = c;
		est[*n].level = level;
		est[*n].bytes = 0;
		(*n)++;
	}
	free(copy);
	return err;
}

static int compress_frame(struct codec_ctx *ctx, struct estimate *est, int nest, const uint8_t *src,
			  size_t len, uint8_t *dst, size_t cap)
{
	for (int i = 0; i < nest; i++) {
		size_t out = 0;
		int err = codec_compress(ctx, est[i].codec, est[i].level, NULL, 0, src, len, dst, cap,
					 &out);
		if (err == HO_ELIMIT)
			out = len;   /* the stream would send such a frame uncompressed */
		else if (err < 0) {
			ho_err("cannot compress with '%s': %s", codec_name(est[i].codec),
			       ho_strerror(err));
			return err;
		}
		est[i].bytes += HO_MIN(out, len);
	}
	return 0;
}

/* Compress the rest chunks of every image, in order, in EST_FRAME frames. */
static int run_estimates(struct inspect *in, struct estimate *est, int nest)
{
	size_t cap = EST_FRAME, fill = 0;
	uint8_t *frame = NULL, *dst = NULL;
	struct codec_ctx *ctx = codec_ctx_new();
	int err = HO_ENOMEM;

	for (int i = 0; i < nest; i++)
		cap = HO_MAX(cap, codec_bound(est[i].codec, EST_FRAME));
	frame = malloc(EST_FRAME);
	dst = malloc(cap);
	if (!ctx || !frame || !dst)
		goto out;
	for (int image = 0; image < OVERLAY_NIMAGES; image++) {
		const struct inspect_image *im = &in->img[image];
		for (size_t k = 0; k < im->count; k++) {
			const struct inspect_chunk *c = &im->chunks[k];
			if (c->cls != INSPECT_REST)
				continue;
			if (fill + c->len > EST_FRAME) {
				if ((err = compress_frame(ctx, est, nest, frame, fill, dst, cap)) < 0)
					goto out;
				fill = 0;
			}
			err = overlay_read(in->ov, image, frame + fill, c->len,
					   c->idx * in->chunk_size);
			if (err < 0) {
				ho_err("cannot read chunk %llu of '%s': %s", (unsigned long long)c->idx,
				       overlay_image_name(image), ho_strerror(err));
				goto out;
			}
			fill += c->len;
		}
	}
	err = fill ? compress_frame(ctx, est, nest, frame, fill, dst, cap) : 0;
out:
	codec_ctx_free(ctx);
	free(frame);
	free(dst);
	return err;
}

static int sum_image(struct inspect *in, int image, struct img_sum *s)
{
	const struct inspect_image *im = &in->img[image];

	memset(s, 0, sizeof(*s));
	s->gens = calloc((size_t)in->generation + 1, sizeof(*s->gens));
	if (!s->gens)
		return HO_ENOMEM;
	for (size_t k = 0; k < im->count; k++) {
		const struct inspect_chunk *c = &im->chunks[k];
		struct gen_sum *g = &s->gens[c->gen];
		s->chunks++;
		s->bytes += c->len;
		s->writes += c->writes;
		if (c->first_ns && (!s->first || c->first_ns < s->first))
			s->first = c->first_ns;
		s->last = HO_MAX(s->last, c->last_ns);
		s->cls_chunks[c->cls]++;
		s->cls_bytes[c->cls] += c->len;
		g->chunks++;
		g->bytes += c->len;
		if (c->first_ns && (!g->first || c->first_ns < g->first))
			g->first = c->first_ns;
		g->last = HO_MAX(g->last, c->last_ns);
	}
	/* how fast the dirty set grew: chunks by the time of their first write */
	s->t0 = s->first;
	for (size_t k = 0; k < im->count; k++)
		if (im->chunks[k].first_ns > s->t0)
			s->span = HO_MAX(s->span, im->chunks[k].first_ns - s->t0);
	for (size_t k = 0; k < im->count; k++) {
		const struct inspect_chunk *c = &im->chunks[k];
		unsigned b = 0;
		if (!c->first_ns)
			continue;
		if (s->span)
			b = (unsigned)((double)(c->first_ns - s->t0) / (double)s->span * RATE_BUCKETS);
		if (b >= RATE_BUCKETS)
			b = RATE_BUCKETS - 1;
		s->rate_chunks[b]++;
		s->rate_bytes[b] += c->len;
	}
	return 0;
}

static const char *base_desc(struct inspect *in, int image, char *buf, size_t len)
{
	const struct overlay_identity *id = overlay_base_identity(in->ov, image);
	const char *path = overlay_base_path(in->ov, image);
	char hex[65];

	if (!id || id->zero || !path) {
		snprintf(buf, len, "all zero");
		return buf;
	}
	ho_hex(id->digest, 8, hex);
	snprintf(buf, len, "'%s' (sha256 %s...)", path, hex);
	return buf;
}

static void pct(char *buf, size_t len, uint64_t part, uint64_t whole)
{
	snprintf(buf, len, "%.2f%%", whole ? 100.0 * (double)part / (double)whole : 0.0);
}

static void text_image(struct inspect *in, int image, const struct img_sum *s, FILE *out)
{
	const struct inspect_image *im = &in->img[image];
	bool times = !(in->flags & INSPECT_NO_TIMES);
	char a[64], b[64], c[64], d[512];

	fprintf(out, "%s: %s, %llu chunks, base %s\n", overlay_image_name(image),
		ho_fmt_bytes(im->size, a, sizeof(a)), (unsigned long long)im->nchunks,
		base_desc(in, image, d, sizeof(d)));
	pct(b, sizeof(b), s->bytes, im->size);
	fprintf(out, "  modified      %llu chunks, %s (%s of the image), %llu writes\n",
		(unsigned long long)s->chunks, ho_fmt_bytes(s->bytes, a, sizeof(a)), b,
		(unsigned long long)s->writes);
	if (!s->chunks) {
		fputc('\n', out);
		return;
	}
	if (times) {
		fprintf(out, "  first write   %s\n", inspect_fmt_time(s->first, a, sizeof(a)));
		fprintf(out, "  last write    %s\n", inspect_fmt_time(s->last, a, sizeof(a)));
	}
	fprintf(out, "  %-12s  %10s  %12s", "generation", "chunks", "bytes");
	if (times)
		fprintf(out, "  %-24s  %s", "first write", "last write");
	fputc('\n', out);
	for (uint32_t g = 1; g <= in->generation; g++) {
		const struct gen_sum *gs = &s->gens[g];
		if (!gs->chunks)
			continue;
		fprintf(out, "  %-12u  %10llu  %12s", g, (unsigned long long)gs->chunks,
			ho_fmt_bytes(gs->bytes, a, sizeof(a)));
		if (times)
			fprintf(out, "  %-24s  %s", inspect_fmt_time(gs->first, b, sizeof(b)),
				inspect_fmt_time(gs->last, c, sizeof(c)));
		fputc('\n', out);
	}
	fprintf(out, "  %-12s  %10s  %12s\n", "class", "chunks", "bytes");
	for (int k = INSPECT_REVERTED; k < INSPECT_NCLASSES; k++)
		fprintf(out, "  %-12s  %10llu  %12s\n", inspect_class_name(k),
			(unsigned long long)s->cls_chunks[k], ho_fmt_bytes(s->cls_bytes[k], a, sizeof(a)));
	if (times && s->first) {
		double step = (double)s->span / RATE_BUCKETS / 1e9;
		uint64_t maxb = 1;
		for (int k = 0; k < RATE_BUCKETS; k++)
			maxb = HO_MAX(maxb, s->rate_chunks[k]);
		fprintf(out, "  write rate    chunks by time of first write, %d intervals of %.3f s from %s\n",
			s->span ? RATE_BUCKETS : 1, step, inspect_fmt_time(s->t0, a, sizeof(a)));
		for (int k = 0; k < (s->span ? RATE_BUCKETS : 1); k++) {
			int bar = (int)(s->rate_chunks[k] * 30 / maxb);
			if (s->span)
				snprintf(c, sizeof(c), "%s/s", ho_fmt_bytes((uint64_t)
					 ((double)s->rate_bytes[k] / step), b, sizeof(b)));
			else
				snprintf(c, sizeof(c), "-");
			snprintf(d, sizeof(d), "+%.3fs", step * k);
			fprintf(out, "    %-12s  %8llu  %12s  %14s  %.*s\n", d,
				(unsigned long long)s->rate_chunks[k],
				ho_fmt_bytes(s->rate_bytes[k], a, sizeof(a)), c, bar,
				"##############################");
		}
	}
	fputc('\n', out);
}

static void json_image(struct inspect *in, int image, const struct img_sum *s, FILE *out)
{
	const struct inspect_image *im = &in->img[image];
	const struct overlay_identity *id = overlay_base_identity(in->ov, image);
	const char *path = overlay_base_path(in->ov, image);
	bool times = !(in->flags & INSPECT_NO_TIMES);
	char hex[65];
	bool first = true;

	fprintf(out, "{\"image\":\"%s\",\"size\":%llu,\"chunks\":%llu,\"base\":",
		overlay_image_name(image), (unsigned long long)im->size,
		(unsigned long long)im->nchunks);
	if (path)
		inspect_json_str(out, path);
	else
		fputs("null", out);
	if (id) {
		ho_hex(id->digest, 32, hex);
		fprintf(out, ",\"base_sha256\":\"%s\"", hex);
	}
	fprintf(out, ",\"modified_chunks\":%llu,\"modified_bytes\":%llu,\"writes\":%llu",
		(unsigned long long)s->chunks, (unsigned long long)s->bytes,
		(unsigned long long)s->writes);
	if (times)
		fprintf(out, ",\"first_ns\":%llu,\"last_ns\":%llu", (unsigned long long)s->first,
			(unsigned long long)s->last);
	fputs(",\"generations\":[", out);
	for (uint32_t g = 1; g <= in->generation; g++) {
		const struct gen_sum *gs = &s->gens[g];
		if (!gs->chunks)
			continue;
		fprintf(out, "%s{\"gen\":%u,\"chunks\":%llu,\"bytes\":%llu", first ? "" : ",", g,
			(unsigned long long)gs->chunks, (unsigned long long)gs->bytes);
		if (times)
			fprintf(out, ",\"first_ns\":%llu,\"last_ns\":%llu",
				(unsigned long long)gs->first, (unsigned long long)gs->last);
		fputc('}', out);
		first = false;
	}
	fputs("],\"classes\":{", out);
	for (int k = INSPECT_REVERTED; k < INSPECT_NCLASSES; k++)
		fprintf(out, "%s\"%s\":{\"chunks\":%llu,\"bytes\":%llu}", k == INSPECT_REVERTED ? "" : ",",
			inspect_class_name(k), (unsigned long long)s->cls_chunks[k],
			(unsigned long long)s->cls_bytes[k]);
	fputc('}', out);
	if (times && s->first) {
		fprintf(out, ",\"rate\":{\"start_ns\":%llu,\"interval_ns\":%llu,\"new_chunks\":[",
			(unsigned long long)s->t0, (unsigned long long)(s->span / RATE_BUCKETS));
		for (int k = 0; k < RATE_BUCKETS; k++)
			fprintf(out, "%s%llu", k ? "," : "", (unsigned long long)s->rate_chunks[k]);
		fputs("]}", out);
	}
	fputc('}', out);
}

#define MODES_MAX 16

static void text_modes(const struct inspect_mode_estimate *me, int n, uint64_t total, FILE *out)
{
	char a[32];

	fprintf(out, "\nestimated stream size per pipeline mode (every modified chunk through the "
		"pipeline's own\nchunk and stream encoders, as handoff-export of every generation "
		"would send them now)\n");
	fprintf(out, "  %-12s  %12s  %8s", "mode", "bytes", "ratio");
	for (int k = 0; k < INSPECT_NKINDS; k++)
		fprintf(out, "  %7s", inspect_kind_name(k));
	fputc('\n', out);
	for (int i = 0; i < n; i++) {
		fprintf(out, "  %-12s  %12s  ", me[i].mode, ho_fmt_bytes(me[i].bytes, a, sizeof(a)));
		if (total)
			fprintf(out, "%8.3f", (double)me[i].bytes / (double)total);
		else
			fprintf(out, "%8s", "-");
		for (int k = 0; k < INSPECT_NKINDS; k++)
			fprintf(out, "  %7llu", (unsigned long long)me[i].kinds[k]);
		fputc('\n', out);
	}
}

static void json_modes(const struct inspect_mode_estimate *me, int n, FILE *out)
{
	fputs(",\"modes\":[", out);
	for (int i = 0; i < n; i++) {
		fprintf(out, "%s{\"mode\":\"%s\",\"bytes\":%llu,\"kinds\":{", i ? "," : "", me[i].mode,
			(unsigned long long)me[i].bytes);
		for (int k = 0; k < INSPECT_NKINDS; k++)
			fprintf(out, "%s\"%s\":%llu", k ? "," : "", inspect_kind_name(k),
				(unsigned long long)me[i].kinds[k]);
		fputs("}}", out);
	}
	fputc(']', out);
}

int inspect_summary(struct inspect *in, const char *estimates, const char *modes,
		    enum inspect_format fmt, FILE *out)
{
	struct estimate est[EST_MAX];
	struct inspect_mode_estimate me[MODES_MAX];
	int nmodes = 0;
	struct img_sum s[OVERLAY_NIMAGES];
	uint64_t tot_chunks = 0, tot_bytes = 0, cls_c[INSPECT_NCLASSES] = { 0 },
		 cls_b[INSPECT_NCLASSES] = { 0 };
	int nest, err;
	char a[64], b[64];

	memset(s, 0, sizeof(s));
	if ((err = parse_estimates(estimates, est, &nest)) < 0)
		return err;
	if ((err = inspect_classify(in)) < 0)
		return err;
	for (int i = 0; i < OVERLAY_NIMAGES; i++) {
		if ((err = sum_image(in, i, &s[i])) < 0)
			goto out;
		tot_chunks += s[i].chunks;
		tot_bytes += s[i].bytes;
		for (int k = 0; k < INSPECT_NCLASSES; k++) {
			cls_c[k] += s[i].cls_chunks[k];
			cls_b[k] += s[i].cls_bytes[k];
		}
	}
	if (nest && (err = run_estimates(in, est, nest)) < 0)
		goto out;
	if ((err = inspect_estimate_modes(in, modes ? modes : "lz4,delta-zstd3", me, MODES_MAX,
					  &nmodes)) < 0)
		goto out;

	if (fmt == INSPECT_JSON) {
		fputs("{\"overlay\":", out);
		inspect_json_str(out, in->dir);
		fprintf(out, ",\"chunk_size\":%u,\"generation\":%u,\"modified_chunks\":%llu,"
			"\"modified_bytes\":%llu", in->chunk_size, in->generation,
			(unsigned long long)tot_chunks, (unsigned long long)tot_bytes);
		if (in->have_stats)
			fprintf(out, ",\"bytes_read\":%llu,\"bytes_written\":%llu",
				(unsigned long long)in->stats.bytes_read,
				(unsigned long long)in->stats.bytes_written);
		fputs(",\"images\":[", out);
		for (int i = 0; i < OVERLAY_NIMAGES; i++) {
			if (i)
				fputc(',', out);
			json_image(in, i, &s[i], out);
		}
		fputs("],\"classes\":{", out);
		for (int k = INSPECT_REVERTED; k < INSPECT_NCLASSES; k++)
			fprintf(out, "%s\"%s\":{\"chunks\":%llu,\"bytes\":%llu}",
				k == INSPECT_REVERTED ? "" : ",", inspect_class_name(k),
				(unsigned long long)cls_c[k], (unsigned long long)cls_b[k]);
		fprintf(out, "},\"estimates\":[{\"codec\":\"none\",\"bytes\":%llu}",
			(unsigned long long)cls_b[INSPECT_REST]);
		for (int i = 0; i < nest; i++)
			fprintf(out, ",{\"codec\":\"%s\",\"level\":%d,\"bytes\":%llu}",
				codec_name(est[i].codec), est[i].level, (unsigned long long)est[i].bytes);
		fputc(']', out);
		json_modes(me, nmodes, out);
		fputs("}\n", out);
		goto out;
	}

	fprintf(out, "overlay '%s': chunk size %u, open generation %u, %llu modified chunks (%s)\n",
		in->dir, in->chunk_size, in->generation, (unsigned long long)tot_chunks,
		ho_fmt_bytes(tot_bytes, a, sizeof(a)));
	if (in->have_stats)
		fprintf(out, "served by the mount: %s read, %s written\n",
			ho_fmt_bytes(in->stats.bytes_read, a, sizeof(a)),
			ho_fmt_bytes(in->stats.bytes_written, b, sizeof(b)));
	fputc('\n', out);
	for (int i = 0; i < OVERLAY_NIMAGES; i++)
		text_image(in, i, &s[i], out);
	fprintf(out, "all images\n  %-12s  %10s  %12s\n", "class", "chunks", "bytes");
	for (int k = INSPECT_REVERTED; k < INSPECT_NCLASSES; k++)
		fprintf(out, "  %-12s  %10llu  %12s\n", inspect_class_name(k),
			(unsigned long long)cls_c[k], ho_fmt_bytes(cls_b[k], a, sizeof(a)));
	if (nest) {
		fprintf(out, "\nestimated stream payload (rest chunks compressed in 1 MiB frames; zero, "
			"reverted and\nduplicate chunks travel as references; record and frame headers not "
			"counted)\n");
		fprintf(out, "  %-12s  %12s  %8s\n", "codec", "bytes", "ratio");
		fprintf(out, "  %-12s  %12s  %8s\n", "none", ho_fmt_bytes(cls_b[INSPECT_REST], a, sizeof(a)),
			cls_b[INSPECT_REST] ? "1.000" : "-");
		for (int i = 0; i < nest; i++) {
			snprintf(b, sizeof(b), "%s:%d", codec_name(est[i].codec), est[i].level);
			fprintf(out, "  %-12s  %12s  ", b, ho_fmt_bytes(est[i].bytes, a, sizeof(a)));
			if (cls_b[INSPECT_REST])
				fprintf(out, "%8.3f\n", (double)est[i].bytes / (double)cls_b[INSPECT_REST]);
			else
				fprintf(out, "%8s\n", "-");
		}
	}
	if (nmodes)
		text_modes(me, nmodes, tot_bytes, out);
out:
	for (int i = 0; i < OVERLAY_NIMAGES; i++)
		free(s[i].gens);
	return err;
}
