/* The build engine's driver: plans the Dockerfile, makes the base images
 * available (store, else a pusher Pull), runs the stages the target needs in
 * dependency order, and commits the target stage through the pusher.
 *
 * This file owns the plan (plan.h); each instruction is turned into an eng_*
 * description executed by engine_run.c / engine_copy.c; metadata
 * instructions change the stage's image config (engine_config.c). */
#include "engine_internal.h"
#include "bld_sandbox.h"
#include "engine_stage.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cleanup.h"
#include "fs.h"
#include "units.h"
#include "ignore.h"
#include "log.h"
#include "plan.h"
#include "platform.h"

/* ---- events: stages on several threads, the caller's callbacks one at a time ---- */

#define EV_FORWARD(b, name, ...)                                                                   \
    do {                                                                                           \
        eng_build *b_ = (b);                                                                       \
        if (b_->user_ev == NULL || b_->user_ev->name == NULL)                                      \
            return;                                                                                \
        pthread_mutex_lock(&b_->ev_mu);                                                            \
        b_->user_ev->name(b_->user_ev->ud, __VA_ARGS__);                                           \
        pthread_mutex_unlock(&b_->ev_mu);                                                          \
    } while (0)

static void ev_stage_started(void *ud, size_t stage, const char *name, const char *base)
{
    EV_FORWARD(ud, stage_started, stage, name, base);
}

static void ev_step_started(void *ud, size_t stage, size_t step, const char *text, int line)
{
    EV_FORWARD(ud, step_started, stage, step, text, line);
}

static void ev_output(void *ud, size_t stage, size_t step, int stream, const char *line, size_t len)
{
    EV_FORWARD(ud, output, stage, step, stream, line, len);
}

static void ev_step_done(void *ud, size_t stage, size_t step, int cached, const char *key,
                         uint64_t layer_bytes, uint64_t duration_ms)
{
    EV_FORWARD(ud, step_done, stage, step, cached, key, layer_bytes, duration_ms);
}

static void ev_stage_done(void *ud, size_t stage)
{
    EV_FORWARD(ud, stage_done, stage);
}

static void ev_note(void *ud, const char *what)
{
    EV_FORWARD(ud, note, what);
}

/* ---- engine ---- */

int bld_engine_new(bld_engine **out, const char *data_dir, kiln_rpc_client *pusher,
                   kiln_error **err)
{
    bld_engine *e = calloc(1, sizeof(*e));
    if (e == NULL || (e->data_dir = strdup(data_dir)) == NULL) {
        free(e);
        return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
    }
    e->pusher = pusher;
    char p[ENG_PATH_MAX];
    snprintf(p, sizeof(p), "%s/snapshots/steps", data_dir);
    if (kiln_mkdir_p(p, 0700, err) < 0) {
        bld_engine_free(e);
        return kiln_error_wrap(err, "engine");
    }
    eng_cache_cleanup(data_dir);
    kiln_error *serr = NULL;
    if (bld_sandbox_cleanup_stale(data_dir, &serr) < 0) {
        kiln_warn("build", "sandbox cleanup: %s", serr->msg);
        kiln_error_free(&serr);
    }
    e->preflight_json = eng_preflight(data_dir, &e->run_usable);
    eng_platform_init(e);
    *out = e;
    return 0;
}

void bld_engine_free(bld_engine *e)
{
    if (e == NULL)
        return;
    eng_platform_free(e);
    free(e->data_dir);
    free(e->preflight_json);
    free(e);
}

void bld_engine_allow_host_network(bld_engine *e, bool allow)
{
    e->allow_host_network = allow;
}

bool bld_engine_host_network_allowed(const bld_engine *e)
{
    return e->allow_host_network;
}

const char *bld_engine_preflight_json(bld_engine *e)
{
    return e->preflight_json ? e->preflight_json : "{}";
}

/* ---- base images ---- */

