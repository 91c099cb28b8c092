/*
 * tracker.c — the modified-chunk index: an sqlite database (WAL) in OVERLAY_DIR/index.db, fed
 * from memory in batches.
 *
 * Why it looks like this: tracker_mark() runs on every FUSE write, from several threads, so it
 * must never touch sqlite. It stores the open generation into a per-image array of atomics
 * (read lock-free by tracker_chunk_gen()) and folds the write into a small open-addressing hash
 * map of pending marks, all under one short mutex. tracker_commit() swaps that map out under
 * the mutex (O(1)), lets writers continue, calls the caller's durability callback (fdatasync
 * of the chunk data), and only then writes the snapshot in ONE transaction. If the callback or
 * the transaction fails, the snapshot is merged back into pending, so nothing acknowledged is
 * ever lost from memory and nothing is committed before its data is durable.
 *
 * Locks, outermost first:
 *   commit_mu  serializes commits and checkpoints; guards the writer connection `db` and its
 *              prepared statements, and the committed_* fields.
 *   mark_mu    guards the pending map, the queued meta values and the open generation's
 *              changes (writers of `generation` hold it; readers load it atomically).
 *   rd_mu      (recursive) guards the read connection `rdb` and its statements; foreach
 *              callbacks run under it, so they may call other read functions of the handle.
 * The writer holds two connections: `db` for commits, `rdb` (read-only) for queries, so a long
 * tracker_foreach() walk during an export never stalls the fsyncs of the running VM (WAL lets
 * the reader keep its snapshot while the writer commits).
 *
 * A TRACKER_READONLY handle has only `rdb`, opened with SQLITE_OPEN_READONLY and
 * query_only; it caches nothing, so every call sees the latest commit of the writer process.
 */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include "common/common.h"
#include "tracker/tracker.h"

#define TRACKER_FORMAT 1
#define BUSY_TIMEOUT_MS 10000
#define META_VALUE_MAX 4096

/* One pending mark: the chunk (key = idx << 1 | image, plus one so that 0 means empty) and what
 * the writes since the last commit did to it. */
struct pend {
	uint64_t key;
	uint64_t first_ns, last_ns;
	uint64_t writes;
	uint32_t gen;
};

struct ptable {
	struct pend *e;      /* cap slots, or NULL when cap == 0 */
	size_t cap;          /* 0 or a power of two */
	size_t n;
};

struct meta_kv {
	char *key, *value;
};

struct meta_q {
	struct meta_kv *kv;
	size_t n, cap;
};

struct tracker {
	unsigned flags;
	int nimages;
	uint64_t nchunks[TRACKER_MAX_IMAGES];
	char *path;

	/* writer only */
	_Atomic uint32_t *gens[TRACKER_MAX_IMAGES];   /* lock-free readers; stores under mark_mu */
	_Atomic uint64_t modified[TRACKER_MAX_IMAGES]; /* stores under mark_mu */
	_Atomic uint32_t generation;                   /* the open generation; stores under mark_mu */
	_Atomic uint64_t bytes_read, bytes_written;    /* cumulative, lock-free */

	pthread_mutex_t mark_mu;
	struct ptable pending;                         /* mark_mu */
	struct meta_q metaq;                           /* mark_mu */

	pthread_mutex_t commit_mu;
	sqlite3 *db;                                   /* commit_mu */
	sqlite3_stmt *st_begin, *st_commit, *st_rollback, *st_upsert, *st_meta_put,
		     *st_gen_close, *st_gen_open;          /* commit_mu */
	uint64_t committed_br, committed_bw;           /* commit_mu */
	_Atomic uint64_t commits;

	/* both */
	pthread_mutex_t rd_mu;                         /* recursive */
	sqlite3 *rdb;                                  /* rd_mu */
	sqlite3_stmt *st_get_meta, *st_chunk_gen;      /* rd_mu */
};

static const char SCHEMA[] =
	"CREATE TABLE meta(key TEXT PRIMARY KEY, value) WITHOUT ROWID;"
	"CREATE TABLE chunks(image INTEGER NOT NULL, idx INTEGER NOT NULL, gen INTEGER NOT NULL,"
	" first_ns INTEGER NOT NULL, last_ns INTEGER NOT NULL, writes INTEGER NOT NULL,"
	" PRIMARY KEY(image, idx)) WITHOUT ROWID;"
	"CREATE INDEX chunks_gen ON chunks(gen);"
	"CREATE TABLE generations(gen INTEGER PRIMARY KEY, opened_ns INTEGER NOT NULL, closed_ns INTEGER);";

/* ---- small helpers ------------------------------------------------------------------------- */

