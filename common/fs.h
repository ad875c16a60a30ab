/* Filesystem primitives shared by the services and the CLI: whole writes,
 * atomic file replacement, directory creation and recursive removal, lexical
 * path cleaning, random names and the identity of the filesystem a process
 * sees.  One home each (the services used to carry their own copies). */
#ifndef KILN_FS_H
#define KILN_FS_H

#include <stdbool.h>
#include <stddef.h>

#include "error.h"

/* Writes all len bytes to fd, retrying on EINTR and short writes.  0, or -1
 * with errno set (ENOSPC when write() made no progress). */
int kiln_write_all(int fd, const void *buf, size_t len);

/* Receives (rd) or sends all n bytes on the socket fd, retrying on EINTR and
 * short transfers; a send raises no SIGPIPE.  False on an error or when the
 * peer closed first. */
bool kiln_sock_full(int fd, void *buf, size_t n, bool rd);

/* Flags of kiln_atomic_write_at(). */
enum {
    /* flock(LOCK_EX) the temp file while it is written, so that a cleanup of
     * interrupted temps (which skips locked files) leaves it alone. */
    KILN_ATOMIC_LOCK = 1u << 0,
};

/* Replaces dirfd/name with len bytes of data, so that readers see the old
 * content or the new, never a mix, and the new one survives a crash once
 * this returns: a temp file ".tmp-<name>-<random>" created in tmp_dirfd (-1:
 * dirfd; must be on the same filesystem), written, fsynced, renamed over
 * name, then dirfd fsynced.  mode is the new file's mode (before umask).  On
 * failure the temp is removed and name is untouched. */
int kiln_atomic_write_at(int tmp_dirfd, int dirfd, const char *name, const void *data, size_t len,
                         unsigned mode, unsigned flags, kiln_error **err);
/* Same for a path (its directory must exist). */
int kiln_atomic_write(const char *path, const void *data, size_t len, unsigned mode, unsigned flags,
                      kiln_error **err);

/* fsync of a directory (after a rename into it): 0, or -1 with errno. */
int kiln_fsync_dir(const char *dir);

/* mkdir -p: creates the missing components of path with mode; fails when
 * path exists and is not a directory. */
int kiln_mkdir_p(const char *path, unsigned mode, kiln_error **err);

/* rm -rf of name below dirfd (AT_FDCWD: a path): never follows a symlink,
 * opens up directories that are not rwx for their owner (overlay's work/work
 * is mode 000; read-only directories from a tar) before emptying them.  A
 * missing name is not an error. */
int kiln_rm_rf_at(int dirfd, const char *name, kiln_error **err);
int kiln_rm_rf(const char *path, kiln_error **err);

/* Flags of kiln_path_clean(). */
enum {
    /* A leading "/" is accepted and dropped (the result is relative);
     * without it an absolute path fails. */
    KILN_PATH_ABS = 1u << 0,
    /* ".." removes the previous component; without it any ".." fails. */
    KILN_PATH_DOTDOT = 1u << 1,
    /* With DOTDOT: ".." at the root stays at the root (else it fails). */
    KILN_PATH_CLAMP = 1u << 2,
    /* With DOTDOT: ".." at the root stays there for an absolute path only
     * (a layer entry's name, as Docker and containerd take it). */
    KILN_PATH_CLAMP_ABS = 1u << 3,
    /* A component longer than NAME_MAX fails. */
    KILN_PATH_NAME_MAX = 1u << 4,
    /* Go's path.Clean: a leading "/" is kept, leading ".." of a relative
     * path are kept, "." for an empty result (implies ABS and DOTDOT). */
    KILN_PATH_LEXICAL = 1u << 5,
};
/* A layer entry's name or hard link target, as Docker and containerd take
 * it: relative to the layer root, "/", "./" and "/etc/passwd" are the root,
 * the root and "etc/passwd"; "a/../b" is "b"; ".." at the root of an absolute
 * name stays there; a relative name that climbs above the root fails. */
#define KILN_PATH_LAYER                                                                            \
    (KILN_PATH_ABS | KILN_PATH_DOTDOT | KILN_PATH_CLAMP_ABS | KILN_PATH_NAME_MAX)

/* Cleans path in lexically into out (cap bytes): "." components, duplicate
 * and trailing slashes dropped, ".." as the flags say.  Without
 * KILN_PATH_LEXICAL the result is relative, "" for the root.  Fails with
 * KILN_EINVAL (out unspecified) as the flags say or when out is too small. */
int kiln_path_clean(char *out, size_t cap, const char *in, unsigned flags, kiln_error **err);

/* nchars random lower-case hex characters, NUL-terminated, into out (which
 * holds nchars + 1 bytes; at most 128 characters). */
void kiln_random_hex(char *out, size_t nchars);

/* Identity of this host and of the filesystem this process sees:
 * "<boot id>:<mount namespace>:<st_dev>:<st_ino of />" into out.  Two
 * processes with the same id can hand each other absolute paths.  Never fails:
 * parts that cannot be read are left empty. */
void kiln_host_id(char *out, size_t cap);

#endif
