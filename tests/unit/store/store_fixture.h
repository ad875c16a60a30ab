/* Helpers shared by the store tests: temp dirs, files and synthetic images. */
#ifndef STORE_FIXTURE_H
#define STORE_FIXTURE_H

#include <stdbool.h>
#include <stddef.h>

#include "kt_util.h"
#include "psh_store.h"

/* A store opened in a fresh temp dir. */
typedef struct fx_env {
    char *dir;
    psh_store *s;
} fx_env;
/* 0, or -1 with the reason printed. */
int fx_env_open(fx_env *e);
/* Frees the store and removes the dir. */
void fx_env_close(fx_env *e);

/* Stores a tiny synthetic image (config + one raw "layer" blob + manifest)
 * whose config mentions tagline, and writes the manifest digest to out.
 * Does not tag it.  Returns 0 on success. */
int fx_fake_image(psh_store *s, const char *tagline, char *out_digest);

#endif
