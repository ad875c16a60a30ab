/* Push: blobs first (several at once, bounded per registry), then manifests
 * (index children by digest), then the top manifest or index by tag.
 *
 * Per blob: HEAD (present: skip) → cross-repo mount from a repository of the
 * same registry known to hold it → upload.  Small blobs go in one streamed
 * PUT; large ones in PATCH chunks whose session (location + offset) is
 * persisted after every accepted chunk, so a broken chunk, or a pusher killed
 * and restarted, resumes from the offset the registry reports (GET on the
 * upload location → Range) instead of starting over.  The registry's
 * Docker-Content-Digest must equal the digest Kiln computed. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "reg_internal.h"

#define REG_MAX_RESTARTS 3 /* fresh upload sessions per blob after lost ones */

struct push {
    psh_store *s;
    reg_client *c;
    const psh_registry_opts *o;
    const psh_reg_events *ev;
    const char *repo; /* path on the registry */
    char scope[REG_SCOPE_MAX];
    psh_push_result *res;
    const psh_descriptor *blobs;
};

#define COUNT(field, v) __atomic_add_fetch(&p->res->field, (v), __ATOMIC_RELAXED)

/* "0-1234" or "bytes=0-1234" → 1235 (bytes the registry holds).
 * docker-registry answers "0-0" both for an empty session and for one byte;
 * it is read as empty (a wrong guess ends in repeated 416 answers and a new
 * session; the other guess would silently skip a byte). */
uint64_t reg_range_next(const char *range)
{
    if (range == NULL)
        return 0;
    const char *dash = strchr(range, '-');
    if (dash == NULL)
        return 0;
    char *end = NULL;
    unsigned long long e = strtoull(dash + 1, &end, 10);
    if (end == dash + 1 || e == 0)
        return 0;
    return (uint64_t)e + 1;
}

static int check_digest(const reg_resp *rs, const char *want, const char *what, kiln_error **err)
{
    if (rs->digest != NULL && strcmp(rs->digest, want) != 0)
        return kiln_error_set(err, KILN_EREMOTE, 0,
                              "%s: registry reports digest %.80s, expected %s", what, rs->digest,
                              want);
    return 0;
}

/* POST a new upload session; *loc receives the location (caller frees). */
static int start_upload(struct push *p, const char *what, char **loc, uint64_t *chunk_min,
                        kiln_error **err)
{
    char path[KILN_REF_NAME_MAX + 64];
    snprintf(path, sizeof(path), "/v2/%s/blobs/uploads/", p->repo);
    reg_req rq = {
        .method = "POST", .url = path, .scope = p->scope, .fd = -1, .retry = true, .what = what};
    reg_resp rs;
    int r = reg_do(p->c, &rq, &rs, err);
    if (r == 0 && (rs.status != 202 || rs.location == NULL))
        r = reg_status_error(&rs, what, err);
    if (r == 0) {
        *loc = reg_url(p->c, rs.location);
        if (chunk_min != NULL)
            *chunk_min = rs.chunk_min;
        if (*loc == NULL)
            r = kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
    }
    reg_resp_dispose(&rs);
    return r;
}

/* Closes an upload with PUT <location>&digest=…, with body bytes [off, size)
 * of fd (none when off == size). */
static int finish_upload(struct push *p, const psh_descriptor *d, const char *loc, int fd,
                         uint64_t off, long *status, kiln_error **err)
{
    _cleanup_free_ char *url = reg_url_add_query(loc, "digest", d->digest);
    if (url == NULL)
        return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
    reg_req rq = {.method = "PUT",
                  .url = url,
                  .scope = p->scope,
                  .fd = -1,
                  .no_low_speed = true,
                  .what = d->digest,
                  .sent = &p->res->bytes_sent,
                  .pdigest = d->digest,
                  .pbase = off,
                  .ptotal = d->size,
                  .progress_end = true};
    if (off < d->size) {
        rq.fd = fd;
        rq.fd_off = off;
        rq.fd_len = d->size - off;
    } else {
        rq.mem = "";
        rq.mem_len = 0;
    }
    reg_resp rs;
    int r = reg_do(p->c, &rq, &rs, err);
    if (status != NULL)
        *status = r == 0 ? rs.status : 0;
    if (r == 0 && rs.status != 201)
        r = reg_status_error(&rs, d->digest, err);
    if (r == 0)
        r = check_digest(&rs, d->digest, d->digest, err);
    reg_resp_dispose(&rs);
    return r;
}

