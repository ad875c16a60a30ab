/* RPC server: REP socket, aio+ctx worker pool, handler threads, request_id cache.
 *
 * Worker life cycle: RECV (ctx receive pending) -> BUSY (queued or in a handler)
 * -> SEND (ctx send pending) -> RECV ...  When stopping, workers go IDLE instead
 * of re-arming their receive; stop waits for every worker to be IDLE.
 *
 * Decoding is bounded: protobuf-c allocates a struct per repeated entry, so a
 * request of empty entries decodes into many times its wire size.  Every
 * request is decoded with an allocator that refuses more than
 * DECODE_FACTOR x its wire size (plus DECODE_SLACK, at most DECODE_CAP)
 * and is answered RESOURCE_EXHAUSTED instead.  Requests above LARGE_REQ bytes
 * are decoded on the handler threads, at most LARGE_MAX at a time (the others
 * wait, undecoded).  Each request is decoded into its own mapping, unmapped
 * when it has been answered, so its memory goes back to the system at once. */
#include "rpc.h"
#include "cleanup.h"
#include "units.h"
#include "log.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include <nng/protocol/reqrep0/rep.h>

const double kiln_rpc_lat_bounds[KILN_RPC_LAT_BUCKETS] = {
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 2.5};

typedef enum wstate { W_IDLE, W_RECV, W_BUSY, W_SEND } wstate;

#define LARGE_REQ     ((size_t)256 << 10)
#define LARGE_MAX     2
#define DECODE_FACTOR 8
#define DECODE_SLACK  ((size_t)256 << 10)
#define DECODE_CAP    ((size_t)64 << 20)

struct worker {
    kiln_rpc_server *srv;
    nng_aio *aio;
    nng_ctx ctx;
    wstate st;
    kiln_req *req;       /* decoded request queued for a handler thread (BUSY) */
    nng_msg *raw;        /* or a large request still to be decoded there */
    size_t req_len;      /* its size on the wire */
    bool local;          /* it came from a local peer (kiln_rpc_peer_is_local) */
    struct worker *next; /* handler queue link */
};

#define MAX_WAITERS 8
#define IDEM_ID_MAX 64

struct idem {
    char id[IDEM_ID_MAX + 1];
    int method;
    bool used, done;
    unsigned long long at_ms;
    void *reply; /* packed reply bytes once done */
    size_t reply_len;
    struct worker *waiters[MAX_WAITERS];
    int n_waiters;
};

struct kiln_rpc_server {
    nng_socket sock;
    kiln_rpc_server_opts o;
    char *url;

    pthread_mutex_t mu;
    pthread_cond_t cv;       /* queue non-empty / quit */
    pthread_cond_t idle;     /* a worker went IDLE */
    pthread_cond_t large_cv; /* a large request finished */
    struct worker *qhead, *qtail;
    bool stopping, quit;

    struct worker *workers;
    int n_workers;
    pthread_t *threads;
    int n_threads;

    struct idem *idem;
    size_t n_idem;

    kiln_rpc_method_stats *stats; /* n_methods + 1 ("unknown") */
    uint64_t served;
    int large_running; /* large requests decoded and not yet answered */
};

static void worker_cb(void *arg);
static void dispatch(struct worker *w, nng_msg *msg);

/* ---- replies ---- */

static nng_msg *pack_reply(const kiln_reply *r)
{
    size_t n = kiln__v1__reply__get_packed_size(r);
    nng_msg *m = NULL;
    if (nng_msg_alloc(&m, n) != 0)
        return NULL;
    kiln__v1__reply__pack(r, nng_msg_body(m));
    return m;
}

static nng_msg *error_reply(const char *request_id, kiln_code code, const char *msg)
{
    kiln_reply r = KILN__V1__REPLY__INIT;
    Kiln__V1__Status st = KILN__V1__STATUS__INIT;
    st.code = (Kiln__V1__Code)kiln_code_to_wire(code);
    st.message = (char *)msg;
    r.request_id = (char *)(request_id ? request_id : "");
    r.status = &st;
    return pack_reply(&r);
}

