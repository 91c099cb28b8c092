/*
 * handoff-mirror — the destination's mount: the same FUSE view as handoff-mount over the same base
 * images, whose overlay is fed by handoff streams (from files or stdin given on the command line,
 * from senders on a TCP listener, and from `handoff-import` through the control socket) instead of
 * by a local VM. Each stream is verified whole before it is published; published ranges are
 * dropped from the kernel's page cache so readers see the new bytes. This file only joins fs/ and
 * pipeline/ (they never include each other); see handoff-mirror(8).
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <stdint.h>
#include <unistd.h>
#include "common/common.h"
#include "common/ctl.h"
#include "common/daemon.h"
#include "overlay/overlay.h"
#include "tracker/tracker.h"
#include "fs/fs.h"
#include "pipeline/pipeline.h"

/* exit codes: those of handoff-mount(8) for the mount, of handoff-import(1) for a stream given
 * on the command line (see handoff-mirror(8)) */

/* Post-copy (handoff-vm): the destination VM runs before the last stream arrived. The control
 * request "postcopy" (with the manifest's fd) marks the manifest's chunks pending in fs/ — every
 * access to them waits — and makes the next stream an in-place one: each chunk it brings is
 * written as soon as its frame verified, if it is still awaited. Chunks the VM waits for are
 * asked for on the source's chunk-server connection (postcopy_receive) and written when they come
 * from there first; the stream's verified copy of such a chunk must then be the same bytes. */
enum pc_state { PC_NONE, PC_ACTIVE, PC_DONE, PC_FAILED };

struct postcopy {
	pthread_mutex_t lock;           /* awaited/served bitmaps, the overlay writes of arrivals */
	enum pc_state state;
	char why[200];                  /* PC_FAILED: what went wrong */
	uint8_t *awaited[OVERLAY_NIMAGES];
	uint8_t *served[OVERLAY_NIMAGES];   /* written from the chunk server ... */
	uint64_t *hash[OVERLAY_NIMAGES];    /* ... with this XXH3 of its bytes */
	uint64_t nchunks[OVERLAY_NIMAGES], total, from_server, from_stream;
	pthread_mutex_t want_lock;      /* the chunk-server connection and requests queued for it */
	int server_fd;
	struct { int img; uint64_t idx; } queued[256];
	unsigned nqueued;
	uint64_t requests;
	bool fresh;                     /* it began on an overlay without changes (import_opts.arrive_fresh) */
};

struct mirror {
	struct fs *fs;
	struct overlay *ov;
	struct tracker *tr;
	uint8_t *key;
	size_t key_len;
	const char *listen;
	const char *port_file;
	unsigned threads;               /* -T: decoding threads per stream */
	int listen_fd;
	int stop_pipe[2];
	pthread_t listener;
	bool listening;
	pthread_mutex_t apply_lock;     /* one stream is imported at a time */
	uint64_t streams, failures;
	struct postcopy pc;
};

static void usage(FILE *f)
{
	fprintf(f,
"usage: handoff-mirror [options] [--disk BASE_DISK] [--memory BASE_MEM | --memory-size SIZE]\n"
"                      [--listen ADDR:PORT] [--from FILE|-]... OVERLAY_DIR MOUNTPOINT\n"
"\n"
"Mount MOUNTPOINT/disk and MOUNTPOINT/memory over the base images like handoff-mount, and apply\n"
"handoff streams to OVERLAY_DIR: those named with --from (before the mount serves), those sent\n"
"by handoff-export --to to the --listen address, and those handed over by handoff-import.\n"
"\n"
"  --disk FILE / --memory FILE / --memory-size SIZE / --chunk-size SIZE\n"
"                         the base images, as for handoff-mount (needed for a new overlay)\n"
"  --listen ADDR:PORT     accept senders on this TCP address (PORT 0: any free port)\n"
"  --port-file FILE       write the bound port to FILE once listening\n"
"  --from FILE|-          apply this stream first (repeatable; - is standard input)\n"
"  --key FILE             pre-shared key: accept only streams authenticated with it\n"
"  -T, --threads N        decode each stream's frames on N threads (default: all CPUs)\n"
"  -f, --foreground       do not daemonize\n"
"  --ready-fd N           write \"ready\" to fd N once the mount serves requests\n"
"  --allow-other          let other users access the mount\n"
"  -q, --quiet / -v, --verbose / -h, --help\n");
}

