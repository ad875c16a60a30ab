/* Hostile input: garbage, huge lines, deep nesting, unterminated constructs
 * and cycles give a clear error (or a plan) in bounded time.  Also the base
 * image resolver and ONBUILD trigger checks. */
#include "df_test.h"
#include "kt.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

/* CPU time: the bound must hold on a loaded machine too. */
static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Parses; returns 0 on success or the error code, and checks the time bound. */
static int parse_timed(const char *df, size_t len, const char *want_err, double max_s)
{
    double t0 = now();
    char *msg = NULL;
    char *json = df_plan_json(df, len, NULL, NULL, NULL, &msg);
    double dt = now() - t0;
    if (getenv("KT_VERBOSE"))
        fprintf(stderr, "    %zu bytes: %.3fs CPU\n", len, dt);
    if (dt > max_s * KT_SLOWDOWN)
        KT_FAIL("parse of %zu bytes took %.2fs of CPU (limit %.1fs)", len, dt, max_s * KT_SLOWDOWN);
    if (want_err && (msg == NULL || strstr(msg, want_err) == NULL))
        KT_FAIL("error \"%s\" lacks \"%s\"", msg ? msg : "(success)", want_err);
    int rc = json ? 0 : -1;
    free(json);
    free(msg);
    return rc;
}

/* Each input is refused with a message ("" matches any message). */
KT_TEST(binary_garbage_is_an_error)
{
    char buf[4096];
    unsigned s = 12345;
    for (int round = 0; round < 50; round++) {
        for (size_t i = 0; i < sizeof(buf); i++) {
            s = s * 1103515245u + 12345u;
            buf[i] = (char)(s >> 16);
        }
        KT_EXPECT_INT(parse_timed(buf, sizeof(buf), "", 1.0), -1);
    }
    const char nul[] = "FROM a\nRUN x\0y\n";
    KT_EXPECT_INT(parse_timed(nul, sizeof(nul) - 1, "", 1.0), -1);
}

KT_TEST(ten_megabyte_line)
{
    size_t n = 10u << 20;
    char *df = malloc(n + 32);
    KT_REQUIRE(df != NULL);
    strcpy(df, "FROM a\nRUN ");
    size_t off = strlen(df);
    memset(df + off, 'x', n);
    df[off + n] = '\n';
    KT_EXPECT_INT(parse_timed(df, off + n + 1, NULL, 5.0), 0);
    /* The same line as an unknown instruction: the message stays short. */
    memset(df, 'Z', n);
    char *msg = NULL;
    char *json = df_plan_json(df, n, NULL, NULL, NULL, &msg);
    KT_EXPECT(json == NULL);
    KT_EXPECT(msg != NULL && strlen(msg) < 1024);
    free(msg);
    free(json);
    /* A 10 MB LABEL value goes through expansion. */
    strcpy(df, "FROM a\nLABEL a=");
    off = strlen(df);
    memset(df + off, 'v', n);
    KT_EXPECT_INT(parse_timed(df, off + n, NULL, 5.0), 0);
    free(df);
}

KT_TEST(deep_substitution_nesting)
{
    size_t depth = 100000;
    char *df = malloc(depth * 6 + 64);
    KT_REQUIRE(df != NULL);
    strcpy(df, "FROM a\nENV X=");
    size_t off = strlen(df);
    for (size_t i = 0; i < depth; i++, off += 5)
        memcpy(df + off, "${A:-", 5);
    for (size_t i = 0; i < depth; i++)
        df[off++] = '}';
    df[off] = '\0';
    parse_timed(df, off, "nested too deeply", 2.0);
    /* 50 levels are fine. */
    strcpy(df, "FROM a\nENV X=");
    off = strlen(df);
    for (size_t i = 0; i < 50; i++, off += 5)
        memcpy(df + off, "${A:-", 5);
    df[off++] = 'z';
    for (size_t i = 0; i < 50; i++)
        df[off++] = '}';
    strcpy(df + off, "\nLABEL x=$X\n");
    char *msg = NULL;
    char *json = df_plan_json(df, strlen(df), NULL, NULL, NULL, &msg);
    KT_EXPECT(json && strstr(json, "\"value\":\"z\""));
    free(json);
    free(msg);
    free(df);
}

