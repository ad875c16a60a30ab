/* Import of a rootfs directory, a (compressed) rootfs tarball or an OCI image
 * layout into the store (psh_transfer.h). */
#include "psh_transfer.h"
#include "store_internal.h"
#include "platform.h"

#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cleanup.h"
#include "fs.h"
#include "ref.h"

#define FEED_BLOCK       ((size_t)1 << 16)
#define LAYOUT_DEPTH_MAX 4
static void archive_freep(struct archive **a)
{
    if (*a != NULL)
        archive_read_free(*a);
}

/* libarchive's message, never NULL. */
static const char *arerr(struct archive *a)
{
    const char *m = archive_error_string(a);
    return m ? m : "unknown libarchive error";
}

void psh_import_opts_init(psh_import_opts *o)
{
    memset(o, 0, sizeof(*o));
    o->platform.os = "linux";
    const kiln_platform *host = kiln_platform_host();
    o->platform.architecture = host->arch;
    o->platform.variant = host->variant[0] ? host->variant : NULL;
    o->created_by = "kiln import";
    o->created = -1;
    psh_commit_spec spec;
    psh_commit_spec_init(&spec);
    o->pack = spec.pack;
}

/* ---- rootfs tarballs ---- */

/* Reads the whole archive once: it must be a tar (any compression) whose
 * names stay inside the root.  Absolute names ("/", "/etc/passwd", as umoci
 * and other tools write them) are taken relative to the root, the way
 * Docker, containerd and our own layer unpacking take them
 * (kiln_path_clean with KILN_PATH_LAYER); a relative name climbing above the root is
 * refused.  The layer keeps the tar's bytes.  *compressed tells whether a
 * filter was used. */
static int check_tar(const char *path, bool *compressed, kiln_error **err)
{
    _cleanup_(archive_freep) struct archive *a = archive_read_new();
    if (a == NULL)
        return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
    archive_read_support_filter_all(a);
    archive_read_support_format_tar(a);
    archive_read_support_format_gnutar(a);
    if (archive_read_open_filename(a, path, FEED_BLOCK) != ARCHIVE_OK)
        return kiln_error_set(err, KILN_EINVAL, 0, "%s: not a tar archive: %s", path, arerr(a));
    struct archive_entry *e;
    size_t n = 0;
    int r;
    while ((r = archive_read_next_header(a, &e)) == ARCHIVE_OK) {
        const char *name = archive_entry_pathname(e);
        const char *link = archive_entry_hardlink(e);
        char clean[PATH_MAX];
        if (name == NULL || kiln_path_clean(clean, sizeof(clean), name, KILN_PATH_LAYER, NULL) < 0)
            return kiln_error_set(err, KILN_EINVAL, 0, "%s: entry \"%.200s\" leaves the root", path,
                                  name ? name : "(no name)");
        if (link != NULL &&
            (kiln_path_clean(clean, sizeof(clean), link, KILN_PATH_LAYER, NULL) < 0 ||
             clean[0] == '\0'))
            return kiln_error_set(err, KILN_EINVAL, 0, "%s: hard link \"%.200s\" leaves the root",
                                  path, link);
        n++;
    }
    if (r != ARCHIVE_EOF)
        return kiln_error_set(err, KILN_EINVAL, 0, "%s: not a valid tar archive: %s", path,
                              arerr(a));
    if (n == 0)
        return kiln_error_set(err, KILN_EINVAL, 0, "%s: not a tar archive (no entries)", path);
    *compressed = archive_filter_count(a) > 1;
    return 0;
}

/* Decompresses a file into a pipe on its own thread. */
struct feeder {
    const char *path;
    int wfd;
    char msg[256]; /* "" on success */
};

static void *feed(void *arg)
{
    struct feeder *f = arg;
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGPIPE); /* a reader that gave up yields EPIPE, not a signal */
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    struct archive *a = archive_read_new();
    char *buf = malloc(FEED_BLOCK);
    struct archive_entry *e;
    if (a == NULL || buf == NULL) {
        snprintf(f->msg, sizeof(f->msg), "out of memory");
        goto out;
    }
    archive_read_support_filter_all(a);
    archive_read_support_format_raw(a);
    if (archive_read_open_filename(a, f->path, FEED_BLOCK) != ARCHIVE_OK ||
        archive_read_next_header(a, &e) != ARCHIVE_OK) {
        snprintf(f->msg, sizeof(f->msg), "%s", arerr(a));
        goto out;
    }
    for (;;) {
        la_ssize_t n = archive_read_data(a, buf, FEED_BLOCK);
        if (n < 0) {
            snprintf(f->msg, sizeof(f->msg), "%s", arerr(a));
            break;
        }
        if (n == 0)
            break;
        if (kiln_write_all(f->wfd, buf, (size_t)n) < 0) {
            snprintf(f->msg, sizeof(f->msg), "write: %s", strerror(errno));
            break;
        }
    }
