/*
 * pipeline.h — the pipeline module's public face for tools/ (handoff-export, handoff-import) and
 * the mirror mount: export an overlay's changes as a handoff stream (handoff-stream(5)) to a file,
 * a pipe or a TCP receiver; import a stream into an overlay, verified completely before anything
 * is published, atomically and idempotently; serve TCP senders with acknowledgements and resume.
 *
 * The stream format itself (encoder, decoder) is in stream.h; tools need not include it.
 *
 * Errors are negative enum ho_err values; pipeline_exit_code() maps them to the exit statuses
 * documented in handoff-export(1) and handoff-import(1).
 */
#ifndef HANDOFF_PIPELINE_H
#define HANDOFF_PIPELINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct overlay;
struct tracker;

/* ---- exit statuses (shared by handoff-export and handoff-import) ---------------------------- */

enum pipeline_exit {
	PIPELINE_EXIT_OK      = 0,
	PIPELINE_EXIT_USAGE   = 1,   /* usage error or any other failure */
	PIPELINE_EXIT_REFUSED = 2,   /* refused: binary stream to a terminal */
	PIPELINE_EXIT_VERIFY  = 3,   /* corrupt, truncated, unauthenticated, out of sequence, bad digest */
	PIPELINE_EXIT_BASE    = 4,   /* base image mismatch */
	PIPELINE_EXIT_STALE   = 5,   /* stale, replayed or out-of-order stream */
	PIPELINE_EXIT_IO      = 6,   /* I/O error, no space */
	PIPELINE_EXIT_CONN    = 7,   /* connection failed or lost */
};

/* The exit status for an error (0 for 0). */
int pipeline_exit_code(int err);

/* Read a pre-shared key file (16 to 4096 bytes, used as they are). *key is malloc'd. Errors are
 * logged: HO_ENOENT, HO_EINVAL (too short or too long), HO_EIO. */
int pipeline_load_key(const char *path, uint8_t **key, size_t *len);

/* Peak resident memory of this process so far, in bytes (getrusage ru_maxrss; 0 if unknown). */
uint64_t pipeline_peak_rss(void);

/* ---- export --------------------------------------------------------------------------------- */

struct export_opts {
	uint32_t since;              /* send chunks with since < gen <= until */
	const uint8_t *key;          /* pre-shared key, NULL = unauthenticated */
	size_t key_len;
	const char *mode;            /* mode name (NULL = "raw"); see handoff-export(1) */
	unsigned threads;            /* -T (0 = 1) */
	uint32_t frame_size;         /* frame payload limit (0 = default) */
	uint64_t rate_limit;         /* bytes per second on the wire, 0 = unlimited (testing) */
	int timeout_ms;              /* TCP: connect and ack timeout (0 = 30 s) */
	int progress;                /* progress lines on stderr: 0 none, 1 human (-v), 2 JSON
	                                (--progress=json); named modes only */
	bool adaptive;               /* --adaptive: switch between the named modes as CPU and
	                                network allow (mode is then ignored) */
	bool no_history;             /* sent-refs name only chunks of this stream, not what earlier
	                                exports sent (what this one sends is still recorded) */
	bool postcopy;               /* TCP: the receiver's VM already runs (implies no_history, small
	                                frames and a small socket buffer) */
	const volatile int *cancel;  /* TCP: once *cancel is set (another thread), stop with HO_ECONN
	                                before the next frame */
	volatile uint64_t *chunks_done; /* if set: the chunks handed to the stream so far, updated after
	                                every run of them (another thread may read it) */
	bool (*skip)(void *arg, int img, uint64_t idx);   /* post-copy: leave out the chunks for which
	                                it is true when the stream reaches them (the chunk server
	                                delivered them already); NULL = none */
	void *skip_arg;
	bool (*hold)(void *arg, uint64_t now_ns);   /* post-copy: true while the stream should give
	                                the link to others (the chunk server answering the
	                                destination's VM); it waits at most 0.8 s at a time, then
	                                sends for 0.2 s; NULL = never */
	void *hold_arg;
};

struct export_result {
	uint32_t since, until;
	uint8_t id[16];
	uint64_t chunks[2];          /* chunks sent per image */
	uint64_t frames;             /* data frames */
	uint64_t input_bytes;        /* chunk bytes covered */
	uint64_t wire_bytes;         /* stream bytes written (this run) */
	uint64_t resumed_frames;     /* TCP: frames the receiver already had */
	bool already_applied;        /* TCP: the receiver had applied this stream before */
	bool history;                /* sent-refs could name chunks of earlier streams (the header's
	                                basis is set) */
	uint64_t sent_refs;          /* chunks sent as references to chunks the receiver holds */
	uint64_t peak_rss;           /* peak resident memory of the process, bytes (getrusage) */
	uint64_t held_ns;            /* TCP: time the stream gave the link way (export_opts.hold) */
};

/* Print the named modes on stdout, cheapest first ("NAME  DESCRIPTION" per line). 0 or HO_EIO. */
int export_list_modes(void);