/* HEAD the blob: 1 present, 0 absent, negative on error. */
static int blob_exists(struct push *p, const char *digest, kiln_error **err)
{
    char path[KILN_REF_NAME_MAX + 100];
    snprintf(path, sizeof(path), "/v2/%s/blobs/%s", p->repo, digest);
    reg_req rq = {
        .method = "HEAD", .url = path, .scope = p->scope, .fd = -1, .retry = true, .what = digest};
    reg_resp rs;
    int r = reg_do(p->c, &rq, &rs, err);
    if (r == 0) {
        if (rs.status == 200)
            r = 1;
        else if (rs.status != 404)
            r = reg_status_error(&rs, digest, err);
    }
    reg_resp_dispose(&rs);
    return r;
}

static bool transient_failure(int r, const reg_resp *rs)
{
    if (r < 0)
        return r == KILN_EUNAVAIL;
    return reg_status_transient(rs->status) || rs->status == 416;
}

/* Monolithic: POST, then one PUT streaming the whole blob file. */
static int upload_whole(struct push *p, const psh_descriptor *d, int fd, kiln_error **err)
{
    for (unsigned attempt = 0;; attempt++) {
        _cleanup_free_ char *loc = NULL;
        int r = start_upload(p, d->digest, &loc, NULL, err);
        if (r < 0)
            return r;
        kiln_error *e = NULL;
        r = finish_upload(p, d, loc, fd, 0, NULL, &e);
        if (r == 0)
            return 0;
        if (r != KILN_EUNAVAIL || attempt >= p->o->max_retries) {
            *err = e;
            return r;
        }
        int b = reg_backoff(p->c, attempt, -1, d->digest, e->msg, err);
        kiln_error_free(&e);
        COUNT(retries, 1);
        if (b < 0)
            return b;
    }
}

/* Asks the registry how much of the session it holds.  0 and *off on
 * success; KILN_ENOENT when the session is gone. */
static int upload_status(struct push *p, const psh_descriptor *d, char **loc, uint64_t *off,
                         kiln_error **err)
{
    reg_req rq = {.method = "GET",
                  .url = *loc,
                  .scope = p->scope,
                  .fd = -1,
                  .retry = true,
                  .what = d->digest};
    reg_resp rs;
    int r = reg_do(p->c, &rq, &rs, err);
    if (r == 0 && rs.status != 204 && rs.status != 200)
        r = rs.status == 404 || rs.status == 400 ? KILN_ENOENT
                                                 : reg_status_error(&rs, d->digest, err);
    if (r == 0) {
        *off = reg_range_next(rs.range);
        if (rs.location != NULL) {
            char *u = reg_url(p->c, rs.location);
            if (u != NULL) {
                free(*loc);
                *loc = u;
            }
        }
    }
    reg_resp_dispose(&rs);
    return r;
}

static int save(struct push *p, const psh_descriptor *d, const char *loc, uint64_t off,
                kiln_error **err)
{
    reg_session ss = {.location = (char *)loc, .offset = off};
    return reg_session_save(p->c->state_dir, p->c->host, p->repo, d->digest, &ss, err);
}

/* Hands a failure kept locally while deciding whether to retry (e) on to
 * the caller's err, as the other failure sites do: an error already in *err
 * is kept.  Returns r. */
static int pass_on(const kiln_error *e, int r, kiln_error **err)
{
    if (e != NULL)
        kiln_error_set(err, e->code, 0, "%s", e->msg); /* msg has any strerror text */
    return r;
}

/* One chunked upload of blob d: its session and how far it got. */
struct upload {
    struct push *p;
    const psh_descriptor *d;
    int fd;             /* the blob's file (borrowed) */
    char *loc;          /* session location (owned), NULL when none is open */
    uint64_t off;       /* bytes the registry holds */
    uint64_t chunk_min; /* the registry's OCI-Chunk-Min-Length, 0 when none */
    unsigned restarts;  /* sessions opened */
    unsigned attempt;   /* failed requests since the last accepted chunk */
    unsigned same_416;  /* 416 answers in a row that left the offset unchanged */
};