static int db_err(sqlite3 *db, int rc, const char *what, const char *path)
{
	ho_err("cannot %s in '%s': %s", what, path ? path : "index.db",
	       db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
	switch (rc & 0xff) {
	case SQLITE_CORRUPT:
	case SQLITE_NOTADB:
		return HO_ECORRUPT;
	case SQLITE_NOMEM:
		return HO_ENOMEM;
	case SQLITE_FULL:
		return HO_ENOSPC;
	default:
		return HO_EDB;
	}
}

static int exec(sqlite3 *db, const char *sql, const char *path)
{
	char *msg = NULL;
	int rc = sqlite3_exec(db, sql, NULL, NULL, &msg);
	if (rc != SQLITE_OK) {
		ho_err("cannot run '%.40s' in '%s': %s", sql, path, msg ? msg : sqlite3_errstr(rc));
		sqlite3_free(msg);
		return (rc & 0xff) == SQLITE_CORRUPT || (rc & 0xff) == SQLITE_NOTADB ? HO_ECORRUPT
		       : (rc & 0xff) == SQLITE_FULL ? HO_ENOSPC : HO_EDB;
	}
	return 0;
}

static int prep(sqlite3 *db, const char *sql, sqlite3_stmt **st, const char *path)
{
	int rc = sqlite3_prepare_v3(db, sql, -1, SQLITE_PREPARE_PERSISTENT, st, NULL);
	if (rc != SQLITE_OK)
		return db_err(db, rc, "prepare a statement", path);
	return 0;
}

/* Step a statement that returns no rows (or whose rows we ignore) and reset it. */
static int step_done(sqlite3 *db, sqlite3_stmt *st, const char *what, const char *path)
{
	int rc = sqlite3_step(st);
	sqlite3_reset(st);
	sqlite3_clear_bindings(st);
	if (rc != SQLITE_DONE && rc != SQLITE_ROW)
		return db_err(db, rc, what, path);
	return 0;
}

static inline uint64_t pkey(int image, uint64_t idx) { return (idx << 1 | (uint64_t)image) + 1; }
static inline int pkey_image(uint64_t key) { return (int)((key - 1) & 1); }
static inline uint64_t pkey_idx(uint64_t key) { return (key - 1) >> 1; }

static inline size_t phash(uint64_t key, size_t cap)
{
	return (size_t)((key * 0x9E3779B97F4A7C15ull) >> 17) & (cap - 1);
}

static void ptable_free(struct ptable *p)
{
	free(p->e);
	p->e = NULL;
	p->cap = p->n = 0;
}

/* Find key's slot or the empty slot where it belongs. cap must be non-zero. */
static struct pend *ptable_slot(struct ptable *p, uint64_t key)
{
	size_t i = phash(key, p->cap);
	for (;;) {
		struct pend *e = &p->e[i];
		if (e->key == key || e->key == 0)
			return e;
		i = (i + 1) & (p->cap - 1);
	}
}

/* Make room for one more entry (load factor <= 3/4). */
static int ptable_reserve(struct ptable *p, size_t more)
{
	size_t need = p->n + more, cap = p->cap ? p->cap : 256;
	if (p->cap && need * 4 <= p->cap * 3)
		return 0;
	while (need * 4 > cap * 3)
		cap *= 2;
	struct pend *ne = calloc(cap, sizeof(*ne));
	if (!ne)
		return HO_ENOMEM;
	struct ptable np = { ne, cap, 0 };
	for (size_t i = 0; i < p->cap; i++) {
		if (p->e[i].key) {
			*ptable_slot(&np, p->e[i].key) = p->e[i];
			np.n++;
		}
	}
	free(p->e);
	*p = np;
	return 0;
}

/* Fold one pending record into p (same chunk: earliest first, latest last, summed writes,
 * highest generation). */
static int ptable_merge(struct ptable *p, const struct pend *r)
{
	int rc = ptable_reserve(p, 1);
	if (rc)
		return rc;
	struct pend *e = ptable_slot(p, r->key);
	if (!e->key) {
		*e = *r;
		p->n++;
		return 0;
	}
	e->first_ns = HO_MIN(e->first_ns, r->first_ns);
	e->last_ns = HO_MAX(e->last_ns, r->last_ns);
	e->writes += r->writes;
	e->gen = HO_MAX(e->gen, r->gen);
	return 0;
}

static int pend_cmp(const void *a, const void *b)
{
	const struct pend *x = a, *y = b;
	int xi = pkey_image(x->key), yi = pkey_image(y->key);
	if (xi != yi)
		return xi < yi ? -1 : 1;
	uint64_t xx = pkey_idx(x->key), yx = pkey_idx(y->key);
	return xx < yx ? -1 : xx > yx;
}

/* Squeeze the entries to the front and sort them by (image, idx), the primary key order, so
 * that the transaction walks the B-tree once. The table is no longer a hash table after this:
 * it is only read as an array (or merged back entry by entry). */
static void ptable_sort(struct ptable *p)
{
	size_t j = 0;
	for (size_t i = 0; i < p->cap; i++)
		if (p->e[i].key)
			p->e[j++] = p->e[i];
	if (j > 1)
		qsort(p->e, j, sizeof(*p->e), pend_cmp);
	p->n = j;
}

static void metaq_free(struct meta_q *q)
{
	for (size_t i = 0; i < q->n; i++) {
		free(q->kv[i].key);
		free(q->kv[i].value);
	}
	free(q->kv);
	q->kv = NULL;
	q->n = q->cap = 0;
}

/* Put key=value into q, replacing an older value unless keep_newer (then an existing key wins).
 * Takes ownership of key and value (frees them if unused). */
static int metaq_put(struct meta_q *q, char *key, char *value, bool keep_newer)
{
	for (size_t i = 0; i < q->n; i++) {
		if (strcmp(q->kv[i].key, key) == 0) {
			if (keep_newer) {
				free(value);
			} else {
				free(q->kv[i].value);
				q->kv[i].value = value;
			}
			free(key);
			return 0;
		}
	}
	if (q->n == q->cap) {
		size_t nc = q->cap ? q->cap * 2 : 4;
		struct meta_kv *nk = realloc(q->kv, nc * sizeof(*nk));
		if (!nk) {
			free(key);
			free(value);
			return HO_ENOMEM;
		}
		q->kv = nk;
		q->cap = nc;
	}
	q->kv[q->n].key = key;
	q->kv[q->n].value = value;
	q->n++;
	return 0;
}

static bool reserved_key(const char *key)
{
	return !strcmp(key, "generation") || !strcmp(key, "bytes_read") ||
	       !strcmp(key, "bytes_written") || !strcmp(key, "nimages") || !strcmp(key, "format") ||
	       !strncmp(key, "nchunks.", 8);
}

static void lock(pthread_mutex_t *m) { pthread_mutex_lock(m); }
static void unlock(pthread_mutex_t *m) { pthread_mutex_unlock(m); }

/* ---- meta reads (read connection) ------------------------------------------------------- */

/* Read an integer meta value through the read connection. HO_ENOENT if absent. rd_mu held. */
static int meta_int(struct tracker *t, const char *key, int64_t *out)
{
	sqlite3_stmt *st = t->st_get_meta;
	sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
	int rc = sqlite3_step(st), ret = 0;
	if (rc == SQLITE_ROW) {
		if (sqlite3_column_type(st, 0) != SQLITE_INTEGER) {
			ho_err("meta '%s' of '%s' is not an integer", key, t->path);
			ret = HO_ECORRUPT;
		} else {
			*out = sqlite3_column_int64(st, 0);
		}
	} else if (rc == SQLITE_DONE) {
		ret = HO_ENOENT;
	} else {
		ret = db_err(t->rdb, rc, "read meta", t->path);
	}
	sqlite3_reset(st);
	sqlite3_clear_bindings(st);
	return ret;
}

static int read_generation(struct tracker *t, uint32_t *out)
{
	int64_t g = 0;
	int rc = meta_int(t, "generation", &g);
	if (rc == HO_ENOENT) {
		ho_err("'%s' has no generation", t->path);
		return HO_ECORRUPT;
	}
	if (rc)
		return rc;
	if (g < 1 || g > UINT32_MAX) {
		ho_err("generation %" PRId64 " of '%s' is out of range", g, t->path);
		return HO_ECORRUPT;
	}
	*out = (uint32_t)g;
	return 0;
}

/* ---- open / close ---------------------------------------------------------------------- */

static bool has_schema(sqlite3 *db, const char *path, int *err)
{
	sqlite3_stmt *st;
	*err = 0;
	int rc = sqlite3_prepare_v2(db, "SELECT count(*) FROM sqlite_schema WHERE type='table' AND"
				    " name IN ('meta','chunks','generations')", -1, &st, NULL);
	if (rc != SQLITE_OK) {
		*err = db_err(db, rc, "read the schema", path);
		return false;
	}
	rc = sqlite3_step(st);
	int n = rc == SQLITE_ROW ? sqlite3_column_int(st, 0) : -1;
	if (rc != SQLITE_ROW)
		*err = db_err(db, rc, "read the schema", path);
	sqlite3_finalize(st);
	if (n > 0 && n < 3) {
		ho_err("'%s' has an incomplete tracker schema", path);
		*err = HO_ECORRUPT;
	}
	return n == 3;
}

/* Create the schema and initial rows on the writer connection, inside a transaction. */
static int create_schema(struct tracker *t)
{
	int rc = exec(t->db, SCHEMA, t->path);
	if (rc)
		return rc;
	char sql[256];
	snprintf(sql, sizeof(sql), "INSERT INTO meta VALUES('format',%d),('generation',1),"
		 "('bytes_read',0),('bytes_written',0),('nimages',%d);", TRACKER_FORMAT, t->nimages);
	if ((rc = exec(t->db, sql, t->path)))
		return rc;
	for (int i = 0; i < t->nimages; i++) {
		snprintf(sql, sizeof(sql), "INSERT INTO meta VALUES('nchunks.%d',%" PRId64 ");", i,
			 (int64_t)t->nchunks[i]);
		if ((rc = exec(t->db, sql, t->path)))
			return rc;
	}
	snprintf(sql, sizeof(sql), "INSERT INTO generations VALUES(1,%" PRId64 ",NULL);",
		 (int64_t)ho_now_ns());
	return exec(t->db, sql, t->path);
}

/* Check the recorded format and sizes against what the caller opened with. A reader that passed
 * no sizes takes the recorded ones. rd_mu held (or single-threaded open). */
static int check_sizes(struct tracker *t, bool take)
{
	int64_t v;
	int rc = meta_int(t, "format", &v);
	if (rc == HO_ENOENT || (!rc && v != TRACKER_FORMAT)) {
		ho_err("'%s' has an unsupported tracker format", t->path);
		return HO_ECORRUPT;
	}
	if (rc)
		return rc;
	if ((rc = meta_int(t, "nimages", &v)))
		goto missing;
	if (take) {
		if (v < 1 || v > TRACKER_MAX_IMAGES) {
			ho_err("'%s' records %" PRId64 " images", t->path, v);
			return HO_ECORRUPT;
		}
		t->nimages = (int)v;
	} else if (v != t->nimages) {
		ho_err("'%s' records %" PRId64 " images, expected %d", t->path, v, t->nimages);
		return HO_ECORRUPT;
	}
	for (int i = 0; i < t->nimages; i++) {
		char key[32];
		snprintf(key, sizeof(key), "nchunks.%d", i);
		if ((rc = meta_int(t, key, &v)))
			goto missing;
		if (take) {
			if (v < 0) {
				ho_err("'%s' records %" PRId64 " chunks for image %d", t->path, v, i);
				return HO_ECORRUPT;
			}
			t->nchunks[i] = (uint64_t)v;
		} else if ((uint64_t)v != t->nchunks[i]) {
			ho_err("'%s' records %" PRId64 " chunks for image %d, expected %" PRIu64,
			       t->path, v, i, t->nchunks[i]);
			return HO_ECORRUPT;
		}
	}
	return 0;
missing:
	if (rc == HO_ENOENT) {
		ho_err("'%s' does not record its image sizes", t->path);
		return HO_ECORRUPT;
	}
	return rc;
}

/* Writer: load committed chunk generations and the cumulative counters into memory. */
static int load_state(struct tracker *t)
{
	uint32_t g;
	int64_t v;
	int rc = read_generation(t, &g);
	if (rc)
		return rc;
	atomic_store(&t->generation, g);
	if ((rc = meta_int(t, "bytes_read", &v)) == 0 && v >= 0)
		t->committed_br = (uint64_t)v;
	if (!rc && (rc = meta_int(t, "bytes_written", &v)) == 0 && v >= 0)
		t->committed_bw = (uint64_t)v;
	if (rc == HO_ENOENT)
		rc = 0;
	if (rc)
		return rc;
	atomic_store(&t->bytes_read, t->committed_br);
	atomic_store(&t->bytes_written, t->committed_bw);

	sqlite3_stmt *st;
	rc = sqlite3_prepare_v2(t->rdb, "SELECT image, idx, gen FROM chunks", -1, &st, NULL);
	if (rc != SQLITE_OK)
		return db_err(t->rdb, rc, "read chunks", t->path);
	int ret = 0;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		int64_t img = sqlite3_column_int64(st, 0), idx = sqlite3_column_int64(st, 1);
		int64_t gen = sqlite3_column_int64(st, 2);
		if (img < 0 || img >= t->nimages || idx < 0 || (uint64_t)idx >= t->nchunks[img]) {
			ho_err("'%s' names chunk %" PRId64 " of image %" PRId64 ", which does not exist",
			       t->path, idx, img);
			ret = HO_ECORRUPT;
			break;
		}
		if (gen < 1 || gen > g) {
			ho_err("'%s' records generation %" PRId64 " for chunk %" PRId64 " of image %"
			       PRId64 ", open generation is %" PRIu32, t->path, gen, idx, img, g);
			ret = HO_ECORRUPT;
			break;
		}
		if (atomic_exchange_explicit(&t->gens[img][idx], (uint32_t)gen, memory_order_relaxed) == 0)
			atomic_fetch_add_explicit(&t->modified[img], 1, memory_order_relaxed);
	}
	if (!ret && rc != SQLITE_DONE)
		ret = db_err(t->rdb, rc, "read chunks", t->path);
	sqlite3_finalize(st);
	return ret;
}

