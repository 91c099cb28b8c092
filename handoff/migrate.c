/*
 * migrate.c — the source side of a handoff (handoff_migrate): the hello that lets the destination
 * refuse a different base before anything is paused, live export rounds into the destination's
 * mirror while the VM runs, the pause, the device state and the final round, or post-copy when
 * the rounds do not converge; and, when anything fails after the pause, resuming the VM here.
 */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "handoff/handoff_int.h"
#include "tracker/tracker.h"
#include "vm/vm.h"

const char *handoff_verify_name(enum handoff_verify v)
{
	return v == HANDOFF_VERIFY_NONE ? "none" : v == HANDOFF_VERIFY_ALL ? "all" : "memory";
}

const char *handoff_fault_name(enum handoff_fault f)
{
	switch (f) {
	case HANDOFF_FAULT_CORRUPT_FINAL: return "corrupt-final";
	case HANDOFF_FAULT_WRONG_DIGEST: return "wrong-digest";
	case HANDOFF_FAULT_CORRUPT_POSTCOPY: return "corrupt-postcopy";
	case HANDOFF_FAULT_SLOW_POSTCOPY: return "slow-postcopy";
	case HANDOFF_FAULT_DIE_AFTER_DEVSTATE: return "die-after-devstate";
	default: return NULL;
	}
}

/* ---- migrate (the source) -------------------------------------------------------------------------- */

/* Export (since, until] to the mirror at target; until 0: checkpoint first and send up to it. */
static int export_round(const char *ovl, const char *target, const struct export_opts *base_opts,
			uint32_t since, uint32_t until, bool live, bool postcopy, struct round *r)
{
	struct export_opts o = *base_opts;
	struct export_result res;
	uint64_t t0 = ho_mono_ns();
	int rc;
	o.since = since;
	o.postcopy = postcopy;
	if (!until && (rc = export_checkpoint(ovl, &until))) {
		ho_err("cannot checkpoint '%s': %s", ovl, ho_strerror(rc));
		return rc;
	}
	memset(&res, 0, sizeof(res));
	if ((rc = export_to_tcp(ovl, until, &o, target, &res))) {
		if (!(o.cancel && *o.cancel))     /* cancelled: the canceller says why */
			ho_err("cannot send generations %u..%u to the destination: %s", since + 1, until, ho_strerror(rc));
		return rc;
	}
	export_pending_clear(ovl);
	memset(r, 0, sizeof(*r));
	r->live = live;
	r->since = since;
	r->until = until;
	r->chunks[0] = res.chunks[0];
	r->chunks[1] = res.chunks[1];
	r->input_bytes = res.input_bytes;
	r->wire_bytes = res.wire_bytes;
	r->ns = ho_mono_ns() - t0;
	r->held_ns = res.held_ns;
	return 0;
}

/* ---- a live round that cannot converge ------------------------------------------------------
 * A live round sends what changed up to its checkpoint while the guest goes on writing. A guest
 * that rewrites its memory faster than the link carries it undoes the round as it goes: when the
 * round ends, the next one is as large, and the post-copy after it as large again (the heavy
 * workload of bench/vm.sh at 25 Mbit/s: 333-365 s with three rounds, 61-70 s with none). So
 * with --postcopy auto the round is watched: every 2 s (later, every quarter of its time so far)
 * the guest's writes are flushed to the mount (the tracker sees them then) and the chunks
 * rewritten since the round's checkpoint counted. Once they are more than the round has sent so
 * far (the guest dirties faster than the link drains: pre-copy's classic sign that it cannot
 * converge), or more than `abandon` of what the round sends (the round is mostly undone), it is
 * abandoned, the VM paused, and everything goes by post-copy. A guest whose writes stay within a
 * working set small against what the link carries never gets there: its rounds shrink to that
 * set. (The heavy workload, 25 Mbit/s: 68,000 of 304,000 chunks rewritten 2 s into the round,
 * 133,000 at 4.5 s, 176,000 at 8.7 s; at the first look, 72,000-79,000 rewritten while
 * 10,500-10,800 had gone. The light one at 10 Mbit/s: 3,110 of 8,900 by the end of a 3.7 s
 * round.) */
#define LIVE_CHECK_NS 2000000000ull

