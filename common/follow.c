/* Gap-free event following: live PUB messages plus Events replay. */
#include "follow.h"
#include "units.h"

#include <stdio.h>
#include <string.h>

#include <nng/protocol/pubsub0/sub.h>

bool kiln_event_is_terminal(const kiln_event *e)
{
    return e->payload_case == KILN__V1__EVENT__PAYLOAD_COMPLETED ||
           e->payload_case == KILN__V1__EVENT__PAYLOAD_FAILED;
}

kiln_event *kiln_event_from_msg(const void *data, size_t len)
{
    const char *p = memchr(data, ' ', len < 200 ? len : 200);
    if (p == NULL)
        return NULL;
    size_t skip = (size_t)(p - (const char *)data) + 1;
    return kiln__v1__event__unpack(NULL, len - skip, (const uint8_t *)data + skip);
}

int kiln_sub_dial(nng_socket sub, const char *url, const kiln_transport_opts *t, kiln_error **err)
{
    /* The first connection is waited for: a subscriber that goes away while
     * its connection is still being negotiated can leave NNG 1.5.2's TLS
     * listener on the service's side no longer accepting (its accept ends
     * with NNG_ECLOSED, which the listener takes for its own close), and
     * every later subscriber of that endpoint then hears nothing.  Only
     * when that first attempt fails does NNG go on trying in the
     * background. */
    kiln_error *first = NULL;
    if (kiln_dial(sub, url, t, true, &first) == 0)
        return 0;
    kiln_error_free(&first);
    return kiln_dial(sub, url, t, false, err);
}

int kiln_sub_open(nng_socket *out, const char *url, const kiln_transport_opts *t,
                  const char *const *topics, size_t n, kiln_error **err)
{
    nng_socket s;
    int rv = nng_sub0_open(&s);
    if (rv != 0)
        return kiln_error_set(err, KILN_EINTERNAL, 0, "sub socket: %s", nng_strerror(rv));
    nng_socket_set_size(s, NNG_OPT_RECVMAXSZ, (size_t)8 << 20);
    /* NNG's default queue depths: deeper PUB/SUB queues made NNG 1.5.2's
     * nng_close() hang now and then under load (a flood left queued at close);
     * what a shallow queue drops is replayed from the job's log anyway. */
    nng_socket_set_ms(s, NNG_OPT_RECONNMINT, 50);
    nng_socket_set_ms(s, NNG_OPT_RECONNMAXT, 1000);
    if (n == 0)
        rv = nng_socket_set(s, NNG_OPT_SUB_SUBSCRIBE, "", 0);
    for (size_t i = 0; i < n && rv == 0; i++)
        rv = nng_socket_set(s, NNG_OPT_SUB_SUBSCRIBE, topics[i], strlen(topics[i]));
    if (rv != 0) {
        nng_close(s);
        return kiln_error_set(err, KILN_EINTERNAL, 0, "subscribe: %s", nng_strerror(rv));
    }
    int r = url != NULL ? kiln_sub_dial(s, url, t, err) : 0;
    if (r < 0) {
        nng_close(s);
        return r;
    }
    *out = s;
    return 0;
}

void kiln_sub_close(nng_socket sub)
{
    /* Unsubscribe and drain what is queued before closing: NNG 1.5.2 can
     * block forever closing a SUB socket whose receive queue is full while
     * its publisher is still connected. */
    nng_socket_set(sub, NNG_OPT_SUB_UNSUBSCRIBE, "", 0);
    nng_msg *m = NULL;
    for (int i = 0; i < 100000 && nng_recvmsg(sub, &m, NNG_FLAG_NONBLOCK) == 0; i++)
        nng_msg_free(m);
    kiln_nng_close_bounded(sub, 2000);
}

