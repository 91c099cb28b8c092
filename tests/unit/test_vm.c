/*
 * test_vm.c — unit tests of the vm module that need no QEMU: the JSON scanner on valid,
 * truncated, malformed and random input; error strings; start failures; and the QMP client and
 * helpers against a scripted fake QMP server (a forked child on a unix socket) that splits
 * replies, interleaves events and stale replies, reports errors and fakes a migration.
 */
#include "tests/unit/tap.h"
#include "vm/vm.h"
#include "vm/vm_json.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

/* ---- JSON --------------------------------------------------------------------------------------- */

static void test_message_len(void)
{
	const char *m = "{\"return\": {\"status\": \"running\", \"a\": [1, -2.5e3, true, null, \"x\\\"}\"]}}";
	size_t n = strlen(m);
	is_int(vmj_message_len(m, n), (long)n, "message_len of a whole message");
	bool all_zero = true;
	for (size_t i = 0; i < n; i++)
		if (vmj_message_len(m, i) != 0)
			all_zero = false;
	ok(all_zero, "every proper prefix needs more bytes");

	char two[512];
	snprintf(two, sizeof(two), "  \r\n%s\r\n{\"event\": \"STOP\"}\r\n", m);
	is_int(vmj_message_len(two, strlen(two)), (long)(n + 4), "first of two messages, leading whitespace counted");
	is_int(vmj_message_len(" \r\n ", 4), 0, "only whitespace: need more");
	is_int(vmj_message_len("[1]", 3), VM_EPROTO, "top level must be an object");
	is_int(vmj_message_len("{\"a\" 1}", 7), VM_EPROTO, "missing colon");
	is_int(vmj_message_len("{\"a\":tru}", 9), VM_EPROTO, "bad literal");
	is_int(vmj_message_len("{\"a\":\"\\q\"}", 10), VM_EPROTO, "bad escape");
	is_int(vmj_message_len("{\"a\":01}", 8), VM_EPROTO, "leading zero");
	is_int(vmj_message_len("{\"a\":1,}", 8), VM_EPROTO, "trailing comma");
	is_int(vmj_message_len("{\"a\":\"x\ny\"}", 11), VM_EPROTO, "raw control character in string");
	is_int(vmj_message_len("{\"a\":1", 6), 0, "number at end of buffer: need more");
	is_int(vmj_message_len("{\"a\":\"\\u12", 10), 0, "half a \\u escape: need more");

	char deep[300];
	size_t o = 0;
	deep[o++] = '{';
	deep[o++] = '"'; deep[o++] = 'a'; deep[o++] = '"'; deep[o++] = ':';
	for (int i = 0; i < 100; i++)
		deep[o++] = '[';
	for (int i = 0; i < 100; i++)
		deep[o++] = ']';
	deep[o++] = '}';
	is_int(vmj_message_len(deep, o), VM_EPROTO, "nesting beyond VMJ_MAX_DEPTH is refused");
}

