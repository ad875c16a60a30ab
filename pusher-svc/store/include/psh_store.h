/* The image store: an OCI image layout at $KILN_DATA/store.
 *
 *   store/oci-layout        {"imageLayoutVersion":"1.0.0"}
 *   store/index.json        one descriptor per tag (org.opencontainers.image.ref.name)
 *   store/blobs/sha256/HEX  content-addressed blobs; the name is the verified digest
 *   store/.kiln/            Kiln's own bookkeeping: lock, tmp/ (blobs being written),
 *                           pins/ (blobs that running commits are about to reference)
 *
 * skopeo (oci:STORE:REF) and umoci (--image STORE:REF) read the layout directly.
 * Both split their argument at the FIRST ':' (skopeo 1.9 / umoci 0.4), so a
 * ref.name that itself contains ':' works as long as the store path has none:
 *     skopeo inspect oci:/var/lib/kiln/store:localhost:5000/team/app:1
 * They match ref.name verbatim: give them the stored familiar form ("app:1",
 * not "app" nor "docker.io/library/app:1"); Kiln's resolve accepts all three.
 *
 * Crash safety: a blob is written to .kiln/tmp, fsynced, re-hashed, then
 * renamed to blobs/sha256/HEX and the directory fsynced, so a blob's name is
 * always its digest.  index.json is replaced with temp+fsync+rename; readers
 * never lock and never see a partial index.  Writers of index.json serialise
 * on flock(.kiln/lock), which also works between threads of one process
 * because every operation opens its own lock descriptor.
 *
 * A psh_store is immutable after psh_store_open() and may be shared by threads.
 * Anything a client sends is validated before it becomes a path: digests must
 * be "sha256:<64 hex>", references must follow ref.h. */
#ifndef PSH_STORE_H
#define PSH_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "digest.h"
#include "error.h"

#define PSH_MT_OCI_MANIFEST    "application/vnd.oci.image.manifest.v1+json"
#define PSH_MT_OCI_INDEX       "application/vnd.oci.image.index.v1+json"
#define PSH_MT_OCI_CONFIG      "application/vnd.oci.image.config.v1+json"
#define PSH_MT_OCI_LAYER       "application/vnd.oci.image.layer.v1.tar"
#define PSH_MT_OCI_LAYER_GZ    "application/vnd.oci.image.layer.v1.tar+gzip"
#define PSH_MT_OCI_LAYER_ZST   "application/vnd.oci.image.layer.v1.tar+zstd"
#define PSH_MT_DOCKER_MANIFEST "application/vnd.docker.distribution.manifest.v2+json"
#define PSH_MT_DOCKER_LIST     "application/vnd.docker.distribution.manifest.list.v2+json"
#define PSH_MT_DOCKER_CONFIG   "application/vnd.docker.container.image.v1+json"
#define PSH_MT_DOCKER_LAYER_GZ "application/vnd.docker.image.rootfs.diff.tar.gzip"
#define PSH_ANNOT_REF_NAME     "org.opencontainers.image.ref.name"

#define PSH_MANIFEST_MAX ((size_t)4 << 20)  /* manifests, indexes and configs */
#define PSH_INDEX_MAX    ((size_t)64 << 20) /* the store's index.json */

typedef struct psh_store psh_store;

/* A content descriptor.  media_type is "" when the source had none. */
typedef struct psh_descriptor {
    char media_type[128];
    char digest[KILN_DIGEST_STRLEN + 1];
    uint64_t size;
} psh_descriptor;

/* Opens the store under data_dir (creating data_dir/store and an empty
 * layout when missing).  data_dir is also the root that commit diff paths
 * must resolve into.  Caller frees *out with psh_store_free(). */
int psh_store_open(psh_store **out, const char *data_dir, kiln_error **err);
void psh_store_free(psh_store *s);

/* Absolute path of the layout directory (borrowed). */
const char *psh_store_path(const psh_store *s);
/* realpath() of the data dir given to psh_store_open (borrowed). */
const char *psh_store_data_dir(const psh_store *s);

/* Resolves path with realpath() and checks that it lies strictly inside
 * root (itself resolved), so neither ".." nor symlinks can leave it.  With
 * root NULL, the store's data dir is used.  On success *out (caller frees) is
 * the resolved path.  KILN_EPERM when outside, KILN_ENOENT when missing. */
int psh_store_confine(const psh_store *s, const char *root, const char *path, char **out,
                      kiln_error **err);

/* ---- blobs ---- */

/* True when the blob exists.  False for malformed digests. */
bool psh_store_has_blob(const psh_store *s, const char *digest);

/* Opens a blob read-only; *out_fd is owned by the caller.  out_size may be NULL. */
int psh_store_open_blob(const psh_store *s, const char *digest, int *out_fd, uint64_t *out_size,
                        kiln_error **err);

