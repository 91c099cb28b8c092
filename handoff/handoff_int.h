/*
 * handoff_int.h — what the handoff/ files share among themselves and nobody else: KEY=VALUE files
 * (env.c), the sibling programs and mounts (mount.c), bases and their identity (base.c), run
 * directories and resuming a VM (run.c), the signed control connection (conn.c), the image digests
 * (digest.c), the test-only fault proxy (proxy.c) and the migrate report's layout (report.c). It
 * exists to keep handoff.h down to the entry points the tool calls.
 */
#ifndef HANDOFF_HANDOFF_INT_H
#define HANDOFF_HANDOFF_INT_H

#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>
#include "common/common.h"
#include "common/ctl.h"
#include "handoff/handoff.h"
#include "overlay/overlay.h"
#include "pipeline/pipeline.h"

struct vm;
struct vm_config;

#define HANDOFF_PROTO_VERSION 1     /* of the control protocol, handoff-vm(1) */
#define HANDOFF_LINE_MAX 1024       /* the longest control message */

/* snprintf that truncates quietly (paths are checked by the system calls that use them) */
static inline int fmt(char *buf, size_t len, const char *f, ...) __attribute__((format(printf, 3, 4)));
static inline int fmt(char *buf, size_t len, const char *f, ...)
{
	va_list ap;
	va_start(ap, f);
	int n = vsnprintf(buf, len, f, ap);
	va_end(ap);
	return n;
}

static inline double secs(uint64_t ns) { return (double)ns / 1e9; }

/* ---- errors of vm/ (run.c) ---------------------------------------------------------------------- */

/* log what failed with vm/'s own words, return the ho_err */
int handoff_vm_fail(const char *what, int rc);

/* ---- KEY=VALUE files: base.env, vm.env, guest.env (env.c) -------------------------------------- */

struct env {
	int n;
	char *k[64], *v[64];
};

/* Read path (shell-like values; at most 64 keys, the rest ignored). Errors are logged. */
int handoff_env_load(const char *path, struct env *e);
void handoff_env_free(struct env *e);
/* the last value of k, or NULL */
const char *handoff_env_get(const struct env *e, const char *k);
/* the same, but NULL (logged: "no K in 'FILE'") also when it is empty */
const char *handoff_env_need(const struct env *e, const char *k, const char *file);
/* append KEY='VALUE' (single-quoted for the shell) to a growing buffer (*buf malloc'd; left as it
 * was when out of memory) */
