/* Registry verbs, served by kiln-pusher: push, pull, manifest
 * create|add|annotate|inspect|push.  Each takes the registry flags
 * --tls-verify=false, --creds USER:PASS, --cert-dir DIR, --authfile FILE.
 * Credentials are resolved here, from the client's own Docker config
 * (creds.c), and sent with the request: the pusher reads no file for them. */
#include "cli.h"
#include "cleanup.h"
#include "cliconfig.h"
#include "config.h"
#include "follow.h"

#include <getopt.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_ANNOTATIONS 64

typedef struct reg_flags {
    Kiln__V1__RegistryOptions ro;
    char cert_dir[PATH_MAX], authfile[PATH_MAX];
    const char *platform;
    const char *os, *arch, *variant;
    char *annotations[MAX_ANNOTATIONS];
    size_t n_annotations;
    bool quiet, json;
    bool tls_given;  /* --tls-verify: the insecure registries of the config do not apply */
    cli_creds creds; /* resolved by resolve_creds; freed by the verb */
} reg_flags;

enum {
    R_TLS = 500,
    R_CREDS,
    R_CERTDIR,
    R_AUTHFILE,
    R_FORMAT,
    R_PLATFORM,
    R_OS,
    R_ARCH,
    R_VARIANT,
    R_ANNOTATION,
    R_QUIET,
    R_JSON,
    R_RETRY,
    R_RETRY_DELAY,
};

/* "2s", "500ms", "1m", or plain seconds -> milliseconds; -1 if malformed. */
static long parse_duration_ms(const char *s)
{
    char *end = NULL;
    double v = strtod(s, &end);
    if (end == s || v < 0)
        return -1;
    double ms = strcmp(end, "ms") == 0           ? v
                : strcmp(end, "s") == 0 || !*end ? v * 1000
                : strcmp(end, "m") == 0          ? v * 60000
                                                 : -1;
    return ms < 0 || ms > 600000 ? -1 : (long)ms;
}

/* Makes a path absolute for the pusher (same host). */
static int abs_path(const char *in, char out[PATH_MAX])
{
    if (in[0] == '/') {
        snprintf(out, PATH_MAX, "%s", in);
        return 0;
    }
    char cwd[PATH_MAX];
    if (getcwd(cwd, sizeof(cwd)) == NULL)
        return -1;
    int n = snprintf(out, PATH_MAX, "%s/%s", cwd, in);
    return n < 0 || n >= PATH_MAX ? -1 : 0;
}

/* The options of each registry verb: the parser's tables, also read by
 * completion and the man pages. */
#define REG_COMMON_OPTS                                                                            \
    {"tls-verify", required_argument, NULL, R_TLS}, {"creds", required_argument, NULL, R_CREDS},   \
        {"cert-dir", required_argument, NULL, R_CERTDIR},                                          \
        {"authfile", required_argument, NULL, R_AUTHFILE},                                         \
        {"retry", required_argument, NULL, R_RETRY},                                               \
        {"retry-times", required_argument, NULL, R_RETRY},                                         \
        {"retry-delay", required_argument, NULL, R_RETRY_DELAY},                                   \
    {                                                                                              \
        "help", no_argument, NULL, 'h'                                                             \
    }
#define OPTS_END                                                                                   \
    {                                                                                              \
        NULL, 0, NULL, 0                                                                           \
    }

const struct option cli_push_opts[] = {REG_COMMON_OPTS,
                                       {"format", required_argument, NULL, R_FORMAT},
                                       {"quiet", no_argument, NULL, R_QUIET},
                                       {"json", no_argument, NULL, R_JSON},
                                       OPTS_END};
const struct option cli_pull_opts[] = {REG_COMMON_OPTS,
                                       {"platform", required_argument, NULL, R_PLATFORM},
                                       {"quiet", no_argument, NULL, R_QUIET},
                                       {"json", no_argument, NULL, R_JSON},
                                       OPTS_END};
