/* A pool of kiln-builder nodes: expansion of --builder, probing, rendezvous
 * placement with bounded load, failover (see pool.h). */
#include "pool.h"
#include "config.h"
#include "units.h"

#include <ctype.h>
#include <limits.h>
#include <netdb.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <arpa/inet.h>
#include <netinet/in.h>

/* A node's Status must answer within this (or the RPC timeout if shorter). */
#define PROBE_TIMEOUT_MS 3000

/* ---- pure logic ---- */

static uint64_t mix64(uint64_t x)
{
    /* splitmix64's finalizer: FNV-1a alone clusters on similar names. */
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    x ^= x >> 31;
    return x;
}

uint64_t cli_pool_score(const char *key, const char *node)
{
    uint64_t h = 0xcbf29ce484222325ULL;
    for (const unsigned char *p = (const unsigned char *)key; *p; p++)
        h = (h ^ *p) * 0x100000001b3ULL;
    h = (h ^ 0xff) * 0x100000001b3ULL; /* separator no name or key contains */
    for (const unsigned char *p = (const unsigned char *)node; *p; p++)
        h = (h ^ *p) * 0x100000001b3ULL;
    return mix64(h);
}

void cli_pool_rank(const cli_pool_node *nodes, size_t n, const char *key, size_t *order)
{
    uint64_t score[CLI_POOL_MAX];
    for (size_t i = 0; i < n && i < CLI_POOL_MAX; i++) {
        score[i] = cli_pool_score(key, nodes[i].name);
        order[i] = i;
    }
    /* insertion sort: n is small */
    for (size_t i = 1; i < n && i < CLI_POOL_MAX; i++) {
        size_t v = order[i], j = i;
        while (j > 0 && (score[order[j - 1]] < score[v] ||
                         (score[order[j - 1]] == score[v] &&
                          strcmp(nodes[order[j - 1]].name, nodes[v].name) > 0))) {
            order[j] = order[j - 1];
            j--;
        }
        order[j] = v;
    }
}

bool cli_pool_eligible(const cli_pool_node *node, const char *platform)
{
    if (!node->reachable || !node->ready || node->draining)
        return false;
    if (platform == NULL || *platform == '\0')
        return true;
    /* A multi-platform build ("linux/amd64,linux/arm64") needs every one. */
    for (const char *want = platform; *want;) {
        size_t len = strcspn(want, ",");
        bool found = false;
        for (const char *p = node->platforms; !found && (p = strstr(p, want)) != NULL; p++)
            found = (p == node->platforms || p[-1] == ',') && (p[len] == ',' || p[len] == '\0') &&
                    strncmp(p, want, len) == 0;
        if (!found)
            return false;
        want += len + (want[len] == ',');
    }
    return true;
}

static unsigned load_of(const cli_pool_node *n)
{
    return n->running + n->queued;
}

int cli_pool_choose(const cli_pool_node *nodes, size_t n, const size_t *order, const bool *skip,
                    const char *platform, char *why, size_t cap)
{
    unsigned total = 0, count = 0;
    for (size_t i = 0; i < n; i++)
        if ((skip == NULL || !skip[i]) && cli_pool_eligible(&nodes[i], platform)) {
            total += load_of(&nodes[i]);
            count++;
        }
    if (count == 0) {
        snprintf(why, cap, "no ready node%s%s", platform && *platform ? " builds " : "",
                 platform && *platform ? platform : "");
        return -1;
    }
    /* Consistent hashing with bounded loads: with this build placed, no node
     * may carry more than the bound times the mean. */
    unsigned den = CLI_POOL_LOAD_DEN * count;
    unsigned bound = (CLI_POOL_LOAD_NUM * (total + 1) + den - 1) / den; /* ceil */
    char passed[1024] = "";
    int first = -1;
    for (size_t k = 0; k < n; k++) {
        size_t i = order[k];
        if ((skip && skip[i]) || !cli_pool_eligible(&nodes[i], platform))
            continue;
        if (first < 0)
            first = (int)i;
        unsigned l = load_of(&nodes[i]);
        const char *reason = NULL;
        char r[320];
        if (nodes[i].capacity && l >= nodes[i].capacity) {
            snprintf(r, sizeof(r), "%.127s at capacity (%u/%u)", nodes[i].name, l,
                     nodes[i].capacity);
            reason = r;
        } else if (l + 1 > bound) {
            snprintf(r, sizeof(r), "%.127s above %.2fx the pool's mean load (%u)", nodes[i].name,
                     (double)CLI_POOL_LOAD_NUM / CLI_POOL_LOAD_DEN, l);
            reason = r;
        }
        if (reason == NULL) {
            if (passed[0])
                snprintf(why, cap, "load: %.700s", passed);
            else
                snprintf(why, cap, "affinity");
            return (int)i;
        }
        size_t used = strlen(passed);
        snprintf(passed + used, sizeof(passed) - used, "%s%s", used ? ", " : "", reason);
    }
    snprintf(why, cap, "affinity; every node is busy, queued (%.700s)", passed);
    return first;
}

