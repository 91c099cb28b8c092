/*
 * vm.c — one QEMU process per handle: build its command line (RAM in a shared file, raw disk
 * on virtio-blk, console to a log file, QMP on a unix socket), spawn it, attach to it, and the
 * helpers handoff needs on top of QMP: pause/cont, status, device-state save and load through
 * migration with x-ignore-shared, quit and kill, and reading the guest console. It exists so
 * the rest of handoff never deals with QEMU's command line or QMP directly.
 */
#include "vm/vm.h"
#include "vm/vm_internal.h"
#include "vm/vm_json.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#define DEFAULT_OP_TIMEOUT_MS 60000
#define DEFAULT_START_TIMEOUT_MS 30000

struct vm {
	pid_t pid;
	bool child;          /* we forked it: reap with waitpid */
	bool detached;       /* leave it running on vm_close */
	bool exited;
	int wstatus;
	char *run_dir, *qmp_path, *serial_path, *qemu_log, *pid_path, *cmd_path, *mem_path;
	struct vm_qmp *qmp;
	int op_timeout_ms;
	int cmd_fd;          /* connection to the ttyS1 socket, opened on first vm_send_cmd */
};

const char *vm_strerror(int err)
{
	switch (err) {
	case VM_OK: return "success";
	case VM_EINVAL: return "invalid argument";
	case VM_ENOMEM: return "out of memory";
	case VM_EIO: return "i/o error";
	case VM_ENOENT: return "no such file or object";
	case VM_ESPAWN: return "qemu could not be started";
	case VM_EEXITED: return "qemu exited";
	case VM_ECONN: return "qmp connection refused or lost";
	case VM_ETIMEDOUT: return "timed out";
	case VM_EPROTO: return "malformed qmp message";
	case VM_EQMP: return "qmp command failed";
	case VM_EMIGRATE: return "migration failed";
	case VM_ESTATE: return "not valid in the vm's current state";
	case VM_ELIMIT: return "size limit exceeded";
	default: return "unknown error";
	}
}

/* ---- small helpers ---------------------------------------------------------------------------- */

struct argv {
	char **v;
	size_t n, cap;
	bool oom;
};

static void argv_add(struct argv *a, const char *s)
{
	if (a->oom)
		return;
	if (a->n + 2 > a->cap) {
		size_t nc = a->cap ? a->cap * 2 : 32;
		char **nv = realloc(a->v, nc * sizeof(*nv));
		if (!nv) {
			a->oom = true;
			return;
		}
		a->v = nv;
		a->cap = nc;
	}
	a->v[a->n] = strdup(s);
	if (!a->v[a->n]) {
		a->oom = true;
		return;
	}
	a->v[++a->n] = NULL;
}

static void __attribute__((format(printf, 2, 3))) argv_addf(struct argv *a, const char *fmt, ...)
{
	char *s = NULL;
	va_list ap;
	va_start(ap, fmt);
	int n = vasprintf(&s, fmt, ap);
	va_end(ap);
	if (n < 0) {
		a->oom = true;
		return;
	}
	argv_add(a, s);
	free(s);
}

static void argv_free(struct argv *a)
{
	for (size_t i = 0; i < a->n; i++)
		free(a->v[i]);
	free(a->v);
}

/* QEMU option values: a comma must be doubled. malloc'd. */
static char *opt_escape(const char *s)
{
	size_t n = strlen(s) + 1;
	for (const char *p = s; *p; p++)
		n += *p == ',';
	char *out = malloc(n), *o = out;
	if (!out)
		return NULL;
	for (const char *p = s; *p; p++) {
		*o++ = *p;
		if (*p == ',')
			*o++ = ',';
	}
	*o = '\0';
	return out;
}

/* 'path' for /bin/sh. malloc'd. */
static char *sh_quote(const char *s)
{
	size_t n = 3;
	for (const char *p = s; *p; p++)
		n += *p == '\'' ? 4 : 1;
	char *out = malloc(n), *o = out;
	if (!out)
		return NULL;
	*o++ = '\'';
	for (const char *p = s; *p; p++) {
		if (*p == '\'') {
			memcpy(o, "'\\''", 4);
			o += 4;
		} else {
			*o++ = *p;
		}
	}
	*o++ = '\'';
	*o = '\0';
	return out;
}

static char *path_in(const char *dir, const char *name)
{
	char *p = NULL;
	if (asprintf(&p, "%s/%s", dir, name) < 0)
		return NULL;
	return p;
}

