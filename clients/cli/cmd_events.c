/* kiln events [JOB]: follow one job (replaying what it already logged) or
 * every job of both services. */
#include "cli.h"
#include "cleanup.h"
#include "pool.h"
#include "config.h"
#include "follow.h"
#include "transport.h"
#include "units.h"

#include <nng/supplemental/util/platform.h>

#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

typedef struct printer {
    bool json;
    bool failed;
} printer;

static int print_cb(void *ud, const kiln_event *e)
{
    printer *p = ud;
    if (p->json)
        cli_print_event_json(stdout, e);
    else
        cli_print_event(stdout, e);
    if (e->payload_case == KILN__V1__EVENT__PAYLOAD_FAILED)
        p->failed = true;
    return 0;
}

/* Of a service's event endpoints, the first with the scheme of the RPC
 * endpoint the client reached (a farm node publishes on ipc:// for its pod
 * and on tls+tcp:// for clients); else the primary one. */
static const char *events_url_like(const Kiln__V1__StatusReply *r, const char *via)
{
    kiln_scheme want;
    if (kiln_url_check(via, &want, NULL, NULL) < 0)
        return r->events_url;
    for (size_t i = 0; i < r->n_events_urls; i++) {
        kiln_scheme sc;
        if (kiln_url_check(r->events_urls[i], &sc, NULL, NULL) == 0 && sc == want)
            return r->events_urls[i];
    }
    return r->events_url;
}

/* Set from the config (KILN_BUILDER_EVENTS, "builder_events", ...). */
static struct {
    const char *service, *events;
} overrides[2];

void cli_events_override(cli_service s, const char *service_url, const char *events_url)
{
    overrides[s].service = service_url;
    overrides[s].events = events_url;
}

char *cli_events_url(kiln_rpc_client *c, int timeout_ms, kiln_error **err)
{
    for (size_t i = 0; i < KILN_ARRAY_SIZE(overrides); i++)
        if (overrides[i].events && strcmp(overrides[i].service, kiln_rpc_client_url(c)) == 0) {
            char *u = strdup(overrides[i].events);
            if (u == NULL)
                kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
            return u;
        }
    kiln_req req = KILN__V1__REQUEST__INIT;
    Kiln__V1__StatusRequest sr = KILN__V1__STATUS_REQUEST__INIT;
    req.body_case = KILN__V1__REQUEST__BODY_STATUS;
    req.status = &sr;
    kiln_reply *rep = NULL;
    if (kiln_rpc_call(c, &req, &rep, timeout_ms, err) < 0)
        return NULL;
    char *url = kiln_url_for_dial(events_url_like(rep->status_reply, kiln_rpc_client_url(c)),
                                  kiln_rpc_client_url(c));
    kiln_rpc_reply_free(rep);
    if (url == NULL)
        kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
    return url;
}

/* Whether the service behind c logged job (NOT_FOUND -> false). */
static int has_job(kiln_rpc_client *c, const char *job, int timeout_ms, kiln_error **err)
{
    kiln_req req = KILN__V1__REQUEST__INIT;
    Kiln__V1__EventsRequest er = KILN__V1__EVENTS_REQUEST__INIT;
    er.job_id = (char *)job;
    er.max_events = 1;
    req.body_case = KILN__V1__REQUEST__BODY_EVENTS;
    req.events = &er;
    kiln_reply *rep = NULL;
    int r = kiln_rpc_call(c, &req, &rep, timeout_ms, err);
    kiln_rpc_reply_free(rep);
    if (r == KILN_ENOENT) {
        kiln_error_free(err);
        return 0;
    }
    return r < 0 ? r : 1;
}

/* The services a job may be on, into url[] (malloc'd; *n of them): the
 * pusher, then the builder or every node of its pool of builders. */
static bool service_urls(cli_ctx *ctx, char **url, size_t *n)
{
    url[0] = strdup(ctx->url[CLI_PUSHER]);
    *n = 1;
    cli_pool_node *nodes = calloc(CLI_POOL_MAX, sizeof(*nodes));
    size_t k = 0;
    if (nodes && cli_pool_probe_all(ctx, nodes, CLI_POOL_MAX, &k))
        for (size_t i = 0; i < k; i++)
            url[(*n)++] = strdup(nodes[i].url);
    else
        url[(*n)++] = strdup(ctx->url[CLI_BUILDER]);
    free(nodes);
    for (size_t i = 0; i < *n; i++)
        if (url[i] == NULL)
            return false;
    return true;
}

