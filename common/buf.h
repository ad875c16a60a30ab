/* Growable byte buffer with a ceiling.  Every growable buffer in Kiln has a
 * named limit, so hostile input cannot make a service allocate without bound. */
#ifndef KILN_BUF_H
#define KILN_BUF_H

#include <stdarg.h>
#include <stddef.h>

#include "error.h"

typedef struct kiln_buf {
    char *data; /* owned; always NUL-terminated when non-NULL */
    size_t len;
    size_t cap;
    size_t max; /* ceiling for len; 0 means KILN_BUF_DEFAULT_MAX */
} kiln_buf;

#define KILN_BUF_DEFAULT_MAX ((size_t)64 << 20)

/* Initialises an empty buffer that may grow up to max bytes (0: default). */
void kiln_buf_init(kiln_buf *b, size_t max);
/* Frees the contents; the buffer may be reused after kiln_buf_init(). */
void kiln_buf_dispose(kiln_buf *b);
/* Empties the buffer, keeping its allocation. */
void kiln_buf_reset(kiln_buf *b);

/* Appends n bytes; KILN_ENOSPC when the ceiling would be passed (b unchanged). */
int kiln_buf_append(kiln_buf *b, const void *p, size_t n, kiln_error **err);
int kiln_buf_puts(kiln_buf *b, const char *s, kiln_error **err);
int kiln_buf_printf(kiln_buf *b, kiln_error **err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
int kiln_buf_vprintf(kiln_buf *b, kiln_error **err, const char *fmt, va_list ap)
    __attribute__((format(printf, 3, 0)));

/* Returns the data (caller frees with free()) and leaves b empty. */
char *kiln_buf_steal(kiln_buf *b, size_t *len_out);

#endif
