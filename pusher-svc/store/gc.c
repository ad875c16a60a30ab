/* Reachability and garbage collection.
 *
 * A blob survives GC when it is reachable from index.json (through indexes,
 * manifests, configs and layers), listed in the caller's in-use set, or pinned
 * by a live commit/import (a pin file whose flock is held).  The whole run
 * holds the index lock: tags cannot change and pins cannot be added half way,
 * and since a producer pins a digest before its blob appears, every blob GC
 * can see is either pinned already or not yet referenced by anyone. */
#include "store_internal.h"
#include "units.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cleanup.h"

#define COLLECT_DEPTH_MAX 8 /* index → index → manifest nesting we follow */

int psh_dset_add(psh_dset *set, const char *digest, kiln_error **err)
{
    if (set->n == set->cap) {
        size_t cap = set->cap ? 2 * set->cap : 64;
        void *v = realloc(set->v, cap * sizeof(*set->v));
        if (v == NULL)
            return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
        set->v = v;
        set->cap = cap;
    }
    snprintf(set->v[set->n++], sizeof(set->v[0]), "%.*s", (int)sizeof(set->v[0]) - 1, digest);
    return 0;
}

static int cmp_digest(const void *a, const void *b)
{
    return strcmp(a, b);
}

void psh_dset_sort(psh_dset *set)
{
    if (set->n == 0)
        return;
    qsort(set->v, set->n, sizeof(*set->v), cmp_digest);
    size_t w = 1;
    for (size_t i = 1; i < set->n; i++)
        if (strcmp(set->v[i], set->v[w - 1]) != 0)
            memmove(set->v[w++], set->v[i], sizeof(*set->v));
    set->n = w;
}

bool psh_dset_has(const psh_dset *set, const char *digest)
{
    return set->n > 0 && bsearch(digest, set->v, set->n, sizeof(*set->v), cmp_digest) != NULL;
}

void psh_dset_dispose(psh_dset *set)
{
    free(set->v);
    set->v = NULL;
    set->n = set->cap = 0;
}

static int collect(const psh_store *s, const char *digest, psh_dset *set, bool strict, int depth,
                   kiln_error **err)
{
    int r = psh_dset_add(set, digest, err);
    if (r < 0)
        return r;
    if (depth > COLLECT_DEPTH_MAX)
        return strict ? kiln_error_set(err, KILN_EINVAL, 0, "%s: indexes nested too deeply", digest)
                      : 0;
    _cleanup_cjson_ cJSON *doc = NULL;
    kiln_error *inner = NULL;
    if ((r = psh_store_read_json(s, digest, &doc, strict ? err : &inner)) < 0) {
        kiln_error_free(&inner);
        return strict ? r : 0;
    }
    const char *mt = psh_manifest_media_type(doc);
    const cJSON *d;
    if (psh_media_type_is_index(mt)) {
        cJSON_ArrayForEach(d, cJSON_GetObjectItemCaseSensitive(doc, "manifests"))
        {
            psh_descriptor desc;
            if (psh_descriptor_from_json(&desc, d, strict ? err : NULL) < 0) {
                if (strict)
                    return KILN_EINVAL;
                continue;
            }
            if ((r = collect(s, desc.digest, set, strict, depth + 1, err)) < 0)
                return r;
        }
        return 0;
    }
    if (!psh_media_type_is_manifest(mt))
        return strict ? kiln_error_set(err, KILN_EINVAL, 0, "%s is not a manifest or index", digest)
                      : 0;
    psh_descriptor desc;
    const cJSON *cfg = cJSON_GetObjectItemCaseSensitive(doc, "config");
    if (psh_descriptor_from_json(&desc, cfg, strict ? err : NULL) == 0) {
        if (strict && !psh_store_has_blob(s, desc.digest))
            return kiln_error_set(err, KILN_ENOENT, 0, "config %s is not in the store",
                                  desc.digest);
        if ((r = psh_dset_add(set, desc.digest, err)) < 0)
            return r;
    } else if (strict) {
        return KILN_EINVAL;
    }
    cJSON_ArrayForEach(d, cJSON_GetObjectItemCaseSensitive(doc, "layers"))
    {
        if (psh_descriptor_from_json(&desc, d, strict ? err : NULL) < 0) {
            if (strict)
                return KILN_EINVAL;
            continue;
        }
        if (strict && !psh_store_has_blob(s, desc.digest))
            return kiln_error_set(err, KILN_ENOENT, 0, "layer %s is not in the store", desc.digest);
        if ((r = psh_dset_add(set, desc.digest, err)) < 0)
            return r;
    }
    return 0;
}