static int open_conn(const char *path, int oflags, bool readonly, unsigned tflags, sqlite3 **out)
{
	sqlite3 *db = NULL;
	int rc = sqlite3_open_v2(path, &db, oflags, NULL);
	if (rc != SQLITE_OK) {
		int ret = db_err(db, rc, "open the index", path);
		sqlite3_close(db);
		return ret;
	}
	sqlite3_extended_result_codes(db, 1);
	sqlite3_busy_timeout(db, BUSY_TIMEOUT_MS);
	if (readonly) {
		rc = exec(db, "PRAGMA query_only=1;", path);
	} else {
		rc = exec(db, "PRAGMA journal_mode=WAL;", path);
		if (!rc)
			rc = exec(db, tflags & TRACKER_NOSYNC ? "PRAGMA synchronous=OFF;"
				  : "PRAGMA synchronous=FULL;", path);
		/* a big commit must not leave a big WAL behind once checkpointed */
		if (!rc)
			rc = exec(db, "PRAGMA journal_size_limit=67108864;", path);
	}
	if (rc) {
		sqlite3_close(db);
		return rc;
	}
	*out = db;
	return 0;
}

void tracker_close(struct tracker *t)
{
	if (!t)
		return;
	sqlite3_stmt *sts[] = { t->st_begin, t->st_commit, t->st_rollback, t->st_upsert,
				t->st_meta_put, t->st_gen_close, t->st_gen_open, t->st_get_meta,
				t->st_chunk_gen };
	for (size_t i = 0; i < HO_ARRAY_SIZE(sts); i++)
		sqlite3_finalize(sts[i]);
	/* the read connection first, so that the writer is the last one and checkpoints the WAL */
	if (t->rdb)
		sqlite3_close(t->rdb);
	if (t->db)
		sqlite3_close(t->db);
	for (int i = 0; i < TRACKER_MAX_IMAGES; i++)
		free((void *)t->gens[i]);
	ptable_free(&t->pending);
	metaq_free(&t->metaq);
	pthread_mutex_destroy(&t->mark_mu);
	pthread_mutex_destroy(&t->commit_mu);
	pthread_mutex_destroy(&t->rd_mu);
	free(t->path);
	free(t);
}

