/* The per-registry HTTP client on libcurl: a small pool of easy handles (each
 * keeps its own connections alive, so blobs in flight reuse connections), a
 * share for DNS and TLS sessions, HTTP/1.1, TLS verification with
 * containers-style per-registry CAs and client certificates (certs.d,
 * reg_certs.c); registries marked insecure get HTTPS
 * without verification when they speak TLS, else plain HTTP; registries on
 * the loopback (localhost, 127.0.0.0/8, ::1) may speak plain HTTP without
 * being marked, as Docker allows, but TLS stays verified when they speak it;
 * connect and low-speed timeouts, auth rounds on 401 and retries with
 * exponential backoff and jitter for idempotent requests.
 *
 * What is retried: 408/429/5xx, resets and timeouts.  What is not: a host
 * that does not resolve, a refused connection, a TLS handshake with a server
 * that speaks plain HTTP, certificate problems.  Retrying those only delays
 * the error the user has to act on (30 s of backoff before "wrong version
 * number" helps nobody). */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"
#include "reg_internal.h"

#define RETRY_AFTER_MAX 60 /* seconds: longer Retry-After values are capped */

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;

static void curl_init_once(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
}

static void share_lock(CURL *h, curl_lock_data data, curl_lock_access a, void *ud)
{
    (void)h;
    (void)a;
    reg_client *c = ud;
    pthread_mutex_lock(&c->share_mu[data]);
}

static void share_unlock(CURL *h, curl_lock_data data, void *ud)
{
    (void)h;
    reg_client *c = ud;
    pthread_mutex_unlock(&c->share_mu[data]);
}

static int perform(reg_client *c, const reg_req *rq, const char *url, const char *auth,
                   reg_resp *rs, bool *transient, kiln_error **err);
static void resp_init(reg_resp *rs, size_t max);

/* An insecure registry may still speak TLS (self-signed): try HTTPS without
 * verification first (a GET /v2/ ping), plain HTTP when that fails. */
static void probe_scheme(reg_client *c)
{
    snprintf(c->base, sizeof(c->base), "https://%s", c->host);
    long limit = c->o->connect_timeout_s * 1000;
    reg_req rq = {.method = "GET",
                  .url = "/v2/",
                  .fd = -1,
                  .what = "/v2/",
                  .timeout_ms = limit > 0 && limit < 5000 ? limit : 5000};
    reg_resp rs;
    resp_init(&rs, 0);
    _cleanup_free_ char *url = reg_url(c, "/v2/");
    bool transient = false;
    kiln_error *e = NULL;
    if (url == NULL || perform(c, &rq, url, NULL, &rs, &transient, &e) < 0)
        snprintf(c->base, sizeof(c->base), "http://%s", c->host);
    kiln_error_free(&e);
    reg_resp_dispose(&rs);
    kiln_debug("registry", "%s: insecure, using %s", c->host, c->base);
}

/* localhost, 127.0.0.0/8 or [::1], with or without a port. */
static bool host_is_loopback(const char *host)
{
    size_t n = strcspn(host, ":");
    if (host[0] == '[')
        return strncmp(host, "[::1]", 5) == 0;
    if (n == 9 && strncmp(host, "localhost", 9) == 0)
        return true;
    if (strncmp(host, "127.", 4) != 0)
        return false;
    int dots = 0;
    for (size_t i = 0; i < n; i++) {
        if (host[i] == '.')
            dots++;
        else if (host[i] < '0' || host[i] > '9')
            return false;
    }
    return dots == 3;
}

/* A loopback registry not marked insecure: HTTPS (verified) when it speaks
 * TLS, plain HTTP when it answers the handshake in plain HTTP. */
