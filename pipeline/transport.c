/*
 * transport.c — handoff streams over TCP, with acknowledgements and resume.
 *
 * Protocol (handoff-stream(5), TRANSPORT). The sender opens with the line "HOXFER 1 MODE\n"
 * (MODE "resume" or "fresh") followed by the stream header. The receiver verifies the header
 * (key, base identity, sequence) and answers one line:
 *   "resume K CHECK"   send frames from K on (K = 0: all); CHECK (hex) is the chain value of frame
 *                      K-1 as staged, so the sender can tell that it regenerated the same stream
 *   "done"             this stream was already applied: nothing to send
 *   "error CODE TEXT"  refused (CODE a negative enum ho_err)
 * The sender then streams frames K.. and END. The receiver answers "ack SEQ" once frame SEQ is
 * durably staged, and after END either "published" (applied and durable) or "error CODE TEXT".
 * If the regenerated frame K-1 does not match CHECK (the overlay changed), the sender reconnects
 * with "fresh" and the receiver starts over.
 *
 * The sender keeps OVERLAY_DIR/export-pending ("SINCE UNTIL HOST:PORT") while a transfer is
 * unfinished, so running the same export again continues the same generation range.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netdb.h>
#include <poll.h>
#include <stdarg.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <linux/sockios.h>
#include <sys/ioctl.h>
#include <unistd.h>
#include "common/common.h"
#include "pipeline/adapt.h"
#include "pipeline/pipeline.h"
#include "pipeline/stream.h"
#include "pipeline/export_int.h"
#include "pipeline/import_int.h"

#define HELLO "HOXFER 1"
#define PENDING_NAME "export-pending"
#define LINE_MAX_ 512
#define RESTART 1            /* internal: regenerate from the start */
#define TX_RING 4096
#define TX_WINDOW_MIN (256u << 10)
#define TX_WINDOW_NS 250000000ull   /* tx_window: a quarter second of the link */

/* ---- addresses -------------------------------------------------------------------------------- */

int transport_split_hostport(const char *s, char *host, size_t hlen, char *port, size_t plen)
{
	const char *colon = strrchr(s, ':');
	size_t n;

	if (!colon || colon == s || !colon[1])
		return HO_EINVAL;
	n = (size_t)(colon - s);
	if (n >= 2 && s[0] == '[' && s[n - 1] == ']') {
		s++;
		n -= 2;
	}
	if (n >= hlen || strlen(colon + 1) >= plen)
		return HO_EINVAL;
	memcpy(host, s, n);
	host[n] = 0;
	strcpy(port, colon + 1);
	return 0;
}

int transport_listen(const char *addrport, int *listen_fd, uint16_t *port)
{
	char host[256], serv[32];
	struct addrinfo hints = { .ai_flags = AI_PASSIVE, .ai_socktype = SOCK_STREAM }, *ai, *a;
	int fd = -1, rc, one = 1;

	if (transport_split_hostport(addrport, host, sizeof(host), serv, sizeof(serv))) {
		ho_err("invalid address '%s' (want ADDR:PORT)", addrport);
		return HO_EINVAL;
	}
	if ((rc = getaddrinfo(host[0] ? host : NULL, serv, &hints, &ai))) {
		ho_err("cannot resolve '%s': %s", addrport, gai_strerror(rc));
		return HO_EINVAL;
	}
	for (a = ai; a; a = a->ai_next) {
		fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
		if (fd < 0)
			continue;
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		if (bind(fd, a->ai_addr, a->ai_addrlen) == 0 && listen(fd, 4) == 0)
			break;
		close(fd);
		fd = -1;
	}
	freeaddrinfo(ai);
	if (fd < 0) {
		ho_err("cannot listen on '%s': %s", addrport, strerror(errno));
		return HO_ECONN;
	}
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	getsockname(fd, (struct sockaddr *)&ss, &sl);
	*port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
					       : ((struct sockaddr_in *)&ss)->sin_port);
	*listen_fd = fd;
	return 0;
}

