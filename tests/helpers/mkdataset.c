/*
 * mkdataset.c — deterministic synthetic datasets for the pipeline tests and benchmarks: a base
 * disk image (or one made elsewhere, e.g. mkfs.ext4 -d), a modified copy with a realistic change
 * mix, a base memory image and a modified one, and the list of dirty chunks of each.
 *
 *   mkdataset synth-disk OUT SIZE [SEED]       a base disk without mkfs: text, binary records,
 *                                              random (compressed) files and free (zero) space
 *   mkdataset disk BASE NEW DIRTY [FRAC [SEED]]  copy BASE to NEW and change FRAC (0.05) of its
 *                                              4 KiB chunks in clustered runs: small in-place edits,
 *                                              new text, random data, copies of other base chunks,
 *                                              duplicates of new data, zeroed chunks
 *   mkdataset mem DISK MEMBASE MEMNEW DIRTY SIZE [FRAC [SEED]]
 *                                              a base "RAM" of SIZE (free zero pages, page cache =
 *                                              aligned copies of DISK chunks, heap = malloc-like
 *                                              objects with 16-byte headers holding text, pointers
 *                                              and unaligned pieces of disk data, code/random
 *                                              pages), and a modified copy with FRAC (0.016) of
 *                                              pages changed: heap churn (unaligned copies of base
 *                                              data anywhere in RAM under new headers), new page
 *                                              cache from DISK, zeroed pages, small edits, new
 *                                              text and random data
 * DIRTY gets one chunk index per line, ascending. Same arguments, same bytes.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "common/common.h"

#define CS 4096

static uint64_t rs;
static uint64_t rnd(void)
{
	uint64_t z = (rs += 0x9E3779B97F4A7C15ull);
	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
	return z ^ (z >> 31);
}
static uint64_t rn(uint64_t n) { return n ? rnd() % n : 0; }

static const char *words[] = {
	"the", "of", "and", "to", "in", "is", "that", "for", "it", "as", "with", "was", "on", "be", "by",
	"this", "are", "from", "or", "an", "which", "not", "have", "file", "data", "system", "user",
	"value", "return", "static", "const", "struct", "int", "char", "void", "if", "else", "while",
	"config", "server", "client", "request", "response", "error", "warning", "debug", "info",
	"/usr/lib", "/etc", "package", "version", "license", "copyright", "GNU", "General", "Public",
	"import", "def", "class", "self", "None", "True", "False", "print", "string", "buffer",
	"memory", "page", "cache", "kernel", "module", "device", "network", "address", "port", "time",
};

static void fill_text(uint8_t *p, size_t n)
{
	size_t i = 0, col = 0;
	while (i < n) {
		const char *w = words[rn(HO_ARRAY_SIZE(words))];
		char buf[64];
		int l = rn(9) == 0 ? snprintf(buf, sizeof(buf), "%u", (unsigned)rn(100000)) : snprintf(buf, sizeof(buf), "%s", w);
		for (int k = 0; k < l && i < n; k++)
			p[i++] = (uint8_t)buf[k];
		col += (size_t)l + 1;
		if (i < n)
			p[i++] = col > 60 ? (col = 0, '\n') : ' ';
	}
}

static void fill_random(uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i += 8) {
		uint64_t v = rnd();
		memcpy(p + i, &v, HO_MIN((size_t)8, n - i));
	}
}

/* binary records: small ints, pointers, flags — compressible, typical of databases and heaps */
static void fill_records(uint8_t *p, size_t n)
{
	uint64_t base = 0x7f3a00000000ull + (rn(1 << 20) << 12);
	for (size_t i = 0; i + 8 <= n; i += 8) {
		uint64_t v;
		switch (rn(4)) {
		case 0: v = base + rn(1 << 16) * 16; break;
		case 1: v = rn(256); break;
		case 2: v = 0; break;
		default: v = rn(1u << 31); break;
		}
		memcpy(p + i, &v, 8);
	}
}

static int die(const char *what, const char *path)
{
	fprintf(stderr, "mkdataset: cannot %s '%s'\n", what, path);
	return 1;
}

static uint8_t *load(const char *path, uint64_t *size)
{
	int fd = open(path, O_RDONLY);
	struct stat st;
	if (fd < 0 || fstat(fd, &st))
		return NULL;
	uint8_t *b = malloc((size_t)st.st_size + 1);
	if (b && ho_pread_full(fd, b, (size_t)st.st_size, 0) != st.st_size) {
		free(b);
		b = NULL;
	}
	close(fd);
	*size = (uint64_t)st.st_size;
	return b;
}

