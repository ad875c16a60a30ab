/* On-disk state of the registry client under <data>/registry/, written
 * crash-safely (temp + fsync + rename + directory fsync):
 *   origins/<hex>   "host repo" lines: where blob sha256:<hex> is known to exist;
 *   uploads/<key>   JSON {registry, repository, digest, location, offset} of a
 *                   chunked upload in progress (key = sha256 of the triple);
 * and the small insecure-registries configuration reader. */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "digest.h"
#include "reg_internal.h"

#define ORIGINS_MAX_BYTES 65536 /* per blob; older lines are dropped beyond this */
#define SESSION_MAX       16384

int reg_mkdirs(const char *path, kiln_error **err)
{
    char p[4096];
    int n = snprintf(p, sizeof(p), "%s", path);
    if (n < 0 || (size_t)n >= sizeof(p))
        return kiln_error_set(err, KILN_EINVAL, 0, "path too long");
    for (char *s = p + 1; *s; s++) {
        if (*s != '/')
            continue;
        *s = '\0';
        if (mkdir(p, 0700) < 0 && errno != EEXIST)
            return kiln_error_set(err, KILN_EIO, errno, "mkdir %s", p);
        *s = '/';
    }
    if (mkdir(p, 0700) < 0 && errno != EEXIST)
        return kiln_error_set(err, KILN_EIO, errno, "mkdir %s", p);
    return 0;
}

int reg_write_atomic(const char *path, const void *data, size_t len, kiln_error **err)
{
    char tmp[4200];
    snprintf(tmp, sizeof(tmp), "%s.tmp.%d.%lx", path, (int)getpid(), (unsigned long)pthread_self());
    _cleanup_close_ int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        return kiln_error_set(err, KILN_EIO, errno, "create %s", tmp);
    const char *p = data;
    size_t left = len;
    while (left > 0) {
        ssize_t w = write(fd, p, left);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0) {
            int e = errno;
            unlink(tmp);
            return kiln_error_set(err, e == ENOSPC ? KILN_ENOSPC : KILN_EIO, e, "write %s", tmp);
        }
        p += w;
        left -= (size_t)w;
    }
    if (fsync(fd) < 0 || rename(tmp, path) < 0) {
        int e = errno;
        unlink(tmp);
        return kiln_error_set(err, KILN_EIO, e, "store %s", path);
    }
    char dcopy[4200];
    snprintf(dcopy, sizeof(dcopy), "%s", path);
    _cleanup_close_ int dfd = open(dirname(dcopy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0)
        fsync(dfd);
    return 0;
}

static char *read_small(const char *path, size_t max)
{
    _cleanup_fclose_ FILE *f = fopen(path, "re");
    if (f == NULL)
        return NULL;
    char *buf = malloc(max + 1);
    if (buf == NULL)
        return NULL;
    size_t n = fread(buf, 1, max, f);
    buf[n] = '\0';
    return buf;
}

static bool origin_path(const char *state_dir, const char *digest, char *out, size_t n)
{
    if (!kiln_digest_valid(digest))
        return false;
    int l = snprintf(out, n, "%s/origins/%s", state_dir, digest + 7);
    return l > 0 && (size_t)l < n;
}