static void published(void *arg, int img, uint64_t off, uint64_t len)
{
	struct mirror *m = arg;
	if (m->fs) {
		int rc = fs_invalidate(m->fs, img, off, len);
		if (rc)
			ho_warn("cannot drop cached pages of %s: %s", overlay_image_name(img), ho_strerror(rc));
	}
}

/* ---- post-copy -------------------------------------------------------------------------------- */

static bool pc_bit(const uint8_t *b, uint64_t i) { return b && (b[i >> 3] >> (i & 7) & 1); }
static void pc_set(uint8_t *b, uint64_t i) { b[i >> 3] |= (uint8_t)(1u << (i & 7)); }
static void pc_clear(uint8_t *b, uint64_t i) { b[i >> 3] &= (uint8_t)~(1u << (i & 7)); }

static void pc_free(struct postcopy *pc)
{
	for (int i = 0; i < OVERLAY_NIMAGES; i++) {
		free(pc->awaited[i]);
		free(pc->served[i]);
		free(pc->hash[i]);
		pc->awaited[i] = pc->served[i] = NULL;
		pc->hash[i] = NULL;
	}
}

/* state PC_FAILED with a reason; every access still waiting fails (EIO) */
static void pc_fail(struct mirror *m, const char *why)
{
	pthread_mutex_lock(&m->pc.lock);
	if (m->pc.state == PC_ACTIVE) {
		m->pc.state = PC_FAILED;
		snprintf(m->pc.why, sizeof(m->pc.why), "%s", why);
		ho_err("post-copy failed: %s", why);
	}
	pthread_mutex_unlock(&m->pc.lock);
	if (m->fs)
		fs_pending_fail(m->fs);
}

/* write an awaited chunk in place (caller holds pc.lock): data, then the tracker, then wake */
static int pc_write(struct mirror *m, int img, uint64_t idx, const uint8_t *data, uint32_t len)
{
	int rc = overlay_write(m->ov, img, data, len, idx * overlay_chunk_size(m->ov));
	if (rc)
		return rc;
	tracker_mark(m->tr, img, idx, 1, ho_now_ns());
	pc_clear(m->pc.awaited[img], idx);
	fs_chunk_arrived(m->fs, img, idx, 1);
	return 0;
}

/* a chunk of the in-place stream, verified */
static int pc_from_stream(void *arg, int img, uint64_t idx, const uint8_t *data, uint32_t len)
{
	struct mirror *m = arg;
	int rc = 0;
	if (img < 0 || img >= OVERLAY_NIMAGES || idx >= m->pc.nchunks[img])
		return HO_ECORRUPT;
	pthread_mutex_lock(&m->pc.lock);
	if (pc_bit(m->pc.awaited[img], idx)) {
		rc = pc_write(m, img, idx, data, len);
		m->pc.from_stream++;
	} else if (pc_bit(m->pc.served[img], idx)) {
		if (m->pc.hash[img][idx] != ho_xxh64(data, len)) {
			ho_err("post-copy: chunk %" PRIu64 " of '%s' from the chunk server differs from the verified stream",
			       idx, overlay_image_name(img));
			rc = HO_EDIGEST;
		}
	} else {
		ho_err("post-copy: the stream carries chunk %" PRIu64 " of '%s', which its manifest did not name", idx,
		       overlay_image_name(img));
		rc = HO_EPROTO;
	}
	pthread_mutex_unlock(&m->pc.lock);
	return rc;
}

struct pc_conn { struct mirror *m; int fd; };

/* a chunk from the source's chunk server (authenticated or checksummed) */
static int pc_from_server(void *arg, int img, uint64_t idx, const uint8_t *data, uint32_t len)
{
	struct mirror *m = ((struct pc_conn *)arg)->m;
	int rc = 0;
	if (img < 0 || img >= OVERLAY_NIMAGES || idx >= m->pc.nchunks[img])
		return HO_ECORRUPT;
	pthread_mutex_lock(&m->pc.lock);
	if (m->pc.state == PC_ACTIVE && pc_bit(m->pc.awaited[img], idx)) {
		if (!m->pc.hash[img] && !(m->pc.hash[img] = malloc(m->pc.nchunks[img] * sizeof(uint64_t)))) {
			rc = HO_ENOMEM;
		} else {
			m->pc.hash[img][idx] = ho_xxh64(data, len);
			pc_set(m->pc.served[img], idx);
			rc = pc_write(m, img, idx, data, len);
			m->pc.from_server++;
		}
	}
	pthread_mutex_unlock(&m->pc.lock);
	return rc;
}

