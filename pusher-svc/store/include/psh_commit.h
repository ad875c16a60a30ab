/* Image assembly: turns a base image, new layer directories and an image
 * description into an OCI config and image manifest in the store, and tags it.
 *
 * The manifest (OCI, or Docker schema 2 on request) is serialised once; those
 * exact bytes are digested, stored and (later) pushed.  rootfs.diff_ids and
 * history list the base's entries first.  Base layers keep their compressed
 * blobs; their media types are renamed to the manifest's format (same bytes,
 * same digest) because an OCI manifest with Docker layer types is refused by
 * OCI tools such as umoci.
 *
 * The input is plain C structs owned by the caller; every string is borrowed
 * for the duration of the call. */
#ifndef PSH_COMMIT_H
#define PSH_COMMIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "psh_pack.h"
#include "psh_store.h"

/* A list of strings.  set=false means "absent" (the key is left out of the
 * config); set=true with n=0 writes an empty list. */
typedef struct psh_strv {
    const char *const *v;
    size_t n;
    bool set;
} psh_strv;

typedef struct psh_kv {
    const char *key;
    const char *value;
} psh_kv;

/* Docker's HEALTHCHECK; absent when test.set is false.  Durations in
 * nanoseconds, 0 = unset (left out). */
typedef struct psh_healthcheck {
    psh_strv test; /* ["CMD-SHELL", "curl …"], ["CMD", …] or ["NONE"] */
    int64_t interval_ns;
    int64_t timeout_ns;
    int64_t start_period_ns;
    int64_t start_interval_ns;
    int retries;
} psh_healthcheck;

/* The "config" object of the image config: the final values (commit does not
 * merge the base image's config; the builder has already applied it). */
typedef struct psh_image_config {
    const char *user;       /* NULL or "" = absent */
    psh_strv exposed_ports; /* "80/tcp", "53/udp" */
    psh_strv env;           /* "KEY=value", in order */
    psh_strv entrypoint;
    psh_strv cmd;
    psh_strv volumes; /* "/data" */
    const char *working_dir;
    const psh_kv *labels; /* written sorted by key */
    size_t n_labels;
    const char *stop_signal;
    psh_healthcheck healthcheck;
    psh_strv on_build;
    psh_strv shell;
} psh_image_config;

/* One history entry for an instruction of this build. */
typedef struct psh_history_entry {
    const char *created_by; /* the instruction, e.g. "RUN make" */
    const char *comment;    /* NULL = absent */
    bool empty_layer;       /* metadata-only step: no layer in layers[] */
    int64_t created;        /* unix seconds; -1 = the image's created time */
} psh_history_entry;

/* Go names: os "linux", architecture "amd64"/"arm64"/…, variant "v8" or NULL. */
typedef struct psh_platform {
    const char *os;
    const char *architecture;
    const char *variant;
} psh_platform;

typedef struct psh_commit_spec {
    const char *base;          /* manifest digest in the store; NULL = FROM scratch */
    const char *const *layers; /* new layer dirs (overlay upper dirs), in order */
    size_t n_layers;
    /* Directory the layer dirs must resolve into (symlinks included); NULL =
     * the store's data dir.  The RPC layer should pass $KILN_DATA/snapshots so
     * a client cannot pack other files of the data dir into an image. */
    const char *diff_root;
    psh_image_config config;
    /* One entry per instruction; entries with empty_layer=false must match
     * n_layers one to one.  When n_history is 0, one entry per layer is made. */
    const psh_history_entry *history;
    size_t n_history;
    psh_platform platform;
    const char *author;        /* NULL = absent */
    int64_t created;           /* unix seconds; -1 = SOURCE_DATE_EPOCH if set, else now */
    int64_t source_date_epoch; /* -1 = none; clamps file mtimes and the created time */
    const char *const *tags;   /* references to tag; may be empty */
    size_t n_tags;
    /* "K=V" annotations of the manifest (kiln build --annotation); a later
     * one replaces an earlier one with its key. */
    const char *const *annotations;
    size_t n_annotations;
    /* Write a Docker schema 2 manifest and config media type instead of OCI
     * (for registries that want them); layers keep their bytes under the
     * Docker names.  zstd layers are refused.  Note: skopeo's and umoci's
     * oci: readers only look at OCI entries of index.json, so such an image
     * is visible to Kiln (resolve, inspect, push) but not to them by tag. */
    bool docker_schema2;
    /* Codec, level, threads and progress; commit sets overlay_diff and
     * source_date_epoch itself. */
    psh_pack_opts pack;
    /* Optional packing memory: when both are set, layer_keys[i] (an identity
     * of layers[i]'s content that changes whenever the dir is made again,
     * e.g. the builder's step generation id; never the path alone, which a
     * pruned step reuses; NULL entries allowed) is looked up first and a hit
     * whose blob is still in the store is reused without packing; misses are
     * recorded after packing. */
    psh_pack_cache *pack_cache;
    const char *const *layer_keys;
    /* Called after each new layer is stored (index into layers[]); may be NULL. */
    void (*layer_done)(void *ud, size_t i, const psh_layer_info *info);
    void *layer_done_ud;
} psh_commit_spec;

/* Zeroes spec and sets the defaults (created/source_date_epoch -1, gzip). */
void psh_commit_spec_init(psh_commit_spec *spec);

typedef struct psh_commit_layer {
    psh_descriptor blob;                  /* as listed in the manifest */
    char diff_id[KILN_DIGEST_STRLEN + 1]; /* as listed in rootfs.diff_ids */
    bool from_base;
    uint64_t tar_size; /* uncompressed bytes; 0 = unknown (psh_store_tar_size) */
} psh_commit_layer;

typedef struct psh_commit_result {
    psh_descriptor manifest;
    psh_descriptor config;
    psh_commit_layer *layers; /* every layer, base first (owned) */
    size_t n_layers;
} psh_commit_result;

void psh_commit_result_dispose(psh_commit_result *r);

/* Builds, stores and tags the image.  Everything is validated before the
 * store changes: tags (kiln_ref grammar), platform (Go names; "x86_64" is
 * refused), layer dirs (must resolve inside diff_root or the data dir,
 * symlinks included, and not inside the store: KILN_EPERM), base (must be an
 * image manifest whose blobs are all present: KILN_ENOENT otherwise), history
 * (must match the layers).  Blobs are pinned while the commit runs so a
 * concurrent GC cannot remove them.  On failure no tag changes; blobs already
 * written stay for GC.  Dispose *out with psh_commit_result_dispose(). */
int psh_commit(psh_store *s, const psh_commit_spec *spec, psh_commit_result *out, kiln_error **err);

/* True when arch is a Go architecture name Kiln knows (amd64, arm64, …). */
bool psh_platform_arch_valid(const char *arch);

#endif
