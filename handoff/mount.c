/*
 * mount.c — the programs handoff-vm runs: the sibling tools (handoff-mount over a base,
 * handoff-mirror on the destination), fusermount3, rm. The mounts are separate daemons so that
 * they outlive the handoff-vm that started them, as the VMs on them do; this file starts them and
 * takes them down again, waiting until a daemon let go of its overlay.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include "handoff/handoff_int.h"

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
int handoff_run_prog(char *const argv[])
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

bool handoff_is_mountpoint(const char *path)
{
	struct stat a, b;
	char parent[PATH_MAX];
	fmt(parent, sizeof(parent), "%s/..", path);
	if (stat(path, &a) != 0 || stat(parent, &b) != 0)
		return false;
	return a.st_dev != b.st_dev;
}

int handoff_mount_base(const char *base, const char *ovl, const char *mnt, const char *mem_size)
{
	char disk[PATH_MAX], mem[PATH_MAX];
	fmt(disk, sizeof(disk), "%s/disk.img", base);
	fmt(mem, sizeof(mem), "%s/memory.img", base);
	if (ho_mkdir_p(mnt, 0755))
		return HO_EIO;
	char *argv[] = { (char *)tool_path("handoff-mount"), "-q", "--disk", mem_size ? (char *)base : disk,
			 mem_size ? "--memory-size" : "--memory", mem_size ? (char *)mem_size : mem,
			 (char *)ovl, (char *)mnt, NULL };
	int rc = handoff_run_prog(argv);
	if (rc)
		ho_err("cannot mount '%s' over the base in '%s'", mnt, base);
	return rc;
}

/* Unmount and wait until the daemon let go of the overlay. The daemon is asked by SIGTERM (it
 * flushes and unmounts itself), which also works when the mount lives in another mount namespace
 * (`ip netns exec` makes one); fusermount3 -u is the fallback, retried while a QEMU that just quit
 * still holds the files. */
int handoff_unmount(const char *mnt, const char *ovl)
{
	char *argv[] = { "fusermount3", "-u", (char *)mnt, NULL };
	int rc = 0, pid = 0;
	char mp[PATH_MAX];
	if (ovl && overlay_lock_holder(ovl, &pid, mp, sizeof(mp)) == 0 && pid > 0 && kill(pid, SIGTERM) != 0)
		pid = 0;
	bool asked = pid > 0;
	for (int i = 0; i < 300; i++) {
		bool mounted = handoff_is_mountpoint(mnt);
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

/* ---- the destination's mirror mount ------------------------------------------------------------------ */

int handoff_start_mirror(const char *base, const char *ovl, const char *mnt, const char *listen_addr,
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
	int rc = handoff_run_prog(argv);
	if (rc)
		ho_err("cannot start the mirror mount on '%s'", mnt);
	return rc;
}
