/* Both daemons on temp ipc sockets: status, hostile input on each REP socket,
 * concurrency, SIGTERM behaviour, transport policy and mutual TLS. */
#include "kt.h"
#include "svc_harness.h"
#include "config.h"
#include "rpc.h"

#include <errno.h>
#include <pthread.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <sys/stat.h>
#include <unistd.h>

#include <nng/nng.h>
#include <nng/protocol/reqrep0/req.h>

static char *dir;
static char url_p[300], url_b[300], ev_p[300], ev_b[300];
static th_proc pusher, builder;

static int start_services(void)
{
    dir = kt_tmpdir("svc");
    if (dir == NULL)
        return -1;
    snprintf(url_p, sizeof(url_p), "ipc://%s/run/pusher.sock", dir);
    snprintf(url_b, sizeof(url_b), "ipc://%s/run/builder.sock", dir);
    snprintf(ev_p, sizeof(ev_p), "ipc://%s/run/pusher-events.sock", dir);
    snprintf(ev_b, sizeof(ev_b), "ipc://%s/run/builder-events.sock", dir);
    char *pargv[] = {(char *)th_bin("KILN_PUSHER_BIN"), "--data", dir, "--max-msg", "64K", NULL};
    char *bargv[] = {(char *)th_bin("KILN_BUILDER_BIN"), "--data", dir, "--max-msg", "64K", NULL};
    if (th_spawn(&pusher, dir, "pusher", pargv) < 0 ||
        th_spawn(&builder, dir, "builder", bargv) < 0)
        return -1;
    if (th_wait_ready(url_p, 5000) < 0 || th_wait_ready(url_b, 5000) < 0)
        return -1;
    return 0;
}

static kiln_reply *status(const char *url, kiln_error **err)
{
    kiln_rpc_client *c = NULL;
    if (kiln_rpc_client_new(&c, url, NULL, true, err) < 0)
        return NULL;
    kiln_req req = KILN__V1__REQUEST__INIT;
    Kiln__V1__StatusRequest sr = KILN__V1__STATUS_REQUEST__INIT;
    req.body_case = KILN__V1__REQUEST__BODY_STATUS;
    req.status = &sr;
    kiln_reply *rep = NULL;
    kiln_rpc_call(c, &req, &rep, 3000, err);
    kiln_rpc_client_free(c);
    return rep;
}

KT_SETUP(setup)
{
    KT_REQUIRE(start_services() == 0);
}

KT_TEST(services_start_and_answer_status)
{
    const char *urls[2] = {url_p, url_b};
    const char *names[2] = {"kiln-pusher", "kiln-builder"};
    for (int i = 0; i < 2; i++) {
        kiln_error *err = NULL;
        kiln_reply *r = status(urls[i], &err);
        KT_REQUIRE(r != NULL);
        KT_EXPECT_INT(r->body_case, KILN__V1__REPLY__BODY_STATUS_REPLY);
        KT_EXPECT_STR(r->status_reply->service, names[i]);
        KT_EXPECT_STR(r->status_reply->version, KILN_VERSION_STRING);
        KT_EXPECT_STR(r->status_reply->listen_url, urls[i]);
        KT_EXPECT_STR(r->status_reply->events_url, i == 0 ? ev_p : ev_b);
        kiln_rpc_reply_free(r);
    }
    /* The builder's monitor reports the pusher reachable within a probe interval. */
    bool ok = false;
    for (int tries = 0; tries < 50 && !ok; tries++) {
        kiln_error *err = NULL;
        kiln_reply *r = status(url_b, &err);
        KT_REQUIRE(r != NULL);
        for (size_t i = 0; i < r->status_reply->n_checks; i++)
            if (strcmp(r->status_reply->checks[i]->name, "pusher") == 0)
                ok = r->status_reply->checks[i]->ok;
        kiln_rpc_reply_free(r);
        if (!ok)
            usleep(100000);
    }
    KT_EXPECT(ok);
}

/* Sends raw bytes on a fresh REQ socket; returns 1 if a reply with a non-OK
 * status came back, 0 if the pipe was dropped/no reply, -1 on a bad reply. */
static int send_raw(const char *url, const void *data, size_t len, Kiln__V1__Code *code_out)
{
    nng_socket s;
    if (nng_req0_open(&s) != 0)
        return -1;
    nng_socket_set_ms(s, NNG_OPT_RECVTIMEO, 1500);
    nng_socket_set_ms(s, NNG_OPT_REQ_RESENDTIME, 60000);
    if (nng_dial(s, url, NULL, 0) != 0) {
        nng_close(s);
        return -1;
    }
    int rv = nng_send(s, (void *)data, len, 0);
    void *buf = NULL;
    size_t n = 0;
    if (rv == 0)
        rv = nng_recv(s, &buf, &n, NNG_FLAG_ALLOC);
    int result = 0;
    if (rv == 0) {
        kiln_reply *r = kiln__v1__reply__unpack(NULL, n, buf);
        nng_free(buf, n);
        if (r == NULL || r->status == NULL || r->status->code == KILN__V1__CODE__OK)
            result = -1;
        else {
            *code_out = r->status->code;
            result = 1;
        }
        if (r)
            kiln__v1__reply__free_unpacked(r, NULL);
    }
    nng_close(s);
    return result;
}

