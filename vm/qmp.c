/*
 * qmp.c — a QMP client over a unix socket: greeting, capabilities negotiation, one command at a
 * time matched to its reply by "id", and events kept aside for whoever waits for them. It exists
 * so vm.c can drive QEMU (pause, migrate, quit...) with timeouts and without a JSON library.
 */
#include "vm/vm.h"
#include "vm/vm_internal.h"
#include "vm/vm_json.h"

#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define QMP_MAX_MSG   (16u << 20)  /* a reply bigger than this is refused */
#define QMP_MAX_EVENTS 256         /* kept unconsumed events; the oldest are dropped */

struct vm_qmp {
	int fd;
	char *buf;
	size_t len, cap;
	unsigned long long next_id;
	char *events[QMP_MAX_EVENTS];
	size_t nevents;
};

/* ---- small shared helpers (declared in vm_internal.h) ----------------------------------------- */

static int debug_flag = -1;

bool vm_debug_on(void)
{
	if (debug_flag < 0) {
		const char *e = getenv("HANDOFF_VM_DEBUG");
		debug_flag = e && *e && strcmp(e, "0") != 0;
	}
	return debug_flag;
}

void vm_log(const char *fmt, ...)
{
	char line[2048];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	fprintf(stderr, "vm: %s\n", line);
}

void vm_debug(const char *fmt, ...)
{
	char line[2048];
	va_list ap;
	if (!vm_debug_on())
		return;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	fprintf(stderr, "vm: debug: %s\n", line);
}

long long vm_mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void vm_sleep_ms(int ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };
	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

int vm_remaining_ms(long long deadline)
{
	long long r = deadline - vm_mono_ms();
	return r < 0 ? 0 : r > 0x7fffffff ? 0x7fffffff : (int)r;
}

void vm_log_tail(const char *path, int lines)
{
	FILE *f = fopen(path, "r");
	if (!f)
		return;
	char buf[8192];
	if (fseek(f, 0, SEEK_END) == 0) {
		long sz = ftell(f);
		fseek(f, sz > (long)sizeof(buf) - 1 ? sz - (long)sizeof(buf) + 1 : 0, SEEK_SET);
	}
	size_t n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	/* start `lines` newlines from the end */
	char *p = buf + n;
	int seen = 0;
	while (p > buf) {
		if (p[-1] == '\n' && p != buf + n && ++seen > lines)
			break;
		p--;
	}
	for (char *line = strtok(p, "\n"); line; line = strtok(NULL, "\n"))
		vm_log("  %s: %s", path, line);
}

int vm_unix_connect(const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	if (strlen(path) >= sizeof(sa.sun_path)) {
		vm_log("socket path too long (max %zu bytes): %s", sizeof(sa.sun_path) - 1, path);
		return VM_EINVAL;
	}
	strcpy(sa.sun_path, path);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		vm_log("socket: %s", strerror(errno));
		return VM_EIO;
	}
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
		int e = errno;
		close(fd);
		if (e == ENOENT || e == ECONNREFUSED || e == EAGAIN)
			return VM_ECONN;
		vm_log("connect %s: %s", path, strerror(e));
		return VM_ECONN;
	}
	return fd;
}

/* ---- framing -------------------------------------------------------------------------------- */