static void test_validate_get(void)
{
	const char *t = "{\"return\": {\"status\": \"completed\", \"ram\": {\"total\": 532480, \"x\": []},"
			" \"error-desc\": \"a \\\"b\\\" \\u00e9\\ud83d\\ude00\", \"ok\": true, \"no\": false},"
			" \"id\": 7, \"k\\u0065y\": \"esc\"}";
	size_t n = strlen(t);
	is_int(vmj_validate(t, n), 0, "validate a QMP-like reply");
	is_int(vmj_validate("{} x", 4), VM_EPROTO, "validate rejects trailing garbage");
	is_int(vmj_validate(" 42 ", 4), 0, "validate accepts a bare number");
	is_int(vmj_validate("-", 1), VM_EPROTO, "validate rejects a lone minus");

	char s[256];
	long long v;
	bool b;
	is_int(vmj_get_string(t, n, "return.status", s, sizeof(s)), 0, "get return.status");
	is_str(s, "completed", "return.status value");
	is_int(vmj_get_int(t, n, "return.ram.total", &v), 0, "get nested int");
	is_int(v, 532480, "nested int value");
	is_int(vmj_get_int(t, n, "id", &v), 0, "get id after nested objects");
	is_int(v, 7, "id value");
	is_int(vmj_get_string(t, n, "return.error-desc", s, sizeof(s)), 0, "get escaped string");
	is_str(s, "a \"b\" \xc3\xa9\xf0\x9f\x98\x80", "escapes, \\u00e9 and a surrogate pair decoded");
	is_int(vmj_get_string(t, n, "return.error-desc", s, 5), VM_ELIMIT, "small buffer: VM_ELIMIT");
	is_int((long long)strlen(s), 4, "truncated string is NUL-terminated");
	is_int(vmj_get_bool(t, n, "return.ok", &b), 0, "get bool true");
	ok(b, "true is true");
	is_int(vmj_get_bool(t, n, "return.no", &b), 0, "get bool false");
	ok(!b, "false is false");
	is_int(vmj_get_string(t, n, "key", s, sizeof(s)), 0, "key written with an escape matches");
	is_str(s, "esc", "escaped key value");
	is_int(vmj_get_string(t, n, "return.nope", s, sizeof(s)), VM_ENOENT, "missing key: VM_ENOENT");
	is_int(vmj_get_string(t, n, "id.x", s, sizeof(s)), VM_ENOENT, "path through a number: VM_ENOENT");
	is_int(vmj_get_int(t, n, "return.status", &v), VM_EPROTO, "string as int: VM_EPROTO");
	is_int(vmj_get_string(t, n, "id", s, sizeof(s)), VM_EPROTO, "int as string: VM_EPROTO");
	const char *val;
	size_t vl;
	is_int(vmj_get(t, n, "return.ram.x", &val, &vl), 0, "get an array value");
	ok(vl == 2 && memcmp(val, "[]", 2) == 0, "array value bytes");
	is_int(vmj_typeof(val, vl), VMJ_ARRAY, "typeof array");
	is_int(vmj_get(t, n, "", &val, &vl), 0, "empty path is the whole value");
	is_int((long long)vl, (long long)n, "whole value length");
	is_int(vmj_get("{}", 2, "a", &val, &vl), VM_ENOENT, "empty object: VM_ENOENT");
	is_int(vmj_get("{\"a\":1", 6, "b", &val, &vl), VM_EPROTO, "truncated text: VM_EPROTO");

	is_int(vmj_int("1.5", 3, &v), VM_EPROTO, "fraction is not an int");
	is_int(vmj_int("1e3", 3, &v), VM_EPROTO, "exponent is not an int");
	is_int(vmj_int("99999999999999999999", 20, &v), VM_EPROTO, "overflow is not an int");
	is_int(vmj_int("-12", 3, &v), 0, "negative int");
	is_int(v, -12, "negative int value");
	is_int(vmj_string("\"\\u0000\"", 8, s, sizeof(s)), VM_EPROTO, "\\u0000 refused");
}

static void test_quote(void)
{
	const char *in = "a\"b\\c\nd\te\x01" "f /x";
	char *q = vmj_quote(in);
	ok(q != NULL, "quote");
	is_str(q, "\"a\\\"b\\\\c\\nd\\te\\u0001f /x\"", "quoted form");
	char back[64];
	is_int(vmj_string(q, strlen(q), back, sizeof(back)), 0, "quoted string decodes");
	is_str(back, in, "round trip");
	free(q);
}

static void test_random_input(void)
{
	/* random bytes drawn from JSON-ish characters: nothing may crash or loop */
	const char alphabet[] = "{}[]\":,\\ tfnrue0123456789-.eE+ual\n";
	unsigned seed = 12345;
	int complete = 0;
	for (int iter = 0; iter < 20000; iter++) {
		char buf[64];
		size_t n = (size_t)(iter % 63) + 1;
		for (size_t i = 0; i < n; i++) {
			seed = seed * 1103515245u + 12345u;
			buf[i] = alphabet[(seed >> 16) % (sizeof(alphabet) - 1)];
		}
		buf[0] = '{';
		long r = vmj_message_len(buf, n);
		if (r > 0) {
			complete++;
			const char *v;
			size_t vl;
			(void)vmj_get(buf, (size_t)r, "a.b", &v, &vl);
		}
		(void)vmj_validate(buf, n);
	}
	ok(1, "20000 random inputs scanned without a crash (%d complete objects)", complete);
}

static void test_strerror(void)
{
	bool distinct = true, known = true;
	for (int e = VM_ERR_MIN; e <= 0; e++) {
		if (strcmp(vm_strerror(e), "unknown error") == 0)
			known = false;
		for (int f = VM_ERR_MIN; f < e; f++)
			if (strcmp(vm_strerror(e), vm_strerror(f)) == 0)
				distinct = false;
	}
	ok(known, "every error code has a description");
	ok(distinct, "descriptions are distinct");
	is_str(vm_strerror(1), "unknown error", "out of range");
}

/* ---- start failures -------------------------------------------------------------------------------- */

