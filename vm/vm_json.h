/*
 * vm_json.h — the few JSON operations the QMP client needs, and no more: find where one message
 * ends in a byte stream, look up a value by a dotted path of object keys, read it as a string,
 * integer or boolean, and quote a string for a command. It exists so the vm module talks QMP
 * without a JSON library; it is separate from vm.h so the unit tests can reach it.
 *
 * Values are never copied: a lookup returns a pointer and length into the caller's text. All
 * functions are bounded by an explicit length (text need not be NUL-terminated), reject malformed
 * input with VM_EPROTO, and never recurse deeper than VMJ_MAX_DEPTH.
 */
#ifndef HANDOFF_VM_JSON_H
#define HANDOFF_VM_JSON_H

#include <stdbool.h>
#include <stddef.h>

#define VMJ_MAX_DEPTH 64

enum vmj_type { VMJ_NONE, VMJ_OBJECT, VMJ_ARRAY, VMJ_STRING, VMJ_NUMBER, VMJ_TRUE, VMJ_FALSE, VMJ_NULL };

/* Length of the first complete JSON object in buf[0..len) counting leading whitespace: returns
 * that length (> 0), 0 if more bytes are needed, or VM_EPROTO if the bytes cannot start or form
 * an object. */
long vmj_message_len(const char *buf, size_t len);

/* Check that text[0..len) is exactly one JSON value (whitespace around allowed). 0 or VM_EPROTO. */
int vmj_validate(const char *text, size_t len);

/* The type of the value that starts at val (after whitespace). */
enum vmj_type vmj_typeof(const char *val, size_t len);

/* Find the value at a dotted path of object keys ("return.status", "data.status"; "" is the
 * whole value) in text[0..len). On success 0 and *val and *vlen give the value's bytes; VM_ENOENT
 * when a key is missing or a non-object is on the way; VM_EPROTO for malformed text. Keys with
 * dots cannot be addressed (QMP has none on the paths we use). */
int vmj_get(const char *text, size_t len, const char *path, const char **val, size_t *vlen);

/* Decode the string value at val into out (NUL-terminated, UTF-8, \uXXXX and surrogate pairs
 * decoded). 0, VM_EPROTO if val is not a string, VM_ELIMIT if out is too small (truncated). */
int vmj_string(const char *val, size_t vlen, char *out, size_t outsz);

/* Integer value (rejects fractions/exponents and out-of-range). 0 or VM_EPROTO. */
int vmj_int(const char *val, size_t vlen, long long *out);

/* Boolean value. 0 or VM_EPROTO. */
int vmj_bool(const char *val, size_t vlen, bool *out);

/* Shortcuts: the value at path as a string / integer / boolean (VM_ENOENT, VM_EPROTO...). */
int vmj_get_string(const char *text, size_t len, const char *path, char *out, size_t outsz);
int vmj_get_int(const char *text, size_t len, const char *path, long long *out);
int vmj_get_bool(const char *text, size_t len, const char *path, bool *out);

/* s as a JSON string literal with quotes, malloc'd; NULL on ENOMEM. Bytes >= 0x80 pass through
 * (callers pass UTF-8); control characters are escaped. */
char *vmj_quote(const char *s);

#endif