/* Forgets the session (the registry lost it, or it cannot be trusted). */
static void upload_drop(struct upload *u)
{
    free(u->loc);
    u->loc = NULL;
}

/* Continues the session handed in at the offset the registry reports, or
 * drops it when the registry no longer knows it or claims more than the
 * blob holds. */
static void upload_resume(struct upload *u)
{
    struct push *p = u->p;
    const psh_descriptor *d = u->d;
    kiln_error *e = NULL;
    int r = upload_status(p, d, &u->loc, &u->off, &e);
    kiln_error_free(&e);
    kiln_debug("registry", "%s: session status %d, offset %" PRIu64, d->digest, r, u->off);
    if (r < 0 || u->off > d->size) {
        upload_drop(u);
        u->off = 0;
    } else if (u->off > 0) {
        COUNT(bytes_resumed, u->off);
        kiln_info("registry", "resuming upload of %s at %" PRIu64 " of %" PRIu64, d->digest, u->off,
                  d->size);
    }
}

/* Opens a new session at offset 0 and persists it, unless too many have
 * been lost already. */
static int upload_open(struct upload *u, kiln_error **err)
{
    if (u->restarts++ > REG_MAX_RESTARTS)
        return kiln_error_set(err, KILN_EREMOTE, 0, "%s: upload sessions keep failing",
                              u->d->digest);
    u->off = 0;
    int r = start_upload(u->p, u->d->digest, &u->loc, &u->chunk_min, err);
    if (r < 0)
        return r;
    return save(u->p, u->d, u->loc, 0, err);
}

/* The registry took a chunk of len bytes: follow the location and offset it
 * answered with and persist them, so that a restarted pusher resumes here. */
static int upload_accepted(struct upload *u, const reg_resp *rs, uint64_t len, kiln_error **err)
{
    struct push *p = u->p;
    const psh_descriptor *d = u->d;
    if (rs->location != NULL) {
        char *url = reg_url(p->c, rs->location);
        if (url != NULL) {
            free(u->loc);
            u->loc = url;
        }
    }
    kiln_debug("registry", "%s: chunk %" PRIu64 "+%" PRIu64 " accepted, range %s", d->digest,
               u->off, len, rs->range ? rs->range : "-");
    u->off = rs->range ? reg_range_next(rs->range) : u->off + len;
    u->attempt = 0;
    u->same_416 = 0;
    int r = save(p, d, u->loc, u->off, err);
    if (r < 0)
        return r;
    if (p->ev && p->ev->blob_progress)
        p->ev->blob_progress(p->ev->ud, d->digest, u->off, d->size);
    return 0;
}

/* Where did a broken chunk leave the session?  Continues from the offset the
 * registry reports (persisted, best effort), or drops the session when it
 * is lost or its offset unknowable (a second 416 that leaves the offset
 * where it was), so that a new one is started. */
static void upload_recover_offset(struct upload *u, bool refused)
{
    uint64_t got = 0;
    kiln_error *e = NULL;
    int r = upload_status(u->p, u->d, &u->loc, &got, &e);
    kiln_error_free(&e);
    if (r < 0 || got > u->d->size || (refused && got == u->off && ++u->same_416 > 1)) {
        upload_drop(u);
        return;
    }
    u->off = got;
    save(u->p, u->d, u->loc, u->off, NULL);
}

/* A chunk was not taken (r and rs from reg_do, its error in e): fails the
 * upload when the failure is final or the retries are spent; otherwise
 * backs off and recovers the session's offset. */
static int upload_chunk_failed(struct upload *u, int r, const reg_resp *rs, const kiln_error *e,
                               kiln_error **err)
{
    struct push *p = u->p;
    const psh_descriptor *d = u->d;
    if (!transient_failure(r, rs) || u->attempt >= p->o->max_retries)
        return r == 0 ? reg_status_error(rs, d->digest, err) : pass_on(e, r, err);
    char why[160];
    if (r == 0)
        snprintf(why, sizeof(why), "chunk at %" PRIu64 ": HTTP %ld", u->off, rs->status);
    else
        snprintf(why, sizeof(why), "chunk at %" PRIu64 ": %.120s", u->off, e->msg);
    COUNT(retries, 1);
    int b = reg_backoff(p->c, u->attempt++, r == 0 ? rs->retry_after : -1, d->digest, why, err);
    if (b < 0)
        return b;
    upload_recover_offset(u, r == 0 && rs->status == 416);
    return 0;
}