/* fs/: an access waits for chunk idx of img: ask the source for it */
static void pc_fetch(void *arg, int img, uint64_t idx)
{
	struct mirror *m = arg;
	pthread_mutex_lock(&m->pc.want_lock);
	m->pc.requests++;
	if (m->pc.server_fd >= 0) {
		if (postcopy_request(m->pc.server_fd, img, idx))
			ho_warn("post-copy: cannot ask the source for chunk %" PRIu64 " of '%s'", idx, overlay_image_name(img));
	} else if (m->pc.nqueued < HO_ARRAY_SIZE(m->pc.queued)) {
		m->pc.queued[m->pc.nqueued].img = img;
		m->pc.queued[m->pc.nqueued++].idx = idx;
	}
	pthread_mutex_unlock(&m->pc.want_lock);
}

/* The stream leaves out what the chunk server delivered before the stream reached it, and the
 * two connections race: after a verified stream, the chunks still awaited must come from the
 * chunk server, which the source stops (after its last whole answer) once we acknowledged the
 * stream. True when nothing is awaited any more; false once the server's connection ended
 * (or 120 s passed) with chunks still awaited. */
static bool pc_await_server(struct mirror *m)
{
	uint64_t deadline = ho_mono_ns() + 120000000000ull;
	for (;;) {
		if (!fs_pending_count(m->fs))
			return true;
		pthread_mutex_lock(&m->pc.want_lock);
		bool open_ = m->pc.server_fd >= 0;
		pthread_mutex_unlock(&m->pc.want_lock);
		if (!open_ || ho_mono_ns() > deadline)
			return fs_pending_count(m->fs) == 0;
		usleep(2000);
	}
}

/* the chunk server's channel is open: requests may go to it, first those queued meanwhile */
static void pc_server_ready(void *arg)
{
	struct pc_conn *c = arg;
	struct mirror *m = c->m;
	pthread_mutex_lock(&m->pc.want_lock);
	m->pc.server_fd = c->fd;
	for (unsigned i = 0; i < m->pc.nqueued; i++)
		postcopy_request(c->fd, m->pc.queued[i].img, m->pc.queued[i].idx);
	m->pc.nqueued = 0;
	pthread_mutex_unlock(&m->pc.want_lock);
}

static void *pc_server_main(void *arg)
{
	struct pc_conn *c = arg;
	struct mirror *m = c->m;
	int rc = postcopy_receive(c->fd, m->ov, m->key, m->key_len, pc_server_ready, pc_from_server, c);
	pthread_mutex_lock(&m->pc.want_lock);
	if (m->pc.server_fd == c->fd)
		m->pc.server_fd = -1;
	pthread_mutex_unlock(&m->pc.want_lock);
	close(c->fd);
	/* the chunk server's end is no failure once nothing is awaited any more (the stream
	 * brought the rest; it may still be finishing, which apply_stream() judges) */
	if (rc && fs_pending_count(m->fs)) {
		char why[160];
		snprintf(why, sizeof(why), "the chunk server connection failed: %s", ho_strerror(rc));
		pc_fail(m, why);
	}
	free(c);
	return NULL;
}

static int pc_manifest_cb(void *arg, int img, uint64_t idx, uint64_t count)
{
	struct mirror *m = arg;
	int rc = fs_pending_add(m->fs, img, idx, count);
	for (uint64_t i = 0; i < count && !rc; i++)
		pc_set(m->pc.awaited[img], idx + i);
	m->pc.total += count;
	return rc;
}

