/*
 * handoff.h — the handoff module's public face for tools/handoff-vm: a real VM handoff end to
 * end. `handoff_base_create` boots a guest on a fresh mount, lets it settle, pauses it and records
 * disk + memory + device state as a base both cloudlets hold; `handoff_start` resumes that base
 * snapshot on a handoff-mount over it; `handoff_migrate` (source) and `handoff_receive`
 * (destination) hand the running VM over: live export rounds into the destination's
 * handoff-mirror, pause, final round (or post-copy), device state over a small signed control
 * protocol (handoff-vm(1)), resume there. It joins vm/ (QEMU over QMP), pipeline/ (export,
 * post-copy) and overlay/ (base identity); the mounts are the handoff-mount and handoff-mirror
 * programs, found beside the running executable or on PATH.
 *
 * Conventions: every entry point returns an enum handoff_outcome, the result a caller acts on
 * (the tool maps it onto handoff-vm(1)'s exit statuses); the reason of a failure is logged with
 * ho_log (call ho_log_init first), nothing goes to stdout. The pre-shared key travels in the
 * option structs: the module keeps no global state. Entry points run one step of a handoff on the
 * calling thread (with helper threads and child processes of their own) and are not meant to run
 * concurrently in one process. The caller must ignore SIGPIPE: a peer that hangs up must give
 * an error, not end the process.
 */
#ifndef HANDOFF_HANDOFF_H
#define HANDOFF_HANDOFF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* What came of a call: which side runs the VM now. */
enum handoff_outcome {
	HANDOFF_OK = 0,
	HANDOFF_FAILED,            /* failed; nothing was paused (a source VM keeps running) */
	HANDOFF_BASE_MISMATCH,     /* the bases differ: refused before anything was paused */
	HANDOFF_RESUMED,           /* migrate: the handoff failed; the source VM was resumed and runs */
	HANDOFF_LOST,              /* migrate: the handoff failed and the source VM could not be resumed */
	HANDOFF_VERIFY_FAILED,     /* receive: stream, device state or images failed verification */
};

#define HANDOFF_MAX_ROUNDS 64      /* the most export rounds one migrate makes */

/* ---- bases -------------------------------------------------------------------------------------- */

struct handoff_base_opts {
	const char *guest;         /* "tiny", "realistic" (built by guest/build-NAME.sh into
	                              ${HANDOFF_CACHE:-~/.cache/handoff}/guest-NAME/guest.env) or
	                              the path of a guest.env */
	const char *out_dir;       /* where the base goes (base.env, disk.img, memory.img, devstate,
	                              vmlinuz, initrd, console.log) */
	uint64_t ram;              /* bytes, whole MiB (the tool checks); 0: the guest's GUEST_RAM_MB,
	                              else 256 MiB */
	const char *append;        /* added to the guest's kernel command line; NULL: nothing */
	const char *accel;         /* vm_config.accel; NULL: auto */
	double settle;             /* seconds to let the guest settle after HANDOFF-READY */
	int timeout_s;             /* how long the guest may take to reach HANDOFF-READY */
	bool force;                /* replace a base already in out_dir */
};

/* Boot the guest on a fresh handoff-mount (in OUT_DIR/.create, removed afterwards unless
 * HANDOFF_VM_KEEP is set and it failed), pause it once it is ready and settled, save its device
 * state and record the images and their SHA-256 in OUT_DIR/base.env (written last, atomically).
 * HANDOFF_OK or HANDOFF_FAILED. */
enum handoff_outcome handoff_base_create(const struct handoff_base_opts *o);

/* ---- a VM on a mount over a base ---------------------------------------------------------------- */

struct handoff_start_opts {
	const char *base_dir;      /* a base (handoff_base_create) */
	const char *overlay;       /* the overlay directory of the handoff-mount (created if new) */
	const char *mount;         /* its mountpoint (created if missing) */
	const char *accel;         /* NULL: auto */
	const char *run_dir;       /* QEMU's sockets and logs, vm.env; NULL: OVERLAY.run */
};

/* Mount the overlay over the base, check that it is over exactly that base, resume the base's
 * snapshot there (QEMU detached: it outlives this process) and record it in RUN_DIR/vm.env.
 * HANDOFF_OK, HANDOFF_BASE_MISMATCH (the overlay is over another base; unmounted again) or
 * HANDOFF_FAILED (unmounted again if it got as far as mounting). */
enum handoff_outcome handoff_start(const struct handoff_start_opts *o);

/* Quit the QEMU of run_dir (if it still runs) and unmount the mount named in RUN_DIR/vm.env.
 * HANDOFF_OK, or HANDOFF_FAILED (no vm.env, or the unmount failed). */
enum handoff_outcome handoff_stop(const char *run_dir);

/* ---- the handoff -------------------------------------------------------------------------------- */

/* What both sides compare before the destination resumes (--verify): the digests the mount
 * daemons compute of the memory image, or of both images. */
enum handoff_verify { HANDOFF_VERIFY_NONE, HANDOFF_VERIFY_MEMORY, HANDOFF_VERIFY_ALL };
/* When the last round goes after the destination resumed (--postcopy): AUTO when the live rounds
 * do not converge to about the downtime target. */
