/* kiln-builder core.  Keeps one long-lived client to kiln-pusher and a monitor
 * thread that probes it, so Status and /readyz answer from the last probe
 * instead of blocking on the pusher. */
#include "bld_server.h"

#include <cjson/cJSON.h>
#include "bld_build_job.h"
#include "bld_context.h"
#include "bld_engine.h"
#include "config.h"
#include "log.h"
#include "plan.h"
#include "transport.h"
#include "units.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define PROBE_INTERVAL_MS 2000
#define PROBE_TIMEOUT_MS  1000

struct bld_server {
    const kiln_service_opts *o;
    kiln_service *svc;
    char *pusher_url;
    kiln_rpc_client *pusher;
    bld_engine *engine;
    bld_contexts *contexts;
    bld_builds *builds;

    pthread_mutex_t mu;
    pthread_cond_t cv;
    pthread_t monitor;
    bool monitor_started, stop;
    bool pusher_ok, probed;
    char pusher_detail[256];
    /* The step cache as last measured by the monitor (Status answers from it
     * without touching the disk). */
    uint64_t cache_steps, cache_bytes;
    unsigned long long cache_at_ms;
};

#define CACHE_MEASURE_MS 15000

/* Re-measures the step cache every CACHE_MEASURE_MS (monitor thread). */
static void measure_cache(bld_server *b)
{
    pthread_mutex_lock(&b->mu);
    bool due = b->cache_at_ms == 0 || kiln_now_ms() - b->cache_at_ms >= CACHE_MEASURE_MS;
    pthread_mutex_unlock(&b->mu);
    if (!due)
        return;
    uint64_t steps = 0, bytes = 0;
    bld_engine_cache_usage(b->engine, &steps, &bytes);
    pthread_mutex_lock(&b->mu);
    b->cache_steps = steps;
    b->cache_bytes = bytes;
    b->cache_at_ms = kiln_now_ms();
    pthread_mutex_unlock(&b->mu);
}

static void probe(bld_server *b)
{
    kiln_req req = KILN__V1__REQUEST__INIT;
    Kiln__V1__StatusRequest sr = KILN__V1__STATUS_REQUEST__INIT;
    req.body_case = KILN__V1__REQUEST__BODY_STATUS;
    req.status = &sr;
    kiln_reply *rep = NULL;
    kiln_error *err = NULL;
    int r = kiln_rpc_call(b->pusher, &req, &rep, PROBE_TIMEOUT_MS, &err);
    char detail[256];
    bool ok = r == 0 && rep->body_case == KILN__V1__REPLY__BODY_STATUS_REPLY;
    if (ok)
        snprintf(detail, sizeof(detail), "%s (%s %s)", b->pusher_url, rep->status_reply->service,
                 rep->status_reply->version);
    else
        snprintf(detail, sizeof(detail), "%s unreachable: %s", b->pusher_url,
                 err ? err->msg : "unexpected reply");
    pthread_mutex_lock(&b->mu);
    if (ok != b->pusher_ok || !b->probed) {
        if (ok)
            kiln_info("pusher", "pusher reachable at %s", b->pusher_url);
        else
            kiln_warn("pusher", "%s", detail);
    }
    b->pusher_ok = ok;
    b->probed = true;
    snprintf(b->pusher_detail, sizeof(b->pusher_detail), "%s", detail);
    pthread_mutex_unlock(&b->mu);
    kiln_rpc_reply_free(rep);
    kiln_error_free(&err);
}

static void *monitor_main(void *arg)
{
    bld_server *b = arg;
    for (;;) {
        probe(b);
        measure_cache(b);
        pthread_mutex_lock(&b->mu);
        struct timespec dl = kiln_deadline_in_ms(PROBE_INTERVAL_MS);
        while (!b->stop && pthread_cond_timedwait(&b->cv, &b->mu, &dl) == 0)
            ;
        bool stop = b->stop;
        pthread_mutex_unlock(&b->mu);
        if (stop)
            return NULL;
    }
}

