/*
 * pendfs — the post-copy wait of fs/ (fs.h, "post-copy") end to end, for t3050: mounts an
 * overlay in-process (fs_run in a thread), marks chunks pending, and checks with reader and
 * writer threads on MNT/disk and MNT/memory that a request touching a pending chunk waits for it,
 * asks for it exactly once, then sees the arrived bytes (writes land on top of them); that
 * mmap faults on guest RAM wait the same way; that fs_pending_fail() turns waiting and later
 * requests into prompt EIO; and that with nothing pending no request asks for anything.
 *
 *   pendfs WORKDIR        TAP on stdout; exit 0, 1 (a check failed) or 77 (FUSE unusable)
 *
 * Every wait has a timeout and alarm() is the backstop, so the test never hangs.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>
#include "common/common.h"
#include "common/ctl.h"
#include "overlay/overlay.h"
#include "tracker/tracker.h"
#include "fs/fs.h"
#include "tests/unit/tap.h"

#define CS 8192u                 /* two pages per chunk: two requests can wait for one chunk */
#define NCH 64u
#define ISZ ((uint64_t)CS * NCH)
#define PG 4096u
#define SHORT_MS 150             /* "at once" */
#define HOLD_MS 300              /* how long a blocked request is kept waiting */
#define LONG_MS 10000            /* a timeout that only a hang reaches */

static struct overlay *ov;
static struct tracker *tr;
static struct fs *fs;
static uint8_t expect[OVERLAY_NIMAGES][ISZ];   /* what each image must read as */
static uint8_t base[OVERLAY_NIMAGES][ISZ];     /* the base images */

/* ---- the fetch hook: counts calls per chunk ---------------------------------------------------- */

static pthread_mutex_t hook_lock = PTHREAD_MUTEX_INITIALIZER;
static unsigned hook_calls[OVERLAY_NIMAGES][NCH], hook_total, hook_bad;

static void fetch_hook(void *arg, int img, uint64_t idx)
{
	pthread_mutex_lock(&hook_lock);
	if (arg != (void *)&hook_calls || img < 0 || img >= OVERLAY_NIMAGES || idx >= NCH)
		hook_bad++;
	else
		hook_calls[img][idx]++;
	hook_total++;
	pthread_mutex_unlock(&hook_lock);
}

static unsigned hooks(int img, uint64_t idx)
{
	pthread_mutex_lock(&hook_lock);
	unsigned n = img < 0 ? hook_total : hook_calls[img][idx];
	pthread_mutex_unlock(&hook_lock);
	return n;
}

/* Wait up to ms for the hook to be called for (img, idx). */
static bool wait_hook(int img, uint64_t idx, unsigned ms)
{
	for (unsigned t = 0; t < ms; t += 5) {
		if (hooks(img, idx))
			return true;
		usleep(5000);
	}
	return hooks(img, idx) != 0;
}

static void msleep(unsigned ms) { usleep(ms * 1000u); }
static uint64_t ms_since(uint64_t t0) { return (ho_mono_ns() - t0) / 1000000u; }

/* ---- deterministic data --------------------------------------------------------------------------- */

static uint64_t rng;
static void fill(uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		uint64_t z = (rng += 0x9e3779b97f4a7c15ull);
		z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
		z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
		p[i] = (uint8_t)((z ^ (z >> 31)) | 1);     /* never zero: "not zero" is checkable */
	}
}

/* The owner's side of an arrival: data into the overlay, the tracker mark, then fs is told. */
static void arrive(int img, uint64_t idx, uint64_t count)
{
	for (uint64_t c = idx; c < idx + count; c++) {
		uint8_t data[CS];
		fill(data, CS);
		if (overlay_write(ov, img, data, CS, c * CS))
			printf("# overlay_write of chunk %" PRIu64 " failed\n", c);
		memcpy(expect[img] + c * CS, data, CS);
	}
	tracker_mark(tr, img, idx, count, ho_now_ns());
	fs_chunk_arrived(fs, img, idx, count);
}

/* ---- requests on the mount, each in its own thread ------------------------------------------------ */

enum job_kind { J_PREAD, J_PWRITE, J_WRITE_FSYNC, J_PUNCH, J_MMAP };
struct job {
	enum job_kind kind;
	int fd;
	const uint8_t *map;
	uint64_t off;
	size_t len;
	uint8_t buf[CS];
	ssize_t res;
	int err;
	uint64_t t0, t1;
	_Atomic bool done;
	pthread_t th;
};

