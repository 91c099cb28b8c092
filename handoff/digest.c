/*
 * digest.c — the image digests of --verify: asking a mount daemon for them (and to read ahead what
 * they need), on a thread so that the hashing overlaps the rest of the downtime. They are what
 * lets the destination refuse to run a VM on images that are not the source's bit for bit.
 */
#include <stdio.h>
#include <string.h>
#include "handoff/handoff_int.h"

/* The digests both sides compare before the destination resumes (--verify), as
 * "memory=HEX[ disk=HEX]": the mount daemon computes them (the "digest" control request, defined
 * in fs/digest.h) from the chunks its overlay holds and sums of the base it read ahead of time
 * ("digest-prepare"), so the cost is the modified chunks, not the whole image through FUSE. They
 * guard against loss anywhere in the chain between two machines that trust each other (the
 * control messages that carry them are authenticated), so a fast non-cryptographic hash is
 * enough. The source writes the page cache back first: the daemon hashes what it holds. */
static int image_digests(const char *ovl, bool all, char *out, size_t len)
{
	char req[32];
	int rc = export_writeback(ovl);
	if (rc)
		return rc;
	fmt(req, sizeof(req), "digest %s", all ? "all" : "memory");
	if ((rc = ho_ctl_call(ovl, req, -1, 600000, out, len)))
		ho_err("cannot hash the images of '%s': %s%s%s", ovl, ho_strerror(rc), out[0] ? ": " : "", out);
	return rc;
}

/* ask the mount daemon of ovl to read the base for the digests now (in the background) */
void handoff_digests_prepare(const char *ovl, const char *verify)
{
	char req[32], reply[HO_CTL_LINE];
	if (!strcmp(verify, "none"))
		return;
	fmt(req, sizeof(req), "digest-prepare %s", strcmp(verify, "all") ? "memory" : "all");
	if (ho_ctl_call(ovl, req, -1, 10000, reply, sizeof(reply)))
		ho_warn("the mount of '%s' cannot prepare the image digests; they will take longer", ovl);
}

static void *digest_task_main(void *arg)
{
	struct digest_task *t = arg;
	t->rc = image_digests(t->ovl, t->all, t->out, sizeof(t->out));
	return NULL;
}

void handoff_digest_start(struct digest_task *t, const char *ovl, bool all)
{
	t->ovl = ovl;
	t->all = all;
	t->rc = 0;
	t->joined = false;
	t->started = pthread_create(&t->th, NULL, digest_task_main, t) == 0;
}

/* the digests, or the error; runs them here if the thread could not start; again: the same */
int handoff_digest_join(struct digest_task *t)
{
	if (t->joined)
		return t->rc;
	if (t->started)
		pthread_join(t->th, NULL);
	else
		digest_task_main(t);
	t->joined = true;
	return t->rc;
}