/* "postcopy" with the manifest's fd */
static int pc_begin(struct mirror *m, int fd, uint64_t *total)
{
	char *buf = NULL;
	size_t len = 0;
	struct stat st;
	int rc;

	if (fstat(fd, &st) < 0 || st.st_size > (256 << 20) || !(buf = malloc((size_t)st.st_size + 1)) ||
	    ho_read_full(fd, buf, (size_t)st.st_size) != st.st_size) {
		free(buf);
		return HO_EIO;
	}
	len = (size_t)st.st_size;
	pthread_mutex_lock(&m->apply_lock);          /* not while a stream is being applied */
	pthread_mutex_lock(&m->pc.lock);
	if (m->pc.state == PC_ACTIVE) {
		rc = HO_EBUSY;
		goto out;
	}
	pc_free(&m->pc);
	m->pc.total = m->pc.from_server = m->pc.from_stream = 0;
	m->pc.why[0] = 0;
	for (int i = 0; i < OVERLAY_NIMAGES; i++) {
		m->pc.nchunks[i] = overlay_nchunks(m->ov, i);
		m->pc.awaited[i] = calloc(m->pc.nchunks[i] / 8 + 1, 1);
		m->pc.served[i] = calloc(m->pc.nchunks[i] / 8 + 1, 1);
		if (!m->pc.awaited[i] || !m->pc.served[i]) {
			rc = HO_ENOMEM;
			goto out;
		}
	}
	/* dirty pages written back now, not while chunks are pending (their writeback would wait) */
	for (int i = 0; i < OVERLAY_NIMAGES; i++)
		fs_invalidate(m->fs, i, 0, 0);
	/* whether the overlay holds nothing yet, taken before arrivals and the resumed VM change
	 * it: a source that made no live round then sends everything since the base, and that
	 * full stream is accepted on top of what the post-copy itself wrote (arrive_fresh) */
	struct tracker_stats tst;
	m->pc.fresh = tracker_stats(m->tr, &tst) == 0 && tst.modified[0] + tst.modified[1] == 0;
	fs_pending_reset(m->fs);            /* after an earlier failed post-copy */
	fs_set_fetch(m->fs, pc_fetch, m);
	if ((rc = postcopy_manifest_foreach((const uint8_t *)buf, len, m->pc.nchunks, pc_manifest_cb, m))) {
		ho_err("post-copy: the manifest is not valid: %s", ho_strerror(rc));
		fs_pending_fail(m->fs);
		goto out;
	}
	if ((rc = fs_pending_begin(m->fs))) {
		fs_pending_fail(m->fs);
		goto out;
	}
	m->pc.state = PC_ACTIVE;
	*total = m->pc.total;
	ho_info("post-copy: %" PRIu64 " chunks awaited", m->pc.total);
out:
	pthread_mutex_unlock(&m->pc.lock);
	pthread_mutex_unlock(&m->apply_lock);
	free(buf);
	return rc;
}

static void import_options(struct mirror *m, struct import_opts *o)
{
	memset(o, 0, sizeof(*o));
	o->key = m->key;
	o->key_len = m->key_len;
	o->published = published;
	o->arg = m;
	o->threads = m->threads;
	if (m->pc.state == PC_ACTIVE) {
		o->arrive = pc_from_stream;
		o->arrive_fresh = m->pc.fresh;
	}
}

static void log_result(const char *from, const struct import_result *r, int rc)
{
	if (rc)
		ho_err("stream from %s refused: %s", from, ho_strerror(rc));
	else if (r->already_applied)
		ho_notice("stream from %s was applied before: nothing to do", from);
	else
		ho_notice("applied stream from %s: generations %u..%u, %" PRIu64 " disk and %" PRIu64
			  " memory chunks", from, r->since + 1, r->until, r->chunks[0], r->chunks[1]);
}

/* Import one stream, one at a time: from fd read to its end, or (tcp) from a sender on a
 * connection, with acknowledgements. Counts and logs the outcome. */