out:
    close(f->wfd);
    free(buf);
    if (a != NULL)
        archive_read_free(a);
    return NULL;
}

/* Packs a tar file (decompressing it when needed) into the temp blob t. */
static int pack_tarball(const char *path, bool compressed, int blob_fd, const psh_pack_opts *po,
                        psh_layer_info *info, kiln_error **err)
{
    if (!compressed) {
        _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
            return kiln_error_set(err, kiln_code_from_errno(errno), errno, "open %s", path);
        return psh_pack_tar_stream(info, fd, blob_fd, po, err);
    }
    int p[2];
    if (pipe2(p, O_CLOEXEC) < 0)
        return kiln_error_set(err, KILN_EIO, errno, "pipe");
    struct feeder f = {.path = path, .wfd = p[1]};
    pthread_t th;
    int e = pthread_create(&th, NULL, feed, &f);
    if (e != 0) {
        close(p[0]);
        close(p[1]);
        return kiln_error_set(err, KILN_ENOSPC, e, "start decompression thread");
    }
    int r = psh_pack_tar_stream(info, p[0], blob_fd, po, err);
    close(p[0]); /* unblocks the feeder if the packer stopped early */
    pthread_join(th, NULL);
    if (r == 0 && f.msg[0])
        r = kiln_error_set(err, KILN_EINVAL, 0, "decompress %s: %s", path, f.msg);
    return r;
}

static int import_rootfs(psh_store *s, const char *path, bool is_dir, const char *ref,
                         const psh_import_opts *o, psh_descriptor *out, kiln_error **err)
{
    if (o->platform.os == NULL || !o->platform.os[0] ||
        !psh_platform_arch_valid(o->platform.architecture))
        return kiln_error_set(err, KILN_EINVAL, 0,
                              "import: platform needs an os and a Go architecture name");
    bool compressed = false;
    int r = is_dir ? 0 : check_tar(path, &compressed, err);
    if (r < 0)
        return r;
    psh_commit_layer layer = {0};
    psh_commit_result res = {.layers = &layer, .n_layers = 1};
    psh_history_entry h = {.created_by = o->created_by, .created = -1};
    psh_commit_spec spec;
    psh_commit_spec_init(&spec);
    spec.platform = o->platform;
    spec.created = o->created;
    spec.history = &h;
    spec.n_history = 1;
    spec.n_layers = 1;
    spec.tags = &ref;
    spec.n_tags = 1;
    psh_store_pin pin = {.fd = -1};
    psh_store_tmp t = {.fd = -1};
    psh_layer_info info;
    psh_pack_opts po = o->pack;
    po.overlay_diff = false;
    if ((r = psh_store_pin_open(s, &pin, err)) < 0 || (r = psh_store_tmp_open(s, &t, err)) < 0)
        goto out;
    t.pin = &pin;
    r = is_dir ? psh_pack_dir(&info, path, t.fd, &po, err)
               : pack_tarball(path, compressed, t.fd, &po, &info, err);
    if (r < 0 || (r = psh_store_tmp_commit(s, &t, info.digest, NULL, NULL, err)) < 0)
        goto out;
    snprintf(layer.blob.media_type, sizeof(layer.blob.media_type), "%s", info.media_type);
    memcpy(layer.blob.digest, info.digest, sizeof(info.digest));
    memcpy(layer.diff_id, info.diff_id, sizeof(info.diff_id));
    layer.blob.size = info.size;
    layer.tar_size = info.tar_size;
    psh_store_note_tar_size(s, info.digest, info.tar_size);
    if ((r = psh_commit_assemble(s, &pin, &spec, &res, err)) == 0 && out)
        *out = res.manifest;
out:
    psh_store_tmp_abort(s, &t);
    psh_store_pin_close(s, &pin);
    return r;
}

/* ---- OCI layouts ---- */

struct layout {
    const char *path;
    int blobs_fd; /* blobs/sha256 of the source layout */
    psh_store_pin *pin;
};

/* Reads a small file relative to dirfd without following symlinks. */
static int read_small(int dirfd, const char *name, size_t max, char **out, size_t *len,
                      kiln_error **err)
{
    _cleanup_close_ int fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) < 0)
        return kiln_error_set(err, kiln_code_from_errno(errno), errno, "open %s", name);
    if (!S_ISREG(st.st_mode) || (uint64_t)st.st_size > max)
        return kiln_error_set(err, KILN_EINVAL, 0, "%s: not a regular file of at most %zu bytes",
                              name, max);
    _cleanup_free_ char *buf = malloc((size_t)st.st_size + 1);
    if (buf == NULL)
        return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
    ssize_t n = pread(fd, buf, (size_t)st.st_size, 0);
    if (n != (ssize_t)st.st_size)
        return kiln_error_set(err, KILN_EIO, n < 0 ? errno : 0, "read %s", name);
    buf[n] = '\0';
    *len = (size_t)n;
    *out = steal_pointer(&buf);
    return 0;
}

