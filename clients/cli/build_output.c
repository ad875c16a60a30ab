/* kiln build --output: the result written on the client's side, as buildx
 * does with its exporters.  The bytes come over the RPC, never as a path on
 * the services' host: the pusher streams the built image as an OCI archive
 * (transfer.c, ExportRead), which is kept as it is (type=oci) or whose
 * layers are applied here, base first, into a directory (type=local) or a
 * directory then packed as a tar (type=tar).
 *
 * Applying a layer is done in two passes over its blob: first its OCI
 * whiteouts (they delete what lower layers left, never what this layer
 * adds), then its other entries.  The layers were made by RUN steps, which
 * are hostile: libarchive refuses names with "..", absolute names are taken
 * below the root, nothing is written through a symlink, a whiteout is
 * applied only when its parent resolves inside the root, device nodes are
 * skipped and set-user/group-id bits dropped. */
#include <archive.h>
#include <archive_entry.h>

#include "cli.h"
#include "cleanup.h"
#include "fs.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define WH_PREFIX    ".wh."
#define WH_OPAQUE    ".wh..wh..opq"
#define MANIFEST_MAX ((size_t)4 << 20)

int cli_output_parse(const char *arg, cli_output *out)
{
    memset(out, 0, sizeof(*out));
    if (strchr(arg, '=') == NULL) { /* -o DIR */
        out->kind = CLI_OUT_LOCAL;
        snprintf(out->dest, sizeof(out->dest), "%s", arg);
        return *arg ? CLI_EXIT_OK
                    : (cli_errorf("build: --output wants a directory"), CLI_EXIT_USAGE);
    }
    _cleanup_free_ char *dup = strdup(arg);
    char *save = NULL;
    for (char *kv = dup ? strtok_r(dup, ",", &save) : NULL; kv; kv = strtok_r(NULL, ",", &save)) {
        if (strcmp(kv, "type=local") == 0)
            out->kind = CLI_OUT_LOCAL;
        else if (strcmp(kv, "type=tar") == 0)
            out->kind = CLI_OUT_TAR;
        else if (strcmp(kv, "type=oci") == 0)
            out->kind = CLI_OUT_OCI;
        else if (strncmp(kv, "dest=", 5) == 0)
            snprintf(out->dest, sizeof(out->dest), "%s", kv + 5);
        else {
            cli_errorf("build: --output: unknown '%s' (type=local|tar|oci,dest=PATH)", kv);
            return CLI_EXIT_USAGE;
        }
    }
    if (out->kind == CLI_OUT_NONE || out->dest[0] == '\0' || strcmp(out->dest, "-") == 0) {
        cli_errorf("build: --output wants type=local|tar|oci,dest=PATH (a file or directory "
                   "here; '-' is not supported), got '%s'",
                   arg);
        return CLI_EXIT_USAGE;
    }
    if (out->kind == CLI_OUT_LOCAL) {
        struct stat st;
        if (stat(out->dest, &st) == 0 && !S_ISDIR(st.st_mode)) {
            cli_errorf("build: --output %s exists and is not a directory", out->dest);
            return CLI_EXIT_USAGE;
        }
        return CLI_EXIT_OK;
    }
    return cli_check_path("build", "--output", out->dest, CLI_PATH_NEW_FILE);
}

/* A file of at most max bytes (caller frees). */
static char *slurp(const char *path, size_t max, kiln_error **err)
{
    _cleanup_fclose_ FILE *f = fopen(path, "re");
    _cleanup_free_ char *buf = malloc(max + 1);
    size_t n = 0;
    if (f == NULL || buf == NULL || (n = fread(buf, 1, max + 1, f)) > max || ferror(f)) {
        kiln_error_set(err, KILN_EIO, errno, "read %s", path);
        return NULL;
    }
    buf[n] = '\0';
    char *r = buf;
    buf = NULL;
    return r;
}

