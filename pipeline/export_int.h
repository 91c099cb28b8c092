/*
 * export_int.h — the exporter's pieces that the TCP sender (transport.c) and the tests share:
 * the stream walk with a caller-supplied sink, modes, the sender id, a throttle for tests.
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
/* What the walk has to do while its sink waits on the link: the sink calls fn(arg) when it is
 * about to wait (the walk's thread is the sink's, and idle meanwhile); fn is NULL when there is
 * nothing to do (not adaptive, or the walk is over). */
struct export_idle {
	void (*fn)(void *arg);
	void *arg;
};
/* The same, driven by (and feeding) the adaptive engine ad (adapt.h), which the caller made with
 * export_adapt_new() and feeds with network observations; NULL: export_run() (which makes its
 * own engine when o->adaptive or o->progress ask for one). When idle is not NULL, the walk sets
 * it for as long as it runs (the adaptive walk probes modes on its newest input then). */
int export_run_adapt(const char *dir, uint32_t until, const struct export_opts *o, struct adapt *ad,
		     stream_emit_fn emit, void *arg, struct export_idle *idle, struct export_result *res);
/* The engine for o (over the named modes of mode.h, with their measured profiles), or NULL in
 * *out when o needs none (neither adaptive nor progress, or a mode outside the table). */
int export_adapt_new(const struct export_opts *o, struct adapt **out);
/* A progress line (export_opts.progress: 1 human, 2 JSON) on stderr from ad's status, at most
 * every half second unless force; input_remaining UINT64_MAX keeps the last one. No-op without
 * ad or progress. The sender calls it while it waits for acknowledgements. */
void export_progress(struct adapt *ad, int progress, uint64_t input_remaining, uint64_t wire_bytes, bool force);

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
