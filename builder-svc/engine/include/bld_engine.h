/* The build engine: runs a Dockerfile's plan (builder-svc/dockerfile) in the
 * sandbox (builder-svc/sandbox) and turns it into an image through kiln-pusher
 * (Pull for bases, Commit for the result, Push for --push).
 *
 * One filesystem-changing instruction (RUN, COPY, ADD) gives one layer: its
 * diff dir under $KILN_DATA/snapshots/steps/; metadata instructions only
 * change the image config and add a history entry.  Each step is cached by a
 * key over its parent chain, the instruction after expansion, the content of
 * every context file it reads, the ARG values it uses and its mount specs: a
 * hit reuses the step's diff and runs nothing.
 *
 * Layer bytes never travel over RPC: base layers are read from the shared
 * store ($KILN_DATA/store/blobs) and diffs are handed to the pusher by path. */
#ifndef BLD_ENGINE_H
#define BLD_ENGINE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "digest.h"
#include "error.h"
#include "rpc.h"
#include "runopts.h"
#include "bld_ssh.h"

typedef struct bld_engine bld_engine;

/* Creates the engine for data_dir; pusher (borrowed, shared, thread-safe) is
 * the client to kiln-pusher.  Cleans what a killed builder left behind. */
int bld_engine_new(bld_engine **out, const char *data_dir, kiln_rpc_client *pusher,
                   kiln_error **err);
void bld_engine_free(bld_engine *e);

/* Sandbox preflight as a JSON object string (owned by the engine), for status. */
const char *bld_engine_preflight_json(bld_engine *e);

/* The platforms RUN can use on this host: the native one first, then those
 * a binfmt_misc handler with the F flag emulates (emulated[i] true), as
 * found when the engine started or at a later RUN's recheck.  Returns how
 * many were written (at most cap). */
size_t bld_engine_platforms(bld_engine *e, char (*out)[32], bool *emulated, size_t cap);
/* For the sandbox check: "linux/amd64, linux/arm64 (emulated), …" and one
 * line on emulation (usable handlers, or what is missing). */
void bld_engine_emulation(bld_engine *e, char *platforms, size_t pcap, char *detail, size_t dcap);

/* The network.host entitlement: RUN on the host's network (--network host,
 * RUN --network=host).  Off by default; without it such a build fails before
 * anything runs.  Set before the first build. */
void bld_engine_allow_host_network(bld_engine *e, bool allow);
bool bld_engine_host_network_allowed(const bld_engine *e);

typedef enum bld_net_mode {
    BLD_NETMODE_DEFAULT = 0, /* private network namespace with outbound access (pasta) */
    BLD_NETMODE_HOST,        /* the host's network: needs the network.host entitlement */
    BLD_NETMODE_NONE,        /* loopback only */
} bld_net_mode;

typedef struct bld_secret_src {
    const char *id;
    const char *path; /* file on the builder host */
} bld_secret_src;

/* A step cache: a registry ref, or (store) a tag in kiln-pusher's store. */
typedef struct bld_cache_ref {
    const char *ref;
    bool store;
} bld_cache_ref;

