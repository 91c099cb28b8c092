/*
 * sender.c — the export's sender thread. The walk's thread reads, hashes and deduplicates every
 * chunk (the pipeline's longest stage: 60 % of delta-zstd3's CPU on a real guest's changes, the
 * compression workers the rest), and it also wrote every finished frame into the sink itself,
 * waiting on the socket for as long as the link took to drain it: while a 16 MB frame went out
 * at 100 Mbit/s, for over a second, nothing was read or hashed, and when the link had drained it,
 * the link idled while the walk caught up on chunks that made little output (base references).
 * Here the walk hands each piece (a copy) to a short queue and goes on; a thread of its own
 * writes the queue to the sink in order. The walk waits only when the queue is full, and then
 * runs the caller's wait hook (the adaptive walk's idle probes).
 *
 * The sink runs on the sender thread, except the header, which is written (and answered) on the
 * caller's before anything else. Whatever the sink touches besides its own state must be safe to
 * use from both threads (the adaptive engine locks itself, adapt.h).
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include "common/common.h"
#include "pipeline/export_int.h"

struct piece {
	struct stream_piece p;
	uint8_t *buf;
	size_t cap;
	struct piece *next;
};

struct sender {
	stream_emit_fn emit;
	void *arg;
	unsigned max_queued;
	void (*wait_fn)(void *arg);
	void *wait_arg;

	pthread_t th;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	/* guarded by mu */
	struct piece *head, *tail;     /* queued, oldest first */
	unsigned queued;
	bool busy;                     /* the thread is in emit() */
	bool stop;
	int rc;                        /* the first non-zero return of emit() */
	struct piece *spare;           /* a written piece's buffer, for the next copy */
};

static void piece_free(struct piece *q)
{
	if (q) {
		free(q->buf);
		free(q);
	}
}

static void *sender_main(void *arg)
{
	struct sender *s = arg;

	pthread_mutex_lock(&s->mu);
	for (;;) {
		struct piece *q = s->head;
		if (!q) {
			if (s->stop)
				break;
			pthread_cond_wait(&s->cv, &s->mu);
			continue;
		}
		s->head = q->next;
		if (!s->head)
			s->tail = NULL;
		s->queued--;
		int rc = s->rc;
		s->busy = !rc;
		pthread_cond_broadcast(&s->cv);
		pthread_mutex_unlock(&s->mu);
		if (!rc)
			rc = s->emit(s->arg, &q->p);
		pthread_mutex_lock(&s->mu);
		s->busy = false;
		if (rc && !s->rc)
			s->rc = rc;
		if (!s->spare) {
			s->spare = q;
			q = NULL;
		}
		pthread_cond_broadcast(&s->cv);
		pthread_mutex_unlock(&s->mu);
		piece_free(q);
		pthread_mutex_lock(&s->mu);
	}
	pthread_mutex_unlock(&s->mu);
	return NULL;
}

int sender_new(stream_emit_fn emit, void *arg, unsigned max_queued, struct sender **out)
{
	struct sender *s = calloc(1, sizeof(*s));

	*out = NULL;
	if (!s)
		return HO_ENOMEM;
	s->emit = emit;
	s->arg = arg;
	s->max_queued = max_queued ? max_queued : 1;
	pthread_mutex_init(&s->mu, NULL);
	pthread_cond_init(&s->cv, NULL);
	if (pthread_create(&s->th, NULL, sender_main, s) != 0) {
		pthread_cond_destroy(&s->cv);
		pthread_mutex_destroy(&s->mu);
		free(s);
		return HO_ENOMEM;
	}
	*out = s;
	return 0;
}

void sender_set_wait(struct sender *s, void (*fn)(void *arg), void *arg)
{
	s->wait_fn = fn;
	s->wait_arg = arg;
}

/* The sink failed, or (drained) it has had everything and is idle, or (!drained) the queue has
 * room. mu held. */
static bool ready(const struct sender *s, bool drained)
{
	return s->rc || (drained ? !s->head && !s->busy : s->queued < s->max_queued);
}

/* Wait (holding mu) until ready(); the wait hook runs every 20 ms, outside the lock. */
static void wait_locked(struct sender *s, bool drained)
{
	while (!ready(s, drained)) {
		if (!s->wait_fn) {
			pthread_cond_wait(&s->cv, &s->mu);
			continue;
		}
		pthread_mutex_unlock(&s->mu);
		s->wait_fn(s->wait_arg);
		pthread_mutex_lock(&s->mu);
		if (ready(s, drained))
			break;
		struct timespec ts = ho_deadline(CLOCK_REALTIME, 20);
		pthread_cond_timedwait(&s->cv, &s->mu, &ts);
	}
}

int sender_wait(struct sender *s)
{
	int rc;

	pthread_mutex_lock(&s->mu);
	wait_locked(s, true);
	rc = s->rc;
	pthread_mutex_unlock(&s->mu);
	return rc;
}

int sender_emit(void *arg, const struct stream_piece *p)
{
	struct sender *s = arg;
	struct piece *q;
	int rc;

	if (p->kind == STREAM_EMIT_HEADER) {
		/* first, and answered (a resume point, or "done") before anything is generated */
		rc = sender_wait(s);
		return rc ? rc : s->emit(s->arg, p);
	}
	pthread_mutex_lock(&s->mu);
	wait_locked(s, false);
	if ((rc = s->rc)) {
		pthread_mutex_unlock(&s->mu);
		return rc;
	}
	q = s->spare;
	s->spare = NULL;
	pthread_mutex_unlock(&s->mu);

	if (!q && !(q = calloc(1, sizeof(*q))))
		return HO_ENOMEM;
	if (q->cap < p->len) {
		uint8_t *b = malloc(p->len);
		if (!b) {
			piece_free(q);
			return HO_ENOMEM;
		}
		free(q->buf);
		q->buf = b;
		q->cap = p->len;
	}
	memcpy(q->buf, p->buf, p->len);
	q->p = *p;
	q->p.buf = q->buf;
	q->next = NULL;

	pthread_mutex_lock(&s->mu);
	if (s->tail)
		s->tail->next = q;
	else
		s->head = q;
	s->tail = q;
	s->queued++;
	pthread_cond_broadcast(&s->cv);
	rc = s->rc;
	pthread_mutex_unlock(&s->mu);
	/* the stream is complete when the sink has it all */
	return !rc && p->kind == STREAM_EMIT_END ? sender_wait(s) : rc;
}

int sender_free(struct sender *s)
{
	int rc;

	if (!s)
		return 0;
	pthread_mutex_lock(&s->mu);
	/* what is still queued is dropped: the walk failed, or the sink did */
	while (s->head) {
		struct piece *q = s->head;
		s->head = q->next;
		piece_free(q);
	}
	s->tail = NULL;
	s->queued = 0;
	s->stop = true;
	pthread_cond_broadcast(&s->cv);
	pthread_mutex_unlock(&s->mu);
	pthread_join(s->th, NULL);
	rc = s->rc;
	piece_free(s->spare);
	pthread_cond_destroy(&s->cv);
	pthread_mutex_destroy(&s->mu);
	free(s);
	return rc;
}
