/*
 * export_int.h — the exporter's pieces that the TCP sender (transport.c) and the tests share:
 * the stream walk with a caller-supplied sink, the sender thread between them, modes, the sender
 * id, a throttle for tests.
 */
#ifndef HANDOFF_PIPELINE_EXPORT_INT_H
#define HANDOFF_PIPELINE_EXPORT_INT_H

#include <stdbool.h>
#include <stdint.h>
#include "pipeline/pipeline.h"
#include "pipeline/stream.h"

struct mode;
struct adapt;

struct export_mode {
	char name[STREAM_MODE_LEN];
	int codec, level;
	bool base_refs;          /* send chunks equal to their base as base references */
	const struct mode *full; /* a mode of mode.h: chunks go through the chunk encoder (delta.h) */
};

/* Parse a mode name (logged error HO_EINVAL if unknown). NULL or "" = "raw". The names of mode.h
 * (handoff-export --list-modes) come first; then "CODEC[-LEVEL]" (frame codec only). */
int export_parse_mode(const char *name, struct export_mode *m);
/* The overlay's sender id (OVERLAY_DIR/stream-sender-id, created on first use). */
int export_sender_id(const char *dir, uint8_t id[16]);
/* Generate the stream of (o->since, until] of the overlay in dir into emit. */
int export_run(const char *dir, uint32_t until, const struct export_opts *o, stream_emit_fn emit, void *arg,
	       struct export_result *res);
/* The same, driven by (and feeding) the adaptive engine ad (adapt.h), which the caller made with
 * export_adapt_new() and feeds with network observations; NULL: export_run() (which makes its
 * own engine when o->adaptive or o->progress ask for one). The sink runs on a sender thread
 * (sender_new below) except for the header; with idle_probes, the adaptive walk probes modes on
 * its newest input while it waits for that thread (the link is holding it back). */
int export_run_adapt(const char *dir, uint32_t until, const struct export_opts *o, struct adapt *ad,
		     stream_emit_fn emit, void *arg, bool idle_probes, struct export_result *res);
/* The engine for o (over the named modes of mode.h, with their measured profiles), or NULL in
 * *out when o needs none (neither adaptive nor progress, or a mode outside the table). */
int export_adapt_new(const struct export_opts *o, struct adapt **out);
/* A progress line (export_opts.progress: 1 human, 2 JSON) on stderr from ad's status, at most
 * every half second unless force; input_remaining UINT64_MAX keeps the last one. No-op without
 * ad or progress. The sender calls it while it waits for acknowledgements. */
void export_progress(struct adapt *ad, int progress, uint64_t input_remaining, uint64_t wire_bytes, bool force);

/* The sender thread (sender.c): sender_emit(s, piece), a stream_emit_fn, copies a piece into a
 * queue of at most max_queued (at least 1) that a thread of its own hands to emit(arg) in order,
 * and returns at once unless the queue is full; the header is emitted on the caller's thread,
 * after everything before it (it is first), and the end is waited for. A non-zero return of
 * emit (an error, or a positive "stop") is returned by the next sender_emit, and what is queued
 * after it is dropped. While sender_emit waits, it calls fn(arg) every 20 ms (NULL: none).
 * sender_wait waits until the sink has had everything handed over (the same hook runs) and
 * returns as sender_emit. sender_free drops what is still queued, waits for the piece being
 * emitted and returns emit's first non-zero return (0 if none). */
struct sender;
int sender_new(stream_emit_fn emit, void *arg, unsigned max_queued, struct sender **out);
void sender_set_wait(struct sender *s, void (*fn)(void *arg), void *arg);
int sender_emit(void *s, const struct stream_piece *p);
int sender_wait(struct sender *s);
int sender_free(struct sender *s);

/* After export_run(): keep what it sent (OVERLAY_DIR/sentset.next becomes sentset) when the
 * receiver applied it (or, for a file or pipe, will apply it in order), else drop it. */
void export_sent_commit(const char *dir, bool applied);
/* Forget what earlier exports sent (a receiver refused references to it). */
void export_sent_forget(const char *dir);
/* Sleep so that bytes sent so far do not exceed rate bytes/s (rate 0: no-op). */
struct export_throttle { uint64_t start_ns, bytes; };
/* Sleep so that bytes so far go at rate (0: no limit); returns early once *cancel (may be NULL) is set. */
void export_throttle(struct export_throttle *th, uint64_t rate, size_t bytes, const volatile int *cancel);

/* Connect to "HOST:PORT" with send/receive timeouts and TCP_NODELAY (transport.c). Logs why not. */
int transport_connect(const char *hostport, int timeout_ms, int *out);

#endif