static void probe_loopback(reg_client *c)
{
    reg_req rq = {.method = "GET", .url = "/v2/", .fd = -1, .what = "/v2/", .timeout_ms = 5000};
    reg_resp rs;
    resp_init(&rs, 0);
    _cleanup_free_ char *url = reg_url(c, "/v2/");
    bool transient = false;
    kiln_error *e = NULL;
    if (url != NULL && perform(c, &rq, url, NULL, &rs, &transient, &e) < 0 && c->plain_http) {
        snprintf(c->base, sizeof(c->base), "http://%s", c->host);
        kiln_debug("registry", "%s: loopback registry speaking plain HTTP", c->host);
    }
    c->plain_http = false;
    kiln_error_free(&e);
    reg_resp_dispose(&rs);
}

int reg_client_new(reg_client **out, const kiln_ref *r, const psh_registry_opts *o,
                   const psh_reg_events *ev, const char *data_dir, kiln_error **err)
{
    pthread_once(&curl_once, curl_init_once);
    reg_client *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
    snprintf(c->host, sizeof(c->host), "%s", kiln_ref_registry_host(r));
    c->o = o;
    c->ev = ev;
    c->insecure = !o->tls_verify || reg_conf_insecure(o->registries_conf, c->host);
    snprintf(c->base, sizeof(c->base), "%s://%s", c->insecure ? "http" : "https", c->host);
    snprintf(c->state_dir, sizeof(c->state_dir), "%s/registry", data_dir);
    pthread_mutex_init(&c->mu, NULL);
    for (int i = 0; i < CURL_LOCK_DATA_LAST; i++)
        pthread_mutex_init(&c->share_mu[i], NULL);
    c->share = curl_share_init();
    if (c->share != NULL) {
        curl_share_setopt(c->share, CURLSHOPT_LOCKFUNC, share_lock);
        curl_share_setopt(c->share, CURLSHOPT_UNLOCKFUNC, share_unlock);
        curl_share_setopt(c->share, CURLSHOPT_USERDATA, c);
        curl_share_setopt(c->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS);
        curl_share_setopt(c->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION);
    }
    /* certs.d/<host>: CAs (only when verifying) and the client certificate,
     * which is presented to insecure registries too (the probe included). */
    char dir[4096];
    int rc = reg_certs_host_dir(o, c->host, dir, sizeof(dir), err);
    if (rc == 0 && !c->insecure)
        rc = reg_certs_load_cas(dir, &c->ca_blob, &c->ca_len);
    if (rc == 0)
        rc = reg_certs_find_pair(dir, &c->client_cert, &c->client_key, err);
    if (rc == 0 && c->client_cert != NULL)
        rc = reg_certs_check_pair(c->client_cert, c->client_key, err);
    if (rc < 0) {
        reg_client_free(c);
        return rc;
    }
    if (c->client_cert != NULL)
        kiln_debug("registry", "%s: client certificate %s", c->host, c->client_cert);
    if (c->insecure)
        probe_scheme(c);
    else if (host_is_loopback(c->host))
        probe_loopback(c);
    *out = c;
    return 0;
}

void reg_client_free(reg_client *c)
{
    if (c == NULL)
        return;
    for (unsigned i = 0; i < c->n_idle; i++)
        curl_easy_cleanup(c->idle[i]);
    if (c->share != NULL)
        curl_share_cleanup(c->share);
    reg_auth_dispose(c);
    free(c->ca_blob);
    free(c->client_cert);
    free(c->client_key);
    pthread_mutex_destroy(&c->mu);
    for (int i = 0; i < CURL_LOCK_DATA_LAST; i++)
        pthread_mutex_destroy(&c->share_mu[i]);
    free(c);
}

static CURL *easy_get(reg_client *c)
{
    CURL *h = NULL;
    pthread_mutex_lock(&c->mu);
    if (c->n_idle > 0)
        h = c->idle[--c->n_idle];
    pthread_mutex_unlock(&c->mu);
    if (h == NULL)
        h = curl_easy_init();
    else
        curl_easy_reset(h); /* keeps the connection cache */
    return h;
}

