/* kiln build's options that the client settles on its own side: the
 * progress mode from the environment, secrets from environment variables,
 * manifest annotations, the ignore file buildah would pick, and the
 * --metadata-file written after the build.  Kept out of cmd_build.c so the
 * verb's parser stays a list of cases. */
#include "cli.h"
#include "cleanup.h"
#include "cliconfig.h"
#include "config.h"
#include "fs.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define IGNORE_FILE_MAX ((size_t)1 << 20)

static bool progress_valid(const char *v)
{
    static const char *const modes[] = {"auto", "tty", "plain", "json", "quiet"};
    for (size_t i = 0; i < KILN_ARRAY_SIZE(modes); i++)
        if (strcmp(v, modes[i]) == 0)
            return true;
    return false;
}

int cli_progress_resolve(const char *flag, const char **out)
{
    if (flag) {
        *out = flag; /* checked by the parser */
        return CLI_EXIT_OK;
    }
    /* $KILN_PROGRESS, $BUILDKIT_PROGRESS or the config file (cliconfig.c). */
    const cli_setting *s = cli_config_get(CLI_SET_PROGRESS);
    *out = s->value ? s->value : "auto";
    if (progress_valid(*out))
        return CLI_EXIT_OK;
    if (strncmp(s->source, "env ", 4) == 0)
        cli_errorf("build: $%s wants auto, tty, plain, json or quiet, got '%s'", s->source + 4,
                   *out);
    else
        cli_errorf("build: %s: \"progress\" wants auto, tty, plain, json or quiet, got '%s'",
                   s->source, *out);
    return CLI_EXIT_USAGE;
}

/* An environment variable's value as a secret's content. */
static int secret_from_env(const char *id, const char *var, Kiln__V1__SecretSpec *out)
{
    const char *v = getenv(var);
    if (v == NULL) {
        /* The variable's name, never a value. */
        cli_errorf("build: secret %s: environment variable %s is not set", id, var);
        return CLI_EXIT_USAGE;
    }
    size_t len = strlen(v);
    if (len > KILN_SECRET_MAX) {
        cli_errorf("build: secret %s: $%s is larger than %d bytes", id, var, KILN_SECRET_MAX);
        return CLI_EXIT_USAGE;
    }
    out->data.data = malloc(len + 1);
    if (out->data.data == NULL)
        return CLI_EXIT_FAILED;
    memcpy(out->data.data, v, len);
    out->data.len = len;
    out->path = (char *)"";
    return CLI_EXIT_OK;
}

int cli_secret_parse(const char *arg, Kiln__V1__SecretSpec *out, char path[PATH_MAX])
{
    /* Docker's forms: id=ID,src=FILE ("source" too), id=ID,env=VAR, and
     * type=env|file with the id naming the variable or file. */
    char id[128] = "", src[PATH_MAX] = "", env[128] = "", type[16] = "";
    _cleanup_free_ char *dup = strdup(arg);
    char *save = NULL;
    if (dup == NULL)
        return CLI_EXIT_FAILED;
    for (char *kv = strtok_r(dup, ",", &save); kv; kv = strtok_r(NULL, ",", &save)) {
        if (strncmp(kv, "id=", 3) == 0)
            snprintf(id, sizeof(id), "%s", kv + 3);
        else if (strncmp(kv, "src=", 4) == 0 || strncmp(kv, "source=", 7) == 0)
            snprintf(src, sizeof(src), "%s", strchr(kv, '=') + 1);
        else if (strncmp(kv, "env=", 4) == 0)
            snprintf(env, sizeof(env), "%s", kv + 4);
        else if (strncmp(kv, "type=", 5) == 0)
            snprintf(type, sizeof(type), "%s", kv + 5);
    }
    if (*type && strcmp(type, "env") != 0 && strcmp(type, "file") != 0) {
        cli_errorf("build: --secret type=%s: want file or env", type);
        return CLI_EXIT_USAGE;
    }
    /* buildx: a bare id=X is the variable X when it is set, else the file X. */
    if (!*type && !*src && !*env)
        snprintf(type, sizeof(type), "%s", getenv(id) ? "env" : "file");
    if (strcmp(type, "env") == 0 && !*env)
        snprintf(env, sizeof(env), "%s", id);
    if (strcmp(type, "file") == 0 && !*src)
        snprintf(src, sizeof(src), "%s", id);
    if (!*id || (!*src == !*env)) {
        cli_errorf("build: --secret wants id=ID,src=FILE or id=ID,env=VAR");
        return CLI_EXIT_USAGE;
    }
    kiln__v1__secret_spec__init(out);
    if ((out->id = strdup(id)) == NULL)
        return CLI_EXIT_FAILED;
    int rc = *env ? secret_from_env(id, env, out) : CLI_EXIT_OK;
    if (rc == CLI_EXIT_OK && !*env) {
        if (realpath(src, path) != NULL) {
            out->path = path;
        } else {
            cli_errorf("build: secret %s: %s: %s", id, src, strerror(errno));
            rc = CLI_EXIT_FAILED;
        }
    }
    if (rc != CLI_EXIT_OK) { /* nothing is left for the caller to free */
        free(out->id);
        out->id = NULL;
    }
    return rc;
}

