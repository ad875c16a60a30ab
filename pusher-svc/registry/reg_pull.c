/* Pull: manifest negotiation (OCI and Docker manifests and indexes, OCI
 * documents without mediaType), platform selection (os/arch/variant), blobs
 * fetched concurrently into the store's per-digest partial files while being
 * hashed, resumed with Range after a broken transfer, in this process or a
 * later one (the bytes a killed pusher left on disk are re-hashed and the rest
 * is requested), verified before they take their name; blobs already in the
 * store are not fetched.  The image is tagged only after every
 * blob verified, and the origin of each blob is recorded for later mounts. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "platform.h"
#include "reg_internal.h"

#define ACCEPT_ALL                                                                                 \
    PSH_MT_OCI_MANIFEST ", " PSH_MT_OCI_INDEX ", " PSH_MT_DOCKER_MANIFEST ", " PSH_MT_DOCKER_LIST

struct pull {
    psh_store *s;
    reg_client *c;
    const psh_registry_opts *o;
    const psh_reg_events *ev;
    const char *repo;
    char scope[REG_SCOPE_MAX];
    psh_pull_result *res;
    const psh_descriptor *blobs;
    psh_store_pin pin;
};

int reg_fetch_manifest(reg_client *c, const char *repo, const char *ref, const char *expect,
                       char **bytes, size_t *len, psh_descriptor *d, kiln_error **err)
{
    char path[KILN_REF_NAME_MAX + KILN_REF_TAG_MAX + 100], scope[REG_SCOPE_MAX];
    snprintf(path, sizeof(path), "/v2/%s/manifests/%s", repo, ref);
    snprintf(scope, sizeof(scope), "repository:%s:pull", repo);
    reg_req rq = {.method = "GET",
                  .url = path,
                  .scope = scope,
                  .accept = ACCEPT_ALL,
                  .fd = -1,
                  .retry = true,
                  .body_max = PSH_MANIFEST_MAX,
                  .what = ref};
    reg_resp rs;
    int r = reg_do(c, &rq, &rs, err);
    if (r == 0 && rs.status != 200)
        r = reg_status_error(&rs, ref, err);
    if (r < 0) {
        reg_resp_dispose(&rs);
        return r;
    }
    char got[KILN_DIGEST_STRLEN + 1];
    kiln_sha256_bytes(rs.body.data ? rs.body.data : "", rs.body.len, got);
    if ((expect != NULL && strcmp(expect, got) != 0) ||
        (rs.digest != NULL && strncmp(rs.digest, "sha256:", 7) == 0 &&
         strcmp(rs.digest, got) != 0)) {
        r = kiln_error_set(err, KILN_EREMOTE, 0,
                           "manifest %s: content hashes to %s, registry promised %.80s", ref, got,
                           expect ? expect : rs.digest);
        reg_resp_dispose(&rs);
        return r;
    }
    _cleanup_cjson_ cJSON *doc = cJSON_ParseWithLength(rs.body.data, rs.body.len);
    memset(d, 0, sizeof(*d));
    reg_doc_media_type(doc, rs.ctype, d->media_type, sizeof(d->media_type));
    if (doc == NULL || !(reg_mt_is_index(d->media_type) || reg_mt_is_manifest(d->media_type))) {
        r = kiln_error_set(err, KILN_ENOTSUP, 0, "manifest %s: unsupported type \"%.100s\"", ref,
                           d->media_type[0] ? d->media_type : (rs.ctype ? rs.ctype : "?"));
        reg_resp_dispose(&rs);
        return r;
    }
    snprintf(d->digest, sizeof(d->digest), "%s", got);
    d->size = rs.body.len;
    *len = rs.body.len;
    *bytes = kiln_buf_steal(&rs.body, NULL);
    reg_resp_dispose(&rs);
    return 0;
}

/* ---- blob download ---- */

struct dl {
    struct pull *p;
    const psh_descriptor *d;
    psh_store_tmp tmp;
    kiln_sha256 *h;
    uint64_t got, last;
    uint64_t from_disk; /* bytes found in the partial file; counted once a 206 confirms them */
    int io_errno;
    bool fresh;   /* no body byte of the current response seen yet */
    bool partial; /* tmp is the blob's partial file (else an anonymous temp) */
};

