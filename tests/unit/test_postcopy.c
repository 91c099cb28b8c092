/*
 * test_postcopy.c — what post-copy adds to the pipeline, against a real overlay and tracker:
 * the manifest names exactly the chunks of (since, until] and survives no damage (every
 * truncation, bit flips, out-of-range runs are refused, never read out of bounds); the chunk
 * server answers requests over loopback TCP with the overlay's bytes (decoded against the base),
 * prefetches the following chunks of a run, ignores chunks outside the manifest, and a receiver
 * refuses a record whose bytes were changed on the way, with a key (HMAC) and without (XXH3).
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include "common/common.h"
#include "overlay/overlay.h"
#include "tracker/tracker.h"
#include "pipeline/pipeline.h"
#include "pipeline/dedup.h"
#include "tests/unit/tap.h"

#define CS 4096u
#define NCH 64u            /* chunks per image */

static char dir[256];
static uint8_t content[2][NCH][CS];     /* what the overlay holds for modified chunks */
static uint8_t disk50[CS];               /* base disk chunk 50: random; memory 60 holds it too */
static bool modified[2][NCH];

static int sync_cb(void *arg) { return overlay_sync(arg); }

/* base: a pattern; modified chunks: the base with a few bytes changed (delta-friendly), one
 * all-zero chunk, one chunk equal to its base (a revert), one random chunk */
static void base_chunk(int img, uint64_t c, uint8_t *b)
{
	for (unsigned i = 0; i < CS; i++)
		b[i] = (uint8_t)(i * 7 + c * 13 + img * 101 + (i >> 5));
}

static int make_overlay(uint32_t *gen1, uint32_t *gen2)
{
	char path[300];
	struct overlay_base_spec b[2];
	struct overlay *ov;
	struct tracker *t;
	uint64_t n[2] = { NCH, NCH };
	uint8_t buf[CS];
	for (int img = 0; img < 2; img++) {
		snprintf(path, sizeof(path), "%s/base%d", dir, img);
		FILE *f = fopen(path, "w");
		for (uint64_t c = 0; c < NCH; c++) {
			base_chunk(img, c, buf);
			if (img == 0 && c == 50) {
				ho_random(disk50, CS);
				memcpy(buf, disk50, CS);
			}
			fwrite(buf, 1, CS, f);
		}
		fclose(f);
	}
	char b0[300], b1[300], ovl[300];
	snprintf(b0, sizeof(b0), "%s/base0", dir);
	snprintf(b1, sizeof(b1), "%s/base1", dir);
	snprintf(ovl, sizeof(ovl), "%s/ovl", dir);
	b[0] = (struct overlay_base_spec){ b0, 0 };
	b[1] = (struct overlay_base_spec){ b1, 0 };
	if (overlay_open(ovl, b, CS, OVERLAY_CREATE | OVERLAY_LOCK, &ov))
		return -1;
	if (tracker_open(ovl, 2, n, TRACKER_CREATE | TRACKER_NOSYNC, &t))
		return -1;
	/* generation 1: disk 3..5; generation 2: disk 10..13, memory 0, 7, 8, 9, 40, 41 (40 again),
	 * 60 (a page that holds disk block 50, as a page cache does) */
	static const struct { int img; unsigned c; int gen; } w[] = {
		{ 0, 3, 1 }, { 0, 4, 1 }, { 0, 5, 1 },
		{ 0, 10, 2 }, { 0, 11, 2 }, { 0, 12, 2 }, { 0, 13, 2 },
		{ 1, 0, 2 }, { 1, 7, 2 }, { 1, 8, 2 }, { 1, 9, 2 }, { 1, 40, 2 }, { 1, 41, 2 }, { 1, 60, 2 },
	};
	for (int gen = 1; gen <= 2; gen++) {
		for (size_t k = 0; k < HO_ARRAY_SIZE(w); k++) {
			if (w[k].gen != gen)
				continue;
			uint8_t *d = content[w[k].img][w[k].c];
			base_chunk(w[k].img, w[k].c, d);
			if (w[k].c == 7)
				memset(d, 0, CS);                 /* zero */
			else if (w[k].c == 40)
				ho_random(d, CS);                 /* incompressible */
			else if (w[k].c == 41)
				memcpy(d, content[1][40], CS);    /* ...but the same again */
			else if (w[k].c == 60)
				memcpy(d, disk50, CS);            /* a disk block in RAM */
			else if (w[k].c != 12)
				memcpy(d + 100 * w[k].c % 3000, "post-copy!", 10);   /* 12: a revert */
			modified[w[k].img][w[k].c] = true;
			overlay_write(ov, w[k].img, d, CS, (uint64_t)w[k].c * CS);
			tracker_mark(t, w[k].img, w[k].c, 1, ho_now_ns());
		}
		if (tracker_checkpoint(t, sync_cb, ov, gen == 1 ? gen1 : gen2))
			return -1;
	}
	tracker_close(t);
	overlay_close(ov);
	return 0;
}

