/* Streamed build contexts on kiln-builder.
 *
 * A client that does not share the builder's filesystem sends its context as
 * a tar cut into content-defined chunks (common/chunker.h).  Chunks are stored
 * by digest and kept across builds, so a changed context costs only the
 * chunks around the change; a context is unpacked once per tar digest and
 * reused while it stays.
 *
 *   $DATA/contexts/chunks/                the chunks (common/chunkstore.h)
 *   $DATA/contexts/<hex>/                 an unpacked context (a build holds a shared flock)
 *   $DATA/contexts/<hex>.tmp-XXXXXX/      one being unpacked (flocked)
 *
 * Unpacking reads the chunks in order, checks each against its digest and the
 * whole stream against the context digest, and accepts only regular files,
 * directories and symlinks with relative names free of "..": nothing is ever
 * written outside the context's own directory. */
#ifndef BLD_CONTEXT_H
#define BLD_CONTEXT_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "chunkstore.h"
#include "error.h"

/* Bounds on one context. */
#define BLD_CTX_MAX_CHUNKS  65536
#define BLD_CTX_MAX_ENTRIES 1000000

typedef struct bld_contexts bld_contexts;

/* One chunk of a context tar: the chunk store's reference. */
typedef kiln_chunk_ref bld_ctx_chunk;

/* A context unpacked and held for one build. */
typedef struct bld_ctx_hold {
    char *dir;      /* absolute path of the unpacked context; owned */
    int lock_fd;    /* shared flock keeping prune away; owned */
    size_t n_files; /* entries in the tar */
    bool unpacked;  /* unpacked by this call (false: reused) */
} bld_ctx_hold;

/* Creates the directories under data_dir and removes what a killed builder
 * left (unlocked temp files and dirs). */
int bld_contexts_new(bld_contexts **out, const char *data_dir, kiln_error **err);
void bld_contexts_free(bld_contexts *c);

/* Validates a context digest and chunk list (well-formed digests, sizes within
 * the chunk bounds, at most BLD_CTX_MAX_CHUNKS).  KILN_EINVAL otherwise. */
int bld_context_validate(const char *context_digest, const bld_ctx_chunk *chunks, size_t n,
                         kiln_error **err);

/* Which chunks are missing: indexes into chunks written to missing (room for
 * n); *ready when the context is already unpacked (then none is missing).
 * Chunks found are touched so prune keeps them. */
int bld_context_check(bld_contexts *c, const char *context_digest, const bld_ctx_chunk *chunks,
                      size_t n, bool *ready, uint32_t *missing, size_t *n_missing,
                      kiln_error **err);

/* Stores a chunk after checking data against digest (KILN_EINVAL on a
 * mismatch).  *existed (may be NULL) tells whether it was already there. */
int bld_context_put(bld_contexts *c, const char *digest, const void *data, size_t len,
                    bool *existed, kiln_error **err);

/* Makes sure the context is unpacked and holds it (shared flock) for a build.
 * A missing chunk is KILN_EPRECOND, a digest mismatch or a refused tar entry
 * KILN_EINVAL.  Safe against concurrent calls for the same digest.  Release
 * with bld_context_release(). */
int bld_context_acquire(bld_contexts *c, const char *context_digest, const bld_ctx_chunk *chunks,
                        size_t n, const atomic_bool *cancel, bld_ctx_hold *out, kiln_error **err);
void bld_context_release(bld_ctx_hold *h);

/* Removes unpacked contexts and chunks not used for max_age_s seconds (0:
 * every one), except contexts a build holds.  *removed gets the number of
 * contexts plus chunks removed. */
int bld_contexts_prune(bld_contexts *c, uint64_t max_age_s, size_t *removed, kiln_error **err);

#endif