struct live_watch {
	const char *ovl;
	uint32_t until;              /* the round's checkpoint */
	uint64_t chunks;             /* chunks the round sends */
	double abandon;
	uint64_t rewritten;          /* chunks written since the checkpoint, at the last look */
	volatile uint64_t sent;      /* chunks the round handed to its stream so far */
	uint64_t sent_seen;          /* ... at the last look */
	uint64_t t0;
	volatile int cancel, stop;
	pthread_t th;
};

bool handoff_live_abandon(uint64_t rewritten, uint64_t rewritten_sending, uint64_t sent, uint64_t chunks,
			  double fraction)
{
	return fraction > 0 && (rewritten_sending > sent || (double)rewritten > fraction * (double)chunks);
}

struct gen_sum { uint32_t lo, hi; uint64_t n; };

static int gen_sum_cb(int image, uint32_t gen, uint64_t chunks, void *arg)
{
	struct gen_sum *g = arg;
	(void)image;
	if (gen > g->lo && (!g->hi || gen <= g->hi))
		g->n += chunks;
	return 0;
}

/* Committed chunks of ovl last written in generations (lo, hi] (hi 0: no upper bound). */
static int count_gens(const char *ovl, uint32_t lo, uint32_t hi, uint64_t *n)
{
	struct tracker *t;
	struct gen_sum g = { lo, hi, 0 };
	int rc = tracker_open(ovl, 0, NULL, TRACKER_READONLY, &t);
	if (rc)
		return rc;
	rc = tracker_gen_counts(t, gen_sum_cb, &g);
	tracker_close(t);
	*n = g.n;
	return rc;
}

/* Writeback and count; false when there are no figures (the round then just runs on). */
static bool live_look(struct live_watch *w, uint64_t *n)
{
	return export_writeback(w->ovl) == 0 && count_gens(w->ovl, w->until, 0, n) == 0;
}

static void *live_watch_main(void *arg)
{
	struct live_watch *w = arg;
	uint64_t base = 0, t_s = 0, next = 0;
	/* the rates are compared from the round's first chunk on: before it, the exporter may read
	 * its base indexes for seconds, while the guest writes and nothing goes */
	while (!w->stop && !w->sent)
		usleep(50000);
	if (w->stop || !live_look(w, &base))
		return NULL;
	t_s = ho_mono_ns();
	next = t_s + LIVE_CHECK_NS;
	while (!w->stop) {
		uint64_t now = ho_mono_ns();
		if (now < next) {
			usleep(50000);
			continue;
		}
		uint64_t n, sent = w->sent;
		if (!live_look(w, &n))
			break;
		w->rewritten = n;
		w->sent_seen = sent;
		ho_info("live round: after %.1f s the guest rewrote %" PRIu64 " chunks (%" PRIu64 " since the first"
			" went), the round sent %" PRIu64 " of %" PRIu64, secs(ho_mono_ns() - w->t0), n,
			n > base ? n - base : 0, sent, w->chunks);
		if (handoff_live_abandon(n, n > base ? n - base : 0, sent, w->chunks, w->abandon)) {
			w->cancel = 1;
			break;
		}
		/* every 2 s, then every quarter of the time so far: a long round is looked at a few
		 * times, each look flushing what the guest wrote meanwhile */
		now = ho_mono_ns();
		next = now + HO_MAX(LIVE_CHECK_NS, (now - t_s) / 4);
	}
	return NULL;
}

/* Post-copy on the source: while the last round streams, notice at once when the destination's
 * handoff-vm goes away (its control connection hangs up), and cancel the stream then. */
struct hangup_watch { int fd; volatile int cancel, stop; pthread_t th; };

static void *hangup_main(void *arg)
{
	struct hangup_watch *w = arg;
	while (!w->stop) {
		struct pollfd p = { .fd = w->fd, .events = POLLRDHUP };
		if (poll(&p, 1, 100) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR))) {
			ho_err("the destination hung up during the post-copy");
			w->cancel = 1;
			break;
		}
	}
	return NULL;
}

/* Post-copy: after the pause, send the device state and the manifest of what is still to come;
 * once the destination holds back every access to those chunks it resumes the VM, while the rest
 * streams (server_to: the chunk server answers the destination's requests ahead of the stream).
 * The source stays paused until the destination confirms every chunk arrived and verified.
 * Returns HANDOFF_OK, or HANDOFF_RESUMED when the caller should resume the source (the handoff
 * failed). */
