/*
 * heatmap.c — a picture of where a VM wrote: one band per image, one cell per N chunks, cells
 * coloured by the generation of their newest change or by how often they were written, with
 * offsets down the side, a legend, and all text drawn with a built-in 5x7 bitmap font (so the
 * PNG needs no font library). Written with libpng; the band geometry is also stored in tEXt
 * chunks ("handoff-band-disk" = "X Y CELLS_PER_ROW CELL_PX CHUNKS_PER_CELL NCHUNKS") so tests and
 * scripts can find a chunk's pixel without re-deriving the layout.
 */
#include <png.h>
#include <stdlib.h>
#include <string.h>
#include "common/common.h"
#include "inspect/inspect_int.h"

#define GRID_W 1024          /* pixels of a band's grid row */
#define LEFT 120             /* margin for offset labels */
#define RIGHT 16
#define TOP 10
#define IMG_W (LEFT + GRID_W + RIGHT)
#define BAND_MAX 256         /* target height of the largest band */
#define FONT_SCALE 2
#define ADV (6 * FONT_SCALE)
#define LINE (10 * FONT_SCALE)
#define MAX_KEYS 10

/* 5x7 glyphs for ' ' .. '~' plus a descender row, one byte a row, bit 4 the leftmost pixel. */
static const uint8_t font[95][8] = {
	{ 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00 }, /* ' ' */
	{ 0x04, 0x04, 0x04, 0x04, 0x04, 0x00, 0x04, 0x00 }, /* '!' */
	{ 0x0a, 0x0a, 0x0a, 0x00, 0x00, 0x00, 0x00, 0x00 }, /* '"' */
	{ 0x0a, 0x0a, 0x1f, 0x0a, 0x1f, 0x0a, 0x0a, 0x00 }, /* '#' */
	{ 0x04, 0x0f, 0x14, 0x0e, 0x05, 0x1e, 0x04, 0x00 }, /* '$' */
	{ 0x18, 0x19, 0x02, 0x04, 0x08, 0x13, 0x03, 0x00 }, /* '%' */
	{ 0x0c, 0x12, 0x14, 0x08, 0x15, 0x12, 0x0d, 0x00 }, /* '&' */
	{ 0x0c, 0x04, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00 }, /* '\'' */
	{ 0x02, 0x04, 0x08, 0x08, 0x08, 0x04, 0x02, 0x00 }, /* '(' */
	{ 0x08, 0x04, 0x02, 0x02, 0x02, 0x04, 0x08, 0x00 }, /* ')' */
	{ 0x00, 0x04, 0x15, 0x0e, 0x15, 0x04, 0x00, 0x00 }, /* '*' */
	{ 0x00, 0x04, 0x04, 0x1f, 0x04, 0x04, 0x00, 0x00 }, /* '+' */
	{ 0x00, 0x00, 0x00, 0x00, 0x0c, 0x04, 0x08, 0x00 }, /* ',' */
	{ 0x00, 0x00, 0x00, 0x1f, 0x00, 0x00, 0x00, 0x00 }, /* '-' */
	{ 0x00, 0x00, 0x00, 0x00, 0x00, 0x0c, 0x0c, 0x00 }, /* '.' */
	{ 0x00, 0x01, 0x02, 0x04, 0x08, 0x10, 0x00, 0x00 }, /* '/' */
	{ 0x0e, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0e, 0x00 }, /* '0' */
	{ 0x04, 0x0c, 0x04, 0x04, 0x04, 0x04, 0x0e, 0x00 }, /* '1' */
	{ 0x0e, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1f, 0x00 }, /* '2' */
	{ 0x1f, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0e, 0x00 }, /* '3' */
	{ 0x02, 0x06, 0x0a, 0x12, 0x1f, 0x02, 0x02, 0x00 }, /* '4' */
	{ 0x1f, 0x10, 0x1e, 0x01, 0x01, 0x11, 0x0e, 0x00 }, /* '5' */
	{ 0x06, 0x08, 0x10, 0x1e, 0x11, 0x11, 0x0e, 0x00 }, /* '6' */
	{ 0x1f, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08, 0x00 }, /* '7' */
	{ 0x0e, 0x11, 0x11, 0x0e, 0x11, 0x11, 0x0e, 0x00 }, /* '8' */
	{ 0x0e, 0x11, 0x11, 0x0f, 0x01, 0x02, 0x0c, 0x00 }, /* '9' */
	{ 0x00, 0x0c, 0x0c, 0x00, 0x0c, 0x0c, 0x00, 0x00 }, /* ':' */
	{ 0x00, 0x0c, 0x0c, 0x00, 0x0c, 0x04, 0x08, 0x00 }, /* ';' */
	{ 0x02, 0x04, 0x08, 0x10, 0x08, 0x04, 0x02, 0x00 }, /* '<' */
	{ 0x00, 0x00, 0x1f, 0x00, 0x1f, 0x00, 0x00, 0x00 }, /* '=' */
	{ 0x08, 0x04, 0x02, 0x01, 0x02, 0x04, 0x08, 0x00 }, /* '>' */
	{ 0x0e, 0x11, 0x01, 0x02, 0x04, 0x00, 0x04, 0x00 }, /* '?' */
	{ 0x0e, 0x11, 0x01, 0x0d, 0x15, 0x15, 0x0e, 0x00 }, /* '@' */
	{ 0x0e, 0x11, 0x11, 0x1f, 0x11, 0x11, 0x11, 0x00 }, /* 'A' */
	{ 0x1e, 0x11, 0x11, 0x1e, 0x11, 0x11, 0x1e, 0x00 }, /* 'B' */
	{ 0x0e, 0x11, 0x10, 0x10, 0x10, 0x11, 0x0e, 0x00 }, /* 'C' */
	{ 0x1c, 0x12, 0x11, 0x11, 0x11, 0x12, 0x1c, 0x00 }, /* 'D' */
	{ 0x1f, 0x10, 0x10, 0x1e, 0x10, 0x10, 0x1f, 0x00 }, /* 'E' */
	{ 0x1f, 0x10, 0x10, 0x1e, 0x10, 0x10, 0x10, 0x00 }, /* 'F' */
	{ 0x0e, 0x11, 0x10, 0x17, 0x11, 0x11, 0x0f, 0x00 }, /* 'G' */
	{ 0x11, 0x11, 0x11, 0x1f, 0x11, 0x11, 0x11, 0x00 }, /* 'H' */
	{ 0x0e, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0e, 0x00 }, /* 'I' */
	{ 0x07, 0x02, 0x02, 0x02, 0x02, 0x12, 0x0c, 0x00 }, /* 'J' */
	{ 0x11, 0x12, 0x14, 0x18, 0x14, 0x12, 0x11, 0x00 }, /* 'K' */
	{ 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x1f, 0x00 }, /* 'L' */
	{ 0x11, 0x1b, 0x15, 0x15, 0x11, 0x11, 0x11, 0x00 }, /* 'M' */
	{ 0x11, 0x11, 0x19, 0x15, 0x13, 0x11, 0x11, 0x00 }, /* 'N' */
	{ 0x0e, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0e, 0x00 }, /* 'O' */
	{ 0x1e, 0x11, 0x11, 0x1e, 0x10, 0x10, 0x10, 0x00 }, /* 'P' */
	{ 0x0e, 0x11, 0x11, 0x11, 0x15, 0x12, 0x0d, 0x00 }, /* 'Q' */
	{ 0x1e, 0x11, 0x11, 0x1e, 0x14, 0x12, 0x11, 0x00 }, /* 'R' */
	{ 0x0f, 0x10, 0x10, 0x0e, 0x01, 0x01, 0x1e, 0x00 }, /* 'S' */
	{ 0x1f, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x00 }, /* 'T' */
	{ 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0e, 0x00 }, /* 'U' */
	{ 0x11, 0x11, 0x11, 0x11, 0x11, 0x0a, 0x04, 0x00 }, /* 'V' */
	{ 0x11, 0x11, 0x11, 0x15, 0x15, 0x15, 0x0a, 0x00 }, /* 'W' */
	{ 0x11, 0x11, 0x0a, 0x04, 0x0a, 0x11, 0x11, 0x00 }, /* 'X' */
	{ 0x11, 0x11, 0x11, 0x0a, 0x04, 0x04, 0x04, 0x00 }, /* 'Y' */
	{ 0x1f, 0x01, 0x02, 0x04, 0x08, 0x10, 0x1f, 0x00 }, /* 'Z' */
	{ 0x0e, 0x08, 0x08, 0x08, 0x08, 0x08, 0x0e, 0x00 }, /* '[' */
	{ 0x00, 0x10, 0x08, 0x04, 0x02, 0x01, 0x00, 0x00 }, /* '\\' */
	{ 0x0e, 0x02, 0x02, 0x02, 0x02, 0x02, 0x0e, 0x00 }, /* ']' */
	{ 0x04, 0x0a, 0x11, 0x00, 0x00, 0x00, 0x00, 0x00 }, /* '^' */
	{ 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x1f, 0x00 }, /* '_' */
	{ 0x08, 0x04, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00 }, /* '`' */
	{ 0x00, 0x00, 0x0e, 0x01, 0x0f, 0x11, 0x0f, 0x00 }, /* 'a' */
	{ 0x10, 0x10, 0x16, 0x19, 0x11, 0x11, 0x1e, 0x00 }, /* 'b' */
	{ 0x00, 0x00, 0x0e, 0x10, 0x10, 0x11, 0x0e, 0x00 }, /* 'c' */
	{ 0x01, 0x01, 0x0d, 0x13, 0x11, 0x11, 0x0f, 0x00 }, /* 'd' */
	{ 0x00, 0x00, 0x0e, 0x11, 0x1f, 0x10, 0x0e, 0x00 }, /* 'e' */
	{ 0x06, 0x09, 0x08, 0x1c, 0x08, 0x08, 0x08, 0x00 }, /* 'f' */
	{ 0x00, 0x00, 0x0f, 0x11, 0x11, 0x0f, 0x01, 0x0e }, /* 'g' */
	{ 0x10, 0x10, 0x16, 0x19, 0x11, 0x11, 0x11, 0x00 }, /* 'h' */
	{ 0x04, 0x00, 0x0c, 0x04, 0x04, 0x04, 0x0e, 0x00 }, /* 'i' */
	{ 0x02, 0x00, 0x06, 0x02, 0x02, 0x02, 0x12, 0x0c }, /* 'j' */
	{ 0x10, 0x10, 0x12, 0x14, 0x18, 0x14, 0x12, 0x00 }, /* 'k' */
	{ 0x0c, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0e, 0x00 }, /* 'l' */
	{ 0x00, 0x00, 0x1a, 0x15, 0x15, 0x11, 0x11, 0x00 }, /* 'm' */
	{ 0x00, 0x00, 0x16, 0x19, 0x11, 0x11, 0x11, 0x00 }, /* 'n' */
	{ 0x00, 0x00, 0x0e, 0x11, 0x11, 0x11, 0x0e, 0x00 }, /* 'o' */
	{ 0x00, 0x00, 0x1e, 0x11, 0x11, 0x1e, 0x10, 0x10 }, /* 'p' */
	{ 0x00, 0x00, 0x0f, 0x11, 0x11, 0x0f, 0x01, 0x01 }, /* 'q' */
	{ 0x00, 0x00, 0x16, 0x19, 0x10, 0x10, 0x10, 0x00 }, /* 'r' */
	{ 0x00, 0x00, 0x0e, 0x10, 0x0e, 0x01, 0x1e, 0x00 }, /* 's' */
	{ 0x08, 0x08, 0x1c, 0x08, 0x08, 0x09, 0x06, 0x00 }, /* 't' */
	{ 0x00, 0x00, 0x11, 0x11, 0x11, 0x13, 0x0d, 0x00 }, /* 'u' */
	{ 0x00, 0x00, 0x11, 0x11, 0x11, 0x0a, 0x04, 0x00 }, /* 'v' */
	{ 0x00, 0x00, 0x11, 0x11, 0x15, 0x15, 0x0a, 0x00 }, /* 'w' */
	{ 0x00, 0x00, 0x11, 0x0a, 0x04, 0x0a, 0x11, 0x00 }, /* 'x' */
	{ 0x00, 0x00, 0x11, 0x11, 0x11, 0x0f, 0x01, 0x0e }, /* 'y' */
	{ 0x00, 0x00, 0x1f, 0x02, 0x04, 0x08, 0x1f, 0x00 }, /* 'z' */
	{ 0x02, 0x04, 0x04, 0x08, 0x04, 0x04, 0x02, 0x00 }, /* '{' */
	{ 0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x00 }, /* '|' */
	{ 0x08, 0x04, 0x04, 0x02, 0x04, 0x04, 0x08, 0x00 }, /* '}' */
	{ 0x00, 0x00, 0x08, 0x15, 0x02, 0x00, 0x00, 0x00 }, /* '~' */
};

