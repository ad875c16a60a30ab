/* RPC client: a REQ socket shared by threads, one NNG context per call. */
#include "rpc.h"
#include "cleanup.h"
#include "fs.h"

#include <stdio.h>
#include <string.h>

#include <nng/protocol/reqrep0/req.h>

struct kiln_rpc_client {
    nng_socket sock;
    char *url;
};

kiln_req *kiln_req_dup(const kiln_req *req)
{
    size_t n = kiln__v1__request__get_packed_size(req);
    uint8_t *buf = malloc(n ? n : 1);
    if (buf == NULL)
        return NULL;
    kiln__v1__request__pack(req, buf);
    kiln_req *c = kiln__v1__request__unpack(NULL, n, buf);
    free(buf);
    return c;
}

void kiln_rpc_new_id(char out[33])
{
    kiln_random_hex(out, 32);
}

int kiln_rpc_client_new(kiln_rpc_client **out, const char *url, const kiln_transport_opts *t,
                        bool wait, kiln_error **err)
{
    kiln_rpc_client *c = calloc(1, sizeof(*c));
    if (c == NULL || (c->url = strdup(url)) == NULL) {
        free(c);
        return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
    }
    int rv = nng_req0_open(&c->sock);
    if (rv != 0) {
        free(c->url);
        free(c);
        return kiln_error_set(err, KILN_EINTERNAL, 0, "req socket: %s", nng_strerror(rv));
    }
    nng_socket_set_size(c->sock, NNG_OPT_RECVMAXSZ, KILN_RPC_CLIENT_MAX_MSG);
    /* Reconnect quickly after a service restart, without hammering it. */
    nng_socket_set_ms(c->sock, NNG_OPT_RECONNMINT, 50);
    nng_socket_set_ms(c->sock, NNG_OPT_RECONNMAXT, 2000);
    int r = kiln_dial(c->sock, url, t, wait, err);
    if (r < 0) {
        nng_close(c->sock);
        free(c->url);
        free(c);
        return r;
    }
    *out = c;
    return 0;
}

void kiln_rpc_client_free(kiln_rpc_client *c)
{
    if (c == NULL)
        return;
    kiln_nng_close_bounded(c->sock, 2000);
    free(c->url);
    free(c);
}

const char *kiln_rpc_client_url(const kiln_rpc_client *c)
{
    return c->url;
}

void kiln_rpc_reply_free(kiln_reply *r)
{
    if (r)
        kiln__v1__reply__free_unpacked(r, NULL);
}

/* Packs req into *m with its request_id, or a new one when it has none
 * (req->request_id is left as it was); *rid receives the id sent (caller
 * frees). */
static int pack_request(kiln_req *req, nng_msg **m, char **rid, kiln_error **err)
{
    char id[33];
    char *saved_id = req->request_id;
    if (req->request_id == NULL || req->request_id[0] == '\0') {
        kiln_rpc_new_id(id);
        req->request_id = id;
    }
    size_t n = kiln__v1__request__get_packed_size(req);
    if (nng_msg_alloc(m, n) != 0) {
        req->request_id = saved_id;
        return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
    }
    kiln__v1__request__pack(req, nng_msg_body(*m));
    *rid = strdup(req->request_id);
    req->request_id = saved_id;
    if (*rid == NULL) {
        nng_msg_free(*m);
        *m = NULL;
        return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
    }
    return 0;
}

/* Sends m (consumed) on ctx and waits for the reply, *rm (caller frees).
 * NNG 1.5 has no synchronous ctx send/recv: each step runs on an aio that
 * is waited for. */
static int exchange(const kiln_rpc_client *c, nng_ctx ctx, nng_msg *m, int timeout_ms, nng_msg **rm,
                    kiln_error **err)
{
    nng_aio *aio = NULL;
    int rv = nng_aio_alloc(&aio, NULL, NULL);
    if (rv != 0) {
        nng_msg_free(m);
        return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
    }
    int r = 0;
    nng_aio_set_timeout(aio, timeout_ms);
    nng_aio_set_msg(aio, m);
    nng_ctx_send(ctx, aio);
    nng_aio_wait(aio);
    if ((rv = nng_aio_result(aio)) != 0) {
        nng_msg_free(m);
        r = kiln_error_set(err, rv == NNG_ETIMEDOUT ? KILN_EUNAVAIL : kiln_code_from_nng(rv), 0,
                           "%s unreachable: %s", c->url, nng_strerror(rv));
    } else {
        nng_ctx_recv(ctx, aio);
        nng_aio_wait(aio);
        if ((rv = nng_aio_result(aio)) != 0)
            r = kiln_error_set(err, rv == NNG_ETIMEDOUT ? KILN_ETIMEDOUT : kiln_code_from_nng(rv),
                               0, "no reply from %s within %d ms: %s", c->url, timeout_ms,
                               nng_strerror(rv));
        else
            *rm = nng_aio_get_msg(aio);
    }
    nng_aio_free(aio);
    return r;
}

/* Unpacks rm (consumed), the reply to request rid, into *out; an error
 * status in it becomes the call's error. */
static int read_reply(const kiln_rpc_client *c, nng_msg *rm, const char *rid, kiln_reply **out,
                      kiln_error **err)
{
    kiln_reply *rep = kiln__v1__reply__unpack(NULL, nng_msg_len(rm), nng_msg_body(rm));
    nng_msg_free(rm);
    if (rep == NULL)
        return kiln_error_set(err, KILN_EINTERNAL, 0, "malformed reply from %s", c->url);
    if (rep->request_id && rep->request_id[0] && strcmp(rep->request_id, rid) != 0) {
        kiln__v1__reply__free_unpacked(rep, NULL);
        return kiln_error_set(err, KILN_EINTERNAL, 0, "reply from %s answers another request",
                              c->url);
    }
    if (rep->status && rep->status->code != KILN__V1__CODE__OK) {
        kiln_code code = kiln_code_from_wire((int)rep->status->code);
        int r =
            kiln_error_set(err, code, 0, "%s",
                           rep->status->message && *rep->status->message ? rep->status->message
                                                                         : kiln_code_name(code));
        kiln__v1__reply__free_unpacked(rep, NULL);
        return r;
    }
    *out = rep;
    return 0;
}

int kiln_rpc_call(kiln_rpc_client *c, kiln_req *req, kiln_reply **out, int timeout_ms,
                  kiln_error **err)
{
    nng_msg *m = NULL;
    _cleanup_free_ char *rid = NULL;
    int r = pack_request(req, &m, &rid, err);
    if (r < 0)
        return r;
    nng_ctx ctx;
    int rv = nng_ctx_open(&ctx, c->sock);
    if (rv != 0) {
        nng_msg_free(m);
        return kiln_error_set(err, KILN_EINTERNAL, 0, "req context: %s", nng_strerror(rv));
    }
    /* REQ resends on pipe loss (a service restart, a dropped TLS link) and
     * after this long without a reply; the server answers a resend of a
     * mutating call from its request_id cache.  A timer shorter than slow
     * calls would only pile duplicates onto the server, so it is at least a
     * minute. */
    nng_ctx_set_ms(ctx, NNG_OPT_REQ_RESENDTIME, timeout_ms > 60000 ? timeout_ms : 60000);
    nng_msg *rm = NULL;
    r = exchange(c, ctx, m, timeout_ms, &rm, err);
    if (r == 0)
        r = read_reply(c, rm, rid, out, err);
    nng_ctx_close(ctx);
    return r;
}
