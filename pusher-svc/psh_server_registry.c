/* kiln-pusher's registry methods: Push, Pull (jobs with per-blob events) and
 * the manifest-list operations, over pusher-svc/registry.  Credentials that
 * arrive in a request live only in the request copy of the job and are never
 * logged: events and logs name registries and digests, not users. */
#include "cleanup.h"
#include "dockercfg.h"
#include "units.h"
#include "log.h"
#include "ref.h"
#include "psh_registry.h"
#include "psh_server_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The credentials entry of the request for host (canonical), if any. */
static bool request_cred(void *ud, const char *host, const char **user, const char **secret)
{
    const Kiln__V1__RegistryOptions *r = ud;
    char h[512];
    for (size_t i = 0; i < r->n_credentials; i++) {
        const Kiln__V1__RegistryCredential *c = r->credentials[i];
        if (c == NULL || c->registry == NULL || c->username == NULL || c->secret == NULL)
            continue;
        kiln_dockercfg_host(c->registry, h, sizeof(h));
        if (strcmp(h, host) == 0) {
            *user = c->username;
            *secret = c->secret;
            return true;
        }
    }
    return false;
}

/* Registry options from the request (strings borrowed from it).  Credentials
 * are what the request carries (creds, credentials, an ipc client's
 * authfile), else none: never the Docker config of our own environment. */
int psh_srv_reg_opts(psh_server *p, bool local, const Kiln__V1__RegistryOptions *r,
                     psh_registry_opts *o, kiln_error **err)
{
    psh_registry_opts_init(o);
    o->data_dir = psh_store_data_dir(p->store);
    o->cancel = &p->cancel;
    o->env_auth = false;
    if (r == NULL)
        return 0;
    if (r->n_credentials > 0) {
        o->cred_lookup = request_cred;
        o->cred_ud = (void *)r;
    }
    o->tls_verify = !r->insecure;
    o->cert_dir = str_set(r->cert_dir) ? r->cert_dir : NULL;
    o->authfile = str_set(r->authfile) ? r->authfile : NULL;
    /* Files on our host: only for local clients, and never Kiln's own. */
    int rc = 0;
    if (o->authfile)
        rc = psh_srv_host_path(p, local, "--authfile", o->authfile, false, err);
    if (rc == 0 && o->cert_dir)
        rc = psh_srv_host_path(p, local, "--cert-dir", o->cert_dir, false, err);
    if (rc < 0)
        return rc;
    o->creds = str_set(r->creds) ? r->creds : NULL;
    if (r->retry_set)
        o->max_retries = r->retry > 100 ? 100 : r->retry;
    o->retry_delay_ms = r->retry_delay_ms > 600000 ? 600000 : r->retry_delay_ms;
    if (o->creds && strchr(o->creds, ':') == NULL)
        return kiln_error_set(err, KILN_EINVAL, 0, "credentials must be USER:PASSWORD");
    if (r->n_credentials > 256)
        return kiln_error_set(err, KILN_EINVAL, 0, "more than 256 registry credentials");
    if (!str_set(r->format) || strcmp(r->format, "oci") == 0)
        o->format = PSH_FORMAT_AS_STORED;
    else if (strcmp(r->format, "v2s2") == 0)
        o->format = PSH_FORMAT_V2S2;
    else
        return kiln_error_set(err, KILN_EINVAL, 0, "unknown manifest format '%s' (oci, v2s2)",
                              r->format);
    return 0;
}

/* reg_opts for a job: transfers stop when the job is cancelled. */
int psh_srv_job_reg_opts(job_ctx *c, const Kiln__V1__RegistryOptions *r, psh_registry_opts *o,
                         kiln_error **err)
{
    int rr = psh_srv_reg_opts(c->p, c->local, r, o, err);
    o->cancel = &c->cancel;
    return rr;
}

static int check_ref(const char *what, const char *ref, kiln_error **err)
{
    kiln_ref r;
    if (!str_set(ref))
        return kiln_error_set(err, KILN_EINVAL, 0, "%s: missing reference", what);
    if (kiln_ref_parse(&r, ref, 0, err) < 0)
        return kiln_error_wrap(err, "%s", what);
    return 0;
}

/* ---- events ---- */

