/* kiln status [--json]: health of both services. */
#include "cli.h"
#include "pool.h"

#include <getopt.h>
#include <stdlib.h>
#include <string.h>

static kiln_reply *status_of(cli_ctx *ctx, cli_service s, kiln_error **err)
{
    kiln_rpc_client *c = NULL;
    if (kiln_rpc_client_new(&c, ctx->url[s], &ctx->transport, true, err) < 0)
        return NULL;
    kiln_req req = KILN__V1__REQUEST__INIT;
    Kiln__V1__StatusRequest sr = KILN__V1__STATUS_REQUEST__INIT;
    req.body_case = KILN__V1__REQUEST__BODY_STATUS;
    req.status = &sr;
    kiln_reply *rep = NULL;
    kiln_rpc_call(c, &req, &rep, ctx->timeout_ms, err);
    kiln_rpc_client_free(c);
    return rep;
}

/* The farm view of one service: node name, state, load, platforms, cache, and
 * the endpoints beyond the first. */
static void print_node(const Kiln__V1__StatusReply *r)
{
    printf("    node %s  %s  running %u  queued %u  capacity %u",
           *r->node_name ? r->node_name : "-", r->draining ? "DRAINING" : "serving",
           r->builds_running, r->builds_queued, r->max_builds);
    if (r->cache_bytes)
        printf("  cache %.1f MiB", (double)r->cache_bytes / (1024.0 * 1024.0));
    printf("\n");
    /* "linux/amd64, linux/arm64 (emulated), …": RUN for an emulated one goes
     * through QEMU user emulation (binfmt_misc). */
    for (size_t i = 0; i < r->n_platforms; i++) {
        bool emulated = false;
        for (size_t k = 0; k < r->n_emulated_platforms && !emulated; k++)
            emulated = strcmp(r->platforms[i], r->emulated_platforms[k]) == 0;
        printf("%s%s%s%s", i ? ", " : "    platforms: ", r->platforms[i],
               emulated ? " (emulated)" : "", i + 1 == r->n_platforms ? "\n" : "");
    }
    for (size_t i = 1; i < r->n_listen_urls; i++)
        printf("    also rpc %s\n", r->listen_urls[i]);
    for (size_t i = 1; i < r->n_events_urls; i++)
        printf("    also events %s\n", r->events_urls[i]);
}

static void print_human(cli_service s, const char *url, const kiln_reply *rep,
                        const kiln_error *err)
{
    if (rep == NULL) {
        printf("%-13s DOWN  %s\n", cli_service_name(s), url);
        printf("    %s\n", err ? err->msg : "no reply");
        return;
    }
    const Kiln__V1__StatusReply *r = rep->status_reply;
    unsigned long long up = r->uptime_ms / 1000;
    printf("%-13s UP    %s  version %s  pid %d  uptime %lluh%02llum%02llus  jobs %u  rpcs %llu\n",
           r->service, r->listen_url, r->version, r->pid, up / 3600, up / 60 % 60, up % 60,
           r->jobs_running, (unsigned long long)r->rpcs_served);
    printf("    events %s\n", r->events_url);
    print_node(r);
    for (size_t i = 0; i < r->n_checks; i++)
        printf("    %-10s %-4s %s\n", r->checks[i]->name, r->checks[i]->ok ? "ok" : "FAIL",
               r->checks[i]->detail);
}

/* The options of the verb, for its parser, completion and man page. */
const struct option cli_status_opts[] = {
    {"json", no_argument, NULL, 'j'}, {"help", no_argument, NULL, 'h'}, {NULL, 0, NULL, 0}};
/* kiln status with a pool of builders: one line (or JSON object) per node.
 * Returns the exit code for the builder side: 3 when no node answers, 1
 * when one is down, not ready or draining. */
