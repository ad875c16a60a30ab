/* The engine's RPC boundary to kiln-pusher: Inspect (a base image's manifest
 * and config), Pull, Commit, Push.  Long work runs as pusher jobs, waited for
 * with the Wait RPC in a loop that also watches the build's cancel flag.
 * Protobuf types appear only in this file. */
#include "engine_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cleanup.h"
#include "events.h"

#define CALL_TIMEOUT_MS 30000
#define WAIT_SLICE_MS   1000
#define WAIT_GRACE_MS   4000

static int call_ms(eng_build *b, kiln_req *req, kiln_reply **out, int timeout_ms, kiln_error **err)
{
    char id[33];
    kiln_rpc_new_id(id);
    req->request_id = id;
    return kiln_rpc_call(b->e->pusher, req, out, timeout_ms, err);
}

static int call(eng_build *b, kiln_req *req, kiln_reply **out, kiln_error **err)
{
    return call_ms(b, req, out, CALL_TIMEOUT_MS, err);
}

int eng_pusher_inspect_any(eng_build *b, const char *ref, char digest[KILN_DIGEST_STRLEN + 1],
                           char **manifest_json, char **config_json, kiln_error **err)
{
    kiln_req req = KILN__V1__REQUEST__INIT;
    Kiln__V1__InspectRequest ir = KILN__V1__INSPECT_REQUEST__INIT;
    ir.ref = (char *)ref;
    req.body_case = KILN__V1__REQUEST__BODY_INSPECT;
    req.inspect = &ir;
    kiln_reply *r = NULL;
    *manifest_json = *config_json = NULL;
    int rc = call(b, &req, &r, err);
    if (rc < 0)
        return rc;
    const Kiln__V1__InspectReply *ins = r->inspect_reply;
    if (ins == NULL || ins->manifest_json == NULL) {
        kiln_rpc_reply_free(r);
        return kiln_error_set(err, KILN_EINTERNAL, 0, "inspect %s: empty reply", ref);
    }
    snprintf(digest, KILN_DIGEST_STRLEN + 1, "%s", ins->digest);
    bool index = ins->config_json == NULL || ins->config_json[0] == '\0';
    *manifest_json = strdup(ins->manifest_json);
    *config_json = index ? NULL : strdup(ins->config_json);
    kiln_rpc_reply_free(r);
    if (*manifest_json == NULL || (!index && *config_json == NULL)) {
        free(*manifest_json);
        free(*config_json);
        *manifest_json = *config_json = NULL;
        return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
    }
    return 0;
}

int eng_pusher_inspect(eng_build *b, const char *ref, char digest[KILN_DIGEST_STRLEN + 1],
                       char **manifest_json, char **config_json, kiln_error **err)
{
    int rc = eng_pusher_inspect_any(b, ref, digest, manifest_json, config_json, err);
    if (rc == 0 && *config_json == NULL) {
        free(*manifest_json);
        *manifest_json = NULL;
        return kiln_error_set(err, KILN_EINVAL, 0, "%s is not an image manifest for one platform",
                              ref);
    }
    return rc;
}

/* A Status call answered within a couple of seconds. */
static bool pusher_alive(eng_build *b)
{
    kiln_req req = KILN__V1__REQUEST__INIT;
    Kiln__V1__StatusRequest sr = KILN__V1__STATUS_REQUEST__INIT;
    req.body_case = KILN__V1__REQUEST__BODY_STATUS;
    req.status = &sr;
    kiln_reply *r = NULL;
    kiln_error *e = NULL;
    int rc = call_ms(b, &req, &r, WAIT_GRACE_MS / 2, &e);
    kiln_rpc_reply_free(r);
    kiln_error_free(&e);
    return rc == 0;
}

/* Waits for job's terminal event; 0 when it completed.  The completed event
 * is handed to done (may be NULL). */