void cli_pool_default_key(char *out, size_t cap, const char *tag, const char *dockerfile,
                          const char *context_dir)
{
    char repo[512] = "";
    if (tag && *tag) {
        snprintf(repo, sizeof(repo), "%s", tag);
        char *at = strchr(repo, '@');
        if (at)
            *at = '\0';
        char *slash = strrchr(repo, '/'), *colon = strrchr(repo, ':');
        if (colon && (slash == NULL || colon > slash))
            *colon = '\0';
    } else if (context_dir && *context_dir) {
        const char *base = strrchr(context_dir, '/');
        snprintf(repo, sizeof(repo), "context:%s", base && base[1] ? base + 1 : context_dir);
    }
    const char *df = dockerfile && *dockerfile ? dockerfile : "Dockerfile";
    size_t cl = context_dir ? strlen(context_dir) : 0;
    if (cl && strncmp(df, context_dir, cl) == 0 && df[cl] == '/')
        df += cl + 1;
    snprintf(out, cap, "%s\n%s", repo, df);
}

bool cli_pool_is_list(const char *spec)
{
    return spec && strchr(spec, ',') != NULL;
}

/* The i-th comma-separated element of spec, trimmed, into out. */
static bool list_item(const char *spec, size_t i, char *out, size_t cap)
{
    const char *p = spec;
    for (size_t k = 0; k < i; k++) {
        p = strchr(p, ',');
        if (p == NULL)
            return false;
        p++;
    }
    while (isspace((unsigned char)*p))
        p++;
    size_t len = strcspn(p, ",");
    while (len && isspace((unsigned char)p[len - 1]))
        len--;
    snprintf(out, cap, "%.*s", (int)(len < cap ? len : cap - 1), p);
    return true;
}

int cli_pool_check(const char *spec, kiln_error **err)
{
    if (!cli_pool_is_list(spec))
        return kiln_url_check(spec, NULL, NULL, err);
    char item[300];
    size_t i = 0;
    for (; list_item(spec, i, item, sizeof(item)); i++) {
        if (i == CLI_POOL_MAX)
            return kiln_error_set(err, KILN_EINVAL, 0, "a pool has at most %d endpoints",
                                  CLI_POOL_MAX);
        if (kiln_url_check(item, NULL, NULL, err) < 0)
            return kiln_error_wrap(err, "pool endpoint %zu", i + 1);
    }
    return 0;
}

/* ---- expansion ---- */

/* For scheme://host:port with a host name (not an address): its parts. */
static bool split_named(const char *url, char *scheme, size_t scap, char *host, size_t hcap,
                        char *port, size_t pcap)
{
    const char *sep = strstr(url, "://");
    if (sep == NULL || strncmp(url, "ipc", 3) == 0)
        return false;
    const char *h = sep + 3, *colon = strrchr(h, ':');
    if (colon == NULL || *h == '[' || colon == h)
        return false;
    snprintf(scheme, scap, "%.*s", (int)(sep - url), url);
    snprintf(host, hcap, "%.*s", (int)(colon - h), h);
    snprintf(port, pcap, "%s", colon + 1);
    struct in_addr a4;
    return inet_pton(AF_INET, host, &a4) != 1 && strcmp(host, "localhost") != 0;
}

typedef struct pool_spec {
    char urls[CLI_POOL_MAX][300];
    size_t n;
    char dns_name[256]; /* the name the addresses came from, or "" */
} pool_spec;

/* Expands ctx's builder endpoint; false (n = 1, the endpoint as is) for a
 * single builder. */
