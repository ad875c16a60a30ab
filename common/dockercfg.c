/* Docker config.json credentials: see dockercfg.h. */
#include "dockercfg.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "buf.h"
#include "cleanup.h"

#define CONFIG_MAX ((size_t)4 << 20)
#define HELPER_MAX ((size_t)64 << 10)

extern char **environ;

static void wipe_free(char *s)
{
    if (s != NULL) {
        explicit_bzero(s, strlen(s));
        free(s);
    }
}

void kiln_reg_cred_dispose(kiln_reg_cred *c)
{
    free(c->registry);
    free(c->username);
    wipe_free(c->secret);
    c->registry = c->username = c->secret = NULL;
}

int kiln_dockercfg_path(const char *authfile, char *out, size_t n)
{
    const char *e = getenv("REGISTRY_AUTH_FILE"), *d = getenv("DOCKER_CONFIG"), *h = getenv("HOME");
    int l;
    if (authfile != NULL && *authfile)
        l = snprintf(out, n, "%s", authfile);
    else if (e && *e)
        l = snprintf(out, n, "%s", e);
    else if (d && *d)
        l = snprintf(out, n, "%s/config.json", d);
    else if (h && *h)
        l = snprintf(out, n, "%s/.docker/config.json", h);
    else
        return -1;
    return l < 0 || (size_t)l >= n ? -1 : 0;
}

void kiln_dockercfg_host(const char *key, char *out, size_t n)
{
    const char *p = strstr(key, "://");
    p = p ? p + 3 : key;
    size_t l = strcspn(p, "/");
    snprintf(out, n, "%.*s", (int)l, p);
    if (strcmp(out, "index.docker.io") == 0 || strcmp(out, "registry-1.docker.io") == 0)
        snprintf(out, n, "docker.io");
}

const char *kiln_dockercfg_server_key(const char *host)
{
    return strcmp(host, "docker.io") == 0 ? "https://index.docker.io/v1/" : host;
}

int kiln_dockercfg_load(const char *path, cJSON **out, kiln_error **err)
{
    *out = NULL;
    _cleanup_fclose_ FILE *f = fopen(path, "re");
    if (f == NULL) {
        if (errno == ENOENT) {
            *out = cJSON_CreateObject();
            return *out ? 0 : kiln_error_set(err, KILN_ENOSPC, ENOMEM, "out of memory");
        }
        return kiln_error_set(err, KILN_EIO, errno, "%s", path);
    }
    kiln_buf b;
    kiln_buf_init(&b, CONFIG_MAX);
    char tmp[4096];
    size_t r;
    int rc = 0;
    while (rc == 0 && (r = fread(tmp, 1, sizeof(tmp), f)) > 0)
        rc = kiln_buf_append(&b, tmp, r, NULL);
    explicit_bzero(tmp, sizeof(tmp));
    cJSON *j = rc == 0 && b.len ? cJSON_ParseWithLength(b.data, b.len) : NULL;
    size_t len = b.len;
    if (b.data != NULL)
        explicit_bzero(b.data, b.len);
    kiln_buf_dispose(&b);
    if (rc < 0)
        return kiln_error_set(err, KILN_EINVAL, 0, "%s is larger than %zu MiB", path,
                              CONFIG_MAX >> 20);
    if (len == 0)
        j = cJSON_CreateObject();
    if (!cJSON_IsObject(j)) {
        cJSON_Delete(j);
        return kiln_error_set(err, KILN_EINVAL, 0, "%s is not a JSON object", path);
    }
    *out = j;
    return 0;
}

/* Decodes base64 "user:pass"; NULL when malformed. */
static char *unb64(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n % 4 != 0 || n > 8192)
        return NULL;
    char *o = malloc(n / 4 * 3 + 1);
    if (o == NULL)
        return NULL;
    int l = EVP_DecodeBlock((unsigned char *)o, (const unsigned char *)s, (int)n);
    if (l < 0) {
        free(o);
        return NULL;
    }
    while (l > 0 && s[n - 1] == '=' && o[l - 1] == '\0') { /* padding decodes to NULs */
        l--;
        n--;
    }
    o[l] = '\0';
    return o;
}

static int fill(kiln_reg_cred *out, const char *host, const char *user, const char *secret)
{
    out->registry = strdup(host);
    out->username = strdup(user);
    out->secret = strdup(secret);
    if (out->registry == NULL || out->username == NULL || out->secret == NULL) {
        kiln_reg_cred_dispose(out);
        return -1;
    }
    return 1;
}