struct canvas {
	int w, h;
	uint8_t *px;   /* RGB */
};

struct rgb { uint8_t r, g, b; };

static const struct rgb C_BG = { 255, 255, 255 }, C_TEXT = { 20, 20, 20 },
			C_CLEAN = { 212, 212, 212 }, C_FRAME = { 96, 96, 96 };

static void fill(struct canvas *c, int x, int y, int w, int h, struct rgb col)
{
	for (int j = HO_MAX(y, 0); j < y + h && j < c->h; j++)
		for (int i = HO_MAX(x, 0); i < x + w && i < c->w; i++) {
			uint8_t *p = c->px + ((size_t)j * c->w + i) * 3;
			p[0] = col.r;
			p[1] = col.g;
			p[2] = col.b;
		}
}

static int text(struct canvas *c, int x, int y, const char *s, struct rgb col)
{
	for (; *s; s++, x += ADV) {
		unsigned ch = (unsigned char)*s;
		const uint8_t *g = font[(ch >= 32 && ch < 127 ? ch : '?') - 32];
		for (int row = 0; row < 8; row++)
			for (int bit = 0; bit < 5; bit++)
				if (g[row] >> (4 - bit) & 1)
					fill(c, x + bit * FONT_SCALE, y + row * FONT_SCALE, FONT_SCALE,
					     FONT_SCALE, col);
	}
	return x;
}