/* Sends m on w (takes ownership of m).  Called with the lock NOT held. */
static void worker_send(struct worker *w, nng_msg *m)
{
    kiln_rpc_server *s = w->srv;
    if (m == NULL) {
        /* Could not even allocate an error reply: give the ctx back to receiving. */
        pthread_mutex_lock(&s->mu);
        w->st = s->stopping ? W_IDLE : W_RECV;
        bool rearm = w->st == W_RECV;
        pthread_cond_broadcast(&s->idle);
        pthread_mutex_unlock(&s->mu);
        if (rearm)
            nng_ctx_recv(w->ctx, w->aio);
        return;
    }
    pthread_mutex_lock(&s->mu);
    w->st = W_SEND;
    pthread_mutex_unlock(&s->mu);
    nng_aio_set_msg(w->aio, m);
    nng_ctx_send(w->ctx, w->aio);
}

static void record(kiln_rpc_server *s, int idx, kiln_code code, double secs)
{
    kiln_rpc_method_stats *st = &s->stats[idx];
    pthread_mutex_lock(&s->mu);
    st->by_code[kiln_code_to_wire(code)]++;
    int b = 0;
    while (b < KILN_RPC_LAT_BUCKETS && secs > kiln_rpc_lat_bounds[b])
        b++;
    st->lat_buckets[b]++;
    st->lat_sum += secs;
    s->served++;
    pthread_mutex_unlock(&s->mu);
}

/* ---- request_id cache (lock held) ---- */

static struct idem *idem_find(kiln_rpc_server *s, const char *id, int method)
{
    for (size_t i = 0; i < s->n_idem; i++)
        if (s->idem[i].used && s->idem[i].method == method && strcmp(s->idem[i].id, id) == 0)
            return &s->idem[i];
    return NULL;
}

static struct idem *idem_insert(kiln_rpc_server *s, const char *id, int method)
{
    struct idem *victim = NULL;
    for (size_t i = 0; i < s->n_idem; i++) {
        struct idem *e = &s->idem[i];
        if (!e->used) {
            victim = e;
            break;
        }
        if (e->done && (victim == NULL || e->at_ms < victim->at_ms))
            victim = e;
    }
    if (victim == NULL)
        return NULL; /* every slot is a call still running */
    free(victim->reply);
    memset(victim, 0, sizeof(*victim));
    snprintf(victim->id, sizeof(victim->id), "%s", id);
    victim->method = method;
    victim->used = true;
    victim->at_ms = kiln_now_ms();
    return victim;
}

static nng_msg *msg_from_bytes(const void *p, size_t n)
{
    nng_msg *m = NULL;
    if (nng_msg_alloc(&m, n) != 0)
        return NULL;
    memcpy(nng_msg_body(m), p, n);
    return m;
}

/* ---- where a request came from ---- */

bool kiln_rpc_peer_is_local(nng_msg *msg)
{
    nng_pipe p = nng_msg_get_pipe(msg);
    nng_sockaddr sa;
    if (nng_pipe_id(p) < 0 || nng_pipe_get_addr(p, NNG_OPT_LOCADDR, &sa) != 0)
        return false;
    return sa.s_family == NNG_AF_IPC || sa.s_family == NNG_AF_INPROC;
}

/* The peer of the request the calling handler thread is answering. */
static _Thread_local bool cur_local;

bool kiln_rpc_request_is_local(void)
{
    return cur_local;
}

/* ---- handling ---- */

static const kiln_rpc_method *find_method(kiln_rpc_server *s, const kiln_req *req, int *idx)
{
    *idx = (int)s->o.n_methods; /* the "unknown" stats slot */
    if (req == NULL)
        return NULL;
    for (size_t i = 0; i < s->o.n_methods; i++)
        if (s->o.methods[i].body == req->body_case) {
            *idx = (int)i;
            return &s->o.methods[i];
        }
    return NULL;
}

/* ---- bounded decoding ---- */

/* A request is decoded into its own anonymous mapping: a bump allocator over
 * at most `cap` bytes (only the pages used count), unmapped in one go when the
 * request is done, so its memory returns to the system at once and a decode
 * cannot take more than its budget. */
