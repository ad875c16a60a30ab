/* The client's settings table and its config file (cliconfig.h).
 *
 * The file is JSON only: cJSON parses it robustly and reports where it
 * stopped, which a hand-written TOML subset would not do as well.  Layout:
 *
 *   { "builder": "tls+tcp://kiln.example:7403", "pusher": "...",
 *     "builder_events": "tls+tcp://kiln.example:7404", "pusher_events": "...",
 *     "data": "/var/lib/kiln", "timeout": 10000, "progress": "plain",
 *     "insecure_registries": ["registry.lan:5000"],
 *     "tls": { "ca": "ca.pem", "cert": "me.pem", "key": "me.key",
 *              "server_name": "kiln.example" } }
 *
 * Every key is optional; unknown keys are errors (a typo must not be
 * silently ignored); relative TLS paths are taken from the file's
 * directory. */
#include "cliconfig.h"
#include "cleanup.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <sys/stat.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define CONFIG_MAX ((size_t)1 << 20)

static cli_setting settings[CLI_SET_N] = {
    [CLI_SET_BUILDER] = {.key = "builder", .env = {"KILN_BUILDER"}},
    [CLI_SET_PUSHER] = {.key = "pusher", .env = {"KILN_PUSHER"}},
    [CLI_SET_BUILDER_EVENTS] = {.key = "builder_events", .env = {"KILN_BUILDER_EVENTS"}},
    [CLI_SET_PUSHER_EVENTS] = {.key = "pusher_events", .env = {"KILN_PUSHER_EVENTS"}},
    [CLI_SET_DATA] = {.key = "data", .env = {"KILN_DATA"}},
    [CLI_SET_TLS_CA] = {.key = "tls.ca"},
    [CLI_SET_TLS_CERT] = {.key = "tls.cert"},
    [CLI_SET_TLS_KEY] = {.key = "tls.key"},
    [CLI_SET_TLS_SERVER_NAME] = {.key = "tls.server_name"},
    [CLI_SET_TIMEOUT] = {.key = "timeout"},
    [CLI_SET_PROGRESS] = {.key = "progress", .env = {"KILN_PROGRESS", "BUILDKIT_PROGRESS"}},
    [CLI_SET_INSECURE_REGISTRIES] = {.key = "insecure_registries",
                                     .env = {"KILN_INSECURE_REGISTRIES"}},
};

static char config_path[PATH_MAX];

void cli_config_flag(cli_setting_id id, const char *value)
{
    settings[id].value = value;
    snprintf(settings[id].source, sizeof(settings[id].source), "flag");
}

const cli_setting *cli_config_get(cli_setting_id id)
{
    return &settings[id];
}

bool cli_config_insecure_registry(const char *registry)
{
    const char *list = settings[CLI_SET_INSECURE_REGISTRIES].value;
    size_t n = strlen(registry);
    for (const char *p = list; p && *p;) {
        size_t len = strcspn(p, ",");
        if (len == n && strncasecmp(p, registry, n) == 0)
            return true;
        p += len + (p[len] == ',');
    }
    return false;
}

const char *cli_config_path(void)
{
    if (config_path[0] == '\0') {
        const char *x = getenv("XDG_CONFIG_HOME"), *home = getenv("HOME");
        if (x && *x == '/')
            snprintf(config_path, sizeof(config_path), "%s/kiln/config.json", x);
        else if (home && *home)
            snprintf(config_path, sizeof(config_path), "%s/.config/kiln/config.json", home);
    }
    return config_path;
}

/* The line of offset off in text (1-based). */
static int line_of(const char *text, size_t off)
{
    int line = 1;
    for (size_t i = 0; i < off && text[i]; i++)
        line += text[i] == '\n';
    return line;
}

/* An array of non-empty strings without commas, joined with commas (caller
 * frees); NULL when v is not one. */
static char *join_strings(const cJSON *v)
{
    size_t len = 1;
    const cJSON *x;
    cJSON_ArrayForEach(x, v)
    {
        if (!cJSON_IsString(x) || x->valuestring[0] == '\0' || strchr(x->valuestring, ','))
            return NULL;
        len += strlen(x->valuestring) + 1;
    }
    char *out = calloc(1, len);
    cJSON_ArrayForEach(x, v)
    {
        if (out && *out)
            strcat(out, ",");
        if (out)
            strcat(out, x->valuestring);
    }
    return out;
}

/* One value of the file into the setting whose key is key, unless a flag or
 * the environment set it already. */
