/*
 * handoff-export — write what changed in an overlay (since generation N) as a handoff stream to a
 * file, stdout or a TCP receiver. Argument parsing, exit codes and messages only; the work is in
 * pipeline/ (export.c, transport.c). See handoff-export(1).
 */
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <unistd.h>
#include "common/common.h"
#include "pipeline/pipeline.h"

static void usage(FILE *f)
{
	fprintf(f,
"usage: handoff-export [options] OVERLAY_DIR|MOUNTPOINT\n"
"\n"
"Close the current generation of the overlay (through the mount daemon when it is mounted, so\n"
"the VM keeps running) and write every chunk changed since generation GEN as a handoff stream.\n"
"\n"
"  --since GEN            send what changed after generation GEN (default 0: everything)\n"
"  -o, --output FILE      write the stream to FILE ('-' = stdout, the default)\n"
"  --to HOST:PORT         send it to handoff-import --listen; resumes an interrupted transfer\n"
"  --key FILE             authenticate the stream with this pre-shared key\n"
"  --mode NAME            a fixed mode: one of --list-modes (raw: the bytes as they are),\n"
"                         or a frame codec: lz4hc, zstd, lzma, optionally CODEC-LEVEL\n"
"  --list-modes           print the named modes (cheapest first) and exit\n"
"  -T, --threads N        worker threads (default 1)\n"
"  --no-history           do not reference chunks sent by earlier exports\n"
"  --adaptive             switch between the named modes (up to delta-zstd3) as CPU\n"
"                         and network allow (the default without --mode)\n"
"  --progress[=json]      a progress line (JSON lines with =json) every half second\n"
"  --gen-file FILE        write the closed generation number to FILE (atomically)\n"
"  --frame-size SIZE      frame payload limit (default: the mode's; testing)\n"
"  --rate-limit RATE      send at most RATE bytes per second (testing)\n"
"  -q, --quiet / -v, --verbose\n"
"  -h, --help / --version\n");
}