int bld_server_new(bld_server **out, const kiln_service_opts *o, const char *pusher_url,
                   int max_builds, kiln_error **err)
{
    bld_server *b = calloc(1, sizeof(*b));
    if (b == NULL)
        return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
    b->o = o;
    pthread_mutex_init(&b->mu, NULL);
    pthread_cond_init(&b->cv, NULL);
    snprintf(b->pusher_detail, sizeof(b->pusher_detail), "not probed yet");
    b->pusher_url = pusher_url ? strdup(pusher_url) : kiln_default_url(o->data_dir, KILN_EP_PUSHER);
    if (b->pusher_url == NULL) {
        bld_server_free(b);
        return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
    }
    int r = kiln_rpc_client_new(&b->pusher, b->pusher_url, &o->transport, false, err);
    if (r < 0) {
        bld_server_free(b);
        return kiln_error_wrap(err, "pusher client");
    }
    if ((r = bld_engine_new(&b->engine, o->data_dir, b->pusher, err)) < 0 ||
        (r = bld_contexts_new(&b->contexts, o->data_dir, err)) < 0 ||
        (r = bld_builds_new(&b->builds, o->data_dir, b->engine, b->contexts, err)) < 0) {
        bld_server_free(b);
        return r;
    }
    bld_builds_configure(b->builds, o->node_name, max_builds);
    if (pthread_create(&b->monitor, NULL, monitor_main, b) != 0) {
        bld_server_free(b);
        return kiln_error_set(err, KILN_ENOSPC, 0, "cannot start pusher monitor");
    }
    b->monitor_started = true;
    *out = b;
    return 0;
}

void bld_server_set_limits(bld_server *b, const bld_build_limits *l)
{
    bld_builds_set_limits(b->builds, l);
}

void bld_server_free(bld_server *b)
{
    if (b == NULL)
        return;
    if (b->monitor_started) {
        pthread_mutex_lock(&b->mu);
        b->stop = true;
        pthread_cond_broadcast(&b->cv);
        pthread_mutex_unlock(&b->mu);
        pthread_join(b->monitor, NULL);
    }
    bld_builds_free(b->builds);
    bld_contexts_free(b->contexts);
    bld_engine_free(b->engine);
    kiln_rpc_client_free(b->pusher);
    free(b->pusher_url);
    pthread_mutex_destroy(&b->mu);
    pthread_cond_destroy(&b->cv);
    free(b);
}

void bld_server_allow_host_network(bld_server *b, bool allow)
{
    bld_engine_allow_host_network(b->engine, allow);
    if (allow)
        kiln_warn("build", "network.host entitlement granted: builds may run RUN steps on the "
                           "host's network, host loopback included");
}

bool bld_server_pusher_ok(bld_server *b, char *detail, size_t cap)
{
    pthread_mutex_lock(&b->mu);
    bool ok = b->pusher_ok;
    if (detail && cap)
        snprintf(detail, cap, "%s", b->pusher_detail);
    pthread_mutex_unlock(&b->mu);
    return ok;
}

kiln_rpc_client *bld_server_pusher(bld_server *b)
{
    return b->pusher;
}

static void checks(void *user, Kiln__V1__Check ***out, size_t *n, kiln_arena *a)
{
    bld_server *b = user;
    Kiln__V1__Check **list = kiln_arena_calloc(a, 2, sizeof(*list));
    Kiln__V1__Check *c = kiln_arena_alloc(a, sizeof(*c));
    Kiln__V1__Check *sb = kiln_arena_alloc(a, sizeof(*sb));
    if (list == NULL || c == NULL || sb == NULL)
        return;
    kiln__v1__check__init(c);
    char detail[256];
    c->name = "pusher";
    c->ok = bld_server_pusher_ok(b, detail, sizeof(detail));
    c->detail = kiln_arena_strdup(a, detail);
    list[0] = c;
    /* The sandbox preflight: which isolation and rootfs mode RUN uses, and
     * exactly what is missing. */
    kiln__v1__check__init(sb);
    const char *pf = bld_engine_preflight_json(b->engine);
    sb->name = "sandbox";
    sb->ok = pf && strstr(pf, "\"usable\":true") != NULL;
    /* … and whether the network.host entitlement was granted. */
    cJSON *j = cJSON_Parse(pf ? pf : "{}");
    if (j)
        cJSON_AddBoolToObject(j, "network_host_entitlement",
                              bld_engine_host_network_allowed(b->engine));
    /* … and the platforms RUN can use: native, and emulated through
     * binfmt_misc (or what emulation lacks). */
    char platforms[512], emulation[1024];
    bld_engine_emulation(b->engine, platforms, sizeof(platforms), emulation, sizeof(emulation));
    if (j) {
        cJSON_AddStringToObject(j, "platforms", platforms);
        cJSON_AddStringToObject(j, "emulation", emulation);
    }
    char *js = j ? cJSON_PrintUnformatted(j) : NULL;
    sb->detail = kiln_arena_strdup(a, js ? js : pf ? pf : "{}");
    cJSON_free(js);
    cJSON_Delete(j);
    list[1] = sb;
    *out = list;
    *n = 2;
}

