/* Conformance with BuildKit's own Dockerfile test data, kept under
 * $KILN_BUILDKIT_DIR (tests/data/buildkit, see its NOTICE):
 *   - parser/testfiles/NAME/{Dockerfile,result}: Kiln's syntax dump must equal
 *     BuildKit's AST dump, node (instruction) by node;
 *   - parser/testfiles-negative/NAME/Dockerfile: planning must fail;
 *   - parser/heredocCases: heredoc words and lines (parser_heredoc_test.go);
 *   - shell/envVarTest: one word expanded (ProcessWord), rows A and U;
 *   - shell/wordsTest: expansion split into words (ProcessWords);
 *   - shell/lexCases: lex_test.go's tables, transcribed.
 * Each table prints "matched/total"; every mismatch is a failure. */
#include "df_internal.h"
#include "df_test.h"
#include "expand.h"
#include "kt.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return NULL;
    size_t cap = 1 << 16, n = 0, r;
    char *b = malloc(cap + 1);
    while (b && (r = fread(b + n, 1, cap - n, f)) > 0) {
        n += r;
        if (n == cap) {
            char *nb = realloc(b, (cap *= 2) + 1);
            if (nb == NULL) {
                free(b);
                b = NULL;
            }
            b = nb;
        }
    }
    fclose(f);
    if (b) {
        b[n] = '\0';
        if (len)
            *len = n;
    }
    return b;
}

static const char *dir(void)
{
    const char *d = getenv("KILN_BUILDKIT_DIR");
    return d ? d : "tests/data/buildkit";
}

/* Sorted subdirectory names of path (NULL-terminated; free each and the array). */
static char **subdirs(const char *path)
{
    DIR *d = opendir(path);
    if (d == NULL)
        return NULL;
    size_t n = 0;
    char **v = calloc(256, sizeof(char *));
    struct dirent *e;
    while (v && (e = readdir(d)) != NULL && n < 255)
        if (e->d_name[0] != '.')
            v[n++] = strdup(e->d_name);
    closedir(d);
    for (size_t i = 0; v && i < n; i++)
        for (size_t k = i + 1; k < n; k++)
            if (strcmp(v[k], v[i]) < 0) {
                char *t = v[i];
                v[i] = v[k];
                v[k] = t;
            }
    return v;
}

/* Next line of *p (newline removed, in place); NULL at the end. */
static char *next_line(char **p)
{
    if (**p == '\0')
        return NULL;
    char *s = *p, *nl = strchr(s, '\n');
    if (nl) {
        *nl = '\0';
        *p = nl + 1;
    } else {
        *p = s + strlen(s);
    }
    return s;
}

KT_TEST(parser_testfiles)
{
    char path[1024];
    snprintf(path, sizeof(path), "%s/parser/testfiles", dir());
    char **names = subdirs(path);
    KT_REQUIRE(names != NULL && names[0] != NULL);
    size_t files = 0, files_ok = 0, nodes = 0, nodes_ok = 0;
    for (size_t i = 0; names[i]; i++) {
        size_t len = 0;
        snprintf(path, sizeof(path), "%s/parser/testfiles/%s/Dockerfile", dir(), names[i]);
        char *df = slurp(path, &len);
        snprintf(path, sizeof(path), "%s/parser/testfiles/%s/result", dir(), names[i]);
        char *want = slurp(path, NULL);
        if (df == NULL || want == NULL) {
            KT_FAIL("%s: missing Dockerfile or result", names[i]);
            free(df);
            free(want);
            continue;
        }
        files++;
        df_arena *a = df_arena_new();
        kiln_error *err = NULL;
        char *got = NULL;
        if (df_syntax_dump(&got, a, df, len, &err) < 0) {
            KT_FAIL("%s: %s", names[i], err ? err->msg : "error");
            got = "";
        }
        char *gp = got, *wp = want, *g, *w;
        bool same = true;
        while ((w = next_line(&wp)) != NULL) {
            if (*w == '\0')
                continue;
            nodes++;
            g = next_line(&gp);
            if (g != NULL && strcmp(g, w) == 0) {
                nodes_ok++;
                continue;
            }
            same = false;
            KT_FAIL("%s: node %zu\n      want %s\n      got  %s", names[i], nodes, w,
                    g ? g : "(nothing)");
        }
        if ((g = next_line(&gp)) != NULL) {
            same = false;
            KT_FAIL("%s: extra node %s", names[i], g);
        }
        files_ok += same;
        kiln_error_free(&err);
        df_arena_free(a);
        free(df);
        free(want);
    }
    printf("parser testfiles: %zu/%zu files, %zu/%zu nodes match\n", files_ok, files, nodes_ok,
           nodes);
    for (size_t i = 0; names[i]; i++)
        free(names[i]);
    free(names);
}

