/* kiln-builder: the Dockerfile build service (SPEC §10).
 * A thin main over the bld_core library so tests link what ships. */
#include "bld_build_job.h"
#include "bld_server.h"
#include "cleanup.h"
#include "config.h"
#include "units.h"
#include "log.h"
#include "service.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

enum {
    OPT_PUSHER = 2000,
    OPT_ENTITLEMENT,
    OPT_RUN_MEMORY,
    OPT_RUN_PIDS,
    OPT_RUN_TIMEOUT,
    OPT_BUILD_TIMEOUT,
    OPT_MAX_BUILDS,
};

static const struct option builder_opts[] = {
    {"pusher", required_argument, NULL, OPT_PUSHER},
    {"allow-insecure-entitlement", required_argument, NULL, OPT_ENTITLEMENT},
    {"run-memory", required_argument, NULL, OPT_RUN_MEMORY},
    {"run-pids", required_argument, NULL, OPT_RUN_PIDS},
    {"run-timeout", required_argument, NULL, OPT_RUN_TIMEOUT},
    {"build-timeout", required_argument, NULL, OPT_BUILD_TIMEOUT},
    {"max-builds", required_argument, NULL, OPT_MAX_BUILDS},
    {NULL, 0, NULL, 0},
};

typedef struct builder_flags {
    char *pusher;
    bool net_host; /* --allow-insecure-entitlement network.host */
    bld_build_limits limits;
    int max_builds;
} builder_flags;

/* Defaults: a RUN may use half of this host's memory, 4096 processes and an
 * hour; a build, three hours.  0 lifts a limit. */
static void default_limits(bld_build_limits *l)
{
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    l->run_memory_bytes = pages > 0 && page > 0 ? (uint64_t)pages * (uint64_t)page / 2 : 0;
    l->run_pids = 4096;
    l->run_timeout_ms = 3600 * 1000ULL;
    l->build_timeout_ms = 3 * 3600 * 1000ULL;
}

static int on_flag(void *ud, int val, const char *arg, kiln_error **err)
{
    builder_flags *f = ud;
    long long v;
    char *end = NULL;
    switch (val) {
    case OPT_PUSHER:
        free(f->pusher);
        f->pusher = strdup(arg);
        return 0;
    case OPT_MAX_BUILDS:
        v = strtoll(arg, &end, 10);
        if (*arg == '\0' || *end || v < 1 || v > BLD_MAX_HELD / 2)
            return kiln_error_set(err, KILN_EINVAL, 0, "--max-builds wants 1..%d, got '%s'",
                                  BLD_MAX_HELD / 2, arg);
        f->max_builds = (int)v;
        return 0;
    case OPT_ENTITLEMENT:
        if (strcmp(arg, "network.host") != 0)
            return kiln_error_set(err, KILN_EINVAL, 0,
                                  "--allow-insecure-entitlement: unknown entitlement '%s' "
                                  "(known: network.host)",
                                  arg);
        f->net_host = true;
        return 0;
    case OPT_RUN_MEMORY:
        if ((v = kiln_parse_size(arg)) < 0 || (v > 0 && v < (4 << 20)))
            return kiln_error_set(err, KILN_EINVAL, 0,
                                  "--run-memory wants a size of at least 4M (or 0: none), got '%s'",
                                  arg);
        f->limits.run_memory_bytes = (uint64_t)v;
        return 0;
    case OPT_RUN_PIDS:
        v = strtoll(arg, &end, 10);
        if (end == arg || *end || v < 0 || (v > 0 && v < 8))
            return kiln_error_set(err, KILN_EINVAL, 0,
                                  "--run-pids wants a number of at least 8 (or 0: none), got '%s'",
                                  arg);
        f->limits.run_pids = (uint64_t)v;
        return 0;
    case OPT_RUN_TIMEOUT:
    case OPT_BUILD_TIMEOUT:
        if ((v = kiln_parse_duration_ms(arg)) < 0)
            return kiln_error_set(
                err, KILN_EINVAL, 0,
                "--%s wants a duration like 90s, 10m or 1h30m (0: none), got '%s'",
                val == OPT_RUN_TIMEOUT ? "run-timeout" : "build-timeout", arg);
        *(val == OPT_RUN_TIMEOUT ? &f->limits.run_timeout_ms : &f->limits.build_timeout_ms) =
            (uint64_t)v;
        return 0;
    }
    return kiln_error_set(err, KILN_EINVAL, 0, "unknown option");
}