static void metrics(void *user, kiln_buf *out)
{
    bld_server *b = user;
    kiln_buf_printf(
        out, NULL,
        "# HELP kiln_builder_pusher_up Whether the last probe of kiln-pusher succeeded.\n"
        "# TYPE kiln_builder_pusher_up gauge\n"
        "kiln_builder_pusher_up %d\n",
        bld_server_pusher_ok(b, NULL, 0) ? 1 : 0);
    bld_builds_metrics(b->builds, out);
}

static void drain(void *user, int grace_ms)
{
    bld_server *b = user;
    bld_builds_drain(b->builds, grace_ms);
}

static void cancel(void *user)
{
    bld_server *b = user;
    bld_builds_cancel_all(b->builds);
}

/* Status: the node's platforms, load and cache (from the last measure). */
static void status(void *user, Kiln__V1__StatusReply *r, kiln_arena *a)
{
    bld_server *b = user;
    unsigned running = 0, queued = 0, max = 0;
    bld_builds_load(b->builds, &running, &queued, &max);
    r->builds_running = running;
    r->builds_queued = queued;
    r->max_builds = max;
    pthread_mutex_lock(&b->mu);
    r->cache_bytes = b->cache_bytes;
    pthread_mutex_unlock(&b->mu);
    /* The native platform first, then those RUN reaches through QEMU user
     * emulation (binfmt_misc handlers with the F flag), also listed apart. */
    char list[32][32];
    bool emulated[32];
    size_t n = bld_engine_platforms(b->engine, list, emulated, 32);
    r->platforms = kiln_arena_calloc(a, n + 1, sizeof(char *));
    r->emulated_platforms = kiln_arena_calloc(a, n + 1, sizeof(char *));
    for (size_t i = 0; r->platforms && r->emulated_platforms && i < n; i++) {
        char *p = kiln_arena_strdup(a, list[i]);
        r->platforms[r->n_platforms++] = p;
        if (emulated[i])
            r->emulated_platforms[r->n_emulated_platforms++] = p;
    }
}

/* Dockerfiles larger than this are refused (the RPC size limit is lower
 * anyway unless raised with --max-msg). */
#define PLAN_MAX_DOCKERFILE ((size_t)16 << 20)

static int m_plan(void *user, const kiln_req *req, kiln_reply *reply, kiln_arena *a,
                  kiln_error **err)
{
    const Kiln__V1__PlanRequest *q = req->plan;
    size_t len = q->dockerfile ? strlen(q->dockerfile) : 0;
    if (len == 0)
        return kiln_error_set(err, KILN_EINVAL, 0, "empty Dockerfile");
    if (len > PLAN_MAX_DOCKERFILE)
        return kiln_error_set(err, KILN_EINVAL, 0, "Dockerfile larger than %zu bytes",
                              PLAN_MAX_DOCKERFILE);
    bld_plan_opts o = {
        .target = q->target && *q->target ? q->target : NULL,
        .build_args = (const char *const *)q->build_args,
        .n_build_args = q->n_build_args,
        .platform = q->platform && *q->platform ? q->platform : NULL,
        .named_images = (const char *const *)q->named_images,
        .n_named_images = q->n_named_images,
    };
    bld_plan *plan = NULL;
    int r = bld_plan_parse(&plan, q->dockerfile, len,
                           q->filename && *q->filename ? q->filename : "Dockerfile", &o, err);
    if (r < 0)
        return r;
    cJSON *j = bld_plan_to_json(plan);
    char *s = j ? cJSON_Print(j) : NULL;
    cJSON_Delete(j);
    Kiln__V1__PlanReply *pr = kiln_arena_alloc(a, sizeof(*pr));
    if (s == NULL || pr == NULL) {
        cJSON_free(s);
        bld_plan_free(plan);
        return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
    }
    kiln__v1__plan_reply__init(pr);
    pr->plan_json = kiln_arena_strdup(a, s);
    cJSON_free(s);
    pr->warnings = kiln_arena_calloc(a, plan->warnings.n + 1, sizeof(char *));
    for (size_t i = 0; pr->warnings && i < plan->warnings.n; i++)
        pr->warnings[pr->n_warnings++] = kiln_arena_strdup(a, plan->warnings.v[i]);
    bld_plan_free(plan);
    reply->body_case = KILN__V1__REPLY__BODY_PLAN_REPLY;
    reply->plan_reply = pr;
    return 0;
}