static int follow_on(cli_ctx *ctx, const char *job, bool json, bool follow, uint64_t after,
                     char **urls, size_t n_url, size_t *unreachable, kiln_error **errp);

static int follow_one(cli_ctx *ctx, const char *job, bool json, bool follow, uint64_t after)
{
    if (!kiln_job_id_valid(job)) {
        cli_errorf("events: '%s' is not a job id", job);
        return CLI_EXIT_USAGE;
    }
    kiln_error *err = NULL;
    size_t unreachable = 0, n_url = 0;
    char *urls[1 + CLI_POOL_MAX] = {NULL};
    int rc = follow_on(ctx, job, json, follow, after, urls,
                       service_urls(ctx, urls, &n_url) ? n_url : 0, &unreachable, &err);
    for (size_t i = 0; i < n_url; i++)
        free(urls[i]);
    if (rc >= 0)
        return rc;
    if (err) {
        cli_errorf("events: %s", err->msg);
        rc = cli_exit_for(err);
        kiln_error_free(&err);
        return rc;
    }
    if (n_url && unreachable == n_url) {
        cli_errorf("events: no service is reachable (%s, %s)", ctx->url[0], ctx->url[1]);
        return CLI_EXIT_UNREACHABLE;
    }
    cli_errorf("events: no job %s%s", job, unreachable ? " (a service was unreachable)" : "");
    return CLI_EXIT_FAILED;
}

/* follow_one() over the services at urls: a CLI exit code once the job was
 * found, else -1 (with *err when a call failed). */
static int follow_on(cli_ctx *ctx, const char *job, bool json, bool follow, uint64_t after,
                     char **urls, size_t n_url, size_t *unreachable, kiln_error **errp)
{
    kiln_error *err = NULL;
    for (size_t s = 0; s < n_url; s++) {
        kiln_rpc_client *c = NULL;
        if (kiln_rpc_client_new(&c, urls[s], &ctx->transport, true, &err) < 0) {
            (*unreachable)++;
            kiln_error_free(&err);
            continue;
        }
        int r = has_job(c, job, ctx->timeout_ms, &err);
        if (r <= 0) {
            if (r < 0) {
                *unreachable += cli_exit_for(err) == CLI_EXIT_UNREACHABLE;
                kiln_error_free(&err);
            }
            kiln_rpc_client_free(c);
            continue;
        }
        printer p = {json, false};
        char *url = cli_events_url(c, ctx->timeout_ms, &err);
        if (url == NULL) {
            kiln_rpc_client_free(c);
            break;
        }
        if (follow) {
            kiln_follow_opts fo = {
                .job_id = job, .events_url = url, .transport = &ctx->transport, .after_seq = after};
            r = kiln_follow_job(c, &fo, print_cb, &p, &err);
        } else {
            /* Replay only: page through the log once. */
            r = 0;
            for (;;) {
                kiln_req req = KILN__V1__REQUEST__INIT;
                Kiln__V1__EventsRequest er = KILN__V1__EVENTS_REQUEST__INIT;
                er.job_id = (char *)job;
                er.after_seq = after;
                req.body_case = KILN__V1__REQUEST__BODY_EVENTS;
                req.events = &er;
                kiln_reply *rep = NULL;
                if ((r = kiln_rpc_call(c, &req, &rep, ctx->timeout_ms, &err)) < 0)
                    break;
                for (size_t i = 0; i < rep->events_reply->n_events; i++) {
                    print_cb(&p, rep->events_reply->events[i]);
                    after = rep->events_reply->events[i]->seq;
                }
                bool more = rep->events_reply->more && rep->events_reply->n_events;
                kiln_rpc_reply_free(rep);
                if (!more)
                    break;
            }
        }
        free(url);
        kiln_rpc_client_free(c);
        if (r < 0)
            break;
        return p.failed ? CLI_EXIT_FAILED : CLI_EXIT_OK;
    }
    *errp = err;
    return -1;
}

/* ---- every job ---- */

#define MAX_TRACKED 4096

typedef struct tracked {
    char id[KILN_JOB_ID_MAX + 1];
    uint64_t last;
} tracked;

/* The services followed: [0] kiln-pusher, then kiln-builder, or every node
 * of a pool of builders. */
#define MAX_FOLLOWED (1 + CLI_POOL_MAX)