/*
 * Resolve what the user named (an overlay directory, or the mountpoint of a handoff-mount)
 * to the overlay directory; *dir is malloc'd. HO_ENOENT (logged) if it is neither.
 */
int export_resolve_dir(const char *arg, char **dir);

/*
 * Close the open generation of the overlay in dir so it can be exported: through the mount daemon
 * when one holds the overlay (after fsync of MOUNTPOINT/disk and MOUNTPOINT/memory), otherwise
 * offline with the overlay lock. *closed gets the generation closed (everything up to it is
 * committed).
 */
int export_checkpoint(const char *dir, uint32_t *closed);
/* Only the first half of a live checkpoint: fsync MOUNTPOINT/disk and MOUNTPOINT/memory of the
 * mount holding dir (nothing when none does). 0 or the fsync's error (logged). */
int export_writeback(const char *dir);

/* An interrupted export_to_tcp() of (since, ...] left state in dir: *until gets its generation,
 * so re-running continues that stream instead of checkpointing again. HO_ENOENT if there is none
 * (or it was for another since). hostport is recorded but not compared (a receiver may come
 * back on another address). */
int export_pending(const char *dir, uint32_t since, const char *hostport, uint32_t *until);
/* Forget that state: call once the caller recorded the new generation (--gen-file), so a crash
 * in between still lets a re-run find the transfer (the receiver then answers "done"). */
void export_pending_clear(const char *dir);

/* Write the stream of (o->since, until] of the overlay in dir to fd (a file or pipe). Modes that
 * dedup against sent chunks keep, in OVERLAY_DIR/sentset, which content this export sent where,
 * so that the next export (--since until) can reference it; for a file or pipe it is kept when the
 * export completes, i.e. the streams must then be applied in order (a receiver that did not apply
 * this one refuses the next: handoff-stream(5), basis). */
int export_to_fd(const char *dir, uint32_t until, const struct export_opts *o, int fd,
		 struct export_result *res);

/* Send it to a receiver (handoff-import --listen) at "HOST:PORT", resuming where the receiver's
 * acknowledgements left off; returns once the receiver acknowledged publishing it. Records the
 * transfer in dir (see export_pending) until export_pending_clear(). The sent set (above) is kept
 * only once the receiver acknowledged publishing; a receiver that refuses references to earlier
 * streams (stale or digest error) gets the stream again without them. */
int export_to_tcp(const char *dir, uint32_t until, const struct export_opts *o, const char *hostport,
		  struct export_result *res);

/* ---- import --------------------------------------------------------------------------------- */

/* Called once per published run of chunks, after the tracker committed them: bytes
 * [off, off+len) of image img changed (the mirror invalidates its page cache there). */
typedef void (*import_published_fn)(void *arg, int img, uint64_t off, uint64_t len);

struct import_opts {
	const uint8_t *key;          /* pre-shared key, NULL = expect an unauthenticated stream */
	size_t key_len;
	bool verify_only;            /* check everything, write nothing to the overlay */
	bool keep_partial;           /* receiver: keep a partial staging file of the same stream
	                                (resume); otherwise a leftover staging file is discarded */
	bool nosync;                 /* tests only: no fdatasync per staged frame (publishing still
	                                syncs) */
	unsigned threads;            /* -T: decompress frames on this many threads (0, 1: in the
	                                caller); the result does not depend on it */
	import_published_fn published;
	void *arg;
	/* Post-copy (the mirror, while a destination VM already runs): every chunk is handed to
	 * arrive() as soon as its frame verified, in stream order (data holds its len reconstructed
	 * bytes); the callee writes it in place if it is still awaited. The stream is then not
	 * published again at the end (that would overwrite what the VM wrote since): once END
	 * verified, import_finish() only records it as applied and commits the tracker. A non-zero
	 * return fails the import. Implies starting fresh (no resume of a partial staging file). */
	int (*arrive)(void *arg, int img, uint64_t idx, const uint8_t *data, uint32_t len);
	/* With arrive: the post-copy began on a fresh overlay (nothing applied, nothing changed), so
	 * a full stream (from generation 0) is accepted although the overlay now holds changes: they
	 * are the post-copy's own arrivals and what the resumed VM wrote since. */
	bool arrive_fresh;
};

struct import_result {
	uint8_t id[16], sender[16];
	uint32_t since, until;
	char mode[16];
	uint64_t chunks[2];          /* chunks in the stream per image */
	uint64_t frames;
	bool already_applied;        /* the stream was the last one applied: nothing done */
	bool authenticated;
	bool basis;                  /* the stream's sent-refs may name chunks of earlier streams;
	                                set by transport_serve() also when it fails: a sender whose
	                                such stream was refused (HO_ESTALE, HO_EDIGEST) sends it
	                                again without them, so a receiver should wait for it */
};

struct importer;

/*
 * Finish what a crash interrupted: replay a committed journal (publish it again, idempotently)
 * and, unless keep_partial, discard a staging file. Call once after opening the overlay with
 * OVERLAY_LOCK and the tracker as writer, before serving reads (the mirror) or importing.
 */
int import_recover(struct overlay *ov, struct tracker *t, const struct import_opts *o);

