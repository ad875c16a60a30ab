/* COPY and ADD into a step's upper dir.
 *
 * Sources: paths or globs relative to a source root (the build context, or a
 * stage's merged tree for --from).  A source may not leave its root, neither
 * lexically ("../x") nor through a symlink (its real path must stay inside);
 * symlinks inside copied directories are copied as links, never followed.
 * .dockerignore applies to context sources.
 *
 * Destination: every write goes into the upper dir, which only this code
 * writes while the step runs, at a path resolved inside the image root
 * (engine_fs.c).  Copied entries keep their mode, mtime, hard links and
 * xattrs, are owned by root or --chown, and get --chmod when given.  ADD
 * extracts local tar archives (recognised by content; compressed with gzip,
 * bzip2, xz, lzma or zstd) with the snapshot unpacker's checks, and downloads
 * URLs (engine_fetch.c) into the step's scratch dir. */
#include "engine_internal.h"
#include "plan.h" /* bld_chmod_apply */

#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#include <archive.h>
#include <archive_entry.h>

#include "cleanup.h"
#include "fs.h"
#include "bld_snapshot.h"
#include "ignore.h"

#define MAX_MATCHES 100000
#define MAX_DEPTH   256

/* ---- sources ---- */

struct hlink {
    dev_t dev;
    ino_t ino;
    char *dst;
};

typedef struct src_ctx {
    const eng_copy_desc *d;
    const struct kiln_ignore *ignore;
    const struct kiln_ignore *exclude; /* --exclude patterns, or NULL */
    bool keep_owner;     /* extracted archive: owners from the archive unless --chown */
    kiln_strv *fix;      /* parents recreated from lower layers: times restored at the end */
    char root[PATH_MAX]; /* real path of src_root */
    struct hlink *links; /* files with several links already copied (dev, ino -> dst) */
    size_t n_links, cap_links;
    kiln_sha256 *h; /* hashing instead of copying */
} src_ctx;

static bool ignored(const src_ctx *c, const char *rel)
{
    return rel[0] && ((c->ignore && kiln_ignore_match(c->ignore, rel)) ||
                      (c->exclude && kiln_ignore_match(c->exclude, rel)));
}

static int dirent_filter(const struct dirent *de)
{
    return strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0;
}

/* Expands pattern (cleaned, relative) into matches (relative paths). */
static int glob_walk(src_ctx *c, const char *base, const char *pat, kiln_strv *out,
                     kiln_error **err)
{
    const char *slash = strchr(pat, '/');
    size_t cl = slash ? (size_t)(slash - pat) : strlen(pat);
    _cleanup_free_ char *comp = strndup(pat, cl);
    if (comp == NULL)
        return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
    char dir[2 * PATH_MAX];
    snprintf(dir, sizeof(dir), "%s%s%s", c->root, base[0] ? "/" : "", base);
    struct dirent **ents = NULL;
    int n = scandir(dir, &ents, dirent_filter, alphasort);
    if (n < 0)
        return 0;
    int rc = 0;
    for (int i = 0; i < n; i++) {
        bool m = false;
        if (rc == 0 && (rc = kiln_glob_match(&m, comp, ents[i]->d_name, err)) == 0 && m) {
            char rel[ENG_PATH_MAX];
            snprintf(rel, sizeof(rel), "%s%s%s", base, base[0] ? "/" : "", ents[i]->d_name);
            if (ignored(c, rel))
                ;
            else if (slash)
                rc = glob_walk(c, rel, slash + 1, out, err);
            else if (out->n >= MAX_MATCHES)
                rc = kiln_error_set(err, KILN_ENOSPC, 0, "too many matches for a source");
            else if (kiln_strv_push(out, rel) < 0)
                rc = kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
        }
        free(ents[i]);
    }
    free(ents);
    return rc;
}

/* Real host path of rel, which must stay inside the root. */
static int confine(src_ctx *c, const char *rel, char real[PATH_MAX], kiln_error **err)
{
    char p[2 * PATH_MAX];
    snprintf(p, sizeof(p), "%s/%s", c->root, rel);
    if (realpath(p, real) == NULL)
        return kiln_error_set(err, KILN_ENOENT, errno, "%s: %s: not found in %s", c->d->what, rel,
                              c->d->ignore ? "the build context" : "the source");
    size_t rl = strlen(c->root);
    if (strncmp(real, c->root, rl) != 0 || (real[rl] != '/' && real[rl] != '\0'))
        return kiln_error_set(err, KILN_EPERM, 0, "%s: %s: points outside the %s", c->d->what, rel,
                              c->d->ignore ? "build context" : "source");
    return 0;
}

