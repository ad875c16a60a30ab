/* What every test needs around the code it tests: temp dirs, whole files,
 * shell commands whose output a test compares with, free loopback ports.
 * One home for these; the area fixtures (store, registry, sandbox, pack,
 * services) build on it and add only what is theirs. */
#ifndef KT_UTIL_H
#define KT_UTIL_H

#include <stdbool.h>
#include <stddef.h>

/* A fresh directory $TMPDIR/kiln-<tag>-XXXXXX (or under /tmp); caller frees
 * the string and removes the tree with kt_rmrf.  NULL when it cannot. */
char *kt_tmpdir(const char *tag);
/* rm -rf path (fd-based, never follows a symlink out of the tree); NULL is
 * nothing.  Errors are printed, not returned: a test cleaning up goes on. */
void kt_rmrf(const char *path);
/* kt_rmrf(path), then free(path). */
void kt_rmrf_free(char *path);
/* The whole file, NUL-terminated (caller frees); its length to *len when
 * len is not NULL.  NULL when unreadable. */
char *kt_read_file(const char *path, size_t *len);
/* Creates or truncates path with content, mode 0644; 0 or -1. */
int kt_write_file(const char *path, const char *content);
/* The same with the given mode (0: 0644). */
int kt_write_file_mode(const char *path, const char *content, unsigned mode);
/* True when path exists (lstat). */
bool kt_exists(const char *path);
/* Entries of a directory without . and ..; -1 when it cannot be read. */
int kt_count_dir(const char *path);
/* Runs a command with sh -c; its exit status, or -1 when it did not exit. */
int kt_sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Runs a command and returns its stdout (up to 1 MiB, caller frees); NULL
 * when it cannot run or exits non-zero.  trim: drop trailing newlines. */
char *kt_capture(bool trim, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* True when prog is on PATH. */
bool kt_have(const char *prog);
/* A TCP port on 127.0.0.1 that was free a moment ago; -1 on error. */
int kt_free_port(void);
/* Waits until 127.0.0.1:port accepts connections: 0, or -1 after timeout_ms. */
int kt_wait_port(int port, int timeout_ms);

#endif