static void easy_put(reg_client *c, CURL *h)
{
    pthread_mutex_lock(&c->mu);
    if (c->n_idle < KILN_ARRAY_SIZE(c->idle)) {
        c->idle[c->n_idle++] = h;
        h = NULL;
    }
    pthread_mutex_unlock(&c->mu);
    if (h != NULL)
        curl_easy_cleanup(h);
}

void reg_resp_dispose(reg_resp *rs)
{
    free(rs->location);
    free(rs->digest);
    free(rs->ctype);
    free(rs->range);
    free(rs->www_auth);
    free(rs->upload_uuid);
    kiln_buf_dispose(&rs->body);
    memset(rs, 0, sizeof(*rs));
    rs->retry_after = -1;
    rs->clen = -1;
}

static void resp_init(reg_resp *rs, size_t max)
{
    memset(rs, 0, sizeof(*rs));
    rs->retry_after = -1;
    rs->clen = -1;
    rs->body_max = max ? max : REG_ERRBODY_MAX;
    kiln_buf_init(&rs->body, rs->body_max);
}

bool reg_cancelled(const reg_client *c)
{
    return c->o->cancel != NULL && atomic_load(c->o->cancel) != 0;
}

char *reg_url(const reg_client *c, const char *p)
{
    char *u = NULL;
    if (strncmp(p, "http://", 7) == 0 || strncmp(p, "https://", 8) == 0)
        return strdup(p);
    if (asprintf(&u, "%s%s%s", c->base, p[0] == '/' ? "" : "/", p) < 0)
        return NULL;
    return u;
}

char *reg_url_add_query(const char *url, const char *key, const char *value)
{
    char *u = NULL;
    if (asprintf(&u, "%s%c%s=%s", url, strchr(url, '?') ? '&' : '?', key, value) < 0)
        return NULL;
    return u;
}

/* ---- one transfer ---- */

struct xfer {
    reg_client *c;
    const reg_req *rq;
    reg_resp *rs;
    CURL *h;
    uint64_t pos; /* body bytes handed to curl */
    uint64_t last_report;
    bool sink_failed;
};

static char *dup_value(const char *v, size_t n)
{
    while (n > 0 && (*v == ' ' || *v == '\t')) {
        v++;
        n--;
    }
    while (n > 0 && (v[n - 1] == '\r' || v[n - 1] == '\n' || v[n - 1] == ' '))
        n--;
    return strndup(v, n);
}

static size_t on_header(char *p, size_t sz, size_t nm, void *ud)
{
    struct xfer *x = ud;
    size_t n = sz * nm;
    reg_resp *rs = x->rs;
    if (n >= 5 && strncmp(p, "HTTP/", 5) == 0) { /* a new response (100, redirect) */
        size_t keep = rs->body_max;
        reg_resp_dispose(rs);
        resp_init(rs, keep);
        return n;
    }
    const char *colon = memchr(p, ':', n);
    if (colon == NULL)
        return n;
    size_t kl = (size_t)(colon - p);
    const char *v = colon + 1;
    size_t vl = n - kl - 1;
    char **slot = NULL;
#define HDR(name) (kl == sizeof(name) - 1 && strncasecmp(p, name, kl) == 0)
    if (HDR("Location"))
        slot = &rs->location;
    else if (HDR("Docker-Content-Digest"))
        slot = &rs->digest;
    else if (HDR("Content-Type"))
        slot = &rs->ctype;
    else if (HDR("Range"))
        slot = &rs->range;
    else if (HDR("WWW-Authenticate"))
        slot = &rs->www_auth;
    else if (HDR("Docker-Upload-UUID"))
        slot = &rs->upload_uuid;
    else if (HDR("Retry-After") || HDR("Content-Length") || HDR("OCI-Chunk-Min-Length")) {
        _cleanup_free_ char *s = dup_value(v, vl);
        if (s != NULL && isdigit((unsigned char)s[0])) {
            unsigned long long x2 = strtoull(s, NULL, 10);
            if (HDR("Retry-After"))
                rs->retry_after = x2 > RETRY_AFTER_MAX ? RETRY_AFTER_MAX : (long)x2;
            else if (HDR("Content-Length"))
                rs->clen = (int64_t)x2;
            else
                rs->chunk_min = x2;
        }
    }
#undef HDR
    if (slot != NULL && *slot == NULL) /* first one wins (WWW-Authenticate may repeat) */
        *slot = dup_value(v, vl);
    return n;
}