static void *job_main(void *arg)
{
	struct job *j = arg;
	j->t0 = ho_mono_ns();
	errno = 0;
	switch (j->kind) {
	case J_PREAD:
		j->res = pread(j->fd, j->buf, j->len, (off_t)j->off);
		break;
	case J_PWRITE:
		j->res = pwrite(j->fd, j->buf, j->len, (off_t)j->off);
		break;
	case J_WRITE_FSYNC:
		j->res = pwrite(j->fd, j->buf, j->len, (off_t)j->off);
		if (j->res == (ssize_t)j->len && fsync(j->fd) < 0)
			j->res = -1;
		break;
	case J_PUNCH:
		j->res = fallocate(j->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)j->off, (off_t)j->len);
		break;
	case J_MMAP:
		memcpy(j->buf, j->map + j->off, j->len);     /* a page fault, as a vCPU takes one */
		j->res = (ssize_t)j->len;
		break;
	}
	j->err = errno;
	j->t1 = ho_mono_ns();
	atomic_store(&j->done, true);
	return NULL;
}

/* Start a request; data (len bytes) is what a write writes. Everything is set before the thread
 * starts. */
static struct job *job_start(enum job_kind kind, int fd, const uint8_t *map, uint64_t off, size_t len,
			     const void *data)
{
	struct job *j = calloc(1, sizeof(*j));
	if (!j)
		abort();
	j->kind = kind;
	j->fd = fd;
	j->map = map;
	j->off = off;
	j->len = len;
	if (data)
		memcpy(j->buf, data, len);
	if (pthread_create(&j->th, NULL, job_main, j))
		abort();
	return j;
}

static bool job_wait(struct job *j, unsigned ms)
{
	for (unsigned t = 0; t < ms && !atomic_load(&j->done); t += 2)
		usleep(2000);
	if (!atomic_load(&j->done))
		return false;
	pthread_join(j->th, NULL);
	return true;
}

static uint64_t waited_ms(const struct job *j) { return (j->t1 - j->t0) / 1000000u; }

/* ---- mount plumbing ------------------------------------------------------------------------------- */

static _Atomic bool run_done;
static int run_rc;
static void *run_main(void *arg)
{
	(void)arg;
	run_rc = fs_run(fs);
	atomic_store(&run_done, true);
	return NULL;
}

static char bdi_ra[128];
/* The mount's read_ahead_kb, -1 if it cannot be read. */
static int readahead_kb(void)
{
	FILE *f = bdi_ra[0] ? fopen(bdi_ra, "re") : NULL;
	int kb = -1;
	if (f) {
		if (fscanf(f, "%d", &kb) != 1)
			kb = -1;
		fclose(f);
	}
	return kb;
}

static int write_base(const char *path, uint8_t *img)
{
	fill(img, ISZ);
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	int rc = fd < 0 ? HO_EIO : ho_pwrite_full(fd, img, ISZ, 0);
	if (fd >= 0)
		close(fd);
	return rc;
}

/* A process that serves a FUSE mount and uses it must not die with the mount alive: its exit
 * closes files on the mount and waits for a daemon that is gone. On a fatal signal (alarm()
 * included), abort the connection first (a forced unmount does, as root), then die. */
static char mnt_path[4096];
static void on_fatal(int sig)
{
	static const char msg[] = "Bail out! fatal signal: aborting the mount\n";
	if (write(STDOUT_FILENO, msg, sizeof(msg) - 1) < 0) {
		/* dying anyway */
	}
	if (mnt_path[0])
		umount2(mnt_path, MNT_FORCE | MNT_DETACH);
	signal(sig, SIG_DFL);
	raise(sig);
}

static void unmount(const char *mnt)
{
	if (geteuid() == 0) {
		if (umount2(mnt, 0) == 0)
			return;
		umount2(mnt, MNT_DETACH);
		return;
	}
	pid_t pid = fork();
	if (pid == 0) {
		execlp("fusermount3", "fusermount3", "-u", "-q", mnt, (char *)NULL);
		_exit(127);
	}
	if (pid > 0)
		waitpid(pid, NULL, 0);
}