static enum handoff_outcome migrate_postcopy(struct conn *cn, struct handoff_report *rep, const char *ovl,
					     const char *devout, const char *stream_to, const char *server_to,
					     const struct export_opts *eo, uint32_t since)
{
	uint8_t *mf = NULL, d[HO_SHA256_LEN];
	char *ds = NULL, hex[2 * HO_SHA256_LEN + 1], text[HANDOFF_LINE_MAX], line[HANDOFF_LINE_MAX];
	size_t mlen = 0, dlen = 0;
	struct postcopy_server *srv = NULL;
	uint32_t until;
	uint64_t t_run;
	int rc;
	enum handoff_outcome ex = HANDOFF_RESUMED;

	if ((rc = export_checkpoint(ovl, &until))) {
		ho_err("cannot checkpoint '%s': %s", ovl, ho_strerror(rc));
		return HANDOFF_RESUMED;
	}
	if ((rc = postcopy_manifest(ovl, since, until, &mf, &mlen, &rep->pc_chunks))) {
		ho_err("cannot list the chunks of generations %u..%u: %s", since + 1, until, ho_strerror(rc));
		return HANDOFF_RESUMED;
	}
	rep->pc_manifest_bytes = mlen;
	if ((rc = ho_read_file(devout, &ds, &dlen, 256u << 20)))
		goto out;
	ho_sha256(ds, dlen, d);
	ho_hex(d, HO_SHA256_LEN, hex);
	fmt(text, sizeof(text), "DEVSTATE %zu %s", dlen, hex);
	if (handoff_conn_send_signed(cn, text) || ho_write_full(cn->fd, ds, dlen))
		goto out;
	ho_sha256(mf, mlen, d);
	ho_hex(d, HO_SHA256_LEN, hex);
	fmt(text, sizeof(text), "POSTCOPY %u %" PRIu64 " %zu %s", until, rep->pc_chunks, mlen, hex);
	if (handoff_conn_send_signed(cn, text) || ho_write_full(cn->fd, mf, mlen))
		goto out;
	if ((rc = handoff_conn_line(cn, line, sizeof(line), 60000))) {
		ho_err("no word from the destination after the manifest: %s", ho_strerror(rc));
		goto out;
	}
	if (strncmp(line, "READY ", 6) || handoff_conn_check(cn, line) || strcmp(line, "READY")) {
		ho_err("the destination cannot resume before the last round: %.200s", line);
		goto out;
	}
	ho_notice("post-copy: the destination awaits %" PRIu64 " chunks and resumes now", rep->pc_chunks);
	if ((rc = postcopy_server_start(ovl, mf, mlen, cn->key, cn->key_len, server_to, 30000, &srv))) {
		ho_err("cannot serve chunks to the destination: %s", ho_strerror(rc));
		goto out;
	}
	/* The stream starts only once the destination runs: until then every byte on the link should
	 * be an answer to a page QEMU waits for while it loads the device state. On a thin link with
	 * a deep queue (a WAN router's, or tbf's 400 ms here) answers queued behind the stream cost
	 * seconds of downtime. The stream's start moves by the resume time, a small part of it. */
	if ((rc = handoff_conn_line(cn, line, sizeof(line), 600000))) {
		ho_err("no word from the destination after the manifest: %s", ho_strerror(rc));
		goto out;
	}
	if (strncmp(line, "RUNNING ", 8) || handoff_conn_check(cn, line) || sscanf(line, "RUNNING %" SCNu64, &t_run) != 1) {
		ho_err("the destination did not resume the VM: %.200s", line);
		goto out;
	}
	rep->t_dst_running = (uint64_t)((int64_t)t_run - rep->clock_offset);
	ho_notice("post-copy: the VM runs on the destination after %.2f s of downtime; streaming the rest",
		  (double)((int64_t)rep->t_dst_running - (int64_t)rep->t_pause) / 1e9);
	struct hangup_watch hw = { .fd = cn->fd };
	struct export_opts peo = *eo;
	bool watching = pthread_create(&hw.th, NULL, hangup_main, &hw) == 0;
	peo.cancel = &hw.cancel;
	peo.skip = postcopy_server_sent;      /* what the chunk server answered need not come twice */
	peo.skip_arg = srv;
	peo.hold = postcopy_server_busy;      /* the VM waits for the server's answers, not the stream */
	peo.hold_arg = srv;
	rc = export_round(ovl, stream_to, &peo, since, until, false, true, &rep->r[rep->n]);
	if (watching) {
		hw.stop = 1;
		pthread_join(hw.th, NULL);
	}
	if (rc)
		goto out;
	rep->pc_stream_ns = rep->r[rep->n].ns;
	rep->pc_held_ns = rep->r[rep->n].held_ns;
	rep->n++;
	rep->t_final_done = rep->t_pc_done = ho_now_ns();
	postcopy_server_stop(srv, &rep->pc);
	srv = NULL;
	if (handoff_conn_send_signed(cn, "COMPLETE") || (rc = handoff_conn_line(cn, line, sizeof(line), 660000))) {
		ho_err("the destination did not confirm the post-copy: %s", ho_strerror(rc ? rc : HO_ECONN));
		goto out;
	}
	if (strncmp(line, "COMPLETE-OK ", 12) || handoff_conn_check(cn, line) || strcmp(line, "COMPLETE-OK")) {
		ho_err("the destination did not complete the post-copy: %.200s", line);
		goto out;
	}
	rep->t_confirm = rep->t_end = ho_now_ns();
	rep->handed_off = true;
	handoff_conn_send(cn, "BYE");
	ex = HANDOFF_OK;
out:
	if (srv)
		postcopy_server_stop(srv, &rep->pc);
	free(mf);
	free(ds);
	return ex;
}

