/* A directory of content-addressed chunks, the receiving end of a byte stream
 * a client sends in content-defined chunks (chunker.h) with ContextCheck and
 * ContextPut: the builder's streamed build contexts, the pusher's streamed
 * import sources.
 *
 *   <dir>/<hex>          one verified chunk (temp + fsync + rename), 0600
 *   <dir>/.tmp-<hex>-<random>  a chunk being written (kiln_atomic_write, flocked while it is)
 *
 * A stream is a digest over the whole and its chunks in order; it is read back
 * with a kiln_chunk_reader, which checks every chunk against its digest and
 * the whole against the stream digest, so a chunk changed on disk or a chunk
 * list that does not add up is an error, never wrong bytes. */
#ifndef KILN_CHUNKSTORE_H
#define KILN_CHUNKSTORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "error.h"

typedef struct kiln_chunk_ref {
    const char *digest; /* "sha256:<hex>" */
    uint64_t size;
} kiln_chunk_ref;

typedef struct kiln_chunkstore kiln_chunkstore;

/* Opens (creating, 0700) the chunk dir and removes the temp files a killed
 * process left (those nobody holds a flock on). */
int kiln_chunkstore_open(kiln_chunkstore **out, const char *dir, kiln_error **err);
void kiln_chunkstore_free(kiln_chunkstore *s);

/* Validates a stream digest and its chunk list: well-formed digests, sizes in
 * 1..KILN_CHUNK_MAX, 1..max_chunks entries.  what names the stream in the
 * message ("context", "import source").  KILN_EINVAL otherwise. */
int kiln_chunks_validate(const char *stream_digest, const kiln_chunk_ref *chunks, size_t n,
                         size_t max_chunks, const char *what, kiln_error **err);

/* Whether the chunk is stored with its size; touch marks it used now (prune
 * goes by the time of last use). */
bool kiln_chunkstore_has(kiln_chunkstore *s, const kiln_chunk_ref *c, bool touch);

/* Indexes of the chunks not stored, into missing (room for n); found ones are
 * touched. */
void kiln_chunkstore_missing(kiln_chunkstore *s, const kiln_chunk_ref *chunks, size_t n,
                             uint32_t *missing, size_t *n_missing);

/* Stores a chunk after checking data against digest (KILN_EINVAL on a
 * mismatch or a size outside 1..KILN_CHUNK_MAX).  *existed (may be NULL)
 * tells whether it was already there. */
int kiln_chunkstore_put(kiln_chunkstore *s, const char *digest, const void *data, size_t len,
                        bool *existed, kiln_error **err);

/* Removes one chunk (after the stream using it was consumed). */
void kiln_chunkstore_remove(kiln_chunkstore *s, const char *digest);

/* Removes chunks not used for max_age_s seconds (0: every one); returns how
 * many. */
size_t kiln_chunkstore_prune(kiln_chunkstore *s, uint64_t max_age_s);

/* ---- reading a stream back ---- */

typedef struct kiln_chunk_reader kiln_chunk_reader;

/* A reader over chunks (borrowed until freed), in order.  what and where
 * name the stream and this service in messages ("context", "on the
 * builder"). */
int kiln_chunk_reader_new(kiln_chunk_reader **out, kiln_chunkstore *s, const kiln_chunk_ref *chunks,
                          size_t n, const char *what, const char *where, kiln_error **err);
/* The next bytes of the stream: > 0 bytes in *data (valid until the next
 * call), 0 at the end, < 0 on an error (a missing chunk is KILN_EPRECOND, a
 * corrupt or short one KILN_EIO). */
ssize_t kiln_chunk_reader_read(kiln_chunk_reader *r, const void **data, kiln_error **err);
/* Reads what is left and checks the whole stream against stream_digest
 * (KILN_EINVAL on a mismatch). */
int kiln_chunk_reader_finish(kiln_chunk_reader *r, const char *stream_digest, kiln_error **err);
/* Bytes delivered so far. */
uint64_t kiln_chunk_reader_total(const kiln_chunk_reader *r);
void kiln_chunk_reader_free(kiln_chunk_reader *r);

#endif