base_img *eng_find_base(eng_ctx *c, const char *ref, const char *platform)
{
    for (size_t i = 0; i < c->n_bases; i++)
        if (strcmp(c->bases[i].ref, ref) == 0 &&
            strcmp(c->bases[i].platform, platform ? platform : "") == 0)
            return &c->bases[i];
    return NULL;
}

/* The store's image of ref for platform: the tag's image when it is for that
 * platform (or says none), or the platform's entry of the index the tag
 * names.  KILN_ENOENT when the store has no such image (pull it); found then
 * says what the store had instead ("" when nothing). */
static int store_base(eng_ctx *c, const char *ref, const char *platform, base_img *bi, char *found,
                      size_t cap, kiln_error **err)
{
    found[0] = '\0';
    int rc = eng_pusher_inspect_any(&c->b, ref, bi->digest, &bi->manifest, &bi->config, err);
    if (rc < 0)
        return rc;
    if (bi->config == NULL) { /* an index: its entry for the platform, if present */
        char child[KILN_DIGEST_STRLEN + 1], have[256];
        rc = eng_index_select(bi->manifest, platform, child, have, sizeof(have));
        free(bi->manifest);
        bi->manifest = NULL;
        if (rc < 0) {
            snprintf(found, cap, "an index of %s", have[0] ? have : "no platform");
            return KILN_ENOENT;
        }
        rc = eng_pusher_inspect_any(&c->b, child, bi->digest, &bi->manifest, &bi->config, err);
        if (rc == KILN_ENOENT) { /* the index came without this platform's image */
            kiln_error_free(err);
            return KILN_ENOENT;
        }
        if (rc == 0 && bi->config == NULL)
            rc = kiln_error_set(err, KILN_ENOTSUP, 0, "%s: nested index %s", ref, child);
        return rc;
    }
    if (platform && !eng_config_platform_ok(bi->config, platform, found, cap)) {
        free(bi->manifest);
        free(bi->config);
        bi->manifest = bi->config = NULL;
        return KILN_ENOENT;
    }
    return 0;
}

static int fetch_base(eng_ctx *c, const char *ref, const char *platform, kiln_error **err)
{
    if (eng_find_base(c, ref, platform))
        return 0;
    if (c->n_bases == ENG_MAX_BASES)
        return kiln_error_set(err, KILN_EINVAL, 0, "too many base images");
    base_img *bi = &c->bases[c->n_bases];
    memset(bi, 0, sizeof(*bi));
    kiln_error *ierr = NULL;
    char found[300] = "";
    int rc = c->b.spec->pull ? KILN_ENOENT
                             : store_base(c, ref, platform, bi, found, sizeof(found), &ierr);
    if (rc == KILN_ENOENT) {
        kiln_error_free(&ierr);
        /* Another platform than the builder's: the tag is left on the index,
         * where each platform's build finds its own manifest. */
        const char *host = kiln_platform_host_string();
        bool foreign = platform && strcmp(platform, host) != 0;
        char digest[KILN_DIGEST_STRLEN + 1] = "";
        if (foreign)
            eng_note(&c->b, "pulling %s for %s", ref, platform);
        else
            eng_note(&c->b, "pulling %s", ref);
        rc = eng_pusher_pull(&c->b, ref, platform, foreign, digest, err);
        if (rc < 0 && found[0])
            return kiln_error_wrap(err, "base image %s: the store has it for %s, not %s", ref,
                                   found, platform);
        if (rc < 0)
            return rc;
        rc = eng_pusher_inspect(&c->b, digest[0] ? digest : ref, bi->digest, &bi->manifest,
                                &bi->config, err);
        char got[KILN_PLATFORM_STRMAX + 8];
        if (rc == 0 && platform && !eng_config_platform_ok(bi->config, platform, got, sizeof(got)))
            eng_note(&c->b,
                     "warning: base image %s is for %s, not %s (it names no index to "
                     "choose from)",
                     ref, got, platform);
    } else if (rc < 0) {
        *err = kiln_error_steal(&ierr);
    }
    if (rc < 0)
        return kiln_error_wrap(err, "base image %s", ref);
    bi->ref = strdup(ref);
    bi->platform = strdup(platform ? platform : "");
    bi->parsed = cJSON_Parse(bi->config);
    if (bi->ref == NULL || bi->platform == NULL || bi->parsed == NULL) {
        base_img_dispose(bi);
        return kiln_error_set(err, KILN_EINVAL, 0, "base image %s: unreadable config", ref);
    }
    base_img_index(bi);
    c->n_bases++;
    return 0;
}

