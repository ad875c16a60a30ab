/* Table-driven tests of the registry client's parsers of outside input:
 * WWW-Authenticate challenges, Range headers, {"errors":[…]} bodies,
 * config.json keys, registries configs, manifest media types and
 * descriptors — including malformed and hostile values. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kt.h"
#include "dockercfg.h"
#include "reg_internal.h"

KT_TEST(challenges)
{
    static const struct {
        const char *in, *scheme, *realm, *service, *scope;
    } cases[] = {
        {"Bearer realm=\"https://auth.example/token\",service=\"reg\",scope=\"repository:a/b:"
         "pull,push\"",
         "Bearer", "https://auth.example/token", "reg", "repository:a/b:pull,push"},
        {"Basic realm=\"kiln\"", "Basic", "kiln", NULL, NULL},
        {"Bearer realm=http://h/t, service=s", "Bearer", "http://h/t", "s", NULL},
        {"bearer REALM=\"x\"", "bearer", "x", NULL, NULL},
        {"Bearer realm=\"unterminated", "Bearer", NULL, NULL, NULL},
        {"Bearer", "Bearer", NULL, NULL, NULL},
        {"", "", NULL, NULL, NULL},
        {"Bearer ,,,=,=\"\",realm", "Bearer", NULL, NULL, NULL},
        {"Bearer realm=\"a\",realm=\"b\"", "Bearer", "b", NULL, NULL},
    };
    for (size_t i = 0; i < KILN_ARRAY_SIZE(cases); i++) {
        char scheme[32];
        char *realm = NULL, *service = NULL, *scope = NULL;
        reg_parse_challenge(cases[i].in, scheme, sizeof(scheme), &realm, &service, &scope);
        KT_EXPECT_STR(scheme, cases[i].scheme);
        if (cases[i].realm)
            KT_EXPECT_STR(realm, cases[i].realm);
        else
            KT_EXPECT(realm == NULL);
        if (cases[i].service)
            KT_EXPECT_STR(service, cases[i].service);
        else
            KT_EXPECT(service == NULL);
        if (cases[i].scope)
            KT_EXPECT_STR(scope, cases[i].scope);
        else
            KT_EXPECT(scope == NULL);
        free(realm);
        free(service);
        free(scope);
    }
    /* A very long challenge is cut, not overflowed. */
    size_t n = 100000;
    char *big = malloc(n + 1);
    KT_REQUIRE(big != NULL);
    memset(big, 'B', n);
    big[n] = '\0';
    char scheme[32];
    char *realm = NULL, *service = NULL, *scope = NULL;
    reg_parse_challenge(big, scheme, sizeof(scheme), &realm, &service, &scope);
    KT_EXPECT_INT(strlen(scheme), 31);
    free(big);
}

KT_TEST(ranges)
{
    static const struct {
        const char *in;
        uint64_t next;
    } cases[] = {
        {"0-1234", 1235}, {"bytes=0-99", 100},
        {"0-0", 0},       {NULL, 0},
        {"", 0},          {"garbage", 0},
        {"0-", 0},        {"0-x", 0},
        {"5-9", 10},      {"0-18446744073709551614", 18446744073709551615ULL},
    };
    for (size_t i = 0; i < KILN_ARRAY_SIZE(cases); i++)
        KT_EXPECT_INT((long long)reg_range_next(cases[i].in), (long long)cases[i].next);
}

KT_TEST(registry_error_bodies)
{
    static const struct {
        const char *body, *want;
    } cases[] = {
        {"{\"errors\":[{\"code\":\"MANIFEST_UNKNOWN\",\"message\":\"manifest unknown\"}]}",
         ": MANIFEST_UNKNOWN: manifest unknown"},
        {"{\"errors\":[{\"code\":\"DENIED\"}]}", ": DENIED"},
        {"{\"errors\":[]}", ""},
        {"not json", ""},
        {"{\"errors\":[{\"code\":\"X\",\"message\":\"line1\\nline2\"}]}", ": X: line1 line2"},
        {"", ""},
    };
    for (size_t i = 0; i < KILN_ARRAY_SIZE(cases); i++) {
        reg_resp rs;
        memset(&rs, 0, sizeof(rs));
        kiln_buf_init(&rs.body, 0);
        KT_REQUIRE(kiln_buf_puts(&rs.body, cases[i].body, NULL) == 0);
        char out[400];
        reg_registry_message(&rs, out, sizeof(out));
        KT_EXPECT_STR(out, cases[i].want);
        kiln_buf_dispose(&rs.body);
    }
}

