/* Table runner for the Dockerfile frontend unit tests. */
#include "df_test.h"
#include "kt.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

/* ' becomes "; in error strings (lit) '' stands for a literal '. */
static char *quotes(const char *s, bool lit)
{
    char *d = strdup(s), *o = d;
    for (const char *p = s; d && *p; p++) {
        if (lit && p[0] == '\'' && p[1] == '\'') {
            *o++ = '\'';
            p++;
        } else {
            *o++ = *p == '\'' ? '"' : *p;
        }
    }
    if (d)
        *o = '\0';
    return d;
}

char *df_plan_json(const char *df, size_t len, const char *bargs, const char *target,
                   const char *platform, char **errmsg)
{
    const char *args[32];
    size_t n = 0;
    char *copy = bargs ? strdup(bargs) : NULL;
    for (char *save = NULL, *t = copy ? strtok_r(copy, ";", &save) : NULL; t && n < 32;
         t = strtok_r(NULL, ";", &save))
        args[n++] = t;
    bld_plan_opts o = {.target = target,
                       .build_args = args,
                       .n_build_args = n,
                       .platform = platform,
                       .build_platform = "linux/amd64"};
    bld_plan *p = NULL;
    kiln_error *err = NULL;
    char *out = NULL;
    *errmsg = NULL;
    if (bld_plan_parse(&p, df, len, "Dockerfile", &o, &err) < 0) {
        *errmsg = strdup(err && err->msg ? err->msg : "(no message)");
        kiln_error_free(&err);
    } else {
        cJSON *j = bld_plan_to_json(p);
        out = cJSON_PrintUnformatted(j);
        cJSON_Delete(j);
        bld_plan_free(p);
    }
    free(copy);
    return out;
}

void df_run_cases(const df_case *cases, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        const df_case *c = &cases[i];
        char *msg = NULL;
        char *json = df_plan_json(c->df, strlen(c->df), c->bargs, c->target, NULL, &msg);
        if (c->err) {
            char *want = quotes(c->err, true);
            if (json != NULL)
                KT_FAIL("[%s] expected error containing \"%s\", got success", c->name, want);
            else if (strstr(msg, want) == NULL)
                KT_FAIL("[%s] error \"%s\" does not contain \"%s\"", c->name, msg, want);
            free(want);
        } else if (json == NULL) {
            KT_FAIL("[%s] unexpected error: %s", c->name, msg);
        } else {
            for (size_t k = 0; k < 8 && c->want[k]; k++) {
                bool neg = c->want[k][0] == '!';
                char *want = quotes(c->want[k] + neg, false);
                bool found = strstr(json, want) != NULL;
                if (found == neg)
                    KT_FAIL("[%s] plan %s \"%s\"\n    plan: %s", c->name,
                            neg ? "unexpectedly contains" : "lacks", want, json);
                free(want);
            }
        }
        free(json);
        free(msg);
    }
}
