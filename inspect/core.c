/*
 * core.c — the inspector's handle: opens an overlay and its index read-only (never the lock, so
 * it is safe beside a live mount), loads the committed chunk rows into per-image arrays plus a
 * dirty bitmap, and reads the current image (overlay where modified, base elsewhere). Also the
 * small parsers and formatters the reports and the tool share.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include "common/common.h"
#include "inspect/inspect_int.h"

static int add_chunk(const struct tracker_chunk *c, void *arg)
{
	struct inspect *in = arg;
	struct inspect_image *im;
	struct inspect_chunk *r;

	if (c->image < 0 || c->image >= OVERLAY_NIMAGES) {
		snprintf(in->msg, sizeof(in->msg), "a chunk row for image %d", c->image);
		return HO_ECORRUPT;
	}
	im = &in->img[c->image];
	if (c->idx >= im->nchunks) {
		snprintf(in->msg, sizeof(in->msg), "chunk %llu of '%s' is beyond the image (%llu chunks)",
			 (unsigned long long)c->idx, overlay_image_name(c->image),
			 (unsigned long long)im->nchunks);
		return HO_ECORRUPT;
	}
	if (im->count && im->chunks[im->count - 1].idx >= c->idx) {
		snprintf(in->msg, sizeof(in->msg), "chunk rows of '%s' out of order at %llu",
			 overlay_image_name(c->image), (unsigned long long)c->idx);
		return HO_ECORRUPT;
	}
	if (c->gen == 0 || c->gen > in->generation || (c->last_ns && c->first_ns > c->last_ns)) {
		snprintf(in->msg, sizeof(in->msg), "chunk %llu of '%s' has generation %u (open %u) or "
			 "inverted times", (unsigned long long)c->idx, overlay_image_name(c->image),
			 c->gen, in->generation);
		return HO_ECORRUPT;
	}
	if (im->count == im->cap) {
		size_t cap = im->cap ? im->cap * 2 : 256;
		struct inspect_chunk *n = realloc(im->chunks, cap * sizeof(*n));
		if (!n)
			return HO_ENOMEM;
		im->chunks = n;
		im->cap = cap;
	}
	r = &im->chunks[im->count++];
	memset(r, 0, sizeof(*r));
	r->image = c->image;
	r->idx = c->idx;
	r->gen = c->gen;
	r->first_ns = c->first_ns;
	r->last_ns = c->last_ns;
	r->writes = c->writes;
	r->len = (uint32_t)HO_MIN((uint64_t)in->chunk_size, im->size - c->idx * in->chunk_size);
	r->ref_image = -1;
	im->dirty[c->idx / 64] |= 1ull << (c->idx % 64);
	return 0;
}

int inspect_open(const char *dir, unsigned flags, struct inspect **out)
{
	struct inspect *in;
	uint64_t nchunks[OVERLAY_NIMAGES];
	struct stat st;
	char *meta;
	int err, level = ho_log_get_level();
	bool quiet = level < LOG_INFO;

	*out = NULL;
	if (stat(dir, &st) != 0) {
		ho_err("cannot open overlay '%s': %s", dir, ho_strerror(ho_from_errno(errno)));
		return ho_from_errno(errno);
	}
	if (!S_ISDIR(st.st_mode)) {
		ho_err("cannot open overlay '%s': not a directory", dir);
		return HO_ENOENT;
	}
	meta = ho_path_join(dir, "overlay.meta");
	if (!meta)
		return HO_ENOMEM;
	err = stat(meta, &st) == 0 ? 0 : ho_from_errno(errno);
	free(meta);
	if (err) {
		ho_err("cannot open overlay '%s': not an overlay (no overlay.meta)", dir);
		return err;
	}

	in = calloc(1, sizeof(*in));
	if (!in || !(in->dir = strdup(dir))) {
		free(in);
		return HO_ENOMEM;
	}
	in->flags = flags;
	/* The lower layers log their own details; unless -v asked for them, keep the error to the
	 * one line said below. */
	if (quiet)
		ho_log_set_level(LOG_CRIT);
	err = overlay_open(dir, NULL, 0, OVERLAY_READONLY, &in->ov);
	if (quiet)
		ho_log_set_level(level);
	if (err) {
		ho_err("cannot open overlay '%s': %s%s", dir, ho_strerror(err),
		       err == HO_EBASE || err == HO_ENOENT ? " (a base image changed or is missing? -v "
		       "says which)" : quiet ? " (-v for details)" : "");
		goto fail;
	}
	in->chunk_size = overlay_chunk_size(in->ov);
	for (int i = 0; i < OVERLAY_NIMAGES; i++) {
		struct inspect_image *im = &in->img[i];
		im->size = overlay_image_size(in->ov, i);
		im->nchunks = overlay_nchunks(in->ov, i);
		nchunks[i] = im->nchunks;
		im->dirty = calloc(im->nchunks / 64 + 1, sizeof(uint64_t));
		if (!im->dirty) {
			err = HO_ENOMEM;
			goto fail;
		}
	}
	if (quiet)
		ho_log_set_level(LOG_CRIT);
	err = tracker_open(dir, OVERLAY_NIMAGES, nchunks, TRACKER_READONLY, &in->tr);
	if (quiet)
		ho_log_set_level(level);
	if (err) {
		if (err == HO_ENOENT)
			ho_err("cannot open the index of overlay '%s': no index.db", dir);
		else
			ho_err("cannot open the index of overlay '%s': %s", dir, ho_strerror(err));
		goto fail;
	}
	in->generation = tracker_generation(in->tr);
	in->have_stats = tracker_stats(in->tr, &in->stats) == 0;
	if (quiet)
		ho_log_set_level(LOG_CRIT);
	err = tracker_foreach(in->tr, -1, 0, 0, add_chunk, in);
	if (quiet)
		ho_log_set_level(level);
	if (err) {
		if (in->msg[0])
			ho_err("corrupt index in overlay '%s': %s", dir, in->msg);
		else
			ho_err("cannot read the index of overlay '%s': %s", dir, ho_strerror(err));
		goto fail;
	}
	*out = in;
	return 0;
