/* .dockerignore matching and COPY/ADD source globs.
 *
 * .dockerignore follows Docker's rules: one pattern per line, lines starting
 * with '#' are comments, patterns are cleaned (leading '/' and "./" removed),
 * '*' and '?' never match '/', "**" matches any number of directories, and a
 * pattern starting with '!' re-includes what earlier patterns excluded; the
 * last matching pattern wins, and a pattern that matches a parent directory
 * matches everything below it.  Globs use Go's filepath.Match semantics. */
#ifndef KILN_IGNORE_H
#define KILN_IGNORE_H

#include <stdbool.h>
#include <stddef.h>

#include "error.h"

typedef struct kiln_ignore kiln_ignore;

/* Parses the text of a .dockerignore file (len bytes).  On success *out is
 * freed by the caller with kiln_ignore_free().  A malformed pattern (e.g. an
 * unclosed '[') returns KILN_EINVAL naming its line. */
int kiln_ignore_parse(kiln_ignore **out, const char *text, size_t len, kiln_error **err);

/* Frees the matcher.  Safe on NULL. */
void kiln_ignore_free(kiln_ignore *ig);

/* True when path (relative to the context root, '/'-separated; "./" and a
 * leading '/' are tolerated) is excluded from the build context. */
bool kiln_ignore_match(const kiln_ignore *ig, const char *path);

/* Number of patterns and the i-th one as cleaned (exceptions keep their '!'). */
size_t kiln_ignore_count(const kiln_ignore *ig);
const char *kiln_ignore_pattern(const kiln_ignore *ig, size_t i);

/* filepath.Match: sets *matched when name matches pattern entirely ('*' and
 * '?' do not cross '/', "[a-z]" / "[^a]" classes, '\\' escapes).  KILN_EINVAL
 * for a malformed pattern. */
int kiln_glob_match(bool *matched, const char *pattern, const char *name, kiln_error **err);

/* True when pattern contains glob metacharacters (*, ?, [, \). */
bool kiln_glob_has_meta(const char *pattern);

#endif