static int wait_job(eng_build *b, const char *job, const char *what,
                    void (*done)(eng_build *, const Kiln__V1__JobCompleted *, void *), void *ud,
                    kiln_error **err)
{
    for (;;) {
        if (eng_canceled(b))
            return kiln_error_set(err, KILN_ECANCELED, 0, "%s: canceled", what);
        kiln_req req = KILN__V1__REQUEST__INIT;
        Kiln__V1__WaitRequest wr = KILN__V1__WAIT_REQUEST__INIT;
        wr.job_id = (char *)job;
        wr.timeout_ms = WAIT_SLICE_MS;
        req.body_case = KILN__V1__REQUEST__BODY_WAIT;
        req.wait = &wr;
        kiln_reply *r = NULL;
        /* Wait answers within its slice: no reply a few seconds later means
         * the pusher is gone (killed mid-commit) -- unless a Status call
         * still gets through, when it is only busy. */
        int rc = call_ms(b, &req, &r, WAIT_SLICE_MS + WAIT_GRACE_MS, err);
        if (rc < 0 && pusher_alive(b)) {
            kiln_error_free(err);
            continue;
        }
        if (rc < 0)
            return kiln_error_wrap(err, "%s: wait for job %s", what, job);
        const Kiln__V1__WaitReply *w = r->wait_reply;
        if (w == NULL || !w->finished || w->terminal == NULL) {
            kiln_rpc_reply_free(r);
            continue;
        }
        const Kiln__V1__Event *t = w->terminal;
        if (t->payload_case == KILN__V1__EVENT__PAYLOAD_COMPLETED) {
            if (done)
                done(b, t->completed, ud);
            kiln_rpc_reply_free(r);
            return 0;
        }
        int code = KILN_EINTERNAL;
        const char *msg = "job failed";
        if (t->payload_case == KILN__V1__EVENT__PAYLOAD_FAILED && t->failed->error) {
            code = kiln_code_from_wire(t->failed->error->code);
            if (t->failed->error->message)
                msg = t->failed->error->message;
        }
        size_t wl = strlen(what); /* the pusher's message may already name the job */
        bool named = strncmp(msg, what, wl) == 0 && msg[wl] == ':';
        rc = kiln_error_set(err, (kiln_code)code, 0, "%s%s%s", named ? "" : what, named ? "" : ": ",
                            msg);
        kiln_rpc_reply_free(r);
        return rc;
    }
}

static int start_job(eng_build *b, kiln_req *req, char job[KILN_JOB_ID_MAX + 1], kiln_error **err)
{
    kiln_reply *r = NULL;
    int rc = call(b, req, &r, err);
    if (rc < 0)
        return rc;
    if (r->job_accepted == NULL) {
        kiln_rpc_reply_free(r);
        return kiln_error_set(err, KILN_EINTERNAL, 0, "pusher did not accept the job");
    }
    snprintf(job, KILN_JOB_ID_MAX + 1, "%s", r->job_accepted->job_id);
    kiln_rpc_reply_free(r);
    return 0;
}

/* The build's registry options (strings borrowed from its spec). */
static void reg_options(eng_build *b, Kiln__V1__RegistryOptions *ro)
{
    ro->insecure = b->spec->registry_insecure;
    ro->creds = (char *)(b->spec->registry_creds ? b->spec->registry_creds : "");
    ro->authfile = (char *)(b->spec->registry_authfile ? b->spec->registry_authfile : "");
    ro->cert_dir = (char *)(b->spec->registry_cert_dir ? b->spec->registry_cert_dir : "");
    ro->credentials = (Kiln__V1__RegistryCredential **)b->spec->registry_credentials;
    ro->n_credentials = b->spec->n_registry_credentials;
}

/* The pulled manifest's digest, into the caller's buffer (ud). */
static void on_pull_done(eng_build *b, const Kiln__V1__JobCompleted *c, void *ud)
{
    (void)b;
    snprintf(ud, KILN_DIGEST_STRLEN + 1, "%s", c->digest ? c->digest : "");
}