static const struct option help_only_opts[] = {{"help", no_argument, NULL, 'h'}, OPTS_END};
static const struct option manifest_add_opts[] = {REG_COMMON_OPTS, OPTS_END};
static const struct option manifest_annotate_opts[] = {
    {"os", required_argument, NULL, R_OS},
    {"arch", required_argument, NULL, R_ARCH},
    {"variant", required_argument, NULL, R_VARIANT},
    {"annotation", required_argument, NULL, R_ANNOTATION},
    {"help", no_argument, NULL, 'h'},
    OPTS_END};
static const struct option manifest_push_opts[] = {REG_COMMON_OPTS,
                                                   {"quiet", no_argument, NULL, R_QUIET},
                                                   {"json", no_argument, NULL, R_JSON},
                                                   OPTS_END};
const cli_subverb cli_manifest_subverbs[] = {
    {"create", help_only_opts},  {"add", manifest_add_opts},   {"annotate", manifest_annotate_opts},
    {"inspect", help_only_opts}, {"push", manifest_push_opts}, {NULL, NULL}};

/* The registry flags every registry verb takes (--tls-verify, --creds,
 * --cert-dir, --authfile, --retry, --retry-delay) into f.  Returns 0, -1
 * after a usage message, or 1 when c is none of them. */
static int reg_flag(const char *verb, reg_flags *f, int c, char *arg)
{
    switch (c) {
    case R_TLS:
        f->tls_given = true;
        if (strcmp(arg, "false") == 0)
            f->ro.insecure = true;
        else if (strcmp(arg, "true") != 0) {
            cli_errorf("%s: --tls-verify wants true or false", verb);
            return -1;
        }
        return 0;
    case R_CREDS:
        if (strchr(arg, ':') == NULL) {
            cli_errorf("%s: --creds wants USER:PASSWORD", verb);
            return -1;
        }
        f->ro.creds = arg;
        return 0;
    case R_CERTDIR:
        if (cli_check_path(verb, "--cert-dir", arg, CLI_PATH_DIR) != CLI_EXIT_OK ||
            abs_path(arg, f->cert_dir) < 0)
            return -1;
        f->ro.cert_dir = f->cert_dir;
        return 0;
    case R_AUTHFILE:
        /* Read here, by the CLI: no path goes to the pusher. */
        if (cli_check_path(verb, "--authfile", arg, CLI_PATH_FILE) != CLI_EXIT_OK ||
            abs_path(arg, f->authfile) < 0)
            return -1;
        return 0;
    case R_RETRY: {
        char *end = NULL;
        long v = strtol(arg, &end, 10);
        if (*arg == '\0' || *end || v < 0 || v > 100) {
            cli_errorf("%s: --retry wants a number of retries from 0 to 100", verb);
            return -1;
        }
        f->ro.retry = (uint32_t)v;
        f->ro.retry_set = true;
        return 0;
    }
    case R_RETRY_DELAY: {
        long ms = parse_duration_ms(arg);
        if (ms < 0) {
            cli_errorf("%s: --retry-delay wants a duration up to 10m (2s, 500ms)", verb);
            return -1;
        }
        f->ro.retry_delay_ms = (uint32_t)ms;
        return 0;
    }
    default:
        return 1;
    }
}

/* The flags of some verbs only (--format, --platform, --os, --arch,
 * --variant, --annotation, --quiet, --json) into f.  Returns 0, -1 after a
 * usage message, or 1 when c is none of them. */