int tracker_open(const char *dir, int nimages, const uint64_t *nchunks, unsigned flags,
		 struct tracker **out)
{
	bool ro = flags & TRACKER_READONLY;
	bool take = ro && nimages == 0 && !nchunks;
	struct stat sb;
	int rc;

	*out = NULL;
	if (!dir || (!take && (nimages < 1 || nimages > TRACKER_MAX_IMAGES || !nchunks)))
		return HO_EINVAL;
	if (ro && (flags & TRACKER_CREATE))
		return HO_EINVAL;
	if (!take) {
		for (int i = 0; i < nimages; i++) {
			if (nchunks[i] > (uint64_t)INT64_MAX >> 1)
				return HO_EINVAL;
		}
	}

	struct tracker *t = calloc(1, sizeof(*t));
	if (!t)
		return HO_ENOMEM;
	t->flags = flags;
	t->nimages = nimages;
	for (int i = 0; i < nimages && !take; i++)
		t->nchunks[i] = nchunks[i];
	pthread_mutexattr_t ma;
	pthread_mutexattr_init(&ma);
	pthread_mutexattr_settype(&ma, PTHREAD_MUTEX_RECURSIVE);
	pthread_mutex_init(&t->rd_mu, &ma);
	pthread_mutexattr_destroy(&ma);
	pthread_mutex_init(&t->mark_mu, NULL);
	pthread_mutex_init(&t->commit_mu, NULL);
	if (!(t->path = ho_path_join(dir, "index.db"))) {
		rc = HO_ENOMEM;
		goto fail;
	}

	if (stat(dir, &sb) != 0 || !S_ISDIR(sb.st_mode)) {
		ho_err("no directory '%s' for the tracker index", dir);
		rc = HO_ENOENT;
		goto fail;
	}
	if (stat(t->path, &sb) != 0) {
		int e = errno;
		if (e != ENOENT || !(flags & TRACKER_CREATE)) {
			if (e == ENOENT)
				ho_err("no tracker index '%s'", t->path);
			else
				ho_err("cannot stat '%s': %s", t->path, strerror(e));
			rc = e == ENOENT ? HO_ENOENT : ho_from_errno(e);
			goto fail;
		}
	}

	if (!ro) {
		int of = SQLITE_OPEN_READWRITE | (flags & TRACKER_CREATE ? SQLITE_OPEN_CREATE : 0);
		if ((rc = open_conn(t->path, of, false, flags, &t->db)))
			goto fail;
		/* schema creation and the size check in one write transaction, so that two openers
		 * cannot both create it */
		if ((rc = exec(t->db, "BEGIN IMMEDIATE;", t->path)))
			goto fail;
		if (!has_schema(t->db, t->path, &rc) && !rc) {
			if (!(flags & TRACKER_CREATE)) {
				ho_err("'%s' has no tracker schema", t->path);
				rc = HO_ECORRUPT;
			} else {
				rc = create_schema(t);
			}
		}
		if (!rc)
			rc = exec(t->db, "COMMIT;", t->path);
		if (rc) {
			if (!sqlite3_get_autocommit(t->db))
				sqlite3_exec(t->db, "ROLLBACK;", NULL, NULL, NULL);
			goto fail;
		}
	}

	if ((rc = open_conn(t->path, SQLITE_OPEN_READONLY, true, flags, &t->rdb)))
		goto fail;
	if (ro && !has_schema(t->rdb, t->path, &rc)) {
		if (!rc) {
			ho_err("'%s' has no tracker schema", t->path);
			rc = HO_ECORRUPT;
		}
		goto fail;
	}
	if ((rc = prep(t->rdb, "SELECT value FROM meta WHERE key = ?1", &t->st_get_meta, t->path)) ||
	    (rc = prep(t->rdb, "SELECT gen FROM chunks WHERE image = ?1 AND idx = ?2",
		       &t->st_chunk_gen, t->path)))
		goto fail;
	if ((rc = check_sizes(t, take)))
		goto fail;
	if (ro) {
		*out = t;
		return 0;
	}

	for (int i = 0; i < t->nimages; i++) {
		t->gens[i] = calloc(t->nchunks[i] ? t->nchunks[i] : 1, sizeof(*t->gens[i]));
		if (!t->gens[i]) {
			rc = HO_ENOMEM;
			goto fail;
		}
	}
	if ((rc = load_state(t)))
		goto fail;
	if ((rc = prep(t->db, "BEGIN IMMEDIATE", &t->st_begin, t->path)) ||
	    (rc = prep(t->db, "COMMIT", &t->st_commit, t->path)) ||
	    (rc = prep(t->db, "ROLLBACK", &t->st_rollback, t->path)) ||
	    (rc = prep(t->db, "INSERT INTO chunks(image, idx, gen, first_ns, last_ns, writes)"
		       " VALUES(?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT(image, idx) DO UPDATE SET"
		       " gen = excluded.gen, last_ns = excluded.last_ns,"
		       " writes = writes + excluded.writes", &t->st_upsert, t->path)) ||
	    (rc = prep(t->db, "INSERT INTO meta(key, value) VALUES(?1, ?2) ON CONFLICT(key)"
		       " DO UPDATE SET value = excluded.value", &t->st_meta_put, t->path)) ||
	    (rc = prep(t->db, "UPDATE generations SET closed_ns = ?2 WHERE gen = ?1",
		       &t->st_gen_close, t->path)) ||
	    (rc = prep(t->db, "INSERT INTO generations(gen, opened_ns, closed_ns)"
		       " VALUES(?1, ?2, NULL)", &t->st_gen_open, t->path)))
		goto fail;
	*out = t;
	return 0;
fail:
	tracker_close(t);
	return rc;
}

