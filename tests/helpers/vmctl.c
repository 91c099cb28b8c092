/*
 * vmctl.c — a command-line face of the vm module (libvm), one subcommand per function, with
 * the VM identified by its run directory. It exists so shell tests and demos can start a QEMU
 * (detached), pause it, save and load its device state and quit it through the same C code the
 * handoff tools use. It lives in tests/helpers/, so the Makefile builds it as build/tests/vmctl
 * and it is not part of libvm.a.
 *
 * Results go to stdout (one value or JSON text), diagnostics to stderr. Exit 0 on success,
 * 1 on failure, 2 on usage errors.
 */
#include "vm/vm.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static void usage(FILE *f)
{
	fputs("usage: vmctl COMMAND RUN_DIR [ARGS]\n"
	      "  start RUN_DIR --kernel K [--initrd I] [--append A] [--disk F] [--disk-format raw]\n"
	      "        [--disk-opts O] [--mem-file M] [--mem-mb N] [--cpus N] [--accel tcg|kvm|auto]\n"
	      "        [--machine pc] [--incoming] [--paused] [--cmd-port] [--serial-log F]\n"
	      "        [--qemu BIN] [--timeout MS] [-- QEMU_ARGS...]   start detached (creates RUN_DIR); prints the pid\n"
	      "  qmp RUN_DIR COMMAND [ARGS_JSON]     run a QMP command; prints its return value\n"
	      "  status RUN_DIR                      prints the run state (running, paused, ...)\n"
	      "  pause RUN_DIR | cont RUN_DIR\n"
	      "  wait-status RUN_DIR STATUS [TIMEOUT_MS]\n"
	      "  save RUN_DIR FILE [MEM_FILE]        save device state (x-ignore-shared); prints bytes\n"
	      "  load RUN_DIR FILE                   load device state into an --incoming VM\n"
	      "  quit RUN_DIR | kill RUN_DIR\n"
	      "  wait-serial RUN_DIR TEXT [TIMEOUT_MS]  prints the last console line containing TEXT\n"
	      "  send RUN_DIR LINE [TIMEOUT_MS]      write LINE to ttyS1 (--cmd-port); prints the reply line\n"
	      "  kvm-works                           prints yes or no (exit 0 or 1)\n"
	      "Global options (before COMMAND): -t MS operation timeout (default 60000)\n",
	      f);
}

static int fail(const char *what, int rc)
{
	fprintf(stderr, "vmctl: %s: %s\n", what, vm_strerror(rc));
	return 1;
}

static int cmd_start(const char *run_dir, int argc, char **argv)
{
	struct vm_config c = { .run_dir = run_dir, .detach = true };
	enum { O_KERNEL = 256, O_INITRD, O_APPEND, O_DISK, O_DISKFMT, O_DISKOPTS, O_MEM, O_MEMMB,
	       O_CPUS, O_ACCEL, O_MACHINE, O_INCOMING, O_PAUSED, O_CMDPORT, O_SERIAL, O_QEMU, O_TIMEOUT };
	static const struct option opts[] = {
		{ "kernel", required_argument, NULL, O_KERNEL },
		{ "initrd", required_argument, NULL, O_INITRD },
		{ "append", required_argument, NULL, O_APPEND },
		{ "disk", required_argument, NULL, O_DISK },
		{ "disk-format", required_argument, NULL, O_DISKFMT },
		{ "disk-opts", required_argument, NULL, O_DISKOPTS },
		{ "mem-file", required_argument, NULL, O_MEM },
		{ "mem-mb", required_argument, NULL, O_MEMMB },
		{ "cpus", required_argument, NULL, O_CPUS },
		{ "accel", required_argument, NULL, O_ACCEL },
		{ "machine", required_argument, NULL, O_MACHINE },
		{ "incoming", no_argument, NULL, O_INCOMING },
		{ "paused", no_argument, NULL, O_PAUSED },
		{ "cmd-port", no_argument, NULL, O_CMDPORT },
		{ "serial-log", required_argument, NULL, O_SERIAL },
		{ "qemu", required_argument, NULL, O_QEMU },
		{ "timeout", required_argument, NULL, O_TIMEOUT },
		{ NULL, 0, NULL, 0 },
	};
	optind = 1;
	int o;
	while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (o) {
		case O_KERNEL: c.kernel = optarg; break;
		case O_INITRD: c.initrd = optarg; break;
		case O_APPEND: c.append = optarg; break;
		case O_DISK: c.disk = optarg; break;
		case O_DISKFMT: c.disk_format = optarg; break;
		case O_DISKOPTS: c.disk_opts = optarg; break;
		case O_MEM: c.mem_path = optarg; break;
		case O_MEMMB: c.mem_mb = (unsigned)strtoul(optarg, NULL, 10); break;
		case O_CPUS: c.cpus = (unsigned)strtoul(optarg, NULL, 10); break;
		case O_ACCEL: c.accel = optarg; break;
		case O_MACHINE: c.machine = optarg; break;
		case O_INCOMING: c.incoming = true; break;
		case O_PAUSED: c.paused = true; break;
		case O_CMDPORT: c.cmd_port = true; break;
		case O_SERIAL: c.serial_log = optarg; break;
		case O_QEMU: c.qemu = optarg; break;
		case O_TIMEOUT: c.timeout_ms = atoi(optarg); break;
		default: usage(stderr); return 2;
		}
	}
	c.extra_args = (const char *const *)(argv + optind);
	if (mkdir(run_dir, 0755) != 0 && errno != EEXIST) {
		fprintf(stderr, "vmctl: mkdir %s: %s\n", run_dir, strerror(errno));
		return 1;
	}
	struct vm *vm;
	int rc = vm_start(&c, &vm);
	if (rc)
		return fail("start", rc);
	printf("%d\n", (int)vm_pid(vm));
	vm_close(vm);
	return 0;
}

