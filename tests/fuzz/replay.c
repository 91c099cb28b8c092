/*
 * replay.c — runs a libFuzzer target without libFuzzer, so `make check` replays every fuzz input
 * we keep under gcc: build/tests/fuzz_X-replay [FILE...] calls LLVMFuzzerTestOneInput() on each
 * FILE or, with no argument, on every file of $HANDOFF_SRC/tests/fuzz/corpus/fuzz_X/ and
 * $HANDOFF_SRC/tests/fuzz/golden-bad/fuzz_X/. A crash (or a sanitizer report under SAN=) kills
 * the process, so the exit status is non-zero; a missing or empty corpus is a failure too.
 * Prints one TAP line per input.
 */
#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv) __attribute__((weak));

static int n_run;

static int run_file(const char *path)
{
	FILE *f = fopen(path, "rb");
	uint8_t *buf = NULL;
	size_t len = 0, cap = 0, got;

	if (!f) {
		printf("not ok %d - cannot open '%s': %s\n", ++n_run, path, strerror(errno));
		return 1;
	}
	do {
		if (len == cap) {
			cap = cap ? cap * 2 : 65536;
			uint8_t *nb = realloc(buf, cap);
			if (!nb) {
				fclose(f);
				free(buf);
				return 1;
			}
			buf = nb;
		}
		got = fread(buf + len, 1, cap - len, f);
		len += got;
	} while (got);
	fclose(f);
	/* an exact-size copy, so reads past the end are caught under ASan */
	uint8_t *exact = malloc(len ? len : 1);
	if (!exact) {
		free(buf);
		return 1;
	}
	memcpy(exact, buf, len);
	free(buf);
	LLVMFuzzerTestOneInput(exact, len);
	free(exact);
	printf("ok %d - %s\n", ++n_run, path);
	fflush(stdout);
	return 0;
}

static int compare(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static int run_dir(const char *dir, int *found)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	char **names = NULL;
	size_t n = 0, cap = 0;
	int bad = 0;

	if (!d)
		return 0;
	while ((e = readdir(d))) {
		if (e->d_name[0] == '.')
			continue;
		if (n == cap) {
			cap = cap ? cap * 2 : 64;
			names = realloc(names, cap * sizeof(*names));
			if (!names)
				exit(1);
		}
		size_t l = strlen(dir) + strlen(e->d_name) + 2;
		names[n] = malloc(l);
		snprintf(names[n++], l, "%s/%s", dir, e->d_name);
	}
	closedir(d);
	qsort(names, n, sizeof(*names), compare);
	for (size_t i = 0; i < n; i++) {
		struct stat st;
		if (stat(names[i], &st) == 0 && S_ISREG(st.st_mode)) {
			bad |= run_file(names[i]);
			(*found)++;
		}
		free(names[i]);
	}
	free(names);
	return bad;
}

int main(int argc, char **argv)
{
	int bad = 0, found = 0;

	if (LLVMFuzzerInitialize)
		LLVMFuzzerInitialize(&argc, &argv);
	if (argc > 1) {
		for (int i = 1; i < argc; i++)
			bad |= run_file(argv[i]);
	} else {
		const char *src = getenv("HANDOFF_SRC");
		char target[256], dir[4096];
		const char *base = strrchr(argv[0], '/');
		base = base ? base + 1 : argv[0];
		snprintf(target, sizeof(target), "%s", base);
		char *suffix = strstr(target, "-replay");
		if (suffix)
			*suffix = 0;
		if (!src) {
			printf("Bail out! HANDOFF_SRC is not set (run through make check)\n");
			return 1;
		}
		snprintf(dir, sizeof(dir), "%s/tests/fuzz/corpus/%s", src, target);
		bad |= run_dir(dir, &found);
		snprintf(dir, sizeof(dir), "%s/tests/fuzz/golden-bad/%s", src, target);
		bad |= run_dir(dir, &found);
		if (!found) {
			printf("not ok 1 - no corpus for %s under %s/tests/fuzz\n", target, src);
			return 1;
		}
	}
	printf("1..%d\n", n_run);
	return bad;
}