static int fsync_path(const char *path, bool dir)
{
	int fd = open(path, (dir ? O_RDONLY | O_DIRECTORY : O_RDWR) | O_CLOEXEC);
	if (fd < 0 && !dir && errno == EACCES)
		fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		vm_log("open %s for fsync: %s", path, strerror(errno));
		return VM_EIO;
	}
	int rc = 0;
	if (fsync(fd) != 0 && !(dir && (errno == EINVAL || errno == EROFS))) {
		vm_log("fsync %s: %s", path, strerror(errno));
		rc = VM_EIO;
	}
	close(fd);
	return rc;
}

static int fsync_parent(const char *path)
{
	char *d = strdup(path);
	if (!d)
		return VM_ENOMEM;
	char *slash = strrchr(d, '/');
	int rc;
	if (!slash)
		rc = fsync_path(".", true);
	else {
		if (slash == d)
			slash[1] = '\0';
		else
			*slash = '\0';
		rc = fsync_path(d, true);
	}
	free(d);
	return rc;
}

/* Is pid alive and not a zombie? (for QEMUs that are not our children) */
static bool proc_alive(pid_t pid)
{
	char path[64], buf[512];
	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return kill(pid, 0) == 0;
	ssize_t n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return false;
	buf[n] = '\0';
	char *rp = strrchr(buf, ')');
	if (!rp || rp[1] == '\0' || rp[2] == '\0')
		return true;
	return rp[2] != 'Z' && rp[2] != 'X';
}

bool vm_exited(struct vm *vm, int *status)
{
	if (!vm)
		return true;
	if (!vm->exited) {
		if (vm->child) {
			int st;
			pid_t r = waitpid(vm->pid, &st, WNOHANG);
			if (r == vm->pid || (r < 0 && errno == ECHILD)) {
				vm->exited = true;
				vm->wstatus = r == vm->pid ? st : 0;
			}
		} else if (vm->pid <= 0 || !proc_alive(vm->pid)) {
			vm->exited = true;
		}
	}
	if (vm->exited && status)
		*status = vm->wstatus;
	return vm->exited;
}

static void log_exit(struct vm *vm)
{
	if (vm->child && WIFEXITED(vm->wstatus))
		vm_log("qemu (pid %d) exited with status %d", (int)vm->pid, WEXITSTATUS(vm->wstatus));
	else if (vm->child && WIFSIGNALED(vm->wstatus))
		vm_log("qemu (pid %d) killed by signal %d", (int)vm->pid, WTERMSIG(vm->wstatus));
	else
		vm_log("qemu (pid %d) is gone", (int)vm->pid);
	if (vm->qemu_log)
		vm_log_tail(vm->qemu_log, 10);
}

/* Wait for exit until deadline; true if it exited. */
static bool wait_exit(struct vm *vm, long long deadline)
{
	for (;;) {
		if (vm_exited(vm, NULL))
			return true;
		if (vm_mono_ms() >= deadline)
			return false;
		vm_sleep_ms(20);
	}
}

static struct vm *vm_alloc(const char *run_dir)
{
	struct vm *vm = calloc(1, sizeof(*vm));
	if (!vm)
		return NULL;
	vm->cmd_fd = -1;
	vm->op_timeout_ms = DEFAULT_OP_TIMEOUT_MS;
	vm->run_dir = strdup(run_dir);
	vm->qmp_path = path_in(run_dir, "qmp.sock");
	vm->qemu_log = path_in(run_dir, "qemu.log");
	vm->pid_path = path_in(run_dir, "qemu.pid");
	vm->cmd_path = path_in(run_dir, "ttyS1.sock");
	if (!vm->run_dir || !vm->qmp_path || !vm->qemu_log || !vm->pid_path || !vm->cmd_path) {
		vm_close(vm);
		return NULL;
	}
	return vm;
}

void vm_close(struct vm *vm)
{
	if (!vm)
		return;
	if (vm->child && !vm->detached && !vm_exited(vm, NULL)) {
		kill(vm->pid, SIGKILL);
		waitpid(vm->pid, NULL, 0);
	}
	vm_qmp_close(vm->qmp);
	if (vm->cmd_fd >= 0)
		close(vm->cmd_fd);
	free(vm->run_dir);
	free(vm->qmp_path);
	free(vm->serial_path);
	free(vm->qemu_log);
	free(vm->pid_path);
	free(vm->cmd_path);
	free(vm->mem_path);
	free(vm);
}