int main(int argc, char **argv)
{
	int timeout = 0, i = 1;
	if (i + 1 < argc && strcmp(argv[i], "-t") == 0) {
		timeout = atoi(argv[i + 1]);
		i += 2;
	}
	if (i >= argc) {
		usage(stderr);
		return 2;
	}
	const char *cmd = argv[i++];
	if (strcmp(cmd, "-h") == 0 || strcmp(cmd, "--help") == 0) {
		usage(stdout);
		return 0;
	}
	if (strcmp(cmd, "kvm-works") == 0) {
		bool yes = vm_kvm_works();
		puts(yes ? "yes" : "no");
		return yes ? 0 : 1;
	}
	if (i >= argc) {
		usage(stderr);
		return 2;
	}
	const char *run_dir = argv[i++];
	int nargs = argc - i;
	char **args = argv + i;
	if (strcmp(cmd, "start") == 0)
		return cmd_start(run_dir, argc - i + 1, argv + i - 1);

	const char *mem = (strcmp(cmd, "save") == 0 && nargs >= 2) ? args[1] : NULL;
	struct vm *vm;
	int rc = vm_attach(run_dir, mem, 10000, &vm);
	if (rc)
		return fail("attach", rc);
	if (timeout > 0)
		vm_set_timeout(vm, timeout);
	int ret = 0;
	char buf[4096];
	if (strcmp(cmd, "qmp") == 0 && nargs >= 1) {
		char *reply = NULL;
		rc = vm_qmp(vm, args[0], nargs >= 2 ? args[1] : NULL, &reply);
		if (reply)
			puts(reply);
		free(reply);
		ret = rc ? fail(args[0], rc) : 0;
	} else if (strcmp(cmd, "status") == 0) {
		bool running;
		rc = vm_query_status(vm, buf, sizeof(buf), &running);
		if (!rc)
			puts(buf);
		ret = rc ? fail("status", rc) : 0;
	} else if (strcmp(cmd, "wait-status") == 0 && nargs >= 1) {
		rc = vm_wait_status(vm, args[0], nargs >= 2 ? atoi(args[1]) : 60000);
		ret = rc ? fail("wait-status", rc) : 0;
	} else if (strcmp(cmd, "pause") == 0) {
		ret = (rc = vm_pause(vm)) ? fail("pause", rc) : 0;
	} else if (strcmp(cmd, "cont") == 0) {
		ret = (rc = vm_cont(vm)) ? fail("cont", rc) : 0;
	} else if (strcmp(cmd, "save") == 0 && nargs >= 1) {
		long long n = vm_save_device_state(vm, args[0]);
		if (n >= 0)
			printf("%lld\n", n);
		ret = n < 0 ? fail("save", (int)n) : 0;
	} else if (strcmp(cmd, "load") == 0 && nargs >= 1) {
		ret = (rc = vm_load_device_state(vm, args[0])) ? fail("load", rc) : 0;
	} else if (strcmp(cmd, "quit") == 0) {
		ret = (rc = vm_quit(vm)) ? fail("quit", rc) : 0;
	} else if (strcmp(cmd, "kill") == 0) {
		ret = (rc = vm_kill(vm)) ? fail("kill", rc) : 0;
	} else if (strcmp(cmd, "wait-serial") == 0 && nargs >= 1) {
		rc = vm_wait_serial(vm, args[0], nargs >= 2 ? atoi(args[1]) : 60000, buf, sizeof(buf));
		if (!rc)
			puts(buf);
		ret = rc ? fail("wait-serial", rc) : 0;
	} else if (strcmp(cmd, "send") == 0 && nargs >= 1) {
		rc = vm_send_cmd(vm, args[0]);
		if (!rc && nargs >= 2) {
			rc = vm_recv_cmd_line(vm, buf, sizeof(buf), atoi(args[1]));
			if (!rc)
				puts(buf);
		}
		ret = rc ? fail("send", rc) : 0;
	} else {
		usage(stderr);
		ret = 2;
	}
	vm_close(vm);
	return ret;
}
