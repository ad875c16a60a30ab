/* Unpacking of one layer blob into a snapshot directory, safe against hostile
 * archives.
 *
 * The blob is read once: its bytes are hashed (blob digest), decompressed by
 * us (zlib / libzstd) and hashed again (DiffID = sha256 of the uncompressed
 * tar), and only then handed to libarchive, which parses the tar.  Every
 * entry is created with *at() calls below a directory resolved inside the
 * snapshot root (sbx_open_in_root), never through a symlink's final
 * component.  Names are taken relative to the layer root as Docker and
 * containerd take them (KILN_PATH_LAYER): other tools write "/" for the
 * root (umoci insert) or "/etc/passwd", and ".." at the root of such a name
 * stays at the root; a relative name climbing above it makes the layer
 * invalid.
 *
 * The result is in overlay form: the layer's own entries only, `.wh.<name>`
 * as a 0/0 character device, `.wh..wh..opq` as the opaque xattr on its
 * directory.  A whiteout hides lower layers only: if this layer already holds
 * the name, the whiteout is dropped; a directory created where this layer
 * placed a whiteout becomes opaque (deleted and re-created). */
#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>
#include <zlib.h>
#include <zstd.h>

#include "bld_snapshot.h"
#include "cleanup.h"
#include "digest.h"
#include "log.h"
#include "sbx_internal.h"

#define IN_CHUNK  (128 * 1024)
#define OUT_CHUNK (256 * 1024)

/* ---- the decompressing, hashing input stream -------------------------- */

typedef struct layer_in {
    int fd;
    bld_layer_media media;
    z_stream z;
    bool z_init;
    ZSTD_DStream *zs;
    size_t zret; /* last ZSTD_decompressStream result: 0 at a frame end */
    kiln_sha256 *blob_h, *diff_h;
    unsigned char *in, *out;
    size_t in_len, in_pos;
    bool in_eof, end;
    /* Go's archive/tar (Docker, containerd, umoci) takes an archive that
     * stops right after the last file's data, without the block's padding
     * or the end-of-archive blocks (umoci 0.4's `insert` writes such layers).
     * libarchive wants the padding: once the entry being read has all its
     * data (data_done), the end of the stream is followed by the zeros up to
     * the block boundary.  They are not part of the DiffID. */
    uint64_t total; /* uncompressed bytes produced */
    bool data_done, padded;
    char errmsg[128];
    int errnum;
} layer_in;

static int fill_in(layer_in *s)
{
    if (s->in_pos < s->in_len || s->in_eof)
        return 0;
    ssize_t r;
    do {
        r = read(s->fd, s->in, IN_CHUNK);
    } while (r < 0 && errno == EINTR);
    if (r < 0) {
        s->errnum = errno;
        snprintf(s->errmsg, sizeof(s->errmsg), "read layer blob");
        return -1;
    }
    s->in_len = (size_t)r;
    s->in_pos = 0;
    if (r == 0)
        s->in_eof = true;
    else
        kiln_sha256_update(s->blob_h, s->in, (size_t)r);
    return 0;
}

/* Produces the next chunk of uncompressed tar into s->out: its length, 0 at
 * the end of the stream, -1 on error (message in s->errmsg). */
