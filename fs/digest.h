/*
 * digest.h — (internal to fs/) the image digest a handoff's two ends compare before the
 * destination resumes the VM (handoff-vm --verify), computed by the mount daemon itself.
 *
 * Why here: hashing a 1 GiB guest RAM image through FUSE cost about a second of the downtime on
 * each side. The daemon knows which chunks are modified and can read the overlay directly; the
 * chunks it does not hold are the base's, whose sums it computes once per mount (ahead of time
 * with "digest-prepare", on a background thread). So a digest costs the modified chunks only.
 *
 * Definition (the same on every mount, whatever each side holds as modified): with chunk size C
 * and image size S, s_i = XXH3-64 of bytes [i*C, min((i+1)*C, S)) of the image as read through
 * the mount, for every chunk i; the digest is XXH3-128 of the s_i as consecutive little-endian
 * 64-bit words, with the first 8 bytes XORed with S (little-endian). A chunk modified back to its
 * base content has its base sum, so the two ends agree exactly when their images are equal
 * (up to hash collisions; this guards against loss and bugs, the channel is authenticated).
 */
#ifndef HANDOFF_FS_DIGEST_H
#define HANDOFF_FS_DIGEST_H

#include <stdbool.h>
#include <stdint.h>

struct overlay;
struct fs_digest;

/* Is chunk c of image img modified (held in the overlay)? */
typedef bool (*fs_digest_modified_fn)(void *arg, int img, uint64_t c);

int fs_digest_new(struct overlay *ov, struct fs_digest **out);
/* Stops and joins a background computation. */
void fs_digest_free(struct fs_digest *d);
/* Start computing the base sums of the images whose bit (1 << img) is in mask on a background
 * thread, unless they are being or have been computed. Never fails (a failure is reported by the
 * next fs_digest_image of that image, which then tries again). */
void fs_digest_prepare(struct fs_digest *d, unsigned mask);
/* The digest of image img (definition above) into out. Waits for (or computes) the base sums.
 * 0, HO_EIO, HO_ENOMEM, HO_EINVAL (HO_ESTATE while the mount stops). */
int fs_digest_image(struct fs_digest *d, int img, fs_digest_modified_fn mod, void *arg, uint8_t out[16]);

#endif
