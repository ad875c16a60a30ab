/* Moving images into and out of the store without a registry: import of a
 * rootfs (directory, tar, compressed tar) or of an OCI image layout, and
 * export as an OCI layout directory or an oci-archive tarball.  This is how
 * air-gapped build farms get their base images. */
#ifndef PSH_TRANSFER_H
#define PSH_TRANSFER_H

#include <stdbool.h>

#include "psh_commit.h"
#include "psh_store.h"

typedef struct psh_import_opts {
    /* rootfs imports: the image platform (default linux and the host's
     * architecture) and its history line. */
    psh_platform platform;
    const char *created_by; /* default "kiln import" */
    int64_t created;        /* unix seconds; -1 = now */
    psh_pack_opts pack;     /* codec, level, threads, progress */
    /* OCI layout imports: the ref.name to take from the layout (matched
     * verbatim, then as a reference); NULL when the layout holds one image. */
    const char *layout_ref;
    /* What src is: NULL or "" to detect; "oci" (a layout directory),
     * "oci-archive", "docker-archive" (tars) or "rootfs". */
    const char *format;
    /* When non-NULL, src must resolve inside this directory (symlinks
     * included); the RPC layer passes the data dir for remote clients. */
    const char *confine;
} psh_import_opts;

/* Zeroes o and sets the defaults. */
void psh_import_opts_init(psh_import_opts *o);

/* Imports src and tags it ref.  src is detected:
 *   - a directory holding an "oci-layout" file: an OCI image layout; the
 *     chosen manifest or index and every blob under it are copied, each
 *     verified against its digest (nothing of a broken layout is tagged);
 *   - another directory: a root filesystem, packed as one layer;
 *   - a tar of an OCI layout (oci-archive) or a `docker save` tar: the images
 *     it holds (import_image.c);
 *   - another file: a tar, possibly gzip/zstd/xz/bzip2-compressed (by magic bytes),
 *     read with libarchive first to reject entries whose names climb above
 *     the root (absolute names are taken relative to it, as Docker does:
 *     kiln_path_clean with KILN_PATH_LAYER), then packed as one layer.
 * out (may be NULL) receives the manifest (or index) descriptor. */
int psh_store_import(psh_store *s, const char *src, const char *ref, const psh_import_opts *opts,
                     psh_descriptor *out, kiln_error **err);

/* import_image.c: KILN_EINVAL when path is not what o->format says. */
int psh_import_format_check(const psh_import_opts *o, const char *path, kiln_error **err);
/* Imports path when it is an oci-archive or a docker-archive tar (detected,
 * or as o->format says) and sets *handled; leaves a rootfs tar alone
 * (*handled false, returns 0). */
int psh_import_image_archive(psh_store *s, const char *path, const char *ref,
                             const psh_import_opts *o, psh_descriptor *out, bool *handled,
                             kiln_error **err);

typedef enum psh_export_kind {
    PSH_EXPORT_OCI_DIR = 0, /* an OCI image layout directory */
    PSH_EXPORT_OCI_ARCHIVE, /* a tar of that layout (skopeo's oci-archive:) */
} psh_export_kind;

/* Splits "oci:DIR" or "oci-archive:FILE" (the CLI's export target) into
 * kind and *path (borrowed from target).  KILN_EINVAL otherwise. */
int psh_export_target_parse(const char *target, psh_export_kind *kind, const char **path,
                            kiln_error **err);

/* Writes the image ref names, with every blob it needs, to dest.  The result
 * holds just that image, tagged with ref in its familiar form (no tag when ref
 * is a digest).  A directory dest must not exist or be empty (KILN_EEXIST
 * otherwise); an archive is written to a temp file and renamed, replacing a
 * previous file.  confine, when non-NULL, is the directory dest must lie in. */
int psh_store_export(const psh_store *s, const char *ref, psh_export_kind kind, const char *dest,
                     const char *confine, kiln_error **err);

#endif
