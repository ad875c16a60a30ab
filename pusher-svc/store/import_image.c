/* Import of image archives: an oci-archive (a tar of an OCI image layout,
 * what `kiln export … oci-archive:F` and skopeo write) or a docker-archive
 * (what `docker save` writes: manifest.json + config + layer tars, or, from
 * Docker 25 on, the same inside an OCI layout).  Such a tar is imported as
 * the images it holds, never as one rootfs layer of files named oci-layout,
 * index.json and blobs/… (psh_transfer.h).
 *
 * One pass over the tar after a header-only pass that recognises it: every
 * regular file is streamed into a temp blob of the store and committed under
 * its digest (verified against its name for blobs/sha256/<hex>), pinned until
 * the image is tagged; the metadata files (index.json, manifest.json, the
 * configs) are read back from the store by digest.  No temp directory, no
 * chdir, no path from the tar is ever opened on disk.  Blobs of other images
 * in the archive, and the metadata files themselves, are left to GC. */
#include "psh_transfer.h"
#include "store_internal.h"

#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cleanup.h"
#include "ref.h"

#define ENTRIES_MAX 65536 /* files in an image archive */
#define READ_BLOCK  ((size_t)1 << 16)
#define NAME_MAX_B  512
#define PROBE_MAX   ((size_t)64 << 10) /* oci-layout / manifest.json read to recognise them */
#define DEPTH_MAX   4

typedef enum { ARCH_NONE, ARCH_OCI, ARCH_DOCKER } archive_kind;

typedef struct entry {
    char name[NAME_MAX_B]; /* cleaned: no "./", no trailing "/" */
    char digest[KILN_DIGEST_STRLEN + 1];
    uint64_t size;
    unsigned char magic[4]; /* first bytes: gzip/zstd layers */
} entry;

typedef struct img_archive {
    const char *path;
    entry *e;
    size_t n, cap;
} img_archive;

static void archive_dispose(img_archive *ia)
{
    free(ia->e);
}

/* "./a//b/" -> "a/b"; false for absolute names and ".." components. */
static bool clean_name(const char *in, char out[NAME_MAX_B])
{
    if (in == NULL || in[0] == '/')
        return false;
    size_t o = 0;
    for (const char *p = in; *p;) {
        while (*p == '/')
            p++;
        const char *e = strchr(p, '/');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        if (n == 2 && p[0] == '.' && p[1] == '.')
            return false;
        if (n > 0 && !(n == 1 && p[0] == '.')) {
            if (o + n + 2 > NAME_MAX_B)
                return false;
            if (o)
                out[o++] = '/';
            memcpy(out + o, p, n);
            o += n;
        }
        p += n;
    }
    out[o] = '\0';
    return true;
}

static struct archive *open_tar(const char *path, kiln_error **err)
{
    struct archive *a = archive_read_new();
    if (a == NULL) {
        kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
        return NULL;
    }
    archive_read_support_format_tar(a);
    archive_read_support_filter_all(a);
    if (archive_read_open_filename(a, path, READ_BLOCK) != ARCHIVE_OK) {
        kiln_error_set(err, KILN_EINVAL, 0, "%s: %s", path, archive_error_string(a));
        archive_read_free(a);
        return NULL;
    }
    return a;
}

/* Header-only pass: which kind of image archive path is, if any.  Only
 * uncompressed tars are looked into unless the caller insists (want): skopeo
 * and docker write them uncompressed, and a compressed rootfs tar would
 * otherwise be decompressed once more just to find out. */
