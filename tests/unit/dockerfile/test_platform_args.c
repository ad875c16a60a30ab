/* The predefined platform ARGs of a multi-platform build, per Docker's rules:
 * TARGETPLATFORM/TARGETOS/TARGETARCH/TARGETVARIANT from --platform
 * (normalised: arm -> arm/v7, aarch64 -> arm64 with no variant unless one
 * other than the default v8 is given), BUILDPLATFORM & co. from the builder;
 * FROM --platform=$BUILDPLATFORM makes a stage native while the ARGs still
 * name the target. */
#include "df_test.h"
#include "kt.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Both stages print every platform ARG in a LABEL; the first runs on the
 * build platform. */
static const char df[] = "FROM --platform=$BUILDPLATFORM a AS build\n"
                         "ARG TARGETPLATFORM TARGETOS TARGETARCH TARGETVARIANT\n"
                         "ARG BUILDPLATFORM BUILDOS BUILDARCH BUILDVARIANT\n"
                         "LABEL v=\"$TARGETPLATFORM|$TARGETOS|$TARGETARCH|[$TARGETVARIANT]|"
                         "$BUILDPLATFORM|$BUILDOS|$BUILDARCH|[$BUILDVARIANT]\"\n"
                         "FROM a\n"
                         "ARG TARGETPLATFORM TARGETOS TARGETARCH TARGETVARIANT\n"
                         "ARG BUILDPLATFORM BUILDOS BUILDARCH BUILDVARIANT\n"
                         "LABEL v=\"$TARGETPLATFORM|$TARGETOS|$TARGETARCH|[$TARGETVARIANT]|"
                         "$BUILDPLATFORM|$BUILDOS|$BUILDARCH|[$BUILDVARIANT]\"\n"
                         "COPY --from=build /x /x\n";

static const struct {
    const char *build, *target; /* target NULL: no --platform */
    const char *label;          /* the LABEL's value in both stages */
    const char *target_norm;    /* the final stage's platform */
} cases[] = {
    {"linux/amd64", "linux/arm64", "linux/arm64|linux|arm64|[]|linux/amd64|linux|amd64|[]",
     "linux/arm64"},
    {"linux/amd64", "linux/arm64/v8", "linux/arm64|linux|arm64|[]|linux/amd64|linux|amd64|[]",
     "linux/arm64"},
    {"linux/amd64", "linux/aarch64", "linux/arm64|linux|arm64|[]|linux/amd64|linux|amd64|[]",
     "linux/arm64"},
    {"linux/amd64", "linux/arm64/v9", "linux/arm64/v9|linux|arm64|[v9]|linux/amd64|linux|amd64|[]",
     "linux/arm64/v9"},
    {"linux/amd64", "linux/arm/v7", "linux/arm/v7|linux|arm|[v7]|linux/amd64|linux|amd64|[]",
     "linux/arm/v7"},
    {"linux/amd64", "linux/arm", "linux/arm/v7|linux|arm|[v7]|linux/amd64|linux|amd64|[]",
     "linux/arm/v7"},
    {"linux/amd64", "linux/arm/v6", "linux/arm/v6|linux|arm|[v6]|linux/amd64|linux|amd64|[]",
     "linux/arm/v6"},
    {"linux/amd64", "linux/armhf", "linux/arm/v7|linux|arm|[v7]|linux/amd64|linux|amd64|[]",
     "linux/arm/v7"},
    {"linux/amd64", "linux/x86_64", "linux/amd64|linux|amd64|[]|linux/amd64|linux|amd64|[]",
     "linux/amd64"},
    {"linux/amd64", "linux/s390x", "linux/s390x|linux|s390x|[]|linux/amd64|linux|amd64|[]",
     "linux/s390x"},
    {"linux/amd64", "linux/386", "linux/386|linux|386|[]|linux/amd64|linux|amd64|[]", "linux/386"},
    {"linux/amd64", "linux/amd64/v3", "linux/amd64/v3|linux|amd64|[v3]|linux/amd64|linux|amd64|[]",
     "linux/amd64/v3"},
    /* A bare OS takes the build platform's architecture, as in BuildKit. */
    {"linux/arm64", "linux", "linux/arm64|linux|arm64|[]|linux/arm64|linux|arm64|[]",
     "linux/arm64"},
    /* No --platform: the builder's own, on either kind of host. */
    {"linux/amd64", NULL, "linux/amd64|linux|amd64|[]|linux/amd64|linux|amd64|[]", "linux/amd64"},
    {"linux/arm/v7", NULL, "linux/arm/v7|linux|arm|[v7]|linux/arm/v7|linux|arm|[v7]",
     "linux/arm/v7"},
    /* An arm64 builder making amd64 images. */
    {"linux/arm64", "linux/amd64", "linux/amd64|linux|amd64|[]|linux/arm64|linux|arm64|[]",
     "linux/amd64"},
};

