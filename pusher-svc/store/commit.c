/* Image assembly (psh_commit.h): validate everything, pack the new layers into
 * the store, write the OCI config and manifest, tag. */
#include "psh_commit.h"
#include "store_internal.h"

#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "cleanup.h"
#include "ref.h"
static const char *const go_arches[] = {
    "386",    "amd64",    "arm",   "arm64",   "loong64", "mips",  "mipsle",
    "mips64", "mips64le", "ppc64", "ppc64le", "riscv64", "s390x", "wasm",
};

bool psh_platform_arch_valid(const char *arch)
{
    for (size_t i = 0; arch && i < KILN_ARRAY_SIZE(go_arches); i++)
        if (strcmp(arch, go_arches[i]) == 0)
            return true;
    return false;
}

void psh_commit_spec_init(psh_commit_spec *spec)
{
    memset(spec, 0, sizeof(*spec));
    spec->created = -1;
    spec->source_date_epoch = -1;
#ifdef PSH_HAVE_PACK
    psh_pack_opts_init(&spec->pack);
#else
    spec->pack.comp = PSH_COMP_GZIP;
    spec->pack.level = -1;
    spec->pack.source_date_epoch = -1;
#endif
}

void psh_commit_result_dispose(psh_commit_result *r)
{
    free(r->layers);
    r->layers = NULL;
    r->n_layers = 0;
}

/* ---- JSON building ---- */