static void blob_event(job_ctx *c, Kiln__V1__BlobEvent__Kind kind, const char *digest,
                       uint64_t done, uint64_t total, const char *detail)
{
    Kiln__V1__BlobEvent b = KILN__V1__BLOB_EVENT__INIT;
    b.kind = kind;
    b.digest = (char *)(digest ? digest : "");
    b.done = done;
    b.total = total;
    b.detail = (char *)(detail ? detail : "");
    /* A finished layer blob carries its sizes as every layer event does;
     * the uncompressed one is known for layers this store packed. */
    if (kind == KILN__V1__BLOB_EVENT__KIND__DONE || kind == KILN__V1__BLOB_EVENT__KIND__SKIPPED ||
        kind == KILN__V1__BLOB_EVENT__KIND__MOUNTED) {
        b.size_compressed = total;
        b.size_uncompressed = digest ? psh_store_tar_size(c->p->store, digest) : 0;
    }
    kiln_event e = KILN__V1__EVENT__INIT;
    e.payload_case = KILN__V1__EVENT__PAYLOAD_BLOB;
    e.blob = &b;
    kiln_job_emit(c->job, &e, NULL);
}

static void ev_started(void *ud, const char *d, uint64_t size)
{
    blob_event(ud, KILN__V1__BLOB_EVENT__KIND__STARTED, d, 0, size, NULL);
}
static void ev_progress(void *ud, const char *d, uint64_t done, uint64_t total)
{
    blob_event(ud, KILN__V1__BLOB_EVENT__KIND__PROGRESS, d, done, total, NULL);
}
static void ev_skipped(void *ud, const char *d, uint64_t size)
{
    blob_event(ud, KILN__V1__BLOB_EVENT__KIND__SKIPPED, d, size, size, NULL);
}
static void ev_mounted(void *ud, const char *d, const char *from)
{
    blob_event(ud, KILN__V1__BLOB_EVENT__KIND__MOUNTED, d, 0, 0, from);
}
static void ev_retried(void *ud, const char *what, const char *why)
{
    blob_event(ud, KILN__V1__BLOB_EVENT__KIND__RETRIED, what, 0, 0, why);
}
static void ev_done(void *ud, const char *d, uint64_t size)
{
    blob_event(ud, KILN__V1__BLOB_EVENT__KIND__DONE, d, size, size, NULL);
}
static void ev_manifest(void *ud, const char *digest, const char *ref)
{
    job_ctx *c = ud;
    Kiln__V1__ManifestPushed m = KILN__V1__MANIFEST_PUSHED__INIT;
    m.digest = (char *)digest;
    m.ref = (char *)(ref ? ref : "");
    kiln_event e = KILN__V1__EVENT__INIT;
    e.payload_case = KILN__V1__EVENT__PAYLOAD_MANIFEST_PUSHED;
    e.manifest_pushed = &m;
    kiln_job_emit(c->job, &e, NULL);
}

psh_reg_events psh_srv_job_events(job_ctx *c)
{
    return (psh_reg_events){ev_started, ev_progress, ev_skipped,  ev_mounted,
                            ev_retried, ev_done,     ev_manifest, c};
}

/* ---- push ---- */

/* "3 layer(s) of 2.1 MB compressed / 5.0 MB, " for an image ("" for an
 * index or when it cannot be read), as every layer size is shown. */
static void layers_text(psh_store *s, const char *ref, char *out, size_t cap)
{
    psh_inspect in = {0};
    out[0] = '\0';
    if (psh_store_inspect(s, ref, &in, NULL) < 0)
        return;
    char size[KILN_LAYER_SIZE_STRLEN];
    kiln_format_layer_size(size, sizeof(size), in.layers_size, in.layers_tar_size);
    if (in.n_layers > 0)
        snprintf(out, cap, "%zu layer(s) of %s, ", in.n_layers, size);
    psh_inspect_dispose(&in);
}

static void finish_push(job_ctx *c, const psh_push_result *res, const char *src, const char *dest)
{
    psh_server *p = c->p;
    pthread_mutex_lock(&p->mu);
    p->pushes++;
    p->blobs_uploaded += res->blobs_uploaded;
    p->blobs_skipped += res->blobs_skipped;
    p->blobs_mounted += res->blobs_mounted;
    p->retries += res->retries;
    p->bytes_pushed += res->bytes_sent;
    p->bytes_push_resumed += res->bytes_resumed;
    pthread_mutex_unlock(&p->mu);
    char summary[640], layers[128];
    layers_text(p->store, src, layers, sizeof(layers));
    snprintf(summary, sizeof(summary),
             "pushed %s: %s%u blob(s) uploaded, %u skipped, %u mounted, %.1f MB sent, %u retries, "
             "%.2fs",
             dest, layers, res->blobs_uploaded, res->blobs_skipped, res->blobs_mounted,
             (double)res->bytes_sent / 1e6, res->retries, (double)(kiln_now_ms() - c->t0) / 1000.0);
    kiln_info("registry", "job %s: %s (%s)", kiln_job_id(c->job), summary, res->manifest.digest);
    kiln_job_complete(c->job, summary, res->manifest.digest, NULL);
}

