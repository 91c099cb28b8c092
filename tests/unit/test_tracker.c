/*
 * test_tracker.c — the tracker's contract: marks stay in memory until a commit, a commit writes
 * only after the durability callback succeeded (and keeps the marks on failure), generations
 * and checkpoints, gen-range walks, reopen, read-only handles that see new commits, corruption
 * detection, and a multi-threaded hammer. Prints the cost of tracker_mark as a diagnostic.
 */
#include <ftw.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include "common/common.h"
#include "tracker/tracker.h"
#include "tests/unit/tap.h"

static int rm_cb(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb; (void)flag; (void)ftw;
	return remove(p);
}

static void rm_rf(const char *dir) { nftw(dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS); }

/* ---- walk helpers ----------------------------------------------------------------------- */

#define MAXROWS 64
struct rows {
	size_t n;
	struct tracker_chunk c[MAXROWS];
	int stop_after;   /* return 7 after this many rows (0 = never) */
};

static int collect(const struct tracker_chunk *c, void *arg)
{
	struct rows *r = arg;
	if (r->n < MAXROWS)
		r->c[r->n] = *c;
	r->n++;
	if (r->stop_after && (int)r->n == r->stop_after)
		return 7;
	return 0;
}

static size_t walk(struct tracker *t, int image, uint32_t since, uint32_t until, struct rows *r)
{
	memset(r, 0, sizeof(*r));
	int rc = tracker_foreach(t, image, since, until, collect, r);
	return rc ? (size_t)-1 : r->n;
}

static const struct tracker_chunk *find(const struct rows *r, int image, uint64_t idx)
{
	for (size_t i = 0; i < r->n && i < MAXROWS; i++)
		if (r->c[i].image == image && r->c[i].idx == idx)
			return &r->c[i];
	return NULL;
}

static bool ordered(const struct rows *r)
{
	for (size_t i = 1; i < r->n && i < MAXROWS; i++) {
		const struct tracker_chunk *a = &r->c[i - 1], *b = &r->c[i];
		if (a->image > b->image || (a->image == b->image && a->idx >= b->idx))
			return false;
	}
	return true;
}

struct gc { int n; int image[16]; uint32_t gen[16]; uint64_t chunks[16]; };

static int gc_cb(int image, uint32_t gen, uint64_t chunks, void *arg)
{
	struct gc *g = arg;
	if (g->n < 16) {
		g->image[g->n] = image;
		g->gen[g->n] = gen;
		g->chunks[g->n] = chunks;
	}
	g->n++;
	return 0;
}

static uint64_t gc_get(const struct gc *g, int image, uint32_t gen)
{
	for (int i = 0; i < g->n && i < 16; i++)
		if (g->image[i] == image && g->gen[i] == gen)
			return g->chunks[i];
	return 0;
}

/* A walk's callback may use the handle: nested walks, meta, verify, even commits. */
struct nest { struct tracker *t; int rows, bad; };

static int count_cb(const struct tracker_chunk *c, void *arg)
{
	(void)c;
	(*(int *)arg)++;
	return 0;
}

static int nest_cb(const struct tracker_chunk *c, void *arg)
{
	struct nest *n = arg;
	char buf[32];
	int inner = 0;
	n->rows++;
	if (tracker_foreach(n->t, c->image, 0, 0, count_cb, &inner) != 0 || inner < 1)
		n->bad++;
	if (tracker_get_meta(n->t, "generation", buf, sizeof(buf)) != 0)
		n->bad++;
	if (tracker_verify(n->t) != 0)
		n->bad++;
	tracker_mark(n->t, c->image, c->idx, 1, c->last_ns + 1);
	if (tracker_commit(n->t, NULL, NULL) != 0)
		n->bad++;
	return 0;
}

/* ---- durability callbacks ------------------------------------------------------------- */

struct dur {
	int calls;
	int fail;                /* return this when non-zero */
	struct tracker *t;       /* mark mark_idx of image 0 from inside the callback (a racing writer) */
	uint64_t mark_idx;
};

static int durable(void *arg)
{
	struct dur *d = arg;
	d->calls++;
	if (d->t)
		tracker_mark(d->t, 0, d->mark_idx, 1, 1000);
	return d->fail;
}

/* ---- a writer's life ---------------------------------------------------------------------- */

