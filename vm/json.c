/*
 * json.c — a minimal, bounded JSON scanner for QMP messages (see vm_json.h). It exists because
 * the vm module needs only to frame messages, pick a few values out of replies and quote
 * strings; a validating skip-over-value routine is enough for all of that, with no allocation.
 */
#include "vm/vm_json.h"
#include "vm/vm.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NEED_MORE 1 /* internal: ran out of input before the value ended */

static const char *skip_ws(const char *p, const char *end)
{
	while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
		p++;
	return p;
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* p at the opening quote. */
static int skip_string(const char *p, const char *end, const char **after)
{
	p++;
	while (p < end) {
		unsigned char c = (unsigned char)*p;
		if (c == '"') {
			*after = p + 1;
			return 0;
		}
		if (c < 0x20)
			return VM_EPROTO;
		if (c == '\\') {
			if (p + 1 >= end)
				return NEED_MORE;
			switch (p[1]) {
			case '"': case '\\': case '/': case 'b': case 'f': case 'n': case 'r': case 't':
				p += 2;
				break;
			case 'u':
				for (int i = 2; i < 6; i++) {
					if (p + i >= end)
						return NEED_MORE;
					if (hexval(p[i]) < 0)
						return VM_EPROTO;
				}
				p += 6;
				break;
			default:
				return VM_EPROTO;
			}
			continue;
		}
		p++;
	}
	return NEED_MORE;
}

static int is_digit(char c) { return c >= '0' && c <= '9'; }

/* JSON number grammar. At end of input: complete if `final`, else NEED_MORE. */
static int skip_number(const char *p, const char *end, bool final, const char **after)
{
#define AT_END() do { if (p >= end) return final ? 0 : NEED_MORE; } while (0)
	if (*p == '-')
		p++;
	if (p >= end)
		return final ? VM_EPROTO : NEED_MORE;
	if (*p == '0') {
		p++;
	} else if (is_digit(*p)) {
		while (p < end && is_digit(*p))
			p++;
	} else {
		return VM_EPROTO;
	}
	*after = p;
	AT_END();
	if (*p == '.') {
		p++;
		if (p >= end)
			return final ? VM_EPROTO : NEED_MORE;
		if (!is_digit(*p))
			return VM_EPROTO;
		while (p < end && is_digit(*p))
			p++;
		*after = p;
		AT_END();
	}
	if (*p == 'e' || *p == 'E') {
		p++;
		if (p < end && (*p == '+' || *p == '-'))
			p++;
		if (p >= end)
			return final ? VM_EPROTO : NEED_MORE;
		if (!is_digit(*p))
			return VM_EPROTO;
		while (p < end && is_digit(*p))
			p++;
		*after = p;
		AT_END();
	}
	return 0;
#undef AT_END
}

static int skip_literal(const char *p, const char *end, const char *lit, const char **after)
{
	size_t n = strlen(lit);
	for (size_t i = 0; i < n; i++) {
		if (p + i >= end)
			return NEED_MORE;
		if (p[i] != lit[i])
			return VM_EPROTO;
	}
	*after = p + n;
	return 0;
}

/* p at the first byte of a value (no leading whitespace). */
static int skip_value(const char *p, const char *end, int depth, bool final, const char **after)
{
	int rc;
	if (p >= end)
		return NEED_MORE;
	if (depth > VMJ_MAX_DEPTH)
		return VM_EPROTO;
	switch (*p) {
	case '{':
	case '[': {
		char close = *p == '{' ? '}' : ']';
		bool obj = *p == '{';
		p = skip_ws(p + 1, end);
		if (p >= end)
			return NEED_MORE;
		if (*p == close) {
			*after = p + 1;
			return 0;
		}
		for (;;) {
			if (obj) {
				if (*p != '"')
					return VM_EPROTO;
				if ((rc = skip_string(p, end, &p)))
					return rc;
				p = skip_ws(p, end);
				if (p >= end)
					return NEED_MORE;
				if (*p != ':')
					return VM_EPROTO;
				p = skip_ws(p + 1, end);
			}
			/* a value inside a container is never at the end of a complete text */
			if ((rc = skip_value(p, end, depth + 1, false, &p)))
				return rc;
			p = skip_ws(p, end);
			if (p >= end)
				return NEED_MORE;
			if (*p == close) {
				*after = p + 1;
				return 0;
			}
			if (*p != ',')
				return VM_EPROTO;
			p = skip_ws(p + 1, end);
			if (p >= end)
				return NEED_MORE;
		}
	}
	case '"':
		return skip_string(p, end, after);
	case 't':
		return skip_literal(p, end, "true", after);
	case 'f':
		return skip_literal(p, end, "false", after);
	case 'n':
		return skip_literal(p, end, "null", after);
	default:
		if (*p == '-' || is_digit(*p))
			return skip_number(p, end, final, after);
		return VM_EPROTO;
	}
}

long vmj_message_len(const char *buf, size_t len)
{
	const char *end = buf + len, *p = skip_ws(buf, end), *after;
	int rc;
	if (p >= end)
		return 0;
	if (*p != '{')
		return VM_EPROTO;
	rc = skip_value(p, end, 0, false, &after);
	if (rc == NEED_MORE)
		return 0;
	if (rc < 0)
		return rc;
	return (long)(after - buf);
}

int vmj_validate(const char *text, size_t len)
{
	const char *end = text + len, *p = skip_ws(text, end), *after;
	int rc = skip_value(p, end, 0, true, &after);
	if (rc)
		return VM_EPROTO;
	return skip_ws(after, end) == end ? 0 : VM_EPROTO;
}

enum vmj_type vmj_typeof(const char *val, size_t len)
{
	const char *p = skip_ws(val, val + len);
	if (p >= val + len)
		return VMJ_NONE;
	switch (*p) {
	case '{': return VMJ_OBJECT;
	case '[': return VMJ_ARRAY;
	case '"': return VMJ_STRING;
	case 't': return VMJ_TRUE;
	case 'f': return VMJ_FALSE;
	case 'n': return VMJ_NULL;
	default: return (*p == '-' || is_digit(*p)) ? VMJ_NUMBER : VMJ_NONE;
	}
}

static void put_utf8(uint32_t cp, char *out, size_t outsz, size_t *o, bool *trunc)
{
	char tmp[4];
	size_t n;
	if (cp < 0x80) {
		tmp[0] = (char)cp; n = 1;
	} else if (cp < 0x800) {
		tmp[0] = (char)(0xc0 | cp >> 6); tmp[1] = (char)(0x80 | (cp & 0x3f)); n = 2;
	} else if (cp < 0x10000) {
		tmp[0] = (char)(0xe0 | cp >> 12); tmp[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
		tmp[2] = (char)(0x80 | (cp & 0x3f)); n = 3;
	} else {
		tmp[0] = (char)(0xf0 | cp >> 18); tmp[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
		tmp[2] = (char)(0x80 | ((cp >> 6) & 0x3f)); tmp[3] = (char)(0x80 | (cp & 0x3f)); n = 4;
	}
	if (*o + n >= outsz) {
		*trunc = true;
		return;
	}
	memcpy(out + *o, tmp, n);
	*o += n;
}

static uint32_t hex4(const char *p)
{
	return (uint32_t)(hexval(p[0]) << 12 | hexval(p[1]) << 8 | hexval(p[2]) << 4 | hexval(p[3]));
}

int vmj_string(const char *val, size_t vlen, char *out, size_t outsz)
{
	const char *end = val + vlen, *p = skip_ws(val, end), *after;
	size_t o = 0;
	bool trunc = false;
	if (!out || outsz == 0)
		return VM_EINVAL;
	out[0] = '\0';
	if (p >= end || *p != '"' || skip_string(p, end, &after) != 0)
		return VM_EPROTO;
	for (p++; p < after - 1 && !trunc;) {
		if (*p != '\\') {
			if (o + 1 >= outsz) {
				trunc = true;
				break;
			}
			out[o++] = *p++;
			continue;
		}
		char e = p[1];
		p += 2;
		uint32_t cp;
		switch (e) {
		case 'b': cp = '\b'; break;
		case 'f': cp = '\f'; break;
		case 'n': cp = '\n'; break;
		case 'r': cp = '\r'; break;
		case 't': cp = '\t'; break;
		case 'u':
			cp = hex4(p);
			p += 4;
			if (cp >= 0xd800 && cp <= 0xdbff) {
				if (p + 6 <= after - 1 && p[0] == '\\' && p[1] == 'u') {
					uint32_t lo = hex4(p + 2);
					if (lo >= 0xdc00 && lo <= 0xdfff) {
						cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
						p += 6;
					} else {
						cp = 0xfffd;
					}
				} else {
					cp = 0xfffd;
				}
			} else if (cp >= 0xdc00 && cp <= 0xdfff) {
				cp = 0xfffd;
			}
			if (cp == 0)
				return VM_EPROTO; /* cannot be represented in a C string */
			break;
		default: cp = (unsigned char)e; break; /* " \ / */
		}
		put_utf8(cp, out, outsz, &o, &trunc);
	}
	out[o] = '\0';
	return trunc ? VM_ELIMIT : 0;
}

int vmj_int(const char *val, size_t vlen, long long *out)
{
	const char *end = val + vlen, *p = skip_ws(val, end), *after;
	char buf[32];
	if (p >= end || (*p != '-' && !is_digit(*p)))
		return VM_EPROTO;
	if (skip_number(p, end, true, &after) != 0)
		return VM_EPROTO;
	size_t n = (size_t)(after - p);
	if (n >= sizeof(buf) || memchr(p, '.', n) || memchr(p, 'e', n) || memchr(p, 'E', n))
		return VM_EPROTO;
	memcpy(buf, p, n);
	buf[n] = '\0';
	errno = 0;
	char *e;
	long long v = strtoll(buf, &e, 10);
	if (errno || *e)
		return VM_EPROTO;
	*out = v;
	return 0;
}

int vmj_bool(const char *val, size_t vlen, bool *out)
{
	switch (vmj_typeof(val, vlen)) {
	case VMJ_TRUE: *out = true; return 0;
	case VMJ_FALSE: *out = false; return 0;
	default: return VM_EPROTO;
	}
}

/* Does the string token at p (opening quote, known valid, ending before `after`) decode to key? */
static bool key_equals(const char *p, const char *after, const char *key, size_t keylen)
{
	size_t rawlen = (size_t)(after - p) - 2;
	if (!memchr(p + 1, '\\', rawlen))
		return rawlen == keylen && memcmp(p + 1, key, keylen) == 0;
	char buf[256];
	if (vmj_string(p, (size_t)(after - p), buf, sizeof(buf)) != 0)
		return false;
	return strlen(buf) == keylen && memcmp(buf, key, keylen) == 0;
}

int vmj_get(const char *text, size_t len, const char *path, const char **val, size_t *vlen)
{
	const char *end = text + len, *p = skip_ws(text, end), *after;
	int rc;
	if (!path)
		path = "";
	for (;;) {
		if (*path == '\0') {
			rc = skip_value(p, end, 0, true, &after);
			if (rc)
				return VM_EPROTO;
			*val = p;
			*vlen = (size_t)(after - p);
			return 0;
		}
		const char *dot = strchr(path, '.');
		size_t keylen = dot ? (size_t)(dot - path) : strlen(path);
		if (p >= end)
			return VM_EPROTO;
		if (*p != '{') {
			/* a scalar or array where an object was wanted */
			rc = skip_value(p, end, 0, true, &after);
			return rc ? VM_EPROTO : VM_ENOENT;
		}
		p = skip_ws(p + 1, end);
		if (p < end && *p == '}')
			return VM_ENOENT;
		bool found = false;
		while (!found) {
			if (p >= end || *p != '"')
				return VM_EPROTO;
			if (skip_string(p, end, &after))
				return VM_EPROTO;
			bool match = key_equals(p, after, path, keylen);
			p = skip_ws(after, end);
			if (p >= end || *p != ':')
				return VM_EPROTO;
			p = skip_ws(p + 1, end);
			if (match) {
				found = true;
				break;
			}
			if (skip_value(p, end, 1, false, &after))
				return VM_EPROTO;
			p = skip_ws(after, end);
			if (p >= end)
				return VM_EPROTO;
			if (*p == '}')
				return VM_ENOENT;
			if (*p != ',')
				return VM_EPROTO;
			p = skip_ws(p + 1, end);
		}
		path = dot ? dot + 1 : path + keylen;
	}
}

int vmj_get_string(const char *text, size_t len, const char *path, char *out, size_t outsz)
{
	const char *v;
	size_t vl;
	int rc = vmj_get(text, len, path, &v, &vl);
	if (rc)
		return rc;
	return vmj_string(v, vl, out, outsz);
}

int vmj_get_int(const char *text, size_t len, const char *path, long long *out)
{
	const char *v;
	size_t vl;
	int rc = vmj_get(text, len, path, &v, &vl);
	if (rc)
		return rc;
	return vmj_int(v, vl, out);
}

int vmj_get_bool(const char *text, size_t len, const char *path, bool *out)
{
	const char *v;
	size_t vl;
	int rc = vmj_get(text, len, path, &v, &vl);
	if (rc)
		return rc;
	return vmj_bool(v, vl, out);
}

char *vmj_quote(const char *s)
{
	size_t n = 3;
	for (const char *p = s; *p; p++)
		n += ((unsigned char)*p < 0x20) ? 6 : (*p == '"' || *p == '\\') ? 2 : 1;
	char *out = malloc(n), *o = out;
	if (!out)
		return NULL;
	*o++ = '"';
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		switch (*p) {
		case '"': *o++ = '\\'; *o++ = '"'; break;
		case '\\': *o++ = '\\'; *o++ = '\\'; break;
		case '\n': *o++ = '\\'; *o++ = 'n'; break;
		case '\r': *o++ = '\\'; *o++ = 'r'; break;
		case '\t': *o++ = '\\'; *o++ = 't'; break;
		default:
			if (*p < 0x20) {
				snprintf(o, 7, "\\u%04x", *p);
				o += 6;
			} else {
				*o++ = (char)*p;
			}
		}
	}
	*o++ = '"';
	*o = '\0';
	return out;
}
