/*
 * diff.c — what exactly changed inside a chunk or byte range: the changed runs of bytes between
 * the base and the current image, shown hexdump-style, base line ('-') above overlay line ('+'),
 * 16 bytes a row, only for rows that hold a change.
 */
#include <stdlib.h>
#include <string.h>
#include "common/common.h"
#include "inspect/inspect_int.h"

#define PIECE (1u << 20)
#define ROW 16

struct run {
	uint64_t start, end;   /* [start, end) */
};

static void hexrow(FILE *out, char sign, uint64_t off, const uint8_t *p, size_t n)
{
	fprintf(out, "%c %012llx ", sign, (unsigned long long)off);
	for (size_t i = 0; i < ROW; i++) {
		if (i == 8)
			fputc(' ', out);
		if (i < n)
			fprintf(out, " %02x", p[i]);
		else
			fputs("   ", out);
	}
	fputs("  |", out);
	for (size_t i = 0; i < n; i++)
		fputc(p[i] >= 0x20 && p[i] < 0x7f ? p[i] : '.', out);
	fputs("|\n", out);
}

static int collect(struct inspect *in, int image, uint64_t off, uint64_t len, uint8_t *base,
		   uint8_t *cur, struct run **runs, size_t *nruns)
{
	size_t cap = 0;
	bool open = false;

	*runs = NULL;
	*nruns = 0;
	for (uint64_t pos = off; pos < off + len; pos += PIECE) {
		size_t n = (size_t)HO_MIN((uint64_t)PIECE, off + len - pos);
		int err = overlay_read_base(in->ov, image, base, n, pos);
		if (err < 0) {
			ho_err("cannot read the base of '%s' at %llu: %s", overlay_image_name(image),
			       (unsigned long long)pos, ho_strerror(err));
			return err;
		}
		if ((err = inspect_read(in, image, cur, n, pos)) < 0)
			return err;
		for (size_t i = 0; i < n; i++) {
			bool diff = base[i] != cur[i];
			if (diff && !open) {
				if (*nruns == cap) {
					struct run *r;
					cap = cap ? cap * 2 : 64;
					r = realloc(*runs, cap * sizeof(*r));
					if (!r)
						return HO_ENOMEM;
					*runs = r;
				}
				(*runs)[*nruns].start = pos + i;
				(*nruns)++;
				open = true;
			} else if (!diff && open) {
				(*runs)[*nruns - 1].end = pos + i;
				open = false;
			}
		}
	}
	if (open)
		(*runs)[*nruns - 1].end = off + len;
	return 0;
}

int inspect_diff(struct inspect *in, int image, uint64_t off, uint64_t len, FILE *out)
{
	uint8_t *base = malloc(PIECE), *cur = malloc(PIECE);
	uint32_t cs = in->chunk_size;
	struct run *runs = NULL;
	size_t nruns = 0, modified = 0;
	uint64_t changed = 0, first, last;
	int err = HO_ENOMEM;

	if (!base || !cur)
		goto out;
	err = HO_EINVAL;
	if (image < 0 || image >= OVERLAY_NIMAGES || !len || off >= in->img[image].size ||
	    len > in->img[image].size - off) {
		ho_err("cannot diff bytes %llu+%llu of '%s': outside the image (%llu bytes)",
		       (unsigned long long)off, (unsigned long long)len,
		       image >= 0 && image < OVERLAY_NIMAGES ? overlay_image_name(image) : "?",
		       image >= 0 && image < OVERLAY_NIMAGES ? (unsigned long long)in->img[image].size : 0ull);
		goto out;
	}
	if ((err = collect(in, image, off, len, base, cur, &runs, &nruns)) < 0)
		goto out;
	first = off / cs;
	last = (off + len - 1) / cs;
	for (uint64_t i = first; i <= last; i++)
		modified += inspect_is_dirty(in, image, i);
	for (size_t i = 0; i < nruns; i++)
		changed += runs[i].end - runs[i].start;
	fprintf(out, "%s bytes %llu..%llu (chunk%s %llu", overlay_image_name(image),
		(unsigned long long)off, (unsigned long long)(off + len - 1), first == last ? "" : "s",
		(unsigned long long)first);
	if (last != first)
		fprintf(out, "-%llu", (unsigned long long)last);
	fprintf(out, ", %zu modified): ", modified);
	if (!nruns) {
		fputs("no change\n", out);
		err = 0;
		goto out;
	}
	fprintf(out, "%zu changed range%s, %llu byte%s\n", nruns, nruns == 1 ? "" : "s",
		(unsigned long long)changed, changed == 1 ? "" : "s");

	/* hunks: runs whose rows touch are shown together */
	for (size_t h = 0; h < nruns;) {
		size_t e = h + 1;
		uint64_t row0 = runs[h].start / ROW * ROW, row1;
		while (e < nruns && runs[e].start / ROW * ROW <= (runs[e - 1].end + ROW - 1) / ROW * ROW)
			e++;
		row1 = HO_MIN((runs[e - 1].end + ROW - 1) / ROW * ROW, in->img[image].size);
		fputs("@@", out);
		for (size_t k = h; k < e; k++)
			fprintf(out, " %llu+%llu", (unsigned long long)runs[k].start,
				(unsigned long long)(runs[k].end - runs[k].start));
		fputc('\n', out);
		for (uint64_t r = row0; r < row1; r += PIECE) {
			size_t n = (size_t)HO_MIN((uint64_t)PIECE, row1 - r);
			if ((err = overlay_read_base(in->ov, image, base, n, r)) < 0 ||
			    (err = inspect_read(in, image, cur, n, r)) < 0)
				goto out;
			for (size_t k = 0; k < n; k += ROW) {
				size_t m = HO_MIN((size_t)ROW, n - k);
				if (memcmp(base + k, cur + k, m) == 0)
					continue;
				hexrow(out, '-', r + k, base + k, m);
				hexrow(out, '+', r + k, cur + k, m);
			}
		}
		h = e;
	}
	err = ferror(out) ? HO_EIO : 0;
out:
	free(runs);
	free(base);
	free(cur);
	return err;
}