enum handoff_outcome handoff_migrate(const struct handoff_migrate_opts *o, struct handoff_report **report)
{
	const char *run = o->run_dir, *to = o->to, *verify = handoff_verify_name(o->verify);
	enum handoff_fault fault = o->fault;
	struct export_opts eo = { 0 };
	int max_rounds = o->max_rounds, target_ms = o->downtime_target_ms, timeout_s = o->timeout_s;
	bool keep = o->keep_source;
	eo.mode = o->mode;
	eo.threads = o->threads;
	eo.rate_limit = o->rate_limit;
	eo.timeout_ms = timeout_s * 1000;
	if (!eo.mode || !strcmp(eo.mode, "adaptive")) {
		eo.mode = NULL;
		eo.adaptive = true;         /* the default: adapt to the CPU and the link */
	}
	eo.key = o->key;
	eo.key_len = o->key_len;
	char path[PATH_MAX], mem[PATH_MAX], devout[PATH_MAX], line[HANDOFF_LINE_MAX], idtext[300], streamto[300], mirrorto[300];
	struct env e;
	struct handoff_report *rep = calloc(1, sizeof(*rep));
	struct conn *cn = calloc(1, sizeof(*cn));
	struct vm *vm = NULL;
	struct proxy px;
	bool proxy_on = false;
	int rc;
	enum handoff_outcome ex = HANDOFF_FAILED;
	*report = NULL;
	if (!rep || !cn) {
		ho_err("out of memory");
		free(rep);
		free(cn);
		return HANDOFF_FAILED;
	}
	cn->fd = -1;
	cn->key = o->key;
	cn->key_len = o->key_len;
	fmt(path, sizeof(path), "%s/vm.env", run);
	if (handoff_env_load(path, &e)) {
		free(cn);
		free(rep);
		return HANDOFF_FAILED;
	}
	const char *ovl = handoff_env_need(&e, "VM_OVERLAY", path), *mnt = handoff_env_need(&e, "VM_MOUNT", path);
	if (!ovl || !mnt)
		goto out;
	fmt(mem, sizeof(mem), "%s/memory", mnt);
	fmt(devout, sizeof(devout), "%s/devstate.out", run);
	rep->t_start = ho_now_ns();
	if ((rc = vm_attach(run, mem, 10000, &vm))) {
		handoff_vm_fail("cannot reach the VM", rc);
		goto out;
	}
	vm_set_timeout(vm, 120000);
	uint8_t dig[OVERLAY_NIMAGES][HO_SHA256_LEN];
	uint64_t sz[OVERLAY_NIMAGES];
	if (handoff_identity_of(ovl, dig, sz))
		goto out;
	handoff_hex_id(dig, sz, idtext, sizeof(idtext));