static const char *stage_label(const bld_stage *st)
{
    for (size_t k = 0; k < st->n_instrs; k++)
        if (st->instrs[k].kind == BLD_INSTR_LABEL && st->instrs[k].u.kv.n == 1)
            return st->instrs[k].u.kv.pairs[0].value;
    return NULL;
}

KT_TEST(platform_args_per_docker_rules)
{
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        bld_plan_opts o = {.platform = cases[i].target, .build_platform = cases[i].build};
        bld_plan *p = NULL;
        kiln_error *err = NULL;
        if (bld_plan_parse(&p, df, strlen(df), "Dockerfile", &o, &err) < 0) {
            KT_FAIL("[%s on %s] %s", cases[i].target ? cases[i].target : "(none)", cases[i].build,
                    err ? err->msg : "parse failed");
            kiln_error_free(&err);
            continue;
        }
        const char *what = cases[i].target ? cases[i].target : "(none)";
        if (p->n_stages != 2) {
            KT_FAIL("[%s] %zu stages", what, p->n_stages);
            bld_plan_free(p);
            continue;
        }
        for (size_t s = 0; s < 2; s++) {
            const char *l = stage_label(&p->stages[s]);
            if (l == NULL || strcmp(l, cases[i].label) != 0)
                KT_FAIL("[%s on %s] stage %zu: LABEL v=%s, want %s", what, cases[i].build, s,
                        l ? l : "(none)", cases[i].label);
        }
        /* The BUILDPLATFORM stage is native; the other one is for the target. */
        char build_norm[64];
        snprintf(build_norm, sizeof(build_norm), "%s", p->build_platform);
        KT_EXPECT_STR(p->stages[0].platform, build_norm);
        KT_EXPECT(p->stages[0].platform_set);
        KT_EXPECT_STR(p->stages[1].platform, cases[i].target_norm);
        KT_EXPECT(!p->stages[1].platform_set);
        KT_EXPECT_STR(p->target_platform, cases[i].target_norm);
        bld_plan_free(p);
    }
}

/* The ARGs are predefined globally: an undeclared one expands to nothing in
 * a stage, as in Docker, and FROM may use them before any stage. */
KT_TEST(platform_args_in_from_and_undeclared)
{
    char *msg = NULL;
    const char f[] = "FROM --platform=$BUILDPLATFORM b:$TARGETARCH AS x\n"
                     "LABEL t=[$TARGETARCH]\n"
                     "FROM c:$TARGETOS-$TARGETARCH$TARGETVARIANT\n";
    char *json = df_plan_json(f, strlen(f), NULL, NULL, "linux/arm/v6", &msg);
    KT_REQUIRE(json != NULL);
    KT_EXPECT(strstr(json, "\"ref\":\"b:arm\"") != NULL);
    KT_EXPECT(strstr(json, "\"ref\":\"c:linux-armv6\"") != NULL);
    KT_EXPECT(strstr(json, "\"value\":\"[]\"") != NULL);
    free(json);
    free(msg);
}

/* A --platform that is no platform fails the plan. */
KT_TEST(platform_invalid_target)
{
    char *msg = NULL;
    char *json = df_plan_json(df, strlen(df), NULL, NULL, "linux/arm64/v8/x", &msg);
    KT_EXPECT(json == NULL);
    KT_EXPECT(msg != NULL && strstr(msg, "invalid platform") != NULL);
    free(json);
    free(msg);
}