static int m_build(void *user, const kiln_req *req, kiln_reply *reply, kiln_arena *a,
                   kiln_error **err)
{
    bld_server *b = user;
    const Kiln__V1__BuildRequest *q = req->build;
    bool paths = *q->context_dir != '\0';
    for (size_t i = 0; i < q->n_secrets; i++)
        paths = paths || *q->secrets[i]->path != '\0';
    /* Per connection: a client over ipc:// shares this host, one over
     * tcp:// or tls+tcp:// does not, whatever else we listen on. */
    bool local = kiln_rpc_request_is_local();
    if (!local && (*q->authfile || *q->cert_dir))
        return kiln_error_set(err, KILN_EPERM, 0,
                              "kiln-builder takes no paths on its host from clients reached over "
                              "tcp:// or tls+tcp://: --authfile and --cert-dir name files there "
                              "(the CLI sends the credentials it resolves itself; registry "
                              "certificates belong in the pusher's own "
                              "/etc/containers/certs.d)");
    if (q->n_credentials > 256)
        return kiln_error_set(err, KILN_EINVAL, 0, "more than 256 registry credentials");
    if (paths && !local)
        return kiln_error_set(err, KILN_EPRECOND, 0,
                              "kiln-builder takes no paths on its host from clients reached over "
                              "tcp:// or tls+tcp://: send the context and secrets (kiln build "
                              "--context-transfer=stream)");
    return bld_builds_accept(b->builds, req, reply, a, err);
}

static int m_cancel(void *user, const kiln_req *req, kiln_reply *reply, kiln_arena *a,
                    kiln_error **err)
{
    bld_server *b = user;
    bool was = false;
    int r = bld_builds_cancel(b->builds, req->cancel->job_id, &was, err);
    if (r < 0)
        return r;
    Kiln__V1__CancelReply *cr = kiln_arena_alloc(a, sizeof(*cr));
    if (cr == NULL)
        return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
    kiln__v1__cancel_reply__init(cr);
    cr->was_running = was;
    reply->body_case = KILN__V1__REPLY__BODY_CANCEL_REPLY;
    reply->cancel_reply = cr;
    return 0;
}

static int m_prune(void *user, const kiln_req *req, kiln_reply *reply, kiln_arena *a,
                   kiln_error **err)
{
    bld_server *b = user;
    if (req->prune->dry_run)
        return kiln_error_set(err, KILN_ENOTSUP, 0, "the builder's cache has no dry run");
    size_t removed = 0, contexts = 0;
    int r = bld_engine_prune(b->engine, req->prune->older_than_s, &removed, err);
    if (r < 0 ||
        (r = bld_contexts_prune(b->contexts, req->prune->older_than_s, &contexts, err)) < 0)
        return r;
    Kiln__V1__PruneReply *pr = kiln_arena_alloc(a, sizeof(*pr));
    if (pr == NULL)
        return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
    kiln__v1__prune_reply__init(pr);
    pr->steps_removed = removed;
    pr->contexts_removed = contexts;
    kiln_info("build", "pruned %zu cached step(s) unused for %llu s", removed,
              (unsigned long long)req->prune->older_than_s);
    reply->body_case = KILN__V1__REPLY__BODY_PRUNE_REPLY;
    reply->prune_reply = pr;
    return 0;
}

/* The chunk list of a request as the context module's structs (arena-owned). */
static bld_ctx_chunk *ctx_chunks(kiln_arena *a, Kiln__V1__ContextChunk **in, size_t n)
{
    bld_ctx_chunk *v = kiln_arena_calloc(a, n + 1, sizeof(*v));
    for (size_t i = 0; v && i < n; i++)
        v[i] = (bld_ctx_chunk){in[i]->digest, in[i]->size};
    return v;
}

