/* kiln-pusher core: the RPC methods over the image store (pusher-svc/store)
 * and layer packing (pusher-svc/pack).  Generated protobuf types stop here:
 * requests are translated into the store's own structs.
 *
 * Quick operations (Tag, ListImages, Inspect, Remove, Prune, Export) answer
 * directly.  Import and Commit can take minutes, so they are accepted at once
 * as jobs whose progress and result arrive as events on "push.<job>". */
#include "psh_server.h"
#include "psh_server_internal.h"
#include "cleanup.h"
#include "fs.h"
#include "units.h"
#include "jobs.h"
#include "log.h"
#include "platform.h"
#include "psh_commit.h"
#include "ref.h"
#include "psh_store.h"
#include "psh_transfer.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <time.h>

#define MAX_CONCURRENT_JOBS 4
#define JOB_GRACE_MS        20000

/* ---- helpers ---- */

/* "os/arch[/variant]" normalised into buf; "" gives the host. */
int psh_srv_parse_platform(psh_server *p, const char *s, char *buf, size_t cap, psh_platform *out,
                           kiln_error **err)
{
    (void)p;
    kiln_platform pl = *kiln_platform_host();
    if (s != NULL && *s != '\0' && kiln_platform_parse(&pl, s, NULL, err) < 0)
        return KILN_EINVAL;
    size_t no = strlen(pl.os) + 1, na = strlen(pl.arch) + 1, nv = strlen(pl.variant) + 1;
    if (no + na + nv > cap)
        return kiln_error_set(err, KILN_EINVAL, 0, "platform \"%.100s\" is too long", s);
    memcpy(buf, pl.os, no);
    memcpy(buf + no, pl.arch, na);
    memcpy(buf + no + na, pl.variant, nv);
    *out = (psh_platform){buf, buf + no, nv > 1 ? buf + no + na : NULL};
    return 0;
}

/* ---- paths clients name on our host ---- */

/* True when path is dir or lies below it (both resolved). */
static bool path_within(const char *path, const char *dir)
{
    size_t n = strlen(dir);
    return strncmp(path, dir, n) == 0 && (path[n] == '\0' || path[n] == '/' || n == 1);
}

