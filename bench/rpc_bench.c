/* kiln-rpc-bench: round-trip latency of Kiln's Status RPC versus a raw NNG
 * req/rep ping-pong carrying the same number of bytes each way.
 *
 *   kiln-rpc-bench kiln URL N            Status calls through kiln_rpc_call
 *   kiln-rpc-bench raw-server URL BYTES  echo server answering BYTES-byte replies
 *   kiln-rpc-bench raw URL REQ_BYTES N   raw REQ client
 * Each client mode prints: p50_us p99_us mean_us req_bytes reply_bytes */
#include "config.h"
#include "rpc.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <nng/nng.h>
#include <nng/protocol/reqrep0/rep.h>
#include <nng/protocol/reqrep0/req.h>

static double now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void report(double *lat, int n, size_t req, size_t rep)
{
    double sum = 0;
    for (int i = 0; i < n; i++)
        sum += lat[i];
    qsort(lat, (size_t)n, sizeof(double), cmp);
    printf("%.1f %.1f %.1f %zu %zu\n", lat[n / 2], lat[(int)(n * 0.99)], sum / n, req, rep);
}

static int bench_kiln(const char *url, int n)
{
    kiln_rpc_client *c = NULL;
    kiln_error *err = NULL;
    if (kiln_rpc_client_new(&c, url, NULL, true, &err) < 0) {
        fprintf(stderr, "%s\n", err->msg);
        return 1;
    }
    double *lat = calloc((size_t)n, sizeof(double));
    size_t req_bytes = 0, rep_bytes = 0;
    for (int i = -100; i < n; i++) { /* 100 warm-up calls */
        kiln_req req = KILN__V1__REQUEST__INIT;
        Kiln__V1__StatusRequest sr = KILN__V1__STATUS_REQUEST__INIT;
        req.body_case = KILN__V1__REQUEST__BODY_STATUS;
        req.status = &sr;
        kiln_reply *rep = NULL;
        double t0 = now_us();
        if (kiln_rpc_call(c, &req, &rep, 5000, &err) < 0) {
            fprintf(stderr, "%s\n", err->msg);
            return 1;
        }
        double t1 = now_us();
        if (i >= 0)
            lat[i] = t1 - t0;
        req.request_id = "0123456789abcdef0123456789abcdef";
        req_bytes = kiln__v1__request__get_packed_size(&req);
        rep_bytes = kiln__v1__reply__get_packed_size(rep);
        kiln_rpc_reply_free(rep);
    }
    report(lat, n, req_bytes, rep_bytes);
    kiln_rpc_client_free(c);
    free(lat);
    return 0;
}

static int raw_server(const char *url, size_t reply_bytes)
{
    nng_socket s;
    if (nng_rep0_open(&s) != 0 || nng_listen(s, url, NULL, 0) != 0)
        return 1;
    char *reply = calloc(1, reply_bytes ? reply_bytes : 1);
    for (;;) {
        void *buf = NULL;
        size_t n = 0;
        if (nng_recv(s, &buf, &n, NNG_FLAG_ALLOC) != 0)
            break;
        nng_free(buf, n);
        if (nng_send(s, reply, reply_bytes, 0) != 0)
            break;
    }
    return 0;
}

static int raw_client(const char *url, size_t req_bytes, int n)
{
    nng_socket s;
    if (nng_req0_open(&s) != 0 || nng_dial(s, url, NULL, 0) != 0) {
        fprintf(stderr, "cannot dial %s\n", url);
        return 1;
    }
    char *req = calloc(1, req_bytes ? req_bytes : 1);
    double *lat = calloc((size_t)n, sizeof(double));
    size_t rep_bytes = 0;
    for (int i = -100; i < n; i++) {
        void *buf = NULL;
        size_t got = 0;
        double t0 = now_us();
        if (nng_send(s, req, req_bytes, 0) != 0 || nng_recv(s, &buf, &got, NNG_FLAG_ALLOC) != 0)
            return 1;
        double t1 = now_us();
        nng_free(buf, got);
        rep_bytes = got;
        if (i >= 0)
            lat[i] = t1 - t0;
    }
    report(lat, n, req_bytes, rep_bytes);
    return 0;
}

int main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN);
    if (argc == 4 && strcmp(argv[1], "kiln") == 0)
        return bench_kiln(argv[2], atoi(argv[3]));
    if (argc == 4 && strcmp(argv[1], "raw-server") == 0)
        return raw_server(argv[2], (size_t)atol(argv[3]));
    if (argc == 5 && strcmp(argv[1], "raw") == 0)
        return raw_client(argv[2], (size_t)atol(argv[3]), atoi(argv[4]));
    fprintf(stderr, "usage: kiln-rpc-bench kiln URL N | raw-server URL BYTES | raw URL BYTES N\n");
    return 2;
}