static ssize_t produce(layer_in *s)
{
    while (!s->end) {
        if (fill_in(s) < 0)
            return -1;
        size_t avail = s->in_len - s->in_pos;
        size_t got = 0;
        if (s->media == BLD_LAYER_TAR) {
            if (avail == 0) {
                s->end = true;
                break;
            }
            memcpy(s->out, s->in + s->in_pos, avail);
            s->in_pos += avail;
            got = avail;
        } else if (s->media == BLD_LAYER_GZIP) {
            if (avail == 0) {
                if (s->z.total_in != 0 || !s->z_init) {
                    snprintf(s->errmsg, sizeof(s->errmsg), "truncated gzip stream");
                    return -1;
                }
                s->end = true; /* clean end after a complete member */
                break;
            }
            s->z.next_in = s->in + s->in_pos;
            s->z.avail_in = (uInt)avail;
            s->z.next_out = s->out;
            s->z.avail_out = OUT_CHUNK;
            int zr = inflate(&s->z, Z_NO_FLUSH);
            s->in_pos = (size_t)(s->z.next_in - s->in);
            got = OUT_CHUNK - s->z.avail_out;
            if (zr == Z_STREAM_END) {
                /* Concatenated gzip members (pigz-style) continue. */
                inflateReset(&s->z);
            } else if (zr != Z_OK && zr != Z_BUF_ERROR) {
                snprintf(s->errmsg, sizeof(s->errmsg), "gzip: %s",
                         s->z.msg ? s->z.msg : "corrupt data");
                return -1;
            }
        } else {
            if (avail == 0) {
                if (s->zret != 0) {
                    snprintf(s->errmsg, sizeof(s->errmsg), "truncated zstd stream");
                    return -1;
                }
                s->end = true;
                break;
            }
            ZSTD_inBuffer ib = {s->in + s->in_pos, avail, 0};
            ZSTD_outBuffer ob = {s->out, OUT_CHUNK, 0};
            size_t zr = ZSTD_decompressStream(s->zs, &ob, &ib);
            if (ZSTD_isError(zr)) {
                snprintf(s->errmsg, sizeof(s->errmsg), "zstd: %s", ZSTD_getErrorName(zr));
                return -1;
            }
            s->zret = zr;
            s->in_pos += ib.pos;
            got = ob.pos;
        }
        if (got > 0) {
            kiln_sha256_update(s->diff_h, s->out, got);
            s->total += got;
            return (ssize_t)got;
        }
    }
    return 0;
}

static la_ssize_t read_cb(struct archive *a, void *ud, const void **buf)
{
    layer_in *s = ud;
    ssize_t n = produce(s);
    if (n < 0) {
        archive_set_error(a, s->errnum ? s->errnum : EIO, "%s", s->errmsg);
        return -1;
    }
    if (n == 0 && s->data_done && !s->padded && s->total % 512 != 0) {
        n = (ssize_t)(512 - s->total % 512);
        memset(s->out, 0, (size_t)n);
        s->padded = true;
    }
    *buf = s->out;
    return n;
}

static bld_layer_media sniff(const unsigned char *p, size_t n)
{
    if (n >= 2 && p[0] == 0x1f && p[1] == 0x8b)
        return BLD_LAYER_GZIP;
    if (n >= 4 && p[0] == 0x28 && p[1] == 0xb5 && p[2] == 0x2f && p[3] == 0xfd)
        return BLD_LAYER_ZSTD;
    return BLD_LAYER_TAR;
}

static void layer_in_dispose(layer_in *s)
{
    if (s->z_init)
        inflateEnd(&s->z);
    if (s->zs)
        ZSTD_freeDStream(s->zs);
    kiln_sha256_free(s->blob_h);
    kiln_sha256_free(s->diff_h);
    free(s->in);
    free(s->out);
    if (s->fd >= 0)
        close(s->fd);
}

static int layer_in_open(layer_in *s, const bld_layer *l, kiln_error **err)
{
    memset(s, 0, sizeof(*s));
    s->fd = open(l->blob_path, O_RDONLY | O_CLOEXEC);
    if (s->fd < 0)
        return kiln_error_set(err, kiln_code_from_errno(errno), errno, "open layer %s",
                              l->blob_path);
    s->blob_h = kiln_sha256_new();
    s->diff_h = kiln_sha256_new();
    s->in = malloc(IN_CHUNK);
    s->out = malloc(OUT_CHUNK);
    if (!s->blob_h || !s->diff_h || !s->in || !s->out)
        return kiln_error_set(err, KILN_ENOSPC, ENOMEM, "layer buffers");
    if (fill_in(s) < 0)
        return kiln_error_set(err, KILN_EIO, s->errnum, "%s %s", s->errmsg, l->blob_path);
    s->media = l->media != BLD_LAYER_AUTO ? l->media : sniff(s->in, s->in_len);
    if (s->media == BLD_LAYER_GZIP) {
        if (inflateInit2(&s->z, 15 + 16) != Z_OK)
            return kiln_error_set(err, KILN_ENOSPC, 0, "inflateInit2");
        s->z_init = true;
    } else if (s->media == BLD_LAYER_ZSTD) {
        s->zs = ZSTD_createDStream();
        if (s->zs == NULL || ZSTD_isError(ZSTD_initDStream(s->zs)))
            return kiln_error_set(err, KILN_ENOSPC, 0, "ZSTD_createDStream");
    }
    return 0;
}