static int detect(const char *path, archive_kind want, archive_kind *out, kiln_error **err)
{
    *out = ARCH_NONE;
    unsigned char magic[262] = {0};
    {
        FILE *f = fopen(path, "re");
        if (f == NULL)
            return kiln_error_set(err, kiln_code_from_errno(errno), errno, "open %s", path);
        size_t n = fread(magic, 1, sizeof(magic), f);
        fclose(f);
        bool tar = n >= 262 && memcmp(magic + 257, "ustar", 5) == 0;
        if (!tar && want == ARCH_NONE)
            return 0;
    }
    _cleanup_archive_ struct archive *a = open_tar(path, err);
    if (a == NULL)
        return KILN_EINVAL;
    bool layout = false, index = false, manifest = false;
    struct archive_entry *ae;
    int r;
    size_t n = 0;
    while ((r = archive_read_next_header(a, &ae)) == ARCHIVE_OK && n++ < ENTRIES_MAX) {
        char name[NAME_MAX_B];
        if (!clean_name(archive_entry_pathname(ae), name))
            continue;
        /* By content, not just by name: a rootfs may well hold a file
         * called manifest.json or index.json at its top. */
        bool is_layout = strcmp(name, "oci-layout") == 0;
        bool is_manifest = strcmp(name, "manifest.json") == 0;
        if ((is_layout || is_manifest) && archive_entry_size(ae) < (la_int64_t)PROBE_MAX) {
            char buf[PROBE_MAX];
            la_ssize_t got = 0, k;
            while ((size_t)got < sizeof(buf) &&
                   (k = archive_read_data(a, buf + got, sizeof(buf) - (size_t)got)) > 0)
                got += k;
            _cleanup_cjson_ cJSON *j = got > 0 ? cJSON_ParseWithLength(buf, (size_t)got) : NULL;
            const cJSON *first = cJSON_IsArray(j) ? cJSON_GetArrayItem(j, 0) : NULL;
            layout |= is_layout &&
                      cJSON_IsString(cJSON_GetObjectItemCaseSensitive(j, "imageLayoutVersion"));
            manifest |= is_manifest &&
                        cJSON_IsString(cJSON_GetObjectItemCaseSensitive(first, "Config")) &&
                        cJSON_IsArray(cJSON_GetObjectItemCaseSensitive(first, "Layers"));
        }
        /* larger than any rootfs would carry by chance: taken by its name */
        manifest |= is_manifest && archive_entry_size(ae) >= (la_int64_t)PROBE_MAX;
        index |= strcmp(name, "index.json") == 0;
        archive_read_data_skip(a);
    }
    if (r != ARCHIVE_EOF && r != ARCHIVE_OK && want != ARCH_NONE)
        return kiln_error_set(err, KILN_EINVAL, 0, "%s: %s", path, archive_error_string(a));
    /* docker save from Docker 25 on writes both: its manifest.json names the
     * tags, so it is read as a docker-archive unless oci-archive: was given. */
    if (manifest && want != ARCH_OCI)
        *out = ARCH_DOCKER;
    else if (layout && index)
        *out = ARCH_OCI;
    return 0;
}

/* Streams the current entry into the store; fills e. */
static int take_entry(psh_store *s, psh_store_pin *pin, struct archive *a, entry *e,
                      const char *expected, kiln_error **err)
{
    psh_store_tmp t = {.fd = -1, .pin = pin};
    int r = psh_store_tmp_open(s, &t, err);
    if (r < 0)
        return r;
    size_t got = 0;
    char buf[READ_BLOCK];
    la_ssize_t n;
    while ((n = archive_read_data(a, buf, sizeof(buf))) > 0) {
        if (got < sizeof(e->magic))
            memcpy(e->magic + got, buf,
                   (size_t)n < sizeof(e->magic) - got ? (size_t)n : sizeof(e->magic) - got);
        for (la_ssize_t w = 0, k; w < n; w += k)
            if ((k = write(t.fd, buf + w, (size_t)(n - w))) < 0) {
                psh_store_tmp_abort(s, &t);
                return kiln_error_set(err, kiln_code_from_errno(errno), errno, "write blob");
            }
        got += (size_t)n;
    }
    if (n < 0) {
        psh_store_tmp_abort(s, &t);
        return kiln_error_set(err, KILN_EINVAL, 0, "%s: %s", e->name, archive_error_string(a));
    }
    r = psh_store_tmp_commit(s, &t, expected, e->digest, &e->size, err);
    return r < 0 ? kiln_error_wrap(err, "%s", e->name) : 0;
}