/* ---- the hot path ------------------------------------------------------------------------ */

void tracker_mark(struct tracker *t, int image, uint64_t first_idx, uint64_t count, uint64_t now_ns)
{
	if ((t->flags & TRACKER_READONLY) || image < 0 || image >= t->nimages ||
	    first_idx >= t->nchunks[image] || count == 0) {
		if (!(t->flags & TRACKER_READONLY) && count)
			ho_warn("ignoring mark of chunk %" PRIu64 " of image %d, out of range",
				first_idx, image);
		return;
	}
	if (count > t->nchunks[image] - first_idx)
		count = t->nchunks[image] - first_idx;

	_Atomic uint32_t *gens = t->gens[image];
	lock(&t->mark_mu);
	uint32_t g = atomic_load_explicit(&t->generation, memory_order_relaxed);
	if (ptable_reserve(&t->pending, (size_t)HO_MIN(count, (uint64_t)1 << 20)) != 0) {
		unlock(&t->mark_mu);
		ho_err("cannot remember a write to chunk %" PRIu64 " of image %d: out of memory",
		       first_idx, image);
		return;
	}
	for (uint64_t i = 0; i < count; i++) {
		uint64_t idx = first_idx + i;
		if ((i & ((1u << 20) - 1)) == 0 && i &&
		    ptable_reserve(&t->pending, (size_t)HO_MIN(count - i, (uint64_t)1 << 20)) != 0) {
			ho_err("cannot remember a write to chunk %" PRIu64 " of image %d: out of memory",
			       idx, image);
			break;
		}
		struct pend *e = ptable_slot(&t->pending, pkey(image, idx));
		if (!e->key) {
			e->key = pkey(image, idx);
			e->first_ns = e->last_ns = now_ns;
			e->writes = 0;
			t->pending.n++;
		}
		e->last_ns = HO_MAX(e->last_ns, now_ns);
		e->writes++;
		e->gen = g;
		if (atomic_exchange_explicit(&gens[idx], g, memory_order_relaxed) == 0)
			atomic_fetch_add_explicit(&t->modified[image], 1, memory_order_relaxed);
	}
	unlock(&t->mark_mu);
}

/* Reader handles query the committed state; rd_mu. */
static uint32_t reader_chunk_gen(struct tracker *t, int image, uint64_t idx)
{
	uint32_t g = 0;
	lock(&t->rd_mu);
	sqlite3_bind_int(t->st_chunk_gen, 1, image);
	sqlite3_bind_int64(t->st_chunk_gen, 2, (int64_t)idx);
	int rc = sqlite3_step(t->st_chunk_gen);
	if (rc == SQLITE_ROW)
		g = (uint32_t)sqlite3_column_int64(t->st_chunk_gen, 0);
	else if (rc != SQLITE_DONE)
		db_err(t->rdb, rc, "read a chunk", t->path);
	sqlite3_reset(t->st_chunk_gen);
	sqlite3_clear_bindings(t->st_chunk_gen);
	unlock(&t->rd_mu);
	return g;
}

uint32_t tracker_chunk_gen(const struct tracker *t, int image, uint64_t idx)
{
	if (image < 0 || image >= t->nimages || idx >= t->nchunks[image])
		return 0;
	if (t->flags & TRACKER_READONLY)
		return reader_chunk_gen((struct tracker *)t, image, idx);
	return atomic_load_explicit(&t->gens[image][idx], memory_order_relaxed);
}

void tracker_add_io(struct tracker *t, uint64_t bytes_read, uint64_t bytes_written)
{
	if (t->flags & TRACKER_READONLY)
		return;
	if (bytes_read)
		atomic_fetch_add_explicit(&t->bytes_read, bytes_read, memory_order_relaxed);
	if (bytes_written)
		atomic_fetch_add_explicit(&t->bytes_written, bytes_written, memory_order_relaxed);
}

int tracker_set_meta(struct tracker *t, const char *key, const char *value)
{
	if (t->flags & TRACKER_READONLY)
		return HO_ESTATE;
	if (!key || !*key || !value || reserved_key(key) || strlen(value) > META_VALUE_MAX)
		return HO_EINVAL;
	char *k = strdup(key), *v = strdup(value);
	if (!k || !v) {
		free(k);
		free(v);
		return HO_ENOMEM;
	}
	lock(&t->mark_mu);
	int rc = metaq_put(&t->metaq, k, v, false);
	unlock(&t->mark_mu);
	return rc;
}

int tracker_get_meta(struct tracker *t, const char *key, char *buf, size_t len)
{
	if (!key || !buf || !len)
		return HO_EINVAL;
	lock(&t->rd_mu);
	sqlite3_stmt *st = t->st_get_meta;
	sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
	int rc = sqlite3_step(st), ret = 0;
	if (rc == SQLITE_ROW) {
		const unsigned char *v = sqlite3_column_text(st, 0);
		size_t n = v ? (size_t)sqlite3_column_bytes(st, 0) : 0;
		if (n >= len) {
			ret = HO_ELIMIT;
		} else {
			if (n)
				memcpy(buf, v, n);
			buf[n] = 0;
		}
	} else if (rc == SQLITE_DONE) {
		ret = HO_ENOENT;
	} else {
		ret = db_err(t->rdb, rc, "read meta", t->path);
	}
	sqlite3_reset(st);
	sqlite3_clear_bindings(st);
	unlock(&t->rd_mu);
	return ret;
}

/* ---- commits ------------------------------------------------------------------------------ */

/* Put a failed snapshot back into pending (mark_mu held). When a checkpoint failed, the
 * generation goes back to gen_from: marks made meanwhile in gen_from + 1 (all still pending,
 * since commits are serialized) are relabelled. */