/* Speaks NNG's ipc framing by hand (SP header, then a 0x01 byte and a 64-bit
 * big-endian length per message) to announce and send a message of len bytes;
 * returns 0 when the service closes the connection instead of taking it.
 * (A raw socket keeps the test independent of how an NNG client copes.) */
static int send_oversized(const char *path, size_t len)
{
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    struct timeval tv = {.tv_sec = 5};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    const uint8_t hello[8] = {0, 'S', 'P', 0, 0, 0x30 /* REQ v0 */, 0, 0};
    uint8_t peer[8];
    int rc = -1;
    if (write(fd, hello, 8) != 8 || read(fd, peer, 8) != 8 || peer[5] != 0x31 /* REP v0 */)
        goto out;
    uint8_t hdr[9] = {1};
    for (int i = 0; i < 8; i++)
        hdr[1 + i] = (uint8_t)((uint64_t)len >> (56 - 8 * i));
    if (write(fd, hdr, 9) != 9)
        goto out;
    static uint8_t zeros[65536];
    for (size_t sent = 0; sent < len;) {
        ssize_t n =
            send(fd, zeros, len - sent < sizeof(zeros) ? len - sent : sizeof(zeros), MSG_NOSIGNAL);
        if (n <= 0)
            break; /* the service may already have hung up */
        sent += (size_t)n;
    }
    uint8_t b;
    ssize_t n = read(fd, &b, 1);
    rc = (n == 0 || (n < 0 && errno == ECONNRESET)) ? 0 : -1;
out:
    close(fd);
    return rc;
}

KT_TEST(hostile_messages_get_errors_and_service_survives)
{
    const char *urls[2] = {url_p, url_b};
    /* A valid Status request, truncated in the middle of its request_id. */
    kiln_req req = KILN__V1__REQUEST__INIT;
    Kiln__V1__StatusRequest sr = KILN__V1__STATUS_REQUEST__INIT;
    req.request_id = "0123456789abcdef";
    req.body_case = KILN__V1__REQUEST__BODY_STATUS;
    req.status = &sr;
    uint8_t packed[128];
    size_t plen = kiln__v1__request__pack(&req, packed);
    for (int i = 0; i < 2; i++) {
        Kiln__V1__Code code = KILN__V1__CODE__OK;
        uint8_t garbage[257];
        for (size_t k = 0; k < sizeof(garbage); k++)
            garbage[k] = (uint8_t)(k * 37 + 11);
        KT_EXPECT_INT(send_raw(urls[i], garbage, sizeof(garbage), &code), 1);
        KT_EXPECT_INT(code, KILN__V1__CODE__INVALID_ARGUMENT);
        KT_EXPECT_INT(send_raw(urls[i], packed, plen - 5, &code), 1);
        KT_EXPECT_INT(code, KILN__V1__CODE__INVALID_ARGUMENT);
        /* An empty message is a valid protobuf with no body. */
        KT_EXPECT_INT(send_raw(urls[i], "", 0, &code), 1);
        KT_EXPECT_INT(code, KILN__V1__CODE__INVALID_ARGUMENT);
        /* A well-formed request for a method nobody serves (field 99, unknown). */
        uint8_t unknown[] = {0x9a, 0x06, 0x00};
        KT_EXPECT_INT(send_raw(urls[i], unknown, sizeof(unknown), &code), 1);
        KT_EXPECT_INT(code, KILN__V1__CODE__INVALID_ARGUMENT);
        /* Over the 64 KiB receive limit: the service drops the connection. */
        KT_EXPECT_INT(send_oversized(urls[i] + 6, 256 * 1024), 0);
        kiln_error *err = NULL;
        kiln_reply *r = status(urls[i], &err);
        KT_EXPECT(r != NULL);
        kiln_rpc_reply_free(r);
        kiln_error_free(&err);
    }
}

struct conc {
    kiln_rpc_client *c;
    int ok;
};

