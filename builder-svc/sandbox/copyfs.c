/* The copy-based rootfs, for hosts where overlay cannot be mounted (some
 * container runtimes, old kernels in user namespaces).
 *
 * Before the step, the merged view of the lower dirs is copied into a plain
 * directory; after it, the directory is compared with that view and the
 * difference is written in overlay form, exactly what overlay would have left
 * in an upper dir: changed or new entries with their parents, a 0/0 character
 * device for each deleted name.  An entry counts as changed when its ctime is
 * newer than the end of the copy (overlay copies up on any data or metadata
 * change) or its metadata differs.
 *
 * Merged view: for each directory, the layers that contribute to it (top
 * first) are those holding it as a directory, down to the first that holds a
 * non-directory or whiteout there or marks it opaque. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#include "bld_snapshot.h"
#include "cleanup.h"
#include "sbx_internal.h"

#define INOMAP_MAX 4096 /* remembered hard-linked inodes; beyond, files are copied */

struct sbx_inomap {
    struct {
        dev_t dev;
        ino_t ino;
        int fd; /* O_PATH fd of the first copy */
    } e[INOMAP_MAX];
    size_t n;
};

sbx_inomap *sbx_inomap_new(void)
{
    return calloc(1, sizeof(sbx_inomap));
}

void sbx_inomap_free(sbx_inomap *m)
{
    if (m == NULL)
        return;
    for (size_t i = 0; i < m->n; i++)
        close(m->e[i].fd);
    free(m);
}

int sbx_copy_xattrs(int src, int dst, kiln_error **err)
{
    char names[8192], val[8192];
    ssize_t n = flistxattr(src, names, sizeof(names));
    if (n < 0)
        return (errno == ENOTSUP || errno == ERANGE)
                   ? 0
                   : kiln_error_set(err, KILN_EIO, errno, "list xattrs");
    for (char *p = names; p < names + n; p += strlen(p) + 1) {
        if (!sbx_xattr_allowed(p))
            continue;
        ssize_t vl = fgetxattr(src, p, val, sizeof(val));
        if (vl < 0)
            continue;
        if (fsetxattr(dst, p, val, (size_t)vl, 0) < 0 && errno != ENOTSUP && errno != EPERM)
            return kiln_error_set(err, KILN_EIO, errno, "set xattr %s", p);
    }
    return 0;
}

static int copy_data(int in, int out, kiln_error **err)
{
    for (;;) {
        ssize_t n = copy_file_range(in, NULL, out, NULL, 1 << 30, 0);
        if (n == 0)
            return 0;
        if (n > 0)
            continue;
        if (errno != EXDEV && errno != EINVAL && errno != ENOSYS && errno != EOPNOTSUPP)
            return kiln_error_set(err, KILN_EIO, errno, "copy data");
        break;
    }
    char buf[65536];
    for (;;) {
        ssize_t n = read(in, buf, sizeof(buf));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return kiln_error_set(err, KILN_EIO, errno, "read");
        if (n == 0)
            return 0;
        if (kiln_write_all(out, buf, (size_t)n) < 0)
            return kiln_error_set(err, kiln_code_from_errno(errno), errno, "write");
    }
}

/* Links dname to an earlier copy of the same source inode; 1 if done. */
static int link_known(sbx_inomap *m, const struct stat *st, int ddir, const char *dname)
{
    if (m == NULL || st->st_nlink < 2)
        return 0;
    for (size_t i = 0; i < m->n; i++) {
        if (m->e[i].dev == st->st_dev && m->e[i].ino == st->st_ino) {
            char p[64];
            snprintf(p, sizeof(p), "/proc/self/fd/%d", m->e[i].fd);
            return linkat(AT_FDCWD, p, ddir, dname, AT_SYMLINK_FOLLOW) == 0;
        }
    }
    return 0;
}