/* ---- writing entries -------------------------------------------------- */

typedef struct dir_meta {
    char *rel;
    mode_t mode;
    struct timespec mtime;
} dir_meta;

typedef struct unpack_ctx {
    int rootfd;
    int *lowers; /* fds, bottom first */
    size_t nlower;
    bool priv;
    const char *opaque_xattr;
    dir_meta *dirs;
    size_t ndirs, capdirs;
    layer_in *in;
} unpack_ctx;

static int defer_dir(unpack_ctx *c, const char *rel, mode_t mode, struct timespec mtime,
                     kiln_error **err)
{
    if (c->ndirs == c->capdirs) {
        size_t nc = c->capdirs ? c->capdirs * 2 : 64;
        dir_meta *nd = realloc(c->dirs, nc * sizeof(*nd));
        if (nd == NULL)
            return kiln_error_set(err, KILN_ENOSPC, ENOMEM, "directory list");
        c->dirs = nd;
        c->capdirs = nc;
    }
    char *r = strdup(rel);
    if (r == NULL)
        return kiln_error_set(err, KILN_ENOSPC, ENOMEM, "strdup");
    c->dirs[c->ndirs++] = (dir_meta){r, mode, mtime};
    return 0;
}

/* Finds rel as a directory in the topmost lower layer that has it (the
 * metadata a directory implied by this layer should inherit). */
static bool lower_dir(const unpack_ctx *c, const char *rel, struct stat *st)
{
    for (size_t i = c->nlower; i-- > 0;) {
        int fd = sbx_open_in_root(c->lowers[i], rel, O_PATH | O_NOFOLLOW, NULL);
        if (fd < 0)
            continue;
        int r = fstat(fd, st);
        close(fd);
        return r == 0 && S_ISDIR(st->st_mode);
    }
    return false;
}

/* Creates a directory the layer implies (a parent it does not list). */
static int implied_dir(int parentfd, const char *name, const char *rel, void *ud, kiln_error **err)
{
    unpack_ctx *c = ud;
    struct stat st = {.st_mode = S_IFDIR | 0755};
    bool inherit = lower_dir(c, rel, &st);
    if (mkdirat(parentfd, name, 0700) < 0 && errno != EEXIST)
        return kiln_error_set(err, KILN_EIO, errno, "mkdir %s", rel);
    if (inherit && c->priv && fchownat(parentfd, name, st.st_uid, st.st_gid, AT_SYMLINK_NOFOLLOW))
        return kiln_error_set(err, KILN_EIO, errno, "chown %s", rel);
    return defer_dir(c, rel, st.st_mode & 07777, inherit ? st.st_mtim : (struct timespec){0, 0},
                     err);
}

static int set_xattrs_path(const unpack_ctx *c, int fd, const char *path, struct archive_entry *e,
                           kiln_error **err)
{
    const char *name;
    const void *val;
    size_t size;
    archive_entry_xattr_reset(e);
    while (archive_entry_xattr_next(e, &name, &val, &size) == ARCHIVE_OK) {
        if (!sbx_xattr_allowed(name) || (!c->priv && strncmp(name, "user.", 5) != 0))
            continue;
        int r = fd >= 0 ? fsetxattr(fd, name, val, size, 0) : lsetxattr(path, name, val, size, 0);
        if (r < 0 && errno == EINVAL) /* e.g. a malformed capability set */
            kiln_warn("sandbox", "ignoring invalid xattr %s in layer", name);
        else if (r < 0 && errno != ENOTSUP && errno != EPERM)
            return kiln_error_set(err, KILN_EIO, errno, "set xattr %s", name);
    }
    return 0;
}