static int copy_blob(psh_store *s, struct layout *l, const psh_descriptor *d, kiln_error **err)
{
    /* Pinned before the existence check, so GC cannot take it in between. */
    int r = psh_store_pin_add(s, l->pin, d->digest, err);
    if (r < 0 || psh_store_has_blob(s, d->digest))
        return r;
    _cleanup_close_ int fd = openat(l->blobs_fd, d->digest + 7, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return kiln_error_set(err, KILN_ENOENT, errno, "%s: blob %s", l->path, d->digest);
    uint64_t size = 0;
    r = psh_store_put_blob_fd(s, NULL, d->digest, fd, NULL, &size, err);
    if (r == 0 && size != d->size)
        r = kiln_error_set(err, KILN_EINVAL, 0, "%s: blob %s has %llu bytes, descriptor says %llu",
                           l->path, d->digest, (unsigned long long)size,
                           (unsigned long long)d->size);
    return r;
}

/* Copies a manifest or index and everything below it, verifying each blob. */
static int copy_doc(psh_store *s, struct layout *l, const psh_descriptor *d, int depth,
                    kiln_error **err)
{
    if (depth > LAYOUT_DEPTH_MAX)
        return kiln_error_set(err, KILN_EINVAL, 0, "%s: indexes nested too deeply", l->path);
    _cleanup_free_ char *text = NULL;
    size_t len = 0;
    int r = read_small(l->blobs_fd, d->digest + 7, PSH_MANIFEST_MAX, &text, &len, err);
    if (r < 0)
        return r;
    if ((r = psh_store_put_blob_bytes(s, l->pin, d->digest, text, len, NULL, err)) < 0)
        return r;
    _cleanup_cjson_ cJSON *doc = cJSON_ParseWithLength(text, len);
    const char *mt = doc ? psh_manifest_media_type(doc) : "";
    bool index = psh_media_type_is_index(mt);
    if (!index && !psh_media_type_is_manifest(mt))
        return kiln_error_set(err, KILN_EINVAL, 0, "%s: %s is not a manifest or index", l->path,
                              d->digest);
    const cJSON *item;
    psh_descriptor c;
    if (!index) {
        if ((r = psh_descriptor_from_json(&c, cJSON_GetObjectItemCaseSensitive(doc, "config"),
                                          err)) < 0 ||
            (r = copy_blob(s, l, &c, err)) < 0)
            return r;
    }
    cJSON_ArrayForEach(item, cJSON_GetObjectItemCaseSensitive(doc, index ? "manifests" : "layers"))
    {
        if ((r = psh_descriptor_from_json(&c, item, err)) < 0)
            return r;
        r = index ? copy_doc(s, l, &c, depth + 1, err) : copy_blob(s, l, &c, err);
        if (r < 0)
            return r;
    }
    return 0;
}

/* Picks the index.json entry named want (or the only one) into *out. */
static int pick_entry(const cJSON **out, const cJSON *idx, const char *want, const char *path,
                      kiln_error **err)
{
    const cJSON *list = cJSON_GetObjectItemCaseSensitive(idx, "manifests");
    const cJSON *e;
    if (want == NULL) {
        if (cJSON_GetArraySize(list) == 1) {
            *out = list->child;
            return 0;
        }
        return kiln_error_set(err, KILN_EINVAL, 0, "%s holds %d images: name one", path,
                              cJSON_GetArraySize(list));
    }
    kiln_ref q, r;
    bool parsed = kiln_ref_parse(&q, want, KILN_REF_DEFAULT_TAG, NULL) == 0;
    for (int pass = 0; pass < 2; pass++)
        cJSON_ArrayForEach(e, list)
        {
            const cJSON *a = cJSON_GetObjectItemCaseSensitive(e, "annotations");
            const cJSON *n = cJSON_GetObjectItemCaseSensitive(a, PSH_ANNOT_REF_NAME);
            if (!cJSON_IsString(n))
                continue;
            if ((pass == 0 && strcmp(n->valuestring, want) == 0) ||
                (pass == 1 && parsed &&
                 kiln_ref_parse(&r, n->valuestring, KILN_REF_DEFAULT_TAG, NULL) == 0 &&
                 kiln_ref_equal(&q, &r))) {
                *out = e;
                return 0;
            }
        }
    return kiln_error_set(err, KILN_ENOENT, 0, "%s has no image named \"%s\"", path, want);
}

static int import_layout(psh_store *s, const char *path, int dirfd, const char *ref,
                         const psh_import_opts *o, psh_descriptor *out, kiln_error **err)
{
    _cleanup_free_ char *text = NULL;
    size_t len = 0;
    int r = read_small(dirfd, "index.json", PSH_INDEX_MAX, &text, &len, err);
    if (r < 0)
        return r;
    _cleanup_cjson_ cJSON *idx = cJSON_ParseWithLength(text, len);
    if (!cJSON_IsObject(idx))
        return kiln_error_set(err, KILN_EINVAL, 0, "%s/index.json is not a JSON object", path);
    const cJSON *entry = NULL;
    psh_descriptor d;
    if ((r = pick_entry(&entry, idx, o->layout_ref, path, err)) < 0 ||
        (r = psh_descriptor_from_json(&d, entry, err)) < 0)
        return r;
    _cleanup_close_ int blobs = openat(dirfd, "blobs", O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
    _cleanup_close_ int sha =
        blobs < 0 ? -1 : openat(blobs, "sha256", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (sha < 0)
        return kiln_error_set(err, KILN_EINVAL, errno, "%s/blobs/sha256", path);
    psh_store_pin pin = {.fd = -1};
    if ((r = psh_store_pin_open(s, &pin, err)) < 0)
        return r;
    struct layout l = {.path = path, .blobs_fd = sha, .pin = &pin};
    const cJSON *p = cJSON_GetObjectItemCaseSensitive(entry, "platform");
    const cJSON *pos = cJSON_GetObjectItemCaseSensitive(p, "os");
    const cJSON *parch = cJSON_GetObjectItemCaseSensitive(p, "architecture");
    const cJSON *pvar = cJSON_GetObjectItemCaseSensitive(p, "variant");
    r = copy_doc(s, &l, &d, 0, err);
    if (r == 0) {
        if (!d.media_type[0]) /* descriptors must carry one; tolerate those that do not */
            snprintf(d.media_type, sizeof(d.media_type), "%s", PSH_MT_OCI_MANIFEST);
        r = psh_store_tag_descriptor(s, &d, cJSON_IsString(pos) ? pos->valuestring : NULL,
                                     cJSON_IsString(parch) ? parch->valuestring : NULL,
                                     cJSON_IsString(pvar) ? pvar->valuestring : NULL, ref, err);
    }
    psh_store_pin_close(s, &pin);
    if (r == 0 && out)
        *out = d;
    return r;
}

int psh_store_import(psh_store *s, const char *src, const char *ref, const psh_import_opts *opts,
                     psh_descriptor *out, kiln_error **err)
{
    psh_import_opts defaults;
    psh_import_opts_init(&defaults);
    const psh_import_opts *o = opts ? opts : &defaults;
    kiln_ref q;
    int r = 0;
    if (ref == NULL || strncmp(ref, "sha256:", 7) == 0)
        return kiln_error_set(err, KILN_EINVAL, 0, "import: a tag name is required");
    if ((r = kiln_ref_parse(&q, ref, KILN_REF_DEFAULT_TAG | KILN_REF_NO_DIGEST, err)) < 0)
        return r;
    _cleanup_free_ char *path = NULL;
    if (o->confine != NULL)
        r = psh_store_confine(s, o->confine, src, &path, err);
    else if (src == NULL || (path = realpath(src, NULL)) == NULL)
        r = kiln_error_set(err, src ? kiln_code_from_errno(errno) : KILN_EINVAL, src ? errno : 0,
                           "import source %s", src ? src : "(none)");
    if (r < 0)
        return r;
    struct stat st;
    if (stat(path, &st) < 0)
        return kiln_error_set(err, kiln_code_from_errno(errno), errno, "stat %s", path);
    if ((r = psh_import_format_check(o, path, err)) < 0)
        return kiln_error_wrap(err, "import %s", src);
    bool handled = false; /* an oci-archive or docker-archive tar: import_image.c */
    if (S_ISREG(st.st_mode) &&
        (r = psh_import_image_archive(s, path, ref, o, out, &handled, err)) < 0)
        return kiln_error_wrap(err, "import %s", src);
    if (handled) {
        return 0;
    } else if (S_ISDIR(st.st_mode)) {
        _cleanup_close_ int dfd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd < 0)
            return kiln_error_set(err, kiln_code_from_errno(errno), errno, "open %s", path);
        if (faccessat(dfd, "oci-layout", F_OK, AT_SYMLINK_NOFOLLOW) == 0)
            r = import_layout(s, path, dfd, ref, o, out, err);
        else
            r = import_rootfs(s, path, true, ref, o, out, err);
    } else if (S_ISREG(st.st_mode)) {
        r = import_rootfs(s, path, false, ref, o, out, err);
    } else {
        r = kiln_error_set(err, KILN_EINVAL, 0, "%s is neither a directory nor a file", path);
    }
    if (r < 0)
        kiln_error_wrap(err, "import %s", src);
    return r;
}
