/*
 * handoff-mount — mount a VM's disk and memory images as copy-on-write files over read-only
 * bases, tracking every modified chunk. Argument parsing and exit codes only; the work is in
 * overlay/, tracker/ and fs/. See handoff-mount(8).
 */
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "common/common.h"
#include "common/ctl.h"
#include "common/daemon.h"
#include "overlay/overlay.h"
#include "tracker/tracker.h"
#include "fs/fs.h"

static void usage(FILE *f)
{
	fprintf(f,
"usage: handoff-mount [options] [--disk BASE_DISK] [--memory BASE_MEM | --memory-size SIZE]\n"
"                     OVERLAY_DIR MOUNTPOINT\n"
"       handoff-mount --status OVERLAY_DIR\n"
"       handoff-mount --checkpoint OVERLAY_DIR\n"
"\n"
"Expose MOUNTPOINT/disk and MOUNTPOINT/memory as copy-on-write files over read-only base\n"
"images, recording every modified chunk in OVERLAY_DIR. The bases may be omitted when\n"
"OVERLAY_DIR exists (its recorded bases are used and verified).\n"
"\n"
"  --disk FILE            base disk image\n"
"  --memory FILE          base memory image\n"
"  --memory-size SIZE     memory image of SIZE bytes over an all-zero base (e.g. 256M)\n"
"  --chunk-size SIZE      copy-on-write and tracking granularity (default 4K)\n"
"  -f, --foreground       do not daemonize\n"
"  --ready-fd N           write \"ready\" to fd N once the mount serves requests\n"
"  --allow-other          let other users access the mount (needs user_allow_other)\n"
"  --commit-interval MS   how often the chunk index is committed (default 5000)\n"
"  --no-writeback-cache   do not use the kernel's writeback cache\n"
"  --no-bdi-tuning        keep the kernel's dirty-page limits and readahead for the mount\n"
"  --no-tracking          benchmarks only: no chunk index (nothing to export)\n"
"  --status               print the overlay's state (live or not) and exit\n"
"  --checkpoint           close the current generation and print its number\n"
"  -d, --debug            libfuse debug output (implies -f)\n"
"  -q, --quiet / -v, --verbose\n"
"  -h, --help / --version\n");
}

static int print_gen(int image, uint32_t gen, uint64_t chunks, void *arg)
{
	(void)arg;
	printf("gen %u %s %" PRIu64 "\n", gen, overlay_image_name(image), chunks);
	return 0;
}

static int open_tracker_for(struct overlay *ov, unsigned flags, struct tracker **tr)
{
	uint64_t n[OVERLAY_NIMAGES] = { overlay_nchunks(ov, 0), overlay_nchunks(ov, 1) };
	return tracker_open(overlay_dir(ov), OVERLAY_NIMAGES, n, flags, tr);
}

static int do_status(const char *dir)
{
	struct overlay *ov;
	struct tracker *tr;
	struct tracker_stats st;
	char mp[PATH_MAX] = "";
	int pid = 0, rc;
	overlay_wait_released(dir, 30000);
	bool live = overlay_lock_holder(dir, &pid, mp, sizeof(mp)) == 0;

	if (live && mp[0]) {
		rc = ho_ctl_call(dir, "sync", -1, 30000, NULL, 0);
		if (rc && rc != HO_ENOENT)
			ho_warn("the mount daemon did not sync: %s", ho_strerror(rc));
	}
	rc = overlay_open(dir, NULL, 0, OVERLAY_READONLY, &ov);
	if (rc)
		return fs_exit_code(rc);
	rc = open_tracker_for(ov, TRACKER_READONLY, &tr);
	if (rc) {
		ho_err("cannot open the chunk index of '%s': %s", dir, ho_strerror(rc));
		overlay_close(ov);
		return fs_exit_code(rc);
	}
	rc = tracker_stats(tr, &st);
	if (rc == 0) {
		printf("overlay %s\nstate %s\n", overlay_dir(ov), live ? (mp[0] ? "mounted" : "locked") : "unmounted");
		if (live)
			printf("pid %d\nmountpoint %s\n", pid, mp);
		printf("chunk_size %u\ngeneration %u\n", overlay_chunk_size(ov), st.generation);
		for (int i = 0; i < OVERLAY_NIMAGES; i++)
			printf("%s.size %" PRIu64 "\n%s.modified_chunks %" PRIu64 "\n", overlay_image_name(i),
			       overlay_image_size(ov, i), overlay_image_name(i), st.modified[i]);
		printf("bytes_read %" PRIu64 "\nbytes_written %" PRIu64 "\n", st.bytes_read, st.bytes_written);
		rc = tracker_gen_counts(tr, print_gen, NULL);
	}
	if (rc)
		ho_err("cannot read the chunk index of '%s': %s", dir, ho_strerror(rc));
	tracker_close(tr);
	overlay_close(ov);
	return fs_exit_code(rc);
}

