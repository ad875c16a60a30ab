/* Directory tree -> deterministic PAX tar stream (libarchive), fed straight
 * into the compression pipeline.  Owns the walk order, entry metadata
 * normalisation, hardlink detection, xattr filtering and the overlay whiteout
 * translation described in psh_pack.h.
 *
 * The walk uses directory file descriptors (openat/fstatat) so it never
 * follows a symlink inside the tree and does not depend on the current
 * directory.  libarchive converts names to UTF-8 for PAX records using the
 * thread's locale, so the walk runs under a pinned C.UTF-8 locale: otherwise
 * the same tree would give different tars in processes with different LANG. */
#include "overlay.h"
#include "pack_internal.h"
#include "cleanup.h"
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <locale.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <archive.h>
#include <archive_entry.h>

#define IO_CHUNK  ((size_t)256 << 10)
#define XATTR_MAX ((size_t)64 << 10) /* Linux XATTR_SIZE_MAX and XATTR_LIST_MAX */
#define REL_MAX   PATH_MAX

typedef struct link_slot {
    dev_t dev;
    ino_t ino;
    char *path; /* NULL: empty slot */
} link_slot;

typedef struct walker {
    struct archive *a;
    struct archive_entry *e;
    pack_pipe *pipe;
    const psh_pack_opts *opts;
    const char *root;
    dev_t root_dev;
    char rel[REL_MAX]; /* path inside the archive of the entry being written */
    uint8_t *io;       /* IO_CHUNK file read buffer */
    char *xnames;      /* XATTR_MAX */
    char *xvalue;      /* XATTR_MAX */
    link_slot *links;  /* open addressing on (dev, ino) */
    size_t nlinks, caplinks;
    kiln_error *pipe_err; /* failure reported by the pipeline inside libarchive */
    bool discard;         /* tearing down: the write callback drops everything */
} walker;

typedef struct child {
    char *name;    /* name in the directory */
    char *arcname; /* name in the archive (differs for whiteouts) */
    struct stat st;
    bool whiteout;
} child;

static la_ssize_t tar_write_cb(struct archive *a, void *ud, const void *buf, size_t len)
{
    walker *w = ud;
    if (w->discard)
        return -1;
    if (pack_pipe_write(w->pipe, buf, len, &w->pipe_err) < 0) {
        archive_set_error(a, EIO, "layer pipeline failed");
        return -1;
    }
    return (la_ssize_t)len;
}

/* Reports a libarchive failure, preferring the pipeline's own error. */
static int archive_fail(walker *w, const char *what, kiln_error **err)
{
    if (w->pipe_err != NULL) {
        int code = w->pipe_err->code;
        kiln_error_set(err, code, 0, "%s", w->pipe_err->msg);
        return code;
    }
    return kiln_error_set(err, KILN_EINTERNAL, 0, "tar %s %s: %s", what, w->rel,
                          archive_error_string(w->a));
}

/* ---- hardlinks ----------------------------------------------------------- */

static size_t link_hash(dev_t dev, ino_t ino, size_t cap)
{
    uint64_t h = ((uint64_t)dev * 0x9e3779b97f4a7c15ULL) ^ ((uint64_t)ino * 0xc2b2ae3d27d4eb4fULL);
    return (size_t)(h ^ (h >> 29)) & (cap - 1);
}

static link_slot *link_find(walker *w, dev_t dev, ino_t ino)
{
    size_t i = link_hash(dev, ino, w->caplinks);
    while (w->links[i].path != NULL) {
        if (w->links[i].dev == dev && w->links[i].ino == ino)
            return &w->links[i];
        i = (i + 1) & (w->caplinks - 1);
    }
    return &w->links[i];
}

/* Returns the archive path of the first entry with st's inode, or records
 * w->rel as that first entry and returns NULL. */
static int link_lookup(walker *w, const struct stat *st, const char **first, kiln_error **err)
{
    *first = NULL;
    if (w->nlinks * 2 >= w->caplinks) {
        size_t ncap = w->caplinks ? w->caplinks * 2 : 256;
        link_slot *old = w->links;
        size_t oldcap = w->caplinks;
        w->links = calloc(ncap, sizeof(*w->links));
        if (w->links == NULL) {
            w->links = old;
            return kiln_error_set(err, KILN_ENOSPC, ENOMEM, "hardlink table");
        }
        w->caplinks = ncap;
        for (size_t i = 0; i < oldcap; i++)
            if (old[i].path != NULL)
                *link_find(w, old[i].dev, old[i].ino) = old[i];
        free(old);
    }
    link_slot *s = link_find(w, st->st_dev, st->st_ino);
    if (s->path != NULL) {
        *first = s->path;
        return 0;
    }
    if ((s->path = strdup(w->rel)) == NULL)
        return kiln_error_set(err, KILN_ENOSPC, ENOMEM, "hardlink table");
    s->dev = st->st_dev;
    s->ino = st->st_ino;
    w->nlinks++;
    return 0;
}