int eng_pusher_pull(eng_build *b, const char *ref, const char *platform, bool tag_index,
                    char digest[KILN_DIGEST_STRLEN + 1], kiln_error **err)
{
    kiln_req req = KILN__V1__REQUEST__INIT;
    Kiln__V1__PullRequest pr = KILN__V1__PULL_REQUEST__INIT;
    Kiln__V1__RegistryOptions ro = KILN__V1__REGISTRY_OPTIONS__INIT;
    reg_options(b, &ro);
    pr.ref = (char *)ref;
    pr.platform = (char *)(platform ? platform : "");
    pr.registry = &ro;
    pr.tag_index = tag_index;
    req.body_case = KILN__V1__REQUEST__BODY_PULL;
    req.pull = &pr;
    char job[KILN_JOB_ID_MAX + 1];
    int rc = start_job(b, &req, job, err);
    if (rc < 0)
        return kiln_error_wrap(err, "pull %s", ref);
    char what[600];
    snprintf(what, sizeof(what), "pull %s", ref);
    if (digest)
        digest[0] = '\0';
    return wait_job(b, job, what, digest ? on_pull_done : NULL, digest, err);
}

/* ---- Commit ---- */

static char **json_strs(const cJSON *arr, size_t *n)
{
    *n = 0;
    if (!cJSON_IsArray(arr))
        return NULL;
    size_t cnt = (size_t)cJSON_GetArraySize(arr);
    char **v = calloc(cnt + 1, sizeof(char *));
    if (v == NULL)
        return NULL;
    const cJSON *it;
    cJSON_ArrayForEach(it, arr)
    {
        if (cJSON_IsString(it))
            v[(*n)++] = it->valuestring;
    }
    return v;
}

static char **json_keys(const cJSON *obj, size_t *n)
{
    *n = 0;
    if (!cJSON_IsObject(obj))
        return NULL;
    size_t cnt = (size_t)cJSON_GetArraySize(obj);
    char **v = calloc(cnt + 1, sizeof(char *));
    if (v == NULL)
        return NULL;
    const cJSON *it;
    cJSON_ArrayForEach(it, obj) v[(*n)++] = it->string;
    return v;
}

static const char *json_str(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsString(v) ? v->valuestring : "";
}

static int64_t json_i64(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsNumber(v) ? (int64_t)v->valuedouble : 0;
}

/* The new layers of a commit, for --cache-to. */
static void keep_committed(eng_build *b, const Kiln__V1__CommitResult *cr)
{
    free(b->committed);
    b->committed = NULL;
    b->n_committed = 0;
    if (cr == NULL || (b->committed = calloc(cr->n_layers + 1, sizeof(eng_layer_ref))) == NULL)
        return;
    for (size_t i = 0; i < cr->n_layers; i++) {
        const Kiln__V1__LayerResult *l = cr->layers[i];
        if (l->from_base)
            continue;
        eng_layer_ref *o = &b->committed[b->n_committed++];
        snprintf(o->digest, sizeof(o->digest), "%s", l->digest);
        snprintf(o->diff_id, sizeof(o->diff_id), "%s", l->diff_id);
        snprintf(o->media_type, sizeof(o->media_type), "%s", l->media_type);
        o->size = l->size;
    }
}

static void on_stage_commit_done(eng_build *b, const Kiln__V1__JobCompleted *c, void *ud)
{
    (void)ud;
    keep_committed(b, c->commit);
}

static void on_commit_done(eng_build *b, const Kiln__V1__JobCompleted *c, void *ud)
{
    (void)ud;
    snprintf(b->out->digest, sizeof(b->out->digest), "%s", c->digest ? c->digest : "");
    keep_committed(b, c->commit);
    if (c->commit) {
        b->out->n_layers = c->commit->n_layers;
        b->out->size = b->out->size_uncompressed = 0;
        bool all = true; /* a partial sum would understate the image */
        for (size_t i = 0; i < c->commit->n_layers; i++) {
            b->out->size += c->commit->layers[i]->size;
            b->out->size_uncompressed += c->commit->layers[i]->size_uncompressed;
            all = all && c->commit->layers[i]->size_uncompressed;
        }
        if (!all)
            b->out->size_uncompressed = 0;
    }
}

