/*
 * handoff-inspect.c — the read-only looking glass over an overlay (handoff-inspect(1)): parses
 * the subcommand and its options, calls the inspect/ library, maps errors to the exit codes the
 * man page documents. No logic of its own.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "common/common.h"
#include "inspect/inspect.h"
#include "pipeline/pipeline.h"

enum exit_code {
	EXIT_OK = 0,
	EXIT_FAIL = 1,        /* I/O error, out of memory, anything else */
	EXIT_USAGE = 2,       /* bad command line */
	EXIT_NOOVERLAY = 3,   /* no overlay (or no index) at OVERLAY_DIR, or a base file missing */
	EXIT_CORRUPT = 4,     /* overlay meta or index corrupt or of an unknown version */
	EXIT_BASE = 5,        /* a base image differs from the one the overlay was made on */
	EXIT_STREAM = 6,      /* a stream failed verification or is malformed */
	EXIT_NOFS = 7,        /* files: no ext2/3/4 filesystem on the disk image */
};

static const char usage_text[] =
	"usage: handoff-inspect [-q|-v] SUBCOMMAND [options] OVERLAY_DIR\n"
	"  summary [--json] [--estimate LIST] [--modes LIST] [--no-estimate] [--no-times] OVERLAY_DIR\n"
	"  list [--image IMG] [--gen A..B] [--since T] [--until T] [--offset A..B]\n"
	"       [--json | --csv] [--no-times] OVERLAY_DIR\n"
	"  diff --image IMG (--chunk N | --offset OFF [--length LEN]) OVERLAY_DIR\n"
	"  files [--json] OVERLAY_DIR\n"
	"  heatmap [--by gen|writes] -o FILE.png OVERLAY_DIR\n"
	"  stream [--overlay DIR] [--key FILE] [--json] FILE|-\n"
	"see handoff-inspect(1)\n";

/* A usage error: one line, pointing at --help. */
static int usage(const char *fmt, const char *arg)
{
	char msg[512];
	snprintf(msg, sizeof(msg), fmt ? fmt : "invalid command line", arg ? arg : "");
	ho_err("%s (see handoff-inspect --help)", msg);
	return EXIT_USAGE;
}

static int exit_for(int err)
{
	switch (err) {
	case 0: return EXIT_OK;
	case HO_ENOENT: return EXIT_NOOVERLAY;
	case HO_ECORRUPT: case HO_EDB: case HO_EVERSION: return EXIT_CORRUPT;
	case HO_EBASE: return EXIT_BASE;
	case HO_EINVAL: return EXIT_USAGE;
	case HO_ECHECKSUM: case HO_EAUTH: case HO_EFORMAT: case HO_ETRUNC: case HO_ESEQ:
	case HO_ETRAILING: case HO_EDIGEST:
		return EXIT_STREAM;
	default: return EXIT_FAIL;
	}
}

enum {
	OPT_JSON = 256, OPT_CSV, OPT_NO_TIMES, OPT_ESTIMATE, OPT_NO_ESTIMATE, OPT_IMAGE, OPT_GEN,
	OPT_SINCE, OPT_UNTIL, OPT_OFFSET, OPT_CHUNK, OPT_LENGTH, OPT_BY, OPT_OVERLAY, OPT_KEY, OPT_MODES,
};

static const struct option long_opts[] = {
	{ "json", no_argument, NULL, OPT_JSON },
	{ "csv", no_argument, NULL, OPT_CSV },
	{ "no-times", no_argument, NULL, OPT_NO_TIMES },
	{ "estimate", required_argument, NULL, OPT_ESTIMATE },
	{ "no-estimate", no_argument, NULL, OPT_NO_ESTIMATE },
	{ "modes", required_argument, NULL, OPT_MODES },
	{ "image", required_argument, NULL, OPT_IMAGE },
	{ "gen", required_argument, NULL, OPT_GEN },
	{ "since", required_argument, NULL, OPT_SINCE },
	{ "until", required_argument, NULL, OPT_UNTIL },
	{ "offset", required_argument, NULL, OPT_OFFSET },
	{ "chunk", required_argument, NULL, OPT_CHUNK },
	{ "length", required_argument, NULL, OPT_LENGTH },
	{ "by", required_argument, NULL, OPT_BY },
	{ "overlay", required_argument, NULL, OPT_OVERLAY },
	{ "key", required_argument, NULL, OPT_KEY },
	{ "output", required_argument, NULL, 'o' },
	{ "quiet", no_argument, NULL, 'q' },
	{ "verbose", no_argument, NULL, 'v' },
	{ "help", no_argument, NULL, 'h' },
	{ NULL, 0, NULL, 0 },
};

/* Options valid per subcommand (besides -q -v -h). */
struct subcmd {
	const char *name;
	const int *opts;
};
static const int o_summary[] = { OPT_JSON, OPT_NO_TIMES, OPT_ESTIMATE, OPT_NO_ESTIMATE, OPT_MODES, 0 };
static const int o_list[] = { OPT_JSON, OPT_CSV, OPT_NO_TIMES, OPT_IMAGE, OPT_GEN, OPT_SINCE,
			      OPT_UNTIL, OPT_OFFSET, 0 };
