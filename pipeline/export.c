/*
 * export.c — turning what changed in an overlay into a handoff stream: close a generation (on a
 * live mount through its daemon, so the VM keeps running; offline under the overlay lock), then
 * walk the tracker for chunks with since < gen <= until, read their bytes from the overlay and
 * feed them to the stream encoder.
 *
 * A stream is deterministic: its id derives from the sender id (a random id kept in
 * OVERLAY_DIR/stream-sender-id, created once), the generation range, the chunk size, the mode and
 * the frame size and the base identities, and the encoder is deterministic, so an export of the
 * same range regenerates the same bytes — what TCP resume relies on (transport.c).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <pthread.h>
#include <time.h>
#include <unistd.h>
#include "common/common.h"
#include "common/ctl.h"
#include "overlay/overlay.h"
#include "tracker/tracker.h"
#include "pipeline/adapt.h"
#include "pipeline/codec.h"
#include "pipeline/dedup.h"
#include "pipeline/delta.h"
#include "pipeline/mode.h"
#include "pipeline/pipeline.h"
#include "pipeline/stream.h"
#include "pipeline/export_int.h"

#define SENDER_ID_NAME "stream-sender-id"
#define EXPORT_QUEUED  1                   /* frames queued for the sender thread (sender.c) */
#define SENTSET_NAME   "sentset"           /* what the receiver holds from earlier exports */
#define SENTSET_NEXT   "sentset.next"      /* ... after this one, until it is known applied */

int pipeline_exit_code(int err)
{
	switch (err) {
	case 0:
		return PIPELINE_EXIT_OK;
	case HO_ETRUNC: case HO_ECHECKSUM: case HO_ESEQ: case HO_ETRAILING: case HO_EAUTH:
	case HO_EDIGEST: case HO_EFORMAT: case HO_EVERSION: case HO_EPROTO:
		return PIPELINE_EXIT_VERIFY;
	case HO_EBASE:
		return PIPELINE_EXIT_BASE;
	case HO_ESTALE:
		return PIPELINE_EXIT_STALE;
	case HO_EIO: case HO_ENOSPC: case HO_ECORRUPT: case HO_EDB:
		return PIPELINE_EXIT_IO;
	case HO_ECONN: case HO_ETIMEDOUT:
		return PIPELINE_EXIT_CONN;
	default:
		return PIPELINE_EXIT_USAGE;
	}
}

int pipeline_load_key(const char *path, uint8_t **key, size_t *len)
{
	char *buf;
	size_t n;
	int rc = ho_read_file(path, &buf, &n, 4096);

	if (rc) {
		ho_err("cannot read key file '%s': %s", path, rc == HO_ELIMIT ? "longer than 4096 bytes" : ho_strerror(rc));
		return rc == HO_ELIMIT ? HO_EINVAL : rc;
	}
	if (n < 16) {
		ho_err("key file '%s' is too short (%zu bytes, at least 16 needed)", path, n);
		free(buf);
		return HO_EINVAL;
	}
	*key = (uint8_t *)buf;
	*len = n;
	return 0;
}

/* ---- which overlay -------------------------------------------------------------------------- */

static bool is_overlay(const char *dir)
{
	char *meta = ho_path_join(dir, "overlay.meta");
	bool yes = meta && access(meta, F_OK) == 0;
	free(meta);
	return yes;
}

/* Undo mountinfo's octal escapes (\040 for a space) in place. */
static void unescape(char *s)
{
	char *o = s;
	for (; *s; s++) {
		if (s[0] == '\\' && s[1] >= '0' && s[1] <= '3' && s[2] >= '0' && s[2] <= '7' && s[3] >= '0' && s[3] <= '7') {
			*o++ = (char)((s[1] - '0') << 6 | (s[2] - '0') << 3 | (s[3] - '0'));
			s += 3;
		} else {
			*o++ = *s;
		}
	}
	*o = 0;
}

int export_resolve_dir(const char *arg, char **dir)
{
	char real[PATH_MAX], line[3 * PATH_MAX];
	FILE *f;

	*dir = NULL;
	if (!realpath(arg, real)) {
		ho_err("cannot open '%s': %s", arg, strerror(errno));
		return ho_from_errno(errno);
	}
	if (is_overlay(real))
		return (*dir = strdup(real)) ? 0 : HO_ENOMEM;
	/* a handoff-mount mountpoint: its fsname is "handoff:OVERLAY_DIR" */
	f = fopen("/proc/self/mountinfo", "re");
	while (f && fgets(line, sizeof(line), f)) {
		/* ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPEROPTS */
		char *sep = strstr(line, " - "), *save = NULL, *mp = NULL, *src, *tok;
		int i = 0;
		if (!sep)
			continue;
		*sep = 0;
		for (tok = strtok_r(line, " ", &save); tok && i < 4; tok = strtok_r(NULL, " ", &save))
			i++;
		mp = tok;
		save = NULL;
		if (!mp || !strtok_r(sep + 3, " \n", &save) || !(src = strtok_r(NULL, " \n", &save)))
			continue;
		unescape(mp);
		unescape(src);
		if (strcmp(mp, real) == 0 && strncmp(src, "handoff:", 8) == 0 && is_overlay(src + 8)) {
			fclose(f);
			return (*dir = strdup(src + 8)) ? 0 : HO_ENOMEM;
		}
	}
	if (f)
		fclose(f);
	ho_err("'%s' is neither a handoff overlay directory nor a handoff-mount mountpoint", arg);
	return HO_ENOENT;
}

/* ---- checkpoint ------------------------------------------------------------------------------- */

static int sync_overlay(void *arg) { return overlay_sync(arg); }

static int fsync_path(const char *dir, const char *name)
{
	char *p = ho_path_join(dir, name);
	int fd, rc = 0;

	if (!p)
		return HO_ENOMEM;
	fd = open(p, O_RDONLY | O_CLOEXEC);
	if (fd < 0 || fsync(fd) < 0) {
		rc = ho_from_errno(errno);
		ho_err("cannot flush '%s': %s", p, strerror(errno));
	}
	if (fd >= 0)
		close(fd);
	free(p);
	return rc;
}

int export_writeback(const char *dir)
{
	char mp[PATH_MAX];
	int pid = 0;

	if (overlay_lock_holder(dir, &pid, mp, sizeof(mp)) != 0 || !mp[0])
		return 0;                       /* not mounted: nothing in a page cache */
	int rc = fsync_path(mp, "disk");
	return rc ? rc : fsync_path(mp, "memory");
}

int export_checkpoint(const char *dir, uint32_t *closed)
{
	char mp[PATH_MAX], reply[HO_CTL_LINE];
	int pid = 0, rc;

	rc = overlay_lock_holder(dir, &pid, mp, sizeof(mp));
	if (rc == 0) {
		/* a live mount: flush what the guest wrote, then let the daemon close the generation */
		if ((rc = export_writeback(dir)))
			return rc;
		rc = ho_ctl_call(dir, "checkpoint", -1, 60000, reply, sizeof(reply));
		if (rc == HO_ENOENT) {
			ho_err("overlay '%s' is locked by process %d, which does not answer checkpoint requests", dir, pid);
			return HO_EBUSY;
		}
		if (rc) {
			ho_err("checkpoint of '%s' failed: %s", dir, ho_strerror(rc));
			return rc;
		}
		char *end;
		unsigned long g = strtoul(reply, &end, 10);
		if (end == reply || g > UINT32_MAX) {
			ho_err("checkpoint of '%s': unexpected reply '%s'", dir, reply);
			return HO_EPROTO;
		}
		*closed = (uint32_t)g;
		return 0;
	}
	if (rc != HO_ENOENT)
		return rc;
	/* offline */
	struct overlay *ov;
	struct tracker *t;
	uint64_t n[OVERLAY_NIMAGES];
	if ((rc = overlay_open(dir, NULL, 0, OVERLAY_LOCK, &ov)))
		return rc;
	for (int i = 0; i < OVERLAY_NIMAGES; i++)
		n[i] = overlay_nchunks(ov, i);
	if ((rc = tracker_open(dir, OVERLAY_NIMAGES, n, 0, &t))) {
		overlay_close(ov);
		return rc;
	}
	rc = tracker_checkpoint(t, sync_overlay, ov, closed);
	if (rc)
		ho_err("checkpoint of '%s' failed: %s", dir, ho_strerror(rc));
	tracker_close(t);
	overlay_close(ov);
	return rc;
}

/* ---- sender id and stream id ------------------------------------------------------------------ */

