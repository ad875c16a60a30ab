/* Manifest lists: OCI image indexes kept as blobs in the store and tagged
 * like images.  Every change writes a new index blob and moves the tag; the
 * previous index stays until GC.  Pushing a list is psh_push on the index. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "platform.h"
#include "reg_internal.h"

static int load_list(psh_store *s, const char *list_ref, cJSON **out, kiln_error **err)
{
    psh_descriptor d;
    int r = psh_store_resolve(s, list_ref, &d, err);
    if (r < 0)
        return r;
    if (!reg_mt_is_index(d.media_type))
        return kiln_error_set(err, KILN_EPRECOND, 0, "%s is an image, not a manifest list",
                              list_ref);
    _cleanup_free_ char *bytes = NULL;
    size_t len = 0;
    if ((r = psh_store_read_blob(s, d.digest, PSH_MANIFEST_MAX, &bytes, &len, err)) < 0)
        return r;
    *out = cJSON_ParseWithLength(bytes, len);
    if (*out == NULL || !cJSON_IsArray(cJSON_GetObjectItemCaseSensitive(*out, "manifests"))) {
        cJSON_Delete(*out);
        *out = NULL;
        return kiln_error_set(err, KILN_EINTERNAL, 0, "index %s is malformed", d.digest);
    }
    return 0;
}

/* Stores idx as a new blob and points list_ref at it. */
static int save_list(psh_store *s, const char *list_ref, cJSON *idx, kiln_error **err)
{
    _cleanup_free_ char *txt = cJSON_PrintUnformatted(idx);
    if (txt == NULL)
        return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
    psh_descriptor d = {.media_type = PSH_MT_OCI_INDEX, .size = strlen(txt)};
    psh_store_pin pin = {.fd = -1};
    int r = psh_store_pin_open(s, &pin, err);
    if (r == 0)
        r = psh_store_put_blob_bytes(s, &pin, NULL, txt, d.size, d.digest, err);
    if (r == 0)
        r = psh_store_tag_descriptor(s, &d, NULL, NULL, NULL, list_ref, err);
    psh_store_pin_close(s, &pin);
    return r;
}

int psh_manifest_create(psh_store *s, const char *list_ref, kiln_error **err)
{
    kiln_ref r0;
    int r = kiln_ref_parse(&r0, list_ref ? list_ref : "", KILN_REF_DEFAULT_TAG | KILN_REF_NO_DIGEST,
                           err);
    if (r < 0)
        return r;
    psh_descriptor d;
    if (psh_store_resolve(s, list_ref, &d, NULL) == 0)
        return kiln_error_set(err, KILN_EEXIST, 0, "%s already exists", list_ref);
    _cleanup_cjson_ cJSON *idx = cJSON_CreateObject();
    if (idx == NULL || !cJSON_AddNumberToObject(idx, "schemaVersion", 2) ||
        !cJSON_AddStringToObject(idx, "mediaType", PSH_MT_OCI_INDEX) ||
        !cJSON_AddArrayToObject(idx, "manifests"))
        return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
    return save_list(s, list_ref, idx, err);
}

static const char *jstr(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsString(v) ? v->valuestring : "";
}

/* Descriptor and platform of a local image. */
static int local_image(psh_store *s, const char *ref, psh_descriptor *d, char *os, char *arch,
                       char *var, kiln_error **err)
{
    psh_inspect in;
    int r = psh_store_inspect(s, ref, &in, err);
    if (r < 0)
        return r;
    *d = in.manifest;
    if (in.config_json == NULL) {
        psh_inspect_dispose(&in);
        return kiln_error_set(err, KILN_ENOTSUP, 0, "%s is an index; add an image", ref);
    }
    _cleanup_cjson_ cJSON *cfg = cJSON_ParseWithLength(in.config_json, in.config_len);
    snprintf(os, 32, "%s", jstr(cfg, "os"));
    snprintf(arch, 32, "%s", jstr(cfg, "architecture"));
    snprintf(var, 16, "%s", jstr(cfg, "variant"));
    psh_inspect_dispose(&in);
    if (d->media_type[0] == '\0')
        snprintf(d->media_type, sizeof(d->media_type), "%s", PSH_MT_OCI_MANIFEST);
    return 0;
}