static _Atomic int usr1_seen;
static void on_usr1(int sig)
{
	(void)sig;
	atomic_fetch_add(&usr1_seen, 1);
}

/* ---- the checks ----------------------------------------------------------------------------------- */

/* A request that must wait for chunk (img, c): the hook is called for it, it stays blocked
 * while nothing arrives, and the hook is not called again. */
static void check_blocked(struct job **jobs, int n, int img, uint64_t c, const char *what)
{
	ok(wait_hook(img, c, LONG_MS), "%s: the fetch hook is called for %s chunk %" PRIu64, what,
	   overlay_image_name(img), c);
	msleep(HOLD_MS);
	int blocked = 0;
	for (int i = 0; i < n; i++)
		blocked += !atomic_load(&jobs[i]->done);
	is_int(blocked, n, "  ... and it blocks while the chunk has not arrived");
	is_int(hooks(img, c), 1, "  ... the hook was called exactly once for that chunk");
}

static void check_waited(struct job *j, ssize_t want, const char *what)
{
	bool done = job_wait(j, LONG_MS);
	ok(done && j->res == want, "%s: returns once the chunk arrived", what);
	if (done && j->res != want)
		printf("#   got %zd (%s), want %zd\n", j->res, strerror(j->err), want);
	ok(done && waited_ms(j) >= HOLD_MS - 50, "  ... after waiting (%" PRIu64 " ms)", done ? waited_ms(j) : 0);
}

