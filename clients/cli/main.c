/* kiln: the command-line client (SPEC §5, §10).  Global flags, then a verb
 * from the table below; each verb lives in its own cmd_*.c file. */
#include "cli.h"
#include "cleanup.h"
#include "cliconfig.h"
#include "config.h"
#include "log.h"
#include "pool.h"

#include <getopt.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

/* Edit distance (insert, delete, substitute, swap of neighbours), capped. */
static size_t distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    if (la > 32 || lb > 32)
        return 99;
    size_t d[33][33];
    for (size_t i = 0; i <= la; i++)
        d[i][0] = i;
    for (size_t j = 0; j <= lb; j++)
        d[0][j] = j;
    for (size_t i = 1; i <= la; i++)
        for (size_t j = 1; j <= lb; j++) {
            size_t best = d[i - 1][j - 1] + (a[i - 1] != b[j - 1]);
            if (d[i - 1][j] + 1 < best)
                best = d[i - 1][j] + 1;
            if (d[i][j - 1] + 1 < best)
                best = d[i][j - 1] + 1;
            if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] &&
                d[i - 2][j - 2] + 1 < best)
                best = d[i - 2][j - 2] + 1;
            d[i][j] = best;
        }
    return d[la][lb];
}

static const cli_verb *find_verb(const char *name)
{
    for (size_t i = 0; i < cli_n_verbs; i++)
        if (strcmp(name, cli_verbs[i].name) == 0)
            return &cli_verbs[i];
    return NULL;
}

/* "unknown command", with the closest verbs as docker and git suggest them. */
static int unknown_verb(const char *name)
{
    cli_errorf("unknown command '%s'", name);
    size_t best = 3;
    for (size_t i = 0; i < cli_n_verbs; i++) {
        size_t d = distance(name, cli_verbs[i].name);
        if (strlen(name) >= 2 && strncmp(cli_verbs[i].name, name, strlen(name)) == 0)
            d = 1; /* a prefix */
        if (d < best)
            best = d;
    }
    bool first = true;
    for (size_t i = 0; best < 3 && i < cli_n_verbs; i++) {
        size_t d = distance(name, cli_verbs[i].name);
        if (strlen(name) >= 2 && strncmp(cli_verbs[i].name, name, strlen(name)) == 0)
            d = 1;
        if (d == best) {
            fprintf(stderr, "%s%s", first ? "Did you mean " : " or ", cli_verbs[i].name);
            first = false;
        }
    }
    if (!first)
        fputs("?\n", stderr);
    fprintf(stderr, "Try 'kiln --help'.\n");
    return CLI_EXIT_USAGE;
}

static void usage(FILE *f)
{
    fprintf(f, "Usage: kiln [global flags] VERB [flags] [args]\n\n"
               "Kiln builds container images from Dockerfiles in a Linux sandbox and publishes\n"
               "them to OCI registries.  This client talks to kiln-builder and kiln-pusher.\n\n"
               "Verbs:\n");
    for (size_t i = 0; i < cli_n_verbs; i++)
        fprintf(f, "  %-10s %s\n", cli_verbs[i].name, cli_verbs[i].summary);
    fprintf(
        f,
        "\nGlobal flags:\n"
        "  --builder URL     kiln-builder endpoint (env KILN_BUILDER); a pool of builder\n"
        "                    nodes: URL,URL,... or a name with an address per node\n"
        "  --pusher URL      kiln-pusher endpoint (env KILN_PUSHER)\n"
        "  --data DIR        data dir whose run/ holds the default ipc:// sockets (env KILN_DATA)\n"
        "  --tls-cert FILE   client certificate for tls+tcp:// endpoints\n"
        "  --tls-key FILE    key for --tls-cert\n"
        "  --tls-ca FILE     CA that signed the services' certificates (default: the\n"
        "                    system CA store; the services' certificates are always verified)\n"
        "  --tls-insecure-skip-verify  accept any certificate from tls+tcp:// services\n"
        "                    (anyone on the path can then read secrets and credentials)\n"
        "  --tls-server-name NAME  name the services' certificates must carry (default:\n"
        "                    the URL's host; matched against DNS subjectAltNames)\n"
        "  --timeout MS      RPC timeout in milliseconds (default 10000)\n"
        "  -h, --help        this help; `kiln help VERB` or `kiln VERB --help` for a verb\n"
        "  -V, --version     print the version (also `kiln version`)\n"
        "\nA verb's flags may come before or after its arguments; `--` ends them.\n"
        "Defaults for these flags (and kiln build --progress) may also come from\n"
        "$XDG_CONFIG_HOME/kiln/config.json: flag > environment > file > default; `kiln\n"
        "config` shows each setting and where it came from.\n"
        "\nExit status: 0 ok, 1 operation failed, 2 usage error, 3 service unreachable,\n"
        "4 build failed, 5 registry error, 130/143 interrupted (SIGINT/SIGTERM: the\n"
        "build, push or pull was cancelled; a second Ctrl-C quits at once).\n");
}

