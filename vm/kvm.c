/*
 * kvm.c — decides between KVM and TCG by trying, not by looking: some hosts have a /dev/kvm that
 * opens and even runs real-mode code but never gets a Linux kernel to boot (a paravirtual KVM
 * inside another VM). It exists so "accel auto" picks KVM only where a Linux guest really
 * reaches its root-mount panic under KVM, and otherwise the slow but sure TCG.
 */
#include "vm/vm.h"
#include "vm/vm_internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define PROBE_TIMEOUT_MS 10000

static int cached = -1;

/* Newest readable /boot/vmlinuz-* (by version order), malloc'd, or NULL. */
static char *find_kernel(void)
{
	const char *env = getenv("HANDOFF_KVM_PROBE_KERNEL");
	if (env && *env)
		return access(env, R_OK) == 0 ? strdup(env) : NULL;
	DIR *d = opendir("/boot");
	if (!d)
		return NULL;
	char best[256] = "";
	struct dirent *de;
	while ((de = readdir(d))) {
		if (strncmp(de->d_name, "vmlinuz-", 8) != 0 || strlen(de->d_name) >= sizeof(best))
			continue;
		char path[300];
		snprintf(path, sizeof(path), "/boot/%s", de->d_name);
		if (access(path, R_OK) != 0)
			continue;
		if (!*best || strverscmp(de->d_name, best) > 0)
			snprintf(best, sizeof(best), "%s", de->d_name);
	}
	closedir(d);
	if (!*best)
		return NULL;
	char *out = NULL;
	if (asprintf(&out, "/boot/%s", best) < 0)
		return NULL;
	return out;
}

static bool file_contains(const char *path, const char *const *needles)
{
	char buf[65536];
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return false;
	ssize_t n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return false;
	buf[n] = '\0';
	for (const char *const *s = needles; *s; s++)
		if (memmem(buf, (size_t)n, *s, strlen(*s)))
			return true;
	return false;
}

static char *cache_path(void)
{
	const char *c = getenv("HANDOFF_CACHE");
	char *p = NULL;
	if (c && *c) {
		if (asprintf(&p, "%s/kvm-probe", c) < 0)
			return NULL;
	} else {
		const char *h = getenv("HOME");
		if (!h || !*h)
			return NULL;
		if (asprintf(&p, "%s/.cache/handoff/kvm-probe", h) < 0)
			return NULL;
	}
	return p;
}

static void mkdir_parents(const char *path)
{
	char *d = strdup(path);
	if (!d)
		return;
	for (char *p = d + 1; *p; p++) {
		if (*p == '/') {
			*p = '\0';
			mkdir(d, 0755);
			*p = '/';
		}
	}
	free(d);
}

static bool run_probe(const char *kernel)
{
	char dir[] = "/tmp/handoff-kvm-probe.XXXXXX";
	if (!mkdtemp(dir)) {
		vm_log("kvm probe: mkdtemp: %s", strerror(errno));
		return false;
	}
	char serial[64], qlog[64], chardev[128];
	snprintf(serial, sizeof(serial), "%s/serial.log", dir);
	snprintf(qlog, sizeof(qlog), "%s/qemu.log", dir);
	snprintf(chardev, sizeof(chardev), "file,id=ser0,path=%s", serial);
	char *argv[] = {
		(char *)vm_qemu_binary(), "-nodefaults", "-no-user-config", "-display", "none",
		"-no-reboot", "-accel", "kvm", "-m", "128M", "-kernel", (char *)kernel,
		"-append", "console=ttyS0 panic=-1 root=/dev/handoff-kvm-probe-none",
		"-chardev", chardev, "-serial", "chardev:ser0", NULL,
	};
	bool works = false;
	int log_fd = open(qlog, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (log_fd >= 0) {
		pid_t pid = vm_spawn(argv, log_fd, false);
		close(log_fd);
		if (pid > 0) {
			/* the kernel got all the way to mounting root (and found none) */
			const char *const done[] = { "Kernel panic", "VFS: Cannot open root", "VFS: Unable", NULL };
			long long deadline = vm_mono_ms() + PROBE_TIMEOUT_MS;
			bool exited = false;
			while (vm_mono_ms() < deadline) {
				if ((works = file_contains(serial, done)))
					break;
				if (waitpid(pid, NULL, WNOHANG) == pid) {
					exited = true;
					works = file_contains(serial, done);
					break;
				}
				vm_sleep_ms(50);
			}
			if (!exited) {
				kill(pid, SIGKILL);
				waitpid(pid, NULL, 0);
			}
		}
	}
	unlink(serial);
	unlink(qlog);
	rmdir(dir);
	return works;
}

static int probe(void)
{
	const char *acc = getenv("HANDOFF_ACCEL");
	if (acc && strcmp(acc, "kvm") == 0)
		return 1;
	if (acc && strcmp(acc, "tcg") == 0)
		return 0;
	int fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (fd < 0) {
		vm_debug("kvm: /dev/kvm: %s", strerror(errno));
		return 0;
	}
	close(fd);
	char *kernel = find_kernel();
	if (!kernel) {
		vm_log("no readable Linux kernel to test KVM with (set HANDOFF_KVM_PROBE_KERNEL); using TCG");
		return 0;
	}
	/* the answer holds for this host boot, this QEMU and this kernel */
	char boot_id[64] = "";
	FILE *f = fopen("/proc/sys/kernel/random/boot_id", "r");
	if (f) {
		if (!fgets(boot_id, sizeof(boot_id), f))
			boot_id[0] = '\0';
		fclose(f);
		boot_id[strcspn(boot_id, "\n")] = '\0';
	}
	char *key = NULL, *cpath = cache_path();
	if (asprintf(&key, "v1 %s %s %s", boot_id, vm_qemu_binary(), kernel) < 0)
		key = NULL;
	int result = -1;
	if (key && cpath && *boot_id && (f = fopen(cpath, "r"))) {
		char line[1024], ans[16];
		if (fgets(line, sizeof(line), f) && fgets(ans, sizeof(ans), f)) {
			line[strcspn(line, "\n")] = '\0';
			if (strcmp(line, key) == 0)
				result = strncmp(ans, "yes", 3) == 0;
		}
		fclose(f);
	}
	if (result < 0) {
		long long t0 = vm_mono_ms();
		result = run_probe(kernel);
		vm_log("KVM %s (probe booted %s with -accel kvm: %s after %lld ms)%s",
		       result ? "works" : "does not boot a Linux guest here", kernel,
		       result ? "reached root mount" : "no root-mount panic", vm_mono_ms() - t0,
		       result ? "" : "; using TCG");
		if (key && cpath && *boot_id) {
			mkdir_parents(cpath);
			char tmp[1100];
			snprintf(tmp, sizeof(tmp), "%s.%d", cpath, (int)getpid());
			if ((f = fopen(tmp, "w"))) {
				fprintf(f, "%s\n%s\n", key, result ? "yes" : "no");
				if (fclose(f) == 0)
					rename(tmp, cpath);
				else
					unlink(tmp);
			}
		}
	}
	free(key);
	free(cpath);
	free(kernel);
	return result;
}

bool vm_kvm_works(void)
{
	if (cached < 0)
		cached = probe();
	return cached == 1;
}

const char *vm_default_accel(void)
{
	return vm_kvm_works() ? "kvm" : "tcg";
}
