/*
 * vm_internal.h — what the vm module's files share but nobody else should call: logging, the
 * clock, and the QMP connection (qmp.c) that vm.c drives. It exists to keep vm.h small.
 */
#ifndef HANDOFF_VM_INTERNAL_H
#define HANDOFF_VM_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

void vm_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void vm_debug(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
bool vm_debug_on(void);
long long vm_mono_ms(void);
void vm_sleep_ms(int ms);
/* Milliseconds left until deadline (>= 0). */
int vm_remaining_ms(long long deadline);
/* Log the last lines of a file (QEMU's own log) to stderr. */
void vm_log_tail(const char *path, int lines);

/* One QMP connection: greeting and capabilities done by vm_qmp_connect. */
struct vm_qmp;
/* One connect attempt (VM_ECONN if nobody listens), then greeting + qmp_capabilities. */
int vm_qmp_connect(const char *path, int timeout_ms, struct vm_qmp **out);
void vm_qmp_close(struct vm_qmp *q);
int vm_qmp_exec(struct vm_qmp *q, const char *command, const char *args_json, int timeout_ms,
		char **ret);
int vm_qmp_wait_event(struct vm_qmp *q, const char *event, const char *key, const char *value,
		      int timeout_ms, char **event_json);

/* A connected unix stream socket, or negative enum vm_err (VM_ECONN if refused or missing). */
int vm_unix_connect(const char *path);

/* Fork and exec argv (PATH search) with stdin /dev/null and stdout/stderr to log_fd, every other
 * fd closed. detach: own session; else SIGKILL when the calling thread exits. Child pid or a
 * negative enum vm_err (VM_ESPAWN when exec failed). */
pid_t vm_spawn(char *const *argv, int log_fd, bool detach);
/* $HANDOFF_QEMU or "qemu-system-x86_64". */
const char *vm_qemu_binary(void);

#endif
