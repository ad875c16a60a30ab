/* Registry client: push and pull of images between the store and OCI /
 * Docker distribution registries, and manifest lists (OCI image indexes).
 *
 * Everything a registry sends is untrusted: manifests and blobs are hashed
 * while they stream and land in the store only under their verified digest;
 * a registry's Docker-Content-Digest must match what Kiln computed.
 *
 * Credentials (explicit creds, config.json entries, helper output, tokens)
 * never appear in logs, events or error messages.
 *
 * State kept under <data_dir>/registry/ (crash-safe: temp + fsync + rename):
 *   origins/<hex>   repositories ("host repo" lines) known to hold blob <hex>,
 *                   so a push to another repository of that registry mounts it;
 *   uploads/<hash>  open chunked upload sessions (registry, repository,
 *                   digest, location, offset): a push retried after a restart
 *                   resumes them instead of starting over.
 *
 * All calls are blocking and thread-safe.  Concurrent calls share the store,
 * the state above and a process-wide bound on blob transfers in flight per
 * registry (psh_registry_opts.concurrency). */
#ifndef PSH_REGISTRY_H
#define PSH_REGISTRY_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "psh_store.h"

typedef enum psh_manifest_format {
    PSH_FORMAT_AS_STORED = 0, /* push the manifest bytes exactly as stored (OCI) */
    PSH_FORMAT_V2S2,          /* convert OCI image manifests (gzip layers) to Docker schema 2,
                                 and an index of local images to a Docker manifest list; the
                                 converted documents are stored too */
} psh_manifest_format;

/* Options shared by push, pull and manifest operations.  Strings are borrowed
 * for the duration of the call. */
typedef struct psh_registry_opts {
    bool tls_verify;      /* default true; false = every registry is insecure: HTTPS
                                    without verification if it speaks TLS, else plain HTTP */
    const char *cert_dir; /* certs.d root: the .crt files of <cert_dir>/<host:port>/
                                    are added to the system CAs and its first NAME.cert +
                                    NAME.key pair is the client certificate; NULL =
                                    /etc/containers/certs.d (only: not /etc/docker) */
    const char *authfile; /* Docker config.json; NULL = $REGISTRY_AUTH_FILE, then
                                    $DOCKER_CONFIG/config.json, then ~/.docker/config.json */
    const char *creds;    /* "user:password" (wins over authfile); NULL = none */
    /* Per-registry credentials the client sent (after creds, before any
       file): true with *user / *secret (borrowed for the call; user
       KILN_DOCKERCFG_TOKEN_USER = an identity token) when the client has
       some for host (canonical, kiln_dockercfg_host).  NULL = none. */
    bool (*cred_lookup)(void *ud, const char *host, const char **user, const char **secret);
    void *cred_ud;
    bool env_auth;               /* no authfile: read the Docker config.json of this
                                    process's environment (default true, for the tool);
                                    kiln-pusher sets false: a service never lends its
                                    operator's credentials to clients */
    const char *registries_conf; /* insecure registries: lines "insecure HOST[:PORT]" or
                                    containers' [[registry]] location=… insecure=true */
    const char *data_dir;        /* state root; NULL = the store's data dir */
    unsigned concurrency;        /* blobs in flight per registry; default 3 */
    uint64_t chunk_size;         /* PATCH chunk; blobs larger than this are sent in chunks;
                                    default 16 MiB (raised to OCI-Chunk-Min-Length) */
    psh_manifest_format format;  /* push only */
    bool tag_index;              /* pull only: a reference to an index tags the index (the
                                    image's manifest stays reachable through it), not the
                                    platform's manifest */
    unsigned max_retries;        /* per request / chunk; default 6 */
    unsigned retry_base_ms;      /* first backoff delay; default 250 ms, doubled, +jitter */
    unsigned retry_delay_ms;     /* non-zero: this fixed delay between retries instead
                                    (--retry-delay); Retry-After still wins */
    long connect_timeout_s;      /* default 30 */
    long low_speed_time_s;       /* abort when < 1 KiB/s for this long; default 60; not
                                    applied to finalising PUTs */
    const atomic_int *cancel;    /* non-zero = stop (checked between chunks and during
                                    transfers); NULL = never */
} psh_registry_opts;

/* Zeroes o and sets the defaults above. */
void psh_registry_opts_init(psh_registry_opts *o);

/* Progress callbacks; every member may be NULL.  Called from worker threads
 * (several blobs at once), never with a lock of the caller held.  Strings are
 * borrowed for the duration of the call. */
typedef struct psh_reg_events {
    void (*blob_started)(void *ud, const char *digest, uint64_t size);
    void (*blob_progress)(void *ud, const char *digest, uint64_t done, uint64_t total);
    void (*blob_skipped)(void *ud, const char *digest, uint64_t size); /* already there */
    void (*blob_mounted)(void *ud, const char *digest, const char *from_repo);
    void (*retried)(void *ud, const char *what, const char *why); /* what: digest or URL path */
    void (*blob_done)(void *ud, const char *digest, uint64_t size);
    void (*manifest_pushed)(void *ud, const char *digest, const char *ref);
    void *ud;
} psh_reg_events;

typedef struct psh_push_result {
    psh_descriptor manifest; /* what was pushed last (the image manifest or the index) */
    unsigned blobs_uploaded;
    unsigned blobs_skipped;
    unsigned blobs_mounted;
    unsigned retries;
    uint64_t bytes_sent;    /* blob bytes sent, resent bytes included */
    uint64_t bytes_resumed; /* bytes of resumed uploads that did not need resending */
} psh_push_result;

