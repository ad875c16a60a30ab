/* Internals of the build engine, shared by its translation units.
 *
 * engine.c walks the plan (plan.h) and describes each step with the eng_*
 * structs below, which keep the stage logic free of the sandbox's own types
 * (bld_sandbox.h: sbx_mount, sbx_network, sbx_run);
 * engine_run.c (sandbox, snapshots), engine_copy.c (COPY/ADD),
 * engine_cache.c (step keys and the step index) and engine_pusher.c (the RPC
 * boundary to kiln-pusher) execute those descriptions. */
#ifndef BLD_ENGINE_INTERNAL_H
#define BLD_ENGINE_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>

#include <cjson/cJSON.h>

#include "strv.h"
#include "units.h"
#include "bld_engine.h"
#include "digest.h"
#include "error.h"
#include "rpc.h"

struct bld_netns; /* bld_sandbox.h */

#define ENG_PATH_MAX 4096
#define ENG_NAME_MAX 255

struct bld_binfmt; /* bld_binfmt.h */

struct bld_engine {
    char *data_dir;
    kiln_rpc_client *pusher; /* borrowed */
    char *preflight_json;
    bool run_usable;
    bool allow_host_network; /* the network.host entitlement */
    /* binfmt_misc handlers (foreign RUNs under QEMU), scanned at start and
     * again when a foreign RUN finds none (engine_platform.c). */
    pthread_mutex_t binfmt_mu;
    struct bld_binfmt *binfmt;
};

/* ---- engine_platform.c: foreign platforms ---- */

/* Scans the binfmt_misc handlers (at engine start) and logs what emulation
 * offers. */
void eng_platform_init(bld_engine *e);
void eng_platform_free(bld_engine *e);
/* Whether a RUN for platform can run on a builder of build_platform: 0 when
 * it can (natively or emulated; *emulated_by, cap bytes, gets the handler's
 * name, "" when native), else KILN_EPRECOND with the message saying which
 * package or binfmt_misc entry is missing. */
int eng_platform_check(bld_engine *e, const char *build_platform, const char *platform,
                       char *emulated_by, size_t cap, kiln_error **err);
/* The entry of index_json (an OCI index or Docker manifest list) for
 * platform: an exact match (variant included) first, else any that
 * kiln_platform_match accepts.  0 with digest filled, KILN_ENOENT (and the
 * index's platforms in have, "linux/amd64, linux/arm64") when none. */
int eng_index_select(const char *index_json, const char *platform,
                     char digest[KILN_DIGEST_STRLEN + 1], char *have, size_t have_cap);
/* Whether an image config (JSON) is for platform; true when it names none.
 * *found (KILN_PLATFORM_STRMAX) gets what it names. */
bool eng_config_platform_ok(const char *config_json, const char *platform, char *found, size_t cap);

/* One build in progress.  Independent stages run on threads of their own:
 * what they share is guarded by mu (held, out counters), ev_mu (callbacks:
 * ev forwards to user_ev one call at a time) and, on the plan side,
 * eng_ctx.lazy_mu. */
typedef struct eng_build {
    bld_engine *e;
    const bld_build_spec *spec;
    const bld_build_events *ev; /* &ev_wrap */
    const bld_build_events *user_ev;
    bld_build_events ev_wrap;
    pthread_mutex_t ev_mu;
    bld_build_result *out;
    struct kiln_ignore *ignore; /* the context's .dockerignore, or NULL */
    pthread_mutex_t mu;
    int *held; /* shared flocks on the step dirs this build uses */
    size_t n_held, cap_held;
    atomic_bool stop;            /* spec->cancel, or a stage failed: the others stop */
    unsigned long long deadline; /* kiln_now_ms() when spec->build_timeout_ms runs out; 0 none */
    /* The build's private network, made by its first RUN that needs it and
     * joined by the others (engine_run.c); freed by eng_net_release. */
    pthread_mutex_t net_mu;
    struct bld_netns *net;
    struct eng_regcache *regcache;   /* imported cache records (engine_regcache.c), or NULL */
    struct eng_layer_ref *committed; /* the new layers of the last Commit, in order */
    size_t n_committed;
} eng_build;

/* ---- engine_run.c: snapshots and the sandbox ---- */

/* Unpacks the layers of a base image (manifest and config JSON as stored)
 * into snapshots and writes the top chain id ("" for no layers). */
int eng_base_unpack(eng_build *b, const char *manifest_json, const char *config_json,
                    char chain_out[KILN_DIGEST_STRLEN + 1], kiln_error **err);

