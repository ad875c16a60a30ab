/* kiln-pusher: import sources and exports streamed between the CLI and the
 * pusher, for clients that do not share its filesystem (tcp://, tls+tcp://).
 *
 *   $DATA/transfer/chunks/           import chunks (common/chunkstore.h), sent
 *                                    with ContextCheck / ContextPut as build
 *                                    contexts are to the builder
 *   $DATA/transfer/.tmp-*            an import source being assembled or an
 *                                    OCI layout being unpacked (flocked)
 *   $DATA/transfer/export-<id>.tar   an export waiting to be read (ExportRead)
 *
 * An import reassembles its chunks (each chunk and the whole verified) into a
 * private temp file, or unpacks a streamed OCI layout into a private temp dir
 * (regular files and dirs only, names cleaned, nothing outside it), and
 * imports that as a local source would be; the chunks go once it succeeds.
 * An export is an oci-archive written here and read back in ranges; the
 * client verifies its digest and releases it.  Leftovers (a killed pusher, a
 * client that went away) go at start, at prune, and exports an hour unread. */
#include "cleanup.h"
#include "units.h"
#include "layout_tar.h"
#include "chunker.h"
#include "chunkstore.h"
#include "config.h"
#include "digest.h"
#include "log.h"
#include "fs.h"
#include "psh_server_internal.h"
#include "psh_transfer.h"

#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define IMPORT_MAX_CHUNKS  65536 /* x KILN_CHUNK_MAX: 128 GiB */
#define LAYOUT_MAX_ENTRIES 100000
#define EXPORT_READ_MAX    ((size_t)2 << 20)
#define EXPORT_MAX_IDLE_S  3600
#define EXPORT_PREFIX      "export-"
#define EXPORT_ID_LEN      32

/* ---- setup and sweeping ---- */

/* Removes temp entries nobody holds a flock on and exports idle for max_idle
 * seconds (0: every one); returns how many went. */
static size_t sweep(psh_server *p, uint64_t max_idle_s)
{
    _cleanup_closedir_ DIR *d = opendir(p->transfer_dir);
    size_t n = 0;
    struct dirent *de;
    while (d && (de = readdir(d)) != NULL) {
        bool tmp = strncmp(de->d_name, ".tmp-", 5) == 0;
        bool exp = strncmp(de->d_name, EXPORT_PREFIX, strlen(EXPORT_PREFIX)) == 0;
        if (!tmp && !exp)
            continue;
        char path[PATH_MAX];
        snprintf(path, sizeof(path), "%s/%s", p->transfer_dir, de->d_name);
        _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
        struct stat st;
        if (fd < 0 || fstat(fd, &st) < 0)
            continue;
        if (tmp && flock(fd, LOCK_EX | LOCK_NB) < 0)
            continue; /* in use */
        if (exp && max_idle_s && (uint64_t)kiln_age_s(&st.st_mtim) < max_idle_s)
            continue;
        if (S_ISDIR(st.st_mode))
            kiln_rm_rf(path, NULL);
        else
            unlink(path);
        n++;
    }
    return n;
}

int psh_srv_transfer_open(psh_server *p, kiln_error **err)
{
    char dir[PATH_MAX];
    snprintf(dir, sizeof(dir), "%s/transfer/chunks", psh_store_data_dir(p->store));
    int r = kiln_chunkstore_open(&p->chunks, dir, err);
    if (r < 0)
        return r;
    snprintf(dir, sizeof(dir), "%s/transfer", psh_store_data_dir(p->store));
    if ((p->transfer_dir = strdup(dir)) == NULL)
        return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
    chmod(dir, 0700);
    /* Nobody reads an export across a restart: every leftover goes. */
    size_t n = sweep(p, 0);
    if (n)
        kiln_info("transfer", "removed %zu interrupted import(s) and export(s)", n);
    return 0;
}

void psh_srv_transfer_close(psh_server *p)
{
    kiln_chunkstore_free(p->chunks);
    p->chunks = NULL;
    free(p->transfer_dir);
    p->transfer_dir = NULL;
}