static void entry_times(struct archive_entry *e, struct timespec ts[2])
{
    ts[1].tv_sec = archive_entry_mtime(e);
    ts[1].tv_nsec = archive_entry_mtime_nsec(e);
    ts[0] = ts[1];
}

/* Ownership, mode (never for symlinks), xattrs and times of a non-directory
 * just created as parent/leaf; fd is an open fd of it or -1. */
static int finish_node(const unpack_ctx *c, int parent, const char *leaf, int fd,
                       struct archive_entry *e, const char *rel, kiln_error **err)
{
    bool lnk = archive_entry_filetype(e) == AE_IFLNK;
    if (c->priv && fchownat(parent, leaf, (uid_t)archive_entry_uid(e), (gid_t)archive_entry_gid(e),
                            AT_SYMLINK_NOFOLLOW) < 0)
        return kiln_error_set(err, KILN_EIO, errno, "chown %s", rel);
    /* chmod after chown: chown clears the set-id bits. */
    if (!lnk) {
        mode_t m = archive_entry_perm(e) & 07777;
        int r = fd >= 0 ? fchmod(fd, m) : fchmodat(parent, leaf, m, 0);
        if (r < 0)
            return kiln_error_set(err, KILN_EIO, errno, "chmod %s", rel);
    }
    char path[64 + NAME_MAX];
    snprintf(path, sizeof(path), "/proc/self/fd/%d/%s", parent, leaf);
    int r = set_xattrs_path(c, fd, path, e, err);
    if (r < 0)
        return kiln_error_wrap(err, "%s", rel);
    struct timespec ts[2];
    entry_times(e, ts);
    if (utimensat(parent, leaf, ts, AT_SYMLINK_NOFOLLOW) < 0)
        return kiln_error_set(err, KILN_EIO, errno, "set times of %s", rel);
    return 0;
}

static int write_data(unpack_ctx *c, struct archive *a, int fd, struct archive_entry *e,
                      const char *rel, kiln_error **err)
{
    const void *buf;
    size_t size;
    la_int64_t off;
    int r;
    while ((r = archive_read_data_block(a, &buf, &size, &off)) == ARCHIVE_OK) {
        const char *p = buf;
        while (size > 0) {
            ssize_t w = pwrite(fd, p, size, off);
            if (w < 0) {
                if (errno == EINTR)
                    continue;
                return kiln_error_set(err, kiln_code_from_errno(errno), errno, "write %s", rel);
            }
            p += w;
            off += w;
            size -= (size_t)w;
        }
        if (archive_entry_size_is_set(e) && off >= archive_entry_size(e))
            c->in->data_done = true; /* only its padding may be missing now */
    }
    if (r != ARCHIVE_EOF)
        return kiln_error_set(err, KILN_EINVAL, archive_errno(a), "read %s from layer: %s", rel,
                              archive_error_string(a));
    if (archive_entry_size_is_set(e) && ftruncate(fd, archive_entry_size(e)) < 0)
        return kiln_error_set(err, KILN_EIO, errno, "truncate %s", rel);
    return 0;
}

/* Copies a regular file of a lower layer (hard link target outside this
 * layer): a link would let this layer's metadata change a lower snapshot. */
static int copy_from_lower(int srcfd, int parent, const char *leaf, const char *rel,
                           kiln_error **err)
{
    struct stat st;
    if (fstat(srcfd, &st) < 0)
        return kiln_error_set(err, KILN_EIO, errno, "stat %s", rel);
    _cleanup_close_ int fd =
        openat(parent, leaf, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0)
        return kiln_error_set(err, KILN_EIO, errno, "create %s", rel);
    for (;;) {
        ssize_t n = copy_file_range(srcfd, NULL, fd, NULL, 1 << 30, 0);
        if (n < 0)
            return kiln_error_set(err, KILN_EIO, errno, "copy %s", rel);
        if (n == 0)
            break;
    }
    if (geteuid() == 0 && fchown(fd, st.st_uid, st.st_gid) < 0)
        return kiln_error_set(err, KILN_EIO, errno, "chown %s", rel);
    if (fchmod(fd, st.st_mode & 07777) < 0 ||
        futimens(fd, (struct timespec[]){st.st_atim, st.st_mtim}) < 0)
        return kiln_error_set(err, KILN_EIO, errno, "set metadata of %s", rel);
    return sbx_copy_xattrs(srcfd, fd, err);
}