	/* hello: the destination refuses a different base before anything is paused */
	if (handoff_tcp_connect(to, timeout_s * 1000, &cn->fd))
		goto out;
	char nonce_hex[33];
	if ((rc = handoff_conn_line(cn, line, sizeof(line), timeout_s * 1000)) ||
	    sscanf(line, "HANDOFF-VM %*d nonce=%32s", nonce_hex) != 1 || ho_unhex(nonce_hex, cn->peer_nonce, 16)) {
		ho_err("'%s' is not a handoff-vm receiver (%s)", to, rc ? ho_strerror(rc) : "bad greeting");
		goto out;
	}
	ho_random(cn->my_nonce, 16);
	ho_hex(cn->my_nonce, 16, nonce_hex);
	{
		char hello[HANDOFF_LINE_MAX];
		fmt(hello, sizeof(hello), "HELLO %d %s nonce=%s", HANDOFF_PROTO_VERSION, idtext, nonce_hex);
		if (handoff_conn_send_signed(cn, hello))
			goto lost;
	}
	if ((rc = handoff_conn_line(cn, line, sizeof(line), timeout_s * 1000)))
		goto lost;
	if (!strncmp(line, "ERR ", 4)) {
		int code = atoi(line + 4);
		const char *msg = strchr(line + 4, ' ');
		ho_err("the destination refused the handoff: %s", msg ? msg + 1 : line);
		ex = code == HO_EBASE ? HANDOFF_BASE_MISMATCH : HANDOFF_RESUMED;
		goto out;
	}
	unsigned sport;
	if (handoff_conn_check(cn, line) || sscanf(line, "OK port=%u", &sport) != 1 || !sport || sport > 65535) {
		ho_err("unexpected reply from the destination: '%.60s'", line);
		ex = HANDOFF_RESUMED;
		goto out;
	}
	{
		char host[256], port[16];
		transport_split_hostport(to, host, sizeof(host), port, sizeof(port));
		fmt(streamto, sizeof(streamto), strchr(host, ':') ? "[%s]:%u" : "%s:%u", host, sport);
		fmt(mirrorto, sizeof(mirrorto), "%s", streamto);
	}
	/* clock: the destination's realtime clock against ours, from the fastest of a few pings */
	rep->rtt_ns = UINT64_MAX;
	for (int i = 0; i < 5; i++) {
		uint64_t a = ho_now_ns(), dt;
		if (handoff_conn_send(cn, "TIME") || handoff_conn_line(cn, line, sizeof(line), timeout_s * 1000) ||
		    sscanf(line, "TIME %" SCNu64, &dt) != 1)
			goto lost;
		uint64_t b = ho_now_ns();
		if (b - a < rep->rtt_ns) {
			rep->rtt_ns = b - a;
			rep->clock_offset = (int64_t)dt - (int64_t)(a + (b - a) / 2);
		}
	}
	ho_notice("destination '%s' holds the same base; streaming to port %u", to, sport);
	if (fault == HANDOFF_FAULT_CORRUPT_FINAL) {
		if (handoff_proxy_start(&px, streamto, streamto, sizeof(streamto))) {
			ho_err("cannot start the fault-injection proxy");
			goto out;
		}
		proxy_on = true;
		ho_warn("test fault '%s': the final round's stream will be corrupted", handoff_fault_name(fault));
	}

	handoff_digests_prepare(ovl, verify);

