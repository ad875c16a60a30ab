/* Build state on the plan side (files that include plan.h): base images,
 * per-stage results and the stage runner. */
#ifndef BLD_ENGINE_STAGE_H
#define BLD_ENGINE_STAGE_H

#include "engine_internal.h"
#include "plan.h"

#define ENG_MAX_BASES 64

/* A base image from the store, with what the planner needs of its config. */
typedef struct base_img {
    char *ref;
    char *platform; /* the platform it was resolved for ("os/arch[/variant]") */
    char digest[KILN_DIGEST_STRLEN + 1];
    char *manifest, *config;              /* JSON as stored */
    cJSON *parsed;                        /* config */
    const char **env, **onbuild, **shell; /* point into parsed */
    size_t n_env, n_onbuild, n_shell;
    const char *workdir, *user;
    char chain[KILN_DIGEST_STRLEN + 1]; /* snapshot chain, once unpacked */
    bool unpacked;
    eng_stack *stack; /* held once used by COPY --from or a mount */
    eng_tree *merged; /* its merged tree for COPY --from (lazy) */
} base_img;

/* The network of a RUN (ENG_NET_*): its --network, else the build's; the
 * default is the private network. */
static inline int eng_run_network(const bld_build_spec *spec, const bld_run *run)
{
    if (run->network == BLD_NET_NONE ||
        (run->network == BLD_NET_DEFAULT && spec->network == BLD_NETMODE_NONE))
        return ENG_NET_NONE;
    if (run->network == BLD_NET_HOST ||
        (run->network == BLD_NET_DEFAULT && spec->network == BLD_NETMODE_HOST))
        return ENG_NET_HOST;
    return ENG_NET_PRIVATE;
}

#define ENG_HOST_NET_REFUSED                                                                       \
    "RUN on the host network needs the network.host entitlement: start kiln-builder with "         \
    "--allow-insecure-entitlement network.host, or drop --network host"

/* A RUN --mount=type=ssh,required whose agent the build lacks (the id three
 * times). */
#define ENG_SSH_MISSING_FMT                                                                        \
    "RUN --mount=type=ssh,id=%s,required: the build has no SSH agent '%s' (kiln build --ssh "      \
    "%s[=SOCKET])"

void base_img_index(base_img *bi);
void base_img_dispose(base_img *bi);

/* A layer of a stage that may not be unpacked yet: an imported step
 * (engine_regcache.c) whose dir is made only when something reads the
 * stage's filesystem (ensure_fs in engine_stage.c). */
typedef struct eng_lazy_layer {
    bool pending;
    char key[KILN_DIGEST_STRLEN + 1];
    eng_cached_step cs;
} eng_lazy_layer;

/* The state of a stage: where its rootfs comes from, its new layers and its
 * image config.  A FROM <stage> starts from a copy of its parent's. */
typedef struct stage_res {
    bool done;
    char base_manifest[KILN_DIGEST_STRLEN + 1]; /* "" for scratch */
    char chain[KILN_DIGEST_STRLEN + 1];         /* base snapshot chain */
    eng_stack *stack;
    kiln_strv layers;    /* diff dirs of this build's steps, in order */
    kiln_strv layer_ids; /* their generation ids ("" unknown), one per layer */
    eng_hist *hist;      /* history entries of this build's instructions */
    size_t n_hist, cap_hist;
    cJSON *config; /* the config's "config" object */
    char *author;
    char key[KILN_DIGEST_STRLEN + 1]; /* cache key of the last step */
    bool cmd_set;                     /* CMD given in this stage */
    eng_tree *merged;                 /* merged rootfs for COPY --from (lazy) */
    const char **lowers;              /* stack dirs + layers, rebuilt as layers grow */
    size_t n_lowers;
    /* Deferred filesystem: the base not unpacked yet (lazy_base) and layers
     * imported lazily (lazy[i], one per layer); while fs_lazy, lowers is
     * not the stage's tree and nothing may read it before ensure_fs. */
    bool fs_lazy;
    base_img *lazy_base;
    eng_lazy_layer *lazy;
    size_t cap_lazy;
    eng_step_rec *recs; /* the steps (a parent stage's first), for --cache-to */
    size_t n_recs, cap_recs;
    int failed_line; /* the instruction (or FROM) that failed the stage */
    char failed_text[512];
} stage_res;

void stage_res_dispose(stage_res *r);

typedef struct eng_ctx {
    eng_build b;
    bld_plan *plan;
    base_img bases[ENG_MAX_BASES];
    size_t n_bases;
    stage_res *res;
    size_t n_stages;
    /* Stages run concurrently once their deps are done: lazy_mu guards what
     * they make on first use for each other (bases' snapshots, stacks and
     * merged trees; a finished stage's merged tree).  Everything else a
     * stage reads of another is immutable once that stage is done. */
    pthread_mutex_t lazy_mu;
} eng_ctx;

/* Runs stage (its deps done); may run concurrently with other stages.  On
 * failure res[stage].failed_* names the instruction. */
int eng_run_stage(eng_ctx *c, size_t stage, kiln_error **err);
/* The base image ref fetched by engine.c for platform (NULL when it was
 * not): one ref may be fetched for several platforms (FROM
 * --platform=$BUILDPLATFORM next to a stage for the target). */
base_img *eng_find_base(eng_ctx *c, const char *ref, const char *platform);

/* engine_config.c: applies a metadata instruction to r->config. */
int eng_apply_meta(stage_res *r, const bld_instr *in, kiln_error **err);
/* Hashes the instruction's expanded fields into h (for its cache key). */
void eng_hash_instr(kiln_sha256 *h, const bld_instr *in);

#endif
