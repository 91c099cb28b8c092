/*
 * hash.c — the hashes handoff trusts: SHA-256 and HMAC-SHA-256 from OpenSSL for identities and
 * authentication, XXH3 from libxxhash for fast checksums and dedup fingerprints.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <openssl/crypto.h>
#include <xxhash.h>
#include "common/common.h"

struct ho_sha256 { EVP_MD_CTX *ctx; };

struct ho_sha256 *ho_sha256_new(void)
{
	struct ho_sha256 *h = calloc(1, sizeof(*h));
	if (!h)
		return NULL;
	h->ctx = EVP_MD_CTX_new();
	if (!h->ctx || EVP_DigestInit_ex(h->ctx, EVP_sha256(), NULL) != 1) {
		EVP_MD_CTX_free(h->ctx);
		free(h);
		return NULL;
	}
	return h;
}

void ho_sha256_update(struct ho_sha256 *h, const void *data, size_t len)
{
	EVP_DigestUpdate(h->ctx, data, len);
}

void ho_sha256_final(struct ho_sha256 *h, uint8_t out[HO_SHA256_LEN])
{
	unsigned int n = HO_SHA256_LEN;
	EVP_DigestFinal_ex(h->ctx, out, &n);
	EVP_DigestInit_ex(h->ctx, EVP_sha256(), NULL);
}

void ho_sha256_free(struct ho_sha256 *h)
{
	if (!h)
		return;
	EVP_MD_CTX_free(h->ctx);
	free(h);
}

void ho_sha256(const void *data, size_t len, uint8_t out[HO_SHA256_LEN])
{
	unsigned int n = HO_SHA256_LEN;
	EVP_Digest(data, len, out, &n, EVP_sha256(), NULL);
}

int ho_sha256_file(const char *path, uint64_t size, uint8_t out[HO_SHA256_LEN])
{
	enum { BUF = 1 << 20 };
	struct ho_sha256 *h = ho_sha256_new();
	uint8_t *buf = calloc(1, BUF);
	int fd = -1, rc = 0;

	if (!h || !buf) {
		rc = HO_ENOMEM;
		goto out;
	}
	if (path) {
		fd = open(path, O_RDONLY | O_CLOEXEC);
		if (fd < 0) {
			rc = ho_from_errno(errno);
			goto out;
		}
		posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
		for (;;) {
			ssize_t n = ho_read_full(fd, buf, BUF);
			if (n < 0) {
				rc = (int)n;
				goto out;
			}
			if (n == 0)
				break;
			ho_sha256_update(h, buf, (size_t)n);
		}
	} else {
		for (uint64_t left = size; left; ) {
			size_t n = left < BUF ? (size_t)left : BUF;
			ho_sha256_update(h, buf, n);
			left -= n;
		}
	}
	ho_sha256_final(h, out);
out:
	if (fd >= 0)
		close(fd);
	free(buf);
	ho_sha256_free(h);
	return rc;
}

struct ho_hmac { EVP_MAC *mac; EVP_MAC_CTX *ctx; uint8_t *key; size_t key_len; };

static int hmac_init(struct ho_hmac *h)
{
	OSSL_PARAM params[] = {
		OSSL_PARAM_construct_utf8_string("digest", (char *)"SHA256", 0),
		OSSL_PARAM_construct_end(),
	};
	return EVP_MAC_init(h->ctx, h->key, h->key_len, params) == 1 ? 0 : HO_EIO;
}

struct ho_hmac *ho_hmac_new(const void *key, size_t key_len)
{
	struct ho_hmac *h = calloc(1, sizeof(*h));
	if (!h)
		return NULL;
	h->key = malloc(key_len ? key_len : 1);
	h->mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
	h->ctx = h->mac ? EVP_MAC_CTX_new(h->mac) : NULL;
	if (!h->key || !h->ctx) {
		ho_hmac_free(h);
		return NULL;
	}
	memcpy(h->key, key, key_len);
	h->key_len = key_len;
	if (hmac_init(h)) {
		ho_hmac_free(h);
		return NULL;
	}
	return h;
}

void ho_hmac_update(struct ho_hmac *h, const void *data, size_t len)
{
	EVP_MAC_update(h->ctx, data, len);
}

void ho_hmac_final(struct ho_hmac *h, uint8_t out[HO_SHA256_LEN])
{
	size_t n = 0;
	EVP_MAC_final(h->ctx, out, &n, HO_SHA256_LEN);
	hmac_init(h);
}

void ho_hmac_free(struct ho_hmac *h)
{
	if (!h)
		return;
	EVP_MAC_CTX_free(h->ctx);
	EVP_MAC_free(h->mac);
	if (h->key) {
		OPENSSL_cleanse(h->key, h->key_len);
		free(h->key);
	}
	free(h);
}

bool ho_mem_equal_ct(const void *a, const void *b, size_t len)
{
	return CRYPTO_memcmp(a, b, len) == 0;
}

uint64_t ho_xxh64(const void *data, size_t len)
{
	return XXH3_64bits(data, len);
}

void ho_xxh128(const void *data, size_t len, uint8_t out[16])
{
	XXH128_hash_t h = XXH3_128bits(data, len);
	ho_put_le64(out, h.low64);
	ho_put_le64(out + 8, h.high64);
}

void ho_hex(const uint8_t *in, size_t len, char *out)
{
	static const char digits[] = "0123456789abcdef";
	for (size_t i = 0; i < len; i++) {
		out[2 * i] = digits[in[i] >> 4];
		out[2 * i + 1] = digits[in[i] & 15];
	}
	out[2 * len] = 0;
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9') return c - '0';
	if (c >= 'a' && c <= 'f') return c - 'a' + 10;
	if (c >= 'A' && c <= 'F') return c - 'A' + 10;
	return -1;
}

int ho_unhex(const char *in, uint8_t *out, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		int hi = hexval(in[2 * i]), lo = hi < 0 ? -1 : hexval(in[2 * i + 1]);
		if (hi < 0 || lo < 0)
			return HO_EINVAL;
		out[i] = (uint8_t)(hi << 4 | lo);
	}
	return in[2 * len] == 0 ? 0 : HO_EINVAL;
}

int ho_random(void *buf, size_t len)
{
	return RAND_bytes(buf, (int)len) == 1 ? 0 : HO_EIO;
}

bool ho_is_zero(const void *buf, size_t len)
{
	const uint8_t *p = buf;
	/* check the first 16 bytes, then compare the buffer with itself shifted: memcmp is vectorised */
	size_t head = len < 16 ? len : 16;
	for (size_t i = 0; i < head; i++)
		if (p[i])
			return false;
	return len <= 16 || memcmp(p, p + 16, len - 16) == 0;
}
