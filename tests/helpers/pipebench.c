/*
 * pipebench.c — the benchmark driver for the data-reduction core: encodes the dirty chunks of a
 * dataset (see mkdataset.c) with one mode and -T threads, frames the records as mode.h recommends
 * (every record, header and payload, compressed per frame with the mode's frame codec), and
 * reports bytes, CPU and wall time. With --verify it decodes
 * every record again and compares with the new image (and decompresses every frame).
 *
 *   pipebench [-m MODE] [-T N] [--cache DIR] [--verify] [--stats] [--only disk|memory] DIR
 *             [--frame-size N --frame-level N --window N --far 0|1 --delta-level N --delta-beside]
 *             (experiments: override one knob of the mode; store DELTA payloads beside the compressed frame)
 *   pipebench --list-modes
 * DIR holds disk.base disk.new disk.dirty and optionally mem.base mem.new mem.dirty.
 * stdout: "MODE BYTES CPU_S WALL_S INPUT_BYTES INDEX_S" (index build/load time is reported apart:
 * it is done once per base and cached).
 */
#include <fcntl.h>
#include <getopt.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>
#include "common/common.h"
#include "overlay/overlay.h"
#include "pipeline/codec.h"
#include "pipeline/dedup.h"
#include "pipeline/delta.h"
#include "pipeline/mode.h"

#define CS 4096u
#define RUN 64          /* consecutive chunks read at once */

struct item { int img; uint64_t idx; };

struct bench {
	const struct mode *m;
	struct delta_base base;
	int base_fd[2], new_fd[2];
	struct sentset *sent;
	struct item *items;
	size_t nitems, per_frame, nframes;
	int threads;
	bool verify;
	bool delta_beside;               /* composition experiment: DELTA payloads stored, not recompressed */
	uint64_t *frame_bytes;          /* per frame */
	struct chunk_stats *stats;      /* per thread */
	int err;                        /* first error (guarded by err_lock) */
	pthread_mutex_t err_lock;
};

struct targ { struct bench *b; int t; uint8_t (*fps)[16]; uint8_t *nz; };

/* plan phase, in parallel: fingerprints of every chunk (the serial part only inserts them) */
static int read_new(void *arg, int img, uint64_t idx, void *buf, size_t len);
static void *fp_worker(void *p)
{
	struct targ *ta = p;
	struct bench *b = ta->b;
	uint8_t d[CS];
	for (size_t i = (size_t)ta->t; i < b->nitems; i += (size_t)b->threads) {
		if (read_new(b, b->items[i].img, b->items[i].idx, d, CS))
			continue;
		ta->nz[i] = !ho_is_zero(d, CS);
		if (ta->nz[i])
			ho_xxh128(d, CS, ta->fps[i]);
	}
	return NULL;
}

static int read_new(void *arg, int img, uint64_t idx, void *buf, size_t len)
{
	struct bench *b = arg;
	return delta_read_fds(b->new_fd, img, buf, len, idx * CS);
}

static void set_err(struct bench *b, int rc)
{
	pthread_mutex_lock(&b->err_lock);
	if (!b->err)
		b->err = rc;
	pthread_mutex_unlock(&b->err_lock);
}

