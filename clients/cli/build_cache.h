/* kiln build --cache-to / --cache-from (build_cache.c). */
#ifndef CLI_BUILD_CACHE_H
#define CLI_BUILD_CACHE_H

#include <stdbool.h>
#include <stddef.h>

#include "cli.h"

#define CLI_BUILD_CACHE_FROM_MAX 16

typedef struct cli_build_cache_entry {
    char ref[512];
    char mode[8]; /* "", "min", "max" */
} cli_build_cache_entry;

/* The caches of one build; the request borrows from it (no heap). */
typedef struct cli_build_cache {
    bool has_to;
    cli_build_cache_entry to;
    cli_build_cache_entry from[CLI_BUILD_CACHE_FROM_MAX];
    size_t n_from;
    Kiln__V1__CacheSpec to_spec, from_spec[CLI_BUILD_CACHE_FROM_MAX];
    Kiln__V1__CacheSpec *from_ptrs[CLI_BUILD_CACHE_FROM_MAX];
} cli_build_cache;

/* Adds one --cache-to (to) or --cache-from value: type=registry,ref=REF
 * [,mode=min|max], or a bare REF for --cache-from.  CLI_EXIT_USAGE after a
 * message when malformed. */
int cli_build_cache_add(cli_build_cache *c, bool to, const char *arg);
/* Writes the canonical registry hosts of the caches into hosts (at most cap);
 * returns how many, for credential resolution. */
size_t cli_build_cache_hosts(const cli_build_cache *c, char (*hosts)[512], size_t cap);
/* Points br's cache fields into c. */
void cli_build_cache_apply(cli_build_cache *c, Kiln__V1__BuildRequest *br);

#endif
