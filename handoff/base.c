/*
 * base.c — bases: what both cloudlets hold before a handoff (disk.img, memory.img, the device
 * state of the paused guest, its kernel, and base.env recording their sizes and SHA-256), how one
 * is made (handoff_base_create boots a built guest on a fresh mount and snapshots it), read, and
 * checked against an overlay's recorded base identity — the identity both sides compare in the
 * hello before anything is paused.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "handoff/handoff_int.h"
#include "vm/vm.h"

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

int handoff_base_load(const char *dir, struct base *b)
{
	char path[PATH_MAX];
	memset(b, 0, sizeof(*b));
	fmt(b->dir, sizeof(b->dir), "%s", dir);
	fmt(path, sizeof(path), "%s/base.env", dir);
	int rc = handoff_env_load(path, &b->env);
	if (rc)
		return rc;
	const char *k = handoff_env_need(&b->env, "BASE_KERNEL", path);
	const char *ram = handoff_env_need(&b->env, "BASE_RAM_MB", path);
	const char *ds[2] = { handoff_env_need(&b->env, "BASE_DISK_SHA256", path),
			      handoff_env_need(&b->env, "BASE_MEMORY_SHA256", path) };
	const char *sz[2] = { handoff_env_need(&b->env, "BASE_DISK_SIZE", path),
			      handoff_env_need(&b->env, "BASE_MEMORY_SIZE", path) };
	b->cmdline = handoff_env_get(&b->env, "BASE_CMDLINE");
	b->machine = handoff_env_get(&b->env, "BASE_MACHINE");
	const char *initrd = handoff_env_get(&b->env, "BASE_INITRD"), *cpus = handoff_env_get(&b->env, "BASE_CPUS");
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
int handoff_identity_of(const char *ovl, uint8_t digest[OVERLAY_NIMAGES][HO_SHA256_LEN],
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
int handoff_check_base(const char *ovl, const struct base *b)
{
	uint8_t d[OVERLAY_NIMAGES][HO_SHA256_LEN];
	uint64_t s[OVERLAY_NIMAGES];
	int rc = handoff_identity_of(ovl, d, s);
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

/* the identity text of the hello */
void handoff_hex_id(const uint8_t d[OVERLAY_NIMAGES][HO_SHA256_LEN], const uint64_t s[OVERLAY_NIMAGES],
		    char *out, size_t len)
{
	char h0[2 * HO_SHA256_LEN + 1], h1[2 * HO_SHA256_LEN + 1];
	ho_hex(d[0], HO_SHA256_LEN, h0);
	ho_hex(d[1], HO_SHA256_LEN, h1);
	fmt(out, len, "disk=%" PRIu64 ":%s memory=%" PRIu64 ":%s", s[0], h0, s[1], h1);
}

