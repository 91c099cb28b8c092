/*
 * conn.c — the control connection between the two handoff-vm (handoff-vm(1), PROTOCOL): one
 * message per line, a few followed by a counted blob (device state, manifest); the ones that
 * decide something are signed with the pre-shared key over the peer's nonce, so that neither a
 * stranger nor a replay can make a VM pause, resume or be given up. Also the TCP connect (retried
 * while the receiver comes up) that the source and the fault proxy use.
 */
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include "handoff/handoff_int.h"

/* ---- the control connection --------------------------------------------------------------------- */

static int conn_fill(struct conn *c, int timeout_ms)
{
	struct pollfd p = { .fd = c->fd, .events = POLLIN };
	int n = poll(&p, 1, timeout_ms);
	if (n == 0)
		return HO_ETIMEDOUT;
	if (n < 0)
		return HO_EIO;
	ssize_t r = read(c->fd, c->buf + c->len, sizeof(c->buf) - c->len);
	if (r < 0)
		return errno == EINTR ? 0 : HO_ECONN;
	if (r == 0)
		return HO_ECONN;
	c->len += (size_t)r;
	return 0;
}

/* one line without its newline; HO_ECONN at end of input, HO_ETIMEDOUT */
int handoff_conn_line(struct conn *c, char *line, size_t max, int timeout_ms)
{
	uint64_t deadline = ho_mono_ns() + (uint64_t)timeout_ms * 1000000u;
	for (;;) {
		char *nl = memchr(c->buf, '\n', c->len);
		if (nl) {
			size_t n = (size_t)(nl - c->buf);
			if (n >= max)
				return HO_EPROTO;
			memcpy(line, c->buf, n);
			line[n] = 0;
			c->len -= n + 1;
			memmove(c->buf, nl + 1, c->len);
			return 0;
		}
		if (c->len == sizeof(c->buf))
			return HO_EPROTO;
		uint64_t now = ho_mono_ns();
		if (now >= deadline)
			return HO_ETIMEDOUT;
		int rc = conn_fill(c, (int)((deadline - now) / 1000000u) + 1);
		if (rc)
			return rc;
	}
}

int handoff_conn_bytes(struct conn *c, void *dst, size_t n, int timeout_ms)
{
	uint8_t *d = dst;
	while (n) {
		if (!c->len) {
			int rc = conn_fill(c, timeout_ms);
			if (rc)
				return rc;
			continue;
		}
		size_t k = HO_MIN(n, c->len);
		memcpy(d, c->buf, k);
		memmove(c->buf, c->buf + k, c->len - k);
		c->len -= k;
		d += k;
		n -= k;
	}
	return 0;
}

int handoff_conn_send(struct conn *c, const char *fmt, ...)
{
	char line[HANDOFF_LINE_MAX];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(line, sizeof(line) - 1, fmt, ap);
	va_end(ap);
	if (n < 0 || n >= (int)sizeof(line) - 1)
		return HO_EINVAL;
	line[n++] = '\n';
	int rc = ho_write_full(c->fd, line, (size_t)n);
	return rc ? HO_ECONN : 0;
}

/* HMAC(key, nonce || text) in hex, or "-" without a key */
static void line_mac(const struct conn *c, const uint8_t nonce[16], const char *text,
		     char out[2 * HO_SHA256_LEN + 1])
{
	if (!c->key) {
		strcpy(out, "-");
		return;
	}
	uint8_t m[HO_SHA256_LEN];
	struct ho_hmac *h = ho_hmac_new(c->key, c->key_len);
	if (!h) {
		strcpy(out, "?");
		return;
	}
	ho_hmac_update(h, nonce, 16);
	ho_hmac_update(h, text, strlen(text));
	ho_hmac_final(h, m);
	ho_hmac_free(h);
	ho_hex(m, HO_SHA256_LEN, out);
}

static bool mac_ok(const struct conn *c, const uint8_t nonce[16], const char *text, const char *mac)
{
	if (!c->key)
		return true;
	char want[2 * HO_SHA256_LEN + 1];
	line_mac(c, nonce, text, want);
	return strlen(mac) == strlen(want) && ho_mem_equal_ct(want, mac, strlen(want));
}

/* send "TEXT mac=HEX" (MAC over the peer's nonce and TEXT) */
int handoff_conn_send_signed(struct conn *c, const char *text)
{
	char mac[2 * HO_SHA256_LEN + 1];
	line_mac(c, c->peer_nonce, text, mac);
	return handoff_conn_send(c, "%s mac=%s", text, mac);
}

/* split "TEXT mac=HEX" and check it against our nonce; line is cut at " mac=" */
int handoff_conn_check(struct conn *c, char *line)
{
	char *m = strstr(line, " mac=");
	if (!m)
		return HO_EPROTO;
	*m = 0;
	if (!mac_ok(c, c->my_nonce, line, m + 5)) {
		ho_err("control message not authenticated with our key: '%.40s'", line);
		return HO_EAUTH;
	}
	return 0;
}

int handoff_tcp_connect(const char *hostport, int timeout_ms, int *out)
{
	char host[256], port[16];
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM }, *ai = NULL;
	if (transport_split_hostport(hostport, host, sizeof(host), port, sizeof(port))) {
		ho_err("invalid address '%s' (HOST:PORT)", hostport);
		return HO_EINVAL;
	}
	int g = getaddrinfo(host, port, &hints, &ai);
	if (g) {
		ho_err("cannot resolve '%s': %s", hostport, gai_strerror(g));
		return HO_ECONN;
	}
	int rc = HO_ECONN, err = 0;
	uint64_t deadline = ho_mono_ns() + (uint64_t)timeout_ms * 1000000u;
	do {
		for (struct addrinfo *a = ai; a; a = a->ai_next) {
			int fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
			if (fd < 0)
				continue;
			if (connect(fd, a->ai_addr, a->ai_addrlen) == 0) {
				int one = 1;
				setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
				*out = fd;
				rc = 0;
				break;
			}
			err = errno;
			close(fd);
		}
		if (rc && ho_mono_ns() < deadline)
			usleep(100000);
	} while (rc && ho_mono_ns() < deadline);
	freeaddrinfo(ai);
	if (rc)
		ho_err("cannot connect to '%s': %s", hostport, strerror(err ? err : ECONNREFUSED));
	return rc;
}