static void test_basic(const char *dir)
{
	const uint64_t nchunks[2] = { 1000, 500 };
	struct tracker *t = NULL, *r = NULL;
	struct rows rows;
	struct dur d = { 0 };
	uint32_t closed = 0;
	char buf[64];

	is_int(tracker_open(dir, 2, nchunks, 0, &t), HO_ENOENT, "open without TRACKER_CREATE: HO_ENOENT");
	is_int(tracker_open("no-such-dir", 2, nchunks, TRACKER_CREATE, &t), HO_ENOENT, "create in a missing dir: HO_ENOENT");
	is_int(tracker_open(dir, 2, nchunks, TRACKER_CREATE, &t), 0, "create");
	if (!t)
		return;
	is_int(tracker_generation(t), 1, "first generation is 1");
	is_int(tracker_chunk_gen(t, 0, 3), 0, "unmodified chunk has gen 0");

	tracker_mark(t, 0, 0, 10, 100);
	is_int(tracker_chunk_gen(t, 0, 9), 1, "marked chunk has the open gen");
	is_int(tracker_chunk_gen(t, 0, 10), 0, "chunk after the range untouched");
	is_int(walk(t, -1, 0, 0, &rows), 0, "pending marks are invisible to foreach");
	struct tracker_stats st;
	is_int(tracker_stats(t, &st), 0, "stats");
	is_int(st.modified[0], 10, "stats count pending chunks");
	is_int(st.pending, 10, "stats count pending marks");

	is_int(tracker_commit(t, durable, &d), 0, "commit");
	is_int(d.calls, 1, "durability callback called once");
	tracker_stats(t, &st);
	ok(st.pending == 0 && st.commits == 1 && st.modified[0] == 10, "after commit: nothing pending, one commit");
	is_int(walk(t, -1, 0, 0, &rows), 10, "committed chunks visible");
	const struct tracker_chunk *c = find(&rows, 0, 9);
	ok(c && c->gen == 1 && c->writes == 1 && c->first_ns == 100 && c->last_ns == 100,
	   "row holds gen, writes, first and last time");

	tracker_mark(t, 0, 5, 1, 200);
	tracker_mark(t, 0, 4, 2, 250);   /* touches 4 and 5 */
	is_int(tracker_commit(t, NULL, NULL), 0, "second commit");
	walk(t, 0, 0, 0, &rows);
	c = find(&rows, 0, 5);
	ok(c && c->first_ns == 100 && c->last_ns == 250 && c->writes == 3,
	   "first_ns kept from the committed row, last_ns updated, writes summed");
	d.calls = 0;
	is_int(tracker_commit(t, durable, &d), 0, "commit with nothing pending");
	is_int(d.calls, 1, "durability callback called even with nothing pending");

	/* generations */
	is_int(tracker_checkpoint(t, NULL, NULL, &closed), 0, "checkpoint");
	is_int(closed, 1, "checkpoint closed generation 1");
	is_int(tracker_generation(t), 2, "generation 2 open");
	tracker_mark(t, 1, 0, 5, 300);
	tracker_mark(t, 0, 3, 1, 310);
	is_int(tracker_chunk_gen(t, 0, 3), 2, "re-marked chunk takes the new gen");
	is_int(tracker_checkpoint(t, NULL, NULL, &closed), 0, "checkpoint commits pending marks");
	is_int(closed, 2, "closed generation 2");
	tracker_mark(t, 0, 999, 5, 320);  /* clamped to the last chunk */
	is_int(tracker_chunk_gen(t, 0, 999), 3, "last chunk marked in gen 3");
	is_int(tracker_commit(t, NULL, NULL), 0, "commit gen 3");

	is_int(walk(t, -1, 0, 0, &rows), 16, "all chunks: 10 + 5 + 1");
	ok(ordered(&rows), "walk ordered by (image, idx)");
	ok(rows.c[0].image == 0 && rows.c[0].idx == 0 && rows.c[15].image == 1 && rows.c[15].idx == 4,
	   "walk starts at image 0 and ends at image 1");
	is_int(walk(t, -1, 1, 0, &rows), 7, "since 1: chunks of gens 2 and 3");
	ok(find(&rows, 0, 3) && find(&rows, 0, 999) && find(&rows, 1, 2) && !find(&rows, 0, 4),
	   "since 1 names the right chunks");
	is_int(walk(t, -1, 1, 2, &rows), 6, "since 1 until 2: gen 2 only");
	is_int(walk(t, 0, 2, 0, &rows), 1, "image 0 since 2: one chunk");
	ok(rows.c[0].idx == 999 && rows.c[0].gen == 3, "it is chunk 999 in gen 3");
	is_int(walk(t, 1, 0, 1, &rows), 0, "image 1 until 1: nothing");
	is_int(walk(t, 1, 0, 0, &rows), 5, "image 1: five chunks");
	memset(&rows, 0, sizeof(rows));
	rows.stop_after = 3;
	is_int(tracker_foreach(t, -1, 0, 0, collect, &rows), 7, "callback's non-zero stops the walk and is returned");
	is_int(rows.n, 3, "walk stopped after 3 rows");
	is_int(tracker_foreach(t, 2, 0, 0, collect, &rows), HO_EINVAL, "image out of range: HO_EINVAL");

	struct gc g = { 0 };
	is_int(tracker_gen_counts(t, gc_cb, &g), 0, "gen counts");
	is_int(g.n, 4, "four (image, gen) pairs");
	ok(gc_get(&g, 0, 1) == 9 && gc_get(&g, 0, 2) == 1 && gc_get(&g, 0, 3) == 1 && gc_get(&g, 1, 2) == 5,
	   "gen counts per image and gen");

	/* a failed durability callback keeps the marks pending */
	tracker_mark(t, 0, 20, 1, 400);
	d = (struct dur){ .fail = HO_EIO };
	is_int(tracker_commit(t, durable, &d), HO_EIO, "commit fails when make_durable fails");
	is_int(walk(t, 0, 0, 0, &rows), 11, "failed commit wrote nothing");
	ok(!find(&rows, 0, 20), "chunk 20 not committed");
	is_int(tracker_chunk_gen(t, 0, 20), 3, "chunk 20 still pending in gen 3");
	tracker_mark(t, 0, 20, 1, 500);
	d.fail = 0;
	is_int(tracker_commit(t, durable, &d), 0, "later commit succeeds");
	walk(t, 0, 0, 0, &rows);
	c = find(&rows, 0, 20);
	ok(c && c->writes == 2 && c->first_ns == 400 && c->last_ns == 500 && c->gen == 3,
	   "kept marks merged with newer ones: writes summed, first and last kept");
	d = (struct dur){ .fail = 5 };
	tracker_mark(t, 0, 21, 1, 600);
	is_int(tracker_commit(t, durable, &d), HO_EIO, "a positive callback failure is HO_EIO");

	/* a failed checkpoint changes nothing, even with a write racing in the callback */
	d = (struct dur){ .fail = HO_ENOSPC, .t = t, .mark_idx = 22 };
	is_int(tracker_checkpoint(t, durable, &d, &closed), HO_ENOSPC, "checkpoint fails with make_durable");
	is_int(tracker_generation(t), 3, "failed checkpoint keeps the open generation");
	is_int(tracker_chunk_gen(t, 0, 22), 3, "racing mark relabelled into the open generation");
	is_int(tracker_chunk_gen(t, 0, 21), 3, "kept mark still in the open generation");
	d = (struct dur){ .t = t, .mark_idx = 23 };
	is_int(tracker_checkpoint(t, durable, &d, &closed), 0, "checkpoint with a racing write");
	is_int(closed, 3, "closed generation 3");
	is_int(tracker_chunk_gen(t, 0, 23), 4, "write racing a checkpoint belongs to the next gen");
	is_int(walk(t, 0, 2, 3, &rows), 4, "gen 3 holds 999, 20, 21, 22");
	ok(find(&rows, 0, 21) && find(&rows, 0, 22) && !find(&rows, 0, 23), "and not the racing write");
	is_int(tracker_commit(t, NULL, NULL), 0, "commit gen 4");
	walk(t, 0, 3, 0, &rows);
	ok(rows.n == 1 && rows.c[0].idx == 23 && rows.c[0].gen == 4, "racing write committed in gen 4");

	/* meta and I/O counters */
	is_int(tracker_set_meta(t, "applied", "abc"), 0, "set meta");
	is_int(tracker_set_meta(t, "applied", "stream-2"), 0, "set meta again");
	is_int(tracker_set_meta(t, "generation", "9"), HO_EINVAL, "reserved meta key refused");
	is_int(tracker_set_meta(t, "nchunks.0", "9"), HO_EINVAL, "nchunks.* reserved");
	is_int(tracker_get_meta(t, "applied", buf, sizeof(buf)), HO_ENOENT, "queued meta not committed yet");
	tracker_add_io(t, 10, 20);
	d = (struct dur){ .fail = HO_EIO };
	tracker_commit(t, durable, &d);
	is_int(tracker_get_meta(t, "applied", buf, sizeof(buf)), HO_ENOENT, "failed commit wrote no meta");
	is_int(tracker_commit(t, NULL, NULL), 0, "commit meta");
	is_int(tracker_get_meta(t, "applied", buf, sizeof(buf)), 0, "get meta");
	is_str(buf, "stream-2", "latest queued value won");
	is_int(tracker_get_meta(t, "applied", buf, 4), HO_ELIMIT, "small buffer: HO_ELIMIT");
	tracker_get_meta(t, "bytes_written", buf, sizeof(buf));
	is_str(buf, "20", "bytes_written persisted");
	tracker_get_meta(t, "generation", buf, sizeof(buf));
	is_str(buf, "4", "generation persisted in meta");
	tracker_get_meta(t, "nchunks.1", buf, sizeof(buf));
	is_str(buf, "500", "nchunks recorded");
	is_int(tracker_verify(t), 0, "verify passes");

	/* a reader in the same process sees the writer's commits */
	is_int(tracker_open(dir, 0, NULL, TRACKER_READONLY, &r), 0, "open read-only with recorded sizes");
	if (r) {
		is_int(tracker_generation(r), 4, "reader sees the generation");
		is_int(walk(r, -1, 0, 0, &rows), 20, "reader sees committed chunks");
		tracker_mark(t, 1, 77, 1, 700);
		is_int(tracker_chunk_gen(r, 1, 77), 0, "reader does not see pending marks");
		is_int(tracker_commit(t, NULL, NULL), 0, "writer commits");
		is_int(tracker_chunk_gen(r, 1, 77), 4, "reader sees the new commit");
		is_int(walk(r, 1, 3, 0, &rows), 1, "reader walks the new commit");
		is_int(tracker_checkpoint(t, NULL, NULL, &closed), 0, "writer checkpoints");
		is_int(tracker_generation(r), 5, "reader sees the new generation");
		struct gc g2 = { 0 };
		tracker_gen_counts(r, gc_cb, &g2);
		is_int(gc_get(&g2, 1, 4), 1, "reader gen counts");
		is_int(tracker_stats(r, &st), 0, "reader stats");
		ok(st.generation == 5 && st.modified[0] == 15 && st.modified[1] == 6 && st.bytes_read == 10,
		   "reader stats come from the committed state");
		is_int(tracker_commit(r, NULL, NULL), HO_ESTATE, "reader cannot commit");
		is_int(tracker_set_meta(r, "x", "y"), HO_ESTATE, "reader cannot set meta");
		is_int(tracker_checkpoint(r, NULL, NULL, &closed), HO_ESTATE, "reader cannot checkpoint");
		is_int(tracker_verify(r), 0, "verify passes on the reader");
		tracker_close(r);
		r = NULL;
	}
	const uint64_t wrong[2] = { 1000, 501 };
	is_int(tracker_open(dir, 2, wrong, TRACKER_READONLY, &r), HO_ECORRUPT, "reader with wrong sizes: HO_ECORRUPT");

	/* close drops what is pending; a writer's reopen restores committed state */
	tracker_mark(t, 0, 100, 1, 800);
	tracker_add_io(t, 1, 0);
	tracker_close(t);
	t = NULL;
	is_int(tracker_open(dir, 0, NULL, TRACKER_READONLY, &r), 0, "reader opens while no writer runs");
	is_int(tracker_open(dir, 2, nchunks, 0, &t), 0, "writer reopens");
	if (!t)
		return;
	is_int(tracker_generation(t), 5, "generation restored");
	ok(tracker_chunk_gen(t, 0, 0) == 1 && tracker_chunk_gen(t, 0, 3) == 2 && tracker_chunk_gen(t, 0, 999) == 3 &&
	   tracker_chunk_gen(t, 0, 23) == 4 && tracker_chunk_gen(t, 1, 77) == 4 && tracker_chunk_gen(t, 1, 4) == 2,
	   "chunk generations restored");
	is_int(tracker_chunk_gen(t, 0, 100), 0, "uncommitted mark dropped at close");
	tracker_stats(t, &st);
	ok(st.modified[0] == 15 && st.modified[1] == 6 && st.bytes_read == 10 && st.bytes_written == 20 &&
	   st.commits == 0, "stats restored");
	tracker_mark(t, 0, 100, 1, 900);
	is_int(tracker_commit(t, NULL, NULL), 0, "commit after reopen");
	if (r) {
		is_int(tracker_chunk_gen(r, 0, 100), 5, "reader opened before the writer sees its commit");
		tracker_close(r);
		r = NULL;
	}
	is_int(tracker_verify(t), 0, "verify passes after reopen");
	struct nest nst = { .t = t };
	is_int(tracker_foreach(t, 1, 0, 0, nest_cb, &nst), 0, "walk whose callback walks, reads, verifies, commits");
	ok(nst.rows == 6 && nst.bad == 0, "nested calls succeed, walk sees its own snapshot (%d rows, %d bad)",
	   nst.rows, nst.bad);
	walk(t, 1, 4, 0, &rows);
	is_int(rows.n, 6, "commits made inside the walk are visible afterwards");
	tracker_close(t);
	t = NULL;

	/* sizes recorded at creation are checked */
	is_int(tracker_open(dir, 2, wrong, 0, &t), HO_ECORRUPT, "writer with a different chunk count: HO_ECORRUPT");
	is_int(tracker_open(dir, 1, nchunks, 0, &t), HO_ECORRUPT, "writer with a different image count: HO_ECORRUPT");
	ok(t == NULL, "no handle after a failed open");
}