int psh_manifest_add(psh_store *s, const char *list_ref, const char *image_ref,
                     const psh_registry_opts *o, psh_descriptor *out, kiln_error **err)
{
    _cleanup_cjson_ cJSON *idx = NULL;
    int r = load_list(s, list_ref, &idx, err);
    if (r < 0)
        return r;
    psh_descriptor d;
    char os[32] = "", arch[32] = "", var[16] = "";
    psh_descriptor probe;
    if (psh_store_resolve(s, image_ref, &probe, NULL) == 0) {
        r = local_image(s, image_ref, &d, os, arch, var, err);
    } else {
        psh_registry_opts defaults;
        if (o == NULL) {
            psh_registry_opts_init(&defaults);
            o = &defaults;
        }
        r = reg_remote_image(s, image_ref, o, &d, os, sizeof(os), arch, sizeof(arch), var,
                             sizeof(var), err);
    }
    if (r < 0)
        return kiln_error_wrap(err, "add %s", image_ref);
    cJSON *ms = cJSON_GetObjectItemCaseSensitive(idx, "manifests");
    for (int i = cJSON_GetArraySize(ms) - 1; i >= 0; i--)
        if (strcmp(jstr(cJSON_GetArrayItem(ms, i), "digest"), d.digest) == 0)
            cJSON_DeleteItemFromArray(ms, i);
    cJSON *e = cJSON_CreateObject(), *pl = cJSON_CreateObject();
    if (e == NULL || pl == NULL || !cJSON_AddStringToObject(e, "mediaType", d.media_type) ||
        !cJSON_AddStringToObject(e, "digest", d.digest) ||
        !cJSON_AddNumberToObject(e, "size", (double)d.size) ||
        !cJSON_AddStringToObject(pl, "architecture", arch) ||
        !cJSON_AddStringToObject(pl, "os", os) ||
        (var[0] && !cJSON_AddStringToObject(pl, "variant", var))) {
        cJSON_Delete(e);
        cJSON_Delete(pl);
        return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
    }
    cJSON_AddItemToObject(e, "platform", pl);
    cJSON_AddItemToArray(ms, e);
    if ((r = save_list(s, list_ref, idx, err)) < 0)
        return r;
    if (out != NULL)
        *out = d;
    return 0;
}

static int set_field(cJSON *o, const char *k, const char *v)
{
    cJSON_DeleteItemFromObjectCaseSensitive(o, k);
    if (v[0] == '\0')
        return 0;
    return cJSON_AddStringToObject(o, k, v) ? 0 : -1;
}

int psh_manifest_annotate(psh_store *s, const char *list_ref, const char *digest, const char *os,
                          const char *arch, const char *variant, const char *const *annotations,
                          size_t n_annotations, kiln_error **err)
{
    /* Any spelling in, the normalised one stored (x86_64 -> amd64, armhf ->
     * arm/v7, ...).  The variant changes when given or implied by an alias. */
    kiln_platform norm;
    if (arch != NULL && arch[0] != '\0') {
        int r = kiln_platform_set(&norm, os && os[0] ? os : "linux", arch, variant, err);
        if (r < 0)
            return r;
        if (variant != NULL || strcmp(norm.arch, arch) != 0)
            variant = norm.variant;
        arch = norm.arch;
        if (os != NULL && os[0] != '\0')
            os = norm.os;
    }
    _cleanup_cjson_ cJSON *idx = NULL;
    int r = load_list(s, list_ref, &idx, err);
    if (r < 0)
        return r;
    cJSON *e, *hit = NULL;
    cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(idx, "manifests"))
    {
        if (strcmp(jstr(e, "digest"), digest) == 0)
            hit = e;
    }
    if (hit == NULL)
        return kiln_error_set(err, KILN_ENOENT, 0, "%s has no entry %s", list_ref, digest);
    cJSON *pl = cJSON_GetObjectItemCaseSensitive(hit, "platform");
    if (pl == NULL && (pl = cJSON_AddObjectToObject(hit, "platform")) == NULL)
        return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
    if ((os && set_field(pl, "os", os) < 0) || (arch && set_field(pl, "architecture", arch) < 0) ||
        (variant && set_field(pl, "variant", variant) < 0))
        return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
    if (n_annotations > 0) {
        cJSON *an = cJSON_GetObjectItemCaseSensitive(hit, "annotations");
        if (an == NULL && (an = cJSON_AddObjectToObject(hit, "annotations")) == NULL)
            return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
        for (size_t i = 0; i < n_annotations; i++) {
            const char *eq = strchr(annotations[i], '=');
            if (eq == NULL || eq == annotations[i])
                return kiln_error_set(err, KILN_EINVAL, 0, "annotation \"%.80s\" is not key=value",
                                      annotations[i]);
            _cleanup_free_ char *k = strndup(annotations[i], (size_t)(eq - annotations[i]));
            if (k == NULL || set_field(an, k, eq + 1) < 0)
                return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
        }
    }
    return save_list(s, list_ref, idx, err);
}

int psh_manifest_inspect(psh_store *s, const char *list_ref, char **out, kiln_error **err)
{
    psh_descriptor d;
    int r = psh_store_resolve(s, list_ref, &d, err);
    if (r < 0)
        return r;
    if (!reg_mt_is_index(d.media_type))
        return kiln_error_set(err, KILN_EPRECOND, 0, "%s is an image, not a manifest list",
                              list_ref);
    return psh_store_read_blob(s, d.digest, PSH_MANIFEST_MAX, out, NULL, err);
}