KT_TEST(parser_testfiles_negative)
{
    char path[1024];
    snprintf(path, sizeof(path), "%s/parser/testfiles-negative", dir());
    char **names = subdirs(path);
    KT_REQUIRE(names != NULL && names[0] != NULL);
    size_t n = 0, ok = 0;
    for (size_t i = 0; names[i]; i++) {
        size_t len = 0;
        snprintf(path, sizeof(path), "%s/parser/testfiles-negative/%s/Dockerfile", dir(), names[i]);
        char *df = slurp(path, &len);
        KT_REQUIRE(df != NULL);
        n++;
        char *msg = NULL;
        char *json = df_plan_json(df, len, NULL, NULL, NULL, &msg);
        if (json)
            KT_FAIL("%s: planned without an error", names[i]);
        else
            ok++;
        free(json);
        free(msg);
        free(df);
    }
    printf("parser testfiles-negative: %zu/%zu refused\n", ok, n);
    for (size_t i = 0; names[i]; i++)
        free(names[i]);
    free(names);
}

/* The heredocs df_lex finds on line (bodies: one terminator line per name). */
static char *line_heredocs(const char *line, const char *names)
{
    char text[1024];
    size_t o = (size_t)snprintf(text, sizeof(text), "%s\n", line);
    char *copy = strdup(names);
    for (char *s = NULL, *t = strtok_r(copy, ",", &s); t; t = strtok_r(NULL, ",", &s))
        o += (size_t)snprintf(text + o, sizeof(text) - o, "%s\n", t);
    free(copy);
    df_arena *a = df_arena_new();
    df_src src = {"Dockerfile", text, o};
    df_line *lines = NULL;
    size_t n = 0;
    df_directives d;
    kiln_error *err = NULL;
    char got[512] = "";
    if (df_lex(&lines, &n, &d, a, &src, &err) < 0) {
        snprintf(got, sizeof(got), "ERROR %s", err->msg);
    } else if (n > 0) {
        for (size_t i = 0; i < lines[0].nheredocs; i++)
            snprintf(got + strlen(got), sizeof(got) - strlen(got), "%s%s", i ? "," : "",
                     lines[0].heredocs[i].name);
    }
    if (!*got)
        strcpy(got, "-");
    kiln_error_free(&err);
    df_arena_free(a);
    return strdup(got);
}

KT_TEST(heredoc_cases)
{
    char path[1024];
    snprintf(path, sizeof(path), "%s/parser/heredocCases", dir());
    char *text = slurp(path, NULL);
    KT_REQUIRE(text != NULL);
    size_t n = 0, ok = 0;
    char *p = text, *l;
    while ((l = next_line(&p)) != NULL) {
        if (*l == '#' || *l == '\0')
            continue;
        char *f1 = strchr(l, '\t'), *f2 = f1 ? strchr(f1 + 1, '\t') : NULL;
        KT_REQUIRE(f1 && f2);
        *f1++ = '\0';
        *f2++ = '\0';
        n++;
        char *got;
        if (strcmp(l, "word") == 0) {
            df_arena *a = df_arena_new();
            df_heredoc h;
            got = strdup(df_heredoc_word(&h, a, f1) ? h.name : "-");
            df_arena_free(a);
            if (strcmp(f2, "ERROR") == 0)
                f2 = "-";
        } else {
            got = line_heredocs(f1, strcmp(f2, "-") ? f2 : "");
        }
        if (strcmp(got, f2) == 0)
            ok++;
        else
            KT_FAIL("heredoc %s [%s]: got %s, want %s", l, f1, got, f2);
        free(got);
    }
    printf("heredoc cases: %zu/%zu\n", ok, n);
    free(text);
}

KT_TEST(shell_env_var_test)
{
    static const char *const env[] = {"PWD=/home", "SHELL=bash",
                                      "KOREAN=\xed\x95\x9c\xea\xb5\xad\xec\x96\xb4", "NULL="};
    char path[1024];
    snprintf(path, sizeof(path), "%s/shell/envVarTest", dir());
    char *text = slurp(path, NULL);
    KT_REQUIRE(text != NULL);
    size_t n = 0, ok = 0, lineno = 0;
    char *p = text, *l;
    while ((l = next_line(&p)) != NULL) {
        lineno++;
        if (*l == '#')
            continue;
        char *f[3] = {l, NULL, NULL};
        f[1] = strchr(f[0], '|');
        f[2] = f[1] ? strchr(f[1] + 1, '|') : NULL;
        if (f[1] == NULL || f[2] == NULL)
            continue;
        *f[1]++ = '\0';
        *f[2]++ = '\0';
        for (int i = 0; i < 3; i++) { /* strings.TrimSpace */
            while (*f[i] == ' ' || *f[i] == '\t')
                f[i]++;
            size_t e = strlen(f[i]);
            while (e && (f[i][e - 1] == ' ' || f[i][e - 1] == '\t'))
                f[i][--e] = '\0';
        }
        if (strcmp(f[0], "A") != 0 && strcmp(f[0], "U") != 0)
            continue; /* Windows rows */
        n++;
        char *out = NULL;
        kiln_error *err = NULL;
        int rc = bld_expand_word(&out, f[1], env, 4, '\\', &err);
        bool want_err = strcmp(f[2], "error") == 0;
        if (want_err ? rc < 0 : rc == 0 && strcmp(out, f[2]) == 0)
            ok++;
        else
            KT_FAIL("envVarTest:%zu [%s]: got %s, want %s", lineno, f[1], rc < 0 ? err->msg : out,
                    f[2]);
        free(out);
        kiln_error_free(&err);
    }
    printf("envVarTest: %zu/%zu rows\n", ok, n);
    free(text);
}