/* A read-only handle writes nothing: the database file is byte-identical afterwards. */
static void test_reader_writes_nothing(const char *dir)
{
	char *db = ho_path_join(dir, "index.db");
	uint8_t before[32], after[32];
	struct tracker *r = NULL;
	struct rows rows;
	struct stat sb0, sb1;

	ho_sha256_file(db, 0, before);
	stat(db, &sb0);
	is_int(tracker_open(dir, 0, NULL, TRACKER_READONLY, &r), 0, "reader opens");
	if (r) {
		walk(r, -1, 0, 0, &rows);
		tracker_mark(r, 0, 1, 1, 1);
		tracker_add_io(r, 1, 1);
		is_int(tracker_chunk_gen(r, 0, 1), 1, "reader chunk gen");
		is_int(tracker_verify(r), 0, "reader verify");
		tracker_close(r);
	}
	ho_sha256_file(db, 0, after);
	stat(db, &sb1);
	ok(memcmp(before, after, 32) == 0 && sb0.st_mtim.tv_sec == sb1.st_mtim.tv_sec &&
	   sb0.st_mtim.tv_nsec == sb1.st_mtim.tv_nsec, "read-only handle left index.db untouched");
	char *wal = ho_path_join(dir, "index.db-wal");
	ok(stat(wal, &sb1) != 0 || sb1.st_size == 0, "and wrote no WAL");
	free(wal);
	free(db);
}

