/* kiln-pusher's step cache methods, for `kiln build --cache-to/--cache-from`:
 *
 *   CacheExport  (job)  the builder's records -> one OCI image manifest in the
 *                       store (config blob: the records as JSON, media type
 *                       PSH_MT_KILN_CACHE_CONFIG; layers: their blobs, each
 *                       once) pushed to the cache ref like any image: blobs
 *                       the registry has are skipped, blobs another
 *                       repository of it holds are mounted.
 *   CacheImport  (job)  the cache manifest and its config blob (the job's
 *                       digest is the config's, which the builder reads from
 *                       the shared store), or given layer blobs of it.
 *   CacheBind    (RPC)  a step dir the builder made from an imported blob is
 *                       entered in the pack cache as that blob, so Commit
 *                       uses the registry's bytes (and digest) instead of
 *                       packing the dir again: an image built from a cache
 *                       has the digest of the image that exported it.
 *
 * Credentials travel in the request's RegistryOptions and live only in the
 * job's request copy; nothing here logs them. */
#include "cleanup.h"
#include "log.h"
#include "ref.h"
#include "psh_server_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CACHE_RECORDS_MAX 65536

static int check_cache_ref(const char *ref, kiln_error **err)
{
    kiln_ref r;
    if (!str_set(ref))
        return kiln_error_set(err, KILN_EINVAL, 0, "cache: missing reference");
    if (kiln_ref_parse(&r, ref, 0, err) < 0)
        return kiln_error_wrap(err, "cache ref");
    return 0;
}

/* ---- export ---- */

static bool layer_listed(const cJSON *layers, const char *digest)
{
    const cJSON *l;
    cJSON_ArrayForEach(l, layers)
    {
        const char *d = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(l, "digest"));
        if (d != NULL && strcmp(d, digest) == 0)
            return true;
    }
    return false;
}

/* The records JSON (config) and the layer list of the manifest. */
static int records_json(const Kiln__V1__CacheExportRequest *q, cJSON *recs, cJSON *layers,
                        kiln_error **err)
{
    for (size_t i = 0; i < q->n_records; i++) {
        const Kiln__V1__CacheRecord *r = q->records[i];
        bool layer = str_set(r->digest);
        cJSON *o = cJSON_CreateObject();
        if (o == NULL || !cJSON_AddItemToArray(recs, o) ||
            !cJSON_AddStringToObject(o, "key", r->key) ||
            !cJSON_AddNumberToObject(o, "created", (double)r->created))
            return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
        if (!layer)
            continue;
        if (!cJSON_AddStringToObject(o, "digest", r->digest) ||
            !cJSON_AddStringToObject(o, "diff_id", r->diff_id) ||
            !cJSON_AddStringToObject(o, "media_type", r->media_type) ||
            !cJSON_AddNumberToObject(o, "size", (double)r->size))
            return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
        if (layer_listed(layers, r->digest))
            continue;
        cJSON *l = cJSON_CreateObject();
        if (l == NULL || !cJSON_AddItemToArray(layers, l) ||
            !cJSON_AddStringToObject(l, "mediaType", r->media_type) ||
            !cJSON_AddStringToObject(l, "digest", r->digest) ||
            !cJSON_AddNumberToObject(l, "size", (double)r->size))
            return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
    }
    return 0;
}

/* Stores config and manifest; *manifest gets the manifest's digest. */
static int store_cache_manifest(psh_server *p, psh_store_pin *pin,
                                const Kiln__V1__CacheExportRequest *q,
                                char manifest[KILN_DIGEST_STRLEN + 1], kiln_error **err)
{
    _cleanup_cjson_ cJSON *cfg = cJSON_CreateObject();
    _cleanup_cjson_ cJSON *m = cJSON_CreateObject();
    cJSON *recs = cJSON_AddArrayToObject(cfg, "records");
    cJSON *cd = cJSON_CreateObject();
    if (cd == NULL || !cJSON_AddNumberToObject(m, "schemaVersion", 2) ||
        !cJSON_AddStringToObject(m, "mediaType", PSH_MT_OCI_MANIFEST) ||
        !cJSON_AddItemToObject(m, "config", cd)) {
        cJSON_Delete(cd);
        return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
    }
    cJSON *layers = cJSON_AddArrayToObject(m, "layers");
    if (recs == NULL || layers == NULL)
        return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
    int r = records_json(q, recs, layers, err);
    if (r < 0)
        return r;
    const cJSON *l;
    cJSON_ArrayForEach(l, layers)
    {
        const char *d = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(l, "digest"));
        if ((r = psh_store_pin_add(p->store, pin, d, err)) < 0)
            return r;
        if (!psh_store_has_blob(p->store, d))
            return kiln_error_set(err, KILN_ENOENT, 0, "cache: layer %s is not in the store", d);
    }
    _cleanup_free_ char *ct = cJSON_PrintUnformatted(cfg);
    char cdg[KILN_DIGEST_STRLEN + 1];
    if (ct == NULL)
        return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
    kiln_sha256_bytes(ct, strlen(ct), cdg);
    if ((r = psh_store_pin_add(p->store, pin, cdg, err)) < 0 ||
        (r = psh_store_put_blob_bytes(p->store, pin, cdg, ct, strlen(ct), NULL, err)) < 0)
        return r;
    if (!cJSON_AddStringToObject(cd, "mediaType", PSH_MT_KILN_CACHE_CONFIG) ||
        !cJSON_AddStringToObject(cd, "digest", cdg) ||
        !cJSON_AddNumberToObject(cd, "size", (double)strlen(ct)))
        return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
    _cleanup_free_ char *mt = cJSON_PrintUnformatted(m);
    if (mt == NULL)
        return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
    kiln_sha256_bytes(mt, strlen(mt), manifest);
    if ((r = psh_store_pin_add(p->store, pin, manifest, err)) < 0)
        return r;
    return psh_store_put_blob_bytes(p->store, pin, manifest, mt, strlen(mt), NULL, err);
}

