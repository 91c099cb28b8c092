/*
 * proxy.c — test-only fault injection (handoff-vm migrate --fault corrupt-final, corrupt-postcopy):
 * a proxy between the source's export and the destination's mirror that corrupts the stream of
 * the final (or post-copy) round, so the tests can show that a corrupt last round never resumes
 * the VM on the destination and that the source then goes on.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include "handoff/handoff_int.h"

/* ---- test-only fault injection: a proxy that corrupts the stream of the final round ---------- */

/* Forward both ways. With corrupt: once the receiver has answered the sender's hello (so the
 * header got through and the stream is accepted for reading), flip one byte in the middle of the
 * next piece the sender sends: frames or END, whichever comes first, must then fail verification. */
static void proxy_pump(struct proxy *px, int a, int b, bool corrupt)
{
	uint8_t buf[65536];
	bool answered = false, flipped = false;
	struct pollfd p[3] = { { .fd = a, .events = POLLIN }, { .fd = b, .events = POLLIN },
			       { .fd = px->stop_pipe[0], .events = POLLIN } };
	for (;;) {
		if (poll(p, 3, -1) < 0 && errno != EINTR)
			return;
		if (p[2].revents)
			return;
		for (int i = 0; i < 2; i++) {
			if (!(p[i].revents & (POLLIN | POLLHUP | POLLERR)))
				continue;
			ssize_t n = read(p[i].fd, buf, sizeof(buf));
			if (n <= 0)
				return;
			if (i == 1)
				answered = true;
			if (i == 0 && corrupt && answered && !flipped) {
				buf[n / 2] ^= 0x55;
				flipped = true;
			}
			if (ho_write_full(p[1 - i].fd, buf, (size_t)n))
				return;
		}
	}
}

static void *proxy_main(void *arg)
{
	struct proxy *px = arg;
	for (;;) {
		struct pollfd p[2] = { { .fd = px->listen_fd, .events = POLLIN }, { .fd = px->stop_pipe[0], .events = POLLIN } };
		if (poll(p, 2, -1) < 0 && errno != EINTR)
			return NULL;
		if (p[1].revents)
			return NULL;
		int a = accept4(px->listen_fd, NULL, NULL, SOCK_CLOEXEC), b;
		if (a < 0)
			continue;
		if (handoff_tcp_connect(px->target, 5000, &b)) {
			close(a);
			continue;
		}
		proxy_pump(px, a, b, px->corrupt);
		close(a);
		close(b);
	}
}

int handoff_proxy_start(struct proxy *px, const char *target, char *addr, size_t len)
{
	uint16_t port;
	memset(px, 0, sizeof(*px));
	fmt(px->target, sizeof(px->target), "%s", target);
	if (pipe2(px->stop_pipe, O_CLOEXEC) || transport_listen("127.0.0.1:0", &px->listen_fd, &port))
		return HO_EIO;
	fmt(addr, len, "127.0.0.1:%u", port);
	if (pthread_create(&px->thread, NULL, proxy_main, px))
		return HO_EIO;
	return 0;
}

void handoff_proxy_stop(struct proxy *px)
{
	if (write(px->stop_pipe[1], "x", 1) != 1)
		return;
	pthread_join(px->thread, NULL);
	close(px->listen_fd);
	close(px->stop_pipe[0]);
	close(px->stop_pipe[1]);
}

