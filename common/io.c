/*
 * io.c — I/O that does not lose data quietly: full reads and writes that retry EINTR and short
 * transfers, and durable file replacement (temp file, fsync, rename, fsync directory).
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <libgen.h>
#include <poll.h>
#include "common/common.h"

ssize_t ho_pread_full(int fd, void *buf, size_t len, uint64_t off)
{
	size_t done = 0;
	while (done < len) {
		ssize_t n = pread(fd, (char *)buf + done, len - done, (off_t)(off + done));
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return ho_from_errno(errno);
		}
		if (n == 0)
			break;
		done += (size_t)n;
	}
	return (ssize_t)done;
}

int ho_pwrite_full(int fd, const void *buf, size_t len, uint64_t off)
{
	size_t done = 0;
	while (done < len) {
		ssize_t n = pwrite(fd, (const char *)buf + done, len - done, (off_t)(off + done));
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return ho_from_errno(errno);
		}
		if (n == 0)
			return HO_EIO;
		done += (size_t)n;
	}
	return 0;
}

ssize_t ho_read_full(int fd, void *buf, size_t len)
{
	size_t done = 0;
	while (done < len) {
		ssize_t n = read(fd, (char *)buf + done, len - done);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return ho_from_errno(errno);
		}
		if (n == 0)
			break;
		done += (size_t)n;
	}
	return (ssize_t)done;
}

int ho_write_full(int fd, const void *buf, size_t len)
{
	size_t done = 0;
	while (done < len) {
		ssize_t n = write(fd, (const char *)buf + done, len - done);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return ho_from_errno(errno);
		}
		done += (size_t)n;
	}
	return 0;
}

int ho_fsync_dir(const char *path)
{
	char *copy = strdup(path);
	struct stat st;
	const char *dir;
	int fd, rc = 0;

	if (!copy)
		return HO_ENOMEM;
	dir = (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) ? path : dirname(copy);
	fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		rc = ho_from_errno(errno);
	else {
		if (fsync(fd) < 0)
			rc = ho_from_errno(errno);
		close(fd);
	}
	free(copy);
	return rc;
}

int ho_write_file_atomic(const char *path, const void *buf, size_t len)
{
	char tmp[PATH_MAX];
	int fd, rc;

	if (snprintf(tmp, sizeof(tmp), "%s.tmp.%d", path, (int)getpid()) >= (int)sizeof(tmp))
		return HO_EINVAL;
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		return ho_from_errno(errno);
	rc = ho_write_full(fd, buf, len);
	if (rc == 0 && fsync(fd) < 0)
		rc = ho_from_errno(errno);
	if (close(fd) < 0 && rc == 0)
		rc = ho_from_errno(errno);
	if (rc == 0 && rename(tmp, path) < 0)
		rc = ho_from_errno(errno);
	if (rc) {
		unlink(tmp);
		return rc;
	}
	return ho_fsync_dir(path);
}

int ho_read_file(const char *path, char **out, size_t *out_len, size_t max_len)
{
	struct stat st;
	char *buf;
	ssize_t n;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return ho_from_errno(errno);
	if (fstat(fd, &st) < 0 || (size_t)st.st_size > max_len) {
		int rc = (size_t)st.st_size > max_len ? HO_ELIMIT : ho_from_errno(errno);
		close(fd);
		return rc;
	}
	buf = malloc((size_t)st.st_size + 1);
	if (!buf) {
		close(fd);
		return HO_ENOMEM;
	}
	n = ho_read_full(fd, buf, (size_t)st.st_size);
	close(fd);
	if (n < 0) {
		free(buf);
		return (int)n;
	}
	buf[n] = 0;
	*out = buf;
	if (out_len)
		*out_len = (size_t)n;
	return 0;
}

int ho_mkdir_p(const char *path, mode_t mode)
{
	char buf[PATH_MAX];
	struct stat st;
	size_t len = strlen(path);

	if (len == 0 || len >= sizeof(buf))
		return HO_EINVAL;
	memcpy(buf, path, len + 1);
	for (char *p = buf + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = 0;
		if (mkdir(buf, mode) < 0 && errno != EEXIST)
			return ho_from_errno(errno);
		*p = '/';
	}
	if (mkdir(buf, mode) < 0 && errno != EEXIST)
		return ho_from_errno(errno);
	if (stat(buf, &st) < 0)
		return ho_from_errno(errno);
	return S_ISDIR(st.st_mode) ? 0 : HO_EEXIST;
}

char *ho_path_join(const char *dir, const char *name)
{
	size_t a = strlen(dir), b = strlen(name);
	char *p = malloc(a + b + 2);
	if (!p)
		return NULL;
	memcpy(p, dir, a);
	p[a] = '/';
	memcpy(p + a + 1, name, b + 1);
	return p;
}

int ho_wait_accept(int listen_fd, int stop_fd)
{
	for (;;) {
		struct pollfd p[2] = { { .fd = listen_fd, .events = POLLIN }, { .fd = stop_fd, .events = POLLIN } };
		if (poll(p, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			return ho_from_errno(errno);
		}
		if (p[1].revents)
			return 0;
		if (p[0].revents)
			return 1;
	}
}
