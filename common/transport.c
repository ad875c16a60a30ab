/* NNG listeners and dialers with Kiln's transport policy and mutual TLS. */
#include "transport.h"
#include "units.h"
#include "cleanup.h"
#include "fs.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <time.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <nng/supplemental/tls/tls.h>

struct closer {
    nng_socket s;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool done, abandoned;
};

static void closer_free(struct closer *c)
{
    pthread_mutex_destroy(&c->mu);
    pthread_cond_destroy(&c->cv);
    free(c);
}

static void *closer_main(void *arg)
{
    struct closer *c = arg;
    nng_close(c->s);
    pthread_mutex_lock(&c->mu);
    c->done = true;
    bool abandoned = c->abandoned;
    pthread_cond_signal(&c->cv);
    pthread_mutex_unlock(&c->mu);
    if (abandoned)
        closer_free(c);
    return NULL;
}

bool kiln_nng_close_bounded(nng_socket s, int timeout_ms)
{
    struct closer *c = calloc(1, sizeof(*c));
    pthread_attr_t attr;
    pthread_t th;
    if (c == NULL || pthread_attr_init(&attr) != 0) {
        free(c);
        nng_close(s);
        return true;
    }
    c->s = s;
    pthread_mutex_init(&c->mu, NULL);
    pthread_cond_init(&c->cv, NULL);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    int rc = pthread_create(&th, &attr, closer_main, c);
    pthread_attr_destroy(&attr);
    if (rc != 0) {
        closer_free(c);
        nng_close(s);
        return true;
    }
    struct timespec dl = kiln_deadline_in_ms(timeout_ms);
    pthread_mutex_lock(&c->mu);
    while (!c->done && pthread_cond_timedwait(&c->cv, &c->mu, &dl) == 0)
        ;
    bool done = c->done;
    if (!done)
        c->abandoned = true;
    pthread_mutex_unlock(&c->mu);
    if (done)
        closer_free(c);
    return done;
}

kiln_code kiln_code_from_nng(int rv)
{
    switch (rv) {
    case 0:
        return KILN_OK;
    case NNG_ETIMEDOUT:
        return KILN_ETIMEDOUT;
    case NNG_ECONNREFUSED:
    case NNG_ECONNRESET:
    case NNG_ECONNSHUT:
    case NNG_ECLOSED:
    case NNG_EUNREACHABLE:
    case NNG_EADDRINVAL:
    case NNG_ENOENT:
        return KILN_EUNAVAIL;
    case NNG_ECANCELED:
        return KILN_ECANCELED;
    case NNG_EINVAL:
    case NNG_ENOTSUP:
        return KILN_EINVAL;
    case NNG_ENOMEM:
    case NNG_EMSGSIZE:
        return KILN_ENOSPC;
    case NNG_EPERM:
        return KILN_EPERM;
    case NNG_EADDRINUSE:
        return KILN_EEXIST;
    case NNG_ECRYPTO:
    case NNG_EPEERAUTH:
        return KILN_EAUTH;
    default:
        return KILN_EIO;
    }
}

const char *kiln_ipc_path(const char *url)
{
    if (url && strncmp(url, "ipc://", 6) == 0)
        return url + 6;
    return NULL;
}

static bool host_is_loopback(const char *host, size_t n)
{
    if (n == 9 && strncasecmp(host, "localhost", 9) == 0)
        return true;
    if (n == 5 && strncmp(host, "[::1]", 5) == 0)
        return true;
    if (n >= 4 && strncmp(host, "127.", 4) == 0) {
        for (size_t i = 4; i < n; i++)
            if (!(host[i] == '.' || (host[i] >= '0' && host[i] <= '9')))
                return false;
        return true;
    }
    return false;
}