static int take(const char *path, const char *key, const cJSON *v, kiln_error **err)
{
    cli_setting *s = NULL;
    for (size_t i = 0; i < CLI_SET_N && s == NULL; i++)
        if (strcmp(settings[i].key, key) == 0)
            s = &settings[i];
    if (s == NULL)
        return kiln_error_set(err, KILN_EINVAL, 0, "%s: unknown key \"%s\"", path, key);
    bool number = s == &settings[CLI_SET_TIMEOUT];
    if (s == &settings[CLI_SET_INSECURE_REGISTRIES]) {
        _cleanup_free_ char *list = cJSON_IsArray(v) ? join_strings(v) : NULL;
        if (list == NULL)
            return kiln_error_set(err, KILN_EINVAL, 0, "%s: \"%s\" wants an array of host[:port]",
                                  path, key);
        if (s->value == NULL) {
            s->value = list; /* kept for the process's life */
            list = NULL;
            snprintf(s->source, sizeof(s->source), "%s", path);
        }
        return 0;
    }
    if (number ? !cJSON_IsNumber(v) || v->valuedouble < 1 || v->valuedouble > 86400000
               : !cJSON_IsString(v) || v->valuestring[0] == '\0')
        return kiln_error_set(err, KILN_EINVAL, 0, "%s: \"%s\" wants %s", path, key,
                              number ? "a number of milliseconds (1 to 86400000)"
                                     : "a non-empty string");
    if (s->value)
        return 0;
    char *val = NULL;
    if (number)
        (void)!asprintf(&val, "%d", v->valueint);
    else if (strncmp(key, "tls.", 4) == 0 && strcmp(key, "tls.server_name") != 0 &&
             v->valuestring[0] != '/') {
        /* A relative file is next to the config file. */
        const char *slash = strrchr(path, '/');
        (void)!asprintf(&val, "%.*s/%s", (int)(slash - path), path, v->valuestring);
    } else
        val = strdup(v->valuestring);
    if (val == NULL)
        return kiln_error_set(err, KILN_ENOSPC, 0, "%s: out of memory", path);
    s->value = val; /* kept for the process's life */
    snprintf(s->source, sizeof(s->source), "%s", path);
    return 0;
}

static int parse(const char *path, const char *text, kiln_error **err)
{
    const char *end = NULL;
    _cleanup_cjson_ cJSON *root = cJSON_ParseWithOpts(text, &end, true);
    if (root == NULL)
        return kiln_error_set(err, KILN_EINVAL, 0, "%s:%d: not valid JSON", path,
                              line_of(text, end ? (size_t)(end - text) : 0));
    if (!cJSON_IsObject(root))
        return kiln_error_set(err, KILN_EINVAL, 0, "%s: wants a JSON object", path);
    for (const cJSON *v = root->child; v; v = v->next) {
        if (strcmp(v->string, "tls") != 0) {
            if (take(path, v->string, v, err) < 0)
                return -1;
            continue;
        }
        if (!cJSON_IsObject(v))
            return kiln_error_set(err, KILN_EINVAL, 0, "%s: \"tls\" wants an object", path);
        for (const cJSON *t = v->child; t; t = t->next) {
            char key[128];
            snprintf(key, sizeof(key), "tls.%s", t->string);
            if (take(path, key, t, err) < 0)
                return -1;
        }
    }
    return 0;
}

static int read_file(const char *path, char **out, kiln_error **err)
{
    _cleanup_fclose_ FILE *f = fopen(path, "re");
    struct stat st;
    /* No file, or one in a directory we may not even look into (another
     * user's home, kept by sudo or su): no configuration.  A file we can see
     * but not read is ours, wrongly set up: said. */
    if (f == NULL && (errno == ENOENT || errno == ENOTDIR ||
                      (errno == EACCES && stat(path, &st) < 0 && errno == EACCES)))
        return 0;
    if (f == NULL)
        return kiln_error_set(err, KILN_EIO, errno, "%s", path);
    _cleanup_free_ char *buf = malloc(CONFIG_MAX + 1);
    if (buf == NULL)
        return kiln_error_set(err, KILN_ENOSPC, 0, "%s: out of memory", path);
    size_t n = fread(buf, 1, CONFIG_MAX + 1, f);
    if (ferror(f))
        return kiln_error_set(err, KILN_EIO, errno, "read %s", path);
    if (n > CONFIG_MAX)
        return kiln_error_set(err, KILN_EINVAL, 0, "%s: larger than %zu bytes", path, CONFIG_MAX);
    buf[n] = '\0';
    *out = buf;
    buf = NULL;
    return 0;
}

int cli_config_load(kiln_error **err)
{
    for (size_t i = 0; i < CLI_SET_N; i++) {
        cli_setting *s = &settings[i];
        for (size_t k = 0; s->value == NULL && k < 2 && s->env[k]; k++) {
            const char *v = getenv(s->env[k]);
            if (v && *v) {
                s->value = v;
                snprintf(s->source, sizeof(s->source), "env %s", s->env[k]);
            }
        }
    }
    const char *path = cli_config_path();
    _cleanup_free_ char *text = NULL;
    if (*path && read_file(path, &text, err) < 0)
        return -1;
    if (text && parse(path, text, err) < 0)
        return -1;
    for (size_t i = 0; i < CLI_SET_N; i++)
        if (settings[i].value == NULL)
            snprintf(settings[i].source, sizeof(settings[i].source), "default");
    return 0;
}
