/* Filesystem helpers for the sandbox: path resolution confined to a root
 * directory (openat2 RESOLVE_IN_ROOT, or an O_NOFOLLOW component walk that
 * emulates it on kernels without openat2), recursive removal that never
 * follows symlinks, and copying of single tree entries with their metadata. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/openat2.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "cleanup.h"
#include "sbx_internal.h"

bool sbx_force_walk = false;

#define MAX_SYMLINKS 40
#define MAX_DEPTH    512

static long sys_openat2(int dirfd, const char *path, struct open_how *how)
{
    return syscall(SYS_openat2, dirfd, path, how, sizeof(*how));
}

bool sbx_have_openat2(void)
{
    static int cached = -1;
    if (cached < 0) {
        struct open_how how = {.flags = O_PATH | O_CLOEXEC, .resolve = RESOLVE_IN_ROOT};
        long fd = sys_openat2(AT_FDCWD, "/", &how);
        cached = fd >= 0;
        if (fd >= 0)
            close((int)fd);
    }
    return cached && !sbx_force_walk;
}

/* The state of the fallback walk: the directories walked (stack[0] is the
 * root, stack[depth] the current one) and what remains of the path. */
struct walk {
    int stack[MAX_DEPTH];
    int depth;
    int links;     /* symlinks expanded so far */
    char *pending; /* owned: the path still to resolve (symlinks expanded) */
    char *p;       /* the next component in pending */
};

/* Closes the directories and frees the path; errno is kept for the caller. */
static void walk_dispose(struct walk *w)
{
    int saved = errno;
    for (int i = 0; i <= w->depth; i++)
        if (w->stack[i] >= 0)
            close(w->stack[i]);
    free(w->pending);
    errno = saved;
}

/* Copies the component at w->p into comp; *rest receives what follows it
 * and *last whether that is nothing but slashes. */
static int walk_component(const struct walk *w, char comp[NAME_MAX + 1], char **rest, bool *last)
{
    char *e = strchr(w->p, '/');
    size_t n = e ? (size_t)(e - w->p) : strlen(w->p);
    if (n > NAME_MAX) {
        errno = ENAMETOOLONG;
        return -1;
    }
    memcpy(comp, w->p, n);
    comp[n] = '\0';
    *rest = w->p + n;
    *last = true;
    for (const char *q = *rest; *q; q++)
        if (*q != '/') {
            *last = false;
            break;
        }
    return 0;
}

/* The path ends at the current directory: opens it (a duplicate for O_PATH). */
static int walk_open_here(const struct walk *w, int flags)
{
    if (flags & O_PATH)
        return fcntl(w->stack[w->depth], F_DUPFD_CLOEXEC, 0);
    return openat(w->stack[w->depth], ".", flags | O_CLOEXEC);
}

/* Replaces symlink comp with its target followed by rest; an absolute
 * target starts again at the root. */
static int walk_follow(struct walk *w, const char *comp, const char *rest)
{
    if (++w->links > MAX_SYMLINKS) {
        errno = ELOOP;
        return -1;
    }
    char target[PATH_MAX];
    ssize_t tl = readlinkat(w->stack[w->depth], comp, target, sizeof(target) - 1);
    if (tl < 0)
        return -1;
    target[tl] = '\0';
    size_t restlen = strlen(rest);
    char *nt = malloc((size_t)tl + restlen + 2);
    if (nt == NULL)
        return -1;
    memcpy(nt, target, (size_t)tl);
    memcpy(nt + tl, rest, restlen + 1);
    free(w->pending);
    w->pending = w->p = nt;
    if (target[0] == '/')
        while (w->depth > 0)
            close(w->stack[w->depth--]);
    return 0;
}

