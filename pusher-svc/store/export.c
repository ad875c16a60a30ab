/* Export of one image as an OCI layout directory or an oci-archive tarball
 * (psh_transfer.h). */
#include "psh_transfer.h"
#include "store_internal.h"

#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cleanup.h"
#include "ref.h"

#define COPY_BLOCK         ((size_t)1 << 17)
#define OCI_LAYOUT_CONTENT "{\"imageLayoutVersion\":\"1.0.0\"}"

/* libarchive's message, never NULL. */
static const char *arerr(struct archive *a)
{
    const char *m = archive_error_string(a);
    return m ? m : "unknown libarchive error";
}

int psh_export_target_parse(const char *target, psh_export_kind *kind, const char **path,
                            kiln_error **err)
{
    if (target != NULL && strncmp(target, "oci:", 4) == 0 && target[4]) {
        *kind = PSH_EXPORT_OCI_DIR;
        *path = target + 4;
        return 0;
    }
    if (target != NULL && strncmp(target, "oci-archive:", 12) == 0 && target[12]) {
        *kind = PSH_EXPORT_OCI_ARCHIVE;
        *path = target + 12;
        return 0;
    }
    return kiln_error_set(err, KILN_EINVAL, 0,
                          "export target \"%.200s\": want oci:DIR or oci-archive:FILE",
                          target ? target : "");
}

/* What gets exported: the blob set and the index.json text. */
struct plan {
    psh_dset blobs;
    char *index; /* owned */
};

static int make_plan(const psh_store *s, const char *ref, struct plan *p, kiln_error **err)
{
    psh_descriptor d;
    int r = psh_store_resolve(s, ref, &d, err);
    if (r < 0)
        return r;
    if ((r = psh_store_collect(s, d.digest, &p->blobs, true, err)) < 0)
        return r;
    psh_dset_sort(&p->blobs);
    /* The tag: the familiar form, or the name verbatim when another tool wrote
     * it; none when the image was named by digest. */
    char name[KILN_REF_STRMAX] = "";
    kiln_ref q;
    if (strncmp(ref, "sha256:", 7) != 0 &&
        kiln_ref_parse(&q, ref, KILN_REF_DEFAULT_TAG, NULL) == 0) {
        if (!q.digest[0])
            kiln_ref_familiar(&q, name, sizeof(name));
    } else if (strncmp(ref, "sha256:", 7) != 0) {
        snprintf(name, sizeof(name), "%s", ref);
    }
    cJSON *idx = cJSON_CreateObject();
    bool ok = idx && cJSON_AddNumberToObject(idx, "schemaVersion", 2) &&
              cJSON_AddStringToObject(idx, "mediaType", PSH_MT_OCI_INDEX);
    cJSON *list = ok ? cJSON_AddArrayToObject(idx, "manifests") : NULL;
    cJSON *e = list ? psh_descriptor_to_json(&d) : NULL;
    ok = e != NULL && cJSON_AddItemToArray(list, e);
    if (ok && name[0]) {
        cJSON *ann = cJSON_AddObjectToObject(e, "annotations");
        ok = ann && cJSON_AddStringToObject(ann, PSH_ANNOT_REF_NAME, name);
    }
    p->index = ok ? cJSON_PrintUnformatted(idx) : NULL;
    cJSON_Delete(idx);
    if (p->index == NULL)
        return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
    return 0;
}

static void plan_dispose(struct plan *p)
{
    psh_dset_dispose(&p->blobs);
    free(p->index);
}

/* Checks dest's parent lies in confine. */
static int confine_dest(const psh_store *s, const char *confine, const char *dest, kiln_error **err)
{
    if (confine == NULL)
        return 0;
    _cleanup_free_ char *copy = strdup(dest);
    if (copy == NULL)
        return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
    const char *base = basename(copy);
    if (strcmp(base, "..") == 0 || strcmp(base, ".") == 0 || base[0] == '\0')
        return kiln_error_set(err, KILN_EINVAL, 0, "export destination %s", dest);
    _cleanup_free_ char *copy2 = strdup(dest);
    _cleanup_free_ char *resolved = NULL;
    if (copy2 == NULL)
        return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
    char *parent = dirname(copy2);
    if (psh_store_confine(s, confine, parent, &resolved, NULL) == 0)
        return 0;
    _cleanup_free_ char *rc = realpath(confine, NULL);
    _cleanup_free_ char *rp = realpath(parent, NULL);
    if (rc != NULL && rp != NULL && strcmp(rc, rp) == 0)
        return 0; /* directly in confine */
    return kiln_error_set(err, KILN_EPERM, 0, "export destination %s is outside %s", dest, confine);
}

