/*
 * crashwriter — the writer of the crash test. It writes self-describing blocks (block number,
 * version, checksum) at random positions of FILE, fsyncs, and only then appends "BLOCK VERSION"
 * to an acknowledgement log on a normal file system (fsynced too). After the daemon is killed
 * with -9 and the overlay remounted, `crashwriter verify` checks that every acknowledged block
 * holds its acknowledged version or a later one: nothing acknowledged was lost.
 *
 * usage: crashwriter write FILE ACKLOG SEED BLOCKSIZE   (runs until killed or I/O fails)
 *        crashwriter verify FILE ACKLOG BLOCKSIZE
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAGIC 0x68616e646f666621ull

static uint64_t mix(uint64_t x) { x ^= x >> 33; x *= 0xff51afd7ed558ccdull; x ^= x >> 33; return x; }

static void fill(uint8_t *b, size_t bs, uint64_t blk, uint64_t ver)
{
	uint64_t h[3] = { MAGIC, blk, ver };
	memcpy(b, h, sizeof(h));
	for (size_t i = 24; i < bs; i += 8) {
		uint64_t v = mix(blk * 1000003 + ver * 7919 + i);
		memcpy(b + i, &v, bs - i < 8 ? bs - i : 8);
	}
}

int main(int argc, char **argv)
{
	if (argc < 5) {
		fprintf(stderr, "usage: crashwriter write FILE ACKLOG SEED BS | verify FILE ACKLOG BS\n");
		return 2;
	}
	int writing = !strcmp(argv[1], "write");
	size_t bs = (size_t)atol(argv[writing ? 5 : 4]);
	int fd = open(argv[2], O_RDWR);
	struct stat st;
	if (fd < 0 || fstat(fd, &st) < 0) {
		perror("crashwriter: open");
		return 2;
	}
	uint64_t nblk = (uint64_t)st.st_size / bs;
	uint8_t *b = malloc(bs), *want = malloc(bs);
	if (writing) {
		FILE *log = fopen(argv[3], "a");
		uint64_t seed = strtoull(argv[4], NULL, 0), ver = seed << 32;
		for (;;) {
			int batch = 1 + (int)(mix(ver) % 8);
			uint64_t blks[8];
			for (int i = 0; i < batch; i++) {
				blks[i] = mix(ver * 31 + (uint64_t)i) % nblk;
				fill(b, bs, blks[i], ver);
				if (pwrite(fd, b, bs, (off_t)(blks[i] * bs)) != (ssize_t)bs)
					goto stop;   /* the daemon died: stop */
			}
			if (fsync(fd) < 0)
				goto stop;
			for (int i = 0; i < batch; i++)
				fprintf(log, "%llu %llu\n", (unsigned long long)blks[i], (unsigned long long)ver);
			fflush(log);
			fsync(fileno(log));
			ver++;
		}
stop:
		fclose(log);
		free(b);
		free(want);
		return 0;
	}
	/* verify: the last acknowledged version per block */
	uint64_t *acked = calloc(nblk, sizeof(uint64_t));
	uint8_t *has = calloc(nblk, 1);
	FILE *log = fopen(argv[3], "r");
	unsigned long long blk, ver;
	long nack = 0;
	while (log && fscanf(log, "%llu %llu", &blk, &ver) == 2) {
		if (blk < nblk && (!has[blk] || ver > acked[blk])) {
			acked[blk] = ver;
			has[blk] = 1;
		}
		nack++;
	}
	int bad = 0;
	for (uint64_t i = 0; i < nblk; i++) {
		if (!has[i])
			continue;
		if (pread(fd, b, bs, (off_t)(i * bs)) != (ssize_t)bs) {
			fprintf(stderr, "crashwriter: cannot read block %llu\n", (unsigned long long)i);
			return 1;
		}
		uint64_t h[3];
		memcpy(h, b, sizeof(h));
		if (h[0] != MAGIC || h[1] != i || h[2] < acked[i]) {
			fprintf(stderr, "crashwriter: block %llu lost: acknowledged version %llu, found %s %llu\n",
				(unsigned long long)i, (unsigned long long)acked[i],
				h[0] == MAGIC ? "version" : "garbage", (unsigned long long)h[2]);
			bad++;
			continue;
		}
		fill(want, bs, i, h[2]);
		if (memcmp(b, want, bs)) {
			fprintf(stderr, "crashwriter: block %llu torn (version %llu)\n", (unsigned long long)i,
				(unsigned long long)h[2]);
			bad++;
		}
	}
	printf("# crashwriter: %ld acknowledgements, %d blocks bad\n", nack, bad);
	free(acked);
	free(has);
	free(b);
	free(want);
	if (log)
		fclose(log);
	return bad ? 1 : 0;
}