static int apply_stream(struct mirror *m, int fd, bool tcp, const char *from, struct import_result *res)
{
	struct import_opts o;
	int rc;
	import_options(m, &o);
	memset(res, 0, sizeof(*res));
	pthread_mutex_lock(&m->apply_lock);
	import_options(m, &o);          /* again: post-copy may have begun meanwhile */
	rc = tcp ? transport_serve(m->ov, m->tr, fd, &o, res) : import_fd(m->ov, m->tr, fd, &o, res);
	if (rc)
		m->failures++;
	else
		m->streams++;
	if (o.arrive) {
		/* the post-copy stream: done when it verified and nothing is awaited any more */
		if (rc) {
			char why[160];
			snprintf(why, sizeof(why), "the stream was refused: %s", ho_strerror(rc));
			pc_fail(m, why);
		} else if (fs_pending_count(m->fs) && !pc_await_server(m)) {
			char why[160];
			snprintf(why, sizeof(why), "%" PRIu64 " chunks of the manifest were not in the stream",
				 fs_pending_count(m->fs));
			pc_fail(m, why);
		} else {
			pthread_mutex_lock(&m->pc.lock);
			if (m->pc.state == PC_ACTIVE)
				m->pc.state = PC_DONE;
			ho_info("post-copy complete: %" PRIu64 " chunks, %" PRIu64 " from the chunk server (%" PRIu64
				" requests)", m->pc.total, m->pc.from_server, m->pc.requests);
			pthread_mutex_unlock(&m->pc.lock);
		}
	}
	pthread_mutex_unlock(&m->apply_lock);
	log_result(from, res, rc);
	return rc;
}

/* control socket: "apply" with a stream fd (handoff-import on a mirrored overlay) */
static void ctl_hook(struct fs *fs, const char *request, int conn, int pfd, void *arg)
{
	struct mirror *m = arg;
	struct import_result r;
	(void)fs;
	if (!strcmp(request, "postcopy") && pfd >= 0) {
		uint64_t total = 0;
		int rc = pc_begin(m, pfd, &total);
		close(pfd);
		if (rc)
			ho_ctl_reply(conn, rc, "cannot begin post-copy: %s", ho_strerror(rc));
		else
			ho_ctl_reply(conn, 0, "%" PRIu64, total);
		return;
	}
	if (!strcmp(request, "postcopy-status")) {
		pthread_mutex_lock(&m->pc.lock);
		static const char *names[] = { "none", "active", "done", "failed" };
		ho_ctl_reply(conn, 0, "%s pending=%" PRIu64 " total=%" PRIu64 " server=%" PRIu64 " stream=%" PRIu64
			     " requests=%" PRIu64 "%s%s", names[m->pc.state], fs_pending_count(m->fs), m->pc.total,
			     m->pc.from_server, m->pc.from_stream, m->pc.requests, m->pc.why[0] ? " why=" : "", m->pc.why);
		pthread_mutex_unlock(&m->pc.lock);
		if (pfd >= 0)
			close(pfd);
		return;
	}
	if (!strcmp(request, "postcopy-abort")) {
		pc_fail(m, "aborted by request");
		ho_ctl_reply(conn, 0, "aborted");
		if (pfd >= 0)
			close(pfd);
		return;
	}
	if (strcmp(request, "apply") != 0 || pfd < 0) {
		if (pfd >= 0)
			close(pfd);
		ho_ctl_reply(conn, HO_EINVAL, "unknown request '%s'", request);
		return;
	}
	int rc = apply_stream(m, pfd, false, "handoff-import", &r);
	close(pfd);
	if (rc)
		ho_ctl_reply(conn, rc, "%s", ho_strerror(rc));
	else
		ho_ctl_reply(conn, 0, "%s %u %u %" PRIu64 " %" PRIu64, r.already_applied ? "already" : "applied",
			     r.since, r.until, r.chunks[0], r.chunks[1]);
}

static void *listener_main(void *arg)
{
	struct mirror *m = arg;
	while (ho_wait_accept(m->listen_fd, m->stop_pipe[0]) == 1) {
		int conn = accept4(m->listen_fd, NULL, NULL, SOCK_CLOEXEC);
		if (conn < 0)
			continue;
		if (postcopy_is_server(conn, 10000)) {
			/* the source's chunk server (post-copy): on its own thread, beside the stream */
			struct pc_conn *c = malloc(sizeof(*c));
			pthread_t th;
			if (c) {
				*c = (struct pc_conn){ m, conn };
				if (pthread_create(&th, NULL, pc_server_main, c) == 0) {
					pthread_detach(th);
					continue;
				}
				free(c);
			}
			close(conn);
			continue;
		}
		struct import_result r;
		apply_stream(m, conn, true, "a TCP sender", &r);     /* closes conn */
	}
	return NULL;
}