typedef struct kvs {
    char *v[64];
    size_t n;
} kvs;

static const char *kvs_lookup(void *ctx, const char *name)
{
    const kvs *k = ctx;
    size_t nl = strlen(name);
    for (size_t i = k->n; i-- > 0;)
        if (strncmp(k->v[i], name, nl) == 0 && k->v[i][nl] == '=')
            return k->v[i] + nl + 1;
    return NULL;
}

KT_TEST(shell_words_test)
{
    char path[1024];
    snprintf(path, sizeof(path), "%s/shell/wordsTest", dir());
    char *text = slurp(path, NULL);
    KT_REQUIRE(text != NULL);
    kvs env = {0};
    size_t n = 0, ok = 0, lineno = 0;
    char *p = text, *l;
    while ((l = next_line(&p)) != NULL) {
        lineno++;
        if (*l == '#')
            continue;
        if (strncmp(l, "ENV ", 4) == 0) {
            char *e = l + 3;
            while (*e == ' ')
                e++;
            if (env.n < 64)
                env.v[env.n++] = e;
            continue;
        }
        char *bar = strchr(l, '|');
        if (bar == NULL)
            continue;
        *bar = '\0';
        char *src = l, *want = bar + 1;
        while (*src == ' ')
            src++;
        size_t e = strlen(src);
        while (e && (src[e - 1] == ' ' || src[e - 1] == '\t'))
            src[--e] = '\0';
        while (*want == ' ')
            want++;
        n++;
        df_arena *a = df_arena_new();
        df_lex_opts o = {.escape = '\\', .lookup = kvs_lookup, .ctx = &env};
        char **w = NULL;
        const char *msg = NULL;
        long nw = df_expand_words(&w, a, src, &o, &msg);
        df_str got;
        df_str_init(&got, a);
        if (nw < 0)
            df_str_adds(&got, "error");
        for (long i = 0; i < nw; i++) {
            if (i)
                df_str_addc(&got, ',');
            df_str_adds(&got, w[i]);
        }
        if (strcmp(df_str_get(&got), want) == 0)
            ok++;
        else
            KT_FAIL("wordsTest:%zu [%s]: got %s, want %s", lineno, src, df_str_get(&got), want);
        df_arena_free(a);
    }
    printf("wordsTest: %zu/%zu rows\n", ok, n);
    free(text);
}

KT_TEST(shell_lex_cases)
{
    char path[1024];
    snprintf(path, sizeof(path), "%s/shell/lexCases", dir());
    char *text = slurp(path, NULL);
    KT_REQUIRE(text != NULL);
    size_t n = 0, ok = 0, lineno = 0;
    char *p = text, *l;
    while ((l = next_line(&p)) != NULL) {
        lineno++;
        if (*l == '#' || *l == '\0')
            continue;
        char *t1 = strchr(l, '\t'), *t2 = t1 ? strchr(t1 + 1, '\t') : NULL;
        KT_REQUIRE(t1 && t2);
        *t1 = *t2 = '\0';
        const char *src = l, *want = t2 + 1;
        char *envs = t1 + 1;
        const char *env[16];
        size_t ne = 0;
        for (char *s = NULL, *t = strtok_r(envs, " ", &s); t && ne < 16;
             t = strtok_r(NULL, " ", &s))
            env[ne++] = t;
        n++;
        char *out = NULL;
        kiln_error *err = NULL;
        int rc = bld_expand_word(&out, src, env, ne, '\\', &err);
        bool good;
        if (strncmp(want, "ERROR", 5) == 0)
            good = rc < 0 && (want[5] != ':' || strstr(err->msg, want + 6) != NULL);
        else
            good = rc == 0 && strcmp(out, want) == 0;
        if (good)
            ok++;
        else
            KT_FAIL("lexCases:%zu [%s]: got %s, want %s", lineno, src, rc < 0 ? err->msg : out,
                    want);
        free(out);
        kiln_error_free(&err);
    }
    printf("lex_test.go cases: %zu/%zu\n", ok, n);
    free(text);
}