/* Reads a whole blob of at most max bytes into a NUL-terminated buffer (caller
 * frees *out).  The content is re-hashed: KILN_EINTERNAL if it no longer
 * matches its name.  KILN_ENOSPC when the blob exceeds max. */
int psh_store_read_blob(const psh_store *s, const char *digest, size_t max, char **out,
                        size_t *out_len, kiln_error **err);

/* Uncompressed sizes of layer blobs (layer_size.c): the tar size of a
 * layer the store packed (commit, import) is remembered beside the blob in
 * .kiln/sizes/HEX, so history, inspect and push can show both sizes.  A
 * layer pulled from a registry has none (0).  Remembering is best effort:
 * a failure only leaves the size unknown.  GC forgets the size with the
 * blob. */
void psh_store_note_tar_size(psh_store *s, const char *digest, uint64_t tar_size);
uint64_t psh_store_tar_size(const psh_store *s, const char *digest);
void psh_store_forget_tar_size(psh_store *s, const char *digest);

/* A pin set: digests a running job is about to reference.  GC never deletes a
 * pinned blob.  The owner holds an flock on its pin file, so the pins of a
 * killed process are recognised as stale and dropped by the next GC. */
typedef struct psh_store_pin {
    int fd; /* -1 when closed */
    char name[64];
} psh_store_pin;

/* Creates an empty pin set.  Close with psh_store_pin_close(). */
int psh_store_pin_open(psh_store *s, psh_store_pin *out, kiln_error **err);
/* Adds digest (under the index lock, so a GC run sees all of it or none). */
int psh_store_pin_add(psh_store *s, psh_store_pin *p, const char *digest, kiln_error **err);
/* Releases the pins; safe on a closed or zeroed-with-fd=-1 pin set. */
void psh_store_pin_close(psh_store *s, psh_store_pin *p);

/* Copies fd to EOF into the store.  When expected is non-NULL the content
 * must hash to it (KILN_EINVAL otherwise, nothing stored).  pin may be NULL.
 * out_digest (KILN_DIGEST_STRLEN + 1 bytes) and out_size may be NULL.  An
 * existing blob is kept (its mtime refreshed). */
int psh_store_put_blob_fd(psh_store *s, psh_store_pin *pin, const char *expected, int fd,
                          char *out_digest, uint64_t *out_size, kiln_error **err);

/* Same for an in-memory blob. */
int psh_store_put_blob_bytes(psh_store *s, psh_store_pin *pin, const char *expected,
                             const void *data, size_t len, char *out_digest, kiln_error **err);

/* A blob being written by a producer that streams into an fd (the layer packer). */
typedef struct psh_store_tmp {
    int fd;             /* write here; -1 once committed or aborted */
    char name[96];      /* file name inside .kiln/tmp; "" once renamed to its digest */
    psh_store_pin *pin; /* optional (set by the caller): pin the digest before it appears */
} psh_store_tmp;

/* Creates a temp blob.  Pair with psh_store_tmp_commit() or psh_store_tmp_abort(). */
int psh_store_tmp_open(psh_store *s, psh_store_tmp *out, kiln_error **err);

/* Fsyncs the temp blob, hashes what is on disk and, when expected is non-NULL,
 * requires a match; then renames it to its digest.  The temp is consumed
 * whatever the outcome.  out_digest and out_size may be NULL. */
int psh_store_tmp_commit(psh_store *s, psh_store_tmp *t, const char *expected, char *out_digest,
                         uint64_t *out_size, kiln_error **err);

/* Closes and unlinks a temp blob; a no-op after commit. */
void psh_store_tmp_abort(psh_store *s, psh_store_tmp *t);

/* ---- resumable downloads ---- */

/* A download's partial file is .kiln/tmp/pull-<64 hex>.partial: its name
 * depends only on the digest, so a later process finds it again. */
#define PSH_STORE_PARTIAL_PREFIX "pull-"
#define PSH_STORE_PARTIAL_SUFFIX ".partial"
/* Seconds an abandoned partial file survives the sweep at pusher start. */
#define PSH_STORE_PARTIAL_MAX_AGE (24 * 3600)

/* True for a partial file's name (prefix, 64 characters, suffix). */
bool psh_store_is_partial_name(const char *name);

/* Opens the partial file of digest's download, created empty when missing,
 * and takes an exclusive flock on it that lasts until psh_store_tmp_commit(),
 * psh_store_tmp_abort() (both also remove the file) or psh_store_partial_keep().
 * *out_size is what is on disk already; the caller positions the fd.
 * Returns 0 when opened, 1 when another writer holds the lock (out->fd is
 * -1: download elsewhere), negative on error. */
int psh_store_partial_open(psh_store *s, const char *digest, psh_store_tmp *out, uint64_t *out_size,
                           kiln_error **err);

/* Closes a partial file and keeps its bytes for a later resume; a no-op
 * after commit or abort. */
void psh_store_partial_keep(psh_store *s, psh_store_tmp *t);