typedef struct eng_stack eng_stack;
/* Acquires the snapshot chain (held until eng_stack_release). */
int eng_stack_acquire(eng_stack **out, eng_build *b, const char *chain, kiln_error **err);
void eng_stack_release(eng_stack *s);
size_t eng_stack_len(const eng_stack *s);
const char *const *eng_stack_dirs(const eng_stack *s);

/* A merged tree of layer dirs (overlay form, bottom first) for COPY --from,
 * in a scratch dir under $DATA/sandbox locked against stale cleanup by other
 * builders; removed by eng_tree_free (safe on NULL). */
typedef struct eng_tree eng_tree;
int eng_tree_merge(eng_tree **out, eng_build *b, const char *const *dirs, size_t n,
                   kiln_error **err);
const char *eng_tree_root(const eng_tree *t);
void eng_tree_free(eng_tree *t);

typedef enum eng_mount_type {
    ENG_MNT_BIND,
    ENG_MNT_CACHE,
    ENG_MNT_TMPFS,
    ENG_MNT_SECRET,
    ENG_MNT_SSH, /* id: the agent; eng_run() makes the socket */
} eng_mount_type;

typedef struct eng_mount {
    eng_mount_type type;
    const char *target;
    const char *source;               /* bind from the context; secret file */
    const char *source_path;          /* bind: inside source */
    const char *const *source_layers; /* bind from a stage */
    size_t n_source_layers;
    bool writable;
    const char *id;
    int sharing; /* 0 shared, 1 private, 2 locked */
    bool readonly;
    long uid, gid, mode; /* -1 unset */
    uint64_t size;
} eng_mount;

enum { ENG_NET_PRIVATE, ENG_NET_NONE, ENG_NET_HOST };

typedef struct eng_run_desc {
    const char *const *argv; /* NULL-terminated */
    const char *const *env;  /* NULL-terminated */
    const char *cwd;
    const char *user;
    int net; /* ENG_NET_* */
    const eng_mount *mounts;
    size_t n_mounts;
    const char *const *lowers;
    size_t n_lowers;
    const char *upper;
    size_t stage, step; /* for the output callback */
} eng_run_desc;

/* Prunes base-image snapshots nobody holds (bld_snapshot_prune). */
int eng_snapshot_prune(const char *data_dir, uint64_t max_age_s, kiln_error **err);

/* Sandbox cleanup and preflight, at engine start. */
char *eng_preflight(const char *data_dir, bool *usable);

/* Runs one RUN; *exit_code gets the command's status (-1 when killed). */
/* Ends the build's private network, if a RUN made one (pasta is killed); at
 * the end of the build, once no stage runs any more. */
void eng_net_release(eng_build *b);

int eng_run(eng_build *b, const eng_run_desc *d, int *exit_code, kiln_error **err);

/* engine_ssh.c: the agent sockets of one RUN's ssh mounts (bld_ssh.h), in a
 * 0700 dir of their own under data_dir/sandbox, removed by eng_ssh_close(). */
#define ENG_SSH_MAX        16
#define ENG_SSH_MOUNTS_MAX 66 /* a RUN's mounts: its --mount options and heredoc files */
typedef struct eng_ssh_socks {
    char *dir;
    int dir_fd;
    bld_ssh_listener *l[ENG_SSH_MAX];
    char *paths[ENG_SSH_MOUNTS_MAX]; /* by mount index, NULL for other mounts */
    size_t n;
} eng_ssh_socks;
/* Serves a socket for each ENG_MNT_SSH mount of m[0..n-1] (at most
 * ENG_SSH_MAX); out->paths[i] is mount i's.  out is usable by
 * eng_ssh_close() whatever the result. */
int eng_ssh_open(eng_ssh_socks *out, eng_build *b, const eng_mount *m, size_t n, kiln_error **err);
void eng_ssh_close(eng_ssh_socks *s);

/* ---- engine_cache.c: step keys, step dirs, the step index ---- */

/* A step directory being produced: <data>/snapshots/steps/tmp-XXXXXX/diff. */
typedef struct eng_step_tmp {
    int lock;                /* flock on the tmp dir while the step runs (fd + 1; 0 none) */
    char dir[ENG_PATH_MAX];  /* tmp-XXXXXX */
    char diff[ENG_PATH_MAX]; /* its diff/ */
} eng_step_tmp;

/* A step dir's generation: 32 hex digits drawn when the step was produced,
 * kept in steps/<key>/id.  The same key produced again (after a prune) gets
 * a new one, so it identifies the diff's content where its path does not. */
