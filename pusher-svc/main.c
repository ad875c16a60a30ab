/* kiln-pusher: the image store and registry service (SPEC §10).
 * A thin main over the psh_core library so tests link what ships. */
#include "cleanup.h"
#include "config.h"
#include "log.h"
#include "psh_server.h"
#include "service.h"

#include <stdio.h>

static void usage(FILE *f)
{
    fprintf(f,
            "Usage: kiln-pusher [--data DIR] [--listen URL] [--events URL] [--http ADDR] [flags]\n"
            "\n"
            "Serves Kiln's image store and registry client over NNG (protobuf RPC on --listen,\n"
            "push/pull events on --events).  Runs in the foreground, logs to stderr and exits 0\n"
            "after a clean shutdown on SIGTERM.\n"
            "\n"
            "Flags:\n%s",
            kiln_service_common_usage);
}

int main(int argc, char **argv)
{
    kiln_service_block_signals();
    kiln_service_opts o;
    kiln_service_opts_init(&o, "kiln-pusher", "push", KILN_EP_PUSHER, KILN_EP_PUSHER_EVENTS);
    kiln_log_setup("kiln-pusher", KILN_LOG_INFO, KILN_LOG_LOGFMT);
    kiln_error *err = NULL;
    int r = kiln_service_parse_args(&o, argc, argv, NULL, &err);
    if (r == KILN_ARGS_HELP || r == KILN_ARGS_VERSION) {
        if (r == KILN_ARGS_HELP)
            usage(stdout);
        else
            printf("kiln-pusher %s\n", KILN_VERSION_STRING);
        kiln_service_opts_dispose(&o);
        return 0;
    }
    if (r < 0) {
        fprintf(stderr, "kiln-pusher: %s\n", err->msg);
        fprintf(stderr, "Try 'kiln-pusher --help'.\n");
        kiln_error_free(&err);
        kiln_service_opts_dispose(&o);
        return 2;
    }
    psh_server *core = NULL;
    kiln_service *svc = NULL;
    if (psh_server_new(&core, &o, &err) < 0)
        goto fail;
    size_t n_methods = 0;
    const kiln_rpc_method *methods = psh_server_methods(core, &n_methods);
    kiln_service_hooks hooks;
    psh_server_hooks(core, &hooks);
    if (kiln_service_start(&svc, &o, methods, n_methods, &hooks, &err) < 0)
        goto fail;
    psh_server_attach(core, svc);
    kiln_service_wait(svc);
    kiln_service_stop(svc);
    psh_server_free(core);
    kiln_service_opts_dispose(&o);
    return 0;
fail:
    kiln_err("svc", "cannot start: %s", err->msg);
    kiln_error_free(&err);
    psh_server_free(core);
    kiln_service_opts_dispose(&o);
    return 1;
}