/* tracker_verify and tracker_open catch rows that break the index's own rules. */
static void test_corruption(const char *dir)
{
	const uint64_t nchunks[1] = { 64 };
	struct tracker *t = NULL;
	sqlite3 *db;
	char *path = ho_path_join(dir, "index.db");

	is_int(tracker_open(dir, 1, nchunks, TRACKER_CREATE | TRACKER_NOSYNC, &t), 0, "create a small index");
	if (!t)
		return;
	tracker_mark(t, 0, 1, 2, 5);
	tracker_commit(t, NULL, NULL);
	is_int(tracker_verify(t), 0, "verify passes");

	ok(sqlite3_open(path, &db) == SQLITE_OK, "open with sqlite");
	sqlite3_exec(db, "INSERT INTO chunks VALUES(0, 10, 9, 1, 1, 1)", NULL, NULL, NULL);
	is_int(tracker_verify(t), HO_ECORRUPT, "verify: generation beyond the open one");
	sqlite3_exec(db, "UPDATE chunks SET gen = 1, idx = 64 WHERE idx = 10", NULL, NULL, NULL);
	is_int(tracker_verify(t), HO_ECORRUPT, "verify: chunk beyond the image");
	sqlite3_exec(db, "UPDATE chunks SET idx = 10, writes = 0 WHERE idx = 64", NULL, NULL, NULL);
	is_int(tracker_verify(t), HO_ECORRUPT, "verify: row with no writes");
	sqlite3_exec(db, "DELETE FROM chunks WHERE idx = 10", NULL, NULL, NULL);
	sqlite3_exec(db, "UPDATE generations SET closed_ns = 5 WHERE gen = 1", NULL, NULL, NULL);
	is_int(tracker_verify(t), HO_ECORRUPT, "verify: open generation marked closed");
	sqlite3_exec(db, "UPDATE generations SET closed_ns = NULL", NULL, NULL, NULL);
	is_int(tracker_verify(t), 0, "verify passes once repaired");

	/* a transaction that fails half-way writes nothing and keeps everything pending */
	struct rows rows;
	uint32_t closed = 0;
	sqlite3_exec(db, "CREATE TRIGGER boom BEFORE INSERT ON chunks WHEN NEW.idx = 40"
		     " BEGIN SELECT RAISE(ABORT, 'injected failure'); END;", NULL, NULL, NULL);
	tracker_mark(t, 0, 30, 20, 50);
	tracker_set_meta(t, "k", "v");
	is_int(tracker_commit(t, NULL, NULL), HO_EDB, "commit: a failing transaction is HO_EDB");
	is_int(walk(t, 0, 0, 0, &rows), 2, "commit: nothing of the failed transaction landed");
	tracker_mark(t, 0, 55, 1, 60);
	is_int(tracker_checkpoint(t, NULL, NULL, &closed), HO_EDB, "checkpoint fails the same way");
	is_int(tracker_generation(t), 1, "failed checkpoint keeps generation 1");
	sqlite3_exec(db, "DROP TRIGGER boom", NULL, NULL, NULL);
	sqlite3_exec(db, "CREATE TRIGGER boom2 BEFORE INSERT ON generations"
		     " BEGIN SELECT RAISE(ABORT, 'injected failure'); END;", NULL, NULL, NULL);
	is_int(tracker_checkpoint(t, NULL, NULL, &closed), HO_EDB, "checkpoint fails opening the next generation");
	is_int(walk(t, 0, 0, 0, &rows), 2, "and its chunks did not land either");
	sqlite3_exec(db, "DROP TRIGGER boom2", NULL, NULL, NULL);
	is_int(tracker_checkpoint(t, NULL, NULL, &closed), 0, "checkpoint once the failure is gone");
	is_int(closed, 1, "it closed generation 1");
	is_int(walk(t, 0, 0, 0, &rows), 23, "all kept marks committed");
	const struct tracker_chunk *c = find(&rows, 0, 55);
	ok(c && c->writes == 1 && c->gen == 1, "a kept mark is committed once, in the generation it was made");
	char buf[8];
	ok(tracker_get_meta(t, "k", buf, sizeof(buf)) == 0 && !strcmp(buf, "v"), "kept meta committed");
	sqlite3_exec(db, "DELETE FROM chunks WHERE idx >= 30; DELETE FROM meta WHERE key = 'k'", NULL, NULL, NULL);
	tracker_close(t);
	t = NULL;

	sqlite3_exec(db, "INSERT INTO chunks VALUES(0, 64, 1, 1, 1, 1)", NULL, NULL, NULL);
	is_int(tracker_open(dir, 1, nchunks, 0, &t), HO_ECORRUPT, "open: a chunk row beyond the image");
	sqlite3_exec(db, "UPDATE chunks SET idx = 63, gen = 9 WHERE idx = 64", NULL, NULL, NULL);
	is_int(tracker_open(dir, 1, nchunks, 0, &t), HO_ECORRUPT, "open: a row in a generation not yet open");
	sqlite3_exec(db, "DELETE FROM chunks WHERE idx = 63; DELETE FROM meta WHERE key = 'nchunks.0'",
		     NULL, NULL, NULL);
	is_int(tracker_open(dir, 1, nchunks, 0, &t), HO_ECORRUPT, "open: sizes missing from meta");
	sqlite3_exec(db, "DROP TABLE generations", NULL, NULL, NULL);
	is_int(tracker_open(dir, 1, nchunks, 0, &t), HO_ECORRUPT, "open: incomplete schema");
	sqlite3_close(db);
	tracker_close(t);

	FILE *f = fopen(path, "w");
	if (f) {
		fputs("this is not a database, just some text that is long enough to look like a header....", f);
		fclose(f);
	}
	char *wal = ho_path_join(dir, "index.db-wal"), *shm = ho_path_join(dir, "index.db-shm");
	unlink(wal);
	unlink(shm);
	t = NULL;
	int rc = tracker_open(dir, 1, nchunks, 0, &t);
	ok(rc == HO_ECORRUPT || rc == HO_EDB, "open: not a database (rc %d)", rc);
	tracker_close(t);
	free(wal);
	free(shm);
	free(path);
}