typedef struct all_state {
    tracked jobs[MAX_TRACKED];
    size_t n, next;
    kiln_rpc_client *c[MAX_FOLLOWED];
    char *url[MAX_FOLLOWED];
    size_t n_c;
    cli_ctx *ctx;
    printer p;
} all_state;

static tracked *track(all_state *st, const char *id)
{
    for (size_t i = 0; i < st->n; i++)
        if (strcmp(st->jobs[i].id, id) == 0)
            return &st->jobs[i];
    tracked *t = st->n < MAX_TRACKED ? &st->jobs[st->n++] : &st->jobs[st->next++ % MAX_TRACKED];
    snprintf(t->id, sizeof(t->id), "%s", id);
    t->last = 0;
    return t;
}

/* backfill() from one service's log. */
static void backfill_from(all_state *st, kiln_rpc_client *c, tracked *t, uint64_t upto)
{
    while (t->last + 1 < upto) {
        kiln_req req = KILN__V1__REQUEST__INIT;
        Kiln__V1__EventsRequest er = KILN__V1__EVENTS_REQUEST__INIT;
        er.job_id = t->id;
        er.after_seq = t->last;
        req.body_case = KILN__V1__REQUEST__BODY_EVENTS;
        req.events = &er;
        kiln_reply *rep = NULL;
        kiln_error *err = NULL;
        if (c == NULL || kiln_rpc_call(c, &req, &rep, st->ctx->timeout_ms, &err) < 0) {
            kiln_error_free(&err);
            return;
        }
        size_t n = rep->events_reply->n_events;
        for (size_t i = 0; i < n && rep->events_reply->events[i]->seq < upto; i++) {
            print_cb(&st->p, rep->events_reply->events[i]);
            t->last = rep->events_reply->events[i]->seq;
        }
        kiln_rpc_reply_free(rep);
        if (n == 0)
            return;
    }
}

/* Prints logged events of t with seq in (t->last, upto) from the service
 * whose log has them (the pusher for push jobs; a build job's node). */
static void backfill(all_state *st, cli_service s, tracked *t, uint64_t upto)
{
    size_t from = s == CLI_PUSHER ? 0 : 1, to = s == CLI_PUSHER ? 1 : st->n_c;
    for (size_t i = from; i < to && t->last + 1 < upto; i++)
        backfill_from(st, st->c[i], t, upto);
}

static bool followed_urls(all_state *st, cli_ctx *ctx)
{
    return service_urls(ctx, st->url, &st->n_c);
}

static void all_state_free(all_state *st)
{
    for (size_t i = 0; i < st->n_c; i++) {
        kiln_rpc_client_free(st->c[i]);
        free(st->url[i]);
    }
    free(st);
}

static void pipe_added(nng_pipe p, nng_pipe_ev ev, void *arg)
{
    (void)p;
    (void)ev;
    atomic_fetch_add((atomic_int *)arg, 1);
}

/* Dials sub to the event endpoint of each followed service; returns how many
 * could be dialled (the others are reported). */
static int dial_all(all_state *st, cli_ctx *ctx, nng_socket sub)
{
    int reachable = 0;
    for (size_t s = 0; s < st->n_c; s++) {
        kiln_error *err = NULL;
        char *url = NULL;
        if (kiln_rpc_client_new(&st->c[s], st->url[s], &ctx->transport, true, &err) == 0)
            url = cli_events_url(st->c[s], ctx->timeout_ms, &err);
        if (url == NULL) {
            cli_errorf("events: %s %s: %s", s ? "kiln-builder" : "kiln-pusher", st->url[s],
                       err ? err->msg : "?");
            kiln_error_free(&err);
            continue;
        }
        int r = kiln_sub_dial(sub, url, &ctx->transport, &err);
        free(url);
        if (r < 0) {
            cli_errorf("events: %s", err->msg);
            kiln_error_free(&err);
            continue;
        }
        reachable++;
    }
    return reachable;
}

