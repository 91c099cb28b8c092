/*
 * ctl.h — how a tool talks to the daemon that owns an overlay (the mount or the mirror): a
 * Unix stream socket OVERLAY_DIR/control carrying one request line and one reply line, with an
 * optional file descriptor passed alongside (SCM_RIGHTS), e.g. a stream for the mirror to apply.
 *
 * Requests (answered by fs/ and tools/handoff-mirror): "checkpoint", "sync", "status",
 * "apply" (with a stream fd). Replies: "ok[ DETAILS]" or "error CODE MESSAGE" where CODE is a
 * negative enum ho_err.
 */
#ifndef HANDOFF_CTL_H
#define HANDOFF_CTL_H

#include <stddef.h>

#define HO_CTL_NAME "control"
#define HO_CTL_LINE 4096

/* Send request (one line, no newline) to the daemon owning overlay_dir, passing pass_fd unless
 * it is -1, and wait up to timeout_ms (0 = forever) for the reply. The reply's details (after
 * "ok ") are copied into reply. Returns 0 on "ok", the daemon's code on "error", HO_ENOENT when
 * no daemon listens, HO_ECONN / HO_EPROTO / HO_ETIMEDOUT on transport trouble. */
int ho_ctl_call(const char *overlay_dir, const char *request, int pass_fd, int timeout_ms,
		char *reply, size_t reply_len);

/* Daemon side: bind and listen on overlay_dir/control (replacing a stale socket). */
int ho_ctl_listen(const char *overlay_dir, int *listen_fd);
/* Accept one connection and read its request line (and passed fd, -1 if none). */
int ho_ctl_accept(int listen_fd, int *conn_fd, char *request, size_t len, int *passed_fd);
/* Reply "ok DETAILS" (err == 0) or "error ERR DETAILS", then close conn_fd. */
int ho_ctl_reply(int conn_fd, int err, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Remove the socket file. */
void ho_ctl_unlink(const char *overlay_dir);

#endif