KT_TEST(unterminated_constructs)
{
    parse_timed("FROM a\nRUN <<EOF\nno end", 22, "unterminated heredoc EOF", 1.0);
    parse_timed("FROM a\nENV A=\"open\n", 19, "matching double-quote", 1.0);
    parse_timed("FROM a\nLABEL a='open\n", 20, "matching single-quote", 1.0);
    parse_timed("FROM a\nCOPY ${X /a\n", 19, "missing '}'", 1.0);
    parse_timed("FROM a\nRUN --mount=\"type=cache x\n", 32, "unterminated quote", 1.0);
}

KT_TEST(many_heredocs_and_lines)
{
    size_t n = 200000;
    char *df = malloc(n * 8 + 64);
    KT_REQUIRE(df != NULL);
    strcpy(df, "FROM a\n");
    size_t off = strlen(df);
    for (size_t i = 0; i < n; i++, off += 6)
        memcpy(df + off, "RUN x\n", 6);
    KT_EXPECT_INT(parse_timed(df, off, NULL, 10.0), 0);
    /* Too many heredocs on one line. */
    strcpy(df, "FROM a\nRUN");
    off = strlen(df);
    for (size_t i = 0; i < 100; i++)
        off += (size_t)sprintf(df + off, " <<E%zu", i);
    df[off++] = '\n';
    parse_timed(df, off, "too many heredocs", 1.0);
    free(df);
}

KT_TEST(stage_cycles_rejected)
{
    parse_timed("FROM b AS a\nFROM a AS b\n", 24, "defined later", 1.0);
    parse_timed("FROM x AS a\nCOPY --from=a / /\n", 30, "circular dependency", 1.0);
}

typedef struct fake_img {
    const char *ref;
    bld_base_info info;
} fake_img;

static int resolve(bld_base_info *out, void *ctx, const char *ref, const char *platform)
{
    const fake_img *img = ctx;
    (void)platform;
    if (strcmp(ref, img->ref) != 0)
        return 1;
    *out = img->info;
    return 0;
}

KT_TEST(resolver_supplies_env_and_onbuild)
{
    static const char *const env[] = {"GOPATH=/go", "PATH=/usr/bin"};
    static const char *const trig[] = {"COPY . /app", "RUN make -C $GOPATH"};
    fake_img img = {"golang:1",
                    {.env = env, .n_env = 2, .onbuild = trig, .n_onbuild = 2, .workdir = "/go"}};
    bld_plan_opts o = {
        .resolve_base = resolve, .resolve_ctx = &img, .build_platform = "linux/amd64"};
    const char *df = "FROM golang:1\nWORKDIR src\nRUN x\n";
    bld_plan *p = NULL;
    kiln_error *err = NULL;
    KT_REQUIRE(bld_plan_parse(&p, df, strlen(df), NULL, &o, &err) == 0);
    const bld_stage *s = &p->stages[0];
    KT_REQUIRE(s->n_instrs == 4);
    KT_EXPECT(s->instrs[0].from_onbuild);
    KT_EXPECT_INT(s->instrs[0].kind, BLD_INSTR_COPY);
    KT_EXPECT_STR(s->instrs[0].workdir, "/go");
    KT_EXPECT_STR(s->instrs[1].u.run.command, "make -C $GOPATH");
    KT_EXPECT_STR(s->instrs[2].u.str, "/go/src");
    KT_EXPECT_INT(s->instrs[3].n_env, 2);
    bld_plan_free(p);
    /* A broken trigger names the image. */
    static const char *const bad[] = {"COPY x"};
    img.info.onbuild = bad;
    img.info.n_onbuild = 1;
    KT_EXPECT_INT(bld_plan_parse(&p, df, strlen(df), NULL, &o, &err), KILN_EINVAL);
    KT_REQUIRE(err != NULL);
    KT_EXPECT(strstr(err->msg, "ONBUILD trigger 1 of golang:1:1:6: COPY requires") != NULL);
    kiln_error_free(&err);
}

