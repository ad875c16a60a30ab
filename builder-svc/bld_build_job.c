/* The Build and Cancel RPCs of kiln-builder: a build is accepted at once as a
 * job and run by the engine (builder-svc/engine) on the job runner, its
 * progress turned into "build.<job>" events.  RUN output is batched: a batch
 * goes out when it holds OUT_BATCH_LINES lines, when a step ends, or at the
 * latest OUT_FLUSH_MS after its first line (a small flusher thread per build),
 * so a chatty RUN costs a few events per second and a quiet one still shows
 * its lines promptly.  A streamed context (context_digest instead of
 * context_dir) is unpacked by the job itself (bld_context.h), so Build is
 * still accepted at once. */
#include "bld_build_job.h"
#include "bld_context.h"
#include "bld_engine.h"
#include "bld_run_opts.h"
#include "cleanup.h"
#include "config.h"
#include "fs.h"
#include "units.h"
#include "log.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define OUT_BATCH_LINES 64
#define OUT_FLUSH_MS    100
#define MAX_RUNNING     BLD_MAX_HELD

typedef struct running {
    char id[KILN_JOB_ID_MAX + 1];
    atomic_bool *cancel;
} running;

struct bld_builds {
    char *data_dir;
    bld_engine *engine;
    bld_contexts *contexts;
    kiln_events *events;
    kiln_jobs *jobs;
    pthread_mutex_t mu;
    running run[MAX_RUNNING];
    bld_build_limits limits;
    /* Capacity: at most max_builds run at once, the rest queue (in FIFO-ish
     * order of the condition variable); draining fails queued builds and
     * refuses new ones. */
    pthread_cond_t slot_cv; /* a slot freed, a build ended, or draining began */
    char node[256];
    int max_builds;
    unsigned n_running, n_queued;
    bool draining;
    uint64_t started, succeeded, failed, steps_run, steps_cached;
};

typedef struct build_ctx {
    bld_builds *b;
    kiln_job *job;
    kiln_req *req; /* owned copy */
    atomic_bool cancel;
    unsigned long long t0;

    /* output batch */
    pthread_mutex_t out_mu;
    pthread_cond_t out_cv;
    pthread_t flusher;
    bool flusher_on, stop;
    Kiln__V1__LogLine lines[OUT_BATCH_LINES];
    Kiln__V1__LogLine *line_ptrs[OUT_BATCH_LINES];
    char *texts[OUT_BATCH_LINES];
    size_t n_lines;
    uint32_t out_stage, out_step;
    unsigned long long first_ms;
} build_ctx;

/* ---- output batching ---- */

static void flush_locked(build_ctx *c)
{
    if (c->n_lines == 0)
        return;
    Kiln__V1__BuildOutput o = KILN__V1__BUILD_OUTPUT__INIT;
    o.stage = c->out_stage;
    o.step = c->out_step;
    o.lines = c->line_ptrs;
    o.n_lines = c->n_lines;
    kiln_event e = KILN__V1__EVENT__INIT;
    e.payload_case = KILN__V1__EVENT__PAYLOAD_OUTPUT;
    e.output = &o;
    kiln_job_emit(c->job, &e, NULL);
    for (size_t i = 0; i < c->n_lines; i++) {
        free(c->texts[i]);
        c->texts[i] = NULL;
    }
    c->n_lines = 0;
}

static void *flusher_main(void *arg)
{
    build_ctx *c = arg;
    pthread_mutex_lock(&c->out_mu);
    while (!c->stop) {
        struct timespec dl = kiln_deadline_in_ms(OUT_FLUSH_MS);
        pthread_cond_timedwait(&c->out_cv, &c->out_mu, &dl);
        if (c->n_lines && kiln_now_ms() - c->first_ms >= OUT_FLUSH_MS)
            flush_locked(c);
    }
    flush_locked(c);
    pthread_mutex_unlock(&c->out_mu);
    return NULL;
}

static void ev_output(void *ud, size_t stage, size_t step, int stream, const char *line, size_t len)
{
    build_ctx *c = ud;
    pthread_mutex_lock(&c->out_mu);
    if (c->n_lines && (c->out_stage != stage || c->out_step != step))
        flush_locked(c);
    char *t = strndup(line, len);
    if (t) {
        Kiln__V1__LogLine *l = &c->lines[c->n_lines];
        kiln__v1__log_line__init(l);
        l->stream =
            stream == 2 ? KILN__V1__LOG_LINE__STREAM__STDERR : KILN__V1__LOG_LINE__STREAM__STDOUT;
        l->text = t;
        c->texts[c->n_lines] = t;
        c->line_ptrs[c->n_lines] = l;
        if (c->n_lines++ == 0)
            c->first_ms = kiln_now_ms();
        c->out_stage = (uint32_t)stage;
        c->out_step = (uint32_t)step;
    }
    if (c->n_lines == OUT_BATCH_LINES)
        flush_locked(c);
    pthread_mutex_unlock(&c->out_mu);
}