/* A commit request's image config and history; the arrays they point to
 * are owned here and freed by commit_pb_dispose. */
typedef struct commit_pb {
    Kiln__V1__ImageConfigSpec ic;
    Kiln__V1__HealthcheckSpec hc; /* ic.healthcheck points here when set */
    char **env, **entry, **cmd, **ports, **vols, **onb, **shell, **hct;
    Kiln__V1__ImageConfigSpec__LabelsEntry *le, **lp;
    Kiln__V1__HistorySpec *hs, **hp;
} commit_pb;

static void commit_pb_dispose(commit_pb *p)
{
    char **strvs[] = {p->env, p->entry, p->cmd, p->ports, p->vols, p->onb, p->shell, p->hct};
    for (size_t i = 0; i < sizeof(strvs) / sizeof(strvs[0]); i++)
        free(strvs[i]);
    free(p->le);
    free(p->lp);
    free(p->hs);
    free(p->hp);
}

/* The string labels of the JSON object lab into p->ic. */
static int labels_to_pb(commit_pb *p, const cJSON *lab, kiln_error **err)
{
    size_t nl = cJSON_IsObject(lab) ? (size_t)cJSON_GetArraySize(lab) : 0;
    p->le = calloc(nl + 1, sizeof(*p->le));
    p->lp = calloc(nl + 1, sizeof(*p->lp));
    if (p->le == NULL || p->lp == NULL)
        return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
    const cJSON *it;
    size_t k = 0;
    if (nl)
        cJSON_ArrayForEach(it, lab)
        {
            if (!cJSON_IsString(it))
                continue;
            kiln__v1__image_config_spec__labels_entry__init(&p->le[k]);
            p->le[k].key = it->string;
            p->le[k].value = it->valuestring;
            p->lp[k] = &p->le[k];
            k++;
        }
    p->ic.labels = p->lp;
    p->ic.n_labels = k;
    return 0;
}

/* p->ic from the image's JSON config cfg. */
static int config_to_pb(commit_pb *p, const cJSON *cfg, kiln_error **err)
{
    Kiln__V1__ImageConfigSpec *ic = &p->ic;
    ic->user = (char *)json_str(cfg, "User");
    ic->working_dir = (char *)json_str(cfg, "WorkingDir");
    ic->stop_signal = (char *)json_str(cfg, "StopSignal");
    ic->env = p->env = json_strs(cJSON_GetObjectItemCaseSensitive(cfg, "Env"), &ic->n_env);
    const cJSON *ep = cJSON_GetObjectItemCaseSensitive(cfg, "Entrypoint");
    ic->entrypoint = p->entry = json_strs(ep, &ic->n_entrypoint);
    ic->entrypoint_set = cJSON_IsArray(ep);
    const cJSON *cm = cJSON_GetObjectItemCaseSensitive(cfg, "Cmd");
    ic->cmd = p->cmd = json_strs(cm, &ic->n_cmd);
    ic->cmd_set = cJSON_IsArray(cm);
    ic->exposed_ports = p->ports =
        json_keys(cJSON_GetObjectItemCaseSensitive(cfg, "ExposedPorts"), &ic->n_exposed_ports);
    ic->volumes = p->vols =
        json_keys(cJSON_GetObjectItemCaseSensitive(cfg, "Volumes"), &ic->n_volumes);
    ic->on_build = p->onb =
        json_strs(cJSON_GetObjectItemCaseSensitive(cfg, "OnBuild"), &ic->n_on_build);
    ic->shell = p->shell = json_strs(cJSON_GetObjectItemCaseSensitive(cfg, "Shell"), &ic->n_shell);
    int rc = labels_to_pb(p, cJSON_GetObjectItemCaseSensitive(cfg, "Labels"), err);
    if (rc < 0)
        return rc;
    const cJSON *hcj = cJSON_GetObjectItemCaseSensitive(cfg, "Healthcheck");
    p->hct = json_strs(cJSON_GetObjectItemCaseSensitive(hcj, "Test"), &p->hc.n_test);
    if (p->hc.n_test > 0) {
        p->hc.test = p->hct;
        p->hc.interval_ns = json_i64(hcj, "Interval");
        p->hc.timeout_ns = json_i64(hcj, "Timeout");
        p->hc.start_period_ns = json_i64(hcj, "StartPeriod");
        p->hc.start_interval_ns = json_i64(hcj, "StartInterval");
        p->hc.retries = (int32_t)json_i64(hcj, "Retries");
        ic->healthcheck = &p->hc;
    }
    return 0;
}

