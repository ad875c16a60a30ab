/* kiln config [--json]: the client's effective settings and where each
 * came from (flag, environment, config file, default); and the step of
 * main() that settles them (cliconfig.c holds the table and the file). */
#include "cli.h"
#include "cleanup.h"
#include "cliconfig.h"
#include "config.h"

#include <stdlib.h>
#include <string.h>

int cli_config_apply(cli_ctx *ctx)
{
    kiln_error *err = NULL;
    if (cli_config_load(&err) < 0) {
        cli_errorf("config: %s", err->msg);
        kiln_error_free(&err);
        return CLI_EXIT_USAGE;
    }
    ctx->transport.tls.ca = cli_config_get(CLI_SET_TLS_CA)->value;
    ctx->transport.tls.cert = cli_config_get(CLI_SET_TLS_CERT)->value;
    ctx->transport.tls.key = cli_config_get(CLI_SET_TLS_KEY)->value;
    ctx->transport.tls.server_name = cli_config_get(CLI_SET_TLS_SERVER_NAME)->value;
    const cli_setting *t = cli_config_get(CLI_SET_TIMEOUT);
    if (t->value) {
        char *end = NULL;
        long v = strtol(t->value, &end, 10);
        if (*t->value == '\0' || *end || v < 1 || v > 86400000) {
            cli_errorf("--timeout wants milliseconds, got '%s' (%s)", t->value, t->source);
            return CLI_EXIT_USAGE;
        }
        ctx->timeout_ms = (int)v;
    }
    return CLI_EXIT_OK;
}

int cli_config_events(cli_ctx *ctx)
{
    for (int s = 0; s < 2; s++) {
        const cli_setting *e =
            cli_config_get(s == CLI_BUILDER ? CLI_SET_BUILDER_EVENTS : CLI_SET_PUSHER_EVENTS);
        kiln_error *err = NULL;
        if (e->value == NULL)
            continue;
        if (kiln_url_check(e->value, NULL, NULL, &err) < 0) {
            cli_errorf("%s (%s): %s", e->key, e->source, err->msg);
            kiln_error_free(&err);
            return CLI_EXIT_USAGE;
        }
        cli_events_override((cli_service)s, ctx->url[s], e->value);
    }
    return CLI_EXIT_OK;
}

static const char usage[] =
    "Usage: kiln config [--json]\n"
    "\n"
    "Prints the client's effective settings and where each came from: a global flag,\n"
    "an environment variable, the config file, or the default.  Precedence: flag >\n"
    "environment > config file > default.\n"
    "\n"
    "The config file is $XDG_CONFIG_HOME/kiln/config.json (default\n"
    "~/.config/kiln/config.json), a JSON object; every key is optional:\n"
    "\n"
    "  {\"builder\": \"tls+tcp://kiln.example:7403\", \"pusher\": \"tls+tcp://...\",\n"
    "   \"builder_events\": \"tls+tcp://kiln.example:7404\", \"pusher_events\": \"...\",\n"
    "   \"data\": \"/var/lib/kiln\", \"timeout\": 10000, \"progress\": \"plain\",\n"
    "   \"tls\": {\"ca\": \"ca.pem\", \"cert\": \"me.pem\", \"key\": \"me.key\",\n"
    "           \"server_name\": \"kiln.example\"},\n"
    "   \"insecure_registries\": [\"registry.lan:5000\"]}\n"
    "\n"
    "insecure_registries (env KILN_INSECURE_REGISTRIES, comma-separated) are reached\n"
    "by push, pull, manifest add/push and login as with --tls-verify=false when every\n"
    "registry of the command is listed (an explicit --tls-verify wins).\n"
    "The *_events endpoints (env KILN_BUILDER_EVENTS, KILN_PUSHER_EVENTS) replace\n"
    "the event URLs the services' Status replies name (for a single builder).\n"
    "Relative tls files are taken from the file's directory; unknown keys and values\n"
    "of the wrong type are errors naming the file and the key.\n"
    "\n"
    "  --json       one JSON object: {KEY: {\"value\": V, \"source\": S}, ...}\n";

const struct option cli_config_opts[] = {
    {"json", no_argument, NULL, 'j'},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

/* What applies when nothing set a setting. */
static const char *default_of(cli_ctx *ctx, cli_setting_id id)
{
    switch (id) {
    case CLI_SET_BUILDER:
        return ctx->url[CLI_BUILDER];
    case CLI_SET_PUSHER:
        return ctx->url[CLI_PUSHER];
    case CLI_SET_DATA:
        return ctx->data_dir;
    case CLI_SET_TIMEOUT:
        return "10000";
    case CLI_SET_PROGRESS:
        return "auto";
    case CLI_SET_TLS_CA:
        return "(the system CA store)";
    case CLI_SET_TLS_SERVER_NAME:
        return "(the endpoint's host)";
    case CLI_SET_BUILDER_EVENTS:
    case CLI_SET_PUSHER_EVENTS:
        return "(named by the service's Status)";
    default:
        return "(none)";
    }
}

int cli_cmd_config(cli_ctx *ctx, int argc, char **argv)
{
    bool json = false;
    int c;
    cli_getopt_reset();
    while ((c = getopt_long(argc, argv, "h", cli_config_opts, NULL)) != -1) {
        switch (c) {
        case 'h':
            printf("%s", usage);
            return CLI_EXIT_OK;
        case 'j':
            json = true;
            break;
        default:
            cli_errorf("config: unknown option '%s'", argv[optind - 1]);
            return CLI_EXIT_USAGE;
        }
    }
    if (optind != argc) {
        cli_errorf("config: takes no arguments");
        return CLI_EXIT_USAGE;
    }
    _cleanup_cjson_ cJSON *o = json ? cJSON_CreateObject() : NULL;
    if (!json)
        printf("%-16s %-40s %s\n", "KEY", "VALUE", "SOURCE");
    for (int i = 0; i < CLI_SET_N; i++) {
        const cli_setting *s = cli_config_get((cli_setting_id)i);
        const char *v = s->value ? s->value : default_of(ctx, (cli_setting_id)i);
        if (!json) {
            printf("%-16s %-40s %s\n", s->key, v, s->source);
            continue;
        }
        cJSON *e = cJSON_AddObjectToObject(o, s->key);
        if (s->value || v[0] != '(') /* "(none)" and the like: no value */
            cJSON_AddStringToObject(e, "value", v);
        else
            cJSON_AddNullToObject(e, "value");
        cJSON_AddStringToObject(e, "source", s->source);
    }
    if (json) {
        cJSON_AddStringToObject(o, "config_file", cli_config_path());
        _cleanup_free_ char *text = cJSON_Print(o);
        printf("%s\n", text ? text : "{}");
    } else {
        printf("\nconfig file: %s\n", *cli_config_path() ? cli_config_path() : "(no home)");
    }
    return CLI_EXIT_OK;
}