/*
 * Start importing one stream into ov + t (an overlay opened with OVERLAY_LOCK and its tracker as
 * writer; with o->verify_only, OVERLAY_READONLY and TRACKER_READONLY are enough). The handles
 * stay the caller's and must outlive the importer.
 */
int import_begin(struct overlay *ov, struct tracker *t, const struct import_opts *o,
		 struct importer **out);
/* Feed stream bytes; *len gets what was consumed. 0 or the (sticky) error, logged. */
int import_feed(struct importer *im, const void *buf, size_t *len);
/* True once nothing more is wanted (END verified, or the stream was found already applied). */
bool import_done(const struct importer *im);
/* The input ended: verify it was complete, then publish (unless verify-only or already applied).
 * Nothing reaches the overlay unless the whole stream verified. */
int import_finish(struct importer *im, struct import_result *res);
/* Discard (a staging file is removed unless keep_partial). */
void import_free(struct importer *im);

/* Read fd to its end and import it (import_begin + feed + finish). */
int import_fd(struct overlay *ov, struct tracker *t, int fd, const struct import_opts *o,
	      struct import_result *res);

/* ---- TCP receiver (handoff-import --listen, the mirror mount) ------------------------------ */

/* Split "HOST:PORT" (or "[V6ADDR]:PORT") into host and port. 0, or HO_EINVAL when either part
 * is empty or does not fit (nothing logged). */
int transport_split_hostport(const char *hp, char *host, size_t hlen, char *port, size_t plen);
/* Listen on "ADDR:PORT" (PORT 0 = any; *port gets the bound one). */
int transport_listen(const char *addrport, int *listen_fd, uint16_t *port);
/* Serve one sender on conn_fd: hello, resume point, frames with acks, publish, final ack.
 * Returns 0 once the stream was published (or was already applied), else an error; the
 * connection is closed in every case. o->keep_partial is implied. */
int transport_serve(struct overlay *ov, struct tracker *t, int conn_fd, const struct import_opts *o,
		    struct import_result *res);

/* ---- post-copy (handoff-vm): the destination resumes before every chunk arrived ------------ */

/*
 * The manifest of the stream of (since, until] of the overlay in dir: which chunks it will carry
 * (runs, varint-coded), so the destination can hold back every access to them before it resumes
 * the VM. *buf is malloc'd; *nchunks (may be NULL) gets the number of chunks in it.
 */
int postcopy_manifest(const char *dir, uint32_t since, uint32_t until, uint8_t **buf, size_t *len,
		      uint64_t *nchunks);
/* Call fn for every run of a manifest, in order. nchunks[img] bounds the indexes. 0, HO_ECORRUPT
 * (malformed, out of range) or fn's error. */
int postcopy_manifest_foreach(const uint8_t *buf, size_t len, const uint64_t nchunks[2],
			      int (*fn)(void *arg, int img, uint64_t idx, uint64_t count), void *arg);

/*
 * The source's chunk server: connects to the destination mirror's listener at hostport and, on a
 * thread, answers its requests for chunks of the manifest from the overlay in dir (each request
 * also sends a few following chunks of the same run), authenticated with key (HMAC-SHA-256 over
 * the receiver's nonce and the record) or checksummed (XXH3) without one. Runs until stopped.
 */
struct postcopy_server;
int postcopy_server_start(const char *dir, const uint8_t *manifest, size_t mlen, const uint8_t *key,
			  size_t key_len, const char *hostport, int timeout_ms, struct postcopy_server **out);
struct postcopy_stats { uint64_t requests, chunks, bytes; };
/* Stop it (closes the connection); *st (may be NULL) gets what it served. */
void postcopy_server_stop(struct postcopy_server *s, struct postcopy_stats *st);
/* True once chunk idx of img was written whole to the destination (any thread; for
 * export_opts.skip, with s as its arg). */
bool postcopy_server_sent(void *s, int img, uint64_t idx);
/* True while the chunk server is answering: a request came in the last 100 ms, or its answers
 * are not all acknowledged by the destination's TCP yet (any thread; for export_opts.hold, with
 * s as its arg: the VM on the destination waits for those answers, the stream can wait). */
bool postcopy_server_busy(void *s, uint64_t now_ns);

/* The destination: true if an accepted connection opens with the chunk server's greeting (only
 * peeks; waits up to timeout_ms for the first bytes). */
bool postcopy_is_server(int conn_fd, int timeout_ms);
/* Serve such a connection until it closes (0) or fails (ov: the mirror's overlay, for its bases):
 * sends the nonce, calls ready(arg) — from
 * then on requests may be sent with postcopy_request() on the same fd from other threads (the
 * caller serialises them) — and hands every verified chunk to fn. */
typedef int (*postcopy_chunk_fn)(void *arg, int img, uint64_t idx, const uint8_t *data, uint32_t len);
int postcopy_receive(int conn_fd, struct overlay *ov, const uint8_t *key, size_t key_len,
		     void (*ready)(void *arg), postcopy_chunk_fn fn, void *arg);
int postcopy_request(int conn_fd, int img, uint64_t idx);

#endif
