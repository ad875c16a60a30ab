/* kiln build: flags per SPEC §10.  --plan asks kiln-builder for the resolved
 * plan; otherwise the build runs as a job on kiln-builder and its events are
 * rendered by render_build.c. */
#include "cli.h"
#include "build_cache.h"
#include "cleanup.h"
#include "config.h"
#include "units.h"
#include "pool.h"
#include "transport.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

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

/* Loads a --secret file into the request (its path is then not sent). */
static int read_secret(Kiln__V1__SecretSpec *s)
{
    if (*s->path == '\0') /* env=VAR: the value is already here */
        return CLI_EXIT_OK;
    _cleanup_close_ int fd = open(s->path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) < 0) {
        cli_errorf("build: secret %s: %s: %s", s->id, s->path, strerror(errno));
        return CLI_EXIT_FAILED;
    }
    if (!S_ISREG(st.st_mode) || st.st_size > KILN_SECRET_MAX) {
        cli_errorf("build: secret %s: %s: not a regular file of at most %d bytes", s->id, s->path,
                   KILN_SECRET_MAX);
        return CLI_EXIT_USAGE;
    }
    uint8_t *buf = malloc((size_t)st.st_size + 1);
    size_t got = 0;
    ssize_t n = 0;
    while (buf && got < (size_t)st.st_size &&
           (n = read(fd, buf + got, (size_t)st.st_size - got)) > 0)
        got += (size_t)n;
    if (buf == NULL || n < 0) {
        cli_errorf("build: secret %s: %s: %s", s->id, s->path, strerror(errno));
        free(buf);
        return CLI_EXIT_FAILED;
    }
    s->data.data = buf;
    s->data.len = got;
    s->path = (char *)"";
    return CLI_EXIT_OK;
}

/* Packs and sends the context, and points br at it instead of a path. */
static int stream_context(cli_ctx *ctx, cli_context *cc, const char *dir, const char *progress,
                          const char *ignore_text, Kiln__V1__BuildRequest *br)
{
    cli_progress mode = cli_progress_mode(progress);
    kiln_error *err = NULL;
    if (cli_context_pack(cc, dir, ignore_text, &err) < 0) {
        cli_errorf("build: %s", err ? err->msg : "cannot pack the context");
        kiln_error_free(&err);
        return CLI_EXIT_FAILED;
    }
    int rc = cli_context_send(ctx, cc, mode);
    if (rc != CLI_EXIT_OK)
        return rc;
    br->context_dir = (char *)"";
    br->context_digest = cc->digest;
    br->context_chunks = cc->pb_ptrs;
    br->n_context_chunks = cc->n_chunks;
    return CLI_EXIT_OK;
}

/* The images a Dockerfile names (FROM, COPY --from=) that look like
 * references: not stage names, not scratch, nothing with a $ (an ARG the
 * builder expands; the credentials of every auths entry go with the build
 * for those).  Up to cap canonical registry hosts into hosts[]. */
static size_t dockerfile_registries(const char *text, char hosts[][512], size_t cap)
{
    char stages[64][128];
    size_t n_stages = 0, n = 0;
    for (const char *line = text; line && *line && n < cap;) {
        const char *end = strchr(line, '\n');
        size_t len = end ? (size_t)(end - line) : strlen(line);
        char buf[1024];
        snprintf(buf, sizeof(buf), "%.*s", (int)(len < sizeof(buf) ? len : sizeof(buf) - 1), line);
        line = end ? end + 1 : NULL;
        char *save = NULL, *w = strtok_r(buf, " \t\r", &save);
        if (w == NULL)
            continue;
        bool from = strcasecmp(w, "FROM") == 0, copy = strcasecmp(w, "COPY") == 0;
        if (!from && !copy)
            continue;
        const char *image = NULL;
        while ((w = strtok_r(NULL, " \t\r", &save)) != NULL) {
            if (copy && strncmp(w, "--from=", 7) == 0) {
                image = w + 7;
                break;
            }
            if (strncmp(w, "--", 2) == 0)
                continue;
            if (from && image == NULL) {
                image = w;
                continue;
            }
            if (from && strcasecmp(w, "AS") == 0 && (w = strtok_r(NULL, " \t\r", &save)) &&
                n_stages < 64)
                snprintf(stages[n_stages++], sizeof(stages[0]), "%s", w);
            break;
        }
        if (image == NULL || strchr(image, '$') || strcmp(image, "scratch") == 0)
            continue;
        bool stage = false;
        for (size_t i = 0; i < n_stages && !stage; i++)
            stage = strcasecmp(stages[i], image) == 0;
        if (!stage && cli_ref_registry(image, hosts[n], sizeof(hosts[n])))
            n++;
    }
    return n;
}

/* Everything the command line names is checked before anything is sent: a
 * bad tag must not cost a whole build. */
