/* Content-addressed chunk directory and verified stream reader
 * (chunkstore.h). */
#include "chunkstore.h"
#include "units.h"
#include "chunker.h"
#include "cleanup.h"
#include "digest.h"
#include "log.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "fs.h"

#define READ_BUF ((size_t)64 << 10)

struct kiln_chunkstore {
    char *dir; /* realpath */
};

static const char *hex_of(const char *digest)
{
    return digest + 7;
}

/* Removes temp files nobody holds a flock on. */
static void cleanup_stale(const char *dir)
{
    _cleanup_closedir_ DIR *d = opendir(dir);
    if (d == NULL)
        return;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (strncmp(de->d_name, ".tmp-", 5) != 0)
            continue;
        char p[PATH_MAX];
        snprintf(p, sizeof(p), "%s/%s", dir, de->d_name);
        _cleanup_close_ int fd = open(p, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
        if (fd < 0 || flock(fd, LOCK_EX | LOCK_NB) < 0)
            continue;
        unlink(p);
        kiln_info("chunks", "removed interrupted %s", p);
    }
}

int kiln_chunkstore_open(kiln_chunkstore **out, const char *dir, kiln_error **err)
{
    int r = kiln_mkdir_p(dir, 0700, err);
    if (r < 0)
        return r;
    kiln_chunkstore *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
    if ((s->dir = realpath(dir, NULL)) == NULL) {
        int e = errno;
        free(s);
        return kiln_error_set(err, kiln_code_from_errno(e), e, "%s", dir);
    }
    cleanup_stale(s->dir);
    *out = s;
    return 0;
}

void kiln_chunkstore_free(kiln_chunkstore *s)
{
    if (s == NULL)
        return;
    free(s->dir);
    free(s);
}

int kiln_chunks_validate(const char *stream_digest, const kiln_chunk_ref *chunks, size_t n,
                         size_t max_chunks, const char *what, kiln_error **err)
{
    if (stream_digest == NULL || !kiln_digest_valid(stream_digest))
        return kiln_error_set(err, KILN_EINVAL, 0, "%s digest must be sha256:<64 hex>", what);
    if (n == 0 || n > max_chunks)
        return kiln_error_set(err, KILN_EINVAL, 0, "a %s has 1 to %zu chunks, not %zu", what,
                              max_chunks, n);
    for (size_t i = 0; i < n; i++) {
        if (chunks[i].digest == NULL || !kiln_digest_valid(chunks[i].digest))
            return kiln_error_set(err, KILN_EINVAL, 0, "%s chunk %zu: bad digest", what, i);
        if (chunks[i].size == 0 || chunks[i].size > KILN_CHUNK_MAX)
            return kiln_error_set(err, KILN_EINVAL, 0, "%s chunk %zu: size %llu outside 1..%zu",
                                  what, i, (unsigned long long)chunks[i].size, KILN_CHUNK_MAX);
    }
    return 0;
}

bool kiln_chunkstore_has(kiln_chunkstore *s, const kiln_chunk_ref *c, bool touch)
{
    char p[PATH_MAX];
    snprintf(p, sizeof(p), "%s/%.64s", s->dir, hex_of(c->digest));
    struct stat st;
    if (stat(p, &st) < 0 || !S_ISREG(st.st_mode) || (uint64_t)st.st_size != c->size)
        return false;
    if (touch)
        utimensat(AT_FDCWD, p, NULL, 0);
    return true;
}

void kiln_chunkstore_missing(kiln_chunkstore *s, const kiln_chunk_ref *chunks, size_t n,
                             uint32_t *missing, size_t *n_missing)
{
    *n_missing = 0;
    for (size_t i = 0; i < n; i++)
        if (!kiln_chunkstore_has(s, &chunks[i], true))
            missing[(*n_missing)++] = (uint32_t)i;
}

int kiln_chunkstore_put(kiln_chunkstore *s, const char *digest, const void *data, size_t len,
                        bool *existed, kiln_error **err)
{
    if (digest == NULL || !kiln_digest_valid(digest))
        return kiln_error_set(err, KILN_EINVAL, 0, "chunk digest must be sha256:<64 hex>");
    if (len == 0 || len > KILN_CHUNK_MAX)
        return kiln_error_set(err, KILN_EINVAL, 0, "chunk of %zu bytes outside 1..%zu", len,
                              KILN_CHUNK_MAX);
    char got[KILN_DIGEST_STRLEN + 1];
    kiln_sha256_bytes(data, len, got);
    if (strcmp(got, digest) != 0)
        return kiln_error_set(err, KILN_EINVAL, 0,
                              "chunk digest mismatch: the data hashes to %s, not %s", got, digest);
    kiln_chunk_ref ch = {digest, len};
    if (existed)
        *existed = false;
    if (kiln_chunkstore_has(s, &ch, true)) {
        if (existed)
            *existed = true;
        return 0;
    }
    char dst[PATH_MAX];
    snprintf(dst, sizeof(dst), "%s/%.64s", s->dir, hex_of(digest));
    /* Locked while written: the startup cleanup of another process leaves it alone. */
    int r = kiln_atomic_write(dst, data, len, 0600, KILN_ATOMIC_LOCK, err);
    if (r < 0)
        return kiln_error_wrap(err, "store chunk %s", dst);
    kiln_debug("chunks", "stored chunk %s (%zu bytes)", digest, len);
    return 0;
}

