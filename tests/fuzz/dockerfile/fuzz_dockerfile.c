/* libFuzzer target for the Dockerfile frontend: plans the input as a
 * Dockerfile (with a build arg, a target and a base resolver so every path
 * runs), renders the JSON and BuildKit-style syntax dump, and feeds the same
 * bytes to the .dockerignore matcher, the glob matcher, the word expander
 * (pattern substitutions included) and the --chmod mode parser.  Must never
 * crash, leak or hang. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "df_internal.h"
#include "expand.h"
#include "ignore.h"
#include "plan.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int resolve(bld_base_info *out, void *ctx, const char *ref, const char *platform)
{
    static const char *const env[] = {"PATH=/bin", "HOME=/root"};
    static const char *const trig[] = {"RUN echo $HOME", "COPY . /app"};
    (void)ctx;
    (void)platform;
    if (ref[0] != 'o')
        return 1;
    memset(out, 0, sizeof(*out));
    out->env = env;
    out->n_env = 2;
    out->onbuild = trig;
    out->n_onbuild = 2;
    out->workdir = "/w";
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *text = (const char *)data;
    static const char *const bargs[] = {"V=1", "HTTP_PROXY=x", "TARGETARCH=arm64"};
    bld_plan_opts o = {.build_args = bargs,
                       .n_build_args = 3,
                       .build_platform = "linux/amd64",
                       .resolve_base = resolve};
    if (size && data[0] == 'F')
        o.target = "b";
    bld_plan *p = NULL;
    kiln_error *err = NULL;
    if (bld_plan_parse(&p, text, size, "Dockerfile", &o, &err) == 0) {
        /* The input's last lines as ONBUILD triggers of the last stage's base. */
        static const char *const benv[] = {"HOME=/root"};
        const char *trig[2] = {"RUN x", "COPY . /"};
        char *copy = strndup(text, size > 512 ? 512 : size);
        char *nl = copy ? strrchr(copy, '\n') : NULL;
        if (nl) {
            *nl = '\0';
            trig[0] = nl + 1;
            nl = strrchr(copy, '\n');
            trig[1] = nl ? nl + 1 : copy;
        }
        bld_base_info bi = {.env = benv, .n_env = 1, .onbuild = trig, .n_onbuild = 2};
        bld_instr *in = NULL;
        size_t n = 0;
        bld_plan_parse_triggers(&in, &n, p, p->n_stages - 1, &bi, "img", &err);
        kiln_error_free(&err);
        free(copy);
        cJSON *j = bld_plan_to_json(p);
        char *s = cJSON_PrintUnformatted(j);
        free(s);
        cJSON_Delete(j);
        bld_plan_free(p);
    }
    kiln_error_free(&err);

    char *z = malloc(size + 1);
    if (z == NULL)
        return 0;
    memcpy(z, data, size);
    z[size] = '\0';
    kiln_ignore *ig = NULL;
    if (kiln_ignore_parse(&ig, text, size, &err) == 0) {
        kiln_ignore_match(ig, "a/b/c.txt");
        kiln_ignore_match(ig, z);
        kiln_ignore_free(ig);
    }
    kiln_error_free(&err);
    /* First line: glob pattern; the rest: the name. */
    char *nl = strchr(z, '\n');
    if (nl) {
        *nl = '\0';
        bool m = false;
        kiln_glob_match(&m, z, nl + 1, &err);
        kiln_error_free(&err);
        *nl = '\n';
    }
    static const char *const env[] = {"A=1", "E=", "X=xx/yy.zz*?\xc3\xa9\nq"};
    char *out = NULL;
    if (bld_expand_word(&out, z, env, 3, size && data[0] == '`' ? '`' : '\\', &err) == 0)
        free(out);
    kiln_error_free(&err);
    df_arena *a = df_arena_new();
    char *dump = NULL;
    df_syntax_dump(&dump, a, text, size, &err);
    kiln_error_free(&err);
    df_arena_free(a);
    unsigned mode = 0;
    bld_chmod_apply(z, 0755, size & 1, &mode);
    free(z);
    return 0;
}