int kiln_url_check(const char *url, kiln_scheme *scheme_out, bool *loopback_out, kiln_error **err)
{
    const char *rest = NULL;
    kiln_scheme sc;
    if (url == NULL || *url == '\0')
        return kiln_error_set(err, KILN_EINVAL, 0, "empty endpoint URL");
    if (strncmp(url, "ipc://", 6) == 0) {
        sc = KILN_SCHEME_IPC;
        rest = url + 6;
        if (*rest == '\0' || strlen(rest) >= 108)
            return kiln_error_set(err, KILN_EINVAL, 0,
                                  "ipc path in '%s' is empty or longer than 107 bytes", url);
    } else if (strncmp(url, "tcp://", 6) == 0) {
        sc = KILN_SCHEME_TCP;
        rest = url + 6;
    } else if (strncmp(url, "tls+tcp://", 10) == 0) {
        sc = KILN_SCHEME_TLS;
        rest = url + 10;
    } else {
        return kiln_error_set(err, KILN_EINVAL, 0,
                              "unsupported endpoint '%s' (use ipc://, tcp:// or tls+tcp://)", url);
    }
    bool loop = true;
    if (sc != KILN_SCHEME_IPC) {
        const char *colon = strrchr(rest, ':');
        if (colon == NULL || colon[1] == '\0')
            return kiln_error_set(err, KILN_EINVAL, 0, "endpoint '%s' needs host:port", url);
        for (const char *p = colon + 1; *p; p++)
            if (*p < '0' || *p > '9')
                return kiln_error_set(err, KILN_EINVAL, 0, "bad port in endpoint '%s'", url);
        loop = host_is_loopback(rest, (size_t)(colon - rest));
    }
    if (scheme_out)
        *scheme_out = sc;
    if (loopback_out)
        *loopback_out = loop;
    return 0;
}

static char *read_small_file(const char *path, kiln_error **err)
{
    _cleanup_fclose_ FILE *f = fopen(path, "re");
    if (f == NULL) {
        kiln_error_set(err, kiln_code_from_errno(errno), errno, "open %s", path);
        return NULL;
    }
    char *buf = calloc(1, 1 << 20);
    if (buf == NULL) {
        kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
        return NULL;
    }
    size_t n = fread(buf, 1, (1 << 20) - 1, f);
    if (ferror(f) || n == (1 << 20) - 1) {
        free(buf);
        kiln_error_set(err, KILN_EINVAL, 0, "%s: unreadable or larger than 1 MiB", path);
        return NULL;
    }
    return buf;
}

const char *kiln_system_ca_file(void)
{
    static const char *const paths[] = {
        "/etc/ssl/certs/ca-certificates.crt", /* Debian, Ubuntu, Alpine */
        "/etc/pki/tls/certs/ca-bundle.crt",   /* Fedora, RHEL */
        "/etc/ssl/ca-bundle.pem",             /* openSUSE */
        "/etc/ssl/cert.pem",
    };
    const char *env = getenv("SSL_CERT_FILE");
    if (env && *env)
        return access(env, R_OK) == 0 ? env : NULL;
    for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++)
        if (access(paths[i], R_OK) == 0)
            return paths[i];
    return NULL;
}

int kiln_ipc_dir_secure(const char *dir, bool group_set, gid_t gid, kiln_error **err)
{
    int r = kiln_mkdir_p(dir, 0700, err);
    if (r < 0)
        return r;
    if (group_set && chown(dir, (uid_t)-1, gid) < 0)
        return kiln_error_set(err, kiln_code_from_errno(errno), errno, "chown %s to group %u", dir,
                              (unsigned)gid);
    if (chmod(dir, group_set ? 0750 : 0700) < 0)
        return kiln_error_set(err, kiln_code_from_errno(errno), errno, "chmod %s", dir);
    return 0;
}

/* The socket file of a started ipc listener: 0660, group o->ipc_gid.  The
 * directory holding it is private (kiln_ipc_dir_secure) until this is done
 * for the services' own run/ dir. */
static int secure_socket(const char *path, const kiln_transport_opts *o, kiln_error **err)
{
    if (o->ipc_group_set && chown(path, (uid_t)-1, o->ipc_gid) < 0)
        return kiln_error_set(err, kiln_code_from_errno(errno), errno,
                              "chown socket %s to group %u", path, (unsigned)o->ipc_gid);
    if (chmod(path, 0660) < 0)
        return kiln_error_set(err, kiln_code_from_errno(errno), errno, "chmod socket %s", path);
    return 0;
}

