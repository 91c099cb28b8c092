/*
 * vm.h — the guest side of handoff: start and control a QEMU process whose RAM lives in a file
 * (memory-backend-file, share=on) and whose disk is a raw file, over QMP. It exists so the rest
 * of handoff can pause a VM, save only its device state (migration with x-ignore-shared: the RAM
 * stays in the shared file), and resume it elsewhere from the same memory and disk files.
 *
 * Conventions: handles are opaque; functions return 0 (or a count) or a negative enum vm_err;
 * diagnostics go to stderr (never stdout), prefixed "vm: "; HANDOFF_VM_DEBUG=1 also logs QMP
 * traffic. Nothing here is thread-safe per handle; distinct handles are independent.
 */
#ifndef HANDOFF_VM_H
#define HANDOFF_VM_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

/* ---- errors (to be mapped onto common's enum ho_err by the lead) --------------------------- */

enum vm_err {
	VM_OK         = 0,
	VM_EINVAL     = -1,   /* invalid argument or configuration */
	VM_ENOMEM     = -2,   /* out of memory */
	VM_EIO        = -3,   /* I/O or system call error (errno logged where it happened) */
	VM_ENOENT     = -4,   /* no such file, key or object */
	VM_ESPAWN     = -5,   /* QEMU could not be started */
	VM_EEXITED    = -6,   /* QEMU exited (unexpectedly) */
	VM_ECONN      = -7,   /* QMP connection refused or lost */
	VM_ETIMEDOUT  = -8,   /* timed out */
	VM_EPROTO     = -9,   /* malformed QMP message */
	VM_EQMP       = -10,  /* QMP command returned an error (its class and desc are logged) */
	VM_EMIGRATE   = -11,  /* migration (device state save/load) failed */
	VM_ESTATE     = -12,  /* not valid in the VM's current state */
	VM_ELIMIT     = -13,  /* a size limit was exceeded (message, buffer) */
	VM_ERR_MIN    = -13,
};

/* A static, lower-case description; "unknown error" outside the enum. */
const char *vm_strerror(int err);

/* ---- starting QEMU ---------------------------------------------------------------------------- */

struct vm_config {
	const char *qemu;        /* binary; NULL: $HANDOFF_QEMU or "qemu-system-x86_64" (via PATH) */
	const char *accel;       /* "tcg", "kvm"; NULL or "auto": kvm if vm_kvm_works(), else tcg */
	const char *machine;     /* NULL: "pc" (must match on both ends of a handoff) */
	const char *kernel;      /* required: direct kernel boot */
	const char *initrd;      /* optional */
	const char *append;      /* kernel command line, optional */
	const char *disk;        /* raw image as virtio-blk (/dev/vda), optional */
	const char *disk_format; /* NULL: "raw" */
	const char *disk_opts;   /* extra -drive options, e.g. "cache=none,aio=native"; optional */
	const char *mem_path;    /* RAM in this file, mmap'ed MAP_SHARED (created by QEMU if
	                          * missing); NULL: anonymous RAM (no x-ignore-shared handoff) */
	unsigned mem_mb;         /* 0: 256 */
	unsigned cpus;           /* 0: 1 */
	const char *run_dir;     /* required, must exist: qmp.sock, serial.log, qemu.log, qemu.pid
	                          * (and ttyS1.sock) are made here; keep it short (unix socket path
	                          * limit of 107 bytes) */
	const char *serial_log;  /* guest console (ttyS0) log; NULL: RUN_DIR/serial.log (truncated) */
	bool cmd_port;           /* add a second serial port (ttyS1) as unix socket RUN_DIR/ttyS1.sock
	                          * (server; the tiny guest reads "check" requests from it) */
	bool incoming;           /* -incoming defer: wait for vm_migrate_incoming/vm_load_device_state */
	bool paused;             /* -S: do not start the CPUs until vm_cont() */
	bool detach;             /* QEMU outlives this process: own session, no parent-death signal,
	                          * and vm_close() leaves it running */
	const char *const *extra_args; /* NULL-terminated, appended after everything else */
	int timeout_ms;          /* how long to wait for QMP to come up; 0: 30000 */
};

struct vm;                   /* opaque: one QEMU process and its QMP connection */

/* Start QEMU as configured, wait for its QMP socket, connect and negotiate capabilities. */
int vm_start(const struct vm_config *cfg, struct vm **out);
/* vm_start with cfg->incoming forced on (the destination of a handoff). */
int vm_start_incoming(const struct vm_config *cfg, struct vm **out);
/* Connect to a QEMU started earlier (e.g. detached by another process) from its run dir:
 * reads RUN_DIR/qemu.pid, connects to RUN_DIR/qmp.sock. mem_path (optional) is the RAM file to
 * fsync after saving device state. */
int vm_attach(const char *run_dir, const char *mem_path, int timeout_ms, struct vm **out);
/* Close the handle. A QEMU started by vm_start without detach is killed (SIGKILL) if it still
 * runs; a detached or attached one is left running. NULL is fine. */
void vm_close(struct vm *vm);

