/* Manifest documents as the registry client reads them (media types,
 * descriptors, the blobs of an image), the host platform, the bounded worker
 * pool that moves several blobs at once, the per-registry bound on transfers
 * in flight, and the option defaults. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "reg_internal.h"

void psh_registry_opts_init(psh_registry_opts *o)
{
    memset(o, 0, sizeof(*o));
    o->tls_verify = true;
    o->concurrency = 3;
    o->chunk_size = (uint64_t)16 << 20;
    o->max_retries = 6;
    o->retry_base_ms = 250;
    o->connect_timeout_s = 30;
    o->low_speed_time_s = 60;
    o->env_auth = true;
}

const char *reg_state_root(const psh_store *s, const psh_registry_opts *o)
{
    return o->data_dir ? o->data_dir : psh_store_data_dir(s);
}

bool reg_mt_is_index(const char *mt)
{
    return strcmp(mt, PSH_MT_OCI_INDEX) == 0 || strcmp(mt, PSH_MT_DOCKER_LIST) == 0;
}

bool reg_mt_is_manifest(const char *mt)
{
    return strcmp(mt, PSH_MT_OCI_MANIFEST) == 0 || strcmp(mt, PSH_MT_DOCKER_MANIFEST) == 0;
}

void reg_doc_media_type(const cJSON *doc, const char *ctype, char *out, size_t n)
{
    out[0] = '\0';
    if (ctype != NULL) {
        size_t l = strcspn(ctype, ";");
        char ct[128];
        snprintf(ct, sizeof(ct), "%.*s", (int)(l < 127 ? l : 127), ctype);
        if (reg_mt_is_index(ct) || reg_mt_is_manifest(ct)) {
            snprintf(out, n, "%s", ct);
            return;
        }
    }
    const cJSON *mt = cJSON_GetObjectItemCaseSensitive(doc, "mediaType");
    if (cJSON_IsString(mt) && mt->valuestring[0] != '\0') {
        snprintf(out, n, "%s", mt->valuestring);
        return;
    }
    /* OCI documents may omit mediaType (umoci writes them so). */
    if (cJSON_IsArray(cJSON_GetObjectItemCaseSensitive(doc, "manifests")))
        snprintf(out, n, "%s", PSH_MT_OCI_INDEX);
    else if (cJSON_IsObject(cJSON_GetObjectItemCaseSensitive(doc, "config")) &&
             cJSON_IsArray(cJSON_GetObjectItemCaseSensitive(doc, "layers")))
        snprintf(out, n, "%s", PSH_MT_OCI_MANIFEST);
}

int reg_doc_descriptor(const cJSON *o, psh_descriptor *out, kiln_error **err)
{
    memset(out, 0, sizeof(*out));
    const cJSON *mt = cJSON_GetObjectItemCaseSensitive(o, "mediaType");
    const cJSON *dg = cJSON_GetObjectItemCaseSensitive(o, "digest");
    const cJSON *sz = cJSON_GetObjectItemCaseSensitive(o, "size");
    if (!cJSON_IsString(dg) || !kiln_digest_valid(dg->valuestring))
        return kiln_error_set(err, KILN_EREMOTE, 0, "descriptor without a valid sha256 digest");
    if (!cJSON_IsNumber(sz) || sz->valuedouble < 0 || sz->valuedouble > 1e15)
        return kiln_error_set(err, KILN_EREMOTE, 0, "descriptor %s without a valid size",
                              dg->valuestring);
    if (cJSON_IsString(mt))
        snprintf(out->media_type, sizeof(out->media_type), "%s", mt->valuestring);
    snprintf(out->digest, sizeof(out->digest), "%s", dg->valuestring);
    out->size = (uint64_t)sz->valuedouble;
    return 0;
}

