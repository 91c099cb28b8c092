/*
 * receive.c — the destination side of a handoff (handoff_receive): the mirror mount over the same
 * base, the control connection's hello (a source with a different base, or without our key, is
 * refused before it pauses anything), the device state, and resuming the VM here: once the images
 * verified equal to the source's, or at once for post-copy, with the mirror holding back every
 * chunk still to come and a watchdog that takes the VM down should this process die before the
 * handoff completed.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include "handoff/handoff_int.h"
#include "vm/vm.h"

/* ---- receive (the destination) ---------------------------------------------------------------------- */

/* Destination: resume the VM from the device state on the mirror mount and tell the source
 * RUNNING with our clock. 0, or the error (the source was told ERR when the resume failed). */
static int resume_and_report(struct conn *cn, const struct base *b, const char *mnt, const char *run,
			     const char *accel, const char *devin, struct vm **vm, struct resume_gate *gate)
{
	char text[128];
	int rc = handoff_resume_on_mount(b, mnt, run, accel, devin, vm, NULL, gate);
	if (rc) {
		if (!gate || !gate->told)
			handoff_conn_send(cn, "ERR %d cannot resume the VM: %s", rc, ho_strerror(rc));
		return rc;
	}
	fmt(text, sizeof(text), "RUNNING %" PRIu64, ho_now_ns());
	if ((rc = handoff_conn_send_signed(cn, text)))
		ho_err("cannot confirm to the source: the VM runs here, check the source");
	return rc;
}

/* --verify on the destination: the images' digests, hashed while QEMU starts and loads the
 * device state, must equal the source's (its DIGEST line) before the VM may run */
struct verify_gate { struct resume_gate g; struct conn *cn; struct digest_task dt; };

static int verify_gate_check(struct resume_gate *g)
{
	struct verify_gate *v = (struct verify_gate *)g;
	char theirs[HANDOFF_LINE_MAX];
	int rc = handoff_digest_join(&v->dt);
	if (rc) {
		handoff_conn_send(v->cn, "ERR %d cannot hash the images", rc);
		g->told = true;
		return rc;
	}
	if ((rc = handoff_conn_line(v->cn, theirs, sizeof(theirs), 120000)) || (rc = handoff_conn_check(v->cn, theirs)) ||
	    strncmp(theirs, "DIGEST ", 7)) {
		ho_err("no digest from the source: not resuming");
		return rc ? rc : HO_EPROTO;
	}
	if (strcmp(theirs + 7, v->dt.out)) {
		ho_err("the images differ from the source's after the last round: not resuming");
		ho_err("source %s", theirs + 7);
		ho_err("here   %s", v->dt.out);
		handoff_conn_send(v->cn, "ERR %d images differ from the source's after the last round", HO_EDIGEST);
		g->told = true;
		return HO_EDIGEST;
	}
	ho_notice("images verified (%s)", v->dt.all ? "all" : "memory");
	return 0;
}

/* Post-copy on the destination: until the handoff completes, the VM must not outlive this
 * process (the source resumes its own copy when it loses us). A watchdog child waits on a pipe;
 * if the pipe closes before "ok" came through it, it kills the QEMU of RUN_DIR/qemu.pid and tells
 * the mirror to fail every access still waiting. Returns the pipe's write end (or -1). */
static int postcopy_watchdog(const char *run, const char *ovl)
{
	int p[2];
	if (pipe2(p, O_CLOEXEC) < 0)
		return -1;
	pid_t pid = fork();
	if (pid < 0) {
		close(p[0]);
		close(p[1]);
		return -1;
	}
	if (pid == 0) {
		char c = 0, path[PATH_MAX], *t = NULL, reply[64];
		size_t tl;
		close(p[1]);
		ssize_t n;
		while ((n = read(p[0], &c, 1)) < 0 && errno == EINTR)
			;
		if (n == 1 && c == 'k')
			_exit(0);
		fmt(path, sizeof(path), "%s/qemu.pid", run);
		if (ho_read_file(path, &t, &tl, 64) == 0 && atoi(t) > 1)
			kill((pid_t)atoi(t), SIGKILL);
		ho_ctl_call(ovl, "postcopy-abort", -1, 5000, reply, sizeof(reply));
		_exit(0);
	}
	close(p[0]);
	return p[1];
}