struct runs { int n; int img[32]; uint64_t idx[32], count[32]; };

static int runs_cb(void *arg, int img, uint64_t idx, uint64_t count)
{
	struct runs *r = arg;
	if (r->n < 32) {
		r->img[r->n] = img;
		r->idx[r->n] = idx;
		r->count[r->n++] = count;
	}
	return 0;
}

static int count_cb(void *arg, int img, uint64_t idx, uint64_t count)
{
	(void)img;
	(void)idx;
	*(uint64_t *)arg += count;
	return 0;
}

/* ---- the receiving side, on a thread ------------------------------------------------------------ */

struct rx {
	int fd;
	struct overlay *ov;
	const uint8_t *key;
	size_t key_len;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	bool ready, ended;
	int rc;
	unsigned got[2][NCH];
	bool same[2][NCH];
	int chunks;
};

static void rx_ready(void *arg)
{
	struct rx *r = arg;
	pthread_mutex_lock(&r->mu);
	r->ready = true;
	pthread_cond_broadcast(&r->cv);
	pthread_mutex_unlock(&r->mu);
}

static int rx_chunk(void *arg, int img, uint64_t idx, const uint8_t *data, uint32_t len)
{
	struct rx *r = arg;
	pthread_mutex_lock(&r->mu);
	if (img >= 0 && img < 2 && idx < NCH) {
		r->got[img][idx]++;
		r->same[img][idx] = len == CS && !memcmp(data, content[img][idx], CS);
	}
	r->chunks++;
	pthread_cond_broadcast(&r->cv);
	pthread_mutex_unlock(&r->mu);
	return 0;
}

static void *rx_main(void *arg)
{
	struct rx *r = arg;
	int rc = postcopy_is_server(r->fd, 5000) ? postcopy_receive(r->fd, r->ov, r->key, r->key_len, rx_ready, rx_chunk, r)
						 : HO_EPROTO;
	pthread_mutex_lock(&r->mu);
	r->rc = rc;
	r->ended = true;
	pthread_cond_broadcast(&r->cv);
	pthread_mutex_unlock(&r->mu);
	return NULL;
}

/* wait until cond(r) or 5 s */
static bool rx_wait(struct rx *r, bool (*cond)(struct rx *, void *), void *arg)
{
	uint64_t deadline = ho_mono_ns() + 5000000000ull;
	bool ok_ = false;
	pthread_mutex_lock(&r->mu);
	while (!(ok_ = cond(r, arg)) && ho_mono_ns() < deadline) {
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += 50000000;
		if (ts.tv_nsec >= 1000000000) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000;
		}
		pthread_cond_timedwait(&r->cv, &r->mu, &ts);
	}
	pthread_mutex_unlock(&r->mu);
	return ok_;
}

static bool is_ready(struct rx *r, void *a) { (void)a; return r->ready || r->ended; }
static bool has_chunks(struct rx *r, void *a) { return r->chunks >= *(int *)a || r->ended; }
static bool has_ended(struct rx *r, void *a) { (void)a; return r->ended; }

/* A proxy that flips one byte of the server → receiver direction after `after` bytes. */
struct proxy { int a, b; long after; pthread_t th; };

static void *proxy_main(void *arg)
{
	struct proxy *p = arg;
	uint8_t buf[65536];
	long seen = 0;
	struct pollfd pf[2] = { { .fd = p->a, .events = POLLIN }, { .fd = p->b, .events = POLLIN } };
	for (;;) {
		if (poll(pf, 2, 10000) <= 0)
			break;
		for (int i = 0; i < 2; i++) {
			if (!(pf[i].revents & (POLLIN | POLLHUP | POLLERR)))
				continue;
			ssize_t n = read(pf[i].fd, buf, sizeof(buf));
			if (n <= 0)
				goto out;
			if (i == 0 && p->after >= 0 && seen + n > p->after) {
				buf[p->after - seen] ^= 0x10;
				p->after = -1;
			}
			if (i == 0)
				seen += n;
			if (ho_write_full(pf[1 - i].fd, buf, (size_t)n))
				goto out;
		}
	}
out:
	shutdown(p->a, SHUT_RDWR);
	shutdown(p->b, SHUT_RDWR);
	return NULL;
}