KT_TEST(triggers_parsed_for_a_stage)
{
    const char *df = "FROM golang AS tools\nFROM app:1\nRUN own\n";
    bld_plan *p = NULL;
    kiln_error *err = NULL;
    bld_plan_opts o = {.build_platform = "linux/amd64"};
    KT_REQUIRE(bld_plan_parse(&p, df, strlen(df), NULL, &o, &err) == 0);
    static const char *const env[] = {"HOME=/home/app"};
    static const char *const trig[] = {"WORKDIR $HOME", "COPY --from=tools /go/bin /bin",
                                       "ARG TARGETARCH", "LABEL arch=$TARGETARCH"};
    bld_base_info bi = {.env = env, .n_env = 1, .onbuild = trig, .n_onbuild = 4};
    bld_instr *in = NULL;
    size_t n = 0;
    KT_REQUIRE(bld_plan_parse_triggers(&in, &n, p, 1, &bi, "app:1", &err) == 0);
    KT_REQUIRE(n == 4);
    KT_EXPECT_STR(in[0].u.str, "/home/app");
    KT_EXPECT(in[0].from_onbuild);
    KT_EXPECT_INT(in[1].u.copy.from_kind, BLD_REF_STAGE);
    KT_EXPECT_INT(in[1].u.copy.from_stage, 0);
    KT_EXPECT_STR(in[1].workdir, "/home/app");
    KT_EXPECT_STR(in[3].u.kv.pairs[0].value, "amd64");
    KT_EXPECT_INT(p->stages[1].n_deps, 1);
    /* The stage's own instructions are untouched. */
    KT_EXPECT_INT(p->stages[1].n_instrs, 1);
    static const char *const bad[] = {"ONBUILD RUN x"};
    bi.onbuild = bad;
    bi.n_onbuild = 1;
    KT_EXPECT_INT(bld_plan_parse_triggers(&in, &n, p, 1, &bi, "app:1", &err), KILN_EINVAL);
    KT_REQUIRE(err != NULL);
    KT_EXPECT(strstr(err->msg, "ONBUILD trigger 1 of app:1:1:1: invalid ONBUILD trigger") != NULL);
    kiln_error_free(&err);
    KT_EXPECT_INT(bld_plan_parse_triggers(&in, &n, p, 7, &bi, "app:1", &err), KILN_EINVAL);
    kiln_error_free(&err);
    bld_plan_free(p);
}

KT_TEST(onbuild_check)
{
    bld_instr_kind k;
    kiln_error *err = NULL;
    KT_EXPECT_INT(bld_onbuild_check(&k, "RUN make", &err), 0);
    KT_EXPECT_INT(k, BLD_INSTR_RUN);
    KT_EXPECT_INT(bld_onbuild_check(&k, "ONBUILD RUN x", &err), KILN_EINVAL);
    kiln_error_free(&err);
    KT_EXPECT_INT(bld_onbuild_check(&k, "FROM x", &err), KILN_EINVAL);
    kiln_error_free(&err);
    KT_EXPECT_INT(bld_onbuild_check(&k, "NOPE x", &err), KILN_EINVAL);
    kiln_error_free(&err);
}

KT_TEST(plan_stage_lookup)
{
    const char *df = "FROM a AS One\nFROM b\n";
    bld_plan *p = NULL;
    kiln_error *err = NULL;
    KT_REQUIRE(bld_plan_parse(&p, df, strlen(df), NULL, NULL, &err) == 0);
    KT_EXPECT(bld_plan_stage(p, "one") == &p->stages[0]);
    KT_EXPECT(bld_plan_stage(p, "1") == &p->stages[1]);
    KT_EXPECT(bld_plan_stage(p, "2") == NULL);
    KT_EXPECT(bld_plan_stage(p, "99999999999999999999") == NULL);
    KT_EXPECT_STR(bld_instr_kind_name(BLD_INSTR_HEALTHCHECK), "HEALTHCHECK");
    bld_plan_free(p);
    bld_plan_free(NULL);
}

/* --build-context NAME=docker-image://REF: FROM and --from= naming NAME mean
 * REF, unless an earlier stage has that name. */
