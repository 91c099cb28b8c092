/*
 * handoff-vm — a real VM handoff end to end. `base create` boots a guest on a fresh mount, lets it
 * settle, pauses it and records disk + memory + device state as a base both cloudlets hold;
 * `start` resumes that base snapshot on a handoff-mount over it; `migrate` (source) and `receive`
 * (destination) hand the running VM over: live export rounds into the destination's
 * handoff-mirror, pause, final round, device state over a small control protocol, resume there.
 * This file joins vm/ (QEMU over QMP), pipeline/ (export) and overlay/ (base identity); the mounts
 * are the handoff-mount and handoff-mirror programs. See handoff-vm(1) for the control protocol.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include "common/common.h"
#include "common/ctl.h"
#include "overlay/overlay.h"
#include "pipeline/pipeline.h"
#include "vm/vm.h"

/* exit statuses, see handoff-vm(1) */
enum {
	EX_OK = 0,
	EX_FAIL = 1,        /* any other failure (nothing was paused) */
	EX_USAGE = 2,
	EX_BASE = 3,        /* base identity mismatch: refused before anything was paused */
	EX_RESUMED = 4,     /* handoff failed; the source VM was resumed and runs */
	EX_LOST = 5,        /* handoff failed and the source VM could not be resumed */
	EX_VERIFY = 6,      /* receive: stream or device state failed verification */
};

#define PROTO_VERSION 1
#define LINE_MAX_ 1024
#define MAX_ROUNDS 64

static const uint8_t *g_key;        /* pre-shared key (--key), NULL: unauthenticated */
static size_t g_key_len;

/* ---- errors of vm/ at the tool edge ------------------------------------------------------------ */

static int from_vm(int rc)
{
	switch (rc) {
	case VM_OK: return HO_OK;
	case VM_EINVAL: return HO_EINVAL;
	case VM_ENOMEM: return HO_ENOMEM;
	case VM_ENOENT: return HO_ENOENT;
	case VM_ECONN: return HO_ECONN;
	case VM_ETIMEDOUT: return HO_ETIMEDOUT;
	case VM_EPROTO: case VM_EQMP: return HO_EPROTO;
	case VM_ESPAWN: case VM_EEXITED: case VM_EMIGRATE: return HO_ECHILD;
	case VM_ESTATE: return HO_ESTATE;
	case VM_ELIMIT: return HO_ELIMIT;
	default: return rc < 0 ? HO_EIO : rc;
	}
}

/* log what failed with vm/'s own words, return the ho_err */
static int vm_fail(const char *what, int rc)
{
	ho_err("%s: %s", what, vm_strerror(rc));
	return from_vm(rc);
}

/* snprintf that truncates quietly (paths are checked by the system calls that use them) */
static int fmt(char *buf, size_t len, const char *f, ...) __attribute__((format(printf, 3, 4)));
static int fmt(char *buf, size_t len, const char *f, ...)
{
	va_list ap;
	va_start(ap, f);
	int n = vsnprintf(buf, len, f, ap);
	va_end(ap);
	return n;
}

static double secs(uint64_t ns) { return (double)ns / 1e9; }

/* ---- KEY=VALUE files (base.env, vm.env, guest.env) --------------------------------------------- */

struct env {
	int n;
	char *k[64], *v[64];
};

static void env_free(struct env *e)
{
	for (int i = 0; i < e->n; i++) {
		free(e->k[i]);
		free(e->v[i]);
	}
	e->n = 0;
}

/* shell-like value: 'single', "double" (\" \\ \$ escapes), bare words; stops at an unquoted # */
static char *parse_value(const char *s)
{
	size_t n = strlen(s);
	char *out = malloc(n + 1), *o = out;
	if (!out)
		return NULL;
	while (*s && *s != '\n') {
		if (*s == '\'') {
			for (s++; *s && *s != '\''; s++)
				*o++ = *s;
			if (*s)
				s++;
		} else if (*s == '"') {
			for (s++; *s && *s != '"'; s++) {
				if (*s == '\\' && s[1] && strchr("\"\\$`", s[1]))
					s++;
				*o++ = *s;
			}
			if (*s)
				s++;
		} else if (*s == '\\' && s[1]) {
			*o++ = s[1];
			s += 2;
		} else if (*s == '#' && (o == out || o[-1] == ' ')) {
			break;
		} else {
			*o++ = *s++;
		}
	}
	while (o > out && (o[-1] == ' ' || o[-1] == '\t'))
		o--;
	*o = 0;
	return out;
}

static int env_load(const char *path, struct env *e)
{
	char *text = NULL, *save = NULL;
	size_t len;
	memset(e, 0, sizeof(*e));
	int rc = ho_read_file(path, &text, &len, 1 << 20);
	if (rc) {
		ho_err("cannot read '%s': %s", path, ho_strerror(rc));
		return rc;
	}
	for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		while (*line == ' ' || *line == '\t')
			line++;
		char *eq = strchr(line, '=');
		if (*line == '#' || !eq || e->n == (int)HO_ARRAY_SIZE(e->k))
			continue;
		*eq = 0;
		e->k[e->n] = strdup(line);
		e->v[e->n] = parse_value(eq + 1);
		if (!e->k[e->n] || !e->v[e->n]) {
			free(text);
			env_free(e);
			return HO_ENOMEM;
		}
		e->n++;
	}
	free(text);
	return 0;
}

static const char *env_get(const struct env *e, const char *k)
{
	for (int i = e->n - 1; i >= 0; i--)
		if (!strcmp(e->k[i], k))
			return e->v[i];
	return NULL;
}

static const char *env_need(const struct env *e, const char *k, const char *file)
{
	const char *v = env_get(e, k);
	if (!v || !*v)
		ho_err("no %s in '%s'", k, file);
	return v && *v ? v : NULL;
}

