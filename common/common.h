/*
 * common.h — the floor everything else stands on: one error enum, one logger, safe I/O,
 * hashing and time. Every module returns 0 or a negative `enum ho_err`; tools turn those into
 * exit codes at the edge. Nothing here writes to stdout: stdout carries streams.
 */
#ifndef HANDOFF_COMMON_H
#define HANDOFF_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>
#include <sys/types.h>
#include <syslog.h>
#include <time.h>

/* ---- errors --------------------------------------------------------------------------------- */

/* Every fallible function returns 0 (or a count) on success, or one of these (negative). */
enum ho_err {
	HO_OK          = 0,
	HO_EIO         = -1,   /* an I/O error (errno logged where it happened) */
	HO_ENOMEM      = -2,   /* out of memory */
	HO_EINVAL      = -3,   /* invalid argument */
	HO_ENOENT      = -4,   /* no such file */
	HO_EEXIST      = -5,   /* already exists */
	HO_EBUSY       = -6,   /* in use (e.g. overlay already mounted) */
	HO_ENOSPC      = -7,   /* no space left on device */
	HO_ECORRUPT    = -8,   /* on-disk state is corrupt */
	HO_EBASE       = -9,   /* base image differs from the one expected */
	HO_ETRUNC      = -10,  /* input ended early */
	HO_EAUTH       = -11,  /* authentication failed (wrong or missing key) */
	HO_ECHECKSUM   = -12,  /* checksum mismatch */
	HO_EFORMAT     = -13,  /* malformed input */
	HO_EVERSION    = -14,  /* unsupported format version */
	HO_ESEQ        = -15,  /* records out of order, duplicated or spliced */
	HO_ESTALE      = -16,  /* stream does not follow the receiver's state (replay, gap) */
	HO_ETRAILING   = -17,  /* bytes after the end of a stream */
	HO_EDB         = -18,  /* sqlite error */
	HO_EPROTO      = -19,  /* protocol error from a peer */
	HO_ECONN       = -20,  /* connection lost or refused */
	HO_ELIMIT      = -21,  /* a resource limit was exceeded */
	HO_EDIGEST     = -22,  /* reconstructed image digest mismatch */
	HO_ESTATE      = -23,  /* operation not valid in the current state */
	HO_ETIMEDOUT   = -24,  /* timed out */
	HO_EPERM       = -25,  /* permission denied */
	HO_ECHILD      = -26,  /* a child process failed */
	HO_ERR_MIN     = -26,
};

/* A static, lower-case description of err; "unknown error" for values outside the enum. */
const char *ho_strerror(int err);
/* Map an errno value (positive) to the closest enum ho_err. */
int ho_from_errno(int e);
/* Map an enum ho_err to a positive errno for FUSE replies. */
int ho_to_errno(int err);

/* ---- logging -------------------------------------------------------------------------------- */

/* Messages go to stderr as "PROG: LEVEL: message\n" (LEVEL omitted for LOG_NOTICE). Default
 * level LOG_NOTICE; -q lowers to LOG_ERR, -v raises to LOG_INFO, -vv to LOG_DEBUG. Thread-safe. */
void ho_log_init(const char *prog);
void ho_log_set_level(int level);
int  ho_log_get_level(void);
/* Send messages to syslog instead of stderr (daemons that lost their terminal). */
void ho_log_use_syslog(bool on);
void ho_log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
#define ho_err(...)    ho_log(LOG_ERR, __VA_ARGS__)
#define ho_warn(...)   ho_log(LOG_WARNING, __VA_ARGS__)
#define ho_notice(...) ho_log(LOG_NOTICE, __VA_ARGS__)
#define ho_info(...)   ho_log(LOG_INFO, __VA_ARGS__)
#define ho_debug(...)  ho_log(LOG_DEBUG, __VA_ARGS__)

/* ---- safe I/O ------------------------------------------------------------------------------- */

/* Read up to len bytes at off, retrying short reads and EINTR. Returns bytes read (< len only at
 * end of file) or a negative enum ho_err. */
ssize_t ho_pread_full(int fd, void *buf, size_t len, uint64_t off);
/* Write all len bytes at off. 0 or negative enum ho_err (HO_ENOSPC for a full disk). */
int ho_pwrite_full(int fd, const void *buf, size_t len, uint64_t off);
/* Same for the current file position (pipes, sockets). ho_read_full returns bytes read, < len
 * only at end of input. */
ssize_t ho_read_full(int fd, void *buf, size_t len);
int ho_write_full(int fd, const void *buf, size_t len);
/* Wait until listen_fd has a connection or stop_fd becomes readable. Returns 1 for a
 * connection, 0 once stop_fd is readable (the caller stops), or a negative enum ho_err. */