/* The receiving end: accept the server's connection (through a damaging proxy when asked),
 * then serve it like the mirror does. */
struct recv_side { int lfd; long flip; struct rx *r; struct proxy px; int sv[2]; bool proxied; };

static void *recv_main(void *arg)
{
	struct recv_side *rs = arg;
	struct pollfd p = { .fd = rs->lfd, .events = POLLIN };
	int fd = poll(&p, 1, 5000) == 1 ? accept(rs->lfd, NULL, NULL) : -1;
	if (fd >= 0 && rs->flip >= 0 && socketpair(AF_UNIX, SOCK_STREAM, 0, rs->sv) == 0) {
		rs->px = (struct proxy){ .a = fd, .b = rs->sv[0], .after = rs->flip };
		rs->proxied = pthread_create(&rs->px.th, NULL, proxy_main, &rs->px) == 0;
		fd = rs->sv[1];
	}
	pthread_mutex_lock(&rs->r->mu);
	rs->r->fd = fd;
	pthread_mutex_unlock(&rs->r->mu);
	if (fd < 0) {
		pthread_mutex_lock(&rs->r->mu);
		rs->r->ended = true;
		rs->r->rc = HO_ECONN;
		pthread_cond_broadcast(&rs->r->cv);
		pthread_mutex_unlock(&rs->r->mu);
		return NULL;
	}
	return rx_main(rs->r);
}

/* one session: the server on the overlay, the receiver on a thread; with flip >= 0 a proxy
 * damages the byte at that offset of what the server sends; flip -2 asks for memory 60 only (a
 * disk block in RAM), indexed_session says whether the base indexes are cached */