static size_t on_body(char *p, size_t sz, size_t nm, void *ud)
{
    struct xfer *x = ud;
    size_t n = sz * nm;
    long st = 0;
    curl_easy_getinfo(x->h, CURLINFO_RESPONSE_CODE, &st);
    if (x->rq->sink != NULL && st >= 200 && st < 300) {
        if (x->rq->sink(x->rq->sink_ud, st, p, n) != 0) {
            x->sink_failed = true;
            return 0; /* abort */
        }
        return n;
    }
    /* Keep what fits; an oversized error body is cut, a document is refused. */
    if (kiln_buf_append(&x->rs->body, p, n, NULL) < 0) {
        if (st >= 200 && st < 300) {
            x->sink_failed = true;
            return 0;
        }
    }
    return n;
}

static size_t on_read(char *p, size_t sz, size_t nm, void *ud)
{
    struct xfer *x = ud;
    const reg_req *rq = x->rq;
    size_t want = sz * nm;
    uint64_t total = rq->fd >= 0 ? rq->fd_len : rq->mem_len;
    if (x->pos >= total)
        return 0;
    if (want > total - x->pos)
        want = (size_t)(total - x->pos);
    size_t got;
    if (rq->fd >= 0) {
        ssize_t r = pread(rq->fd, p, want, (off_t)(rq->fd_off + x->pos));
        if (r <= 0)
            return CURL_READFUNC_ABORT;
        got = (size_t)r;
    } else {
        memcpy(p, (const char *)rq->mem + x->pos, want);
        got = want;
    }
    x->pos += got;
    if (rq->sent != NULL)
        __atomic_add_fetch(rq->sent, got, __ATOMIC_RELAXED);
    const psh_reg_events *ev = x->c->ev;
    /* The end of a body is reported by the caller once the registry has
     * accepted it (chunks), or here for whole-blob bodies (progress_end). */
    if (rq->pdigest != NULL && ev != NULL && ev->blob_progress != NULL &&
        ((x->pos < total && x->pos - x->last_report >= ((uint64_t)4 << 20)) ||
         (x->pos == total && rq->progress_end))) {
        x->last_report = x->pos;
        ev->blob_progress(ev->ud, rq->pdigest, rq->pbase + x->pos, rq->ptotal);
    }
    return got;
}

static int on_seek(void *ud, curl_off_t off, int origin)
{
    struct xfer *x = ud;
    if (origin != SEEK_SET || off < 0)
        return CURL_SEEKFUNC_CANTSEEK;
    x->pos = (uint64_t)off;
    return CURL_SEEKFUNC_OK;
}

static int on_xferinfo(void *ud, curl_off_t dt, curl_off_t dn, curl_off_t ut, curl_off_t un)
{
    (void)dt;
    (void)dn;
    (void)ut;
    (void)un;
    struct xfer *x = ud;
    return reg_cancelled(x->c) ? 1 : 0;
}