/* The layer blob paths of the one image of an OCI layout, base first. */
static int layout_layers(const char *layout, char ***out, size_t *n, kiln_error **err)
{
    char p[PATH_MAX];
    if ((size_t)snprintf(p, sizeof(p), "%s/index.json", layout) >= sizeof(p))
        return kiln_error_set(err, KILN_EINVAL, 0, "%s: name too long", layout);
    _cleanup_free_ char *idx = slurp(p, MANIFEST_MAX, err);
    _cleanup_cjson_ cJSON *ij = idx ? cJSON_Parse(idx) : NULL;
    const cJSON *md =
        cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(ij, "manifests"), 0), "digest");
    if (!cJSON_IsString(md) || strncmp(md->valuestring, "sha256:", 7) != 0)
        return idx ? kiln_error_set(err, KILN_EIO, 0, "export: no manifest in %s", p) : -1;
    if ((size_t)snprintf(p, sizeof(p), "%s/blobs/sha256/%s", layout, md->valuestring + 7) >=
        sizeof(p))
        return kiln_error_set(err, KILN_EINVAL, 0, "%s: name too long", layout);
    _cleanup_free_ char *man = slurp(p, MANIFEST_MAX, err);
    _cleanup_cjson_ cJSON *mj = man ? cJSON_Parse(man) : NULL;
    const cJSON *layers = cJSON_GetObjectItem(mj, "layers");
    if (!cJSON_IsArray(layers))
        return man ? kiln_error_set(err, KILN_EIO, 0, "export: %s is no image manifest", p) : -1;
    size_t k = (size_t)cJSON_GetArraySize(layers);
    char **v = calloc(k + 1, sizeof(*v));
    if (v == NULL)
        return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
    for (size_t i = 0; i < k; i++) {
        const cJSON *d = cJSON_GetObjectItem(cJSON_GetArrayItem(layers, (int)i), "digest");
        if (!cJSON_IsString(d) || !kiln_digest_valid(d->valuestring) ||
            asprintf(&v[i], "%s/blobs/sha256/%s", layout, d->valuestring + 7) < 0) {
            for (size_t j = 0; j < i; j++)
                free(v[j]);
            free(v);
            return kiln_error_set(err, KILN_EIO, 0, "export: bad layer %zu in %s", i, p);
        }
    }
    *out = v;
    *n = k;
    return 0;
}

static struct archive *open_layer(const char *blob, kiln_error **err)
{
    struct archive *a = archive_read_new();
    if (a == NULL)
        return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory"), NULL;
    archive_read_support_filter_all(a);
    archive_read_support_format_tar(a);
    if (archive_read_open_filename(a, blob, 1 << 16) != ARCHIVE_OK) {
        kiln_error_set(err, KILN_EIO, 0, "layer %s: %s", blob, archive_error_string(a));
        archive_read_free(a);
        return NULL;
    }
    return a;
}

/* The entry's name below the root: leading "/" and "./" dropped; NULL for
 * the root itself or a name with a ".." component. */
static const char *rel_name(const char *name)
{
    while (*name == '/' || (name[0] == '.' && name[1] == '/'))
        name += name[0] == '/' ? 1 : 2;
    if (*name == '\0' || strcmp(name, ".") == 0)
        return NULL;
    for (const char *p = name; (p = strstr(p, "..")) != NULL; p += 2)
        if ((p == name || p[-1] == '/') && (p[2] == '\0' || p[2] == '/'))
            return NULL;
    return name;
}

