/* The kiln CLI: shared context, exit codes and helpers for the verb files. */
#ifndef CLI_H
#define CLI_H

#include <stdbool.h>
#include <stdio.h>

#include <cjson/cJSON.h>

#include "error.h"
#include "rpc.h"
#include "transport.h"

/* Exit codes (SPEC §5, §10): scripts rely on them. */
enum {
    CLI_EXIT_OK = 0,
    CLI_EXIT_FAILED = 1,      /* the operation ran and failed */
    CLI_EXIT_USAGE = 2,       /* bad command line */
    CLI_EXIT_UNREACHABLE = 3, /* a service could not be reached */
    CLI_EXIT_BUILD = 4,       /* a build failed (reserved for `kiln build`) */
    CLI_EXIT_REGISTRY = 5,    /* a registry refused or failed (push/pull) */
};

typedef enum cli_service { CLI_BUILDER = 0, CLI_PUSHER = 1 } cli_service;

typedef struct cli_ctx {
    char *data_dir;
    char *url[2]; /* builder, pusher */
    kiln_transport_opts transport;
    int timeout_ms;
    const char *prog;
} cli_ctx;

typedef struct cli_verb {
    const char *name;
    int (*run)(cli_ctx *ctx, int argc, char **argv); /* argv[0] is the verb */
    const char *summary;
} cli_verb;

const char *cli_service_name(cli_service s);

/* Connects to a service; on failure prints the reason and returns NULL. */
kiln_rpc_client *cli_connect(cli_ctx *ctx, cli_service s);

/* Maps an RPC error onto an exit code (unreachable/timeouts -> 3, else 1). */
int cli_exit_for(const kiln_error *err);

/* Prints "kiln: <msg>" to stderr. */
void cli_errorf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Generic protobuf -> JSON (field names as in the .proto; enums by name;
 * 64-bit integers as numbers).  Caller frees with cJSON_Delete. */
cJSON *cli_pb_to_json(const ProtobufCMessage *m);

/* One line for a human: "HH:MM:SS.mmm topic #seq kind details". */
void cli_print_event(FILE *f, const Kiln__V1__Event *e);
/* One JSON object per line. */
void cli_print_event_json(FILE *f, const Kiln__V1__Event *e);

/* Connects, calls and prints any error; returns a CLI exit code (0 ok; *out
 * then holds the reply, freed by the caller).  timeout_ms 0: ctx->timeout_ms. */
int cli_call(cli_ctx *ctx, cli_service s, kiln_req *req, kiln_reply **out, int timeout_ms);

/* The PUB endpoint of the service behind c, from its Status reply (caller
 * frees); NULL with *err set when the call fails. */
char *cli_events_url(kiln_rpc_client *c, int timeout_ms, kiln_error **err);

/* Follows job on service s to its end, printing progress to stderr (or every
 * event as JSON on stdout); copies the completed event's digest.  Returns 0 if
 * the job completed, 1 if it failed, 3 if the service went away. */
int cli_follow_job(cli_ctx *ctx, cli_service s, const char *job, bool json, bool quiet,
                   char *digest_out, size_t cap);

/* Sends a BuildRequest to kiln-builder and renders the build's events in the
 * given --progress mode; prints the digest and writes iidfile (may be NULL). */
int cli_run_build(cli_ctx *ctx, Kiln__V1__BuildRequest *br, const char *progress,
                  const char *iidfile);

int cli_cmd_status(cli_ctx *ctx, int argc, char **argv);
int cli_cmd_events(cli_ctx *ctx, int argc, char **argv);
int cli_cmd_images(cli_ctx *ctx, int argc, char **argv);
int cli_cmd_tag(cli_ctx *ctx, int argc, char **argv);
int cli_cmd_inspect(cli_ctx *ctx, int argc, char **argv);
int cli_cmd_rmi(cli_ctx *ctx, int argc, char **argv);
int cli_cmd_prune(cli_ctx *ctx, int argc, char **argv);
int cli_cmd_import(cli_ctx *ctx, int argc, char **argv);
int cli_cmd_export(cli_ctx *ctx, int argc, char **argv);
int cli_cmd_build(cli_ctx *ctx, int argc, char **argv);
int cli_cmd_push(cli_ctx *ctx, int argc, char **argv);
int cli_cmd_pull(cli_ctx *ctx, int argc, char **argv);
int cli_cmd_manifest(cli_ctx *ctx, int argc, char **argv);

#endif
