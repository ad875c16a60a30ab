/* kiln: the command-line client (SPEC §5, §10).  Global flags, then a verb
 * from the table below; each verb lives in its own cmd_*.c file. */
#include "cli.h"
#include "cleanup.h"
#include "config.h"
#include "log.h"
#include "pool.h"

#include <getopt.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

static const cli_verb verbs[] = {
    {"build", cli_cmd_build, "build an image from a Dockerfile (--plan: only resolve it)"},
    {"status", cli_cmd_status, "show the health of kiln-builder and kiln-pusher"},
    {"events", cli_cmd_events, "follow a job's events (or every job), with replay"},
    {"images", cli_cmd_images, "list the images in the store"},
    {"tag", cli_cmd_tag, "tag an image in the store"},
    {"inspect", cli_cmd_inspect, "print an image's manifest and config"},
    {"history", cli_cmd_history, "show the steps an image was made of, with their layers"},
    {"rmi", cli_cmd_rmi, "remove tags from the store"},
    {"import", cli_cmd_import, "import a rootfs dir/tarball or an OCI layout as an image"},
    {"export", cli_cmd_export, "write an image as oci:DIR or oci-archive:FILE"},
    {"prune", cli_cmd_prune, "delete unused build cache, contexts and store blobs"},
    {"push", cli_cmd_push, "push an image to a registry"},
    {"pull", cli_cmd_pull, "pull an image from a registry into the store"},
    {"manifest", cli_cmd_manifest, "create, edit, inspect and push manifest lists"},
};

const char *cli_service_name(cli_service s)
{
    return s == CLI_BUILDER ? "kiln-builder" : "kiln-pusher";
}