/* The setting a global flag sets. */
static cli_setting_id flag_setting(int opt)
{
    switch (opt) {
    case CLI_G_BUILDER:
        return CLI_SET_BUILDER;
    case CLI_G_PUSHER:
        return CLI_SET_PUSHER;
    case CLI_G_DATA:
        return CLI_SET_DATA;
    case CLI_G_CERT:
        return CLI_SET_TLS_CERT;
    case CLI_G_KEY:
        return CLI_SET_TLS_KEY;
    case CLI_G_CA:
        return CLI_SET_TLS_CA;
    case CLI_G_SNI:
        return CLI_SET_TLS_SERVER_NAME;
    default:
        return CLI_SET_TIMEOUT;
    }
}

/* The global flags before the verb into ctx and the settings (cliconfig.c).
 * Returns true when kiln is done (--help, --version, a usage error), with
 * its exit code in *rc. */
static bool global_flags(int argc, char **argv, cli_ctx *ctx, int *rc)
{
    int c;
    opterr = 0;
    /* '+': stop at the verb; its flags are parsed by the verb. */
    while ((c = getopt_long(argc, argv, "+hV", cli_global_opts, NULL)) != -1) {
        switch (c) {
        case CLI_G_BUILDER:
        case CLI_G_PUSHER:
        case CLI_G_DATA:
        case CLI_G_CERT:
        case CLI_G_KEY:
        case CLI_G_CA:
        case CLI_G_SNI:
        case CLI_G_TIMEOUT:
            /* Settled with the environment and the config file below. */
            cli_config_flag(flag_setting(c), optarg);
            break;
        case CLI_G_SKIPVERIFY:
            ctx->transport.tls.insecure_skip_verify = true;
            break;
        case 'h':
            usage(stdout);
            *rc = CLI_EXIT_OK;
            return true;
        case 'V':
            printf("kiln %s\n", KILN_VERSION_STRING);
            *rc = CLI_EXIT_OK;
            return true;
        case ':':
            cli_errorf("option '%s' needs a value", argv[optind - 1]);
            *rc = CLI_EXIT_USAGE;
            return true;
        default:
            cli_errorf("unknown option '%s'", argv[optind - 1]);
            fprintf(stderr, "Try 'kiln --help'.\n");
            *rc = CLI_EXIT_USAGE;
            return true;
        }
    }
    return false;
}

/* The verb argv[optind] names, after `kiln version`, `kiln help [VERB]` (as
 * docker has them: VERB's argv becomes "VERB --help") and __man-pages.
 * NULL when kiln is done, with its exit code in *rc. */