static void flush(build_ctx *c)
{
    pthread_mutex_lock(&c->out_mu);
    flush_locked(c);
    pthread_mutex_unlock(&c->out_mu);
}

/* ---- other events ---- */

static void emit(build_ctx *c, kiln_event *e)
{
    flush(c); /* keep output before the event that follows it */
    kiln_job_emit(c->job, e, NULL);
}

static void ev_stage_started(void *ud, size_t stage, const char *name, const char *base)
{
    Kiln__V1__BuildStageStarted s = KILN__V1__BUILD_STAGE_STARTED__INIT;
    s.stage = (uint32_t)stage;
    s.name = (char *)(name ? name : "");
    s.base_image = (char *)(base ? base : "");
    kiln_event e = KILN__V1__EVENT__INIT;
    e.payload_case = KILN__V1__EVENT__PAYLOAD_STAGE_STARTED;
    e.stage_started = &s;
    emit(ud, &e);
}

static void ev_step_started(void *ud, size_t stage, size_t step, const char *text, int line)
{
    Kiln__V1__BuildStepStarted s = KILN__V1__BUILD_STEP_STARTED__INIT;
    s.stage = (uint32_t)stage;
    s.step = (uint32_t)step;
    s.text = (char *)(text ? text : "");
    s.line = line;
    kiln_event e = KILN__V1__EVENT__INIT;
    e.payload_case = KILN__V1__EVENT__PAYLOAD_STEP_STARTED;
    e.step_started = &s;
    emit(ud, &e);
}

static void ev_step_done(void *ud, size_t stage, size_t step, int cached, const char *key,
                         uint64_t layer_bytes, uint64_t duration_ms)
{
    build_ctx *c = ud;
    Kiln__V1__BuildStepDone s = KILN__V1__BUILD_STEP_DONE__INIT;
    s.stage = (uint32_t)stage;
    s.step = (uint32_t)step;
    s.cached = cached != BLD_STEP_RAN;
    s.cache_source = (char *)(cached == BLD_STEP_CACHED_REGISTRY ? "registry" : "");
    s.cache_key = (char *)(key ? key : "");
    s.layer_bytes = layer_bytes;
    s.size_uncompressed = layer_bytes; /* compressed at commit: size_compressed unknown */
    s.duration_ms = duration_ms;
    kiln_event e = KILN__V1__EVENT__INIT;
    e.payload_case = KILN__V1__EVENT__PAYLOAD_STEP_DONE;
    e.step_done = &s;
    emit(c, &e);
}

static void ev_stage_done(void *ud, size_t stage)
{
    Kiln__V1__BuildStageDone s = KILN__V1__BUILD_STAGE_DONE__INIT;
    s.stage = (uint32_t)stage;
    kiln_event e = KILN__V1__EVENT__INIT;
    e.payload_case = KILN__V1__EVENT__PAYLOAD_STAGE_DONE;
    e.stage_done = &s;
    emit(ud, &e);
}

static void ev_note(void *ud, const char *what)
{
    build_ctx *c = ud;
    flush(c);
    kiln_job_progress(c->job, what, 0, 0, NULL);
}

/* ---- the job ---- */

static void registry(bld_builds *b, build_ctx *c, bool add)
{
    pthread_mutex_lock(&b->mu);
    for (int i = 0; i < MAX_RUNNING; i++) {
        if (add && b->run[i].cancel == NULL) {
            snprintf(b->run[i].id, sizeof(b->run[i].id), "%s", kiln_job_id(c->job));
            b->run[i].cancel = &c->cancel;
            break;
        }
        if (!add && b->run[i].cancel == &c->cancel) {
            b->run[i].cancel = NULL;
            b->run[i].id[0] = '\0';
            break;
        }
    }
    pthread_mutex_unlock(&b->mu);
}

static void ctx_free(build_ctx *c)
{
    if (c->flusher_on) {
        pthread_mutex_lock(&c->out_mu);
        c->stop = true;
        pthread_cond_broadcast(&c->out_cv);
        pthread_mutex_unlock(&c->out_mu);
        pthread_join(c->flusher, NULL);
    }
    registry(c->b, c, false);
    kiln_job_release(c->job);
    if (c->req)
        kiln__v1__request__free_unpacked(c->req, NULL);
    pthread_mutex_destroy(&c->out_mu);
    pthread_cond_destroy(&c->out_cv);
    free(c);
}

/* The streamed context of a build, unpacked and held; NULL dir with *err set
 * on failure. */
static int streamed_context(build_ctx *c, bld_ctx_hold *hold, kiln_error **err)
{
    const Kiln__V1__BuildRequest *q = c->req->build;
    _cleanup_free_ bld_ctx_chunk *chunks = calloc(q->n_context_chunks + 1, sizeof(*chunks));
    if (chunks == NULL)
        return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
    for (size_t i = 0; i < q->n_context_chunks; i++)
        chunks[i] = (bld_ctx_chunk){q->context_chunks[i]->digest, q->context_chunks[i]->size};
    int r = bld_context_acquire(c->b->contexts, q->context_digest, chunks, q->n_context_chunks,
                                &c->cancel, hold, err);
    if (r < 0)
        return kiln_error_wrap(err, "build context");
    char note[160];
    snprintf(note, sizeof(note), "context %.19s… (%zu files) %s", q->context_digest, hold->n_files,
             hold->unpacked ? "ready" : "ready (reused)");
    ev_note(c, note);
    return 0;
}