static int write_all(int fd, const char *p, size_t n)
{
	while (n) {
		ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			vm_log("qmp: send: %s", strerror(errno));
			return VM_ECONN;
		}
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

/* Next complete message (malloc'd, NUL-terminated) or VM_ETIMEDOUT/VM_ECONN/VM_EPROTO. */
static int read_message(struct vm_qmp *q, long long deadline, char **msg, size_t *msglen)
{
	for (;;) {
		long n = vmj_message_len(q->buf, q->len);
		if (n < 0) {
			vm_log("qmp: malformed message from QEMU: %.*s", (int)(q->len > 200 ? 200 : q->len), q->buf);
			return VM_EPROTO;
		}
		if (n > 0) {
			/* trim leading whitespace of the message */
			size_t start = 0;
			while (start < (size_t)n && (q->buf[start] == ' ' || q->buf[start] == '\t' ||
						     q->buf[start] == '\r' || q->buf[start] == '\n'))
				start++;
			size_t ml = (size_t)n - start;
			char *m = malloc(ml + 1);
			if (!m)
				return VM_ENOMEM;
			memcpy(m, q->buf + start, ml);
			m[ml] = '\0';
			memmove(q->buf, q->buf + n, q->len - (size_t)n);
			q->len -= (size_t)n;
			*msg = m;
			*msglen = ml;
			vm_debug("qmp <- %s", m);
			return 0;
		}
		if (q->len >= QMP_MAX_MSG) {
			vm_log("qmp: message larger than %u bytes", QMP_MAX_MSG);
			return VM_ELIMIT;
		}
		if (q->cap - q->len < 4096) {
			size_t nc = q->cap ? q->cap * 2 : 16384;
			char *nb = realloc(q->buf, nc);
			if (!nb)
				return VM_ENOMEM;
			q->buf = nb;
			q->cap = nc;
		}
		struct pollfd pfd = { .fd = q->fd, .events = POLLIN };
		int pr = poll(&pfd, 1, vm_remaining_ms(deadline));
		if (pr < 0) {
			if (errno == EINTR)
				continue;
			vm_log("qmp: poll: %s", strerror(errno));
			return VM_EIO;
		}
		if (pr == 0)
			return VM_ETIMEDOUT;
		ssize_t r = recv(q->fd, q->buf + q->len, q->cap - q->len, 0);
		if (r < 0) {
			if (errno == EINTR || errno == EAGAIN)
				continue;
			vm_debug("qmp: recv: %s", strerror(errno));
			return VM_ECONN;
		}
		if (r == 0)
			return VM_ECONN;
		q->len += (size_t)r;
	}
}

static void keep_event(struct vm_qmp *q, char *ev)
{
	if (q->nevents == QMP_MAX_EVENTS) {
		free(q->events[0]);
		memmove(q->events, q->events + 1, (QMP_MAX_EVENTS - 1) * sizeof(q->events[0]));
		q->nevents--;
	}
	q->events[q->nevents++] = ev;
}

static bool event_matches(const char *ev, const char *name, const char *key, const char *value)
{
	char buf[256];
	size_t len = strlen(ev);
	if (vmj_get_string(ev, len, "event", buf, sizeof(buf)) != 0 || strcmp(buf, name) != 0)
		return false;
	if (!key)
		return true;
	char path[300];
	snprintf(path, sizeof(path), "data.%s", key);
	if (vmj_get_string(ev, len, path, buf, sizeof(buf)) != 0)
		return false;
	return !value || strcmp(buf, value) == 0;
}

/* ---- API -------------------------------------------------------------------------------------- */

int vm_qmp_connect(const char *path, int timeout_ms, struct vm_qmp **out)
{
	int fd = vm_unix_connect(path);
	if (fd < 0)
		return fd;
	struct vm_qmp *q = calloc(1, sizeof(*q));
	if (!q) {
		close(fd);
		return VM_ENOMEM;
	}
	q->fd = fd;
	q->next_id = 1;
	long long deadline = vm_mono_ms() + timeout_ms;
	char *m = NULL;
	size_t ml;
	int rc = read_message(q, deadline, &m, &ml);
	if (rc == 0) {
		const char *v;
		size_t vl;
		if (vmj_get(m, ml, "QMP", &v, &vl) != 0) {
			vm_log("qmp: %s: no QMP greeting", path);
			rc = VM_EPROTO;
		}
		free(m);
	} else {
		vm_log("qmp: %s: no greeting: %s", path, vm_strerror(rc));
	}
	if (rc == 0)
		rc = vm_qmp_exec(q, "qmp_capabilities", NULL, vm_remaining_ms(deadline), NULL);
	if (rc) {
		vm_qmp_close(q);
		return rc;
	}
	*out = q;
	return 0;
}

void vm_qmp_close(struct vm_qmp *q)
{
	if (!q)
		return;
	if (q->fd >= 0)
		close(q->fd);
	for (size_t i = 0; i < q->nevents; i++)
		free(q->events[i]);
	free(q->buf);
	free(q);
}

int vm_qmp_exec(struct vm_qmp *q, const char *command, const char *args_json, int timeout_ms,
		char **ret)
{
	if (ret)
		*ret = NULL;
	if (!q || q->fd < 0)
		return VM_ECONN;
	if (args_json && *args_json && vmj_typeof(args_json, strlen(args_json)) != VMJ_OBJECT) {
		vm_log("qmp: %s: arguments are not a JSON object: %s", command, args_json);
		return VM_EINVAL;
	}
	if (args_json && *args_json && vmj_validate(args_json, strlen(args_json)) != 0) {
		vm_log("qmp: %s: malformed JSON arguments: %s", command, args_json);
		return VM_EINVAL;
	}
	char *qc = vmj_quote(command);
	if (!qc)
		return VM_ENOMEM;
	unsigned long long id = q->next_id++;
	char *req = NULL;
	int n;
	if (args_json && *args_json)
		n = asprintf(&req, "{\"execute\":%s,\"arguments\":%s,\"id\":%llu}\n", qc, args_json, id);
	else
		n = asprintf(&req, "{\"execute\":%s,\"id\":%llu}\n", qc, id);
	free(qc);
	if (n < 0)
		return VM_ENOMEM;
	vm_debug("qmp -> %.*s", n - 1, req);
	int rc = write_all(q->fd, req, (size_t)n);
	free(req);
	if (rc)
		return rc;

	long long deadline = vm_mono_ms() + timeout_ms;
	for (;;) {
		char *m;
		size_t ml;
		rc = read_message(q, deadline, &m, &ml);
		if (rc) {
			if (rc == VM_ETIMEDOUT)
				vm_log("qmp: %s: no reply within %d ms", command, timeout_ms);
			return rc;
		}
		const char *v;
		size_t vl;
		if (vmj_get(m, ml, "event", &v, &vl) == 0) {
			keep_event(q, m);
			continue;
		}
		long long got;
		if (vmj_get_int(m, ml, "id", &got) != 0 || (unsigned long long)got != id) {
			vm_debug("qmp: dropping reply not for id %llu: %s", id, m);
			free(m);
			continue;
		}
		if (vmj_get(m, ml, "return", &v, &vl) == 0) {
			if (ret) {
				*ret = strndup(v, vl);
				if (!*ret)
					rc = VM_ENOMEM;
			}
		} else if (vmj_get(m, ml, "error", &v, &vl) == 0) {
			char cls[128] = "", desc[1024] = "";
			vmj_get_string(m, ml, "error.class", cls, sizeof(cls));
			vmj_get_string(m, ml, "error.desc", desc, sizeof(desc));
			vm_log("qmp: %s failed: %s: %s", command, cls, desc);
			if (ret)
				*ret = vmj_quote(desc);
			rc = VM_EQMP;
		} else {
			vm_log("qmp: %s: reply has neither return nor error: %s", command, m);
			rc = VM_EPROTO;
		}
		free(m);
		return rc;
	}
}

int vm_qmp_wait_event(struct vm_qmp *q, const char *event, const char *key, const char *value,
		      int timeout_ms, char **event_json)
{
	if (event_json)
		*event_json = NULL;
	if (!q)
		return VM_ECONN;
	for (size_t i = 0; i < q->nevents; i++) {
		if (event_matches(q->events[i], event, key, value)) {
			char *ev = q->events[i];
			memmove(q->events + i, q->events + i + 1, (q->nevents - i - 1) * sizeof(q->events[0]));
			q->nevents--;
			if (event_json)
				*event_json = ev;
			else
				free(ev);
			return 0;
		}
	}
	long long deadline = vm_mono_ms() + timeout_ms;
	for (;;) {
		char *m;
		size_t ml;
		int rc = read_message(q, deadline, &m, &ml);
		if (rc)
			return rc;
		const char *v;
		size_t vl;
		if (vmj_get(m, ml, "event", &v, &vl) != 0) {
			vm_debug("qmp: dropping stray reply: %s", m);
			free(m);
			continue;
		}
		if (event_matches(m, event, key, value)) {
			if (event_json)
				*event_json = m;
			else
				free(m);
			return 0;
		}
		keep_event(q, m);
	}
}
