/* Internals shared by the files of kiln-pusher's RPC layer (psh_server.c:
 * store methods and jobs; psh_server_registry.c: registry methods). */
#ifndef PSH_SERVER_INT_H
#define PSH_SERVER_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <sys/utsname.h>

#include "jobs.h"
#include "psh_commit.h"
#include "psh_server.h"
#include "psh_store.h"

struct psh_server {
    const kiln_service_opts *o;
    kiln_service *svc;
    psh_store *store;
    kiln_jobs *jobs;
    char host_arch[sizeof(((struct utsname *)0)->machine)];

    psh_pack_cache *pack_cache; /* step diff path + settings -> packed layer */
    kiln_rpc_method *methods;   /* store + registry methods */
    size_t n_methods;
    atomic_int cancel; /* set at shutdown: registry transfers stop between chunks */

    pthread_mutex_t mu; /* counters below */
    uint64_t layers_packed, bytes_packed_in, bytes_packed_out, commits, imports;
    uint64_t pushes, pulls, blobs_uploaded, blobs_skipped, blobs_mounted, retries;
    uint64_t bytes_pushed, bytes_pulled;
    uint64_t bytes_push_resumed, bytes_pull_resumed; /* not sent / not fetched again */
};

/* A job's state; the job thread owns it and frees it with psh_srv_job_free(). */
typedef struct job_ctx {
    psh_server *p;
    kiln_job *job;
    kiln_req *req; /* owned copy of the request */
    unsigned long long t0;
    unsigned long long layer_t0;
    bool local; /* requested over ipc://: the client shares our filesystem */
} job_ctx;

static inline bool str_set(const char *s)
{
    return s != NULL && *s != '\0';
}

/* Allocates a reply body of type from the arena and runs its init function. */
#define NEW_BODY(arena, type, init)                                                                \
    ({                                                                                             \
        type *b_ = kiln_arena_alloc((arena), sizeof(type));                                        \
        if (b_)                                                                                    \
            init(b_);                                                                              \
        b_;                                                                                        \
    })

/* Splits "os/arch[/variant]" into pieces stored in buf; "" or NULL: the host. */
int psh_srv_parse_platform(psh_server *p, const char *s, char *buf, size_t cap, psh_platform *out,
                           kiln_error **err);

/* Starts a "push.<job>" job of the given kind for req (copied), replies
 * JobAccepted and runs fn(job_ctx *) on the job runner. */
int psh_srv_accept_job(psh_server *p, const kiln_req *req, const char *kind, const char *desc,
                       kiln_job_fn fn, kiln_reply *reply, kiln_arena *a, kiln_error **err);
/* Emits failed(*err) (and frees *err); the job still needs psh_srv_job_free(). */
void psh_srv_job_failed(job_ctx *c, kiln_error **err, const char *what);
/* Releases the job (failed(INTERNAL) if it has no terminal event) and c. */
void psh_srv_job_free(job_ctx *c);

/* Registry methods (psh_server_registry.c). */
extern const kiln_rpc_method psh_registry_methods[];
extern const size_t psh_n_registry_methods;

#endif