typedef struct decode_arena {
    ProtobufCAllocator a;
    size_t cap, used; /* bytes of the mapping, including this header */
    bool exceeded;
} decode_arena;

#define ARENA_HDR ((sizeof(decode_arena) + 15) & ~(size_t)15)

static void *arena_alloc(void *ud, size_t n)
{
    decode_arena *ar = ud;
    n = (n + 15) & ~(size_t)15;
    if (n == 0 || n > ar->cap - ar->used) {
        ar->exceeded = true;
        return NULL;
    }
    void *p = (char *)ar + ar->used;
    ar->used += n;
    return p;
}

static void arena_free_noop(void *ud, void *p)
{
    (void)ud;
    (void)p;
}

/* Releases a request decode() returned. */
static void req_free(kiln_req *req)
{
    if (req == NULL)
        return;
    decode_arena *ar = (decode_arena *)(void *)((char *)req - ARENA_HDR);
    munmap(ar, ar->cap);
}

/* Decodes msg (consumed) within its budget; NULL when it is not a Request or
 * would take too much memory (*too_big).  Free the result with req_free(). */
static kiln_req *decode(nng_msg *msg, bool *too_big)
{
    size_t len = nng_msg_len(msg);
    size_t cap = len > (DECODE_CAP - DECODE_SLACK) / DECODE_FACTOR
                     ? DECODE_CAP
                     : len * DECODE_FACTOR + DECODE_SLACK;
    cap = (cap + ARENA_HDR + 4095) & ~(size_t)4095;
    *too_big = false;
    void *map =
        mmap(NULL, cap, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (map == MAP_FAILED) {
        nng_msg_free(msg);
        *too_big = true;
        return NULL;
    }
    decode_arena *ar = map;
    *ar = (decode_arena){.a = {arena_alloc, arena_free_noop, ar}, .cap = cap, .used = ARENA_HDR};
    /* The Request itself is the first allocation: req_free() finds the
     * mapping right before it. */
    kiln_req *req = kiln__v1__request__unpack(&ar->a, len, nng_msg_body(msg));
    nng_msg_free(msg);
    if (req == NULL) {
        *too_big = ar->exceeded;
        munmap(map, cap);
    }
    return req;
}

/* Answers a request that did not decode: malformed, or refused (too_big)
 * because it would take more memory than allowed. */
static void answer_undecoded(struct worker *w, size_t in_len, bool too_big)
{
    kiln_rpc_server *s = w->srv;
    const int unknown = (int)s->o.n_methods;
    if (too_big) {
        kiln_warn("rpc",
                  "refused a request of %zu bytes: it decodes into more than %d times "
                  "its size",
                  in_len, DECODE_FACTOR);
        record(s, unknown, KILN_ENOSPC, 0);
        worker_send(
            w, error_reply("", KILN_ENOSPC, "request refused: it decodes into too much memory"));
        return;
    }
    kiln_debug("rpc", "malformed request (%zu bytes)", in_len);
    record(s, unknown, KILN_EINVAL, 0);
    worker_send(w, error_reply("", KILN_EINVAL, "malformed request: not a kiln.v1.Request"));
}

/* Answers a request no method of this service serves (or with no body). */
static void answer_unserved(struct worker *w, const kiln_req *req, const char *rid)
{
    kiln_rpc_server *s = w->srv;
    kiln_code c = req->body_case == KILN__V1__REQUEST__BODY__NOT_SET ? KILN_EINVAL : KILN_ENOTSUP;
    record(s, (int)s->o.n_methods, c, 0);
    worker_send(
        w, error_reply(rid, c,
                       c == KILN_EINVAL ? "empty request" : "method not served by this service"));
}

/* A resent copy of a mutating call that is still running waits for its
 * answer.  Called with the lock held; releases it. */
static void idem_join(struct worker *w, struct idem *e)
{
    kiln_rpc_server *s = w->srv;
    bool queued = e->n_waiters < MAX_WAITERS, rearm = false;
    if (queued) {
        e->waiters[e->n_waiters++] = w;
    } else {
        /* Every waiter slot is taken: drop this copy unanswered.  An
         * error here would be taken by the client as the call's
         * answer, and one of the queued copies is answered anyway. */
        w->st = s->stopping ? W_IDLE : W_RECV;
        rearm = w->st == W_RECV;
        pthread_cond_broadcast(&s->idle);
    }
    pthread_mutex_unlock(&s->mu);
    if (rearm)
        nng_ctx_recv(w->ctx, w->aio);
}

/* A mutating call runs once per request_id: a resent copy gets the cached
 * answer, or waits for the running copy's.  Returns true when the request
 * was dealt with here (the caller frees it); otherwise *ent is the new cache
 * entry that is to receive the answer. */
static bool idem_begin(struct worker *w, const kiln_rpc_method *m, int idx, const char *rid,
                       struct idem **ent)
{
    kiln_rpc_server *s = w->srv;
    if (rid[0] == '\0' || strlen(rid) > IDEM_ID_MAX) {
        record(s, idx, KILN_EINVAL, 0);
        worker_send(
            w, error_reply(rid, KILN_EINVAL, "mutating call needs a request_id of 1..64 bytes"));
        return true;
    }
    pthread_mutex_lock(&s->mu);
    struct idem *e = idem_find(s, rid, idx);
    if (e && e->done) {
        nng_msg *copy = msg_from_bytes(e->reply, e->reply_len);
        pthread_mutex_unlock(&s->mu);
        kiln_debug("rpc", "%s: resent request answered from cache", m->name);
        worker_send(w, copy);
        return true;
    }
    if (e) {
        idem_join(w, e);
        return true;
    }
    *ent = idem_insert(s, rid, idx);
    pthread_mutex_unlock(&s->mu);
    if (*ent == NULL) {
        worker_send(w, error_reply(rid, KILN_EUNAVAIL, "server busy"));
        return true;
    }
    return false;
}

/* Keeps the answer of a mutating call (out; NULL when it could not be
 * packed) for resent copies and sends it to the copies that waited.  An
 * answer that cannot be kept frees the entry: a later copy runs the call
 * again. */
static void idem_done(kiln_rpc_server *s, struct idem *ent, nng_msg *out, const char *rid)
{
    struct worker *waiters[MAX_WAITERS];
    int nw = 0;
    pthread_mutex_lock(&s->mu);
    if (out) {
        ent->reply_len = nng_msg_len(out);
        ent->reply = malloc(ent->reply_len ? ent->reply_len : 1);
        if (ent->reply)
            memcpy(ent->reply, nng_msg_body(out), ent->reply_len);
    }
    ent->done = ent->reply != NULL;
    if (!ent->done)
        ent->used = false;
    ent->at_ms = kiln_now_ms();
    nw = ent->n_waiters;
    memcpy(waiters, ent->waiters, sizeof(waiters));
    ent->n_waiters = 0;
    pthread_mutex_unlock(&s->mu);
    for (int i = 0; i < nw; i++)
        worker_send(waiters[i], out ? msg_from_bytes(nng_msg_body(out), nng_msg_len(out))
                                    : error_reply(rid, KILN_ENOSPC, "out of memory"));
}

/* Runs method m on req (arena NULL: it could not be allocated) and fills
 * reply's status st; a failure's message stays owned by *err.  Returns the
 * code answered. */
static kiln_code call_method(struct worker *w, const kiln_rpc_method *m, kiln_req *req,
                             kiln_arena *arena, kiln_reply *reply, Kiln__V1__Status *st,
                             kiln_error **err)
{
    kiln_rpc_server *s = w->srv;
    cur_local = w->local;
    int r = arena ? m->fn(m->user ? m->user : s->o.user, req, reply, arena, err)
                  : kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
    cur_local = false;
    kiln_code code = KILN_OK;
    if (r < 0) {
        code = *err ? (*err)->code : (kiln_code)r;
        st->message = *err ? (*err)->msg : (char *)kiln_code_name(code);
        reply->body_case = KILN__V1__REPLY__BODY__NOT_SET;
        if (code == KILN_EINTERNAL || code == KILN_EIO)
            kiln_err("rpc", "%s failed: %s", m->name, st->message);
        else
            kiln_debug("rpc", "%s: %s", m->name, st->message);
    }
    st->code = (Kiln__V1__Code)kiln_code_to_wire(code);
    reply->status = st;
    return code;
}

static double seconds_since(const struct timespec *t0)
{
    struct timespec t1;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    return (double)(t1.tv_sec - t0->tv_sec) + (double)(t1.tv_nsec - t0->tv_nsec) / 1e9;
}

/* Answers one decoded request (req NULL: it did not decode, too_big: because
 * it would take more memory than allowed); takes ownership of req. */
static void handle(struct worker *w, kiln_req *req, size_t in_len, bool too_big)
{
    kiln_rpc_server *s = w->srv;
    struct timespec ts0;
    clock_gettime(CLOCK_MONOTONIC, &ts0);
    if (req == NULL) {
        answer_undecoded(w, in_len, too_big);
        return;
    }
    int idx;
    const kiln_rpc_method *m = find_method(s, req, &idx);
    const char *rid = req->request_id ? req->request_id : "";
    if (m == NULL) {
        answer_unserved(w, req, rid);
        req_free(req);
        return;
    }
    kiln_log_context(rid, NULL);
    struct idem *ent = NULL;
    if ((m->flags & KILN_RPC_MUTATING) && idem_begin(w, m, idx, rid, &ent)) {
        req_free(req);
        return;
    }

    kiln_arena *arena = kiln_arena_new();
    kiln_reply reply = KILN__V1__REPLY__INIT;
    Kiln__V1__Status st = KILN__V1__STATUS__INIT;
    kiln_error *err = NULL;
    kiln_code code = call_method(w, m, req, arena, &reply, &st, &err);
    reply.request_id = (char *)rid;
    nng_msg *out = pack_reply(&reply);
    record(s, idx, code, seconds_since(&ts0));
    if (ent)
        idem_done(s, ent, out, rid);
    kiln_error_free(&err);
    kiln_arena_free(arena);
    req_free(req);
    kiln_log_context(NULL, NULL);
    worker_send(w, out);
}

static void *handler_thread(void *arg)
{
    kiln_rpc_server *s = arg;
    for (;;) {
        pthread_mutex_lock(&s->mu);
        while (s->qhead == NULL && !s->quit)
            pthread_cond_wait(&s->cv, &s->mu);
        struct worker *w = s->qhead;
        if (w == NULL) {
            pthread_mutex_unlock(&s->mu);
            return NULL;
        }
        s->qhead = w->next;
        if (s->qhead == NULL)
            s->qtail = NULL;
        w->next = NULL;
        kiln_req *req = w->req;
        nng_msg *raw = w->raw;
        size_t len = w->req_len;
        w->req = NULL;
        w->raw = NULL;
        if (raw == NULL) {
            pthread_mutex_unlock(&s->mu);
            handle(w, req, len, false);
            continue;
        }
        /* A large request: decoded and answered LARGE_MAX at a time. */
        while (s->large_running >= LARGE_MAX)
            pthread_cond_wait(&s->large_cv, &s->mu);
        s->large_running++;
        pthread_mutex_unlock(&s->mu);
        bool too_big = false;
        req = decode(raw, &too_big);
        handle(w, req, len, too_big);
        pthread_mutex_lock(&s->mu);
        s->large_running--;
        pthread_cond_signal(&s->large_cv);
        pthread_mutex_unlock(&s->mu);
    }
}

/* Decodes a received request; answers it right here when it is cheap (errors
 * and KILN_RPC_INLINE methods: one thread hop less per call), else queues it
 * for the handler threads, so NNG's own threads never wait on slow work. */
static void dispatch(struct worker *w, nng_msg *msg)
{
    kiln_rpc_server *s = w->srv;
    size_t len = nng_msg_len(msg);
    kiln_req *req = NULL;
    w->local = kiln_rpc_peer_is_local(msg);
    if (len <= LARGE_REQ) {
        bool too_big = false;
        req = decode(msg, &too_big);
        msg = NULL;
        int idx;
        const kiln_rpc_method *m = find_method(s, req, &idx);
        if (m == NULL || (m->flags & KILN_RPC_INLINE)) {
            handle(w, req, len, too_big);
            return;
        }
    }
    pthread_mutex_lock(&s->mu);
    w->req = req;
    w->raw = msg;
    w->req_len = len;
    if (s->qtail)
        s->qtail->next = w;
    else
        s->qhead = w;
    s->qtail = w;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

/* NNG callback: runs on NNG's threads; never blocks beyond the server mutex. */
static void worker_cb(void *arg)
{
    struct worker *w = arg;
    kiln_rpc_server *s = w->srv;
    int rv = nng_aio_result(w->aio);
    pthread_mutex_lock(&s->mu);
    switch (w->st) {
    case W_RECV:
        if (rv != 0) {
            if (s->stopping || rv == NNG_ECLOSED) {
                w->st = W_IDLE;
                pthread_cond_broadcast(&s->idle);
                pthread_mutex_unlock(&s->mu);
                return;
            }
            pthread_mutex_unlock(&s->mu);
            nng_ctx_recv(w->ctx, w->aio);
            return;
        }
        w->st = W_BUSY;
        pthread_mutex_unlock(&s->mu);
        dispatch(w, nng_aio_get_msg(w->aio));
        return;
    case W_SEND:
        if (rv != 0)
            nng_msg_free(nng_aio_get_msg(w->aio));
        if (s->stopping || rv == NNG_ECLOSED) {
            w->st = W_IDLE;
            pthread_cond_broadcast(&s->idle);
            pthread_mutex_unlock(&s->mu);
            return;
        }
        w->st = W_RECV;
        pthread_mutex_unlock(&s->mu);
        nng_ctx_recv(w->ctx, w->aio);
        return;
    default:
        pthread_mutex_unlock(&s->mu);
        return;
    }
}

/* ---- life cycle ---- */

static void server_free(kiln_rpc_server *s)
{
    for (int i = 0; i < s->n_workers; i++) {
        if (s->workers[i].aio)
            nng_aio_free(s->workers[i].aio);
        if (s->workers[i].req)
            req_free(s->workers[i].req);
        if (s->workers[i].raw)
            nng_msg_free(s->workers[i].raw);
    }
    for (size_t i = 0; i < s->n_idem; i++)
        free(s->idem[i].reply);
    free(s->idem);
    free(s->workers);
    free(s->threads);
    free(s->stats);
    free(s->url);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
    pthread_cond_destroy(&s->idle);
    pthread_cond_destroy(&s->large_cv);
    free(s);
}

int kiln_rpc_server_start(kiln_rpc_server **out, const kiln_rpc_server_opts *o, kiln_error **err)
{
    kiln_rpc_server *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
    s->o = *o;
    s->url = strdup(o->url);
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    pthread_cond_init(&s->idle, NULL);
    pthread_cond_init(&s->large_cv, NULL);
    s->n_workers = o->workers > 0 ? o->workers : 32;
    s->n_threads = o->threads > 0 ? o->threads : 8;
    s->n_idem = o->idem_entries ? o->idem_entries : 4096;
    size_t max_msg = o->max_msg ? o->max_msg : KILN_RPC_DEFAULT_MAX_MSG;
    s->workers = calloc((size_t)s->n_workers, sizeof(*s->workers));
    s->threads = calloc((size_t)s->n_threads, sizeof(*s->threads));
    s->idem = calloc(s->n_idem, sizeof(*s->idem));
    s->stats = calloc(o->n_methods + 1, sizeof(*s->stats));
    if (!s->url || !s->workers || !s->threads || !s->idem || !s->stats) {
        server_free(s);
        return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
    }
    for (size_t i = 0; i < o->n_methods; i++)
        s->stats[i].name = o->methods[i].name;
    s->stats[o->n_methods].name = "unknown";

    int rv = nng_rep0_open(&s->sock);
    if (rv != 0) {
        server_free(s);
        return kiln_error_set(err, KILN_EINTERNAL, 0, "rep socket: %s", nng_strerror(rv));
    }
    nng_socket_set_size(s->sock, NNG_OPT_RECVMAXSZ, max_msg);
    int r = kiln_listen(s->sock, o->url, o->transport, err);
    if (r < 0) {
        nng_close(s->sock);
        server_free(s);
        return r;
    }
    for (int i = 0; i < s->n_workers; i++) {
        struct worker *w = &s->workers[i];
        w->srv = s;
        if ((rv = nng_aio_alloc(&w->aio, worker_cb, w)) != 0 ||
            (rv = nng_ctx_open(&w->ctx, s->sock)) != 0) {
            nng_close(s->sock);
            server_free(s);
            return kiln_error_set(err, KILN_ENOSPC, 0, "rpc worker: %s", nng_strerror(rv));
        }
    }
    for (int i = 0; i < s->n_threads; i++) {
        if (pthread_create(&s->threads[i], NULL, handler_thread, s) != 0) {
            pthread_mutex_lock(&s->mu);
            s->quit = true;
            pthread_cond_broadcast(&s->cv);
            pthread_mutex_unlock(&s->mu);
            for (int j = 0; j < i; j++)
                pthread_join(s->threads[j], NULL);
            nng_close(s->sock);
            server_free(s);
            return kiln_error_set(err, KILN_ENOSPC, 0, "cannot start handler threads");
        }
    }
    /* The caller's pointer is set before the first request can arrive: a
     * method may read it (Status reports the served count) as soon as the
     * workers receive. */
    *out = s;
    for (int i = 0; i < s->n_workers; i++) {
        s->workers[i].st = W_RECV;
        nng_ctx_recv(s->workers[i].ctx, s->workers[i].aio);
    }
    return 0;
}

int kiln_rpc_server_listen(kiln_rpc_server *s, const char *url, kiln_error **err)
{
    return kiln_listen(s->sock, url, s->o.transport, err);
}

void kiln_rpc_server_stop(kiln_rpc_server *s, int drain_ms)
{
    if (s == NULL)
        return;
    pthread_mutex_lock(&s->mu);
    s->stopping = true;
    pthread_mutex_unlock(&s->mu);
    /* Stop waiting for new requests; requests already received finish below. */
    for (int i = 0; i < s->n_workers; i++) {
        pthread_mutex_lock(&s->mu);
        bool recv = s->workers[i].st == W_RECV;
        pthread_mutex_unlock(&s->mu);
        if (recv)
            nng_aio_cancel(s->workers[i].aio);
    }
    struct timespec dl = kiln_deadline_in_ms(drain_ms);
    pthread_mutex_lock(&s->mu);
    for (;;) {
        int busy = 0;
        for (int i = 0; i < s->n_workers; i++)
            busy += s->workers[i].st != W_IDLE;
        if (busy == 0)
            break;
        if (pthread_cond_timedwait(&s->idle, &s->mu, &dl) != 0) {
            kiln_warn("rpc", "%d request(s) still in flight at shutdown", busy);
            break;
        }
    }
    s->quit = true;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    for (int i = 0; i < s->n_threads; i++)
        pthread_join(s->threads[i], NULL);
    nng_close(s->sock);
    for (int i = 0; i < s->n_workers; i++)
        nng_aio_stop(s->workers[i].aio);
    const char *ipc = kiln_ipc_path(s->url);
    if (ipc)
        unlink(ipc);
    server_free(s);
}

size_t kiln_rpc_server_stats(kiln_rpc_server *s, kiln_rpc_method_stats *out, size_t cap)
{
    if (s == NULL)
        return 0;
    size_t n = s->o.n_methods + 1;
    if (n > cap)
        n = cap;
    pthread_mutex_lock(&s->mu);
    memcpy(out, s->stats, n * sizeof(*out));
    pthread_mutex_unlock(&s->mu);
    return n;
}

uint64_t kiln_rpc_server_served(kiln_rpc_server *s)
{
    if (s == NULL)
        return 0;
    pthread_mutex_lock(&s->mu);
    uint64_t v = s->served;
    pthread_mutex_unlock(&s->mu);
    return v;
}