static void set_timeouts(int fd, int ms)
{
	struct timeval tv = { ms / 1000, (ms % 1000) * 1000 };
	int one = 1;
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

static int tcp_connect(const char *hostport, int timeout_ms, int *out)
{
	char host[256], serv[32];
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM }, *ai, *a;
	int fd = -1, rc, err = 0;

	if (transport_split_hostport(hostport, host, sizeof(host), serv, sizeof(serv))) {
		ho_err("invalid address '%s' (want HOST:PORT)", hostport);
		return HO_EINVAL;
	}
	if ((rc = getaddrinfo(host, serv, &hints, &ai))) {
		ho_err("cannot resolve '%s': %s", hostport, gai_strerror(rc));
		return HO_ECONN;
	}
	for (a = ai; a; a = a->ai_next) {
		fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
		if (fd < 0)
			continue;
		set_timeouts(fd, timeout_ms);
		if (connect(fd, a->ai_addr, a->ai_addrlen) == 0)
			break;
		err = errno;
		close(fd);
		fd = -1;
	}
	freeaddrinfo(ai);
	if (fd < 0) {
		ho_err("cannot connect to '%s': %s", hostport, strerror(err));
		return HO_ECONN;
	}
	*out = fd;
	return 0;
}

/* ---- line reading ----------------------------------------------------------------------------- */

/* stamp: the connection has SO_TIMESTAMPNS on (lines_stamp), and each line's arrival time, the
 * kernel's receive time of its newline, is in stamp_ns (ho_mono_ns clock) once it is returned. An
 * exporter busy compressing reads its acks late, up to a 16 MiB frame's worth of CPU; the time
 * of reading made a 1 Gbit/s link look like 34 Mbit/s ("saturated": the frames had gone into a
 * backlog), and the adaptive engine went back to a strong mode for seconds. */
struct lines { int fd; char buf[LINE_MAX_]; size_t len; bool stamp; uint64_t stamp_ns; };

static void lines_stamp(struct lines *l)
{
	int on = 1;
	l->stamp = setsockopt(l->fd, SOL_SOCKET, SO_TIMESTAMPNS, &on, sizeof(on)) == 0;
}

/* One byte into l->buf with its receive time: a byte at a time, so the time is the segment's
 * that held it (a read takes the time of the last segment it copied from). Lines are few (an
 * ack per frame). */
static ssize_t read_stamped(struct lines *l)
{
	union { char buf[CMSG_SPACE(sizeof(struct timespec))]; struct cmsghdr align; } c;
	struct iovec iov = { l->buf + l->len, 1 };
	struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = c.buf, .msg_controllen = sizeof(c.buf) };
	ssize_t n = recvmsg(l->fd, &m, 0);

	if (n == 1 && l->buf[l->len] == '\n') {
		uint64_t now = ho_mono_ns();
		struct timespec real;
		l->stamp_ns = now;
		for (struct cmsghdr *h = CMSG_FIRSTHDR(&m); h; h = CMSG_NXTHDR(&m, h))
			if (h->cmsg_level == SOL_SOCKET && h->cmsg_type == SCM_TIMESTAMPNS &&
			    clock_gettime(CLOCK_REALTIME, &real) == 0) {
				struct timespec ts;
				memcpy(&ts, CMSG_DATA(h), sizeof(ts));
				int64_t age = ((int64_t)real.tv_sec - ts.tv_sec) * 1000000000 + (real.tv_nsec - ts.tv_nsec);
				/* a clock step makes nonsense: then the time of reading */
				if (age > 0 && (uint64_t)age < now && age < 60 * (int64_t)1000000000)
					l->stamp_ns = now - (uint64_t)age;
			}
	}
	return n;
}