#define REHASH_BLOCK ((size_t)1 << 17)

static int dl_reset(struct dl *x)
{
    x->got = 0;
    x->from_disk = 0;
    kiln_sha256_reset(x->h);
    if (ftruncate(x->tmp.fd, 0) < 0 || lseek(x->tmp.fd, 0, SEEK_SET) < 0)
        return -1;
    return 0;
}

static int dl_sink(void *ud, long status, const char *buf, size_t n)
{
    struct dl *x = ud;
    if (x->fresh) {
        x->fresh = false;
        if (status == 200 && x->got > 0 && dl_reset(x) < 0) /* Range ignored: start over */
            return 1;
        if (status == 206 && x->from_disk > 0) {
            __atomic_add_fetch(&x->p->res->bytes_resumed, x->from_disk, __ATOMIC_RELAXED);
            x->from_disk = 0;
        }
    }
    if (x->got + n > x->d->size)
        return 1; /* more than the descriptor promised */
    for (size_t off = 0; off < n;) {
        ssize_t w = write(x->tmp.fd, buf + off, n - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0) {
            x->io_errno = errno;
            return 1;
        }
        off += (size_t)w;
    }
    /* Hash while streaming: a resumed transfer continues the same context. */
    kiln_sha256_update(x->h, buf, n);
    x->got += n;
    const psh_reg_events *ev = x->p->ev;
    if (ev && ev->blob_progress &&
        (x->got - x->last >= ((uint64_t)4 << 20) || x->got == x->d->size)) {
        x->last = x->got;
        ev->blob_progress(ev->ud, x->d->digest, x->got, x->d->size);
    }
    return 0;
}

static int download(struct pull *p, struct dl *x, kiln_error **err)
{
    const psh_descriptor *d = x->d;
    char path[KILN_REF_NAME_MAX + 100];
    snprintf(path, sizeof(path), "/v2/%s/blobs/%s", p->repo, d->digest);
    for (unsigned attempt = 0;; attempt++) {
        char range[64];
        snprintf(range, sizeof(range), "Range: bytes=%" PRIu64 "-", x->got);
        reg_req rq = {.method = "GET",
                      .url = path,
                      .scope = p->scope,
                      .fd = -1,
                      .hdr = x->got > 0 ? range : NULL,
                      .sink = dl_sink,
                      .sink_ud = x,
                      .what = d->digest};
        reg_resp rs;
        kiln_error *e = NULL;
        uint64_t before = x->got;
        x->fresh = true;
        int r = reg_do(p->c, &rq, &rs, &e);
        __atomic_add_fetch(&p->res->bytes_fetched, x->got >= before ? x->got - before : x->got,
                           __ATOMIC_RELAXED);
        if (x->io_errno != 0) {
            reg_resp_dispose(&rs);
            kiln_error_free(&e);
            return kiln_error_set(err, x->io_errno == ENOSPC ? KILN_ENOSPC : KILN_EIO, x->io_errno,
                                  "write blob %s", d->digest);
        }
        bool ok_status = r == 0 && (rs.status == 200 || rs.status == 206);
        if (ok_status && x->got == d->size) {
            reg_resp_dispose(&rs);
            return 0;
        }
        bool again;
        char why[160];
        if (r < 0) {
            again = r == KILN_EUNAVAIL;
            snprintf(why, sizeof(why), "%.150s", e->msg);
        } else if (ok_status) {
            again = true; /* body shorter than the descriptor: resume */
            snprintf(why, sizeof(why), "short body at %" PRIu64, x->got);
        } else if (rs.status == 416) {
            again = dl_reset(x) == 0;
            snprintf(why, sizeof(why), "HTTP 416");
        } else {
            again = reg_status_transient(rs.status);
            snprintf(why, sizeof(why), "HTTP %ld", rs.status);
        }
        if (r == KILN_EREMOTE && x->got + 1 > d->size)
            again = false; /* sink refused: more bytes than promised */
        if (!again || attempt >= p->o->max_retries) {
            if (r < 0)
                *err = kiln_error_steal(&e);
            else if (ok_status)
                r = kiln_error_set(err, KILN_EREMOTE, 0,
                                   "blob %s: %" PRIu64 " of %" PRIu64 " bytes", d->digest, x->got,
                                   d->size);
            else
                r = reg_status_error(&rs, d->digest, err);
            reg_resp_dispose(&rs);
            kiln_error_free(&e);
            return r;
        }
        long ra = r == 0 ? rs.retry_after : -1;
        reg_resp_dispose(&rs);
        kiln_error_free(&e);
        if ((r = reg_backoff(p->c, attempt, ra, d->digest, why, err)) < 0)
            return r;
    }
}