static int verb_flag(const char *verb, reg_flags *f, int c, char *arg)
{
    switch (c) {
    case R_FORMAT:
        if (strcmp(arg, "oci") != 0 && strcmp(arg, "v2s2") != 0) {
            cli_errorf("%s: --format wants oci or v2s2", verb);
            return -1;
        }
        f->ro.format = arg;
        return 0;
    case R_PLATFORM:
        if (cli_check_platform(verb, arg) != CLI_EXIT_OK)
            return -1;
        f->platform = arg;
        return 0;
    case R_OS:
        f->os = arg;
        return 0;
    case R_ARCH:
        f->arch = arg;
        return 0;
    case R_VARIANT:
        f->variant = arg;
        return 0;
    case R_ANNOTATION:
        if (f->n_annotations == MAX_ANNOTATIONS || strchr(arg, '=') == NULL) {
            cli_errorf("%s: --annotation wants KEY=VALUE", verb);
            return -1;
        }
        f->annotations[f->n_annotations++] = arg;
        return 0;
    case R_QUIET:
        f->quiet = true;
        return 0;
    case R_JSON:
        f->json = true;
        return 0;
    default:
        return 1;
    }
}

/* Parses the options of table (the verb's); returns 0 to go on, 1 after
 * --help, -1 on a usage error. */
static int parse(int argc, char **argv, reg_flags *f, const struct option *table, const char *usage)
{
    kiln__v1__registry_options__init(&f->ro);
    cli_getopt_reset();
    int c;
    bool quiet_ok = false;
    for (size_t i = 0; table[i].name; i++)
        quiet_ok |= table[i].val == R_QUIET;
    while ((c = getopt_long(argc, argv, quiet_ok ? "hq" : "h", table, NULL)) != -1) {
        if (c == 'q')
            c = R_QUIET;
        if (c == 'h') {
            printf("%s", usage);
            return 1;
        }
        if (c == ':') {
            cli_errorf("%s: option '%s' needs a value", argv[0], argv[optind - 1]);
            return -1;
        }
        int r = reg_flag(argv[0], f, c, optarg);
        if (r > 0)
            r = verb_flag(argv[0], f, c, optarg);
        if (r > 0) {
            cli_errorf("%s: unknown option '%s'", argv[0], argv[optind - 1]);
            return -1;
        }
        if (r < 0)
            return -1;
    }
    return 0;
}

/* The client's credentials for the registries of ref and ref2 (either may
 * be NULL or an image id) into f->ro.  --creds is for every registry of the
 * call: nothing else is read then. */
static int resolve_creds(const char *verb, reg_flags *f, const char *ref, const char *ref2)
{
    char h[2][512];
    const char *hosts[2];
    size_t n = 0;
    if (ref != NULL && cli_ref_registry(ref, h[n], sizeof(h[n])))
        hosts[n] = h[n], n++;
    if (ref2 != NULL && cli_ref_registry(ref2, h[n], sizeof(h[n])))
        hosts[n] = h[n], n++;
    /* The config's insecure registries, when every registry of the call is
     * one of them (never a downgrade for another registry). */
    bool all = n > 0 && !f->tls_given;
    for (size_t i = 0; all && i < n; i++)
        all = cli_config_insecure_registry(hosts[i]);
    if (all)
        f->ro.insecure = true;
    if (f->ro.creds != NULL && *f->ro.creds)
        return CLI_EXIT_OK;
    int rc =
        cli_creds_resolve(verb, f->authfile[0] ? f->authfile : NULL, hosts, n, false, &f->creds);
    f->ro.credentials = f->creds.v;
    f->ro.n_credentials = f->creds.n;
    return rc;
}

static int nargs(int argc, char **argv, int min, int max, const char *what)
{
    int n = argc - optind;
    if (n < min || n > max) {
        cli_errorf("%s: expected %s; see '%s --help'", argv[0], what, argv[0]);
        return -1;
    }
    return 0;
}

/* Runs a job request on the pusher and follows it; prints the digest.  A job
 * that fails has passed validation, so its failure is the registry's side:
 * exit 5. */