static bool indexed_session;
static void session(const char *name, const uint8_t *mf, size_t mlen, const uint8_t *key, size_t key_len, long flip)
{
	char ovl[300], addr[64];
	int lfd;
	uint16_t port;
	struct overlay *ov;
	snprintf(ovl, sizeof(ovl), "%s/ovl", dir);
	if (overlay_open(ovl, NULL, 0, OVERLAY_READONLY, &ov) || transport_listen("127.0.0.1:0", &lfd, &port)) {
		ok(0, "%s: set up", name);
		return;
	}
	snprintf(addr, sizeof(addr), "127.0.0.1:%u", port);
	struct rx r = { .ov = ov, .key = key, .key_len = key_len, .fd = -1 };
	pthread_mutex_init(&r.mu, NULL);
	pthread_cond_init(&r.cv, NULL);
	struct recv_side rs = { .lfd = lfd, .flip = flip, .r = &r, .sv = { -1, -1 } };
	pthread_t rth;
	pthread_create(&rth, NULL, recv_main, &rs);
	/* the server connects and waits for the receiver's nonce */
	struct postcopy_server *srv = NULL;
	int rc = postcopy_server_start(ovl, mf, mlen, key, key_len, addr, 5000, &srv);
	ok(rc == 0, "%s: server started (%s)", name, ho_strerror(rc));
	ok(rx_wait(&r, is_ready, NULL) && r.ready, "%s: channel open (nonce exchanged)", name);
	if (rc || !r.ready) {
		postcopy_server_stop(srv, NULL);
		goto out;
	}
	if (flip == -1) {
		/* a chunk outside the manifest is not answered; memory 7 answers 7, 8, 9 (its run) */
		postcopy_request(r.fd, 0, 20);
		postcopy_request(r.fd, 1, 7);
		int want = 3;
		ok(rx_wait(&r, has_chunks, &want), "%s: a request brings its chunk and the rest of its run", name);
		usleep(100000);
		pthread_mutex_lock(&r.mu);
		ok(r.got[1][7] == 1 && r.got[1][8] == 1 && r.got[1][9] == 1 && r.got[0][20] == 0 && r.chunks == 3,
		   "%s: memory 7, 8, 9 once each, nothing for disk 20 (not in the manifest)", name);
		ok(r.same[1][7] && r.same[1][8] && r.same[1][9], "%s: their bytes are the overlay's (zero, deltas)", name);
		pthread_mutex_unlock(&r.mu);
		/* what the stream may leave out: exactly what was written whole */
		ok(postcopy_server_sent(srv, 1, 7) && postcopy_server_sent(srv, 1, 9) && !postcopy_server_sent(srv, 1, 10) &&
		   !postcopy_server_sent(srv, 0, 20) && !postcopy_server_sent(srv, 0, 10) &&
		   !postcopy_server_sent(srv, 2, 0) && !postcopy_server_sent(srv, 1, 1ull << 40),
		   "%s: sent: memory 7..9 yes; memory 10, disk 10, 20, out of range no", name);
		/* the rest of the manifest */
		postcopy_request(r.fd, 0, 10);       /* answers 10..13 */
		postcopy_request(r.fd, 0, 12);       /* asked again (crossed its answer): not sent twice */
		postcopy_request(r.fd, 1, 0);
		postcopy_request(r.fd, 1, 40);       /* answers 40, 41 */
		want = 3 + 4 + 1 + 2;
		ok(rx_wait(&r, has_chunks, &want), "%s: all requests answered", name);
		usleep(100000);
		pthread_mutex_lock(&r.mu);
		ok(r.chunks == 10 && r.got[0][12] == 1, "%s: no chunk twice (%d chunks, disk 12 %d times)", name, r.chunks,
		   r.got[0][12]);
		bool all = true;
		for (unsigned c = 10; c <= 13; c++)
			all = all && r.got[0][c] >= 1 && r.same[0][c];
		all = all && r.same[1][0] && r.same[1][40] && r.same[1][41];
		ok(all, "%s: disk 10..13 (one a revert to base) and memory 0, 40, 41 (random, twice) decode to the overlay's bytes",
		   name);
		pthread_mutex_unlock(&r.mu);
		struct postcopy_stats st;
		postcopy_server_stop(srv, &st);
		ok(rx_wait(&r, has_ended, NULL) && r.rc == 0, "%s: the receiver ends cleanly when the server stops (%s)", name,
		   ho_strerror(r.rc));
		ok(st.requests == 5 && st.chunks == (uint64_t)r.chunks, "%s: stats: %llu requests, %llu chunks, %llu bytes",
		   name, (unsigned long long)st.requests, (unsigned long long)st.chunks, (unsigned long long)st.bytes);
		/* one random chunk costs CS; its repeat, the deltas and the zero chunk little (the
		 * answers are one zstd stream: per record, the repeat would cost CS again) */
		ok(st.bytes < 2u * CS, "%s: deltas and a repeat keep answers small (%llu bytes for %llu chunks of %u)", name,
		   (unsigned long long)st.bytes, (unsigned long long)st.chunks, CS);
	} else if (flip == -2) {
		/* memory 60 holds base disk block 50 (random bytes): with the base indexes the exporter
		 * cached it goes as a reference to that block, without them as its bytes */
		postcopy_request(r.fd, 1, 60);
		int want = 1;
		ok(rx_wait(&r, has_chunks, &want), "%s: memory 60 answered", name);
		pthread_mutex_lock(&r.mu);
		ok(r.chunks == 1 && r.same[1][60], "%s: it decodes to the overlay's bytes (base disk block 50)", name);
		pthread_mutex_unlock(&r.mu);
		struct postcopy_stats st;
		postcopy_server_stop(srv, &st);
		ok(rx_wait(&r, has_ended, NULL) && r.rc == 0, "%s: the receiver ends cleanly", name);
		if (indexed_session)
			ok(st.bytes < 200, "%s: a reference to the disk block: %llu bytes", name, (unsigned long long)st.bytes);
		else
			ok(st.bytes > CS / 2, "%s: the block's bytes: %llu bytes", name, (unsigned long long)st.bytes);
	} else {
		postcopy_request(r.fd, 1, 40);       /* the random chunk: its payload is where the flip lands */
		bool ended = rx_wait(&r, has_ended, NULL);
		ok(ended && r.rc == (key ? HO_EAUTH : HO_ECHECKSUM), "%s: a damaged record is refused (%s)", name,
		   ho_strerror(r.rc));
		pthread_mutex_lock(&r.mu);
		ok(r.chunks == 0, "%s: nothing was handed out", name);
		pthread_mutex_unlock(&r.mu);
		postcopy_server_stop(srv, NULL);
	}
out:
	pthread_join(rth, NULL);
	if (rs.proxied) {
		shutdown(rs.px.a, SHUT_RDWR);
		shutdown(rs.px.b, SHUT_RDWR);
		pthread_join(rs.px.th, NULL);
		close(rs.px.a);
		close(rs.sv[0]);
	}
	if (r.fd >= 0)
		close(r.fd);
	close(lfd);
	overlay_close(ov);
}