static void frame(struct canvas *c, int x, int y, int w, int h, struct rgb col)
{
	fill(c, x, y, w, 1, col);
	fill(c, x, y + h - 1, w, 1, col);
	fill(c, x, y, 1, h, col);
	fill(c, x + w - 1, y, 1, h, col);
}

/* Interpolate along a few stops; t in [0, 1]. */
static struct rgb ramp(const struct rgb *stops, int n, double t)
{
	double pos = t * (n - 1);
	int i = (int)pos;
	double f;
	struct rgb r;

	if (i >= n - 1)
		return stops[n - 1];
	if (i < 0)
		return stops[0];
	f = pos - i;
	r.r = (uint8_t)(stops[i].r + (stops[i + 1].r - stops[i].r) * f + 0.5);
	r.g = (uint8_t)(stops[i].g + (stops[i + 1].g - stops[i].g) * f + 0.5);
	r.b = (uint8_t)(stops[i].b + (stops[i + 1].b - stops[i].b) * f + 0.5);
	return r;
}

/* viridis-like for generations (old = dark blue, new = yellow), yellow-to-dark-red for writes */
static const struct rgb gen_stops[] = {
	{ 68, 1, 84 }, { 59, 82, 139 }, { 33, 145, 140 }, { 94, 201, 98 }, { 253, 231, 37 },
};
static const struct rgb write_stops[] = {
	{ 254, 196, 79 }, { 253, 141, 60 }, { 227, 26, 28 }, { 128, 0, 38 },
};

