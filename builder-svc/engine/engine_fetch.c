/* ADD <url>: downloads over HTTP(S) with libcurl, and URL redaction.
 *
 * The builder fetches on the host network, with the standard proxy
 * environment (libcurl's default).  Only http and https, for the first
 * request and for redirects; at most MAX_REDIRS redirects; connect, stall and
 * total timeouts; at most MAX_DOWNLOAD bytes.  An HTTP status >= 400 fails
 * with the status.  The content is hashed while it is written (sha256 for the
 * cache key, and the --checksum algorithm when one is given).
 *
 * User info in a URL (https://user:pass@host/...) is sent as credentials by
 * libcurl (only to that host) but never shown: every message here, and the
 * instruction text the engine reports, go through eng_redact(). */
#include "engine_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <openssl/evp.h>

#include "cleanup.h"

#define MAX_DOWNLOAD      ((curl_off_t)8 << 30) /* 8 GiB */
#define MAX_REDIRS        10L
#define CONNECT_TIMEOUT_S 30L
#define STALL_TIME_S      60L /* less than STALL_BYTES/s for this long fails */
#define STALL_BYTES       1L
#define TOTAL_TIMEOUT_S   (4L * 3600) /* a whole download */
#define REDACTED          "xxxxx"

/* ---- redaction ---- */

/* Length of the user info of the URL authority starting at p (after "://"),
 * including its '@'; 0 when there is none. */
static size_t userinfo_len(const char *p)
{
    size_t end = strcspn(p, "/?#\"' \t\n\\");
    size_t at = 0;
    for (size_t i = 0; i < end; i++)
        if (p[i] == '@')
            at = i + 1;
    return at;
}

void eng_redact(char *out, size_t cap, const char *text)
{
    if (cap == 0)
        return;
    size_t o = 0;
    for (const char *p = text; *p && o + 1 < cap;) {
        if (p[0] == ':' && p[1] == '/' && p[2] == '/') {
            size_t ui = userinfo_len(p + 3);
            int n = snprintf(out + o, cap - o, "://%s", ui ? REDACTED "@" : "");
            o += n > 0 ? (size_t)n : 0;
            if (o >= cap)
                o = cap - 1;
            p += 3 + ui;
            continue;
        }
        out[o++] = *p++;
    }
    out[o] = '\0';
}

char *eng_redact_dup(const char *text)
{
    /* Redaction never grows a URL by more than its "xxxxx@" in place of at
     * least "@": room for one per "://". */
    size_t n = 0;
    for (const char *p = text; (p = strstr(p, "://")) != NULL; p += 3)
        n++;
    size_t cap = strlen(text) + n * (sizeof(REDACTED)) + 1;
    char *out = malloc(cap);
    if (out)
        eng_redact(out, cap, text);
    return out;
}

/* ---- file names ---- */

static int hexval(char c)
{
    return c >= '0' && c <= '9'   ? c - '0'
           : c >= 'a' && c <= 'f' ? c - 'a' + 10
           : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                  : -1;
}

void eng_url_filename(char out[ENG_NAME_MAX + 1], const char *url)
{
    const char *p = strstr(url, "://");
    p = p ? p + 3 : url;
    p += strcspn(p, "/?#"); /* the path */
    size_t plen = strcspn(p, "?#");
    while (plen > 0 && p[plen - 1] == '/')
        plen--;
    size_t start = plen;
    while (start > 0 && p[start - 1] != '/')
        start--;
    size_t o = 0;
    bool bad = false;
    for (size_t i = start; i < plen && o < ENG_NAME_MAX; i++) {
        char ch = p[i];
        if (ch == '%' && i + 2 < plen && hexval(p[i + 1]) >= 0 && hexval(p[i + 2]) >= 0) {
            ch = (char)(hexval(p[i + 1]) * 16 + hexval(p[i + 2]));
            i += 2;
        }
        if (ch == '/' || ch == '\0')
            bad = true;
        out[o++] = ch;
    }
    out[o] = '\0';
    if (bad || o == 0 || strcmp(out, ".") == 0 || strcmp(out, "..") == 0)
        snprintf(out, ENG_NAME_MAX + 1, "index");
}

/* ---- download ---- */

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;

static void curl_init_once(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
}

