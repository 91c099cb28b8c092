/*
 * test_inspect.c — the inspect/ library from the inside: argument parsers and time formatting,
 * the current-image reader and the chunk classifier on an overlay built here through overlay/ and
 * tracker/ (every class, duplicates across images, the short last chunk), the heatmap's PNG
 * dimensions (decoded with libpng), and stream inspection of a stream encoded here with raw,
 * zero, base-ref, xor-base and sent-ref records, with and without the bases, and after damage.
 */
#include <ftw.h>
#include <png.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "common/common.h"
#include "inspect/inspect.h"
#include "overlay/overlay.h"
#include "tracker/tracker.h"
#include "pipeline/stream.h"
#include "tests/unit/tap.h"

#define CS 4096u
#define DISK_SIZE (64 * CS + 1000)   /* a short last chunk */
#define MEM_SIZE (32 * CS)

static char dir[256], ovl[300], base_path[300];
static uint8_t base_disk[DISK_SIZE];

static int rm_cb(const char *p, const struct stat *st, int flag, struct FTW *f)
{
	(void)st; (void)flag; (void)f;
	return remove(p);
}

static void test_parsers(void)
{
	uint64_t lo, hi, t;
	int img;
	char buf[40];

	lo = 0, hi = 99;
	is_int(inspect_parse_range("3..7", inspect_parse_u64, &lo, &hi), 0, "range A..B parses");
	ok(lo == 3 && hi == 7, "range A..B gives [3, 7]");
	lo = 0, hi = 99;
	is_int(inspect_parse_range("5..", inspect_parse_u64, &lo, &hi), 0, "range A.. parses");
	ok(lo == 5 && hi == 99, "range A.. keeps the upper default");
	lo = 0, hi = 99;
	is_int(inspect_parse_range("..8", inspect_parse_u64, &lo, &hi), 0, "range ..B parses");
	ok(lo == 0 && hi == 8, "range ..B keeps the lower default");
	is_int(inspect_parse_range("4", inspect_parse_u64, &lo, &hi), 0, "a single value parses");
	ok(lo == 4 && hi == 4, "a single value is a one-value range");
	is_int(inspect_parse_range("7..3", inspect_parse_u64, &lo, &hi), HO_EINVAL, "lo > hi is refused");
	is_int(inspect_parse_range("..", inspect_parse_u64, &lo, &hi), HO_EINVAL, "'..' is refused");
	is_int(inspect_parse_range("x..3", inspect_parse_u64, &lo, &hi), HO_EINVAL, "garbage is refused");
	is_int(inspect_parse_range("4K..8K", ho_parse_size, &lo, &hi), 0, "size suffixes in ranges");
	ok(lo == 4096 && hi == 8192, "4K..8K");

	is_int(inspect_parse_time("@1700000000", &t), 0, "@SECONDS parses");
	ok(t == 1700000000000000000ull, "@SECONDS in ns");
	is_int(inspect_parse_time("@1700000000.25", &t), 0, "@SECONDS.FRACTION parses");
	ok(t == 1700000000250000000ull, "fraction in ns");
	is_int(inspect_parse_time("2023-11-14T22:13:20Z", &t), 0, "ISO time parses");
	ok(t == 1700000000000000000ull, "ISO time is UTC");
	is_int(inspect_parse_time("2023-11-14T22:13:20.5", &t), 0, "ISO with fraction, no Z");
	ok(t == 1700000000500000000ull, "ISO fraction");
	is_int(inspect_parse_time("2023-11-14", &t), 0, "a date alone parses");
	ok(t == 1699920000000000000ull, "a date is its midnight UTC");
	is_int(inspect_parse_time("2023-13-01", &t), HO_EINVAL, "month 13 is refused");
	is_int(inspect_parse_time("yesterday", &t), HO_EINVAL, "words are refused");
	is_int(inspect_parse_time("@12x", &t), HO_EINVAL, "trailing garbage is refused");
	is_int(inspect_parse_time("@1.1234567891", &t), HO_EINVAL, "more than ns precision is refused");
	is_str(inspect_fmt_time(1700000000123456789ull, buf, sizeof(buf)), "2023-11-14T22:13:20.123Z",
	       "times format as UTC with milliseconds");
	is_str(inspect_fmt_time(0, buf, sizeof(buf)), "-", "time 0 formats as '-'");
	is_int(inspect_parse_image("memory", &img), 0, "'memory' parses");
	is_int(img, OVERLAY_MEMORY, "to OVERLAY_MEMORY");
	is_int(inspect_parse_image("swap", &img), HO_EINVAL, "unknown images are refused");
	is_str(inspect_class_name(INSPECT_DUP_OVERLAY), "dup-overlay", "class names");
}