/* Removes the partial files no writer holds whose last change is at least
 * max_age seconds old; returns how many.  Best effort: errors are skipped. */
unsigned psh_store_partial_sweep(psh_store *s, int64_t max_age);

/* ---- references and index.json ---- */

/* Finds what ref names.  ref may be a familiar or fully qualified reference
 * ("app", "app:1", "docker.io/library/app:1"), a reference with a digest, a
 * bare "sha256:<hex>", or a ref.name written by another tool (matched
 * verbatim first).  A digest that no tag carries still resolves when the blob
 * is a manifest or index in the store.  KILN_ENOENT when nothing matches. */
int psh_store_resolve(const psh_store *s, const char *ref, psh_descriptor *out, kiln_error **err);

/* Points tag dst (a reference without digest; ":latest" added when no tag) at
 * the image src resolves to.  Metadata only: the previous image of dst keeps
 * its blobs until GC. */
int psh_store_tag(psh_store *s, const char *src, const char *dst, kiln_error **err);

/* Points tag dst at a manifest or index that is already in the store.
 * platform fields may be NULL.  Used by commit, import and pull. */
int psh_store_tag_descriptor(psh_store *s, const psh_descriptor *d, const char *os,
                             const char *arch, const char *variant, const char *dst,
                             kiln_error **err);

/* Removes ref from index.json.  A tag removes that one entry (the image's
 * blobs stay until GC); a digest ("sha256:…" or "name@sha256:…") removes every
 * entry pointing at that manifest.  KILN_ENOENT when nothing matched. */
int psh_store_remove(psh_store *s, const char *ref, kiln_error **err);

/* One listed image. */
typedef struct psh_image_info {
    char *ref; /* ref.name as stored; NULL for untagged entries (owned) */
    psh_descriptor manifest;
    uint64_t size;   /* manifest + config + layer blobs, compressed bytes */
    int64_t created; /* unix seconds from the config, -1 when unknown */
    char os[32];
    char architecture[32];
    char variant[16];
} psh_image_info;

typedef struct psh_image_list {
    psh_image_info *items; /* owned */
    size_t n;
} psh_image_list;

/* Lists the entries of index.json in order.  Images whose blobs are missing
 * are listed with what is known.  Dispose with psh_image_list_dispose(). */
int psh_store_list(const psh_store *s, psh_image_list *out, kiln_error **err);
void psh_image_list_dispose(psh_image_list *l);
/* Appends the image manifests of the store no tag reaches (directly or
 * through an index) -- what a re-tag or a rebuild left behind until GC --
 * with ref NULL, as `docker images` shows <none>.  Reads every small blob:
 * cost grows with the store. */
int psh_store_list_untagged(const psh_store *s, psh_image_list *out, kiln_error **err);

/* The documents behind one reference. */
typedef struct psh_inspect {
    psh_descriptor manifest;
    char *manifest_json; /* the stored bytes, NUL-terminated (owned) */
    size_t manifest_len;
    char *config_json; /* owned; NULL for an image index */
    size_t config_len;
    uint64_t *layer_tar_sizes; /* per manifest layer: psh_store_tar_size (owned) */
    size_t n_layers;
    uint64_t layers_size;     /* the layers' compressed bytes */
    uint64_t layers_tar_size; /* their uncompressed bytes; 0 when one is unknown */
} psh_inspect;

/* Resolves ref and reads its manifest (or index) and config.  Dispose with
 * psh_inspect_dispose(). */
int psh_store_inspect(const psh_store *s, const char *ref, psh_inspect *out, kiln_error **err);
void psh_inspect_dispose(psh_inspect *i);

/* ---- garbage collection ---- */

typedef struct psh_gc_opts {
    /* Digests running jobs use: never deleted; for a manifest or index, what
     * it references is kept too. */
    const char *const *in_use;
    size_t n_in_use;
    /* Seconds: a temp blob whose writer is gone (its flock is free) is removed
     * once unmodified this long (default 3600; 0 = at once).  Temps of live
     * writers are never removed; partial downloads (see
     * psh_store_partial_open) whose writer is gone are, whatever their age. */
    int64_t tmp_min_age;
    bool dry_run;
} psh_gc_opts;

/* Zeroes o and sets the defaults. */
void psh_gc_opts_init(psh_gc_opts *o);

typedef struct psh_gc_result {
    uint64_t blobs_removed;
    uint64_t bytes_freed;
    uint64_t tmps_removed;
} psh_gc_result;

/* Deletes blobs not reachable from index.json (through indexes, manifests,
 * configs and layers), not in opts->in_use and not pinned by a running
 * commit or import, plus stale temp files.  Runs under the index lock, so no
 * tag can appear half way.  opts may be NULL for the defaults. */
int psh_store_gc(psh_store *s, const psh_gc_opts *opts, psh_gc_result *out, kiln_error **err);

#endif