typedef struct dl {
    int fd;
    curl_off_t got;
    kiln_sha256 *sha;
    EVP_MD_CTX *check; /* the --checksum algorithm, or NULL */
    const atomic_bool *cancel;
    int werr; /* errno of a failed write */
    bool too_big;
} dl;

static size_t on_body(char *p, size_t size, size_t n, void *ud)
{
    dl *d = ud;
    size_t len = size * n;
    if (d->got + (curl_off_t)len > MAX_DOWNLOAD) {
        d->too_big = true;
        return 0;
    }
    for (size_t off = 0; off < len;) {
        ssize_t w = write(d->fd, p + off, len - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            d->werr = w < 0 ? errno : EIO;
            return 0;
        }
        off += (size_t)w;
    }
    d->got += (curl_off_t)len;
    kiln_sha256_update(d->sha, p, len);
    if (d->check && EVP_DigestUpdate(d->check, p, len) != 1) {
        d->werr = ENOMEM;
        return 0;
    }
    return len;
}

static int on_progress(void *ud, curl_off_t dt, curl_off_t dn, curl_off_t ut, curl_off_t un)
{
    const dl *d = ud;
    return d->cancel && atomic_load(d->cancel) ? 1 : 0;
}

/* Maps a failed transfer onto an error naming the (redacted) URL. */
static int transfer_error(CURL *h, CURLcode cc, const dl *d, const char *shown, const char *ebuf,
                          kiln_error **err)
{
    long status = 0;
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    if (cc == CURLE_HTTP_RETURNED_ERROR)
        return kiln_error_set(err, KILN_EREMOTE, 0, "ADD %s: HTTP status %ld", shown, status);
    if (d->too_big || cc == CURLE_FILESIZE_EXCEEDED)
        return kiln_error_set(err, KILN_ENOSPC, 0, "ADD %s: larger than %lld bytes", shown,
                              (long long)MAX_DOWNLOAD);
    if (d->werr)
        return kiln_error_set(err, KILN_EIO, d->werr, "ADD %s: write download", shown);
    if (cc == CURLE_ABORTED_BY_CALLBACK)
        return kiln_error_set(err, KILN_ECANCELED, 0, "ADD %s: build canceled", shown);
    char why[CURL_ERROR_SIZE + 64];
    eng_redact(why, sizeof(why), ebuf[0] ? ebuf : curl_easy_strerror(cc));
    kiln_code code = cc == CURLE_OPERATION_TIMEDOUT ? KILN_ETIMEDOUT
                     : cc == CURLE_COULDNT_RESOLVE_HOST || cc == CURLE_COULDNT_CONNECT ||
                             cc == CURLE_COULDNT_RESOLVE_PROXY
                         ? KILN_EUNAVAIL
                     : cc == CURLE_UNSUPPORTED_PROTOCOL || cc == CURLE_URL_MALFORMAT ? KILN_EINVAL
                     : cc == CURLE_TOO_MANY_REDIRECTS                                ? KILN_EREMOTE
                                                                                     : KILN_EIO;
    return kiln_error_set(err, code, 0, "ADD %s: %.*s", shown, (int)sizeof(why), why);
}

/* Compares the --checksum "algo:hex" with the content's digest. */
static int verify(const char *checksum, EVP_MD_CTX *check, const char *shown, kiln_error **err)
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdl = 0;
    if (EVP_DigestFinal_ex(check, md, &mdl) != 1)
        return kiln_error_set(err, KILN_EINTERNAL, 0, "ADD %s: digest", shown);
    char got[2 * EVP_MAX_MD_SIZE + 1];
    for (unsigned i = 0; i < mdl; i++)
        snprintf(got + 2 * i, 3, "%02x", md[i]);
    got[2 * mdl] = '\0';
    const char *colon = strchr(checksum, ':');
    if (colon == NULL || strcasecmp(colon + 1, got) != 0)
        return kiln_error_set(err, KILN_EINVAL, 0,
                              "ADD %s: checksum mismatch: expected %s got %.*s:%s", shown, checksum,
                              colon ? (int)(colon - checksum) : 0, checksum, got);
    return 0;
}

