/* Fuzz target for what kiln-pusher parses from registries: WWW-Authenticate
 * challenges, Range headers, {"errors":[...]} bodies, config.json keys and
 * manifest / index documents (media type, descriptors, blob lists). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "dockercfg.h"
#include "reg_internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 1 << 16)
        return 0;
    char *s = malloc(size + 1);
    if (s == NULL)
        return 0;
    memcpy(s, data, size);
    s[size] = '\0';

    char scheme[32], host[256];
    char *realm = NULL, *service = NULL, *scope = NULL;
    reg_parse_challenge(s, scheme, sizeof(scheme), &realm, &service, &scope);
    free(realm);
    free(service);
    free(scope);
    (void)reg_range_next(s);
    kiln_dockercfg_host(s, host, sizeof(host));

    reg_resp rs;
    memset(&rs, 0, sizeof(rs));
    kiln_buf_init(&rs.body, 1 << 20);
    kiln_buf_append(&rs.body, data, size, NULL);
    rs.status = 400;
    char msg[512];
    reg_registry_message(&rs, msg, sizeof(msg));
    kiln_buf_dispose(&rs.body);

    cJSON *doc = cJSON_ParseWithLength((const char *)data, size);
    if (doc) {
        char mt[128];
        reg_doc_media_type(doc, NULL, mt, sizeof(mt));
        (void)reg_mt_is_index(mt);
        psh_descriptor d;
        kiln_error *err = NULL;
        reg_doc_descriptor(doc, &d, &err);
        kiln_error_free(&err);
        psh_descriptor *blobs = NULL;
        size_t n = 0;
        if (reg_doc_blobs(doc, &blobs, &n, &err) == 0)
            free(blobs);
        kiln_error_free(&err);
        const cJSON *m = cJSON_GetObjectItemCaseSensitive(doc, "manifests");
        const cJSON *it;
        cJSON_ArrayForEach(it, m)
        {
            reg_doc_descriptor(it, &d, &err);
            kiln_error_free(&err);
        }
        cJSON_Delete(doc);
    }
    free(s);
    return 0;
}