pid_t vm_pid(const struct vm *vm) { return vm ? vm->pid : -1; }
const char *vm_run_dir(const struct vm *vm) { return vm ? vm->run_dir : NULL; }
const char *vm_serial_log(const struct vm *vm) { return vm ? vm->serial_path : NULL; }
const char *vm_qmp_socket(const struct vm *vm) { return vm ? vm->qmp_path : NULL; }
const char *vm_cmd_socket(const struct vm *vm) { return vm ? vm->cmd_path : NULL; }

void vm_set_timeout(struct vm *vm, int timeout_ms)
{
	if (vm)
		vm->op_timeout_ms = timeout_ms > 0 ? timeout_ms : DEFAULT_OP_TIMEOUT_MS;
}

/* ---- starting ----------------------------------------------------------------------------------- */

const char *vm_qemu_binary(void)
{
	const char *q = getenv("HANDOFF_QEMU");
	return q && *q ? q : "qemu-system-x86_64";
}

static int build_argv(const struct vm_config *cfg, struct vm *vm, const char *accel, struct argv *a)
{
	const char *qemu = cfg->qemu ? cfg->qemu : vm_qemu_binary();
	unsigned mem_mb = cfg->mem_mb ? cfg->mem_mb : 256;
	char *e = NULL;

	argv_add(a, qemu);
	argv_add(a, "-nodefaults");
	argv_add(a, "-no-user-config");
	argv_add(a, "-display");
	argv_add(a, "none");
	argv_add(a, "-no-reboot");
	argv_add(a, "-machine");
	if (cfg->mem_path)
		argv_addf(a, "%s,memory-backend=mem", cfg->machine ? cfg->machine : "pc");
	else
		argv_add(a, cfg->machine ? cfg->machine : "pc");
	argv_add(a, "-accel");
	argv_add(a, accel);
	argv_add(a, "-smp");
	argv_addf(a, "%u", cfg->cpus ? cfg->cpus : 1);
	argv_add(a, "-m");
	argv_addf(a, "%uM", mem_mb);
	if (cfg->mem_path) {
		if (!(e = opt_escape(cfg->mem_path)))
			return VM_ENOMEM;
		argv_add(a, "-object");
		argv_addf(a, "memory-backend-file,id=mem,size=%uM,mem-path=%s,share=on", mem_mb, e);
		free(e);
	}
	argv_add(a, "-kernel");
	argv_add(a, cfg->kernel);
	if (cfg->initrd) {
		argv_add(a, "-initrd");
		argv_add(a, cfg->initrd);
	}
	if (cfg->append) {
		argv_add(a, "-append");
		argv_add(a, cfg->append);
	}
	if (cfg->disk) {
		if (!(e = opt_escape(cfg->disk)))
			return VM_ENOMEM;
		argv_add(a, "-drive");
		argv_addf(a, "file=%s,format=%s,if=virtio%s%s", e,
			  cfg->disk_format ? cfg->disk_format : "raw",
			  cfg->disk_opts && *cfg->disk_opts ? "," : "",
			  cfg->disk_opts ? cfg->disk_opts : "");
		free(e);
	}
	if (!(e = opt_escape(vm->serial_path)))
		return VM_ENOMEM;
	argv_add(a, "-chardev");
	argv_addf(a, "file,id=ser0,path=%s", e);
	free(e);
	argv_add(a, "-serial");
	argv_add(a, "chardev:ser0");
	if (cfg->cmd_port) {
		if (!(e = opt_escape(vm->cmd_path)))
			return VM_ENOMEM;
		argv_add(a, "-chardev");
		argv_addf(a, "socket,id=ser1,path=%s,server=on,wait=off", e);
		free(e);
		argv_add(a, "-serial");
		argv_add(a, "chardev:ser1");
	}
	if (!(e = opt_escape(vm->qmp_path)))
		return VM_ENOMEM;
	argv_add(a, "-chardev");
	argv_addf(a, "socket,id=qmp,path=%s,server=on,wait=off", e);
	free(e);
	argv_add(a, "-mon");
	argv_add(a, "chardev=qmp,mode=control");
	argv_add(a, "-pidfile");
	argv_add(a, vm->pid_path);
	if (cfg->incoming) {
		argv_add(a, "-incoming");
		argv_add(a, "defer");
	}
	if (cfg->paused)
		argv_add(a, "-S");
	for (const char *const *x = cfg->extra_args; x && *x; x++)
		argv_add(a, *x);
	return a->oom ? VM_ENOMEM : 0;
}

