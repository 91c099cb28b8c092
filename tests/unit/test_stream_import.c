/*
 * test_stream_import.c — the importer against a real overlay and tracker: a small stream exported
 * from one overlay is damaged at every truncation point and by every single-bit flip, each
 * damaged copy is fed to
 * import_fd(), and each must be rejected with a verification error while the receiver's images
 * stay byte for byte what they were; the intact stream then applies and the images match the
 * sender's. Also: the published-range callback sees every chunk, a no-op re-apply, a full
 * stream refused by a receiver with local changes unless it is the post-copy of a fresh one, and
 * tens of thousands of references to chunks sent earlier, resolved from files and buffers.
 */
#include <fcntl.h>
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
#include "pipeline/export_int.h"
#include "pipeline/adapt.h"
#include "tests/unit/tap.h"

#define CS 512u

static char tmp[256];

static int sync_cb(void *arg) { return overlay_sync(arg); }

static int open_both(const char *dir, const struct overlay_base_spec *b, unsigned of, unsigned tf,
		     struct overlay **ov, struct tracker **t)
{
	uint64_t n[2];
	int rc = overlay_open(dir, b, b ? CS : 0, of, ov);
	if (rc)
		return rc;
	n[0] = overlay_nchunks(*ov, 0);
	n[1] = overlay_nchunks(*ov, 1);
	if ((rc = tracker_open(dir, 2, n, tf, t)))
		overlay_close(*ov);
	return rc;
}

/* Full images (base + modified chunks) hashed. */
static void image_hash(struct overlay *ov, struct tracker *t, uint8_t out[32])
{
	struct ho_sha256 *s = ho_sha256_new();
	uint8_t buf[CS];
	for (int img = 0; img < 2; img++)
		for (uint64_t c = 0; c < overlay_nchunks(ov, img); c++) {
			uint64_t len = HO_MIN(CS, overlay_image_size(ov, img) - c * CS);
			if (tracker_chunk_gen(t, img, c))
				overlay_read(ov, img, buf, len, c * CS);
			else
				overlay_read_base(ov, img, buf, len, c * CS);
			ho_sha256_update(s, buf, len);
		}
	ho_sha256_final(s, out);
	ho_sha256_free(s);
}

/* The sender's last step: close the generation (checked as `what`), hash its images into hash,
 * close overlay and tracker; *until gets the closed generation. */
static void seal(struct overlay *ov, struct tracker *t, const char *what, uint32_t *until, uint8_t hash[32])
{
	is_int(tracker_checkpoint(t, sync_cb, ov, until), 0, what);
	image_hash(ov, t, hash);
	tracker_close(t);
	overlay_close(ov);
}

struct mem { uint8_t *p; size_t len, cap; };

static int mem_emit(void *arg, const struct stream_piece *pc)
{
	struct mem *m = arg;
	if (m->len + pc->len > m->cap) {
		m->cap = (m->len + pc->len) * 2;
		m->p = realloc(m->p, m->cap);
	}
	memcpy(m->p + m->len, pc->buf, pc->len);
	m->len += pc->len;
	return 0;
}

/* A sink that waits on a "link" as the TCP sender does: 400 ms a frame, on the export's sender
 * thread, while the walk waits for it (its queue is full) and runs its idle hook. It counts the
 * frames during which the engine's probe count grew. From its second frame on it tells the engine
 * what a thin link (1 Mbit/s, saturated) carried, as the sender's link meter does: the engine
 * probes in the waits only on a link measured as the bottleneck. */
struct idle_sink {
	struct mem m;
	struct adapt *ad;
	unsigned waits, probed, probed_unmeasured;
};

static int idle_emit(void *arg, const struct stream_piece *pc)
{
	struct idle_sink *k = arg;
	struct adapt_status a, b;

	if (pc->kind == STREAM_EMIT_FRAME) {
		if (k->waits)
			adapt_observe_net(k->ad, 125000 / 2, 500000000ull, true, ho_mono_ns());
		adapt_status(k->ad, &a);
		usleep(400000);
		adapt_status(k->ad, &b);
		if (k->waits)
			k->probed += b.probes > a.probes;
		else
			k->probed_unmeasured += b.probes > a.probes;
		k->waits++;
	}
	return mem_emit(&k->m, pc);
}

static int import_buf(struct overlay *ov, struct tracker *t, const uint8_t *p, size_t len,
		      struct import_result *res, const struct import_opts *o)
{
	int fd = memfd_create("stream", MFD_CLOEXEC), rc;
	if (fd < 0 || write(fd, p, len) != (ssize_t)len)
		return HO_EIO;
	lseek(fd, 0, SEEK_SET);
	rc = import_fd(ov, t, fd, o, res);
	close(fd);
	return rc;
}