static void restore_locked(struct tracker *t, struct ptable *snap, struct meta_q *mq,
			   bool checkpoint, uint32_t gen_from)
{
	if (checkpoint) {
		uint32_t g1 = gen_from + 1;
		for (size_t i = 0; i < t->pending.cap; i++) {
			struct pend *e = &t->pending.e[i];
			if (!e->key || e->gen != g1)
				continue;
			e->gen = gen_from;
			uint32_t exp = g1;
			atomic_compare_exchange_strong_explicit(&t->gens[pkey_image(e->key)][pkey_idx(e->key)],
								&exp, gen_from, memory_order_relaxed,
								memory_order_relaxed);
		}
		atomic_store(&t->generation, gen_from);
	}
	for (size_t i = 0; i < snap->n; i++) {
		if (ptable_merge(&t->pending, &snap->e[i]) != 0) {
			/* out of memory: these chunks keep their generation in memory, but their
			 * rows wait for the next write to them (their data was never acknowledged
			 * as durable: the commit that failed is the fsync that would have) */
			ho_err("cannot put %zu uncommitted marks back: out of memory", snap->n - i);
			break;
		}
	}
	for (size_t i = 0; i < mq->n; i++) {
		metaq_put(&t->metaq, mq->kv[i].key, mq->kv[i].value, true);
		mq->kv[i].key = mq->kv[i].value = NULL;
	}
	mq->n = 0;
}

/* Write the snapshot in one transaction (commit_mu held). */
static int write_snapshot(struct tracker *t, const struct ptable *snap, const struct meta_q *mq,
			  uint64_t br, uint64_t bw, bool checkpoint, uint32_t g)
{
	sqlite3 *db = t->db;
	int rc = step_done(db, t->st_begin, "begin a transaction", t->path);
	if (rc)
		return rc;
	for (size_t i = 0; i < snap->n && !rc; i++) {
		const struct pend *e = &snap->e[i];
		sqlite3_stmt *st = t->st_upsert;
		sqlite3_bind_int(st, 1, pkey_image(e->key));
		sqlite3_bind_int64(st, 2, (int64_t)pkey_idx(e->key));
		sqlite3_bind_int64(st, 3, e->gen);
		sqlite3_bind_int64(st, 4, (int64_t)e->first_ns);
		sqlite3_bind_int64(st, 5, (int64_t)e->last_ns);
		sqlite3_bind_int64(st, 6, (int64_t)e->writes);
		rc = step_done(db, st, "record a modified chunk", t->path);
	}
	for (size_t i = 0; i < mq->n && !rc; i++) {
		sqlite3_bind_text(t->st_meta_put, 1, mq->kv[i].key, -1, SQLITE_STATIC);
		sqlite3_bind_text(t->st_meta_put, 2, mq->kv[i].value, -1, SQLITE_STATIC);
		rc = step_done(db, t->st_meta_put, "record meta", t->path);
	}
	if (!rc && br != t->committed_br) {
		sqlite3_bind_text(t->st_meta_put, 1, "bytes_read", -1, SQLITE_STATIC);
		sqlite3_bind_int64(t->st_meta_put, 2, (int64_t)br);
		rc = step_done(db, t->st_meta_put, "record meta", t->path);
	}
	if (!rc && bw != t->committed_bw) {
		sqlite3_bind_text(t->st_meta_put, 1, "bytes_written", -1, SQLITE_STATIC);
		sqlite3_bind_int64(t->st_meta_put, 2, (int64_t)bw);
		rc = step_done(db, t->st_meta_put, "record meta", t->path);
	}
	if (!rc && checkpoint) {
		int64_t now = (int64_t)ho_now_ns();
		sqlite3_bind_int64(t->st_gen_close, 1, g);
		sqlite3_bind_int64(t->st_gen_close, 2, now);
		rc = step_done(db, t->st_gen_close, "close a generation", t->path);
		if (!rc && sqlite3_changes(db) != 1) {
			ho_err("'%s' has no row for the open generation %" PRIu32, t->path, g);
			rc = HO_ECORRUPT;
		}
		if (!rc) {
			sqlite3_bind_int64(t->st_gen_open, 1, (int64_t)g + 1);
			sqlite3_bind_int64(t->st_gen_open, 2, now);
			rc = step_done(db, t->st_gen_open, "open a generation", t->path);
		}
		if (!rc) {
			sqlite3_bind_text(t->st_meta_put, 1, "generation", -1, SQLITE_STATIC);
			sqlite3_bind_int64(t->st_meta_put, 2, (int64_t)g + 1);
			rc = step_done(db, t->st_meta_put, "record the generation", t->path);
		}
	}
	/* a COMMIT that fails on an I/O error leaves it uncertain whether the WAL frames became
	 * durable; the marks then go back to pending and a later commit may count those writes
	 * twice — never fewer, which is the side we must err on */
	if (!rc)
		rc = step_done(db, t->st_commit, "commit", t->path);
	if (rc && !sqlite3_get_autocommit(db))
		step_done(db, t->st_rollback, "roll back", t->path);
	return rc;
}

static int do_commit(struct tracker *t, int (*make_durable)(void *), void *arg, bool checkpoint,
		     uint32_t *closed)
{
	if (t->flags & TRACKER_READONLY)
		return HO_ESTATE;
	lock(&t->commit_mu);

	/* the snapshot: O(1) under the mark lock, so writers barely notice */
	lock(&t->mark_mu);
	struct ptable snap = t->pending;
	struct meta_q mq = t->metaq;
	memset(&t->pending, 0, sizeof(t->pending));
	memset(&t->metaq, 0, sizeof(t->metaq));
	uint64_t br = atomic_load(&t->bytes_read), bw = atomic_load(&t->bytes_written);
	uint32_t g = atomic_load(&t->generation);
	if (checkpoint)
		atomic_store(&t->generation, g + 1);  /* later marks belong to the next generation */
	unlock(&t->mark_mu);

	/* sorted before the callback, so that a failure puts back a plain array */
	ptable_sort(&snap);
	int rc = 0;
	if (make_durable && (rc = make_durable(arg)) != 0) {
		ho_err("cannot make chunk data durable (%s): %zu marks stay pending",
		       ho_strerror(rc < 0 ? rc : HO_EIO), snap.n);
		if (rc > 0)
			rc = HO_EIO;
	}
	bool wrote = false;
	if (!rc && (snap.n || mq.n || br != t->committed_br || bw != t->committed_bw || checkpoint)) {
		rc = write_snapshot(t, &snap, &mq, br, bw, checkpoint, g);
		wrote = true;
	}
	if (rc) {
		lock(&t->mark_mu);
		restore_locked(t, &snap, &mq, checkpoint, g);
		unlock(&t->mark_mu);
	} else {
		t->committed_br = br;
		t->committed_bw = bw;
		if (wrote)
			atomic_fetch_add(&t->commits, 1);
		if (closed)
			*closed = g;
	}
	ptable_free(&snap);
	metaq_free(&mq);
	unlock(&t->commit_mu);
	return rc;
}