static void test_start_failures(const char *dir)
{
	struct vm *vm = (struct vm *)1;
	struct vm_config c = { .run_dir = dir, .kernel = "/nonexistent/vmlinuz", .accel = "tcg" };
	is_int(vm_start(&c, &vm), VM_ENOENT, "missing kernel: VM_ENOENT");
	ok(vm == NULL, "no handle on failure");
	c.kernel = "/dev/null";
	c.qemu = "/nonexistent/qemu-system-x86_64";
	is_int(vm_start(&c, &vm), VM_ESPAWN, "missing qemu binary: VM_ESPAWN");
	c.qemu = "/bin/false";
	is_int(vm_start(&c, &vm), VM_EEXITED, "qemu that exits at once: VM_EEXITED");
	struct vm_config none = { .kernel = "/dev/null" };
	is_int(vm_start(&none, &vm), VM_EINVAL, "no run dir: VM_EINVAL");
	is_int(vm_attach(dir, NULL, 100, &vm), VM_ENOENT, "attach without a pid file: VM_ENOENT");
}

/* ---- fake QMP server ---------------------------------------------------------------------------- */

static void send_str(int fd, const char *s)
{
	size_t n = strlen(s);
	while (n) {
		ssize_t w = write(fd, s, n);
		if (w <= 0)
			_exit(3);
		s += w;
		n -= (size_t)w;
	}
}