static bool expand(const char *spec, pool_spec *out)
{
    memset(out, 0, sizeof(*out));
    if (cli_pool_is_list(spec)) {
        while (out->n < CLI_POOL_MAX &&
               list_item(spec, out->n, out->urls[out->n], sizeof(out->urls[0])))
            out->n++;
        return true;
    }
    snprintf(out->urls[0], sizeof(out->urls[0]), "%s", spec);
    out->n = 1;
    char scheme[16], host[256], port[16];
    if (!split_named(spec, scheme, sizeof(scheme), host, sizeof(host), port, sizeof(port)))
        return false;
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    struct addrinfo *res = NULL;
    if (getaddrinfo(host, port, &hints, &res) != 0)
        return false;
    size_t n = 0;
    for (struct addrinfo *ai = res; ai && n < CLI_POOL_MAX; ai = ai->ai_next) {
        char a[INET6_ADDRSTRLEN] = "", u[300];
        if (ai->ai_family == AF_INET)
            inet_ntop(AF_INET, &((struct sockaddr_in *)ai->ai_addr)->sin_addr, a, sizeof(a));
        else if (ai->ai_family == AF_INET6)
            inet_ntop(AF_INET6, &((struct sockaddr_in6 *)ai->ai_addr)->sin6_addr, a, sizeof(a));
        else
            continue;
        snprintf(u, sizeof(u), ai->ai_family == AF_INET6 ? "%s://[%s]:%s" : "%s://%s:%s", scheme, a,
                 port);
        bool dup = false;
        for (size_t k = 0; k < n && !dup; k++)
            dup = strcmp(out->urls[k], u) == 0;
        if (!dup)
            snprintf(out->urls[n++], sizeof(out->urls[0]), "%s", u);
    }
    freeaddrinfo(res);
    if (n < 2) {
        /* One address: a single builder, dialled by name as before. */
        snprintf(out->urls[0], sizeof(out->urls[0]), "%s", spec);
        out->n = 1;
        return false;
    }
    out->n = n;
    snprintf(out->dns_name, sizeof(out->dns_name), "%s", host);
    return true;
}

/* ---- probing ---- */

typedef struct probe_arg {
    cli_pool_node *node;
    const kiln_transport_opts *t;
    int timeout_ms;
} probe_arg;

static void fill_node(cli_pool_node *nd, const Kiln__V1__StatusReply *r)
{
    nd->reachable = true;
    nd->draining = r->draining;
    nd->ready = !r->draining;
    for (size_t i = 0; i < r->n_checks; i++)
        if (!r->checks[i]->ok) {
            nd->ready = false;
            snprintf(nd->detail, sizeof(nd->detail), "%.60s: %.180s", r->checks[i]->name,
                     r->checks[i]->detail);
        }
    if (r->draining)
        snprintf(nd->detail, sizeof(nd->detail), "draining");
    if (r->node_name && *r->node_name)
        snprintf(nd->name, sizeof(nd->name), "%.127s", r->node_name);
    nd->running = r->builds_running;
    nd->queued = r->builds_queued;
    nd->capacity = r->max_builds;
    nd->cache_bytes = r->cache_bytes;
    nd->platforms[0] = '\0';
    for (size_t i = 0; i < r->n_platforms; i++) {
        size_t used = strlen(nd->platforms);
        snprintf(nd->platforms + used, sizeof(nd->platforms) - used, "%s%s", i ? "," : "",
                 r->platforms[i]);
    }
}

static void *probe_main(void *p)
{
    probe_arg *a = p;
    cli_pool_node *nd = a->node;
    nd->reachable = nd->ready = nd->draining = false;
    nd->detail[0] = '\0';
    if (nd->name[0] == '\0') /* a node keeps the name it had when it answered */
        snprintf(nd->name, sizeof(nd->name), "%.127s", nd->url);
    kiln_rpc_client *c = NULL;
    kiln_error *err = NULL;
    kiln_reply *rep = NULL;
    kiln_req req = KILN__V1__REQUEST__INIT;
    Kiln__V1__StatusRequest sr = KILN__V1__STATUS_REQUEST__INIT;
    req.body_case = KILN__V1__REQUEST__BODY_STATUS;
    req.status = &sr;
    if (kiln_rpc_client_new(&c, nd->url, a->t, true, &err) == 0 &&
        kiln_rpc_call(c, &req, &rep, a->timeout_ms, &err) == 0)
        fill_node(nd, rep->status_reply);
    else
        snprintf(nd->detail, sizeof(nd->detail), "%.250s", err ? err->msg : "no reply");
    kiln_rpc_reply_free(rep);
    kiln_rpc_client_free(c);
    kiln_error_free(&err);
    return NULL;
}