int cli_annotation_check(const char *arg, const char **out)
{
    const char *kv = arg;
    if (strncmp(kv, "manifest:", 9) == 0)
        kv += 9;
    else if (strncmp(kv, "index:", 6) == 0) {
        /* A single-platform build writes no index to annotate. */
        cli_errorf("build: --annotation %s: a single-platform build has no index; use manifest:",
                   arg);
        return CLI_EXIT_USAGE;
    }
    const char *eq = strchr(kv, '=');
    if (eq == NULL || eq == kv || strchr(kv, '\n')) {
        cli_errorf("build: --annotation wants [manifest:]KEY=VALUE, got '%s'", arg);
        return CLI_EXIT_USAGE;
    }
    *out = kv;
    return CLI_EXIT_OK;
}

/* The whole of a small file into *text (caller frees). */
static int read_small(const char *path, char **text)
{
    _cleanup_fclose_ FILE *f = fopen(path, "re");
    _cleanup_free_ char *buf = malloc(IGNORE_FILE_MAX + 1);
    size_t n = 0;
    if (f == NULL || buf == NULL ||
        ((n = fread(buf, 1, IGNORE_FILE_MAX + 1, f)) == 0 && ferror(f))) {
        cli_errorf("build: %s: %s", path, strerror(errno ? errno : ENOMEM));
        return CLI_EXIT_FAILED;
    }
    if (n > IGNORE_FILE_MAX) {
        cli_errorf("build: %s: larger than %zu bytes", path, IGNORE_FILE_MAX);
        return CLI_EXIT_USAGE;
    }
    buf[n] = '\0';
    *text = buf;
    buf = NULL;
    return CLI_EXIT_OK;
}

int cli_ignore_file(const char *dockerfile, const char *context, char **text)
{
    /* buildah's order: the Dockerfile's own ignore file (.containerignore
     * first), then the context's .containerignore; the context's
     * .dockerignore is read where the context is packed. */
    char p[3][PATH_MAX];
    int n = 0;
    *text = NULL;
    if (dockerfile) {
        snprintf(p[n++], PATH_MAX, "%s.containerignore", dockerfile);
        snprintf(p[n++], PATH_MAX, "%s.dockerignore", dockerfile);
    }
    snprintf(p[n++], PATH_MAX, "%s/.containerignore", context);
    for (int i = 0; i < n; i++)
        if (access(p[i], F_OK) == 0)
            return read_small(p[i], text);
    return CLI_EXIT_OK;
}

/* The stored manifest of digest (pusher's Inspect): its config digest and
 * size into the metadata. */