static void usage(FILE *f)
{
    fprintf(
        f,
        "Usage: kiln-builder [--data DIR] [--listen URL] [--events URL] [--pusher URL]\n"
        "                    [--http ADDR] [flags]\n"
        "\n"
        "Runs Kiln builds: parses Dockerfiles and executes them in a Linux sandbox, asking\n"
        "kiln-pusher to pull bases and commit layers.  Runs in the foreground, logs to stderr\n"
        "and exits 0 after a clean shutdown on SIGTERM.\n"
        "\n"
        "Flags:\n"
        "  --pusher URL          kiln-pusher's RPC endpoint (env KILN_PUSHER; default\n"
        "                        ipc://<data>/run/pusher.sock); TLS flags below apply to it\n"
        "  --max-builds N        builds that run at once (default %d, at most %d); more\n"
        "                        queue, and Status reports running, queued and N\n"
        "  --allow-insecure-entitlement network.host\n"
        "                        let builds run RUN steps on the host's network (kiln build\n"
        "                        --network host, RUN --network=host), host loopback included;\n"
        "                        refused otherwise.  By default RUN gets a private network with\n"
        "                        outbound access through pasta (Debian package passt)\n"
        "  --run-memory SIZE     memory (swap included) of each RUN, e.g. 2G (default: half\n"
        "                        of this host's memory; 0: none)\n"
        "  --run-pids N          processes and threads of each RUN at once (default 4096;\n"
        "                        0: none)\n"
        "  --run-timeout DUR     wall-clock time of each RUN, e.g. 90s, 10m, 1h30m (default\n"
        "                        1h; 0: none)\n"
        "  --build-timeout DUR   wall-clock time of each build (default 3h; 0: none)\n"
        "                        A RUN or build over its limit fails with an error naming it;\n"
        "                        a build may ask for lower limits (kiln build --memory,\n"
        "                        --pids-limit, --run-timeout, --build-timeout), never higher\n"
        "%s",
        BLD_MAX_BUILDS_DEFAULT, BLD_MAX_HELD / 2, kiln_service_common_usage);
}

int main(int argc, char **argv)
{
    kiln_service_block_signals();
    kiln_service_opts o;
    kiln_service_opts_init(&o, "kiln-builder", "build", KILN_EP_BUILDER, KILN_EP_BUILDER_EVENTS);
    kiln_log_setup("kiln-builder", KILN_LOG_INFO, KILN_LOG_LOGFMT);
    const char *env_pusher = getenv("KILN_PUSHER");
    builder_flags flags = {.pusher = env_pusher && *env_pusher ? strdup(env_pusher) : NULL,
                           .max_builds = BLD_MAX_BUILDS_DEFAULT};
    _cleanup_free_ char *pusher = NULL;
    default_limits(&flags.limits);
    kiln_service_flags extra = {builder_opts, on_flag, &flags};
    kiln_error *err = NULL;
    int r = kiln_service_parse_args(&o, argc, argv, &extra, &err);
    pusher = flags.pusher;
    if (r == KILN_ARGS_HELP || r == KILN_ARGS_VERSION) {
        if (r == KILN_ARGS_HELP)
            usage(stdout);
        else
            printf("kiln-builder %s\n", KILN_VERSION_STRING);
        kiln_service_opts_dispose(&o);
        return 0;
    }
    if (r < 0) {
        fprintf(stderr, "kiln-builder: %s\n", err->msg);
        fprintf(stderr, "Try 'kiln-builder --help'.\n");
        kiln_error_free(&err);
        kiln_service_opts_dispose(&o);
        return 2;
    }
    bld_server *core = NULL;
    kiln_service *svc = NULL;
    if (bld_server_new(&core, &o, pusher, flags.max_builds, &err) < 0)
        goto fail;
    bld_server_allow_host_network(core, flags.net_host);
    bld_server_set_limits(core, &flags.limits);
    size_t n_methods = 0;
    const kiln_rpc_method *methods = bld_server_methods(core, &n_methods);
    kiln_service_hooks hooks;
    bld_server_hooks(core, &hooks);
    if (kiln_service_start(&svc, &o, methods, n_methods, &hooks, &err) < 0)
        goto fail;
    bld_server_attach(core, svc);
    kiln_service_wait(svc);
    kiln_service_stop(svc);
    bld_server_free(core);
    kiln_service_opts_dispose(&o);
    return 0;
fail:
    kiln_err("svc", "cannot start: %s", err->msg);
    kiln_error_free(&err);
    bld_server_free(core);
    kiln_service_opts_dispose(&o);
    return 1;
}
