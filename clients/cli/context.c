/* kiln build's context transfer.
 *
 * A builder on this host with the same filesystem view gets the context as a
 * path.  Any other builder gets it streamed: the context directory (after
 * .dockerignore) as a deterministic PAX tar — sorted names, mode and mtime
 * kept, uid/gid 0, no user or group names, regular files, directories and
 * symlinks only — cut into content-defined chunks (common/chunker.h) while it
 * is written to an unlinked temp file.  ContextCheck tells which chunks the
 * builder lacks, ContextPut sends those, and the Build names the tar's digest
 * and its chunks.  An unchanged context sends nothing; a changed file sends
 * only the chunks around it.
 *
 * kiln import to a pusher that does not share our filesystem sends its
 * source the same way (ContextCheck / ContextPut to the pusher): a file as
 * it is, a directory as a deterministic tar that keeps what a root
 * filesystem needs (owners, device nodes, FIFOs, hard links). */
#include "cli.h"
#include "chunker.h"
#include "cleanup.h"
#include "fs.h"
#include "digest.h"
#include "ignore.h"

#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/ioctl.h>
#include <unistd.h>

#define MAX_ENTRIES     1000000
#define IGNORE_FILE_MAX ((size_t)1 << 20)
#define PUT_TIMEOUT_MIN 30000
#define READ_BUF        ((size_t)64 << 10)

/* ---- walking the context ---- */

typedef struct entry {
    char *rel; /* "" for the root */
    struct stat st;
} entry;

typedef struct walk {
    const char *root;
    kiln_ignore *ig;
    bool exceptions; /* some pattern starts with '!': excluded dirs are still walked */
    bool tree;       /* a root filesystem: owners, devices, FIFOs and hard links kept */
    entry *v;
    size_t n, cap;
} walk;

static int push_entry(walk *w, const char *rel, const struct stat *st, kiln_error **err)
{
    if (w->n == MAX_ENTRIES)
        return kiln_error_set(err, KILN_ENOSPC, 0, "context: more than %d entries", MAX_ENTRIES);
    if (w->n == w->cap) {
        size_t nc = w->cap ? 2 * w->cap : 256;
        entry *nv = realloc(w->v, nc * sizeof(*nv));
        if (nv == NULL)
            return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
        w->v = nv;
        w->cap = nc;
    }
    w->v[w->n].rel = strdup(rel);
    w->v[w->n].st = *st;
    if (w->v[w->n].rel == NULL)
        return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
    w->n++;
    return 0;
}

static int cmp_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Sorted names of one directory (caller frees each and the array). */
static int list_dir(const char *path, char ***out, size_t *n, kiln_error **err)
{
    _cleanup_closedir_ DIR *d = opendir(path);
    if (d == NULL)
        return kiln_error_set(err, kiln_code_from_errno(errno), errno, "context: %s", path);
    char **v = NULL;
    size_t cnt = 0, cap = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        if (cnt == cap) {
            cap = cap ? 2 * cap : 32;
            char **nv = realloc(v, cap * sizeof(*nv));
            if (nv == NULL)
                break;
            v = nv;
        }
        if ((v[cnt] = strdup(de->d_name)) == NULL)
            break;
        cnt++;
    }
    if (de != NULL) {
        for (size_t i = 0; i < cnt; i++)
            free(v[i]);
        free(v);
        return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
    }
    if (cnt > 1) /* v is NULL for an empty directory */
        qsort(v, cnt, sizeof(*v), cmp_names);
    *out = v;
    *n = cnt;
    return 0;
}

