/* Build jobs of kiln-builder: the Build and Cancel RPCs over the engine. */
#ifndef BLD_BUILD_JOB_H
#define BLD_BUILD_JOB_H

#include <stdbool.h>
#include <stdint.h>

#include "buf.h"
#include "events.h"
#include "jobs.h"
#include "rpc.h"

typedef struct bld_engine bld_engine;
typedef struct bld_builds bld_builds;
typedef struct bld_contexts bld_contexts;

/* Builds that may run at once unless configured (--max-builds). */
#define BLD_MAX_BUILDS_DEFAULT 4
/* Running plus queued builds a builder holds at most; more are refused. */
#define BLD_MAX_HELD 64

/* engine and contexts (streamed build contexts) are borrowed.  At most
 * max_builds builds run at once (bld_builds_configure); the rest queue. */
/* data_dir: where secrets sent with a Build are held while it runs
 * (data_dir/sandbox/secrets-XXXXXX; leftovers of a killed builder are
 * removed here). */
int bld_builds_new(bld_builds **out, const char *data_dir, bld_engine *engine,
                   bld_contexts *contexts, kiln_error **err);
/* Resource limits of builds: each is the default for a build that does not
 * set its own and the most a build may ask for (0 = none, and then a build
 * may set any).  A build asking for more is refused when accepted. */
typedef struct bld_build_limits {
    uint64_t run_memory_bytes; /* each RUN's memory (swap included) */
    uint64_t run_pids;         /* each RUN's processes and threads */
    uint64_t run_timeout_ms;   /* each RUN's wall-clock time */
    uint64_t build_timeout_ms; /* the whole build's wall-clock time */
} bld_build_limits;
/* Sets the limits (none until called); call before serving. */
void bld_builds_set_limits(bld_builds *b, const bld_build_limits *l);

/* Where build events go (the service's publisher); call before serving. */
void bld_builds_attach(bld_builds *b, kiln_events *events);
/* Validates a BuildRequest, starts its job and fills JobAccepted. */
int bld_builds_accept(bld_builds *b, const kiln_req *req, kiln_reply *reply, kiln_arena *a,
                      kiln_error **err);
/* Asks a running build to stop; *was_running tells whether it was found. */
int bld_builds_cancel(bld_builds *b, const char *job_id, bool *was_running, kiln_error **err);
/* The node's name (for error texts) and its capacity; call before serving. */
void bld_builds_configure(bld_builds *b, const char *node_name, int max_builds);
/* Current load: builds running, queued for a slot, and the capacity. */
void bld_builds_load(bld_builds *b, unsigned *n_running, unsigned *n_queued, unsigned *max);
/* Drain on shutdown: refuses new builds and fails queued ones (KILN_EUNAVAIL,
 * "draining"), lets running builds finish for up to grace_ms, then cancels
 * the rest and waits for them to end. */
void bld_builds_drain(bld_builds *b, int grace_ms);
/* Cancels every running build now (a second SIGTERM during the drain). */
void bld_builds_cancel_all(bld_builds *b);
void bld_builds_free(bld_builds *b);
void bld_builds_metrics(bld_builds *b, kiln_buf *out);

#endif