/* PATCHes the next chunk, [off, off + chunk size) of the blob. */
static int upload_send_chunk(struct upload *u, kiln_error **err)
{
    struct push *p = u->p;
    const psh_descriptor *d = u->d;
    if (reg_cancelled(p->c))
        return kiln_error_set(err, KILN_ECANCELED, 0, "cancelled");
    uint64_t chunk = p->o->chunk_size > u->chunk_min ? p->o->chunk_size : u->chunk_min;
    uint64_t len = d->size - u->off < chunk ? d->size - u->off : chunk;
    char hdr[96];
    snprintf(hdr, sizeof(hdr), "Content-Range: %" PRIu64 "-%" PRIu64, u->off, u->off + len - 1);
    reg_req rq = {.method = "PATCH",
                  .url = u->loc,
                  .scope = p->scope,
                  .hdr = hdr,
                  .fd = u->fd,
                  .fd_off = u->off,
                  .fd_len = len,
                  .what = d->digest,
                  .sent = &p->res->bytes_sent,
                  .pdigest = d->digest,
                  .pbase = u->off,
                  .ptotal = d->size};
    reg_resp rs;
    _cleanup_(kiln_error_free) kiln_error *e = NULL;
    int r = reg_do(p->c, &rq, &rs, &e);
    if (r == 0 && rs.status == 202)
        r = upload_accepted(u, &rs, len, err);
    else
        r = upload_chunk_failed(u, r, &rs, e, err);
    reg_resp_dispose(&rs);
    return r;
}

/* Closes the session with the rest of the blob.  0 when the registry holds
 * the blob; 1 to go round again, in a new session or from the offset the
 * registry reports; negative when the upload failed. */
static int upload_finish(struct upload *u, kiln_error **err)
{
    struct push *p = u->p;
    const psh_descriptor *d = u->d;
    _cleanup_(kiln_error_free) kiln_error *e = NULL;
    long st = 0;
    int r = finish_upload(p, d, u->loc, u->fd, u->off, &st, &e);
    if (r == 0)
        return 0;
    if (st == 400 && u->restarts <= REG_MAX_RESTARTS) {
        /* The session's content is not the blob (DIGEST_INVALID): a
         * broken request may have raced with our resume on the
         * registry's side.  Start over in a new session. */
        kiln_warn("registry", "%s: %s; uploading again", d->digest, e->msg);
        upload_drop(u);
        return 1;
    }
    if (r != KILN_EUNAVAIL && r != KILN_ENOENT)
        return pass_on(e, r, err);
    /* The PUT may have landed with its answer lost. */
    _cleanup_(kiln_error_free) kiln_error *e2 = NULL;
    if (blob_exists(p, d->digest, &e2) == 1)
        return 0;
    kiln_error_free(&e2);
    if (u->attempt >= p->o->max_retries)
        return pass_on(e, r, err);
    COUNT(retries, 1);
    int b = reg_backoff(p->c, u->attempt++, -1, d->digest, e->msg, err);
    if (b < 0)
        return b;
    uint64_t got = 0;
    if (upload_status(p, d, &u->loc, &got, &e2) < 0 || got > d->size)
        upload_drop(u);
    else
        u->off = got;
    return 1;
}

/* Chunked upload with resume.  loc may hold a session to continue (from a
 * mount answered 202 or a persisted session); it is consumed. */
static int upload_chunked(struct push *p, const psh_descriptor *d, int fd, char *loc,
                          kiln_error **err)
{
    _cleanup_(upload_drop) struct upload u = {.p = p, .d = d, .fd = fd, .loc = loc};
    if (u.loc != NULL)
        upload_resume(&u);
    for (;;) {
        int r;
        if (u.loc == NULL && (r = upload_open(&u, err)) < 0)
            return r;
        while (u.loc != NULL && u.off < d->size)
            if ((r = upload_send_chunk(&u, err)) < 0)
                return r;
        if (u.loc != NULL && (r = upload_finish(&u, err)) <= 0)
            return r;
    }
}