int main(int argc, char **argv)
{
	enum { O_SINCE = 256, O_TO, O_KEY, O_MODE, O_LIST, O_GENFILE, O_FRAME, O_RATE, O_VERSION, O_NOHIST, O_ADAPT, O_PROGRESS };
	static const struct option longopts[] = {
		{ "since", required_argument, NULL, O_SINCE },
		{ "output", required_argument, NULL, 'o' },
		{ "to", required_argument, NULL, O_TO },
		{ "key", required_argument, NULL, O_KEY },
		{ "mode", required_argument, NULL, O_MODE },
		{ "list-modes", no_argument, NULL, O_LIST },
		{ "threads", required_argument, NULL, 'T' },
		{ "gen-file", required_argument, NULL, O_GENFILE },
		{ "frame-size", required_argument, NULL, O_FRAME },
		{ "rate-limit", required_argument, NULL, O_RATE },
		{ "no-history", no_argument, NULL, O_NOHIST },
		{ "adaptive", no_argument, NULL, O_ADAPT },
		{ "progress", optional_argument, NULL, O_PROGRESS },
		{ "quiet", no_argument, NULL, 'q' },
		{ "verbose", no_argument, NULL, 'v' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, O_VERSION },
		{ 0 }
	};
	struct export_opts o = { 0 };
	struct export_result res;
	const char *output = "-", *to = NULL, *keyfile = NULL, *genfile = NULL;
	uint8_t *key = NULL;
	char *dir = NULL, *tmp = NULL;
	uint64_t v;
	uint32_t until = 0;
	int c, verbosity = LOG_NOTICE, rc, fd = -1, progress = 0;

	ho_log_init(argv[0]);
	while ((c = getopt_long(argc, argv, "o:T:qvh", longopts, NULL)) != -1) {
		switch (c) {
		case O_SINCE: {
			char *end;
			unsigned long g = strtoul(optarg, &end, 10);
			if (*end || end == optarg || g > UINT32_MAX) {
				ho_err("invalid generation '%s'", optarg);
				return PIPELINE_EXIT_USAGE;
			}
			o.since = (uint32_t)g;
			break;
		}
		case 'o': output = optarg; break;
		case O_TO: to = optarg; break;
		case O_KEY: keyfile = optarg; break;
		case O_MODE: o.mode = optarg; break;
		case O_LIST: return export_list_modes() ? PIPELINE_EXIT_IO : PIPELINE_EXIT_OK;
		case 'T':
			o.threads = (unsigned)atoi(optarg);
			if (o.threads < 1 || o.threads > 256) {
				ho_err("invalid thread count '%s'", optarg);
				return PIPELINE_EXIT_USAGE;
			}
			break;
		case O_GENFILE: genfile = optarg; break;
		case O_NOHIST: o.no_history = true; break;
		case O_ADAPT: o.adaptive = true; break;
		case O_PROGRESS:
			if (!optarg || !strcmp(optarg, "human")) {
				progress = 1;
			} else if (!strcmp(optarg, "json")) {
				progress = 2;
			} else {
				ho_err("invalid progress format '%s' (human or json)", optarg);
				return PIPELINE_EXIT_USAGE;
			}
			break;
		case O_FRAME:
			if (ho_parse_size(optarg, &v) || v > (16u << 20)) {
				ho_err("invalid frame size '%s'", optarg);
				return PIPELINE_EXIT_USAGE;
			}
			o.frame_size = (uint32_t)v;
			break;
		case O_RATE:
			if (ho_parse_size(optarg, &v) || !v) {
				ho_err("invalid rate '%s'", optarg);
				return PIPELINE_EXIT_USAGE;
			}
			o.rate_limit = v;
			break;
		case 'q': verbosity = LOG_ERR; break;
		case 'v': verbosity = verbosity >= LOG_INFO ? LOG_DEBUG : LOG_INFO; break;
		case 'h': usage(stdout); return PIPELINE_EXIT_OK;
		case O_VERSION: printf("handoff-export 0.1\n"); return PIPELINE_EXIT_OK;
		default: usage(stderr); return PIPELINE_EXIT_USAGE;
		}
	}
	ho_log_set_level(verbosity);
	if (argc - optind != 1) {
		ho_err("expected one OVERLAY_DIR or MOUNTPOINT (see --help)");
		return PIPELINE_EXIT_USAGE;
	}
	if (to && strcmp(output, "-") != 0) {
		ho_err("--to and --output exclude each other");
		return PIPELINE_EXIT_USAGE;
	}
	if (o.adaptive && o.mode) {
		ho_err("--adaptive and --mode exclude each other");
		return PIPELINE_EXIT_USAGE;
	}
	if (!to && !strcmp(output, "-") && isatty(STDOUT_FILENO)) {
		ho_err("refusing to write a binary stream to a terminal (use -o FILE or a pipe)");
		return PIPELINE_EXIT_REFUSED;
	}
	if ((rc = export_resolve_dir(argv[optind], &dir)))
		return pipeline_exit_code(rc);
	if (keyfile) {
		if ((rc = pipeline_load_key(keyfile, &key, &o.key_len)))
			goto out;
		o.key = key;
	} else {
		ho_warn("the stream is unauthenticated (no --key)");
	}
	o.progress = progress ? progress : verbosity >= LOG_INFO ? 1 : 0;
	if (!o.mode)
		o.adaptive = true;          /* the default: adapt to the CPU and the link */

	/* an interrupted transfer to the same receiver is continued, not checkpointed again */
	if (!to || export_pending(dir, o.since, to, &until) != 0) {
		if ((rc = export_checkpoint(dir, &until)))
			goto out;
	} else {
		ho_notice("continuing the interrupted export of generations %u..%u", o.since, until);
	}

	if (to) {
		rc = export_to_tcp(dir, until, &o, to, &res);
	} else if (!strcmp(output, "-")) {
		rc = export_to_fd(dir, until, &o, STDOUT_FILENO, &res);
	} else {
		/* FILE appears only complete: write FILE.partial, then rename */
		size_t n = strlen(output) + 16;
		tmp = malloc(n);
		if (!tmp) {
			rc = HO_ENOMEM;
			goto out;
		}
		snprintf(tmp, n, "%s.partial", output);
		fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
		if (fd < 0) {
			ho_err("cannot create '%s': %m", tmp);
			rc = HO_EIO;
			goto out;
		}
		rc = export_to_fd(dir, until, &o, fd, &res);
		if (!rc && fsync(fd) < 0)
			rc = HO_EIO;
		if (close(fd) < 0 && !rc)
			rc = HO_EIO;
		fd = -1;
		if (!rc && rename(tmp, output) < 0) {
			ho_err("cannot rename '%s' to '%s': %m", tmp, output);
			rc = HO_EIO;
		}
		if (rc)
			unlink(tmp);
	}
	if (rc)
		goto out;
	ho_info("sent %" PRIu64 " disk and %" PRIu64 " memory chunks (%" PRIu64 " bytes) in %" PRIu64 " frames, %" PRIu64 " bytes of stream",
		res.chunks[0], res.chunks[1], res.input_bytes, res.frames, res.wire_bytes);
	ho_info("%" PRIu64 " chunks sent as references to chunks the receiver holds%s",
		res.sent_refs, res.history ? " (including chunks of earlier exports)" : "");
	ho_info("peak memory %" PRIu64 " KiB", pipeline_peak_rss() / 1024);
	ho_notice("generation %u", until);
	if (genfile) {
		char line[32];
		int n = snprintf(line, sizeof(line), "%u\n", until);
		if ((rc = ho_write_file_atomic(genfile, line, (size_t)n)))
			ho_err("cannot write '%s': %s", genfile, ho_strerror(rc));
	}
	if (to && !rc)
		export_pending_clear(dir);
out:
	if (fd >= 0)
		close(fd);
	free(tmp);
	free(dir);
	free(key);
	return pipeline_exit_code(rc);
}
