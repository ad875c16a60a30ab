/* index.json: loading and atomic replacement, and the reference operations on
 * top of it (resolve, tag, remove, list, inspect). */
#include "store_internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cleanup.h"
#include "ref.h"
/* ---- JSON helpers shared with the other store files ---- */

const char *psh_manifest_media_type(const cJSON *doc)
{
    const cJSON *mt = cJSON_GetObjectItemCaseSensitive(doc, "mediaType");
    if (cJSON_IsString(mt) && mt->valuestring[0])
        return mt->valuestring;
    if (cJSON_IsArray(cJSON_GetObjectItemCaseSensitive(doc, "manifests")))
        return PSH_MT_OCI_INDEX;
    if (cJSON_IsObject(cJSON_GetObjectItemCaseSensitive(doc, "config")))
        return PSH_MT_OCI_MANIFEST;
    return "";
}

bool psh_media_type_is_index(const char *mt)
{
    return strcmp(mt, PSH_MT_OCI_INDEX) == 0 || strcmp(mt, PSH_MT_DOCKER_LIST) == 0;
}

bool psh_media_type_is_manifest(const char *mt)
{
    return strcmp(mt, PSH_MT_OCI_MANIFEST) == 0 || strcmp(mt, PSH_MT_DOCKER_MANIFEST) == 0;
}

int psh_descriptor_from_json(psh_descriptor *d, const cJSON *obj, kiln_error **err)
{
    memset(d, 0, sizeof(*d));
    const cJSON *mt = cJSON_GetObjectItemCaseSensitive(obj, "mediaType");
    const cJSON *dg = cJSON_GetObjectItemCaseSensitive(obj, "digest");
    const cJSON *sz = cJSON_GetObjectItemCaseSensitive(obj, "size");
    if (!cJSON_IsString(dg) || !kiln_digest_valid(dg->valuestring))
        return kiln_error_set(err, KILN_EINVAL, 0, "descriptor without a valid sha256 digest");
    if (!cJSON_IsNumber(sz) || sz->valuedouble < 0 || sz->valuedouble > 9007199254740992.0 ||
        sz->valuedouble != (double)(uint64_t)sz->valuedouble)
        return kiln_error_set(err, KILN_EINVAL, 0, "descriptor %s has an invalid size",
                              dg->valuestring);
    if (cJSON_IsString(mt))
        snprintf(d->media_type, sizeof(d->media_type), "%s", mt->valuestring);
    memcpy(d->digest, dg->valuestring, KILN_DIGEST_STRLEN + 1);
    d->size = (uint64_t)sz->valuedouble;
    return 0;
}