static bool verify_error(int rc)
{
	return rc == HO_ETRUNC || rc == HO_ECHECKSUM || rc == HO_ESEQ || rc == HO_EAUTH || rc == HO_EFORMAT ||
	       rc == HO_EVERSION || rc == HO_EDIGEST || rc == HO_ETRAILING || rc == HO_EBASE || rc == HO_ESTALE;
}

static uint64_t published_bytes;
static void on_published(void *arg, int img, uint64_t off, uint64_t len)
{
	(void)arg;
	(void)img;
	(void)off;
	published_bytes += len;
}

/* post-copy's export_opts.skip: the chunk server delivered disk chunk 1 */
static bool skip_disk1(void *arg, int img, uint64_t idx)
{
	(void)arg;
	return img == 0 && idx == 1;
}

/* post-copy's import_opts.arrive: counts what arrives (the test writes nothing) */
static uint64_t arrivals;
static int count_arrival(void *arg, int img, uint64_t idx, const uint8_t *data, uint32_t len)
{
	(void)arg;
	(void)img;
	(void)idx;
	(void)data;
	(void)len;
	arrivals++;
	return 0;
}

int main(void)
{
	char src[300], dst[300], base[300], cmd[700];
	struct overlay_base_spec b[2] = { { NULL, 0 }, { NULL, 20 * CS + 77 } };
	struct overlay *ov, *dov;
	struct tracker *t, *dt;
	struct mem m = { 0 };
	struct export_opts eo = { .frame_size = 1024 };
	struct export_result er;
	struct import_opts io = { .nosync = true };   /* thousands of rejected imports: skip staging fsyncs */
	struct import_result ir;
	uint8_t h0[32], h1[32], hs[32], buf[3 * CS];
	int rc;

	ho_log_init("test_stream_import");
	ho_log_set_level(LOG_CRIT);
	snprintf(tmp, sizeof(tmp), "/tmp/test_stream_import.XXXXXX");
	if (!mkdtemp(tmp))
		return 1;
	snprintf(src, sizeof(src), "%s/src", tmp);
	snprintf(dst, sizeof(dst), "%s/dst", tmp);
	snprintf(base, sizeof(base), "%s/disk.img", tmp);
	{
		FILE *f = fopen(base, "wb");
		for (unsigned i = 0; i < 32 * CS; i++)
			fputc((int)(i * 7 + i / 509), f);
		fclose(f);
	}
	b[0].path = base;

	/* sender: a handful of modified chunks on both images */
	rc = open_both(src, b, OVERLAY_CREATE | OVERLAY_LOCK, TRACKER_CREATE, &ov, &t);
	is_int(rc, 0, "create sender overlay");
	if (rc)
		return done_testing();
	for (int k = 0; k < 4; k++) {
		int img = k % 2;
		uint64_t c = (uint64_t)(k * 3 + 1) % overlay_nchunks(ov, img);
		uint64_t len = HO_MIN(CS, overlay_image_size(ov, img) - c * CS);
		for (unsigned i = 0; i < len; i++)
			buf[i] = (uint8_t)(k == 2 ? 0 : i * 13 + k);     /* one all-zero chunk */
		overlay_write(ov, img, buf, len, c * CS);
		tracker_mark(t, img, c, 1, ho_now_ns());
	}
	/* the short last chunk of memory */
	memset(buf, 0xab, 77);
	overlay_write(ov, 1, buf, 77, 20 * CS);
	tracker_mark(t, 1, 20, 1, ho_now_ns());
	uint32_t closed = 0;
	seal(ov, t, "sender checkpoint", &closed, hs);

	rc = export_run(src, closed, &eo, mem_emit, &m, &er);
	is_int(rc, 0, "export the reference stream");
	diag("reference stream: %zu bytes, %llu frames", m.len, (unsigned long long)er.frames);
	ok(m.len < 8000 && er.frames >= 3, "reference stream is small and has several frames");
	{
		struct export_opts so = eo;
		struct export_result sr;
		struct mem ms = { 0 };
		so.skip = skip_disk1;
		rc = export_run(src, closed, &so, mem_emit, &ms, &sr);
		ok(rc == 0 && er.chunks[0] == 2 && sr.chunks[0] == 1 && sr.chunks[1] == er.chunks[1],
		   "skip leaves out exactly the chunk it names (disk %llu of %llu, memory %llu)",
		   (unsigned long long)sr.chunks[0], (unsigned long long)er.chunks[0], (unsigned long long)sr.chunks[1]);
		free(ms.p);
	}

	/* receiver */
	rc = open_both(dst, b, OVERLAY_CREATE | OVERLAY_LOCK, TRACKER_CREATE, &dov, &dt);
	is_int(rc, 0, "create receiver overlay");
	if (rc)
		return done_testing();
	image_hash(dov, dt, h0);

	size_t bad = 0, runs = 0;
	uint8_t *p = malloc(m.len + 1);
	for (size_t cut = 0; cut < m.len; cut++) {
		rc = import_buf(dov, dt, m.p, cut, &ir, &io);
		runs++;
		if (!verify_error(rc) && bad++ < 5)
			diag("cut at %zu: rc %d", cut, rc);
	}
	ok(bad == 0, "%zu truncated copies rejected", runs);
	bad = runs = 0;
	for (size_t bit = 0; bit < m.len * 8; bit++) {
		size_t byte = bit / 8;
		memcpy(p, m.p, m.len);
		p[byte] ^= (uint8_t)(1u << (bit % 8));
		rc = import_buf(dov, dt, p, m.len, &ir, &io);
		runs++;
		if (!verify_error(rc) && bad++ < 5)
			diag("bit %zu: rc %d (%s)", bit, rc, ho_strerror(rc));
	}
	ok(bad == 0, "%zu single-bit flips rejected", runs);
	image_hash(dov, dt, h1);
	is_mem(h1, h0, 32, "receiver images unchanged by every rejected stream");
	{
		struct stat st;
		char sp[400];
		snprintf(sp, sizeof(sp), "%s/staging/stream.stage", dst);
		ok(stat(sp, &st) != 0, "no staging file left behind");
	}

	/* the intact stream applies; the callback sees every published byte */
	io.published = on_published;
	rc = import_buf(dov, dt, m.p, m.len, &ir, &io);
	is_int(rc, 0, "intact stream applies");
	image_hash(dov, dt, h1);
	is_mem(h1, hs, 32, "receiver images equal the sender's");
	is_int(published_bytes, er.input_bytes, "published callback covered every chunk");
	is_int(ir.chunks[0] + ir.chunks[1], er.chunks[0] + er.chunks[1], "chunk counts agree");
	rc = import_buf(dov, dt, m.p, m.len, &ir, &io);
	ok(rc == 0 && ir.already_applied, "re-applying it is a no-op");

	/* the same through import_feed() in small pieces: a no-op again, then a fresh receiver */
	{
		struct importer *im;
		size_t off = 0;
		rc = import_begin(dov, dt, &io, &im);
		while (!rc && off < m.len && !import_done(im)) {
			size_t n = HO_MIN((size_t)7, m.len - off);
			rc = import_feed(im, m.p + off, &n);
			off += n;
		}
		if (!rc)
			rc = import_finish(im, &ir);
		import_free(im);
		ok(rc == 0 && ir.already_applied, "7-byte pieces: the applied stream is recognised as a no-op");
	}
	tracker_close(dt);
	overlay_close(dov);
	{
		char dst2[300], sp[400];
		struct stat st;
		struct importer *im;
		size_t off = 0;
		snprintf(dst2, sizeof(dst2), "%s/dst2", tmp);
		rc = open_both(dst2, b, OVERLAY_CREATE | OVERLAY_LOCK, TRACKER_CREATE, &dov, &dt);
		if (!rc)
			rc = import_begin(dov, dt, &io, &im);
		while (!rc && off < m.len) {
			size_t n = HO_MIN((size_t)13, m.len - off);
			rc = import_feed(im, m.p + off, &n);
			off += n;
		}
		if (!rc)
			rc = import_finish(im, &ir);
		import_free(im);
		is_int(rc, 0, "13-byte pieces into a fresh receiver: applied");
		image_hash(dov, dt, h1);
		is_mem(h1, hs, 32, "13-byte pieces: receiver equals sender");
		snprintf(sp, sizeof(sp), "%s/staging/journal", dst2);
		ok(stat(sp, &st) != 0, "no journal left after publishing");
		tracker_close(dt);
		overlay_close(dov);
	}
	/* a receiver with a local change refuses a full stream, with arrive() too (post-copy), unless
	 * the post-copy began on a fresh overlay (the change is then its own or the resumed VM's) */
	{
		char dst3[300];
		uint8_t junk[CS];
		snprintf(dst3, sizeof(dst3), "%s/dst3", tmp);
		rc = open_both(dst3, b, OVERLAY_CREATE | OVERLAY_LOCK, TRACKER_CREATE, &dov, &dt);
		is_int(rc, 0, "create a receiver with a local change");
		if (rc)
			return done_testing();
		memset(junk, 0x5a, CS);
		overlay_write(dov, 0, junk, CS, 30 * CS);
		tracker_mark(dt, 0, 30, 1, ho_now_ns());
		struct import_opts fo = { .nosync = true };
		is_int(import_buf(dov, dt, m.p, m.len, &ir, &fo), HO_ESTALE, "a full stream onto local changes: refused");
		fo.arrive = count_arrival;
		is_int(import_buf(dov, dt, m.p, m.len, &ir, &fo), HO_ESTALE, "  ... also in post-copy when it began on them");
		is_int(arrivals, 0, "  ... and nothing arrived");
		fo.arrive_fresh = true;
		is_int(import_buf(dov, dt, m.p, m.len, &ir, &fo), 0, "  ... accepted in post-copy that began on a fresh overlay");
		is_int(arrivals, er.chunks[0] + er.chunks[1], "  ... every chunk of the stream arrived");
		ok(ir.until == closed && tracker_chunk_gen(dt, 0, 30) != 0, "  ... recorded as applied; the local change stays");
		tracker_close(dt);
		overlay_close(dov);
	}
	/* Two streams, many chunks. The first (48000 new chunks) goes to a fresh receiver: every
	 * chunk straight into the overlay (direct). The second rewrites every 4th chunk of the
	 * first, which the receiver now holds (staged, published at the end), and adds 48000 more
	 * (direct). Its staged chunks and their index outgrow the importer's 1 MiB write buffers,
	 * and its sent-refs are resolved from everywhere they can be: a third of the new chunks copy
	 * the chunk 20 before (in an earlier 16-chunk frame: still in the direct run of up to 256
	 * chunks, or written), a third copy one of the first stream's chunks (rewritten in this
	 * stream: staged; or held from the first stream). Each
	 * stream is also imported cut short first: what the receiver reads must not change. */
	{
		enum { N = 96000, H = N / 2 };
		char dbase[300], s4[300], d4[300], df[400];
		struct overlay_base_spec b4[2] = { { dbase, 0 }, { NULL, CS } };
		struct export_opts xo = { .mode = "xor-lz4", .frame_size = 16 * CS };
		struct mem m4 = { 0 }, m5 = { 0 };
		struct tracker_stats ts;
		uint8_t c[CS], h4s[32], h5s[32], hd[32], h0d[32];
		snprintf(dbase, sizeof(dbase), "%s/disk4.img", tmp);
		snprintf(s4, sizeof(s4), "%s/src4", tmp);
		snprintf(d4, sizeof(d4), "%s/dst4", tmp);
		snprintf(df, sizeof(df), "%s/disk.data", d4);
		int fd = open(dbase, O_CREAT | O_WRONLY | O_TRUNC, 0600);
		ok(fd >= 0 && ftruncate(fd, (off_t)N * CS) == 0, "a sparse %u-chunk base", (unsigned)N);
		if (fd >= 0)
			close(fd);
		rc = open_both(s4, b4, OVERLAY_CREATE | OVERLAY_LOCK, TRACKER_CREATE, &ov, &t);
		ok(rc == 0, "create a sender with %u changed chunks", (unsigned)H);
		if (rc)
			return done_testing();
		for (uint64_t k = 0; k < H; k++) {
			uint64_t x = k * 0x9e3779b97f4a7c15ull + 1;
			for (unsigned i = 0; i < CS; i += 8) {
				x ^= x << 13, x ^= x >> 7, x ^= x << 17;
				memcpy(c + i, &x, 8);
			}
			overlay_write(ov, 0, c, CS, k * CS);
			tracker_mark(t, 0, k, 1, ho_now_ns());
		}
		uint32_t until4 = 0, until5 = 0;
		seal(ov, t, "  ... checkpoint", &until4, h4s);
		rc = export_run(s4, until4, &xo, mem_emit, &m4, &er);
		is_int(rc, 0, "export them");
		rc = open_both(d4, b4, OVERLAY_CREATE | OVERLAY_LOCK, TRACKER_CREATE, &dov, &dt);
		is_int(rc, 0, "create its receiver");
		if (rc)
			return done_testing();
		struct import_opts o4 = { .nosync = true };
		image_hash(dov, dt, h0d);
		rc = import_buf(dov, dt, m4.p, m4.len * 6 / 10, &ir, &o4);
		ok(verify_error(rc), "the first stream cut short is rejected (%s)", ho_strerror(rc));
		image_hash(dov, dt, hd);
		ok(memcmp(h0d, hd, 32) == 0 && tracker_stats(dt, &ts) == 0 && ts.modified[0] + ts.modified[1] == 0,
		   "  ... the receiver reads what it read before, no chunk marked");
		fd = open(df, O_RDONLY);
		ok(fd >= 0 && pread(fd, c, CS, 0) == CS && !ho_is_zero(c, CS),
		   "  ... although its first chunks went straight into the data file");
		if (fd >= 0)
			close(fd);
		is_int(import_buf(dov, dt, m4.p, m4.len, &ir, &o4), 0, "the whole first stream applies");
		image_hash(dov, dt, hd);
		ok(memcmp(h4s, hd, 32) == 0, "  ... the receiver equals the sender");

		rc = open_both(s4, NULL, OVERLAY_LOCK, 0, &ov, &t);
		is_int(rc, 0, "the sender changes again");
		if (rc)
			return done_testing();
		for (uint64_t k = 0; k < N; k++) {
			uint64_t from;
			if (k < H && k % 4)
				continue;
			from = k < H || k % 3 == 0 ? k : k % 3 == 1 ? k - 20 : (k * 7919) % H;
			if (from == k) {
				uint64_t x = k * 0x9e3779b97f4a7c15ull + 7;
				for (unsigned i = 0; i < CS; i += 8) {
					x ^= x << 13, x ^= x >> 7, x ^= x << 17;
					memcpy(c + i, &x, 8);
				}
			} else {
				overlay_read(ov, 0, c, CS, from * CS);
			}
			overlay_write(ov, 0, c, CS, k * CS);
			tracker_mark(t, 0, k, 1, ho_now_ns());
		}
		seal(ov, t, "  ... checkpoint", &until5, h5s);
		xo.since = until4;
		rc = export_run(s4, until5, &xo, mem_emit, &m5, &er);
		is_int(rc, 0, "export the second stream");
		/* the copies of the chunk 20 before, and of a first-stream chunk this stream rewrote */
		ok(er.sent_refs >= (N - H) / 3 + (N - H) / 12 - 10, "  ... %llu as references to chunks sent before",
		   (unsigned long long)er.sent_refs);
		rc = import_buf(dov, dt, m5.p, m5.len * 6 / 10, &ir, &o4);
		ok(verify_error(rc), "the second stream cut short is rejected (%s)", ho_strerror(rc));
		image_hash(dov, dt, hd);
		ok(memcmp(h4s, hd, 32) == 0, "  ... the receiver still reads the first stream's chunks");
		is_int(import_buf(dov, dt, m5.p, m5.len, &ir, &o4), 0, "the whole second stream applies");
		image_hash(dov, dt, hd);
		ok(memcmp(h5s, hd, 32) == 0, "  ... every chunk and every reference resolved to the right bytes");
		tracker_close(dt);
		overlay_close(dov);
		free(m4.p);
		free(m5.p);
	}
	{
		/* adaptive, through a sink that waits: the walk probes while it waits for its sender
		 * thread, and the stream it makes still applies exactly */
		struct export_opts ao = eo;
		struct idle_sink k = { 0 };
		struct export_result ar;
		char d2[300];
		uint8_t h2[32];
		ao.adaptive = true;
		rc = export_adapt_new(&ao, &k.ad);
		is_int(rc, 0, "an engine for the adaptive export");
		if (!rc)
			rc = export_run_adapt(src, closed, &ao, k.ad, idle_emit, &k, true, &ar);
		is_int(rc, 0, "adaptive export through a waiting sink");
		ok(k.waits >= 3, "the sink waited %u times", k.waits);
		is_int(k.probed_unmeasured, 0, "  ... no probe in the first, before the link was measured");
		ok(k.probed >= 1, "  ... then probes while later frames went out (%u of %u)", k.probed, k.waits - 1);
		snprintf(d2, sizeof(d2), "%s/dst-idle", tmp);
		rc = open_both(d2, b, OVERLAY_CREATE | OVERLAY_LOCK, TRACKER_CREATE, &dov, &dt);
		if (!rc)
			rc = import_buf(dov, dt, k.m.p, k.m.len, &ir, &io);
		is_int(rc, 0, "the stream applies");
		if (!rc) {
			image_hash(dov, dt, h2);
			is_mem(h2, hs, 32, "  ... and the receiver's images are the sender's");
			tracker_close(dt);
			overlay_close(dov);
		}
		adapt_free(k.ad);
		free(k.m.p);
	}
	free(p);
	free(m.p);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmp);
	if (system(cmd) != 0)
		diag("cannot remove %s", tmp);
	return done_testing();
}