static int walk_dir(walk *w, const char *rel, kiln_error **err)
{
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s%s%s", w->root, *rel ? "/" : "", rel);
    char **names = NULL;
    size_t n = 0;
    int r = list_dir(path, &names, &n, err);
    for (size_t i = 0; r == 0 && i < n; i++) {
        char crel[PATH_MAX], full[PATH_MAX];
        if ((size_t)snprintf(crel, sizeof(crel), "%s%s%s", rel, *rel ? "/" : "", names[i]) >=
                sizeof(crel) ||
            (size_t)snprintf(full, sizeof(full), "%s/%s", w->root, crel) >= sizeof(full)) {
            r = kiln_error_set(err, KILN_EINVAL, 0, "context: path too long under %s", path);
            break;
        }
        struct stat st;
        if (lstat(full, &st) < 0) {
            r = kiln_error_set(err, kiln_code_from_errno(errno), errno, "context: %s", full);
            break;
        }
        /* .dockerignore itself always goes: the builder applies it again. */
        bool excluded =
            w->ig && strcmp(crel, ".dockerignore") != 0 && kiln_ignore_match(w->ig, crel);
        if (S_ISDIR(st.st_mode)) {
            if (excluded && !w->exceptions)
                continue;
            size_t mark = w->n;
            if ((r = push_entry(w, crel, &st, err)) < 0 || (r = walk_dir(w, crel, err)) < 0)
                break;
            if (excluded && w->n == mark + 1) { /* nothing below was re-included */
                free(w->v[mark].rel);
                w->n = mark;
            }
        } else if (S_ISREG(st.st_mode) || S_ISLNK(st.st_mode) ||
                   (w->tree &&
                    (S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode) || S_ISFIFO(st.st_mode)))) {
            if (!excluded)
                r = push_entry(w, crel, &st, err);
        } else if (!excluded) {
            fprintf(stderr, "kiln: %s: skipping %s (not a file, directory or symlink)\n",
                    w->tree ? "import" : "context", crel);
        }
    }
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
    return r;
}

static int parse_ignore(walk *w, const char *text, size_t len, const char *what, kiln_error **err)
{
    int r = kiln_ignore_parse(&w->ig, text, len, err);
    if (r < 0)
        return kiln_error_wrap(err, "%s", what);
    for (size_t i = 0; i < kiln_ignore_count(w->ig); i++)
        if (kiln_ignore_pattern(w->ig, i)[0] == '!')
            w->exceptions = true;
    return 0;
}

static int load_ignore(walk *w, const char *ignore_text, kiln_error **err)
{
    if (ignore_text)
        return parse_ignore(w, ignore_text, strlen(ignore_text), "the Dockerfile's .dockerignore",
                            err);
    char p[PATH_MAX];
    snprintf(p, sizeof(p), "%s/.dockerignore", w->root);
    _cleanup_fclose_ FILE *f = fopen(p, "re");
    if (f == NULL)
        return errno == ENOENT ? 0
                               : kiln_error_set(err, kiln_code_from_errno(errno), errno, "%s", p);
    _cleanup_free_ char *text = malloc(IGNORE_FILE_MAX + 1);
    if (text == NULL)
        return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
    size_t len = fread(text, 1, IGNORE_FILE_MAX, f);
    return parse_ignore(w, text, len, p, err);
}

/* ---- the tar, chunked as it is written ---- */

typedef struct packer {
    cli_context *out;
    kiln_sha256 *whole;
    uint8_t *buf; /* pending bytes, not yet cut */
    size_t len;
    uint64_t written; /* bytes already in the temp file */
    int err_no;
} packer;

static int add_chunk(packer *p, const uint8_t *data, size_t len)
{
    cli_context *c = p->out;
    if (c->n_chunks == c->cap_chunks) {
        size_t nc = c->cap_chunks ? 2 * c->cap_chunks : 64;
        cli_context_chunk *nv = realloc(c->chunks, nc * sizeof(*nv));
        if (nv == NULL)
            return -1;
        c->chunks = nv;
        c->cap_chunks = nc;
    }
    cli_context_chunk *ch = &c->chunks[c->n_chunks];
    ch->offset = p->written;
    ch->size = len;
    kiln_sha256_bytes(data, len, ch->digest);
    size_t done = 0;
    while (done < len) {
        ssize_t w = pwrite(c->fd, data + done, len - done, (off_t)(p->written + done));
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            p->err_no = w < 0 ? errno : ENOSPC;
            return -1;
        }
        done += (size_t)w;
    }
    p->written += len;
    c->n_chunks++;
    return 0;
}

