/* Overlay filesystem conventions on disk, shared by the builder (snapshots,
 * sandbox diffs, the engine's merged view) and the pusher (layer tars):
 *
 *   whiteout     a character device with device number 0/0 hides the name
 *                in lower layers; in a layer tar it is an empty file
 *                ".wh.<name>" (OCI image spec, "Whiteouts")
 *   opaque dir   the xattr trusted.overlay.opaque (user.overlay.opaque when
 *                rootless) is "y": the directory hides all of the lower
 *                layers' entries; in a layer tar, "<dir>/.wh..wh..opq"
 *   ".wh..wh."   the prefix of AUFS metadata names (.wh..wh.plnk, ...) */
#ifndef KILN_OVERLAY_H
#define KILN_OVERLAY_H

#include <stdbool.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/xattr.h>

#define KILN_WH_PREFIX             ".wh."
#define KILN_WH_OPAQUE             ".wh..wh..opq"
#define KILN_WH_META_PREFIX        ".wh..wh."
#define KILN_OVL_OPAQUE_XATTR      "trusted.overlay.opaque"
#define KILN_OVL_OPAQUE_XATTR_USER "user.overlay.opaque"

/* True for an overlay whiteout: a character device with device number 0/0. */
static inline bool kiln_ovl_is_whiteout(const struct stat *st)
{
    return S_ISCHR(st->st_mode) && st->st_rdev == 0;
}

/* True when an opaque xattr's value (n bytes) marks the directory opaque:
 * exactly "y", as overlayfs itself checks. */
static inline bool kiln_ovl_opaque_value(const char *v, ssize_t n)
{
    return n == 1 && v[0] == 'y';
}

/* True when the directory (an fd, or a path not followed when a symlink)
 * carries the opaque marker, trusted or user. */
static inline bool kiln_ovl_is_opaque_fd(int dirfd)
{
    char v[4];
    ssize_t n = fgetxattr(dirfd, KILN_OVL_OPAQUE_XATTR, v, sizeof(v));
    if (n < 0)
        n = fgetxattr(dirfd, KILN_OVL_OPAQUE_XATTR_USER, v, sizeof(v));
    return kiln_ovl_opaque_value(v, n);
}
static inline bool kiln_ovl_is_opaque_path(const char *path)
{
    char v[4];
    ssize_t n = lgetxattr(path, KILN_OVL_OPAQUE_XATTR, v, sizeof(v));
    if (n < 0)
        n = lgetxattr(path, KILN_OVL_OPAQUE_XATTR_USER, v, sizeof(v));
    return kiln_ovl_opaque_value(v, n);
}

#endif