enum handoff_postcopy { HANDOFF_POSTCOPY_AUTO, HANDOFF_POSTCOPY_NEVER, HANDOFF_POSTCOPY_ALWAYS };
/* Test-only fault injection (--fault); the tool accepts each where handoff-vm(1) says. */
enum handoff_fault {
	HANDOFF_FAULT_NONE,
	HANDOFF_FAULT_CORRUPT_FINAL,      /* migrate: a proxy corrupts the final round's stream */
	HANDOFF_FAULT_WRONG_DIGEST,       /* migrate: send a wrong memory digest */
	HANDOFF_FAULT_CORRUPT_POSTCOPY,   /* migrate: post-copy, and a proxy corrupts its stream */
	HANDOFF_FAULT_SLOW_POSTCOPY,      /* migrate: post-copy with the stream at 8 kB/s */
	HANDOFF_FAULT_DIE_AFTER_DEVSTATE, /* receive: _exit(9) once the device state arrived */
};

/* The names handoff-vm(1) uses: "none", "memory", "all" (also what the control protocol's
 * verify= carries); a fault's --fault name, NULL for HANDOFF_FAULT_NONE. Static strings. */
const char *handoff_verify_name(enum handoff_verify v);
const char *handoff_fault_name(enum handoff_fault f);

struct handoff_migrate_opts {
	const char *run_dir;       /* the source VM's run directory (handoff_start's, or the one a
	                              handoff_receive resumed it in) */
	const char *to;            /* HOST:PORT of the destination's handoff_receive */
	const uint8_t *key;        /* pre-shared key: signs the control messages and authenticates
	                              the streams and the chunk server; NULL: unauthenticated */
	size_t key_len;
	const char *mode;          /* export mode (handoff-export(1)); NULL or "adaptive": adapt */
	unsigned threads;          /* export threads (0 = 1) */
	uint64_t rate_limit;       /* bytes per second on the wire, 0 = unlimited (testing) */
	int max_rounds;            /* 1..HANDOFF_MAX_ROUNDS: live rounds end at max_rounds - 1
	                              (1: none, the VM is paused at once) */
	int downtime_target_ms;    /* live rounds end once one takes no longer than this */
	int timeout_s;             /* connect and acknowledgement timeout, >= 1 */
	bool keep_source;          /* leave the source's (paused) QEMU and mount after a handoff */
	enum handoff_verify verify;
	enum handoff_postcopy postcopy;
	double abandon_live;       /* with postcopy AUTO: abandon a live round, pause and post-copy
	                              everything once the guest rewrote more than this fraction of
	                              the chunks the round sends (0: never) */
	enum handoff_fault fault;  /* NONE, or one of the migrate faults */
};

/* The rounds, timings and post-copy figures of one migrate (opaque). */
struct handoff_report;

/*
 * The source side: hand the VM of o->run_dir over to the destination at o->to. The destination
 * refuses a different base before anything is paused; live rounds while the VM runs; then pause,
 * device state, and the final round (the destination resumes once its images verified) or
 * post-copy (it resumes first; the source stays paused until every chunk arrived and verified).
 * Returns HANDOFF_OK (the VM runs on the destination; the source's QEMU quit and its mount is
 * gone unless keep_source), HANDOFF_FAILED (nothing was paused), HANDOFF_BASE_MISMATCH,
 * HANDOFF_RESUMED (the source VM runs on) or HANDOFF_LOST.
 * *report gets the report (free with handoff_report_free), or NULL when the migrate ended before
 * it began (no vm.env in run_dir, out of memory): then there is nothing to report.
 */
enum handoff_outcome handoff_migrate(const struct handoff_migrate_opts *o, struct handoff_report **report);

/* Print a migrate's report on f: json false: a line per round and a summary, as handoff-vm
 * prints them on standard error (nothing before a round completed); json true: the --report
 * document of handoff-vm(1). */
void handoff_report_print(const struct handoff_report *r, FILE *f, bool json);
/* NULL is fine. */
void handoff_report_free(struct handoff_report *r);

struct handoff_receive_opts {
	const char *base_dir;      /* the base this cloudlet holds (the same as the source's) */
	const char *overlay;       /* the mirror's overlay directory */
	const char *mount;         /* its mountpoint */
	const char *listen;        /* ADDR:PORT of the control connection (PORT 0: any); the mirror's
	                              stream listener gets PORT+1 (any when 0). Must be
	                              valid for transport_split_hostport (the tool checks) */
	const char *key_file;      /* handed to the handoff-mirror (--key); NULL: none */
	const uint8_t *key;        /* its content, for the control connection; NULL: none */
	size_t key_len;
	const char *run_dir;       /* NULL: OVERLAY.run */
	const char *accel;         /* NULL: auto */
	const char *port_file;     /* write the bound control port here once listening; NULL: no */
	int timeout_s;             /* how long to wait for the source (and for each of its
	                              messages); 0: for ever (messages: an hour) */
	enum handoff_fault fault;  /* NONE or HANDOFF_FAULT_DIE_AFTER_DEVSTATE */
};

/*
 * The destination side: start the mirror mount over the base, wait for one source, refuse it if
 * its base differs, take its rounds, and resume the VM here from its device state (after the
 * images verified, or at once for post-copy with the mirror holding back every chunk still to
 * come). Returns HANDOFF_OK once the VM runs here (recorded in RUN_DIR/vm.env, QEMU detached, the
 * mirror left mounted), HANDOFF_BASE_MISMATCH, HANDOFF_VERIFY_FAILED (device state, manifest,
 * images or the source's messages failed verification) or HANDOFF_FAILED; on failure the mirror
 * is unmounted and no VM is left running here.
 */
enum handoff_outcome handoff_receive(const struct handoff_receive_opts *o);

#endif
