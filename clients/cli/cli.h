/* The kiln CLI: shared context, exit codes and helpers for the verb files. */
#ifndef CLI_H
#define CLI_H

#include <getopt.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>

#include <cjson/cJSON.h>

#include "digest.h"
#include "error.h"
#include "events.h"
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
    const struct cli_ssh_opts *ssh; /* kiln build --ssh: served while a build runs */
} cli_ctx;

/* What a verb's positional arguments are, for completion. */
typedef enum cli_args_kind {
    CLI_ARGS_NONE,
    CLI_ARGS_PATH,  /* files and directories */
    CLI_ARGS_IMAGE, /* references of the store */
    CLI_ARGS_VERB,  /* verbs (kiln help) */
    CLI_ARGS_WORDS, /* the fixed words in words */
} cli_args_kind;

/* A subcommand (kiln manifest add) and its parser's option table. */
typedef struct cli_subverb {
    const char *name;
    const struct option *opts;
} cli_subverb;

typedef struct cli_verb {
    const char *name;
    int (*run)(cli_ctx *ctx, int argc, char **argv); /* argv[0] is the verb */
    const char *summary;
    /* The option table the verb's parser gives getopt_long: completion and
     * the man pages read the same table, so they cannot drift from it. */
    const struct option *opts;
    cli_args_kind args;
    const char *words;           /* CLI_ARGS_WORDS: space-separated */
    const cli_subverb *subverbs; /* kiln manifest: its subcommands, or NULL */
} cli_verb;

/* The verb table (verbs.c). */
extern const cli_verb cli_verbs[];
extern const size_t cli_n_verbs;
/* Global flags (verbs.c). */
/* The global options' values (verbs.c's table, main.c's parser). */
enum {
    CLI_G_BUILDER = 300,
    CLI_G_PUSHER,
    CLI_G_DATA,
    CLI_G_CERT,
    CLI_G_KEY,
    CLI_G_CA,
    CLI_G_SNI,
    CLI_G_TIMEOUT,
    CLI_G_SKIPVERIFY
};
extern const struct option cli_global_opts[];

/* Option tables of the verbs (each in its verb's file). */
extern const struct option cli_build_opts[], cli_status_opts[], cli_events_opts[],
    cli_cancel_opts[], cli_login_opts[], cli_logout_opts[], cli_push_opts[], cli_pull_opts[],
    cli_images_opts[], cli_history_opts[], cli_prune_opts[], cli_import_opts[], cli_export_opts[],
    cli_help_only_opts[], cli_config_opts[];
extern const cli_subverb cli_manifest_subverbs[];

const char *cli_service_name(cli_service s);

/* Before a verb's getopt_long loop: a full re-initialisation (optind 0, a
 * GNU extension; main's "+" parse would otherwise keep stopping at the first
 * argument), so flags may follow arguments (`kiln build . -t app:1`) and
 * `--` ends them, as in docker. */
static inline void cli_getopt_reset(void)
{
    extern int optind, opterr;
    optind = 0;
    opterr = 0;
}

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
/* From now on the events of the service at service_url are followed at
 * events_url instead of the one its Status names (both borrowed for the
 * process's life; one per service s). */
void cli_events_override(cli_service s, const char *service_url, const char *events_url);

/* Follows job on service s to its end, printing progress to stderr (or every
 * event as JSON on stdout); copies the completed event's digest.  Returns 0 if
 * the job completed, 1 if it failed, 3 if the service went away. */
int cli_follow_job(cli_ctx *ctx, cli_service s, const char *job, bool json, bool quiet,
                   char *digest_out, size_t cap);

/* What a finished build left for the steps after it (--output,
 * --metadata-file). */
typedef struct cli_build_result {
    char job[KILN_JOB_ID_MAX + 1]; /* the build's job id */
    char digest[80];               /* the image's manifest digest */
} cli_build_result;