static void *worker(void *p)
{
	struct targ *ta = p;
	struct bench *b = ta->b;
	const struct mode *m = b->m;
	struct chunk_enc *enc = NULL;
	struct chunk_dec *dec = NULL;
	struct codec_ctx *cc = codec_ctx_new();
	size_t pb = chunk_payload_bound(CS);
	size_t hcap = b->per_frame * (pb + 32), dcap = b->per_frame * pb;
	uint8_t *run = malloc((size_t)RUN * CS), *data = NULL, *chk = malloc(CS), *hdr = malloc(hcap), *dpl = malloc(dcap);
	size_t ccap = codec_bound(m->frame_codec, hcap);
	uint8_t *cbuf = malloc(ccap), *back = malloc(hcap);
	int rc;

	if (!cc || !run || !chk || !hdr || !dpl || !cbuf || !back) {
		set_err(b, HO_ENOMEM);
		goto out;
	}
	if ((rc = chunk_enc_new(m, &b->base, b->sent, &enc)) || (rc = chunk_dec_new(&b->base, &dec))) {
		set_err(b, rc);
		goto out;
	}
	for (size_t f = (size_t)ta->t; f < b->nframes; f += (size_t)b->threads) {
		size_t hl = 0, dl = 0;
		uint64_t prev = 0;
		int pimg = -1;
		size_t fend = HO_MIN((f + 1) * b->per_frame, b->nitems), run_first = 0, run_n = 0;
		for (size_t i = f * b->per_frame; i < fend; i++) {
			const struct item *it = &b->items[i];
			struct chunk_rec rec;
			uint8_t *pl = dpl + dl;
			if (i >= run_first + run_n) {
				/* read a run of consecutive dirty chunks with one pread */
				run_first = i, run_n = 1;
				while (run_n < RUN && i + run_n < fend && b->items[i + run_n].img == it->img &&
				       b->items[i + run_n].idx == it->idx + run_n)
					run_n++;
				if ((rc = delta_read_fds(b->new_fd, it->img, run, run_n * CS, it->idx * CS))) {
					set_err(b, rc);
					goto out;
				}
			}
			data = run + (i - run_first) * CS;
			if ((rc = chunk_encode(enc, it->img, it->idx, data, CS, i + 1, pl, pb, &rec))) {
				set_err(b, rc);
				goto out;
			}
			if (b->verify) {
				rc = chunk_decode(dec, it->img, it->idx, rec.kind, pl, rec.len, chk, CS, read_new, b);
				if (rc || memcmp(chk, data, CS)) {
					fprintf(stderr, "pipebench: chunk %d/%llu (%s) does not decode: %s\n", it->img,
						(unsigned long long)it->idx, chunk_kind_name(rec.kind), ho_strerror(rc));
					set_err(b, HO_EDIGEST);
					goto out;
				}
			}
			/* record header: kind | image<<4, index delta, payload length */
			hdr[hl++] = (uint8_t)(rec.kind | (it->img << 4));
			uint64_t delta = (it->img == pimg && it->idx > prev) ? it->idx - prev : it->idx;
			hl += delta_put_uleb(hdr + hl, delta);
			hl += delta_put_uleb(hdr + hl, rec.len);
			prev = it->idx, pimg = it->img;
			if (rec.kind == CHUNK_DELTA && b->delta_beside) {
				dl += rec.len;                   /* stored beside the compressed part */
			} else {
				memcpy(hdr + hl, pl, rec.len);
				hl += rec.len;
			}
		}
		size_t cl = hl;
		if (m->frame_codec != CODEC_NONE) {
			if ((rc = codec_compress(cc, m->frame_codec, m->frame_level, NULL, 0, hdr, hl, cbuf, ccap, &cl))) {
				set_err(b, rc);
				goto out;
			}
			if (b->verify) {
				size_t bl;
				rc = codec_decompress(cc, m->frame_codec, NULL, 0, cbuf, cl, back, hcap, &bl);
				if (rc || bl != hl || memcmp(back, hdr, hl)) {
					set_err(b, HO_EDIGEST);
					goto out;
				}
			}
		}
		b->frame_bytes[f] = 16 + cl + dl;        /* 16: a frame header (lengths, checksum) */
	}
	chunk_enc_stats(enc, &b->stats[ta->t]);
out:
	chunk_enc_free(enc);
	chunk_dec_free(dec);
	codec_ctx_free(cc);
	free(run); free(chk); free(hdr); free(dpl); free(cbuf); free(back);
	return NULL;
}

