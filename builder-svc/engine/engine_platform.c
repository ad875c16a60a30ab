/* Foreign platforms in the engine: which RUNs run natively and which under
 * QEMU user emulation (binfmt_misc handlers with the F flag, bld_binfmt.h),
 * the platforms Status lists, and the choice of a base image's manifest for
 * a platform from an index or an image's config. */
#include "engine_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bld_binfmt.h"
#include "cleanup.h"
#include "log.h"
#include "platform.h"

void eng_platform_init(bld_engine *e)
{
    pthread_mutex_init(&e->binfmt_mu, NULL);
    e->binfmt = calloc(1, sizeof(*e->binfmt));
    if (e->binfmt == NULL)
        return;
    bld_binfmt_scan(e->binfmt, NULL);
    char text[512], detail[1024];
    bld_binfmt_platforms_text(e->binfmt, kiln_platform_host_string(), text, sizeof(text));
    bld_binfmt_describe(e->binfmt, kiln_platform_host_string(), detail, sizeof(detail));
    kiln_info("build", "platforms: %s (%s)", text, detail);
}

void eng_platform_free(bld_engine *e)
{
    if (e->binfmt == NULL)
        return;
    free(e->binfmt);
    e->binfmt = NULL;
    pthread_mutex_destroy(&e->binfmt_mu);
}

int eng_platform_check(bld_engine *e, const char *build_platform, const char *platform,
                       char *emulated_by, size_t cap, kiln_error **err)
{
    char why[768] = "";
    if (cap)
        emulated_by[0] = '\0';
    if (e->binfmt == NULL)
        return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
    pthread_mutex_lock(&e->binfmt_mu);
    const bld_binfmt_entry *h = NULL;
    int r = bld_binfmt_check(e->binfmt, build_platform, platform, &h, why, sizeof(why));
    if (r < 0) {
        /* Registered since the builder started (or since the last look)? */
        bld_binfmt_scan(e->binfmt, NULL);
        r = bld_binfmt_check(e->binfmt, build_platform, platform, &h, why, sizeof(why));
    }
    if (r > 0 && h != NULL && cap)
        snprintf(emulated_by, cap, "%s", h->name);
    pthread_mutex_unlock(&e->binfmt_mu);
    return r < 0 ? kiln_error_set(err, KILN_EPRECOND, 0, "%s", why) : 0;
}

size_t bld_engine_platforms(bld_engine *e, char (*out)[32], bool *emulated, size_t cap)
{
    if (e->binfmt == NULL) {
        if (cap == 0)
            return 0;
        snprintf(out[0], 32, "%s", kiln_platform_host_string());
        emulated[0] = false;
        return 1;
    }
    pthread_mutex_lock(&e->binfmt_mu);
    size_t n = bld_binfmt_platforms(e->binfmt, kiln_platform_host_string(), out, emulated, cap);
    pthread_mutex_unlock(&e->binfmt_mu);
    return n;
}

void bld_engine_emulation(bld_engine *e, char *platforms, size_t pcap, char *detail, size_t dcap)
{
    const char *host = kiln_platform_host_string();
    if (e->binfmt == NULL) {
        snprintf(platforms, pcap, "%s", host);
        snprintf(detail, dcap, "out of memory");
        return;
    }
    pthread_mutex_lock(&e->binfmt_mu);
    bld_binfmt_platforms_text(e->binfmt, host, platforms, pcap);
    bld_binfmt_describe(e->binfmt, host, detail, dcap);
    pthread_mutex_unlock(&e->binfmt_mu);
}

static const char *jstr(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsString(v) ? v->valuestring : "";
}

/* "os/arch[/variant]" of an index entry's platform or a config, as written. */
static void describe(const cJSON *o, char *out, size_t cap)
{
    const char *v = jstr(o, "variant");
    snprintf(out, cap, "%s/%s%s%s", jstr(o, "os"), jstr(o, "architecture"), *v ? "/" : "", v);
}

int eng_index_select(const char *index_json, const char *platform,
                     char digest[KILN_DIGEST_STRLEN + 1], char *have, size_t have_cap)
{
    kiln_platform want;
    if (have_cap)
        have[0] = '\0';
    if (kiln_platform_parse(&want, platform, NULL, NULL) < 0)
        return KILN_EINVAL;
    _cleanup_cjson_ cJSON *idx = cJSON_Parse(index_json);
    const cJSON *e, *best = NULL;
    bool best_exact = false;
    size_t len = 0;
    cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(idx, "manifests"))
    {
        const cJSON *pl = cJSON_GetObjectItemCaseSensitive(e, "platform");
        const char *os = jstr(pl, "os"), *arch = jstr(pl, "architecture");
        const char *var = jstr(pl, "variant");
        if (*os && *arch && have_cap > len) {
            char d[KILN_PLATFORM_STRMAX];
            describe(pl, d, sizeof(d));
            int w = snprintf(have + len, have_cap - len, "%s%s", len ? ", " : "", d);
            len += w > 0 ? (size_t)w : 0;
        }
        if (!*os || !*arch || !kiln_platform_match(&want, os, arch, var) || (best && best_exact) ||
            !cJSON_IsString(cJSON_GetObjectItemCaseSensitive(e, "digest")))
            continue;
        bool exact = kiln_platform_exact(&want, os, arch, var);
        if (best == NULL || exact) {
            best = e;
            best_exact = exact;
        }
    }
    if (best == NULL)
        return KILN_ENOENT;
    snprintf(digest, KILN_DIGEST_STRLEN + 1, "%s", jstr(best, "digest"));
    return 0;
}

bool eng_config_platform_ok(const char *config_json, const char *platform, char *found, size_t cap)
{
    _cleanup_cjson_ cJSON *cfg = cJSON_Parse(config_json);
    if (cap)
        found[0] = '\0';
    const char *os = jstr(cfg, "os"), *arch = jstr(cfg, "architecture");
    if (!*os || !*arch)
        return true; /* an image that says nothing is taken as it is */
    describe(cfg, found, cap);
    kiln_platform want;
    if (kiln_platform_parse(&want, platform, NULL, NULL) < 0)
        return true;
    return kiln_platform_match(&want, os, arch, jstr(cfg, "variant"));
}