int tracker_commit(struct tracker *t, int (*make_durable)(void *), void *arg)
{
	return do_commit(t, make_durable, arg, false, NULL);
}

int tracker_checkpoint(struct tracker *t, int (*make_durable)(void *), void *arg, uint32_t *closed)
{
	uint32_t c = 0;
	int rc = do_commit(t, make_durable, arg, true, &c);
	if (!rc && closed)
		*closed = c;
	return rc;
}

uint32_t tracker_generation(const struct tracker *t)
{
	if (t->flags & TRACKER_READONLY) {
		struct tracker *rt = (struct tracker *)t;
		uint32_t g = 0;
		lock(&rt->rd_mu);
		if (read_generation(rt, &g))
			g = 0;
		unlock(&rt->rd_mu);
		return g;
	}
	return atomic_load(&t->generation);
}

/* ---- queries (read connection) ------------------------------------------------------------ */

/* Run one query that must return a single integer. rd_mu held. */
static int query_int(struct tracker *t, const char *sql, int64_t *out)
{
	sqlite3_stmt *st;
	int rc = sqlite3_prepare_v2(t->rdb, sql, -1, &st, NULL);
	if (rc != SQLITE_OK)
		return db_err(t->rdb, rc, "verify the index", t->path);
	rc = sqlite3_step(st);
	int ret = 0;
	if (rc == SQLITE_ROW)
		*out = sqlite3_column_int64(st, 0);
	else
		ret = db_err(t->rdb, rc, "verify the index", t->path);
	sqlite3_finalize(st);
	return ret;
}

/* Few rows in the gen range compared with the whole table? Then the gen index and a sort of
 * the matches beat a walk of the primary key (2M chunks, 2000 changed: ~4 ms against ~150 ms).
 * sqlite has no statistics to decide this itself. rd_mu held. */
static bool few_in_range(struct tracker *t, uint32_t since, uint32_t until)
{
	char sql[160];
	int64_t match, total;
	if (since == 0)
		return false;
	snprintf(sql, sizeof(sql), "SELECT count(*) FROM chunks WHERE gen > %" PRIu32 " AND gen <= %"
		 PRIu32, since, until ? until : UINT32_MAX);
	if (query_int(t, sql, &match) || query_int(t, "SELECT count(*) FROM chunks", &total))
		return false;
	return match * 8 < total;
}

int tracker_foreach(struct tracker *t, int image, uint32_t since, uint32_t until,
		    int (*cb)(const struct tracker_chunk *c, void *arg), void *arg)
{
	if (!cb || image >= t->nimages)
		return HO_EINVAL;
	lock(&t->rd_mu);
	/* prepared per call (not cached) so that a callback may start a nested walk */
	sqlite3_stmt *st;
	int rc = sqlite3_prepare_v2(t->rdb, few_in_range(t, since, until)
		? "SELECT image, idx, gen, first_ns, last_ns, writes FROM chunks INDEXED BY chunks_gen"
		  " WHERE image BETWEEN ?1 AND ?2 AND gen > ?3 AND gen <= ?4 ORDER BY image, idx"
		: "SELECT image, idx, gen, first_ns, last_ns, writes FROM chunks"
		  " WHERE image BETWEEN ?1 AND ?2 AND gen > ?3 AND gen <= ?4 ORDER BY image, idx",
		-1, &st, NULL);
	if (rc != SQLITE_OK) {
		rc = db_err(t->rdb, rc, "walk chunks", t->path);
		unlock(&t->rd_mu);
		return rc;
	}
	sqlite3_bind_int(st, 1, image < 0 ? 0 : image);
	sqlite3_bind_int(st, 2, image < 0 ? TRACKER_MAX_IMAGES - 1 : image);
	sqlite3_bind_int64(st, 3, since);
	sqlite3_bind_int64(st, 4, until ? until : UINT32_MAX);
	int ret = 0;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		struct tracker_chunk c = {
			.image = sqlite3_column_int(st, 0),
			.idx = (uint64_t)sqlite3_column_int64(st, 1),
			.gen = (uint32_t)sqlite3_column_int64(st, 2),
			.first_ns = (uint64_t)sqlite3_column_int64(st, 3),
			.last_ns = (uint64_t)sqlite3_column_int64(st, 4),
			.writes = (uint64_t)sqlite3_column_int64(st, 5),
		};
		if ((ret = cb(&c, arg)) != 0)
			break;
	}
	if (!ret && rc != SQLITE_DONE)
		ret = db_err(t->rdb, rc, "walk chunks", t->path);
	sqlite3_finalize(st);
	unlock(&t->rd_mu);
	return ret;
}

struct gen_count { int image; uint32_t gen; uint64_t n; };

int tracker_gen_counts(struct tracker *t, int (*cb)(int image, uint32_t gen, uint64_t chunks, void *arg),
		       void *arg)
{
	if (!cb)
		return HO_EINVAL;
	struct gen_count *v = NULL;
	size_t n = 0, cap = 0;
	int ret = 0;

	/* collect first, call back without the lock */
	lock(&t->rd_mu);
	sqlite3_stmt *st;
	int rc = sqlite3_prepare_v2(t->rdb, "SELECT image, gen, count(*) FROM chunks"
				    " GROUP BY image, gen ORDER BY image, gen", -1, &st, NULL);
	if (rc != SQLITE_OK) {
		ret = db_err(t->rdb, rc, "count chunks", t->path);
		unlock(&t->rd_mu);
		return ret;
	}
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		if (n == cap) {
			size_t nc = cap ? cap * 2 : 16;
			struct gen_count *nv = realloc(v, nc * sizeof(*nv));
			if (!nv) {
				ret = HO_ENOMEM;
				break;
			}
			v = nv;
			cap = nc;
		}
		v[n].image = sqlite3_column_int(st, 0);
		v[n].gen = (uint32_t)sqlite3_column_int64(st, 1);
		v[n].n = (uint64_t)sqlite3_column_int64(st, 2);
		n++;
	}
	if (!ret && rc != SQLITE_DONE)
		ret = db_err(t->rdb, rc, "count chunks", t->path);
	sqlite3_finalize(st);
	unlock(&t->rd_mu);

	for (size_t i = 0; i < n && !ret; i++)
		ret = cb(v[i].image, v[i].gen, v[i].n, arg);
	free(v);
	return ret;
}