static void *conc_thread(void *arg)
{
    struct conc *t = arg;
    for (int i = 0; i < 10; i++) {
        kiln_req req = KILN__V1__REQUEST__INIT;
        Kiln__V1__StatusRequest sr = KILN__V1__STATUS_REQUEST__INIT;
        req.body_case = KILN__V1__REQUEST__BODY_STATUS;
        req.status = &sr;
        kiln_reply *rep = NULL;
        kiln_error *err = NULL;
        if (kiln_rpc_call(t->c, &req, &rep, 10000, &err) == 0 &&
            rep->body_case == KILN__V1__REPLY__BODY_STATUS_REPLY)
            __atomic_fetch_add(&t->ok, 1, __ATOMIC_SEQ_CST);
        kiln_rpc_reply_free(rep);
        kiln_error_free(&err);
    }
    return NULL;
}

KT_TEST(ten_clients_times_hundred_concurrent_status_calls)
{
    /* 10 client sockets; each is shared by 10 threads making 10 calls: 100 per client. */
    const char *urls[2] = {url_p, url_b};
    for (int u = 0; u < 2; u++) {
        struct conc clients[10];
        pthread_t th[100];
        for (int i = 0; i < 10; i++) {
            kiln_error *err = NULL;
            clients[i].ok = 0;
            KT_REQUIRE(kiln_rpc_client_new(&clients[i].c, urls[u], NULL, true, &err) == 0);
        }
        for (int i = 0; i < 100; i++)
            pthread_create(&th[i], NULL, conc_thread, &clients[i / 10]);
        for (int i = 0; i < 100; i++)
            pthread_join(th[i], NULL);
        int total = 0;
        for (int i = 0; i < 10; i++) {
            KT_EXPECT_INT(clients[i].ok, 100);
            total += clients[i].ok;
            kiln_rpc_client_free(clients[i].c);
        }
        KT_EXPECT_INT(total, 1000);
    }
}

KT_TEST(sigterm_exits_zero_quickly_and_removes_sockets)
{
    int ms = 0;
    KT_EXPECT_INT(th_stop(&builder, 5000, &ms), 0);
    KT_EXPECT(ms < 2000);
    KT_EXPECT_INT(th_stop(&pusher, 5000, &ms), 0);
    KT_EXPECT(ms < 2000);
    struct stat st;
    KT_EXPECT(stat(url_p + 6, &st) < 0);
    KT_EXPECT(stat(url_b + 6, &st) < 0);
    KT_EXPECT(stat(ev_p + 6, &st) < 0);
    KT_EXPECT(stat(ev_b + 6, &st) < 0);
}

KT_TEST(non_loopback_plain_tcp_listener_is_refused)
{
    char *d = kt_tmpdir("tcp");
    KT_REQUIRE(d != NULL);
    int port = kt_free_port();
    char listen[64];
    snprintf(listen, sizeof(listen), "tcp://0.0.0.0:%d", port);
    char *argv[] = {(char *)th_bin("KILN_PUSHER_BIN"), "--data", d, "--listen", listen, NULL};
    th_proc p;
    KT_REQUIRE(th_spawn(&p, d, "pusher", argv) == 0);
    int st = 0;
    waitpid(p.pid, &st, 0);
    KT_EXPECT(WIFEXITED(st) && WEXITSTATUS(st) == 1);
    KT_EXPECT_INT(kt_sh("grep -q 'refusing plain-TCP listener' %s", p.log), 0);
    /* Loopback tcp:// is fine. */
    snprintf(listen, sizeof(listen), "tcp://127.0.0.1:%d", port);
    char url[64];
    snprintf(url, sizeof(url), "tcp://127.0.0.1:%d", port);
    KT_REQUIRE(th_spawn(&p, d, "pusher2", argv) == 0);
    KT_EXPECT_INT(th_wait_ready(url, 5000), 0);
    KT_EXPECT_INT(th_stop(&p, 5000, NULL), 0);
    kt_rmrf(d);
    free(d);
}

/* Generates a CA, a server cert for 127.0.0.1, a client cert, and a client cert
 * from an unrelated CA. */
static int make_pki(const char *d)
{
    return kt_sh(
        "cd '%s' && exec >pki.log 2>&1 && "
        "openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=kiln-test-ca "
        "  -keyout ca.key -out ca.crt && "
        "openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=rogue-ca "
        "  -keyout rogue.key -out rogue.crt && "
        "printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\\n' > san.ext && "
        "openssl req -newkey rsa:2048 -nodes -subj /CN=127.0.0.1 -keyout server.key -out "
        "server.csr && "
        "openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 "
        "  -extfile san.ext -out server.crt && "
        "openssl req -newkey rsa:2048 -nodes -subj /CN=client -keyout client.key -out client.csr "
        "&& "
        "openssl x509 -req -in client.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 "
        "  -out client.crt && "
        "openssl req -newkey rsa:2048 -nodes -subj /CN=rogue -keyout rclient.key -out rclient.csr "
        "&& "
        "openssl x509 -req -in rclient.csr -CA rogue.crt -CAkey rogue.key -CAcreateserial -days 2 "
        "  -out rclient.crt",
        d);
}