/* Cuts what is pending; at the end of the stream (final) everything. */
static int cut(packer *p, bool final)
{
    size_t off = 0;
    while (p->len - off >= KILN_CHUNK_MAX || (final && off < p->len)) {
        size_t n = kiln_chunk_cut(p->buf + off, p->len - off, &kiln_chunk_default);
        if (add_chunk(p, p->buf + off, n) < 0)
            return -1;
        off += n;
    }
    memmove(p->buf, p->buf + off, p->len - off);
    p->len -= off;
    return 0;
}

static la_ssize_t pack_write(struct archive *a, void *ud, const void *data, size_t len)
{
    packer *p = ud;
    const uint8_t *d = data;
    size_t left = len;
    while (left) {
        size_t room = 2 * KILN_CHUNK_MAX - p->len;
        size_t n = left < room ? left : room;
        memcpy(p->buf + p->len, d, n);
        p->len += n;
        d += n;
        left -= n;
        kiln_sha256_update(p->whole, d - n, n);
        if (p->len >= KILN_CHUNK_MAX && cut(p, false) < 0) {
            archive_set_error(a, p->err_no ? p->err_no : ENOMEM, "context temp file");
            return -1;
        }
    }
    return (la_ssize_t)len;
}

static int write_file(struct archive *a, const char *full, const entry *e, kiln_error **err)
{
    _cleanup_close_ int fd = open(full, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return kiln_error_set(err, kiln_code_from_errno(errno), errno, "context: %s", full);
    _cleanup_free_ uint8_t *buf = malloc(READ_BUF);
    if (buf == NULL)
        return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
    uint64_t left = (uint64_t)e->st.st_size;
    while (left) {
        ssize_t n = read(fd, buf, left < READ_BUF ? (size_t)left : READ_BUF);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return kiln_error_set(err, KILN_EIO, n < 0 ? errno : 0,
                                  "context: %s changed while being read", full);
        if (archive_write_data(a, buf, (size_t)n) != n)
            return kiln_error_set(err, KILN_EIO, 0, "context tar: %s", archive_error_string(a));
        left -= (uint64_t)n;
    }
    return 0;
}

/* In a tree, the earlier entry a regular file with several links shares its
 * inode with (a hard link to it), or NULL. */
static const char *first_link(const walk *w, const entry *e)
{
    if (!w->tree || !S_ISREG(e->st.st_mode) || e->st.st_nlink < 2)
        return NULL;
    for (const entry *o = w->v; o < e; o++)
        if (o->st.st_ino == e->st.st_ino && o->st.st_dev == e->st.st_dev && S_ISREG(o->st.st_mode))
            return o->rel;
    return NULL;
}

static int write_entry(struct archive *a, const walk *w, const entry *e, kiln_error **err)
{
    char full[PATH_MAX];
    snprintf(full, sizeof(full), "%s%s%s", w->root, *e->rel ? "/" : "", e->rel);
    struct archive_entry *ae = archive_entry_new();
    if (ae == NULL)
        return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
    archive_entry_set_pathname(ae, *e->rel ? e->rel : ".");
    archive_entry_set_perm(ae, e->st.st_mode & 07777);
    archive_entry_set_mtime(ae, e->st.st_mtim.tv_sec, e->st.st_mtim.tv_nsec);
    archive_entry_set_uid(ae, w->tree ? e->st.st_uid : 0);
    archive_entry_set_gid(ae, w->tree ? e->st.st_gid : 0);
    const char *link = first_link(w, e);
    int r = 0;
    if (link != NULL) {
        archive_entry_set_filetype(ae, AE_IFREG);
        archive_entry_set_hardlink(ae, link);
        archive_entry_set_size(ae, 0);
    } else if (S_ISCHR(e->st.st_mode) || S_ISBLK(e->st.st_mode) || S_ISFIFO(e->st.st_mode)) {
        archive_entry_set_filetype(ae, S_ISCHR(e->st.st_mode)   ? AE_IFCHR
                                       : S_ISBLK(e->st.st_mode) ? AE_IFBLK
                                                                : AE_IFIFO);
        archive_entry_set_rdev(ae, e->st.st_rdev);
    } else if (S_ISDIR(e->st.st_mode)) {
        archive_entry_set_filetype(ae, AE_IFDIR);
    } else if (S_ISLNK(e->st.st_mode)) {
        char target[PATH_MAX];
        ssize_t n = readlink(full, target, sizeof(target) - 1);
        if (n < 0)
            r = kiln_error_set(err, kiln_code_from_errno(errno), errno, "context: %s", full);
        target[n > 0 ? n : 0] = '\0';
        archive_entry_set_filetype(ae, AE_IFLNK);
        archive_entry_set_symlink(ae, target);
    } else {
        archive_entry_set_filetype(ae, AE_IFREG);
        archive_entry_set_size(ae, e->st.st_size);
    }
    if (r == 0 && archive_write_header(a, ae) != ARCHIVE_OK)
        r = kiln_error_set(err, KILN_EIO, 0, "context tar: %s: %s", e->rel,
                           archive_error_string(a));
    archive_entry_free(ae);
    if (r == 0 && link == NULL && S_ISREG(e->st.st_mode) && e->st.st_size > 0)
        r = write_file(a, full, e, err);
    return r;
}

static int write_tar(cli_context *out, walk *w, kiln_error **err)
{
    packer p = {.out = out};
    p.whole = kiln_sha256_new();
    p.buf = malloc(2 * KILN_CHUNK_MAX);
    struct archive *a = archive_write_new();
    int r = 0;
    if (p.whole == NULL || p.buf == NULL || a == NULL) {
        r = kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
        goto out;
    }
    archive_write_set_format_pax_restricted(a);
    if (archive_write_open(a, &p, NULL, pack_write, NULL) != ARCHIVE_OK) {
        r = kiln_error_set(err, KILN_EIO, 0, "context tar: %s", archive_error_string(a));
        goto out;
    }
    for (size_t i = 0; i < w->n && r == 0; i++)
        r = write_entry(a, w, &w->v[i], err);
    if (r == 0 && archive_write_close(a) != ARCHIVE_OK)
        r = kiln_error_set(err, KILN_EIO, p.err_no, "context tar: %s", archive_error_string(a));
    if (r == 0 && cut(&p, true) < 0)
        r = kiln_error_set(err, KILN_EIO, p.err_no, "context temp file");
    if (r == 0) {
        kiln_sha256_final_str(p.whole, out->digest);
        out->size = p.written;
    }
out:
    archive_write_free(a);
    kiln_sha256_free(p.whole);
    free(p.buf);
    return r;
}

/* Walks dir (after the ignore patterns unless tree) and writes its tar. */
static int pack_dir(cli_context *out, const char *dir, bool tree, const char *ignore_text,
                    kiln_error **err)
{
    memset(out, 0, sizeof(*out));
    out->fd = -1;
    const char *tmpdir = getenv("TMPDIR");
    char tmpl[PATH_MAX];
    snprintf(tmpl, sizeof(tmpl), "%s/kiln-context-XXXXXX", tmpdir && *tmpdir ? tmpdir : "/tmp");
    out->fd = mkostemp(tmpl, O_CLOEXEC);
    if (out->fd < 0)
        return kiln_error_set(err, kiln_code_from_errno(errno), errno, "create %s", tmpl);
    unlink(tmpl);
    walk w = {.root = dir, .tree = tree};
    struct stat st;
    int r = 0;
    if (stat(dir, &st) < 0 || !S_ISDIR(st.st_mode))
        r = kiln_error_set(err, KILN_EINVAL, errno, "%s is not a directory", dir);
    if (r == 0 && !tree)
        r = load_ignore(&w, ignore_text, err);
    if (r == 0)
        r = push_entry(&w, "", &st, err);
    if (r == 0)
        r = walk_dir(&w, "", err);
    if (r == 0)
        r = write_tar(out, &w, err);
    out->n_files = w.n ? w.n - 1 : 0;
    for (size_t i = 0; i < w.n; i++)
        free(w.v[i].rel);
    free(w.v);
    kiln_ignore_free(w.ig);
    if (r < 0)
        cli_context_dispose(out);
    return r;
}

int cli_context_pack(cli_context *out, const char *dir, const char *ignore_text, kiln_error **err)
{
    return pack_dir(out, dir, false, ignore_text, err);
}

int cli_context_pack_tree(cli_context *out, const char *dir, kiln_error **err)
{
    return pack_dir(out, dir, true, NULL, err);
}

int cli_context_pack_file(cli_context *out, const char *path, kiln_error **err)
{
    memset(out, 0, sizeof(*out));
    out->fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (out->fd < 0 || fstat(out->fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        int e = errno;
        cli_context_dispose(out);
        return kiln_error_set(err, KILN_EINVAL, e, "%s is not a readable file", path);
    }
    out->n_files = 1;
    kiln_sha256 *whole = kiln_sha256_new();
    uint8_t *buf = malloc(2 * KILN_CHUNK_MAX);
    size_t len = 0;
    uint64_t off = 0;
    bool eof = false;
    int r = whole && buf ? 0 : kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
    while (r == 0 && (!eof || len > 0)) {
        while (!eof && len < 2 * KILN_CHUNK_MAX) {
            ssize_t n = read(out->fd, buf + len, 2 * KILN_CHUNK_MAX - len);
            if (n < 0 && errno == EINTR)
                continue;
            if (n < 0) {
                r = kiln_error_set(err, KILN_EIO, errno, "read %s", path);
                break;
            }
            eof = n == 0;
            kiln_sha256_update(whole, buf + len, (size_t)n);
            len += (size_t)n;
        }
        if (r < 0 || len == 0)
            break;
        size_t n = kiln_chunk_cut(buf, len, &kiln_chunk_default);
        if (out->n_chunks == out->cap_chunks) {
            size_t nc = out->cap_chunks ? 2 * out->cap_chunks : 64;
            cli_context_chunk *nv = realloc(out->chunks, nc * sizeof(*nv));
            if (nv == NULL) {
                r = kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
                break;
            }
            out->chunks = nv;
            out->cap_chunks = nc;
        }
        cli_context_chunk *ch = &out->chunks[out->n_chunks++];
        ch->offset = off;
        ch->size = n;
        kiln_sha256_bytes(buf, n, ch->digest);
        off += n;
        memmove(buf, buf + n, len - n);
        len -= n;
    }
    if (r == 0 && off == 0)
        r = kiln_error_set(err, KILN_EINVAL, 0, "%s is empty", path);
    if (r == 0) {
        kiln_sha256_final_str(whole, out->digest);
        out->size = off;
    }
    kiln_sha256_free(whole);
    free(buf);
    if (r < 0)
        cli_context_dispose(out);
    return r;
}

void cli_context_dispose(cli_context *c)
{
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    free(c->chunks);
    free(c->pb);
    free(c->pb_ptrs);
    c->chunks = NULL;
    c->pb = NULL;
    c->pb_ptrs = NULL;
}

/* ---- sending ---- */

static void show_progress(bool tty, const char *what, const cli_context *c, size_t sent,
                          size_t to_send, size_t reused, bool last)
{
    char line[160];
    int n =
        snprintf(line, sizeof(line), "%s: %zu files, %.1f MB, %zu of %zu chunks sent (%zu reused)",
                 what, c->n_files, (double)c->size / 1e6, sent, to_send, reused);
    struct winsize ws;
    if (tty && ioctl(2, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 1 && n >= ws.ws_col)
        line[ws.ws_col - 1] = '\0'; /* a wrapped line would defeat the \r redraw */
    fprintf(stderr, "%s%s%s", tty ? "\r\033[2K" : "", line, !tty || last ? "\n" : "");
    fflush(stderr);
}

static int put_chunk(kiln_rpc_client *rc, cli_context *c, size_t i, uint8_t *buf, int timeout_ms,
                     kiln_error **err)
{
    const cli_context_chunk *ch = &c->chunks[i];
    size_t done = 0;
    while (done < ch->size) {
        ssize_t n = pread(c->fd, buf + done, ch->size - done, (off_t)(ch->offset + done));
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return kiln_error_set(err, KILN_EIO, n < 0 ? errno : 0, "context temp file");
        done += (size_t)n;
    }
    kiln_req req = KILN__V1__REQUEST__INIT;
    Kiln__V1__ContextPutRequest pr = KILN__V1__CONTEXT_PUT_REQUEST__INIT;
    pr.digest = (char *)ch->digest;
    pr.data.data = buf;
    pr.data.len = ch->size;
    req.body_case = KILN__V1__REQUEST__BODY_CONTEXT_PUT;
    req.context_put = &pr;
    kiln_reply *rep = NULL;
    int r = kiln_rpc_call(rc, &req, &rep, timeout_ms, err);
    kiln_rpc_reply_free(rep);
    return r;
}

int cli_context_send(cli_ctx *ctx, cli_context *c, cli_progress mode)
{
    return cli_stream_send(ctx, CLI_BUILDER, c, mode, "context");
}

/* (Re)builds c's chunk lists for the request (sent again to another node
 * of a pool: they are rebuilt).  Returns -1 when out of memory. */
static int chunk_lists(cli_context *c)
{
    free(c->pb);
    free(c->pb_ptrs);
    c->pb = calloc(c->n_chunks + 1, sizeof(*c->pb));
    c->pb_ptrs = calloc(c->n_chunks + 1, sizeof(*c->pb_ptrs));
    if (c->pb == NULL || c->pb_ptrs == NULL)
        return -1;
    for (size_t i = 0; i < c->n_chunks; i++) {
        kiln__v1__context_chunk__init(&c->pb[i]);
        c->pb[i].digest = c->chunks[i].digest;
        c->pb[i].size = c->chunks[i].size;
        c->pb_ptrs[i] = &c->pb[i];
    }
    return 0;
}

/* The chunks of c that ck says are missing, each digest once (the same
 * chunk can occur twice in one tar): a flag per chunk, caller frees (NULL
 * when out of memory); their number in *n. */
static bool *missing_chunks(const cli_context *c, const Kiln__V1__ContextCheckReply *ck, size_t *n)
{
    *n = 0;
    bool *send = calloc(c->n_chunks + 1, sizeof(*send));
    if (send == NULL)
        return NULL;
    for (size_t k = 0; k < ck->n_missing; k++) {
        uint32_t i = ck->missing[k];
        if (i >= c->n_chunks || send[i])
            continue;
        bool dup = false;
        for (size_t j = 0; j < k && !dup; j++)
            dup = strcmp(c->chunks[ck->missing[j]].digest, c->chunks[i].digest) == 0;
        if (!dup) {
            send[i] = true;
            (*n)++;
        }
    }
    return send;
}

/* Puts the chunks flagged in send (to_send of them; the others are reused)
 * over rc, showing progress in mode.  Returns -1 with *err set. */
static int put_chunks(cli_ctx *ctx, kiln_rpc_client *rc, cli_context *c, const bool *send,
                      size_t to_send, cli_progress mode, const char *what, kiln_error **err)
{
    size_t reused = c->n_chunks - to_send, sent = 0;
    bool show = mode == CLI_PROGRESS_PLAIN || mode == CLI_PROGRESS_TTY;
    bool tty = mode == CLI_PROGRESS_TTY;
    if (show && tty)
        show_progress(tty, what, c, 0, c->n_chunks, reused, to_send == 0);
    int timeout = ctx->timeout_ms > PUT_TIMEOUT_MIN ? ctx->timeout_ms : PUT_TIMEOUT_MIN;
    uint8_t *buf = to_send ? malloc(KILN_CHUNK_MAX) : NULL;
    for (size_t i = 0; i < c->n_chunks && to_send; i++) {
        if (!send[i])
            continue;
        if (buf == NULL) {
            kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
            break;
        }
        if (put_chunk(rc, c, i, buf, timeout, err) < 0)
            break;
        sent++;
        if (show && tty)
            show_progress(tty, what, c, sent, c->n_chunks, reused, sent == to_send);
    }
    free(buf);
    if (*err != NULL)
        return -1;
    if (show && !tty)
        show_progress(false, what, c, sent, c->n_chunks, reused, true);
    return 0;
}

/* Asks the service over rc which of c's chunks it misses, and sends those.
 * Returns -1 with *err set. */
static int send_chunks(cli_ctx *ctx, kiln_rpc_client *rc, cli_context *c, cli_progress mode,
                       const char *what, kiln_error **err)
{
    kiln_req req = KILN__V1__REQUEST__INIT;
    Kiln__V1__ContextCheckRequest cr = KILN__V1__CONTEXT_CHECK_REQUEST__INIT;
    cr.context_digest = c->digest;
    cr.chunks = c->pb_ptrs;
    cr.n_chunks = c->n_chunks;
    req.body_case = KILN__V1__REQUEST__BODY_CONTEXT_CHECK;
    req.context_check = &cr;
    kiln_reply *rep = NULL;
    if (kiln_rpc_call(rc, &req, &rep, ctx->timeout_ms, err) < 0) {
        kiln_rpc_reply_free(rep);
        return -1;
    }
    size_t to_send = 0;
    bool *send = missing_chunks(c, rep->context_check_reply, &to_send);
    int r = send == NULL ? kiln_error_set(err, KILN_ENOSPC, 0, "out of memory")
                         : put_chunks(ctx, rc, c, send, to_send, mode, what, err);
    free(send);
    kiln_rpc_reply_free(rep);
    return r;
}

int cli_stream_send(cli_ctx *ctx, cli_service s, cli_context *c, cli_progress mode,
                    const char *what)
{
    if (chunk_lists(c) < 0) {
        cli_errorf("out of memory");
        return CLI_EXIT_FAILED;
    }
    kiln_rpc_client *rc = cli_connect(ctx, s);
    if (rc == NULL)
        return CLI_EXIT_UNREACHABLE;
    kiln_error *err = NULL;
    int rc_exit = CLI_EXIT_OK;
    if (send_chunks(ctx, rc, c, mode, what, &err) < 0) {
        cli_errorf("sending the %s: %s", s == CLI_BUILDER ? "build context" : what,
                   err ? err->msg : "failed");
        rc_exit = cli_exit_for(err);
    }
    kiln_error_free(&err);
    kiln_rpc_client_free(rc);
    return rc_exit;
}

int cli_builder_shares_fs(cli_ctx *ctx, bool *same)
{
    return cli_shares_fs(ctx, CLI_BUILDER, same);
}

int cli_shares_fs(cli_ctx *ctx, cli_service s, bool *same)
{
    kiln_req req = KILN__V1__REQUEST__INIT;
    Kiln__V1__StatusRequest sr = KILN__V1__STATUS_REQUEST__INIT;
    req.body_case = KILN__V1__REQUEST__BODY_STATUS;
    req.status = &sr;
    kiln_reply *rep = NULL;
    int rc = cli_call(ctx, s, &req, &rep, 0);
    if (rc != CLI_EXIT_OK)
        return rc;
    char mine[192];
    kiln_host_id(mine, sizeof(mine));
    const char *theirs = rep->status_reply->host_id;
    /* A service that does not say (older ones) is taken to be local, as before. */
    *same = theirs == NULL || *theirs == '\0' || strcmp(theirs, mine) == 0;
    kiln_rpc_reply_free(rep);
    return CLI_EXIT_OK;
}
