/* kiln build: flags per SPEC §10.  This release resolves the Dockerfile into
 * a build plan (--plan) on kiln-builder; running the plan is the build
 * engine's job and is refused with a clear message until it lands. */
#include "cli.h"

#include <errno.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#define MAX_LIST       256
#define DOCKERFILE_MAX ((size_t)16 << 20)

/* Reads a whole file ("-": stdin) up to DOCKERFILE_MAX bytes. */
static char *read_all(const char *path, kiln_error **err)
{
    FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "re");
    if (f == NULL) {
        kiln_error_set(err, kiln_code_from_errno(errno), errno, "%s", path);
        return NULL;
    }
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap);
    while (buf) {
        size_t n = fread(buf + len, 1, cap - len - 1, f);
        len += n;
        if (n == 0)
            break;
        if (len + 1 == cap) {
            if (cap > DOCKERFILE_MAX) {
                free(buf);
                buf = NULL;
                kiln_error_set(err, KILN_EINVAL, 0, "%s: larger than %zu bytes", path,
                               DOCKERFILE_MAX);
                break;
            }
            char *nb = realloc(buf, cap * 2);
            if (nb == NULL) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = nb;
            cap *= 2;
        }
    }
    bool bad = f != stdin && ferror(f);
    if (f != stdin)
        fclose(f);
    if (buf && bad) {
        free(buf);
        kiln_error_set(err, KILN_EIO, 0, "read %s", path);
        return NULL;
    }
    if (buf)
        buf[len] = '\0';
    if (buf && memchr(buf, '\0', len)) {
        free(buf);
        kiln_error_set(err, KILN_EINVAL, 0, "%s: contains NUL bytes; not a Dockerfile", path);
        return NULL;
    }
    return buf;
}

static const char usage[] =
    "Usage: kiln build [flags] CONTEXT\n"
    "\n"
    "Builds the Dockerfile in CONTEXT (or -f FILE).\n"
    "\n"
    "  -t, --tag REF          tag the image (repeatable)\n"
    "  -f, --file FILE        Dockerfile (default CONTEXT/Dockerfile; '-' reads stdin)\n"
    "  --build-arg K[=V]      set a build argument (K alone takes $K from the environment)\n"
    "  --target STAGE         build up to this stage\n"
    "  --platform OS/ARCH     target platform (default: the builder's)\n"
    "  --no-cache             do not use the instruction cache\n"
    "  --network host|none    network for RUN\n"
    "  --secret id=ID,src=F   a secret for RUN --mount=type=secret\n"
    "  --push                 push each tag after the build\n"
    "  --tls-verify=false     allow plain-HTTP / unverified registries\n"
    "  --progress MODE        auto|tty|plain|json|quiet\n"
    "  --iidfile FILE         write the image digest to FILE\n"
    "  --plan                 print the resolved build plan as JSON and run nothing\n";

enum {
    B_TAG = 't',
    B_FILE = 'f',
    B_ARG = 400,
    B_TARGET,
    B_PLATFORM,
    B_NOCACHE,
    B_NETWORK,
    B_SECRET,
    B_PUSH,
    B_TLSVERIFY,
    B_PROGRESS,
    B_IIDFILE,
    B_PLAN,
};