/* Steps into directory comp (st: its lstat) without following a symlink. */
static int walk_descend(struct walk *w, const char *comp, const struct stat *st)
{
    if (!S_ISDIR(st->st_mode)) {
        errno = ENOTDIR;
        return -1;
    }
    if (w->depth + 1 >= MAX_DEPTH) {
        errno = ENAMETOOLONG;
        return -1;
    }
    int nfd = openat(w->stack[w->depth], comp, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (nfd < 0)
        return -1;
    w->stack[++w->depth] = nfd;
    return 0;
}

/* The fallback walk: resolves path component by component with O_NOFOLLOW,
 * expanding symlinks by hand so that "/" and ".." stay at rootfd.  A stack of
 * directory fds makes ".." pop back to the parent actually walked. */
static int walk_in_root(int rootfd, const char *rel, int flags)
{
    _cleanup_(walk_dispose) struct walk w = {.stack = {-1}, .pending = strdup(rel)};
    if (w.pending == NULL)
        return -1;
    w.stack[0] = fcntl(rootfd, F_DUPFD_CLOEXEC, 0);
    if (w.stack[0] < 0)
        return -1;
    w.p = w.pending;
    for (;;) {
        while (*w.p == '/')
            w.p++;
        if (*w.p == '\0')
            return walk_open_here(&w, flags);
        char comp[NAME_MAX + 1], *rest;
        bool last;
        if (walk_component(&w, comp, &rest, &last) < 0)
            return -1;
        if (strcmp(comp, ".") == 0) {
            w.p = rest;
            continue;
        }
        if (strcmp(comp, "..") == 0) {
            if (w.depth > 0)
                close(w.stack[w.depth--]);
            w.p = rest;
            continue;
        }
        int dirfd = w.stack[w.depth];
        struct stat st;
        if (fstatat(dirfd, comp, &st, AT_SYMLINK_NOFOLLOW) < 0)
            return last && (flags & O_CREAT)
                       ? openat(dirfd, comp, flags | O_NOFOLLOW | O_CLOEXEC, 0600)
                       : -1;
        if (S_ISLNK(st.st_mode) && !(last && (flags & O_NOFOLLOW))) {
            if (walk_follow(&w, comp, rest) < 0)
                return -1;
            continue;
        }
        if (last)
            return openat(dirfd, comp, flags | O_NOFOLLOW | O_CLOEXEC, 0600);
        if (walk_descend(&w, comp, &st) < 0)
            return -1;
        w.p = rest;
    }
}

int sbx_open_in_root(int rootfd, const char *rel, int flags, kiln_error **err)
{
    int fd;
    if (sbx_have_openat2()) {
        struct open_how how = {
            .flags = (uint64_t)(flags | O_CLOEXEC),
            .mode = (flags & O_CREAT) ? 0600 : 0,
            .resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS,
        };
        do {
            fd = (int)sys_openat2(rootfd, *rel ? rel : ".", &how);
        } while (fd < 0 && errno == EAGAIN);
    } else {
        fd = walk_in_root(rootfd, rel, flags);
    }
    if (fd < 0) {
        int e = errno;
        kiln_error_set(err, kiln_code_from_errno(e), e, "open %s in root", *rel ? rel : "/");
        errno = e;
        return kiln_code_from_errno(e);
    }
    return fd;
}

int sbx_open_parent(int rootfd, const char *rel, bool create, sbx_mkdir_cb mkdir_cb, void *ud,
                    const char **leaf, kiln_error **err)
{
    const char *slash = strrchr(rel, '/');
    *leaf = slash ? slash + 1 : rel;
    if (slash == NULL) {
        int fd = fcntl(rootfd, F_DUPFD_CLOEXEC, 0);
        return fd >= 0 ? fd : kiln_error_set(err, KILN_EIO, errno, "dup");
    }
    size_t plen = (size_t)(slash - rel);
    _cleanup_free_ char *parent = strndup(rel, plen);
    if (parent == NULL)
        return kiln_error_set(err, KILN_ENOSPC, ENOMEM, "strndup");
    int fd = sbx_open_in_root(rootfd, parent, O_PATH | O_DIRECTORY, NULL);
    if (fd >= 0 || errno != ENOENT || !create) {
        if (fd < 0)
            return kiln_error_set(err, kiln_code_from_errno(errno), errno, "open directory %s",
                                  parent);
        return fd;
    }
    /* Create the missing directories one at a time, each below the in-root
     * resolution of its own parent, so a symlink can never redirect them. */
    _cleanup_close_ int cur = fcntl(rootfd, F_DUPFD_CLOEXEC, 0);
    if (cur < 0)
        return kiln_error_set(err, KILN_EIO, errno, "dup");
    char *p = parent;
    for (;;) {
        char *e = strchr(p, '/');
        if (e)
            *e = '\0';
        int nfd = sbx_open_in_root(rootfd, parent, O_PATH | O_DIRECTORY, NULL);
        if (nfd < 0 && errno == ENOENT) {
            int r = mkdir_cb ? mkdir_cb(cur, p, parent, ud, err) : 0;
            if (r < 0)
                return r;
            if (mkdir_cb == NULL && mkdirat(cur, p, 0755) < 0 && errno != EEXIST)
                return kiln_error_set(err, KILN_EIO, errno, "mkdir %s", parent);
            nfd = sbx_open_in_root(rootfd, parent, O_PATH | O_DIRECTORY, NULL);
        }
        if (nfd < 0)
            return kiln_error_set(err, kiln_code_from_errno(errno), errno, "open directory %s",
                                  parent);
        close(cur);
        cur = nfd;
        if (e == NULL)
            break;
        *e = '/';
        p = e + 1;
    }
    return steal_fd(&cur);
}

bool sbx_xattr_allowed(const char *name)
{
    if (strncmp(name, "trusted.overlay.", 16) == 0 || strncmp(name, "user.overlay.", 13) == 0)
        return false;
    return strncmp(name, "user.", 5) == 0 || strncmp(name, "trusted.", 8) == 0 ||
           strcmp(name, "security.capability") == 0;
}
