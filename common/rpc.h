/* Request/reply RPC over NNG with kiln.v1.Request / kiln.v1.Reply envelopes.
 *
 * Server: one REP socket served by a pool of aio+ctx workers (NNG's async
 * server pattern).  A worker's receive completes in an NNG callback, which
 * decodes the request and either answers it on the spot (errors and methods
 * flagged KILN_RPC_INLINE, e.g. Status) or queues it to a small pool of handler
 * threads, so a slow handler never blocks NNG's own threads and a Status call
 * is answered while long work runs.  Malformed, unknown or oversized requests get an error status
 * (oversized ones make NNG drop the pipe); nothing from the network reaches
 * an assert.  Mutating methods are idempotent on request_id: a resent request
 * gets the first reply, also when it arrives while the first is still running.
 *
 * Client: a REQ socket; each call uses its own NNG context, so one client is
 * safe to share between threads. */
#ifndef KILN_RPC_H
#define KILN_RPC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "arena.h"
#include "error.h"
#include "transport.h"
#include "kiln/kiln.pb-c.h"

typedef Kiln__V1__Request kiln_req;
typedef Kiln__V1__Reply kiln_reply;

/* A handler fills reply's body (reply->body_case and the matching field); every
 * allocation it hangs off reply must come from arena, which is released after
 * the reply is sent.  Returning < 0 sends the error in *err as the status and
 * drops any body. */
typedef int (*kiln_rpc_handler)(void *user, const kiln_req *req, kiln_reply *reply,
                                kiln_arena *arena, kiln_error **err);

enum {
    KILN_RPC_MUTATING = 1 << 0, /* cache the reply by request_id for resends */
    KILN_RPC_INLINE = 1 << 1,   /* cheap and never blocks: run on NNG's callback thread */
};

typedef struct kiln_rpc_method {
    Kiln__V1__Request__BodyCase body; /* which request this handles */
    const char *name;                 /* "Status", used in logs and metrics */
    kiln_rpc_handler fn;
    unsigned flags;
    void *user; /* passed to fn; NULL: the server's user pointer */
} kiln_rpc_method;

typedef struct kiln_rpc_server_opts {
    const char *url;                      /* borrowed */
    const kiln_transport_opts *transport; /* borrowed; may be NULL */
    const kiln_rpc_method *methods;       /* borrowed; lives as long as the server */
    size_t n_methods;
    void *user;          /* passed to every handler */
    int workers;         /* concurrent requests in flight (aio+ctx pairs); 0: 32 */
    int threads;         /* handler threads; 0: 8 */
    size_t max_msg;      /* receive size limit; 0: KILN_RPC_DEFAULT_MAX_MSG */
    size_t idem_entries; /* request_id cache size; 0: 4096 */
} kiln_rpc_server_opts;

#define KILN_RPC_DEFAULT_MAX_MSG ((size_t)4 << 20)
#define KILN_RPC_CLIENT_MAX_MSG  ((size_t)64 << 20)

typedef struct kiln_rpc_server kiln_rpc_server;

/* Per-method counters, for /metrics. */
#define KILN_RPC_LAT_BUCKETS 12
extern const double kiln_rpc_lat_bounds[KILN_RPC_LAT_BUCKETS]; /* seconds, upper bounds */
typedef struct kiln_rpc_method_stats {
    const char *name;
    uint64_t by_code[KILN_CODE_COUNT];              /* indexed by wire code */
    uint64_t lat_buckets[KILN_RPC_LAT_BUCKETS + 1]; /* cumulative-free counts; last is +Inf */
    double lat_sum;                                 /* seconds */
} kiln_rpc_method_stats;

/* Creates the socket, listens and starts serving. */
int kiln_rpc_server_start(kiln_rpc_server **out, const kiln_rpc_server_opts *o, kiln_error **err);
/* Listens on one more endpoint (same transport options); requests from every
 * endpoint share the workers.  The caller removes an extra ipc:// socket file
 * after stop. */
int kiln_rpc_server_listen(kiln_rpc_server *s, const char *url, kiln_error **err);
/* Stops receiving, waits up to drain_ms for in-flight requests to be answered,
 * closes the socket (NNG removes an ipc socket file) and frees everything. */
void kiln_rpc_server_stop(kiln_rpc_server *s, int drain_ms);
/* Snapshot of per-method stats into out (n_methods + 1 entries: the last one is
 * "unknown" for malformed/unknown requests).  Returns the number written. */
size_t kiln_rpc_server_stats(kiln_rpc_server *s, kiln_rpc_method_stats *out, size_t cap);
uint64_t kiln_rpc_server_served(kiln_rpc_server *s);

/* True when msg (borrowed) arrived over a connection that cannot leave this
 * host: its pipe's local address is an ipc:// socket (or inproc://).  Decided
 * per connection, not per listen URL, so a service listening on several
 * endpoints tells its ipc:// clients from its tcp:// ones.  False when the
 * pipe is gone or its address cannot be read. */
bool kiln_rpc_peer_is_local(nng_msg *msg);

/* In a handler: whether the request being handled came from a local peer
 * (kiln_rpc_peer_is_local of its message).  Only such clients may name paths
 * on this host.  False outside a handler. */
bool kiln_rpc_request_is_local(void);

/* ---- client ---- */

typedef struct kiln_rpc_client kiln_rpc_client;

/* Opens a REQ socket to url.  wait=true fails at once (KILN_EUNAVAIL) when the
 * service is not there; wait=false connects in the background and keeps
 * reconnecting (for long-lived service-to-service clients). */
int kiln_rpc_client_new(kiln_rpc_client **out, const char *url, const kiln_transport_opts *t,
                        bool wait, kiln_error **err);
void kiln_rpc_client_free(kiln_rpc_client *c);
const char *kiln_rpc_client_url(const kiln_rpc_client *c);

/* Sends req and waits up to timeout_ms for the reply.  If req->request_id is
 * empty a random one is used.  A reply with a non-OK status is returned as an
 * error with that code and message (and *out is NULL).  The caller frees *out
 * with kiln_rpc_reply_free(). */
int kiln_rpc_call(kiln_rpc_client *c, kiln_req *req, kiln_reply **out, int timeout_ms,
                  kiln_error **err);
void kiln_rpc_reply_free(kiln_reply *r);

/* A deep copy of req (pack + unpack), so work can outlive the RPC that
 * carried it; NULL on allocation failure.  Free with
 * kiln__v1__request__free_unpacked(copy, NULL). */
kiln_req *kiln_req_dup(const kiln_req *req);

/* A fresh random request id (32 hex chars + NUL). */
void kiln_rpc_new_id(char out[33]);

#endif
