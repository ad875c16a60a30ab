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

/* Everything the command line names is checked before anything is sent: a
 * bad tag must not cost a whole build. */
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

int cli_cmd_build(cli_ctx *ctx, int argc, char **argv)
{
    const char *file = NULL, *target = "", *platform = "", *network = "", *progress = NULL;
    const char *iidfile = NULL, *transfer = "auto", *affinity = NULL, *push_format = "";
    char **platforms = NULL; /* --platform, normalised (build_multi.c) */
    size_t n_platforms = 0;
    char *args[MAX_LIST], *tags[MAX_LIST], *labels[MAX_LIST], *annotations[MAX_LIST];
    const char *metadata = NULL;
    cli_output output = {0};
    cli_named_context named[16];
    char *named_kv[KILN_ARRAY_SIZE(named)] = {0};
    size_t n_annotations = 0, n_named = 0;
    Kiln__V1__SecretSpec secrets[32], *secret_ptrs[32];
    char secret_paths[32][PATH_MAX];
    size_t n_args = 0, n_tags = 0, n_secrets = 0, n_labels = 0;
    bool plan = false, no_cache = false, push = false, insecure = false, pull = false;
    uint64_t lim[4] = {0}; /* memory, pids, run timeout, build timeout */
    const char *creds = "";
    char authfile[PATH_MAX] = "", cert_dir[PATH_MAX] = "";
    cli_creds creds_v = {0};
    cli_run_opts run_opts = {0};
    static cli_ssh_opts ssh;      /* large; one build per process */
    static cli_build_cache cache; /* one build per process; large */
    memset(&cache, 0, sizeof(cache));
    int c, rc = CLI_EXIT_OK;
    cli_getopt_reset();
    while ((c = getopt_long(argc, argv, "t:f:o:qh", cli_build_opts, NULL)) != -1) {
        switch (c) {
        case 'h':
            printf("%s", usage);
            return CLI_EXIT_OK;
        case 'q': /* docker build -q: only the image id */
            progress = "quiet";
            break;
        case B_TAG:
            if (n_tags == MAX_LIST) {
                cli_errorf("build: too many -t");
                return CLI_EXIT_USAGE;
            }
            tags[n_tags++] = optarg;
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
        case B_MEMORY:
        case B_PIDS:
        case B_RUN_TIMEOUT:
        case B_BUILD_TIMEOUT:
            if (limit_flag(c, optarg, &lim[c - B_MEMORY]) < 0)
                return CLI_EXIT_USAGE;
            break;
        case B_NETWORK:
            if (strcmp(optarg, "host") != 0 && strcmp(optarg, "none") != 0 &&
                strcmp(optarg, "default") != 0) {
                cli_errorf("build: --network wants host or none, got '%s'", optarg);
                return CLI_EXIT_USAGE;
            }
            network = strcmp(optarg, "default") == 0 ? "" : optarg;
            break;
        case B_PROGRESS:
            if (strcmp(optarg, "auto") && strcmp(optarg, "tty") && strcmp(optarg, "plain") &&
                strcmp(optarg, "json") && strcmp(optarg, "quiet")) {
                cli_errorf("build: --progress wants auto, tty, plain, json or quiet");
                return CLI_EXIT_USAGE;
            }
            progress = optarg;
            break;
        case B_TLSVERIFY:
            if (strcmp(optarg, "true") != 0 && strcmp(optarg, "false") != 0) {
                cli_errorf("build: --tls-verify wants true or false");
                return CLI_EXIT_USAGE;
            }
            insecure = strcmp(optarg, "false") == 0;
            break;
        case B_NOCACHE:
            no_cache = true;
            break;
        case B_PULL:
            pull = true;
            break;
        case B_LABEL:
            if (n_labels == MAX_LIST || optarg[0] == '=' || strchr(optarg, '=') == NULL) {
                cli_errorf("build: --label wants KEY=VALUE");
                return CLI_EXIT_USAGE;
            }
            labels[n_labels++] = optarg;
            break;
        case B_PUSH:
            push = true;
            break;
        case B_IIDFILE:
            iidfile = optarg;
            break;
        case B_SECRET:
            if (n_secrets == KILN_ARRAY_SIZE(secrets)) {
                cli_errorf("build: too many --secret");
                return CLI_EXIT_USAGE;
            }
            if ((rc = cli_secret_parse(optarg, &secrets[n_secrets], secret_paths[n_secrets])))
                return rc;
            secret_ptrs[n_secrets] = &secrets[n_secrets];
            n_secrets++;
            break;
        case B_OUTPUT:
            if ((rc = cli_output_parse(optarg, &output)) != CLI_EXIT_OK)
                return rc;
            break;
        case B_ANNOTATION:
            if (n_annotations == MAX_LIST) {
                cli_errorf("build: too many --annotation");
                return CLI_EXIT_USAGE;
            }
            if ((rc = cli_annotation_check(optarg, (const char **)&annotations[n_annotations])))
                return rc;
            n_annotations++;
            break;
        case B_METADATA:
            metadata = optarg;
            break;
        case B_BUILD_CONTEXT:
            if (n_named == KILN_ARRAY_SIZE(named)) {
                cli_errorf("build: too many --build-context");
                return CLI_EXIT_USAGE;
            }
            if ((rc = cli_build_context_parse(optarg, &named[n_named++])) != CLI_EXIT_OK)
                return rc;
            break;
        case B_PLAN:
            plan = true;
            break;
        case B_AFFINITY:
            affinity = optarg;
            break;
        case B_ADD_HOST:
        case B_ULIMIT:
        case B_SHM_SIZE:
            if (cli_run_opt(&run_opts, (cli_run_flag)(c - B_ADD_HOST), optarg) != CLI_EXIT_OK)
                return CLI_EXIT_USAGE;
            break;
        case B_SSH:
            if (cli_ssh_opt(&ssh, optarg) != CLI_EXIT_OK)
                return CLI_EXIT_USAGE;
            break;
        case B_CACHE_TO:
        case B_CACHE_FROM:
            if (cli_build_cache_add(&cache, c == B_CACHE_TO, optarg) != CLI_EXIT_OK)
                return CLI_EXIT_USAGE;
            break;
        case B_FORMAT:
            if (strcmp(optarg, "oci") && strcmp(optarg, "docker") && strcmp(optarg, "v2s2")) {
                cli_errorf("build: --format wants oci or docker, got '%s'", optarg);
                return CLI_EXIT_USAGE;
            }
            push_format = strcmp(optarg, "oci") == 0 ? "" : "v2s2";
            break;
        case B_CTXTRANSFER:
            if (strcmp(optarg, "auto") && strcmp(optarg, "local") && strcmp(optarg, "stream")) {
                cli_errorf("build: --context-transfer wants auto, local or stream, got '%s'",
                           optarg);
                return CLI_EXIT_USAGE;
            }
            transfer = optarg;
            break;
        case B_CREDS:
            if (strchr(optarg, ':') == NULL) {
                cli_errorf("build: --creds wants USER:PASSWORD");
                return CLI_EXIT_USAGE;
            }
            creds = optarg;
            break;
        case B_AUTHFILE:
        case B_CERTDIR:
            /* --authfile is read here; --cert-dir is taken on the pusher's
             * host, which must be this one: make it absolute. */
            if (realpath(optarg, c == B_AUTHFILE ? authfile : cert_dir) == NULL) {
                cli_errorf("build: %s: %s", optarg, strerror(errno));
                return CLI_EXIT_USAGE;
            }
            break;
        case ':':
            cli_errorf("build: option '%s' needs a value", argv[optind - 1]);
            return CLI_EXIT_USAGE;
        default:
            cli_errorf("build: unknown option '%s'", argv[optind - 1]);
            return CLI_EXIT_USAGE;
        }
    }
    char *text = NULL, *path = NULL, *ignore = NULL;
    if ((rc = cli_progress_resolve(progress, &progress)) != CLI_EXIT_OK)
        return rc;
    for (size_t i = 0; pull && i < n_named; i++)
        if (named[i].image == NULL) { /* its image exists only in the store */
            cli_errorf("build: --pull cannot be used with --build-context %s=DIR", named[i].name);
            return CLI_EXIT_USAGE;
        }
    if (metadata && (rc = cli_check_path("build", "--metadata-file", metadata,
                                         CLI_PATH_NEW_FILE)) != CLI_EXIT_OK)
        return rc;
    if (argc - optind != 1) {
        cli_errorf("build: expected exactly one CONTEXT argument, got %d; see 'kiln build --help'",
                   argc - optind);
        rc = CLI_EXIT_USAGE;
        goto out;
    }
    if ((rc = check_args(argv[optind], file, (const char *const *)tags, n_tags,
                         (const char *const *)args, n_args, iidfile, push, plan)) != CLI_EXIT_OK ||
        (*platform &&
         (rc = cli_platform_list("build", platform, &platforms, &n_platforms)) != CLI_EXIT_OK))
        goto out;
    if (n_platforms > 1 && (output.kind != CLI_OUT_NONE || metadata)) {
        cli_errorf("build: --output and --metadata-file take one platform, not %zu", n_platforms);
        rc = CLI_EXIT_USAGE;
        goto out;
    }
    /* One platform goes as it is; several are built one by one and joined
     * in an index (build_multi.c).  The pool places them on one node. */
    char platform_csv[512] = "";
    for (size_t i = 0; i < n_platforms; i++)
        snprintf(platform_csv + strlen(platform_csv), sizeof(platform_csv) - strlen(platform_csv),
                 "%s%s", i ? "," : "", platforms[i]);
    platform = platform_csv;
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
    if (!plan) {
        char ctxdir[PATH_MAX];
        if (realpath(argv[optind], ctxdir) == NULL) {
            cli_errorf("build: context %s: %s", argv[optind], strerror(errno));
            rc = CLI_EXIT_FAILED;
            goto out;
        }
        Kiln__V1__BuildRequest br = KILN__V1__BUILD_REQUEST__INIT;
        br.context_dir = ctxdir;
        /* The Dockerfile's own ignore file, or .containerignore (build_opts.c). */
        if ((rc = cli_ignore_file(file && strcmp(file, "-") == 0 ? NULL
                                  : file                         ? file
                                                                 : path,
                                  ctxdir, &ignore)) != CLI_EXIT_OK)
            goto out;
        br.dockerignore = ignore ? ignore : (char *)"";
        br.dockerignore_set = ignore != NULL;
        /* Farm: a pool of builders is narrowed to this build's node (pool.c). */
        const char *spec_url = ctx->url[CLI_BUILDER];
        rc = cli_pool_place(ctx, affinity, n_tags ? tags[0] : NULL, file, ctxdir, platform_csv,
                            progress);
        if (rc == CLI_EXIT_OK && ctx->url[CLI_BUILDER] != spec_url)
            rc =
                cli_build_pool_check(output.kind != CLI_OUT_NONE, metadata != NULL, named, n_named);
        if (rc != CLI_EXIT_OK)
            goto out;
        bool stream = strcmp(transfer, "stream") == 0;
        if (strcmp(transfer, "auto") == 0) {
            /* Paths only go over ipc:// to a builder that sees our files. */
            bool same = kiln_ipc_path(ctx->url[CLI_BUILDER]) != NULL;
            if (same && (rc = cli_builder_shares_fs(ctx, &same)) != CLI_EXIT_OK)
                goto out;
            stream = !same;
        }
        cli_context cc = {.fd = -1};
        /* A builder elsewhere cannot read our secret files: send them. */
        for (size_t i = 0; stream && i < n_secrets; i++) {
            if ((rc = read_secret(&secrets[i])) != CLI_EXIT_OK)
                goto out;
        }
        if (stream) {
            rc = stream_context(ctx, &cc, ctxdir, progress, ignore, &br);
            if (rc != CLI_EXIT_OK) {
                cli_context_dispose(&cc);
                goto out;
            }
        }
        br.dockerfile = text;
        br.filename = (char *)(file && strcmp(file, "-") ? file : "Dockerfile");
        br.tags = tags;
        br.n_tags = n_tags;
        br.build_args = args;
        br.n_build_args = n_args;
        br.target = (char *)target;
        br.platform = (char *)platform;
        br.no_cache = no_cache;
        br.pull = pull;
        br.labels = labels;
        br.n_labels = n_labels;
        br.network = (char *)network;
        br.run_memory = lim[0];
        br.run_pids = lim[1];
        br.run_timeout_ms = lim[2];
        br.build_timeout_ms = lim[3];
        cli_run_opts_apply(&run_opts, &br);
        if ((rc = cli_ssh_apply(&ssh, &br)) != CLI_EXIT_OK) {
            cli_context_dispose(&cc);
            goto out;
        }
        ctx->ssh = &ssh;
        br.annotations = annotations;
        br.n_annotations = n_annotations;
        /* Named contexts: directories are imported first (build_context.c). */
        if ((rc = cli_build_contexts_resolve(ctx, named, n_named, cli_progress_mode(progress),
                                             named_kv)) != CLI_EXIT_OK) {
            cli_context_dispose(&cc);
            goto out;
        }
        br.named_images = named_kv;
        br.n_named_images = n_named;
        br.secrets = secret_ptrs;
        br.n_secrets = n_secrets;
        br.push = push;
        br.push_format = (char *)push_format;
        br.insecure = insecure;
        br.creds = (char *)creds;
        br.cert_dir = cert_dir;
        if (!*creds) { /* --creds is for every registry of the build */
            char hosts[MAX_LIST + 64][512];
            const char *hp[MAX_LIST + 64];
            size_t nh = 0;
            for (size_t i = 0; push && i < n_tags; i++)
                if (cli_ref_registry(tags[i], hosts[nh], sizeof(hosts[nh])))
                    nh++;
            nh += dockerfile_registries(text, hosts + nh, KILN_ARRAY_SIZE(hosts) - nh);
            for (size_t i = 0; i < n_named && nh < KILN_ARRAY_SIZE(hosts); i++)
                if (named[i].image && cli_ref_registry(named[i].image, hosts[nh], 512))
                    nh++;
            nh += cli_build_cache_hosts(&cache, hosts + nh, KILN_ARRAY_SIZE(hosts) - nh);
            for (size_t i = 0; i < nh; i++)
                hp[i] = hosts[i];
            if ((rc = cli_creds_resolve("build", authfile[0] ? authfile : NULL, hp, nh, true,
                                        &creds_v)) != CLI_EXIT_OK) {
                cli_context_dispose(&cc);
                goto out;
            }
            br.credentials = creds_v.v;
            br.n_credentials = creds_v.n;
        }
        if ((rc = cli_build_cache_prepare(ctx, &cache)) != CLI_EXIT_OK) {
            cli_context_dispose(&cc);
            goto out;
        }
        cli_build_cache_apply(&cache, &br);
        const char *sde = getenv("SOURCE_DATE_EPOCH");
        br.source_date_epoch = sde && *sde ? strtoll(sde, NULL, 10) : 0;
        if (n_platforms > 1) {
            rc = cli_build_multi(ctx, &br, platforms, n_platforms, progress, iidfile);
            rc = cli_build_cache_finish(ctx, &cache, rc);
            cli_context_dispose(&cc);
            goto out;
        }
        cli_build_result res = {0};
        rc = cli_run_build(ctx, &br, progress, iidfile, &res);
        /* Farm: a node lost during the build hands it to the next (pool.c). */
        while (cli_pool_failover(ctx, rc))
            if ((rc = cli_pool_resend(ctx, stream ? &cc : NULL, progress, &br)) == CLI_EXIT_OK)
                rc = cli_run_build(ctx, &br, progress, iidfile, &res);
        rc = cli_build_cache_finish(ctx, &cache, rc);
        cli_context_dispose(&cc);
        if (rc == CLI_EXIT_OK && output.kind != CLI_OUT_NONE)
            rc = cli_output_write(ctx, &output, res.digest);
        if (rc == CLI_EXIT_OK && metadata)
            rc = cli_write_metadata(ctx, metadata, &res, tags, n_tags);
        goto out;
    }
    kiln_req req = KILN__V1__REQUEST__INIT;
    Kiln__V1__PlanRequest pr = KILN__V1__PLAN_REQUEST__INIT;
    pr.dockerfile = text;
    pr.filename = (char *)(file ? file : "Dockerfile");
    pr.build_args = args;
    pr.n_build_args = n_args;
    pr.target = (char *)target;
    for (size_t i = 0; i < n_named; i++) { /* images only: --plan imports nothing */
        if (named[i].image &&
            asprintf(&named_kv[pr.n_named_images++], "%s=%s", named[i].name, named[i].image) < 0) {
            rc = CLI_EXIT_FAILED;
            goto out;
        }
    }
    pr.named_images = named_kv;
    req.body_case = KILN__V1__REQUEST__BODY_PLAN;
    req.plan = &pr;
    /* Several platforms: a JSON array of one plan each. */
    for (size_t i = 0; i < (n_platforms > 1 ? n_platforms : 1) && rc == CLI_EXIT_OK; i++) {
        pr.platform = n_platforms ? platforms[i] : "";
        kiln_reply *rep = NULL;
        rc = cli_call(ctx, CLI_BUILDER, &req, &rep, 0);
        if (rc == CLI_EXIT_OK) {
            for (size_t k = 0; k < rep->plan_reply->n_warnings; k++)
                fprintf(stderr, "warning: %s\n", rep->plan_reply->warnings[k]);
            printf("%s%s%s", n_platforms > 1 ? (i ? ",\n" : "[\n") : "", rep->plan_reply->plan_json,
                   n_platforms > 1 && i + 1 < n_platforms ? ""
                   : n_platforms > 1                      ? "\n]\n"
                                                          : "\n");
        } else if (rc == CLI_EXIT_FAILED) {
            rc = CLI_EXIT_BUILD;
        }
        kiln_rpc_reply_free(rep);
    }
out:
    cli_platform_list_free(platforms, n_platforms);
    cli_creds_free(&creds_v);
    cli_pool_done(ctx);
    for (size_t i = 0; i < n_secrets; i++) {
        free(secrets[i].id);
        if (secrets[i].data.data) {
            explicit_bzero(secrets[i].data.data, secrets[i].data.len);
            free(secrets[i].data.data);
        }
    }
    for (size_t i = 0; i < n_args; i++)
        free(args[i]);
    for (size_t i = 0; i < n_named; i++)
        free(named_kv[i]);
    free(text);
    free(path);
    free(ignore);
    return rc;
}