static int do_hardlink(unpack_ctx *c, int parent, const char *leaf, const char *rel,
                       const char *raw_target, kiln_error **err)
{
    char target[PATH_MAX];
    int r = kiln_path_clean(target, sizeof(target), raw_target, KILN_PATH_LAYER, err);
    if (r < 0)
        return kiln_error_wrap(err, "hard link %s", rel);
    if (*target == '\0')
        return kiln_error_set(err, KILN_EINVAL, 0, "hard link %s to the root", rel);
    const char *tleaf;
    _cleanup_close_ int tparent =
        sbx_open_parent(c->rootfd, target, false, NULL, NULL, &tleaf, NULL);
    struct stat st;
    if (tparent >= 0 && fstatat(tparent, tleaf, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
        !S_ISDIR(st.st_mode) && !kiln_ovl_is_whiteout(&st)) {
        if (linkat(tparent, tleaf, parent, leaf, 0) < 0)
            return kiln_error_set(err, KILN_EIO, errno, "link %s to %s", rel, target);
        return 0;
    }
    for (size_t i = c->nlower; i-- > 0;) {
        _cleanup_close_ int fd = sbx_open_in_root(c->lowers[i], target, O_PATH | O_NOFOLLOW, NULL);
        if (fd < 0)
            continue;
        if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode))
            break;
        _cleanup_close_ int rfd =
            sbx_open_in_root(c->lowers[i], target, O_RDONLY | O_NOFOLLOW, err);
        if (rfd < 0)
            return rfd;
        return copy_from_lower(rfd, parent, leaf, rel, err);
    }
    return kiln_error_set(err, KILN_EINVAL, 0, "hard link %s: target %s is not in the layer stack",
                          rel, target);
}

/* A parent that cannot be resolved inside the layer (a dangling or looping
 * symlink, a file used as a directory) makes the layer invalid. */
static int bad_parent(int r, kiln_error **err)
{
    int e = err && *err ? (*err)->sys_errno : 0;
    if (e == ENOENT || e == ENOTDIR || e == ELOOP || e == EEXIST) {
        (*err)->code = KILN_EINVAL;
        return KILN_EINVAL;
    }
    return r;
}