static void setup(struct xfer *x, const char *url, struct curl_slist *hdrs)
{
    CURL *h = x->h;
    const reg_req *rq = x->rq;
    const psh_registry_opts *o = x->c->o;
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_SHARE, x->c->share);
    curl_easy_setopt(h, CURLOPT_USERAGENT, "kiln/0.1");
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(h, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, o->connect_timeout_s);
    if (rq->timeout_ms > 0)
        curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, rq->timeout_ms);
    if (!rq->no_low_speed) {
        curl_easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, 1024L);
        curl_easy_setopt(h, CURLOPT_LOW_SPEED_TIME, o->low_speed_time_s);
    }
    /* Verification is only ever off for registries marked insecure. */
    curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, x->c->insecure ? 0L : 1L);
    curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, x->c->insecure ? 0L : 2L);
    if (x->c->ca_blob != NULL) {
        struct curl_blob b = {x->c->ca_blob, x->c->ca_len, CURL_BLOB_NOCOPY};
        curl_easy_setopt(h, CURLOPT_CAINFO_BLOB, &b);
    }
    if (x->c->client_cert != NULL) {
        curl_easy_setopt(h, CURLOPT_SSLCERT, x->c->client_cert);
        curl_easy_setopt(h, CURLOPT_SSLCERTTYPE, "PEM");
        curl_easy_setopt(h, CURLOPT_SSLKEY, x->c->client_key);
        curl_easy_setopt(h, CURLOPT_SSLKEYTYPE, "PEM");
    }
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, x);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, x);
    curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, on_xferinfo);
    curl_easy_setopt(h, CURLOPT_XFERINFODATA, x);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
    const char *m = rq->method;
    bool body = rq->fd >= 0 || rq->mem != NULL;
    if (strcmp(m, "HEAD") == 0) {
        curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
    } else if (strcmp(m, "GET") == 0) {
        curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 1L); /* blob storage redirects */
        curl_easy_setopt(h, CURLOPT_MAXREDIRS, 5L);
    } else if (strcmp(m, "POST") == 0 && !body) {
        curl_easy_setopt(h, CURLOPT_POST, 1L);
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, "");
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, 0L);
    } else if (strcmp(m, "DELETE") == 0) {
        curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, "DELETE");
    } else {
        /* PUT / PATCH / POST with a body: streamed through on_read. */
        curl_easy_setopt(h, CURLOPT_UPLOAD, 1L);
        if (strcmp(m, "PUT") != 0)
            curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, m);
        curl_easy_setopt(h, CURLOPT_READFUNCTION, on_read);
        curl_easy_setopt(h, CURLOPT_READDATA, x);
        curl_easy_setopt(h, CURLOPT_SEEKFUNCTION, on_seek);
        curl_easy_setopt(h, CURLOPT_SEEKDATA, x);
        uint64_t len = rq->fd >= 0 ? rq->fd_len : rq->mem_len;
        curl_easy_setopt(h, CURLOPT_INFILESIZE_LARGE, (curl_off_t)len);
    }
}

static struct curl_slist *headers(const reg_req *rq, const char *auth)
{
    struct curl_slist *l = NULL, *t;
    char line[512];
#define ADD(s)                                                                                     \
    do {                                                                                           \
        t = curl_slist_append(l, (s));                                                             \
        if (t == NULL)                                                                             \
            goto fail;                                                                             \
        l = t;                                                                                     \
    } while (0)
    if (rq->ctype != NULL) {
        snprintf(line, sizeof(line), "Content-Type: %s", rq->ctype);
        ADD(line);
    } else if (rq->fd >= 0 || rq->mem != NULL) {
        ADD("Content-Type: application/octet-stream");
    }
    if (rq->accept != NULL) {
        /* Accept lists can be long: built with asprintf. */
        _cleanup_free_ char *a = NULL;
        if (asprintf(&a, "Accept: %s", rq->accept) < 0)
            goto fail;
        ADD(a);
    }
    if (rq->hdr != NULL)
        ADD(rq->hdr);
    if (auth != NULL) {
        _cleanup_free_ char *a = NULL;
        if (asprintf(&a, "Authorization: %s", auth) < 0)
            goto fail;
        ADD(a);
        explicit_bzero(a, strlen(a));
    }
    return l;
#undef ADD
fail:
    curl_slist_free_all(l);
    return NULL;
}

