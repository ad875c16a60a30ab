/* Streamed build contexts: chunk store, unpacking, holds and pruning (see
 * bld_context.h for the layout). */
#include "bld_context.h"
#include "chunker.h"
#include "chunkstore.h"
#include "cleanup.h"
#include "fs.h"
#include "digest.h"
#include "log.h"

#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define COPY_BUF ((size_t)64 << 10)

struct bld_contexts {
    char *root;              /* realpath of $DATA/contexts */
    kiln_chunkstore *chunks; /* root/chunks */
};

static const char *hex_of(const char *digest)
{
    return digest + 7;
}

/* ---- small filesystem helpers ---- */

static _Thread_local size_t count_n;
static int count_cb(const char *p, const struct stat *sb, int flag, struct FTW *f)
{
    if (f->level > 0)
        count_n++;
    return 0;
}

static size_t count_entries(const char *dir)
{
    count_n = 0;
    nftw(dir, count_cb, 16, FTW_PHYS);
    return count_n;
}

/* Marks a context as used now (its own dir's times are the tar's). */
static void touch_used(bld_contexts *c, const char *hex)
{
    char p[PATH_MAX];
    snprintf(p, sizeof(p), "%s/%.64s.used", c->root, hex);
    int fd = open(p, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
    if (fd >= 0) {
        futimens(fd, NULL);
        close(fd);
    }
}

/* Removes temp files and dirs nobody holds a flock on. */
static void cleanup_stale(const char *dir, const char *marker)
{
    _cleanup_closedir_ DIR *d = opendir(dir);
    if (d == NULL)
        return;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (strstr(de->d_name, marker) == NULL)
            continue;
        char p[PATH_MAX];
        snprintf(p, sizeof(p), "%s/%s", dir, de->d_name);
        _cleanup_close_ int fd = open(p, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
        if (fd < 0 || flock(fd, LOCK_EX | LOCK_NB) < 0)
            continue;
        struct stat st;
        if (fstat(fd, &st) == 0 && S_ISDIR(st.st_mode))
            kiln_rm_rf(p, NULL);
        else
            unlink(p);
        kiln_info("context", "removed interrupted %s", p);
    }
}

int bld_contexts_new(bld_contexts **out, const char *data_dir, kiln_error **err)
{
    char p[PATH_MAX];
    snprintf(p, sizeof(p), "%s/contexts/chunks", data_dir);
    int r = kiln_mkdir_p(p, 0700, err);
    if (r < 0)
        return r;
    snprintf(p, sizeof(p), "%s/contexts", data_dir);
    bld_contexts *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
    /* Real path: libarchive's symlink checks walk every component of the
     * absolute names it is given, the data dir's included. */
    c->root = realpath(p, NULL);
    if (c->root == NULL) {
        int e = errno;
        bld_contexts_free(c);
        return kiln_error_set(err, KILN_EIO, e, "%s", p);
    }
    snprintf(p, sizeof(p), "%s/chunks", c->root);
    if ((r = kiln_chunkstore_open(&c->chunks, p, err)) < 0) {
        bld_contexts_free(c);
        return r;
    }
    cleanup_stale(c->root, ".tmp-");
    *out = c;
    return 0;
}

void bld_contexts_free(bld_contexts *c)
{
    if (c == NULL)
        return;
    free(c->root);
    kiln_chunkstore_free(c->chunks);
    free(c);
}

int bld_context_validate(const char *context_digest, const bld_ctx_chunk *chunks, size_t n,
                         kiln_error **err)
{
    return kiln_chunks_validate(context_digest, chunks, n, BLD_CTX_MAX_CHUNKS, "context", err);
}

int bld_context_check(bld_contexts *c, const char *context_digest, const bld_ctx_chunk *chunks,
                      size_t n, bool *ready, uint32_t *missing, size_t *n_missing, kiln_error **err)
{
    int r = bld_context_validate(context_digest, chunks, n, err);
    if (r < 0)
        return r;
    char p[PATH_MAX];
    snprintf(p, sizeof(p), "%s/%.64s", c->root, hex_of(context_digest));
    struct stat st;
    *n_missing = 0;
    *ready = stat(p, &st) == 0 && S_ISDIR(st.st_mode);
    if (*ready) {
        touch_used(c, hex_of(context_digest));
        return 0;
    }
    kiln_chunkstore_missing(c->chunks, chunks, n, missing, n_missing);
    return 0;
}

int bld_context_put(bld_contexts *c, const char *digest, const void *data, size_t len,
                    bool *existed, kiln_error **err)
{
    return kiln_chunkstore_put(c->chunks, digest, data, len, existed, err);
}

/* ---- unpacking ---- */

/* Feeds libarchive the chunks in order (kiln_chunk_reader checks each
 * chunk's digest and the digest of the whole stream). */
typedef struct reader {
    kiln_chunk_reader *cr;
    int code; /* first error, 0 none */
    char msg[256];
} reader;

static la_ssize_t rd_read(struct archive *a, void *ud, const void **out)
{
    reader *r = ud;
    if (r->code)
        return -1;
    kiln_error *err = NULL;
    ssize_t n = kiln_chunk_reader_read(r->cr, out, &err);
    if (n < 0) {
        r->code = err ? err->code : KILN_EIO;
        snprintf(r->msg, sizeof(r->msg), "%s", err ? err->msg : "read error");
        kiln_error_free(&err);
        if (a)
            archive_set_error(a, EINVAL, "%s", r->msg);
        return -1;
    }
    return n;
}

/* The entry's name relative to the context root, or NULL when it must be
 * refused (absolute, ".."; empty components are cleaned).  "" is the root. */
static const char *clean_name(const char *name, char *out, size_t cap)
{
    return name != NULL && kiln_path_clean(out, cap, name, 0, NULL) == 0 ? out : NULL;
}

typedef struct unpack_state {
    const char *dir; /* the temp dir being filled */
    size_t n_files;
    uint64_t bytes;
    bool have_root;
    mode_t root_mode;
    struct timespec root_mtime;
} unpack_state;

static int copy_data(struct archive *in, struct archive *out, const char *name, kiln_error **err)
{
    for (;;) {
        const void *buf;
        size_t size;
        la_int64_t off;
        int r = archive_read_data_block(in, &buf, &size, &off);
        if (r == ARCHIVE_EOF)
            return 0;
        if (r < ARCHIVE_WARN)
            return kiln_error_set(err, KILN_EINVAL, 0, "context tar: %s: %s", name,
                                  archive_error_string(in));
        if (archive_write_data_block(out, buf, size, off) < ARCHIVE_WARN)
            return kiln_error_set(err, KILN_EIO, 0, "context: write %s: %s", name,
                                  archive_error_string(out));
    }
}

static int unpack_entry(struct archive *in, struct archive *out, struct archive_entry *e,
                        unpack_state *s, uint64_t tar_size, kiln_error **err)
{
    const char *raw = archive_entry_pathname(e);
    char rel[PATH_MAX], full[PATH_MAX];
    const char *name = clean_name(raw, rel, sizeof(rel));
    if (name == NULL)
        return kiln_error_set(err, KILN_EINVAL, 0,
                              "context tar: refused entry '%.200s' (absolute or '..' path)",
                              raw ? raw : "");
    mode_t type = archive_entry_filetype(e);
    if (archive_entry_hardlink(e) != NULL)
        return kiln_error_set(err, KILN_EINVAL, 0, "context tar: refused hard link '%.200s'", name);
    if (type != AE_IFREG && type != AE_IFDIR && type != AE_IFLNK)
        return kiln_error_set(err, KILN_EINVAL, 0,
                              "context tar: refused '%.200s' (only files, directories and "
                              "symlinks)",
                              name);
    if (archive_entry_sparse_count(e) > 0)
        return kiln_error_set(err, KILN_EINVAL, 0, "context tar: refused sparse file '%.200s'",
                              name);
    if (name[0] == '\0') {
        /* The context root itself: its mode and mtime, applied at the end. */
        if (type != AE_IFDIR)
            return kiln_error_set(err, KILN_EINVAL, 0, "context tar: the root is not a directory");
        s->have_root = true;
        s->root_mode = archive_entry_perm(e);
        s->root_mtime.tv_sec = archive_entry_mtime(e);
        s->root_mtime.tv_nsec = archive_entry_mtime_nsec(e);
        return 0;
    }
    if (++s->n_files > BLD_CTX_MAX_ENTRIES)
        return kiln_error_set(err, KILN_ENOSPC, 0, "context tar: more than %d entries",
                              BLD_CTX_MAX_ENTRIES);
    la_int64_t size = archive_entry_size(e);
    s->bytes += size > 0 ? (uint64_t)size : 0;
    if (s->bytes > tar_size)
        return kiln_error_set(err, KILN_EINVAL, 0, "context tar: entries larger than the tar");
    if ((size_t)snprintf(full, sizeof(full), "%s/%s", s->dir, name) >= sizeof(full))
        return kiln_error_set(err, KILN_EINVAL, 0, "context tar: name too long");
    /* libarchive is given absolute names under our own temp dir (the server
     * is threaded, so no chdir); the relative name was checked above, which
     * is what ARCHIVE_EXTRACT_SECURE_NOABSOLUTEPATHS would have done. */
    archive_entry_set_pathname(e, full);
    archive_entry_set_uid(e, 0);
    archive_entry_set_gid(e, 0);
    if (archive_write_header(out, e) < ARCHIVE_WARN)
        return kiln_error_set(err, KILN_EINVAL, 0, "context: %.200s: %s", name,
                              archive_error_string(out));
    if (type == AE_IFREG && size > 0) {
        int r = copy_data(in, out, name, err);
        if (r < 0)
            return r;
    }
    if (archive_write_finish_entry(out) < ARCHIVE_WARN)
        return kiln_error_set(err, KILN_EIO, 0, "context: %.200s: %s", name,
                              archive_error_string(out));
    return 0;
}

static int unpack_into(reader *rd, const char *context_digest, const char *dir, uint64_t tar_size,
                       const atomic_bool *cancel, size_t *n_files, kiln_error **err)
{
    struct archive *in = archive_read_new();
    struct archive *out = archive_write_disk_new();
    if (in == NULL || out == NULL) {
        archive_read_free(in);
        archive_write_free(out);
        return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
    }
    archive_read_support_format_tar(in);
    archive_write_disk_set_options(
        out, ARCHIVE_EXTRACT_TIME | ARCHIVE_EXTRACT_PERM | ARCHIVE_EXTRACT_SECURE_NODOTDOT |
                 ARCHIVE_EXTRACT_SECURE_SYMLINKS | ARCHIVE_EXTRACT_NO_OVERWRITE);
    unpack_state s = {.dir = dir};
    int r = 0;
    if (archive_read_open(in, rd, NULL, rd_read, NULL) != ARCHIVE_OK) {
        r = kiln_error_set(err, rd->code ? rd->code : KILN_EINVAL, 0, "context tar: %s",
                           rd->code ? rd->msg : archive_error_string(in));
        goto out;
    }
    for (;;) {
        struct archive_entry *e;
        int ar = archive_read_next_header(in, &e);
        if (ar == ARCHIVE_EOF)
            break;
        if (ar < ARCHIVE_WARN || rd->code) {
            r = kiln_error_set(err, rd->code ? rd->code : KILN_EINVAL, 0, "context tar: %s",
                               rd->code ? rd->msg : archive_error_string(in));
            goto out;
        }
        if (cancel && atomic_load(cancel)) {
            r = kiln_error_set(err, KILN_ECANCELED, 0, "cancelled while unpacking the context");
            goto out;
        }
        if ((r = unpack_entry(in, out, e, &s, tar_size, err)) < 0) {
            if (rd->code) { /* the reader's error explains libarchive's */
                kiln_error_free(err);
                r = kiln_error_set(err, rd->code, 0, "%s", rd->msg);
            }
            goto out;
        }
    }
    if (archive_write_close(out) < ARCHIVE_WARN) {
        r = kiln_error_set(err, KILN_EIO, 0, "context: %s", archive_error_string(out));
        goto out;
    }
    /* libarchive stops at the end-of-archive blocks; the rest of the stream
     * still counts for the digest (and must be well-formed). */
    if (rd->code) {
        r = kiln_error_set(err, rd->code, 0, "%s", rd->msg);
        goto out;
    }
    if ((r = kiln_chunk_reader_finish(rd->cr, context_digest, err)) < 0)
        goto out;
    if (s.have_root) {
        chmod(dir, s.root_mode & 07777);
        struct timespec ts[2] = {s.root_mtime, s.root_mtime};
        utimensat(AT_FDCWD, dir, ts, AT_SYMLINK_NOFOLLOW);
    }
    *n_files = s.n_files;
out:
    archive_read_free(in);
    archive_write_free(out);
    return r;
}

/* Unpacks the context into contexts/<hex>.tmp-XXXXXX and renames it into
 * place; losing the rename to a concurrent build of the same digest is fine. */
static int unpack(bld_contexts *c, const char *context_digest, const bld_ctx_chunk *chunks,
                  size_t n, const atomic_bool *cancel, size_t *n_files, bool *won, kiln_error **err)
{
    uint64_t tar_size = 0;
    for (size_t i = 0; i < n; i++) {
        tar_size += chunks[i].size;
        if (!kiln_chunkstore_has(c->chunks, &chunks[i], false))
            return kiln_error_set(err, KILN_EPRECOND, 0,
                                  "context chunk %zu of %zu (%.71s) is missing on the builder "
                                  "(send it with ContextPut first)",
                                  i + 1, n, chunks[i].digest);
    }
    char tmp[PATH_MAX], dst[PATH_MAX];
    snprintf(tmp, sizeof(tmp), "%s/%.64s.tmp-XXXXXX", c->root, hex_of(context_digest));
    snprintf(dst, sizeof(dst), "%s/%.64s", c->root, hex_of(context_digest));
    if (mkdtemp(tmp) == NULL)
        return kiln_error_set(err, kiln_code_from_errno(errno), errno, "mkdtemp %s", tmp);
    _cleanup_close_ int lfd = open(tmp, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (lfd >= 0)
        flock(lfd, LOCK_EX);
    reader rd = {0};
    int r = kiln_chunk_reader_new(&rd.cr, c->chunks, chunks, n, "context", "on the builder", err);
    if (r == 0)
        r = unpack_into(&rd, context_digest, tmp, tar_size, cancel, n_files, err);
    kiln_chunk_reader_free(rd.cr);
    *won = false;
    if (r == 0 && rename(tmp, dst) < 0) {
        if (errno != EEXIST && errno != ENOTEMPTY)
            r = kiln_error_set(err, kiln_code_from_errno(errno), errno, "rename %s", dst);
    } else if (r == 0) {
        (void)kiln_fsync_dir(c->root);
        *won = true;
        return 0;
    }
    kiln_rm_rf(tmp, NULL);
    return r;
}

int bld_context_acquire(bld_contexts *c, const char *context_digest, const bld_ctx_chunk *chunks,
                        size_t n, const atomic_bool *cancel, bld_ctx_hold *out, kiln_error **err)
{
    *out = (bld_ctx_hold){.lock_fd = -1};
    int r = bld_context_validate(context_digest, chunks, n, err);
    if (r < 0)
        return r;
    const char *hex = hex_of(context_digest);
    char dst[PATH_MAX];
    snprintf(dst, sizeof(dst), "%s/%.64s", c->root, hex);
    size_t n_files = 0;
    bool unpacked = false;
    for (int attempt = 0; attempt < 5; attempt++) {
        _cleanup_close_ int fd = open(dst, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
        if (fd < 0) {
            if (errno != ENOENT)
                return kiln_error_set(err, kiln_code_from_errno(errno), errno, "open %s", dst);
            /* One unpack per digest at a time: the others wait here and then
             * find it done (losing the rename race below is handled too). */
            char used[PATH_MAX];
            snprintf(used, sizeof(used), "%s/%.64s.used", c->root, hex);
            _cleanup_close_ int ufd = open(used, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
            if (ufd >= 0)
                flock(ufd, LOCK_EX);
            if (access(dst, F_OK) == 0)
                continue;
            bool won = false;
            if ((r = unpack(c, context_digest, chunks, n, cancel, &n_files, &won, err)) < 0)
                return r;
            unpacked = won;
            continue;
        }
        /* Prune takes an exclusive lock, then renames the dir away: after
         * our shared lock the path must still be this dir. */
        flock(fd, LOCK_SH);
        struct stat a, b;
        if (fstat(fd, &a) < 0 || stat(dst, &b) < 0 || a.st_ino != b.st_ino || a.st_dev != b.st_dev)
            continue;
        touch_used(c, hex);
        out->dir = strdup(dst);
        if (out->dir == NULL)
            return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
        out->lock_fd = steal_fd(&fd);
        out->unpacked = unpacked;
        out->n_files = unpacked ? n_files : count_entries(dst);
        return 0;
    }
    return kiln_error_set(err, KILN_EUNAVAIL, 0, "context %s keeps being removed; retry",
                          context_digest);
}

void bld_context_release(bld_ctx_hold *h)
{
    if (h->lock_fd >= 0)
        close(h->lock_fd);
    h->lock_fd = -1;
    free(h->dir);
    h->dir = NULL;
}

/* ---- pruning ---- */

static bool is_hex64(const char *s)
{
    size_t i = 0;
    for (; s[i]; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return false;
    return i == 64;
}

static bool old_enough(const struct stat *st, uint64_t max_age_s, time_t now)
{
    return max_age_s == 0 || (uint64_t)(now - st->st_mtime) >= max_age_s;
}

static size_t prune_contexts(bld_contexts *c, uint64_t max_age_s, time_t now)
{
    _cleanup_closedir_ DIR *d = opendir(c->root);
    size_t removed = 0;
    struct dirent *de;
    while (d && (de = readdir(d)) != NULL) {
        if (!is_hex64(de->d_name))
            continue;
        char p[PATH_MAX], used[PATH_MAX];
        snprintf(p, sizeof(p), "%s/%.64s", c->root, de->d_name);
        snprintf(used, sizeof(used), "%s/%.64s.used", c->root, de->d_name);
        struct stat st;
        if (stat(used, &st) < 0 && stat(p, &st) < 0)
            continue;
        if (!old_enough(&st, max_age_s, now))
            continue;
        _cleanup_close_ int fd = open(p, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
        if (fd < 0 || flock(fd, LOCK_EX | LOCK_NB) < 0)
            continue; /* a build holds it */
        char gone[PATH_MAX];
        snprintf(gone, sizeof(gone), "%s/%.64s.tmp-prune-%d", c->root, de->d_name, (int)getpid());
        if (rename(p, gone) < 0)
            continue;
        unlink(used);
        kiln_rm_rf(gone, NULL);
        removed++;
    }
    return removed;
}

int bld_contexts_prune(bld_contexts *c, uint64_t max_age_s, size_t *removed, kiln_error **err)
{
    time_t now = time(NULL);
    size_t nc = prune_contexts(c, max_age_s, now);
    size_t nk = kiln_chunkstore_prune(c->chunks, max_age_s);
    if (nc || nk)
        kiln_info("context", "pruned %zu unpacked context(s) and %zu chunk(s)", nc, nk);
    if (removed)
        *removed = nc + nk;
    return 0;
}