static int pool_status(cli_pool_node *nodes, size_t n, cJSON *root)
{
    int rc = CLI_EXIT_OK;
    size_t up = 0;
    cJSON *arr = root ? cJSON_AddArrayToObject(root, "builders") : NULL;
    if (!root)
        printf("kiln-builder  pool of %zu node(s)\n", n);
    for (size_t i = 0; i < n; i++) {
        const cli_pool_node *nd = &nodes[i];
        up += nd->reachable;
        if (!nd->reachable || !nd->ready)
            rc = CLI_EXIT_FAILED;
        const char *state = !nd->reachable ? "DOWN"
                            : nd->draining ? "DRAINING"
                            : nd->ready    ? "ready"
                                           : "NOT-READY";
        if (arr) {
            cJSON *o = cJSON_CreateObject();
            cJSON_AddStringToObject(o, "node_name", nd->name);
            cJSON_AddStringToObject(o, "url", nd->url);
            cJSON_AddBoolToObject(o, "reachable", nd->reachable);
            cJSON_AddBoolToObject(o, "ready", nd->ready);
            cJSON_AddBoolToObject(o, "draining", nd->draining);
            cJSON_AddNumberToObject(o, "builds_running", nd->running);
            cJSON_AddNumberToObject(o, "builds_queued", nd->queued);
            cJSON_AddNumberToObject(o, "max_builds", nd->capacity);
            cJSON_AddStringToObject(o, "platforms", nd->platforms);
            cJSON_AddNumberToObject(o, "cache_bytes", (double)nd->cache_bytes);
            cJSON_AddStringToObject(o, "detail", nd->detail);
            cJSON_AddItemToArray(arr, o);
            continue;
        }
        printf("  %-16s %-9s %s", nd->name, state, nd->url);
        if (nd->reachable)
            printf("  load %u+%u/%u  platforms %s  cache %.1f MiB", nd->running, nd->queued,
                   nd->capacity, nd->platforms[0] ? nd->platforms : "-",
                   (double)nd->cache_bytes / (1024.0 * 1024.0));
        if (nd->detail[0] && (!nd->ready || !nd->reachable))
            printf("  (%s)", nd->detail);
        printf("\n");
    }
    return up == 0 ? CLI_EXIT_UNREACHABLE : rc;
}

int cli_cmd_status(cli_ctx *ctx, int argc, char **argv)
{
    bool json = false;
    int c;
    cli_getopt_reset();
    while ((c = getopt_long(argc, argv, "jh", cli_status_opts, NULL)) != -1) {
        switch (c) {
        case 'j':
            json = true;
            break;
        case 'h':
            printf("Usage: kiln status [--json]\n\n"
                   "Shows whether kiln-builder and kiln-pusher answer, their versions, endpoints,\n"
                   "node names, load and health checks.  With a pool of builders (--builder\n"
                   "URL,URL,... or a name with several addresses) lists every node: name,\n"
                   "endpoint, ready/draining, load, platforms, cache size.  Exits 3 if a\n"
                   "service (every node of a pool) is unreachable, 1 if one is unhealthy.\n");
            return CLI_EXIT_OK;
        default:
            cli_errorf("status: unknown option '%s'", argv[optind - 1]);
            return CLI_EXIT_USAGE;
        }
    }
    if (optind < argc) {
        cli_errorf("status: unexpected argument '%s'", argv[optind]);
        return CLI_EXIT_USAGE;
    }
    int rc = CLI_EXIT_OK;
    cJSON *root = json ? cJSON_CreateObject() : NULL;
    cli_pool_node *nodes = calloc(CLI_POOL_MAX, sizeof(*nodes));
    size_t n_nodes = 0;
    bool pool = nodes && cli_pool_probe_all(ctx, nodes, CLI_POOL_MAX, &n_nodes);
    if (pool)
        rc = pool_status(nodes, n_nodes, root);
    free(nodes);
    for (int s = pool ? 1 : 0; s < 2; s++) {
        kiln_error *err = NULL;
        kiln_reply *rep = status_of(ctx, (cli_service)s, &err);
        if (rep == NULL) {
            int e = cli_exit_for(err);
            if (rc == CLI_EXIT_OK || e == CLI_EXIT_UNREACHABLE)
                rc = e;
        } else {
            for (size_t i = 0; i < rep->status_reply->n_checks; i++)
                if (!rep->status_reply->checks[i]->ok && rc == CLI_EXIT_OK)
                    rc = CLI_EXIT_FAILED;
        }
        if (json) {
            cJSON *o;
            if (rep) {
                o = cli_pb_to_json(&rep->status_reply->base);
                cJSON_AddBoolToObject(o, "reachable", 1);
            } else {
                o = cJSON_CreateObject();
                cJSON_AddBoolToObject(o, "reachable", 0);
                cJSON_AddStringToObject(o, "url", ctx->url[s]);
                cJSON_AddStringToObject(o, "error", err ? err->msg : "no reply");
                cJSON_AddStringToObject(o, "code", kiln_code_name(err ? err->code : KILN_EUNAVAIL));
            }
            cJSON_AddItemToObject(root, s == CLI_BUILDER ? "builder" : "pusher", o);
        } else {
            print_human((cli_service)s, ctx->url[s], rep, err);
        }
        kiln_rpc_reply_free(rep);
        kiln_error_free(&err);
    }
    if (json) {
        char *out = cJSON_Print(root);
        printf("%s\n", out);
        cJSON_free(out);
        cJSON_Delete(root);
    }
    return rc;
}