static void run_push(void *arg)
{
    job_ctx *c = arg;
    const Kiln__V1__PushRequest *q = c->req->push;
    kiln_error *err = NULL;
    psh_registry_opts o;
    psh_push_result res = {0};
    psh_reg_events ev = psh_srv_job_events(c);
    const char *dest = str_set(q->destination) ? q->destination : q->source;
    if (psh_srv_job_reg_opts(c, q->registry, &o, &err) < 0 ||
        psh_push(c->p->store, q->source, dest, &o, &ev, &res, &err) < 0)
        psh_srv_job_failed(c, &err, "push");
    else
        finish_push(c, &res, q->source, dest);
    psh_srv_job_free(c);
}

static int m_push(void *user, const kiln_req *req, kiln_reply *reply, kiln_arena *a,
                  kiln_error **err)
{
    psh_server *p = user;
    const Kiln__V1__PushRequest *q = req->push;
    psh_registry_opts o;
    if (check_ref("push source", q->source, err) < 0 ||
        (str_set(q->destination) && check_ref("push destination", q->destination, err) < 0) ||
        psh_srv_reg_opts(p, kiln_rpc_request_is_local(), q->registry, &o, err) < 0)
        return (*err)->code;
    psh_descriptor d;
    int r = psh_store_resolve(p->store, q->source, &d, err);
    if (r < 0)
        return r;
    char desc[600];
    snprintf(desc, sizeof(desc), "push %s to %s", q->source,
             str_set(q->destination) ? q->destination : q->source);
    return psh_srv_accept_job(p, req, "push", desc, run_push, reply, a, err);
}

/* ---- pull ---- */

static void run_pull(void *arg)
{
    job_ctx *c = arg;
    const Kiln__V1__PullRequest *q = c->req->pull;
    kiln_error *err = NULL;
    psh_registry_opts o;
    psh_pull_result res = {0};
    psh_reg_events ev = psh_srv_job_events(c);
    int rr = psh_srv_job_reg_opts(c, q->registry, &o, &err);
    o.tag_index = q->tag_index;
    if (rr < 0 || psh_pull(c->p->store, q->ref, str_set(q->platform) ? q->platform : NULL, &o, &ev,
                           &res, &err) < 0) {
        psh_srv_job_failed(c, &err, "pull");
        psh_srv_job_free(c);
        return;
    }
    pthread_mutex_lock(&c->p->mu);
    c->p->pulls++;
    c->p->bytes_pulled += res.bytes_fetched;
    c->p->bytes_pull_resumed += res.bytes_resumed;
    pthread_mutex_unlock(&c->p->mu);
    char summary[512];
    snprintf(summary, sizeof(summary),
             "pulled %s (%s/%s%s%s): %u blob(s) fetched (%u resumed), %u already present, "
             "%.1f MB, %.2fs",
             q->ref, res.os, res.architecture, res.variant[0] ? "/" : "", res.variant,
             res.blobs_fetched, res.blobs_resumed, res.blobs_present,
             (double)res.bytes_fetched / 1e6, (double)(kiln_now_ms() - c->t0) / 1000.0);
    kiln_info("registry", "job %s: %s (%s)", kiln_job_id(c->job), summary, res.manifest.digest);
    kiln_job_complete(c->job, summary, res.manifest.digest, NULL);
    psh_srv_job_free(c);
}

static int m_pull(void *user, const kiln_req *req, kiln_reply *reply, kiln_arena *a,
                  kiln_error **err)
{
    psh_server *p = user;
    const Kiln__V1__PullRequest *q = req->pull;
    psh_registry_opts o;
    if (check_ref("pull", q->ref, err) < 0 ||
        psh_srv_reg_opts(p, kiln_rpc_request_is_local(), q->registry, &o, err) < 0)
        return (*err)->code;
    if (str_set(q->platform)) {
        char buf[128];
        psh_platform pl;
        if (psh_srv_parse_platform(p, q->platform, buf, sizeof(buf), &pl, err) < 0)
            return KILN_EINVAL;
    }
    char desc[600];
    snprintf(desc, sizeof(desc), "pull %s", q->ref);
    return psh_srv_accept_job(p, req, "pull", desc, run_pull, reply, a, err);
}