static int follow_all(cli_ctx *ctx, bool json)
{
    all_state *st = calloc(1, sizeof(*st));
    if (st == NULL)
        return CLI_EXIT_FAILED;
    st->ctx = ctx;
    st->p.json = json;
    if (!followed_urls(st, ctx)) {
        all_state_free(st);
        return CLI_EXIT_FAILED;
    }
    nng_socket sub = NNG_SOCKET_INITIALIZER;
    kiln_error *err = NULL;
    if (kiln_sub_open(&sub, NULL, &ctx->transport, NULL, 0, &err) < 0) {
        cli_errorf("events: %s", err->msg);
        kiln_error_free(&err);
        all_state_free(st);
        return CLI_EXIT_FAILED;
    }
    atomic_int connected = 0;
    nng_pipe_notify(sub, NNG_PIPE_EV_ADD_POST, pipe_added, &connected);
    int reachable = dial_all(st, ctx, sub);
    if (reachable == 0) {
        kiln_sub_close(sub);
        all_state_free(st);
        return CLI_EXIT_UNREACHABLE;
    }
    /* Said once every endpoint is connected (a subscription only sees what
     * is published after that), so a script can start jobs from then on. */
    unsigned long long deadline = kiln_now_ms() + (unsigned long long)ctx->timeout_ms;
    while (atomic_load(&connected) < reachable && kiln_now_ms() < deadline)
        nng_msleep(10);
    int up = atomic_load(&connected);
    if (up >= reachable)
        fprintf(stderr, "kiln: following the events of %d service%s\n", reachable,
                reachable == 1 ? "" : "s");
    else
        fprintf(stderr, "kiln: following the events of %d services (%d connected so far)\n",
                reachable, up);
    for (;;) {
        nng_msg *m = NULL;
        if (nng_recvmsg(sub, &m, 0) != 0)
            break;
        kiln_event *e = kiln_event_from_msg(nng_msg_body(m), nng_msg_len(m));
        nng_msg_free(m);
        if (e == NULL || !kiln_job_id_valid(e->job_id)) {
            if (e)
                kiln__v1__event__free_unpacked(e, NULL);
            continue;
        }
        cli_service s = strncmp(e->topic, "build.", 6) == 0 ? CLI_BUILDER : CLI_PUSHER;
        tracked *t = track(st, e->job_id);
        if (e->seq > t->last + 1)
            backfill(st, s, t, e->seq); /* joined mid-job, or PUB dropped events */
        if (e->seq > t->last) {
            print_cb(&st->p, e);
            t->last = e->seq;
        }
        kiln__v1__event__free_unpacked(e, NULL);
    }
    kiln_sub_close(sub);
    all_state_free(st);
    return CLI_EXIT_FAILED;
}

/* The options of the verb, for its parser, completion and man page. */
const struct option cli_events_opts[] = {{"json", no_argument, NULL, 'j'},
                                         {"no-follow", no_argument, NULL, 'n'},
                                         {"after", required_argument, NULL, 'a'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};

int cli_cmd_events(cli_ctx *ctx, int argc, char **argv)
{
    bool json = false, follow = true;
    unsigned long long after = 0;
    int c;
    cli_getopt_reset();
    while ((c = getopt_long(argc, argv, "jnh", cli_events_opts, NULL)) != -1) {
        switch (c) {
        case 'j':
            json = true;
            break;
        case 'n':
            follow = false;
            break;
        case 'a': {
            char *end = NULL;
            after = strtoull(optarg, &end, 10);
            if (*optarg == '\0' || *end) {
                cli_errorf("events: --after wants a sequence number");
                return CLI_EXIT_USAGE;
            }
            break;
        }
        case 'h':
            printf("Usage: kiln events [--json] [--no-follow] [--after SEQ] [JOB]\n\n"
                   "With JOB: prints the job's events from the start (or after SEQ), then follows\n"
                   "it live until it completes or fails; exits 0 if it completed, 1 if it failed.\n"
                   "--no-follow prints what is logged so far and exits.\n"
                   "Without JOB: follows every build and push job of both services until\n"
                   "interrupted, replaying the earlier events of jobs it joins midway.\n"
                   "--json prints one JSON object per event.\n");
            return CLI_EXIT_OK;
        default:
            cli_errorf("events: unknown option '%s'", argv[optind - 1]);
            return CLI_EXIT_USAGE;
        }
    }
    if (argc - optind > 1) {
        cli_errorf("events: unexpected argument '%s'", argv[optind + 1]);
        return CLI_EXIT_USAGE;
    }
    if (optind < argc)
        return follow_one(ctx, argv[optind], json, follow, after);
    if (!follow) {
        cli_errorf("events: --no-follow needs a JOB");
        return CLI_EXIT_USAGE;
    }
    return follow_all(ctx, json);
}
