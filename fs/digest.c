/*
 * digest.c — the mount daemon's image digest (digest.h): per-chunk sums of the base, computed
 * once per mount and kept in memory (8 bytes per chunk: 2 MiB per GiB of 4 KiB chunks), combined
 * with the sums of the chunks the overlay holds, read directly from the overlay.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "common/common.h"
#include "overlay/overlay.h"
#include "fs/digest.h"

#define READ_SPAN (4u << 20)          /* bytes read per pread */

enum { SUMS_NONE, SUMS_RUNNING, SUMS_DONE };

struct fs_digest {
	struct overlay *ov;
	pthread_mutex_t lock;
	pthread_cond_t cond;                  /* broadcast when a computation ends */
	int state[OVERLAY_NIMAGES];
	int err[OVERLAY_NIMAGES];             /* the last failed computation's error */
	uint64_t *sums[OVERLAY_NIMAGES];      /* base sum of every chunk (SUMS_DONE) */
	pthread_t thread;
	bool thread_live;                     /* a background thread to join */
	unsigned pending_mask;                /* what the background thread computes */
	_Atomic bool stop;
};

static uint64_t chunk_len(struct overlay *ov, int img, uint64_t c)
{
	uint64_t cs = overlay_chunk_size(ov), size = overlay_image_size(ov, img);
	return HO_MIN((uint64_t)cs, size - c * cs);
}

/* The base sums of img: reads the base once, skipping its holes. */
static int base_sums(struct fs_digest *d, int img, uint64_t **out)
{
	struct overlay *ov = d->ov;
	uint64_t cs = overlay_chunk_size(ov), size = overlay_image_size(ov, img);
	uint64_t n = (size + cs - 1) / cs;
	uint64_t *sums = malloc((n ? n : 1) * sizeof(*sums));
	uint8_t *buf = malloc(READ_SPAN), *zero = calloc(1, cs);
	int fd = overlay_base_fd(ov, img), rc = 0;
	uint64_t zsum;

	if (!sums || !buf || !zero) {
		rc = HO_ENOMEM;
		goto out;
	}
	zsum = ho_xxh64(zero, cs);
	for (uint64_t c = 0; c < n && !rc;) {
		if (atomic_load(&d->stop)) {
			rc = HO_ESTATE;
			break;
		}
		uint64_t off = c * cs;
		if (fd < 0) {
			sums[c] = chunk_len(ov, img, c) == cs ? zsum : ho_xxh64(zero, chunk_len(ov, img, c));
			c++;
			continue;
		}
		/* a hole up to the next data: zero chunks without reading them */
		off_t data = lseek(fd, (off_t)off, SEEK_DATA);
		if (data < 0 && errno == ENXIO)
			data = (off_t)size;
		if (data >= 0 && (uint64_t)data >= off + cs) {
			uint64_t to = HO_MIN(n, (uint64_t)data / cs);
			for (; c < to; c++)
				sums[c] = chunk_len(ov, img, c) == cs ? zsum : ho_xxh64(zero, chunk_len(ov, img, c));
			continue;
		}
		uint64_t span = HO_MIN((uint64_t)READ_SPAN / cs, n - c), len = HO_MIN(span * cs, size - off);
		if ((rc = overlay_read_base(ov, img, buf, (size_t)len, off)))
			break;
		for (uint64_t k = 0; k < span; k++, c++)
			sums[c] = ho_xxh64(buf + k * cs, (size_t)chunk_len(ov, img, c));
	}
out:
	free(buf);
	free(zero);
	if (rc) {
		free(sums);
		return rc;
	}
	*out = sums;
	return 0;
}

/* Compute img's base sums unless done or running elsewhere (then wait). Called without the lock. */
static int ensure_sums(struct fs_digest *d, int img)
{
	pthread_mutex_lock(&d->lock);
	while (d->state[img] == SUMS_RUNNING)
		pthread_cond_wait(&d->cond, &d->lock);
	if (d->state[img] == SUMS_DONE) {
		pthread_mutex_unlock(&d->lock);
		return 0;
	}
	d->state[img] = SUMS_RUNNING;
	pthread_mutex_unlock(&d->lock);

	uint64_t *sums = NULL;
	int rc = base_sums(d, img, &sums);

	pthread_mutex_lock(&d->lock);
	d->state[img] = rc ? SUMS_NONE : SUMS_DONE;
	d->err[img] = rc;
	if (!rc)
		d->sums[img] = sums;
	pthread_cond_broadcast(&d->cond);
	pthread_mutex_unlock(&d->lock);
	return rc;
}