#define ENG_STEP_ID_LEN 32

/* A layer blob as a registry (and the store) knows it. */
typedef struct eng_layer_ref {
    char digest[KILN_DIGEST_STRLEN + 1];
    char diff_id[KILN_DIGEST_STRLEN + 1];
    char media_type[128];
    uint64_t size;
} eng_layer_ref;

typedef struct eng_cached_step {
    bool layer;      /* the step has a (non-empty) diff */
    int64_t created; /* unix seconds when the step was first produced */
    uint64_t size;   /* bytes in the diff */
    char diff[ENG_PATH_MAX];
    char id[ENG_STEP_ID_LEN + 1]; /* generation of the diff; "" for a step dir without one */
    /* lazy: a step imported from a cache (engine_regcache.c) whose layer is
     * not unpacked: no step dir; diff and id name it to Commit by a virtual
     * key the pusher's pack cache binds to blob (eng_regcache_virtual). */
    bool lazy;
    eng_layer_ref blob;
} eng_cached_step;

/* Looks key up in the index; 1 when found (and its diff, if any, exists, or
 * it is a lazy entry: out->lazy), 0 when not. */
int eng_cache_lookup(eng_build *b, const char *key, eng_cached_step *out);
/* Records a step without layer (metadata, or a step that changed nothing);
 * fills out (layer false, created now). */
int eng_cache_record_empty(eng_build *b, const char *key, eng_cached_step *out, kiln_error **err);
int eng_step_begin(eng_build *b, eng_step_tmp *t, kiln_error **err);
/* Moves the finished step into place as steps/<key> and records it.  The
 * step dir gets a new generation id, and the data dir's filesystem is synced
 * before the index entry is written: the entry is the commit point, and it
 * never names a diff that a power loss could leave incomplete.  An
 * empty diff is discarded (out->layer false).  When steps/<key> exists, the
 * stored one is used, except under --no-cache: then this run's diff is kept
 * under a key of its own. */
int eng_step_commit(eng_build *b, eng_step_tmp *t, const char *key, eng_cached_step *out,
                    kiln_error **err);
void eng_step_abort(eng_step_tmp *t);
/* Records an imported step whose layer is not unpacked (out->lazy): a later
 * lookup finds it lazy until eng_step_commit makes its dir. */
int eng_cache_record_lazy(eng_build *b, const char *key, const eng_layer_ref *l, int64_t created,
                          eng_cached_step *out, kiln_error **err);
/* Rewrites key's index entry from cs (an imported step keeps the time it was
 * first produced, so the image's history and digest are those of its
 * exporter). */
int eng_cache_rewrite(eng_build *b, const char *key, const eng_cached_step *cs, kiln_error **err);
/* Drops the build's hold on the step dirs it used. */
void eng_cache_release(eng_build *b);
/* Removes leftovers of interrupted steps. */
void eng_cache_cleanup(const char *data_dir);

/* ---- engine_copy.c: COPY / ADD ---- */

typedef struct eng_copy_src {
    const char *path;    /* pattern relative to the source root; NULL for heredoc and URL */
    const char *content; /* heredoc body */
    const char *name;    /* heredoc file name */
    const char *url;     /* ADD: http(s) URL, downloaded into scratch */
} eng_copy_src;

typedef struct eng_copy_desc {
    const char *what; /* "COPY" / "ADD" */
    const eng_copy_src *srcs;
    size_t n_srcs;
    const char *dest; /* absolute inside the image */
    bool dest_is_dir; /* ended with '/' */
    const char *src_root;
    const struct kiln_ignore *ignore;  /* NULL unless the context */
    const struct kiln_ignore *exclude; /* --exclude patterns, or NULL */
    long uid, gid;                     /* -1: root */
    long mode;                         /* -1: keep */
    const char *mode_sym;              /* symbolic --chmod (bld_chmod_apply), or NULL */
    const char *const *lowers;
    size_t n_lowers;
    const char *upper;
    bool extract;              /* ADD: local tar archives (plain, gzip, bzip2, xz, lzma, zstd) */
    bool extract_urls;         /* ADD --unpack=true: downloaded archives are extracted too */
    bool parents;              /* --parents: keep each source's path below the root */
    const char *checksum;      /* ADD --checksum "algo:hex" of the (single) URL source, or NULL */
    const atomic_bool *cancel; /* stops a download; may be NULL */
    /* ADD: dir for extraction and downloads (on the upper's filesystem).
     * URL sources without checksum are downloaded while hashing (their
     * content is part of the key), so hashing needs it too; exec reuses
     * those downloads. */
    const char *scratch;
} eng_copy_desc;