static int durable(void *ov) { return overlay_sync(ov); }

static int do_checkpoint(const char *dir)
{
	struct overlay *ov;
	struct tracker *tr;
	char reply[64];
	uint32_t closed;
	overlay_wait_released(dir, 30000);
	int rc = ho_ctl_call(dir, "checkpoint", -1, 60000, reply, sizeof(reply));

	if (rc == 0) {
		printf("%s\n", reply);
		return FS_EXIT_OK;
	}
	if (rc != HO_ENOENT) {
		ho_err("checkpoint of '%s' failed: %s", dir, ho_strerror(rc));
		return fs_exit_code(rc);
	}
	rc = overlay_open(dir, NULL, 0, OVERLAY_LOCK, &ov);
	if (rc)
		return fs_exit_code(rc);
	rc = open_tracker_for(ov, 0, &tr);
	if (rc == 0) {
		rc = tracker_checkpoint(tr, durable, ov, &closed);
		if (rc == 0)
			printf("%u\n", closed);
		tracker_close(tr);
	}
	if (rc)
		ho_err("checkpoint of '%s' failed: %s", dir, ho_strerror(rc));
	overlay_close(ov);
	return fs_exit_code(rc);
}

static int mount_and_serve(const char *dir, const struct overlay_base_spec *bases, uint32_t chunk,
			   struct fs_options *opt);