int export_sender_id(const char *dir, uint8_t id[16])
{
	char *path = ho_path_join(dir, SENDER_ID_NAME), *buf = NULL, tmp[PATH_MAX], hex[33];
	int rc;

	if (!path)
		return HO_ENOMEM;
	rc = ho_read_file(path, &buf, NULL, 256);
	if (rc == HO_ENOENT) {
		/* create it once: write a temp file, link it into place (the first linker wins) */
		uint8_t r[16];
		int fd;
		if ((rc = ho_random(r, sizeof(r))))
			goto out;
		ho_hex(r, 16, hex);
		hex[32] = '\n';
		snprintf(tmp, sizeof(tmp), "%s.%d", path, (int)getpid());
		fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
		if (fd < 0 || ho_write_full(fd, hex, 33) || fsync(fd) < 0) {
			rc = HO_EIO;
			ho_err("cannot create '%s': %s", path, strerror(errno));
			if (fd >= 0)
				close(fd);
			unlink(tmp);
			goto out;
		}
		close(fd);
		if (link(tmp, path) < 0 && errno != EEXIST) {
			rc = ho_from_errno(errno);
			ho_err("cannot create '%s': %s", path, strerror(errno));
			unlink(tmp);
			goto out;
		}
		unlink(tmp);
		ho_fsync_dir(path);
		rc = ho_read_file(path, &buf, NULL, 256);
	}
	if (rc)
		goto out;
	if (strlen(buf) < 32 || (buf[32] = 0, ho_unhex(buf, id, 16))) {
		ho_err("'%s' is corrupt", path);
		rc = HO_ECORRUPT;
	}
out:
	free(buf);
	free(path);
	return rc;
}

static void stream_id(struct stream_header *h)
{
	static const char label[] = "handoff-stream-id v1";
	struct ho_sha256 *s = ho_sha256_new();
	uint8_t le[8], d[32];

	if (!s) {
		ho_random(h->id, sizeof(h->id));
		return;
	}
	ho_sha256_update(s, label, sizeof(label) - 1);
	ho_sha256_update(s, h->sender, 16);
	ho_put_le32(le, h->since);
	ho_put_le32(le + 4, h->until);
	ho_sha256_update(s, le, 8);
	ho_put_le32(le, h->chunk_size);
	ho_put_le32(le + 4, h->frame_max);
	ho_sha256_update(s, le, 8);
	ho_sha256_update(s, h->mode, STREAM_MODE_LEN);
	for (int i = 0; i < STREAM_NIMAGES; i++) {
		ho_put_le64(le, h->image[i].size);
		ho_sha256_update(s, le, 8);
		ho_sha256_update(s, h->image[i].base.digest, 32);
	}
	ho_sha256_final(s, d);
	ho_sha256_free(s);
	memcpy(h->id, d, sizeof(h->id));
}

/* ---- modes ------------------------------------------------------------------------------------ */

/* "raw" (no codec, zero chunks only), "CODEC" or "CODEC-LEVEL" (frame codec; chunks equal to
 * their base travel as base references). */
int export_parse_mode(const char *name, struct export_mode *m)
{
	char buf[STREAM_MODE_LEN], *dash;
	enum codec c;

	memset(m, 0, sizeof(*m));
	if (!name || !*name)
		name = "raw";
	if (strlen(name) >= STREAM_MODE_LEN)
		goto bad;
	strcpy(m->name, name);
	if (strcmp(name, "raw") && (m->full = mode_find(name))) {
		m->codec = (int)m->full->frame_codec;
		m->level = m->full->frame_level;
		return 0;
	}
	if (!strcmp(name, "raw") || !strcmp(name, "none")) {
		m->codec = STREAM_CODEC_NONE;
		return 0;
	}
	strcpy(buf, name);
	dash = strrchr(buf, '-');
	if (dash)
		*dash = 0;
	if (codec_parse(buf, &c) != 0)
		goto bad;
	m->codec = (int)c;
	m->level = codec_default_level(c);
	if (dash) {
		char *end;
		long l = strtol(dash + 1, &end, 10);
		if (*end || end == dash + 1 || !codec_level_valid(c, (int)l))
			goto bad;
		m->level = (int)l;
	}
	m->base_refs = true;
	return 0;
bad:
	ho_err("unknown mode '%s' (see --list-modes, or raw, lz4, lz4hc, zstd, lzma, optionally with -LEVEL)", name);
	return HO_EINVAL;
}

int export_list_modes(void)
{
	return mode_list(stdout);
}

/* ---- the export walk -------------------------------------------------------------------------- */

#define RUN_MAX (1u << 20)
#define WALK_MAX_THREADS 64
/* adaptive: a decision per run (of 256 KiB at first, so decisions follow the link and a few MiB
 * already see several of them; see below); each mode's frames as large as suit its frame codec
 * (adapt_frame), the frame being collected closed at every switch (stream_enc_flush_frame), so a
 * switch is as quick as with small frames. Why large: on a real guest's changes (bench/adapt.sh, 64 MiB, -T 2),
 * delta-zstd3 makes 0.396 of the input with 256 KiB frames, 0.307 with 1 MiB, 0.273 with 4 MiB,
 * 0.264 with 16 MiB, at the same CPU (delta-zstd9: 0.396, 0.306, 0.270); lz4 frames gain nothing
 * above 1 MiB (0.4859 at 4 MiB, 0.4861 at 16 MiB).
 * Since zstd frames get a window over the whole frame and long-distance matching (codec.c),
 * 16 MiB frames gain more (640 MiB of the same changes: 78.3 MB with zstd-3 in 4 MiB frames,
 * 67.8 MB in 16 MiB ones), so each mode's frames are its own here too (mode.c: 16 MiB for zstd,
 * 1 MiB for lz4, whose frames gain nothing above that). A frame is what the link must carry
 * before the receiver acknowledges anything of it, the sender keeps two frames in flight, and a
 * broken connection resumes at a frame: a frame's expected wire size is held to about
 * ADAPT_FRAME_LINK_NS of the measured bandwidth (adapt_frame_link), so on a very thin link, or
 * with data that hardly compresses, frames are smaller (not below 1 MiB). That bound was 4 s
 * when the engine measured the link from frame acknowledgements (16 MiB frames showed bursts of
 * them: 1.35 Gbit/s at 100 Mbit/s); the link is measured from the socket now (transport.c), and
 * at 4 s, frames cut to 2.4 MB (5 Mbit/s, a ratio of 1.0 learnt on a region that did not
 * compress) gave the regions after them 1.1 MB more than 16 MiB frames did: 19.3 MB of 64 MiB
 * where delta-zstd3 alone sent 18.2. At 32 s the bound bites below about 4 Mbit/s. */
#define ADAPT_RUN   (256u << 10)
/* ...and, while the engine holds its first mode (adapt_status.learning: until the link was seen
 * saturated or carrying all we gave it, or for a second), frames that start at 256 KiB. A
 * CPU-bound mode on a fat link passes 16 MiB in a tenth of a second, before the first sample;
 * its 16 MiB frames came every 150 ms, and the link's idle socket at each of them
 * (adapt_frame_sent) was seen too rarely to end the hold early. So, while the engine holds, a
 * frame written into an empty socket (the link drained the ones before it: it may be fat)
 * doubles the next one, and eight in a row tell the engine the link is fat within a few hundred
 * ms. One written into a backlog (the link holds us back) gives the next the mode's whole size,
 * as does the end of the hold (warm_grow). Small frames cost bytes (640 MiB of a guest's changes
 * to a file in xor-zstd1: 108.3 MB in frames of 256 KiB, 86.5 in 1 MiB, 70.1 in 4 MiB, 65.5 in
 * 16 MiB), and on a thin link bytes are time: with every frame of the warm-up at 256 KiB, until
 * acknowledgements had covered ADAPT_WARMUP_NS of the link, the export sent 68.2 MB at
 * 100 Mbit/s where --mode xor-zstd1 sent 65.5 (7.6-8.1 s against 7.2), and 19.2 MB of 64 MiB at
 * 10 Mbit/s where delta-zstd3 sent 18.2 (16.3 s against 15.7: bench/adapt.sh's data); small
 * frames held until the first decision on a thin link (a backlog not growing them) made no fewer
 * bytes at 10 Mbit/s, and 44.5 MB of 256 MiB at 25 Mbit/s against 41.9. The price: on a thin
 * link the first full frames go out before the first decision, so in the mode the engine holds
 * then: the first mode, chosen before the link was known (the one that loses least wherever the
 * link turns out to be), or, after the first frame written into a backlog, the one that loses
 * least up to the rate that backlog bounds the link by (first_mode, adapt.c: at 5 Mbit/s
 * delta-zstd3 where xor-zstd1 had made the first 9.6 MB of 18.9).
 * The warm-up's runs stay at 256 KiB until acknowledgements covered ADAPT_WARMUP_NS of the link,
 * or ADAPT_WARMUP_MAX of input went by and the engine no longer holds. Then runs of RUN_MAX,
 * as the static modes: every run is a barrier of the encoding threads, and on a machine with more
 * runnable threads than cores each costs a scheduler slice (runs of 256 KiB made an export
 * sharing 2 cores with 6 busy loops markedly slower); a run of 1 MiB is still well under a second
 * of the link at 5 Mbit/s with strong compression. */
