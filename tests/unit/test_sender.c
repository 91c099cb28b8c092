/*
 * test_sender.c — the export's sender thread (sender.c): pieces reach the sink in order and
 * intact although the caller's buffer is reused at once; the header goes out on the caller's
 * thread; the caller runs ahead of a slow sink by the queue and no further, running its wait
 * hook meanwhile; the end (and sender_wait) waits for the sink; a sink's error (or positive stop) comes back from
 * a later call and drops what was queued; freeing with pieces queued drops them.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "common/common.h"
#include "pipeline/export_int.h"
#include "tests/unit/tap.h"

struct sink {
	pthread_t caller;
	bool header_on_caller;
	atomic_uint got;
	unsigned fail_at, bad;
	int fail_rc;
	uint64_t seqs[64];
	unsigned delay_us;
	atomic_uint in_sink;          /* pieces handed to the sink so far (counted on entry) */
};

static int sink_emit(void *arg, const struct stream_piece *p)
{
	struct sink *k = arg;

	atomic_fetch_add(&k->in_sink, 1);
	if (p->kind == STREAM_EMIT_HEADER) {
		k->header_on_caller = pthread_equal(pthread_self(), k->caller);
		return 0;
	}
	if (k->delay_us)
		usleep(k->delay_us);
	for (size_t i = 0; i < p->len; i++)
		if (p->buf[i] != (uint8_t)(p->seq * 7 + i))
			k->bad++;
	unsigned n = atomic_load(&k->got);
	if (n < 64)
		k->seqs[n] = p->kind == STREAM_EMIT_END ? 1000 : p->seq;
	atomic_store(&k->got, n + 1);
	if (k->fail_at && n + 1 == k->fail_at)
		return k->fail_rc;
	return 0;
}

static unsigned waits;
static void on_wait(void *arg)
{
	(void)arg;
	waits++;
}

static int send_one(struct sender *s, uint8_t *buf, enum stream_emit_kind kind, uint64_t seq, size_t len)
{
	for (size_t i = 0; i < len; i++)
		buf[i] = (uint8_t)(seq * 7 + i);
	struct stream_piece p = { .kind = kind, .seq = seq, .buf = buf, .len = len, .input_bytes = len };
	int rc = sender_emit(s, &p);
	memset(buf, 0xee, len);        /* the caller reuses its buffer at once */
	return rc;
}

int main(void)
{
	uint8_t *buf = malloc(1 << 20);
	struct sender *s;
	int rc;

	{
		struct sink k = { .caller = pthread_self(), .delay_us = 20000 };
		bool order = true;
		is_int(sender_new(sink_emit, &k, 1, &s), 0, "a sender");
		sender_set_wait(s, on_wait, NULL);
		is_int(send_one(s, buf, STREAM_EMIT_HEADER, 0, 64), 0, "the header");
		ok(k.header_on_caller, "  ... went out on the caller's thread");
		uint64_t t0 = ho_mono_ns();
		rc = 0;
		for (uint64_t i = 0; i < 20 && !rc; i++) {
			rc = send_one(s, buf, STREAM_EMIT_FRAME, i, 1000 + 37 * i);
			/* one in the sink, one queued: the caller is never further ahead */
			unsigned n = atomic_load(&k.in_sink) - 1;
			if (i + 1 > n + 2)
				order = false;
		}
		is_int(rc, 0, "20 frames into a sink that takes 20 ms each");
		ok(order, "  ... the caller never ran more than the queue ahead of the sink");
		unsigned got = atomic_load(&k.got);
		ok(got < 20, "  ... and returned before the sink had them all (%u)", got);
		ok(waits > 0, "  ... running its wait hook while the queue was full (%u calls)", waits);
		is_int(sender_wait(s), 0, "waited for the sink");
		is_int(atomic_load(&k.got), 20, "  ... which then had every frame");
		is_int(send_one(s, buf, STREAM_EMIT_END, 20, 100), 0, "the end");
		is_int(atomic_load(&k.got), 21, "  ... returned once the sink had everything");
		ok(ho_mono_ns() - t0 >= 20ull * 20000000, "  ... after the sink's time");
		for (unsigned i = 0; i < 20; i++)
			if (k.seqs[i] != i)
				order = false;
		ok(order && k.seqs[20] == 1000, "  ... in order");
		is_int(k.bad, 0, "  ... every byte as it was handed over");
		is_int(sender_free(s), 0, "freed, no error");
	}
	{
		struct sink k = { .caller = pthread_self(), .fail_at = 3, .fail_rc = HO_ECONN, .delay_us = 5000 };
		is_int(sender_new(sink_emit, &k, 1, &s), 0, "a sender whose sink fails on the third frame");
		rc = 0;
		unsigned calls = 0;
		for (uint64_t i = 0; i < 50 && !rc; i++, calls++)
			rc = send_one(s, buf, STREAM_EMIT_FRAME, i, 500);
		is_int(rc, HO_ECONN, "  ... a later call returns the sink's error");
		ok(calls <= 6, "  ... within the queue's reach (call %u)", calls);
		usleep(20000);
		is_int(atomic_load(&k.got), 3, "  ... and nothing after the failed frame reached the sink");
		is_int(send_one(s, buf, STREAM_EMIT_END, 99, 10), HO_ECONN, "  ... nor the end");
		is_int(sender_free(s), HO_ECONN, "  ... which free returns too");
	}
	{
		struct sink k = { .caller = pthread_self(), .fail_at = 1, .fail_rc = 7 };
		is_int(sender_new(sink_emit, &k, 1, &s), 0, "a sink that says stop (a positive return)");
		rc = send_one(s, buf, STREAM_EMIT_FRAME, 0, 10);
		for (int i = 1; i < 20 && !rc; i++) {
			usleep(2000);
			rc = send_one(s, buf, STREAM_EMIT_FRAME, (uint64_t)i, 10);
		}
		is_int(rc, 7, "  ... comes back as it was");
		sender_free(s);
	}
	{
		struct sink k = { .caller = pthread_self(), .delay_us = 100000 };
		is_int(sender_new(sink_emit, &k, 2, &s), 0, "a sender, queue of 2, slow sink");
		for (uint64_t i = 0; i < 3; i++)
			send_one(s, buf, STREAM_EMIT_FRAME, i, 100);
		sender_free(s);
		unsigned got = atomic_load(&k.got);
		ok(got <= 1, "  ... freed at once: what was queued dropped (%u reached the sink)", got);
	}
	free(buf);
	return done_testing();
}