/* Images an instruction reads from (COPY --from=<image>, RUN --mount from=<image>). */
static int fetch_refs(eng_ctx *c, const bld_stage *st, const bld_instr *in, kiln_error **err)
{
    int rc = 0;
    if ((in->kind == BLD_INSTR_COPY || in->kind == BLD_INSTR_ADD) &&
        in->u.copy.from_kind == BLD_REF_IMAGE) {
        /* As Docker: a --from that names no earlier stage is an image. */
        rc = fetch_base(c, in->u.copy.from, st->platform, err);
        if (rc < 0)
            return kiln_error_wrap(err,
                                   "--from=%s: no build stage of that name before this "
                                   "line, and no such image",
                                   in->u.copy.from);
    }
    for (size_t i = 0; rc == 0 && in->kind == BLD_INSTR_RUN && i < in->u.run.n_mounts; i++)
        if (in->u.run.mounts[i].from_kind == BLD_REF_IMAGE)
            rc = fetch_base(c, in->u.run.mounts[i].from, st->platform, err);
    return rc;
}

static int resolver(bld_base_info *out, void *ctx, const char *ref, const char *platform)
{
    base_img *bi = eng_find_base(ctx, ref, platform);
    if (bi == NULL)
        return 1;
    out->env = bi->env;
    out->n_env = bi->n_env;
    out->onbuild = bi->onbuild;
    out->n_onbuild = bi->n_onbuild;
    out->workdir = bi->workdir;
    out->user = bi->user;
    out->shell = bi->shell;
    out->n_shell = bi->n_shell;
    return 0;
}

static int load_ignore(eng_ctx *c, kiln_error **err)
{
    if (c->b.spec->context_dir == NULL)
        return 0;
    if (c->b.spec->dockerignore) {
        const char *t = c->b.spec->dockerignore;
        int rc = kiln_ignore_parse(&c->b.ignore, t, strlen(t), err);
        return rc < 0 ? kiln_error_wrap(err, "the Dockerfile's .dockerignore") : 0;
    }
    char p[ENG_PATH_MAX];
    snprintf(p, sizeof(p), "%s/.dockerignore", c->b.spec->context_dir);
    _cleanup_fclose_ FILE *f = fopen(p, "re");
    if (f == NULL)
        return 0;
    char *text = NULL;
    size_t len = 0;
    _cleanup_fclose_ FILE *m = open_memstream(&text, &len);
    if (m == NULL)
        return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
    char buf[8192];
    size_t n;
    while ((n = fread(buf, 1, sizeof(buf), f)) > 0 && len < (1 << 20))
        fwrite(buf, 1, n, m);
    fclose(m);
    m = NULL;
    int rc = kiln_ignore_parse(&c->b.ignore, text ? text : "", len, err);
    free(text);
    return rc < 0 ? kiln_error_wrap(err, ".dockerignore") : 0;
}

static int plan(eng_ctx *c, bld_plan **out, bool with_resolver, kiln_error **err)
{
    const bld_build_spec *s = c->b.spec;
    bld_plan_opts po = {
        .target = s->target,
        .build_args = s->build_args,
        .n_build_args = s->n_build_args,
        .platform = s->platform,
        .named_images = s->named_images,
        .n_named_images = s->n_named_images,
    };
    if (with_resolver) {
        po.resolve_base = resolver;
        po.resolve_ctx = c;
    }
    return bld_plan_parse(out, s->dockerfile, strlen(s->dockerfile), s->filename, &po, err);
}