/* append KEY='VALUE' (single-quoted for the shell) to a growing buffer */
static void env_put(char **buf, size_t *len, const char *k, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
static void env_put(char **buf, size_t *len, const char *k, const char *fmt, ...)
{
	char *v = NULL;
	va_list ap;
	va_start(ap, fmt);
	if (vasprintf(&v, fmt, ap) < 0)
		v = NULL;
	va_end(ap);
	if (!v)
		return;
	size_t need = strlen(k) + 4 * strlen(v) + 8;
	char *nb = realloc(*buf, *len + need);
	if (!nb) {
		free(v);
		return;
	}
	*buf = nb;
	char *o = nb + *len;
	o += sprintf(o, "%s='", k);
	for (const char *s = v; *s; s++) {
		if (*s == '\'')
			o += sprintf(o, "'\\''");
		else
			*o++ = *s;
	}
	o += sprintf(o, "'\n");
	*len = (size_t)(o - nb);
	free(v);
}

/* ---- processes: the sibling tools, fusermount3 ------------------------------------------------ */

/* path of a handoff tool: beside this executable if it is there, else found on PATH */
static const char *tool_path(const char *name)
{
	static char buf[PATH_MAX];
	char self[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	if (n > 0) {
		self[n] = 0;
		char *slash = strrchr(self, '/');
		if (slash) {
			*slash = 0;
			fmt(buf, sizeof(buf), "%s/%s", self, name);
			if (access(buf, X_OK) == 0)
				return buf;
		}
	}
	return name;
}

/* run argv, wait; 0 if it exited 0, else HO_ECHILD (its exit status logged unless quiet, which
 * also silences its standard error) */
static int run_prog_q(char *const argv[], bool quiet);
static int run_prog(char *const argv[])
{
	return run_prog_q(argv, false);
}

static int run_prog_q(char *const argv[], bool quiet)
{
	pid_t pid = fork();
	if (pid < 0) {
		ho_err("cannot fork: %s", strerror(errno));
		return HO_EIO;
	}
	if (pid == 0) {
		if (quiet) {
			int nul = open("/dev/null", O_WRONLY);
			if (nul >= 0)
				dup2(nul, 2);
		}
		execvp(argv[0], argv);
		fprintf(stderr, "handoff-vm: cannot run '%s': %s\n", argv[0], strerror(errno));
		_exit(127);
	}
	int st;
	while (waitpid(pid, &st, 0) < 0)
		if (errno != EINTR)
			return HO_EIO;
	if (WIFEXITED(st) && WEXITSTATUS(st) == 0)
		return 0;
	if (!quiet)
		ho_err("'%s' failed (%s %d)", argv[0], WIFEXITED(st) ? "exit" : "signal",
	       WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st));
	return HO_ECHILD;
}

static bool is_mountpoint(const char *path)
{
	struct stat a, b;
	char parent[PATH_MAX];
	fmt(parent, sizeof(parent), "%s/..", path);
	if (stat(path, &a) != 0 || stat(parent, &b) != 0)
		return false;
	return a.st_dev != b.st_dev;
}

static int mount_base(const char *base, const char *ovl, const char *mnt, const char *mem_size)
{
	char disk[PATH_MAX], mem[PATH_MAX];
	fmt(disk, sizeof(disk), "%s/disk.img", base);
	fmt(mem, sizeof(mem), "%s/memory.img", base);
	if (ho_mkdir_p(mnt, 0755))
		return HO_EIO;
	char *argv[] = { (char *)tool_path("handoff-mount"), "-q", "--disk", mem_size ? (char *)base : disk,
			 mem_size ? "--memory-size" : "--memory", mem_size ? (char *)mem_size : mem,
			 (char *)ovl, (char *)mnt, NULL };
	int rc = run_prog(argv);
	if (rc)
		ho_err("cannot mount '%s' over the base in '%s'", mnt, base);
	return rc;
}

/* Unmount and wait until the daemon let go of the overlay. The daemon is asked by SIGTERM (it
 * flushes and unmounts itself), which also works when the mount lives in another mount namespace
 * (`ip netns exec` makes one); fusermount3 -u is the fallback, retried while a QEMU that just quit
 * still holds the files. */
static int unmount(const char *mnt, const char *ovl)
{
	char *argv[] = { "fusermount3", "-u", (char *)mnt, NULL };
	int rc = 0, pid = 0;
	char mp[PATH_MAX];
	if (ovl && overlay_lock_holder(ovl, &pid, mp, sizeof(mp)) == 0 && pid > 0 && kill(pid, SIGTERM) != 0)
		pid = 0;
	bool asked = pid > 0;
	for (int i = 0; i < 300; i++) {
		bool mounted = is_mountpoint(mnt);
		bool held = ovl && overlay_lock_holder(ovl, &pid, mp, sizeof(mp)) == 0;
		if (held && !mounted && asked && i >= 60) {
			/* gone from our view, but the daemon still serves: a mount namespace made while
			 * it was mounted (ip netns exec) holds a copy, and the daemon ends with it */
			ho_notice("the mount daemon of '%s' (pid %d) waits for another mount namespace to "
				  "let go of its mount", mnt, pid);
			return 0;
		}
		if (!held && (!mounted || asked)) {
			/* the daemon is gone; a copy of its mount in our namespace is dead: drop it */
			if (mounted) {
				char *lazy[] = { "fusermount3", "-uz", (char *)mnt, NULL };
				run_prog_q(lazy, true);
			}
			return 0;
		}
		if (mounted && asked && i == 10) {
			/* still there after the daemon was asked: a copy of the mount in our own mount
			 * namespace keeps the FUSE connection alive; let go of it */
			char *lazy[] = { "fusermount3", "-uz", (char *)mnt, NULL };
			run_prog_q(lazy, true);
		} else if (mounted && (!asked || i >= 100)) {
			rc = run_prog_q(argv, i < 299);
		}
		usleep(50000);
	}
	ho_warn("'%s' is still mounted", mnt);
	return rc ? rc : HO_EBUSY;
}

/* ---- files ---------------------------------------------------------------------------------- */

/* copy src to dst leaving holes for all-zero MiB blocks; SHA-256 of the content into digest */
static int copy_sparse(const char *src, const char *dst, uint8_t digest[HO_SHA256_LEN], uint64_t *size)
{
	enum { BLK = 1 << 20 };
	int in = open(src, O_RDONLY | O_CLOEXEC), out = -1, rc = 0;
	uint8_t *buf = malloc(BLK);
	struct ho_sha256 *h = ho_sha256_new();
	uint64_t off = 0;
	if (in < 0 || !buf || !h) {
		ho_err("cannot read '%s': %s", src, in < 0 ? strerror(errno) : "out of memory");
		rc = in < 0 ? HO_EIO : HO_ENOMEM;
		goto out;
	}
	out = open(dst, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (out < 0) {
		ho_err("cannot create '%s': %s", dst, strerror(errno));
		rc = HO_EIO;
		goto out;
	}
	for (;;) {
		ssize_t n = ho_pread_full(in, buf, BLK, off);
		if (n < 0) {
			rc = (int)n;
			goto out;
		}
		if (n == 0)
			break;
		ho_sha256_update(h, buf, (size_t)n);
		if (!ho_is_zero(buf, (size_t)n) && (rc = ho_pwrite_full(out, buf, (size_t)n, off)))
			goto out;
		off += (uint64_t)n;
		if (n < BLK)
			break;
	}
	if (ftruncate(out, (off_t)off) != 0 || fsync(out) != 0) {
		ho_err("cannot write '%s': %s", dst, strerror(errno));
		rc = HO_EIO;
		goto out;
	}
	ho_sha256_final(h, digest);
	*size = off;
out:
	if (in >= 0)
		close(in);
	if (out >= 0)
		close(out);
	free(buf);
	ho_sha256_free(h);
	return rc;
}

static int copy_plain(const char *src, const char *dst)
{
	uint8_t d[HO_SHA256_LEN];
	uint64_t sz;
	return copy_sparse(src, dst, d, &sz);
}

/* ---- bases ---------------------------------------------------------------------------------- */

struct base {
	char dir[PATH_MAX];
	struct env env;
	char kernel[PATH_MAX], initrd[PATH_MAX], devstate[PATH_MAX];
	const char *cmdline, *machine;
	unsigned ram_mb, cpus;
	uint8_t digest[OVERLAY_NIMAGES][HO_SHA256_LEN];
	uint64_t size[OVERLAY_NIMAGES];
};

static int base_load(const char *dir, struct base *b)
{
	char path[PATH_MAX];
	memset(b, 0, sizeof(*b));
	fmt(b->dir, sizeof(b->dir), "%s", dir);
	fmt(path, sizeof(path), "%s/base.env", dir);
	int rc = env_load(path, &b->env);
	if (rc)
		return rc;
	const char *k = env_need(&b->env, "BASE_KERNEL", path), *ram = env_need(&b->env, "BASE_RAM_MB", path);
	const char *ds[2] = { env_need(&b->env, "BASE_DISK_SHA256", path), env_need(&b->env, "BASE_MEMORY_SHA256", path) };
	const char *sz[2] = { env_need(&b->env, "BASE_DISK_SIZE", path), env_need(&b->env, "BASE_MEMORY_SIZE", path) };
	b->cmdline = env_get(&b->env, "BASE_CMDLINE");
	b->machine = env_get(&b->env, "BASE_MACHINE");
	const char *initrd = env_get(&b->env, "BASE_INITRD"), *cpus = env_get(&b->env, "BASE_CPUS");
	if (!k || !ram || !ds[0] || !ds[1] || !sz[0] || !sz[1])
		return HO_EFORMAT;
	for (int i = 0; i < 2; i++) {
		if (ho_unhex(ds[i], b->digest[i], HO_SHA256_LEN) || strlen(ds[i]) != 2 * HO_SHA256_LEN) {
			ho_err("malformed digest in '%s'", path);
			return HO_EFORMAT;
		}
		b->size[i] = strtoull(sz[i], NULL, 10);
	}
	b->ram_mb = (unsigned)atoi(ram);
	b->cpus = cpus ? (unsigned)atoi(cpus) : 1;
	fmt(b->kernel, sizeof(b->kernel), "%s/%s", dir, k);
	if (initrd && *initrd)
		fmt(b->initrd, sizeof(b->initrd), "%s/%s", dir, initrd);
	fmt(b->devstate, sizeof(b->devstate), "%s/devstate", dir);
	return 0;
}

/* the identity of the bases an overlay was created over (SHA-256 of their content) */
static int overlay_identity_of(const char *ovl, uint8_t digest[OVERLAY_NIMAGES][HO_SHA256_LEN],
			       uint64_t size[OVERLAY_NIMAGES])
{
	struct overlay *ov;
	int rc = overlay_open(ovl, NULL, 0, OVERLAY_READONLY, &ov);
	if (rc) {
		ho_err("cannot open overlay '%s': %s", ovl, ho_strerror(rc));
		return rc;
	}
	for (int i = 0; i < OVERLAY_NIMAGES; i++) {
		const struct overlay_identity *id = overlay_base_identity(ov, i);
		memcpy(digest[i], id->digest, HO_SHA256_LEN);
		size[i] = id->size;
	}
	overlay_close(ov);
	return 0;
}

/* the overlay must be over exactly the base recorded in base.env */
static int check_overlay_base(const char *ovl, const struct base *b)
{
	uint8_t d[OVERLAY_NIMAGES][HO_SHA256_LEN];
	uint64_t s[OVERLAY_NIMAGES];
	int rc = overlay_identity_of(ovl, d, s);
	if (rc)
		return rc;
	for (int i = 0; i < OVERLAY_NIMAGES; i++) {
		if (s[i] != b->size[i] || memcmp(d[i], b->digest[i], HO_SHA256_LEN)) {
			ho_err("base %s image of '%s' differs from the one recorded in '%s/base.env'",
			       overlay_image_name(i), ovl, b->dir);
			return HO_EBASE;
		}
	}
	return 0;
}

static void vm_config_for(const struct base *b, const char *mnt, const char *run_dir, const char *accel,
			  struct vm_config *c, char *disk, char *mem, size_t plen)
{
	fmt(disk, plen, "%s/disk", mnt);
	fmt(mem, plen, "%s/memory", mnt);
	memset(c, 0, sizeof(*c));
	c->accel = accel;
	c->machine = b->machine && *b->machine ? b->machine : NULL;
	c->kernel = b->kernel;
	c->initrd = b->initrd[0] ? b->initrd : NULL;
	c->append = b->cmdline;
	c->disk = disk;
	c->mem_path = mem;
	c->mem_mb = b->ram_mb;
	c->cpus = b->cpus;
	c->run_dir = run_dir;
	c->cmd_port = true;
	c->detach = true;
}

/* guest NAME → ${HANDOFF_CACHE:-~/.cache/handoff}/guest-NAME/guest.env; a path is taken as is */
static void guest_env_path(const char *guest, char *out, size_t len)
{
	if (strchr(guest, '/')) {
		fmt(out, len, "%s", guest);
		return;
	}
	const char *cache = getenv("HANDOFF_CACHE"), *home = getenv("HOME");
	if (cache && *cache)
		fmt(out, len, "%s/guest-%s/guest.env", cache, guest);
	else
		fmt(out, len, "%s/.cache/handoff/guest-%s/guest.env", home ? home : "/root", guest);
}

static int cmd_base_create(int argc, char **argv)
{
	enum { OPT_GUEST = 256, OPT_RAM, OPT_APPEND, OPT_ACCEL, OPT_SETTLE, OPT_TIMEOUT, OPT_FORCE };
	static const struct option opts[] = {
		{ "guest", required_argument, NULL, OPT_GUEST }, { "ram", required_argument, NULL, OPT_RAM },
		{ "append", required_argument, NULL, OPT_APPEND }, { "accel", required_argument, NULL, OPT_ACCEL },
		{ "settle", required_argument, NULL, OPT_SETTLE }, { "timeout", required_argument, NULL, OPT_TIMEOUT },
		{ "force", no_argument, NULL, OPT_FORCE }, { 0 } };
	const char *guest = NULL, *append = NULL, *accel = NULL;
	uint64_t ram = 0;
	double settle = 3;
	int timeout_s = 600, c;
	bool force = false;
	optind = 1;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case OPT_GUEST: guest = optarg; break;
		case OPT_RAM:
			if (ho_parse_size(optarg, &ram) || ram < (16u << 20) || ram % (1u << 20)) {
				ho_err("invalid RAM size '%s' (at least 16M, whole MiB)", optarg);
				return EX_USAGE;
			}
			break;
		case OPT_APPEND: append = optarg; break;
		case OPT_ACCEL: accel = optarg; break;
		case OPT_SETTLE: settle = atof(optarg); break;
		case OPT_TIMEOUT: timeout_s = atoi(optarg); break;
		case OPT_FORCE: force = true; break;
		default: return EX_USAGE;
		}
	}
	if (!guest || argc - optind != 1) {
		ho_err("usage: handoff-vm base create --guest tiny|realistic|GUEST_ENV [--ram SIZE] OUT_DIR");
		return EX_USAGE;
	}
	const char *out = argv[optind];
	char envpath[PATH_MAX], p[PATH_MAX], work[PATH_MAX], ovl[PATH_MAX], mnt[PATH_MAX], run[PATH_MAX];
	char disk[PATH_MAX], mem[PATH_MAX], cmdline[4096], ramarg[32];
	struct env g;
	struct vm *vm = NULL;
	bool mounted = false;
	int rc;
	guest_env_path(guest, envpath, sizeof(envpath));
	if (access(envpath, R_OK) != 0) {
		ho_err("guest '%s' is not built: no '%s' (run guest/build-%s.sh)", guest, envpath,
		       strchr(guest, '/') ? "tiny" : guest);
		return EX_FAIL;
	}
	if ((rc = env_load(envpath, &g)))
		return EX_FAIL;
	const char *gk = env_need(&g, "GUEST_KERNEL", envpath), *gd = env_need(&g, "GUEST_DISK", envpath);
	const char *gi = env_get(&g, "GUEST_INITRD"), *gc = env_get(&g, "GUEST_CMDLINE");
	const char *gram = env_get(&g, "GUEST_RAM_MB"), *gkind = env_get(&g, "GUEST_KIND");
	if (!gk || !gd) {
		env_free(&g);
		return EX_FAIL;
	}
	unsigned ram_mb = ram ? (unsigned)(ram >> 20) : (gram ? (unsigned)atoi(gram) : 256);
	fmt(cmdline, sizeof(cmdline), "%s%s%s", gc ? gc : "", append ? " " : "", append ? append : "");
	fmt(p, sizeof(p), "%s/base.env", out);
	if (!force && access(p, F_OK) == 0) {
		ho_err("'%s' already holds a base (--force replaces it)", out);
		env_free(&g);
		return EX_FAIL;
	}
	fmt(work, sizeof(work), "%s/.create", out);
	fmt(ovl, sizeof(ovl), "%s/ovl", work);
	fmt(mnt, sizeof(mnt), "%s/mnt", work);
	fmt(run, sizeof(run), "%s/run", work);
	{
		char *rm[] = { "rm", "-rf", work, NULL };
		if (is_mountpoint(mnt))
			unmount(mnt, ovl);
		run_prog(rm);
	}
	unlink(p);
	if ((rc = ho_mkdir_p(run, 0755)) || (rc = ho_mkdir_p(mnt, 0755)))
		goto out;
	uint64_t t0 = ho_mono_ns();
	ho_notice("copying the guest's kernel%s into '%s'", gi ? " and initrd" : "", out);
	fmt(p, sizeof(p), "%s/vmlinuz", out);
	if ((rc = copy_plain(gk, p)))
		goto out;
	if (gi && *gi) {
		fmt(p, sizeof(p), "%s/initrd", out);
		if ((rc = copy_plain(gi, p)))
			goto out;
	}
	/* the base.env fields the VM config needs, then boot */
	char *envbuf = NULL;
	size_t envlen = 0;
	env_put(&envbuf, &envlen, "BASE_GUEST", "%s", gkind ? gkind : guest);
	env_put(&envbuf, &envlen, "BASE_KERNEL", "vmlinuz");
	env_put(&envbuf, &envlen, "BASE_INITRD", "%s", gi && *gi ? "initrd" : "");
	env_put(&envbuf, &envlen, "BASE_CMDLINE", "%s", cmdline);
	env_put(&envbuf, &envlen, "BASE_RAM_MB", "%u", ram_mb);
	env_put(&envbuf, &envlen, "BASE_CPUS", "1");
	env_put(&envbuf, &envlen, "BASE_MACHINE", "pc");
	fmt(ramarg, sizeof(ramarg), "%uM", ram_mb);
	ho_notice("booting guest '%s' (%u MiB RAM) on a fresh mount over '%s'", gkind ? gkind : guest, ram_mb, gd);
	if ((rc = mount_base(gd, ovl, mnt, ramarg)))
		goto out_env;
	mounted = true;
	struct base b;
	memset(&b, 0, sizeof(b));
	fmt(b.kernel, sizeof(b.kernel), "%s/vmlinuz", out);
	if (gi && *gi)
		fmt(b.initrd, sizeof(b.initrd), "%s/initrd", out);
	b.cmdline = cmdline;
	b.ram_mb = ram_mb;
	b.cpus = 1;
	struct vm_config cfg;
	vm_config_for(&b, mnt, run, accel, &cfg, disk, mem, sizeof(disk));
	cfg.detach = false;
	if ((rc = vm_start(&cfg, &vm))) {
		rc = vm_fail("cannot start qemu", rc);
		goto out_env;
	}
	vm_set_timeout(vm, 120000);
	char line[512];
	if ((rc = vm_wait_serial(vm, "HANDOFF-READY", timeout_s * 1000, line, sizeof(line)))) {
		rc = vm_fail("the guest did not reach HANDOFF-READY", rc);
		goto out_env;
	}
	ho_notice("guest ready after %.1f s: %s", secs(ho_mono_ns() - t0), line);
	if (settle > 0)
		usleep((useconds_t)(settle * 1e6));
	if ((rc = vm_pause(vm))) {
		rc = vm_fail("cannot pause the guest", rc);
		goto out_env;
	}
	fmt(p, sizeof(p), "%s/devstate", out);
	long long dsize = vm_save_device_state(vm, p);
	if (dsize < 0) {
		rc = vm_fail("cannot save the device state", (int)dsize);
		goto out_env;
	}
	vm_quit(vm);
	vm_close(vm);
	vm = NULL;
	fmt(p, sizeof(p), "%s/serial.log", run);
	char q[PATH_MAX];
	fmt(q, sizeof(q), "%s/console.log", out);
	copy_plain(p, q);
	/* record the images */
	static const char *const names[2] = { "DISK", "MEMORY" };
	static const char *const files[2] = { "disk.img", "memory.img" };
	static const char *const srcs[2] = { "disk", "memory" };
	for (int i = 0; i < 2; i++) {
		uint8_t d[HO_SHA256_LEN];
		uint64_t size;
		char hex[2 * HO_SHA256_LEN + 1], key[32];
		fmt(p, sizeof(p), "%s/%s", mnt, srcs[i]);
		fmt(q, sizeof(q), "%s/%s", out, files[i]);
		if ((rc = copy_sparse(p, q, d, &size)))
			goto out_env;
		ho_hex(d, HO_SHA256_LEN, hex);
		fmt(key, sizeof(key), "BASE_%s_SIZE", names[i]);
		env_put(&envbuf, &envlen, key, "%" PRIu64, size);
		fmt(key, sizeof(key), "BASE_%s_SHA256", names[i]);
		env_put(&envbuf, &envlen, key, "%s", hex);
	}
	{
		uint8_t d[HO_SHA256_LEN];
		char hex[2 * HO_SHA256_LEN + 1];
		fmt(p, sizeof(p), "%s/devstate", out);
		if ((rc = ho_sha256_file(p, 0, d)))
			goto out_env;
		ho_hex(d, HO_SHA256_LEN, hex);
		env_put(&envbuf, &envlen, "BASE_DEVSTATE_SIZE", "%lld", dsize);
		env_put(&envbuf, &envlen, "BASE_DEVSTATE_SHA256", "%s", hex);
	}
	unmount(mnt, ovl);
	mounted = false;
	fmt(p, sizeof(p), "%s/base.env", out);
	if (!envbuf) {
		rc = HO_ENOMEM;
		goto out_env;
	}
	if ((rc = ho_write_file_atomic(p, envbuf, envlen)))
		goto out_env;
	ho_notice("base recorded in '%s' in %.1f s (device state %lld bytes)", out, secs(ho_mono_ns() - t0), dsize);
out_env:
	free(envbuf);
out:
	if (vm) {
		vm_kill(vm);
		vm_close(vm);
	}
	if (mounted)
		unmount(mnt, ovl);
	if (!rc || !getenv("HANDOFF_VM_KEEP")) {
		char *rm[] = { "rm", "-rf", work, NULL };
		run_prog(rm);
	}
	env_free(&g);
	return rc ? EX_FAIL : EX_OK;
}