/* Status of every node at once (a dead node costs one timeout, not n). */
static void probe(cli_pool_node *nodes, size_t n, const kiln_transport_opts *t, int timeout_ms)
{
    probe_arg args[CLI_POOL_MAX];
    pthread_t th[CLI_POOL_MAX];
    bool started[CLI_POOL_MAX];
    int to = timeout_ms < PROBE_TIMEOUT_MS ? timeout_ms : PROBE_TIMEOUT_MS;
    for (size_t i = 0; i < n; i++) {
        args[i] = (probe_arg){&nodes[i], t, to};
        started[i] = pthread_create(&th[i], NULL, probe_main, &args[i]) == 0;
        if (!started[i])
            probe_main(&args[i]);
    }
    for (size_t i = 0; i < n; i++)
        if (started[i])
            pthread_join(th[i], NULL);
}

/* One node reached at several addresses (a name with both an A and an AAAA
 * record) is one node: later entries with the name of a node that answered
 * are dropped. */
static void dedupe(cli_pool_node *nodes, size_t *n)
{
    size_t out = 0;
    for (size_t i = 0; i < *n; i++) {
        bool dup = false;
        for (size_t k = 0; k < out && !dup; k++)
            dup = nodes[k].reachable && nodes[i].reachable &&
                  strcmp(nodes[k].name, nodes[i].name) == 0;
        if (!dup)
            nodes[out++] = nodes[i];
    }
    *n = out;
}

/* ---- the build's placement and failover ---- */

static struct {
    bool active, quiet;
    cli_pool_node nodes[CLI_POOL_MAX];
    size_t n, order[CLI_POOL_MAX];
    bool tried[CLI_POOL_MAX];
    int cur;
    char key[1024], platform[64], dns_name[256];
    char *saved_url;
    const char *saved_sni;
    unsigned long long placed_ms;
} P;

static int probe_timeout(const cli_ctx *ctx)
{
    return ctx->timeout_ms > 0 ? ctx->timeout_ms : PROBE_TIMEOUT_MS;
}

static void point_at(cli_ctx *ctx, int i)
{
    P.cur = i;
    P.tried[i] = true;
    ctx->url[CLI_BUILDER] = P.nodes[i].url;
    P.placed_ms = kiln_now_ms();
}

int cli_pool_place(cli_ctx *ctx, const char *affinity, const char *tag, const char *dockerfile,
                   const char *context_dir, const char *platform, const char *progress)
{
    pool_spec *spec = calloc(1, sizeof(*spec));
    if (spec == NULL)
        return CLI_EXIT_FAILED;
    if (!expand(ctx->url[CLI_BUILDER], spec)) {
        free(spec);
        return CLI_EXIT_OK; /* a single builder */
    }
    cli_pool_done(ctx);
    memset(&P, 0, sizeof(P));
    P.active = true;
    P.quiet = progress && strcmp(progress, "quiet") == 0;
    P.saved_url = ctx->url[CLI_BUILDER];
    P.saved_sni = ctx->transport.tls.server_name;
    snprintf(P.dns_name, sizeof(P.dns_name), "%s", spec->dns_name);
    /* Nodes found by address still carry the pool name's certificate. */
    if (ctx->transport.tls.server_name == NULL && P.dns_name[0])
        ctx->transport.tls.server_name = P.dns_name;
    P.n = spec->n;
    for (size_t i = 0; i < P.n; i++)
        snprintf(P.nodes[i].url, sizeof(P.nodes[i].url), "%s", spec->urls[i]);
    free(spec);
    char dfreal[PATH_MAX];
    if (dockerfile && strcmp(dockerfile, "-") != 0 && realpath(dockerfile, dfreal) != NULL)
        dockerfile = dfreal;
    if (affinity && *affinity)
        snprintf(P.key, sizeof(P.key), "%s", affinity);
    else
        cli_pool_default_key(P.key, sizeof(P.key), tag, dockerfile, context_dir);
    snprintf(P.platform, sizeof(P.platform), "%s", platform ? platform : "");
    probe(P.nodes, P.n, &ctx->transport, probe_timeout(ctx));
    dedupe(P.nodes, &P.n);
    cli_pool_rank(P.nodes, P.n, P.key, P.order);
    char why[768];
    int i = cli_pool_choose(P.nodes, P.n, P.order, NULL, P.platform, why, sizeof(why));
    if (i < 0) {
        cli_errorf("build: no node of the pool can take the build: %s", why);
        for (size_t k = 0; k < P.n; k++)
            if (!cli_pool_eligible(&P.nodes[k], P.platform))
                fprintf(stderr, "  %s (%s): %s\n", P.nodes[k].name, P.nodes[k].url,
                        P.nodes[k].detail[0] ? P.nodes[k].detail : "does not build the platform");
        cli_pool_done(ctx);
        return CLI_EXIT_UNREACHABLE;
    }
    point_at(ctx, i);
    if (!P.quiet)
        fprintf(stderr, "=> on %s (%s)\n", P.nodes[i].name, why);
    return CLI_EXIT_OK;
}

