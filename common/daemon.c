/*
 * daemon.c — fork-first daemonizing (daemon.h): the parent waits on a pipe for one line from the
 * child, "ready" or "exit N", so `handoff-mount` returns only once the mount serves, with the
 * child's own exit code when it could not.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "common/common.h"
#include "common/daemon.h"

int ho_daemonize(int *report_fd)
{
	int p[2];
	pid_t pid;

	if (pipe2(p, O_CLOEXEC) < 0)
		return ho_from_errno(errno);
	fflush(NULL);
	pid = fork();
	if (pid < 0) {
		close(p[0]);
		close(p[1]);
		return ho_from_errno(errno);
	}
	if (pid > 0) {
		char line[32] = "";
		ssize_t n;
		close(p[1]);
		n = ho_read_full(p[0], line, sizeof(line) - 1);
		line[n > 0 ? n : 0] = 0;
		if (strncmp(line, "ready", 5) == 0)
			_exit(0);
		if (strncmp(line, "exit ", 5) == 0)
			_exit(atoi(line + 5));
		_exit(1);
	}
	close(p[0]);
	*report_fd = p[1];
	return 0;
}

void ho_daemon_ready(int *report_fd)
{
	int nul;

	if (*report_fd < 0)
		return;
	ho_log_use_syslog(true);
	setsid();
	if (chdir("/") < 0)
		ho_warn("cannot change directory to /");
	nul = open("/dev/null", O_RDWR | O_CLOEXEC);
	if (nul >= 0) {
		dup2(nul, 0);
		dup2(nul, 1);
		dup2(nul, 2);
		if (nul > 2)
			close(nul);
	}
	if (ho_write_full(*report_fd, "ready\n", 6))
		ho_warn("cannot report readiness to the parent process");
	close(*report_fd);
	*report_fd = -1;
}

void ho_daemon_fail(int *report_fd, int code)
{
	char line[32];
	int n;

	if (*report_fd < 0)
		return;
	n = snprintf(line, sizeof(line), "exit %d\n", code ? code : 1);
	if (ho_write_full(*report_fd, line, (size_t)n))
		ho_warn("cannot report failure to the parent process");
	close(*report_fd);
	*report_fd = -1;
}