/* A small delta in a big table walks the gen index and sorts: same rows, same order. */
static void test_sparse_walk(const char *dir)
{
	const uint64_t nchunks[2] = { 1000, 1000 };
	const uint64_t want[] = { 3, 50, 150, 999 };
	struct tracker *t = NULL;
	struct rows rows;
	uint32_t closed;

	is_int(tracker_open(dir, 2, nchunks, TRACKER_CREATE | TRACKER_NOSYNC, &t), 0, "sparse: create");
	if (!t)
		return;
	tracker_mark(t, 0, 0, 200, 1);
	tracker_mark(t, 1, 0, 200, 1);
	tracker_checkpoint(t, NULL, NULL, &closed);
	for (int i = 3; i >= 0; i--)
		tracker_mark(t, 0, want[i], 1, 2);
	tracker_mark(t, 1, 7, 1, 2);
	tracker_checkpoint(t, NULL, NULL, &closed);
	tracker_mark(t, 0, 4, 1, 3);
	tracker_commit(t, NULL, NULL);
	is_int(walk(t, 0, 1, 2, &rows), 4, "sparse: image 0, gen 2 only");
	bool same = rows.n == 4;
	for (size_t i = 0; same && i < 4; i++)
		same = rows.c[i].idx == want[i] && rows.c[i].gen == 2;
	ok(same, "sparse: the right chunks in (image, idx) order");
	is_int(walk(t, -1, 1, 0, &rows), 6, "sparse: all images since 1");
	ok(ordered(&rows) && rows.c[1].idx == 4 && rows.c[5].image == 1 && rows.c[5].idx == 7,
	   "sparse: ordered across images");
	is_int(walk(t, -1, 0, 0, &rows), 401, "sparse: a full walk");
	ok(ordered(&rows), "sparse: full walk ordered");
	tracker_close(t);
}