cJSON *psh_descriptor_to_json(const psh_descriptor *d)
{
    cJSON *o = cJSON_CreateObject();
    if (o == NULL)
        return NULL;
    if ((d->media_type[0] && !cJSON_AddStringToObject(o, "mediaType", d->media_type)) ||
        !cJSON_AddStringToObject(o, "digest", d->digest) ||
        !cJSON_AddNumberToObject(o, "size", (double)d->size)) {
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}

int64_t psh_parse_rfc3339(const char *s)
{
    int y, mo, d, h, mi, sec, n = 0;
    if (s == NULL || sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d%n", &y, &mo, &d, &h, &mi, &sec, &n) != 6 ||
        n != 19)
        return -1;
    const char *p = s + n;
    if (*p == '.')
        for (p++; *p >= '0' && *p <= '9'; p++)
            ;
    long off = 0;
    if (*p == 'Z' || *p == 'z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        int oh, om, k = 0;
        if (sscanf(p + 1, "%2d:%2d%n", &oh, &om, &k) != 2 || k != 5)
            return -1;
        off = (oh * 3600L + om * 60L) * (*p == '-' ? -1 : 1);
        p += 6;
    } else {
        return -1;
    }
    if (*p != '\0')
        return -1;
    struct tm tm = {.tm_year = y - 1900,
                    .tm_mon = mo - 1,
                    .tm_mday = d,
                    .tm_hour = h,
                    .tm_min = mi,
                    .tm_sec = sec};
    return (int64_t)timegm(&tm) - off;
}

void psh_format_rfc3339(int64_t t, char *buf, size_t n)
{
    time_t tt = (time_t)t;
    struct tm tm;
    gmtime_r(&tt, &tm);
    strftime(buf, n, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* ---- index.json ---- */

int psh_store_index_load(const psh_store *s, cJSON **out, kiln_error **err)
{
    *out = NULL;
    _cleanup_close_ int fd = openat(s->root_fd, "index.json", O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0 && errno != ENOENT)
        return kiln_error_set(err, KILN_EIO, errno, "open %s/index.json", s->path);
    cJSON *idx = NULL;
    if (fd >= 0) {
        struct stat st;
        if (fstat(fd, &st) < 0)
            return kiln_error_set(err, KILN_EIO, errno, "stat %s/index.json", s->path);
        if ((uint64_t)st.st_size > PSH_INDEX_MAX)
            return kiln_error_set(err, KILN_ENOSPC, 0, "%s/index.json exceeds %zu bytes", s->path,
                                  PSH_INDEX_MAX);
        _cleanup_free_ char *buf = malloc((size_t)st.st_size + 1);
        if (buf == NULL)
            return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
        size_t got = 0;
        for (;;) {
            ssize_t n = read(fd, buf + got, (size_t)st.st_size - got);
            if (n < 0 && errno == EINTR)
                continue;
            if (n < 0)
                return kiln_error_set(err, KILN_EIO, errno, "read %s/index.json", s->path);
            if (n == 0 || (got += (size_t)n) == (size_t)st.st_size)
                break;
        }
        buf[got] = '\0';
        idx = cJSON_ParseWithLength(buf, got);
        if (!cJSON_IsObject(idx)) {
            cJSON_Delete(idx);
            return kiln_error_set(err, KILN_EINTERNAL, 0, "%s/index.json is not a JSON object",
                                  s->path);
        }
    } else {
        idx = cJSON_CreateObject();
        if (idx == NULL || !cJSON_AddNumberToObject(idx, "schemaVersion", 2) ||
            !cJSON_AddStringToObject(idx, "mediaType", PSH_MT_OCI_INDEX)) {
            cJSON_Delete(idx);
            return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
        }
    }
    cJSON *m = cJSON_GetObjectItemCaseSensitive(idx, "manifests");
    if (m == NULL && (m = cJSON_AddArrayToObject(idx, "manifests")) == NULL) {
        cJSON_Delete(idx);
        return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
    }
    if (!cJSON_IsArray(m)) {
        cJSON_Delete(idx);
        return kiln_error_set(err, KILN_EINTERNAL, 0, "%s/index.json: manifests is not a list",
                              s->path);
    }
    *out = idx;
    return 0;
}

int psh_store_index_save(const psh_store *s, const cJSON *index, kiln_error **err)
{
    _cleanup_free_ char *text = cJSON_PrintUnformatted(index);
    if (text == NULL)
        return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
    return kiln_atomic_write_at(s->tmp_fd, s->root_fd, "index.json", text, strlen(text), 0644, 0,
                                err);
}

int psh_store_read_json(const psh_store *s, const char *digest, cJSON **out, kiln_error **err)
{
    *out = NULL;
    _cleanup_free_ char *buf = NULL;
    size_t len = 0;
    int r = psh_store_read_blob(s, digest, PSH_MANIFEST_MAX, &buf, &len, err);
    if (r < 0)
        return r;
    cJSON *j = cJSON_ParseWithLength(buf, len);
    if (!cJSON_IsObject(j)) {
        cJSON_Delete(j);
        return kiln_error_set(err, KILN_EINVAL, 0, "blob %s is not a JSON object", digest);
    }
    *out = j;
    return 0;
}

/* ---- resolving ---- */

static const char *entry_ref_name(const cJSON *entry)
{
    const cJSON *a = cJSON_GetObjectItemCaseSensitive(entry, "annotations");
    const cJSON *n = cJSON_GetObjectItemCaseSensitive(a, PSH_ANNOT_REF_NAME);
    return cJSON_IsString(n) ? n->valuestring : NULL;
}

static const char *entry_digest(const cJSON *entry)
{
    const cJSON *d = cJSON_GetObjectItemCaseSensitive(entry, "digest");
    return cJSON_IsString(d) ? d->valuestring : "";
}

/* An entry carries the tag query when its ref.name is the query verbatim, or
 * parses to the same reference (familiar vs fully qualified spellings). */
static bool entry_has_tag(const cJSON *entry, const char *query, const kiln_ref *q)
{
    const char *name = entry_ref_name(entry);
    if (name == NULL)
        return false;
    if (strcmp(name, query) == 0)
        return true;
    kiln_ref e;
    if (q == NULL || kiln_ref_parse(&e, name, KILN_REF_DEFAULT_TAG, NULL) < 0)
        return false;
    return kiln_ref_equal(&e, q);
}

/* Descriptor for a digest: from index.json when listed, else from the blob. */
static int resolve_digest(const psh_store *s, const cJSON *idx, const char *digest,
                          psh_descriptor *out, kiln_error **err)
{
    const cJSON *e;
    cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(idx, "manifests"))
    {
        if (strcmp(entry_digest(e), digest) == 0 && psh_descriptor_from_json(out, e, NULL) == 0)
            return 0;
    }
    if (!psh_store_has_blob(s, digest))
        return kiln_error_set(err, KILN_ENOENT, 0, "image %s not found in the store", digest);
    _cleanup_cjson_ cJSON *doc = NULL;
    kiln_error *inner = NULL;
    if (psh_store_read_json(s, digest, &doc, &inner) < 0) {
        kiln_error_free(&inner);
        return kiln_error_set(err, KILN_EINVAL, 0, "%s is not a manifest or index", digest);
    }
    const char *mt = psh_manifest_media_type(doc);
    if (!psh_media_type_is_index(mt) && !psh_media_type_is_manifest(mt))
        return kiln_error_set(err, KILN_EINVAL, 0, "%s is not a manifest or index", digest);
    uint64_t size = 0;
    _cleanup_close_ int fd = -1;
    int r = psh_store_open_blob(s, digest, &fd, &size, err);
    if (r < 0)
        return r;
    snprintf(out->media_type, sizeof(out->media_type), "%s", mt);
    memcpy(out->digest, digest, KILN_DIGEST_STRLEN + 1);
    out->size = size;
    return 0;
}

/* Finds the index entry for a tag query; NULL when absent. */
static cJSON *find_tag(cJSON *idx, const char *query, const kiln_ref *q)
{
    cJSON *e;
    cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(idx, "manifests"))
    {
        if (entry_has_tag(e, query, NULL))
            return e;
    }
    cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(idx, "manifests"))
    {
        if (entry_has_tag(e, query, q))
            return e;
    }
    return NULL;
}