int psh_srv_host_path(psh_server *p, bool local, const char *what, const char *path, bool create,
                      kiln_error **err)
{
    if (!local)
        return kiln_error_set(err, KILN_EPERM, 0,
                              "kiln-pusher takes no paths on its host from clients reached over "
                              "tcp:// or tls+tcp:// (%s %.200s)%s",
                              what, path,
                              strcmp(what, "--authfile") == 0
                                  ? ": the kiln CLI reads --authfile on the client and sends the "
                                    "credentials it holds"
                              : strcmp(what, "--cert-dir") == 0
                                  ? ": registry CAs and client certificates belong in the "
                                    "pusher's own /etc/containers/certs.d"
                                  : ": the CLI streams import sources and export results "
                                    "(--transfer=stream)");
    if (path == NULL || path[0] != '/')
        return kiln_error_set(err, KILN_EINVAL, 0, "%s '%s' must be an absolute path", what,
                              path ? path : "");
    /* A new file or dir: its parent must exist; the name itself is plain. */
    _cleanup_free_ char *copy = strdup(path);
    if (copy == NULL)
        return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
    const char *name = NULL;
    if (create) {
        char *slash = strrchr(copy, '/');
        while (slash && slash != copy && slash[1] == '\0') { /* trailing slashes */
            *slash = '\0';
            slash = strrchr(copy, '/');
        }
        name = slash ? slash + 1 : copy;
        if (*name == '\0' || strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
            return kiln_error_set(err, KILN_EINVAL, 0, "%s '%s' names no file", what, path);
        if (slash == copy)
            copy[1] = '\0', name = path + 1;
        else
            *slash = '\0';
    }
    _cleanup_free_ char *real = realpath(copy, NULL);
    if (real == NULL)
        return kiln_error_set(err, kiln_code_from_errno(errno), errno, "%s %s", what, copy);
    _cleanup_free_ char *full = NULL;
    if (name && asprintf(&full, "%s%s%s", real, strcmp(real, "/") ? "/" : "", name) < 0)
        return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
    const char *res = full ? full : real;
    const char *data = psh_store_data_dir(p->store);
    /* Kiln's own state (the store, snapshots, sandbox, build contexts and
     * secrets, event logs) is never an import source or an export target;
     * nor is a directory holding it. */
    if (path_within(res, data) || (!create && path_within(data, res)))
        return kiln_error_set(err, KILN_EPERM, 0,
                              "%s %s resolves to %s: %s Kiln's data dir %s, which clients may "
                              "not read or write",
                              what, path, res, path_within(res, data) ? "inside" : "holding", data);
    return 0;
}

/* ---- quick methods ---- */

static int m_tag(void *user, const kiln_req *req, kiln_reply *reply, kiln_arena *a,
                 kiln_error **err)
{
    psh_server *p = user;
    const Kiln__V1__TagRequest *q = req->tag;
    if (!str_set(q->source) || !str_set(q->target))
        return kiln_error_set(err, KILN_EINVAL, 0, "tag needs a source and a target");
    int r = psh_store_tag(p->store, q->source, q->target, err);
    if (r < 0)
        return r;
    psh_descriptor d;
    if ((r = psh_store_resolve(p->store, q->target, &d, err)) < 0)
        return r;
    Kiln__V1__TagReply *b = NEW_BODY(a, Kiln__V1__TagReply, kiln__v1__tag_reply__init);
    if (b == NULL)
        return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
    b->digest = kiln_arena_strdup(a, d.digest);
    kiln_info("store", "tagged %s as %s (%s)", q->source, q->target, d.digest);
    reply->body_case = KILN__V1__REPLY__BODY_TAG_REPLY;
    reply->tag_reply = b;
    return 0;
}

static int m_list(void *user, const kiln_req *req, kiln_reply *reply, kiln_arena *a,
                  kiln_error **err)
{
    psh_server *p = user;
    psh_image_list l = {0};
    int r = psh_store_list(p->store, &l, err);
    if (r == 0 && req->list_images->untagged)
        r = psh_store_list_untagged(p->store, &l, err);
    if (r < 0) {
        psh_image_list_dispose(&l);
        return r;
    }
    Kiln__V1__ListImagesReply *b =
        NEW_BODY(a, Kiln__V1__ListImagesReply, kiln__v1__list_images_reply__init);
    Kiln__V1__ImageInfo **items = kiln_arena_calloc(a, l.n ? l.n : 1, sizeof(*items));
    if (b == NULL || items == NULL) {
        psh_image_list_dispose(&l);
        return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
    }
    for (size_t i = 0; i < l.n; i++) {
        const psh_image_info *in = &l.items[i];
        Kiln__V1__ImageInfo *o = NEW_BODY(a, Kiln__V1__ImageInfo, kiln__v1__image_info__init);
        if (o == NULL)
            break;
        o->ref = kiln_arena_strdup(a, in->ref ? in->ref : "");
        o->digest = kiln_arena_strdup(a, in->manifest.digest);
        o->media_type = kiln_arena_strdup(a, in->manifest.media_type);
        o->size = in->size;
        o->created = in->created;
        o->os = kiln_arena_strdup(a, in->os);
        o->architecture = kiln_arena_strdup(a, in->architecture);
        o->variant = kiln_arena_strdup(a, in->variant);
        items[b->n_images++] = o;
    }
    b->images = items;
    psh_image_list_dispose(&l);
    reply->body_case = KILN__V1__REPLY__BODY_LIST_IMAGES_REPLY;
    reply->list_images_reply = b;
    return 0;
}

static int m_inspect(void *user, const kiln_req *req, kiln_reply *reply, kiln_arena *a,
                     kiln_error **err)
{
    psh_server *p = user;
    if (!str_set(req->inspect->ref))
        return kiln_error_set(err, KILN_EINVAL, 0, "inspect needs a reference");
    psh_inspect in = {0};
    int r = psh_store_inspect(p->store, req->inspect->ref, &in, err);
    if (r < 0)
        return r;
    Kiln__V1__InspectReply *b = NEW_BODY(a, Kiln__V1__InspectReply, kiln__v1__inspect_reply__init);
    if (b == NULL) {
        psh_inspect_dispose(&in);
        return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
    }
    b->digest = kiln_arena_strdup(a, in.manifest.digest);
    b->media_type = kiln_arena_strdup(a, in.manifest.media_type);
    b->manifest_json = kiln_arena_strdup(a, in.manifest_json ? in.manifest_json : "");
    b->config_json = kiln_arena_strdup(a, in.config_json ? in.config_json : "");
    b->layer_sizes_uncompressed = kiln_arena_alloc(a, (in.n_layers + 1) * sizeof(uint64_t));
    for (size_t i = 0; b->layer_sizes_uncompressed && i < in.n_layers; i++)
        b->layer_sizes_uncompressed[b->n_layer_sizes_uncompressed++] = in.layer_tar_sizes[i];
    psh_inspect_dispose(&in);
    reply->body_case = KILN__V1__REPLY__BODY_INSPECT_REPLY;
    reply->inspect_reply = b;
    return 0;
}

static int m_remove(void *user, const kiln_req *req, kiln_reply *reply, kiln_arena *a,
                    kiln_error **err)
{
    psh_server *p = user;
    const char *ref = req->remove->ref;
    if (!str_set(ref))
        return kiln_error_set(err, KILN_EINVAL, 0, "remove needs a reference");
    psh_descriptor d;
    int r = psh_store_resolve(p->store, ref, &d, err);
    if (r < 0 || (r = psh_store_remove(p->store, ref, err)) < 0)
        return r;
    Kiln__V1__RemoveReply *b = NEW_BODY(a, Kiln__V1__RemoveReply, kiln__v1__remove_reply__init);
    if (b == NULL)
        return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
    b->digest = kiln_arena_strdup(a, d.digest);
    kiln_info("store", "removed %s (%s)", ref, d.digest);
    reply->body_case = KILN__V1__REPLY__BODY_REMOVE_REPLY;
    reply->remove_reply = b;
    return 0;
}

static int m_prune(void *user, const kiln_req *req, kiln_reply *reply, kiln_arena *a,
                   kiln_error **err)
{
    psh_server *p = user;
    psh_gc_opts o;
    psh_gc_opts_init(&o);
    o.dry_run = req->prune->dry_run;
    psh_gc_result res = {0};
    int r = psh_store_gc(p->store, &o, &res, err);
    if (r < 0)
        return r;
    if (!o.dry_run)
        res.tmps_removed += psh_srv_transfer_prune(p);
    Kiln__V1__PruneReply *b = NEW_BODY(a, Kiln__V1__PruneReply, kiln__v1__prune_reply__init);
    if (b == NULL)
        return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
    b->blobs_removed = res.blobs_removed;
    b->bytes_freed = res.bytes_freed;
    b->temps_removed = res.tmps_removed;
    kiln_info("store", "prune%s: %llu blobs, %llu bytes, %llu temp files",
              o.dry_run ? " (dry run)" : "", (unsigned long long)res.blobs_removed,
              (unsigned long long)res.bytes_freed, (unsigned long long)res.tmps_removed);
    reply->body_case = KILN__V1__REPLY__BODY_PRUNE_REPLY;
    reply->prune_reply = b;
    return 0;
}

/* An export the client reads with ExportRead and writes on its side. */
static int export_stream(psh_server *p, const Kiln__V1__ExportRequest *q, kiln_reply *reply,
                         kiln_arena *a, kiln_error **err)
{
    if (!str_set(q->ref))
        return kiln_error_set(err, KILN_EINVAL, 0, "export needs a reference");
    if (str_set(q->target))
        return kiln_error_set(err, KILN_EINVAL, 0, "export: a target and streaming are exclusive");
    psh_descriptor d;
    int r = psh_store_resolve(p->store, q->ref, &d, err);
    Kiln__V1__ExportReply *b = NEW_BODY(a, Kiln__V1__ExportReply, kiln__v1__export_reply__init);
    if (r == 0 && b == NULL)
        r = kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
    if (r == 0)
        r = psh_srv_export_stream(p, q->ref, b, a, err);
    if (r < 0)
        return r;
    b->digest = kiln_arena_strdup(a, d.digest);
    b->path = "";
    kiln_info("store", "exported %s (%s) as a stream of %llu bytes", q->ref, d.digest,
              (unsigned long long)b->stream_size);
    reply->body_case = KILN__V1__REPLY__BODY_EXPORT_REPLY;
    reply->export_reply = b;
    return 0;
}

static int m_export(void *user, const kiln_req *req, kiln_reply *reply, kiln_arena *a,
                    kiln_error **err)
{
    psh_server *p = user;
    const Kiln__V1__ExportRequest *q = req->export;
    if (q->stream)
        return export_stream(p, q, reply, a, err);
    if (!str_set(q->ref) || !str_set(q->target))
        return kiln_error_set(err, KILN_EINVAL, 0, "export needs a reference and a target");
    psh_export_kind kind;
    const char *path = NULL;
    int r = psh_export_target_parse(q->target, &kind, &path, err);
    if (r < 0)
        return r;
    if ((r = psh_srv_host_path(p, kiln_rpc_request_is_local(), "export target", path, true, err)) <
        0)
        return r;
    psh_descriptor d;
    if ((r = psh_store_resolve(p->store, q->ref, &d, err)) < 0)
        return r;
    if ((r = psh_store_export(p->store, q->ref, kind, path, NULL, err)) < 0)
        return r;
    Kiln__V1__ExportReply *b = NEW_BODY(a, Kiln__V1__ExportReply, kiln__v1__export_reply__init);
    if (b == NULL)
        return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
    b->digest = kiln_arena_strdup(a, d.digest);
    b->path = kiln_arena_strdup(a, path);
    kiln_info("store", "exported %s (%s) to %s", q->ref, d.digest, q->target);
    reply->body_case = KILN__V1__REPLY__BODY_EXPORT_REPLY;
    reply->export_reply = b;
    return 0;
}

/* ---- jobs ---- */

static void set_all_cancelled(psh_server *p)
{
    atomic_store(&p->cancel, 1);
    pthread_mutex_lock(&p->mu);
    for (job_ctx *j = p->live; j; j = j->next)
        atomic_store(&j->cancel, 1);
    pthread_mutex_unlock(&p->mu);
}

int psh_srv_cancel_job(psh_server *p, const char *job_id, bool *was_running, kiln_error **err)
{
    if (!kiln_job_id_valid(job_id))
        return kiln_error_set(err, KILN_EINVAL, 0, "invalid job id");
    *was_running = false;
    pthread_mutex_lock(&p->mu);
    for (job_ctx *j = p->live; j; j = j->next)
        if (j->job && strcmp(kiln_job_id(j->job), job_id) == 0) {
            atomic_store(&j->cancel, 1);
            *was_running = true;
        }
    pthread_mutex_unlock(&p->mu);
    if (*was_running)
        kiln_info("jobs", "job %s: cancel requested", job_id);
    return 0;
}

static int m_cancel(void *user, const kiln_req *req, kiln_reply *reply, kiln_arena *a,
                    kiln_error **err)
{
    bool was = false;
    int r = psh_srv_cancel_job(user, req->cancel->job_id, &was, err);
    if (r < 0)
        return r;
    Kiln__V1__CancelReply *b = NEW_BODY(a, Kiln__V1__CancelReply, kiln__v1__cancel_reply__init);
    if (b == NULL)
        return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
    b->was_running = was;
    reply->body_case = KILN__V1__REPLY__BODY_CANCEL_REPLY;
    reply->cancel_reply = b;
    return 0;
}

void psh_srv_job_free(job_ctx *c)
{
    if (c == NULL)
        return;
    pthread_mutex_lock(&c->p->mu);
    for (job_ctx **pp = &c->p->live; *pp; pp = &(*pp)->next)
        if (*pp == c) {
            *pp = c->next;
            break;
        }
    pthread_mutex_unlock(&c->p->mu);
    kiln_job_release(c->job);
    if (c->req)
        kiln__v1__request__free_unpacked(c->req, NULL);
    free(c);
}

/* Starts job kind for req and replies JobAccepted; fn runs it. */
int psh_srv_accept_job(psh_server *p, const kiln_req *req, const char *kind, const char *desc,
                       kiln_job_fn fn, kiln_reply *reply, kiln_arena *a, kiln_error **err)
{
    /* Set by psh_server_attach once the service runs: a request may arrive first. */
    kiln_service *svc = __atomic_load_n(&p->svc, __ATOMIC_ACQUIRE);
    if (svc == NULL)
        return kiln_error_set(err, KILN_EUNAVAIL, 0, "the pusher is still starting");
    job_ctx *c = calloc(1, sizeof(*c));
    if (c == NULL || (c->req = kiln_req_dup(req)) == NULL) {
        free(c);
        return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
    }
    c->p = p;
    c->local = kiln_rpc_request_is_local();
    c->t0 = kiln_now_ms();
    c->local = kiln_rpc_request_is_local();
    int r = kiln_job_start(&c->job, kiln_service_events(svc), "push", kind, desc, err);
    if (r < 0) {
        psh_srv_job_free(c);
        return r;
    }
    pthread_mutex_lock(&p->mu);
    c->next = p->live;
    p->live = c;
    atomic_store(&c->cancel, atomic_load(&p->cancel)); /* accepted during shutdown */
    pthread_mutex_unlock(&p->mu);
    Kiln__V1__JobAccepted *b = NEW_BODY(a, Kiln__V1__JobAccepted, kiln__v1__job_accepted__init);
    if (b == NULL) {
        psh_srv_job_free(c);
        return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
    }
    b->job_id = kiln_arena_strdup(a, kiln_job_id(c->job));
    b->topic = kiln_arena_printf(a, "push.%s", kiln_job_id(c->job));
    if ((r = kiln_jobs_submit(p->jobs, fn, c, err)) < 0) {
        kiln_job_fail(c->job, (kiln_code)r, (*err)->msg, NULL);
        psh_srv_job_free(c);
        return r;
    }
    kiln_info("jobs", "%s job %s accepted: %s", kind, b->job_id, desc);
    reply->body_case = KILN__V1__REPLY__BODY_JOB_ACCEPTED;
    reply->job_accepted = b;
    return 0;
}

void psh_srv_job_failed(job_ctx *c, kiln_error **err, const char *what)
{
    kiln_code code = *err ? (*err)->code : KILN_EINTERNAL;
    const char *msg = *err ? (*err)->msg : "unknown error";
    kiln_warn("jobs", "%s job %s failed: %s", what, kiln_job_id(c->job), msg);
    kiln_job_fail(c->job, code, msg, NULL);
    kiln_error_free(err);
}

static void on_pack_progress(void *ud, uint64_t in, uint64_t out)
{
    job_ctx *c = ud;
    kiln_job_progress(c->job, "packing", in, 0, NULL);
    (void)out;
}

static void on_layer_done(void *ud, size_t i, const psh_layer_info *info)
{
    job_ctx *c = ud;
    unsigned long long now = kiln_now_ms();
    Kiln__V1__LayerPacked lp = KILN__V1__LAYER_PACKED__INIT;
    lp.index = (uint32_t)i;
    lp.digest = (char *)info->digest;
    lp.diff_id = (char *)info->diff_id;
    lp.media_type = (char *)info->media_type;
    lp.tar_bytes = info->tar_size;
    lp.blob_bytes = info->size;
    lp.size_compressed = info->size;
    lp.size_uncompressed = info->tar_size;
    lp.seconds = (double)(now - c->layer_t0) / 1000.0;
    c->layer_t0 = now;
    kiln_event e = KILN__V1__EVENT__INIT;
    e.payload_case = KILN__V1__EVENT__PAYLOAD_LAYER_PACKED;
    e.layer_packed = &lp;
    kiln_job_emit(c->job, &e, NULL);
    pthread_mutex_lock(&c->p->mu);
    c->p->layers_packed++;
    c->p->bytes_packed_in += info->tar_size;
    c->p->bytes_packed_out += info->size;
    pthread_mutex_unlock(&c->p->mu);
}

/* How messages name an import's source. */
static const char *source_name(const Kiln__V1__ImportRequest *q)
{
    if (!str_set(q->source_digest))
        return q->source;
    return str_set(q->source_name) ? q->source_name : "a streamed source";
}

static void run_import(void *arg)
{
    job_ctx *c = arg;
    const Kiln__V1__ImportRequest *q = c->req->import;
    kiln_error *err = NULL;
    psh_import_opts o;
    psh_import_opts_init(&o);
    char pbuf[128];
    psh_descriptor d;
    c->layer_t0 = kiln_now_ms();
    o.pack.progress = on_pack_progress;
    o.pack.progress_ud = c;
    o.layout_ref = str_set(q->layout_ref) ? q->layout_ref : NULL;
    bool streamed = str_set(q->source_digest);
    o.format = str_set(q->format) ? q->format : NULL;
    if (q->created > 0)
        o.created = q->created;
    if (psh_srv_parse_platform(c->p, q->platform, pbuf, sizeof(pbuf), &o.platform, &err) < 0 ||
        (streamed ? psh_srv_import_stream(c->p, q, &o, &d, &err)
                  : psh_store_import(c->p->store, q->source, q->ref, &o, &d, &err)) < 0) {
        psh_srv_job_failed(c, &err, "import");
        psh_srv_job_free(c);
        return;
    }
    pthread_mutex_lock(&c->p->mu);
    c->p->imports++;
    pthread_mutex_unlock(&c->p->mu);
    char summary[512];
    snprintf(summary, sizeof(summary), "imported %s as %s in %.2fs", source_name(q), q->ref,
             (double)(kiln_now_ms() - c->t0) / 1000.0);
    kiln_info("jobs", "import job %s: %s (%s)", kiln_job_id(c->job), summary, d.digest);
    kiln_job_complete(c->job, summary, d.digest, NULL);
    psh_srv_job_free(c);
}

static int m_import(void *user, const kiln_req *req, kiln_reply *reply, kiln_arena *a,
                    kiln_error **err)
{
    psh_server *p = user;
    const Kiln__V1__ImportRequest *q = req->import;
    bool streamed = str_set(q->source_digest);
    if ((!streamed && !str_set(q->source)) || !str_set(q->ref))
        return kiln_error_set(err, KILN_EINVAL, 0, "import needs a source and a reference");
    if (streamed && q->source_name && strlen(q->source_name) > 1024)
        return kiln_error_set(err, KILN_EINVAL, 0, "import: source name too long");
    int r = streamed ? psh_srv_import_stream_check(p, q, err)
                     : psh_srv_host_path(p, kiln_rpc_request_is_local(), "import source", q->source,
                                         false, err);
    if (r < 0)
        return r;
    kiln_ref ref;
    if (kiln_ref_parse(&ref, q->ref, 0, err) < 0)
        return kiln_error_wrap(err, "import reference");
    char pbuf[128];
    psh_platform pl;
    if (psh_srv_parse_platform(p, q->platform, pbuf, sizeof(pbuf), &pl, err) < 0)
        return KILN_EINVAL;
    char desc[512];
    snprintf(desc, sizeof(desc), "import %.300s as %.200s", source_name(q), q->ref);
    return psh_srv_accept_job(p, req, "import", desc, run_import, reply, a, err);
}

/* The commit spec's string vectors point into the request copy. */
static psh_strv strv(char **v, size_t n, bool set)
{
    return (psh_strv){(const char *const *)v, n, set};
}

static void free_keys(char **keys, size_t n)
{
    for (size_t i = 0; keys != NULL && i < n; i++)
        free(keys[i]);
}

/* Storage a commit spec built from a request points into (besides the
 * request itself). */
typedef struct commit_bufs {
    char diff_root[4096];
    char pbuf[128]; /* the platform's strings */
    psh_kv *labels;
    psh_history_entry *hist;
    char **keys; /* pack cache keys, one per layer, or NULL */
    size_t n_keys;
} commit_bufs;

static void commit_bufs_dispose(commit_bufs *b)
{
    free_keys(b->keys, b->n_keys);
    free(b->keys);
    free(b->hist);
    free(b->labels);
}

/* Fills ic from the request's image config k; labels has room for k's. */
static void config_from_pb(psh_image_config *ic, const Kiln__V1__ImageConfigSpec *k, psh_kv *labels)
{
    ic->user = k->user;
    ic->exposed_ports = strv(k->exposed_ports, k->n_exposed_ports, k->n_exposed_ports > 0);
    ic->env = strv(k->env, k->n_env, k->n_env > 0);
    ic->entrypoint = strv(k->entrypoint, k->n_entrypoint, k->entrypoint_set);
    ic->cmd = strv(k->cmd, k->n_cmd, k->cmd_set);
    ic->volumes = strv(k->volumes, k->n_volumes, k->n_volumes > 0);
    ic->working_dir = k->working_dir;
    for (size_t i = 0; i < k->n_labels; i++)
        labels[i] = (psh_kv){k->labels[i]->key, k->labels[i]->value};
    ic->labels = labels;
    ic->n_labels = k->n_labels;
    ic->stop_signal = k->stop_signal;
    if (k->healthcheck && k->healthcheck->n_test > 0) {
        const Kiln__V1__HealthcheckSpec *h = k->healthcheck;
        ic->healthcheck.test = strv(h->test, h->n_test, true);
        ic->healthcheck.interval_ns = h->interval_ns;
        ic->healthcheck.timeout_ns = h->timeout_ns;
        ic->healthcheck.start_period_ns = h->start_period_ns;
        ic->healthcheck.start_interval_ns = h->start_interval_ns;
        ic->healthcheck.retries = h->retries;
    }
    ic->on_build = strv(k->on_build, k->n_on_build, k->n_on_build > 0);
    ic->shell = strv(k->shell, k->n_shell, k->n_shell > 0);
}

/* Fills hist (room for q's entries) from the request's history. */
static void history_from_pb(psh_history_entry *hist, const Kiln__V1__CommitRequest *q)
{
    for (size_t i = 0; i < q->n_history; i++)
        hist[i] = (psh_history_entry){
            q->history[i]->created_by,
            str_set(q->history[i]->comment) ? q->history[i]->comment : NULL,
            q->history[i]->empty_layer, q->history[i]->created ? q->history[i]->created : -1};
}

/* Rejects an annotation that is not KEY=VALUE. */
static int check_annotations(const Kiln__V1__CommitRequest *q, kiln_error **err)
{
    for (size_t i = 0; i < q->n_annotations; i++)
        if (q->annotations[i][0] == '=' || strchr(q->annotations[i], '=') == NULL)
            return kiln_error_set(err, KILN_EINVAL, 0, "annotation \"%.80s\" is not KEY=VALUE",
                                  q->annotations[i]);
    return 0;
}

/* The layer codec named by the request (gzip when unset). */
static int compression_from_pb(psh_pack_opts *pack, const char *name, kiln_error **err)
{
    if (!str_set(name) || strcmp(name, "gzip") == 0)
        pack->comp = PSH_COMP_GZIP;
    else if (strcmp(name, "zstd") == 0)
        pack->comp = PSH_COMP_ZSTD;
    else if (strcmp(name, "none") == 0)
        pack->comp = PSH_COMP_NONE;
    else
        return kiln_error_set(err, KILN_EINVAL, 0, "unknown compression '%s' (gzip, zstd, none)",
                              name);
    return 0;
}

/* Pack cache keys, when the builder sent a generation id per layer.
 * A diff's path is not its identity: the builder reuses a pruned step's
 * path for a new production.  Its generation id is, together with the
 * path: an unchanged rebuild commits without packing anything, and a
 * step produced again is packed again. */
static void layer_keys_from_pb(psh_commit_spec *spec, commit_bufs *b, const job_ctx *c,
                               const Kiln__V1__CommitRequest *q)
{
    if (q->n_layer_ids != q->n_layers || q->n_layers == 0 ||
        (b->keys = calloc(q->n_layers + 1, sizeof(*b->keys))) == NULL)
        return;
    b->n_keys = q->n_layers;
    for (size_t i = 0; i < q->n_layers; i++)
        if (str_set(q->layer_ids[i]) &&
            asprintf(&b->keys[i], "%s %s", q->layer_ids[i], q->layers[i]) < 0)
            b->keys[i] = NULL;
    spec->pack_cache = c->p->pack_cache;
    spec->layer_keys = (const char *const *)b->keys;
}

/* Builds the commit spec of job c's request; it points into the request
 * and into b. */
static int spec_from_pb(psh_commit_spec *spec, commit_bufs *b, job_ctx *c, kiln_error **err)
{
    const Kiln__V1__CommitRequest *q = c->req->commit;
    b->labels = calloc(q->config ? q->config->n_labels + 1 : 1, sizeof(psh_kv));
    b->hist = calloc(q->n_history + 1, sizeof(psh_history_entry));
    if (b->labels == NULL || b->hist == NULL)
        return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
    /* Only the builder's step diffs may become layers, not any file under the
     * data dir (the store's own blobs, event logs, cache mounts, ...). */
    snprintf(b->diff_root, sizeof(b->diff_root), "%s/snapshots", psh_store_data_dir(c->p->store));
    spec->diff_root = b->diff_root;
    spec->base = str_set(q->base_manifest) ? q->base_manifest : NULL;
    spec->layers = (const char *const *)q->layers;
    spec->n_layers = q->n_layers;
    if (q->config)
        config_from_pb(&spec->config, q->config, b->labels);
    history_from_pb(b->hist, q);
    spec->history = b->hist;
    spec->n_history = q->n_history;
    int rc =
        psh_srv_parse_platform(c->p, q->platform, b->pbuf, sizeof(b->pbuf), &spec->platform, err);
    if (rc < 0)
        return rc;
    spec->author = str_set(q->author) ? q->author : NULL;
    spec->created = q->created ? q->created : -1;
    spec->source_date_epoch = q->source_date_epoch ? q->source_date_epoch : -1;
    spec->tags = (const char *const *)q->tags;
    spec->n_tags = q->n_tags;
    if ((rc = check_annotations(q, err)) < 0)
        return rc;
    spec->annotations = (const char *const *)q->annotations;
    spec->n_annotations = q->n_annotations;
    if ((rc = compression_from_pb(&spec->pack, q->compression, err)) < 0)
        return rc;
    if (q->level)
        spec->pack.level = q->level;
    spec->pack.progress = on_pack_progress;
    spec->pack.progress_ud = c;
    spec->layer_done = on_layer_done;
    spec->layer_done_ud = c;
    layer_keys_from_pb(spec, b, c, q);
    return 0;
}

/* Commits spec, the store pinned while the lazy pack-cache check and the
 * commit run. */
static int commit_pinned(job_ctx *c, const psh_commit_spec *spec, psh_commit_result *res,
                         kiln_error **err)
{
    psh_store_pin lazy_pin = {.fd = -1};
    psh_pack_opts lazy_opts = spec->pack; /* as psh_commit packs */
    lazy_opts.overlay_diff = true;
    lazy_opts.source_date_epoch = spec->source_date_epoch;
    int rc = psh_store_pin_open(c->p->store, &lazy_pin, err);
    if (rc == 0)
        rc = psh_srv_cache_check_lazy(c->p, c->req->commit, spec->layer_keys, &lazy_opts, &lazy_pin,
                                      err);
    if (rc == 0)
        rc = psh_commit(c->p->store, spec, res, err);
    psh_store_pin_close(c->p->store, &lazy_pin);
    return rc;
}

/* Emits job c's completion event with the committed image res, logs it and
 * counts it. */
static void report_commit(job_ctx *c, psh_commit_result *res)
{
    const Kiln__V1__CommitRequest *q = c->req->commit;
    Kiln__V1__CommitResult cr = KILN__V1__COMMIT_RESULT__INIT;
    _cleanup_free_ Kiln__V1__LayerResult *lr = calloc(res->n_layers + 1, sizeof(*lr));
    _cleanup_free_ Kiln__V1__LayerResult **lrp = calloc(res->n_layers + 1, sizeof(*lrp));
    cr.manifest_digest = res->manifest.digest;
    cr.config_digest = res->config.digest;
    for (size_t i = 0; lr && lrp && i < res->n_layers; i++) {
        kiln__v1__layer_result__init(&lr[i]);
        lr[i].digest = res->layers[i].blob.digest;
        lr[i].diff_id = res->layers[i].diff_id;
        lr[i].media_type = res->layers[i].blob.media_type;
        lr[i].size = res->layers[i].blob.size;
        lr[i].from_base = res->layers[i].from_base;
        lr[i].size_uncompressed = res->layers[i].tar_size;
        lrp[i] = &lr[i];
        cr.n_layers++;
    }
    cr.layers = lrp;
    char summary[256];
    snprintf(summary, sizeof(summary), "committed %zu layer(s) (%zu new) in %.2fs", res->n_layers,
             q->n_layers, (double)(kiln_now_ms() - c->t0) / 1000.0);
    Kiln__V1__JobCompleted done = KILN__V1__JOB_COMPLETED__INIT;
    done.summary = summary;
    done.digest = res->manifest.digest;
    done.commit = &cr;
    kiln_event e = KILN__V1__EVENT__INIT;
    e.payload_case = KILN__V1__EVENT__PAYLOAD_COMPLETED;
    e.completed = &done;
    kiln_job_emit(c->job, &e, NULL);
    kiln_info("jobs", "commit job %s: %s -> %s", kiln_job_id(c->job), summary,
              res->manifest.digest);
    pthread_mutex_lock(&c->p->mu);
    c->p->commits++;
    pthread_mutex_unlock(&c->p->mu);
}

static void run_commit(void *arg)
{
    job_ctx *c = arg;
    kiln_error *err = NULL;
    psh_commit_spec spec;
    psh_commit_spec_init(&spec);
    commit_bufs b = {0};
    psh_commit_result res = {0};
    int rc = spec_from_pb(&spec, &b, c, &err);
    if (rc == 0) {
        c->layer_t0 = kiln_now_ms();
        rc = commit_pinned(c, &spec, &res, &err);
    }
    if (rc == 0) {
        report_commit(c, &res);
        psh_commit_result_dispose(&res);
    }
    commit_bufs_dispose(&b);
    if (rc < 0)
        psh_srv_job_failed(c, &err, "commit");
    psh_srv_job_free(c);
}

static int m_commit(void *user, const kiln_req *req, kiln_reply *reply, kiln_arena *a,
                    kiln_error **err)
{
    psh_server *p = user;
    const Kiln__V1__CommitRequest *q = req->commit;
    /* Layers are directories on this host: only the builder next to us
     * (over ipc://, in the same pod or on the same host) commits. */
    if (!kiln_rpc_request_is_local())
        return kiln_error_set(err, KILN_EPERM, 0,
                              "Commit names layer directories on the pusher's host: it is taken "
                              "only from a builder on the same host over ipc://, not from "
                              "clients reached over tcp:// or tls+tcp://");
    for (size_t i = 0; i < q->n_tags; i++) {
        kiln_ref ref;
        if (kiln_ref_parse(&ref, q->tags[i], 0, err) < 0)
            return kiln_error_wrap(err, "commit tag");
    }
    if (q->n_layer_ids != 0 && q->n_layer_ids != q->n_layers)
        return kiln_error_set(err, KILN_EINVAL, 0, "commit: %zu layer ids for %zu layers",
                              q->n_layer_ids, q->n_layers);
    for (size_t i = 0; i < q->n_layer_ids; i++)
        if (strlen(q->layer_ids[i]) > 128 ||
            strspn(q->layer_ids[i], "0123456789abcdefABCDEF") != strlen(q->layer_ids[i]))
            return kiln_error_set(err, KILN_EINVAL, 0, "commit: layer id %zu is not hex", i);
    char pbuf[128];
    psh_platform pl;
    if (psh_srv_parse_platform(p, q->platform, pbuf, sizeof(pbuf), &pl, err) < 0)
        return KILN_EINVAL;
    char desc[512];
    snprintf(desc, sizeof(desc), "commit %zu layer(s) on %s%s%s", q->n_layers,
             str_set(q->base_manifest) ? q->base_manifest : "scratch", q->n_tags ? " as " : "",
             q->n_tags ? q->tags[0] : "");
    return psh_srv_accept_job(p, req, "commit", desc, run_commit, reply, a, err);
}

/* ---- service glue ---- */

static const kiln_rpc_method store_methods[] = {
    {KILN__V1__REQUEST__BODY_TAG, "Tag", m_tag, KILN_RPC_MUTATING, NULL},
    {KILN__V1__REQUEST__BODY_LIST_IMAGES, "ListImages", m_list, 0, NULL},
    {KILN__V1__REQUEST__BODY_INSPECT, "Inspect", m_inspect, 0, NULL},
    {KILN__V1__REQUEST__BODY_REMOVE, "Remove", m_remove, KILN_RPC_MUTATING, NULL},
    {KILN__V1__REQUEST__BODY_PRUNE, "Prune", m_prune, KILN_RPC_MUTATING, NULL},
    {KILN__V1__REQUEST__BODY_IMPORT, "Import", m_import, KILN_RPC_MUTATING, NULL},
    {KILN__V1__REQUEST__BODY_EXPORT, "Export", m_export, KILN_RPC_MUTATING, NULL},
    {KILN__V1__REQUEST__BODY_COMMIT, "Commit", m_commit, KILN_RPC_MUTATING, NULL},
    {KILN__V1__REQUEST__BODY_CANCEL, "Cancel", m_cancel, KILN_RPC_MUTATING, NULL},
};

int psh_server_new(psh_server **out, const kiln_service_opts *o, kiln_error **err)
{
    psh_server *p = calloc(1, sizeof(*p));
    if (p == NULL)
        return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
    p->o = o;
    pthread_mutex_init(&p->mu, NULL);
    int r = kiln_mkdir_p(o->data_dir, 0755, err);
    if (r == 0)
        r = psh_store_open(&p->store, o->data_dir, err);
    if (r == 0) {
        /* Partial downloads a killed pusher left stay for a day, so the next
         * pull of the same image resumes them; older ones are dropped. */
        unsigned n = psh_store_partial_sweep(p->store, PSH_STORE_PARTIAL_MAX_AGE);
        if (n > 0)
            kiln_info("store", "removed %u abandoned partial download(s)", n);
    }
    if (r == 0)
        r = kiln_jobs_new(&p->jobs, MAX_CONCURRENT_JOBS, err);
    if (r == 0) {
        char dir[4096];
        snprintf(dir, sizeof(dir), "%s/pack-cache", psh_store_data_dir(p->store));
        r = psh_pack_cache_open(&p->pack_cache, dir, err);
    }
    if (r == 0)
        r = psh_srv_transfer_open(p, err);
    p->n_methods = KILN_ARRAY_SIZE(store_methods) + psh_n_registry_methods +
                   psh_n_transfer_methods + psh_n_cache_methods;
    if (r == 0 && (p->methods = calloc(p->n_methods, sizeof(*p->methods))) == NULL)
        r = kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
    if (r == 0) {
        memcpy(p->methods, store_methods, sizeof(store_methods));
        memcpy(p->methods + KILN_ARRAY_SIZE(store_methods), psh_registry_methods,
               psh_n_registry_methods * sizeof(*p->methods));
        memcpy(p->methods + KILN_ARRAY_SIZE(store_methods) + psh_n_registry_methods,
               psh_transfer_methods, psh_n_transfer_methods * sizeof(*p->methods));
        memcpy(p->methods + p->n_methods - psh_n_cache_methods, psh_cache_methods,
               psh_n_cache_methods * sizeof(*p->methods));
    }
    if (r < 0) {
        psh_server_free(p);
        return r;
    }
    *out = p;
    return 0;
}

void psh_server_free(psh_server *p)
{
    if (p == NULL)
        return;
    set_all_cancelled(p);
    kiln_jobs_free(p->jobs);
    psh_pack_cache_free(p->pack_cache);
    psh_srv_transfer_close(p);
    psh_store_free(p->store);
    free(p->methods);
    pthread_mutex_destroy(&p->mu);
    free(p);
}

const kiln_rpc_method *psh_server_methods(psh_server *p, size_t *n)
{
    *n = p->n_methods;
    return p->methods;
}

static void checks(void *user, Kiln__V1__Check ***out, size_t *n, kiln_arena *a)
{
    psh_server *p = user;
    Kiln__V1__Check **list = kiln_arena_calloc(a, 1, sizeof(*list));
    Kiln__V1__Check *c = kiln_arena_alloc(a, sizeof(*c));
    if (list == NULL || c == NULL)
        return;
    kiln__v1__check__init(c);
    c->name = "store";
    c->ok = access(psh_store_path(p->store), W_OK) == 0;
    c->detail = kiln_arena_strdup(a, psh_store_path(p->store));
    list[0] = c;
    *out = list;
    *n = 1;
}

static void metrics(void *user, kiln_buf *out)
{
    psh_server *p = user;
    pthread_mutex_lock(&p->mu);
    kiln_buf_printf(out, NULL,
                    "# HELP kiln_pusher_layers_packed_total Layers packed into the store.\n"
                    "# TYPE kiln_pusher_layers_packed_total counter\n"
                    "kiln_pusher_layers_packed_total %llu\n"
                    "# HELP kiln_pusher_packed_bytes_total Bytes packed (tar in, blob out).\n"
                    "# TYPE kiln_pusher_packed_bytes_total counter\n"
                    "kiln_pusher_packed_bytes_total{direction=\"in\"} %llu\n"
                    "kiln_pusher_packed_bytes_total{direction=\"out\"} %llu\n"
                    "# HELP kiln_pusher_commits_total Images committed.\n"
                    "# TYPE kiln_pusher_commits_total counter\n"
                    "kiln_pusher_commits_total %llu\n"
                    "# HELP kiln_pusher_imports_total Images imported.\n"
                    "# TYPE kiln_pusher_imports_total counter\n"
                    "kiln_pusher_imports_total %llu\n",
                    (unsigned long long)p->layers_packed, (unsigned long long)p->bytes_packed_in,
                    (unsigned long long)p->bytes_packed_out, (unsigned long long)p->commits,
                    (unsigned long long)p->imports);
    kiln_buf_printf(out, NULL,
                    "# HELP kiln_pusher_pushes_total Push jobs completed.\n"
                    "# TYPE kiln_pusher_pushes_total counter\n"
                    "kiln_pusher_pushes_total %llu\n"
                    "# HELP kiln_pusher_pulls_total Pull jobs completed.\n"
                    "# TYPE kiln_pusher_pulls_total counter\n"
                    "kiln_pusher_pulls_total %llu\n"
                    "# HELP kiln_pusher_blobs_total Blobs handled by pushes, by outcome.\n"
                    "# TYPE kiln_pusher_blobs_total counter\n"
                    "kiln_pusher_blobs_total{outcome=\"uploaded\"} %llu\n"
                    "kiln_pusher_blobs_total{outcome=\"skipped\"} %llu\n"
                    "kiln_pusher_blobs_total{outcome=\"mounted\"} %llu\n"
                    "# HELP kiln_pusher_retries_total Registry requests retried.\n"
                    "# TYPE kiln_pusher_retries_total counter\n"
                    "kiln_pusher_retries_total %llu\n"
                    "# HELP kiln_pusher_registry_bytes_total Blob bytes sent and received.\n"
                    "# TYPE kiln_pusher_registry_bytes_total counter\n"
                    "kiln_pusher_registry_bytes_total{direction=\"pushed\"} %llu\n"
                    "kiln_pusher_registry_bytes_total{direction=\"pulled\"} %llu\n"
                    "# HELP kiln_pusher_registry_bytes_resumed_total Blob bytes an interrupted "
                    "transfer had moved that its resumption did not move again.\n"
                    "# TYPE kiln_pusher_registry_bytes_resumed_total counter\n"
                    "kiln_pusher_registry_bytes_resumed_total{direction=\"pushed\"} %llu\n"
                    "kiln_pusher_registry_bytes_resumed_total{direction=\"pulled\"} %llu\n",
                    (unsigned long long)p->pushes, (unsigned long long)p->pulls,
                    (unsigned long long)p->blobs_uploaded, (unsigned long long)p->blobs_skipped,
                    (unsigned long long)p->blobs_mounted, (unsigned long long)p->retries,
                    (unsigned long long)p->bytes_pushed, (unsigned long long)p->bytes_pulled,
                    (unsigned long long)p->bytes_push_resumed,
                    (unsigned long long)p->bytes_pull_resumed);
    pthread_mutex_unlock(&p->mu);
    kiln_buf_printf(out, NULL,
                    "# HELP kiln_pusher_jobs_queued Jobs running or waiting for a slot.\n"
                    "# TYPE kiln_pusher_jobs_queued gauge\n"
                    "kiln_pusher_jobs_queued %u\n",
                    kiln_jobs_active(p->jobs));
}

static void drain(void *user, int grace_ms)
{
    psh_server *p = user;
    unsigned n = kiln_jobs_active(p->jobs);
    if (n)
        kiln_info("jobs", "waiting for %u job(s) to finish", n);
    /* Transfers stop between chunks; their upload sessions are kept for a
     * resume after restart.  Commits and imports get the grace period. */
    set_all_cancelled(p);
    kiln_jobs_drain(p->jobs, grace_ms < JOB_GRACE_MS ? grace_ms : JOB_GRACE_MS);
}

/* Status: the pusher's job load (it builds no platform itself). */
static void status(void *user, Kiln__V1__StatusReply *r, kiln_arena *a)
{
    psh_server *p = user;
    unsigned active = kiln_jobs_active(p->jobs), running = kiln_jobs_running(p->jobs);
    r->builds_running = running;
    r->builds_queued = active > running ? active - running : 0;
    r->max_builds = (uint32_t)kiln_jobs_max(p->jobs);
}

void psh_server_hooks(psh_server *p, kiln_service_hooks *out)
{
    *out = (kiln_service_hooks){
        .checks = checks, .metrics = metrics, .drain = drain, .status = status, .user = p};
}

void psh_server_attach(psh_server *p, kiln_service *svc)
{
    __atomic_store_n(&p->svc, svc, __ATOMIC_RELEASE);
}