int cli_cmd_build(cli_ctx *ctx, int argc, char **argv)
{
    static const struct option opts[] = {
        {"tag", required_argument, NULL, B_TAG},
        {"file", required_argument, NULL, B_FILE},
        {"build-arg", required_argument, NULL, B_ARG},
        {"target", required_argument, NULL, B_TARGET},
        {"platform", required_argument, NULL, B_PLATFORM},
        {"no-cache", no_argument, NULL, B_NOCACHE},
        {"network", required_argument, NULL, B_NETWORK},
        {"secret", required_argument, NULL, B_SECRET},
        {"push", no_argument, NULL, B_PUSH},
        {"tls-verify", required_argument, NULL, B_TLSVERIFY},
        {"progress", required_argument, NULL, B_PROGRESS},
        {"iidfile", required_argument, NULL, B_IIDFILE},
        {"plan", no_argument, NULL, B_PLAN},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *file = NULL, *target = "", *platform = "";
    char *args[MAX_LIST];
    size_t n_args = 0, n_tags = 0;
    bool plan = false;
    int c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "+t:f:h", opts, NULL)) != -1) {
        switch (c) {
        case 'h':
            printf("%s", usage);
            return CLI_EXIT_OK;
        case B_TAG:
            n_tags++;
            break;
        case B_FILE:
            file = optarg;
            break;
        case B_ARG:
            if (n_args == MAX_LIST) {
                cli_errorf("build: too many --build-arg");
                return CLI_EXIT_USAGE;
            }
            if (strchr(optarg, '=') == NULL && getenv(optarg)) {
                /* Docker: a bare name takes its value from the environment. */
                if (asprintf(&args[n_args], "%s=%s", optarg, getenv(optarg)) < 0)
                    return CLI_EXIT_FAILED;
            } else {
                args[n_args] = strdup(optarg);
            }
            n_args++;
            break;
        case B_TARGET:
            target = optarg;
            break;
        case B_PLATFORM:
            platform = optarg;
            break;
        case B_NETWORK:
            if (strcmp(optarg, "host") != 0 && strcmp(optarg, "none") != 0 &&
                strcmp(optarg, "default") != 0) {
                cli_errorf("build: --network wants host or none, got '%s'", optarg);
                return CLI_EXIT_USAGE;
            }
            break;
        case B_PROGRESS:
            if (strcmp(optarg, "auto") && strcmp(optarg, "tty") && strcmp(optarg, "plain") &&
                strcmp(optarg, "json") && strcmp(optarg, "quiet")) {
                cli_errorf("build: --progress wants auto, tty, plain, json or quiet");
                return CLI_EXIT_USAGE;
            }
            break;
        case B_TLSVERIFY:
            if (strcmp(optarg, "true") != 0 && strcmp(optarg, "false") != 0) {
                cli_errorf("build: --tls-verify wants true or false");
                return CLI_EXIT_USAGE;
            }
            break;
        case B_NOCACHE:
        case B_SECRET:
        case B_PUSH:
        case B_IIDFILE:
            break;
        case B_PLAN:
            plan = true;
            break;
        case ':':
            cli_errorf("build: option '%s' needs a value", argv[optind - 1]);
            return CLI_EXIT_USAGE;
        default:
            cli_errorf("build: unknown option '%s'", argv[optind - 1]);
            return CLI_EXIT_USAGE;
        }
    }
    int rc = CLI_EXIT_OK;
    char *text = NULL, *path = NULL;
    if (argc - optind != 1) {
        cli_errorf("build: expected exactly one CONTEXT argument; see 'kiln build --help'");
        rc = CLI_EXIT_USAGE;
        goto out;
    }
    if (!plan) {
        cli_errorf("build: this release of Kiln resolves build plans only (kiln build --plan); "
                   "the build engine is not part of it yet");
        rc = CLI_EXIT_FAILED;
        goto out;
    }
    kiln_error *err = NULL;
    if (file == NULL && asprintf(&path, "%s/Dockerfile", argv[optind]) < 0) {
        rc = CLI_EXIT_FAILED;
        goto out;
    }
    text = read_all(file ? file : path, &err);
    if (text == NULL) {
        cli_errorf("build: %s", err ? err->msg : "out of memory");
        kiln_error_free(&err);
        rc = CLI_EXIT_FAILED;
        goto out;
    }
    (void)n_tags;
    kiln_req req = KILN__V1__REQUEST__INIT;
    Kiln__V1__PlanRequest pr = KILN__V1__PLAN_REQUEST__INIT;
    pr.dockerfile = text;
    pr.filename = (char *)(file ? file : "Dockerfile");
    pr.build_args = args;
    pr.n_build_args = n_args;
    pr.target = (char *)target;
    pr.platform = (char *)platform;
    req.body_case = KILN__V1__REQUEST__BODY_PLAN;
    req.plan = &pr;
    kiln_reply *rep = NULL;
    rc = cli_call(ctx, CLI_BUILDER, &req, &rep, 0);
    if (rc == CLI_EXIT_OK) {
        for (size_t i = 0; i < rep->plan_reply->n_warnings; i++)
            fprintf(stderr, "warning: %s\n", rep->plan_reply->warnings[i]);
        printf("%s\n", rep->plan_reply->plan_json);
    } else if (rc == CLI_EXIT_FAILED) {
        rc = CLI_EXIT_BUILD;
    }
    kiln_rpc_reply_free(rep);
out:
    for (size_t i = 0; i < n_args; i++)
        free(args[i]);
    free(text);
    free(path);
    return rc;
}
