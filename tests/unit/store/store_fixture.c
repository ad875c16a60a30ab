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

int fx_env_open(fx_env *e)
{
    kiln_error *err = NULL;
    e->s = NULL;
    e->dir = kt_tmpdir("store-test");
    if (e->dir == NULL)
        return -1;
    if (psh_store_open(&e->s, e->dir, &err) < 0) {
        fprintf(stderr, "open %s: %s\n", e->dir, err->msg);
        kiln_error_free(&err);
        return -1;
    }
    return 0;
}

void fx_env_close(fx_env *e)
{
    psh_store_free(e->s);
    kt_rmrf(e->dir);
    free(e->dir);
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