bool cli_pool_failover(cli_ctx *ctx, int rc)
{
    if (!P.active || rc == CLI_EXIT_OK || rc == CLI_EXIT_USAGE)
        return false;
    /* Was it the node?  A node that answers, ready, failed the build itself. */
    cli_pool_node now = P.nodes[P.cur];
    probe(&now, 1, &ctx->transport, probe_timeout(ctx));
    if (now.reachable && now.ready && !now.draining)
        return false;
    char lost[sizeof(P.nodes[0].name)];
    snprintf(lost, sizeof(lost), "%s", P.nodes[P.cur].name);
    double secs = (double)(kiln_now_ms() - P.placed_ms) / 1000.0;
    char state[300];
    snprintf(state, sizeof(state), "%s", now.reachable ? now.detail : "unreachable");
    probe(P.nodes, P.n, &ctx->transport, probe_timeout(ctx));
    char why[768];
    int i = cli_pool_choose(P.nodes, P.n, P.order, P.tried, P.platform, why, sizeof(why));
    if (i < 0) {
        cli_errorf("build: %s lost after %.0f s (%s) and no other node can take it: %s", lost, secs,
                   state, why);
        return false;
    }
    if (!P.quiet)
        fprintf(stderr, "=> %s lost after %.0f s (%s), continuing on %s (%s)\n", lost, secs, state,
                P.nodes[i].name, why);
    point_at(ctx, i);
    return true;
}

int cli_pool_resend(cli_ctx *ctx, cli_context *cc, const char *progress, Kiln__V1__BuildRequest *br)
{
    if (cc == NULL)
        return CLI_EXIT_OK;
    cli_progress mode =
        progress && (strcmp(progress, "quiet") == 0 || strcmp(progress, "json") == 0)
            ? CLI_PROGRESS_QUIET
            : CLI_PROGRESS_PLAIN;
    int rc = cli_context_send(ctx, cc, mode);
    br->context_chunks = cc->pb_ptrs;
    return rc;
}

void cli_pool_done(cli_ctx *ctx)
{
    if (!P.active)
        return;
    ctx->url[CLI_BUILDER] = P.saved_url;
    ctx->transport.tls.server_name = P.saved_sni;
    P.active = false;
}

bool cli_pool_probe_all(cli_ctx *ctx, cli_pool_node *nodes, size_t cap, size_t *n)
{
    *n = 0;
    pool_spec *spec = calloc(1, sizeof(*spec));
    if (spec == NULL || !expand(ctx->url[CLI_BUILDER], spec)) {
        free(spec);
        return false;
    }
    /* Nodes found by address carry the pool name's certificate: later calls
     * of the caller (kiln events) dial them too. */
    static char sni[256];
    if (ctx->transport.tls.server_name == NULL && spec->dns_name[0]) {
        snprintf(sni, sizeof(sni), "%s", spec->dns_name);
        ctx->transport.tls.server_name = sni;
    }
    kiln_transport_opts t = ctx->transport;
    for (size_t i = 0; i < spec->n && i < cap; i++) {
        memset(&nodes[i], 0, sizeof(nodes[i]));
        snprintf(nodes[i].url, sizeof(nodes[i].url), "%s", spec->urls[i]);
        (*n)++;
    }
    probe(nodes, *n, &t, probe_timeout(ctx));
    dedupe(nodes, n);
    free(spec);
    return true;
}
