/* kiln import and kiln export against a pusher that does not share our
 * filesystem: the import source goes up in content-defined chunks
 * (context.c's machinery, sent to the pusher), the export comes down as an
 * oci-archive read in ranges (ExportRead), verified against the digest the
 * pusher announced, and is written here: a temp file or dir next to the
 * target, renamed into place only when complete.  Nothing names a path on
 * the pusher's host. */
#include "cli.h"
#include "layout_tar.h"
#include "cleanup.h"
#include "config.h"
#include "digest.h"
#include "fs.h"

#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define READ_RANGE     ((uint32_t)2 << 20) /* the pusher's ExportRead maximum */
#define READ_TIMEOUT   120000
#define EXPORT_TIMEOUT 3600000
#define LAYOUT_ENTRIES 100000

/* The process umask (read without changing it for long). */
static mode_t cur_umask(void)
{
    mode_t m = umask(022);
    umask(m);
    return m;
}

int cli_choose_transfer(cli_ctx *ctx, cli_service s, const char *transfer, bool *stream)
{
    *stream = strcmp(transfer, "stream") == 0;
    if (strcmp(transfer, "auto") != 0)
        return CLI_EXIT_OK;
    /* Paths only go over ipc:// to a service that sees our files. */
    bool same = kiln_ipc_path(ctx->url[s]) != NULL;
    int rc = same ? cli_shares_fs(ctx, s, &same) : CLI_EXIT_OK;
    *stream = !same;
    return rc;
}

/* ---- import ---- */

int cli_import_send(cli_ctx *ctx, const char *src, cli_progress mode, cli_context *c, bool *layout)
{
    struct stat st;
    kiln_error *err = NULL;
    int r;
    *layout = false;
    if (stat(src, &st) < 0) {
        cli_errorf("import: %s: %s", src, strerror(errno));
        return CLI_EXIT_FAILED;
    }
    if (S_ISDIR(st.st_mode)) {
        char p[PATH_MAX];
        snprintf(p, sizeof(p), "%s/oci-layout", src);
        *layout = access(p, F_OK) == 0;
        r = cli_context_pack_tree(c, src, &err);
    } else {
        r = cli_context_pack_file(c, src, &err);
    }
    if (r < 0) {
        cli_errorf("import: %s", err->msg);
        kiln_error_free(&err);
        return CLI_EXIT_FAILED;
    }
    return cli_stream_send(ctx, CLI_PUSHER, c, mode, "import source");
}

/* ---- export ---- */

typedef struct stream {
    kiln_rpc_client *rc;
    const char *id;
    uint64_t size;
    const char *digest;
} stream;

/* Reads the whole archive into fd, checking its size and digest. */
static int receive(stream *s, int fd, kiln_error **err)
{
    kiln_sha256 *h = kiln_sha256_new();
    if (h == NULL)
        return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
    uint64_t off = 0;
    int r = 0;
    for (;;) {
        kiln_req req = KILN__V1__REQUEST__INIT;
        Kiln__V1__ExportReadRequest q = KILN__V1__EXPORT_READ_REQUEST__INIT;
        q.stream_id = (char *)s->id;
        q.offset = off;
        q.length = READ_RANGE;
        req.body_case = KILN__V1__REQUEST__BODY_EXPORT_READ;
        req.export_read = &q;
        kiln_reply *rep = NULL;
        if ((r = kiln_rpc_call(s->rc, &req, &rep, READ_TIMEOUT, err)) < 0)
            break;
        const Kiln__V1__ExportReadReply *b = rep->export_read_reply;
        size_t n = b->data.len;
        bool eof = b->eof;
        if (off + n > s->size) {
            kiln_rpc_reply_free(rep);
            r = kiln_error_set(err, KILN_EIO, 0,
                               "the pusher sent more than the %llu bytes announced",
                               (unsigned long long)s->size);
            break;
        }
        kiln_sha256_update(h, b->data.data, n);
        size_t done = 0;
        while (done < n) {
            ssize_t w = write(fd, b->data.data + done, n - done);
            if (w < 0 && errno == EINTR)
                continue;
            if (w <= 0) {
                r = kiln_error_set(err, KILN_EIO, errno, "write the export");
                break;
            }
            done += (size_t)w;
        }
        kiln_rpc_reply_free(rep);
        off += n;
        if (r < 0 || eof)
            break;
        if (n == 0) {
            r = kiln_error_set(err, KILN_EIO, 0, "the export stream ended early");
            break;
        }
    }
    char got[KILN_DIGEST_STRLEN + 1];
    kiln_sha256_final_str(h, got);
    kiln_sha256_free(h);
    if (r == 0 && (off != s->size || strcmp(got, s->digest) != 0))
        r = kiln_error_set(err, KILN_EIO, 0,
                           "the export arrived damaged (%llu bytes hashing to %s, announced "
                           "%llu bytes, %s)",
                           (unsigned long long)off, got, (unsigned long long)s->size, s->digest);
    return r;
}