/* Resolves against an already loaded index; *entry (may be NULL) is the
 * matching index entry when there is one. */
static int resolve_in(const psh_store *s, cJSON *idx, const char *query, psh_descriptor *out,
                      cJSON **entry, kiln_error **err)
{
    memset(out, 0, sizeof(*out));
    if (entry)
        *entry = NULL;
    if (query == NULL || query[0] == '\0')
        return kiln_error_set(err, KILN_EINVAL, 0, "empty image reference");
    if (strncmp(query, "sha256:", 7) == 0) {
        if (!kiln_digest_valid(query))
            return kiln_error_set(err, KILN_EINVAL, 0,
                                  "invalid digest \"%.80s\": want sha256:<64 lower-case hex>",
                                  query);
        return resolve_digest(s, idx, query, out, err);
    }
    cJSON *e = find_tag(idx, query, NULL);
    kiln_ref q;
    if (e == NULL) {
        int r = kiln_ref_parse(&q, query, KILN_REF_DEFAULT_TAG, err);
        if (r < 0)
            return r;
        if (q.digest[0])
            return resolve_digest(s, idx, q.digest, out, err);
        e = find_tag(idx, query, &q);
    }
    if (e == NULL)
        return kiln_error_set(err, KILN_ENOENT, 0, "image \"%s\" not found in the store", query);
    if (entry)
        *entry = e;
    int r = psh_descriptor_from_json(out, e, err);
    if (r < 0)
        kiln_error_wrap(err, "index.json entry for %s", query);
    return r;
}