/* Sends a BuildRequest to kiln-builder and renders the build's events in the
 * given --progress mode; prints the digest and writes iidfile (may be NULL);
 * fills *res (may be NULL) when the build completed. */
int cli_run_build(cli_ctx *ctx, Kiln__V1__BuildRequest *br, const char *progress,
                  const char *iidfile, cli_build_result *res);

/* The same, printing no digest and writing no iidfile: the job and digest
 * go to *res.  label (may be NULL) names the build in its failure ("build
 * for linux/arm64 failed"). */
int cli_run_build_to(cli_ctx *ctx, Kiln__V1__BuildRequest *br, const char *progress,
                     const char *label, cli_build_result *res);
/* kiln build --platform A,B,... (build_multi.c): one build of br per
 * platform (normalised, at least two), each untagged and unpushed, then an
 * OCI image index of them tagged with tags and, with push, pushed under each
 * tag (format "v2s2": a Docker manifest list); nothing is tagged or pushed
 * unless every platform built.  Prints the index digest (and writes iidfile).
 * Returns a CLI exit code. */
int cli_build_multi(cli_ctx *ctx, Kiln__V1__BuildRequest *br, char *const *platforms,
                    size_t n_platforms, const char *progress, const char *iidfile);
/* --platform A,B,...: each checked (cli_check_platform), normalised
 * (common/platform.h: aarch64 -> arm64, arm -> arm/v7, ...) and unique, into
 * *out (free with cli_platform_list_free).  Returns a CLI exit code. */
int cli_platform_list(const char *verb, const char *arg, char ***out, size_t *n);
void cli_platform_list_free(char **v, size_t n);

/* ---- kiln build's client-side options (build_opts.c) ---- */

/* The progress mode: flag (NULL when not given), else $KILN_PROGRESS, else
 * $BUILDKIT_PROGRESS, else the config file's, else "auto".  An invalid
 * value is a usage error naming where it came from. */
int cli_progress_resolve(const char *flag, const char **out);
/* --secret id=ID,src=FILE | id=ID,env=VAR | type=env,id=VAR into *out: a
 * file's absolute path in path (out->path points at it), an environment
 * variable's value in out->data (owned; the caller wipes and frees it, and
 * out->id).  Returns a CLI exit code (said). */
int cli_secret_parse(const char *arg, Kiln__V1__SecretSpec *out, char path[PATH_MAX]);
/* --annotation [manifest:|index:]K=V: checked; the prefix "manifest:" is
 * dropped.  Returns a CLI exit code (said). */
int cli_annotation_check(const char *arg, const char **out);
/* The ignore file kiln build uses, as buildah picks it: <Dockerfile>.containerignore
 * or <Dockerfile>.dockerignore next to the Dockerfile, else CONTEXT/.containerignore
 * (.dockerignore is the builder's own default).  *text NULL: none of these.
 * Returns a CLI exit code (said). */
int cli_ignore_file(const char *dockerfile, const char *context, char **text);
/* --metadata-file: buildx's keys (containerimage.digest,
 * containerimage.config.digest, containerimage.descriptor, image.name) and
 * kiln.build.id, as JSON.  Returns a CLI exit code (said). */
int cli_write_metadata(cli_ctx *ctx, const char *path, const cli_build_result *res,
                       char *const *tags, size_t n_tags);

/* ---- kiln build --output (build_output.c) ---- */

typedef enum cli_output_kind {
    CLI_OUT_NONE,
    CLI_OUT_LOCAL,
    CLI_OUT_TAR,
    CLI_OUT_OCI
} cli_output_kind;
typedef struct cli_output {
    cli_output_kind kind;
    char dest[PATH_MAX];
} cli_output;
/* -o DIR | --output type=local|tar|oci,dest=PATH.  Returns a CLI exit code
 * (said). */
int cli_output_parse(const char *arg, cli_output *out);
/* Writes the built image on this side: streamed from kiln-pusher as an
 * oci-archive (oci), or its layers applied into a directory (local) or a
 * tar of that tree (tar).  Returns a CLI exit code (said). */
