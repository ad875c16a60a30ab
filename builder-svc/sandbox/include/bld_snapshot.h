/* Base-image snapshots: each layer of a base image unpacked once into
 * $DATA/snapshots/<chain id hex>/fs, in overlay form, so a stack of snapshot
 * dirs mounts directly as overlay lower dirs.
 *
 * Layout of one snapshot:
 *   $DATA/snapshots/<hex>/fs        the layer's own entries (read-only after
 *                                   completion; whiteouts as 0/0 character
 *                                   devices, opaque dirs with the xattr
 *                                   trusted.overlay.opaque=y, or
 *                                   user.overlay.opaque when unpacked rootless)
 *   $DATA/snapshots/<hex>/meta      "chain=…\ndiff_id=…\nparent=…\nblob=…\n"
 *   $DATA/snapshots/<hex>/complete  completion marker, and the lock file that
 *                                   counts users (see below)
 *
 * A layer is unpacked into $DATA/snapshots/tmp-XXXXXX, synced, marked complete
 * and renamed into place in one step; a directory without its marker is an
 * interrupted unpack and is discarded, never reused.  Chain ids follow the
 * OCI image spec: ChainID(L0) = DiffID(L0), ChainID(Ln) = sha256(ChainID(Ln-1)
 * + " " + DiffID(Ln)).
 *
 * Users are counted by the kernel: an acquired snapshot holds a shared flock
 * on its marker, and pruning removes only snapshots on which it gets an
 * exclusive one.  Locks die with the process, so a crashed builder never pins
 * a snapshot forever. */
#ifndef BLD_SNAPSHOT_H
#define BLD_SNAPSHOT_H

#include <stddef.h>
#include <stdint.h>

#include "digest.h"
#include "error.h"

typedef enum bld_layer_media {
    BLD_LAYER_AUTO = 0, /* detect from the first bytes */
    BLD_LAYER_TAR,
    BLD_LAYER_GZIP,
    BLD_LAYER_ZSTD,
} bld_layer_media;

/* One base-image layer as the pusher describes it.  Borrowed strings. */
typedef struct bld_layer {
    const char *blob_path; /* compressed layer blob, e.g. $DATA/store/blobs/sha256/<hex> */
    const char *digest;    /* "sha256:…" of the blob bytes; verified while reading; may be NULL */
    bld_layer_media media;
    const char *diff_id; /* "sha256:…" of the uncompressed tar, or NULL when unknown */
} bld_layer;

/* Maps an OCI/Docker layer media type string onto bld_layer_media
 * (BLD_LAYER_AUTO for anything unrecognised). */
bld_layer_media bld_layer_media_parse(const char *media_type);

/* ChainID(parent, diff_id) into out; parent NULL or "" for the first layer. */
void bld_chain_id(char out[KILN_DIGEST_STRLEN + 1], const char *parent, const char *diff_id);

/* Makes sure snapshots exist for layers[0..n-1] (bottom first), unpacking
 * those that are missing, and writes the chain id of the top one into
 * out_chain_id ("" when n == 0).  DiffIDs that are not given are computed
 * while unpacking (and remembered per blob digest, so a later call does not
 * decompress again); given ones, and blob digests, are verified — a mismatch
 * fails with KILN_EINVAL and leaves nothing behind.  A hostile layer (".."
 * or absolute names, links leaving the tree) fails with KILN_EINVAL.  Safe
 * against concurrent callers in this and other processes. */
int bld_snapshot_ensure(char out_chain_id[KILN_DIGEST_STRLEN + 1], const char *data_dir,
                        const bld_layer *layers, size_t n, kiln_error **err);

/* An acquired chain of snapshots: while held, none of them is pruned. */
typedef struct bld_snapshot_stack bld_snapshot_stack;

/* Acquires the snapshot named by chain_id and all its parents.  KILN_ENOENT
 * when one is missing (pruned meanwhile: call bld_snapshot_ensure() again).
 * chain_id "" gives an empty stack (FROM scratch).  Free with
 * bld_snapshot_release(). */
int bld_snapshot_acquire(bld_snapshot_stack **out, const char *data_dir, const char *chain_id,
                         kiln_error **err);
/* Releases the stack (drops the locks).  Safe on NULL. */
void bld_snapshot_release(bld_snapshot_stack *s);
/* Number of layers and their fs dirs, bottom first (borrowed, valid until release):
 * exactly the lower dirs bld_run_spec expects. */
size_t bld_snapshot_stack_len(const bld_snapshot_stack *s);
const char *const *bld_snapshot_stack_dirs(const bld_snapshot_stack *s);

/* Removes every complete snapshot nobody holds whose marker is older than
 * max_age_s seconds (0: any age), and every interrupted unpack.  Stores the
 * number of snapshots removed in *removed when non-NULL. */
int bld_snapshot_prune(const char *data_dir, uint64_t max_age_s, size_t *removed, kiln_error **err);

/* Unpacks one layer blob into the empty directory dest in overlay form, with
 * lower_dirs (bottom first, may be NULL/0) consulted for the metadata of
 * directories the layer implies but does not list.  Writes the DiffID into
 * out_diff_id.  Used by bld_snapshot_ensure(); exposed for tools and tests. */
int bld_layer_unpack(char out_diff_id[KILN_DIGEST_STRLEN + 1], const bld_layer *layer,
                     const char *dest, const char *const *lower_dirs, size_t n_lower,
                     kiln_error **err);

/* Copies the merged view of dirs (bottom first, in overlay form: snapshot
 * dirs and step upper dirs) into the new or empty directory dst, whiteouts
 * applied, hard links kept, ownership restored when privileged.  For
 * consumers that need a stage's files as one plain tree (COPY --from). */
int bld_layers_merge(const char *dst, const char *const *dirs, size_t n, kiln_error **err);

#endif