int psh_store_resolve(const psh_store *s, const char *ref, psh_descriptor *out, kiln_error **err)
{
    _cleanup_cjson_ cJSON *idx = NULL;
    int r = psh_store_index_load(s, &idx, err);
    if (r < 0)
        return r;
    return resolve_in(s, idx, ref, out, NULL, err);
}

/* ---- tagging ---- */

/* Inserts entry (owned) under the normalised tag dst, replacing whatever
 * carried that tag before.  Takes the writer lock. */
static int tag_entry(psh_store *s, cJSON *entry, const char *dst, kiln_error **err)
{
    _cleanup_cjson_ cJSON *owned = entry;
    kiln_ref q;
    int r = kiln_ref_parse(&q, dst, KILN_REF_DEFAULT_TAG | KILN_REF_NO_DIGEST, err);
    if (r < 0)
        return r;
    if (strncmp(dst, "sha256:", 7) == 0)
        return kiln_error_set(err, KILN_EINVAL, 0,
                              "invalid tag \"%.80s\": looks like a digest, not a name", dst);
    char name[KILN_REF_STRMAX];
    kiln_ref_familiar(&q, name, sizeof(name));

    cJSON *ann = cJSON_GetObjectItemCaseSensitive(entry, "annotations");
    if (!cJSON_IsObject(ann)) {
        cJSON_DeleteItemFromObjectCaseSensitive(entry, "annotations");
        ann = cJSON_AddObjectToObject(entry, "annotations");
    }
    cJSON_DeleteItemFromObjectCaseSensitive(ann, PSH_ANNOT_REF_NAME);
    if (ann == NULL || !cJSON_AddStringToObject(ann, PSH_ANNOT_REF_NAME, name))
        return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");

    _cleanup_close_ int lock = -1;
    if ((r = psh_store_lock(s, &lock, err)) < 0)
        return r;
    /* Checked under the lock: GC holds it for its whole run, so the manifest
     * cannot vanish between this check and the new entry. */
    if (!psh_store_has_blob(s, entry_digest(entry)))
        return kiln_error_set(err, KILN_ENOENT, 0, "manifest %s not in the store",
                              entry_digest(entry));
    _cleanup_cjson_ cJSON *idx = NULL;
    if ((r = psh_store_index_load(s, &idx, err)) < 0)
        return r;
    cJSON *list = cJSON_GetObjectItemCaseSensitive(idx, "manifests");
    /* The new entry takes the place of the first one with this tag; other
     * entries with it go.  (Not cJSON_InsertItemInArray: Debian's cJSON
     * 1.7.15 refuses to insert before the last item, and the entry would
     * silently be lost.) */
    cJSON *item = steal_pointer(&owned);
    bool placed = false;
    for (cJSON *e = list->child, *next = NULL; e != NULL; e = next) {
        next = e->next;
        if (!entry_has_tag(e, name, &q))
            continue;
        if (!placed) {
            if (!cJSON_ReplaceItemViaPointer(list, e, item)) {
                cJSON_Delete(item);
                return kiln_error_set(err, KILN_EINTERNAL, 0, "index.json: cannot replace %s",
                                      name);
            }
            placed = true;
        } else {
            cJSON_Delete(cJSON_DetachItemViaPointer(list, e));
        }
    }
    if (!placed && !cJSON_AddItemToArray(list, item)) {
        cJSON_Delete(item);
        return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
    }
    return psh_store_index_save(s, idx, err);
}