int cli_output_write(cli_ctx *ctx, const cli_output *o, const char *digest);

/* ---- build context transfer (context.c) ---- */

typedef enum cli_progress {
    CLI_PROGRESS_PLAIN,
    CLI_PROGRESS_TTY,
    CLI_PROGRESS_JSON,
    CLI_PROGRESS_QUIET,
} cli_progress;

/* The progress mode a --progress word means (auto: tty on a terminal). */
cli_progress cli_progress_mode(const char *progress);

/* ---- kiln build --build-context (build_context.c) ---- */

typedef struct cli_named_context {
    char name[128];     /* lower case */
    const char *image;  /* docker-image://REF: REF (borrowed from argv), or NULL */
    char dir[PATH_MAX]; /* else: the directory, absolute */
} cli_named_context;
/* NAME=DIR | NAME=docker-image://REF.  Returns a CLI exit code (said). */
int cli_build_context_parse(const char *arg, cli_named_context *out);
/* "NAME=REF" for each into out[i] (caller frees): an image as named, a
 * directory streamed to kiln-pusher and imported as an image first.
 * Returns a CLI exit code (said). */
int cli_build_contexts_resolve(cli_ctx *ctx, const cli_named_context *nc, size_t n,
                               cli_progress mode, char **out);

/* With a pool of builders the image is in the store of the chosen node,
 * whose pusher the client does not know: --output, --metadata-file and
 * --build-context NAME=DIR (which talk to kiln-pusher) are refused there
 * (said; CLI_EXIT_USAGE). */
int cli_build_pool_check(bool output, bool metadata, const cli_named_context *nc, size_t n);

typedef struct cli_context_chunk {
    char digest[KILN_DIGEST_STRLEN + 1];
    uint64_t offset, size; /* in the temp file */
} cli_context_chunk;

/* A context directory packed as a chunked tar in an unlinked temp file. */
typedef struct cli_context {
    int fd;
    char digest[KILN_DIGEST_STRLEN + 1]; /* sha256 of the whole tar */
    uint64_t size;
    size_t n_files; /* entries below the root */
    cli_context_chunk *chunks;
    size_t n_chunks, cap_chunks;
    Kiln__V1__ContextChunk *pb, **pb_ptrs; /* for the requests; filled by cli_context_send */
} cli_context;

/* Packs dir (after its .dockerignore, or the patterns in ignore_text when
 * not NULL) into *out; dispose with cli_context_dispose() (also after a
 * failure). */
int cli_context_pack(cli_context *out, const char *dir, const char *ignore_text, kiln_error **err);
/* Packs a root filesystem or OCI layout directory (no ignore file; owners,
 * device nodes, FIFOs and hard links kept) the same way. */
int cli_context_pack_tree(cli_context *out, const char *dir, kiln_error **err);
/* Chunks a regular file as it is (its own fd, no copy). */
int cli_context_pack_file(cli_context *out, const char *path, kiln_error **err);
void cli_context_dispose(cli_context *c);
/* Sends the chunks kiln-builder lacks (ContextCheck, ContextPut) and fills
 * c->pb_ptrs for the BuildRequest; progress on stderr in plain/tty mode.
 * Returns a CLI exit code. */
int cli_context_send(cli_ctx *ctx, cli_context *c, cli_progress mode);
/* The same to service s; what names the stream in progress and errors. */
int cli_stream_send(cli_ctx *ctx, cli_service s, cli_context *c, cli_progress mode,
                    const char *what);
/* Asks kiln-builder's Status whether it runs on this host with the same
 * filesystem view (*same).  Returns a CLI exit code. */
int cli_builder_shares_fs(cli_ctx *ctx, bool *same);
/* The same for service s. */
int cli_shares_fs(cli_ctx *ctx, cli_service s, bool *same);
/* Whether paths go to service s (transfer "local") or bytes are streamed
 * ("stream"); "auto": paths only over ipc:// to a service that sees our
 * filesystem.  *stream is the answer; returns a CLI exit code. */