/* engine_fs.c: the image's merged view.  Paths inside the image are
 * "cleaned" (kiln_path_clean): relative to its root, no "." or ".." ("" is
 * the root). */
/* 1 with *st and host (its host path) when rel exists in upper (may be NULL)
 * over lowers, 0 when not (absent, whited out, hidden by an opaque dir). */
int eng_image_lookup(const char *const *lowers, size_t n, const char *upper, const char *rel,
                     struct stat *st, char host[ENG_PATH_MAX]);
/* Resolves symlinks in the parents of path within the image root (the last
 * component is not followed); out is cleaned. */
int eng_resolve_dest(char out[ENG_PATH_MAX], const eng_copy_desc *d, const char *path,
                     kiln_error **err);
/* Makes every directory of rel exist in d->upper as a real directory: from
 * the lowers' metadata (those are added to fix for their times to be
 * restored), else 0755 owned by uid/gid (-1: root). */
int eng_ensure_dirs(const eng_copy_desc *d, const char *rel, long uid, long gid, kiln_strv *fix,
                    kiln_error **err);

/* Hashes the sources (names, types, modes, contents) into h.  Fails like the
 * copy would for missing or escaping sources. */
int eng_copy_hash(const eng_copy_desc *d, kiln_sha256 *h, kiln_error **err);
/* Whether eng_copy_hash needs d->scratch (URL sources without --checksum). */
bool eng_copy_fetches_early(const eng_copy_desc *d);
/* Copies into d->upper. */
int eng_copy_exec(const eng_copy_desc *d, kiln_error **err);
/* WORKDIR: creates path (absolute inside the image) in upper when the image
 * does not have it; *created tells whether it did. */
int eng_workdir_mkdir(const char *path, const char *const *lowers, size_t n_lowers,
                      const char *upper, bool *created, kiln_error **err);
/* Resolves a --chown user and group (names or ids) against the image's
 * /etc/passwd and /etc/group in lowers. */
int eng_resolve_owner(long *uid, long *gid, const char *user, const char *group,
                      const char *const *lowers, size_t n_lowers, kiln_error **err);
/* Reads a file from the merged view of lowers (path absolute inside the image). */
char *eng_read_image_file(const char *const *lowers, size_t n_lowers, const char *path);

/* ---- engine_fetch.c: ADD <url> ---- */

/* Downloads url (http or https) into the new file path: mode 0600, mtime the
 * Last-Modified time (the epoch without one).  With checksum ("sha256:hex",
 * sha384, sha512) a different content fails with KILN_EINVAL naming both
 * digests.  digest_out (may be NULL) gets the content's sha256.  HTTP
 * status >= 400: KILN_EREMOTE; path is removed on failure.  Messages show the
 * URL redacted. */
int eng_fetch(char digest_out[KILN_DIGEST_STRLEN + 1], const char *url, const char *path,
              const char *checksum, const atomic_bool *cancel, kiln_error **err);
/* The file name ADD gives a URL's content: the last component of its path,
 * percent-decoded ("index" when there is none). */
void eng_url_filename(char out[ENG_NAME_MAX + 1], const char *url);
/* Copies text into out (truncated to cap) with the user info of every URL
 * ("scheme://user:pass@") replaced by "xxxxx". */
void eng_redact(char *out, size_t cap, const char *text);
/* The same into a new string (caller frees); NULL when out of memory. */
char *eng_redact_dup(const char *text);

/* ---- engine_pusher.c: kiln-pusher RPCs ---- */

/* Manifest and config of an image in the store; KILN_ENOENT when unknown. */
int eng_pusher_inspect(eng_build *b, const char *ref, char digest[KILN_DIGEST_STRLEN + 1],
                       char **manifest_json, char **config_json, kiln_error **err);
/* The same for an image or an index: *config_json NULL for an index. */
int eng_pusher_inspect_any(eng_build *b, const char *ref, char digest[KILN_DIGEST_STRLEN + 1],
                           char **manifest_json, char **config_json, kiln_error **err);
/* Pulls ref for platform; tag_index: tag the index it came from (PullRequest.tag_index).
 * digest (may be NULL) gets the pulled manifest's digest. */
int eng_pusher_pull(eng_build *b, const char *ref, const char *platform, bool tag_index,
                    char digest[KILN_DIGEST_STRLEN + 1], kiln_error **err);