/* Unpacks the oci-archive in fd into dir (the user's own files). */
static int unpack(int fd, const char *dir, kiln_error **err)
{
    static const kiln_layout_untar_opts o = {.what = "export",
                                             .code = KILN_EIO,
                                             .dir_mode = 0755,
                                             .file_mode = 0644,
                                             .fsync = true,
                                             .max_entries = LAYOUT_ENTRIES};
    return kiln_layout_untar(fd, dir, &o, err);
}

/* dest must not exist, or be an empty directory (removed here, to be
 * replaced by the rename). */
static int free_dest_dir(const char *dest, kiln_error **err)
{
    _cleanup_closedir_ DIR *d = opendir(dest);
    if (d == NULL) {
        if (errno == ENOENT)
            return 0;
        return kiln_error_set(err, KILN_EEXIST, errno, "%s exists and is not a directory", dest);
    }
    struct dirent *de;
    while ((de = readdir(d)) != NULL)
        if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0)
            return kiln_error_set(err, KILN_EEXIST, 0, "%s exists and is not empty", dest);
    if (rmdir(dest) < 0)
        return kiln_error_set(err, KILN_EIO, errno, "rmdir %s", dest);
    return 0;
}

static void fsync_parent(const char *path)
{
    _cleanup_free_ char *copy = strdup(path);
    if (copy == NULL)
        return;
    int fd = open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
}

static int write_target(stream *s, bool dir, const char *dest, kiln_error **err)
{
    char tmp[PATH_MAX];
    if ((size_t)snprintf(tmp, sizeof(tmp), "%s.kiln-tmp-XXXXXX", dest) >= sizeof(tmp))
        return kiln_error_set(err, KILN_EINVAL, 0, "export: %s: name too long", dest);
    int r;
    if (!dir) {
        struct stat st;
        if (stat(dest, &st) == 0 && !S_ISREG(st.st_mode))
            return kiln_error_set(err, KILN_EEXIST, 0, "%s exists and is not a regular file", dest);
        _cleanup_close_ int fd = mkostemp(tmp, O_CLOEXEC);
        if (fd < 0)
            return kiln_error_set(err, kiln_code_from_errno(errno), errno, "create %s", tmp);
        fchmod(fd, 0644 & ~cur_umask());
        r = receive(s, fd, err);
        if (r == 0 && (fsync(fd) < 0 || rename(tmp, dest) < 0))
            r = kiln_error_set(err, KILN_EIO, errno, "write %s", dest);
        if (r < 0)
            unlink(tmp);
        else
            fsync_parent(dest);
        return r;
    }
    /* A directory: the archive goes to an unlinked temp file first, is
     * verified, then unpacked into a temp dir renamed over dest. */
    const char *td = getenv("TMPDIR");
    char atmp[PATH_MAX];
    snprintf(atmp, sizeof(atmp), "%s/kiln-export-XXXXXX", td && *td ? td : "/tmp");
    _cleanup_close_ int fd = mkostemp(atmp, O_CLOEXEC);
    if (fd < 0)
        return kiln_error_set(err, kiln_code_from_errno(errno), errno, "create %s", atmp);
    unlink(atmp);
    if ((r = free_dest_dir(dest, err)) < 0 || (r = receive(s, fd, err)) < 0)
        return r;
    if (mkdtemp(tmp) == NULL)
        return kiln_error_set(err, kiln_code_from_errno(errno), errno, "create %s", tmp);
    chmod(tmp, 0755 & ~cur_umask());
    r = unpack(fd, tmp, err);
    if (r == 0 && rename(tmp, dest) < 0)
        r = kiln_error_set(err, KILN_EIO, errno, "rename to %s", dest);
    if (r < 0)
        kiln_rm_rf(tmp, NULL);
    else
        fsync_parent(dest);
    return r;
}