	/* live rounds (none with max_rounds 1: the VM is paused at once, and everything changed
	 * since the base goes in the paused round or, with post-copy, after the resume) */
	uint32_t since = 0;
	bool abandoned = false;
	while (max_rounds > 1) {
		struct round *r = &rep->r[rep->n];
		struct live_watch lw = { .ovl = ovl, .abandon = o->abandon_live };
		bool watching = false;
		struct export_opts leo = eo;
		if (o->postcopy == HANDOFF_POSTCOPY_AUTO && o->abandon_live > 0) {
			if ((rc = export_checkpoint(ovl, &lw.until))) {
				ho_err("cannot checkpoint '%s': %s", ovl, ho_strerror(rc));
				goto lost;
			}
			lw.t0 = ho_mono_ns();
			if (count_gens(ovl, since, lw.until, &lw.chunks) == 0 && lw.chunks)
				watching = pthread_create(&lw.th, NULL, live_watch_main, &lw) == 0;
			leo.cancel = &lw.cancel;
			leo.chunks_done = &lw.sent;
		}
		rc = export_round(ovl, streamto, &leo, since, lw.until, true, false, r);
		if (watching) {
			lw.stop = 1;
			pthread_join(lw.th, NULL);
		}
		if (rc && lw.cancel) {
			/* the guest rewrites faster than the round sends: what the round sent is lost
			 * (the mirror drops a stream that did not end), everything goes by post-copy */
			abandoned = true;
			rep->abandoned_ns = ho_mono_ns() - lw.t0;
			rep->abandoned_chunks = lw.chunks;
			rep->abandoned_rewritten = lw.rewritten;
			rep->abandoned_sent = lw.sent_seen;
			ho_notice("round %d (live) abandoned after %.2f s: the guest rewrote %" PRIu64 " chunks while the"
				  " round sent %" PRIu64 " of %" PRIu64 "; post-copy instead", rep->n + 1,
				  secs(rep->abandoned_ns), lw.rewritten, lw.sent_seen, lw.chunks);
			break;
		}
		if (rc)
			goto lost;
		rep->n++;
		since = r->until;
		handoff_conn_send(cn, "ROUND %d %u %" PRIu64 " verify=%s", rep->n, r->until, r->wire_bytes, verify);
		char b1[32];
		ho_notice("round %d (live): %s sent in %.2f s", rep->n, ho_fmt_bytes(r->wire_bytes, b1, sizeof(b1)), secs(r->ns));
		if (rep->n >= max_rounds - 1)
			break;
		if (r->ns <= (uint64_t)target_ms * 1000000u)
			break;                            /* the rest fits in the downtime target */
		if (rep->n >= 2 && r->wire_bytes * 10 > rep->r[rep->n - 2].wire_bytes * 8)
			break;                            /* not shrinking any more */
	}

	/* post-copy when asked, or (auto) when the last live round would not fit in about the downtime
	 * target: the rounds did not converge; or when there was none (everything is still to go) */
	{
		const struct round *last = rep->n ? &rep->r[rep->n - 1] : NULL;
		rep->postcopy = o->postcopy == HANDOFF_POSTCOPY_ALWAYS ||
			(o->postcopy == HANDOFF_POSTCOPY_AUTO &&
			 (abandoned || !last || last->ns > HO_MAX(1000000000ull, 3ull * (uint64_t)target_ms * 1000000u)));
		if (fault == HANDOFF_FAULT_SLOW_POSTCOPY)
			rep->postcopy = true;
		if (fault == HANDOFF_FAULT_CORRUPT_POSTCOPY) {
			if (handoff_proxy_start(&px, streamto, streamto, sizeof(streamto))) {
				ho_err("cannot start the fault-injection proxy");
				goto out;
			}
			proxy_on = true;
			px.corrupt = 1;
			rep->postcopy = true;
			ho_warn("test fault '%s': the post-copy stream will be corrupted", handoff_fault_name(fault));
		}
	}

	/* write back what the guest dirtied since the last round while it still runs: otherwise
	 * QEMU's stop and the final checkpoint flush it inside the downtime (seconds, after a long
	 * round of a busy guest) */
	{
		uint64_t tf = ho_mono_ns();
		export_writeback(ovl);          /* a failure is the checkpoint's after the pause */
		ho_info("images written back before the pause in %.2f s", secs(ho_mono_ns() - tf));
	}