/* Copies fd to out_fd or into the archive's current entry, re-hashing. */
static int copy_stream(int fd, const char *digest, int out_fd, struct archive *ar, kiln_error **err)
{
    int r = 0;
    kiln_sha256 *h = kiln_sha256_new();
    char *buf = malloc(COPY_BLOCK);
    if (h == NULL || buf == NULL) {
        r = kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
        goto out;
    }
    for (;;) {
        ssize_t n = read(fd, buf, COPY_BLOCK);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            r = kiln_error_set(err, KILN_EIO, errno, "read blob %s", digest);
            goto out;
        }
        if (n == 0)
            break;
        kiln_sha256_update(h, buf, (size_t)n);
        bool bad = ar ? archive_write_data(ar, buf, (size_t)n) != n
                      : kiln_write_all(out_fd, buf, (size_t)n) < 0;
        if (bad) {
            r = kiln_error_set(err, errno == ENOSPC ? KILN_ENOSPC : KILN_EIO, errno,
                               "write blob %s", digest);
            goto out;
        }
    }
    char check[KILN_DIGEST_STRLEN + 1];
    kiln_sha256_final_str(h, check);
    if (strcmp(check, digest) != 0)
        r = kiln_error_set(err, KILN_EINTERNAL, 0, "store blob %s is corrupt", digest);
out:
    free(buf);
    kiln_sha256_free(h);
    return r;
}

/* Streams a store blob to out_fd, or as a new entry into ar. */
static int copy_out(const psh_store *s, const char *digest, int out_fd, struct archive *ar,
                    kiln_error **err)
{
    _cleanup_close_ int fd = -1;
    uint64_t size = 0;
    int r = psh_store_open_blob(s, digest, &fd, &size, err);
    if (r < 0)
        return r;
    if (ar != NULL) {
        struct archive_entry *e = archive_entry_new();
        if (e == NULL)
            return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
        char name[96];
        snprintf(name, sizeof(name), "blobs/sha256/%s", digest + 7);
        archive_entry_set_pathname(e, name);
        archive_entry_set_filetype(e, AE_IFREG);
        archive_entry_set_perm(e, 0644);
        archive_entry_set_size(e, (la_int64_t)size);
        r = archive_write_header(ar, e) == ARCHIVE_OK ? 0 : -1;
        archive_entry_free(e);
        if (r < 0)
            return kiln_error_set(err, KILN_EIO, 0, "archive: %s", arerr(ar));
    }
    return copy_stream(fd, digest, out_fd, ar, err);
}

