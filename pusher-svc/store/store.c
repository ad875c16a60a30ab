/* Store core: opening the layout, crash-safe blob writes, pins and the writer lock. */
#include "store_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cleanup.h"

#define COPY_BLOCK         ((size_t)1 << 17)
#define OCI_LAYOUT_CONTENT "{\"imageLayoutVersion\":\"1.0.0\"}"
#define EMPTY_INDEX                                                                                \
    "{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.index.v1+json\","              \
    "\"manifests\":[]}"

static int fsync_fd(int fd, const char *what, kiln_error **err)
{
    if (fsync(fd) < 0)
        return kiln_error_set(err, KILN_EIO, errno, "fsync %s", what);
    return 0;
}

/* mkdirat that accepts an existing directory, then opens it. */
static int open_subdir(int parent, const char *name, int *out, kiln_error **err)
{
    if (mkdirat(parent, name, 0755) < 0 && errno != EEXIST)
        return kiln_error_set(err, kiln_code_from_errno(errno), errno, "mkdir %s", name);
    int fd = openat(parent, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return kiln_error_set(err, kiln_code_from_errno(errno), errno, "open %s", name);
    *out = fd;
    return 0;
}

/* Creates oci-layout and index.json when missing; checks the layout version. */
static int init_layout(psh_store *s, kiln_error **err)
{
    char buf[256];
    _cleanup_close_ int fd = openat(s->root_fd, "oci-layout", O_RDONLY | O_CLOEXEC);
    if (fd < 0 && errno != ENOENT)
        return kiln_error_set(err, KILN_EIO, errno, "open %s/oci-layout", s->path);
    if (fd < 0) {
        int r = kiln_atomic_write_at(s->tmp_fd, s->root_fd, "oci-layout", OCI_LAYOUT_CONTENT,
                                     strlen(OCI_LAYOUT_CONTENT), 0644, 0, err);
        if (r < 0)
            return r;
    } else {
        ssize_t n = read(fd, buf, sizeof(buf) - 1);
        if (n < 0)
            return kiln_error_set(err, KILN_EIO, errno, "read %s/oci-layout", s->path);
        buf[n] = '\0';
        cJSON *j = cJSON_Parse(buf);
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, "imageLayoutVersion");
        bool ok = cJSON_IsString(v) && strncmp(v->valuestring, "1.", 2) == 0;
        cJSON_Delete(j);
        if (!ok)
            return kiln_error_set(err, KILN_EPRECOND, 0,
                                  "%s/oci-layout: not an OCI image layout version 1.x", s->path);
    }
    if (faccessat(s->root_fd, "index.json", F_OK, AT_SYMLINK_NOFOLLOW) == 0)
        return 0;
    _cleanup_close_ int lock = -1;
    int r = psh_store_lock(s, &lock, err);
    if (r < 0)
        return r;
    if (faccessat(s->root_fd, "index.json", F_OK, AT_SYMLINK_NOFOLLOW) == 0)
        return 0;
    return kiln_atomic_write_at(s->tmp_fd, s->root_fd, "index.json", EMPTY_INDEX,
                                strlen(EMPTY_INDEX), 0644, 0, err);
}