static const EVP_MD *checksum_md(const char *checksum)
{
    if (strncmp(checksum, "sha256:", 7) == 0)
        return EVP_sha256();
    if (strncmp(checksum, "sha384:", 7) == 0)
        return EVP_sha384();
    if (strncmp(checksum, "sha512:", 7) == 0)
        return EVP_sha512();
    return NULL;
}

int eng_fetch(char digest_out[KILN_DIGEST_STRLEN + 1], const char *url, const char *path,
              const char *checksum, const atomic_bool *cancel, kiln_error **err)
{
    _cleanup_free_ char *shown = eng_redact_dup(url);
    if (shown == NULL)
        return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
    if (strncasecmp(url, "http://", 7) != 0 && strncasecmp(url, "https://", 8) != 0)
        return kiln_error_set(err, KILN_EINVAL, 0, "ADD %s: only http and https URLs", shown);
    const EVP_MD *md = checksum ? checksum_md(checksum) : NULL;
    if (checksum && md == NULL)
        return kiln_error_set(err, KILN_EINVAL, 0, "ADD %s: unsupported checksum %s", shown,
                              checksum);
    pthread_once(&curl_once, curl_init_once);

    dl d = {.fd = -1, .cancel = cancel};
    d.fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (d.fd < 0)
        return kiln_error_set(err, KILN_EIO, errno, "create %s", path);
    d.sha = kiln_sha256_new();
    d.check = md ? EVP_MD_CTX_new() : NULL;
    CURL *h = curl_easy_init();
    int rc = 0;
    if (d.sha == NULL || h == NULL ||
        (md && (d.check == NULL || !EVP_DigestInit_ex(d.check, md, NULL))))
        rc = kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
    char ebuf[CURL_ERROR_SIZE] = "";
    if (rc == 0) {
        curl_easy_setopt(h, CURLOPT_URL, url);
        curl_easy_setopt(h, CURLOPT_ERRORBUFFER, ebuf);
        curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(h, CURLOPT_USERAGENT, "kiln/0.1");
        curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
        curl_easy_setopt(h, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
        curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 1L);
        curl_easy_setopt(h, CURLOPT_MAXREDIRS, MAX_REDIRS);
        curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, CONNECT_TIMEOUT_S);
        curl_easy_setopt(h, CURLOPT_TIMEOUT, TOTAL_TIMEOUT_S);
        curl_easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, STALL_BYTES);
        curl_easy_setopt(h, CURLOPT_LOW_SPEED_TIME, STALL_TIME_S);
        curl_easy_setopt(h, CURLOPT_MAXFILESIZE_LARGE, MAX_DOWNLOAD);
        curl_easy_setopt(h, CURLOPT_FAILONERROR, 1L);
        curl_easy_setopt(h, CURLOPT_FILETIME, 1L);
        curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
        curl_easy_setopt(h, CURLOPT_WRITEDATA, &d);
        curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
        curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, on_progress);
        curl_easy_setopt(h, CURLOPT_XFERINFODATA, &d);
        CURLcode cc = curl_easy_perform(h);
        if (cc != CURLE_OK)
            rc = transfer_error(h, cc, &d, shown, ebuf, err);
    }
    if (rc == 0 && d.check)
        rc = verify(checksum, d.check, shown, err);
    if (rc == 0 && fsync(d.fd) < 0)
        rc = kiln_error_set(err, KILN_EIO, errno, "fsync %s", path);
    if (rc == 0) {
        /* Last-Modified when the server sent one, else the epoch (BuildKit's
         * choice: the same content gives the same layer). */
        curl_off_t ft = -1;
        curl_easy_getinfo(h, CURLINFO_FILETIME_T, &ft);
        struct timespec ts[2] = {{ft > 0 ? (time_t)ft : 0, 0}, {ft > 0 ? (time_t)ft : 0, 0}};
        if (futimens(d.fd, ts) < 0 || fchmod(d.fd, 0600) < 0)
            rc = kiln_error_set(err, KILN_EIO, errno, "set times of %s", path);
    }
    if (rc == 0 && digest_out)
        kiln_sha256_final_str(d.sha, digest_out);
    if (h)
        curl_easy_cleanup(h);
    kiln_sha256_free(d.sha);
    EVP_MD_CTX_free(d.check);
    close(d.fd);
    if (rc < 0)
        unlink(path);
    return rc;
}
