/* A pool of kiln-builder nodes behind one client (SPEC §6, farm).
 *
 * --builder / KILN_BUILDER names a pool when it is a comma-separated list of
 * endpoints, or one tcp:// / tls+tcp:// endpoint whose host name resolves to
 * several addresses (a headless Service: every A/AAAA record is a node,
 * resolved again for every build).  Anything else is a single builder and the
 * CLI behaves exactly as without this module.
 *
 * Placement: the nodes that answer Status, are ready, not draining and build
 * the requested platform are ranked by rendezvous (highest-random-weight)
 * hashing of an affinity key with the node's name, so a project's builds land
 * where its cache is and adding or removing a node moves only about 1/N of the
 * keys.  Bounded load: a node at capacity (running + queued >= max_builds) or
 * above 1.25 x the pool's mean load (this build counted) is passed over for
 * the next in hash order.  Failover: a node that cannot take the build, or is
 * lost during it (RPC errors and Status failing or draining), hands it to the
 * next node in hash order.
 *
 * The pure parts (scores, ranking, choice, spec parsing) are separate from the
 * network parts for the unit test (tests/unit/test_pool.c). */
#ifndef CLI_POOL_H
#define CLI_POOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cli.h"

#define CLI_POOL_MAX 64
/* A node whose load (this build counted) exceeds NUM/DEN = 1.25 times the
 * pool's mean is passed over. */
#define CLI_POOL_LOAD_NUM 5u
#define CLI_POOL_LOAD_DEN 4u

typedef struct cli_pool_node {
    char url[300];  /* the endpoint dialled */
    char name[128]; /* Status node_name; the URL when the node has none */
    bool reachable, ready, draining;
    unsigned running, queued, capacity; /* capacity 0: unknown (no bound) */
    char platforms[512];                /* comma-separated, as Status lists them */
    uint64_t cache_bytes;
    char detail[256]; /* why a node is down or not ready */
} cli_pool_node;

/* ---- pure logic ---- */

/* The rendezvous score of node for key (64-bit, well mixed). */
uint64_t cli_pool_score(const char *key, const char *node);
/* order[0..n) = node indexes by descending score for key (ties: by name). */
void cli_pool_rank(const cli_pool_node *nodes, size_t n, const char *key, size_t *order);
/* Whether a node takes builds for platform ("" or NULL: any; a comma-separated
 * list: every one of them). */
bool cli_pool_eligible(const cli_pool_node *node, const char *platform);
/* The node for the next attempt: the first in order that is eligible, not
 * skipped (skip may be NULL), under capacity and within the load bound; if
 * every candidate is busy, the first eligible one (the build queues there).
 * Writes why it was chosen ("affinity", or which nodes were passed over and
 * why) to why.  Returns its index, or -1 when no node is eligible. */
int cli_pool_choose(const cli_pool_node *nodes, size_t n, const size_t *order, const bool *skip,
                    const char *platform, char *why, size_t cap);
/* The default affinity key: the repository of the first tag (without :tag or
 * @digest; "" when untagged: then the context directory's name) and the
 * Dockerfile's path relative to the context. */
void cli_pool_default_key(char *out, size_t cap, const char *tag, const char *dockerfile,
                          const char *context_dir);
/* Whether spec is a comma-separated list (more than one endpoint). */
bool cli_pool_is_list(const char *spec);
/* Validates a --builder value: one endpoint or a comma-separated list. */
int cli_pool_check(const char *spec, kiln_error **err);

/* ---- the build command's hooks ---- */

/* Before the context is sent: if ctx's builder is a pool, probes every node,
 * chooses one for this build, points ctx->url[CLI_BUILDER] at it and says so
 * on stderr ("on kiln-1 (affinity)").  affinity NULL: the default key.  A
 * single builder is left alone.  Returns a CLI exit code. */
int cli_pool_place(cli_ctx *ctx, const char *affinity, const char *tag, const char *dockerfile,
                   const char *context_dir, const char *platform, const char *progress);
/* After an attempt ended with exit code rc: true when the build should run
 * again on another node (ctx then points at it, and the reason was printed):
 * the node was unreachable, lost or draining.  False for a single builder, a
 * success, or a failure of the build itself. */
bool cli_pool_failover(cli_ctx *ctx, int rc);
/* Before the next attempt: sends the streamed context cc (NULL: the build
 * names a local path) to the node ctx now points at and updates br's chunk
 * list.  Returns a CLI exit code. */
int cli_pool_resend(cli_ctx *ctx, cli_context *cc, const char *progress,
                    Kiln__V1__BuildRequest *br);
/* Restores ctx and frees the pool state (any time; idempotent). */
void cli_pool_done(cli_ctx *ctx);

/* ---- kiln status ---- */

/* Probes every node of ctx's builder pool into nodes (at most cap); *n = 0
 * and false when the builder is a single endpoint.  Returns true for a pool.
 * For a pool found by name, ctx's TLS server name becomes that name (unless
 * --tls-server-name gave one), as for the nodes' later calls. */
bool cli_pool_probe_all(cli_ctx *ctx, cli_pool_node *nodes, size_t cap, size_t *n);

#endif