static void run_cache_export(void *arg)
{
    job_ctx *c = arg;
    const Kiln__V1__CacheExportRequest *q = c->req->cache_export;
    kiln_error *err = NULL;
    psh_registry_opts o;
    psh_push_result res = {0};
    psh_reg_events ev = psh_srv_job_events(c);
    psh_store_pin pin = {.fd = -1};
    char manifest[KILN_DIGEST_STRLEN + 1];
    int r = psh_srv_job_reg_opts(c, q->registry, &o, &err);
    if (r == 0)
        r = psh_store_pin_open(c->p->store, &pin, &err);
    if (r == 0)
        r = store_cache_manifest(c->p, &pin, q, manifest, &err);
    if (r == 0 && q->store) {
        psh_descriptor d = {.media_type = PSH_MT_OCI_MANIFEST};
        snprintf(d.digest, sizeof(d.digest), "%s", manifest);
        _cleanup_free_ char *m = NULL;
        size_t len = 0;
        if ((r = psh_store_read_blob(c->p->store, manifest, PSH_MANIFEST_MAX, &m, &len, &err)) ==
            0) {
            d.size = len;
            r = psh_store_tag_descriptor(c->p->store, &d, NULL, NULL, NULL, q->ref, &err);
        }
    } else if (r == 0) {
        r = psh_push(c->p->store, manifest, q->ref, &o, &ev, &res, &err);
    }
    psh_store_pin_close(c->p->store, &pin);
    if (r < 0) {
        psh_srv_job_failed(c, &err, "cache export");
    } else {
        char summary[600];
        snprintf(summary, sizeof(summary),
                 "exported %zu cache record(s) to %s: %u blob(s) uploaded, %u skipped, %u mounted",
                 q->n_records, q->ref, res.blobs_uploaded, res.blobs_skipped, res.blobs_mounted);
        kiln_info("registry", "job %s: %s (%s)", kiln_job_id(c->job), summary, manifest);
        kiln_job_complete(c->job, summary, manifest, NULL);
    }
    psh_srv_job_free(c);
}

static int m_cache_export(void *user, const kiln_req *req, kiln_reply *reply, kiln_arena *a,
                          kiln_error **err)
{
    psh_server *p = user;
    const Kiln__V1__CacheExportRequest *q = req->cache_export;
    psh_registry_opts o;
    if (check_cache_ref(q->ref, err) < 0 ||
        psh_srv_reg_opts(p, kiln_rpc_request_is_local(), q->registry, &o, err) < 0)
        return (*err)->code;
    if (q->n_records > CACHE_RECORDS_MAX)
        return kiln_error_set(err, KILN_EINVAL, 0, "cache: more than %d records",
                              CACHE_RECORDS_MAX);
    for (size_t i = 0; i < q->n_records; i++) {
        const Kiln__V1__CacheRecord *r = q->records[i];
        if (!kiln_digest_valid(r->key) ||
            (str_set(r->digest) &&
             (!kiln_digest_valid(r->digest) || !kiln_digest_valid(r->diff_id) ||
              strlen(r->media_type) == 0 || strlen(r->media_type) > 127)))
            return kiln_error_set(err, KILN_EINVAL, 0, "cache: record %zu is malformed", i);
    }
    char desc[600];
    snprintf(desc, sizeof(desc), "export %zu cache record(s) to %s", q->n_records, q->ref);
    return psh_srv_accept_job(p, req, "cache-export", desc, run_cache_export, reply, a, err);
}

/* ---- import ---- */

/* A cache tagged in the store (a type=local cache the client streamed in):
 * its config, or a check that the blobs asked for are here. */
