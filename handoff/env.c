/*
 * env.c — KEY=VALUE files: a base's base.env, a run directory's vm.env, a built guest's guest.env.
 * They are meant for the shell too (guest/build-*.sh write guest.env, tests source base.env), so
 * values are read the way the shell reads the simple ones and written single-quoted.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "handoff/handoff_int.h"

void handoff_env_free(struct env *e)
{
	for (int i = 0; i < e->n; i++) {
		free(e->k[i]);
		free(e->v[i]);
	}
	e->n = 0;
}

/* shell-like value: 'single', "double" (\" \\ \$ escapes), bare words; stops at an unquoted # */
static char *parse_value(const char *s)
{
	size_t n = strlen(s);
	char *out = malloc(n + 1), *o = out;
	if (!out)
		return NULL;
	while (*s && *s != '\n') {
		if (*s == '\'') {
			for (s++; *s && *s != '\''; s++)
				*o++ = *s;
			if (*s)
				s++;
		} else if (*s == '"') {
			for (s++; *s && *s != '"'; s++) {
				if (*s == '\\' && s[1] && strchr("\"\\$`", s[1]))
					s++;
				*o++ = *s;
			}
			if (*s)
				s++;
		} else if (*s == '\\' && s[1]) {
			*o++ = s[1];
			s += 2;
		} else if (*s == '#' && (o == out || o[-1] == ' ')) {
			break;
		} else {
			*o++ = *s++;
		}
	}
	while (o > out && (o[-1] == ' ' || o[-1] == '\t'))
		o--;
	*o = 0;
	return out;
}

int handoff_env_load(const char *path, struct env *e)
{
	char *text = NULL, *save = NULL;
	size_t len;
	memset(e, 0, sizeof(*e));
	int rc = ho_read_file(path, &text, &len, 1 << 20);
	if (rc) {
		ho_err("cannot read '%s': %s", path, ho_strerror(rc));
		return rc;
	}
	for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		while (*line == ' ' || *line == '\t')
			line++;
		char *eq = strchr(line, '=');
		if (*line == '#' || !eq || e->n == (int)HO_ARRAY_SIZE(e->k))
			continue;
		*eq = 0;
		e->k[e->n] = strdup(line);
		e->v[e->n] = parse_value(eq + 1);
		if (!e->k[e->n] || !e->v[e->n]) {
			free(text);
			handoff_env_free(e);
			return HO_ENOMEM;
		}
		e->n++;
	}
	free(text);
	return 0;
}

const char *handoff_env_get(const struct env *e, const char *k)
{
	for (int i = e->n - 1; i >= 0; i--)
		if (!strcmp(e->k[i], k))
			return e->v[i];
	return NULL;
}

const char *handoff_env_need(const struct env *e, const char *k, const char *file)
{
	const char *v = handoff_env_get(e, k);
	if (!v || !*v)
		ho_err("no %s in '%s'", k, file);
	return v && *v ? v : NULL;
}

/* append KEY='VALUE' (single-quoted for the shell) to a growing buffer */
void handoff_env_put(char **buf, size_t *len, const char *k, const char *fmt, ...)
{
	char *v = NULL;
	va_list ap;
	va_start(ap, fmt);
	if (vasprintf(&v, fmt, ap) < 0)
		v = NULL;
	va_end(ap);
	if (!v)
		return;
	size_t need = strlen(k) + 4 * strlen(v) + 8;
	char *nb = realloc(*buf, *len + need);
	if (!nb) {
		free(v);
		return;
	}
	*buf = nb;
	char *o = nb + *len;
	o += sprintf(o, "%s='", k);
	for (const char *s = v; *s; s++) {
		if (*s == '\'')
			o += sprintf(o, "'\\''");
		else
			*o++ = *s;
	}
	o += sprintf(o, "'\n");
	*len = (size_t)(o - nb);
	free(v);
}