/* Applies one whiteout (name = "dir/.wh.X" or "dir/.wh..wh..opq"). */
static int whiteout(const char *root, const char *name, kiln_error **err)
{
    _cleanup_free_ char *copy = strdup(name);
    if (copy == NULL)
        return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
    char *slash = strrchr(copy, '/'), *base = slash ? slash + 1 : copy;
    char parent[PATH_MAX], real[PATH_MAX];
    if (slash)
        *slash = '\0';
    if ((size_t)snprintf(parent, sizeof(parent), "%s/%s", root, slash ? copy : "") >=
        sizeof(parent))
        return 0; /* cannot exist below root */
    /* A parent that is missing, or a symlink leading out, is left alone. */
    size_t rl = strlen(root);
    if (realpath(parent, real) == NULL || strncmp(real, root, rl) != 0 ||
        (real[rl] != '\0' && real[rl] != '/'))
        return 0;
    _cleanup_close_ int dfd = open(real, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (dfd < 0)
        return 0;
    if (strcmp(base, WH_OPAQUE) != 0)
        return kiln_rm_rf_at(dfd, base + strlen(WH_PREFIX), err);
    int dd = dup(dfd);
    _cleanup_closedir_ DIR *d = dd >= 0 ? fdopendir(dd) : NULL;
    if (d == NULL && dd >= 0)
        close(dd);
    struct dirent *de;
    while (d && (de = readdir(d)) != NULL)
        if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..") &&
            kiln_rm_rf_at(dfd, de->d_name, err) < 0)
            return -1;
    return 0;
}

/* Pass one: the layer's whiteouts. */
static int layer_whiteouts(const char *root, const char *blob, kiln_error **err)
{
    struct archive *a = open_layer(blob, err);
    if (a == NULL)
        return -1;
    struct archive_entry *e;
    int ar, r = 0;
    while (r == 0 && (ar = archive_read_next_header(a, &e)) == ARCHIVE_OK) {
        const char *name = rel_name(archive_entry_pathname(e));
        const char *base = name ? strrchr(name, '/') : NULL;
        base = base ? base + 1 : name;
        if (base && strncmp(base, WH_PREFIX, strlen(WH_PREFIX)) == 0)
            r = whiteout(root, name, err);
    }
    if (r == 0 && ar != ARCHIVE_EOF)
        r = kiln_error_set(err, KILN_EIO, 0, "layer %s: %s", blob, archive_error_string(a));
    archive_read_free(a);
    return r;
}

/* The entry's data from a to the disk writer w. */
static int copy_data(struct archive *a, struct archive *w)
{
    const void *buf;
    size_t size;
    la_int64_t off;
    int ar;
    while ((ar = archive_read_data_block(a, &buf, &size, &off)) == ARCHIVE_OK)
        if (archive_write_data_block(w, buf, size, off) < ARCHIVE_WARN)
            return ARCHIVE_FATAL;
    return ar == ARCHIVE_EOF ? ARCHIVE_OK : ARCHIVE_FATAL;
}

/* Directory mtimes of one layer, set again once the layer is written:
 * libarchive sets an existing directory's time at once, and the files
 * written into it afterwards would change it again. */
typedef struct dir_times {
    char **path;
    struct timespec *mtime;
    size_t n, cap;
} dir_times;

static void dir_times_add(dir_times *d, const char *path, struct archive_entry *e)
{
    if (d->n == d->cap) {
        size_t cap = d->cap ? d->cap * 2 : 64;
        char **p = realloc(d->path, cap * sizeof(*p));
        if (p)
            d->path = p;
        struct timespec *t = p ? realloc(d->mtime, cap * sizeof(*t)) : NULL;
        if (t == NULL)
            return; /* a time not restored is no failure */
        d->mtime = t;
        d->cap = cap;
    }
    if ((d->path[d->n] = strdup(path)) != NULL)
        d->mtime[d->n++] = (struct timespec){archive_entry_mtime(e), archive_entry_mtime_nsec(e)};
}

/* Sets the recorded times of directories that still resolve inside root. */
static void dir_times_apply(dir_times *d, const char *root)
{
    size_t rl = strlen(root);
    for (size_t i = 0; i < d->n; i++) {
        char real[PATH_MAX];
        struct timespec ts[2] = {d->mtime[i], d->mtime[i]};
        if (realpath(d->path[i], real) && strncmp(real, root, rl) == 0 &&
            (real[rl] == '/' || real[rl] == '\0'))
            utimensat(AT_FDCWD, real, ts, AT_SYMLINK_NOFOLLOW);
        free(d->path[i]);
    }
    free(d->path);
    free(d->mtime);
}