static const cli_verb *pick_verb(cli_ctx *ctx, int *argc, char ***argv, int *rc)
{
    static char *help_argv[] = {NULL, (char *)"--help", NULL};
    char **av = *argv;
    *rc = CLI_EXIT_OK;
    /* Used by the build to write the man pages (not a verb users need). */
    if (strcmp(av[optind], "__man-pages") == 0 && optind + 1 < *argc) {
        *rc = cli_man_pages(ctx, av[optind + 1], usage);
        return NULL;
    }
    if (strcmp(av[optind], "version") == 0) {
        printf("kiln %s\n", KILN_VERSION_STRING);
        return NULL;
    }
    if (strcmp(av[optind], "help") == 0) {
        if (optind + 1 >= *argc) {
            usage(stdout);
            return NULL;
        }
        if (find_verb(av[optind + 1]) == NULL) {
            *rc = unknown_verb(av[optind + 1]);
            return NULL;
        }
        help_argv[0] = av[optind + 1];
        *argv = av = help_argv;
        *argc = 2;
        optind = 0;
    }
    const cli_verb *verb = find_verb(av[optind]);
    if (verb == NULL)
        *rc = unknown_verb(av[optind]);
    return verb;
}

/* Checks the services' URLs in ctx (the builder's may be a pool of nodes:
 * a comma-separated list, pool.c).  Returns a CLI exit code. */
static int check_urls(const cli_ctx *ctx)
{
    for (int s = 0; s < 2; s++) {
        kiln_error *err = NULL;
        if ((s == CLI_BUILDER ? cli_pool_check(ctx->url[s], &err)
                              : kiln_url_check(ctx->url[s], NULL, NULL, &err)) < 0) {
            const cli_setting *set =
                cli_config_get(s == CLI_BUILDER ? CLI_SET_BUILDER : CLI_SET_PUSHER);
            cli_errorf("%s: %s (%s)", cli_service_name((cli_service)s), err->msg, set->source);
            kiln_error_free(&err);
            return CLI_EXIT_USAGE;
        }
    }
    return CLI_EXIT_OK;
}

int main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN);
    cli_signals_init();
    kiln_log_setup("kiln", KILN_LOG_WARN, KILN_LOG_LOGFMT);
    cli_ctx ctx = {.timeout_ms = 10000, .prog = "kiln"};
    int rc;
    if (global_flags(argc, argv, &ctx, &rc))
        return rc;
    if (optind >= argc) {
        usage(stderr);
        return CLI_EXIT_USAGE;
    }
    const cli_verb *verb = pick_verb(&ctx, &argc, &argv, &rc);
    if (verb == NULL)
        return rc;
    /* Flag, else environment, else config file, else default (cliconfig.c).
     * A completion script is sourced at shell start: a broken config file
     * must not break every shell, so it is not read for that verb. */
    rc = strcmp(verb->name, "completion") == 0 ? CLI_EXIT_OK : cli_config_apply(&ctx);
    if (rc != CLI_EXIT_OK)
        return rc;
    const char *builder = cli_config_get(CLI_SET_BUILDER)->value;
    const char *pusher = cli_config_get(CLI_SET_PUSHER)->value;
    const char *data = cli_config_get(CLI_SET_DATA)->value;
    _cleanup_free_ char *data_dir = data ? strdup(data) : kiln_default_data_dir();
    _cleanup_free_ char *bu =
        builder && *builder ? strdup(builder) : kiln_default_url(data_dir, KILN_EP_BUILDER);
    _cleanup_free_ char *pu =
        pusher && *pusher ? strdup(pusher) : kiln_default_url(data_dir, KILN_EP_PUSHER);
    ctx.data_dir = data_dir;
    ctx.url[CLI_BUILDER] = bu;
    ctx.url[CLI_PUSHER] = pu;
    if ((rc = check_urls(&ctx)) != CLI_EXIT_OK || (rc = cli_config_events(&ctx)) != CLI_EXIT_OK)
        return rc;
    if (ctx.transport.tls.insecure_skip_verify)
        fprintf(stderr, "kiln: warning: --tls-insecure-skip-verify: the services' TLS "
                        "certificates are not verified; whoever answers gets secrets and "
                        "credentials\n");
    return verb->run(&ctx, argc - optind, argv + optind);
}