static int mount_blob(struct push *p, const psh_descriptor *d, char **loc, kiln_error **err)
{
    char from[KILN_REF_NAME_MAX + 1];
    if (reg_origin_find(p->c->state_dir, d->digest, p->c->host, p->repo, from, sizeof(from)) < 0)
        return 0;
    char path[2 * KILN_REF_NAME_MAX + 128], scope[REG_SCOPE_MAX + KILN_REF_NAME_MAX + 32];
    snprintf(path, sizeof(path), "/v2/%s/blobs/uploads/?mount=%s&from=%s", p->repo, d->digest,
             from);
    snprintf(scope, sizeof(scope), "%s repository:%s:pull", p->scope, from);
    reg_req rq = {
        .method = "POST", .url = path, .scope = scope, .fd = -1, .retry = true, .what = d->digest};
    reg_resp rs;
    kiln_error *e = NULL;
    int r = reg_do(p->c, &rq, &rs, &e);
    int out = 0;
    if (r == 0 && rs.status == 201) {
        r = check_digest(&rs, d->digest, d->digest, err);
        out = r < 0 ? r : 1;
        if (r == 0 && p->ev && p->ev->blob_mounted)
            p->ev->blob_mounted(p->ev->ud, d->digest, from);
    } else if (r == 0 && rs.status == 202 && rs.location != NULL) {
        *loc = reg_url(p->c, rs.location); /* a plain session was opened instead */
    }
    (void)err;
    kiln_error_free(&e); /* a failed mount is not fatal: upload instead */
    reg_resp_dispose(&rs);
    return out;
}

static int push_blob(void *ud, size_t i, kiln_error **err)
{
    struct push *p = ud;
    const psh_descriptor *d = &p->blobs[i];
    int slot = reg_slot_acquire(p->c->host, p->o->concurrency ? p->o->concurrency : 3);
    int r = blob_exists(p, d->digest, err);
    if (r == 1) {
        COUNT(blobs_skipped, 1);
        if (p->ev && p->ev->blob_skipped)
            p->ev->blob_skipped(p->ev->ud, d->digest, d->size);
        reg_origin_add(p->c->state_dir, d->digest, p->c->host, p->repo);
        reg_slot_release(slot);
        return 0;
    }
    char *loc = NULL;
    if (r == 0)
        r = mount_blob(p, d, &loc, err);
    if (r == 1) {
        COUNT(blobs_mounted, 1);
        reg_origin_add(p->c->state_dir, d->digest, p->c->host, p->repo);
        reg_slot_release(slot);
        return 0;
    }
    _cleanup_close_ int fd = -1;
    uint64_t size = 0;
    if (r == 0)
        r = psh_store_open_blob(p->s, d->digest, &fd, &size, err);
    if (r == 0 && size != d->size)
        r = kiln_error_set(err, KILN_EINTERNAL, 0,
                           "blob %s: %" PRIu64 " bytes, manifest says %" PRIu64, d->digest, size,
                           d->size);
    if (r < 0) {
        free(loc);
        reg_slot_release(slot);
        return r == KILN_ENOENT ? kiln_error_wrap(err, "blob not in the store and not mountable")
                                : r;
    }
    if (p->ev && p->ev->blob_started)
        p->ev->blob_started(p->ev->ud, d->digest, d->size);
    reg_session ss;
    if (loc == NULL && reg_session_load(p->c->state_dir, p->c->host, p->repo, d->digest, &ss) == 0)
        loc = ss.location; /* a session left by an earlier, interrupted push */
    if (d->size <= p->o->chunk_size && loc == NULL)
        r = upload_whole(p, d, fd, err);
    else
        r = upload_chunked(p, d, fd, loc, err);
    if (r == 0) {
        reg_session_drop(p->c->state_dir, p->c->host, p->repo, d->digest);
        reg_origin_add(p->c->state_dir, d->digest, p->c->host, p->repo);
        COUNT(blobs_uploaded, 1);
        if (p->ev && p->ev->blob_done)
            p->ev->blob_done(p->ev->ud, d->digest, d->size);
    }
    reg_slot_release(slot);
    return r;
}