/* p->hs / p->hp from the commit's history entries. */
static int history_to_pb(commit_pb *p, const eng_build *b, const eng_commit_desc *c,
                         kiln_error **err)
{
    p->hs = calloc(c->n_hist + 1, sizeof(*p->hs));
    p->hp = calloc(c->n_hist + 1, sizeof(*p->hp));
    if (p->hs == NULL || p->hp == NULL)
        return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
    for (size_t i = 0; i < c->n_hist; i++) {
        kiln__v1__history_spec__init(&p->hs[i]);
        p->hs[i].created_by = c->hist[i].created_by;
        p->hs[i].empty_layer = c->hist[i].empty_layer;
        /* With SOURCE_DATE_EPOCH the image's (clamped) time is used. */
        if (b->spec->source_date_epoch < 0)
            p->hs[i].created = c->hist[i].created;
        p->hp[i] = &p->hs[i];
    }
    return 0;
}

int eng_pusher_commit(eng_build *b, const eng_commit_desc *c, kiln_error **err)
{
    _cleanup_(commit_pb_dispose) commit_pb p = {.ic = KILN__V1__IMAGE_CONFIG_SPEC__INIT,
                                                .hc = KILN__V1__HEALTHCHECK_SPEC__INIT};
    int rc = config_to_pb(&p, c->config, err);
    if (rc == 0)
        rc = history_to_pb(&p, b, c, err);
    if (rc < 0)
        return rc;
    size_t nh = c->n_hist;
    Kiln__V1__CommitRequest cr = KILN__V1__COMMIT_REQUEST__INIT;
    cr.base_manifest = (char *)c->base_manifest;
    cr.layers = c->layers->v;
    cr.n_layers = c->layers->n;
    /* The pusher's pack cache knows a diff by its generation, not its path:
     * a pruned and rebuilt step reuses the path with new content. */
    if (c->layer_ids != NULL && c->layer_ids->n == c->layers->n) {
        cr.layer_ids = c->layer_ids->v;
        cr.n_layer_ids = c->layer_ids->n;
    }
    cr.config = &p.ic;
    cr.history = p.hp;
    cr.n_history = nh;
    cr.platform = (char *)(c->platform ? c->platform : "");
    cr.tags = c->untagged ? NULL : (char **)b->spec->tags;
    cr.n_tags = c->untagged ? 0 : b->spec->n_tags;
    cr.annotations = c->untagged ? NULL : (char **)b->spec->annotations;
    cr.n_annotations = c->untagged ? 0 : b->spec->n_annotations;
    cr.source_date_epoch = b->spec->source_date_epoch > 0 ? b->spec->source_date_epoch : 0;
    /* Without SOURCE_DATE_EPOCH, the image is as old as its newest step, so
     * an unchanged (fully cached) rebuild gives the same image digest. */
    for (size_t i = 0; b->spec->source_date_epoch < 0 && i < nh; i++)
        if (c->hist[i].created > cr.created)
            cr.created = c->hist[i].created;
    cr.author = (char *)(c->author ? c->author : "");
    kiln_req req = KILN__V1__REQUEST__INIT;
    req.body_case = KILN__V1__REQUEST__BODY_COMMIT;
    req.commit = &cr;
    char job[KILN_JOB_ID_MAX + 1];
    if ((rc = start_job(b, &req, job, err)) < 0)
        return kiln_error_wrap(err, "commit");
    return wait_job(b, job, "commit", c->untagged ? on_stage_commit_done : on_commit_done, NULL,
                    err);
}

