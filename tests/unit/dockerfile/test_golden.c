/* Golden corpus: every NAME.Dockerfile under $KILN_GOLDEN_DIR is planned and
 * the pretty-printed JSON compared with NAME.json.  NAME.opts may hold
 * options, one per line: "build-arg K=V", "target S", "platform P".  A parse
 * error is rendered as {"error": message}.  KILN_UPDATE_GOLDEN=1 rewrites the
 * .json files (review the diff before committing). */
#include "df_test.h"
#include "kt.h"
#include "kt_util.h"

#include <dirent.h>
#include <stdlib.h>
#include <string.h>

static char *render(const char *df, size_t len, const char *opts)
{
    const char *args[32];
    size_t n = 0;
    bld_plan_opts o = {.build_platform = "linux/amd64", .build_args = args};
    char *copy = opts ? strdup(opts) : NULL;
    for (char *save = NULL, *l = copy ? strtok_r(copy, "\n", &save) : NULL; l;
         l = strtok_r(NULL, "\n", &save)) {
        if (strncmp(l, "build-arg ", 10) == 0 && n < 32)
            args[n++] = l + 10;
        else if (strncmp(l, "target ", 7) == 0)
            o.target = l + 7;
        else if (strncmp(l, "platform ", 9) == 0)
            o.platform = l + 9;
    }
    o.n_build_args = n;
    bld_plan *p = NULL;
    kiln_error *err = NULL;
    cJSON *j;
    if (bld_plan_parse(&p, df, len, "Dockerfile", &o, &err) < 0) {
        j = cJSON_CreateObject();
        cJSON_AddStringToObject(j, "error", err->msg);
        kiln_error_free(&err);
    } else {
        j = bld_plan_to_json(p);
        bld_plan_free(p);
    }
    char *s = cJSON_Print(j);
    cJSON_Delete(j);
    free(copy);
    size_t sl = strlen(s);
    char *out = malloc(sl + 2);
    memcpy(out, s, sl);
    out[sl] = '\n';
    out[sl + 1] = '\0';
    free(s);
    return out;
}

KT_TEST(golden_corpus)
{
    const char *dir = getenv("KILN_GOLDEN_DIR");
    bool update = getenv("KILN_UPDATE_GOLDEN") && strcmp(getenv("KILN_UPDATE_GOLDEN"), "1") == 0;
    KT_REQUIRE(dir != NULL);
    struct dirent **ents = NULL;
    int n = scandir(dir, &ents, NULL, alphasort), count = 0;
    KT_REQUIRE(n >= 0);
    for (int i = 0; i < n; i++) {
        const char *name = ents[i]->d_name;
        size_t nl = strlen(name);
        if (nl > 11 && strcmp(name + nl - 11, ".Dockerfile") == 0) {
            char path[4096], jpath[4096], opath[4096];
            snprintf(path, sizeof(path), "%s/%s", dir, name);
            snprintf(jpath, sizeof(jpath), "%s/%.*s.json", dir, (int)(nl - 11), name);
            snprintf(opath, sizeof(opath), "%s/%.*s.opts", dir, (int)(nl - 11), name);
            size_t len = 0, jl = 0, ol = 0;
            char *df = kt_read_file(path, &len), *opts = kt_read_file(opath, &ol);
            char *got = df ? render(df, len, opts) : NULL;
            char *want = kt_read_file(jpath, &jl);
            count++;
            if (got == NULL) {
                KT_FAIL("cannot read %s", path);
            } else if (update) {
                FILE *f = fopen(jpath, "wb");
                if (f == NULL || fputs(got, f) < 0)
                    KT_FAIL("cannot write %s", jpath);
                if (f)
                    fclose(f);
            } else if (want == NULL || strcmp(want, got) != 0) {
                KT_FAIL("%s: plan differs from %s (KILN_UPDATE_GOLDEN=1 rewrites it)\n%s", name,
                        jpath, got);
            }
            free(df);
            free(opts);
            free(got);
            free(want);
        }
        free(ents[i]);
    }
    free(ents);
    KT_EXPECT(count >= 40);
}