/* Failures a retry may cure.  Not among them: DNS failures and refused
 * connections (COULDNT_RESOLVE_HOST, COULDNT_CONNECT: the user must fix the
 * name or start the registry) and TLS spoken to a plain-HTTP server. */
static bool curl_transient(CURLcode cc)
{
    switch (cc) {
    case CURLE_RECV_ERROR:
    case CURLE_SEND_ERROR:
    case CURLE_PARTIAL_FILE:
    case CURLE_GOT_NOTHING:
    case CURLE_OPERATION_TIMEDOUT:
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
    case CURLE_READ_ERROR:
        return true;
    default:
        return false;
    }
}

/* The server ended the handshake over our client certificate (none, or one
 * it does not accept).  TLS 1.3 servers report it with an alert that arrives
 * after the handshake, as a receive error: the alert's text tells them apart
 * from a broken connection.  Retrying cannot help. */
static bool client_cert_refused(CURLcode cc, const char *detail)
{
    if (cc == CURLE_SSL_CLIENTCERT)
        return true;
    if (cc != CURLE_RECV_ERROR && cc != CURLE_SEND_ERROR && cc != CURLE_SSL_CONNECT_ERROR)
        return false;
    return strstr(detail, "alert bad certificate") != NULL ||
           strstr(detail, "alert certificate required") != NULL ||
           strstr(detail, "alert unknown ca") != NULL ||
           strstr(detail, "alert certificate expired") != NULL ||
           strstr(detail, "alert certificate revoked") != NULL ||
           strstr(detail, "alert certificate unknown") != NULL ||
           strstr(detail, "alert unsupported certificate") != NULL;
}

/* The TLS handshake got a plain-HTTP answer: OpenSSL reads "HTTP/1.1 400"
 * as a record with a bad version or length. */
static bool plain_http_answer(CURLcode cc, const char *detail)
{
    if (cc != CURLE_SSL_CONNECT_ERROR && cc != CURLE_RECV_ERROR)
        return false;
    return strstr(detail, "wrong version number") != NULL ||
           strstr(detail, "packet length too long") != NULL ||
           strstr(detail, "http request") != NULL;
}

bool reg_status_transient(long st)
{
    return st == 408 || st == 429 || (st >= 500 && st <= 599);
}

/* One request/response without auth or retry logic.  Returns 0 (response),
 * or a negative code; *transient tells whether a retry may help. */
static int perform(reg_client *c, const reg_req *rq, const char *url, const char *auth,
                   reg_resp *rs, bool *transient, kiln_error **err)
{
    *transient = false;
    struct xfer x = {.c = c, .rq = rq, .rs = rs};
    x.h = easy_get(c);
    if (x.h == NULL)
        return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
    struct curl_slist *hdrs = headers(rq, auth);
    setup(&x, url, hdrs);
    char ebuf[CURL_ERROR_SIZE] = "";
    curl_easy_setopt(x.h, CURLOPT_ERRORBUFFER, ebuf);
    CURLcode cc = curl_easy_perform(x.h);
    curl_easy_getinfo(x.h, CURLINFO_RESPONSE_CODE, &rs->status);
    curl_easy_setopt(x.h, CURLOPT_HTTPHEADER, NULL);
    curl_slist_free_all(hdrs);
    easy_put(c, x.h);
    if (cc == CURLE_OK)
        return 0;
    if (reg_cancelled(c))
        return kiln_error_set(err, KILN_ECANCELED, 0, "cancelled");
    if (x.sink_failed)
        return kiln_error_set(err, KILN_EREMOTE, 0,
                              "%s: response body rejected (too large or "
                              "not matching its descriptor)",
                              rq->what ? rq->what : rq->method);
    const char *detail = ebuf[0] ? ebuf : curl_easy_strerror(cc);
    if (plain_http_answer(cc, detail)) {
        __atomic_store_n(&c->plain_http, true, __ATOMIC_RELAXED);
        return kiln_error_set(err, KILN_EUNAVAIL, 0,
                              "%s %s: server gave HTTP response to HTTPS client: use "
                              "--tls-verify=false for a plain-HTTP registry",
                              rq->method, c->host);
    }
    bool refused = client_cert_refused(cc, detail);
    *transient = curl_transient(cc) && !refused;
    bool tls = refused || cc == CURLE_PEER_FAILED_VERIFICATION || cc == CURLE_SSL_CACERT_BADFILE ||
               cc == CURLE_SSL_CERTPROBLEM;
    const char *hint = "";
    if (refused && c->client_cert == NULL)
        hint = " (the registry requires a TLS client certificate: put NAME.cert and NAME.key "
               "in --cert-dir's <host:port> directory)";
    else if (refused)
        hint = " (the registry refused the TLS client certificate from --cert-dir)";
    else if (tls)
        hint = " (add the CA under --cert-dir, or --tls-verify=false)";
    return kiln_error_set(err, tls ? KILN_EPERM : KILN_EUNAVAIL, 0, "%s %s: %s%s", rq->method,
                          c->host, detail, hint);
}

