/* A base image's manifest for a platform (engine_platform.c): from an index
 * (an exact match, variant included, before one kiln_platform_match takes),
 * or an image whose config names that platform or none. */
#include "engine_internal.h"
#include "kt.h"

#include <string.h>

#define D1 "sha256:1111111111111111111111111111111111111111111111111111111111111111"
#define D2 "sha256:2222222222222222222222222222222222222222222222222222222222222222"
#define D3 "sha256:3333333333333333333333333333333333333333333333333333333333333333"
#define D4 "sha256:4444444444444444444444444444444444444444444444444444444444444444"

static const char index_json[] =
    "{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.index.v1+json\","
    "\"manifests\":["
    "{\"digest\":\"" D1 "\",\"platform\":{\"os\":\"linux\",\"architecture\":\"amd64\"}},"
    "{\"digest\":\"" D2 "\",\"platform\":{\"os\":\"linux\",\"architecture\":\"arm64\","
    "\"variant\":\"v8\"}},"
    "{\"digest\":\"" D3 "\",\"platform\":{\"os\":\"linux\",\"architecture\":\"arm\","
    "\"variant\":\"v6\"}},"
    "{\"digest\":\"" D4 "\",\"platform\":{\"os\":\"linux\",\"architecture\":\"arm\","
    "\"variant\":\"v7\"}},"
    "{\"digest\":\"sha256:attestation\",\"platform\":{\"os\":\"unknown\","
    "\"architecture\":\"unknown\"}}]}";

KT_TEST(index_select)
{
    char d[KILN_DIGEST_STRLEN + 1], have[256];
    KT_EXPECT_INT(eng_index_select(index_json, "linux/amd64", d, have, sizeof(have)), 0);
    KT_EXPECT_STR(d, D1);
    /* arm64 matches the entry written arm64/v8 (v8 is arm64's default). */
    KT_EXPECT_INT(eng_index_select(index_json, "linux/arm64", d, have, sizeof(have)), 0);
    KT_EXPECT_STR(d, D2);
    /* arm/v7 exactly, though arm/v6 comes first. */
    KT_EXPECT_INT(eng_index_select(index_json, "linux/arm/v7", d, have, sizeof(have)), 0);
    KT_EXPECT_STR(d, D4);
    KT_EXPECT_INT(eng_index_select(index_json, "linux/arm/v6", d, have, sizeof(have)), 0);
    KT_EXPECT_STR(d, D3);
    /* None for s390x: what the index has instead. */
    KT_EXPECT_INT(eng_index_select(index_json, "linux/s390x", d, have, sizeof(have)), KILN_ENOENT);
    KT_EXPECT_STR(have, "linux/amd64, linux/arm64/v8, linux/arm/v6, linux/arm/v7, "
                        "unknown/unknown");
    KT_EXPECT_INT(eng_index_select("{}", "linux/amd64", d, have, sizeof(have)), KILN_ENOENT);
    KT_EXPECT_INT(eng_index_select("not json", "linux/amd64", d, have, sizeof(have)), KILN_ENOENT);
}

KT_TEST(config_platform)
{
    char found[64];
    const char amd[] = "{\"os\":\"linux\",\"architecture\":\"amd64\",\"rootfs\":{}}";
    const char arm[] = "{\"os\":\"linux\",\"architecture\":\"arm\",\"variant\":\"v6\"}";
    KT_EXPECT(eng_config_platform_ok(amd, "linux/amd64", found, sizeof(found)));
    KT_EXPECT(!eng_config_platform_ok(amd, "linux/arm64", found, sizeof(found)));
    KT_EXPECT_STR(found, "linux/amd64");
    KT_EXPECT(eng_config_platform_ok(arm, "linux/arm/v6", found, sizeof(found)));
    KT_EXPECT(!eng_config_platform_ok(arm, "linux/arm/v7", found, sizeof(found)));
    KT_EXPECT_STR(found, "linux/arm/v6");
    /* Written as x86_64 by another tool: the same platform. */
    KT_EXPECT(eng_config_platform_ok("{\"os\":\"linux\",\"architecture\":\"x86_64\"}",
                                     "linux/amd64", found, sizeof(found)));
    /* A config naming no platform is taken for any. */
    KT_EXPECT(eng_config_platform_ok("{\"rootfs\":{}}", "linux/s390x", found, sizeof(found)));
}
