/* Following one job's events without loss: subscribe first, replay the log
 * (Events RPC) up to now, then take live PUB messages and fill any gap (PUB
 * drops for slow subscribers) from the log again.  Used by the CLI and by the
 * builder when it waits for pusher jobs. */
#ifndef KILN_FOLLOW_H
#define KILN_FOLLOW_H

#include <stdint.h>

#include "error.h"
#include "events.h"
#include "rpc.h"
#include "transport.h"

/* Called once per event, in seq order with no gaps.  Return < 0 to stop
 * following (that value is returned by kiln_follow_job). */
typedef int (*kiln_follow_cb)(void *ud, const kiln_event *e);

typedef struct kiln_follow_opts {
    const char *job_id;     /* borrowed */
    const char *events_url; /* the service's PUB endpoint; borrowed */
    const kiln_transport_opts *transport;
    uint64_t after_seq;     /* deliver events with seq > after_seq */
    int poll_ms;            /* with no live event for this long, poll the log; 0: 1000 */
    int timeout_ms;         /* give up after this long without progress; 0: never */
    void (*idle)(void *ud); /* called after each poll_ms without events; may be NULL */
} kiln_follow_opts;

/* Delivers the job's events through cb until its terminal event, which is
 * delivered too; returns 0 then.  KILN_ENOENT for an unknown job. */
int kiln_follow_job(kiln_rpc_client *c, const kiln_follow_opts *o, kiln_follow_cb cb, void *ud,
                    kiln_error **err);

/* Opens a SUB socket dialled (in the background) to url and subscribed to
 * each prefix in topics (n of them; n == 0 subscribes to everything).  With
 * url NULL the socket is not dialled yet (the caller dials it, with
 * kiln_dial, once it has set what it needs, e.g. pipe notifications). */
int kiln_sub_open(nng_socket *out, const char *url, const kiln_transport_opts *t,
                  const char *const *topics, size_t n, kiln_error **err);

/* Dials sub to url: waits for the first connection, and when that fails
 * keeps dialling in the background. */
int kiln_sub_dial(nng_socket sub, const char *url, const kiln_transport_opts *t, kiln_error **err);

/* Closes a socket from kiln_sub_open (drains its queue first). */
void kiln_sub_close(nng_socket sub);

/* Splits a PUB message into its topic and unpacked event (caller frees with
 * kiln__v1__event__free_unpacked).  NULL if malformed. */
kiln_event *kiln_event_from_msg(const void *data, size_t len);

/* True for completed/failed events. */
bool kiln_event_is_terminal(const kiln_event *e);

#endif