int cli_choose_transfer(cli_ctx *ctx, cli_service s, const char *transfer, bool *stream);

/* ---- import and export streamed to and from kiln-pusher (transfer.c) ---- */

/* Packs src (a file as it is; a directory as a tar, *layout when it is an
 * OCI image layout) and sends the chunks the pusher lacks.  Dispose c after
 * the ImportRequest naming it was sent.  Returns a CLI exit code. */
int cli_import_send(cli_ctx *ctx, const char *src, cli_progress mode, cli_context *c, bool *layout);
/* Sends the Import request ir (the caller's ref, format, source_name, ...)
 * to kiln-pusher with its source: the chunks of c as cli_import_send left
 * them (layout: what it found), or, with c NULL, the path abs on a pusher
 * that shares this filesystem; then follows the job to its end (json and
 * quiet as for cli_follow_job), the image's digest to digest (cap bytes).
 * Disposes c.  Returns a CLI exit code (said). */
int cli_import_run(cli_ctx *ctx, Kiln__V1__ImportRequest *ir, cli_context *c, bool layout,
                   const char *abs, bool json, bool quiet, char *digest, size_t cap);
/* Exports ref through the pusher as a stream and writes target ("oci:DIR" or
 * "oci-archive:FILE") here: a temp file or dir next to it, renamed into place
 * once the archive's digest checked out.  Prints the image digest.  Returns a
 * CLI exit code. */
int cli_export_receive(cli_ctx *ctx, const char *ref, const char *target);
/* The same, printing the digest only when print. */
int cli_export_stream(cli_ctx *ctx, const char *ref, const char *target, bool print);

/* ---- the live build view on a terminal (render_tty.c) ---- */

typedef struct cli_tty cli_tty;
/* A view drawing on out (a terminal); NULL when out of memory. */
cli_tty *cli_tty_new(FILE *out);
void cli_tty_free(cli_tty *t);
/* A finished line ("[build] FROM x", "=> pushing"). */
void cli_tty_note(cli_tty *t, const char *text);
/* Step no starts; head is its line ("#3 [build] RUN make (line 7)"). */
void cli_tty_step_started(cli_tty *t, unsigned no, const char *head);
/* One output line of step no (the last one is shown under it). */
void cli_tty_output(cli_tty *t, unsigned no, const char *line);
/* Step no ended: its line scrolls up with status at the right edge; head
 * is used when the step was never shown as running. */
void cli_tty_step_done(cli_tty *t, unsigned no, const char *head, const char *status);
/* The build ended: steps still running scroll up (failed: marked ERROR,
 * with their last output lines). */
void cli_tty_finish(cli_tty *t, bool failed);
/* Redraws the live part when REDRAW_MS passed, the terminal was resized,
 * or force. */
void cli_tty_draw(cli_tty *t, bool force);
/* From the signal thread: the terminal was resized. */
void cli_tty_winch(void);
/* Colour is allowed: NO_COLOR unset or empty, TERM not "dumb". */
bool cli_tty_colour_ok(void);
/* stderr is a terminal that can take cursor movement (not TERM=dumb). */
bool cli_stderr_is_tty(void);

/* ---- argument checks (args.c): each prints why and returns CLI_EXIT_USAGE,
 * or returns CLI_EXIT_OK ---- */

/* ref must parse as an image reference (new_tag: a tag to create, so no
 * @digest).  what names it in the message ("tag", "destination", ...). */
int cli_check_ref(const char *verb, const char *what, const char *ref, bool new_tag);

typedef enum cli_path_kind {
    CLI_PATH_ANY,      /* exists and is readable */
    CLI_PATH_FILE,     /* a readable non-directory */
    CLI_PATH_DIR,      /* a readable directory */
    CLI_PATH_NEW_FILE, /* to be written: its directory exists and is writable */
} cli_path_kind;
int cli_check_path(const char *verb, const char *what, const char *path, cli_path_kind kind);