fail:
	inspect_close(in);
	return err;
}

void inspect_close(struct inspect *in)
{
	if (!in)
		return;
	if (in->tr)
		tracker_close(in->tr);
	if (in->ov)
		overlay_close(in->ov);
	for (int i = 0; i < OVERLAY_NIMAGES; i++) {
		free(in->img[i].chunks);
		free(in->img[i].dirty);
	}
	free(in->dir);
	free(in);
}

uint32_t inspect_chunk_size(const struct inspect *in) { return in->chunk_size; }
uint64_t inspect_image_size(const struct inspect *in, int image) { return in->img[image].size; }
uint32_t inspect_generation(const struct inspect *in) { return in->generation; }

const struct inspect_chunk *inspect_chunks(const struct inspect *in, int image, size_t *count)
{
	*count = in->img[image].count;
	return in->img[image].chunks;
}

struct inspect_chunk *inspect_find(struct inspect *in, int image, uint64_t idx)
{
	struct inspect_image *im = &in->img[image];
	size_t lo = 0, hi = im->count;

	if (!inspect_is_dirty(in, image, idx))
		return NULL;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (im->chunks[mid].idx < idx)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo < im->count && im->chunks[lo].idx == idx ? &im->chunks[lo] : NULL;
}

int inspect_read(struct inspect *in, int image, void *buf, size_t len, uint64_t off)
{
	uint8_t *p = buf;
	uint32_t cs = in->chunk_size;

	if (image < 0 || image >= OVERLAY_NIMAGES || off > in->img[image].size ||
	    len > in->img[image].size - off)
		return HO_EINVAL;
	while (len) {
		uint64_t idx = off / cs;
		size_t n = HO_MIN(len, (size_t)((idx + 1) * cs - off));
		int err = inspect_is_dirty(in, image, idx)
			? overlay_read(in->ov, image, p, n, off)
			: overlay_read_base(in->ov, image, p, n, off);
		if (err < 0) {
			ho_err("cannot read %zu bytes at %llu of '%s' in '%s': %s", n,
			       (unsigned long long)off, overlay_image_name(image), in->dir,
			       ho_strerror(err));
			return err;
		}
		p += n;
		off += n;
		len -= n;
	}
	return 0;
}

const char *inspect_class_name(enum inspect_class c)
{
	switch (c) {
	case INSPECT_REVERTED: return "reverted";
	case INSPECT_ZERO: return "zero";
	case INSPECT_DUP_BASE: return "dup-base";
	case INSPECT_DUP_OVERLAY: return "dup-overlay";
	case INSPECT_REST: return "rest";
	default: return "-";
	}
}

/* ---- filters and parsing --------------------------------------------------------------------- */

void inspect_filter_init(struct inspect_filter *f)
{
	f->image = -1;
	f->gen_min = 0;
	f->gen_max = UINT32_MAX;
	f->since_ns = 0;
	f->until_ns = UINT64_MAX;
	f->off_min = 0;
	f->off_max = UINT64_MAX;
}

bool inspect_filter_match(const struct inspect *in, const struct inspect_filter *f,
			  const struct inspect_chunk *c)
{
	uint64_t start = c->idx * in->chunk_size, end = start + c->len - 1;

	return (f->image < 0 || f->image == c->image) &&
	       c->gen >= f->gen_min && c->gen <= f->gen_max &&
	       c->last_ns >= f->since_ns && c->first_ns <= f->until_ns &&
	       end >= f->off_min && start <= f->off_max;
}

int inspect_parse_u64(const char *s, uint64_t *out)
{
	char *end;
	unsigned long long v;

	if (!s || *s < '0' || *s > '9')
		return HO_EINVAL;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || *end)
		return HO_EINVAL;
	*out = v;
	return 0;
}