int ho_wait_accept(int listen_fd, int stop_fd);
/* fsync the directory that holds path (or the directory path itself if is_dir). */
int ho_fsync_dir(const char *path);
/* Durably replace path with buf: temp file, fsync, rename, fsync directory. */
int ho_write_file_atomic(const char *path, const void *buf, size_t len);
/* Read a whole (small) file into a NUL-terminated malloc'd buffer. */
int ho_read_file(const char *path, char **out, size_t *out_len, size_t max_len);
/* mkdir -p; 0 if it exists already as a directory. */
int ho_mkdir_p(const char *path, mode_t mode);
/* Join dir and name into a malloc'd path. NULL on ENOMEM. */
char *ho_path_join(const char *dir, const char *name);

/* ---- hashing -------------------------------------------------------------------------------- */

#define HO_SHA256_LEN 32
struct ho_sha256;                           /* opaque incremental SHA-256 */
struct ho_sha256 *ho_sha256_new(void);
void ho_sha256_update(struct ho_sha256 *h, const void *data, size_t len);
void ho_sha256_final(struct ho_sha256 *h, uint8_t out[HO_SHA256_LEN]);  /* also resets */
void ho_sha256_free(struct ho_sha256 *h);
void ho_sha256(const void *data, size_t len, uint8_t out[HO_SHA256_LEN]);
/* SHA-256 of a whole file (or of `size` zero bytes when path is NULL). */
int ho_sha256_file(const char *path, uint64_t size, uint8_t out[HO_SHA256_LEN]);

/* HMAC-SHA-256 (incremental). */
struct ho_hmac;
struct ho_hmac *ho_hmac_new(const void *key, size_t key_len);
void ho_hmac_update(struct ho_hmac *h, const void *data, size_t len);
void ho_hmac_final(struct ho_hmac *h, uint8_t out[HO_SHA256_LEN]);     /* also resets */
void ho_hmac_free(struct ho_hmac *h);
/* Constant-time comparison. */
bool ho_mem_equal_ct(const void *a, const void *b, size_t len);

/* Fast non-cryptographic hashes (XXH3). */
uint64_t ho_xxh64(const void *data, size_t len);
void ho_xxh128(const void *data, size_t len, uint8_t out[16]);

/* Hex helpers: out must hold 2*len+1 bytes. ho_unhex returns 0 or HO_EINVAL. */
void ho_hex(const uint8_t *in, size_t len, char *out);
int ho_unhex(const char *in, uint8_t *out, size_t len);
/* Fill buf with cryptographically random bytes. */
int ho_random(void *buf, size_t len);

/* True when every byte of buf is zero (fast). */
bool ho_is_zero(const void *buf, size_t len);

/* ---- time, sizes, little-endian -------------------------------------------------------------- */

uint64_t ho_now_ns(void);        /* CLOCK_REALTIME in ns */
uint64_t ho_mono_ns(void);       /* CLOCK_MONOTONIC in ns */
/* Clock clk's time ms milliseconds from now: a deadline for pthread_cond_timedwait(). */
struct timespec ho_deadline(clockid_t clk, uint64_t ms);
/* Parse "4096", "4K", "256M", "1G", "1T" (binary units). 0 or HO_EINVAL. */
int ho_parse_size(const char *s, uint64_t *out);
/* Undo /proc/self/mountinfo's octal escapes (\040 for space, ...) in place. */
void ho_unescape_mountinfo(char *s);
/* Format bytes as "1.5 MiB" into buf. Returns buf. */
char *ho_fmt_bytes(uint64_t bytes, char *buf, size_t len);

static inline void ho_put_le16(uint8_t *p, uint16_t v) { p[0] = v; p[1] = v >> 8; }
static inline void ho_put_le32(uint8_t *p, uint32_t v) { for (int i = 0; i < 4; i++) p[i] = v >> (8 * i); }
static inline void ho_put_le64(uint8_t *p, uint64_t v) { for (int i = 0; i < 8; i++) p[i] = v >> (8 * i); }
static inline uint16_t ho_get_le16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }
static inline uint32_t ho_get_le32(const uint8_t *p) { uint32_t v = 0; for (int i = 3; i >= 0; i--) v = v << 8 | p[i]; return v; }
static inline uint64_t ho_get_le64(const uint8_t *p) { uint64_t v = 0; for (int i = 7; i >= 0; i--) v = v << 8 | p[i]; return v; }

#define HO_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define HO_MIN(a, b) ((a) < (b) ? (a) : (b))
#define HO_MAX(a, b) ((a) > (b) ? (a) : (b))

#endif