/* An image id prefix (4 to 63 hex digits, "sha256:" optional) naming one
 * image of the store -> its full digest in buf; anything else (or a prefix
 * that is also a tag) -> arg itself.  NULL, after saying so, when the prefix
 * names several images. */
const char *cli_image_ref(cli_ctx *ctx, const char *verb, const char *arg, char *buf, size_t cap);

/* ---- registry credentials (creds.c) ---- */

/* Credentials resolved on the client's side, ready for a request's
 * repeated credentials field (owned; secrets wiped by cli_creds_free). */
typedef struct cli_creds {
    Kiln__V1__RegistryCredential **v;
    size_t n;
} cli_creds;

/* The credentials the client's Docker config (authfile, else
 * $REGISTRY_AUTH_FILE, $DOCKER_CONFIG/config.json, ~/.docker/config.json)
 * holds for each of hosts (canonical, cli_ref_registry), credential helpers
 * included; all_auths: also every auths entry of the file (no helper is run
 * for those).  A helper that fails is warned about and skipped.
 * CLI_EXIT_USAGE (said) when an explicit authfile cannot be read. */
int cli_creds_resolve(const char *verb, const char *authfile, const char *const *hosts,
                      size_t n_hosts, bool all_auths, cli_creds *out);
void cli_creds_free(cli_creds *c);

/* The registry (canonical host: "docker.io" for Docker Hub) ref names; false
 * when ref is no reference (an image id). */
bool cli_ref_registry(const char *ref, char *out, size_t n);

/* OS/ARCH[/VARIANT]. */
int cli_check_platform(const char *verb, const char *platform);

/* ---- RUN sandbox flags of kiln build (run_opts.c) ---- */

/* --add-host NAME:IP, --ulimit NAME=SOFT[:HARD], --shm-size SIZE; the
 * strings are borrowed from argv. */
typedef enum cli_run_flag { CLI_RUN_ADD_HOST = 0, CLI_RUN_ULIMIT, CLI_RUN_SHM_SIZE } cli_run_flag;
#define CLI_RUN_OPTS_MAX 64
typedef struct cli_run_opts {
    const char *hosts[CLI_RUN_OPTS_MAX];
    size_t n_hosts;
    const char *ulimits[CLI_RUN_OPTS_MAX];
    size_t n_ulimits;
    uint64_t shm_size;
} cli_run_opts;
/* Checks one flag's value (common/runopts.h, the builder's own parsers) and
 * keeps it: CLI_EXIT_OK, or CLI_EXIT_USAGE after saying what is wrong. */
int cli_run_opt(cli_run_opts *o, cli_run_flag flag, const char *arg);
/* Puts the kept values into the request (borrowed: o must outlive it). */
void cli_run_opts_apply(const cli_run_opts *o, Kiln__V1__BuildRequest *br);

/* ---- kiln build --ssh (ssh_proxy.c) ---- */

/* The agents a build may use: --ssh default[=SOCKET] | ID=SOCKET. */
#define CLI_SSH_MAX 16
typedef struct cli_ssh_opts {
    char ids[CLI_SSH_MAX][65];
    char *id_ptrs[CLI_SSH_MAX];
    char socks[CLI_SSH_MAX][108]; /* local agent sockets ($SSH_AUTH_SOCK for default) */
    size_t n;
    char token[65]; /* the session's secret, made by cli_ssh_apply() */
} cli_ssh_opts;
/* Checks one --ssh value (the socket must exist here) and keeps it:
 * CLI_EXIT_OK, or CLI_EXIT_USAGE after saying what is wrong. */
int cli_ssh_opt(cli_ssh_opts *o, const char *arg);
/* Draws the session token and names the agents in the request (borrowed
 * from o). */
