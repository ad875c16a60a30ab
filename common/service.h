/* What kiln-builder and kiln-pusher have in common: flags, the RPC server with
 * the Status/Health/Events methods every service answers, the event publisher,
 * the HTTP endpoint, metrics, and signal-driven shutdown.
 *
 * Shutdown on SIGTERM (kiln_service_stop) drains first: readiness (/readyz,
 * Health) turns false and Status says draining at once, while RPCs, events
 * and HTTP keep being served so clients can follow running work; the service
 * refuses new work and lets running work finish, bounded by --grace-period
 * (hooks.drain).  A second SIGTERM or SIGINT during the drain cancels running
 * work (hooks.cancel); a first SIGINT drains with no grace.  Then the HTTP
 * endpoint stops, RPCs stop (in-flight ones finish), the event socket closes
 * and the ipc:// socket files are removed. */
#ifndef KILN_SERVICE_H
#define KILN_SERVICE_H

#include <getopt.h>
#include <stdbool.h>
#include <stddef.h>

#include "arena.h"
#include "buf.h"
#include "config.h"
#include "error.h"
#include "events.h"
#include "rpc.h"
#include "transport.h"

/* Endpoints per kind (--listen, --events) a service accepts. */
#define KILN_SERVICE_MAX_ENDPOINTS 4
/* Default --grace-period. */
#define KILN_SERVICE_GRACE_MS (600 * 1000)

typedef struct kiln_service_opts {
    const char *name;        /* "kiln-pusher"; borrowed */
    const char *topic;       /* event topic prefix: "push" or "build"; borrowed */
    kiln_endpoint listen_ep; /* default endpoints under <data>/run/ */
    kiln_endpoint events_ep;
    char *data_dir;   /* owned by the opts (kiln_service_opts_dispose) */
    char *listen_url; /* owned; the first --listen */
    char *events_url; /* owned; the first --events */
    /* Further --listen / --events endpoints (a farm node listens on ipc:// for
     * its pod and on tls+tcp:// for clients); owned. */
    char *listen_more[KILN_SERVICE_MAX_ENDPOINTS - 1];
    char *events_more[KILN_SERVICE_MAX_ENDPOINTS - 1];
    size_t n_listen_more, n_events_more;
    char *node_name;               /* owned; --node-name, else $HOSTNAME, else the hostname */
    int grace_ms;                  /* --grace-period: how long SIGTERM lets running work finish */
    char *http_addr;               /* owned; NULL: no HTTP endpoint */
    kiln_transport_opts transport; /* strings owned */
    int workers, threads;
    size_t max_msg;
    int drain_ms;
} kiln_service_opts;

void kiln_service_opts_init(kiln_service_opts *o, const char *name, const char *topic,
                            kiln_endpoint listen_ep, kiln_endpoint events_ep);
void kiln_service_opts_dispose(kiln_service_opts *o);

/* Extra flags of one service: getopt_long entries (val >= 256 recommended) and
 * a callback for them. */
typedef struct kiln_service_flags {
    const struct option *options; /* terminated by a zero entry; may be NULL */
    int (*on_flag)(void *ud, int val, const char *arg, kiln_error **err);
    void *ud;
} kiln_service_flags;

enum { KILN_ARGS_RUN = 0, KILN_ARGS_HELP = 1, KILN_ARGS_VERSION = 2 };

/* Parses the common flags (--data --listen --events --http --node-name
 * --grace-period --tls-cert --tls-key --tls-ca --allow-insecure-tcp --workers
 * --max-msg --log-level --log-format) plus extra; --listen and --events may be
 * repeated up to KILN_SERVICE_MAX_ENDPOINTS times.  Returns KILN_ARGS_* or KILN_EINVAL for a usage error.  Fills
 * the defaults that depend on the data dir after parsing. */
int kiln_service_parse_args(kiln_service_opts *o, int argc, char **argv,
                            const kiln_service_flags *extra, kiln_error **err);
/* The help text of the common flags, for a service's usage message. */
extern const char kiln_service_common_usage[];

typedef struct kiln_service kiln_service;

/* Blocks SIGTERM/SIGINT/SIGHUP (and ignores SIGPIPE) in the calling thread.
 * Call first thing in main(), before any thread (NNG's included) exists, so
 * that only kiln_service_wait() ever receives them. */
void kiln_service_block_signals(void);

typedef struct kiln_service_hooks {
    /* Adds service-specific checks to a Status/Health reply. */
    void (*checks)(void *user, Kiln__V1__Check ***checks, size_t *n, kiln_arena *arena);
    /* Appends service-specific Prometheus metrics. */
    void (*metrics)(void *user, kiln_buf *out);
    /* Called at shutdown while RPCs are still served (kiln_service_draining()
     * is true): refuse new jobs, let running ones finish within grace_ms,
     * then cancel what is left and return.  May be NULL. */
    void (*drain)(void *user, int grace_ms);
    /* Called (from another thread than drain) when the drain must end now:
     * cancel running jobs.  May be NULL. */
    void (*cancel)(void *user);
    /* Fills the service's part of a Status reply (platforms, load, cache).
     * Runs on an RPC callback thread: must not block.  May be NULL. */
    void (*status)(void *user, Kiln__V1__StatusReply *r, kiln_arena *arena);
    void *user;
} kiln_service_hooks;

/* Starts serving: the RPC server with Status, Health, Events and the extra
 * methods, the event publisher (logs under <data>/events/<topic>/) and, if
 * configured, HTTP.  Also blocks the shutdown signals (see above). */
int kiln_service_start(kiln_service **out, const kiln_service_opts *o, const kiln_rpc_method *extra,
                       size_t n_extra, const kiln_service_hooks *hooks, kiln_error **err);
kiln_events *kiln_service_events(kiln_service *s);
/* Waits for SIGTERM or SIGINT; returns the signal number. */
int kiln_service_wait(kiln_service *s);
/* True once shutdown began: new work is to be refused with KILN_EUNAVAIL. */
bool kiln_service_draining(const kiln_service *s);
/* Drains and stops (see the top of this file); frees s. */
void kiln_service_stop(kiln_service *s);

#endif
