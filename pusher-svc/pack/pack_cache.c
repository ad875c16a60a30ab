/* Pack cache: (diff key, packing settings) -> psh_layer_info, one JSON file
 * per entry under a caller-owned directory, written crash-safely.  Also owns
 * the settings string that names everything that changes packed bytes. */
#include "pack_internal.h"
#include "cleanup.h"
#include "fs.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <libdeflate.h>
#include <zstd.h>

/* Bumped whenever the tar layout or block scheme changes the output. */
#define PACK_FORMAT_REVISION 1
#define CACHE_ENTRY_MAX      4096 /* bytes; a real entry is ~400 */

struct psh_pack_cache {
    char *dir;
    int dirfd;
};

void psh_pack_settings_string(char *buf, size_t len, const psh_pack_opts *opts)
{
    int level = 0;
    if (pack_resolve_level(opts, &level, NULL) < 0)
        level = opts->level;
    const char *codec = "none";
    char cbuf[64];
    if (opts->comp == PSH_COMP_GZIP) {
        snprintf(cbuf, sizeof(cbuf), "gzip/libdeflate-%s", LIBDEFLATE_VERSION_STRING);
        codec = cbuf;
    } else if (opts->comp == PSH_COMP_ZSTD) {
        snprintf(cbuf, sizeof(cbuf), "zstd/libzstd-%s", ZSTD_versionString());
        codec = cbuf;
    }
    int n = snprintf(buf, len, "kiln-pack/%d codec=%s level=%d block=%zu epoch=%lld overlay=%d",
                     PACK_FORMAT_REVISION, codec, level, PSH_PACK_BLOCK_SIZE,
                     (long long)opts->source_date_epoch, opts->overlay_diff ? 1 : 0);
    /* id maps can be long: they enter the string as a digest */
    if (n > 0 && (size_t)n < len && (opts->uid_map_len > 0 || opts->gid_map_len > 0)) {
        char dg[KILN_DIGEST_STRLEN + 1] = "";
        kiln_sha256 *h = kiln_sha256_new();
        if (h != NULL) {
            uint32_t lens[2] = {(uint32_t)opts->uid_map_len, (uint32_t)opts->gid_map_len};
            kiln_sha256_update(h, lens, sizeof(lens));
            for (size_t i = 0; i < opts->uid_map_len; i++)
                kiln_sha256_update(h, &opts->uid_map[i], sizeof(opts->uid_map[i]));
            for (size_t i = 0; i < opts->gid_map_len; i++)
                kiln_sha256_update(h, &opts->gid_map[i], sizeof(opts->gid_map[i]));
            kiln_sha256_final_str(h, dg);
            kiln_sha256_free(h);
        }
        snprintf(buf + n, len - (size_t)n, " idmap=%s", dg[0] ? dg + 7 : "unavailable");
    }
}

int psh_pack_cache_open(psh_pack_cache **out, const char *dir, kiln_error **err)
{
    if (mkdir(dir, 0700) < 0 && errno != EEXIST)
        return kiln_error_set(err, kiln_code_from_errno(errno), errno, "mkdir %s", dir);
    _cleanup_close_ int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return kiln_error_set(err, kiln_code_from_errno(errno), errno, "open %s", dir);
    psh_pack_cache *c = calloc(1, sizeof(*c));
    if (c == NULL || (c->dir = strdup(dir)) == NULL) {
        free(c);
        return kiln_error_set(err, KILN_ENOSPC, ENOMEM, "pack cache");
    }
    c->dirfd = steal_fd(&fd);
    *out = c;
    return 0;
}

void psh_pack_cache_free(psh_pack_cache *c)
{
    if (c == NULL)
        return;
    close(c->dirfd);
    free(c->dir);
    free(c);
}

/* Entry file name: hex sha256 of key NUL settings, plus ".json". */
static void entry_name(char name[80], const char *key, const char *settings)
{
    size_t kl = strlen(key), sl = strlen(settings);
    kiln_sha256 *h = kiln_sha256_new();
    char dg[KILN_DIGEST_STRLEN + 1];
    if (h == NULL) { /* allocation failure: a name no lookup will find */
        snprintf(name, 80, "unavailable.json");
        return;
    }
    kiln_sha256_update(h, key, kl + 1);
    kiln_sha256_update(h, settings, sl);
    kiln_sha256_final_str(h, dg);
    kiln_sha256_free(h);
    snprintf(name, 80, "%s.json", dg + 7);
}