/* Writes the entry e (name: below root) with w; ARCHIVE_* status. */
static int extract_entry(struct archive *a, struct archive *w, struct archive_entry *e,
                         const char *root, const char *name)
{
    char full[PATH_MAX], link[PATH_MAX];
    /* A RUN step made these files: no device node and no set-id bit of
     * its choosing lands on the client's host. */
    if (archive_entry_filetype(e) == AE_IFCHR || archive_entry_filetype(e) == AE_IFBLK)
        return ARCHIVE_FAILED;
    archive_entry_set_perm(e, archive_entry_perm(e) & 01777);
    snprintf(full, sizeof(full), "%s/%s", root, name);
    archive_entry_set_pathname(e, full);
    const char *hl = archive_entry_hardlink(e);
    if (hl) {
        const char *hn = rel_name(hl);
        if (hn == NULL)
            return ARCHIVE_FAILED;
        snprintf(link, sizeof(link), "%s/%s", root, hn);
        archive_entry_set_hardlink(e, link);
    }
    int wr = archive_write_header(w, e);
    if (wr == ARCHIVE_OK || wr == ARCHIVE_WARN)
        wr = copy_data(a, w);
    if (wr == ARCHIVE_OK || wr == ARCHIVE_WARN)
        wr = archive_write_finish_entry(w) == ARCHIVE_FATAL ? ARCHIVE_FATAL : ARCHIVE_OK;
    return wr;
}

/* Pass two: everything else, below root.  Entries the disk refuses (device
 * nodes without root, say) are counted in *skipped. */
static int layer_extract(const char *root, const char *blob, size_t *skipped, kiln_error **err)
{
    struct archive *a = open_layer(blob, err);
    _cleanup_archive_ struct archive *w = archive_write_disk_new();
    if (a == NULL || w == NULL) {
        archive_read_free(a);
        return a ? kiln_error_set(err, KILN_ENOSPC, 0, "out of memory") : -1;
    }
    int flags = ARCHIVE_EXTRACT_SECURE_SYMLINKS | ARCHIVE_EXTRACT_SECURE_NODOTDOT |
                ARCHIVE_EXTRACT_PERM | ARCHIVE_EXTRACT_TIME | ARCHIVE_EXTRACT_UNLINK;
    if (geteuid() == 0)
        flags |= ARCHIVE_EXTRACT_OWNER | ARCHIVE_EXTRACT_XATTR;
    archive_write_disk_set_options(w, flags);
    dir_times dirs = {0};
    struct archive_entry *e;
    int ar, r = 0;
    while (r == 0 && (ar = archive_read_next_header(a, &e)) == ARCHIVE_OK) {
        const char *name = rel_name(archive_entry_pathname(e));
        const char *base = name ? strrchr(name, '/') : NULL;
        base = base ? base + 1 : name;
        if (name == NULL || strncmp(base, WH_PREFIX, strlen(WH_PREFIX)) == 0)
            continue;
        int wr = extract_entry(a, w, e, root, name);
        if (wr == ARCHIVE_FATAL)
            r = kiln_error_set(err, KILN_EIO, 0, "%s: %s", name, archive_error_string(w));
        else if (wr == ARCHIVE_FAILED)
            (*skipped)++;
        else if (archive_entry_filetype(e) == AE_IFDIR)
            dir_times_add(&dirs, archive_entry_pathname(e), e);
    }
    if (r == 0 && ar != ARCHIVE_EOF)
        r = kiln_error_set(err, KILN_EIO, 0, "layer %s: %s", blob, archive_error_string(a));
    archive_read_free(a);
    archive_write_close(w);
    dir_times_apply(&dirs, root);
    return r;
}