/* The import pass: every regular file into the store. */
static int read_all(psh_store *s, psh_store_pin *pin, img_archive *ia, kiln_error **err)
{
    _cleanup_archive_ struct archive *a = open_tar(ia->path, err);
    if (a == NULL)
        return KILN_EINVAL;
    struct archive_entry *ae;
    int r;
    while ((r = archive_read_next_header(a, &ae)) == ARCHIVE_OK) {
        char name[NAME_MAX_B];
        if (!clean_name(archive_entry_pathname(ae), name))
            return kiln_error_set(err, KILN_EINVAL, 0, "%s: unsafe entry name \"%s\"", ia->path,
                                  archive_entry_pathname(ae));
        if (archive_entry_filetype(ae) != AE_IFREG)
            continue; /* directories; links and devices have no place in an image archive */
        if (ia->n == ENTRIES_MAX)
            return kiln_error_set(err, KILN_EINVAL, 0, "%s: more than %d files", ia->path,
                                  ENTRIES_MAX);
        if (ia->n == ia->cap) {
            size_t cap = ia->cap ? ia->cap * 2 : 64;
            entry *ne = realloc(ia->e, cap * sizeof(*ne));
            if (ne == NULL)
                return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
            ia->e = ne;
            ia->cap = cap;
        }
        entry *e = &ia->e[ia->n++];
        memset(e, 0, sizeof(*e));
        snprintf(e->name, sizeof(e->name), "%s", name);
        e->size = (uint64_t)archive_entry_size(ae);
        /* blobs/sha256/<hex> must hash to its name */
        char expected[KILN_DIGEST_STRLEN + 1] = "";
        if (strncmp(name, "blobs/sha256/", 13) == 0) {
            const char *hex = name + 13;
            if (strlen(hex) != 64 || strspn(hex, "0123456789abcdef") != 64)
                return kiln_error_set(err, KILN_EINVAL, 0, "%s: bad blob name %s", ia->path, name);
            memcpy(expected, "sha256:", 7);
            memcpy(expected + 7, hex, 65);
        }
        if ((r = take_entry(s, pin, a, e, expected[0] ? expected : NULL, err)) < 0)
            return r;
    }
    if (r != ARCHIVE_EOF)
        return kiln_error_set(err, KILN_EINVAL, 0, "%s: %s", ia->path, archive_error_string(a));
    return 0;
}

static const entry *find(const img_archive *ia, const char *name)
{
    char clean[NAME_MAX_B];
    if (!clean_name(name, clean))
        return NULL;
    for (size_t i = 0; i < ia->n; i++)
        if (strcmp(ia->e[i].name, clean) == 0)
            return &ia->e[i];
    return NULL;
}

/* The JSON document an entry holds, read back from the store. */
static cJSON *load_json(psh_store *s, const entry *e)
{
    _cleanup_free_ char *text = NULL;
    size_t len = 0;
    if (e == NULL || psh_store_read_blob(s, e->digest, PSH_MANIFEST_MAX, &text, &len, NULL) < 0)
        return NULL;
    return cJSON_ParseWithLength(text, len);
}

