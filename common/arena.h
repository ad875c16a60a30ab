/* Bump allocator for short-lived object graphs (an RPC reply and everything it
 * points to).  Nothing is freed individually; kiln_arena_free() releases all. */
#ifndef KILN_ARENA_H
#define KILN_ARENA_H

#include <stddef.h>

typedef struct kiln_arena kiln_arena;

kiln_arena *kiln_arena_new(void);
/* Frees every allocation made from the arena, then the arena.  Safe on NULL. */
void kiln_arena_free(kiln_arena *a);
/* Zeroed memory owned by the arena; NULL on allocation failure. */
void *kiln_arena_alloc(kiln_arena *a, size_t n);
char *kiln_arena_strdup(kiln_arena *a, const char *s);
char *kiln_arena_printf(kiln_arena *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Zeroed array of n elements of size sz (overflow-checked). */
void *kiln_arena_calloc(kiln_arena *a, size_t n, size_t sz);

#endif