#define ADAPT_WARMUP_NS  500000000ull
#define ADAPT_WARMUP_MAX (16u << 20)
/* ...and the learning hold keeps it for ADAPT_WARMUP_FRAMES frames at most: enough for the link
 * to be seen draining them (FAT_SEND_RUN in a row, adapt.c) on a fat link. (On the compressible
 * start of a guest's changes at 100 Mbit/s, the hold once kept 45 frames of 256 KiB.) */
#define ADAPT_WARMUP_FRAMES 24
#define ADAPT_FRAME_LINK_NS 32000000000ull
#define ADAPT_FRAME_FLOOR  (1u << 20)
#define CALIBRATE_BYTES (64u << 10)
#define CALIBRATE_FAST  20e6          /* bytes per CPU-second: calibrated on a whole run */
#define CALIBRATE_WARM  (16u << 10)
/* Probes compress a sample of the newest input, gathered over the last runs (a run is 256 KiB,
 * and samples much smaller than a frame compress worse than frames: adapt.h). */
#define PROBE_MAX   (1u << 20)

struct walk {
	const char *dir;
	const struct export_opts *o;
	struct overlay *ov;
	struct stream_enc *enc;
	struct export_mode mode;
	uint32_t cs;
	int img;
	uint64_t first, count;     /* the run being collected */
	uint8_t *buf, *base;
	struct export_result *res;
	int err;
	/* full modes: the chunk encoder, one per thread; a run's records are encoded in parallel
	 * slices into per-chunk slots, then fed to the stream in order */
	struct chunk_enc *ce;              /* = ces[0] */
	struct chunk_enc *ces[WALK_MAX_THREADS];
	unsigned nthreads;
	struct delta_base dbase;
	struct sentset *sent;
	struct baseidx *bidx[OVERLAY_NIMAGES];
	uint8_t *rec;                      /* RUN_MAX / cs slots of rec_cap bytes */
	size_t rec_cap;
	struct chunk_rec *recs;
	uint64_t seq;                      /* chunks (records) so far: seq of the last one */
	bool history;                      /* the sent set came from earlier exports */
	struct sentset_lineage lineage;    /* ... and describes the receiver after that stream */

	/* the adaptive engine (adapt.h): picks the mode per run (adaptive) and makes progress lines */
	struct adapt *ad;                  /* NULL: a fixed mode, no progress lines */
	bool adaptive;
	size_t cur;                        /* the engine's index of the mode in use (wmode()) */
	size_t mbase, nm;                  /* the engine's modes: mode_get(mbase .. mbase + nm - 1) */
	struct chunk_enc **mces;           /* adaptive: nm x nthreads chunk encoders */
	struct codec_ctx *pctx;            /* probes */
	uint8_t *pbuf, *pout;
	size_t pbuf_cap, pout_cap;
	struct chunk_enc **pces;           /* a probe encoder per mode (no sent set), made on first use */
	uint8_t *sdata;                    /* the probe sample: the newest chunks read, up to PROBE_MAX */
	struct { int img; uint64_t idx; uint32_t len; } *schunk;
	size_t sn, scap;                   /* chunks in it, room for */
	uint64_t sbytes;
	uint64_t sgen, idle_sgen;          /* runs added to it; the last one an idle probe took */
	struct sender *snd;                /* the sink's thread (walk_emit wraps it to time it) */
	uint64_t io_ns;                    /* time spent in the sink and reading the overlay */
	uint64_t obs_cpu0, obs_wall0, obs_io0;   /* since the last frame went out */
	/* after a switch, the frames of the previous mode still being compressed (stream_enc's
	 * workers) come out under the new one: they are counted for the mode that made them */
	uint64_t old_frames;
	size_t old_mode;
	uint64_t total_input;              /* dirty bytes in the stream (for the ETA) */
	uint64_t last_meter_ns;
	struct adapt_cpu_meter meter;
	bool calibrated;                   /* every mode was probed once on this data */
	uint64_t run_max;                  /* bytes per run: the unit of mode decisions */
	bool warm;                         /* adaptive: past the warm-up (see ADAPT_WARMUP_NS) */
	uint32_t warm_frame;               /* ...the frame limit during it */
	uint64_t frames_out;               /* DATA frames emitted */
};

/* Initial profiles of the named modes for the adaptive engine: input bytes per CPU-second on one
 * core and output/input ratio, measured with tests/helpers/pipebench on the synthetic dataset of
 * bench/pipeline.sh (a shared 2-core machine, so rough); the engine refines both from what the
 * running export measures. Modes not listed get a cautious guess. */
static const struct { const char *name; double rate, ratio; } profiles[] = {
	{ "raw", 2000e6, 1.0 }, { "lz4", 500e6, 0.46 }, { "xor-lz4", 400e6, 0.26 },
	{ "delta-lz4", 190e6, 0.20 }, { "xor-zstd1", 250e6, 0.165 }, { "delta-zstd3", 80e6, 0.152 },
	{ "delta-zstd9", 30e6, 0.150 },
	{ "delta-lzma6", 4.5e6, 0.140 }, { "best", 5e6, 0.138 },
};

/* The table's mode that is the adaptive engine's mode j (export_adapt_new's set starts at
 * w->mbase of the table). */
static const struct mode *wmode(const struct walk *w, size_t j)
{
	return mode_get(w->mbase + j);
}

/* The frame limit for mode m on the link measured now: the mode's own frame size (see
 * ADAPT_RUN), held to a frame whose
 * expected wire size (input times the mode's ratio) the link carries in ADAPT_FRAME_LINK_NS. The
 * limit counts record bytes, which deltas make fewer than the input: frames come out larger than
 * that, which errs the cheap way (the bound is against frames of many seconds). */
static uint32_t adapt_frame_link(const struct mode *m, const struct adapt_status *st)
{
	uint32_t f = m->frame_size;
	double bw = st->bandwidth_Bps > 0 ? st->bandwidth_Bps : st->bw_model_Bps;

	if (f <= ADAPT_FRAME_FLOOR || bw <= 0 || st->ratio <= 0)
		return f;
	double in = bw * (ADAPT_FRAME_LINK_NS / 1e9) / st->ratio;
	return in >= f ? f : (uint32_t)HO_MAX(in, (double)ADAPT_FRAME_FLOOR);
}

/* The largest of them: the stream header's frame limit. */
static uint32_t adapt_frame_max(void)
{
	uint32_t f = 0;
	for (size_t i = 0; i < mode_count(); i++)
		f = HO_MAX(f, mode_get(i)->frame_size);
	return f;
}

static unsigned export_threads(const struct export_opts *o)
{
	struct adapt_params par;
	if (o->threads)
		return o->threads;
	if (!o->adaptive)
		return 1;
	/* adaptive: use the cores we may run on (the affinity mask: 1 under taskset -c 0) */
	adapt_params_init(&par);
	return (unsigned)HO_MAX(1.0, HO_MIN(par.ncores, (double)WALK_MAX_THREADS));
}