static double cpu_s(void)
{
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
	       (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

static int load_list(const char *path, int img, struct item **items, size_t *n, size_t *cap)
{
	FILE *f = fopen(path, "r");
	unsigned long long v;
	if (!f)
		return HO_ENOENT;
	while (fscanf(f, "%llu", &v) == 1) {
		if (*n == *cap) {
			*cap = *cap ? *cap * 2 : 1024;
			*items = realloc(*items, *cap * sizeof(**items));
		}
		(*items)[(*n)++] = (struct item){ img, v };
	}
	fclose(f);
	return 0;
}

static int open_img(const char *dir, const char *name, uint64_t *size)
{
	char *p = ho_path_join(dir, name);
	int fd = open(p, O_RDONLY);
	struct stat st;
	free(p);
	if (fd >= 0 && fstat(fd, &st) == 0)
		*size = (uint64_t)st.st_size;
	return fd;
}

int main(int argc, char **argv)
{
	struct bench b = { .threads = 1, .base_fd = { -1, -1 }, .new_fd = { -1, -1 } };
	const char *mname = "delta-zstd3", *cache = NULL, *only = NULL;
	bool stats = false;
	static const struct option lo[] = {
		{ "cache", required_argument, 0, 'c' }, { "verify", no_argument, 0, 'V' },
		{ "stats", no_argument, 0, 's' }, { "only", required_argument, 0, 'o' },
		{ "list-modes", no_argument, 0, 'l' }, { "frame-size", required_argument, 0, 'F' },
		{ "frame-level", required_argument, 0, 'L' }, { "window", required_argument, 0, 'W' },
		{ "far", required_argument, 0, 'R' }, { "delta-level", required_argument, 0, 'D' },
		{ "delta-beside", no_argument, 0, 'I' },
		{ 0, 0, 0, 0 } };
	struct mode tuned;
	long o_fs = -1, o_fl = -1000, o_w = -1, o_far = -1, o_dl = -1000;
	int c;
	ho_log_init("pipebench");
	while ((c = getopt_long(argc, argv, "m:T:", lo, NULL)) != -1) {
		switch (c) {
		case 'm': mname = optarg; break;
		case 'T': b.threads = atoi(optarg); break;
		case 'c': cache = optarg; break;
		case 'V': b.verify = true; break;
		case 's': stats = true; break;
		case 'o': only = optarg; break;
		case 'l': return mode_list(stdout) ? 1 : 0;
		case 'F': o_fs = strtol(optarg, NULL, 0); break;
		case 'L': o_fl = strtol(optarg, NULL, 0); break;
		case 'W': o_w = strtol(optarg, NULL, 0); break;
		case 'R': o_far = strtol(optarg, NULL, 0); break;
		case 'D': o_dl = strtol(optarg, NULL, 0); break;
		case 'I': b.delta_beside = true; break;
		default: return 2;
		}
	}
	if (optind + 1 != argc || b.threads < 1 || b.threads > 64 || !(b.m = mode_find(mname))) {
		fprintf(stderr, "usage: pipebench [-m MODE] [-T N] [--cache DIR] [--verify] [--stats] [--only disk|memory] DIR\n");
		return 2;
	}
	/* experiments: a mode with some knobs overridden */
	tuned = *b.m;
	if (o_fs > 0) tuned.frame_size = (uint32_t)o_fs;
	if (o_fl > -1000) tuned.frame_level = (int)o_fl;
	if (o_w >= 0) tuned.window = (uint32_t)o_w;
	if (o_far >= 0) tuned.far = o_far != 0;
	if (o_dl > -1000) tuned.delta_level = (int)o_dl;
	if (mode_check(&tuned)) {
		fprintf(stderr, "pipebench: invalid mode overrides\n");
		return 2;
	}
	b.m = &tuned;
	const char *dir = argv[optind];
	const char *bn[2] = { "disk.base", "mem.base" }, *nn[2] = { "disk.new", "mem.new" },
		   *ln[2] = { "disk.dirty", "mem.dirty" };
	size_t cap = 0;
	b.base.chunk_size = CS;
	b.base.read = delta_read_fds;
	b.base.arg = b.base_fd;
	pthread_mutex_init(&b.err_lock, NULL);
	double t0 = (double)ho_mono_ns() / 1e9, c0 = cpu_s();
	for (int i = 0; i < 2; i++) {
		uint64_t nsz = 0;
		b.base_fd[i] = open_img(dir, bn[i], &b.base.size[i]);
		b.new_fd[i] = open_img(dir, nn[i], &nsz);
		if (b.base_fd[i] < 0) {
			if (i == 0) {
				fprintf(stderr, "pipebench: cannot open '%s/%s'\n", dir, bn[i]);
				return 1;
			}
			continue;
		}
		bool want = !only || (strcmp(only, "disk") == 0) == (i == 0);
		char *lp = ho_path_join(dir, ln[i]);
		if (want && load_list(lp, i, &b.items, &b.nitems, &cap)) {
			fprintf(stderr, "pipebench: cannot read '%s'\n", lp);
			return 1;
		}
		free(lp);
		if ((b.m->dedup & MODE_DEDUP_BASE) || b.m->far) {
			struct overlay_identity id = { .size = b.base.size[i] };
			/* a cheap identity for the cache key: the benchmark's bases are regenerated per run */
			struct stat st;
			fstat(b.base_fd[i], &st);
			uint64_t sig[4] = { st.st_size, (uint64_t)st.st_mtim.tv_sec, (uint64_t)st.st_mtim.tv_nsec, st.st_ino };
			ho_sha256(sig, sizeof(sig), id.digest);
			struct baseidx *bi;
			int rc = baseidx_open(cache, &id, b.base_fd[i], CS, b.m->far ? 0 : BASEIDX_NO_ANCHORS, &bi, NULL);
			if (rc) {
				fprintf(stderr, "pipebench: cannot index '%s': %s\n", bn[i], ho_strerror(rc));
				return 1;
			}
			b.base.index[i] = bi;
		}
	}
	double index_s = (double)ho_mono_ns() / 1e9 - t0;
	t0 = (double)ho_mono_ns() / 1e9, c0 = cpu_s();
	if (b.m->dedup & MODE_DEDUP_SENT) {
		/* fill the sent set in stream order first: output is then thread-independent */
		uint8_t (*fps)[16] = malloc((b.nitems + 1) * 16), *nz = calloc(b.nitems + 1, 1);
		pthread_t pt[64];
		struct targ pa[64];
		b.sent = sentset_new();
		for (int t = 0; t < b.threads; t++) {
			pa[t] = (struct targ){ &b, t, fps, nz };
			pthread_create(&pt[t], NULL, fp_worker, &pa[t]);
		}
		for (int t = 0; t < b.threads; t++)
			pthread_join(pt[t], NULL);
		for (size_t i = 0; i < b.nitems; i++) {
			if (nz[i])
				sentset_add(b.sent, fps[i], b.items[i].img, b.items[i].idx, i + 1);
			else
				sentset_invalidate(b.sent, b.items[i].img, b.items[i].idx);
		}
		free(fps);
		free(nz);
	}
	b.per_frame = b.m->frame_size / CS;
	b.nframes = (b.nitems + b.per_frame - 1) / b.per_frame;
	b.frame_bytes = calloc(b.nframes + 1, sizeof(uint64_t));
	b.stats = calloc((size_t)b.threads, sizeof(*b.stats));
	pthread_t th[64];
	struct targ ta[64];
	for (int t = 0; t < b.threads; t++) {
		ta[t] = (struct targ){ &b, t, NULL, NULL };
		pthread_create(&th[t], NULL, worker, &ta[t]);
	}
	for (int t = 0; t < b.threads; t++)
		pthread_join(th[t], NULL);
	double wall = (double)ho_mono_ns() / 1e9 - t0, cpu = cpu_s() - c0;
	if (b.err) {
		fprintf(stderr, "pipebench: %s\n", ho_strerror(b.err));
		return 1;
	}
	uint64_t total = 32;                                 /* stream header + END record */
	for (size_t f = 0; f < b.nframes; f++)
		total += b.frame_bytes[f];
	printf("%s %llu %.3f %.3f %llu %.3f\n", b.m->name, (unsigned long long)total, cpu, wall,
	       (unsigned long long)b.nitems * CS, index_s);
	if (stats) {
		struct chunk_stats s = { 0 };
		for (int t = 0; t < b.threads; t++)
			for (int k = 0; k < CHUNK_NKINDS; k++) {
				s.count[k] += b.stats[t].count[k];
				s.in_bytes[k] += b.stats[t].in_bytes[k];
				s.out_bytes[k] += b.stats[t].out_bytes[k];
			}
		for (int t = 0; t < b.threads; t++)
			s.far_regions += b.stats[t].far_regions;
		for (int k = 0; k < CHUNK_NKINDS; k++)
			fprintf(stderr, "  %-8s %8llu chunks %12llu payload bytes\n", chunk_kind_name(k),
				(unsigned long long)s.count[k], (unsigned long long)s.out_bytes[k]);
		fprintf(stderr, "  far regions used: %llu\n", (unsigned long long)s.far_regions);
	}
	for (int i = 0; i < 2; i++) {
		baseidx_free((struct baseidx *)b.base.index[i]);
		if (b.base_fd[i] >= 0) close(b.base_fd[i]);
		if (b.new_fd[i] >= 0) close(b.new_fd[i]);
	}
	sentset_free(b.sent);
	free(b.items); free(b.frame_bytes); free(b.stats);
	return 0;
}
