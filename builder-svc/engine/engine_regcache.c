/* The step cache shared through a registry (kiln build --cache-from /
 * --cache-to).  A cache is a list of records (step key, history time, layer
 * blob) that kiln-pusher keeps in a registry as one OCI manifest; the keys
 * are the local step cache's, so a record is valid exactly where a local
 * entry with that key would be.
 *
 * Import: before the stages run, the pusher fetches each --cache-from ref's
 * records into the shared store and they are read here.  On a local miss
 * with a record, the pusher fetches the record's blob and binds it in its
 * pack cache to a virtual layer key, and the step is indexed as lazy: nothing
 * is unpacked.  The Commit reuses the blob through that key: the image gets
 * the exporter's layer digests and, with the records' history times, its
 * image digest.  Only when a later step reads the stage's filesystem
 * (engine_stage.c ensure_fs) is a lazy step's dir made from its blob
 * (eng_regcache_make), as a local hit would have found it.
 *
 * Export (engine.c gathers the records of the committed stages): the records
 * go to the pusher, which pushes them and the blobs. */
#include "engine_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "bld_snapshot.h"
#include "cleanup.h"
#include "log.h"

#define CACHE_CONFIG_MAX ((size_t)16 << 20)

typedef struct eng_regcache {
    eng_cache_rec *recs; /* sorted by key */
    size_t n, cap;
} eng_regcache;

static int key_cmp(const void *a, const void *b)
{
    return strcmp(((const eng_cache_rec *)a)->key, ((const eng_cache_rec *)b)->key);
}

/* By key, then by --cache-from order: the first cache to have a key wins. */
static int rec_cmp(const void *a, const void *b)
{
    const eng_cache_rec *x = a, *y = b;
    int c = strcmp(x->key, y->key);
    return c != 0 ? c : (x->from > y->from) - (x->from < y->from);
}

static bool copy_str(char *out, size_t cap, const cJSON *o, const char *k)
{
    const char *v = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(o, k));
    if (v == NULL || strlen(v) >= cap)
        return false;
    memcpy(out, v, strlen(v) + 1);
    return true;
}

/* One record of the config JSON; false when malformed (skipped). */
static bool parse_rec(eng_cache_rec *r, const cJSON *o, size_t from)
{
    memset(r, 0, sizeof(*r));
    r->from = from;
    const cJSON *cr = cJSON_GetObjectItemCaseSensitive(o, "created");
    if (!copy_str(r->key, sizeof(r->key), o, "key") || !kiln_digest_valid(r->key) ||
        !cJSON_IsNumber(cr))
        return false;
    r->created = (int64_t)cr->valuedouble;
    if (cJSON_GetObjectItemCaseSensitive(o, "digest") == NULL)
        return true;
    const cJSON *sz = cJSON_GetObjectItemCaseSensitive(o, "size");
    r->layer = true;
    r->l.size = cJSON_IsNumber(sz) && sz->valuedouble > 0 ? (uint64_t)sz->valuedouble : 0;
    return copy_str(r->l.digest, sizeof(r->l.digest), o, "digest") &&
           kiln_digest_valid(r->l.digest) &&
           copy_str(r->l.diff_id, sizeof(r->l.diff_id), o, "diff_id") &&
           kiln_digest_valid(r->l.diff_id) &&
           copy_str(r->l.media_type, sizeof(r->l.media_type), o, "media_type") && r->l.size > 0;
}

/* Reads path (at most max bytes) into *out. */
static int read_small(const char *path, size_t max, char **out, size_t *len, kiln_error **err)
{
    _cleanup_fclose_ FILE *f = fopen(path, "re");
    if (f == NULL)
        return kiln_error_set(err, kiln_code_from_errno(errno), errno, "open %s", path);
    char *buf = malloc(max + 1);
    if (buf == NULL)
        return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
    size_t n = fread(buf, 1, max + 1, f);
    if (ferror(f) || n > max) {
        free(buf);
        return kiln_error_set(err, KILN_EIO, 0, "read %s: unreadable or too large", path);
    }
    buf[n] = '\0';
    *out = buf;
    *len = n;
    return 0;
}

/* Reads the records of the config blob cfg (in the shared store). */
static int add_records(eng_build *b, eng_regcache *rc, const char *cfg, size_t from,
                       kiln_error **err)
{
    char path[ENG_PATH_MAX];
    snprintf(path, sizeof(path), "%s/store/blobs/sha256/%s", b->e->data_dir, cfg + 7);
    _cleanup_free_ char *text = NULL;
    size_t len = 0;
    if (read_small(path, CACHE_CONFIG_MAX, &text, &len, err) < 0)
        return kiln_error_wrap(err, "cache records");
    _cleanup_cjson_ cJSON *j = cJSON_ParseWithLength(text, len);
    const cJSON *recs = cJSON_GetObjectItemCaseSensitive(j, "records");
    if (!cJSON_IsArray(recs))
        return kiln_error_set(err, KILN_EINVAL, 0, "cache records: not a Kiln cache config");
    const cJSON *o;
    cJSON_ArrayForEach(o, recs)
    {
        if (rc->n == rc->cap) {
            size_t nc = rc->cap ? 2 * rc->cap : 64;
            eng_cache_rec *nr = realloc(rc->recs, nc * sizeof(*nr));
            if (nr == NULL)
                return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
            rc->recs = nr;
            rc->cap = nc;
        }
        if (parse_rec(&rc->recs[rc->n], o, from))
            rc->n++;
    }
    return 0;
}