static int check_args(const char *context, const char *file, const char *const *tags, size_t n_tags,
                      const char *const *args, size_t n_args, const char *iidfile, bool push,
                      bool plan)
{
    int rc = CLI_EXIT_OK;
    for (size_t i = 0; i < n_tags && rc == CLI_EXIT_OK; i++)
        rc = cli_check_ref("build", "tag", tags[i], true);
    for (size_t i = 0; i < n_args && rc == CLI_EXIT_OK; i++)
        if (args[i][0] == '=' || args[i][0] == '\0') {
            cli_errorf("build: --build-arg wants NAME[=VALUE], got '%s'", args[i]);
            rc = CLI_EXIT_USAGE;
        }
    if (rc == CLI_EXIT_OK && !plan)
        rc = cli_check_path("build", "context", context, CLI_PATH_DIR);
    if (rc == CLI_EXIT_OK && file && strcmp(file, "-") != 0)
        rc = cli_check_path("build", "Dockerfile", file, CLI_PATH_FILE);
    if (rc == CLI_EXIT_OK && iidfile)
        rc = cli_check_path("build", "--iidfile", iidfile, CLI_PATH_NEW_FILE);
    if (rc == CLI_EXIT_OK && push && n_tags == 0) {
        cli_errorf("build: --push needs at least one -t REF to push to");
        rc = CLI_EXIT_USAGE;
    }
    return rc;
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
    "  --platform P[,P...]    target platform(s), OS/ARCH[/VARIANT] (default: the\n"
    "                         builder's).  Several: one build per platform, then an\n"
    "                         OCI image index of them under each -t (pushed with\n"
    "                         --push; nothing is tagged unless every platform\n"
    "                         built); other platforms' RUNs need QEMU user emulation\n"
    "                         (binfmt_misc, see kiln status)\n"
    "  --format oci|docker    manifests --push writes: OCI (default) or Docker\n"
    "                         schema 2 (an index as a Docker manifest list)\n"
    "  --no-cache             do not use the instruction cache\n"
    "  --pull                 pull every base image even when the store has it\n"
    "  --label K=V            set a label on the image (repeatable)\n"
    "  --network host|none    network for RUN (default: private, outbound only; host needs\n"
    "                         kiln-builder --allow-insecure-entitlement network.host)\n"
    "  --secret id=ID,src=F   a secret for RUN --mount=type=secret (id=ID,env=VAR: the\n"
    "                         value of the client's environment variable VAR; a bare\n"
    "                         id=X: the variable X if set, else the file X)\n"
    "  --memory SIZE          memory (swap included) of each RUN, e.g. 512M, 2G\n"
    "  --pids-limit N         processes and threads of each RUN at once\n"
    "  --run-timeout DUR      time of each RUN, e.g. 90s, 10m, 1h30m\n"
    "  --build-timeout DUR    time of the whole build\n"
    "                         (these four may lower the builder's limits, never raise\n"
    "                         them: a build asking for more is refused)\n"
    "  --add-host NAME:IP     add a line to each RUN's /etc/hosts (repeatable)\n"
    "  --ulimit NAME=S[:H]    a resource limit of each RUN (repeatable), as docker:\n"
    "                         nofile, nproc, core, stack, memlock, fsize, cpu, ...;\n"
    "                         -1 or unlimited; a hard limit above the builder's own\n"
    "                         is refused\n"
    "  --shm-size SIZE        size of each RUN's /dev/shm (default 64m), at most\n"
    "                         the RUN memory limit\n"
    "  --ssh default|ID[=SOCKET]  an SSH agent for RUN --mount=type=ssh[,id=ID]\n"
    "                         (default: $SSH_AUTH_SOCK; repeatable); the agent stays\n"
    "                         here: the builder relays the RUN's requests to this\n"
    "                         command, which passes on listing and signing only\n"
    "  --push                 push each tag after the build\n"
    "  --tls-verify=false     allow plain-HTTP / unverified registries\n"
    "  --creds USER:PASS      registry credentials for pulls and --push\n"
    "  --authfile FILE        Docker config.json with registry credentials (default\n"
    "                         $REGISTRY_AUTH_FILE, $DOCKER_CONFIG/config.json,\n"
    "                         ~/.docker/config.json), read by the CLI: the build\n"
    "                         takes its auths entries, and the credential helpers'\n"
    "                         answers for the registries of -t (with --push) and of\n"
    "                         the FROM / COPY --from images the Dockerfile names\n"
    "  --cert-dir DIR         certs.d root: DIR/<host:port>/*.crt CAs, NAME.cert +\n"
    "                         NAME.key client certificate\n"
    "  -q, --quiet            print only the image digest (--progress=quiet)\n"
    "  --progress MODE        auto|tty|plain|json|quiet (auto: tty on a terminal unless\n"
    "                         TERM=dumb, else plain; NO_COLOR turns colour off); default\n"
    "                         $KILN_PROGRESS, else $BUILDKIT_PROGRESS, else the config file's\n"
    "  --iidfile FILE         write the image digest to FILE\n"
    "  -o, --output OUT       also write the result here, on the client: type=local,dest=DIR\n"
    "                         (the image's files; -o DIR is the same), type=tar,dest=FILE\n"
    "                         (a tar of them) or type=oci,dest=FILE (an OCI archive)\n"
    "  --annotation K=V       a manifest annotation ([manifest:]K=V; repeatable)\n"
    "  --build-context NAME=DIR|NAME=docker-image://REF\n"
    "                         a named context for FROM NAME and COPY --from=NAME: a\n"
    "                         directory (sent as bytes and imported as an image) or an\n"
    "                         image used instead of NAME (repeatable)\n"
    "  --metadata-file FILE   write the image digest, config digest, names and build id\n"
    "                         as JSON (buildx's keys)\n"
    "  --plan                 print the resolved build plan as JSON and run nothing\n"
    "  --context-transfer M   auto|local|stream: local sends CONTEXT as a path on the\n"
    "                         builder's host; stream sends its content (after\n"
    "                         .containerignore or .dockerignore) as chunks the builder\n"
    "                         keeps and reuses;\n"
    "                         auto (default) is local when the builder is reached\n"
    "                         over ipc:// and sees this filesystem, else stream\n"
    "                         (then --secret contents are sent too)\n"
    "  --affinity KEY         with a pool of builders: the key that places the build\n"
    "                         (default: the first -t repository + the Dockerfile path)\n"
    "  --cache-to type=registry,ref=REF[,mode=min|max]\n"
    "  --cache-to type=local,dest=DIR[,mode=min|max]\n"
    "                         export the built steps' cache records and layers to REF\n"
    "                         or, as an OCI layout, to DIR here (min: the final\n"
    "                         stage's, default; max: every stage's)\n"
    "  --cache-from [type=registry,ref=]REF | type=local,src=DIR\n"
    "                         use that step cache on a local miss (repeatable; a REF\n"
    "                         or DIR that does not exist is a warning)\n";

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
    B_CREDS,
    B_AUTHFILE,
    B_CERTDIR,
    B_CTXTRANSFER,
    B_LABEL,
    B_PULL,
    B_MEMORY,
    B_PIDS,
    B_RUN_TIMEOUT,
    B_BUILD_TIMEOUT,
    B_AFFINITY, /* pool.c */
    B_ADD_HOST, /* run_opts.c, in cli_run_flag's order */
    B_ULIMIT,
    B_SHM_SIZE,
    B_SSH, /* ssh_proxy.c */
    B_CACHE_TO,
    B_CACHE_FROM,
    B_FORMAT, /* --format for --push; several --platform: build_multi.c */
};
/* Client-side build options (build_opts.c, build_output.c). */
enum { B_OUTPUT = 'o', B_ANNOTATION = 460, B_METADATA, B_BUILD_CONTEXT };