/* kill -9 in the middle of commits: every commit acknowledged before the kill survives, and the
 * index reopens consistent. The child acknowledges chunk i on the pipe once its commit (and,
 * every 7th, a checkpoint) returned. */
static void crash_child(const char *dir, int wfd, uint32_t start)
{
	const uint64_t nchunks[1] = { 1u << 16 };
	struct tracker *t = NULL;
	if (tracker_open(dir, 1, nchunks, TRACKER_CREATE, &t) != 0)
		_exit(2);
	for (uint32_t i = start;; i++) {
		uint32_t closed;
		tracker_mark(t, 0, i, 1, i);
		tracker_mark(t, 0, i + 30000, 2, i);  /* a few extra rows, as a real write would */
		if ((i % 7 == 0 ? tracker_checkpoint(t, NULL, NULL, &closed) : tracker_commit(t, NULL, NULL)) != 0)
			_exit(3);
		if (write(wfd, &i, sizeof(i)) != sizeof(i))
			_exit(4);
	}
}

static void test_crash(const char *dir)
{
	const uint64_t nchunks[1] = { 1u << 16 };
	uint32_t next = 0, acked = 0;
	bool all_ok = true, ran = true;
	int seen = 0, unseen = 0;

	for (int round = 0; round < 3 && ran; round++) {
		int p[2];
		if (pipe(p) != 0)
			break;
		fflush(stdout);
		pid_t pid = fork();
		if (pid == 0) {
			close(p[0]);
			crash_child(dir, p[1], next);
		}
		close(p[1]);
		uint32_t v;
		int got = 0;
		struct tracker *r = NULL;
		/* let it run a number of commits, then kill it while it is (most likely) in the next
		 * one; a reader opened here (after the fork: sqlite handles must not cross one) must
		 * see each acknowledged commit of the other process at once */
		while (got < 25 + 10 * round && read(p[0], &v, sizeof(v)) == sizeof(v)) {
			acked = v;
			got++;
			if (!r && tracker_open(dir, 1, nchunks, TRACKER_READONLY, &r) != 0)
				r = NULL;
			if (r && got > 1)
				tracker_chunk_gen(r, 0, v) != 0 ? seen++ : unseen++;
		}
		tracker_close(r);
		kill(pid, SIGKILL);
		while (read(p[0], &v, sizeof(v)) == sizeof(v)) {
			acked = v;
			got++;
		}
		close(p[0]);
		int status;
		waitpid(pid, &status, 0);
		ran = got > 0 && WIFSIGNALED(status);
		struct tracker *t = NULL;
		if (!ran || tracker_open(dir, 1, nchunks, 0, &t) != 0) {
			all_ok = ran = false;
			break;
		}
		for (uint32_t i = 0; i <= acked; i++)
			if (tracker_chunk_gen(t, 0, i) == 0)
				all_ok = false;
		if (tracker_verify(t) != 0)
			all_ok = false;
		next = acked + 1;
		/* a commit the kill interrupted may or may not have landed: never half of it */
		uint32_t g = tracker_chunk_gen(t, 0, next);
		if ((g != 0) != (tracker_chunk_gen(t, 0, next + 30000 + 1) != 0))
			all_ok = false;
		if (g)
			next++;
		tracker_close(t);
	}
	ok(ran, "crash: child was killed mid-run each round (last ack %" PRIu32 ")", acked);
	ok(all_ok, "crash: every acknowledged commit survived kill -9, no half commit, verify passes");
	ok(seen > 50 && unseen == 0, "crash: a reader in this process saw each commit of the writer process"
	   " as soon as it was acknowledged (%d seen, %d not)", seen, unseen);
}

