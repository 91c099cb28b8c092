/*
 * ctl.c — the control socket of ctl.h. Socket paths can be longer than sun_path allows, so both
 * sides reach the directory through /proc/self/fd/N of an O_PATH descriptor.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
#include "common/common.h"
#include "common/ctl.h"

static int ctl_addr(const char *dir, int *dirfd, struct sockaddr_un *sa)
{
	*dirfd = open(dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (*dirfd < 0)
		return ho_from_errno(errno);
	memset(sa, 0, sizeof(*sa));
	sa->sun_family = AF_UNIX;
	snprintf(sa->sun_path, sizeof(sa->sun_path), "/proc/self/fd/%d/%s", *dirfd, HO_CTL_NAME);
	return 0;
}

static int send_line(int fd, const char *line, int pass_fd)
{
	size_t len = strlen(line);
	char nl = '\n';
	struct iovec iov[2] = { { (void *)line, len }, { &nl, 1 } };
	union { struct cmsghdr h; char buf[CMSG_SPACE(sizeof(int))]; } cm;
	struct msghdr msg = { .msg_iov = iov, .msg_iovlen = 2 };

	if (pass_fd >= 0) {
		memset(&cm, 0, sizeof(cm));
		msg.msg_control = cm.buf;
		msg.msg_controllen = sizeof(cm.buf);
		struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(c), &pass_fd, sizeof(int));
	}
	for (;;) {
		ssize_t n = sendmsg(fd, &msg, MSG_NOSIGNAL);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return ho_from_errno(errno);
		if ((size_t)n != len + 1)
			return HO_ECONN;   /* lines are small; a short send means the peer went away */
		return 0;
	}
}

/* Read one line (up to len-1 chars) and, on the first recvmsg, a passed fd. */
static int recv_line(int fd, char *buf, size_t len, int *passed_fd, int timeout_ms)
{
	size_t got = 0;
	if (passed_fd)
		*passed_fd = -1;
	while (got + 1 < len) {
		union { struct cmsghdr h; char buf[CMSG_SPACE(sizeof(int))]; } cm;
		struct iovec iov = { buf + got, len - 1 - got };
		struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cm.buf,
				      .msg_controllen = sizeof(cm.buf) };
		if (timeout_ms > 0) {
			struct pollfd p = { .fd = fd, .events = POLLIN };
			int r = poll(&p, 1, timeout_ms);
			if (r == 0)
				return HO_ETIMEDOUT;
			if (r < 0 && errno != EINTR)
				return ho_from_errno(errno);
			if (r < 0)
				continue;
		}
		ssize_t n = recvmsg(fd, &msg, MSG_CMSG_CLOEXEC);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return ho_from_errno(errno);
		for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
			if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
				int pfd;
				memcpy(&pfd, CMSG_DATA(c), sizeof(int));
				if (passed_fd && *passed_fd < 0)
					*passed_fd = pfd;
				else
					close(pfd);
			}
		}
		if (n == 0)
			return HO_ECONN;
		char *nl = memchr(buf + got, '\n', (size_t)n);
		got += (size_t)n;
		if (nl) {
			*nl = 0;
			return 0;
		}
	}
	return HO_EPROTO;
}

int ho_ctl_call(const char *overlay_dir, const char *request, int pass_fd, int timeout_ms,
		char *reply, size_t reply_len)
{
	struct sockaddr_un sa;
	char line[HO_CTL_LINE];
	int dirfd, fd, rc;

	rc = ctl_addr(overlay_dir, &dirfd, &sa);
	if (rc)
		return rc;
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		rc = ho_from_errno(errno);
		close(dirfd);
		return rc;
	}
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		rc = (errno == ENOENT || errno == ECONNREFUSED) ? HO_ENOENT : ho_from_errno(errno);
		goto out;
	}
	rc = send_line(fd, request, pass_fd);
	if (rc == 0)
		rc = recv_line(fd, line, sizeof(line), NULL, timeout_ms);
	if (rc)
		goto out;
	if (strncmp(line, "ok", 2) == 0 && (line[2] == 0 || line[2] == ' ')) {
		if (reply)
			snprintf(reply, reply_len, "%s", line[2] ? line + 3 : "");
		rc = 0;
	} else if (strncmp(line, "error ", 6) == 0) {
		char *end;
		long code = strtol(line + 6, &end, 10);
		if (reply)
			snprintf(reply, reply_len, "%s", *end ? end + 1 : "");
		rc = (code < 0 && code >= HO_ERR_MIN) ? (int)code : HO_EPROTO;
	} else {
		rc = HO_EPROTO;
	}
out:
	close(fd);
	close(dirfd);
	return rc;
}

int ho_ctl_listen(const char *overlay_dir, int *listen_fd)
{
	struct sockaddr_un sa;
	int dirfd, fd, rc;

	rc = ctl_addr(overlay_dir, &dirfd, &sa);
	if (rc)
		return rc;
	unlinkat(dirfd, HO_CTL_NAME, 0);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, 16) < 0) {
		rc = ho_from_errno(errno);
		if (fd >= 0)
			close(fd);
		close(dirfd);
		return rc;
	}
	close(dirfd);
	*listen_fd = fd;
	return 0;
}

int ho_ctl_accept(int listen_fd, int *conn_fd, char *request, size_t len, int *passed_fd)
{
	int fd, rc;
	do
		fd = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC);
	while (fd < 0 && errno == EINTR);
	if (fd < 0)
		return ho_from_errno(errno);
	rc = recv_line(fd, request, len, passed_fd, 5000);
	if (rc) {
		close(fd);
		return rc;
	}
	*conn_fd = fd;
	return 0;
}

int ho_ctl_reply(int conn_fd, int err, const char *fmt, ...)
{
	char details[HO_CTL_LINE - 64], line[HO_CTL_LINE];
	va_list ap;
	int rc;

	va_start(ap, fmt);
	vsnprintf(details, sizeof(details), fmt, ap);
	va_end(ap);
	for (char *p = details; *p; p++)
		if (*p == '\n')
			*p = ' ';
	if (err == 0)
		snprintf(line, sizeof(line), details[0] ? "ok %s" : "ok", details);
	else
		snprintf(line, sizeof(line), "error %d %s", err, details[0] ? details : ho_strerror(err));
	rc = send_line(conn_fd, line, -1);
	close(conn_fd);
	return rc;
}

void ho_ctl_unlink(const char *overlay_dir)
{
	char *p = ho_path_join(overlay_dir, HO_CTL_NAME);
	if (p) {
		unlink(p);
		free(p);
	}
}