static int fetch_blob(struct pull *p, const psh_descriptor *d, kiln_error **err);

static int pull_blob(void *ud, size_t i, kiln_error **err)
{
    struct pull *p = ud;
    const psh_descriptor *d = &p->blobs[i];
    int r = psh_store_pin_add(p->s, &p->pin, d->digest, err);
    if (r < 0)
        return r;
    if (psh_store_has_blob(p->s, d->digest)) {
        __atomic_add_fetch(&p->res->blobs_present, 1, __ATOMIC_RELAXED);
        if (p->ev && p->ev->blob_skipped)
            p->ev->blob_skipped(p->ev->ud, d->digest, d->size);
        return 0;
    }
    if (p->ev && p->ev->blob_started)
        p->ev->blob_started(p->ev->ud, d->digest, d->size);
    int slot = reg_slot_acquire(p->c->host, p->o->concurrency ? p->o->concurrency : 3);
    r = fetch_blob(p, d, err);
    reg_slot_release(slot);
    if (r < 0)
        return r;
    __atomic_add_fetch(&p->res->blobs_fetched, 1, __ATOMIC_RELAXED);
    if (p->ev && p->ev->blob_done)
        p->ev->blob_done(p->ev->ud, d->digest, d->size);
    return 0;
}

/* Rebuilds the hash of the first n bytes of the partial file and leaves the
 * fd at n: only what is on disk counts, whatever the last writer meant. */
static int rehash(struct dl *x, uint64_t n)
{
    _cleanup_free_ char *block = malloc(REHASH_BLOCK);
    if (block == NULL)
        return -1;
    kiln_sha256_reset(x->h);
    for (uint64_t off = 0; off < n;) {
        size_t want = n - off < REHASH_BLOCK ? (size_t)(n - off) : REHASH_BLOCK;
        ssize_t r = pread(x->tmp.fd, block, want, (off_t)off);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        kiln_sha256_update(x->h, block, (size_t)r);
        off += (uint64_t)r;
    }
    return lseek(x->tmp.fd, (off_t)n, SEEK_SET) < 0 ? -1 : 0;
}

/* Opens where the blob goes: its partial file, continuing from the bytes on
 * disk, or an anonymous temp while another download holds that file. */
static int dl_open(struct dl *x, kiln_error **err)
{
    struct pull *p = x->p;
    const psh_descriptor *d = x->d;
    uint64_t have = 0;
    int r = psh_store_partial_open(p->s, d->digest, &x->tmp, &have, err);
    if (r < 0)
        return r;
    if (r == 1) {
        kiln_debug("registry", "%s: partial file busy, downloading into a temp file", d->digest);
        x->partial = false;
        return psh_store_tmp_open(p->s, &x->tmp, err);
    }
    x->partial = true;
    if (have == 0)
        return 0;
    if (have > d->size || rehash(x, have) < 0) {
        kiln_info("registry",
                  "discarding partial download of %s (%" PRIu64 " of %" PRIu64 " bytes)", d->digest,
                  have, d->size);
        if (dl_reset(x) < 0)
            return kiln_error_set(err, KILN_EIO, errno, "truncate partial %s", d->digest);
        return 0;
    }
    kiln_info("registry", "resuming pull of %s at %" PRIu64 " of %" PRIu64 " bytes", d->digest,
              have, d->size);
    __atomic_add_fetch(&p->res->blobs_resumed, 1, __ATOMIC_RELAXED);
    x->got = x->last = x->from_disk = have;
    return 0;
}