static cJSON *entry_from(const psh_descriptor *d, const char *os, const char *arch,
                         const char *variant)
{
    cJSON *e = psh_descriptor_to_json(d);
    if (e == NULL || os == NULL || arch == NULL || !os[0] || !arch[0])
        return e;
    cJSON *p = cJSON_AddObjectToObject(e, "platform");
    if (p == NULL || !cJSON_AddStringToObject(p, "architecture", arch) ||
        !cJSON_AddStringToObject(p, "os", os) ||
        (variant && variant[0] && !cJSON_AddStringToObject(p, "variant", variant))) {
        cJSON_Delete(e);
        return NULL;
    }
    return e;
}

int psh_store_tag_descriptor(psh_store *s, const psh_descriptor *d, const char *os,
                             const char *arch, const char *variant, const char *dst,
                             kiln_error **err)
{
    if (!kiln_digest_valid(d->digest))
        return kiln_error_set(err, KILN_EINVAL, 0, "invalid digest \"%.80s\"", d->digest);
    cJSON *e = entry_from(d, os, arch, variant);
    if (e == NULL)
        return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
    return tag_entry(s, e, dst, err);
}

int psh_store_tag(psh_store *s, const char *src, const char *dst, kiln_error **err)
{
    _cleanup_cjson_ cJSON *idx = NULL;
    int r = psh_store_index_load(s, &idx, err);
    if (r < 0)
        return r;
    psh_descriptor d;
    cJSON *src_entry = NULL;
    if ((r = resolve_in(s, idx, src, &d, &src_entry, err)) < 0)
        return r;
    cJSON *e = NULL;
    if (src_entry != NULL) { /* keep platform and other annotations */
        e = cJSON_Duplicate(src_entry, 1);
    } else {
        e = entry_from(&d, NULL, NULL, NULL);
    }
    if (e == NULL)
        return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
    return tag_entry(s, e, dst, err);
}

int psh_store_remove(psh_store *s, const char *ref, kiln_error **err)
{
    if (ref == NULL || ref[0] == '\0')
        return kiln_error_set(err, KILN_EINVAL, 0, "empty image reference");
    char digest[KILN_DIGEST_STRLEN + 1] = "";
    kiln_ref q;
    bool parsed = false;
    _cleanup_(kiln_error_free) kiln_error *perr = NULL;
    if (strncmp(ref, "sha256:", 7) == 0) {
        if (!kiln_digest_valid(ref))
            return kiln_error_set(err, KILN_EINVAL, 0, "invalid digest \"%.80s\"", ref);
        memcpy(digest, ref, sizeof(digest));
    } else {
        /* An unparsable ref may still be another tool's plain ref.name. */
        parsed = kiln_ref_parse(&q, ref, KILN_REF_DEFAULT_TAG, &perr) == 0;
        if (parsed && q.digest[0])
            memcpy(digest, q.digest, sizeof(digest));
    }
    _cleanup_close_ int lock = -1;
    int r = psh_store_lock(s, &lock, err);
    if (r < 0)
        return r;
    _cleanup_cjson_ cJSON *idx = NULL;
    if ((r = psh_store_index_load(s, &idx, err)) < 0)
        return r;
    cJSON *list = cJSON_GetObjectItemCaseSensitive(idx, "manifests");
    int removed = 0;
    for (cJSON *e = list->child, *next = NULL; e != NULL; e = next) {
        next = e->next;
        bool hit = digest[0] ? strcmp(entry_digest(e), digest) == 0
                             : entry_has_tag(e, ref, parsed ? &q : NULL);
        if (hit) {
            cJSON_Delete(cJSON_DetachItemViaPointer(list, e));
            removed++;
        }
    }
    if (removed == 0 && perr != NULL) {
        if (err != NULL && *err == NULL)
            *err = kiln_error_steal(&perr);
        return KILN_EINVAL;
    }
    if (removed == 0)
        return kiln_error_set(err, KILN_ENOENT, 0, "image \"%s\" not found in the store", ref);
    return psh_store_index_save(s, idx, err);
}