int reg_backoff(reg_client *c, unsigned attempt, long retry_after, const char *what,
                const char *why, kiln_error **err)
{
    __atomic_add_fetch(&c->retries, 1, __ATOMIC_RELAXED);
    if (c->ev != NULL && c->ev->retried != NULL)
        c->ev->retried(c->ev->ud, what ? what : "", why);
    kiln_debug("registry", "retry %u of %s: %s", attempt + 1, what ? what : "", why);
    uint64_t ms;
    if (retry_after >= 0) {
        ms = (uint64_t)retry_after * 1000;
    } else if (c->o->retry_delay_ms > 0) {
        ms = c->o->retry_delay_ms;
    } else {
        unsigned shift = attempt > 10 ? 10 : attempt;
        ms = (uint64_t)c->o->retry_base_ms << shift;
        if (ms > 30000)
            ms = 30000;
        unsigned seed = (unsigned)(time(NULL) ^ (uintptr_t)&ms ^ attempt);
        ms += (uint64_t)(rand_r(&seed) % (ms / 2 + 1)); /* jitter: up to +50% */
    }
    for (uint64_t slept = 0; slept < ms; slept += 50) {
        if (reg_cancelled(c))
            return kiln_error_set(err, KILN_ECANCELED, 0, "cancelled");
        usleep(50000);
    }
    return 0;
}

int reg_do_raw(reg_client *c, const reg_req *rq, const char *auth, reg_resp *rs, kiln_error **err)
{
    resp_init(rs, rq->body_max);
    _cleanup_free_ char *url = reg_url(c, rq->url);
    if (url == NULL)
        return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
    for (unsigned attempt = 0;; attempt++) {
        bool transient = false;
        kiln_error *e = NULL;
        size_t keep = rs->body_max;
        reg_resp_dispose(rs);
        resp_init(rs, keep);
        int r = perform(c, rq, url, auth, rs, &transient, &e);
        if (r == 0 && !(reg_status_transient(rs->status) && attempt < c->o->max_retries))
            return 0;
        if (r < 0 && (!transient || attempt >= c->o->max_retries)) {
            *err = e;
            return r;
        }
        char why[64];
        snprintf(why, sizeof(why), "HTTP %ld", rs->status);
        int b = reg_backoff(c, attempt, r < 0 ? -1 : rs->retry_after, rq->what,
                            r < 0 ? e->msg : why, err);
        kiln_error_free(&e);
        if (b < 0)
            return b;
    }
}