static void *prepare_main(void *arg)
{
	struct fs_digest *d = arg;
	pthread_mutex_lock(&d->lock);
	unsigned mask = d->pending_mask;
	pthread_mutex_unlock(&d->lock);
	for (int img = 0; img < OVERLAY_NIMAGES; img++) {
		if (!(mask & (1u << img)) || atomic_load(&d->stop))
			continue;
		uint64_t t0 = ho_mono_ns();
		int rc = ensure_sums(d, img);
		if (rc && rc != HO_ESTATE)
			ho_warn("cannot sum the base of '%s': %s", overlay_image_name(img), ho_strerror(rc));
		else if (!rc)
			ho_debug("base sums of '%s' in %.2f s", overlay_image_name(img), (double)(ho_mono_ns() - t0) / 1e9);
	}
	return NULL;
}

int fs_digest_new(struct overlay *ov, struct fs_digest **out)
{
	struct fs_digest *d = calloc(1, sizeof(*d));
	if (!d)
		return HO_ENOMEM;
	d->ov = ov;
	pthread_mutex_init(&d->lock, NULL);
	pthread_cond_init(&d->cond, NULL);
	*out = d;
	return 0;
}

void fs_digest_free(struct fs_digest *d)
{
	if (!d)
		return;
	atomic_store(&d->stop, true);
	if (d->thread_live)
		pthread_join(d->thread, NULL);
	for (int i = 0; i < OVERLAY_NIMAGES; i++)
		free(d->sums[i]);
	pthread_mutex_destroy(&d->lock);
	pthread_cond_destroy(&d->cond);
	free(d);
}

/* the images of mask whose sums are neither done nor being computed (lock held) */
static unsigned sums_missing(const struct fs_digest *d, unsigned mask)
{
	unsigned want = 0;
	for (int img = 0; img < OVERLAY_NIMAGES; img++)
		if ((mask & (1u << img)) && d->state[img] == SUMS_NONE)
			want |= 1u << img;
	return want;
}

void fs_digest_prepare(struct fs_digest *d, unsigned mask)
{
	pthread_mutex_lock(&d->lock);
	if (sums_missing(d, mask) && d->thread_live) {
		/* one thread at a time: join the last one (it has finished or is about to finish the
		 * images it was asked for), then see what is still missing */
		pthread_t t = d->thread;
		d->thread_live = false;
		pthread_mutex_unlock(&d->lock);
		pthread_join(t, NULL);
		pthread_mutex_lock(&d->lock);
	}
	unsigned want = sums_missing(d, mask);
	if (want) {
		d->pending_mask = want;
		d->thread_live = pthread_create(&d->thread, NULL, prepare_main, d) == 0;
	}
	pthread_mutex_unlock(&d->lock);
}

int fs_digest_image(struct fs_digest *d, int img, fs_digest_modified_fn mod, void *arg, uint8_t out[16])
{
	if (img < 0 || img >= OVERLAY_NIMAGES)
		return HO_EINVAL;
	int rc = ensure_sums(d, img);
	if (rc)
		return rc;

	struct overlay *ov = d->ov;
	uint64_t cs = overlay_chunk_size(ov), size = overlay_image_size(ov, img);
	uint64_t n = (size + cs - 1) / cs;
	const uint64_t *base = d->sums[img];     /* immutable once SUMS_DONE */
	uint8_t *words = malloc((n ? n : 1) * 8), *buf = malloc(READ_SPAN);
	if (!words || !buf) {
		free(words);
		free(buf);
		return HO_ENOMEM;
	}
	for (uint64_t c = 0; c < n && !rc;) {
		if (!mod(arg, img, c)) {
			ho_put_le64(words + 8 * c, base[c]);
			c++;
			continue;
		}
		/* a run of modified chunks: one read */
		uint64_t run = 1;
		while (c + run < n && run < READ_SPAN / cs && mod(arg, img, c + run))
			run++;
		uint64_t off = c * cs, len = HO_MIN(run * cs, size - off);
		if ((rc = overlay_read(ov, img, buf, (size_t)len, off)))
			break;
		for (uint64_t k = 0; k < run; k++, c++)
			ho_put_le64(words + 8 * c, ho_xxh64(buf + k * cs, (size_t)chunk_len(ov, img, c)));
	}
	if (!rc) {
		uint8_t tail[8];
		ho_put_le64(tail, size);
		ho_xxh128(words, (size_t)(8 * n), out);
		for (int i = 0; i < 8; i++)
			out[i] ^= tail[i];
	}
	free(words);
	free(buf);
	return rc;
}