/* ---- manifest lists ---- */

static Kiln__V1__ManifestReply *manifest_reply(psh_server *p, const char *list, kiln_reply *reply,
                                               kiln_arena *a, kiln_error **err)
{
    Kiln__V1__ManifestReply *b =
        NEW_BODY(a, Kiln__V1__ManifestReply, kiln__v1__manifest_reply__init);
    if (b == NULL) {
        kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
        return NULL;
    }
    psh_descriptor d;
    if (psh_store_resolve(p->store, list, &d, err) < 0)
        return NULL;
    b->digest = kiln_arena_strdup(a, d.digest);
    reply->body_case = KILN__V1__REPLY__BODY_MANIFEST_REPLY;
    reply->manifest_reply = b;
    return b;
}

static int m_manifest_create(void *user, const kiln_req *req, kiln_reply *reply, kiln_arena *a,
                             kiln_error **err)
{
    psh_server *p = user;
    const char *list = req->manifest_create->list;
    if (check_ref("manifest list", list, err) < 0)
        return (*err)->code;
    int r = psh_manifest_create(p->store, list, err);
    if (r < 0)
        return r;
    return manifest_reply(p, list, reply, a, err) ? 0 : (*err)->code;
}

static int m_manifest_add(void *user, const kiln_req *req, kiln_reply *reply, kiln_arena *a,
                          kiln_error **err)
{
    psh_server *p = user;
    const Kiln__V1__ManifestAddRequest *q = req->manifest_add;
    psh_registry_opts o;
    if (check_ref("manifest list", q->list, err) < 0 || check_ref("image", q->image, err) < 0 ||
        psh_srv_reg_opts(p, kiln_rpc_request_is_local(), q->registry, &o, err) < 0)
        return (*err)->code;
    psh_descriptor added;
    int r = psh_manifest_add(p->store, q->list, q->image, &o, &added, err);
    if (r < 0)
        return r;
    Kiln__V1__ManifestReply *b = manifest_reply(p, q->list, reply, a, err);
    if (b == NULL)
        return (*err)->code;
    b->added = kiln_arena_strdup(a, added.digest);
    return 0;
}

static int m_manifest_annotate(void *user, const kiln_req *req, kiln_reply *reply, kiln_arena *a,
                               kiln_error **err)
{
    psh_server *p = user;
    const Kiln__V1__ManifestAnnotateRequest *q = req->manifest_annotate;
    if (check_ref("manifest list", q->list, err) < 0)
        return (*err)->code;
    if (!str_set(q->digest))
        return kiln_error_set(err, KILN_EINVAL, 0, "annotate: which entry (digest or image)?");
    char digest[KILN_DIGEST_STRLEN + 1];
    if (kiln_digest_valid(q->digest)) {
        snprintf(digest, sizeof(digest), "%s", q->digest);
    } else {
        psh_descriptor d;
        int r = psh_store_resolve(p->store, q->digest, &d, err);
        if (r < 0)
            return kiln_error_wrap(err, "annotate: entry");
        snprintf(digest, sizeof(digest), "%s", d.digest);
    }
    for (size_t i = 0; i < q->n_annotations; i++)
        if (strchr(q->annotations[i], '=') == NULL || q->annotations[i][0] == '=')
            return kiln_error_set(err, KILN_EINVAL, 0, "annotation '%s' is not key=value",
                                  q->annotations[i]);
    int r = psh_manifest_annotate(p->store, q->list, digest, str_set(q->os) ? q->os : NULL,
                                  str_set(q->architecture) ? q->architecture : NULL,
                                  q->variant && *q->variant ? q->variant : NULL,
                                  (const char *const *)q->annotations, q->n_annotations, err);
    if (r < 0)
        return r;
    return manifest_reply(p, q->list, reply, a, err) ? 0 : (*err)->code;
}

static int m_manifest_inspect(void *user, const kiln_req *req, kiln_reply *reply, kiln_arena *a,
                              kiln_error **err)
{
    psh_server *p = user;
    const char *list = req->manifest_inspect->list;
    if (!str_set(list))
        return kiln_error_set(err, KILN_EINVAL, 0, "inspect: missing manifest list");
    _cleanup_free_ char *json = NULL;
    int r = psh_manifest_inspect(p->store, list, &json, err);
    if (r < 0)
        return r;
    Kiln__V1__ManifestReply *b = manifest_reply(p, list, reply, a, err);
    if (b == NULL)
        return (*err)->code;
    b->index_json = kiln_arena_strdup(a, json);
    return 0;
}

