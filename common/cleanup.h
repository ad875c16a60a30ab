/* Scope-bound cleanup (GCC/clang cleanup attribute), in the style of crun and systemd.
 *
 *   _cleanup_free_ char *s = NULL;      freed with free() at scope exit
 *   _cleanup_close_ int fd = -1;        closed if >= 0
 *   return steal_pointer(&s);           moves ownership out, leaving NULL
 *
 *   _cleanup_cjson_ cJSON *j = NULL;    cJSON_Delete()
 *   _cleanup_nng_msg_ nng_msg *m = NULL; nng_msg_free()
 *   _cleanup_curl_ CURL *h = NULL;      curl_easy_cleanup() (and _cleanup_curl_slist_,
 *                                       _cleanup_archive_: available once <curl/curl.h>
 *                                       or <archive.h> is included before this header)
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

#include <cjson/cJSON.h>
#include <nng/nng.h>

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

static inline void kiln_cjson_deletep(cJSON **j)
{
    if (*j != NULL)
        cJSON_Delete(*j);
}
static inline void kiln_nng_msg_freep(nng_msg **m)
{
    if (*m != NULL)
        nng_msg_free(*m);
}

#define _cleanup_(f)       __attribute__((cleanup(f)))
#define _cleanup_free_     _cleanup_(kiln_freep)
#define _cleanup_close_    _cleanup_(kiln_closep)
#define _cleanup_fclose_   _cleanup_(kiln_fclosep)
#define _cleanup_closedir_ _cleanup_(kiln_closedirp)
#define _cleanup_cjson_    _cleanup_(kiln_cjson_deletep)
#define _cleanup_nng_msg_  _cleanup_(kiln_nng_msg_freep)

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

/* Libraries only some modules link: their cleanups exist where the library's
 * header was included first (outside the guard above, so a second inclusion
 * after that header adds them). */
#if defined(CURLINC_CURL_H) && !defined(KILN_CLEANUP_CURL)
#define KILN_CLEANUP_CURL
static inline void kiln_curl_cleanupp(CURL **h)
{
    if (*h != NULL)
        curl_easy_cleanup(*h);
}
static inline void kiln_curl_slist_freep(struct curl_slist **l)
{
    if (*l != NULL)
        curl_slist_free_all(*l);
}
#define _cleanup_curl_       _cleanup_(kiln_curl_cleanupp)
#define _cleanup_curl_slist_ _cleanup_(kiln_curl_slist_freep)
#endif

#if defined(ARCHIVE_H_INCLUDED) && !defined(KILN_CLEANUP_ARCHIVE)
#define KILN_CLEANUP_ARCHIVE
static inline void kiln_archive_freep(struct archive **a)
{
    if (*a != NULL)
        archive_free(*a);
}
#define _cleanup_archive_ _cleanup_(kiln_archive_freep)
#endif