int eng_regcache_import(eng_build *b, kiln_error **err)
{
    if (b->spec->n_cache_from == 0 || b->spec->no_cache)
        return 0;
    eng_regcache *rc = calloc(1, sizeof(*rc));
    if (rc == NULL)
        return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
    b->regcache = rc;
    for (size_t i = 0; i < b->spec->n_cache_from; i++) {
        const char *ref = b->spec->cache_from[i].ref;
        char cfg[KILN_DIGEST_STRLEN + 1] = "";
        kiln_error *e = NULL;
        size_t before = rc->n;
        eng_note(b, "importing cache %s", ref);
        int r = eng_pusher_cache_records(b, &b->spec->cache_from[i], cfg, &e);
        if (r == 0)
            r = add_records(b, rc, cfg, i, &e);
        if (r < 0 && eng_canceled(b)) {
            *err = kiln_error_steal(&e);
            return r;
        }
        if (r < 0)
            eng_note(b, "warning: cache %s not used: %s", ref, e ? e->msg : "failed");
        else
            eng_note(b, "cache %s: %zu record(s)", ref, rc->n - before);
        kiln_error_free(&e);
    }
    if (rc->n > 1) /* recs is NULL while there are none */
        qsort(rc->recs, rc->n, sizeof(*rc->recs), rec_cmp);
    return 0;
}

static const eng_cache_rec *find_rec(const eng_regcache *rc, const char *key)
{
    if (rc == NULL || rc->n == 0)
        return NULL;
    eng_cache_rec k;
    snprintf(k.key, sizeof(k.key), "%s", key);
    const eng_cache_rec *r = bsearch(&k, rc->recs, rc->n, sizeof(k), key_cmp);
    while (r != NULL && r > rc->recs && strcmp(r[-1].key, key) == 0)
        r--;
    return r;
}

void eng_regcache_virtual(eng_build *b, eng_cached_step *cs)
{
    snprintf(cs->diff, sizeof(cs->diff), "%s/snapshots/" ENG_LAZY_LAYER_DIR, b->e->data_dir);
    snprintf(cs->id, sizeof(cs->id), "%.32s", cs->blob.digest + 7);
    /* Commit wants an existing directory; the pusher never packs this one
     * (psh_server_cache.c: a lazy layer without its bound blob fails). */
    if (mkdir(cs->diff, 0700) < 0 && errno != EEXIST)
        kiln_warn("engine", "mkdir %s: %s", cs->diff, strerror(errno));
}

int eng_regcache_rebind(eng_build *b, const eng_cached_step *cs, kiln_error **err)
{
    return eng_pusher_cache_bind(b, cs->diff, cs->id, &cs->blob, err);
}

int eng_regcache_defer(eng_build *b, const char *key, eng_cached_step *out, kiln_error **err)
{
    const eng_cache_rec *rec = find_rec(b->regcache, key);
    if (rec == NULL)
        return 0;
    kiln_error *e = NULL;
    int r;
    if (rec->layer) {
        r = eng_pusher_cache_blob(b, &b->spec->cache_from[rec->from], &rec->l, &e);
        if (r == 0)
            r = eng_cache_record_lazy(b, key, &rec->l, rec->created, out, &e);
        if (r == 0)
            r = eng_regcache_rebind(b, out, &e);
    } else {
        r = eng_cache_record_empty(b, key, out, &e);
        if (r == 0) {
            out->created = rec->created;
            r = eng_cache_rewrite(b, key, out, &e);
        }
    }
    if (r < 0 && eng_canceled(b)) {
        *err = kiln_error_steal(&e);
        return r;
    }
    if (r < 0) {
        eng_note(b, "warning: cache record %.19s not used: %s", key, e ? e->msg : "failed");
        kiln_error_free(&e);
        memset(out, 0, sizeof(*out));
        return 0;
    }
    return 1;
}

int eng_regcache_make(eng_build *b, const char *key, eng_cached_step *cs, kiln_error **err)
{
    char blob[ENG_PATH_MAX];
    snprintf(blob, sizeof(blob), "%s/store/blobs/sha256/%s", b->e->data_dir, cs->blob.digest + 7);
    /* Kiln's layers list every parent directory: no lower is consulted. */
    bld_layer layer = {.blob_path = blob,
                       .digest = cs->blob.digest,
                       .media = bld_layer_media_parse(cs->blob.media_type),
                       .diff_id = cs->blob.diff_id};
    eng_layer_ref l = cs->blob;
    int64_t created = cs->created;
    eng_step_tmp t = {0};
    char diff_id[KILN_DIGEST_STRLEN + 1];
    int r = eng_step_begin(b, &t, err);
    if (r < 0)
        return r;
    r = bld_layer_unpack(diff_id, &layer, t.diff, NULL, 0, err);
    if (r == 0)
        r = eng_step_commit(b, &t, key, cs, err);
    eng_step_abort(&t);
    if (r == 0 && (!cs->layer || cs->id[0] == '\0'))
        r = kiln_error_set(err, KILN_EINVAL, 0, "layer %s gave no step dir", l.digest);
    if (r == 0) {
        cs->created = created;
        r = eng_cache_rewrite(b, key, cs, err);
    }
    if (r == 0)
        r = eng_pusher_cache_bind(b, cs->diff, cs->id, &l, err);
    return r < 0 ? kiln_error_wrap(err, "cache layer %s", l.digest) : 0;
}

int eng_regcache_export(eng_build *b, const eng_cache_rec *recs, size_t n, kiln_error **err)
{
    eng_note(b, "exporting cache to %s (%zu record(s))", b->spec->cache_to->ref, n);
    return eng_pusher_cache_export(b, recs, n, err);
}

void eng_regcache_free(eng_build *b)
{
    if (b->regcache != NULL)
        free(b->regcache->recs);
    free(b->regcache);
    b->regcache = NULL;
    free(b->committed);
    b->committed = NULL;
    b->n_committed = 0;
}