/* ---- xattrs -------------------------------------------------------------- */

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static bool overlay_internal(const char *name)
{
    return strncmp(name, "trusted.overlay.", 16) == 0 || strncmp(name, "user.overlay.", 13) == 0;
}

/* Adds the entry's xattrs (sorted by name) to w->e; sets *opaque when overlay
 * marks the directory opaque.  fd >= 0 reads through the fd, else by path. */
static int add_xattrs(walker *w, int fd, const char *path, bool *opaque, kiln_error **err)
{
    ssize_t n =
        fd >= 0 ? flistxattr(fd, w->xnames, XATTR_MAX) : llistxattr(path, w->xnames, XATTR_MAX);
    if (n < 0 && (errno == ENOTSUP || errno == EPERM))
        return 0;
    if (n < 0)
        return kiln_error_set(err, KILN_EIO, errno, "list xattrs of %s", w->rel);
    char *names[1024];
    size_t count = 0;
    for (char *p = w->xnames; p < w->xnames + n; p += strlen(p) + 1) {
        if (count == KILN_ARRAY_SIZE(names))
            return kiln_error_set(err, KILN_EINVAL, 0, "%s: too many xattrs", w->rel);
        names[count++] = p;
    }
    qsort(names, count, sizeof(names[0]), cmp_str);
    for (size_t i = 0; i < count; i++) {
        const char *name = names[i];
        bool ovl = overlay_internal(name);
        if (!ovl && strcmp(name, "security.selinux") == 0)
            continue; /* the build host's label, not image content */
        if (ovl && !w->opts->overlay_diff)
            continue;
        ssize_t vn = fd >= 0 ? fgetxattr(fd, name, w->xvalue, XATTR_MAX)
                             : lgetxattr(path, name, w->xvalue, XATTR_MAX);
        if (vn < 0 && errno == ENODATA)
            continue;
        if (vn < 0)
            return kiln_error_set(err, KILN_EIO, errno, "read xattr %s of %s", name, w->rel);
        if (!ovl) {
            archive_entry_xattr_add_entry(w->e, name, w->xvalue, (size_t)vn);
            continue;
        }
        const char *key = strchr(name + 1, '.') + 1; /* after "trusted." / "user." */
        key = strchr(key, '.') + 1;                  /* after "overlay." */
        if (strcmp(key, "opaque") == 0 && kiln_ovl_opaque_value(w->xvalue, vn))
            *opaque = true;
        if (strcmp(key, "metacopy") == 0 || strcmp(key, "redirect") == 0)
            return kiln_error_set(err, KILN_ENOTSUP, 0,
                                  "%s: overlay %s is not supported in a layer diff", w->rel, key);
    }
    return 0;
}

/* ---- entries ------------------------------------------------------------- */

/* Translates a host id through map (len 0: identity). */
static bool map_id(const psh_id_range *map, size_t len, uint32_t id, uint32_t *out)
{
    if (len == 0) {
        *out = id;
        return true;
    }
    for (size_t i = 0; i < len; i++) {
        if (id >= map[i].host && id - map[i].host < map[i].count) {
            *out = map[i].container + (id - map[i].host);
            return true;
        }
    }
    return false;
}

static int set_common(walker *w, const struct stat *st, mode_t mode, kiln_error **err)
{
    uint32_t uid, gid;
    if (!map_id(w->opts->uid_map, w->opts->uid_map_len, st->st_uid, &uid))
        return kiln_error_set(err, KILN_EINVAL, 0, "%s: uid %u is outside the id map", w->rel,
                              (unsigned)st->st_uid);
    if (!map_id(w->opts->gid_map, w->opts->gid_map_len, st->st_gid, &gid))
        return kiln_error_set(err, KILN_EINVAL, 0, "%s: gid %u is outside the id map", w->rel,
                              (unsigned)st->st_gid);
    int64_t mtime = st->st_mtim.tv_sec;
    if (w->opts->source_date_epoch >= 0 && mtime > w->opts->source_date_epoch)
        mtime = w->opts->source_date_epoch;
    archive_entry_clear(w->e);
    archive_entry_copy_pathname(w->e, w->rel);
    archive_entry_set_mode(w->e, mode);
    archive_entry_set_uid(w->e, uid);
    archive_entry_set_gid(w->e, gid);
    archive_entry_set_mtime(w->e, (time_t)mtime, 0);
    return 0;
}