/* Matches of one source, in order. */
static int expand_source(src_ctx *c, const char *path, kiln_strv *out, kiln_error **err)
{
    char rel[ENG_PATH_MAX];
    if (kiln_path_clean(rel, sizeof(rel), path[0] == '/' ? path + 1 : path,
                        KILN_PATH_ABS | KILN_PATH_DOTDOT, NULL) < 0)
        return kiln_error_set(err, KILN_EPERM, 0, "%s: %s: outside the %s", c->d->what, path,
                              c->d->ignore ? "build context" : "source");
    if (kiln_glob_has_meta(rel)) {
        size_t before = out->n;
        int rc = glob_walk(c, "", rel, out, err);
        if (rc < 0)
            return rc;
        if (out->n == before)
            return kiln_error_set(err, KILN_ENOENT, 0, "%s: no source files were specified by %s",
                                  c->d->what, path);
        return 0;
    }
    if (ignored(c, rel))
        return kiln_error_set(err, KILN_ENOENT, 0,
                              "%s: %s: not found in the build context (excluded by "
                              ".dockerignore)",
                              c->d->what, path);
    return kiln_strv_push(out, rel) < 0 ? kiln_error_set(err, KILN_ENOSPC, 0, "out of memory") : 0;
}

/* COPY --parents "a/b/./c/x.c": the cleaned part before the last "/./" ("a/b")
 * into pivot, and its length; 0 without one (the whole path is kept). */
static size_t parents_pivot(const char *pattern, char pivot[ENG_PATH_MAX])
{
    const char *p = pattern[0] == '/' ? pattern + 1 : pattern, *last = NULL;
    for (const char *q = strstr(p, "/./"); q; q = strstr(q + 1, "/./"))
        last = q;
    if (last == NULL || last == p)
        return 0;
    char raw[ENG_PATH_MAX];
    if ((size_t)(last - p) >= sizeof(raw))
        return 0;
    memcpy(raw, p, (size_t)(last - p));
    raw[last - p] = '\0';
    if (kiln_path_clean(pivot, ENG_PATH_MAX, raw, KILN_PATH_ABS | KILN_PATH_DOTDOT, NULL) < 0)
        return 0;
    return strlen(pivot);
}

/* ---- copying ---- */

static int apply_meta(const src_ctx *c, const char *dst, const struct stat *st, bool link)
{
    const eng_copy_desc *d = c->d;
    uid_t u = (uid_t)(d->uid >= 0 ? d->uid : 0);
    gid_t g = (gid_t)(d->gid >= 0 ? d->gid : 0);
    if (c->keep_owner && d->uid < 0) {
        u = st->st_uid;
        g = st->st_gid;
    }
    if (lchown(dst, u, g) < 0)
        return -1;
    mode_t mode = d->mode >= 0 ? (mode_t)d->mode : (st->st_mode & 07777);
    unsigned sym = 0;
    /* Symbolic --chmod: applied to each entry's own mode, as BuildKit does. */
    if (d->mode_sym &&
        bld_chmod_apply(d->mode_sym, st->st_mode & 07777, S_ISDIR(st->st_mode), &sym) == 0)
        mode = (mode_t)sym;
    if (!link && chmod(dst, mode) < 0)
        return -1;
    struct timespec ts[2] = {st->st_atim, st->st_mtim};
    return utimensat(AT_FDCWD, dst, ts, AT_SYMLINK_NOFOLLOW);
}

/* Copies extended attributes (security.capability, user.*, ...), except the
 * overlay's own, from src to dst (neither followed). */
static int copy_xattrs(const char *src, const char *dst, kiln_error **err)
{
    char names[4096];
    ssize_t n = llistxattr(src, names, sizeof(names));
    if (n <= 0)
        return 0; /* none, or not supported where the source lives */
    for (char *k = names; k < names + n; k += strlen(k) + 1) {
        if (strncmp(k, "trusted.overlay.", 16) == 0 || strncmp(k, "user.overlay.", 13) == 0)
            continue;
        char v[65536];
        ssize_t vl = lgetxattr(src, k, v, sizeof(v));
        if (vl < 0)
            continue;
        if (lsetxattr(dst, k, v, (size_t)vl, 0) < 0 && errno != ENOTSUP && errno != EPERM)
            return kiln_error_set(err, KILN_EIO, errno, "set xattr %s on %s", k, dst);
    }
    return 0;
}

/* A file with several links copied earlier in this COPY: link to its copy. */
static int hardlink_seen(src_ctx *c, const struct stat *st, const char *dst, bool *done,
                         kiln_error **err)
{
    *done = false;
    if (dst == NULL || st->st_nlink < 2)
        return 0;
    for (size_t i = 0; i < c->n_links; i++) {
        if (c->links[i].dev != st->st_dev || c->links[i].ino != st->st_ino)
            continue;
        unlink(dst);
        if (link(c->links[i].dst, dst) < 0)
            return kiln_error_set(err, KILN_EIO, errno, "link %s", dst);
        *done = true;
        return 0;
    }
    if (c->n_links == c->cap_links) {
        size_t nc = c->cap_links ? 2 * c->cap_links : 16;
        struct hlink *l = realloc(c->links, nc * sizeof(*l));
        if (l == NULL)
            return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
        c->links = l;
        c->cap_links = nc;
    }
    if ((c->links[c->n_links].dst = strdup(dst)) == NULL)
        return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
    c->links[c->n_links].dev = st->st_dev;
    c->links[c->n_links].ino = st->st_ino;
    c->n_links++;
    return 0;
}