int kiln_dockercfg_helper_get(const char *helper, const char *host, kiln_reg_cred *out,
                              kiln_error **err)
{
    for (const char *p = helper; *p; p++)
        if (!isalnum((unsigned char)*p) && *p != '-' && *p != '_' && *p != '.')
            return kiln_error_set(err, KILN_EINVAL, 0,
                                  "credential helper name '%.100s' is not "
                                  "plain",
                                  helper);
    char prog[300];
    snprintf(prog, sizeof(prog), "docker-credential-%.200s", helper);
    int in[2] = {-1, -1}, o[2] = {-1, -1};
    if (pipe2(in, O_CLOEXEC) < 0)
        return kiln_error_set(err, KILN_EIO, errno, "pipe");
    if (pipe2(o, O_CLOEXEC) < 0) {
        int e = errno;
        close(in[0]);
        close(in[1]);
        return kiln_error_set(err, KILN_EIO, e, "pipe");
    }
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, in[0], 0);
    posix_spawn_file_actions_adddup2(&fa, o[1], 1);
    posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
    char *argv[] = {prog, "get", NULL};
    pid_t pid = -1;
    int rc = posix_spawnp(&pid, prog, &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    close(in[0]);
    close(o[1]);
    if (rc != 0) {
        close(in[1]);
        close(o[0]);
        return kiln_error_set(err, KILN_EPRECOND, rc, "credential helper %s not runnable", prog);
    }
    struct sigaction ign = {.sa_handler = SIG_IGN}, old;
    sigaction(SIGPIPE, &ign, &old);
    const char *key = kiln_dockercfg_server_key(host);
    ssize_t w = write(in[1], key, strlen(key));
    (void)w;
    close(in[1]);
    sigaction(SIGPIPE, &old, NULL);
    kiln_buf b;
    kiln_buf_init(&b, HELPER_MAX);
    char tmp[4096];
    ssize_t n;
    while ((n = read(o[0], tmp, sizeof(tmp))) > 0 || (n < 0 && errno == EINTR))
        if (n > 0 && kiln_buf_append(&b, tmp, (size_t)n, NULL) < 0)
            break;
    explicit_bzero(tmp, sizeof(tmp));
    close(o[0]);
    int st = 0;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
        ;
    int found = 0;
    if (WIFEXITED(st) && WEXITSTATUS(st) == 0 && b.len > 0) {
        _cleanup_cjson_ cJSON *j = cJSON_ParseWithLength(b.data, b.len);
        const cJSON *u = cJSON_GetObjectItemCaseSensitive(j, "Username");
        const cJSON *s = cJSON_GetObjectItemCaseSensitive(j, "Secret");
        if (cJSON_IsString(u) && cJSON_IsString(s) && s->valuestring[0] != '\0') {
            found = fill(out, host, u->valuestring, s->valuestring);
            explicit_bzero(s->valuestring, strlen(s->valuestring));
        }
    }
    if (b.data != NULL)
        explicit_bzero(b.data, b.len);
    kiln_buf_dispose(&b);
    if (found < 0)
        return kiln_error_set(err, KILN_ENOSPC, ENOMEM, "out of memory");
    return found;
}

int kiln_dockercfg_lookup(const cJSON *cfg, const char *host, bool helpers, kiln_reg_cred *out,
                          kiln_error **err)
{
    char h[512];
    const cJSON *it;
    cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(cfg, "credHelpers"))
    {
        if (it->string == NULL || !cJSON_IsString(it) || it->valuestring[0] == '\0')
            continue;
        kiln_dockercfg_host(it->string, h, sizeof(h));
        if (strcmp(h, host) == 0)
            return helpers ? kiln_dockercfg_helper_get(it->valuestring, host, out, err) : 0;
    }
    cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(cfg, "auths"))
    {
        if (it->string == NULL)
            continue;
        kiln_dockercfg_host(it->string, h, sizeof(h));
        if (strcmp(h, host) != 0)
            continue;
        const cJSON *a = cJSON_GetObjectItemCaseSensitive(it, "auth");
        const cJSON *u = cJSON_GetObjectItemCaseSensitive(it, "username");
        const cJSON *p = cJSON_GetObjectItemCaseSensitive(it, "password");
        const cJSON *t = cJSON_GetObjectItemCaseSensitive(it, "identitytoken");
        int r = 0;
        if (cJSON_IsString(t) && t->valuestring[0] != '\0') {
            r = fill(out, host, KILN_DOCKERCFG_TOKEN_USER, t->valuestring);
        } else if (cJSON_IsString(a) && a->valuestring[0] != '\0') {
            char *up = unb64(a->valuestring);
            char *colon = up ? strchr(up, ':') : NULL;
            if (colon != NULL) {
                *colon = '\0';
                r = fill(out, host, up, colon + 1);
                *colon = ':';
            }
            wipe_free(up);
        } else if (cJSON_IsString(u) && cJSON_IsString(p)) {
            r = fill(out, host, u->valuestring, p->valuestring);
        }
        if (r < 0)
            return kiln_error_set(err, KILN_ENOSPC, ENOMEM, "out of memory");
        return r; /* an entry for host: the credsStore is not asked */
    }
    const cJSON *store = cJSON_GetObjectItemCaseSensitive(cfg, "credsStore");
    if (helpers && cJSON_IsString(store) && store->valuestring[0] != '\0')
        return kiln_dockercfg_helper_get(store->valuestring, host, out, err);
    return 0;
}

static int add_host(char ***v, size_t *n, const char *key)
{
    char h[512];
    kiln_dockercfg_host(key, h, sizeof(h));
    if (h[0] == '\0')
        return 0;
    for (size_t i = 0; i < *n; i++)
        if (strcmp((*v)[i], h) == 0)
            return 0;
    char **nv = realloc(*v, (*n + 1) * sizeof(**v));
    if (nv == NULL)
        return -1;
    *v = nv;
    if ((nv[*n] = strdup(h)) == NULL)
        return -1;
    (*n)++;
    return 0;
}

char **kiln_dockercfg_hosts(const cJSON *cfg, size_t *n)
{
    char **v = NULL;
    *n = 0;
    const char *sections[] = {"auths", "credHelpers"};
    for (size_t s = 0; s < 2; s++) {
        const cJSON *it;
        cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(cfg, sections[s]))
        {
            if (it->string != NULL && add_host(&v, n, it->string) < 0)
                return v; /* out of memory: what was gathered */
        }
    }
    return v;
}
