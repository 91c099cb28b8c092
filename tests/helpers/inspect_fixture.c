/*
 * inspect_fixture.c — builds overlays for the handoff-inspect tests without a FUSE mount: opens
 * an overlay (OVERLAY_CREATE | OVERLAY_LOCK) and its tracker (TRACKER_CREATE) the way the mount
 * does, and applies a small script of copy-on-write edits read from stdin, with timestamps the
 * script chooses so reports are deterministic.
 *
 * usage: inspect_fixture [--disk BASE | --disk-size SIZE] [--memory BASE | --memory-size SIZE]
 *                        [--chunk-size N]
 *                        OVERLAY_DIR < SCRIPT
 * (a --*-size instead of a BASE makes an all-zero base of that size.)
 * Script lines (IMG is disk or memory; numbers take K/M/G suffixes; '#' starts a comment):
 *   time SECONDS              timestamp of the following writes (default: the real clock)
 *   fill IMG OFF LEN BYTE     LEN bytes of value BYTE (0..255)
 *   random IMG OFF LEN SEED   LEN pseudo-random bytes from SEED (incompressible)
 *   text IMG OFF STRING       the bytes of STRING (rest of the line)
 *   copy IMG OFF SRCIMG SRCOFF LEN      bytes of the CURRENT image SRCIMG
 *   copybase IMG OFF SRCIMG SRCOFF LEN  bytes of the BASE of SRCIMG
 *   file IMG OFF PATH         the contents of a file
 *   revert IMG OFF LEN        the base's own bytes back (the chunk stays marked)
 *   io READ WRITTEN           count bytes served, as the mount does
 *   commit | checkpoint
 * Every edit reads each touched chunk (overlay if marked, else base), modifies it, writes it to
 * the overlay and marks it; commit / checkpoint / end of script make the data durable first.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "common/common.h"
#include "overlay/overlay.h"
#include "tracker/tracker.h"

static struct overlay *ov;
static struct tracker *tr;
static uint64_t now_ns;

static int durable(void *arg)
{
	return overlay_sync(arg);
}

static int image_of(const char *s)
{
	if (s && strcmp(s, "disk") == 0)
		return OVERLAY_DISK;
	if (s && strcmp(s, "memory") == 0)
		return OVERLAY_MEMORY;
	return -1;
}

static int num(const char *s, uint64_t *v)
{
	return s ? ho_parse_size(s, v) : HO_EINVAL;
}

/* Read the current bytes [off, off+len) of img. */
static int read_current(int img, uint8_t *buf, size_t len, uint64_t off)
{
	uint32_t cs = overlay_chunk_size(ov);
	while (len) {
		uint64_t idx = off / cs;
		size_t n = HO_MIN(len, (size_t)((idx + 1) * cs - off));
		int err = tracker_chunk_gen(tr, img, idx) ? overlay_read(ov, img, buf, n, off)
							   : overlay_read_base(ov, img, buf, n, off);
		if (err < 0)
			return err;
		buf += n;
		off += n;
		len -= n;
	}
	return 0;
}

/* Copy-on-write data into img at off, chunk by chunk. */
static int cow_write(int img, const uint8_t *data, size_t len, uint64_t off)
{
	uint32_t cs = overlay_chunk_size(ov);
	uint64_t size = overlay_image_size(ov, img);
	uint8_t *chunk = malloc(cs);
	int err = 0;

	if (!chunk)
		return HO_ENOMEM;
	if (off > size || len > size - off) {
		fprintf(stderr, "inspect_fixture: write %llu+%zu leaves '%s'\n",
			(unsigned long long)off, len, overlay_image_name(img));
		free(chunk);
		return HO_EINVAL;
	}
	while (len) {
		uint64_t idx = off / cs, cstart = idx * cs;
		uint32_t clen = (uint32_t)HO_MIN((uint64_t)cs, size - cstart);
		size_t in = (size_t)(off - cstart), n = HO_MIN(len, (size_t)clen - in);
		if ((err = read_current(img, chunk, clen, cstart)) < 0)
			break;
		memcpy(chunk + in, data, n);
		if ((err = overlay_write(ov, img, chunk, clen, cstart)) < 0)
			break;
		tracker_mark(tr, img, idx, 1, now_ns ? now_ns : ho_now_ns());
		data += n;
		off += n;
		len -= n;
	}
	free(chunk);
	return err;
}