/* A Dockerfile error ("file:line:col: ...") also names its line in out. */
static void note_parse_error(eng_ctx *c, const kiln_error *e)
{
    const bld_build_spec *s = c->b.spec;
    const char *fn = s->filename ? s->filename : "Dockerfile";
    size_t fl = strlen(fn);
    if (e == NULL || e->msg == NULL || strncmp(e->msg, fn, fl) != 0 || e->msg[fl] != ':')
        return;
    long line = strtol(e->msg + fl + 1, NULL, 10);
    if (line <= 0 || line > 1000000)
        return;
    const char *p = s->dockerfile;
    for (long i = 1; i < line && p; i++) {
        p = strchr(p, '\n');
        if (p)
            p++;
    }
    if (p == NULL)
        return;
    c->b.out->failed_line = (int)line;
    size_t len = strcspn(p, "\n");
    char text[sizeof(c->b.out->failed_text)];
    snprintf(text, sizeof(text), "%.*s", (int)len, p);
    eng_redact(c->b.out->failed_text, sizeof(c->b.out->failed_text), text);
}

static void ctx_dispose(eng_ctx *c)
{
    for (size_t i = 0; i < c->n_stages; i++)
        stage_res_dispose(&c->res[i]);
    free(c->res);
    for (size_t i = 0; i < c->n_bases; i++)
        base_img_dispose(&c->bases[i]);
    kiln_ignore_free(c->b.ignore);
    eng_net_release(&c->b);
    eng_cache_release(&c->b);
    eng_regcache_free(&c->b);
    bld_plan_free(c->plan);
}

/* ---- --cache-to ---- */

static bool has_key(const eng_cache_rec *recs, size_t n, const char *key)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(recs[i].key, key) == 0)
            return true;
    return false;
}

/* Adds the records of r not in recs yet; its layers are those of the last
 * Commit (c->b.committed, in r->layers' order). */
static int add_stage_recs(eng_ctx *c, const stage_res *r, eng_cache_rec *recs, size_t *n,
                          kiln_error **err)
{
    for (size_t i = 0; i < r->n_recs; i++) {
        const eng_step_rec *s = &r->recs[i];
        if (has_key(recs, *n, s->key))
            continue;
        eng_cache_rec *o = &recs[(*n)++];
        memset(o, 0, sizeof(*o));
        memcpy(o->key, s->key, sizeof(o->key));
        o->created = s->created;
        if (s->layer < 0)
            continue;
        if ((size_t)s->layer >= c->b.n_committed)
            return kiln_error_set(err, KILN_EINTERNAL, 0, "cache export: layer %ld not committed",
                                  s->layer);
        o->layer = true;
        o->l = c->b.committed[s->layer];
    }
    return 0;
}

/* Whether stage i has steps the records lack. */
static bool stage_adds(const stage_res *r, const eng_cache_rec *recs, size_t n)
{
    for (size_t i = 0; i < r->n_recs; i++)
        if (!has_key(recs, n, r->recs[i].key))
            return true;
    return false;
}

/* mode=min: the target's records (its parent stages' included); mode=max:
 * those of every stage that ran, each other stage committed untagged first
 * for its layers' blobs. */
static int export_cache(eng_ctx *c, kiln_error **err)
{
    size_t cap = 0;
    for (size_t i = 0; i < c->n_stages; i++)
        cap += c->res[i].n_recs;
    _cleanup_free_ eng_cache_rec *recs = calloc(cap + 1, sizeof(*recs));
    size_t n = 0;
    if (recs == NULL)
        return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
    int rc = add_stage_recs(c, &c->res[c->plan->target], recs, &n, err);
    for (size_t i = 0; rc == 0 && c->b.spec->cache_to_max && i < c->n_stages; i++) {
        stage_res *r = &c->res[i];
        if (!r->done || !stage_adds(r, recs, n))
            continue;
        eng_commit_desc cd = {
            .base_manifest = r->base_manifest,
            .layers = &r->layers,
            .layer_ids = &r->layer_ids,
            .config = r->config,
            .author = r->author,
            .hist = r->hist,
            .n_hist = r->n_hist,
            .platform = c->plan->stages[i].platform,
            .untagged = true,
        };
        rc = eng_pusher_commit(&c->b, &cd, err);
        if (rc == 0)
            rc = add_stage_recs(c, r, recs, &n, err);
    }
    return rc < 0 ? rc : eng_regcache_export(&c->b, recs, n, err);
}