/* Builds a TLS config; the caller releases it with nng_tls_config_free(). */
static int make_tls(nng_tls_config **out, bool server, const char *host,
                    const kiln_transport_opts *o, kiln_error **err)
{
    nng_tls_config *cfg = NULL;
    int rv = nng_tls_config_alloc(&cfg, server ? NNG_TLS_MODE_SERVER : NNG_TLS_MODE_CLIENT);
    if (rv != 0)
        return kiln_error_set(err, KILN_EINTERNAL, 0, "TLS unavailable: %s", nng_strerror(rv));
    if (o->tls.cert || o->tls.key) {
        if (!o->tls.cert || !o->tls.key) {
            nng_tls_config_free(cfg);
            return kiln_error_set(err, KILN_EINVAL, 0, "--tls-cert and --tls-key go together");
        }
        _cleanup_free_ char *cert = read_small_file(o->tls.cert, err);
        _cleanup_free_ char *key = cert ? read_small_file(o->tls.key, err) : NULL;
        if (!cert || !key) {
            nng_tls_config_free(cfg);
            return kiln_error_wrap(err, "TLS identity");
        }
        if ((rv = nng_tls_config_own_cert(cfg, cert, key, NULL)) != 0) {
            nng_tls_config_free(cfg);
            return kiln_error_set(err, KILN_EINVAL, 0, "TLS certificate %s / key %s: %s",
                                  o->tls.cert, o->tls.key, nng_strerror(rv));
        }
    } else if (server) {
        nng_tls_config_free(cfg);
        return kiln_error_set(err, KILN_EINVAL, 0,
                              "tls+tcp:// listener needs --tls-cert and --tls-key");
    }
    if (o->tls.ca) {
        _cleanup_free_ char *ca = read_small_file(o->tls.ca, err);
        if (ca == NULL) {
            nng_tls_config_free(cfg);
            return kiln_error_wrap(err, "TLS CA");
        }
        if ((rv = nng_tls_config_ca_chain(cfg, ca, NULL)) != 0) {
            nng_tls_config_free(cfg);
            return kiln_error_set(err, KILN_EINVAL, 0, "TLS CA %s: %s", o->tls.ca,
                                  nng_strerror(rv));
        }
    }
    if (server) {
        /* Clients must present a certificate only when we have a CA for it. */
        nng_tls_config_auth_mode(cfg,
                                 o->tls.ca ? NNG_TLS_AUTH_MODE_REQUIRED : NNG_TLS_AUTH_MODE_NONE);
    } else if (o->tls.insecure_skip_verify) {
        nng_tls_config_auth_mode(cfg, NNG_TLS_AUTH_MODE_NONE);
    } else {
        /* A server is always verified: against --tls-ca, else the system CAs. */
        const char *sys = o->tls.ca ? NULL : kiln_system_ca_file();
        if (!o->tls.ca && sys == NULL) {
            nng_tls_config_free(cfg);
            return kiln_error_set(err, KILN_EINVAL, 0,
                                  "no CA to verify the server with: pass --tls-ca (no system "
                                  "CA bundle found; SSL_CERT_FILE names one)");
        }
        if (sys && (rv = nng_tls_config_ca_file(cfg, sys)) != 0) {
            nng_tls_config_free(cfg);
            return kiln_error_set(err, KILN_EINVAL, 0, "system CA bundle %s: %s", sys,
                                  nng_strerror(rv));
        }
        nng_tls_config_auth_mode(cfg, NNG_TLS_AUTH_MODE_REQUIRED);
    }
    const char *name = o->tls.server_name ? o->tls.server_name : host;
    if (!server && name && *name)
        nng_tls_config_server_name(cfg, name);
    *out = cfg;
    return 0;
}

/* Host part of a tcp-style URL into out (without brackets). */
static void url_host(const char *url, char *out, size_t cap)
{
    const char *rest = strstr(url, "://");
    rest = rest ? rest + 3 : url;
    const char *colon = strrchr(rest, ':');
    size_t n = colon ? (size_t)(colon - rest) : strlen(rest);
    if (n >= 2 && rest[0] == '[' && rest[n - 1] == ']') {
        rest++;
        n -= 2;
    }
    if (n >= cap)
        n = cap - 1;
    memcpy(out, rest, n);
    out[n] = '\0';
}