static bool add_strv(cJSON *obj, const char *key, const psh_strv *v)
{
    if (!v->set)
        return true;
    cJSON *a = cJSON_AddArrayToObject(obj, key);
    for (size_t i = 0; a && i < v->n; i++) {
        cJSON *s = cJSON_CreateString(v->v[i] ? v->v[i] : "");
        if (s == NULL)
            return false;
        cJSON_AddItemToArray(a, s);
    }
    return a != NULL;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* {"k1":{},"k2":{}} with keys sorted and de-duplicated, as Go writes maps. */
static bool add_set(cJSON *obj, const char *key, const psh_strv *v)
{
    if (!v->set || v->n == 0)
        return true;
    _cleanup_free_ const char **keys = calloc(v->n, sizeof(*keys));
    cJSON *o = cJSON_AddObjectToObject(obj, key);
    if (keys == NULL || o == NULL)
        return false;
    for (size_t i = 0; i < v->n; i++)
        keys[i] = v->v[i] ? v->v[i] : "";
    qsort(keys, v->n, sizeof(*keys), cmp_str);
    for (size_t i = 0; i < v->n; i++)
        if ((i == 0 || strcmp(keys[i], keys[i - 1]) != 0) && !cJSON_AddObjectToObject(o, keys[i]))
            return false;
    return true;
}

static int cmp_kv(const void *a, const void *b)
{
    const psh_kv *x = *(const psh_kv *const *)a, *y = *(const psh_kv *const *)b;
    return strcmp(x->key, y->key);
}

/* Labels sorted by key; for a repeated key the last value wins. */
static bool add_labels(cJSON *obj, const psh_kv *labels, size_t n)
{
    if (n == 0)
        return true;
    _cleanup_free_ const psh_kv **v = calloc(n, sizeof(*v));
    cJSON *o = cJSON_AddObjectToObject(obj, "Labels");
    if (v == NULL || o == NULL)
        return false;
    size_t m = 0;
    for (size_t i = 0; i < n; i++)
        if (labels[i].key != NULL)
            v[m++] = &labels[i];
    /* Stable for equal keys: insertion sort keeps the original order. */
    for (size_t i = 1; i < m; i++)
        for (size_t j = i; j > 0 && cmp_kv(&v[j - 1], &v[j]) > 0; j--) {
            const psh_kv *t = v[j];
            v[j] = v[j - 1];
            v[j - 1] = t;
        }
    for (size_t i = 0; i < m; i++) {
        if (i + 1 < m && strcmp(v[i]->key, v[i + 1]->key) == 0)
            continue;
        if (!cJSON_AddStringToObject(o, v[i]->key, v[i]->value ? v[i]->value : ""))
            return false;
    }
    return true;
}

/* An integer written exactly, whatever its size (cJSON numbers are doubles). */
static bool add_int(cJSON *obj, const char *key, int64_t v)
{
    char num[24];
    snprintf(num, sizeof(num), "%lld", (long long)v);
    return cJSON_AddRawToObject(obj, key, num) != NULL;
}

static bool add_opt_str(cJSON *obj, const char *key, const char *v)
{
    return v == NULL || v[0] == '\0' || cJSON_AddStringToObject(obj, key, v) != NULL;
}

static bool add_healthcheck(cJSON *obj, const psh_healthcheck *h)
{
    if (!h->test.set)
        return true;
    cJSON *o = cJSON_AddObjectToObject(obj, "Healthcheck");
    return o && add_strv(o, "Test", &h->test) &&
           (h->interval_ns <= 0 || add_int(o, "Interval", h->interval_ns)) &&
           (h->timeout_ns <= 0 || add_int(o, "Timeout", h->timeout_ns)) &&
           (h->start_period_ns <= 0 || add_int(o, "StartPeriod", h->start_period_ns)) &&
           (h->start_interval_ns <= 0 || add_int(o, "StartInterval", h->start_interval_ns)) &&
           (h->retries <= 0 || add_int(o, "Retries", h->retries));
}

/* The "config" object, in Docker's field order. */
static bool add_image_config(cJSON *cfg, const psh_image_config *c)
{
    cJSON *o = cJSON_AddObjectToObject(cfg, "config");
    return o && add_opt_str(o, "User", c->user) && add_set(o, "ExposedPorts", &c->exposed_ports) &&
           add_strv(o, "Env", &c->env) && add_strv(o, "Entrypoint", &c->entrypoint) &&
           add_strv(o, "Cmd", &c->cmd) && add_healthcheck(o, &c->healthcheck) &&
           add_set(o, "Volumes", &c->volumes) && add_opt_str(o, "WorkingDir", c->working_dir) &&
           add_labels(o, c->labels, c->n_labels) && add_strv(o, "OnBuild", &c->on_build) &&
           add_opt_str(o, "StopSignal", c->stop_signal) && add_strv(o, "Shell", &c->shell);
}

static bool add_history(cJSON *list, const psh_history_entry *h, int64_t created)
{
    char ts[32];
    cJSON *o = cJSON_CreateObject();
    if (o == NULL)
        return false;
    cJSON_AddItemToArray(list, o);
    psh_format_rfc3339(h->created >= 0 ? h->created : created, ts, sizeof(ts));
    return cJSON_AddStringToObject(o, "created", ts) &&
           add_opt_str(o, "created_by", h->created_by) && add_opt_str(o, "comment", h->comment) &&
           (!h->empty_layer || cJSON_AddTrueToObject(o, "empty_layer"));
}

/* ---- validation ---- */

struct base {
    cJSON *manifest;
    cJSON *config;
    const cJSON *layers;   /* borrowed from manifest */
    const cJSON *diff_ids; /* borrowed from config */
    const cJSON *history;  /* borrowed from config; may be NULL */
    psh_descriptor config_desc;
};

static void base_dispose(struct base *b)
{
    cJSON_Delete(b->manifest);
    cJSON_Delete(b->config);
}

static int load_base(psh_store *s, const char *digest, struct base *b, kiln_error **err)
{
    if (!kiln_digest_valid(digest))
        return kiln_error_set(err, KILN_EINVAL, 0,
                              "base image \"%.80s\": want a manifest digest sha256:<64 hex>",
                              digest);
    if (!psh_store_has_blob(s, digest))
        return kiln_error_set(err, KILN_ENOENT, 0, "base image %s is not in the store", digest);
    int r = psh_store_read_json(s, digest, &b->manifest, err);
    if (r < 0)
        return r;
    if (!psh_media_type_is_manifest(psh_manifest_media_type(b->manifest)))
        return kiln_error_set(err, KILN_EINVAL, 0,
                              "base %s is not an image manifest (an index? pick a platform)",
                              digest);
    if ((r = psh_descriptor_from_json(
             &b->config_desc, cJSON_GetObjectItemCaseSensitive(b->manifest, "config"), err)) < 0)
        return r;
    b->layers = cJSON_GetObjectItemCaseSensitive(b->manifest, "layers");
    if (b->layers != NULL && !cJSON_IsArray(b->layers))
        return kiln_error_set(err, KILN_EINVAL, 0, "base %s: layers is not a list", digest);
    if (!psh_store_has_blob(s, b->config_desc.digest))
        return kiln_error_set(err, KILN_ENOENT, 0, "base %s: config %s is not in the store", digest,
                              b->config_desc.digest);
    if ((r = psh_store_read_json(s, b->config_desc.digest, &b->config, err)) < 0)
        return r;
    const cJSON *rootfs = cJSON_GetObjectItemCaseSensitive(b->config, "rootfs");
    b->diff_ids = cJSON_GetObjectItemCaseSensitive(rootfs, "diff_ids");
    b->history = cJSON_GetObjectItemCaseSensitive(b->config, "history");
    if (b->history != NULL && !cJSON_IsArray(b->history))
        b->history = NULL;
    if (cJSON_GetArraySize(b->diff_ids) != cJSON_GetArraySize(b->layers))
        return kiln_error_set(err, KILN_EINVAL, 0, "base %s: %d diff_ids for %d layers", digest,
                              cJSON_GetArraySize(b->diff_ids), cJSON_GetArraySize(b->layers));
    const cJSON *l;
    cJSON_ArrayForEach(l, b->layers)
    {
        psh_descriptor d;
        if ((r = psh_descriptor_from_json(&d, l, err)) < 0)
            return r;
        if (!psh_store_has_blob(s, d.digest))
            return kiln_error_set(err, KILN_ENOENT, 0, "base %s: layer %s is not in the store",
                                  digest, d.digest);
        if (d.media_type[0] == '\0')
            return kiln_error_set(err, KILN_EINVAL, 0, "base %s: layer %s has no media type",
                                  digest, d.digest);
    }
    cJSON_ArrayForEach(l, b->diff_ids)
    {
        if (!cJSON_IsString(l) || !kiln_digest_valid(l->valuestring))
            return kiln_error_set(err, KILN_EINVAL, 0, "base %s: invalid diff_id", digest);
    }
    return 0;
}

static int validate(psh_store *s, const psh_commit_spec *spec, char **dirs, kiln_error **err)
{
    for (size_t i = 0; i < spec->n_tags; i++) {
        kiln_ref r;
        const char *t = spec->tags[i] ? spec->tags[i] : "";
        if (strncmp(t, "sha256:", 7) == 0)
            return kiln_error_set(err, KILN_EINVAL, 0, "tag \"%.80s\" looks like a digest", t);
        if (kiln_ref_parse(&r, t, KILN_REF_DEFAULT_TAG | KILN_REF_NO_DIGEST, err) < 0)
            return KILN_EINVAL;
    }
    const psh_platform *p = &spec->platform;
    if (p->os == NULL || p->os[0] == '\0' || strchr(p->os, '/') != NULL)
        return kiln_error_set(err, KILN_EINVAL, 0, "platform: os is required (e.g. linux)");
    if (!psh_platform_arch_valid(p->architecture))
        return kiln_error_set(err, KILN_EINVAL, 0,
                              "platform: architecture \"%s\" is not a Go name (amd64, arm64, …)",
                              p->architecture ? p->architecture : "");
    if (spec->docker_schema2 && spec->n_layers > 0 && spec->pack.comp == PSH_COMP_ZSTD)
        return kiln_error_set(err, KILN_EINVAL, 0,
                              "zstd layers cannot be listed in a Docker schema 2 manifest");
    if (spec->n_history > 0) {
        size_t nonempty = 0;
        for (size_t i = 0; i < spec->n_history; i++)
            nonempty += !spec->history[i].empty_layer;
        if (nonempty != spec->n_layers)
            return kiln_error_set(err, KILN_EINVAL, 0,
                                  "history has %zu entries with a layer for %zu layers", nonempty,
                                  spec->n_layers);
    }
    for (size_t i = 0; dirs != NULL && i < spec->n_layers; i++) {
        int r = psh_store_confine(s, spec->diff_root, spec->layers[i], &dirs[i], err);
        if (r < 0) {
            kiln_error_wrap(err, "layer %zu", i);
            return r;
        }
        /* Never the store itself: its bookkeeping is nobody's image content. */
        size_t n = strlen(psh_store_path(s));
        if (strncmp(dirs[i], psh_store_path(s), n) == 0 &&
            (dirs[i][n] == '/' || dirs[i][n] == '\0'))
            return kiln_error_set(err, KILN_EPERM, 0, "layer %zu: %s is inside the image store", i,
                                  dirs[i]);
        struct stat st;
        if (stat(dirs[i], &st) < 0 || !S_ISDIR(st.st_mode))
            return kiln_error_set(err, KILN_EINVAL, 0, "layer %zu: %s is not a directory", i,
                                  dirs[i]);
    }
    return 0;
}

/* ---- assembly ---- */

/* Layer media types with the same bytes in both manifest formats. */
static const struct {
    const char *oci, *docker;
} layer_types[] = {
    {PSH_MT_OCI_LAYER_GZ, PSH_MT_DOCKER_LAYER_GZ},
    {PSH_MT_OCI_LAYER, "application/vnd.docker.image.rootfs.diff.tar"},
    {"application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
     "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"},
};

/* The media type a layer of type mt gets in an OCI (docker=false) or Docker
 * schema 2 manifest; NULL when Docker has no name for it (zstd). */
static const char *layer_type(const char *mt, bool docker)
{
    for (size_t i = 0; i < KILN_ARRAY_SIZE(layer_types); i++)
        if (strcmp(mt, layer_types[i].oci) == 0 || strcmp(mt, layer_types[i].docker) == 0)
            return docker ? layer_types[i].docker : layer_types[i].oci;
    return docker && strncmp(mt, "application/vnd.docker.", 23) != 0 ? NULL : mt;
}

/* Pins every blob of the base, then re-checks it is there: a GC that ran
 * before the pins were visible may have removed it. */
static int pin_base(psh_store *s, psh_store_pin *pin, const char *digest, struct base *b,
                    kiln_error **err)
{
    int r = psh_store_pin_add(s, pin, digest, err);
    if (r == 0)
        r = psh_store_pin_add(s, pin, b->config_desc.digest, err);
    const cJSON *l;
    cJSON_ArrayForEach(l, b->layers)
    {
        psh_descriptor d;
        if (r == 0 && (r = psh_descriptor_from_json(&d, l, err)) == 0 &&
            (r = psh_store_pin_add(s, pin, d.digest, err)) == 0 && !psh_store_has_blob(s, d.digest))
            r = kiln_error_set(err, KILN_ENOENT, 0, "base layer %s was removed", d.digest);
    }
    return r;
}

#ifdef PSH_HAVE_PACK
/* A remembered packing of this diff whose blob is still in the store; the
 * blob is pinned before it is trusted to stay. */
static bool cache_hit(psh_store *s, psh_store_pin *pin, const psh_commit_spec *spec, size_t idx,
                      const psh_pack_opts *opts, psh_layer_info *info)
{
    if (spec->pack_cache == NULL || spec->layer_keys == NULL || spec->layer_keys[idx] == NULL)
        return false;
    if (psh_pack_cache_lookup(spec->pack_cache, info, spec->layer_keys[idx], opts, NULL) < 0)
        return false;
    return psh_store_pin_add(s, pin, info->digest, NULL) == 0 &&
           psh_store_has_blob(s, info->digest);
}
#endif

static int pack_layer(psh_store *s, psh_store_pin *pin, const psh_commit_spec *spec, size_t idx,
                      const char *dir, psh_commit_layer *out, kiln_error **err)
{
#ifdef PSH_HAVE_PACK
    psh_pack_opts opts = spec->pack;
    opts.overlay_diff = true;
    opts.source_date_epoch = spec->source_date_epoch;
    psh_layer_info info;
    int r = 0;
    if (!cache_hit(s, pin, spec, idx, &opts, &info)) {
        psh_store_tmp t;
        if ((r = psh_store_tmp_open(s, &t, err)) < 0)
            return r;
        t.pin = pin;
        if ((r = psh_pack_dir(&info, dir, t.fd, &opts, err)) < 0) {
            psh_store_tmp_abort(s, &t);
            return r;
        }
        if ((r = psh_store_tmp_commit(s, &t, info.digest, NULL, NULL, err)) < 0)
            return r;
        /* Only a hint for next time: a failure to remember is not an error. */
        if (spec->pack_cache != NULL && spec->layer_keys != NULL && spec->layer_keys[idx])
            psh_pack_cache_store(spec->pack_cache, spec->layer_keys[idx], &opts, &info, NULL);
    }
    const char *mt = layer_type(info.media_type, spec->docker_schema2);
    snprintf(out->blob.media_type, sizeof(out->blob.media_type), "%s", mt ? mt : info.media_type);
    memcpy(out->blob.digest, info.digest, sizeof(info.digest));
    memcpy(out->diff_id, info.diff_id, sizeof(info.diff_id));
    out->blob.size = info.size;
    out->tar_size = info.tar_size;
    psh_store_note_tar_size(s, info.digest, info.tar_size);
    if (spec->layer_done)
        spec->layer_done(spec->layer_done_ud, idx, &info);
    return 0;
#else
    (void)s;
    (void)pin;
    (void)spec;
    (void)idx;
    (void)out;
    return kiln_error_set(err, KILN_ENOTSUP, 0, "%s: layer packing is not built in", dir);
#endif
}

/* The image config document (NULL on allocation failure). */
static cJSON *build_config(const psh_commit_spec *spec, const struct base *b,
                           const psh_commit_result *out)
{
    int64_t created = spec->created >= 0             ? spec->created
                      : spec->source_date_epoch >= 0 ? spec->source_date_epoch
                                                     : (int64_t)time(NULL);
    char ts[32];
    psh_format_rfc3339(created, ts, sizeof(ts));
    cJSON *cfg = cJSON_CreateObject();
    bool ok = cfg && cJSON_AddStringToObject(cfg, "created", ts) &&
              add_opt_str(cfg, "author", spec->author) &&
              cJSON_AddStringToObject(cfg, "architecture", spec->platform.architecture) &&
              cJSON_AddStringToObject(cfg, "os", spec->platform.os) &&
              add_opt_str(cfg, "variant", spec->platform.variant) &&
              add_image_config(cfg, &spec->config);
    cJSON *rootfs = ok ? cJSON_AddObjectToObject(cfg, "rootfs") : NULL;
    cJSON *ids = rootfs && cJSON_AddStringToObject(rootfs, "type", "layers")
                     ? cJSON_AddArrayToObject(rootfs, "diff_ids")
                     : NULL;
    for (size_t i = 0; ids && i < out->n_layers; i++)
        ok = ok && cJSON_AddItemToArray(ids, cJSON_CreateString(out->layers[i].diff_id));
    cJSON *hist = ids ? cJSON_AddArrayToObject(cfg, "history") : NULL;
    const cJSON *h;
    cJSON_ArrayForEach(h, b->history)
    {
        ok = ok && hist && cJSON_AddItemToArray(hist, cJSON_Duplicate(h, 1));
    }
    for (size_t i = 0; hist && i < spec->n_history; i++)
        ok = ok && add_history(hist, &spec->history[i], created);
    for (size_t i = 0; hist && spec->n_history == 0 && i < spec->n_layers; i++) {
        psh_history_entry gen = {.created_by = "kiln commit", .created = -1};
        ok = ok && add_history(hist, &gen, created);
    }
    if (!ok || hist == NULL) {
        cJSON_Delete(cfg);
        return NULL;
    }
    return cfg;
}

/* The image manifest document (NULL on allocation failure).  Base layers keep
 * their original descriptor (urls, annotations) with an OCI media type. */
/* The spec's "K=V" annotations as an object of man (none: nothing added). */
static bool add_annotations(cJSON *man, const psh_commit_spec *spec)
{
    cJSON *an = spec->n_annotations ? cJSON_AddObjectToObject(man, "annotations") : NULL;
    if (spec->n_annotations && an == NULL)
        return false;
    for (size_t i = 0; i < spec->n_annotations; i++) {
        const char *kv = spec->annotations[i], *eq = strchr(kv, '=');
        _cleanup_free_ char *k = eq ? strndup(kv, (size_t)(eq - kv)) : NULL;
        if (k == NULL)
            return false;
        cJSON_DeleteItemFromObjectCaseSensitive(an, k);
        if (cJSON_AddStringToObject(an, k, eq + 1) == NULL)
            return false;
    }
    return true;
}

static cJSON *build_manifest(const struct base *b, const psh_commit_result *out, bool docker,
                             const psh_commit_spec *spec)
{
    cJSON *man = cJSON_CreateObject();
    cJSON *cdesc = psh_descriptor_to_json(&out->config);
    bool ok = man && cdesc && add_int(man, "schemaVersion", 2) &&
              cJSON_AddStringToObject(man, "mediaType",
                                      docker ? PSH_MT_DOCKER_MANIFEST : PSH_MT_OCI_MANIFEST) &&
              cJSON_AddItemToObject(man, "config", cdesc);
    if (!ok)
        cJSON_Delete(cdesc);
    cJSON *layers = ok ? cJSON_AddArrayToObject(man, "layers") : NULL;
    size_t i = 0;
    const cJSON *l;
    cJSON_ArrayForEach(l, b->layers)
    {
        cJSON *d = layers ? cJSON_Duplicate(l, 1) : NULL;
        ok = d && cJSON_ReplaceItemInObjectCaseSensitive(
                      d, "mediaType", cJSON_CreateString(out->layers[i++].blob.media_type));
        if (!ok || !cJSON_AddItemToArray(layers, d)) {
            cJSON_Delete(d);
            ok = false;
            break;
        }
    }
    for (; ok && layers && i < out->n_layers; i++)
        ok = cJSON_AddItemToArray(layers, psh_descriptor_to_json(&out->layers[i].blob));
    if (!ok || layers == NULL || !add_annotations(man, spec)) {
        cJSON_Delete(man);
        return NULL;
    }
    return man;
}

/* Serialises doc once and stores exactly those bytes; fills d. */
static int store_json(psh_store *s, psh_store_pin *pin, const cJSON *doc, const char *media_type,
                      psh_descriptor *d, kiln_error **err)
{
    _cleanup_free_ char *text = cJSON_PrintUnformatted(doc);
    if (text == NULL)
        return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
    int r = psh_store_put_blob_bytes(s, pin, NULL, text, strlen(text), d->digest, err);
    if (r < 0)
        return r;
    snprintf(d->media_type, sizeof(d->media_type), "%s", media_type);
    d->size = strlen(text);
    return 0;
}

/* Writes config and manifest for the layers in out; fills out->config/manifest. */
static int write_image(psh_store *s, psh_store_pin *pin, const psh_commit_spec *spec,
                       const struct base *b, psh_commit_result *out, kiln_error **err)
{
    _cleanup_cjson_ cJSON *cfg = build_config(spec, b, out);
    if (cfg == NULL)
        return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory building the image config");
    bool docker = spec->docker_schema2;
    int r = store_json(s, pin, cfg, docker ? PSH_MT_DOCKER_CONFIG : PSH_MT_OCI_CONFIG, &out->config,
                       err);
    if (r < 0)
        return r;
    _cleanup_cjson_ cJSON *man = build_manifest(b, out, docker, spec);
    if (man == NULL)
        return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory building the manifest");
    /* Serialised once: these bytes are digested, stored and later pushed. */
    return store_json(s, pin, man, docker ? PSH_MT_DOCKER_MANIFEST : PSH_MT_OCI_MANIFEST,
                      &out->manifest, err);
}

static int apply_tags(psh_store *s, const psh_commit_spec *spec, const psh_commit_result *out,
                      kiln_error **err)
{
    for (size_t i = 0; i < spec->n_tags; i++) {
        int r = psh_store_tag_descriptor(s, &out->manifest, spec->platform.os,
                                         spec->platform.architecture, spec->platform.variant,
                                         spec->tags[i], err);
        if (r < 0)
            return r;
    }
    return 0;
}

int psh_commit_assemble(psh_store *s, psh_store_pin *pin, const psh_commit_spec *spec,
                        psh_commit_result *res, kiln_error **err)
{
    struct base none = {0};
    int r = validate(s, spec, NULL, err);
    if (r == 0)
        r = write_image(s, pin, spec, &none, res, err);
    return r < 0 ? r : apply_tags(s, spec, res, err);
}

static int commit_pinned(psh_store *s, psh_store_pin *pin, const psh_commit_spec *spec, char **dirs,
                         struct base *b, psh_commit_result *out, kiln_error **err)
{
    int r = 0;
    if (spec->base != NULL && (r = pin_base(s, pin, spec->base, b, err)) < 0)
        return r;
    size_t nbase = (size_t)cJSON_GetArraySize(b->layers);
    out->layers = calloc(nbase + spec->n_layers + 1, sizeof(*out->layers));
    if (out->layers == NULL)
        return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
    const cJSON *l;
    cJSON_ArrayForEach(l, b->layers)
    {
        psh_commit_layer *cl = &out->layers[out->n_layers];
        psh_descriptor_from_json(&cl->blob, l, NULL); /* validated by load_base */
        const char *mt = layer_type(cl->blob.media_type, spec->docker_schema2);
        if (mt == NULL)
            return kiln_error_set(err, KILN_EINVAL, 0,
                                  "base layer %s (%s) cannot be listed in a Docker manifest",
                                  cl->blob.digest, cl->blob.media_type);
        if (mt != cl->blob.media_type) /* never copy a string onto itself */
            snprintf(cl->blob.media_type, sizeof(cl->blob.media_type), "%s", mt);
        const cJSON *id = cJSON_GetArrayItem(b->diff_ids, (int)out->n_layers);
        snprintf(cl->diff_id, sizeof(cl->diff_id), "%s", id->valuestring);
        cl->from_base = true;
        cl->tar_size = psh_store_tar_size(s, cl->blob.digest);
        out->n_layers++;
    }
    for (size_t i = 0; i < spec->n_layers; i++) {
        if ((r = pack_layer(s, pin, spec, i, dirs[i], &out->layers[out->n_layers], err)) < 0) {
            kiln_error_wrap(err, "pack layer %zu (%s)", i, spec->layers[i]);
            return r;
        }
        out->n_layers++;
    }
    if ((r = write_image(s, pin, spec, b, out, err)) < 0)
        return r;
    return apply_tags(s, spec, out, err);
}

int psh_commit(psh_store *s, const psh_commit_spec *spec, psh_commit_result *out, kiln_error **err)
{
    memset(out, 0, sizeof(*out));
    struct base b = {0};
    psh_store_pin pin = {.fd = -1};
    char **dirs = calloc(spec->n_layers + 1, sizeof(*dirs));
    int r = 0;
    if (dirs == NULL) {
        r = kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
        goto out;
    }
    if ((r = validate(s, spec, dirs, err)) < 0)
        goto out;
    if (spec->base != NULL && (r = load_base(s, spec->base, &b, err)) < 0)
        goto out;
    if ((r = psh_store_pin_open(s, &pin, err)) < 0)
        goto out;
    r = commit_pinned(s, &pin, spec, dirs, &b, out, err);
out:
    psh_store_pin_close(s, &pin);
    base_dispose(&b);
    for (size_t i = 0; dirs && i < spec->n_layers; i++)
        free(dirs[i]);
    free(dirs);
    if (r < 0) {
        psh_commit_result_dispose(out);
        kiln_error_wrap(err, "commit");
    }
    return r;
}