KT_TEST(config_json_keys)
{
    static const struct {
        const char *key, *host;
    } cases[] = {
        {"https://index.docker.io/v1/", "docker.io"},
        {"docker.io", "docker.io"},
        {"registry-1.docker.io", "docker.io"},
        {"localhost:5000", "localhost:5000"},
        {"http://127.0.0.1:5000", "127.0.0.1:5000"},
        {"https://ghcr.io/v2/", "ghcr.io"},
        {"", ""},
    };
    for (size_t i = 0; i < KILN_ARRAY_SIZE(cases); i++) {
        char h[256];
        kiln_dockercfg_host(cases[i].key, h, sizeof(h));
        KT_EXPECT_STR(h, cases[i].host);
    }
}

KT_TEST(registries_conf)
{
    char path[] = "/tmp/kiln-regconf-XXXXXX";
    int fd = mkstemp(path);
    KT_REQUIRE(fd >= 0);
    const char *txt = "# comment\ninsecure plain.local:5000\n[[registry]]\nlocation = "
                      "\"tls.local\"\ninsecure = true\n[[registry]]\nlocation = \"safe.local\"\n"
                      "insecure = false\n[[registry]]\nlocation = \"unterminated\n";
    KT_REQUIRE(write(fd, txt, strlen(txt)) == (ssize_t)strlen(txt));
    close(fd);
    KT_EXPECT(reg_conf_insecure(path, "plain.local:5000"));
    KT_EXPECT(reg_conf_insecure(path, "tls.local"));
    KT_EXPECT(!reg_conf_insecure(path, "safe.local"));
    KT_EXPECT(!reg_conf_insecure(path, "plain.local"));
    KT_EXPECT(!reg_conf_insecure(path, "unterminated"));
    KT_EXPECT(!reg_conf_insecure("/nonexistent/conf", "tls.local"));
    KT_EXPECT(!reg_conf_insecure(NULL, "tls.local"));
    unlink(path);
}

KT_TEST(media_types_and_descriptors)
{
    static const struct {
        const char *doc, *ctype, *want;
    } cases[] = {
        {"{\"manifests\":[]}", NULL, PSH_MT_OCI_INDEX},
        {"{\"config\":{},\"layers\":[]}", NULL, PSH_MT_OCI_MANIFEST},
        {"{\"mediaType\":\"" PSH_MT_DOCKER_MANIFEST "\"}", NULL, PSH_MT_DOCKER_MANIFEST},
        {"{}", PSH_MT_DOCKER_LIST "; charset=utf-8", PSH_MT_DOCKER_LIST},
        {"{}", "application/json", ""},
        {"{\"layers\":[]}", NULL, ""},
    };
    for (size_t i = 0; i < KILN_ARRAY_SIZE(cases); i++) {
        cJSON *j = cJSON_Parse(cases[i].doc);
        char mt[128];
        reg_doc_media_type(j, cases[i].ctype, mt, sizeof(mt));
        KT_EXPECT_STR(mt, cases[i].want);
        cJSON_Delete(j);
    }
    static const struct {
        const char *desc;
        int ok;
    } descs[] = {
        {"{\"digest\":\"sha256:0000000000000000000000000000000000000000000000000000000000000000\","
         "\"size\":3}",
         1},
        {"{\"digest\":\"sha256:00\",\"size\":3}", 0},
        {"{\"digest\":\"sha256:0000000000000000000000000000000000000000000000000000000000000000\","
         "\"size\":-1}",
         0},
        {"{\"digest\":\"sha256:0000000000000000000000000000000000000000000000000000000000000000\"}",
         0},
        {"{\"digest\":\"../../etc/passwd\",\"size\":1}", 0},
        {"[]", 0},
    };
    for (size_t i = 0; i < KILN_ARRAY_SIZE(descs); i++) {
        cJSON *j = cJSON_Parse(descs[i].desc);
        psh_descriptor d;
        kiln_error *err = NULL;
        KT_EXPECT_INT(reg_doc_descriptor(j, &d, &err) == 0, descs[i].ok);
        kiln_error_free(&err);
        cJSON_Delete(j);
    }
    /* A manifest with a bad layer is refused whole. */
    cJSON *m = cJSON_Parse("{\"config\":{\"digest\":\"sha256:"
                           "0000000000000000000000000000000000000000000000000000000000000000\","
                           "\"size\":1},\"layers\":[{\"digest\":\"x\",\"size\":1}]}");
    psh_descriptor *blobs = NULL;
    size_t n = 0;
    kiln_error *err = NULL;
    KT_EXPECT(reg_doc_blobs(m, &blobs, &n, &err) < 0);
    KT_EXPECT(blobs == NULL);
    kiln_error_free(&err);
    cJSON_Delete(m);
}