static int save(const char *path, const uint8_t *b, uint64_t size)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	if (fd < 0)
		return die("create", path);
	/* write non-zero chunks only: the result is sparse like a real image */
	for (uint64_t off = 0; off < size; off += CS) {
		size_t l = (size_t)HO_MIN((uint64_t)CS, size - off);
		if (!ho_is_zero(b + off, l) && ho_pwrite_full(fd, b + off, l, off))
			return die("write", path);
	}
	if (ftruncate(fd, (off_t)size) || close(fd))
		return die("write", path);
	return 0;
}

static int save_dirty(const char *path, const uint8_t *mark, uint64_t n)
{
	FILE *f = fopen(path, "w");
	if (!f)
		return die("create", path);
	for (uint64_t i = 0; i < n; i++)
		if (mark[i])
			fprintf(f, "%llu\n", (unsigned long long)i);
	return fclose(f) ? die("write", path) : 0;
}

static int synth_disk(const char *out, uint64_t size)
{
	uint64_t n = size / CS;
	uint8_t *b = calloc(1, size);
	if (!b)
		return 1;
	for (uint64_t i = 0; i < n; ) {
		uint64_t run = 1 + rn(64), t = rn(100);
		for (uint64_t k = 0; k < run && i < n; k++, i++) {
			uint8_t *p = b + i * CS;
			if (t < 35) fill_text(p, CS);
			else if (t < 55) fill_records(p, CS);
			else if (t < 70) fill_random(p, CS);
			else if (t < 75 && i > 16) memcpy(p, b + rn(i) * CS, CS);  /* duplicate files */
			/* else free space */
		}
	}
	int rc = save(out, b, size);
	free(b);
	return rc;
}

static int mut_disk(const char *bpath, const char *npath, const char *dpath, double frac)
{
	uint64_t size;
	uint8_t *base = load(bpath, &size);
	if (!base)
		return die("read", bpath);
	uint64_t n = size / CS, want = (uint64_t)(frac * (double)n), done = 0;
	uint8_t *nw = malloc(size), *mark = calloc(1, n ? n : 1);
	memcpy(nw, base, size);
	uint64_t *newlist = malloc(sizeof(uint64_t) * (want + 64)), nnew = 0;
	while (done < want) {
		uint64_t run = 1 + rn(rn(4) ? 8 : 48), start = rn(n), t = rn(100);
		for (uint64_t k = 0; k < run && done < want && start + k < n; k++) {
			uint64_t i = start + k;
			uint8_t *p = nw + i * CS;
			if (mark[i])
				continue;
			if (t < 30) {                              /* small in-place edits */
				for (int e = 1 + (int)rn(6); e > 0; e--) {
					size_t at = rn(CS - 32), l = 1 + rn(24);
					if (rn(2)) fill_text(p + at, l); else fill_random(p + at, l);
				}
			} else if (t < 50) {
				fill_text(p, CS);                  /* new text */
			} else if (t < 60) {
				fill_random(p, CS);                /* new compressed data */
			} else if (t < 72) {
				memcpy(p, base + rn(n) * CS, CS);  /* copy of another base block */
			} else if (t < 82 && nnew) {
				memcpy(p, nw + newlist[rn(nnew)] * CS, CS);   /* duplicate of new data */
			} else if (t < 90) {
				memset(p, 0, CS);                  /* zeroed (discarded) */
			} else {
				fill_records(p, CS);               /* new binary records */
			}
			if (memcmp(p, base + i * CS, CS) == 0)
				continue;                          /* e.g. zeroing a free block */
			mark[i] = 1;
			if (t >= 30 && t < 60)
				newlist[nnew++] = i;
			done++;
		}
	}
	int rc = save(npath, nw, size) || save_dirty(dpath, mark, n);
	free(base); free(nw); free(mark); free(newlist);
	return rc;
}

/* one heap page: malloc-like objects, each a 16-byte header (size | flags, a link) and a payload */
static void heap_page(uint8_t *p, const uint8_t *src, uint64_t src_size, const uint8_t *disk, uint64_t dsize)
{
	size_t i = 0;
	while (i < CS) {
		size_t psz = 16 + 16 * rn(rn(4) ? 24 : 200);
		uint64_t hdr[2] = { (psz + 16) | 1, 0x55d0c0000000ull + rn(1 << 24) * 16 };
		memcpy(p + i, hdr, HO_MIN((size_t)16, CS - i));
		i += 16;
		if (i >= CS)
			break;
		size_t l = HO_MIN(psz, CS - i);
		uint64_t t = rn(100);
		if (t < 45 && src_size > CS) {                   /* a copy of data from elsewhere in RAM */
			uint64_t at = rn(src_size - l);
			memcpy(p + i, src + at, l);
		} else if (t < 70 && dsize > CS) {               /* file contents read into a buffer */
			uint64_t at = rn(dsize - l);
			memcpy(p + i, disk + at, l);
		} else if (t < 85) {
			fill_text(p + i, l);
		} else {
			fill_records(p + i, l);
		}
		i += l;
	}
}