static int write_header(walker *w, kiln_error **err)
{
    /* ARCHIVE_WARN: a name that is not valid UTF-8 went out as raw bytes
     * under hdrcharset=BINARY, which is what a layer should carry. */
    int r = archive_write_header(w->a, w->e);
    if (r < ARCHIVE_WARN)
        return archive_fail(w, "header", err);
    return 0;
}

/* Writes an empty regular file entry (whiteouts). */
static int write_marker(walker *w, const struct stat *st, kiln_error **err)
{
    if (set_common(w, st, S_IFREG | 0600, err) < 0)
        return KILN_EINVAL;
    archive_entry_set_size(w->e, 0);
    return write_header(w, err);
}

static int copy_data(walker *w, int fd, off_t size, kiln_error **err)
{
    off_t done = 0;
    while (done < size) {
        size_t want = (size_t)(size - done) < IO_CHUNK ? (size_t)(size - done) : IO_CHUNK;
        ssize_t n = read(fd, w->io, want);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return kiln_error_set(err, KILN_EIO, errno, "read %s/%s", w->root, w->rel);
        if (n == 0)
            return kiln_error_set(err, KILN_EPRECOND, 0, "%s/%s shrank while being packed", w->root,
                                  w->rel);
        if (archive_write_data(w->a, w->io, (size_t)n) != n)
            return archive_fail(w, "data", err);
        done += n;
    }
    ssize_t more = read(fd, w->io, 1); /* a diff must not change while packed */
    if (more > 0)
        return kiln_error_set(err, KILN_EPRECOND, 0, "%s/%s grew while being packed", w->root,
                              w->rel);
    return 0;
}

static int open_file(int dirfd, const char *name)
{
    int fd = openat(dirfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY | O_NOATIME);
    if (fd < 0 && errno == EPERM) /* O_NOATIME needs ownership */
        fd = openat(dirfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY);
    return fd;
}

static int write_regular(walker *w, int dirfd, const child *c, kiln_error **err)
{
    _cleanup_close_ int fd = open_file(dirfd, c->name);
    if (fd < 0)
        return kiln_error_set(err, kiln_code_from_errno(errno), errno, "open %s/%s", w->root,
                              w->rel);
    struct stat st;
    if (fstat(fd, &st) < 0)
        return kiln_error_set(err, KILN_EIO, errno, "stat %s/%s", w->root, w->rel);
    if (st.st_ino != c->st.st_ino || st.st_dev != c->st.st_dev)
        return kiln_error_set(err, KILN_EPRECOND, 0, "%s/%s replaced while being packed", w->root,
                              w->rel);
    const char *first = NULL;
    if (st.st_nlink > 1 && link_lookup(w, &st, &first, err) < 0)
        return KILN_ENOSPC;
    if (set_common(w, &st, st.st_mode, err) < 0)
        return KILN_EINVAL;
    if (first != NULL) {
        archive_entry_copy_hardlink(w->e, first);
        archive_entry_set_size(w->e, 0);
        return write_header(w, err);
    }
    archive_entry_set_size(w->e, st.st_size);
    bool opaque = false;
    int rc = add_xattrs(w, fd, NULL, &opaque, err);
    if (rc == 0)
        rc = write_header(w, err);
    if (rc == 0)
        rc = copy_data(w, fd, st.st_size, err);
    return rc;
}

