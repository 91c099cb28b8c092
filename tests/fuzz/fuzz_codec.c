/*
 * fuzz_codec.c — libFuzzer target for the codec wrappers (codec.h). Input: byte 0 selects the
 * codec (low 3 bits, modulo CODEC_COUNT) and the operation (bit 7: compress the rest, decompress
 * it again and require the same bytes; otherwise decompress the rest); byte 1 selects a
 * dictionary length (0..4 KiB of fixed bytes) and the output capacity. Decompression must never
 * write past its capacity (a guard byte is checked) and must return 0 or HO_EFORMAT.
 */
#include <stdlib.h>
#include <string.h>
#include "common/common.h"
#include "pipeline/codec.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const size_t caps[4] = { 64, 4096, 65536, 1 << 20 };
	if (size < 2)
		return 0;
	enum codec c = (enum codec)((data[0] & 7) % CODEC_COUNT);
	size_t dict_len = (size_t)(data[1] & 0x3f) * 64, cap = caps[data[1] >> 6];
	uint8_t *dict = malloc(4096), *out = malloc(cap + 1);
	for (size_t i = 0; i < 4096; i++)
		dict[i] = (uint8_t)(i * 31 + (i >> 7));
	const uint8_t *src = data + 2;
	size_t n = size - 2, ol = 0;
	out[cap] = 0xA5;
	if (data[0] & 0x80) {
		size_t bound = codec_bound(c, n);
		uint8_t *comp = malloc(bound ? bound : 1), *back = malloc(n + 1);
		size_t cl = 0, bl = 0;
		int rc = codec_compress(NULL, c, codec_default_level(c), dict, dict_len, src, n, comp, bound, &cl);
		if (rc != 0)
			abort();                         /* within the bound it must always fit */
		rc = codec_decompress(NULL, c, dict, dict_len, comp, cl, back, n, &bl);
		if (rc != 0 || bl != n || memcmp(back, src, n))
			abort();
		free(comp);
		free(back);
	} else {
		int rc = codec_decompress(NULL, c, dict, dict_len, src, n, out, cap, &ol);
		if ((rc != 0 && rc != HO_EFORMAT && rc != HO_ENOMEM) || (rc == 0 && ol > cap) || out[cap] != 0xA5)
			abort();
	}
	free(dict);
	free(out);
	return 0;
}
