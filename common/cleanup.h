/* Scope-bound cleanup (GCC/clang cleanup attribute), in the style of crun and systemd.
 *
 *   _cleanup_free_ char *s = NULL;      freed with free() at scope exit
 *   _cleanup_close_ int fd = -1;        closed if >= 0
 *   return steal_pointer(&s);           moves ownership out, leaving NULL
 *
 * Variables must be initialised at declaration.  Do not mix these with an
 * `out:` label in the same function. */
#ifndef KILN_CLEANUP_H
#define KILN_CLEANUP_H

#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <dirent.h>
#include <errno.h>

static inline void kiln_freep(void *p)
{
    free(*(void **)p);
}
static inline void kiln_closep(int *fd)
{
    if (*fd >= 0) {
        int saved = errno;
        close(*fd);
        errno = saved;
    }
}
static inline void kiln_fclosep(FILE **f)
{
    if (*f != NULL)
        fclose(*f);
}
static inline void kiln_closedirp(DIR **d)
{
    if (*d != NULL)
        closedir(*d);
}

#define _cleanup_(f)       __attribute__((cleanup(f)))
#define _cleanup_free_     _cleanup_(kiln_freep)
#define _cleanup_close_    _cleanup_(kiln_closep)
#define _cleanup_fclose_   _cleanup_(kiln_fclosep)
#define _cleanup_closedir_ _cleanup_(kiln_closedirp)

/* Returns *pp and sets *pp to NULL (crun's get_and_reset). */
static inline void *kiln_steal_ptr(void *pp)
{
    void **p = (void **)pp;
    void *v = *p;
    *p = NULL;
    return v;
}
#define steal_pointer(pp) kiln_steal_ptr(pp)

/* Returns *fdp and sets it to -1. */
static inline int steal_fd(int *fdp)
{
    int fd = *fdp;
    *fdp = -1;
    return fd;
}

#define KILN_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

#endif
