/* Test helpers: temp dirs, free ports, and kiln-pusher / kiln-builder child
 * processes started on sockets inside a temp data dir. */
#ifndef SVC_HARNESS_H
#define SVC_HARNESS_H

#include <stdbool.h>
#include <sys/types.h>

#include "kt_util.h"

typedef struct th_proc {
    pid_t pid;
    char log[512];
} th_proc;

/* Starts argv[0] with argv, stderr to <dir>/<name>.log.  Returns 0 or -1. */
int th_spawn(th_proc *p, const char *dir, const char *name, char *const argv[]);
/* Waits until url answers Status (or timeout_ms passes); 0 when it does. */
int th_wait_ready(const char *url, int timeout_ms);
/* SIGTERM and wait up to timeout_ms; returns exit status (or -1 on timeout,
 * after which the process is SIGKILLed). */
int th_stop(th_proc *p, int timeout_ms, int *elapsed_ms);
/* Path of a built binary, from the environment variable name (set by ctest). */
const char *th_bin(const char *env);

#endif