static uint64_t cpu_ns(clockid_t c)
{
	struct timespec ts;
	return clock_gettime(c, &ts) == 0 ? (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec : 0;
}

int export_adapt_new(const struct export_opts *o, struct adapt **out)
{
	struct adapt_mode_profile prof[64];
	struct adapt_params par;
	size_t n = HO_MIN(mode_count(), HO_ARRAY_SIZE(prof));
	unsigned threads = export_threads(o);
	int forced = -1;

	*out = NULL;
	if (!o->adaptive && !o->progress)
		return 0;
	/* Adaptive: the modes of the table (cheapest first) up to the default, delta-zstd3. Since
	 * zstd frames look across the whole frame (codec.c) the stronger ones make no fewer bytes
	 * of a guest's changes at more CPU, and their ratios or speeds on probe samples mislead:
	 * - the lzma modes (64 MiB: 19.45 MB with lzma-6 frames against 19.52 with delta-zstd3) at
	 *   25 times the CPU: at 100 Mbit/s the engine, having measured 'best' on a sample of
	 *   zero-rich RAM, switched to it and took 12.4 s where delta-zstd3 alone took 8.6;
	 * - delta-zstd9 (median of 3: 33.0 s as delta-zstd3 at 5 Mbit/s, 14.1 at 25) at about twice
	 *   the CPU: where data hardly compresses its sample-learnt ratio looked better by the
	 *   hysteresis now and then, and at 100 Mbit/s with load the engine went back and forth
	 *   between the two for 9 s (13.3 s against 11.2 for xor-zstd1 alone).
	 * (bench/adapt.sh.) --mode still has them. */
	if (o->adaptive)
		for (size_t i = 0; i < n; i++)
			if (mode_get(i) == mode_default()) {
				n = i + 1;
				break;
			}
	/* ... and from xor-lz4, the cheapest mode with every dedup: raw and lz4 save it CPU (the
	 * hashing) on data where dedup finds nothing, and a real guest's changes are not that data
	 * (1 Gbit/s, median of 3: xor-lz4 3.8 s, lz4 7.2, raw 7.8). Their speeds on probe samples
	 * made them look better than they were, and the engine spent the last seconds of a
	 * 1 Gbit/s transfer on lz4 (adaptive 5.5 s). --mode still has them. */
	size_t first = 0;
	if (o->adaptive)
		while (first + 1 < n && (mode_get(first)->dedup & (MODE_DEDUP_BASE | MODE_DEDUP_SENT)) !=
						(MODE_DEDUP_BASE | MODE_DEDUP_SENT))
			first++;
	n -= first;
	for (size_t i = 0; i < n; i++) {
		const struct mode *m = mode_get(first + i);
		/* frame/probe corrections are shared by modes whose frames gain alike: the same
		 * frame size and codec family (zstd and lzma both look far back; lz4 hardly) */
		unsigned fam = m->frame_codec == CODEC_ZSTD || m->frame_codec == CODEC_LZMA ? 2 :
			       m->frame_codec == CODEC_NONE ? 0 : 1;
		prof[i] = (struct adapt_mode_profile){ m->name, 10e6, 0.5, threads,
						       1 + fam * 1024 + (m->frame_size >> 16) };
		for (size_t k = 0; k < HO_ARRAY_SIZE(profiles); k++)
			if (!strcmp(profiles[k].name, m->name)) {
				prof[i].rate = profiles[k].rate;
				prof[i].ratio = profiles[k].ratio;
			}
		if (!o->adaptive && o->mode && !strcmp(o->mode, m->name))
			forced = (int)i;
	}
	if (!o->adaptive && (forced < 0 || !strcmp(o->mode, "raw")))
		return 0;                  /* progress of a fixed mode outside the chunk encoder: none */
	adapt_params_init(&par);
	if (!(*out = adapt_new(prof, n, &par)))
		return HO_ENOMEM;
	if (forced >= 0)
		adapt_force(*out, forced);
	return 0;
}

/* One progress line on stderr (not through ho_log: its prefix would break JSON lines), at most
 * every half second unless forced; input_remaining UINT64_MAX keeps the last value. */
void export_progress(struct adapt *ad, int progress, uint64_t input_remaining, uint64_t wire_bytes, bool force)
{
	struct adapt_status st;
	char line[512];

	if (!ad || !progress || !adapt_progress_due(ad, ho_mono_ns(), 500000000ull, force))
		return;
	if (input_remaining == UINT64_MAX) {
		adapt_status(ad, &st);
		input_remaining = st.input_remaining;
	}
	adapt_set_progress(ad, input_remaining, wire_bytes);
	adapt_status(ad, &st);
	if (adapt_progress_line(&st, progress == 2, line, sizeof(line)) > 0) {
		fprintf(stderr, "%s%s\n", progress == 2 ? "" : "handoff-export: ", line);
		fflush(stderr);
	}
}

static void walk_progress(struct walk *w, bool force)
{
	if (w->ad && w->o->progress)
		export_progress(w->ad, w->o->progress, w->total_input - HO_MIN(w->total_input, w->res->input_bytes),
				w->res->wire_bytes, force);
}

/* Start a new observation window: at the start, and after each frame. */
static void obs_reset(struct walk *w, uint64_t now)
{
	w->obs_cpu0 = cpu_ns(CLOCK_PROCESS_CPUTIME_ID);
	w->obs_wall0 = now;
	w->obs_io0 = w->io_ns;
}

/* A frame went out: its data chunks' bytes (not zero chunks and references, which every mode
 * finds alike: adapt.h) and its size, for the mode that made it, with the CPU of all
 * threads and the wall time (without the sink and overlay reads) since the previous frame. With
 * worker threads that time is not exactly this frame's (its compression overlapped the previous
 * ones'), so single samples are off either way; the engine's decayed sums over the last seconds
 * are right. */
static void walk_observe(struct walk *w, const struct stream_piece *p, uint64_t now)
{
	uint64_t cpu = cpu_ns(CLOCK_PROCESS_CPUTIME_ID), io = w->io_ns - w->obs_io0;
	uint64_t wall = now - w->obs_wall0;
	size_t m = w->cur;

	if (w->old_frames) {
		w->old_frames--;
		m = w->old_mode;
	}
	ho_debug("frame %" PRIu64 " of '%s': %" PRIu64 " B of chunks, %" PRIu64 " of them data, -> %zu B",
	         p->seq, wmode(w, m)->name, p->chunk_bytes, p->literal_bytes, p->len);
	adapt_observe_input(w->ad, p->chunk_bytes, p->literal_bytes, now);
	if (p->literal_bytes && cpu > w->obs_cpu0 && wall > io)
		adapt_observe_mode(w->ad, m, p->literal_bytes, p->len, cpu - w->obs_cpu0, wall - io, w->nthreads, now);
	obs_reset(w, now);
}

/* Adaptive, without --frame-size: the current mode's frame size on the link measured now
 * (adapt_frame_link), during the warm-up no larger than its limit (warm_frame, see
 * ADAPT_WARMUP_NS), from the frame being collected on. */
static void frame_limit_update(struct walk *w)
{
	struct adapt_status st;
	uint32_t f;

	if (!w->adaptive || w->o->frame_size)
		return;
	adapt_status(w->ad, &st);
	f = adapt_frame_link(w->mode.full, &st);
	stream_enc_set_frame_limit(w->enc, w->warm ? f : HO_MIN(f, w->warm_frame));
}

/* During the warm-up, after a frame went out: while the engine holds its first mode and the link
 * drained the frames before this one, the next frame twice as large; otherwise no warm-up limit
 * (the mode's size: frame_limit_update; see ADAPT_WARMUP_NS). */
static void warm_grow(struct walk *w)
{
	struct adapt_status st;
	uint32_t top = adapt_frame_max();

	if (!w->adaptive || w->warm || w->warm_frame >= top)
		return;
	adapt_status(w->ad, &st);
	w->warm_frame = st.backlog || !st.learning ? top : (uint32_t)HO_MIN((uint64_t)w->warm_frame * 2, (uint64_t)top);
	frame_limit_update(w);
}

static int walk_emit(void *arg, const struct stream_piece *p)
{
	struct walk *w = arg;
	uint64_t t0 = ho_mono_ns(), t1;
	int rc = sender_emit(w->snd, p);

	/* while the engine holds its first mode, learning the link, a frame is in the sink before
	 * the next is made, as it was without the sender thread: the warm-up sizes the next frame
	 * and the first decision bounds the link from how the socket took this one (warm_grow,
	 * adapt.h), and frames made ahead went out in the first mode after the decision (at 5
	 * Mbit/s two more, 0.5 MB more of the 64 MiB export's 18.6) */
	if (!rc && w->adaptive && p->kind == STREAM_EMIT_FRAME) {
		struct adapt_status st;
		adapt_status(w->ad, &st);
		if (st.learning)
			rc = sender_wait(w->snd);
	}
	t1 = ho_mono_ns();
	w->io_ns += t1 - t0;
	if (!rc && p->kind == STREAM_EMIT_FRAME) {
		w->frames_out++;
		if (w->ad)
			walk_observe(w, p, t1);
		warm_grow(w);
	}
	return rc;
}

struct slice {
	struct walk *w;
	unsigned t;                        /* thread index: its chunk encoder */
	uint64_t from, to;                 /* chunk positions in the run */
	uint64_t seq0;                     /* seq of position 0 */
	int rc;
};

static int base_read(void *arg, int img, void *buf, size_t len, uint64_t off)
{
	return overlay_read_base(arg, img, buf, len, off);
}

/* The sender's current copy of a chunk it is about to reference (SENTREF verification): a
 * referenced chunk was sent, so it is a modified chunk of the overlay. A chunk that changed since
 * it was sent no longer compares equal, and the reference is not made. */
static int sent_verify_read(void *arg, int img, uint64_t idx, void *buf, size_t len)
{
	struct walk *w = arg;
	if (idx >= overlay_nchunks(w->ov, img))
		return HO_EINVAL;
	return overlay_read(w->ov, img, buf, len, idx * w->cs);
}

/* The sent set this export starts from: what earlier exports sent, if the last of them ended at
 * our --since (the receiver then holds exactly that, see dedup.h), else an empty one. */
static int sent_open(struct walk *w)
{
	char *path = ho_path_join(w->dir, SENTSET_NAME);
	int rc;

	if (!path)
		return HO_ENOMEM;
	rc = w->o->no_history || w->o->since == 0 ? HO_ENOENT : sentset_load(path, &w->sent);
	if (rc == 0) {
		sentset_get_lineage(w->sent, &w->lineage);
		if (w->lineage.until == w->o->since && sentset_count(w->sent) > 0) {
			w->history = true;
			ho_info("referencing %zu chunks sent by earlier exports (up to generation %u)",
				sentset_count(w->sent), w->lineage.until);
		} else {
			ho_info("the record of sent chunks in '%s' is for generation %u, not %u: not using it",
				path, w->lineage.until, w->o->since);
			sentset_free(w->sent);
			w->sent = NULL;
		}
	} else if (rc != HO_ENOENT) {
		ho_warn("cannot load '%s' (%s): not referencing chunks of earlier exports", path, ho_strerror(rc));
	}
	free(path);
	if (!w->sent && !(w->sent = sentset_new()))
		return HO_ENOMEM;
	return 0;
}

/* Set up the chunk encoder of a mode.h mode: base reader, base indexes (cached), the sent set
 * (references to chunks sent earlier in this stream and, see sent_open, in earlier ones). */
static int walk_full_init(struct walk *w)
{
	const struct mode *m = w->mode.full;
	int rc;

	w->dbase.chunk_size = w->cs;
	w->dbase.read = base_read;
	w->dbase.arg = w->ov;
	for (int i = 0; i < OVERLAY_NIMAGES; i++) {
		w->dbase.size[i] = overlay_base_identity(w->ov, i)->size;
		if (w->adaptive || (m->dedup & MODE_DEDUP_BASE) || (m->delta == MODE_DELTA_DICT && m->far)) {
			rc = baseidx_open(NULL, overlay_base_identity(w->ov, i), overlay_base_fd(w->ov, i), w->cs,
					  w->adaptive || m->far ? 0 : BASEIDX_NO_ANCHORS, &w->bidx[i], NULL);
			if (rc) {
				ho_warn("no base index for '%s' (%s): exporting without it", overlay_image_name(i),
					ho_strerror(rc));
				w->bidx[i] = NULL;
			}
			w->dbase.index[i] = w->bidx[i];
		}
	}
	if ((w->adaptive || (m->dedup & MODE_DEDUP_SENT)) && (rc = sent_open(w)))
		return rc;
	w->rec_cap = chunk_payload_bound(w->cs);
	w->rec = malloc((RUN_MAX / w->cs) * w->rec_cap);
	w->recs = calloc(RUN_MAX / w->cs, sizeof(*w->recs));
	if (!w->rec || !w->recs)
		return HO_ENOMEM;
	w->nthreads = HO_MAX(1u, HO_MIN(w->nthreads, (unsigned)WALK_MAX_THREADS));
	if (w->adaptive) {
		/* an encoder per mode and thread, so a switch between runs costs nothing */
		size_t nm = w->nm;
		if (!(w->mces = calloc(nm * w->nthreads, sizeof(*w->mces))) ||
		    !(w->pces = calloc(nm, sizeof(*w->pces))))
			return HO_ENOMEM;
		w->scap = HO_MAX(1u, PROBE_MAX / w->cs);
		if (!(w->sdata = malloc(w->scap * w->cs)) || !(w->schunk = calloc(w->scap, sizeof(*w->schunk))))
			return HO_ENOMEM;
		for (size_t k = 0; k < nm * w->nthreads; k++) {
			if ((rc = chunk_enc_new(wmode(w, k / w->nthreads), &w->dbase, w->sent, &w->mces[k])))
				return rc;
			chunk_enc_set_verify(w->mces[k], sent_verify_read, w);
		}
		for (unsigned i = 0; i < w->nthreads; i++)
			w->ces[i] = w->mces[w->cur * w->nthreads + i];
		w->ce = w->ces[0];
		return 0;
	}
	for (unsigned i = 0; i < w->nthreads; i++) {
		if ((rc = chunk_enc_new(m, &w->dbase, w->sent, &w->ces[i])))
			return rc;
		chunk_enc_set_verify(w->ces[i], sent_verify_read, w);
	}
	w->ce = w->ces[0];
	return 0;
}

static void walk_full_free(struct walk *w)
{
	if (w->mces) {
		for (size_t k = 0; k < w->nm * w->nthreads; k++)
			chunk_enc_free(w->mces[k]);
		free(w->mces);
	} else {
		for (unsigned i = 0; i < WALK_MAX_THREADS; i++)
			chunk_enc_free(w->ces[i]);
	}
	for (size_t k = 0; w->pces && k < w->nm; k++)
		chunk_enc_free(w->pces[k]);
	free(w->pces);
	free(w->sdata);
	free(w->schunk);
	codec_ctx_free(w->pctx);
	free(w->pbuf);
	free(w->pout);
	free(w->recs);
	sentset_free(w->sent);
	for (int i = 0; i < OVERLAY_NIMAGES; i++)
		baseidx_free(w->bidx[i]);
	free(w->rec);
}

static void *slice_main(void *arg)
{
	struct slice *sl = arg;
	struct walk *w = sl->w;
	uint64_t size = overlay_image_size(w->ov, w->img);

	sl->rc = 0;
	for (uint64_t i = sl->from; i < sl->to && !sl->rc; i++) {
		uint64_t idx = w->first + i;
		sl->rc = chunk_encode(w->ces[sl->t], w->img, idx, w->buf + i * w->cs,
				      stream_chunk_len(size, w->cs, idx), sl->seq0 + i, w->rec + i * w->rec_cap,
				      w->rec_cap, &w->recs[i]);
	}
	return NULL;
}

/* Encode the run's chunks with the chunk encoder: first every chunk joins the sent set in stream
 * order (so a chunk can reference any earlier one, and the result does not depend on the number
 * of threads), then slices are encoded in parallel. */
static int encode_run(struct walk *w, uint64_t size)
{
	struct slice sl[WALK_MAX_THREADS];
	pthread_t th[WALK_MAX_THREADS];
	bool started[WALK_MAX_THREADS] = { false };
	uint64_t seq0 = w->seq + 1, n = w->count;
	unsigned nt = (unsigned)HO_MIN((uint64_t)w->nthreads, (n + 15) / 16);
	int rc = 0;

	if (w->sent) {
		for (uint64_t i = 0; i < n; i++) {
			uint8_t fp[16];
			uint64_t idx = w->first + i;
			ho_xxh128(w->buf + i * w->cs, stream_chunk_len(size, w->cs, idx), fp);
			if ((rc = sentset_add(w->sent, fp, w->img, idx, seq0 + i)))
				return rc;
		}
	}
	w->seq += n;
	nt = HO_MAX(nt, 1u);
	for (unsigned t = 0; t < nt; t++) {
		sl[t] = (struct slice){ .w = w, .t = t, .from = n * t / nt, .to = n * (t + 1) / nt, .seq0 = seq0 };
		if (t && pthread_create(&th[t], NULL, slice_main, &sl[t]) == 0)
			started[t] = true;
	}
	slice_main(&sl[0]);
	for (unsigned t = 1; t < nt; t++) {
		if (started[t])
			pthread_join(th[t], NULL);
		else
			slice_main(&sl[t]);      /* no thread: do it here */
		if (!rc)
			rc = sl[t].rc;
	}
	return sl[0].rc ? sl[0].rc : rc;
}

/* A chunk's record from the chunk encoder, as a stream chunk. */
static void full_chunk(struct walk *w, uint64_t i, struct stream_chunk *c)
{
	const struct chunk_rec *r = &w->recs[i];

	switch (r->kind) {
	case CHUNK_ZERO:    c->enc = STREAM_ENC_ZERO; break;
	case CHUNK_BASEREF: c->enc = STREAM_ENC_BASE_REF; c->src_image = r->ref_img; c->src_idx = r->ref_idx; break;
	case CHUNK_SENTREF: c->enc = STREAM_ENC_SENT_REF; c->src_image = r->ref_img; c->src_idx = r->ref_idx; break;
	case CHUNK_XOR:     c->enc = STREAM_ENC_XOR_BASE; break;
	case CHUNK_DELTA:   c->enc = STREAM_ENC_DELTA_BASE; break;
	default:            c->enc = STREAM_ENC_RAW; break;
	}
	c->payload = w->rec + i * w->rec_cap;
	c->payload_len = (uint32_t)r->len;
}

/* Switch to mode m of the table: its chunk encoders and frame codec, from the next run on (its
 * frame size: frame_limit_update, after every decision). The frame being collected is closed
 * first, with the codec of the mode that made it. */
static int switch_mode(struct walk *w, size_t m)
{
	const struct mode *md = wmode(w, m);
	int rc;

	ho_debug("adaptive: switching from '%s' to '%s'", wmode(w, w->cur)->name, md->name);
	if ((rc = stream_enc_flush_frame(w->enc)))
		return rc;
	/* the frames still in the encoder's workers are this mode's (after two quick switches,
	 * the first one's are counted for the second) */
	w->old_frames = stream_enc_frames_queued(w->enc);
	w->old_mode = w->cur;
	w->cur = m;
	w->mode.full = md;
	for (unsigned i = 0; i < w->nthreads; i++)
		w->ces[i] = w->mces[m * w->nthreads + i];
	w->ce = w->ces[0];
	return stream_enc_set_codec(w->enc, (int)md->frame_codec, md->frame_level);
}

/* Leave the warm-up once the link was measured for long enough: large runs and frames. */
static void warm_check(struct walk *w)
{
	struct adapt_status st;

	if (w->warm || !w->adaptive)
		return;
	adapt_status(w->ad, &st);
	if (st.net_measured_s * 1e9 < ADAPT_WARMUP_NS &&
	    (w->res->input_bytes < ADAPT_WARMUP_MAX || (st.learning && w->frames_out < ADAPT_WARMUP_FRAMES)))
		return;
	w->warm = true;
	w->run_max = HO_MAX(w->run_max, (uint64_t)RUN_MAX);
	frame_limit_update(w);
}

/* Keep the run just read (chunks first .. first + count - 1 of img, in w->buf) as the newest part
 * of the probe sample, dropping the oldest chunks when it is full. */
static void sample_add(struct walk *w, uint64_t size)
{
	size_t n = (size_t)HO_MIN((uint64_t)w->scap, w->count), skip = (size_t)(w->count - n);

	if (!w->sdata)
		return;
	if (w->sn + n > w->scap) {
		size_t drop = w->sn + n - w->scap;
		for (size_t i = 0; i < drop; i++)
			w->sbytes -= w->schunk[i].len;
		memmove(w->sdata, w->sdata + drop * w->cs, (w->sn - drop) * w->cs);
		memmove(w->schunk, w->schunk + drop, (w->sn - drop) * sizeof(*w->schunk));
		w->sn -= drop;
	}
	for (size_t i = 0; i < n; i++) {
		uint64_t idx = w->first + skip + i;
		uint32_t len = stream_chunk_len(size, w->cs, idx);
		memcpy(w->sdata + (w->sn + i) * w->cs, w->buf + (skip + i) * w->cs, len);
		w->schunk[w->sn + i].img = w->img;
		w->schunk[w->sn + i].idx = idx;
		w->schunk[w->sn + i].len = len;
		w->sbytes += len;
	}
	w->sn += n;
	w->sgen++;
}

/* Encode the newest `sample` bytes of the probe sample with mode j (no sent set) and compress
 * them with j's frame codec as one frame, for the engine's estimate of j on the current data;
 * when ref is a mode index, ref_out and ref_cpu are what ref made of the same sample and the CPU
 * it took (adapt_observe_probe_ref). Its time is not the current mode's. Returns the output
 * bytes (and in *cpu_out the CPU time), 0 when it could not probe. */
static uint64_t run_probe(struct walk *w, size_t j, uint64_t sample, size_t ref, uint64_t ref_out, uint64_t ref_cpu,
			  uint64_t now, uint64_t *cpu_out)
{
	const struct mode *m = wmode(w, j);
	struct chunk_enc *pe;
	uint64_t c0 = cpu_ns(CLOCK_THREAD_CPUTIME_ID), p0 = cpu_ns(CLOCK_PROCESS_CPUTIME_ID), in = 0;
	size_t n, first, plen = 0, clen = 0;

	n = (size_t)HO_MAX(1ull, HO_MIN((uint64_t)w->sn, sample / w->cs));
	if (!w->sn)
		return 0;
	first = w->sn - n;
	if (w->pbuf_cap < n * (w->rec_cap + STREAM_REC_HDR_LEN)) {
		free(w->pbuf);
		free(w->pout);
		w->pbuf_cap = n * (w->rec_cap + STREAM_REC_HDR_LEN);
		w->pout_cap = codec_bound(CODEC_LZMA, w->pbuf_cap) + 4096;
		for (int c = 0; c < CODEC_COUNT; c++)
			w->pout_cap = HO_MAX(w->pout_cap, codec_bound((enum codec)c, w->pbuf_cap) + 4096);
		w->pbuf = malloc(w->pbuf_cap);
		w->pout = malloc(w->pout_cap);
	}
	/* the probe encoder of a mode is kept: making one (codec contexts, lzma's dictionary) costs
	 * more than a small sample, and would make strong modes look slower than they are */
	if (!w->pbuf || !w->pout || (!w->pctx && !(w->pctx = codec_ctx_new())) ||
	    (!w->pces[j] && chunk_enc_new(m, &w->dbase, NULL, &w->pces[j]))) {
		w->pbuf_cap = 0;
		return 0;
	}
	pe = w->pces[j];
	/* the clock starts here: setting up buffers and encoders is not the mode's speed */
	c0 = cpu_ns(CLOCK_THREAD_CPUTIME_ID);
	for (size_t i = first; i < w->sn; i++) {
		struct chunk_rec rec;
		if (chunk_encode(pe, w->schunk[i].img, w->schunk[i].idx, w->sdata + i * w->cs, w->schunk[i].len,
				 i + 1, w->pbuf + plen + STREAM_REC_HDR_LEN, w->rec_cap, &rec))
			break;
		memset(w->pbuf + plen, 0, STREAM_REC_HDR_LEN);
		plen += STREAM_REC_HDR_LEN + rec.len;
		/* data chunks only, as the frames count them (adapt.h) */
		if (rec.kind == CHUNK_RAW || rec.kind == CHUNK_XOR || rec.kind == CHUNK_DELTA)
			in += w->schunk[i].len;
	}
	clen = plen;
	if (m->frame_codec != CODEC_NONE &&
	    codec_compress(w->pctx, m->frame_codec, m->frame_level, NULL, 0, w->pbuf, plen, w->pout, w->pout_cap, &clen))
		clen = plen;
	uint64_t t = ho_mono_ns(), c = cpu_ns(CLOCK_THREAD_CPUTIME_ID) - c0, out = clen + STREAM_FRAME_HDR_LEN;
	if (cpu_out)
		*cpu_out = c;
	if (ref == SIZE_MAX - 1)
		;                               /* warming up: not reported */
	else if (in && c && ref < adapt_mode_count(w->ad))
		adapt_observe_probe_ref(w->ad, j, in, out, c, t - now, ref, ref_out, ref_cpu, t);
	else if (in && c)
		adapt_observe_probe(w->ad, j, in, out, c, t - now, t);
	/* not the current mode's time */
	w->obs_cpu0 += cpu_ns(CLOCK_PROCESS_CPUTIME_ID) - p0;
	w->io_ns += ho_mono_ns() - now;
	return in ? out : 0;
}

/* Probe mode j: beside the current mode on the same sample when j is another one, so the engine
 * compares the two on the same data. */
static void probe_modes(struct walk *w, const size_t *js, size_t n, uint64_t sample)
{
	uint64_t ref_cpu = 0, ref_out = run_probe(w, w->cur, sample, SIZE_MAX, 0, 0, ho_mono_ns(), &ref_cpu);

	for (size_t k = 0; k < n; k++)
		if (js[k] != w->cur)
			run_probe(w, js[k], sample, ref_out ? w->cur : SIZE_MAX, ref_out, ref_cpu, ho_mono_ns(), NULL);
}

/* The probe adapt_probe_due() asked for: mode `due` and the modes the engine wants beside it
 * (adapt_probe_peers), on the sample size it asks for, beside the current mode. */
static void probe_due(struct walk *w, size_t due)
{
	size_t peers[64], np = adapt_probe_peers(w->ad, due, peers, HO_ARRAY_SIZE(peers));

	w->idle_sgen = w->sgen;
	probe_modes(w, peers, np, HO_MIN(adapt_probe_bytes(w->ad, due), (uint64_t)PROBE_MAX));
}

/* The walk waits for its sender thread (sender_emit: the queue is full, the link holds it back):
 * the walk's thread has nothing to do, so a due probe
 * runs now, on the newest input, once per new sample: the same bytes again would tell nothing.
 * Only where the link is the bottleneck and the CPU idles (adapt_cpu_idle): on a fat link the
 * sender waits briefly, and a probe then would hold the next frame back while the link drains
 * the socket. Its time is the sink's, which walk_emit counts: not counted again. */
static void walk_idle(void *arg)
{
	struct walk *w = arg;
	uint64_t io = w->io_ns;
	size_t probe;

	if (!w->adaptive || !w->calibrated || w->sgen == w->idle_sgen || !adapt_cpu_idle(w->ad) ||
	    !adapt_probe_due(w->ad, ho_mono_ns(), &probe))
		return;
	probe_due(w, probe);
	w->io_ns = io;
}

/* Before a run: feed the CPU meter, decide the mode, print progress. */
static int walk_tick(struct walk *w, uint64_t now)
{
	double avail;
	int rc;

	if (now - w->last_meter_ns >= 250000000ull) {
		w->last_meter_ns = now;
		if (adapt_cpu_meter_sample(&w->meter, &avail) == 0)
			adapt_observe_cpu(w->ad, avail, now);
	}
	if (w->adaptive) {
		size_t m = adapt_decide(w->ad, now);
		if (m != w->cur && (rc = switch_mode(w, m)))
			return rc;
		frame_limit_update(w);
	}
	walk_progress(w, false);
	return 0;
}

static int flush_run(struct walk *w)
{
	uint64_t size, off, t0 = 0;
	size_t len, probe;
	int rc;

	if (!w->count)
		return 0;
	if (w->ad) {
		t0 = ho_mono_ns();
		if ((rc = walk_tick(w, t0)))
			return rc;
	}
	size = overlay_image_size(w->ov, w->img);
	off = w->first * w->cs;
	len = (size_t)HO_MIN(w->count * w->cs, size - off);
	rc = overlay_read(w->ov, w->img, w->buf, len, off);
	if (w->ad) {
		uint64_t t1 = ho_mono_ns();
		w->io_ns += t1 - t0;
		if (!rc && w->adaptive)
			sample_add(w, size);
		if (!rc && w->adaptive && !w->calibrated) {
			/* the profiles are another machine's and another data set's: measure every
			 * mode on a small sample of this data first (a few tens of ms in all) */
			/* the whole first run for the modes the engine thinks fast, a quarter of it for
			 * the slow ones (lzma: tens of ms even so) */
			size_t fast[64] = { 0 }, slow[64] = { 0 }, nf = 0, ns = 0;
			w->calibrated = true;
			size_t nm = adapt_mode_count(w->ad);   /* the adaptive set (export_adapt_new) */
			for (size_t j = 0; j < nm && j < HO_ARRAY_SIZE(fast); j++) {
				if (adapt_mode_speed(w->ad, j) >= CALIBRATE_FAST)
					fast[nf++] = j;
				else
					slow[ns++] = j;
			}
			/* each mode once unreported first: its first use sets up codec contexts and
			 * tables that would make it look several times slower on a small sample */
			for (size_t j = 0; j < nm; j++)
				run_probe(w, j, CALIBRATE_WARM, SIZE_MAX - 1, 0, 0, ho_mono_ns(), NULL);
			probe_modes(w, fast, nf, ADAPT_RUN);
			if (ns)
				probe_modes(w, slow, ns, CALIBRATE_BYTES);
		} else if (!rc && w->adaptive && adapt_probe_due(w->ad, t1, &probe)) {
			/* a probe runs in the walk's thread and holds the pipeline up while it runs (the
			 * link drains what is queued meanwhile): the engine sizes its sample */
			probe_due(w, probe);
		}
	}
	if (rc) {
		ho_err("cannot read chunks %" PRIu64 "..%" PRIu64 " of '%s' from the overlay: %s", w->first,
		       w->first + w->count - 1, overlay_image_name(w->img), ho_strerror(rc));
		return rc;
	}
	if (w->mode.base_refs && (rc = overlay_read_base(w->ov, w->img, w->base, len, off)))
		return rc;
	if (w->ce && (rc = encode_run(w, size))) {
		ho_err("cannot encode chunks %" PRIu64 "..%" PRIu64 " of '%s': %s", w->first,
		       w->first + w->count - 1, overlay_image_name(w->img), ho_strerror(rc));
		return rc;
	}
	for (uint64_t i = 0; i < w->count; i++) {
		struct stream_chunk c = { .image = w->img, .idx = w->first + i };
		c.len = stream_chunk_len(size, w->cs, c.idx);
		c.data = w->buf + i * w->cs;
		if (w->ce) {
			full_chunk(w, i, &c);
			if (c.enc == STREAM_ENC_SENT_REF)
				w->res->sent_refs++;
		}
		else if (ho_is_zero(c.data, c.len))
			c.enc = STREAM_ENC_ZERO;
		else if (w->mode.base_refs && memcmp(c.data, w->base + i * w->cs, c.len) == 0) {
			c.enc = STREAM_ENC_BASE_REF;
			c.src_image = w->img;
			c.src_idx = c.idx;
		} else
			c.enc = STREAM_ENC_RAW;
		if ((rc = stream_enc_chunk(w->enc, &c)))
			return rc;
		w->res->chunks[w->img]++;
		w->res->input_bytes += c.len;
	}
	if (w->o->chunks_done)
		*w->o->chunks_done = w->res->chunks[0] + w->res->chunks[1];
	w->count = 0;
	return 0;
}

static int walk_cb(const struct tracker_chunk *c, void *arg)
{
	struct walk *w = arg;
	int rc;

	if (c->image < 0 || c->image >= OVERLAY_NIMAGES || c->idx >= overlay_nchunks(w->ov, c->image))
		return w->err = HO_ECORRUPT;
	if (w->o->skip && w->o->skip(w->o->skip_arg, c->image, c->idx)) {
		/* post-copy: the chunk server delivered it; the run ends before it */
		if (w->count && (rc = flush_run(w)))
			return w->err = rc;
		return 0;
	}
	if (!w->warm)
		warm_check(w);
	if (w->count && (c->image != w->img || c->idx != w->first + w->count || (w->count + 1) * w->cs > w->run_max)) {
		if ((rc = flush_run(w)))
			return w->err = rc;
	}
	if (!w->count) {
		w->img = c->image;
		w->first = c->idx;
	}
	w->count++;
	return 0;
}

/* Keep what this export sent as OVERLAY_DIR/sentset.next, for export_sent_commit(). */
static int sent_stage(struct walk *w, const struct export_result *res)
{
	struct sentset_lineage l = { .until = res->until };
	char *path;
	int rc;

	if (!(path = ho_path_join(w->dir, SENTSET_NEXT)))
		return HO_ENOMEM;
	memcpy(l.stream, res->id, sizeof(l.stream));
	sentset_set_lineage(w->sent, &l);
	if ((rc = sentset_save(w->sent, path)))
		ho_warn("cannot write '%s' (%s): the next export will not reference this one's chunks",
			path, ho_strerror(rc));
	free(path);
	return 0;
}

void export_sent_commit(const char *dir, bool applied)
{
	char *next = ho_path_join(dir, SENTSET_NEXT), *cur = ho_path_join(dir, SENTSET_NAME);

	if (next && cur && access(next, F_OK) == 0) {
		if (!applied)
			unlink(next);
		else if (rename(next, cur) < 0)
			ho_warn("cannot rename '%s' to '%s': %s", next, cur, strerror(errno));
		else
			ho_fsync_dir(cur);
	}
	free(next);
	free(cur);
}

void export_sent_forget(const char *dir)
{
	char *cur = ho_path_join(dir, SENTSET_NAME);
	if (cur && unlink(cur) == 0)
		ho_fsync_dir(cur);
	free(cur);
	export_sent_commit(dir, false);
}

uint64_t pipeline_peak_rss(void)
{
	struct rusage ru;
	return getrusage(RUSAGE_SELF, &ru) == 0 ? (uint64_t)ru.ru_maxrss * 1024 : 0;
}

struct count_arg { struct overlay *ov; uint64_t bytes; };

static int count_cb(const struct tracker_chunk *c, void *arg)
{
	struct count_arg *a = arg;
	if (c->image >= 0 && c->image < OVERLAY_NIMAGES)
		a->bytes += stream_chunk_len(overlay_image_size(a->ov, c->image), overlay_chunk_size(a->ov), c->idx);
	return 0;
}

int export_run(const char *dir, uint32_t until, const struct export_opts *o, stream_emit_fn emit, void *arg,
	       struct export_result *res)
{
	return export_run_adapt(dir, until, o, NULL, emit, arg, false, res);
}

int export_run_adapt(const char *dir, uint32_t until, const struct export_opts *o, struct adapt *ad,
		     stream_emit_fn emit, void *arg, bool idle_probes, struct export_result *res)
{
	struct sender *snd = NULL;
	struct overlay *ov = NULL;
	struct tracker *t = NULL;
	struct stream_header h;
	struct walk w = { 0 };
	struct adapt *own = NULL;
	uint64_t n[OVERLAY_NIMAGES];
	int rc;

	memset(res, 0, sizeof(*res));
	export_sent_commit(dir, false);    /* a leftover of an export that never finished */
	if (!ad && (rc = export_adapt_new(o, &own)))
		return rc;
	w.ad = ad ? ad : own;
	if (o->adaptive) {
		/* the records say how each chunk travels and each frame its codec: the stream is
		 * decodable whatever mode made which part */
		w.adaptive = true;
		w.mbase = (size_t)(mode_find(adapt_mode_name(w.ad, 0)) - mode_get(0));
		w.nm = adapt_mode_count(w.ad);
		w.cur = adapt_decide(w.ad, ho_mono_ns());
		memset(&w.mode, 0, sizeof(w.mode));
		strcpy(w.mode.name, "adaptive");
		w.mode.full = wmode(&w, w.cur);
		w.mode.codec = (int)w.mode.full->frame_codec;
		w.mode.level = w.mode.full->frame_level;
	} else if ((rc = export_parse_mode(o->mode, &w.mode))) {
		goto out;
	} else if (w.ad) {
		for (size_t i = 0; i < mode_count(); i++)
			if (w.mode.full == mode_get(i))
				w.cur = i;
	}
	if (o->since > until) {
		ho_err("--since %u is beyond the last closed generation %u", o->since, until);
		rc = HO_EINVAL;
		goto out;
	}
	if ((rc = overlay_open(dir, NULL, 0, OVERLAY_READONLY, &ov)))
		goto out;
	for (int i = 0; i < OVERLAY_NIMAGES; i++)
		n[i] = overlay_nchunks(ov, i);
	if ((rc = tracker_open(dir, OVERLAY_NIMAGES, n, TRACKER_READONLY, &t)))
		goto out;
	memset(&h, 0, sizeof(h));
	if ((rc = export_sender_id(dir, h.sender)))
		goto out;
	h.since = o->since;
	h.until = until;
	h.chunk_size = overlay_chunk_size(ov);
	h.frame_max = o->frame_size ? o->frame_size : w.adaptive ? adapt_frame_max() :
		      w.mode.full ? w.mode.full->frame_size : STREAM_FRAME_DEFAULT;
	h.frame_max = HO_MAX(h.frame_max, HO_MAX(STREAM_FRAME_MIN, h.chunk_size + STREAM_REC_HDR_LEN));
	h.frame_max = HO_MIN(h.frame_max, STREAM_FRAME_MAX);
	memcpy(h.mode, w.mode.name, sizeof(h.mode));
	for (int i = 0; i < STREAM_NIMAGES; i++) {
		h.image[i].size = overlay_image_size(ov, i);
		h.image[i].base = *overlay_base_identity(ov, i);
	}
	stream_id(&h);
	res->since = h.since;
	res->until = h.until;
	memcpy(res->id, h.id, 16);

	w.ov = ov;
	w.cs = h.chunk_size;
	w.res = res;
	w.buf = malloc(RUN_MAX);
	w.base = malloc(RUN_MAX);
	if (!w.buf || !w.base) {
		rc = HO_ENOMEM;
		goto out;
	}
	w.nthreads = export_threads(o);
	/* the warm-up (small runs and frames while the engine learns the link, ADAPT_WARMUP_NS) is
	 * for an engine a transport feeds (ad): with no link to learn (a file or a pipe) it lasted
	 * the whole learning hold, a second, in frames that compress far worse (-o FILE, 640 MiB of
	 * a guest's changes, all in delta-zstd3: 80.2 MB, against 59.4 for --mode delta-zstd3) */
	w.warm = w.adaptive && !ad;
	w.run_max = w.adaptive && !w.warm ? HO_MAX((uint64_t)ADAPT_RUN, (uint64_t)w.cs) : RUN_MAX;
	w.dir = dir;
	w.o = o;
	/* the sink on a thread of its own (sender.c), one frame queued while it writes another */
	if ((rc = sender_new(emit, arg, EXPORT_QUEUED, &snd)))
		goto out;
	if (idle_probes && w.adaptive)
		sender_set_wait(snd, walk_idle, &w);
	w.snd = snd;
	if (w.ad && o->progress) {
		struct count_arg ca = { ov, 0 };
		if (tracker_foreach(t, -1, o->since, until, count_cb, &ca) == 0)
			w.total_input = ca.bytes;
	}
	if (w.mode.full && (rc = walk_full_init(&w)))
		goto out;
	if (w.history) {
		memcpy(h.basis, w.lineage.stream, sizeof(h.basis));
		res->history = true;
	}
	if ((rc = stream_enc_new(&h, o->key, o->key_len, w.mode.codec, w.mode.level, w.ad ? walk_emit : sender_emit,
				 w.ad ? (void *)&w : (void *)snd, &w.enc)) ||
	    (rc = stream_enc_set_threads(w.enc, w.nthreads)))
		goto out;
	w.warm_frame = ADAPT_RUN;
	frame_limit_update(&w);
	if (w.ad) {
		uint64_t now = ho_mono_ns();
		obs_reset(&w, now);
		double avail;
		adapt_cpu_meter_sample(&w.meter, &avail);     /* primes it */
	}
	rc = tracker_foreach(t, -1, o->since, until, walk_cb, &w);
	if (w.err)
		rc = w.err;
	if (!rc)
		rc = flush_run(&w);
	if (!rc) {
		struct stream_end end;
		rc = stream_enc_finish(w.enc, &end);
		res->frames = end.frames;
	}
	if (!rc && w.sent)
		rc = sent_stage(&w, res);
	if (!rc && w.ad)
		walk_progress(&w, true);
out:
	{
		int src = sender_free(snd);
		if (!rc)
			rc = src;
	}
	adapt_free(own);
	res->peak_rss = pipeline_peak_rss();
	stream_enc_free(w.enc);
	walk_full_free(&w);
	free(w.buf);
	free(w.base);
	if (t)
		tracker_close(t);
	overlay_close(ov);
	return rc;
}

/* ---- to a file descriptor --------------------------------------------------------------------- */

void export_throttle(struct export_throttle *th, uint64_t rate, size_t bytes, const volatile int *cancel)
{
	if (!rate)
		return;
	if (!th->start_ns)
		th->start_ns = ho_mono_ns();
	th->bytes += bytes;
	uint64_t due = th->start_ns + th->bytes * 1000000000ull / rate, now;
	while ((now = ho_mono_ns()) < due && !(cancel && *cancel)) {
		uint64_t ns = HO_MIN(due - now, 100000000ull);
		struct timespec ts = { (time_t)(ns / 1000000000ull), (long)(ns % 1000000000ull) };
		nanosleep(&ts, NULL);
	}
}

struct fd_sink {
	int fd;
	const struct export_opts *o;
	struct export_result *res;
	struct export_throttle th;
};

static int fd_emit(void *arg, const struct stream_piece *p)
{
	struct fd_sink *s = arg;
	int rc;

	export_throttle(&s->th, s->o->rate_limit, p->len, s->o->cancel);
	if ((rc = ho_write_full(s->fd, p->buf, p->len))) {
		ho_err("cannot write the stream: %s", rc == HO_ECONN ? "the reader went away" : ho_strerror(rc));
		return rc == HO_ECONN ? HO_EIO : rc;
	}
	s->res->wire_bytes += p->len;
	return 0;
}

int export_to_fd(const char *dir, uint32_t until, const struct export_opts *o, int fd, struct export_result *res)
{
	struct fd_sink s = { .fd = fd, .o = o, .res = res };
	int rc = export_run(dir, until, o, fd_emit, &s, res);
	export_sent_commit(dir, rc == 0);
	return rc;
}