/* --label K=V: on the committed image, after the Dockerfile's LABELs. */
static int apply_labels(stage_res *r, const bld_build_spec *s, kiln_error **err)
{
    if (s->n_labels == 0)
        return 0;
    cJSON *l = cJSON_GetObjectItemCaseSensitive(r->config, "Labels");
    if (!cJSON_IsObject(l)) {
        cJSON_DeleteItemFromObjectCaseSensitive(r->config, "Labels");
        l = cJSON_AddObjectToObject(r->config, "Labels");
    }
    for (size_t i = 0; l && i < s->n_labels; i++) {
        const char *eq = strchr(s->labels[i], '=');
        if (eq == NULL || eq == s->labels[i])
            return kiln_error_set(err, KILN_EINVAL, 0, "label %s: want KEY=VALUE", s->labels[i]);
        char *k = strndup(s->labels[i], (size_t)(eq - s->labels[i]));
        cJSON *v = cJSON_CreateString(eq + 1);
        if (k == NULL || v == NULL) {
            free(k);
            cJSON_Delete(v);
            return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
        }
        cJSON_DeleteItemFromObjectCaseSensitive(l, k);
        cJSON_AddItemToObject(l, k, v);
        free(k);
    }
    return l ? 0 : kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
}

/* ---- the stage scheduler ---- */

#define ENG_STAGE_STACK ((size_t)8 << 20)

enum { ST_WAITING, ST_RUNNING, ST_DONE, ST_FAILED };

typedef struct sched {
    eng_ctx *c;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int *state;        /* per stage */
    pthread_t *thread; /* per stage, valid while joinable[] */
    bool *joinable;
    size_t running;
    int rc; /* of the first stage that failed */
    kiln_error *err;
    size_t failed_stage;
} sched;

typedef struct stage_job {
    sched *s;
    size_t stage;
} stage_job;

static void *stage_main(void *arg)
{
    stage_job *j = arg;
    sched *s = j->s;
    kiln_error *err = NULL;
    int rc = eng_run_stage(s->c, j->stage, &err);
    pthread_mutex_lock(&s->mu);
    s->state[j->stage] = rc < 0 ? ST_FAILED : ST_DONE;
    /* The first failure is the cause; stages stopped because of it fail
     * CANCELLED after it and are not reported. */
    if (rc < 0 && s->err == NULL) {
        s->rc = rc;
        s->err = err;
        err = NULL;
        s->failed_stage = j->stage;
    }
    if (rc < 0) /* after recording: the others' CANCELLED comes second */
        atomic_store(&s->c->b.stop, true);
    s->running--;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    kiln_error_free(&err);
    free(j);
    return NULL;
}

static bool deps_done(const sched *s, const bld_stage *st)
{
    for (size_t k = 0; k < st->n_deps; k++)
        if (s->state[st->deps[k]] != ST_DONE)
            return false;
    return true;
}

static size_t max_parallel(const bld_build_spec *spec)
{
    if (spec->max_parallel_stages > 0)
        return spec->max_parallel_stages;
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 2 ? 2 : n > 8 ? 8 : (size_t)n;
}

/* Starts every stage whose deps are done, up to the limit.  Called locked. */
static int start_ready(sched *s, size_t limit, kiln_error **err)
{
    const bld_plan *p = s->c->plan;
    for (size_t i = 0; i < p->n_stages && s->running < limit; i++) {
        const bld_stage *st = &p->stages[i];
        if (!st->runs || s->state[i] != ST_WAITING || !deps_done(s, st))
            continue;
        stage_job *j = malloc(sizeof(*j));
        if (j == NULL)
            return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
        *j = (stage_job){s, i};
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setstacksize(&attr, ENG_STAGE_STACK);
        int e = pthread_create(&s->thread[i], &attr, stage_main, j);
        pthread_attr_destroy(&attr);
        if (e != 0) {
            free(j);
            return kiln_error_set(err, KILN_ENOSPC, e, "stage thread");
        }
        s->joinable[i] = true;
        s->state[i] = ST_RUNNING;
        s->running++;
    }
    return 0;
}