void kiln_chunkstore_remove(kiln_chunkstore *s, const char *digest)
{
    if (digest == NULL || !kiln_digest_valid(digest))
        return;
    char p[PATH_MAX];
    snprintf(p, sizeof(p), "%s/%.64s", s->dir, hex_of(digest));
    unlink(p);
}

static bool is_hex64(const char *s)
{
    size_t i = 0;
    for (; s[i]; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return false;
    return i == 64;
}

size_t kiln_chunkstore_prune(kiln_chunkstore *s, uint64_t max_age_s)
{
    _cleanup_closedir_ DIR *d = opendir(s->dir);
    size_t removed = 0;
    struct dirent *de;
    while (d && (de = readdir(d)) != NULL) {
        if (!is_hex64(de->d_name))
            continue;
        char p[PATH_MAX];
        snprintf(p, sizeof(p), "%s/%.64s", s->dir, de->d_name);
        struct stat st;
        if (lstat(p, &st) == 0 &&
            (max_age_s == 0 || (uint64_t)kiln_age_s(&st.st_mtim) >= max_age_s) && unlink(p) == 0)
            removed++;
    }
    return removed;
}

/* ---- reader ---- */

struct kiln_chunk_reader {
    kiln_chunkstore *s;
    const kiln_chunk_ref *chunks;
    size_t n, i;
    const char *what, *where;
    int fd;
    uint64_t left, total;
    kiln_sha256 *whole, *part;
    uint8_t buf[READ_BUF];
};

int kiln_chunk_reader_new(kiln_chunk_reader **out, kiln_chunkstore *s, const kiln_chunk_ref *chunks,
                          size_t n, const char *what, const char *where, kiln_error **err)
{
    kiln_chunk_reader *r = calloc(1, sizeof(*r));
    if (r == NULL)
        return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
    *r = (kiln_chunk_reader){
        .s = s, .chunks = chunks, .n = n, .what = what, .where = where, .fd = -1};
    r->whole = kiln_sha256_new();
    r->part = kiln_sha256_new();
    if (r->whole == NULL || r->part == NULL) {
        kiln_chunk_reader_free(r);
        return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
    }
    *out = r;
    return 0;
}

ssize_t kiln_chunk_reader_read(kiln_chunk_reader *r, const void **data, kiln_error **err)
{
    for (;;) {
        if (r->fd < 0) {
            if (r->i == r->n)
                return 0;
            char p[PATH_MAX];
            snprintf(p, sizeof(p), "%s/%.64s", r->s->dir, hex_of(r->chunks[r->i].digest));
            r->fd = open(p, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
            if (r->fd < 0)
                return kiln_error_set(err, KILN_EPRECOND, 0,
                                      "%s chunk %zu of %zu (%.71s) is missing %s (send it with "
                                      "ContextPut first)",
                                      r->what, r->i + 1, r->n, r->chunks[r->i].digest, r->where);
            r->left = r->chunks[r->i].size;
            kiln_sha256_reset(r->part);
        }
        if (r->left == 0) {
            char got[KILN_DIGEST_STRLEN + 1];
            kiln_sha256_final_str(r->part, got);
            uint8_t extra;
            bool longer = read(r->fd, &extra, 1) > 0;
            close(r->fd);
            r->fd = -1;
            if (longer || strcmp(got, r->chunks[r->i].digest) != 0)
                return kiln_error_set(err, KILN_EIO, 0, "%s chunk %zu (%.71s) is corrupt %s",
                                      r->what, r->i + 1, r->chunks[r->i].digest, r->where);
            r->i++;
            continue;
        }
        size_t want = r->left < sizeof(r->buf) ? (size_t)r->left : sizeof(r->buf);
        ssize_t got = read(r->fd, r->buf, want);
        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0)
            return kiln_error_set(err, KILN_EIO, got < 0 ? errno : 0,
                                  "%s chunk %zu (%.71s) is shorter than announced", r->what,
                                  r->i + 1, r->chunks[r->i].digest);
        kiln_sha256_update(r->part, r->buf, (size_t)got);
        kiln_sha256_update(r->whole, r->buf, (size_t)got);
        r->left -= (uint64_t)got;
        r->total += (uint64_t)got;
        *data = r->buf;
        return got;
    }
}

int kiln_chunk_reader_finish(kiln_chunk_reader *r, const char *stream_digest, kiln_error **err)
{
    const void *d;
    ssize_t n;
    while ((n = kiln_chunk_reader_read(r, &d, err)) > 0)
        ;
    if (n < 0)
        return (int)n;
    char got[KILN_DIGEST_STRLEN + 1];
    kiln_sha256_final_str(r->whole, got);
    if (strcmp(got, stream_digest) != 0)
        return kiln_error_set(err, KILN_EINVAL, 0, "%s digest mismatch: the chunks make %s, not %s",
                              r->what, got, stream_digest);
    return 0;
}

uint64_t kiln_chunk_reader_total(const kiln_chunk_reader *r)
{
    return r->total;
}

void kiln_chunk_reader_free(kiln_chunk_reader *r)
{
    if (r == NULL)
        return;
    if (r->fd >= 0)
        close(r->fd);
    kiln_sha256_free(r->whole);
    kiln_sha256_free(r->part);
    free(r);
}