int kiln_listen(nng_socket sock, const char *url, const kiln_transport_opts *o, kiln_error **err)
{
    static const kiln_transport_opts none = {0};
    if (o == NULL)
        o = &none;
    kiln_scheme sc;
    bool loop;
    int r = kiln_url_check(url, &sc, &loop, err);
    if (r < 0)
        return r;
    if (sc == KILN_SCHEME_TCP && !loop && !o->allow_insecure)
        return kiln_error_set(
            err, KILN_EPERM, 0,
            "refusing plain-TCP listener on non-loopback '%s': use tls+tcp:// with "
            "--tls-ca (mutual TLS) or pass --allow-insecure-tcp",
            url);
    if (sc == KILN_SCHEME_TLS && !o->tls.ca && !o->allow_insecure)
        return kiln_error_set(err, KILN_EPERM, 0,
                              "tls+tcp:// listener '%s' needs --tls-ca to verify client "
                              "certificates (or --allow-insecure-tcp)",
                              url);
    if (sc == KILN_SCHEME_IPC) {
        char dir[PATH_MAX];
        snprintf(dir, sizeof(dir), "%s", url + 6);
        char *slash = strrchr(dir, '/');
        if (slash && slash != dir) {
            *slash = '\0';
            if ((r = kiln_mkdir_p(dir, 0700, err)) < 0)
                return kiln_error_wrap(err, "socket directory for %s", url);
        }
    }
    nng_listener l;
    int rv = nng_listener_create(&l, sock, url);
    if (rv != 0)
        return kiln_error_set(err, kiln_code_from_nng(rv), 0, "listen %s: %s", url,
                              nng_strerror(rv));
    if (sc == KILN_SCHEME_TLS) {
        nng_tls_config *cfg = NULL;
        if ((r = make_tls(&cfg, true, NULL, o, err)) < 0) {
            nng_listener_close(l);
            return r;
        }
        rv = nng_listener_set_ptr(l, NNG_OPT_TLS_CONFIG, cfg);
        nng_tls_config_free(cfg); /* the listener holds its own reference */
        if (rv != 0) {
            nng_listener_close(l);
            return kiln_error_set(err, KILN_EINTERNAL, 0, "TLS config: %s", nng_strerror(rv));
        }
    }
    if ((rv = nng_listener_start(l, 0)) != 0) {
        nng_listener_close(l);
        if (rv == NNG_EADDRINUSE)
            return kiln_error_set(err, KILN_EEXIST, 0,
                                  "listen %s: address in use (is another instance running?)", url);
        return kiln_error_set(err, kiln_code_from_nng(rv), 0, "listen %s: %s", url,
                              nng_strerror(rv));
    }
    if (sc == KILN_SCHEME_IPC && (r = secure_socket(url + 6, o, err)) < 0) {
        nng_listener_close(l);
        return r;
    }
    return 0;
}

int kiln_dial(nng_socket sock, const char *url, const kiln_transport_opts *o, bool wait,
              kiln_error **err)
{
    static const kiln_transport_opts none = {0};
    if (o == NULL)
        o = &none;
    kiln_scheme sc;
    int r = kiln_url_check(url, &sc, NULL, err);
    if (r < 0)
        return r;
    nng_dialer d;
    int rv = nng_dialer_create(&d, sock, url);
    if (rv != 0)
        return kiln_error_set(err, kiln_code_from_nng(rv), 0, "dial %s: %s", url, nng_strerror(rv));
    if (sc == KILN_SCHEME_TLS) {
        char host[256];
        url_host(url, host, sizeof(host));
        nng_tls_config *cfg = NULL;
        if ((r = make_tls(&cfg, false, host, o, err)) < 0) {
            nng_dialer_close(d);
            return r;
        }
        rv = nng_dialer_set_ptr(d, NNG_OPT_TLS_CONFIG, cfg);
        nng_tls_config_free(cfg);
        if (rv != 0) {
            nng_dialer_close(d);
            return kiln_error_set(err, KILN_EINTERNAL, 0, "TLS config: %s", nng_strerror(rv));
        }
    }
    rv = nng_dialer_start(d, wait ? 0 : NNG_FLAG_NONBLOCK);
    if (rv != 0) {
        nng_dialer_close(d);
        return kiln_error_set(err, KILN_EUNAVAIL, 0, "cannot connect to %s: %s", url,
                              nng_strerror(rv));
    }
    return 0;
}

/* "scheme://host:port" split at the host; false for other forms (ipc://). */
static bool split_host(const char *url, size_t *h0, size_t *h1)
{
    const char *sep = strstr(url, "://");
    if (sep == NULL || strncmp(url, "ipc", 3) == 0 || strncmp(url, "inproc", 6) == 0)
        return false;
    const char *host = sep + 3;
    const char *colon = host[0] == '[' ? strstr(host, "]:") : strrchr(host, ':');
    if (colon == NULL)
        return false;
    if (host[0] == '[')
        colon++;
    *h0 = (size_t)(host - url);
    *h1 = (size_t)(colon - url);
    return true;
}

char *kiln_url_for_dial(const char *url, const char *via_url)
{
    size_t e0, e1, r0, r1;
    if (!split_host(url, &e0, &e1) || via_url == NULL || !split_host(via_url, &r0, &r1))
        return strdup(url);
    size_t hl = e1 - e0;
    const char *h = url + e0;
    bool wildcard = hl == 0 || (hl == 1 && *h == '*') || (hl == 7 && !strncmp(h, "0.0.0.0", 7)) ||
                    (hl == 4 && !strncmp(h, "[::]", 4));
    if (!wildcard)
        return strdup(url);
    char *out = NULL;
    if (asprintf(&out, "%.*s%.*s%s", (int)e0, url, (int)(r1 - r0), via_url + r0, url + e1) < 0)
        return NULL;
    return out;
}
