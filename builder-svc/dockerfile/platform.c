/* Names the Dockerfile frontend validates: platforms in OCI (Go) spelling,
 * image references, instruction keywords (with "did you mean" suggestions)
 * and slash-separated paths. */
#include "fs.h"
#include "platform.h"
#include "plan_internal.h"

#include <ctype.h>
#include <string.h>

const char *bld_host_platform(void)
{
    return df_host_platform();
}

const char *df_host_platform(void)
{
    return kiln_platform_host_string();
}

bool df_platform_normalize(char **out, df_arena *a, const char *in, const char *default_arch)
{
    kiln_platform p;
    if (kiln_platform_parse(&p, in, default_arch, NULL) < 0)
        return false;
    char buf[KILN_PLATFORM_STRMAX];
    kiln_platform_format(&p, buf, sizeof(buf));
    *out = df_strdup(a, buf);
    return true;
}

void df_platform_split(df_arena *a, const char *p, char **os, char **arch, char **variant)
{
    const char *s1 = strchr(p, '/');
    const char *s2 = s1 ? strchr(s1 + 1, '/') : NULL;
    *os = df_strndup(a, p, s1 ? (size_t)(s1 - p) : strlen(p));
    *arch =
        s1 ? df_strndup(a, s1 + 1, s2 ? (size_t)(s2 - s1 - 1) : strlen(s1 + 1)) : df_strdup(a, "");
    *variant = df_strdup(a, s2 ? s2 + 1 : "");
}

static const char *const keywords[] = {
    "add",    "arg",   "cmd",         "copy",  "entrypoint", "env",
    "expose", "from",  "healthcheck", "label", "maintainer", "onbuild",
    "run",    "shell", "stopsignal",  "user",  "volume",     "workdir",
};

bool df_known_keyword(const char *kw)
{
    for (size_t i = 0; i < KILN_ARRAY_SIZE(keywords); i++)
        if (strcmp(kw, keywords[i]) == 0)
            return true;
    return false;
}

/* Levenshtein distance of two short strings (callers bound the lengths). */
static size_t distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b), row[32];
    for (size_t j = 0; j <= lb; j++)
        row[j] = j;
    for (size_t i = 1; i <= la; i++) {
        size_t prev = row[0];
        row[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t cur = row[j];
            size_t sub = prev + (tolower((unsigned char)a[i - 1]) != b[j - 1]);
            size_t del = row[j] + 1, ins = row[j - 1] + 1;
            row[j] = sub < del ? (sub < ins ? sub : ins) : (del < ins ? del : ins);
            prev = cur;
        }
    }
    return row[lb];
}

const char *df_suggest_keyword(const char *kw)
{
    static const char *const upper[] = {
        "ADD",    "ARG",   "CMD",         "COPY",  "ENTRYPOINT", "ENV",
        "EXPOSE", "FROM",  "HEALTHCHECK", "LABEL", "MAINTAINER", "ONBUILD",
        "RUN",    "SHELL", "STOPSIGNAL",  "USER",  "VOLUME",     "WORKDIR",
    };
    size_t n = strlen(kw);
    if (n == 0 || n > 16)
        return NULL;
    size_t best = 3;
    const char *res = NULL;
    for (size_t i = 0; i < KILN_ARRAY_SIZE(keywords); i++) {
        size_t d = distance(kw, keywords[i]);
        if (d < best && d <= (n + 2) / 3) {
            best = d;
            res = upper[i];
        }
    }
    return res;
}

char *df_path_clean(df_arena *a, const char *p)
{
    size_t cap = strlen(p) + 2; /* never longer than p, or "." */
    char *out = df_alloc(a, cap);
    if (kiln_path_clean(out, cap, p, KILN_PATH_LEXICAL, NULL) < 0)
        out[0] = '\0';
    return out;
}