static int started(struct fs *fs, void *arg)
{
	struct mirror *m = arg;
	m->fs = fs;
	if (!m->listen)
		return 0;
	if (pipe2(m->stop_pipe, O_CLOEXEC) < 0)
		return ho_from_errno(errno);
	if (pthread_create(&m->listener, NULL, listener_main, m) != 0)
		return HO_ENOMEM;
	m->listening = true;
	return 0;
}

static void stopping(struct fs *fs, void *arg)
{
	struct mirror *m = arg;
	(void)fs;
	if (m->listening) {
		if (write(m->stop_pipe[1], "x", 1) < 0)
			ho_warn("cannot stop the listener");
		pthread_join(m->listener, NULL);
		m->listening = false;
	}
}

/* Open the overlay, apply the --from streams, listen, mount and serve until unmounted; returns
 * the exit code (handoff-import's for a refused --from stream). */
static int serve(struct mirror *m, const char *dir, const struct overlay_base_spec *bases, uint32_t chunk,
		 const char *const *from, int nfrom, struct fs_options *opt)
{
	int rc, mount_exit = 0;
	rc = fs_open_owned(dir, bases, chunk, &m->ov, &m->tr);
	if (rc)
		return fs_exit_code(rc);
	if (!m->key)
		ho_warn("no --key: streams are accepted unauthenticated");
	struct import_opts io;
	import_options(m, &io);
	io.keep_partial = m->listen != NULL;     /* a TCP sender may come back to resume */
	if ((rc = import_recover(m->ov, m->tr, &io))) {
		ho_err("cannot recover the interrupted import in '%s': %s", dir, ho_strerror(rc));
		goto out;
	}
	/* streams named on the command line: applied before the mount serves, with their exit code */
	for (int i = 0; i < nfrom; i++) {
		struct import_result r;
		int fd = strcmp(from[i], "-") ? open(from[i], O_RDONLY | O_CLOEXEC) : dup(0);
		if (fd < 0) {
			ho_err("cannot open stream '%s': %s", from[i], strerror(errno));
			rc = HO_ENOENT;
			goto out;
		}
		rc = apply_stream(m, fd, false, strcmp(from[i], "-") ? from[i] : "standard input", &r);
		close(fd);
		if (rc) {
			tracker_close(m->tr);
			overlay_close(m->ov);
			return pipeline_exit_code(rc);
		}
	}
	if (m->listen) {
		uint16_t port = 0;
		if ((rc = transport_listen(m->listen, &m->listen_fd, &port))) {
			ho_err("cannot listen on '%s': %s", m->listen, ho_strerror(rc));
			goto out;
		}
		if (m->port_file) {
			char buf[16];
			int len = snprintf(buf, sizeof(buf), "%u\n", port);
			if ((rc = ho_write_file_atomic(m->port_file, buf, (size_t)len)))
				goto out;
		}
		ho_info("listening on port %u", port);
	}
	opt->ctl_hook = ctl_hook;
	opt->ctl_hook_arg = m;
	opt->started = started;
	opt->stopping = stopping;
	opt->hook_arg = m;
	rc = fs_mount(m->ov, m->tr, opt, &m->fs);
	if (rc) {
		mount_exit = rc == HO_EIO ? FS_EXIT_FUSE : FS_EXIT_MOUNTPOINT;
		goto out;
	}
	rc = fs_run(m->fs);
	fs_free(m->fs);
	m->fs = NULL;
out:
	if (m->listen_fd >= 0)
		close(m->listen_fd);
	tracker_close(m->tr);
	overlay_close(m->ov);
	return mount_exit ? mount_exit : fs_exit_code(rc);
}