/* ---- run directories ---------------------------------------------------------------------------- */

static void default_run_dir(const char *ovl, char *out, size_t len)
{
	size_t n = strlen(ovl);
	while (n > 1 && ovl[n - 1] == '/')
		n--;
	fmt(out, len, "%.*s.run", (int)n, ovl);
}

static int write_vm_env(const char *run, const char *role, const char *base, const char *ovl,
			const char *mnt, pid_t pid)
{
	char *buf = NULL, path[PATH_MAX], abs[3][PATH_MAX];
	size_t len = 0;
	const char *in[3] = { base, ovl, mnt };
	for (int i = 0; i < 3; i++)
		if (!realpath(in[i], abs[i]))
			fmt(abs[i], PATH_MAX, "%s", in[i]);
	env_put(&buf, &len, "VM_ROLE", "%s", role);
	env_put(&buf, &len, "VM_BASE", "%s", abs[0]);
	env_put(&buf, &len, "VM_OVERLAY", "%s", abs[1]);
	env_put(&buf, &len, "VM_MOUNT", "%s", abs[2]);
	env_put(&buf, &len, "VM_QEMU_PID", "%d", (int)pid);
	if (!buf)
		return HO_ENOMEM;
	fmt(path, sizeof(path), "%s/vm.env", run);
	int rc = ho_write_file_atomic(path, buf, len);
	free(buf);
	return rc;
}

/* What must hold before a VM resumes here, checked while QEMU starts and loads its device state
 * (see resume_on_mount); 0 to go on, or the error (the check told the source itself). */
struct resume_gate { int (*check)(struct resume_gate *g); bool told; };

/* start QEMU -incoming on MNT, load the device state, pass the gate (if any), cont; *out keeps
 * the handle */
static int resume_on_mount(const struct base *b, const char *mnt, const char *run, const char *accel,
			   const char *devstate, struct vm **out, uint64_t *t_running, struct resume_gate *gate)
{
	struct vm_config cfg;
	char disk[PATH_MAX], mem[PATH_MAX];
	struct vm *vm = NULL;
	int rc;
	uint64_t t0 = ho_mono_ns(), t1, t2, t3;
	vm_config_for(b, mnt, run, accel, &cfg, disk, mem, sizeof(disk));
	if ((rc = vm_start_incoming(&cfg, &vm)))
		return vm_fail("cannot start qemu", rc);
	t1 = ho_mono_ns();
	vm_set_timeout(vm, 60000);
	if ((rc = vm_load_device_state(vm, devstate))) {
		rc = vm_fail("cannot load the device state", rc);
		goto fail;
	}
	t2 = ho_mono_ns();
	if (gate && (rc = gate->check(gate)))
		goto fail;
	t3 = ho_mono_ns();
	bool running = false;
	char st[64];
	if ((rc = vm_query_status(vm, st, sizeof(st), &running))) {
		rc = vm_fail("cannot query the VM", rc);
		goto fail;
	}
	if (!running && (rc = vm_cont(vm))) {
		rc = vm_fail("cannot resume the VM", rc);
		goto fail;
	}
	if ((rc = vm_query_status(vm, st, sizeof(st), &running)) || !running) {
		ho_err("the VM does not run after loading its state (status '%s')", rc ? "?" : st);
		rc = HO_ESTATE;
		goto fail;
	}
	if (t_running)
		*t_running = ho_now_ns();
	ho_notice("resume: qemu started in %.2f s, device state loaded in %.2f s, %s%.2f s, running after %.2f s",
		secs(t1 - t0), secs(t2 - t1), gate ? "images verified after " : "no check: ", secs(t3 - t2),
		secs(ho_mono_ns() - t3));
	*out = vm;
	return 0;
fail:
	vm_kill(vm);
	vm_close(vm);
	return rc;
}

static int cmd_start(int argc, char **argv)
{
	enum { OPT_BASE = 256, OPT_OVL, OPT_MNT, OPT_ACCEL, OPT_RUN };
	static const struct option opts[] = {
		{ "base", required_argument, NULL, OPT_BASE }, { "overlay", required_argument, NULL, OPT_OVL },
		{ "mount", required_argument, NULL, OPT_MNT }, { "accel", required_argument, NULL, OPT_ACCEL },
		{ "run-dir", required_argument, NULL, OPT_RUN }, { 0 } };
	const char *base = NULL, *ovl = NULL, *mnt = NULL, *accel = NULL, *run = NULL;
	char rundef[PATH_MAX];
	int c, rc;
	optind = 1;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case OPT_BASE: base = optarg; break;
		case OPT_OVL: ovl = optarg; break;
		case OPT_MNT: mnt = optarg; break;
		case OPT_ACCEL: accel = optarg; break;
		case OPT_RUN: run = optarg; break;
		default: return EX_USAGE;
		}
	}
	if (!base || !ovl || !mnt || optind != argc) {
		ho_err("usage: handoff-vm start --base BASE_DIR --overlay OVL --mount MNT [--run-dir DIR]");
		return EX_USAGE;
	}
	if (!run) {
		default_run_dir(ovl, rundef, sizeof(rundef));
		run = rundef;
	}
	struct base b;
	if (base_load(base, &b))
		return EX_FAIL;
	if ((rc = ho_mkdir_p(run, 0755))) {
		env_free(&b.env);
		return EX_FAIL;
	}
	if ((rc = mount_base(base, ovl, mnt, NULL))) {
		env_free(&b.env);
		return EX_FAIL;
	}
	if ((rc = check_overlay_base(ovl, &b)))
		goto fail;
	struct vm *vm;
	uint64_t t0 = ho_mono_ns();
	if ((rc = resume_on_mount(&b, mnt, run, accel, b.devstate, &vm, NULL, NULL)))
		goto fail;
	if ((rc = write_vm_env(run, "source", base, ovl, mnt, vm_pid(vm)))) {
		vm_kill(vm);
		vm_close(vm);
		goto fail;
	}
	ho_notice("VM resumed from base '%s' in %.1f s: qemu pid %d, run dir '%s', console '%s'", base,
		  secs(ho_mono_ns() - t0), (int)vm_pid(vm), run, vm_serial_log(vm));
	vm_close(vm);
	env_free(&b.env);
	return EX_OK;
fail:
	unmount(mnt, ovl);
	env_free(&b.env);
	return rc == HO_EBASE ? EX_BASE : EX_FAIL;
}

static int cmd_stop(int argc, char **argv)
{
	static const struct option opts[] = { { "run-dir", required_argument, NULL, 'r' }, { 0 } };
	const char *run = NULL;
	int c;
	optind = 1;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		if (c != 'r')
			return EX_USAGE;
		run = optarg;
	}
	if (!run || optind != argc) {
		ho_err("usage: handoff-vm stop --run-dir DIR");
		return EX_USAGE;
	}
	char path[PATH_MAX];
	struct env e;
	fmt(path, sizeof(path), "%s/vm.env", run);
	if (env_load(path, &e))
		return EX_FAIL;
	struct vm *vm;
	int rc = vm_attach(run, NULL, 5000, &vm);
	if (!rc) {
		vm_quit(vm);
		vm_close(vm);
	}
	const char *mnt = env_get(&e, "VM_MOUNT"), *ovl = env_get(&e, "VM_OVERLAY");
	int urc = mnt ? unmount(mnt, ovl) : 0;
	env_free(&e);
	return urc ? EX_FAIL : EX_OK;
}

/* ---- the control connection --------------------------------------------------------------------- */

struct conn {
	int fd;
	size_t len;               /* buffered bytes in buf */
	char buf[65536];
	uint8_t peer_nonce[16];   /* what our MACs cover, so the peer knows they are fresh */
	uint8_t my_nonce[16];
};

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
static int conn_line(struct conn *c, char *line, size_t max, int timeout_ms)
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

static int conn_bytes(struct conn *c, void *dst, size_t n, int timeout_ms)
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

