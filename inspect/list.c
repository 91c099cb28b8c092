/*
 * list.c — one row per modified chunk, filtered, as an aligned table for people or as JSON lines
 * / CSV for scripts: where the chunk is, when and how often it was written, and what a stream
 * would do with it (its class and fingerprint).
 */
#include <string.h>
#include "common/common.h"
#include "inspect/inspect_int.h"

static void ref_str(const struct inspect_chunk *c, char *buf, size_t len)
{
	if (c->ref_image >= 0)
		snprintf(buf, len, "%s:%llu", overlay_image_name(c->ref_image),
			 (unsigned long long)c->ref_idx);
	else
		snprintf(buf, len, "-");
}

static int ndigits(uint64_t v)
{
	int n = 1;
	while (v >= 10) {
		v /= 10;
		n++;
	}
	return n;
}

int inspect_list(struct inspect *in, const struct inspect_filter *f, enum inspect_format fmt,
		 FILE *out)
{
	bool times = !(in->flags & INSPECT_NO_TIMES);
	int w_idx = 5, w_off = 6, w_gen = 3, w_wr = 6;
	char hex[33], ref[48], t1[40], t2[40];
	int err;

	if ((err = inspect_classify(in)) < 0)
		return err;
	/* column widths for the table */
	for (int i = 0; i < OVERLAY_NIMAGES; i++)
		for (size_t k = 0; k < in->img[i].count; k++) {
			const struct inspect_chunk *c = &in->img[i].chunks[k];
			if (!inspect_filter_match(in, f, c))
				continue;
			w_idx = HO_MAX(w_idx, ndigits(c->idx));
			w_off = HO_MAX(w_off, ndigits(c->idx * in->chunk_size));
			w_gen = HO_MAX(w_gen, ndigits(c->gen));
			w_wr = HO_MAX(w_wr, ndigits(c->writes));
		}
	if (fmt == INSPECT_TABLE) {
		fprintf(out, "%-6s  %*s  %*s  %*s  ", "IMAGE", w_idx, "CHUNK", w_off, "OFFSET", w_gen,
			"GEN");
		if (times)
			fprintf(out, "%-24s  %-24s  ", "FIRST WRITE", "LAST WRITE");
		fprintf(out, "%*s  %-11s  %-32s  %s\n", w_wr, "WRITES", "CLASS", "HASH", "REF");
	} else if (fmt == INSPECT_CSV) {
		fprintf(out, "image,chunk,offset,length,gen,%swrites,class,hash,ref\n",
			times ? "first_write,last_write," : "");
	}
	for (int i = 0; i < OVERLAY_NIMAGES; i++)
		for (size_t k = 0; k < in->img[i].count; k++) {
			const struct inspect_chunk *c = &in->img[i].chunks[k];
			unsigned long long off = c->idx * in->chunk_size;
			if (!inspect_filter_match(in, f, c))
				continue;
			ho_hex(c->hash, 16, hex);
			ref_str(c, ref, sizeof(ref));
			inspect_fmt_time(c->first_ns, t1, sizeof(t1));
			inspect_fmt_time(c->last_ns, t2, sizeof(t2));
			switch (fmt) {
			case INSPECT_TABLE:
				fprintf(out, "%-6s  %*llu  %*llu  %*u  ", overlay_image_name(i), w_idx,
					(unsigned long long)c->idx, w_off, off, w_gen, c->gen);
				if (times)
					fprintf(out, "%-24s  %-24s  ", t1, t2);
				fprintf(out, "%*llu  %-11s  %s  %s\n", w_wr, (unsigned long long)c->writes,
					inspect_class_name(c->cls), hex, ref);
				break;
			case INSPECT_CSV:
				fprintf(out, "%s,%llu,%llu,%u,%u,", overlay_image_name(i),
					(unsigned long long)c->idx, off, c->len, c->gen);
				if (times)
					fprintf(out, "%s,%s,", t1, t2);
				fprintf(out, "%llu,%s,%s,%s\n", (unsigned long long)c->writes,
					inspect_class_name(c->cls), hex, c->ref_image >= 0 ? ref : "");
				break;
			case INSPECT_JSON:
				fprintf(out, "{\"image\":\"%s\",\"chunk\":%llu,\"offset\":%llu,"
					"\"length\":%u,\"gen\":%u,", overlay_image_name(i),
					(unsigned long long)c->idx, off, c->len, c->gen);
				if (times)
					fprintf(out, "\"first_ns\":%llu,\"last_ns\":%llu,"
						"\"first_write\":\"%s\",\"last_write\":\"%s\",",
						(unsigned long long)c->first_ns,
						(unsigned long long)c->last_ns, t1, t2);
				fprintf(out, "\"writes\":%llu,\"class\":\"%s\",\"hash\":\"%s\"",
					(unsigned long long)c->writes, inspect_class_name(c->cls), hex);
				if (c->ref_image >= 0)
					fprintf(out, ",\"ref\":{\"image\":\"%s\",\"chunk\":%llu}",
						overlay_image_name(c->ref_image),
						(unsigned long long)c->ref_idx);
				fputs("}\n", out);
				break;
			}
		}
	return ferror(out) ? HO_EIO : 0;
}