static int durable(void *arg) { return overlay_sync(arg); }

/* Write one chunk (whole) and mark it, at time t. */
static void put(struct overlay *ov, struct tracker *tr, int img, uint64_t idx, const uint8_t *data,
		uint32_t len, uint64_t t)
{
	if (overlay_write(ov, img, data, len, idx * CS) < 0)
		diag("overlay_write failed");
	tracker_mark(tr, img, idx, 1, t);
}

/* The overlay the classifier tests look at:
 *   disk 0  reverted (base bytes)          disk 1  zero
 *   disk 2  = base disk 40 (dup-base)      disk 3  unique (rest)
 *   disk 4  = memory 5 (dup-overlay, but disk 4 comes first: rest; memory 5 dup-overlay)
 *   disk 64 (short last chunk) unique     memory 0 zero (reverted: zero base)
 *   memory 3 = base disk 7 (dup-base across images)
 *   memory 5 = disk 4                      memory 6 = disk 3 (dup-overlay across images) */
static int build_overlay(void)
{
	struct overlay_base_spec bases[2] = { { base_path, 0 }, { NULL, MEM_SIZE } };
	struct overlay *ov;
	struct tracker *tr;
	uint64_t n[2];
	uint8_t c[CS], u[CS];
	uint32_t closed;
	int err;

	for (size_t i = 0; i < sizeof(base_disk); i++)
		base_disk[i] = (uint8_t)(i * 2654435761u >> 13);
	if (ho_write_file_atomic(base_path, base_disk, sizeof(base_disk)) < 0)
		return -1;
	if ((err = overlay_open(ovl, bases, CS, OVERLAY_CREATE | OVERLAY_LOCK, &ov)) < 0)
		return err;
	n[0] = overlay_nchunks(ov, 0);
	n[1] = overlay_nchunks(ov, 1);
	if ((err = tracker_open(ovl, 2, n, TRACKER_CREATE | TRACKER_NOSYNC, &tr)) < 0) {
		overlay_close(ov);
		return err;
	}
	put(ov, tr, 0, 0, base_disk, CS, 1000);
	memset(c, 0, CS);
	put(ov, tr, 0, 1, c, CS, 1000);
	put(ov, tr, 0, 2, base_disk + 40 * CS, CS, 1000);
	memset(u, 0x33, CS);
	put(ov, tr, 0, 3, u, CS, 2000);
	memset(c, 0x44, CS);
	put(ov, tr, 0, 4, c, CS, 2000);
	tracker_checkpoint(tr, durable, ov, &closed);
	memset(u + CS / 2, 0x55, 1000);
	put(ov, tr, 0, 64, u, 1000, 3000);
	memset(u, 0x33, CS);
	memset(c, 0, CS);
	put(ov, tr, 1, 0, c, CS, 3000);
	put(ov, tr, 1, 3, base_disk + 7 * CS, CS, 3000);
	memset(c, 0x44, CS);
	put(ov, tr, 1, 5, c, CS, 3000);
	put(ov, tr, 1, 6, u, CS, 3000);
	err = tracker_commit(tr, durable, ov);
	tracker_close(tr);
	overlay_close(ov);
	return err;
}

static const struct inspect_chunk *find(struct inspect *in, int img, uint64_t idx)
{
	size_t n;
	const struct inspect_chunk *c = inspect_chunks(in, img, &n);
	for (size_t i = 0; i < n; i++)
		if (c[i].idx == idx)
			return &c[i];
	return NULL;
}