/* ---- list and inspect ---- */

static void list_fill(const psh_store *s, const cJSON *entry, psh_image_info *it)
{
    const cJSON *plat = cJSON_GetObjectItemCaseSensitive(entry, "platform");
    const cJSON *os = cJSON_GetObjectItemCaseSensitive(plat, "os");
    const cJSON *arch = cJSON_GetObjectItemCaseSensitive(plat, "architecture");
    const cJSON *var = cJSON_GetObjectItemCaseSensitive(plat, "variant");
    it->size = it->manifest.size;
    _cleanup_cjson_ cJSON *doc = NULL;
    _cleanup_cjson_ cJSON *cfg = NULL;
    if (psh_store_read_json(s, it->manifest.digest, &doc, NULL) == 0) {
        const cJSON *c = cJSON_GetObjectItemCaseSensitive(doc, "config");
        const cJSON *layers = cJSON_GetObjectItemCaseSensitive(doc, "layers");
        const cJSON *l;
        psh_descriptor d;
        if (psh_descriptor_from_json(&d, c, NULL) == 0) {
            it->size += d.size;
            psh_store_read_json(s, d.digest, &cfg, NULL);
        }
        cJSON_ArrayForEach(l, layers)
        {
            if (psh_descriptor_from_json(&d, l, NULL) == 0)
                it->size += d.size;
        }
        cJSON_ArrayForEach(l, cJSON_GetObjectItemCaseSensitive(doc, "manifests"))
        {
            if (psh_descriptor_from_json(&d, l, NULL) == 0)
                it->size += d.size;
        }
    }
    if (cfg != NULL) {
        const cJSON *cr = cJSON_GetObjectItemCaseSensitive(cfg, "created");
        it->created = cJSON_IsString(cr) ? psh_parse_rfc3339(cr->valuestring) : -1;
        os = cJSON_IsString(os) ? os : cJSON_GetObjectItemCaseSensitive(cfg, "os");
        arch = cJSON_IsString(arch) ? arch : cJSON_GetObjectItemCaseSensitive(cfg, "architecture");
        var = cJSON_IsString(var) ? var : cJSON_GetObjectItemCaseSensitive(cfg, "variant");
    }
    if (cJSON_IsString(os))
        snprintf(it->os, sizeof(it->os), "%s", os->valuestring);
    if (cJSON_IsString(arch))
        snprintf(it->architecture, sizeof(it->architecture), "%s", arch->valuestring);
    if (cJSON_IsString(var))
        snprintf(it->variant, sizeof(it->variant), "%s", var->valuestring);
}

int psh_store_list(const psh_store *s, psh_image_list *out, kiln_error **err)
{
    out->items = NULL;
    out->n = 0;
    _cleanup_cjson_ cJSON *idx = NULL;
    int r = psh_store_index_load(s, &idx, err);
    if (r < 0)
        return r;
    const cJSON *list = cJSON_GetObjectItemCaseSensitive(idx, "manifests");
    int n = cJSON_GetArraySize(list);
    if (n == 0)
        return 0;
    out->items = calloc((size_t)n, sizeof(*out->items));
    if (out->items == NULL)
        return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
    const cJSON *e;
    cJSON_ArrayForEach(e, list)
    {
        psh_image_info *it = &out->items[out->n];
        it->created = -1;
        if (psh_descriptor_from_json(&it->manifest, e, NULL) < 0)
            continue; /* a malformed entry written by someone else */
        const char *name = entry_ref_name(e);
        if (name != NULL && (it->ref = strdup(name)) == NULL) {
            psh_image_list_dispose(out);
            return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
        }
        list_fill(s, e, it);
        out->n++;
    }
    return 0;
}