static int m_context_check(void *user, const kiln_req *req, kiln_reply *reply, kiln_arena *a,
                           kiln_error **err)
{
    bld_server *b = user;
    const Kiln__V1__ContextCheckRequest *q = req->context_check;
    bld_ctx_chunk *chunks = ctx_chunks(a, q->chunks, q->n_chunks);
    Kiln__V1__ContextCheckReply *cr = kiln_arena_alloc(a, sizeof(*cr));
    uint32_t *missing = kiln_arena_calloc(a, q->n_chunks + 1, sizeof(*missing));
    if (chunks == NULL || cr == NULL || missing == NULL)
        return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
    kiln__v1__context_check_reply__init(cr);
    bool ready = false;
    size_t n_missing = 0;
    int r = bld_context_check(b->contexts, q->context_digest, chunks, q->n_chunks, &ready, missing,
                              &n_missing, err);
    if (r < 0)
        return r;
    cr->ready = ready;
    cr->missing = missing;
    cr->n_missing = n_missing;
    reply->body_case = KILN__V1__REPLY__BODY_CONTEXT_CHECK_REPLY;
    reply->context_check_reply = cr;
    return 0;
}

static int m_context_put(void *user, const kiln_req *req, kiln_reply *reply, kiln_arena *a,
                         kiln_error **err)
{
    bld_server *b = user;
    const Kiln__V1__ContextPutRequest *q = req->context_put;
    Kiln__V1__ContextPutReply *pr = kiln_arena_alloc(a, sizeof(*pr));
    if (pr == NULL)
        return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
    kiln__v1__context_put_reply__init(pr);
    bool existed = false;
    int r = bld_context_put(b->contexts, q->digest, q->data.data, q->data.len, &existed, err);
    if (r < 0)
        return r;
    pr->existed = existed;
    reply->body_case = KILN__V1__REPLY__BODY_CONTEXT_PUT_REPLY;
    reply->context_put_reply = pr;
    return 0;
}

static int m_ssh_poll(void *user, const kiln_req *req, kiln_reply *reply, kiln_arena *a,
                      kiln_error **err)
{
    (void)user;
    Kiln__V1__SshAgentPollReply *pr = kiln_arena_alloc(a, sizeof(*pr));
    if (pr == NULL)
        return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
    kiln__v1__ssh_agent_poll_reply__init(pr);
    int r = bld_ssh_poll(req->ssh_agent_poll, pr, a, err);
    if (r < 0)
        return r;
    reply->body_case = KILN__V1__REPLY__BODY_SSH_AGENT_POLL_REPLY;
    reply->ssh_agent_poll_reply = pr;
    return 0;
}

/* ContextPut is content-addressed and so idempotent by itself: it is not
 * flagged MUTATING, which would keep its request ids (and a reply) around
 * for every chunk. */
static const kiln_rpc_method methods[] = {
    {KILN__V1__REQUEST__BODY_PLAN, "Plan", m_plan, 0, NULL},
    {KILN__V1__REQUEST__BODY_PRUNE, "Prune", m_prune, KILN_RPC_MUTATING, NULL},
    {KILN__V1__REQUEST__BODY_BUILD, "Build", m_build, KILN_RPC_MUTATING, NULL},
    {KILN__V1__REQUEST__BODY_CANCEL, "Cancel", m_cancel, KILN_RPC_MUTATING, NULL},
    {KILN__V1__REQUEST__BODY_CONTEXT_CHECK, "ContextCheck", m_context_check, 0, NULL},
    {KILN__V1__REQUEST__BODY_CONTEXT_PUT, "ContextPut", m_context_put, 0, NULL},
    /* A long poll (up to 5 s) of kiln build --ssh; not MUTATING: replies it
     * carries again after a resend are ignored, and requests come again. */
    {KILN__V1__REQUEST__BODY_SSH_AGENT_POLL, "SshAgentPoll", m_ssh_poll, 0, NULL},
};

const kiln_rpc_method *bld_server_methods(bld_server *b, size_t *n)
{
    *n = sizeof(methods) / sizeof(methods[0]);
    return methods;
}

void bld_server_hooks(bld_server *b, kiln_service_hooks *out)
{
    *out = (kiln_service_hooks){.checks = checks,
                                .metrics = metrics,
                                .drain = drain,
                                .cancel = cancel,
                                .status = status,
                                .user = b};
}

void bld_server_attach(bld_server *b, kiln_service *svc)
{
    b->svc = svc;
    bld_builds_attach(b->builds, kiln_service_events(svc));
}