	/* pause, device state, final round */
	rep->t_pause = ho_now_ns();
	if ((rc = vm_pause(vm))) {
		handoff_vm_fail("cannot pause the VM", rc);
		goto out;
	}
	rep->paused = true;
	long long dsize = vm_save_device_state(vm, devout);
	if (dsize < 0) {
		handoff_vm_fail("cannot save the device state", (int)dsize);
		goto lost;
	}
	rep->devstate_bytes = (uint64_t)dsize;
	rep->t_devstate = ho_now_ns();
	if (rep->postcopy) {
		struct export_opts peo = eo;
		if (fault == HANDOFF_FAULT_SLOW_POSTCOPY) {
			peo.rate_limit = 8000;          /* the VM runs long before the stream ends */
			ho_warn("test fault '%s': the post-copy stream goes at 8 kB/s", handoff_fault_name(fault));
		}
		ex = migrate_postcopy(cn, rep, ovl, devout, streamto, mirrorto, &peo, since);
		if (ex == HANDOFF_OK)
			goto handed_off;
		if (ex == HANDOFF_LOST)
			goto out;
		goto lost;
	}
	if (proxy_on)
		px.corrupt = 1;
	/* the images no longer change: hash them while the final round streams */
	struct digest_task digt;
	bool hashing = strcmp(verify, "none") != 0;
	if (hashing)
		handoff_digest_start(&digt, ovl, !strcmp(verify, "all"));
	rc = export_round(ovl, streamto, &eo, since, 0, false, false, &rep->r[rep->n]);
	int drc = hashing ? handoff_digest_join(&digt) : 0;
	if (rc)
		goto lost;
	rep->n++;
	rep->t_final_done = ho_now_ns();
	{
		char *ds = NULL;
		size_t dlen;
		uint8_t d[HO_SHA256_LEN];
		char hex[2 * HO_SHA256_LEN + 1], text[HANDOFF_LINE_MAX];
		if (ho_read_file(devout, &ds, &dlen, 256u << 20))
			goto lost;
		ho_sha256(ds, dlen, d);
		ho_hex(d, HO_SHA256_LEN, hex);
		fmt(text, sizeof(text), "DEVSTATE %zu %s", dlen, hex);
		rc = handoff_conn_send_signed(cn, text);
		if (!rc)
			rc = ho_write_full(cn->fd, ds, dlen) ? HO_ECONN : 0;
		free(ds);
		fmt(text, sizeof(text), "RESUME %u verify=%s", since = rep->r[rep->n - 1].until, verify);
		if (rc || handoff_conn_send_signed(cn, text))
			goto lost;
		/* the destination hashes its images meanwhile */
		if (hashing) {
			char *dig_text = digt.out;
			if (drc)
				goto lost;
			if (fault == HANDOFF_FAULT_WRONG_DIGEST) {
				char *h = strchr(dig_text, '=');
				h[1] = h[1] == '0' ? '1' : '0';
				ho_warn("test fault '%s': sending a wrong memory digest", handoff_fault_name(fault));
			}
			fmt(text, sizeof(text), "DIGEST %s", dig_text);
			if (handoff_conn_send_signed(cn, text))
				goto lost;
		}
	}
	/* wait for "RUNNING" from the destination */
	if ((rc = handoff_conn_line(cn, line, sizeof(line), 120000))) {
		ho_err("no word from the destination after the device state: %s", ho_strerror(rc));
		goto lost;
	}
	rep->t_confirm = ho_now_ns();
	uint64_t t_run;
	if (strncmp(line, "RUNNING ", 8) || handoff_conn_check(cn, line) || sscanf(line, "RUNNING %" SCNu64, &t_run) != 1) {
		ho_err("the destination did not resume the VM: %.200s", line);
		goto lost;
	}
	rep->t_dst_running = (uint64_t)((int64_t)t_run - rep->clock_offset);
	rep->handed_off = true;
	rep->t_end = rep->t_confirm;
	handoff_conn_send(cn, "BYE");
	ex = HANDOFF_OK;
handed_off:
	if (!keep) {
		vm_quit(vm);
		vm_close(vm);
		vm = NULL;
		handoff_unmount(mnt, ovl);
	}
	goto out;

lost:
	/* the handoff failed: the source goes on */
	if (cn->fd >= 0)
		handoff_conn_send(cn, "ABORT");
	if (rep->paused) {
		char st[64];
		bool running = false;
		if (vm_query_status(vm, st, sizeof(st), &running) == 0 && !running && (rc = vm_cont(vm))) {
			handoff_vm_fail("handoff failed and the source VM could not be resumed", rc);
			ex = HANDOFF_LOST;
			goto out;
		}
		ho_err("handoff failed: the source VM was resumed and keeps running");
	} else {
		ho_err("handoff failed before the VM was paused: it keeps running on the source");
	}
	ex = HANDOFF_RESUMED;
out:
	if (proxy_on)
		handoff_proxy_stop(&px);
	if (!rep->t_end)
		rep->t_end = ho_now_ns();
	if (cn->fd >= 0)
		close(cn->fd);
	free(cn);
	vm_close(vm);
	handoff_env_free(&e);
	*report = rep;
	return ex;
}