/* ---- secrets sent with the request ---- */

static void secrets_remove(const char *dir)
{
    if (dir && *dir)
        kiln_rm_rf(dir, NULL);
}

/* A killed builder may have left secrets behind: nothing else uses them. */
static void secrets_cleanup_stale(const char *data_dir)
{
    char p[PATH_MAX];
    snprintf(p, sizeof(p), "%s/sandbox", data_dir);
    _cleanup_closedir_ DIR *d = opendir(p);
    struct dirent *de;
    while (d && (de = readdir(d)) != NULL) {
        if (strncmp(de->d_name, "secrets-", 8) != 0)
            continue;
        char sp[2 * PATH_MAX];
        snprintf(sp, sizeof(sp), "%s/%s", p, de->d_name);
        kiln_info("build", "removing secrets left by an interrupted build: %s", sp);
        secrets_remove(sp);
    }
}

/* Secrets as files for the engine: a path on this host as given, or the
 * content sent with the request written (0600) into dir (0700, made here;
 * dir[0] stays '\0' when no secret has content). */
static int secrets_prepare(build_ctx *c, bld_secret_src *out, char dir[PATH_MAX],
                           char (*paths)[PATH_MAX], kiln_error **err)
{
    const Kiln__V1__BuildRequest *q = c->req->build;
    dir[0] = '\0';
    for (size_t i = 0; i < q->n_secrets; i++) {
        const Kiln__V1__SecretSpec *s = q->secrets[i];
        out[i] = (bld_secret_src){s->id, s->path};
        if (s->data.len == 0 && *s->path)
            continue;
        if (s->data.len > KILN_SECRET_MAX)
            return kiln_error_set(err, KILN_EINVAL, 0, "secret %s: larger than %d bytes", s->id,
                                  KILN_SECRET_MAX);
        if (dir[0] == '\0') {
            char base[PATH_MAX];
            snprintf(base, sizeof(base), "%s/sandbox", c->b->data_dir);
            if (kiln_mkdir_p(base, 0700, err) < 0)
                return kiln_error_wrap(err, "secrets");
            if (snprintf(dir, PATH_MAX, "%s/secrets-XXXXXX", base) >= PATH_MAX ||
                mkdtemp(dir) == NULL) {
                dir[0] = '\0';
                return kiln_error_set(err, KILN_EIO, errno, "secrets dir");
            }
        }
        snprintf(paths[i], PATH_MAX, "%s/%zu", dir, i);
        _cleanup_close_ int fd = open(paths[i], O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (fd < 0 || (s->data.len && write(fd, s->data.data, s->data.len) != (ssize_t)s->data.len))
            return kiln_error_set(err, KILN_EIO, errno, "secret %s", s->id);
        out[i].path = paths[i];
    }
    return 0;
}

/* Waits for one of the max_builds slots; KILN_EUNAVAIL when the builder
 * starts draining first (the build never ran: the client may submit it to
 * another node). */
static int take_slot(build_ctx *c, kiln_error **err)
{
    bld_builds *b = c->b;
    pthread_mutex_lock(&b->mu);
    if (b->n_running >= (unsigned)b->max_builds && !b->draining) {
        char note[128];
        snprintf(note, sizeof(note), "queued: %u build(s) running, capacity %d", b->n_running,
                 b->max_builds);
        pthread_mutex_unlock(&b->mu);
        ev_note(c, note);
        pthread_mutex_lock(&b->mu);
    }
    while (b->n_running >= (unsigned)b->max_builds && !b->draining)
        pthread_cond_wait(&b->slot_cv, &b->mu);
    b->n_queued--;
    int r = 0;
    if (b->draining)
        r = kiln_error_set(err, KILN_EUNAVAIL, 0,
                           "draining: kiln-builder on %s is shutting down and did not start this "
                           "build",
                           b->node);
    else
        b->n_running++;
    pthread_cond_broadcast(&b->slot_cv);
    pthread_mutex_unlock(&b->mu);
    return r;
}

static void give_slot(bld_builds *b)
{
    pthread_mutex_lock(&b->mu);
    b->n_running--;
    pthread_cond_broadcast(&b->slot_cv);
    pthread_mutex_unlock(&b->mu);
}

/* What a build job prepares from its request before it runs; released by
 * inputs_dispose whatever was prepared. */
typedef struct build_inputs {
    bld_ctx_hold hold; /* the streamed context, held while the build runs */
    bld_secret_src *secrets;
    char (*secret_paths)[PATH_MAX];
    char secrets_dir[PATH_MAX];
    bld_run_opts ro;
    uint64_t run_memory;
    bld_cache_ref *cache_from;
    size_t n_cache_from;
    bld_cache_ref cache_to;
} build_inputs;

static void inputs_dispose(build_inputs *in)
{
    secrets_remove(in->secrets_dir);
    bld_run_opts_dispose(&in->ro);
    bld_context_release(&in->hold);
    free(in->cache_from);
    free(in->secret_paths);
    free(in->secrets);
}

/* --cache-from / --cache-to: registry refs, or tags in the pusher's
 * store (a type=local cache the client streams in and out). */
static int cache_refs_from_pb(build_inputs *in, const Kiln__V1__BuildRequest *q, kiln_error **err)
{
    for (size_t i = 0; i <= q->n_cache_from; i++) {
        const Kiln__V1__CacheSpec *cs = i < q->n_cache_from ? q->cache_from[i] : q->cache_to;
        if (cs == NULL || !*cs->ref)
            continue;
        if (*cs->type && strcmp(cs->type, "registry") != 0 && strcmp(cs->type, "store") != 0)
            return kiln_error_set(err, KILN_EINVAL, 0, "cache: unknown type '%s'", cs->type);
        bld_cache_ref *o =
            i < q->n_cache_from ? &in->cache_from[in->n_cache_from++] : &in->cache_to;
        *o = (bld_cache_ref){cs->ref, strcmp(cs->type, "store") == 0};
    }
    if (in->cache_to.ref && *q->cache_to->mode && strcmp(q->cache_to->mode, "min") != 0 &&
        strcmp(q->cache_to->mode, "max") != 0)
        return kiln_error_set(err, KILN_EINVAL, 0, "--cache-to: mode must be min or max");
    return 0;
}

/* Prepares job c's inputs: its streamed context, secrets, RUN options and
 * cache refs. */
static int inputs_prepare(build_inputs *in, build_ctx *c, kiln_error **err)
{
    const Kiln__V1__BuildRequest *q = c->req->build;
    int r = 0;
    if (*q->context_digest && (r = streamed_context(c, &in->hold, err)) < 0)
        return r;
    in->secrets = calloc(q->n_secrets + 1, sizeof(*in->secrets));
    in->secret_paths = calloc(q->n_secrets + 1, PATH_MAX);
    if (in->secrets == NULL || in->secret_paths == NULL)
        return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
    if ((r = secrets_prepare(c, in->secrets, in->secrets_dir, in->secret_paths, err)) < 0)
        return r;
    in->run_memory = q->run_memory ? q->run_memory : c->b->limits.run_memory_bytes;
    if ((r = bld_run_opts_init(&in->ro, q, in->run_memory, err)) < 0 ||
        (r = bld_run_opts_ssh(&in->ro, q, err)) < 0)
        return r;
    in->cache_from = calloc(q->n_cache_from + 1, sizeof(*in->cache_from));
    return in->cache_from ? cache_refs_from_pb(in, q, err) : 0;
}

/* The build spec of job c's request; it points into the request and in. */
static void build_spec_from_pb(bld_build_spec *spec, build_ctx *c, build_inputs *in)
{
    const Kiln__V1__BuildRequest *q = c->req->build;
    const bld_build_limits *l = &c->b->limits;
    *spec = (bld_build_spec){
        .cache_to = in->cache_to.ref ? &in->cache_to : NULL,
        .cache_to_max = in->cache_to.ref && strcmp(q->cache_to->mode, "max") == 0,
        .cache_from = in->cache_from,
        .n_cache_from = in->n_cache_from,
        .context_dir = in->hold.dir ? in->hold.dir : q->context_dir,
        .dockerfile = q->dockerfile,
        .dockerignore = q->dockerignore_set ? q->dockerignore : NULL,
        .filename = *q->filename ? q->filename : NULL,
        .tags = (const char *const *)q->tags,
        .n_tags = q->n_tags,
        .annotations = (const char *const *)q->annotations,
        .n_annotations = q->n_annotations,
        .named_images = (const char *const *)q->named_images,
        .n_named_images = q->n_named_images,
        .build_args = (const char *const *)q->build_args,
        .n_build_args = q->n_build_args,
        .target = *q->target ? q->target : NULL,
        .platform = *q->platform ? q->platform : NULL,
        .no_cache = q->no_cache,
        .pull = q->pull,
        .labels = (const char *const *)q->labels,
        .n_labels = q->n_labels,
        .network = strcmp(q->network, "none") == 0   ? BLD_NETMODE_NONE
                   : strcmp(q->network, "host") == 0 ? BLD_NETMODE_HOST
                                                     : BLD_NETMODE_DEFAULT,
        .secrets = in->secrets,
        .n_secrets = in->secrets ? q->n_secrets : 0,
        .push = q->push,
        .registry_insecure = q->insecure,
        .registry_creds = *q->creds ? q->creds : NULL,
        .registry_credentials = q->credentials,
        .n_registry_credentials = q->n_credentials,
        .registry_authfile = *q->authfile ? q->authfile : NULL,
        .registry_cert_dir = *q->cert_dir ? q->cert_dir : NULL,
        .push_format = *q->push_format ? q->push_format : NULL,
        .source_date_epoch = q->source_date_epoch ? q->source_date_epoch : -1,
        .run_timeout_ms = q->run_timeout_ms ? q->run_timeout_ms : l->run_timeout_ms,
        .run_memory_bytes = in->run_memory,
        .run_hosts = in->ro.hosts,
        .run_ulimits = in->ro.ulimits,
        .n_run_ulimits = in->ro.n_ulimits,
        .run_shm_bytes = in->ro.shm_bytes,
        .ssh = in->ro.ssh,
        .run_pids_max = q->run_pids ? q->run_pids : l->run_pids,
        .build_timeout_ms = q->build_timeout_ms ? q->build_timeout_ms : l->build_timeout_ms,
        .cancel = &c->cancel,
    };
}

/* Emits job c's failure (r, err) with the failing instruction, logs it and
 * counts it. */
static void report_failed(build_ctx *c, int r, const kiln_error *err, bld_build_result *res)
{
    bld_builds *b = c->b;
    kiln_code code = err ? err->code : (kiln_code)r;
    Kiln__V1__Status st = KILN__V1__STATUS__INIT;
    st.code = (Kiln__V1__Code)kiln_code_to_wire(code);
    st.message = err ? err->msg : (char *)kiln_code_name(code);
    Kiln__V1__JobFailed f = KILN__V1__JOB_FAILED__INIT;
    f.error = &st;
    f.line = res->failed_line;
    f.instruction = res->failed_text;
    kiln_event e = KILN__V1__EVENT__INIT;
    e.payload_case = KILN__V1__EVENT__PAYLOAD_FAILED;
    e.failed = &f;
    kiln_job_emit(c->job, &e, NULL);
    kiln_warn("build", "build %s failed: %s", kiln_job_id(c->job), st.message);
    pthread_mutex_lock(&b->mu);
    b->failed++;
    pthread_mutex_unlock(&b->mu);
}

/* Emits job c's completion with the built image res, logs it and counts
 * it. */
static void report_built(build_ctx *c, bld_build_result *res)
{
    const Kiln__V1__BuildRequest *q = c->req->build;
    bld_builds *b = c->b;
    Kiln__V1__BuildResult br = KILN__V1__BUILD_RESULT__INIT;
    br.digest = res->digest;
    br.tags = q->tags;
    br.n_tags = q->n_tags;
    br.layers = (uint32_t)res->n_layers;
    br.size = res->size;
    br.size_compressed = res->size;
    br.size_uncompressed = res->size_uncompressed;
    br.duration_ms = res->duration_ms;
    br.steps_run = res->steps_run;
    br.steps_cached = res->steps_cached;
    char summary[320], size[KILN_LAYER_SIZE_STRLEN];
    kiln_format_layer_size(size, sizeof(size), res->size, res->size_uncompressed);
    snprintf(summary, sizeof(summary),
             "built %s: %zu layer(s) of %s, %u step(s) run, %u cached, %.2fs", res->digest,
             res->n_layers, size, res->steps_run, res->steps_cached,
             (double)(kiln_now_ms() - c->t0) / 1000.0);
    Kiln__V1__JobCompleted done = KILN__V1__JOB_COMPLETED__INIT;
    done.summary = summary;
    done.digest = res->digest;
    done.build = &br;
    kiln_event e = KILN__V1__EVENT__INIT;
    e.payload_case = KILN__V1__EVENT__PAYLOAD_COMPLETED;
    e.completed = &done;
    kiln_job_emit(c->job, &e, NULL);
    kiln_info("build", "build %s: %s", kiln_job_id(c->job), summary);
    pthread_mutex_lock(&b->mu);
    b->succeeded++;
    b->steps_run += res->steps_run;
    b->steps_cached += res->steps_cached;
    pthread_mutex_unlock(&b->mu);
}

static void run_build(void *arg)
{
    build_ctx *c = arg;
    build_inputs in = {.hold = {.lock_fd = -1}};
    kiln_error *err = NULL;
    int r = take_slot(c, &err);
    bool slot = r == 0;
    if (r == 0)
        r = inputs_prepare(&in, c, &err);
    bld_build_events ev = {ev_stage_started, ev_step_started, ev_output, ev_step_done,
                           ev_stage_done,    ev_note,         c};
    bld_build_result res;
    memset(&res, 0, sizeof(res));
    if (r == 0) {
        bld_build_spec spec;
        build_spec_from_pb(&spec, c, &in);
        r = bld_build(c->b->engine, &spec, &ev, &res, &err);
    }
    inputs_dispose(&in);
    flush(c);
    bld_builds *b = c->b;
    if (r < 0)
        report_failed(c, r, err, &res);
    else
        report_built(c, &res);
    kiln_error_free(&err);
    ctx_free(c);
    if (slot)
        give_slot(b);
}

/* A build's own limits may lower the builder's, never raise them. */
static int check_limits(const bld_build_limits *l, const Kiln__V1__BuildRequest *q,
                        kiln_error **err)
{
    char want[48], max[48];
    if (l->run_memory_bytes && q->run_memory > l->run_memory_bytes) {
        kiln_format_size(want, sizeof(want), q->run_memory);
        kiln_format_size(max, sizeof(max), l->run_memory_bytes);
        return kiln_error_set(err, KILN_EINVAL, 0,
                              "a RUN memory limit of %s is above this builder's maximum of %s "
                              "(kiln-builder --run-memory)",
                              want, max);
    }
    if (l->run_pids && q->run_pids > l->run_pids)
        return kiln_error_set(err, KILN_EINVAL, 0,
                              "a RUN limit of %llu processes is above this builder's maximum of "
                              "%llu (kiln-builder --run-pids)",
                              (unsigned long long)q->run_pids, (unsigned long long)l->run_pids);
    if (l->run_timeout_ms && q->run_timeout_ms > l->run_timeout_ms) {
        kiln_format_duration(want, sizeof(want), q->run_timeout_ms);
        kiln_format_duration(max, sizeof(max), l->run_timeout_ms);
        return kiln_error_set(err, KILN_EINVAL, 0,
                              "a RUN time limit of %s is above this builder's maximum of %s "
                              "(kiln-builder --run-timeout)",
                              want, max);
    }
    if (l->build_timeout_ms && q->build_timeout_ms > l->build_timeout_ms) {
        kiln_format_duration(want, sizeof(want), q->build_timeout_ms);
        kiln_format_duration(max, sizeof(max), l->build_timeout_ms);
        return kiln_error_set(err, KILN_EINVAL, 0,
                              "a build time limit of %s is above this builder's maximum of %s "
                              "(kiln-builder --build-timeout)",
                              want, max);
    }
    return 0;
}

void bld_builds_set_limits(bld_builds *b, const bld_build_limits *l)
{
    pthread_mutex_lock(&b->mu);
    b->limits = *l;
    pthread_mutex_unlock(&b->mu);
}

/* Refuses a build while the builder starts, drains or is full. */
static int check_capacity(bld_builds *b, kiln_error **err)
{
    pthread_mutex_lock(&b->mu);
    bool ready = b->events != NULL, draining = b->draining;
    unsigned held = b->n_running + b->n_queued;
    pthread_mutex_unlock(&b->mu);
    if (!ready)
        return kiln_error_set(err, KILN_EUNAVAIL, 0, "the builder is still starting");
    if (draining)
        return kiln_error_set(err, KILN_EUNAVAIL, 0,
                              "draining: kiln-builder on %s is shutting down and takes no new "
                              "builds",
                              b->node);
    if (held >= MAX_RUNNING)
        return kiln_error_set(err, KILN_EUNAVAIL, 0,
                              "kiln-builder on %s is full: %u builds running or queued", b->node,
                              held);
    return 0;
}

/* Checks the build context: a streamed one's chunk list, or else a
 * directory on this host. */
static int check_context(const Kiln__V1__BuildRequest *q, kiln_error **err)
{
    struct stat st;
    if (*q->context_digest) {
        bld_ctx_chunk *chunks = calloc(q->n_context_chunks + 1, sizeof(*chunks));
        if (chunks == NULL)
            return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
        for (size_t i = 0; i < q->n_context_chunks; i++)
            chunks[i] = (bld_ctx_chunk){q->context_chunks[i]->digest, q->context_chunks[i]->size};
        int r = bld_context_validate(q->context_digest, chunks, q->n_context_chunks, err);
        free(chunks);
        if (r < 0)
            return kiln_error_wrap(err, "build context");
        if (*q->context_dir)
            return kiln_error_set(err, KILN_EINVAL, 0,
                                  "a build has a context_dir or a context_digest, not both");
    } else if (q->context_dir == NULL || q->context_dir[0] != '/')
        return kiln_error_set(err, KILN_EINVAL, 0, "build context must be an absolute path");
    else if (stat(q->context_dir, &st) < 0 || !S_ISDIR(st.st_mode))
        return kiln_error_set(err, KILN_EINVAL, 0,
                              "build context %s is not a directory on the "
                              "builder's host",
                              q->context_dir);
    return 0;
}

/* Checks the rest of the request against what this builder allows. */
static int check_request(bld_builds *b, const Kiln__V1__BuildRequest *q, kiln_error **err)
{
    if (q->dockerfile == NULL || q->dockerfile[0] == '\0')
        return kiln_error_set(err, KILN_EINVAL, 0, "empty Dockerfile");
    if (*q->network && strcmp(q->network, "host") && strcmp(q->network, "none"))
        return kiln_error_set(err, KILN_EINVAL, 0, "network must be host or none");
    if (strcmp(q->network, "host") == 0 && !bld_engine_host_network_allowed(b->engine))
        return kiln_error_set(err, KILN_EPERM, 0,
                              "--network host needs the network.host entitlement: start "
                              "kiln-builder with --allow-insecure-entitlement network.host");
    if (check_limits(&b->limits, q, err) < 0)
        return KILN_EINVAL;
    bld_run_opts ro;
    int rr =
        bld_run_opts_init(&ro, q, q->run_memory ? q->run_memory : b->limits.run_memory_bytes, err);
    bld_run_opts_dispose(&ro);
    if (rr < 0)
        return rr;
    if (*q->push_format && strcmp(q->push_format, "oci") && strcmp(q->push_format, "v2s2"))
        return kiln_error_set(err, KILN_EINVAL, 0, "unknown push format '%.40s' (oci, v2s2)",
                              q->push_format);
    return 0;
}

/* *out = a job context for a copy of req, its job (described by desc)
 * started, registered and its output flusher running. */
static int ctx_start(build_ctx **out, bld_builds *b, const kiln_req *req, const char *desc,
                     kiln_error **err)
{
    build_ctx *c = calloc(1, sizeof(*c));
    if (c == NULL || (c->req = kiln_req_dup(req)) == NULL) {
        free(c);
        return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
    }
    c->b = b;
    c->t0 = kiln_now_ms();
    pthread_mutex_init(&c->out_mu, NULL);
    pthread_cond_init(&c->out_cv, NULL);
    int r = kiln_job_start(&c->job, b->events, "build", "build", desc, err);
    if (r < 0) {
        kiln__v1__request__free_unpacked(c->req, NULL);
        pthread_mutex_destroy(&c->out_mu);
        pthread_cond_destroy(&c->out_cv);
        free(c);
        return r;
    }
    registry(b, c, true);
    c->flusher_on = pthread_create(&c->flusher, NULL, flusher_main, c) == 0;
    *out = c;
    return 0;
}

/* Queues c's job, counted as queued before the job thread can take a slot;
 * on failure the job fails and c is freed. */
static int submit(bld_builds *b, build_ctx *c, kiln_error **err)
{
    pthread_mutex_lock(&b->mu);
    b->n_queued++;
    pthread_mutex_unlock(&b->mu);
    int r = kiln_jobs_submit(b->jobs, run_build, c, err);
    if (r < 0) {
        pthread_mutex_lock(&b->mu);
        b->n_queued--;
        pthread_mutex_unlock(&b->mu);
        kiln_job_fail(c->job, (kiln_code)r, (*err)->msg, NULL);
        ctx_free(c);
        return r;
    }
    pthread_mutex_lock(&b->mu);
    b->started++;
    pthread_mutex_unlock(&b->mu);
    return 0;
}

int bld_builds_accept(bld_builds *b, const kiln_req *req, kiln_reply *reply, kiln_arena *a,
                      kiln_error **err)
{
    const Kiln__V1__BuildRequest *q = req->build;
    int r;
    if ((r = check_capacity(b, err)) < 0 || (r = check_context(q, err)) < 0 ||
        (r = check_request(b, q, err)) < 0)
        return r;
    char desc[600];
    snprintf(desc, sizeof(desc), "build %.300s%s%.250s",
             *q->context_digest ? q->context_digest : q->context_dir, q->n_tags ? " as " : "",
             q->n_tags ? q->tags[0] : "");
    build_ctx *c = NULL;
    if ((r = ctx_start(&c, b, req, desc, err)) < 0)
        return r;
    Kiln__V1__JobAccepted *ja = kiln_arena_alloc(a, sizeof(*ja));
    if (ja == NULL) {
        ctx_free(c);
        return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
    }
    kiln__v1__job_accepted__init(ja);
    ja->job_id = kiln_arena_strdup(a, kiln_job_id(c->job));
    ja->topic = kiln_arena_printf(a, "build.%s", ja->job_id);
    if ((r = submit(b, c, err)) < 0)
        return r;
    kiln_info("build", "build %s accepted: %s", ja->job_id, desc);
    reply->body_case = KILN__V1__REPLY__BODY_JOB_ACCEPTED;
    reply->job_accepted = ja;
    return 0;
}

int bld_builds_cancel(bld_builds *b, const char *job_id, bool *was_running, kiln_error **err)
{
    if (!kiln_job_id_valid(job_id))
        return kiln_error_set(err, KILN_EINVAL, 0, "invalid job id");
    *was_running = false;
    pthread_mutex_lock(&b->mu);
    for (int i = 0; i < MAX_RUNNING; i++)
        if (b->run[i].cancel && strcmp(b->run[i].id, job_id) == 0) {
            atomic_store(b->run[i].cancel, true);
            *was_running = true;
        }
    pthread_mutex_unlock(&b->mu);
    if (*was_running)
        kiln_info("build", "build %s: cancel requested", job_id);
    return 0;
}

int bld_builds_new(bld_builds **out, const char *data_dir, bld_engine *engine,
                   bld_contexts *contexts, kiln_error **err)
{
    bld_builds *b = calloc(1, sizeof(*b));
    if (b == NULL || (b->data_dir = strdup(data_dir)) == NULL) {
        free(b);
        return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
    }
    secrets_cleanup_stale(data_dir);
    b->engine = engine;
    b->contexts = contexts;
    b->max_builds = BLD_MAX_BUILDS_DEFAULT;
    snprintf(b->node, sizeof(b->node), "this node");
    pthread_mutex_init(&b->mu, NULL);
    pthread_cond_init(&b->slot_cv, NULL);
    /* One thread per accepted build; take_slot() bounds how many run. */
    int r = kiln_jobs_new(&b->jobs, MAX_RUNNING, err);
    if (r < 0) {
        pthread_cond_destroy(&b->slot_cv);
        pthread_mutex_destroy(&b->mu);
        free(b->data_dir);
        free(b);
        return r;
    }
    *out = b;
    return 0;
}

void bld_builds_attach(bld_builds *b, kiln_events *events)
{
    pthread_mutex_lock(&b->mu);
    b->events = events;
    pthread_mutex_unlock(&b->mu);
}

void bld_builds_configure(bld_builds *b, const char *node_name, int max_builds)
{
    pthread_mutex_lock(&b->mu);
    if (node_name && *node_name)
        snprintf(b->node, sizeof(b->node), "%s", node_name);
    if (max_builds > 0)
        b->max_builds = max_builds;
    pthread_mutex_unlock(&b->mu);
}

void bld_builds_load(bld_builds *b, unsigned *n_running, unsigned *n_queued, unsigned *max)
{
    pthread_mutex_lock(&b->mu);
    *n_running = b->n_running;
    *n_queued = b->n_queued;
    *max = (unsigned)b->max_builds;
    pthread_mutex_unlock(&b->mu);
}

/* Lock held.  Returns how many builds were told to stop. */
static unsigned cancel_all_locked(bld_builds *b)
{
    unsigned n = 0;
    for (int i = 0; i < MAX_RUNNING; i++)
        if (b->run[i].cancel) {
            atomic_store(b->run[i].cancel, true);
            n++;
        }
    return n;
}

void bld_builds_cancel_all(bld_builds *b)
{
    pthread_mutex_lock(&b->mu);
    unsigned n = cancel_all_locked(b);
    pthread_mutex_unlock(&b->mu);
    if (n)
        kiln_info("build", "cancelling %u build(s)", n);
}

void bld_builds_drain(bld_builds *b, int grace_ms)
{
    struct timespec dl = kiln_deadline_in_ms(grace_ms);
    pthread_mutex_lock(&b->mu);
    b->draining = true;
    pthread_cond_broadcast(&b->slot_cv); /* queued builds fail now */
    if (b->n_running || b->n_queued)
        kiln_info("build", "draining: %u build(s) running may finish within %d s, %u queued fail",
                  b->n_running, grace_ms / 1000, b->n_queued);
    bool timed_out = false;
    while ((b->n_running || b->n_queued) && !timed_out)
        timed_out = pthread_cond_timedwait(&b->slot_cv, &b->mu, &dl) != 0;
    /* Past the grace period: each build's RUN process tree dies with its PID
     * namespace and the build ends failed(CANCELLED), which followers see. */
    unsigned n = timed_out ? cancel_all_locked(b) : 0;
    pthread_mutex_unlock(&b->mu);
    if (n)
        kiln_warn("build", "grace period over: cancelling %u running build(s)", n);
    kiln_jobs_drain(b->jobs, grace_ms);
}

void bld_builds_free(bld_builds *b)
{
    if (b == NULL)
        return;
    kiln_jobs_free(b->jobs);
    pthread_cond_destroy(&b->slot_cv);
    pthread_mutex_destroy(&b->mu);
    free(b->data_dir);
    free(b);
}

void bld_builds_metrics(bld_builds *b, kiln_buf *out)
{
    pthread_mutex_lock(&b->mu);
    kiln_buf_printf(out, NULL,
                    "# HELP kiln_builder_builds_total Builds, by outcome.\n"
                    "# TYPE kiln_builder_builds_total counter\n"
                    "kiln_builder_builds_total{outcome=\"started\"} %llu\n"
                    "kiln_builder_builds_total{outcome=\"succeeded\"} %llu\n"
                    "kiln_builder_builds_total{outcome=\"failed\"} %llu\n"
                    "# HELP kiln_builder_steps_total Build steps, run or served from cache.\n"
                    "# TYPE kiln_builder_steps_total counter\n"
                    "kiln_builder_steps_total{cached=\"false\"} %llu\n"
                    "kiln_builder_steps_total{cached=\"true\"} %llu\n",
                    (unsigned long long)b->started, (unsigned long long)b->succeeded,
                    (unsigned long long)b->failed, (unsigned long long)b->steps_run,
                    (unsigned long long)b->steps_cached);
    pthread_mutex_unlock(&b->mu);
}