static void close_fds_from(int lowfd)
{
#ifdef SYS_close_range
	if (syscall(SYS_close_range, (unsigned)lowfd, ~0U, 0) == 0)
		return;
#endif
	long max = sysconf(_SC_OPEN_MAX);
	if (max < 0 || max > 65536)
		max = 65536;
	for (int fd = lowfd; fd < max; fd++)
		close(fd);
}

pid_t vm_spawn(char *const *argv, int log_fd, bool detach)
{
	int errpipe[2];
	if (pipe2(errpipe, O_CLOEXEC) != 0) {
		vm_log("pipe: %s", strerror(errno));
		return VM_EIO;
	}
	pid_t parent = getpid();
	pid_t pid = fork();
	if (pid < 0) {
		vm_log("fork: %s", strerror(errno));
		close(errpipe[0]);
		close(errpipe[1]);
		return VM_ESPAWN;
	}
	if (pid == 0) {
		int err;
		if (detach) {
			setsid();
		} else {
			prctl(PR_SET_PDEATHSIG, SIGKILL);
			if (getppid() != parent)
				_exit(127);
		}
		int nul = open("/dev/null", O_RDONLY);
		if (nul < 0 || dup2(nul, 0) < 0 || dup2(log_fd, 1) < 0 || dup2(log_fd, 2) < 0)
			goto fail;
		if (errpipe[1] != 3) {
			if (dup2(errpipe[1], 3) < 0)
				goto fail;
		}
		fcntl(3, F_SETFD, FD_CLOEXEC);
		close_fds_from(4);
		signal(SIGPIPE, SIG_DFL);
		sigset_t none;
		sigemptyset(&none);
		sigprocmask(SIG_SETMASK, &none, NULL);
		execvp(argv[0], argv);
fail:
		err = errno;
		if (write(3, &err, sizeof(err)) < 0) {
			/* nothing more to do */
		}
		_exit(127);
	}
	close(errpipe[1]);
	int child_errno = 0;
	ssize_t n;
	do {
		n = read(errpipe[0], &child_errno, sizeof(child_errno));
	} while (n < 0 && errno == EINTR);
	close(errpipe[0]);
	if (n == (ssize_t)sizeof(child_errno)) {
		vm_log("cannot run %s: %s", argv[0], strerror(child_errno));
		waitpid(pid, NULL, 0);
		return VM_ESPAWN;
	}
	return pid;
}

static int connect_qmp(struct vm *vm, long long deadline)
{
	for (;;) {
		int rc = vm_qmp_connect(vm->qmp_path, vm_remaining_ms(deadline) > 0 ? vm_remaining_ms(deadline) : 1,
					&vm->qmp);
		if (rc == 0)
			return 0;
		if (rc != VM_ECONN)
			return rc;
		if (vm_exited(vm, NULL)) {
			log_exit(vm);
			return VM_EEXITED;
		}
		if (vm_mono_ms() >= deadline) {
			vm_log("qmp socket %s did not come up", vm->qmp_path);
			return VM_ETIMEDOUT;
		}
		vm_sleep_ms(20);
	}
}