enum handoff_outcome handoff_receive(const struct handoff_receive_opts *o)
{
	const char *base = o->base_dir, *ovl = o->overlay, *mnt = o->mount, *listen_addr = o->listen;
	const char *keyfile = o->key_file, *run = o->run_dir, *accel = o->accel, *port_file = o->port_file;
	int timeout_s = o->timeout_s, rc;
	enum handoff_outcome ex = HANDOFF_FAILED;
	char rundef[PATH_MAX];
	char host[256], port[16], mlisten[300], mport_file[PATH_MAX], line[HANDOFF_LINE_MAX], idtext[300];
	if (transport_split_hostport(listen_addr, host, sizeof(host), port, sizeof(port))) {
		ho_err("invalid listen address '%s' (ADDR:PORT)", listen_addr);
		return HANDOFF_FAILED;
	}
	if (!run) {
		handoff_default_run_dir(ovl, rundef, sizeof(rundef));
		run = rundef;
	}
	struct base b;
	struct conn *cn = calloc(1, sizeof(*cn));
	struct vm *vm = NULL;
	int lfd = -1;
	bool mirrored = false, postcopy_on = false;
	int watchdog = -1;                  /* post-copy: kills the VM if we die before completing */
	char *ds = NULL;
	if (!cn || handoff_base_load(base, &b)) {
		free(cn);
		return HANDOFF_FAILED;
	}
	cn->fd = -1;
	cn->key = o->key;
	cn->key_len = o->key_len;
	if ((rc = ho_mkdir_p(run, 0755)))
		goto out;
	/* the mirror's stream listener: PORT+1 (or any port when PORT is 0) */
	unsigned p = (unsigned)atoi(port);
	fmt(mlisten, sizeof(mlisten), strchr(host, ':') ? "[%s]:%u" : "%s:%u", host, p ? p + 1 : 0);
	fmt(mport_file, sizeof(mport_file), "%s/stream.port", run);
	if ((rc = handoff_start_mirror(base, ovl, mnt, mlisten, keyfile, mport_file)))
		goto out;
	mirrored = true;
	unsigned sport = 0;
	{
		char *t = NULL;
		size_t tl;
		if (ho_read_file(mport_file, &t, &tl, 64) || sscanf(t, "%u", &sport) != 1) {
			free(t);
			ho_err("the mirror did not report its stream port in '%s'", mport_file);
			rc = HO_EIO;
			goto out;
		}
		free(t);
	}
	uint8_t dig[OVERLAY_NIMAGES][HO_SHA256_LEN];
	uint64_t sz[OVERLAY_NIMAGES];
	if ((rc = handoff_identity_of(ovl, dig, sz)))
		goto out;
	handoff_hex_id(dig, sz, idtext, sizeof(idtext));
	uint16_t cport;
	if ((rc = transport_listen(listen_addr, &lfd, &cport))) {
		ho_err("cannot listen on '%s': %s", listen_addr, ho_strerror(rc));
		goto out;
	}
	if (port_file) {
		char buf[16];
		int n = fmt(buf, sizeof(buf), "%u\n", cport);
		if ((rc = ho_write_file_atomic(port_file, buf, (size_t)n)))
			goto out;
	}
	ho_notice("waiting for the source on port %u (streams on port %u)", cport, sport);
	struct pollfd pfd = { .fd = lfd, .events = POLLIN };
	int pr = poll(&pfd, 1, timeout_s > 0 ? timeout_s * 1000 : -1);
	if (pr <= 0) {
		ho_err("no source connected within %d s", timeout_s);
		rc = HO_ETIMEDOUT;
		goto out;
	}
	cn->fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
	if (cn->fd < 0) {
		ho_err("cannot accept the source: %s", strerror(errno));
		rc = HO_ECONN;
		goto out;
	}
	int one = 1;
	setsockopt(cn->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	close(lfd);
	lfd = -1;
	ho_random(cn->my_nonce, 16);
	char nonce_hex[33];
	ho_hex(cn->my_nonce, 16, nonce_hex);
	if ((rc = handoff_conn_send(cn, "HANDOFF-VM %d nonce=%s", HANDOFF_PROTO_VERSION, nonce_hex)))
		goto out;
	int to_ms = 60000;
	if ((rc = handoff_conn_line(cn, line, sizeof(line), to_ms)))
		goto lost;
	{
		int ver;
		char *nn = strstr(line, " nonce=");
		if ((rc = handoff_conn_check(cn, line)) || sscanf(line, "HELLO %d", &ver) != 1 || !nn ||
		    ho_unhex(nn + 7, cn->peer_nonce, 16)) {
			handoff_conn_send(cn, "ERR %d %s", rc ? rc : HO_EPROTO, rc == HO_EAUTH ? "not authenticated" : "bad hello");
			ho_err("refused the source: %s", rc == HO_EAUTH ? "hello not authenticated with our key" : "bad hello");
			rc = rc ? rc : HO_EPROTO;
			goto lost;
		}
		if (ver != HANDOFF_PROTO_VERSION) {
			handoff_conn_send(cn, "ERR %d protocol version %d, want %d", HO_EVERSION, ver, HANDOFF_PROTO_VERSION);
			rc = HO_EVERSION;
			goto lost;
		}
		*nn = 0;
		const char *theirs = line + strlen("HELLO 1 ");
		if (strcmp(theirs, idtext)) {
			handoff_conn_send(cn, "ERR %d base differs: the destination holds %s", HO_EBASE, idtext);
			ho_err("refused the source: its base differs from '%s' (source %s)", base, theirs);
			rc = HO_EBASE;
			goto lost;
		}
		char ok[64];
		fmt(ok, sizeof(ok), "OK port=%u", sport);
		if ((rc = handoff_conn_send_signed(cn, ok)))
			goto lost;
	}
	ho_notice("source connected with the same base; receiving rounds");
	handoff_digests_prepare(ovl, "memory");     /* what --verify needs by default; "all": see ROUND */
	bool digest_all_prepared = false;
	size_t dlen = 0;
	uint8_t dwant[HO_SHA256_LEN];
	char devin[PATH_MAX];
	fmt(devin, sizeof(devin), "%s/devstate.in", run);
	for (;;) {
		if ((rc = handoff_conn_line(cn, line, sizeof(line), timeout_s > 0 ? timeout_s * 1000 : 3600000))) {
			ho_err("the source went away: %s", ho_strerror(rc));
			goto lost;
		}
		if (!strcmp(line, "TIME")) {
			handoff_conn_send(cn, "TIME %" PRIu64, ho_now_ns());
		} else if (!strncmp(line, "ROUND ", 6)) {
			ho_info("%s", line);
			/* what the source will verify: the disk's base sums too, ahead of the downtime */
			const char *v = strstr(line, " verify=");
			if (v && !strncmp(v + 8, "all", 3) && !digest_all_prepared) {
				handoff_digests_prepare(ovl, "all");
				digest_all_prepared = true;
			}
		} else if (!strncmp(line, "DEVSTATE ", 9)) {
			char hex[2 * HO_SHA256_LEN + 1];
			if ((rc = handoff_conn_check(cn, line)) || sscanf(line, "DEVSTATE %zu %64s", &dlen, hex) != 2 ||
			    dlen > (256u << 20) || ho_unhex(hex, dwant, HO_SHA256_LEN)) {
				rc = rc ? rc : HO_EPROTO;
				goto lost;
			}
			free(ds);
			if (!(ds = malloc(dlen ? dlen : 1))) {
				rc = HO_ENOMEM;
				goto lost;
			}
			if ((rc = handoff_conn_bytes(cn, ds, dlen, 60000)))
				goto lost;
			uint8_t got[HO_SHA256_LEN];
			ho_sha256(ds, dlen, got);
			if (!ho_mem_equal_ct(got, dwant, HO_SHA256_LEN)) {
				ho_err("device state from the source is corrupt (SHA-256 mismatch)");
				handoff_conn_send(cn, "ERR %d device state checksum mismatch", HO_ECHECKSUM);
				rc = HO_ECHECKSUM;
				goto lost;
			}
			if ((rc = ho_write_file_atomic(devin, ds, dlen)))
				goto lost;
			if (o->fault == HANDOFF_FAULT_DIE_AFTER_DEVSTATE) {
				ho_warn("test fault '%s': dying now", handoff_fault_name(o->fault));
				_exit(9);
			}
		} else if (!strncmp(line, "RESUME ", 7)) {
			if ((rc = handoff_conn_check(cn, line)))
				goto lost;
			if (!ds) {
				handoff_conn_send(cn, "ERR %d resume before device state", HO_EPROTO);
				rc = HO_EPROTO;
				goto lost;
			}
			char vmode[16] = "none", *vm_ = strstr(line, " verify=");
			if (vm_)
				sscanf(vm_ + 8, "%15s", vmode);
			/* the images must be the source's, bit for bit, before the VM runs on them: hashed
			 * while QEMU starts, compared before it continues */
			struct verify_gate vg = { .g = { .check = verify_gate_check }, .cn = cn };
			bool verifying = strcmp(vmode, "none") != 0;
			if (verifying)
				handoff_digest_start(&vg.dt, ovl, !strcmp(vmode, "all"));
			uint64_t t0 = ho_mono_ns();
			rc = resume_and_report(cn, &b, mnt, run, accel, devin, &vm, verifying ? &vg.g : NULL);
			if (verifying)
				handoff_digest_join(&vg.dt);           /* QEMU failed before the gate: the thread ends */
			if (rc)
				goto lost;
			handoff_write_vm_env(run, "source", base, ovl, mnt, vm_pid(vm));
			ho_notice("VM resumed here in %.2f s after the last round: qemu pid %d, run dir '%s'",
				  secs(ho_mono_ns() - t0), (int)vm_pid(vm), run);
			/* the source answers BYE (or closes); either way the VM stays */
			handoff_conn_line(cn, line, sizeof(line), 10000);
			ex = HANDOFF_OK;
			goto out;
		} else if (!strncmp(line, "POSTCOPY ", 9)) {
			/* post-copy: hold back the chunks still to come, resume now, let them stream */
			unsigned until_;
			uint64_t nch;
			size_t mlen;
			char hex[2 * HO_SHA256_LEN + 1], mpath[PATH_MAX], reply[256];
			uint8_t mwant[HO_SHA256_LEN], mgot[HO_SHA256_LEN];
			if ((rc = handoff_conn_check(cn, line)) ||
			    sscanf(line, "POSTCOPY %u %" SCNu64 " %zu %64s", &until_, &nch, &mlen, hex) != 4 ||
			    mlen > (64u << 20) || ho_unhex(hex, mwant, HO_SHA256_LEN) || !ds) {
				rc = rc ? rc : HO_EPROTO;
				goto lost;
			}
			uint8_t *mf = malloc(mlen ? mlen : 1);
			if (!mf) {
				rc = HO_ENOMEM;
				goto lost;
			}
			if ((rc = handoff_conn_bytes(cn, mf, mlen, 60000))) {
				free(mf);
				goto lost;
			}
			ho_sha256(mf, mlen, mgot);
			fmt(mpath, sizeof(mpath), "%s/postcopy.manifest", run);
			if (!ho_mem_equal_ct(mgot, mwant, HO_SHA256_LEN)) {
				free(mf);
				ho_err("the post-copy manifest from the source is corrupt (SHA-256 mismatch)");
				handoff_conn_send(cn, "ERR %d manifest checksum mismatch", HO_ECHECKSUM);
				rc = HO_ECHECKSUM;
				goto lost;
			}
			rc = ho_write_file_atomic(mpath, mf, mlen);
			free(mf);
			int mfd = rc ? -1 : open(mpath, O_RDONLY | O_CLOEXEC);
			if (mfd < 0 || (rc = ho_ctl_call(ovl, "postcopy", mfd, 60000, reply, sizeof(reply)))) {
				rc = rc ? rc : HO_EIO;
				if (mfd >= 0)
					close(mfd);
				ho_err("the mirror cannot hold back the chunks still to come: %s", ho_strerror(rc));
				handoff_conn_send(cn, "ERR %d cannot begin post-copy: %s", rc, ho_strerror(rc));
				goto lost;
			}
			close(mfd);
			postcopy_on = true;
			watchdog = postcopy_watchdog(run, ovl);
			if ((rc = handoff_conn_send_signed(cn, "READY")))
				goto lost;
			ho_notice("post-copy: %s chunks awaited; resuming the VM", reply);
			uint64_t t0 = ho_mono_ns();
			if ((rc = resume_and_report(cn, &b, mnt, run, accel, devin, &vm, NULL)))
				goto lost;
			char st_[256] = "";
			ho_ctl_call(ovl, "postcopy-status", -1, 5000, st_, sizeof(st_));
			ho_notice("VM resumed here in %.2f s while the last round streams: qemu pid %d (%s)",
				  secs(ho_mono_ns() - t0), (int)vm_pid(vm), st_);
		} else if (!strncmp(line, "COMPLETE ", 9) && postcopy_on) {
			/* the source's stream was published: the mirror must await nothing and be done */
			char reply[512];
			if ((rc = handoff_conn_check(cn, line)))
				goto lost;
			uint64_t deadline = ho_mono_ns() + 600000000000ull;   /* the mirror commits what it wrote in place */
			for (;;) {
				if ((rc = ho_ctl_call(ovl, "postcopy-status", -1, 10000, reply, sizeof(reply))))
					break;
				if (strncmp(reply, "active", 6) || ho_mono_ns() > deadline)
					break;
				usleep(20000);
			}
			if (rc || strncmp(reply, "done ", 5)) {
				ho_err("post-copy did not complete: %s", rc ? ho_strerror(rc) : reply);
				handoff_conn_send(cn, "ERR %d post-copy did not complete", HO_EDIGEST);
				rc = rc ? rc : HO_EDIGEST;
				goto lost;
			}
			ho_info("post-copy: %s", reply);
			/* COMPLETE-OK lets the source's paused copy go: the VM here must still be running
			 * (a QEMU that died, or stopped on an error, while it waited for chunks would
			 * otherwise leave the guest running nowhere); if not, the source resumes its own */
			char qst[64] = "";
			bool qrun = false;
			bool dead = vm_exited(vm, NULL);
			int qrc = dead ? 0 : vm_query_status(vm, qst, sizeof(qst), &qrun);
			if (dead || qrc || !qrun) {
				const char *why = dead ? "QEMU exited" : qrc ? "QEMU does not answer" : qst;
				ho_err("post-copy: every chunk arrived, but the VM here is not running (%s)", why);
				handoff_conn_send(cn, "ERR %d the VM is not running on the destination (%s)", HO_ESTATE, why);
				rc = HO_ESTATE;
				goto lost;
			}
			if ((rc = handoff_conn_send_signed(cn, "COMPLETE-OK"))) {
				ho_err("cannot confirm to the source: the VM runs here, check the source");
				goto lost;
			}
			if (watchdog >= 0) {
				if (write(watchdog, "k", 1) != 1)
					ho_warn("cannot release the post-copy watchdog");
				close(watchdog);
				watchdog = -1;
			}
			handoff_write_vm_env(run, "source", base, ovl, mnt, vm_pid(vm));
			ho_notice("post-copy complete: every chunk arrived and verified; qemu pid %d, run dir '%s'",
				  (int)vm_pid(vm), run);
			handoff_conn_line(cn, line, sizeof(line), 10000);
			ex = HANDOFF_OK;
			goto out;
		} else if (!strcmp(line, "ABORT")) {
			ho_err("the source aborted the handoff");
			rc = HO_ECONN;
			goto lost;
		} else {
			ho_err("unexpected message from the source: '%.60s'", line);
			rc = HO_EPROTO;
			goto lost;
		}
	}
lost:
	ex = rc == HO_EBASE ? HANDOFF_BASE_MISMATCH :
	     rc == HO_ECHECKSUM || rc == HO_EAUTH || rc == HO_EDIGEST ? HANDOFF_VERIFY_FAILED : HANDOFF_FAILED;
	if (postcopy_on) {
		char reply[64];
		ho_ctl_call(ovl, "postcopy-abort", -1, 10000, reply, sizeof(reply));
	}
	if (vm) {
		vm_kill(vm);
		vm_close(vm);
		vm = NULL;
	}
out:
	if (ex != HANDOFF_OK && mirrored)
		handoff_unmount(mnt, ovl);
	if (ex != HANDOFF_OK && ex != HANDOFF_BASE_MISMATCH && ex != HANDOFF_VERIFY_FAILED)
		ex = HANDOFF_FAILED;
	if (lfd >= 0)
		close(lfd);
	if (cn->fd >= 0)
		close(cn->fd);
	if (watchdog >= 0)
		close(watchdog);            /* not completed: the watchdog makes sure the VM is gone */
	vm_close(vm);
	free(cn);
	free(ds);
	handoff_env_free(&b.env);
	return ex;
}

