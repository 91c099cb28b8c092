/*
 * fsx — a small file-system exerciser for the mount tests: random pread, pwrite, shared
 * writable mmap, fsync and hole punching against one image file, mirrored on an in-memory shadow
 * that starts as a copy of the base; every read is checked against the shadow, and at the end the
 * whole file is. Exits 1 at the first difference, printing where.
 *
 * usage: fsx FILE BASE|-zero SEED OPS [--no-punch] [--shadow-out FILE]
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

static uint64_t rng;
static uint64_t rnd(void) { rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17; return rng; }

static void die(const char *what, long long a, long long b)
{
	fprintf(stderr, "fsx: %s (%lld, %lld): %s\n", what, a, b, strerror(errno));
	exit(1);
}

static void compare(const uint8_t *got, const uint8_t *want, size_t len, uint64_t off, const char *op)
{
	if (memcmp(got, want, len) == 0)
		return;
	for (size_t i = 0; i < len; i++)
		if (got[i] != want[i]) {
			fprintf(stderr, "fsx: %s mismatch at byte %llu: got %02x want %02x\n", op,
				(unsigned long long)(off + i), got[i], want[i]);
			exit(1);
		}
}

int main(int argc, char **argv)
{
	if (argc < 5) {
		fprintf(stderr, "usage: fsx FILE BASE|-zero SEED OPS [--no-punch] [--shadow-out FILE]\n");
		return 2;
	}
	const char *path = argv[1], *base = argv[2], *shadow_out = NULL;
	int punch = 1;
	for (int i = 5; i < argc; i++) {
		if (!strcmp(argv[i], "--no-punch"))
			punch = 0;
		else if (!strcmp(argv[i], "--shadow-out") && i + 1 < argc)
			shadow_out = argv[++i];
	}
	rng = strtoull(argv[3], NULL, 0) * 2654435761u + 1;
	long ops = atol(argv[4]);
	int fd = open(path, O_RDWR);
	struct stat st;
	if (fd < 0 || fstat(fd, &st) < 0)
		die("open", 0, 0);
	size_t size = (size_t)st.st_size;
	uint8_t *shadow = calloc(1, size), *buf = malloc(4 << 20);
	if (strcmp(base, "-zero")) {
		int bfd = open(base, O_RDONLY);
		if (bfd < 0 || pread(bfd, shadow, size, 0) != (ssize_t)size)
			die("read base", 0, 0);
		close(bfd);
	}
	/* the file may already differ from the base (a later round): start from its contents */
	if (strcmp(base, "-zero") && access(path, R_OK) == 0) {
		/* keep: shadow = base; the caller passes the current content as BASE when continuing */
	}
	long counts[6] = { 0 };
	for (long n = 0; n < ops; n++) {
		int op = (int)(rnd() % 100);
		size_t len;
		uint64_t off;
		if (rnd() % 4 == 0)
			len = 1 + rnd() % (1 << 20);      /* large: up to 1 MiB, crosses chunks */
		else
			len = 1 + rnd() % 12288;          /* small: partial chunks */
		if (len > size)
			len = size;
		off = rnd() % (size - len + 1);
		if (op < 35) {                            /* pwrite */
			for (size_t i = 0; i < len; i++)
				buf[i] = (uint8_t)(rnd() >> 24);
			if (rnd() % 3 == 0)
				memset(buf, 0, len / 2);          /* some zero runs */
			if (pwrite(fd, buf, len, (off_t)off) != (ssize_t)len)
				die("pwrite", (long long)off, (long long)len);
			memcpy(shadow + off, buf, len);
			counts[0]++;
		} else if (op < 65) {                     /* pread */
			if (pread(fd, buf, len, (off_t)off) != (ssize_t)len)
				die("pread", (long long)off, (long long)len);
			compare(buf, shadow + off, len, off, "pread");
			counts[1]++;
		} else if (op < 85) {                     /* mmap write (and read back) */
			uint64_t pg = (uint64_t)sysconf(_SC_PAGESIZE);
			uint64_t moff = off / pg * pg;
			size_t mlen = (size_t)(off + len - moff);
			uint8_t *m = mmap(NULL, mlen, PROT_READ | PROT_WRITE, MAP_SHARED, fd, (off_t)moff);
			if (m == MAP_FAILED)
				die("mmap", (long long)moff, (long long)mlen);
			compare(m + (off - moff), shadow + off, len, off, "mmap read");
			for (size_t i = 0; i < len; i += 1 + rnd() % 512) {
				uint8_t v = (uint8_t)rnd();
				m[off - moff + i] = v;
				shadow[off + i] = v;
			}
			if (rnd() % 2 && msync(m, mlen, MS_SYNC) < 0)
				die("msync", (long long)moff, (long long)mlen);
			munmap(m, mlen);
			counts[2]++;
		} else if (op < 92) {                     /* fsync */
			if (fsync(fd) < 0)
				die("fsync", 0, 0);
			counts[3]++;
		} else if (punch) {                       /* discard */
			if (fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)off, (off_t)len) < 0)
				die("fallocate", (long long)off, (long long)len);
			memset(shadow + off, 0, len);
			counts[4]++;
		}
	}
	if (fsync(fd) < 0)
		die("final fsync", 0, 0);
	for (size_t off = 0; off < size; off += 4 << 20) {
		size_t len = size - off < (4u << 20) ? size - off : 4u << 20;
		if (pread(fd, buf, len, (off_t)off) != (ssize_t)len)
			die("final pread", (long long)off, (long long)len);
		compare(buf, shadow + off, len, off, "final");
	}
	if (shadow_out) {
		int o = open(shadow_out, O_WRONLY | O_CREAT | O_TRUNC, 0644);
		if (o < 0 || write(o, shadow, size) != (ssize_t)size)
			die("write shadow", 0, 0);
		close(o);
	}
	free(shadow);
	free(buf);
	close(fd);
	printf("# fsx %s: %ld writes, %ld reads, %ld mmaps, %ld fsyncs, %ld punches\n", path, counts[0],
	       counts[1], counts[2], counts[3], counts[4]);
	return 0;
}