/* Runs the stages the target needs, each as soon as the stages it depends
 * on are done (independent stages in parallel).  The first failure stops
 * the others (their RUNs are killed) and is the build's error. */
static int run_stages(eng_ctx *c, kiln_error **err)
{
    size_t n = c->plan->n_stages;
    sched s = {.c = c};
    s.state = calloc(n + 1, sizeof(*s.state));
    s.thread = calloc(n + 1, sizeof(*s.thread));
    s.joinable = calloc(n + 1, sizeof(*s.joinable));
    if (s.state == NULL || s.thread == NULL || s.joinable == NULL) {
        free(s.state);
        free(s.thread);
        free(s.joinable);
        return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
    }
    pthread_mutex_init(&s.mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&s.cv, &ca);
    pthread_condattr_destroy(&ca);

    size_t limit = max_parallel(c->b.spec);
    kiln_error *serr = NULL;
    int rc = 0;
    pthread_mutex_lock(&s.mu);
    for (;;) {
        /* The caller's cancel and the deadline reach running stages (and
         * their RUNs) through b.stop. */
        if ((c->b.spec->cancel && atomic_load(c->b.spec->cancel)) || eng_past_deadline(&c->b))
            atomic_store(&c->b.stop, true);
        if (!atomic_load(&c->b.stop) && rc == 0 && (rc = start_ready(&s, limit, &serr)) < 0)
            atomic_store(&c->b.stop, true);
        if (s.running == 0)
            break;
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_nsec += 100 * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&s.cv, &s.mu, &ts);
    }
    pthread_mutex_unlock(&s.mu);
    for (size_t i = 0; i < n; i++)
        if (s.joinable[i])
            pthread_join(s.thread[i], NULL);

    if (s.err != NULL) {
        stage_res *fr = &c->res[s.failed_stage];
        c->b.out->failed_line = fr->failed_line;
        snprintf(c->b.out->failed_text, sizeof(c->b.out->failed_text), "%s", fr->failed_text);
        kiln_error_free(&serr);
        *err = s.err;
        rc = s.rc;
    } else if (rc < 0) {
        *err = serr;
    } else {
        for (size_t i = 0; i < n && rc == 0; i++) {
            if (!c->plan->stages[i].runs || s.state[i] == ST_DONE)
                continue;
            rc = eng_canceled(&c->b)
                     ? kiln_error_set(err, KILN_ECANCELED, 0, "build canceled")
                     : kiln_error_set(err, KILN_EINTERNAL, 0, "stage %zu never became ready", i);
        }
    }
    pthread_cond_destroy(&s.cv);
    pthread_mutex_destroy(&s.mu);
    free(s.state);
    free(s.thread);
    free(s.joinable);
    return rc;
}

/* A RUN on the host network without the network.host entitlement fails
 * the build before anything runs or is pulled, naming the RUN. */
static int check_entitlements(eng_ctx *c, const bld_plan *p, kiln_error **err)
{
    if (c->b.e->allow_host_network)
        return 0;
    for (size_t i = 0; i < p->n_stages; i++) {
        const bld_stage *st = &p->stages[i];
        for (size_t k = 0; st->runs && k < st->n_instrs; k++) {
            const bld_instr *in = &st->instrs[k];
            if (in->kind != BLD_INSTR_RUN || eng_run_network(c->b.spec, &in->u.run) != ENG_NET_HOST)
                continue;
            c->b.out->failed_line = in->line;
            eng_redact(c->b.out->failed_text, sizeof(c->b.out->failed_text), in->original);
            return kiln_error_set(err, KILN_EPERM, 0, "%s", ENG_HOST_NET_REFUSED);
        }
    }
    return 0;
}