int cli_ssh_apply(cli_ssh_opts *o, Kiln__V1__BuildRequest *br);
/* While a build runs (started once it is accepted): a thread answering its
 * agent requests from the local agents; stop joins it.  NULL (said) when
 * it cannot start; stop is safe on NULL. */
typedef struct cli_ssh_proxy cli_ssh_proxy;
cli_ssh_proxy *cli_ssh_proxy_start(cli_ctx *ctx, const cli_ssh_opts *o);
void cli_ssh_proxy_stop(cli_ssh_proxy *p);

/* ---- Ctrl-C (cancel.c) ---- */

/* Blocks SIGINT/SIGTERM in every thread and starts the thread that takes
 * them.  Call first in main(), before any other thread exists. */
void cli_signals_init(void);
/* From now on a signal cancels the job (what: "build", "push", ...) on
 * service s; job NULL or "": the job is being submitted, it is cancelled as
 * soon as it is armed again with its id.  Unarmed, a signal exits at once. */
void cli_cancel_arm(cli_ctx *ctx, cli_service s, const char *what, const char *job);
/* Back to exiting at once on a signal (and exits now if one came meanwhile
 * with no job to cancel). */
void cli_cancel_disarm(void);
/* on: cancel messages wait for cli_cancel_take_message() (a live view
 * prints them) instead of going to stderr; off: what is left goes there. */
void cli_cancel_route(bool on);
/* The oldest waiting cancel message, without "kiln: " and newline. */
bool cli_cancel_take_message(char *out, size_t cap);
/* The first signal received, 0 if none. */
int cli_cancel_signal(void);
/* 128 + the signal when one was received (130 for SIGINT, 143 for SIGTERM),
 * else rc. */
int cli_cancel_exit(int rc);

int cli_cmd_cancel(cli_ctx *ctx, int argc, char **argv);
int cli_cmd_config(cli_ctx *ctx, int argc, char **argv);
/* Loads the config file and puts the settled TLS files and timeout into ctx
 * (cmd_config.c).  Returns a CLI exit code (said). */
int cli_config_apply(cli_ctx *ctx);
/* Then, once ctx->url is settled: the configured event endpoints
 * (cli_events_override).  Returns a CLI exit code (said). */
int cli_config_events(cli_ctx *ctx);
int cli_cmd_completion(cli_ctx *ctx, int argc, char **argv);
/* Writes kiln.1 (from usage) and kiln-VERB.1 for every verb into dir (the
 * build runs `kiln __man-pages DIR`).  Returns a CLI exit code. */
int cli_man_pages(cli_ctx *ctx, const char *dir, void (*usage)(FILE *));
int cli_cmd_login(cli_ctx *ctx, int argc, char **argv);
int cli_cmd_logout(cli_ctx *ctx, int argc, char **argv);
int cli_cmd_status(cli_ctx *ctx, int argc, char **argv);
int cli_cmd_events(cli_ctx *ctx, int argc, char **argv);
int cli_cmd_images(cli_ctx *ctx, int argc, char **argv);
int cli_cmd_tag(cli_ctx *ctx, int argc, char **argv);
int cli_cmd_inspect(cli_ctx *ctx, int argc, char **argv);
int cli_cmd_history(cli_ctx *ctx, int argc, char **argv);
int cli_cmd_rmi(cli_ctx *ctx, int argc, char **argv);
int cli_cmd_prune(cli_ctx *ctx, int argc, char **argv);
int cli_cmd_import(cli_ctx *ctx, int argc, char **argv);
int cli_cmd_export(cli_ctx *ctx, int argc, char **argv);
int cli_cmd_build(cli_ctx *ctx, int argc, char **argv);
int cli_cmd_push(cli_ctx *ctx, int argc, char **argv);
int cli_cmd_pull(cli_ctx *ctx, int argc, char **argv);
int cli_cmd_manifest(cli_ctx *ctx, int argc, char **argv);

#endif