int vm_start(const struct vm_config *cfg, struct vm **out)
{
	*out = NULL;
	if (!cfg || !cfg->kernel || !cfg->run_dir) {
		vm_log("vm_start: kernel and run_dir are required");
		return VM_EINVAL;
	}
	struct stat st;
	if (stat(cfg->run_dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
		vm_log("run dir %s: not a directory", cfg->run_dir);
		return VM_ENOENT;
	}
	const char *files[] = { cfg->kernel, cfg->initrd, cfg->disk };
	for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
		if (files[i] && access(files[i], R_OK) != 0) {
			vm_log("%s: %s", files[i], strerror(errno));
			return VM_ENOENT;
		}
	}
	const char *accel = cfg->accel;
	if (!accel || !*accel || strcmp(accel, "auto") == 0)
		accel = vm_default_accel();

	struct vm *vm = vm_alloc(cfg->run_dir);
	if (!vm)
		return VM_ENOMEM;
	vm->serial_path = cfg->serial_log ? strdup(cfg->serial_log) : path_in(cfg->run_dir, "serial.log");
	if (!vm->serial_path || (cfg->mem_path && !(vm->mem_path = strdup(cfg->mem_path)))) {
		vm_close(vm);
		return VM_ENOMEM;
	}
	if (strlen(vm->qmp_path) > 107 || strlen(vm->cmd_path) > 107) {
		vm_log("run dir path too long for unix sockets: %s", cfg->run_dir);
		vm_close(vm);
		return VM_EINVAL;
	}
	unlink(vm->qmp_path);
	unlink(vm->cmd_path);
	unlink(vm->pid_path);

	struct argv a = { 0 };
	int rc = build_argv(cfg, vm, accel, &a);
	if (rc) {
		argv_free(&a);
		vm_close(vm);
		return rc;
	}
	if (vm_debug_on()) {
		char line[8192];
		size_t o = 0;
		for (size_t i = 0; i < a.n && o < sizeof(line) - 1; i++)
			o += (size_t)snprintf(line + o, sizeof(line) - o, "%s%s", i ? " " : "", a.v[i]);
		vm_debug("exec: %s", line);
	}
	int log_fd = open(vm->qemu_log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
	if (log_fd < 0) {
		vm_log("%s: %s", vm->qemu_log, strerror(errno));
		argv_free(&a);
		vm_close(vm);
		return VM_EIO;
	}
	pid_t pid = vm_spawn(a.v, log_fd, cfg->detach);
	close(log_fd);
	argv_free(&a);
	if (pid < 0) {
		vm_close(vm);
		return (int)pid;
	}
	vm->pid = pid;
	vm->child = true;
	vm->detached = cfg->detach;
	long long deadline = vm_mono_ms() + (cfg->timeout_ms > 0 ? cfg->timeout_ms : DEFAULT_START_TIMEOUT_MS);
	rc = connect_qmp(vm, deadline);
	if (rc) {
		if (!vm_exited(vm, NULL)) {
			kill(vm->pid, SIGKILL);
			waitpid(vm->pid, NULL, 0);
			vm->exited = true;
		}
		vm_close(vm);
		return rc;
	}
	vm_debug("qemu pid %d up (%s, accel %s)", (int)pid, vm->run_dir, accel);
	*out = vm;
	return 0;
}

int vm_start_incoming(const struct vm_config *cfg, struct vm **out)
{
	if (!cfg)
		return VM_EINVAL;
	struct vm_config c = *cfg;
	c.incoming = true;
	return vm_start(&c, out);
}

int vm_attach(const char *run_dir, const char *mem_path, int timeout_ms, struct vm **out)
{
	*out = NULL;
	if (!run_dir)
		return VM_EINVAL;
	struct vm *vm = vm_alloc(run_dir);
	if (!vm)
		return VM_ENOMEM;
	vm->serial_path = path_in(run_dir, "serial.log");
	if (!vm->serial_path || (mem_path && !(vm->mem_path = strdup(mem_path)))) {
		vm_close(vm);
		return VM_ENOMEM;
	}
	vm->detached = true;
	FILE *f = fopen(vm->pid_path, "r");
	int pid = 0;
	if (!f || fscanf(f, "%d", &pid) != 1 || pid <= 0) {
		vm_log("%s: no QEMU pid (%s)", vm->pid_path, f ? "malformed" : strerror(errno));
		if (f)
			fclose(f);
		vm_close(vm);
		return VM_ENOENT;
	}
	fclose(f);
	vm->pid = pid;
	if (!proc_alive(vm->pid)) {
		vm_log("qemu pid %d (from %s) is not running", pid, vm->pid_path);
		vm->exited = true;
		vm_close(vm);
		return VM_EEXITED;
	}
	int rc = connect_qmp(vm, vm_mono_ms() + (timeout_ms > 0 ? timeout_ms : 10000));
	if (rc) {
		vm_close(vm);
		return rc;
	}
	*out = vm;
	return 0;
}

/* ---- QMP -------------------------------------------------------------------------------------- */

static int check_conn(struct vm *vm, int rc)
{
	if (rc == VM_ECONN && vm_exited(vm, NULL)) {
		log_exit(vm);
		return VM_EEXITED;
	}
	return rc;
}

int vm_qmp(struct vm *vm, const char *command, const char *args_json, char **reply)
{
	if (reply)
		*reply = NULL;
	if (!vm || !command)
		return VM_EINVAL;
	if (!vm->qmp)
		return VM_ECONN;
	return check_conn(vm, vm_qmp_exec(vm->qmp, command, args_json, vm->op_timeout_ms, reply));
}

int vm_qmpf(struct vm *vm, const char *command, char **reply, const char *args_fmt, ...)
{
	char *args = NULL;
	va_list ap;
	va_start(ap, args_fmt);
	int n = vasprintf(&args, args_fmt, ap);
	va_end(ap);
	if (n < 0)
		return VM_ENOMEM;
	int rc = vm_qmp(vm, command, args, reply);
	free(args);
	return rc;
}

int vm_wait_event(struct vm *vm, const char *event, const char *key, const char *value,
		  int timeout_ms, char **event_json)
{
	if (!vm || !event)
		return VM_EINVAL;
	return check_conn(vm, vm_qmp_wait_event(vm->qmp, event, key, value, timeout_ms, event_json));
}

/* ---- helpers ------------------------------------------------------------------------------------ */

int vm_query_status(struct vm *vm, char *buf, size_t len, bool *running)
{
	char *r = NULL;
	int rc = vm_qmp(vm, "query-status", NULL, &r);
	if (rc)
		return rc;
	size_t rl = strlen(r);
	if (buf && len) {
		rc = vmj_get_string(r, rl, "status", buf, len);
		if (rc)
			vm_log("query-status: no status in %s", r);
	}
	if (!rc && running) {
		rc = vmj_get_bool(r, rl, "running", running);
		if (rc)
			vm_log("query-status: no running flag in %s", r);
	}
	free(r);
	return rc;
}

int vm_wait_status(struct vm *vm, const char *status, int timeout_ms)
{
	long long deadline = vm_mono_ms() + timeout_ms;
	char st[64];
	for (;;) {
		int rc = vm_query_status(vm, st, sizeof(st), NULL);
		if (rc)
			return rc;
		if (strcmp(st, status) == 0)
			return 0;
		if (vm_mono_ms() >= deadline) {
			vm_log("status is %s, not %s, after %d ms", st, status, timeout_ms);
			return VM_ETIMEDOUT;
		}
		vm_sleep_ms(20);
	}
}

int vm_pause(struct vm *vm)
{
	return vm_qmp(vm, "stop", NULL, NULL);
}

int vm_cont(struct vm *vm)
{
	return vm_qmp(vm, "cont", NULL, NULL);
}

static int set_ignore_shared(struct vm *vm)
{
	return vm_qmp(vm, "migrate-set-capabilities",
		      "{\"capabilities\":[{\"capability\":\"x-ignore-shared\",\"state\":true}]}", NULL);
}

/* Poll query-migrate until completed (0) or failed/cancelled (VM_EMIGRATE). On the incoming side
 * a QEMU whose load fails exits: that is VM_EMIGRATE too. */
static int wait_migration(struct vm *vm, bool incoming)
{
	long long deadline = vm_mono_ms() + vm->op_timeout_ms;
	char st[64] = "";
	int delay = 5;
	for (;;) {
		char *r = NULL;
		int rc = vm_qmp(vm, "query-migrate", NULL, &r);
		if (rc) {
			if (incoming && (rc == VM_EEXITED || rc == VM_ECONN))
				return VM_EMIGRATE;
			return rc;
		}
		size_t rl = strlen(r);
		if (vmj_get_string(r, rl, "status", st, sizeof(st)) != 0)
			st[0] = '\0';
		if (strcmp(st, "completed") == 0) {
			free(r);
			return 0;
		}
		if (strcmp(st, "failed") == 0 || strcmp(st, "cancelled") == 0) {
			char desc[1024] = "";
			vmj_get_string(r, rl, "error-desc", desc, sizeof(desc));
			vm_log("migration %s%s%s", st, *desc ? ": " : "", desc);
			free(r);
			return VM_EMIGRATE;
		}
		free(r);
		if (incoming && st[0] == '\0') {
			/* query-migrate may say nothing on the incoming side: ask the run state */
			char rs[64];
			if (vm_query_status(vm, rs, sizeof(rs), NULL) == 0 && strcmp(rs, "inmigrate") != 0 &&
			    strcmp(rs, "prelaunch") != 0)
				return 0;
		}
		if (vm_mono_ms() >= deadline) {
			vm_log("migration still '%s' after %d ms; cancelling", st, vm->op_timeout_ms);
			if (!incoming)
				vm_qmp(vm, "migrate_cancel", NULL, NULL);
			return VM_ETIMEDOUT;
		}
		vm_sleep_ms(delay);
		if (delay < 50)
			delay *= 2;
	}
}

int vm_migrate(struct vm *vm, const char *uri)
{
	if (!vm || !uri)
		return VM_EINVAL;
	int rc = set_ignore_shared(vm);
	if (rc)
		return rc;
	char *q = vmj_quote(uri);
	if (!q)
		return VM_ENOMEM;
	rc = vm_qmpf(vm, "migrate", NULL, "{\"uri\":%s}", q);
	free(q);
	if (rc)
		return rc;
	rc = wait_migration(vm, false);
	if (rc)
		return rc;
	if (vm->mem_path)
		rc = fsync_path(vm->mem_path, false);
	return rc;
}

long long vm_save_device_state(struct vm *vm, const char *path)
{
	if (!vm || !path)
		return VM_EINVAL;
	if (!vm->mem_path)
		vm_log("warning: saving device state of a VM whose RAM is not known to be in a shared "
		       "file: the state will include all of RAM");
	char *qp = sh_quote(path), *uri = NULL;
	if (!qp || asprintf(&uri, "exec:cat > %s", qp) < 0) {
		free(qp);
		return VM_ENOMEM;
	}
	free(qp);
	int rc = vm_migrate(vm, uri);
	free(uri);
	if (rc)
		return rc;
	if ((rc = fsync_path(path, false)) || (rc = fsync_parent(path)))
		return rc;
	struct stat st;
	if (stat(path, &st) != 0) {
		vm_log("%s: %s", path, strerror(errno));
		return VM_EIO;
	}
	if (st.st_size == 0) {
		vm_log("%s: device state is empty", path);
		return VM_EMIGRATE;
	}
	return (long long)st.st_size;
}

int vm_migrate_incoming(struct vm *vm, const char *uri)
{
	if (!vm || !uri)
		return VM_EINVAL;
	char st[64];
	int rc = vm_query_status(vm, st, sizeof(st), NULL);
	if (rc)
		return rc;
	if (strcmp(st, "inmigrate") != 0) {
		vm_log("cannot load migration state: status is %s, not inmigrate (start with -incoming)", st);
		return VM_ESTATE;
	}
	if ((rc = set_ignore_shared(vm)))
		return rc;
	char *q = vmj_quote(uri);
	if (!q)
		return VM_ENOMEM;
	rc = vm_qmpf(vm, "migrate-incoming", NULL, "{\"uri\":%s}", q);
	free(q);
	if (rc)
		return rc;
	return wait_migration(vm, true);
}

int vm_load_device_state(struct vm *vm, const char *path)
{
	if (!vm || !path)
		return VM_EINVAL;
	struct stat st;
	if (stat(path, &st) != 0 || access(path, R_OK) != 0) {
		vm_log("%s: %s", path, strerror(errno));
		return VM_ENOENT;
	}
	char *qp = sh_quote(path), *uri = NULL;
	if (!qp || asprintf(&uri, "exec:cat %s", qp) < 0) {
		free(qp);
		return VM_ENOMEM;
	}
	free(qp);
	int rc = vm_migrate_incoming(vm, uri);
	free(uri);
	return rc;
}

int vm_kill(struct vm *vm)
{
	if (!vm)
		return VM_EINVAL;
	if (!vm_exited(vm, NULL)) {
		if (kill(vm->pid, SIGKILL) != 0 && errno != ESRCH) {
			vm_log("kill %d: %s", (int)vm->pid, strerror(errno));
			return VM_EIO;
		}
		if (!wait_exit(vm, vm_mono_ms() + 10000)) {
			vm_log("qemu pid %d did not die", (int)vm->pid);
			return VM_ETIMEDOUT;
		}
		/* QEMU removes its pid file only when it exits by itself: nobody should find ours */
		if (vm->pid_path)
			unlink(vm->pid_path);
	}
	vm_qmp_close(vm->qmp);
	vm->qmp = NULL;
	return 0;
}

int vm_quit(struct vm *vm)
{
	if (!vm)
		return VM_EINVAL;
	if (vm_exited(vm, NULL))
		return 0;
	int rc = vm_qmp(vm, "quit", NULL, NULL);
	if (rc && rc != VM_ECONN && rc != VM_EEXITED)
		vm_log("quit: %s; killing qemu", vm_strerror(rc));
	if (wait_exit(vm, vm_mono_ms() + vm->op_timeout_ms)) {
		vm_qmp_close(vm->qmp);
		vm->qmp = NULL;
		return 0;
	}
	vm_log("qemu pid %d did not quit within %d ms; killing it", (int)vm->pid, vm->op_timeout_ms);
	rc = vm_kill(vm);
	return rc ? rc : VM_ETIMEDOUT;
}

/* ---- guest console and command port -------------------------------------------------------------- */

int vm_wait_serial(struct vm *vm, const char *needle, int timeout_ms, char *line, size_t len)
{
	if (!vm || !needle)
		return VM_EINVAL;
	long long deadline = vm_mono_ms() + timeout_ms;
	off_t off = 0;
	char *cur = NULL;           /* the current (incomplete) line */
	size_t curlen = 0, curcap = 0;
	int rc = VM_ETIMEDOUT;
	bool found = false;
	for (;;) {
		int fd = open(vm->serial_path, O_RDONLY | O_CLOEXEC);
		if (fd >= 0) {
			char buf[65536];
			ssize_t n;
			while ((n = pread(fd, buf, sizeof(buf), off)) > 0) {
				off += n;
				for (ssize_t i = 0; i < n; i++) {
					char c = buf[i];
					if (c == '\n') {
						if (curlen && cur[curlen - 1] == '\r')
							curlen--;
						if (curlen && memmem(cur, curlen, needle, strlen(needle))) {
							found = true;
							if (line && len) {
								size_t m = curlen < len - 1 ? curlen : len - 1;
								memcpy(line, cur, m);
								line[m] = '\0';
							}
						}
						curlen = 0;
						continue;
					}
					if (curlen + 1 >= curcap) {
						size_t nc = curcap ? curcap * 2 : 256;
						if (nc > (1u << 20)) { /* absurd line: drop its head */
							curlen = 0;
							continue;
						}
						char *nb = realloc(cur, nc);
						if (!nb) {
							close(fd);
							free(cur);
							return VM_ENOMEM;
						}
						cur = nb;
						curcap = nc;
					}
					cur[curlen++] = c;
				}
			}
			close(fd);
		}
		if (found) {
			rc = 0;
			break;
		}
		if (vm_exited(vm, NULL)) {
			rc = VM_EEXITED;
			break;
		}
		if (vm_mono_ms() >= deadline)
			break;
		vm_sleep_ms(50);
	}
	free(cur);
	return rc;
}

int vm_send_cmd(struct vm *vm, const char *line)
{
	if (!vm || !line)
		return VM_EINVAL;
	if (vm->cmd_fd < 0) {
		int fd = vm_unix_connect(vm->cmd_path);
		if (fd < 0) {
			vm_log("command port %s: %s (was the VM started with cmd_port?)", vm->cmd_path,
			       vm_strerror(fd));
			return fd;
		}
		vm->cmd_fd = fd;
	}
	/* drop whatever the guest wrote there before */
	char junk[4096];
	while (recv(vm->cmd_fd, junk, sizeof(junk), MSG_DONTWAIT) > 0)
		;
	size_t n = strlen(line);
	char *msg = malloc(n + 2);
	if (!msg)
		return VM_ENOMEM;
	memcpy(msg, line, n);
	msg[n] = '\n';
	const char *p = msg;
	size_t left = n + 1;
	int rc = 0;
	while (left) {
		ssize_t w = send(vm->cmd_fd, p, left, MSG_NOSIGNAL);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			vm_log("command port: send: %s", strerror(errno));
			close(vm->cmd_fd);
			vm->cmd_fd = -1;
			rc = VM_ECONN;
			break;
		}
		p += w;
		left -= (size_t)w;
	}
	free(msg);
	return rc;
}

