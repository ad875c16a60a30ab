/* Bounded growable buffer. */
#include "buf.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void kiln_buf_init(kiln_buf *b, size_t max)
{
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
    b->max = max ? max : KILN_BUF_DEFAULT_MAX;
}

void kiln_buf_dispose(kiln_buf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

void kiln_buf_reset(kiln_buf *b)
{
    b->len = 0;
    if (b->data)
        b->data[0] = '\0';
}

static int reserve(kiln_buf *b, size_t extra, kiln_error **err)
{
    if (extra > b->max || b->len > b->max - extra)
        return kiln_error_set(err, KILN_ENOSPC, 0, "buffer limit of %zu bytes exceeded", b->max);
    size_t need = b->len + extra + 1;
    if (need <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < need)
        cap = cap > SIZE_MAX / 2 ? need : cap * 2;
    char *p = realloc(b->data, cap);
    if (p == NULL)
        return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory growing buffer to %zu", cap);
    b->data = p;
    b->cap = cap;
    return 0;
}

int kiln_buf_append(kiln_buf *b, const void *p, size_t n, kiln_error **err)
{
    int r = reserve(b, n, err);
    if (r < 0)
        return r;
    if (n)
        memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
    return 0;
}

int kiln_buf_puts(kiln_buf *b, const char *s, kiln_error **err)
{
    return kiln_buf_append(b, s, strlen(s), err);
}

int kiln_buf_vprintf(kiln_buf *b, kiln_error **err, const char *fmt, va_list ap)
{
    va_list ap2;
    va_copy(ap2, ap);
    int n = vsnprintf(NULL, 0, fmt, ap2);
    va_end(ap2);
    if (n < 0)
        return kiln_error_set(err, KILN_EINTERNAL, 0, "bad format");
    int r = reserve(b, (size_t)n, err);
    if (r < 0)
        return r;
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    b->len += (size_t)n;
    return 0;
}

int kiln_buf_printf(kiln_buf *b, kiln_error **err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int r = kiln_buf_vprintf(b, err, fmt, ap);
    va_end(ap);
    return r;
}

char *kiln_buf_steal(kiln_buf *b, size_t *len_out)
{
    if (b->data == NULL) {
        /* Always hand back a valid string. */
        b->data = calloc(1, 1);
    }
    char *d = b->data;
    if (len_out)
        *len_out = b->len;
    b->data = NULL;
    b->len = b->cap = 0;
    return d;
}
