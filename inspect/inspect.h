/*
 * inspect.h — read-only answers to "what did this VM change, and what would it cost to send?":
 * the library behind handoff-inspect(1). It opens an overlay with OVERLAY_READONLY and its index
 * with TRACKER_READONLY, never takes the overlay lock, and so is safe beside a live mount (it sees
 * the tracker's committed state; a chunk written but not yet committed reads as base).
 *
 * Every report function writes to a caller-supplied FILE (the tool passes stdout, which for
 * handoff-inspect carries the report, not a stream) and logs problems with ho_err() to stderr.
 * All functions return 0 or a negative enum ho_err (common/common.h). A handle is not
 * thread-safe: use it from one thread at a time.
 */
#ifndef HANDOFF_INSPECT_H
#define HANDOFF_INSPECT_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

struct inspect;

enum inspect_flags {
	INSPECT_NO_TIMES = 1 << 0,   /* leave wall-clock times and rates out of every report */
};

/* How a modified chunk's current content relates to the bases, most useful first. */
enum inspect_class {
	INSPECT_UNCLASSIFIED = 0,
	INSPECT_REVERTED,     /* equal to the base chunk at the same offset: nothing to send */
	INSPECT_ZERO,         /* all zero bytes */
	INSPECT_DUP_BASE,     /* equal to some other base chunk (disk or memory base) */
	INSPECT_DUP_OVERLAY,  /* equal to an earlier modified chunk (disk or memory) */
	INSPECT_REST,         /* unique new data: what compression has to squeeze */
	INSPECT_NCLASSES,
};

/* One modified chunk as the inspector sees it. */
struct inspect_chunk {
	int image;                    /* enum overlay_image */
	uint64_t idx;                 /* chunk index; byte offset = idx * chunk size */
	uint32_t gen;                 /* generation of the last modification */
	uint64_t first_ns, last_ns;   /* CLOCK_REALTIME of the first and last write */
	uint64_t writes;              /* write requests that touched it */
	uint32_t len;                 /* bytes in the chunk (less than the chunk size at an image's end) */
	enum inspect_class cls;       /* after inspect_classify(); INSPECT_UNCLASSIFIED before */
	uint8_t hash[16];             /* ho_xxh128 of the current content (after inspect_classify) */
	int ref_image;                /* DUP_BASE / DUP_OVERLAY: where the equal chunk lives */
	uint64_t ref_idx;
};

/* Which chunks a report covers. Bounds are inclusive; see inspect_filter_init(). */
struct inspect_filter {
	int image;                    /* -1: every image */
	uint32_t gen_min, gen_max;    /* generation range */
	uint64_t since_ns;            /* last write at or after this */
	uint64_t until_ns;            /* first write at or before this */
	uint64_t off_min, off_max;    /* chunks overlapping bytes [off_min, off_max] */
};

enum inspect_format { INSPECT_TABLE = 0, INSPECT_JSON, INSPECT_CSV };

enum inspect_heat_by { INSPECT_HEAT_GEN = 0, INSPECT_HEAT_WRITES };

/*
 * Open the overlay in dir read-only (its recorded bases; the base identity is checked as
 * overlay_open does) and load the committed chunk index. flags: enum inspect_flags.
 * Errors: HO_ENOENT (no overlay or no index there, or a base file missing), HO_ECORRUPT (meta or
 * index unreadable or inconsistent, e.g. a chunk index beyond the image), HO_EBASE, HO_EDB,
 * HO_ENOMEM, HO_EIO. *out is NULL after an error.
 */
int inspect_open(const char *dir, unsigned flags, struct inspect **out);
void inspect_close(struct inspect *in);

uint32_t inspect_chunk_size(const struct inspect *in);
uint64_t inspect_image_size(const struct inspect *in, int image);
/* The open generation recorded in the index. */
uint32_t inspect_generation(const struct inspect *in);

/* Read len bytes of the CURRENT image (overlay where a chunk is modified, else base) at off.
 * HO_EINVAL when the range leaves the image. */
int inspect_read(struct inspect *in, int image, void *buf, size_t len, uint64_t off);

/* Classify every modified chunk (reads each once, scans both bases once when any chunk is
 * neither zero nor reverted). Idempotent; the report functions call it themselves. */
int inspect_classify(struct inspect *in);
/* The modified chunks of image (ordered by index) and their number; valid until close. */
const struct inspect_chunk *inspect_chunks(const struct inspect *in, int image, size_t *count);
/* "reverted", "zero", "dup-base", "dup-overlay", "rest", "-". */
const char *inspect_class_name(enum inspect_class c);