int inspect_parse_range(const char *s, int (*parse)(const char *, uint64_t *), uint64_t *lo,
			uint64_t *hi)
{
	const char *dots = strstr(s, "..");
	uint64_t a = *lo, b = *hi;
	int err;

	if (!dots) {
		if ((err = parse(s, &a)) < 0)
			return err;
		b = a;
	} else {
		char *left = strndup(s, (size_t)(dots - s));
		if (!left)
			return HO_ENOMEM;
		err = *left ? parse(left, &a) : 0;
		free(left);
		if (err < 0)
			return err;
		if (dots[2] && (err = parse(dots + 2, &b)) < 0)
			return err;
		if (dots == s && !dots[2])
			return HO_EINVAL;
	}
	if (a > b)
		return HO_EINVAL;
	*lo = a;
	*hi = b;
	return 0;
}

/* Parse ".FRACTION" (at most 9 digits) into ns. */
static int parse_frac(const char **p, uint64_t *ns)
{
	uint64_t v = 0, scale = 100000000;
	const char *s = *p;

	*ns = 0;
	if (*s != '.')
		return 0;
	s++;
	if (*s < '0' || *s > '9')
		return HO_EINVAL;
	for (; *s >= '0' && *s <= '9'; s++) {
		if (!scale)
			return HO_EINVAL;
		v += (uint64_t)(*s - '0') * scale;
		scale /= 10;
	}
	*ns = v;
	*p = s;
	return 0;
}

int inspect_parse_time(const char *s, uint64_t *ns)
{
	uint64_t frac = 0;
	const char *p;

	if (*s == '@') {
		char *end;
		unsigned long long sec;
		if (s[1] < '0' || s[1] > '9')
			return HO_EINVAL;
		errno = 0;
		sec = strtoull(s + 1, &end, 10);
		p = end;
		if (errno || sec > UINT64_MAX / 1000000000ull - 1 || parse_frac(&p, &frac) < 0 || *p)
			return HO_EINVAL;
		*ns = sec * 1000000000ull + frac;
		return 0;
	} else {
		struct tm tm;
		time_t t;
		int y, mo, d, h = 0, mi = 0, sec = 0, n = 0;
		memset(&tm, 0, sizeof(tm));
		if (sscanf(s, "%4d-%2d-%2d%n", &y, &mo, &d, &n) != 3 || n != 10)
			return HO_EINVAL;
		p = s + n;
		if (*p == 'T' || *p == ' ') {
			if (sscanf(p + 1, "%2d:%2d%n", &h, &mi, &n) != 2 || n != 5)
				return HO_EINVAL;
			p += 1 + n;
			if (*p == ':') {
				if (sscanf(p + 1, "%2d%n", &sec, &n) != 1 || n != 2)
					return HO_EINVAL;
				p += 1 + n;
				if (parse_frac(&p, &frac) < 0)
					return HO_EINVAL;
			}
		}
		if (*p == 'Z')
			p++;
		if (*p || mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || sec > 60 ||
		    y < 1970)
			return HO_EINVAL;
		tm.tm_year = y - 1900;
		tm.tm_mon = mo - 1;
		tm.tm_mday = d;
		tm.tm_hour = h;
		tm.tm_min = mi;
		tm.tm_sec = sec;
		t = timegm(&tm);
		if (t < 0)
			return HO_EINVAL;
		*ns = (uint64_t)t * 1000000000ull + frac;
		return 0;
	}
}

int inspect_parse_image(const char *s, int *image)
{
	for (int i = 0; i < OVERLAY_NIMAGES; i++)
		if (strcmp(s, overlay_image_name(i)) == 0) {
			*image = i;
			return 0;
		}
	return HO_EINVAL;
}

char *inspect_fmt_time(uint64_t ns, char *buf, size_t len)
{
	time_t t = (time_t)(ns / 1000000000ull);
	struct tm tm;

	if (!ns) {
		snprintf(buf, len, "-");
		return buf;
	}
	gmtime_r(&t, &tm);
	snprintf(buf, len, "%04d-%02d-%02dT%02d:%02d:%02d.%03uZ", tm.tm_year + 1900, tm.tm_mon + 1,
		 tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
		 (unsigned)(ns % 1000000000ull / 1000000));
	return buf;
}

void inspect_json_str(FILE *out, const char *s)
{
	fputc('"', out);
	for (; *s; s++) {
		unsigned char ch = (unsigned char)*s;
		if (ch == '"' || ch == '\\')
			fprintf(out, "\\%c", ch);
		else if (ch < 0x20 || ch == 0x7f)
			fprintf(out, "\\u%04x", ch);
		else
			fputc(ch, out);
	}
	fputc('"', out);
}

void inspect_csv_str(FILE *out, const char *s)
{
	if (!strpbrk(s, ",\"\n\r")) {
		fputs(s, out);
		return;
	}
	fputc('"', out);
	for (; *s; s++) {
		if (*s == '"')
			fputc('"', out);
		fputc(*s, out);
	}
	fputc('"', out);
}