/* One download of d into a partial or temp file, then its commit.  Sets
 * *mismatch when the bytes arrived but hash to something else. */
static int fetch_once(struct pull *p, const psh_descriptor *d, bool *resumed, bool *mismatch,
                      kiln_error **err)
{
    struct dl x = {.p = p, .d = d};
    x.tmp.fd = -1;
    x.h = kiln_sha256_new();
    if (x.h == NULL)
        return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
    int r = dl_open(&x, err);
    if (r < 0) {
        kiln_sha256_free(x.h);
        return r;
    }
    *resumed = x.got > 0;
    x.tmp.pin = &p->pin;
    if (x.got < d->size || d->size == 0)
        r = download(p, &x, err);
    char got[KILN_DIGEST_STRLEN + 1];
    if (r == 0) {
        kiln_sha256_final_str(x.h, got);
        if (strcmp(got, d->digest) != 0) {
            *mismatch = true;
            r = kiln_error_set(err, KILN_EREMOTE, 0, "blob %s: content hashes to %s", d->digest,
                               got);
        }
    }
    kiln_sha256_free(x.h);
    if (r < 0 && x.partial && !*mismatch) {
        psh_store_partial_keep(p->s, &x.tmp); /* what arrived is good for a later resume */
        return r;
    }
    if (r < 0) {
        psh_store_tmp_abort(p->s, &x.tmp);
        return r;
    }
    return psh_store_tmp_commit(p->s, &x.tmp, d->digest, NULL, NULL, err);
}

/* Downloads one blob and commits it.  A resumed download that does not hash
 * to its digest may owe that to the bytes on disk (a torn write, a disk
 * error): it is discarded and fetched once more from byte 0. */
static int fetch_blob(struct pull *p, const psh_descriptor *d, kiln_error **err)
{
    bool resumed = false, mismatch = false;
    kiln_error *e = NULL;
    int r = fetch_once(p, d, &resumed, &mismatch, &e);
    if (r < 0 && resumed && mismatch) {
        kiln_warn("registry",
                  "resumed pull of %s failed its digest check; fetching it again "
                  "from the start",
                  d->digest);
        kiln_error_free(&e);
        resumed = mismatch = false;
        r = fetch_once(p, d, &resumed, &mismatch, &e);
    }
    if (r < 0 && err != NULL)
        *err = kiln_error_steal(&e);
    kiln_error_free(&e);
    return r;
}

/* Parses "os/arch[/variant]" (normalised; "" is the host's). */
static int parse_platform(const char *s, kiln_platform *out, kiln_error **err)
{
    if (s == NULL || s[0] == '\0') {
        *out = *kiln_platform_host();
        return 0;
    }
    return kiln_platform_parse(out, s, NULL, err);
}

static const char *jstr(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsString(v) ? v->valuestring : "";
}

/* Picks the index entry for os/arch/variant. */
static int select_platform(const cJSON *idx, const kiln_platform *want, psh_descriptor *out,
                           kiln_error **err)
{
    const cJSON *e, *best = NULL;
    bool best_exact = false;
    char avail[512] = "";
    cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(idx, "manifests"))
    {
        const cJSON *pl = cJSON_GetObjectItemCaseSensitive(e, "platform");
        const char *eo = jstr(pl, "os"), *ea = jstr(pl, "architecture"), *ev = jstr(pl, "variant");
        size_t l = strlen(avail);
        if (l + 64 < sizeof(avail))
            snprintf(avail + l, sizeof(avail) - l, "%s%.20s/%.20s%s%.8s", l ? ", " : "", eo, ea,
                     ev[0] ? "/" : "", ev);
        if (!kiln_platform_match(want, eo, ea, ev))
            continue;
        if (best == NULL || (!best_exact && kiln_platform_exact(want, eo, ea, ev))) {
            best = e;
            best_exact = kiln_platform_exact(want, eo, ea, ev);
        }
    }
    if (best == NULL) {
        char w[KILN_PLATFORM_STRMAX];
        kiln_platform_format(want, w, sizeof(w));
        return kiln_error_set(err, KILN_ENOENT, 0, "no manifest for %s in the index (has %s)", w,
                              avail[0] ? avail : "none");
    }
    int r = reg_doc_descriptor(best, out, err);
    if (r == 0 && out->media_type[0] == '\0')
        snprintf(out->media_type, sizeof(out->media_type), "%s", PSH_MT_OCI_MANIFEST);
    return r;
}