static int tls_status(const char *url, const kiln_transport_opts *t)
{
    kiln_rpc_client *c = NULL;
    kiln_error *err = NULL;
    int r = kiln_rpc_client_new(&c, url, t, false, &err);
    if (r == 0) {
        kiln_req req = KILN__V1__REQUEST__INIT;
        Kiln__V1__StatusRequest sr = KILN__V1__STATUS_REQUEST__INIT;
        req.body_case = KILN__V1__REQUEST__BODY_STATUS;
        req.status = &sr;
        kiln_reply *rep = NULL;
        r = kiln_rpc_call(c, &req, &rep, 2000, &err);
        kiln_rpc_reply_free(rep);
        kiln_rpc_client_free(c);
    }
    kiln_error_free(&err);
    return r;
}

KT_TEST(mutual_tls_listener_requires_a_valid_client_certificate)
{
    char *d = kt_tmpdir("tls");
    KT_REQUIRE(d != NULL);
    KT_REQUIRE(make_pki(d) == 0);
    int port = kt_free_port();
    char url[64], cert[512], key[512], ca[512], evurl[300];
    snprintf(url, sizeof(url), "tls+tcp://127.0.0.1:%d", port);
    snprintf(evurl, sizeof(evurl), "ipc://%s/ev.sock", d);
    snprintf(cert, sizeof(cert), "%s/server.crt", d);
    snprintf(key, sizeof(key), "%s/server.key", d);
    snprintf(ca, sizeof(ca), "%s/ca.crt", d);
    char *argv[] = {(char *)th_bin("KILN_PUSHER_BIN"),
                    "--data",
                    d,
                    "--listen",
                    url,
                    "--events",
                    evurl,
                    "--tls-cert",
                    cert,
                    "--tls-key",
                    key,
                    "--tls-ca",
                    ca,
                    NULL};
    th_proc p;
    KT_REQUIRE(th_spawn(&p, d, "pusher", argv) == 0);
    usleep(300000);

    char ccert[512], ckey[512], rcert[512], rkey[512];
    snprintf(ccert, sizeof(ccert), "%s/client.crt", d);
    snprintf(ckey, sizeof(ckey), "%s/client.key", d);
    snprintf(rcert, sizeof(rcert), "%s/rclient.crt", d);
    snprintf(rkey, sizeof(rkey), "%s/rclient.key", d);
    /* The server certificate names DNS:localhost (plus IP:127.0.0.1, which NNG's
     * TLS engine does not match): dial the IP and expect the DNS name. */
    kiln_transport_opts good = {.tls = {ccert, ckey, ca, "localhost"}};
    kiln_transport_opts nocert = {.tls = {NULL, NULL, ca, "localhost"}};
    kiln_transport_opts rogue = {.tls = {rcert, rkey, ca, "localhost"}};
    kiln_transport_opts wrongname = {.tls = {ccert, ckey, ca, "kiln.example"}};
    int r = -1;
    for (int tries = 0; tries < 10 && r != 0; tries++) {
        r = tls_status(url, &good);
        if (r != 0)
            usleep(100000);
    }
    KT_EXPECT_INT(r, 0);
    KT_EXPECT(tls_status(url, &nocert) < 0);
    KT_EXPECT(tls_status(url, &rogue) < 0);
    KT_EXPECT(tls_status(url, &wrongname) < 0);
    /* And the service still serves a good client afterwards. */
    KT_EXPECT_INT(tls_status(url, &good), 0);
    KT_EXPECT_INT(th_stop(&p, 5000, NULL), 0);

    /* A tls+tcp listener without a client CA is refused (no mutual TLS). */
    char *argv2[] = {(char *)th_bin("KILN_PUSHER_BIN"),
                     "--data",
                     d,
                     "--listen",
                     url,
                     "--events",
                     evurl,
                     "--tls-cert",
                     cert,
                     "--tls-key",
                     key,
                     NULL};
    KT_REQUIRE(th_spawn(&p, d, "pusher-noca", argv2) == 0);
    int st = 0;
    waitpid(p.pid, &st, 0);
    KT_EXPECT(WIFEXITED(st) && WEXITSTATUS(st) == 1);
    kt_rmrf(d);
    free(d);
}

KT_TEARDOWN(teardown)
{
    if (builder.pid > 0)
        th_stop(&builder, 5000, NULL);
    if (pusher.pid > 0)
        th_stop(&pusher, 5000, NULL);
    if (dir)
        kt_rmrf(dir);
    free(dir);
}