/* One line (without newline) into out. block = false: HO_EBUSY when no complete line is there. */
static int line_read(struct lines *l, char *out, size_t out_len, bool block)
{
	for (;;) {
		char *nl = memchr(l->buf, '\n', l->len);
		if (nl) {
			size_t n = (size_t)(nl - l->buf);
			if (n >= out_len)
				return HO_EPROTO;
			memcpy(out, l->buf, n);
			out[n] = 0;
			memmove(l->buf, nl + 1, l->len - n - 1);
			l->len -= n + 1;
			return 0;
		}
		if (l->len == sizeof(l->buf))
			return HO_EPROTO;
		if (!block) {
			struct pollfd p = { .fd = l->fd, .events = POLLIN };
			if (poll(&p, 1, 0) <= 0)
				return HO_EBUSY;
		}
		ssize_t n = l->stamp ? read_stamped(l) : read(l->fd, l->buf + l->len, sizeof(l->buf) - l->len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return errno == EAGAIN || errno == EWOULDBLOCK ? HO_ETIMEDOUT : HO_ECONN;
		if (n == 0)
			return HO_ECONN;
		l->len += (size_t)n;
	}
}

static int send_line(int fd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int send_line(int fd, const char *fmt, ...)
{
	char line[LINE_MAX_];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(line, sizeof(line) - 1, fmt, ap);
	va_end(ap);
	if (n < 0)
		return HO_EINVAL;
	if ((size_t)n > sizeof(line) - 2)
		n = (int)sizeof(line) - 2;
	line[n++] = '\n';
	return ho_write_full(fd, line, (size_t)n) ? HO_ECONN : 0;
}

/* "error CODE TEXT": log TEXT and return CODE (HO_EPROTO if malformed). */
static int peer_error(const char *line, const char *who)
{
	char *end;
	long code = strtol(line + 6, &end, 10);
	if (end == line + 6 || code >= 0 || code < HO_ERR_MIN)
		code = HO_EPROTO;
	ho_err("%s: %s", who, *end ? end + 1 : ho_strerror((int)code));
	return (int)code;
}

/* ---- sender ----------------------------------------------------------------------------------- */

struct tx {
	int fd;
	const struct export_opts *o;
	struct export_result *res;
	struct lines in;
	bool fresh;
	uint64_t skip, skip_check;
	uint64_t acked;            /* frames acknowledged so far (+1 of the last seq) */
	bool done;                 /* receiver had it already */
	struct export_throttle th;
	int rc;                    /* the receiver's error, if it sent one */
	struct adapt *ad;          /* the adaptive engine: learns the link from acks (may be NULL) */
	uint64_t cum[TX_RING];     /* with ad: wire bytes up to the end of frame seq (seq % TX_RING) */
	uint64_t sent_seq;         /* frames sent (+1 of the last seq) */
	uint64_t nacks;            /* acknowledgements received on this connection */
	uint64_t max_frame;        /* the largest frame sent so far (wire bytes) */
	bool ack_pend;             /* with ad: an ack not reported to the engine yet (tx_ack) */
	uint64_t ack_pend_seq, ack_pend_ns;
	int timeout_ms;            /* for one reply */
	uint64_t free_until;       /* export_opts.hold: the stream sends regardless until then */
	/* with ad: the link meter (tx_meter) */
	uint64_t sock_bytes;       /* bytes tx_write put into the socket */
	bool m_on;                 /* the meter works (SIOCOUTQ answered) and feeds the engine */
	uint64_t m_t;              /* the interval being measured began then, ... */
	int64_t m_left;            /* ... when this much had left the socket (sock_bytes - SIOCOUTQ) */
	bool m_busy;               /* ... and the socket held bytes at every look since */
};

/* The link as TCP sees it, for the engine (adapt_set_net_meter): what the receiver's TCP
 * acknowledged (bytes written less what SIOCOUTQ says is still unacknowledged) over intervals of
 * at least TX_METER_NS, saturated when the socket held bytes at every look of the interval. We
 * look before every write (a write into an empty socket ends a saturated spell), and at least
 * every 100 ms while waiting on the socket or for acks (tx_wait), so the socket cannot run dry
 * unseen for longer. Frame acks alone gave one sample a frame, and frames are sized to seconds
 * of a thin link. A slow receiver shows as a slow link: its TCP window closes. */
#define TX_METER_NS 50000000ull

/* Returns what the socket holds (SIOCOUTQ), -1 when unknown or without the engine. */
static int tx_meter(struct tx *t)
{
	uint64_t now;
	int q;

	if (!t->ad || ioctl(t->fd, SIOCOUTQ, &q) < 0 || q < 0)
		return -1;
	now = ho_mono_ns();
	int64_t left = (int64_t)t->sock_bytes - q;
	if (!t->m_on) {
		t->m_on = true;
		adapt_set_net_meter(t->ad, true);
	} else if (now - t->m_t < TX_METER_NS) {
		t->m_busy = t->m_busy && q > 0;
		return q;
	} else {
		adapt_observe_net(t->ad, left > t->m_left ? (uint64_t)(left - t->m_left) : 0, now - t->m_t,
		                  t->m_busy && q > 0, now);
	}
	t->m_t = now;
	t->m_left = left;
	t->m_busy = q > 0;
	return q;
}

/* Wait up to ms for events on the connection, printing a progress line when one is due (wire
 * bytes written so far: wire). The revents (0 on a timeout or a signal); HO_ETIMEDOUT once the
 * timeouts added up in *waited reach the reply timeout, HO_ECONN when poll fails. */
static int tx_wait(struct tx *t, short events, uint64_t wire, int *waited, int ms)
{
	struct pollfd pf = { .fd = t->fd, .events = events };
	int r;

	export_progress(t->ad, t->o->progress, UINT64_MAX, wire, false);
	tx_meter(t);
	r = poll(&pf, 1, ms);
	if (r < 0)
		return errno == EINTR ? 0 : HO_ECONN;
	if (r == 0 && (*waited += ms) >= t->timeout_ms)
		return HO_ETIMEDOUT;
	return r ? pf.revents : 0;
}

/* A reply line, blocking; with the engine, looking at the link (tx_meter) every 100 ms and
 * printing progress lines when due while we wait (the encoder is held by the window, or done and
 * the link drains the rest). */
static int tx_read_line(struct tx *t, char *out, size_t out_len)
{
	int waited = 0, r = 0;

	while (t->ad && !memchr(t->in.buf, '\n', t->in.len) && r == 0)
		if ((r = tx_wait(t, POLLIN, t->res->wire_bytes, &waited, 100)) == HO_ETIMEDOUT)
			return r;
	return line_read(&t->in, out, out_len, true);
}

/* The pending ack to the engine (acks are cumulative: the latest of a batch says it all). */
static void tx_ack_report(struct tx *t)
{
	uint64_t now = ho_mono_ns();
	int q;

	if (!t->ack_pend)
		return;
	t->ack_pend = false;
	/* an empty socket now means the link ran dry since the previous ack: that sample only
	 * shows what we produced (adapt_observe_queue in adapt.h) */
	if ((q = tx_meter(t)) >= 0)
		adapt_observe_queue(t->ad, (uint64_t)q, now);
	adapt_frame_acked(t->ad, t->ack_pend_seq, HO_MIN(t->ack_pend_ns, now));
}

/* An ack for the engine, at its arrival time. Acks that waited unread in the socket were merged
 * by TCP into one segment, which carries the arrival time of the newest: all of them get that
 * time, and reported one by one the first would have stood for all the bytes of the batch and
 * the others for none. So an ack is held while another follows at once and reported with the
 * last one of its time. */
static void tx_ack(struct tx *t, uint64_t seq)
{
	uint64_t ts = t->in.stamp ? t->in.stamp_ns : ho_mono_ns();
	struct pollfd p = { .fd = t->fd, .events = POLLIN };

	if (t->ack_pend && t->ack_pend_ns != ts)
		tx_ack_report(t);
	t->ack_pend = true;
	t->ack_pend_seq = seq;
	t->ack_pend_ns = ts;
	if (!memchr(t->in.buf, '\n', t->in.len) && !(poll(&p, 1, 0) == 1 && (p.revents & POLLIN)))
		tx_ack_report(t);
}

static int tx_handle_line(struct tx *t, const char *line)
{
	if (!strncmp(line, "ack ", 4)) {
		uint64_t seq = strtoull(line + 4, NULL, 10);
		t->acked = seq + 1;
		t->nacks++;
		if (t->ad)
			tx_ack(t, seq);
		return 0;
	}
	if (t->ad)
		tx_ack_report(t);
	if (!strncmp(line, "error ", 6))
		return t->rc = peer_error(line, "the receiver refused the stream");
	ho_err("unexpected reply from the receiver: '%.80s'", line);
	return HO_EPROTO;
}

static int tx_drain(struct tx *t)
{
	char line[LINE_MAX_];
	int rc;
	while ((rc = line_read(&t->in, line, sizeof(line), false)) == 0)
		if ((rc = tx_handle_line(t, line)))
			return rc;
	return rc == HO_EBUSY ? 0 : rc;
}

/* Post-copy (export_opts.hold): while the chunk server answers the destination's VM, which waits
 * for those answers, the stream waits too (reading acknowledgements), so the answers have the
 * link to themselves instead of sharing it with stream bytes half and half. At most HOLD_MAX_NS
 * at a time: then the stream sends for HOLD_FREE_NS whatever the server does, so a VM that keeps
 * asking cannot starve the stream that would end its waiting. The socket buffer is small
 * (export_to_tcp) and the stream is written in HOLD_PIECE pieces, so a hold takes effect soon. */
#define HOLD_MAX_NS  800000000ull
#define HOLD_FREE_NS 200000000ull
#define HOLD_PIECE   (16u << 10)

static int tx_hold(struct tx *t, uint64_t wire)
{
	uint64_t now = ho_mono_ns(), t0 = now;
	int waited = 0, rc;

	if (now < t->free_until)
		return 0;
	while (t->o->hold(t->o->hold_arg, now)) {
		if (now - t0 >= HOLD_MAX_NS) {
			t->free_until = now + HOLD_FREE_NS;
			break;
		}
		if ((rc = tx_wait(t, POLLIN, wire, &waited, 10)) < 0)
			return rc;
		if ((rc & (POLLIN | POLLHUP | POLLERR)) && (rc = tx_drain(t)))
			return rc;
		now = ho_mono_ns();
	}
	t->res->held_ns += now - t0;
	return 0;
}

/* Write a piece to the receiver. With the engine (adaptive, or progress lines): without
 * blocking, and while the socket is full, read the acknowledgements as they come (the engine's
 * link samples would otherwise arrive in bunches after each write, and a write of a 2 MiB frame
 * into a 5 Mbit/s link takes seconds) and print progress lines when due. */
static int tx_write(struct tx *t, const void *buf, size_t len)
{
	const char *p = buf;
	size_t done = 0;
	int waited = 0, rc;

	if (!t->ad && !t->o->hold)
		return ho_write_full(t->fd, buf, len) ? HO_ECONN : 0;
	while (done < len) {
		size_t piece = len - done;
		if (t->o->hold) {
			if ((rc = tx_hold(t, t->res->wire_bytes + done)))
				return rc;
			piece = HO_MIN(piece, (size_t)HOLD_PIECE);
		}
		ssize_t n = send(t->fd, p + done, piece, MSG_DONTWAIT | MSG_NOSIGNAL);
		if (n > 0) {
			done += (size_t)n;
			t->sock_bytes += (uint64_t)n;
			waited = 0;
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
			return HO_ECONN;
		if ((rc = tx_wait(t, POLLOUT | POLLIN, t->res->wire_bytes + done, &waited, 100)) < 0)
			return rc;
		if ((rc & (POLLIN | POLLHUP | POLLERR)) && (rc = tx_drain(t)))
			return rc;
	}
	return 0;
}

/* Adaptive sender: keep at most about a quarter second of the link's rate (at least 256 KiB)
 * unacknowledged, so the mode chosen now is the one the link sees soon, and the engine's
 * decisions follow what the acknowledgements tell (the socket buffer would absorb megabytes). */
static int tx_window(struct tx *t)
{
	char line[LINE_MAX_];
	struct adapt_status st;
	int rc;

	adapt_status(t->ad, &st);
	/* until acknowledgements measured the link, the engine's bandwidth is a guess */
	uint64_t window = t->nacks < 2 ? TX_WINDOW_MIN :
	                  HO_MAX((uint64_t)TX_WINDOW_MIN, (uint64_t)(st.window_Bps * (TX_WINDOW_NS / 1e9)));
	/* at least two frames: with one, every frame is written into an empty socket after the
	 * previous ack, the link idles from each frame's last byte to its ack, and no sample ever
	 * shows it saturated */
	window = HO_MAX(window, 2 * t->max_frame);
	while (t->sent_seq > t->acked && t->sent_seq - t->acked < TX_RING &&
	       t->res->wire_bytes - (t->acked ? t->cum[(t->acked - 1) % TX_RING] : 0) > window) {
		if ((rc = tx_read_line(t, line, sizeof(line)))) {
			if (rc == HO_ETIMEDOUT)
				ho_err("the receiver acknowledged nothing in time (%" PRIu64 " frames acknowledged)", t->acked);
			else
				ho_err("connection to the receiver lost after %" PRIu64 " acknowledged frames", t->acked);
			return rc == HO_ETIMEDOUT ? rc : HO_ECONN;
		}
		if ((rc = tx_handle_line(t, line)))
			return rc;
		if (t->o->cancel && *t->o->cancel)
			return 0;             /* tx_emit stops after it */
	}
	return 0;
}

static int tx_emit(void *arg, const struct stream_piece *p)
{
	struct tx *t = arg;
	char line[LINE_MAX_];
	int rc;

	if (p->kind == STREAM_EMIT_HEADER) {
		char hello[32];
		int n = snprintf(hello, sizeof(hello), "%s %s\n", HELLO, t->fresh ? "fresh" : "resume");
		if (ho_write_full(t->fd, hello, (size_t)n) || ho_write_full(t->fd, p->buf, p->len))
			return HO_ECONN;
		t->res->wire_bytes += p->len;
		if ((rc = line_read(&t->in, line, sizeof(line), true)))
			return rc;
		if (!strcmp(line, "done")) {
			t->done = true;
			return RESTART + 1;       /* stop generating: nothing to send */
		}
		if (!strncmp(line, "error ", 6))
			return t->rc = peer_error(line, "the receiver refused the stream");
		char hex[32];
		unsigned long long k;
		if (sscanf(line, "resume %llu %17s", &k, hex) != 2) {
			ho_err("unexpected reply from the receiver: '%.80s'", line);
			return HO_EPROTO;
		}
		t->skip = k;
		t->skip_check = strtoull(hex, NULL, 16);
		t->acked = k;
		t->res->resumed_frames = k;
		if (k)
			ho_notice("the receiver has %llu frames already: resuming", k);
		return 0;
	}
	if (p->seq < t->skip) {
		if (p->kind == STREAM_EMIT_END || (p->seq == t->skip - 1 && p->check != t->skip_check)) {
			ho_notice("the overlay changed since the interrupted transfer: starting over");
			return RESTART;
		}
		return 0;
	}
	export_throttle(&t->th, t->o->rate_limit, p->len, t->o->cancel);
	if (t->ad && t->o->adaptive && (rc = tx_window(t)))
		return rc;
	/* the throttle and the window give way to a cancel; the canceller says why */
	if (t->o->cancel && *t->o->cancel) {
		ho_info("the transfer was cancelled after %" PRIu64 " acknowledged frames", t->acked);
		return HO_ECONN;
	}
	int queued = tx_meter(t);
	if ((rc = tx_write(t, p->buf, p->len))) {
		/* the receiver may have said why before closing */
		tx_drain(t);
		if (t->rc)
			return t->rc;
		if (rc == HO_ETIMEDOUT) {
			ho_err("the receiver took nothing in time (%" PRIu64 " frames acknowledged)", t->acked);
			return rc;
		}
		ho_err("connection to the receiver lost after %" PRIu64 " acknowledged frames", t->acked);
		return HO_ECONN;
	}
	t->res->wire_bytes += p->len;
	if (t->ad && p->kind == STREAM_EMIT_FRAME) {
		adapt_frame_sent(t->ad, p->seq, p->len, queued < 0 ? UINT64_MAX : (uint64_t)queued, ho_mono_ns());
		t->cum[p->seq % TX_RING] = t->res->wire_bytes;
		t->sent_seq = p->seq + 1;
		t->max_frame = HO_MAX(t->max_frame, (uint64_t)p->len);
	}
	return tx_drain(t);
}

int transport_connect(const char *hostport, int timeout_ms, int *out)
{
	return tcp_connect(hostport, timeout_ms, out);
}

static char *pending_path(const char *dir) { return ho_path_join(dir, PENDING_NAME); }

int export_pending(const char *dir, uint32_t since, const char *hostport, uint32_t *until)
{
	char *path = pending_path(dir), *buf = NULL, hp[300];
	unsigned s, u;
	int rc;

	if (!path)
		return HO_ENOMEM;
	rc = ho_read_file(path, &buf, NULL, 1024);
	free(path);
	if (rc)
		return HO_ENOENT;
	/* the receiver's address is informative only: a receiver restarted elsewhere that applied
	 * up to since takes the same stream (from frame 0 if it has no staging of it) */
	(void)hostport;
	rc = sscanf(buf, "%u %u %299s", &s, &u, hp) == 3 && s == since ? 0 : HO_ENOENT;
	if (!rc)
		*until = u;
	free(buf);
	return rc;
}

int export_to_tcp(const char *dir, uint32_t until, const struct export_opts *o, const char *hostport,
		  struct export_result *res)
{
	int timeout = o->timeout_ms ? o->timeout_ms : 30000, rc;
	char *path = pending_path(dir), line[LINE_MAX_];
	struct export_opts oo = *o;
	struct tx t;

	if (o->postcopy) {
		/* the destination VM may change what earlier streams sent: reference only this one; and
		 * small frames, so chunks reach the waiting VM soon (1 MiB: a chunk the VM waits for
		 * is asked of the chunk server anyway, which the stream gives way to, and on a guest's
		 * changes zstd frames of 256 KiB made 0.396 of the input, of 1 MiB 0.307) */
		oo.no_history = true;
		if (!oo.frame_size)
			oo.frame_size = 1u << 20;
	}
	bool fresh = false, published = false, fell_back = false;

	if (!path)
		return HO_ENOMEM;
	signal(SIGPIPE, SIG_IGN);
	{
		char buf[400];
		int n = snprintf(buf, sizeof(buf), "%u %u %s\n", o->since, until, hostport);
		if ((rc = ho_write_file_atomic(path, buf, (size_t)n))) {
			ho_err("cannot write '%s': %s", path, ho_strerror(rc));
			free(path);
			return rc;
		}
	}
	for (int attempt = 0; attempt < 3; attempt++) {
		memset(&t, 0, sizeof(t));
		t.o = &oo;
		t.timeout_ms = timeout;
		t.res = res;
		t.fresh = fresh;
		if ((rc = tcp_connect(hostport, timeout, &t.fd)))
			break;
		if (o->postcopy) {
			/* little in flight, so the chunk server's answers do not queue behind megabytes */
			int sndbuf = 32 << 10;
			setsockopt(t.fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf));
		}
		t.in.fd = t.fd;
		/* a fresh engine per attempt (frame numbers start over); it learns the link from acks */
		if ((rc = export_adapt_new(&oo, &t.ad))) {
			close(t.fd);
			break;
		}
		if (t.ad)
			lines_stamp(&t.in);
		rc = export_run_adapt(dir, until, &oo, t.ad, tx_emit, &t, true, res);
		if (rc == RESTART && !fresh) {
			adapt_free(t.ad);
			t.ad = NULL;
			close(t.fd);
			fresh = true;
			continue;
		}
		if (t.done) {
			res->already_applied = true;
			ho_notice("the receiver had applied this stream already");
			rc = 0;
		} else if (!rc) {
			/* wait for "published" */
			for (;;) {
				if ((rc = tx_read_line(&t, line, sizeof(line)))) {
					ho_err("connection to the receiver lost before it confirmed the stream (%s)",
					       ho_strerror(rc));
					rc = HO_ECONN;
					break;
				}
				if (!strcmp(line, "published")) {
					published = true;
					break;
				}
				if ((rc = tx_handle_line(&t, line)))
					break;
			}
		}
		if (published)
			export_progress(t.ad, oo.progress, UINT64_MAX, res->wire_bytes, true);
		adapt_free(t.ad);
		t.ad = NULL;
		close(t.fd);
		/* the receiver does not hold what earlier exports sent (it was restored, changed, or
		 * applied another stream): send this one again, referencing only itself */
		if (rc && res->history && !fell_back && (t.rc == HO_ESTALE || t.rc == HO_EDIGEST)) {
			ho_warn("the receiver does not hold the chunks earlier exports sent: sending the stream again without references to them");
			export_sent_forget(dir);
			oo.no_history = true;
			fell_back = fresh = true;
			continue;
		}
		break;
	}
	/* what this export sent describes the receiver only once it published it */
	export_sent_commit(dir, published && !rc);
	free(path);
	return rc;
}

void export_pending_clear(const char *dir)
{
	char *path = pending_path(dir);
	if (path && unlink(path) == 0)
		ho_fsync_dir(dir);
	free(path);
}

/* ---- receiver --------------------------------------------------------------------------------- */

static int rx_ack(void *arg, uint64_t seq)
{
	int fd = *(int *)arg;
	return send_line(fd, "ack %" PRIu64, seq);
}

int transport_serve(struct overlay *ov, struct tracker *t, int conn_fd, const struct import_opts *opts,
		    struct import_result *res)
{
	struct import_opts o = *opts;
	struct importer *im = NULL;
	struct lines in = { .fd = conn_fd };
	char line[LINE_MAX_];
	uint8_t *buf = NULL;
	enum { BUF = 256 << 10 };
	uint64_t frames, check;
	bool fresh;
	int rc;

	o.keep_partial = true;
	if (res)
		memset(res, 0, sizeof(*res));
	set_timeouts(conn_fd, 120000);
	if ((rc = line_read(&in, line, sizeof(line), true)))
		goto out;
	if (strncmp(line, HELLO " ", sizeof(HELLO)) != 0) {
		ho_err("a client spoke an unknown protocol: '%.40s'", line);
		rc = HO_EPROTO;
		goto out;
	}
	fresh = !strcmp(line + sizeof(HELLO), "fresh");
	buf = malloc(BUF);
	if (!buf) {
		rc = HO_ENOMEM;
		goto out;
	}
	if ((rc = import_begin(ov, t, &o, &im)))
		goto reply;
	import_on_frame(im, rx_ack, &conn_fd);
	/* the header: whatever the line reader buffered first, then the socket */
	{
		size_t have = in.len;
		memcpy(buf, in.buf, have);
		in.len = 0;
		while (have < STREAM_HEADER_LEN) {
			ssize_t n = read(conn_fd, buf + have, STREAM_HEADER_LEN - have);
			if (n < 0 && errno == EINTR)
				continue;
			if (n <= 0) {
				rc = HO_ECONN;
				goto out;
			}
			have += (size_t)n;
		}
		size_t len = STREAM_HEADER_LEN;
		if ((rc = import_feed(im, buf, &len)))
			goto reply;
		if (import_done(im)) {          /* already applied */
			rc = import_finish(im, res);
			if (!rc)
				send_line(conn_fd, "done");
			goto reply;
		}
		if ((rc = import_resume(im, fresh || o.arrive, &frames, &check)))
			goto reply;
		if ((rc = send_line(conn_fd, "resume %" PRIu64 " %016" PRIx64, frames, check)))
			goto out;
		if (have > STREAM_HEADER_LEN) {   /* a sender does not send more before the reply */
			rc = HO_EPROTO;
			goto reply;
		}
	}
	while (!import_done(im)) {
		/* nothing more to read right now: hand out (and acknowledge) the frames the decoding
		 * threads hold, since the sender may be waiting for those acknowledgements */
		struct pollfd pf = { .fd = conn_fd, .events = POLLIN };
		if (poll(&pf, 1, 0) == 0 && (rc = import_drain(im)))
			goto reply;
		ssize_t n = read(conn_fd, buf, BUF);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			rc = n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) ? HO_ETIMEDOUT : HO_ECONN;
			ho_err("the sender went away (%s); the staged part is kept for a resume",
			       n == 0 ? "connection closed" : strerror(errno));
			goto out;
		}
		size_t len = (size_t)n;
		if ((rc = import_feed(im, buf, &len)))
			goto reply;
		if (len < (size_t)n) {
			rc = HO_ETRAILING;
			goto reply;
		}
	}
	rc = import_finish(im, res);
	if (!rc)
		send_line(conn_fd, "published");
reply:
	if (rc && res && im)
		res->basis = import_has_basis(im);
	if (rc) {
		const char *msg = im ? import_errmsg(im) : "";
		send_line(conn_fd, "error %d %s", rc, msg[0] ? msg : ho_strerror(rc));
	}
out:
	import_free(im);
	free(buf);
	close(conn_fd);
	return rc;
}