/* Reads os/architecture/variant from a stored config. */
static void config_platform(psh_store *s, const char *digest, char *os, size_t osn, char *arch,
                            size_t an, char *var, size_t vn)
{
    _cleanup_free_ char *cfg = NULL;
    size_t len = 0;
    if (psh_store_read_blob(s, digest, PSH_MANIFEST_MAX, &cfg, &len, NULL) < 0)
        return;
    _cleanup_cjson_ cJSON *j = cJSON_ParseWithLength(cfg, len);
    if (j == NULL)
        return;
    snprintf(os, osn, "%s", jstr(j, "os"));
    snprintf(arch, an, "%s", jstr(j, "architecture"));
    snprintf(var, vn, "%s", jstr(j, "variant"));
}

static int pull_image(struct pull *p, const psh_descriptor *md, const char *bytes, size_t len,
                      kiln_error **err)
{
    _cleanup_cjson_ cJSON *m = cJSON_ParseWithLength(bytes, len);
    _cleanup_free_ psh_descriptor *blobs = NULL;
    size_t n = 0;
    int r = reg_doc_blobs(m, &blobs, &n, err);
    if (r < 0)
        return r;
    p->blobs = blobs;
    r = reg_parallel(n, p->o->concurrency ? p->o->concurrency : 3, pull_blob, p, err);
    p->blobs = NULL;
    if (r < 0)
        return r;
    if ((r = psh_store_pin_add(p->s, &p->pin, md->digest, err)) < 0)
        return r;
    if ((r = psh_store_put_blob_bytes(p->s, &p->pin, md->digest, bytes, len, NULL, err)) < 0)
        return r;
    for (size_t i = 0; i < n; i++)
        reg_origin_add(p->c->state_dir, blobs[i].digest, p->c->host, p->repo);
    reg_origin_add(p->c->state_dir, md->digest, p->c->host, p->repo);
    config_platform(p->s, blobs[0].digest, p->res->os, sizeof(p->res->os), p->res->architecture,
                    sizeof(p->res->architecture), p->res->variant, sizeof(p->res->variant));
    return 0;
}

static int do_pull(struct pull *p, const kiln_ref *ref, const char *platform, kiln_error **err)
{
    kiln_platform want;
    int r = parse_platform(platform, &want, err);
    if (r < 0)
        return r;
    _cleanup_free_ char *bytes = NULL;
    size_t len = 0;
    psh_descriptor d;
    const char *what = ref->digest[0] ? ref->digest : ref->tag;
    r = reg_fetch_manifest(p->c, ref->path, what, ref->digest[0] ? ref->digest : NULL, &bytes, &len,
                           &d, err);
    if (r < 0)
        return r;
    if (reg_mt_is_index(d.media_type)) {
        _cleanup_cjson_ cJSON *idx = cJSON_ParseWithLength(bytes, len);
        psh_descriptor cd;
        if ((r = select_platform(idx, &want, &cd, err)) < 0)
            return r;
        if ((r = psh_store_pin_add(p->s, &p->pin, d.digest, err)) < 0 ||
            (r = psh_store_put_blob_bytes(p->s, &p->pin, d.digest, bytes, len, NULL, err)) < 0)
            return r;
        p->res->index = d;
        free(bytes);
        bytes = NULL;
        if ((r = reg_fetch_manifest(p->c, ref->path, cd.digest, cd.digest, &bytes, &len, &d, err)) <
            0)
            return r;
        if (!reg_mt_is_manifest(d.media_type))
            return kiln_error_set(err, KILN_ENOTSUP, 0, "index entry %s is not an image manifest",
                                  cd.digest);
    }
    if ((r = pull_image(p, &d, bytes, len, err)) < 0)
        return r;
    p->res->manifest = d;
    if (ref->tag[0] == '\0')
        return 0; /* by digest only: resolvable by digest, nothing to tag */
    kiln_ref t = *ref;
    t.digest[0] = '\0';
    char name[KILN_REF_STRMAX];
    kiln_ref_familiar(&t, name, sizeof(name));
    /* The builder's pulls for other platforms: the tag names the index, so
     * every platform's build finds its manifest through it. */
    if (p->o->tag_index && p->res->index.digest[0])
        return psh_store_tag_descriptor(p->s, &p->res->index, NULL, NULL, NULL, name, err);
    return psh_store_tag_descriptor(p->s, &d, p->res->os[0] ? p->res->os : NULL,
                                    p->res->architecture[0] ? p->res->architecture : NULL,
                                    p->res->variant[0] ? p->res->variant : NULL, name, err);
}

