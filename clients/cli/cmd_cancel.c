/* kiln cancel JOB...: stops running jobs (a build on kiln-builder, a push,
 * pull or commit on kiln-pusher).  The job ends failed(CANCELLED), which its
 * followers see. */
#include "cli.h"
#include "events.h"

#include <getopt.h>
#include <string.h>

static const char usage[] = "Usage: kiln cancel JOB...\n\n"
                            "Cancels running jobs: a build's RUN processes are killed, a push or\n"
                            "pull stops between chunks (its upload can be resumed later).  Each\n"
                            "job ends failed(CANCELLED).  Exits 1 if a job was not running.\n";

/* Asks service s to cancel job; 1 if it was running there, 0 if not, < 0 if
 * the service could not be asked (*unreachable set). */
static int cancel_on(cli_ctx *ctx, cli_service s, const char *job, bool *unreachable)
{
    kiln_req req = KILN__V1__REQUEST__INIT;
    Kiln__V1__CancelRequest cr = KILN__V1__CANCEL_REQUEST__INIT;
    cr.job_id = (char *)job;
    req.body_case = KILN__V1__REQUEST__BODY_CANCEL;
    req.cancel = &cr;
    kiln_rpc_client *c = NULL;
    kiln_reply *rep = NULL;
    kiln_error *err = NULL;
    if (kiln_rpc_client_new(&c, ctx->url[s], &ctx->transport, true, &err) < 0 ||
        kiln_rpc_call(c, &req, &rep, ctx->timeout_ms, &err) < 0) {
        *unreachable = cli_exit_for(err) == CLI_EXIT_UNREACHABLE;
        if (!*unreachable)
            cli_errorf("cancel %s: %s: %s", job, cli_service_name(s), err ? err->msg : "?");
        kiln_error_free(&err);
        kiln_rpc_client_free(c);
        return -1;
    }
    int was = rep->cancel_reply && rep->cancel_reply->was_running;
    kiln_rpc_reply_free(rep);
    kiln_rpc_client_free(c);
    return was;
}

/* The options of the verb, for its parser, completion and man page. */
const struct option cli_cancel_opts[] = {{"help", no_argument, NULL, 'h'}, {NULL, 0, NULL, 0}};

int cli_cmd_cancel(cli_ctx *ctx, int argc, char **argv)
{
    int c;
    cli_getopt_reset();
    while ((c = getopt_long(argc, argv, "h", cli_cancel_opts, NULL)) != -1) {
        if (c == 'h') {
            printf("%s", usage);
            return CLI_EXIT_OK;
        }
        cli_errorf("cancel: unknown option '%s'", argv[optind - 1]);
        return CLI_EXIT_USAGE;
    }
    if (optind >= argc) {
        cli_errorf("cancel: expected JOB...; see 'kiln cancel --help'");
        return CLI_EXIT_USAGE;
    }
    for (int i = optind; i < argc; i++)
        if (!kiln_job_id_valid(argv[i])) {
            cli_errorf("cancel: '%s' is not a job id", argv[i]);
            return CLI_EXIT_USAGE;
        }
    int rc = CLI_EXIT_OK;
    for (int i = optind; i < argc; i++) {
        bool down[2] = {false, false};
        int found = 0;
        for (int s = 0; s < 2 && found <= 0; s++)
            found = cancel_on(ctx, (cli_service)s, argv[i], &down[s]);
        if (found > 0) {
            printf("cancelled %s\n", argv[i]);
        } else if (down[0] && down[1]) {
            cli_errorf("cancel %s: neither service is reachable", argv[i]);
            rc = CLI_EXIT_UNREACHABLE;
        } else {
            cli_errorf("cancel %s: no such running job", argv[i]);
            if (rc == CLI_EXIT_OK)
                rc = CLI_EXIT_FAILED;
        }
    }
    return rc;
}