static int store_cache(psh_server *p, const Kiln__V1__CacheImportRequest *q, psh_descriptor *cfg,
                       kiln_error **err)
{
    for (size_t i = 0; i < q->n_blobs; i++)
        if (!psh_store_has_blob(p->store, q->blobs[i]->digest))
            return kiln_error_set(err, KILN_ENOENT, 0, "cache %s: blob %s is missing", q->ref,
                                  q->blobs[i]->digest);
    if (q->n_blobs > 0)
        return 0;
    psh_descriptor d;
    int r = psh_store_resolve(p->store, q->ref, &d, err);
    _cleanup_free_ char *text = NULL;
    size_t len = 0;
    if (r == 0)
        r = psh_store_read_blob(p->store, d.digest, PSH_MANIFEST_MAX, &text, &len, err);
    if (r < 0)
        return r;
    _cleanup_cjson_ cJSON *m = cJSON_ParseWithLength(text, len);
    const cJSON *c = cJSON_GetObjectItemCaseSensitive(m, "config");
    const char *mt = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(c, "mediaType"));
    const char *dg = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(c, "digest"));
    if (mt == NULL || strcmp(mt, PSH_MT_KILN_CACHE_CONFIG) != 0 || dg == NULL ||
        !kiln_digest_valid(dg) || !psh_store_has_blob(p->store, dg))
        return kiln_error_set(err, KILN_EINVAL, 0, "%s is not a Kiln step cache", q->ref);
    snprintf(cfg->digest, sizeof(cfg->digest), "%s", dg);
    return 0;
}

static void run_cache_import(void *arg)
{
    job_ctx *c = arg;
    const Kiln__V1__CacheImportRequest *q = c->req->cache_import;
    kiln_error *err = NULL;
    psh_registry_opts o;
    psh_reg_events ev = psh_srv_job_events(c);
    psh_pull_result res = {0};
    psh_descriptor cfg = {0};
    _cleanup_free_ psh_descriptor *want = calloc(q->n_blobs + 1, sizeof(*want));
    if (want == NULL) {
        kiln_error_set(&err, KILN_ENOSPC, 0, "out of memory");
        goto fail;
    }
    for (size_t i = 0; i < q->n_blobs; i++) {
        snprintf(want[i].digest, sizeof(want[i].digest), "%s", q->blobs[i]->digest);
        snprintf(want[i].media_type, sizeof(want[i].media_type), "%s", q->blobs[i]->media_type);
        want[i].size = q->blobs[i]->size;
    }
    if (q->store && store_cache(c->p, q, &cfg, &err) < 0)
        goto fail;
    if (!q->store &&
        (psh_srv_job_reg_opts(c, q->registry, &o, &err) < 0 ||
         psh_pull_cache(c->p->store, q->ref, want, q->n_blobs, &o, &ev, &cfg, &res, &err) < 0))
        goto fail;
    pthread_mutex_lock(&c->p->mu);
    c->p->bytes_pulled += res.bytes_fetched;
    pthread_mutex_unlock(&c->p->mu);
    char summary[600];
    snprintf(summary, sizeof(summary), "imported %s from cache %s: %u blob(s) fetched, %u present",
             q->n_blobs ? "layers" : "records", q->ref, res.blobs_fetched, res.blobs_present);
    kiln_info("registry", "job %s: %s", kiln_job_id(c->job), summary);
    kiln_job_complete(c->job, summary, q->n_blobs ? "" : cfg.digest, NULL);
    psh_srv_job_free(c);
    return;
fail:
    psh_srv_job_failed(c, &err, "cache import");
    psh_srv_job_free(c);
}

static int m_cache_import(void *user, const kiln_req *req, kiln_reply *reply, kiln_arena *a,
                          kiln_error **err)
{
    psh_server *p = user;
    const Kiln__V1__CacheImportRequest *q = req->cache_import;
    psh_registry_opts o;
    if (check_cache_ref(q->ref, err) < 0 ||
        psh_srv_reg_opts(p, kiln_rpc_request_is_local(), q->registry, &o, err) < 0)
        return (*err)->code;
    if (q->n_blobs > CACHE_RECORDS_MAX)
        return kiln_error_set(err, KILN_EINVAL, 0, "cache: too many blobs");
    for (size_t i = 0; i < q->n_blobs; i++)
        if (!kiln_digest_valid(q->blobs[i]->digest))
            return kiln_error_set(err, KILN_EINVAL, 0, "cache: blob %zu has no digest", i);
    char desc[600];
    snprintf(desc, sizeof(desc), "import %s of cache %s", q->n_blobs ? "layers" : "records",
             q->ref);
    return psh_srv_accept_job(p, req, "cache-import", desc, run_cache_import, reply, a, err);
}

/* ---- bind ---- */