int psh_store_collect(const psh_store *s, const char *digest, psh_dset *set, bool strict,
                      kiln_error **err)
{
    if (!kiln_digest_valid(digest))
        return kiln_error_set(err, KILN_EINVAL, 0, "invalid digest \"%.80s\"", digest);
    if (strict && !psh_store_has_blob(s, digest))
        return kiln_error_set(err, KILN_ENOENT, 0, "%s is not in the store", digest);
    return collect(s, digest, set, strict, 0, err);
}

void psh_gc_opts_init(psh_gc_opts *o)
{
    memset(o, 0, sizeof(*o));
    o->tmp_min_age = 3600;
}

/* Adds the digests of live pin files; removes the files of dead owners. */
static int read_pins(psh_store *s, psh_dset *keep, bool dry_run, kiln_error **err)
{
    int dfd = dup(s->pins_fd);
    if (dfd < 0)
        return kiln_error_set(err, KILN_EIO, errno, "dup");
    _cleanup_closedir_ DIR *d = fdopendir(dfd);
    if (d == NULL) {
        close(dfd);
        return kiln_error_set(err, KILN_EIO, errno, "read %s/.kiln/pins", s->path);
    }
    rewinddir(d);
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        _cleanup_close_ int fd = openat(s->pins_fd, e->d_name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
        if (fd < 0)
            continue;
        if (strncmp(e->d_name, "new-", 4) == 0) { /* not locked yet: see create_locked() */
            struct stat st;
            if (!dry_run && fstat(fd, &st) == 0 &&
                kiln_age_s(&st.st_mtim) >= PSH_STORE_NEW_MIN_AGE &&
                flock(fd, LOCK_EX | LOCK_NB) == 0)
                unlinkat(s->pins_fd, e->d_name, 0);
            continue;
        }
        if (flock(fd, LOCK_SH | LOCK_NB) == 0) { /* owner gone */
            if (!dry_run)
                unlinkat(s->pins_fd, e->d_name, 0);
            continue;
        }
        _cleanup_fclose_ FILE *f = fdopen(steal_fd(&fd), "r");
        char line[128];
        while (f != NULL && fgets(line, sizeof(line), f) != NULL) {
            line[strcspn(line, "\n")] = '\0';
            int r = kiln_digest_valid(line) ? psh_dset_add(keep, line, err) : 0;
            if (r < 0)
                return r;
        }
    }
    return 0;
}

/* Removes temps no live writer holds and nobody touched for min_age seconds. */
static void sweep_tmp(psh_store *s, const psh_gc_opts *o, psh_gc_result *res)
{
    int dfd = dup(s->tmp_fd);
    DIR *d = dfd >= 0 ? fdopendir(dfd) : NULL;
    if (d == NULL) {
        if (dfd >= 0)
            close(dfd);
        return;
    }
    rewinddir(d);
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        int fd = openat(s->tmp_fd, e->d_name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
        /* "blob-" temps are locked by their writer from the start; anything
         * else (a "new-" file, an index.json temp) gets a generous age. */
        int64_t min_age = o->tmp_min_age;
        if (psh_store_is_partial_name(e->d_name))
            min_age = 0; /* locked while written: unlocked means nobody resumes it now */
        else if (strncmp(e->d_name, "blob-", 5) != 0 && min_age < PSH_STORE_NEW_MIN_AGE)
            min_age = PSH_STORE_NEW_MIN_AGE;
        struct stat st;
        bool stale = fd >= 0 && fstat(fd, &st) == 0 && S_ISREG(st.st_mode) &&
                     kiln_age_s(&st.st_mtim) >= min_age && flock(fd, LOCK_EX | LOCK_NB) == 0;
        if (stale && (o->dry_run || unlinkat(s->tmp_fd, e->d_name, 0) == 0))
            res->tmps_removed++;
        if (fd >= 0)
            close(fd);
    }
    closedir(d);
}