static int conn_send(struct conn *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int conn_send(struct conn *c, const char *fmt, ...)
{
	char line[LINE_MAX_];
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
static void line_mac(const uint8_t nonce[16], const char *text, char out[2 * HO_SHA256_LEN + 1])
{
	if (!g_key) {
		strcpy(out, "-");
		return;
	}
	uint8_t m[HO_SHA256_LEN];
	struct ho_hmac *h = ho_hmac_new(g_key, g_key_len);
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

static bool mac_ok(const uint8_t nonce[16], const char *text, const char *mac)
{
	if (!g_key)
		return true;
	char want[2 * HO_SHA256_LEN + 1];
	line_mac(nonce, text, want);
	return strlen(mac) == strlen(want) && ho_mem_equal_ct(want, mac, strlen(want));
}

/* send "TEXT mac=HEX" (MAC over the peer's nonce and TEXT) */
static int conn_send_signed(struct conn *c, const char *text)
{
	char mac[2 * HO_SHA256_LEN + 1];
	line_mac(c->peer_nonce, text, mac);
	return conn_send(c, "%s mac=%s", text, mac);
}

/* split "TEXT mac=HEX" and check it against our nonce; line is cut at " mac=" */
static int check_signed(struct conn *c, char *line)
{
	char *m = strstr(line, " mac=");
	if (!m)
		return HO_EPROTO;
	*m = 0;
	if (!mac_ok(c->my_nonce, line, m + 5)) {
		ho_err("control message not authenticated with our key: '%.40s'", line);
		return HO_EAUTH;
	}
	return 0;
}

static int split_hostport(const char *hp, char *host, size_t hlen, char *port, size_t plen)
{
	const char *colon = strrchr(hp, ':');
	if (!colon || colon == hp || !colon[1])
		return HO_EINVAL;
	const char *h = hp;
	size_t n = (size_t)(colon - hp);
	if (*h == '[' && colon[-1] == ']') {
		h++;
		n -= 2;
	}
	if (n >= hlen || strlen(colon + 1) >= plen)
		return HO_EINVAL;
	memcpy(host, h, n);
	host[n] = 0;
	strcpy(port, colon + 1);
	return 0;
}

static int tcp_connect(const char *hostport, int timeout_ms, int *out)
{
	char host[256], port[16];
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM }, *ai = NULL;
	if (split_hostport(hostport, host, sizeof(host), port, sizeof(port))) {
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

static void hex_id(const uint8_t d[OVERLAY_NIMAGES][HO_SHA256_LEN], const uint64_t s[OVERLAY_NIMAGES],
		   char *out, size_t len)
{
	char h0[2 * HO_SHA256_LEN + 1], h1[2 * HO_SHA256_LEN + 1];
	ho_hex(d[0], HO_SHA256_LEN, h0);
	ho_hex(d[1], HO_SHA256_LEN, h1);
	fmt(out, len, "disk=%" PRIu64 ":%s memory=%" PRIu64 ":%s", s[0], h0, s[1], h1);
}

/* ---- test-only fault injection: a proxy that corrupts the stream of the final round ---------- */

struct proxy {
	int listen_fd;
	char target[300];
	volatile int corrupt;        /* flip bytes of connections made while set */
	pthread_t thread;
	int stop_pipe[2];
};

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
		if (tcp_connect(px->target, 5000, &b)) {
			close(a);
			continue;
		}
		proxy_pump(px, a, b, px->corrupt);
		close(a);
		close(b);
	}
}

static int proxy_start(struct proxy *px, const char *target, char *addr, size_t len)
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

static void proxy_stop(struct proxy *px)
{
	if (write(px->stop_pipe[1], "x", 1) != 1)
		return;
	pthread_join(px->thread, NULL);
	close(px->listen_fd);
	close(px->stop_pipe[0]);
	close(px->stop_pipe[1]);
}

/* The digests both sides compare before the destination resumes (--verify), as
 * "memory=HEX[ disk=HEX]": the mount daemon computes them (the "digest" control request, defined
 * in fs/digest.h) from the chunks its overlay holds and sums of the base it read ahead of time
 * ("digest-prepare"), so the cost is the modified chunks, not the whole image through FUSE. They
 * guard against loss anywhere in the chain between two machines that trust each other (the
 * control messages that carry them are authenticated), so a fast non-cryptographic hash is
 * enough. The source writes the page cache back first: the daemon hashes what it holds. */
static int image_digests(const char *ovl, bool all, char *out, size_t len)
{
	char req[32];
	int rc = export_writeback(ovl);
	if (rc)
		return rc;
	fmt(req, sizeof(req), "digest %s", all ? "all" : "memory");
	if ((rc = ho_ctl_call(ovl, req, -1, 600000, out, len)))
		ho_err("cannot hash the images of '%s': %s%s%s", ovl, ho_strerror(rc), out[0] ? ": " : "", out);
	return rc;
}

/* ask the mount daemon of ovl to read the base for the digests now (in the background) */
static void image_digests_prepare(const char *ovl, const char *verify)
{
	char req[32], reply[HO_CTL_LINE];
	if (!strcmp(verify, "none"))
		return;
	fmt(req, sizeof(req), "digest-prepare %s", strcmp(verify, "all") ? "memory" : "all");
	if (ho_ctl_call(ovl, req, -1, 10000, reply, sizeof(reply)))
		ho_warn("the mount of '%s' cannot prepare the image digests; they will take longer", ovl);
}

/* image_digests on a thread, so that the hashing overlaps other work of the downtime (the final
 * round on the source, QEMU's start and device-state load on the destination) */
struct digest_task { const char *ovl; bool all; char out[HO_CTL_LINE]; int rc; pthread_t th; bool started, joined; };

static void *digest_task_main(void *arg)
{
	struct digest_task *t = arg;
	t->rc = image_digests(t->ovl, t->all, t->out, sizeof(t->out));
	return NULL;
}

static void digest_task_start(struct digest_task *t, const char *ovl, bool all)
{
	t->ovl = ovl;
	t->all = all;
	t->rc = 0;
	t->joined = false;
	t->started = pthread_create(&t->th, NULL, digest_task_main, t) == 0;
}

/* the digests, or the error; runs them here if the thread could not start; again: the same */
static int digest_task_join(struct digest_task *t)
{
	if (t->joined)
		return t->rc;
	if (t->started)
		pthread_join(t->th, NULL);
	else
		digest_task_main(t);
	t->joined = true;
	return t->rc;
}

/* ---- migrate (the source) -------------------------------------------------------------------------- */

struct round {
	bool live;
	uint32_t since, until;
	uint64_t chunks[2], input_bytes, wire_bytes, ns, held_ns;
};

struct report {
	struct round r[MAX_ROUNDS];
	int n;
	bool postcopy;                                  /* the last round went after the resume */
	uint64_t pc_chunks, pc_manifest_bytes, t_pc_done, pc_stream_ns, pc_held_ns;
	struct postcopy_stats pc;
	uint64_t t_start, t_pause, t_devstate, t_final_done, t_confirm, t_end;   /* source realtime ns */
	uint64_t t_dst_running;                                                   /* in source time */
	int64_t clock_offset;                                                     /* dst - src */
	uint64_t rtt_ns, devstate_bytes;
	bool paused, handed_off;
};

/* Export (since, until] to the mirror at target; until 0: checkpoint first and send up to it. */
static int export_round(const char *ovl, const char *target, const struct export_opts *base_opts,
			uint32_t since, uint32_t until, bool live, bool postcopy, struct round *r)
{
	struct export_opts o = *base_opts;
	struct export_result res;
	uint64_t t0 = ho_mono_ns();
	int rc;
	o.since = since;
	o.postcopy = postcopy;
	if (!until && (rc = export_checkpoint(ovl, &until))) {
		ho_err("cannot checkpoint '%s': %s", ovl, ho_strerror(rc));
		return rc;
	}
	memset(&res, 0, sizeof(res));
	if ((rc = export_to_tcp(ovl, until, &o, target, &res))) {
		ho_err("cannot send generations %u..%u to the destination: %s", since + 1, until, ho_strerror(rc));
		return rc;
	}
	export_pending_clear(ovl);
	memset(r, 0, sizeof(*r));
	r->live = live;
	r->since = since;
	r->until = until;
	r->chunks[0] = res.chunks[0];
	r->chunks[1] = res.chunks[1];
	r->input_bytes = res.input_bytes;
	r->wire_bytes = res.wire_bytes;
	r->ns = ho_mono_ns() - t0;
	r->held_ns = res.held_ns;
	return 0;
}

static void print_report(const struct report *rep, FILE *f, bool json)
{
	uint64_t wire = 0;
	for (int i = 0; i < rep->n; i++)
		wire += rep->r[i].wire_bytes;
	double total = secs(rep->t_end - rep->t_start);
	double down = rep->handed_off ? (double)((int64_t)rep->t_dst_running - (int64_t)rep->t_pause) / 1e9 : -1;
	double downc = rep->handed_off ? secs(rep->t_confirm - rep->t_pause) : -1;
	if (!json) {
		char b1[32], b2[32];
		for (int i = 0; i < rep->n; i++) {
			const struct round *r = &rep->r[i];
			fprintf(f, "handoff-vm: round %d (%s): generations %u..%u, %" PRIu64 " disk + %" PRIu64
				" memory chunks, %s changed, %s sent in %.2f s\n", i + 1,
				r->live ? "live" : rep->postcopy ? "post-copy" : "paused",
				r->since + 1, r->until, r->chunks[0], r->chunks[1],
				ho_fmt_bytes(r->input_bytes, b1, sizeof(b1)), ho_fmt_bytes(r->wire_bytes, b2, sizeof(b2)),
				secs(r->ns));
		}
		/* post-copy: the chunk server's answers crossed the link too (their own line below) */
		char pcb[64] = "";
		if (rep->postcopy && rep->pc.bytes)
			snprintf(pcb, sizeof(pcb), " + %s of answers on demand", ho_fmt_bytes(rep->pc.bytes, b2, sizeof(b2)));
		if (rep->handed_off)
			fprintf(f, "handoff-vm: handed off in %.2f s: %d rounds, %s on the wire%s + %" PRIu64
				" bytes of device state; downtime %.3f s (pause on the source to running on the "
				"destination; %.3f s until %s; clock offset %.1f ms, rtt %.1f ms)\n",
				total, rep->n, ho_fmt_bytes(wire, b1, sizeof(b1)), pcb, rep->devstate_bytes, down, downc,
				rep->postcopy ? "the destination confirmed the last chunk" : "the source heard of it",
				(double)rep->clock_offset / 1e6, (double)rep->rtt_ns / 1e6);
		if (rep->handed_off && rep->postcopy)
			fprintf(f, "handoff-vm: post-copy: the destination ran %.2f s before the last of %" PRIu64
				" chunks arrived; %" PRIu64 " requests answered with %" PRIu64 " chunks (%s) ahead of the stream,"
				" which gave way to them for %.2f s\n",
				rep->t_pc_done > rep->t_dst_running ? secs(rep->t_pc_done - rep->t_dst_running) : 0.0,
				rep->pc_chunks, rep->pc.requests, rep->pc.chunks, ho_fmt_bytes(rep->pc.bytes, b1, sizeof(b1)),
				secs(rep->pc_held_ns));
		return;
	}
	fprintf(f, "{\n  \"postcopy\": %s,\n  \"postcopy_seconds\": %.3f,\n  \"postcopy_chunks\": %" PRIu64
		",\n  \"postcopy_demand_requests\": %" PRIu64 ",\n  \"postcopy_demand_chunks\": %" PRIu64
		",\n  \"postcopy_demand_bytes\": %" PRIu64 ",\n  \"postcopy_manifest_bytes\": %" PRIu64
		",\n  \"postcopy_stream_held_seconds\": %.3f,\n",
		rep->postcopy ? "true" : "false", rep->postcopy && rep->t_pc_done > rep->t_pause ? secs(rep->t_pc_done - rep->t_pause) : 0.0,
		rep->pc_chunks, rep->pc.requests, rep->pc.chunks, rep->pc.bytes, rep->pc_manifest_bytes,
		secs(rep->pc_held_ns));
	fprintf(f, "  \"handed_off\": %s,\n  \"total_seconds\": %.3f,\n  \"downtime_seconds\": %.3f,\n"
		"  \"downtime_confirmed_seconds\": %.3f,\n  \"rounds_total\": %d,\n  \"wire_bytes_total\": %" PRIu64
		",\n  \"devstate_bytes\": %" PRIu64 ",\n  \"clock_offset_ms\": %.3f,\n  \"rtt_ms\": %.3f,\n"
		"  \"paused_for_final_round_seconds\": %.3f,\n  \"downtime_parts\": { \"save_device_state\": %.3f, "
		"\"final_round\": %.3f, \"device_state_verify_resume\": %.3f },\n  \"rounds\": [\n",
		rep->handed_off ? "true" : "false", total, down, downc, rep->n, wire, rep->devstate_bytes,
		(double)rep->clock_offset / 1e6, (double)rep->rtt_ns / 1e6,
		rep->t_final_done > rep->t_pause ? secs(rep->t_final_done - rep->t_pause) : 0.0,
		rep->t_devstate > rep->t_pause ? secs(rep->t_devstate - rep->t_pause) : 0.0,
		rep->t_final_done > rep->t_devstate && rep->t_devstate ? secs(rep->t_final_done - rep->t_devstate) : 0.0,
		rep->handed_off && rep->t_dst_running > rep->t_final_done ? secs(rep->t_dst_running - rep->t_final_done) : 0.0);
	for (int i = 0; i < rep->n; i++) {
		const struct round *r = &rep->r[i];
		fprintf(f, "    { \"round\": %d, \"live\": %s, \"since\": %u, \"until\": %u, \"disk_chunks\": %" PRIu64
			", \"memory_chunks\": %" PRIu64 ", \"changed_bytes\": %" PRIu64 ", \"wire_bytes\": %" PRIu64
			", \"seconds\": %.3f }%s\n", i + 1, r->live ? "true" : "false", r->since, r->until,
			r->chunks[0], r->chunks[1], r->input_bytes, r->wire_bytes, secs(r->ns), i + 1 < rep->n ? "," : "");
	}
	fprintf(f, "  ]\n}\n");
}

/* Post-copy on the source: while the last round streams, notice at once when the destination's
 * handoff-vm goes away (its control connection hangs up), and cancel the stream then. */
struct hangup_watch { int fd; volatile int cancel, stop; pthread_t th; };

static void *hangup_main(void *arg)
{
	struct hangup_watch *w = arg;
	while (!w->stop) {
		struct pollfd p = { .fd = w->fd, .events = POLLRDHUP };
		if (poll(&p, 1, 100) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR))) {
			ho_err("the destination hung up during the post-copy");
			w->cancel = 1;
			break;
		}
	}
	return NULL;
}