KT_TEST(named_images_replace_names)
{
    const char *df = "FROM alpine AS base\nCOPY --from=extra /a /a\n"
                     "FROM base\nCOPY --from=BASE /b /b\n";
    const char *named[] = {"alpine=busybox:local", "extra=localhost:5000/x:1", "base=nope:1"};
    bld_plan_opts o = {.named_images = named, .n_named_images = 3};
    bld_plan *p = NULL;
    kiln_error *err = NULL;
    KT_REQUIRE(bld_plan_parse(&p, df, strlen(df), NULL, &o, &err) == 0);
    KT_EXPECT_STR(p->stages[0].base_image, "busybox:local");
    const bld_copy *c0 = &p->stages[0].instrs[0].u.copy;
    KT_EXPECT(c0->from_kind == BLD_REF_IMAGE);
    KT_EXPECT_STR(c0->from, "localhost:5000/x:1");
    /* An earlier stage's name wins over a named context. */
    KT_EXPECT(p->stages[1].base_kind == BLD_BASE_STAGE);
    KT_EXPECT(p->stages[1].instrs[0].u.copy.from_kind == BLD_REF_STAGE);
    bld_plan_free(p);
}

/* Line i of a generated Dockerfile. */
typedef int (*line_fn)(char *buf, size_t cap, size_t i);

static int env_run(char *b, size_t cap, size_t i)
{
    return snprintf(b, cap, "ENV V%zu=%zu\nRUN x\n", i, i);
}

static int arg_line(char *b, size_t cap, size_t i)
{
    return snprintf(b, cap, "ARG A%zu=%zu\n", i, i);
}

static int stage_copy(char *b, size_t cap, size_t i)
{
    return snprintf(b, cap, "FROM a AS s%zu\nCOPY --from=base / /%zu\n", i, i);
}

static int stage_run(char *b, size_t cap, size_t i)
{
    return snprintf(b, cap, "FROM a AS s%zu\nRUN x%zu\n", i, i);
}

static int dollar_a(char *b, size_t cap, size_t i)
{
    (void)i;
    return snprintf(b, cap, "$A");
}

/* Builds prefix followed by lines 0..n-1. */
static char *repeat(const char *prefix, line_fn fn, size_t n, size_t *len)
{
    size_t cap = strlen(prefix) + n * 64 + 1, off = 0;
    char *s = malloc(cap);
    if (s == NULL)
        return NULL;
    off += (size_t)snprintf(s, cap, "%s", prefix);
    for (size_t i = 0; i < n; i++)
        off += (size_t)fn(s + off, cap - off, i);
    *len = off;
    return s;
}

KT_TEST(work_is_bounded)
{
    size_t len = 0;
    /* Many distinct variables, each followed by an instruction that sees them all. */
    char *df = repeat("FROM a\n", env_run, 60000, &len);
    KT_REQUIRE(df != NULL);
    parse_timed(df, len, "too complex", 10.0);
    free(df);
    /* Thousands of variables in one stage are still fine. */
    df = repeat("FROM a\n", arg_line, 3000, &len);
    KT_REQUIRE(df != NULL);
    KT_EXPECT_INT(parse_timed(df, len, NULL, 10.0), 0);
    free(df);
    /* Very many stages. */
    df = repeat("FROM a AS base\n", stage_copy, 40000, &len);
    KT_REQUIRE(df != NULL);
    parse_timed(df, len, "too complex", 10.0);
    free(df);
    df = repeat("", stage_run, 2000, &len);
    KT_REQUIRE(df != NULL);
    KT_EXPECT_INT(parse_timed(df, len, NULL, 10.0), 0);
    free(df);
    /* One line referencing a variable a million times. */
    df = repeat("FROM a\nARG A=1\nLABEL x=", dollar_a, 1000000, &len);
    KT_REQUIRE(df != NULL);
    KT_EXPECT_INT(parse_timed(df, len, NULL, 10.0), 0);
    free(df);
}

KT_TEST(too_many_flags)
{
    char *df = malloc(300 * 16 + 32);
    KT_REQUIRE(df != NULL);
    size_t off = (size_t)sprintf(df, "FROM a\nRUN");
    for (int i = 0; i < 300; i++)
        off += (size_t)sprintf(df + off, " --mount=id=%d", i);
    off += (size_t)sprintf(df + off, " x\n");
    parse_timed(df, off, "Dockerfile:2:", 1.0);
    parse_timed(df, off, "too many flags", 1.0);
    free(df);
}
