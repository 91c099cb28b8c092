/*
 * handoff-import — apply a handoff stream to an overlay (from a file or stdin), check one without
 * applying it (--verify-only), or receive streams over TCP (--listen). Argument parsing, exit codes
 * and messages only; the work is in pipeline/ (import.c, transport.c). See handoff-import(1).
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include "common/common.h"
#include "common/ctl.h"
#include "overlay/overlay.h"
#include "tracker/tracker.h"
#include "pipeline/pipeline.h"

static void usage(FILE *f)
{
	fprintf(f,
"usage: handoff-import [options] OVERLAY_DIR [FILE|-]\n"
"       handoff-import --listen ADDR:PORT [options] OVERLAY_DIR\n"
"\n"
"Verify a handoff stream completely, then apply it to OVERLAY_DIR atomically. A missing\n"
"OVERLAY_DIR is created over the bases given with --disk and --memory/--memory-size.\n"
"\n"
"  --key FILE             the pre-shared key the stream was authenticated with\n"
"  --verify-only          check the stream completely; change nothing\n"
"  --listen ADDR:PORT     receive streams from handoff-export --to (PORT 0: any free port)\n"
"  --port-file FILE       with --listen: write the bound port to FILE once listening\n"
"  --keep-going           with --listen: keep serving after a stream was applied\n"
"  --disk FILE            base disk image (to create OVERLAY_DIR)\n"
"  --memory FILE          base memory image (to create OVERLAY_DIR)\n"
"  --memory-size SIZE     all-zero memory base of SIZE bytes (to create OVERLAY_DIR)\n"
"  --chunk-size SIZE      chunk size of a created OVERLAY_DIR (default 4K)\n"
"  -T, --threads N        decompress frames on N threads (default: the online CPUs, at most 64)\n"
"  -q, --quiet / -v, --verbose\n"
"  -h, --help / --version\n");
}

static int open_overlay(const char *dir, const char *disk, const char *memory, uint64_t memsize,
			uint64_t chunk, bool readonly, struct overlay **ov, struct tracker **t)
{
	struct overlay_base_spec bases[OVERLAY_NIMAGES] = { { disk, 0 }, { memory, memsize } };
	char *meta = ho_path_join(dir, "overlay.meta");
	bool exists = meta && access(meta, F_OK) == 0;
	uint64_t n[OVERLAY_NIMAGES];
	unsigned flags;
	int rc;

	free(meta);
	if (!exists) {
		if (readonly) {
			ho_err("'%s' is not a handoff overlay", dir);
			return HO_ENOENT;
		}
		if (!disk || (!memory && !memsize)) {
			ho_err("'%s' is not a handoff overlay: give --disk and --memory (or --memory-size) to create it", dir);
			return HO_ENOENT;
		}
	}
	flags = readonly ? OVERLAY_READONLY : OVERLAY_LOCK | (exists ? 0 : OVERLAY_CREATE);
	if ((rc = overlay_open(dir, exists && !disk ? NULL : bases, (uint32_t)chunk, flags, ov)))
		return rc;
	for (int i = 0; i < OVERLAY_NIMAGES; i++)
		n[i] = overlay_nchunks(*ov, i);
	rc = tracker_open(dir, OVERLAY_NIMAGES, n, readonly ? TRACKER_READONLY : TRACKER_CREATE, t);
	if (rc) {
		ho_err("cannot open the chunk index of '%s': %s", dir, ho_strerror(rc));
		overlay_close(*ov);
		*ov = NULL;
	}
	return rc;
}

static void report(const struct import_result *r, bool verify_only)
{
	if (r->already_applied && !verify_only)
		ho_notice("stream of generations %u..%u was already applied: nothing to do", r->since, r->until);
	else
		ho_notice("%s stream of generations %u..%u (%" PRIu64 " disk, %" PRIu64 " memory chunks, mode %s)%s",
			  verify_only ? "verified" : "applied", r->since, r->until, r->chunks[0], r->chunks[1],
			  r->mode[0] ? r->mode : "?", verify_only && r->already_applied ? " (already applied)" : "");
}

static int do_listen(const char *addr, const char *port_file, bool keep_going, struct overlay *ov,
		     struct tracker *t, const struct import_opts *o)
{
	uint16_t port;
	int lfd, rc;

	if ((rc = transport_listen(addr, &lfd, &port)))
		return rc;
	ho_info("listening on port %u", port);
	if (port_file) {
		char line[16];
		int n = snprintf(line, sizeof(line), "%u\n", port);
		if ((rc = ho_write_file_atomic(port_file, line, (size_t)n))) {
			ho_err("cannot write '%s': %s", port_file, ho_strerror(rc));
			close(lfd);
			return rc;
		}
	}
	for (;;) {
		struct import_result r;
		int conn = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
		if (conn < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			rc = ho_from_errno(errno);
			ho_err("cannot accept a connection: %s", strerror(errno));
			break;
		}
		rc = transport_serve(ov, t, conn, o, &r);
		if (rc == 0) {
			report(&r, false);
			if (!keep_going)
				break;
			continue;
		}
		if (rc == HO_ECONN || rc == HO_ETIMEDOUT || rc == HO_EPROTO) {
			ho_notice("connection ended early; waiting for the sender to resume");
			continue;
		}
		if ((rc == HO_ESTALE || rc == HO_EDIGEST) && r.basis) {
			ho_notice("refused a stream that references chunks of earlier streams; waiting for the sender to send it without them");
			continue;
		}
		if (!keep_going)
			break;
	}
	close(lfd);
	return rc;
}

int main(int argc, char **argv)
{
	enum { O_KEY = 256, O_VERIFY, O_LISTEN, O_PORTFILE, O_KEEP, O_DISK, O_MEMORY, O_MEMSIZE, O_CHUNK,
	       O_VERSION };
	static const struct option longopts[] = {
		{ "key", required_argument, NULL, O_KEY },
		{ "verify-only", no_argument, NULL, O_VERIFY },
		{ "listen", required_argument, NULL, O_LISTEN },
		{ "port-file", required_argument, NULL, O_PORTFILE },
		{ "keep-going", no_argument, NULL, O_KEEP },
		{ "disk", required_argument, NULL, O_DISK },
		{ "memory", required_argument, NULL, O_MEMORY },
		{ "memory-size", required_argument, NULL, O_MEMSIZE },
		{ "chunk-size", required_argument, NULL, O_CHUNK },
		{ "threads", required_argument, NULL, 'T' },
		{ "quiet", no_argument, NULL, 'q' },
		{ "verbose", no_argument, NULL, 'v' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, O_VERSION },
		{ 0 }
	};
	struct import_opts o = { 0 };
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	/* as handoff-mirror: the destination's cores decode (at 1 Gbit/s one thread bounded the
	 * transfer: 902 MiB of a guest's changes in xor-lz4, 4.05 s with 1, 3.76 s with 2) */
	o.threads = ncpu > 1 ? (unsigned)HO_MIN(ncpu, 64L) : 1;
	struct import_result r;
	const char *keyfile = NULL, *listen_addr = NULL, *port_file = NULL, *disk = NULL, *memory = NULL;
	uint64_t memsize = 0, chunk = 0;
	bool keep_going = false;
	struct overlay *ov = NULL;
	struct tracker *t = NULL;
	uint8_t *key = NULL;
	int c, verbosity = LOG_NOTICE, rc, fd = STDIN_FILENO;

	ho_log_init(argv[0]);
	signal(SIGPIPE, SIG_IGN);
	while ((c = getopt_long(argc, argv, "T:qvh", longopts, NULL)) != -1) {
		switch (c) {
		case O_KEY: keyfile = optarg; break;
		case O_VERIFY: o.verify_only = true; break;
		case O_LISTEN: listen_addr = optarg; break;
		case O_PORTFILE: port_file = optarg; break;
		case O_KEEP: keep_going = true; break;
		case O_DISK: disk = optarg; break;
		case O_MEMORY: memory = optarg; break;
		case O_MEMSIZE:
			if (ho_parse_size(optarg, &memsize) || memsize == 0) {
				ho_err("invalid memory size '%s'", optarg);
				return PIPELINE_EXIT_USAGE;
			}
			break;
		case O_CHUNK:
			if (ho_parse_size(optarg, &chunk) || chunk > (1u << 20)) {
				ho_err("invalid chunk size '%s'", optarg);
				return PIPELINE_EXIT_USAGE;
			}
			break;
		case 'T': {
			char *end;
			unsigned long n = strtoul(optarg, &end, 10);
			if (*end || end == optarg || n < 1 || n > 64) {
				ho_err("invalid thread count '%s' (1 to 64)", optarg);
				return PIPELINE_EXIT_USAGE;
			}
			o.threads = (unsigned)n;
			break;
		}
		case 'q': verbosity = LOG_ERR; break;
		case 'v': verbosity = verbosity >= LOG_INFO ? LOG_DEBUG : LOG_INFO; break;
		case 'h': usage(stdout); return PIPELINE_EXIT_OK;
		case O_VERSION: printf("handoff-import 0.1\n"); return PIPELINE_EXIT_OK;
		default: usage(stderr); return PIPELINE_EXIT_USAGE;
		}
	}
	ho_log_set_level(verbosity);
	if (argc - optind < 1 || argc - optind > (listen_addr ? 1 : 2)) {
		ho_err(listen_addr ? "--listen takes one OVERLAY_DIR" : "expected OVERLAY_DIR [FILE|-] (see --help)");
		return PIPELINE_EXIT_USAGE;
	}
	if (memory && memsize) {
		ho_err("--memory and --memory-size exclude each other");
		return PIPELINE_EXIT_USAGE;
	}
	if (listen_addr && o.verify_only) {
		ho_err("--listen and --verify-only exclude each other");
		return PIPELINE_EXIT_USAGE;
	}
	if (!listen_addr && argc - optind == 2 && strcmp(argv[optind + 1], "-") != 0) {
		fd = open(argv[optind + 1], O_RDONLY | O_CLOEXEC);
		if (fd < 0) {
			ho_err("cannot open '%s': %s", argv[optind + 1], strerror(errno));
			return PIPELINE_EXIT_USAGE;
		}
	} else if (!listen_addr && isatty(STDIN_FILENO)) {
		ho_err("refusing to read a binary stream from a terminal (give FILE or a pipe)");
		return PIPELINE_EXIT_REFUSED;
	}
	if (keyfile) {
		if ((rc = pipeline_load_key(keyfile, &key, &o.key_len)))
			goto out;
		o.key = key;
	}
	if (!listen_addr && !o.verify_only) {
		/* a mirror (handoff-mirror) owns the overlay: hand it the stream to apply */
		int pid;
		char mp[4096], reply[HO_CTL_LINE];
		if (overlay_lock_holder(argv[optind], &pid, mp, sizeof(mp)) == 0) {
			rc = ho_ctl_call(argv[optind], "apply", fd, 0, reply, sizeof(reply));
			if (rc == HO_ENOENT) {
				ho_err("overlay '%s' is in use by process %d, which does not accept streams", argv[optind], pid);
				rc = HO_EBUSY;
			} else if (rc == HO_EINVAL) {
				ho_err("overlay '%s' is mounted by process %d, which does not accept streams (not a mirror)",
				       argv[optind], pid);
				rc = HO_EBUSY;
			} else if (rc) {
				ho_err("the mirror serving '%s' refused the stream: %s", argv[optind], ho_strerror(rc));
			} else {
				ho_notice("the mirror serving '%s' took the stream: %s", argv[optind], reply);
			}
			goto out;
		}
	}
	if ((rc = open_overlay(argv[optind], disk, memory, memsize, chunk, o.verify_only, &ov, &t)))
		goto out;
	if (listen_addr) {
		o.keep_partial = true;
		if ((rc = import_recover(ov, t, &o)))
			goto out;
		rc = do_listen(listen_addr, port_file, keep_going, ov, t, &o);
	} else {
		rc = import_fd(ov, t, fd, &o, &r);
		if (!rc)
			report(&r, o.verify_only);
	}
	ho_info("peak memory %" PRIu64 " KiB", pipeline_peak_rss() / 1024);
out:
	if (t)
		tracker_close(t);
	overlay_close(ov);
	if (fd != STDIN_FILENO)
		close(fd);
	free(key);
	return pipeline_exit_code(rc);
}