static int put_manifest(struct push *p, const psh_descriptor *d, const char *bytes, size_t len,
                        const char *ref, kiln_error **err)
{
    char path[KILN_REF_NAME_MAX + KILN_REF_TAG_MAX + 100];
    snprintf(path, sizeof(path), "/v2/%s/manifests/%s", p->repo, ref);
    reg_req rq = {.method = "PUT",
                  .url = path,
                  .scope = p->scope,
                  .ctype = d->media_type,
                  .mem = bytes,
                  .mem_len = len,
                  .fd = -1,
                  .retry = true,
                  .no_low_speed = true,
                  .what = d->digest};
    reg_resp rs;
    int r = reg_do(p->c, &rq, &rs, err);
    if (r == 0 && rs.status != 201 && rs.status != 200)
        r = reg_status_error(&rs, ref, err);
    if (r == 0)
        r = check_digest(&rs, d->digest, ref, err);
    reg_resp_dispose(&rs);
    if (r == 0) {
        p->res->manifest = *d;
        if (p->ev && p->ev->manifest_pushed)
            p->ev->manifest_pushed(p->ev->ud, d->digest, ref);
    }
    return r;
}

/* OCI image manifest → Docker schema 2 (same blobs); stored so the pushed
 * bytes are in the store too. */
static int to_v2s2(struct push *p, cJSON *m, psh_descriptor *d, char **bytes, size_t *len,
                   kiln_error **err)
{
    cJSON *cfg = cJSON_GetObjectItemCaseSensitive(m, "config");
    cJSON *layers = cJSON_GetObjectItemCaseSensitive(m, "layers");
    cJSON_DeleteItemFromObjectCaseSensitive(m, "annotations");
    cJSON_DeleteItemFromObjectCaseSensitive(m, "mediaType");
    cJSON_DeleteItemFromObjectCaseSensitive(m, "artifactType");
    cJSON_DeleteItemFromObjectCaseSensitive(m, "subject");
    if (!cJSON_AddStringToObject(m, "mediaType", PSH_MT_DOCKER_MANIFEST))
        return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
    cJSON_ReplaceItemInObjectCaseSensitive(cfg, "mediaType",
                                           cJSON_CreateString(PSH_MT_DOCKER_CONFIG));
    cJSON *l;
    cJSON_ArrayForEach(l, layers)
    {
        const cJSON *mt = cJSON_GetObjectItemCaseSensitive(l, "mediaType");
        if (!cJSON_IsString(mt) || (strcmp(mt->valuestring, PSH_MT_OCI_LAYER_GZ) != 0 &&
                                    strcmp(mt->valuestring, PSH_MT_DOCKER_LAYER_GZ) != 0))
            return kiln_error_set(err, KILN_ENOTSUP, 0,
                                  "Docker schema 2 needs gzip layers; layer is %.100s",
                                  cJSON_IsString(mt) ? mt->valuestring : "(none)");
        cJSON_ReplaceItemInObjectCaseSensitive(l, "mediaType",
                                               cJSON_CreateString(PSH_MT_DOCKER_LAYER_GZ));
        cJSON_DeleteItemFromObjectCaseSensitive(l, "annotations");
    }
    char *out = cJSON_PrintUnformatted(m);
    if (out == NULL)
        return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
    int r = psh_store_put_blob_bytes(p->s, NULL, NULL, out, strlen(out), d->digest, err);
    if (r < 0) {
        free(out);
        return r;
    }
    snprintf(d->media_type, sizeof(d->media_type), "%s", PSH_MT_DOCKER_MANIFEST);
    d->size = strlen(out);
    *len = d->size;
    *bytes = out;
    return 0;
}

/* Pushes the blobs of the image manifest d, then the manifest under ref
 * (tag or digest; NULL = by digest). */