static void expect_class(struct inspect *in, int img, uint64_t idx, enum inspect_class want,
			 int ref_img, uint64_t ref_idx)
{
	const struct inspect_chunk *c = find(in, img, idx);
	char name[64];
	snprintf(name, sizeof(name), "%s chunk %llu is %s", overlay_image_name(img),
		 (unsigned long long)idx, inspect_class_name(want));
	ok(c && c->cls == want && (ref_img < 0 || (c->ref_image == ref_img && c->ref_idx == ref_idx)),
	   "%s", name);
	if (c && c->cls != want)
		diag("got %s", inspect_class_name(c->cls));
}

static void test_classify(void)
{
	struct inspect *in;
	struct inspect_filter f;
	uint8_t buf[2 * CS];
	size_t n;
	int err;

	err = build_overlay();
	is_int(err, 0, "overlay built through overlay/ and tracker/");
	if (err)
		return;
	is_int(inspect_open(ovl, 0, &in), 0, "inspect_open");
	if (!in)
		return;
	is_int(inspect_generation(in), 2, "open generation");
	inspect_chunks(in, OVERLAY_DISK, &n);
	is_int(n, 6, "6 modified disk chunks");
	inspect_chunks(in, OVERLAY_MEMORY, &n);
	is_int(n, 4, "4 modified memory chunks");
	ok(find(in, 0, 64) && find(in, 0, 64)->len == 1000, "the short last chunk has its length");

	is_int(inspect_read(in, 0, buf, 2 * CS, 2 * CS + 100 - CS), 0, "inspect_read across chunks");
	ok(ho_is_zero(buf, CS - 100), "reads the overlay's zero chunk 1");
	is_mem(buf + CS - 100, base_disk + 40 * CS, CS, "then chunk 2 = base chunk 40");
	is_mem(buf + 2 * CS - 100, "\x33\x33\x33", 3, "then chunk 3 from the overlay");
	is_int(inspect_read(in, 0, buf, CS, 10 * CS), 0, "an unmodified chunk reads");
	is_mem(buf, base_disk + 10 * CS, CS, "as base");
	is_int(inspect_read(in, 0, buf, 2, DISK_SIZE - 1), HO_EINVAL, "reads past the end are refused");

	is_int(inspect_classify(in), 0, "inspect_classify");
	expect_class(in, 0, 0, INSPECT_REVERTED, -1, 0);
	expect_class(in, 0, 1, INSPECT_ZERO, -1, 0);
	expect_class(in, 0, 2, INSPECT_DUP_BASE, 0, 40);
	expect_class(in, 0, 3, INSPECT_REST, -1, 0);
	expect_class(in, 0, 4, INSPECT_REST, -1, 0);
	expect_class(in, 0, 64, INSPECT_REST, -1, 0);
	expect_class(in, 1, 0, INSPECT_REVERTED, -1, 0);
	expect_class(in, 1, 3, INSPECT_DUP_BASE, 0, 7);
	expect_class(in, 1, 5, INSPECT_DUP_OVERLAY, 0, 4);
	expect_class(in, 1, 6, INSPECT_DUP_OVERLAY, 0, 3);
	is_int(inspect_classify(in), 0, "classify again is a no-op");

	inspect_filter_init(&f);
	f.gen_min = 2;
	ok(!inspect_filter_match(in, &f, find(in, 0, 3)) && inspect_filter_match(in, &f, find(in, 0, 64)),
	   "generation filter");
	inspect_filter_init(&f);
	f.off_min = 3 * CS + 10;
	f.off_max = 3 * CS + 20;
	ok(inspect_filter_match(in, &f, find(in, 0, 3)) && !inspect_filter_match(in, &f, find(in, 0, 4)),
	   "offset filter matches the overlapping chunk only");
	inspect_filter_init(&f);
	f.since_ns = 2500;
	ok(!inspect_filter_match(in, &f, find(in, 0, 3)) && inspect_filter_match(in, &f, find(in, 1, 3)),
	   "--since compares the last write");

	/* heatmap: a PNG of the documented width */
	{
		char png[320];
		png_image im;
		snprintf(png, sizeof(png), "%s/h.png", dir);
		is_int(inspect_heatmap(in, INSPECT_HEAT_WRITES, png), 0, "inspect_heatmap");
		memset(&im, 0, sizeof(im));
		im.version = PNG_IMAGE_VERSION;
		ok(png_image_begin_read_from_file(&im, png) != 0, "libpng reads it back");
		is_int(im.width, 1160, "1160 pixels wide");
		ok(im.height > 100 && im.height < 1000, "a sensible height (%u)", im.height);
		png_image_free(&im);
	}
	inspect_close(in);
}