static bool is_blob_name(const char *n)
{
    if (strlen(n) != 64)
        return false;
    for (; *n; n++)
        if (!((*n >= '0' && *n <= '9') || (*n >= 'a' && *n <= 'f')))
            return false;
    return true;
}

static int sweep_blobs(psh_store *s, const psh_dset *keep, const psh_gc_opts *o, psh_gc_result *res,
                       kiln_error **err)
{
    int dfd = dup(s->blobs_fd);
    if (dfd < 0)
        return kiln_error_set(err, KILN_EIO, errno, "dup");
    _cleanup_closedir_ DIR *d = fdopendir(dfd);
    if (d == NULL) {
        close(dfd);
        return kiln_error_set(err, KILN_EIO, errno, "read %s/blobs/sha256", s->path);
    }
    rewinddir(d);
    struct dirent *e;
    char digest[KILN_DIGEST_STRLEN + 1];
    while ((e = readdir(d)) != NULL) {
        if (!is_blob_name(e->d_name))
            continue;
        /* is_blob_name() checked: exactly 64 hex digits. */
        snprintf(digest, sizeof(digest), "sha256:%.64s", e->d_name);
        if (psh_dset_has(keep, digest))
            continue;
        struct stat st;
        if (fstatat(s->blobs_fd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0)
            continue;
        if (!o->dry_run && unlinkat(s->blobs_fd, e->d_name, 0) < 0)
            return kiln_error_set(err, KILN_EIO, errno, "remove blob %s", digest);
        if (!o->dry_run)
            psh_store_forget_tar_size(s, digest);
        res->blobs_removed++;
        res->bytes_freed += (uint64_t)st.st_size;
    }
    if (!o->dry_run && res->blobs_removed > 0 && fsync(s->blobs_fd) < 0)
        return kiln_error_set(err, KILN_EIO, errno, "fsync %s/blobs/sha256", s->path);
    return 0;
}

/* The collection proper; the caller holds the lock and owns idx. */
static int gc_locked(psh_store *s, const cJSON *idx, const psh_gc_opts *o, psh_gc_result *out,
                     kiln_error **err)
{
    psh_dset keep = {0};
    int r = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(idx, "manifests"))
    {
        psh_descriptor d;
        if (psh_descriptor_from_json(&d, e, NULL) == 0 &&
            (r = psh_store_collect(s, d.digest, &keep, false, err)) < 0)
            goto out;
    }
    for (size_t i = 0; i < o->n_in_use; i++)
        if ((r = psh_store_collect(s, o->in_use[i], &keep, false, err)) < 0)
            goto out;
    if ((r = read_pins(s, &keep, o->dry_run, err)) < 0)
        goto out;
    psh_dset_sort(&keep);
    if ((r = sweep_blobs(s, &keep, o, out, err)) < 0)
        goto out;
    sweep_tmp(s, o, out);
out:
    psh_dset_dispose(&keep);
    return r;
}

int psh_store_gc(psh_store *s, const psh_gc_opts *opts, psh_gc_result *out, kiln_error **err)
{
    psh_gc_opts defaults;
    psh_gc_opts_init(&defaults);
    const psh_gc_opts *o = opts ? opts : &defaults;
    memset(out, 0, sizeof(*out));
    for (size_t i = 0; i < o->n_in_use; i++)
        if (!kiln_digest_valid(o->in_use[i]))
            return kiln_error_set(err, KILN_EINVAL, 0, "gc: invalid in-use digest \"%.80s\"",
                                  o->in_use[i] ? o->in_use[i] : "");
    _cleanup_close_ int lock = -1;
    int r = psh_store_lock(s, &lock, err);
    if (r < 0)
        return r;
    _cleanup_cjson_ cJSON *idx = NULL;
    if ((r = psh_store_index_load(s, &idx, err)) < 0)
        return r;
    return gc_locked(s, idx, o, out, err);
}