/* Post-copy: after the pause, send the device state and the manifest of what is still to come;
 * once the destination holds back every access to those chunks it resumes the VM, while the rest
 * streams (server_to: the chunk server answers the destination's requests ahead of the stream).
 * The source stays paused until the destination confirms every chunk arrived and verified.
 * Returns EX_OK, or EX_RESUMED when the caller should resume the source (the handoff failed). */
static int migrate_postcopy(struct conn *cn, struct report *rep, const char *ovl, const char *devout,
			    const char *stream_to, const char *server_to, const struct export_opts *eo, uint32_t since)
{
	uint8_t *mf = NULL, d[HO_SHA256_LEN];
	char *ds = NULL, hex[2 * HO_SHA256_LEN + 1], text[LINE_MAX_], line[LINE_MAX_];
	size_t mlen = 0, dlen = 0;
	struct postcopy_server *srv = NULL;
	uint32_t until;
	uint64_t t_run;
	int rc, ex = EX_RESUMED;

	if ((rc = export_checkpoint(ovl, &until))) {
		ho_err("cannot checkpoint '%s': %s", ovl, ho_strerror(rc));
		return EX_RESUMED;
	}
	if ((rc = postcopy_manifest(ovl, since, until, &mf, &mlen, &rep->pc_chunks))) {
		ho_err("cannot list the chunks of generations %u..%u: %s", since + 1, until, ho_strerror(rc));
		return EX_RESUMED;
	}
	rep->pc_manifest_bytes = mlen;
	if ((rc = ho_read_file(devout, &ds, &dlen, 256u << 20)))
		goto out;
	ho_sha256(ds, dlen, d);
	ho_hex(d, HO_SHA256_LEN, hex);
	fmt(text, sizeof(text), "DEVSTATE %zu %s", dlen, hex);
	if (conn_send_signed(cn, text) || ho_write_full(cn->fd, ds, dlen))
		goto out;
	ho_sha256(mf, mlen, d);
	ho_hex(d, HO_SHA256_LEN, hex);
	fmt(text, sizeof(text), "POSTCOPY %u %" PRIu64 " %zu %s", until, rep->pc_chunks, mlen, hex);
	if (conn_send_signed(cn, text) || ho_write_full(cn->fd, mf, mlen))
		goto out;
	if ((rc = conn_line(cn, line, sizeof(line), 60000))) {
		ho_err("no word from the destination after the manifest: %s", ho_strerror(rc));
		goto out;
	}
	if (strncmp(line, "READY ", 6) || check_signed(cn, line) || strcmp(line, "READY")) {
		ho_err("the destination cannot resume before the last round: %.200s", line);
		goto out;
	}
	ho_notice("post-copy: the destination awaits %" PRIu64 " chunks and resumes now", rep->pc_chunks);
	if ((rc = postcopy_server_start(ovl, mf, mlen, g_key, g_key_len, server_to, 30000, &srv))) {
		ho_err("cannot serve chunks to the destination: %s", ho_strerror(rc));
		goto out;
	}
	/* The stream starts only once the destination runs: until then every byte on the link should
	 * be an answer to a page QEMU waits for while it loads the device state. On a thin link with
	 * a deep queue (a WAN router's, or tbf's 400 ms here) answers queued behind the stream cost
	 * seconds of downtime. The stream's start moves by the resume time, a small part of it. */
	if ((rc = conn_line(cn, line, sizeof(line), 600000))) {
		ho_err("no word from the destination after the manifest: %s", ho_strerror(rc));
		goto out;
	}
	if (strncmp(line, "RUNNING ", 8) || check_signed(cn, line) || sscanf(line, "RUNNING %" SCNu64, &t_run) != 1) {
		ho_err("the destination did not resume the VM: %.200s", line);
		goto out;
	}
	rep->t_dst_running = (uint64_t)((int64_t)t_run - rep->clock_offset);
	ho_notice("post-copy: the VM runs on the destination after %.2f s of downtime; streaming the rest",
		  (double)((int64_t)rep->t_dst_running - (int64_t)rep->t_pause) / 1e9);
	struct hangup_watch hw = { .fd = cn->fd };
	struct export_opts peo = *eo;
	bool watching = pthread_create(&hw.th, NULL, hangup_main, &hw) == 0;
	peo.cancel = &hw.cancel;
	peo.skip = postcopy_server_sent;      /* what the chunk server answered need not come twice */
	peo.skip_arg = srv;
	peo.hold = postcopy_server_busy;      /* the VM waits for the server's answers, not the stream */
	peo.hold_arg = srv;
	rc = export_round(ovl, stream_to, &peo, since, until, false, true, &rep->r[rep->n]);
	if (watching) {
		hw.stop = 1;
		pthread_join(hw.th, NULL);
	}
	if (rc)
		goto out;
	rep->pc_stream_ns = rep->r[rep->n].ns;
	rep->pc_held_ns = rep->r[rep->n].held_ns;
	rep->n++;
	rep->t_final_done = rep->t_pc_done = ho_now_ns();
	postcopy_server_stop(srv, &rep->pc);
	srv = NULL;
	if (conn_send_signed(cn, "COMPLETE") || (rc = conn_line(cn, line, sizeof(line), 660000))) {
		ho_err("the destination did not confirm the post-copy: %s", ho_strerror(rc ? rc : HO_ECONN));
		goto out;
	}
	if (strncmp(line, "COMPLETE-OK ", 12) || check_signed(cn, line) || strcmp(line, "COMPLETE-OK")) {
		ho_err("the destination did not complete the post-copy: %.200s", line);
		goto out;
	}
	rep->t_confirm = rep->t_end = ho_now_ns();
	rep->handed_off = true;
	conn_send(cn, "BYE");
	ex = EX_OK;
out:
	if (srv)
		postcopy_server_stop(srv, &rep->pc);
	free(mf);
	free(ds);
	return ex;
}

