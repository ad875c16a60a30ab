/* Content-defined chunking (FastCDC-style gear hash with normalized chunking)
 * for streamed build contexts.
 *
 * A cut point depends only on the bytes just before it, so inserting or
 * changing a few bytes in a stream moves only the boundaries near the change:
 * the chunks before and after it keep their bytes and digests, and a builder
 * that already holds them is not sent them again. */
#ifndef KILN_CHUNKER_H
#define KILN_CHUNKER_H

#include <stddef.h>
#include <stdint.h>

/* Sizes used for build contexts: a chunk plus its RPC envelope stays well
 * below KILN_RPC_DEFAULT_MAX_MSG (4 MiB). */
#define KILN_CHUNK_MIN ((size_t)256 << 10)
#define KILN_CHUNK_AVG ((size_t)1 << 20)
#define KILN_CHUNK_MAX ((size_t)2 << 20)

typedef struct kiln_chunk_params {
    size_t min, avg, max; /* avg a power of two, min < avg < max */
} kiln_chunk_params;

/* The context sizes above. */
extern const kiln_chunk_params kiln_chunk_default;

/* Length of the first chunk of buf[0..len), which must start at a chunk
 * boundary: at least min(p->min, len), at most min(p->max, len).  When no
 * boundary is found before len (and len < p->max) the result is len, so a
 * caller streaming data calls this only once it holds p->max bytes or has
 * reached the end of the stream; the boundaries are then the same however
 * the stream was buffered. */
size_t kiln_chunk_cut(const uint8_t *buf, size_t len, const kiln_chunk_params *p);

#endif
