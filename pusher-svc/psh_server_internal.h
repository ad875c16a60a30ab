/* Internals shared by the files of kiln-pusher's RPC layer (psh_server.c:
 * store methods and jobs; psh_server_registry.c: registry methods). */
#ifndef PSH_SERVER_INTERNAL_H
#define PSH_SERVER_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

#include "chunkstore.h"
#include "jobs.h"
#include "psh_commit.h"
#include "psh_registry.h"
#include "psh_server.h"
#include "psh_store.h"
#include "psh_transfer.h"

struct psh_server {
    const kiln_service_opts *o;
    kiln_service *svc; /* set once by psh_server_attach, read with acquire */
    psh_store *store;
    kiln_jobs *jobs;

    psh_pack_cache *pack_cache; /* step generation id + path + settings -> packed layer */
    kiln_rpc_method *methods;   /* store + registry + transfer methods */
    kiln_chunkstore *chunks;    /* streamed import sources (psh_server_transfer.c) */
    char *transfer_dir;         /* $DATA/transfer */
    size_t n_methods;
    atomic_int cancel; /* set at shutdown: registry transfers stop between chunks */

    pthread_mutex_t mu;   /* the list of jobs and the counters below */
    struct job_ctx *live; /* jobs accepted and not yet freed (Cancel finds them here) */
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
    bool local;    /* it came over ipc:// (kiln_rpc_request_is_local at accept) */
    unsigned long long t0;
    unsigned long long layer_t0;
    atomic_int cancel;    /* set by Cancel and at shutdown; registry transfers poll it */
    struct job_ctx *next; /* in p->live */
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

/* Checks a path a client names on our host (what: "import source", ...):
 * refused altogether from remote clients (local: the request came over an
 * ipc:// connection, kiln_rpc_request_is_local in its handler);
 * from local ones it must be absolute and neither inside Kiln's data dir nor,
 * unless create (a target to write), hold it.  For create only the parent
 * must exist. */
int psh_srv_host_path(psh_server *p, bool local, const char *what, const char *path, bool create,
                      kiln_error **err);

/* Parses "os/arch[/variant]", normalised (common/platform.h), into pieces
 * stored in buf; "" or NULL: the host. */
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

/* Streamed imports and exports (psh_server_transfer.c). */
extern const kiln_rpc_method psh_transfer_methods[];
extern const size_t psh_n_transfer_methods;
/* Opens $DATA/transfer and removes what a killed pusher left there. */
int psh_srv_transfer_open(psh_server *p, kiln_error **err);
void psh_srv_transfer_close(psh_server *p);
/* Removes every unused import chunk, temp entry and export; returns how many. */
uint64_t psh_srv_transfer_prune(psh_server *p);
/* Checks a streamed ImportRequest: a valid chunk list, every chunk here. */
int psh_srv_import_stream_check(psh_server *p, const Kiln__V1__ImportRequest *q, kiln_error **err);
/* Imports the streamed source of q (a job's request) with o; its chunks are
 * removed once it is imported. */
int psh_srv_import_stream(psh_server *p, const Kiln__V1__ImportRequest *q, const psh_import_opts *o,
                          psh_descriptor *d, kiln_error **err);
/* Writes ref as an oci-archive under $DATA/transfer for ExportRead and fills
 * b's stream fields (strings from a). */
int psh_srv_export_stream(psh_server *p, const char *ref, Kiln__V1__ExportReply *b, kiln_arena *a,
                          kiln_error **err);
/* Cancel: sets the job's cancel flag (*was_running false when no such job
 * is running). */
int psh_srv_cancel_job(psh_server *p, const char *job_id, bool *was_running, kiln_error **err);

/* Registry methods (psh_server_registry.c). */
extern const kiln_rpc_method psh_registry_methods[];
extern const size_t psh_n_registry_methods;
/* Registry options from a request (strings borrowed from it): credentials
 * are what the request carries, never our own environment's; host paths
 * only for local clients. */
int psh_srv_reg_opts(psh_server *p, bool local, const Kiln__V1__RegistryOptions *r,
                     psh_registry_opts *o, kiln_error **err);
/* The same for a job: transfers stop when the job is cancelled. */
int psh_srv_job_reg_opts(job_ctx *c, const Kiln__V1__RegistryOptions *r, psh_registry_opts *o,
                         kiln_error **err);
/* Blob and manifest events of a registry job. */
psh_reg_events psh_srv_job_events(job_ctx *c);

/* Commit (q, its pack cache keys and settings): a layer named by the
 * builder's $DATA/snapshots/lazy-layer is a step imported from a cache and
 * never unpacked; its bound blob must be in the pack cache and the store
 * (pinned in pin for the commit) -- the empty dir is never packed. */
int psh_srv_cache_check_lazy(psh_server *p, const Kiln__V1__CommitRequest *q,
                             const char *const *keys, const psh_pack_opts *opts, psh_store_pin *pin,
                             kiln_error **err);
/* Step cache methods (psh_server_cache.c): CacheExport, CacheImport, CacheBind. */
extern const kiln_rpc_method psh_cache_methods[];
extern const size_t psh_n_cache_methods;

#endif