void handoff_vm_config(const struct base *b, const char *mnt, const char *run_dir, const char *accel,
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

enum handoff_outcome handoff_base_create(const struct handoff_base_opts *o)
{
	const char *guest = o->guest, *append = o->append, *accel = o->accel, *out = o->out_dir;
	uint64_t ram = o->ram;
	double settle = o->settle;
	int timeout_s = o->timeout_s;
	bool force = o->force;
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
		return HANDOFF_FAILED;
	}
	if ((rc = handoff_env_load(envpath, &g)))
		return HANDOFF_FAILED;
	const char *gk = handoff_env_need(&g, "GUEST_KERNEL", envpath), *gd = handoff_env_need(&g, "GUEST_DISK", envpath);
	const char *gi = handoff_env_get(&g, "GUEST_INITRD"), *gc = handoff_env_get(&g, "GUEST_CMDLINE");
	const char *gram = handoff_env_get(&g, "GUEST_RAM_MB"), *gkind = handoff_env_get(&g, "GUEST_KIND");
	if (!gk || !gd) {
		handoff_env_free(&g);
		return HANDOFF_FAILED;
	}
	unsigned ram_mb = ram ? (unsigned)(ram >> 20) : (gram ? (unsigned)atoi(gram) : 256);
	fmt(cmdline, sizeof(cmdline), "%s%s%s", gc ? gc : "", append ? " " : "", append ? append : "");
	fmt(p, sizeof(p), "%s/base.env", out);
	if (!force && access(p, F_OK) == 0) {
		ho_err("'%s' already holds a base (--force replaces it)", out);
		handoff_env_free(&g);
		return HANDOFF_FAILED;
	}
	fmt(work, sizeof(work), "%s/.create", out);
	fmt(ovl, sizeof(ovl), "%s/ovl", work);
	fmt(mnt, sizeof(mnt), "%s/mnt", work);
	fmt(run, sizeof(run), "%s/run", work);
	{
		char *rm[] = { "rm", "-rf", work, NULL };
		if (handoff_is_mountpoint(mnt))
			handoff_unmount(mnt, ovl);
		handoff_run_prog(rm);
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
	handoff_env_put(&envbuf, &envlen, "BASE_GUEST", "%s", gkind ? gkind : guest);
	handoff_env_put(&envbuf, &envlen, "BASE_KERNEL", "vmlinuz");
	handoff_env_put(&envbuf, &envlen, "BASE_INITRD", "%s", gi && *gi ? "initrd" : "");
	handoff_env_put(&envbuf, &envlen, "BASE_CMDLINE", "%s", cmdline);
	handoff_env_put(&envbuf, &envlen, "BASE_RAM_MB", "%u", ram_mb);
	handoff_env_put(&envbuf, &envlen, "BASE_CPUS", "1");
	handoff_env_put(&envbuf, &envlen, "BASE_MACHINE", "pc");
	fmt(ramarg, sizeof(ramarg), "%uM", ram_mb);
	ho_notice("booting guest '%s' (%u MiB RAM) on a fresh mount over '%s'", gkind ? gkind : guest, ram_mb, gd);
	if ((rc = handoff_mount_base(gd, ovl, mnt, ramarg)))
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
	handoff_vm_config(&b, mnt, run, accel, &cfg, disk, mem, sizeof(disk));
	cfg.detach = false;
	if ((rc = vm_start(&cfg, &vm))) {
		rc = handoff_vm_fail("cannot start qemu", rc);
		goto out_env;
	}
	vm_set_timeout(vm, 120000);
	char line[512];
	if ((rc = vm_wait_serial(vm, "HANDOFF-READY", timeout_s * 1000, line, sizeof(line)))) {
		rc = handoff_vm_fail("the guest did not reach HANDOFF-READY", rc);
		goto out_env;
	}
	ho_notice("guest ready after %.1f s: %s", secs(ho_mono_ns() - t0), line);
	if (settle > 0)
		usleep((useconds_t)(settle * 1e6));
	if ((rc = vm_pause(vm))) {
		rc = handoff_vm_fail("cannot pause the guest", rc);
		goto out_env;
	}
	fmt(p, sizeof(p), "%s/devstate", out);
	long long dsize = vm_save_device_state(vm, p);
	if (dsize < 0) {
		rc = handoff_vm_fail("cannot save the device state", (int)dsize);
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
		handoff_env_put(&envbuf, &envlen, key, "%" PRIu64, size);
		fmt(key, sizeof(key), "BASE_%s_SHA256", names[i]);
		handoff_env_put(&envbuf, &envlen, key, "%s", hex);
	}
	{
		uint8_t d[HO_SHA256_LEN];
		char hex[2 * HO_SHA256_LEN + 1];
		fmt(p, sizeof(p), "%s/devstate", out);
		if ((rc = ho_sha256_file(p, 0, d)))
			goto out_env;
		ho_hex(d, HO_SHA256_LEN, hex);
		handoff_env_put(&envbuf, &envlen, "BASE_DEVSTATE_SIZE", "%lld", dsize);
		handoff_env_put(&envbuf, &envlen, "BASE_DEVSTATE_SHA256", "%s", hex);
	}
	handoff_unmount(mnt, ovl);
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
		handoff_unmount(mnt, ovl);
	if (!rc || !getenv("HANDOFF_VM_KEEP")) {
		char *rm[] = { "rm", "-rf", work, NULL };
		handoff_run_prog(rm);
	}
	handoff_env_free(&g);
	return rc ? HANDOFF_FAILED : HANDOFF_OK;
}