int main(void)
{
	uint32_t g1 = 0, g2 = 0;
	snprintf(dir, sizeof(dir), "/tmp/test_postcopy.XXXXXX");
	if (!mkdtemp(dir))
		return 1;
	if (make_overlay(&g1, &g2)) {
		ok(0, "make the overlay");
		return done_testing();
	}
	char ovl[300];
	snprintf(ovl, sizeof(ovl), "%s/ovl", dir);

	/* ---- manifest ---- */
	uint8_t *mf = NULL;
	size_t mlen = 0;
	uint64_t nch = 0, cnt = 0, n[2] = { NCH, NCH };
	is_int(postcopy_manifest(ovl, g1, g2, &mf, &mlen, &nch), 0, "manifest of generation 2");
	is_int(nch, 11, "it names 11 chunks");
	struct runs r = { 0 };
	is_int(postcopy_manifest_foreach(mf, mlen, n, runs_cb, &r), 0, "it parses");
	ok(r.n == 5 && r.img[0] == 0 && r.idx[0] == 10 && r.count[0] == 4 && r.img[1] == 1 && r.idx[1] == 0 &&
	   r.count[1] == 1 && r.idx[2] == 7 && r.count[2] == 3 && r.idx[3] == 40 && r.count[3] == 2 &&
	   r.idx[4] == 60 && r.count[4] == 1, "runs: disk 10+4, memory 0+1, 7+3, 40+2, 60+1");
	ok(mlen < 32, "compact: %zu bytes", mlen);
	uint8_t *all = NULL;
	size_t alen = 0;
	is_int(postcopy_manifest(ovl, 0, g2, &all, &alen, &nch), 0, "manifest of generations 1..2");
	is_int(nch, 14, "it names 14 chunks");
	free(all);
	/* damage: every truncation and every bit flip is refused or stays in bounds */
	int trunc_ok = 1, flips_bounded = 1;
	for (size_t k = 0; k < mlen; k++)
		if (postcopy_manifest_foreach(mf, k, n, count_cb, &cnt) != HO_ECORRUPT)
			trunc_ok = 0;
	uint8_t *d = malloc(mlen + 1);
	for (size_t k = 0; k < mlen * 8; k++) {
		memcpy(d, mf, mlen);
		d[k / 8] ^= (uint8_t)(1u << (k % 8));
		struct runs rr = { 0 };
		int rc = postcopy_manifest_foreach(d, mlen, n, runs_cb, &rr);
		for (int i = 0; i < rr.n; i++)
			if (rr.idx[i] + rr.count[i] > NCH)
				flips_bounded = 0;
		if (rc && rc != HO_ECORRUPT)
			flips_bounded = 0;
	}
	memcpy(d, mf, mlen);
	d[mlen] = 0;
	ok(trunc_ok, "every truncation of the manifest is refused");
	ok(flips_bounded, "no bit flip yields a run outside the images");
	is_int(postcopy_manifest_foreach(d, mlen + 1, n, count_cb, &cnt), HO_ECORRUPT, "a trailing byte is refused");
	uint64_t small[2] = { 12, NCH };
	is_int(postcopy_manifest_foreach(mf, mlen, small, count_cb, &cnt), HO_ECORRUPT,
	       "a run beyond the receiver's image is refused");
	free(d);

	/* ---- the chunk server ---- */
	uint8_t key[32];
	ho_random(key, sizeof(key));
	session("no key", mf, mlen, NULL, 0, -1);
	session("key", mf, mlen, key, sizeof(key), -1);
	session("damaged, no key", mf, mlen, NULL, 0, 40 + 32 + 200);
	session("damaged, key", mf, mlen, key, sizeof(key), 40 + 32 + 200);
	session("disk block in RAM, no cached base index", mf, mlen, key, sizeof(key), -2);
	{
		/* the exporter's base indexes, cached where the chunk server looks for them */
		char cache[300];
		snprintf(cache, sizeof(cache), "%s/cache", dir);
		setenv("HANDOFF_CACHE", cache, 1);
		struct overlay *ov;
		bool built = true;
		if (overlay_open(ovl, NULL, 0, OVERLAY_READONLY, &ov) == 0) {
			for (int i = 0; i < 2; i++) {
				struct baseidx *bi = NULL;
				bool b = false;
				built = built && baseidx_open(NULL, overlay_base_identity(ov, i), overlay_base_fd(ov, i), CS, 0,
								 &bi, &b) == 0 && b;
				baseidx_free(bi);
			}
			overlay_close(ov);
		}
		ok(built, "base indexes built into the cache");
		indexed_session = true;
		session("disk block in RAM, cached base index", mf, mlen, key, sizeof(key), -2);
		unsetenv("HANDOFF_CACHE");
	}
	free(mf);
	char cmd[300];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	if (system(cmd) != 0)
		diag("cannot remove %s", dir);
	return done_testing();
}