static const int o_diff[] = { OPT_IMAGE, OPT_CHUNK, OPT_OFFSET, OPT_LENGTH, 0 };
static const int o_files[] = { OPT_JSON, 0 };
static const int o_heatmap[] = { OPT_BY, 'o', 0 };
static const int o_stream[] = { OPT_JSON, OPT_OVERLAY, OPT_KEY, 0 };
static const struct subcmd subcmds[] = {
	{ "summary", o_summary }, { "list", o_list }, { "diff", o_diff }, { "files", o_files },
	{ "heatmap", o_heatmap }, { "stream", o_stream },
};

static bool allowed(const struct subcmd *sc, int opt)
{
	for (const int *o = sc->opts; *o; o++)
		if (*o == opt)
			return true;
	return false;
}

static int parse_size_u64(const char *s, uint64_t *v) { return ho_parse_size(s, v); }

int main(int argc, char **argv)
{
	const struct subcmd *sc = NULL;
	struct inspect_filter f;
	enum inspect_format fmt = INSPECT_TABLE;
	enum inspect_heat_by by = INSPECT_HEAT_GEN;
	const char *estimates = NULL, *modes = NULL, *output = NULL, *chunk_arg = NULL, *off_arg = NULL,
		   *len_arg = NULL, *image_arg = NULL, *overlay_arg = NULL, *key_arg = NULL;
	unsigned flags = 0;
	int verbose = 0, quiet = 0, opt, err;
	struct inspect *in = NULL;
	const char *dir;

	ho_log_init(argv[0]);
	inspect_filter_init(&f);
	/* global -q / -v / -h before the subcommand */
	while (argc > 1 && argv[1][0] == '-') {
		if (strcmp(argv[1], "-q") == 0 || strcmp(argv[1], "--quiet") == 0)
			quiet++;
		else if (strcmp(argv[1], "-v") == 0 || strcmp(argv[1], "--verbose") == 0)
			verbose++;
		else if (strcmp(argv[1], "-vv") == 0)
			verbose += 2;
		else if (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0) {
			fputs(usage_text, stdout);
			return EXIT_OK;
		} else
			return usage("unknown option '%s' (the subcommand comes first)", argv[1]);
		argv[1] = argv[0];
		argv++;
		argc--;
	}
	if (argc < 2)
		return usage("missing subcommand", NULL);
	for (size_t i = 0; i < HO_ARRAY_SIZE(subcmds); i++)
		if (strcmp(argv[1], subcmds[i].name) == 0)
			sc = &subcmds[i];
	if (!sc)
		return usage("unknown subcommand '%s'", argv[1]);
	argv[1] = argv[0];
	argv++;
	argc--;

	opterr = 0;
	while ((opt = getopt_long(argc, argv, ":o:qvh", long_opts, NULL)) != -1) {
		uint64_t lo, hi;
		if (opt == '?' || opt == ':')
			return usage("invalid option or missing argument in '%s'", argv[optind - 1]);
		if (opt == 'q') { quiet++; continue; }
		if (opt == 'v') { verbose++; continue; }
		if (opt == 'h') { fputs(usage_text, stdout); return EXIT_OK; }
		if (!allowed(sc, opt))
			return usage("option '%s' does not apply here", argv[optind - 1]);
		switch (opt) {
		case OPT_JSON: fmt = INSPECT_JSON; break;
		case OPT_CSV: fmt = INSPECT_CSV; break;
		case OPT_NO_TIMES: flags |= INSPECT_NO_TIMES; break;
		case OPT_ESTIMATE: estimates = optarg; break;
		case OPT_NO_ESTIMATE: estimates = ""; modes = ""; break;
		case OPT_MODES: modes = optarg; break;
		case OPT_IMAGE:
			image_arg = optarg;
			if (inspect_parse_image(optarg, &f.image) < 0)
				return usage("invalid image '%s' (disk or memory)", optarg);
			break;
		case OPT_GEN:
			lo = 0;
			hi = UINT32_MAX;
			if (inspect_parse_range(optarg, inspect_parse_u64, &lo, &hi) < 0 || hi > UINT32_MAX)
				return usage("invalid generation range '%s' (A..B, A.., ..B or N)", optarg);
			f.gen_min = (uint32_t)lo;
			f.gen_max = (uint32_t)hi;
			break;
		case OPT_SINCE:
			if (inspect_parse_time(optarg, &f.since_ns) < 0)
				return usage("invalid time '%s' (@SECONDS or YYYY-MM-DDTHH:MM:SS, UTC)", optarg);
			break;
		case OPT_UNTIL:
			if (inspect_parse_time(optarg, &f.until_ns) < 0)
				return usage("invalid time '%s' (@SECONDS or YYYY-MM-DDTHH:MM:SS, UTC)", optarg);
			break;
		case OPT_OFFSET:
			off_arg = optarg;
			if (sc->opts == o_list &&
			    inspect_parse_range(optarg, parse_size_u64, &f.off_min, &f.off_max) < 0)
				return usage("invalid offset range '%s' (A..B, A.., ..B or N)", optarg);
			break;
		case OPT_CHUNK: chunk_arg = optarg; break;
		case OPT_LENGTH: len_arg = optarg; break;
		case OPT_BY:
			if (strcmp(optarg, "gen") == 0)
				by = INSPECT_HEAT_GEN;
			else if (strcmp(optarg, "writes") == 0)
				by = INSPECT_HEAT_WRITES;
			else
				return usage("invalid --by '%s' (gen or writes)", optarg);
			break;
		case 'o': output = optarg; break;
		case OPT_OVERLAY: overlay_arg = optarg; break;
		case OPT_KEY: key_arg = optarg; break;
		}
	}
	if (quiet)
		ho_log_set_level(LOG_ERR);
	else if (verbose)
		ho_log_set_level(verbose > 1 ? LOG_DEBUG : LOG_INFO);
	if (optind + 1 != argc)
		return usage(optind < argc ? "too many arguments" : "missing %s",
			     sc->opts == o_stream ? "FILE" : "OVERLAY_DIR");
	dir = argv[optind];

	if (sc->opts == o_stream) {
		struct inspect_stream_opts so = { overlay_arg, NULL, 0, fmt };
		uint8_t *key = NULL;
		size_t key_len = 0;
		if (key_arg && (err = pipeline_load_key(key_arg, &key, &key_len)) < 0)
			return err == HO_EINVAL ? EXIT_USAGE : EXIT_FAIL;
		so.key = key;
		so.key_len = key_len;
		err = inspect_stream(dir, &so, stdout);
		if (key) {
			memset(key, 0, key_len);
			free(key);
		}
		if (fflush(stdout) != 0 && !err) {
			ho_err("cannot write the report: output error");
			err = HO_EIO;
		}
		return exit_for(err);
	}
	if (sc->opts == o_heatmap && !output)
		return usage("heatmap needs -o FILE.png", NULL);
	if (sc->opts == o_heatmap && strcmp(output, "-") == 0)
		return usage("heatmap writes a PNG file, not to stdout: give -o FILE.png", NULL);
	if (sc->opts == o_diff) {
		if (!image_arg)
			return usage("diff needs --image disk|memory", NULL);
		if (!chunk_arg == !off_arg)
			return usage("diff needs one of --chunk N or --offset OFF", NULL);
		if (len_arg && !off_arg)
			return usage("--length goes with --offset", NULL);
	}

	if ((err = inspect_open(dir, flags, &in)) < 0)
		return exit_for(err);
	switch (sc->opts == o_summary ? 0 : sc->opts == o_list ? 1 : sc->opts == o_diff ? 2 :
		sc->opts == o_files ? 3 : 4) {
	case 0:
		err = inspect_summary(in, estimates, modes, fmt, stdout);
		break;
	case 1:
		err = inspect_list(in, &f, fmt, stdout);
		break;
	case 2: {
		uint64_t cs = inspect_chunk_size(in), size = inspect_image_size(in, f.image), off, len;
		if (chunk_arg) {
			uint64_t n;
			if (inspect_parse_u64(chunk_arg, &n) < 0 || n >= (size + cs - 1) / cs) {
				ho_err("invalid chunk '%s' of '%s' (it has %llu chunks)", chunk_arg,
				       image_arg, (unsigned long long)((size + cs - 1) / cs));
				err = HO_EINVAL;
				break;
			}
			off = n * cs;
			len = HO_MIN(cs, size - off);
		} else {
			if (ho_parse_size(off_arg, &off) < 0 || off >= size) {
				ho_err("invalid offset '%s' of '%s' (%llu bytes)", off_arg, image_arg,
				       (unsigned long long)size);
				err = HO_EINVAL;
				break;
			}
			len = HO_MIN(cs, size - off);
			if (len_arg && (ho_parse_size(len_arg, &len) < 0 || !len || len > size - off)) {
				ho_err("invalid length '%s' at %llu of '%s' (%llu bytes)", len_arg,
				       (unsigned long long)off, image_arg, (unsigned long long)size);
				err = HO_EINVAL;
				break;
			}
		}
		err = inspect_diff(in, f.image, off, len, stdout);
		break;
	}
	case 3:
		err = inspect_files(in, fmt, stdout);
		if (err == HO_ENOENT) {
			inspect_close(in);
			return EXIT_NOFS;
		}
		break;
	default:
		err = inspect_heatmap(in, by, output);
		break;
	}
	inspect_close(in);
	if (fflush(stdout) != 0 && !err) {
		ho_err("cannot write the report: output error");
		err = HO_EIO;
	}
	return exit_for(err);
}