pid_t vm_pid(const struct vm *vm);
const char *vm_run_dir(const struct vm *vm);
const char *vm_serial_log(const struct vm *vm);   /* guest console log path */
const char *vm_qmp_socket(const struct vm *vm);
const char *vm_cmd_socket(const struct vm *vm);   /* RUN_DIR/ttyS1.sock (exists with cmd_port) */
/* Per-operation timeout for QMP commands, migrations and quit (default 60000 ms). */
void vm_set_timeout(struct vm *vm, int timeout_ms);
/* Has QEMU exited? If so and it was our child, *status (may be NULL) gets its wait status. */
bool vm_exited(struct vm *vm, int *status);

/* ---- QMP ------------------------------------------------------------------------------------ */

/* Execute a QMP command with arguments given as JSON object text (NULL or "" for none), wait
 * for its reply, skipping (and remembering) events. On success 0 and, if reply is not NULL,
 * *reply is the malloc'd JSON text of the "return" value. A QMP error logs its class and desc
 * and returns VM_EQMP (desc also in *reply as a JSON string, when reply is not NULL). */
int vm_qmp(struct vm *vm, const char *command, const char *args_json, char **reply);
/* printf-style arguments: vm_qmpf(vm, "migrate", &r, "{\"uri\":%s}", quoted). */
int vm_qmpf(struct vm *vm, const char *command, char **reply, const char *args_fmt, ...)
	__attribute__((format(printf, 4, 5)));
/* Wait for an event named `event` (optionally whose data.`key` is the string `value`, e.g.
 * "MIGRATION", "status", "completed"). Events received since the last call that matched are
 * looked at first (they are consumed when returned). *event_json (may be NULL) gets the whole
 * malloc'd event. VM_ETIMEDOUT, VM_ECONN if QEMU went away. */
int vm_wait_event(struct vm *vm, const char *event, const char *key, const char *value,
		  int timeout_ms, char **event_json);

/* ---- helpers -------------------------------------------------------------------------------- */

int vm_pause(struct vm *vm);                       /* "stop"; 0 if already paused */
int vm_cont(struct vm *vm);                        /* "cont" */
/* query-status: status ("running", "paused", "inmigrate", "postmigrate", ...) into buf. */
int vm_query_status(struct vm *vm, char *buf, size_t len, bool *running);
/* Poll query-status until it equals `status` or timeout. */
int vm_wait_status(struct vm *vm, const char *status, int timeout_ms);

/* Migrate to a QEMU migration URI ("exec:...", "unix:...", "fd:..."), with x-ignore-shared on
 * when the RAM is in a file, and wait until it completes (VM_EMIGRATE if it fails). The VM ends
 * paused (postmigrate). Then fsyncs the memory file. */
int vm_migrate(struct vm *vm, const char *uri);
/* Save device state only to path (x-ignore-shared + "exec:cat > path"), fsync path and the
 * memory file. The VM must run with mem_path. Returns the size of the state (> 0) or error. */
long long vm_save_device_state(struct vm *vm, const char *path);
/* On a VM started with vm_start_incoming: load migration state from uri / from path, wait until
 * loaded. The VM is then paused if it was paused when saved (call vm_cont), running otherwise. */
int vm_migrate_incoming(struct vm *vm, const char *uri);
int vm_load_device_state(struct vm *vm, const char *path);

/* "quit" and wait for QEMU to exit (SIGKILL after the timeout). */
int vm_quit(struct vm *vm);
/* SIGKILL and wait; removes the pid file QEMU could not remove itself. */
int vm_kill(struct vm *vm);

/* Wait until a line of the guest console log contains needle; copy the last such line (without
 * line ending) into line (may be NULL). VM_ETIMEDOUT; VM_EEXITED if QEMU exited first. */
int vm_wait_serial(struct vm *vm, const char *needle, int timeout_ms, char *line, size_t len);
/* Send one line (a newline is added) to the guest's second serial port (cfg.cmd_port). */
int vm_send_cmd(struct vm *vm, const char *line);
/* Read one line (without line ending) the guest wrote to the second serial port since the last
 * vm_send_cmd. VM_ETIMEDOUT; VM_ECONN if not connected (call vm_send_cmd first). */
int vm_recv_cmd_line(struct vm *vm, char *line, size_t len, int timeout_ms);

/* ---- environment ----------------------------------------------------------------------------- */

/* True only if KVM really boots a Linux guest here: /dev/kvm opens, and a Linux kernel
 * ($HANDOFF_KVM_PROBE_KERNEL, else the newest readable /boot/vmlinuz-*) started with -accel kvm
 * reaches its root-mount panic on the serial console within a few seconds. The answer is cached
 * for the process and in ${HANDOFF_CACHE:-~/.cache/handoff}/kvm-probe for this host boot. False
 * when nothing can be tested (TCG is then the safe default). HANDOFF_ACCEL=tcg|kvm overrides. */
bool vm_kvm_works(void);
/* The accelerator "auto" resolves to: "kvm" or "tcg". */
const char *vm_default_accel(void);

#endif