int cli_export_stream(cli_ctx *ctx, const char *ref, const char *target, bool print)
{
    bool dir = strncmp(target, "oci:", 4) == 0;
    const char *dest = strchr(target, ':') + 1;
    kiln_rpc_client *rc = cli_connect(ctx, CLI_PUSHER);
    if (rc == NULL)
        return CLI_EXIT_UNREACHABLE;
    kiln_req req = KILN__V1__REQUEST__INIT;
    Kiln__V1__ExportRequest er = KILN__V1__EXPORT_REQUEST__INIT;
    er.ref = (char *)ref;
    er.stream = true;
    req.body_case = KILN__V1__REQUEST__BODY_EXPORT;
    req.export = &er;
    kiln_reply *rep = NULL;
    kiln_error *err = NULL;
    int r = kiln_rpc_call(rc, &req, &rep, EXPORT_TIMEOUT, &err);
    if (r == 0 && !kiln_digest_valid(rep->export_reply->stream_digest))
        r = kiln_error_set(&err, KILN_EIO, 0, "export: the pusher does not stream exports");
    if (r == 0) {
        stream s = {rc, rep->export_reply->stream_id, rep->export_reply->stream_size,
                    rep->export_reply->stream_digest};
        r = write_target(&s, dir, dest, &err);
        /* Done with it either way: the pusher drops its copy. */
        kiln_req rel = KILN__V1__REQUEST__INIT;
        Kiln__V1__ExportReadRequest q = KILN__V1__EXPORT_READ_REQUEST__INIT;
        q.stream_id = (char *)s.id;
        q.release = true;
        rel.body_case = KILN__V1__REQUEST__BODY_EXPORT_READ;
        rel.export_read = &q;
        kiln_reply *rr = NULL;
        kiln_error *rerr = NULL;
        kiln_rpc_call(rc, &rel, &rr, ctx->timeout_ms, &rerr);
        kiln_rpc_reply_free(rr);
        kiln_error_free(&rerr);
    }
    int code = CLI_EXIT_OK;
    if (r < 0) {
        cli_errorf("export %s: %s", ref, err->msg);
        code = cli_exit_for(err);
    } else if (print) {
        printf("%s\n", rep->export_reply->digest);
    }
    kiln_error_free(&err);
    kiln_rpc_reply_free(rep);
    kiln_rpc_client_free(rc);
    return code;
}

int cli_export_receive(cli_ctx *ctx, const char *ref, const char *target)
{
    return cli_export_stream(ctx, ref, target, true);
}

int cli_import_run(cli_ctx *ctx, Kiln__V1__ImportRequest *ir, cli_context *c, bool layout,
                   const char *abs, bool json, bool quiet, char *digest, size_t cap)
{
    if (c != NULL) {
        ir->source_digest = c->digest;
        ir->source_chunks = c->pb_ptrs;
        ir->n_source_chunks = c->n_chunks;
        ir->source_layout = layout;
    } else {
        ir->source = (char *)abs;
    }
    kiln_req req = KILN__V1__REQUEST__INIT;
    req.body_case = KILN__V1__REQUEST__BODY_IMPORT;
    req.import = ir;
    kiln_reply *rep = NULL;
    int rc = cli_call(ctx, CLI_PUSHER, &req, &rep, 0);
    if (c != NULL)
        cli_context_dispose(c);
    if (rc != CLI_EXIT_OK)
        return rc;
    char job[KILN_JOB_ID_MAX + 1];
    snprintf(job, sizeof(job), "%s", rep->job_accepted->job_id);
    kiln_rpc_reply_free(rep);
    return cli_follow_job(ctx, CLI_PUSHER, job, json, quiet, digest, cap);
}