int eng_pusher_push(eng_build *b, const char *tag, kiln_error **err)
{
    kiln_req req = KILN__V1__REQUEST__INIT;
    Kiln__V1__PushRequest pr = KILN__V1__PUSH_REQUEST__INIT;
    Kiln__V1__RegistryOptions ro = KILN__V1__REGISTRY_OPTIONS__INIT;
    ro.insecure = b->spec->registry_insecure;
    ro.creds = (char *)(b->spec->registry_creds ? b->spec->registry_creds : "");
    ro.authfile = (char *)(b->spec->registry_authfile ? b->spec->registry_authfile : "");
    ro.cert_dir = (char *)(b->spec->registry_cert_dir ? b->spec->registry_cert_dir : "");
    ro.credentials = (Kiln__V1__RegistryCredential **)b->spec->registry_credentials;
    ro.n_credentials = b->spec->n_registry_credentials;
    ro.format = (char *)(b->spec->push_format ? b->spec->push_format : "");
    pr.source = (char *)tag;
    pr.destination = "";
    pr.registry = &ro;
    req.body_case = KILN__V1__REQUEST__BODY_PUSH;
    req.push = &pr;
    char job[KILN_JOB_ID_MAX + 1];
    int rc = start_job(b, &req, job, err);
    if (rc < 0)
        return kiln_error_wrap(err, "push %s", tag);
    char what[600];
    snprintf(what, sizeof(what), "push %s", tag);
    return wait_job(b, job, what, NULL, NULL, err);
}

/* ---- the step cache shared through a registry ---- */

/* Imports run before the stages, when the build has no result digest yet:
 * the job's digest passes through it. */
static void on_records_done(eng_build *b, const Kiln__V1__JobCompleted *c, void *ud)
{
    (void)ud;
    snprintf(b->out->digest, sizeof(b->out->digest), "%s", c->digest ? c->digest : "");
}

static int cache_job(eng_build *b, kiln_req *req, const char *what,
                     void (*done)(eng_build *, const Kiln__V1__JobCompleted *, void *),
                     kiln_error **err)
{
    char job[KILN_JOB_ID_MAX + 1];
    int rc = start_job(b, req, job, err);
    if (rc < 0)
        return kiln_error_wrap(err, "%s", what);
    return wait_job(b, job, what, done, NULL, err);
}

int eng_pusher_cache_records(eng_build *b, const bld_cache_ref *ref,
                             char cfg[KILN_DIGEST_STRLEN + 1], kiln_error **err)
{
    kiln_req req = KILN__V1__REQUEST__INIT;
    Kiln__V1__CacheImportRequest q = KILN__V1__CACHE_IMPORT_REQUEST__INIT;
    Kiln__V1__RegistryOptions ro = KILN__V1__REGISTRY_OPTIONS__INIT;
    reg_options(b, &ro);
    q.ref = (char *)ref->ref;
    q.store = ref->store;
    q.registry = &ro;
    req.body_case = KILN__V1__REQUEST__BODY_CACHE_IMPORT;
    req.cache_import = &q;
    char what[600];
    snprintf(what, sizeof(what), "cache %s", ref->ref);
    b->out->digest[0] = '\0';
    int rc = cache_job(b, &req, what, on_records_done, err);
    snprintf(cfg, KILN_DIGEST_STRLEN + 1, "%s", b->out->digest);
    b->out->digest[0] = '\0';
    if (rc == 0 && !kiln_digest_valid(cfg))
        return kiln_error_set(err, KILN_EINTERNAL, 0, "%s: no config digest", what);
    return rc;
}