static const char *jstr(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* Whether a ref.name / RepoTags entry n names want (verbatim or as the same
 * reference). */
static bool names(const char *n, const char *want)
{
    if (n == NULL)
        return false;
    if (strcmp(n, want) == 0)
        return true;
    kiln_ref a, b;
    return kiln_ref_parse(&a, n, KILN_REF_DEFAULT_TAG, NULL) == 0 &&
           kiln_ref_parse(&b, want, KILN_REF_DEFAULT_TAG, NULL) == 0 && kiln_ref_equal(&a, &b);
}

/* Every blob below d is in the store (they were verified as they came in). */
static int check_doc(psh_store *s, const psh_descriptor *d, int depth, const char *path,
                     kiln_error **err)
{
    if (depth > DEPTH_MAX)
        return kiln_error_set(err, KILN_EINVAL, 0, "%s: indexes nested too deeply", path);
    _cleanup_free_ char *text = NULL;
    size_t len = 0;
    int r = psh_store_read_blob(s, d->digest, PSH_MANIFEST_MAX, &text, &len, err);
    if (r < 0)
        return kiln_error_wrap(err, "%s: manifest %s", path, d->digest);
    _cleanup_cjson_ cJSON *doc = cJSON_ParseWithLength(text, len);
    const char *mt = doc ? psh_manifest_media_type(doc) : "";
    bool index = psh_media_type_is_index(mt);
    if (!index && !psh_media_type_is_manifest(mt))
        return kiln_error_set(err, KILN_EINVAL, 0, "%s: %s is not a manifest or index", path,
                              d->digest);
    psh_descriptor c;
    if (!index) {
        if ((r = psh_descriptor_from_json(&c, cJSON_GetObjectItemCaseSensitive(doc, "config"),
                                          err)) < 0)
            return r;
        if (!psh_store_has_blob(s, c.digest))
            return kiln_error_set(err, KILN_EINVAL, 0, "%s: config %s is missing", path, c.digest);
    }
    const cJSON *item;
    cJSON_ArrayForEach(item, cJSON_GetObjectItemCaseSensitive(doc, index ? "manifests" : "layers"))
    {
        if ((r = psh_descriptor_from_json(&c, item, err)) < 0)
            return r;
        if (index)
            r = check_doc(s, &c, depth + 1, path, err);
        else if (!psh_store_has_blob(s, c.digest))
            r = kiln_error_set(err, KILN_EINVAL, 0, "%s: layer %s is missing", path, c.digest);
        if (r < 0)
            return r;
    }
    return 0;
}

static int import_oci(psh_store *s, const img_archive *ia, const char *ref,
                      const psh_import_opts *o, psh_descriptor *out, kiln_error **err)
{
    const entry *ix = find(ia, "index.json");
    _cleanup_cjson_ cJSON *idx = load_json(s, ix);
    const cJSON *list = cJSON_GetObjectItemCaseSensitive(idx, "manifests");
    if (!cJSON_IsArray(list))
        return kiln_error_set(err, KILN_EINVAL, 0, "%s: index.json has no manifests", ia->path);
    const cJSON *pick = NULL, *e;
    if (o->layout_ref == NULL && cJSON_GetArraySize(list) == 1)
        pick = list->child;
    cJSON_ArrayForEach(e, list)
    {
        const cJSON *an = cJSON_GetObjectItemCaseSensitive(e, "annotations");
        if (pick == NULL && o->layout_ref && names(jstr(an, PSH_ANNOT_REF_NAME), o->layout_ref))
            pick = e;
    }
    if (pick == NULL)
        return o->layout_ref ? kiln_error_set(err, KILN_ENOENT, 0, "%s has no image named \"%s\"",
                                              ia->path, o->layout_ref)
                             : kiln_error_set(err, KILN_EINVAL, 0, "%s holds %d images: name one",
                                              ia->path, cJSON_GetArraySize(list));
    psh_descriptor d;
    int r = psh_descriptor_from_json(&d, pick, err);
    if (r == 0)
        r = check_doc(s, &d, 0, ia->path, err);
    if (r < 0)
        return r;
    if (!d.media_type[0])
        snprintf(d.media_type, sizeof(d.media_type), "%s", PSH_MT_OCI_MANIFEST);
    const cJSON *p = cJSON_GetObjectItemCaseSensitive(pick, "platform");
    if ((r = psh_store_tag_descriptor(s, &d, jstr(p, "os"), jstr(p, "architecture"),
                                      jstr(p, "variant"), ref, err)) < 0)
        return r;
    if (out)
        *out = d;
    return 0;
}

static const char *layer_type(const entry *l)
{
    if (l->magic[0] == 0x1f && l->magic[1] == 0x8b)
        return PSH_MT_OCI_LAYER_GZ;
    if (l->magic[0] == 0x28 && l->magic[1] == 0xb5 && l->magic[2] == 0x2f && l->magic[3] == 0xfd)
        return PSH_MT_OCI_LAYER_ZST;
    return PSH_MT_OCI_LAYER;
}

/* docker save: manifest.json [{"Config": "...", "RepoTags": [...], "Layers": [...]}]
 * becomes an OCI manifest over the same blobs. */
static int import_docker(psh_store *s, psh_store_pin *pin, const img_archive *ia, const char *ref,
                         const psh_import_opts *o, psh_descriptor *out, kiln_error **err)
{
    const entry *mf = find(ia, "manifest.json");
    _cleanup_cjson_ cJSON *m = load_json(s, mf);
    if (!cJSON_IsArray(m) || cJSON_GetArraySize(m) == 0)
        return kiln_error_set(err, KILN_EINVAL, 0, "%s: manifest.json lists no image", ia->path);
    const cJSON *pick = NULL, *e;
    if (o->layout_ref == NULL && cJSON_GetArraySize(m) == 1)
        pick = m->child;
    cJSON_ArrayForEach(e, m)
    {
        const cJSON *t;
        cJSON_ArrayForEach(t, cJSON_GetObjectItemCaseSensitive(e, "RepoTags"))
        {
            if (pick == NULL && o->layout_ref && cJSON_IsString(t) &&
                names(t->valuestring, o->layout_ref))
                pick = e;
        }
    }
    if (pick == NULL)
        return o->layout_ref ? kiln_error_set(err, KILN_ENOENT, 0, "%s has no image tagged \"%s\"",
                                              ia->path, o->layout_ref)
                             : kiln_error_set(err, KILN_EINVAL, 0, "%s holds %d images: name one",
                                              ia->path, cJSON_GetArraySize(m));
    const entry *cf = find(ia, jstr(pick, "Config"));
    _cleanup_cjson_ cJSON *cfg = load_json(s, cf);
    if (!cJSON_IsObject(cfg))
        return kiln_error_set(err, KILN_EINVAL, 0, "%s: config %s is missing or not JSON", ia->path,
                              jstr(pick, "Config") ? jstr(pick, "Config") : "?");
    const cJSON *diff_ids = cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(cfg, "rootfs"), "diff_ids");
    const cJSON *layers = cJSON_GetObjectItemCaseSensitive(pick, "Layers");
    if (!cJSON_IsArray(layers) || cJSON_GetArraySize(layers) != cJSON_GetArraySize(diff_ids))
        return kiln_error_set(err, KILN_EINVAL, 0, "%s: %d layers but %d diff_ids in the config",
                              ia->path, cJSON_GetArraySize(layers), cJSON_GetArraySize(diff_ids));
    _cleanup_cjson_ cJSON *man = cJSON_CreateObject();
    cJSON *cd = cJSON_CreateObject(), *ls = cJSON_CreateArray();
    if (man == NULL || cd == NULL || ls == NULL) {
        cJSON_Delete(cd);
        cJSON_Delete(ls);
        return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
    }
    cJSON_AddNumberToObject(man, "schemaVersion", 2);
    cJSON_AddStringToObject(man, "mediaType", PSH_MT_OCI_MANIFEST);
    cJSON_AddStringToObject(cd, "mediaType", PSH_MT_OCI_CONFIG);
    cJSON_AddStringToObject(cd, "digest", cf->digest);
    cJSON_AddNumberToObject(cd, "size", (double)cf->size);
    cJSON_AddItemToObject(man, "config", cd);
    cJSON_AddItemToObject(man, "layers", ls);
    int i = 0;
    cJSON_ArrayForEach(e, layers)
    {
        const entry *l = cJSON_IsString(e) ? find(ia, e->valuestring) : NULL;
        if (l == NULL)
            return kiln_error_set(err, KILN_EINVAL, 0, "%s: layer %s is missing", ia->path,
                                  cJSON_IsString(e) ? e->valuestring : "?");
        const char *mt = layer_type(l);
        const cJSON *id = cJSON_GetArrayItem(diff_ids, i++);
        /* An uncompressed layer is its own diff: it must be the one the
         * config names. */
        if (strcmp(mt, PSH_MT_OCI_LAYER) == 0 &&
            !(cJSON_IsString(id) && strcmp(id->valuestring, l->digest) == 0))
            return kiln_error_set(err, KILN_EINVAL, 0,
                                  "%s: layer %s is %s, the config's diff_id says %s", ia->path,
                                  l->name, l->digest, cJSON_IsString(id) ? id->valuestring : "?");
        cJSON *ld = cJSON_CreateObject();
        if (ld == NULL)
            return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
        cJSON_AddItemToArray(ls, ld);
        cJSON_AddStringToObject(ld, "mediaType", mt);
        cJSON_AddStringToObject(ld, "digest", l->digest);
        cJSON_AddNumberToObject(ld, "size", (double)l->size);
    }
    _cleanup_free_ char *text = cJSON_PrintUnformatted(man);
    if (text == NULL)
        return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
    psh_descriptor d = {.size = strlen(text)};
    snprintf(d.media_type, sizeof(d.media_type), "%s", PSH_MT_OCI_MANIFEST);
    int r = psh_store_put_blob_bytes(s, pin, NULL, text, d.size, d.digest, err);
    if (r == 0)
        r = psh_store_tag_descriptor(s, &d, jstr(cfg, "os"), jstr(cfg, "architecture"),
                                     jstr(cfg, "variant"), ref, err);
    if (r == 0 && out)
        *out = d;
    return r;
}