/* A RUN that needs an SSH agent the build lacks (--mount=type=ssh,required
 * without --ssh) fails the build before anything runs, naming the RUN. */
static int check_ssh(eng_ctx *c, const bld_plan *p, kiln_error **err)
{
    for (size_t i = 0; i < p->n_stages; i++) {
        const bld_stage *st = &p->stages[i];
        for (size_t k = 0; st->runs && k < st->n_instrs; k++) {
            const bld_instr *in = &st->instrs[k];
            for (size_t m = 0; in->kind == BLD_INSTR_RUN && m < in->u.run.n_mounts; m++) {
                const bld_mount *mt = &in->u.run.mounts[m];
                if (mt->type != BLD_MOUNT_SSH || !mt->required ||
                    bld_ssh_session_has(c->b.spec->ssh, mt->id))
                    continue;
                c->b.out->failed_line = in->line;
                eng_redact(c->b.out->failed_text, sizeof(c->b.out->failed_text), in->original);
                return kiln_error_set(err, KILN_EINVAL, 0, ENG_SSH_MISSING_FMT, mt->id, mt->id,
                                      mt->id);
            }
        }
    }
    return 0;
}

/* A RUN for a platform this builder can run neither natively nor under
 * emulation fails the build before anything runs or is pulled, naming the
 * RUN and what is missing; emulated platforms are announced once. */
static int check_platforms(eng_ctx *c, const bld_plan *p, kiln_error **err)
{
    const char *said[16];
    size_t n_said = 0;
    for (size_t i = 0; i < p->n_stages; i++) {
        const bld_stage *st = &p->stages[i];
        for (size_t k = 0; st->runs && k < st->n_instrs; k++) {
            const bld_instr *in = &st->instrs[k];
            if (in->kind != BLD_INSTR_RUN)
                continue;
            char by[64];
            int rc =
                eng_platform_check(c->b.e, p->build_platform, st->platform, by, sizeof(by), err);
            if (rc < 0) {
                c->b.out->failed_line = in->line;
                eng_redact(c->b.out->failed_text, sizeof(c->b.out->failed_text), in->original);
                return rc;
            }
            bool seen = false;
            for (size_t j = 0; j < n_said && !seen; j++)
                seen = strcmp(said[j], st->platform) == 0;
            if (by[0] && !seen && n_said < KILN_ARRAY_SIZE(said)) {
                said[n_said++] = st->platform;
                eng_note(&c->b, "RUN for %s under QEMU user emulation (binfmt_misc %s)",
                         st->platform, by);
            }
            break; /* one RUN decides for the stage */
        }
    }
    return 0;
}