/* ---- filters and argument parsing (shared with the tool) ---------------------------------- */

/* Everything: all images, all generations, all times, all offsets. */
void inspect_filter_init(struct inspect_filter *f);
bool inspect_filter_match(const struct inspect *in, const struct inspect_filter *f,
			  const struct inspect_chunk *c);
/* "A..B", "A..", "..B" or "A" into [lo, hi] with parse() for each end (missing ends keep the
 * values already in *lo / *hi). HO_EINVAL on a malformed range or lo > hi. */
int inspect_parse_range(const char *s, int (*parse)(const char *, uint64_t *), uint64_t *lo,
			uint64_t *hi);
/* A plain unsigned decimal number. */
int inspect_parse_u64(const char *s, uint64_t *out);
/* A time: "@SECONDS[.FRACTION]" since the epoch, or UTC "YYYY-MM-DD[THH:MM[:SS[.FRACTION]]][Z]". */
int inspect_parse_time(const char *s, uint64_t *ns);
/* "disk" / "memory" to enum overlay_image; HO_EINVAL otherwise. */
int inspect_parse_image(const char *s, int *image);
/* Format ns as UTC "YYYY-MM-DDTHH:MM:SS.mmmZ" into buf (>= 32 bytes); "-" for 0. */
char *inspect_fmt_time(uint64_t ns, char *buf, size_t len);

/* ---- reports --------------------------------------------------------------------------------- */

/* Per image and generation: modified chunks and bytes, write times and rate, classes, and two
 * estimates of what a stream would weigh:
 * - estimates: the rest chunks compressed with each codec of a comma-separated list of
 *   CODEC[:LEVEL] with the pipeline's codec names ("lz4", "lz4hc", "zstd", "lzma"; the codec's
 *   default level when none is given), in 1 MiB frames as a stream's frames are; references and
 *   headers not counted. NULL means "lz4,zstd,lzma", "" none.
 * - modes: the size of the stream handoff-export would write now for every generation, in each
 *   named mode (pipeline/mode.h; "all" for every mode): every modified chunk through the
 *   pipeline's chunk encoder and stream encoder into a byte counter. NULL means
 *   "lz4,delta-zstd3", "" none.
 * fmt: INSPECT_TABLE (text) or INSPECT_JSON (one object). HO_EINVAL for a bad list. */
int inspect_summary(struct inspect *in, const char *estimates, const char *modes,
		    enum inspect_format fmt, FILE *out);

/* One row per modified chunk matching f. */
int inspect_list(struct inspect *in, const struct inspect_filter *f, enum inspect_format fmt,
		 FILE *out);

/* The changed byte ranges of [off, off+len) of image against its base, hexdump-style. Prints
 * "no change" when current and base agree. HO_EINVAL when the range leaves the image. */
int inspect_diff(struct inspect *in, int image, uint64_t off, uint64_t len, FILE *out);

/* Map the disk image's modified chunks to ext2/3/4 paths, inodes and metadata, for a filesystem
 * on the whole disk or in MBR/GPT partitions. HO_ENOENT when no ext filesystem is found. */
int inspect_files(struct inspect *in, enum inspect_format fmt, FILE *out);

/* Write a PNG heatmap of every image's chunks, coloured by generation or write count, with a
 * legend, to png_path ("-" is not allowed: PNG is binary). Durable replace (temp + rename). */
int inspect_heatmap(struct inspect *in, enum inspect_heat_by by, const char *png_path);

/* What inspect_stream() needs besides the file. */
struct inspect_stream_opts {
	const char *overlay_dir;      /* an overlay on the stream's bases, opened read-only; NULL:
	                                 records that need base bytes cannot be rebuilt (HO_EBASE) */
	const uint8_t *key;           /* pre-shared key of an authenticated stream, else NULL */
	size_t key_len;
	enum inspect_format fmt;      /* INSPECT_TABLE or INSPECT_JSON */
};

/* Verify and describe the handoff stream in path ("-" = stdin) without applying it: header,
 * records by encoding, where its bytes go. A stream that fails verification gives its error
 * (HO_ECHECKSUM, HO_EAUTH, HO_EFORMAT, HO_ETRUNC, HO_ESEQ, HO_ETRAILING, HO_EDIGEST, ...; one line
 * logged) after a report of what was verified up to there; HO_EBASE when the stream refers to
 * base bytes and no overlay on the same bases was given. */
int inspect_stream(const char *path, const struct inspect_stream_opts *o, FILE *out);

#endif