static int push_image(struct push *p, psh_descriptor d, const char *ref, kiln_error **err)
{
    _cleanup_free_ char *bytes = NULL;
    size_t len = 0;
    int r = psh_store_read_blob(p->s, d.digest, PSH_MANIFEST_MAX, &bytes, &len, err);
    if (r < 0)
        return r;
    _cleanup_cjson_ cJSON *m = cJSON_ParseWithLength(bytes, len);
    if (m == NULL)
        return kiln_error_set(err, KILN_EINTERNAL, 0, "manifest %s is not JSON", d.digest);
    char mt[128];
    reg_doc_media_type(m, NULL, mt, sizeof(mt));
    if (d.media_type[0] == '\0')
        snprintf(d.media_type, sizeof(d.media_type), "%s", mt);
    if (p->o->format == PSH_FORMAT_V2S2 && strcmp(d.media_type, PSH_MT_OCI_MANIFEST) == 0) {
        free(bytes);
        bytes = NULL;
        if ((r = to_v2s2(p, m, &d, &bytes, &len, err)) < 0)
            return r;
    }
    _cleanup_free_ psh_descriptor *blobs = NULL;
    size_t n = 0;
    if ((r = reg_doc_blobs(m, &blobs, &n, err)) < 0)
        return r;
    p->blobs = blobs;
    r = reg_parallel(n, p->o->concurrency ? p->o->concurrency : 3, push_blob, p, err);
    p->blobs = NULL;
    if (r < 0)
        return r;
    return put_manifest(p, &d, bytes, len, ref ? ref : d.digest, err);
}

/* Rewrites entry e of an index being converted to a Docker manifest list
 * with the descriptor its image was pushed as. */
static int v2s2_entry(cJSON *e, const psh_descriptor *pushed, kiln_error **err)
{
    cJSON_DeleteItemFromObjectCaseSensitive(e, "annotations");
    if (!cJSON_ReplaceItemInObjectCaseSensitive(e, "mediaType",
                                                cJSON_CreateString(pushed->media_type)) ||
        !cJSON_ReplaceItemInObjectCaseSensitive(e, "digest", cJSON_CreateString(pushed->digest)) ||
        !cJSON_ReplaceItemInObjectCaseSensitive(e, "size",
                                                cJSON_CreateNumber((double)pushed->size)))
        return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
    return 0;
}

/* The converted list: stored, and pushed instead of the OCI index. */
static int v2s2_list(struct push *p, cJSON *idx, psh_descriptor *d, char **bytes, size_t *len,
                     kiln_error **err)
{
    cJSON_DeleteItemFromObjectCaseSensitive(idx, "annotations");
    cJSON_DeleteItemFromObjectCaseSensitive(idx, "mediaType");
    if (!cJSON_AddStringToObject(idx, "mediaType", PSH_MT_DOCKER_LIST))
        return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
    char *out = cJSON_PrintUnformatted(idx);
    if (out == NULL)
        return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
    int r = psh_store_put_blob_bytes(p->s, NULL, NULL, out, strlen(out), d->digest, err);
    if (r < 0) {
        free(out);
        return r;
    }
    snprintf(d->media_type, sizeof(d->media_type), "%s", PSH_MT_DOCKER_LIST);
    d->size = strlen(out);
    free(*bytes);
    *bytes = out;
    *len = d->size;
    return 0;
}

