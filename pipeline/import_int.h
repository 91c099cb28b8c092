/*
 * import_int.h — what the TCP receiver (transport.c) needs of the importer beyond pipeline.h:
 * feed the header alone, pick up a partial staging file of the same stream, learn when a frame
 * is durably staged (to acknowledge it).
 */
#ifndef HANDOFF_PIPELINE_IMPORT_INT_H
#define HANDOFF_PIPELINE_IMPORT_INT_H

#include <stdint.h>
#include "pipeline/pipeline.h"

/* True once the stream header was accepted (checksum, key, base identity, sequence). */
bool import_header_done(const struct importer *im);
/* After the header: continue a partial staging file of the same stream if there is one (and
 * fresh is false). *frames gets the number of frames already staged (0 = start over), *check the
 * chain value of the last of them. */
int import_resume(struct importer *im, bool fresh, uint64_t *frames, uint64_t *check);
/* Called after each data frame is durably staged (seq = its number). */
void import_on_frame(struct importer *im, int (*cb)(void *arg, uint64_t seq), void *arg);
/* True once a header was accepted whose basis is set (see struct import_result). */
bool import_has_basis(const struct importer *im);
/* Hand out (stage, acknowledge) every frame fed so far that decoding threads still hold; call
 * before waiting for more input. 0 or the (sticky) error. */
int import_drain(struct importer *im);
/* The last error's message ("" if none). */
const char *import_errmsg(const struct importer *im);

#endif