static const char *layer_media_static(const char *mt)
{
    if (strcmp(mt, PSH_MT_OCI_LAYER_GZ) == 0 || strcmp(mt, PSH_MT_DOCKER_LAYER_GZ) == 0)
        return PSH_MEDIA_TYPE_TAR_GZIP;
    if (strcmp(mt, PSH_MT_OCI_LAYER_ZST) == 0)
        return PSH_MEDIA_TYPE_TAR_ZSTD;
    if (strcmp(mt, PSH_MT_OCI_LAYER) == 0)
        return PSH_MEDIA_TYPE_TAR;
    return NULL;
}

static int m_cache_bind(void *user, const kiln_req *req, kiln_reply *reply, kiln_arena *a,
                        kiln_error **err)
{
    psh_server *p = user;
    const Kiln__V1__CacheBindRequest *q = req->cache_bind;
    /* Like Commit: the layer is a directory of this host's data dir. */
    if (!kiln_rpc_request_is_local())
        return kiln_error_set(err, KILN_EPERM, 0,
                              "CacheBind names a step directory: only a builder on the same "
                              "host over ipc:// sends it");
    const char *mt = layer_media_static(q->media_type ? q->media_type : "");
    if (!str_set(q->layer) || !str_set(q->layer_id) || strlen(q->layer_id) > 128 ||
        strspn(q->layer_id, "0123456789abcdef") != strlen(q->layer_id) ||
        !kiln_digest_valid(q->digest) || !kiln_digest_valid(q->diff_id) || mt == NULL)
        return kiln_error_set(err, KILN_EINVAL, 0, "cache bind: malformed request");
    if (!psh_store_has_blob(p->store, q->digest))
        return kiln_error_set(err, KILN_ENOENT, 0, "cache bind: %s is not in the store", q->digest);
    /* The settings a Commit of the builder uses (psh_server.c run_commit). */
    psh_commit_spec spec;
    psh_commit_spec_init(&spec);
    psh_pack_opts opts = spec.pack;
    opts.comp = PSH_COMP_GZIP;
    opts.overlay_diff = true;
    opts.source_date_epoch = q->source_date_epoch ? q->source_date_epoch : -1;
    psh_layer_info info = {.size = q->size, .media_type = mt};
    snprintf(info.digest, sizeof(info.digest), "%s", q->digest);
    snprintf(info.diff_id, sizeof(info.diff_id), "%s", q->diff_id);
    _cleanup_free_ char *key = NULL;
    if (asprintf(&key, "%s %s", q->layer_id, q->layer) < 0)
        return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
    int r = psh_pack_cache_store(p->pack_cache, key, &opts, &info, err);
    if (r < 0)
        return r;
    Kiln__V1__CacheBindReply *b =
        NEW_BODY(a, Kiln__V1__CacheBindReply, kiln__v1__cache_bind_reply__init);
    if (b == NULL)
        return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
    reply->body_case = KILN__V1__REPLY__BODY_CACHE_BIND_REPLY;
    reply->cache_bind_reply = b;
    return 0;
}

int psh_srv_cache_check_lazy(psh_server *p, const Kiln__V1__CommitRequest *q,
                             const char *const *keys, const psh_pack_opts *opts, psh_store_pin *pin,
                             kiln_error **err)
{
    char lazy[4096];
    snprintf(lazy, sizeof(lazy), "%s/snapshots/lazy-layer", psh_store_data_dir(p->store));
    for (size_t i = 0; i < q->n_layers; i++) {
        if (strcmp(q->layers[i], lazy) != 0)
            continue;
        psh_layer_info info;
        if (keys == NULL || keys[i] == NULL ||
            psh_pack_cache_lookup(p->pack_cache, &info, keys[i], opts, NULL) < 0)
            return kiln_error_set(err, KILN_EINVAL, 0,
                                  "layer %zu: an imported step whose blob is not bound", i);
        int r = psh_store_pin_add(p->store, pin, info.digest, err);
        if (r < 0)
            return r;
        if (!psh_store_has_blob(p->store, info.digest))
            return kiln_error_set(err, KILN_ENOENT, 0,
                                  "layer %zu: blob %s of an imported step was removed; build again",
                                  i, info.digest);
    }
    return 0;
}

const kiln_rpc_method psh_cache_methods[] = {
    {KILN__V1__REQUEST__BODY_CACHE_EXPORT, "CacheExport", m_cache_export, KILN_RPC_MUTATING, NULL},
    {KILN__V1__REQUEST__BODY_CACHE_IMPORT, "CacheImport", m_cache_import, KILN_RPC_MUTATING, NULL},
    {KILN__V1__REQUEST__BODY_CACHE_BIND, "CacheBind", m_cache_bind, KILN_RPC_MUTATING, NULL},
};
const size_t psh_n_cache_methods = sizeof(psh_cache_methods) / sizeof(psh_cache_methods[0]);