static int cmd_migrate(int argc, char **argv)
{
	enum { OPT_RUN = 256, OPT_TO, OPT_KEY, OPT_MODE, OPT_MAXR, OPT_TARGET, OPT_REPORT, OPT_KEEP, OPT_FAULT, OPT_RATE, OPT_TIMEOUT,
	       OPT_VERIFY, OPT_POSTCOPY };
	static const struct option opts[] = {
		{ "run-dir", required_argument, NULL, OPT_RUN }, { "to", required_argument, NULL, OPT_TO },
		{ "key", required_argument, NULL, OPT_KEY }, { "mode", required_argument, NULL, OPT_MODE },
		{ "threads", required_argument, NULL, 'T' }, { "max-rounds", required_argument, NULL, OPT_MAXR },
		{ "downtime-target", required_argument, NULL, OPT_TARGET }, { "report", required_argument, NULL, OPT_REPORT },
		{ "keep-source", no_argument, NULL, OPT_KEEP }, { "fault", required_argument, NULL, OPT_FAULT },
		{ "rate-limit", required_argument, NULL, OPT_RATE }, { "timeout", required_argument, NULL, OPT_TIMEOUT },
		{ "verify", required_argument, NULL, OPT_VERIFY }, { "postcopy", required_argument, NULL, OPT_POSTCOPY },
		{ 0 } };
	const char *run = NULL, *to = NULL, *keyfile = NULL, *report_file = NULL, *fault = NULL, *verify = "memory";
	const char *postcopy = "auto";
	struct export_opts eo = { 0 };
	int max_rounds = 8, target_ms = 300, timeout_s = 30, c;
	bool keep = false;
	uint64_t v;
	optind = 1;
	while ((c = getopt_long(argc, argv, "T:", opts, NULL)) != -1) {
		switch (c) {
		case OPT_RUN: run = optarg; break;
		case OPT_TO: to = optarg; break;
		case OPT_KEY: keyfile = optarg; break;
		case OPT_MODE: eo.mode = optarg; break;
		case 'T': eo.threads = (unsigned)atoi(optarg); break;
		case OPT_MAXR: max_rounds = atoi(optarg); break;
		case OPT_TARGET: target_ms = atoi(optarg); break;
		case OPT_REPORT: report_file = optarg; break;
		case OPT_KEEP: keep = true; break;
		case OPT_FAULT: fault = optarg; break;
		case OPT_RATE:
			if (ho_parse_size(optarg, &v) || !v) {
				ho_err("invalid rate '%s'", optarg);
				return EX_USAGE;
			}
			eo.rate_limit = v;
			break;
		case OPT_TIMEOUT: timeout_s = atoi(optarg); break;
		case OPT_VERIFY: verify = optarg; break;
		case OPT_POSTCOPY: postcopy = optarg; break;
		default: return EX_USAGE;
		}
	}
	if (strcmp(postcopy, "never") && strcmp(postcopy, "always") && strcmp(postcopy, "auto")) {
		ho_err("invalid --postcopy '%s' (never, always, auto)", postcopy);
		return EX_USAGE;
	}
	if (strcmp(verify, "none") && strcmp(verify, "memory") && strcmp(verify, "all")) {
		ho_err("invalid --verify '%s' (none, memory, all)", verify);
		return EX_USAGE;
	}
	if (!run || !to || optind != argc || max_rounds < 2 || max_rounds > MAX_ROUNDS || timeout_s < 1) {
		ho_err("usage: handoff-vm migrate --run-dir DIR --to HOST:PORT [--key FILE] [--mode NAME] "
		       "[--max-rounds 2..%d] [--report FILE]", MAX_ROUNDS);
		return EX_USAGE;
	}
	if (fault && strcmp(fault, "corrupt-final") && strcmp(fault, "wrong-digest") && strcmp(fault, "corrupt-postcopy") &&
	    strcmp(fault, "slow-postcopy")) {
		ho_err("unknown fault '%s' (corrupt-final, wrong-digest, corrupt-postcopy, slow-postcopy)", fault);
		return EX_USAGE;
	}
	eo.timeout_ms = timeout_s * 1000;
	if (!eo.mode || !strcmp(eo.mode, "adaptive")) {
		eo.mode = NULL;
		eo.adaptive = true;         /* the default: adapt to the CPU and the link */
	}
	uint8_t *key = NULL;
	if (keyfile) {
		if (pipeline_load_key(keyfile, &key, &eo.key_len))
			return EX_USAGE;
		eo.key = g_key = key;
		g_key_len = eo.key_len;
	}
	char path[PATH_MAX], mem[PATH_MAX], devout[PATH_MAX], line[LINE_MAX_], idtext[300], streamto[300], mirrorto[300];
	struct env e;
	struct report rep;
	struct conn *cn = calloc(1, sizeof(*cn));
	struct vm *vm = NULL;
	struct proxy px;
	bool proxy_on = false;
	int rc, ex = EX_FAIL;
	memset(&rep, 0, sizeof(rep));
	cn->fd = -1;
	fmt(path, sizeof(path), "%s/vm.env", run);
	if (env_load(path, &e)) {
		free(cn);
		free(key);
		return EX_FAIL;
	}
	const char *ovl = env_need(&e, "VM_OVERLAY", path), *mnt = env_need(&e, "VM_MOUNT", path);
	if (!ovl || !mnt)
		goto out;
	fmt(mem, sizeof(mem), "%s/memory", mnt);
	fmt(devout, sizeof(devout), "%s/devstate.out", run);
	rep.t_start = ho_now_ns();
	if ((rc = vm_attach(run, mem, 10000, &vm))) {
		vm_fail("cannot reach the VM", rc);
		goto out;
	}
	vm_set_timeout(vm, 120000);
	uint8_t dig[OVERLAY_NIMAGES][HO_SHA256_LEN];
	uint64_t sz[OVERLAY_NIMAGES];
	if (overlay_identity_of(ovl, dig, sz))
		goto out;
	hex_id(dig, sz, idtext, sizeof(idtext));

	/* hello: the destination refuses a different base before anything is paused */
	if (tcp_connect(to, timeout_s * 1000, &cn->fd))
		goto out;
	char nonce_hex[33];
	if ((rc = conn_line(cn, line, sizeof(line), timeout_s * 1000)) ||
	    sscanf(line, "HANDOFF-VM %*d nonce=%32s", nonce_hex) != 1 || ho_unhex(nonce_hex, cn->peer_nonce, 16)) {
		ho_err("'%s' is not a handoff-vm receiver (%s)", to, rc ? ho_strerror(rc) : "bad greeting");
		goto out;
	}
	ho_random(cn->my_nonce, 16);
	ho_hex(cn->my_nonce, 16, nonce_hex);
	{
		char hello[LINE_MAX_];
		fmt(hello, sizeof(hello), "HELLO %d %s nonce=%s", PROTO_VERSION, idtext, nonce_hex);
		if (conn_send_signed(cn, hello))
			goto lost;
	}
	if ((rc = conn_line(cn, line, sizeof(line), timeout_s * 1000)))
		goto lost;
	if (!strncmp(line, "ERR ", 4)) {
		int code = atoi(line + 4);
		const char *msg = strchr(line + 4, ' ');
		ho_err("the destination refused the handoff: %s", msg ? msg + 1 : line);
		ex = code == HO_EBASE ? EX_BASE : EX_RESUMED;
		goto out;
	}
	unsigned sport;
	if (check_signed(cn, line) || sscanf(line, "OK port=%u", &sport) != 1 || !sport || sport > 65535) {
		ho_err("unexpected reply from the destination: '%.60s'", line);
		ex = EX_RESUMED;
		goto out;
	}
	{
		char host[256], port[16];
		split_hostport(to, host, sizeof(host), port, sizeof(port));
		fmt(streamto, sizeof(streamto), strchr(host, ':') ? "[%s]:%u" : "%s:%u", host, sport);
		fmt(mirrorto, sizeof(mirrorto), "%s", streamto);
	}
	/* clock: the destination's realtime clock against ours, from the fastest of a few pings */
	rep.rtt_ns = UINT64_MAX;
	for (int i = 0; i < 5; i++) {
		uint64_t a = ho_now_ns(), dt;
		if (conn_send(cn, "TIME") || conn_line(cn, line, sizeof(line), timeout_s * 1000) ||
		    sscanf(line, "TIME %" SCNu64, &dt) != 1)
			goto lost;
		uint64_t b = ho_now_ns();
		if (b - a < rep.rtt_ns) {
			rep.rtt_ns = b - a;
			rep.clock_offset = (int64_t)dt - (int64_t)(a + (b - a) / 2);
		}
	}
	ho_notice("destination '%s' holds the same base; streaming to port %u", to, sport);
	if (fault && !strcmp(fault, "corrupt-final")) {
		if (proxy_start(&px, streamto, streamto, sizeof(streamto))) {
			ho_err("cannot start the fault-injection proxy");
			goto out;
		}
		proxy_on = true;
		ho_warn("test fault '%s': the final round's stream will be corrupted", fault);
	}

	image_digests_prepare(ovl, verify);

	/* live rounds */
	uint32_t since = 0;
	for (;;) {
		struct round *r = &rep.r[rep.n];
		if ((rc = export_round(ovl, streamto, &eo, since, 0, true, false, r)))
			goto lost;
		rep.n++;
		since = r->until;
		conn_send(cn, "ROUND %d %u %" PRIu64 " verify=%s", rep.n, r->until, r->wire_bytes, verify);
		char b1[32];
		ho_notice("round %d (live): %s sent in %.2f s", rep.n, ho_fmt_bytes(r->wire_bytes, b1, sizeof(b1)), secs(r->ns));
		if (rep.n >= max_rounds - 1)
			break;
		if (r->ns <= (uint64_t)target_ms * 1000000u)
			break;                            /* the rest fits in the downtime target */
		if (rep.n >= 2 && r->wire_bytes * 10 > rep.r[rep.n - 2].wire_bytes * 8)
			break;                            /* not shrinking any more */
	}

	/* post-copy when asked, or (auto) when the last live round would not fit in about the downtime
	 * target: the rounds did not converge */
	{
		const struct round *last = &rep.r[rep.n - 1];
		rep.postcopy = !strcmp(postcopy, "always") ||
			(!strcmp(postcopy, "auto") && last->ns > HO_MAX(1000000000ull, 3ull * (uint64_t)target_ms * 1000000u));
		if (fault && !strcmp(fault, "slow-postcopy"))
			rep.postcopy = true;
		if (fault && !strcmp(fault, "corrupt-postcopy")) {
			if (proxy_start(&px, streamto, streamto, sizeof(streamto))) {
				ho_err("cannot start the fault-injection proxy");
				goto out;
			}
			proxy_on = true;
			px.corrupt = 1;
			rep.postcopy = true;
			ho_warn("test fault '%s': the post-copy stream will be corrupted", fault);
		}
	}

	/* write back what the guest dirtied since the last round while it still runs: otherwise
	 * QEMU's stop and the final checkpoint flush it inside the downtime (seconds, after a long
	 * round of a busy guest) */
	{
		uint64_t tf = ho_mono_ns();
		export_writeback(ovl);          /* a failure is the checkpoint's after the pause */
		ho_info("images written back before the pause in %.2f s", secs(ho_mono_ns() - tf));
	}

	/* pause, device state, final round */
	rep.t_pause = ho_now_ns();
	if ((rc = vm_pause(vm))) {
		vm_fail("cannot pause the VM", rc);
		goto out;
	}
	rep.paused = true;
	long long dsize = vm_save_device_state(vm, devout);
	if (dsize < 0) {
		vm_fail("cannot save the device state", (int)dsize);
		goto lost;
	}
	rep.devstate_bytes = (uint64_t)dsize;
	rep.t_devstate = ho_now_ns();
	if (rep.postcopy) {
		struct export_opts peo = eo;
		if (fault && !strcmp(fault, "slow-postcopy")) {
			peo.rate_limit = 8000;          /* the VM runs long before the stream ends */
			ho_warn("test fault '%s': the post-copy stream goes at 8 kB/s", fault);
		}
		ex = migrate_postcopy(cn, &rep, ovl, devout, streamto, mirrorto, &peo, since);
		if (ex == EX_OK)
			goto handed_off;
		if (ex == EX_LOST)
			goto out;
		goto lost;
	}
	if (proxy_on)
		px.corrupt = 1;
	/* the images no longer change: hash them while the final round streams */
	struct digest_task digt;
	bool hashing = strcmp(verify, "none") != 0;
	if (hashing)
		digest_task_start(&digt, ovl, !strcmp(verify, "all"));
	rc = export_round(ovl, streamto, &eo, since, 0, false, false, &rep.r[rep.n]);
	int drc = hashing ? digest_task_join(&digt) : 0;
	if (rc)
		goto lost;
	rep.n++;
	rep.t_final_done = ho_now_ns();
	{
		char *ds = NULL;
		size_t dlen;
		uint8_t d[HO_SHA256_LEN];
		char hex[2 * HO_SHA256_LEN + 1], text[LINE_MAX_];
		if (ho_read_file(devout, &ds, &dlen, 256u << 20))
			goto lost;
		ho_sha256(ds, dlen, d);
		ho_hex(d, HO_SHA256_LEN, hex);
		fmt(text, sizeof(text), "DEVSTATE %zu %s", dlen, hex);
		rc = conn_send_signed(cn, text);
		if (!rc)
			rc = ho_write_full(cn->fd, ds, dlen) ? HO_ECONN : 0;
		free(ds);
		fmt(text, sizeof(text), "RESUME %u verify=%s", since = rep.r[rep.n - 1].until, verify);
		if (rc || conn_send_signed(cn, text))
			goto lost;
		/* the destination hashes its images meanwhile */
		if (hashing) {
			char *dig_text = digt.out;
			if (drc)
				goto lost;
			if (fault && !strcmp(fault, "wrong-digest")) {
				char *h = strchr(dig_text, '=');
				h[1] = h[1] == '0' ? '1' : '0';
				ho_warn("test fault '%s': sending a wrong memory digest", fault);
			}
			fmt(text, sizeof(text), "DIGEST %s", dig_text);
			if (conn_send_signed(cn, text))
				goto lost;
		}
	}
	/* wait for "RUNNING" from the destination */
	if ((rc = conn_line(cn, line, sizeof(line), 120000))) {
		ho_err("no word from the destination after the device state: %s", ho_strerror(rc));
		goto lost;
	}
	rep.t_confirm = ho_now_ns();
	uint64_t t_run;
	if (strncmp(line, "RUNNING ", 8) || check_signed(cn, line) || sscanf(line, "RUNNING %" SCNu64, &t_run) != 1) {
		ho_err("the destination did not resume the VM: %.200s", line);
		goto lost;
	}
	rep.t_dst_running = (uint64_t)((int64_t)t_run - rep.clock_offset);
	rep.handed_off = true;
	rep.t_end = rep.t_confirm;
	conn_send(cn, "BYE");
	ex = EX_OK;
handed_off:
	if (!keep) {
		vm_quit(vm);
		vm_close(vm);
		vm = NULL;
		unmount(mnt, ovl);
	}
	goto out;

lost:
	/* the handoff failed: the source goes on */
	if (cn->fd >= 0)
		conn_send(cn, "ABORT");
	if (rep.paused) {
		char st[64];
		bool running = false;
		if (vm_query_status(vm, st, sizeof(st), &running) == 0 && !running && (rc = vm_cont(vm))) {
			vm_fail("handoff failed and the source VM could not be resumed", rc);
			ex = EX_LOST;
			goto out;
		}
		ho_err("handoff failed: the source VM was resumed and keeps running");
	} else {
		ho_err("handoff failed before the VM was paused: it keeps running on the source");
	}
	ex = EX_RESUMED;
out:
	if (proxy_on)
		proxy_stop(&px);
	if (!rep.t_end)
		rep.t_end = ho_now_ns();
	if (rep.n)
		print_report(&rep, stderr, false);
	if (report_file) {
		FILE *f = fopen(report_file, "w");
		if (f) {
			print_report(&rep, f, true);
			fclose(f);
		} else {
			ho_err("cannot write '%s': %s", report_file, strerror(errno));
		}
	}
	if (cn->fd >= 0)
		close(cn->fd);
	free(cn);
	vm_close(vm);
	env_free(&e);
	free(key);
	return ex;
}

/* ---- receive (the destination) ---------------------------------------------------------------------- */

static int start_mirror(const char *base, const char *ovl, const char *mnt, const char *listen_addr,
			const char *keyfile, const char *port_file)
{
	char disk[PATH_MAX], mem[PATH_MAX];
	fmt(disk, sizeof(disk), "%s/disk.img", base);
	fmt(mem, sizeof(mem), "%s/memory.img", base);
	if (ho_mkdir_p(mnt, 0755))
		return HO_EIO;
	unlink(port_file);
	char *argv[16];
	int n = 0;
	argv[n++] = (char *)tool_path("handoff-mirror");
	argv[n++] = "-q";
	argv[n++] = "--disk";
	argv[n++] = disk;
	argv[n++] = "--memory";
	argv[n++] = mem;
	argv[n++] = "--listen";
	argv[n++] = (char *)listen_addr;
	argv[n++] = "--port-file";
	argv[n++] = (char *)port_file;
	if (keyfile) {
		argv[n++] = "--key";
		argv[n++] = (char *)keyfile;
	}
	argv[n++] = (char *)ovl;
	argv[n++] = (char *)mnt;
	argv[n] = NULL;
	int rc = run_prog(argv);
	if (rc)
		ho_err("cannot start the mirror mount on '%s'", mnt);
	return rc;
}