static int add_manifest_facts(cli_ctx *ctx, const char *digest, cJSON *o)
{
    kiln_req req = KILN__V1__REQUEST__INIT;
    Kiln__V1__InspectRequest iq = KILN__V1__INSPECT_REQUEST__INIT;
    iq.ref = (char *)digest;
    req.body_case = KILN__V1__REQUEST__BODY_INSPECT;
    req.inspect = &iq;
    kiln_reply *rep = NULL;
    int rc = cli_call(ctx, CLI_PUSHER, &req, &rep, 0);
    if (rc != CLI_EXIT_OK)
        return rc;
    const Kiln__V1__InspectReply *ir = rep->inspect_reply;
    cJSON *m = cJSON_Parse(ir->manifest_json);
    const cJSON *cd = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItem(m, "config"), "digest");
    if (cJSON_IsString(cd))
        cJSON_AddStringToObject(o, "containerimage.config.digest", cd->valuestring);
    cJSON *desc = cJSON_AddObjectToObject(o, "containerimage.descriptor");
    cJSON_AddStringToObject(desc, "mediaType", ir->media_type);
    cJSON_AddStringToObject(desc, "digest", ir->digest);
    cJSON_AddNumberToObject(desc, "size", (double)strlen(ir->manifest_json));
    cJSON_Delete(m);
    kiln_rpc_reply_free(rep);
    return CLI_EXIT_OK;
}

int cli_write_metadata(cli_ctx *ctx, const char *path, const cli_build_result *res,
                       char *const *tags, size_t n_tags)
{
    cJSON *o = cJSON_CreateObject();
    if (o == NULL)
        return CLI_EXIT_FAILED;
    cJSON_AddStringToObject(o, "containerimage.digest", res->digest);
    int rc = add_manifest_facts(ctx, res->digest, o);
    /* buildx's image.name: every tag, comma-separated. */
    size_t len = 1;
    for (size_t i = 0; i < n_tags; i++)
        len += strlen(tags[i]) + 1;
    _cleanup_free_ char *names = calloc(1, len);
    for (size_t i = 0; names && i < n_tags; i++)
        strcat(strcat(names, i ? "," : ""), tags[i]);
    if (names && n_tags)
        cJSON_AddStringToObject(o, "image.name", names);
    cJSON_AddStringToObject(o, "kiln.build.id", res->job);
    _cleanup_free_ char *text = rc == CLI_EXIT_OK ? cJSON_Print(o) : NULL;
    cJSON_Delete(o);
    if (rc != CLI_EXIT_OK)
        return rc;
    kiln_error *err = NULL;
    if (text == NULL || kiln_atomic_write(path, text, strlen(text), 0644, 0, &err) < 0) {
        cli_errorf("build: --metadata-file %s: %s", path, err ? err->msg : "out of memory");
        kiln_error_free(&err);
        return CLI_EXIT_FAILED;
    }
    return CLI_EXIT_OK;
}

cli_progress cli_progress_mode(const char *progress)
{
    return strcmp(progress, "json") == 0    ? CLI_PROGRESS_JSON
           : strcmp(progress, "quiet") == 0 ? CLI_PROGRESS_QUIET
           : strcmp(progress, "plain") == 0 ? CLI_PROGRESS_PLAIN
           : strcmp(progress, "tty") == 0   ? CLI_PROGRESS_TTY
           : cli_stderr_is_tty()            ? CLI_PROGRESS_TTY
                                            : CLI_PROGRESS_PLAIN;
}

int cli_build_pool_check(bool output, bool metadata, const cli_named_context *nc, size_t n)
{
    const char *what = output ? "--output" : metadata ? "--metadata-file" : NULL;
    for (size_t i = 0; what == NULL && i < n; i++)
        if (nc[i].image == NULL)
            what = "--build-context NAME=DIR";
    if (what == NULL)
        return CLI_EXIT_OK;
    cli_errorf("build: %s needs the kiln-pusher of the node that builds; with a pool of "
               "builders, name one builder (--builder URL) and its --pusher",
               what);
    return CLI_EXIT_USAGE;
}