#define UNTAGGED_DOC_MAX ((off_t)256 << 10) /* manifests are small; layers are not read */

static int add_untagged(const psh_store *s, psh_image_list *out, const char *digest, off_t size,
                        const char *media_type, kiln_error **err)
{
    psh_image_info *ni = realloc(out->items, (out->n + 1) * sizeof(*ni));
    if (ni == NULL)
        return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
    out->items = ni;
    psh_image_info *it = &ni[out->n];
    memset(it, 0, sizeof(*it));
    it->created = -1;
    snprintf(it->manifest.digest, sizeof(it->manifest.digest), "%s", digest);
    snprintf(it->manifest.media_type, sizeof(it->manifest.media_type), "%s", media_type);
    it->manifest.size = (uint64_t)size;
    list_fill(s, NULL, it);
    out->n++;
    return 0;
}

int psh_store_list_untagged(const psh_store *s, psh_image_list *out, kiln_error **err)
{
    _cleanup_cjson_ cJSON *idx = NULL;
    int r = psh_store_index_load(s, &idx, err);
    if (r < 0)
        return r;
    psh_dset reached = {0}, docs = {0};
    const cJSON *e;
    cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(idx, "manifests"))
    {
        psh_descriptor d;
        if (psh_descriptor_from_json(&d, e, NULL) == 0 &&
            (r = psh_store_collect(s, d.digest, &reached, false, err)) < 0)
            goto out;
    }
    /* First pass: the small JSON documents not reached; indexes among them
     * reach their children too (those are no images of their own). */
    int dfd = dup(s->blobs_fd);
    DIR *dir = dfd < 0 ? NULL : fdopendir(dfd);
    if (dir == NULL) {
        if (dfd >= 0)
            close(dfd);
        r = kiln_error_set(err, KILN_EIO, errno, "read %s/blobs/sha256", s->path);
        goto out;
    }
    rewinddir(dir);
    psh_dset_sort(&reached);
    struct dirent *de;
    char digest[KILN_DIGEST_STRLEN + 1];
    while ((de = readdir(dir)) != NULL) {
        struct stat st;
        if (strlen(de->d_name) != 64 || strspn(de->d_name, "0123456789abcdef") != 64)
            continue;
        snprintf(digest, sizeof(digest), "sha256:%.64s", de->d_name);
        if (psh_dset_has(&reached, digest) ||
            fstatat(s->blobs_fd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0 ||
            !S_ISREG(st.st_mode) || st.st_size > UNTAGGED_DOC_MAX)
            continue;
        _cleanup_cjson_ cJSON *doc = NULL;
        if (psh_store_read_json(s, digest, &doc, NULL) < 0)
            continue;
        const char *mt = psh_manifest_media_type(doc);
        if (psh_media_type_is_index(mt)) {
            const cJSON *c;
            cJSON_ArrayForEach(c, cJSON_GetObjectItemCaseSensitive(doc, "manifests"))
            {
                psh_descriptor cd;
                if (psh_descriptor_from_json(&cd, c, NULL) == 0 &&
                    (r = psh_dset_add(&reached, cd.digest, err)) < 0)
                    break;
            }
        } else if (psh_media_type_is_manifest(mt) &&
                   cJSON_IsArray(cJSON_GetObjectItemCaseSensitive(doc, "layers"))) {
            /* an image manifest: its config is a descriptor (a docker-save
             * "json" file also has a "config" object, but no layers) */
            psh_descriptor cd;
            if (psh_descriptor_from_json(&cd, cJSON_GetObjectItemCaseSensitive(doc, "config"),
                                         NULL) == 0)
                r = psh_dset_add(&docs, digest, err);
        }
        if (r < 0)
            break;
    }
    closedir(dir);
    psh_dset_sort(&reached);
    for (size_t i = 0; r == 0 && i < docs.n; i++) {
        struct stat st;
        if (psh_dset_has(&reached, docs.v[i]) || fstatat(s->blobs_fd, docs.v[i] + 7, &st, 0) < 0)
            continue;
        _cleanup_cjson_ cJSON *doc = NULL;
        if (psh_store_read_json(s, docs.v[i], &doc, NULL) < 0)
            continue;
        r = add_untagged(s, out, docs.v[i], st.st_size, psh_manifest_media_type(doc), err);
    }
out:
    psh_dset_dispose(&reached);
    psh_dset_dispose(&docs);
    return r;
}