static int run_job(cli_ctx *ctx, kiln_req *req, const reg_flags *f, const char *what)
{
    kiln_reply *rep = NULL;
    cli_cancel_arm(ctx, CLI_PUSHER, what, NULL);
    int rc = cli_call(ctx, CLI_PUSHER, req, &rep, 0);
    if (rc) {
        cli_cancel_disarm();
        return rc; /* refused up front: bad input, or the service is away */
    }
    char job[KILN_JOB_ID_MAX + 1], digest[80] = "";
    snprintf(job, sizeof(job), "%s", rep->job_accepted->job_id);
    kiln_rpc_reply_free(rep);
    cli_cancel_arm(ctx, CLI_PUSHER, what, job);
    rc = cli_follow_job(ctx, CLI_PUSHER, job, f->json, f->quiet, digest, sizeof(digest));
    cli_cancel_disarm();
    if (rc != CLI_EXIT_OK && cli_cancel_signal())
        return cli_cancel_exit(rc); /* interrupted: 130/143, however following ended */
    if (rc == CLI_EXIT_OK && !f->json)
        printf("%s\n", digest);
    return rc == CLI_EXIT_FAILED ? CLI_EXIT_REGISTRY : rc;
}

static const char reg_usage[] =
    "Registry flags:\n"
    "  --tls-verify=false   allow plain HTTP and unverified TLS\n"
    "  --creds USER:PASS    credentials for every registry of the call (else the\n"
    "                       client's Docker config: --authfile, $REGISTRY_AUTH_FILE,\n"
    "                       $DOCKER_CONFIG/config.json, ~/.docker/config.json)\n"
    "  --cert-dir DIR       certs.d root: DIR/<host:port>/*.crt CAs, NAME.cert +\n"
    "                       NAME.key client certificate (default /etc/containers/certs.d)\n"
    "  --authfile FILE      Docker config.json (auths, credHelpers, credsStore), read\n"
    "                       by the CLI, which sends the registry's credentials with\n"
    "                       the request (works with a remote kiln-pusher; --cert-dir\n"
    "                       does not: it names a directory on the pusher's host)\n"
    "  --retry N            retries per request after 5xx/429/408, resets and\n"
    "                       timeouts (default 6; --retry-times is the same)\n"
    "  --retry-delay D      fixed delay between retries (2s, 500ms; default:\n"
    "                       exponential backoff from 250 ms with jitter)\n"
    "A host that does not resolve, a refused connection or a plain-HTTP registry\n"
    "reached over HTTPS fails at once.  Registries on localhost, 127.0.0.0/8 and\n"
    "::1 may speak plain HTTP without --tls-verify=false.\n";

int cli_cmd_push(cli_ctx *ctx, int argc, char **argv)
{
    reg_flags f = {0};
    char usage[2048];
    snprintf(
        usage, sizeof(usage),
        "Usage: kiln push [--format oci|v2s2] [--quiet] [--json] [registry flags] REF [DEST]\n\n"
        "Pushes the image REF from the store to DEST (default REF): blobs the registry\n"
        "has are skipped, blobs of another repository of the same registry are mounted,\n"
        "large blobs go in resumable chunks.  Prints the manifest digest.\n\n%s",
        reg_usage);
    int p = parse(argc, argv, &f, cli_push_opts, usage);
    if (p)
        return p > 0 ? CLI_EXIT_OK : CLI_EXIT_USAGE;
    if (nargs(argc, argv, 1, 2, "REF [DEST]") < 0 ||
        cli_check_ref("push", "image", argv[optind], false) != CLI_EXIT_OK ||
        (argc - optind > 1 &&
         cli_check_ref("push", "destination", argv[optind + 1], false) != CLI_EXIT_OK))
        return CLI_EXIT_USAGE;
    kiln_req req = KILN__V1__REQUEST__INIT;
    Kiln__V1__PushRequest pr = KILN__V1__PUSH_REQUEST__INIT;
    char idbuf[KILN_DIGEST_STRLEN + 1];
    if ((pr.source = (char *)cli_image_ref(ctx, "push", argv[optind], idbuf, sizeof(idbuf))) ==
        NULL)
        return CLI_EXIT_USAGE;
    if (argc - optind == 1 && pr.source != argv[optind]) {
        cli_errorf("push: an image id needs a DEST to push to");
        return CLI_EXIT_USAGE;
    }
    pr.destination = argc - optind > 1 ? argv[optind + 1] : "";
    if (resolve_creds("push", &f, *pr.destination ? pr.destination : pr.source, NULL) !=
        CLI_EXIT_OK)
        return CLI_EXIT_USAGE;
    pr.registry = &f.ro;
    req.body_case = KILN__V1__REQUEST__BODY_PUSH;
    req.push = &pr;
    int rc = run_job(ctx, &req, &f, "push");
    cli_creds_free(&f.creds);
    return rc;
}