static const char *media_type_static(const char *s)
{
    static const char *const all[] = {PSH_MEDIA_TYPE_TAR, PSH_MEDIA_TYPE_TAR_GZIP,
                                      PSH_MEDIA_TYPE_TAR_ZSTD};
    for (size_t i = 0; s != NULL && i < KILN_ARRAY_SIZE(all); i++)
        if (strcmp(s, all[i]) == 0)
            return all[i];
    return NULL;
}

int psh_pack_cache_lookup(psh_pack_cache *c, psh_layer_info *out, const char *key,
                          const psh_pack_opts *opts, kiln_error **err)
{
    char settings[256], name[80];
    psh_pack_settings_string(settings, sizeof(settings), opts);
    entry_name(name, key, settings);
    _cleanup_close_ int fd = openat(c->dirfd, name, O_RDONLY | O_CLOEXEC);
    if (fd < 0 && errno == ENOENT)
        return KILN_ENOENT; /* a miss is not an error worth a message */
    if (fd < 0)
        return kiln_error_set(err, KILN_EIO, errno, "open %s/%s", c->dir, name);
    char buf[CACHE_ENTRY_MAX + 1];
    size_t len = 0;
    for (;;) {
        ssize_t n = read(fd, buf + len, sizeof(buf) - 1 - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return kiln_error_set(err, KILN_EIO, errno, "read %s/%s", c->dir, name);
        if (n == 0 || (len += (size_t)n) == sizeof(buf) - 1)
            break;
    }
    buf[len] = '\0';
    _cleanup_cjson_ cJSON *j = cJSON_Parse(buf);
    const char *k = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(j, "key"));
    const char *s = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(j, "settings"));
    const char *di = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(j, "diff_id"));
    const char *dg = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(j, "digest"));
    const char *mt =
        media_type_static(cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(j, "media_type")));
    const cJSON *sz = cJSON_GetObjectItemCaseSensitive(j, "size");
    const cJSON *tsz = cJSON_GetObjectItemCaseSensitive(j, "tar_size");
    if (k == NULL || strcmp(k, key) != 0 || s == NULL || strcmp(s, settings) != 0 || di == NULL ||
        !kiln_digest_valid(di) || dg == NULL || !kiln_digest_valid(dg) || mt == NULL ||
        !cJSON_IsNumber(sz) || !cJSON_IsNumber(tsz) || sz->valuedouble < 0 || tsz->valuedouble < 0)
        return KILN_ENOENT; /* torn, foreign or colliding entry: treat as a miss */
    memcpy(out->diff_id, di, sizeof(out->diff_id));
    memcpy(out->digest, dg, sizeof(out->digest));
    out->size = (uint64_t)sz->valuedouble;
    out->tar_size = (uint64_t)tsz->valuedouble;
    out->media_type = mt;
    return 0;
}

int psh_pack_cache_store(psh_pack_cache *c, const char *key, const psh_pack_opts *opts,
                         const psh_layer_info *info, kiln_error **err)
{
    char settings[256], name[80];
    psh_pack_settings_string(settings, sizeof(settings), opts);
    entry_name(name, key, settings);

    _cleanup_cjson_ cJSON *j = cJSON_CreateObject();
    if (j == NULL || !cJSON_AddStringToObject(j, "key", key) ||
        !cJSON_AddStringToObject(j, "settings", settings) ||
        !cJSON_AddStringToObject(j, "diff_id", info->diff_id) ||
        !cJSON_AddStringToObject(j, "digest", info->digest) ||
        !cJSON_AddNumberToObject(j, "size", (double)info->size) ||
        !cJSON_AddNumberToObject(j, "tar_size", (double)info->tar_size) ||
        !cJSON_AddStringToObject(j, "media_type", info->media_type))
        return kiln_error_set(err, KILN_ENOSPC, ENOMEM, "pack cache entry");
    _cleanup_free_ char *text = cJSON_PrintUnformatted(j);
    if (text == NULL || strlen(text) > CACHE_ENTRY_MAX)
        return kiln_error_set(err, KILN_EINVAL, 0, "pack cache entry too large");

    return kiln_atomic_write_at(c->dirfd, c->dirfd, name, text, strlen(text), 0600, 0, err);
}

int psh_pack_cache_remove(psh_pack_cache *c, const char *key, const psh_pack_opts *opts,
                          kiln_error **err)
{
    char settings[256], name[80];
    psh_pack_settings_string(settings, sizeof(settings), opts);
    entry_name(name, key, settings);
    if (unlinkat(c->dirfd, name, 0) < 0 && errno != ENOENT)
        return kiln_error_set(err, kiln_code_from_errno(errno), errno, "unlink %s/%s", c->dir,
                              name);
    return 0;
}