/* Destination: resume the VM from the device state on the mirror mount and tell the source
 * RUNNING with our clock. 0, or the error (the source was told ERR when the resume failed). */
static int resume_and_report(struct conn *cn, const struct base *b, const char *mnt, const char *run,
			     const char *accel, const char *devin, struct vm **vm, struct resume_gate *gate)
{
	char text[128];
	int rc = resume_on_mount(b, mnt, run, accel, devin, vm, NULL, gate);
	if (rc) {
		if (!gate || !gate->told)
			conn_send(cn, "ERR %d cannot resume the VM: %s", rc, ho_strerror(rc));
		return rc;
	}
	fmt(text, sizeof(text), "RUNNING %" PRIu64, ho_now_ns());
	if ((rc = conn_send_signed(cn, text)))
		ho_err("cannot confirm to the source: the VM runs here, check the source");
	return rc;
}

/* --verify on the destination: the images' digests, hashed while QEMU starts and loads the
 * device state, must equal the source's (its DIGEST line) before the VM may run */
struct verify_gate { struct resume_gate g; struct conn *cn; struct digest_task dt; };

static int verify_gate_check(struct resume_gate *g)
{
	struct verify_gate *v = (struct verify_gate *)g;
	char theirs[LINE_MAX_];
	int rc = digest_task_join(&v->dt);
	if (rc) {
		conn_send(v->cn, "ERR %d cannot hash the images", rc);
		g->told = true;
		return rc;
	}
	if ((rc = conn_line(v->cn, theirs, sizeof(theirs), 120000)) || (rc = check_signed(v->cn, theirs)) ||
	    strncmp(theirs, "DIGEST ", 7)) {
		ho_err("no digest from the source: not resuming");
		return rc ? rc : HO_EPROTO;
	}
	if (strcmp(theirs + 7, v->dt.out)) {
		ho_err("the images differ from the source's after the last round: not resuming");
		ho_err("source %s", theirs + 7);
		ho_err("here   %s", v->dt.out);
		conn_send(v->cn, "ERR %d images differ from the source's after the last round", HO_EDIGEST);
		g->told = true;
		return HO_EDIGEST;
	}
	ho_notice("images verified (%s)", v->dt.all ? "all" : "memory");
	return 0;
}

/* Post-copy on the destination: until the handoff completes, the VM must not outlive this
 * process (the source resumes its own copy when it loses us). A watchdog child waits on a pipe;
 * if the pipe closes before "ok" came through it, it kills the QEMU of RUN_DIR/qemu.pid and tells
 * the mirror to fail every access still waiting. Returns the pipe's write end (or -1). */
static int postcopy_watchdog(const char *run, const char *ovl)
{
	int p[2];
	if (pipe2(p, O_CLOEXEC) < 0)
		return -1;
	pid_t pid = fork();
	if (pid < 0) {
		close(p[0]);
		close(p[1]);
		return -1;
	}
	if (pid == 0) {
		char c = 0, path[PATH_MAX], *t = NULL, reply[64];
		size_t tl;
		close(p[1]);
		ssize_t n;
		while ((n = read(p[0], &c, 1)) < 0 && errno == EINTR)
			;
		if (n == 1 && c == 'k')
			_exit(0);
		fmt(path, sizeof(path), "%s/qemu.pid", run);
		if (ho_read_file(path, &t, &tl, 64) == 0 && atoi(t) > 1)
			kill((pid_t)atoi(t), SIGKILL);
		ho_ctl_call(ovl, "postcopy-abort", -1, 5000, reply, sizeof(reply));
		_exit(0);
	}
	close(p[0]);
	return p[1];
}