static int run_line(char *line, int lineno)
{
	char *argv[8] = { 0 }, *save = NULL, *p;
	int argc = 0, img, err = 0;
	uint64_t off = 0, len = 0, a = 0, b = 0;
	uint8_t *buf = NULL;

	if ((p = strchr(line, '#')))
		*p = 0;
	line[strcspn(line, "\n")] = 0;
	for (p = strtok_r(line, " \t", &save); p && argc < 8; p = strtok_r(NULL, " \t", &save)) {
		argv[argc++] = p;
		if (argc == 3 && strcmp(argv[0], "text") == 0) {
			argv[argc++] = save;   /* the rest of the line, spaces included */
			break;
		}
	}
	if (!argc)
		return 0;
	img = image_of(argv[1]);
	if (strcmp(argv[0], "time") == 0 && argc == 2) {
		double s = strtod(argv[1], NULL);
		now_ns = (uint64_t)(s * 1e9 + 0.5);
	} else if (strcmp(argv[0], "commit") == 0) {
		err = tracker_commit(tr, durable, ov);
	} else if (strcmp(argv[0], "checkpoint") == 0) {
		uint32_t closed;
		err = tracker_checkpoint(tr, durable, ov, &closed);
	} else if (strcmp(argv[0], "io") == 0 && argc == 3 && !num(argv[1], &a) && !num(argv[2], &b)) {
		tracker_add_io(tr, a, b);
	} else if (strcmp(argv[0], "fill") == 0 && argc == 5 && img >= 0 && !num(argv[2], &off) &&
		   !num(argv[3], &len) && !num(argv[4], &a) && a < 256) {
		if (!(buf = malloc(len ? len : 1)))
			return HO_ENOMEM;
		memset(buf, (int)a, len);
		err = cow_write(img, buf, len, off);
	} else if (strcmp(argv[0], "random") == 0 && argc == 5 && img >= 0 && !num(argv[2], &off) &&
		   !num(argv[3], &len) && !num(argv[4], &a)) {
		uint64_t x = a * 0x9e3779b97f4a7c15ull + 1;
		if (!(buf = malloc(len ? len : 1)))
			return HO_ENOMEM;
		for (uint64_t i = 0; i < len; i++) {
			x ^= x << 13;
			x ^= x >> 7;
			x ^= x << 17;
			buf[i] = (uint8_t)(x >> 24);
		}
		err = cow_write(img, buf, len, off);
	} else if (strcmp(argv[0], "text") == 0 && argc == 4 && img >= 0 && !num(argv[2], &off)) {
		err = cow_write(img, (const uint8_t *)argv[3], strlen(argv[3]), off);
	} else if ((strcmp(argv[0], "copy") == 0 || strcmp(argv[0], "copybase") == 0) && argc == 6 &&
		   img >= 0 && image_of(argv[3]) >= 0 && !num(argv[2], &off) && !num(argv[4], &a) &&
		   !num(argv[5], &len)) {
		int src = image_of(argv[3]);
		if (!(buf = malloc(len ? len : 1)))
			return HO_ENOMEM;
		err = argv[0][4] ? overlay_read_base(ov, src, buf, len, a) : read_current(src, buf, len, a);
		if (err >= 0)
			err = cow_write(img, buf, len, off);
	} else if (strcmp(argv[0], "revert") == 0 && argc == 4 && img >= 0 && !num(argv[2], &off) &&
		   !num(argv[3], &len)) {
		if (!(buf = malloc(len ? len : 1)))
			return HO_ENOMEM;
		err = overlay_read_base(ov, img, buf, len, off);
		if (err >= 0)
			err = cow_write(img, buf, len, off);
	} else if (strcmp(argv[0], "file") == 0 && argc == 4 && img >= 0 && !num(argv[2], &off)) {
		char *data;
		size_t n;
		if ((err = ho_read_file(argv[3], &data, &n, 1u << 30)) >= 0) {
			err = cow_write(img, (uint8_t *)data, n, off);
			free(data);
		}
	} else {
		fprintf(stderr, "inspect_fixture: line %d: cannot parse '%s'\n", lineno, argv[0]);
		return HO_EINVAL;
	}
	free(buf);
	if (err < 0)
		fprintf(stderr, "inspect_fixture: line %d: '%s' failed: %s\n", lineno, argv[0],
			ho_strerror(err));
	return err < 0 ? err : 0;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "disk", required_argument, NULL, 'd' },
		{ "memory", required_argument, NULL, 'm' },
		{ "memory-size", required_argument, NULL, 's' },
		{ "disk-size", required_argument, NULL, 'S' },
		{ "chunk-size", required_argument, NULL, 'c' },
		{ NULL, 0, NULL, 0 },
	};
	struct overlay_base_spec bases[OVERLAY_NIMAGES] = { { NULL, 0 }, { NULL, 0 } };
	bool have_bases = false;
	uint64_t nchunks[OVERLAY_NIMAGES], cs = 0;
	char line[65536];
	int opt, err, lineno = 0;

	ho_log_init("inspect_fixture");
	while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (opt) {
		case 'd': bases[OVERLAY_DISK].path = optarg; have_bases = true; break;
		case 'm': bases[OVERLAY_MEMORY].path = optarg; have_bases = true; break;
		case 's':
			if (ho_parse_size(optarg, &bases[OVERLAY_MEMORY].size) < 0)
				return 2;
			have_bases = true;
			break;
		case 'S':
			if (ho_parse_size(optarg, &bases[OVERLAY_DISK].size) < 0)
				return 2;
			have_bases = true;
			break;
		case 'c':
			if (ho_parse_size(optarg, &cs) < 0)
				return 2;
			break;
		default:
			return 2;
		}
	}
	if (optind + 1 != argc) {
		fprintf(stderr, "usage: inspect_fixture [--disk BASE | --disk-size SIZE] [--memory BASE | "
			"--memory-size SIZE] [--chunk-size N] OVERLAY_DIR < SCRIPT\n");
		return 2;
	}
	err = overlay_open(argv[optind], have_bases ? bases : NULL, (uint32_t)cs,
			   OVERLAY_CREATE | OVERLAY_LOCK, &ov);
	if (err < 0) {
		fprintf(stderr, "inspect_fixture: cannot open overlay '%s': %s\n", argv[optind],
			ho_strerror(err));
		return 1;
	}
	for (int i = 0; i < OVERLAY_NIMAGES; i++)
		nchunks[i] = overlay_nchunks(ov, i);
	err = tracker_open(argv[optind], OVERLAY_NIMAGES, nchunks, TRACKER_CREATE | TRACKER_NOSYNC, &tr);
	if (err < 0) {
		fprintf(stderr, "inspect_fixture: cannot open tracker: %s\n", ho_strerror(err));
		overlay_close(ov);
		return 1;
	}
	while (!err && fgets(line, sizeof(line), stdin))
		err = run_line(line, ++lineno);
	if (!err)
		err = tracker_commit(tr, durable, ov);
	tracker_close(tr);
	overlay_close(ov);
	return err < 0 ? 1 : 0;
}