/* The legend: up to MAX_KEYS keys, each a value range [lo, hi] and its colour. */
struct keys {
	int n;
	uint64_t lo[MAX_KEYS], hi[MAX_KEYS];
	struct rgb col[MAX_KEYS];
};

static int log2u(uint64_t v)
{
	int n = 0;
	while (v >>= 1)
		n++;
	return n;
}

/* Build the keys for values from 1 to vmax. */
static void make_keys(struct keys *k, enum inspect_heat_by by, uint64_t vmax)
{
	memset(k, 0, sizeof(*k));
	if (!vmax)
		return;
	if (by == INSPECT_HEAT_WRITES) {
		/* power-of-two buckets: 1, 2-3, 4-7, ... */
		int top = log2u(vmax), n = HO_MIN(top + 1, MAX_KEYS);
		for (int i = 0; i < n; i++) {
			k->lo[i] = 1ull << i;
			k->hi[i] = i == n - 1 ? vmax : (2ull << i) - 1;
			k->col[i] = ramp(write_stops, HO_ARRAY_SIZE(write_stops),
					 n == 1 ? 1.0 : (double)i / (n - 1));
		}
		k->n = n;
	} else {
		/* generations split into equal ranges */
		uint64_t per = (vmax + MAX_KEYS - 1) / MAX_KEYS;
		int n = (int)((vmax + per - 1) / per);
		for (int i = 0; i < n; i++) {
			k->lo[i] = 1 + i * per;
			k->hi[i] = HO_MIN(vmax, (i + 1) * per);
			k->col[i] = ramp(gen_stops, HO_ARRAY_SIZE(gen_stops),
					 n == 1 ? 1.0 : (double)i / (n - 1));
		}
		k->n = n;
	}
}

