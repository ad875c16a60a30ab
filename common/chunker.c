/* Gear-hash content-defined chunking (after Xia et al., "FastCDC", 2016):
 * h = (h << 1) + gear[byte]; a cut where the masked high bits of h are zero.
 * Before the average size a stricter mask (two more bits) is used and after it
 * a looser one, which narrows the spread of chunk sizes around the average. */
#include "chunker.h"

const kiln_chunk_params kiln_chunk_default = {KILN_CHUNK_MIN, KILN_CHUNK_AVG, KILN_CHUNK_MAX};

/* The gear table: fixed pseudo-random values (splitmix64 from a constant
 * seed), part of the wire behaviour: changing them changes every boundary. */
static void gear_table(uint64_t g[256])
{
    uint64_t x = 0x6b696c6e2d636463ULL; /* "kiln-cdc" */
    for (int i = 0; i < 256; i++) {
        uint64_t z = (x += 0x9e3779b97f4a7c15ULL);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
        g[i] = z ^ (z >> 31);
    }
}

static unsigned log2_floor(size_t v)
{
    unsigned n = 0;
    while (v > 1) {
        v >>= 1;
        n++;
    }
    return n;
}

/* A mask of the top `bits` bits: the high bits of h mix the last 64 bytes. */
static uint64_t top_mask(unsigned bits)
{
    return bits == 0 ? 0 : bits >= 64 ? ~0ULL : ~0ULL << (64 - bits);
}

size_t kiln_chunk_cut(const uint8_t *buf, size_t len, const kiln_chunk_params *p)
{
    if (len <= p->min)
        return len;
    size_t end = len < p->max ? len : p->max;
    size_t normal = p->avg < end ? p->avg : end;
    unsigned bits = log2_floor(p->avg);
    uint64_t mask_s = top_mask(bits + 2), mask_l = top_mask(bits >= 2 ? bits - 2 : 0);
    uint64_t gear[256];
    gear_table(gear);
    uint64_t h = 0;
    /* The hash only needs the 64 bytes before a candidate cut. */
    size_t i = p->min >= 64 ? p->min - 64 : 0;
    for (; i < p->min; i++)
        h = (h << 1) + gear[buf[i]];
    for (; i < normal; i++) {
        h = (h << 1) + gear[buf[i]];
        if ((h & mask_s) == 0)
            return i + 1;
    }
    for (; i < end; i++) {
        h = (h << 1) + gear[buf[i]];
        if ((h & mask_l) == 0)
            return i + 1;
    }
    return end;
}