uint64_t psh_srv_transfer_prune(psh_server *p)
{
    return sweep(p, 0) + kiln_chunkstore_prune(p->chunks, 0);
}

/* ---- ContextCheck / ContextPut: import chunks ---- */

static kiln_chunk_ref *chunk_refs(kiln_arena *a, Kiln__V1__ContextChunk **in, size_t n)
{
    kiln_chunk_ref *v = kiln_arena_calloc(a, n + 1, sizeof(*v));
    for (size_t i = 0; v && i < n; i++)
        v[i] = (kiln_chunk_ref){in[i]->digest, in[i]->size};
    return v;
}

static int m_context_check(void *user, const kiln_req *req, kiln_reply *reply, kiln_arena *a,
                           kiln_error **err)
{
    psh_server *p = user;
    const Kiln__V1__ContextCheckRequest *q = req->context_check;
    kiln_chunk_ref *chunks = chunk_refs(a, q->chunks, q->n_chunks);
    uint32_t *missing = kiln_arena_calloc(a, q->n_chunks + 1, sizeof(*missing));
    Kiln__V1__ContextCheckReply *b =
        NEW_BODY(a, Kiln__V1__ContextCheckReply, kiln__v1__context_check_reply__init);
    if (chunks == NULL || missing == NULL || b == NULL)
        return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
    int r = kiln_chunks_validate(q->context_digest, chunks, q->n_chunks, IMPORT_MAX_CHUNKS,
                                 "import source", err);
    if (r < 0)
        return r;
    size_t n_missing = 0;
    kiln_chunkstore_missing(p->chunks, chunks, q->n_chunks, missing, &n_missing);
    b->missing = missing;
    b->n_missing = n_missing;
    reply->body_case = KILN__V1__REPLY__BODY_CONTEXT_CHECK_REPLY;
    reply->context_check_reply = b;
    return 0;
}

static int m_context_put(void *user, const kiln_req *req, kiln_reply *reply, kiln_arena *a,
                         kiln_error **err)
{
    psh_server *p = user;
    const Kiln__V1__ContextPutRequest *q = req->context_put;
    Kiln__V1__ContextPutReply *b =
        NEW_BODY(a, Kiln__V1__ContextPutReply, kiln__v1__context_put_reply__init);
    if (b == NULL)
        return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
    bool existed = false;
    int r = kiln_chunkstore_put(p->chunks, q->digest, q->data.data, q->data.len, &existed, err);
    if (r < 0)
        return r;
    b->existed = existed;
    reply->body_case = KILN__V1__REPLY__BODY_CONTEXT_PUT_REPLY;
    reply->context_put_reply = b;
    return 0;
}

/* ---- streamed imports ---- */

int psh_srv_import_stream_check(psh_server *p, const Kiln__V1__ImportRequest *q, kiln_error **err)
{
    if (str_set(q->source))
        return kiln_error_set(err, KILN_EINVAL, 0,
                              "import: a source path and a streamed source are exclusive");
    _cleanup_free_ kiln_chunk_ref *chunks = calloc(q->n_source_chunks + 1, sizeof(*chunks));
    if (chunks == NULL)
        return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
    for (size_t i = 0; i < q->n_source_chunks; i++)
        chunks[i] = (kiln_chunk_ref){q->source_chunks[i]->digest, q->source_chunks[i]->size};
    int r = kiln_chunks_validate(q->source_digest, chunks, q->n_source_chunks, IMPORT_MAX_CHUNKS,
                                 "import source", err);
    for (size_t i = 0; r == 0 && i < q->n_source_chunks; i++)
        if (!kiln_chunkstore_has(p->chunks, &chunks[i], true))
            r = kiln_error_set(err, KILN_EPRECOND, 0,
                               "import source chunk %zu of %zu (%.71s) is missing on the pusher "
                               "(send it with ContextPut first)",
                               i + 1, q->n_source_chunks, chunks[i].digest);
    return r;
}