/* Pushes the image (or index) src_ref names in the store to dest_ref
 * (NULL = src_ref).  Order: blobs (config and layers, concurrently), then the
 * manifest by digest for index children, then the top manifest by dest_ref's
 * tag (or digest).  ev and out may be NULL.
 * Errors: KILN_EINVAL (bad reference; a certs.d client certificate without
 * its key or the reverse, an unreadable or unusable key), KILN_ENOENT (not in
 * the store), KILN_EAUTH / KILN_EPERM (registry refused credentials / access,
 * TLS verification or client certificate failures),
 * KILN_EUNAVAIL (unreachable after retries), KILN_EREMOTE (the registry's own
 * error message included), KILN_ECANCELED. */
int psh_push(psh_store *s, const char *src_ref, const char *dest_ref, const psh_registry_opts *o,
             const psh_reg_events *ev, psh_push_result *out, kiln_error **err);

typedef struct psh_pull_result {
    psh_descriptor manifest; /* the platform's image manifest, as tagged */
    psh_descriptor index;    /* the index it came from; digest "" when none */
    char os[32], architecture[32], variant[16];
    unsigned blobs_fetched;
    unsigned blobs_present; /* already in the store: not fetched */
    unsigned blobs_resumed; /* continued from a partial file an earlier attempt left */
    uint64_t bytes_fetched;
    uint64_t bytes_resumed; /* bytes of partial files a 206 answer let us keep */
} psh_pull_result;

/* Pulls ref (familiar or fully qualified, tag or digest) and tags it in the
 * store under its familiar form (":latest" added).  platform is
 * "os/arch[/variant]" or NULL for the host (linux/amd64 on x86-64).  Blobs
 * already in the store are not fetched; each fetched blob is verified while
 * it streams and resumed with Range after a broken transfer, also one that a
 * killed process left in the store's partial file (psh_store_partial_open).  The origin
 * (registry and repository) of every blob is recorded for later mounts.
 * Nothing is tagged unless every blob verified. */
int psh_pull(psh_store *s, const char *ref, const char *platform, const psh_registry_opts *o,
             const psh_reg_events *ev, psh_pull_result *out, kiln_error **err);

/* ---- step caches (kiln build --cache-to / --cache-from) ---- */

/* The config media type of a step cache manifest: its config blob is a JSON
 * object {"records":[{"key","created","digest","diff_id","media_type",
 * "size"}, ...]}; its layers are the records' blobs. */
#define PSH_MT_KILN_CACHE_CONFIG "application/vnd.kiln.cache.config.v1+json"

/* With n_want 0: fetches ref's manifest (an image manifest whose config has
 * PSH_MT_KILN_CACHE_CONFIG, KILN_EINVAL otherwise; KILN_ENOENT when ref does
 * not exist) and its config blob into the store, *config (may not be NULL)
 * describing that blob.  With want[0..n_want-1] (digest and size set):
 * fetches those blobs of ref's repository.  Blobs are verified and resumed as
 * psh_pull does; the store keeps no tag for them (GC may remove them once
 * no image uses them).  out may be NULL. */
int psh_pull_cache(psh_store *s, const char *ref, const psh_descriptor *want, size_t n_want,
                   const psh_registry_opts *o, const psh_reg_events *ev, psh_descriptor *config,
                   psh_pull_result *out, kiln_error **err);

/* ---- manifest lists (OCI image indexes in the store) ---- */

/* Creates an empty OCI index tagged list_ref.  KILN_EEXIST when the tag
 * exists. */
int psh_manifest_create(psh_store *s, const char *list_ref, kiln_error **err);

/* Checks that the registry (host[:port]) accepts o->creds: GET /v2/ with
 * them.  KILN_EAUTH when it rejects them (or wants some and none were
 * given).  For `kiln login`; the credentials are not kept. */
int psh_registry_login_check(psh_store *s, const char *registry, const psh_registry_opts *o,
                             kiln_error **err);

/* Adds image_ref to the list: a local image (platform from its config), or,
 * when it is not in the store, a remote image manifest fetched by reference
 * (its manifest and config are fetched to learn the platform; layers are
 * not).  An entry with the same digest is replaced.  out (may be NULL)
 * receives the added manifest's descriptor.  o may be NULL for local images. */
int psh_manifest_add(psh_store *s, const char *list_ref, const char *image_ref,
                     const psh_registry_opts *o, psh_descriptor *out, kiln_error **err);

/* Sets the platform fields (NULL = unchanged, "" = remove variant) and adds
 * annotations ("key=value" strings) of the entry whose digest is digest. */
int psh_manifest_annotate(psh_store *s, const char *list_ref, const char *digest, const char *os,
                          const char *arch, const char *variant, const char *const *annotations,
                          size_t n_annotations, kiln_error **err);

/* The index JSON as stored (caller frees *out). */
int psh_manifest_inspect(psh_store *s, const char *list_ref, char **out, kiln_error **err);

/* Pushes the list: each referenced manifest by digest (with its blobs), then
 * the index by dest_ref's tag.  Same as psh_push on an index. */
int psh_manifest_push(psh_store *s, const char *list_ref, const char *dest_ref,
                      const psh_registry_opts *o, const psh_reg_events *ev, psh_push_result *out,
                      kiln_error **err);

#endif