typedef struct eng_hist {
    char *created_by;
    bool empty_layer;
    int64_t created; /* unix seconds; 0 = the image's */
} eng_hist;

typedef struct eng_commit_desc {
    const char *base_manifest; /* "" scratch */
    const kiln_strv *layers;
    const kiln_strv *layer_ids; /* generation of each layer ("" unknown), as many as layers */
    const cJSON *config;        /* the "config" object */
    const char *author;
    const eng_hist *hist;
    size_t n_hist;
    const char *platform;
    bool untagged; /* not the build's image (a stage committed for --cache-to mode=max) */
} eng_commit_desc;

int eng_pusher_commit(eng_build *b, const eng_commit_desc *c, kiln_error **err);
int eng_pusher_push(eng_build *b, const char *tag, kiln_error **err);

/* ---- engine_regcache.c: the step cache shared through a registry ---- */

/* One step's cache record: its key (the local step cache's key), the time
 * it was first produced and, when it has one, its layer. */
typedef struct eng_cache_rec {
    char key[KILN_DIGEST_STRLEN + 1];
    int64_t created;
    bool layer;
    eng_layer_ref l;
    size_t from; /* index into spec->cache_from (imported records) */
} eng_cache_rec;

/* A step of a stage as the stage recorded it, for export: layer is the index
 * of its diff in the stage's layers (-1: none). */
typedef struct eng_step_rec {
    char key[KILN_DIGEST_STRLEN + 1];
    int64_t created;
    long layer;
} eng_step_rec;

/* Imports the records of spec->cache_from (before the stages run).  A ref
 * that cannot be read (missing, refused, not a Kiln cache) is a warning
 * (eng_note); only cancellation fails. */
int eng_regcache_import(eng_build *b, kiln_error **err);
/* On a local miss: when an imported record has key, has the pusher fetch
 * its blob and records the step lazily (out->lazy; eng_cache_record_lazy):
 * nothing is unpacked until a later step needs the filesystem
 * (eng_regcache_make).  1 then; 0 when no record has key, or when using it
 * failed (a warning: the step then runs).  Negative only when canceled. */
int eng_regcache_defer(eng_build *b, const char *key, eng_cached_step *out, kiln_error **err);
/* A lazy step found in the local index: binds its virtual key again (the
 * pusher checks it still has the blob).  0, or negative (a miss). */
int eng_regcache_rebind(eng_build *b, const eng_cached_step *cs, kiln_error **err);
/* Makes the step dir of the lazy step cs (key): unpacks its blob, commits the
 * dir as a local hit would find it (keeping the record's time) and binds it
 * to the blob; *cs becomes that step. */
int eng_regcache_make(eng_build *b, const char *key, eng_cached_step *cs, kiln_error **err);
/* Names a lazy step's layer to Commit: diff = $DATA/snapshots/lazy-layer
 * (an empty dir inside the pusher's diff root that it never packs: it
 * requires the bound blob for it), id = the first 32 hex digits of its
 * blob's digest. */
#define ENG_LAZY_LAYER_DIR "lazy-layer"
void eng_regcache_virtual(eng_build *b, eng_cached_step *cs);
/* Exports recs to spec->cache_to through the pusher. */
int eng_regcache_export(eng_build *b, const eng_cache_rec *recs, size_t n, kiln_error **err);
void eng_regcache_free(eng_build *b);

/* engine_pusher.c: the cache RPCs.  cache_records fetches ref's cache config
 * blob into the store (its digest in cfg); cache_blob fetches l's blob of
 * ref; cache_bind enters the step dir (diff, id) as l in the pack cache. */
int eng_pusher_cache_records(eng_build *b, const bld_cache_ref *ref,
                             char cfg[KILN_DIGEST_STRLEN + 1], kiln_error **err);
int eng_pusher_cache_blob(eng_build *b, const bld_cache_ref *ref, const eng_layer_ref *l,
                          kiln_error **err);
int eng_pusher_cache_bind(eng_build *b, const char *diff, const char *id, const eng_layer_ref *l,
                          kiln_error **err);
int eng_pusher_cache_export(eng_build *b, const eng_cache_rec *recs, size_t n, kiln_error **err);

/* Helpers (engine_util.c). */
/* rm -rf (no symlink is followed). */
void eng_rmrf(const char *path);
/* Counts a finished step (thread-safe). */
void eng_count_step(eng_build *b, bool cached);
void eng_note(eng_build *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
bool eng_canceled(const eng_build *b);
/* True once the build's deadline (spec->build_timeout_ms) has passed. */
bool eng_past_deadline(const eng_build *b);

#endif
