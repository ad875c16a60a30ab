/* Arena: a chain of blocks, each at least 4 KiB; large requests get their own block. */
#include "arena.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BLOCK_SIZE 4096

struct block {
    struct block *next;
    size_t used, cap;
    max_align_t data[];
};

struct kiln_arena {
    struct block *head;
};

kiln_arena *kiln_arena_new(void)
{
    return calloc(1, sizeof(kiln_arena));
}

void kiln_arena_free(kiln_arena *a)
{
    if (a == NULL)
        return;
    struct block *b = a->head;
    while (b) {
        struct block *n = b->next;
        free(b);
        b = n;
    }
    free(a);
}

void *kiln_arena_alloc(kiln_arena *a, size_t n)
{
    const size_t align = sizeof(max_align_t);
    if (n > SIZE_MAX - align)
        return NULL;
    n = (n + align - 1) & ~(align - 1);
    if (n == 0)
        n = align;
    struct block *b = a->head;
    if (b == NULL || b->cap - b->used < n) {
        size_t cap = n > BLOCK_SIZE ? n : BLOCK_SIZE;
        b = malloc(sizeof(struct block) + cap);
        if (b == NULL)
            return NULL;
        b->used = 0;
        b->cap = cap;
        if (a->head && n > BLOCK_SIZE) {
            /* Keep the current block at the head so its free space stays usable. */
            b->next = a->head->next;
            a->head->next = b;
        } else {
            b->next = a->head;
            a->head = b;
        }
    }
    void *p = (char *)b->data + b->used;
    b->used += n;
    memset(p, 0, n);
    return p;
}

void *kiln_arena_calloc(kiln_arena *a, size_t n, size_t sz)
{
    if (sz && n > SIZE_MAX / sz)
        return NULL;
    return kiln_arena_alloc(a, n * sz);
}

char *kiln_arena_strdup(kiln_arena *a, const char *s)
{
    if (s == NULL)
        return NULL;
    size_t n = strlen(s) + 1;
    char *p = kiln_arena_alloc(a, n);
    if (p)
        memcpy(p, s, n);
    return p;
}

char *kiln_arena_printf(kiln_arena *a, const char *fmt, ...)
{
    va_list ap, ap2;
    va_start(ap, fmt);
    va_copy(ap2, ap);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    char *p = n >= 0 ? kiln_arena_alloc(a, (size_t)n + 1) : NULL;
    if (p)
        vsnprintf(p, (size_t)n + 1, fmt, ap2);
    va_end(ap2);
    return p;
}