static archive_kind kind_of(const char *format)
{
    if (format == NULL)
        return ARCH_NONE;
    if (strcmp(format, "oci-archive") == 0)
        return ARCH_OCI;
    if (strcmp(format, "docker-archive") == 0)
        return ARCH_DOCKER;
    return ARCH_NONE;
}

int psh_import_format_check(const psh_import_opts *o, const char *path, kiln_error **err)
{
    const char *f = o->format;
    if (f == NULL || *f == '\0')
        return 0;
    struct stat st;
    if (stat(path, &st) < 0)
        return kiln_error_set(err, kiln_code_from_errno(errno), errno, "stat %s", path);
    if (strcmp(f, "oci") == 0) {
        char p[4096];
        snprintf(p, sizeof(p), "%s/oci-layout", path);
        if (!S_ISDIR(st.st_mode) || access(p, F_OK) < 0)
            return kiln_error_set(err, KILN_EINVAL, 0, "oci:%s is not an OCI image layout", path);
        return 0;
    }
    if (kind_of(f) != ARCH_NONE) {
        if (!S_ISREG(st.st_mode))
            return kiln_error_set(err, KILN_EINVAL, 0, "%s:%s is not a tar file", f, path);
        return 0;
    }
    if (strcmp(f, "rootfs") == 0)
        return 0;
    return kiln_error_set(err, KILN_EINVAL, 0,
                          "unknown import format '%s' (oci, oci-archive, docker-archive, rootfs)",
                          f);
}