void cli_errorf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("kiln: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

int cli_exit_for(const kiln_error *err)
{
    if (err == NULL)
        return CLI_EXIT_FAILED;
    switch (err->code) {
    case KILN_EUNAVAIL:
    case KILN_ETIMEDOUT:
        return CLI_EXIT_UNREACHABLE;
    case KILN_EINVAL:
        return CLI_EXIT_FAILED;
    case KILN_EREMOTE:
    case KILN_EAUTH:
        return CLI_EXIT_REGISTRY;
    default:
        return CLI_EXIT_FAILED;
    }
}

kiln_rpc_client *cli_connect(cli_ctx *ctx, cli_service s)
{
    kiln_rpc_client *c = NULL;
    kiln_error *err = NULL;
    if (kiln_rpc_client_new(&c, ctx->url[s], &ctx->transport, true, &err) < 0) {
        cli_errorf("%s: %s", cli_service_name(s), err->msg);
        kiln_error_free(&err);
        return NULL;
    }
    return c;
}

static void usage(FILE *f)
{
    fprintf(f, "Usage: kiln [global flags] VERB [flags] [args]\n\n"
               "Kiln builds container images from Dockerfiles in a Linux sandbox and publishes\n"
               "them to OCI registries.  This client talks to kiln-builder and kiln-pusher.\n\n"
               "Verbs:\n");
    for (size_t i = 0; i < KILN_ARRAY_SIZE(verbs); i++)
        fprintf(f, "  %-10s %s\n", verbs[i].name, verbs[i].summary);
    fprintf(
        f,
        "\nGlobal flags:\n"
        "  --builder URL     kiln-builder endpoint (env KILN_BUILDER); a pool of builder\n"
        "                    nodes: URL,URL,... or a name with an address per node\n"
        "  --pusher URL      kiln-pusher endpoint (env KILN_PUSHER)\n"
        "  --data DIR        data dir whose run/ holds the default ipc:// sockets (env KILN_DATA)\n"
        "  --tls-cert FILE   client certificate for tls+tcp:// endpoints\n"
        "  --tls-key FILE    key for --tls-cert\n"
        "  --tls-ca FILE     CA that signed the services' certificates\n"
        "  --tls-server-name NAME  name the services' certificates must carry (default:\n"
        "                    the URL's host; matched against DNS subjectAltNames)\n"
        "  --timeout MS      RPC timeout in milliseconds (default 10000)\n"
        "  -h, --help        this help; `kiln VERB --help` for a verb\n"
        "  -V, --version     print the version\n"
        "\nExit status: 0 ok, 1 operation failed, 2 usage error, 3 service unreachable,\n"
        "4 build failed, 5 registry error.\n");
}

enum { G_BUILDER = 300, G_PUSHER, G_DATA, G_CERT, G_KEY, G_CA, G_SNI, G_TIMEOUT };

int main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN);
    kiln_log_setup("kiln", KILN_LOG_WARN, KILN_LOG_LOGFMT);
    static const struct option opts[] = {{"builder", required_argument, NULL, G_BUILDER},
                                         {"pusher", required_argument, NULL, G_PUSHER},
                                         {"data", required_argument, NULL, G_DATA},
                                         {"tls-cert", required_argument, NULL, G_CERT},
                                         {"tls-key", required_argument, NULL, G_KEY},
                                         {"tls-ca", required_argument, NULL, G_CA},
                                         {"tls-server-name", required_argument, NULL, G_SNI},
                                         {"timeout", required_argument, NULL, G_TIMEOUT},
                                         {"help", no_argument, NULL, 'h'},
                                         {"version", no_argument, NULL, 'V'},
                                         {NULL, 0, NULL, 0}};
    cli_ctx ctx = {.timeout_ms = 10000, .prog = "kiln"};
    const char *builder = getenv("KILN_BUILDER"), *pusher = getenv("KILN_PUSHER");
    const char *data = NULL;
    int c;
    opterr = 0;
    /* '+': stop at the verb; its flags are parsed by the verb. */
    while ((c = getopt_long(argc, argv, "+hV", opts, NULL)) != -1) {
        switch (c) {
        case G_BUILDER:
            builder = optarg;
            break;
        case G_PUSHER:
            pusher = optarg;
            break;
        case G_DATA:
            data = optarg;
            break;
        case G_CERT:
            ctx.transport.tls.cert = optarg;
            break;
        case G_KEY:
            ctx.transport.tls.key = optarg;
            break;
        case G_CA:
            ctx.transport.tls.ca = optarg;
            break;
        case G_SNI:
            ctx.transport.tls.server_name = optarg;
            break;
        case G_TIMEOUT: {
            char *end = NULL;
            long v = strtol(optarg, &end, 10);
            if (*optarg == '\0' || *end || v < 1 || v > 86400000) {
                cli_errorf("--timeout wants milliseconds, got '%s'", optarg);
                return CLI_EXIT_USAGE;
            }
            ctx.timeout_ms = (int)v;
            break;
        }
        case 'h':
            usage(stdout);
            return CLI_EXIT_OK;
        case 'V':
            printf("kiln %s\n", KILN_VERSION_STRING);
            return CLI_EXIT_OK;
        case ':':
            cli_errorf("option '%s' needs a value", argv[optind - 1]);
            return CLI_EXIT_USAGE;
        default:
            cli_errorf("unknown option '%s'", argv[optind - 1]);
            fprintf(stderr, "Try 'kiln --help'.\n");
            return CLI_EXIT_USAGE;
        }
    }
    if (optind >= argc) {
        usage(stderr);
        return CLI_EXIT_USAGE;
    }
    const cli_verb *verb = NULL;
    for (size_t i = 0; i < KILN_ARRAY_SIZE(verbs); i++)
        if (strcmp(argv[optind], verbs[i].name) == 0)
            verb = &verbs[i];
    if (verb == NULL) {
        cli_errorf("unknown command '%s'", argv[optind]);
        fprintf(stderr, "Try 'kiln --help'.\n");
        return CLI_EXIT_USAGE;
    }
    _cleanup_free_ char *data_dir = data ? strdup(data) : kiln_default_data_dir();
    _cleanup_free_ char *bu =
        builder && *builder ? strdup(builder) : kiln_default_url(data_dir, KILN_EP_BUILDER);
    _cleanup_free_ char *pu =
        pusher && *pusher ? strdup(pusher) : kiln_default_url(data_dir, KILN_EP_PUSHER);
    ctx.data_dir = data_dir;
    ctx.url[CLI_BUILDER] = bu;
    ctx.url[CLI_PUSHER] = pu;
    for (int s = 0; s < 2; s++) {
        kiln_error *err = NULL;
        /* The builder may be a pool of nodes: a comma-separated list (pool.c). */
        if ((s == CLI_BUILDER ? cli_pool_check(ctx.url[s], &err)
                              : kiln_url_check(ctx.url[s], NULL, NULL, &err)) < 0) {
            cli_errorf("%s: %s", cli_service_name((cli_service)s), err->msg);
            kiln_error_free(&err);
            return CLI_EXIT_USAGE;
        }
    }
    return verb->run(&ctx, argc - optind, argv + optind);
}
