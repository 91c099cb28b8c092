/*
 * tap.h — a tiny TAP producer for the C unit tests: each check prints "ok N - name" or
 * "not ok N - name" with the values on failure; done_testing() prints the plan and returns the
 * exit status (0 only if every check passed).
 */
#ifndef HANDOFF_TAP_H
#define HANDOFF_TAP_H

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int tap_n, tap_failed;

static inline void plan(int n) { printf("1..%d\n", n); }

static inline int __attribute__((format(printf, 2, 3))) ok(int cond, const char *fmt, ...)
{
	va_list ap;
	tap_n++;
	printf("%sok %d - ", cond ? "" : "not ", tap_n);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
	if (!cond)
		tap_failed++;
	fflush(stdout);
	return cond;
}

#define is_int(got, want, name) do { \
	long long g_ = (long long)(got), w_ = (long long)(want); \
	if (!ok(g_ == w_, "%s", name)) \
		printf("#   got %lld, want %lld (%s:%d)\n", g_, w_, __FILE__, __LINE__); \
} while (0)

#define is_str(got, want, name) do { \
	const char *g_ = (got), *w_ = (want); \
	if (!ok(g_ && w_ && strcmp(g_, w_) == 0, "%s", name)) \
		printf("#   got '%s', want '%s' (%s:%d)\n", g_ ? g_ : "(null)", w_ ? w_ : "(null)", __FILE__, __LINE__); \
} while (0)

#define is_mem(got, want, len, name) do { \
	if (!ok(memcmp((got), (want), (len)) == 0, "%s", name)) \
		printf("#   memory differs (%s:%d)\n", __FILE__, __LINE__); \
} while (0)

static inline void diag(const char *fmt, ...)
{
	va_list ap;
	printf("# ");
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
}

static inline int done_testing(void)
{
	printf("1..%d\n", tap_n);
	if (tap_failed)
		printf("# %d of %d checks failed\n", tap_failed, tap_n);
	return tap_failed ? 1 : 0;
}

#endif
