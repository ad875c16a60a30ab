/* A growable, owned vector of strings (see strv.h). */
#include "strv.h"

#include <stdlib.h>
#include <string.h>

int kiln_strv_push(kiln_strv *s, const char *str)
{
    if (s->n + 2 > s->cap) {
        size_t nc = s->cap ? 2 * s->cap : 8;
        char **v = realloc(s->v, nc * sizeof(char *));
        if (v == NULL)
            return -1;
        s->v = v;
        s->cap = nc;
    }
    char *d = strdup(str);
    if (d == NULL)
        return -1;
    s->v[s->n++] = d;
    s->v[s->n] = NULL;
    return 0;
}

int kiln_strv_copy(kiln_strv *dst, const kiln_strv *src)
{
    for (size_t i = 0; i < src->n; i++)
        if (kiln_strv_push(dst, src->v[i]) < 0)
            return -1;
    return 0;
}

void kiln_strv_dispose(kiln_strv *s)
{
    for (size_t i = 0; i < s->n; i++)
        free(s->v[i]);
    free(s->v);
    memset(s, 0, sizeof(*s));
}