/* Serve one client: the greeting, then replies by command name. */
static void fake_qmp(int lfd, const char *state_path)
{
	int fd = accept(lfd, NULL, NULL);
	if (fd < 0)
		_exit(2);
	send_str(fd, "{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 0, \"minor\": 2, \"major\": 7}}, \"capabilities\": [\"oob\"]}}\r\n");
	char buf[8192];
	size_t len = 0;
	int migrate_polls = 0;
	bool paused = false;
	for (;;) {
		long n = vmj_message_len(buf, len);
		if (n == 0) {
			ssize_t r = read(fd, buf + len, sizeof(buf) - len);
			if (r <= 0)
				_exit(0);
			len += (size_t)r;
			continue;
		}
		if (n < 0)
			_exit(4);
		char cmd[64] = "";
		long long id = -1;
		vmj_get_string(buf, (size_t)n, "execute", cmd, sizeof(cmd));
		vmj_get_int(buf, (size_t)n, "id", &id);
		char uri[512] = "";
		vmj_get_string(buf, (size_t)n, "arguments.uri", uri, sizeof(uri));
		memmove(buf, buf + n, len - (size_t)n);
		len -= (size_t)n;
		char out[1024];
		if (strcmp(cmd, "stop") == 0) {
			/* the reply dribbles in byte by byte, after an event */
			paused = true;
			snprintf(out, sizeof(out), "{\"timestamp\": {\"seconds\": 1, \"microseconds\": 2}, \"event\": \"STOP\"}\r\n{\"return\": {}, \"id\": %lld}\r\n", id);
			for (char *p = out; *p; p++) {
				char one[2] = { *p, 0 };
				send_str(fd, one);
			}
			continue;
		}
		if (strcmp(cmd, "cont") == 0) {
			paused = false;
			snprintf(out, sizeof(out), "{\"return\": {}, \"id\": %lld}{\"event\": \"RESUME\", \"timestamp\": {\"seconds\": 1, \"microseconds\": 3}}\r\n", id);
		} else if (strcmp(cmd, "query-status") == 0) {
			/* a stale reply for another id first; it must be skipped */
			snprintf(out, sizeof(out), "{\"return\": {\"status\": \"bogus\"}, \"id\": %lld}\r\n{\"return\": {\"status\": \"%s\", \"singlestep\": false, \"running\": %s}, \"id\": %lld}\r\n",
				 id + 1000, paused ? "paused" : "running", paused ? "false" : "true", id);
		} else if (strcmp(cmd, "migrate") == 0) {
			int sfd = open(state_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
			if (sfd >= 0) {
				send_str(sfd, "DEVICE-STATE");
				close(sfd);
			}
			paused = true;
			snprintf(out, sizeof(out), "{\"return\": {}, \"id\": %lld}\r\n", id);
		} else if (strcmp(cmd, "query-migrate") == 0) {
			snprintf(out, sizeof(out), "{\"return\": {\"status\": \"%s\"}, \"id\": %lld}\r\n",
				 ++migrate_polls < 3 ? "active" : "completed", id);
		} else if (strcmp(cmd, "quit") == 0) {
			snprintf(out, sizeof(out), "{\"return\": {}, \"id\": %lld}\r\n", id);
			send_str(fd, out);
			close(fd);
			_exit(0);
		} else if (strcmp(cmd, "qmp_capabilities") == 0 || strcmp(cmd, "migrate-set-capabilities") == 0) {
			snprintf(out, sizeof(out), "{\"return\": {}, \"id\": %lld}\r\n", id);
		} else {
			snprintf(out, sizeof(out), "{\"id\": %lld, \"error\": {\"class\": \"CommandNotFound\", \"desc\": \"The command %s has not been found\"}}\r\n", id, cmd);
		}
		send_str(fd, out);
	}
}

static void test_fake_qmp(const char *dir)
{
	char sock[512], pidf[512], state[512], mem[512];
	snprintf(sock, sizeof(sock), "%s/qmp.sock", dir);
	snprintf(pidf, sizeof(pidf), "%s/qemu.pid", dir);
	snprintf(state, sizeof(state), "%s/dev.state", dir);
	snprintf(mem, sizeof(mem), "%s/mem", dir);
	int mfd = open(mem, O_WRONLY | O_CREAT, 0644);
	if (mfd >= 0)
		close(mfd);

	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	if (strlen(sock) >= sizeof(sa.sun_path)) {
		ok(0, "socket path too long: %s", sock);
		return;
	}
	memcpy(sa.sun_path, sock, strlen(sock) + 1);
	int lfd = socket(AF_UNIX, SOCK_STREAM, 0);
	unlink(sock);
	if (lfd < 0 || bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) != 0 || listen(lfd, 1) != 0) {
		ok(0, "fake qmp socket: %s", strerror(errno));
		return;
	}
	fflush(stdout);
	pid_t pid = fork();
	if (pid == 0) {
		fake_qmp(lfd, state);
		_exit(0);
	}
	close(lfd);
	FILE *f = fopen(pidf, "w");
	if (f) {
		fprintf(f, "%d\n", (int)pid);
		fclose(f);
	}

	struct vm *vm = NULL;
	int rc = vm_attach(dir, mem, 5000, &vm);
	is_int(rc, 0, "attach to the fake QMP server (greeting + capabilities)");
	if (rc) {
		kill(pid, SIGKILL);
		waitpid(pid, NULL, 0);
		return;
	}
	vm_set_timeout(vm, 5000);
	is_int(vm_pid(vm), pid, "pid from the pid file");
	char st[64];
	bool running = false;
	is_int(vm_query_status(vm, st, sizeof(st), &running), 0, "query-status past a stale reply");
	is_str(st, "running", "status running");
	ok(running, "running flag");
	is_int(vm_pause(vm), 0, "stop, reply dribbled byte by byte after an event");
	is_int(vm_query_status(vm, st, sizeof(st), &running), 0, "query-status again");
	is_str(st, "paused", "status paused");
	char *ev = NULL;
	is_int(vm_wait_event(vm, "STOP", NULL, NULL, 1000, &ev), 0, "STOP event kept while waiting for the reply");
	ok(ev && strstr(ev, "\"STOP\""), "event text returned");
	free(ev);
	is_int(vm_wait_event(vm, "STOP", NULL, NULL, 200, NULL), VM_ETIMEDOUT, "an event is consumed once");
	is_int(vm_cont(vm), 0, "cont");
	is_int(vm_wait_event(vm, "RESUME", NULL, NULL, 1000, NULL), 0, "RESUME event in the same read as the reply");
	char *reply = NULL;
	is_int(vm_qmp(vm, "no-such-command", NULL, &reply), VM_EQMP, "QMP error: VM_EQMP");
	ok(reply && strstr(reply, "has not been found"), "error desc returned as a JSON string");
	free(reply);
	is_int(vm_qmp(vm, "query-status", "[1]", NULL), VM_EINVAL, "arguments must be an object");
	is_int(vm_qmp(vm, "query-status", "{\"a\":", NULL), VM_EINVAL, "arguments must be valid JSON");
	long long n = vm_save_device_state(vm, state);
	is_int(n, 12, "save device state: migrate, poll until completed, size of the state");
	is_int(vm_quit(vm), 0, "quit: QEMU goes away");
	ok(vm_exited(vm, NULL), "exited after quit");
	vm_close(vm);
	waitpid(pid, NULL, 0);
}

int main(void)
{
	signal(SIGPIPE, SIG_IGN);
	test_message_len();
	test_validate_get();
	test_quote();
	test_random_input();
	test_strerror();

	char dir[] = "/tmp/test_vm.XXXXXX";
	if (!mkdtemp(dir)) {
		ok(0, "mkdtemp");
		return done_testing();
	}
	test_start_failures(dir);
	test_fake_qmp(dir);
	char cmd[600];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	if (system(cmd) != 0)
		diag("could not remove %s", dir);
	return done_testing();
}
