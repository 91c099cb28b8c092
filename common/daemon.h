/*
 * daemon.h — detach a daemon BEFORE it opens anything: sqlite connections and POSIX locks must
 * not cross fork(), so the tools fork first and do all their work in the child. The parent
 * stays attached to the terminal and exits with the status the child reports: 0 once the child
 * says it is ready (serving), the child's exit code if it fails first, 1 if it dies silently.
 */
#ifndef HANDOFF_DAEMON_H
#define HANDOFF_DAEMON_H

/* Fork. Returns 0 in the child with *report_fd set; the parent never returns. The child keeps
 * stderr (errors still reach the terminal) until ho_daemon_detach(). */
int ho_daemonize(int *report_fd);
/* The child is serving: tell the parent to exit 0, start a new session, move to /, and point
 * stdin/stdout/stderr at /dev/null (logs go to syslog). *report_fd is closed and set to -1. */
void ho_daemon_ready(int *report_fd);
/* The child failed with exit code `code` (1..255): the parent exits with it. Closes *report_fd. */
void ho_daemon_fail(int *report_fd, int code);

#endif