int main(int argc, char **argv)
{
	enum { O_DISK = 256, O_MEMORY, O_MEMSIZE, O_CHUNK, O_READY, O_ALLOW, O_COMMIT, O_NOWB, O_NOBDI, O_NOTRACK,
	       O_STATUS, O_CHECKPOINT, O_VERSION };
	static const struct option longopts[] = {
		{ "disk", required_argument, NULL, O_DISK },
		{ "memory", required_argument, NULL, O_MEMORY },
		{ "memory-size", required_argument, NULL, O_MEMSIZE },
		{ "chunk-size", required_argument, NULL, O_CHUNK },
		{ "foreground", no_argument, NULL, 'f' },
		{ "ready-fd", required_argument, NULL, O_READY },
		{ "allow-other", no_argument, NULL, O_ALLOW },
		{ "commit-interval", required_argument, NULL, O_COMMIT },
		{ "no-writeback-cache", no_argument, NULL, O_NOWB },
		{ "no-bdi-tuning", no_argument, NULL, O_NOBDI },
		{ "no-tracking", no_argument, NULL, O_NOTRACK },
		{ "status", no_argument, NULL, O_STATUS },
		{ "checkpoint", no_argument, NULL, O_CHECKPOINT },
		{ "debug", no_argument, NULL, 'd' },
		{ "quiet", no_argument, NULL, 'q' },
		{ "verbose", no_argument, NULL, 'v' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, O_VERSION },
		{ 0 }
	};
	struct overlay_base_spec bases[OVERLAY_NIMAGES];
	const struct overlay_base_spec *given;
	struct fs_images im = { 0 };
	struct fs_options opt = { .ready_fd = -1 };
	int c, li, verbosity = LOG_NOTICE, action = 0, report_fd = -1;
	bool foreground = false;

	ho_log_init(argv[0]);
	while ((c = getopt_long(argc, argv, "fdqvh", longopts, &li)) != -1) {
		switch (c) {
		case O_DISK: case O_MEMORY: case O_MEMSIZE: case O_CHUNK:
			if (fs_images_option(&im, longopts[li].name, optarg))
				return FS_EXIT_USAGE;
			break;
		case 'f': foreground = true; break;
		case O_READY: opt.ready_fd = atoi(optarg); break;
		case O_ALLOW: opt.allow_other = true; break;
		case O_COMMIT: opt.commit_ms = (unsigned)atoi(optarg); break;
		case O_NOWB: opt.no_writeback_cache = true; break;
		case O_NOBDI: opt.no_bdi_tuning = true; break;
		case O_NOTRACK: opt.no_tracking = true; break;
		case O_STATUS: case O_CHECKPOINT: action = c; break;
		case 'd': opt.debug = foreground = true; break;
		case 'q': verbosity = LOG_ERR; break;
		case 'v': verbosity = verbosity >= LOG_INFO ? LOG_DEBUG : LOG_INFO; break;
		case 'h': usage(stdout); return FS_EXIT_OK;
		case O_VERSION: printf("handoff-mount 0.1\n"); return FS_EXIT_OK;
		default: usage(stderr); return FS_EXIT_USAGE;
		}
	}
	ho_log_set_level(verbosity);
	if (action) {
		if (argc - optind != 1) {
			ho_err("%s takes one OVERLAY_DIR", action == O_STATUS ? "--status" : "--checkpoint");
			return FS_EXIT_USAGE;
		}
		return action == O_STATUS ? do_status(argv[optind]) : do_checkpoint(argv[optind]);
	}
	if (argc - optind != 2) {
		ho_err("expected OVERLAY_DIR and MOUNTPOINT (see --help)");
		return FS_EXIT_USAGE;
	}
	const char *dir = argv[optind];
	opt.mountpoint = argv[optind + 1];
	if (fs_images_bases(&im, bases, &given))
		return FS_EXIT_USAGE;

	/* refuse a bad mountpoint before creating anything */
	if (fs_check_mountpoint(opt.mountpoint))
		return FS_EXIT_MOUNTPOINT;

	overlay_wait_released(dir, 30000);     /* "fusermount3 -u; handoff-mount" just works */
	/* detach first: sqlite connections and locks must be opened by the daemon itself */
	if (!foreground) {
		int rc = ho_daemonize(&report_fd);
		if (rc) {
			ho_err("cannot detach: %s", ho_strerror(rc));
			return FS_EXIT_IO;
		}
		opt.report_fd = &report_fd;
	}
	int code = mount_and_serve(dir, given, (uint32_t)im.chunk_size, &opt);
	ho_daemon_fail(&report_fd, code);      /* no-op once the daemon reported ready */
	return code;
}

/* Open, mount and serve until unmounted; returns the exit code. */
static int mount_and_serve(const char *dir, const struct overlay_base_spec *bases, uint32_t chunk,
			   struct fs_options *opt)
{
	struct overlay *ov;
	struct tracker *tr;
	struct fs *fs;
	int rc = fs_open_owned(dir, bases, chunk, &ov, &tr);
	if (rc)
		return fs_exit_code(rc);
	rc = fs_mount(ov, tr, opt, &fs);
	if (rc) {
		tracker_close(tr);
		overlay_close(ov);
		return rc == HO_EIO ? FS_EXIT_FUSE : FS_EXIT_MOUNTPOINT;
	}
	rc = fs_run(fs);
	fs_free(fs);
	tracker_close(tr);
	overlay_close(ov);
	if (rc)
		ho_err("unmounted with errors: %s", ho_strerror(rc));
	return rc ? FS_EXIT_IO : FS_EXIT_OK;
}