int reg_doc_blobs(const cJSON *m, psh_descriptor **out, size_t *n, kiln_error **err)
{
    const cJSON *cfg = cJSON_GetObjectItemCaseSensitive(m, "config");
    const cJSON *layers = cJSON_GetObjectItemCaseSensitive(m, "layers");
    if (!cJSON_IsObject(cfg) || !cJSON_IsArray(layers))
        return kiln_error_set(err, KILN_EREMOTE, 0, "image manifest without config or layers");
    size_t nl = (size_t)cJSON_GetArraySize(layers);
    if (nl > 10000)
        return kiln_error_set(err, KILN_EREMOTE, 0, "image manifest with %zu layers", nl);
    psh_descriptor *d = calloc(nl + 1, sizeof(*d));
    if (d == NULL)
        return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
    int r = reg_doc_descriptor(cfg, &d[0], err);
    size_t i = 1;
    const cJSON *l;
    cJSON_ArrayForEach(l, layers)
    {
        if (r < 0)
            break;
        r = reg_doc_descriptor(l, &d[i++], err);
    }
    if (r < 0) {
        free(d);
        return r;
    }
    *out = d;
    *n = nl + 1;
    return 0;
}

/* ---- per-registry bound on blobs in flight, shared by every job of the process ---- */

static pthread_mutex_t slot_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t slot_cv = PTHREAD_COND_INITIALIZER;
static struct {
    char host[KILN_REF_NAME_MAX + 1];
    unsigned active;
} slots[32];

int reg_slot_acquire(const char *host, unsigned limit)
{
    pthread_mutex_lock(&slot_mu);
    int idx = -1;
    for (;;) {
        int free_i = -1;
        idx = -1;
        for (int i = 0; i < (int)KILN_ARRAY_SIZE(slots); i++) {
            if (slots[i].active > 0 && strcmp(slots[i].host, host) == 0)
                idx = i;
            else if (slots[i].active == 0 && free_i < 0)
                free_i = i;
        }
        if (idx < 0 && free_i >= 0) {
            idx = free_i;
            snprintf(slots[idx].host, sizeof(slots[idx].host), "%s", host);
        }
        if (idx >= 0 && slots[idx].active < limit)
            break;
        pthread_cond_wait(&slot_cv, &slot_mu);
    }
    slots[idx].active++;
    pthread_mutex_unlock(&slot_mu);
    return idx;
}

void reg_slot_release(int idx)
{
    pthread_mutex_lock(&slot_mu);
    slots[idx].active--;
    pthread_cond_broadcast(&slot_cv);
    pthread_mutex_unlock(&slot_mu);
}

/* ---- bounded worker pool ---- */

struct pool {
    pthread_mutex_t mu;
    size_t next, n;
    bool failed;
    kiln_error *err;
    int rc;
    reg_job_fn fn;
    void *ud;
};

static void *pool_worker(void *arg)
{
    struct pool *p = arg;
    for (;;) {
        pthread_mutex_lock(&p->mu);
        if (p->failed || p->next >= p->n) {
            pthread_mutex_unlock(&p->mu);
            return NULL;
        }
        size_t i = p->next++;
        pthread_mutex_unlock(&p->mu);
        kiln_error *e = NULL;
        int r = p->fn(p->ud, i, &e);
        if (r < 0) {
            pthread_mutex_lock(&p->mu);
            if (!p->failed) {
                p->failed = true;
                p->rc = r;
                p->err = e;
                e = NULL;
            }
            pthread_mutex_unlock(&p->mu);
            kiln_error_free(&e);
        }
    }
}

int reg_parallel(size_t n, unsigned width, reg_job_fn fn, void *ud, kiln_error **err)
{
    struct pool p = {.n = n, .fn = fn, .ud = ud};
    pthread_mutex_init(&p.mu, NULL);
    if (width == 0)
        width = 1;
    if (width > n)
        width = (unsigned)n;
    pthread_t th[32];
    if (width > KILN_ARRAY_SIZE(th))
        width = KILN_ARRAY_SIZE(th);
    unsigned started = 0;
    /* The calling thread works too; extra threads only when there is more. */
    for (unsigned i = 1; i < width; i++) {
        if (pthread_create(&th[started], NULL, pool_worker, &p) != 0)
            break;
        started++;
    }
    pool_worker(&p);
    for (unsigned i = 0; i < started; i++)
        pthread_join(th[i], NULL);
    pthread_mutex_destroy(&p.mu);
    if (p.failed) {
        if (err != NULL && *err == NULL)
            *err = p.err;
        else
            kiln_error_free(&p.err);
        return p.rc;
    }
    return 0;
}