void handoff_env_put(char **buf, size_t *len, const char *k, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

/* ---- processes: the sibling tools, fusermount3 (mount.c) ---------------------------------------- */

/* run argv, wait; 0 if it exited 0, else HO_ECHILD (its exit status logged) */
int handoff_run_prog(char *const argv[]);
bool handoff_is_mountpoint(const char *path);
/* handoff-mount MNT over the base images in BASE (disk.img, memory.img) with overlay OVL; with
 * mem_size, BASE is the disk image and the memory base is all-zero of that size */
int handoff_mount_base(const char *base, const char *ovl, const char *mnt, const char *mem_size);
/* unmount MNT and wait until the daemon let go of the overlay OVL (may be NULL) */
int handoff_unmount(const char *mnt, const char *ovl);
/* handoff-mirror MNT over the base images in BASE, its stream listener on listen_addr, the bound
 * port written to port_file */
int handoff_start_mirror(const char *base, const char *ovl, const char *mnt, const char *listen_addr,
			 const char *keyfile, const char *port_file);

/* ---- bases (base.c) ----------------------------------------------------------------------------- */

struct base {
	char dir[PATH_MAX];
	struct env env;
	char kernel[PATH_MAX], initrd[PATH_MAX], devstate[PATH_MAX];
	const char *cmdline, *machine;
	unsigned ram_mb, cpus;
	uint8_t digest[OVERLAY_NIMAGES][HO_SHA256_LEN];
	uint64_t size[OVERLAY_NIMAGES];
};

/* read DIR/base.env; b->env holds its strings (handoff_env_free) */
int handoff_base_load(const char *dir, struct base *b);
/* the identity of the bases an overlay was created over (SHA-256 of their content) */
int handoff_identity_of(const char *ovl, uint8_t digest[OVERLAY_NIMAGES][HO_SHA256_LEN],
			uint64_t size[OVERLAY_NIMAGES]);
/* the overlay must be over exactly the base recorded in base.env (HO_EBASE, logged) */
int handoff_check_base(const char *ovl, const struct base *b);
/* "disk=SIZE:SHA256 memory=SIZE:SHA256", as the hello carries it */
void handoff_hex_id(const uint8_t d[OVERLAY_NIMAGES][HO_SHA256_LEN], const uint64_t s[OVERLAY_NIMAGES],
		    char *out, size_t len);
/* the VM config of base b on the mount MNT (disk and mem get its image paths, plen bytes each) */
void handoff_vm_config(const struct base *b, const char *mnt, const char *run_dir, const char *accel,
		       struct vm_config *c, char *disk, char *mem, size_t plen);

/* ---- run directories, resuming (run.c) ---------------------------------------------------------- */

/* OVL.run (trailing slashes of ovl dropped) */
void handoff_default_run_dir(const char *ovl, char *out, size_t len);
/* record the VM in RUN/vm.env (VM_ROLE, VM_BASE, VM_OVERLAY, VM_MOUNT, VM_QEMU_PID) */
int handoff_write_vm_env(const char *run, const char *role, const char *base, const char *ovl,
			 const char *mnt, pid_t pid);

/* What must hold before a VM resumes here, checked while QEMU starts and loads its device state
 * (see handoff_resume_on_mount); 0 to go on, or the error (the check told the source itself). */
struct resume_gate { int (*check)(struct resume_gate *g); bool told; };

/* start QEMU -incoming on MNT, load the device state, pass the gate (if any), cont; *out keeps
 * the handle */
int handoff_resume_on_mount(const struct base *b, const char *mnt, const char *run, const char *accel,
			    const char *devstate, struct vm **out, uint64_t *t_running, struct resume_gate *gate);

/* ---- the control connection (conn.c) ------------------------------------------------------------ */

struct conn {
	int fd;
	size_t len;               /* buffered bytes in buf */
	char buf[65536];
	uint8_t peer_nonce[16];   /* what our MACs cover, so the peer knows they are fresh */
	uint8_t my_nonce[16];
	const uint8_t *key;       /* pre-shared key, NULL: unauthenticated ("mac=-") */
	size_t key_len;
};

/* one line without its newline; HO_ECONN at end of input, HO_ETIMEDOUT */
int handoff_conn_line(struct conn *c, char *line, size_t max, int timeout_ms);
/* exactly n bytes (after a line that announced them) */
int handoff_conn_bytes(struct conn *c, void *dst, size_t n, int timeout_ms);
/* send one line (the newline is added); HO_ECONN */
int handoff_conn_send(struct conn *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* send "TEXT mac=HEX" (MAC over the peer's nonce and TEXT) */
int handoff_conn_send_signed(struct conn *c, const char *text);
/* split "TEXT mac=HEX" and check it against our nonce; line is cut at " mac=" */
int handoff_conn_check(struct conn *c, char *line);
/* connect to HOST:PORT, retrying refused connections until timeout_ms; TCP_NODELAY */
int handoff_tcp_connect(const char *hostport, int timeout_ms, int *out);

/* ---- image digests (digest.c) ------------------------------------------------------------------- */

/* ask the mount daemon of ovl to read the base for the digests now (in the background); verify:
 * "none" (nothing), "memory", "all" */
void handoff_digests_prepare(const char *ovl, const char *verify);

/* the digests on a thread, so that the hashing overlaps other work of the downtime (the final
 * round on the source, QEMU's start and device-state load on the destination) */
struct digest_task { const char *ovl; bool all; char out[HO_CTL_LINE]; int rc; pthread_t th; bool started, joined; };
void handoff_digest_start(struct digest_task *t, const char *ovl, bool all);
/* the digests (in t->out), or the error; runs them here if the thread could not start; again:
 * the same */
int handoff_digest_join(struct digest_task *t);

/* ---- test-only fault injection (proxy.c) -------------------------------------------------------- */

struct proxy {
	int listen_fd;
	char target[300];
	volatile int corrupt;        /* flip bytes of connections made while set */
	pthread_t thread;
	int stop_pipe[2];
};

/* forward 127.0.0.1:ANY (into addr) to target, on a thread */
int handoff_proxy_start(struct proxy *px, const char *target, char *addr, size_t len);
void handoff_proxy_stop(struct proxy *px);

/* ---- the migrate report (report.c) -------------------------------------------------------------- */

struct round {
	bool live;
	uint32_t since, until;
	uint64_t chunks[2], input_bytes, wire_bytes, ns, held_ns;
};

/* A live round's fate (migrate.c, --abandon-live): abandon it when the guest, since the round
 * sent its first chunk, has rewritten more chunks (rewritten_sending) than the round sent since
 * (sent), or when the chunks rewritten since the round's checkpoint (rewritten) are more than
 * fraction of those it sends (chunks); never with fraction 0. Pure, for the tests. */
bool handoff_live_abandon(uint64_t rewritten, uint64_t rewritten_sending, uint64_t sent, uint64_t chunks,
			  double fraction);

struct handoff_report {
	struct round r[HANDOFF_MAX_ROUNDS];
	int n;
	bool postcopy;                                  /* the last round went after the resume */
	uint64_t pc_chunks, pc_manifest_bytes, t_pc_done, pc_stream_ns, pc_held_ns;
	struct postcopy_stats pc;
	uint64_t t_start, t_pause, t_devstate, t_final_done, t_confirm, t_end;   /* source realtime ns */
	uint64_t t_dst_running;                                                   /* in source time */
	int64_t clock_offset;                                                     /* dst - src */
	uint64_t rtt_ns, devstate_bytes;
	bool paused, handed_off;
	/* a live round abandoned (--postcopy auto): after abandoned_ns, the guest had rewritten
	 * abandoned_rewritten chunks while the round sent abandoned_sent of its abandoned_chunks;
	 * abandoned_ns is 0 when none was */
	uint64_t abandoned_ns, abandoned_chunks, abandoned_rewritten, abandoned_sent;
};

#endif
