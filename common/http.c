/* /healthz, /readyz and /metrics over NNG's HTTP server. */
#include "http.h"
#include "cleanup.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>

#include <nng/nng.h>
#include <nng/supplemental/http/http.h>

struct kiln_http {
    nng_http_server *srv;
    nng_http_handler *h[3];
    kiln_http_hooks hooks;
};

enum { EP_HEALTH, EP_READY, EP_METRICS };

static void respond(nng_aio *aio, uint16_t status, const char *ctype, const char *body, size_t n)
{
    nng_http_res *res = NULL;
    if (nng_http_res_alloc(&res) != 0) {
        nng_aio_finish(aio, NNG_ENOMEM);
        return;
    }
    nng_http_res_set_status(res, status);
    nng_http_res_set_header(res, "Content-Type", ctype);
    nng_http_res_set_header(res, "Cache-Control", "no-store");
    if (nng_http_res_copy_data(res, body, n) != 0) {
        nng_http_res_free(res);
        nng_aio_finish(aio, NNG_ENOMEM);
        return;
    }
    nng_aio_set_output(aio, 0, res);
    nng_aio_finish(aio, 0);
}

static void serve(nng_aio *aio, int which)
{
    nng_http_handler *h = nng_aio_get_input(aio, 1);
    kiln_http *k = nng_http_handler_get_data(h);
    kiln_buf b;
    kiln_buf_init(&b, 4 << 20);
    switch (which) {
    case EP_HEALTH:
        respond(aio, 200, "text/plain; charset=utf-8", "ok\n", 3);
        break;
    case EP_READY: {
        bool ready = k->hooks.ready ? k->hooks.ready(k->hooks.user, &b) : true;
        if (b.len == 0)
            kiln_buf_puts(&b, ready ? "ready\n" : "not ready\n", NULL);
        respond(aio, ready ? 200 : 503, "text/plain; charset=utf-8", b.data, b.len);
        break;
    }
    case EP_METRICS:
        if (k->hooks.metrics)
            k->hooks.metrics(k->hooks.user, &b);
        respond(aio, 200, "text/plain; version=0.0.4; charset=utf-8", b.data ? b.data : "", b.len);
        break;
    }
    kiln_buf_dispose(&b);
}

static void on_health(nng_aio *aio)
{
    serve(aio, EP_HEALTH);
}
static void on_ready(nng_aio *aio)
{
    serve(aio, EP_READY);
}
static void on_metrics(nng_aio *aio)
{
    serve(aio, EP_METRICS);
}

int kiln_http_start(kiln_http **out, const char *addr, const kiln_http_hooks *hooks,
                    kiln_error **err)
{
    char urlbuf[300];
    if (strncmp(addr, "http://", 7) == 0)
        snprintf(urlbuf, sizeof(urlbuf), "%s", addr);
    else
        snprintf(urlbuf, sizeof(urlbuf), "http://%s", addr);
    nng_url *url = NULL;
    int rv = nng_url_parse(&url, urlbuf);
    if (rv != 0)
        return kiln_error_set(err, KILN_EINVAL, 0, "bad --http address '%s': %s", addr,
                              nng_strerror(rv));
    kiln_http *k = calloc(1, sizeof(*k));
    if (k == NULL) {
        nng_url_free(url);
        return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
    }
    k->hooks = *hooks;
    rv = nng_http_server_hold(&k->srv, url);
    nng_url_free(url);
    if (rv != 0) {
        free(k);
        return kiln_error_set(err, KILN_EINVAL, 0, "http server %s: %s", addr, nng_strerror(rv));
    }
    static const char *const paths[3] = {"/healthz", "/readyz", "/metrics"};
    void (*const cbs[3])(nng_aio *) = {on_health, on_ready, on_metrics};
    for (int i = 0; i < 3; i++) {
        if ((rv = nng_http_handler_alloc(&k->h[i], paths[i], cbs[i])) != 0 ||
            (rv = nng_http_handler_set_method(k->h[i], "GET")) != 0 ||
            (rv = nng_http_handler_set_data(k->h[i], k, NULL)) != 0 ||
            (rv = nng_http_server_add_handler(k->srv, k->h[i])) != 0) {
            nng_http_server_release(k->srv);
            free(k);
            return kiln_error_set(err, KILN_EINTERNAL, 0, "http handler: %s", nng_strerror(rv));
        }
    }
    if ((rv = nng_http_server_start(k->srv)) != 0) {
        nng_http_server_release(k->srv);
        free(k);
        return kiln_error_set(err, rv == NNG_EADDRINUSE ? KILN_EEXIST : KILN_EUNAVAIL, 0,
                              "http listen %s: %s", addr, nng_strerror(rv));
    }
    *out = k;
    return 0;
}

int kiln_http_port(kiln_http *h)
{
    nng_sockaddr sa;
    if (nng_http_server_get_addr(h->srv, &sa) != 0)
        return -1;
    if (sa.s_family == NNG_AF_INET)
        return ntohs(sa.s_in.sa_port);
    if (sa.s_family == NNG_AF_INET6)
        return ntohs(sa.s_in6.sa_port);
    return -1;
}

void kiln_http_stop(kiln_http *h)
{
    if (h == NULL)
        return;
    nng_http_server_stop(h->srv);
    nng_http_server_release(h->srv);
    free(h);
}
