/*
 * test_mode.c — the mode table: every mode is consistent and findable by name, names are unique,
 * mode_list() prints one line per mode starting with its name, the default exists, and
 * mode_check() refuses inconsistent hand-made modes.
 */
#include <stdlib.h>
#include <string.h>
#include "common/common.h"
#include "pipeline/mode.h"
#include "tests/unit/tap.h"

int main(void)
{
	size_t n = mode_count();
	ok(n >= 8, "%zu modes", n);
	int bad = 0;
	for (size_t i = 0; i < n; i++) {
		const struct mode *m = mode_get(i);
		bad += mode_check(m) != 0 || mode_find(m->name) != m || strchr(m->name, ' ') || !m->desc;
		for (size_t j = 0; j < i; j++)
			bad += strcmp(mode_get(j)->name, m->name) == 0;
	}
	ok(bad == 0, "every mode is consistent, unique and found by name");
	ok(mode_get(n) == NULL, "mode_get past the end is NULL");
	ok(mode_find("no-such-mode") == NULL && mode_find(NULL) == NULL, "unknown names");
	ok(mode_default() && strcmp(mode_default()->name, "delta-zstd3") == 0, "default mode");
	const char *want[] = { "raw", "lz4", "xor-lz4", "delta-lz4", "xor-zstd1", "delta-zstd3", "delta-zstd9", "delta-lzma6", "best" };
	bad = 0;
	for (size_t i = 0; i < HO_ARRAY_SIZE(want); i++)
		bad += mode_find(want[i]) == NULL;
	ok(bad == 0, "the documented modes exist");
	ok(mode_find("raw")->dedup == 0 && mode_find("raw")->frame_codec == CODEC_NONE, "raw does nothing");
	ok(mode_find("best")->far && mode_find("best")->delta == MODE_DELTA_DICT, "best uses far dictionary deltas");

	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);
	is_int(mode_list(f), 0, "mode_list");
	fclose(f);
	size_t lines = 0;
	bad = 0;
	for (char *line = strtok(buf, "\n"); line; line = strtok(NULL, "\n"), lines++) {
		char name[64];
		bad += sscanf(line, "%63s", name) != 1 || mode_find(name) != mode_get(lines) || strlen(line) < strlen(name) + 5;
	}
	is_int(lines, n, "one line per mode");
	ok(bad == 0, "each line starts with the mode's name, then a description");
	free(buf);

	struct mode m = *mode_find("delta-zstd3");
	is_int(mode_check(&m), 0, "a copy checks");
	m.delta_codec = CODEC_NONE;
	is_int(mode_check(&m), HO_EINVAL, "dictionary delta without a codec refused");
	m = *mode_find("delta-zstd3");
	m.frame_level = 99;
	is_int(mode_check(&m), HO_EINVAL, "bad frame level refused");
	m = *mode_find("delta-zstd3");
	m.window = 1000;
	is_int(mode_check(&m), HO_EINVAL, "huge window refused");
	m = *mode_find("delta-zstd3");
	m.frame_size = 100;
	is_int(mode_check(&m), HO_EINVAL, "tiny frames refused");
	is_int(mode_check(NULL), HO_EINVAL, "NULL refused");
	return done_testing();
}