int main(int argc, char **argv)
{
	char base_d[4096], base_m[4096], dir[4096], mnt[4096], path[4200];
	int p[2], dfd = -1, mfd = -1, fd;
	uint8_t buf[CS], chunk[CS];
	pthread_t run_th;
	struct stat st;

	if (argc != 2) {
		fprintf(stderr, "usage: pendfs WORKDIR\n");
		return 2;
	}
	ho_log_init("pendfs");
	setvbuf(stdout, NULL, _IOLBF, 0);
	if ((fd = open("/dev/fuse", O_RDWR | O_CLOEXEC)) < 0) {
		printf("# SKIP /dev/fuse is not usable: %s\n", strerror(errno));
		return 77;
	}
	close(fd);
	/* As root, mount in a private mount namespace: a namespace another process creates meanwhile
	 * (ip netns exec, a VM test's sandbox) would otherwise copy the mount and keep it alive after
	 * we unmount ours, and fs_run would never end. It also dies with us. */
	if (geteuid() == 0 && (unshare(CLONE_NEWNS) < 0 || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0))
		printf("# cannot use a private mount namespace: %s\n", strerror(errno));
	snprintf(base_d, sizeof(base_d), "%s/base.disk", argv[1]);
	snprintf(base_m, sizeof(base_m), "%s/base.memory", argv[1]);
	snprintf(dir, sizeof(dir), "%s/ovl", argv[1]);
	snprintf(mnt, sizeof(mnt), "%s/mnt", argv[1]);
	snprintf(mnt_path, sizeof(mnt_path), "%s", mnt);
	static const int fatal[] = { SIGALRM, SIGSEGV, SIGBUS, SIGABRT, SIGFPE, SIGILL };
	for (size_t i = 0; i < HO_ARRAY_SIZE(fatal); i++)
		signal(fatal[i], on_fatal);
	alarm(120);
	rng = 42;
	if (write_base(base_d, expect[0]) || write_base(base_m, expect[1]) || mkdir(mnt, 0700) < 0) {
		printf("Bail out! cannot create the base images in '%s'\n", argv[1]);
		return 1;
	}
	memcpy(base, expect, sizeof(base));
	struct overlay_base_spec bases[OVERLAY_NIMAGES] = { { base_d, 0 }, { base_m, 0 } };
	if (fs_open_owned(dir, bases, CS, &ov, &tr)) {
		printf("Bail out! cannot open the overlay\n");
		return 1;
	}
	if (pipe2(p, O_CLOEXEC) < 0)
		return 1;
	struct fs_options opt = { .mountpoint = mnt, .ready_fd = p[1] };
	if (fs_mount(ov, tr, &opt, &fs)) {
		printf("Bail out! cannot mount on '%s'\n", mnt);
		return 1;
	}

	/* ---- the pending set ---- */
	fs_set_fetch(fs, fetch_hook, &hook_calls);
	is_int(fs_pending_count(fs), 0, "nothing is pending at first");
	is_int(fs_pending_add(fs, OVERLAY_DISK, 8, 8), 0, "disk chunks 8..15 pending");
	is_int(fs_pending_add(fs, OVERLAY_MEMORY, 8, 8), 0, "memory chunks 8..15 pending");
	is_int(fs_pending_add(fs, OVERLAY_DISK, 12, 2), 0, "adding pending chunks again is harmless");
	is_int(fs_pending_add(fs, OVERLAY_DISK, NCH, 1), HO_EINVAL, "a chunk past the end is refused");
	is_int(fs_pending_add(fs, OVERLAY_DISK, NCH - 1, 2), HO_EINVAL, "a range past the end is refused");
	is_int(fs_pending_add(fs, 2, 0, 1), HO_EINVAL, "an unknown image is refused");
	is_int(fs_pending_count(fs), 16, "16 chunks pending");

	if (pthread_create(&run_th, NULL, run_main, NULL))
		return 1;
	struct pollfd pf = { .fd = p[0], .events = POLLIN };
	if (poll(&pf, 1, LONG_MS) != 1 || read(p[0], buf, 6) != 6) {
		printf("Bail out! the mount did not become ready\n");
		return 1;
	}
	close(p[0]);
	is_int(fs_pending_begin(fs), 0, "fs_pending_begin drops the page cache");
	if (stat(mnt, &st) == 0)
		snprintf(bdi_ra, sizeof(bdi_ra), "/sys/class/bdi/%u:%u/read_ahead_kb", major(st.st_dev), minor(st.st_dev));
	bool tuned = geteuid() == 0 && access(bdi_ra, W_OK) == 0;
	if (tuned)
		is_int(readahead_kb(), 0, "readahead is off while chunks are pending");
	else
		ok(1, "# SKIP readahead is only tuned as root");

	/* files opened after fs_pending_begin: their readahead window is the bdi's (0) */
	snprintf(path, sizeof(path), "%s/disk", mnt);
	dfd = open(path, O_RDWR | O_CLOEXEC);
	snprintf(path, sizeof(path), "%s/memory", mnt);
	mfd = open(path, O_RDWR | O_CLOEXEC);
	if (dfd < 0 || mfd < 0) {
		printf("Bail out! cannot open the images on the mount: %s\n", strerror(errno));
		return 1;
	}
	if (!tuned) {
		posix_fadvise(dfd, 0, 0, POSIX_FADV_RANDOM);
		posix_fadvise(mfd, 0, 0, POSIX_FADV_RANDOM);
	}

	/* 1. a chunk that is not pending reads at once, from the base */
	uint64_t t0 = ho_mono_ns();
	ssize_t r1 = pread(dfd, buf, CS, 0), r2 = pread(dfd, chunk, PG, 3 * CS + PG);
	uint64_t took = ms_since(t0);
	ok(r1 == CS && memcmp(buf, expect[0], CS) == 0, "1. a chunk that is not pending reads the base bytes");
	ok(r2 == PG && memcmp(chunk, expect[0] + 3 * CS + PG, PG) == 0, "  ... so does another one");
	ok(took < SHORT_MS, "  ... at once (%" PRIu64 " ms)", took);
	is_int(hooks(-1, 0), 0, "  ... and asks for nothing");

	/* 2. three readers of pending disk chunk 8: two on its first page, one on its second */
	struct job *rd[3] = { job_start(J_PREAD, dfd, NULL, 8 * CS, PG, NULL),
			      job_start(J_PREAD, dfd, NULL, 8 * CS, PG, NULL),
			      job_start(J_PREAD, dfd, NULL, 8 * CS + PG, PG, NULL) };
	check_blocked(rd, 3, OVERLAY_DISK, 8, "2. concurrent preads of a pending chunk");
	is_int(hooks(-1, 0), 1, "  ... and for no other chunk");
	arrive(OVERLAY_DISK, 8, 1);
	for (int i = 0; i < 3; i++) {
		check_waited(rd[i], PG, i == 0 ? "  reader 1" : i == 1 ? "  reader 2" : "  reader 3");
		ok(memcmp(rd[i]->buf, expect[0] + rd[i]->off, PG) == 0, "  ... and sees the arrived bytes");
		ok(memcmp(rd[i]->buf, base[0] + rd[i]->off, PG) != 0 && !ho_is_zero(rd[i]->buf, PG),
		   "  ... (neither the base bytes nor zeroes)");
		free(rd[i]);
	}
	is_int(fs_pending_count(fs), 15, "the count goes down as chunks arrive");

	/* 3a. a small pwrite into a pending chunk waits, then lands on top of the arrived data */
	struct job *w = job_start(J_PWRITE, dfd, NULL, 9 * CS + 100, 5, "HELLO");
	check_blocked(&w, 1, OVERLAY_DISK, 9, "3. a 5-byte pwrite into a pending chunk");
	arrive(OVERLAY_DISK, 9, 1);
	check_waited(w, 5, "  the pwrite");
	free(w);
	memcpy(expect[0] + 9 * CS + 100, "HELLO", 5);
	ok(pread(dfd, buf, CS, 9 * CS) == CS && memcmp(buf, expect[0] + 9 * CS, CS) == 0,
	   "  ... reads back as the arrived chunk with the written bytes in place");
	ok(fsync(dfd) == 0 && overlay_read(ov, OVERLAY_DISK, buf, CS, 9 * CS) == 0 &&
	   memcmp(buf, expect[0] + 9 * CS, CS) == 0, "  ... and so does the overlay after fsync");

	/* 3b. a whole-page write (no read first) is held in the daemon until its chunk arrived */
	memset(chunk, 'W', PG);
	w = job_start(J_WRITE_FSYNC, dfd, NULL, 10 * CS, PG, chunk);
	check_blocked(&w, 1, OVERLAY_DISK, 10, "3b. a whole-page write+fsync into a pending chunk");
	arrive(OVERLAY_DISK, 10, 1);
	check_waited(w, PG, "  the write+fsync");
	free(w);
	memset(expect[0] + 10 * CS, 'W', PG);
	ok(overlay_read(ov, OVERLAY_DISK, buf, CS, 10 * CS) == 0 && memcmp(buf, expect[0] + 10 * CS, CS) == 0,
	   "  ... the overlay holds the written page over the arrived chunk (arrival did not overwrite it)");

	/* 3c. a discard of a pending chunk waits too: the arrival must not resurrect the data */
	w = job_start(J_PUNCH, dfd, NULL, 11 * CS, CS, NULL);
	check_blocked(&w, 1, OVERLAY_DISK, 11, "3c. a hole punched into a pending chunk");
	arrive(OVERLAY_DISK, 11, 1);
	check_waited(w, 0, "  the fallocate");
	free(w);
	memset(expect[0] + 11 * CS, 0, CS);
	ok(overlay_read(ov, OVERLAY_DISK, buf, CS, 11 * CS) == 0 && ho_is_zero(buf, CS),
	   "  ... the chunk stays zero in the overlay");
	ok(pread(dfd, buf, CS, 11 * CS) == CS && ho_is_zero(buf, CS), "  ... and reads as zeroes");

	/* 4. guest RAM: a fault on a pending page of a shared mapping of memory */
	uint8_t *map = mmap(NULL, ISZ, PROT_READ, MAP_SHARED, mfd, 0);
	ok(map != MAP_FAILED, "4. memory maps shared");
	if (map != MAP_FAILED) {
		t0 = ho_mono_ns();
		ok(memcmp(map + 2 * CS, expect[1] + 2 * CS, CS) == 0 && ms_since(t0) < SHORT_MS,
		   "  a fault on a page that is not pending sees the base at once");
		w = job_start(J_MMAP, -1, map, 8 * CS + 64, 16, NULL);
		check_blocked(&w, 1, OVERLAY_MEMORY, 8, "  a fault on a pending page");
		arrive(OVERLAY_MEMORY, 8, 1);
		check_waited(w, 16, "  the fault");
		ok(memcmp(w->buf, expect[1] + 8 * CS + 64, 16) == 0, "  ... and sees the arrived bytes");
		free(w);
		ok(memcmp(map + 8 * CS, expect[1] + 8 * CS, CS) == 0, "  the whole arrived chunk is visible in the mapping");
		if (tuned)
			is_int(hooks(OVERLAY_MEMORY, 9), 0, "  the fault read no neighbour (readahead off): chunk 9 was not asked for");
		else
			ok(1, "# SKIP readahead is only tuned as root");

		/* 4b. a signal the faulting thread handles (QEMU's threads take some) interrupts the
		 * FUSE read: the fault must go on waiting, not end in SIGBUS */
		struct sigaction sa = { .sa_handler = on_usr1 };
		sigemptyset(&sa.sa_mask);
		sigaction(SIGUSR1, &sa, NULL);
		w = job_start(J_MMAP, -1, map, 9 * CS + 128, 16, NULL);
		check_blocked(&w, 1, OVERLAY_MEMORY, 9, "4b. a fault on a pending page");
		for (int i = 0; i < 3; i++) {
			pthread_kill(w->th, SIGUSR1);
			msleep(50);
		}
		msleep(HOLD_MS);
		ok(atomic_load(&usr1_seen) > 0 && !atomic_load(&w->done),
		   "  ... a handled signal (%d seen) does not end the wait", atomic_load(&usr1_seen));
		is_int(hooks(OVERLAY_MEMORY, 9), 1, "  ... nor ask for the chunk again");
		arrive(OVERLAY_MEMORY, 9, 1);
		check_waited(w, 16, "  the interrupted fault");
		ok(memcmp(w->buf, expect[1] + 9 * CS + 128, 16) == 0, "  ... and sees the arrived bytes");
		free(w);
	}

	/* 6. the count goes down; chunks that are not pending are ignored; then nothing is pending */
	is_int(fs_pending_count(fs), 10, "6. 10 chunks still pending");
	fs_chunk_arrived(fs, OVERLAY_DISK, 0, 2);
	fs_chunk_arrived(fs, OVERLAY_DISK, NCH + 5, 3);
	is_int(fs_pending_count(fs), 10, "  arrivals of chunks that are not pending are ignored");
	arrive(OVERLAY_DISK, 12, 4);
	is_int(fs_pending_count(fs), 6, "  a range of 4 arrived: 6 left");
	arrive(OVERLAY_MEMORY, 10, 6);
	is_int(fs_pending_count(fs), 0, "  all arrived: none left");
	if (tuned)
		is_int(readahead_kb(), 1024, "  readahead is back to 1024 KiB");
	else
		ok(1, "# SKIP readahead is only tuned as root");
	unsigned before = hooks(-1, 0);
	t0 = ho_mono_ns();
	bool same = true;
	for (int img = 0; img < OVERLAY_NIMAGES; img++)
		for (uint64_t off = 0; off < ISZ; off += CS)
			same &= pread(img ? mfd : dfd, buf, CS, (off_t)off) == CS && memcmp(buf, expect[img] + off, CS) == 0;
	took = ms_since(t0);
	ok(same, "  both images read back as base + arrived chunks + writes");
	is_int(hooks(-1, 0) - before, 0, "  with nothing pending, reads ask for nothing");
	ok(took < 2000, "  ... and are not held up (%" PRIu64 " ms for 1 MiB)", took);

	/* 5. failure: waiters and later requests get EIO promptly, other chunks still read */
	is_int(fs_pending_add(fs, OVERLAY_DISK, 40, 2), 0, "5. disk chunks 40..41 pending again");
	is_int(fs_pending_add(fs, OVERLAY_MEMORY, 40, 1), 0, "  and memory chunk 40");
	is_int(fs_pending_begin(fs), 0, "  fs_pending_begin again");
	if (tuned)
		is_int(readahead_kb(), 0, "  readahead is off again");
	else
		ok(1, "# SKIP readahead is only tuned as root");
	char reply[HO_CTL_LINE] = "";
	int crc = ho_ctl_call(dir, "status", -1, LONG_MS, reply, sizeof(reply));
	const char *tail = strrchr(reply, ' ');
	ok(crc == 0 && tail && strcmp(tail, " pending=3") == 0, "  the control status ends in 'pending=3'");
	if (crc || !tail || strcmp(tail, " pending=3"))
		printf("#   status: %d '%s'\n", crc, reply);
	w = job_start(J_PREAD, dfd, NULL, 40 * CS, PG, NULL);
	ok(wait_hook(OVERLAY_DISK, 40, LONG_MS), "  a reader of chunk 40 waits and asks for it");
	msleep(100);
	ok(!atomic_load(&w->done), "  ... and is still blocked");
	fs_pending_fail(fs);
	t0 = ho_mono_ns();
	bool done = job_wait(w, LONG_MS);
	took = ms_since(t0);
	ok(done && w->res < 0 && w->err == EIO, "  fs_pending_fail: the waiting reader fails with EIO");
	ok(done && took < 1000, "  ... promptly (%" PRIu64 " ms)", took);
	free(w);
	t0 = ho_mono_ns();
	errno = 0;
	ok(pread(dfd, buf, PG, 41 * CS) < 0 && errno == EIO && ms_since(t0) < 1000,
	   "  a later read of a still-pending disk chunk fails with EIO at once");
	errno = 0;
	ok(pread(mfd, buf, PG, 40 * CS) < 0 && errno == EIO, "  so does one of a still-pending memory chunk");
	errno = 0;
	ok(pwrite(dfd, "x", 1, 41 * CS + 7) < 0 && errno == EIO, "  and a small write into one");
	ok(pread(dfd, buf, CS, 50 * CS) == CS && memcmp(buf, expect[0] + 50 * CS, CS) == 0,
	   "  a chunk that is not pending still reads fine");
	is_int(fs_pending_count(fs), 3, "  the count stays what it was");
	fs_chunk_arrived(fs, OVERLAY_DISK, 40, 2);
	is_int(fs_pending_count(fs), 3, "  ... even after a late arrival");
	is_int(fs_pending_add(fs, OVERLAY_DISK, 1, 1), HO_ESTATE, "  adding after the failure is refused");
	if (tuned)
		is_int(readahead_kb(), 1024, "  readahead is back to 1024 KiB");
	else
		ok(1, "# SKIP readahead is only tuned as root");

	/* a new round on the same mount after the failure */
	fs_pending_reset(fs);
	is_int(fs_pending_count(fs), 0, "fs_pending_reset: nothing pending");
	ok(pread(dfd, buf, CS, 41 * CS) == CS && memcmp(buf, expect[0] + 41 * CS, CS) == 0,
	   "  a chunk that was pending reads what the overlay holds (here: the base)");
	is_int(fs_pending_add(fs, OVERLAY_DISK, 42, 1), 0, "  adding works again");
	is_int(fs_pending_begin(fs), 0, "  and beginning");
	w = job_start(J_PREAD, dfd, NULL, 42 * CS, PG, NULL);
	check_blocked(&w, 1, OVERLAY_DISK, 42, "  a read of the new pending chunk");
	arrive(OVERLAY_DISK, 42, 1);
	check_waited(w, PG, "  the read");
	ok(memcmp(w->buf, expect[0] + 42 * CS, PG) == 0, "  ... and sees the arrived bytes");
	free(w);
	is_int(fs_pending_count(fs), 0, "  none left");
	is_int(hook_bad, 0, "the hook always got its argument, a valid image and chunk");

	/* stopping with a request waiting: SIGTERM fails the pending chunks, so nothing hangs, and the
	 * daemon unmounts (lazily: files are open) and fs_run returns once they are closed */
	is_int(fs_pending_add(fs, OVERLAY_DISK, 43, 1), 0, "a chunk pending again");
	w = job_start(J_PREAD, dfd, NULL, 43 * CS, PG, NULL);
	ok(wait_hook(OVERLAY_DISK, 43, LONG_MS), "  a reader waits for it");
	kill(getpid(), SIGTERM);
	done = job_wait(w, LONG_MS);
	ok(done && w->res < 0 && w->err == EIO, "  SIGTERM: the waiting reader fails with EIO instead of hanging");
	free(w);
	if (map != MAP_FAILED)
		munmap(map, ISZ);
	close(dfd);
	close(mfd);
	for (int t = 0; t < LONG_MS && !atomic_load(&run_done); t += 10)
		msleep(10);
	if (!atomic_load(&run_done))
		unmount(mnt);
	ok(atomic_load(&run_done), "  and fs_run ends");
	if (atomic_load(&run_done)) {
		pthread_join(run_th, NULL);
		is_int(run_rc, 0, "  without errors");
		fs_free(fs);
		tracker_close(tr);
		overlay_close(ov);
	}
	return done_testing();
}