int cli_cmd_pull(cli_ctx *ctx, int argc, char **argv)
{
    reg_flags f = {0};
    char usage[2048];
    snprintf(usage, sizeof(usage),
             "Usage: kiln pull [--platform OS/ARCH[/VARIANT]] [--quiet] [--json] [registry flags] "
             "REF\n\n"
             "Pulls REF into the store (the host platform from an index unless --platform),\n"
             "verifying every blob; blobs already present are not fetched.  Prints the\n"
             "manifest digest.\n\n%s",
             reg_usage);
    int p = parse(argc, argv, &f, cli_pull_opts, usage);
    if (p)
        return p > 0 ? CLI_EXIT_OK : CLI_EXIT_USAGE;
    if (nargs(argc, argv, 1, 1, "REF") < 0 ||
        cli_check_ref("pull", "reference", argv[optind], false) != CLI_EXIT_OK)
        return CLI_EXIT_USAGE;
    kiln_req req = KILN__V1__REQUEST__INIT;
    Kiln__V1__PullRequest pr = KILN__V1__PULL_REQUEST__INIT;
    pr.ref = argv[optind];
    pr.platform = (char *)(f.platform ? f.platform : "");
    if (resolve_creds("pull", &f, pr.ref, NULL) != CLI_EXIT_OK)
        return CLI_EXIT_USAGE;
    pr.registry = &f.ro;
    req.body_case = KILN__V1__REQUEST__BODY_PULL;
    req.pull = &pr;
    int rc = run_job(ctx, &req, &f, "pull");
    cli_creds_free(&f.creds);
    return rc;
}

/* Whether ref names an image in the store (a quiet Inspect). */
static bool in_store(cli_ctx *ctx, const char *ref)
{
    kiln_req req = KILN__V1__REQUEST__INIT;
    Kiln__V1__InspectRequest ir = KILN__V1__INSPECT_REQUEST__INIT;
    ir.ref = (char *)ref;
    req.body_case = KILN__V1__REQUEST__BODY_INSPECT;
    req.inspect = &ir;
    kiln_rpc_client *c = NULL;
    kiln_reply *rep = NULL;
    kiln_error *err = NULL;
    bool found = kiln_rpc_client_new(&c, ctx->url[CLI_PUSHER], &ctx->transport, true, &err) == 0 &&
                 kiln_rpc_call(c, &req, &rep, ctx->timeout_ms, &err) == 0;
    kiln_error_free(&err);
    kiln_rpc_reply_free(rep);
    kiln_rpc_client_free(c);
    return found;
}

static const char manifest_usage[] =
    "Usage: kiln manifest create LIST\n"
    "       kiln manifest add [registry flags] LIST IMAGE\n"
    "       kiln manifest annotate [--os OS] [--arch ARCH] [--variant V] [--annotation K=V]...\n"
    "                              LIST DIGEST|IMAGE\n"
    "       kiln manifest inspect LIST\n"
    "       kiln manifest push [--quiet] [--json] [registry flags] LIST [DEST]\n\n"
    "Manifest lists are OCI image indexes in the store.  'add' takes a local image, or a\n"
    "remote one by reference (its manifest and platform are fetched, nothing is rebuilt).\n"
    "'push' pushes each image by digest, then the index by tag.\n\n";