/* ---- stream ---------------------------------------------------------------------------------- */

struct sbuf {
	uint8_t *p;
	size_t len;
};

static int sink(void *arg, const struct stream_piece *pc)
{
	struct sbuf *b = arg;
	uint8_t *n = realloc(b->p, b->len + pc->len);
	if (!n)
		return HO_ENOMEM;
	memcpy(n + b->len, pc->buf, pc->len);
	b->p = n;
	b->len += pc->len;
	return 0;
}

/* A stream over the test overlay's bases with raw, zero, base-ref, xor-base and sent-ref records. */
static int make_stream(struct sbuf *b, const char *key)
{
	struct inspect *in;
	struct stream_header h;
	struct stream_enc *e;
	uint8_t c[CS], x[CS], xp[CS];
	int err;

	if ((err = inspect_open(ovl, 0, &in)) < 0)
		return err;
	memset(&h, 0, sizeof(h));
	memset(h.id, 7, sizeof(h.id));
	memset(h.sender, 9, sizeof(h.sender));
	h.since = 0;
	h.until = 1;
	h.chunk_size = CS;
	strcpy(h.mode, "unit");
	for (int i = 0; i < 2; i++) {
		struct overlay_identity id;
		struct overlay *ov;
		overlay_open(ovl, NULL, 0, OVERLAY_READONLY, &ov);
		id = *overlay_base_identity(ov, i);
		overlay_close(ov);
		h.image[i].size = inspect_image_size(in, i);
		h.image[i].base = id;
	}
	inspect_close(in);
	memset(b, 0, sizeof(*b));
	if ((err = stream_enc_new(&h, key, key ? strlen(key) : 0, STREAM_CODEC_NONE, 0, sink, b, &e)) < 0)
		return err;
	memset(c, 0x61, CS);
	struct stream_chunk raw = { .image = 0, .idx = 3, .len = CS, .enc = STREAM_ENC_RAW, .data = c };
	struct stream_chunk zero = { .image = 0, .idx = 5, .len = CS, .enc = STREAM_ENC_ZERO };
	struct stream_chunk bref = { .image = 0, .idx = 6, .len = CS, .enc = STREAM_ENC_BASE_REF,
				     .src_image = 0, .src_idx = 40, .data = base_disk + 40 * CS };
	memcpy(x, base_disk + 8 * CS, CS);
	x[10] ^= 0xff;
	for (uint32_t i = 0; i < CS; i++)
		xp[i] = x[i] ^ base_disk[8 * CS + i];
	struct stream_chunk xr = { .image = 0, .idx = 8, .len = CS, .enc = STREAM_ENC_XOR_BASE, .data = x,
				   .payload = xp, .payload_len = CS };
	struct stream_chunk sref = { .image = 1, .idx = 2, .len = CS, .enc = STREAM_ENC_SENT_REF,
				     .src_image = 0, .src_idx = 3, .data = c };
	if ((err = stream_enc_chunk(e, &raw)) < 0 || (err = stream_enc_chunk(e, &zero)) < 0 ||
	    (err = stream_enc_chunk(e, &bref)) < 0 || (err = stream_enc_chunk(e, &xr)) < 0 ||
	    (err = stream_enc_chunk(e, &sref)) < 0 || (err = stream_enc_finish(e, NULL)) < 0) {
		stream_enc_free(e);
		return err;
	}
	stream_enc_free(e);
	return 0;
}

