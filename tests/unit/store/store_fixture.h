/* Helpers shared by the store tests: temp dirs, files and synthetic images. */
#ifndef STORE_FIXTURE_H
#define STORE_FIXTURE_H

#include <stdbool.h>
#include <stddef.h>

#include "psh_store.h"

/* A fresh directory under $TMPDIR (or /tmp); caller frees and removes it. */
char *fx_tmpdir(void);
/* rm -rf. */
void fx_rmrf(const char *path);
/* Whole file into a NUL-terminated buffer (caller frees); NULL on error. */
char *fx_read_file(const char *path, size_t *len);
/* Creates or truncates path with the given content; 0 on success. */
int fx_write_file(const char *path, const char *content);
/* Number of entries (without . and ..) in a directory; -1 on error. */
int fx_count_dir(const char *path);
/* Runs a shell command; returns its exit status (or -1). */
int fx_sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* True when the program is on PATH. */
bool fx_have(const char *prog);

/* Stores a tiny synthetic image (config + one raw "layer" blob + manifest)
 * whose config mentions tagline, and writes the manifest digest to out.
 * Does not tag it.  Returns 0 on success. */
int fx_fake_image(psh_store *s, const char *tagline, char *out_digest);

#endif