/* Prints what a manifest call left (the image it added, else the list's
 * digest) when rc is CLI_EXIT_OK; frees rep.  Returns rc. */
static int manifest_done(int rc, kiln_reply *rep)
{
    if (rc == CLI_EXIT_OK)
        printf("%s\n", *rep->manifest_reply->added ? rep->manifest_reply->added
                                                   : rep->manifest_reply->digest);
    kiln_rpc_reply_free(rep);
    return rc;
}

/* kiln manifest create LIST (argv[0] is the subcommand). */
static int manifest_create(cli_ctx *ctx, int argc, char **argv)
{
    reg_flags f = {0};
    if (parse(argc, argv, &f, help_only_opts, manifest_usage) ||
        nargs(argc, argv, 1, 1, "LIST") < 0 ||
        cli_check_ref("manifest create", "list name", argv[optind], true) != CLI_EXIT_OK)
        return CLI_EXIT_USAGE;
    kiln_req req = KILN__V1__REQUEST__INIT;
    Kiln__V1__ManifestCreateRequest r = KILN__V1__MANIFEST_CREATE_REQUEST__INIT;
    r.list = argv[optind];
    req.body_case = KILN__V1__REQUEST__BODY_MANIFEST_CREATE;
    req.manifest_create = &r;
    kiln_reply *rep = NULL;
    int rc = cli_call(ctx, CLI_PUSHER, &req, &rep, 0);
    return manifest_done(rc, rep);
}

/* kiln manifest add [registry flags] LIST IMAGE. */
static int manifest_add(cli_ctx *ctx, int argc, char **argv)
{
    reg_flags f = {0};
    if (parse(argc, argv, &f, manifest_add_opts, manifest_usage) ||
        nargs(argc, argv, 2, 2, "LIST IMAGE") < 0 ||
        cli_check_ref("manifest add", "image", argv[optind + 1], false) != CLI_EXIT_OK)
        return CLI_EXIT_USAGE;
    kiln_req req = KILN__V1__REQUEST__INIT;
    Kiln__V1__ManifestAddRequest r = KILN__V1__MANIFEST_ADD_REQUEST__INIT;
    r.list = argv[optind];
    r.image = argv[optind + 1];
    if (resolve_creds("manifest add", &f, r.image, NULL) != CLI_EXIT_OK) {
        cli_creds_free(&f.creds);
        return CLI_EXIT_USAGE;
    }
    r.registry = &f.ro;
    req.body_case = KILN__V1__REQUEST__BODY_MANIFEST_ADD;
    req.manifest_add = &r;
    bool local = in_store(ctx, r.image);
    kiln_reply *rep = NULL;
    int rc = cli_call(ctx, CLI_PUSHER, &req, &rep, 600000);
    cli_creds_free(&f.creds);
    if (rc == CLI_EXIT_FAILED && !local)
        rc = CLI_EXIT_REGISTRY; /* the registry's answer about a remote image, as pull */
    return manifest_done(rc, rep);
}

/* kiln manifest annotate [--os OS] [--arch ARCH] [--variant V]
 * [--annotation K=V]... LIST DIGEST|IMAGE. */
static int manifest_annotate(cli_ctx *ctx, int argc, char **argv)
{
    reg_flags f = {0};
    if (parse(argc, argv, &f, manifest_annotate_opts, manifest_usage) ||
        nargs(argc, argv, 2, 2, "LIST DIGEST|IMAGE") < 0)
        return CLI_EXIT_USAGE;
    kiln_req req = KILN__V1__REQUEST__INIT;
    Kiln__V1__ManifestAnnotateRequest r = KILN__V1__MANIFEST_ANNOTATE_REQUEST__INIT;
    r.list = argv[optind];
    r.digest = argv[optind + 1];
    r.os = (char *)(f.os ? f.os : "");
    r.architecture = (char *)(f.arch ? f.arch : "");
    r.variant = (char *)(f.variant ? f.variant : "");
    r.annotations = f.annotations;
    r.n_annotations = f.n_annotations;
    req.body_case = KILN__V1__REQUEST__BODY_MANIFEST_ANNOTATE;
    req.manifest_annotate = &r;
    kiln_reply *rep = NULL;
    int rc = cli_call(ctx, CLI_PUSHER, &req, &rep, 0);
    return manifest_done(rc, rep);
}