int psh_pull(psh_store *s, const char *ref, const char *platform, const psh_registry_opts *o,
             const psh_reg_events *ev, psh_pull_result *out, kiln_error **err)
{
    psh_registry_opts defaults;
    if (o == NULL) {
        psh_registry_opts_init(&defaults);
        o = &defaults;
    }
    psh_pull_result local;
    psh_pull_result *res = out ? out : &local;
    memset(res, 0, sizeof(*res));
    kiln_ref r0;
    int r = kiln_ref_parse(&r0, ref ? ref : "", KILN_REF_DEFAULT_TAG, err);
    if (r < 0)
        return r;
    reg_client *c = NULL;
    if ((r = reg_client_new(&c, &r0, o, ev, reg_state_root(s, o), err)) < 0)
        return r;
    struct pull p = {.s = s, .c = c, .o = o, .ev = ev, .repo = r0.path, .res = res};
    p.pin.fd = -1;
    snprintf(p.scope, sizeof(p.scope), "repository:%s:pull", r0.path);
    r = psh_store_pin_open(s, &p.pin, err);
    if (r == 0)
        r = do_pull(&p, &r0, platform, err);
    psh_store_pin_close(s, &p.pin);
    if (r < 0)
        kiln_error_wrap(err, "pull %s", ref);
    else
        kiln_info("registry", "pulled %s (%s): %u fetched, %u present", ref, res->manifest.digest,
                  res->blobs_fetched, res->blobs_present);
    reg_client_free(c);
    return r;
}

int reg_remote_image(psh_store *s, const char *ref, const psh_registry_opts *o, psh_descriptor *out,
                     char *os, size_t osn, char *arch, size_t archn, char *variant, size_t varn,
                     kiln_error **err)
{
    kiln_ref r0;
    int r = kiln_ref_parse(&r0, ref, KILN_REF_DEFAULT_TAG, err);
    if (r < 0)
        return r;
    reg_client *c = NULL;
    if ((r = reg_client_new(&c, &r0, o, NULL, reg_state_root(s, o), err)) < 0)
        return r;
    psh_pull_result res;
    memset(&res, 0, sizeof(res));
    struct pull p = {.s = s, .c = c, .o = o, .repo = r0.path, .res = &res};
    p.pin.fd = -1;
    snprintf(p.scope, sizeof(p.scope), "repository:%s:pull", r0.path);
    _cleanup_free_ char *bytes = NULL;
    size_t len = 0;
    r = reg_fetch_manifest(c, r0.path, r0.digest[0] ? r0.digest : r0.tag,
                           r0.digest[0] ? r0.digest : NULL, &bytes, &len, out, err);
    if (r == 0 && !reg_mt_is_manifest(out->media_type))
        r = kiln_error_set(err, KILN_ENOTSUP, 0, "%s is an index; add an image manifest", ref);
    _cleanup_cjson_ cJSON *m = r == 0 ? cJSON_ParseWithLength(bytes, len) : NULL;
    _cleanup_free_ psh_descriptor *blobs = NULL;
    size_t n = 0;
    if (r == 0)
        r = reg_doc_blobs(m, &blobs, &n, err);
    if (r == 0)
        r = psh_store_pin_open(s, &p.pin, err);
    if (r == 0) {
        p.blobs = blobs;
        r = pull_blob(&p, 0, err); /* the config only */
    }
    if (r == 0)
        r = psh_store_put_blob_bytes(s, &p.pin, out->digest, bytes, len, NULL, err);
    if (r == 0) {
        for (size_t i = 0; i < n; i++)
            reg_origin_add(c->state_dir, blobs[i].digest, c->host, r0.path);
        config_platform(s, blobs[0].digest, os, osn, arch, archn, variant, varn);
    }
    psh_store_pin_close(s, &p.pin);
    reg_client_free(c);
    return r;
}