/* Applies the layers of the OCI layout into root (made if missing). */
static int apply_layout(const char *layout, const char *root_in, kiln_error **err)
{
    char **blobs = NULL, root[PATH_MAX];
    size_t n = 0, skipped = 0;
    int r = kiln_mkdir_p(root_in, 0755, err);
    if (r == 0 && realpath(root_in, root) == NULL)
        r = kiln_error_set(err, KILN_EIO, errno, "%s", root_in);
    if (r == 0)
        r = layout_layers(layout, &blobs, &n, err);
    for (size_t i = 0; r == 0 && i < n; i++)
        if ((r = layer_whiteouts(root, blobs[i], err)) == 0)
            r = layer_extract(root, blobs[i], &skipped, err);
    for (size_t i = 0; i < n; i++)
        free(blobs[i]);
    free(blobs);
    if (r == 0 && skipped)
        fprintf(stderr,
                "kiln: warning: --output %s: %zu entries not written (device nodes, "
                "links leaving the tree, or what the disk refused)\n",
                root_in, skipped);
    return r;
}

/* The tree at dir as a tar file dest (temp next to it, renamed). */
static int tar_tree(const char *dir, const char *dest, kiln_error **err)
{
    cli_context cc = {.fd = -1};
    int r = cli_context_pack_tree(&cc, dir, err);
    char tmp[PATH_MAX];
    if (r == 0 && (size_t)snprintf(tmp, sizeof(tmp), "%s.kiln-tmp-XXXXXX", dest) >= sizeof(tmp))
        r = kiln_error_set(err, KILN_EINVAL, 0, "%s: name too long", dest);
    _cleanup_close_ int fd = r == 0 ? mkostemp(tmp, O_CLOEXEC) : -1;
    if (r == 0 && fd < 0)
        r = kiln_error_set(err, KILN_EIO, errno, "create %s", tmp);
    uint8_t buf[1 << 16];
    for (uint64_t off = 0; r == 0 && off < cc.size;) {
        ssize_t k = pread(cc.fd, buf, sizeof(buf), (off_t)off);
        if (k <= 0 || kiln_write_all(fd, buf, (size_t)k) < 0)
            r = kiln_error_set(err, KILN_EIO, errno, "write %s", tmp);
        off += k > 0 ? (uint64_t)k : 0;
    }
    if (r == 0 && (fchmod(fd, 0644) < 0 || fsync(fd) < 0 || rename(tmp, dest) < 0))
        r = kiln_error_set(err, KILN_EIO, errno, "write %s", dest);
    if (r < 0 && fd >= 0)
        unlink(tmp);
    cli_context_dispose(&cc);
    return r;
}

int cli_output_write(cli_ctx *ctx, const cli_output *o, const char *digest)
{
    char target[PATH_MAX + 16];
    if (o->kind == CLI_OUT_OCI) {
        snprintf(target, sizeof(target), "oci-archive:%s", o->dest);
        return cli_export_stream(ctx, digest, target, false);
    }
    /* The image as a layout in a private temp dir, then its layers. */
    const char *td = getenv("TMPDIR");
    char tmp[PATH_MAX], layout[PATH_MAX + 8], rootfs[PATH_MAX + 8];
    snprintf(tmp, sizeof(tmp), "%s/kiln-output-XXXXXX", td && *td ? td : "/tmp");
    if (mkdtemp(tmp) == NULL) {
        cli_errorf("build: --output: %s: %s", tmp, strerror(errno));
        return CLI_EXIT_FAILED;
    }
    snprintf(layout, sizeof(layout), "%s/oci", tmp);
    snprintf(rootfs, sizeof(rootfs), "%s/rootfs", tmp);
    snprintf(target, sizeof(target), "oci:%s", layout);
    int rc = cli_export_stream(ctx, digest, target, false);
    kiln_error *err = NULL;
    if (rc == CLI_EXIT_OK &&
        (apply_layout(layout, o->kind == CLI_OUT_LOCAL ? o->dest : rootfs, &err) < 0 ||
         (o->kind == CLI_OUT_TAR && tar_tree(rootfs, o->dest, &err) < 0))) {
        cli_errorf("build: --output %s: %s", o->dest, err ? err->msg : "failed");
        kiln_error_free(&err);
        rc = CLI_EXIT_FAILED;
    }
    kiln_rm_rf(tmp, NULL);
    return rc;
}