int reg_do(reg_client *c, const reg_req *rq, reg_resp *rs, kiln_error **err)
{
    resp_init(rs, rq->body_max);
    _cleanup_free_ char *url = reg_url(c, rq->url);
    if (url == NULL)
        return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
    /* Credentials go only to the registry itself: a Location pointing at
     * another host (blob storage, or a hostile registry) gets none. */
    size_t bl = strlen(c->base);
    bool own = strncmp(url, c->base, bl) == 0 && strchr("/?", url[bl]) != NULL;
    unsigned auth_rounds = 0, attempt = 0;
    for (;;) {
        if (reg_cancelled(c))
            return kiln_error_set(err, KILN_ECANCELED, 0, "cancelled");
        _cleanup_free_ char *auth = own ? reg_auth_header(c, rq->scope) : NULL;
        bool transient = false;
        kiln_error *e = NULL;
        size_t keep = rs->body_max;
        reg_resp_dispose(rs);
        resp_init(rs, keep);
        int r = perform(c, rq, url, auth, rs, &transient, &e);
        if (auth != NULL)
            explicit_bzero(auth, strlen(auth));
        if (r < 0) {
            if (!rq->retry || !transient || attempt >= c->o->max_retries) {
                *err = e;
                return r;
            }
            int b = reg_backoff(c, attempt++, -1, rq->what ? rq->what : rq->url, e->msg, err);
            kiln_error_free(&e);
            if (b < 0)
                return b;
            continue;
        }
        if (rs->status == 401 && own && auth_rounds < 2) {
            auth_rounds++;
            r = reg_auth_challenge(c, rs->www_auth, rq->scope, auth != NULL, err);
            if (r < 0)
                return r;
            continue;
        }
        if (rq->retry && reg_status_transient(rs->status) && attempt < c->o->max_retries) {
            char why[64];
            snprintf(why, sizeof(why), "HTTP %ld", rs->status);
            int b =
                reg_backoff(c, attempt++, rs->retry_after, rq->what ? rq->what : rq->url, why, err);
            if (b < 0)
                return b;
            continue;
        }
        return 0;
    }
}

/* "CODE: message" of the first entry of {"errors":[…]}, if any. */
void reg_registry_message(const reg_resp *rs, char *out, size_t n)
{
    out[0] = '\0';
    if (rs->body.len == 0)
        return;
    _cleanup_cjson_ cJSON *j = cJSON_ParseWithLength(rs->body.data, rs->body.len);
    const cJSON *errs = cJSON_GetObjectItemCaseSensitive(j, "errors");
    const cJSON *e0 = cJSON_IsArray(errs) ? cJSON_GetArrayItem(errs, 0) : NULL;
    if (e0 == NULL)
        return;
    const cJSON *code = cJSON_GetObjectItemCaseSensitive(e0, "code");
    const cJSON *msg = cJSON_GetObjectItemCaseSensitive(e0, "message");
    snprintf(out, n, ": %.64s%s%.300s", cJSON_IsString(code) ? code->valuestring : "",
             cJSON_IsString(code) && cJSON_IsString(msg) ? ": " : "",
             cJSON_IsString(msg) ? msg->valuestring : "");
    for (char *p = out; *p; p++) /* one line, printable */
        if ((unsigned char)*p < 0x20)
            *p = ' ';
}

int reg_status_error(const reg_resp *rs, const char *what, kiln_error **err)
{
    char msg[400];
    reg_registry_message(rs, msg, sizeof(msg));
    kiln_code code;
    switch (rs->status) {
    case 401:
        code = KILN_EAUTH;
        break;
    case 403:
        code = KILN_EPERM;
        break;
    case 404:
        code = KILN_ENOENT;
        break;
    case 408:
        code = KILN_ETIMEDOUT;
        break;
    case 429:
        code = KILN_EUNAVAIL;
        break;
    default:
        code = rs->status >= 500 ? KILN_EUNAVAIL : KILN_EREMOTE;
    }
    return kiln_error_set(err, code, 0, "%s: registry answered HTTP %ld%s", what, rs->status, msg);
}