static int open_new_dir(const char *dest, int *out, kiln_error **err)
{
    if (mkdir(dest, 0755) < 0 && errno != EEXIST)
        return kiln_error_set(err, kiln_code_from_errno(errno), errno, "mkdir %s", dest);
    int fd = open(dest, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return kiln_error_set(err, KILN_EEXIST, errno, "%s exists and is not a directory", dest);
    _cleanup_closedir_ DIR *d = fdopendir(dup(fd));
    struct dirent *e;
    while (d != NULL && (e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0) {
            close(fd);
            return kiln_error_set(err, KILN_EEXIST, 0, "%s exists and is not empty", dest);
        }
    }
    *out = fd;
    return 0;
}

static int export_dir(const psh_store *s, const struct plan *p, const char *dest, kiln_error **err)
{
    _cleanup_close_ int root = -1;
    _cleanup_close_ int blobs = -1;
    _cleanup_close_ int sha = -1;
    int r = open_new_dir(dest, &root, err);
    if (r < 0)
        return r;
    if (mkdirat(root, "blobs", 0755) < 0 ||
        (blobs = openat(root, "blobs", O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0 ||
        mkdirat(blobs, "sha256", 0755) < 0 ||
        (sha = openat(blobs, "sha256", O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0)
        return kiln_error_set(err, KILN_EIO, errno, "create %s/blobs/sha256", dest);
    for (size_t i = 0; i < p->blobs.n; i++) {
        const char *dg = p->blobs.v[i];
        char tmp[96];
        snprintf(tmp, sizeof(tmp), ".%s.tmp", dg + 7);
        _cleanup_close_ int fd =
            openat(sha, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644);
        if (fd < 0)
            return kiln_error_set(err, KILN_EIO, errno, "create %s/blobs/sha256/%s", dest, tmp);
        if ((r = copy_out(s, dg, fd, NULL, err)) < 0 || fsync(fd) < 0 ||
            renameat(sha, tmp, sha, dg + 7) < 0) {
            unlinkat(sha, tmp, 0);
            return r < 0 ? r : kiln_error_set(err, KILN_EIO, errno, "write blob %s", dg);
        }
    }
    if (fsync(sha) < 0)
        return kiln_error_set(err, KILN_EIO, errno, "fsync %s", dest);
    if ((r = kiln_atomic_write_at(root, root, "oci-layout", OCI_LAYOUT_CONTENT,
                                  strlen(OCI_LAYOUT_CONTENT), 0644, 0, err)) < 0)
        return r;
    return kiln_atomic_write_at(root, root, "index.json", p->index, strlen(p->index), 0644, 0, err);
}

static int ar_add(struct archive *ar, const char *name, bool dir, const char *data,
                  kiln_error **err)
{
    struct archive_entry *e = archive_entry_new();
    if (e == NULL)
        return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
    archive_entry_set_pathname(e, name);
    archive_entry_set_filetype(e, dir ? AE_IFDIR : AE_IFREG);
    archive_entry_set_perm(e, dir ? 0755 : 0644);
    archive_entry_set_size(e, dir ? 0 : (la_int64_t)strlen(data));
    int ok = archive_write_header(ar, e) == ARCHIVE_OK &&
             (dir || archive_write_data(ar, data, strlen(data)) == (la_ssize_t)strlen(data));
    archive_entry_free(e);
    if (!ok)
        return kiln_error_set(err, KILN_EIO, 0, "archive %s: %s", name, arerr(ar));
    return 0;
}

static int export_archive(const psh_store *s, const struct plan *p, const char *dest,
                          kiln_error **err)
{
    char tmp[4200], rnd[17];
    kiln_random_hex(rnd, 16);
    if (snprintf(tmp, sizeof(tmp), "%s.%s.tmp", dest, rnd) >= (int)sizeof(tmp))
        return kiln_error_set(err, KILN_EINVAL, 0, "export path too long");
    struct stat st;
    if (stat(dest, &st) == 0 && !S_ISREG(st.st_mode))
        return kiln_error_set(err, KILN_EEXIST, 0, "%s exists and is not a regular file", dest);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0644);
    if (fd < 0)
        return kiln_error_set(err, kiln_code_from_errno(errno), errno, "create %s", tmp);
    struct archive *ar = archive_write_new();
    int r = 0;
    if (ar == NULL || archive_write_set_format_pax_restricted(ar) != ARCHIVE_OK ||
        archive_write_open_fd(ar, fd) != ARCHIVE_OK) {
        r = kiln_error_set(err, KILN_EIO, 0, "archive %s", tmp);
        goto out;
    }
    if ((r = ar_add(ar, "oci-layout", false, OCI_LAYOUT_CONTENT, err)) < 0 ||
        (r = ar_add(ar, "index.json", false, p->index, err)) < 0 ||
        (r = ar_add(ar, "blobs/", true, NULL, err)) < 0 ||
        (r = ar_add(ar, "blobs/sha256/", true, NULL, err)) < 0)
        goto out;
    for (size_t i = 0; i < p->blobs.n; i++)
        if ((r = copy_out(s, p->blobs.v[i], -1, ar, err)) < 0)
            goto out;
    if (archive_write_close(ar) != ARCHIVE_OK) {
        r = kiln_error_set(err, KILN_EIO, 0, "archive %s: %s", tmp, arerr(ar));
        goto out;
    }
    if (fsync(fd) < 0 || rename(tmp, dest) < 0)
        r = kiln_error_set(err, KILN_EIO, errno, "write %s", dest);
out:
    if (ar != NULL)
        archive_write_free(ar);
    close(fd);
    if (r < 0)
        unlink(tmp);
    return r;
}

int psh_store_export(const psh_store *s, const char *ref, psh_export_kind kind, const char *dest,
                     const char *confine, kiln_error **err)
{
    if (dest == NULL || dest[0] == '\0')
        return kiln_error_set(err, KILN_EINVAL, 0, "export: no destination");
    struct plan p = {0};
    int r = confine_dest(s, confine, dest, err);
    if (r == 0)
        r = make_plan(s, ref, &p, err);
    if (r == 0)
        r = kind == PSH_EXPORT_OCI_DIR ? export_dir(s, &p, dest, err)
                                       : export_archive(s, &p, dest, err);
    plan_dispose(&p);
    if (r < 0)
        kiln_error_wrap(err, "export %s to %s", ref ? ref : "", dest);
    return r;
}