int vm_recv_cmd_line(struct vm *vm, char *line, size_t len, int timeout_ms)
{
	if (!vm || !line || !len)
		return VM_EINVAL;
	if (vm->cmd_fd < 0)
		return VM_ECONN;
	long long deadline = vm_mono_ms() + timeout_ms;
	size_t o = 0;
	for (;;) {
		struct pollfd pfd = { .fd = vm->cmd_fd, .events = POLLIN };
		int pr = poll(&pfd, 1, vm_remaining_ms(deadline));
		if (pr < 0 && errno == EINTR)
			continue;
		if (pr < 0) {
			vm_log("command port: poll: %s", strerror(errno));
			return VM_EIO;
		}
		if (pr == 0) {
			line[o] = '\0';
			return VM_ETIMEDOUT;
		}
		char c;
		ssize_t n = recv(vm->cmd_fd, &c, 1, 0);
		if (n < 0 && (errno == EINTR || errno == EAGAIN))
			continue;
		if (n <= 0) {
			close(vm->cmd_fd);
			vm->cmd_fd = -1;
			line[o] = '\0';
			return VM_ECONN;
		}
		if (c == '\n') {
			if (o && line[o - 1] == '\r')
				o--;
			line[o] = '\0';
			if (o == 0)
				continue; /* skip empty lines */
			return 0;
		}
		if (o + 1 < len)
			line[o++] = c;
	}
}