static int do_whiteout(unpack_ctx *c, const char *rel, const char *base, kiln_error **err)
{
    const char *leaf;
    _cleanup_close_ int parent = sbx_open_parent(c->rootfd, rel, true, implied_dir, c, &leaf, err);
    if (parent < 0)
        return bad_parent(parent, err);
    if (strcmp(base, KILN_WH_OPAQUE) == 0) {
        size_t plen = (size_t)(base - rel);
        _cleanup_free_ char *dir = strndup(rel, plen ? plen - 1 : 0);
        if (dir == NULL)
            return kiln_error_set(err, KILN_ENOSPC, ENOMEM, "strndup");
        _cleanup_close_ int dfd = sbx_open_in_root(c->rootfd, dir, O_RDONLY | O_DIRECTORY, err);
        if (dfd < 0)
            return dfd;
        if (fsetxattr(dfd, c->opaque_xattr, "y", 1, 0) < 0)
            return kiln_error_set(err, KILN_EIO, errno, "mark %s opaque", *dir ? dir : "/");
        return 0;
    }
    if (strncmp(base, KILN_WH_META_PREFIX, strlen(KILN_WH_META_PREFIX)) == 0)
        return 0; /* other AUFS metadata (.wh..wh.plnk, …): nothing to hide */
    const char *name = base + strlen(KILN_WH_PREFIX);
    if (*name == '\0' || strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
        return kiln_error_set(err, KILN_EINVAL, 0, "invalid whiteout %s", rel);
    struct stat st;
    if (fstatat(parent, name, &st, AT_SYMLINK_NOFOLLOW) == 0)
        return 0; /* this layer's own entry: a whiteout hides lower layers only */
    if (mknodat(parent, name, S_IFCHR | 0, makedev(0, 0)) < 0)
        return kiln_error_set(err, KILN_EPERM, errno, "create whiteout for %s", rel);
    return 0;
}

/* The layer's root directory entry: only its metadata. */
static int do_root(unpack_ctx *c, struct archive_entry *e, mode_t type, struct timespec mtime,
                   kiln_error **err)
{
    if (type != AE_IFDIR)
        return kiln_error_set(err, KILN_EINVAL, 0, "layer root entry is not a directory");
    if (c->priv && fchown(c->rootfd, (uid_t)archive_entry_uid(e), (gid_t)archive_entry_gid(e)) < 0)
        return kiln_error_set(err, KILN_EIO, errno, "chown layer root");
    return defer_dir(c, "", archive_entry_perm(e) & 07777, mtime, err);
}

/* A directory entry: made unless one is there (opaque when it replaces a
 * whiteout), owner and xattrs set now, mode and times deferred. */
static int make_dir(unpack_ctx *c, int parent, const char *leaf, const char *rel,
                    struct archive_entry *e, bool is_dir, bool was_whiteout, struct timespec mtime,
                    kiln_error **err)
{
    if (!is_dir && mkdirat(parent, leaf, 0700) < 0)
        return kiln_error_set(err, KILN_EIO, errno, "mkdir %s", rel);
    _cleanup_close_ int dfd = openat(parent, leaf, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (dfd < 0)
        return kiln_error_set(err, KILN_EIO, errno, "open %s", rel);
    if (c->priv && fchown(dfd, (uid_t)archive_entry_uid(e), (gid_t)archive_entry_gid(e)) < 0)
        return kiln_error_set(err, KILN_EIO, errno, "chown %s", rel);
    if (was_whiteout && fsetxattr(dfd, c->opaque_xattr, "y", 1, 0) < 0)
        return kiln_error_set(err, KILN_EIO, errno, "mark %s opaque", rel);
    int r = set_xattrs_path(c, dfd, NULL, e, err);
    if (r < 0)
        return kiln_error_wrap(err, "%s", rel);
    /* Mode and times last: creating children changes a directory's mtime,
     * and a read-only mode would stop a rootless unpack. */
    return defer_dir(c, rel, archive_entry_perm(e) & 07777, mtime, err);
}

/* A regular file entry with its data. */
static int make_file(unpack_ctx *c, struct archive *a, int parent, const char *leaf,
                     const char *rel, struct archive_entry *e, kiln_error **err)
{
    _cleanup_close_ int fd =
        openat(parent, leaf, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0)
        return kiln_error_set(err, KILN_EIO, errno, "create %s", rel);
    int r = write_data(c, a, fd, e, rel, err);
    if (r < 0)
        return r;
    return finish_node(c, parent, leaf, fd, e, rel, err);
}

/* A symlink entry. */
static int make_symlink(const unpack_ctx *c, int parent, const char *leaf, const char *rel,
                        struct archive_entry *e, kiln_error **err)
{
    const char *target = archive_entry_symlink(e);
    if (target == NULL)
        return kiln_error_set(err, KILN_EINVAL, 0, "symlink %s without target", rel);
    if (symlinkat(target, parent, leaf) < 0)
        return kiln_error_set(err, KILN_EIO, errno, "symlink %s", rel);
    return finish_node(c, parent, leaf, -1, e, rel, err);
}

/* A device node (skipped unprivileged) or a FIFO entry. */
static int make_node(const unpack_ctx *c, int parent, const char *leaf, const char *rel,
                     struct archive_entry *e, mode_t type, kiln_error **err)
{
    if (type != AE_IFIFO && !c->priv) {
        kiln_debug("sandbox", "skipping device node %s (unprivileged)", rel);
        return 0;
    }
    dev_t dev = makedev(archive_entry_rdevmajor(e), archive_entry_rdevminor(e));
    if (mknodat(parent, leaf, type | 0600, dev) < 0)
        return kiln_error_set(err, KILN_EIO, errno, "mknod %s", rel);
    return finish_node(c, parent, leaf, -1, e, rel, err);
}

static int do_entry(unpack_ctx *c, struct archive *a, struct archive_entry *e, kiln_error **err)
{
    const char *raw = archive_entry_pathname(e);
    if (raw == NULL)
        return kiln_error_set(err, KILN_EINVAL, 0, "layer entry without a usable name");
    char rel[PATH_MAX];
    int r = kiln_path_clean(rel, sizeof(rel), raw, KILN_PATH_LAYER, err);
    if (r < 0)
        return kiln_error_wrap(err, "layer entry");
    mode_t type = archive_entry_filetype(e);
    struct timespec ts[2];
    entry_times(e, ts);
    if (*rel == '\0')
        return do_root(c, e, type, ts[1], err);
    const char *slash = strrchr(rel, '/');
    const char *base = slash ? slash + 1 : rel;
    if (strncmp(base, KILN_WH_PREFIX, strlen(KILN_WH_PREFIX)) == 0)
        return do_whiteout(c, rel, base, err);

    const char *leaf;
    _cleanup_close_ int parent = sbx_open_parent(c->rootfd, rel, true, implied_dir, c, &leaf, err);
    if (parent < 0)
        return bad_parent(parent, err);
    struct stat old;
    bool exists = fstatat(parent, leaf, &old, AT_SYMLINK_NOFOLLOW) == 0;
    bool was_whiteout = exists && kiln_ovl_is_whiteout(&old);
    if (exists && !(type == AE_IFDIR && S_ISDIR(old.st_mode))) {
        r = kiln_rm_rf_at(parent, leaf, err);
        if (r < 0)
            return r;
    }
    const char *hl = archive_entry_hardlink(e);
    if (hl != NULL)
        return do_hardlink(c, parent, leaf, rel, hl, err);

    switch (type) {
    case AE_IFDIR:
        return make_dir(c, parent, leaf, rel, e, exists && S_ISDIR(old.st_mode), was_whiteout,
                        ts[1], err);
    case AE_IFREG:
        return make_file(c, a, parent, leaf, rel, e, err);
    case AE_IFLNK:
        return make_symlink(c, parent, leaf, rel, e, err);
    case AE_IFCHR:
    case AE_IFBLK:
    case AE_IFIFO:
        return make_node(c, parent, leaf, rel, e, type, err);
    default:
        kiln_debug("sandbox", "skipping %s of type 0%o", rel, (unsigned)type);
        return 0;
    }
}

static int apply_dirs(unpack_ctx *c, kiln_error **err)
{
    for (size_t i = 0; i < c->ndirs; i++) {
        dir_meta *d = &c->dirs[i];
        _cleanup_close_ int fd =
            sbx_open_in_root(c->rootfd, d->rel, O_RDONLY | O_DIRECTORY | O_NOFOLLOW, NULL);
        if (fd < 0)
            continue; /* replaced later in the layer */
        struct timespec ts[2] = {d->mtime, d->mtime};
        if (fchmod(fd, d->mode) < 0 || futimens(fd, ts) < 0)
            return kiln_error_set(err, KILN_EIO, errno, "set metadata of %s",
                                  *d->rel ? d->rel : "/");
    }
    return 0;
}

static void ctx_dispose(unpack_ctx *c)
{
    for (size_t i = 0; i < c->ndirs; i++)
        free(c->dirs[i].rel);
    free(c->dirs);
    for (size_t i = 0; i < c->nlower; i++)
        if (c->lowers[i] >= 0)
            close(c->lowers[i]);
    free(c->lowers);
}

static int unpack_stream(unpack_ctx *c, layer_in *in, const char *blob, kiln_error **err)
{
    struct archive *a = archive_read_new();
    if (a == NULL)
        return kiln_error_set(err, KILN_ENOSPC, ENOMEM, "archive_read_new");
    archive_read_support_format_tar(a);
    int r = 0;
    if (archive_read_open(a, in, NULL, read_cb, NULL) != ARCHIVE_OK) {
        r = kiln_error_set(err, KILN_EINVAL, 0, "layer %s: %s", blob, archive_error_string(a));
        goto out;
    }
    struct archive_entry *e;
    int ar;
    c->in = in;
    while ((ar = archive_read_next_header(a, &e)) == ARCHIVE_OK || ar == ARCHIVE_WARN) {
        in->data_done = false;
        r = do_entry(c, a, e, err);
        if (r < 0) {
            kiln_error_wrap(err, "layer %s", blob);
            goto out;
        }
    }
    if (ar != ARCHIVE_EOF) {
        r = kiln_error_set(err, KILN_EINVAL, 0, "layer %s: %s", blob, archive_error_string(a));
        goto out;
    }
    /* libarchive stops at the end-of-archive blocks; the DiffID covers every
     * byte of the uncompressed stream, so hash the rest too. */
    ssize_t n;
    while ((n = produce(in)) > 0)
        ;
    if (n < 0)
        r = kiln_error_set(err, KILN_EINVAL, in->errnum, "layer %s: %s", blob, in->errmsg);
    else
        r = apply_dirs(c, err);
out:
    archive_read_free(a);
    return r;
}

int bld_layer_unpack(char out_diff_id[KILN_DIGEST_STRLEN + 1], const bld_layer *layer,
                     const char *dest, const char *const *lower_dirs, size_t n_lower,
                     kiln_error **err)
{
    layer_in in;
    unpack_ctx c = {.rootfd = -1, .priv = geteuid() == 0};
    c.opaque_xattr = c.priv ? KILN_OVL_OPAQUE_XATTR : KILN_OVL_OPAQUE_XATTR_USER;
    int r = layer_in_open(&in, layer, err);
    if (r < 0)
        goto out;
    c.rootfd = open(dest, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (c.rootfd < 0) {
        r = kiln_error_set(err, KILN_EIO, errno, "open %s", dest);
        goto out;
    }
    c.lowers = calloc(n_lower ? n_lower : 1, sizeof(int));
    if (c.lowers == NULL) {
        r = kiln_error_set(err, KILN_ENOSPC, ENOMEM, "calloc");
        goto out;
    }
    for (; c.nlower < n_lower; c.nlower++) {
        c.lowers[c.nlower] = open(lower_dirs[c.nlower], O_PATH | O_DIRECTORY | O_CLOEXEC);
        if (c.lowers[c.nlower] < 0) {
            r = kiln_error_set(err, KILN_EIO, errno, "open %s", lower_dirs[c.nlower]);
            goto out;
        }
    }
    if (fchmod(c.rootfd, 0755) < 0) {
        r = kiln_error_set(err, KILN_EIO, errno, "chmod %s", dest);
        goto out;
    }
    r = unpack_stream(&c, &in, layer->blob_path, err);
    if (r < 0)
        goto out;
    char blob_digest[KILN_DIGEST_STRLEN + 1];
    kiln_sha256_final_str(in.blob_h, blob_digest);
    kiln_sha256_final_str(in.diff_h, out_diff_id);
    if (layer->digest && strcmp(layer->digest, blob_digest) != 0) {
        r = kiln_error_set(err, KILN_EINVAL, 0, "layer %s: digest %s, expected %s",
                           layer->blob_path, blob_digest, layer->digest);
        goto out;
    }
    if (layer->diff_id && strcmp(layer->diff_id, out_diff_id) != 0)
        r = kiln_error_set(err, KILN_EINVAL, 0, "layer %s: DiffID %s, expected %s",
                           layer->blob_path, out_diff_id, layer->diff_id);
out:
    if (c.rootfd >= 0)
        close(c.rootfd);
    ctx_dispose(&c);
    layer_in_dispose(&in);
    return r;
}