/* Writes the verified stream into fd. */
static int assemble(kiln_chunk_reader *rd, const char *digest, int fd, kiln_error **err)
{
    const void *data;
    ssize_t n;
    while ((n = kiln_chunk_reader_read(rd, &data, err)) > 0)
        if (kiln_write_all(fd, data, (size_t)n) < 0)
            return kiln_error_set(err, errno == ENOSPC ? KILN_ENOSPC : KILN_EIO, errno,
                                  "write the import source");
    if (n < 0)
        return (int)n;
    return kiln_chunk_reader_finish(rd, digest, err);
}

/* Unpacks a tar of an OCI layout (the assembled file fd) into dir, private
 * to the pusher until it is imported. */
static int unpack_layout(int fd, const char *dir, kiln_error **err)
{
    static const kiln_layout_untar_opts o = {.what = "streamed OCI layout",
                                             .code = KILN_EINVAL,
                                             .dir_mode = 0700,
                                             .file_mode = 0600,
                                             .fsync = false,
                                             .max_entries = LAYOUT_MAX_ENTRIES};
    return kiln_layout_untar(fd, dir, &o, err);
}

int psh_srv_import_stream(psh_server *p, const Kiln__V1__ImportRequest *q, const psh_import_opts *o,
                          psh_descriptor *d, kiln_error **err)
{
    _cleanup_free_ kiln_chunk_ref *chunks = calloc(q->n_source_chunks + 1, sizeof(*chunks));
    if (chunks == NULL)
        return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
    for (size_t i = 0; i < q->n_source_chunks; i++)
        chunks[i] = (kiln_chunk_ref){q->source_chunks[i]->digest, q->source_chunks[i]->size};
    char file[PATH_MAX], dir[PATH_MAX];
    snprintf(file, sizeof(file), "%s/.tmp-import-XXXXXX", p->transfer_dir);
    snprintf(dir, sizeof(dir), "%s/.tmp-layout-XXXXXX", p->transfer_dir);
    _cleanup_close_ int fd = mkostemp(file, O_CLOEXEC);
    if (fd < 0)
        return kiln_error_set(err, kiln_code_from_errno(errno), errno, "create %s", file);
    flock(fd, LOCK_EX); /* the sweep leaves it alone */
    kiln_chunk_reader *rd = NULL;
    int r = kiln_chunk_reader_new(&rd, p->chunks, chunks, q->n_source_chunks, "import source",
                                  "on the pusher", err);
    if (r == 0)
        r = assemble(rd, q->source_digest, fd, err);
    kiln_chunk_reader_free(rd);
    _cleanup_close_ int dfd = -1;
    bool made_dir = false;
    if (r == 0 && q->source_layout) {
        if (mkdtemp(dir) == NULL)
            r = kiln_error_set(err, kiln_code_from_errno(errno), errno, "mkdtemp %s", dir);
        else if ((made_dir = true) && (dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) >= 0)
            flock(dfd, LOCK_EX);
        if (r == 0)
            r = unpack_layout(fd, dir, err);
    }
    if (r == 0)
        r = psh_store_import(p->store, q->source_layout ? dir : file, q->ref, o, d, err);
    unlink(file);
    if (made_dir)
        kiln_rm_rf(dir, NULL);
    if (r < 0)
        return r;
    /* Consumed: a later import sends its chunks again. */
    for (size_t i = 0; i < q->n_source_chunks; i++)
        kiln_chunkstore_remove(p->chunks, chunks[i].digest);
    return 0;
}

/* ---- streamed exports ---- */

static bool valid_id(const char *id)
{
    if (id == NULL || strlen(id) != EXPORT_ID_LEN)
        return false;
    for (const char *c = id; *c; c++)
        if (!((*c >= '0' && *c <= '9') || (*c >= 'a' && *c <= 'f')))
            return false;
    return true;
}