static int build(eng_ctx *c, kiln_error **err)
{
    bld_plan *first = NULL;
    int rc = plan(c, &first, false, err);
    if (rc < 0) {
        note_parse_error(c, *err);
        return rc;
    }
    if ((rc = check_entitlements(c, first, err)) < 0 || (rc = check_ssh(c, first, err)) < 0 ||
        (rc = check_platforms(c, first, err)) < 0) {
        bld_plan_free(first);
        return rc;
    }
    for (size_t i = 0; i < first->n_stages && rc == 0; i++) {
        const bld_stage *st = &first->stages[i];
        if (!st->runs)
            continue;
        if (st->base_kind == BLD_BASE_IMAGE &&
            (rc = fetch_base(c, st->base_image, st->platform, err)) < 0) {
            c->b.out->failed_line = st->line;
            snprintf(c->b.out->failed_text, sizeof(c->b.out->failed_text), "%s", st->original);
        }
        for (size_t k = 0; rc == 0 && k < st->n_instrs; k++) {
            const bld_instr *in = &st->instrs[k];
            if ((rc = fetch_refs(c, st, in, err)) < 0) { /* blame the instruction's line */
                c->b.out->failed_line = in->line;
                snprintf(c->b.out->failed_text, sizeof(c->b.out->failed_text), "%s", in->original);
            }
        }
    }
    bld_plan_free(first);
    if (rc < 0)
        return rc;
    if ((rc = plan(c, &c->plan, true, err)) < 0) {
        note_parse_error(c, *err);
        return rc;
    }
    for (size_t i = 0; i < c->plan->warnings.n; i++)
        eng_note(&c->b, "warning: %s", c->plan->warnings.v[i]);
    if ((rc = load_ignore(c, err)) < 0)
        return rc;
    c->n_stages = c->plan->n_stages;
    c->res = calloc(c->n_stages + 1, sizeof(*c->res));
    if (c->res == NULL)
        return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
    if ((rc = eng_regcache_import(&c->b, err)) < 0)
        return rc;
    rc = run_stages(c, err);
    eng_net_release(&c->b); /* no RUN comes after the stages */
    if (rc < 0)
        return rc;
    stage_res *r = &c->res[c->plan->target];
    if ((rc = apply_labels(r, c->b.spec, err)) < 0)
        return rc;
    eng_note(&c->b, "committing");
    eng_commit_desc cd = {
        .base_manifest = r->base_manifest,
        .layers = &r->layers,
        .layer_ids = &r->layer_ids,
        .config = r->config,
        .author = r->author,
        .hist = r->hist,
        .n_hist = r->n_hist,
        .platform = c->plan->stages[c->plan->target].platform,
    };
    if ((rc = eng_pusher_commit(&c->b, &cd, err)) < 0)
        return rc;
    for (size_t i = 0; c->b.spec->push && i < c->b.spec->n_tags; i++) {
        eng_note(&c->b, "pushing %s", c->b.spec->tags[i]);
        if ((rc = eng_pusher_push(&c->b, c->b.spec->tags[i], err)) < 0)
            return rc;
    }
    if (c->b.spec->cache_to != NULL && (rc = export_cache(c, err)) < 0)
        return rc;
    return 0;
}

int bld_build(bld_engine *e, const bld_build_spec *spec, const bld_build_events *ev,
              bld_build_result *out, kiln_error **err)
{
    memset(out, 0, sizeof(*out));
    if (spec == NULL || spec->dockerfile == NULL)
        return kiln_error_set(err, KILN_EINVAL, 0, "no Dockerfile");
    if (spec->context_dir && spec->context_dir[0] != '/')
        return kiln_error_set(err, KILN_EINVAL, 0, "context dir must be absolute");
    unsigned long long t0 = kiln_now_ms();
    eng_ctx c = {.b = {.e = e, .spec = spec, .user_ev = ev, .out = out}};
    c.b.ev_wrap = (bld_build_events){
        .stage_started = ev_stage_started,
        .step_started = ev_step_started,
        .output = ev_output,
        .step_done = ev_step_done,
        .stage_done = ev_stage_done,
        .note = ev_note,
        .ud = &c.b,
    };
    c.b.ev = &c.b.ev_wrap;
    pthread_mutex_init(&c.b.ev_mu, NULL);
    pthread_mutex_init(&c.b.mu, NULL);
    pthread_mutex_init(&c.b.net_mu, NULL);
    pthread_mutex_init(&c.lazy_mu, NULL);
    atomic_init(&c.b.stop, false);
    if (spec->build_timeout_ms)
        c.b.deadline = t0 + spec->build_timeout_ms;
    int rc = build(&c, err);
    if (rc < 0 && eng_past_deadline(&c.b) && !(spec->cancel && atomic_load(spec->cancel))) {
        /* Whatever the deadline interrupted, the deadline is the cause. */
        char lim[48];
        kiln_format_duration(lim, sizeof(lim), spec->build_timeout_ms);
        kiln_error_free(err);
        rc = kiln_error_set(err, KILN_ETIMEDOUT, 0, "build exceeded its time limit of %s", lim);
    }
    ctx_dispose(&c);
    pthread_mutex_destroy(&c.lazy_mu);
    pthread_mutex_destroy(&c.b.net_mu);
    pthread_mutex_destroy(&c.b.mu);
    pthread_mutex_destroy(&c.b.ev_mu);
    out->duration_ms = kiln_now_ms() - t0;
    return rc;
}
