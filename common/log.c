/*
 * log.c — one logger with syslog levels, to stderr (or syslog for a detached daemon), never to
 * stdout, because stdout carries handoff streams.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <pthread.h>
#include "common/common.h"

static const char *log_prog = "handoff";
static int log_level = LOG_NOTICE;
static bool log_syslog;
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;

void ho_log_init(const char *prog)
{
	const char *slash = strrchr(prog, '/');
	log_prog = slash ? slash + 1 : prog;
}

void ho_log_set_level(int level) { log_level = level; }
int ho_log_get_level(void) { return log_level; }

void ho_log_use_syslog(bool on)
{
	log_syslog = on;
	if (on)
		openlog(log_prog, LOG_PID, LOG_DAEMON);
}

static const char *level_name(int level)
{
	switch (level) {
	case LOG_EMERG: case LOG_ALERT: case LOG_CRIT: case LOG_ERR: return "error: ";
	case LOG_WARNING: return "warning: ";
	case LOG_INFO: return "info: ";
	case LOG_DEBUG: return "debug: ";
	default: return "";
	}
}

void ho_log(int level, const char *fmt, ...)
{
	char msg[2048];
	va_list ap;

	if (level > log_level)
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (log_syslog) {
		syslog(level, "%s", msg);
		return;
	}
	pthread_mutex_lock(&log_lock);
	fprintf(stderr, "%s: %s%s\n", log_prog, level_name(level), msg);
	pthread_mutex_unlock(&log_lock);
}