void reg_origin_add(const char *state_dir, const char *digest, const char *host, const char *repo)
{
    char path[4200], dir[4200], lock[4300];
    if (!origin_path(state_dir, digest, path, sizeof(path)))
        return;
    snprintf(dir, sizeof(dir), "%s/origins", state_dir);
    if (reg_mkdirs(dir, NULL) < 0)
        return;
    /* Serialise writers of the origin files (threads and processes). */
    snprintf(lock, sizeof(lock), "%s/.lock", dir);
    _cleanup_close_ int lfd = open(lock, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (lfd < 0 || flock(lfd, LOCK_EX) < 0)
        return;
    char line[600];
    snprintf(line, sizeof(line), "%s %s\n", host, repo);
    _cleanup_free_ char *old = read_small(path, ORIGINS_MAX_BYTES);
    if (old != NULL && (strncmp(old, line, strlen(line)) == 0 || strstr(old, line) != NULL))
        return; /* known */
    kiln_buf b;
    kiln_buf_init(&b, ORIGINS_MAX_BYTES + sizeof(line));
    /* Newest first; drop the oldest lines beyond the cap. */
    kiln_buf_puts(&b, line, NULL);
    if (old != NULL) {
        size_t keep = strlen(old);
        while (keep > ORIGINS_MAX_BYTES - sizeof(line)) {
            char *nl = memrchr(old, '\n', keep - 1);
            keep = nl ? (size_t)(nl - old) + 1 : 0;
        }
        kiln_buf_append(&b, old, keep, NULL);
    }
    reg_write_atomic(path, b.data, b.len, NULL);
    kiln_buf_dispose(&b);
}

int reg_origin_find(const char *state_dir, const char *digest, const char *host,
                    const char *not_repo, char *out, size_t n)
{
    char path[4200];
    if (!origin_path(state_dir, digest, path, sizeof(path)))
        return KILN_ENOENT;
    _cleanup_free_ char *txt = read_small(path, ORIGINS_MAX_BYTES);
    if (txt == NULL)
        return KILN_ENOENT;
    size_t hl = strlen(host);
    char *save = NULL;
    for (char *l = strtok_r(txt, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
        if (strncmp(l, host, hl) != 0 || l[hl] != ' ')
            continue;
        const char *repo = l + hl + 1;
        if (strcmp(repo, not_repo) == 0 || repo[0] == '\0')
            continue;
        snprintf(out, n, "%s", repo);
        return 0;
    }
    return KILN_ENOENT;
}

static bool session_path(const char *state_dir, const char *host, const char *repo,
                         const char *digest, char *out, size_t n)
{
    char key[1024], hex[KILN_DIGEST_STRLEN + 1];
    snprintf(key, sizeof(key), "%s\n%s\n%s", host, repo, digest);
    kiln_sha256_bytes(key, strlen(key), hex);
    int l = snprintf(out, n, "%s/uploads/%s", state_dir, hex + 7);
    return l > 0 && (size_t)l < n;
}

int reg_session_load(const char *state_dir, const char *host, const char *repo, const char *digest,
                     reg_session *out)
{
    char path[4200];
    memset(out, 0, sizeof(*out));
    if (!session_path(state_dir, host, repo, digest, path, sizeof(path)))
        return KILN_ENOENT;
    _cleanup_free_ char *txt = read_small(path, SESSION_MAX);
    if (txt == NULL)
        return KILN_ENOENT;
    _cleanup_cjson_ cJSON *j = cJSON_Parse(txt);
    const cJSON *reg = cJSON_GetObjectItemCaseSensitive(j, "registry");
    const cJSON *rp = cJSON_GetObjectItemCaseSensitive(j, "repository");
    const cJSON *dg = cJSON_GetObjectItemCaseSensitive(j, "digest");
    const cJSON *loc = cJSON_GetObjectItemCaseSensitive(j, "location");
    const cJSON *off = cJSON_GetObjectItemCaseSensitive(j, "offset");
    if (!cJSON_IsString(reg) || strcmp(reg->valuestring, host) != 0 || !cJSON_IsString(rp) ||
        strcmp(rp->valuestring, repo) != 0 || !cJSON_IsString(dg) ||
        strcmp(dg->valuestring, digest) != 0 || !cJSON_IsString(loc) || !cJSON_IsNumber(off) ||
        off->valuedouble < 0)
        return KILN_ENOENT;
    out->location = strdup(loc->valuestring);
    out->offset = (uint64_t)off->valuedouble;
    return out->location ? 0 : KILN_ENOENT;
}

int reg_session_save(const char *state_dir, const char *host, const char *repo, const char *digest,
                     const reg_session *ss, kiln_error **err)
{
    char path[4200], dir[4200];
    if (!session_path(state_dir, host, repo, digest, path, sizeof(path)))
        return kiln_error_set(err, KILN_EINVAL, 0, "state path too long");
    snprintf(dir, sizeof(dir), "%s/uploads", state_dir);
    int r = reg_mkdirs(dir, err);
    if (r < 0)
        return r;
    _cleanup_cjson_ cJSON *j = cJSON_CreateObject();
    if (j == NULL || !cJSON_AddStringToObject(j, "registry", host) ||
        !cJSON_AddStringToObject(j, "repository", repo) ||
        !cJSON_AddStringToObject(j, "digest", digest) ||
        !cJSON_AddStringToObject(j, "location", ss->location) ||
        !cJSON_AddNumberToObject(j, "offset", (double)ss->offset))
        return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
    _cleanup_free_ char *txt = cJSON_PrintUnformatted(j);
    if (txt == NULL)
        return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
    return reg_write_atomic(path, txt, strlen(txt), err);
}

void reg_session_drop(const char *state_dir, const char *host, const char *repo, const char *digest)
{
    char path[4200];
    if (session_path(state_dir, host, repo, digest, path, sizeof(path)))
        unlink(path);
}

static bool host_eq(const char *a, size_t al, const char *host)
{
    return al == strlen(host) && strncmp(a, host, al) == 0;
}

bool reg_conf_insecure(const char *conf_path, const char *host)
{
    if (conf_path == NULL)
        return false;
    _cleanup_free_ char *txt = read_small(conf_path, 1 << 20);
    if (txt == NULL)
        return false;
    bool in_block = false, loc_match = false, insecure = false;
    char *save = NULL;
    for (char *l = strtok_r(txt, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
        while (*l == ' ' || *l == '\t')
            l++;
        if (*l == '#' || *l == '\0')
            continue;
        if (strncmp(l, "insecure ", 9) == 0 && strchr(l, '=') == NULL) { /* "insecure HOST" */
            char *h = l + 9;
            size_t hl = strcspn(h, " \t\r#");
            if (host_eq(h, hl, host))
                return true;
            continue;
        }
        if (strncmp(l, "[[registry]]", 12) == 0) {
            if (in_block && loc_match && insecure)
                return true;
            in_block = true;
            loc_match = insecure = false;
            continue;
        }
        if (!in_block)
            continue;
        char *eq = strchr(l, '=');
        if (eq == NULL)
            continue;
        size_t kl = strcspn(l, " \t=");
        char *v = eq + 1;
        while (*v == ' ' || *v == '\t')
            v++;
        if (kl == 8 && strncmp(l, "location", 8) == 0 && *v == '"') {
            size_t vl = strcspn(v + 1, "\"");
            loc_match = host_eq(v + 1, vl, host);
        } else if (kl == 8 && strncmp(l, "insecure", 8) == 0) {
            insecure = strncmp(v, "true", 4) == 0;
        }
    }
    return in_block && loc_match && insecure;
}