int psh_import_image_archive(psh_store *s, const char *path, const char *ref,
                             const psh_import_opts *o, psh_descriptor *out, bool *handled,
                             kiln_error **err)
{
    *handled = false;
    archive_kind want = kind_of(o->format), kind = ARCH_NONE;
    if (o->format && strcmp(o->format, "rootfs") == 0)
        return 0;
    int r = detect(path, want, &kind, err);
    if (r < 0)
        return r;
    if (want != ARCH_NONE && kind == ARCH_NONE)
        return *handled = true,
               kiln_error_set(err, KILN_EINVAL, 0, "%s is not an %s (no %s in the tar)", path,
                              o->format,
                              want == ARCH_OCI ? "oci-layout and index.json" : "manifest.json");
    if (kind == ARCH_NONE)
        return 0; /* a rootfs tar */
    *handled = true;
    psh_store_pin pin = {.fd = -1};
    if ((r = psh_store_pin_open(s, &pin, err)) < 0)
        return r;
    img_archive ia = {.path = path};
    r = read_all(s, &pin, &ia, err);
    if (r == 0)
        r = kind == ARCH_OCI ? import_oci(s, &ia, ref, o, out, err)
                             : import_docker(s, &pin, &ia, ref, o, out, err);
    archive_dispose(&ia);
    psh_store_pin_close(s, &pin);
    return r;
}
