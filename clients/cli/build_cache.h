/* kiln build --cache-to / --cache-from (build_cache.c). */
#ifndef CLI_BUILD_CACHE_H
#define CLI_BUILD_CACHE_H

#include <stdbool.h>
#include <stddef.h>

#include "cli.h"

#define CLI_BUILD_CACHE_FROM_MAX 16

typedef struct cli_build_cache_entry {
    char ref[512];  /* registry ref; for type=local the store tag it goes through */
    char mode[8];   /* "", "min", "max" */
    char dir[4096]; /* type=local: dest= (--cache-to) or src= (--cache-from); "" registry */
    bool in_store;  /* type=local and its tag is (or will be) in the pusher's store */
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
/* Before the build: streams each type=local --cache-from directory (an OCI
 * layout) into the pusher's store under a temporary tag (a directory that
 * is missing or cannot be imported is a warning: the build goes on without
 * it).  CLI exit code. */
int cli_build_cache_prepare(cli_ctx *ctx, cli_build_cache *c);
/* Points br's cache fields into c. */
void cli_build_cache_apply(cli_build_cache *c, Kiln__V1__BuildRequest *br);
/* After the build (build_rc its exit code): a type=local --cache-to is
 * streamed out of the pusher's store into its directory (replacing what was
 * there); the temporary tags are removed.  Returns build_rc, or the export's
 * failure. */
int cli_build_cache_finish(cli_ctx *ctx, cli_build_cache *c, int build_rc);

#endif