void psh_image_list_dispose(psh_image_list *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->items[i].ref);
    free(l->items);
    l->items = NULL;
    l->n = 0;
}

/* The uncompressed size of each layer the manifest lists, as far as known;
 * left empty on allocation failure (the sizes are then unknown). */
static void layer_sizes(const psh_store *s, const cJSON *doc, psh_inspect *out)
{
    const cJSON *layers = cJSON_GetObjectItemCaseSensitive(doc, "layers");
    int n = cJSON_IsArray(layers) ? cJSON_GetArraySize(layers) : 0;
    if (n <= 0 || (out->layer_tar_sizes = calloc((size_t)n, sizeof(uint64_t))) == NULL)
        return;
    const cJSON *l;
    bool all = true;
    cJSON_ArrayForEach(l, layers)
    {
        const cJSON *d = cJSON_GetObjectItemCaseSensitive(l, "digest");
        const cJSON *z = cJSON_GetObjectItemCaseSensitive(l, "size");
        uint64_t t = cJSON_IsString(d) ? psh_store_tar_size(s, d->valuestring) : 0;
        out->layer_tar_sizes[out->n_layers++] = t;
        out->layers_size += cJSON_IsNumber(z) && z->valuedouble > 0 ? (uint64_t)z->valuedouble : 0;
        out->layers_tar_size += t;
        all = all && t;
    }
    if (!all) /* a partial sum would understate the image */
        out->layers_tar_size = 0;
}

int psh_store_inspect(const psh_store *s, const char *ref, psh_inspect *out, kiln_error **err)
{
    memset(out, 0, sizeof(*out));
    int r = psh_store_resolve(s, ref, &out->manifest, err);
    if (r < 0)
        return r;
    if ((r = psh_store_read_blob(s, out->manifest.digest, PSH_MANIFEST_MAX, &out->manifest_json,
                                 &out->manifest_len, err)) < 0)
        goto out;
    cJSON *doc = cJSON_ParseWithLength(out->manifest_json, out->manifest_len);
    psh_descriptor cfg;
    const cJSON *c = cJSON_GetObjectItemCaseSensitive(doc, "config");
    bool is_index = cJSON_IsArray(cJSON_GetObjectItemCaseSensitive(doc, "manifests"));
    layer_sizes(s, doc, out);
    r = doc == NULL
            ? kiln_error_set(err, KILN_EINVAL, 0, "manifest %s is not JSON", out->manifest.digest)
        : is_index ? 0
                   : psh_descriptor_from_json(&cfg, c, err);
    cJSON_Delete(doc);
    if (r < 0 || is_index)
        goto out;
    r = psh_store_read_blob(s, cfg.digest, PSH_MANIFEST_MAX, &out->config_json, &out->config_len,
                            err);
out:
    if (r < 0) {
        psh_inspect_dispose(out);
        kiln_error_wrap(err, "inspect %s", ref);
        return r;
    }
    return 0;
}

void psh_inspect_dispose(psh_inspect *i)
{
    free(i->manifest_json);
    free(i->config_json);
    free(i->layer_tar_sizes);
    i->manifest_json = i->config_json = NULL;
    i->layer_tar_sizes = NULL;
    i->n_layers = 0;
}