static struct rgb key_colour(const struct keys *k, uint64_t v)
{
	for (int i = 0; i < k->n; i++)
		if (v <= k->hi[i])
			return k->col[i];
	return k->n ? k->col[k->n - 1] : C_CLEAN;
}

struct band {
	int x, y, rows;
	uint64_t cells;
};

struct png_mem {
	uint8_t *buf;
	size_t len, cap;
	bool oom;
};

static void png_mem_write(png_structp png, png_bytep data, png_size_t len)
{
	struct png_mem *m = png_get_io_ptr(png);
	if (m->oom)
		return;
	if (m->len + len > m->cap) {
		size_t cap = HO_MAX(m->cap * 2, m->len + len + 65536);
		uint8_t *n = realloc(m->buf, cap);
		if (!n) {
			m->oom = true;
			return;
		}
		m->buf = n;
		m->cap = cap;
	}
	memcpy(m->buf + m->len, data, len);
	m->len += len;
}

static void png_mem_flush(png_structp png) { (void)png; }

static int encode_png(const struct canvas *c, png_text *texts, int ntexts, struct png_mem *m)
{
	png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
	png_infop info = png ? png_create_info_struct(png) : NULL;
	png_bytep *rows = calloc((size_t)c->h, sizeof(*rows));
	int err = HO_ENOMEM;

	if (!png || !info || !rows)
		goto out;
	if (setjmp(png_jmpbuf(png))) {
		err = HO_EIO;
		goto out;
	}
	png_set_write_fn(png, m, png_mem_write, png_mem_flush);
	png_set_IHDR(png, info, (png_uint_32)c->w, (png_uint_32)c->h, 8, PNG_COLOR_TYPE_RGB,
		     PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
	png_set_text(png, info, texts, ntexts);
	for (int y = 0; y < c->h; y++)
		rows[y] = c->px + (size_t)y * c->w * 3;
	png_set_rows(png, info, rows);
	png_write_png(png, info, PNG_TRANSFORM_IDENTITY, NULL);
	err = m->oom ? HO_ENOMEM : 0;
out:
	png_destroy_write_struct(png ? &png : NULL, info ? &info : NULL);
	free(rows);
	return err;
}

int inspect_heatmap(struct inspect *in, enum inspect_heat_by by, const char *png_path)
{
	uint64_t maxchunks = 1, vmax = 0, cpc = 1, cs = in->chunk_size;
	int cell = 16, per_row, h, y;
	struct band band[OVERLAY_NIMAGES];
	struct canvas cv = { 0 };
	struct keys keys;
	char buf[256], a[32], b[32];
	char keybuf[OVERLAY_NIMAGES][160], keyname[OVERLAY_NIMAGES][32];
	png_text texts[OVERLAY_NIMAGES + 1];
	struct png_mem m = { 0 };
	int err, ntexts = 0;

	for (int i = 0; i < OVERLAY_NIMAGES; i++) {
		maxchunks = HO_MAX(maxchunks, in->img[i].nchunks);
		for (size_t k = 0; k < in->img[i].count; k++) {
			const struct inspect_chunk *c = &in->img[i].chunks[k];
			vmax = HO_MAX(vmax, by == INSPECT_HEAT_GEN ? c->gen : HO_MAX(c->writes, 1));
		}
	}
	/* the largest cell size (16..1 px) whose largest band fits BAND_MAX rows of pixels; when
	 * even 1 px per chunk is too tall, N chunks per cell */
	while (cell > 1 && (maxchunks + GRID_W / cell - 1) / (GRID_W / cell) * cell > BAND_MAX)
		cell /= 2;
	per_row = GRID_W / cell;
	if ((maxchunks + per_row - 1) / per_row * cell > BAND_MAX)
		cpc = (maxchunks + (uint64_t)per_row * (BAND_MAX / cell) - 1) /
		      ((uint64_t)per_row * (BAND_MAX / cell));
	make_keys(&keys, by, vmax);

	/* layout */
	y = TOP + LINE + 8;
	for (int i = 0; i < OVERLAY_NIMAGES; i++) {
		band[i].cells = (in->img[i].nchunks + cpc - 1) / cpc;
		band[i].rows = (int)((band[i].cells + per_row - 1) / per_row);
		band[i].x = LEFT;
		band[i].y = y + LINE + 4;
		y = band[i].y + band[i].rows * cell + 14;
	}
	h = y + LINE + 4 + ((keys.n + 2 + 3) / 4) * (LINE + 6) + 8;
	cv.w = IMG_W;
	cv.h = h;
	cv.px = malloc((size_t)cv.w * cv.h * 3);
	if (!cv.px)
		return HO_ENOMEM;
	fill(&cv, 0, 0, cv.w, cv.h, C_BG);

	snprintf(buf, sizeof(buf), "handoff-inspect heatmap: '%s', by %s", in->dir,
		 by == INSPECT_HEAT_GEN ? "generation of last change" : "write count");
	text(&cv, 8, TOP, buf, C_TEXT);

	for (int i = 0; i < OVERLAY_NIMAGES; i++) {
		const struct inspect_image *im = &in->img[i];
		struct band *bd = &band[i];
		uint64_t *val = NULL;
		int tick = HO_MAX(32, cell * 2);

		snprintf(buf, sizeof(buf), "%s  %s  %llu of %llu chunks modified  cell = %llu chunk%s (%s)",
			 overlay_image_name(i), ho_fmt_bytes(im->size, a, sizeof(a)),
			 (unsigned long long)im->count, (unsigned long long)im->nchunks,
			 (unsigned long long)cpc, cpc == 1 ? "" : "s",
			 ho_fmt_bytes(cpc * cs, b, sizeof(b)));
		text(&cv, 8, bd->y - LINE - 2, buf, C_TEXT);
		if (!bd->rows)
			continue;
		val = calloc(bd->cells, sizeof(*val));
		if (!val) {
			err = HO_ENOMEM;
			goto out;
		}
		for (size_t k = 0; k < im->count; k++) {
			const struct inspect_chunk *c = &im->chunks[k];
			uint64_t v = by == INSPECT_HEAT_GEN ? c->gen : HO_MAX(c->writes, 1);
			val[c->idx / cpc] = HO_MAX(val[c->idx / cpc], v);
		}
		for (uint64_t k = 0; k < bd->cells; k++)
			fill(&cv, bd->x + (int)(k % per_row) * cell, bd->y + (int)(k / per_row) * cell,
			     cell, cell, val[k] ? key_colour(&keys, val[k]) : C_CLEAN);
		free(val);
		frame(&cv, bd->x - 1, bd->y - 1, per_row * cell + 2, bd->rows * cell + 2, C_FRAME);
		/* offsets down the left side */
		for (int r = 0; r < bd->rows * cell; r += tick) {
			uint64_t off = (uint64_t)(r / cell) * per_row * cpc * cs;
			ho_fmt_bytes(off, a, sizeof(a));
			if (off == 0)
				snprintf(a, sizeof(a), "0");
			text(&cv, LEFT - 8 - ADV * (int)strlen(a), bd->y + r, a, C_TEXT);
			fill(&cv, LEFT - 6, bd->y + r, 4, 1, C_FRAME);
		}
		snprintf(keyname[i], sizeof(keyname[i]), "handoff-band-%s", overlay_image_name(i));
		snprintf(keybuf[i], sizeof(keybuf[i]), "%d %d %d %d %llu %llu", bd->x, bd->y, per_row,
			 cell, (unsigned long long)cpc, (unsigned long long)im->nchunks);
		texts[ntexts].compression = PNG_TEXT_COMPRESSION_NONE;
		texts[ntexts].key = keyname[i];
		texts[ntexts].text = keybuf[i];
		texts[ntexts].text_length = strlen(keybuf[i]);
		ntexts++;
	}

	/* legend */
	y = band[OVERLAY_NIMAGES - 1].y + band[OVERLAY_NIMAGES - 1].rows * cell + 14;
	text(&cv, 8, y, by == INSPECT_HEAT_GEN ? "legend: generation of the newest change in a cell"
					       : "legend: most writes to one chunk of a cell", C_TEXT);
	y += LINE + 4;
	for (int i = -1; i < keys.n; i++) {
		int col = (i + 1) % 4, row = (i + 1) / 4, x = 8 + col * 280, yy = y + row * (LINE + 6);
		struct rgb c = i < 0 ? C_CLEAN : keys.col[i];
		if (i < 0)
			snprintf(buf, sizeof(buf), "clean");
		else if (keys.lo[i] == keys.hi[i])
			snprintf(buf, sizeof(buf), "%s %llu", by == INSPECT_HEAT_GEN ? "gen" : "writes",
				 (unsigned long long)keys.lo[i]);
		else
			snprintf(buf, sizeof(buf), "%s %llu-%llu", by == INSPECT_HEAT_GEN ? "gen" : "writes",
				 (unsigned long long)keys.lo[i], (unsigned long long)keys.hi[i]);
		fill(&cv, x, yy, 28, 14, c);
		frame(&cv, x, yy, 28, 14, C_FRAME);
		text(&cv, x + 36, yy, buf, C_TEXT);
	}

	if ((err = encode_png(&cv, texts, ntexts, &m)) < 0) {
		ho_err("cannot encode the heatmap: %s", ho_strerror(err));
		goto out;
	}
	if ((err = ho_write_file_atomic(png_path, m.buf, m.len)) < 0)
		ho_err("cannot write heatmap '%s': %s", png_path, ho_strerror(err));
out:
	free(m.buf);
	free(cv.px);
	return err;
}