/* ---- the hammer ------------------------------------------------------------------------- */

#define H_CHUNKS 2048
#define H_THREADS 4
#define H_MARKS 20000
#define H_MIN_COMMITS 40

struct hammer {
	struct tracker *t;
	_Atomic uint64_t expect[2][H_CHUNKS];
	atomic_int running;
	atomic_int commits;
	int failures, checkpoints, errors;
};

struct worker { struct hammer *h; unsigned seed; };

static void *hammer_writer(void *arg)
{
	struct worker *w = arg;
	/* at least H_MARKS marks, and on until the committer has run a while: the point is overlap */
	for (int i = 0; i < H_MARKS || atomic_load(&w->h->commits) < H_MIN_COMMITS; i++) {
		int img = rand_r(&w->seed) & 1;
		uint64_t idx = (uint64_t)rand_r(&w->seed) % H_CHUNKS;
		uint64_t n = 1 + (uint64_t)rand_r(&w->seed) % 3;
		if (idx + n > H_CHUNKS)
			n = H_CHUNKS - idx;
		tracker_mark(w->h->t, img, idx, n, ho_now_ns());
		for (uint64_t k = 0; k < n; k++)
			atomic_fetch_add(&w->h->expect[img][idx + k], 1);
	}
	atomic_fetch_sub(&w->h->running, 1);
	return NULL;
}

static int flaky(void *arg)
{
	int *n = arg;
	return ++*n % 4 == 0 ? HO_EIO : 0;
}

static void *hammer_committer(void *arg)
{
	struct hammer *h = arg;
	int calls = 0;
	while (atomic_load(&h->running) > 0) {
		int rc;
		uint32_t closed;
		if (h->commits % 10 == 9) {
			rc = tracker_checkpoint(h->t, flaky, &calls, &closed);
			if (!rc)
				h->checkpoints++;
		} else {
			rc = tracker_commit(h->t, flaky, &calls);
		}
		if (rc == HO_EIO)
			h->failures++;
		else if (rc)
			h->errors++;
		h->commits++;
	}
	return NULL;
}

struct hcheck { struct hammer *h; uint64_t rows, bad, total; uint32_t maxgen; };

static int hammer_row(const struct tracker_chunk *c, void *arg)
{
	struct hcheck *k = arg;
	k->rows++;
	k->total += c->writes;
	if (c->writes != atomic_load(&k->h->expect[c->image][c->idx]) ||
	    c->gen != tracker_chunk_gen(k->h->t, c->image, c->idx) || c->first_ns > c->last_ns)
		k->bad++;
	k->maxgen = HO_MAX(k->maxgen, c->gen);
	return 0;
}

