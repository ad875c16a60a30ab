/* Docker-compatible variable expansion of one word, for callers outside the
 * Dockerfile parser (the build engine re-expanding ONBUILD triggers or
 * instructions against a pulled base image's environment). */
#ifndef BLD_EXPAND_H
#define BLD_EXPAND_H

#include <stddef.h>

#include "error.h"

/* Expands word as Docker does for ADD/COPY/ENV/... arguments: quotes are
 * removed, the escape character (escape, 0 for '\\') makes the next character
 * literal, and $V, ${V}, ${V:-w}, ${V-w}, ${V:+w}, ${V+w}, ${V:?w}, ${V?w} are
 * replaced using env ("K=V" strings; the last entry for a name wins).  On
 * success *out is a new string the caller frees with free().  Syntax errors
 * return KILN_EINVAL. */
int bld_expand_word(char **out, const char *word, const char *const *env, size_t n_env, char escape,
                    kiln_error **err);

#endif