static int mk_mem(const char *dpath, const char *bpath, const char *npath, const char *lpath, uint64_t size,
		  double frac)
{
	uint64_t dsize;
	uint8_t *disk = load(dpath, &dsize);
	if (!disk)
		return die("read", dpath);
	uint64_t n = size / CS, dn = dsize / CS;
	uint8_t *b = calloc(1, size), *mark = calloc(1, n);
	/* base RAM: regions of zero, page cache, heap, code */
	for (uint64_t i = 0; i < n; ) {
		uint64_t run = 1 + rn(256), t = rn(100);
		uint64_t dstart = rn(dn ? dn : 1);
		for (uint64_t k = 0; k < run && i < n; k++, i++) {
			uint8_t *p = b + i * CS;
			if (t < 25) continue;                                  /* free */
			else if (t < 55 && dn) memcpy(p, disk + ((dstart + k) % dn) * CS, CS);  /* page cache */
			else if (t < 88) heap_page(p, b, i * CS, disk, dsize); /* heap (copies of earlier RAM) */
			else fill_random(p, CS);                               /* code / compressed */
		}
	}
	uint8_t *nw = malloc(size);
	memcpy(nw, b, size);
	uint64_t want = (uint64_t)(frac * (double)n), done = 0;
	while (done < want) {
		uint64_t run = 1 + rn(rn(3) ? 4 : 32), start = rn(n), t = rn(100), dstart = rn(dn ? dn : 1);
		for (uint64_t k = 0; k < run && done < want && start + k < n; k++) {
			uint64_t i = start + k;
			uint8_t *p = nw + i * CS;
			if (mark[i])
				continue;
			if (t < 40) heap_page(p, b, size, disk, dsize);         /* heap churn, far copies */
			else if (t < 58 && dn) memcpy(p, disk + ((dstart + k) % dn) * CS, CS);  /* new page cache */
			else if (t < 70) memset(p, 0, CS);                      /* freed and zeroed */
			else if (t < 88) {                                      /* counters, pointers, flags */
				for (int e = 1 + (int)rn(8); e > 0; e--) {
					size_t at = rn(CS / 8) * 8;
					uint64_t v = rnd() & 0xffffffffull;
					memcpy(p + at, &v, 8);
				}
			} else if (t < 95) fill_text(p, CS);
			else fill_random(p, CS);
			if (memcmp(p, b + i * CS, CS) == 0)
				continue;
			mark[i] = 1;
			done++;
		}
	}
	int rc = save(bpath, b, size) || save(npath, nw, size) || save_dirty(lpath, mark, n);
	free(disk); free(b); free(nw); free(mark);
	return rc;
}

int main(int argc, char **argv)
{
	uint64_t size;
	if (argc >= 4 && strcmp(argv[1], "synth-disk") == 0 && ho_parse_size(argv[3], &size) == 0) {
		rs = argc > 4 ? strtoull(argv[4], NULL, 0) : 1;
		return synth_disk(argv[2], size / CS * CS);
	}
	if (argc >= 5 && strcmp(argv[1], "disk") == 0) {
		rs = argc > 6 ? strtoull(argv[6], NULL, 0) : 2;
		return mut_disk(argv[2], argv[3], argv[4], argc > 5 ? atof(argv[5]) : 0.05);
	}
	if (argc >= 7 && strcmp(argv[1], "mem") == 0 && ho_parse_size(argv[6], &size) == 0) {
		rs = argc > 8 ? strtoull(argv[8], NULL, 0) : 3;
		return mk_mem(argv[2], argv[3], argv[4], argv[5], size / CS * CS, argc > 7 ? atof(argv[7]) : 0.016);
	}
	fprintf(stderr, "usage: mkdataset synth-disk OUT SIZE [SEED]\n"
		"       mkdataset disk BASE NEW DIRTY [FRAC [SEED]]\n"
		"       mkdataset mem DISK MEMBASE MEMNEW DIRTY SIZE [FRAC [SEED]]\n");
	return 2;
}