typedef struct bld_build_spec {
    const char *context_dir; /* absolute directory on the builder host */
    const char *dockerfile;  /* the Dockerfile text, NUL-terminated */
    const char
        *dockerignore; /* ignore patterns instead of context_dir/.dockerignore; NULL: that file */
    const char *filename;    /* for messages; NULL = "Dockerfile" */
    const char *const *tags; /* references to tag in the store */
    size_t n_tags;
    const char *const *annotations; /* "K=V" of the image's manifest */
    size_t n_annotations;
    const char *const *named_images; /* "NAME=REF": bld_plan_opts.named_images */
    size_t n_named_images;
    const char *const *build_args; /* "K=V" */
    size_t n_build_args;
    const char *target;   /* NULL = last stage */
    const char *platform; /* NULL = the builder's */
    bool no_cache;
    bool pull;                 /* pull every base image even when the store has it */
    const char *const *labels; /* "K=V", set on the image after the Dockerfile's LABELs */
    size_t n_labels;
    bld_net_mode network;
    const bld_secret_src *secrets;
    size_t n_secrets;
    bool push;                  /* push every tag after the commit */
    bool registry_insecure;     /* --tls-verify=false for pulls and pushes */
    const char *registry_creds; /* "user:password" for pulls and pushes; NULL = none */
    /* Per-registry credentials from the client, passed on to kiln-pusher
       (borrowed from the request; never logged). */
    Kiln__V1__RegistryCredential *const *registry_credentials;
    size_t n_registry_credentials;
    const char *registry_authfile; /* Docker config.json on the pusher's host; NULL = default */
    const char *registry_cert_dir; /* certs.d root on the pusher's host; NULL = default */
    const char *push_format;       /* --push: "oci" or "v2s2"; NULL = as stored (OCI) */
    int64_t source_date_epoch;     /* -1 = none */
    uint64_t run_timeout_ms;       /* per RUN; 0 = none */
    uint64_t run_memory_bytes;     /* per RUN (swap included); 0 = none */
    uint64_t run_pids_max;         /* per RUN: processes and threads at once; 0 = none */
    uint64_t build_timeout_ms;     /* the whole build (KILN_ETIMEDOUT naming it); 0 = none */
    unsigned max_parallel_stages;  /* independent stages at once; 0 = CPUs (2..8) */
    const atomic_bool *cancel;     /* set to stop the build; may be NULL */

    /* Each RUN's sandbox (--add-host, --ulimit, --shm-size), as in
     * bld_run_spec; in no cache key (Docker's rule). */
    const char *run_hosts; /* "IP\tNAME\n" lines for /etc/hosts; NULL = none */
    const kiln_ulimit *run_ulimits;
    size_t n_run_ulimits;
    uint64_t run_shm_bytes; /* 0 = 64 MiB */
    /* The agents of --ssh, for RUN --mount=type=ssh (borrowed; NULL = none):
     * a RUN needing one that is not there, with required, fails the build
     * before anything runs; without required, the mount is left out. */
    bld_ssh_session *ssh;
    /* Step cache shared through a registry (engine_regcache.c): the records
     * of cache_from refs are imported before the stages run (a ref that
     * cannot be read is a warning); after the commit the built steps' records
     * are exported to cache_to (NULL: none): the target's chain, or with
     * cache_to_max every stage's.  Credentials as for pulls and pushes. */
    const struct bld_cache_ref *cache_to;
    bool cache_to_max;
    const struct bld_cache_ref *cache_from;
    size_t n_cache_from;
} bld_build_spec;

/* Progress callbacks, all optional, called on the building thread.  stage and
 * step index the plan (step = instruction index within the stage). */
enum { BLD_STEP_RAN = 0, BLD_STEP_CACHED = 1, BLD_STEP_CACHED_REGISTRY = 2 };

typedef struct bld_build_events {
    void (*stage_started)(void *ud, size_t stage, const char *name, const char *base);
    void (*step_started)(void *ud, size_t stage, size_t step, const char *text, int line);
    void (*output)(void *ud, size_t stage, size_t step, int stream, const char *line, size_t len);
    /* cached: BLD_STEP_RAN, BLD_STEP_CACHED (local step cache) or
     * BLD_STEP_CACHED_REGISTRY (made from an imported cache record). */
    void (*step_done)(void *ud, size_t stage, size_t step, int cached, const char *cache_key,
                      uint64_t layer_bytes, uint64_t duration_ms);
    void (*stage_done)(void *ud, size_t stage);
    void (*note)(void *ud, const char *what); /* "pulling busybox:1", "committing", ... */
    void *ud;
} bld_build_events;

typedef struct bld_build_result {
    char digest[KILN_DIGEST_STRLEN + 1]; /* manifest digest of the image */
    size_t n_layers;
    uint64_t size;              /* compressed bytes of the layers */
    uint64_t size_uncompressed; /* their tar bytes; 0 when one of them is unknown */
    uint64_t duration_ms;
    unsigned steps_run, steps_cached;
    /* On failure: the instruction that failed, if any. */
    int failed_line;
    char failed_text[512];
} bld_build_result;

/* Builds.  Returns 0 with *out filled, or a negative kiln_code with *err and
 * out->failed_* describing the failing instruction (KILN_EINVAL for Dockerfile
 * errors, KILN_EREMOTE when a RUN exits non-zero — the message says the exit
 * code —, KILN_ECANCELED, KILN_ETIMEDOUT, ...). */
int bld_build(bld_engine *e, const bld_build_spec *spec, const bld_build_events *ev,
              bld_build_result *out, kiln_error **err);

/* The step cache as its index describes it: entries and the bytes their
 * diffs hold.  Reads every index entry: call it off any hot path. */
void bld_engine_cache_usage(bld_engine *e, uint64_t *steps, uint64_t *bytes);

/* Removes cached steps (their diff dirs and index entries) not used for
 * max_age_s seconds (0: every one), except those a running build holds (in
 * this or another process), then base-image snapshots nobody holds (same
 * age).  *removed (may be NULL) gets the number of step entries removed. */
int bld_engine_prune(bld_engine *e, uint64_t max_age_s, size_t *removed, kiln_error **err);

#endif
