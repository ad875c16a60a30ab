/* Content-defined chunking: deterministic boundaries, size bounds, and
 * locality (a one-byte change leaves most chunks as they were). */
#include "kt.h"
#include "chunker.h"
#include "digest.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define DATA_LEN   ((size_t)24 << 20)
#define MAX_CHUNKS 256

typedef struct chunking {
    size_t n;
    size_t off[MAX_CHUNKS], len[MAX_CHUNKS];
    char digest[MAX_CHUNKS][KILN_DIGEST_STRLEN + 1];
} chunking;

static uint8_t *random_data(size_t len, uint64_t seed)
{
    uint8_t *d = malloc(len);
    uint64_t x = seed;
    for (size_t i = 0; d && i < len; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        d[i] = (uint8_t)(x >> 24);
    }
    return d;
}

/* Chunks data the way a streaming writer does: the cutter sees at most
 * `window` bytes at a time (>= max) or the tail of the stream. */
static void chunk_all(chunking *c, const uint8_t *data, size_t len, const kiln_chunk_params *p,
                      size_t window)
{
    c->n = 0;
    size_t off = 0;
    while (off < len && c->n < MAX_CHUNKS) {
        size_t avail = len - off < window ? len - off : window;
        size_t n = kiln_chunk_cut(data + off, avail, p);
        c->off[c->n] = off;
        c->len[c->n] = n;
        kiln_sha256_bytes(data + off, n, c->digest[c->n]);
        c->n++;
        off += n;
    }
}

static bool has_digest(const chunking *c, const char *d)
{
    for (size_t i = 0; i < c->n; i++)
        if (strcmp(c->digest[i], d) == 0)
            return true;
    return false;
}

KT_TEST(chunk_boundaries_deterministic_and_bounded)
{
    uint8_t *d = random_data(DATA_LEN, 42);
    KT_REQUIRE(d != NULL);
    static chunking a, b;
    chunk_all(&a, d, DATA_LEN, &kiln_chunk_default, KILN_CHUNK_MAX);
    /* A bigger window (more data buffered) must not move any boundary. */
    chunk_all(&b, d, DATA_LEN, &kiln_chunk_default, KILN_CHUNK_MAX * 3);
    KT_EXPECT_INT(a.n, b.n);
    size_t total = 0;
    for (size_t i = 0; i < a.n; i++) {
        KT_EXPECT_INT(a.off[i], b.off[i]);
        KT_EXPECT(a.len[i] <= KILN_CHUNK_MAX);
        if (i + 1 < a.n)
            KT_EXPECT(a.len[i] >= KILN_CHUNK_MIN);
        total += a.len[i];
    }
    KT_EXPECT_INT(total, DATA_LEN);
    /* Random data: the average lands near 1 MiB, not at the bounds. */
    KT_EXPECT(a.n >= 10 && a.n <= 40);
    free(d);
}

KT_TEST(chunk_one_byte_change_keeps_most_chunks)
{
    uint8_t *d = random_data(DATA_LEN, 7);
    KT_REQUIRE(d != NULL);
    static chunking a, b;
    chunk_all(&a, d, DATA_LEN, &kiln_chunk_default, KILN_CHUNK_MAX);
    d[DATA_LEN / 2] ^= 0x5a;
    chunk_all(&b, d, DATA_LEN, &kiln_chunk_default, KILN_CHUNK_MAX);
    size_t same = 0;
    for (size_t i = 0; i < b.n; i++)
        same += has_digest(&a, b.digest[i]);
    KT_EXPECT(same + 2 >= b.n);
    KT_EXPECT(same < b.n); /* the changed chunk is new */
    /* An insertion shifts the bytes after it; boundaries resynchronise. */
    uint8_t *ins = malloc(DATA_LEN + 3);
    KT_REQUIRE(ins != NULL);
    memcpy(ins, d, DATA_LEN / 3);
    memcpy(ins + DATA_LEN / 3, "abc", 3);
    memcpy(ins + DATA_LEN / 3 + 3, d + DATA_LEN / 3, DATA_LEN - DATA_LEN / 3);
    static chunking c;
    chunk_all(&c, ins, DATA_LEN + 3, &kiln_chunk_default, KILN_CHUNK_MAX);
    same = 0;
    for (size_t i = 0; i < c.n; i++)
        same += has_digest(&b, c.digest[i]);
    KT_EXPECT(same + 3 >= c.n);
    free(ins);
    free(d);
}

KT_TEST(chunk_small_and_uniform_inputs)
{
    uint8_t small[100];
    memset(small, 1, sizeof(small));
    KT_EXPECT_INT(kiln_chunk_cut(small, sizeof(small), &kiln_chunk_default), sizeof(small));
    KT_EXPECT_INT(kiln_chunk_cut(small, 0, &kiln_chunk_default), 0);
    /* All zeros: no content boundary, so every chunk is max-sized. */
    uint8_t *z = calloc(1, KILN_CHUNK_MAX * 3);
    KT_REQUIRE(z != NULL);
    size_t n = kiln_chunk_cut(z, KILN_CHUNK_MAX * 3, &kiln_chunk_default);
    KT_EXPECT(n >= KILN_CHUNK_MIN && n <= KILN_CHUNK_MAX);
    KT_EXPECT_INT(kiln_chunk_cut(z, KILN_CHUNK_MAX * 3, &kiln_chunk_default), n);
    free(z);
    /* Small parameters for quick checks of min/max on a tiny stream. */
    kiln_chunk_params p = {64, 256, 512};
    uint8_t *d = random_data(1 << 16, 3);
    KT_REQUIRE(d != NULL);
    static chunking a;
    chunk_all(&a, d, 1 << 16, &p, 512);
    for (size_t i = 0; i < a.n; i++) {
        KT_EXPECT(a.len[i] <= 512);
        if (i + 1 < a.n)
            KT_EXPECT(a.len[i] >= 64);
    }
    free(d);
}