int main(int argc, char **argv)
{
	enum { O_DISK = 256, O_MEMORY, O_MEMSIZE, O_CHUNK, O_READY, O_ALLOW, O_LISTEN, O_PORTFILE, O_FROM, O_KEY };
	static const struct option longopts[] = {
		{ "disk", required_argument, NULL, O_DISK },
		{ "memory", required_argument, NULL, O_MEMORY },
		{ "memory-size", required_argument, NULL, O_MEMSIZE },
		{ "chunk-size", required_argument, NULL, O_CHUNK },
		{ "listen", required_argument, NULL, O_LISTEN },
		{ "port-file", required_argument, NULL, O_PORTFILE },
		{ "from", required_argument, NULL, O_FROM },
		{ "key", required_argument, NULL, O_KEY },
		{ "threads", required_argument, NULL, 'T' },
		{ "foreground", no_argument, NULL, 'f' },
		{ "ready-fd", required_argument, NULL, O_READY },
		{ "allow-other", no_argument, NULL, O_ALLOW },
		{ "quiet", no_argument, NULL, 'q' },
		{ "verbose", no_argument, NULL, 'v' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 }
	};
	struct overlay_base_spec bases[OVERLAY_NIMAGES];
	const struct overlay_base_spec *given;
	struct fs_images im = { 0 };
	struct fs_options opt = { .ready_fd = -1 };
	struct mirror m = { .listen_fd = -1, .stop_pipe = { -1, -1 } };
	const char *keyfile = NULL, *from[64];
	int nfrom = 0, c, li, verbosity = LOG_NOTICE, rc;
	int report_fd = -1;
	bool foreground = false;

	ho_log_init(argv[0]);
	pthread_mutex_init(&m.apply_lock, NULL);
	pthread_mutex_init(&m.pc.lock, NULL);
	pthread_mutex_init(&m.pc.want_lock, NULL);
	m.pc.server_fd = -1;
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	m.threads = ncpu > 0 ? (unsigned)ncpu : 1;
	while ((c = getopt_long(argc, argv, "fqvhT:", longopts, &li)) != -1) {
		switch (c) {
		case O_DISK: case O_MEMORY: case O_MEMSIZE: case O_CHUNK:
			if (fs_images_option(&im, longopts[li].name, optarg))
				return FS_EXIT_USAGE;
			break;
		case O_LISTEN: m.listen = optarg; break;
		case O_PORTFILE: m.port_file = optarg; break;
		case O_FROM:
			if (nfrom == (int)HO_ARRAY_SIZE(from)) {
				ho_err("too many --from streams");
				return FS_EXIT_USAGE;
			}
			from[nfrom++] = optarg;
			break;
		case O_KEY: keyfile = optarg; break;
		case 'T':
			if (atoi(optarg) < 1 || atoi(optarg) > 256) {
				ho_err("invalid thread count '%s'", optarg);
				return FS_EXIT_USAGE;
			}
			m.threads = (unsigned)atoi(optarg);
			break;
		case 'f': foreground = true; break;
		case O_READY: opt.ready_fd = atoi(optarg); break;
		case O_ALLOW: opt.allow_other = true; break;
		case 'q': verbosity = LOG_ERR; break;
		case 'v': verbosity = verbosity >= LOG_INFO ? LOG_DEBUG : LOG_INFO; break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return FS_EXIT_USAGE;
		}
	}
	ho_log_set_level(verbosity);
	if (argc - optind != 2) {
		ho_err("expected OVERLAY_DIR and MOUNTPOINT (see --help)");
		return FS_EXIT_USAGE;
	}
	if (fs_images_bases(&im, bases, &given))
		return FS_EXIT_USAGE;
	if (keyfile && (rc = pipeline_load_key(keyfile, &m.key, &m.key_len)))
		return FS_EXIT_USAGE;
	const char *dir = argv[optind];
	opt.mountpoint = argv[optind + 1];
	if (fs_check_mountpoint(opt.mountpoint))
		return FS_EXIT_MOUNTPOINT;

	overlay_wait_released(dir, 30000);
	/* detach first: sqlite connections and locks must be opened by the daemon itself */
	if (!foreground) {
		if ((rc = ho_daemonize(&report_fd))) {
			ho_err("cannot detach: %s", ho_strerror(rc));
			return FS_EXIT_IO;
		}
		opt.report_fd = &report_fd;
	}
	int code = serve(&m, dir, given, (uint32_t)im.chunk_size, from, nfrom, &opt);
	ho_daemon_fail(&report_fd, code);      /* no-op once the daemon reported ready */
	free(m.key);
	return code;
}
