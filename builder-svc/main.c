/* kiln-builder: the Dockerfile build service (SPEC §10).
 * A thin main over the bld_core library so tests link what ships. */
#include "bld_build_job.h"
#include "bld_server.h"
#include "cleanup.h"
#include "config.h"
#include "log.h"
#include "service.h"

#include <stdio.h>
#include <string.h>

enum { OPT_PUSHER = 2000, OPT_MAX_BUILDS };

static const struct option builder_opts[] = {
    {"pusher", required_argument, NULL, OPT_PUSHER},
    {"max-builds", required_argument, NULL, OPT_MAX_BUILDS},
    {NULL, 0, NULL, 0},
};

typedef struct builder_flags {
    char *pusher;
    int max_builds;
} builder_flags;

static int on_flag(void *ud, int val, const char *arg, kiln_error **err)
{
    builder_flags *f = ud;
    if (val == OPT_PUSHER) {
        free(f->pusher);
        f->pusher = strdup(arg);
        return 0;
    }
    if (val == OPT_MAX_BUILDS) {
        char *end = NULL;
        long v = strtol(arg, &end, 10);
        if (*arg == '\0' || *end || v < 1 || v > BLD_MAX_HELD / 2)
            return kiln_error_set(err, KILN_EINVAL, 0, "--max-builds wants 1..%d, got '%s'",
                                  BLD_MAX_HELD / 2, arg);
        f->max_builds = (int)v;
        return 0;
    }
    return kiln_error_set(err, KILN_EINVAL, 0, "unknown option");
}

static void usage(FILE *f)
{
    fprintf(f,
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
    builder_flags bf = {env_pusher && *env_pusher ? strdup(env_pusher) : NULL,
                        BLD_MAX_BUILDS_DEFAULT};
    _cleanup_free_ char *pusher = NULL;
    kiln_service_flags extra = {builder_opts, on_flag, &bf};
    kiln_error *err = NULL;
    int r = kiln_service_parse_args(&o, argc, argv, &extra, &err);
    pusher = bf.pusher;
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
    if (bld_server_new(&core, &o, pusher, bf.max_builds, &err) < 0)
        goto fail;
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