int tracker_stats(struct tracker *t, struct tracker_stats *out)
{
	memset(out, 0, sizeof(*out));
	out->commits = atomic_load(&t->commits);
	if (!(t->flags & TRACKER_READONLY)) {
		out->generation = atomic_load(&t->generation);
		for (int i = 0; i < t->nimages; i++)
			out->modified[i] = atomic_load(&t->modified[i]);
		out->bytes_read = atomic_load(&t->bytes_read);
		out->bytes_written = atomic_load(&t->bytes_written);
		lock(&t->mark_mu);
		out->pending = t->pending.n;
		unlock(&t->mark_mu);
		return 0;
	}

	/* a reader: everything from the latest commit */
	int64_t v;
	int rc;
	lock(&t->rd_mu);
	rc = read_generation(t, &out->generation);
	if (!rc && (rc = meta_int(t, "bytes_read", &v)) == 0)
		out->bytes_read = (uint64_t)v;
	if (!rc && (rc = meta_int(t, "bytes_written", &v)) == 0)
		out->bytes_written = (uint64_t)v;
	if (rc == HO_ENOENT)
		rc = 0;
	sqlite3_stmt *st = NULL;
	if (!rc) {
		int sr = sqlite3_prepare_v2(t->rdb, "SELECT image, count(*) FROM chunks GROUP BY image",
					    -1, &st, NULL);
		if (sr != SQLITE_OK) {
			rc = db_err(t->rdb, sr, "count chunks", t->path);
		} else {
			while ((sr = sqlite3_step(st)) == SQLITE_ROW) {
				int img = sqlite3_column_int(st, 0);
				if (img >= 0 && img < TRACKER_MAX_IMAGES)
					out->modified[img] = (uint64_t)sqlite3_column_int64(st, 1);
			}
			if (sr != SQLITE_DONE)
				rc = db_err(t->rdb, sr, "count chunks", t->path);
		}
	}
	sqlite3_finalize(st);
	unlock(&t->rd_mu);
	return rc;
}

static int verify_locked(struct tracker *t)
{
	sqlite3_stmt *st;
	int rc = sqlite3_prepare_v2(t->rdb, "PRAGMA integrity_check", -1, &st, NULL);
	if (rc != SQLITE_OK)
		return db_err(t->rdb, rc, "check integrity", t->path);
	int ret = 0;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		const char *msg = (const char *)sqlite3_column_text(st, 0);
		if (msg && strcmp(msg, "ok") != 0) {
			ho_err("'%s' fails the integrity check: %s", t->path, msg);
			ret = HO_ECORRUPT;
		}
	}
	if (!ret && rc != SQLITE_DONE)
		ret = db_err(t->rdb, rc, "check integrity", t->path);
	sqlite3_finalize(st);
	if (ret)
		return ret;

	/* one read transaction, so that a concurrent commit cannot make the checks disagree (unless
	 * we are called from a foreach callback, which already reads one snapshot) */
	bool own_txn = sqlite3_get_autocommit(t->rdb);
	if (own_txn && (ret = exec(t->rdb, "BEGIN;", t->path)))
		return ret;
	uint32_t g;
	int64_t v;
	if ((ret = read_generation(t, &g)) || (ret = check_sizes(t, false)))
		goto out;

	char sql[512];
	snprintf(sql, sizeof(sql), "SELECT count(*) FROM chunks WHERE gen < 1 OR gen > %" PRIu32
		 " OR writes < 1 OR first_ns > last_ns OR image < 0 OR image >= %d", g, t->nimages);
	if ((ret = query_int(t, sql, &v)))
		goto out;
	if (v) {
		ho_err("'%s' has %" PRId64 " chunk rows with a bad generation, image or counts",
		       t->path, v);
		ret = HO_ECORRUPT;
		goto out;
	}
	for (int i = 0; i < t->nimages; i++) {
		snprintf(sql, sizeof(sql), "SELECT count(*) FROM chunks WHERE image = %d AND"
			 " (idx < 0 OR idx >= %" PRId64 ")", i, (int64_t)t->nchunks[i]);
		if ((ret = query_int(t, sql, &v)))
			goto out;
		if (v) {
			ho_err("'%s' has %" PRId64 " chunk rows beyond the end of image %d",
			       t->path, v, i);
			ret = HO_ECORRUPT;
			goto out;
		}
	}
	/* generations 1..g, all closed but g */
	snprintf(sql, sizeof(sql), "SELECT (SELECT count(*) FROM generations) = %" PRIu32
		 " AND (SELECT min(gen) FROM generations) = 1"
		 " AND (SELECT max(gen) FROM generations) = %" PRIu32
		 " AND (SELECT count(*) FROM generations WHERE closed_ns IS NULL) = 1"
		 " AND (SELECT closed_ns FROM generations WHERE gen = %" PRIu32 ") IS NULL", g, g, g);
	if ((ret = query_int(t, sql, &v)))
		goto out;
	if (!v) {
		ho_err("'%s' has an inconsistent generations table (open generation %" PRIu32 ")",
		       t->path, g);
		ret = HO_ECORRUPT;
		goto out;
	}

	/* a writer: memory must know every committed chunk, at least at its committed generation */
	if (!(t->flags & TRACKER_READONLY)) {
		rc = sqlite3_prepare_v2(t->rdb, "SELECT image, idx, gen FROM chunks", -1, &st, NULL);
		if (rc != SQLITE_OK) {
			ret = db_err(t->rdb, rc, "verify the index", t->path);
			goto out;
		}
		while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
			int img = sqlite3_column_int(st, 0);
			uint64_t idx = (uint64_t)sqlite3_column_int64(st, 1);
			uint32_t cg = (uint32_t)sqlite3_column_int64(st, 2);
			uint32_t mg = atomic_load_explicit(&t->gens[img][idx], memory_order_relaxed);
			if (mg < cg) {
				ho_err("chunk %" PRIu64 " of image %d is committed in generation %"
				       PRIu32 " but known in memory as %" PRIu32, idx, img, cg, mg);
				ret = HO_ECORRUPT;
				break;
			}
		}
		if (!ret && rc != SQLITE_DONE)
			ret = db_err(t->rdb, rc, "verify the index", t->path);
		sqlite3_finalize(st);
	}
out:
	if (own_txn)
		sqlite3_exec(t->rdb, "COMMIT;", NULL, NULL, NULL);
	return ret;
}

int tracker_verify(struct tracker *t)
{
	lock(&t->rd_mu);
	int rc = verify_locked(t);
	unlock(&t->rd_mu);
	return rc;
}