static int run_stream(const struct sbuf *b, const char *overlay_dir, const char *key, char **out)
{
	char path[320];
	size_t len;
	FILE *f;
	struct inspect_stream_opts o = { overlay_dir, (const uint8_t *)key, key ? strlen(key) : 0,
					 INSPECT_JSON };
	int err;

	snprintf(path, sizeof(path), "%s/s.hs", dir);
	if (ho_write_file_atomic(path, b->p, b->len) < 0)
		return HO_EIO;
	f = open_memstream(out, &len);
	err = inspect_stream(path, &o, f);
	fclose(f);
	return err;
}

static void test_stream(void)
{
	struct sbuf b;
	char *out = NULL;
	int level = ho_log_get_level();

	is_int(make_stream(&b, NULL), 0, "a stream with every supported record kind encodes");
	is_int(run_stream(&b, ovl, NULL, &out), 0, "it verifies with the overlay's bases");
	ok(out && strstr(out, "\"verified\":true"), "the report says verified");
	ok(out && strstr(out, "\"raw\":{\"records\":1,\"chunks\":1,\"bytes\":4096,\"payload\":4096}"),
	   "one raw record");
	ok(out && strstr(out, "\"zero\":{\"records\":1,\"chunks\":1,\"bytes\":4096,\"payload\":0}"),
	   "one zero record");
	ok(out && strstr(out, "\"base-ref\":{\"records\":1,\"chunks\":1,\"bytes\":4096,\"payload\":16}"),
	   "one base-ref record");
	ok(out && strstr(out, "\"xor-base\":{\"records\":1,\"chunks\":1,\"bytes\":4096,\"payload\":4096}"),
	   "one xor-base record");
	ok(out && strstr(out, "\"sent-ref\":{\"records\":1,\"chunks\":1,\"bytes\":4096,\"payload\":16}"),
	   "one sent-ref record, resolved from the stream itself");
	ok(out && strstr(out, "\"images\":[{\"image\":\"disk\"") &&
	   strstr(out, "\"chunks\":4,\"bytes\":16384}") && strstr(out, "\"chunks\":1,\"bytes\":4096}]"),
	   "chunks per image");
	free(out);
	out = NULL;

	ho_log_set_level(LOG_CRIT);
	is_int(run_stream(&b, NULL, NULL, &out), HO_EBASE, "without bases: HO_EBASE");
	ok(out && strstr(out, "\"verified\":false") && strstr(out, "give --overlay"),
	   "the partial report says why");
	free(out);
	out = NULL;
	b.p[b.len - 40] ^= 1;
	is_int(run_stream(&b, ovl, NULL, &out), HO_ECHECKSUM, "a flipped bit in END: HO_ECHECKSUM");
	free(out);
	out = NULL;
	is_int(run_stream(&(struct sbuf){ b.p, b.len / 2 }, ovl, NULL, &out), HO_ETRUNC,
	       "half a stream: HO_ETRUNC");
	free(out);
	out = NULL;
	free(b.p);

	is_int(make_stream(&b, "a sixteen byte key!"), 0, "an authenticated stream encodes");
	is_int(run_stream(&b, ovl, "another sixteen byte key", &out), HO_EAUTH, "a wrong key: HO_EAUTH");
	free(out);
	out = NULL;
	is_int(run_stream(&b, ovl, "a sixteen byte key!", &out), 0, "the right key verifies");
	ok(out && strstr(out, "\"authenticated\":true") && strstr(out, "\"macs\":64"),
	   "the MACs are accounted for");
	free(out);
	free(b.p);
	ho_log_set_level(level);
}

int main(void)
{
	ho_log_init("test_inspect");
	snprintf(dir, sizeof(dir), "/tmp/test_inspect.XXXXXX");
	if (!mkdtemp(dir)) {
		perror("mkdtemp");
		return 1;
	}
	snprintf(ovl, sizeof(ovl), "%s/ovl", dir);
	snprintf(base_path, sizeof(base_path), "%s/base.disk", dir);
	test_parsers();
	test_classify();
	test_stream();
	nftw(dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
	return done_testing();
}