static int push_index(struct push *p, psh_descriptor d, const char *ref, kiln_error **err)
{
    bool v2s2 = p->o->format == PSH_FORMAT_V2S2;
    _cleanup_free_ char *bytes = NULL;
    size_t len = 0;
    int r = psh_store_read_blob(p->s, d.digest, PSH_MANIFEST_MAX, &bytes, &len, err);
    if (r < 0)
        return r;
    _cleanup_cjson_ cJSON *idx = cJSON_ParseWithLength(bytes, len);
    cJSON *ms = cJSON_GetObjectItemCaseSensitive(idx, "manifests");
    if (!cJSON_IsArray(ms))
        return kiln_error_set(err, KILN_EINTERNAL, 0, "index %s has no manifests", d.digest);
    cJSON *e;
    cJSON_ArrayForEach(e, ms)
    {
        psh_descriptor cd;
        if ((r = reg_doc_descriptor(e, &cd, err)) < 0)
            return r;
        if (reg_mt_is_index(cd.media_type))
            return kiln_error_set(err, KILN_ENOTSUP, 0, "nested index %s", cd.digest);
        if (psh_store_has_blob(p->s, cd.digest)) {
            if ((r = push_image(p, cd, NULL, err)) < 0)
                return kiln_error_wrap(err, "manifest %s", cd.digest);
            /* With --format v2s2 the image went out converted: point at that. */
            if (v2s2 && (r = v2s2_entry(e, &p->res->manifest, err)) < 0)
                return r;
            continue;
        }
        if (v2s2)
            return kiln_error_set(err, KILN_ENOTSUP, 0,
                                  "manifest %s is not in the store: it cannot be converted to "
                                  "Docker schema 2",
                                  cd.digest);
        /* Not local (added by reference): it must already be in the repository. */
        char path[KILN_REF_NAME_MAX + 100];
        snprintf(path, sizeof(path), "/v2/%s/manifests/%s", p->repo, cd.digest);
        reg_req rq = {.method = "HEAD",
                      .url = path,
                      .scope = p->scope,
                      .fd = -1,
                      .retry = true,
                      .accept = PSH_MT_OCI_MANIFEST ", " PSH_MT_DOCKER_MANIFEST,
                      .what = cd.digest};
        reg_resp rs;
        r = reg_do(p->c, &rq, &rs, err);
        if (r == 0 && rs.status != 200)
            r = rs.status == 404 ? kiln_error_set(err, KILN_ENOENT, 0,
                                                  "manifest %s is neither in the store nor in "
                                                  "%s/%s",
                                                  cd.digest, p->c->host, p->repo)
                                 : reg_status_error(&rs, cd.digest, err);
        reg_resp_dispose(&rs);
        if (r < 0)
            return r;
    }
    if (d.media_type[0] == '\0')
        snprintf(d.media_type, sizeof(d.media_type), "%s", PSH_MT_OCI_INDEX);
    if (v2s2 && (r = v2s2_list(p, idx, &d, &bytes, &len, err)) < 0)
        return r;
    return put_manifest(p, &d, bytes, len, ref ? ref : d.digest, err);
}

int psh_push(psh_store *s, const char *src_ref, const char *dest_ref, const psh_registry_opts *o,
             const psh_reg_events *ev, psh_push_result *out, kiln_error **err)
{
    psh_registry_opts defaults;
    if (o == NULL) {
        psh_registry_opts_init(&defaults);
        o = &defaults;
    }
    psh_push_result local;
    psh_push_result *res = out ? out : &local;
    memset(res, 0, sizeof(*res));
    if (src_ref == NULL)
        return kiln_error_set(err, KILN_EINVAL, 0, "no image to push");
    kiln_ref dst;
    int r = kiln_ref_parse(&dst, dest_ref ? dest_ref : src_ref, KILN_REF_DEFAULT_TAG, err);
    if (r < 0)
        return r;
    psh_descriptor d;
    if ((r = psh_store_resolve(s, src_ref, &d, err)) < 0)
        return r;
    reg_client *c = NULL;
    if ((r = reg_client_new(&c, &dst, o, ev, reg_state_root(s, o), err)) < 0)
        return r;
    struct push p = {.s = s, .c = c, .o = o, .ev = ev, .repo = dst.path, .res = res};
    snprintf(p.scope, sizeof(p.scope), "repository:%s:pull,push", dst.path);
    const char *ref = dst.tag[0] ? dst.tag : NULL;
    if (dst.digest[0] && strcmp(dst.digest, d.digest) != 0 && o->format == PSH_FORMAT_AS_STORED)
        r = kiln_error_set(err, KILN_EINVAL, 0, "destination digest %s is not the image's %s",
                           dst.digest, d.digest);
    else if (reg_mt_is_index(d.media_type))
        r = push_index(&p, d, ref, err);
    else
        r = push_image(&p, d, ref, err);
    res->retries += c->retries;
    char name[KILN_REF_STRMAX];
    kiln_ref_familiar(&dst, name, sizeof(name));
    if (r < 0)
        kiln_error_wrap(err, "push %s", name);
    else
        kiln_info("registry", "pushed %s (%s): %u uploaded, %u skipped, %u mounted", name,
                  res->manifest.digest, res->blobs_uploaded, res->blobs_skipped,
                  res->blobs_mounted);
    reg_client_free(c);
    return r;
}

int psh_manifest_push(psh_store *s, const char *list_ref, const char *dest_ref,
                      const psh_registry_opts *o, const psh_reg_events *ev, psh_push_result *out,
                      kiln_error **err)
{
    return psh_push(s, list_ref, dest_ref, o, ev, out, err);
}