/* ---- a step cache's manifest and the blobs of it a build needs ---- */

int psh_pull_cache(psh_store *s, const char *ref, const psh_descriptor *want, size_t n_want,
                   const psh_registry_opts *o, const psh_reg_events *ev, psh_descriptor *config,
                   psh_pull_result *out, kiln_error **err)
{
    psh_pull_result local;
    psh_pull_result *res = out ? out : &local;
    memset(res, 0, sizeof(*res));
    kiln_ref r0;
    int r = kiln_ref_parse(&r0, ref ? ref : "", KILN_REF_DEFAULT_TAG, err);
    if (r < 0)
        return r;
    reg_client *c = NULL;
    if ((r = reg_client_new(&c, &r0, o, ev, reg_state_root(s, o), err)) < 0)
        return r;
    struct pull p = {.s = s, .c = c, .o = o, .ev = ev, .repo = r0.path, .res = res};
    p.pin.fd = -1;
    snprintf(p.scope, sizeof(p.scope), "repository:%s:pull", r0.path);
    _cleanup_free_ psh_descriptor *blobs = NULL;
    _cleanup_free_ char *bytes = NULL;
    size_t n = 0, len = 0;
    r = psh_store_pin_open(s, &p.pin, err);
    if (r == 0 && n_want == 0) {
        /* The manifest, then its config blob: the records. */
        psh_descriptor d;
        r = reg_fetch_manifest(c, r0.path, r0.digest[0] ? r0.digest : r0.tag,
                               r0.digest[0] ? r0.digest : NULL, &bytes, &len, &d, err);
        _cleanup_cjson_ cJSON *m = r == 0 ? cJSON_ParseWithLength(bytes, len) : NULL;
        const cJSON *cfg = cJSON_GetObjectItemCaseSensitive(m, "config");
        if (r == 0 &&
            (!reg_mt_is_manifest(d.media_type) || (r = reg_doc_descriptor(cfg, config, err)) < 0 ||
             strcmp(config->media_type, PSH_MT_KILN_CACHE_CONFIG) != 0))
            r = r < 0 ? r : kiln_error_set(err, KILN_EINVAL, 0, "%s is not a Kiln step cache", ref);
        if (r == 0 && (blobs = calloc(1, sizeof(*blobs))) == NULL)
            r = kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
        if (r == 0)
            blobs[n++] = *config;
    } else if (r == 0) {
        if ((blobs = calloc(n_want, sizeof(*blobs))) == NULL)
            r = kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
        for (size_t i = 0; r == 0 && i < n_want; i++) {
            if (!kiln_digest_valid(want[i].digest))
                r = kiln_error_set(err, KILN_EINVAL, 0, "bad digest %.80s", want[i].digest);
            else
                blobs[n++] = want[i];
        }
    }
    if (r == 0) {
        p.blobs = blobs;
        r = reg_parallel(n, o->concurrency ? o->concurrency : 3, pull_blob, &p, err);
        p.blobs = NULL;
    }
    for (size_t i = 0; r == 0 && i < n; i++)
        reg_origin_add(c->state_dir, blobs[i].digest, c->host, r0.path);
    psh_store_pin_close(s, &p.pin);
    reg_client_free(c);
    return r;
}