int psh_srv_export_stream(psh_server *p, const char *ref, Kiln__V1__ExportReply *b, kiln_arena *a,
                          kiln_error **err)
{
    size_t n = sweep(p, EXPORT_MAX_IDLE_S);
    if (n)
        kiln_info("transfer", "removed %zu export(s) unread for an hour", n);
    char id[33], path[PATH_MAX];
    kiln_rpc_new_id(id); /* EXPORT_ID_LEN random hex digits */
    snprintf(path, sizeof(path), "%s/" EXPORT_PREFIX "%s.tar", p->transfer_dir, id);
    int r = psh_store_export(p->store, ref, PSH_EXPORT_OCI_ARCHIVE, path, NULL, err);
    if (r < 0)
        return r;
    _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    kiln_sha256 *h = kiln_sha256_new();
    _cleanup_free_ uint8_t *buf = malloc(1 << 16);
    uint64_t size = 0;
    ssize_t got = -1;
    if (fd >= 0 && h != NULL && buf != NULL)
        while ((got = read(fd, buf, 1 << 16)) > 0) {
            kiln_sha256_update(h, buf, (size_t)got);
            size += (uint64_t)got;
        }
    char digest[KILN_DIGEST_STRLEN + 1] = "";
    if (h != NULL)
        kiln_sha256_final_str(h, digest);
    kiln_sha256_free(h);
    if (got < 0) {
        unlink(path);
        return kiln_error_set(err, KILN_EIO, errno, "read back the export");
    }
    b->stream_id = kiln_arena_strdup(a, id);
    b->stream_size = size;
    b->stream_digest = kiln_arena_strdup(a, digest);
    return 0;
}

static int m_export_read(void *user, const kiln_req *req, kiln_reply *reply, kiln_arena *a,
                         kiln_error **err)
{
    psh_server *p = user;
    const Kiln__V1__ExportReadRequest *q = req->export_read;
    if (!valid_id(q->stream_id))
        return kiln_error_set(err, KILN_EINVAL, 0, "export read: stream id must be %d hex digits",
                              EXPORT_ID_LEN);
    if (q->length > EXPORT_READ_MAX)
        return kiln_error_set(err, KILN_EINVAL, 0, "export read: at most %zu bytes at a time",
                              EXPORT_READ_MAX);
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s/" EXPORT_PREFIX "%s.tar", p->transfer_dir, q->stream_id);
    Kiln__V1__ExportReadReply *b =
        NEW_BODY(a, Kiln__V1__ExportReadReply, kiln__v1__export_read_reply__init);
    if (b == NULL)
        return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
    reply->body_case = KILN__V1__REPLY__BODY_EXPORT_READ_REPLY;
    reply->export_read_reply = b;
    if (q->release) {
        unlink(path);
        b->eof = true;
        return 0;
    }
    _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) < 0)
        return kiln_error_set(err, KILN_ENOENT, errno,
                              "export stream %s is gone (pruned, unread for an hour, or the "
                              "pusher restarted): run the export again",
                              q->stream_id);
    futimens(fd, NULL); /* read recently: the idle sweep keeps it */
    uint8_t *data = q->length ? kiln_arena_alloc(a, q->length) : NULL;
    if (q->length && data == NULL)
        return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
    size_t done = 0;
    while (done < q->length) {
        ssize_t n = pread(fd, data + done, q->length - done, (off_t)(q->offset + done));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return kiln_error_set(err, KILN_EIO, errno, "read export stream %s", q->stream_id);
        if (n == 0)
            break;
        done += (size_t)n;
    }
    b->data.data = data;
    b->data.len = done;
    b->eof = q->offset + done >= (uint64_t)st.st_size;
    return 0;
}

/* ContextPut and ExportRead move bytes idempotently by themselves (content
 * addressed, or a range read): not MUTATING, which would keep a cached reply
 * per chunk. */
const kiln_rpc_method psh_transfer_methods[] = {
    {KILN__V1__REQUEST__BODY_CONTEXT_CHECK, "ContextCheck", m_context_check, 0, NULL},
    {KILN__V1__REQUEST__BODY_CONTEXT_PUT, "ContextPut", m_context_put, 0, NULL},
    {KILN__V1__REQUEST__BODY_EXPORT_READ, "ExportRead", m_export_read, 0, NULL},
};
const size_t psh_n_transfer_methods = KILN_ARRAY_SIZE(psh_transfer_methods);