/* Symlinks, devices and fifos: never opened (a fifo would block). */
static int write_special(walker *w, int dirfd, const child *c, kiln_error **err)
{
    char path[PATH_MAX * 2];
    if ((size_t)snprintf(path, sizeof(path), "%s/%s", w->root, w->rel) >= sizeof(path))
        return kiln_error_set(err, KILN_EINVAL, ENAMETOOLONG, "%s", w->rel);
    const char *first = NULL;
    if (c->st.st_nlink > 1 && link_lookup(w, &c->st, &first, err) < 0)
        return KILN_ENOSPC;
    if (set_common(w, &c->st, c->st.st_mode, err) < 0)
        return KILN_EINVAL;
    if (first != NULL) {
        archive_entry_copy_hardlink(w->e, first);
        return write_header(w, err);
    }
    if (S_ISLNK(c->st.st_mode)) {
        char target[PATH_MAX + 1];
        ssize_t n = readlinkat(dirfd, c->name, target, sizeof(target));
        if (n < 0)
            return kiln_error_set(err, KILN_EIO, errno, "readlink %s", path);
        if ((size_t)n >= sizeof(target))
            return kiln_error_set(err, KILN_EINVAL, ENAMETOOLONG, "readlink %s", path);
        target[n] = '\0';
        archive_entry_copy_symlink(w->e, target);
    } else if (S_ISCHR(c->st.st_mode) || S_ISBLK(c->st.st_mode)) {
        archive_entry_set_rdevmajor(w->e, major(c->st.st_rdev));
        archive_entry_set_rdevminor(w->e, minor(c->st.st_rdev));
    }
    bool opaque = false;
    int rc = add_xattrs(w, -1, path, &opaque, err);
    return rc < 0 ? rc : write_header(w, err);
}

/* ---- directories --------------------------------------------------------- */

static int cmp_child(const void *a, const void *b)
{
    return strcmp(((const child *)a)->arcname, ((const child *)b)->arcname);
}

static void free_children(child *cs, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (cs[i].arcname != cs[i].name)
            free(cs[i].arcname);
        free(cs[i].name);
    }
    free(cs);
}