static void run_manifest_push(void *arg)
{
    job_ctx *c = arg;
    const Kiln__V1__ManifestPushRequest *q = c->req->manifest_push;
    kiln_error *err = NULL;
    psh_registry_opts o;
    psh_push_result res = {0};
    psh_reg_events ev = psh_srv_job_events(c);
    const char *dest = str_set(q->destination) ? q->destination : q->list;
    if (psh_srv_job_reg_opts(c, q->registry, &o, &err) < 0 ||
        psh_manifest_push(c->p->store, q->list, dest, &o, &ev, &res, &err) < 0)
        psh_srv_job_failed(c, &err, "manifest push");
    else
        finish_push(c, &res, q->list, dest);
    psh_srv_job_free(c);
}

static int m_manifest_push(void *user, const kiln_req *req, kiln_reply *reply, kiln_arena *a,
                           kiln_error **err)
{
    psh_server *p = user;
    const Kiln__V1__ManifestPushRequest *q = req->manifest_push;
    psh_registry_opts o;
    if (check_ref("manifest list", q->list, err) < 0 ||
        (str_set(q->destination) && check_ref("destination", q->destination, err) < 0) ||
        psh_srv_reg_opts(p, kiln_rpc_request_is_local(), q->registry, &o, err) < 0)
        return (*err)->code;
    psh_descriptor d;
    int r = psh_store_resolve(p->store, q->list, &d, err);
    if (r < 0)
        return r;
    char desc[600];
    snprintf(desc, sizeof(desc), "push manifest list %s to %s", q->list,
             str_set(q->destination) ? q->destination : q->list);
    return psh_srv_accept_job(p, req, "push", desc, run_manifest_push, reply, a, err);
}

static int m_login_check(void *user, const kiln_req *req, kiln_reply *reply, kiln_arena *a,
                         kiln_error **err)
{
    psh_server *p = user;
    const Kiln__V1__LoginCheckRequest *q = req->login_check;
    psh_registry_opts o;
    if (!str_set(q->registry))
        return kiln_error_set(err, KILN_EINVAL, 0, "login: missing registry");
    if (psh_srv_reg_opts(p, kiln_rpc_request_is_local(), q->registry_options, &o, err) < 0 ||
        psh_registry_login_check(p->store, q->registry, &o, err) < 0)
        return (*err)->code;
    Kiln__V1__LoginCheckReply *b =
        NEW_BODY(a, Kiln__V1__LoginCheckReply, kiln__v1__login_check_reply__init);
    if (b == NULL)
        return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
    kiln_info("registry", "login check for %s: accepted", q->registry);
    reply->body_case = KILN__V1__REPLY__BODY_LOGIN_CHECK_REPLY;
    reply->login_check_reply = b;
    return 0;
}

const kiln_rpc_method psh_registry_methods[] = {
    {KILN__V1__REQUEST__BODY_PUSH, "Push", m_push, KILN_RPC_MUTATING, NULL},
    {KILN__V1__REQUEST__BODY_PULL, "Pull", m_pull, KILN_RPC_MUTATING, NULL},
    {KILN__V1__REQUEST__BODY_MANIFEST_CREATE, "ManifestCreate", m_manifest_create,
     KILN_RPC_MUTATING, NULL},
    {KILN__V1__REQUEST__BODY_MANIFEST_ADD, "ManifestAdd", m_manifest_add, KILN_RPC_MUTATING, NULL},
    {KILN__V1__REQUEST__BODY_LOGIN_CHECK, "LoginCheck", m_login_check, 0, NULL},
    {KILN__V1__REQUEST__BODY_MANIFEST_ANNOTATE, "ManifestAnnotate", m_manifest_annotate,
     KILN_RPC_MUTATING, NULL},
    {KILN__V1__REQUEST__BODY_MANIFEST_INSPECT, "ManifestInspect", m_manifest_inspect, 0, NULL},
    {KILN__V1__REQUEST__BODY_MANIFEST_PUSH, "ManifestPush", m_manifest_push, KILN_RPC_MUTATING,
     NULL},
};
const size_t psh_n_registry_methods =
    sizeof(psh_registry_methods) / sizeof(psh_registry_methods[0]);