static void remember(sbx_inomap *m, const struct stat *st, int ddir, const char *dname)
{
    if (m == NULL || st->st_nlink < 2 || m->n == INOMAP_MAX)
        return;
    int fd = openat(ddir, dname, O_PATH | O_NOFOLLOW | O_CLOEXEC);
    if (fd >= 0)
        m->e[m->n++] = (typeof(m->e[0])){st->st_dev, st->st_ino, fd};
}

int sbx_copy_entry(int sdir, const char *name, int ddir, const char *dname, sbx_inomap *links,
                   kiln_error **err)
{
    struct stat st;
    if (fstatat(sdir, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
        return kiln_error_set(err, KILN_EIO, errno, "stat %s", name);
    bool priv = geteuid() == 0;
    _cleanup_close_ int sfd = -1, dfd = -1;
    if (S_ISREG(st.st_mode)) {
        if (link_known(links, &st, ddir, dname))
            return 0;
        sfd = openat(sdir, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
        dfd = openat(ddir, dname, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
        if (sfd < 0 || dfd < 0)
            return kiln_error_set(err, KILN_EIO, errno, "copy %s", name);
        int r = copy_data(sfd, dfd, err);
        if (r < 0)
            return kiln_error_wrap(err, "%s", name);
    } else if (S_ISDIR(st.st_mode)) {
        if (mkdirat(ddir, dname, 0700) < 0 && errno != EEXIST)
            return kiln_error_set(err, KILN_EIO, errno, "mkdir %s", dname);
        sfd = openat(sdir, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        dfd = openat(ddir, dname, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (sfd < 0 || dfd < 0)
            return kiln_error_set(err, KILN_EIO, errno, "open %s", name);
    } else if (S_ISLNK(st.st_mode)) {
        char target[PATH_MAX];
        ssize_t n = readlinkat(sdir, name, target, sizeof(target) - 1);
        if (n < 0)
            return kiln_error_set(err, KILN_EIO, errno, "readlink %s", name);
        target[n] = '\0';
        if (symlinkat(target, ddir, dname) < 0)
            return kiln_error_set(err, KILN_EIO, errno, "symlink %s", dname);
    } else {
        if (link_known(links, &st, ddir, dname))
            return 0;
        if (mknodat(ddir, dname, st.st_mode & S_IFMT, st.st_rdev) < 0)
            return kiln_error_set(err, KILN_EIO, errno, "mknod %s", dname);
    }
    if (priv && fchownat(ddir, dname, st.st_uid, st.st_gid, AT_SYMLINK_NOFOLLOW) < 0)
        return kiln_error_set(err, KILN_EIO, errno, "chown %s", dname);
    if (!S_ISLNK(st.st_mode)) {
        int r = dfd >= 0 ? fchmod(dfd, st.st_mode & 07777)
                         : fchmodat(ddir, dname, st.st_mode & 07777, 0);
        if (r < 0)
            return kiln_error_set(err, KILN_EIO, errno, "chmod %s", dname);
    }
    if (sfd >= 0 && dfd >= 0) {
        int r = sbx_copy_xattrs(sfd, dfd, err);
        if (r < 0)
            return kiln_error_wrap(err, "%s", name);
    }
    struct timespec ts[2] = {st.st_atim, st.st_mtim};
    if (utimensat(ddir, dname, ts, AT_SYMLINK_NOFOLLOW) < 0)
        return kiln_error_set(err, KILN_EIO, errno, "set times of %s", dname);
    if (!S_ISDIR(st.st_mode))
        remember(links, &st, ddir, dname);
    return 0;
}

/* ---- merged view ------------------------------------------------------ */

typedef struct vent {
    char *name;
    struct stat st;
    size_t layer; /* index into the contributor list (top first) */
} vent;

typedef struct vlist {
    vent *v;
    size_t n, cap;
} vlist;

static void vlist_free(vlist *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->v[i].name);
    free(l->v);
}

static vent *vlist_find(vlist *l, const char *name)
{
    for (size_t i = 0; i < l->n; i++)
        if (strcmp(l->v[i].name, name) == 0)
            return &l->v[i];
    return NULL;
}

/* Lists the merged children of a directory whose contributors are fds (top
 * first); whiteouts are kept in the list (callers skip or use them). */
static int view_list(const int *fds, size_t n, vlist *out, kiln_error **err)
{
    for (size_t l = 0; l < n; l++) {
        int dup = fcntl(fds[l], F_DUPFD_CLOEXEC, 0);
        _cleanup_closedir_ DIR *d = dup >= 0 ? fdopendir(dup) : NULL;
        if (d == NULL) {
            if (dup >= 0)
                close(dup);
            return kiln_error_set(err, KILN_EIO, errno, "list directory");
        }
        struct dirent *de;
        while ((de = readdir(d)) != NULL) {
            if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0 ||
                vlist_find(out, de->d_name))
                continue;
            struct stat st;
            if (fstatat(fds[l], de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0)
                return kiln_error_set(err, KILN_EIO, errno, "stat %s", de->d_name);
            if (out->n == out->cap) {
                size_t nc = out->cap ? out->cap * 2 : 32;
                vent *nv = realloc(out->v, nc * sizeof(*nv));
                if (nv == NULL)
                    return kiln_error_set(err, KILN_ENOSPC, ENOMEM, "directory listing");
                out->v = nv;
                out->cap = nc;
            }
            char *nm = strdup(de->d_name);
            if (nm == NULL)
                return kiln_error_set(err, KILN_ENOSPC, ENOMEM, "strdup");
            out->v[out->n++] = (vent){nm, st, l};
        }
        if (kiln_ovl_is_opaque_fd(fds[l]))
            break;
    }
    return 0;
}

/* Opens the contributors of child directory e (see the file comment). */
static int view_child(const int *fds, size_t n, const vent *e, int *out, size_t *nout,
                      kiln_error **err)
{
    *nout = 0;
    for (size_t l = e->layer; l < n; l++) {
        struct stat st;
        if (fstatat(fds[l], e->name, &st, AT_SYMLINK_NOFOLLOW) < 0)
            continue;
        if (!S_ISDIR(st.st_mode))
            break;
        int fd = openat(fds[l], e->name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0)
            return kiln_error_set(err, KILN_EIO, errno, "open %s", e->name);
        out[(*nout)++] = fd;
        if (kiln_ovl_is_opaque_fd(fd))
            break;
    }
    return 0;
}

static void close_all(int *fds, size_t n)
{
    for (size_t i = 0; i < n; i++)
        close(fds[i]);
}

static int merge_dir(const int *fds, size_t n, int dst, sbx_inomap *links, kiln_error **err)
{
    vlist l = {0};
    int r = view_list(fds, n, &l, err);
    for (size_t i = 0; r == 0 && i < l.n; i++) {
        vent *e = &l.v[i];
        if (kiln_ovl_is_whiteout(&e->st))
            continue;
        r = sbx_copy_entry(fds[e->layer], e->name, dst, e->name, links, err);
        if (r < 0 || !S_ISDIR(e->st.st_mode))
            continue;
        int *sub = calloc(n + 1, sizeof(int));
        size_t ns = 0;
        r = sub ? view_child(fds, n, e, sub, &ns, err)
                : kiln_error_set(err, KILN_ENOSPC, ENOMEM, "calloc");
        int cd =
            r == 0 ? openat(dst, e->name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC) : -1;
        if (r == 0 && cd < 0)
            r = kiln_error_set(err, KILN_EIO, errno, "open %s", e->name);
        if (r == 0)
            r = merge_dir(sub, ns, cd, links, err);
        struct timespec ts[2] = {e->st.st_atim, e->st.st_mtim};
        if (r == 0 && futimens(cd, ts) < 0)
            r = kiln_error_set(err, KILN_EIO, errno, "set times of %s", e->name);
        if (r < 0)
            kiln_error_wrap(err, "%s", e->name);
        if (cd >= 0)
            close(cd);
        close_all(sub, ns);
        free(sub);
    }
    vlist_free(&l);
    return r;
}

static int open_lowers(int *fds, const char *const *lowers, size_t n, kiln_error **err)
{
    for (size_t i = 0; i < n; i++) {
        /* top first */
        fds[i] = open(lowers[n - 1 - i], O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fds[i] < 0) {
            int e = errno;
            close_all(fds, i);
            return kiln_error_set(err, KILN_EIO, e, "open %s", lowers[n - 1 - i]);
        }
    }
    return 0;
}

int sbx_copy_merge(const char *const *lowers, size_t n, const char *dst, kiln_error **err)
{
    _cleanup_free_ int *fds = calloc(n + 1, sizeof(int));
    if (fds == NULL)
        return kiln_error_set(err, KILN_ENOSPC, ENOMEM, "calloc");
    int r = open_lowers(fds, lowers, n, err);
    if (r < 0)
        return r;
    _cleanup_close_ int dfd = open(dst, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    sbx_inomap *links = sbx_inomap_new();
    if (dfd < 0 || links == NULL)
        r = kiln_error_set(err, KILN_EIO, errno, "open %s", dst);
    else
        r = merge_dir(fds, n, dfd, links, err);
    if (r == 0 && n > 0) {
        struct stat st;
        if (fstat(fds[0], &st) == 0) {
            struct timespec ts[2] = {st.st_atim, st.st_mtim};
            if (fchmod(dfd, st.st_mode & 07777) < 0 || futimens(dfd, ts) < 0)
                r = kiln_error_set(err, KILN_EIO, errno, "set metadata of %s", dst);
        }
    }
    sbx_inomap_free(links);
    close_all(fds, n);
    return r;
}

/* ---- diff ------------------------------------------------------------- */

typedef struct diff_ctx {
    struct timespec since; /* ctime of the end of the copy */
    sbx_inomap *links;
} diff_ctx;

static bool newer(const struct timespec *a, const struct timespec *b)
{
    return a->tv_sec > b->tv_sec || (a->tv_sec == b->tv_sec && a->tv_nsec > b->tv_nsec);
}

static bool meta_differs(const struct stat *a, const struct stat *b)
{
    return a->st_mode != b->st_mode || a->st_uid != b->st_uid || a->st_gid != b->st_gid ||
           (!S_ISDIR(a->st_mode) && (a->st_size != b->st_size || a->st_rdev != b->st_rdev)) ||
           a->st_mtim.tv_sec != b->st_mtim.tv_sec || a->st_mtim.tv_nsec != b->st_mtim.tv_nsec;
}

static int copy_tree(int sdir, const char *name, int ddir, sbx_inomap *links, kiln_error **err)
{
    int r = sbx_copy_entry(sdir, name, ddir, name, links, err);
    struct stat st;
    if (r < 0 || fstatat(sdir, name, &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISDIR(st.st_mode))
        return r;
    _cleanup_close_ int s = openat(sdir, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    _cleanup_close_ int d = openat(ddir, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (s < 0 || d < 0)
        return kiln_error_set(err, KILN_EIO, errno, "open %s", name);
    return merge_dir(&s, 1, d, links, err) < 0
               ? kiln_error_wrap(err, "%s", name)
               : (futimens(d, (struct timespec[]){st.st_atim, st.st_mtim}) < 0
                      ? kiln_error_set(err, KILN_EIO, errno, "set times of %s", name)
                      : 0);
}

/* Diffs directory rfd (of the rootfs) against its lower contributors into
 * ufd; returns 1 when something was written, 0 when not, <0 on error. */
static int diff_dir(diff_ctx *c, const int *fds, size_t n, int rfd, int ufd, kiln_error **err)
{
    vlist low = {0}, cur = {0};
    int r = view_list(fds, n, &low, err);
    if (r == 0)
        r = view_list(&rfd, 1, &cur, err);
    int changed = 0;
    for (size_t i = 0; r == 0 && i < cur.n; i++) {
        vent *e = &cur.v[i];
        vent *L = vlist_find(&low, e->name);
        if (L && kiln_ovl_is_whiteout(&L->st))
            L = NULL;
        bool both_dirs = L && S_ISDIR(L->st.st_mode) && S_ISDIR(e->st.st_mode);
        if (!both_dirs) {
            if (L && !newer(&e->st.st_ctim, &c->since) && !meta_differs(&e->st, &L->st))
                continue;
            r = copy_tree(rfd, e->name, ufd, c->links, err);
            changed = 1;
            continue;
        }
        r = sbx_copy_entry(rfd, e->name, ufd, e->name, c->links, err);
        _cleanup_free_ int *sub = calloc(n + 1, sizeof(int));
        size_t ns = 0;
        if (r == 0)
            r = sub ? view_child(fds, n, L, sub, &ns, err)
                    : kiln_error_set(err, KILN_ENOSPC, ENOMEM, "calloc");
        _cleanup_close_ int rc =
            openat(rfd, e->name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        _cleanup_close_ int uc =
            openat(ufd, e->name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (r == 0 && (rc < 0 || uc < 0))
            r = kiln_error_set(err, KILN_EIO, errno, "open %s", e->name);
        int sub_changed = r == 0 ? diff_dir(c, sub, ns, rc, uc, err) : r;
        close_all(sub, ns);
        if (sub_changed < 0) {
            r = kiln_error_wrap(err, "%s", e->name);
            break;
        }
        if (sub_changed || newer(&e->st.st_ctim, &c->since) || meta_differs(&e->st, &L->st)) {
            changed = 1;
            if (futimens(uc, (struct timespec[]){e->st.st_atim, e->st.st_mtim}) < 0)
                r = kiln_error_set(err, KILN_EIO, errno, "set times of %s", e->name);
        } else if (unlinkat(ufd, e->name, AT_REMOVEDIR) < 0) {
            r = kiln_error_set(err, KILN_EIO, errno, "rmdir %s", e->name);
        }
    }
    for (size_t i = 0; r == 0 && i < low.n; i++) {
        vent *L = &low.v[i];
        if (kiln_ovl_is_whiteout(&L->st) || vlist_find(&cur, L->name))
            continue;
        if (mknodat(ufd, L->name, S_IFCHR | 0, makedev(0, 0)) < 0)
            r = kiln_error_set(err, KILN_EIO, errno, "whiteout %s", L->name);
        changed = 1;
    }
    vlist_free(&low);
    vlist_free(&cur);
    return r < 0 ? r : changed;
}

int sbx_copy_diff(const char *const *lowers, size_t n, const char *rootfs, const char *upper,
                  kiln_error **err)
{
    _cleanup_free_ int *fds = calloc(n + 1, sizeof(int));
    if (fds == NULL)
        return kiln_error_set(err, KILN_ENOSPC, ENOMEM, "calloc");
    int r = open_lowers(fds, lowers, n, err);
    if (r < 0)
        return r;
    diff_ctx c = {.links = sbx_inomap_new()};
    _cleanup_close_ int rfd = open(rootfs, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    _cleanup_close_ int ufd = open(upper, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    _cleanup_free_ char *marker = NULL;
    struct stat mst;
    if (rfd < 0 || ufd < 0 || c.links == NULL || asprintf(&marker, "%s.since", rootfs) < 0)
        r = kiln_error_set(err, KILN_EIO, errno, "open %s", rfd < 0 ? rootfs : upper);
    else if (stat(marker, &mst) < 0)
        r = kiln_error_set(err, KILN_EIO, errno, "stat %s", marker);
    if (r == 0) {
        c.since = mst.st_ctim;
        r = diff_dir(&c, fds, n, rfd, ufd, err);
    }
    sbx_inomap_free(c.links);
    close_all(fds, n);
    return r < 0 ? r : 0;
}

int bld_layers_merge(const char *dst, const char *const *dirs, size_t n, kiln_error **err)
{
    int r = kiln_mkdir_p(dst, 0755, err);
    if (r < 0)
        return r;
    r = sbx_copy_merge(dirs, n, dst, err);
    return r;
}