/* --memory, --pids-limit, --run-timeout, --build-timeout into *out; -1 after
 * a usage message. */
static int limit_flag(int opt, const char *arg, uint64_t *out)
{
    long long v = -1;
    char *end = NULL;
    if (opt == B_MEMORY)
        v = kiln_parse_size(arg);
    else if (opt == B_PIDS)
        v = strtoll(arg, &end, 10), v = end == arg || *end ? -1 : v;
    else
        v = kiln_parse_duration_ms(arg);
    if (v <= 0) {
        cli_errorf("build: --%s wants %s, got '%s'",
                   opt == B_MEMORY        ? "memory"
                   : opt == B_PIDS        ? "pids-limit"
                   : opt == B_RUN_TIMEOUT ? "run-timeout"
                                          : "build-timeout",
                   opt == B_MEMORY ? "a size like 512M or 2G"
                   : opt == B_PIDS ? "a positive number"
                                   : "a duration like 90s, 10m or 1h30m",
                   arg);
        return -1;
    }
    *out = (uint64_t)v;
    return 0;
}

/* The options of the verb, for its parser, completion and man page. */
const struct option cli_build_opts[] = {
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
    {"creds", required_argument, NULL, B_CREDS},
    {"authfile", required_argument, NULL, B_AUTHFILE},
    {"cert-dir", required_argument, NULL, B_CERTDIR},
    {"context-transfer", required_argument, NULL, B_CTXTRANSFER},
    {"label", required_argument, NULL, B_LABEL},
    {"pull", no_argument, NULL, B_PULL},
    {"memory", required_argument, NULL, B_MEMORY},
    {"pids-limit", required_argument, NULL, B_PIDS},
    {"run-timeout", required_argument, NULL, B_RUN_TIMEOUT},
    {"build-timeout", required_argument, NULL, B_BUILD_TIMEOUT},
    {"affinity", required_argument, NULL, B_AFFINITY},
    {"add-host", required_argument, NULL, B_ADD_HOST},
    {"ulimit", required_argument, NULL, B_ULIMIT},
    {"shm-size", required_argument, NULL, B_SHM_SIZE},
    {"ssh", required_argument, NULL, B_SSH},
    {"output", required_argument, NULL, B_OUTPUT},
    {"annotation", required_argument, NULL, B_ANNOTATION},
    {"metadata-file", required_argument, NULL, B_METADATA},
    {"build-context", required_argument, NULL, B_BUILD_CONTEXT},
    {"cache-to", required_argument, NULL, B_CACHE_TO},
    {"cache-from", required_argument, NULL, B_CACHE_FROM},
    {"format", required_argument, NULL, B_FORMAT},
    {"quiet", no_argument, NULL, 'q'},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

/* Everything kiln build's command line says, filled by build_parse and
 * build_validate, plus what the build reads and resolves from it.  The
 * owned members are released by build_opts_dispose on every path. */
struct build_opts {
    const char *context; /* CONTEXT, as given */
    const char *file, *target, *platform, *network, *progress, *iidfile, *transfer;
    const char *affinity, *push_format, *metadata, *creds;
    bool help, plan, no_cache, push, insecure, pull;
    char **platforms; /* --platform, normalised (build_multi.c); owned */
    size_t n_platforms;
    char platform_csv[512]; /* the same, joined by commas */
    char *args[MAX_LIST];   /* owned */
    char *tags[MAX_LIST], *labels[MAX_LIST], *annotations[MAX_LIST];
    size_t n_args, n_tags, n_labels, n_annotations, n_named, n_secrets;
    cli_output output;
    cli_named_context named[16];
    char *named_kv[16];                                 /* owned */
    Kiln__V1__SecretSpec secrets[32], *secret_ptrs[32]; /* ids and data owned */
    char secret_paths[32][PATH_MAX];
    uint64_t lim[4]; /* memory, pids, run timeout, build timeout */
    char authfile[PATH_MAX], cert_dir[PATH_MAX];
    cli_run_opts run_opts;
    cli_ssh_opts *ssh;          /* borrowed: large, one build per process */
    cli_build_cache *cache;     /* borrowed: likewise */
    char *text, *path, *ignore; /* the Dockerfile, its default path, the ignore file; owned */
    cli_creds creds_v;          /* owned */
};

/* Releases what o owns (secret contents wiped). */
static void build_opts_dispose(struct build_opts *o)
{
    cli_platform_list_free(o->platforms, o->n_platforms);
    cli_creds_free(&o->creds_v);
    for (size_t i = 0; i < o->n_secrets; i++) {
        free(o->secrets[i].id);
        if (o->secrets[i].data.data) {
            explicit_bzero(o->secrets[i].data.data, o->secrets[i].data.len);
            free(o->secrets[i].data.data);
        }
    }
    for (size_t i = 0; i < o->n_args; i++)
        free(o->args[i]);
    for (size_t i = 0; i < o->n_named; i++)
        free(o->named_kv[i]);
    free(o->text);
    free(o->path);
    free(o->ignore);
}

/* -t, --build-arg, --label: the plain repeatable flags. */
static int flag_list(struct build_opts *o, int c, char *arg)
{
    if (c == B_TAG) {
        if (o->n_tags == MAX_LIST) {
            cli_errorf("build: too many -t");
            return CLI_EXIT_USAGE;
        }
        o->tags[o->n_tags++] = arg;
    } else if (c == B_LABEL) {
        if (o->n_labels == MAX_LIST || arg[0] == '=' || strchr(arg, '=') == NULL) {
            cli_errorf("build: --label wants KEY=VALUE");
            return CLI_EXIT_USAGE;
        }
        o->labels[o->n_labels++] = arg;
    } else {
        if (o->n_args == MAX_LIST) {
            cli_errorf("build: too many --build-arg");
            return CLI_EXIT_USAGE;
        }
        if (strchr(arg, '=') == NULL && getenv(arg)) {
            /* Docker: a bare name takes its value from the environment. */
            if (asprintf(&o->args[o->n_args], "%s=%s", arg, getenv(arg)) < 0)
                return CLI_EXIT_FAILED;
        } else {
            o->args[o->n_args] = strdup(arg);
        }
        o->n_args++;
    }
    return CLI_EXIT_OK;
}

/* --secret, --annotation, --build-context: repeatable flags parsed by
 * build_opts.c. */
static int flag_parsed_list(struct build_opts *o, int c, char *arg)
{
    int rc;
    if (c == B_SECRET) {
        if (o->n_secrets == KILN_ARRAY_SIZE(o->secrets)) {
            cli_errorf("build: too many --secret");
            return CLI_EXIT_USAGE;
        }
        size_t i = o->n_secrets;
        if ((rc = cli_secret_parse(arg, &o->secrets[i], o->secret_paths[i])))
            return rc;
        o->secret_ptrs[i] = &o->secrets[i];
        o->n_secrets++;
    } else if (c == B_ANNOTATION) {
        if (o->n_annotations == MAX_LIST) {
            cli_errorf("build: too many --annotation");
            return CLI_EXIT_USAGE;
        }
        if ((rc = cli_annotation_check(arg, (const char **)&o->annotations[o->n_annotations])))
            return rc;
        o->n_annotations++;
    } else {
        if (o->n_named == KILN_ARRAY_SIZE(o->named)) {
            cli_errorf("build: too many --build-context");
            return CLI_EXIT_USAGE;
        }
        return cli_build_context_parse(arg, &o->named[o->n_named++]);
    }
    return CLI_EXIT_OK;
}

/* --network, --progress, --tls-verify: one word out of a few. */
static int flag_choice(struct build_opts *o, int c, char *arg)
{
    if (c == B_NETWORK) {
        if (strcmp(arg, "host") != 0 && strcmp(arg, "none") != 0 && strcmp(arg, "default") != 0) {
            cli_errorf("build: --network wants host or none, got '%s'", arg);
            return CLI_EXIT_USAGE;
        }
        o->network = strcmp(arg, "default") == 0 ? "" : arg;
    } else if (c == B_PROGRESS) {
        if (strcmp(arg, "auto") && strcmp(arg, "tty") && strcmp(arg, "plain") &&
            strcmp(arg, "json") && strcmp(arg, "quiet")) {
            cli_errorf("build: --progress wants auto, tty, plain, json or quiet");
            return CLI_EXIT_USAGE;
        }
        o->progress = arg;
    } else {
        if (strcmp(arg, "true") != 0 && strcmp(arg, "false") != 0) {
            cli_errorf("build: --tls-verify wants true or false");
            return CLI_EXIT_USAGE;
        }
        o->insecure = strcmp(arg, "false") == 0;
    }
    return CLI_EXIT_OK;
}

/* --format, --context-transfer, --creds, --authfile, --cert-dir: the flags
 * for pushing and for reaching the builder and registries. */
static int flag_transfer(struct build_opts *o, int c, char *arg)
{
    switch (c) {
    case B_FORMAT:
        if (strcmp(arg, "oci") && strcmp(arg, "docker") && strcmp(arg, "v2s2")) {
            cli_errorf("build: --format wants oci or docker, got '%s'", arg);
            return CLI_EXIT_USAGE;
        }
        o->push_format = strcmp(arg, "oci") == 0 ? "" : "v2s2";
        break;
    case B_CTXTRANSFER:
        if (strcmp(arg, "auto") && strcmp(arg, "local") && strcmp(arg, "stream")) {
            cli_errorf("build: --context-transfer wants auto, local or stream, got '%s'", arg);
            return CLI_EXIT_USAGE;
        }
        o->transfer = arg;
        break;
    case B_CREDS:
        if (strchr(arg, ':') == NULL) {
            cli_errorf("build: --creds wants USER:PASSWORD");
            return CLI_EXIT_USAGE;
        }
        o->creds = arg;
        break;
    default: /* B_AUTHFILE, B_CERTDIR */
        /* --authfile is read here; --cert-dir is taken on the pusher's
         * host, which must be this one: make it absolute. */
        if (realpath(arg, c == B_AUTHFILE ? o->authfile : o->cert_dir) == NULL) {
            cli_errorf("build: %s: %s", arg, strerror(errno));
            return CLI_EXIT_USAGE;
        }
    }
    return CLI_EXIT_OK;
}

/* Applies one parsed flag c (with its argument arg) to o.  Returns a CLI
 * exit code after a message, or -1 when c is no flag of kiln build. */
static int build_flag(struct build_opts *o, int c, char *arg)
{
    switch (c) {
    case 'q': /* docker build -q: only the image id */
        o->progress = "quiet";
        return CLI_EXIT_OK;
    case B_FILE:
        o->file = arg;
        return CLI_EXIT_OK;
    case B_TARGET:
        o->target = arg;
        return CLI_EXIT_OK;
    case B_PLATFORM:
        o->platform = arg;
        return CLI_EXIT_OK;
    case B_NOCACHE:
        o->no_cache = true;
        return CLI_EXIT_OK;
    case B_PULL:
        o->pull = true;
        return CLI_EXIT_OK;
    case B_PUSH:
        o->push = true;
        return CLI_EXIT_OK;
    case B_IIDFILE:
        o->iidfile = arg;
        return CLI_EXIT_OK;
    case B_METADATA:
        o->metadata = arg;
        return CLI_EXIT_OK;
    case B_PLAN:
        o->plan = true;
        return CLI_EXIT_OK;
    case B_AFFINITY:
        o->affinity = arg;
        return CLI_EXIT_OK;
    case B_OUTPUT:
        return cli_output_parse(arg, &o->output);
    case B_MEMORY:
    case B_PIDS:
    case B_RUN_TIMEOUT:
    case B_BUILD_TIMEOUT:
        return limit_flag(c, arg, &o->lim[c - B_MEMORY]) < 0 ? CLI_EXIT_USAGE : CLI_EXIT_OK;
    case B_TAG:
    case B_ARG:
    case B_LABEL:
        return flag_list(o, c, arg);
    case B_SECRET:
    case B_ANNOTATION:
    case B_BUILD_CONTEXT:
        return flag_parsed_list(o, c, arg);
    case B_NETWORK:
    case B_PROGRESS:
    case B_TLSVERIFY:
        return flag_choice(o, c, arg);
    case B_FORMAT:
    case B_CTXTRANSFER:
    case B_CREDS:
    case B_AUTHFILE:
    case B_CERTDIR:
        return flag_transfer(o, c, arg);
    case B_ADD_HOST:
    case B_ULIMIT:
    case B_SHM_SIZE:
        return cli_run_opt(&o->run_opts, (cli_run_flag)(c - B_ADD_HOST), arg) != CLI_EXIT_OK
                   ? CLI_EXIT_USAGE
                   : CLI_EXIT_OK;
    case B_SSH:
        return cli_ssh_opt(o->ssh, arg) != CLI_EXIT_OK ? CLI_EXIT_USAGE : CLI_EXIT_OK;
    case B_CACHE_TO:
    case B_CACHE_FROM:
        return cli_build_cache_add(o->cache, c == B_CACHE_TO, arg) != CLI_EXIT_OK ? CLI_EXIT_USAGE
                                                                                  : CLI_EXIT_OK;
    default:
        return -1;
    }
}

/* The getopt loop: fills o from the flags (-h: prints the usage and sets
 * o->help).  Returns a CLI exit code after a message. */
static int build_parse(struct build_opts *o, int argc, char **argv)
{
    int c, rc;
    cli_getopt_reset();
    while ((c = getopt_long(argc, argv, "t:f:o:qh", cli_build_opts, NULL)) != -1) {
        if (c == 'h') {
            printf("%s", usage);
            o->help = true;
            return CLI_EXIT_OK;
        }
        if (c == ':') {
            cli_errorf("build: option '%s' needs a value", argv[optind - 1]);
            return CLI_EXIT_USAGE;
        }
        if ((rc = build_flag(o, c, optarg)) < 0) {
            cli_errorf("build: unknown option '%s'", argv[optind - 1]);
            return CLI_EXIT_USAGE;
        }
        if (rc != CLI_EXIT_OK)
            return rc;
    }
    return CLI_EXIT_OK;
}

/* Checks the flags together and the CONTEXT argument (argv after the
 * flags), and normalises --platform.  Returns a CLI exit code. */
static int build_validate(struct build_opts *o, int argc, char **argv)
{
    int rc;
    if ((rc = cli_progress_resolve(o->progress, &o->progress)) != CLI_EXIT_OK)
        return rc;
    for (size_t i = 0; o->pull && i < o->n_named; i++)
        if (o->named[i].image == NULL) { /* its image exists only in the store */
            cli_errorf("build: --pull cannot be used with --build-context %s=DIR",
                       o->named[i].name);
            return CLI_EXIT_USAGE;
        }
    if (o->metadata && (rc = cli_check_path("build", "--metadata-file", o->metadata,
                                            CLI_PATH_NEW_FILE)) != CLI_EXIT_OK)
        return rc;
    if (argc - optind != 1) {
        cli_errorf("build: expected exactly one CONTEXT argument, got %d; see 'kiln build --help'",
                   argc - optind);
        return CLI_EXIT_USAGE;
    }
    o->context = argv[optind];
    if ((rc = check_args(o->context, o->file, (const char *const *)o->tags, o->n_tags,
                         (const char *const *)o->args, o->n_args, o->iidfile, o->push, o->plan)) !=
            CLI_EXIT_OK ||
        (*o->platform && (rc = cli_platform_list("build", o->platform, &o->platforms,
                                                 &o->n_platforms)) != CLI_EXIT_OK))
        return rc;
    if (o->n_platforms > 1 && (o->output.kind != CLI_OUT_NONE || o->metadata)) {
        cli_errorf("build: --output and --metadata-file take one platform, not %zu",
                   o->n_platforms);
        return CLI_EXIT_USAGE;
    }
    /* One platform goes as it is; several are built one by one and joined
     * in an index (build_multi.c).  The pool places them on one node. */
    char *csv = o->platform_csv;
    for (size_t i = 0; i < o->n_platforms; i++)
        snprintf(csv + strlen(csv), sizeof(o->platform_csv) - strlen(csv), "%s%s", i ? "," : "",
                 o->platforms[i]);
    o->platform = csv;
    return CLI_EXIT_OK;
}

/* Reads the Dockerfile (-f FILE, else CONTEXT/Dockerfile) into o->text. */
static int build_read_dockerfile(struct build_opts *o)
{
    if (o->file == NULL && asprintf(&o->path, "%s/Dockerfile", o->context) < 0) {
        o->path = NULL;
        return CLI_EXIT_FAILED;
    }
    kiln_error *err = NULL;
    o->text = read_all(o->file ? o->file : o->path, &err);
    if (o->text == NULL) {
        cli_errorf("build: %s", err ? err->msg : "out of memory");
        kiln_error_free(&err);
        return CLI_EXIT_FAILED;
    }
    return CLI_EXIT_OK;
}

/* kiln build --plan: prints the builder's plan (a JSON array of one plan per
 * platform when there are several) and runs nothing. */
static int build_plan(cli_ctx *ctx, struct build_opts *o)
{
    kiln_req req = KILN__V1__REQUEST__INIT;
    Kiln__V1__PlanRequest pr = KILN__V1__PLAN_REQUEST__INIT;
    pr.dockerfile = o->text;
    pr.filename = (char *)(o->file ? o->file : "Dockerfile");
    pr.build_args = o->args;
    pr.n_build_args = o->n_args;
    pr.target = (char *)o->target;
    for (size_t i = 0; i < o->n_named; i++) { /* images only: --plan imports nothing */
        char **kv = &o->named_kv[pr.n_named_images];
        if (o->named[i].image == NULL)
            continue;
        if (asprintf(kv, "%s=%s", o->named[i].name, o->named[i].image) < 0) {
            *kv = NULL;
            return CLI_EXIT_FAILED;
        }
        pr.n_named_images++;
    }
    pr.named_images = o->named_kv;
    req.body_case = KILN__V1__REQUEST__BODY_PLAN;
    req.plan = &pr;
    size_t n = o->n_platforms;
    int rc = CLI_EXIT_OK;
    for (size_t i = 0; i < (n > 1 ? n : 1) && rc == CLI_EXIT_OK; i++) {
        pr.platform = n ? o->platforms[i] : "";
        kiln_reply *rep = NULL;
        rc = cli_call(ctx, CLI_BUILDER, &req, &rep, 0);
        if (rc == CLI_EXIT_OK) {
            for (size_t k = 0; k < rep->plan_reply->n_warnings; k++)
                fprintf(stderr, "warning: %s\n", rep->plan_reply->warnings[k]);
            printf("%s%s%s", n > 1 ? (i ? ",\n" : "[\n") : "", rep->plan_reply->plan_json,
                   n > 1 && i + 1 < n ? ""
                   : n > 1            ? "\n]\n"
                                      : "\n");
        } else if (rc == CLI_EXIT_FAILED) {
            rc = CLI_EXIT_BUILD;
        }
        kiln_rpc_reply_free(rep);
    }
    return rc;
}

/* Farm: a pool of builders is narrowed to this build's node (pool.c), which
 * must then be able to serve what the build asks for. */
static int build_place(cli_ctx *ctx, const struct build_opts *o, const char *ctxdir)
{
    const char *spec_url = ctx->url[CLI_BUILDER];
    int rc = cli_pool_place(ctx, o->affinity, o->n_tags ? o->tags[0] : NULL, o->file, ctxdir,
                            o->platform_csv, o->progress);
    if (rc == CLI_EXIT_OK && ctx->url[CLI_BUILDER] != spec_url)
        rc = cli_build_pool_check(o->output.kind != CLI_OUT_NONE, o->metadata != NULL, o->named,
                                  o->n_named);
    return rc;
}

/* --context-transfer: whether the context goes as its content (*out true)
 * rather than as a path.  Returns a CLI exit code. */
static int build_streams(cli_ctx *ctx, const char *transfer, bool *out)
{
    *out = strcmp(transfer, "stream") == 0;
    if (strcmp(transfer, "auto") == 0) {
        /* Paths only go over ipc:// to a builder that sees our files. */
        bool same = kiln_ipc_path(ctx->url[CLI_BUILDER]) != NULL;
        int rc;
        if (same && (rc = cli_builder_shares_fs(ctx, &same)) != CLI_EXIT_OK)
            return rc;
        *out = !same;
    }
    return CLI_EXIT_OK;
}

/* The BuildRequest fields that come straight from the command line. */
static void build_request_fill(struct build_opts *o, Kiln__V1__BuildRequest *br)
{
    br->dockerfile = o->text;
    br->filename = (char *)(o->file && strcmp(o->file, "-") ? o->file : "Dockerfile");
    br->tags = o->tags;
    br->n_tags = o->n_tags;
    br->build_args = o->args;
    br->n_build_args = o->n_args;
    br->target = (char *)o->target;
    br->platform = (char *)o->platform;
    br->no_cache = o->no_cache;
    br->pull = o->pull;
    br->labels = o->labels;
    br->n_labels = o->n_labels;
    br->network = (char *)o->network;
    br->run_memory = o->lim[0];
    br->run_pids = o->lim[1];
    br->run_timeout_ms = o->lim[2];
    br->build_timeout_ms = o->lim[3];
    cli_run_opts_apply(&o->run_opts, br);
    br->annotations = o->annotations;
    br->n_annotations = o->n_annotations;
    br->named_images = o->named_kv;
    br->n_named_images = o->n_named;
    br->secrets = o->secret_ptrs;
    br->n_secrets = o->n_secrets;
    br->push = o->push;
    br->push_format = (char *)o->push_format;
    br->insecure = o->insecure;
    br->creds = (char *)o->creds;
    br->cert_dir = o->cert_dir;
    const char *sde = getenv("SOURCE_DATE_EPOCH");
    br->source_date_epoch = sde && *sde ? strtoll(sde, NULL, 10) : 0;
}

/* Without --creds (which is for every registry of the build): the
 * credentials of the registries the build may reach, from the authfile and
 * its helpers, into br.  Returns a CLI exit code. */
static int build_credentials(struct build_opts *o, Kiln__V1__BuildRequest *br)
{
    if (*o->creds)
        return CLI_EXIT_OK;
    char hosts[MAX_LIST + 64][512];
    const char *hp[MAX_LIST + 64];
    size_t nh = 0;
    for (size_t i = 0; o->push && i < o->n_tags; i++)
        if (cli_ref_registry(o->tags[i], hosts[nh], sizeof(hosts[nh])))
            nh++;
    nh += dockerfile_registries(o->text, hosts + nh, KILN_ARRAY_SIZE(hosts) - nh);
    for (size_t i = 0; i < o->n_named && nh < KILN_ARRAY_SIZE(hosts); i++)
        if (o->named[i].image && cli_ref_registry(o->named[i].image, hosts[nh], 512))
            nh++;
    nh += cli_build_cache_hosts(o->cache, hosts + nh, KILN_ARRAY_SIZE(hosts) - nh);
    for (size_t i = 0; i < nh; i++)
        hp[i] = hosts[i];
    int rc =
        cli_creds_resolve("build", o->authfile[0] ? o->authfile : NULL, hp, nh, true, &o->creds_v);
    if (rc != CLI_EXIT_OK)
        return rc;
    br->credentials = o->creds_v.v;
    br->n_credentials = o->creds_v.n;
    return CLI_EXIT_OK;
}

/* What the request needs beyond the command line, in this order: the
 * --ssh session, the named contexts (directories are imported first,
 * build_context.c), the credentials and the step cache.  Returns a CLI
 * exit code. */
static int build_request_resolve(cli_ctx *ctx, struct build_opts *o, Kiln__V1__BuildRequest *br)
{
    int rc;
    if ((rc = cli_ssh_apply(o->ssh, br)) != CLI_EXIT_OK)
        return rc;
    ctx->ssh = o->ssh;
    if ((rc = cli_build_contexts_resolve(ctx, o->named, o->n_named, cli_progress_mode(o->progress),
                                         o->named_kv)) != CLI_EXIT_OK ||
        (rc = build_credentials(o, br)) != CLI_EXIT_OK ||
        (rc = cli_build_cache_prepare(ctx, o->cache)) != CLI_EXIT_OK)
        return rc;
    cli_build_cache_apply(o->cache, br);
    return CLI_EXIT_OK;
}

/* Runs the build of one platform, handing it to the next node of a pool
 * when its node is lost (pool.c), then exports the step cache.  cc is the
 * streamed context (NULL: sent as a path).  Fills *res. */
static int build_single(cli_ctx *ctx, struct build_opts *o, cli_context *cc,
                        Kiln__V1__BuildRequest *br, cli_build_result *res)
{
    int rc = cli_run_build(ctx, br, o->progress, o->iidfile, res);
    while (cli_pool_failover(ctx, rc))
        if ((rc = cli_pool_resend(ctx, cc, o->progress, br)) == CLI_EXIT_OK)
            rc = cli_run_build(ctx, br, o->progress, o->iidfile, res);
    return cli_build_cache_finish(ctx, o->cache, rc);
}

/* Sends the context (when streamed, with the contents of the secret files a
 * builder elsewhere cannot read), builds the request and runs the build.
 * cc is the caller's to dispose.  Fills *res for a single platform. */
static int build_send(cli_ctx *ctx, struct build_opts *o, const char *ctxdir, cli_context *cc,
                      Kiln__V1__BuildRequest *br, cli_build_result *res)
{
    bool stream;
    int rc;
    if ((rc = build_streams(ctx, o->transfer, &stream)) != CLI_EXIT_OK)
        return rc;
    for (size_t i = 0; stream && i < o->n_secrets; i++)
        if ((rc = read_secret(&o->secrets[i])) != CLI_EXIT_OK)
            return rc;
    if (stream && (rc = stream_context(ctx, cc, ctxdir, o->progress, o->ignore, br)) != CLI_EXIT_OK)
        return rc;
    build_request_fill(o, br);
    if ((rc = build_request_resolve(ctx, o, br)) != CLI_EXIT_OK)
        return rc;
    if (o->n_platforms > 1) {
        rc = cli_build_multi(ctx, br, o->platforms, o->n_platforms, o->progress, o->iidfile);
        return cli_build_cache_finish(ctx, o->cache, rc);
    }
    return build_single(ctx, o, stream ? cc : NULL, br, res);
}

/* kiln build without --plan: the build runs as a job on kiln-builder; one
 * platform's result then goes to --output and --metadata-file. */
static int build_run(cli_ctx *ctx, struct build_opts *o)
{
    char ctxdir[PATH_MAX];
    if (realpath(o->context, ctxdir) == NULL) {
        cli_errorf("build: context %s: %s", o->context, strerror(errno));
        return CLI_EXIT_FAILED;
    }
    Kiln__V1__BuildRequest br = KILN__V1__BUILD_REQUEST__INIT;
    br.context_dir = ctxdir;
    /* The Dockerfile's own ignore file, or .containerignore (build_opts.c). */
    const char *file = o->file;
    int rc = cli_ignore_file(file && strcmp(file, "-") == 0 ? NULL
                             : file                         ? file
                                                            : o->path,
                             ctxdir, &o->ignore);
    if (rc != CLI_EXIT_OK)
        return rc;
    br.dockerignore = o->ignore ? o->ignore : (char *)"";
    br.dockerignore_set = o->ignore != NULL;
    if ((rc = build_place(ctx, o, ctxdir)) != CLI_EXIT_OK)
        return rc;
    cli_context cc = {.fd = -1};
    cli_build_result res = {0};
    rc = build_send(ctx, o, ctxdir, &cc, &br, &res);
    cli_context_dispose(&cc);
    if (o->n_platforms > 1)
        return rc;
    if (rc == CLI_EXIT_OK && o->output.kind != CLI_OUT_NONE)
        rc = cli_output_write(ctx, &o->output, res.digest);
    if (rc == CLI_EXIT_OK && o->metadata)
        rc = cli_write_metadata(ctx, o->metadata, &res, o->tags, o->n_tags);
    return rc;
}

int cli_cmd_build(cli_ctx *ctx, int argc, char **argv)
{
    static cli_ssh_opts ssh;      /* large; one build per process */
    static cli_build_cache cache; /* one build per process; large */
    memset(&cache, 0, sizeof(cache));
    struct build_opts o = {.target = "",
                           .platform = "",
                           .network = "",
                           .push_format = "",
                           .creds = "",
                           .transfer = "auto",
                           .ssh = &ssh,
                           .cache = &cache};
    int rc = build_parse(&o, argc, argv);
    if (rc == CLI_EXIT_OK && !o.help)
        rc = build_validate(&o, argc, argv);
    if (rc == CLI_EXIT_OK && !o.help)
        rc = build_read_dockerfile(&o);
    if (rc == CLI_EXIT_OK && !o.help)
        rc = o.plan ? build_plan(ctx, &o) : build_run(ctx, &o);
    cli_pool_done(ctx);
    build_opts_dispose(&o);
    return rc;
}