/* Replays logged events after *last; delivers them; sets *done on terminal. */
static int replay(kiln_rpc_client *c, const char *job, uint64_t *last, bool *done,
                  kiln_follow_cb cb, void *ud, kiln_error **err)
{
    for (;;) {
        kiln_req req = KILN__V1__REQUEST__INIT;
        Kiln__V1__EventsRequest er = KILN__V1__EVENTS_REQUEST__INIT;
        er.job_id = (char *)job;
        er.after_seq = *last;
        req.body_case = KILN__V1__REQUEST__BODY_EVENTS;
        req.events = &er;
        kiln_reply *rep = NULL;
        int r = kiln_rpc_call(c, &req, &rep, 30000, err);
        if (r < 0)
            return r;
        if (rep->body_case != KILN__V1__REPLY__BODY_EVENTS_REPLY) {
            kiln_rpc_reply_free(rep);
            return kiln_error_set(err, KILN_EINTERNAL, 0, "unexpected reply to Events");
        }
        Kiln__V1__EventsReply *er2 = rep->events_reply;
        for (size_t i = 0; i < er2->n_events; i++) {
            kiln_event *e = er2->events[i];
            if (e->seq != *last + 1) {
                kiln_rpc_reply_free(rep);
                return kiln_error_set(err, KILN_EINTERNAL, 0,
                                      "event log of job %s has a gap at %llu", job,
                                      (unsigned long long)(*last + 1));
            }
            if ((r = cb(ud, e)) < 0) {
                kiln_rpc_reply_free(rep);
                return r;
            }
            *last = e->seq;
            if (kiln_event_is_terminal(e))
                *done = true;
        }
        bool more = er2->more && er2->n_events > 0;
        kiln_rpc_reply_free(rep);
        if (!more || *done)
            return 0;
    }
}

int kiln_follow_job(kiln_rpc_client *c, const kiln_follow_opts *o, kiln_follow_cb cb, void *ud,
                    kiln_error **err)
{
    if (!kiln_job_id_valid(o->job_id))
        return kiln_error_set(err, KILN_EINVAL, 0, "invalid job id '%s'", o->job_id);
    char t1[KILN_JOB_ID_MAX + 16], t2[KILN_JOB_ID_MAX + 16];
    snprintf(t1, sizeof(t1), "build.%s ", o->job_id);
    snprintf(t2, sizeof(t2), "push.%s ", o->job_id);
    const char *topics[2] = {t1, t2};
    nng_socket sub;
    /* Subscribe before the first replay so nothing falls between the two. */
    int r = kiln_sub_open(&sub, o->events_url, o->transport, topics, 2, err);
    if (r < 0)
        return r;
    int poll_ms = o->poll_ms > 0 ? o->poll_ms : 1000;
    nng_socket_set_ms(sub, NNG_OPT_RECVTIMEO, poll_ms);
    uint64_t last = o->after_seq;
    bool done = false;
    unsigned long long progress_at = kiln_now_ms();
    r = replay(c, o->job_id, &last, &done, cb, ud, err);
    while (r == 0 && !done) {
        nng_msg *m = NULL;
        int rv = nng_recvmsg(sub, &m, 0);
        if (rv == NNG_ETIMEDOUT) {
            if (o->idle)
                o->idle(ud);
            uint64_t before = last;
            r = replay(c, o->job_id, &last, &done, cb, ud, err);
            if (last != before)
                progress_at = kiln_now_ms();
            else if (o->timeout_ms > 0 && kiln_now_ms() - progress_at > (unsigned)o->timeout_ms)
                r = kiln_error_set(err, KILN_ETIMEDOUT, 0, "no events from job %s for %d ms",
                                   o->job_id, o->timeout_ms);
            continue;
        }
        if (rv != 0) {
            r = kiln_error_set(err, kiln_code_from_nng(rv), 0, "event subscription: %s",
                               nng_strerror(rv));
            break;
        }
        kiln_event *e = kiln_event_from_msg(nng_msg_body(m), nng_msg_len(m));
        nng_msg_free(m);
        if (e == NULL)
            continue;
        if (e->seq <= last) {
            kiln__v1__event__free_unpacked(e, NULL);
            continue;
        }
        if (e->seq != last + 1) {
            /* PUB dropped something: the log has it. */
            kiln__v1__event__free_unpacked(e, NULL);
            r = replay(c, o->job_id, &last, &done, cb, ud, err);
            progress_at = kiln_now_ms();
            continue;
        }
        r = cb(ud, e);
        if (r >= 0) {
            last = e->seq;
            done = kiln_event_is_terminal(e);
            progress_at = kiln_now_ms();
        }
        kiln__v1__event__free_unpacked(e, NULL);
    }
    kiln_sub_close(sub);
    return r < 0 ? r : 0;
}