static void src_dispose(src_ctx *c)
{
    for (size_t i = 0; i < c->n_links; i++)
        free(c->links[i].dst);
    free(c->links);
    c->links = NULL;
    c->n_links = c->cap_links = 0;
}

static int copy_file(const char *src, const char *dst, kiln_sha256 *h, kiln_error **err)
{
    _cleanup_close_ int in = open(src, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (in < 0)
        return kiln_error_set(err, KILN_EIO, errno, "open %s", src);
    _cleanup_close_ int out = -1;
    if (dst) {
        unlink(dst);
        out = open(dst, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
        if (out < 0)
            return kiln_error_set(err, KILN_EIO, errno, "create %s", dst);
    }
    char buf[65536];
    for (;;) {
        ssize_t n = read(in, buf, sizeof(buf));
        if (n < 0)
            return kiln_error_set(err, KILN_EIO, errno, "read %s", src);
        if (n == 0)
            break;
        if (h)
            kiln_sha256_update(h, buf, (size_t)n);
        if (out >= 0 && write(out, buf, (size_t)n) != n)
            return kiln_error_set(err, KILN_EIO, errno, "write %s", dst);
    }
    return 0;
}

static void hash_meta(kiln_sha256 *h, const char *name, const struct stat *st)
{
    char line[ENG_PATH_MAX + 64];
    int n = snprintf(line, sizeof(line), "\n%s\n%o %lld\n", name, (unsigned)st->st_mode,
                     (long long)(S_ISREG(st->st_mode) ? st->st_size : 0));
    kiln_sha256_update(h, line, (size_t)(n > 0 ? n : 0));
}

/* Copies (or hashes) host path src, whose context-relative path is rel, to
 * the upper path dst (NULL when hashing). */
static int copy_tree(src_ctx *c, const char *src, const char *rel, const char *dst, int depth,
                     kiln_error **err)
{
    if (depth > MAX_DEPTH)
        return kiln_error_set(err, KILN_EINVAL, 0, "%s: %s: too deep", c->d->what, rel);
    struct stat st;
    if (lstat(src, &st) < 0)
        return kiln_error_set(err, KILN_EIO, errno, "stat %s", src);
    if (c->h)
        hash_meta(c->h, rel, &st);
    if (S_ISREG(st.st_mode)) {
        bool linked = false;
        int rc = hardlink_seen(c, &st, dst, &linked, err);
        if (rc < 0 || linked)
            return rc;
        rc = copy_file(src, dst, c->h, err);
        if (rc < 0)
            return rc;
    } else if (S_ISLNK(st.st_mode)) {
        char t[ENG_PATH_MAX];
        ssize_t tl = readlink(src, t, sizeof(t) - 1);
        if (tl < 0)
            return kiln_error_set(err, KILN_EIO, errno, "readlink %s", src);
        t[tl] = '\0';
        if (c->h)
            kiln_sha256_update(c->h, t, (size_t)tl);
        if (dst) {
            unlink(dst);
            if (symlink(t, dst) < 0)
                return kiln_error_set(err, KILN_EIO, errno, "symlink %s", dst);
        }
    } else if (S_ISDIR(st.st_mode)) {
        if (dst) {
            struct stat ds;
            if (lstat(dst, &ds) == 0 && !S_ISDIR(ds.st_mode))
                unlink(dst);
            if (mkdir(dst, 0755) < 0 && errno != EEXIST)
                return kiln_error_set(err, KILN_EIO, errno, "mkdir %s", dst);
        }
        struct dirent **ents = NULL;
        int n = scandir(src, &ents, dirent_filter, alphasort);
        if (n < 0)
            return kiln_error_set(err, KILN_EIO, errno, "read dir %s", src);
        int rc = 0;
        for (int i = 0; i < n; i++) {
            char crel[ENG_PATH_MAX], csrc[2 * PATH_MAX], cdst[2 * ENG_PATH_MAX];
            snprintf(crel, sizeof(crel), "%s%s%s", rel, rel[0] ? "/" : "", ents[i]->d_name);
            snprintf(csrc, sizeof(csrc), "%s/%s", src, ents[i]->d_name);
            if (dst)
                snprintf(cdst, sizeof(cdst), "%s/%s", dst, ents[i]->d_name);
            if (rc == 0 && !ignored(c, crel))
                rc = copy_tree(c, csrc, crel, dst ? cdst : NULL, depth + 1, err);
            free(ents[i]);
        }
        free(ents);
        if (rc < 0)
            return rc;
    } else if (S_ISFIFO(st.st_mode)) {
        if (dst && mkfifo(dst, 0600) < 0)
            return kiln_error_set(err, KILN_EIO, errno, "mkfifo %s", dst);
    } else {
        return 0; /* sockets and devices are not copied */
    }
    /* A source directory gives its contents: the destination directory keeps
     * its own metadata (or what eng_ensure_dirs gave it), the image root too. */
    if (depth == 0 && S_ISDIR(st.st_mode))
        return 0;
    if (dst && apply_meta(c, dst, &st, S_ISLNK(st.st_mode)) < 0)
        return kiln_error_set(err, KILN_EIO, errno, "set owner/mode/times of %s", dst);
    /* After the chown, which would drop security.capability. */
    return dst ? copy_xattrs(src, dst, err) : 0;
}

static int src_init(src_ctx *c, const eng_copy_desc *d, kiln_sha256 *h, kiln_error **err)
{
    c->d = d;
    c->h = h;
    c->ignore = d->ignore;
    c->exclude = d->exclude;
    c->keep_owner = false;
    c->fix = NULL;
    c->links = NULL;
    c->n_links = c->cap_links = 0;
    if (realpath(d->src_root, c->root) == NULL)
        return kiln_error_set(err, KILN_ENOENT, errno, "%s: source root %s", d->what, d->src_root);
    return 0;
}

typedef enum arch_kind {
    ARCH_NONE,     /* not a tar archive: copied as a file */
    ARCH_DIRECT,   /* plain tar, gzip or zstd: the layer unpacker reads it */
    ARCH_FILTERED, /* bzip2, xz or lzma: decompressed to a plain tar first */
} arch_kind;

/* The decompressors ADD accepts, those built into libarchive (probed once:
 * one that would run an external program is left out, so its archives are
 * copied as files). */
typedef int (*filter_fn)(struct archive *);
static const filter_fn filters[] = {
    archive_read_support_filter_gzip, archive_read_support_filter_bzip2,
    archive_read_support_filter_xz,   archive_read_support_filter_lzma,
    archive_read_support_filter_zstd,
};
static unsigned builtin_filters; /* bit i: filters[i] is built in */
static pthread_once_t filters_once = PTHREAD_ONCE_INIT;

static void probe_filters(void)
{
    for (size_t i = 0; i < sizeof(filters) / sizeof(filters[0]); i++) {
        struct archive *a = archive_read_new();
        if (a && filters[i](a) == ARCHIVE_OK)
            builtin_filters |= 1u << i;
        archive_read_free(a);
    }
}

static void add_filters(struct archive *a)
{
    pthread_once(&filters_once, probe_filters);
    for (size_t i = 0; i < sizeof(filters) / sizeof(filters[0]); i++)
        if (builtin_filters & (1u << i))
            filters[i](a);
}

static const char *arch_err(struct archive *a)
{
    const char *m = archive_error_string(a);
    return m ? m : "not a readable archive";
}

/* Whether a file is a tar archive ADD extracts, by content (as Docker: a
 * known compression, or none, around something whose first tar header
 * parses); anything else, e.g. a gzip of a text file, is copied as is. */
static arch_kind archive_kind(const char *path)
{
    struct archive *a = archive_read_new();
    if (a == NULL)
        return ARCH_NONE;
    arch_kind k = ARCH_NONE;
    struct archive_entry *e;
    int r;
    add_filters(a);
    if (archive_read_support_format_tar(a) == ARCHIVE_OK &&
        archive_read_open_filename(a, path, 65536) == ARCHIVE_OK &&
        ((r = archive_read_next_header(a, &e)) == ARCHIVE_OK || r == ARCHIVE_WARN)) {
        int f = archive_filter_code(a, 0);
        k = f == ARCHIVE_FILTER_NONE || f == ARCHIVE_FILTER_GZIP || f == ARCHIVE_FILTER_ZSTD
                ? ARCH_DIRECT
                : ARCH_FILTERED;
    }
    archive_read_free(a);
    return k;
}

#define MAX_DECOMPRESSED ((int64_t)64 << 30) /* a bzip2/xz archive's tar, in scratch */

/* Decompresses src (bzip2, xz, lzma) into the new file dst. */
static int decompress(const char *src, const char *dst, kiln_error **err)
{
    struct archive *a = archive_read_new();
    if (a == NULL)
        return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
    _cleanup_close_ int out = open(dst, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    _cleanup_free_ char *buf = malloc(65536);
    struct archive_entry *e;
    add_filters(a);
    int rc = 0;
    if (out < 0)
        rc = kiln_error_set(err, KILN_EIO, errno, "create %s", dst);
    else if (buf == NULL)
        rc = kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
    else if (archive_read_support_format_raw(a) != ARCHIVE_OK ||
             archive_read_open_filename(a, src, 65536) != ARCHIVE_OK ||
             archive_read_next_header(a, &e) != ARCHIVE_OK)
        rc = kiln_error_set(err, KILN_EINVAL, 0, "%s", arch_err(a));
    for (int64_t total = 0; rc == 0;) {
        la_ssize_t n = archive_read_data(a, buf, 65536);
        if (n < 0)
            rc = kiln_error_set(err, KILN_EINVAL, 0, "%s", arch_err(a));
        else if (n == 0)
            break;
        else if ((total += n) > MAX_DECOMPRESSED)
            rc = kiln_error_set(err, KILN_ENOSPC, 0, "more than %lld bytes uncompressed",
                                (long long)MAX_DECOMPRESSED);
        else if (write(out, buf, (size_t)n) != n)
            rc = kiln_error_set(err, KILN_EIO, errno, "write %s", dst);
    }
    archive_read_free(a);
    return rc;
}

/* ADD of a local archive: unpacked like a base layer (same checks against
 * hostile entries: no name climbing above the target, a leading "/" taken
 * relative to it as Docker does, no link leaving the tree, nothing written
 * through a symlink) into scratch, then copied into the directory target.
 * bzip2/xz/lzma are first decompressed to a plain tar. */
static int extract_archive(src_ctx *c, const char *real, arch_kind kind, const char *target,
                           kiln_error **err)
{
    const eng_copy_desc *d = c->d;
    char x[ENG_PATH_MAX], tar[ENG_PATH_MAX + 8];
    snprintf(x, sizeof(x), "%s/x-XXXXXX", d->scratch);
    if (mkdtemp(x) == NULL || chmod(x, 0755) < 0)
        return kiln_error_set(err, KILN_EIO, errno, "mkdtemp %s", x);
    snprintf(tar, sizeof(tar), "%s.tar", x);
    char diff_id[KILN_DIGEST_STRLEN + 1];
    bld_layer l = {.blob_path = real, .media = BLD_LAYER_AUTO};
    int rc = 0;
    if (kind == ARCH_FILTERED) {
        rc = decompress(real, tar, err);
        l = (bld_layer){.blob_path = tar, .media = BLD_LAYER_TAR};
    }
    if (rc == 0)
        rc = bld_layer_unpack(diff_id, &l, x, NULL, 0, err);
    unlink(tar);
    if (rc < 0)
        kiln_error_wrap(err, "ADD: extract %s", real);
    if (rc == 0)
        rc = eng_ensure_dirs(d, target, d->uid, d->gid, c->fix, err);
    if (rc == 0) {
        src_ctx xc = *c;
        xc.ignore = NULL;
        xc.exclude = NULL;
        xc.keep_owner = true;
        xc.links = NULL;
        xc.n_links = xc.cap_links = 0;
        char up[2 * ENG_PATH_MAX];
        snprintf(up, sizeof(up), "%s%s%s", d->upper, target[0] ? "/" : "", target);
        rc = copy_tree(&xc, x, "", up, 0, err);
        src_dispose(&xc);
    }
    eng_rmrf(x);
    return rc;
}

/* ---- URL sources ---- */

bool eng_copy_fetches_early(const eng_copy_desc *d)
{
    for (size_t i = 0; i < d->n_srcs; i++)
        if (d->srcs[i].url && d->checksum == NULL)
            return true;
    return false;
}

/* Where source i is downloaded: scratch/fetch-<i>/data. */
static int fetch_path(const eng_copy_desc *d, size_t i, char dir[ENG_PATH_MAX],
                      char file[ENG_PATH_MAX], kiln_error **err)
{
    if (d->scratch == NULL)
        return kiln_error_set(err, KILN_EINTERNAL, 0, "ADD: no scratch dir for a download");
    if (snprintf(dir, ENG_PATH_MAX, "%s/fetch-%zu", d->scratch, i) >= ENG_PATH_MAX ||
        snprintf(file, ENG_PATH_MAX, "%s/data", dir) >= ENG_PATH_MAX)
        return kiln_error_set(err, KILN_EINVAL, 0, "data dir path too long");
    return 0;
}

/* Downloads source i unless an earlier phase did. */
static int fetch_src(const eng_copy_desc *d, size_t i, char file[ENG_PATH_MAX],
                     char digest[KILN_DIGEST_STRLEN + 1], kiln_error **err)
{
    char dir[ENG_PATH_MAX];
    int rc = fetch_path(d, i, dir, file, err);
    if (rc < 0)
        return rc;
    struct stat st;
    if (lstat(file, &st) == 0 && S_ISREG(st.st_mode))
        return 0;
    if (mkdir(dir, 0700) < 0 && errno != EEXIST)
        return kiln_error_set(err, KILN_EIO, errno, "mkdir %s", dir);
    return eng_fetch(digest, d->srcs[i].url, file, d->checksum, d->cancel, err);
}

/* Cache key part of a URL source: its file name and its checksum when one
 * was given (no download: a cache hit needs no network), else the digest of
 * its content, downloaded now and kept for the copy. */
static int hash_url(const eng_copy_desc *d, size_t i, kiln_sha256 *h, kiln_error **err)
{
    char name[ENG_NAME_MAX + 1], file[ENG_PATH_MAX];
    eng_url_filename(name, d->srcs[i].url);
    kiln_sha256_update(h, "url", 4);
    kiln_sha256_update(h, name, strlen(name) + 1);
    if (d->checksum) {
        kiln_sha256_update(h, d->checksum, strlen(d->checksum) + 1);
        return 0;
    }
    char digest[KILN_DIGEST_STRLEN + 1] = "";
    int rc = fetch_src(d, i, file, digest, err);
    if (rc == 0)
        kiln_sha256_update(h, digest, strlen(digest) + 1);
    return rc;
}

/* parent = target without its last component ("" for a top-level name). */
static void parent_dir(char parent[ENG_PATH_MAX], const char *target)
{
    snprintf(parent, ENG_PATH_MAX, "%s", target);
    char *sl = strrchr(parent, '/');
    if (sl)
        *sl = '\0';
    else
        parent[0] = '\0';
}

/* ADD <url> dest: the download, not extracted (unless --unpack=true), is
 * moved to dest/<name> (as_dir) or dest, mode 0600 unless --chmod, owned by
 * root or --chown, with the Last-Modified time. */
static int add_url(src_ctx *c, size_t i, const char *dest, bool as_dir, kiln_error **err)
{
    const eng_copy_desc *d = c->d;
    char file[ENG_PATH_MAX], digest[KILN_DIGEST_STRLEN + 1];
    int rc = fetch_src(d, i, file, digest, err);
    if (rc < 0)
        return rc;
    arch_kind ak = d->extract_urls ? archive_kind(file) : ARCH_NONE;
    if (ak != ARCH_NONE) {
        rc = extract_archive(c, file, ak, dest, err);
        unlink(file);
        return rc;
    }
    char name[ENG_NAME_MAX + 1], target[ENG_PATH_MAX], parent[ENG_PATH_MAX];
    eng_url_filename(name, d->srcs[i].url);
    if (snprintf(target, sizeof(target), "%s%s%s", as_dir ? dest : "", as_dir && dest[0] ? "/" : "",
                 as_dir ? name : dest) >= (int)sizeof(target))
        return kiln_error_set(err, KILN_EINVAL, 0, "ADD: destination too long");
    if (target[0] == '\0')
        return kiln_error_set(err, KILN_EINVAL, 0, "ADD: cannot replace the root with a file");
    parent_dir(parent, target);
    if ((rc = eng_ensure_dirs(d, parent, d->uid, d->gid, c->fix, err)) < 0)
        return rc;
    char up[2 * ENG_PATH_MAX];
    snprintf(up, sizeof(up), "%s/%s", d->upper, target);
    struct stat st, us;
    if (lstat(file, &st) < 0)
        return kiln_error_set(err, KILN_EIO, errno, "stat %s", file);
    if (lstat(up, &us) == 0 && S_ISDIR(us.st_mode))
        eng_rmrf(up);
    /* Same filesystem as the upper: a rename, not a second copy of it all. */
    if (rename(file, up) < 0 &&
        (errno != EXDEV || (rc = copy_file(file, up, NULL, err)) < 0 || unlink(file) < 0))
        return rc < 0 ? rc : kiln_error_set(err, KILN_EIO, errno, "move download to %s", up);
    if (apply_meta(c, up, &st, false) < 0)
        return kiln_error_set(err, KILN_EIO, errno, "set owner/mode/times of %s", up);
    return 0;
}

/* ---- the two passes: hash (cache key) and copy ---- */

/* What both passes share: the source context and the expanded sources. */
typedef struct copy_run {
    src_ctx c;
    kiln_strv matches; /* expanded path sources, relative to the source root */
    kiln_strv fix;     /* parents recreated from lower layers (c.fix points here) */
    /* --parents: how much of each match's path is dropped (a "/./" in its
     * pattern marks where the kept path starts, as in BuildKit). */
    size_t *cut;
    size_t n_items; /* matches plus URL and inline sources */
} copy_run;

/* Prepares r for d (hashing into h when non-NULL); nothing to dispose on
 * failure. */
static int copy_run_init(copy_run *r, const eng_copy_desc *d, kiln_sha256 *h, kiln_error **err)
{
    int rc = src_init(&r->c, d, h, err);
    if (rc < 0)
        return rc;
    r->matches = (kiln_strv){0};
    r->fix = (kiln_strv){0};
    r->c.fix = &r->fix;
    r->cut = NULL;
    r->n_items = 0;
    return 0;
}

static void copy_run_dispose(copy_run *r)
{
    kiln_strv_dispose(&r->matches);
    free(r->cut);
    kiln_strv_dispose(&r->fix);
    src_dispose(&r->c);
}

/* Records how much of their path --parents drops for the matches of
 * pattern path (those from index before on). */
static int record_cuts(copy_run *r, const char *path, size_t before, kiln_error **err)
{
    size_t *nc = realloc(r->cut, (r->matches.n + 1) * sizeof(*r->cut));
    if (nc == NULL)
        return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
    r->cut = nc;
    char pivot[ENG_PATH_MAX];
    size_t drop = parents_pivot(path, pivot);
    for (size_t k = before; k < r->matches.n; k++)
        r->cut[k] =
            drop && strncmp(r->matches.v[k], pivot, drop) == 0 && r->matches.v[k][drop] == '/'
                ? drop + 1
                : 0;
    return 0;
}

/* Expands the path sources into r->matches and counts every source item. */
static int expand_sources(copy_run *r, kiln_error **err)
{
    const eng_copy_desc *d = r->c.d;
    int rc = 0;
    for (size_t i = 0; i < d->n_srcs && rc == 0; i++) {
        if (d->srcs[i].path == NULL) {
            r->n_items++;
            continue;
        }
        size_t before = r->matches.n;
        rc = expand_source(&r->c, d->srcs[i].path, &r->matches, err);
        if (rc == 0 && d->parents)
            rc = record_cuts(r, d->srcs[i].path, before, err);
    }
    r->n_items += r->matches.n;
    return rc;
}

/* Confines match rel to the source root: its real path, what it is, and its
 * path below the root (rrel points into real). */
static int locate_match(src_ctx *c, const char *rel, char real[PATH_MAX], struct stat *st,
                        const char **rrel, kiln_error **err)
{
    int rc = confine(c, rel, real, err);
    if (rc < 0)
        return rc;
    if (stat(real, st) < 0)
        return kiln_error_set(err, KILN_EIO, errno, "stat %s", real);
    *rrel = real[strlen(c->root)] == '/' ? real + strlen(c->root) + 1 : "";
    return 0;
}

/* Hash pass: inline contents and URLs in source order, then every matched
 * tree. */
static int hash_sources(copy_run *r, kiln_error **err)
{
    const eng_copy_desc *d = r->c.d;
    int rc = 0;
    for (size_t i = 0; i < d->n_srcs && rc == 0; i++) {
        if (d->srcs[i].content)
            kiln_sha256_update(r->c.h, d->srcs[i].content, strlen(d->srcs[i].content));
        else if (d->srcs[i].url)
            rc = hash_url(d, i, r->c.h, err);
    }
    for (size_t i = 0; i < r->matches.n && rc == 0; i++) {
        char real[PATH_MAX];
        struct stat st;
        const char *rrel;
        rc = locate_match(&r->c, r->matches.v[i], real, &st, &rrel, err);
        if (rc == 0)
            rc = copy_tree(&r->c, real, rrel, NULL, 0, err);
    }
    return rc;
}

/* Resolves the destination inside the image, and whether it is a directory
 * the sources go into (several items, --parents, a trailing "/", or an
 * existing directory). */
static int copy_dest(const copy_run *r, char dest[ENG_PATH_MAX], bool *as_dir, kiln_error **err)
{
    const eng_copy_desc *d = r->c.d;
    *as_dir = d->dest_is_dir || r->n_items > 1 || d->parents;
    int rc = eng_resolve_dest(dest, d, d->dest, err);
    struct stat st;
    char host[ENG_PATH_MAX];
    if (rc == 0 && eng_image_lookup(d->lowers, d->n_lowers, d->upper, dest, &st, host) == 1 &&
        S_ISDIR(st.st_mode))
        *as_dir = true;
    return rc;
}

/* Where match i lands below dest (st: what it is). */
static int match_target(const copy_run *r, size_t i, const struct stat *st, const char *dest,
                        bool as_dir, char target[ENG_PATH_MAX], kiln_error **err)
{
    const eng_copy_desc *d = r->c.d;
    const char *m = r->matches.v[i];
    if (d->parents) {
        /* --parents: the source's path below the root is kept. */
        if (snprintf(target, ENG_PATH_MAX, "%s%s%s", dest, dest[0] ? "/" : "",
                     m + (r->cut ? r->cut[i] : 0)) >= ENG_PATH_MAX)
            return kiln_error_set(err, KILN_EINVAL, 0, "%s: destination too long", d->what);
    } else if (S_ISDIR(st->st_mode) || !as_dir) {
        snprintf(target, ENG_PATH_MAX, "%s", dest);
    } else {
        const char *b = strrchr(m, '/');
        snprintf(target, ENG_PATH_MAX, "%s%s%s", dest, dest[0] ? "/" : "", b ? b + 1 : m);
    }
    return 0;
}

/* Copies match i into the upper dir below dest (a local archive is
 * extracted there instead when ADD extracts). */
static int copy_match(copy_run *r, size_t i, const char *dest, bool as_dir, kiln_error **err)
{
    const eng_copy_desc *d = r->c.d;
    char real[PATH_MAX];
    struct stat st;
    const char *rrel;
    int rc = locate_match(&r->c, r->matches.v[i], real, &st, &rrel, err);
    if (rc < 0)
        return rc;
    arch_kind ak = d->extract && S_ISREG(st.st_mode) ? archive_kind(real) : ARCH_NONE;
    if (ak != ARCH_NONE)
        return extract_archive(&r->c, real, ak, dest, err);
    char target[ENG_PATH_MAX];
    if ((rc = match_target(r, i, &st, dest, as_dir, target, err)) < 0)
        return rc;
    if (S_ISDIR(st.st_mode))
        rc = eng_ensure_dirs(d, target, d->uid, d->gid, r->c.fix, err);
    else {
        char parent[ENG_PATH_MAX];
        parent_dir(parent, target);
        rc = eng_ensure_dirs(d, parent, d->uid, d->gid, r->c.fix, err);
    }
    if (rc < 0)
        return rc;
    char up[2 * ENG_PATH_MAX];
    snprintf(up, sizeof(up), "%s%s%s", d->upper, target[0] ? "/" : "", target);
    if (S_ISDIR(st.st_mode) && target[0] == '\0')
        snprintf(up, sizeof(up), "%s", d->upper);
    rc = copy_tree(&r->c, real, rrel, up, 0, err);
    if (rc == 0 && S_ISDIR(st.st_mode) && target[0] == '\0')
        rc = 0; /* the root keeps its own metadata */
    return rc;
}

/* Removes the downloads (fetch_path dirs) from the scratch dir. */
static void drop_downloads(const eng_copy_desc *d)
{
    for (size_t i = 0; i < d->n_srcs; i++) {
        char fdir[ENG_PATH_MAX], ffile[ENG_PATH_MAX];
        if (d->srcs[i].url && d->scratch && fetch_path(d, i, fdir, ffile, NULL) == 0)
            eng_rmrf(fdir); /* the scratch dir becomes the step dir */
    }
}

/* Writes inline source s (a heredoc) to dest/<name> (as_dir) or dest. */
static int write_inline(src_ctx *c, const eng_copy_src *s, const char *dest, bool as_dir,
                        kiln_error **err)
{
    const eng_copy_desc *d = c->d;
    char target[ENG_PATH_MAX];
    if (as_dir)
        snprintf(target, sizeof(target), "%s%s%s", dest, dest[0] ? "/" : "", s->name);
    else
        snprintf(target, sizeof(target), "%s", dest);
    char parent[ENG_PATH_MAX];
    parent_dir(parent, target);
    int rc = eng_ensure_dirs(d, parent, d->uid, d->gid, c->fix, err);
    if (rc < 0)
        return rc;
    char up[2 * ENG_PATH_MAX];
    snprintf(up, sizeof(up), "%s/%s", d->upper, target);
    unlink(up);
    _cleanup_close_ int fd = open(up, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW, 0644);
    size_t len = strlen(s->content);
    if (fd < 0 || write(fd, s->content, len) != (ssize_t)len)
        return kiln_error_set(err, KILN_EIO, errno, "write %s", up);
    struct stat st = {.st_mode = S_IFREG | 0644};
    clock_gettime(CLOCK_REALTIME, &st.st_mtim);
    st.st_atim = st.st_mtim;
    if (apply_meta(c, up, &st, false) < 0)
        return kiln_error_set(err, KILN_EIO, errno, "set owner/mode of %s", up);
    return 0;
}

/* Parents recreated from lower layers keep their lower mtimes (adding
 * entries to them changed those). */
static int restore_parent_times(const eng_copy_desc *d, const kiln_strv *fix, kiln_error **err)
{
    for (size_t i = fix->n; i-- > 0;) {
        struct stat st;
        char host[ENG_PATH_MAX], up[2 * ENG_PATH_MAX];
        if (eng_image_lookup(d->lowers, d->n_lowers, NULL, fix->v[i], &st, host) != 1)
            continue;
        snprintf(up, sizeof(up), "%s/%s", d->upper, fix->v[i]);
        struct timespec ts[2] = {st.st_atim, st.st_mtim};
        if (utimensat(AT_FDCWD, up, ts, AT_SYMLINK_NOFOLLOW) < 0)
            return kiln_error_set(err, KILN_EIO, errno, "set times of %s", up);
    }
    return 0;
}

/* Copy pass: matches, then URLs, then inline sources, each in source
 * order; downloads are dropped whatever happened. */
static int copy_sources(copy_run *r, kiln_error **err)
{
    const eng_copy_desc *d = r->c.d;
    char dest[ENG_PATH_MAX] = "";
    bool as_dir = false;
    int rc = copy_dest(r, dest, &as_dir, err);
    for (size_t i = 0; i < r->matches.n && rc == 0; i++)
        rc = copy_match(r, i, dest, as_dir, err);
    for (size_t i = 0; i < d->n_srcs && rc == 0; i++)
        if (d->srcs[i].url)
            rc = add_url(&r->c, i, dest, as_dir, err);
    drop_downloads(d);
    for (size_t i = 0; i < d->n_srcs && rc == 0; i++)
        if (d->srcs[i].path == NULL && d->srcs[i].url == NULL)
            rc = write_inline(&r->c, &d->srcs[i], dest, as_dir, err);
    if (rc == 0)
        rc = restore_parent_times(d, &r->fix, err);
    return rc;
}

int eng_copy_hash(const eng_copy_desc *d, kiln_sha256 *h, kiln_error **err)
{
    copy_run r;
    int rc = copy_run_init(&r, d, h, err);
    if (rc < 0)
        return rc;
    rc = expand_sources(&r, err);
    if (rc == 0)
        rc = hash_sources(&r, err);
    copy_run_dispose(&r);
    return rc;
}

int eng_copy_exec(const eng_copy_desc *d, kiln_error **err)
{
    copy_run r;
    int rc = copy_run_init(&r, d, NULL, err);
    if (rc < 0)
        return rc;
    rc = expand_sources(&r, err);
    if (rc == 0)
        rc = copy_sources(&r, err);
    else
        drop_downloads(d);
    copy_run_dispose(&r);
    return rc;
}