int eng_pusher_cache_blob(eng_build *b, const bld_cache_ref *ref, const eng_layer_ref *l,
                          kiln_error **err)
{
    kiln_req req = KILN__V1__REQUEST__INIT;
    Kiln__V1__CacheImportRequest q = KILN__V1__CACHE_IMPORT_REQUEST__INIT;
    Kiln__V1__RegistryOptions ro = KILN__V1__REGISTRY_OPTIONS__INIT;
    Kiln__V1__CacheRecord rec = KILN__V1__CACHE_RECORD__INIT;
    Kiln__V1__CacheRecord *recp = &rec;
    reg_options(b, &ro);
    rec.digest = (char *)l->digest;
    rec.media_type = (char *)l->media_type;
    rec.size = l->size;
    q.ref = (char *)ref->ref;
    q.store = ref->store;
    q.registry = &ro;
    q.blobs = &recp;
    q.n_blobs = 1;
    req.body_case = KILN__V1__REQUEST__BODY_CACHE_IMPORT;
    req.cache_import = &q;
    char what[600];
    snprintf(what, sizeof(what), "fetch %s from cache %s", l->digest, ref->ref);
    return cache_job(b, &req, what, NULL, err);
}

int eng_pusher_cache_bind(eng_build *b, const char *diff, const char *id, const eng_layer_ref *l,
                          kiln_error **err)
{
    kiln_req req = KILN__V1__REQUEST__INIT;
    Kiln__V1__CacheBindRequest q = KILN__V1__CACHE_BIND_REQUEST__INIT;
    q.layer = (char *)diff;
    q.layer_id = (char *)id;
    q.digest = (char *)l->digest;
    q.diff_id = (char *)l->diff_id;
    q.media_type = (char *)l->media_type;
    q.size = l->size;
    q.source_date_epoch = b->spec->source_date_epoch > 0 ? b->spec->source_date_epoch : 0;
    req.body_case = KILN__V1__REQUEST__BODY_CACHE_BIND;
    req.cache_bind = &q;
    kiln_reply *r = NULL;
    int rc = call(b, &req, &r, err);
    kiln_rpc_reply_free(r);
    return rc < 0 ? kiln_error_wrap(err, "cache bind") : 0;
}

int eng_pusher_cache_export(eng_build *b, const eng_cache_rec *recs, size_t n, kiln_error **err)
{
    _cleanup_free_ Kiln__V1__CacheRecord *rv = calloc(n + 1, sizeof(*rv));
    _cleanup_free_ Kiln__V1__CacheRecord **rp = calloc(n + 1, sizeof(*rp));
    if (rv == NULL || rp == NULL)
        return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
    for (size_t i = 0; i < n; i++) {
        kiln__v1__cache_record__init(&rv[i]);
        rv[i].key = (char *)recs[i].key;
        rv[i].created = recs[i].created;
        if (recs[i].layer) {
            rv[i].digest = (char *)recs[i].l.digest;
            rv[i].diff_id = (char *)recs[i].l.diff_id;
            rv[i].media_type = (char *)recs[i].l.media_type;
            rv[i].size = recs[i].l.size;
        }
        rp[i] = &rv[i];
    }
    kiln_req req = KILN__V1__REQUEST__INIT;
    Kiln__V1__CacheExportRequest q = KILN__V1__CACHE_EXPORT_REQUEST__INIT;
    Kiln__V1__RegistryOptions ro = KILN__V1__REGISTRY_OPTIONS__INIT;
    reg_options(b, &ro);
    q.ref = (char *)b->spec->cache_to->ref;
    q.store = b->spec->cache_to->store;
    q.registry = &ro;
    q.records = rp;
    q.n_records = n;
    req.body_case = KILN__V1__REQUEST__BODY_CACHE_EXPORT;
    req.cache_export = &q;
    char what[600];
    snprintf(what, sizeof(what), "cache export to %s", b->spec->cache_to->ref);
    return cache_job(b, &req, what, NULL, err);
}