static void test_hammer(const char *dir)
{
	const uint64_t nchunks[2] = { H_CHUNKS, H_CHUNKS };
	static struct hammer h;
	struct worker w[H_THREADS];
	pthread_t th[H_THREADS + 1];

	memset(&h, 0, sizeof(h));
	is_int(tracker_open(dir, 2, nchunks, TRACKER_CREATE | TRACKER_NOSYNC, &h.t), 0, "hammer: create");
	if (!h.t)
		return;
	atomic_store(&h.running, H_THREADS);
	for (int i = 0; i < H_THREADS; i++) {
		w[i] = (struct worker){ &h, 1234u + (unsigned)i * 7919u };
		pthread_create(&th[i], NULL, hammer_writer, &w[i]);
	}
	pthread_create(&th[H_THREADS], NULL, hammer_committer, &h);
	for (int i = 0; i <= H_THREADS; i++)
		pthread_join(th[i], NULL);
	is_int(tracker_commit(h.t, NULL, NULL), 0, "hammer: final commit");
	diag("hammer: %d commits (%d failed on purpose, %d checkpoints)", atomic_load(&h.commits),
	     h.failures, h.checkpoints);
	is_int(h.errors, 0, "hammer: no unexpected commit errors");
	ok(atomic_load(&h.commits) >= H_MIN_COMMITS && h.failures > 0 && h.checkpoints > 0,
	   "hammer: commits and checkpoints ran concurrently, some failed on purpose");

	uint64_t want_rows = 0, want_total = 0;
	for (int i = 0; i < 2; i++)
		for (int j = 0; j < H_CHUNKS; j++) {
			uint64_t e = atomic_load(&h.expect[i][j]);
			want_rows += e > 0;
			want_total += e;
		}
	struct hcheck k = { .h = &h };
	is_int(tracker_foreach(h.t, -1, 0, 0, hammer_row, &k), 0, "hammer: walk");
	is_int(k.rows, want_rows, "hammer: every marked chunk committed");
	is_int(k.bad, 0, "hammer: every row has the exact write count and the in-memory gen");
	is_int(k.total, want_total, "hammer: total writes");
	ok(k.maxgen <= tracker_generation(h.t), "hammer: no gen beyond the open one");
	struct tracker_stats st;
	tracker_stats(h.t, &st);
	is_int(st.modified[0] + st.modified[1], want_rows, "hammer: modified count matches");
	is_int(tracker_verify(h.t), 0, "hammer: verify passes");
	tracker_close(h.t);
}

/* ---- cost of a mark ------------------------------------------------------------------- */

static void bench_mark(const char *dir)
{
	const uint64_t nchunks[1] = { 1u << 21 };   /* 8 GiB at 4 KiB */
	struct tracker *t = NULL;
	if (tracker_open(dir, 1, nchunks, TRACKER_CREATE | TRACKER_NOSYNC, &t) != 0)
		return;
	const int n = 200000;
	unsigned seed = 42;
	uint64_t t0 = ho_mono_ns();
	for (int i = 0; i < n; i++)
		tracker_mark(t, 0, (uint64_t)rand_r(&seed) % nchunks[0], 1, (uint64_t)i);
	uint64_t t1 = ho_mono_ns();
	for (int i = 0; i < n; i++)
		tracker_mark(t, 0, (uint64_t)i & 1023, 1, (uint64_t)i);
	uint64_t t2 = ho_mono_ns();
	struct tracker_stats st;
	tracker_stats(t, &st);
	uint64_t c0 = ho_mono_ns();
	int rc = tracker_commit(t, NULL, NULL);
	uint64_t c1 = ho_mono_ns();
	diag("tracker_mark: %.0f ns/mark (random new chunks of an 8 GiB image, incl. rand_r), %.0f ns/mark"
	     " (hot chunks); one commit of %" PRIu64 " chunks (synchronous=OFF) took %.0f ms (rc %d)",
	     (double)(t1 - t0) / n, (double)(t2 - t1) / n, st.modified[0], (double)(c1 - c0) / 1e6, rc);
	tracker_close(t);
}

int main(void)
{
	char base[] = "trk.XXXXXX";
	ho_log_init("test_tracker");
	if (!mkdtemp(base)) {
		perror("mkdtemp");
		return 1;
	}
	char *d1 = ho_path_join(base, "a"), *d2 = ho_path_join(base, "b"), *d3 = ho_path_join(base, "c"),
	     *d4 = ho_path_join(base, "d"), *d5 = ho_path_join(base, "e");
	mkdir(d1, 0700);
	mkdir(d2, 0700);
	mkdir(d3, 0700);
	mkdir(d4, 0700);
	mkdir(d5, 0700);

	test_basic(d1);
	test_reader_writes_nothing(d1);
	test_corruption(d2);
	test_sparse_walk(d4);
	test_crash(d5);
	test_hammer(d3);
	rm_rf(d4);
	mkdir(d4, 0700);
	mkdir(d5, 0700);
	bench_mark(d4);

	rm_rf(base);
	free(d1);
	free(d2);
	free(d3);
	free(d4);
	free(d5);
	return done_testing();
}
