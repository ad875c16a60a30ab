/* Test helpers for the store tests (see store_fixture.h). */
#include "store_fixture.h"

#include <dirent.h>
#include <ftw.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

char *fx_tmpdir(void)
{
    const char *base = getenv("TMPDIR");
    char *path = NULL;
    if (asprintf(&path, "%s/kiln-store-test-XXXXXX", base && base[0] ? base : "/tmp") < 0)
        return NULL;
    if (mkdtemp(path) == NULL) {
        free(path);
        return NULL;
    }
    return path;
}

static int rm_one(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    remove(p);
    return 0;
}

void fx_rmrf(const char *path)
{
    if (path != NULL)
        nftw(path, rm_one, 32, FTW_DEPTH | FTW_PHYS);
}

char *fx_read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return NULL;
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap + 1);
    size_t got;
    while (buf && (got = fread(buf + n, 1, cap - n, f)) > 0) {
        n += got;
        if (n == cap) {
            char *nb = realloc(buf, 2 * cap + 1);
            if (nb == NULL) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = nb;
            cap *= 2;
        }
    }
    fclose(f);
    if (buf == NULL)
        return NULL;
    buf[n] = '\0';
    if (len)
        *len = n;
    return buf;
}

int fx_write_file(const char *path, const char *content)
{
    FILE *f = fopen(path, "wb");
    if (f == NULL)
        return -1;
    size_t n = strlen(content);
    int r = fwrite(content, 1, n, f) == n ? 0 : -1;
    return fclose(f) == 0 ? r : -1;
}

int fx_count_dir(const char *path)
{
    DIR *d = opendir(path);
    if (d == NULL)
        return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
            n++;
    closedir(d);
    return n;
}

int fx_sh(const char *fmt, ...)
{
    char *cmd = NULL;
    va_list ap;
    va_start(ap, fmt);
    int n = vasprintf(&cmd, fmt, ap);
    va_end(ap);
    if (n < 0)
        return -1;
    int st = system(cmd);
    free(cmd);
    if (st < 0 || !WIFEXITED(st))
        return -1;
    return WEXITSTATUS(st);
}

bool fx_have(const char *prog)
{
    return fx_sh("command -v %s >/dev/null 2>&1", prog) == 0;
}

int fx_fake_image(psh_store *s, const char *tagline, char *out_digest)
{
    char layer_d[KILN_DIGEST_STRLEN + 1], cfg_d[KILN_DIGEST_STRLEN + 1];
    char cfg[512], man[1024], layer[128];
    kiln_error *err = NULL;
    snprintf(layer, sizeof(layer), "layer bytes for %s", tagline);
    if (psh_store_put_blob_bytes(s, NULL, NULL, layer, strlen(layer), layer_d, &err) < 0)
        goto fail;
    snprintf(cfg, sizeof(cfg),
             "{\"created\":\"2026-01-02T03:04:05Z\",\"architecture\":\"amd64\",\"os\":\"linux\","
             "\"config\":{\"Labels\":{\"t\":\"%s\"}},\"rootfs\":{\"type\":\"layers\","
             "\"diff_ids\":[\"%s\"]}}",
             tagline, layer_d);
    if (psh_store_put_blob_bytes(s, NULL, NULL, cfg, strlen(cfg), cfg_d, &err) < 0)
        goto fail;
    snprintf(man, sizeof(man),
             "{\"schemaVersion\":2,\"mediaType\":\"%s\",\"config\":{\"mediaType\":\"%s\","
             "\"digest\":\"%s\",\"size\":%zu},\"layers\":[{\"mediaType\":\"%s\",\"digest\":"
             "\"%s\",\"size\":%zu}]}",
             PSH_MT_OCI_MANIFEST, PSH_MT_OCI_CONFIG, cfg_d, strlen(cfg), PSH_MT_OCI_LAYER, layer_d,
             strlen(layer));
    if (psh_store_put_blob_bytes(s, NULL, NULL, man, strlen(man), out_digest, &err) < 0)
        goto fail;
    return 0;
fail:
    fprintf(stderr, "fx_fake_image: %s\n", err ? err->msg : "?");
    kiln_error_free(&err);
    return -1;
}