/* kiln manifest inspect LIST: prints the index. */
static int manifest_inspect(cli_ctx *ctx, int argc, char **argv)
{
    reg_flags f = {0};
    if (parse(argc, argv, &f, help_only_opts, manifest_usage) ||
        nargs(argc, argv, 1, 1, "LIST") < 0)
        return CLI_EXIT_USAGE;
    kiln_req req = KILN__V1__REQUEST__INIT;
    Kiln__V1__ManifestInspectRequest r = KILN__V1__MANIFEST_INSPECT_REQUEST__INIT;
    r.list = argv[optind];
    req.body_case = KILN__V1__REQUEST__BODY_MANIFEST_INSPECT;
    req.manifest_inspect = &r;
    kiln_reply *rep = NULL;
    int rc = cli_call(ctx, CLI_PUSHER, &req, &rep, 0);
    if (rc == CLI_EXIT_OK)
        printf("%s\n", rep->manifest_reply->index_json);
    kiln_rpc_reply_free(rep);
    return rc;
}

/* kiln manifest push [--quiet] [--json] [registry flags] LIST [DEST]: a
 * job on the pusher, followed. */
static int manifest_push(cli_ctx *ctx, int argc, char **argv)
{
    reg_flags f = {0};
    if (parse(argc, argv, &f, manifest_push_opts, manifest_usage) ||
        nargs(argc, argv, 1, 2, "LIST [DEST]") < 0 ||
        (argc - optind > 1 &&
         cli_check_ref("manifest push", "destination", argv[optind + 1], false) != CLI_EXIT_OK))
        return CLI_EXIT_USAGE;
    kiln_req req = KILN__V1__REQUEST__INIT;
    Kiln__V1__ManifestPushRequest r = KILN__V1__MANIFEST_PUSH_REQUEST__INIT;
    r.list = argv[optind];
    r.destination = argc - optind > 1 ? argv[optind + 1] : "";
    int rc = resolve_creds("manifest push", &f, *r.destination ? r.destination : r.list, NULL);
    if (rc != CLI_EXIT_OK) {
        cli_creds_free(&f.creds);
        return CLI_EXIT_USAGE;
    }
    r.registry = &f.ro;
    req.body_case = KILN__V1__REQUEST__BODY_MANIFEST_PUSH;
    req.manifest_push = &r;
    rc = run_job(ctx, &req, &f, "push");
    cli_creds_free(&f.creds);
    return rc;
}

int cli_cmd_manifest(cli_ctx *ctx, int argc, char **argv)
{
    static const struct {
        const char *name;
        int (*run)(cli_ctx *, int, char **);
    } subs[] = {{"create", manifest_create},
                {"add", manifest_add},
                {"annotate", manifest_annotate},
                {"inspect", manifest_inspect},
                {"push", manifest_push}};
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        printf("%s%s", manifest_usage, reg_usage);
        return argc < 2 ? CLI_EXIT_USAGE : CLI_EXIT_OK;
    }
    for (size_t i = 0; i < KILN_ARRAY_SIZE(subs); i++)
        if (strcmp(argv[1], subs[i].name) == 0)
            return subs[i].run(ctx, argc - 1, argv + 1);
    cli_errorf("manifest: unknown subcommand '%s' (create, add, annotate, inspect, push)", argv[1]);
    return CLI_EXIT_USAGE;
}