int psh_store_open(psh_store **out, const char *data_dir, kiln_error **err)
{
    *out = NULL;
    if (data_dir == NULL || data_dir[0] == '\0')
        return kiln_error_set(err, KILN_EINVAL, 0, "store: no data directory");
    if (mkdir(data_dir, 0755) < 0 && errno != EEXIST)
        return kiln_error_set(err, kiln_code_from_errno(errno), errno, "mkdir %s", data_dir);
    psh_store *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
    s->root_fd = s->blobs_fd = s->tmp_fd = s->pins_fd = s->kiln_fd = -1;
    int r = 0;
    int blobs = -1, data_fd = -1;
    s->data_dir = realpath(data_dir, NULL);
    if (s->data_dir == NULL) {
        r = kiln_error_set(err, kiln_code_from_errno(errno), errno, "realpath %s", data_dir);
        goto out;
    }
    if (asprintf(&s->path, "%s/store", s->data_dir) < 0) {
        s->path = NULL;
        r = kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
        goto out;
    }
    data_fd = open(s->data_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (data_fd < 0) {
        r = kiln_error_set(err, kiln_code_from_errno(errno), errno, "open %s", s->data_dir);
        goto out;
    }
    if ((r = open_subdir(data_fd, "store", &s->root_fd, err)) < 0 ||
        (r = open_subdir(s->root_fd, "blobs", &blobs, err)) < 0 ||
        (r = open_subdir(blobs, "sha256", &s->blobs_fd, err)) < 0 ||
        (r = open_subdir(s->root_fd, ".kiln", &s->kiln_fd, err)) < 0 ||
        (r = open_subdir(s->kiln_fd, "tmp", &s->tmp_fd, err)) < 0 ||
        (r = open_subdir(s->kiln_fd, "pins", &s->pins_fd, err)) < 0)
        goto out;
    r = init_layout(s, err);
out:
    if (blobs >= 0)
        close(blobs);
    if (data_fd >= 0)
        close(data_fd);
    if (r < 0) {
        psh_store_free(s);
        kiln_error_wrap(err, "open store in %s", data_dir);
        return r;
    }
    *out = s;
    return 0;
}

void psh_store_free(psh_store *s)
{
    if (s == NULL)
        return;
    int fds[] = {s->root_fd, s->blobs_fd, s->tmp_fd, s->pins_fd, s->kiln_fd};
    for (size_t i = 0; i < KILN_ARRAY_SIZE(fds); i++)
        if (fds[i] >= 0)
            close(fds[i]);
    free(s->path);
    free(s->data_dir);
    free(s);
}

const char *psh_store_path(const psh_store *s)
{
    return s->path;
}

const char *psh_store_data_dir(const psh_store *s)
{
    return s->data_dir;
}

int psh_store_confine(const psh_store *s, const char *root, const char *path, char **out,
                      kiln_error **err)
{
    *out = NULL;
    if (path == NULL || path[0] == '\0')
        return kiln_error_set(err, KILN_EINVAL, 0, "empty path");
    _cleanup_free_ char *rroot = realpath(root ? root : s->data_dir, NULL);
    if (rroot == NULL)
        return kiln_error_set(err, kiln_code_from_errno(errno), errno, "realpath %s",
                              root ? root : s->data_dir);
    _cleanup_free_ char *rpath = realpath(path, NULL);
    if (rpath == NULL)
        return kiln_error_set(err, kiln_code_from_errno(errno), errno, "%s", path);
    size_t n = strlen(rroot);
    bool inside = strncmp(rpath, rroot, n) == 0 && (rpath[n] == '/' || (n == 1 && rpath[1]));
    if (strcmp(rroot, "/") == 0)
        inside = strcmp(rpath, "/") != 0;
    if (!inside)
        return kiln_error_set(err, KILN_EPERM, 0, "%s resolves to %s, outside %s", path, rpath,
                              rroot);
    *out = steal_pointer(&rpath);
    return 0;
}

int psh_store_lock(const psh_store *s, int *out_fd, kiln_error **err)
{
    *out_fd = -1;
    int fd = openat(s->kiln_fd, "lock", O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
    if (fd < 0)
        return kiln_error_set(err, KILN_EIO, errno, "open %s/.kiln/lock", s->path);
    while (flock(fd, LOCK_EX) < 0) {
        if (errno == EINTR)
            continue;
        int e = errno;
        close(fd);
        return kiln_error_set(err, KILN_EIO, e, "lock %s", s->path);
    }
    *out_fd = fd;
    return 0;
}

/* ---- blobs ---- */

bool psh_store_has_blob(const psh_store *s, const char *digest)
{
    if (!kiln_digest_valid(digest))
        return false;
    struct stat st;
    return fstatat(s->blobs_fd, digest + 7, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(st.st_mode);
}

int psh_store_open_blob(const psh_store *s, const char *digest, int *out_fd, uint64_t *out_size,
                        kiln_error **err)
{
    *out_fd = -1;
    if (!kiln_digest_valid(digest))
        return kiln_error_set(err, KILN_EINVAL, 0, "invalid digest \"%.80s\"",
                              digest ? digest : "");
    int fd = openat(s->blobs_fd, digest + 7, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0 && errno == ENOENT)
        return kiln_error_set(err, KILN_ENOENT, 0, "blob %s not in the store", digest);
    if (fd < 0)
        return kiln_error_set(err, KILN_EIO, errno, "open blob %s", digest);
    struct stat st;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return kiln_error_set(err, KILN_EIO, errno, "blob %s is not a regular file", digest);
    }
    if (out_size)
        *out_size = (uint64_t)st.st_size;
    *out_fd = fd;
    return 0;
}

int psh_store_read_blob(const psh_store *s, const char *digest, size_t max, char **out,
                        size_t *out_len, kiln_error **err)
{
    *out = NULL;
    _cleanup_close_ int fd = -1;
    uint64_t size = 0;
    int r = psh_store_open_blob(s, digest, &fd, &size, err);
    if (r < 0)
        return r;
    if (size > max)
        return kiln_error_set(err, KILN_ENOSPC, 0, "blob %s is %llu bytes, limit %zu", digest,
                              (unsigned long long)size, max);
    _cleanup_free_ char *buf = malloc((size_t)size + 1);
    if (buf == NULL)
        return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
    size_t got = 0;
    while (got < size) {
        ssize_t n = read(fd, buf + got, (size_t)size - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return kiln_error_set(err, KILN_EIO, n < 0 ? errno : 0, "read blob %s", digest);
        got += (size_t)n;
    }
    buf[got] = '\0';
    char check[KILN_DIGEST_STRLEN + 1];
    kiln_sha256_bytes(buf, got, check);
    if (strcmp(check, digest) != 0)
        return kiln_error_set(err, KILN_EINTERNAL, 0, "blob %s is corrupt (content is %s)", digest,
                              check);
    if (out_len)
        *out_len = got;
    *out = steal_pointer(&buf);
    return 0;
}

/* ---- pins ---- */

/* Creates a file named "<prefix>-<pid>-<random>" in dirfd that is already
 * flocked (how) when it appears under that name: it is created as
 * "new-<…>", locked, then renamed.  GC treats a locked file as live and an
 * unlocked one as abandoned, so it must never see one in between; "new-"
 * files are only reclaimed after PSH_STORE_NEW_MIN_AGE. */
static int create_locked(int dirfd, const char *prefix, int flags, int how, char *name, size_t n,
                         int *out_fd, kiln_error **err)
{
    char rnd[17], staging[64];
    kiln_random_hex(rnd, 16);
    snprintf(name, n, "%s-%ld-%s", prefix, (long)getpid(), rnd);
    snprintf(staging, sizeof(staging), "new-%ld-%s", (long)getpid(), rnd);
    int fd = openat(dirfd, staging, flags | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0644);
    if (fd < 0)
        return kiln_error_set(err, kiln_code_from_errno(errno), errno, "create %s", staging);
    int r = 0;
    while ((r = flock(fd, how)) < 0 && errno == EINTR)
        ;
    if (r < 0 || renameat(dirfd, staging, dirfd, name) < 0) {
        int e = errno;
        unlinkat(dirfd, staging, 0);
        close(fd);
        return kiln_error_set(err, KILN_EIO, e, "create %s", name);
    }
    *out_fd = fd;
    return 0;
}

int psh_store_pin_open(psh_store *s, psh_store_pin *out, kiln_error **err)
{
    out->fd = -1;
    int r = create_locked(s->pins_fd, "pin", O_RDWR | O_APPEND, LOCK_EX, out->name,
                          sizeof(out->name), &out->fd, err);
    if (r < 0)
        kiln_error_wrap(err, "pin file in %s", s->path);
    return r;
}

int psh_store_pin_add(psh_store *s, psh_store_pin *p, const char *digest, kiln_error **err)
{
    if (!kiln_digest_valid(digest))
        return kiln_error_set(err, KILN_EINVAL, 0, "invalid digest \"%.80s\"", digest);
    _cleanup_close_ int lock = -1;
    int r = psh_store_lock(s, &lock, err);
    if (r < 0)
        return r;
    char line[KILN_DIGEST_STRLEN + 2];
    snprintf(line, sizeof(line), "%s\n", digest);
    if (kiln_write_all(p->fd, line, strlen(line)) < 0)
        return kiln_error_set(err, KILN_EIO, errno, "write pin file");
    return 0;
}

void psh_store_pin_close(psh_store *s, psh_store_pin *p)
{
    if (p->fd < 0)
        return;
    unlinkat(s->pins_fd, p->name, 0);
    close(p->fd);
    p->fd = -1;
}

/* ---- writing blobs ---- */

int psh_store_tmp_open(psh_store *s, psh_store_tmp *out, kiln_error **err)
{
    out->pin = NULL;
    out->fd = -1;
    /* Shared lock held until commit or abort: GC skips temps of live writers. */
    int r = create_locked(s->tmp_fd, "blob", O_RDWR, LOCK_SH, out->name, sizeof(out->name),
                          &out->fd, err);
    if (r < 0)
        kiln_error_wrap(err, "temp blob in %s", s->path);
    return r;
}

void psh_store_tmp_abort(psh_store *s, psh_store_tmp *t)
{
    if (t->fd < 0)
        return;
    if (t->name[0] != '\0')
        unlinkat(s->tmp_fd, t->name, 0);
    close(t->fd);
    t->fd = -1;
}

/* Moves a fully written, fsynced temp to its digest's name. */
static int tmp_publish(psh_store *s, psh_store_tmp *t, const char *digest, kiln_error **err)
{
    int r = 0;
    if (t->pin != NULL && (r = psh_store_pin_add(s, t->pin, digest, err)) < 0)
        return r;
    struct stat st;
    if (fstatat(s->blobs_fd, digest + 7, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(st.st_mode)) {
        /* Same content already present: keep it, refresh its age for GC. */
        utimensat(s->blobs_fd, digest + 7, NULL, AT_SYMLINK_NOFOLLOW);
        return 0;
    }
    if (renameat(s->tmp_fd, t->name, s->blobs_fd, digest + 7) < 0)
        return kiln_error_set(err, KILN_EIO, errno, "rename blob %s", digest);
    t->name[0] = '\0'; /* a partial file's name may be taken again by the next download */
    return fsync_fd(s->blobs_fd, "blobs/sha256", err);
}

/* Common tail: fsync, compare, publish; consumes t. */
static int tmp_finish(psh_store *s, psh_store_tmp *t, const char *actual, const char *expected,
                      kiln_error **err)
{
    int r = 0;
    if (fsync(t->fd) < 0)
        r = kiln_error_set(err, errno == ENOSPC ? KILN_ENOSPC : KILN_EIO, errno, "fsync temp blob");
    else if (expected != NULL && strcmp(actual, expected) != 0)
        r = kiln_error_set(err, KILN_EINVAL, 0, "digest mismatch: expected %s, content is %s",
                           expected, actual);
    else
        r = tmp_publish(s, t, actual, err);
    psh_store_tmp_abort(s, t); /* unlinks the temp unless it was renamed */
    return r;
}

int psh_store_tmp_commit(psh_store *s, psh_store_tmp *t, const char *expected, char *out_digest,
                         uint64_t *out_size, kiln_error **err)
{
    if (expected != NULL && !kiln_digest_valid(expected)) {
        psh_store_tmp_abort(s, t);
        return kiln_error_set(err, KILN_EINVAL, 0, "invalid digest \"%.80s\"", expected);
    }
    kiln_sha256 *h = kiln_sha256_new();
    char *block = malloc(COPY_BLOCK);
    uint64_t total = 0;
    int r = 0;
    if (h == NULL || block == NULL) {
        r = kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
        goto out;
    }
    for (;;) { /* hash what is on disk, not what the producer meant to write */
        ssize_t n = pread(t->fd, block, COPY_BLOCK, (off_t)total);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            r = kiln_error_set(err, KILN_EIO, errno, "read temp blob");
            goto out;
        }
        if (n == 0)
            break;
        kiln_sha256_update(h, block, (size_t)n);
        total += (uint64_t)n;
    }
    char digest[KILN_DIGEST_STRLEN + 1];
    kiln_sha256_final_str(h, digest);
    r = tmp_finish(s, t, digest, expected, err);
    if (r == 0 && out_digest)
        memcpy(out_digest, digest, sizeof(digest));
    if (r == 0 && out_size)
        *out_size = total;
out:
    free(block);
    kiln_sha256_free(h);
    psh_store_tmp_abort(s, t);
    return r;
}

int psh_store_put_blob_fd(psh_store *s, psh_store_pin *pin, const char *expected, int fd,
                          char *out_digest, uint64_t *out_size, kiln_error **err)
{
    if (expected != NULL && !kiln_digest_valid(expected))
        return kiln_error_set(err, KILN_EINVAL, 0, "invalid digest \"%.80s\"", expected);
    psh_store_tmp t;
    int r = psh_store_tmp_open(s, &t, err);
    if (r < 0)
        return r;
    t.pin = pin;
    kiln_sha256 *h = kiln_sha256_new();
    char *block = malloc(COPY_BLOCK);
    uint64_t total = 0;
    if (h == NULL || block == NULL) {
        r = kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
        goto out;
    }
    for (;;) {
        ssize_t n = read(fd, block, COPY_BLOCK);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            r = kiln_error_set(err, KILN_EIO, errno, "read blob source");
            goto out;
        }
        if (n == 0)
            break;
        kiln_sha256_update(h, block, (size_t)n);
        if (kiln_write_all(t.fd, block, (size_t)n) < 0) {
            r = kiln_error_set(err, errno == ENOSPC ? KILN_ENOSPC : KILN_EIO, errno,
                               "write temp blob");
            goto out;
        }
        total += (uint64_t)n;
    }
    char digest[KILN_DIGEST_STRLEN + 1];
    kiln_sha256_final_str(h, digest);
    r = tmp_finish(s, &t, digest, expected, err);
    if (r == 0 && out_digest)
        memcpy(out_digest, digest, sizeof(digest));
    if (r == 0 && out_size)
        *out_size = total;
out:
    free(block);
    kiln_sha256_free(h);
    psh_store_tmp_abort(s, &t);
    return r;
}

int psh_store_put_blob_bytes(psh_store *s, psh_store_pin *pin, const char *expected,
                             const void *data, size_t len, char *out_digest, kiln_error **err)
{
    char digest[KILN_DIGEST_STRLEN + 1];
    if (expected != NULL && !kiln_digest_valid(expected))
        return kiln_error_set(err, KILN_EINVAL, 0, "invalid digest \"%.80s\"", expected);
    kiln_sha256_bytes(data, len, digest);
    if (expected != NULL && strcmp(digest, expected) != 0)
        return kiln_error_set(err, KILN_EINVAL, 0, "digest mismatch: expected %s, content is %s",
                              expected, digest);
    if (out_digest)
        memcpy(out_digest, digest, sizeof(digest));
    int r = 0;
    if (pin != NULL && (r = psh_store_pin_add(s, pin, digest, err)) < 0)
        return r;
    if (psh_store_has_blob(s, digest)) { /* pinned first, so GC cannot race this check */
        utimensat(s->blobs_fd, digest + 7, NULL, AT_SYMLINK_NOFOLLOW);
        return 0;
    }
    psh_store_tmp t;
    if ((r = psh_store_tmp_open(s, &t, err)) < 0)
        return r;
    if (kiln_write_all(t.fd, data, len) < 0) {
        int e = errno;
        psh_store_tmp_abort(s, &t);
        return kiln_error_set(err, e == ENOSPC ? KILN_ENOSPC : KILN_EIO, e, "write temp blob");
    }
    return tmp_finish(s, &t, digest, NULL, err);
}
