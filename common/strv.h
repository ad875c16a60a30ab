/* A growable vector of strings it owns (each strdup'd), always
 * NULL-terminated so that v can be handed to execve() and friends.  A
 * zeroed kiln_strv is empty and ready. */
#ifndef KILN_STRV_H
#define KILN_STRV_H

#include <stddef.h>

typedef struct kiln_strv {
    char **v;
    size_t n, cap;
} kiln_strv;

/* Appends a copy of str; 0, or -1 when out of memory (s unchanged). */
int kiln_strv_push(kiln_strv *s, const char *str);
/* Appends copies of every string of src; -1 when out of memory. */
int kiln_strv_copy(kiln_strv *dst, const kiln_strv *src);
/* Frees the strings and the vector, leaving s empty. */
void kiln_strv_dispose(kiln_strv *s);

#endif