/* Reads, stats and sorts the children of dirfd (borrowed). */
static int list_children(walker *w, int dirfd, child **out, size_t *nout, kiln_error **err)
{
    int dfd = dup(dirfd);
    if (dfd < 0)
        return kiln_error_set(err, KILN_EIO, errno, "dup");
    _cleanup_closedir_ DIR *d = fdopendir(dfd);
    if (d == NULL) {
        close(dfd);
        return kiln_error_set(err, KILN_EIO, errno, "opendir %s/%s", w->root, w->rel);
    }
    child *cs = NULL;
    size_t n = 0, cap = 0;
    int rc = 0;
    struct dirent *de;
    errno = 0;
    while (rc == 0 && (de = readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        if (n == cap) {
            size_t ncap = cap ? cap * 2 : 32;
            child *ncs = realloc(cs, ncap * sizeof(*cs));
            if (ncs == NULL) {
                rc = kiln_error_set(err, KILN_ENOSPC, ENOMEM, "directory listing");
                break;
            }
            cs = ncs;
            cap = ncap;
        }
        child *c = &cs[n];
        memset(c, 0, sizeof(*c));
        if ((c->name = strdup(de->d_name)) == NULL) {
            rc = kiln_error_set(err, KILN_ENOSPC, ENOMEM, "directory listing");
            break;
        }
        c->arcname = c->name;
        n++;
        if (fstatat(dirfd, c->name, &c->st, AT_SYMLINK_NOFOLLOW) < 0) {
            rc = kiln_error_set(err, kiln_code_from_errno(errno), errno, "stat %s/%s/%s", w->root,
                                w->rel, c->name);
            break;
        }
        if (w->opts->overlay_diff && kiln_ovl_is_whiteout(&c->st)) {
            c->whiteout = true;
            size_t len = strlen(c->name) + sizeof(KILN_WH_PREFIX);
            if ((c->arcname = malloc(len)) == NULL) {
                c->arcname = c->name;
                rc = kiln_error_set(err, KILN_ENOSPC, ENOMEM, "directory listing");
                break;
            }
            snprintf(c->arcname, len, KILN_WH_PREFIX "%s", c->name);
        }
        errno = 0;
    }
    if (rc == 0 && errno != 0)
        rc = kiln_error_set(err, KILN_EIO, errno, "readdir %s/%s", w->root, w->rel);
    if (rc < 0) {
        free_children(cs, n);
        return rc;
    }
    if (n > 1)
        qsort(cs, n, sizeof(*cs), cmp_child);
    *out = cs;
    *nout = n;
    return 0;
}

static int walk_dir(walker *w, int dirfd, size_t rel_len, kiln_error **err);

static int write_dir(walker *w, int dirfd, const child *c, size_t rel_len, kiln_error **err)
{
    _cleanup_close_ int fd =
        openat(dirfd, c->name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return kiln_error_set(err, kiln_code_from_errno(errno), errno, "open %s/%s", w->root,
                              w->rel);
    if (set_common(w, &c->st, c->st.st_mode, err) < 0)
        return KILN_EINVAL;
    bool opaque = false;
    int rc = add_xattrs(w, fd, NULL, &opaque, err);
    if (rc == 0)
        rc = write_header(w, err);
    if (rc == 0 && opaque && w->opts->overlay_diff) {
        if (rel_len + 1 + sizeof(KILN_WH_OPAQUE) > REL_MAX)
            return kiln_error_set(err, KILN_EINVAL, ENAMETOOLONG, "%s", w->rel);
        memcpy(w->rel + rel_len, "/" KILN_WH_OPAQUE, sizeof(KILN_WH_OPAQUE) + 1);
        rc = write_marker(w, &c->st, err);
        w->rel[rel_len] = '\0';
    }
    if (rc < 0)
        return rc;
    if (c->st.st_dev != w->root_dev) {
        kiln_warn("pack", "not descending into mount point %s/%s", w->root, w->rel);
        return 0;
    }
    return walk_dir(w, fd, rel_len, err);
}

static int write_child(walker *w, int dirfd, const child *c, size_t rel_len, kiln_error **err)
{
    mode_t m = c->st.st_mode;
    if (c->whiteout)
        return write_marker(w, &c->st, err);
    if (S_ISDIR(m))
        return write_dir(w, dirfd, c, rel_len, err);
    if (S_ISREG(m))
        return write_regular(w, dirfd, c, err);
    if (S_ISSOCK(m)) {
        kiln_warn("pack", "skipping socket %s/%s", w->root, w->rel);
        return 0;
    }
    return write_special(w, dirfd, c, err);
}

/* Writes every child of dirfd; w->rel holds the directory's archive path
 * (rel_len bytes, "" for the root) and is restored before returning. */
static int walk_dir(walker *w, int dirfd, size_t rel_len, kiln_error **err)
{
    child *cs = NULL;
    size_t n = 0;
    int rc = list_children(w, dirfd, &cs, &n, err);
    if (rc < 0)
        return rc;
    for (size_t i = 0; rc == 0 && i < n; i++) {
        if (i > 0 && strcmp(cs[i - 1].arcname, cs[i].arcname) == 0) {
            rc = kiln_error_set(err, KILN_EINVAL, 0, "duplicate archive path %s/%s", w->rel,
                                cs[i].arcname);
            break;
        }
        /* In a diff, a real file named like a whiteout would delete files
         * of the layers below when the image is unpacked. */
        if (w->opts->overlay_diff && !cs[i].whiteout &&
            strncmp(cs[i].name, KILN_WH_PREFIX, sizeof(KILN_WH_PREFIX) - 1) == 0) {
            rc = kiln_error_set(err, KILN_EINVAL, 0, "%s/%s: name reserved for OCI whiteouts",
                                w->rel, cs[i].name);
            break;
        }
        size_t len = strlen(cs[i].arcname);
        size_t sep = rel_len > 0 ? 1 : 0;
        if (rel_len + sep + len + 1 > REL_MAX) {
            rc = kiln_error_set(err, KILN_EINVAL, ENAMETOOLONG, "%s/%s", w->rel, cs[i].arcname);
            break;
        }
        if (sep)
            w->rel[rel_len] = '/';
        memcpy(w->rel + rel_len + sep, cs[i].arcname, len + 1);
        rc = write_child(w, dirfd, &cs[i], rel_len + sep + len, err);
        w->rel[rel_len] = '\0';
    }
    free_children(cs, n);
    return rc;
}

/* ---- public -------------------------------------------------------------- */

void psh_pack_opts_init(psh_pack_opts *o)
{
    memset(o, 0, sizeof(*o));
    o->comp = PSH_COMP_GZIP;
    o->level = -1;
    o->threads = 0;
    o->source_date_epoch = -1;
}

static int open_archive(walker *w, kiln_error **err)
{
    w->a = archive_write_new();
    w->e = archive_entry_new();
    if (w->a == NULL || w->e == NULL)
        return kiln_error_set(err, KILN_ENOSPC, ENOMEM, "libarchive");
    /* PAX restricted: ustar headers, a PAX record only where ustar cannot
     * hold a value; xattrs as SCHILY.xattr (GNU tar, Go, containerd). */
    if (archive_write_set_format_pax_restricted(w->a) != ARCHIVE_OK ||
        archive_write_set_format_option(w->a, "pax", "xattrheader", "SCHILY") != ARCHIVE_OK ||
        archive_write_set_bytes_per_block(w->a, 0) != ARCHIVE_OK ||
        archive_write_open2(w->a, w, NULL, tar_write_cb, NULL, NULL) != ARCHIVE_OK)
        return kiln_error_set(err, KILN_EINTERNAL, 0, "libarchive setup: %s",
                              archive_error_string(w->a));
    return 0;
}

static void walker_dispose(walker *w)
{
    if (w->a != NULL) {
        /* After a failure libarchive's free() skips close() and leaks its
         * output buffer; close explicitly with the callback refusing data,
         * so nothing more reaches the pipeline (no trailer, no padding). */
        w->discard = true;
        archive_write_close(w->a);
        archive_write_free(w->a);
    }
    archive_entry_free(w->e);
    for (size_t i = 0; i < w->caplinks; i++)
        free(w->links[i].path);
    free(w->links);
    free(w->io);
    free(w->xnames);
    free(w->xvalue);
    kiln_error_free(&w->pipe_err);
}

static int pack_tree(walker *w, const char *dir, kiln_error **err)
{
    _cleanup_close_ int root = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (root < 0)
        return kiln_error_set(err, kiln_code_from_errno(errno), errno, "open %s", dir);
    struct stat st;
    if (fstat(root, &st) < 0)
        return kiln_error_set(err, KILN_EIO, errno, "stat %s", dir);
    w->root_dev = st.st_dev;
    w->io = malloc(IO_CHUNK);
    w->xnames = malloc(XATTR_MAX);
    w->xvalue = malloc(XATTR_MAX);
    if (w->io == NULL || w->xnames == NULL || w->xvalue == NULL)
        return kiln_error_set(err, KILN_ENOSPC, ENOMEM, "pack buffers");
    int rc = open_archive(w, err);
    if (rc == 0)
        rc = walk_dir(w, root, 0, err);
    if (rc == 0 && archive_write_close(w->a) != ARCHIVE_OK)
        rc = archive_fail(w, "close", err);
    return rc;
}

int psh_pack_dir(psh_layer_info *out, const char *dir, int blob_fd, const psh_pack_opts *opts,
                 kiln_error **err)
{
    psh_pack_opts defaults;
    if (opts == NULL) {
        psh_pack_opts_init(&defaults);
        opts = &defaults;
    }
    pack_pipe *pipe = NULL;
    int rc = pack_pipe_new(&pipe, blob_fd, opts, err);
    if (rc < 0)
        return rc;
    locale_t utf8 = newlocale(LC_CTYPE_MASK, "C.UTF-8", (locale_t)0);
    if (utf8 == (locale_t)0) {
        pack_pipe_abort(pipe);
        return kiln_error_set(err, KILN_EPRECOND, errno, "locale C.UTF-8 unavailable");
    }
    locale_t saved = uselocale(utf8);
    walker w = {.pipe = pipe, .opts = opts, .root = dir};
    rc = pack_tree(&w, dir, err);
    walker_dispose(&w);
    uselocale(saved);
    freelocale(utf8);
    if (rc < 0) {
        pack_pipe_abort(pipe);
        return kiln_error_wrap(err, "pack %s", dir);
    }
    rc = pack_pipe_finish(pipe, out, err);
    return rc < 0 ? kiln_error_wrap(err, "pack %s", dir) : 0;
}

int psh_pack_tar_stream(psh_layer_info *out, int tar_fd, int blob_fd, const psh_pack_opts *opts,
                        kiln_error **err)
{
    psh_pack_opts defaults;
    if (opts == NULL) {
        psh_pack_opts_init(&defaults);
        opts = &defaults;
    }
    _cleanup_free_ uint8_t *buf = malloc(IO_CHUNK);
    if (buf == NULL)
        return kiln_error_set(err, KILN_ENOSPC, ENOMEM, "pack buffer");
    pack_pipe *pipe = NULL;
    int rc = pack_pipe_new(&pipe, blob_fd, opts, err);
    if (rc < 0)
        return rc;
    for (;;) {
        ssize_t n = read(tar_fd, buf, IO_CHUNK);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            pack_pipe_abort(pipe);
            return kiln_error_set(err, KILN_EIO, errno, "read tar stream");
        }
        if (n == 0)
            break;
        if ((rc = pack_pipe_write(pipe, buf, (size_t)n, err)) < 0) {
            pack_pipe_abort(pipe);
            return rc;
        }
    }
    return pack_pipe_finish(pipe, out, err);
}