static int cmd_receive(int argc, char **argv)
{
	enum { OPT_BASE = 256, OPT_OVL, OPT_MNT, OPT_LISTEN, OPT_KEY, OPT_RUN, OPT_ACCEL, OPT_PORTFILE, OPT_TIMEOUT, OPT_FAULT };
	static const struct option opts[] = {
		{ "base", required_argument, NULL, OPT_BASE }, { "overlay", required_argument, NULL, OPT_OVL },
		{ "mount", required_argument, NULL, OPT_MNT }, { "listen", required_argument, NULL, OPT_LISTEN },
		{ "key", required_argument, NULL, OPT_KEY }, { "run-dir", required_argument, NULL, OPT_RUN },
		{ "accel", required_argument, NULL, OPT_ACCEL }, { "port-file", required_argument, NULL, OPT_PORTFILE },
		{ "timeout", required_argument, NULL, OPT_TIMEOUT }, { "fault", required_argument, NULL, OPT_FAULT },
		{ 0 } };
	const char *base = NULL, *ovl = NULL, *mnt = NULL, *listen_addr = NULL, *keyfile = NULL, *run = NULL;
	const char *accel = NULL, *port_file = NULL, *fault = NULL;
	int timeout_s = 0, c, rc, ex = EX_FAIL;
	char rundef[PATH_MAX];
	optind = 1;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case OPT_BASE: base = optarg; break;
		case OPT_OVL: ovl = optarg; break;
		case OPT_MNT: mnt = optarg; break;
		case OPT_LISTEN: listen_addr = optarg; break;
		case OPT_KEY: keyfile = optarg; break;
		case OPT_RUN: run = optarg; break;
		case OPT_ACCEL: accel = optarg; break;
		case OPT_PORTFILE: port_file = optarg; break;
		case OPT_TIMEOUT: timeout_s = atoi(optarg); break;
		case OPT_FAULT: fault = optarg; break;
		default: return EX_USAGE;
		}
	}
	if (!base || !ovl || !mnt || !listen_addr || optind != argc) {
		ho_err("usage: handoff-vm receive --base BASE_DIR --overlay OVL --mount MNT --listen ADDR:PORT [--key FILE]");
		return EX_USAGE;
	}
	if (fault && strcmp(fault, "die-after-devstate")) {
		ho_err("unknown fault '%s' (die-after-devstate)", fault);
		return EX_USAGE;
	}
	char host[256], port[16], mlisten[300], mport_file[PATH_MAX], line[LINE_MAX_], idtext[300];
	if (split_hostport(listen_addr, host, sizeof(host), port, sizeof(port))) {
		ho_err("invalid listen address '%s' (ADDR:PORT)", listen_addr);
		return EX_USAGE;
	}
	if (!run) {
		default_run_dir(ovl, rundef, sizeof(rundef));
		run = rundef;
	}
	uint8_t *key = NULL;
	size_t key_len = 0;
	if (keyfile) {
		if (pipeline_load_key(keyfile, &key, &key_len))
			return EX_USAGE;
		g_key = key;
		g_key_len = key_len;
	}
	struct base b;
	struct conn *cn = calloc(1, sizeof(*cn));
	struct vm *vm = NULL;
	int lfd = -1;
	bool mirrored = false, postcopy_on = false;
	int watchdog = -1;                  /* post-copy: kills the VM if we die before completing */
	char *ds = NULL;
	if (!cn || base_load(base, &b)) {
		free(cn);
		free(key);
		return EX_FAIL;
	}
	cn->fd = -1;
	if ((rc = ho_mkdir_p(run, 0755)))
		goto out;
	/* the mirror's stream listener: PORT+1 (or any port when PORT is 0) */
	unsigned p = (unsigned)atoi(port);
	fmt(mlisten, sizeof(mlisten), strchr(host, ':') ? "[%s]:%u" : "%s:%u", host, p ? p + 1 : 0);
	fmt(mport_file, sizeof(mport_file), "%s/stream.port", run);
	if ((rc = start_mirror(base, ovl, mnt, mlisten, keyfile, mport_file)))
		goto out;
	mirrored = true;
	unsigned sport = 0;
	{
		char *t = NULL;
		size_t tl;
		if (ho_read_file(mport_file, &t, &tl, 64) || sscanf(t, "%u", &sport) != 1) {
			free(t);
			ho_err("the mirror did not report its stream port in '%s'", mport_file);
			rc = HO_EIO;
			goto out;
		}
		free(t);
	}
	uint8_t dig[OVERLAY_NIMAGES][HO_SHA256_LEN];
	uint64_t sz[OVERLAY_NIMAGES];
	if ((rc = overlay_identity_of(ovl, dig, sz)))
		goto out;
	hex_id(dig, sz, idtext, sizeof(idtext));
	uint16_t cport;
	if ((rc = transport_listen(listen_addr, &lfd, &cport))) {
		ho_err("cannot listen on '%s': %s", listen_addr, ho_strerror(rc));
		goto out;
	}
	if (port_file) {
		char buf[16];
		int n = fmt(buf, sizeof(buf), "%u\n", cport);
		if ((rc = ho_write_file_atomic(port_file, buf, (size_t)n)))
			goto out;
	}
	ho_notice("waiting for the source on port %u (streams on port %u)", cport, sport);
	struct pollfd pfd = { .fd = lfd, .events = POLLIN };
	int pr = poll(&pfd, 1, timeout_s > 0 ? timeout_s * 1000 : -1);
	if (pr <= 0) {
		ho_err("no source connected within %d s", timeout_s);
		rc = HO_ETIMEDOUT;
		goto out;
	}
	cn->fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
	if (cn->fd < 0) {
		ho_err("cannot accept the source: %s", strerror(errno));
		rc = HO_ECONN;
		goto out;
	}
	int one = 1;
	setsockopt(cn->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	close(lfd);
	lfd = -1;
	ho_random(cn->my_nonce, 16);
	char nonce_hex[33];
	ho_hex(cn->my_nonce, 16, nonce_hex);
	if ((rc = conn_send(cn, "HANDOFF-VM %d nonce=%s", PROTO_VERSION, nonce_hex)))
		goto out;
	int to_ms = 60000;
	if ((rc = conn_line(cn, line, sizeof(line), to_ms)))
		goto lost;
	{
		int ver;
		char *nn = strstr(line, " nonce=");
		if ((rc = check_signed(cn, line)) || sscanf(line, "HELLO %d", &ver) != 1 || !nn ||
		    ho_unhex(nn + 7, cn->peer_nonce, 16)) {
			conn_send(cn, "ERR %d %s", rc ? rc : HO_EPROTO, rc == HO_EAUTH ? "not authenticated" : "bad hello");
			ho_err("refused the source: %s", rc == HO_EAUTH ? "hello not authenticated with our key" : "bad hello");
			rc = rc ? rc : HO_EPROTO;
			goto lost;
		}
		if (ver != PROTO_VERSION) {
			conn_send(cn, "ERR %d protocol version %d, want %d", HO_EVERSION, ver, PROTO_VERSION);
			rc = HO_EVERSION;
			goto lost;
		}
		*nn = 0;
		const char *theirs = line + strlen("HELLO 1 ");
		if (strcmp(theirs, idtext)) {
			conn_send(cn, "ERR %d base differs: the destination holds %s", HO_EBASE, idtext);
			ho_err("refused the source: its base differs from '%s' (source %s)", base, theirs);
			rc = HO_EBASE;
			goto lost;
		}
		char ok[64];
		fmt(ok, sizeof(ok), "OK port=%u", sport);
		if ((rc = conn_send_signed(cn, ok)))
			goto lost;
	}
	ho_notice("source connected with the same base; receiving rounds");
	image_digests_prepare(ovl, "memory");     /* what --verify needs by default; "all": see ROUND */
	bool digest_all_prepared = false;
	size_t dlen = 0;
	uint8_t dwant[HO_SHA256_LEN];
	char devin[PATH_MAX];
	fmt(devin, sizeof(devin), "%s/devstate.in", run);
	for (;;) {
		if ((rc = conn_line(cn, line, sizeof(line), timeout_s > 0 ? timeout_s * 1000 : 3600000))) {
			ho_err("the source went away: %s", ho_strerror(rc));
			goto lost;
		}
		if (!strcmp(line, "TIME")) {
			conn_send(cn, "TIME %" PRIu64, ho_now_ns());
		} else if (!strncmp(line, "ROUND ", 6)) {
			ho_info("%s", line);
			/* what the source will verify: the disk's base sums too, ahead of the downtime */
			const char *v = strstr(line, " verify=");
			if (v && !strncmp(v + 8, "all", 3) && !digest_all_prepared) {
				image_digests_prepare(ovl, "all");
				digest_all_prepared = true;
			}
		} else if (!strncmp(line, "DEVSTATE ", 9)) {
			char hex[2 * HO_SHA256_LEN + 1];
			if ((rc = check_signed(cn, line)) || sscanf(line, "DEVSTATE %zu %64s", &dlen, hex) != 2 ||
			    dlen > (256u << 20) || ho_unhex(hex, dwant, HO_SHA256_LEN)) {
				rc = rc ? rc : HO_EPROTO;
				goto lost;
			}
			free(ds);
			if (!(ds = malloc(dlen ? dlen : 1))) {
				rc = HO_ENOMEM;
				goto lost;
			}
			if ((rc = conn_bytes(cn, ds, dlen, 60000)))
				goto lost;
			uint8_t got[HO_SHA256_LEN];
			ho_sha256(ds, dlen, got);
			if (!ho_mem_equal_ct(got, dwant, HO_SHA256_LEN)) {
				ho_err("device state from the source is corrupt (SHA-256 mismatch)");
				conn_send(cn, "ERR %d device state checksum mismatch", HO_ECHECKSUM);
				rc = HO_ECHECKSUM;
				goto lost;
			}
			if ((rc = ho_write_file_atomic(devin, ds, dlen)))
				goto lost;
			if (fault) {
				ho_warn("test fault '%s': dying now", fault);
				_exit(9);
			}
		} else if (!strncmp(line, "RESUME ", 7)) {
			if ((rc = check_signed(cn, line)))
				goto lost;
			if (!ds) {
				conn_send(cn, "ERR %d resume before device state", HO_EPROTO);
				rc = HO_EPROTO;
				goto lost;
			}
			char vmode[16] = "none", *vm_ = strstr(line, " verify=");
			if (vm_)
				sscanf(vm_ + 8, "%15s", vmode);
			/* the images must be the source's, bit for bit, before the VM runs on them: hashed
			 * while QEMU starts, compared before it continues */
			struct verify_gate vg = { .g = { .check = verify_gate_check }, .cn = cn };
			bool verifying = strcmp(vmode, "none") != 0;
			if (verifying)
				digest_task_start(&vg.dt, ovl, !strcmp(vmode, "all"));
			uint64_t t0 = ho_mono_ns();
			rc = resume_and_report(cn, &b, mnt, run, accel, devin, &vm, verifying ? &vg.g : NULL);
			if (verifying)
				digest_task_join(&vg.dt);           /* QEMU failed before the gate: the thread ends */
			if (rc)
				goto lost;
			write_vm_env(run, "source", base, ovl, mnt, vm_pid(vm));
			ho_notice("VM resumed here in %.2f s after the last round: qemu pid %d, run dir '%s'",
				  secs(ho_mono_ns() - t0), (int)vm_pid(vm), run);
			/* the source answers BYE (or closes); either way the VM stays */
			conn_line(cn, line, sizeof(line), 10000);
			ex = EX_OK;
			goto out;
		} else if (!strncmp(line, "POSTCOPY ", 9)) {
			/* post-copy: hold back the chunks still to come, resume now, let them stream */
			unsigned until_;
			uint64_t nch;
			size_t mlen;
			char hex[2 * HO_SHA256_LEN + 1], mpath[PATH_MAX], reply[256];
			uint8_t mwant[HO_SHA256_LEN], mgot[HO_SHA256_LEN];
			if ((rc = check_signed(cn, line)) ||
			    sscanf(line, "POSTCOPY %u %" SCNu64 " %zu %64s", &until_, &nch, &mlen, hex) != 4 ||
			    mlen > (64u << 20) || ho_unhex(hex, mwant, HO_SHA256_LEN) || !ds) {
				rc = rc ? rc : HO_EPROTO;
				goto lost;
			}
			uint8_t *mf = malloc(mlen ? mlen : 1);
			if (!mf) {
				rc = HO_ENOMEM;
				goto lost;
			}
			if ((rc = conn_bytes(cn, mf, mlen, 60000))) {
				free(mf);
				goto lost;
			}
			ho_sha256(mf, mlen, mgot);
			fmt(mpath, sizeof(mpath), "%s/postcopy.manifest", run);
			if (!ho_mem_equal_ct(mgot, mwant, HO_SHA256_LEN)) {
				free(mf);
				ho_err("the post-copy manifest from the source is corrupt (SHA-256 mismatch)");
				conn_send(cn, "ERR %d manifest checksum mismatch", HO_ECHECKSUM);
				rc = HO_ECHECKSUM;
				goto lost;
			}
			rc = ho_write_file_atomic(mpath, mf, mlen);
			free(mf);
			int mfd = rc ? -1 : open(mpath, O_RDONLY | O_CLOEXEC);
			if (mfd < 0 || (rc = ho_ctl_call(ovl, "postcopy", mfd, 60000, reply, sizeof(reply)))) {
				rc = rc ? rc : HO_EIO;
				if (mfd >= 0)
					close(mfd);
				ho_err("the mirror cannot hold back the chunks still to come: %s", ho_strerror(rc));
				conn_send(cn, "ERR %d cannot begin post-copy: %s", rc, ho_strerror(rc));
				goto lost;
			}
			close(mfd);
			postcopy_on = true;
			watchdog = postcopy_watchdog(run, ovl);
			if ((rc = conn_send_signed(cn, "READY")))
				goto lost;
			ho_notice("post-copy: %s chunks awaited; resuming the VM", reply);
			uint64_t t0 = ho_mono_ns();
			if ((rc = resume_and_report(cn, &b, mnt, run, accel, devin, &vm, NULL)))
				goto lost;
			char st_[256] = "";
			ho_ctl_call(ovl, "postcopy-status", -1, 5000, st_, sizeof(st_));
			ho_notice("VM resumed here in %.2f s while the last round streams: qemu pid %d (%s)",
				  secs(ho_mono_ns() - t0), (int)vm_pid(vm), st_);
		} else if (!strncmp(line, "COMPLETE ", 9) && postcopy_on) {
			/* the source's stream was published: the mirror must await nothing and be done */
			char reply[512];
			if ((rc = check_signed(cn, line)))
				goto lost;
			uint64_t deadline = ho_mono_ns() + 600000000000ull;   /* the mirror commits what it wrote in place */
			for (;;) {
				if ((rc = ho_ctl_call(ovl, "postcopy-status", -1, 10000, reply, sizeof(reply))))
					break;
				if (strncmp(reply, "active", 6) || ho_mono_ns() > deadline)
					break;
				usleep(20000);
			}
			if (rc || strncmp(reply, "done ", 5)) {
				ho_err("post-copy did not complete: %s", rc ? ho_strerror(rc) : reply);
				conn_send(cn, "ERR %d post-copy did not complete", HO_EDIGEST);
				rc = rc ? rc : HO_EDIGEST;
				goto lost;
			}
			ho_info("post-copy: %s", reply);
			/* COMPLETE-OK lets the source's paused copy go: the VM here must still be running
			 * (a QEMU that died, or stopped on an error, while it waited for chunks would
			 * otherwise leave the guest running nowhere); if not, the source resumes its own */
			char qst[64] = "";
			bool qrun = false;
			bool dead = vm_exited(vm, NULL);
			int qrc = dead ? 0 : vm_query_status(vm, qst, sizeof(qst), &qrun);
			if (dead || qrc || !qrun) {
				const char *why = dead ? "QEMU exited" : qrc ? "QEMU does not answer" : qst;
				ho_err("post-copy: every chunk arrived, but the VM here is not running (%s)", why);
				conn_send(cn, "ERR %d the VM is not running on the destination (%s)", HO_ESTATE, why);
				rc = HO_ESTATE;
				goto lost;
			}
			if ((rc = conn_send_signed(cn, "COMPLETE-OK"))) {
				ho_err("cannot confirm to the source: the VM runs here, check the source");
				goto lost;
			}
			if (watchdog >= 0) {
				if (write(watchdog, "k", 1) != 1)
					ho_warn("cannot release the post-copy watchdog");
				close(watchdog);
				watchdog = -1;
			}
			write_vm_env(run, "source", base, ovl, mnt, vm_pid(vm));
			ho_notice("post-copy complete: every chunk arrived and verified; qemu pid %d, run dir '%s'",
				  (int)vm_pid(vm), run);
			conn_line(cn, line, sizeof(line), 10000);
			ex = EX_OK;
			goto out;
		} else if (!strcmp(line, "ABORT")) {
			ho_err("the source aborted the handoff");
			rc = HO_ECONN;
			goto lost;
		} else {
			ho_err("unexpected message from the source: '%.60s'", line);
			rc = HO_EPROTO;
			goto lost;
		}
	}
lost:
	ex = rc == HO_EBASE ? EX_BASE : rc == HO_ECHECKSUM || rc == HO_EAUTH || rc == HO_EDIGEST ? EX_VERIFY : EX_FAIL;
	if (postcopy_on) {
		char reply[64];
		ho_ctl_call(ovl, "postcopy-abort", -1, 10000, reply, sizeof(reply));
	}
	if (vm) {
		vm_kill(vm);
		vm_close(vm);
		vm = NULL;
	}
out:
	if (ex != EX_OK && mirrored)
		unmount(mnt, ovl);
	if (ex != EX_OK && ex != EX_BASE && ex != EX_VERIFY)
		ex = EX_FAIL;
	if (lfd >= 0)
		close(lfd);
	if (cn->fd >= 0)
		close(cn->fd);
	if (watchdog >= 0)
		close(watchdog);            /* not completed: the watchdog makes sure the VM is gone */
	vm_close(vm);
	free(cn);
	free(ds);
	free(key);
	env_free(&b.env);
	return ex;
}

/* ---- main ---------------------------------------------------------------------------------------------- */

static void usage(FILE *f)
{
	fprintf(f,
"usage: handoff-vm base create --guest tiny|realistic|GUEST_ENV [--ram SIZE] [--append ARGS] OUT_DIR\n"
"       handoff-vm start --base BASE_DIR --overlay OVL --mount MNT [--run-dir DIR] [--accel kvm|tcg]\n"
"       handoff-vm migrate --run-dir DIR --to HOST:PORT [--key FILE] [--mode NAME] [-T N]\n"
"                          [--max-rounds N] [--downtime-target MS] [--report FILE] [--keep-source]\n"
"                          [--verify none|memory|all] [--postcopy never|always|auto]\n"
"       handoff-vm receive --base BASE_DIR --overlay OVL --mount MNT --listen ADDR:PORT [--key FILE]\n"
"                          [--run-dir DIR] [--port-file FILE] [--timeout S]\n"
"       handoff-vm stop --run-dir DIR\n"
"\n"
"Hand a running VM over between two cloudlets that hold the same base: see handoff-vm(1).\n"
"Global options before the command: -q, -v, -h, --version.\n");
}

int main(int argc, char **argv)
{
	int level = LOG_NOTICE, i = 1;
	ho_log_init("handoff-vm");
	signal(SIGPIPE, SIG_IGN);
	for (; i < argc && argv[i][0] == '-'; i++) {
		if (!strcmp(argv[i], "-q") || !strcmp(argv[i], "--quiet"))
			level = LOG_ERR;
		else if (!strcmp(argv[i], "-v") || !strcmp(argv[i], "--verbose"))
			level = level >= LOG_INFO ? LOG_DEBUG : LOG_INFO;
		else if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
			usage(stdout);
			return EX_OK;
		} else if (!strcmp(argv[i], "--version")) {
			printf("handoff-vm 0.1\n");
			return EX_OK;
		} else {
			ho_err("unknown option '%s'", argv[i]);
			usage(stderr);
			return EX_USAGE;
		}
	}
	ho_log_set_level(level);
	if (i >= argc) {
		usage(stderr);
		return EX_USAGE;
	}
	const char *cmd = argv[i];
	if (!strcmp(cmd, "base")) {
		if (i + 1 >= argc || strcmp(argv[i + 1], "create")) {
			ho_err("unknown base command (base create)");
			return EX_USAGE;
		}
		return cmd_base_create(argc - i - 1, argv + i + 1);
	}
	if (!strcmp(cmd, "start"))
		return cmd_start(argc - i, argv + i);
	if (!strcmp(cmd, "migrate"))
		return cmd_migrate(argc - i, argv + i);
	if (!strcmp(cmd, "receive"))
		return cmd_receive(argc - i, argv + i);
	if (!strcmp(cmd, "stop"))
		return cmd_stop(argc - i, argv + i);
	ho_err("unknown command '%s'", cmd);
	usage(stderr);
	return EX_USAGE;
}
